/*
 * Routing strategies over a registry snapshot (see router.h).
 * One thread per router; pure computation: no I/O, no locks, no clock.
 */
#include "framebuffer/router.h"

#include "framebuffer/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VNODES 64 /* points per processor on a consistent-hash ring */

struct ring_point {
  uint64_t hash;
  uint32_t member; /* index into fb_snapshot.procs */
};

struct ring {
  bool built;
  size_t n;
  struct ring_point *pts;
};

struct fb_router {
  enum fb_strategy strategy;
  bool sink_down[FB_SINKS_MAX]; /* by sink index (fb_proc.transport) */
  double hash_bound;
  int64_t slow_start_ms;
  uint64_t generation; /* of the snapshot the state below belongs to */
  size_t nprocs, ngroups;
  uint32_t *cursors;  /* round robin, per group; the last one is `all` */
  int64_t *credit;    /* smooth weighted round robin, per processor */
  int64_t *load;      /* estimated queue depth, per processor */
  double *share;      /* slow start: the part of its traffic it may take, 0..1 */
  struct ring *rings; /* consistent hash, per group, built on first use */
  int64_t *gload;     /* consistent hash, per group: candidates' total load */
  double *gcap;       /* ... and total capacity, as of gstamp */
  uint64_t *gstamp;   /* the batch the two above were summed in */
  uint64_t batch;     /* counts fb_router_begin calls */
  uint64_t rng;       /* xorshift state for the power of two choices */
};

/* ================================================================ basics */

int fb_router_create(struct fb_router **out, enum fb_strategy strategy)
{
  struct fb_router *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->strategy = strategy;
  r->hash_bound = FB_HASH_BOUND_DEFAULT;
  r->generation = UINT64_MAX;
  r->rng = 0x9e3779b97f4a7c15ULL;
  *out = r;
  return 0;
}

static void free_state(struct fb_router *r)
{
  for (size_t g = 0; r->rings && g <= r->ngroups; g++)
    free(r->rings[g].pts);
  free(r->rings);
  free(r->cursors);
  free(r->credit);
  free(r->load);
  free(r->share);
  free(r->gload);
  free(r->gcap);
  free(r->gstamp);
  r->share = NULL;
  r->gload = NULL;
  r->gcap = NULL;
  r->gstamp = NULL;
  r->rings = NULL;
  r->cursors = NULL;
  r->credit = r->load = NULL;
}

void fb_router_destroy(struct fb_router *r)
{
  if (!r) return;
  free_state(r);
  free(r);
}

void fb_router_set_strategy(struct fb_router *r, enum fb_strategy strategy)
{
  r->strategy = strategy;
}

enum fb_strategy fb_router_strategy(const struct fb_router *r)
{
  return r->strategy;
}

void fb_router_set_sink_up(struct fb_router *r, int sink, bool up)
{
  if (sink >= 0 && sink < FB_SINKS_MAX) r->sink_down[sink] = !up;
}

void fb_router_set_hash_bound(struct fb_router *r, double bound)
{
  r->hash_bound = bound < 1.0 ? 1.0 : bound;
}

int64_t fb_router_load(const struct fb_router *r, uint32_t i)
{
  return r->load && i < r->nprocs ? r->load[i] : 0;
}

static uint64_t mix64(uint64_t x)
{
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static uint64_t hash_bytes(const char *p, size_t n)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a, then mixed */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
  return mix64(h);
}

static uint64_t next_random(struct fb_router *r)
{
  r->rng ^= r->rng << 13;
  r->rng ^= r->rng >> 7;
  r->rng ^= r->rng << 17;
  return r->rng;
}

/* Sizes the per-snapshot state; a new snapshot starts it over. */
static int adopt(struct fb_router *r, const struct fb_snapshot *s)
{
  if (r->generation == s->generation) return 0;
  free_state(r);
  r->nprocs = s->n;
  r->ngroups = s->ngroups;
  r->cursors = calloc(s->ngroups + 1, sizeof *r->cursors);
  r->rings = calloc(s->ngroups + 1, sizeof *r->rings);
  r->credit = calloc(s->n + 1, sizeof *r->credit);
  r->load = calloc(s->n + 1, sizeof *r->load);
  r->share = calloc(s->n + 1, sizeof *r->share);
  r->gload = calloc(s->ngroups + 1, sizeof *r->gload);
  r->gcap = calloc(s->ngroups + 1, sizeof *r->gcap);
  r->gstamp = calloc(s->ngroups + 1, sizeof *r->gstamp);
  if (!r->cursors || !r->rings || !r->credit || !r->load || !r->share || !r->gload || !r->gcap ||
      !r->gstamp) {
    free_state(r);
    r->generation = UINT64_MAX;
    return -ENOMEM;
  }
  for (size_t i = 0; i < s->n; i++)
    r->share[i] = 1.0;
  r->generation = s->generation;
  return 0;
}

void fb_router_set_slow_start(struct fb_router *r, int64_t ms)
{
  r->slow_start_ms = ms > 0 ? ms : 0;
}

int fb_router_begin(struct fb_router *r, const struct fb_snapshot *s, int64_t now_ms)
{
  if (adopt(r, s)) return -ENOMEM;
  r->batch++;
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc *p = s->procs[i];
    r->load[i] = fb_proc_depth(p);
    int64_t age = now_ms - p->registered_at_ms;
    r->share[i] = 1.0;
    if (r->slow_start_ms && p->registered_at_ms && age < r->slow_start_ms)
      r->share[i] = age <= 0 ? 0.05 : 0.05 + 0.95 * (double)age / (double)r->slow_start_ms;
  }
  return 0;
}

/* ============================================================ candidates */

/* How eligible a processor is, best first: healthy, stale, one whose sink
 * is down (NATS away: its frames then wait in Redis until it is back),
 * dead (never). Candidates come from the best tier present. */
enum tier { TIER_HEALTHY, TIER_STALE, TIER_UNREACHABLE, TIER_DEAD };

static int health_of(const struct fb_router *r, const struct fb_snapshot *s, uint32_t i)
{
  int h = atomic_load_explicit(&s->procs[i]->live->status, memory_order_relaxed);
  if (h == FB_HEALTH_DEAD) return TIER_DEAD;
  unsigned sink = (unsigned)s->procs[i]->transport;
  if (sink < FB_SINKS_MAX && r->sink_down[sink]) return TIER_UNREACHABLE;
  return h == FB_HEALTH_STALE ? TIER_STALE : TIER_HEALTHY;
}

/* Who may take the frame: members with health `want`, and room in their
 * queue unless `allow_full`. */
struct want {
  int health;
  bool allow_full;
};

static bool eligible(const struct fb_router *r, const struct fb_snapshot *s, uint32_t i,
                     struct want w)
{
  return health_of(r, s, i) == w.health && (w.allow_full || r->load[i] < s->procs[i]->max_queue);
}

static int best_health(const struct fb_router *r, const struct fb_snapshot *s,
                       const struct fb_cap_group *g)
{
  int best = TIER_DEAD;
  for (size_t k = 0; k < g->n && best != TIER_HEALTHY; k++) {
    int h = health_of(r, s, g->members[k]);
    if (h < best) best = h;
  }
  return best;
}

/* =============================================================== strategies */

/* Slow start for the strategies that take turns: a ramping processor lets
 * its turn pass with the probability of the share it may not yet take. */
static bool pass_turn(struct fb_router *r, uint32_t m)
{
  return r->share[m] < 1.0 && (double)(next_random(r) % 10000) >= r->share[m] * 10000.0;
}

static int pick_round_robin(struct fb_router *r, const struct fb_snapshot *s,
                            const struct fb_cap_group *g, uint32_t *cursor, struct want w)
{
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[(*cursor + k) % g->n];
    if (eligible(r, s, m, w) && (k + 1 == g->n || !pass_turn(r, m))) {
      *cursor = (uint32_t)((*cursor + k + 1) % g->n);
      return (int)m;
    }
  }
  return -ENOENT;
}

/* Smooth weighted round robin (as in nginx): every pick adds each
 * candidate's weight to its credit; the richest wins and pays the total. */
static int pick_weighted(struct fb_router *r, const struct fb_snapshot *s,
                         const struct fb_cap_group *g, struct want w)
{
  int64_t total = 0;
  int best = -ENOENT;
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[k];
    if (!eligible(r, s, m, w)) continue;
    /* In thousandths, so that a ramping share stays smooth. */
    int64_t weight = (int64_t)((double)s->procs[m]->weight * 1000.0 * r->share[m]);
    if (weight < 1) weight = 1;
    r->credit[m] += weight;
    total += weight;
    if (best < 0 || r->credit[m] > r->credit[best]) best = (int)m;
  }
  if (best >= 0) r->credit[best] -= total;
  return best;
}

/* What a processor can take as the strategies see it: its capacity,
 * scaled down while it ramps up. */
static double room(const struct fb_router *r, const struct fb_snapshot *s, uint32_t i)
{
  return (double)s->procs[i]->capacity * r->share[i];
}

/* a's load per unit of capacity is below b's. */
static bool lighter(const struct fb_router *r, const struct fb_snapshot *s, uint32_t a, uint32_t b)
{
  return (double)r->load[a] * room(r, s, b) < (double)r->load[b] * room(r, s, a);
}

/* Power of two choices: two random candidates, the lighter one wins (a
 * coin decides between equals, so replicas do not herd onto one). */
static int pick_least_loaded(struct fb_router *r, const struct fb_snapshot *s,
                             const struct fb_cap_group *g, struct want w)
{
  int first = -1, second = -1;
  for (int tries = 0; tries < 8 && second < 0; tries++) {
    uint32_t m = g->members[next_random(r) % g->n];
    if (!eligible(r, s, m, w) || (int)m == first) continue;
    if (first < 0)
      first = (int)m;
    else
      second = (int)m;
  }
  if (second < 0) {
    /* Few candidates among many members: look at every one. */
    uint32_t start = (uint32_t)(next_random(r) % g->n);
    for (size_t k = 0; k < g->n; k++) {
      uint32_t m = g->members[(start + k) % g->n];
      if (!eligible(r, s, m, w)) continue;
      if (first < 0)
        first = (int)m;
      else if (lighter(r, s, m, (uint32_t)first))
        first = (int)m;
    }
    return first < 0 ? -ENOENT : first;
  }
  if (lighter(r, s, (uint32_t)second, (uint32_t)first)) return second;
  if (lighter(r, s, (uint32_t)first, (uint32_t)second)) return first;
  return next_random(r) & 1 ? first : second;
}

static int cmp_point(const void *a, const void *b)
{
  uint64_t x = ((const struct ring_point *)a)->hash, y = ((const struct ring_point *)b)->hash;
  return x < y ? -1 : x > y;
}

static int build_ring(struct ring *ring, const struct fb_snapshot *s, const struct fb_cap_group *g)
{
  ring->pts = calloc(g->n * VNODES + 1, sizeof *ring->pts);
  if (!ring->pts) return -ENOMEM;
  for (size_t k = 0; k < g->n; k++) {
    const char *id = s->procs[g->members[k]]->id;
    uint64_t base = hash_bytes(id, strlen(id));
    for (uint64_t v = 0; v < VNODES; v++)
      ring->pts[ring->n++] =
          (struct ring_point){mix64(base + v * 0x9e3779b97f4a7c15ULL), g->members[k]};
  }
  qsort(ring->pts, ring->n, sizeof *ring->pts, cmp_point);
  ring->built = true;
  return 0;
}

/* Consistent hashing with bounded loads: the camera's place on the ring
 * names its processor; one loaded above `hash_bound` times the group's
 * average (per unit of capacity) passes the camera to the next one on. The
 * group's totals are summed once a batch and then kept up to date. */
static int pick_consistent(struct fb_router *r, const struct fb_snapshot *s,
                           const struct fb_cap_group *g, size_t gi, const struct fb_frame *f,
                           struct want w)
{
  struct ring *ring = &r->rings[gi];
  if (!ring->built && build_ring(ring, s, g)) return -ENOMEM;
  if (r->gstamp[gi] != r->batch + 1 || w.allow_full) {
    r->gload[gi] = 0;
    r->gcap[gi] = 0;
    for (size_t k = 0; k < g->n; k++)
      if (eligible(r, s, g->members[k], w)) {
        r->gload[gi] += r->load[g->members[k]];
        r->gcap[gi] += room(r, s, g->members[k]);
      }
    r->gstamp[gi] = w.allow_full ? 0 : r->batch + 1;
  }
  if (r->gcap[gi] <= 0) return -ENOENT;
  struct fb_str key = f->camera_id.n ? f->camera_id : f->frame_id;
  uint64_t h = hash_bytes(key.p, key.n);
  size_t lo = 0, hi = ring->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ring->pts[mid].hash < h)
      lo = mid + 1;
    else
      hi = mid;
  }
  /* The bound: total load (this frame included) over total capacity. */
  double per_cap = r->hash_bound * (double)(r->gload[gi] + 1) / r->gcap[gi];
  int first = -ENOENT;
  for (size_t k = 0; k < ring->n; k++) {
    uint32_t m = ring->pts[(lo + k) % ring->n].member;
    if (!eligible(r, s, m, w)) continue;
    if (first < 0) first = (int)m;
    if ((double)(r->load[m] + 1) <= per_cap * room(r, s, m) + 1e-9) {
      first = (int)m;
      break;
    }
  }
  if (first >= 0) r->gload[gi]++;
  return first; /* the fallback is unreachable in practice: someone is at or below average */
}

int fb_router_pick(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                   bool *overloaded)
{
  *overloaded = false;
  const struct fb_cap_group *g = fb_snapshot_group(s, f->detection_type, f->detection_escaped);
  if (!g || !g->n) return -ENOENT;
  if (adopt(r, s)) return -ENOMEM;
  int health = best_health(r, s, g);
  if (health == TIER_DEAD) return -ENOENT;

  size_t gi = g == &s->all ? s->ngroups : (size_t)(g - s->groups);
  int pick = -ENOENT;
  for (int pass = 0; pass < 2 && pick < 0; pass++) {
    struct want w = {health, pass == 1};
    switch (r->strategy) {
    case FB_STRATEGY_WEIGHTED_ROUND_ROBIN: pick = pick_weighted(r, s, g, w); break;
    case FB_STRATEGY_LEAST_LOADED: pick = pick_least_loaded(r, s, g, w); break;
    case FB_STRATEGY_CONSISTENT_HASH: pick = pick_consistent(r, s, g, gi, f, w); break;
    case FB_STRATEGY_ROUND_ROBIN:
    default: pick = pick_round_robin(r, s, g, &r->cursors[gi], w); break;
    }
    if (pick == -ENOMEM) return pick;
    if (pick >= 0 && pass == 1) *overloaded = true;
  }
  if (pick >= 0) r->load[pick]++;
  return pick;
}
