/*
 * The fleet-wide frame lookup (see lookup.h).
 */
#include "framebuffer/lookup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/fleet.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"

#define QUERIES_MAXLEN 1000 /* the question stream keeps about this many */
#define READ_COUNT     64   /* questions answered per tick */
#define ANSWER_TTL_MS  10000

struct fb_lookup {
  struct fb_app *app;
  char k_queries[FB_NAME_MAX + 32];
  char last[48]; /* the last question read */
  bool started;
};

static void queries_key(const struct fb_config *cfg, char *out, size_t n)
{
  snprintf(out, n, "frame-buffer:%s:frame-queries", cfg->consumer_group);
}

int fb_lookup_create(struct fb_lookup **out, struct fb_app *app)
{
  struct fb_lookup *lk = calloc(1, sizeof *lk);
  if (!lk) return -ENOMEM;
  lk->app = app;
  queries_key(app->cfg, lk->k_queries, sizeof lk->k_queries);
  *out = lk;
  return 0;
}

void fb_lookup_destroy(struct fb_lookup *lk)
{
  free(lk);
}

static json_t *name_or_null(const char *s)
{
  return s && *s ? json_string(s) : json_null();
}

static const char *reason_text(int reason)
{
  if (reason == FB_TRACE_WRITE_FAILED) return "write_failed";
  return reason >= 0 && reason < FB_REASON_COUNT ? fb_reason_name((enum fb_reason)reason) : NULL;
}

json_t *fb_lookup_record_json(const struct fb_trace_record *rec, const char *replica)
{
  json_t *o = json_object();
  json_object_set_new(o, "frame_id", json_string(rec->frame_id));
  if (rec->frame_id_cut) json_object_set_new(o, "frame_id_truncated", json_true());
  json_object_set_new(o, "camera_id", json_string(rec->camera_id));
  json_object_set_new(o, "outcome", json_string(fb_trace_outcome_name(rec->outcome)));
  json_object_set_new(o, "processor_id", name_or_null(rec->processor_id));
  json_object_set_new(o, "transport",
                      rec->transport >= 0
                          ? json_string(fb_transport_name((enum fb_transport)rec->transport))
                          : json_null());
  json_object_set_new(o, "target", name_or_null(rec->target));
  json_object_set_new(o, "strategy",
                      json_string(fb_strategy_name((enum fb_strategy)rec->strategy)));
  json_object_set_new(o, "replica", json_string(replica));
  json_object_set_new(o, "routed_at_ms", json_integer(rec->routed_at_ms));
  json_object_set_new(o, "latency_ms", json_integer(rec->latency_ms));
  json_object_set_new(o, "reason", name_or_null(reason_text(rec->reason)));
  json_object_set_new(o, "source_id", json_string(rec->source_id));
  return o;
}

/* {"found":false, "replica", "trace": {"frames", "oldest_ms"} or "off"} */
static json_t *not_here(struct fb_app *app)
{
  json_t *o = json_pack("{s:b, s:s}", "found", 0, "replica", app->cfg->consumer_name);
  if (!app->trace) {
    json_object_set_new(o, "trace", json_string("off"));
    return o;
  }
  size_t frames;
  int64_t oldest;
  fb_trace_window(app->trace, &frames, &oldest);
  json_object_set_new(
      o, "trace",
      json_pack("{s:I, s:I}", "frames", (json_int_t)frames, "oldest_ms", (json_int_t)oldest));
  return o;
}

/* This replica's answer for frame `id` (new reference). */
static json_t *answer(struct fb_app *app, const char *id, size_t n)
{
  struct fb_trace_record rec;
  if (app->trace && fb_trace_find(app->trace, id, n, &rec))
    return fb_lookup_record_json(&rec, app->cfg->consumer_name);
  return not_here(app);
}

/* ============================================================ answering */

static const redisReply *field(const redisReply *fv, const char *name)
{
  for (size_t k = 0; fv->type == REDIS_REPLY_ARRAY && k + 1 < fv->elements; k += 2)
    if (fv->element[k]->str && !strcmp(fv->element[k]->str, name)) return fv->element[k + 1];
  return NULL;
}

/* Pushes this replica's answer to one question; returns the commands
 * appended to the pipeline. */
static int answer_question(struct fb_lookup *lk, redisContext *c, const redisReply *fv)
{
  const redisReply *id = field(fv, "id"), *from = field(fv, "replica"), *reply = field(fv, "reply");
  if (!id || !id->str || !reply || !reply->str || !from || !from->str) return 0;
  if (!strcmp(from->str, lk->app->cfg->consumer_name)) return 0; /* our own */
  json_t *a = answer(lk->app, id->str, id->len);
  char *text = json_dumps(a, JSON_COMPACT);
  json_decref(a);
  if (!text) return 0;
  redisAppendCommand(c, "RPUSH %s %s", reply->str, text);
  redisAppendCommand(c, "PEXPIRE %s %d", reply->str, ANSWER_TTL_MS);
  free(text);
  return 2;
}

static int start(struct fb_lookup *lk, struct fb_redis *r)
{
  redisReply *rep = fb_redis_cmd(r, "XREVRANGE %s + - COUNT 1", lk->k_queries);
  if (!rep) return -EIO;
  bool ok = rep->type == REDIS_REPLY_ARRAY;
  if (ok)
    snprintf(lk->last, sizeof lk->last, "%s",
             rep->elements ? rep->element[0]->element[0]->str : "0-0");
  freeReplyObject(rep);
  lk->started = ok;
  return ok ? 0 : -EIO;
}

void fb_lookup_tick(struct fb_lookup *lk, struct fb_redis *r)
{
  if (fb_redis_ensure(r) || (!lk->started && start(lk, r))) return;
  char count[16];
  snprintf(count, sizeof count, "%d", READ_COUNT);
  const char *argv[] = {"XREAD", "COUNT", count, "STREAMS", lk->k_queries, lk->last};
  redisReply *rep = fb_redis_argv(r, 6, argv, NULL);
  if (!rep) return;
  int pending = 0;
  redisContext *c = r->ctx;
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
      rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2) {
    const redisReply *entries = rep->element[0]->element[1];
    for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
      const redisReply *e = entries->element[i];
      if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || !e->element[0]->str) continue;
      snprintf(lk->last, sizeof lk->last, "%s", e->element[0]->str);
      pending += answer_question(lk, c, e->element[1]);
    }
  }
  freeReplyObject(rep);
  for (int i = 0; i < pending; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK) {
      fb_redis_drop(r, c->errstr);
      return;
    }
    freeReplyObject(v);
  }
}

/* ============================================================== asking */

/* How many other replicas the fleet view knows alive; -1 when it cannot
 * tell (FLEET_VIEW=0). */
static int others(struct fb_app *app)
{
  if (!app->cfg->fleet_view) return -1;
  json_t *view = fb_fleet_view(app->fleet);
  json_t *replicas = json_object_get(view, "replicas");
  int n = 0;
  size_t i;
  json_t *r;
  json_array_foreach(replicas, i, r)
  {
    const char *name = json_string_value(json_object_get(r, "consumer"));
    if (name && strcmp(name, app->cfg->consumer_name)) n++;
  }
  json_decref(view);
  return n;
}

/* Asks the other replicas about frame `id`. Returns the answer of the one
 * that routed it (new reference), or NULL; *asked and *answered say how
 * many were expected (-1: unknown) and how many answered. -EIO in *err
 * when Redis could not be asked. */
static json_t *ask_fleet(struct fb_api *api, const char *id, int *asked, int *answered, int *err)
{
  static atomic_uint_fast64_t seq;
  struct fb_app *app = api->app;
  char k_queries[FB_NAME_MAX + 32], k_reply[3 * FB_NAME_MAX + 64], maxlen[16];
  queries_key(app->cfg, k_queries, sizeof k_queries);
  snprintf(k_reply, sizeof k_reply, "frame-buffer:%s:frame-answers:%s:%" PRIu64,
           app->cfg->consumer_group, app->cfg->consumer_name, (uint64_t)atomic_fetch_add(&seq, 1));
  snprintf(maxlen, sizeof maxlen, "%d", QUERIES_MAXLEN);
  *asked = others(app);
  *answered = 0;
  *err = 0;
  if (*asked == 0) return NULL;
  const char *argv[] = {"XADD",  k_queries, "MAXLEN", "~",       maxlen,
                        "*",     "id",      id,       "replica", app->cfg->consumer_name,
                        "reply", k_reply};
  redisReply *rep = NULL;
  int attempt = 0;
  do {
    if (rep) freeReplyObject(rep);
    rep = fb_redis_argv(&api->redis, 12, argv, NULL);
  } while ((!rep || rep->type == REDIS_REPLY_ERROR) && fb_api_retry(api, attempt++));
  bool sent = rep && rep->type != REDIS_REPLY_ERROR;
  if (rep) freeReplyObject(rep);
  if (!sent) {
    *err = -EIO;
    return NULL;
  }
  json_t *best = NULL;
  int64_t deadline = fb_mono_ms() + FB_LOOKUP_WAIT_MS;
  while ((*asked < 0 || *answered < *asked) && fb_mono_ms() < deadline) {
    rep = fb_redis_cmd(&api->redis, "BLPOP %s 0.1", k_reply);
    if (!rep) break;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[1]->str) {
      (*answered)++;
      json_t *a = json_loads(rep->element[1]->str, 0, NULL);
      json_int_t at = json_integer_value(json_object_get(a, "routed_at_ms"));
      if (a && json_object_get(a, "outcome") &&
          (!best || at > json_integer_value(json_object_get(best, "routed_at_ms")))) {
        json_decref(best);
        best = a;
      } else {
        json_decref(a);
      }
    }
    freeReplyObject(rep);
  }
  rep = fb_redis_cmd(&api->redis, "DEL %s", k_reply);
  if (rep) freeReplyObject(rep);
  return best;
}

static void not_found(struct fb_api *api, const char *id, int asked, int answered, int err,
                      struct fb_response *resp)
{
  struct fb_app *app = api->app;
  char here[256], fleet[200], msg[700];
  if (app->trace) {
    size_t frames;
    int64_t oldest;
    fb_trace_window(app->trace, &frames, &oldest);
    int64_t age_s = oldest ? (fb_wall_ms() - oldest) / 1000 : 0;
    snprintf(here, sizeof here,
             "this replica remembers the last %zu frames it routed (at most %d), back %" PRId64
             " s",
             frames, FB_TRACE_DEFAULT_FRAMES, age_s);
  } else {
    snprintf(here, sizeof here, "this replica keeps no trace (FRAME_TRACE=0)");
  }
  if (err)
    snprintf(fleet, sizeof fleet, "the other replicas could not be asked (Redis unavailable)");
  else if (asked < 0)
    snprintf(fleet, sizeof fleet,
             "%d other replicas answered (FLEET_VIEW=0: how many live is unknown)", answered);
  else
    snprintf(fleet, sizeof fleet, "%d of %d other replicas answered", answered, asked);
  snprintf(msg, sizeof msg, "frame %.200s is not in the trace: %s; %s", id, here, fleet);
  fb_api_error(resp, 404, msg);
}

void fb_api_frame_get(struct fb_api *api, const struct fb_request *req, const char *param,
                      struct fb_response *resp)
{
  static const char *const known[] = {NULL};
  if (!fb_api_check_query(req, known, resp)) return;
  size_t n = strlen(param);
  struct fb_trace_record rec;
  if (api->app->trace && fb_trace_find(api->app->trace, param, n, &rec)) {
    fb_api_respond_json(resp, 200, fb_lookup_record_json(&rec, api->app->cfg->consumer_name));
    return;
  }
  int asked, answered, err;
  json_t *found = ask_fleet(api, param, &asked, &answered, &err);
  if (found) {
    fb_api_respond_json(resp, 200, found);
    return;
  }
  not_found(api, param, asked, answered, err, resp);
}
