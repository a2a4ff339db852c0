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
#include "framebuffer/ingest.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"
#include "framebuffer/dispatch.h"
#include "framebuffer/events.h"
#include "framebuffer/frame.h"
#include "framebuffer/handoff.h"
#include "framebuffer/log.h"
#include "framebuffer/redis.h"
#include "framebuffer/router.h"
#include "framebuffer/settings.h"
#include "framebuffer/sink.h"

#define BLOCK_MS          1000         /* XREADGROUP BLOCK when idle */
#define REDIS_TIMEOUT_MS  5000         /* must exceed BLOCK_MS */
#define CLAIM_INTERVAL_MS 5000         /* how often to look for abandoned entries */
#define MAX_TX            2            /* transactions in flight */
#define NBATCH            (MAX_TX + 1) /* batches: in flight, plus the one being read */
#define TX_MAX_BYTES      (256u << 20) /* a batch of 64 KiB entries fits easily */
#define HELD_MAX          65536        /* remote entries waiting for NATS, remembered */
#define TX_RETRIES        3            /* then reconnect and re-read from the PEL */
#define BLOCK_RETRY_MS    50           /* backpressure: how often full queues are checked */
#define WAIT_TIMEOUT_MS   1000         /* REDIS_WAIT_REPLICAS: longest wait per hand-off */

enum phase { PHASE_SETUP, PHASE_RECOVER, PHASE_LIVE };

enum op_kind { OP_READ, OP_TX };

struct batch {
  bool busy;
  redisReply *reply;    /* owns the entries */
  redisReply **entries; /* [id, fields] arrays */
  size_t n;
  int64_t *deliveries; /* per entry, when known (recovered or claimed) */
  bool have_deliveries;
  struct fb_frame *frames;
  int32_t *outcome; /* >= 0: processor index; < 0: FB_OUTCOME_DLQ(reason) */
  uint32_t *order;  /* hand-off order: higher priority first */
  int32_t *xadd_of; /* entry -> its XADD's index in the transaction, or -1 */
  uint8_t *held;    /* enum fb_hold: why an entry is not acked */
  size_t nxadd;
  size_t nacks;    /* entries in the XACK */
  size_t ntrimmed; /* delivered to full streams (drop_oldest) */
  bool in_flight;  /* its picks count in their processors' routed_in_flight */
  bool has_tx;     /* false when there was nothing to write */
  struct fb_snapshot *snap;
  uint64_t read_ns;
  struct fb_buf tx; /* the transaction, kept for a resend */
  int attempts;
};

struct op {
  enum op_kind kind;
  struct batch *b;
};

struct fb_ingest {
  struct fb_app *app;
  struct fb_sinks sinks; /* one of each sink; a processor's `transport` indexes it */
  const struct fb_config *cfg;
  struct fb_registry *reg;
  struct fb_metrics *m;
  struct fb_redis redis;
  struct fb_router *router;
  unsigned routing_seen;     /* fb_settings_gen when `routing` was taken */
  struct fb_routing routing; /* the settings in use */
  atomic_bool stop;
  pthread_t thread;

  enum phase phase;
  char cursor[64]; /* recover: last id handed off; claim: XAUTOCLAIM cursor */
  bool claiming;   /* draining the pipeline for, or running, a claim pass */
  int64_t next_claim_ms;
  bool idle; /* the last read found nothing */
  /* Batches holding entries that wait for room (OVERLOAD_POLICY=block),
   * oldest first: with hand-offs pipelined, several can be caught. */
  struct batch *blocked[NBATCH];
  size_t nblocked;
  /* Entries whose remote publish failed (NATS away): pending in Redis,
   * handed off again once NATS is back. Their idle time is kept short
   * (XCLAIM JUSTID, which does not count as a delivery) so that no claim pass
   * takes them meanwhile. */
  char (*held_ids)[32];
  size_t nheld;
  bool resending; /* draining the pipeline for, or running, a resend */
  int64_t next_touch_ms;
  int64_t next_resend_ms; /* after a resend was refused again */
  int resend_backoff_ms;
  bool held_overflow_said;

  struct op ops[NBATCH + 1]; /* FIFO of replies we wait for */
  size_t op_head, op_count;
  bool read_in_flight;
  size_t tx_in_flight;
  struct batch batches[NBATCH];

  struct fb_snapshot *snap;
  struct fb_field *fields; /* all fields of the batch being routed */
  size_t fields_cap;
  char read_block[512], read_now[512]; /* ready-made XREADGROUP commands */
  size_t read_block_len, read_now_len;
  uint64_t recovered;
};

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
static void release_in_flight(struct batch *b)
{
  if (!b->in_flight) return;
  for (size_t i = 0; i < b->n; i++)
    if (b->outcome[i] >= 0)
      atomic_fetch_sub_explicit(&b->snap->procs[b->outcome[i]]->live->routed_in_flight, 1,
                                memory_order_relaxed);
  b->in_flight = false;
}

static void batch_clear(struct batch *b)
{
  release_in_flight(b);
  if (b->reply) freeReplyObject(b->reply);
  b->reply = NULL;
  fb_snapshot_release(b->snap);
  b->snap = NULL;
  b->n = b->nxadd = b->nacks = 0;
  b->has_tx = false;
  b->have_deliveries = false;
  b->attempts = 0;
  b->busy = false;
}

static void batch_free(struct batch *b)
{
  batch_clear(b);
  free(b->entries);
  free(b->deliveries);
  free(b->frames);
  free(b->outcome);
  free(b->order);
  free(b->xadd_of);
  free(b->held);
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

static void op_push(struct fb_ingest *g, enum op_kind kind, struct batch *b)
{
  size_t cap = sizeof g->ops / sizeof g->ops[0];
  g->ops[(g->op_head + g->op_count++) % cap] = (struct op){kind, b};
  if (kind == OP_READ)
    g->read_in_flight = true;
  else
    g->tx_in_flight++;
}

static struct op op_pop(struct fb_ingest *g)
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
    batch_clear(&g->batches[i]);
  g->nblocked = 0;
  atomic_store(&g->m->blocked_frames, 0);
  g->nheld = 0; /* the recovery pass reads them again */
  g->resending = false;
  g->op_head = g->op_count = 0;
  g->read_in_flight = false;
  g->tx_in_flight = 0;
  g->claiming = false;
  g->phase = PHASE_SETUP;
  atomic_store(&g->m->redis_up, 0);
  atomic_store(&g->m->group_ready, 0);
}

static void lose_connection(struct fb_ingest *g, const char *why)
{
  fb_redis_drop(&g->redis, why);
  reset_pipeline(g);
}

static int flush(struct fb_ingest *g)
{
  int done = 0;
  while (!done)
    if (redisBufferWrite(g->redis.ctx, &done) == REDIS_ERR) {
      lose_connection(g, g->redis.ctx->errstr);
      return -EIO;
    }
  return 0;
}

static redisReply *get_reply(struct fb_ingest *g)
{
  void *rep = NULL;
  if (redisGetReply(g->redis.ctx, &rep) != REDIS_OK || !rep) {
    lose_connection(g, g->redis.ctx->errstr[0] ? g->redis.ctx->errstr : "no reply");
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

/* ================================================================ routing */

/* Makes sure the field pool can hold every field of the batch. */
static int reserve_fields(struct fb_ingest *g, const struct batch *b)
{
  size_t total = 0;
  for (size_t i = 0; i < b->n; i++) {
    const redisReply *fv = b->entries[i]->element[1];
    if (fv->type == REDIS_REPLY_ARRAY) total += fv->elements / 2;
  }
  if (total <= g->fields_cap) return 0;
  struct fb_field *nf = realloc(g->fields, total * sizeof *nf);
  if (!nf) return -ENOMEM;
  g->fields = nf;
  g->fields_cap = total;
  return 0;
}

/* The sink of the processor entry `i` of `b` goes to (outcome >= 0). */
static struct fb_sink *sink_of(const struct fb_ingest *g, const struct batch *b, size_t i)
{
  return g->sinks.by_index[b->snap->procs[b->outcome[i]]->transport];
}

/* A commit of sink `sink` says frame `frame_id` did not make it: hold every
 * entry of the batch carrying it to that sink. */
struct held_ctx {
  const struct fb_ingest *g;
  struct batch *b;
  const struct fb_sink *sink;
};

static void hold_frame(void *ctx, const char *frame_id)
{
  struct held_ctx *h = ctx;
  for (size_t i = 0; i < h->b->n; i++)
    if (h->b->outcome[i] >= 0 && sink_of(h->g, h->b, i) == h->sink &&
        fb_str_eq(h->b->frames[i].frame_id, frame_id))
      h->b->held[i] = FB_HOLD_SINK;
}

/* Sends the batch's frames that leave Redis, in hand-off order, and waits
 * for what their sinks must confirm. A frame that did not make it is held:
 * not acked, so it stays pending and is sent again later (JetStream drops
 * the duplicate if it had in fact stored it). */
static void send_outside(struct fb_ingest *g, struct batch *b)
{
  bool sent[FB_SINKS_MAX] = {false};
  for (size_t k = 0; k < b->n; k++) {
    size_t i = b->order[k];
    if (b->held[i] || b->outcome[i] < 0) continue;
    struct fb_sink *sink = sink_of(g, b, i);
    if (sink->ops->stage) continue; /* written in the transaction */
    sent[b->snap->procs[b->outcome[i]]->transport] = true;
    if (sink->ops->send(sink, b->snap->procs[b->outcome[i]], &b->frames[i]))
      b->held[i] = FB_HOLD_SINK;
  }
  for (int k = 0; k < g->sinks.n; k++) {
    struct fb_sink *sink = g->sinks.by_index[k];
    if (!sent[k]) continue;
    struct held_ctx h = {g, b, sink};
    if (sink->ops->commit(sink, hold_frame, &h)) continue;
    for (size_t i = 0; i < b->n; i++) /* fate unknown: hold them all */
      if (b->outcome[i] >= 0 && sink_of(g, b, i) == sink) b->held[i] = FB_HOLD_SINK;
  }
}

/* True when every sink can take frames (held ones are worth sending again). */
static bool sinks_up(const struct fb_ingest *g)
{
  for (int k = 0; k < g->sinks.n; k++)
    if (!g->sinks.by_index[k]->ops->is_up(g->sinks.by_index[k])) return false;
  return true;
}

/* Why entry `i` of `b` goes to the DLQ, for its dlq_detail. */
static void dlq_detail(const struct fb_ingest *g, const struct batch *b, size_t i, char *out,
                       size_t n)
{
  const struct fb_frame *f = &b->frames[i];
  switch (FB_OUTCOME_REASON(b->outcome[i])) {
  case FB_REASON_MALFORMED: snprintf(out, n, "%s", fb_frame_error_str(f->error)); break;
  case FB_REASON_POISON:
    snprintf(out, n, "delivered %lld times", (long long)b->deliveries[i]);
    break;
  case FB_REASON_EXPIRED:
    snprintf(out, n, "older than %lld ms", (long long)g->routing.frame_max_age_ms);
    break;
  default:
    snprintf(out, n, "no live processor has capability '%.*s'", (int)f->detection_type.n,
             f->detection_type.p);
    break;
  }
}

/* Takes the registry snapshot, routing settings and sink states of now for
 * batch `b`, and starts the router's batch at `wall`. */
static void adopt(struct fb_ingest *g, struct batch *b, int64_t wall)
{
  if (fb_registry_generation(g->reg) != g->snap->generation) {
    fb_snapshot_release(g->snap);
    g->snap = fb_registry_snapshot(g->reg);
  }
  unsigned gen = fb_settings_gen(g->app->settings);
  if (gen != g->routing_seen) {
    struct fb_routing_info now;
    fb_settings_get(g->app->settings, &now);
    g->routing = now.r;
    g->routing_seen = gen;
    fb_router_set_strategy(g->router, g->routing.strategy);
    fb_router_set_hash_bound(g->router, g->routing.hash_bound);
    fb_router_set_slow_start(g->router, g->routing.slow_start_ms);
  }
  for (int k = 0; k < g->sinks.n; k++)
    fb_router_set_sink_up(g->router, k, g->sinks.by_index[k]->ops->is_up(g->sinks.by_index[k]));
  fb_snapshot_release(b->snap); /* a blocked batch routed again */
  b->snap = g->snap;
  atomic_fetch_add(&b->snap->refs, 1);
  fb_router_begin(g->router, b->snap, wall);
}

/* Parses every entry of `b` in place from the Redis reply (no copies). */
static void parse_batch(struct fb_ingest *g, struct batch *b)
{
  size_t used = 0;
  for (size_t i = 0; i < b->n; i++) {
    const redisReply *fv = b->entries[i]->element[1];
    struct fb_frame *f = &b->frames[i];
    if (fv->type != REDIS_REPLY_ARRAY || !fv->elements) {
      memset(f, 0, sizeof *f); /* no fields: gone from the stream */
      continue;
    }
    struct fb_field *fl = &g->fields[used];
    size_t nf = fv->elements / 2;
    for (size_t k = 0; k < nf; k++) {
      fl[k].name = (struct fb_str){fv->element[2 * k]->str, fv->element[2 * k]->len};
      fl[k].value = (struct fb_str){fv->element[2 * k + 1]->str, fv->element[2 * k + 1]->len};
    }
    used += nf;
    fb_frame_parse(f, fl, nf);
  }
}

/* Builds b's hand-off transaction in b->tx: the writes of every entry not
 * held (inside-Redis sinks and the DLQ), the XACK, EXEC (and WAIT). */
static int build_handoff(struct fb_ingest *g, struct batch *b, int64_t wall)
{
  struct fb_handoff h;
  fb_handoff_begin(&h, &b->tx, wall, g->cfg->dlq_maxlen);
  b->nacks = 0;
  for (size_t k = 0; k < b->n; k++) {
    size_t i = b->order[k];
    int32_t out = b->outcome[i];
    const redisReply *id = b->entries[i]->element[0];
    b->xadd_of[i] = -1;
    if (b->held[i]) continue;
    b->nacks++;
    if (out >= 0) {
      struct fb_sink *sink = sink_of(g, b, i);
      if (!sink->ops->stage) continue; /* sent already */
      b->xadd_of[i] = (int32_t)h.nwrites;
      fb_handoff_frame(&h, sink, b->snap->procs[out], &b->frames[i]);
    } else if (FB_OUTCOME_REASON(out) != FB_REASON_MISSING) { /* missing: nothing to write */
      char detail[160];
      dlq_detail(g, b, i, detail, sizeof detail);
      b->xadd_of[i] = (int32_t)h.nwrites;
      fb_handoff_dlq(&h, &b->frames[i], FB_OUTCOME_REASON(out), (struct fb_str){id->str, id->len},
                     detail);
    }
  }
  b->nxadd = h.nwrites;
  b->has_tx = b->nacks > 0;
  if (!b->has_tx) return 0; /* every frame was held: nothing to write */
  fb_handoff_ack(&h, g->cfg->input_stream, g->cfg->consumer_group, b->nacks);
  for (size_t i = 0; i < b->n; i++)
    if (!b->held[i])
      fb_handoff_ack_id(&h, b->entries[i]->element[0]->str, b->entries[i]->element[0]->len);
  int rc = fb_handoff_end(&h);
  if (g->cfg->redis_wait_replicas) {
    char n[16], ms[16];
    snprintf(n, sizeof n, "%d", g->cfg->redis_wait_replicas);
    snprintf(ms, sizeof ms, "%d", WAIT_TIMEOUT_MS);
    fb_buf_resp_array(&b->tx, 3);
    fb_buf_resp_bulk(&b->tx, "WAIT", 4);
    fb_buf_resp_bulk(&b->tx, n, strlen(n));
    fb_buf_resp_bulk(&b->tx, ms, strlen(ms));
    if (b->tx.truncated) rc = -ENOSPC;
  }
  return rc;
}

/* Routes every entry of `b` and builds its transaction in b->tx: adopt the
 * state of now, parse, dispatch, send what leaves Redis, build the rest. */
static int route_batch(struct fb_ingest *g, struct batch *b)
{
  if (reserve_fields(g, b)) return -ENOMEM;
  int64_t wall = fb_wall_ms();
  adopt(g, b, wall);
  parse_batch(g, b);
  struct fb_dispatch d = {.n = b->n,
                          .frames = b->frames,
                          .deliveries = b->have_deliveries ? b->deliveries : NULL,
                          .outcome = b->outcome,
                          .held = b->held,
                          .order = b->order};
  fb_dispatch_run(&d, g->router, b->snap, &g->routing, g->cfg->max_deliveries, wall);
  b->ntrimmed = d.ntrimmed;
  /* Until the hand-off is confirmed, the next batches must see these frames
   * in their processors' queues, or they would overfill them (account()
   * takes them back out, before a blocked batch is ever routed again). */
  for (size_t i = 0; i < b->n; i++)
    if (b->outcome[i] >= 0)
      atomic_fetch_add_explicit(&b->snap->procs[b->outcome[i]]->live->routed_in_flight, 1,
                                memory_order_relaxed);
  b->in_flight = true;
  send_outside(g, b);
  return build_handoff(g, b, wall);
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

/* ============================================================= hand-off */

static void account(struct fb_ingest *g, struct batch *b, const redisReply *exec);

static size_t blocked_frames(const struct fb_ingest *g)
{
  size_t n = 0;
  for (size_t k = 0; k < g->nblocked; k++)
    n += g->blocked[k]->n;
  return n;
}

/* A handed-off batch is done, unless backpressure held some of its entries:
 * those stay in it, to be routed again (see retry_blocked). */
static void finish_batch(struct fb_ingest *g, struct batch *b)
{
  size_t j = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->held[i] == FB_HOLD_BLOCKED) {
      b->entries[j] = b->entries[i];
      b->deliveries[j] = b->deliveries[i];
      j++;
    }
  size_t at = 0;
  while (at < g->nblocked && g->blocked[at] != b)
    at++;
  bool was_blocked = at < g->nblocked;
  if (j) {
    if (!g->nblocked) {
      fb_warn("ingest",
              "every processor that can take %zu frames is full: reading paused "
              "(OVERLOAD_POLICY=block)",
              j);
      fb_event_emit(g->app, "backpressure", NULL, "on", "%zu frames wait for room", j);
    }
    b->n = j;
    b->has_tx = false;
    if (!was_blocked) g->blocked[g->nblocked++] = b;
    atomic_store(&g->m->blocked_frames, (int64_t)blocked_frames(g));
    return;
  }
  if (was_blocked) {
    memmove(&g->blocked[at], &g->blocked[at + 1], (g->nblocked - at - 1) * sizeof *g->blocked);
    g->nblocked--;
    atomic_store(&g->m->blocked_frames, (int64_t)blocked_frames(g));
    if (!g->nblocked) {
      fb_info("ingest", "processors have room again: reading resumed");
      fb_event_emit(g->app, "backpressure", NULL, "off", "reading resumed");
    }
  }
  batch_clear(b);
}

/* Puts the batch's transaction on the wire and returns true. A batch with
 * nothing to write (every frame held) is finished at once: false. */
static bool send_tx(struct fb_ingest *g, struct batch *b)
{
  if (!b->has_tx) {
    account(g, b, NULL);
    finish_batch(g, b);
    return false;
  }
  redisAppendFormattedCommand(g->redis.ctx, b->tx.data, b->tx.len);
  op_push(g, OP_TX, b);
  return true;
}

/* Reads the MULTI/QUEUED.../EXEC (and WAIT) replies of `b`. Returns the
 * EXEC reply, or NULL when the connection failed or the server turned out
 * to be a replica (then the connection is dropped: it moves to the primary,
 * where the entries are still pending). */
static redisReply *tx_reply(struct fb_ingest *g, struct batch *b, redisReply *first)
{
  /* `first` answers MULTI; then one QUEUED per XADD and one for XACK. */
  bool readonly = fb_reply_is_error(first, "READONLY");
  freeReplyObject(first);
  for (size_t k = 0; k < b->nxadd + 1; k++) {
    redisReply *q = get_reply(g);
    if (!q) return NULL;
    readonly = readonly || fb_reply_is_error(q, "READONLY");
    freeReplyObject(q);
  }
  redisReply *exec = get_reply(g);
  if (!exec) return NULL;
  if (g->cfg->redis_wait_replicas) {
    redisReply *w = get_reply(g);
    if (!w) {
      freeReplyObject(exec);
      return NULL;
    }
    if (w->type != REDIS_REPLY_INTEGER || w->integer < g->cfg->redis_wait_replicas) {
      if (!atomic_fetch_add(&g->m->redis_wait_short, 1))
        fb_warn("ingest",
                "a hand-off reached %lld of %d Redis replicas within %d ms (REDIS_WAIT_REPLICAS); "
                "counted in frame_buffer_redis_wait_short_total from now on",
                w->type == REDIS_REPLY_INTEGER ? w->integer : -1LL, g->cfg->redis_wait_replicas,
                WAIT_TIMEOUT_MS);
    }
    freeReplyObject(w);
  }
  if (readonly) {
    freeReplyObject(exec);
    lose_connection(g, "Redis answered READONLY: it is a replica now");
    return NULL;
  }
  return exec;
}

/* Counts what became of every entry of a handed-off batch. `exec` is the
 * EXEC reply, or NULL when there was no transaction. */
static void remember_held(struct fb_ingest *g, const char *id)
{
  if (g->nheld < HELD_MAX && strlen(id) < sizeof g->held_ids[0]) {
    snprintf(g->held_ids[g->nheld++], sizeof g->held_ids[0], "%s", id);
    return;
  }
  /* Past the bound they stay pending and the claim pass retries them. */
  if (!g->held_overflow_said)
    fb_warn("ingest", "more than %d remote frames wait for NATS; the rest are claimed later",
            HELD_MAX);
  g->held_overflow_said = true;
}

static void account(struct fb_ingest *g, struct batch *b, const redisReply *exec)
{
  uint64_t delivered = 0, consumed = 0;
  release_in_flight(b);
  for (size_t i = 0; i < b->n; i++) {
    int32_t out = b->outcome[i];
    const char *entry_id = b->entries[i]->element[0]->str;
    if (b->held[i] == FB_HOLD_SINK) {
      atomic_fetch_add(&g->m->nats_publish_errors, 1);
      remember_held(g, entry_id);
    }
    if (b->held[i]) continue; /* still pending: it is handed off later */
    consumed++;
    if (out == FB_OUTCOME_DLQ(FB_REASON_MISSING)) {
      atomic_fetch_add(&g->m->dropped[FB_REASON_MISSING], 1);
      fb_warn("ingest", "pending entry %s is no longer in %s; acked", entry_id,
              g->cfg->input_stream);
      continue;
    }
    const redisReply *r = b->xadd_of[i] >= 0 && exec ? exec->element[b->xadd_of[i]] : NULL;
    if (r && r->type == REDIS_REPLY_ERROR) {
      /* The XACK went through: this frame now exists only here. Say so
       * loudly; registration makes sure targets are streams, so this means
       * someone replaced a processor's stream with another type of key. */
      fb_error("ingest", "frame %.*s (entry %s) was acked but its XADD failed: %s",
               (int)b->frames[i].frame_id.n, b->frames[i].frame_id.p, entry_id, r->str);
      atomic_fetch_add(&g->m->dropped[FB_REASON_NO_PROCESSOR], 1);
    } else if (out >= 0) {
      const struct fb_proc *p = b->snap->procs[out];
      const struct fb_sink_ops *ops = g->sinks.by_index[p->transport]->ops;
      atomic_fetch_add_explicit(&p->live->frames_routed, 1, memory_order_relaxed);
      if (ops->queues)
        atomic_fetch_add_explicit(&p->live->sent_since_poll, 1, memory_order_relaxed);
      delivered++;
    } else {
      enum fb_reason reason = FB_OUTCOME_REASON(out);
      atomic_fetch_add(&g->m->dropped[reason], 1);
      atomic_fetch_add(&g->m->dlq[reason], 1);
      fb_debug("ingest", "entry %s to %s: %s", entry_id, FB_DLQ_STREAM, fb_reason_name(reason));
    }
  }
  atomic_fetch_add(&g->m->dropped[FB_REASON_TRIMMED], b->ntrimmed);
  atomic_fetch_add(&g->m->frames_distributed, delivered);
  atomic_fetch_add(&g->m->decisions[g->routing.strategy], delivered);
  atomic_fetch_add(&g->m->frames_consumed, consumed);
  atomic_fetch_add(&g->m->batches, 1);
  fb_histogram_observe(&g->m->routing, fb_mono_ns() - b->read_ns, consumed);
}

/* Handles a transaction's replies. Returns 0 when the batch is done, 1 when
 * it was sent again, -EIO when the connection was lost. */
static int complete_tx(struct fb_ingest *g, struct batch *b, redisReply *first)
{
  redisReply *exec = tx_reply(g, b, first);
  if (!exec) return -EIO;
  if (exec->type == REDIS_REPLY_ARRAY && exec->elements == b->nxadd + 1) {
    account(g, b, exec);
    freeReplyObject(exec);
    finish_batch(g, b);
    return 0;
  }
  /* EXECABORT (out of memory, a read-only replica, ...): nothing ran; the
   * entries are still pending. Try the same transaction again a few times,
   * then reconnect and let the recovery pass re-read them. */
  fb_error("ingest", "hand-off of %zu frames failed: %s", b->n,
           exec->type == REDIS_REPLY_ERROR ? exec->str : "unexpected reply");
  freeReplyObject(exec);
  if (++b->attempts >= TX_RETRIES) {
    lose_connection(g, "hand-off keeps failing");
    return -EIO;
  }
  fb_sleep_ms(100 << b->attempts);
  send_tx(g, b);
  return 1;
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
  op_push(g, OP_READ, NULL);
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

/* Sends the batch's transaction and waits for it (an empty pipeline). */
static int hand_off_sync(struct fb_ingest *g, struct batch *b)
{
  if (!send_tx(g, b)) return 0;
  for (;;) {
    if (flush(g)) return -EIO;
    redisReply *first = get_reply(g);
    if (!first) return -EIO;
    op_pop(g);
    int rc = complete_tx(g, b, first);
    if (rc <= 0) return rc;
  }
}

/* Routes and hands off one batch synchronously (recovery and claims). */
static int hand_off_now(struct fb_ingest *g, struct batch *b)
{
  if (load_deliveries(g, b)) return -EIO;
  if (route_batch(g, b)) {
    fb_error("ingest", "cannot build the hand-off of %zu entries; retrying", b->n);
    return -ENOMEM;
  }
  return hand_off_sync(g, b);
}

/* Backpressure: routes the held entries again once in a while, oldest
 * first, reading nothing new until they have all gone. */
static void retry_blocked(struct fb_ingest *g)
{
  fb_sleep_ms(BLOCK_RETRY_MS);
  struct batch *b = g->blocked[0];
  if (route_batch(g, b)) {
    lose_connection(g, "cannot build a hand-off");
    return;
  }
  hand_off_sync(g, b);
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
    batch_clear(b);
    lose_connection(g, "cannot read pending entries");
    return;
  }
  if (!take_entries(b, rep->type == REDIS_REPLY_ARRAY ? read_entries(rep) : NULL,
                    (size_t)g->cfg->batch_size)) {
    batch_clear(b);
    if (g->recovered)
      fb_info("ingest", "finished %llu pending entries left from before",
              (unsigned long long)g->recovered);
    g->phase = PHASE_LIVE;
    return;
  }
  snprintf(g->cursor, sizeof g->cursor, "%s", b->entries[b->n - 1]->element[0]->str);
  g->recovered += b->n;
  if (hand_off_now(g, b) == -ENOMEM) batch_clear(b);
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
    batch_clear(b);
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
    if (hand_off_now(g, b) == -ENOMEM) batch_clear(b);
  } else {
    batch_clear(b);
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
    batch_clear(b); /* acked meanwhile, or no longer in the stream */
  } else {
    fb_info("ingest", "handing off %zu remote frames that waited for NATS", b->n);
    if (hand_off_now(g, b) == -ENOMEM) batch_clear(b);
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
  if (g->nheld && !g->resending && sinks_up(g) && fb_mono_ms() >= g->next_resend_ms)
    g->resending = true;
  if (!stopping && !g->claiming && !g->resending && !g->nblocked && !g->read_in_flight &&
      g->tx_in_flight < MAX_TX && (!g->idle || g->op_count == 0))
    send_read(g, true);
  if (!g->op_count) return; /* drained: the caller may claim or stop */
  if (flush(g)) return;
  redisReply *rep = get_reply(g);
  if (!rep) return;
  struct op op = op_pop(g);
  if (op.kind == OP_TX) {
    complete_tx(g, op.b, rep);
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
    batch_clear(b);
    lose_connection(g, nogroup    ? "consumer group is gone"
                       : readonly ? "the server is a replica now (READONLY)"
                                  : "read failed");
    if (!nogroup && !readonly) fb_sleep_ms(1000);
    return;
  }
  if (!take_entries(b, rep->type == REDIS_REPLY_ARRAY ? read_entries(rep) : NULL,
                    (size_t)g->cfg->batch_size)) {
    batch_clear(b);
    g->idle = true;
    return;
  }
  g->idle = false;
  /* Put the next read on the wire before routing this batch. */
  if (!stopping && !g->claiming && !g->resending && !g->nblocked && g->tx_in_flight < MAX_TX) {
    send_read(g, false);
    if (flush(g)) return;
  }
  if (route_batch(g, b)) {
    /* Cannot build it (out of memory): the entries stay pending and the
     * recovery pass after a reconnect picks them up. */
    lose_connection(g, "cannot build a hand-off");
    return;
  }
  send_tx(g, b);
}

static void *run(void *arg)
{
  struct fb_ingest *g = arg;
  while (!atomic_load(&g->stop) || g->op_count) {
    /* The primary moved: what is in flight went to the old one. The
     * recovery pass re-reads our pending entries on the new one. */
    if (fb_redis_is_stale(&g->redis)) lose_connection(g, "the Redis primary moved");
    if (fb_redis_ensure(&g->redis)) {
      atomic_store(&g->m->redis_up, 0);
      fb_sleep_ms(50);
      continue;
    }
    if (g->nblocked && !g->op_count && g->phase != PHASE_SETUP) {
      retry_blocked(g);
      continue;
    }
    switch (g->phase) {
    case PHASE_SETUP:
      if (setup(g)) fb_sleep_ms(100);
      break;
    case PHASE_RECOVER: recover_step(g); break;
    case PHASE_LIVE:
      if (!g->op_count) touch_held(g);
      if (g->resending && !g->op_count)
        resend_step(g);
      else if (g->claiming && !g->op_count)
        claim_step(g);
      else
        live_step(g);
      break;
    }
    if (atomic_load(&g->stop) && !g->op_count) break;
  }
  return NULL;
}

/* ============================================================ lifecycle */

int fb_ingest_start(struct fb_ingest **out, struct fb_app *app)
{
  const struct fb_config *cfg = app->cfg;
  struct fb_ingest *g = calloc(1, sizeof *g);
  if (!g) return -ENOMEM;
  g->app = app;
  g->cfg = cfg;
  g->reg = app->registry;
  g->m = app->metrics;
  fb_redis_init(&g->redis, &cfg->redis, "ingest", REDIS_TIMEOUT_MS);
  int rc = fb_router_create(&g->router, cfg->strategy);
  if (!rc) rc = fb_sinks_create(&g->sinks, app);
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
  free(g->held_ids);
  free(g->fields);
  free(g);
}
