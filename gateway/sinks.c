/*
 * The list of sinks (see sink.h), and their creation. Main thread.
 */
#include "framebuffer/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern const struct fb_sink_ops fb_sink_redis, fb_sink_nats, fb_sink_null;

const struct fb_sink_ops *const fb_sink_list[] = {
    &fb_sink_redis, /* FB_TRANSPORT_REDIS */
    &fb_sink_nats,  /* FB_TRANSPORT_NATS */
    &fb_sink_null,
    NULL,
};

int fb_sink_find(const char *name)
{
  for (int i = 0; fb_sink_list[i]; i++)
    if (!strcmp(fb_sink_list[i]->name, name)) return i;
  return -1;
}

bool fb_sink_in_redis(int index)
{
  return fb_sink_list[index]->stage != NULL;
}

int fb_sink_create_bare(struct fb_sink **out, const struct fb_sink_ops *ops)
{
  struct fb_sink *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->ops = ops;
  *out = s;
  return 0;
}

void fb_sink_destroy_bare(struct fb_sink *s)
{
  free(s);
}

int fb_sinks_create(struct fb_sinks *out, const struct fb_sink_env *env)
{
  memset(out, 0, sizeof *out);
  for (int i = 0; fb_sink_list[i]; i++) {
    if (i == FB_SINKS_MAX) return -E2BIG;
    int rc = fb_sink_list[i]->create(&out->by_index[i], env);
    if (rc) {
      fb_sinks_destroy(out);
      return rc;
    }
    out->n = i + 1;
  }
  return 0;
}

void fb_sinks_destroy(struct fb_sinks *s)
{
  for (int i = 0; i < s->n; i++)
    if (s->by_index[i]) fb_sink_list[i]->destroy(s->by_index[i]);
  s->n = 0;
}
