/*
 * REST routes and handlers (see api.h). HTTP thread only. Registrations are
 * written to Redis first and to the in-memory registry second, so what the
 * API answers is what every replica will see.
 */
#include "framebuffer/api.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/ingest.h"
#include "framebuffer/log.h"
#include "framebuffer/nats_bridge.h"
#include "framebuffer/store.h"

#define PROCESSORS           "/api/v1/processors"
#define API_REDIS_TIMEOUT_MS 2000

void fb_api_init(struct fb_api *api, struct fb_app *app)
{
  api->app = app;
  fb_redis_init(&api->redis, &app->cfg->redis, "api", API_REDIS_TIMEOUT_MS);
}

void fb_api_close(struct fb_api *api)
{
  fb_redis_close(&api->redis);
}

/* ============================================================= responses */

static void respond_json(struct fb_response *resp, int status, json_t *doc)
{
  resp->status = status;
  resp->content_type = "application/json";
  fb_buf_reset(&resp->body);
  char *s = doc ? json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  json_decref(doc);
  if (!s) {
    fb_api_error(resp, 500, "out of memory");
    return;
  }
  if (fb_buf_puts(&resp->body, s)) fb_api_error(resp, 500, "response too large");
  free(s);
}

void fb_api_error(struct fb_response *resp, int status, const char *msg)
{
  resp->status = status;
  resp->content_type = "application/json";
  fb_buf_reset(&resp->body);
  fb_buf_puts(&resp->body, "{\"detail\":");
  fb_buf_json_string(&resp->body, msg, strlen(msg));
  fb_buf_puts(&resp->body, "}");
}

static void method_not_allowed(struct fb_response *resp, const char *allow)
{
  fb_api_error(resp, 405, "Method Not Allowed");
  resp->allow = allow;
}

/* ================================================================ checks */

static bool authorized(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  const char *token = api->app->cfg->api_token;
  if (!token[0]) return true;
  const char *h = req->authorization;
  if (h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, token)) return true;
  fb_api_error(resp, 401, h ? "invalid API token" : "missing Authorization: Bearer <token>");
  resp->challenge = true;
  return false;
}

/* Parses the body as a JSON object; answers 400 itself when it is not. */
static json_t *parse_body(const struct fb_request *req, struct fb_response *resp)
{
  if (!req->body_len) {
    fb_api_error(resp, 400, "request body is empty; expected a JSON object");
    return NULL;
  }
  json_error_t err;
  json_t *doc = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
  if (!doc) {
    char msg[256];
    snprintf(msg, sizeof msg, "malformed JSON at line %d column %d: %s", err.line, err.column,
             err.text);
    fb_api_error(resp, 400, msg);
    return NULL;
  }
  if (!json_is_object(doc)) {
    json_decref(doc);
    fb_api_error(resp, 400, "request body must be a JSON object");
    return NULL;
  }
  return doc;
}

/* ============================================================ processors */

static json_t *list_json(const struct fb_snapshot *s, const char *capability, int status)
{
  json_t *arr = json_array();
  for (size_t i = 0; i < s->n; i++) {
    const struct fb_proc *p = s->procs[i];
    if (status >= 0 && atomic_load(&p->live->status) != status) continue;
    bool has = !capability;
    for (size_t c = 0; c < p->ncaps && !has; c++)
      has = !strcmp(p->caps[c], capability);
    if (has) json_array_append_new(arr, fb_proc_to_json(p));
  }
  return arr;
}

/* Answers a failed store write. */
static void store_failed(struct fb_response *resp, int rc, const char *id, const char *detail)
{
  char msg[300];
  switch (rc) {
  case -EEXIST:
    snprintf(msg, sizeof msg, "processor %s is already registered", id);
    fb_api_error(resp, 409, msg);
    break;
  case -ENOENT:
    snprintf(msg, sizeof msg, "processor %s is not registered", id);
    fb_api_error(resp, 404, msg);
    break;
  case -EINVAL: fb_api_error(resp, 422, detail); break;
  default:
    fb_warn("api", "cannot store processor %s: %s", id, detail);
    fb_api_error(resp, 503, "registry unavailable: Redis is not reachable");
    break;
  }
}

/* Validates a registration body (taken: it is released here). Returns a
 * new processor, or NULL after answering 422. */
static struct fb_proc *proc_from_body(struct fb_api *api, json_t *body, struct fb_response *resp)
{
  struct fb_proc *p = NULL;
  char detail[300] = "";
  int rc = fb_proc_from_json(&p, body, api->app->cfg->input_stream, detail, sizeof detail);
  json_decref(body);
  if (rc) {
    fb_api_error(resp, 422, detail);
    return NULL;
  }
  if (p->transport == FB_TRANSPORT_NATS && !api->app->cfg->nats_enabled) {
    fb_api_error(resp, 422, "transport nats needs NATS, and this gateway runs with NATS_URL=none");
    fb_proc_release(p);
    return NULL;
  }
  return p;
}

static void do_register(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  json_t *body = parse_body(req, resp);
  if (!body) return;
  json_object_set_new(body, "registered_at_ms", json_integer(fb_wall_ms()));
  struct fb_proc *p = proc_from_body(api, body, resp);
  if (!p) return;
  char detail[300] = "";
  int rc = fb_store_save(&api->redis, p, false, detail, sizeof detail);
  if (rc) {
    store_failed(resp, rc, p->id, detail);
    fb_proc_release(p);
    return;
  }
  atomic_store(&p->live->last_heartbeat_ms, 0);
  fb_registry_put(api->app->registry, p);
  fb_info("api", "registered processor %s (%s, %zu capabilities, capacity %lld, %s %s)", p->id,
          fb_transport_name(p->transport), p->ncaps, (long long)p->capacity,
          p->transport == FB_TRANSPORT_REDIS ? "stream" : "subject",
          p->transport == FB_TRANSPORT_REDIS ? p->stream : p->subject);
  fb_event_emit(api->app, "register", p->id, "healthy", "%s processor with %zu capabilities",
                fb_transport_name(p->transport), p->ncaps);
  respond_json(resp, 201, fb_proc_to_json(p));
  fb_proc_release(p);
}

static void do_update(struct fb_api *api, const char *id, const struct fb_request *req,
                      struct fb_response *resp)
{
  json_t *body = parse_body(req, resp);
  if (!body) return;
  json_t *jid = json_object_get(body, "id");
  if (jid && !(json_is_string(jid) && !strcmp(json_string_value(jid), id))) {
    json_decref(body);
    fb_api_error(resp, 400, "id in the body does not match the id in the path");
    return;
  }
  if (!jid) json_object_set_new(body, "id", json_string(id));

  /* Keep the original registration time. */
  struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
  int idx = fb_snapshot_find(s, id);
  if (idx >= 0 && s->procs[idx]->registered_at_ms)
    json_object_set_new(body, "registered_at_ms", json_integer(s->procs[idx]->registered_at_ms));
  else
    json_object_del(body, "registered_at_ms");
  fb_snapshot_release(s);

  struct fb_proc *p = proc_from_body(api, body, resp);
  if (!p) return;
  char detail[300] = "";
  int rc = fb_store_save(&api->redis, p, true, detail, sizeof detail);
  if (rc) {
    store_failed(resp, rc, id, detail);
    fb_proc_release(p);
    return;
  }
  fb_registry_put(api->app->registry, p);
  fb_info("api", "updated processor %s", id);
  /* The registry carried the live state over; show the stored version. */
  s = fb_registry_snapshot(api->app->registry);
  idx = fb_snapshot_find(s, id);
  respond_json(resp, 200, fb_proc_to_json(idx >= 0 ? s->procs[idx] : p));
  fb_snapshot_release(s);
  fb_proc_release(p);
}

static void do_delete(struct fb_api *api, const char *id, struct fb_response *resp)
{
  int rc = fb_store_delete(&api->redis, id);
  /* Gone from Redis: gone here too. Known here but already gone from Redis
   * (removed elsewhere, not yet synced): that is a delete as well. */
  if (rc == 0 || rc == -ENOENT) {
    bool known_here = fb_registry_remove(api->app->registry, id) == 0;
    if (rc == -ENOENT && known_here) rc = 0;
  }
  if (rc) {
    store_failed(resp, rc, id, "");
    return;
  }
  fb_info("api", "unregistered processor %s", id);
  fb_event_emit(api->app, "unregister", id, "removed", "unregistered over the API");
  resp->status = 204;
  resp->content_type = NULL;
  fb_buf_reset(&resp->body);
}

static void do_heartbeat(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  json_t *body = parse_body(req, resp);
  if (!body) return;
  json_t *jid = json_object_get(body, "processor_id");
  if (!json_is_string(jid) || !json_string_length(jid)) {
    json_decref(body);
    fb_api_error(resp, 400, "processor_id is required");
    return;
  }
  char id[FB_PROC_ID_MAX + 1];
  const char *why = "heartbeat is larger than 8 KiB";
  int rc = req->body_len > FB_HEARTBEAT_MAX
               ? -EMSGSIZE
               : fb_heartbeat_apply_json(api->app, NULL, body, fb_wall_ms(), id, &why);
  json_decref(body);
  if (rc == -ENOENT) {
    char msg[200];
    snprintf(msg, sizeof msg, "processor %s is not registered", id);
    fb_api_error(resp, 404, msg);
  } else if (rc) {
    atomic_fetch_add(&api->app->metrics->heartbeats_rejected, 1);
    fb_api_error(resp, 422, why);
  } else {
    /* Other replicas learn of it through NATS, as of any heartbeat. */
    fb_nats_publish_heartbeat(api->app->nats, id, req->body, req->body_len);
    respond_json(resp, 200, json_pack("{s:s,s:s}", "status", "ok", "processor_id", id));
  }
}

static void do_search(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  if (!req->capability || !req->capability[0]) {
    fb_api_error(resp, 422, "query parameter capability is required");
    return;
  }
  int status = -1;
  if (req->status && req->status[0]) {
    for (int h = FB_HEALTH_HEALTHY; h <= FB_HEALTH_DEAD; h++)
      if (!strcmp(req->status, fb_health_name((enum fb_health)h))) status = h;
    if (status < 0) {
      fb_api_error(resp, 422, "status must be one of healthy, stale, dead");
      return;
    }
  }
  struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
  respond_json(resp, 200, list_json(s, req->capability, status));
  fb_snapshot_release(s);
}

static void processors(struct fb_api *api, const char *rest, const struct fb_request *req,
                       struct fb_response *resp)
{
  bool changes = req->method == FB_POST || req->method == FB_PUT || req->method == FB_DELETE;
  if (!*rest) {
    if (req->method != FB_GET) return method_not_allowed(resp, "GET");
    struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
    respond_json(resp, 200, list_json(s, NULL, -1));
    fb_snapshot_release(s);
    return;
  }
  const char *sub = rest + 1; /* after the '/' */
  if (!strcmp(sub, "register")) {
    if (req->method != FB_POST) return method_not_allowed(resp, "POST");
    if (authorized(api, req, resp)) do_register(api, req, resp);
    return;
  }
  if (!strcmp(sub, "heartbeat")) {
    if (req->method != FB_POST) return method_not_allowed(resp, "POST");
    if (authorized(api, req, resp)) do_heartbeat(api, req, resp);
    return;
  }
  if (!strcmp(sub, "search")) {
    if (req->method != FB_GET) return method_not_allowed(resp, "GET");
    return do_search(api, req, resp);
  }
  if (strchr(sub, '/')) {
    fb_api_error(resp, 404, "Not Found");
    return;
  }
  if (!fb_proc_id_is_valid(sub, strlen(sub))) {
    fb_api_error(resp, req->method == FB_GET || req->method == FB_DELETE ? 404 : 422,
                 "processor ids are 1-128 characters of A-Z a-z 0-9 . _ : -");
    return;
  }
  if (changes && !authorized(api, req, resp)) return;
  switch (req->method) {
  case FB_GET: {
    struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
    int idx = fb_snapshot_find(s, sub);
    if (idx >= 0)
      respond_json(resp, 200, fb_proc_to_json(s->procs[idx]));
    else {
      char msg[200];
      snprintf(msg, sizeof msg, "processor %s is not registered", sub);
      fb_api_error(resp, 404, msg);
    }
    fb_snapshot_release(s);
    return;
  }
  case FB_PUT: return do_update(api, sub, req, resp);
  case FB_DELETE: return do_delete(api, sub, resp);
  default: return method_not_allowed(resp, "GET, PUT, DELETE");
  }
}

/* =============================================================== routing */

static json_t *routing_json(struct fb_app *app)
{
  const struct fb_config *c = app->cfg;
  struct fb_routing r;
  fb_ingest_routing(app->ingest, &r);
  return json_pack("{s:s,s:s,s:I,s:I,s:f,s:I,s:I,s:[s,s,s,s],s:[s,s,s]}", "strategy",
                   fb_strategy_name(r.strategy), "overload_policy",
                   fb_overload_policy_name(r.overload_policy), "frame_max_age_ms",
                   (json_int_t)r.frame_max_age_ms, "slow_start_ms", (json_int_t)r.slow_start_ms,
                   "hash_bound", r.hash_bound, "max_deliveries", (json_int_t)c->max_deliveries,
                   "batch_size", (json_int_t)c->batch_size, "strategies", "round_robin",
                   "weighted_round_robin", "least_loaded", "consistent_hash", "overload_policies",
                   "drop_oldest", "reject", "block");
}

/* Applies the members of a PUT /api/v1/routing body to `r`. Returns NULL,
 * or what is wrong (then `r` is only partly changed: the caller drops it). */
static const char *routing_from_json(json_t *body, struct fb_routing *r)
{
  const char *key;
  json_t *v;
  if (!json_object_size(body))
    return "no routing setting given (strategy, overload_policy, frame_max_age_ms, "
           "slow_start_ms, hash_bound)";
  json_object_foreach(body, key, v)
  {
    if (!strcmp(key, "strategy")) {
      if (!json_is_string(v) || fb_strategy_parse(json_string_value(v), &r->strategy))
        return "strategy must be one of round_robin, weighted_round_robin, least_loaded, "
               "consistent_hash";
    } else if (!strcmp(key, "overload_policy")) {
      const char *p = json_is_string(v) ? json_string_value(v) : "";
      if (!strcmp(p, "drop_oldest"))
        r->overload_policy = FB_OVERLOAD_DROP_OLDEST;
      else if (!strcmp(p, "reject"))
        r->overload_policy = FB_OVERLOAD_REJECT;
      else if (!strcmp(p, "block"))
        r->overload_policy = FB_OVERLOAD_BLOCK;
      else
        return "overload_policy must be one of drop_oldest, reject, block";
    } else if (!strcmp(key, "frame_max_age_ms") || !strcmp(key, "slow_start_ms")) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 ||
          json_integer_value(v) > INT64_C(86400000) * 365)
        return "frame_max_age_ms and slow_start_ms must be integers >= 0 (0 = off)";
      if (key[0] == 'f')
        r->frame_max_age_ms = json_integer_value(v);
      else
        r->slow_start_ms = json_integer_value(v);
    } else if (!strcmp(key, "hash_bound")) {
      if (!json_is_number(v) || json_number_value(v) < 1.0 || json_number_value(v) > 100.0)
        return "hash_bound must be a number between 1.0 and 100";
      r->hash_bound = json_number_value(v);
    } else if (strcmp(key, "max_deliveries") && strcmp(key, "batch_size") &&
               strcmp(key, "strategies") && strcmp(key, "overload_policies")) {
      return "unknown routing setting (strategy, overload_policy, frame_max_age_ms, "
             "slow_start_ms, hash_bound)";
    }
  }
  return NULL;
}

static void routing(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  if (req->method == FB_GET) return respond_json(resp, 200, routing_json(api->app));
  if (req->method != FB_PUT) return method_not_allowed(resp, "GET, PUT");
  if (!authorized(api, req, resp)) return;
  json_t *body = parse_body(req, resp);
  if (!body) return;
  struct fb_routing old, next;
  fb_ingest_routing(api->app->ingest, &old);
  next = old;
  const char *bad = routing_from_json(body, &next);
  json_decref(body);
  if (bad) {
    fb_api_error(resp, 422, bad);
    return;
  }
  fb_ingest_set_routing(api->app->ingest, &next);
  if (old.strategy != next.strategy) {
    fb_info("api", "routing strategy changed from %s to %s", fb_strategy_name(old.strategy),
            fb_strategy_name(next.strategy));
    fb_event_emit(api->app, "strategy", NULL, fb_strategy_name(next.strategy), "changed from %s",
                  fb_strategy_name(old.strategy));
  }
  if (memcmp(&old, &next, sizeof old))
    fb_info("api",
            "routing: strategy=%s overload=%s frame_max_age_ms=%lld slow_start_ms=%lld "
            "hash_bound=%.2f",
            fb_strategy_name(next.strategy), fb_overload_policy_name(next.overload_policy),
            (long long)next.frame_max_age_ms, (long long)next.slow_start_ms, next.hash_bound);
  respond_json(resp, 200, routing_json(api->app));
}

/* ============================================================ operations */

/* Ready = can serve: Redis and the consumer group are reachable. NATS being
 * away only degrades the gateway (remote frames wait in Redis), so it does
 * not take the pod out of its Service. */
static bool ready(struct fb_app *app)
{
  struct fb_metrics *m = app->metrics;
  return atomic_load(&m->redis_up) && atomic_load(&m->group_ready);
}

static bool nats_ok(struct fb_app *app)
{
  return !app->cfg->nats_enabled || atomic_load(&app->metrics->nats_up);
}

/* {"redis":b,"group":b,"nats":b or "disabled"} */
static json_t *connections_json(struct fb_app *app)
{
  struct fb_metrics *m = app->metrics;
  return json_pack("{s:b,s:b,s:o}", "redis", (int)atomic_load(&m->redis_up), "group",
                   (int)atomic_load(&m->group_ready), "nats",
                   app->cfg->nats_enabled ? json_boolean(atomic_load(&m->nats_up))
                                          : json_string("disabled"));
}

/* A processor as the dashboard's table shows it. */
static json_t *proc_summary(const struct fb_proc *p)
{
  const struct fb_proc_live *l = p->live;
  json_t *caps = json_array();
  for (size_t c = 0; c < p->ncaps; c++)
    json_array_append_new(caps, json_string(p->caps[c]));
  int64_t hb = atomic_load(&l->last_heartbeat_ms);
  return json_pack("{s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I}", "id", p->id, "status",
                   fb_health_name((enum fb_health)atomic_load(&l->status)), "transport",
                   fb_transport_name(p->transport), "capabilities", caps, "frames_routed",
                   (json_int_t)atomic_load(&l->frames_routed), "rate",
                   (json_int_t)atomic_load(&l->rate), "queue_depth",
                   (json_int_t)(atomic_load(&l->queue_depth) + atomic_load(&l->sent_since_poll) +
                                atomic_load(&l->routed_in_flight)),
                   "max_queue", (json_int_t)p->max_queue, "capacity", (json_int_t)p->capacity,
                   "weight", (json_int_t)p->weight, "last_heartbeat_ms",
                   hb ? json_integer(hb) : json_null(), "heartbeat_interval_ms",
                   (json_int_t)p->heartbeat_interval_ms);
}

json_t *fb_api_stats(struct fb_app *app)
{
  struct fb_metrics *m = app->metrics;
  json_t *dropped = json_object(), *dlq = json_object();
  for (int r = 0; r < FB_REASON_COUNT; r++) {
    json_object_set_new(dropped, fb_reason_name((enum fb_reason)r),
                        json_integer((json_int_t)atomic_load(&m->dropped[r])));
    if (r <= FB_REASON_POISON)
      json_object_set_new(dlq, fb_reason_name((enum fb_reason)r),
                          json_integer((json_int_t)atomic_load(&m->dlq[r])));
  }
  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  json_t *procs = json_array();
  for (size_t i = 0; i < s->n; i++)
    json_array_append_new(procs, proc_summary(s->procs[i]));
  json_t *counts = json_pack("{s:i,s:i,s:i}", "healthy", 0, "stale", 0, "dead", 0);
  for (size_t i = 0; i < s->n; i++) {
    const char *h = fb_health_name((enum fb_health)atomic_load(&s->procs[i]->live->status));
    json_object_set_new(counts, h,
                        json_integer(json_integer_value(json_object_get(counts, h)) + 1));
  }
  fb_snapshot_release(s);
  int64_t now = fb_wall_ms();
  return json_pack(
      "{s:s,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:{s:f,s:f,s:f},s:o,s:o,s:o,s:o,s:o,"
      "s:{s:b,s:b,s:b},s:s}",
      "service", "frame-buffer-v2", "now_ms", (json_int_t)now, "uptime_s",
      (json_int_t)((now - m->started_ms) / 1000), "frames", "consumed",
      (json_int_t)atomic_load(&m->frames_consumed), "distributed",
      (json_int_t)atomic_load(&m->frames_distributed), "in_per_s",
      (json_int_t)atomic_load(&m->rate_in), "out_per_s", (json_int_t)atomic_load(&m->rate_out),
      "consumer_lag", (json_int_t)atomic_load(&m->consumer_lag), "pending",
      (json_int_t)atomic_load(&m->input_pending), "batches", (json_int_t)atomic_load(&m->batches),
      "blocked", (json_int_t)atomic_load(&m->blocked_frames), "routing_latency_ms", "p50",
      fb_histogram_quantile(&m->routing, 0.5) * 1000, "p99",
      fb_histogram_quantile(&m->routing, 0.99) * 1000, "mean",
      atomic_load(&m->routing.count)
          ? (double)atomic_load(&m->routing.sum_ns) / 1e6 / (double)atomic_load(&m->routing.count)
          : 0.0,
      "dropped", dropped, "dlq", dlq, "routing", routing_json(app), "processor_counts", counts,
      "processors", procs, "connections", "redis", (int)atomic_load(&m->redis_up), "group",
      (int)atomic_load(&m->group_ready), "nats", (int)atomic_load(&m->nats_up), "consumer",
      app->cfg->consumer_name);
}

static void operations(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  struct fb_app *app = api->app;
  const char *p = req->path;
  if (req->method != FB_GET && req->method != FB_HEAD) return method_not_allowed(resp, "GET");
  if (!strcmp(p, "/health")) {
    bool ok = ready(app);
    const char *status = !ok ? "unhealthy" : nats_ok(app) ? "healthy" : "degraded";
    respond_json(resp, ok ? 200 : 503,
                 json_pack("{s:s,s:s,s:s,s:o}", "status", status, "service", "frame-buffer-v2",
                           "consumer", app->cfg->consumer_name, "connections",
                           connections_json(app)));
  } else if (!strcmp(p, "/healthz")) {
    respond_json(resp, 200, json_pack("{s:s}", "status", "alive"));
  } else if (!strcmp(p, "/readyz")) {
    struct fb_metrics *m = app->metrics;
    bool ok = ready(app);
    respond_json(resp, ok ? 200 : 503,
                 json_pack("{s:s,s:{s:b,s:b,s:o}}", "status", ok ? "ready" : "not ready", "checks",
                           "redis", (int)atomic_load(&m->redis_up), "consumer_group",
                           (int)atomic_load(&m->group_ready), "nats",
                           app->cfg->nats_enabled ? json_boolean(atomic_load(&m->nats_up))
                                                  : json_string("disabled")));
  } else if (!strcmp(p, "/metrics")) {
    struct fb_snapshot *s = fb_registry_snapshot(app->registry);
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4";
    fb_buf_reset(&resp->body);
    if (fb_metrics_render(app->metrics, s, app->cfg->nats_enabled, &resp->body))
      fb_api_error(resp, 500, "metrics too large");
    fb_snapshot_release(s);
  } else if (!strcmp(p, "/api/v1/stats")) {
    respond_json(resp, 200, fb_api_stats(app));
  } else {
    fb_api_error(resp, 404, "Not Found");
  }
}

/* ================================================================ router */

void fb_api_handle(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  atomic_fetch_add(&api->app->metrics->http_requests, 1);
  resp->allow = NULL;
  resp->challenge = false;
  if (req->method == FB_OTHER || req->method == FB_PATCH || req->method == FB_OPTIONS) {
    method_not_allowed(resp, "GET, POST, PUT, DELETE");
    return;
  }
  const char *p = req->path;
  size_t plen = strlen(PROCESSORS);
  if (!strncmp(p, PROCESSORS, plen) && (p[plen] == '\0' || p[plen] == '/'))
    processors(api, p + plen, req, resp);
  else if (!strcmp(p, "/api/v1/routing"))
    routing(api, req, resp);
  else
    operations(api, req, resp);
}
