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
#include "framebuffer/dlq.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "framebuffer/lookup.h"
#include "framebuffer/shadows.h"
#include "framebuffer/settings.h"
#include "framebuffer/sink.h"
#include "framebuffer/store.h"

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

void fb_api_respond_json(struct fb_response *resp, int status, json_t *doc)
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

json_t *fb_api_json_body(const struct fb_request *req, struct fb_response *resp)
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

/* ================================================================ query */

const char *fb_request_arg(const struct fb_request *req, const char *name)
{
  for (size_t i = 0; i < req->nquery; i++)
    if (!strcmp(req->query[i].name, name)) return req->query[i].value;
  return NULL;
}

bool fb_api_check_query(const struct fb_request *req, const char *const *known,
                        struct fb_response *resp)
{
  char msg[400];
  if (req->query_truncated) {
    snprintf(msg, sizeof msg, "too many or too long query arguments (at most %d)", FB_QUERY_MAX);
    fb_api_error(resp, 422, msg);
    return false;
  }
  for (size_t i = 0; i < req->nquery; i++) {
    bool ok = false;
    for (size_t k = 0; known[k] && !ok; k++)
      ok = !strcmp(req->query[i].name, known[k]);
    if (ok) continue;
    const char *near = fb_closest_name(req->query[i].name, known);
    size_t len =
        (size_t)snprintf(msg, sizeof msg, "unknown query argument \"%.100s\"", req->query[i].name);
    if (near && len < sizeof msg)
      snprintf(msg + len, sizeof msg - len, " (did you mean \"%s\"?)", near);
    len = strlen(msg);
    snprintf(msg + len, sizeof msg - len, "; this path takes ");
    for (size_t k = 0; known[k]; k++) {
      len = strlen(msg);
      snprintf(msg + len, sizeof msg - len, "%s%s", k ? ", " : "", known[k]);
    }
    if (!known[0]) {
      len = strlen(msg);
      snprintf(msg + len, sizeof msg - len, "none");
    }
    fb_api_error(resp, 422, msg);
    return false;
  }
  return true;
}

/* ============================================================ processors */

/* What GET /api/v1/processors (and search) keep: filters, each optional. */
struct proc_filter {
  const char *capability; /* NULL: any */
  int status;             /* enum fb_health, -1: any */
  int transport;          /* enum fb_transport (a sink), -1: any */
};

static bool proc_matches(const struct fb_proc *p, const struct proc_filter *f)
{
  if (f->status >= 0 && atomic_load(&p->live->status) != f->status) return false;
  if (f->transport >= 0 && (int)p->transport != f->transport) return false;
  bool has = !f->capability;
  for (size_t c = 0; c < p->ncaps && !has; c++)
    has = !strcmp(p->caps[c], f->capability);
  return has;
}

static json_t *list_json(const struct fb_snapshot *s, const struct proc_filter *f)
{
  json_t *arr = json_array();
  for (size_t i = 0; i < s->n; i++)
    if (proc_matches(s->procs[i], f)) json_array_append_new(arr, fb_proc_to_json(s->procs[i]));
  return arr;
}

/* Reads ?capability=, ?status= and ?transport= into `f`; answers 422 for
 * an argument it does not know or a value that is not one. */
static bool read_filter(struct fb_api *api, const struct fb_request *req, struct proc_filter *f,
                        struct fb_response *resp)
{
  static const char *const known[] = {"capability", "status", "transport", NULL};
  if (!fb_api_check_query(req, known, resp)) return false;
  *f = (struct proc_filter){NULL, -1, -1};
  char msg[300];
  const char *v = fb_request_arg(req, "capability");
  if (v) {
    if (!*v) {
      fb_api_error(resp, 422, "capability must not be empty");
      return false;
    }
    f->capability = v;
  }
  if ((v = fb_request_arg(req, "status"))) {
    for (int h = FB_HEALTH_HEALTHY; h <= FB_HEALTH_DEAD; h++)
      if (!strcmp(v, fb_health_name((enum fb_health)h))) f->status = h;
    if (f->status < 0) {
      snprintf(msg, sizeof msg, "status \"%.64s\" is not one of healthy, stale, dead", v);
      fb_api_error(resp, 422, msg);
      return false;
    }
  }
  if ((v = fb_request_arg(req, "transport"))) {
    f->transport = fb_sink_find(v);
    if (f->transport < 0) {
      size_t len = (size_t)snprintf(msg, sizeof msg, "transport \"%.64s\" is not one of ", v);
      for (int k = 0; k < FB_SINKS_MAX && fb_sink_list[k]; k++) {
        len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, "%s%s", k ? ", " : "", fb_sink_list[k]->name);
      }
      fb_api_error(resp, 422, msg);
      return false;
    }
  }
  (void)api;
  return true;
}

static void list_processors(struct fb_api *api, const struct fb_request *req, const char *param,
                            struct fb_response *resp)
{
  struct proc_filter f;
  if (!read_filter(api, req, &f, resp)) return;
  struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
  fb_api_respond_json(resp, 200, list_json(s, &f));
  fb_snapshot_release(s);
}

/* The compat search: the same filters, capability required. */
static void search_processors(struct fb_api *api, const struct fb_request *req, const char *param,
                              struct fb_response *resp)
{
  struct proc_filter f;
  if (!read_filter(api, req, &f, resp)) return;
  if (!f.capability) {
    fb_api_error(resp, 422, "query parameter capability is required");
    return;
  }
  struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
  fb_api_respond_json(resp, 200, list_json(s, &f));
  fb_snapshot_release(s);
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

/* Validates a registration body (taken: it is released here): no unknown
 * member, the fields themselves, and what this gateway can serve. Returns
 * a new processor, or NULL after answering 422. */
static struct fb_proc *proc_from_body(struct fb_api *api, json_t *body, struct fb_response *resp)
{
  struct fb_proc *p = NULL;
  char why[400] = "";
  int rc = fb_proc_check_fields(body, why, sizeof why);
  if (!rc) rc = fb_proc_from_json(&p, body, api->app->cfg->input_stream, why, sizeof why);
  if (!rc) rc = fb_proc_check_new(p, why, sizeof why);
  json_decref(body);
  if (rc) {
    fb_proc_release(p);
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

bool fb_api_retry(struct fb_api *api, int attempt)
{
  if (attempt > 0 || api->redis.ctx) return false; /* answered by Redis: not a lost connection */
  fb_redis_retry_now(&api->redis);
  return true;
}

static int store_save(struct fb_api *api, const struct fb_proc *p, bool replace, char *why,
                      size_t n)
{
  int rc, attempt = 0;
  do
    rc = fb_store_save(&api->redis, p, replace, why, n);
  while (rc == -EIO && fb_api_retry(api, attempt++));
  return rc;
}

static void do_register(struct fb_api *api, const struct fb_request *req, const char *param,
                        struct fb_response *resp)
{
  json_t *body = fb_api_json_body(req, resp);
  if (!body) return;
  json_object_set_new(body, "registered_at_ms", json_integer(fb_wall_ms()));
  struct fb_proc *p = proc_from_body(api, body, resp);
  if (!p) return;
  char why[300] = "";
  int rc = store_save(api, p, false, why, sizeof why);
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
  fb_api_respond_json(resp, 201, fb_proc_to_json(p));
  fb_proc_release(p);
}

/* Processor ids in a path: a bad one is not found (GET, DELETE) or not
 * valid (PUT). */
static bool path_id_ok(const struct fb_request *req, const char *id, struct fb_response *resp)
{
  if (fb_proc_id_is_valid(id, strlen(id))) return true;
  fb_api_error(resp, req->method == FB_PUT ? 422 : 404,
               "processor ids are 1-128 characters of A-Z a-z 0-9 . _ : -");
  return false;
}

static void get_processor(struct fb_api *api, const struct fb_request *req, const char *id,
                          struct fb_response *resp)
{
  if (!path_id_ok(req, id, resp)) return;
  struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
  int idx = fb_snapshot_find(s, id);
  if (idx >= 0) {
    fb_api_respond_json(resp, 200, fb_proc_to_json(s->procs[idx]));
  } else {
    char msg[200];
    snprintf(msg, sizeof msg, "processor %s is not registered", id);
    fb_api_error(resp, 404, msg);
  }
  fb_snapshot_release(s);
}

static void do_update(struct fb_api *api, const struct fb_request *req, const char *id,
                      struct fb_response *resp)
{
  if (!path_id_ok(req, id, resp)) return;
  json_t *body = fb_api_json_body(req, resp);
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
  int rc = store_save(api, p, true, why, sizeof why);
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
  fb_api_respond_json(resp, 200, fb_proc_to_json(idx >= 0 ? s->procs[idx] : p));
  fb_snapshot_release(s);
  fb_proc_release(p);
}

/* ?purge=true|false (default false). Returns 1, 0, or -1 after a 422. */
static int purge_arg(const struct fb_request *req, struct fb_response *resp)
{
  static const char *const known[] = {"purge", NULL};
  if (!fb_api_check_query(req, known, resp)) return -1;
  const char *v = fb_request_arg(req, "purge");
  if (!v || !strcmp(v, "false") || !strcmp(v, "0")) return 0;
  if (!strcmp(v, "true") || !strcmp(v, "1") || !*v) return 1;
  fb_api_error(resp, 422, "purge must be true or false");
  return -1;
}

static void do_delete(struct fb_api *api, const struct fb_request *req, const char *id,
                      struct fb_response *resp)
{
  if (!path_id_ok(req, id, resp)) return;
  int purge = purge_arg(req, resp);
  if (purge < 0) return;
  /* What to purge: its stream, unless another processor reads it too. */
  char *stream = NULL, other[FB_PROC_ID_MAX + 1] = "";
  if (purge) {
    struct fb_snapshot *s = fb_registry_snapshot(api->app->registry);
    int idx = fb_snapshot_find(s, id);
    if (idx >= 0 && fb_sink_in_redis(s->procs[idx]->transport)) {
      stream = strdup(s->procs[idx]->stream);
      for (size_t i = 0; i < s->n && stream; i++)
        if (i != (size_t)idx && fb_sink_in_redis(s->procs[i]->transport) &&
            !strcmp(s->procs[i]->stream, stream))
          snprintf(other, sizeof other, "%s", s->procs[i]->id);
    } else if (idx < 0) {
      /* Unknown here (not yet synced, or gone): its default stream. */
      size_t n = strlen("frames:ready:") + strlen(id) + 1;
      if ((stream = malloc(n))) snprintf(stream, n, "frames:ready:%s", id);
    }
    fb_snapshot_release(s);
    if (other[0]) {
      char msg[500];
      snprintf(msg, sizeof msg,
               "not purged: its stream %s is also the queue of processor %s (delete without "
               "purge, or purge that one too)",
               stream, other);
      free(stream);
      fb_api_error(resp, 409, msg);
      return;
    }
  }
  int rc, attempt = 0;
  do
    rc = fb_store_delete(&api->redis, id);
  while (rc == -EIO && fb_api_retry(api, attempt++));
  /* Gone from Redis: gone here too. Known here but already gone from Redis
   * (removed elsewhere, not yet synced): that is a delete as well. */
  if (rc == 0 || rc == -ENOENT) {
    bool known_here = fb_registry_remove(api->app->registry, id) == 0;
    if (rc == -ENOENT && known_here) rc = 0;
  }
  if (rc) {
    free(stream);
    store_failed(resp, rc, id, "");
    return;
  }
  bool purged = false;
  if (stream) {
    int attempt2 = 0;
    do
      rc = fb_store_purge(&api->redis, stream);
    while (rc == -EIO && fb_api_retry(api, attempt2++));
    purged = rc == 0;
    if (rc) fb_warn("api", "unregistered processor %s, but could not purge %s", id, stream);
  }
  fb_info("api", "unregistered processor %s%s%s", id, purged ? ", purged its stream " : "",
          purged ? stream : "");
  free(stream);
  fb_fleet_forget(api->app->fleet, &api->redis, id);
  fb_event_emit_by(api->app->events, req->request_id, "unregister", id, "removed",
                   purged ? "unregistered over the API, stream purged"
                          : "unregistered over the API");
  resp->status = 204;
  resp->content_type = NULL;
  fb_buf_reset(&resp->body);
}

static void do_heartbeat(struct fb_api *api, const struct fb_request *req, const char *param,
                         struct fb_response *resp)
{
  json_t *body = fb_api_json_body(req, resp);
  if (!body) return;
  json_t *jid = json_object_get(body, "processor_id");
  if (!json_is_string(jid) || !json_string_length(jid)) {
    json_decref(body);
    fb_api_error(resp, 400, "processor_id is required");
    return;
  }
  struct fb_heartbeat hb;
  char why[300];
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
    int attempt = 0;
    while ((rc = fb_fleet_heartbeat(api->app->fleet, &api->redis, req->body, req->body_len)) &&
           fb_api_retry(api, attempt++))
      ;
    if (rc)
      fb_debug("api", "heartbeat of %s counts on this replica only: Redis is not reachable", id);
    fb_api_respond_json(resp, 200, json_pack("{s:s,s:s}", "status", "ok", "processor_id", id));
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

static void get_routing(struct fb_api *api, const struct fb_request *req, const char *param,
                        struct fb_response *resp)
{
  fb_api_respond_json(resp, 200, routing_json(api->app));
}

/* PUT stores the given settings for the whole fleet; DELETE removes every
 * stored setting (each replica goes back to its configured values). Either
 * is one event on every dashboard, saying what changed, where and why. */
static void change_routing(struct fb_api *api, const struct fb_request *req, const char *param,
                           struct fb_response *resp)
{
  struct fb_app *app = api->app;
  struct fb_routing_patch patch;
  if (req->method == FB_PUT) {
    json_t *body = fb_api_json_body(req, resp);
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
  int rc, attempt = 0;
  do
    rc = fb_settings_store(app->settings, &api->redis, req->method == FB_PUT ? &patch : NULL,
                           app->cfg->consumer_name, req->request_id, &before, &after);
  while (rc && fb_api_retry(api, attempt++));
  if (rc) {
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
  fb_api_respond_json(resp, 200, routing_json(app));
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
      "s:{s:b,s:b,s:b},s:s,s:o,s:o,s:o,s:o}",
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
      replicas ? replicas : json_array(), "camera_moves", moves, "shadows",
      fb_shadows_json(app->shadows));
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
  fb_api_respond_json(resp, 200, list);
}

static void get_health(struct fb_api *api, const struct fb_request *req, const char *param,
                       struct fb_response *resp)
{
  struct fb_app *app = api->app;
  bool ok = ready(app);
  const char *status = !ok ? "unhealthy" : nats_ok(app) ? "healthy" : "degraded";
  fb_api_respond_json(resp, ok ? 200 : 503,
                      json_pack("{s:s,s:s,s:s,s:o}", "status", status, "service", "frame-buffer-v2",
                                "consumer", app->cfg->consumer_name, "connections",
                                fb_api_connections(app)));
}

static void get_healthz(struct fb_api *api, const struct fb_request *req, const char *param,
                        struct fb_response *resp)
{
  fb_api_respond_json(resp, 200, json_pack("{s:s}", "status", "alive"));
}

static void get_readyz(struct fb_api *api, const struct fb_request *req, const char *param,
                       struct fb_response *resp)
{
  struct fb_app *app = api->app;
  struct fb_metrics *m = app->metrics;
  bool ok = ready(app);
  fb_api_respond_json(resp, ok ? 200 : 503,
                      json_pack("{s:s,s:{s:b,s:b,s:o}}", "status", ok ? "ready" : "not ready",
                                "checks", "redis", (int)atomic_load(&m->redis_up), "consumer_group",
                                (int)atomic_load(&m->group_ready), "nats", nats_json(app)));
}

static void get_metrics(struct fb_api *api, const struct fb_request *req, const char *param,
                        struct fb_response *resp)
{
  struct fb_app *app = api->app;
  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  resp->status = 200;
  resp->content_type = "text/plain; version=0.0.4";
  fb_buf_reset(&resp->body);
  if (fb_metrics_render(app->metrics, s, app->cfg->nats_enabled, &resp->body) ||
      fb_shadows_render_metrics(app->shadows, &resp->body))
    fb_api_error(resp, 500, "metrics too large");
  fb_snapshot_release(s);
}

static void get_stats(struct fb_api *api, const struct fb_request *req, const char *param,
                      struct fb_response *resp)
{
  fb_api_respond_json(resp, 200, fb_api_stats(api->app));
}

static void get_events(struct fb_api *api, const struct fb_request *req, const char *param,
                       struct fb_response *resp)
{
  respond_events(api->app, resp);
}

static void get_replicas(struct fb_api *api, const struct fb_request *req, const char *param,
                         struct fb_response *resp)
{
  json_t *view = fb_fleet_view(api->app->fleet);
  json_t *list = json_incref(json_object_get(view, "replicas"));
  json_decref(view);
  fb_api_respond_json(resp, 200, list ? list : json_array());
}

/* ================================================================ routes */

#define PROCESSORS "/api/v1/processors"

/*
 * Every route the API answers: one line each, a method on a path template.
 * From it come the 404s, the 405s and OPTIONS with their Allow, the token
 * check and the Content-Type check; the handler does the rest. Handlers of
 * another file are declared in its header with the handler type
 * (`fb_api_handler fb_api_dlq_list;`) and get their lines here. The
 * template is also the `route` label of frame_buffer_http_requests_total,
 * so it stays a template ({id}), never a raw path. A literal path wins
 * over a template (register, heartbeat and search over {id}).
 */
static const struct fb_route routes[] = {
    {FB_GET, PROCESSORS, FB_ACCESS_OPEN, list_processors},
    {FB_POST, PROCESSORS "/register", FB_ACCESS_PROCESSOR, do_register},
    {FB_POST, PROCESSORS "/heartbeat", FB_ACCESS_PROCESSOR, do_heartbeat},
    {FB_GET, PROCESSORS "/search", FB_ACCESS_OPEN, search_processors},
    {FB_GET, PROCESSORS "/{id}", FB_ACCESS_OPEN, get_processor},
    {FB_PUT, PROCESSORS "/{id}", FB_ACCESS_OPERATOR, do_update},
    {FB_DELETE, PROCESSORS "/{id}", FB_ACCESS_OPERATOR, do_delete},
    {FB_GET, "/api/v1/routing", FB_ACCESS_OPEN, get_routing},
    {FB_PUT, "/api/v1/routing", FB_ACCESS_OPERATOR, change_routing},
    {FB_DELETE, "/api/v1/routing", FB_ACCESS_OPERATOR, change_routing},
    {FB_GET, "/api/v1/stats", FB_ACCESS_OPEN, get_stats},
    {FB_GET, "/api/v1/events", FB_ACCESS_OPEN, get_events},
    {FB_GET, "/api/v1/replicas", FB_ACCESS_OPEN, get_replicas},
    {FB_GET, "/api/v1/dlq", FB_ACCESS_OPEN, fb_api_dlq_list},
    {FB_DELETE, "/api/v1/dlq", FB_ACCESS_OPERATOR, fb_api_dlq_purge},
    {FB_GET, "/api/v1/dlq/summary", FB_ACCESS_OPEN, fb_api_dlq_summary},
    {FB_POST, "/api/v1/dlq/replay", FB_ACCESS_OPERATOR, fb_api_dlq_replay},
    {FB_GET, "/api/v1/shadows", FB_ACCESS_OPEN, fb_api_shadows_list},
    {FB_PUT, "/api/v1/shadows/{name}", FB_ACCESS_OPERATOR, fb_api_shadow_put},
    {FB_DELETE, "/api/v1/shadows/{name}", FB_ACCESS_OPERATOR, fb_api_shadow_delete},
    {FB_GET, "/api/v1/frames/{frame_id}", FB_ACCESS_OPEN, fb_api_frame_get},
    {FB_GET, "/health", FB_ACCESS_OPEN, get_health},
    {FB_GET, "/healthz", FB_ACCESS_OPEN, get_healthz},
    {FB_GET, "/readyz", FB_ACCESS_OPEN, get_readyz},
    {FB_GET, "/metrics", FB_ACCESS_OPEN, get_metrics},
};
#define NROUTES (sizeof routes / sizeof routes[0])

/* Does `path` match template `tpl`? On a match, the {...} segment (if any)
 * is copied to `param` (NUL-terminated) and the number of {...} segments is
 * returned; -1 otherwise. */
static int match(const char *tpl, const char *path, char *param, size_t cap)
{
  int params = 0;
  while (*tpl && *path) {
    if (*tpl != '/' || *path != '/') return -1;
    tpl++, path++;
    size_t tn = strcspn(tpl, "/"), pn = strcspn(path, "/");
    if (tpl[0] == '{') {
      if (!pn || pn >= cap) return -1;
      memcpy(param, path, pn);
      param[pn] = '\0';
      params++;
    } else if (tn != pn || memcmp(tpl, path, tn)) {
      return -1;
    }
    tpl += tn, path += pn;
  }
  return *tpl || *path ? -1 : params;
}

/* The template for `path`: of those that match it, the one with the fewest
 * {...} segments, first in the table on a tie. -1 when none does. */
static int find_template(const char *path, char *param, size_t cap)
{
  int best = -1, best_params = 0;
  char tmp[512];
  for (size_t i = 0; i < NROUTES; i++) {
    int np = match(routes[i].path, path, tmp, sizeof tmp);
    if (np < 0 || (best >= 0 && np >= best_params)) continue;
    best = (int)i;
    best_params = np;
    if (np) snprintf(param, cap, "%s", tmp);
  }
  return best;
}

/* "GET, HEAD, PUT, DELETE, OPTIONS" for the routes of template `tpl`. The
 * answer is kept for the life of the process (one per template). */
static const char *allow_of(const char *tpl)
{
  static struct {
    const char *tpl;
    char allow[64];
  } cache[NROUTES]; /* HTTP thread only */
  size_t slot = 0;
  while (slot < NROUTES && cache[slot].tpl && cache[slot].tpl != tpl)
    slot++;
  if (slot == NROUTES) return "GET, HEAD, OPTIONS"; /* cannot happen: one per template */
  if (cache[slot].tpl) return cache[slot].allow;
  static const enum fb_method order[] = {FB_GET, FB_POST, FB_PUT, FB_DELETE, FB_PATCH};
  static const char *const names[] = {"GET, HEAD", "POST", "PUT", "DELETE", "PATCH"};
  char *a = cache[slot].allow;
  a[0] = '\0';
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
    for (size_t i = 0; i < NROUTES; i++)
      if (routes[i].path == tpl && routes[i].method == order[k]) {
        size_t len = strlen(a);
        snprintf(a + len, sizeof cache[slot].allow - len, "%s, ", names[k]);
        break;
      }
  size_t len = strlen(a);
  snprintf(a + len, sizeof cache[slot].allow - len, "OPTIONS");
  cache[slot].tpl = tpl;
  return a;
}

const char *fb_api_route_of(const char *path)
{
  char param[512];
  int t = find_template(path, param, sizeof param);
  return t < 0 ? NULL : routes[t].path;
}

void fb_api_handle(struct fb_api *api, const struct fb_request *req, struct fb_response *resp)
{
  resp->allow = NULL;
  resp->route = NULL;
  resp->challenge = false;
  char param[512];
  int t = find_template(req->path, param, sizeof param);
  if (t < 0) {
    fb_api_error(resp, 404, "Not Found");
    return;
  }
  const char *tpl = routes[t].path;
  resp->route = tpl;
  enum fb_method m = req->method == FB_HEAD ? FB_GET : req->method;
  const struct fb_route *r = NULL;
  for (size_t i = (size_t)t; i < NROUTES && !r; i++)
    if (routes[i].path == tpl && routes[i].method == m) r = &routes[i];
  if (!r) {
    resp->allow = allow_of(tpl);
    if (req->method == FB_OPTIONS) {
      resp->status = 204;
      resp->content_type = NULL;
      fb_buf_reset(&resp->body);
    } else {
      method_not_allowed(resp, resp->allow);
    }
    return;
  }
  if (r->access != FB_ACCESS_OPEN &&
      !authorized(api, req, resp, r->access == FB_ACCESS_PROCESSOR ? PROCESSOR : OPERATOR))
    return;
  if ((m == FB_POST || m == FB_PUT) && !sends_json(req, resp)) return;
  r->handler(api, req, strchr(tpl, '{') ? param : NULL, resp);
}
