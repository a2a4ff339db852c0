/*
 * Bounded byte buffers (see buf.h). Pure memory work, no I/O.
 */
#include "framebuffer/buf.h"

#include <errno.h>
#include <stdarg.h>
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

int fb_buf_json_string(struct fb_buf *b, const char *s, size_t n)
{
  static const char hex[] = "0123456789abcdef";
  int rc = fb_buf_append(b, "\"", 1);
  size_t run = 0; /* bytes copied verbatim in one go */
  for (size_t i = 0; i < n && !rc; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      run++;
      continue;
    }
    if (c >= 0x80) {
      size_t len = utf8_len((const unsigned char *)s + i, n - i);
      if (len) {
        run += len;
        i += len - 1;
        continue;
      }
    }
    rc = fb_buf_append(b, s + i - run, run);
    run = 0;
    if (c >= 0x80) { /* not UTF-8: the replacement character, so the output always is */
      rc = rc ? rc : fb_buf_append(b, "\\ufffd", 6);
      continue;
    }
    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
    switch (c) {
    case '"': rc = rc ? rc : fb_buf_append(b, "\\\"", 2); break;
    case '\\': rc = rc ? rc : fb_buf_append(b, "\\\\", 2); break;
    case '\n': rc = rc ? rc : fb_buf_append(b, "\\n", 2); break;
    case '\r': rc = rc ? rc : fb_buf_append(b, "\\r", 2); break;
    case '\t': rc = rc ? rc : fb_buf_append(b, "\\t", 2); break;
    default: rc = rc ? rc : fb_buf_append(b, esc, sizeof esc); break;
    }
  }
  if (!rc) rc = fb_buf_append(b, s + n - run, run);
  if (!rc) rc = fb_buf_append(b, "\"", 1);
  return rc;
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
