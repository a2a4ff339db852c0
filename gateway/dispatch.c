/*
 * The dispatcher (see dispatch.h): pure, one batch at a time.
 */
#include "framebuffer/dispatch.h"

#include <errno.h>
#include <stdlib.h>

static int cmp_priority_desc(const void *a, const void *b, void *arg)
{
  const struct fb_frame *frames = arg;
  int64_t pa = frames[*(const uint32_t *)a].priority, pb = frames[*(const uint32_t *)b].priority;
  if (pa != pb) return pa > pb ? -1 : 1;
  return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1; /* stable */
}

/* The router's pick for frame `i` under the overload policy. */
static int32_t route_one(struct fb_dispatch *d, size_t i, struct fb_router *router,
                         const struct fb_snapshot *s, enum fb_overload_policy policy)
{
  bool overloaded;
  bool seen = d->retried || (d->deliveries && d->deliveries[i] > 1);
  int pick = -ENOENT;
  if (d->retry_sink >= 0 && seen)
    pick = fb_router_pick_on(router, s, &d->frames[i], d->retry_sink, &overloaded);
  if (pick == -ENOENT) pick = fb_router_pick(router, s, &d->frames[i], &overloaded);
  if (pick < 0) return FB_OUTCOME_DLQ(FB_REASON_NO_PROCESSOR);
  if (!overloaded) return pick;
  switch (policy) {
  case FB_OVERLOAD_REJECT: return FB_OUTCOME_DLQ(FB_REASON_OVERLOADED);
  case FB_OVERLOAD_BLOCK: d->held[i] = FB_HOLD_BLOCKED; return pick;
  case FB_OVERLOAD_DROP_OLDEST:
  default:
    /* Delivered; the stream's MAXLEN cap trims its oldest frame. */
    d->ntrimmed++;
    return pick;
  }
}

void fb_dispatch_run(struct fb_dispatch *d, struct fb_router *router, const struct fb_snapshot *s,
                     const struct fb_routing *routing, int max_deliveries, int64_t now_ms)
{
  int64_t max_age = routing->frame_max_age_ms;
  bool prioritised = false;
  d->ntrimmed = 0;
  for (size_t i = 0; i < d->n; i++) {
    const struct fb_frame *f = &d->frames[i];
    d->order[i] = (uint32_t)i;
    d->held[i] = FB_HOLD_NONE;
    if (!f->nfields) {
      d->outcome[i] = FB_OUTCOME_DLQ(FB_REASON_MISSING);
      continue;
    }
    if (f->has_priority && f->priority) prioritised = true;
    int64_t ts;
    if (d->deliveries && d->deliveries[i] > max_deliveries)
      d->outcome[i] = FB_OUTCOME_DLQ(FB_REASON_POISON);
    else if (f->error != FB_FRAME_OK)
      d->outcome[i] = FB_OUTCOME_DLQ(FB_REASON_MALFORMED);
    else if (max_age && fb_frame_time_ms(f->timestamp, &ts) == 0 && now_ms - ts > max_age)
      d->outcome[i] = FB_OUTCOME_DLQ(FB_REASON_EXPIRED);
    else
      d->outcome[i] = route_one(d, i, router, s, routing->overload_policy);
  }
  if (prioritised) qsort_r(d->order, d->n, sizeof *d->order, cmp_priority_desc, (void *)d->frames);
}
