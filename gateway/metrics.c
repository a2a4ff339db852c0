/*
 * Metrics: lock-free counters and the Prometheus text rendering.
 * Updated from every thread; rendered on the HTTP thread, which also reads
 * the process's figures from /proc while rendering.
 */
#include "framebuffer/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "framebuffer/redis.h"

static const char *const reason_names[FB_REASON_COUNT] = {
    "malformed", "no_processor", "expired", "overloaded", "poison", "missing", "trimmed"};

const char *fb_reason_name(enum fb_reason r)
{
  return (unsigned)r < FB_REASON_COUNT ? reason_names[r] : "unknown";
}

static const char *const skip_names[FB_SKIP_COUNT] = {"malformed", "replay_max", "gone",
                                                      "too_large"};

const char *fb_replay_skip_name(enum fb_replay_skip c)
{
  return (unsigned)c < FB_SKIP_COUNT ? skip_names[c] : "unknown";
}

const double fb_hist_bounds[FB_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5};

void fb_metrics_init(struct fb_metrics *m)
{
  memset(m, 0, sizeof *m);
  atomic_store(&m->consumer_lag, -1);
  atomic_store(&m->input_pending, -1);
  atomic_store(&m->dlq_length, -1);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  m->started_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fb_metrics_tick(struct fb_metrics *m, int64_t now_ms)
{
  uint64_t in = atomic_load(&m->frames_consumed), out = atomic_load(&m->frames_distributed);
  if (m->tick_ms && now_ms > m->tick_ms) {
    int64_t dt = now_ms - m->tick_ms;
    atomic_store(&m->rate_in, (int64_t)((in - m->tick_in) * 1000 / (uint64_t)dt));
    atomic_store(&m->rate_out, (int64_t)((out - m->tick_out) * 1000 / (uint64_t)dt));
  }
  m->tick_in = in;
  m->tick_out = out;
  m->tick_ms = now_ms;
}

void fb_histogram_observe(struct fb_histogram *h, uint64_t ns, uint64_t count)
{
  double sec = (double)ns / 1e9;
  int b = 0;
  while (b < FB_HIST_BUCKETS && sec > fb_hist_bounds[b])
    b++;
  atomic_fetch_add_explicit(&h->buckets[b], count, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, count, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum_ns, ns * count, memory_order_relaxed);
}

double fb_histogram_quantile(const struct fb_histogram *h, double q)
{
  uint64_t b[FB_HIST_BUCKETS + 1];
  for (int i = 0; i <= FB_HIST_BUCKETS; i++)
    b[i] = atomic_load(&h->buckets[i]);
  return fb_buckets_quantile(b, q);
}

double fb_buckets_quantile(const uint64_t *buckets, double q)
{
  uint64_t total = 0;
  for (int b = 0; b <= FB_HIST_BUCKETS; b++)
    total += buckets[b];
  if (!total) return 0;
  double rank = q * (double)total, seen = 0, lower = 0;
  for (int b = 0; b <= FB_HIST_BUCKETS; b++) {
    double c = (double)buckets[b];
    double upper = b < FB_HIST_BUCKETS ? fb_hist_bounds[b] : fb_hist_bounds[FB_HIST_BUCKETS - 1];
    if (seen + c >= rank && c > 0) return lower + (upper - lower) * ((rank - seen) / c);
    seen += c;
    lower = upper;
  }
  return fb_hist_bounds[FB_HIST_BUCKETS - 1];
}

void fb_metrics_http_observe(struct fb_metrics *m, const char *route, int code, uint64_t ns)
{
  struct fb_http_route_metrics *r = NULL;
  for (int i = 0; i < FB_HTTP_ROUTES_MAX && !r; i++) {
    const char *have = atomic_load(&m->http[i].route);
    if (!have) atomic_store(&m->http[i].route, have = route); /* one writer: no race */
    if (have == route || !strcmp(have, route)) r = &m->http[i];
  }
  if (!r) return; /* more routes than slots: cannot happen with the API's table */
  for (int k = 0; k < FB_HTTP_CODES_MAX; k++) {
    int have = atomic_load(&r->codes[k]);
    if (!have) atomic_store(&r->codes[k], have = code);
    if (have == code) {
      atomic_fetch_add_explicit(&r->counts[k], 1, memory_order_relaxed);
      break;
    }
  }
  fb_histogram_observe(&r->latency, ns, 1);
}

static void counter(struct fb_buf *o, const char *name, const char *help, uint64_t v)
{
  fb_buf_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s ", name, help, name, name);
  fb_buf_u64(o, v);
  fb_buf_puts(o, "\n");
}

static void gauge(struct fb_buf *o, const char *name, const char *help, int64_t v)
{
  fb_buf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", name, help, name, name,
                (long long)v);
}

/* A histogram's buckets, sum and count, with `labels` (`name="value",` or
 * ""). The HELP and TYPE lines are the caller's. */
static void histogram_lines(struct fb_buf *o, const char *name, const char *labels,
                            const struct fb_histogram *h)
{
  uint64_t cum = 0;
  for (int b = 0; b <= FB_HIST_BUCKETS; b++) {
    cum += atomic_load(&h->buckets[b]);
    if (b < FB_HIST_BUCKETS)
      fb_buf_printf(o, "%s_bucket{%sle=\"%g\"} ", name, labels, fb_hist_bounds[b]);
    else
      fb_buf_printf(o, "%s_bucket{%sle=\"+Inf\"} ", name, labels);
    fb_buf_u64(o, cum);
    fb_buf_puts(o, "\n");
  }
  size_t ln = strlen(labels);
  /* The labels without their trailing comma, in braces, for _sum and _count. */
  char braced[160] = "";
  if (ln && ln < sizeof braced - 2) snprintf(braced, sizeof braced, "{%.*s}", (int)ln - 1, labels);
  fb_buf_printf(o, "%s_sum%s %.9f\n%s_count%s ", name, braced,
                (double)atomic_load(&h->sum_ns) / 1e9, name, braced);
  fb_buf_u64(o, atomic_load(&h->count));
  fb_buf_puts(o, "\n");
}

/* The process's figures, as Prometheus client libraries export them. */
static void process_metrics(const struct fb_metrics *m, struct fb_buf *o)
{
  struct rusage ru;
  if (!getrusage(RUSAGE_SELF, &ru))
    fb_buf_printf(o,
                  "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                  "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                  "process_cpu_seconds_total %.3f\n",
                  (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  long page = sysconf(_SC_PAGESIZE);
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long vm = 0, rss = 0;
  if (f && fscanf(f, "%llu %llu", &vm, &rss) == 2 && page > 0) {
    fb_buf_printf(o,
                  "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                  "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
                  vm * (unsigned long long)page);
    fb_buf_printf(o,
                  "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                  "# TYPE process_resident_memory_bytes gauge\n"
                  "process_resident_memory_bytes %llu\n",
                  rss * (unsigned long long)page);
  }
  if (f) fclose(f);
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    long fds = 0;
    for (struct dirent *e; (e = readdir(d));)
      fds += e->d_name[0] != '.';
    closedir(d);
    gauge(o, "process_open_fds", "Number of open file descriptors.", fds - 1); /* less d's own */
  }
  struct rlimit rl;
  if (!getrlimit(RLIMIT_NOFILE, &rl))
    gauge(o, "process_max_fds", "Maximum number of open file descriptors.",
          rl.rlim_cur == RLIM_INFINITY ? -1 : (int64_t)rl.rlim_cur);
  /* Start time: field 22 of /proc/self/stat (clock ticks after boot) plus
   * the boot time; when /proc says nothing, when the metrics began. */
  double start = (double)m->started_ms / 1000;
  char buf[1024];
  long tck = sysconf(_SC_CLK_TCK);
  f = fopen("/proc/self/stat", "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ticks = 0;
  for (int field = 2; p && *p && field < 22; p++)
    field += *p == ' ';
  if (p && sscanf(p, "%llu", &ticks) == 1 && tck > 0 && (f = fopen("/proc/stat", "r"))) {
    char line[256];
    unsigned long long btime = 0;
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "btime %llu", &btime) == 1) break;
    fclose(f);
    if (btime) start = (double)btime + (double)ticks / (double)tck;
  }
  fb_buf_printf(o,
                "# HELP process_start_time_seconds Start time of the process since unix epoch in "
                "seconds.\n# TYPE process_start_time_seconds gauge\n"
                "process_start_time_seconds %.2f\n",
                start);
}

static int64_t proc_depth_read(const struct fb_proc *p)
{
  return atomic_load(&p->live->queue_depth);
}

static int64_t proc_max_queue(const struct fb_proc *p)
{
  return p->max_queue;
}

static int64_t proc_capacity(const struct fb_proc *p)
{
  return p->capacity;
}

/* A gauge with one sample per processor of `s`. Processor ids are
 * validated to [A-Za-z0-9._:-], safe inside a label. */
static void processor_gauge(struct fb_buf *o, const struct fb_snapshot *s, const char *name,
                            const char *help, int64_t (*value)(const struct fb_proc *))
{
  fb_buf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
  for (size_t i = 0; i < s->n; i++)
    fb_buf_printf(o, "%s{processor_id=\"%s\"} %lld\n", name, s->procs[i]->id,
                  (long long)value(s->procs[i]));
}

/* Processor ids are validated to [A-Za-z0-9._:-], safe inside a label. */
int fb_metrics_render(const struct fb_metrics *m, const struct fb_snapshot *s, bool nats_enabled,
                      struct fb_buf *o)
{
  counter(o, "frame_buffer_frames_consumed_total", "Entries read from the input stream.",
          atomic_load(&m->frames_consumed));
  gauge(o, "frame_buffer_consumer_lag",
        "Entries in the input stream not yet read by the consumer group.",
        atomic_load(&m->consumer_lag));
  gauge(o, "frame_buffer_input_pending", "Entries read by the group but not yet acknowledged.",
        atomic_load(&m->input_pending));

  gauge(o, "frame_buffer_blocked_frames",
        "Frames held back because every candidate's queue is full (OVERLOAD_POLICY=block).",
        atomic_load(&m->blocked_frames));

  const char *hn = "frame_buffer_routing_duration_seconds";
  fb_buf_printf(o,
                "# HELP %s Time from reading a frame to its confirmed hand-off.\n"
                "# TYPE %s histogram\n",
                hn, hn);
  histogram_lines(o, hn, "", &m->routing);

  fb_buf_puts(o, "# HELP frame_buffer_frames_distributed_total Frames handed to each processor.\n"
                 "# TYPE frame_buffer_frames_distributed_total counter\n");
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc *p = s->procs[i];
    fb_buf_printf(o, "frame_buffer_frames_distributed_total{processor_id=\"%s\",transport=\"%s\"} ",
                  p->id, fb_transport_name(p->transport));
    fb_buf_u64(o, atomic_load(&p->live->frames_routed));
    fb_buf_puts(o, "\n");
  }

  fb_buf_puts(o, "# HELP frame_buffer_routing_decisions_total Frames placed on a processor, by "
                 "the strategy that placed them.\n"
                 "# TYPE frame_buffer_routing_decisions_total counter\n");
  for (int st = 0; st < FB_STRATEGY_COUNT; st++) {
    fb_buf_printf(o, "frame_buffer_routing_decisions_total{strategy=\"%s\"} ",
                  fb_strategy_name((enum fb_strategy)st));
    fb_buf_u64(o, atomic_load(&m->decisions[st]));
    fb_buf_puts(o, "\n");
  }

  fb_buf_puts(o, "# HELP frame_buffer_frames_dropped_total Frames not delivered, by reason.\n"
                 "# TYPE frame_buffer_frames_dropped_total counter\n");
  for (int r = 0; r < FB_REASON_COUNT; r++) {
    fb_buf_printf(o, "frame_buffer_frames_dropped_total{reason=\"%s\"} ", reason_names[r]);
    fb_buf_u64(o, atomic_load(&m->dropped[r]));
    fb_buf_puts(o, "\n");
  }
  fb_buf_puts(o, "# HELP frame_buffer_dlq_total Frames written to frames:dlq, by reason.\n"
                 "# TYPE frame_buffer_dlq_total counter\n");
  for (int r = 0; r <= FB_REASON_POISON; r++) {
    fb_buf_printf(o, "frame_buffer_dlq_total{reason=\"%s\"} ", reason_names[r]);
    fb_buf_u64(o, atomic_load(&m->dlq[r]));
    fb_buf_puts(o, "\n");
  }
  counter(o, "frame_buffer_dlq_replayed_total",
          "DLQ entries put back into the input stream by replays of this replica.",
          atomic_load(&m->dlq_replayed));
  fb_buf_puts(o, "# HELP frame_buffer_dlq_replay_skipped_total DLQ entries a replay left in the "
                 "DLQ, by cause.\n"
                 "# TYPE frame_buffer_dlq_replay_skipped_total counter\n");
  for (int c = 0; c < FB_SKIP_COUNT; c++) {
    fb_buf_printf(o, "frame_buffer_dlq_replay_skipped_total{cause=\"%s\"} ", skip_names[c]);
    fb_buf_u64(o, atomic_load(&m->dlq_replay_skipped[c]));
    fb_buf_puts(o, "\n");
  }
  counter(o, "frame_buffer_dlq_purged_total",
          "DLQ entries deleted through the API of this replica.", atomic_load(&m->dlq_purged));

  /* The depth as last read, not fb_proc_depth: the same on every replica. */
  processor_gauge(o, s, "frame_buffer_queue_depth",
                  "Queue depth per processor as last read: unread + pending entries of its "
                  "stream (read about every 250 ms), or a remote processor's last heartbeat "
                  "queue_depth + in_flight. Without what this replica routed since (the estimate "
                  "routing uses is in /api/v1/stats).",
                  proc_depth_read);

  int64_t by_status[3] = {0, 0, 0};
  for (size_t i = 0; i < s->n; i++) {
    int h = atomic_load(&s->procs[i]->live->status);
    if (h >= 0 && h < 3) by_status[h]++;
  }
  fb_buf_puts(o, "# HELP frame_buffer_processors Registered processors by health.\n"
                 "# TYPE frame_buffer_processors gauge\n");
  for (int h = 0; h < 3; h++)
    fb_buf_printf(o, "frame_buffer_processors{status=\"%s\"} %lld\n",
                  fb_health_name((enum fb_health)h), (long long)by_status[h]);

  counter(o, "frame_buffer_heartbeats_total", "Heartbeats received.", atomic_load(&m->heartbeats));
  counter(o, "frame_buffer_heartbeats_rejected_total",
          "Heartbeats ignored: malformed, oversized or from an unknown processor.",
          atomic_load(&m->heartbeats_rejected));
  counter(o, "frame_buffer_health_changes_total", "Processor health state changes.",
          atomic_load(&m->health_changes));
  fb_buf_puts(o, "# HELP frame_buffer_camera_moves_total Cameras consistent_hash moved to another "
                 "processor: spill (theirs was overloaded or full), return (back home once it "
                 "drained), membership (a processor joined, left or died).\n"
                 "# TYPE frame_buffer_camera_moves_total counter\n");
  for (int k = 0; k < FB_MOVE_COUNT; k++) {
    fb_buf_printf(o, "frame_buffer_camera_moves_total{reason=\"%s\"} ",
                  fb_move_reason_name((enum fb_move_reason)k));
    fb_buf_u64(o, atomic_load(&m->camera_moves[k]));
    fb_buf_puts(o, "\n");
  }
  counter(o, "frame_buffer_frames_rescued_total",
          "Frames moved from a dead processor's stream to live processors.",
          atomic_load(&m->rescued));
  if (nats_enabled) {
    counter(o, "frame_buffer_nats_publish_errors_total",
            "Remote frames whose publish failed; they stay pending and are retried.",
            atomic_load(&m->nats_publish_errors));
    counter(o, "frame_buffer_results_written_total",
            "Results from remote processors appended to their result stream.",
            atomic_load(&m->results_written));
    counter(o, "frame_buffer_results_dropped_total",
            "Results dropped: unknown processor, bad payload or a full queue.",
            atomic_load(&m->results_dropped));
  }
  const char *names[FB_REDIS_NAMES_MAX];
  uint64_t counts[FB_REDIS_NAMES_MAX];
  size_t nn = fb_redis_reconnects_by_name(names, counts, FB_REDIS_NAMES_MAX);
  fb_buf_puts(o, "# HELP frame_buffer_redis_reconnects_total Redis connections re-established "
                 "after a loss or a move of the primary, by connection (ingest, control, api, "
                 "results).\n"
                 "# TYPE frame_buffer_redis_reconnects_total counter\n");
  for (size_t i = 0; i < nn; i++) {
    fb_buf_printf(o, "frame_buffer_redis_reconnects_total{connection=\"%s\"} ", names[i]);
    fb_buf_u64(o, counts[i]);
    fb_buf_puts(o, "\n");
  }
  counter(o, "frame_buffer_redis_wait_short_total",
          "Hand-offs fewer Redis replicas than REDIS_WAIT_REPLICAS confirmed in time.",
          atomic_load(&m->redis_wait_short));
  gauge(o, "frame_buffer_redis_up", "1 when the routing connection to Redis works.",
        atomic_load(&m->redis_up));
  if (nats_enabled)
    gauge(o, "frame_buffer_nats_up", "1 when connected to NATS.", atomic_load(&m->nats_up));

  int64_t dlq = atomic_load(&m->dlq_length);
  if (dlq >= 0)
    gauge(o, "frame_buffer_dlq_length",
          "Entries in the stream frames:dlq, as read about once a second.", dlq);
  gauge(o, "frame_buffer_dashboard_clients", "Dashboard WebSocket clients connected.",
        atomic_load(&m->dashboard_clients));

  /* Per processor: its health as a state set, and what it registered. */
  fb_buf_puts(o, "# HELP frame_buffer_processor_state Health of each processor: 1 for its "
                 "state (healthy, stale, dead), 0 for the others.\n"
                 "# TYPE frame_buffer_processor_state gauge\n");
  for (size_t i = 0; i < s->n; i++) {
    int h = atomic_load(&s->procs[i]->live->status);
    for (int k = 0; k < 3; k++)
      fb_buf_printf(o, "frame_buffer_processor_state{processor_id=\"%s\",state=\"%s\"} %d\n",
                    s->procs[i]->id, fb_health_name((enum fb_health)k), h == k);
  }
  fb_buf_puts(o, "# HELP frame_buffer_processor_last_heartbeat_time_seconds When this replica "
                 "last received a heartbeat of each processor (unix seconds; absent before the "
                 "first).\n"
                 "# TYPE frame_buffer_processor_last_heartbeat_time_seconds gauge\n");
  for (size_t i = 0; i < s->n; i++) {
    int64_t hb = atomic_load(&s->procs[i]->live->last_heartbeat_ms);
    if (hb)
      fb_buf_printf(o,
                    "frame_buffer_processor_last_heartbeat_time_seconds{processor_id=\"%s\"} "
                    "%.3f\n",
                    s->procs[i]->id, (double)hb / 1000);
  }
  processor_gauge(o, s, "frame_buffer_processor_max_queue",
                  "Each processor's max_queue: the length its stream is capped at, and the depth "
                  "at which it counts as full.",
                  proc_max_queue);
  processor_gauge(o, s, "frame_buffer_processor_capacity",
                  "Each processor's capacity: frames it works on at once.", proc_capacity);

  /* HTTP, by route template (never the raw path) and status code. */
  fb_buf_puts(o, "# HELP frame_buffer_http_requests_total HTTP requests answered, by route "
                 "template and status code.\n"
                 "# TYPE frame_buffer_http_requests_total counter\n");
  for (int i = 0; i < FB_HTTP_ROUTES_MAX; i++) {
    const struct fb_http_route_metrics *r = &m->http[i];
    const char *route = atomic_load(&r->route);
    if (!route) break;
    for (int k = 0; k < FB_HTTP_CODES_MAX; k++) {
      int code = atomic_load(&r->codes[k]);
      if (!code) break;
      fb_buf_printf(o, "frame_buffer_http_requests_total{route=\"%s\",code=\"%d\"} ", route, code);
      fb_buf_u64(o, atomic_load(&r->counts[k]));
      fb_buf_puts(o, "\n");
    }
  }
  const char *dn = "frame_buffer_http_request_duration_seconds";
  fb_buf_printf(o,
                "# HELP %s Time from reading an HTTP request to handing its response to the "
                "socket, by route template.\n# TYPE %s histogram\n",
                dn, dn);
  for (int i = 0; i < FB_HTTP_ROUTES_MAX; i++) {
    const char *route = atomic_load(&m->http[i].route);
    if (!route) break;
    char labels[128];
    snprintf(labels, sizeof labels, "route=\"%s\",", route);
    histogram_lines(o, dn, labels, &m->http[i].latency);
  }

  process_metrics(m, o);
  fb_buf_printf(o,
                "# HELP frame_buffer_build_info The gateway's version; always 1.\n"
                "# TYPE frame_buffer_build_info gauge\n"
                "frame_buffer_build_info{version=\"%s\"} 1\n",
                FB_VERSION);
  return o->truncated ? -1 : 0;
}
