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

#include "framebuffer/app.h"

struct fb_ingest;

/* Starts the ingest thread, which uses app's settings, registry, metrics and
 * NATS bridge (borrowed: they must outlive it). Returns 0 or a negative errno. */
int fb_ingest_start(struct fb_ingest **out, struct fb_app *app);

/* Stops reading, finishes the batches in flight, joins the thread, frees. */
void fb_ingest_stop(struct fb_ingest *g);

#endif
