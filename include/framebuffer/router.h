/*
 * The router: a pure function of (registry snapshot, frame) that picks the
 * processor a frame goes to. No I/O, no locks, no clock of its own. A router
 * keeps the strategy's memory (round-robin cursors) and belongs to one
 * thread, the ingest thread.
 */
#ifndef FRAMEBUFFER_ROUTER_H
#define FRAMEBUFFER_ROUTER_H

#include <stdint.h>

#include "framebuffer/config.h"
#include "framebuffer/frame.h"
#include "framebuffer/registry.h"

struct fb_router;

/* Returns 0 and a new router in *out, or -ENOMEM. */
int fb_router_create(struct fb_router **out, enum fb_strategy strategy);
void fb_router_destroy(struct fb_router *r);

/* Changes the strategy; takes effect on the next pick. */
void fb_router_set_strategy(struct fb_router *r, enum fb_strategy strategy);
enum fb_strategy fb_router_strategy(const struct fb_router *r);

/* Whether processors on NATS can be picked (NATS is connected). */
void fb_router_set_remote_available(struct fb_router *r, bool available);

/*
 * Picks a processor for frame `f` among the processors of `s` whose
 * capabilities hold its detection type (any processor when it has none).
 * Dead processors are never picked; stale ones only when no healthy one can
 * take the frame; remote processors only while NATS is available. Returns the index into s->procs,
 * or -ENOENT when no processor can take it.
 */
int fb_router_pick(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f);

#endif
