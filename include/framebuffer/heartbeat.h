/*
 * Heartbeats, however they arrive (NATS processors.heartbeat.<id>, the compat
 * HTTP endpoint, or another replica through Redis): parsed and checked by a
 * pure function, then recorded on the processor's live state. Any thread:
 * recording touches only a snapshot and atomics.
 */
#ifndef FRAMEBUFFER_HEARTBEAT_H
#define FRAMEBUFFER_HEARTBEAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"

#define FB_HEARTBEAT_MAX       8192       /* bytes; larger payloads are rejected */
#define FB_HEARTBEAT_COUNT_MAX 1000000000 /* queue_depth and in_flight: larger is a lie */

/* One heartbeat as the gateway uses it. */
struct fb_heartbeat {
  char id[FB_PROC_ID_MAX + 1];
  bool stopping;       /* status "stopping": take it out of routing now */
  bool has_depth;      /* queue_depth was given */
  int64_t queue_depth; /* frames waiting, 0..FB_HEARTBEAT_COUNT_MAX */
  int64_t in_flight;   /* frames in hand, 0..FB_HEARTBEAT_COUNT_MAX; 0 when not given */
};

/* The statuses a heartbeat may carry, NULL-terminated: healthy, degraded,
 * unhealthy, stopping (take it out of routing now), ok. Any other is
 * refused; a heartbeat without one (or with null) is fine. */
extern const char *const fb_heartbeat_statuses[];

/* True when `status` (may be NULL) is one of fb_heartbeat_statuses. Pure. */
bool fb_heartbeat_status_is_valid(const char *status);

/*
 * Parses one heartbeat: JSON {processor_id, status, timestamp, queue_depth?,
 * in_flight?, capacity?, latency_ms?}. `subject_id` (NULL for HTTP) is the id
 * from the NATS subject; when the payload has no processor_id it is used, and
 * when both are present they must agree. Counts must be integers in range
 * (null counts as not given); a status must be one of fb_heartbeat_statuses.
 * Pure. Returns 0, or -EMSGSIZE / -EINVAL with
 * `why` (see config.h for the convention).
 */
int fb_heartbeat_parse(struct fb_heartbeat *hb, const char *subject_id, const char *data,
                       size_t len, char *why, size_t n);

/* The same for a payload already parsed (`doc` is borrowed). */
int fb_heartbeat_parse_json(struct fb_heartbeat *hb, const char *subject_id, const json_t *doc,
                            char *why, size_t n);

/* Records `hb`, received at `now_ms`, on its processor in `reg` and counts it
 * in `m`. Returns 0 or -ENOENT (no such processor). */
int fb_heartbeat_record(struct fb_registry *reg, struct fb_metrics *m,
                        const struct fb_heartbeat *hb, int64_t now_ms);

#endif
