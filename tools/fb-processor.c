/*
 * fb-processor: the sample processor. Registers over the REST API, takes its
 * frames from Redis (stream frames:ready:<id>, group frame-processors) or
 * NATS (its subject: core NATS, or a durable JetStream pull consumer on
 * stream FRAMES), "works", sends a result and acks. Heartbeats go over NATS
 * when it has a NATS URL, else over HTTP.
 * Threads: the main thread owns the transport and does all frame work; the
 * control thread registers and heartbeats, reading the real queue depth with
 * its own Redis connection or JetStream context. They share atomics, `ctl`
 * (its mutex) and the NATS connection, which nats.c locks itself.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tk_http.h"
#include "tk_nats.h"
#include "toolkit.h"

#define PROC_BATCH_MAX       64   /* XREADGROUP COUNT, JetStream fetch size */
#define PROC_BLOCK_MS        1000 /* XREADGROUP BLOCK / NATS wait: also bounds the stop latency */
#define PROC_GROUP           "frame-processors"
#define PROC_HTTP_TIMEOUT_MS 5000
#define PROC_RECHECK_US      (30 * 1000000LL) /* NATS heartbeats: check the registration */
#define PROC_EXIT_DIED       3                /* --die-after */

/* Core NATS: frames buffered in the client before the slow-consumer limit
 * drops them (at-most-once, README: Remote processors and NATS). */
#define PROC_NATS_PENDING_MSGS  (256 * 1024)
#define PROC_NATS_PENDING_BYTES (512 * 1024 * 1024)
/* JetStream consumer: redelivery after 30 s without an ack. */
#define PROC_JS_ACK_WAIT_NS     (INT64_C(30) * 1000000000)
#define PROC_JS_MAX_ACK_PENDING 1024
#define PROC_JS_API_WAIT_MS     2000

/* ------------------------------------------------------------ settings --- */

enum proc_transport { PT_REDIS, PT_NATS };

struct proc_config {
  const char *id;
  struct tk_strlist caps;
  int64_t capacity;
  bool use_api; /* false with --api none */
  struct tk_http_url api;
  const char *token;
  struct tk_redis_url redis;
  int64_t work_ms;
  int64_t heartbeat_ms;
  const char *result_stream;
  int64_t result_maxlen;
  int64_t count;
  int64_t die_after; /* 0: never */
  bool unregister;
  bool quiet;
  char stream[160]; /* frames:ready:<id> */
  enum proc_transport transport;
  bool jetstream;
  const char *nats_url; /* NULL: no NATS at all */
  bool hb_nats;         /* heartbeats over NATS (HTTP only while NATS is down) */
  bool subject_given;
  char subject[300];         /* NATS: where our frames arrive */
  char hb_subject[160];      /* processors.heartbeat.<id> */
  char results_subject[160]; /* frames.results.<id> */
};

/* Counters written by the main thread, read by anyone. */
struct proc_stats {
  atomic_uint_fast64_t received;    /* entries read, including deleted ones */
  atomic_uint_fast64_t processed;   /* frames worked on, result written and acked */
  atomic_uint_fast64_t skipped;     /* entries whose content was trimmed: acked only */
  atomic_uint_fast64_t reconnects;  /* Redis connections re-established after a loss */
  atomic_int_fast64_t in_flight;    /* frames in hand: received, not yet completed */
  atomic_int_fast64_t local_queued; /* core NATS: frames waiting in the client library */
  atomic_uint_fast64_t work_us;     /* receive to completion, summed over processed frames */
  atomic_uint_fast64_t work_frames; /* frames counted in work_us */
};

/* Shared stop state. `stop` may be read without the lock; the condition
 * variable lets the control thread sleep between heartbeats. */
struct proc_ctl {
  atomic_bool stop;
  atomic_bool fatal;      /* the control thread hit an error retrying cannot fix */
  atomic_bool registered; /* the gateway answered 201 or 409 */
  pthread_mutex_t mu;     /* guards nothing but the condvar wait */
  pthread_cond_t cv;
};

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
  (void)sig;
  got_signal = 1;
}

/* =============================================================== transport
 * Everything that talks to the frame source lives behind this table: Redis
 * streams, or NATS (subject frames.ready.<id>, results on
 * frames.results.<id>). The processing loop does not know which. Only the
 * main thread calls a transport.
 */

/* A frame as the processing loop sees it. Strings are borrowed from the
 * batch and valid until the transport's release(). */
struct proc_frame {
  const char *entry_id;
  const char *frame_id;
  const char *camera_id;
  const char *detection_type; /* top-level field, NULL when absent */
  const char *metadata;       /* JSON text, NULL when absent */
  const char *inject_ts_us;   /* NULL when absent */
  bool deleted;               /* the entry's content is gone (trimmed) or unreadable */
  void *handle;               /* the transport's own: the natsMsg for NATS */
};

struct proc_batch {
  struct proc_frame frames[PROC_BATCH_MAX];
  size_t n;
  void *owner; /* the transport's: the memory the strings live in */
};

/* What the processing loop made of one frame. */
struct proc_result {
  char *json;  /* owned, NULL for a deleted entry */
  json_t *doc; /* owned, the same as a tree (NATS sends it nested) */
  char processed_at[32];
  char latency_ms[24]; /* "" when the frame had no inject_ts_us */
};

struct transport;
struct transport_ops {
  const char *name;
  /* Connects and makes sure the group (or consumer) exists. Returns 0 or a
   * negative errno with the reason in `err`: -EINVAL when retrying cannot
   * help, anything else is retried with backoff. */
  int (*open)(struct transport *t, char *err, size_t errlen);
  /* Waits up to `block_ms` for at most `max` frames. Returns 0 (b->n may be
   * 0), or -EIO when the connection is lost (call close, then open). */
  int (*receive)(struct transport *t, struct proc_batch *b, size_t max, int block_ms, char *err,
                 size_t errlen);
  /* Publishes `n` results and acknowledges their frames. Returns 0 or -EIO. */
  int (*complete)(struct transport *t, const struct proc_frame *f, const struct proc_result *r,
                  size_t n, char *err, size_t errlen);
  /* Frees what receive() returned. */
  void (*release)(struct transport *t, struct proc_batch *b);
  void (*close)(struct transport *t);
};

struct transport {
  const struct transport_ops *ops;
  const struct proc_config *cfg;
  struct proc_stats *st;
  /* Redis state. */
  redisContext *rc;
  bool history_done; /* our pending entries (from a previous run) are read */
  /* NATS state. The connection is borrowed from main; the messages and
   * their parsed payloads of the batch in hand are ours until release(). */
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  natsMsg *msgs[PROC_BATCH_MAX];
  json_t *docs[PROC_BATCH_MAX];
  size_t nheld;
  uint64_t unreadable; /* payloads that were not a frame */
};

/* ---------------------------------------------------------- Redis streams */

static int rt_create_group(struct transport *t, char *err, size_t errlen)
{
  const char *argv[] = {"XGROUP", "CREATE", t->cfg->stream, PROC_GROUP, "$", "MKSTREAM"};
  redisReply *r = redisCommandArgv(t->rc, 6, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "XGROUP CREATE: %s", t->rc->errstr);
    return -EIO;
  }
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
    snprintf(err, errlen, "XGROUP CREATE %s: %s", t->cfg->stream, r->str);
    rc = -EPROTO;
  }
  freeReplyObject(r);
  return rc;
}

static int rt_open(struct transport *t, char *err, size_t errlen)
{
  t->rc = tk_redis_connect(&t->cfg->redis, PROC_BLOCK_MS + 4000, err, errlen);
  if (!t->rc) return -ECONNREFUSED;
  int rc = rt_create_group(t, err, errlen);
  if (rc < 0) {
    redisFree(t->rc);
    t->rc = NULL;
    return rc;
  }
  /* First re-read what a previous run of this consumer left pending. */
  t->history_done = false;
  return 0;
}

static const char *str_or_null(const redisReply *r)
{
  return (r && r->type == REDIS_REPLY_STRING) ? r->str : NULL;
}

static int rt_receive(struct transport *t, struct proc_batch *b, size_t max, int block_ms,
                      char *err, size_t errlen)
{
  b->n = 0;
  b->owner = NULL;
  char count[16], block[16];
  snprintf(count, sizeof count, "%zu", max);
  snprintf(block, sizeof block, "%d", block_ms);
  const char *argv[11];
  int argc = 0;
  argv[argc++] = "XREADGROUP";
  argv[argc++] = "GROUP";
  argv[argc++] = PROC_GROUP;
  argv[argc++] = t->cfg->id;
  argv[argc++] = "COUNT";
  argv[argc++] = count;
  if (t->history_done) {
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
  }
  argv[argc++] = "STREAMS";
  argv[argc++] = t->cfg->stream;
  argv[argc++] = t->history_done ? ">" : "0";

  redisReply *r = redisCommandArgv(t->rc, argc, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "XREADGROUP: %s", t->rc->errstr[0] ? t->rc->errstr : "connection lost");
    return -EIO;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    /* The stream or group vanished (Redis restarted empty, key deleted). */
    int rc = 0;
    if (strncmp(r->str, "NOGROUP", 7) == 0) {
      tk_log("group %s on %s is gone; creating it again", PROC_GROUP, t->cfg->stream);
      rc = rt_create_group(t, err, errlen);
      t->history_done = false;
    } else {
      snprintf(err, errlen, "XREADGROUP: %s", r->str);
      rc = -EIO; /* reconnect after a pause rather than spin */
    }
    freeReplyObject(r);
    return rc == -EPROTO ? -EIO : rc;
  }
  /* [[stream, [[id, [f, v, ...]] ...]]] or nil on timeout */
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
      r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements < 2 ||
      r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    return 0;
  }
  const redisReply *entries = r->element[0]->element[1];
  if (entries->elements == 0 && !t->history_done) {
    t->history_done = true; /* nothing pending left: switch to new entries */
  }
  for (size_t i = 0; i < entries->elements && b->n < PROC_BATCH_MAX; i++) {
    const redisReply *e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
      continue;
    struct proc_frame *f = &b->frames[b->n++];
    memset(f, 0, sizeof *f);
    f->entry_id = e->element[0]->str;
    const redisReply *fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY) {
      f->deleted = true;
      continue;
    }
    f->frame_id = str_or_null(tk_reply_field(fields, "frame_id"));
    f->camera_id = str_or_null(tk_reply_field(fields, "camera_id"));
    f->detection_type = str_or_null(tk_reply_field(fields, "detection_type"));
    f->metadata = str_or_null(tk_reply_field(fields, "metadata"));
    f->inject_ts_us = str_or_null(tk_reply_field(fields, "inject_ts_us"));
  }
  b->owner = r;
  return 0;
}

static int rt_complete(struct transport *t, const struct proc_frame *f,
                       const struct proc_result *res, size_t n, char *err, size_t errlen)
{
  const struct proc_config *cfg = t->cfg;
  char maxlen[24];
  snprintf(maxlen, sizeof maxlen, "%lld", (long long)cfg->result_maxlen);
  size_t queued = 0;
  for (size_t i = 0; i < n; i++) {
    if (!res[i].json) continue;
    const char *argv[20];
    int argc = 0;
    argv[argc++] = "XADD";
    argv[argc++] = cfg->result_stream;
    if (cfg->result_maxlen > 0) {
      argv[argc++] = "MAXLEN";
      argv[argc++] = "~";
      argv[argc++] = maxlen;
    }
    argv[argc++] = "*";
    argv[argc++] = "processor_id";
    argv[argc++] = cfg->id;
    argv[argc++] = "frame_id";
    argv[argc++] = f[i].frame_id ? f[i].frame_id : "";
    argv[argc++] = "camera_id";
    argv[argc++] = f[i].camera_id ? f[i].camera_id : "";
    argv[argc++] = "result";
    argv[argc++] = res[i].json;
    argv[argc++] = "processed_at";
    argv[argc++] = res[i].processed_at;
    if (res[i].latency_ms[0]) {
      argv[argc++] = "latency_ms";
      argv[argc++] = res[i].latency_ms;
    }
    redisAppendCommandArgv(t->rc, argc, argv, NULL);
    queued++;
  }
  /* Results first, then the ack: a crash in between repeats a frame rather
   * than losing its result (at-least-once). */
  const char **ack = malloc((n + 3) * sizeof *ack);
  if (!ack) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  ack[0] = "XACK";
  ack[1] = cfg->stream;
  ack[2] = PROC_GROUP;
  for (size_t i = 0; i < n; i++)
    ack[3 + i] = f[i].entry_id;
  redisAppendCommandArgv(t->rc, (int)(n + 3), ack, NULL);
  free(ack);
  queued++;
  int rc = tk_redis_drain(t->rc, queued, err, errlen);
  if (rc == -EPROTO) {
    /* An error reply (e.g. the result stream is of another type) would repeat
     * forever; say so loudly and move on. */
    tk_log("writing results: %s", err);
    rc = 0;
  }
  return rc;
}

static void rt_release(struct transport *t, struct proc_batch *b)
{
  (void)t;
  if (b->owner) freeReplyObject(b->owner);
  b->owner = NULL;
  b->n = 0;
}

static void rt_close(struct transport *t)
{
  if (t->rc) redisFree(t->rc);
  t->rc = NULL;
}

static const struct transport_ops redis_transport = {
    .name = "redis",
    .open = rt_open,
    .receive = rt_receive,
    .complete = rt_complete,
    .release = rt_release,
    .close = rt_close,
};

/* ------------------------------------------------------------------- NATS */

/* Makes sure our durable pull consumer exists on stream FRAMES, filtered to
 * our subject, and binds to it. We create it ourselves (js_AddConsumer)
 * rather than through js_PullSubscribe, so that closing the subscription
 * never deletes it: unacked frames wait in it for the next run. */
static int nt_bind_consumer(struct transport *t, char *err, size_t errlen)
{
  const struct proc_config *cfg = t->cfg;
  jsErrCode jerr = 0;
  jsConsumerInfo *ci = NULL;
  char why[256];
  natsStatus s = js_GetConsumerInfo(&ci, t->js, TK_JS_STREAM, cfg->id, NULL, &jerr);
  if (s == NATS_OK) {
    const char *filter = ci->Config && ci->Config->FilterSubject ? ci->Config->FilterSubject : "";
    int rc = 0;
    if (strcmp(filter, cfg->subject) != 0) {
      snprintf(err, errlen,
               "JetStream consumer %s on stream " TK_JS_STREAM " filters '%s', not our subject "
               "%s; remove it (nats consumer rm " TK_JS_STREAM " %s) or pass --subject %s",
               cfg->id, filter, cfg->subject, cfg->id, filter);
      rc = -EINVAL;
    }
    jsConsumerInfo_Destroy(ci);
    if (rc) return rc;
  } else if (s == NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = cfg->id;
    cc.Description = "fb-processor";
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = PROC_JS_ACK_WAIT_NS;
    cc.MaxAckPending = PROC_JS_MAX_ACK_PENDING;
    cc.FilterSubject = cfg->subject;
    s = js_AddConsumer(&ci, t->js, TK_JS_STREAM, &cc, NULL, &jerr);
    if (s == NATS_OK) {
      tk_log("created durable JetStream consumer %s on stream " TK_JS_STREAM " for %s", cfg->id,
             cfg->subject);
      jsConsumerInfo_Destroy(ci);
    }
  }
  if (s != NATS_OK) {
    if (jerr == JSStreamNotFoundErr) {
      snprintf(err, errlen,
               "JetStream stream " TK_JS_STREAM " does not exist yet (the gateway creates it, "
               "with NATS_JETSTREAM=1, when it routes its first remote frame)");
      return -EAGAIN;
    }
    snprintf(err, errlen, "JetStream consumer %s: %s (error %d)", cfg->id,
             tk_nats_err(s, why, sizeof why), (int)jerr);
    return -EIO;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = TK_JS_STREAM;
  so.Consumer = cfg->id;
  s = js_PullSubscribe(&t->sub, t->js, cfg->subject, cfg->id, NULL, &so, &jerr);
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream pull subscription to %s: %s (error %d)", cfg->subject,
             tk_nats_err(s, why, sizeof why), (int)jerr);
    t->sub = NULL;
    return -EIO;
  }
  return 0;
}

static int nt_open(struct transport *t, char *err, size_t errlen)
{
  const struct proc_config *cfg = t->cfg;
  char why[256];
  natsStatus s;
  if (!cfg->jetstream) {
    /* A queue group named after the id: two copies of one processor share
     * its frames instead of both working on each. */
    s = natsConnection_QueueSubscribeSync(&t->sub, t->nc, cfg->subject, cfg->id);
    if (s == NATS_OK)
      s = natsSubscription_SetPendingLimits(t->sub, PROC_NATS_PENDING_MSGS,
                                            PROC_NATS_PENDING_BYTES);
    if (s != NATS_OK) {
      snprintf(err, errlen, "subscribing to %s: %s", cfg->subject, tk_nats_err(s, why, sizeof why));
      natsSubscription_Destroy(t->sub);
      t->sub = NULL;
      return -EIO;
    }
    return 0;
  }
  if (!tk_nats_is_connected(t->nc)) {
    snprintf(err, errlen, "NATS is not connected");
    return -ENOTCONN;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = PROC_JS_API_WAIT_MS;
  s = natsConnection_JetStream(&t->js, t->nc, &jo);
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream: %s", tk_nats_err(s, why, sizeof why));
    return -EIO;
  }
  int rc = nt_bind_consumer(t, err, errlen);
  if (rc < 0) {
    jsCtx_Destroy(t->js);
    t->js = NULL;
  }
  return rc;
}

/* Turns one message into a frame: a JSON object of string fields (README:
 * Remote processors and NATS). Anything else is marked deleted: acked, counted, no result. */
static void nt_parse(struct transport *t, natsMsg *m, struct proc_frame *f)
{
  memset(f, 0, sizeof *f);
  f->handle = m;
  json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
  const char *fid = json_string_value(json_object_get(doc, "frame_id"));
  if (!json_is_object(doc) || !fid || !*fid) {
    if (t->unreadable++ % 1000 == 0)
      tk_log("a message on %s is not a frame (a JSON object with a frame_id); %llu so far",
             natsMsg_GetSubject(m), (unsigned long long)t->unreadable);
    json_decref(doc);
    f->entry_id = "";
    f->deleted = true;
    return;
  }
  t->docs[t->nheld - 1] = doc;
  f->entry_id = fid;
  f->frame_id = fid;
  f->camera_id = json_string_value(json_object_get(doc, "camera_id"));
  f->detection_type = json_string_value(json_object_get(doc, "detection_type"));
  f->metadata = json_string_value(json_object_get(doc, "metadata"));
  f->inject_ts_us = json_string_value(json_object_get(doc, "inject_ts_us"));
}

static void nt_hold(struct transport *t, struct proc_batch *b, natsMsg *m)
{
  t->msgs[t->nheld] = m;
  t->docs[t->nheld] = NULL;
  t->nheld++;
  nt_parse(t, m, &b->frames[b->n++]);
}

static int nt_receive(struct transport *t, struct proc_batch *b, size_t max, int block_ms,
                      char *err, size_t errlen)
{
  b->n = 0;
  b->owner = NULL;
  t->nheld = 0;
  if (max > PROC_BATCH_MAX) max = PROC_BATCH_MAX;
  char why[256];
  natsStatus s;
  if (t->cfg->jetstream) {
    natsMsgList list = {0};
    jsErrCode jerr = 0;
    s = natsSubscription_Fetch(&list, t->sub, (int)max, block_ms, &jerr);
    if (s == NATS_TIMEOUT) return 0;
    if (s != NATS_OK) {
      snprintf(err, errlen, "JetStream fetch: %s (error %d)", tk_nats_err(s, why, sizeof why),
               (int)jerr);
      natsMsgList_Destroy(&list);
      return -EIO;
    }
    for (int i = 0; i < list.Count && b->n < max; i++) {
      nt_hold(t, b, list.Msgs[i]);
      list.Msgs[i] = NULL; /* ours now */
    }
    natsMsgList_Destroy(&list);
  } else {
    natsMsg *m = NULL;
    s = natsSubscription_NextMsg(&m, t->sub, block_ms);
    if (s == NATS_SLOW_CONSUMER) {
      int64_t dropped = 0;
      natsSubscription_GetDropped(t->sub, &dropped);
      tk_log("core NATS dropped frames: we were too slow (%lld dropped so far)",
             (long long)dropped);
      return 0;
    }
    if (s == NATS_TIMEOUT) {
      atomic_store(&t->st->local_queued, 0);
      return 0;
    }
    if (s != NATS_OK) {
      snprintf(err, errlen, "NATS %s: %s", t->cfg->subject, tk_nats_err(s, why, sizeof why));
      return -EIO;
    }
    nt_hold(t, b, m);
    /* Then whatever else is already here, without waiting. */
    while (b->n < max && natsSubscription_NextMsg(&m, t->sub, 0) == NATS_OK)
      nt_hold(t, b, m);
    int msgs = 0, bytes = 0;
    if (natsSubscription_GetPending(t->sub, &msgs, &bytes) == NATS_OK)
      atomic_store(&t->st->local_queued, msgs);
  }
  b->owner = t;
  return 0;
}

/* Publishes each result on frames.results.<id> and, with JetStream, acks
 * its frame after it: a crash in between repeats a frame rather than losing
 * its result. Core NATS needs no ack. */
static int nt_complete(struct transport *t, const struct proc_frame *f,
                       const struct proc_result *res, size_t n, char *err, size_t errlen)
{
  const struct proc_config *cfg = t->cfg;
  char why[256];
  for (size_t i = 0; i < n; i++) {
    natsStatus s = NATS_OK;
    if (res[i].json) {
      json_t *o = json_pack(
          "{s:s, s:s, s:s, s:O, s:s}", "processor_id", cfg->id, "frame_id",
          f[i].frame_id ? f[i].frame_id : "", "camera_id", f[i].camera_id ? f[i].camera_id : "",
          "result", res[i].doc ? res[i].doc : json_object(), "processed_at", res[i].processed_at);
      if (o && res[i].latency_ms[0])
        json_object_set_new(o, "latency_ms", json_string(res[i].latency_ms));
      char *msg = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(4)) : NULL;
      json_decref(o);
      if (!msg) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
      }
      s = natsConnection_PublishString(t->nc, cfg->results_subject, msg);
      free(msg);
    }
    if (s == NATS_OK && cfg->jetstream) s = natsMsg_Ack(f[i].handle, NULL);
    if (s != NATS_OK) {
      /* Not acked: JetStream delivers it again after the ack wait. */
      snprintf(err, errlen, "publishing a result or an ack: %s", tk_nats_err(s, why, sizeof why));
      return -EIO;
    }
  }
  return 0;
}

static void nt_drop_held(struct transport *t)
{
  for (size_t i = 0; i < t->nheld; i++) {
    natsMsg_Destroy(t->msgs[i]); /* an unacked JetStream frame is redelivered later */
    json_decref(t->docs[i]);
    t->msgs[i] = NULL;
    t->docs[i] = NULL;
  }
  t->nheld = 0;
}

static void nt_release(struct transport *t, struct proc_batch *b)
{
  nt_drop_held(t);
  b->owner = NULL;
  b->n = 0;
}

static void nt_close(struct transport *t)
{
  nt_drop_held(t);
  if (t->sub && !t->cfg->jetstream) natsSubscription_Unsubscribe(t->sub);
  /* A JetStream subscription is only destroyed: our durable consumer stays. */
  natsSubscription_Destroy(t->sub);
  t->sub = NULL;
  jsCtx_Destroy(t->js);
  t->js = NULL;
}

static const struct transport_ops nats_transport = {
    .name = "nats",
    .open = nt_open,
    .receive = nt_receive,
    .complete = nt_complete,
    .release = nt_release,
    .close = nt_close,
};

/* ================================================================ REST API */

/* Calls the API; returns the HTTP status, or a negative errno with the
 * reason in `err`. The body's "detail" (if any) is copied to `detail`. */
static int api_call(const struct proc_config *cfg, const char *method, const char *path,
                    const char *body, char *detail, size_t dlen, char *err, size_t errlen)
{
  struct tk_http_resp resp;
  if (detail && dlen) detail[0] = '\0';
  int rc = tk_http_request(&cfg->api, method, path, cfg->token, body, PROC_HTTP_TIMEOUT_MS, &resp,
                           err, errlen);
  if (rc < 0) return rc;
  if (detail && dlen && resp.body_len) {
    json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
    const char *d = j ? json_string_value(json_object_get(j, "detail")) : NULL;
    snprintf(detail, dlen, "%s", d ? d : resp.body);
    json_decref(j);
  }
  int status = resp.status;
  tk_http_resp_free(&resp);
  return status;
}

static char *register_body(const struct proc_config *cfg)
{
  json_t *caps = json_array();
  for (size_t i = 0; i < cfg->caps.n; i++)
    json_array_append_new(caps, json_string(cfg->caps.v[i]));
  json_t *o = json_pack("{s:s, s:o, s:I, s:s, s:I}", "id", cfg->id, "capabilities", caps,
                        "capacity", (json_int_t)cfg->capacity, "queue", "", "heartbeat_interval_ms",
                        (json_int_t)cfg->heartbeat_ms);
  if (o && cfg->transport == PT_NATS) {
    /* The gateway appends our NATS results to result_stream. */
    json_object_set_new(o, "transport", json_string("nats"));
    json_object_set_new(o, "subject", json_string(cfg->subject));
    json_object_set_new(o, "result_stream", json_string(cfg->result_stream));
  }
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* The compat HTTP heartbeat, as the old service took it. */
static char *heartbeat_body(const struct proc_config *cfg, const char *status)
{
  json_t *o = json_pack("{s:s, s:s}", "processor_id", cfg->id, "status", status);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* Sleeps up to `ms` or until stop is requested. Returns true when stopping. */
static bool ctl_wait(struct proc_ctl *ctl, int64_t ms)
{
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&ctl->mu);
  while (!atomic_load(&ctl->stop)) {
    if (pthread_cond_timedwait(&ctl->cv, &ctl->mu, &until) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&ctl->mu);
  return atomic_load(&ctl->stop);
}

static void ctl_stop(struct proc_ctl *ctl)
{
  pthread_mutex_lock(&ctl->mu);
  atomic_store(&ctl->stop, true);
  pthread_cond_broadcast(&ctl->cv);
  pthread_mutex_unlock(&ctl->mu);
}

/* The control thread's state. It alone touches it until it is joined; then
 * main sends the last heartbeat with it and frees it (control_free). */
struct control {
  const struct proc_config *cfg;
  struct proc_ctl *ctl;
  struct proc_stats *st;
  natsConnection *nc; /* borrowed from main, NULL without NATS */
  redisContext *rc;   /* Redis transport: for XINFO GROUPS */
  jsCtx *js;          /* JetStream: for our consumer's info */
  int path;           /* where the last heartbeat went: 0 none yet, 1 NATS, 2 HTTP */
  bool depth_failed;  /* the last depth probe failed (logged once) */
  uint64_t seen_us, seen_frames;
  double latency_ms;
};

static void control_free(struct control *c)
{
  if (c->rc) redisFree(c->rc);
  c->rc = NULL;
  jsCtx_Destroy(c->js);
  c->js = NULL;
}

/* A Redis processor's depth: lag + pending of group frame-processors on its
 * stream (XINFO GROUPS), or -1 when Redis cannot be asked. */
static int64_t redis_depth(struct control *c, char *err, size_t errlen)
{
  const struct proc_config *cfg = c->cfg;
  if (!c->rc) c->rc = tk_redis_connect(&cfg->redis, 2000, err, errlen);
  if (!c->rc) return -1;
  redisReply *r = redisCommand(c->rc, "XINFO GROUPS %s", cfg->stream);
  if (!r) {
    snprintf(err, errlen, "XINFO GROUPS: %s", c->rc->errstr);
    redisFree(c->rc);
    c->rc = NULL;
    return -1;
  }
  int64_t depth = 0; /* no stream or no group yet: nothing waits */
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const redisReply *name = tk_reply_field(r->element[i], "name");
    if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, PROC_GROUP) != 0) continue;
    const redisReply *lag = tk_reply_field(r->element[i], "lag");
    const redisReply *pending = tk_reply_field(r->element[i], "pending");
    /* lag is nil when Redis cannot tell (entries deleted mid-stream). */
    if (lag && lag->type == REDIS_REPLY_INTEGER) depth += lag->integer;
    if (pending && pending->type == REDIS_REPLY_INTEGER) depth += pending->integer;
  }
  freeReplyObject(r);
  return depth;
}

/* A JetStream processor's depth: what the consumer has not delivered yet
 * plus what is delivered but not acked, minus what we hold in hand (the
 * gateway adds in_flight back), or -1. */
static int64_t js_depth(struct control *c, int64_t in_flight, char *err, size_t errlen)
{
  char why[256];
  natsStatus s = NATS_OK;
  if (!c->js) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = PROC_JS_API_WAIT_MS;
    s = natsConnection_JetStream(&c->js, c->nc, &jo);
  }
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  if (s == NATS_OK) s = js_GetConsumerInfo(&ci, c->js, TK_JS_STREAM, c->cfg->id, NULL, &jerr);
  if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr)
    return 0; /* no stream or consumer yet: nothing waits for us */
  if (s != NATS_OK) {
    snprintf(err, errlen, "JetStream consumer info: %s", tk_nats_err(s, why, sizeof why));
    return -1;
  }
  int64_t depth = (int64_t)ci->NumPending + ci->NumAckPending - in_flight;
  jsConsumerInfo_Destroy(ci);
  return depth < 0 ? 0 : depth;
}

/* The heartbeat of README: Remote processors and NATS, with our real queue depth (omitted when
 * it cannot be read), frames in hand, capacity and mean latency. */
static char *nats_heartbeat(struct control *c, const char *status)
{
  const struct proc_config *cfg = c->cfg;
  char err[512] = "", ts[32];
  int64_t in_flight = atomic_load(&c->st->in_flight);
  int64_t depth;
  if (cfg->transport == PT_REDIS)
    depth = redis_depth(c, err, sizeof err);
  else if (cfg->jetstream)
    depth = js_depth(c, in_flight, err, sizeof err);
  else
    depth = atomic_load(&c->st->local_queued);
  if (depth < 0 && !c->depth_failed) tk_log("cannot read the queue depth: %s", err);
  if (depth >= 0 && c->depth_failed) tk_log("queue depth readable again");
  c->depth_failed = depth < 0;
  /* Mean time from receiving a frame to its result, since the last heartbeat. */
  uint64_t us = atomic_load(&c->st->work_us), frames = atomic_load(&c->st->work_frames);
  if (frames > c->seen_frames)
    c->latency_ms = (double)(us - c->seen_us) / (double)(frames - c->seen_frames) / 1000.0;
  c->seen_us = us;
  c->seen_frames = frames;
  json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f}", "processor_id", cfg->id, "status", status,
                        "timestamp", tk_iso8601(ts, sizeof ts, tk_real_us()), "in_flight",
                        (json_int_t)in_flight, "capacity", (json_int_t)cfg->capacity, "latency_ms",
                        c->latency_ms);
  if (o && depth >= 0) json_object_set_new(o, "queue_depth", json_integer(depth));
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
  json_decref(o);
  return s;
}

/* Sends one heartbeat: over NATS when we have it and it is up, else over
 * HTTP. Returns 0 (NATS), the HTTP status, or a negative errno. */
static int send_heartbeat(struct control *c, const char *status)
{
  const struct proc_config *cfg = c->cfg;
  char err[512] = "", detail[512];
  if (cfg->hb_nats && tk_nats_is_connected(c->nc)) {
    char *hb = nats_heartbeat(c, status);
    natsStatus s = hb ? natsConnection_PublishString(c->nc, cfg->hb_subject, hb) : NATS_NO_MEMORY;
    free(hb);
    if (s == NATS_OK && strcmp(status, "stopping") == 0)
      s = natsConnection_FlushTimeout(c->nc, 2000);
    if (s == NATS_OK) {
      if (c->path != 1) tk_log("heartbeats go over NATS on %s", cfg->hb_subject);
      c->path = 1;
      return 0;
    }
    tk_log("NATS heartbeat failed: %s", tk_nats_err(s, err, sizeof err));
  }
  if (!cfg->use_api) return -ENOTCONN;
  if (c->path != 2)
    tk_log(cfg->hb_nats ? "NATS is not connected: heartbeats go over HTTP meanwhile"
                        : "heartbeats go over HTTP");
  c->path = 2;
  char *hb = heartbeat_body(cfg, status);
  int st = hb ? api_call(cfg, "POST", "/api/v1/processors/heartbeat", hb, detail, sizeof detail,
                         err, sizeof err)
              : -ENOMEM;
  free(hb);
  if (st < 0 && strcmp(status, "stopping") == 0)
    tk_log("could not send the 'stopping' heartbeat: %s", err);
  else if (st < 0)
    tk_log("heartbeat failed: %s (will keep trying)", err);
  else if (st != 200 && st != 404)
    tk_log("heartbeat got HTTP %d: %s", st, detail);
  return st;
}

/* After a 409: when the stored registration has another transport or
 * subject than ours (say, it ran over Redis before), replace it with ours. */
static void align_registration(const struct proc_config *cfg)
{
  char path[256], err[512];
  snprintf(path, sizeof path, "/api/v1/processors/%s", cfg->id);
  struct tk_http_resp resp;
  if (tk_http_request(&cfg->api, "GET", path, cfg->token, NULL, PROC_HTTP_TIMEOUT_MS, &resp, err,
                      sizeof err) < 0)
    return;
  json_t *doc = resp.status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
  tk_http_resp_free(&resp);
  const char *transport = json_string_value(json_object_get(doc, "transport"));
  const char *subject = json_string_value(json_object_get(doc, "subject"));
  const char *want = cfg->transport == PT_NATS ? "nats" : "redis";
  bool differs = doc && transport &&
                 (strcmp(transport, want) != 0 ||
                  (cfg->transport == PT_NATS && subject && strcmp(subject, cfg->subject) != 0));
  if (differs) {
    char *body = register_body(cfg), detail[512];
    int st =
        body ? api_call(cfg, "PUT", path, body, detail, sizeof detail, err, sizeof err) : -ENOMEM;
    if (st == 200)
      tk_log("the stored registration said transport %s%s%s; updated it to ours", transport,
             subject ? ", subject " : "", subject ? subject : "");
    else if (st < 0)
      tk_log("could not update the stored registration: %s", err);
    else
      tk_log("updating the stored registration got HTTP %d: %s", st, detail);
    free(body);
  }
  json_decref(doc);
}

/* Registers, retrying with backoff while the gateway is down or failing.
 * Returns 0 once registered (201 or 409), -ECANCELED when stopping, or
 * -EINVAL when the gateway refuses the registration for good (4xx). On a
 * 409 whose transport or subject differ from ours, ours replaces it (PUT). */
static int do_register(const struct proc_config *cfg, struct proc_ctl *ctl)
{
  char *body = register_body(cfg);
  if (!body) return -ENOMEM;
  char err[512], detail[512];
  int64_t backoff = 500;
  int last_status = 0, rc = -ECANCELED;
  while (!atomic_load(&ctl->stop)) {
    int st = api_call(cfg, "POST", "/api/v1/processors/register", body, detail, sizeof detail, err,
                      sizeof err);
    if (st == 201 || st == 409) {
      if (st == 201) {
        tk_log("registered %s with the gateway (HTTP 201)", cfg->id);
      } else {
        tk_log("%s is already registered (409); continuing with that registration", cfg->id);
        align_registration(cfg);
      }
      rc = 0;
      break;
    }
    if (st >= 400 && st < 500 && st != 404 && st != 408 && st != 429) {
      tk_log("registration refused: HTTP %d: %s", st, detail);
      rc = -EINVAL;
      break;
    }
    if (st != last_status) { /* log each new kind of failure once */
      if (st < 0)
        tk_log("gateway not reachable (%s); retrying registration with backoff", err);
      else
        tk_log("registration got HTTP %d: %s; retrying with backoff", st, detail);
      last_status = st;
    }
    if (ctl_wait(ctl, backoff)) break;
    backoff = backoff * 2 > 10000 ? 10000 : backoff * 2;
  }
  free(body);
  return rc;
}

/* Whether the gateway still knows us: false only on a clear 404. */
static bool still_registered(const struct proc_config *cfg)
{
  char path[256], err[512];
  snprintf(path, sizeof path, "/api/v1/processors/%s", cfg->id);
  int st = api_call(cfg, "GET", path, NULL, NULL, 0, err, sizeof err);
  return st != 404;
}

/* The control thread: registration, then heartbeats. The gateway forgetting
 * us (its Redis was wiped) shows as a 404 to an HTTP heartbeat, or to the
 * registration check NATS heartbeats make every 30 s: register again. */
static void *control_main(void *arg)
{
  struct control *c = arg;
  const struct proc_config *cfg = c->cfg;
  struct proc_ctl *ctl = c->ctl;
  for (;;) {
    if (cfg->use_api) {
      int rc = do_register(cfg, ctl);
      if (rc == -ECANCELED) break;
      if (rc < 0) {
        atomic_store(&ctl->fatal, true);
        ctl_stop(ctl);
        break;
      }
      atomic_store(&ctl->registered, true);
    }
    if (cfg->heartbeat_ms <= 0) {
      ctl_wait(ctl, INT32_MAX); /* nothing to do until we stop */
      break;
    }
    bool again = false;
    int64_t next_check = tk_mono_us() + PROC_RECHECK_US;
    do {
      int st = send_heartbeat(c, "healthy");
      if (st == 404 ||
          (st == 0 && cfg->use_api && tk_mono_us() >= next_check && !still_registered(cfg))) {
        tk_log("the gateway does not know %s (404); registering again", cfg->id);
        atomic_store(&ctl->registered, false);
        again = true;
        break;
      }
      if (st == 0 && tk_mono_us() >= next_check) next_check = tk_mono_us() + PROC_RECHECK_US;
    } while (!ctl_wait(ctl, cfg->heartbeat_ms));
    if (!again) break;
  }
  return NULL;
}

/* ============================================================= processing */

/* Builds the result of one frame: a fake detection for its type. */
static void make_result(const struct proc_config *cfg, const struct proc_frame *f,
                        struct proc_result *out, uint64_t *rng)
{
  memset(out, 0, sizeof *out);
  if (f->deleted) return;
  int64_t now = tk_real_us();
  tk_iso8601(out->processed_at, sizeof out->processed_at, now);
  int64_t injected;
  if (f->inject_ts_us && tk_parse_i64(f->inject_ts_us, 0, INT64_MAX, &injected) == 0)
    snprintf(out->latency_ms, sizeof out->latency_ms, "%.3f", (double)(now - injected) / 1000.0);

  /* The top-level detection_type wins over metadata's (README: Delivery guarantees). */
  json_t *meta = NULL;
  const char *type = f->detection_type;
  if (!type && f->metadata) {
    meta = json_loads(f->metadata, 0, NULL);
    type = json_string_value(json_object_get(meta, "detection_type"));
  }
  if (!type) type = "unknown";
  *rng ^= *rng << 13;
  *rng ^= *rng >> 7;
  *rng ^= *rng << 17;
  uint64_t r = *rng;
  json_t *o =
      json_pack("{s:s, s:s, s:s, s:[{s:s, s:f, s:[i,i,i,i]}], s:I}", "processor_id", cfg->id,
                "frame_id", f->frame_id ? f->frame_id : "", "detection_type", type, "detections",
                "label", type, "confidence", 0.5 + (double)(r % 500) / 1000.0, "bbox",
                (int)(r % 1600), (int)((r >> 12) % 900), 32 + (int)((r >> 24) % 256),
                32 + (int)((r >> 36) % 256), "work_ms", (json_int_t)cfg->work_ms);
  out->json = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(4)) : NULL;
  if (!out->json) out->json = strdup("{}");
  out->doc = o; /* owned by the result now */
  json_decref(meta);
}

/* Sleeps until `at` (monotonic µs) or a signal; returns true when stopping. */
static bool pause_until(struct proc_ctl *ctl, int64_t at)
{
  for (;;) {
    if (got_signal || atomic_load(&ctl->stop)) return true;
    int64_t left = at - tk_mono_us();
    if (left <= 0) return false;
    tk_sleep_us(left > 100000 ? 100000 : left);
  }
}

static void usage(FILE *to)
{
  fprintf(to,
          "Usage: fb-processor --id ID --capabilities LIST [options]\n"
          "A sample processor: registers with the gateway, takes its frames from Redis\n"
          "(frames:ready:<id>, group frame-processors) or NATS, simulates work, sends a\n"
          "result and acks.\n"
          "\n"
          "  --id ID               processor id, 1-128 of [A-Za-z0-9._:-] (required;\n"
          "                        no '.' with NATS: the gateway reads one subject token)\n"
          "  --capabilities LIST   detection types it handles, e.g. person,vehicle (required)\n"
          "  --capacity N          frames worked on at once (default 4)\n"
          "  --api URL             gateway REST API (env FB_API, default http://127.0.0.1:8002);\n"
          "                        'none': no registration, no HTTP heartbeats\n"
          "  --token T             bearer token (env API_TOKEN)\n"
          "  --transport T         redis (default) or nats: registers with \"transport\":\"nats\"\n"
          "                        and takes frames from its NATS subject\n"
          "  --subject S           nats: the subject to register and read (default\n"
          "                        frames.ready.<id>)\n"
          "  --jetstream           nats: read through a durable pull consumer named <id> on\n"
          "                        JetStream stream FRAMES (the gateway with NATS_JETSTREAM=1);\n"
          "                        each frame is acked after its result is sent\n"
          "  --nats-url URL        NATS servers, comma-separated (env NATS_URL, default\n"
          "                        " TK_DEFAULT_NATS_URL "); 'none': no NATS. Given (or in\n"
          "                        nats mode) heartbeats go over NATS; auth and TLS from\n"
          "                        NATS_TOKEN, NATS_USER/NATS_PASSWORD, NATS_CREDS, NATS_TLS_CA\n"
          "  --redis-url URL       Redis (env REDIS_URL, default " TK_DEFAULT_REDIS_URL ")\n"
          "  --work-ms MS          simulated work per group of <capacity> frames (default 0)\n"
          "  --heartbeat-ms MS     heartbeat interval, 0 = none (default 30000)\n"
          "  --result-stream S     where results go (default frames:results); nats: the\n"
          "                        result_stream it registers, the gateway writes there\n"
          "  --result-maxlen N     redis: cap it with MAXLEN ~ N, 0 = uncapped (default 1000000)\n"
          "  --count N             exit after N frames (default 0 = run until a signal)\n"
          "  --die-after N         after N frames, crash: _exit(3) with the frames in hand\n"
          "                        unacked and no 'stopping' heartbeat\n"
          "  --unregister          DELETE the registration on exit\n"
          "  --quiet               no per-second progress lines\n"
          "  --help, --version\n"
          "\n"
          "Heartbeats over NATS go to processors.heartbeat.<id> as JSON {processor_id, status,\n"
          "timestamp, queue_depth, in_flight, capacity, latency_ms}; queue_depth is real: lag +\n"
          "pending of its Redis group, frames waiting in the client (core NATS) or undelivered +\n"
          "unacked in its consumer (JetStream). Without a NATS URL a Redis processor sends the\n"
          "old HTTP heartbeat. NATS results go to frames.results.<id>.\n"
          "On SIGINT/SIGTERM it finishes the frames in hand, sends a 'stopping' heartbeat\n"
          "(NATS if connected, else HTTP; the gateway then re-routes its backlog), prints\n"
          "its counts and exits 0.\n");
}

static bool valid_id(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > 128) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == ':' || c == '-'))
      return false;
  }
  return true;
}

static void parse_flags(struct proc_config *cfg, int argc, char **argv)
{
  const char *caps = NULL, *api = tk_env_or("FB_API", "http://127.0.0.1:8002");
  const char *redis_url = tk_env_or("REDIS_URL", TK_DEFAULT_REDIS_URL);
  const char *transport = "redis", *subject = NULL;
  const char *nats_flag = NULL, *nats_env = tk_env_or("NATS_URL", NULL);
  memset(cfg, 0, sizeof *cfg);
  cfg->capacity = 4;
  cfg->token = tk_env_or("API_TOKEN", NULL);
  cfg->heartbeat_ms = 30000;
  cfg->result_stream = "frames:results";
  cfg->result_maxlen = 1000000;

  enum {
    O_ID = 256,
    O_CAPS,
    O_CAPACITY,
    O_API,
    O_TOKEN,
    O_REDIS,
    O_WORK,
    O_HB,
    O_RESULT,
    O_RESULT_MAXLEN,
    O_COUNT,
    O_UNREG,
    O_QUIET,
    O_TRANSPORT,
    O_SUBJECT,
    O_JETSTREAM,
    O_NATS,
    O_DIE_AFTER,
    O_HELP,
    O_VERSION
  };
  static const struct option opts[] = {
      {"id", required_argument, NULL, O_ID},
      {"capabilities", required_argument, NULL, O_CAPS},
      {"capacity", required_argument, NULL, O_CAPACITY},
      {"api", required_argument, NULL, O_API},
      {"token", required_argument, NULL, O_TOKEN},
      {"redis-url", required_argument, NULL, O_REDIS},
      {"work-ms", required_argument, NULL, O_WORK},
      {"heartbeat-ms", required_argument, NULL, O_HB},
      {"result-stream", required_argument, NULL, O_RESULT},
      {"result-maxlen", required_argument, NULL, O_RESULT_MAXLEN},
      {"count", required_argument, NULL, O_COUNT},
      {"unregister", no_argument, NULL, O_UNREG},
      {"quiet", no_argument, NULL, O_QUIET},
      {"transport", required_argument, NULL, O_TRANSPORT},
      {"subject", required_argument, NULL, O_SUBJECT},
      {"jetstream", no_argument, NULL, O_JETSTREAM},
      {"nats-url", required_argument, NULL, O_NATS},
      {"die-after", required_argument, NULL, O_DIE_AFTER},
      {"help", no_argument, NULL, O_HELP},
      {"version", no_argument, NULL, O_VERSION},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case O_ID: cfg->id = optarg; break;
    case O_CAPS: caps = optarg; break;
    case O_CAPACITY: cfg->capacity = tk_flag_i64("--capacity", optarg, 1, 100000); break;
    case O_API: api = optarg; break;
    case O_TOKEN: cfg->token = optarg; break;
    case O_REDIS: redis_url = optarg; break;
    case O_WORK: cfg->work_ms = tk_flag_i64("--work-ms", optarg, 0, 3600000); break;
    case O_HB: cfg->heartbeat_ms = tk_flag_i64("--heartbeat-ms", optarg, 0, 86400000); break;
    case O_RESULT: cfg->result_stream = optarg; break;
    case O_RESULT_MAXLEN:
      cfg->result_maxlen = tk_flag_i64("--result-maxlen", optarg, 0, INT64_MAX / 2);
      break;
    case O_COUNT: cfg->count = tk_flag_i64("--count", optarg, 0, INT64_MAX / 2); break;
    case O_UNREG: cfg->unregister = true; break;
    case O_QUIET: cfg->quiet = true; break;
    case O_TRANSPORT: transport = optarg; break;
    case O_SUBJECT: subject = optarg; break;
    case O_JETSTREAM: cfg->jetstream = true; break;
    case O_NATS: nats_flag = optarg; break;
    case O_DIE_AFTER: cfg->die_after = tk_flag_i64("--die-after", optarg, 1, INT64_MAX / 2); break;
    case O_HELP: usage(stdout); exit(0);
    case O_VERSION: printf("fb-processor " TK_VERSION "\n"); exit(0);
    default: tk_die(TK_EXIT_USAGE, "try 'fb-processor --help'");
    }
  }
  if (optind < argc) tk_die(TK_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
  if (!cfg->id) tk_die(TK_EXIT_USAGE, "--id is required (see --help)");
  if (!valid_id(cfg->id))
    tk_die(TK_EXIT_USAGE, "--id: '%s' is not 1-128 of [A-Za-z0-9._:-]", cfg->id);
  if (!caps) tk_die(TK_EXIT_USAGE, "--capabilities is required (see --help)");
  char err[512];
  if (tk_strlist_parse(&cfg->caps, caps, 256, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--capabilities: %s", err);
  if (!*cfg->result_stream) tk_die(TK_EXIT_USAGE, "--result-stream: must not be empty");
  if (tk_redis_url_parse(&cfg->redis, redis_url, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--redis-url: %s", err);
  cfg->use_api = strcmp(api, "none") != 0;
  if (cfg->use_api && tk_http_url_parse(&cfg->api, api, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--api: %s", err);
  snprintf(cfg->stream, sizeof cfg->stream, "frames:ready:%s", cfg->id);

  if (strcmp(transport, "redis") == 0)
    cfg->transport = PT_REDIS;
  else if (strcmp(transport, "nats") == 0)
    cfg->transport = PT_NATS;
  else
    tk_die(TK_EXIT_USAGE, "--transport: '%s' is not redis or nats", transport);
  if (cfg->transport == PT_REDIS && (subject || cfg->jetstream))
    tk_die(TK_EXIT_USAGE, "--subject and --jetstream need --transport nats");

  /* NATS: a flag or NATS_URL turns it on; nats mode needs it (default URL). */
  const char *url = nats_flag ? nats_flag : nats_env;
  if (cfg->transport == PT_NATS && !url) url = TK_DEFAULT_NATS_URL;
  if (url && strcmp(url, "none") == 0) {
    if (cfg->transport == PT_NATS) tk_die(TK_EXIT_USAGE, "--nats-url none: nats mode needs NATS");
    url = NULL;
  }
  if (url && tk_nats_url_check(url, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--nats-url: %s", err);
  cfg->nats_url = url;
  /* The gateway subscribes processors.heartbeat.* and frames.results.* and
   * reads the id from the last token: an id with a '.' cannot reach it. */
  bool dotted = strchr(cfg->id, '.') != NULL;
  if (cfg->transport == PT_NATS && dotted)
    tk_die(TK_EXIT_USAGE,
           "--id: '%s' has a '.', which NATS mode cannot use: the gateway takes heartbeats and "
           "results from one subject token (processors.heartbeat.*, frames.results.*)",
           cfg->id);
  cfg->hb_nats = cfg->nats_url && !dotted;
  if (cfg->nats_url && dotted)
    tk_log("warning: id '%s' has a '.': heartbeats go over HTTP, not NATS (the gateway reads "
           "one subject token)",
           cfg->id);
  cfg->subject_given = subject != NULL;
  snprintf(cfg->subject, sizeof cfg->subject, "%s%s", subject ? "" : "frames.ready.",
           subject ? subject : cfg->id);
  if (subject &&
      (!*subject || strlen(subject) >= 256 || strpbrk(subject, " \t*>") || subject[0] == '.' ||
       subject[strlen(subject) - 1] == '.' || strstr(subject, "..")))
    tk_die(TK_EXIT_USAGE, "--subject: '%s' is not a NATS subject without wildcards", subject);
  if (cfg->jetstream && strncmp(cfg->subject, "frames.ready.", 13) != 0)
    tk_die(TK_EXIT_USAGE,
           "--subject: '%s' is outside frames.ready.>, the subjects of JetStream stream FRAMES",
           cfg->subject);
  snprintf(cfg->hb_subject, sizeof cfg->hb_subject, "processors.heartbeat.%s", cfg->id);
  snprintf(cfg->results_subject, sizeof cfg->results_subject, "frames.results.%s", cfg->id);
}

int main(int argc, char **argv)
{
  tk_set_progname("fb-processor");
  struct proc_config cfg;
  parse_flags(&cfg, argc, argv);

  struct proc_ctl ctl = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  struct proc_stats st;
  atomic_init(&st.received, 0);
  atomic_init(&st.processed, 0);
  atomic_init(&st.skipped, 0);
  atomic_init(&st.reconnects, 0);
  atomic_init(&st.in_flight, 0);
  atomic_init(&st.local_queued, 0);
  atomic_init(&st.work_us, 0);
  atomic_init(&st.work_frames, 0);

  /* Signals go to the main thread only: block them while the control thread
   * is created so it inherits the blocked mask (nats.c's threads too). */
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);

  char err[512];
  natsConnection *nc = NULL;
  if (cfg.nats_url) {
    char name[200];
    snprintf(name, sizeof name, "fb-processor %s", cfg.id);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    nc = tk_nats_connect(cfg.nats_url, name, true, err, sizeof err);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!nc) tk_die(1, "%s", err);
    if (!tk_nats_is_connected(nc))
      tk_log("NATS at %s is not reachable yet; retrying in the background", cfg.nats_url);
  }

  pthread_t control_thread;
  struct control cargs = {.cfg = &cfg, .ctl = &ctl, .st = &st, .nc = nc};
  bool control_started = false;
  if (cfg.use_api || cfg.hb_nats) {
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int prc = pthread_create(&control_thread, NULL, control_main, &cargs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) tk_die(1, "cannot start the control thread: %s", strerror(prc));
    control_started = true;
  }

  if (cfg.transport == PT_REDIS)
    tk_log("%s: consuming %s as %s/%s, results to %s%s", cfg.id, cfg.stream, PROC_GROUP, cfg.id,
           cfg.result_stream, cfg.use_api ? "" : " (no REST API)");
  else if (cfg.jetstream)
    tk_log("%s: pulling %s from JetStream stream " TK_JS_STREAM
           " (durable consumer %s), results on %s%s",
           cfg.id, cfg.subject, cfg.id, cfg.results_subject, cfg.use_api ? "" : " (no REST API)");
  else
    tk_log("%s: subscribed to %s (core NATS, queue group %s), results on %s%s", cfg.id, cfg.subject,
           cfg.id, cfg.results_subject, cfg.use_api ? "" : " (no REST API)");

  struct transport tr = {.ops = cfg.transport == PT_NATS ? &nats_transport : &redis_transport,
                         .cfg = &cfg,
                         .st = &st,
                         .nc = nc};
  const char *source = cfg.transport == PT_NATS ? "NATS" : "Redis";
  bool connected = false, ever_connected = false;
  int64_t backoff_ms = 100, next_attempt = 0;
  int failures = 0;
  static struct proc_batch batch; /* large; one per process */
  struct proc_result *results = calloc((size_t)PROC_BATCH_MAX, sizeof *results);
  if (!results) tk_die(1, "out of memory");
  uint64_t rng = (uint64_t)tk_real_us() | 1;
  const int64_t start = tk_mono_us();
  int64_t next_report = start + 1000000, last_report = start;
  uint64_t last_processed = 0;

  while (!got_signal && !atomic_load(&ctl.stop)) {
    if (!connected) {
      if (pause_until(&ctl, next_attempt)) break;
      int orc = tr.ops->open(&tr, err, sizeof err);
      if (orc == -EINVAL) {
        tk_log("%s", err);
        atomic_store(&ctl.fatal, true);
        break;
      }
      if (orc < 0) {
        if (failures++ == 0) tk_log("%s; retrying with backoff", err);
        next_attempt = tk_mono_us() + backoff_ms * 1000;
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
        continue;
      }
      if (ever_connected) {
        tk_log("reconnected to %s (after %d failed attempts)", source, failures);
        atomic_fetch_add(&st.reconnects, 1);
      } else if (failures) {
        tk_log("connected to %s (after %d failed attempts)", source, failures);
      }
      ever_connected = true;
      connected = true;
      failures = 0;
      backoff_ms = 100;
    }

    size_t max = PROC_BATCH_MAX;
    uint64_t done = atomic_load(&st.processed) + atomic_load(&st.skipped);
    if (cfg.count > 0) {
      if (done >= (uint64_t)cfg.count) break;
      if ((uint64_t)cfg.count - done < max) max = (size_t)((uint64_t)cfg.count - done);
    }
    int rrc = tr.ops->receive(&tr, &batch, max, PROC_BLOCK_MS, err, sizeof err);
    if (rrc < 0) {
      tk_log("lost %s: %s; reconnecting", source, err);
      tr.ops->release(&tr, &batch);
      tr.ops->close(&tr);
      connected = false;
      next_attempt = tk_mono_us() + backoff_ms * 1000;
      continue;
    }
    const int64_t received_at = tk_mono_us();
    atomic_fetch_add(&st.received, batch.n);
    atomic_store(&st.in_flight, (int_fast64_t)batch.n);

    /* Work on <capacity> frames at a time: each group takes work_ms. */
    for (size_t off = 0; off < batch.n && connected;) {
      if (cfg.die_after > 0 && atomic_load(&st.processed) >= (uint64_t)cfg.die_after) {
        /* A crash: nothing acked, no 'stopping' heartbeat, nothing flushed. */
        tk_log("--die-after %lld: dying with %zu frames in hand, unacked", (long long)cfg.die_after,
               batch.n - off);
        _exit(PROC_EXIT_DIED);
      }
      size_t n = batch.n - off;
      if (n > (size_t)cfg.capacity) n = (size_t)cfg.capacity;
      if (cfg.work_ms > 0) {
        int64_t until = tk_mono_us() + cfg.work_ms * 1000;
        while (tk_mono_us() < until)
          tk_sleep_us(until - tk_mono_us());
      }
      size_t live = 0;
      for (size_t i = 0; i < n; i++) {
        make_result(&cfg, &batch.frames[off + i], &results[i], &rng);
        if (results[i].json) live++;
      }
      int crc = tr.ops->complete(&tr, &batch.frames[off], results, n, err, sizeof err);
      for (size_t i = 0; i < n; i++) {
        free(results[i].json);
        json_decref(results[i].doc);
      }
      if (crc < 0) {
        /* Not acked: they stay pending and are read again after reconnecting. */
        tk_log("lost %s while acking: %s; reconnecting", source, err);
        tr.ops->close(&tr);
        connected = false;
        next_attempt = tk_mono_us() + backoff_ms * 1000;
        break;
      }
      atomic_fetch_add(&st.processed, live);
      atomic_fetch_add(&st.skipped, n - live);
      atomic_fetch_add(&st.work_us, (uint64_t)(tk_mono_us() - received_at) * live);
      atomic_fetch_add(&st.work_frames, live);
      atomic_fetch_sub(&st.in_flight, (int_fast64_t)n);
      off += n;
    }
    if (cfg.die_after > 0 && atomic_load(&st.processed) >= (uint64_t)cfg.die_after) {
      tk_log("--die-after %lld: dying", (long long)cfg.die_after);
      _exit(PROC_EXIT_DIED);
    }
    tr.ops->release(&tr, &batch);
    atomic_store(&st.in_flight, 0);

    int64_t now = tk_mono_us();
    if (now >= next_report) {
      uint64_t p = atomic_load(&st.processed);
      double rate = (double)(p - last_processed) * 1e6 / (double)(now - last_report);
      if (!cfg.quiet)
        tk_log("%s: processed %llu (%.0f/s), skipped %llu, reconnects %llu%s", cfg.id,
               (unsigned long long)p, rate, (unsigned long long)atomic_load(&st.skipped),
               (unsigned long long)atomic_load(&st.reconnects),
               !cfg.use_api                   ? ""
               : atomic_load(&ctl.registered) ? ""
                                              : ", not registered yet");
      last_processed = p;
      last_report = now;
      next_report = now + 1000000;
    }
  }

  double secs = (double)(tk_mono_us() - start) / 1e6;
  ctl_stop(&ctl);
  if (control_started) pthread_join(control_thread, NULL);
  tr.ops->close(&tr);
  free(results);

  int status = atomic_load(&ctl.fatal) ? 1 : 0;
  if (cfg.use_api && !atomic_load(&ctl.fatal) && cfg.unregister) {
    char detail[512], path[256];
    snprintf(path, sizeof path, "/api/v1/processors/%s", cfg.id);
    int code = api_call(&cfg, "DELETE", path, NULL, detail, sizeof detail, err, sizeof err);
    if (code == 204)
      tk_log("unregistered %s", cfg.id);
    else if (code < 0)
      tk_log("could not unregister: %s", err);
    else
      tk_log("unregister got HTTP %d: %s", code, detail);
  } else if (!atomic_load(&ctl.fatal) && cfg.heartbeat_ms > 0 &&
             (atomic_load(&ctl.registered) || (!cfg.use_api && cfg.hb_nats))) {
    /* Tell the gateway we are going, so it re-routes our backlog now. */
    atomic_store(&st.in_flight, 0);
    if (send_heartbeat(&cargs, "stopping") >= 0)
      tk_log("sent the 'stopping' heartbeat over %s", cargs.path == 1 ? "NATS" : "HTTP");
  }
  control_free(&cargs);
  tk_nats_close(nc, 2000);
  if (nc) nats_Close();

  uint64_t p = atomic_load(&st.processed);
  printf("fb-processor %s: processed %llu frames, skipped %llu, reconnects %llu, in %.3f s "
         "(%.0f frames/s)\n",
         cfg.id, (unsigned long long)p, (unsigned long long)atomic_load(&st.skipped),
         (unsigned long long)atomic_load(&st.reconnects), secs, secs > 0 ? (double)p / secs : 0);
  printf("RESULT {\"processor_id\":\"%s\",\"transport\":\"%s\",\"processed\":%llu,\"skipped\":%llu,"
         "\"reconnects\":%llu,\"seconds\":%.3f}\n",
         cfg.id, cfg.transport == PT_NATS ? (cfg.jetstream ? "jetstream" : "nats") : "redis",
         (unsigned long long)p, (unsigned long long)atomic_load(&st.skipped),
         (unsigned long long)atomic_load(&st.reconnects), secs);
  fflush(stdout);
  tk_strlist_free(&cfg.caps);
  return status;
}
