/*
 * Unit tests for the fleet's pure parts: merging replica records into the
 * fleet view (gateway/fleet.c: fb_fleet_merge) and the routing settings'
 * PUT bodies and change descriptions (gateway/settings.c). Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "framebuffer/fleet.h"
#include "framebuffer/metrics.h"
#include "framebuffer/settings.h"

/* ============================================================== helpers */

/* A record as fb_fleet_record makes it, with `fast` observations in the
 * 0.1 ms bucket and `slow` in the 1 s bucket. */
static json_t *record(const char *name, int64_t in, int64_t consumed, int64_t published,
                      uint64_t fast, uint64_t slow, const char *proc, int64_t routed)
{
  json_t *buckets = json_array();
  for (int b = 0; b <= FB_HIST_BUCKETS; b++)
    json_array_append_new(buckets, json_integer(b == 0    ? (json_int_t)fast
                                                : b == 12 ? (json_int_t)slow
                                                          : 0));
  return json_pack("{s:s,s:s,s:I,s:I,s:{s:b,s:b,s:s},s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I},s:{s:I},"
                   "s:{s:o,s:I},s:{s:[I,I]}}",
                   "consumer", name, "version", "2.0.0", "started_ms",
                   (json_int_t)(published - 60000), "published_ms", (json_int_t)published,
                   "connections", "redis", 1, "group", 1, "nats", "disabled", "in_per_s",
                   (json_int_t)in, "out_per_s", (json_int_t)in, "consumed", (json_int_t)consumed,
                   "distributed", (json_int_t)consumed, "blocked", (json_int_t)0, "dropped",
                   "expired", (json_int_t)2, "trimmed", (json_int_t)1, "dlq", "expired",
                   (json_int_t)2, "latency", "buckets", buckets, "sum_ns",
                   (json_int_t)(fast * 50000 + slow * 900000000), "processors", proc,
                   (json_int_t)routed, (json_int_t)(routed / 10));
}

static json_int_t geti(const json_t *o, const char *k)
{
  const json_t *v = json_object_get(o, k);
  if (!json_is_integer(v)) fail_msg("%s is not an integer", k);
  return json_integer_value(v);
}

/* ================================================================ merge */

static void merge_adds_up_the_replicas(void **state)
{
  json_t *recs[2] = {record("b", 300, 9000, 1000000, 90, 10, "p1", 700),
                     record("a", 100, 1000, 1000000, 100, 0, "p1", 300)};
  json_t *v = fb_fleet_merge(recs, 2, 1002000, "a");
  json_t *fleet = json_object_get(v, "fleet"), *list = json_object_get(v, "replicas");
  assert_int_equal(geti(fleet, "replicas"), 2);
  assert_int_equal(geti(fleet, "in_per_s"), 400);
  assert_int_equal(geti(fleet, "consumed"), 10000);
  assert_int_equal(geti(json_object_get(fleet, "dropped"), "expired"), 4);
  assert_int_equal(geti(json_object_get(fleet, "dropped"), "trimmed"), 2);
  assert_int_equal(geti(json_object_get(fleet, "dlq"), "expired"), 4);
  /* sorted by name, `self` marked, ages from now */
  assert_int_equal(json_array_size(list), 2);
  json_t *a = json_array_get(list, 0), *b = json_array_get(list, 1);
  assert_string_equal(json_string_value(json_object_get(a, "consumer")), "a");
  assert_true(json_is_true(json_object_get(a, "self")));
  assert_true(json_is_false(json_object_get(b, "self")));
  assert_int_equal(geti(b, "age_ms"), 2000);
  assert_int_equal(geti(b, "last_seen_ms"), 1000000);
  assert_int_equal(geti(b, "uptime_s"), 62);
  assert_int_equal(geti(b, "consumed"), 9000);
  /* processors summed over the replicas */
  json_t *p1 = json_object_get(json_object_get(v, "processors"), "p1");
  assert_int_equal(json_integer_value(json_array_get(p1, 0)), 1000);
  assert_int_equal(json_integer_value(json_array_get(p1, 1)), 100);
  json_decref(v);
  json_decref(recs[0]);
  json_decref(recs[1]);
}

/* The fleet's quantiles come from the added buckets, not from averaging
 * the replicas' quantiles: 190 fast and 10 slow frames put p99 in the slow
 * bucket although replica a alone never saw a slow one. */
static void merge_quantiles_come_from_merged_buckets(void **state)
{
  json_t *recs[2] = {record("a", 1, 1, 5000, 100, 0, "p", 1),
                     record("b", 1, 1, 5000, 90, 10, "p", 1)};
  json_t *v = fb_fleet_merge(recs, 2, 5000, NULL);
  uint64_t buckets[FB_HIST_BUCKETS + 1] = {0};
  buckets[0] = 190;
  buckets[12] = 10;
  json_t *lat = json_object_get(json_object_get(v, "fleet"), "routing_latency_ms");
  assert_true(fabs(json_real_value(json_object_get(lat, "p99")) -
                   fb_buckets_quantile(buckets, 0.99) * 1000) < 1e-9);
  assert_true(json_real_value(json_object_get(lat, "p99")) > 500.0);
  assert_true(json_real_value(json_object_get(lat, "p50")) <= 0.1);
  json_t *a = json_array_get(json_object_get(v, "replicas"), 0);
  assert_true(json_real_value(json_object_get(json_object_get(a, "routing_latency_ms"), "p99")) <=
              0.1);
  json_decref(v);
  json_decref(recs[0]);
  json_decref(recs[1]);
}

static void merge_skips_what_is_not_a_record(void **state)
{
  json_t *recs[3] = {json_string("garbage"), json_pack("{s:i}", "consumer", 5),
                     record("only", 7, 70, 100, 1, 0, "p", 1)};
  json_t *v = fb_fleet_merge(recs, 3, 100, "only");
  assert_int_equal(geti(json_object_get(v, "fleet"), "replicas"), 1);
  assert_int_equal(geti(json_object_get(v, "fleet"), "in_per_s"), 7);
  json_decref(v);
  v = fb_fleet_merge(NULL, 0, 100, NULL);
  assert_int_equal(geti(json_object_get(v, "fleet"), "replicas"), 0);
  assert_int_equal(geti(json_object_get(v, "fleet"), "in_per_s"), 0);
  assert_int_equal(json_array_size(json_object_get(v, "replicas")), 0);
  json_decref(v);
  for (int i = 0; i < 3; i++)
    json_decref(recs[i]);
}

/* ============================================================= settings */

/* NULL, or what is wrong with `text` (valid until the next call). */
static const char *patch(const char *text, struct fb_routing_patch *p)
{
  static char why[300];
  json_t *doc = json_loads(text, 0, NULL);
  assert_non_null(doc);
  int rc = fb_routing_patch_from_json(doc, p, why, sizeof why);
  json_decref(doc);
  if (rc) assert_int_equal(rc, -EINVAL);
  return rc ? why : NULL;
}

static void patch_takes_only_what_is_given(void **state)
{
  struct fb_routing_patch p;
  assert_null(patch("{\"strategy\":\"consistent_hash\",\"hash_bound\":1.5}", &p));
  assert_true(p.set[FB_SET_STRATEGY] && p.set[FB_SET_HASH_BOUND]);
  assert_false(p.set[FB_SET_OVERLOAD_POLICY] || p.set[FB_SET_FRAME_MAX_AGE_MS] ||
               p.set[FB_SET_SLOW_START_MS]);
  assert_int_equal(p.v.strategy, FB_STRATEGY_CONSISTENT_HASH);
  assert_true(p.v.hash_bound == 1.5);
  /* A GET's answer can be PUT back: its read-only members are ignored. */
  assert_null(patch("{\"overload_policy\":\"block\",\"generation\":4,\"source\":{},"
                    "\"updated_by\":\"x\",\"strategies\":[]}",
                    &p));
  assert_true(p.set[FB_SET_OVERLOAD_POLICY]);
  assert_int_equal(p.v.overload_policy, FB_OVERLOAD_BLOCK);
}

static void patch_refuses_bad_values(void **state)
{
  struct fb_routing_patch p;
  const char *bad[] = {"{}",
                       "{\"strategy\":\"random\"}",
                       "{\"strategy\":1}",
                       "{\"overload_policy\":\"drop\"}",
                       "{\"frame_max_age_ms\":-1}",
                       "{\"slow_start_ms\":1.5}",
                       "{\"hash_bound\":0.99}",
                       "{\"hash_bound\":\"2\"}",
                       "{\"hash_bound\":101}",
                       "{\"strategy\":\"round_robin\",\"stratgy\":\"x\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (!patch(bad[i], &p)) fail_msg("%s was accepted", bad[i]);
}

/* The messages a 422 carries, word for word: clients and tests read them. */
static void patch_messages_are_stable(void **state)
{
  struct fb_routing_patch p;
  assert_string_equal(patch("{\"strategy\":\"random\"}", &p),
                      "strategy must be one of round_robin, weighted_round_robin, least_loaded, "
                      "consistent_hash");
  assert_string_equal(patch("{\"overload_policy\":1}", &p),
                      "overload_policy must be one of drop_oldest, reject, block");
  assert_string_equal(patch("{\"slow_start_ms\":-1}", &p),
                      "frame_max_age_ms and slow_start_ms must be integers >= 0 (0 = off)");
  assert_string_equal(patch("{\"hash_bound\":0}", &p),
                      "hash_bound must be a number between 1.0 and 100");
  assert_string_equal(patch("{}", &p), "no routing setting given (strategy, overload_policy, "
                                       "frame_max_age_ms, slow_start_ms, hash_bound)");
  assert_string_equal(patch("{\"stratgy\":1}", &p),
                      "unknown routing setting (strategy, overload_policy, frame_max_age_ms, "
                      "slow_start_ms, hash_bound)");
}

static void diff_says_what_changed(void **state)
{
  struct fb_routing a = {FB_STRATEGY_LEAST_LOADED, FB_OVERLOAD_DROP_OLDEST, 0, 0, 1.25};
  struct fb_routing b = a;
  char out[200];
  fb_routing_diff(&a, &b, out, sizeof out);
  assert_string_equal(out, "");
  b.strategy = FB_STRATEGY_CONSISTENT_HASH;
  b.hash_bound = 1.5;
  b.frame_max_age_ms = 2000;
  fb_routing_diff(&a, &b, out, sizeof out);
  assert_string_equal(out, "strategy least_loaded -> consistent_hash, frame_max_age_ms 0 -> 2000, "
                           "hash_bound 1.25 -> 1.5");
  char small[20];
  fb_routing_diff(&a, &b, small, sizeof small); /* cut, never overrun */
  assert_true(strlen(small) < sizeof small);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(merge_adds_up_the_replicas),
      cmocka_unit_test(merge_quantiles_come_from_merged_buckets),
      cmocka_unit_test(merge_skips_what_is_not_a_record),
      cmocka_unit_test(patch_takes_only_what_is_given),
      cmocka_unit_test(patch_refuses_bad_values),
      cmocka_unit_test(patch_messages_are_stable),
      cmocka_unit_test(diff_says_what_changed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
