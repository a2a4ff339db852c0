/*
 * The control thread: the slow, periodic work beside the hot path. It syncs
 * the registry from Redis (so a registration made on another replica is
 * routed to within a second), samples the input group's lag and pending
 * count, updates the per-second rates, and keeps this replica in step with
 * the fleet (fleet.h: events, HTTP heartbeats, routing settings, the fleet
 * view). It owns its own Redis connection.
 */
#ifndef FRAMEBUFFER_CONTROL_H
#define FRAMEBUFFER_CONTROL_H

#include "framebuffer/app.h"

struct fb_control;

/* Loads the registry once (best effort: Redis may be down) and starts the
 * thread. Returns 0 or a negative errno. */
int fb_control_start(struct fb_control **out, struct fb_app *app);
void fb_control_stop(struct fb_control *c);

#endif
