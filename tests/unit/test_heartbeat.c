/*
 * Unit tests for gateway/heartbeat.c: what a heartbeat may say (ids, the
 * subject's id, counts in range, statuses) and what recording it changes on
 * the processor. Single-threaded, no servers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "helpers.h"

static char why[256];

static int parse(struct fb_heartbeat *hb, const char *subject_id, const char *text)
{
  why[0] = '\0';
  return fb_heartbeat_parse(hb, subject_id, text, strlen(text), why, sizeof why);
}

static void assert_refused(const char *subject_id, const char *text, const char *message)
{
  struct fb_heartbeat hb;
  if (parse(&hb, subject_id, text) != -EINVAL) fail_msg("accepted: %s", text);
  assert_string_equal(why, message);
}

static void full_heartbeat_is_read(void **state)
{
  struct fb_heartbeat hb;
  assert_int_equal(parse(&hb, NULL,
                         "{\"processor_id\":\"obj-1\",\"status\":\"healthy\",\"timestamp\":1,"
                         "\"queue_depth\":7,\"in_flight\":2,\"capacity\":4,\"latency_ms\":3.5}"),
                   0);
  assert_string_equal(hb.id, "obj-1");
  assert_true(hb.has_depth);
  assert_int_equal(hb.queue_depth, 7);
  assert_int_equal(hb.in_flight, 2);
  assert_false(hb.stopping);
}

static void counts_may_be_absent_or_null(void **state)
{
  struct fb_heartbeat hb;
  assert_int_equal(parse(&hb, NULL, "{\"processor_id\":\"a\",\"queue_depth\":null}"), 0);
  assert_false(hb.has_depth);
  assert_int_equal(hb.in_flight, 0);
}

/* A count past int64 once wrapped a sum negative and drew every frame. */
static void counts_out_of_range_are_refused(void **state)
{
  assert_refused(NULL,
                 "{\"processor_id\":\"a\",\"queue_depth\":9223372036854775807,\"in_flight\":1}",
                 "queue_depth must be an integer from 0 to 1000000000");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"queue_depth\":1,\"in_flight\":1000000001}",
                 "in_flight must be an integer from 0 to 1000000000");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"queue_depth\":-1}",
                 "queue_depth must be an integer from 0 to 1000000000");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"in_flight\":\"3\"}",
                 "in_flight must be an integer from 0 to 1000000000");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"queue_depth\":2.5}",
                 "queue_depth must be an integer from 0 to 1000000000");
  struct fb_heartbeat hb;
  assert_int_equal(
      parse(&hb, NULL,
            "{\"processor_id\":\"a\",\"queue_depth\":1000000000,\"in_flight\":1000000000}"),
      0);
}

static void ids_are_checked(void **state)
{
  assert_refused(NULL, "[1]", "heartbeat is not a JSON object");
  assert_refused(NULL, "not json", "heartbeat is not a JSON object");
  assert_refused(NULL, "{\"status\":\"healthy\"}", "processor_id is required");
  assert_refused(NULL, "{\"processor_id\":7}", "processor_id must be a string");
  assert_refused(NULL, "{\"processor_id\":\"../x\"}", "processor_id is not a valid id");
  assert_refused("b", "{\"processor_id\":\"a\"}", "processor_id does not match the subject");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"status\":1}",
                 "status must be a string, one of healthy, degraded, unhealthy, stopping, ok");
  struct fb_heartbeat hb;
  assert_int_equal(parse(&hb, "from-subject", "{\"status\":\"stopping\"}"), 0);
  assert_string_equal(hb.id, "from-subject");
  assert_true(hb.stopping);
}

/* The old service's statuses, "stopping" and "ok" pass; anything else is
 * refused with the list; no status, or null, is fine. */
static void statuses_are_checked(void **state)
{
  static const char *const good[] = {"healthy", "degraded", "unhealthy", "stopping", "ok"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char text[128];
    snprintf(text, sizeof text, "{\"processor_id\":\"a\",\"status\":\"%s\"}", good[i]);
    struct fb_heartbeat hb;
    assert_int_equal(parse(&hb, NULL, text), 0);
    assert_int_equal(hb.stopping, !strcmp(good[i], "stopping"));
  }
  struct fb_heartbeat hb;
  assert_int_equal(parse(&hb, NULL, "{\"processor_id\":\"a\",\"status\":null}"), 0);
  assert_false(hb.stopping);
  assert_refused(NULL, "{\"processor_id\":\"a\",\"status\":\"great\"}",
                 "status \"great\" is not one of healthy, degraded, unhealthy, stopping, ok");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"status\":\"Healthy\"}",
                 "status \"Healthy\" is not one of healthy, degraded, unhealthy, stopping, ok");
  assert_refused(NULL, "{\"processor_id\":\"a\",\"status\":\"\"}",
                 "status \"\" is not one of healthy, degraded, unhealthy, stopping, ok");
  assert_false(fb_heartbeat_status_is_valid(NULL));
}

static void oversized_is_refused(void **state)
{
  static char big[FB_HEARTBEAT_MAX + 2];
  memset(big, ' ', sizeof big - 1);
  struct fb_heartbeat hb;
  assert_int_equal(fb_heartbeat_parse(&hb, NULL, big, sizeof big - 1, why, sizeof why), -EMSGSIZE);
  assert_string_equal(why, "heartbeat is larger than 8 KiB");
}

/* Recording: a remote processor's depth is what it says, in flight included;
 * a Redis one's stays what its stream says. */
static void record_updates_live_state(void **state)
{
  struct fb_registry *reg;
  static struct fb_metrics m;
  assert_int_equal(fb_registry_create(&reg), 0);
  struct fb_proc *rp = test_proc_from_text("{\"id\":\"remote\",\"capabilities\":[\"person\"],"
                                           "\"capacity\":4,\"queue\":\"\",\"transport\":\"nats\"}");
  struct fb_proc *lp = test_proc("local", "person", NULL, 1);
  fb_registry_put(reg, rp); /* borrowed: the registry takes its own reference */
  fb_registry_put(reg, lp);
  fb_proc_release(rp);
  fb_proc_release(lp);

  struct fb_heartbeat hb;
  assert_int_equal(
      parse(&hb, NULL, "{\"processor_id\":\"remote\",\"queue_depth\":5,\"in_flight\":2}"), 0);
  assert_int_equal(fb_heartbeat_record(reg, &m, &hb, 1234), 0);
  assert_int_equal(
      parse(&hb, NULL, "{\"processor_id\":\"local\",\"queue_depth\":50,\"in_flight\":1}"), 0);
  assert_int_equal(fb_heartbeat_record(reg, &m, &hb, 1235), 0);
  assert_int_equal(parse(&hb, NULL, "{\"processor_id\":\"nobody\"}"), 0);
  assert_int_equal(fb_heartbeat_record(reg, &m, &hb, 1236), -ENOENT);

  struct fb_snapshot *s = fb_registry_snapshot(reg);
  const struct fb_proc_live *remote = s->procs[fb_snapshot_find(s, "remote")]->live;
  const struct fb_proc_live *local = s->procs[fb_snapshot_find(s, "local")]->live;
  assert_int_equal(atomic_load(&remote->queue_depth), 7);
  assert_int_equal(atomic_load(&remote->in_flight), 2);
  assert_int_equal(atomic_load(&remote->last_heartbeat_ms), 1234);
  assert_int_equal(atomic_load(&local->queue_depth), 0);
  assert_int_equal(atomic_load(&local->in_flight), 1);
  assert_int_equal(atomic_load(&m.heartbeats), 2);
  fb_snapshot_release(s);
  fb_registry_destroy(reg);
}

int main(void)
{
  fb_log_setup(FB_LOG_ERROR, FB_LOG_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(full_heartbeat_is_read),
      cmocka_unit_test(counts_may_be_absent_or_null),
      cmocka_unit_test(counts_out_of_range_are_refused),
      cmocka_unit_test(ids_are_checked),
      cmocka_unit_test(statuses_are_checked),
      cmocka_unit_test(oversized_is_refused),
      cmocka_unit_test(record_updates_live_state),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
