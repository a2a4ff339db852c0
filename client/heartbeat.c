/*
 * Registration and heartbeats. The heartbeat thread registers (retrying
 * with backoff while the gateway is away), then sends a heartbeat every
 * interval with the real queue depth, read on its own Redis connection or
 * JetStream context; a gateway that forgot the processor (404) gets the
 * registration again. It shares only atomics and `stop` (under `mu`) with
 * the owner thread, and the NATS connection, which nats.c locks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fbc_internal.h"

#define HTTP_TIMEOUT_MS   5000
#define RECHECK_US        (30 * 1000000LL) /* NATS heartbeats: is the registration still there? */
#define REGISTER_MAX_WAIT 10000

/* Calls the API; returns the HTTP status or a negative errno (`err`). The
 * body's "detail" (or the body) goes to `detail`; the parsed body to `doc`
 * when it is not NULL (caller decrefs). */
static int api_call(const struct fbc_client *c, const char *method, const char *path,
                    const char *body, char *detail, size_t dlen, json_t **doc, char *err,
                    size_t errlen)
{
  struct fbci_http_resp resp;
  if (detail && dlen) detail[0] = '\0';
  if (doc) *doc = NULL;
  int rc = fbci_http_request(c->cfg.api_url, method, path, c->cfg.api_token, body, HTTP_TIMEOUT_MS,
                             &resp, err, errlen);
  if (rc < 0) return rc;
  json_t *j = resp.body_len ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
  if (detail && dlen && resp.body_len) {
    const char *d = json_string_value(json_object_get(j, "detail"));
    snprintf(detail, dlen, "%s", d ? d : resp.body);
  }
  if (doc)
    *doc = j;
  else
    json_decref(j);
  int status = (int)resp.status;
  fbci_http_resp_free(&resp);
  return status;
}

static char *register_body(const struct fbci_config *cfg)
{
  json_t *caps = json_array();
  const char *p = cfg->capabilities;
  while (p && *p) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    json_array_append_new(caps, json_stringn(p, n));
    p = comma ? comma + 1 : NULL;
  }
  json_t *o = json_pack("{s:s, s:o, s:I, s:s, s:I}", "id", cfg->id, "capabilities", caps,
                        "capacity", (json_int_t)cfg->capacity, "queue", "", "heartbeat_interval_ms",
                        (json_int_t)cfg->heartbeat_ms);
  if (o && cfg->transport != FBC_REDIS) {
    /* The gateway appends our NATS results to result_stream. */
    json_object_set_new(o, "transport", json_string("nats"));
    json_object_set_new(o, "subject", json_string(cfg->subject));
    json_object_set_new(o, "result_stream", json_string(cfg->result_stream));
  }
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* After a 409: a stored registration with another transport or subject
 * (it ran over Redis before, say) is replaced by ours. Anything else of it
 * (max_queue, weight) is kept. */
static void align_registration(struct fbc_client *c)
{
  const struct fbci_config *cfg = &c->cfg;
  char path[256], err[FBCI_ERR_MAX], detail[512];
  snprintf(path, sizeof path, "/api/v1/processors/%s", cfg->id);
  json_t *doc = NULL;
  if (api_call(c, "GET", path, NULL, NULL, 0, &doc, err, sizeof err) != 200) {
    json_decref(doc);
    return;
  }
  const char *transport = json_string_value(json_object_get(doc, "transport"));
  const char *subject = json_string_value(json_object_get(doc, "subject"));
  const char *want = cfg->transport == FBC_REDIS ? "redis" : "nats";
  bool differs =
      transport && (strcmp(transport, want) != 0 ||
                    (cfg->transport != FBC_REDIS && subject && strcmp(subject, cfg->subject) != 0));
  if (differs) {
    char *body = register_body(cfg);
    int st = body ? api_call(c, "PUT", path, body, detail, sizeof detail, NULL, err, sizeof err)
                  : -ENOMEM;
    if (st == 200)
      fbci_log(c, FBC_LOG_INFO, "the stored registration said transport %s%s%s; updated it to ours",
               transport, subject ? ", subject " : "", subject ? subject : "");
    else if (st < 0)
      fbci_log(c, FBC_LOG_WARN, "could not update the stored registration: %s", err);
    else
      fbci_log(c, FBC_LOG_WARN, "updating the stored registration got HTTP %d: %s", st, detail);
    free(body);
  }
  json_decref(doc);
}

int fbci_register_once(struct fbc_client *c)
{
  char *body = register_body(&c->cfg);
  if (!body) return -ENOMEM;
  char err[FBCI_ERR_MAX], detail[512];
  int st = api_call(c, "POST", "/api/v1/processors/register", body, detail, sizeof detail, NULL,
                    err, sizeof err);
  free(body);
  if (st == 201 || st == 409) {
    c->reg_failed = 0;
    if (st == 201) {
      fbci_log(c, FBC_LOG_INFO, "registered %s with the gateway (HTTP 201)", c->cfg.id);
    } else {
      fbci_log(c, FBC_LOG_INFO, "%s is already registered (409); continuing with that registration",
               c->cfg.id);
      align_registration(c);
    }
    atomic_store(&c->registered, true);
    return 0;
  }
  if (st >= 400 && st < 500 && st != 404 && st != 408 && st != 429) {
    fbci_log(c, FBC_LOG_ERROR, "registration refused: HTTP %d: %s", st, detail);
    return -EINVAL;
  }
  if (st != c->reg_failed) { /* each new kind of failure once, not every retry */
    if (st < 0)
      fbci_log(c, FBC_LOG_WARN, "gateway not reachable (%s); retrying registration with backoff",
               err);
    else
      fbci_log(c, FBC_LOG_WARN, "registration got HTTP %d: %s; retrying with backoff", st, detail);
  }
  c->reg_failed = st;
  return st < 0 ? st : -EAGAIN;
}

/* Sleeps up to `ms` or until stop; returns true when stopping. */
static bool wait_or_stop(struct fbc_client *c, int64_t ms)
{
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&c->mu);
  while (!c->stop)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT) break;
  bool stop = c->stop;
  pthread_mutex_unlock(&c->mu);
  return stop;
}

/* Registers, retrying with backoff: 0, -ECANCELED (stopping) or -EINVAL. */
static int register_until_done(struct fbc_client *c)
{
  int64_t backoff = 500;
  if (c->reg_failed && wait_or_stop(c, backoff)) return -ECANCELED; /* fbc_connect just tried */
  while (!wait_or_stop(c, 0)) {
    int rc = fbci_register_once(c);
    if (rc == 0 || rc == -EINVAL) return rc;
    if (wait_or_stop(c, backoff)) break;
    backoff = backoff * 2 > REGISTER_MAX_WAIT ? REGISTER_MAX_WAIT : backoff * 2;
  }
  return -ECANCELED;
}

/* A Redis processor's depth: lag + pending of its group (XINFO GROUPS). */
static int64_t redis_depth(struct fbc_client *c, char *err, size_t errlen)
{
  if (!c->hb_rc) c->hb_rc = fbci_redis_connect(&c->cfg.redis, 2000, err, errlen);
  if (!c->hb_rc) return -1;
  redisReply *r = redisCommand(c->hb_rc, "XINFO GROUPS %s", c->cfg.stream);
  if (!r) {
    snprintf(err, errlen, "XINFO GROUPS: %s", c->hb_rc->errstr);
    redisFree(c->hb_rc);
    c->hb_rc = NULL;
    return -1;
  }
  int64_t depth = 0; /* no stream or group yet: nothing waits */
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const redisReply *name = fbci_reply_field(r->element[i], "name");
    if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, FBCI_GROUP) != 0) continue;
    const redisReply *lag = fbci_reply_field(r->element[i], "lag");
    const redisReply *pending = fbci_reply_field(r->element[i], "pending");
    /* lag is nil when Redis cannot tell (entries deleted mid-stream). */
    if (lag && lag->type == REDIS_REPLY_INTEGER) depth += lag->integer;
    if (pending && pending->type == REDIS_REPLY_INTEGER) depth += pending->integer;
  }
  freeReplyObject(r);
  return depth;
}

/* A JetStream processor's depth: undelivered + delivered unacked, minus what
 * is in hand (the gateway adds in_flight back). */
static int64_t js_depth(struct fbc_client *c, int64_t in_flight, char *err, size_t errlen)
{
  char why[256];
  natsStatus s = NATS_OK;
  if (!c->hb_js) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 2000;
    s = natsConnection_JetStream(&c->hb_js, c->nc, &jo);
  }
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  if (s == NATS_OK) s = js_GetConsumerInfo(&ci, c->hb_js, FBCI_JS_STREAM, c->cfg.id, NULL, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr)
    return 0; /* no stream or consumer yet: nothing waits */
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream consumer info: %s", fbci_nats_err(s, why, sizeof why));
    return -1;
  }
  int64_t depth = (int64_t)ci->NumPending + ci->NumAckPending - in_flight;
  jsConsumerInfo_Destroy(ci);
  return depth < 0 ? 0 : depth;
}

/* {processor_id, status, timestamp, in_flight, capacity, latency_ms,
 * queue_depth (omitted when it cannot be read)}. */
static char *nats_heartbeat(struct fbc_client *c, const char *status)
{
  const struct fbci_config *cfg = &c->cfg;
  char err[FBCI_ERR_MAX] = "", ts[32];
  int64_t in_flight = atomic_load(&c->in_flight);
  int64_t depth;
  if (cfg->transport == FBC_REDIS)
    depth = redis_depth(c, err, sizeof err);
  else if (cfg->transport == FBC_JETSTREAM)
    depth = js_depth(c, in_flight, err, sizeof err);
  else
    depth = atomic_load(&c->local_queued);
  if (depth < 0 && !c->depth_failed)
    fbci_log(c, FBC_LOG_WARN, "cannot read the queue depth: %s", err);
  if (depth >= 0 && c->depth_failed) fbci_log(c, FBC_LOG_INFO, "queue depth readable again");
  c->depth_failed = depth < 0;
  /* Mean time from handing a frame out to its ack, since the last heartbeat. */
  uint64_t us = atomic_load(&c->work_us), frames = atomic_load(&c->work_frames);
  if (frames > c->seen_frames)
    c->latency_ms = (double)(us - c->seen_us) / (double)(frames - c->seen_frames) / 1000.0;
  c->seen_us = us;
  c->seen_frames = frames;
  json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "processor_id", cfg->id, "status", status,
                        "timestamp", fbci_iso8601(ts, sizeof ts, fbci_real_us()), "in_flight",
                        (json_int_t)in_flight, "capacity", (json_int_t)cfg->capacity, "latency_ms",
                        c->latency_ms);
  if (o && depth >= 0) json_object_set_new(o, "queue_depth", json_integer(depth));
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(o);
  return s;
}

/* One heartbeat: over NATS when it is up, else the compat HTTP one.
 * Returns 0 (NATS), the HTTP status, or a negative errno. */
static int send_heartbeat(struct fbc_client *c, const char *status)
{
  const struct fbci_config *cfg = &c->cfg;
  char err[FBCI_ERR_MAX] = "", detail[512];
  bool stopping = strcmp(status, "stopping") == 0;
  if (cfg->hb_nats && fbci_nats_is_connected(c->nc)) {
    char *hb = nats_heartbeat(c, status);
    natsStatus s = hb ? natsConnection_PublishString(c->nc, cfg->hb_subject, hb) : NATS_NO_MEMORY;
    free(hb);
    if (s == NATS_OK && stopping) s = natsConnection_FlushTimeout(c->nc, 2000);
    if (s == NATS_OK) {
      if (c->hb_path != 1)
        fbci_log(c, FBC_LOG_INFO, "heartbeats go over NATS on %s", cfg->hb_subject);
      c->hb_path = 1;
      return 0;
    }
    fbci_log(c, FBC_LOG_WARN, "NATS heartbeat failed: %s", fbci_nats_err(s, err, sizeof err));
  }
  if (!cfg->use_api) return -ENOTCONN;
  if (c->hb_path != 2)
    fbci_log(c, FBC_LOG_INFO,
             cfg->hb_nats ? "NATS is not connected: heartbeats go over HTTP meanwhile"
                          : "heartbeats go over HTTP");
  c->hb_path = 2;
  json_t *o = json_pack("{s:s, s:s}", "processor_id", cfg->id, "status", status);
  char *hb = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  int st = hb ? api_call(c, "POST", "/api/v1/processors/heartbeat", hb, detail, sizeof detail, NULL,
                         err, sizeof err)
              : -ENOMEM;
  free(hb);
  if (st < 0)
    fbci_log(c, FBC_LOG_WARN,
             stopping ? "could not send the 'stopping' heartbeat: %s"
                      : "heartbeat failed: %s (will keep trying)",
             err);
  else if (st != 200 && st != 404)
    fbci_log(c, FBC_LOG_WARN, "heartbeat got HTTP %d: %s", st, detail);
  return st;
}

/* Whether the gateway still knows us: false only on a clear 404. */
static bool still_registered(struct fbc_client *c)
{
  char path[256], err[FBCI_ERR_MAX];
  snprintf(path, sizeof path, "/api/v1/processors/%s", c->cfg.id);
  return api_call(c, "GET", path, NULL, NULL, 0, NULL, err, sizeof err) != 404;
}

static void *hb_main(void *arg)
{
  struct fbc_client *c = arg;
  const struct fbci_config *cfg = &c->cfg;
  for (;;) {
    if (cfg->use_api && !atomic_load(&c->registered)) {
      int rc = register_until_done(c);
      if (rc == -ECANCELED) break;
      if (rc < 0) {
        atomic_store(&c->fatal, rc);
        break;
      }
    }
    if (cfg->heartbeat_ms <= 0) {
      wait_or_stop(c, INT32_MAX); /* nothing to do until we stop */
      break;
    }
    bool again = false;
    int64_t next_check = fbci_mono_us() + RECHECK_US;
    do {
      int st = send_heartbeat(c, "healthy");
      bool check = st == 0 && cfg->use_api && fbci_mono_us() >= next_check;
      if (st == 404 || (check && !still_registered(c))) {
        fbci_log(c, FBC_LOG_WARN, "the gateway does not know %s (404); registering again", cfg->id);
        atomic_store(&c->registered, false);
        again = true;
        break;
      }
      if (check) next_check = fbci_mono_us() + RECHECK_US;
    } while (!wait_or_stop(c, cfg->heartbeat_ms));
    if (!again) break;
  }
  return NULL;
}

int fbci_hb_start(struct fbc_client *c)
{
  if (!c->cfg.use_api && !c->cfg.hb_nats) return 0;
  int rc = pthread_create(&c->hb_thread, NULL, hb_main, c);
  if (rc != 0) return -rc;
  c->hb_started = true;
  return 0;
}

void fbci_hb_stop(struct fbc_client *c)
{
  pthread_mutex_lock(&c->mu);
  c->stop = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  if (c->hb_started) pthread_join(c->hb_thread, NULL);
  c->hb_started = false;
}

int fbci_say_goodbye(struct fbc_client *c)
{
  const struct fbci_config *cfg = &c->cfg;
  if (atomic_load(&c->fatal)) return 0;
  if (cfg->use_api && cfg->unregister) {
    char path[256], err[FBCI_ERR_MAX], detail[512];
    snprintf(path, sizeof path, "/api/v1/processors/%s", cfg->id);
    int st = api_call(c, "DELETE", path, NULL, detail, sizeof detail, NULL, err, sizeof err);
    if (st == 204) {
      fbci_log(c, FBC_LOG_INFO, "unregistered %s", cfg->id);
      return 0;
    }
    if (st < 0) {
      fbci_log(c, FBC_LOG_WARN, "could not unregister: %s", err);
      return st;
    }
    fbci_log(c, FBC_LOG_WARN, "unregister got HTTP %d: %s", st, detail);
    return -EPROTO;
  }
  if (cfg->heartbeat_ms <= 0 || !(atomic_load(&c->registered) || (!cfg->use_api && cfg->hb_nats)))
    return 0;
  /* Tell the gateway we are going, so it re-routes our backlog now. */
  atomic_store(&c->in_flight, 0);
  int st = send_heartbeat(c, "stopping");
  if (st >= 0)
    fbci_log(c, FBC_LOG_INFO, "sent the 'stopping' heartbeat over %s",
             c->hb_path == 1 ? "NATS" : "HTTP");
  return st < 0 ? st : 0;
}

void fbci_hb_free(struct fbc_client *c)
{
  if (c->hb_rc) redisFree(c->hb_rc);
  c->hb_rc = NULL;
  jsCtx_Destroy(c->hb_js);
  c->hb_js = NULL;
}
