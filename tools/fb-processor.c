/*
 * fb-processor: the sample processor. Registers over the REST API, reads its
 * stream frames:ready:<id> as group frame-processors, "works", writes a
 * result and acks. Threads: the main thread owns the transport (and its Redis
 * connection) and does all frame work; the control thread does registration
 * and heartbeats over HTTP. They share only atomics and `ctl` (its mutex).
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

#include <jansson.h>

#include "tk_http.h"
#include "toolkit.h"

#define PROC_BATCH_MAX       64   /* XREADGROUP COUNT */
#define PROC_BLOCK_MS        1000 /* XREADGROUP BLOCK: also bounds the stop latency */
#define PROC_GROUP           "frame-processors"
#define PROC_HTTP_TIMEOUT_MS 5000

/* ------------------------------------------------------------ settings --- */

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
  bool unregister;
  bool quiet;
  char stream[160]; /* frames:ready:<id> */
};

/* Counters written by the main thread, read by anyone. */
struct proc_stats {
  atomic_uint_fast64_t received;   /* entries read, including deleted ones */
  atomic_uint_fast64_t processed;  /* frames worked on, result written and acked */
  atomic_uint_fast64_t skipped;    /* entries whose content was trimmed: acked only */
  atomic_uint_fast64_t reconnects; /* Redis connections re-established after a loss */
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
 * Everything that talks to the frame source lives behind this table, so a
 * NATS transport (subject frames.ready.<id>, results on frames.results.<id>)
 * can be added without touching the processing loop. Only the main thread
 * calls a transport.
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
  bool deleted;               /* the entry's content is gone (trimmed) */
};

struct proc_batch {
  struct proc_frame frames[PROC_BATCH_MAX];
  size_t n;
  void *owner; /* the transport's: the memory the strings live in */
};

/* What the processing loop made of one frame. */
struct proc_result {
  char *json; /* owned, NULL for a deleted entry */
  char processed_at[32];
  char latency_ms[24]; /* "" when the frame had no inject_ts_us */
};

struct transport;
struct transport_ops {
  const char *name;
  /* Connects and makes sure the group exists. Returns 0 or a negative errno
   * and puts the reason in `err`. */
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
  /* Redis state. */
  redisContext *rc;
  bool history_done; /* our pending entries (from a previous run) are read */
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
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

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

struct control {
  const struct proc_config *cfg;
  struct proc_ctl *ctl;
};

/* Registers, retrying with backoff while the gateway is down or failing.
 * Returns 0 once registered (201 or 409), -ECANCELED when stopping, or
 * -EINVAL when the gateway refuses the registration for good (4xx). */
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
      if (st == 201)
        tk_log("registered %s with the gateway (HTTP 201)", cfg->id);
      else
        tk_log("%s is already registered (409); continuing with that registration", cfg->id);
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

/* The control thread: registration, then heartbeats. A 404 to a heartbeat
 * means the gateway forgot us (its Redis was wiped): register again. */
static void *control_main(void *arg)
{
  struct control *c = arg;
  const struct proc_config *cfg = c->cfg;
  struct proc_ctl *ctl = c->ctl;
  char *hb = heartbeat_body(cfg, "healthy");
  char err[512], detail[512];
  bool reachable = true;
  for (;;) {
    int rc = do_register(cfg, ctl);
    if (rc == -ECANCELED) break;
    if (rc < 0) {
      atomic_store(&ctl->fatal, true);
      ctl_stop(ctl);
      break;
    }
    atomic_store(&ctl->registered, true);
    if (cfg->heartbeat_ms <= 0 || !hb) {
      ctl_wait(ctl, INT32_MAX); /* nothing to do until we stop */
      break;
    }
    bool again = false;
    do {
      int st = api_call(cfg, "POST", "/api/v1/processors/heartbeat", hb, detail, sizeof detail, err,
                        sizeof err);
      if (st == 404) {
        tk_log("heartbeat: the gateway does not know %s (404); registering again", cfg->id);
        atomic_store(&ctl->registered, false);
        again = true;
        break;
      }
      if (st < 0 && reachable) {
        tk_log("heartbeat failed: %s (will keep trying)", err);
        reachable = false;
      } else if (st >= 0 && st != 200) {
        tk_log("heartbeat got HTTP %d: %s", st, detail);
      } else if (st == 200 && !reachable) {
        tk_log("heartbeats reach the gateway again");
        reachable = true;
      }
    } while (!ctl_wait(ctl, cfg->heartbeat_ms));
    if (!again) break;
  }
  free(hb);
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

  /* The top-level detection_type wins over metadata's (SPEC section 2). */
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
  json_decref(o);
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
          "A sample processor: registers with the gateway, consumes frames:ready:<id>\n"
          "(group frame-processors), simulates work, acks and writes a result.\n"
          "\n"
          "  --id ID               processor id, 1-128 of [A-Za-z0-9._:-] (required)\n"
          "  --capabilities LIST   detection types it handles, e.g. person,vehicle (required)\n"
          "  --capacity N          frames worked on at once (default 4)\n"
          "  --api URL             gateway REST API (env FB_API, default http://127.0.0.1:8002);\n"
          "                        'none': no registration or heartbeats, Redis only\n"
          "  --token T             bearer token (env API_TOKEN)\n"
          "  --redis-url URL       Redis (env REDIS_URL, default " TK_DEFAULT_REDIS_URL ")\n"
          "  --work-ms MS          simulated work per group of <capacity> frames (default 0)\n"
          "  --heartbeat-ms MS     HTTP heartbeat interval, 0 = none (default 30000)\n"
          "  --result-stream S     where results go (default frames:results)\n"
          "  --result-maxlen N     cap it with MAXLEN ~ N, 0 = uncapped (default 1000000)\n"
          "  --count N             exit after N frames (default 0 = run until a signal)\n"
          "  --unregister          DELETE the registration on exit\n"
          "  --quiet               no per-second progress lines\n"
          "  --help, --version\n"
          "\n"
          "On SIGINT/SIGTERM it finishes the frames in hand, sends a 'stopping' heartbeat\n"
          "(the gateway then re-routes its backlog), prints its counts and exits 0.\n");
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

  /* Signals go to the main thread only: block them while the control thread
   * is created so it inherits the blocked mask. */
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);

  pthread_t control_thread;
  struct control cargs = {.cfg = &cfg, .ctl = &ctl};
  bool control_started = false;
  if (cfg.use_api) {
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int prc = pthread_create(&control_thread, NULL, control_main, &cargs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) tk_die(1, "cannot start the control thread: %s", strerror(prc));
    control_started = true;
  }

  tk_log("%s: consuming %s as %s/%s, results to %s%s", cfg.id, cfg.stream, PROC_GROUP, cfg.id,
         cfg.result_stream, cfg.use_api ? "" : " (no REST API)");

  struct transport tr = {.ops = &redis_transport, .cfg = &cfg};
  bool connected = false, ever_connected = false;
  int64_t backoff_ms = 100, next_attempt = 0;
  int failures = 0;
  char err[512];
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
      if (orc < 0) {
        if (failures++ == 0) tk_log("%s; retrying with backoff", err);
        next_attempt = tk_mono_us() + backoff_ms * 1000;
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
        continue;
      }
      if (ever_connected) {
        tk_log("reconnected to Redis (after %d failed attempts)", failures);
        atomic_fetch_add(&st.reconnects, 1);
      } else if (failures) {
        tk_log("connected to Redis (after %d failed attempts)", failures);
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
      tk_log("lost Redis: %s; reconnecting", err);
      tr.ops->release(&tr, &batch);
      tr.ops->close(&tr);
      connected = false;
      next_attempt = tk_mono_us() + backoff_ms * 1000;
      continue;
    }
    atomic_fetch_add(&st.received, batch.n);

    /* Work on <capacity> frames at a time: each group takes work_ms. */
    for (size_t off = 0; off < batch.n && connected;) {
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
      for (size_t i = 0; i < n; i++)
        free(results[i].json);
      if (crc < 0) {
        /* Not acked: they stay pending and are read again after reconnecting. */
        tk_log("lost Redis while acking: %s; reconnecting", err);
        tr.ops->close(&tr);
        connected = false;
        next_attempt = tk_mono_us() + backoff_ms * 1000;
        break;
      }
      atomic_fetch_add(&st.processed, live);
      atomic_fetch_add(&st.skipped, n - live);
      off += n;
    }
    tr.ops->release(&tr, &batch);

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
  if (cfg.use_api && !atomic_load(&ctl.fatal)) {
    char detail[512];
    if (cfg.unregister) {
      char path[256];
      snprintf(path, sizeof path, "/api/v1/processors/%s", cfg.id);
      int code = api_call(&cfg, "DELETE", path, NULL, detail, sizeof detail, err, sizeof err);
      if (code == 204)
        tk_log("unregistered %s", cfg.id);
      else if (code < 0)
        tk_log("could not unregister: %s", err);
      else
        tk_log("unregister got HTTP %d: %s", code, detail);
    } else if (cfg.heartbeat_ms > 0 && atomic_load(&ctl.registered)) {
      /* Tell the gateway we are going, so it re-routes our backlog now. */
      char *hb = heartbeat_body(&cfg, "stopping");
      int code = hb ? api_call(&cfg, "POST", "/api/v1/processors/heartbeat", hb, detail,
                               sizeof detail, err, sizeof err)
                    : -ENOMEM;
      if (code < 0) tk_log("could not send the 'stopping' heartbeat: %s", err);
      free(hb);
    }
  }

  uint64_t p = atomic_load(&st.processed);
  printf("fb-processor %s: processed %llu frames, skipped %llu, reconnects %llu, in %.3f s "
         "(%.0f frames/s)\n",
         cfg.id, (unsigned long long)p, (unsigned long long)atomic_load(&st.skipped),
         (unsigned long long)atomic_load(&st.reconnects), secs, secs > 0 ? (double)p / secs : 0);
  printf("RESULT {\"processor_id\":\"%s\",\"processed\":%llu,\"skipped\":%llu,\"reconnects\":%llu,"
         "\"seconds\":%.3f}\n",
         cfg.id, (unsigned long long)p, (unsigned long long)atomic_load(&st.skipped),
         (unsigned long long)atomic_load(&st.reconnects), secs);
  fflush(stdout);
  tk_strlist_free(&cfg.caps);
  return status;
}
