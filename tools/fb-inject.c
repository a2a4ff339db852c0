/*
 * fb-inject: writes synthetic camera frames into the input stream, flat out
 * or paced at a rate, pipelining XADDs; for load tests and for feeding
 * malformed entries to tests. With --frames 0 it runs until stopped and
 * rides out Redis errors (reconnecting with backoff). One thread;
 * SIGINT/SIGTERM stop it cleanly.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tk_frame.h"
#include "toolkit.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
  (void)sig;
  stop_requested = 1;
}

#define RECONNECT_FIRST_US 100000
#define RECONNECT_MAX_US   5000000

/* Connects, and with `forever` keeps trying with backoff until Redis is
 * there or a signal stops us. Returns the context, or NULL with `err`. */
static redisContext *connect_redis(const struct fbci_redis_url *url, bool forever, char *err,
                                   size_t errlen)
{
  int64_t backoff = RECONNECT_FIRST_US;
  bool said = false;
  for (;;) {
    redisContext *rc = fbci_redis_connect(url, 5000, err, errlen);
    if (rc || !forever || stop_requested) {
      if (rc && said) tk_log("connected to Redis again; going on");
      return rc;
    }
    if (!said) tk_log("%s; retrying with backoff until it is back (Ctrl-C stops)", err);
    said = true;
    tk_sleep_us(backoff);
    backoff = backoff * 2 > RECONNECT_MAX_US ? RECONNECT_MAX_US : backoff * 2;
  }
}

static void usage(FILE *to)
{
  fprintf(to, "Usage: fb-inject [options]\n"
              "Writes synthetic camera frames (docs/protocol.md: Frames in) into a Redis stream.\n"
              "\n"
              "  --redis-url URL        Redis (env REDIS_URL, default " TK_DEFAULT_REDIS_URL ")\n"
              "  --stream NAME          input stream (default frames:metadata)\n"
              "  --frames N             frames to write; 0 = until Ctrl-C, reconnecting\n"
              "                         after Redis errors (default 1000)\n"
              "  --rate R               frames per second; 0 = flat out (default 0)\n"
              "  --cameras C            cameras cam-000.. (default 16)\n"
              "  --types LIST           detection types, comma-separated, picked at random\n"
              "                         (default person,vehicle,face)\n"
              "  --pipeline K           XADDs per round trip (default 256)\n"
              "  --malformed-every K    every K-th entry is malformed, rotating: no frame_id,\n"
              "                         metadata not an object, trace_context not an object\n"
              "  --maxlen N             cap the stream with XADD MAXLEN ~ N\n"
              "  --seed S               random seed (default: from the clock)\n"
              "  --quiet                no progress lines\n"
              "  --help, --version\n"
              "\n"
              "Every frame carries inject_ts_us (CLOCK_REALTIME microseconds) for fb-bench.\n"
              "The last line is machine-readable: RESULT {\"injected\":N,...}\n");
}

int main(int argc, char **argv)
{
  tk_set_progname("fb-inject");
  const char *redis_url = tk_env_or("REDIS_URL", TK_DEFAULT_REDIS_URL);
  const char *stream = "frames:metadata";
  const char *types_arg = "person,vehicle,face";
  int64_t frames = 1000, cameras = 16, pipeline = 256, malformed_every = 0, maxlen = 0, seed = 0;
  double rate = 0;
  int quiet = 0;

  enum {
    O_REDIS = 256,
    O_STREAM,
    O_FRAMES,
    O_RATE,
    O_CAMERAS,
    O_TYPES,
    O_PIPELINE,
    O_MALFORMED,
    O_MAXLEN,
    O_SEED,
    O_QUIET,
    O_HELP,
    O_VERSION
  };
  static const struct option opts[] = {
      {"redis-url", required_argument, NULL, O_REDIS},
      {"stream", required_argument, NULL, O_STREAM},
      {"frames", required_argument, NULL, O_FRAMES},
      {"rate", required_argument, NULL, O_RATE},
      {"cameras", required_argument, NULL, O_CAMERAS},
      {"types", required_argument, NULL, O_TYPES},
      {"pipeline", required_argument, NULL, O_PIPELINE},
      {"malformed-every", required_argument, NULL, O_MALFORMED},
      {"maxlen", required_argument, NULL, O_MAXLEN},
      {"seed", required_argument, NULL, O_SEED},
      {"quiet", no_argument, NULL, O_QUIET},
      {"help", no_argument, NULL, O_HELP},
      {"version", no_argument, NULL, O_VERSION},
      {NULL, 0, NULL, 0},
  };
  int c;
  while ((c = tk_getopt(argc, argv, opts)) != -1) {
    switch (c) {
    case O_REDIS: redis_url = optarg; break;
    case O_STREAM: stream = optarg; break;
    case O_FRAMES: frames = tk_flag_i64("--frames", optarg, 0, INT64_MAX / 2); break;
    case O_RATE: rate = tk_flag_double("--rate", optarg, 0, 1e8); break;
    case O_CAMERAS: cameras = tk_flag_i64("--cameras", optarg, 1, 100000); break;
    case O_TYPES: types_arg = optarg; break;
    case O_PIPELINE: pipeline = tk_flag_i64("--pipeline", optarg, 1, 100000); break;
    case O_MALFORMED:
      malformed_every = tk_flag_i64("--malformed-every", optarg, 1, INT64_MAX / 2);
      break;
    case O_MAXLEN: maxlen = tk_flag_i64("--maxlen", optarg, 1, INT64_MAX / 2); break;
    case O_SEED: seed = tk_flag_i64("--seed", optarg, 1, INT64_MAX); break;
    case O_QUIET: quiet = 1; break;
    case O_HELP: usage(stdout); return 0;
    case O_VERSION: printf("fb-inject " TK_VERSION "\n"); return 0;
    }
  }
  if (optind < argc) tk_die(TK_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
  if (!*stream) tk_die(TK_EXIT_USAGE, "--stream: must not be empty");

  char err[512];
  struct tk_strlist types;
  if (tk_strlist_parse(&types, types_arg, 64, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--types: %s", err);
  struct fbci_redis_url url;
  if (fbci_redis_url_parse(&url, redis_url, err, sizeof err) < 0)
    tk_die(TK_EXIT_USAGE, "--redis-url: %s", err);

  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  redisContext *rc = connect_redis(&url, frames == 0, err, sizeof err);
  if (!rc && stop_requested) tk_die(130, "interrupted");
  if (!rc) tk_die(1, "%s", err);

  struct tk_framegen gen;
  tk_framegen_init(&gen, stream, (unsigned)cameras, types.v, types.n, (uint64_t)malformed_every,
                   maxlen, (uint64_t)seed);
  struct tk_frame frame;

  int status = 0;
  int64_t sent = 0;
  const int64_t start = fbci_mono_us();
  int64_t next_report = start + 1000000, last_report_sent = 0;
  while (!stop_requested && (frames == 0 || sent < frames)) {
    int64_t now = fbci_mono_us();
    int64_t burst = pipeline;
    if (rate > 0) {
      /* Send what is due by now, in bursts no larger than the pipeline; when
       * nothing is due, sleep until the next frame is (at most 1 ms). */
      int64_t due = (int64_t)((double)(now - start) * rate / 1e6) + 1 - sent;
      if (due <= 0) {
        int64_t next_at = start + (int64_t)((double)sent * 1e6 / rate);
        int64_t wait = next_at - now;
        tk_sleep_us(wait > 1000 ? 1000 : (wait < 50 ? 50 : wait));
        continue;
      }
      if (due < burst) burst = due;
    }
    if (frames > 0 && frames - sent < burst) burst = frames - sent;

    int64_t ts = fbci_real_us();
    for (int64_t i = 0; i < burst; i++) {
      tk_framegen_next(&gen, &frame, ts);
      redisAppendCommandArgv(rc, frame.argc, frame.argv, frame.argvlen);
    }
    int drc = fbci_redis_drain(rc, (size_t)burst, err, sizeof err);
    if (drc < 0 && frames == 0) {
      /* Run until stopped: what this burst wrote is unknown, so it is not
       * counted; new frames get new ids, so none is written twice. */
      tk_log("XADD to %s failed after %lld frames: %s; reconnecting", stream, (long long)sent, err);
      redisFree(rc);
      rc = connect_redis(&url, true, err, sizeof err);
      if (!rc) break; /* stopped meanwhile */
      continue;
    }
    if (drc < 0) {
      tk_log("XADD to %s failed after %lld frames: %s", stream, (long long)sent, err);
      status = 1;
      break;
    }
    sent += burst;

    if (!quiet && (now = fbci_mono_us()) >= next_report) {
      tk_log("injected %lld (+%lld/s)", (long long)sent, (long long)(sent - last_report_sent));
      last_report_sent = sent;
      next_report += 1000000;
      if (next_report < now) next_report = now + 1000000;
    }
  }
  double secs = (double)(fbci_mono_us() - start) / 1e6;
  double achieved = secs > 0 ? (double)sent / secs : 0;

  printf("fb-inject: injected %lld frames (%llu malformed) into %s in %.3f s: %.0f frames/s%s\n",
         (long long)sent, (unsigned long long)(gen.malformed), stream, secs, achieved,
         stop_requested ? " (interrupted)" : "");
  printf("RESULT {\"injected\":%lld,\"malformed\":%llu,\"seconds\":%.3f,\"rate\":%.1f,"
         "\"run_id\":\"%s\"}\n",
         (long long)sent, (unsigned long long)gen.malformed, secs, achieved, gen.run_id);
  fflush(stdout);
  if (rc) redisFree(rc);
  tk_strlist_free(&types);
  return status;
}
