/*
 * The NATS half of frame-buffer: heartbeats in (processors.heartbeat.<id>),
 * remote frames out (core NATS or JetStream stream FRAMES), results back
 * into Redis (frames.results.<id> -> the processor's result_stream), and
 * events out (processors.events).
 *
 * Threads: nats.c delivers messages on its own threads; the callbacks only
 * update atomics or append to a bounded queue, which a results thread writes
 * to Redis. fb_nats_publish_frame/fb_nats_complete belong to the ingest
 * thread; fb_nats_publish_event to any thread.
 */
#ifndef FRAMEBUFFER_NATS_BRIDGE_H
#define FRAMEBUFFER_NATS_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>

#include "framebuffer/app.h"
#include "framebuffer/frame.h"
#include "framebuffer/registry.h"

struct fb_nats;

/*
 * Starts connecting (in the background: a NATS that is down is not an
 * error) and subscribes. Returns 0 or -EINVAL when the options are unusable
 * (a creds or CA file that cannot be read), logged.
 */
int fb_nats_start(struct fb_nats **out, struct fb_app *app);
void fb_nats_stop(struct fb_nats *n);

bool fb_nats_is_connected(const struct fb_nats *n);

/* Ingest thread. Publishes frame `f` to remote processor `p`. Core NATS:
 * 0 once the client library has it (at-most-once). JetStream: 0 once queued;
 * whether it was stored is known after fb_nats_complete. */
int fb_nats_publish_frame(struct fb_nats *n, const struct fb_proc *p, const struct fb_frame *f);

/* Ingest thread. JetStream: waits for the acks of everything published since
 * the last call and calls `failed` with the frame_id of each frame JetStream
 * did not store (`all_failed` set when the wait timed out: then treat every
 * frame of the batch as failed). Core NATS: nothing to wait for. */
void fb_nats_complete(struct fb_nats *n, void (*failed)(void *ctx, const char *frame_id), void *ctx,
                      bool *all_failed);

/* Any thread: {event, processor_id, status, at} on processors.events. */
void fb_nats_publish_event(struct fb_nats *n, const char *event, const char *processor_id,
                           const char *status);

/* Control thread, once connected: in core mode, warns when a JetStream
 * stream FRAMES (left from JetStream mode) would store every frame. */
void fb_nats_check(struct fb_nats *n);

#endif
