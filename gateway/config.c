/*
 * Settings from defaults, then environment, then flags (flags win).
 * Runs on the main thread at start; the result is never changed afterwards.
 */
#include "framebuffer/config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef FB_VERSION
#define FB_VERSION "2.0.0"
#endif

/* ---------------------------------------------------------------- names */

/* The one place each name is spelled; in enum order. */
static const char *const strategy_names[FB_STRATEGY_COUNT] = {"round_robin", "weighted_round_robin",
                                                              "least_loaded", "consistent_hash"};
static const char *const overload_names[FB_OVERLOAD_COUNT] = {"drop_oldest", "reject", "block"};

#define NNAMES(t) (sizeof t / sizeof t[0])

/* Index of `s` in names[0..count), or -1. */
static int find_name(const char *const *names, size_t count, const char *s)
{
  for (size_t i = 0; i < count; i++)
    if (!strcmp(s, names[i])) return (int)i;
  return -1;
}

const char *fb_names_join(const char *const *names, size_t count, char *out, size_t n)
{
  size_t len = 0;
  if (n) out[0] = '\0';
  for (size_t i = 0; i < count && len < n; i++) {
    int w = snprintf(out + len, n - len, "%s%s", i ? ", " : "", names[i]);
    if (w < 0) break;
    len += (size_t)w;
  }
  return out;
}

const char *fb_strategy_name(enum fb_strategy s)
{
  return (unsigned)s < NNAMES(strategy_names) ? strategy_names[s] : "unknown";
}

int fb_strategy_parse(const char *s, enum fb_strategy *out)
{
  int i = find_name(strategy_names, NNAMES(strategy_names), s);
  if (i < 0) return -EINVAL;
  *out = (enum fb_strategy)i;
  return 0;
}

const char *fb_strategy_list(char *out, size_t n)
{
  return fb_names_join(strategy_names, NNAMES(strategy_names), out, n);
}

const char *fb_overload_policy_name(enum fb_overload_policy p)
{
  return (unsigned)p < NNAMES(overload_names) ? overload_names[p] : "unknown";
}

int fb_overload_policy_parse(const char *s, enum fb_overload_policy *out)
{
  int i = find_name(overload_names, NNAMES(overload_names), s);
  if (i < 0) return -EINVAL;
  *out = (enum fb_overload_policy)i;
  return 0;
}

const char *fb_overload_policy_list(char *out, size_t n)
{
  return fb_names_join(overload_names, NNAMES(overload_names), out, n);
}

/* ------------------------------------------------------------- parsers */

/* Each parser reads `v` into the field at `dst`; on failure it writes why
 * into `why` and returns -EINVAL. */
typedef int (*parse_fn)(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n);

static int parse_i64(const char *v, int64_t min, int64_t max, int64_t *out, char *why, size_t n)
{
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end) {
    snprintf(why, n, "'%s' is not a whole number", v);
    return -EINVAL;
  }
  if (x < min || x > max) {
    snprintf(why, n, "%lld is out of range %lld..%lld", x, (long long)min, (long long)max);
    return -EINVAL;
  }
  *out = x;
  return 0;
}

static int copy_str(const char *v, char *dst, size_t cap, char *why, size_t n)
{
  size_t len = strlen(v);
  if (len >= cap) {
    snprintf(why, n, "longer than %zu characters", cap - 1);
    return -EINVAL;
  }
  memcpy(dst, v, len + 1);
  return 0;
}

#define STR_PARSER(name, field)                                                                    \
  static int name(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)            \
  {                                                                                                \
    (void)dst;                                                                                     \
    return copy_str(v, cfg->field, sizeof cfg->field, why, n);                                     \
  }

STR_PARSER(p_nats_token, nats_token)
STR_PARSER(p_nats_user, nats_user)
STR_PARSER(p_nats_password, nats_password)
/* A file named by a setting must be readable now, not at the first connect. */
static int readable_file(const char *v, char *dst, size_t cap, char *why, size_t n)
{
  if (*v && access(v, R_OK)) {
    snprintf(why, n, "cannot read '%s': %s", v, strerror(errno));
    return -EINVAL;
  }
  return copy_str(v, dst, cap, why, n);
}

static int p_nats_creds(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return readable_file(v, cfg->nats_creds, sizeof cfg->nats_creds, why, n);
}

static int p_nats_tls_ca(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return readable_file(v, cfg->nats_tls_ca, sizeof cfg->nats_tls_ca, why, n);
}
STR_PARSER(p_api_token, api_token)
STR_PARSER(p_processor_token, processor_token)

/* Each origin is scheme://host[:port], without a path; or the list is "*". */
static int p_allowed_origins(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  int rc = copy_str(v, cfg->allowed_origins, sizeof cfg->allowed_origins, why, n);
  if (rc || !strcmp(v, "*")) return rc;
  for (const char *p = v; *p;) {
    size_t len = strcspn(p, ",");
    const char *host = strstr(p, "://");
    if (!len || (strncmp(p, "http://", 7) && strncmp(p, "https://", 8)) || !host ||
        host + 3 >= p + len || memchr(host + 3, '/', (size_t)(p + len - host - 3)) ||
        memchr(p, ' ', len)) {
      snprintf(why, n, "'%.*s' is not an origin like https://dashboard.example.com[:port]",
               (int)len, p);
      return -EINVAL;
    }
    p += len + (p[len] == ',');
  }
  return 0;
}
STR_PARSER(p_redis_password, redis.password)

static int p_name(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (!*v) {
    snprintf(why, n, "must not be empty");
    return -EINVAL;
  }
  if (strstr(v, "$(")) {
    /* Kubernetes expands $(VAR) only for variables defined before it. */
    snprintf(why, n, "'%s' holds an unexpanded $(...) reference", v);
    return -EINVAL;
  }
  for (const char *p = v; *p; p++)
    if ((unsigned char)*p <= ' ') {
      snprintf(why, n, "must not contain spaces or control characters");
      return -EINVAL;
    }
  return copy_str(v, dst, FB_NAME_MAX, why, n);
}

static int p_bool(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  bool *b = dst;
  if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"))
    *b = true;
  else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
           !strcasecmp(v, "off") || !*v)
    *b = false;
  else {
    snprintf(why, n, "'%s' is not a boolean (1/0, true/false)", v);
    return -EINVAL;
  }
  return 0;
}

static int p_ms(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return parse_i64(v, 0, INT64_C(86400000) * 365, dst, why, n);
}

static int p_port_num(const char *v, int *out, char *why, size_t n)
{
  int64_t x;
  if (parse_i64(v, 1, 65535, &x, why, n)) return -EINVAL;
  *out = (int)x;
  return 0;
}

static int p_redis_url(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  /* A password given separately (REDIS_PASSWORD) survives a URL without
   * one; the sentinel settings are not the URL's. */
  struct fb_redis_endpoint ep;
  if (fb_config_parse_redis_url(v, &ep, why, n)) return -EINVAL;
  struct fb_redis_endpoint *r = &cfg->redis;
  memcpy(r->host, ep.host, sizeof r->host);
  r->port = ep.port;
  r->db = ep.db;
  memcpy(r->username, ep.username, sizeof r->username);
  if (ep.password[0]) memcpy(r->password, ep.password, sizeof r->password);
  return 0;
}

static int p_redis_host(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (!*v) {
    snprintf(why, n, "must not be empty");
    return -EINVAL;
  }
  return copy_str(v, cfg->redis.host, sizeof cfg->redis.host, why, n);
}

static int p_redis_port(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return p_port_num(v, &cfg->redis.port, why, n);
}

static int p_redis_db(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  int64_t x;
  if (parse_i64(v, 0, 15, &x, why, n)) return -EINVAL;
  cfg->redis.db = (int)x;
  return 0;
}

/* "host:port,host:port,...": at most FB_SENTINELS_MAX. */
static int p_redis_sentinels(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  struct fb_redis_endpoint *ep = &cfg->redis;
  ep->nsentinels = 0;
  const char *p = v;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (!*p) break;
    size_t len = strcspn(p, ",");
    while (len && p[len - 1] == ' ')
      len--;
    const char *colon = memchr(p, ':', len);
    if (ep->nsentinels == FB_SENTINELS_MAX) {
      snprintf(why, n, "more than %d sentinels", FB_SENTINELS_MAX);
      return -EINVAL;
    }
    struct fb_hostport *hp = &ep->sentinels[ep->nsentinels];
    size_t hl = colon ? (size_t)(colon - p) : 0;
    char port[16];
    size_t pl = colon ? len - hl - 1 : 0;
    if (!colon || !hl || hl >= sizeof hp->host || !pl || pl >= sizeof port) {
      snprintf(why, n, "'%.*s' is not host:port", (int)len, p);
      return -EINVAL;
    }
    memcpy(hp->host, p, hl);
    hp->host[hl] = '\0';
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    char pwhy[128];
    if (p_port_num(port, &hp->port, pwhy, sizeof pwhy)) {
      snprintf(why, n, "'%.*s': port %s", (int)len, p, pwhy);
      return -EINVAL;
    }
    ep->nsentinels++;
    p += strcspn(p, ",");
  }
  return 0;
}

static int p_sentinel_master(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return copy_str(v, cfg->redis.sentinel_master, sizeof cfg->redis.sentinel_master, why, n);
}
STR_PARSER(p_sentinel_password, redis.sentinel_password)

static int p_wait_replicas(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  int64_t x;
  if (parse_i64(v, 0, 100, &x, why, n)) return -EINVAL;
  cfg->redis_wait_replicas = (int)x;
  return 0;
}

static int p_js_replicas(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (strcmp(v, "1") && strcmp(v, "3") && strcmp(v, "5")) {
    snprintf(why, n, "'%s' is not 1, 3 or 5", v);
    return -EINVAL;
  }
  cfg->nats_js_replicas = v[0] - '0';
  return 0;
}

static int p_nats_url(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (!strcasecmp(v, "none") || !*v) {
    cfg->nats_enabled = false;
    cfg->nats_url[0] = '\0';
    return 0;
  }
  /* Every comma-separated server must be nats://, tls:// or host:port. */
  char tmp[sizeof cfg->nats_url];
  if (copy_str(v, tmp, sizeof tmp, why, n)) return -EINVAL;
  char *save = NULL;
  for (char *s = strtok_r(tmp, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
    while (*s == ' ')
      s++;
    if (strncmp(s, "nats://", 7) && strncmp(s, "tls://", 6) && !strchr(s, ':')) {
      snprintf(why, n, "'%s' is not a NATS server URL (nats://host:port)", s);
      return -EINVAL;
    }
  }
  cfg->nats_enabled = true;
  return copy_str(v, cfg->nats_url, sizeof cfg->nats_url, why, n);
}

static int p_listen(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  const char *colon = strrchr(v, ':');
  if (!colon) {
    snprintf(why, n, "'%s' is not host:port", v);
    return -EINVAL;
  }
  size_t hl = (size_t)(colon - v);
  if (hl >= sizeof cfg->listen_host) {
    snprintf(why, n, "host is too long");
    return -EINVAL;
  }
  if (p_port_num(colon + 1, &cfg->listen_port, why, n)) return -EINVAL;
  memcpy(cfg->listen_host, v, hl);
  cfg->listen_host[hl] = '\0';
  if (!hl) snprintf(cfg->listen_host, sizeof cfg->listen_host, "0.0.0.0");
  return 0;
}

static int p_port(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return p_port_num(v, &cfg->listen_port, why, n);
}

static int p_strategy(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  char list[FB_NAME_LIST_MAX];
  if (fb_strategy_parse(v, &cfg->strategy)) {
    snprintf(why, n, "'%s' is not one of %s", v, fb_strategy_list(list, sizeof list));
    return -EINVAL;
  }
  return 0;
}

static int p_overload(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  char list[FB_NAME_LIST_MAX];
  if (fb_overload_policy_parse(v, &cfg->overload_policy)) {
    snprintf(why, n, "'%s' is not one of %s", v, fb_overload_policy_list(list, sizeof list));
    return -EINVAL;
  }
  return 0;
}

static int p_max_deliveries(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  int64_t x;
  if (parse_i64(v, 1, 1000, &x, why, n)) return -EINVAL;
  cfg->max_deliveries = (int)x;
  return 0;
}

static int p_batch(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  int64_t x;
  if (parse_i64(v, 1, 10000, &x, why, n)) return -EINVAL;
  cfg->batch_size = (int)x;
  return 0;
}

static int p_count(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  return parse_i64(v, 1, INT64_C(1000000000), dst, why, n);
}

static int p_hash_bound(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !(x >= 1.0 && x <= 100.0)) {
    snprintf(why, n, "'%s' is not a number between 1.0 and 100", v);
    return -EINVAL;
  }
  cfg->hash_bound = x;
  return 0;
}

static int p_log_level(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (fb_log_level_parse(v, &cfg->log_level)) {
    snprintf(why, n, "'%s' is not one of debug, info, warn, error", v);
    return -EINVAL;
  }
  return 0;
}

static int p_log_format(struct fb_config *cfg, void *dst, const char *v, char *why, size_t n)
{
  if (fb_log_format_parse(v, &cfg->log_format)) {
    snprintf(why, n, "'%s' is not one of text, json", v);
    return -EINVAL;
  }
  return 0;
}

/* -------------------------------------------------------------- table */

struct setting {
  const char *env;  /* environment variable, or NULL */
  const char *flag; /* long flag without dashes, or NULL */
  const char *arg;  /* placeholder in --help */
  const char *dflt; /* shown in --help; NULL: a name, from set_defaults */
  parse_fn parse;
  size_t offset; /* of the field passed as `dst` */
  const char *help;
};

#define OFF(f) offsetof(struct fb_config, f)

/* Order matters where settings overlap: later ones refine earlier ones
 * (REDIS_HOST after REDIS_URL would be wrong, so the URL comes last). */
static const struct setting settings[] = {
    {"REDIS_HOST", NULL, NULL, NULL, p_redis_host, 0, NULL},
    {"REDIS_PORT", NULL, NULL, NULL, p_redis_port, 0, NULL},
    {"REDIS_DB", NULL, NULL, NULL, p_redis_db, 0, NULL},
    {"REDIS_PASSWORD", NULL, NULL, NULL, p_redis_password, 0, NULL},
    {"REDIS_URL", "redis-url", "URL", "redis://127.0.0.1:6379/0", p_redis_url, 0,
     "Redis server (also REDIS_HOST, REDIS_PORT, REDIS_DB, REDIS_PASSWORD)"},
    {"REDIS_SENTINELS", "redis-sentinels", "HOST:PORT,...", "unset", p_redis_sentinels, 0,
     "Redis Sentinels to ask for the primary (instead of REDIS_URL's host:port)"},
    {"REDIS_SENTINEL_MASTER", "redis-sentinel-master", "NAME", "unset", p_sentinel_master, 0,
     "the master name the sentinels watch (needed with REDIS_SENTINELS)"},
    {"REDIS_SENTINEL_PASSWORD", "redis-sentinel-password", "PASSWORD", "unset", p_sentinel_password,
     0, "AUTH for the sentinels"},
    {"REDIS_WAIT_REPLICAS", "redis-wait-replicas", "N", "0", p_wait_replicas, 0,
     "after each hand-off, WAIT until N Redis replicas have it"},
    {"NATS_URL", "nats-url", "URLS", "nats://127.0.0.1:4222", p_nats_url, 0,
     "comma-separated NATS servers; 'none' runs Redis-only"},
    {"NATS_TOKEN", "nats-token", "TOKEN", "unset", p_nats_token, 0, "NATS auth token"},
    {"NATS_USER", "nats-user", "USER", "unset", p_nats_user, 0, "NATS user"},
    {"NATS_PASSWORD", "nats-password", "PASSWORD", "unset", p_nats_password, 0, "NATS password"},
    {"NATS_CREDS", "nats-creds", "FILE", "unset", p_nats_creds, 0, "NATS credentials file"},
    {"NATS_TLS_CA", "nats-tls-ca", "FILE", "unset", p_nats_tls_ca, 0, "CA bundle for NATS TLS"},
    {"NATS_JETSTREAM", "nats-jetstream", "BOOL", "0", p_bool, OFF(nats_jetstream),
     "publish remote frames through JetStream stream FRAMES"},
    {"NATS_JS_REPLICAS", "nats-js-replicas", "N", "1", p_js_replicas, 0,
     "replicas of stream FRAMES when the gateway creates it: 1, 3 or 5"},
    {"PORT", NULL, NULL, NULL, p_port, 0, NULL},
    {"LISTEN", "listen", "HOST:PORT", "0.0.0.0:8002", p_listen, 0,
     "HTTP + WebSocket listener (PORT alone sets the port)"},
    {"INPUT_STREAM", "input-stream", "KEY", "frames:metadata", p_name, OFF(input_stream),
     "Redis stream the cameras write to"},
    {"CONSUMER_GROUP", "consumer-group", "NAME", "frame-buffer-group", p_name, OFF(consumer_group),
     "consumer group on the input stream"},
    {"CONSUMER_NAME", "consumer-name", "NAME", "host name", p_name, OFF(consumer_name),
     "this replica's consumer name; keep it stable across restarts"},
    /* --help adds the names and the default of these two (see usage). */
    {"ROUTING_STRATEGY", "strategy", "NAME", NULL, p_strategy, 0, ""},
    {"OVERLOAD_POLICY", "overload-policy", "NAME", NULL, p_overload, 0,
     "when every candidate is full: "},
    {"HEARTBEAT_TIMEOUT_MS", "heartbeat-timeout-ms", "MS", "90000", p_ms, OFF(heartbeat_timeout_ms),
     "no heartbeat for this long: processor is dead"},
    {"FRAME_MAX_AGE_MS", "frame-max-age-ms", "MS", "0 (off)", p_ms, OFF(frame_max_age_ms),
     "older frames are dropped as expired"},
    {"MAX_DELIVERIES", "max-deliveries", "N", "5", p_max_deliveries, 0,
     "entries delivered more often go to the DLQ as poison"},
    {"BATCH_SIZE", "batch-size", "N", "256", p_batch, 0, "entries read per XREADGROUP"},
    {"CLAIM_IDLE_MS", "claim-idle-ms", "MS", "30000", p_ms, OFF(claim_idle_ms),
     "claim entries another consumer left pending this long"},
    {"DLQ_MAXLEN", "dlq-maxlen", "N", "100000", p_count, OFF(dlq_maxlen),
     "frames:dlq is capped at about this many entries"},
    {"DLQ_REPLAY_MAX", "dlq-replay-max", "N", "3", p_count, OFF(dlq_replay_max),
     "a DLQ entry replayed this many times is skipped by replays"},
    {"FRAME_TRACE", "frame-trace", "BOOL", "1", p_bool, OFF(frame_trace),
     "remember where the last frames went, for GET /api/v1/frames/{id}"},
    {"SLOW_START_MS", "slow-start-ms", "MS", "0 (off)", p_ms, OFF(slow_start_ms),
     "ramp a new processor's share up over this long"},
    {"HASH_BOUND", "hash-bound", "X", "1.25", p_hash_bound, 0,
     "consistent_hash: load above X times the average spills to the next processor"},
    {"FLEET_VIEW", "fleet-view", "BOOL", "1", p_bool, OFF(fleet_view),
     "publish this replica's figures to Redis each second for the fleet view"},
    {"API_TOKEN", "api-token", "TOKEN", "unset", p_api_token, 0,
     "require 'Authorization: Bearer TOKEN' on requests that change state"},
    {"PROCESSOR_TOKEN", "processor-token", "TOKEN", "unset", p_processor_token, 0,
     "a second token for register and heartbeat only; 'open': they need none"},
    {"ALLOWED_ORIGINS", "allowed-origins", "ORIGINS", "unset", p_allowed_origins, 0,
     "other web origins allowed to call the API (CORS) and open /ws; '*' for any"},
    {"LOG_LEVEL", "log-level", "LEVEL", "info", p_log_level, 0, "debug, info, warn, error"},
    {"LOG_FORMAT", "log-format", "FORMAT", "text", p_log_format, 0, "text or json"},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

static void set_defaults(struct fb_config *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->redis.host, sizeof cfg->redis.host, "127.0.0.1");
  cfg->redis.port = 6379;
  cfg->nats_enabled = true;
  snprintf(cfg->nats_url, sizeof cfg->nats_url, "nats://127.0.0.1:4222");
  snprintf(cfg->listen_host, sizeof cfg->listen_host, "0.0.0.0");
  cfg->listen_port = 8002;
  snprintf(cfg->input_stream, sizeof cfg->input_stream, "frames:metadata");
  snprintf(cfg->consumer_group, sizeof cfg->consumer_group, "frame-buffer-group");
  if (gethostname(cfg->consumer_name, sizeof cfg->consumer_name - 1) || !cfg->consumer_name[0])
    snprintf(cfg->consumer_name, sizeof cfg->consumer_name, "frame-buffer");
  cfg->strategy = FB_STRATEGY_LEAST_LOADED;
  cfg->overload_policy = FB_OVERLOAD_DROP_OLDEST;
  cfg->heartbeat_timeout_ms = 90000;
  cfg->max_deliveries = 5;
  cfg->batch_size = 256;
  cfg->claim_idle_ms = 30000;
  cfg->dlq_maxlen = 100000;
  cfg->dlq_replay_max = 3;
  cfg->frame_trace = true;
  cfg->hash_bound = 1.25;
  cfg->nats_js_replicas = 1;
  cfg->fleet_view = true;
  cfg->log_level = FB_LOG_INFO;
  cfg->log_format = FB_LOG_TEXT;
}

static int apply(struct fb_config *cfg, const struct setting *s, const char *v, const char *origin,
                 char *why, size_t n)
{
  char reason[256] = "";
  void *dst = s->offset ? (char *)cfg + s->offset : NULL;
  if (s->parse(cfg, dst, v, reason, sizeof reason) == 0) return 0;
  snprintf(why, n, "invalid setting %s: %s", origin, reason);
  return -EINVAL;
}

static void usage(FILE *out, const char *prog)
{
  fprintf(out,
          "Usage: %s [options]\n\n"
          "frame-buffer routes video frame metadata from a Redis stream to registered\n"
          "processors (Redis streams or NATS subjects) and serves the processor API and\n"
          "the live dashboard.\n\n"
          "Every option is also an environment variable; options win.\n\n",
          prog);
  struct fb_config d;
  set_defaults(&d);
  for (size_t i = 0; i < NSETTINGS; i++) {
    const struct setting *s = &settings[i];
    if (!s->flag) continue;
    char left[64], list[FB_NAME_LIST_MAX] = "";
    const char *dflt = s->dflt;
    if (s->parse == p_strategy) {
      fb_strategy_list(list, sizeof list);
      dflt = fb_strategy_name(d.strategy);
    } else if (s->parse == p_overload) {
      fb_overload_policy_list(list, sizeof list);
      dflt = fb_overload_policy_name(d.overload_policy);
    }
    snprintf(left, sizeof left, "--%s %s", s->flag, s->arg);
    fprintf(out, "  %-30s %s%s\n  %-30s [%s, default %s]\n", left, s->help, list, "", s->env, dflt);
  }
  fprintf(out, "\n  %-30s %s\n  %-30s %s\n", "-h, --help", "show this help and exit",
          "-V, --version", "print the version and exit");
  fprintf(out, "\nBad settings exit with status 2. Docs: README.md.\n");
}

int fb_config_load(struct fb_config *cfg, int argc, char **argv, char *why, size_t n)
{
  set_defaults(cfg);

  for (size_t i = 0; i < NSETTINGS; i++) {
    const char *v = getenv(settings[i].env);
    if (v && apply(cfg, &settings[i], v, settings[i].env, why, n)) return -EINVAL;
  }

  struct option opts[NSETTINGS + 3];
  size_t no = 0;
  for (size_t i = 0; i < NSETTINGS; i++)
    if (settings[i].flag)
      opts[no++] = (struct option){settings[i].flag, required_argument, NULL, (int)(256 + i)};
  opts[no++] = (struct option){"help", no_argument, NULL, 'h'};
  opts[no++] = (struct option){"version", no_argument, NULL, 'V'};
  opts[no] = (struct option){NULL, 0, NULL, 0};

  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":hV", opts, NULL)) != -1) {
    if (c == 'h') {
      usage(stdout, argv[0]);
      return FB_CONFIG_EXIT;
    }
    if (c == 'V') {
      printf("frame-buffer %s\n", FB_VERSION);
      return FB_CONFIG_EXIT;
    }
    if (c == '?' || c == ':') {
      const char *bad = argv[optind - 1];
      snprintf(why, n, "%s option %s (see --help)", c == ':' ? "missing value for" : "unknown",
               bad ? bad : "?");
      return -EINVAL;
    }
    const struct setting *s = &settings[c - 256];
    char origin[80];
    snprintf(origin, sizeof origin, "--%s", s->flag);
    if (apply(cfg, s, optarg, origin, why, n)) return -EINVAL;
  }
  if (optind < argc) {
    snprintf(why, n, "unexpected argument '%s' (see --help)", argv[optind]);
    return -EINVAL;
  }
  if (cfg->redis.nsentinels && !cfg->redis.sentinel_master[0]) {
    snprintf(why, n,
             "invalid setting REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS (the master "
             "name the sentinels watch)");
    return -EINVAL;
  }
  if (!cfg->redis.nsentinels && cfg->redis.sentinel_master[0]) {
    snprintf(why, n, "invalid setting REDIS_SENTINELS: required with REDIS_SENTINEL_MASTER");
    return -EINVAL;
  }
  return FB_CONFIG_OK;
}

int fb_config_parse_redis_url(const char *url, struct fb_redis_endpoint *out, char *why, size_t n)
{
  if (strncmp(url, "redis://", 8)) {
    snprintf(why, n, "'%s' must start with redis:// (TLS is not supported)", url);
    return -EINVAL;
  }
  struct fb_redis_endpoint ep = {.port = 6379};
  const char *p = url + 8;
  const char *at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *pw = colon ? colon + 1 : p;
    size_t ul = colon ? (size_t)(colon - p) : 0;
    size_t pl = (size_t)(at - pw);
    if (ul >= sizeof ep.username || pl >= sizeof ep.password) {
      snprintf(why, n, "credentials are too long");
      return -EINVAL;
    }
    memcpy(ep.username, p, ul);
    memcpy(ep.password, pw, pl);
    p = at + 1;
  }
  const char *slash = strchr(p, '/');
  const char *end = slash ? slash : p + strlen(p);
  const char *colon = memchr(p, ':', (size_t)(end - p));
  const char *hend = colon ? colon : end;
  size_t hl = (size_t)(hend - p);
  if (!hl || hl >= sizeof ep.host) {
    snprintf(why, n, "'%s' has no host", url);
    return -EINVAL;
  }
  memcpy(ep.host, p, hl);
  if (colon) {
    char port[16];
    size_t pl = (size_t)(end - colon - 1);
    if (!pl || pl >= sizeof port) {
      snprintf(why, n, "'%s' has a bad port", url);
      return -EINVAL;
    }
    memcpy(port, colon + 1, pl);
    port[pl] = '\0';
    char reason[128];
    if (p_port_num(port, &ep.port, reason, sizeof reason)) {
      snprintf(why, n, "'%s': port %s", url, reason);
      return -EINVAL;
    }
  }
  if (slash && slash[1]) {
    int64_t db;
    char reason[128];
    if (parse_i64(slash + 1, 0, 15, &db, reason, sizeof reason)) {
      snprintf(why, n, "'%s': database %s", url, reason);
      return -EINVAL;
    }
    ep.db = (int)db;
  }
  *out = ep;
  return 0;
}

void fb_config_log(const struct fb_config *cfg)
{
  if (cfg->redis.nsentinels)
    fb_info("config", "redis=sentinel master %s via %zu sentinels (first %s:%d) db=%d%s",
            cfg->redis.sentinel_master, cfg->redis.nsentinels, cfg->redis.sentinels[0].host,
            cfg->redis.sentinels[0].port, cfg->redis.db, cfg->redis.password[0] ? " auth=***" : "");
  else
    fb_info("config", "redis=redis://%s%s:%d/%d", cfg->redis.password[0] ? "***@" : "",
            cfg->redis.host, cfg->redis.port, cfg->redis.db);
  fb_info("config", "input=%s group=%s consumer=%s wait_replicas=%d fleet_view=%s",
          cfg->input_stream, cfg->consumer_group, cfg->consumer_name, cfg->redis_wait_replicas,
          cfg->fleet_view ? "on" : "off");
  fb_info("config", "nats=%s%s%s jetstream=%s (replicas %d) listen=%s:%d",
          cfg->nats_enabled ? cfg->nats_url : "none",
          cfg->nats_token[0] || cfg->nats_password[0] ? " auth=***" : "",
          cfg->nats_creds[0] ? " creds=set" : "", cfg->nats_jetstream ? "on" : "off",
          cfg->nats_js_replicas, cfg->listen_host, cfg->listen_port);
  fb_info("config",
          "strategy=%s overload=%s heartbeat_timeout_ms=%lld frame_max_age_ms=%lld "
          "max_deliveries=%d batch=%d claim_idle_ms=%lld slow_start_ms=%lld hash_bound=%.2f "
          "api_token=%s processor_token=%s allowed_origins=%s log=%s/%s",
          fb_strategy_name(cfg->strategy), fb_overload_policy_name(cfg->overload_policy),
          (long long)cfg->heartbeat_timeout_ms, (long long)cfg->frame_max_age_ms,
          cfg->max_deliveries, cfg->batch_size, (long long)cfg->claim_idle_ms,
          (long long)cfg->slow_start_ms, cfg->hash_bound, cfg->api_token[0] ? "set" : "unset",
          !strcmp(cfg->processor_token, "open") ? "open"
          : cfg->processor_token[0]             ? "set"
                                                : "unset",
          cfg->allowed_origins[0] ? cfg->allowed_origins : "none",
          fb_log_level_name(cfg->log_level), cfg->log_format == FB_LOG_JSON ? "json" : "text");
  if (!cfg->api_token[0])
    fb_warn("config",
            "API_TOKEN is unset: whoever reaches %s:%d can register, delete and change "
            "routing",
            cfg->listen_host, cfg->listen_port);
  else if (!strcmp(cfg->processor_token, "open"))
    fb_warn("config", "PROCESSOR_TOKEN=open: register and heartbeat need no token");
}
