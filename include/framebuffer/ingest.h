/*
 * Ingest: the hot path. Reads the input stream through the consumer group in
 * batches, routes every frame, and hands each batch off in one MULTI/EXEC
 * transaction that writes the frames to their targets (or the DLQ) and acks
 * their source entries together: a crash at any moment loses no frame and
 * duplicates none. While one batch's transaction runs in Redis, the next
 * batch is already being read.
 *
 * Threads: one ingest thread owns its Redis connection and router. It takes
 * the routing settings from fb_settings (their generation is checked once a
 * batch); nothing else calls into it but start and stop.
 */
#ifndef FRAMEBUFFER_INGEST_H
#define FRAMEBUFFER_INGEST_H

#include "framebuffer/config.h"
#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"

struct fb_ingest;

struct fb_events;
struct fb_nats;
struct fb_settings;

/* What the ingest thread uses, all borrowed: they must outlive it. */
struct fb_ingest_deps {
  const struct fb_config *cfg;
  struct fb_registry *registry; /* the processors, as snapshots */
  struct fb_metrics *metrics;
  struct fb_settings *settings; /* the routing settings in force */
  struct fb_events *events;     /* backpressure on and off */
  struct fb_nats *nats;         /* for the NATS sink; NULL with NATS_URL=none */
  struct fb_trace *trace;       /* where each frame went; NULL with FRAME_TRACE=0 */
  struct fb_shadows *shadows;   /* the fleet's shadow routes */
};

/* Starts the ingest thread. Returns 0 or a negative errno. */
int fb_ingest_start(struct fb_ingest **out, const struct fb_ingest_deps *deps);

/* Stops reading, finishes the batches in flight, joins the thread, frees. */
void fb_ingest_stop(struct fb_ingest *g);

#endif
