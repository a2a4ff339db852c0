/*
 * Helpers shared by fb-inject, fb-processor and fb-bench: flag parsing,
 * comma lists and logging to stderr. Clocks, Redis URLs and connections,
 * NATS and the REST API come from the client library (fbc_internal.h, the
 * static library's internals). Everything here is thread-safe except where a
 * function says otherwise; a redisContext still belongs to one thread.
 */
#ifndef FB_TOOLKIT_H
#define FB_TOOLKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fbc_internal.h"

#define TK_VERSION "2.0.0"

/* Exit status for bad flags and settings, as in the gateway. */
#define TK_EXIT_USAGE 2

#define TK_DEFAULT_REDIS_URL FBCI_DEFAULT_REDIS
#define TK_DEFAULT_NATS_URL  "nats://127.0.0.1:4222"

/* Sleeps `us` microseconds; returns early on a signal. */
void tk_sleep_us(int64_t us);

/* ------------------------------------------------------------- logging --- */

/* Sets the program name used as the prefix of every message. Call once, before
 * any thread starts. */
void tk_set_progname(const char *name);
const char *tk_progname(void);
/* One line to stderr: "<time> <prog>: <message>". */
void tk_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The client library's log callback: its lines up to info through tk_log. */
void tk_log_fbc(enum fbc_log_level level, const char *message, void *user);
/* Prints "<prog>: <message>" to stderr and exits with `status`. */
void tk_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* ------------------------------------------------------------- parsing --- */

struct option;
/* getopt_long without its own messages: an unknown option or a missing
 * value ends the program with one line, "<prog>: unknown option --x (see
 * --help)", and exit status 2, like the gateway. Main thread. */
int tk_getopt(int argc, char **argv, const struct option *opts);
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

#endif
