/*
 * The ingest thread: consumer-group reader, router and atomic hand-off
 * writer (see ingest.h). Everything here runs on that one thread; the only
 * shared state is the registry snapshot (reference-counted, immutable), the
 * processors' live counters and the metrics (atomics), and the routing
 * settings (copied from fb_settings when their generation changes).
 *
 * A batch moves through three steps:
 *   read    XREADGROUP (new entries), XREADGROUP from 0 (our own pending
 *           entries, at start and after a reconnect) or XAUTOCLAIM
 *           (entries a dead consumer left behind);
 *   route   every entry becomes one XADD to its processor's stream, one
 *           NATS publish to a remote processor (JetStream: acked before
 *           the hand-off), or one XADD to frames:dlq with the reason;
 *   hand off  MULTI, the XADDs, one XACK of its entries, EXEC.
 * An entry is left out of the XACK when its remote publish failed (it is
 * claimed again later) or when backpressure holds it (OVERLOAD_POLICY=block:
 * it is routed again in place and nothing new is read meanwhile).
 * New entries are pipelined: the next read is on the wire while a batch is
 * routed, and up to MAX_TX transactions are in flight.
 */
#include "ingest_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"

/* ================================================================ helpers */

static int batch_alloc(struct batch *b, size_t cap)
{
  b->entries = calloc(cap, sizeof *b->entries);
  b->deliveries = calloc(cap, sizeof *b->deliveries);
  b->frames = calloc(cap, sizeof *b->frames);
  b->outcome = calloc(cap, sizeof *b->outcome);
  b->order = calloc(cap, sizeof *b->order);
  b->xadd_of = calloc(cap, sizeof *b->xadd_of);
  b->held = calloc(cap, sizeof *b->held);
  fb_buf_init(&b->tx, TX_MAX_BYTES);
  return b->entries && b->deliveries && b->frames && b->outcome && b->order && b->xadd_of && b->held
             ? 0
             : -ENOMEM;
}

/* Takes the batch's picks back out of their processors' routed_in_flight:
 * the hand-off is confirmed (then the frames count in sent_since_poll) or
 * given up. */
void ingest_release_in_flight(struct batch *b)
{
  if (!b->in_flight) return;
  for (size_t i = 0; i < b->n; i++)
    if (b->outcome[i] >= 0)
      atomic_fetch_sub_explicit(&b->snap->procs[b->outcome[i]]->live->routed_in_flight, 1,
                                memory_order_relaxed);
  b->in_flight = false;
}

void ingest_batch_clear(struct batch *b)
{
  ingest_release_in_flight(b);
  if (b->reply) freeReplyObject(b->reply);
  b->reply = NULL;
  fb_snapshot_release(b->snap);
  b->snap = NULL;
  fb_shadow_set_release(b->shadows);
  b->shadows = NULL;
  b->ncopies = 0;
  b->n = b->nxadd = b->nacks = 0;
  b->has_tx = false;
  b->have_deliveries = false;
  b->retried = false;
  b->attempts = 0;
  b->busy = false;
}

static void batch_free(struct batch *b)
{
  ingest_batch_clear(b);
  free(b->entries);
  free(b->deliveries);
  free(b->frames);
  free(b->outcome);
  free(b->order);
  free(b->xadd_of);
  free(b->held);
  free(b->fields);
  free(b->copies);
  free(b->copy_fields);
  fb_buf_free(&b->tx);
}

static struct batch *batch_get(struct fb_ingest *g)
{
  for (int i = 0; i < NBATCH; i++)
    if (!g->batches[i].busy) {
      g->batches[i].busy = true;
      return &g->batches[i];
    }
  return NULL; /* cannot happen: NBATCH covers every op in flight */
}

void ingest_op_push(struct fb_ingest *g, enum op_kind kind, struct batch *b)
{
  size_t cap = sizeof g->ops / sizeof g->ops[0];
  g->ops[(g->op_head + g->op_count++) % cap] = (struct op){kind, b};
  if (kind == OP_READ)
    g->read_in_flight = true;
  else
    g->tx_in_flight++;
}

struct op ingest_op_pop(struct fb_ingest *g)
{
  size_t cap = sizeof g->ops / sizeof g->ops[0];
  struct op o = g->ops[g->op_head];
  g->op_head = (g->op_head + 1) % cap;
  g->op_count--;
  if (o.kind == OP_READ)
    g->read_in_flight = false;
  else
    g->tx_in_flight--;
  return o;
}

/* Forgets everything in flight after the connection was lost: the entries
 * are still pending in Redis and are read again by the recovery pass. */
static void reset_pipeline(struct fb_ingest *g)
{
  for (int i = 0; i < NBATCH; i++)
    ingest_batch_clear(&g->batches[i]);
  g->nblocked = 0;
  atomic_store(&g->m->blocked_frames, 0);
  g->nheld = 0; /* the recovery pass reads them again */
  g->resending = false;
  g->op_head = g->op_count = 0;
  g->nawait = 0;
  g->read_in_flight = false;
  g->tx_in_flight = 0;
  g->claiming = false;
  g->phase = PHASE_SETUP;
  atomic_store(&g->m->redis_up, 0);
  atomic_store(&g->m->group_ready, 0);
}

void ingest_lose_connection(struct fb_ingest *g, const char *why)
{
  fb_redis_drop(&g->redis, why);
  reset_pipeline(g);
}

int ingest_flush(struct fb_ingest *g)
{
  int done = 0;
  while (!done)
    if (redisBufferWrite(g->redis.ctx, &done) == REDIS_ERR) {
      ingest_lose_connection(g, g->redis.ctx->errstr);
      return -EIO;
    }
  return 0;
}

redisReply *ingest_get_reply(struct fb_ingest *g)
{
  void *rep = NULL;
  if (redisGetReply(g->redis.ctx, &rep) != REDIS_OK || !rep) {
    ingest_lose_connection(g, g->redis.ctx->errstr[0] ? g->redis.ctx->errstr : "no reply");
    return NULL;
  }
  return rep;
}

/* Runs one command synchronously on an empty pipeline. */
static redisReply *command(struct fb_ingest *g, int argc, const char **argv)
{
  redisReply *rep = fb_redis_argv(&g->redis, argc, argv, NULL);
  if (!rep) reset_pipeline(g);
  return rep;
}

/* Takes the entries of a read reply into `b`. Returns how many. */
static size_t take_entries(struct batch *b, redisReply *entries, size_t cap)
{
  b->n = 0;
  if (!entries || entries->type != REDIS_REPLY_ARRAY) return 0;
  for (size_t i = 0; i < entries->elements && b->n < cap; i++) {
    redisReply *e = entries->element[i];
    if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
        e->element[0]->type == REDIS_REPLY_STRING)
      b->entries[b->n++] = e;
  }
  return b->n;
}

/* The entries array inside an XREADGROUP reply: [[stream, entries]]. */
static redisReply *read_entries(redisReply *rep)
{
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) return NULL;
  redisReply *s = rep->element[0];
  if (s->type != REDIS_REPLY_ARRAY || s->elements != 2) return NULL;
  return s->element[1];
}
/* ============================================================== reading */

static void build_read_commands(struct fb_ingest *g)
{
  const struct fb_config *c = g->cfg;
  struct fb_buf o;
  char count[16], block[16];
  snprintf(count, sizeof count, "%d", c->batch_size);
  snprintf(block, sizeof block, "%d", BLOCK_MS);
  for (int blocking = 0; blocking < 2; blocking++) {
    char *dst = blocking ? g->read_block : g->read_now;
    fb_buf_init_fixed(&o, dst, sizeof g->read_block);
    fb_buf_resp_array(&o, blocking ? 11 : 9);
    fb_buf_resp_bulk(&o, "XREADGROUP", 10);
    fb_buf_resp_bulk(&o, "GROUP", 5);
    fb_buf_resp_bulk(&o, c->consumer_group, strlen(c->consumer_group));
    fb_buf_resp_bulk(&o, c->consumer_name, strlen(c->consumer_name));
    fb_buf_resp_bulk(&o, "COUNT", 5);
    fb_buf_resp_bulk(&o, count, strlen(count));
    if (blocking) {
      fb_buf_resp_bulk(&o, "BLOCK", 5);
      fb_buf_resp_bulk(&o, block, strlen(block));
    }
    fb_buf_resp_bulk(&o, "STREAMS", 7);
    fb_buf_resp_bulk(&o, c->input_stream, strlen(c->input_stream));
    fb_buf_resp_bulk(&o, ">", 1);
    *(blocking ? &g->read_block_len : &g->read_now_len) = o.len;
  }
}

/* Block only on an otherwise empty pipeline, and never for a read-ahead: a
 * blocked read would hold up every reply queued behind it. */
static void send_read(struct fb_ingest *g, bool may_block)
{
  bool block = may_block && g->op_count == 0;
  if (block)
    redisAppendFormattedCommand(g->redis.ctx, g->read_block, g->read_block_len);
  else
    redisAppendFormattedCommand(g->redis.ctx, g->read_now, g->read_now_len);
  ingest_op_push(g, OP_READ, NULL);
}

/* Fills b->deliveries from XPENDING for the entries of `b`. */
static int load_deliveries(struct fb_ingest *g, struct batch *b)
{
  char count[24];
  snprintf(count, sizeof count, "%zu", b->n);
  const char *argv[] = {"XPENDING",
                        g->cfg->input_stream,
                        g->cfg->consumer_group,
                        b->entries[0]->element[0]->str,
                        b->entries[b->n - 1]->element[0]->str,
                        count,
                        g->cfg->consumer_name};
  redisReply *rep = command(g, 7, argv);
  if (!rep) return -EIO;
  size_t j = 0;
  for (size_t i = 0; i < b->n; i++) {
    b->deliveries[i] = 1;
    const char *id = b->entries[i]->element[0]->str;
    for (; rep->type == REDIS_REPLY_ARRAY && j < rep->elements; j++) {
      const redisReply *p = rep->element[j];
      if (p->type != REDIS_REPLY_ARRAY || p->elements < 4) continue;
      if (!strcmp(p->element[0]->str, id)) {
        b->deliveries[i] = p->element[3]->integer;
        j++;
        break;
      }
    }
  }
  b->have_deliveries = true;
  freeReplyObject(rep);
  return 0;
}
/* Settles the queued batches and puts their transactions on the wire,
 * oldest first. */
static void settle_and_send(struct fb_ingest *g)
{
  int rc = ingest_settle(g);
  size_t n = g->nawait;
  g->nawait = 0;
  if (rc) {
    /* Out of memory: the entries stay pending and the recovery pass after
     * a reconnect picks them up. */
    ingest_lose_connection(g, "cannot build a hand-off");
    return;
  }
  for (size_t q = 0; q < n; q++)
    ingest_send_tx(g, g->await[q]);
}

/* Routes one batch and builds its transaction at once, on an empty
 * pipeline (recovery, claims, held and blocked entries). */
static int route_now(struct fb_ingest *g, struct batch *b)
{
  int rc = ingest_route_batch(g, b);
  if (!rc) rc = ingest_settle(g);
  g->nawait = 0;
  return rc;
}

/* Routes and hands off one batch synchronously (recovery and claims). */
static int hand_off_now(struct fb_ingest *g, struct batch *b)
{
  if (load_deliveries(g, b)) return -EIO;
  if (route_now(g, b)) {
    fb_error("ingest", "cannot build the hand-off of %zu entries; retrying", b->n);
    return -ENOMEM;
  }
  return ingest_hand_off_sync(g, b);
}

/* Backpressure: routes the held entries again once in a while, oldest
 * first, reading nothing new until they have all gone. */
static void retry_blocked(struct fb_ingest *g)
{
  fb_sleep_ms(BLOCK_RETRY_MS);
  struct batch *b = g->blocked[0];
  if (route_now(g, b)) {
    ingest_lose_connection(g, "cannot build a hand-off");
    return;
  }
  ingest_hand_off_sync(g, b);
}

/* Creates the consumer group if needed. */
static int setup(struct fb_ingest *g)
{
  const char *argv[] = {"XGROUP", "CREATE",  g->cfg->input_stream, g->cfg->consumer_group,
                        "0",      "MKSTREAM"};
  redisReply *rep = command(g, 6, argv);
  if (!rep) return -EIO;
  bool ok = rep->type != REDIS_REPLY_ERROR || fb_reply_is_error(rep, "BUSYGROUP");
  if (!ok)
    fb_error("ingest", "cannot create consumer group %s on %s: %s", g->cfg->consumer_group,
             g->cfg->input_stream, rep->str);
  else if (rep->type != REDIS_REPLY_ERROR)
    fb_info("ingest", "created consumer group %s on %s", g->cfg->consumer_group,
            g->cfg->input_stream);
  freeReplyObject(rep);
  if (!ok) {
    fb_redis_drop(&g->redis, "consumer group unavailable");
    return -EIO;
  }
  atomic_store(&g->m->redis_up, 1);
  atomic_store(&g->m->group_ready, 1);
  g->phase = PHASE_RECOVER;
  snprintf(g->cursor, sizeof g->cursor, "0");
  g->recovered = 0;
  g->next_claim_ms = fb_mono_ms() + CLAIM_INTERVAL_MS;
  return 0;
}

/* One step of the recovery pass: our own pending entries, oldest first. */
static void recover_step(struct fb_ingest *g)
{
  char count[16];
  snprintf(count, sizeof count, "%d", g->cfg->batch_size);
  const char *argv[] = {"XREADGROUP",
                        "GROUP",
                        g->cfg->consumer_group,
                        g->cfg->consumer_name,
                        "COUNT",
                        count,
                        "STREAMS",
                        g->cfg->input_stream,
                        g->cursor};
  redisReply *rep = command(g, 9, argv);
  if (!rep) return;
  struct batch *b = batch_get(g);
  b->reply = rep;
  b->read_ns = fb_mono_ns();
  if (rep->type == REDIS_REPLY_ERROR) {
    fb_error("ingest", "reading pending entries: %s", rep->str);
    ingest_batch_clear(b);
    ingest_lose_connection(g, "cannot read pending entries");
    return;
  }
  if (!take_entries(b, rep->type == REDIS_REPLY_ARRAY ? read_entries(rep) : NULL,
                    (size_t)g->cfg->batch_size)) {
    ingest_batch_clear(b);
    if (g->recovered)
      fb_info("ingest", "finished %llu pending entries left from before",
              (unsigned long long)g->recovered);
    g->phase = PHASE_LIVE;
    return;
  }
  snprintf(g->cursor, sizeof g->cursor, "%s", b->entries[b->n - 1]->element[0]->str);
  g->recovered += b->n;
  if (hand_off_now(g, b) == -ENOMEM) ingest_batch_clear(b);
}

/* One step of a claim pass: entries other consumers left idle too long. */
static void claim_step(struct fb_ingest *g)
{
  char count[16], idle[24];
  snprintf(count, sizeof count, "%d", g->cfg->batch_size);
  snprintf(idle, sizeof idle, "%lld", (long long)g->cfg->claim_idle_ms);
  const char *argv[] = {"XAUTOCLAIM",
                        g->cfg->input_stream,
                        g->cfg->consumer_group,
                        g->cfg->consumer_name,
                        idle,
                        g->cursor,
                        "COUNT",
                        count};
  redisReply *rep = command(g, 8, argv);
  if (!rep) return;
  struct batch *b = batch_get(g);
  b->reply = rep;
  b->read_ns = fb_mono_ns();
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
      rep->element[0]->type != REDIS_REPLY_STRING) {
    fb_warn("ingest", "XAUTOCLAIM failed: %s",
            rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    ingest_batch_clear(b);
    g->claiming = false;
    return;
  }
  snprintf(g->cursor, sizeof g->cursor, "%s", rep->element[0]->str);
  if (rep->elements >= 3 && rep->element[2]->type == REDIS_REPLY_ARRAY &&
      rep->element[2]->elements) {
    size_t gone = rep->element[2]->elements;
    atomic_fetch_add(&g->m->dropped[FB_REASON_MISSING], gone);
    fb_warn("ingest", "%zu abandoned entries were no longer in %s", gone, g->cfg->input_stream);
  }
  if (take_entries(b, rep->element[1], (size_t)g->cfg->batch_size)) {
    fb_info("ingest", "claimed %zu entries abandoned by other consumers", b->n);
    if (hand_off_now(g, b) == -ENOMEM) ingest_batch_clear(b);
  } else {
    ingest_batch_clear(b);
  }
  if (!strcmp(g->cursor, "0-0")) {
    g->claiming = false;
    g->next_claim_ms = fb_mono_ms() + CLAIM_INTERVAL_MS;
  }
}

/* Runs XCLAIM JUSTID of `n` held ids (to ourselves, min idle 0): resets
 * their idle time. Returns the reply or NULL. */
static redisReply *touch_ids(struct fb_ingest *g, char (*ids)[32], size_t n)
{
  const char **argv = calloc(n + 6, sizeof *argv);
  if (!argv) return NULL;
  size_t k = 0;
  argv[k++] = "XCLAIM";
  argv[k++] = g->cfg->input_stream;
  argv[k++] = g->cfg->consumer_group;
  argv[k++] = g->cfg->consumer_name;
  argv[k++] = "0";
  for (size_t i = 0; i < n; i++)
    argv[k++] = ids[i];
  argv[k++] = "JUSTID";
  redisReply *rep = command(g, (int)k, argv);
  free(argv);
  return rep;
}

/* While NATS is away: keeps the held entries fresh, so that no claim pass
 * (ours or another replica's) takes them as abandoned. */
static void touch_held(struct fb_ingest *g)
{
  int64_t now = fb_mono_ms();
  if (!g->nheld || now < g->next_touch_ms) return;
  int64_t every = g->cfg->claim_idle_ms / 3;
  g->next_touch_ms = now + (every < 100 ? 100 : every > 10000 ? 10000 : every);
  for (size_t done = 0; done < g->nheld;) {
    size_t n = g->nheld - done < 1000 ? g->nheld - done : 1000;
    redisReply *rep = touch_ids(g, g->held_ids + done, n);
    if (!rep) return;
    freeReplyObject(rep);
    done += n;
  }
}

/* KEYS[1] the input; ARGV group, consumer, ids... The held entries that are
 * still ours, claimed JUSTID (which does not count as a delivery: waiting
 * for NATS must not make a frame poison), with their fields, as XCLAIM
 * would answer them. */
static const char take_held_script[] =
    "local args = {KEYS[1], ARGV[1], ARGV[2], 0}\n"
    "for i = 3, #ARGV do args[#args + 1] = ARGV[i] end\n"
    "args[#args + 1] = 'JUSTID'\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('XCLAIM', unpack(args))) do\n"
    "  local e = redis.call('XRANGE', KEYS[1], id, id)\n"
    "  if e[1] then out[#out + 1] = e[1] end\n"
    "end\n"
    "return out\n";

/* NATS is back: hands the held entries off again, a batch at a time. When
 * they are refused again (a JetStream stream electing a leader, say), the
 * next try waits, 250 ms doubling to 4 s. */
static void resend_step(struct fb_ingest *g)
{
  size_t n = g->nheld < (size_t)g->cfg->batch_size ? g->nheld : (size_t)g->cfg->batch_size;
  const char **argv = calloc(n + 6, sizeof *argv);
  if (!argv) return;
  size_t k = 0;
  argv[k++] = "EVAL";
  argv[k++] = take_held_script;
  argv[k++] = "1";
  argv[k++] = g->cfg->input_stream;
  argv[k++] = g->cfg->consumer_group;
  argv[k++] = g->cfg->consumer_name;
  for (size_t i = 0; i < n; i++)
    argv[k++] = g->held_ids[i];
  redisReply *rep = command(g, (int)k, argv);
  free(argv);
  if (!rep) return;
  memmove(g->held_ids, g->held_ids + n, (g->nheld - n) * sizeof g->held_ids[0]);
  g->nheld -= n;
  size_t left = g->nheld;
  struct batch *b = batch_get(g);
  b->reply = rep;
  b->read_ns = fb_mono_ns();
  if (rep->type != REDIS_REPLY_ARRAY || !take_entries(b, rep, (size_t)g->cfg->batch_size)) {
    if (rep->type == REDIS_REPLY_ERROR) fb_warn("ingest", "taking held entries: %s", rep->str);
    ingest_batch_clear(b); /* acked meanwhile, or no longer in the stream */
  } else {
    fb_info("ingest", "handing off %zu remote frames that waited for NATS", b->n);
    b->retried = true;
    if (hand_off_now(g, b) == -ENOMEM) ingest_batch_clear(b);
  }
  if (g->nheld > left) { /* some were held again */
    g->resending = false;
    g->resend_backoff_ms = g->resend_backoff_ms ? g->resend_backoff_ms * 2 : 250;
    if (g->resend_backoff_ms > 4000) g->resend_backoff_ms = 4000;
    g->next_resend_ms = fb_mono_ms() + g->resend_backoff_ms;
  } else {
    g->resend_backoff_ms = 0;
    if (!g->nheld) g->resending = false;
  }
}

/* One step of live reading: keeps a read and up to MAX_TX hand-offs in
 * flight, and handles the next reply. */
static void live_step(struct fb_ingest *g)
{
  bool stopping = atomic_load(&g->stop);
  if (!g->claiming && fb_mono_ms() >= g->next_claim_ms) {
    g->claiming = true;
    snprintf(g->cursor, sizeof g->cursor, "0-0");
  }
  if (g->nheld && !g->resending && ingest_sinks_up(g) && fb_mono_ms() >= g->next_resend_ms)
    g->resending = true;
  /* Queued batches wait for their sinks only while another read is on its
   * way: never across a blocking read, an idle input or a pause. */
  if (g->nawait && !g->read_in_flight) settle_and_send(g);
  if (!stopping && !g->claiming && !g->resending && !g->nblocked && !g->read_in_flight &&
      g->tx_in_flight < MAX_TX && (!g->idle || g->op_count == 0))
    send_read(g, true);
  if (!g->op_count) return; /* drained: the caller may claim or stop */
  if (ingest_flush(g)) return;
  redisReply *rep = ingest_get_reply(g);
  if (!rep) return;
  struct op op = ingest_op_pop(g);
  if (op.kind == OP_TX) {
    ingest_complete_tx(g, op.b, rep);
    return;
  }

  struct batch *b = batch_get(g);
  b->reply = rep;
  b->read_ns = fb_mono_ns();
  if (rep->type == REDIS_REPLY_ERROR) {
    /* NOGROUP: the stream or group was deleted under us: reconnecting
     * creates it again. Anything else: wait a little before retrying. */
    fb_error("ingest", "XREADGROUP: %s", rep->str);
    bool nogroup = fb_reply_is_error(rep, "NOGROUP");
    bool readonly = fb_reply_is_error(rep, "READONLY");
    ingest_batch_clear(b);
    ingest_lose_connection(g, nogroup    ? "consumer group is gone"
                              : readonly ? "the server is a replica now (READONLY)"
                                         : "read failed");
    if (!nogroup && !readonly) fb_sleep_ms(1000);
    return;
  }
  if (!take_entries(b, rep->type == REDIS_REPLY_ARRAY ? read_entries(rep) : NULL,
                    (size_t)g->cfg->batch_size)) {
    ingest_batch_clear(b);
    g->idle = true;
    return;
  }
  g->idle = false;
  /* Put the next read on the wire before routing this batch. */
  if (!stopping && !g->claiming && !g->resending && !g->nblocked && g->tx_in_flight < MAX_TX) {
    send_read(g, false);
    if (ingest_flush(g)) return;
  }
  if (ingest_route_batch(g, b)) {
    /* Out of memory: the entries stay pending and the recovery pass after
     * a reconnect picks them up. */
    ingest_lose_connection(g, "cannot build a hand-off");
    return;
  }
  if (!ingest_awaits_sinks(g) || g->nawait == MAX_AWAIT) settle_and_send(g);
}

static void *run(void *arg)
{
  struct fb_ingest *g = arg;
  while (!atomic_load(&g->stop) || g->op_count || g->nawait) {
    /* The primary moved: what is in flight went to the old one. The
     * recovery pass re-reads our pending entries on the new one. */
    if (fb_redis_is_stale(&g->redis)) ingest_lose_connection(g, "the Redis primary moved");
    if (fb_redis_ensure(&g->redis)) {
      atomic_store(&g->m->redis_up, 0);
      fb_sleep_ms(50);
      continue;
    }
    bool drained = !g->op_count && !g->nawait;
    if (g->nblocked && drained && g->phase != PHASE_SETUP) {
      retry_blocked(g);
      continue;
    }
    switch (g->phase) {
    case PHASE_SETUP:
      if (setup(g)) fb_sleep_ms(100);
      break;
    case PHASE_RECOVER: recover_step(g); break;
    case PHASE_LIVE:
      if (drained) touch_held(g);
      if (g->resending && drained)
        resend_step(g);
      else if (g->claiming && drained)
        claim_step(g);
      else
        live_step(g);
      break;
    }
    if (atomic_load(&g->stop) && !g->op_count && !g->nawait) break;
  }
  return NULL;
}

/* ============================================================ lifecycle */

int fb_ingest_start(struct fb_ingest **out, const struct fb_ingest_deps *deps)
{
  const struct fb_config *cfg = deps->cfg;
  struct fb_ingest *g = calloc(1, sizeof *g);
  if (!g) return -ENOMEM;
  g->settings = deps->settings;
  g->events = deps->events;
  g->cfg = cfg;
  g->reg = deps->registry;
  g->m = deps->metrics;
  g->trace = deps->trace;
  g->shadows = deps->shadows;
  fb_redis_init(&g->redis, &cfg->redis, "ingest", REDIS_TIMEOUT_MS);
  int rc = fb_router_create(&g->router, cfg->strategy);
  if (!rc) rc = fb_sinks_create(&g->sinks, &(struct fb_sink_env){cfg, deps->nats});
  for (int i = 0; i < NBATCH && !rc; i++)
    rc = batch_alloc(&g->batches[i], (size_t)cfg->batch_size);
  g->snap = fb_registry_snapshot(g->reg);
  g->held_ids = calloc(HELD_MAX, sizeof *g->held_ids);
  if (!g->held_ids && !rc) rc = -ENOMEM;
  build_read_commands(g);
  if (!rc) rc = -pthread_create(&g->thread, NULL, run, g);
  if (rc) {
    for (int i = 0; i < NBATCH; i++)
      batch_free(&g->batches[i]);
    fb_router_destroy(g->router);
    fb_sinks_destroy(&g->sinks);
    fb_snapshot_release(g->snap);
    free(g->held_ids);
    free(g);
    return rc;
  }
  *out = g;
  return 0;
}

void fb_ingest_stop(struct fb_ingest *g)
{
  if (!g) return;
  atomic_store(&g->stop, true);
  pthread_join(g->thread, NULL);
  for (int i = 0; i < NBATCH; i++)
    batch_free(&g->batches[i]);
  fb_redis_close(&g->redis);
  fb_router_destroy(g->router);
  fb_sinks_destroy(&g->sinks);
  fb_snapshot_release(g->snap);
  fb_shadow_set_release(g->shadow_set);
  free(g->held_ids);
  free(g);
}
