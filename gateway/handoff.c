/*
 * The atomic hand-off as RESP (see handoff.h). Pure; any thread with its
 * own buffer.
 */
#include "framebuffer/handoff.h"

#include <errno.h>
#include <string.h>

#include "framebuffer/clock.h"

void fb_handoff_begin(struct fb_handoff *h, struct fb_buf *tx, int64_t now_ms, int64_t dlq_maxlen)
{
  h->tx = tx;
  h->nwrites = 0;
  h->dlq_maxlen = dlq_maxlen;
  fb_iso_time(now_ms, h->at, sizeof h->at);
  fb_buf_reset(tx);
  fb_buf_puts(tx, "*1\r\n$5\r\nMULTI\r\n");
}

void fb_handoff_frame(struct fb_handoff *h, struct fb_sink *sink, const struct fb_proc *p,
                      const struct fb_frame *f)
{
  sink->ops->stage(sink, h->tx, p, f);
  h->nwrites++;
}

void fb_handoff_dlq(struct fb_handoff *h, const struct fb_frame *f, enum fb_reason reason,
                    struct fb_str source_id, const char *detail)
{
  fb_frame_append_dlq(h->tx, f, FB_DLQ_STREAM, h->dlq_maxlen, fb_reason_name(reason), source_id,
                      h->at, detail);
  h->nwrites++;
}

void fb_handoff_ack(struct fb_handoff *h, const char *stream, const char *group, size_t n)
{
  fb_buf_resp_array(h->tx, 3 + n);
  fb_buf_resp_bulk(h->tx, "XACK", 4);
  fb_buf_resp_bulk(h->tx, stream, strlen(stream));
  fb_buf_resp_bulk(h->tx, group, strlen(group));
}

void fb_handoff_ack_id(struct fb_handoff *h, const char *id, size_t len)
{
  fb_buf_resp_bulk(h->tx, id, len);
}

int fb_handoff_end(struct fb_handoff *h)
{
  fb_buf_puts(h->tx, "*1\r\n$4\r\nEXEC\r\n");
  return h->tx->truncated ? -ENOSPC : 0;
}
