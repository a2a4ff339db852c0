/*
 * Unit tests for gateway/dispatch.c: what becomes of each frame of a batch
 * (a processor, or the DLQ with its reason; held by backpressure; trimmed),
 * in which order, without any server. Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "framebuffer/dispatch.h"
#include "helpers.h"

#define NOW_MS INT64_C(1735689600000) /* 2025-01-01T00:00:00Z */
#define MAXN   16

/* A batch under construction: frames parsed from name=value pairs. */
struct batch {
  size_t n;
  struct fb_field fields[MAXN][8];
  struct fb_frame frames[MAXN];
  int64_t deliveries[MAXN];
  int32_t outcome[MAXN];
  uint8_t held[MAXN];
  uint32_t order[MAXN];
  int retry_sink; /* -1 unless a test sets it (see batch_init) */
  bool retried;
};

/* An empty batch with no sink to retry through. */
static struct batch batch_init(void)
{
  return (struct batch){.retry_sink = -1};
}

/* Adds a frame from "name", "value", ... NULL (no pairs: a missing entry). */
static void add(struct batch *b, ...)
{
  va_list ap;
  va_start(ap, b);
  size_t nf = 0;
  const char *name;
  while ((name = va_arg(ap, const char *))) {
    const char *value = va_arg(ap, const char *);
    b->fields[b->n][nf].name = (struct fb_str){name, strlen(name)};
    b->fields[b->n][nf].value = (struct fb_str){value, strlen(value)};
    nf++;
  }
  va_end(ap);
  struct fb_frame *f = &b->frames[b->n];
  if (nf)
    fb_frame_parse(f, b->fields[b->n], nf);
  else
    memset(f, 0, sizeof *f);
  b->deliveries[b->n] = 1;
  b->n++;
}

static struct fb_routing routing(enum fb_overload_policy policy, int64_t max_age)
{
  return (struct fb_routing){FB_STRATEGY_ROUND_ROBIN, policy, max_age, 0, 1.25};
}

/* Runs the dispatcher over `b` with processors `procs`. */
static size_t run(struct batch *b, struct fb_proc **procs, size_t np, struct fb_routing r)
{
  struct fb_snapshot *s = fb_snapshot_build(procs, np, 1);
  struct fb_router *router;
  assert_int_equal(fb_router_create(&router, r.strategy), 0);
  fb_router_begin(router, s, NOW_MS);
  struct fb_dispatch d = {.n = b->n,
                          .frames = b->frames,
                          .deliveries = b->deliveries,
                          .retry_sink = b->retry_sink,
                          .retried = b->retried,
                          .outcome = b->outcome,
                          .held = b->held,
                          .order = b->order};
  fb_dispatch_run(&d, router, s, &r, 5, NOW_MS);
  fb_router_destroy(router);
  fb_snapshot_release(s);
  return d.ntrimmed;
}

/* ============================================================== reasons */

static void every_reason_in_its_order(void **state)
{
  struct fb_proc *p = test_proc("det-1", "person", NULL, 1);
  struct batch b = batch_init();
  add(&b, "frame_id", "ok", "detection_type", "person", NULL); /* 0: routed */
  add(&b, NULL);                                               /* 1: missing */
  add(&b, "frame_id", "", "detection_type", "person", NULL);   /* 2: malformed */
  add(&b, "frame_id", "p", "detection_type", "person", NULL);  /* 3: poison */
  b.deliveries[3] = 6;
  add(&b, "frame_id", "bad", "metadata", "[1]", NULL); /* 4: poison wins */
  b.deliveries[4] = 9;
  add(&b, "frame_id", "old", "timestamp", "1735689500", NULL);   /* 5: expired (100 s) */
  add(&b, "frame_id", "young", "timestamp", "1735689599", NULL); /* 6: 1 s old: routed */
  add(&b, "frame_id", "car", "detection_type", "vehicle", NULL); /* 7: nobody has it */
  add(&b, "frame_id", "none", NULL);                             /* 8: no type: anyone */
  assert_int_equal(run(&b, &p, 1, routing(FB_OVERLOAD_DROP_OLDEST, 60000)), 0);
  int32_t want[] = {0,
                    FB_OUTCOME_DLQ(FB_REASON_MISSING),
                    FB_OUTCOME_DLQ(FB_REASON_MALFORMED),
                    FB_OUTCOME_DLQ(FB_REASON_POISON),
                    FB_OUTCOME_DLQ(FB_REASON_POISON),
                    FB_OUTCOME_DLQ(FB_REASON_EXPIRED),
                    0,
                    FB_OUTCOME_DLQ(FB_REASON_NO_PROCESSOR),
                    0};
  for (size_t i = 0; i < b.n; i++) {
    if (b.outcome[i] != want[i])
      fail_msg("frame %zu: outcome %d, want %d", i, b.outcome[i], want[i]);
    assert_int_equal(b.held[i], FB_HOLD_NONE);
    assert_int_equal(b.order[i], i); /* no priorities: the read order */
  }
  assert_int_equal(FB_OUTCOME_REASON(b.outcome[5]), FB_REASON_EXPIRED);
  fb_proc_release(p);
}

static void unknown_deliveries_are_never_poison(void **state)
{
  struct fb_proc *p = test_proc("det-1", "person", NULL, 1);
  struct batch b = batch_init();
  add(&b, "frame_id", "a", NULL);
  b.deliveries[0] = 100;
  struct fb_snapshot *s = fb_snapshot_build(&p, 1, 1);
  struct fb_router *router;
  assert_int_equal(fb_router_create(&router, FB_STRATEGY_ROUND_ROBIN), 0);
  fb_router_begin(router, s, NOW_MS);
  struct fb_routing r = routing(FB_OVERLOAD_DROP_OLDEST, 0);
  struct fb_dispatch d = {.n = 1,
                          .frames = b.frames,
                          .deliveries = NULL,
                          .retry_sink = -1,
                          .outcome = b.outcome,
                          .held = b.held,
                          .order = b.order};
  fb_dispatch_run(&d, router, s, &r, 5, NOW_MS);
  assert_int_equal(b.outcome[0], 0);
  fb_router_destroy(router);
  fb_snapshot_release(s);
  fb_proc_release(p);
}

/* ============================================================ overload */

/* Every candidate full: what each policy does with the frame. */
static void overload_policies(void **state)
{
  struct fb_proc *p = test_proc_from_text(
      "{\"id\":\"tiny\",\"capabilities\":[\"person\"],\"capacity\":1,\"queue\":\"\","
      "\"max_queue\":1}");
  atomic_store(&p->live->queue_depth, 5);
  for (int policy = FB_OVERLOAD_DROP_OLDEST; policy <= FB_OVERLOAD_BLOCK; policy++) {
    struct batch b = batch_init();
    add(&b, "frame_id", "x", "detection_type", "person", NULL);
    add(&b, "frame_id", "y", "detection_type", "person", NULL);
    size_t trimmed = run(&b, &p, 1, routing((enum fb_overload_policy)policy, 0));
    for (size_t i = 0; i < b.n; i++) {
      switch (policy) {
      case FB_OVERLOAD_DROP_OLDEST: /* delivered, the cap trims */
        assert_int_equal(b.outcome[i], 0);
        assert_int_equal(b.held[i], FB_HOLD_NONE);
        break;
      case FB_OVERLOAD_REJECT:
        assert_int_equal(b.outcome[i], FB_OUTCOME_DLQ(FB_REASON_OVERLOADED));
        assert_int_equal(b.held[i], FB_HOLD_NONE);
        break;
      default: /* block: held, its target kept for later */
        assert_int_equal(b.outcome[i], 0);
        assert_int_equal(b.held[i], FB_HOLD_BLOCKED);
      }
    }
    assert_int_equal(trimmed, policy == FB_OVERLOAD_DROP_OLDEST ? 2 : 0);
  }
  fb_proc_release(p);
}

/* A frame seen before, when a sink drops what it already has (JetStream),
 * goes only to that sink's processors while one is alive: it may have
 * reached that sink already. Frames seen once route as usual; with no live
 * processor on that sink, anywhere. */
static void frames_seen_before_go_to_the_deduping_sink(void **state)
{
  struct fb_proc *procs[] = {
      test_proc_from_text("{\"id\":\"local\",\"capabilities\":[\"person\"],\"capacity\":4,"
                          "\"queue\":\"\"}"),
      test_proc_from_text("{\"id\":\"remote\",\"capabilities\":[\"person\"],\"capacity\":4,"
                          "\"queue\":\"\",\"transport\":\"nats\"}")};
  int local = 0, remote = 1; /* sorted by id */
  struct batch b = batch_init();
  b.retry_sink = FB_TRANSPORT_NATS;
  for (int i = 0; i < 6; i++)
    add(&b, "frame_id", "f", "detection_type", "person", NULL);
  b.deliveries[1] = b.deliveries[3] = b.deliveries[5] = 2;
  run(&b, procs, 2, routing(FB_OVERLOAD_DROP_OLDEST, 0));
  size_t to_local = 0;
  for (size_t i = 0; i < b.n; i++) {
    if (b.deliveries[i] > 1) assert_int_equal(b.outcome[i], remote);
    to_local += b.outcome[i] == local;
  }
  assert_true(to_local > 0); /* the others still take turns */

  struct batch all = batch_init(); /* held entries handed off again */
  all.retry_sink = FB_TRANSPORT_NATS;
  all.retried = true;
  for (int i = 0; i < 4; i++)
    add(&all, "frame_id", "g", "detection_type", "person", NULL);
  run(&all, procs, 2, routing(FB_OVERLOAD_DROP_OLDEST, 0));
  for (size_t i = 0; i < all.n; i++)
    assert_int_equal(all.outcome[i], remote);

  test_set_health(procs[remote], FB_HEALTH_DEAD); /* nobody there: anywhere */
  struct batch dead = batch_init();
  dead.retry_sink = FB_TRANSPORT_NATS;
  add(&dead, "frame_id", "h", "detection_type", "person", NULL);
  dead.deliveries[0] = 3;
  run(&dead, procs, 2, routing(FB_OVERLOAD_DROP_OLDEST, 0));
  assert_int_equal(dead.outcome[0], local);
  test_release_procs(procs, 2);
}

/* ============================================================== order */

static void higher_priority_first_and_stable(void **state)
{
  struct fb_proc *p = test_proc("det-1", "person", NULL, 1);
  struct batch b = batch_init();
  add(&b, "frame_id", "a", "priority", "1", NULL);
  add(&b, "frame_id", "b", NULL);
  add(&b, "frame_id", "c", "priority", "9", NULL);
  add(&b, "frame_id", "d", "priority", "1", NULL);
  add(&b, "frame_id", "e", "priority", "-3", NULL);
  run(&b, &p, 1, routing(FB_OVERLOAD_DROP_OLDEST, 0));
  uint32_t want[] = {2, 0, 3, 1, 4};
  for (size_t k = 0; k < b.n; k++)
    assert_int_equal(b.order[k], want[k]);
  fb_proc_release(p);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_reason_in_its_order),
      cmocka_unit_test(unknown_deliveries_are_never_poison),
      cmocka_unit_test(overload_policies),
      cmocka_unit_test(frames_seen_before_go_to_the_deduping_sink),
      cmocka_unit_test(higher_priority_first_and_stable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
