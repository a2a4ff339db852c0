/*
 * REST routes and handlers (see api.h). HTTP thread only. Registrations are
 * written to Redis first and to the in-memory registry second, so what the
 * API answers is what every replica will see.
 */
#include "framebuffer/api.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "framebuffer/settings.h"
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

/* Written without allocating: it also reports running out of memory. */
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

/* Takes as long for any `given` of a length: a wrong guess tells nothing of
 * how much of it was right. */
static bool token_equal(const char *given, const char *want)
{
  size_t gl = strlen(given), wl = strlen(want);
  volatile unsigned char diff = gl != wl;
  for (size_t i = 0; i < gl; i++)
    diff |= (unsigned char)(given[i] ^ want[i < wl ? i : 0]);
  return !diff && wl;
}

enum caller { OPERATOR, PROCESSOR };

/* API_TOKEN guards every request that changes state; processors may use
 * PROCESSOR_TOKEN instead on register and heartbeat, or none at all with
 * PROCESSOR_TOKEN=open (for clients that send no token). */
static bool authorized(struct fb_api *api, const struct fb_request *req, struct fb_response *resp,
                       enum caller who)
{
  const struct fb_config *c = api->app->cfg;
  const char *ptoken = who == PROCESSOR ? c->processor_token : "";
  if (!strcmp(ptoken, "open") || (!c->api_token[0] && !ptoken[0])) return true;
  const char *h = req->authorization;
  if (h && !strncmp(h, "Bearer ", 7)) {
    bool ok = false; /* both compared, always */
    ok |= c->api_token[0] && token_equal(h + 7, c->api_token);
    ok |= ptoken[0] && token_equal(h + 7, ptoken);
    if (ok) return true;
  }
  fb_api_error(resp, 401, h ? "invalid API token" : "missing Authorization: Bearer <token>");
  resp->challenge = true;
  return false;
}

/* The origin's host[:port], from scheme://host[:port]. */
static const char *origin_host(const char *origin)
{
  const char *p = strstr(origin, "://");
  return p ? p + 3 : origin;
}

bool fb_origin_listed(const char *origin, const char *allowed)
{
  if (!origin || !*origin || !*allowed) return false;
  if (!strcmp(allowed, "*")) return true;
  size_t n = strlen(origin);
  for (const char *p = allowed; *p;) {
    size_t len = strcspn(p, ",");
    if (len == n && !strncasecmp(p, origin, n)) return true;
    p += len + (p[len] == ',');
  }
  return false;
}

bool fb_origin_allowed(const char *origin, const char *host, const char *allowed)
{
  if (!origin || !*origin) return true;
  if (host && *host && !strcasecmp(origin_host(origin), host)) return true;
  return fb_origin_listed(origin, allowed);
}

/* A request that changes state must say it sends JSON: a page elsewhere can
 * send a form or text/plain without asking (a "simple" request), but not
 * application/json. */
static bool sends_json(const struct fb_request *req, struct fb_response *resp)
{
  const char *t = req->content_type;
  size_t n = strlen("application/json");
  if (t && !strncasecmp(t, "application/json", n) && (t[n] == '\0' || t[n] == ';' || t[n] == ' '))
    return true;
  fb_api_error(resp, 415, "Content-Type must be application/json");
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
static void store_failed(struct fb_response *resp, int rc, const char *id, const char *why)
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
  case -EINVAL: fb_api_error(resp, 422, why); break;
  default:
    fb_warn("api", "cannot store processor %s: %s", id, why);
    fb_api_error(resp, 503, "registry unavailable: Redis is not reachable");
    break;
  }
}

/* Validates a registration body (taken: it is released here). Returns a
 * new processor, or NULL after answering 422. */
static struct fb_proc *proc_from_body(struct fb_api *api, json_t *body, struct fb_response *resp)
{
  struct fb_proc *p = NULL;
  char why[300] = "";
  int rc = fb_proc_from_json(&p, body, api->app->cfg->input_stream, why, sizeof why);
  json_decref(body);
  if (rc) {
    fb_api_error(resp, 422, why);
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
  char why[300] = "";
  int rc = fb_store_save(&api->redis, p, false, why, sizeof why);
  if (rc) {
    store_failed(resp, rc, p->id, why);
    fb_proc_release(p);
    return;
  }
  atomic_store(&p->live->last_heartbeat_ms, 0);
  fb_registry_put(api->app->registry, p);
  fb_fleet_forget(api->app->fleet, &api->redis, p->id);
  fb_info("api", "registered processor %s (%s, %zu capabilities, capacity %lld, %s %s)", p->id,
          fb_transport_name(p->transport), p->ncaps, (long long)p->capacity,
          p->transport == FB_TRANSPORT_REDIS ? "stream" : "subject",
          p->transport == FB_TRANSPORT_REDIS ? p->stream : p->subject);
  fb_event_emit_by(api->app->events, req->request_id, "register", p->id, "healthy",
                   "%s processor with %zu capabilities", fb_transport_name(p->transport), p->ncaps);
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
  char why[300] = "";
  int rc = fb_store_save(&api->redis, p, true, why, sizeof why);
  if (rc) {
    store_failed(resp, rc, id, why);
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

static void do_delete(struct fb_api *api, const char *id, const struct fb_request *req,
                      struct fb_response *resp)
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
  fb_fleet_forget(api->app->fleet, &api->redis, id);
  fb_event_emit_by(api->app->events, req->request_id, "unregister", id, "removed",
                   "unregistered over the API");
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
  struct fb_heartbeat hb;
  char why[200];
  int rc = req->body_len > FB_HEARTBEAT_MAX
               ? fb_heartbeat_parse(&hb, NULL, req->body, req->body_len, why, sizeof why)
               : fb_heartbeat_parse_json(&hb, NULL, body, why, sizeof why);
  json_decref(body);
  if (!rc) rc = fb_heartbeat_record(api->app->registry, api->app->metrics, &hb, fb_wall_ms());
  const char *id = hb.id;
  if (rc == -ENOENT) {
    char msg[200];
    snprintf(msg, sizeof msg, "processor %s is not registered", id);
    fb_api_error(resp, 404, msg);
  } else if (rc) {
    atomic_fetch_add(&api->app->metrics->heartbeats_rejected, 1);
    fb_api_error(resp, 422, why);
  } else {
    /* Other replicas learn of it through Redis, NATS or not. */
    if (fb_fleet_heartbeat(api->app->fleet, &api->redis, req->body, req->body_len))
      fb_debug("api", "heartbeat of %s counts on this replica only: Redis is not reachable", id);
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
    if (authorized(api, req, resp, PROCESSOR)) do_register(api, req, resp);
    return;
  }
  if (!strcmp(sub, "heartbeat")) {
    if (req->method != FB_POST) return method_not_allowed(resp, "POST");
    if (authorized(api, req, resp, PROCESSOR)) do_heartbeat(api, req, resp);
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
  if (changes && !authorized(api, req, resp, OPERATOR)) return;
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
  case FB_DELETE: return do_delete(api, sub, req, resp);
  default: return method_not_allowed(resp, "GET, PUT, DELETE");
  }
}

/* =============================================================== routing */

static json_t *routing_json(struct fb_app *app)
{
  const struct fb_config *c = app->cfg;
  struct fb_routing_info info;
  fb_settings_get(app->settings, &info);
  const struct fb_routing *r = &info.r;
  json_t *source = json_object(), *strategies = json_array(), *policies = json_array();
  for (int k = 0; k < FB_SET_COUNT; k++)
    json_object_set_new(source, fb_setting_name((enum fb_setting)k),
                        json_string(info.stored[k] ? "fleet" : "config"));
  for (int k = 0; k < FB_STRATEGY_COUNT; k++)
    json_array_append_new(strategies, json_string(fb_strategy_name((enum fb_strategy)k)));
  for (int k = 0; k < FB_OVERLOAD_COUNT; k++)
    json_array_append_new(policies,
                          json_string(fb_overload_policy_name((enum fb_overload_policy)k)));
  return json_pack("{s:s,s:s,s:I,s:I,s:f,s:I,s:I,s:o,s:o,s:o,s:I,s:o,s:o,s:o}", "strategy",
                   fb_strategy_name(r->strategy), "overload_policy",
                   fb_overload_policy_name(r->overload_policy), "frame_max_age_ms",
                   (json_int_t)r->frame_max_age_ms, "slow_start_ms", (json_int_t)r->slow_start_ms,
                   "hash_bound", r->hash_bound, "max_deliveries", (json_int_t)c->max_deliveries,
                   "batch_size", (json_int_t)c->batch_size, "strategies", strategies,
                   "overload_policies", policies, "source", source, "generation",
                   (json_int_t)info.generation, "updated_by",
                   info.updated_by[0] ? json_string(info.updated_by) : json_null(), "request_id",
                   info.request_id[0] ? json_string(info.request_id) : json_null(), "updated_at_ms",
                   info.updated_at_ms ? json_integer(info.updated_at_ms) : json_null());
}

/* PUT stores the given settings for the whole fleet; DELETE removes every
 * stored setting (each replica goes back to its configured values). Either
 * is one event on every dashboard, saying what changed, where and why. */
static void routing(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  struct fb_app *app = api->app;
  if (req->method == FB_GET) return respond_json(resp, 200, routing_json(app));
  if (req->method != FB_PUT && req->method != FB_DELETE)
    return method_not_allowed(resp, "GET, PUT, DELETE");
  if (!authorized(api, req, resp, OPERATOR)) return;
  struct fb_routing_patch patch;
  if (req->method == FB_PUT) {
    json_t *body = parse_body(req, resp);
    if (!body) return;
    char why[300];
    int rc = fb_routing_patch_from_json(body, &patch, why, sizeof why);
    json_decref(body);
    if (rc) {
      fb_api_error(resp, 422, why);
      return;
    }
  }
  struct fb_routing_info before, after;
  if (fb_settings_store(app->settings, &api->redis, req->method == FB_PUT ? &patch : NULL,
                        app->cfg->consumer_name, req->request_id, &before, &after)) {
    fb_api_error(resp, 503, "routing settings unavailable: Redis is not reachable");
    return;
  }
  char diff[400];
  fb_routing_diff(&before.r, &after.r, diff, sizeof diff);
  const char *what = req->method == FB_DELETE ? "reset to the configured defaults" : "changed";
  fb_info("api", "routing settings %s for the fleet (generation %lld, request %s): %s", what,
          after.generation, req->request_id, diff[0] ? diff : "no change");
  if (diff[0]) {
    bool strategy = before.r.strategy != after.r.strategy;
    fb_event_emit_by(app->events, req->request_id, strategy ? "strategy" : "routing", NULL,
                     strategy                   ? fb_strategy_name(after.r.strategy)
                     : req->method == FB_DELETE ? "reset"
                                                : "changed",
                     "%s%s", req->method == FB_DELETE ? "reset to defaults: " : "", diff);
  }
  respond_json(resp, 200, routing_json(app));
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

/* NATS's state: true, false, or "disabled" (NATS_URL=none). */
static json_t *nats_json(struct fb_app *app)
{
  return app->cfg->nats_enabled ? json_boolean(atomic_load(&app->metrics->nats_up))
                                : json_string("disabled");
}

json_t *fb_api_connections(struct fb_app *app)
{
  struct fb_metrics *m = app->metrics;
  return json_pack("{s:b,s:b,s:o}", "redis", (int)atomic_load(&m->redis_up), "group",
                   (int)atomic_load(&m->group_ready), "nats", nats_json(app));
}

/* A processor as the dashboard's table shows it: this replica's counts
 * (queue_depth is the estimate routing uses, fb_proc_depth), and the
 * fleet's from `totals` ({id: [routed, rate]}, may be NULL). */
static json_t *proc_summary(const struct fb_proc *p, const json_t *totals)
{
  const struct fb_proc_live *l = p->live;
  json_t *caps = json_array();
  for (size_t c = 0; c < p->ncaps; c++)
    json_array_append_new(caps, json_string(p->caps[c]));
  int64_t hb = atomic_load(&l->last_heartbeat_ms);
  const json_t *t = json_object_get(totals, p->id);
  json_int_t routed = (json_int_t)atomic_load(&l->frames_routed), rate = atomic_load(&l->rate);
  return json_pack("{s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:I,s:I}", "id", p->id,
                   "status", fb_health_name((enum fb_health)atomic_load(&l->status)), "transport",
                   fb_transport_name(p->transport), "capabilities", caps, "frames_routed", routed,
                   "rate", rate, "queue_depth", (json_int_t)fb_proc_depth(p), "max_queue",
                   (json_int_t)p->max_queue, "capacity", (json_int_t)p->capacity, "weight",
                   (json_int_t)p->weight, "last_heartbeat_ms", hb ? json_integer(hb) : json_null(),
                   "heartbeat_interval_ms", (json_int_t)p->heartbeat_interval_ms,
                   "fleet_frames_routed", t ? json_integer_value(json_array_get(t, 0)) : routed,
                   "fleet_rate", t ? json_integer_value(json_array_get(t, 1)) : rate);
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
  json_t *moves = json_object();
  for (int k = 0; k < FB_MOVE_COUNT; k++)
    json_object_set_new(moves, fb_move_reason_name((enum fb_move_reason)k),
                        json_integer((json_int_t)atomic_load(&m->camera_moves[k])));
  json_t *view = fb_fleet_view(app->fleet);
  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  json_t *procs = json_array();
  for (size_t i = 0; i < s->n; i++)
    json_array_append_new(procs, proc_summary(s->procs[i], json_object_get(view, "processors")));
  json_t *counts = json_pack("{s:i,s:i,s:i}", "healthy", 0, "stale", 0, "dead", 0);
  for (size_t i = 0; i < s->n; i++) {
    const char *h = fb_health_name((enum fb_health)atomic_load(&s->procs[i]->live->status));
    json_object_set_new(counts, h,
                        json_integer(json_integer_value(json_object_get(counts, h)) + 1));
  }
  fb_snapshot_release(s);
  int64_t now = fb_wall_ms();
  json_t *fleet = json_incref(json_object_get(view, "fleet"));
  json_t *replicas = json_incref(json_object_get(view, "replicas"));
  json_decref(view);
  return json_pack(
      "{s:s,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:{s:f,s:f,s:f},s:o,s:o,s:o,s:o,s:o,"
      "s:{s:b,s:b,s:b},s:s,s:o,s:o,s:o}",
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
      app->cfg->consumer_name, "fleet", fleet ? fleet : json_object(), "replicas",
      replicas ? replicas : json_array(), "camera_moves", moves);
}

/* The fleet's recent events, oldest first, as the dashboard receives them. */
static void respond_events(struct fb_app *app, struct fb_response *resp)
{
  static struct fb_event evs[FB_EVENTS_KEEP]; /* HTTP thread only */
  uint64_t from = 0;
  size_t n = fb_events_since(app->events, &from, evs, FB_EVENTS_KEEP);
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(list, fb_event_to_json(&evs[i]));
  respond_json(resp, 200, list);
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
                           fb_api_connections(app)));
  } else if (!strcmp(p, "/healthz")) {
    respond_json(resp, 200, json_pack("{s:s}", "status", "alive"));
  } else if (!strcmp(p, "/readyz")) {
    struct fb_metrics *m = app->metrics;
    bool ok = ready(app);
    respond_json(resp, ok ? 200 : 503,
                 json_pack("{s:s,s:{s:b,s:b,s:o}}", "status", ok ? "ready" : "not ready", "checks",
                           "redis", (int)atomic_load(&m->redis_up), "consumer_group",
                           (int)atomic_load(&m->group_ready), "nats", nats_json(app)));
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
  } else if (!strcmp(p, "/api/v1/events")) {
    respond_events(app, resp);
  } else if (!strcmp(p, "/api/v1/replicas")) {
    json_t *view = fb_fleet_view(app->fleet);
    json_t *list = json_incref(json_object_get(view, "replicas"));
    json_decref(view);
    respond_json(resp, 200, list ? list : json_array());
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
  if ((req->method == FB_POST || req->method == FB_PUT) && !sends_json(req, resp)) return;
  const char *p = req->path;
  size_t plen = strlen(PROCESSORS);
  if (!strncmp(p, PROCESSORS, plen) && (p[plen] == '\0' || p[plen] == '/'))
    processors(api, p + plen, req, resp);
  else if (!strcmp(p, "/api/v1/routing"))
    routing(api, req, resp);
  else
    operations(api, req, resp);
}
