/*
 * Helpers shared by fb-inject, fb-processor and fb-bench: clocks, strict number
 * parsing for flags, comma lists, logging to stderr, Redis URLs and a Redis
 * connect that does AUTH and SELECT. Everything here is thread-safe except
 * where a function says otherwise; a redisContext still belongs to one thread.
 */
#ifndef FB_TOOLKIT_H
#define FB_TOOLKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define TK_VERSION "2.0.0"

/* Exit status for bad flags and settings, as in the gateway. */
#define TK_EXIT_USAGE 2

/* ---------------------------------------------------------------- time --- */

/* Microseconds on CLOCK_MONOTONIC: for durations. */
int64_t tk_mono_us(void);
/* Microseconds since the epoch on CLOCK_REALTIME: for timestamps that other
 * processes compare (inject_ts_us). */
int64_t tk_real_us(void);
/* Sleeps `us` microseconds; returns early on a signal. */
void tk_sleep_us(int64_t us);
/* Writes `real_us` as ISO-8601 UTC with milliseconds, "2024-05-01T12:00:00.123Z"
 * (years pinned to 0000..9999). `out` needs TK_ISO8601_SIZE bytes; a shorter
 * one gets an empty string. Returns `out`. */
#define TK_ISO8601_SIZE 25
char *tk_iso8601(char *out, size_t outlen, int64_t real_us);

/* ------------------------------------------------------------- logging --- */

/* Sets the program name used as the prefix of every message. Call once, before
 * any thread starts. */
void tk_set_progname(const char *name);
const char *tk_progname(void);
/* One line to stderr: "<time> <prog>: <message>". */
void tk_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "<prog>: <message>" to stderr and exits with `status`. */
void tk_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* ------------------------------------------------------------- parsing --- */

/* Strict base-10 parse of all of `s` into [min, max]. Returns 0 or -EINVAL
 * (not a number, trailing junk) or -ERANGE. */
int tk_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Strict parse of a finite double in [min, max]. Returns 0 or -EINVAL/-ERANGE. */
int tk_parse_double(const char *s, double min, double max, double *out);
/* Flag variants: on failure print "<prog>: <flag>: ..." and exit 2. */
int64_t tk_flag_i64(const char *flag, const char *s, int64_t min, int64_t max);
double tk_flag_double(const char *flag, const char *s, double min, double max);

/* A comma-separated list split into owned strings. */
struct tk_strlist {
  char **v;
  size_t n;
};

/* Splits `s` on commas into `out`; items are trimmed of spaces and must be
 * non-empty, at most `max_items` and each under 128 bytes of
 * [A-Za-z0-9._:-]. Returns 0, -EINVAL (with a reason in `err`) or -ENOMEM. */
int tk_strlist_parse(struct tk_strlist *out, const char *s, size_t max_items, char *err,
                     size_t errlen);
void tk_strlist_free(struct tk_strlist *l);

/* Returns the value of environment variable `name`, or `def` when it is unset
 * or empty. */
const char *tk_env_or(const char *name, const char *def);

/* --------------------------------------------------------------- redis --- */

#define TK_DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"

struct tk_redis_url {
  char host[256];
  int port;
  int db;
  char user[128];     /* "" when none */
  char password[256]; /* "" when none */
};

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0 or -EINVAL
 * with the reason in `err`. */
int tk_redis_url_parse(struct tk_redis_url *out, const char *url, char *err, size_t errlen);

/* Connects, authenticates and selects the database, with `timeout_ms` for the
 * connect and for every later command (0: no command timeout). Returns a new
 * context the caller frees with redisFree(), or NULL with the reason in `err`. */
redisContext *tk_redis_connect(const struct tk_redis_url *u, int timeout_ms, char *err,
                               size_t errlen);

/* Runs one command given as argv and returns its reply (caller frees), or NULL
 * with the reason in `err` when the connection failed or Redis answered with
 * an error (the error reply is freed). */
redisReply *tk_redis_cmd(redisContext *c, char *err, size_t errlen, int argc, const char **argv);

/* Reads `n` queued pipeline replies; returns 0, or -EIO on a connection error
 * or -EPROTO when any reply was an error (the first error's text in `err`).
 * All `n` replies are consumed either way unless the connection broke. */
int tk_redis_drain(redisContext *c, size_t n, char *err, size_t errlen);

/* In a flat [field, value, ...] array reply, returns the value of `field`
 * or NULL. */
const redisReply *tk_reply_field(const redisReply *flat, const char *field);

#endif
