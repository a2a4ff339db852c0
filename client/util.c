/*
 * Small helpers of the library: clocks, ISO-8601 time stamps, ids and
 * strict number parsing, the log line, error texts and the version. No
 * state: any thread.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fbc_internal.h"

int64_t fbci_mono_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t fbci_real_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *fbci_iso8601(char *out, size_t outlen, int64_t real_us)
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
  /* A buffer that is too short gets an empty string, never a cut date. */
  if ((n < 0 || (size_t)n >= outlen) && outlen > 0) out[0] = '\0';
  return out;
}

bool fbci_valid_id(const char *s)
{
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 128) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!(isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-')) return false;
  }
  return true;
}

int fbci_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
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

void fbci_log(const struct fbc_client *c, enum fbc_log_level level, const char *fmt, ...)
{
  if (!c || !c->log) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->log(level, msg, c->log_user);
}

const char *fbc_version(void)
{
  return FBC_VERSION_STRING;
}

const char *fbc_strerror(int err)
{
  switch (err) {
  case 0: return "success";
  case -EINVAL: return "invalid argument or setting, or refused by the gateway";
  case -ECONNRESET: return "connection lost: unacknowledged frames come again after reconnecting";
  case -ENOTCONN: return "not connected";
  case -ENOMEM: return "out of memory";
  case -ETIMEDOUT: return "timed out";
  case -ECONNREFUSED: return "connection refused";
  case -EPROTO: return "unexpected answer from a server";
  case -ECANCELED: return "stopped";
  default: return err < 0 ? strerror(-err) : "not an error code";
  }
}
