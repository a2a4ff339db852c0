/*
 * Shared helpers for the tools: clocks, flag parsing, logging, Redis URLs and
 * connections. No state besides the program name, which is set once before
 * threads start; every function may be called from any thread.
 */
#include "toolkit.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *progname = "fb-tool";

/* ---------------------------------------------------------------- time --- */

int64_t tk_mono_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t tk_real_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void tk_sleep_us(int64_t us)
{
  if (us <= 0) return;
  struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

char *tk_iso8601(char *out, size_t outlen, int64_t real_us)
{
  /* Floor division: an instant before 1970 still has 0..999 milliseconds. */
  int64_t secs = real_us / 1000000, rem = real_us % 1000000;
  if (rem < 0) {
    rem += 1000000;
    secs -= 1;
  }
  int ms = (int)(rem / 1000);
  time_t t = (time_t)secs;
  struct tm tm;
  /* Four-digit years only: anything outside 0000..9999 is pinned to the
   * nearest end, so the text always has the documented shape and length. */
  if (!gmtime_r(&t, &tm) || tm.tm_year < -1900) {
    tm = (struct tm){.tm_year = -1900, .tm_mday = 1};
    ms = 0;
  } else if (tm.tm_year > 9999 - 1900) {
    tm = (struct tm){.tm_year = 9999 - 1900,
                     .tm_mon = 11,
                     .tm_mday = 31,
                     .tm_hour = 23,
                     .tm_min = 59,
                     .tm_sec = 59};
    ms = 999;
  }
  int n = snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  /* A buffer under TK_ISO8601_SIZE gets an empty string, never a cut date. */
  if ((n < 0 || (size_t)n >= outlen) && outlen > 0) out[0] = '\0';
  return out;
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
  fprintf(stderr, "%s %s: %s\n", tk_iso8601(ts, sizeof ts, tk_real_us()), progname, msg);
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

int tk_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
  if (!s || !*s || isspace((unsigned char)*s)) return -EINVAL;
  errno = 0;
  char *end = NULL;
  long long v = strtoll(s, &end, 10);
  if (end == s || *end != '\0') return -EINVAL;
  if (errno == ERANGE || v < min || v > max) return -ERANGE;
  *out = (int64_t)v;
  return 0;
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
  int rc = tk_parse_i64(s, min, max, &v);
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

/* --------------------------------------------------------------- redis --- */

/* Copies the percent-decoded bytes [a, b) into out (size outlen).
 * Returns 0 or -EINVAL (bad escape, too long). */
static int pct_decode(char *out, size_t outlen, const char *a, const char *b)
{
  size_t n = 0;
  for (const char *p = a; p < b; p++) {
    char c = *p;
    if (c == '%') {
      if (b - p < 3 || !isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))
        return -EINVAL;
      char hex[3] = {p[1], p[2], 0};
      c = (char)strtol(hex, NULL, 16);
      p += 2;
    }
    if (n + 1 >= outlen) return -EINVAL;
    out[n++] = c;
  }
  out[n] = '\0';
  return 0;
}

int tk_redis_url_parse(struct tk_redis_url *out, const char *url, char *err, size_t errlen)
{
  memset(out, 0, sizeof *out);
  out->port = 6379;
  const char *scheme = "redis://";
  if (strncmp(url, scheme, strlen(scheme)) != 0) {
    snprintf(err, errlen, "'%s' does not start with redis://", url);
    return -EINVAL;
  }
  const char *p = url + strlen(scheme);
  const char *slash = strchr(p, '/');
  const char *auth_end = strrchr(p, '@');
  if (slash && auth_end && auth_end > slash) auth_end = NULL;
  if (auth_end) {
    const char *colon = memchr(p, ':', (size_t)(auth_end - p));
    const char *user_end = colon ? colon : auth_end;
    if (pct_decode(out->user, sizeof out->user, p, user_end) < 0 ||
        (colon && pct_decode(out->password, sizeof out->password, colon + 1, auth_end) < 0)) {
      snprintf(err, errlen, "bad user or password in Redis URL");
      return -EINVAL;
    }
    p = auth_end + 1;
  }
  const char *host_end = slash ? slash : p + strlen(p);
  const char *port_colon = NULL;
  if (*p == '[') { /* [ipv6]:port */
    const char *rb = memchr(p, ']', (size_t)(host_end - p));
    if (!rb) {
      snprintf(err, errlen, "unclosed '[' in Redis URL '%s'", url);
      return -EINVAL;
    }
    if ((size_t)(rb - p - 1) >= sizeof out->host) goto badhost;
    memcpy(out->host, p + 1, (size_t)(rb - p - 1));
    out->host[rb - p - 1] = '\0';
    if (rb + 1 < host_end && rb[1] == ':') port_colon = rb + 1;
  } else {
    port_colon = memchr(p, ':', (size_t)(host_end - p));
    const char *he = port_colon ? port_colon : host_end;
    if ((size_t)(he - p) >= sizeof out->host) goto badhost;
    memcpy(out->host, p, (size_t)(he - p));
    out->host[he - p] = '\0';
  }
  if (!out->host[0]) snprintf(out->host, sizeof out->host, "127.0.0.1");
  if (port_colon) {
    char portbuf[16];
    size_t plen = (size_t)(host_end - port_colon - 1);
    int64_t v;
    if (plen == 0 || plen >= sizeof portbuf) goto badport;
    memcpy(portbuf, port_colon + 1, plen);
    portbuf[plen] = '\0';
    if (tk_parse_i64(portbuf, 1, 65535, &v) < 0) goto badport;
    out->port = (int)v;
  }
  if (slash && slash[1]) {
    int64_t v;
    if (tk_parse_i64(slash + 1, 0, 15999, &v) < 0) {
      snprintf(err, errlen, "bad database number '%s' in Redis URL", slash + 1);
      return -EINVAL;
    }
    out->db = (int)v;
  }
  return 0;
badhost:
  snprintf(err, errlen, "host name too long in Redis URL");
  return -EINVAL;
badport:
  snprintf(err, errlen, "bad port in Redis URL '%s'", url);
  return -EINVAL;
}

redisContext *tk_redis_connect(const struct tk_redis_url *u, int timeout_ms, char *err,
                               size_t errlen)
{
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
  if (!c) {
    snprintf(err, errlen, "cannot allocate a Redis context");
    return NULL;
  }
  if (c->err) {
    snprintf(err, errlen, "Redis %s:%d: %s", u->host, u->port, c->errstr);
    redisFree(c);
    return NULL;
  }
  if (timeout_ms > 0) redisSetTimeout(c, tv);
  if (u->password[0]) {
    /* AUTH user pass (Redis 6 ACLs) or the classic AUTH pass. */
    const char *argv[3] = {"AUTH", u->user, u->password};
    int argc = 3;
    if (!u->user[0]) {
      argv[1] = u->password;
      argc = 2;
    }
    redisReply *r = tk_redis_cmd(c, err, errlen, argc, argv);
    if (!r) goto fail;
    freeReplyObject(r);
  }
  if (u->db != 0) {
    char db[16];
    snprintf(db, sizeof db, "%d", u->db);
    redisReply *r = tk_redis_cmd(c, err, errlen, 2, (const char *[]){"SELECT", db});
    if (!r) goto fail;
    freeReplyObject(r);
  }
  return c;
fail:
  redisFree(c);
  return NULL;
}

redisReply *tk_redis_cmd(redisContext *c, char *err, size_t errlen, int argc, const char **argv)
{
  redisReply *r = redisCommandArgv(c, argc, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "%s: %s", argv[0], c->errstr[0] ? c->errstr : "connection lost");
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(err, errlen, "%s: %s", argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

int tk_redis_drain(redisContext *c, size_t n, char *err, size_t errlen)
{
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK || !v) {
      snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
      return -EIO;
    }
    redisReply *r = v;
    if (r->type == REDIS_REPLY_ERROR && rc == 0) {
      snprintf(err, errlen, "%s", r->str);
      rc = -EPROTO;
    }
    freeReplyObject(r);
  }
  return rc;
}

const redisReply *tk_reply_field(const redisReply *flat, const char *field)
{
  if (!flat || flat->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < flat->elements; i += 2) {
    const redisReply *k = flat->element[i];
    if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) &&
        strcmp(k->str, field) == 0)
      return flat->element[i + 1];
  }
  return NULL;
}
