/*
 * A frame: one entry of the input stream, seen through views into the
 * memory of the Redis reply (nothing is copied). Parsing checks what makes a
 * frame malformed (docs/protocol.md: Frames in) and finds the fields routing needs, without
 * allocating and without building a JSON tree. Pure: no I/O, any thread.
 */
#ifndef FRAMEBUFFER_FRAME_H
#define FRAMEBUFFER_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/buf.h"

#define FB_FRAME_MAX_BYTES (64 * 1024) /* larger entries are not frames */
#define FB_DLQ_STREAM      "frames:dlq"

struct fb_str {
  const char *p;
  size_t n;
};

struct fb_field {
  struct fb_str name;
  struct fb_str value;
};

enum fb_frame_error {
  FB_FRAME_OK = 0,
  FB_FRAME_NO_ID,         /* frame_id missing or empty */
  FB_FRAME_BAD_METADATA,  /* metadata present but not a JSON object */
  FB_FRAME_BAD_TRACE,     /* trace_context present but not a JSON object */
  FB_FRAME_BAD_DETECTION, /* metadata.detection_type present but not a string */
  FB_FRAME_TOO_LARGE,     /* entry over FB_FRAME_MAX_BYTES */
  FB_FRAME_NO_FIELDS,     /* entry deleted from the stream, or no fields at all */
};

struct fb_frame {
  enum fb_frame_error error;     /* what fb_frame_parse returned */
  const struct fb_field *fields; /* borrowed */
  size_t nfields;
  size_t bytes; /* names + values */
  struct fb_str frame_id;
  struct fb_str camera_id;
  struct fb_str timestamp;
  /* The detection type as routing uses it: top-level field, else
   * metadata.detection_type. Empty when the frame has none. May still hold
   * JSON escapes when it came from metadata and `detection_escaped` is set. */
  struct fb_str detection_type;
  bool detection_escaped;
  int64_t priority;  /* 0 when absent or not an integer */
  bool has_priority; /* the field is present (whatever its value) */
  bool has_storage_path;
  bool has_storage_backend;
  /* Set on a shadow copy only (shadows.h): its shadow's name, so that a
   * sink that keys frames by id (JetStream) keeps the copy apart. */
  struct fb_str shadow;
};

/*
 * Parses the `n` fields of one entry into `f` (views into `fields`).
 * Returns FB_FRAME_OK or the reason the entry is malformed; `f` is filled as
 * far as parsing got either way (frame_id is set when present).
 */
enum fb_frame_error fb_frame_parse(struct fb_frame *f, const struct fb_field *fields, size_t n);

/* A short human reason, e.g. "metadata is not a JSON object". */
const char *fb_frame_error_str(enum fb_frame_error e);

/*
 * Frame capture time in unix milliseconds from `timestamp` (ISO-8601 with an
 * optional fraction and zone, or unix seconds with an optional fraction).
 * Returns 0 and sets *ms, or -EINVAL.
 */
int fb_frame_time_ms(struct fb_str ts, int64_t *ms);

bool fb_str_eq(struct fb_str s, const char *lit);

/* ---------------------------------------------------------- serializing */

/* Appends, as RESP, the XADD that hands `f` to a processor's stream: every
 * input field plus priority ("0"), storage_path ("") and storage_backend
 * ("redis") when absent (docs/protocol.md: Frames out), capped with MAXLEN ~ `maxlen`. */
void fb_frame_append_xadd(struct fb_buf *o, const struct fb_frame *f, const char *stream,
                          int64_t maxlen);

/* Appends the XADD that puts `f` in the dead-letter stream with dlq_reason,
 * dlq_source_id, dlq_at and dlq_detail. */
void fb_frame_append_dlq(struct fb_buf *o, const struct fb_frame *f, const char *stream,
                         int64_t maxlen, const char *reason, struct fb_str source_id,
                         const char *at, const char *detail);

/* Appends `f` as a JSON object of strings, with the same defaults as
 * fb_frame_append_xadd: the payload of a remote frame. */
void fb_frame_append_json(struct fb_buf *o, const struct fb_frame *f);

/* ------------------------------------------------------------ JSON scan */

enum fb_json_type {
  FB_JSON_NONE,
  FB_JSON_OBJECT,
  FB_JSON_ARRAY,
  FB_JSON_STRING,
  FB_JSON_NUMBER,
  FB_JSON_TRUE,
  FB_JSON_FALSE,
  FB_JSON_NULL
};

/*
 * Checks that `s` is exactly one well-formed JSON object (nesting up to 64)
 * and, when `key` is not NULL, finds that key among its top-level members.
 * On a hit `*type` is its type and `*val` its raw text (for a string: the
 * bytes between the quotes, escapes untouched, `*escaped` set when there
 * were any). Returns 0 (key found or not: then *type is FB_JSON_NONE) or
 * -EINVAL when `s` is not a JSON object.
 */
int fb_json_scan_object(const char *s, size_t n, const char *key, enum fb_json_type *type,
                        struct fb_str *val, bool *escaped);

#endif
