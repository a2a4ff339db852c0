/*
 * Shared helpers for the tools: flag parsing, logging and lists (clocks,
 * Redis, NATS and HTTP come from the client library's fbc_internal.h). No
 * state besides the program name, which is set once before threads start;
 * every function may be called from any thread except tk_getopt (main).
 */
#include "toolkit.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *progname = "fb-tool";

/* ---------------------------------------------------------------- time --- */

void tk_sleep_us(int64_t us)
{
  if (us <= 0) return;
  struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------- logging --- */

void tk_set_progname(const char *name)
{
  progname = name;
}

const char *tk_progname(void)
{
  return progname;
}

void tk_log(const char *fmt, ...)
{
  char ts[32], msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  /* One fprintf per line so lines from two threads do not interleave. */
  fprintf(stderr, "%s %s: %s\n", fbci_iso8601(ts, sizeof ts, fbci_real_us()), progname, msg);
}

void tk_log_fbc(enum fbc_log_level level, const char *message, void *user)
{
  if (level <= FBC_LOG_INFO) tk_log("%s", message);
}

void tk_die(int status, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", progname, msg);
  exit(status);
}

/* ------------------------------------------------------------- parsing --- */

int tk_getopt(int argc, char **argv, const struct option *opts)
{
  opterr = 0; /* getopt's own two-line message is replaced by ours */
  int c = getopt_long(argc, argv, ":", opts, NULL);
  if (c == '?' || c == ':') {
    const char *bad = argv[optind - 1];
    tk_die(TK_EXIT_USAGE, "%s option %s (see --help)", c == ':' ? "missing value for" : "unknown",
           bad ? bad : "?");
  }
  return c;
}

int tk_parse_double(const char *s, double min, double max, double *out)
{
  if (!s || !*s || isspace((unsigned char)*s)) return -EINVAL;
  errno = 0;
  char *end = NULL;
  double v = strtod(s, &end);
  if (end == s || *end != '\0' || !isfinite(v)) return -EINVAL;
  if (errno == ERANGE || v < min || v > max) return -ERANGE;
  *out = v;
  return 0;
}

int64_t tk_flag_i64(const char *flag, const char *s, int64_t min, int64_t max)
{
  int64_t v = 0;
  int rc = fbci_parse_i64(s, min, max, &v);
  if (rc == -EINVAL) tk_die(TK_EXIT_USAGE, "%s: '%s' is not an integer", flag, s);
  if (rc == -ERANGE)
    tk_die(TK_EXIT_USAGE, "%s: %s is out of range [%lld, %lld]", flag, s, (long long)min,
           (long long)max);
  return v;
}

double tk_flag_double(const char *flag, const char *s, double min, double max)
{
  double v = 0;
  int rc = tk_parse_double(s, min, max, &v);
  if (rc == -EINVAL) tk_die(TK_EXIT_USAGE, "%s: '%s' is not a number", flag, s);
  if (rc == -ERANGE) tk_die(TK_EXIT_USAGE, "%s: %s is out of range [%g, %g]", flag, s, min, max);
  return v;
}

static bool is_name_char(char c)
{
  return isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-';
}

int tk_strlist_parse(struct tk_strlist *out, const char *s, size_t max_items, char *err,
                     size_t errlen)
{
  out->v = NULL;
  out->n = 0;
  const char *p = s;
  for (;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    const char *a = p, *b = end;
    while (a < b && isspace((unsigned char)*a))
      a++;
    while (b > a && isspace((unsigned char)b[-1]))
      b--;
    size_t len = (size_t)(b - a);
    if (len == 0) {
      snprintf(err, errlen, "empty item in '%s'", s);
      goto fail;
    }
    if (len >= 128) {
      snprintf(err, errlen, "item longer than 127 bytes in '%s'", s);
      goto fail;
    }
    for (const char *q = a; q < b; q++) {
      if (!is_name_char(*q)) {
        snprintf(err, errlen, "item '%.*s' has a character outside [A-Za-z0-9._:-]", (int)len, a);
        goto fail;
      }
    }
    if (out->n == max_items) {
      snprintf(err, errlen, "more than %zu items", max_items);
      goto fail;
    }
    char **nv = realloc(out->v, (out->n + 1) * sizeof *nv);
    if (!nv) goto nomem;
    out->v = nv;
    out->v[out->n] = strndup(a, len);
    if (!out->v[out->n]) goto nomem;
    out->n++;
    if (!comma) break;
    p = comma + 1;
  }
  return 0;
nomem:
  snprintf(err, errlen, "out of memory");
  tk_strlist_free(out);
  return -ENOMEM;
fail:
  tk_strlist_free(out);
  return -EINVAL;
}

void tk_strlist_free(struct tk_strlist *l)
{
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

const char *tk_env_or(const char *name, const char *def)
{
  const char *v = getenv(name);
  return (v && *v) ? v : def;
}
