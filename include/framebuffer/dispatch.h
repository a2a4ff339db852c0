/*
 * The dispatcher: what becomes of every frame of a batch. Pure: it reads
 * parsed frames, their delivery counts, a registry snapshot and the routing
 * settings, asks the router, and writes each frame's outcome (a processor,
 * or a reason for the DLQ), whether backpressure holds it, and the order of
 * the hand-off (higher priority first). No I/O, no clock, no threads: the
 * ingest thread calls it once a batch, and unit tests call it without
 * servers.
 */
#ifndef FRAMEBUFFER_DISPATCH_H
#define FRAMEBUFFER_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "framebuffer/frame.h"
#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"
#include "framebuffer/router.h"
#include "framebuffer/settings.h"

/* Why an entry of a batch is not acked with it. */
enum fb_hold {
  FB_HOLD_NONE,
  FB_HOLD_SINK,    /* its sink could not take it (NATS away, no JetStream ack): retried later */
  FB_HOLD_BLOCKED, /* every candidate is full (OVERLOAD_POLICY=block): routed again in place */
};

/* An outcome: >= 0 is the processor's index in the snapshot; < 0 is
 * FB_OUTCOME_DLQ(reason). */
#define FB_OUTCOME_DLQ(reason) (-1 - (int32_t)(reason))
#define FB_OUTCOME_REASON(o)   ((enum fb_reason)(-1 - (o)))

/* One batch, as the dispatcher sees it. The caller owns every array (n of
 * each) and fills the inputs. */
struct fb_dispatch {
  size_t n;
  const struct fb_frame *frames; /* in: parsed; one with no fields (nfields 0) is an
                                    entry no longer in the stream */
  const int64_t *deliveries;     /* in: delivery counts, or NULL when unknown */
  /* in: the sink (an index of fb_sink_list) whose hand-offs cannot be known
   * not to have happened (JetStream: published, the ack lost), or -1. A
   * frame seen before (delivered more than once, or all of a `retried`
   * batch) goes only to its processors while one is alive: if it reached
   * that sink before, the sink drops the copy (JetStream's Nats-Msg-Id
   * window), where another sink would deliver it twice. */
  int retry_sink;
  bool retried;
  int32_t *outcome; /* out */
  uint8_t *held;    /* out: enum fb_hold */
  uint32_t *order;  /* out: hand-off order */
  size_t ntrimmed;  /* out: delivered to full queues (drop_oldest) */
};

/*
 * Decides every frame of `d`, in this order: missing entries (DLQ reason
 * FB_REASON_MISSING: nothing to write, just acked), poison (more
 * than `max_deliveries` deliveries), malformed, expired (older than
 * routing->frame_max_age_ms at `now_ms`), then the router's pick under the
 * overload policy. `router` must have been begun (fb_router_begin) on `s`.
 */
void fb_dispatch_run(struct fb_dispatch *d, struct fb_router *router, const struct fb_snapshot *s,
                     const struct fb_routing *routing, int max_deliveries, int64_t now_ms);

#endif
