/*
 * Routing one batch on the ingest thread (see ingest_int.h): take the
 * registry snapshot, settings and sink states of now, parse the entries in
 * place, let the pure dispatcher decide each frame's fate, send what leaves
 * Redis through its sink, and build the hand-off transaction for the rest.
 */
#include "ingest_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/handoff.h"
#include "framebuffer/registry.h"

/* ================================================================ routing */

/* Makes sure the batch's field pool can hold every field of its entries
 * (each batch has its own: a queued batch's frames point into it). */
static int reserve_fields(struct batch *b)
{
  size_t total = 0;
  for (size_t i = 0; i < b->n; i++) {
    const redisReply *fv = b->entries[i]->element[1];
    if (fv->type == REDIS_REPLY_ARRAY) total += fv->elements / 2;
  }
  if (total <= b->fields_cap) return 0;
  struct fb_field *nf = realloc(b->fields, total * sizeof *nf);
  if (!nf) return -ENOMEM;
  b->fields = nf;
  b->fields_cap = total;
  return 0;
}

/* The sink of the processor entry `i` of `b` goes to (outcome >= 0). */
static struct fb_sink *sink_of(const struct fb_ingest *g, const struct batch *b, size_t i)
{
  return g->sinks.by_index[b->snap->procs[b->outcome[i]]->transport];
}

/* ========================================================== shadow copies */

/* Takes the fleet's shadows of now for batch `b`. */
static struct fb_shadow_set *adopt_shadows(struct fb_ingest *g, struct batch *b)
{
  fb_shadow_set_release(b->shadows);
  b->shadows = NULL;
  b->ncopies = 0;
  if (!g->shadows) return NULL;
  unsigned gen = fb_shadows_gen(g->shadows);
  if (!g->shadow_set || gen != g->shadows_seen) {
    fb_shadow_set_release(g->shadow_set);
    g->shadow_set = fb_shadows_get(g->shadows);
    g->shadows_seen = gen;
  }
  if (!g->shadow_set->n) return NULL;
  b->shadows = g->shadow_set;
  atomic_fetch_add(&b->shadows->refs, 1);
  return b->shadows;
}

/* Room for one more copy of `nfields` fields. 0 or -ENOMEM. The copies'
 * fields are addressed by offset until the batch's copies are all made. */
static int reserve_copy(struct batch *b, size_t fields_used, size_t nfields)
{
  if (b->ncopies == b->copies_cap) {
    size_t cap = b->copies_cap ? 2 * b->copies_cap : 64;
    struct shadow_copy *c = realloc(b->copies, cap * sizeof *c);
    if (!c) return -ENOMEM;
    b->copies = c;
    b->copies_cap = cap;
  }
  if (fields_used + nfields > b->copy_fields_cap) {
    size_t cap = b->copy_fields_cap ? 2 * b->copy_fields_cap : 1024;
    while (cap < fields_used + nfields)
      cap *= 2;
    struct fb_field *f = realloc(b->copy_fields, cap * sizeof *f);
    if (!f) return -ENOMEM;
    b->copy_fields = f;
    b->copy_fields_cap = cap;
  }
  return 0;
}

/* Is shadow target `p` able to take a copy now? Else the outcome to count. */
static bool target_takes(const struct fb_proc *p, enum fb_shadow_outcome *why)
{
  const struct fb_proc_live *l = p->live;
  if (atomic_load_explicit(&l->status, memory_order_relaxed) == FB_HEALTH_DEAD) {
    *why = FB_SHADOW_TARGET_DEAD;
    return false;
  }
  int64_t depth = atomic_load_explicit(&l->queue_depth, memory_order_relaxed) +
                  atomic_load_explicit(&l->sent_since_poll, memory_order_relaxed);
  if (p->max_queue > 0 && depth >= p->max_queue) {
    *why = FB_SHADOW_TARGET_FULL;
    return false;
  }
  return true;
}

/* Makes the copies of the batch's delivered frames that its shadows take.
 * A copy whose target cannot take it is counted and dropped: copies never
 * hold, block or redirect a frame. */
static void make_copies(struct fb_ingest *g, struct batch *b)
{
  struct fb_shadow_set *set = adopt_shadows(g, b);
  if (!set) return;
  int32_t target[FB_SHADOWS_MAX];
  uint64_t dropped[FB_SHADOWS_MAX][FB_SHADOW_OUTCOMES] = {{0}};
  for (size_t s = 0; s < set->n; s++)
    target[s] = fb_snapshot_find(b->snap, set->v[s].target);
  size_t used = 0;
  for (size_t i = 0; i < b->n; i++) {
    if (b->held[i] || b->outcome[i] < 0) continue;
    const struct fb_frame *f = &b->frames[i];
    for (size_t s = 0; s < set->n; s++) {
      if (!fb_shadow_matches(&set->v[s], f)) continue;
      enum fb_shadow_outcome why = FB_SHADOW_TARGET_DEAD;
      if (target[s] < 0 || !target_takes(b->snap->procs[target[s]], &why)) {
        dropped[s][why]++;
        continue;
      }
      if (reserve_copy(b, used, f->nfields + 2)) {
        dropped[s][FB_SHADOW_FAILED]++; /* out of memory: no copy */
        continue;
      }
      struct fb_field *cf = &b->copy_fields[used];
      memcpy(cf, f->fields, f->nfields * sizeof *cf);
      const char *primary = b->snap->procs[b->outcome[i]]->id;
      struct fb_str name = {set->v[s].name, strlen(set->v[s].name)};
      cf[f->nfields] = (struct fb_field){{"shadow", 6}, name};
      cf[f->nfields + 1] = (struct fb_field){{"shadow_of", 9}, {primary, strlen(primary)}};
      struct shadow_copy *c = &b->copies[b->ncopies++];
      *c = (struct shadow_copy){.entry = (uint32_t)i,
                                .shadow = (uint16_t)s,
                                .target = target[s],
                                .write = -1,
                                .field_at = used,
                                .frame = *f};
      c->frame.nfields = f->nfields + 2;
      c->frame.shadow = name;
      used += f->nfields + 2;
    }
  }
  for (size_t k = 0; k < b->ncopies; k++) /* the pool has stopped moving */
    b->copies[k].frame.fields = &b->copy_fields[b->copies[k].field_at];
  for (size_t s = 0; s < set->n; s++)
    for (int o = 0; o < FB_SHADOW_OUTCOMES; o++)
      if (dropped[s][o]) fb_shadows_count(g->shadows, set->v[s].name, o, dropped[s][o]);
}

/* Sends the copies that leave Redis; what failed is counted, never held. */
static void send_copies_outside(struct fb_ingest *g, struct batch *b)
{
  for (size_t k = 0; k < b->ncopies; k++) {
    struct shadow_copy *c = &b->copies[k];
    const struct fb_proc *p = b->snap->procs[c->target];
    struct fb_sink *sink = g->sinks.by_index[p->transport];
    if (sink->ops->stage) continue; /* written in the transaction */
    g->sink_sent[p->transport] = true;
    bool ok = sink->ops->send(sink, p, &c->frame) == 0;
    fb_shadows_count(g->shadows, b->shadows->v[c->shadow].name,
                     ok ? FB_SHADOW_SENT : FB_SHADOW_FAILED, 1);
  }
}

/* Sends the batch's frames that leave Redis, in hand-off order. One whose
 * send failed is held: not acked, so it stays pending and is sent again
 * later. */
static void send_outside(struct fb_ingest *g, struct batch *b)
{
  for (size_t k = 0; k < b->n; k++) {
    size_t i = b->order[k];
    if (b->held[i] || b->outcome[i] < 0) continue;
    struct fb_sink *sink = sink_of(g, b, i);
    if (sink->ops->stage) continue; /* written in the transaction */
    g->sink_sent[b->snap->procs[b->outcome[i]]->transport] = true;
    if (sink->ops->send(sink, b->snap->procs[b->outcome[i]], &b->frames[i]))
      b->held[i] = FB_HOLD_SINK;
  }
}

/* A commit of sink `sink` says frame `frame_id` did not make it: hold every
 * queued entry carrying it to that sink. */
struct held_ctx {
  struct fb_ingest *g;
  const struct fb_sink *sink;
};

static void hold_frame(void *ctx, const char *frame_id)
{
  struct held_ctx *h = ctx;
  for (size_t q = 0; q < h->g->nawait; q++) {
    struct batch *b = h->g->await[q];
    for (size_t i = 0; i < b->n; i++)
      if (b->outcome[i] >= 0 && sink_of(h->g, b, i) == h->sink &&
          fb_str_eq(b->frames[i].frame_id, frame_id))
        b->held[i] = FB_HOLD_SINK;
  }
}

/* The fate of what `sink` sent is unknown: hold all of it. */
static void hold_all(struct fb_ingest *g, const struct fb_sink *sink)
{
  for (size_t q = 0; q < g->nawait; q++) {
    struct batch *b = g->await[q];
    for (size_t i = 0; i < b->n; i++)
      if (b->outcome[i] >= 0 && sink_of(g, b, i) == sink) b->held[i] = FB_HOLD_SINK;
  }
}

bool ingest_awaits_sinks(const struct fb_ingest *g)
{
  for (int k = 0; k < g->sinks.n; k++)
    if (g->sink_sent[k] && g->sinks.by_index[k]->ops->unconfirmed &&
        g->sinks.by_index[k]->ops->unconfirmed(g->sinks.by_index[k]))
      return true;
  return false;
}

/* True when every sink can take frames (held ones are worth sending again). */
bool ingest_sinks_up(const struct fb_ingest *g)
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
  unsigned gen = fb_settings_gen(g->settings);
  if (gen != g->routing_seen) {
    struct fb_routing_info now;
    fb_settings_get(g->settings, &now);
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

/* The sink that drops what it already has, where frames seen before go
 * (-1: none). */
static int retry_sink(const struct fb_ingest *g)
{
  for (int k = 0; k < g->sinks.n; k++) {
    const struct fb_sink *s = g->sinks.by_index[k];
    if (s->ops->dedupes && s->ops->dedupes(s)) return k;
  }
  return -1;
}

/* Adds the cameras the router moved since the last batch to the metrics. */
static void count_moves(struct fb_ingest *g)
{
  uint64_t now[FB_MOVE_COUNT];
  fb_router_moves(g->router, now);
  for (int k = 0; k < FB_MOVE_COUNT; k++)
    if (now[k] != g->moves_seen[k]) {
      atomic_fetch_add_explicit(&g->m->camera_moves[k], now[k] - g->moves_seen[k],
                                memory_order_relaxed);
      g->moves_seen[k] = now[k];
    }
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
    struct fb_field *fl = &b->fields[used];
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
  for (size_t k = 0; k < b->ncopies; k++) {
    struct shadow_copy *c = &b->copies[k];
    const struct fb_proc *p = b->snap->procs[c->target];
    struct fb_sink *sink = g->sinks.by_index[p->transport];
    c->write = -1;
    if (!sink->ops->stage || b->held[c->entry]) continue; /* sent already, or not now */
    c->write = (int32_t)h.nwrites;
    fb_handoff_frame(&h, sink, p, &c->frame);
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

/* Routes every entry of `b`: adopt the state of now, parse, dispatch, send
 * what leaves Redis; the rest is written by its transaction (ingest_settle). */
int ingest_route_batch(struct fb_ingest *g, struct batch *b)
{
  if (reserve_fields(b)) return -ENOMEM;
  g->await[g->nawait++] = b;
  b->has_tx = false;
  int64_t wall = fb_wall_ms();
  b->wall_ms = wall;
  adopt(g, b, wall);
  parse_batch(g, b);
  struct fb_dispatch d = {.n = b->n,
                          .frames = b->frames,
                          .deliveries = b->have_deliveries ? b->deliveries : NULL,
                          .retry_sink = retry_sink(g),
                          .retried = b->retried,
                          .outcome = b->outcome,
                          .held = b->held,
                          .order = b->order};
  fb_dispatch_run(&d, g->router, b->snap, &g->routing, g->cfg->max_deliveries, wall);
  b->ntrimmed = d.ntrimmed;
  count_moves(g);
  /* Until the hand-off is confirmed, the next batches must see these frames
   * in their processors' queues, or they would overfill them (account()
   * takes them back out, before a blocked batch is ever routed again). */
  for (size_t i = 0; i < b->n; i++)
    if (b->outcome[i] >= 0)
      atomic_fetch_add_explicit(&b->snap->procs[b->outcome[i]]->live->routed_in_flight, 1,
                                memory_order_relaxed);
  b->in_flight = true;
  make_copies(g, b);
  send_outside(g, b);
  send_copies_outside(g, b);
  return 0;
}

int ingest_settle(struct fb_ingest *g)
{
  for (int k = 0; k < g->sinks.n; k++) {
    struct fb_sink *sink = g->sinks.by_index[k];
    if (!g->sink_sent[k]) continue;
    g->sink_sent[k] = false;
    struct held_ctx h = {g, sink};
    if (!sink->ops->commit(sink, hold_frame, &h)) hold_all(g, sink);
  }
  for (size_t q = 0; q < g->nawait; q++) {
    int rc = build_handoff(g, g->await[q], g->await[q]->wall_ms);
    if (rc) return rc;
  }
  return 0;
}
