/*
 * Rescue: moves the backlog of a dead processor to live ones. Its backlog is
 * what sits in its stream unread, and what it read but left unacked for
 * longer than CLAIM_IDLE_MS. Each batch moves in one MULTI/EXEC (XADD to
 * the new processor, XACK in the dead one's group), so a crash in the middle
 * loses nothing: the rescue consumer re-reads its own pending entries first.
 * Several replicas may rescue at once: the consumer group gives each entry to
 * one of them. Control thread only.
 */
#ifndef FRAMEBUFFER_RESCUE_H
#define FRAMEBUFFER_RESCUE_H

#include <stddef.h>

#include "framebuffer/config.h"
#include "framebuffer/metrics.h"
#include "framebuffer/redis.h"

#define FB_RESCUE_CONSUMER "frame-buffer-rescue"

struct fb_rescue;

/* Uses cfg's DLQ_MAXLEN and CLAIM_IDLE_MS; counts into `m` (borrowed). */
int fb_rescue_create(struct fb_rescue **out, const struct fb_config *cfg, struct fb_metrics *m);
void fb_rescue_destroy(struct fb_rescue *r);

/*
 * Moves up to about `max` frames out of dead processor `dead`'s stream, to
 * processors of `s` that can take them (Redis targets; a frame nobody live
 * can take goes to the DLQ as no_processor). Returns how many moved, 0 when
 * its backlog is empty, or -EIO when Redis failed.
 */
long fb_rescue_run(struct fb_rescue *r, struct fb_redis *redis, const struct fb_snapshot *s,
                   const struct fb_proc *dead, size_t max);

#endif
