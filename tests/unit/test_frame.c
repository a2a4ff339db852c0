/*
 * Unit tests for gateway/frame.c: frame parsing from stream fields (README: Delivery guarantees),
 * the validating JSON scanner, timestamp parsing, and serializing a frame
 * for a processor stream, the DLQ and NATS. Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "framebuffer/frame.h"

/* ============================================================== helpers */

static struct fb_str str(const char *s)
{
  return (struct fb_str){s, strlen(s)};
}

static struct fb_field field(const char *name, const char *value)
{
  return (struct fb_field){str(name), str(value)};
}

/* Parses a frame of `frame_id=f1` plus one more field. */
static enum fb_frame_error parse_with(struct fb_frame *f, const char *name, const char *value)
{
  static struct fb_field fields[2];
  fields[0] = field("frame_id", "f1");
  fields[1] = field(name, value);
  return fb_frame_parse(f, fields, 2);
}

static int scan(const char *json)
{
  return fb_json_scan_object(json, strlen(json), NULL, NULL, NULL, NULL);
}

/* `depth` nested objects: {"a":{"a":{}}} is depth 3. Caller frees. */
static char *nested_objects(int depth)
{
  size_t cap = (size_t)depth * 6 + 1;
  char *s = malloc(cap);
  assert_non_null(s);
  size_t n = 0;
  for (int i = 1; i < depth; i++) {
    memcpy(s + n, "{\"a\":", 5);
    n += 5;
  }
  memcpy(s + n, "{}", 2);
  n += 2;
  for (int i = 1; i < depth; i++)
    s[n++] = '}';
  s[n] = '\0';
  return s;
}

/* A page followed by an inaccessible one: a view copied to the end of the
 * first page makes any read past it crash the test, with or without
 * valgrind or ASan. */
static char *guard_mem;
static size_t guard_page;

static int guard_setup(void **state)
{
  guard_page = (size_t)sysconf(_SC_PAGESIZE);
  void *m = mmap(NULL, 2 * guard_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return -1;
  guard_mem = m;
  return mprotect(guard_mem + guard_page, guard_page, PROT_NONE);
}

static int guard_teardown(void **state)
{
  munmap(guard_mem, 2 * guard_page);
  return 0;
}

/* A copy of the `n` bytes at `s` whose last byte is the last readable one. */
static struct fb_str guarded(const char *s, size_t n)
{
  assert_true(n <= guard_page);
  char *p = guard_mem + guard_page - n;
  memcpy(p, s, n);
  return (struct fb_str){p, n};
}

/* Expected unix ms of a UTC civil time, computed by libc, not by hand. */
static int64_t utc_ms(int y, int mo, int d, int h, int mi, int s)
{
  struct tm tm = {0};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return (int64_t)timegm(&tm) * 1000;
}

static int time_ms(const char *ts, int64_t *ms)
{
  return fb_frame_time_ms(str(ts), ms);
}

static void assert_time(const char *ts, int64_t expected)
{
  int64_t ms = -1;
  assert_int_equal(time_ms(ts, &ms), 0);
  assert_int_equal(ms, expected);
}

static void assert_time_rejected(const char *ts)
{
  int64_t ms = 12345;
  assert_int_equal(time_ms(ts, &ms), -EINVAL);
}

/* ======================================================== frame: valid */

static void minimal_frame_is_ok(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 1), FB_FRAME_OK);
  assert_int_equal(f.error, FB_FRAME_OK);
  assert_true(fb_str_eq(f.frame_id, "f1"));
  assert_int_equal(f.detection_type.n, 0);
  assert_false(f.has_priority);
  assert_int_equal(f.priority, 0);
  assert_false(f.has_storage_path);
  assert_false(f.has_storage_backend);
  assert_ptr_equal(f.fields, fields);
  assert_int_equal(f.nfields, 1);
}

static void full_frame_fields_are_found(void **state)
{
  struct fb_field fields[] = {
      field("frame_id", "frame-42"),
      field("camera_id", "cam-7"),
      field("timestamp", "2024-03-15T12:34:56Z"),
      field("size_bytes", "1024"),
      field("width", "1920"),
      field("height", "1080"),
      field("format", "jpeg"),
      field("trace_context", "{\"trace_id\":\"abc\",\"span_id\":\"def\"}"),
      field("metadata", "{\"detection_type\":\"person\",\"zone\":3}"),
      field("priority", "7"),
      field("storage_path", "/x"),
      field("storage_backend", "s3"),
  };
  size_t n = sizeof fields / sizeof fields[0];
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, n), FB_FRAME_OK);
  assert_true(fb_str_eq(f.frame_id, "frame-42"));
  assert_true(fb_str_eq(f.camera_id, "cam-7"));
  assert_true(fb_str_eq(f.timestamp, "2024-03-15T12:34:56Z"));
  assert_true(fb_str_eq(f.detection_type, "person"));
  assert_false(f.detection_escaped);
  assert_true(f.has_priority);
  assert_int_equal(f.priority, 7);
  assert_true(f.has_storage_path);
  assert_true(f.has_storage_backend);
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += fields[i].name.n + fields[i].value.n;
  assert_int_equal(f.bytes, bytes);
}

static void unknown_fields_are_ignored(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "something_else", "[not json"), FB_FRAME_OK);
}

/* ==================================================== frame: malformed */

static void no_fields_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, NULL, 0), FB_FRAME_NO_FIELDS);
  assert_int_equal(f.error, FB_FRAME_NO_FIELDS);
}

static void missing_frame_id_is_malformed(void **state)
{
  struct fb_field fields[] = {field("camera_id", "c1"), field("timestamp", "1700000000")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_NO_ID);
  assert_int_equal(f.error, FB_FRAME_NO_ID);
  assert_true(fb_str_eq(f.camera_id, "c1"));
}

static void empty_frame_id_is_malformed(void **state)
{
  struct fb_field fields[] = {field("frame_id", ""), field("camera_id", "c1")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_NO_ID);
}

static void metadata_array_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "[1,2]"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "[]"), FB_FRAME_BAD_METADATA);
}

static void metadata_string_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "\"person\""), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "person"), FB_FRAME_BAD_METADATA);
}

static void metadata_scalar_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "42"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "null"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "true"), FB_FRAME_BAD_METADATA);
}

static void metadata_empty_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", ""), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "   "), FB_FRAME_BAD_METADATA);
}

static void metadata_truncated_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":\"person\""),
                   FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{\"a\":"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{\"a"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{"), FB_FRAME_BAD_METADATA);
}

static void metadata_trailing_garbage_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{} x"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{}{}"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{\"a\":1}}"), FB_FRAME_BAD_METADATA);
  assert_int_equal(parse_with(&f, "metadata", "{\"a\":1},"), FB_FRAME_BAD_METADATA);
}

static void metadata_with_surrounding_whitespace_is_ok(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", " \t\r\n{ \"a\" : 1 }\n "), FB_FRAME_OK);
}

static void malformed_frame_still_reports_frame_id(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "[]"), FB_FRAME_BAD_METADATA);
  assert_true(fb_str_eq(f.frame_id, "f1"));
}

static void trace_context_not_object_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "trace_context", "[]"), FB_FRAME_BAD_TRACE);
  assert_int_equal(parse_with(&f, "trace_context", "\"abc\""), FB_FRAME_BAD_TRACE);
  assert_int_equal(parse_with(&f, "trace_context", "00-abc-def-01"), FB_FRAME_BAD_TRACE);
  assert_int_equal(parse_with(&f, "trace_context", "{\"trace_id\":"), FB_FRAME_BAD_TRACE);
  assert_int_equal(parse_with(&f, "trace_context", "{} junk"), FB_FRAME_BAD_TRACE);
  assert_int_equal(parse_with(&f, "trace_context", ""), FB_FRAME_BAD_TRACE);
}

static void trace_context_object_is_ok(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "trace_context", "{\"trace_id\":\"t\",\"span_id\":\"s\"}"),
                   FB_FRAME_OK);
  assert_int_equal(parse_with(&f, "trace_context", "{}"), FB_FRAME_OK);
}

static void traceparent_field_is_accepted(void **state)
{
  struct fb_frame f;
  assert_int_equal(
      parse_with(&f, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
      FB_FRAME_OK);
}

static void detection_type_number_is_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":42}"), FB_FRAME_BAD_DETECTION);
}

static void detection_type_other_non_strings_are_malformed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":true}"), FB_FRAME_BAD_DETECTION);
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":false}"),
                   FB_FRAME_BAD_DETECTION);
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":[\"person\"]}"),
                   FB_FRAME_BAD_DETECTION);
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":{\"x\":1}}"),
                   FB_FRAME_BAD_DETECTION);
}

static void detection_type_null_is_allowed(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":null}"), FB_FRAME_OK);
  assert_int_equal(f.detection_type.n, 0);
}

static void entry_over_64k_is_too_large(void **state)
{
  size_t n = FB_FRAME_MAX_BYTES; /* with the name, one field is over the limit */
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, 'x', n);
  big[n] = '\0';
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "blob", big), FB_FRAME_TOO_LARGE);
  free(big);
}

static void entry_of_exactly_64k_is_ok(void **state)
{
  /* frame_id=f1 (10 bytes) + blob (4) + value = 64 KiB */
  size_t n = FB_FRAME_MAX_BYTES - 10 - 4;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, 'x', n);
  big[n] = '\0';
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "blob", big), FB_FRAME_OK);
  assert_int_equal(f.bytes, FB_FRAME_MAX_BYTES);
  free(big);
}

static void entry_too_large_from_many_fields(void **state)
{
  enum { NF = 70 };
  static char value[1024];
  memset(value, 'v', sizeof value - 1);
  struct fb_field fields[NF];
  fields[0] = field("frame_id", "f1");
  for (int i = 1; i < NF; i++)
    fields[i] = field("extra", value);
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, NF), FB_FRAME_TOO_LARGE);
}

static void nesting_deeper_than_64_is_malformed(void **state)
{
  char *deep = nested_objects(65);
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", deep), FB_FRAME_BAD_METADATA);
  free(deep);
}

static void nesting_of_64_is_ok(void **state)
{
  char *deep = nested_objects(64);
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", deep), FB_FRAME_OK);
  free(deep);
}

static void error_strings_are_distinct(void **state)
{
  const char *seen[FB_FRAME_NO_FIELDS + 1];
  for (int e = FB_FRAME_OK; e <= FB_FRAME_NO_FIELDS; e++) {
    seen[e] = fb_frame_error_str((enum fb_frame_error)e);
    assert_non_null(seen[e]);
    assert_true(strlen(seen[e]) > 0);
    for (int k = 0; k < e; k++)
      assert_string_not_equal(seen[k], seen[e]);
  }
  assert_string_equal(fb_frame_error_str(FB_FRAME_BAD_METADATA), "metadata is not a JSON object");
  assert_string_equal(fb_frame_error_str((enum fb_frame_error)99), "unknown");
}

/* ===================================================== detection type */

static void detection_type_from_metadata(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"zone\":1,\"detection_type\":\"vehicle\"}"),
                   FB_FRAME_OK);
  assert_true(fb_str_eq(f.detection_type, "vehicle"));
  assert_false(f.detection_escaped);
}

static void detection_type_top_level_wins(void **state)
{
  struct fb_field fields[] = {
      field("frame_id", "f1"),
      field("metadata", "{\"detection_type\":\"vehicle\"}"),
      field("detection_type", "person"),
  };
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 3), FB_FRAME_OK);
  assert_true(fb_str_eq(f.detection_type, "person"));
  assert_false(f.detection_escaped);
}

static void detection_type_top_level_wins_in_any_order(void **state)
{
  struct fb_field fields[] = {
      field("detection_type", "person"),
      field("frame_id", "f1"),
      field("metadata", "{\"detection_type\":\"vehicle\"}"),
  };
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 3), FB_FRAME_OK);
  assert_true(fb_str_eq(f.detection_type, "person"));
}

static void detection_type_escaped_in_metadata(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"detection_type\":\"caf\\u00e9 \\\"x\\\"\"}"),
                   FB_FRAME_OK);
  assert_true(f.detection_escaped);
  /* Escapes are left for the consumer to decode. */
  assert_true(fb_str_eq(f.detection_type, "caf\\u00e9 \\\"x\\\""));
}

static void detection_type_nested_key_is_not_top_level(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"inner\":{\"detection_type\":\"person\"}}"),
                   FB_FRAME_OK);
  assert_int_equal(f.detection_type.n, 0);
}

static void detection_type_key_inside_string_is_not_a_key(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "metadata", "{\"note\":\"\\\"detection_type\\\":\\\"x\\\"\"}"),
                   FB_FRAME_OK);
  assert_int_equal(f.detection_type.n, 0);
}

/* =========================================================== priority */

static void priority_positive(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "priority", "5"), FB_FRAME_OK);
  assert_true(f.has_priority);
  assert_int_equal(f.priority, 5);
}

static void priority_negative(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "priority", "-3"), FB_FRAME_OK);
  assert_int_equal(f.priority, -3);
}

static void priority_int64_max(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "priority", "9223372036854775807"), FB_FRAME_OK);
  assert_true(f.priority == INT64_MAX);
}

static void priority_not_an_integer_is_zero(void **state)
{
  const char *bad[] = {"abc", "", "1.5", "5x", "-", "+", " 5", "0x10"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct fb_frame f;
    assert_int_equal(parse_with(&f, "priority", bad[i]), FB_FRAME_OK);
    assert_true(f.has_priority);
    assert_int_equal(f.priority, 0);
  }
}

/* 19 digits but above INT64_MAX: must not wrap into a negative priority. */
static void priority_out_of_range_is_zero(void **state)
{
  struct fb_frame f;
  assert_int_equal(parse_with(&f, "priority", "9999999999999999999"), FB_FRAME_OK);
  assert_true(f.has_priority);
  assert_int_equal(f.priority, 0);
}

/* ========================================================= JSON scanner */

static void scan_accepts_empty_object(void **state)
{
  assert_int_equal(scan("{}"), 0);
  assert_int_equal(scan(" { } "), 0);
}

static void scan_rejects_non_objects(void **state)
{
  assert_int_equal(scan(""), -EINVAL);
  assert_int_equal(scan("  "), -EINVAL);
  assert_int_equal(scan("[]"), -EINVAL);
  assert_int_equal(scan("\"s\""), -EINVAL);
  assert_int_equal(scan("1"), -EINVAL);
  assert_int_equal(scan("null"), -EINVAL);
}

static void scan_rejects_bad_syntax(void **state)
{
  assert_int_equal(scan("{\"a\":1,}"), -EINVAL); /* trailing comma */
  assert_int_equal(scan("{,}"), -EINVAL);
  assert_int_equal(scan("{\"a\" 1}"), -EINVAL);         /* no colon */
  assert_int_equal(scan("{a:1}"), -EINVAL);             /* unquoted key */
  assert_int_equal(scan("{'a':1}"), -EINVAL);           /* single quotes */
  assert_int_equal(scan("{\"a\":1 \"b\":2}"), -EINVAL); /* no comma */
  assert_int_equal(scan("{\"a\":[1,2}"), -EINVAL);      /* mismatched close */
  assert_int_equal(scan("{\"a\":[1,]}"), -EINVAL);
  assert_int_equal(scan("{\"a\":}"), -EINVAL);
  assert_int_equal(scan("{1:2}"), -EINVAL);
}

static void scan_accepts_numbers(void **state)
{
  const char *ok[] = {"0", "-0", "7", "-0.5e+3", "1E5", "1e-10", "123.456", "-12.0E-2", "0.0"};
  char buf[64];
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    snprintf(buf, sizeof buf, "{\"n\":%s}", ok[i]);
    enum fb_json_type t = FB_JSON_NONE;
    struct fb_str v = {0};
    assert_int_equal(fb_json_scan_object(buf, strlen(buf), "n", &t, &v, NULL), 0);
    assert_int_equal(t, FB_JSON_NUMBER);
    assert_true(fb_str_eq(v, ok[i]));
  }
}

static void scan_rejects_bad_numbers(void **state)
{
  const char *bad[] = {"01",  "-01",  "-",   "1.",       ".5",        "+1",    "1e", "1e+",
                       "--1", "0x10", "NaN", "Infinity", "-Infinity", "1.2.3", "00"};
  char buf[64];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(buf, sizeof buf, "{\"n\":%s}", bad[i]);
    assert_int_equal(scan(buf), -EINVAL);
  }
}

static void scan_accepts_literals(void **state)
{
  enum fb_json_type t;
  struct fb_str v;
  const char *s = "{\"t\":true,\"f\":false,\"z\":null}";
  assert_int_equal(fb_json_scan_object(s, strlen(s), "t", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_TRUE);
  assert_int_equal(fb_json_scan_object(s, strlen(s), "f", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_FALSE);
  assert_int_equal(fb_json_scan_object(s, strlen(s), "z", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_NULL);
  assert_true(fb_str_eq(v, "null"));
}

static void scan_rejects_bad_literals(void **state)
{
  assert_int_equal(scan("{\"a\":tru}"), -EINVAL);
  assert_int_equal(scan("{\"a\":nul}"), -EINVAL);
  assert_int_equal(scan("{\"a\":True}"), -EINVAL);
  assert_int_equal(scan("{\"a\":undefined}"), -EINVAL);
  assert_int_equal(scan("{\"a\":falsey}"), -EINVAL);
}

static void scan_accepts_escapes(void **state)
{
  assert_int_equal(scan("{\"a\":\"caf\\u00e9\"}"), 0);
  assert_int_equal(scan("{\"a\":\"\\u00E9\\uFFFF\"}"), 0);
  assert_int_equal(scan("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}"), 0);
  assert_int_equal(scan("{\"k\\n\":1}"), 0);
}

static void scan_rejects_bad_escapes(void **state)
{
  assert_int_equal(scan("{\"a\":\"\\x41\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\\u12\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\\u12G4\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\\'\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\\"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\\u00e"), -EINVAL);
}

static void scan_rejects_control_characters(void **state)
{
  assert_int_equal(scan("{\"a\":\"x\ny\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"x\ty\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\":\"\x01\"}"), -EINVAL);
  assert_int_equal(scan("{\"a\x1f\":1}"), -EINVAL);
}

static void scan_accepts_utf8_and_del(void **state)
{
  assert_int_equal(scan("{\"a\":\"caf\xc3\xa9 \x7f\"}"), 0);
}

static void scan_rejects_unterminated_string(void **state)
{
  assert_int_equal(scan("{\"a\":\"abc}"), -EINVAL);
}

static void scan_nesting_limit(void **state)
{
  char *ok = nested_objects(64), *deep = nested_objects(65);
  assert_int_equal(scan(ok), 0);
  assert_int_equal(scan(deep), -EINVAL);
  free(ok);
  free(deep);
}

static void scan_nesting_limit_counts_arrays(void **state)
{
  /* One object and 63 arrays: depth 64 is fine, 65 is not. */
  char buf[256];
  size_t n = 0;
  n += (size_t)snprintf(buf, sizeof buf, "{\"a\":");
  for (int i = 0; i < 63; i++)
    buf[n++] = '[';
  for (int i = 0; i < 63; i++)
    buf[n++] = ']';
  buf[n++] = '}';
  buf[n] = '\0';
  assert_int_equal(scan(buf), 0);

  n = (size_t)snprintf(buf, sizeof buf, "{\"a\":");
  for (int i = 0; i < 64; i++)
    buf[n++] = '[';
  for (int i = 0; i < 64; i++)
    buf[n++] = ']';
  buf[n++] = '}';
  buf[n] = '\0';
  assert_int_equal(scan(buf), -EINVAL);
}

static void scan_very_deep_input_fails_cleanly(void **state)
{
  /* Far past the limit: must fail without recursing that deep. */
  static char s[5 + 100000 + 1];
  memcpy(s, "{\"a\":", 5);
  memset(s + 5, '[', sizeof s - 6);
  s[sizeof s - 1] = '\0';
  assert_int_equal(scan(s), -EINVAL);
}

static void scan_finds_string_key(void **state)
{
  const char *s = "{\"x\":1,\"key\":\"value\",\"y\":[1,{\"key\":2}]}";
  enum fb_json_type t = FB_JSON_NONE;
  struct fb_str v = {0};
  bool esc = true;
  assert_int_equal(fb_json_scan_object(s, strlen(s), "key", &t, &v, &esc), 0);
  assert_int_equal(t, FB_JSON_STRING);
  assert_true(fb_str_eq(v, "value"));
  assert_false(esc);
}

static void scan_reports_escaped_string(void **state)
{
  const char *s = "{\"key\":\"a\\u00e9b\"}";
  enum fb_json_type t = FB_JSON_NONE;
  struct fb_str v = {0};
  bool esc = false;
  assert_int_equal(fb_json_scan_object(s, strlen(s), "key", &t, &v, &esc), 0);
  assert_int_equal(t, FB_JSON_STRING);
  assert_true(esc);
  assert_true(fb_str_eq(v, "a\\u00e9b"));
}

static void scan_finds_container_key_raw(void **state)
{
  const char *s = "{\"o\":{\"a\":[1,2]},\"arr\":[true, null]}";
  enum fb_json_type t = FB_JSON_NONE;
  struct fb_str v = {0};
  assert_int_equal(fb_json_scan_object(s, strlen(s), "o", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_OBJECT);
  assert_true(fb_str_eq(v, "{\"a\":[1,2]}"));
  assert_int_equal(fb_json_scan_object(s, strlen(s), "arr", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_ARRAY);
  assert_true(fb_str_eq(v, "[true, null]"));
}

static void scan_missing_key_is_none(void **state)
{
  const char *s = "{\"inner\":{\"key\":1}}";
  enum fb_json_type t = FB_JSON_STRING;
  struct fb_str v = {0};
  assert_int_equal(fb_json_scan_object(s, strlen(s), "key", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_NONE);
}

static void scan_key_must_match_whole_name(void **state)
{
  const char *s = "{\"keys\":1,\"ke\":2}";
  enum fb_json_type t = FB_JSON_STRING;
  struct fb_str v = {0};
  assert_int_equal(fb_json_scan_object(s, strlen(s), "key", &t, &v, NULL), 0);
  assert_int_equal(t, FB_JSON_NONE);
}

static void scan_invalid_after_key_is_still_invalid(void **state)
{
  /* Finding the key early must not stop validation of the rest. */
  const char *s = "{\"key\":\"v\",\"bad\":01}";
  enum fb_json_type t;
  struct fb_str v;
  assert_int_equal(fb_json_scan_object(s, strlen(s), "key", &t, &v, NULL), -EINVAL);
}

static void scan_respects_length_not_nul(void **state)
{
  const char *s = "{\"a\":1}trailing bytes that are not part of the view";
  assert_int_equal(fb_json_scan_object(s, 7, NULL, NULL, NULL, NULL), 0);
  assert_int_equal(fb_json_scan_object(s, 6, NULL, NULL, NULL, NULL), -EINVAL);
}

static void scan_stays_inside_its_view(void **state)
{
  const char *samples[] = {
      "{\"detection_type\":\"caf\\u00e9\",\"n\":-0.5e+3,\"a\":[true,false,null,{}]}",
      "{\"k\\\"\":\"\\\\\",\"x\":1E5}",
  };
  for (size_t k = 0; k < sizeof samples / sizeof samples[0]; k++) {
    size_t len = strlen(samples[k]);
    for (size_t n = 1; n <= len; n++) {
      struct fb_str v = guarded(samples[k], n);
      enum fb_json_type t;
      struct fb_str val;
      bool esc;
      int rc = fb_json_scan_object(v.p, v.n, "detection_type", &t, &val, &esc);
      assert_int_equal(rc, n == len ? 0 : -EINVAL);
    }
  }
}

/* ========================================================== timestamps */

static void time_iso_utc_z(void **state)
{
  assert_time("2024-03-15T12:34:56Z", utc_ms(2024, 3, 15, 12, 34, 56));
  assert_time("2024-03-15t12:34:56z", utc_ms(2024, 3, 15, 12, 34, 56));
  assert_time("1970-01-01T00:00:00Z", 0);
}

static void time_iso_space_separator(void **state)
{
  assert_time("2024-03-15 12:34:56Z", utc_ms(2024, 3, 15, 12, 34, 56));
}

static void time_iso_without_zone_is_utc(void **state)
{
  assert_time("2024-03-15T12:34:56", utc_ms(2024, 3, 15, 12, 34, 56));
}

static void time_iso_with_fraction(void **state)
{
  int64_t base = utc_ms(2024, 3, 15, 12, 34, 56);
  assert_time("2024-03-15T12:34:56.123Z", base + 123);
  assert_time("2024-03-15T12:34:56.5Z", base + 500);
  assert_time("2024-03-15T12:34:56.05Z", base + 50);
  assert_time("2024-03-15T12:34:56.123456Z", base + 123); /* Python isoformat() */
  assert_time("2024-03-15T12:34:56.999999999Z", base + 999);
  assert_time("2024-03-15T12:34:56,250Z", base + 250);
  assert_time("2024-03-15T12:34:56.123456", base + 123);
}

static void time_iso_with_offset(void **state)
{
  int64_t base = utc_ms(2024, 3, 15, 12, 34, 56);
  assert_time("2024-03-15T12:34:56+00:00", base);
  assert_time("2024-03-15T14:34:56+02:00", base);
  assert_time("2024-03-15T07:04:56-05:30", base);
  assert_time("2024-03-15T14:34:56+0200", base);
  assert_time("2024-03-15T14:34:56+02", base);
  assert_time("2024-03-15T14:34:56.250+02:00", base + 250);
}

static void time_iso_offset_crosses_midnight(void **state)
{
  assert_time("2024-01-01T01:00:00+02:00", utc_ms(2023, 12, 31, 23, 0, 0));
  assert_time("2023-12-31T22:00:00-03:00", utc_ms(2024, 1, 1, 1, 0, 0));
}

static void time_iso_calendar_edges(void **state)
{
  assert_time("2024-02-29T00:00:00Z", utc_ms(2024, 2, 29, 0, 0, 0));
  assert_time("2000-03-01T00:00:00Z", utc_ms(2000, 3, 1, 0, 0, 0));
  assert_time("2100-03-01T00:00:00Z", utc_ms(2100, 3, 1, 0, 0, 0));
  assert_time("1969-12-31T23:59:59Z", -1000);
  assert_time("2038-01-19T03:14:08Z", utc_ms(2038, 1, 19, 3, 14, 8));
}

static void time_unix_seconds(void **state)
{
  assert_time("1700000000", INT64_C(1700000000000));
  assert_time("0", 0);
}

static void time_unix_seconds_with_fraction(void **state)
{
  assert_time("1700000000.25", INT64_C(1700000000250));
  assert_time("1700000000.123456", INT64_C(1700000000123));
  assert_time("1700000000.5", INT64_C(1700000000500));
}

static void time_unix_seconds_of_four_digits(void **state)
{
  /* The view ends at a guard page: the parser must not look past it. */
  int64_t ms = 0;
  assert_int_equal(fb_frame_time_ms(guarded("1234", 4), &ms), 0);
  assert_int_equal(ms, 1234000);
}

/* A frame without a timestamp has an empty view with no pointer at all. */
static void time_of_empty_view_is_invalid(void **state)
{
  int64_t ms = 0;
  assert_int_equal(fb_frame_time_ms((struct fb_str){NULL, 0}, &ms), -EINVAL);
}

/* Every prefix of these, parsed from a view that ends at a guard page,
 * gives a time or -EINVAL and never reads past the view. */
static void time_parser_stays_inside_its_view(void **state)
{
  const char *samples[] = {"2024-03-15T12:34:56.123456+05:30", "2024-03-15 12:34:56Z",
                           "1700000000.123456", "2024-03-15T12:34:56,5-0800", "1234"};
  for (size_t k = 0; k < sizeof samples / sizeof samples[0]; k++) {
    size_t len = strlen(samples[k]);
    for (size_t n = 1; n <= len; n++) {
      int64_t ms;
      int rc = fb_frame_time_ms(guarded(samples[k], n), &ms);
      assert_true(rc == 0 || rc == -EINVAL);
    }
  }
}

static void time_view_is_not_nul_terminated(void **state)
{
  const char *s = "2024-03-15T12:34:56Zgarbage";
  int64_t ms = 0;
  assert_int_equal(fb_frame_time_ms((struct fb_str){s, 20}, &ms), 0);
  assert_int_equal(ms, utc_ms(2024, 3, 15, 12, 34, 56));
}

static void time_garbage_is_rejected(void **state)
{
  assert_time_rejected("");
  assert_time_rejected("abc");
  assert_time_rejected("yesterday");
  assert_time_rejected("1700000000x");
  assert_time_rejected("-1");
  assert_time_rejected("12:00:00");
  assert_time_rejected("2024-03-15");
  assert_time_rejected("2024-03-15T12:34");
  assert_time_rejected("2024-03-15X12:34:56Z");
  assert_time_rejected("2024-3-15T12:34:56Z");
  assert_time_rejected("2024-03-15T12:34:56Zjunk");
  assert_time_rejected("2024-03-15T12:34:56 Z");
  assert_time_rejected("2024-03-15T12:34:56.Z");
  assert_time_rejected("2024-03-15T12:34:56+");
  assert_time_rejected("2024-03-15T12:34:56+1");
  assert_time_rejected("2024-03-15T12:34:56+02:0");
  assert_time_rejected("abcd-03-15T12:34:56Z");
}

static void time_out_of_range_fields_are_rejected(void **state)
{
  assert_time_rejected("2024-13-01T00:00:00Z");
  assert_time_rejected("2024-00-01T00:00:00Z");
  assert_time_rejected("2024-01-00T00:00:00Z");
  assert_time_rejected("2024-01-32T00:00:00Z");
  assert_time_rejected("2024-01-01T24:00:00Z");
  assert_time_rejected("2024-01-01T00:60:00Z");
  assert_time_rejected("2024-01-01T00:00:61Z");
}

static void time_lone_dot_is_rejected(void **state)
{
  assert_time_rejected(".");
}

/* ========================================================= serializing */

enum { MAX_ARGS = 64 };

/* Decodes one RESP array of bulk strings that must fill the buffer
 * exactly. Returns the number of arguments; each views `b`. */
static size_t resp_decode(const struct fb_buf *b, struct fb_str *args)
{
  const char *p = b->data, *end = b->data + b->len;
  char *num_end;
  assert_true(p < end && *p == '*');
  unsigned long n = strtoul(p + 1, &num_end, 10);
  assert_true(num_end + 2 <= end && num_end[0] == '\r' && num_end[1] == '\n');
  assert_true(n <= MAX_ARGS);
  p = num_end + 2;
  for (unsigned long i = 0; i < n; i++) {
    if (p >= end || *p != '$') fail_msg("argument %lu of %lu is missing", i, n);
    unsigned long len = strtoul(p + 1, &num_end, 10);
    assert_true(num_end[0] == '\r' && num_end[1] == '\n');
    p = num_end + 2;
    assert_true((size_t)(end - p) >= len + 2);
    args[i] = (struct fb_str){p, len};
    p += len;
    assert_true(p[0] == '\r' && p[1] == '\n');
    p += 2;
  }
  if (p != end) fail_msg("%zu bytes after the %lu announced arguments", (size_t)(end - p), n);
  return n;
}

/* The value of field `name` among the field/value pairs from args[from]. */
static const struct fb_str *resp_field(const struct fb_str *args, size_t n, size_t from,
                                       const char *name)
{
  for (size_t i = from; i + 1 < n; i += 2)
    if (fb_str_eq(args[i], name)) return &args[i + 1];
  return NULL;
}

static void assert_field(const struct fb_str *args, size_t n, const char *name, const char *value)
{
  const struct fb_str *v = resp_field(args, n, 6, name);
  if (!v) fail_msg("field %s is missing", name);
  if (!fb_str_eq(*v, value))
    fail_msg("field %s is '%.*s', want '%s'", name, (int)v->n, v->p, value);
}

static void xadd_adds_compat_defaults(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1"), field("camera_id", "cam")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_OK);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_xadd(&b, &f, "frames:ready:p1", 10000);
  assert_false(b.truncated);
  struct fb_str args[MAX_ARGS];
  size_t n = resp_decode(&b, args);
  assert_int_equal(n, 6 + 4 + 6);
  assert_true(fb_str_eq(args[0], "XADD"));
  assert_true(fb_str_eq(args[1], "frames:ready:p1"));
  assert_true(fb_str_eq(args[2], "MAXLEN"));
  assert_true(fb_str_eq(args[3], "~"));
  assert_true(fb_str_eq(args[4], "10000"));
  assert_true(fb_str_eq(args[5], "*"));
  assert_true(fb_str_eq(args[6], "frame_id"));
  assert_true(fb_str_eq(args[7], "f1"));
  assert_field(args, n, "camera_id", "cam");
  assert_field(args, n, "priority", "0");
  assert_field(args, n, "storage_path", "");
  assert_field(args, n, "storage_backend", "redis");
  fb_buf_free(&b);
}

static void xadd_keeps_fields_that_are_present(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1"), field("priority", "9"),
                              field("storage_path", "/d/f1.jpg"), field("storage_backend", "s3")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 4), FB_FRAME_OK);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_xadd(&b, &f, "q", 5);
  struct fb_str args[MAX_ARGS];
  size_t n = resp_decode(&b, args);
  assert_int_equal(n, 6 + 8);
  assert_true(fb_str_eq(args[4], "5"));
  assert_field(args, n, "priority", "9");
  assert_field(args, n, "storage_path", "/d/f1.jpg");
  assert_field(args, n, "storage_backend", "s3");
  fb_buf_free(&b);
}

static void xadd_is_binary_safe(void **state)
{
  struct fb_field fields[] = {{{"frame_id", 8}, {"f\r\n1", 4}}, {{"blob", 4}, {"a\0b", 3}}};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_OK);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_xadd(&b, &f, "q", 1);
  struct fb_str args[MAX_ARGS];
  size_t n = resp_decode(&b, args);
  assert_int_equal(n, 6 + 4 + 6);
  assert_int_equal(args[7].n, 4);
  assert_memory_equal(args[7].p, "f\r\n1", 4);
  assert_int_equal(args[9].n, 3);
  assert_memory_equal(args[9].p, "a\0b", 3);
  fb_buf_free(&b);
}

static void dlq_entry_keeps_fields_and_adds_reason(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1"), field("metadata", "[1]")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_BAD_METADATA);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_dlq(&b, &f, FB_DLQ_STREAM, 100000, "malformed", str("1700000000000-0"),
                      "2024-03-15T12:34:56.000Z", fb_frame_error_str(f.error));
  struct fb_str args[MAX_ARGS];
  size_t n = resp_decode(&b, args);
  assert_int_equal(n, 6 + 4 + 8);
  assert_true(fb_str_eq(args[1], "frames:dlq"));
  assert_true(fb_str_eq(args[4], "100000"));
  assert_field(args, n, "frame_id", "f1");
  assert_field(args, n, "metadata", "[1]");
  assert_field(args, n, "dlq_reason", "malformed");
  assert_field(args, n, "dlq_source_id", "1700000000000-0");
  assert_field(args, n, "dlq_at", "2024-03-15T12:34:56.000Z");
  assert_field(args, n, "dlq_detail", "metadata is not a JSON object");
  fb_buf_free(&b);
}

static void json_payload_is_object_of_strings_with_defaults(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1"), field("note", "a \"quoted\"\n\\ line"),
                              field("metadata", "{\"detection_type\":\"person\"}")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 3), FB_FRAME_OK);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_json(&b, &f);
  assert_false(b.truncated);
  json_error_t err;
  json_t *o = json_loadb(b.data, b.len, 0, &err);
  if (!o) fail_msg("payload is not JSON: %s: %s", err.text, fb_buf_cstr(&b));
  assert_true(json_is_object(o));
  assert_int_equal(json_object_size(o), 6);
  assert_string_equal(json_string_value(json_object_get(o, "frame_id")), "f1");
  assert_string_equal(json_string_value(json_object_get(o, "note")), "a \"quoted\"\n\\ line");
  assert_string_equal(json_string_value(json_object_get(o, "metadata")),
                      "{\"detection_type\":\"person\"}");
  assert_string_equal(json_string_value(json_object_get(o, "priority")), "0");
  assert_string_equal(json_string_value(json_object_get(o, "storage_path")), "");
  assert_string_equal(json_string_value(json_object_get(o, "storage_backend")), "redis");
  json_decref(o);
  fb_buf_free(&b);
}

static void json_payload_keeps_present_priority(void **state)
{
  struct fb_field fields[] = {field("frame_id", "f1"), field("priority", "3")};
  struct fb_frame f;
  assert_int_equal(fb_frame_parse(&f, fields, 2), FB_FRAME_OK);
  struct fb_buf b;
  fb_buf_init(&b, 1 << 16);
  fb_frame_append_json(&b, &f);
  json_t *o = json_loadb(b.data, b.len, 0, NULL);
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "priority")), "3");
  assert_int_equal(json_object_size(o), 4);
  json_decref(o);
  fb_buf_free(&b);
}

/* ================================================================ main */

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(minimal_frame_is_ok),
      cmocka_unit_test(full_frame_fields_are_found),
      cmocka_unit_test(unknown_fields_are_ignored),
      cmocka_unit_test(no_fields_is_malformed),
      cmocka_unit_test(missing_frame_id_is_malformed),
      cmocka_unit_test(empty_frame_id_is_malformed),
      cmocka_unit_test(metadata_array_is_malformed),
      cmocka_unit_test(metadata_string_is_malformed),
      cmocka_unit_test(metadata_scalar_is_malformed),
      cmocka_unit_test(metadata_empty_is_malformed),
      cmocka_unit_test(metadata_truncated_is_malformed),
      cmocka_unit_test(metadata_trailing_garbage_is_malformed),
      cmocka_unit_test(metadata_with_surrounding_whitespace_is_ok),
      cmocka_unit_test(malformed_frame_still_reports_frame_id),
      cmocka_unit_test(trace_context_not_object_is_malformed),
      cmocka_unit_test(trace_context_object_is_ok),
      cmocka_unit_test(traceparent_field_is_accepted),
      cmocka_unit_test(detection_type_number_is_malformed),
      cmocka_unit_test(detection_type_other_non_strings_are_malformed),
      cmocka_unit_test(detection_type_null_is_allowed),
      cmocka_unit_test(entry_over_64k_is_too_large),
      cmocka_unit_test(entry_of_exactly_64k_is_ok),
      cmocka_unit_test(entry_too_large_from_many_fields),
      cmocka_unit_test(nesting_deeper_than_64_is_malformed),
      cmocka_unit_test(nesting_of_64_is_ok),
      cmocka_unit_test(error_strings_are_distinct),
      cmocka_unit_test(detection_type_from_metadata),
      cmocka_unit_test(detection_type_top_level_wins),
      cmocka_unit_test(detection_type_top_level_wins_in_any_order),
      cmocka_unit_test(detection_type_escaped_in_metadata),
      cmocka_unit_test(detection_type_nested_key_is_not_top_level),
      cmocka_unit_test(detection_type_key_inside_string_is_not_a_key),
      cmocka_unit_test(priority_positive),
      cmocka_unit_test(priority_negative),
      cmocka_unit_test(priority_int64_max),
      cmocka_unit_test(priority_not_an_integer_is_zero),
      cmocka_unit_test(priority_out_of_range_is_zero),
      cmocka_unit_test(scan_accepts_empty_object),
      cmocka_unit_test(scan_rejects_non_objects),
      cmocka_unit_test(scan_rejects_bad_syntax),
      cmocka_unit_test(scan_accepts_numbers),
      cmocka_unit_test(scan_rejects_bad_numbers),
      cmocka_unit_test(scan_accepts_literals),
      cmocka_unit_test(scan_rejects_bad_literals),
      cmocka_unit_test(scan_accepts_escapes),
      cmocka_unit_test(scan_rejects_bad_escapes),
      cmocka_unit_test(scan_rejects_control_characters),
      cmocka_unit_test(scan_accepts_utf8_and_del),
      cmocka_unit_test(scan_rejects_unterminated_string),
      cmocka_unit_test(scan_nesting_limit),
      cmocka_unit_test(scan_nesting_limit_counts_arrays),
      cmocka_unit_test(scan_very_deep_input_fails_cleanly),
      cmocka_unit_test(scan_finds_string_key),
      cmocka_unit_test(scan_reports_escaped_string),
      cmocka_unit_test(scan_finds_container_key_raw),
      cmocka_unit_test(scan_missing_key_is_none),
      cmocka_unit_test(scan_key_must_match_whole_name),
      cmocka_unit_test(scan_invalid_after_key_is_still_invalid),
      cmocka_unit_test(scan_respects_length_not_nul),
      cmocka_unit_test(scan_stays_inside_its_view),
      cmocka_unit_test(time_iso_utc_z),
      cmocka_unit_test(time_iso_space_separator),
      cmocka_unit_test(time_iso_without_zone_is_utc),
      cmocka_unit_test(time_iso_with_fraction),
      cmocka_unit_test(time_iso_with_offset),
      cmocka_unit_test(time_iso_offset_crosses_midnight),
      cmocka_unit_test(time_iso_calendar_edges),
      cmocka_unit_test(time_unix_seconds),
      cmocka_unit_test(time_unix_seconds_with_fraction),
      cmocka_unit_test(time_unix_seconds_of_four_digits),
      cmocka_unit_test(time_of_empty_view_is_invalid),
      cmocka_unit_test(time_parser_stays_inside_its_view),
      cmocka_unit_test(time_view_is_not_nul_terminated),
      cmocka_unit_test(time_garbage_is_rejected),
      cmocka_unit_test(time_out_of_range_fields_are_rejected),
      cmocka_unit_test(time_lone_dot_is_rejected),
      cmocka_unit_test(xadd_adds_compat_defaults),
      cmocka_unit_test(xadd_keeps_fields_that_are_present),
      cmocka_unit_test(xadd_is_binary_safe),
      cmocka_unit_test(dlq_entry_keeps_fields_and_adds_reason),
      cmocka_unit_test(json_payload_is_object_of_strings_with_defaults),
      cmocka_unit_test(json_payload_keeps_present_priority),
  };
  return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
