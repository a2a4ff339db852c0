/*
 * Metrics: lock-free counters and the Prometheus text rendering.
 * Updated from every thread; rendered on the HTTP thread.
 */
#include "framebuffer/metrics.h"

#include <string.h>
#include <time.h>

static const char *const reason_names[FB_REASON_COUNT] = {
    "malformed", "no_processor", "expired", "overloaded", "poison", "missing", "trimmed"};

const char *fb_reason_name(enum fb_reason r)
{
  return (unsigned)r < FB_REASON_COUNT ? reason_names[r] : "unknown";
}

const double fb_hist_bounds[FB_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5};

void fb_metrics_init(struct fb_metrics *m)
{
  memset(m, 0, sizeof *m);
  atomic_store(&m->consumer_lag, -1);
  atomic_store(&m->input_pending, -1);
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
  uint64_t cum = 0;
  for (int b = 0; b <= FB_HIST_BUCKETS; b++) {
    cum += atomic_load(&m->routing.buckets[b]);
    if (b < FB_HIST_BUCKETS)
      fb_buf_printf(o, "%s_bucket{le=\"%g\"} ", hn, fb_hist_bounds[b]);
    else
      fb_buf_printf(o, "%s_bucket{le=\"+Inf\"} ", hn);
    fb_buf_u64(o, cum);
    fb_buf_puts(o, "\n");
  }
  fb_buf_printf(o, "%s_sum %.9f\n%s_count ", hn, (double)atomic_load(&m->routing.sum_ns) / 1e9, hn);
  fb_buf_u64(o, atomic_load(&m->routing.count));
  fb_buf_puts(o, "\n");

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

  /* The depth as last read, not fb_proc_depth: the same on every replica. */
  fb_buf_puts(o, "# HELP frame_buffer_queue_depth Queue depth per processor as last read: unread + "
                 "pending entries of its stream (read about every 250 ms), or a remote "
                 "processor's last heartbeat queue_depth + in_flight. Without what this replica "
                 "routed since (the estimate routing uses is in /api/v1/stats).\n"
                 "# TYPE frame_buffer_queue_depth gauge\n");
  for (size_t i = 0; i < s->n; i++)
    fb_buf_printf(o, "frame_buffer_queue_depth{processor_id=\"%s\"} %lld\n", s->procs[i]->id,
                  (long long)atomic_load(&s->procs[i]->live->queue_depth));

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
  counter(o, "frame_buffer_redis_reconnects_total", "Redis connections re-established.",
          atomic_load(&m->redis_reconnects));
  counter(o, "frame_buffer_redis_wait_short_total",
          "Hand-offs fewer Redis replicas than REDIS_WAIT_REPLICAS confirmed in time.",
          atomic_load(&m->redis_wait_short));
  gauge(o, "frame_buffer_redis_up", "1 when the routing connection to Redis works.",
        atomic_load(&m->redis_up));
  if (nats_enabled)
    gauge(o, "frame_buffer_nats_up", "1 when connected to NATS.", atomic_load(&m->nats_up));
  return o->truncated ? -1 : 0;
}
