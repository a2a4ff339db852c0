/*
 * The end of a batch's hand-off on the ingest thread (see ingest_int.h): the
 * transaction's replies, what became of every entry (delivered, to the DLQ,
 * held for a sink, blocked for room), and retries when Redis refused it.
 */
#include "ingest_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/log.h"
#include "framebuffer/trace.h"

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
      fb_event_emit(g->events, "backpressure", NULL, "on", "%zu frames wait for room", j);
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
      fb_event_emit(g->events, "backpressure", NULL, "off", "reading resumed");
    }
  }
  ingest_batch_clear(b);
}

/* Puts the batch's transaction on the wire and returns true. A batch with
 * nothing to write (every frame held) is finished at once: false. */
bool ingest_send_tx(struct fb_ingest *g, struct batch *b)
{
  if (!b->has_tx) {
    account(g, b, NULL);
    finish_batch(g, b);
    return false;
  }
  redisAppendFormattedCommand(g->redis.ctx, b->tx.data, b->tx.len);
  ingest_op_push(g, OP_TX, b);
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
    redisReply *q = ingest_get_reply(g);
    if (!q) return NULL;
    readonly = readonly || fb_reply_is_error(q, "READONLY");
    freeReplyObject(q);
  }
  redisReply *exec = ingest_get_reply(g);
  if (!exec) return NULL;
  if (g->cfg->redis_wait_replicas) {
    redisReply *w = ingest_get_reply(g);
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
    ingest_lose_connection(g, "Redis answered READONLY: it is a replica now");
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

/* Writes what became of entry i of `b` into the frame trace. */
static void trace_entry(struct fb_ingest *g, const struct batch *b, size_t i,
                        enum fb_trace_outcome outcome, int reason)
{
  const struct fb_frame *f = &b->frames[i];
  if (!f->frame_id.n) return; /* nothing to look it up by */
  int32_t out = b->outcome[i];
  const struct fb_proc *p = out >= 0 ? b->snap->procs[out] : NULL;
  struct fb_trace_in in = {
      .frame_id = f->frame_id,
      .camera_id = f->camera_id,
      .source_id = b->entries[i]->element[0]->str,
      .outcome = outcome,
      .reason = reason,
      .strategy = (int)g->routing.strategy,
      .transport = p ? (int)p->transport : -1,
      .processor_id = p ? p->id : NULL,
      .target = p ? (fb_sink_in_redis(p->transport) ? p->stream : p->subject) : NULL,
      .routed_at_ms = b->wall_ms,
  };
  fb_trace_add(g->trace, &in);
}

/* Counts the copies written in the transaction, by shadow. */
static void account_copies(struct fb_ingest *g, const struct batch *b, const redisReply *exec)
{
  uint64_t sent[FB_SHADOWS_MAX] = {0}, failed[FB_SHADOWS_MAX] = {0};
  for (size_t k = 0; k < b->ncopies; k++) {
    const struct shadow_copy *c = &b->copies[k];
    if (c->write < 0) continue;
    const redisReply *r = exec ? exec->element[c->write] : NULL;
    if (r && r->type != REDIS_REPLY_ERROR) {
      sent[c->shadow]++;
      /* In the target's queue until its depth is read again (not the primary's). */
      atomic_fetch_add_explicit(&b->snap->procs[c->target]->live->sent_since_poll, 1,
                                memory_order_relaxed);
    } else {
      failed[c->shadow]++;
    }
  }
  for (size_t s = 0; b->shadows && s < b->shadows->n; s++) {
    if (sent[s]) fb_shadows_count(g->shadows, b->shadows->v[s].name, FB_SHADOW_SENT, sent[s]);
    if (failed[s]) fb_shadows_count(g->shadows, b->shadows->v[s].name, FB_SHADOW_FAILED, failed[s]);
  }
}

static void account(struct fb_ingest *g, struct batch *b, const redisReply *exec)
{
  account_copies(g, b, exec);
  uint64_t delivered = 0, consumed = 0;
  ingest_release_in_flight(b);
  if (g->trace) fb_trace_begin(g->trace);
  for (size_t i = 0; i < b->n; i++) {
    int32_t out = b->outcome[i];
    const char *entry_id = b->entries[i]->element[0]->str;
    if (b->held[i] == FB_HOLD_SINK) {
      atomic_fetch_add(&g->m->nats_publish_errors, 1);
      remember_held(g, entry_id);
    }
    if (b->held[i]) { /* still pending: it is handed off later */
      if (g->trace) trace_entry(g, b, i, FB_TRACE_HELD, -1);
      continue;
    }
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
      if (g->trace) trace_entry(g, b, i, FB_TRACE_DROPPED, FB_TRACE_WRITE_FAILED);
    } else if (out >= 0) {
      if (g->trace) trace_entry(g, b, i, FB_TRACE_DELIVERED, -1);
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
      if (g->trace) trace_entry(g, b, i, FB_TRACE_DLQ, (int)reason);
      fb_debug("ingest", "entry %s to %s: %s", entry_id, FB_DLQ_STREAM, fb_reason_name(reason));
    }
  }
  if (g->trace) fb_trace_end(g->trace);
  atomic_fetch_add(&g->m->dropped[FB_REASON_TRIMMED], b->ntrimmed);
  atomic_fetch_add(&g->m->frames_distributed, delivered);
  atomic_fetch_add(&g->m->decisions[g->routing.strategy], delivered);
  atomic_fetch_add(&g->m->frames_consumed, consumed);
  atomic_fetch_add(&g->m->batches, 1);
  fb_histogram_observe(&g->m->routing, fb_mono_ns() - b->read_ns, consumed);
}

/* Handles a transaction's replies. Returns 0 when the batch is done, 1 when
 * it was sent again, -EIO when the connection was lost. */
int ingest_complete_tx(struct fb_ingest *g, struct batch *b, redisReply *first)
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
    ingest_lose_connection(g, "hand-off keeps failing");
    return -EIO;
  }
  fb_sleep_ms(100 << b->attempts);
  ingest_send_tx(g, b);
  return 1;
}

/* Sends the batch's transaction and waits for it (an empty pipeline). */
int ingest_hand_off_sync(struct fb_ingest *g, struct batch *b)
{
  if (!ingest_send_tx(g, b)) return 0;
  for (;;) {
    if (ingest_flush(g)) return -EIO;
    redisReply *first = ingest_get_reply(g);
    if (!first) return -EIO;
    ingest_op_pop(g);
    int rc = ingest_complete_tx(g, b, first);
    if (rc <= 0) return rc;
  }
}
