/*
 * The Redis stream sink: a frame is an XADD to its processor's stream
 * (capped with MAXLEN ~ max_queue), written in the hand-off transaction with
 * the XACK of its source. Ingest thread.
 */
#include "framebuffer/sink.h"

extern const struct fb_sink_ops fb_sink_redis; /* below */

static int create(struct fb_sink **out, const struct fb_sink_env *env)
{
  return fb_sink_create_bare(out, &fb_sink_redis);
}

static bool is_up(const struct fb_sink *s)
{
  return true; /* without Redis nothing is read either */
}

static void stage(struct fb_sink *s, struct fb_buf *tx, const struct fb_proc *p,
                  const struct fb_frame *f)
{
  fb_frame_append_xadd(tx, f, p->stream, p->max_queue);
}

const struct fb_sink_ops fb_sink_redis = {
    .name = "redis",
    .queues = true,
    .create = create,
    .destroy = fb_sink_destroy_bare,
    .is_up = is_up,
    .stage = stage,
};
