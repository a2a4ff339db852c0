/*
 * Routing strategies over a registry snapshot (see router.h).
 * One thread per router; pure computation: no I/O, no locks, no clock.
 */
#include "framebuffer/router.h"

#include "framebuffer/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VNODES       64         /* points per processor on a consistent-hash ring */
#define CAMERAS_MAX  (1u << 16) /* cameras remembered (consistent_hash), a power of two */
#define RETURN_MS    2000       /* a moved camera goes home no sooner than this ... */
#define RETURN_DEPTH 0.5        /* ... and once home's depth is at most this x its capacity */
#define WCYCLE_MAX   16384      /* longest weighted round robin cycle worked out ahead */

struct ring_point {
  uint64_t hash;
  uint32_t member; /* index into fb_snapshot.procs */
};

struct ring {
  bool built;
  size_t n;
  struct ring_point *pts;
};

/* A camera under consistent_hash: where its frames go and why. */
struct camera {
  uint64_t key;     /* hash of its id and group; 0: a free slot */
  uint64_t proc;    /* id hash of the processor its frames go to */
  uint64_t home;    /* id hash of its place on the ring when it last moved */
  int64_t since_ms; /* when it last moved */
  uint64_t epoch;   /* of proc_i and home_i below */
  uint32_t proc_i;  /* indexes of the two in the snapshot, as of epoch */
  uint32_t home_i;
};

/* Weighted round robin with fixed weights: a group's cycle of picks. */
struct wcycle {
  uint32_t *at; /* WCYCLE_MAX, made on first use; `len` of them are the cycle */
  uint32_t len, pos;
  uint64_t epoch, wgen; /* of the tiers and weights it was worked out from */
  int health;           /* the tier it is for */
};

/* Weighted round robin: a member of a group and its credit there. */
struct wslot {
  int64_t credit;
  uint32_t m;
};

struct fb_router {
  enum fb_strategy strategy;
  bool sink_down[FB_SINKS_MAX]; /* by sink index (fb_proc.transport) */
  double hash_bound;
  int64_t slow_start_ms;
  uint64_t generation; /* of the snapshot the state below belongs to */
  size_t nprocs, ngroups;
  /* Per processor, as of the batch (fb_router_begin), in dense arrays so
   * that a pick touches no processor struct. */
  uint8_t *tier;    /* enum tier */
  int64_t *load;    /* estimated queue depth: as read, plus what was sent since */
  int64_t *read;    /* queue depth as last read (consistent_hash's overload test) */
  uint64_t *taken;  /* the batch load and read were taken in: lazily, on first use */
  int64_t *limit;   /* max_queue */
  double *room;     /* capacity, scaled down while it ramps up */
  int64_t *weight;  /* weighted round robin: weight x 1000, scaled the same way */
  double *share;    /* slow start: the part of its traffic it may take, 0..1 */
  uint64_t *idhash; /* of its id: a camera remembers its processor by it */
  int32_t *by_hash; /* idhash -> index (open addressing, -1 empty) */
  size_t by_hash_mask;
  uint32_t *cursors;      /* round robin, per group; the last one is `all` */
  struct wslot **wslots;  /* weighted round robin, per group, made on first use */
  struct ring *rings;     /* consistent hash, per group, built on first use */
  int64_t *gread;         /* consistent hash, per group: candidates' total depth as read */
  double *gcap;           /* ... and total capacity, as of gstamp */
  uint64_t *gstamp;       /* the batch the two above were summed in */
  uint64_t *wstamp;       /* weighted round robin, per group: the batch its depths were taken */
  struct wcycle *wcycles; /* weighted round robin, per group: its cycle, when weights are fixed */
  uint64_t wgen;          /* changes with any weight */
  bool ramping;           /* someone's share is below 1 (slow start): no cycles */
  struct camera *cameras; /* consistent hash: CAMERAS_MAX, made on first use */
  size_t ncameras;
  uint64_t epoch;                 /* changes with the snapshot and with any processor's tier */
  bool retier;                    /* a sink went up or down since the tiers were taken */
  bool shares_stale;              /* slow start changed, or a new snapshot: take shares again */
  unsigned health_seen;           /* fb_health_epoch when they were taken */
  uint64_t batch;                 /* counts fb_router_begin calls */
  int64_t newest_ms;              /* the latest registration in the snapshot (slow start) */
  const struct fb_snapshot *snap; /* of the current pick */
  int64_t now_ms;                 /* of the batch */
  uint64_t rng;                   /* xorshift state for the power of two choices */
  uint64_t moves[FB_MOVE_COUNT];
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
  for (size_t g = 0; r->wslots && g <= r->ngroups; g++)
    free(r->wslots[g]);
  free(r->rings);
  free(r->wslots);
  free(r->cursors);
  free(r->tier);
  free(r->load);
  free(r->read);
  free(r->taken);
  free(r->limit);
  free(r->room);
  free(r->weight);
  free(r->share);
  free(r->idhash);
  free(r->by_hash);
  free(r->gread);
  free(r->gcap);
  free(r->gstamp);
  free(r->wstamp);
  for (size_t g = 0; r->wcycles && g <= r->ngroups; g++)
    free(r->wcycles[g].at);
  free(r->wcycles);
  r->wcycles = NULL;
  r->rings = NULL;
  r->wslots = NULL;
  r->cursors = NULL;
  r->tier = NULL;
  r->load = r->read = r->limit = r->weight = NULL;
  r->room = r->share = r->gcap = NULL;
  r->idhash = r->taken = NULL;
  r->by_hash = NULL;
  r->gread = NULL;
  r->gstamp = r->wstamp = NULL;
}

void fb_router_destroy(struct fb_router *r)
{
  if (!r) return;
  free_state(r);
  free(r->cameras);
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
  if (sink >= 0 && sink < FB_SINKS_MAX && r->sink_down[sink] == up) {
    r->sink_down[sink] = !up;
    r->retier = true; /* tiers change: taken again at the next pick */
  }
}

void fb_router_set_hash_bound(struct fb_router *r, double bound)
{
  r->hash_bound = bound < 1.0 ? 1.0 : bound;
}

void fb_router_moves(const struct fb_router *r, uint64_t out[FB_MOVE_COUNT])
{
  memcpy(out, r->moves, sizeof r->moves);
}

const char *fb_move_reason_name(enum fb_move_reason reason)
{
  static const char *const names[FB_MOVE_COUNT] = {"spill", "return", "membership"};
  return names[reason];
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

/* How eligible a processor is, best first: healthy, stale, one whose sink
 * is down (NATS away: its frames then wait in Redis until it is back),
 * dead (never). Candidates come from the best tier present. */
enum tier { TIER_HEALTHY, TIER_STALE, TIER_UNREACHABLE, TIER_DEAD };

static uint8_t tier_of(const struct fb_router *r, const struct fb_proc *p)
{
  int h = atomic_load_explicit(&p->live->status, memory_order_relaxed);
  if (h == FB_HEALTH_DEAD) return TIER_DEAD;
  unsigned sink = (unsigned)p->transport;
  if (sink < FB_SINKS_MAX && r->sink_down[sink]) return TIER_UNREACHABLE;
  return h == FB_HEALTH_STALE ? TIER_STALE : TIER_HEALTHY;
}

/* The index of the processor whose id hashes to `h`, or -1. */
static int find_hash(const struct fb_router *r, uint64_t h)
{
  for (size_t k = h & r->by_hash_mask;; k = (k + 1) & r->by_hash_mask) {
    int32_t i = r->by_hash[k];
    if (i < 0 || r->idhash[i] == h) return i;
  }
}

/* Takes every processor's tier; the epoch moves when one changed. */
static void take_tiers(struct fb_router *r, const struct fb_snapshot *s)
{
  bool changed = false;
  r->health_seen = fb_health_epoch();
  r->retier = false;
  for (size_t i = 0; i < s->n; i++) {
    uint8_t t = tier_of(r, s->procs[i]);
    changed |= t != r->tier[i];
    r->tier[i] = t;
  }
  if (changed) r->epoch++;
}

/* Takes processor `m`'s depths for this batch, once: a pick touches only
 * the processors it looks at, so starting a batch costs nothing. */
static inline void touch(struct fb_router *r, uint32_t m)
{
  if (r->taken[m] == r->batch) return;
  r->taken[m] = r->batch;
  const struct fb_proc *p = r->snap->procs[m];
  r->load[m] = fb_proc_depth(p);
  r->read[m] = atomic_load_explicit(&p->live->queue_depth, memory_order_relaxed);
}

int64_t fb_router_load(struct fb_router *r, uint32_t i)
{
  if (!r->load || !r->snap || i >= r->nprocs) return 0;
  touch(r, i);
  return r->load[i];
}

/* Takes every processor's share of its traffic at `now_ms` (slow start),
 * its room and its weight. */
static void take_shares(struct fb_router *r, const struct fb_snapshot *s, int64_t now_ms, bool ramp)
{
  r->shares_stale = false;
  bool ramping = false;
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc *p = s->procs[i];
    int64_t age = now_ms - p->registered_at_ms;
    r->share[i] = 1.0;
    if (ramp && r->slow_start_ms && p->registered_at_ms && age < r->slow_start_ms)
      r->share[i] = age <= 0 ? 0.05 : 0.05 + 0.95 * (double)age / (double)r->slow_start_ms;
    r->room[i] = (double)p->capacity * r->share[i];
    /* In thousandths, so that a ramping share stays smooth. */
    int64_t weight = (int64_t)((double)p->weight * 1000.0 * r->share[i]);
    if (weight < 1) weight = 1;
    if (weight != r->weight[i]) r->wgen++;
    r->weight[i] = weight;
    ramping |= r->share[i] < 1.0;
  }
  r->ramping = ramping;
}

/* Sizes the per-snapshot state; a new snapshot starts it over (cameras are
 * remembered across snapshots, by processor id). */
static int adopt(struct fb_router *r, const struct fb_snapshot *s)
{
  if (r->generation == s->generation) return 0;
  free_state(r);
  r->nprocs = s->n;
  r->ngroups = s->ngroups;
  size_t slots = 16;
  while (slots < 2 * s->n)
    slots *= 2;
  r->cursors = calloc(s->ngroups + 1, sizeof *r->cursors);
  r->rings = calloc(s->ngroups + 1, sizeof *r->rings);
  r->wslots = calloc(s->ngroups + 1, sizeof *r->wslots);
  r->tier = malloc(s->n + 1);
  r->load = calloc(s->n + 1, sizeof *r->load);
  r->read = calloc(s->n + 1, sizeof *r->read);
  r->taken = calloc(s->n + 1, sizeof *r->taken);
  r->limit = calloc(s->n + 1, sizeof *r->limit);
  r->room = calloc(s->n + 1, sizeof *r->room);
  r->weight = calloc(s->n + 1, sizeof *r->weight);
  r->share = calloc(s->n + 1, sizeof *r->share);
  r->idhash = calloc(s->n + 1, sizeof *r->idhash);
  r->by_hash = malloc(slots * sizeof *r->by_hash);
  r->gread = calloc(s->ngroups + 1, sizeof *r->gread);
  r->gcap = calloc(s->ngroups + 1, sizeof *r->gcap);
  r->gstamp = calloc(s->ngroups + 1, sizeof *r->gstamp);
  r->wstamp = calloc(s->ngroups + 1, sizeof *r->wstamp);
  r->wcycles = calloc(s->ngroups + 1, sizeof *r->wcycles);
  if (!r->cursors || !r->rings || !r->wslots || !r->tier || !r->load || !r->read || !r->taken ||
      !r->limit || !r->room || !r->weight || !r->share || !r->idhash || !r->by_hash || !r->gread ||
      !r->gcap || !r->gstamp || !r->wstamp || !r->wcycles) {
    free_state(r);
    r->generation = UINT64_MAX;
    return -ENOMEM;
  }
  r->by_hash_mask = slots - 1;
  memset(r->by_hash, 0xff, slots * sizeof *r->by_hash);
  r->newest_ms = 0;
  for (size_t i = 0; i < s->n; i++) {
    r->limit[i] = s->procs[i]->max_queue;
    if (s->procs[i]->registered_at_ms > r->newest_ms) r->newest_ms = s->procs[i]->registered_at_ms;
    r->idhash[i] = hash_bytes(s->procs[i]->id, strlen(s->procs[i]->id)) | 1;
    size_t k = r->idhash[i] & r->by_hash_mask;
    while (r->by_hash[k] >= 0)
      k = (k + 1) & r->by_hash_mask;
    r->by_hash[k] = (int32_t)i;
  }
  memset(r->tier, TIER_DEAD, s->n + 1);
  take_tiers(r, s);
  take_shares(r, s, 0, false);
  r->shares_stale = true; /* ramps are taken at the next fb_router_begin */
  r->batch++;             /* loads are taken afresh */
  r->epoch++;
  r->generation = s->generation;
  return 0;
}

void fb_router_set_slow_start(struct fb_router *r, int64_t ms)
{
  if (ms < 0) ms = 0;
  if (ms != r->slow_start_ms) r->shares_stale = true;
  r->slow_start_ms = ms;
}

int fb_router_begin(struct fb_router *r, const struct fb_snapshot *s, int64_t now_ms)
{
  if (adopt(r, s)) return -ENOMEM;
  r->batch++;
  r->snap = s;
  r->now_ms = now_ms;
  /* Shares change only while somebody ramps up (or just stopped). */
  if (r->shares_stale || (r->slow_start_ms && now_ms - r->newest_ms < r->slow_start_ms + 1000))
    take_shares(r, s, now_ms, true);
  if (r->retier || r->health_seen != fb_health_epoch()) take_tiers(r, s);
  return 0;
}

/* ============================================================ candidates */

/* Who may take the frame: members with health `want`, and room in their
 * queue unless `allow_full`. */
struct want {
  int health;
  bool allow_full;
};

static bool eligible(struct fb_router *r, uint32_t i, struct want w)
{
  if (r->tier[i] != w.health) return false;
  touch(r, i);
  return w.allow_full || r->load[i] < r->limit[i];
}

static int best_health(const struct fb_router *r, const struct fb_cap_group *g)
{
  int best = TIER_DEAD;
  for (size_t k = 0; k < g->n && best != TIER_HEALTHY; k++)
    if (r->tier[g->members[k]] < best) best = r->tier[g->members[k]];
  return best;
}

/* =============================================================== strategies */

/* Slow start for the strategies that take turns: a ramping processor lets
 * its turn pass with the probability of the share it may not yet take. */
static bool pass_turn(struct fb_router *r, uint32_t m)
{
  return r->share[m] < 1.0 && (double)(next_random(r) % 10000) >= r->share[m] * 10000.0;
}

static int pick_round_robin(struct fb_router *r, const struct fb_cap_group *g, uint32_t *cursor,
                            struct want w)
{
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[(*cursor + k) % g->n];
    if (eligible(r, m, w) && (k + 1 == g->n || !pass_turn(r, m))) {
      *cursor = (uint32_t)((*cursor + k + 1) % g->n);
      return (int)m;
    }
  }
  return -ENOENT;
}

static int64_t gcd64(int64_t a, int64_t b)
{
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* The group's cycle of smooth weighted round robin picks among the members
 * of tier `health`: with fixed weights it repeats every sum(weights / gcd)
 * picks, so it is worked out once (O(cycle x members)) and replayed in O(1)
 * a pick. No cycle (len 0) when it would be longer than WCYCLE_MAX. */
static void build_cycle(struct fb_router *r, const struct fb_cap_group *g, size_t gi, int health)
{
  struct wcycle *c = &r->wcycles[gi];
  c->epoch = r->epoch;
  c->wgen = r->wgen;
  c->health = health;
  c->len = c->pos = 0;
  int64_t div = 0, period = 0;
  for (size_t k = 0; k < g->n; k++)
    if (r->tier[g->members[k]] == health) div = gcd64(r->weight[g->members[k]], div);
  for (size_t k = 0; k < g->n && div; k++)
    if (r->tier[g->members[k]] == health) period += r->weight[g->members[k]] / div;
  if (!period || period > WCYCLE_MAX) return;
  if (!c->at && !(c->at = malloc(WCYCLE_MAX * sizeof *c->at))) return;
  int64_t *credit = calloc(g->n, sizeof *credit);
  if (!credit) return;
  for (int64_t t = 0; t < period; t++) {
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < g->n; k++) {
      if (r->tier[g->members[k]] != health) continue;
      credit[k] += r->weight[g->members[k]] / div;
      if (best == SIZE_MAX || credit[k] > credit[best]) best = k;
    }
    credit[best] -= period;
    c->at[t] = g->members[best];
  }
  free(credit);
  c->len = (uint32_t)period;
}

/* Smooth weighted round robin (as in nginx), per group: every pick adds
 * each candidate's weight to its credit; the richest wins and pays the
 * total. With fixed weights the group's cycle is replayed (a member whose
 * queue is full lets its turn pass); while someone ramps up, one pass over
 * the group's packed slots and the dense per-processor arrays. */
static int pick_weighted(struct fb_router *r, const struct fb_cap_group *g, size_t gi,
                         struct want w)
{
  struct wcycle *c = &r->wcycles[gi];
  if (!r->ramping && (c->epoch != r->epoch || c->wgen != r->wgen || c->health != w.health))
    build_cycle(r, g, gi, w.health);
  if (!r->ramping && c->len) {
    for (uint32_t k = 0; k < c->len; k++) {
      uint32_t m = c->at[c->pos];
      c->pos = c->pos + 1 == c->len ? 0 : c->pos + 1;
      touch(r, m);
      if (w.allow_full || r->load[m] < r->limit[m]) return (int)m;
    }
    return -ENOENT;
  }
  struct wslot *slot = r->wslots[gi];
  if (!slot) {
    slot = r->wslots[gi] = calloc(g->n, sizeof *slot);
    if (!slot) return -ENOMEM;
    for (size_t k = 0; k < g->n; k++)
      slot[k].m = g->members[k];
  }
  if (r->wstamp[gi] != r->batch) { /* the group's depths, once a batch */
    for (size_t k = 0; k < g->n; k++)
      touch(r, slot[k].m);
    r->wstamp[gi] = r->batch;
  }
  const uint8_t *tier = r->tier;
  const int64_t *load = r->load, *limit = r->limit, *weight = r->weight;
  int64_t total = 0;
  struct wslot *best = NULL;
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = slot[k].m;
    if (tier[m] != w.health || (!w.allow_full && load[m] >= limit[m])) continue;
    slot[k].credit += weight[m];
    total += weight[m];
    if (!best || slot[k].credit > best->credit) best = &slot[k];
  }
  if (!best) return -ENOENT;
  best->credit -= total;
  return (int)best->m;
}

/* a's load per unit of capacity is below b's. */
static bool lighter(const struct fb_router *r, uint32_t a, uint32_t b)
{
  return (double)r->load[a] * r->room[b] < (double)r->load[b] * r->room[a];
}

/* Power of two choices: two random candidates, the lighter one wins (a
 * coin decides between equals, so replicas do not herd onto one). */
static int pick_least_loaded(struct fb_router *r, const struct fb_cap_group *g, struct want w)
{
  int first = -1, second = -1;
  for (int tries = 0; tries < 8 && second < 0; tries++) {
    uint32_t m = g->members[next_random(r) % g->n];
    if (!eligible(r, m, w) || (int)m == first) continue;
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
      if (!eligible(r, m, w)) continue;
      if (first < 0 || lighter(r, m, (uint32_t)first)) first = (int)m;
    }
    return first < 0 ? -ENOENT : first;
  }
  if (lighter(r, (uint32_t)second, (uint32_t)first)) return second;
  if (lighter(r, (uint32_t)first, (uint32_t)second)) return first;
  return next_random(r) & 1 ? first : second;
}

/* ====================================================== consistent hash */

static int cmp_point(const void *a, const void *b)
{
  uint64_t x = ((const struct ring_point *)a)->hash, y = ((const struct ring_point *)b)->hash;
  return x < y ? -1 : x > y;
}

static int build_ring(struct fb_router *r, struct ring *ring, const struct fb_cap_group *g)
{
  ring->pts = calloc(g->n * VNODES + 1, sizeof *ring->pts);
  if (!ring->pts) return -ENOMEM;
  for (size_t k = 0; k < g->n; k++) {
    uint64_t base = r->idhash[g->members[k]];
    for (uint64_t v = 0; v < VNODES; v++)
      ring->pts[ring->n++] =
          (struct ring_point){mix64(base + v * 0x9e3779b97f4a7c15ULL), g->members[k]};
  }
  qsort(ring->pts, ring->n, sizeof *ring->pts, cmp_point);
  ring->built = true;
  return 0;
}

/* The first point at or after hash `h` (wrapping). */
static size_t ring_find(const struct ring *ring, uint64_t h)
{
  size_t lo = 0, hi = ring->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ring->pts[mid].hash < h)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The camera's home: the first processor of the tier `w` from its place on
 * the ring on, full or not; -ENOENT when the group has none. */
static int ring_home(const struct fb_router *r, const struct ring *ring, uint64_t h, struct want w)
{
  size_t at = ring_find(ring, h);
  for (size_t k = 0; k < ring->n; k++) {
    uint32_t m = ring->pts[(at + k) % ring->n].member;
    if (r->tier[m] == w.health) return (int)m;
  }
  return -ENOENT;
}

/* Sums the group's depths as read and its capacity, once a batch. */
static void group_totals(struct fb_router *r, const struct fb_cap_group *g, size_t gi,
                         struct want w)
{
  if (r->gstamp[gi] == r->batch + 1) return;
  r->gread[gi] = 0;
  r->gcap[gi] = 0;
  for (size_t k = 0; k < g->n; k++)
    if (r->tier[g->members[k]] == w.health) {
      touch(r, g->members[k]);
      r->gread[gi] += r->read[g->members[k]];
      r->gcap[gi] += r->room[g->members[k]];
    }
  r->gstamp[gi] = r->batch + 1;
}

/* Really overloaded: its depth as last read is above its capacity and above
 * hash_bound x the group's average (per unit of capacity). Frames in flight
 * and the jitter of a poll never count: a processor that keeps up keeps
 * its cameras. */
static bool overloaded(const struct fb_router *r, size_t gi, uint32_t m)
{
  double depth = (double)r->read[m];
  return depth > r->room[m] &&
         depth * r->gcap[gi] > r->hash_bound * (double)r->gread[gi] * r->room[m];
}

/* Where a camera goes when `from` cannot take it: the next processor on
 * the ring from the camera's place that can and is not overloaded, else
 * the next that can; -ENOENT when none can. */
static int spill(struct fb_router *r, const struct ring *ring, size_t gi, uint64_t h, int from,
                 struct want w)
{
  size_t at = ring_find(ring, h);
  int fallback = -ENOENT;
  for (size_t k = 0; k < ring->n; k++) {
    uint32_t m = ring->pts[(at + k) % ring->n].member;
    if ((int)m == from || !eligible(r, m, w)) continue;
    if (!overloaded(r, gi, m)) return (int)m;
    if (fallback < 0) fallback = (int)m;
  }
  return fallback;
}

/* The camera's slot: its own, or a free one (key 0). The table is emptied
 * when three quarters full: cameras then start over from their homes. */
static struct camera *camera_slot(struct fb_router *r, uint64_t key)
{
  if (!r->cameras) {
    r->cameras = calloc(CAMERAS_MAX, sizeof *r->cameras);
    if (!r->cameras) return NULL;
  }
  if (r->ncameras >= CAMERAS_MAX / 4 * 3) {
    memset(r->cameras, 0, CAMERAS_MAX * sizeof *r->cameras);
    r->ncameras = 0;
  }
  for (size_t k = key & (CAMERAS_MAX - 1);; k = (k + 1) & (CAMERAS_MAX - 1))
    if (r->cameras[k].key == key || !r->cameras[k].key) return &r->cameras[k];
}

/* Where the camera's frames go now, and why it moved if it did. `cur` is
 * where they went (-1: new, or its processor is gone), `home` its place on
 * the ring, `home_moved` when that changed under it. */
static int camera_target(struct fb_router *r, const struct ring *ring, size_t gi, uint64_t h,
                         int cur, int home, bool home_moved, int64_t since_ms, struct want w,
                         int *reason)
{
  *reason = -1;
  bool home_ok = eligible(r, (uint32_t)home, w) && !overloaded(r, gi, (uint32_t)home);
  if (cur < 0 || !eligible(r, (uint32_t)cur, w) || r->tier[cur] != w.health) {
    /* New, or its processor left, died, or is full. */
    int to = home_ok ? home : spill(r, ring, gi, h, home, w);
    if (cur >= 0 && r->tier[cur] == w.health)
      *reason = FB_MOVE_SPILL; /* full */
    else if (since_ms >= 0)
      *reason = FB_MOVE_MEMBERSHIP;
    return to;
  }
  if (cur == home) {
    if (!overloaded(r, gi, (uint32_t)cur)) return cur;
    int to = spill(r, ring, gi, h, home, w);
    if (to >= 0 && to != cur) *reason = FB_MOVE_SPILL;
    return to >= 0 ? to : cur;
  }
  if (home_moved && home_ok) { /* a processor joined (or came back) at its place */
    *reason = FB_MOVE_MEMBERSHIP;
    return home;
  }
  if (overloaded(r, gi, (uint32_t)cur)) {
    int to = spill(r, ring, gi, h, cur, w);
    if (to >= 0 && to != cur) *reason = to == home ? FB_MOVE_RETURN : FB_MOVE_SPILL;
    return to >= 0 ? to : cur;
  }
  /* Back home once it has drained, and not at once (hysteresis). */
  if (home_ok && r->now_ms - since_ms >= RETURN_MS &&
      (double)r->read[home] <= RETURN_DEPTH * r->room[home]) {
    *reason = FB_MOVE_RETURN;
    return home;
  }
  return cur;
}

/* Consistent hashing that stays sticky: a camera's place on the ring names
 * its home, and the router remembers where each camera's frames go. They
 * leave only when that processor is really overloaded (see overloaded()) or
 * full, and then the whole camera moves to the next one on the ring; it
 * comes back once home has drained (RETURN_DEPTH) and RETURN_MS have
 * passed. Every move is counted by reason. A frame without a camera id is
 * placed by its frame id and remembered nowhere. */
static int pick_consistent(struct fb_router *r, const struct fb_snapshot *s,
                           const struct fb_cap_group *g, size_t gi, const struct fb_frame *f,
                           struct want w)
{
  struct ring *ring = &r->rings[gi];
  if (!ring->built && build_ring(r, ring, g)) return -ENOMEM;
  group_totals(r, g, gi, w);
  struct fb_str id = f->camera_id.n ? f->camera_id : f->frame_id;
  uint64_t h = hash_bytes(id.p, id.n);
  if (!f->camera_id.n) {
    int home = ring_home(r, ring, h, w);
    if (home < 0) return home;
    return eligible(r, (uint32_t)home, w) && !overloaded(r, gi, (uint32_t)home)
               ? home
               : spill(r, ring, gi, h, home, w);
  }
  uint64_t key = mix64(h + gi + 1) | 1;
  struct camera *c = camera_slot(r, key);
  if (!c) return -ENOMEM;
  bool known = c->key == key;
  int home, cur = -1;
  if (known && c->epoch == r->epoch) { /* nothing changed: the indexes hold */
    home = (int)c->home_i;
    cur = (int)c->proc_i;
  } else {
    home = ring_home(r, ring, h, w);
    if (home < 0) return home;
    if (known) cur = find_hash(r, c->proc);
  }
  bool home_moved = known && c->home != r->idhash[home];
  int reason;
  int to =
      camera_target(r, ring, gi, h, cur, home, home_moved, known ? c->since_ms : -1, w, &reason);
  if (to < 0) return to;
  if (!known) {
    c->key = key;
    r->ncameras++;
  }
  if (reason >= 0) r->moves[reason]++;
  if (!known || to != cur) c->since_ms = r->now_ms;
  c->proc = r->idhash[to];
  c->home = r->idhash[home];
  c->proc_i = (uint32_t)to;
  c->home_i = (uint32_t)home;
  c->epoch = r->epoch;
  return to;
}

/* The frame's capability group (*g), with the router's state of `s` taken
 * and its tiers up to date. 0, -ENOENT (no such group) or -ENOMEM. */
static int candidates(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                      const struct fb_cap_group **g)
{
  *g = fb_snapshot_group(s, f->detection_type, f->detection_escaped);
  if (!*g || !(*g)->n) return -ENOENT;
  if (adopt(r, s)) return -ENOMEM;
  r->snap = s;
  if (r->retier || r->health_seen != fb_health_epoch()) take_tiers(r, s);
  return 0;
}

int fb_router_pick_on(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                      int sink, bool *overloaded_out)
{
  *overloaded_out = false;
  const struct fb_cap_group *g;
  int rc = candidates(r, s, f, &g);
  if (rc) return rc;
  int best = -ENOENT;
  bool best_full = true;
  for (size_t k = 0; k < g->n; k++) {
    uint32_t m = g->members[k];
    if ((int)s->procs[m]->transport != sink || r->tier[m] == TIER_DEAD) continue;
    touch(r, m);
    bool full = r->load[m] >= r->limit[m];
    if (best < 0 || r->tier[m] < r->tier[best] ||
        (r->tier[m] == r->tier[best] &&
         (full < best_full || (full == best_full && lighter(r, m, (uint32_t)best))))) {
      best = (int)m;
      best_full = full;
    }
  }
  if (best >= 0) {
    *overloaded_out = best_full;
    r->load[best]++;
  }
  return best;
}

int fb_router_pick(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                   bool *overloaded_out)
{
  *overloaded_out = false;
  const struct fb_cap_group *g;
  int rc = candidates(r, s, f, &g);
  if (rc) return rc;
  int health = best_health(r, g);
  if (health == TIER_DEAD) return -ENOENT;

  size_t gi = g == &s->all ? s->ngroups : (size_t)(g - s->groups);
  int pick = -ENOENT;
  for (int pass = 0; pass < 2 && pick < 0; pass++) {
    struct want w = {health, pass == 1};
    switch (r->strategy) {
    case FB_STRATEGY_WEIGHTED_ROUND_ROBIN: pick = pick_weighted(r, g, gi, w); break;
    case FB_STRATEGY_LEAST_LOADED: pick = pick_least_loaded(r, g, w); break;
    case FB_STRATEGY_CONSISTENT_HASH: pick = pick_consistent(r, s, g, gi, f, w); break;
    case FB_STRATEGY_ROUND_ROBIN:
    default: pick = pick_round_robin(r, g, &r->cursors[gi], w); break;
    }
    if (pick == -ENOMEM) return pick;
    if (pick >= 0 && pass == 1) *overloaded_out = true;
  }
  if (pick >= 0) r->load[pick]++;
  return pick;
}
