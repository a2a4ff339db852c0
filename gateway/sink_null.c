/*
 * The null sink: a frame is counted and acked, and goes nowhere. For
 * benchmarks: it measures the gateway without output I/O (register a
 * processor with "transport": "null"). Ingest thread.
 */
#include "framebuffer/sink.h"

extern const struct fb_sink_ops fb_sink_null; /* below */

static int create(struct fb_sink **out, const struct fb_sink_env *env)
{
  return fb_sink_create_bare(out, &fb_sink_null);
}

static bool is_up(const struct fb_sink *s)
{
  return true;
}

static int send_one(struct fb_sink *s, const struct fb_proc *p, const struct fb_frame *f)
{
  return 0;
}

static bool commit(struct fb_sink *s, void (*held)(void *ctx, const char *frame_id), void *ctx)
{
  return true;
}

const struct fb_sink_ops fb_sink_null = {
    .name = "null",
    .queues = false,
    .create = create,
    .destroy = fb_sink_destroy_bare,
    .is_up = is_up,
    .send = send_one,
    .commit = commit,
};
