/*
 * What the modules of libframebuffer-client share (not installed). The
 * client struct is split by thread: the owner thread's transport state, the
 * heartbeat thread's connections, and the counters and flags both touch
 * (atomics, or `mu`). The fbci_ helpers for URLs and connections are also
 * used by frame-buffer's own tools, which link the static library.
 */
#ifndef FBC_INTERNAL_H
#define FBC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <nats/nats.h>

#include "framebuffer/client.h"

#define FBCI_GROUP         "frame-processors"
#define FBCI_JS_STREAM     "FRAMES"
#define FBCI_READY_PREFIX  "frames.ready."
#define FBCI_DEFAULT_API   "http://127.0.0.1:8002"
#define FBCI_DEFAULT_REDIS "redis://127.0.0.1:6379/0"
#define FBCI_HTTP_MAX      (1024 * 1024) /* largest HTTP response body taken */
#define FBCI_ERR_MAX       512

/* ------------------------------------------------------------- helpers --- */

int64_t fbci_mono_us(void);
int64_t fbci_real_us(void);
/* ISO-8601 UTC with milliseconds into `out` (at least 25 bytes). */
char *fbci_iso8601(char *out, size_t outlen, int64_t real_us);
/* Whether `s` is 1-128 of [A-Za-z0-9._:-]. */
bool fbci_valid_id(const char *s);
/* Strict base-10 parse of all of `s` into [min, max]: 0, -EINVAL or -ERANGE. */
int fbci_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* --------------------------------------------------------------- redis --- */

struct fbci_redis_url {
  char host[256];
  int port;
  int db;
  char user[128];     /* "" when none */
  char password[256]; /* "" when none */
};

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0 or -EINVAL
 * with the reason in `err`. Any thread. */
int fbci_redis_url_parse(struct fbci_redis_url *out, const char *url, char *err, size_t errlen);
/* Connects, authenticates and selects the database; `timeout_ms` bounds the
 * connect and every later command (0: no command timeout). Returns a new
 * context (the caller's thread owns it; redisFree) or NULL with `err`. */
redisContext *fbci_redis_connect(const struct fbci_redis_url *u, int timeout_ms, char *err,
                                 size_t errlen);
/* One command; its reply (caller frees), or NULL with `err` on a broken
 * connection or an error reply (freed). */
redisReply *fbci_redis_cmd(redisContext *c, char *err, size_t errlen, int argc, const char **argv);
/* Reads `n` pipelined replies: 0, -EIO (connection) or -EPROTO (the first
 * error reply's text in `err`; all `n` are read). */
int fbci_redis_drain(redisContext *c, size_t n, char *err, size_t errlen);
/* The value of `field` in a flat [field, value, ...] array, or NULL. */
const redisReply *fbci_reply_field(const redisReply *flat, const char *field);

/* ---------------------------------------------------------------- nats --- */

struct fbci_nats_auth {
  const char *token, *user, *password, *creds, *tls_ca; /* NULL: unused */
};

/* Checks a comma-separated server list (nats://, tls:// or host:port). */
int fbci_nats_url_check(const char *urls, char *err, size_t errlen);
/* Where a connection's events go (from nats.c's threads); must outlive it. */
struct fbci_nats_logger {
  fbc_log_fn log; /* NULL: nowhere */
  void *user;
  atomic_llong last_async_us; /* asynchronous errors: at most one line a second */
};

/* Connects as client `name`, reconnecting forever; with `retry` servers that
 * are down are not an error (it connects in the background). Returns a new
 * connection (any thread may use it; fbci_nats_close) or NULL with `err`. */
natsConnection *fbci_nats_connect(const char *urls, const char *name,
                                  const struct fbci_nats_auth *auth, bool retry,
                                  struct fbci_nats_logger *logger, char *err, size_t errlen);
bool fbci_nats_is_connected(natsConnection *nc);
/* Flushes for at most `flush_ms`, closes and destroys (NULL is fine). */
void fbci_nats_close(natsConnection *nc, int flush_ms);
/* A natsStatus with the library's last error text, into `out`. */
const char *fbci_nats_err(natsStatus s, char *out, size_t outlen);

/* ---------------------------------------------------------------- http --- */

struct fbci_http_resp {
  long status; /* e.g. 201 */
  char *body;  /* NUL-terminated, owned; "" when empty */
  size_t body_len;
};

/* Calls the API once with libcurl: `method` `base``path`, an optional JSON
 * `body` and bearer `token`, at most `timeout_ms`. Returns 0 with `out` set
 * whatever the status (fbci_http_resp_free), or a negative errno with the
 * reason in `err`. Any thread (curl_global_init is done once, here). */
int fbci_http_request(const char *base, const char *method, const char *path, const char *token,
                      const char *body, int timeout_ms, struct fbci_http_resp *out, char *err,
                      size_t errlen);
void fbci_http_resp_free(struct fbci_http_resp *r);

/* -------------------------------------------------------------- frames --- */

enum fbci_frame_kind { FBCI_FRAME_REDIS, FBCI_FRAME_JSON };

/* A view of one frame. Redis: the entry's flat field array, borrowed from
 * the batch's reply. NATS: the parsed payload (owned by the client's batch)
 * and the message, for its header and its ack. */
struct fbc_frame {
  enum fbci_frame_kind kind;
  const char *source;       /* entry id or subject */
  const redisReply *fields; /* FBCI_FRAME_REDIS */
  json_t *doc;              /* FBCI_FRAME_JSON */
  natsMsg *msg;             /* NATS only */
  int64_t received_us;      /* when fbc_next handed it out (monotonic) */
  bool acked;
  bool dtype_done; /* dtype resolved (lazily, from metadata) */
  char dtype[128];
};

/* Fills `f` as a view of a Redis entry's fields (`fields` borrowed). */
void fbci_frame_from_redis(struct fbc_frame *f, const char *entry_id, const redisReply *fields);
/* Fills `f` from a NATS payload: returns 0, or -EINVAL when it is not a
 * JSON object with a non-empty frame_id (then `f` holds nothing). The
 * parsed document is owned by `f` (fbci_frame_clear). */
int fbci_frame_from_json(struct fbc_frame *f, const char *subject, const char *data, size_t len);
/* Frees what the view owns (the parsed payload, the message). */
void fbci_frame_clear(struct fbc_frame *f);

/* -------------------------------------------------------------- client --- */

/* Owned copies of the options, and what follows from them. */
struct fbci_config {
  char *id, *capabilities, *api_url, *api_token, *redis_url, *nats_url, *subject;
  char *result_stream, *nats_token, *nats_user, *nats_password, *nats_creds, *nats_tls_ca;
  int capacity;
  enum fbc_transport transport;
  long long result_maxlen;
  int heartbeat_ms;
  bool unregister;
  bool use_api, hb_nats;
  struct fbci_redis_url redis;
  char stream[160];     /* frames:ready:<id> */
  char hb_subject[160]; /* processors.heartbeat.<id> */
  char results_subject[160];
};

struct fbc_client {
  struct fbci_config cfg;
  fbc_log_fn log;
  void *log_user;
  natsConnection *nc; /* shared: nats.c locks it */
  struct fbci_nats_logger nats_logger;

  /* Owner thread. */
  bool connected, ever_connected;
  int failures;
  int64_t backoff_ms, next_attempt_us;
  redisContext *rc;
  bool history_done;     /* Redis: our old pending entries are read */
  char history_from[64]; /* Redis: read our pending entries after this id */
  size_t queued;         /* Redis: pipelined result replies not read yet */
  redisReply *reply;     /* Redis: the current batch's */
  jsCtx *js;
  natsSubscription *sub;
  struct fbc_frame *frames; /* FBC_MAX_BATCH views of the current batch */
  size_t nframes;
  const char **argv; /* FBC_MAX_BATCH + 3 slots for XACK */
  uint64_t unreadable;

  /* Shared. */
  atomic_uint_fast64_t received, acked, results, skipped, reconnects;
  atomic_int_fast64_t in_flight, local_queued;
  atomic_uint_fast64_t work_us, work_frames; /* fbc_next to fbc_ack, summed */
  atomic_bool registered;
  atomic_int fatal;   /* a negative errno once the client cannot go on */
  pthread_mutex_t mu; /* guards `stop` for the condition variable */
  pthread_cond_t cv;
  bool stop;
  pthread_t hb_thread;
  bool hb_started;

  /* Registration: fbc_connect's first attempt, then the heartbeat thread's. */
  int reg_failed; /* the last attempt's failure (status or errno), 0 after a success */

  /* Heartbeat thread (the owner's after it is joined). */
  redisContext *hb_rc;
  jsCtx *hb_js;
  int hb_path; /* 0 none yet, 1 NATS, 2 HTTP */
  bool depth_failed;
  uint64_t seen_us, seen_frames;
  double latency_ms;
};

/* Logs one formatted line through the client's callback. Any thread. */
void fbci_log(const struct fbc_client *c, enum fbc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies and checks the options into `cfg`. Returns 0 or -EINVAL (`why`). */
int fbci_config_make(struct fbci_config *cfg, const struct fbc_options *o, char *why,
                     size_t whylen);
void fbci_config_free(struct fbci_config *cfg);

/* The transports, owner thread. open: 0, -EINVAL (hopeless) or another
 * negative errno (retried). receive: frames placed in c->frames (count), or
 * -EIO on a lost connection. */
int fbci_redis_open(struct fbc_client *c, char *err, size_t errlen);
int fbci_redis_receive(struct fbc_client *c, size_t max, int block_ms, char *err, size_t errlen);
int fbci_redis_ack(struct fbc_client *c, const struct fbc_frame *const *f, size_t n);
int fbci_redis_result(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                      const char *const *fields, size_t nfields);
int fbci_redis_flush(struct fbc_client *c);
void fbci_redis_release(struct fbc_client *c);
void fbci_redis_close(struct fbc_client *c);

int fbci_nats_open(struct fbc_client *c, char *err, size_t errlen);
int fbci_nats_receive(struct fbc_client *c, size_t max, int block_ms, char *err, size_t errlen);
int fbci_nats_ack(struct fbc_client *c, const struct fbc_frame *const *f, size_t n);
int fbci_nats_result(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                     const char *const *fields, size_t nfields);
void fbci_nats_release(struct fbc_client *c);
void fbci_nats_close_transport(struct fbc_client *c);

/* Registration and heartbeats (heartbeat.c). register_once: 0 registered
 * (201/409), -EINVAL refused for good, other negative errno: retry. */
int fbci_register_once(struct fbc_client *c);
int fbci_hb_start(struct fbc_client *c);
void fbci_hb_stop(struct fbc_client *c);
/* The last word: 'stopping' heartbeat or DELETE. Owner thread, after stop. */
int fbci_say_goodbye(struct fbc_client *c);
void fbci_hb_free(struct fbc_client *c);

#endif
