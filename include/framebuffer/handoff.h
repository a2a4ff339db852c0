/*
 * The atomic hand-off, as one pre-built RESP transaction: MULTI, one write
 * per frame (its sink's stage, or an XADD to the DLQ), one XACK of the
 * source entries, EXEC. Redis runs it whole or not at all, so a frame is
 * never both delivered and still pending, nor acked and lost. Pure: it only
 * writes into the caller's buffer. The ingest thread uses it for the input
 * stream, the control thread (rescue) for a dead processor's stream.
 */
#ifndef FRAMEBUFFER_HANDOFF_H
#define FRAMEBUFFER_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "framebuffer/buf.h"
#include "framebuffer/frame.h"
#include "framebuffer/metrics.h"
#include "framebuffer/sink.h"

struct fb_handoff {
  struct fb_buf *tx;
  size_t nwrites; /* commands queued before the XACK */
  int64_t dlq_maxlen;
  char at[40]; /* dlq_at of this hand-off */
};

/* Starts a hand-off in `tx` (reset first) at unix time `now_ms`. */
void fb_handoff_begin(struct fb_handoff *h, struct fb_buf *tx, int64_t now_ms, int64_t dlq_maxlen);

/* Frame `f` for processor `p` through `sink`, a sink inside Redis. */
void fb_handoff_frame(struct fb_handoff *h, struct fb_sink *sink, const struct fb_proc *p,
                      const struct fb_frame *f);

/* Frame `f`, read as entry `source_id`, to the DLQ for `reason`. */
void fb_handoff_dlq(struct fb_handoff *h, const struct fb_frame *f, enum fb_reason reason,
                    struct fb_str source_id, const char *detail);

/* The XACK of `n` entries of `stream` for `group`; the ids follow with
 * fb_handoff_ack_id, then fb_handoff_end. */
void fb_handoff_ack(struct fb_handoff *h, const char *stream, const char *group, size_t n);
void fb_handoff_ack_id(struct fb_handoff *h, const char *id, size_t len);

/* EXEC. Returns 0, or -ENOSPC when the buffer's maximum was reached. */
int fb_handoff_end(struct fb_handoff *h);

#endif
