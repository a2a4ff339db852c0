/*
 * "Where did frame X go", fleet-wide: GET /api/v1/frames/{frame_id}.
 *
 * A replica answers from its own frame trace (trace.h). When the frame is
 * not there, it asks the others through Redis: it appends the question to
 * the stream frame-buffer:<group>:frame-queries and waits up to
 * FB_LOOKUP_WAIT_MS on a reply list of its own; every other replica's
 * control thread reads the stream each tick (50 ms), looks in its trace and
 * pushes its answer (found or not) to that list. The asker stops as soon as
 * every live replica of the fleet view has answered.
 *
 * Threads: fb_lookup_tick on the control thread with its Redis connection;
 * the API handler on the HTTP thread with the API's.
 */
#ifndef FRAMEBUFFER_LOOKUP_H
#define FRAMEBUFFER_LOOKUP_H

#include <jansson.h>

#include "framebuffer/api.h"
#include "framebuffer/app.h"
#include "framebuffer/redis.h"
#include "framebuffer/trace.h"

#define FB_LOOKUP_WAIT_MS 1000 /* the longest an unknown frame keeps a request */

struct fb_lookup;

int fb_lookup_create(struct fb_lookup **out, struct fb_app *app);
void fb_lookup_destroy(struct fb_lookup *lk);

/* Control thread, every tick: answers the other replicas' questions. */
void fb_lookup_tick(struct fb_lookup *lk, struct fb_redis *r);

/* A record as the API shows it (new reference). Pure. */
json_t *fb_lookup_record_json(const struct fb_trace_record *rec, const char *replica);

/* GET /api/v1/frames/{frame_id} */
fb_api_handler fb_api_frame_get;

#endif
