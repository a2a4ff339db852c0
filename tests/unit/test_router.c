/*
 * Unit tests for gateway/router.c: capability selection, round robin,
 * smooth weighted round robin, least loaded (power of two choices),
 * consistent hashing with bounded loads, queue room and overload, health
 * filtering and remote processors while NATS is down (README: Health and Routing).
 * Single-threaded; processors' health is set directly on their live state.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/router.h"
#include "helpers.h"

/* ============================================================== helpers */

#define T0 INT64_C(1800000000000) /* after test_proc's registration time */

/* A frame with only what routing reads: the detection type ("" = none). */
static struct fb_frame frame_of(const char *detection_type)
{
  struct fb_frame f;
  memset(&f, 0, sizeof f);
  f.frame_id = (struct fb_str){"f", 1};
  f.detection_type = (struct fb_str){detection_type, strlen(detection_type)};
  return f;
}

static struct fb_router *router(enum fb_strategy strategy)
{
  struct fb_router *r = NULL;
  assert_int_equal(fb_router_create(&r, strategy), 0);
  assert_non_null(r);
  return r;
}

static int pick(struct fb_router *r, const struct fb_snapshot *s, const char *type)
{
  struct fb_frame f = frame_of(type);
  bool overloaded;
  return fb_router_pick(r, s, &f, &overloaded);
}

static const char *pick_id(struct fb_router *r, const struct fb_snapshot *s, const char *type)
{
  int i = pick(r, s, type);
  if (i < 0) fail_msg("no processor picked for '%s': %d", type, i);
  assert_true((size_t)i < s->n);
  return s->procs[i]->id;
}

/* A snapshot of the given processors; the snapshot holds the references. */
static struct fb_snapshot *snapshot_take(struct fb_proc **procs, size_t n)
{
  struct fb_snapshot *s = fb_snapshot_build(procs, n, 1);
  assert_non_null(s);
  test_release_procs(procs, n);
  return s;
}

static struct fb_proc *proc_at(const struct fb_snapshot *s, const char *id)
{
  int i = fb_snapshot_find(s, id);
  assert_true(i >= 0);
  return s->procs[i];
}

/* p1, p2, p3 can do `person`; p4 only `vehicle`; p2 also `vehicle`. */
static struct fb_snapshot *four_processors(void)
{
  struct fb_proc *procs[] = {
      test_proc("p1", "person", NULL, 1),
      test_proc("p2", "person", "vehicle", 1),
      test_proc("p3", "person", NULL, 1),
      test_proc("p4", "vehicle", NULL, 1),
  };
  return snapshot_take(procs, 4);
}

/* Three processors a, b, c sharing capability `x` with the given weights. */
static struct fb_snapshot *weighted3(int wa, int wb, int wc)
{
  struct fb_proc *procs[] = {test_proc("a", "x", NULL, wa), test_proc("b", "x", NULL, wb),
                             test_proc("c", "x", NULL, wc)};
  return snapshot_take(procs, 3);
}

/* Picks `n` times from group `type` into out[] (indexes into s->procs). */
static void pick_many(struct fb_router *r, const struct fb_snapshot *s, const char *type, int *out,
                      size_t n)
{
  for (size_t i = 0; i < n; i++) {
    out[i] = pick(r, s, type);
    assert_true(out[i] >= 0);
  }
}

/* ========================================================= round robin */

static void round_robin_is_exact_over_group(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  enum { N = 30 };
  int got[N];
  pick_many(r, s, "person", got, N);
  size_t count[4] = {0};
  for (int i = 0; i < N; i++)
    count[got[i]]++;
  /* N frames over K=3 processors: N/K each ... */
  assert_int_equal(count[fb_snapshot_find(s, "p1")], N / 3);
  assert_int_equal(count[fb_snapshot_find(s, "p2")], N / 3);
  assert_int_equal(count[fb_snapshot_find(s, "p3")], N / 3);
  assert_int_equal(count[fb_snapshot_find(s, "p4")], 0);
  /* ... and in turn: the same processor every K picks, never twice in a row. */
  for (int i = 3; i < N; i++)
    assert_int_equal(got[i], got[i - 3]);
  assert_true(got[0] != got[1] && got[1] != got[2] && got[0] != got[2]);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void round_robin_single_processor(void **state)
{
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  struct fb_proc *procs[] = {test_proc("only", "face", NULL, 1)};
  struct fb_snapshot *one = snapshot_take(procs, 1);
  for (int i = 0; i < 5; i++)
    assert_string_equal(pick_id(r, one, "face"), "only");
  fb_router_destroy(r);
  fb_snapshot_release(one);
}

static void frame_without_type_goes_to_any(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  enum { N = 12 };
  int got[N];
  pick_many(r, s, "", got, N);
  size_t count[4] = {0};
  for (int i = 0; i < N; i++)
    count[got[i]]++;
  for (int k = 0; k < 4; k++)
    assert_int_equal(count[k], N / 4);
  for (int i = 4; i < N; i++)
    assert_int_equal(got[i], got[i - 4]);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void groups_keep_their_own_turn(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  /* Interleaving vehicle frames must not disturb the person rotation. */
  const char *person[6], *vehicle[6];
  for (int i = 0; i < 6; i++) {
    person[i] = pick_id(r, s, "person");
    vehicle[i] = pick_id(r, s, "vehicle");
  }
  for (int i = 3; i < 6; i++)
    assert_string_equal(person[i], person[i - 3]);
  for (int i = 2; i < 6; i++)
    assert_string_equal(vehicle[i], vehicle[i - 2]);
  assert_string_not_equal(vehicle[0], vehicle[1]);
  for (int i = 0; i < 6; i++)
    assert_true(!strcmp(vehicle[i], "p2") || !strcmp(vehicle[i], "p4"));
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void unknown_capability_is_enoent(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(pick(r, s, "dog"), -ENOENT);
  assert_int_equal(pick(r, s, "Person"), -ENOENT);
  fb_router_set_strategy(r, FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  assert_int_equal(pick(r, s, "dog"), -ENOENT);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void empty_snapshot_is_enoent(void **state)
{
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(pick(r, s, ""), -ENOENT);
  assert_int_equal(pick(r, s, "person"), -ENOENT);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void parsed_frame_routes_by_metadata_type(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  const char *meta = "{\"detection_type\":\"\\u0076ehicle\"}";
  struct fb_field fields[] = {
      {{"frame_id", 8}, {"f1", 2}},
      {{"metadata", 8}, {meta, strlen(meta)}},
  };
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_OK);
  assert_true(f.detection_escaped);
  for (int i = 0; i < 4; i++) {
    bool overloaded;
    int got = fb_router_pick(r, s, &f, &overloaded);
    assert_true(got >= 0);
    assert_true(!strcmp(s->procs[got]->id, "p2") || !strcmp(s->procs[got]->id, "p4"));
  }
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ============================================================== health */

static void dead_processor_is_never_picked(void **state)
{
  struct fb_snapshot *s = four_processors();
  test_set_health(proc_at(s, "p2"), FB_HEALTH_DEAD);
  for (int strategy = 0; strategy < 2; strategy++) {
    struct fb_router *r =
        router(strategy ? FB_STRATEGY_WEIGHTED_ROUND_ROBIN : FB_STRATEGY_ROUND_ROBIN);
    size_t p1 = 0, p3 = 0;
    for (int i = 0; i < 20; i++) {
      const char *id = pick_id(r, s, "person");
      assert_string_not_equal(id, "p2");
      p1 += !strcmp(id, "p1");
      p3 += !strcmp(id, "p3");
    }
    assert_int_equal(p1, 10);
    assert_int_equal(p3, 10);
    for (int i = 0; i < 8; i++)
      assert_string_equal(pick_id(r, s, "vehicle"), "p4");
    fb_router_destroy(r);
  }
  fb_snapshot_release(s);
}

static void all_dead_is_enoent(void **state)
{
  struct fb_snapshot *s = four_processors();
  for (size_t i = 0; i < s->n; i++)
    test_set_health(s->procs[i], FB_HEALTH_DEAD);
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(pick(r, s, "person"), -ENOENT);
  assert_int_equal(pick(r, s, ""), -ENOENT);
  fb_router_set_strategy(r, FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  assert_int_equal(pick(r, s, "person"), -ENOENT);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void stale_is_skipped_while_a_healthy_one_exists(void **state)
{
  struct fb_snapshot *s = four_processors();
  test_set_health(proc_at(s, "p1"), FB_HEALTH_STALE);
  test_set_health(proc_at(s, "p3"), FB_HEALTH_STALE);
  for (int strategy = 0; strategy < 2; strategy++) {
    struct fb_router *r =
        router(strategy ? FB_STRATEGY_WEIGHTED_ROUND_ROBIN : FB_STRATEGY_ROUND_ROBIN);
    for (int i = 0; i < 10; i++)
      assert_string_equal(pick_id(r, s, "person"), "p2");
    fb_router_destroy(r);
  }
  fb_snapshot_release(s);
}

static void stale_is_used_when_no_healthy_one(void **state)
{
  struct fb_snapshot *s = four_processors();
  test_set_health(proc_at(s, "p1"), FB_HEALTH_STALE);
  test_set_health(proc_at(s, "p2"), FB_HEALTH_DEAD);
  test_set_health(proc_at(s, "p3"), FB_HEALTH_STALE);
  for (int strategy = 0; strategy < 2; strategy++) {
    struct fb_router *r =
        router(strategy ? FB_STRATEGY_WEIGHTED_ROUND_ROBIN : FB_STRATEGY_ROUND_ROBIN);
    size_t p1 = 0, p3 = 0;
    for (int i = 0; i < 10; i++) {
      const char *id = pick_id(r, s, "person");
      p1 += !strcmp(id, "p1");
      p3 += !strcmp(id, "p3");
    }
    assert_int_equal(p1, 5);
    assert_int_equal(p3, 5);
    fb_router_destroy(r);
  }
  fb_snapshot_release(s);
}

static void health_change_applies_to_next_pick(void **state)
{
  struct fb_snapshot *s = four_processors();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  (void)pick_id(r, s, "vehicle");
  test_set_health(proc_at(s, "p2"), FB_HEALTH_DEAD);
  for (int i = 0; i < 4; i++)
    assert_string_equal(pick_id(r, s, "vehicle"), "p4");
  test_set_health(proc_at(s, "p2"), FB_HEALTH_HEALTHY);
  test_set_health(proc_at(s, "p4"), FB_HEALTH_STALE);
  for (int i = 0; i < 4; i++)
    assert_string_equal(pick_id(r, s, "vehicle"), "p2");
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ================================================ weighted round robin */

static void weighted_5_1_1_is_the_nginx_sequence(void **state)
{
  struct fb_snapshot *s = weighted3(5, 1, 1);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  const char *expected[] = {"a", "a", "b", "a", "c", "a", "a"};
  for (int cycle = 0; cycle < 3; cycle++)
    for (int i = 0; i < 7; i++)
      assert_string_equal(pick_id(r, s, "x"), expected[i]);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void weighted_5_1_1_counts_per_cycle(void **state)
{
  struct fb_snapshot *s = weighted3(5, 1, 1);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  int got[7];
  pick_many(r, s, "x", got, 7);
  size_t count[3] = {0};
  int run = 1, longest = 1;
  for (int i = 0; i < 7; i++) {
    count[got[i]]++;
    if (i) {
      run = got[i] == got[i - 1] ? run + 1 : 1;
      if (run > longest) longest = run;
    }
  }
  assert_int_equal(count[0], 5);
  assert_int_equal(count[1], 1);
  assert_int_equal(count[2], 1);
  /* Smooth: the heavy one is spread out, not picked 5 times in a row. */
  assert_true(longest <= 2);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* Every window of sum(weights) consecutive picks holds each processor
 * exactly `weight` times. */
static void assert_sliding_windows_exact(int wa, int wb, int wc)
{
  struct fb_snapshot *s = weighted3(wa, wb, wc);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  int total = wa + wb + wc, n = total * 6;
  int *got = calloc((size_t)n, sizeof *got);
  assert_non_null(got);
  pick_many(r, s, "x", got, (size_t)n);
  int want[3] = {wa, wb, wc};
  for (int start = 0; start + total <= n; start++) {
    int count[3] = {0};
    for (int i = start; i < start + total; i++)
      count[got[i]]++;
    for (int k = 0; k < 3; k++) {
      if (count[k] != want[k])
        fail_msg("weights %d,%d,%d: window at %d gives %s %d times, want %d", wa, wb, wc, start,
                 s->procs[k]->id, count[k], want[k]);
    }
  }
  free(got);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void weighted_windows_are_exact(void **state)
{
  assert_sliding_windows_exact(5, 1, 1);
  assert_sliding_windows_exact(3, 2, 1);
  assert_sliding_windows_exact(2, 3, 4);
  assert_sliding_windows_exact(1, 1, 1);
  assert_sliding_windows_exact(10, 1, 3);
}

static void weighted_equal_weights_is_round_robin(void **state)
{
  struct fb_snapshot *s = weighted3(2, 2, 2);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  int got[9];
  pick_many(r, s, "x", got, 9);
  for (int i = 1; i < 9; i++)
    assert_true(got[i] != got[i - 1]);
  for (int i = 3; i < 9; i++)
    assert_int_equal(got[i], got[i - 3]);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void weighted_skips_dead_and_keeps_proportion(void **state)
{
  struct fb_snapshot *s = weighted3(5, 1, 3);
  test_set_health(proc_at(s, "a"), FB_HEALTH_DEAD);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  int got[40];
  pick_many(r, s, "x", got, 40);
  size_t count[3] = {0};
  for (int i = 0; i < 40; i++)
    count[got[i]]++;
  assert_int_equal(count[0], 0);
  assert_int_equal(count[1], 10);
  assert_int_equal(count[2], 30);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void weighted_frames_without_type(void **state)
{
  struct fb_proc *procs[] = {test_proc("a", "x", NULL, 3), test_proc("b", "y", NULL, 1)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  int got[8];
  pick_many(r, s, "", got, 8);
  size_t count[2] = {0};
  for (int i = 0; i < 8; i++)
    count[got[i]]++;
  assert_int_equal(count[0], 6);
  assert_int_equal(count[1], 2);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* A processor in two groups: each group on its own stays in proportion. */
static void weighted_groups_stay_proportional_when_interleaved(void **state)
{
  struct fb_proc *procs[] = {test_proc("a", "x", "y", 1), test_proc("b", "x", NULL, 1),
                             test_proc("c", "y", NULL, 3)};
  struct fb_snapshot *s = snapshot_take(procs, 3);
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  enum { CYCLES = 50 };
  size_t x[3] = {0}, y[3] = {0};
  for (int i = 0; i < CYCLES * 4; i++) {
    x[pick(r, s, "x")]++; /* x: a=1, b=1: cycle of 2 */
    y[pick(r, s, "y")]++; /* y: a=1, c=3: cycle of 4 */
  }
  assert_int_equal(x[0], CYCLES * 2);
  assert_int_equal(x[1], CYCLES * 2);
  assert_int_equal(y[0], CYCLES);
  assert_int_equal(y[2], CYCLES * 3);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ======================================================== remote (NATS) */

/* p-local on Redis, p-remote on NATS, both `person`. */
static struct fb_snapshot *local_and_remote(void)
{
  struct fb_proc *procs[] = {
      test_proc("p-local", "person", NULL, 1),
      test_proc_from_text("{\"id\":\"p-remote\",\"capabilities\":[\"person\"],\"capacity\":1,"
                          "\"queue\":\"\",\"transport\":\"nats\"}"),
  };
  return snapshot_take(procs, 2);
}

static void remote_processors_are_picked_while_nats_is_up(void **state)
{
  struct fb_snapshot *s = local_and_remote();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  size_t remote = 0;
  for (int i = 0; i < 10; i++)
    remote += !strcmp(pick_id(r, s, "person"), "p-remote");
  assert_int_equal(remote, 5);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void remote_processors_are_a_last_resort_while_nats_is_down(void **state)
{
  struct fb_snapshot *s = local_and_remote();
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  fb_router_set_sink_up(r, FB_TRANSPORT_NATS, false);
  for (int i = 0; i < 6; i++)
    assert_string_equal(pick_id(r, s, "person"), "p-local");
  /* Even a stale local processor beats an unreachable remote one. */
  test_set_health(proc_at(s, "p-local"), FB_HEALTH_STALE);
  assert_string_equal(pick_id(r, s, "person"), "p-local");
  /* With nobody else, the remote one is picked: the frame waits for NATS. */
  test_set_health(proc_at(s, "p-local"), FB_HEALTH_DEAD);
  assert_string_equal(pick_id(r, s, "person"), "p-remote");
  /* A dead remote one, never. */
  test_set_health(proc_at(s, "p-remote"), FB_HEALTH_DEAD);
  assert_int_equal(pick(r, s, "person"), -ENOENT);
  test_set_health(proc_at(s, "p-remote"), FB_HEALTH_HEALTHY);
  fb_router_set_sink_up(r, FB_TRANSPORT_NATS, true);
  assert_string_equal(pick_id(r, s, "person"), "p-remote");
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ================================================ queue room, overload */

/* A processor of capability `x` with a capacity and a queue cap. */
static struct fb_proc *proc_cq(const char *id, int capacity, int max_queue)
{
  char text[256];
  snprintf(text, sizeof text,
           "{\"id\":\"%s\",\"capabilities\":[\"x\"],\"capacity\":%d,\"queue\":\"\","
           "\"max_queue\":%d}",
           id, capacity, max_queue);
  return test_proc_from_text(text);
}

static void set_depth(const struct fb_snapshot *s, const char *id, int64_t depth)
{
  atomic_store(&proc_at(s, id)->live->queue_depth, depth);
}

static int pick_ov(struct fb_router *r, const struct fb_snapshot *s, bool *overloaded)
{
  struct fb_frame f = frame_of("x");
  *overloaded = true; /* must be cleared when there is room */
  return fb_router_pick(r, s, &f, overloaded);
}

static void full_queue_is_avoided_while_another_has_room(void **state)
{
  struct fb_proc *procs[] = {proc_cq("a", 1, 10), proc_cq("b", 1, 10)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  set_depth(s, "a", 10);
  for (int strategy = 0; strategy < FB_STRATEGY_COUNT; strategy++) {
    struct fb_router *r = router((enum fb_strategy)strategy);
    assert_int_equal(fb_router_begin(r, s, 0), 0);
    for (int i = 0; i < 5; i++) {
      bool overloaded;
      int got = pick_ov(r, s, &overloaded);
      assert_int_equal(got, fb_snapshot_find(s, "b"));
      assert_false(overloaded);
    }
    fb_router_destroy(r);
  }
  fb_snapshot_release(s);
}

static void all_full_still_picks_and_says_overloaded(void **state)
{
  struct fb_proc *procs[] = {proc_cq("a", 1, 10), proc_cq("b", 1, 10)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  set_depth(s, "a", 10);
  set_depth(s, "b", 12);
  for (int strategy = 0; strategy < FB_STRATEGY_COUNT; strategy++) {
    struct fb_router *r = router((enum fb_strategy)strategy);
    assert_int_equal(fb_router_begin(r, s, 0), 0);
    bool overloaded = false;
    int got = pick_ov(r, s, &overloaded);
    assert_true(got >= 0);
    assert_true(overloaded);
    fb_router_destroy(r);
  }
  fb_snapshot_release(s);
}

static void picks_fill_a_queue_within_a_batch(void **state)
{
  struct fb_proc *procs[] = {proc_cq("a", 1, 3), proc_cq("b", 1, 3)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  set_depth(s, "a", 2);
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  int a = fb_snapshot_find(s, "a"), b = fb_snapshot_find(s, "b");
  assert_int_equal(fb_router_load(r, (uint32_t)a), 2);
  bool overloaded;
  /* a has room for one, b for three: four picks fit, the fifth does not. */
  size_t to_a = 0;
  for (int i = 0; i < 4; i++) {
    int got = pick_ov(r, s, &overloaded);
    assert_false(overloaded);
    to_a += got == a;
  }
  assert_int_equal(to_a, 1);
  assert_int_equal(fb_router_load(r, (uint32_t)a), 3);
  assert_int_equal(fb_router_load(r, (uint32_t)b), 3);
  assert_true(pick_ov(r, s, &overloaded) >= 0);
  assert_true(overloaded);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void begin_counts_frames_sent_since_the_last_poll(void **state)
{
  struct fb_proc *procs[] = {proc_cq("a", 1, 100)};
  struct fb_snapshot *s = snapshot_take(procs, 1);
  set_depth(s, "a", 7);
  atomic_store(&proc_at(s, "a")->live->sent_since_poll, 5);
  struct fb_router *r = router(FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  assert_int_equal(fb_router_load(r, 0), 12);
  assert_int_equal(pick(r, s, "x"), 0);
  assert_int_equal(fb_router_load(r, 0), 13);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ========================================================= least loaded */

static void least_loaded_picks_the_lighter_of_two(void **state)
{
  struct fb_proc *procs[] = {proc_cq("a", 1, 10000), proc_cq("b", 1, 10000)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  set_depth(s, "a", 10);
  struct fb_router *r = router(FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  for (int i = 0; i < 10; i++)
    assert_string_equal(pick_id(r, s, "x"), "b");
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void least_loaded_divides_by_capacity(void **state)
{
  struct fb_proc *procs[] = {proc_cq("big", 4, 10000), proc_cq("small", 1, 10000)};
  struct fb_snapshot *s = snapshot_take(procs, 2);
  struct fb_router *r = router(FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  size_t big = 0;
  for (int i = 0; i < 50; i++)
    big += !strcmp(pick_id(r, s, "x"), "big");
  /* Load per unit of capacity never differs by more than one frame. */
  assert_int_equal(big, 40);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void least_loaded_never_picks_the_heaviest(void **state)
{
  /* Power of two choices compares two distinct candidates: the one that
   * is heavier than every other can never win. */
  struct fb_proc *procs[] = {proc_cq("a", 1, 10000), proc_cq("b", 1, 10000), proc_cq("c", 1, 10000),
                             proc_cq("heavy", 1, 10000)};
  struct fb_snapshot *s = snapshot_take(procs, 4);
  set_depth(s, "heavy", 1000);
  struct fb_router *r = router(FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  for (int i = 0; i < 300; i++)
    assert_string_not_equal(pick_id(r, s, "x"), "heavy");
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void least_loaded_respects_capability_and_health(void **state)
{
  struct fb_snapshot *s = four_processors();
  test_set_health(proc_at(s, "p1"), FB_HEALTH_DEAD);
  struct fb_router *r = router(FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(fb_router_begin(r, s, 0), 0);
  for (int i = 0; i < 20; i++) {
    const char *id = pick_id(r, s, "person");
    assert_true(!strcmp(id, "p2") || !strcmp(id, "p3"));
  }
  assert_int_equal(pick(r, s, "dog"), -ENOENT);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ====================================================== consistent hash */

static int pick_camera(struct fb_router *r, const struct fb_snapshot *s, const char *camera)
{
  struct fb_frame f = frame_of("x");
  f.camera_id = (struct fb_str){camera, strlen(camera)};
  bool overloaded;
  int got = fb_router_pick(r, s, &f, &overloaded);
  assert_true(got >= 0);
  return got;
}

enum { CAMERAS = 400 };

/* Where each camera goes, by processor id, with loads out of the way. */
static void map_cameras(const struct fb_snapshot *s, const char **out)
{
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  fb_router_set_hash_bound(r, 1e12);
  char cam[32];
  for (int c = 0; c < CAMERAS; c++) {
    snprintf(cam, sizeof cam, "camera-%d", c);
    out[c] = s->procs[pick_camera(r, s, cam)]->id;
  }
  fb_router_destroy(r);
}

static struct fb_snapshot *ring_of(const char *const *ids, size_t n, uint64_t generation)
{
  struct fb_proc *procs[8];
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++)
    procs[i] = proc_cq(ids[i], 1, 1000000);
  struct fb_snapshot *s = fb_snapshot_build(procs, n, generation);
  test_release_procs(procs, n);
  return s;
}

static void same_camera_same_processor(void **state)
{
  const char *ids[] = {"a", "b", "c", "d"};
  struct fb_snapshot *s = ring_of(ids, 4, 1);
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  fb_router_set_hash_bound(r, 1e12);
  char cam[32];
  for (int c = 0; c < 20; c++) {
    snprintf(cam, sizeof cam, "camera-%d", c);
    int first = pick_camera(r, s, cam);
    for (int i = 0; i < 10; i++)
      assert_int_equal(pick_camera(r, s, cam), first);
  }
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

static void cameras_spread_over_processors(void **state)
{
  const char *ids[] = {"a", "b", "c", "d"};
  struct fb_snapshot *s = ring_of(ids, 4, 1);
  const char *where[CAMERAS];
  map_cameras(s, where);
  for (size_t k = 0; k < 4; k++) {
    size_t n = 0;
    for (int c = 0; c < CAMERAS; c++)
      n += !strcmp(where[c], ids[k]);
    /* 64 points each: every processor gets a fair share, none is empty. */
    assert_true(n > CAMERAS / 4 / 3);
  }
  fb_snapshot_release(s);
}

static void removing_a_processor_moves_only_its_cameras(void **state)
{
  const char *four[] = {"a", "b", "c", "d"}, *three[] = {"a", "b", "d"};
  struct fb_snapshot *before = ring_of(four, 4, 1), *after = ring_of(three, 3, 2);
  const char *was[CAMERAS], *now[CAMERAS];
  map_cameras(before, was);
  map_cameras(after, now);
  size_t moved = 0;
  for (int c = 0; c < CAMERAS; c++) {
    if (strcmp(was[c], "c"))
      assert_string_equal(now[c], was[c]);
    else
      moved++;
  }
  assert_true(moved > 0);
  fb_snapshot_release(before);
  fb_snapshot_release(after);
}

/* The measure: 1,000 cameras over N = 8 processors; removing one
 * moves about 1/N of them (its own) and no others. */
static void removing_one_of_eight_moves_about_an_eighth(void **state)
{
  enum { N = 8, MANY = 1000 };
  const char *eight[N] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"};
  const char *seven[N - 1] = {"p0", "p1", "p2", "p4", "p5", "p6", "p7"};
  struct fb_snapshot *before = ring_of(eight, N, 1), *after = ring_of(seven, N - 1, 2);
  struct fb_router *rb = router(FB_STRATEGY_CONSISTENT_HASH),
                   *ra = router(FB_STRATEGY_CONSISTENT_HASH);
  fb_router_set_hash_bound(rb, 1e12);
  fb_router_set_hash_bound(ra, 1e12);
  size_t moved = 0;
  char cam[32];
  for (int c = 0; c < MANY; c++) {
    snprintf(cam, sizeof cam, "cam-%04d", c);
    const char *was = before->procs[pick_camera(rb, before, cam)]->id;
    const char *now = after->procs[pick_camera(ra, after, cam)]->id;
    if (strcmp(was, now)) {
      assert_string_equal(was, "p3"); /* only the removed one's cameras move */
      moved++;
    }
  }
  /* 1/N is 125; 64 points a processor keep it within half of that. */
  assert_true(moved >= MANY / N / 2 && moved <= MANY / N * 3 / 2);
  fb_router_destroy(rb);
  fb_router_destroy(ra);
  fb_snapshot_release(before);
  fb_snapshot_release(after);
}

static void adding_a_processor_moves_cameras_only_to_it(void **state)
{
  const char *three[] = {"a", "b", "c"}, *four[] = {"a", "b", "c", "e"};
  struct fb_snapshot *before = ring_of(three, 3, 1), *after = ring_of(four, 4, 2);
  const char *was[CAMERAS], *now[CAMERAS];
  map_cameras(before, was);
  map_cameras(after, now);
  size_t moved = 0;
  for (int c = 0; c < CAMERAS; c++)
    if (strcmp(now[c], was[c])) {
      assert_string_equal(now[c], "e");
      moved++;
    }
  assert_true(moved > 0 && moved < CAMERAS / 2);
  fb_snapshot_release(before);
  fb_snapshot_release(after);
}

static void dead_processor_cameras_move_others_stay(void **state)
{
  const char *ids[] = {"a", "b", "c", "d"};
  struct fb_snapshot *s = ring_of(ids, 4, 1);
  const char *was[CAMERAS], *now[CAMERAS];
  map_cameras(s, was);
  test_set_health(proc_at(s, "b"), FB_HEALTH_DEAD);
  map_cameras(s, now);
  for (int c = 0; c < CAMERAS; c++) {
    assert_string_not_equal(now[c], "b");
    if (strcmp(was[c], "b")) assert_string_equal(now[c], was[c]);
  }
  fb_snapshot_release(s);
}

/* Counts of camera moves by reason since `before`. */
static void moves_since(const struct fb_router *r, const uint64_t before[FB_MOVE_COUNT],
                        uint64_t out[FB_MOVE_COUNT])
{
  fb_router_moves(r, out);
  for (int k = 0; k < FB_MOVE_COUNT; k++)
    out[k] -= before[k];
}

/* 16 cameras at 30 frames/s over three processors that keep up: the depths
 * as read jitter between 0 and their capacity, and frames sent since the
 * last reading pile up on top. No camera ever moves. */
static void light_load_moves_no_camera(void **state)
{
  const char *ids[] = {"obj-1", "obj-2", "obj-3"};
  struct fb_proc *procs[3];
  for (int i = 0; i < 3; i++)
    procs[i] = proc_cq(ids[i], 8, 1000);
  struct fb_snapshot *s = snapshot_take(procs, 3);
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  int where[16];
  char cam[16];
  uint64_t seed = 7;
  for (int batch = 0; batch < 2000; batch++) {
    for (int i = 0; i < 3; i++) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      atomic_store(&s->procs[i]->live->queue_depth, (int64_t)(seed >> 33) % 9);
      atomic_store(&s->procs[i]->live->sent_since_poll, (int64_t)(seed >> 40) % 40);
    }
    assert_int_equal(fb_router_begin(r, s, T0 + batch * 33), 0);
    for (int c = 0; c < 16; c++) {
      snprintf(cam, sizeof cam, "cam-%03d", c);
      int got = pick_camera(r, s, cam);
      if (batch == 0)
        where[c] = got;
      else
        assert_int_equal(got, where[c]);
    }
  }
  uint64_t moves[FB_MOVE_COUNT];
  fb_router_moves(r, moves);
  assert_int_equal(moves[FB_MOVE_SPILL] + moves[FB_MOVE_RETURN] + moves[FB_MOVE_MEMBERSHIP], 0);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* One processor really overloaded: its cameras move away whole (every
 * frame of a camera to one other processor), nobody else's move, and they
 * come back once it has drained, not before RETURN_MS. */
static void overload_moves_whole_cameras_and_they_return(void **state)
{
  const char *ids[] = {"a", "b", "c"};
  struct fb_proc *procs[3];
  for (int i = 0; i < 3; i++)
    procs[i] = proc_cq(ids[i], 4, 100000);
  struct fb_snapshot *s = snapshot_take(procs, 3);
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  enum { CAMS = 30 };
  char cam[16];
  int home[CAMS], away[CAMS];
  assert_int_equal(fb_router_begin(r, s, T0), 0);
  size_t on_a = 0;
  for (int c = 0; c < CAMS; c++) {
    snprintf(cam, sizeof cam, "cam-%03d", c);
    home[c] = pick_camera(r, s, cam);
    on_a += !strcmp(s->procs[home[c]]->id, "a");
  }
  assert_true(on_a > 0 && on_a < CAMS);

  /* a is 50 deep with a capacity of 4; b and c keep up. */
  uint64_t before[FB_MOVE_COUNT], moved[FB_MOVE_COUNT];
  fb_router_moves(r, before);
  set_depth(s, "a", 50);
  for (int batch = 0; batch < 20; batch++) {
    assert_int_equal(fb_router_begin(r, s, T0 + 100 + batch), 0);
    for (int c = 0; c < CAMS; c++) {
      snprintf(cam, sizeof cam, "cam-%03d", c);
      for (int frame = 0; frame < 5; frame++) { /* a burst: still one place */
        int got = pick_camera(r, s, cam);
        if (strcmp(s->procs[home[c]]->id, "a")) {
          assert_int_equal(got, home[c]);
        } else {
          assert_string_not_equal(s->procs[got]->id, "a");
          if (batch == 0 && frame == 0) away[c] = got;
          assert_int_equal(got, away[c]);
        }
      }
    }
  }
  moves_since(r, before, moved);
  assert_int_equal(moved[FB_MOVE_SPILL], on_a);
  assert_int_equal(moved[FB_MOVE_RETURN] + moved[FB_MOVE_MEMBERSHIP], 0);

  /* a drains: its cameras stay away until RETURN_MS after they left ... */
  set_depth(s, "a", 0);
  fb_router_moves(r, before);
  assert_int_equal(fb_router_begin(r, s, T0 + 1000), 0);
  for (int c = 0; c < CAMS; c++) {
    snprintf(cam, sizeof cam, "cam-%03d", c);
    pick_camera(r, s, cam);
  }
  moves_since(r, before, moved);
  assert_int_equal(moved[FB_MOVE_RETURN], 0);
  /* ... then come back, each once. */
  assert_int_equal(fb_router_begin(r, s, T0 + 100 + 2000), 0);
  for (int c = 0; c < CAMS; c++) {
    snprintf(cam, sizeof cam, "cam-%03d", c);
    assert_int_equal(pick_camera(r, s, cam), home[c]);
    assert_int_equal(pick_camera(r, s, cam), home[c]);
  }
  moves_since(r, before, moved);
  assert_int_equal(moved[FB_MOVE_RETURN], on_a);
  assert_int_equal(moved[FB_MOVE_SPILL] + moved[FB_MOVE_MEMBERSHIP], 0);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* A processor joins, then leaves: each time about 1/N of the cameras move,
 * counted as membership moves, and only to or from it. */
static void membership_changes_move_about_one_in_n(void **state)
{
  const char *four[] = {"p0", "p1", "p2", "p3"}, *five[] = {"p0", "p1", "p2", "p3", "p4"};
  struct fb_snapshot *s4 = ring_of(four, 4, 1), *s5 = ring_of(five, 5, 2),
                     *back = ring_of(four, 4, 3);
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  enum { MANY = 1000 };
  char cam[16];
  const char *was[MANY];
  for (int c = 0; c < MANY; c++) {
    snprintf(cam, sizeof cam, "cam-%04d", c);
    was[c] = s4->procs[pick_camera(r, s4, cam)]->id;
  }
  uint64_t before[FB_MOVE_COUNT], moved[FB_MOVE_COUNT];
  fb_router_moves(r, before);
  size_t to_new = 0;
  for (int c = 0; c < MANY; c++) {
    snprintf(cam, sizeof cam, "cam-%04d", c);
    const char *now = s5->procs[pick_camera(r, s5, cam)]->id;
    if (strcmp(now, was[c])) {
      assert_string_equal(now, "p4");
      to_new++;
    }
  }
  moves_since(r, before, moved);
  assert_int_equal(moved[FB_MOVE_MEMBERSHIP], to_new);
  assert_true(to_new >= MANY / 5 / 2 && to_new <= MANY / 5 * 3 / 2);

  fb_router_moves(r, before);
  for (int c = 0; c < MANY; c++) {
    snprintf(cam, sizeof cam, "cam-%04d", c);
    assert_string_equal(back->procs[pick_camera(r, back, cam)]->id, was[c]);
  }
  moves_since(r, before, moved);
  assert_int_equal(moved[FB_MOVE_MEMBERSHIP], to_new);
  assert_int_equal(moved[FB_MOVE_SPILL] + moved[FB_MOVE_RETURN], 0);
  fb_router_destroy(r);
  fb_snapshot_release(s4);
  fb_snapshot_release(s5);
  fb_snapshot_release(back);
}

static void frame_without_camera_hashes_its_frame_id(void **state)
{
  const char *ids[] = {"a", "b", "c", "d"};
  struct fb_snapshot *s = ring_of(ids, 4, 1);
  struct fb_router *r = router(FB_STRATEGY_CONSISTENT_HASH);
  fb_router_set_hash_bound(r, 1e12);
  struct fb_frame f = frame_of("x");
  f.frame_id = (struct fb_str){"frame-77", 8};
  bool overloaded;
  int first = fb_router_pick(r, s, &f, &overloaded);
  assert_true(first >= 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(fb_router_pick(r, s, &f, &overloaded), first);
  /* And it is the processor the same text gets as a camera id. */
  assert_int_equal(pick_camera(r, s, "frame-77"), first);
  fb_router_destroy(r);
  fb_snapshot_release(s);
}

/* ============================================================ strategy */

static void strategy_can_be_changed(void **state)
{
  struct fb_router *r = router(FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(fb_router_strategy(r), FB_STRATEGY_ROUND_ROBIN);
  fb_router_set_strategy(r, FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  assert_int_equal(fb_router_strategy(r), FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  fb_router_destroy(r);
  fb_router_destroy(NULL);
}

static void new_snapshot_with_more_processors(void **state)
{
  struct fb_router *r = router(FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  struct fb_proc *small[] = {test_proc("a", "x", NULL, 1)};
  struct fb_snapshot *s1 = fb_snapshot_build(small, 1, 1);
  test_release_procs(small, 1);
  assert_string_equal(pick_id(r, s1, "x"), "a");

  struct fb_proc *big[] = {test_proc("a", "x", NULL, 1), test_proc("b", "x", NULL, 1),
                           test_proc("c", "x", NULL, 1), test_proc("d", "y", NULL, 1)};
  struct fb_snapshot *s2 = fb_snapshot_build(big, 4, 2);
  test_release_procs(big, 4);
  size_t count[4] = {0};
  for (int i = 0; i < 30; i++)
    count[pick(r, s2, "x")]++;
  assert_int_equal(count[0], 10);
  assert_int_equal(count[1], 10);
  assert_int_equal(count[2], 10);
  fb_router_set_strategy(r, FB_STRATEGY_ROUND_ROBIN);
  assert_string_equal(pick_id(r, s2, "y"), "d");
  fb_snapshot_release(s1);
  fb_snapshot_release(s2);
  fb_router_destroy(r);
}

/* =========================================================== slow start */

/* p-old was registered long ago (test_proc's time), p-new at `registered`;
 * both can do person. */
static struct fb_snapshot *old_and_new(int64_t registered)
{
  char text[256];
  snprintf(text, sizeof text,
           "{\"id\":\"p-new\",\"capabilities\":[\"person\"],\"capacity\":4,\"queue\":\"\","
           "\"registered_at_ms\":%lld}",
           (long long)registered);
  struct fb_proc *procs[] = {test_proc("p-old", "person", NULL, 1), test_proc_from_text(text)};
  return snapshot_take(procs, 2);
}

/* Counts p-new's frames out of `n` picks, a batch of 256 at a time. */
static int new_ones_share(enum fb_strategy strategy, int64_t slow_start, int64_t now, int n)
{
  struct fb_snapshot *s = old_and_new(T0);
  struct fb_router *r = router(strategy);
  fb_router_set_slow_start(r, slow_start);
  int got = 0;
  for (int i = 0; i < n; i++) {
    if (i % 256 == 0) {
      assert_int_equal(fb_router_begin(r, s, now), 0);
      /* Loads start over each batch, as if both streams were drained. */
    }
    if (!strcmp(pick_id(r, s, "person"), "p-new")) got++;
  }
  fb_router_destroy(r);
  fb_snapshot_release(s);
  return got;
}

static void slow_start_ramps_a_new_processor(void **state)
{
  (void)state;
  const int n = 20000;
  /* 1 s into a 10 s window its share is 0.05 + 0.95 * 0.1 = 14.5% of a
   * full one: round robin gives it about that part of its half. */
  int early = new_ones_share(FB_STRATEGY_ROUND_ROBIN, 10000, T0 + 1000, n);
  int late = new_ones_share(FB_STRATEGY_ROUND_ROBIN, 10000, T0 + 9000, n);
  int done = new_ones_share(FB_STRATEGY_ROUND_ROBIN, 10000, T0 + 20000, n);
  assert_true(early > 0);
  assert_true(early < n / 5);
  assert_true(early < late);
  assert_int_equal(done, n / 2); /* ramp over: exact round robin */
}

static void slow_start_off_is_full_share(void **state)
{
  (void)state;
  assert_int_equal(new_ones_share(FB_STRATEGY_ROUND_ROBIN, 0, T0 + 10, 1000), 500);
}

static void slow_start_weighted_is_proportional(void **state)
{
  (void)state;
  const int n = 20000;
  /* Halfway through: share 0.05 + 0.95 * 0.5 = 0.525; weights 1 : 0.525. */
  int got = new_ones_share(FB_STRATEGY_WEIGHTED_ROUND_ROBIN, 10000, T0 + 5000, n);
  double expect = n * 0.525 / 1.525;
  assert_true(got > expect - n * 0.01 && got < expect + n * 0.01);
}

/* ================================================================ main */

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(round_robin_is_exact_over_group),
      cmocka_unit_test(slow_start_ramps_a_new_processor),
      cmocka_unit_test(slow_start_off_is_full_share),
      cmocka_unit_test(slow_start_weighted_is_proportional),
      cmocka_unit_test(round_robin_single_processor),
      cmocka_unit_test(frame_without_type_goes_to_any),
      cmocka_unit_test(groups_keep_their_own_turn),
      cmocka_unit_test(unknown_capability_is_enoent),
      cmocka_unit_test(empty_snapshot_is_enoent),
      cmocka_unit_test(parsed_frame_routes_by_metadata_type),
      cmocka_unit_test(dead_processor_is_never_picked),
      cmocka_unit_test(all_dead_is_enoent),
      cmocka_unit_test(stale_is_skipped_while_a_healthy_one_exists),
      cmocka_unit_test(stale_is_used_when_no_healthy_one),
      cmocka_unit_test(health_change_applies_to_next_pick),
      cmocka_unit_test(weighted_5_1_1_is_the_nginx_sequence),
      cmocka_unit_test(weighted_5_1_1_counts_per_cycle),
      cmocka_unit_test(weighted_windows_are_exact),
      cmocka_unit_test(weighted_equal_weights_is_round_robin),
      cmocka_unit_test(weighted_skips_dead_and_keeps_proportion),
      cmocka_unit_test(weighted_frames_without_type),
      cmocka_unit_test(weighted_groups_stay_proportional_when_interleaved),
      cmocka_unit_test(remote_processors_are_picked_while_nats_is_up),
      cmocka_unit_test(remote_processors_are_a_last_resort_while_nats_is_down),
      cmocka_unit_test(full_queue_is_avoided_while_another_has_room),
      cmocka_unit_test(all_full_still_picks_and_says_overloaded),
      cmocka_unit_test(picks_fill_a_queue_within_a_batch),
      cmocka_unit_test(begin_counts_frames_sent_since_the_last_poll),
      cmocka_unit_test(least_loaded_picks_the_lighter_of_two),
      cmocka_unit_test(least_loaded_divides_by_capacity),
      cmocka_unit_test(least_loaded_never_picks_the_heaviest),
      cmocka_unit_test(least_loaded_respects_capability_and_health),
      cmocka_unit_test(same_camera_same_processor),
      cmocka_unit_test(cameras_spread_over_processors),
      cmocka_unit_test(removing_a_processor_moves_only_its_cameras),
      cmocka_unit_test(adding_a_processor_moves_cameras_only_to_it),
      cmocka_unit_test(dead_processor_cameras_move_others_stay),
      cmocka_unit_test(removing_one_of_eight_moves_about_an_eighth),
      cmocka_unit_test(light_load_moves_no_camera),
      cmocka_unit_test(overload_moves_whole_cameras_and_they_return),
      cmocka_unit_test(membership_changes_move_about_one_in_n),
      cmocka_unit_test(frame_without_camera_hashes_its_frame_id),
      cmocka_unit_test(strategy_can_be_changed),
      cmocka_unit_test(new_snapshot_with_more_processors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
