/*
 * Moving a dead processor's backlog (see rescue.h). Control thread only.
 */
#include "framebuffer/rescue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"
#include "framebuffer/frame.h"
#include "framebuffer/handoff.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"
#include "framebuffer/router.h"
#include "framebuffer/sink.h"
#include "framebuffer/store.h"

#define RESCUE_BATCH 128
#define TX_MAX       (64u << 20)

struct fb_rescue {
  int64_t dlq_maxlen, claim_idle_ms;
  struct fb_metrics *m;
  struct fb_router *router;
  struct fb_sink *sink; /* the Redis stream sink: the only one inside the transaction */
  struct fb_buf tx;
  struct fb_field *fields;
  size_t fields_cap;
};

int fb_rescue_create(struct fb_rescue **out, const struct fb_config *cfg, struct fb_metrics *m)
{
  struct fb_rescue *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->dlq_maxlen = cfg->dlq_maxlen;
  r->claim_idle_ms = cfg->claim_idle_ms;
  r->m = m;
  if (fb_router_create(&r->router, FB_STRATEGY_ROUND_ROBIN)) {
    free(r);
    return -ENOMEM;
  }
  if (fb_sink_list[FB_TRANSPORT_REDIS]->create(&r->sink, &(struct fb_sink_env){cfg, NULL})) {
    fb_router_destroy(r->router);
    free(r);
    return -ENOMEM;
  }
  /* A rescue is one Redis transaction: only sinks inside Redis can take. */
  for (int i = 0; fb_sink_list[i]; i++)
    fb_router_set_sink_up(r->router, i, fb_sink_list[i]->stage != NULL);
  fb_buf_init(&r->tx, TX_MAX);
  *out = r;
  return 0;
}

void fb_rescue_destroy(struct fb_rescue *r)
{
  if (!r) return;
  fb_router_destroy(r->router);
  fb_sink_list[FB_TRANSPORT_REDIS]->destroy(r->sink);
  fb_buf_free(&r->tx);
  free(r->fields);
  free(r);
}

/* Moves the entries of `entries` (an [[id, fields]...] array). */
static long move(struct fb_rescue *r, struct fb_redis *redis, const struct fb_snapshot *s,
                 const struct fb_proc *dead, const redisReply *entries)
{
  if (!entries || entries->type != REDIS_REPLY_ARRAY || !entries->elements) return 0;
  size_t n = entries->elements;

  struct fb_handoff h;
  fb_handoff_begin(&h, &r->tx, fb_wall_ms(), r->dlq_maxlen);
  size_t acks = 0, moved = 0;
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) continue;
    acks++;
    const redisReply *fv = e->element[1];
    if (fv->type != REDIS_REPLY_ARRAY || !fv->elements) continue; /* trimmed away */
    size_t nf = fv->elements / 2;
    if (nf > r->fields_cap) {
      struct fb_field *nfp = realloc(r->fields, nf * sizeof *nfp);
      if (!nfp) return -ENOMEM;
      r->fields = nfp;
      r->fields_cap = nf;
    }
    for (size_t k = 0; k < nf; k++) {
      r->fields[k].name = (struct fb_str){fv->element[2 * k]->str, fv->element[2 * k]->len};
      r->fields[k].value =
          (struct fb_str){fv->element[2 * k + 1]->str, fv->element[2 * k + 1]->len};
    }
    struct fb_frame f;
    fb_frame_parse(&f, r->fields, nf);
    bool full; /* a rescued frame goes even to a full queue: it has nowhere else */
    int pick = fb_router_pick(r->router, s, &f, &full);
    /* Only a sink inside Redis can take it inside this transaction. */
    if (pick >= 0 && s->procs[pick] != dead && fb_sink_in_redis(s->procs[pick]->transport)) {
      fb_handoff_frame(&h, r->sink, s->procs[pick], &f);
      moved++;
    } else {
      char detail[200];
      snprintf(detail, sizeof detail, "processor %s died and no live processor can take it",
               dead->id);
      fb_handoff_dlq(&h, &f, FB_REASON_NO_PROCESSOR,
                     (struct fb_str){e->element[0]->str, e->element[0]->len}, detail);
      atomic_fetch_add(&r->m->dropped[FB_REASON_NO_PROCESSOR], 1);
      atomic_fetch_add(&r->m->dlq[FB_REASON_NO_PROCESSOR], 1);
    }
  }
  if (!acks) return 0;
  fb_handoff_ack(&h, dead->stream, FB_PROCESSOR_GROUP, acks);
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = entries->element[i];
    if (e->type == REDIS_REPLY_ARRAY && e->elements == 2)
      fb_handoff_ack_id(&h, e->element[0]->str, e->element[0]->len);
  }
  if (fb_handoff_end(&h)) return -ENOSPC;

  /* MULTI, the writes, XACK, EXEC: the last reply is EXEC's. */
  redisContext *c = redis->ctx;
  redisAppendFormattedCommand(c, r->tx.data, r->tx.len);
  redisReply *exec = NULL;
  for (size_t k = 0; k < h.nwrites + 3; k++) {
    void *rep = NULL;
    if (redisGetReply(c, &rep) != REDIS_OK) {
      fb_redis_drop(redis, c->errstr);
      if (exec) freeReplyObject(exec);
      return -EIO;
    }
    if (exec) freeReplyObject(exec);
    exec = rep;
  }
  bool ok = exec->type == REDIS_REPLY_ARRAY;
  if (!ok)
    fb_warn("rescue", "moving frames of %s failed: %s", dead->id,
            exec->type == REDIS_REPLY_ERROR ? exec->str : "unexpected reply");
  freeReplyObject(exec);
  if (!ok) return -EIO;
  atomic_fetch_add(&r->m->rescued, moved);
  return (long)acks;
}

long fb_rescue_run(struct fb_rescue *r, struct fb_redis *redis, const struct fb_snapshot *s,
                   const struct fb_proc *dead, size_t max)
{
  if (fb_redis_ensure(redis)) return -EIO;
  char count[16], idle[24];
  snprintf(count, sizeof count, "%d", RESCUE_BATCH);
  snprintf(idle, sizeof idle, "%lld", (long long)r->claim_idle_ms);
  long total = 0;
  fb_router_begin(r->router, s, 0);
  /* Our own pending entries first (a rescue cut short), then what the dead
   * processor read and left, then what it never read. */
  for (int source = 0; source < 3 && (size_t)total < max;) {
    redisReply *rep;
    const redisReply *entries = NULL;
    if (source == 1) {
      rep = fb_redis_cmd(redis, "XAUTOCLAIM %s %s %s %s 0-0 COUNT %s", dead->stream,
                         FB_PROCESSOR_GROUP, FB_RESCUE_CONSUMER, idle, count);
      if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) entries = rep->element[1];
    } else {
      rep = fb_redis_cmd(redis, "XREADGROUP GROUP %s %s COUNT %s STREAMS %s %s", FB_PROCESSOR_GROUP,
                         FB_RESCUE_CONSUMER, count, dead->stream, source == 0 ? "0" : ">");
      if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
          rep->element[0]->elements == 2)
        entries = rep->element[0]->element[1];
    }
    if (!rep) return -EIO;
    if (rep->type == REDIS_REPLY_ERROR) {
      /* NOGROUP: the stream is gone; nothing to rescue. */
      if (!fb_reply_is_error(rep, "NOGROUP"))
        fb_warn("rescue", "reading the backlog of %s: %s", dead->id, rep->str);
      freeReplyObject(rep);
      return total;
    }
    long moved = move(r, redis, s, dead, entries);
    freeReplyObject(rep);
    if (moved < 0) return moved;
    if (moved == 0) source++;
    total += moved;
  }
  if (total)
    fb_info("rescue", "moved %ld frames of dead processor %s to live processors", total, dead->id);
  return total;
}
