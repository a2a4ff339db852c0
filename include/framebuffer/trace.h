/*
 * The frame trace: where each of the last frames went, for "where did frame
 * X go" (GET /api/v1/frames/{id}). A ring of fixed-size records written by
 * the ingest thread, one lock taken per batch, and searched newest first by
 * the API and control threads. Pure memory: no I/O, no clock.
 *
 * A record keeps the frame id (the first FB_TRACE_ID_MAX bytes and a hash of
 * all of it), the camera id (cut at FB_TRACE_CAMERA_MAX bytes), the source
 * entry id, the outcome and the processor. Processor ids and targets are
 * interned: a table of at most FB_TRACE_NAMES_MAX names, after which new
 * names are recorded as unknown.
 */
#ifndef FRAMEBUFFER_TRACE_H
#define FRAMEBUFFER_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/frame.h"

#define FB_TRACE_DEFAULT_FRAMES 120000 /* about 15 MB */
#define FB_TRACE_ID_MAX         56
#define FB_TRACE_CAMERA_MAX     24
#define FB_TRACE_NAMES_MAX      4096
#define FB_TRACE_WRITE_FAILED   (-2) /* the reason of a dropped frame: its write failed */

enum fb_trace_outcome {
  FB_TRACE_DELIVERED, /* written to its processor's stream or subject */
  FB_TRACE_DLQ,       /* written to frames:dlq with a reason */
  FB_TRACE_DROPPED,   /* acked with no copy anywhere (its write failed) */
  FB_TRACE_HELD,      /* not acked yet: waits for its sink or for room */
};

const char *fb_trace_outcome_name(enum fb_trace_outcome o);

/* One frame's fate, as recorded and as found. Strings are NUL-terminated;
 * processor_id and target are "" when there is none. */
struct fb_trace_record {
  char frame_id[FB_TRACE_ID_MAX + 1]; /* cut: frame_id_cut */
  bool frame_id_cut;
  char camera_id[FB_TRACE_CAMERA_MAX + 1];
  char source_id[48]; /* the input entry: <ms>-<seq> */
  enum fb_trace_outcome outcome;
  int reason;    /* enum fb_reason for dlq and dropped, else -1 */
  int strategy;  /* enum fb_strategy */
  int transport; /* enum fb_transport, or -1 */
  const char *processor_id;
  const char *target;
  int64_t routed_at_ms; /* wall clock */
  int64_t latency_ms;   /* routed_at_ms minus the source entry's time */
};

/* What the writer gives for one frame. */
struct fb_trace_in {
  struct fb_str frame_id, camera_id;
  const char *source_id; /* "<ms>-<seq>" */
  enum fb_trace_outcome outcome;
  int reason, strategy, transport;
  const char *processor_id, *target; /* NULL: none */
  int64_t routed_at_ms;
};

struct fb_trace;

/* A trace of the last `frames` frames. Returns 0 or -ENOMEM. */
int fb_trace_create(struct fb_trace **out, size_t frames);
void fb_trace_destroy(struct fb_trace *t);
/* Bytes it holds (for the docs' figure and the tests). */
size_t fb_trace_bytes(const struct fb_trace *t);

/* Writer (one thread): a batch of records between begin and end, one lock. */
void fb_trace_begin(struct fb_trace *t);
void fb_trace_add(struct fb_trace *t, const struct fb_trace_in *in);
void fb_trace_end(struct fb_trace *t);

/* Any thread: the newest record of frame `id` into *out (its strings stay
 * valid while the trace lives). False when it is not in the window. */
bool fb_trace_find(struct fb_trace *t, const char *id, size_t n, struct fb_trace_record *out);
/* Any thread: how many frames the window holds now, and the wall time of
 * its oldest (0 when empty). */
void fb_trace_window(struct fb_trace *t, size_t *frames, int64_t *oldest_ms);

#endif
