/*
 * Frame parsing and a small validating JSON scanner. Pure functions over
 * borrowed memory: no allocation, no I/O, safe on any thread.
 */
#include "framebuffer/frame.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

bool fb_str_eq(struct fb_str s, const char *lit)
{
  size_t n = strlen(lit);
  return s.n == n && memcmp(s.p, lit, n) == 0;
}

/* ============================================================ JSON scan */

struct scan {
  const char *p;
  const char *end;
  int depth;
};

#define SCAN_MAX_DEPTH 64

static void skip_ws(struct scan *s)
{
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

static int hexval(char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* At an opening quote: scans the string, sets its inner span. */
static int scan_string(struct scan *s, struct fb_str *out, bool *escaped)
{
  if (s->p >= s->end || *s->p != '"') return -EINVAL;
  const char *start = ++s->p;
  bool esc = false;
  while (s->p < s->end) {
    unsigned char c = (unsigned char)*s->p;
    if (c == '"') {
      out->p = start;
      out->n = (size_t)(s->p - start);
      if (escaped) *escaped = esc;
      s->p++;
      return 0;
    }
    if (c < 0x20) return -EINVAL;
    if (c == '\\') {
      esc = true;
      if (++s->p >= s->end) return -EINVAL;
      switch (*s->p) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't': break;
      case 'u':
        if (s->end - s->p < 5) return -EINVAL;
        for (int i = 1; i <= 4; i++)
          if (hexval(s->p[i]) < 0) return -EINVAL;
        s->p += 4;
        break;
      default: return -EINVAL;
      }
    }
    s->p++;
  }
  return -EINVAL;
}

static bool is_digit(const struct scan *s)
{
  return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int scan_number(struct scan *s)
{
  if (s->p < s->end && *s->p == '-') s->p++;
  if (!is_digit(s)) return -EINVAL;
  if (*s->p == '0')
    s->p++;
  else
    while (is_digit(s))
      s->p++;
  if (s->p < s->end && *s->p == '.') {
    s->p++;
    if (!is_digit(s)) return -EINVAL;
    while (is_digit(s))
      s->p++;
  }
  if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
    s->p++;
    if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
    if (!is_digit(s)) return -EINVAL;
    while (is_digit(s))
      s->p++;
  }
  return 0;
}

static int scan_literal(struct scan *s, const char *lit)
{
  size_t n = strlen(lit);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n)) return -EINVAL;
  s->p += n;
  return 0;
}

static int scan_value(struct scan *s, enum fb_json_type *type, struct fb_str *raw, bool *escaped);

/* At '{' or '[': scans the container. For an object, `key` (may be NULL) is
 * looked up among its members and reported through type/val/escaped. */
static int scan_container(struct scan *s, const char *key, enum fb_json_type *ktype,
                          struct fb_str *kval, bool *kesc)
{
  bool object = *s->p == '{';
  char close = object ? '}' : ']';
  if (++s->depth > SCAN_MAX_DEPTH) return -EINVAL;
  s->p++;
  skip_ws(s);
  if (s->p < s->end && *s->p == close) {
    s->p++;
    s->depth--;
    return 0;
  }
  size_t keylen = key ? strlen(key) : 0;
  for (;;) {
    bool hit = false;
    if (object) {
      struct fb_str name;
      bool name_esc = false;
      if (scan_string(s, &name, &name_esc)) return -EINVAL;
      hit = key && !name_esc && name.n == keylen && !memcmp(name.p, key, keylen);
      skip_ws(s);
      if (s->p >= s->end || *s->p != ':') return -EINVAL;
      s->p++;
      skip_ws(s);
    }
    enum fb_json_type t;
    struct fb_str raw;
    bool esc = false;
    if (scan_value(s, &t, &raw, &esc)) return -EINVAL;
    if (hit && ktype) {
      *ktype = t;
      *kval = raw;
      *kesc = esc;
    }
    skip_ws(s);
    if (s->p >= s->end) return -EINVAL;
    if (*s->p == ',') {
      s->p++;
      skip_ws(s);
      continue;
    }
    if (*s->p != close) return -EINVAL;
    s->p++;
    s->depth--;
    return 0;
  }
}

static int scan_value(struct scan *s, enum fb_json_type *type, struct fb_str *raw, bool *escaped)
{
  if (s->p >= s->end) return -EINVAL;
  const char *start = s->p;
  int rc;
  switch (*s->p) {
  case '{':
    *type = FB_JSON_OBJECT;
    rc = scan_container(s, NULL, NULL, NULL, NULL);
    break;
  case '[':
    *type = FB_JSON_ARRAY;
    rc = scan_container(s, NULL, NULL, NULL, NULL);
    break;
  case '"': *type = FB_JSON_STRING; return scan_string(s, raw, escaped);
  case 't':
    *type = FB_JSON_TRUE;
    rc = scan_literal(s, "true");
    break;
  case 'f':
    *type = FB_JSON_FALSE;
    rc = scan_literal(s, "false");
    break;
  case 'n':
    *type = FB_JSON_NULL;
    rc = scan_literal(s, "null");
    break;
  default:
    *type = FB_JSON_NUMBER;
    rc = scan_number(s);
    break;
  }
  raw->p = start;
  raw->n = (size_t)(s->p - start);
  return rc;
}

int fb_json_scan_object(const char *str, size_t n, const char *key, enum fb_json_type *type,
                        struct fb_str *val, bool *escaped)
{
  struct scan s = {str, str + n, 0};
  enum fb_json_type t = FB_JSON_NONE;
  struct fb_str v = {NULL, 0};
  bool esc = false;
  skip_ws(&s);
  if (s.p >= s.end || *s.p != '{') return -EINVAL;
  if (scan_container(&s, key, &t, &v, &esc)) return -EINVAL;
  skip_ws(&s);
  if (s.p != s.end) return -EINVAL;
  if (type) *type = t;
  if (val) *val = v;
  if (escaped) *escaped = esc;
  return 0;
}

/* ================================================================ frames */

static const char *const error_text[] = {
    [FB_FRAME_OK] = "ok",
    [FB_FRAME_NO_ID] = "frame_id is missing or empty",
    [FB_FRAME_BAD_METADATA] = "metadata is not a JSON object",
    [FB_FRAME_BAD_TRACE] = "trace_context is not a JSON object",
    [FB_FRAME_BAD_DETECTION] = "metadata.detection_type is not a string",
    [FB_FRAME_TOO_LARGE] = "entry is larger than 64 KiB",
    [FB_FRAME_NO_FIELDS] = "entry has no fields",
};

const char *fb_frame_error_str(enum fb_frame_error e)
{
  return (unsigned)e < sizeof error_text / sizeof error_text[0] ? error_text[e] : "unknown";
}

static bool parse_int64(struct fb_str s, int64_t *out)
{
  if (!s.n || s.n > 20) return false;
  size_t i = 0;
  bool neg = s.p[0] == '-';
  if (neg || s.p[0] == '+') i++;
  if (i == s.n) return false;
  uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < s.n; i++) {
    if (s.p[i] < '0' || s.p[i] > '9') return false;
    unsigned d = (unsigned)(s.p[i] - '0');
    if (v > (limit - d) / 10) return false; /* out of range */
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return true;
}

static enum fb_frame_error parse(struct fb_frame *f, const struct fb_field *fields, size_t n)
{
  memset(f, 0, sizeof *f);
  f->fields = fields;
  f->nfields = n;
  if (!n) return FB_FRAME_NO_FIELDS;

  struct fb_str metadata = {NULL, 0}, trace = {NULL, 0};
  bool has_metadata = false, has_trace = false, top_detection = false;
  for (size_t i = 0; i < n; i++) {
    struct fb_str k = fields[i].name, v = fields[i].value;
    f->bytes += k.n + v.n;
    /* Dispatch on length first: most fields are rejected by one compare. */
    switch (k.n) {
    case 8:
      if (fb_str_eq(k, "frame_id"))
        f->frame_id = v;
      else if (fb_str_eq(k, "metadata"))
        metadata = v, has_metadata = true;
      else if (fb_str_eq(k, "priority")) {
        f->has_priority = true;
        if (!parse_int64(v, &f->priority)) f->priority = 0;
      }
      break;
    case 9:
      if (fb_str_eq(k, "camera_id"))
        f->camera_id = v;
      else if (fb_str_eq(k, "timestamp"))
        f->timestamp = v;
      break;
    case 12:
      if (fb_str_eq(k, "storage_path")) f->has_storage_path = true;
      break;
    case 13:
      if (fb_str_eq(k, "trace_context")) trace = v, has_trace = true;
      break;
    case 14:
      if (fb_str_eq(k, "detection_type")) f->detection_type = v, top_detection = true;
      break;
    case 15:
      if (fb_str_eq(k, "storage_backend")) f->has_storage_backend = true;
      break;
    }
  }
  if (f->bytes > FB_FRAME_MAX_BYTES) return FB_FRAME_TOO_LARGE;
  if (!f->frame_id.n) return FB_FRAME_NO_ID;
  if (has_trace && fb_json_scan_object(trace.p, trace.n, NULL, NULL, NULL, NULL))
    return FB_FRAME_BAD_TRACE;
  if (has_metadata) {
    enum fb_json_type t;
    struct fb_str dt;
    bool esc;
    if (fb_json_scan_object(metadata.p, metadata.n, "detection_type", &t, &dt, &esc))
      return FB_FRAME_BAD_METADATA;
    if (t != FB_JSON_NONE && t != FB_JSON_STRING && t != FB_JSON_NULL)
      return FB_FRAME_BAD_DETECTION;
    if (!top_detection && t == FB_JSON_STRING) {
      f->detection_type = dt;
      f->detection_escaped = esc;
    }
  }
  return FB_FRAME_OK;
}

enum fb_frame_error fb_frame_parse(struct fb_frame *f, const struct fb_field *fields, size_t n)
{
  f->error = parse(f, fields, n);
  return f->error;
}

/* ============================================================ timestamps */

static int digits(const char **p, const char *end, int count, int *out)
{
  int v = 0;
  for (int i = 0; i < count; i++, (*p)++) {
    if (*p >= end || **p < '0' || **p > '9') return -EINVAL;
    v = v * 10 + (**p - '0');
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int fb_frame_time_ms(struct fb_str ts, int64_t *ms)
{
  if (!ts.n) return -EINVAL; /* before any arithmetic: ts.p may be NULL */
  const char *p = ts.p, *end = ts.p + ts.n;

  /* Unix seconds, with an optional fraction. */
  if (ts.n <= 4 || ts.p[4] != '-') {
    int64_t sec = 0, frac = 0, scale = 1000;
    if (*p < '0' || *p > '9') return -EINVAL;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
      if (sec > INT64_C(100000000000)) return -EINVAL;
      sec = sec * 10 + (*p - '0');
    }
    if (p < end && *p == '.') {
      for (p++; p < end && *p >= '0' && *p <= '9'; p++)
        if (scale > 1) frac += (*p - '0') * (scale /= 10);
    }
    if (p != end) return -EINVAL;
    *ms = sec * 1000 + frac;
    return 0;
  }

  /* ISO-8601: YYYY-MM-DD[T ]HH:MM:SS[.fff...][Z|+HH:MM|-HH:MM] */
  int y, mo, d, h, mi, s;
  if (digits(&p, end, 4, &y) || p >= end || *p++ != '-' || digits(&p, end, 2, &mo) || p >= end ||
      *p++ != '-' || digits(&p, end, 2, &d) || p >= end || (*p != 'T' && *p != 't' && *p != ' '))
    return -EINVAL;
  p++;
  if (digits(&p, end, 2, &h) || p >= end || *p++ != ':' || digits(&p, end, 2, &mi) || p >= end ||
      *p++ != ':' || digits(&p, end, 2, &s))
    return -EINVAL;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return -EINVAL;
  int64_t frac = 0, scale = 1000;
  if (p < end && (*p == '.' || *p == ',')) {
    p++;
    if (p >= end || *p < '0' || *p > '9') return -EINVAL;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
      if (scale > 1) frac += (*p - '0') * (scale /= 10);
  }
  int64_t offset_min = 0;
  if (p < end && (*p == 'Z' || *p == 'z')) {
    p++;
  } else if (p < end && (*p == '+' || *p == '-')) {
    int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
    if (digits(&p, end, 2, &oh)) return -EINVAL;
    if (p < end && *p == ':') p++;
    if (p < end && digits(&p, end, 2, &om)) return -EINVAL;
    offset_min = sign * (oh * 60 + om);
  }
  /* No zone: UTC, as the capture service writes it. */
  if (p != end) return -EINVAL;
  int64_t days = days_from_civil(y, mo, d);
  *ms = ((days * 86400 + h * 3600 + mi * 60 + s) - offset_min * 60) * 1000 + frac;
  return 0;
}

/* ========================================================== serializing */

static void append_head(struct fb_buf *o, size_t nargs, const char *stream, int64_t maxlen)
{
  char cap[24];
  int n = snprintf(cap, sizeof cap, "%lld", (long long)maxlen);
  fb_buf_resp_array(o, nargs);
  fb_buf_resp_bulk(o, "XADD", 4);
  fb_buf_resp_bulk(o, stream, strlen(stream));
  fb_buf_resp_bulk(o, "MAXLEN", 6);
  fb_buf_resp_bulk(o, "~", 1);
  fb_buf_resp_bulk(o, cap, (size_t)n);
  fb_buf_resp_bulk(o, "*", 1);
  /* the fields follow */
}

static void append_fields(struct fb_buf *o, const struct fb_frame *f)
{
  for (size_t i = 0; i < f->nfields; i++) {
    fb_buf_resp_bulk(o, f->fields[i].name.p, f->fields[i].name.n);
    fb_buf_resp_bulk(o, f->fields[i].value.p, f->fields[i].value.n);
  }
}

void fb_frame_append_xadd(struct fb_buf *o, const struct fb_frame *f, const char *stream,
                          int64_t maxlen)
{
  size_t extra = (!f->has_priority ? 2 : 0) + (!f->has_storage_path ? 2 : 0) +
                 (!f->has_storage_backend ? 2 : 0);
  append_head(o, 6 + 2 * f->nfields + extra, stream, maxlen);
  append_fields(o, f);
  if (!f->has_priority) {
    fb_buf_resp_bulk(o, "priority", 8);
    fb_buf_resp_bulk(o, "0", 1);
  }
  if (!f->has_storage_path) {
    fb_buf_resp_bulk(o, "storage_path", 12);
    fb_buf_resp_bulk(o, "", 0);
  }
  if (!f->has_storage_backend) {
    fb_buf_resp_bulk(o, "storage_backend", 15);
    fb_buf_resp_bulk(o, "redis", 5);
  }
}

void fb_frame_append_dlq(struct fb_buf *o, const struct fb_frame *f, const char *stream,
                         int64_t maxlen, const char *reason, struct fb_str source_id,
                         const char *at, const char *detail)
{
  append_head(o, 6 + 2 * f->nfields + 8, stream, maxlen);
  append_fields(o, f);
  fb_buf_resp_bulk(o, "dlq_reason", 10);
  fb_buf_resp_bulk(o, reason, strlen(reason));
  fb_buf_resp_bulk(o, "dlq_source_id", 13);
  fb_buf_resp_bulk(o, source_id.p, source_id.n);
  fb_buf_resp_bulk(o, "dlq_at", 6);
  fb_buf_resp_bulk(o, at, strlen(at));
  fb_buf_resp_bulk(o, "dlq_detail", 10);
  fb_buf_resp_bulk(o, detail, strlen(detail));
}

void fb_frame_append_json(struct fb_buf *o, const struct fb_frame *f)
{
  fb_buf_puts(o, "{");
  for (size_t i = 0; i < f->nfields; i++) {
    if (i) fb_buf_puts(o, ",");
    fb_buf_json_string(o, f->fields[i].name.p, f->fields[i].name.n);
    fb_buf_puts(o, ":");
    fb_buf_json_string(o, f->fields[i].value.p, f->fields[i].value.n);
  }
  if (!f->has_priority) fb_buf_puts(o, ",\"priority\":\"0\"");
  if (!f->has_storage_path) fb_buf_puts(o, ",\"storage_path\":\"\"");
  if (!f->has_storage_backend) fb_buf_puts(o, ",\"storage_backend\":\"redis\"");
  fb_buf_puts(o, "}");
}
