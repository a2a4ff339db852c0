/*
 * Heartbeats, however they arrive (NATS processors.heartbeat.<id> or the
 * compat HTTP endpoint): parse, check, and record on the processor's live
 * state. Any thread: it touches only a snapshot and atomics.
 */
#ifndef FRAMEBUFFER_HEARTBEAT_H
#define FRAMEBUFFER_HEARTBEAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/app.h"

#define FB_HEARTBEAT_MAX 8192 /* bytes; larger payloads are rejected */

/*
 * Applies one heartbeat: JSON {processor_id, status, timestamp, queue_depth?,
 * in_flight?, capacity?, latency_ms?}. `subject_id` (NULL for HTTP) is the id
 * from the subject; when the payload has no processor_id it is used, and when
 * both are present they must agree. The processor's id goes to `id` (at least
 * FB_PROC_ID_MAX + 1 bytes). Returns 0, -EMSGSIZE, -EINVAL (malformed, with
 * `why`), or -ENOENT (no such processor).
 */
int fb_heartbeat_apply(struct fb_app *app, const char *subject_id, const char *data, size_t len,
                       int64_t now_ms, char *id, const char **why);

/* The same for a payload already parsed (`doc` is borrowed). */
int fb_heartbeat_apply_json(struct fb_app *app, const char *subject_id, const json_t *doc,
                            int64_t now_ms, char *id, const char **why);

#endif
