/*
 * The control thread (see control.h). One thread, its own Redis connection;
 * it touches shared state only through the registry's API and atomics.
 * Every HEALTH_INTERVAL_MS it re-evaluates each processor's health; every
 * change is logged, counted and published, and a dead processor's backlog
 * is rescued.
 */
#include "framebuffer/control.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/health.h"
#include "framebuffer/log.h"
#include "framebuffer/lookup.h"
#include "framebuffer/shadows.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/redis.h"
#include "framebuffer/rescue.h"
#include "framebuffer/sink.h"
#include "framebuffer/store.h"

#define SYNC_INTERVAL_MS    500
#define LAG_INTERVAL_MS     1000
#define HEALTH_INTERVAL_MS  200
#define DEPTH_INTERVAL_MS   250  /* queue depths for least_loaded, at most this often */
#define DEPTH_MAX_RATE      1000 /* ... and at most this many XINFO a second */
#define RESCUE_RETRY_MS     1000 /* a dead processor's stream is checked this often */
#define RESCUE_MAX          2048 /* frames moved per processor per pass */
#define TICK_MS             50
#define SHADOWS_INTERVAL_MS 200 /* the fleet's shadows reach this replica within this */

struct fb_control {
  struct fb_app *app;
  struct fb_redis redis;
  pthread_t thread;
  atomic_bool stop;
  int64_t next_sync, next_lag, next_health, next_depth, next_shadows;
  int64_t started_ms;
  bool loaded_once;
  struct fb_rescue *rescue;
  struct fb_lookup *lookup; /* answers the other replicas' frame lookups */
};

static void sync_registry(struct fb_control *c)
{
  uint64_t version = fb_registry_local_version(c->app->registry);
  struct fb_proc **procs;
  size_t n;
  struct fb_snapshot *known = fb_registry_snapshot(c->app->registry);
  int rc = fb_store_load(&c->redis, c->app->cfg->input_stream, known, &procs, &n);
  fb_snapshot_release(known);
  if (rc) return;
  rc = fb_registry_sync(c->app->registry, procs, n, version);
  if (!c->loaded_once && rc >= 0) {
    fb_info("control", "registry loaded: %zu processors", n);
    c->loaded_once = true;
  }
  fb_store_free(procs, n);
}

/* Finds consumer group `name` in an XINFO GROUPS reply; its lag (-1 when
 * Redis does not know it), pending count and (when `last_delivered` is not
 * NULL) last delivered id go to the out-arguments. */
static bool group_info(const redisReply *groups, const char *name, long long *lag,
                       long long *pending, const char **last_delivered)
{
  for (size_t g = 0; groups->type == REDIS_REPLY_ARRAY && g < groups->elements; g++) {
    const redisReply *grp = groups->element[g];
    bool ours = false;
    *lag = -1;
    *pending = 0;
    for (size_t k = 0; grp->type == REDIS_REPLY_ARRAY && k + 1 < grp->elements; k += 2) {
      const char *key = grp->element[k]->str;
      const redisReply *val = grp->element[k + 1];
      if (!key) continue;
      if (!strcmp(key, "name"))
        ours = val->str && !strcmp(val->str, name);
      else if (!strcmp(key, "lag") && val->type == REDIS_REPLY_INTEGER)
        *lag = val->integer;
      else if (!strcmp(key, "pending") && val->type == REDIS_REPLY_INTEGER)
        *pending = val->integer;
      else if (!strcmp(key, "last-delivered-id") && last_delivered && val->str)
        *last_delivered = val->str;
    }
    if (ours) return true;
  }
  return false;
}

/* A group's lag and pending count from the replies of XINFO GROUPS and
 * XINFO STREAM of its stream. Redis 7.0 can report a lag that is off by a
 * constant when its entries-read counter lost track (after a restart from
 * AOF, or on a promoted replica); when the group has delivered the stream's
 * last entry the lag is 0 whatever it says. Returns false when there is no
 * such group. */
static bool group_depth(const redisReply *groups, const redisReply *stream, const char *name,
                        long long *lag, long long *pending)
{
  const char *delivered = NULL;
  if (!group_info(groups, name, lag, pending, &delivered)) return false;
  for (size_t k = 0; stream->type == REDIS_REPLY_ARRAY && k + 1 < stream->elements; k += 2)
    if (stream->element[k]->str && !strcmp(stream->element[k]->str, "last-generated-id") &&
        stream->element[k + 1]->str && delivered && !strcmp(stream->element[k + 1]->str, delivered))
      *lag = 0;
  return true;
}

/* The input group's lag and pending count. */
static void sample_lag(struct fb_control *c)
{
  const struct fb_config *cfg = c->app->cfg;
  if (fb_redis_ensure(&c->redis)) return;
  redisContext *ctx = c->redis.ctx;
  redisAppendCommand(ctx, "XINFO GROUPS %s", cfg->input_stream);
  redisAppendCommand(ctx, "XINFO STREAM %s", cfg->input_stream);
  void *groups = NULL, *stream = NULL;
  if (redisGetReply(ctx, &groups) != REDIS_OK || redisGetReply(ctx, &stream) != REDIS_OK) {
    fb_redis_drop(&c->redis, ctx->errstr);
    if (groups) freeReplyObject(groups);
    return;
  }
  long long lag, pending;
  if (group_depth(groups, stream, cfg->consumer_group, &lag, &pending)) {
    atomic_store(&c->app->metrics->consumer_lag, lag);
    atomic_store(&c->app->metrics->input_pending, pending);
  }
  freeReplyObject(groups);
  freeReplyObject(stream);
}

/* Per-processor frames/s over the last second, for the dashboard. */
static void sample_rates(struct fb_control *c, int64_t elapsed_ms)
{
  struct fb_snapshot *s = fb_registry_snapshot(c->app->registry);
  for (size_t i = 0; i < s->n; i++) {
    struct fb_proc_live *l = s->procs[i]->live;
    uint64_t now = atomic_load(&l->frames_routed);
    if (elapsed_ms > 0 && now >= l->rate_prev)
      atomic_store(&l->rate, (int64_t)((now - l->rate_prev) * 1000 / (uint64_t)elapsed_ms));
    l->rate_prev = now;
  }
  fb_snapshot_release(s);
}

/* Reads the group frame-processors' lag + pending of every Redis
 * processor's stream in one pipeline: the queue depth least_loaded and the
 * overload policies use. Returns how many processors there are. */
static size_t poll_depths(struct fb_control *c)
{
  if (fb_redis_ensure(&c->redis)) return 0;
  struct fb_snapshot *s = fb_registry_snapshot(c->app->registry);
  redisContext *ctx = c->redis.ctx;
  size_t sent = 0;
  for (size_t i = 0; i < s->n; i++)
    if (fb_sink_in_redis(s->procs[i]->transport)) {
      redisAppendCommand(ctx, "XINFO GROUPS %s", s->procs[i]->stream);
      redisAppendCommand(ctx, "XINFO STREAM %s", s->procs[i]->stream);
      sent++;
    }
  for (size_t i = 0; i < s->n && sent; i++) {
    struct fb_proc *p = s->procs[i];
    if (!fb_sink_in_redis(p->transport)) continue;
    sent--;
    void *groups = NULL, *stream = NULL;
    if (redisGetReply(ctx, &groups) != REDIS_OK || redisGetReply(ctx, &stream) != REDIS_OK) {
      fb_redis_drop(&c->redis, ctx->errstr);
      if (groups) freeReplyObject(groups);
      break;
    }
    long long lag, pending, depth = -1;
    if (group_depth(groups, stream, FB_PROCESSOR_GROUP, &lag, &pending))
      depth = (lag > 0 ? lag : 0) + pending;
    freeReplyObject(groups);
    freeReplyObject(stream);
    if (depth >= 0) {
      atomic_store(&p->live->queue_depth, depth);
      atomic_store(&p->live->sent_since_poll, 0);
    }
  }
  size_t n = s->n;
  fb_snapshot_release(s);
  return n;
}

/* Since when a processor without heartbeats counts as healthy: its
 * registration, or when this gateway (re)started or first learned of it,
 * whichever is latest. */
static int64_t known_since(const struct fb_control *c, const struct fb_proc *p)
{
  int64_t t = p->registered_at_ms > c->started_ms ? p->registered_at_ms : c->started_ms;
  return p->live->known_since_ms > t ? p->live->known_since_ms : t;
}

/* Re-evaluates every processor's health; reports changes and rescues the
 * backlog of the dead. */
static void check_health(struct fb_control *c)
{
  struct fb_app *app = c->app;
  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  int64_t now = fb_wall_ms();
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc *p = s->procs[i];
    struct fb_proc_live *live = p->live;
    struct fb_health_input in = {
        .now_ms = now,
        .last_heartbeat_ms = atomic_load(&live->last_heartbeat_ms),
        .known_since_ms = known_since(c, p),
        .interval_ms = p->heartbeat_interval_ms,
        .timeout_ms = app->cfg->heartbeat_timeout_ms,
        .stopping = atomic_load(&live->stopping),
    };
    enum fb_health h = fb_health_eval(&in);
    enum fb_health old = fb_proc_set_health(p, h);
    if (old != h) {
      if (in.last_heartbeat_ms)
        fb_info("health", "processor %s: %s -> %s (last heartbeat %lld ms ago%s)", p->id,
                fb_health_name(old), fb_health_name(h), (long long)(now - in.last_heartbeat_ms),
                in.stopping ? ", it said stopping" : "");
      else
        fb_info("health", "processor %s: %s -> %s (no heartbeat in %lld ms)", p->id,
                fb_health_name(old), fb_health_name(h), (long long)(now - in.known_since_ms));
      atomic_fetch_add(&app->metrics->health_changes, 1);
      /* Every replica sees the change; the first to tell Redis announces it. */
      if (fb_fleet_announce_health(app->fleet, &c->redis, p->id, old, h))
        fb_event_emit(app->events, "health", p->id, fb_health_name(h), "was %s",
                      fb_health_name(old));
      live->next_rescue_ms = 0;
    }
    if (h == FB_HEALTH_DEAD && fb_sink_in_redis(p->transport) && now >= live->next_rescue_ms) {
      long moved = fb_rescue_run(c->rescue, &c->redis, s, p, RESCUE_MAX);
      /* More to move: come back on the next pass; else check again later. */
      live->next_rescue_ms = moved >= RESCUE_MAX ? 0 : now + RESCUE_RETRY_MS;
    }
  }
  fb_snapshot_release(s);
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
    if (now >= c->next_depth) {
      /* A large registry is read less often, to keep Redis's work bounded. */
      int64_t every = (int64_t)poll_depths(c) * 2 * 1000 / DEPTH_MAX_RATE; /* 2 XINFO each */
      c->next_depth = now + (every > DEPTH_INTERVAL_MS ? every : DEPTH_INTERVAL_MS);
    }
    if (now >= c->next_health) {
      check_health(c);
      c->next_health = now + HEALTH_INTERVAL_MS;
    }
    fb_nats_check(c->app->nats);
    fb_fleet_tick(c->app->fleet, &c->redis);
    fb_lookup_tick(c->lookup, &c->redis);
    if (now >= c->next_shadows) {
      fb_shadows_poll(c->app->shadows, &c->redis);
      c->next_shadows = now + SHADOWS_INTERVAL_MS;
    }
    if (fb_fleet_registry_changed(c->app->fleet)) c->next_sync = 0; /* read it now */
    if (now >= c->next_lag) {
      sample_rates(c, now - (c->next_lag - LAG_INTERVAL_MS));
      sample_lag(c);
      fb_metrics_tick(c->app->metrics, fb_wall_ms());
      c->next_lag = now + LAG_INTERVAL_MS;
    }
    fb_sleep_ms(TICK_MS);
  }
  return NULL;
}

int fb_control_start(struct fb_control **out, struct fb_app *app)
{
  struct fb_control *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->app = app;
  c->started_ms = fb_wall_ms();
  fb_redis_init(&c->redis, &app->cfg->redis, "control", 2000);
  if (fb_rescue_create(&c->rescue, app->cfg, app->metrics) || fb_lookup_create(&c->lookup, app)) {
    fb_rescue_destroy(c->rescue);
    free(c);
    return -ENOMEM;
  }
  sync_registry(c);
  c->next_sync = fb_mono_ms() + SYNC_INTERVAL_MS;
  int rc = pthread_create(&c->thread, NULL, run, c);
  if (rc) {
    fb_redis_close(&c->redis);
    fb_rescue_destroy(c->rescue);
    fb_lookup_destroy(c->lookup);
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
  fb_fleet_leave(c->app->fleet, &c->redis);
  fb_redis_close(&c->redis);
  fb_rescue_destroy(c->rescue);
  fb_lookup_destroy(c->lookup);
  free(c);
}
