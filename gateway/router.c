/*
 * Routing strategies over a registry snapshot (see router.h).
 * One thread per router; pure computation.
 */
#include "framebuffer/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fb_router {
  enum fb_strategy strategy;
  bool remote_ok;
  uint64_t generation; /* of the snapshot the cursors belong to */
  size_t ncursors;
  uint32_t *cursors; /* per capability group, the last one for `all` */
  int64_t *credit;   /* smooth weighted round robin, per processor */
  size_t ncredit;
};

int fb_router_create(struct fb_router **out, enum fb_strategy strategy)
{
  struct fb_router *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->strategy = strategy;
  r->remote_ok = true;
  r->generation = UINT64_MAX;
  *out = r;
  return 0;
}

void fb_router_destroy(struct fb_router *r)
{
  if (!r) return;
  free(r->cursors);
  free(r->credit);
  free(r);
}

void fb_router_set_strategy(struct fb_router *r, enum fb_strategy strategy)
{
  r->strategy = strategy;
}

void fb_router_set_remote_available(struct fb_router *r, bool available)
{
  r->remote_ok = available;
}

enum fb_strategy fb_router_strategy(const struct fb_router *r)
{
  return r->strategy;
}

/* Sizes the per-snapshot state; a new snapshot starts the cursors over. */
static int adopt(struct fb_router *r, const struct fb_snapshot *s)
{
  if (r->generation == s->generation) return 0;
  size_t nc = s->ngroups + 1;
  if (nc > r->ncursors) {
    uint32_t *c = realloc(r->cursors, nc * sizeof *c);
    if (!c) return -ENOMEM;
    r->cursors = c;
    r->ncursors = nc;
  }
  memset(r->cursors, 0, nc * sizeof *r->cursors);
  if (s->n > r->ncredit) {
    int64_t *w = realloc(r->credit, s->n * sizeof *w);
    if (!w) return -ENOMEM;
    r->credit = w;
    r->ncredit = s->n;
  }
  if (s->n) memset(r->credit, 0, s->n * sizeof *r->credit);
  r->generation = s->generation;
  return 0;
}

/* A processor's health as routing sees it: an unreachable remote one is
 * as good as dead. */
static enum fb_health health_of(const struct fb_router *r, const struct fb_snapshot *s, uint32_t i)
{
  if (!r->remote_ok && s->procs[i]->transport == FB_TRANSPORT_NATS) return FB_HEALTH_DEAD;
  return (enum fb_health)atomic_load_explicit(&s->procs[i]->live->status, memory_order_relaxed);
}

/* The best health present in a group: only members with it are candidates. */
static int best_health(const struct fb_router *r, const struct fb_snapshot *s,
                       const struct fb_cap_group *g)
{
  int best = FB_HEALTH_DEAD;
  for (size_t k = 0; k < g->n && best != FB_HEALTH_HEALTHY; k++) {
    int h = (int)health_of(r, s, g->members[k]);
    if (h < best) best = h;
  }
  return best;
}

static int pick_round_robin(struct fb_router *r, const struct fb_snapshot *s,
                            const struct fb_cap_group *g, uint32_t *cursor, int want)
{
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[(*cursor + k) % g->n];
    if ((int)health_of(r, s, m) == want) {
      *cursor = (uint32_t)((*cursor + k + 1) % g->n);
      return (int)m;
    }
  }
  return -ENOENT;
}

/* Smooth weighted round robin (as in nginx): every pick adds each
 * candidate's weight to its credit, the richest wins and pays the total. */
static int pick_weighted(struct fb_router *r, const struct fb_snapshot *s,
                         const struct fb_cap_group *g, int want)
{
  int64_t total = 0;
  int best = -ENOENT;
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[k];
    if ((int)health_of(r, s, m) != want) continue;
    int64_t w = s->procs[m]->weight;
    r->credit[m] += w;
    total += w;
    if (best < 0 || r->credit[m] > r->credit[best]) best = (int)m;
  }
  if (best >= 0) r->credit[best] -= total;
  return best;
}

int fb_router_pick(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f)
{
  const struct fb_cap_group *g = fb_snapshot_group(s, f->detection_type, f->detection_escaped);
  if (!g || !g->n) return -ENOENT;
  if (adopt(r, s)) return -ENOMEM;
  int want = best_health(r, s, g);
  if (want == FB_HEALTH_DEAD) return -ENOENT;

  uint32_t *cursor = &r->cursors[g == &s->all ? s->ngroups : (size_t)(g - s->groups)];
  switch (r->strategy) {
  case FB_STRATEGY_WEIGHTED_ROUND_ROBIN: return pick_weighted(r, s, g, want);
  case FB_STRATEGY_ROUND_ROBIN:
  case FB_STRATEGY_LEAST_LOADED:
  case FB_STRATEGY_CONSISTENT_HASH:
  default: return pick_round_robin(r, s, g, cursor, want);
  }
}
