/*
 * NATS for the library: connections (also used by the tools) and the two
 * NATS transports: core NATS (a queue subscription named after the id on
 * the processor's subject) and JetStream (the durable pull consumer <id> on
 * stream FRAMES, created here so that it outlives the subscription). The
 * subscription and the JetStream context belong to the owner thread; the
 * connection is shared and locked by nats.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fbc_internal.h"

#define NATS_RECONNECT_BUF (8 * 1024 * 1024)
#define NATS_PENDING_MSGS  (256 * 1024) /* core NATS: buffered before dropping */
#define NATS_PENDING_BYTES (512 * 1024 * 1024)
#define JS_ACK_WAIT_NS     (INT64_C(30) * 1000000000) /* redelivery without an ack */
#define JS_MAX_ACK_PENDING 1024
#define JS_API_WAIT_MS     2000
#define RESULT_FIELDS_MAX  16

/* ------------------------------------------------------- connections --- */

int fbci_nats_url_check(const char *urls, char *err, size_t errlen)
{
  const char *p = urls;
  if (!*p) {
    snprintf(err, errlen, "empty server list");
    return -EINVAL;
  }
  for (;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && *p == ' ')
      p++;
    const char *e = end;
    while (e > p && e[-1] == ' ')
      e--;
    size_t n = (size_t)(e - p);
    if (n == 0) {
      snprintf(err, errlen, "empty server in '%s'", urls);
      return -EINVAL;
    }
    for (const char *q = p; q < e; q++)
      if (isspace((unsigned char)*q) || !isprint((unsigned char)*q)) {
        snprintf(err, errlen, "server '%.*s' has a space or control character", (int)n, p);
        return -EINVAL;
      }
    const char *scheme_end = strstr(p, "://");
    if (scheme_end && scheme_end < e) {
      size_t sl = (size_t)(scheme_end - p);
      if (!((sl == 4 && strncmp(p, "nats", 4) == 0) || (sl == 3 && strncmp(p, "tls", 3) == 0))) {
        snprintf(err, errlen, "server '%.*s' is not nats:// or tls://", (int)n, p);
        return -EINVAL;
      }
      if (scheme_end + 3 >= e) {
        snprintf(err, errlen, "server '%.*s' has no host", (int)n, p);
        return -EINVAL;
      }
    }
    if (!comma) break;
    p = comma + 1;
  }
  return 0;
}

const char *fbci_nats_err(natsStatus s, char *out, size_t outlen)
{
  const char *last = nats_GetLastError(NULL);
  if (last && *last)
    snprintf(out, outlen, "%s (%s)", natsStatus_GetText(s), last);
  else
    snprintf(out, outlen, "%s", natsStatus_GetText(s));
  return out;
}

static void logger_say(struct fbci_nats_logger *l, enum fbc_log_level level, const char *msg)
{
  if (l && l->log) l->log(level, msg, l->user);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
  if (natsConnection_IsClosed(nc)) return; /* our own close */
  logger_say(closure, FBC_LOG_WARN, "NATS: disconnected; reconnecting in the background");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
  char url[256] = "", msg[300];
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  snprintf(msg, sizeof msg, "NATS: connected to %s", url);
  logger_say(closure, FBC_LOG_INFO, msg);
}

/* Slow-consumer and similar errors can come thousands a second. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
  struct fbci_nats_logger *l = closure;
  if (!l) return;
  long long now = fbci_mono_us(), last = atomic_load(&l->last_async_us);
  if (now - last < 1000000 || !atomic_compare_exchange_strong(&l->last_async_us, &last, now))
    return;
  int64_t dropped = 0;
  if (sub) natsSubscription_GetDropped(sub, &dropped);
  char msg[300];
  snprintf(msg, sizeof msg, "NATS: asynchronous error: %s%s%lld%s", natsStatus_GetText(err),
           sub ? " (dropped so far on the subscription: " : "", sub ? (long long)dropped : 0LL,
           sub ? ")" : "");
  logger_say(l, FBC_LOG_WARN, msg);
}

natsConnection *fbci_nats_connect(const char *urls, const char *name,
                                  const struct fbci_nats_auth *auth, bool retry,
                                  struct fbci_nats_logger *logger, char *err, size_t errlen)
{
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  char why[256];
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, urls);
  if (s == NATS_OK) s = natsOptions_SetName(o, name);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 500);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, NATS_RECONNECT_BUF);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, logger);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, logger);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_async_error, logger);
  if (s == NATS_OK && retry)
    s = natsOptions_SetRetryOnFailedConnect(o, true, on_reconnected, logger);
  if (s == NATS_OK && auth && auth->token) s = natsOptions_SetToken(o, auth->token);
  if (s == NATS_OK && auth && auth->user)
    s = natsOptions_SetUserInfo(o, auth->user, auth->password ? auth->password : "");
  if (s == NATS_OK && auth && auth->creds)
    s = natsOptions_SetUserCredentialsFromFiles(o, auth->creds, NULL);
  if (s == NATS_OK && auth && auth->tls_ca) {
    s = natsOptions_LoadCATrustedCertificates(o, auth->tls_ca);
    if (s == NATS_OK) s = natsOptions_SetSecure(o, true);
  }
  if (s != NATS_OK) {
    snprintf(err, errlen, "NATS options: %s", fbci_nats_err(s, why, sizeof why));
    natsOptions_Destroy(o);
    return NULL;
  }
  s = natsConnection_Connect(&nc, o);
  natsOptions_Destroy(o); /* the connection keeps its own copy */
  if (s == NATS_OK || (retry && s == NATS_NOT_YET_CONNECTED)) return nc;
  snprintf(err, errlen, "NATS %s: %s", urls, fbci_nats_err(s, why, sizeof why));
  natsConnection_Destroy(nc);
  return NULL;
}

bool fbci_nats_is_connected(natsConnection *nc)
{
  return nc && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

void fbci_nats_close(natsConnection *nc, int flush_ms)
{
  if (!nc) return;
  if (fbci_nats_is_connected(nc)) natsConnection_FlushTimeout(nc, flush_ms);
  natsConnection_Close(nc);
  natsConnection_Destroy(nc);
}

/* --------------------------------------------------------- transport --- */

/* Makes sure our durable consumer exists, filtered to our subject, and binds
 * to it. Created with js_AddConsumer rather than by js_PullSubscribe so that
 * destroying the subscription never deletes it: unacked frames wait in it. */
static int bind_consumer(struct fbc_client *c, char *err, size_t errlen)
{
  const struct fbci_config *cfg = &c->cfg;
  jsErrCode jerr = 0;
  jsConsumerInfo *ci = NULL;
  char why[256];
  natsStatus s = js_GetConsumerInfo(&ci, c->js, FBCI_JS_STREAM, cfg->id, NULL, &jerr);
  if (s == NATS_OK) {
    const char *filter = ci->Config && ci->Config->FilterSubject ? ci->Config->FilterSubject : "";
    int rc = 0;
    if (strcmp(filter, cfg->subject) != 0) {
      snprintf(err, errlen,
               "JetStream consumer %s on stream " FBCI_JS_STREAM " filters '%s', not our "
               "subject %s; remove it (nats consumer rm " FBCI_JS_STREAM " %s) or use subject %s",
               cfg->id, filter, cfg->subject, cfg->id, filter);
      rc = -EINVAL;
    }
    jsConsumerInfo_Destroy(ci);
    if (rc) return rc;
  } else if (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = cfg->id;
    cc.Description = "libframebuffer-client";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = JS_ACK_WAIT_NS;
    cc.MaxAckPending = JS_MAX_ACK_PENDING;
    cc.FilterSubject = cfg->subject;
    s = js_AddConsumer(&ci, c->js, FBCI_JS_STREAM, &cc, NULL, &jerr);
    if (s == NATS_OK) {
      fbci_log(c, FBC_LOG_INFO,
               "created durable JetStream consumer %s on stream " FBCI_JS_STREAM " for %s", cfg->id,
               cfg->subject);
      jsConsumerInfo_Destroy(ci);
    }
  }
  if (s != NATS_OK) {
    if (jerr == JSStreamNotFoundErr) {
      snprintf(err, errlen,
               "JetStream stream " FBCI_JS_STREAM " does not exist yet (the gateway creates it, "
               "with NATS_JETSTREAM=1, when it routes its first remote frame)");
      return -EAGAIN;
    }
    snprintf(err, errlen, "JetStream consumer %s: %s (error %d)", cfg->id,
             fbci_nats_err(s, why, sizeof why), (int)jerr);
    return -EIO;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = FBCI_JS_STREAM;
  so.Consumer = cfg->id;
  s = js_PullSubscribe(&c->sub, c->js, cfg->subject, cfg->id, NULL, &so, &jerr);
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream pull subscription to %s: %s (error %d)", cfg->subject,
             fbci_nats_err(s, why, sizeof why), (int)jerr);
    c->sub = NULL;
    return -EIO;
  }
  return 0;
}

int fbci_nats_open(struct fbc_client *c, char *err, size_t errlen)
{
  const struct fbci_config *cfg = &c->cfg;
  char why[256];
  natsStatus s;
  if (cfg->transport == FBC_NATS) {
    /* A queue group named after the id: two copies of one processor share
     * its frames instead of both working on each. */
    s = natsConnection_QueueSubscribeSync(&c->sub, c->nc, cfg->subject, cfg->id);
    if (s == NATS_OK)
      s = natsSubscription_SetPendingLimits(c->sub, NATS_PENDING_MSGS, NATS_PENDING_BYTES);
    if (s != NATS_OK) {
      snprintf(err, errlen, "subscribing to %s: %s", cfg->subject,
               fbci_nats_err(s, why, sizeof why));
      natsSubscription_Destroy(c->sub);
      c->sub = NULL;
      return -EIO;
    }
    return 0;
  }
  if (!fbci_nats_is_connected(c->nc)) {
    snprintf(err, errlen, "NATS is not connected");
    return -ENOTCONN;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = JS_API_WAIT_MS;
  s = natsConnection_JetStream(&c->js, c->nc, &jo);
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream: %s", fbci_nats_err(s, why, sizeof why));
    return -EIO;
  }
  int rc = bind_consumer(c, err, errlen);
  if (rc < 0) {
    jsCtx_Destroy(c->js);
    c->js = NULL;
  }
  return rc;
}

/* Takes one message: a frame view, or (not a frame) acked and counted. */
static void take(struct fbc_client *c, natsMsg *m, size_t *n, int64_t now)
{
  struct fbc_frame *f = &c->frames[*n];
  if (fbci_frame_from_json(f, natsMsg_GetSubject(m), natsMsg_GetData(m),
                           (size_t)natsMsg_GetDataLength(m)) < 0) {
    if (c->unreadable++ % 1000 == 0)
      fbci_log(c, FBC_LOG_WARN,
               "a message on %s is not a frame (a JSON object with a frame_id); %llu so far",
               natsMsg_GetSubject(m), (unsigned long long)c->unreadable);
    if (c->cfg.transport == FBC_JETSTREAM) natsMsg_Ack(m, NULL);
    natsMsg_Destroy(m);
    atomic_fetch_add(&c->skipped, 1);
    return;
  }
  f->msg = m;
  f->received_us = now;
  (*n)++;
}

int fbci_nats_receive(struct fbc_client *c, size_t max, int block_ms, char *err, size_t errlen)
{
  char why[256];
  size_t n = 0;
  natsStatus s;
  if (c->cfg.transport == FBC_JETSTREAM) {
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    /* Fetch waits at least a little: a zero wait is an error in nats.c. */
    s = natsSubscription_Fetch(&list, c->sub, (int)max, block_ms > 0 ? block_ms : 1, &jerr);
    if (s == NATS_TIMEOUT) return 0;
    if (s != NATS_OK) {
      snprintf(err, errlen, "JetStream fetch: %s (error %d)", fbci_nats_err(s, why, sizeof why),
               (int)jerr);
      natsMsgList_Destroy(&list);
      return -EIO;
    }
    int64_t now = fbci_mono_us();
    for (int i = 0; i < list.Count; i++) {
      if (n < max) {
        take(c, list.Msgs[i], &n, now);
        list.Msgs[i] = NULL; /* ours now */
      }
    }
    natsMsgList_Destroy(&list);
    return (int)n;
  }
  natsMsg *m = NULL;
  s = natsSubscription_NextMsg(&m, c->sub, block_ms);
  if (s == NATS_SLOW_CONSUMER) {
    int64_t dropped = 0;
    natsSubscription_GetDropped(c->sub, &dropped);
    fbci_log(c, FBC_LOG_WARN, "core NATS dropped frames: we were too slow (%lld so far)",
             (long long)dropped);
    return 0;
  }
  if (s == NATS_TIMEOUT) {
    atomic_store(&c->local_queued, 0);
    return 0;
  }
  if (s != NATS_OK) {
    snprintf(err, errlen, "NATS %s: %s", c->cfg.subject, fbci_nats_err(s, why, sizeof why));
    return -EIO;
  }
  int64_t now = fbci_mono_us();
  take(c, m, &n, now);
  /* Then whatever else is already here, without waiting. */
  while (n < max && natsSubscription_NextMsg(&m, c->sub, 0) == NATS_OK)
    take(c, m, &n, now);
  int msgs = 0, bytes = 0;
  if (natsSubscription_GetPending(c->sub, &msgs, &bytes) == NATS_OK)
    atomic_store(&c->local_queued, msgs);
  return (int)n;
}

int fbci_nats_ack(struct fbc_client *c, const struct fbc_frame *const *f, size_t n)
{
  if (c->cfg.transport != FBC_JETSTREAM) return 0;
  char why[256];
  for (size_t i = 0; i < n; i++) {
    natsStatus s = f[i]->msg ? natsMsg_Ack(f[i]->msg, NULL) : NATS_OK;
    if (s != NATS_OK) {
      /* Not acked: JetStream delivers it again after the ack wait. */
      fbci_log(c, FBC_LOG_WARN, "JetStream ack: %s", fbci_nats_err(s, why, sizeof why));
      return -ECONNRESET;
    }
  }
  return 0;
}

int fbci_nats_result(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                     const char *const *fields, size_t nfields)
{
  const struct fbci_config *cfg = &c->cfg;
  json_t *result = json_loads(json, JSON_DECODE_ANY, NULL);
  if (!result || nfields > RESULT_FIELDS_MAX) {
    json_decref(result);
    return -EINVAL;
  }
  const char *fid = fbc_frame_id(f), *cam = fbc_frame_camera_id(f);
  char ts[32];
  json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s}", "processor_id", cfg->id, "frame_id",
                        fid ? fid : "", "camera_id", cam ? cam : "", "result", result,
                        "processed_at", fbci_iso8601(ts, sizeof ts, fbci_real_us()));
  for (size_t i = 0; o && i < nfields; i++)
    if (fields[2 * i])
      json_object_set_new(o, fields[2 * i],
                          json_string(fields[2 * i + 1] ? fields[2 * i + 1] : ""));
  char *msg = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!msg) return -ENOMEM;
  char why[256];
  natsStatus s = natsConnection_PublishString(c->nc, cfg->results_subject, msg);
  free(msg);
  if (s != NATS_OK) {
    fbci_log(c, FBC_LOG_WARN, "publishing a result: %s", fbci_nats_err(s, why, sizeof why));
    return -ECONNRESET;
  }
  return 0;
}

void fbci_nats_release(struct fbc_client *c)
{
  for (size_t i = 0; i < c->nframes; i++)
    fbci_frame_clear(&c->frames[i]); /* an unacked JetStream frame comes again later */
}

void fbci_nats_close_transport(struct fbc_client *c)
{
  fbci_nats_release(c);
  c->nframes = 0;
  if (c->sub && c->cfg.transport == FBC_NATS) natsSubscription_Unsubscribe(c->sub);
  /* A JetStream subscription is only destroyed: our durable consumer stays. */
  natsSubscription_Destroy(c->sub);
  c->sub = NULL;
  jsCtx_Destroy(c->js);
  c->js = NULL;
}
