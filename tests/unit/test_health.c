/*
 * Unit tests for gateway/health.c: the heartbeat state machine (README: Health)
 * (healthy within interval x 1.5, stale when late, dead after the timeout
 * or on "stopping"). The clock is an argument: no sleeps. Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "framebuffer/health.h"

/* ============================================================== helpers */

#define T0       INT64_C(1700000000000) /* when the processor became known */
#define INTERVAL 30000
#define TIMEOUT  90000

/* A processor known since T0 with a 30 s interval and a 90 s timeout,
 * last heard from at `last` (0 = never), evaluated at `now`. */
static enum fb_health eval_at(int64_t now, int64_t last)
{
  struct fb_health_input in = {
      .now_ms = now,
      .last_heartbeat_ms = last,
      .known_since_ms = T0,
      .interval_ms = INTERVAL,
      .timeout_ms = TIMEOUT,
      .stopping = false,
  };
  return fb_health_eval(&in);
}

/* ================================================================ cases */

static void recent_heartbeat_is_healthy(void **state)
{
  int64_t hb = T0 + 1000;
  assert_int_equal(eval_at(hb, hb), FB_HEALTH_HEALTHY);
  assert_int_equal(eval_at(hb + INTERVAL, hb), FB_HEALTH_HEALTHY);
}

static void heartbeat_at_one_and_a_half_intervals_is_healthy(void **state)
{
  int64_t hb = T0 + 1000;
  assert_int_equal(eval_at(hb + INTERVAL * 3 / 2, hb), FB_HEALTH_HEALTHY);
}

static void late_heartbeat_is_stale(void **state)
{
  int64_t hb = T0 + 1000;
  assert_int_equal(eval_at(hb + INTERVAL * 3 / 2 + 1, hb), FB_HEALTH_STALE);
  assert_int_equal(eval_at(hb + TIMEOUT - 1, hb), FB_HEALTH_STALE);
}

static void silence_for_the_timeout_is_dead(void **state)
{
  int64_t hb = T0 + 1000;
  assert_int_equal(eval_at(hb + TIMEOUT, hb), FB_HEALTH_DEAD);
  assert_int_equal(eval_at(hb + 10 * TIMEOUT, hb), FB_HEALTH_DEAD);
}

static void new_registration_is_healthy_until_timeout(void **state)
{
  assert_int_equal(eval_at(T0, 0), FB_HEALTH_HEALTHY);
  /* No heartbeat yet is not "late": it stays healthy, not stale ... */
  assert_int_equal(eval_at(T0 + INTERVAL * 2, 0), FB_HEALTH_HEALTHY);
  assert_int_equal(eval_at(T0 + TIMEOUT - 1, 0), FB_HEALTH_HEALTHY);
  /* ... until its first timeout. */
  assert_int_equal(eval_at(T0 + TIMEOUT, 0), FB_HEALTH_DEAD);
}

static void stopping_is_dead_at_once(void **state)
{
  struct fb_health_input in = {
      .now_ms = T0 + 10,
      .last_heartbeat_ms = T0 + 10,
      .known_since_ms = T0,
      .interval_ms = INTERVAL,
      .timeout_ms = TIMEOUT,
      .stopping = true,
  };
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_DEAD);
  in.interval_ms = 0; /* even when not health-tracked */
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_DEAD);
}

static void interval_zero_is_not_tracked(void **state)
{
  struct fb_health_input in = {
      .now_ms = T0 + 100 * TIMEOUT,
      .last_heartbeat_ms = 0,
      .known_since_ms = T0,
      .interval_ms = 0,
      .timeout_ms = TIMEOUT,
  };
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_HEALTHY);
  in.last_heartbeat_ms = T0;
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_HEALTHY);
}

static void recovery_after_a_new_heartbeat(void **state)
{
  int64_t hb = T0 + 1000, now = hb + TIMEOUT + 5;
  assert_int_equal(eval_at(now, hb), FB_HEALTH_DEAD);
  assert_int_equal(eval_at(now, now), FB_HEALTH_HEALTHY);
}

static void short_interval_goes_stale_sooner(void **state)
{
  struct fb_health_input in = {
      .now_ms = T0 + 1600,
      .last_heartbeat_ms = T0,
      .known_since_ms = T0,
      .interval_ms = 1000,
      .timeout_ms = TIMEOUT,
  };
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_STALE);
  in.now_ms = T0 + 1500;
  assert_int_equal(fb_health_eval(&in), FB_HEALTH_HEALTHY);
}

static void heartbeat_from_the_future_is_healthy(void **state)
{
  /* A processor's clock ahead of ours must not make it stale or dead. */
  assert_int_equal(eval_at(T0 + 1000, T0 + 5000), FB_HEALTH_HEALTHY);
}

/* ================================================================ main */

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(recent_heartbeat_is_healthy),
      cmocka_unit_test(heartbeat_at_one_and_a_half_intervals_is_healthy),
      cmocka_unit_test(late_heartbeat_is_stale),
      cmocka_unit_test(silence_for_the_timeout_is_dead),
      cmocka_unit_test(new_registration_is_healthy_until_timeout),
      cmocka_unit_test(stopping_is_dead_at_once),
      cmocka_unit_test(interval_zero_is_not_tracked),
      cmocka_unit_test(recovery_after_a_new_heartbeat),
      cmocka_unit_test(short_interval_goes_stale_sooner),
      cmocka_unit_test(heartbeat_from_the_future_is_healthy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
