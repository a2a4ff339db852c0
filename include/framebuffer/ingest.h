/*
 * Ingest: the hot path. Reads the input stream through the consumer group in
 * batches, routes every frame, and hands each batch off in one MULTI/EXEC
 * transaction that writes the frames to their targets (or the DLQ) and acks
 * their source entries together: a crash at any moment loses no frame and
 * duplicates none. While one batch's transaction runs in Redis, the next
 * batch is already being read.
 *
 * Threads: one ingest thread owns its Redis connection and router. Other
 * threads only call fb_ingest_set_routing/fb_ingest_routing (under
 * `routing_lock`; the ingest thread checks a generation counter per batch).
 */
#ifndef FRAMEBUFFER_INGEST_H
#define FRAMEBUFFER_INGEST_H

#include "framebuffer/app.h"

struct fb_ingest;

/* Starts the ingest thread, which uses app's settings, registry, metrics and
 * NATS bridge (borrowed: they must outlive it). Returns 0 or a negative errno. */
int fb_ingest_start(struct fb_ingest **out, struct fb_app *app);

/* Stops reading, finishes the batches in flight, joins the thread, frees. */
void fb_ingest_stop(struct fb_ingest *g);

/* The routing settings that can change while the gateway runs. */
struct fb_routing {
  enum fb_strategy strategy;
  enum fb_overload_policy overload_policy;
  int64_t frame_max_age_ms; /* 0 = off */
  int64_t slow_start_ms;    /* 0 = off */
  double hash_bound;        /* consistent_hash, >= 1.0 */
};

/* Any thread: the settings take effect from the next batch on. */
void fb_ingest_set_routing(struct fb_ingest *g, const struct fb_routing *r);
void fb_ingest_routing(struct fb_ingest *g, struct fb_routing *out);

#endif
