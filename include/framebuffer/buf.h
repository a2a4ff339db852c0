/*
 * Byte buffers with a hard maximum, in the manner of curl's dynbuf: a buffer
 * never grows past the limit it was created with. Appends that would pass it
 * fail with -ENOSPC and mark the buffer truncated (sticky), so a caller can
 * build a whole message and check once at the end. Not thread-safe: a buffer
 * belongs to one thread at a time.
 */
#ifndef FRAMEBUFFER_BUF_H
#define FRAMEBUFFER_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fb_buf {
  char *data;
  size_t len;
  size_t cap;
  size_t max;     /* hard limit on len */
  bool fixed;     /* data is caller memory: never reallocated or freed */
  bool truncated; /* an append failed */
};

/* A growable buffer that refuses to hold more than `max` bytes. */
void fb_buf_init(struct fb_buf *b, size_t max);
/* A buffer over caller memory of `cap` bytes. */
void fb_buf_init_fixed(struct fb_buf *b, char *mem, size_t cap);
void fb_buf_free(struct fb_buf *b);
/* Empties the buffer and clears `truncated`; keeps the memory. */
void fb_buf_reset(struct fb_buf *b);

/* Each returns 0, or -ENOSPC/-ENOMEM (and sets `truncated`). */
int fb_buf_append(struct fb_buf *b, const void *p, size_t n);
int fb_buf_puts(struct fb_buf *b, const char *s);
int fb_buf_printf(struct fb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fb_buf_u64(struct fb_buf *b, uint64_t v);
/* Appends `s` as a quoted, escaped JSON string. Bytes that are not UTF-8
 * become U+FFFD, so the result is always valid JSON text. */
int fb_buf_json_string(struct fb_buf *b, const char *s, size_t n);
/* Appends a RESP bulk string: $<n>\r\n<bytes>\r\n */
int fb_buf_resp_bulk(struct fb_buf *b, const char *s, size_t n);
/* Appends a RESP array header: *<n>\r\n */
int fb_buf_resp_array(struct fb_buf *b, size_t n);

/* A NUL-terminated view of the contents (appends a NUL not counted in len). */
const char *fb_buf_cstr(struct fb_buf *b);

#endif
