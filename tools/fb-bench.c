/*
 * fb-bench: measures the gateway. throughput: pre-load N frames, spawn the
 * gateway, time until all N reach the processors (their Redis streams, or
 * NATS: core subjects or JetStream stream FRAMES). latency: inject at a rate
 * and time each frame from XADD to arrival. baseline: the same routing as a
 * bare hand-written loop, no gateway: XADDs to the Redis streams, or NATS
 * publishes with the gateway's payload and headers. heartbeats: P processors
 * heartbeating on NATS, and the gateway's CPU use meanwhile.
 * Threads: the main thread does setup, injection, publishing and polling; in
 * latency mode a reader thread (its own Redis connection) consumes the target
 * streams (they share `struct lat_reader`); in core NATS throughput and
 * baseline modes a nats.c thread counts arrivals into the atomics of
 * `struct nats_arrivals`.
 * It DELETES keys (input stream, frames:dlq, the registry) and the JetStream
 * stream FRAMES: use a Redis and a NATS you own.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tk_frame.h"
#include "tk_nats.h"
#include "toolkit.h"

extern char **environ;

#define BENCH_PREFIX            "bench-"
#define BENCH_TARGET_GRP        "frame-processors"
#define BENCH_REGISTRY          "processors:registry"
#define BENCH_CAPS_PREFIX       "processors:capabilities:"
#define BENCH_DLQ               "frames:dlq"
#define BENCH_MAX_PROCS         10000
#define BENCH_POLL_US           5000
#define BENCH_MAX_INFLIGHT      16
#define BENCH_CONSUMER          "bench" /* the spawned gateway's CONSUMER_NAME */
#define BENCH_BASELINE_CONSUMER "bench-baseline"

static const char *const bench_caps[] = {"person", "vehicle", "face"};
#define BENCH_NCAPS (sizeof bench_caps / sizeof bench_caps[0])

enum bench_mode { MODE_THROUGHPUT, MODE_LATENCY, MODE_BASELINE, MODE_HEARTBEATS, MODE_CONSUME };

struct bench_config {
  enum bench_mode mode;
  const char *redis_url_str;
  struct fbci_redis_url redis;
  const char *gateway; /* NULL: none (latency with a running gateway, baseline) */
  const char *gateway_log;
  const char *gateway_log_level; /* LOG_LEVEL of the spawned gateway */
  int64_t frames;
  int64_t processors;
  const char *strategy;
  const char *stream;
  const char *group;
  double timeout_s;
  double rate;
  double seconds;
  double drain_s;
  int64_t batch;
  int64_t inflight;
  int64_t pipeline;
  bool atomic;
  bool keep;
  const char *api_str; /* the gateway's REST API */
  const char *token;
  bool nats;                   /* --transport nats: the bench processors are remote */
  bool null_sink;              /* --transport null: frames are acked and go nowhere */
  bool jetstream;              /* and the gateway publishes into JetStream */
  const char *nats_url;        /* for the gateway and our own connection */
  int64_t interval_ms;         /* heartbeats: each processor's heartbeat interval */
  bool no_heartbeats;          /* heartbeats: a control run, registry only */
  int64_t replicas;            /* throughput: gateways spawned on the one Redis */
  const char *gateway_env[16]; /* --gateway-env KEY=VALUE, passed to each gateway */
  int ngateway_env;
  int64_t work_ms; /* consume: the library processor's work per batch */
  int64_t rounds;  /* consume: library and bare loop, alternating, this many times each */
};

#define BENCH_MAX_REPLICAS 8

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
  (void)sig;
  interrupted = 1;
}

/* ================================================================= helpers */

static void stream_name(char *out, size_t len, int64_t i)
{
  snprintf(out, len, "frames:ready:" BENCH_PREFIX "%lld", (long long)i);
}

/* The bench processors' transport, as RESULT lines name it. */
static const char *transport_name(const struct bench_config *cfg)
{
  return cfg->nats ? "nats" : cfg->null_sink ? "null" : "redis";
}

/* Where the bench processors' frames go, for the log. */
static const char *targets_desc(const struct bench_config *cfg)
{
  return cfg->null_sink   ? "null sinks (counted as acked input)"
         : !cfg->nats     ? "streams"
         : cfg->jetstream ? "subjects, in JetStream stream " FBCI_JS_STREAM
                          : "core NATS subjects";
}

/* Runs a command that must succeed; dies with the error otherwise. */
static redisReply *must(redisContext *c, int argc, const char **argv)
{
  char err[512];
  redisReply *r = fbci_redis_cmd(c, err, sizeof err, argc, argv);
  if (!r) tk_die(1, "Redis: %s", err);
  return r;
}

static void must_drain(redisContext *c, size_t n, const char *what)
{
  char err[512];
  if (fbci_redis_drain(c, n, err, sizeof err) < 0) tk_die(1, "Redis, %s: %s", what, err);
}

static redisContext *connect_or_die(const struct bench_config *cfg, int timeout_ms)
{
  char err[512];
  redisContext *c = fbci_redis_connect(&cfg->redis, timeout_ms, err, sizeof err);
  if (!c) tk_die(1, "%s", err);
  return c;
}

/* Deletes every key matching `pattern` (SCAN + UNLINK). */
static void delete_matching(redisContext *c, const char *pattern)
{
  char cursor[32] = "0";
  do {
    redisReply *r = must(c, 6, (const char *[]){"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) tk_die(1, "Redis: odd SCAN reply");
    snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
    const redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements; i++)
      redisAppendCommand(c, "UNLINK %b", keys->element[i]->str, (size_t)keys->element[i]->len);
    must_drain(c, keys->elements, "UNLINK");
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
}

/* Removes what a previous run (or anyone else!) left: the input stream, the
 * DLQ, the whole registry, every capability set and our target streams. */
static void reset_keys(redisContext *c, const struct bench_config *cfg)
{
  redisReply *r = must(c, 4, (const char *[]){"UNLINK", cfg->stream, BENCH_DLQ, BENCH_REGISTRY});
  freeReplyObject(r);
  delete_matching(c, BENCH_CAPS_PREFIX "*");
  delete_matching(c, "frames:ready:" BENCH_PREFIX "*");
}

/* Writes P registrations straight into the registry in the compat layout and,
 * for Redis processors, creates each target stream with its group, as the
 * gateway would at registration. NATS processors get "transport":"nats" and
 * subject frames.ready.bench-<i>. heartbeat_interval_ms is 0 (not
 * health-tracked, so no processor goes stale during a run) except in
 * heartbeats mode. */
static void register_direct(redisContext *c, const struct bench_config *cfg)
{
  long long hb_ms = cfg->mode == MODE_HEARTBEATS && !cfg->no_heartbeats ? cfg->interval_ms : 0;
  char now[32];
  fbci_iso8601(now, sizeof now, fbci_real_us());
  long long max_queue = (long long)cfg->frames + 1000;
  if (cfg->mode == MODE_LATENCY) max_queue = (long long)(cfg->rate * (cfg->seconds + 60)) + 100000;
  size_t queued = 0;
  for (int64_t i = 0; i < cfg->processors; i++) {
    char id[64], stream[96], json[1024];
    snprintf(id, sizeof id, BENCH_PREFIX "%lld", (long long)i);
    stream_name(stream, sizeof stream, i);
    snprintf(json, sizeof json,
             "{\"id\":\"%s\",\"capabilities\":[\"person\",\"vehicle\",\"face\"],\"capacity\":8,"
             "\"queue\":\"%s\",\"endpoint\":null,\"health_endpoint\":null,"
             "\"metadata\":{\"queue_maxlen\":%lld,\"owner\":\"fb-bench\"},\"transport\":\"%s\","
             "\"subject\":\"frames.ready.%s\",\"result_stream\":\"frames:results\",\"weight\":1,"
             "\"max_queue\":%lld,\"heartbeat_interval_ms\":%lld,\"status\":\"healthy\","
             "\"last_heartbeat\":\"%s\",\"registered_at\":\"%s\",\"frames_routed\":0,"
             "\"queue_depth\":0}",
             id, stream, max_queue,
             cfg->nats        ? "nats"
             : cfg->null_sink ? "null"
                              : "redis",
             id, max_queue, hb_ms, now, now);
    redisAppendCommand(c, "HSET %s %s %s", BENCH_REGISTRY, id, json);
    queued++;
    for (size_t k = 0; k < BENCH_NCAPS; k++) {
      redisAppendCommand(c, "SADD " BENCH_CAPS_PREFIX "%s %s", bench_caps[k], id);
      queued++;
    }
    if (!cfg->nats && !cfg->null_sink) {
      redisAppendCommand(c, "XGROUP CREATE %s " BENCH_TARGET_GRP " $ MKSTREAM", stream);
      queued++;
    }
  }
  must_drain(c, queued, "registering processors");
}

/* Creates the input group at 0 so the gateway (which finds it existing)
 * reads the pre-loaded frames rather than starting at "$". */
static void create_input_group(redisContext *c, const struct bench_config *cfg)
{
  redisReply *r =
      must(c, 6, (const char *[]){"XGROUP", "CREATE", cfg->stream, cfg->group, "0", "MKSTREAM"});
  freeReplyObject(r);
}

/* The detection types the frames carry: all of them match every bench
 * processor's capabilities. Lives for the whole run. */
static struct tk_strlist frame_types;

static void framegen_setup(struct tk_framegen *g, const struct bench_config *cfg)
{
  char err[256];
  if (!frame_types.n &&
      tk_strlist_parse(&frame_types, "person,vehicle,face", 8, err, sizeof err) < 0)
    tk_die(1, "%s", err);
  tk_framegen_init(g, cfg->stream, 16, frame_types.v, frame_types.n, 0, 0, 0);
}

static void preload(redisContext *c, const struct bench_config *cfg)
{
  struct tk_framegen gen;
  static struct tk_frame frame;
  framegen_setup(&gen, cfg);
  int64_t t0 = fbci_mono_us();
  for (int64_t sent = 0; sent < cfg->frames && !interrupted;) {
    int64_t burst = cfg->frames - sent < 1000 ? cfg->frames - sent : 1000;
    int64_t ts = fbci_real_us();
    for (int64_t i = 0; i < burst; i++) {
      tk_framegen_next(&gen, &frame, ts);
      redisAppendCommandArgv(c, frame.argc, frame.argv, frame.argvlen);
    }
    must_drain(c, (size_t)burst, "pre-loading frames");
    sent += burst;
  }
  tk_log("pre-loaded %lld frames into %s in %.2f s", (long long)cfg->frames, cfg->stream,
         (double)(fbci_mono_us() - t0) / 1e6);
}

/* Sum of XLEN over the target streams, and the DLQ length. */
static int64_t targets_len(redisContext *c, const struct bench_config *cfg, int64_t *dlq,
                           int64_t *min_one, int64_t *max_one)
{
  for (int64_t i = 0; i < cfg->processors; i++) {
    char stream[96];
    stream_name(stream, sizeof stream, i);
    redisAppendCommand(c, "XLEN %s", stream);
  }
  redisAppendCommand(c, "XLEN %s", BENCH_DLQ);
  int64_t sum = 0, lo = INT64_MAX, hi = 0;
  for (int64_t i = 0; i <= cfg->processors; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK || !v) tk_die(1, "Redis: %s", c->errstr);
    redisReply *r = v;
    int64_t n = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    if (i < cfg->processors) {
      sum += n;
      if (n < lo) lo = n;
      if (n > hi) hi = n;
    } else if (dlq) {
      *dlq = n;
    }
    freeReplyObject(r);
  }
  if (min_one) *min_one = lo == INT64_MAX ? 0 : lo;
  if (max_one) *max_one = hi;
  return sum;
}

/* The input group's pending and lag (-1 when Redis does not know the lag). */
static void input_group_state(redisContext *c, const struct bench_config *cfg, int64_t *pending,
                              int64_t *lag)
{
  *pending = -1;
  *lag = -1;
  redisReply *r = redisCommand(c, "XINFO GROUPS %s", cfg->stream);
  if (!r) tk_die(1, "Redis: %s", c->errstr);
  if (r->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < r->elements; i++) {
      const redisReply *name = fbci_reply_field(r->element[i], "name");
      if (!name || name->type != REDIS_REPLY_STRING || strcmp(name->str, cfg->group) != 0) continue;
      const redisReply *p = fbci_reply_field(r->element[i], "pending");
      const redisReply *l = fbci_reply_field(r->element[i], "lag");
      if (p && p->type == REDIS_REPLY_INTEGER) *pending = p->integer;
      if (l && l->type == REDIS_REPLY_INTEGER) *lag = l->integer;
    }
  }
  freeReplyObject(r);
}

/* Names the consumers of the input group whose names do not start with
 * `ours`, and returns how many there are. The group is new for every run, so
 * another one means a second reader (a gateway left running on this Redis)
 * took frames and the numbers are worthless. */
static int foreign_consumers(redisContext *c, const struct bench_config *cfg, const char *ours)
{
  redisReply *r = redisCommand(c, "XINFO CONSUMERS %s %s", cfg->stream, cfg->group);
  if (!r) tk_die(1, "Redis: %s", c->errstr);
  int n = 0;
  for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
    const redisReply *name = fbci_reply_field(r->element[i], "name");
    if (!name || name->type != REDIS_REPLY_STRING || strncmp(name->str, ours, strlen(ours)) == 0)
      continue;
    tk_log("another consumer, '%s', read from %s (group %s) during the run: a second gateway "
           "on this Redis? The result does not measure one gateway",
           name->str, cfg->stream, cfg->group);
    n++;
  }
  freeReplyObject(r);
  return n;
}

/* ========================================================= gateway process */

struct gateway_proc {
  pid_t pid;
  int port;
  bool exited;
  int status; /* waitpid status once exited */
};

/* Asks the kernel for a free loopback port. */
static int free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) tk_die(1, "socket: %s", strerror(errno));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
    tk_die(1, "finding a free port: %s", strerror(errno));
  close(fd);
  return ntohs(a.sin_port);
}

static bool env_is_ours(const char *kv, const struct bench_config *cfg)
{
  static const char *const ours[] = {
      "REDIS_URL=",    "REDIS_HOST=",     "REDIS_PORT=",       "REDIS_DB=",  "REDIS_PASSWORD=",
      "NATS_URL=",     "PORT=",           "ROUTING_STRATEGY=", "LOG_LEVEL=", "CONSUMER_NAME=",
      "INPUT_STREAM=", "CONSUMER_GROUP=", "NATS_JETSTREAM="};
  for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
    if (strncmp(kv, ours[i], strlen(ours[i])) == 0) return true;
  for (int i = 0; i < cfg->ngateway_env; i++) {
    size_t key = (size_t)(strchr(cfg->gateway_env[i], '=') - cfg->gateway_env[i]) + 1;
    if (strncmp(kv, cfg->gateway_env[i], key) == 0) return true;
  }
  return false;
}

/* Starts the gateway with our settings in its environment. The environment is
 * built before fork(), and exec failures come back over a CLOEXEC pipe, so the
 * child only calls async-signal-safe functions. */
static void spawn_gateway(struct gateway_proc *g, const struct bench_config *cfg, const char *name)
{
  memset(g, 0, sizeof *g);
  g->port = free_port();
  size_t n = 0;
  while (environ[n])
    n++;
  char **envp = calloc(n + 16 + (size_t)cfg->ngateway_env, sizeof *envp);
  char vars[10][512];
  if (!envp) tk_die(1, "out of memory");
  size_t e = 0;
  for (size_t i = 0; i < n; i++)
    if (!env_is_ours(environ[i], cfg)) envp[e++] = environ[i];
  for (int i = 0; i < cfg->ngateway_env; i++)
    envp[e++] = (char *)cfg->gateway_env[i];
  snprintf(vars[0], sizeof vars[0], "REDIS_URL=%s", cfg->redis_url_str);
  /* NATS only when the run needs it: otherwise a missing NATS would make
   * the gateway not-ready, and its reconnects would cost CPU. */
  bool nats = cfg->nats || cfg->mode == MODE_HEARTBEATS;
  snprintf(vars[1], sizeof vars[1], "NATS_URL=%s", nats ? cfg->nats_url : "none");
  snprintf(vars[2], sizeof vars[2], "PORT=%d", g->port);
  snprintf(vars[3], sizeof vars[3], "ROUTING_STRATEGY=%s", cfg->strategy);
  snprintf(vars[4], sizeof vars[4], "LOG_LEVEL=%s", cfg->gateway_log_level);
  snprintf(vars[5], sizeof vars[5], "CONSUMER_NAME=%s", name);
  snprintf(vars[6], sizeof vars[6], "INPUT_STREAM=%s", cfg->stream);
  snprintf(vars[7], sizeof vars[7], "CONSUMER_GROUP=%s", cfg->group);
  snprintf(vars[8], sizeof vars[8], "NATS_JETSTREAM=%d", cfg->jetstream ? 1 : 0);
  for (int i = 0; i < 9; i++)
    envp[e++] = vars[i];
  envp[e] = NULL;

  int logfd = -1;
  if (cfg->gateway_log) {
    logfd = open(cfg->gateway_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) tk_die(1, "--gateway-log %s: %s", cfg->gateway_log, strerror(errno));
  }
  int pfd[2];
  if (pipe2(pfd, O_CLOEXEC) < 0) tk_die(1, "pipe: %s", strerror(errno));
  char *const argv[] = {(char *)cfg->gateway, NULL};
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) tk_die(1, "fork: %s", strerror(errno));
  if (pid == 0) {
    /* If fb-bench dies, the gateway gets SIGTERM rather than running on. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    if (logfd >= 0) {
      dup2(logfd, STDOUT_FILENO);
      dup2(logfd, STDERR_FILENO);
    }
    execve(cfg->gateway, argv, envp);
    int err = errno;
    ssize_t w = write(pfd[1], &err, sizeof err);
    (void)w;
    _exit(127);
  }
  close(pfd[1]);
  if (logfd >= 0) close(logfd);
  int child_err = 0;
  ssize_t r;
  do {
    r = read(pfd[0], &child_err, sizeof child_err);
  } while (r < 0 && errno == EINTR);
  close(pfd[0]);
  free(envp);
  if (r == (ssize_t)sizeof child_err) {
    waitpid(pid, NULL, 0);
    tk_die(1, "cannot run the gateway %s: %s", cfg->gateway, strerror(child_err));
  }
  g->pid = pid;
}

/* Returns true (and records the status) once the gateway has exited. */
static bool gateway_exited(struct gateway_proc *g)
{
  if (g->exited) return true;
  int st;
  if (waitpid(g->pid, &st, WNOHANG) == g->pid) {
    g->exited = true;
    g->status = st;
  }
  return g->exited;
}

static void describe_exit(int st, char *out, size_t len)
{
  if (WIFEXITED(st))
    snprintf(out, len, "exit status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(out, len, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else
    snprintf(out, len, "status 0x%x", st);
}

/* Peak resident set size in kB (VmHWM), or -1. */
static long peak_rss_kb(pid_t pid)
{
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kb = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "VmHWM:", 6) == 0) {
      char *end = NULL;
      long v = strtol(line + 6, &end, 10);
      if (end != line + 6) kb = v;
      break;
    }
  }
  fclose(f);
  return kb;
}

/* utime + stime of `pid` in clock ticks (/proc/<pid>/stat fields 14 and
 * 15), or -1. */
static long long cpu_ticks(pid_t pid)
{
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name may hold spaces and ')': fields start after the last ')'. */
  const char *p = strrchr(buf, ')');
  if (!p) return -1;
  p++;
  long long v[2] = {-1, -1};
  for (int field = 3; field <= 15 && *p; field++) {
    while (*p == ' ')
      p++;
    const char *end = strchr(p, ' ');
    if (!end) end = p + strlen(p);
    if (field >= 14) {
      char num[32];
      size_t len = (size_t)(end - p);
      if (len == 0 || len >= sizeof num) return -1;
      memcpy(num, p, len);
      num[len] = '\0';
      int64_t x;
      if (fbci_parse_i64(num, 0, INT64_MAX, &x) < 0) return -1;
      v[field - 14] = x;
    }
    p = end;
  }
  return v[0] < 0 || v[1] < 0 ? -1 : v[0] + v[1];
}

/* The gateway's /metrics as text (caller frees), or NULL. */
static char *fetch_metrics(const char *api)
{
  char err[256];
  struct fbci_http_resp resp;
  if (fbci_http_request(api, "GET", "/metrics", NULL, NULL, 5000, &resp, err, sizeof err) < 0)
    return NULL;
  char *text = resp.status == 200 ? strdup(resp.body) : NULL;
  fbci_http_resp_free(&resp);
  return text;
}

/* The value of the sample `name` (with its labels, e.g.
 * frame_buffer_processors{status="healthy"}) in Prometheus text, or -1. */
static double metric_value(const char *text, const char *name)
{
  size_t n = strlen(name);
  for (const char *line = text; line && *line;) {
    if (strncmp(line, name, n) == 0 && line[n] == ' ') {
      double v;
      char num[64];
      const char *end = strchr(line + n + 1, '\n');
      size_t len = end ? (size_t)(end - line - n - 1) : strlen(line + n + 1);
      if (len >= sizeof num) return -1;
      memcpy(num, line + n + 1, len);
      num[len] = '\0';
      return tk_parse_double(num, -1e300, 1e300, &v) == 0 ? v : -1;
    }
    line = strchr(line, '\n');
    if (line) line++;
  }
  return -1;
}

/* SIGTERM, then up to 10 s for a clean exit, then SIGKILL. */
static void stop_gateway(struct gateway_proc *g)
{
  if (!g->pid || gateway_exited(g)) return;
  int64_t t0 = fbci_mono_us();
  kill(g->pid, SIGTERM);
  while (!gateway_exited(g) && fbci_mono_us() - t0 < 10000000)
    tk_sleep_us(5000);
  char how[96];
  if (!g->exited) {
    tk_log("the gateway did not exit 10 s after SIGTERM; killing it");
    kill(g->pid, SIGKILL);
    waitpid(g->pid, &g->status, 0);
    g->exited = true;
    return;
  }
  describe_exit(g->status, how, sizeof how);
  tk_log("gateway stopped after SIGTERM in %.2f s (%s)", (double)(fbci_mono_us() - t0) / 1e6, how);
}

/* =========================================================== NATS arrivals */

/* Frames that reached NATS, for a throughput run with --transport nats.
 * Core: a subscription to frames.ready.> whose callback (one nats.c thread)
 * counts into the atomics and checks every 64th frame against the
 * remote-frame contract (docs/protocol.md: Frames out). JetStream: the message count of
 * stream FRAMES, which the main thread asks for; no consumer takes them, so they stay until purged.
 */
struct nats_arrivals {
  natsConnection *nc;
  jsCtx *js;
  natsSubscription *sub;
  int64_t nprocs;
  atomic_llong count;
  atomic_llong *per_proc; /* by the <i> of frames.ready.bench-<i> */
  atomic_llong checked;
  atomic_llong bad;
  atomic_bool have_why;
  char why[300]; /* the first bad frame's problem: written once, then have_why */
};

/* Returns NULL when `m` is a remote frame as docs/protocol.md (Frames out) has it: a JSON
 * object of strings with the processor defaults, Nats-Msg-Id = frame_id,
 * and a traceparent carrying trace_context's trace_id. Else the problem,
 * written into `why`. */
static const char *check_remote_frame(natsMsg *m, char *why, size_t len)
{
  const char *msg_id = NULL, *tp = NULL, *problem = NULL;
  json_t *doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0, NULL);
  const char *key;
  json_t *v;
  if (natsMsgHeader_Get(m, "Nats-Msg-Id", &msg_id) != NATS_OK) {
    problem = "no Nats-Msg-Id header";
    goto out;
  }
  if (!json_is_object(doc)) {
    problem = "the payload is not a JSON object";
    goto out;
  }
  json_object_foreach(doc, key, v)
  {
    if (!json_is_string(v)) {
      snprintf(why, len, "field %s is not a string", key);
      problem = why;
      goto out;
    }
  }
  const char *fid = json_string_value(json_object_get(doc, "frame_id"));
  if (!fid || strcmp(fid, msg_id) != 0) {
    snprintf(why, len, "Nats-Msg-Id '%s' is not frame_id '%s'", msg_id, fid ? fid : "(none)");
    problem = why;
    goto out;
  }
  if (!json_object_get(doc, "priority") || !json_object_get(doc, "storage_path") ||
      !json_object_get(doc, "storage_backend")) {
    problem = "priority, storage_path or storage_backend missing";
    goto out;
  }
  if (natsMsgHeader_Get(m, "traceparent", &tp) != NATS_OK) {
    problem = "no traceparent header (the frame has a trace_context)";
    goto out;
  }
  json_t *tc = json_loads(json_string_value(json_object_get(doc, "trace_context")), 0, NULL);
  const char *tid = json_string_value(json_object_get(tc, "trace_id"));
  if (strlen(tp) != 55 || strncmp(tp, "00-", 3) != 0 || !tid || strncmp(tp + 3, tid, 32) != 0) {
    snprintf(why, len, "traceparent '%s' does not carry trace_id %s", tp, tid ? tid : "(none)");
    problem = why;
  }
  json_decref(tc);
out:
  json_decref(doc);
  if (problem && problem != why) snprintf(why, len, "%s", problem);
  return problem ? why : NULL;
}

/* Counts a bad frame; keeps the first one's problem. One thread at a time. */
static void note_bad(struct nats_arrivals *a, const char *why)
{
  atomic_fetch_add(&a->bad, 1);
  if (!atomic_load(&a->have_why)) {
    snprintf(a->why, sizeof a->why, "%s", why);
    atomic_store(&a->have_why, true);
  }
}

/* A nats.c thread, one message at a time: count, sometimes check. */
static void on_remote_frame(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
  (void)nc;
  (void)sub;
  struct nats_arrivals *a = closure;
  long long n = atomic_fetch_add(&a->count, 1);
  const char *subject = natsMsg_GetSubject(m);
  const char *prefix = "frames.ready." BENCH_PREFIX;
  int64_t i;
  if (strncmp(subject, prefix, strlen(prefix)) == 0 &&
      fbci_parse_i64(subject + strlen(prefix), 0, a->nprocs - 1, &i) == 0)
    atomic_fetch_add(&a->per_proc[i], 1);
  if (n % 64 == 0) {
    char why[300];
    atomic_fetch_add(&a->checked, 1);
    if (check_remote_frame(m, why, sizeof why)) note_bad(a, why);
  }
  natsMsg_Destroy(m);
}

/* Connects and gets ready to count, before the gateway starts: deletes
 * stream FRAMES (JetStream: so the count starts at 0, the gateway creates it
 * again; core: it would store every core frame too, since it takes
 * frames.ready.>) and, for core, subscribes. Dies on failure. */
static void nats_arrivals_start(struct nats_arrivals *a, const struct bench_config *cfg)
{
  char err[512];
  memset(a, 0, sizeof *a);
  a->nprocs = cfg->processors;
  a->per_proc = calloc((size_t)cfg->processors, sizeof *a->per_proc);
  if (!a->per_proc) tk_die(1, "out of memory");
  a->nc = tk_nats_connect(cfg->nats_url, "fb-bench", false, err, sizeof err);
  if (!a->nc) tk_die(1, "%s", err);
  jsErrCode jerr = 0;
  natsStatus s = natsConnection_JetStream(&a->js, a->nc, NULL);
  if (s == NATS_OK) s = js_DeleteStream(a->js, FBCI_JS_STREAM, NULL, &jerr);
  if (s == NATS_OK)
    tk_log("deleted JetStream stream " FBCI_JS_STREAM "%s",
           cfg->jetstream ? (cfg->mode == MODE_BASELINE ? " (created again for the run)"
                                                        : " (the gateway creates it again)")
                          : ": it would have stored every core frame as well");
  else if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
    tk_die(1, "deleting JetStream stream " FBCI_JS_STREAM ": %s (error %d)",
           fbci_nats_err(s, err, sizeof err), (int)jerr);
  if (cfg->jetstream) return;
  jsCtx_Destroy(a->js);
  a->js = NULL; /* core: nats_arrived() counts the subscription's frames */
  s = natsConnection_Subscribe(&a->sub, a->nc, "frames.ready.>", on_remote_frame, a);
  if (s == NATS_OK) s = natsSubscription_SetPendingLimits(a->sub, -1, -1);
  if (s == NATS_OK) s = natsConnection_Flush(a->nc);
  if (s != NATS_OK)
    tk_die(1, "subscribing to frames.ready.>: %s", fbci_nats_err(s, err, sizeof err));
}

/* Frames that have arrived so far. Main thread. */
static int64_t nats_arrived(struct nats_arrivals *a)
{
  if (!a->js) return atomic_load(&a->count);
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, a->js, FBCI_JS_STREAM, NULL, &jerr);
  if (s != NATS_OK) return 0; /* not created yet */
  int64_t n = (int64_t)si->State.Msgs;
  jsStreamInfo_Destroy(si);
  return n;
}

/* After the run: the count, the fewest and most frames one processor got
 * and, for JetStream, a check of up to 64 stored frames spread over the
 * stream. Main thread. */
static int64_t nats_arrivals_final(struct nats_arrivals *a, int64_t *lo, int64_t *hi)
{
  int64_t n = nats_arrived(a);
  *lo = INT64_MAX;
  *hi = 0;
  if (!a->js) {
    for (int64_t i = 0; i < a->nprocs; i++) {
      int64_t k = atomic_load(&a->per_proc[i]);
      if (k < *lo) *lo = k;
      if (k > *hi) *hi = k;
    }
    return n;
  }
  jsOptions o;
  jsOptions_Init(&o);
  o.Stream.Info.SubjectsFilter = "frames.ready.>";
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  if (js_GetStreamInfo(&si, a->js, FBCI_JS_STREAM, &o, &jerr) != NATS_OK) {
    *lo = 0;
    return n;
  }
  int64_t listed = si->State.Subjects ? si->State.Subjects->Count : 0;
  for (int64_t i = 0; i < listed; i++) {
    int64_t k = (int64_t)si->State.Subjects->List[i].Msgs;
    if (k < *lo) *lo = k;
    if (k > *hi) *hi = k;
  }
  if (listed < a->nprocs) *lo = 0;
  uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  uint64_t step = last > first ? (last - first) / 63 + 1 : 1;
  for (uint64_t seq = first; seq && seq <= last; seq += step) {
    natsMsg *m = NULL;
    char why[300];
    if (js_GetMsg(&m, a->js, FBCI_JS_STREAM, seq, NULL, &jerr) != NATS_OK) continue;
    atomic_fetch_add(&a->checked, 1);
    if (check_remote_frame(m, why, sizeof why)) note_bad(a, why);
    natsMsg_Destroy(m);
  }
  return n;
}

/* Logs the checked frames that break the remote-frame contract, if any, and
 * returns whether there were. Main thread, after nats_arrivals_final(). */
static bool nats_arrivals_bad(struct nats_arrivals *a)
{
  if (!atomic_load(&a->bad)) return false;
  tk_log("%lld of %lld checked remote frames break docs/protocol.md (Frames out); the "
         "first: %s",
         (long long)atomic_load(&a->bad), (long long)atomic_load(&a->checked), a->why);
  return true;
}

/* Unsubscribes, purges FRAMES unless `keep`, and disconnects. */
static void nats_arrivals_stop(struct nats_arrivals *a, bool keep)
{
  char err[256];
  if (a->sub) natsSubscription_Unsubscribe(a->sub);
  natsSubscription_Destroy(a->sub);
  if (a->js && !keep) {
    jsErrCode jerr = 0;
    natsStatus s = js_PurgeStream(a->js, FBCI_JS_STREAM, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND)
      tk_log("purging JetStream stream " FBCI_JS_STREAM ": %s", fbci_nats_err(s, err, sizeof err));
  }
  jsCtx_Destroy(a->js);
  fbci_nats_close(a->nc, 1000);
  free(a->per_proc);
  memset(a, 0, sizeof *a);
}

/* The length of the DLQ. */
static int64_t dlq_len(redisContext *c)
{
  redisReply *r = must(c, 2, (const char *[]){"XLEN", BENCH_DLQ});
  int64_t n = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  freeReplyObject(r);
  return n;
}

/* ============================================================== throughput */

/* The CPU seconds Redis has used (INFO cpu: used_cpu_sys + used_cpu_user),
 * or -1. */
static double redis_cpu_s(redisContext *c)
{
  redisReply *r = redisCommand(c, "INFO cpu");
  double total = -1;
  if (r && r->type == REDIS_REPLY_STRING) {
    const char *keys[] = {"used_cpu_sys:", "used_cpu_user:"};
    total = 0;
    for (int k = 0; k < 2; k++) {
      const char *at = strstr(r->str, keys[k]);
      if (!at) {
        total = -1;
        break;
      }
      total += strtod(at + strlen(keys[k]), NULL);
    }
  }
  if (r) freeReplyObject(r);
  return total;
}

/* The gateways' CPU time, added up, in clock ticks; -1 when one is gone. */
static long long gateways_cpu_ticks(const struct gateway_proc *gws, int n)
{
  long long sum = 0;
  for (int k = 0; k < n; k++) {
    long long t = cpu_ticks(gws[k].pid);
    if (t < 0) return -1;
    sum += t;
  }
  return sum;
}

static int run_throughput(const struct bench_config *cfg)
{
  redisContext *c = connect_or_die(cfg, 10000);
  struct nats_arrivals na = {0};
  if (cfg->nats) nats_arrivals_start(&na, cfg);
  reset_keys(c, cfg);
  register_direct(c, cfg);
  create_input_group(c, cfg);
  preload(c, cfg);
  if (interrupted) tk_die(130, "interrupted");

  struct gateway_proc gws[BENCH_MAX_REPLICAS];
  const int nrep = (int)cfg->replicas;
  double redis_cpu0 = redis_cpu_s(c), redis_cpu1 = -1;
  const int64_t t0 = fbci_mono_us();
  for (int k = 0; k < nrep; k++) {
    char name[32];
    if (nrep == 1)
      snprintf(name, sizeof name, BENCH_CONSUMER);
    else
      snprintf(name, sizeof name, BENCH_CONSUMER "-%d", k + 1);
    spawn_gateway(&gws[k], cfg, name);
    tk_log("spawned %s as %s (pid %d, port %d, strategy %s)", cfg->gateway, name, (int)gws[k].pid,
           gws[k].port, cfg->strategy);
  }
  struct gateway_proc *gw = &gws[0];
  tk_log("waiting for %lld frames on %lld %s", (long long)cfg->frames, (long long)cfg->processors,
         targets_desc(cfg));

  int64_t t_first = 0, t_routed = 0, t_acked = 0, sum = 0, dlq = 0, pending = -1, lag = -1;
  long long t_routed_ticks = -1;
  int64_t next_report = t0 + 1000000;
  const char *error = NULL;
  for (;;) {
    int64_t now = fbci_mono_us();
    input_group_state(c, cfg, &pending, &lag);
    if (cfg->nats) {
      sum = nats_arrived(&na);
      dlq = dlq_len(c);
    } else if (cfg->null_sink) { /* nothing arrives anywhere: what the input acked */
      dlq = dlq_len(c);
      sum = lag >= 0 && pending >= 0 ? cfg->frames - lag - pending - dlq : 0;
    } else {
      sum = targets_len(c, cfg, &dlq, NULL, NULL);
    }
    if (sum > 0 && !t_first) t_first = now;
    if (sum + dlq >= cfg->frames && !t_routed) {
      t_routed = now;
      t_routed_ticks = gateways_cpu_ticks(gws, nrep);
      redis_cpu1 = redis_cpu_s(c);
    }
    if (pending == 0 && lag == 0 && !t_acked) t_acked = now;
    if (t_routed && (t_acked || now - t_routed > 2000000)) break;
    for (int k = 0; k < nrep && !error; k++)
      if (gateway_exited(&gws[k])) {
        error = "gateway_exited";
        gw = &gws[k];
      }
    if (error) break;
    if (interrupted) {
      error = "interrupted";
      break;
    }
    if ((double)(now - t0) > cfg->timeout_s * 1e6) {
      error = "timeout";
      break;
    }
    if (now >= next_report) {
      tk_log("%lld/%lld routed (dlq %lld, input pending %lld, lag %lld)", (long long)sum,
             (long long)cfg->frames, (long long)dlq, (long long)pending, (long long)lag);
      next_report += 1000000;
    }
    tk_sleep_us(BENCH_POLL_US);
  }
  long rss = -1;
  for (int k = 0; k < nrep; k++) {
    long r = gws[k].exited ? -1 : peak_rss_kb(gws[k].pid);
    if (r > rss) rss = r;
  }
  /* Remote frames the gateways could not hand to NATS (retried later). */
  double nats_errors = -1;
  for (int k = 0; cfg->nats && k < nrep; k++) {
    if (gws[k].exited) continue;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", gws[k].port);
    char *m = fetch_metrics(url);
    double v = m ? metric_value(m, "frame_buffer_nats_publish_errors_total") : -1;
    if (v >= 0) nats_errors = (nats_errors < 0 ? 0 : nats_errors) + v;
    free(m);
  }
  /* Their CPU time up to the last frame (a sample then, or now if it came late). */
  long long ticks = t_routed_ticks >= 0 ? t_routed_ticks : gateways_cpu_ticks(gws, nrep);
  double cpu_s = ticks >= 0 ? (double)ticks / (double)sysconf(_SC_CLK_TCK) : -1;
  if (redis_cpu1 < 0) redis_cpu1 = redis_cpu_s(c);
  double redis_cpu = redis_cpu0 >= 0 && redis_cpu1 >= 0 ? redis_cpu1 - redis_cpu0 : -1;
  char how[96] = "";
  if (gw->exited) describe_exit(gw->status, how, sizeof how);
  for (int k = 0; k < nrep; k++)
    stop_gateway(&gws[k]);

  int64_t lo = 0, hi = 0;
  if (cfg->nats) {
    sum = nats_arrivals_final(&na, &lo, &hi);
    dlq = dlq_len(c);
  } else if (cfg->null_sink) {
    input_group_state(c, cfg, &pending, &lag);
    dlq = dlq_len(c);
    sum = lag >= 0 && pending >= 0 ? cfg->frames - lag - pending - dlq : 0;
  } else {
    sum = targets_len(c, cfg, &dlq, &lo, &hi);
  }
  int status = 0;
  const char *transport = transport_name(cfg), *js = cfg->jetstream ? "true" : "false";
  if (!error && foreign_consumers(c, cfg, BENCH_CONSUMER) > 0) error = "foreign_consumer";
  if (cfg->nats && nats_arrivals_bad(&na)) status = 1;
  if (error) {
    if (strcmp(error, "gateway_exited") == 0)
      tk_log("the gateway exited (%s) after %.2f s with %lld of %lld frames routed", how,
             (double)(fbci_mono_us() - t0) / 1e6, (long long)sum, (long long)cfg->frames);
    else if (strcmp(error, "foreign_consumer") == 0)
      tk_log("run void: stop the other reader of %s and run again", cfg->stream);
    else
      tk_log("%s after %.1f s: only %lld of %lld frames reached the %lld target streams (dlq %lld, "
             "input pending %lld, lag %lld)",
             error, (double)(fbci_mono_us() - t0) / 1e6, (long long)sum, (long long)cfg->frames,
             (long long)cfg->processors, (long long)dlq, (long long)pending, (long long)lag);
    printf("RESULT {\"mode\":\"throughput\",\"transport\":\"%s\",\"jetstream\":%s,\"error\":\"%s\","
           "\"frames\":%lld,\"routed\":%lld,\"dlq\":%lld}\n",
           transport, js, error, (long long)cfg->frames, (long long)sum, (long long)dlq);
    status = 1;
  } else {
    double secs = (double)(t_routed - t0) / 1e6;
    double startup = (double)(t_first - t0) / 1e6;
    double steady = t_routed > t_first ? (double)(t_routed - t_first) / 1e6 : secs;
    double fps = secs > 0 ? (double)cfg->frames / secs : 0;
    double steady_fps = steady > 0 ? (double)cfg->frames / steady : 0;
    printf("throughput: %lld frames to %lld processors (%s, %s%s) by %d gateway%s in %.3f s from "
           "spawn: %.0f frames/s\n",
           (long long)cfg->frames, (long long)cfg->processors, cfg->strategy, transport,
           cfg->jetstream ? " JetStream" : "", nrep, nrep > 1 ? "s" : "", secs, fps);
    printf("  first frame routed %.3f s after spawn; from then on %.0f frames/s\n", startup,
           steady_fps);
    if (t_acked)
      printf("  input fully acked (pending 0, lag 0) %.3f s after spawn\n",
             (double)(t_acked - t0) / 1e6);
    else
      printf("  input NOT fully acked 2 s after the last frame (pending %lld, lag %lld)\n",
             (long long)pending, (long long)lag);
    printf("  per processor: min %lld, max %lld frames; dlq %lld; gateway peak RSS %ld kB, CPU "
           "%.2f s (%.0f%% of one core until the last frame); Redis CPU %.2f s (%.0f%%)\n",
           (long long)lo, (long long)hi, (long long)dlq, rss, cpu_s,
           secs > 0 ? cpu_s / secs * 100 : 0, redis_cpu, secs > 0 ? redis_cpu / secs * 100 : 0);
    if (cfg->nats)
      printf("  %lld frames arrived on NATS; %lld checked against docs/protocol.md "
             "(Frames out), %lld bad; "
             "gateway publish errors %.0f\n",
             (long long)sum, (long long)atomic_load(&na.checked), (long long)atomic_load(&na.bad),
             nats_errors);
    if (sum < cfg->frames) {
      tk_log("%lld frames went to the DLQ instead of a processor", (long long)(cfg->frames - sum));
      status = 1;
    } else if (sum > cfg->frames) {
      tk_log("%lld frames arrived more than once", (long long)(sum - cfg->frames));
      status = 1;
    }
    printf(
        "RESULT {\"mode\":\"throughput\",\"transport\":\"%s\",\"jetstream\":%s,\"strategy\":\"%s\","
        "\"frames\":%lld,\"processors\":%lld,\"seconds\":%.3f,\"frames_per_s\":%.0f,"
        "\"startup_s\":%.3f,\"steady_frames_per_s\":%.0f,\"acked_s\":%.3f,\"dlq\":%lld,"
        "\"min_per_processor\":%lld,\"max_per_processor\":%lld,\"rss_kb\":%ld,\"cpu_s\":%.2f,"
        "\"replicas\":%d,\"redis_cpu_s\":%.2f}\n",
        transport, js, cfg->strategy, (long long)cfg->frames, (long long)cfg->processors, secs, fps,
        startup, steady_fps, t_acked ? (double)(t_acked - t0) / 1e6 : -1.0, (long long)dlq,
        (long long)lo, (long long)hi, rss, cpu_s, nrep, redis_cpu);
  }
  if (cfg->nats) nats_arrivals_stop(&na, cfg->keep);
  if (!cfg->keep) reset_keys(c, cfg);
  redisFree(c);
  return status;
}

/* ================================================================ baseline */

#define BENCH_JS_ACK_WAIT_MS    5000  /* as the gateway waits for a batch's JetStream acks */
#define BENCH_JS_MAX_PENDING    65536 /* JetStream publishes awaiting their ack, as the gateway */
#define BENCH_DEFAULTS_JSON_MAX 128   /* the defaults below as JSON members */

/* An argv under construction; `cap` is checked by the caller. */
struct argvec {
  const char **v;
  size_t *len;
  int n;
};

static void push(struct argvec *a, const char *s, size_t len)
{
  a->v[a->n] = s;
  a->len[a->n] = len;
  a->n++;
}

/* The fields the gateway adds for processors when a frame lacks them (docs/protocol.md:
 * Frames out), in its order. */
static const struct {
  const char *name, *value;
} frame_defaults[] = {{"priority", "0"}, {"storage_path", ""}, {"storage_backend", "redis"}};
#define BENCH_NDEFAULTS (sizeof frame_defaults / sizeof frame_defaults[0])

/* The bit of the default that field `name` supplies, or 0. */
static unsigned default_bit(const redisReply *name)
{
  for (size_t d = 0; d < BENCH_NDEFAULTS; d++)
    if (strcmp(name->str, frame_defaults[d].name) == 0) return 1u << d;
  return 0;
}

/* The bare loop: where the next frame goes (the processors in turn) and what
 * sending one takes, by transport. Main thread. */
struct baseline {
  const struct bench_config *cfg;
  redisContext *c;
  int64_t next; /* the processor of the next frame */
  /* Redis: one XADD a frame to frames:ready:bench-<i> */
  char (*streams)[96];
  const char **argv; /* 6 words of command, at most 100 field pairs, 3 defaults */
  size_t *argvlen;
  char maxq[24];
  /* NATS: one publish a frame on frames.ready.bench-<i> */
  natsConnection *nc; /* our own, as the gateway has its own */
  jsCtx *js;          /* NULL: core NATS */
  char (*subjects)[64];
  char *payload; /* one frame's JSON, reused */
  size_t payload_cap;
};

/* Queues the XADD of one entry's fields to the next stream in turn, with the
 * defaults the gateway adds. */
static void baseline_xadd(struct baseline *b, const redisReply *fields)
{
  struct argvec a = {.v = b->argv, .len = b->argvlen};
  const char *target = b->streams[b->next];
  b->next = (b->next + 1) % b->cfg->processors;
  push(&a, "XADD", 4);
  push(&a, target, strlen(target));
  push(&a, "MAXLEN", 6);
  push(&a, "~", 1);
  push(&a, b->maxq, strlen(b->maxq));
  push(&a, "*", 1);
  unsigned have = 0;
  for (size_t k = 0; k + 1 < fields->elements; k += 2) {
    const redisReply *f = fields->element[k], *val = fields->element[k + 1];
    have |= default_bit(f);
    push(&a, f->str, (size_t)f->len);
    push(&a, val->str, (size_t)val->len);
  }
  for (size_t d = 0; d < BENCH_NDEFAULTS; d++)
    if (!(have & 1u << d)) {
      push(&a, frame_defaults[d].name, strlen(frame_defaults[d].name));
      push(&a, frame_defaults[d].value, strlen(frame_defaults[d].value));
    }
  redisAppendCommandArgv(b->c, a.n, a.v, a.len);
}

/* Writes `s` as a JSON string at `o`, escaped as the gateway escapes, and
 * returns the end. The caller makes room for 6 bytes a byte plus 2. */
static char *put_json_string(char *o, const char *s, size_t n)
{
  static const char hex[] = "0123456789abcdef";
  size_t run = 0; /* bytes copied verbatim in one go */
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') {
      run++;
      continue;
    }
    memcpy(o, s + i - run, run);
    o += run;
    run = 0;
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
      memcpy(o, "u00", 3);
      o[3] = hex[c >> 4];
      o[4] = hex[c & 15];
      o += 5;
      break;
    }
  }
  memcpy(o, s + n - run, run);
  o += run;
  *o++ = '"';
  return o;
}

/* One entry's frame as the gateway publishes it (docs/protocol.md:
 * Frames out): a JSON object of its fields, then the defaults it lacks, in
 * b->payload. Returns the length. */
static size_t frame_json(struct baseline *b, const redisReply *fields)
{
  size_t need = 2 + BENCH_DEFAULTS_JSON_MAX;
  for (size_t k = 0; k < fields->elements; k++)
    need += 6 * (size_t)fields->element[k]->len + 4;
  if (need > b->payload_cap) {
    char *p = realloc(b->payload, need);
    if (!p) tk_die(1, "out of memory");
    b->payload = p;
    b->payload_cap = need;
  }
  char *o = b->payload;
  *o++ = '{';
  unsigned have = 0;
  for (size_t k = 0; k + 1 < fields->elements; k += 2) {
    const redisReply *f = fields->element[k], *val = fields->element[k + 1];
    have |= default_bit(f);
    if (k) *o++ = ',';
    o = put_json_string(o, f->str, (size_t)f->len);
    *o++ = ':';
    o = put_json_string(o, val->str, (size_t)val->len);
  }
  for (size_t d = 0; d < BENCH_NDEFAULTS; d++)
    if (!(have & 1u << d)) {
      *o++ = ',';
      o = put_json_string(o, frame_defaults[d].name, strlen(frame_defaults[d].name));
      *o++ = ':';
      o = put_json_string(o, frame_defaults[d].value, strlen(frame_defaults[d].value));
    }
  *o++ = '}';
  return (size_t)(o - b->payload);
}

/* The string value of member `key` in the JSON object text `obj`, and its
 * length; NULL when there is none. A plain search, not a parser: enough for
 * the trace_context of the frames fb-bench writes. */
static const char *json_member_str(const char *obj, size_t n, const char *key, size_t *len)
{
  const char *end = obj + n;
  size_t kn = strlen(key);
  for (const char *p = obj; (p = memmem(p, (size_t)(end - p), key, kn)); p += kn) {
    if (p == obj || p[-1] != '"' || p + kn >= end || p[kn] != '"') continue;
    const char *q = p + kn + 1;
    while (q < end && (*q == ' ' || *q == ':'))
      q++;
    if (q == end || *q != '"') return NULL;
    const char *close = memchr(q + 1, '"', (size_t)(end - q - 1));
    if (!close) return NULL;
    *len = (size_t)(close - q - 1);
    return q + 1;
  }
  return NULL;
}

/* The traceparent the gateway sends with a frame: its traceparent field, or
 * one made of trace_context's trace_id and span_id. False when neither. */
static bool frame_traceparent(const redisReply *fields, char *out, size_t n)
{
  const redisReply *tp = fbci_reply_field(fields, "traceparent");
  if (tp && tp->type == REDIS_REPLY_STRING && (size_t)tp->len < n) {
    memcpy(out, tp->str, (size_t)tp->len + 1);
    return true;
  }
  const redisReply *tc = fbci_reply_field(fields, "trace_context");
  if (!tc || tc->type != REDIS_REPLY_STRING) return false;
  size_t tl = 0, sl = 0;
  const char *tid = json_member_str(tc->str, (size_t)tc->len, "trace_id", &tl);
  const char *sid = json_member_str(tc->str, (size_t)tc->len, "span_id", &sl);
  if (!tid || !sid || tl != 32 || sl != 16) return false;
  snprintf(out, n, "00-%.32s-%.16s-01", tid, sid);
  return true;
}

/* Publishes one entry's frame on the next subject in turn, with the
 * gateway's payload and headers: core NATS, or JetStream asynchronously. */
static void baseline_publish(struct baseline *b, const redisReply *fields)
{
  size_t len = frame_json(b, fields);
  const redisReply *id = fbci_reply_field(fields, "frame_id");
  const char *subject = b->subjects[b->next];
  b->next = (b->next + 1) % b->cfg->processors;
  char tp[128], err[256];
  natsMsg *msg = NULL;
  natsStatus s = natsMsg_Create(&msg, subject, NULL, b->payload, (int)len);
  if (s == NATS_OK)
    s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id && id->type == REDIS_REPLY_STRING ? id->str : "");
  if (s == NATS_OK && frame_traceparent(fields, tp, sizeof tp))
    s = natsMsgHeader_Set(msg, "traceparent", tp);
  if (s == NATS_OK)
    s = b->js ? js_PublishMsgAsync(b->js, &msg, NULL) /* takes msg on success */
              : natsConnection_PublishMsg(b->nc, msg);
  natsMsg_Destroy(msg);
  if (s != NATS_OK) tk_die(1, "publishing on %s: %s", subject, fbci_nats_err(s, err, sizeof err));
}

/* JetStream: waits for the acks of the batch's publishes, as the gateway does
 * before its XACK. */
static void baseline_js_complete(struct baseline *b)
{
  char err[256];
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = BENCH_JS_ACK_WAIT_MS;
  natsStatus s = js_PublishAsyncComplete(b->js, &po);
  if (s != NATS_OK)
    tk_die(1, "JetStream acks did not all arrive: %s", fbci_nats_err(s, err, sizeof err));
}

/* Creates stream FRAMES as the gateway does when it is missing (docs/protocol.md:
 * Frames out): frames.ready.>, work-queue retention, file
 * storage, a 2-minute duplicate window, one replica. */
static void create_frames_stream(jsCtx *js)
{
  char err[256];
  const char *subjects[] = {"frames.ready.>"};
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  sc.Name = FBCI_JS_STREAM;
  sc.Subjects = subjects;
  sc.SubjectsLen = 1;
  sc.Retention = js_WorkQueuePolicy;
  sc.Storage = js_FileStorage;
  sc.Duplicates = INT64_C(120) * 1000000000;
  sc.Replicas = 1;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
  if (s != NATS_OK)
    tk_die(1, "creating JetStream stream " FBCI_JS_STREAM ": %s (error %d)",
           fbci_nats_err(s, err, sizeof err), (int)jerr);
  jsStreamInfo_Destroy(si);
}

/* Sets up what sending takes: the target streams, or the publishing
 * connection, the subjects and (JetStream) stream FRAMES. */
static void baseline_open(struct baseline *b, const struct bench_config *cfg, redisContext *c)
{
  memset(b, 0, sizeof *b);
  b->cfg = cfg;
  b->c = c;
  if (!cfg->nats) {
    snprintf(b->maxq, sizeof b->maxq, "%lld", (long long)cfg->frames + 1000);
    b->streams = calloc((size_t)cfg->processors, sizeof *b->streams);
    b->argv = calloc(256, sizeof *b->argv);
    b->argvlen = calloc(256, sizeof *b->argvlen);
    if (!b->streams || !b->argv || !b->argvlen) tk_die(1, "out of memory");
    for (int64_t i = 0; i < cfg->processors; i++)
      stream_name(b->streams[i], sizeof b->streams[i], i);
    return;
  }
  char err[512];
  b->nc = tk_nats_connect(cfg->nats_url, "fb-bench baseline", false, err, sizeof err);
  if (!b->nc) tk_die(1, "%s", err);
  if (cfg->jetstream) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = BENCH_JS_MAX_PENDING;
    natsStatus s = natsConnection_JetStream(&b->js, b->nc, &jo);
    if (s != NATS_OK) tk_die(1, "JetStream: %s", fbci_nats_err(s, err, sizeof err));
    create_frames_stream(b->js);
  }
  b->subjects = calloc((size_t)cfg->processors, sizeof *b->subjects);
  if (!b->subjects) tk_die(1, "out of memory");
  for (int64_t i = 0; i < cfg->processors; i++)
    snprintf(b->subjects[i], sizeof b->subjects[i], "frames.ready." BENCH_PREFIX "%lld",
             (long long)i);
}

static void baseline_close(struct baseline *b)
{
  free(b->streams);
  free(b->argv);
  free(b->argvlen);
  jsCtx_Destroy(b->js);
  fbci_nats_close(b->nc, 1000);
  free(b->subjects);
  free(b->payload);
  memset(b, 0, sizeof *b);
}

/* The gateway's job done by hand, as fast as plain Redis (and NATS) allow:
 * pipelined XREADGROUP of `batch` entries; each frame to the next processor
 * in turn, with the fields the gateway adds: an XADD to its stream, or with
 * --transport nats one publish with the gateway's JSON payload and headers
 * (--jetstream: asynchronous, and the batch's acks awaited before its XACK);
 * one XACK per batch, and the next XREADGROUP in the same round trip, with
 * `inflight` reads outstanding. No parsing, validation or capability
 * matching: a ceiling, not a rival. NATS arrivals are counted as in
 * throughput mode, and the time runs until the last one. With --atomic each
 * batch's XADDs and XACK are wrapped in MULTI/EXEC, like the gateway's atomic
 * hand-off. */
static int run_baseline(const struct bench_config *cfg)
{
  redisContext *c = connect_or_die(cfg, 10000);
  struct nats_arrivals na = {0};
  if (cfg->nats) nats_arrivals_start(&na, cfg);
  reset_keys(c, cfg);
  register_direct(c, cfg);
  create_input_group(c, cfg);
  preload(c, cfg);
  if (interrupted) tk_die(130, "interrupted");

  struct baseline b;
  baseline_open(&b, cfg, c);
  char count[24];
  snprintf(count, sizeof count, "%lld", (long long)cfg->batch);
  const char **ack = calloc((size_t)cfg->batch + 3, sizeof *ack);
  if (!ack) tk_die(1, "out of memory");
  const char *read_argv[] = {"XREADGROUP", "GROUP", cfg->group, BENCH_BASELINE_CONSUMER,
                             "COUNT",      count,   "STREAMS",  cfg->stream,
                             ">"};

  /* Up to `inflight` XREADGROUPs are outstanding, so Redis works on one
   * batch while we format the next. pre[] counts the write replies queued
   * ahead of each outstanding read, oldest at `head`. */
  size_t pre[BENCH_MAX_INFLIGHT], head = 0, outstanding = 0, trailing = 0;
  int64_t routed = 0, reads = 0;
  bool exhausted = false;
  char err[512];
  const int64_t t0 = fbci_mono_us();
  for (int64_t k = 0; k < cfg->inflight; k++) {
    redisAppendCommandArgv(c, 9, read_argv, NULL);
    pre[(head + outstanding++) % BENCH_MAX_INFLIGHT] = 0;
  }
  while (outstanding > 0) {
    if (fbci_redis_drain(c, pre[head], err, sizeof err) < 0) tk_die(1, "Redis: %s", err);
    head = (head + 1) % BENCH_MAX_INFLIGHT;
    outstanding--;
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK || !v) tk_die(1, "Redis: %s", c->errstr);
    redisReply *r = v;
    reads++;
    if (r->type == REDIS_REPLY_ERROR) tk_die(1, "XREADGROUP: %s", r->str);
    const redisReply *entries = NULL;
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->elements >= 2)
      entries = r->element[0]->element[1];
    if (!entries || entries->elements == 0 || interrupted) {
      exhausted = true; /* later reads were sent earlier and find nothing either */
      freeReplyObject(r);
      continue;
    }
    size_t writes = 0;
    if (cfg->atomic) {
      redisAppendCommand(c, "MULTI");
      writes++;
    }
    ack[0] = "XACK";
    ack[1] = cfg->stream;
    ack[2] = cfg->group;
    size_t nack = 0;
    for (size_t i = 0; i < entries->elements; i++) {
      const redisReply *e = entries->element[i];
      const redisReply *fields = e->element[1];
      ack[3 + nack++] = e->element[0]->str;
      if (fields->type != REDIS_REPLY_ARRAY || fields->elements > 200) continue;
      if (b.nc) {
        baseline_publish(&b, fields);
      } else {
        baseline_xadd(&b, fields);
        writes++;
      }
      routed++;
    }
    if (b.js) baseline_js_complete(&b);
    redisAppendCommandArgv(c, (int)(3 + nack), ack, NULL);
    writes++;
    if (cfg->atomic) {
      redisAppendCommand(c, "EXEC");
      writes++;
    }
    freeReplyObject(r); /* argv pointed into it; the commands are formatted already */
    if (exhausted) {
      trailing += writes;
    } else {
      redisAppendCommandArgv(c, 9, read_argv, NULL);
      pre[(head + outstanding++) % BENCH_MAX_INFLIGHT] = writes;
    }
  }
  if (fbci_redis_drain(c, trailing, err, sizeof err) < 0) tk_die(1, "Redis: %s", err);
  int status = 0;
  if (b.nc) {
    natsStatus s = natsConnection_Flush(b.nc);
    if (s != NATS_OK) tk_die(1, "NATS flush: %s", fbci_nats_err(s, err, sizeof err));
    while (nats_arrived(&na) < routed && !interrupted) {
      if ((double)(fbci_mono_us() - t0) > cfg->timeout_s * 1e6) {
        tk_log("timeout: only %lld of %lld published frames arrived", (long long)nats_arrived(&na),
               (long long)routed);
        status = 1;
        break;
      }
      tk_sleep_us(BENCH_POLL_US);
    }
  }
  const double secs = (double)(fbci_mono_us() - t0) / 1e6;
  int64_t dlq = 0, lo = 0, hi = 0;
  int64_t sum =
      cfg->nats ? nats_arrivals_final(&na, &lo, &hi) : targets_len(c, cfg, &dlq, &lo, &hi);
  const double fps = secs > 0 ? (double)routed / secs : 0;
  printf("baseline: %lld frames to %lld %s in %.3f s: %.0f frames/s (batch %lld, %lld in "
         "flight%s, %lld reads)\n",
         (long long)routed, (long long)cfg->processors, targets_desc(cfg), secs, fps,
         (long long)cfg->batch, (long long)cfg->inflight, cfg->atomic ? ", MULTI/EXEC" : "",
         (long long)reads);
  printf("  per processor: min %lld, max %lld frames\n", (long long)lo, (long long)hi);
  if (cfg->nats) {
    printf("  %lld frames arrived on NATS; %lld checked against docs/protocol.md "
           "(Frames out), %lld bad\n",
           (long long)sum, (long long)atomic_load(&na.checked), (long long)atomic_load(&na.bad));
    if (nats_arrivals_bad(&na)) status = 1;
  }
  if (sum != cfg->frames) {
    tk_log("expected %lld frames at the processors, found %lld", (long long)cfg->frames,
           (long long)sum);
    status = 1;
  }
  if (foreign_consumers(c, cfg, BENCH_BASELINE_CONSUMER) > 0) status = 1;
  printf("RESULT {\"mode\":\"baseline\",\"transport\":\"%s\",\"jetstream\":%s,\"frames\":%lld,"
         "\"processors\":%lld,\"batch\":%lld,\"inflight\":%lld,\"atomic\":%s,\"seconds\":%.3f,"
         "\"frames_per_s\":%.0f}\n",
         transport_name(cfg), cfg->jetstream ? "true" : "false", (long long)routed,
         (long long)cfg->processors, (long long)cfg->batch, (long long)cfg->inflight,
         cfg->atomic ? "true" : "false", secs, fps);
  baseline_close(&b);
  free(ack);
  if (cfg->nats) nats_arrivals_stop(&na, cfg->keep);
  if (!cfg->keep) reset_keys(c, cfg);
  redisFree(c);
  return status;
}

/* ================================================================= latency */

/* Shared between the main thread and the reader thread. The reader alone
 * writes `samples` until `stop` is set and it is joined; the counters are
 * atomics anyone may read. */
struct lat_reader {
  const struct bench_config *cfg;
  atomic_llong measure_from_us; /* only frames injected at or after this count */
  atomic_bool stop;
  atomic_llong arrived;  /* every frame seen, warm-up included */
  atomic_llong measured; /* frames that count */
  uint32_t *samples;     /* latency in µs, one per measured frame */
  size_t cap;
  size_t n;
  int64_t dropped; /* measured frames beyond `cap` */
  char error[512]; /* why the reader gave up; read only after `failed` */
  atomic_bool failed;
};

static void *reader_main(void *arg)
{
  struct lat_reader *lr = arg;
  const struct bench_config *cfg = lr->cfg;
  char err[400];
  redisContext *c = fbci_redis_connect(&cfg->redis, 10000, err, sizeof err);
  if (!c) {
    snprintf(lr->error, sizeof lr->error, "reader: %s", err);
    atomic_store(&lr->failed, true);
    return NULL;
  }
  size_t argc = 0, nargs = 10 + 2 * (size_t)cfg->processors;
  const char **argv = calloc(nargs, sizeof *argv);
  char(*streams)[96] = calloc((size_t)cfg->processors, sizeof *streams);
  if (!argv || !streams) {
    snprintf(lr->error, sizeof lr->error, "reader: out of memory");
    atomic_store(&lr->failed, true);
    goto out;
  }
  argv[argc++] = "XREADGROUP";
  argv[argc++] = "GROUP";
  argv[argc++] = BENCH_TARGET_GRP;
  argv[argc++] = "bench-reader";
  argv[argc++] = "COUNT";
  argv[argc++] = "1000";
  argv[argc++] = "BLOCK";
  argv[argc++] = "100";
  argv[argc++] = "NOACK";
  argv[argc++] = "STREAMS";
  for (int64_t i = 0; i < cfg->processors; i++) {
    stream_name(streams[i], sizeof streams[i], i);
    argv[argc++] = streams[i];
  }
  for (int64_t i = 0; i < cfg->processors; i++)
    argv[argc++] = ">";

  while (!atomic_load(&lr->stop)) {
    redisReply *r = redisCommandArgv(c, (int)argc, argv, NULL);
    int64_t now = fbci_real_us();
    if (!r) {
      snprintf(lr->error, sizeof lr->error, "reader: %s", c->errstr);
      atomic_store(&lr->failed, true);
      break;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      snprintf(lr->error, sizeof lr->error, "reader: XREADGROUP: %s", r->str);
      atomic_store(&lr->failed, true);
      freeReplyObject(r);
      break;
    }
    for (size_t s = 0; r->type == REDIS_REPLY_ARRAY && s < r->elements; s++) {
      const redisReply *st = r->element[s];
      if (st->type != REDIS_REPLY_ARRAY || st->elements < 2) continue;
      const redisReply *entries = st->element[1];
      for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2) continue;
        const redisReply *ts = fbci_reply_field(e->element[1], "inject_ts_us");
        atomic_fetch_add(&lr->arrived, 1);
        int64_t t;
        if (!ts || ts->type != REDIS_REPLY_STRING || fbci_parse_i64(ts->str, 0, INT64_MAX, &t) < 0)
          continue;
        if (t < atomic_load(&lr->measure_from_us)) continue;
        int64_t d = now - t;
        if (d < 0) d = 0;
        if (d > UINT32_MAX) d = UINT32_MAX;
        if (lr->n < lr->cap)
          lr->samples[lr->n++] = (uint32_t)d;
        else
          lr->dropped++;
        atomic_fetch_add(&lr->measured, 1);
      }
    }
    freeReplyObject(r);
  }
out:
  free(argv);
  free(streams);
  redisFree(c);
  return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(const uint32_t *s, size_t n, double p)
{
  if (n == 0) return 0;
  size_t idx = (size_t)(p * (double)n);
  if (idx >= n) idx = n - 1;
  return (double)s[idx] / 1000.0;
}

/* Registers the bench processors through the REST API of a running gateway;
 * 409 (left from an earlier run) is fine. */
static void register_via_api(const struct bench_config *cfg)
{
  long long max_queue = (long long)(cfg->rate * (cfg->seconds + 60)) + 100000;
  for (int64_t i = 0; i < cfg->processors; i++) {
    char body[512], err[512];
    snprintf(body, sizeof body,
             "{\"id\":\"" BENCH_PREFIX "%lld\",\"capabilities\":[\"person\",\"vehicle\",\"face\"],"
             "\"capacity\":8,\"queue\":\"\",\"max_queue\":%lld,\"heartbeat_interval_ms\":0}",
             (long long)i, max_queue);
    struct fbci_http_resp resp;
    int rc = fbci_http_request(cfg->api_str, "POST", "/api/v1/processors/register", cfg->token,
                               body, 5000, &resp, err, sizeof err);
    if (rc < 0) tk_die(1, "registering " BENCH_PREFIX "%lld: %s", (long long)i, err);
    if (resp.status != 201 && resp.status != 409)
      tk_die(1, "registering " BENCH_PREFIX "%lld: HTTP %ld: %s", (long long)i, resp.status,
             resp.body);
    fbci_http_resp_free(&resp);
  }
}

/* Warns when processors other than ours are registered: frames routed to
 * them never reach the reader and show up as missing. */
static void warn_other_processors(const struct bench_config *cfg)
{
  char err[512];
  struct fbci_http_resp resp;
  if (fbci_http_request(cfg->api_str, "GET", "/api/v1/processors/", cfg->token, NULL, 5000, &resp,
                        err, sizeof err) < 0)
    return;
  json_t *arr = resp.status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
  size_t others = 0, i;
  json_t *p;
  json_array_foreach(arr, i, p)
  {
    const char *id = json_string_value(json_object_get(p, "id"));
    if (id && strncmp(id, BENCH_PREFIX, strlen(BENCH_PREFIX)) != 0) others++;
  }
  if (others)
    tk_log("warning: %zu other processor(s) are registered at the gateway; frames routed to them "
           "are not measured and count as missing",
           others);
  json_decref(arr);
  fbci_http_resp_free(&resp);
}

static void unregister_via_api(const struct bench_config *cfg)
{
  for (int64_t i = 0; i < cfg->processors; i++) {
    char path[128], err[512];
    snprintf(path, sizeof path, "/api/v1/processors/" BENCH_PREFIX "%lld", (long long)i);
    struct fbci_http_resp resp;
    if (fbci_http_request(cfg->api_str, "DELETE", path, cfg->token, NULL, 5000, &resp, err,
                          sizeof err) == 0)
      fbci_http_resp_free(&resp);
  }
}

static int run_latency(const struct bench_config *cfg)
{
  redisContext *c = connect_or_die(cfg, 10000);
  struct gateway_proc gw = {0};
  if (cfg->gateway) {
    reset_keys(c, cfg);
    register_direct(c, cfg);
    create_input_group(c, cfg);
    spawn_gateway(&gw, cfg, BENCH_CONSUMER);
    tk_log("spawned %s (pid %d, port %d, strategy %s)", cfg->gateway, (int)gw.pid, gw.port,
           cfg->strategy);
  } else {
    register_via_api(cfg);
    warn_other_processors(cfg);
    tk_log("registered %lld bench processors at %s", (long long)cfg->processors, cfg->api_str);
  }

  struct lat_reader lr = {.cfg = cfg};
  atomic_init(&lr.measure_from_us, INT64_MAX);
  atomic_init(&lr.arrived, 0);
  atomic_init(&lr.measured, 0);
  atomic_init(&lr.stop, false);
  atomic_init(&lr.failed, false);
  lr.cap = (size_t)(cfg->rate * cfg->seconds * 1.2) + 10000;
  if (lr.cap > 100000000) lr.cap = 100000000;
  lr.samples = malloc(lr.cap * sizeof *lr.samples);
  if (!lr.samples) tk_die(1, "out of memory for %zu samples", lr.cap);
  pthread_t reader;
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int prc = pthread_create(&reader, NULL, reader_main, &lr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) tk_die(1, "cannot start the reader thread: %s", strerror(prc));

  struct tk_framegen gen;
  static struct tk_frame frame;
  framegen_setup(&gen, cfg);
  int status = 0;
  const char *error = NULL;
  char err[512];

  /* Warm-up: one frame every 50 ms until one comes through, so start-up of
   * the gateway (connects, registry load) is not counted as latency. */
  int64_t w0 = fbci_mono_us();
  while (atomic_load(&lr.arrived) == 0) {
    if (interrupted)
      error = "interrupted";
    else if (atomic_load(&lr.failed))
      error = "reader";
    else if (gw.pid && gateway_exited(&gw))
      error = "gateway_exited";
    else if (fbci_mono_us() - w0 > 15000000)
      error = "no_frame_through";
    if (error) break;
    tk_framegen_next(&gen, &frame, fbci_real_us());
    redisAppendCommandArgv(c, frame.argc, frame.argv, frame.argvlen);
    must_drain(c, 1, "warm-up");
    tk_sleep_us(50000);
  }
  if (!error)
    tk_log("first frame through after %.2f s; injecting %.0f frames/s for %.1f s",
           (double)(fbci_mono_us() - w0) / 1e6, cfg->rate, cfg->seconds);
  tk_sleep_us(200000); /* let warm-up stragglers arrive */

  int64_t sent = 0;
  const int64_t t0 = fbci_mono_us();
  const int64_t total = (int64_t)(cfg->rate * cfg->seconds);
  atomic_store(&lr.measure_from_us, fbci_real_us());
  int64_t next_report = t0 + 1000000;
  while (!error && sent < total) {
    if (interrupted) {
      error = "interrupted";
      break;
    }
    int64_t now = fbci_mono_us();
    int64_t due = (int64_t)((double)(now - t0) * cfg->rate / 1e6) + 1 - sent;
    if (due <= 0) {
      int64_t wait = t0 + (int64_t)((double)sent * 1e6 / cfg->rate) - now;
      tk_sleep_us(wait > 1000 ? 1000 : (wait < 50 ? 50 : wait));
      continue;
    }
    if (due > cfg->pipeline) due = cfg->pipeline;
    if (due > total - sent) due = total - sent;
    for (int64_t i = 0; i < due; i++) {
      tk_framegen_next(&gen, &frame, fbci_real_us());
      redisAppendCommandArgv(c, frame.argc, frame.argv, frame.argvlen);
    }
    if (fbci_redis_drain(c, (size_t)due, err, sizeof err) < 0) tk_die(1, "XADD: %s", err);
    sent += due;
    if (now >= next_report) {
      tk_log("injected %lld, arrived %lld", (long long)sent, (long long)atomic_load(&lr.measured));
      next_report += 1000000;
    }
  }
  const double inject_secs = (double)(fbci_mono_us() - t0) / 1e6;
  /* Drain: wait for the last frames. */
  int64_t d0 = fbci_mono_us();
  while (!error && atomic_load(&lr.measured) < sent && !atomic_load(&lr.failed) && !interrupted &&
         (double)(fbci_mono_us() - d0) < cfg->drain_s * 1e6)
    tk_sleep_us(5000);
  atomic_store(&lr.stop, true);
  pthread_join(reader, NULL);
  if (!error && atomic_load(&lr.failed)) error = "reader";
  if (!error && gw.pid && foreign_consumers(c, cfg, BENCH_CONSUMER) > 0) error = "foreign_consumer";

  long rss = -1;
  if (gw.pid) {
    rss = gw.exited ? -1 : peak_rss_kb(gw.pid);
    stop_gateway(&gw);
  } else if (!cfg->keep) {
    unregister_via_api(cfg);
  }

  qsort(lr.samples, lr.n, sizeof *lr.samples, cmp_u32);
  double sum_us = 0;
  for (size_t i = 0; i < lr.n; i++)
    sum_us += lr.samples[i];
  double mean = lr.n ? sum_us / (double)lr.n / 1000.0 : 0;
  double p50 = pct_ms(lr.samples, lr.n, 0.50), p90 = pct_ms(lr.samples, lr.n, 0.90);
  double p99 = pct_ms(lr.samples, lr.n, 0.99), p999 = pct_ms(lr.samples, lr.n, 0.999);
  double mx = lr.n ? (double)lr.samples[lr.n - 1] / 1000.0 : 0;
  long long received = (long long)atomic_load(&lr.measured);
  if (error) {
    if (strcmp(error, "reader") == 0)
      tk_log("latency run failed: %s", lr.error);
    else if (strcmp(error, "no_frame_through") == 0)
      tk_log("latency run failed: no warm-up frame reached frames:ready:" BENCH_PREFIX
             "* within 15 s (is the gateway routing? look at frames:dlq)");
    else
      tk_log("latency run failed: %s", error);
    status = 1;
  } else if (received < sent) {
    tk_log("%lld of %lld frames did not arrive within %.1f s (DLQ, other processors, or lost)",
           (long long)sent - received, (long long)sent, cfg->drain_s);
    status = 1;
  }
  printf("latency: %lld frames at %.0f frames/s over %.2f s, %lld arrived\n", (long long)sent,
         inject_secs > 0 ? (double)sent / inject_secs : 0, inject_secs, received);
  printf("  injection to arrival: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f "
         "ms, mean %.3f ms\n",
         p50, p90, p99, p999, mx, mean);
  if (rss >= 0) printf("  gateway peak RSS %ld kB\n", rss);
  printf("RESULT {\"mode\":\"latency\",%s%s%s\"rate\":%.0f,\"seconds\":%.2f,\"injected\":%lld,"
         "\"received\":%lld,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
         "\"max_ms\":%.3f,\"mean_ms\":%.3f,\"rss_kb\":%ld}\n",
         error ? "\"error\":\"" : "", error ? error : "", error ? "\"," : "", cfg->rate,
         inject_secs, (long long)sent, received, p50, p90, p99, p999, mx, mean, rss);
  free(lr.samples);
  if (gw.pid && !cfg->keep) reset_keys(c, cfg);
  redisFree(c);
  return status;
}

/* ============================================================== heartbeats */

/* Polls /readyz until 200. Returns NULL or the reason it gave up. */
static const char *wait_ready(struct gateway_proc *gw, const char *api)
{
  int64_t t0 = fbci_mono_us();
  for (;;) {
    char err[256];
    struct fbci_http_resp resp;
    if (fbci_http_request(api, "GET", "/readyz", NULL, NULL, 2000, &resp, err, sizeof err) == 0) {
      long st = resp.status;
      fbci_http_resp_free(&resp);
      if (st == 200) return NULL;
    }
    if (gateway_exited(gw)) return "gateway_exited";
    if (interrupted) return "interrupted";
    if (fbci_mono_us() - t0 > 30000000) return "not_ready";
    tk_sleep_us(50000);
  }
}

/*
 * P processors (directly in the registry, heartbeat_interval_ms =
 * --interval-ms) heartbeat on processors.heartbeat.bench-<i>, spread evenly
 * over each interval, while we sample the gateway's CPU use (utime + stime
 * from /proc) over --seconds after one interval of warm-up. With
 * --no-heartbeats the processors are not health-tracked and nothing is
 * published: the cost of the registry alone, for comparison.
 */
static int run_heartbeats(const struct bench_config *cfg)
{
  redisContext *c = connect_or_die(cfg, 10000);
  char err[512];
  natsConnection *nc =
      tk_nats_connect(cfg->nats_url, "fb-bench heartbeats", false, err, sizeof err);
  if (!nc) tk_die(1, "%s", err);
  reset_keys(c, cfg);
  register_direct(c, cfg);
  create_input_group(c, cfg);

  char(*subjects)[64] = calloc((size_t)cfg->processors, sizeof *subjects);
  if (!subjects) tk_die(1, "out of memory");
  for (int64_t i = 0; i < cfg->processors; i++)
    snprintf(subjects[i], sizeof subjects[i], "processors.heartbeat." BENCH_PREFIX "%lld",
             (long long)i);

  struct gateway_proc gw;
  spawn_gateway(&gw, cfg, BENCH_CONSUMER);
  char api[64];
  snprintf(api, sizeof api, "http://127.0.0.1:%d", gw.port);
  const char *error = wait_ready(&gw, api);
  if (!error)
    tk_log("spawned %s (pid %d, port %d): ready; %lld processors %s every %lld ms", cfg->gateway,
           (int)gw.pid, gw.port, (long long)cfg->processors,
           cfg->no_heartbeats ? "registered, NO heartbeats (control run)" : "heartbeating",
           (long long)cfg->interval_ms);

  const long tick = sysconf(_SC_CLK_TCK);
  const int64_t interval_us = cfg->interval_ms * 1000;
  const int64_t t0 = fbci_mono_us();
  const int64_t measure_from = t0 + interval_us;
  const int64_t measure_to = measure_from + (int64_t)(cfg->seconds * 1e6);
  int64_t sent = 0, sent_at_start = 0, m_t0 = 0, next_sample = 0, sample_t = 0;
  long long ticks0 = -1, sample_ticks = 0;
  double hb0 = -1, max_pct = 0;
  uint64_t rng = (uint64_t)fbci_real_us() | 1;
  while (!error) {
    int64_t now = fbci_mono_us();
    if (now >= measure_to) break;
    if (interrupted) error = "interrupted";
    if (gateway_exited(&gw)) error = "gateway_exited";
    if (error) break;
    /* Heartbeat k of processor i is due at t0 + (k * P + i) * interval / P. */
    int64_t due = cfg->no_heartbeats ? 0 : (now - t0) * cfg->processors / interval_us + 1;
    char ts[32];
    if (sent < due) fbci_iso8601(ts, sizeof ts, fbci_real_us());
    for (; sent < due; sent++) {
      int64_t i = sent % cfg->processors;
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      char hb[256];
      int len = snprintf(hb, sizeof hb,
                         "{\"processor_id\":\"" BENCH_PREFIX "%lld\",\"status\":\"healthy\","
                         "\"timestamp\":\"%s\",\"queue_depth\":%u,\"in_flight\":%u,"
                         "\"capacity\":8,\"latency_ms\":%u.%u}",
                         (long long)i, ts, (unsigned)(rng % 64), (unsigned)((rng >> 8) % 9),
                         (unsigned)((rng >> 16) % 40), (unsigned)((rng >> 24) % 10));
      natsStatus s = natsConnection_Publish(nc, subjects[i], hb, len);
      if (s != NATS_OK) tk_die(1, "publishing a heartbeat: %s", fbci_nats_err(s, err, sizeof err));
    }
    if (now >= measure_from && ticks0 < 0) {
      ticks0 = cpu_ticks(gw.pid);
      char *m = fetch_metrics(api);
      hb0 = m ? metric_value(m, "frame_buffer_heartbeats_total") : -1;
      free(m);
      m_t0 = sample_t = fbci_mono_us();
      sample_ticks = ticks0;
      sent_at_start = sent;
      next_sample = m_t0 + 1000000;
    }
    if (ticks0 >= 0 && now >= next_sample) {
      long long t = cpu_ticks(gw.pid);
      int64_t at = fbci_mono_us();
      double pct =
          (double)(t - sample_ticks) / (double)tick / ((double)(at - sample_t) / 1e6) * 100;
      if (pct > max_pct) max_pct = pct;
      sample_ticks = t;
      sample_t = at;
      next_sample += 1000000;
    }
    int64_t next_due =
        cfg->no_heartbeats ? now + 1000 : t0 + (sent * interval_us) / cfg->processors;
    int64_t wait = next_due - fbci_mono_us();
    tk_sleep_us(wait > 1000 ? 1000 : (wait < 20 ? 20 : wait));
  }
  long long ticks1 = cpu_ticks(gw.pid);
  const int64_t m_t1 = fbci_mono_us();
  const int64_t sent_measured = sent - sent_at_start;
  /* Health is read now, while every processor's heartbeats are still on
   * schedule: read after the pause below, a processor whose last heartbeat
   * went out an interval before the end is 1.5 intervals late by then, and
   * rightly stale (with --interval-ms 500, a few of every hundred were). */
  char *m = error ? NULL : fetch_metrics(api);
  double healthy = m ? metric_value(m, "frame_buffer_processors{status=\"healthy\"}") : -1;
  double stale = m ? metric_value(m, "frame_buffer_processors{status=\"stale\"}") : -1;
  double dead = m ? metric_value(m, "frame_buffer_processors{status=\"dead\"}") : -1;
  free(m);
  natsConnection_FlushTimeout(nc, 2000);
  tk_sleep_us(300000); /* let the gateway count the last ones */
  m = error ? NULL : fetch_metrics(api);
  double hb1 = m ? metric_value(m, "frame_buffer_heartbeats_total") : -1;
  double rejected = m ? metric_value(m, "frame_buffer_heartbeats_rejected_total") : -1;
  free(m);
  long rss = gw.exited ? -1 : peak_rss_kb(gw.pid);
  stop_gateway(&gw);

  int status = 0;
  double secs = (double)(m_t1 - m_t0) / 1e6;
  double cpu_pct = ticks0 >= 0 && ticks1 >= 0 && secs > 0
                       ? (double)(ticks1 - ticks0) / (double)tick / secs * 100.0
                       : -1;
  long long counted = hb0 >= 0 && hb1 >= 0 ? (long long)(hb1 - hb0) : -1;
  if (error) {
    tk_log("heartbeats run failed: %s", error);
    printf("RESULT {\"mode\":\"heartbeats\",\"error\":\"%s\"}\n", error);
    status = 1;
  } else {
    printf("heartbeats: %lld processors, every %lld ms, %s; gateway CPU over %.2f s: %.2f%% of one "
           "core (busiest second %.2f%%), peak RSS %ld kB\n",
           (long long)cfg->processors, (long long)cfg->interval_ms,
           cfg->no_heartbeats ? "none sent (control run)" : "over NATS", secs, cpu_pct, max_pct,
           rss);
    printf("  heartbeats sent while measuring %lld, counted by the gateway %lld, rejected in all "
           "%.0f; processors healthy %.0f, stale %.0f, dead %.0f\n",
           (long long)sent_measured, counted, rejected, healthy, stale, dead);
    if (!cfg->no_heartbeats && healthy != (double)cfg->processors) {
      tk_log("only %.0f of %lld processors are healthy at the end", healthy,
             (long long)cfg->processors);
      status = 1;
    }
    printf("RESULT {\"mode\":\"heartbeats\",\"transport\":\"%s\",\"processors\":%lld,"
           "\"interval_ms\":%lld,\"heartbeats\":%s,\"seconds\":%.2f,\"heartbeats_sent\":%lld,"
           "\"heartbeats_counted\":%lld,\"healthy\":%.0f,\"stale\":%.0f,\"dead\":%.0f,"
           "\"cpu_pct\":%.2f,\"max_cpu_pct\":%.2f,\"rss_kb\":%ld}\n",
           cfg->nats ? "nats" : "redis", (long long)cfg->processors, (long long)cfg->interval_ms,
           cfg->no_heartbeats ? "false" : "true", secs, (long long)sent_measured, counted, healthy,
           stale, dead, cpu_pct, max_pct, rss);
  }
  free(subjects);
  fbci_nats_close(nc, 1000);
  if (!cfg->keep) reset_keys(c, cfg);
  redisFree(c);
  return status;
}

/* ================================================================ consume
 * A processor built on libframebuffer-client draining its Redis stream,
 * against a bare XREADGROUP + XACK loop on the same stream in the same run:
 * each round pre-loads the stream and times one of them until every frame
 * is acked, the two taking turns. Both read --batch frames a round trip.
 */

#define CONSUME_ID     BENCH_PREFIX "consume"
#define CONSUME_STREAM "frames:ready:" CONSUME_ID

/* A fresh stream of cfg->frames frames, and its group at id 0. */
static void consume_prepare(redisContext *c, const struct bench_config *cfg)
{
  freeReplyObject(must(c, 2, (const char *[]){"DEL", CONSUME_STREAM}));
  struct bench_config pre = *cfg;
  pre.stream = CONSUME_STREAM;
  preload(c, &pre);
  freeReplyObject(must(
      c, 6,
      (const char *[]){"XGROUP", "CREATE", CONSUME_STREAM, BENCH_TARGET_GRP, "0", "MKSTREAM"}));
}

/* The bare loop: XREADGROUP COUNT batch, then one XACK of what it read. */
static int64_t consume_bare(redisContext *c, const struct bench_config *cfg)
{
  char count[24];
  snprintf(count, sizeof count, "%lld", (long long)cfg->batch);
  const char **ack = malloc((size_t)(cfg->batch + 3) * sizeof *ack);
  if (!ack) tk_die(1, "out of memory");
  int64_t done = 0;
  while (done < cfg->frames && !interrupted) {
    redisReply *r = must(c, 11,
                         (const char *[]){"XREADGROUP", "GROUP", BENCH_TARGET_GRP, "bare", "COUNT",
                                          count, "BLOCK", "1000", "STREAMS", CONSUME_STREAM, ">"});
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
      const redisReply *entries = r->element[0]->element[1];
      ack[0] = "XACK";
      ack[1] = CONSUME_STREAM;
      ack[2] = BENCH_TARGET_GRP;
      for (size_t i = 0; i < entries->elements; i++)
        ack[3 + i] = entries->element[i]->element[0]->str;
      freeReplyObject(must(c, (int)entries->elements + 3, ack));
      done += (int64_t)entries->elements;
    }
    freeReplyObject(r);
  }
  free(ack);
  return done;
}

/* The library: fbc_next + fbc_ack, as a processor with --work-ms would. */
static int64_t consume_library(const struct bench_config *cfg)
{
  struct fbc_options o;
  fbc_options_init(&o);
  o.id = CONSUME_ID;
  o.capabilities = "person";
  o.api_url = "none"; /* no gateway: the stream alone is measured */
  o.redis_url = cfg->redis_url_str;
  o.heartbeat_interval_ms = 0;
  o.log = tk_log_fbc;
  struct fbc_client *c;
  int rc = fbc_connect(&c, &o);
  if (rc < 0) tk_die(1, "fbc_connect: %s", fbc_strerror(rc));
  const struct fbc_frame **batch = malloc((size_t)cfg->batch * sizeof *batch);
  if (!batch) tk_die(1, "out of memory");
  int64_t done = 0;
  while (done < cfg->frames && !interrupted) {
    int n = fbc_next(c, batch, (size_t)cfg->batch, 1000);
    if (n < 0) tk_die(1, "fbc_next: %s", fbc_strerror(n));
    if (n > 0 && cfg->work_ms > 0) tk_sleep_us(cfg->work_ms * 1000);
    if (n > 0 && (rc = fbc_ack(c, batch, (size_t)n)) < 0)
      tk_die(1, "fbc_ack: %s", fbc_strerror(rc));
    done += n;
  }
  free(batch);
  fbc_close(c);
  return done;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int run_consume(const struct bench_config *cfg)
{
  redisContext *c = connect_or_die(cfg, 10000);
  double lib[64], bare[64], ratio[64];
  int64_t rounds = cfg->rounds;
  for (int64_t k = 0; k < rounds && !interrupted; k++) {
    for (int turn = 0; turn < 2; turn++) {
      bool library = (turn == 0) == (k % 2 == 0); /* who goes first alternates */
      consume_prepare(c, cfg);
      int64_t t0 = fbci_mono_us();
      int64_t n = library ? consume_library(cfg) : consume_bare(c, cfg);
      double secs = (double)(fbci_mono_us() - t0) / 1e6;
      if (n < cfg->frames) tk_die(130, "interrupted");
      (library ? lib : bare)[k] = (double)n / secs;
      tk_log("round %lld: %s drained %lld frames in %.3f s: %.0f frames/s", (long long)k + 1,
             library ? "library" : "bare loop", (long long)n, secs, (double)n / secs);
    }
    ratio[k] = lib[k] / bare[k];
  }
  if (!cfg->keep) freeReplyObject(must(c, 2, (const char *[]){"DEL", CONSUME_STREAM}));
  redisFree(c);
  qsort(lib, (size_t)rounds, sizeof *lib, cmp_double);
  qsort(bare, (size_t)rounds, sizeof *bare, cmp_double);
  qsort(ratio, (size_t)rounds, sizeof *ratio, cmp_double);
  double med_lib = lib[rounds / 2], med_bare = bare[rounds / 2], med_ratio = ratio[rounds / 2];
  printf("fb-bench consume: library %.0f frames/s, bare XREADGROUP+XACK loop %.0f frames/s "
         "(medians of %lld rounds, %lld frames, batch %lld): %.2f of the bare loop "
         "(rounds %.2f-%.2f)\n",
         med_lib, med_bare, (long long)rounds, (long long)cfg->frames, (long long)cfg->batch,
         med_ratio, ratio[0], ratio[rounds - 1]);
  printf("RESULT {\"mode\":\"consume\",\"frames\":%lld,\"batch\":%lld,\"rounds\":%lld,"
         "\"library_fps\":%.0f,\"bare_fps\":%.0f,\"ratio\":%.3f,\"ratio_min\":%.3f,"
         "\"ratio_max\":%.3f}\n",
         (long long)cfg->frames, (long long)cfg->batch, (long long)rounds, med_lib, med_bare,
         med_ratio, ratio[0], ratio[rounds - 1]);
  return 0;
}

/* ==================================================================== main */

static void usage(FILE *to)
{
  fprintf(to,
          "Usage: fb-bench [--mode throughput|latency|baseline|heartbeats|consume] [options]\n"
          "Benchmarks the frame-buffer gateway against Redis (and NATS).\n"
          "\n"
          "WARNING: it deletes keys: the input stream, frames:dlq, processors:registry,\n"
          "processors:capabilities:* and frames:ready:bench-*. Only point it at a Redis you own.\n"
          "With --transport nats it deletes the JetStream stream FRAMES: use a NATS you own.\n"
          "\n"
          "Modes:\n"
          "  throughput  pre-load N frames, spawn --gateway, time until all N are in the P\n"
          "              streams frames:ready:bench-<i> (the default); with --transport nats\n"
          "              until all N arrived on frames.ready.bench-<i> (core: counted by a\n"
          "              subscription to frames.ready.>; --jetstream: stream FRAMES's message\n"
          "              count, the stream deleted first); every 64th frame is checked\n"
          "              against docs/protocol.md, Frames out (JSON of strings, Nats-Msg-Id, "
          "traceparent)\n"
          "  heartbeats  register P processors (default 1000, heartbeat_interval_ms\n"
          "              --interval-ms), spawn --gateway, publish their heartbeats on NATS\n"
          "              every --interval-ms for one interval of warm-up plus --seconds, and\n"
          "              report the gateway's CPU (utime+stime, %% of one core) meanwhile\n"
          "  latency     inject at --rate for --seconds and time each frame from XADD to\n"
          "              arrival; spawns --gateway if given, else uses the one at --api\n"
          "  baseline    no gateway: a bare pipelined XREADGROUP + XADD + XACK loop doing\n"
          "              the same routing, for comparison; with --transport nats one\n"
          "              publish a frame instead of the XADD, with the gateway's JSON payload\n"
          "              and headers (--jetstream: asynchronous into stream FRAMES, the\n"
          "              batch's acks awaited before its XACK), counted as throughput counts\n"
          "              them and timed until the last one arrived\n"
          "  consume     no gateway: a processor built on libframebuffer-client drains its\n"
          "              Redis stream frames:ready:bench-consume (fbc_next + fbc_ack,\n"
          "              --work-ms per batch), against a bare XREADGROUP + XACK loop on the\n"
          "              same stream, --frames each, --batch a read, for --rounds rounds\n"
          "              (default 3) taking turns; prints both rates and their ratio\n"
          "\n"
          "  --redis-url URL     Redis (env REDIS_URL, default " TK_DEFAULT_REDIS_URL ")\n"
          "  --gateway PATH      the frame-buffer binary to spawn (throughput: required)\n"
          "  --gateway-log FILE  the gateway's stdout/stderr (default: inherited)\n"
          "  --gateway-log-level L  its LOG_LEVEL (default warn)\n"
          "  --frames N          frames (throughput, baseline; default 200000)\n"
          "  --processors P      bench processors (default 8)\n"
          "  --strategy S        ROUTING_STRATEGY for the spawned gateway (default round_robin)\n"
          "  --stream NAME       input stream (default frames:metadata)\n"
          "  --group NAME        input consumer group (default frame-buffer-group)\n"
          "  --timeout S         give up after S seconds (default 120)\n"
          "  --rate R            latency: frames/s (default 10000)\n"
          "  --seconds S         latency: injection time (default 10)\n"
          "  --drain S           latency: wait this long for the last frames (default 5)\n"
          "  --pipeline K        latency: at most K XADDs per round trip (default 64)\n"
          "  --api URL           latency without --gateway: its REST API (env FB_API,\n"
          "                      default http://127.0.0.1:8002)\n"
          "  --token T           bearer token for --api (env API_TOKEN)\n"
          "  --batch B           baseline: XREADGROUP COUNT (default 256)\n"
          "  --inflight K        baseline: XREADGROUPs outstanding at once, 1-16 (default 2)\n"
          "  --atomic            baseline: wrap each batch's XADDs + XACK in MULTI/EXEC (with\n"
          "                      nats, the XACK alone)\n"
          "  --transport T       throughput: redis (default), nats or null (the gateway's null\n"
          "                      sink: frames are acked and go nowhere, the cost without output\n"
          "                      I/O), the bench processors'\n"
          "                      transport; baseline: redis (default) or nats; heartbeats: how\n"
          "                      they are registered (default nats)\n"
          "  --jetstream         with nats: throughput: the gateway gets NATS_JETSTREAM=1;\n"
          "                      baseline: the bare loop publishes into JetStream\n"
          "  --nats-url URL      NATS for the gateway and us (env NATS_URL, default\n"
          "                      " TK_DEFAULT_NATS_URL ")\n"
          "  --interval-ms MS    heartbeats: each processor's interval (default 1000)\n"
          "  --no-heartbeats     heartbeats: register them untracked and publish nothing (the\n"
          "                      registry's own cost, to compare with)\n"
          "  --replicas N        throughput: spawn N gateways (consumers bench-1..N) on the one\n"
          "                      Redis; the result adds their CPU and Redis's (default 1, max 8)\n"
          "  --gateway-env K=V   an extra setting for every spawned gateway (repeatable), e.g.\n"
          "                      FLEET_VIEW=0 or REDIS_WAIT_REPLICAS=1\n"
          "  --keep              leave the bench keys in Redis (and FRAMES's frames) afterwards\n"
          "  --help, --version\n"
          "\n"
          "The last line is machine-readable: RESULT {\"mode\":...,\"frames_per_s\":...},\n"
          "RESULT {\"mode\":\"latency\",\"p50_ms\":...,\"p99_ms\":...} or\n"
          "RESULT {\"mode\":\"heartbeats\",\"cpu_pct\":...}. Exit 1 when a run fails.\n");
}

static void parse_flags(struct bench_config *cfg, int argc, char **argv)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->mode = MODE_THROUGHPUT;
  cfg->redis_url_str = tk_env_or("REDIS_URL", TK_DEFAULT_REDIS_URL);
  cfg->frames = 200000;
  cfg->processors = 8;
  cfg->strategy = "round_robin";
  cfg->stream = "frames:metadata";
  cfg->group = "frame-buffer-group";
  cfg->timeout_s = 120;
  cfg->rate = 10000;
  cfg->seconds = 10;
  cfg->drain_s = 5;
  cfg->batch = 256;
  cfg->inflight = 2;
  cfg->pipeline = 64;
  cfg->rounds = 3;
  cfg->api_str = tk_env_or("FB_API", "http://127.0.0.1:8002");
  cfg->token = tk_env_or("API_TOKEN", NULL);
  cfg->nats_url = tk_env_or("NATS_URL", TK_DEFAULT_NATS_URL);
  cfg->gateway_log_level = "warn";
  cfg->interval_ms = 1000;
  cfg->replicas = 1;
  const char *transport = NULL;
  bool procs_given = false;

  enum {
    O_MODE = 256,
    O_REDIS,
    O_GATEWAY,
    O_GWLOG,
    O_FRAMES,
    O_PROCS,
    O_STRATEGY,
    O_STREAM,
    O_GROUP,
    O_TIMEOUT,
    O_RATE,
    O_SECONDS,
    O_DRAIN,
    O_PIPELINE,
    O_API,
    O_TOKEN,
    O_BATCH,
    O_ATOMIC,
    O_INFLIGHT,
    O_KEEP,
    O_TRANSPORT,
    O_JETSTREAM,
    O_NATS,
    O_INTERVAL,
    O_NO_HB,
    O_GWLOGLEVEL,
    O_REPLICAS,
    O_GWENV,
    O_WORK,
    O_ROUNDS,
    O_HELP,
    O_VERSION
  };
  static const struct option opts[] = {
      {"mode", required_argument, NULL, O_MODE},
      {"redis-url", required_argument, NULL, O_REDIS},
      {"gateway", required_argument, NULL, O_GATEWAY},
      {"gateway-log", required_argument, NULL, O_GWLOG},
      {"frames", required_argument, NULL, O_FRAMES},
      {"processors", required_argument, NULL, O_PROCS},
      {"strategy", required_argument, NULL, O_STRATEGY},
      {"stream", required_argument, NULL, O_STREAM},
      {"group", required_argument, NULL, O_GROUP},
      {"timeout", required_argument, NULL, O_TIMEOUT},
      {"rate", required_argument, NULL, O_RATE},
      {"seconds", required_argument, NULL, O_SECONDS},
      {"drain", required_argument, NULL, O_DRAIN},
      {"pipeline", required_argument, NULL, O_PIPELINE},
      {"api", required_argument, NULL, O_API},
      {"token", required_argument, NULL, O_TOKEN},
      {"batch", required_argument, NULL, O_BATCH},
      {"atomic", no_argument, NULL, O_ATOMIC},
      {"inflight", required_argument, NULL, O_INFLIGHT},
      {"keep", no_argument, NULL, O_KEEP},
      {"transport", required_argument, NULL, O_TRANSPORT},
      {"jetstream", no_argument, NULL, O_JETSTREAM},
      {"nats-url", required_argument, NULL, O_NATS},
      {"interval-ms", required_argument, NULL, O_INTERVAL},
      {"no-heartbeats", no_argument, NULL, O_NO_HB},
      {"gateway-log-level", required_argument, NULL, O_GWLOGLEVEL},
      {"replicas", required_argument, NULL, O_REPLICAS},
      {"gateway-env", required_argument, NULL, O_GWENV},
      {"work-ms", required_argument, NULL, O_WORK},
      {"rounds", required_argument, NULL, O_ROUNDS},
      {"help", no_argument, NULL, O_HELP},
      {"version", no_argument, NULL, O_VERSION},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = tk_getopt(argc, argv, opts)) != -1) {
    switch (c) {
    case O_MODE:
      if (strcmp(optarg, "throughput") == 0)
        cfg->mode = MODE_THROUGHPUT;
      else if (strcmp(optarg, "latency") == 0)
        cfg->mode = MODE_LATENCY;
      else if (strcmp(optarg, "baseline") == 0)
        cfg->mode = MODE_BASELINE;
      else if (strcmp(optarg, "heartbeats") == 0)
        cfg->mode = MODE_HEARTBEATS;
      else if (strcmp(optarg, "consume") == 0)
        cfg->mode = MODE_CONSUME;
      else
        tk_die(TK_EXIT_USAGE,
               "--mode: '%s' is not throughput, latency, baseline, heartbeats or consume", optarg);
      break;
    case O_REDIS: cfg->redis_url_str = optarg; break;
    case O_WORK: cfg->work_ms = tk_flag_i64("--work-ms", optarg, 0, 60000); break;
    case O_ROUNDS: cfg->rounds = tk_flag_i64("--rounds", optarg, 1, 64); break;
    case O_GATEWAY: cfg->gateway = optarg; break;
    case O_GWLOG: cfg->gateway_log = optarg; break;
    case O_FRAMES: cfg->frames = tk_flag_i64("--frames", optarg, 1, 1000000000); break;
    case O_PROCS:
      cfg->processors = tk_flag_i64("--processors", optarg, 1, BENCH_MAX_PROCS);
      procs_given = true;
      break;
    case O_STRATEGY: cfg->strategy = optarg; break;
    case O_STREAM: cfg->stream = optarg; break;
    case O_GROUP: cfg->group = optarg; break;
    case O_TIMEOUT: cfg->timeout_s = tk_flag_double("--timeout", optarg, 0.1, 86400); break;
    case O_RATE: cfg->rate = tk_flag_double("--rate", optarg, 1, 1e7); break;
    case O_SECONDS: cfg->seconds = tk_flag_double("--seconds", optarg, 0.1, 86400); break;
    case O_DRAIN: cfg->drain_s = tk_flag_double("--drain", optarg, 0, 3600); break;
    case O_PIPELINE: cfg->pipeline = tk_flag_i64("--pipeline", optarg, 1, 100000); break;
    case O_API: cfg->api_str = optarg; break;
    case O_TOKEN: cfg->token = optarg; break;
    case O_BATCH: cfg->batch = tk_flag_i64("--batch", optarg, 1, 100000); break;
    case O_ATOMIC: cfg->atomic = true; break;
    case O_INFLIGHT:
      cfg->inflight = tk_flag_i64("--inflight", optarg, 1, BENCH_MAX_INFLIGHT);
      break;
    case O_KEEP: cfg->keep = true; break;
    case O_TRANSPORT: transport = optarg; break;
    case O_JETSTREAM: cfg->jetstream = true; break;
    case O_NATS: cfg->nats_url = optarg; break;
    case O_INTERVAL: cfg->interval_ms = tk_flag_i64("--interval-ms", optarg, 10, 3600000); break;
    case O_NO_HB: cfg->no_heartbeats = true; break;
    case O_GWLOGLEVEL: cfg->gateway_log_level = optarg; break;
    case O_REPLICAS:
      cfg->replicas = tk_flag_i64("--replicas", optarg, 1, BENCH_MAX_REPLICAS);
      break;
    case O_GWENV:
      if (!strchr(optarg, '=') || optarg[0] == '=')
        tk_die(2, "--gateway-env %s: expected KEY=VALUE", optarg);
      if (cfg->ngateway_env == (int)(sizeof cfg->gateway_env / sizeof cfg->gateway_env[0]))
        tk_die(2, "--gateway-env: at most 16");
      cfg->gateway_env[cfg->ngateway_env++] = optarg;
      break;
    case O_HELP: usage(stdout); exit(0);
    case O_VERSION: printf("fb-bench " TK_VERSION "\n"); exit(0);
    }
  }
  if (optind < argc) tk_die(TK_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
  char err[512];
  if (fbci_redis_url_parse(&cfg->redis, cfg->redis_url_str, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--redis-url: %s", err);
  static const char *const strategies[] = {"round_robin", "weighted_round_robin", "least_loaded",
                                           "consistent_hash"};
  bool known = false;
  for (size_t i = 0; i < sizeof strategies / sizeof strategies[0]; i++)
    known = known || strcmp(cfg->strategy, strategies[i]) == 0;
  if (!known)
    tk_die(TK_EXIT_USAGE,
           "--strategy: '%s' is not round_robin, weighted_round_robin, least_loaded or "
           "consistent_hash",
           cfg->strategy);
  if (!*cfg->stream || !*cfg->group)
    tk_die(TK_EXIT_USAGE, "--stream and --group must not be empty");
  if (cfg->mode == MODE_THROUGHPUT && !cfg->gateway)
    tk_die(TK_EXIT_USAGE, "throughput mode needs --gateway PATH (the frame-buffer binary)");
  if (cfg->gateway && access(cfg->gateway, X_OK) != 0)
    tk_die(TK_EXIT_USAGE, "--gateway: %s is not an executable file: %s", cfg->gateway,
           strerror(errno));
  /* baseline and consume run without a gateway: one given (the README's $B
   * carries it) is not used. */
  if ((cfg->mode == MODE_BASELINE || cfg->mode == MODE_CONSUME) && cfg->gateway) {
    tk_log("%s mode runs without a gateway: --gateway is not used",
           cfg->mode == MODE_BASELINE ? "baseline" : "consume");
    cfg->gateway = NULL;
  }
  if ((cfg->work_ms || cfg->rounds != 3) && cfg->mode != MODE_CONSUME)
    tk_die(TK_EXIT_USAGE, "--work-ms and --rounds belong to --mode consume");
  if (cfg->mode == MODE_CONSUME && (transport || cfg->batch > FBC_MAX_BATCH))
    tk_die(TK_EXIT_USAGE, "--mode consume: Redis only, --batch at most %d", FBC_MAX_BATCH);
  if (cfg->mode == MODE_LATENCY && !cfg->gateway && strncmp(cfg->api_str, "http://", 7) != 0)
    tk_die(TK_EXIT_USAGE, "--api: '%s' is not http://host[:port]", cfg->api_str);

  if (transport && strcmp(transport, "nats") != 0 && strcmp(transport, "redis") != 0 &&
      strcmp(transport, "null") != 0)
    tk_die(TK_EXIT_USAGE, "--transport: '%s' is not redis, nats or null", transport);
  cfg->null_sink = transport && !strcmp(transport, "null");
  if (cfg->null_sink && cfg->mode != MODE_THROUGHPUT)
    tk_die(TK_EXIT_USAGE, "--transport null: only throughput mode has it");
  cfg->nats = transport ? strcmp(transport, "nats") == 0 : cfg->mode == MODE_HEARTBEATS;
  if (cfg->nats && cfg->mode == MODE_LATENCY)
    tk_die(TK_EXIT_USAGE,
           "--transport nats: only throughput, baseline and heartbeats modes have it");
  if (cfg->jetstream &&
      !(cfg->nats && (cfg->mode == MODE_THROUGHPUT || cfg->mode == MODE_BASELINE)))
    tk_die(TK_EXIT_USAGE,
           "--jetstream: only with --transport nats, in throughput or baseline mode");
  if ((cfg->interval_ms != 1000 || cfg->no_heartbeats) && cfg->mode != MODE_HEARTBEATS)
    tk_die(TK_EXIT_USAGE, "--interval-ms and --no-heartbeats belong to --mode heartbeats");
  if (cfg->mode == MODE_HEARTBEATS && !cfg->gateway)
    tk_die(TK_EXIT_USAGE, "heartbeats mode needs --gateway PATH (its CPU is what is measured)");
  if (cfg->mode == MODE_HEARTBEATS && !procs_given) cfg->processors = 1000;
  if (strlen(cfg->gateway_log_level) > 16 || strpbrk(cfg->gateway_log_level, " \t\n"))
    tk_die(TK_EXIT_USAGE, "--gateway-log-level: '%s' is not a log level", cfg->gateway_log_level);
  if (cfg->nats || cfg->mode == MODE_HEARTBEATS) {
    if (strcmp(cfg->nats_url, "none") == 0)
      tk_die(TK_EXIT_USAGE, "--nats-url none: this run needs NATS");
    if (fbci_nats_url_check(cfg->nats_url, err, sizeof err) < 0)
      tk_die(TK_EXIT_USAGE, "--nats-url: %s", err);
  }
}

int main(int argc, char **argv)
{
  tk_set_progname("fb-bench");
  struct bench_config cfg;
  parse_flags(&cfg, argc, argv);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);

  switch (cfg.mode) {
  case MODE_THROUGHPUT: return run_throughput(&cfg);
  case MODE_LATENCY: return run_latency(&cfg);
  case MODE_BASELINE: return run_baseline(&cfg);
  case MODE_HEARTBEATS: return run_heartbeats(&cfg);
  case MODE_CONSUME: return run_consume(&cfg);
  }
  return 1;
}
