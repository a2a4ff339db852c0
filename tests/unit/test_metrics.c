/*
 * Unit tests for gateway/metrics.c: histogram buckets and quantile
 * estimates from known observations, rates, and the Prometheus text (README:
 * Metrics): the series the old dashboards read and every other one.
 * Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/metrics.h"
#include "framebuffer/redis.h"
#include "helpers.h"

/* ============================================================== helpers */

#define MS(x) ((uint64_t)((x)*1000000.0)) /* milliseconds to ns */

static void assert_near(double got, double want)
{
  if (fabs(got - want) > 1e-9) fail_msg("got %.12g, want %.12g", got, want);
}

static struct fb_histogram *new_histogram(void)
{
  struct fb_histogram *h = calloc(1, sizeof *h);
  assert_non_null(h);
  return h;
}

/* Renders `m` with processors `s` into a new string (caller frees). */
static char *render(const struct fb_metrics *m, const struct fb_snapshot *s, bool nats)
{
  struct fb_buf b;
  fb_buf_init(&b, 1 << 20);
  assert_int_equal(fb_metrics_render(m, s, nats, &b), 0);
  char *text = strdup(fb_buf_cstr(&b));
  fb_buf_free(&b);
  assert_non_null(text);
  return text;
}

static void assert_has(const char *text, const char *needle)
{
  if (!strstr(text, needle)) fail_msg("metrics lack '%s'", needle);
}

static void assert_lacks(const char *text, const char *needle)
{
  if (strstr(text, needle)) fail_msg("metrics unexpectedly have '%s'", needle);
}

/* Two processors: p1 (redis, healthy), p2 (nats, stale). */
static struct fb_snapshot *two_processors(void)
{
  struct fb_proc *procs[] = {
      test_proc("p1", "person", NULL, 1),
      test_proc_from_text("{\"id\":\"p2\",\"capabilities\":[\"person\"],\"capacity\":1,"
                          "\"queue\":\"\",\"transport\":\"nats\"}"),
  };
  atomic_store(&procs[0]->live->frames_routed, 11);
  atomic_store(&procs[0]->live->queue_depth, 4);
  atomic_store(&procs[1]->live->frames_routed, 22);
  test_set_health(procs[1], FB_HEALTH_STALE);
  struct fb_snapshot *s = fb_snapshot_build(procs, 2, 1);
  test_release_procs(procs, 2);
  assert_non_null(s);
  return s;
}

/* ============================================================ histogram */

static void reason_names(void **state)
{
  assert_string_equal(fb_reason_name(FB_REASON_MALFORMED), "malformed");
  assert_string_equal(fb_reason_name(FB_REASON_NO_PROCESSOR), "no_processor");
  assert_string_equal(fb_reason_name(FB_REASON_EXPIRED), "expired");
  assert_string_equal(fb_reason_name(FB_REASON_OVERLOADED), "overloaded");
  assert_string_equal(fb_reason_name(FB_REASON_POISON), "poison");
  assert_string_equal(fb_reason_name(FB_REASON_COUNT), "unknown");
}

static void empty_histogram_quantile_is_zero(void **state)
{
  struct fb_histogram *h = new_histogram();
  assert_near(fb_histogram_quantile(h, 0.5), 0);
  assert_near(fb_histogram_quantile(h, 0.99), 0);
  free(h);
}

static void observe_counts_and_sums(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, MS(2), 1);
  fb_histogram_observe(h, MS(3), 10);
  assert_int_equal(atomic_load(&h->count), 11);
  assert_int_equal(atomic_load(&h->sum_ns), MS(2) + 10 * MS(3));
  /* 2 ms and 3 ms: buckets le=0.0025 (index 4) and le=0.005 (index 5). */
  assert_int_equal(atomic_load(&h->buckets[4]), 1);
  assert_int_equal(atomic_load(&h->buckets[5]), 10);
  free(h);
}

static void value_on_a_bound_is_in_that_bucket(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, MS(1), 1); /* le="0.001" is inclusive */
  assert_int_equal(atomic_load(&h->buckets[3]), 1);
  assert_near(fb_histogram_quantile(h, 1.0), 0.001);
  free(h);
}

static void quantile_interpolates_within_bucket(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, MS(1.5), 100); /* all in (0.001, 0.0025] */
  assert_near(fb_histogram_quantile(h, 0.5), 0.001 + 0.0015 * 0.5);
  assert_near(fb_histogram_quantile(h, 0.9), 0.001 + 0.0015 * 0.9);
  assert_near(fb_histogram_quantile(h, 1.0), 0.0025);
  free(h);
}

static void quantile_across_buckets(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, MS(0.2), 50); /* (0.0001, 0.00025] */
  fb_histogram_observe(h, MS(20), 50);  /* (0.01, 0.025] */
  assert_near(fb_histogram_quantile(h, 0.25), 0.0001 + 0.00015 * 0.5);
  assert_near(fb_histogram_quantile(h, 0.5), 0.00025);
  assert_near(fb_histogram_quantile(h, 0.75), 0.01 + 0.015 * 0.5);
  assert_near(fb_histogram_quantile(h, 0.99), 0.01 + 0.015 * 0.98);
  free(h);
}

static void quantile_of_first_bucket_starts_at_zero(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, 50000, 10); /* 50 us, le=0.0001 */
  assert_near(fb_histogram_quantile(h, 0.5), 0.00005);
  free(h);
}

static void quantile_beyond_last_bound_is_capped(void **state)
{
  struct fb_histogram *h = new_histogram();
  fb_histogram_observe(h, MS(10000), 5); /* 10 s: +Inf bucket */
  assert_int_equal(atomic_load(&h->buckets[FB_HIST_BUCKETS]), 5);
  assert_near(fb_histogram_quantile(h, 0.5), fb_hist_bounds[FB_HIST_BUCKETS - 1]);
  free(h);
}

static void quantiles_are_monotonic(void **state)
{
  struct fb_histogram *h = new_histogram();
  const double ms[] = {0.05, 0.3, 0.7, 1.2, 4, 9, 30, 70, 200, 400, 900, 2000, 5000};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
    fb_histogram_observe(h, MS(ms[i]), i + 1);
  double prev = 0;
  for (int q = 1; q <= 100; q++) {
    double v = fb_histogram_quantile(h, q / 100.0);
    assert_true(v >= prev);
    prev = v;
  }
  free(h);
}

static void bounds_are_increasing(void **state)
{
  for (int b = 1; b < FB_HIST_BUCKETS; b++)
    assert_true(fb_hist_bounds[b] > fb_hist_bounds[b - 1]);
}

/* ================================================================ rates */

static void tick_computes_rates(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  assert_non_null(m);
  fb_metrics_init(m);
  assert_int_equal(atomic_load(&m->consumer_lag), -1);
  fb_metrics_tick(m, 10000);
  atomic_store(&m->frames_consumed, 500);
  atomic_store(&m->frames_distributed, 250);
  fb_metrics_tick(m, 12000); /* 2 s later */
  assert_int_equal(atomic_load(&m->rate_in), 250);
  assert_int_equal(atomic_load(&m->rate_out), 125);
  free(m);
}

/* ============================================================ rendering */

static void render_has_spec_metric_names(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_snapshot *s = two_processors();
  char *text = render(m, s, true);
  const char *names[] = {
      "frame_buffer_frames_consumed_total",
      "frame_buffer_consumer_lag",
      "frame_buffer_routing_duration_seconds",
      "frame_buffer_frames_distributed_total",
      "frame_buffer_frames_dropped_total",
      "frame_buffer_dlq_total",
      "frame_buffer_queue_depth",
      "frame_buffer_processors",
      "frame_buffer_heartbeats_total",
      "frame_buffer_redis_up",
      "frame_buffer_nats_up",
  };
  char line[160];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(line, sizeof line, "# TYPE %s ", names[i]);
    assert_has(text, line);
    snprintf(line, sizeof line, "# HELP %s ", names[i]);
    assert_has(text, line);
  }
  assert_has(text, "# TYPE frame_buffer_frames_consumed_total counter\n");
  assert_has(text, "# TYPE frame_buffer_consumer_lag gauge\n");
  assert_has(text, "# TYPE frame_buffer_routing_duration_seconds histogram\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

static void render_counter_values(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  atomic_store(&m->frames_consumed, 42);
  atomic_store(&m->consumer_lag, 7);
  atomic_store(&m->heartbeats, 3);
  atomic_store(&m->redis_up, 1);
  atomic_store(&m->dropped[FB_REASON_EXPIRED], 5);
  atomic_store(&m->dlq[FB_REASON_POISON], 2);
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  char *text = render(m, s, false);
  assert_has(text, "\nframe_buffer_frames_consumed_total 42\n");
  assert_has(text, "\nframe_buffer_consumer_lag 7\n");
  assert_has(text, "\nframe_buffer_heartbeats_total 3\n");
  assert_has(text, "\nframe_buffer_redis_up 1\n");
  assert_has(text, "\nframe_buffer_frames_dropped_total{reason=\"expired\"} 5\n");
  assert_has(text, "\nframe_buffer_dlq_total{reason=\"poison\"} 2\n");
  assert_has(text, "\nframe_buffer_dlq_total{reason=\"malformed\"} 0\n");
  assert_has(text, "\nframe_buffer_dlq_total{reason=\"no_processor\"} 0\n");
  assert_has(text, "\nframe_buffer_dlq_total{reason=\"expired\"} 0\n");
  assert_has(text, "\nframe_buffer_dlq_total{reason=\"overloaded\"} 0\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

static void render_nats_up_only_with_nats(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  char *text = render(m, s, false);
  assert_lacks(text, "frame_buffer_nats_up");
  free(text);
  atomic_store(&m->nats_up, 1);
  text = render(m, s, true);
  assert_has(text, "\nframe_buffer_nats_up 1\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

static void render_processor_series(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_snapshot *s = two_processors();
  char *text = render(m, s, true);
  assert_has(text,
             "\nframe_buffer_frames_distributed_total{processor_id=\"p1\",transport=\"redis\"} "
             "11\n");
  assert_has(text,
             "\nframe_buffer_frames_distributed_total{processor_id=\"p2\",transport=\"nats\"} "
             "22\n");
  assert_has(text, "\nframe_buffer_queue_depth{processor_id=\"p1\"} 4\n");
  assert_has(text, "\nframe_buffer_queue_depth{processor_id=\"p2\"} 0\n");
  assert_has(text, "\nframe_buffer_processors{status=\"healthy\"} 1\n");
  assert_has(text, "\nframe_buffer_processors{status=\"stale\"} 1\n");
  assert_has(text, "\nframe_buffer_processors{status=\"dead\"} 0\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

static void render_histogram_is_cumulative(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  fb_histogram_observe(&m->routing, MS(0.2), 2);
  fb_histogram_observe(&m->routing, MS(3), 3);
  fb_histogram_observe(&m->routing, MS(10000), 1);
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  char *text = render(m, s, false);
  const char *hn = "frame_buffer_routing_duration_seconds";
  char line[160];
  snprintf(line, sizeof line, "\n%s_bucket{le=\"0.0001\"} 0\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_bucket{le=\"0.00025\"} 2\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_bucket{le=\"0.005\"} 5\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_bucket{le=\"2.5\"} 5\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_bucket{le=\"+Inf\"} 6\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_count 6\n", hn);
  assert_has(text, line);
  snprintf(line, sizeof line, "\n%s_sum 10.009400000\n", hn);
  assert_has(text, line);
  free(text);
  fb_snapshot_release(s);
  free(m);
}

/* Per processor: its health as a state set, its last heartbeat once there
 * is one, its max_queue and capacity. */
static void render_processor_state_and_registration(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_snapshot *s = two_processors();
  atomic_store(&s->procs[0]->live->last_heartbeat_ms, 1700000000123);
  char *text = render(m, s, true);
  assert_has(text, "\nframe_buffer_processor_state{processor_id=\"p1\",state=\"healthy\"} 1\n");
  assert_has(text, "\nframe_buffer_processor_state{processor_id=\"p1\",state=\"stale\"} 0\n");
  assert_has(text, "\nframe_buffer_processor_state{processor_id=\"p2\",state=\"stale\"} 1\n");
  assert_has(text, "\nframe_buffer_processor_state{processor_id=\"p2\",state=\"dead\"} 0\n");
  assert_has(text, "\nframe_buffer_processor_last_heartbeat_time_seconds{processor_id=\"p1\"} "
                   "1700000000.123\n");
  assert_lacks(text, "frame_buffer_processor_last_heartbeat_time_seconds{processor_id=\"p2\"}");
  assert_has(text, "\nframe_buffer_processor_max_queue{processor_id=\"p1\"} 10000\n");
  assert_has(text, "\nframe_buffer_processor_capacity{processor_id=\"p2\"} 1\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

/* HTTP requests by route template and code, with a latency histogram;
 * codes beyond what a route keeps are dropped, not misfiled. */
static void http_requests_by_route_and_code(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  const char *tpl = "/api/v1/processors/{id}";
  fb_metrics_http_observe(m, tpl, 404, MS(0.2));
  fb_metrics_http_observe(m, tpl, 404, MS(0.2));
  fb_metrics_http_observe(m, tpl, 200, MS(3));
  fb_metrics_http_observe(m, "other", 404, MS(0.05));
  for (int code = 500; code < 500 + FB_HTTP_CODES_MAX + 4; code++)
    fb_metrics_http_observe(m, "/metrics", code, MS(1));
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  char *text = render(m, s, false);
  assert_has(text, "\nframe_buffer_http_requests_total{route=\"/api/v1/processors/{id}\","
                   "code=\"404\"} 2\n");
  assert_has(text, "\nframe_buffer_http_requests_total{route=\"/api/v1/processors/{id}\","
                   "code=\"200\"} 1\n");
  assert_has(text, "\nframe_buffer_http_requests_total{route=\"other\",code=\"404\"} 1\n");
  assert_has(text, "# TYPE frame_buffer_http_request_duration_seconds histogram\n");
  assert_has(text, "\nframe_buffer_http_request_duration_seconds_bucket{route=\"/api/v1/"
                   "processors/{id}\",le=\"0.00025\"} 2\n");
  assert_has(text, "\nframe_buffer_http_request_duration_seconds_bucket{route=\"/api/v1/"
                   "processors/{id}\",le=\"+Inf\"} 3\n");
  assert_has(text, "\nframe_buffer_http_request_duration_seconds_count{route=\"/api/v1/"
                   "processors/{id}\"} 3\n");
  assert_has(text, "\nframe_buffer_http_request_duration_seconds_count{route=\"/metrics\"} 20\n");
  assert_lacks(text, "code=\"516\"");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

/* The gateway's own series: build, process, reconnects per connection name,
 * the DLQ's length once read, the dashboard's clients. */
static void render_process_build_and_connections(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_redis_endpoint ep = {.host = "127.0.0.1", .port = 1};
  struct fb_redis conn;
  fb_redis_init(&conn, &ep, "unit-test", 0);
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  char *text = render(m, s, false);
  assert_has(text, "\nframe_buffer_build_info{version=\"" FB_VERSION "\"} 1\n");
  assert_has(text, "# TYPE process_cpu_seconds_total counter\n");
  assert_has(text, "# TYPE process_resident_memory_bytes gauge\n");
  assert_has(text, "# TYPE process_open_fds gauge\n");
  assert_has(text, "# TYPE process_max_fds gauge\n");
  assert_has(text, "# TYPE process_start_time_seconds gauge\n");
  assert_has(text, "\nframe_buffer_redis_reconnects_total{connection=\"unit-test\"} 0\n");
  assert_has(text, "\nframe_buffer_dashboard_clients 0\n");
  assert_lacks(text, "frame_buffer_dlq_length"); /* not read yet */
  free(text);
  atomic_store(&m->dlq_length, 12);
  atomic_store(&m->dashboard_clients, 2);
  text = render(m, s, false);
  assert_has(text, "\nframe_buffer_dlq_length 12\n");
  assert_has(text, "\nframe_buffer_dashboard_clients 2\n");
  free(text);
  fb_snapshot_release(s);
  free(m);
}

/* Every sample line is `name[{labels}] value`, and every name has a TYPE. */
static void render_is_valid_exposition_text(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  fb_histogram_observe(&m->routing, MS(1), 1);
  fb_metrics_http_observe(m, "/api/v1/processors/{id}", 200, MS(1));
  struct fb_snapshot *s = two_processors();
  char *text = render(m, s, true);
  assert_true(strlen(text) > 0);
  assert_int_equal(text[strlen(text) - 1], '\n');
  char *save = NULL;
  for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
    if (l[0] == '#') {
      assert_true(!strncmp(l, "# HELP ", 7) || !strncmp(l, "# TYPE ", 7));
      continue;
    }
    const char *p = l;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
      p++;
    assert_true(p > l);
    if (*p == '{') { /* name="value" pairs; a value may hold '}' */
      bool quoted = false;
      for (p++; *p && (quoted || *p != '}'); p++)
        if (*p == '"' && p[-1] != '\\') quoted = !quoted;
      if (*p != '}') fail_msg("unterminated labels: %s", l);
      p++;
    }
    if (*p != ' ') fail_msg("no space before the value: %s", l);
    char *end;
    strtod(p + 1, &end);
    if (end == p + 1 || *end) fail_msg("bad value: %s", l);
  }
  free(text);
  fb_snapshot_release(s);
  free(m);
}

static void render_into_small_buffer_fails(void **state)
{
  struct fb_metrics *m = calloc(1, sizeof *m);
  fb_metrics_init(m);
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 1);
  struct fb_buf b;
  fb_buf_init(&b, 256);
  assert_true(fb_metrics_render(m, s, true, &b) < 0);
  assert_true(b.truncated);
  fb_buf_free(&b);
  fb_snapshot_release(s);
  free(m);
}

/* ================================================================ main */

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(reason_names),
      cmocka_unit_test(empty_histogram_quantile_is_zero),
      cmocka_unit_test(observe_counts_and_sums),
      cmocka_unit_test(value_on_a_bound_is_in_that_bucket),
      cmocka_unit_test(quantile_interpolates_within_bucket),
      cmocka_unit_test(quantile_across_buckets),
      cmocka_unit_test(quantile_of_first_bucket_starts_at_zero),
      cmocka_unit_test(quantile_beyond_last_bound_is_capped),
      cmocka_unit_test(quantiles_are_monotonic),
      cmocka_unit_test(bounds_are_increasing),
      cmocka_unit_test(tick_computes_rates),
      cmocka_unit_test(render_has_spec_metric_names),
      cmocka_unit_test(render_counter_values),
      cmocka_unit_test(render_nats_up_only_with_nats),
      cmocka_unit_test(render_processor_series),
      cmocka_unit_test(render_histogram_is_cumulative),
      cmocka_unit_test(render_processor_state_and_registration),
      cmocka_unit_test(http_requests_by_route_and_code),
      cmocka_unit_test(render_process_build_and_connections),
      cmocka_unit_test(render_is_valid_exposition_text),
      cmocka_unit_test(render_into_small_buffer_fails),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
