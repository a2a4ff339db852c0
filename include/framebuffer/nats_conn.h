/*
 * The gateway's NATS connection: options, background (re)connects, the
 * subscriptions other modules make on it, events out (processors.events).
 * Threads: nats.c's callbacks only update atomics; start, subscribe and stop
 * are the main thread's, fb_nats_check the control thread's. No locks.
 */
#ifndef FRAMEBUFFER_NATS_CONN_H
#define FRAMEBUFFER_NATS_CONN_H

#include <nats/nats.h>
#include <stdbool.h>

#include "framebuffer/app.h"

/* The JetStream stream that stores frames in JetStream mode. */
#define FB_NATS_JS_STREAM   "FRAMES"
#define FB_NATS_JS_SUBJECTS "frames.ready.>"

struct fb_nats;

/*
 * Starts connecting (in the background: a NATS that is down is not an
 * error). Returns 0 or -EINVAL when the options are unusable (a creds or CA
 * file that cannot be read), logged.
 */
int fb_nats_start(struct fb_nats **out, struct fb_app *app);
/* Ends every subscription, closes the connection and waits for nats.c's
 * threads: no callback runs after it returns. */
void fb_nats_stop(struct fb_nats *n);

/* Main thread, at start: delivers the messages on `subject` to
 * cb(..., closure) on nats.c's threads until fb_nats_stop, so `closure` must
 * outlive fb_nats_stop. Returns 0 or -EIO, logged. */
int fb_nats_subscribe(struct fb_nats *n, const char *subject, natsMsgHandler cb, void *closure);

bool fb_nats_is_connected(const struct fb_nats *n);

/* The client connection, for the modules that publish on it. */
natsConnection *fb_nats_connection(struct fb_nats *n);

/* Any thread: {event, processor_id, status, at} on processors.events. */
void fb_nats_publish_event(struct fb_nats *n, const char *event, const char *processor_id,
                           const char *status);

/* Control thread, once connected: in core mode, warns when a JetStream
 * stream FRAMES (left from JetStream mode) would store every frame. */
void fb_nats_check(struct fb_nats *n);

#endif
