/*
 * Settings: environment variables and command-line flags (flags win) turned
 * into one immutable struct. All validation of settings happens here, once,
 * at start. Built on the main thread before any other thread exists; read-only
 * afterwards, so any thread may read it.
 *
 * Error details, the convention for the whole gateway: a function that can
 * fail for a reason a person should read returns 0 or a negative errno
 * (-EINVAL bad input, -EIO a server away or refusing, ...) and takes a
 * buffer from its caller as its last two parameters, `char *why, size_t n`.
 * On failure it writes one line there (no trailing period or newline, cut
 * to `n`, never overrun); after a success the buffer means nothing. Where
 * an errno says it all (-ENOENT, -EEXIST, -ENOMEM) the header may say that
 * `why` is not written for it. Callers own the buffer (a few hundred bytes on the stack),
 * pass it down as it is or write their own line around a callee's (see
 * apply() in config.c). Messages are part of the API (users and tests read
 * them): change one on purpose only. Lookups that cannot fail for a reason
 * (the names of enums) just return a string.
 */
#ifndef FRAMEBUFFER_CONFIG_H
#define FRAMEBUFFER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/log.h"

#define FB_NAME_MAX 256 /* stream, group and consumer names */

enum fb_strategy {
  FB_STRATEGY_ROUND_ROBIN,
  FB_STRATEGY_WEIGHTED_ROUND_ROBIN,
  FB_STRATEGY_LEAST_LOADED,
  FB_STRATEGY_CONSISTENT_HASH,
  FB_STRATEGY_COUNT
};

enum fb_overload_policy { FB_OVERLOAD_DROP_OLDEST, FB_OVERLOAD_REJECT, FB_OVERLOAD_BLOCK };
/* Not an enum member, so a switch over the policies needs no case for it. */
#define FB_OVERLOAD_COUNT (FB_OVERLOAD_BLOCK + 1)

#define FB_SENTINELS_MAX 16

struct fb_hostport {
  char host[256];
  int port;
};

/* Where Redis is: a fixed host:port, or (nsentinels > 0) whatever primary
 * the sentinels name for `sentinel_master`. The credentials and database
 * are the data nodes' in both cases. */
struct fb_redis_endpoint {
  char host[256];
  int port;
  int db;
  char password[256];
  char username[128];
  struct fb_hostport sentinels[FB_SENTINELS_MAX];
  size_t nsentinels;
  char sentinel_master[128];
  char sentinel_password[256];
};

struct fb_config {
  struct fb_redis_endpoint redis;

  bool nats_enabled;
  char nats_url[1024];
  char nats_token[256];
  char nats_user[128];
  char nats_password[256];
  char nats_creds[512];
  char nats_tls_ca[512];
  bool nats_jetstream;
  int nats_js_replicas; /* of stream FRAMES when the gateway creates it */

  char listen_host[128];
  int listen_port;

  char input_stream[FB_NAME_MAX];
  char consumer_group[FB_NAME_MAX];
  char consumer_name[FB_NAME_MAX];

  enum fb_strategy strategy;
  enum fb_overload_policy overload_policy;
  int64_t heartbeat_timeout_ms;
  int64_t frame_max_age_ms;
  int max_deliveries;
  int batch_size;
  int64_t claim_idle_ms;
  int64_t dlq_maxlen;
  int64_t dlq_replay_max; /* replays skip an entry replayed this many times */
  bool frame_trace;       /* keep the frame trace (trace.h) */
  int64_t slow_start_ms;
  double hash_bound;
  int redis_wait_replicas; /* WAIT for this many replicas after each hand-off */
  bool fleet_view;         /* publish this replica's figures for the fleet view */

  char api_token[256];
  char processor_token[256];  /* also accepted on register and heartbeat; "open": none needed */
  char allowed_origins[1024]; /* comma-separated origins (or "*") for CORS and /ws; "" none */
  enum fb_log_level log_level;
  enum fb_log_format log_format;
};

enum fb_config_result {
  FB_CONFIG_OK = 0,
  FB_CONFIG_EXIT = 1, /* --help or --version was printed: exit 0 */
};

/*
 * Fills `cfg` from defaults, then the environment `envp`-style getter, then
 * argv. Returns FB_CONFIG_OK, FB_CONFIG_EXIT, or -EINVAL with one line in
 * `why` naming the setting and why.
 */
int fb_config_load(struct fb_config *cfg, int argc, char **argv, char *why, size_t n);

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0 or -EINVAL
 * with the reason in `why`. */
int fb_config_parse_redis_url(const char *url, struct fb_redis_endpoint *out, char *why, size_t n);

/* Logs the settings in effect, secrets hidden. */
void fb_config_log(const struct fb_config *cfg);

/* ----------------------------------------------------------------- names
 * The strategies' and overload policies' names, as settings, the API,
 * Redis, metrics and messages spell them: one table each, in config.c. */

/* Room for any list the *_list functions write. */
#define FB_NAME_LIST_MAX 128

/* The name, or "unknown" for a value out of range. */
const char *fb_strategy_name(enum fb_strategy s);
/* Exact match of a name. Returns 0, or -EINVAL (and `*out` untouched). */
int fb_strategy_parse(const char *s, enum fb_strategy *out);
/* Writes every name, in order, as "round_robin, weighted_round_robin, ..."
 * into `out` (cut to `n`); returns `out`. */
const char *fb_strategy_list(char *out, size_t n);

const char *fb_overload_policy_name(enum fb_overload_policy p);
int fb_overload_policy_parse(const char *s, enum fb_overload_policy *out);
const char *fb_overload_policy_list(char *out, size_t n);

/* Writes names[0..count) joined by ", " into `out` (cut to `n`, never
 * overrun); returns `out`. For other lists of names in messages. */
const char *fb_names_join(const char *const *names, size_t count, char *out, size_t n);

#endif
