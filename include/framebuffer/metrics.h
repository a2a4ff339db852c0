/*
 * Counters, gauges and a histogram, all atomics: any thread may update them
 * without a lock. fb_metrics_render writes the Prometheus text format.
 */
#ifndef FRAMEBUFFER_METRICS_H
#define FRAMEBUFFER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "framebuffer/buf.h"
#include "framebuffer/config.h"
#include "framebuffer/registry.h"
#include "framebuffer/router.h"

/* Why a frame was not delivered to a processor. The first five are also
 * the DLQ reasons (docs/protocol.md: The dead-letter queue). */
enum fb_reason {
  FB_REASON_MALFORMED,
  FB_REASON_NO_PROCESSOR,
  FB_REASON_EXPIRED,
  FB_REASON_OVERLOADED,
  FB_REASON_POISON,
  FB_REASON_MISSING, /* pending entry no longer in the stream: nothing to deliver */
  FB_REASON_TRIMMED, /* pushed out of a full processor stream (drop_oldest) */
  FB_REASON_COUNT
};

const char *fb_reason_name(enum fb_reason r);

/* Why a DLQ replay left an entry where it was (dlq.c). */
enum fb_replay_skip {
  FB_SKIP_MALFORMED,  /* a malformed entry, without "force" */
  FB_SKIP_REPLAY_MAX, /* replayed DLQ_REPLAY_MAX times already */
  FB_SKIP_GONE,       /* no longer in the DLQ when its turn came (replayed or purged meanwhile) */
  FB_SKIP_TOO_LARGE,  /* more fields than one replay step carries */
  FB_SKIP_COUNT
};

const char *fb_replay_skip_name(enum fb_replay_skip c);

#define FB_HIST_BUCKETS 14

struct fb_histogram {
  atomic_uint_fast64_t buckets[FB_HIST_BUCKETS + 1]; /* last: +Inf */
  atomic_uint_fast64_t count;
  atomic_uint_fast64_t sum_ns;
};

/* Upper bounds of the histogram buckets, in seconds. */
extern const double fb_hist_bounds[FB_HIST_BUCKETS];

#define FB_HTTP_ROUTES_MAX 48 /* route labels; the API's templates, "dashboard", "other" */
#define FB_HTTP_CODES_MAX  16 /* distinct status codes counted per route */

/* One route's requests: by status code, and how long they took. Written by
 * the HTTP thread only; atomics so that any thread may read. */
struct fb_http_route_metrics {
  _Atomic(const char *) route;                    /* static; NULL: slot free */
  atomic_int codes[FB_HTTP_CODES_MAX];            /* 0: slot free */
  atomic_uint_fast64_t counts[FB_HTTP_CODES_MAX]; /* requests answered with codes[i] */
  struct fb_histogram latency;                    /* request read to response handed to lws */
};

struct fb_metrics {
  atomic_uint_fast64_t frames_consumed;
  atomic_uint_fast64_t frames_distributed;
  atomic_uint_fast64_t decisions[FB_STRATEGY_COUNT]; /* frames placed, by strategy */
  atomic_uint_fast64_t dropped[FB_REASON_COUNT];
  atomic_uint_fast64_t dlq[FB_REASON_COUNT];
  atomic_uint_fast64_t batches;
  atomic_uint_fast64_t heartbeats;
  atomic_uint_fast64_t redis_wait_short;    /* hand-offs fewer replicas confirmed */
  atomic_uint_fast64_t heartbeats_rejected; /* malformed, oversized or unknown id */
  atomic_uint_fast64_t health_changes;
  atomic_uint_fast64_t nats_publish_errors;         /* left pending, retried later */
  atomic_uint_fast64_t results_written;             /* NATS results appended to Redis */
  atomic_uint_fast64_t results_dropped;             /* unknown processor or queue full */
  atomic_uint_fast64_t rescued;                     /* moved from dead processors' streams */
  atomic_uint_fast64_t camera_moves[FB_MOVE_COUNT]; /* consistent_hash, by enum fb_move_reason */
  atomic_int_fast64_t consumer_lag;                 /* -1 unknown */
  atomic_int_fast64_t input_pending;                /* -1 unknown */
  atomic_int_fast64_t blocked_frames;    /* held by backpressure (OVERLOAD_POLICY=block) */
  atomic_int_fast64_t dlq_length;        /* entries in frames:dlq as last read, -1 unknown */
  atomic_int_fast64_t dashboard_clients; /* open dashboard WebSockets */
  atomic_int redis_up;                   /* ingest connection */
  atomic_int group_ready;
  atomic_int nats_up;
  struct fb_histogram routing; /* read-to-handed-off, per frame */
  struct fb_http_route_metrics http[FB_HTTP_ROUTES_MAX];

  /* DLQ replays and purges through the API (dlq.c) */
  atomic_uint_fast64_t dlq_replayed;                      /* entries put back into the input */
  atomic_uint_fast64_t dlq_replay_skipped[FB_SKIP_COUNT]; /* by enum fb_replay_skip */
  atomic_uint_fast64_t dlq_purged;                        /* entries deleted */

  int64_t started_ms;
  atomic_int_fast64_t rate_in;  /* frames/s consumed over the last tick */
  atomic_int_fast64_t rate_out; /* frames/s delivered over the last tick */
  uint64_t tick_in, tick_out;   /* control thread only */
  int64_t tick_ms;              /* control thread only */
};

void fb_metrics_init(struct fb_metrics *m);

/* Updates the per-second rates; called about once a second by one thread. */
void fb_metrics_tick(struct fb_metrics *m, int64_t now_ms);

/* Records `count` frames that each took `ns` nanoseconds. */
void fb_histogram_observe(struct fb_histogram *h, uint64_t ns, uint64_t count);

/* Estimates quantile q (0..1) in seconds from the buckets; 0 when empty. */
double fb_histogram_quantile(const struct fb_histogram *h, double q);

/* The same from plain bucket counts (FB_HIST_BUCKETS + 1 of them, the last
 * +Inf), e.g. several replicas' histograms added up. Pure. */
double fb_buckets_quantile(const uint64_t *buckets, double q);

/* HTTP thread: one request on `route` (a static string: a route
 * template, "dashboard" or "other"; never a raw path, which would make a
 * series per URL) answered with `code` after `ns` nanoseconds. */
void fb_metrics_http_observe(struct fb_metrics *m, const char *route, int code, uint64_t ns);

/* Appends the Prometheus exposition of `m` and the processors of `s`,
 * with the process's own figures (process_*, read from /proc) and the
 * Redis connections' reconnects (fb_redis_reconnects_by_name). */
int fb_metrics_render(const struct fb_metrics *m, const struct fb_snapshot *s, bool nats_enabled,
                      struct fb_buf *out);

#endif
