/*
 * The fleet through Redis (see fleet.h). The control thread owns the stream
 * positions and the timers; `lock` guards the cached view, which other
 * threads copy.
 */
#include "framebuffer/fleet.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/api.h"
#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"
#include "framebuffer/settings.h"

#define EVENTS_MAXLEN     1000 /* the event stream keeps about this many */
#define HEARTBEATS_MAXLEN 10000
#define EVENTS_HISTORY    100 /* read at start, for the dashboard's log */
#define READ_COUNT        512 /* entries per stream per tick */
#define OUTBOX_BATCH      256 /* events appended per tick */
#define SETTINGS_EVERY_MS 200
#define VIEW_EVERY_MS     1000

struct fb_fleet {
  struct fb_app *app;
  char k_events[FB_NAME_MAX + 32], k_heartbeats[FB_NAME_MAX + 32], k_health[FB_NAME_MAX + 32];
  char k_replicas[FB_NAME_MAX + 32], k_prefix[FB_NAME_MAX + 32], k_self[2 * FB_NAME_MAX + 32];
  /* control thread */
  bool started; /* the streams' positions are known */
  char ev_last[48], hb_last[48];
  int64_t next_settings_ms, next_view_ms;
  bool registry_changed;  /* another replica (un)registered a processor */
  struct fb_event *batch; /* OUTBOX_BATCH events being appended */
  /* any thread */
  pthread_mutex_t lock;
  json_t *view; /* guarded by lock */
  atomic_int_fast64_t in_per_s, out_per_s;
};

int fb_fleet_create(struct fb_fleet **out, struct fb_app *app)
{
  struct fb_fleet *f = calloc(1, sizeof *f);
  if (!f || !(f->batch = calloc(OUTBOX_BATCH, sizeof *f->batch))) {
    free(f);
    return -ENOMEM;
  }
  f->app = app;
  const char *g = app->cfg->consumer_group;
  snprintf(f->k_events, sizeof f->k_events, "frame-buffer:%s:events", g);
  snprintf(f->k_heartbeats, sizeof f->k_heartbeats, "frame-buffer:%s:heartbeats", g);
  snprintf(f->k_health, sizeof f->k_health, "frame-buffer:%s:health", g);
  snprintf(f->k_replicas, sizeof f->k_replicas, "frame-buffer:%s:replicas", g);
  snprintf(f->k_prefix, sizeof f->k_prefix, "frame-buffer:%s:replica:", g);
  snprintf(f->k_self, sizeof f->k_self, "%s%s", f->k_prefix, app->cfg->consumer_name);
  pthread_mutex_init(&f->lock, NULL);
  *out = f;
  return 0;
}

void fb_fleet_destroy(struct fb_fleet *f)
{
  if (!f) return;
  json_decref(f->view);
  pthread_mutex_destroy(&f->lock);
  free(f->batch);
  free(f);
}

/* ================================================================ events */

/* An event from the fields of a stream entry. */
static void event_from_fields(const redisReply *fv, struct fb_event *ev)
{
  memset(ev, 0, sizeof *ev);
  for (size_t k = 0; fv->type == REDIS_REPLY_ARRAY && k + 1 < fv->elements; k += 2) {
    const char *name = fv->element[k]->str, *v = fv->element[k + 1]->str;
    if (!name || !v) continue;
    if (!strcmp(name, "event"))
      snprintf(ev->event, sizeof ev->event, "%s", v);
    else if (!strcmp(name, "processor_id"))
      snprintf(ev->processor_id, sizeof ev->processor_id, "%s", v);
    else if (!strcmp(name, "status"))
      snprintf(ev->status, sizeof ev->status, "%s", v);
    else if (!strcmp(name, "detail"))
      snprintf(ev->detail, sizeof ev->detail, "%s", v);
    else if (!strcmp(name, "replica"))
      snprintf(ev->replica, sizeof ev->replica, "%s", v);
    else if (!strcmp(name, "request_id"))
      snprintf(ev->request_id, sizeof ev->request_id, "%s", v);
    else if (!strcmp(name, "at"))
      ev->at_ms = strtoll(v, NULL, 10);
  }
}

static void append_event(redisContext *c, const char *key, const struct fb_event *ev)
{
  char at[24], maxlen[16];
  snprintf(at, sizeof at, "%lld", (long long)ev->at_ms);
  snprintf(maxlen, sizeof maxlen, "%d", EVENTS_MAXLEN);
  const char *argv[] = {"XADD",         key,
                        "MAXLEN",       "~",
                        maxlen,         "*",
                        "event",        ev->event,
                        "processor_id", ev->processor_id,
                        "status",       ev->status,
                        "detail",       ev->detail,
                        "replica",      ev->replica,
                        "request_id",   ev->request_id,
                        "at",           at};
  redisAppendCommandArgv(c, (int)(sizeof argv / sizeof *argv), argv, NULL);
}

/* Reads the last `count` entries of `key` (newest first), for a start. */
static redisReply *newest(struct fb_redis *r, const char *key, int count)
{
  redisReply *rep = fb_redis_cmd(r, "XREVRANGE %s + - COUNT %d", key, count);
  if (rep && rep->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(rep);
    return NULL;
  }
  return rep;
}

/* Learns where the streams end, and shows the last events. */
static int start(struct fb_fleet *f, struct fb_redis *r)
{
  redisReply *ev = newest(r, f->k_events, EVENTS_HISTORY);
  if (!ev) return -EIO;
  redisReply *hb = newest(r, f->k_heartbeats, 1);
  if (!hb) {
    freeReplyObject(ev);
    return -EIO;
  }
  snprintf(f->ev_last, sizeof f->ev_last, "%s",
           ev->elements ? ev->element[0]->element[0]->str : "0-0");
  snprintf(f->hb_last, sizeof f->hb_last, "%s",
           hb->elements ? hb->element[0]->element[0]->str : "0-0");
  for (size_t i = ev->elements; i-- > 0;) {
    struct fb_event e;
    event_from_fields(ev->element[i]->element[1], &e);
    fb_events_push(f->app->events, &e);
  }
  freeReplyObject(ev);
  freeReplyObject(hb);
  f->started = true;
  return 0;
}

/* Gives the events taken from the outbox to the ring directly (Redis is
 * away: they are shown here at least). */
static void show_here(struct fb_fleet *f, size_t n)
{
  for (size_t i = 0; i < n; i++)
    fb_events_push(f->app->events, &f->batch[i]);
}

static void take_heartbeat(struct fb_fleet *f, const redisReply *fv)
{
  const redisReply *replica = NULL, *body = NULL;
  for (size_t k = 0; fv->type == REDIS_REPLY_ARRAY && k + 1 < fv->elements; k += 2) {
    const char *name = fv->element[k]->str;
    if (name && !strcmp(name, "replica")) replica = fv->element[k + 1];
    if (name && !strcmp(name, "body")) body = fv->element[k + 1];
  }
  if (!body || !body->str) return;
  if (replica && replica->str && !strcmp(replica->str, f->app->cfg->consumer_name))
    return; /* applied when it came in */
  struct fb_heartbeat hb;
  char why[200] = "no such processor here";
  int rc = fb_heartbeat_parse(&hb, NULL, body->str, body->len, why, sizeof why);
  if (!rc) rc = fb_heartbeat_record(f->app->registry, f->app->metrics, &hb, fb_wall_ms());
  if (rc)
    fb_debug("fleet", "heartbeat for %s from replica %s ignored: %s", hb.id[0] ? hb.id : "?",
             replica && replica->str ? replica->str : "?", why);
}

/* One XREAD reply: [[stream, [[id, fields]...]]...] */
static void take_new(struct fb_fleet *f, const redisReply *rep)
{
  for (size_t s = 0; rep->type == REDIS_REPLY_ARRAY && s < rep->elements; s++) {
    const redisReply *st = rep->element[s];
    if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 || !st->element[0]->str) continue;
    bool events = !strcmp(st->element[0]->str, f->k_events);
    const redisReply *entries = st->element[1];
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
      const redisReply *e = entries->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !e->element[0]->str) continue;
      char *last = events ? f->ev_last : f->hb_last;
      snprintf(last, sizeof f->ev_last, "%s", e->element[0]->str);
      if (events) {
        struct fb_event ev;
        event_from_fields(e->element[1], &ev);
        fb_events_push(f->app->events, &ev);
        if ((!strcmp(ev.event, "register") || !strcmp(ev.event, "unregister")) &&
            strcmp(ev.replica, f->app->cfg->consumer_name))
          f->registry_changed = true;
      } else {
        take_heartbeat(f, e->element[1]);
      }
    }
  }
}

/* Appends the outbox and reads what is new, in one round trip. */
static void exchange(struct fb_fleet *f, struct fb_redis *r)
{
  size_t n = fb_events_take_outbox(f->app->events, f->batch, OUTBOX_BATCH);
  redisContext *c = r->ctx;
  for (size_t i = 0; i < n; i++)
    append_event(c, f->k_events, &f->batch[i]);
  char count[16];
  snprintf(count, sizeof count, "%d", READ_COUNT);
  const char *argv[] = {"XREAD",     "COUNT",         count,      "STREAMS",
                        f->k_events, f->k_heartbeats, f->ev_last, f->hb_last};
  redisAppendCommandArgv(c, 8, argv, NULL);
  for (size_t i = 0; i <= n; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK) {
      fb_redis_drop(r, c->errstr);
      show_here(f, n);
      return;
    }
    redisReply *rep = v;
    if (i < n && rep->type == REDIS_REPLY_ERROR) {
      fb_warn("fleet", "appending an event to %s: %s", f->k_events, rep->str);
      fb_events_push(f->app->events, &f->batch[i]);
    } else if (i == n && rep->type != REDIS_REPLY_ERROR) {
      take_new(f, rep);
    }
    freeReplyObject(rep);
  }
}

/* ============================================================ health */

/* KEYS[1] the health hash; ARGV id, old, new. 1 when this replica is the
 * first to see the change. */
static const char announce_script[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if cur == ARGV[3] or (cur and cur ~= ARGV[2]) then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "return 1\n";

bool fb_fleet_announce_health(struct fb_fleet *f, struct fb_redis *r, const char *id,
                              enum fb_health old, enum fb_health now)
{
  redisReply *rep = fb_redis_cmd(r, "EVAL %s 1 %s %s %s %s", announce_script, f->k_health, id,
                                 fb_health_name(old), fb_health_name(now));
  bool mine = !rep || rep->type != REDIS_REPLY_INTEGER || rep->integer == 1;
  if (rep) freeReplyObject(rep);
  return mine;
}

void fb_fleet_forget(struct fb_fleet *f, struct fb_redis *r, const char *id)
{
  redisReply *rep = fb_redis_cmd(r, "HDEL %s %s", f->k_health, id);
  if (rep) freeReplyObject(rep);
}

/* ========================================================== heartbeats */

int fb_fleet_heartbeat(struct fb_fleet *f, struct fb_redis *r, const char *json, size_t len)
{
  char maxlen[16];
  snprintf(maxlen, sizeof maxlen, "%d", HEARTBEATS_MAXLEN);
  const char *argv[] = {"XADD",    f->k_heartbeats,
                        "MAXLEN",  "~",
                        maxlen,    "*",
                        "replica", f->app->cfg->consumer_name,
                        "body",    json};
  size_t lens[10];
  for (int i = 0; i < 9; i++)
    lens[i] = strlen(argv[i]);
  lens[9] = len; /* the body is not NUL-terminated */
  redisReply *rep = fb_redis_argv(r, 10, argv, lens);
  int rc = rep && rep->type == REDIS_REPLY_STRING ? 0 : -EIO;
  if (rep) freeReplyObject(rep);
  return rc;
}

/* ================================================================ view */

static json_t *counts_json(const atomic_uint_fast64_t *v, int n, const char *(*name)(int))
{
  json_t *o = json_object();
  for (int r = 0; r < n; r++)
    json_object_set_new(o, name(r), json_integer((json_int_t)atomic_load(&v[r])));
  return o;
}

static const char *reason_name(int r)
{
  return fb_reason_name((enum fb_reason)r);
}

static const char *move_name(int r)
{
  return fb_move_reason_name((enum fb_move_reason)r);
}

json_t *fb_fleet_record(struct fb_app *app, int64_t now_ms)
{
  struct fb_metrics *m = app->metrics;
  json_t *buckets = json_array();
  for (int b = 0; b <= FB_HIST_BUCKETS; b++)
    json_array_append_new(buckets, json_integer((json_int_t)atomic_load(&m->routing.buckets[b])));
  json_t *procs = json_object();
  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc_live *l = s->procs[i]->live;
    json_object_set_new(procs, s->procs[i]->id,
                        json_pack("[I,I]", (json_int_t)atomic_load(&l->frames_routed),
                                  (json_int_t)atomic_load(&l->rate)));
  }
  fb_snapshot_release(s);
  return json_pack(
      "{s:s,s:s,s:I,s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:{s:o,s:I},s:o}", "consumer",
      app->cfg->consumer_name, "version", FB_VERSION, "started_ms", (json_int_t)m->started_ms,
      "published_ms", (json_int_t)now_ms, "connections", fb_api_connections(app), "in_per_s",
      (json_int_t)atomic_load(&m->rate_in), "out_per_s", (json_int_t)atomic_load(&m->rate_out),
      "consumed", (json_int_t)atomic_load(&m->frames_consumed), "distributed",
      (json_int_t)atomic_load(&m->frames_distributed), "blocked",
      (json_int_t)atomic_load(&m->blocked_frames), "dropped",
      counts_json(m->dropped, FB_REASON_COUNT, reason_name), "dlq",
      counts_json(m->dlq, FB_REASON_POISON + 1, reason_name), "camera_moves",
      counts_json(m->camera_moves, FB_MOVE_COUNT, move_name), "latency", "buckets", buckets,
      "sum_ns", (json_int_t)atomic_load(&m->routing.sum_ns), "processors", procs);
}

static json_int_t int_of(const json_t *o, const char *k)
{
  return json_integer_value(json_object_get(o, k));
}

/* Adds the integer members of `from` into `into`. */
static void add_counts(json_t *into, const json_t *from)
{
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)from, k, v)
  {
    if (!json_is_integer(v)) continue;
    json_object_set_new(into, k, json_integer(int_of(into, k) + json_integer_value(v)));
  }
}

static json_t *latency_json(const uint64_t *buckets, uint64_t sum_ns)
{
  uint64_t count = 0;
  for (int b = 0; b <= FB_HIST_BUCKETS; b++)
    count += buckets[b];
  return json_pack("{s:f,s:f,s:f}", "p50", fb_buckets_quantile(buckets, 0.5) * 1000, "p99",
                   fb_buckets_quantile(buckets, 0.99) * 1000, "mean",
                   count ? (double)sum_ns / 1e6 / (double)count : 0.0);
}

static int by_consumer(const void *a, const void *b)
{
  const char *x = json_string_value(json_object_get(*(json_t *const *)a, "consumer"));
  const char *y = json_string_value(json_object_get(*(json_t *const *)b, "consumer"));
  return strcmp(x ? x : "", y ? y : "");
}

json_t *fb_fleet_merge(json_t *const *records, size_t n, int64_t now_ms, const char *self)
{
  static const char *const sums[] = {"in_per_s", "out_per_s", "consumed", "distributed", "blocked"};
  json_t *fleet = json_object(), *list = json_array(), *procs = json_object();
  json_t *dropped = json_object(), *dlq = json_object(), *moves = json_object();
  uint64_t buckets[FB_HIST_BUCKETS + 1] = {0}, sum_ns = 0;
  json_t **sorted = calloc(n + 1, sizeof *sorted);
  size_t live = 0;
  for (size_t i = 0; i < n && sorted; i++)
    if (json_is_object(records[i]) && json_is_string(json_object_get(records[i], "consumer")))
      sorted[live++] = records[i];
  if (sorted) qsort(sorted, live, sizeof *sorted, by_consumer);

  for (size_t i = 0; i < live; i++) {
    const json_t *rec = sorted[i];
    const char *name = json_string_value(json_object_get(rec, "consumer"));
    json_t *lat = json_object_get(rec, "latency");
    json_t *jb = json_object_get(lat, "buckets");
    uint64_t mine[FB_HIST_BUCKETS + 1] = {0};
    for (size_t b = 0; b <= FB_HIST_BUCKETS && b < json_array_size(jb); b++) {
      json_int_t v = json_integer_value(json_array_get(jb, b));
      mine[b] = v > 0 ? (uint64_t)v : 0;
      buckets[b] += mine[b];
    }
    json_int_t my_sum = int_of(lat, "sum_ns");
    sum_ns += my_sum > 0 ? (uint64_t)my_sum : 0;

    json_t *r = json_pack(
        "{s:s,s:O,s:I,s:I,s:I,s:b}", "consumer", name, "version", json_object_get(rec, "version"),
        "uptime_s", (json_int_t)((now_ms - int_of(rec, "started_ms")) / 1000), "last_seen_ms",
        int_of(rec, "published_ms"), "age_ms", (json_int_t)(now_ms - int_of(rec, "published_ms")),
        "self", self && !strcmp(self, name));
    json_t *conn = json_object_get(rec, "connections");
    json_object_set_new(r, "connections", conn ? json_incref(conn) : json_null());
    for (size_t k = 0; k < sizeof sums / sizeof *sums; k++) {
      json_object_set_new(r, sums[k], json_integer(int_of(rec, sums[k])));
      json_object_set_new(fleet, sums[k],
                          json_integer(int_of(fleet, sums[k]) + int_of(rec, sums[k])));
    }
    json_t *d = json_object_get(rec, "dropped"), *q = json_object_get(rec, "dlq");
    json_object_set_new(r, "dropped", json_is_object(d) ? json_incref(d) : json_object());
    json_object_set_new(r, "dlq", json_is_object(q) ? json_incref(q) : json_object());
    if (json_is_object(d)) add_counts(dropped, d);
    if (json_is_object(q)) add_counts(dlq, q);
    json_t *mv = json_object_get(rec, "camera_moves");
    json_object_set_new(r, "camera_moves", json_is_object(mv) ? json_incref(mv) : json_object());
    if (json_is_object(mv)) add_counts(moves, mv);
    json_object_set_new(r, "routing_latency_ms",
                        latency_json(mine, my_sum > 0 ? (uint64_t)my_sum : 0));
    json_array_append_new(list, r);

    const char *pid;
    json_t *pv;
    json_object_foreach(json_object_get(rec, "processors"), pid, pv)
    {
      json_t *t = json_object_get(procs, pid);
      json_int_t routed = json_integer_value(json_array_get(pv, 0));
      json_int_t rate = json_integer_value(json_array_get(pv, 1));
      if (t) {
        routed += json_integer_value(json_array_get(t, 0));
        rate += json_integer_value(json_array_get(t, 1));
      }
      json_object_set_new(procs, pid, json_pack("[I,I]", routed, rate));
    }
  }
  free(sorted);
  for (size_t k = 0; k < sizeof sums / sizeof *sums; k++)
    if (!json_object_get(fleet, sums[k])) json_object_set_new(fleet, sums[k], json_integer(0));
  json_object_set_new(fleet, "replicas", json_integer((json_int_t)live));
  json_object_set_new(fleet, "dropped", dropped);
  json_object_set_new(fleet, "dlq", dlq);
  json_object_set_new(fleet, "camera_moves", moves);
  json_object_set_new(fleet, "routing_latency_ms", latency_json(buckets, sum_ns));
  return json_pack("{s:o,s:o,s:o}", "fleet", fleet, "replicas", list, "processors", procs);
}

static void set_view(struct fb_fleet *f, json_t *view)
{
  json_t *fl = json_object_get(view, "fleet");
  atomic_store(&f->in_per_s, int_of(fl, "in_per_s"));
  atomic_store(&f->out_per_s, int_of(fl, "out_per_s"));
  pthread_mutex_lock(&f->lock);
  json_t *old = f->view;
  f->view = view;
  pthread_mutex_unlock(&f->lock);
  json_decref(old);
}

/* The view from this replica alone (FLEET_VIEW=0, or Redis away). */
static void view_alone(struct fb_fleet *f, json_t *self, int64_t now)
{
  set_view(f, fb_fleet_merge(&self, 1, now, f->app->cfg->consumer_name));
}

/* Publishes this replica's record and reads everyone's: two round trips. */
static void publish_and_read(struct fb_fleet *f, struct fb_redis *r)
{
  int64_t now = fb_wall_ms();
  json_t *self = fb_fleet_record(f->app, now);
  char *text = self ? json_dumps(self, JSON_COMPACT) : NULL;
  if (!text || !f->app->cfg->fleet_view || fb_redis_ensure(r)) {
    if (self) view_alone(f, self, now);
    json_decref(self);
    free(text);
    return;
  }
  redisContext *c = r->ctx;
  redisAppendCommand(c, "SET %s %s PX %d", f->k_self, text, FB_REPLICA_TTL_MS);
  redisAppendCommand(c, "SADD %s %s", f->k_replicas, f->app->cfg->consumer_name);
  redisAppendCommand(c, "SMEMBERS %s", f->k_replicas);
  free(text);
  redisReply *reps[3] = {0};
  for (int i = 0; i < 3; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK) {
      fb_redis_drop(r, c->errstr);
      break;
    }
    reps[i] = v;
  }
  redisReply *names = reps[2];
  redisReply *vals = NULL;
  if (names && names->type == REDIS_REPLY_ARRAY && names->elements) {
    const char **argv = calloc(names->elements + 1, sizeof *argv);
    char **keys = calloc(names->elements, sizeof *keys);
    if (argv && keys) {
      argv[0] = "MGET";
      for (size_t i = 0; i < names->elements; i++) {
        size_t kl = strlen(f->k_prefix) + names->element[i]->len + 1;
        keys[i] = malloc(kl);
        if (keys[i]) snprintf(keys[i], kl, "%s%s", f->k_prefix, names->element[i]->str);
        argv[i + 1] = keys[i] ? keys[i] : f->k_self;
      }
      vals = fb_redis_argv(r, (int)names->elements + 1, argv, NULL);
    }
    for (size_t i = 0; keys && i < names->elements; i++)
      free(keys[i]);
    free(keys);
    free(argv);
  }
  if (vals && vals->type == REDIS_REPLY_ARRAY && vals->elements == names->elements) {
    json_t **recs = calloc(vals->elements, sizeof *recs);
    size_t n = 0;
    for (size_t i = 0; recs && i < vals->elements; i++) {
      const redisReply *v = vals->element[i];
      if (v->type == REDIS_REPLY_STRING) {
        recs[n] = json_loadb(v->str, v->len, 0, NULL);
        if (recs[n]) n++;
      } else { /* expired: it stopped publishing */
        redisReply *gone = fb_redis_cmd(r, "SREM %s %s", f->k_replicas, names->element[i]->str);
        if (gone) freeReplyObject(gone);
        fb_info("fleet", "replica %s left the fleet", names->element[i]->str);
      }
    }
    if (recs) set_view(f, fb_fleet_merge(recs, n, now, f->app->cfg->consumer_name));
    for (size_t i = 0; i < n; i++)
      json_decref(recs[i]);
    free(recs);
  } else {
    view_alone(f, self, now);
  }
  if (vals) freeReplyObject(vals);
  for (int i = 0; i < 3; i++)
    if (reps[i]) freeReplyObject(reps[i]);
  json_decref(self);
}

json_t *fb_fleet_view(struct fb_fleet *f)
{
  pthread_mutex_lock(&f->lock);
  json_t *v = f->view ? json_deep_copy(f->view) : NULL;
  pthread_mutex_unlock(&f->lock);
  if (!v) {
    json_t *self = fb_fleet_record(f->app, fb_wall_ms());
    v = fb_fleet_merge(&self, 1, fb_wall_ms(), f->app->cfg->consumer_name);
    json_decref(self);
  }
  return v;
}

void fb_fleet_rates(const struct fb_fleet *f, int64_t *in, int64_t *out)
{
  *in = atomic_load(&f->in_per_s);
  *out = atomic_load(&f->out_per_s);
}

/* ================================================================ tick */

/* The DLQ's length for /metrics: shared by the fleet, read once a second. */
static void read_dlq_length(struct fb_fleet *f, struct fb_redis *r)
{
  if (fb_redis_ensure(r)) return;
  redisReply *rep = fb_redis_cmd(r, "XLEN %s", FB_DLQ_STREAM);
  if (rep && rep->type == REDIS_REPLY_INTEGER)
    atomic_store(&f->app->metrics->dlq_length, (int64_t)rep->integer);
  if (rep) freeReplyObject(rep);
}

void fb_fleet_tick(struct fb_fleet *f, struct fb_redis *r)
{
  int64_t now = fb_mono_ms();
  if (now >= f->next_view_ms) {
    f->next_view_ms = now + VIEW_EVERY_MS;
    publish_and_read(f, r);
    read_dlq_length(f, r);
  }
  if (fb_redis_ensure(r) || (!f->started && start(f, r))) {
    /* Events must still show here while Redis is away. */
    show_here(f, fb_events_take_outbox(f->app->events, f->batch, OUTBOX_BATCH));
    return;
  }
  exchange(f, r);
  if (now >= f->next_settings_ms) {
    f->next_settings_ms = now + SETTINGS_EVERY_MS;
    fb_settings_poll(f->app->settings, r);
  }
}

bool fb_fleet_registry_changed(struct fb_fleet *f)
{
  bool changed = f->registry_changed;
  f->registry_changed = false;
  return changed;
}

void fb_fleet_leave(struct fb_fleet *f, struct fb_redis *r)
{
  if (!f->app->cfg->fleet_view || fb_redis_ensure(r)) return;
  redisReply *rep = fb_redis_cmd(r, "DEL %s", f->k_self);
  if (rep) freeReplyObject(rep);
  rep = fb_redis_cmd(r, "SREM %s %s", f->k_replicas, f->app->cfg->consumer_name);
  if (rep) freeReplyObject(rep);
}
