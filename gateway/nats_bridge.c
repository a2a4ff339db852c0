/*
 * NATS bridge (see nats_bridge.h). nats.c owns its threads; our callbacks do
 * little: heartbeats become atomics, results are appended to `results.buf`
 * under `results.lock` and written to Redis by the results thread. The
 * ingest thread alone publishes frames and waits for JetStream acks; the
 * failed-ack list it drains is guarded by `failed_lock`.
 */
#include "framebuffer/nats_bridge.h"

#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "framebuffer/redis.h"

#define HEARTBEAT_PREFIX       "processors.heartbeat."
#define HEARTBEAT_SUBJECT      HEARTBEAT_PREFIX ">" /* ids may hold dots */
#define RESULTS_PREFIX         "frames.results."
#define RESULTS_SUBJECT        RESULTS_PREFIX ">"
#define EVENTS_SUBJECT         "processors.events"
#define JS_STREAM              "FRAMES"
#define JS_SUBJECTS            "frames.ready.>"
#define JS_DUPLICATE_WINDOW_NS (INT64_C(120) * 1000000000)
#define JS_ACK_WAIT_MS         5000
#define JS_MAX_PENDING         65536
#define RESULTS_MAX            (32u << 20) /* queued result commands, bytes */
#define PAYLOAD_MAX            (FB_FRAME_MAX_BYTES * 2 + 1024)
#define FAILED_MAX             4096

struct fb_nats {
  struct fb_app *app;
  natsOptions *opts;
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *heartbeats, *results_sub;
  atomic_bool connected;
  atomic_bool closing;               /* fb_nats_stop has begun: a disconnect is expected */
  atomic_bool stream_ready;          /* JetStream stream FRAMES exists */
  bool core_checked;                 /* control thread: the FRAMES check of core mode ran */
  int64_t next_stream_try_ms;        /* ingest thread */
  struct fb_buf payload;             /* ingest thread: one frame as JSON */
  uint64_t published_since_complete; /* ingest thread */

  pthread_mutex_t failed_lock;
  char *failed[FAILED_MAX]; /* frame ids JetStream refused; guarded by failed_lock */
  size_t nfailed;           /* guarded by failed_lock */
  bool failed_overflow;     /* guarded by failed_lock */

  struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct fb_buf buf; /* RESP commands; guarded by lock */
    size_t count;      /* commands in buf; guarded by lock */
    bool stop;         /* guarded by lock */
    pthread_t thread;
    struct fb_redis redis; /* results thread only */
  } results;
};

/* ============================================================ connection */

static void on_disconnected(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  atomic_store(&n->connected, false);
  atomic_store(&n->app->metrics->nats_up, 0);
  if (!atomic_load(&n->closing))
    fb_warn("nats", "disconnected from NATS; reconnecting with backoff (Redis routing goes on)");
}

static void on_connected(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  atomic_store(&n->connected, true);
  atomic_store(&n->app->metrics->nats_up, 1);
  fb_info("nats", "connected to %s", url);
}

static void on_closed(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  atomic_store(&n->connected, false);
  atomic_store(&n->app->metrics->nats_up, 0);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
  fb_warn("nats", "asynchronous error: %s", natsStatus_GetText(err));
}

/* Reconnect backoff: 250 ms doubling to 5 s, restarting after a success. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
  int64_t d = 250;
  for (int i = 1; i < attempts && d < 5000; i++)
    d *= 2;
  return d > 5000 ? 5000 : d;
}

static int set_servers(natsOptions *opts, const char *urls)
{
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", urls);
  const char *servers[32];
  int count = 0;
  char *save = NULL;
  for (char *s = strtok_r(copy, ",", &save); s && count < 32; s = strtok_r(NULL, ",", &save)) {
    while (*s == ' ')
      s++;
    if (*s) servers[count++] = s;
  }
  return natsOptions_SetServers(opts, servers, count) == NATS_OK ? 0 : -EINVAL;
}

static int build_options(struct fb_nats *n)
{
  const struct fb_config *c = n->app->cfg;
  char name[300];
  snprintf(name, sizeof name, "frame-buffer %s", c->consumer_name);
  natsStatus s = natsOptions_Create(&n->opts);
  if (s == NATS_OK && set_servers(n->opts, c->nats_url)) s = NATS_INVALID_ARG;
  if (s == NATS_OK) s = natsOptions_SetName(n->opts, name);
  if (s == NATS_OK) s = natsOptions_SetNoEcho(n->opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(n->opts, -1);
  if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(n->opts, reconnect_delay, n);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(n->opts, 32 * 1024 * 1024);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(n->opts, on_connected, n);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(n->opts, on_closed, n);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(n->opts, on_error, n);
  if (s == NATS_OK && c->nats_token[0]) s = natsOptions_SetToken(n->opts, c->nats_token);
  if (s == NATS_OK && c->nats_user[0])
    s = natsOptions_SetUserInfo(n->opts, c->nats_user, c->nats_password);
  if (s == NATS_OK && c->nats_creds[0])
    s = natsOptions_SetUserCredentialsFromFiles(n->opts, c->nats_creds, NULL);
  if (s == NATS_OK && c->nats_tls_ca[0]) {
    s = natsOptions_LoadCATrustedCertificates(n->opts, c->nats_tls_ca);
    if (s == NATS_OK) s = natsOptions_SetSecure(n->opts, true);
  }
  if (s != NATS_OK) {
    /* Said the way a bad setting is said: main exits with status 2. */
    fprintf(stderr,
            "frame-buffer: invalid NATS setting (NATS_URL, NATS_CREDS, NATS_TLS_CA, ...): %s\n",
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s));
    return -EINVAL;
  }
  return 0;
}

bool fb_nats_is_connected(const struct fb_nats *n)
{
  return n && atomic_load(&n->connected);
}

/* ============================================================ heartbeats */

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
  struct fb_nats *n = closure;
  const char *subject = natsMsg_GetSubject(msg);
  const char *sid = subject + sizeof HEARTBEAT_PREFIX - 1; /* the subscription guarantees it */
  char id[FB_PROC_ID_MAX + 1];
  const char *why;
  int rc = fb_heartbeat_apply(n->app, sid, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                              fb_wall_ms(), id, &why);
  if (rc) {
    atomic_fetch_add(&n->app->metrics->heartbeats_rejected, 1);
    fb_debug("nats", "heartbeat on %s ignored: %s", subject, why);
  }
  natsMsg_Destroy(msg);
}

void fb_nats_publish_event(struct fb_nats *n, const char *event, const char *processor_id,
                           const char *status)
{
  if (!n || !atomic_load(&n->connected)) return;
  char mem[512];
  struct fb_buf b;
  fb_buf_init_fixed(&b, mem, sizeof mem);
  fb_buf_puts(&b, "{\"event\":");
  fb_buf_json_string(&b, event, strlen(event));
  fb_buf_puts(&b, ",\"processor_id\":");
  fb_buf_json_string(&b, processor_id, strlen(processor_id));
  fb_buf_puts(&b, ",\"status\":");
  fb_buf_json_string(&b, status, strlen(status));
  fb_buf_printf(&b, ",\"at\":%lld}", (long long)fb_wall_ms());
  if (!b.truncated) natsConnection_Publish(n->nc, EVENTS_SUBJECT, b.data, (int)b.len);
}

/* =============================================================== results */

/* Appends an XADD of one result to the queue. Library thread. */
static void on_result(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
  struct fb_nats *n = closure;
  const char *subject = natsMsg_GetSubject(msg);
  const char *pid = subject + sizeof RESULTS_PREFIX - 1;
  const char *data = natsMsg_GetData(msg);
  size_t len = (size_t)natsMsg_GetDataLength(msg);

  struct fb_snapshot *s = fb_registry_snapshot(n->app->registry);
  int idx = fb_snapshot_find(s, pid);
  json_t *doc = idx >= 0 && len <= PAYLOAD_MAX ? json_loadb(data, len, 0, NULL) : NULL;
  if (idx < 0 || len > PAYLOAD_MAX) {
    atomic_fetch_add(&n->app->metrics->results_dropped, 1);
    fb_debug("nats", "result on %s dropped: %s", subject,
             idx < 0 ? "unknown processor" : "too large");
    goto out;
  }

  /* An object's members become fields (strings as they are, the rest as
   * JSON); anything else is kept whole in a field named result. */
  char stamp[24];
  snprintf(stamp, sizeof stamp, "%lld", (long long)fb_wall_ms());
  size_t nfields = json_is_object(doc) ? json_object_size(doc) : 1;
  bool has_pid = json_is_object(doc) && json_object_get(doc, "processor_id");
  pthread_mutex_lock(&n->results.lock);
  struct fb_buf *o = &n->results.buf;
  size_t mark = o->len;
  fb_buf_resp_array(o, 3 + 2 * (nfields + (has_pid ? 0 : 1) + 1));
  fb_buf_resp_bulk(o, "XADD", 4);
  fb_buf_resp_bulk(o, s->procs[idx]->result_stream, strlen(s->procs[idx]->result_stream));
  fb_buf_resp_bulk(o, "*", 1);
  if (json_is_object(doc)) {
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
      fb_buf_resp_bulk(o, key, strlen(key));
      if (json_is_string(v)) {
        fb_buf_resp_bulk(o, json_string_value(v), json_string_length(v));
      } else {
        char *enc = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fb_buf_resp_bulk(o, enc ? enc : "null", enc ? strlen(enc) : 4);
        free(enc);
      }
    }
  } else {
    fb_buf_resp_bulk(o, "result", 6);
    fb_buf_resp_bulk(o, data, len);
  }
  if (!has_pid) {
    fb_buf_resp_bulk(o, "processor_id", 12);
    fb_buf_resp_bulk(o, pid, strlen(pid));
  }
  fb_buf_resp_bulk(o, "received_at_ms", 14);
  fb_buf_resp_bulk(o, stamp, strlen(stamp));
  if (o->truncated) {
    /* The queue is full (Redis is away): drop this result, keep the rest. */
    o->len = mark;
    o->truncated = false;
    atomic_fetch_add(&n->app->metrics->results_dropped, 1);
  } else {
    n->results.count++;
    pthread_cond_signal(&n->results.cond);
  }
  pthread_mutex_unlock(&n->results.lock);
out:
  json_decref(doc);
  fb_snapshot_release(s);
  natsMsg_Destroy(msg);
}

/* Writes queued results to Redis in one pipeline. A batch that fails is
 * kept and written again after the reconnect (a result may then be written
 * twice; results are at-least-once). */
static void *results_thread(void *arg)
{
  struct fb_nats *n = arg;
  struct fb_buf mine;
  fb_buf_init(&mine, RESULTS_MAX);
  size_t count = 0;
  pthread_mutex_lock(&n->results.lock);
  for (;;) {
    while (!n->results.count && !count && !n->results.stop)
      pthread_cond_wait(&n->results.cond, &n->results.lock);
    if (n->results.stop && !n->results.count && !count) break;
    if (!count) {
      struct fb_buf t = mine;
      mine = n->results.buf;
      n->results.buf = t;
      fb_buf_reset(&n->results.buf);
      count = n->results.count;
      n->results.count = 0;
    }
    pthread_mutex_unlock(&n->results.lock);

    bool ok = fb_redis_ensure(&n->results.redis) == 0;
    if (ok) {
      redisContext *c = n->results.redis.ctx;
      redisAppendFormattedCommand(c, mine.data, mine.len);
      for (size_t i = 0; i < count && ok; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK) {
          fb_redis_drop(&n->results.redis, c->errstr);
          ok = false;
        } else {
          if (((redisReply *)rep)->type == REDIS_REPLY_ERROR) {
            fb_warn("nats", "writing a result: %s", ((redisReply *)rep)->str);
            atomic_fetch_add(&n->app->metrics->results_dropped, 1);
          } else {
            atomic_fetch_add(&n->app->metrics->results_written, 1);
          }
          freeReplyObject(rep);
        }
      }
    }
    if (ok) {
      fb_buf_reset(&mine);
      count = 0;
    } else {
      fb_sleep_ms(200);
    }
    pthread_mutex_lock(&n->results.lock);
    if (!ok && n->results.stop) break; /* Redis is gone at shutdown: give up */
  }
  pthread_mutex_unlock(&n->results.lock);
  if (count) fb_warn("nats", "%zu results not written at shutdown: Redis unreachable", count);
  fb_buf_free(&mine);
  return NULL;
}

/* ================================================================ frames */

static void on_pub_ack_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
  struct fb_nats *n = closure;
  const char *id = NULL;
  natsMsgHeader_Get(pae->Msg, "Nats-Msg-Id", &id);
  pthread_mutex_lock(&n->failed_lock);
  if (n->nfailed < FAILED_MAX && id)
    n->failed[n->nfailed++] = strdup(id);
  else
    n->failed_overflow = true;
  pthread_mutex_unlock(&n->failed_lock);
  fb_debug("nats", "JetStream did not store frame %s: %s", id ? id : "?",
           pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
}

/* Creates the JetStream stream FRAMES when it does not exist. Ingest thread,
 * at most once a second until it works. */
static void ensure_stream(struct fb_nats *n)
{
  if (atomic_load(&n->stream_ready) || !atomic_load(&n->connected)) return;
  int64_t now = fb_mono_ms();
  if (now < n->next_stream_try_ms) return;
  n->next_stream_try_ms = now + 1000;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, n->js, JS_STREAM, NULL, &jerr);
  int want = n->app->cfg->nats_js_replicas;
  if (s == NATS_OK) {
    if (si->Config && si->Config->Replicas != want)
      fb_warn("nats",
              "JetStream stream %s has %lld replicas, NATS_JS_REPLICAS is %d; the gateway does "
              "not change an existing stream (nats stream edit %s --replicas %d does)",
              JS_STREAM, (long long)si->Config->Replicas, want, JS_STREAM, want);
    jsStreamInfo_Destroy(si);
    atomic_store(&n->stream_ready, true);
    return;
  }
  if (s != NATS_NOT_FOUND) {
    fb_warn("nats", "cannot look up JetStream stream %s: %s", JS_STREAM, natsStatus_GetText(s));
    return;
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char *subjects[] = {JS_SUBJECTS};
  cfg.Name = JS_STREAM;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_WorkQueuePolicy;
  cfg.Storage = js_FileStorage;
  cfg.Duplicates = JS_DUPLICATE_WINDOW_NS;
  cfg.Replicas = want;
  s = js_AddStream(&si, n->js, &cfg, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    atomic_store(&n->stream_ready, true);
    fb_info("nats", "created JetStream stream %s (%s, work-queue retention, %d replicas)",
            JS_STREAM, JS_SUBJECTS, want);
  } else {
    fb_warn("nats", "cannot create JetStream stream %s: %s (error %d)", JS_STREAM,
            natsStatus_GetText(s), (int)jerr);
  }
}

/* A W3C traceparent from the frame: its own field, or trace_context's ids. */
static bool traceparent(const struct fb_frame *f, char *out, size_t n)
{
  for (size_t i = 0; i < f->nfields; i++)
    if (fb_str_eq(f->fields[i].name, "traceparent") && f->fields[i].value.n < n) {
      memcpy(out, f->fields[i].value.p, f->fields[i].value.n);
      out[f->fields[i].value.n] = '\0';
      return true;
    }
  for (size_t i = 0; i < f->nfields; i++) {
    if (!fb_str_eq(f->fields[i].name, "trace_context")) continue;
    struct fb_str v = f->fields[i].value, tid, sid;
    enum fb_json_type tt, st;
    bool esc;
    if (fb_json_scan_object(v.p, v.n, "trace_id", &tt, &tid, &esc) ||
        fb_json_scan_object(v.p, v.n, "span_id", &st, &sid, &esc))
      return false;
    if (tt != FB_JSON_STRING || st != FB_JSON_STRING || tid.n != 32 || sid.n != 16) return false;
    snprintf(out, n, "00-%.32s-%.16s-01", tid.p, sid.p);
    return true;
  }
  return false;
}

int fb_nats_publish_frame(struct fb_nats *n, const struct fb_proc *p, const struct fb_frame *f)
{
  if (!atomic_load(&n->connected)) return -ENOTCONN;
  bool js = n->js != NULL;
  if (js) {
    ensure_stream(n);
    if (!atomic_load(&n->stream_ready)) return -ENOTCONN;
  }

  struct fb_buf *o = &n->payload;
  fb_buf_reset(o);
  fb_frame_append_json(o, f);
  if (o->truncated) return -ENOSPC;

  char msg_id[512];
  snprintf(msg_id, sizeof msg_id, "%.*s", (int)f->frame_id.n, f->frame_id.p);
  char tp[128];
  natsMsg *msg = NULL;
  natsStatus s = natsMsg_Create(&msg, p->subject, NULL, o->data, (int)o->len);
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Nats-Msg-Id", msg_id);
  if (s == NATS_OK && traceparent(f, tp, sizeof tp)) s = natsMsgHeader_Set(msg, "traceparent", tp);
  if (s == NATS_OK) {
    if (js) {
      s = js_PublishMsgAsync(n->js, &msg, NULL); /* takes msg on success */
      if (s == NATS_OK) n->published_since_complete++;
    } else {
      s = natsConnection_PublishMsg(n->nc, msg);
    }
  }
  natsMsg_Destroy(msg);
  if (s != NATS_OK) {
    fb_debug("nats", "publishing frame %s to %s: %s", msg_id, p->subject, natsStatus_GetText(s));
    return -EIO;
  }
  return 0;
}

void fb_nats_complete(struct fb_nats *n, void (*failed)(void *ctx, const char *frame_id), void *ctx,
                      bool *all_failed)
{
  *all_failed = false;
  if (!n->js || !n->published_since_complete) return;
  n->published_since_complete = 0;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = JS_ACK_WAIT_MS;
  natsStatus s = js_PublishAsyncComplete(n->js, &po);
  if (s != NATS_OK) {
    /* Take back what was never acked (its acks may have died with a NATS
     * node): those frames are retried, and no later batch waits for them. */
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, n->js) == NATS_OK) {
      for (int i = 0; i < pending.Count; i++) {
        const char *id = NULL;
        if (pending.Msgs[i] && natsMsgHeader_Get(pending.Msgs[i], "Nats-Msg-Id", &id) == NATS_OK)
          failed(ctx, id);
      }
      fb_warn("nats", "JetStream acks did not all arrive (%s): %d frames are retried",
              natsStatus_GetText(s), pending.Count);
      natsMsgList_Destroy(&pending);
    } else {
      fb_warn("nats", "JetStream acks did not all arrive (%s): the batch is retried",
              natsStatus_GetText(s));
      *all_failed = true;
    }
  }
  pthread_mutex_lock(&n->failed_lock);
  if (n->failed_overflow) *all_failed = true;
  for (size_t i = 0; i < n->nfailed; i++) {
    if (!*all_failed) failed(ctx, n->failed[i]);
    free(n->failed[i]);
  }
  n->nfailed = 0;
  n->failed_overflow = false;
  pthread_mutex_unlock(&n->failed_lock);
}

void fb_nats_check(struct fb_nats *n)
{
  if (!n || n->js || n->core_checked || !atomic_load(&n->connected)) return;
  n->core_checked = true;
  /* Core mode, yet a stream captures frames.ready.>: every frame published
   * is also stored there, with no consumer to take it away. */
  jsCtx *js = NULL;
  jsStreamInfo *si = NULL;
  if (natsConnection_JetStream(&js, n->nc, NULL) == NATS_OK &&
      js_GetStreamInfo(&si, js, JS_STREAM, NULL, NULL) == NATS_OK)
    fb_warn("nats",
            "JetStream stream %s exists and stores every frame sent on %s, but this gateway "
            "runs core NATS (NATS_JETSTREAM=0): its messages pile up. Delete the stream, or "
            "set NATS_JETSTREAM=1",
            JS_STREAM, JS_SUBJECTS);
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
}

/* ============================================================= lifecycle */

int fb_nats_start(struct fb_nats **out, struct fb_app *app)
{
  struct fb_nats *n = calloc(1, sizeof *n);
  if (!n) return -ENOMEM;
  n->app = app;
  pthread_mutex_init(&n->failed_lock, NULL);
  pthread_mutex_init(&n->results.lock, NULL);
  pthread_cond_init(&n->results.cond, NULL);
  fb_buf_init(&n->results.buf, RESULTS_MAX);
  fb_buf_init(&n->payload, PAYLOAD_MAX);
  fb_redis_init(&n->results.redis, &app->cfg->redis, "results", 2000);
  if (build_options(n)) {
    fb_nats_stop(n);
    return -EINVAL;
  }
  natsStatus s = natsConnection_Connect(&n->nc, n->opts);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    fb_error("nats", "cannot start the NATS client: %s (%s)", natsStatus_GetText(s),
             nats_GetLastError(NULL));
    fb_nats_stop(n);
    return -EINVAL;
  }
  if (s == NATS_NOT_YET_CONNECTED)
    fb_warn("nats", "NATS at %s is not reachable yet; retrying in the background",
            app->cfg->nats_url);
  else
    on_connected(n->nc, n); /* the callback only runs for a late first connect */
  if (app->cfg->nats_jetstream) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = JS_MAX_PENDING;
    jo.PublishAsync.ErrHandler = on_pub_ack_error;
    jo.PublishAsync.ErrHandlerClosure = n;
    s = natsConnection_JetStream(&n->js, n->nc, &jo);
  }
  if (s == NATS_OK || s == NATS_NOT_YET_CONNECTED)
    s = natsConnection_Subscribe(&n->heartbeats, n->nc, HEARTBEAT_SUBJECT, on_heartbeat, n);
  if (s == NATS_OK)
    s = natsConnection_Subscribe(&n->results_sub, n->nc, RESULTS_SUBJECT, on_result, n);
  if (s == NATS_OK && pthread_create(&n->results.thread, NULL, results_thread, n))
    s = NATS_NO_MEMORY;
  if (s != NATS_OK) {
    fb_error("nats", "cannot subscribe: %s", natsStatus_GetText(s));
    fb_nats_stop(n);
    return -EIO;
  }
  *out = n;
  return 0;
}

void fb_nats_stop(struct fb_nats *n)
{
  if (!n) return;
  atomic_store(&n->closing, true);
  if (n->heartbeats) natsSubscription_Unsubscribe(n->heartbeats);
  if (n->results_sub) natsSubscription_Unsubscribe(n->results_sub);
  natsSubscription_Destroy(n->heartbeats);
  natsSubscription_Destroy(n->results_sub);
  if (n->results.thread) {
    pthread_mutex_lock(&n->results.lock);
    n->results.stop = true;
    pthread_cond_signal(&n->results.cond);
    pthread_mutex_unlock(&n->results.lock);
    pthread_join(n->results.thread, NULL);
  }
  if (n->nc) natsConnection_FlushTimeout(n->nc, 1000);
  jsCtx_Destroy(n->js);
  natsConnection_Destroy(n->nc);
  natsOptions_Destroy(n->opts);
  /* The library runs the closed callback (which touches `n`) on its own
   * thread after the destroy: wait for its threads before freeing `n`. */
  nats_CloseAndWait(2000);
  fb_redis_close(&n->results.redis);
  fb_buf_free(&n->results.buf);
  fb_buf_free(&n->payload);
  for (size_t i = 0; i < n->nfailed; i++)
    free(n->failed[i]);
  pthread_mutex_destroy(&n->failed_lock);
  pthread_mutex_destroy(&n->results.lock);
  pthread_cond_destroy(&n->results.cond);
  free(n);
}
