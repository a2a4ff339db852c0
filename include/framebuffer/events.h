/*
 * Events: what an operator wants to see happen (a registration, a health
 * change, a strategy change, backpressure). Each is kept in a small ring for
 * the dashboard, published on NATS processors.events, and wakes the
 * dashboard. fb_event_emit may be called from any thread; the ring is
 * guarded by its own lock.
 */
#ifndef FRAMEBUFFER_EVENTS_H
#define FRAMEBUFFER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "framebuffer/buf.h"

#define FB_EVENTS_KEEP 256

struct fb_event {
  uint64_t seq;
  int64_t at_ms;
  char event[16];         /* register, unregister, health, strategy, backpressure */
  char processor_id[129]; /* "" when none */
  char status[40];
  char detail[200];
};

struct fb_events;
struct fb_app;

int fb_events_create(struct fb_events **out);
void fb_events_destroy(struct fb_events *e);

/* Called (from the emitting thread) after each event: the dashboard's
 * lws_cancel_service. Set once before other threads start. */
void fb_events_set_waker(struct fb_events *e, void (*wake)(void *arg), void *arg);

/* Any thread: records an event, publishes it on NATS (when connected) and
 * wakes the dashboard. `processor_id` may be NULL. */
void fb_event_emit(struct fb_app *app, const char *event, const char *processor_id,
                   const char *status, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Copies up to `max` events newer than *after, oldest first, and advances
 * *after. Returns how many. Any thread. */
size_t fb_events_since(struct fb_events *e, uint64_t *after, struct fb_event *out, size_t max);

/* Appends an event as the JSON the dashboard receives. */
void fb_event_json(const struct fb_event *ev, struct fb_buf *o);

#endif
