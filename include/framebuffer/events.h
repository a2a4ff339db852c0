/*
 * Events: what an operator wants to see happen (a registration, a health
 * change, a routing change, backpressure). Each is published on NATS
 * processors.events by the replica where it happened, and shown once on
 * every dashboard of the fleet: fb_event_emit puts it in an outbox, the
 * control thread appends the outbox to the fleet's event stream in Redis and
 * feeds what every replica appended into the ring the dashboard reads (see
 * fleet.h); while Redis is away it moves them straight to the ring.
 *
 * Threads: any thread emits; the ring and the outbox are guarded by `lock`.
 */
#ifndef FRAMEBUFFER_EVENTS_H
#define FRAMEBUFFER_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "framebuffer/config.h"

#define FB_EVENTS_KEEP   256
#define FB_EVENTS_OUTBOX 1024

struct fb_event {
  uint64_t seq;
  int64_t at_ms;
  char event[16];         /* register, unregister, health, strategy, routing, backpressure */
  char processor_id[129]; /* "" when none */
  char status[40];
  char detail[300];
  char replica[FB_NAME_MAX]; /* consumer name of the replica where it happened */
  char request_id[129];      /* the API request that caused it, or "" */
};

struct fb_events;
struct fb_nats;

/* `replica` is this replica's consumer name, which tags its events. */
int fb_events_create(struct fb_events **out, const char *replica);
void fb_events_destroy(struct fb_events *e);

/* Where events naming a processor are published (NULL: nowhere). Set once,
 * by the main thread, before any other thread emits. */
void fb_events_set_nats(struct fb_events *e, struct fb_nats *nats);

/* Called (from the emitting thread) after each event: the dashboard's
 * lws_cancel_service. Set once before other threads start. */
void fb_events_set_waker(struct fb_events *e, void (*wake)(void *arg), void *arg);

/* Any thread: records an event of this replica, publishes it on NATS (when
 * connected and it names a processor). `processor_id` may be NULL. */
void fb_event_emit(struct fb_events *e, const char *event, const char *processor_id,
                   const char *status, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The same, caused by API request `request_id`. */
void fb_event_emit_by(struct fb_events *e, const char *request_id, const char *event,
                      const char *processor_id, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Control thread: moves up to `max` events out of the outbox, oldest first.
 * Returns how many. */
size_t fb_events_take_outbox(struct fb_events *e, struct fb_event *out, size_t max);

/* Any thread: adds an event to the ring (it gets the next seq) and wakes the
 * dashboard. */
void fb_events_push(struct fb_events *e, const struct fb_event *ev);

/* Copies up to `max` events newer than *after, oldest first, and advances
 * *after. Returns how many. Any thread. */
size_t fb_events_since(struct fb_events *e, uint64_t *after, struct fb_event *out, size_t max);

/* An event as the JSON the dashboard receives (a new reference, or NULL
 * when out of memory). */
json_t *fb_event_to_json(const struct fb_event *ev);

#endif
