/*
 * libframebuffer-client: the processor side of frame-buffer in C.
 *
 * A processor registers with the gateway (fbc_connect), takes its frames
 * (fbc_next), sends a result for each (fbc_result), acknowledges them
 * (fbc_ack) and leaves (fbc_close). Frames come from the processor's Redis
 * stream frames:ready:<id> (group frame-processors), from core NATS or from
 * a JetStream durable pull consumer; the calls are the same for all three.
 * Heartbeats with the real queue depth are sent by a thread of the library.
 *
 * Conventions, for every function below:
 *  - Errors are negative errno values (-EINVAL, -ECONNRESET, ...);
 *    fbc_strerror() turns one into text. Nothing is printed and nothing
 *    exits: the library reports through the log callback of its options.
 *  - Arguments are borrowed: the library copies what it keeps.
 *  - A client belongs to the thread that created it (its "owner thread"):
 *    only that thread may call fbc_next, fbc_ack, fbc_result, fbc_flush
 *    and fbc_close on it. fbc_stats may be called from any thread.
 *  - Frames are read-only views owned by the client: valid until the next
 *    fbc_next or fbc_close on the same client.
 */
#ifndef FRAMEBUFFER_CLIENT_H
#define FRAMEBUFFER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FBC_VERSION_MAJOR  1
#define FBC_VERSION_MINOR  0
#define FBC_VERSION_PATCH  0
#define FBC_VERSION_STRING "1.0.0"

/* The largest batch fbc_next hands out; a larger `max` is lowered to it. */
#define FBC_MAX_BATCH 1024

/* The version of the library actually loaded, "1.0.0". Any thread; the
 * string is static. */
const char *fbc_version(void);

/* Text for an error code returned by any fbc_ function (a negative errno),
 * "success" for 0. Any thread; the string is static. */
const char *fbc_strerror(int err);

/* ------------------------------------------------------------- options --- */

/* Where frames come from. */
enum fbc_transport {
  FBC_REDIS = 0,     /* stream frames:ready:<id>, group frame-processors */
  FBC_NATS = 1,      /* core NATS on the processor's subject: at most once */
  FBC_JETSTREAM = 2, /* durable pull consumer <id> on JetStream stream FRAMES */
};

enum fbc_log_level { FBC_LOG_ERROR = 0, FBC_LOG_WARN = 1, FBC_LOG_INFO = 2, FBC_LOG_DEBUG = 3 };

/* A log line, without a trailing newline; `message` is valid during the
 * call only. Called from the owner thread, from the heartbeat thread and
 * from nats.c's threads, possibly at the same time: it must be thread-safe
 * and quick, and must not call back into the library. */
typedef void (*fbc_log_fn)(enum fbc_log_level level, const char *message, void *user);

/*
 * Settings of a client. Always start from fbc_options_init(), which sets
 * `size` and the defaults: fields added in later versions go at the end, and
 * the library reads only the first `size` bytes, so a program built against
 * this header keeps working with a newer library. Strings are borrowed until
 * fbc_connect returns (it copies them).
 */
struct fbc_options {
  size_t size;                  /* sizeof(struct fbc_options), set by fbc_options_init */
  const char *id;               /* processor id: 1-128 of [A-Za-z0-9._:-]; no '.' with NATS */
  const char *capabilities;     /* detection types, comma-separated: "person,vehicle" */
  int capacity;                 /* frames worked on at once (default 4) */
  enum fbc_transport transport; /* default FBC_REDIS */
  const char *api_url;          /* gateway REST API, default http://127.0.0.1:8002; "none":
                                   no registration and no HTTP heartbeats */
  const char *api_token;        /* bearer token for register/heartbeat, NULL: none */
  const char *redis_url;        /* redis://[[user]:password@]host[:port][/db], default
                                   redis://127.0.0.1:6379/0 (the Redis transport and results) */
  const char *nats_url;         /* NATS servers, comma-separated; NULL or "none": no NATS.
                                   Given, heartbeats go over NATS (HTTP while it is down) */
  const char *nats_token;       /* NATS auth and TLS, NULL: unused */
  const char *nats_user;
  const char *nats_password;
  const char *nats_creds;    /* a .creds file */
  const char *nats_tls_ca;   /* a CA file; turns TLS on */
  const char *subject;       /* NATS: where frames arrive, default frames.ready.<id> */
  const char *result_stream; /* Redis stream of results, default frames:results (NATS:
                                registered, the gateway writes results there) */
  long long result_maxlen;   /* Redis: XADD MAXLEN ~ of results, 0 = uncapped (default
                                1000000) */
  int heartbeat_interval_ms; /* registered interval and heartbeat period, 0 = none
                                (default 30000) */
  bool unregister_on_close;  /* fbc_close deletes the registration instead of sending
                                the 'stopping' heartbeat */
  fbc_log_fn log;            /* NULL: silent */
  void *log_user;            /* passed to `log` */
};

/* Fills `o` with the defaults; `size` must be sizeof *o (use the inline
 * fbc_options_init). Any thread. */
void fbc_options_init_sized(struct fbc_options *o, size_t size);

static inline void fbc_options_init(struct fbc_options *o)
{
  fbc_options_init_sized(o, sizeof *o);
}

/*
 * Overrides fields of `o` from the environment, where set and non-empty:
 * FB_API, API_TOKEN, REDIS_URL, NATS_URL, NATS_TOKEN, NATS_USER,
 * NATS_PASSWORD, NATS_CREDS, NATS_TLS_CA, PROCESSOR_ID,
 * PROCESSOR_CAPABILITIES, PROCESSOR_TRANSPORT (redis, nats or jetstream).
 * The strings point into the environment (borrowed). Returns 0, or -EINVAL
 * for an unknown PROCESSOR_TRANSPORT. Call before threads change the
 * environment.
 */
int fbc_options_from_env(struct fbc_options *o);

/* Checks `o` without any I/O. Returns 0, or -EINVAL with one line naming the
 * field and the reason in `why` (when `why` is not NULL). Any thread. */
int fbc_options_validate(const struct fbc_options *o, char *why, size_t whylen);

/* -------------------------------------------------------------- client --- */

struct fbc_client;
struct fbc_frame;

/*
 * Creates a client: checks `o`, registers with the gateway (POST
 * /api/v1/processors/register), opens the transport and starts the
 * heartbeat thread. A gateway or a server that is not up yet is not an
 * error: registration and connections are retried in the background, with
 * backoff, and frames flow once they are up. A 409 keeps the stored
 * registration (replacing it when its transport or subject differ from
 * ours); a gateway that later forgets the processor (a 404) gets it again.
 * Returns 0 with a new client in `*out` (the calling thread becomes its
 * owner; free it with fbc_close), or a negative errno with `*out` NULL:
 * -EINVAL for bad options or a registration the gateway refuses (422), the
 * reason logged.
 */
int fbc_connect(struct fbc_client **out, const struct fbc_options *o);

/*
 * Waits up to `timeout_ms` (0: do not wait) for frames and puts at most
 * `max` of them in `frames` (an array of `max` pointers the caller owns; the
 * frames are the client's). The views of the previous call become invalid;
 * those of its frames that were not acknowledged stay pending (Redis: until
 * this processor id starts again; JetStream: redelivered after 30 s).
 * On start, the Redis transport first hands out again the frames this
 * processor id had read and not acknowledged before (a crash, a restart).
 * A lost connection is re-opened here, with backoff, within the timeout.
 * Returns the number of frames (0 on timeout), or a negative errno when the
 * client cannot go on (-EINVAL: the gateway refused the registration, the
 * JetStream consumer belongs to another subject). Owner thread.
 */
int fbc_next(struct fbc_client *c, const struct fbc_frame **frames, size_t max, int timeout_ms);

/*
 * Acknowledges `n` frames of the current batch: they are done and never
 * come again. Results sent for them before are written first. Core NATS
 * needs no acknowledgement (the call only updates the counts). Returns 0,
 * or -ECONNRESET when the connection broke: the frames then stay pending
 * and come again after fbc_next reconnects. Owner thread.
 */
int fbc_ack(struct fbc_client *c, const struct fbc_frame *const *frames, size_t n);

/*
 * Sends the result `json` (a JSON text, usually an object) of frame `f`:
 * on Redis an entry {processor_id, frame_id, camera_id, result, processed_at}
 * of the result stream; on NATS the same as a JSON object on
 * frames.results.<id>, which the gateway appends to the registered result
 * stream. The result of a shadow copy (a frame with a `shadow` field) also
 * carries `shadow` and `shadow_of`. On Redis the write is queued and sent
 * with the next fbc_ack, fbc_flush or fbc_next, before their own commands.
 * Returns 0, -EINVAL when `json` is not JSON (NATS), or -ECONNRESET. Owner
 * thread.
 */
int fbc_result(struct fbc_client *c, const struct fbc_frame *f, const char *json);

/* The same with extra string fields: `fields` holds `nfields` name, value
 * pairs (2 * nfields strings, at most 64 pairs) added to the result entry.
 * Owner thread. */
int fbc_result_fields(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                      const char *const *fields, size_t nfields);

/* Writes what fbc_result queued and waits for Redis's answers. Returns 0 or
 * -ECONNRESET. Owner thread. */
int fbc_flush(struct fbc_client *c);

/*
 * Stops the heartbeat thread, writes queued results, then tells the gateway
 * the processor is leaving: the 'stopping' heartbeat (the gateway marks it
 * dead at once and moves its backlog to live processors), or DELETE of the
 * registration with `unregister_on_close`. Unacknowledged frames stay
 * pending. Frees the client and its frames; NULL is fine. Returns 0 or the
 * negative errno of that last message (the client is freed either way).
 * Owner thread.
 */
int fbc_close(struct fbc_client *c);

/* What a client has done so far. Any thread. */
struct fbc_stats {
  size_t size;         /* sizeof(struct fbc_stats), set by fbc_stats */
  uint64_t received;   /* frames handed out by fbc_next (again after a reconnect) */
  uint64_t acked;      /* frames acknowledged */
  uint64_t results;    /* results sent */
  uint64_t skipped;    /* entries that were not frames (trimmed, unreadable): acked */
  uint64_t reconnects; /* transport connections re-opened after a loss */
  int64_t in_flight;   /* frames of the current batch not acknowledged */
  bool registered;     /* the gateway has the registration (201 or 409) */
};

/* Copies the counts into `out`, of `size` bytes (use the inline fbc_stats).
 * Any thread. */
void fbc_stats_sized(const struct fbc_client *c, struct fbc_stats *out, size_t size);

static inline void fbc_stats(const struct fbc_client *c, struct fbc_stats *out)
{
  fbc_stats_sized(c, out, sizeof *out);
}

/* -------------------------------------------------------------- frames --- */

/* The fields of a frame, as the gateway delivered them. Every string is
 * borrowed from the client and valid until its next fbc_next or fbc_close;
 * NULL when the frame has no such field. Owner thread. */
const char *fbc_frame_id(const struct fbc_frame *f);
const char *fbc_frame_camera_id(const struct fbc_frame *f);
/* ISO-8601 capture time, or unix seconds, as the camera wrote it. */
const char *fbc_frame_timestamp(const struct fbc_frame *f);
/* The top-level detection_type, else metadata's detection_type. */
const char *fbc_frame_detection_type(const struct fbc_frame *f);
/* The metadata JSON object, as text. */
const char *fbc_frame_metadata(const struct fbc_frame *f);
/* The trace context JSON object ({trace_id, span_id, ...}), as text. */
const char *fbc_frame_trace_context(const struct fbc_frame *f);
/* The W3C traceparent: the frame's field, or on NATS the message header. */
const char *fbc_frame_traceparent(const struct fbc_frame *f);
/* Any field by name (width, height, format, storage_path, ...). */
const char *fbc_frame_field(const struct fbc_frame *f, const char *name);
/* Where it came from: the Redis entry id or the NATS subject. */
const char *fbc_frame_source(const struct fbc_frame *f);

#ifdef __cplusplus
}
#endif

#endif
