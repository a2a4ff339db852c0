/*
 * Sinks: where a processor's frames go. A registration names its sink in
 * its "transport" field; the ingest thread hands each frame to its
 * processor's sink and never asks which one it is.
 *
 * A batch's hand-off has two phases. Sinks outside Redis send their frames
 * first (send) and then say which did not make it (commit): those are held,
 * not acked, and sent again later. Then one MULTI/EXEC writes the frames of
 * the sinks inside Redis (stage: an XADD to the processor's stream), the
 * DLQ entries and the XACK of every entry not held, all at once.
 *
 * Adding a sink: one file that defines its `struct fb_sink_ops`, and one
 * line in the list in sinks.c. Threads: a sink's functions run on the
 * ingest thread, except create/destroy (main thread, at start and stop).
 */
#ifndef FRAMEBUFFER_SINK_H
#define FRAMEBUFFER_SINK_H

#include <stdbool.h>

#include "framebuffer/config.h"
#include "framebuffer/buf.h"
#include "framebuffer/frame.h"
#include "framebuffer/registry.h"

#define FB_SINKS_MAX 8

struct fb_sink_ops;
struct fb_nats;

/* What a sink may use, borrowed (they outlive every sink). */
struct fb_sink_env {
  const struct fb_config *cfg;
  struct fb_nats *nats; /* NULL with NATS_URL=none */
};

/* What every sink starts with; each sink's own struct embeds it first. */
struct fb_sink {
  const struct fb_sink_ops *ops;
};

struct fb_sink_ops {
  const char *name; /* as registrations name it in "transport" */
  /* Its frames wait in a queue until the processor takes them, so they count
   * in the processor's depth until the next reading of it. */
  bool queues;

  /* Returns 0 and a new sink, or a negative errno. */
  int (*create)(struct fb_sink **out, const struct fb_sink_env *env);
  void (*destroy)(struct fb_sink *s);
  /* Can it take frames now? A processor whose sink is down is picked only
   * when nothing else can take the frame (the frame then waits in Redis). */
  bool (*is_up)(const struct fb_sink *s);
  /* Inside Redis: appends the frame's write to the hand-off transaction
   * `tx`. NULL for a sink outside Redis. */
  void (*stage)(struct fb_sink *s, struct fb_buf *tx, const struct fb_proc *p,
                const struct fb_frame *f);
  /* Outside Redis: sends one frame. 0, or a negative errno: it is held. */
  int (*send)(struct fb_sink *s, const struct fb_proc *p, const struct fb_frame *f);
  /* Outside Redis, after one or more batches' sends: waits for what must be
   * confirmed before their sources are acked, and calls held(ctx, frame_id)
   * for each frame that was not. Returns false when their fate is unknown
   * (then all of those frames are held). */
  bool (*commit)(struct fb_sink *s, void (*held)(void *ctx, const char *frame_id), void *ctx);
  /* Outside Redis, optional: true while sends wait for a confirmation that
   * commit would wait for (JetStream's acks). The ingest thread then lets a
   * few batches' sends be confirmed together instead of waiting after each. */
  bool (*unconfirmed)(const struct fb_sink *s);
  /* Optional: true when a frame sent to it twice is kept once (JetStream's
   * Nats-Msg-Id window). Frames whose hand-off may have reached it are then
   * sent to it again rather than to another sink (see dispatch.h). */
  bool (*dedupes)(const struct fb_sink *s);
};

/* Every sink a registration may name, in order; NULL-terminated. The first
 * two keep the indexes FB_TRANSPORT_REDIS and FB_TRANSPORT_NATS. */
extern const struct fb_sink_ops *const fb_sink_list[];

/* True when sink `index` keeps its frames in a Redis stream (it stages them
 * in the hand-off): the processor's depth is read there, and a dead one's
 * backlog can be moved from there. */
bool fb_sink_in_redis(int index);

/* The index of sink `name` in fb_sink_list, or -1. */
int fb_sink_find(const char *name);

/* The sinks of this gateway, one instance of each in fb_sink_list. */
struct fb_sinks {
  struct fb_sink *by_index[FB_SINKS_MAX];
  int n;
};

/* For a sink with no state of its own: a new bare struct fb_sink for
 * `ops`, and its destroy. */
int fb_sink_create_bare(struct fb_sink **out, const struct fb_sink_ops *ops);
void fb_sink_destroy_bare(struct fb_sink *s);

/* Creates every sink. Returns 0 or a negative errno (nothing left). */
int fb_sinks_create(struct fb_sinks *out, const struct fb_sink_env *env);
void fb_sinks_destroy(struct fb_sinks *s);

#endif
