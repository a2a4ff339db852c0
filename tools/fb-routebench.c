/*
 * fb-routebench: times the gateway's own router (fbcore's fb_router_pick)
 * for each strategy, on a snapshot of many processors (fb_proc_from_json,
 * fb_snapshot_build) and realistic frames parsed once (fb_frame_parse),
 * calling fb_router_begin every --batch picks as the ingest thread does per
 * batch. No servers, no I/O; one thread.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "framebuffer/config.h"
#include "framebuffer/frame.h"
#include "framebuffer/registry.h"
#include "framebuffer/router.h"
#include "tk_frame.h"
#include "toolkit.h"

#define RB_MAX_PROCS 100000
#define RB_MAX_TYPES 64
#define RB_ARENA     2048 /* bytes of names and values per frame */

/* Detection types a camera pipeline would see; more are made up as type-<k>. */
static const char *const type_names[] = {"person", "vehicle", "face", "license_plate", "bicycle",
                                         "animal", "package", "fire", "smoke",         "weapon"};
#define RB_NAMED_TYPES (sizeof type_names / sizeof type_names[0])

struct rb_config {
  int64_t processors;
  int64_t types;
  int64_t picks;
  int64_t frames;
  int64_t cameras;
  int64_t batch;
  int64_t nats_pct; /* share of processors on NATS */
  int64_t seed;
  int strategies[FB_STRATEGY_COUNT]; /* which to run, in order */
  size_t nstrategies;
};

/* One parsed frame and the memory its views point into. */
struct rb_frame {
  char arena[RB_ARENA];
  struct fb_field fields[TK_FRAME_MAX_ARGV / 2];
  struct fb_frame f;
};

static uint64_t rb_rand(uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* ============================================================ the snapshot */

/*
 * Registers `n` processors the way the API would (fb_proc_from_json): each
 * has a primary detection type (types spread evenly), half a second one and
 * a quarter a third; capacity 1-16, weight 1-4, some on NATS; a starting
 * queue depth 0-199 so least_loaded has something to compare.
 */
static struct fb_snapshot *build_snapshot(const struct rb_config *cfg, char **types, uint64_t *rng)
{
  struct fb_proc **procs = calloc((size_t)cfg->processors, sizeof *procs);
  if (!procs) tk_die(1, "out of memory");
  for (int64_t i = 0; i < cfg->processors; i++) {
    char id[32], detail[300];
    snprintf(id, sizeof id, "proc-%05lld", (long long)i);
    json_t *caps = json_array();
    size_t k = (size_t)i % (size_t)cfg->types;
    json_array_append_new(caps, json_string(types[k]));
    uint64_t r = rb_rand(rng);
    if (cfg->types > 1 && r % 2 == 0)
      json_array_append_new(
          caps,
          json_string(types[(k + 1 + (r >> 8) % (uint64_t)(cfg->types - 1)) % (size_t)cfg->types]));
    if (cfg->types > 2 && r % 4 == 1)
      json_array_append_new(caps, json_string(types[(k + 2) % (size_t)cfg->types]));
    bool nats = (int64_t)((r >> 16) % 100) < cfg->nats_pct;
    json_t *body =
        json_pack("{s:s, s:o, s:I, s:s, s:I, s:I, s:s, s:I}", "id", id, "capabilities", caps,
                  "capacity", (json_int_t)(1 + (r >> 24) % 16), "queue", "", "weight",
                  (json_int_t)(1 + (r >> 32) % 4), "max_queue", (json_int_t)10000, "transport",
                  nats ? "nats" : "redis", "heartbeat_interval_ms", (json_int_t)30000);
    if (!body) tk_die(1, "out of memory");
    if (fb_proc_from_json(&procs[i], body, "frames:metadata", detail, sizeof detail) != 0)
      tk_die(1, "processor %s refused: %s", id, detail);
    json_decref(body);
    atomic_store(&procs[i]->live->queue_depth, (int_fast64_t)((r >> 40) % 200));
  }
  struct fb_snapshot *s = fb_snapshot_build(procs, (size_t)cfg->processors, 1);
  if (!s) tk_die(1, "out of memory building the snapshot");
  for (int64_t i = 0; i < cfg->processors; i++)
    fb_proc_release(procs[i]); /* the snapshot holds its own references */
  free(procs);
  return s;
}

/* =============================================================== frames */

/* Copies `len` bytes into the frame's arena; returns the view. */
static struct fb_str arena_put(struct rb_frame *rf, size_t *used, const char *p, size_t len)
{
  if (*used + len > sizeof rf->arena) tk_die(1, "internal error: frame arena too small");
  memcpy(rf->arena + *used, p, len);
  struct fb_str v = {rf->arena + *used, len};
  *used += len;
  return v;
}

/* Frames from fb-inject's generator (every field of docs/protocol.md's Frames in, half with
 * the top-level detection_type), parsed once as the gateway parses them. */
static struct rb_frame *build_frames(const struct rb_config *cfg, char **types)
{
  struct rb_frame *frames = calloc((size_t)cfg->frames, sizeof *frames);
  if (!frames) tk_die(1, "out of memory");
  struct tk_framegen gen;
  static struct tk_frame xadd;
  tk_framegen_init(&gen, "frames:metadata", (unsigned)cfg->cameras, types, (size_t)cfg->types, 0, 0,
                   (uint64_t)cfg->seed);
  for (int64_t i = 0; i < cfg->frames; i++) {
    struct rb_frame *rf = &frames[i];
    tk_framegen_next(&gen, &xadd, fbci_real_us());
    /* XADD <stream> * then name/value pairs */
    size_t used = 0, n = 0;
    for (int a = 3; a + 1 < xadd.argc; a += 2) {
      rf->fields[n].name = arena_put(rf, &used, xadd.argv[a], xadd.argvlen[a]);
      rf->fields[n].value = arena_put(rf, &used, xadd.argv[a + 1], xadd.argvlen[a + 1]);
      n++;
    }
    enum fb_frame_error e = fb_frame_parse(&rf->f, rf->fields, n);
    if (e != FB_FRAME_OK)
      tk_die(1, "internal error: frame %lld: %s", (long long)i, fb_frame_error_str(e));
  }
  return frames;
}

/* ================================================================ timing */

struct rb_result {
  double ns_per_pick;
  int64_t failed;     /* picks that found nobody */
  int64_t overloaded; /* picks where every candidate was full */
  double spread;      /* busiest processor's share over the mean share */
};

static struct rb_result run_strategy(const struct rb_config *cfg, enum fb_strategy strategy,
                                     const struct fb_snapshot *s, const struct rb_frame *frames,
                                     int64_t now_ms)
{
  struct rb_result res = {0};
  struct fb_router *r = NULL;
  if (fb_router_create(&r, strategy) != 0) tk_die(1, "out of memory");
  uint64_t *counts = calloc(s->n, sizeof *counts);
  if (!counts) tk_die(1, "out of memory");
  bool over;

  /* Warm-up: consistent_hash builds its rings, caches fill. */
  fb_router_begin(r, s, now_ms);
  for (int64_t i = 0; i < cfg->frames; i++) {
    if (i % cfg->batch == 0) fb_router_begin(r, s, now_ms);
    fb_router_pick(r, s, &frames[i].f, &over);
  }

  uint64_t checksum = 0;
  int64_t failed = 0, overloaded = 0, fi = 0;
  const int64_t t0 = fbci_mono_us();
  for (int64_t i = 0; i < cfg->picks; i++) {
    if (i % cfg->batch == 0) fb_router_begin(r, s, now_ms);
    int k = fb_router_pick(r, s, &frames[fi].f, &over);
    if (++fi == cfg->frames) fi = 0;
    if (k < 0)
      failed++;
    else
      checksum += (uint64_t)k;
    overloaded += over;
  }
  const int64_t t1 = fbci_mono_us();

  /* Untimed: where the frames went. */
  fi = 0;
  for (int64_t i = 0; i < cfg->picks && i < 1000000; i++) {
    if (i % cfg->batch == 0) fb_router_begin(r, s, now_ms);
    int k = fb_router_pick(r, s, &frames[fi].f, &over);
    if (++fi == cfg->frames) fi = 0;
    if (k >= 0) counts[k]++;
  }
  uint64_t total = 0, most = 0;
  for (size_t i = 0; i < s->n; i++) {
    total += counts[i];
    if (counts[i] > most) most = counts[i];
  }
  res.ns_per_pick = (double)(t1 - t0) * 1000.0 / (double)cfg->picks;
  res.failed = failed;
  res.overloaded = overloaded;
  res.spread = total ? (double)most / ((double)total / (double)s->n) : 0;
  if (checksum == 0x5eed) fputc(' ', stderr); /* keeps the loop's result alive */
  free(counts);
  fb_router_destroy(r);
  return res;
}

/* ================================================================== main */

static void usage(FILE *to)
{
  fprintf(to,
          "Usage: fb-routebench [options]\n"
          "Times the gateway's router (fb_router_pick from fbcore) per strategy on a snapshot\n"
          "of many processors and realistic frames parsed once; no servers needed.\n"
          "\n"
          "  --processors N   processors in the snapshot (default 1000)\n"
          "  --types K        detection types their capabilities spread over (default 10)\n"
          "  --picks M        timed picks per strategy (default 5000000)\n"
          "  --frames F       distinct frames, picked in turn (default 4096)\n"
          "  --cameras C      cameras the frames come from (default 1000)\n"
          "  --batch B        fb_router_begin every B picks, like the gateway's batches\n"
          "                   (default 256)\n"
          "  --nats-pct P     percent of processors on NATS (default 10)\n"
          "  --strategy S     round_robin, weighted_round_robin, least_loaded,\n"
          "                   consistent_hash or all (default all)\n"
          "  --seed S         random seed (default 1)\n"
          "  --help, --version\n"
          "\n"
          "Each processor has a primary type (spread evenly), half a second, a quarter a\n"
          "third; capacity 1-16, weight 1-4, queue depth 0-199. ns/pick includes the\n"
          "amortized fb_router_begin. spread = busiest processor's picks over the mean.\n"
          "The last line is machine-readable: RESULT {\"processors\":...,\"<strategy>_ns\":...}\n");
}

static void parse_flags(struct rb_config *cfg, int argc, char **argv)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->processors = 1000;
  cfg->types = 10;
  cfg->picks = 5000000;
  cfg->frames = 4096;
  cfg->cameras = 1000;
  cfg->batch = 256;
  cfg->nats_pct = 10;
  cfg->seed = 1;
  const char *strategy = "all";
  enum {
    O_PROCS = 256,
    O_TYPES,
    O_PICKS,
    O_FRAMES,
    O_CAMERAS,
    O_BATCH,
    O_NATS,
    O_STRATEGY,
    O_SEED,
    O_HELP,
    O_VERSION
  };
  static const struct option opts[] = {
      {"processors", required_argument, NULL, O_PROCS},
      {"types", required_argument, NULL, O_TYPES},
      {"picks", required_argument, NULL, O_PICKS},
      {"frames", required_argument, NULL, O_FRAMES},
      {"cameras", required_argument, NULL, O_CAMERAS},
      {"batch", required_argument, NULL, O_BATCH},
      {"nats-pct", required_argument, NULL, O_NATS},
      {"strategy", required_argument, NULL, O_STRATEGY},
      {"seed", required_argument, NULL, O_SEED},
      {"help", no_argument, NULL, O_HELP},
      {"version", no_argument, NULL, O_VERSION},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = tk_getopt(argc, argv, opts)) != -1) {
    switch (c) {
    case O_PROCS: cfg->processors = tk_flag_i64("--processors", optarg, 1, RB_MAX_PROCS); break;
    case O_TYPES: cfg->types = tk_flag_i64("--types", optarg, 1, RB_MAX_TYPES); break;
    case O_PICKS: cfg->picks = tk_flag_i64("--picks", optarg, 1, INT64_MAX / 2); break;
    case O_FRAMES: cfg->frames = tk_flag_i64("--frames", optarg, 1, 1000000); break;
    case O_CAMERAS: cfg->cameras = tk_flag_i64("--cameras", optarg, 1, 1000000); break;
    case O_BATCH: cfg->batch = tk_flag_i64("--batch", optarg, 1, 1000000); break;
    case O_NATS: cfg->nats_pct = tk_flag_i64("--nats-pct", optarg, 0, 100); break;
    case O_STRATEGY: strategy = optarg; break;
    case O_SEED: cfg->seed = tk_flag_i64("--seed", optarg, 1, INT64_MAX); break;
    case O_HELP: usage(stdout); exit(0);
    case O_VERSION: printf("fb-routebench " TK_VERSION "\n"); exit(0);
    }
  }
  if (optind < argc) tk_die(TK_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
  if (strcmp(strategy, "all") == 0) {
    for (int k = 0; k < FB_STRATEGY_COUNT; k++)
      cfg->strategies[cfg->nstrategies++] = k;
  } else {
    enum fb_strategy st;
    if (fb_strategy_parse(strategy, &st) != 0)
      tk_die(TK_EXIT_USAGE,
             "--strategy: '%s' is not round_robin, weighted_round_robin, least_loaded, "
             "consistent_hash or all",
             strategy);
    cfg->strategies[cfg->nstrategies++] = (int)st;
  }
}

int main(int argc, char **argv)
{
  tk_set_progname("fb-routebench");
  struct rb_config cfg;
  parse_flags(&cfg, argc, argv);

  char *types[RB_MAX_TYPES];
  char made_up[RB_MAX_TYPES][32];
  for (int64_t k = 0; k < cfg.types; k++) {
    if ((size_t)k < RB_NAMED_TYPES) {
      types[k] = (char *)type_names[k];
    } else {
      snprintf(made_up[k], sizeof made_up[k], "type-%lld", (long long)k);
      types[k] = made_up[k];
    }
  }
  uint64_t rng = (uint64_t)cfg.seed * 0x9E3779B97F4A7C15ULL | 1;
  int64_t t0 = fbci_mono_us();
  struct fb_snapshot *s = build_snapshot(&cfg, types, &rng);
  struct rb_frame *frames = build_frames(&cfg, types);
  size_t biggest = 0;
  for (size_t g = 0; g < s->ngroups; g++)
    if (s->groups[g].n > biggest) biggest = s->groups[g].n;
  printf("routebench: %zu processors in %zu capability groups (largest %zu), %lld frames from "
         "%lld cameras, fb_router_begin every %lld picks; set up in %.2f s\n",
         s->n, s->ngroups, biggest, (long long)cfg.frames, (long long)cfg.cameras,
         (long long)cfg.batch, (double)(fbci_mono_us() - t0) / 1e6);

  const int64_t now_ms = fbci_real_us() / 1000;
  struct rb_result res[FB_STRATEGY_COUNT] = {0};
  bool ran[FB_STRATEGY_COUNT] = {false};
  int status = 0;
  for (size_t i = 0; i < cfg.nstrategies; i++) {
    int k = cfg.strategies[i];
    res[k] = run_strategy(&cfg, (enum fb_strategy)k, s, frames, now_ms);
    ran[k] = true;
    printf("  %-22s %8.1f ns/pick (%.2f M picks/s); spread %.2f; no processor %lld, all full "
           "%lld\n",
           fb_strategy_name((enum fb_strategy)k), res[k].ns_per_pick,
           res[k].ns_per_pick > 0 ? 1000.0 / res[k].ns_per_pick : 0, res[k].spread,
           (long long)res[k].failed, (long long)res[k].overloaded);
    if (res[k].failed) status = 1;
  }

  printf("RESULT {\"mode\":\"routing\",\"processors\":%zu,\"types\":%lld,\"picks\":%lld,"
         "\"frames\":%lld,\"batch\":%lld",
         s->n, (long long)cfg.types, (long long)cfg.picks, (long long)cfg.frames,
         (long long)cfg.batch);
  for (int k = 0; k < FB_STRATEGY_COUNT; k++)
    if (ran[k])
      printf(",\"%s_ns\":%.1f", fb_strategy_name((enum fb_strategy)k), res[k].ns_per_pick);
  printf("}\n");
  free(frames);
  fb_snapshot_release(s);
  return status;
}
