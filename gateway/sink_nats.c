/*
 * The NATS sink: a frame is published on its processor's subject (core
 * NATS, at most once) or into the JetStream stream FRAMES (acked after
 * JetStream's ack). It rides on the gateway's NATS connection (nats_bridge.h)
 * and is down while that is (or when NATS_URL=none). Ingest thread.
 */
#include <errno.h>
#include <stdlib.h>

#include "framebuffer/nats_bridge.h"
#include "framebuffer/sink.h"

extern const struct fb_sink_ops fb_sink_nats; /* below */

struct nats_sink {
  struct fb_sink base;
  struct fb_nats *nats; /* borrowed; NULL with NATS_URL=none */
};

static struct fb_nats *nats_of(const struct fb_sink *s)
{
  return ((const struct nats_sink *)s)->nats;
}

static int create(struct fb_sink **out, struct fb_app *app)
{
  struct nats_sink *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->base.ops = &fb_sink_nats;
  s->nats = app->nats;
  *out = &s->base;
  return 0;
}

static void destroy(struct fb_sink *s)
{
  free((struct nats_sink *)s);
}

static bool is_up(const struct fb_sink *s)
{
  return fb_nats_is_connected(nats_of(s));
}

static int send_one(struct fb_sink *s, const struct fb_proc *p, const struct fb_frame *f)
{
  return nats_of(s) ? fb_nats_publish_frame(nats_of(s), p, f) : -ENOTCONN;
}

static bool commit(struct fb_sink *s, void (*held)(void *ctx, const char *frame_id), void *ctx)
{
  if (!nats_of(s)) return true;
  bool all_failed = false;
  fb_nats_complete(nats_of(s), held, ctx, &all_failed);
  return !all_failed;
}

const struct fb_sink_ops fb_sink_nats = {
    .name = "nats",
    .queues = true,
    .create = create,
    .destroy = destroy,
    .is_up = is_up,
    .send = send_one,
    .commit = commit,
};
