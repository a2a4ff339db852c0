/*
 * The control thread (see control.h). One thread, its own Redis connection;
 * it touches shared state only through the registry's API and atomics.
 */
#include "framebuffer/control.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"
#include "framebuffer/redis.h"
#include "framebuffer/store.h"

#define SYNC_INTERVAL_MS 500
#define LAG_INTERVAL_MS  1000
#define TICK_MS          100

struct fb_control {
  struct fb_app *app;
  struct fb_redis redis;
  pthread_t thread;
  atomic_bool stop;
  int64_t next_sync, next_lag;
  bool loaded_once;
};

static void sync_registry(struct fb_control *c)
{
  uint64_t version = fb_registry_local_version(c->app->registry);
  struct fb_proc **procs;
  size_t n;
  if (fb_store_load(&c->redis, c->app->cfg->input_stream, &procs, &n)) return;
  int rc = fb_registry_sync(c->app->registry, procs, n, version);
  if (!c->loaded_once && rc >= 0) {
    fb_info("control", "registry loaded: %zu processors", n);
    c->loaded_once = true;
  }
  fb_store_free(procs, n);
}

/* Reads lag and pending of our group from XINFO GROUPS. */
static void sample_lag(struct fb_control *c)
{
  const struct fb_config *cfg = c->app->cfg;
  redisReply *rep = fb_redis_cmd(&c->redis, "XINFO GROUPS %s", cfg->input_stream);
  if (!rep) return;
  if (rep->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < rep->elements; i++) {
      const redisReply *g = rep->element[i];
      if (g->type != REDIS_REPLY_ARRAY) continue;
      bool ours = false;
      long long lag = -1, pending = -1;
      for (size_t k = 0; k + 1 < g->elements; k += 2) {
        const char *key = g->element[k]->str;
        const redisReply *v = g->element[k + 1];
        if (!key) continue;
        if (!strcmp(key, "name"))
          ours = v->str && !strcmp(v->str, cfg->consumer_group);
        else if (!strcmp(key, "lag") && v->type == REDIS_REPLY_INTEGER)
          lag = v->integer;
        else if (!strcmp(key, "pending") && v->type == REDIS_REPLY_INTEGER)
          pending = v->integer;
      }
      if (ours) {
        atomic_store(&c->app->metrics->consumer_lag, lag);
        atomic_store(&c->app->metrics->input_pending, pending);
      }
    }
  }
  freeReplyObject(rep);
}

static void *run(void *arg)
{
  struct fb_control *c = arg;
  while (!atomic_load(&c->stop)) {
    int64_t now = fb_mono_ms();
    if (now >= c->next_sync) {
      sync_registry(c);
      c->next_sync = now + SYNC_INTERVAL_MS;
    }
    if (now >= c->next_lag) {
      sample_lag(c);
      fb_metrics_tick(c->app->metrics, fb_wall_ms());
      c->next_lag = now + LAG_INTERVAL_MS;
    }
    struct timespec ts = {0, TICK_MS * 1000000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

int fb_control_start(struct fb_control **out, struct fb_app *app)
{
  struct fb_control *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->app = app;
  fb_redis_init(&c->redis, &app->cfg->redis, "control", 2000);
  sync_registry(c);
  c->next_sync = fb_mono_ms() + SYNC_INTERVAL_MS;
  int rc = pthread_create(&c->thread, NULL, run, c);
  if (rc) {
    fb_redis_close(&c->redis);
    free(c);
    return -rc;
  }
  *out = c;
  return 0;
}

void fb_control_stop(struct fb_control *c)
{
  if (!c) return;
  atomic_store(&c->stop, true);
  pthread_join(c->thread, NULL);
  fb_redis_close(&c->redis);
  free(c);
}
