/*
 * The null sink: a frame is counted and acked, and goes nowhere. For
 * benchmarks: it measures the gateway without output I/O (register a
 * processor with "transport": "null"). Ingest thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "framebuffer/sink.h"

extern const struct fb_sink_ops fb_sink_null; /* below */

static int create(struct fb_sink **out, struct fb_app *app)
{
  struct fb_sink *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->ops = &fb_sink_null;
  *out = s;
  return 0;
}

static void destroy(struct fb_sink *s)
{
  free(s);
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
    .destroy = destroy,
    .is_up = is_up,
    .send = send_one,
    .commit = commit,
};
