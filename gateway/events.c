/*
 * The event ring and outbox (see events.h). Any thread; `lock` guards both.
 */
#include "framebuffer/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/config.h"
#include "framebuffer/nats_conn.h"

struct fb_events {
  pthread_mutex_t lock;
  struct fb_event ring[FB_EVENTS_KEEP]; /* guarded by lock */
  uint64_t next_seq;                    /* guarded by lock; first is 1 */
  void (*wake)(void *arg);              /* guarded by lock */
  void *wake_arg;                       /* guarded by lock */
  struct fb_event *outbox;              /* FB_EVENTS_OUTBOX, FIFO; guarded by lock */
  size_t out_head, out_count;           /* guarded by lock */
  char replica[FB_NAME_MAX];            /* this replica's consumer name */
  struct fb_nats *nats;                 /* set before any thread emits; may be NULL */
};

int fb_events_create(struct fb_events **out, const char *replica)
{
  struct fb_events *e = calloc(1, sizeof *e);
  if (!e) return -ENOMEM;
  e->outbox = calloc(FB_EVENTS_OUTBOX, sizeof *e->outbox);
  if (!e->outbox) {
    free(e);
    return -ENOMEM;
  }
  pthread_mutex_init(&e->lock, NULL);
  e->next_seq = 1;
  snprintf(e->replica, sizeof e->replica, "%s", replica);
  *out = e;
  return 0;
}

void fb_events_destroy(struct fb_events *e)
{
  if (!e) return;
  pthread_mutex_destroy(&e->lock);
  free(e->outbox);
  free(e);
}

void fb_events_set_nats(struct fb_events *e, struct fb_nats *nats)
{
  e->nats = nats;
}

void fb_events_set_waker(struct fb_events *e, void (*wake)(void *arg), void *arg)
{
  pthread_mutex_lock(&e->lock);
  e->wake = wake;
  e->wake_arg = arg;
  pthread_mutex_unlock(&e->lock);
}

/* Under the lock: adds `ev` to the ring and wakes the dashboard (under the
 * lock, so that the waker cannot be cleared, and its context destroyed,
 * while it runs). */
static void push_locked(struct fb_events *e, const struct fb_event *ev)
{
  struct fb_event *slot = &e->ring[e->next_seq % FB_EVENTS_KEEP];
  *slot = *ev;
  slot->seq = e->next_seq++;
  if (e->wake) e->wake(e->wake_arg);
}

void fb_events_push(struct fb_events *e, const struct fb_event *ev)
{
  pthread_mutex_lock(&e->lock);
  push_locked(e, ev);
  pthread_mutex_unlock(&e->lock);
}

__attribute__((format(printf, 6, 0))) static void emit(struct fb_events *e, const char *request_id,
                                                       const char *event, const char *processor_id,
                                                       const char *status, const char *fmt,
                                                       va_list ap)
{
  struct fb_event ev = {.at_ms = fb_wall_ms()};
  snprintf(ev.event, sizeof ev.event, "%s", event);
  snprintf(ev.processor_id, sizeof ev.processor_id, "%s", processor_id ? processor_id : "");
  snprintf(ev.status, sizeof ev.status, "%s", status);
  vsnprintf(ev.detail, sizeof ev.detail, fmt, ap);
  snprintf(ev.replica, sizeof ev.replica, "%s", e->replica);
  snprintf(ev.request_id, sizeof ev.request_id, "%s", request_id ? request_id : "");

  if (processor_id) fb_nats_publish_event(e->nats, event, processor_id, status);
  pthread_mutex_lock(&e->lock);
  if (e->out_count < FB_EVENTS_OUTBOX)
    e->outbox[(e->out_head + e->out_count++) % FB_EVENTS_OUTBOX] = ev;
  else
    push_locked(e, &ev); /* shown here at least */
  pthread_mutex_unlock(&e->lock);
}

void fb_event_emit(struct fb_events *e, const char *event, const char *processor_id,
                   const char *status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(e, NULL, event, processor_id, status, fmt, ap);
  va_end(ap);
}

void fb_event_emit_by(struct fb_events *e, const char *request_id, const char *event,
                      const char *processor_id, const char *status, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  emit(e, request_id, event, processor_id, status, fmt, ap);
  va_end(ap);
}

size_t fb_events_take_outbox(struct fb_events *e, struct fb_event *out, size_t max)
{
  pthread_mutex_lock(&e->lock);
  size_t n = e->out_count < max ? e->out_count : max;
  for (size_t i = 0; i < n; i++)
    out[i] = e->outbox[(e->out_head + i) % FB_EVENTS_OUTBOX];
  e->out_head = (e->out_head + n) % FB_EVENTS_OUTBOX;
  e->out_count -= n;
  pthread_mutex_unlock(&e->lock);
  return n;
}

size_t fb_events_since(struct fb_events *e, uint64_t *after, struct fb_event *out, size_t max)
{
  pthread_mutex_lock(&e->lock);
  uint64_t first = e->next_seq > FB_EVENTS_KEEP ? e->next_seq - FB_EVENTS_KEEP : 1;
  uint64_t from = *after + 1 > first ? *after + 1 : first;
  if (e->next_seq > from && e->next_seq - from > max) from = e->next_seq - max;
  size_t n = 0;
  for (uint64_t s = from; s < e->next_seq; s++)
    out[n++] = e->ring[s % FB_EVENTS_KEEP];
  if (e->next_seq > 1) *after = e->next_seq - 1;
  pthread_mutex_unlock(&e->lock);
  return n;
}

json_t *fb_event_to_json(const struct fb_event *ev)
{
  return json_pack("{s:s,s:s,s:s?,s:s,s:s,s:s,s:s?,s:I}", "type", "event", "event", ev->event,
                   "processor_id", ev->processor_id[0] ? ev->processor_id : NULL, "status",
                   ev->status, "detail", ev->detail, "replica", ev->replica, "request_id",
                   ev->request_id[0] ? ev->request_id : NULL, "at", (json_int_t)ev->at_ms);
}
