/*
 * fb-processor: the sample processor, built on libframebuffer-client. It
 * registers, takes its frames from Redis or NATS (core or JetStream),
 * "works" on <capacity> at a time, sends a result for each and acks; the
 * library heartbeats in the background. One thread of ours (main) owns the
 * client; the library adds its heartbeat thread and nats.c's.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "toolkit.h"

#define PROC_BATCH_MAX 64   /* frames per fbc_next */
#define PROC_BLOCK_MS  1000 /* fbc_next's wait: also bounds the stop latency */
#define PROC_EXIT_DIED 3    /* --die-after */

struct proc_config {
  struct fbc_options o;
  int64_t work_ms, count, die_after;
  bool quiet;
};

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
  got_signal = sig;
}

/* The result of one frame: a fake detection of its type. Returns a new
 * string (free) or NULL. */
static char *make_result(const struct proc_config *cfg, const struct fbc_frame *f, uint64_t *rng)
{
  const char *type = fbc_frame_detection_type(f), *fid = fbc_frame_id(f);
  if (!type) type = "unknown";
  *rng ^= *rng << 13;
  *rng ^= *rng >> 7;
  *rng ^= *rng << 17;
  uint64_t r = *rng;
  json_t *o = json_pack("{s:s, s:s, s:s, s:[{s:s, s:f, s:[i,i,i,i]}], s:I}", "processor_id",
                        cfg->o.id, "frame_id", fid ? fid : "", "detection_type", type, "detections",
                        "label", type, "confidence", 0.5 + (double)(r % 500) / 1000.0, "bbox",
                        (int)(r % 1600), (int)((r >> 12) % 900), 32 + (int)((r >> 24) % 256),
                        32 + (int)((r >> 36) % 256), "work_ms", (json_int_t)cfg->work_ms);
  char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(4)) : NULL;
  json_decref(o);
  return s;
}

/* Results for n frames, then one ack for all: a crash in between repeats
 * frames rather than losing their results (at least once). */
static int complete(struct fbc_client *c, const struct proc_config *cfg,
                    const struct fbc_frame *const *f, size_t n, uint64_t *rng)
{
  for (size_t i = 0; i < n; i++) {
    char *json = make_result(cfg, f[i], rng), latency[32] = "";
    int64_t injected;
    const char *ts = fbc_frame_field(f[i], "inject_ts_us");
    if (ts && fbci_parse_i64(ts, 0, INT64_MAX, &injected) == 0)
      snprintf(latency, sizeof latency, "%.3f", (double)(fbci_real_us() - injected) / 1000.0);
    const char *extra[] = {"latency_ms", latency};
    int rc = json ? fbc_result_fields(c, f[i], json, extra, latency[0] ? 1 : 0) : -ENOMEM;
    free(json);
    if (rc < 0) return rc;
  }
  return fbc_ack(c, f, n);
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
          "  --quiet               no progress lines\n"
          "  --help, --version\n"
          "\n"
          "Heartbeats over NATS go to processors.heartbeat.<id> as JSON {processor_id, status,\n"
          "timestamp, queue_depth, in_flight, capacity, latency_ms}; queue_depth is real: lag +\n"
          "pending of its Redis group, frames waiting in the client (core NATS) or undelivered +\n"
          "unacked in its consumer (JetStream). Without a NATS URL a Redis processor sends the\n"
          "old HTTP heartbeat. NATS results go to frames.results.<id>. A progress line is\n"
          "printed each second in which a count changed.\n"
          "On SIGINT/SIGTERM it finishes the frames in hand, sends a 'stopping' heartbeat\n"
          "(NATS if connected, else HTTP; the gateway then re-routes its backlog), prints\n"
          "its counts and exits 0.\n");
}

static void parse_flags(struct proc_config *cfg, int argc, char **argv)
{
  struct fbc_options *o = &cfg->o;
  memset(cfg, 0, sizeof *cfg);
  fbc_options_init(o);
  fbc_options_from_env(o); /* FB_API, API_TOKEN, REDIS_URL, NATS_URL, NATS_* auth */
  o->id = o->capabilities = NULL;
  o->transport = FBC_REDIS;
  o->log = tk_log_fbc;
  const char *transport = "redis", *nats_env = o->nats_url;
  bool jetstream = false, nats_flag = false;
  o->nats_url = NULL;
  /* Long options only: their values are letters no short option uses. */
  static const struct option opts[] = {
      {"id", required_argument, NULL, 'i'},
      {"capabilities", required_argument, NULL, 'c'},
      {"capacity", required_argument, NULL, 'C'},
      {"api", required_argument, NULL, 'a'},
      {"token", required_argument, NULL, 't'},
      {"redis-url", required_argument, NULL, 'r'},
      {"work-ms", required_argument, NULL, 'w'},
      {"heartbeat-ms", required_argument, NULL, 'b'},
      {"result-stream", required_argument, NULL, 's'},
      {"result-maxlen", required_argument, NULL, 'm'},
      {"count", required_argument, NULL, 'n'},
      {"unregister", no_argument, NULL, 'u'},
      {"quiet", no_argument, NULL, 'q'},
      {"transport", required_argument, NULL, 'T'},
      {"subject", required_argument, NULL, 'S'},
      {"jetstream", no_argument, NULL, 'j'},
      {"nats-url", required_argument, NULL, 'N'},
      {"die-after", required_argument, NULL, 'd'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = tk_getopt(argc, argv, opts)) != -1) {
    switch (c) {
    case 'i': o->id = optarg; break;
    case 'c': o->capabilities = optarg; break;
    case 'C': o->capacity = (int)tk_flag_i64("--capacity", optarg, 1, 100000); break;
    case 'a': o->api_url = optarg; break;
    case 't': o->api_token = optarg; break;
    case 'r': o->redis_url = optarg; break;
    case 'w': cfg->work_ms = tk_flag_i64("--work-ms", optarg, 0, 3600000); break;
    case 'b':
      o->heartbeat_interval_ms = (int)tk_flag_i64("--heartbeat-ms", optarg, 0, 86400000);
      break;
    case 's': o->result_stream = optarg; break;
    case 'm': o->result_maxlen = tk_flag_i64("--result-maxlen", optarg, 0, INT64_MAX / 2); break;
    case 'n': cfg->count = tk_flag_i64("--count", optarg, 0, INT64_MAX / 2); break;
    case 'u': o->unregister_on_close = true; break;
    case 'q': cfg->quiet = true; break;
    case 'T': transport = optarg; break;
    case 'S': o->subject = optarg; break;
    case 'j': jetstream = true; break;
    case 'N': o->nats_url = optarg, nats_flag = true; break;
    case 'd': cfg->die_after = tk_flag_i64("--die-after", optarg, 1, INT64_MAX / 2); break;
    case 'h': usage(stdout); exit(0);
    case 'V':
      printf("fb-processor " TK_VERSION " (libframebuffer-client %s)\n", fbc_version());
      exit(0);
    }
  }
  if (optind < argc) tk_die(TK_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
  if (!o->id) tk_die(TK_EXIT_USAGE, "--id is required (see --help)");
  if (!o->capabilities) tk_die(TK_EXIT_USAGE, "--capabilities is required (see --help)");
  if (strcmp(transport, "nats") == 0)
    o->transport = jetstream ? FBC_JETSTREAM : FBC_NATS;
  else if (strcmp(transport, "redis") != 0)
    tk_die(TK_EXIT_USAGE, "--transport: '%s' is not redis or nats", transport);
  if (o->transport == FBC_REDIS && (o->subject || jetstream))
    tk_die(TK_EXIT_USAGE, "--subject and --jetstream need --transport nats");
  /* A flag or NATS_URL turns NATS on; nats mode needs it (the default URL). */
  if (!nats_flag) o->nats_url = nats_env;
  if (o->transport != FBC_REDIS && !o->nats_url) o->nats_url = TK_DEFAULT_NATS_URL;
  if (o->transport != FBC_REDIS && strcmp(o->nats_url, "none") == 0)
    tk_die(TK_EXIT_USAGE, "--nats-url none: nats mode needs NATS");
  if (o->transport == FBC_REDIS && o->nats_url && strchr(o->id, '.') && strcmp(o->nats_url, "none"))
    tk_log("warning: id '%s' has a '.': heartbeats go over HTTP, not NATS (the gateway reads "
           "one subject token)",
           o->id);
  char why[512];
  if (fbc_options_validate(o, why, sizeof why) < 0) {
    /* Name the flag, not the option field: "redis_url: ..." is --redis-url. */
    size_t n = strcspn(why, ":");
    char flag[40] = "--api";
    if (strncmp(why, "api_url", n) != 0 && n < sizeof flag - 2)
      for (size_t i = 0; i <= n; i++)
        flag[2 + i] = i == n ? '\0' : why[i] == '_' ? '-' : why[i];
    tk_die(TK_EXIT_USAGE, "%s%s", why[n] ? flag : "", why[n] ? why + n : why);
  }
}

int main(int argc, char **argv)
{
  tk_set_progname("fb-processor");
  struct proc_config cfg;
  parse_flags(&cfg, argc, argv);

  /* Signals go to this thread only: the library's threads (and nats.c's),
   * created inside fbc_connect, inherit the blocked mask. */
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  struct fbc_client *c = NULL;
  int rc = fbc_connect(&c, &cfg.o);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) return 1;

  const struct fbc_frame *batch[PROC_BATCH_MAX];
  uint64_t rng = (uint64_t)fbci_real_us() | 1, processed = 0;
  const int64_t start = fbci_mono_us();
  int64_t next_report = start + 1000000, last_report = start;
  struct fbc_stats st, seen = {0};
  int status = 0;
  while (!got_signal) {
    size_t max = PROC_BATCH_MAX;
    fbc_stats(c, &st);
    uint64_t done = processed + st.skipped;
    if (cfg.count > 0) {
      if (done >= (uint64_t)cfg.count) break;
      if ((uint64_t)cfg.count - done < max) max = (size_t)((uint64_t)cfg.count - done);
    }
    int n = fbc_next(c, batch, max, PROC_BLOCK_MS);
    if (n < 0) {
      status = 1;
      break;
    }
    /* Work on <capacity> frames at a time: each group takes work_ms. */
    for (size_t off = 0; off < (size_t)n;) {
      if (cfg.die_after > 0 && processed >= (uint64_t)cfg.die_after) {
        /* A crash: nothing acked, no 'stopping' heartbeat, nothing flushed. */
        tk_log("--die-after %lld: dying with %zu frames in hand, unacked", (long long)cfg.die_after,
               (size_t)n - off);
        _exit(PROC_EXIT_DIED);
      }
      size_t k = (size_t)n - off;
      if (k > (size_t)cfg.o.capacity) k = (size_t)cfg.o.capacity;
      if (cfg.work_ms > 0) tk_sleep_us(cfg.work_ms * 1000);
      if (complete(c, &cfg, batch + off, k, &rng) < 0) break; /* they come again */
      processed += k;
      off += k;
    }
    if (cfg.die_after > 0 && processed >= (uint64_t)cfg.die_after) {
      tk_log("--die-after %lld: dying", (long long)cfg.die_after);
      _exit(PROC_EXIT_DIED);
    }
    int64_t now = fbci_mono_us();
    if (now >= next_report) {
      fbc_stats(c, &st);
      /* A line only when something changed: an idle processor stays quiet. */
      bool changed = st.acked != seen.acked || st.skipped != seen.skipped ||
                     st.reconnects != seen.reconnects || st.registered != seen.registered;
      if (!cfg.quiet && changed)
        tk_log("%s: processed %llu (%.0f/s), skipped %llu, reconnects %llu%s", cfg.o.id,
               (unsigned long long)processed,
               (double)(st.acked - seen.acked) * 1e6 / (double)(now - last_report),
               (unsigned long long)st.skipped, (unsigned long long)st.reconnects,
               !cfg.o.api_url || !strcmp(cfg.o.api_url, "none") || st.registered
                   ? ""
                   : ", not registered yet");
      seen = st;
      last_report = now;
      next_report = now + 1000000;
    }
  }

  double secs = (double)(fbci_mono_us() - start) / 1e6;
  fbc_stats(c, &st);
  fbc_close(c);
  const char *kind = cfg.o.transport == FBC_REDIS  ? "redis"
                     : cfg.o.transport == FBC_NATS ? "nats"
                                                   : "jetstream";
  printf("fb-processor %s: processed %llu frames, skipped %llu, reconnects %llu, in %.3f s "
         "(%.0f frames/s)\n",
         cfg.o.id, (unsigned long long)processed, (unsigned long long)st.skipped,
         (unsigned long long)st.reconnects, secs, secs > 0 ? (double)processed / secs : 0);
  printf("RESULT {\"processor_id\":\"%s\",\"transport\":\"%s\",\"processed\":%llu,\"skipped\":%llu,"
         "\"reconnects\":%llu,\"seconds\":%.3f}\n",
         cfg.o.id, kind, (unsigned long long)processed, (unsigned long long)st.skipped,
         (unsigned long long)st.reconnects, secs);
  fflush(stdout);
  return status;
}
