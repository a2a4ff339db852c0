/*
 * Bounded byte buffers (see buf.h). Pure memory work, no I/O.
 */
#include "framebuffer/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fb_buf_init(struct fb_buf *b, size_t max)
{
  memset(b, 0, sizeof *b);
  b->max = max;
}

void fb_buf_init_fixed(struct fb_buf *b, char *mem, size_t cap)
{
  memset(b, 0, sizeof *b);
  b->data = mem;
  b->cap = cap;
  b->max = cap ? cap - 1 : 0; /* room for the NUL of fb_buf_cstr */
  b->fixed = true;
}

void fb_buf_free(struct fb_buf *b)
{
  if (!b->fixed) free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void fb_buf_reset(struct fb_buf *b)
{
  b->len = 0;
  b->truncated = false;
}

/* Makes room for `extra` more bytes plus a NUL. */
static int reserve(struct fb_buf *b, size_t extra)
{
  if (extra > b->max - b->len) {
    b->truncated = true;
    return -ENOSPC;
  }
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  if (b->fixed) {
    b->truncated = true;
    return -ENOSPC;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    b->truncated = true;
    return -ENOMEM;
  }
  b->data = p;
  b->cap = cap;
  return 0;
}

int fb_buf_append(struct fb_buf *b, const void *p, size_t n)
{
  int rc = reserve(b, n);
  if (rc) {
    /* A fixed buffer keeps what fits: log lines are cut, not lost. */
    if (b->fixed && b->cap > b->len + 1) {
      size_t room = b->cap - b->len - 1;
      memcpy(b->data + b->len, p, room);
      b->len += room;
    }
    return rc;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int fb_buf_puts(struct fb_buf *b, const char *s)
{
  return fb_buf_append(b, s, strlen(s));
}

int fb_buf_printf(struct fb_buf *b, const char *fmt, ...)
{
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return -EINVAL;
  if ((size_t)n < sizeof small) return fb_buf_append(b, small, (size_t)n);

  int rc = reserve(b, (size_t)n);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

int fb_buf_u64(struct fb_buf *b, uint64_t v)
{
  char tmp[24];
  char *p = tmp + sizeof tmp;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return fb_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

/* The length of the well-formed UTF-8 sequence at p (lead byte >= 0x80),
 * or 0: overlong forms, surrogates and code points past U+10FFFF are not. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
  unsigned char c = p[0];
  size_t len = c >= 0xc2 && c <= 0xdf   ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
  if (!len || len > left) return 0;
  unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t k = 2; k < len; k++)
    if (p[k] < 0x80 || p[k] > 0xbf) return 0;
  return len;
}

#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Does any byte of w need more than a copy in a JSON string? */
static inline bool needs_escape(uint64_t w)
{
  uint64_t quote = w ^ (ONES * '"'), backslash = w ^ (ONES * '\\');
  uint64_t zero_q = (quote - ONES) & ~quote, zero_b = (backslash - ONES) & ~backslash;
  uint64_t below_space = (w - ONES * 0x20) & ~w;
  return ((zero_q | zero_b | below_space) & HIGHS) || (w & HIGHS);
}

/* Writes the JSON escape of s[0..n) to `out`, stopping after at least
 * `budget` input bytes (never inside a UTF-8 sequence); returns the bytes
 * written, at most 6 a byte consumed, and sets *used. */
static size_t json_escape(char *out, const char *s, size_t n, size_t budget, size_t *used)
{
  static const char hex[] = "0123456789abcdef";
  char *o = out;
  size_t i = 0;
  while (i < n && i < budget) {
    /* Eight plain bytes at a time: none below 0x20, above 0x7f, '"' or '\\'. */
    while (i + 8 <= n && i < budget) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (needs_escape(w)) break;
      memcpy(o, &w, 8);
      o += 8;
      i += 8;
    }
    if (i >= n || i >= budget) break;
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      *o++ = (char)c;
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t len = utf8_len((const unsigned char *)s + i, n - i);
      if (len) {
        memcpy(o, s + i, len);
        o += len;
        i += len;
      } else { /* not UTF-8: the replacement character, so the output always is */
        memcpy(o, "\\ufffd", 6);
        o += 6;
        i++;
      }
      continue;
    }
    i++;
    *o++ = '\\';
    switch (c) {
    case '"': *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
      memcpy(o, "u00", 3);
      o[3] = hex[c >> 4];
      o[4] = hex[c & 15];
      o += 5;
      break;
    }
  }
  *used = i;
  return (size_t)(o - out);
}

int fb_buf_json_string(struct fb_buf *b, const char *s, size_t n)
{
  size_t used;
  bool was_truncated = b->truncated;
  /* The usual case: room for the worst, one pass straight into the buffer. */
  if (n <= (SIZE_MAX - 2) / 6 && reserve(b, 6 * n + 2) == 0) {
    b->data[b->len++] = '"';
    b->len += json_escape(b->data + b->len, s, n, n, &used);
    b->data[b->len++] = '"';
    return 0;
  }
  b->truncated = was_truncated; /* what did not fit was the worst case, not the text */
  int rc = fb_buf_append(b, "\"", 1);
  char chunk[6 * 256 + 32];
  for (size_t i = 0; i < n && !rc; i += used)
    rc = fb_buf_append(b, chunk, json_escape(chunk, s + i, n - i, 256, &used));
  return rc ? rc : fb_buf_append(b, "\"", 1);
}

/* Writes the decimal digits of `v` ending just before `end`; returns the
 * first digit. */
static char *digits_before(char *end, uint64_t v)
{
  do {
    *--end = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  return end;
}

/* The hot path of every hand-off: one reserve, then plain copies. */
int fb_buf_resp_bulk(struct fb_buf *b, const char *s, size_t n)
{
  char head[24];
  char *end = head + sizeof head;
  *--end = '\n';
  *--end = '\r';
  char *p = digits_before(end, n);
  *--p = '$';
  size_t hl = (size_t)(head + sizeof head - p);
  int rc = reserve(b, hl + n + 2);
  if (rc) {
    /* Let the slow path keep what fits in a fixed buffer. */
    if (!(rc = fb_buf_append(b, p, hl))) rc = fb_buf_append(b, s, n);
    if (!rc) rc = fb_buf_append(b, "\r\n", 2);
    return rc;
  }
  char *d = b->data + b->len;
  memcpy(d, p, hl);
  memcpy(d + hl, s, n);
  d[hl + n] = '\r';
  d[hl + n + 1] = '\n';
  b->len += hl + n + 2;
  return 0;
}

int fb_buf_resp_array(struct fb_buf *b, size_t n)
{
  int rc = fb_buf_append(b, "*", 1);
  if (!rc) rc = fb_buf_u64(b, n);
  if (!rc) rc = fb_buf_append(b, "\r\n", 2);
  return rc;
}

const char *fb_buf_cstr(struct fb_buf *b)
{
  if (!b->data) return "";
  b->data[b->len] = '\0'; /* reserve() always keeps room for it */
  return b->data;
}
