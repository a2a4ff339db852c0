/*
 * The NATS sink: publishes a frame on its processor's subject (core NATS, at
 * most once) or into the JetStream stream FRAMES (acked after JetStream's
 * ack), on the connection of nats_conn.h; down while that is, or with
 * NATS_URL=none. Ingest thread; ack errors arrive on nats.c's, under failed_lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"
#include "framebuffer/log.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/sink.h"

#define JS_DUPLICATE_WINDOW_NS (INT64_C(120) * 1000000000)
#define JS_ACK_WAIT_MS         5000
#define JS_MAX_PENDING         65536
#define PAYLOAD_MAX            (FB_FRAME_MAX_BYTES * 2 + 1024)
#define FAILED_MAX             4096
#define RETIRED_MAX            1024

extern const struct fb_sink_ops fb_sink_nats; /* below */

struct nats_sink {
  struct fb_sink base;
  int js_replicas;      /* NATS_JS_REPLICAS */
  struct fb_nats *nats; /* borrowed; NULL with NATS_URL=none */
  jsCtx *js;            /* NULL in core mode */
  bool stream_ready;    /* JetStream stream FRAMES exists */
  int64_t next_stream_try_ms;
  struct fb_buf payload; /* one frame as JSON */
  uint64_t published_since_complete;
  /* Published core NATS messages, destroyed together at commit: nats.c
   * hands every destroyed message to its collector thread, and waking that
   * thread once a frame cost more than building the message. */
  natsMsg *retired[RETIRED_MAX];
  size_t nretired;

  pthread_mutex_t failed_lock;
  char *failed[FAILED_MAX]; /* frame ids JetStream refused; guarded by failed_lock */
  size_t nfailed;           /* guarded by failed_lock */
  bool failed_overflow;     /* guarded by failed_lock */
};

static void on_pub_ack_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
  struct nats_sink *n = closure;
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
static void ensure_stream(struct nats_sink *n)
{
  if (n->stream_ready || !fb_nats_is_connected(n->nats)) return;
  int64_t now = fb_mono_ms();
  if (now < n->next_stream_try_ms) return;
  n->next_stream_try_ms = now + 1000;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, n->js, FB_NATS_JS_STREAM, NULL, &jerr);
  int want = n->js_replicas;
  if (s == NATS_OK) {
    if (si->Config && si->Config->Replicas != want)
      fb_warn("nats",
              "JetStream stream %s has %lld replicas, NATS_JS_REPLICAS is %d; the gateway does "
              "not change an existing stream (nats stream edit %s --replicas %d does)",
              FB_NATS_JS_STREAM, (long long)si->Config->Replicas, want, FB_NATS_JS_STREAM, want);
    jsStreamInfo_Destroy(si);
    n->stream_ready = true;
    return;
  }
  if (s != NATS_NOT_FOUND) {
    fb_warn("nats", "cannot look up JetStream stream %s: %s", FB_NATS_JS_STREAM,
            natsStatus_GetText(s));
    return;
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char *subjects[] = {FB_NATS_JS_SUBJECTS};
  cfg.Name = FB_NATS_JS_STREAM;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Retention = js_WorkQueuePolicy;
  cfg.Storage = js_FileStorage;
  cfg.Duplicates = JS_DUPLICATE_WINDOW_NS;
  cfg.Replicas = want;
  s = js_AddStream(&si, n->js, &cfg, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    n->stream_ready = true;
    fb_info("nats", "created JetStream stream %s (%s, work-queue retention, %d replicas)",
            FB_NATS_JS_STREAM, FB_NATS_JS_SUBJECTS, want);
  } else {
    fb_warn("nats", "cannot create JetStream stream %s: %s (error %d)", FB_NATS_JS_STREAM,
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

static void release_retired(struct nats_sink *n)
{
  for (size_t i = 0; i < n->nretired; i++)
    natsMsg_Destroy(n->retired[i]);
  n->nretired = 0;
}

static void retire(struct nats_sink *n, natsMsg *msg)
{
  if (!msg) return;
  if (n->nretired == RETIRED_MAX) release_retired(n);
  n->retired[n->nretired++] = msg;
}

#ifdef FB_NATS_ENCODED_HEADERS
/* nats.c's constructor of a message whose header block is already encoded
 * (the one it uses for received messages): exported by libnats but not
 * declared in nats.h. CMake checks that it links; encoded_headers() that
 * the library is the release the gateway was built against. */
natsStatus natsMsg_create(natsMsg **newMsg, const char *subject, int subjLen, const char *reply,
                          int replyLen, const char *buf, int bufLen, int hdrLen);

/* Can messages be built from an encoded header block? Only with the libnats
 * release the gateway was built against: the constructor is not public. */
static bool encoded_headers(void)
{
  static int ok = -1;
  if (ok < 0) ok = (nats_GetVersionNumber() >> 8) == (NATS_VERSION_NUMBER >> 8);
  return ok;
}

/* Appends header line "name: value\r\n"; CR and LF in the value become
 * spaces, as nats.c does, so no value can end the block early. */
static void header_line(struct fb_buf *o, const char *name, const char *value, size_t n)
{
  fb_buf_puts(o, name);
  fb_buf_append(o, ": ", 2);
  size_t at = o->len;
  if (fb_buf_append(o, value, n) == 0)
    for (size_t i = at; i < o->len; i++)
      if (o->data[i] == '\r' || o->data[i] == '\n') o->data[i] = ' ';
  fb_buf_append(o, "\r\n", 2);
}
#endif

/* Builds frame f's message for `subject`: JSON payload, headers Nats-Msg-Id
 * and (when the frame has one) traceparent. */
static natsStatus build_msg(struct nats_sink *n, natsMsg **msg, const char *subject,
                            const struct fb_frame *f)
{
  struct fb_buf *o = &n->payload;
  char tp[128], msg_id[600];
  bool has_tp = traceparent(f, tp, sizeof tp);
  /* A shadow copy is another message than its frame's (JetStream would
   * drop it as a duplicate of the frame). */
  snprintf(msg_id, sizeof msg_id, "%.*s%s%.*s", (int)(f->frame_id.n < 511 ? f->frame_id.n : 511),
           f->frame_id.p, f->shadow.n ? ":shadow:" : "", (int)f->shadow.n, f->shadow.p);
  fb_buf_reset(o);
#ifdef FB_NATS_ENCODED_HEADERS
  if (encoded_headers()) {
    /* One allocation and no header map: nats.c sends the block as it is. */
    fb_buf_puts(o, "NATS/1.0\r\n");
    header_line(o, "Nats-Msg-Id", msg_id, strlen(msg_id));
    if (has_tp) header_line(o, "traceparent", tp, strlen(tp));
    fb_buf_append(o, "\r\n", 2);
    size_t hdr_len = o->len;
    fb_frame_append_json(o, f);
    if (o->truncated) return NATS_INSUFFICIENT_BUFFER;
    return natsMsg_create(msg, subject, (int)strlen(subject), NULL, 0, o->data, (int)o->len,
                          (int)hdr_len);
  }
#endif
  fb_frame_append_json(o, f);
  if (o->truncated) return NATS_INSUFFICIENT_BUFFER;
  natsStatus s = natsMsg_Create(msg, subject, NULL, o->data, (int)o->len);
  if (s == NATS_OK) s = natsMsgHeader_Set(*msg, "Nats-Msg-Id", msg_id);
  if (s == NATS_OK && has_tp) s = natsMsgHeader_Set(*msg, "traceparent", tp);
  return s;
}

static int send_one(struct fb_sink *sink, const struct fb_proc *p, const struct fb_frame *f)
{
  struct nats_sink *n = (struct nats_sink *)sink;
  if (!fb_nats_is_connected(n->nats)) return -ENOTCONN;
  bool js = n->js != NULL;
  if (js) {
    ensure_stream(n);
    if (!n->stream_ready) return -ENOTCONN;
  }

  natsMsg *msg = NULL;
  natsStatus s = build_msg(n, &msg, p->subject, f);
  if (s == NATS_INSUFFICIENT_BUFFER) {
    retire(n, msg);
    return -ENOSPC;
  }
  if (s == NATS_OK) {
    if (js) {
      s = js_PublishMsgAsync(n->js, &msg, NULL); /* takes msg on success */
      if (s == NATS_OK) n->published_since_complete++;
    } else {
      s = natsConnection_PublishMsg(fb_nats_connection(n->nats), msg);
    }
  }
  retire(n, msg);
  if (s != NATS_OK) {
    fb_debug("nats", "publishing frame %.*s to %s: %s", (int)f->frame_id.n, f->frame_id.p,
             p->subject, natsStatus_GetText(s));
    return -EIO;
  }
  return 0;
}

/* Waits for the acks of everything published since the last call and calls
 * `failed` with the frame_id of each frame JetStream did not store
 * (`all_failed` set when the wait timed out: then treat every frame of the
 * batch as failed). Core NATS: nothing to wait for. */
static void complete(struct nats_sink *n, void (*failed)(void *ctx, const char *frame_id),
                     void *ctx, bool *all_failed)
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

static int create(struct fb_sink **out, const struct fb_sink_env *env)
{
  struct nats_sink *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->base.ops = &fb_sink_nats;
  s->js_replicas = env->cfg->nats_js_replicas;
  s->nats = env->nats;
  pthread_mutex_init(&s->failed_lock, NULL);
  fb_buf_init(&s->payload, PAYLOAD_MAX);
  if (s->nats && env->cfg->nats_jetstream) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = JS_MAX_PENDING;
    jo.PublishAsync.ErrHandler = on_pub_ack_error;
    jo.PublishAsync.ErrHandlerClosure = s;
    natsStatus st = natsConnection_JetStream(&s->js, fb_nats_connection(s->nats), &jo);
    if (st != NATS_OK) {
      fb_error("nats", "cannot set up JetStream: %s", natsStatus_GetText(st));
      fb_sink_nats.destroy(&s->base);
      return -EIO;
    }
  }
  *out = &s->base;
  return 0;
}

/* After the ingest thread's last commit: every publish was acked or taken
 * back, so no ack error can still arrive for `s`. */
static void destroy(struct fb_sink *sink)
{
  struct nats_sink *s = (struct nats_sink *)sink;
  release_retired(s);
  jsCtx_Destroy(s->js);
  fb_buf_free(&s->payload);
  for (size_t i = 0; i < s->nfailed; i++)
    free(s->failed[i]);
  pthread_mutex_destroy(&s->failed_lock);
  free(s);
}

static bool is_up(const struct fb_sink *s)
{
  return fb_nats_is_connected(((const struct nats_sink *)s)->nats);
}

static bool dedupes(const struct fb_sink *sink)
{
  return ((const struct nats_sink *)sink)->js != NULL;
}

static bool unconfirmed(const struct fb_sink *sink)
{
  return ((const struct nats_sink *)sink)->published_since_complete > 0;
}

static bool commit(struct fb_sink *sink, void (*held)(void *ctx, const char *frame_id), void *ctx)
{
  struct nats_sink *s = (struct nats_sink *)sink;
  release_retired(s);
  if (!s->nats) return true;
  bool all_failed = false;
  complete(s, held, ctx, &all_failed);
  return !all_failed;
}

const struct fb_sink_ops fb_sink_nats = {
    .name = "nats",
    .queues = true,
    .create = create,
    .destroy = destroy,
    .is_up = is_up,
    .send = send_one,
    .commit = commit,
    .unconfirmed = unconfirmed,
    .dedupes = dedupes,
};
