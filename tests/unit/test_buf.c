/*
 * Unit tests for gateway/buf.c: bounded buffers (the maximum, the sticky
 * truncated flag, fixed buffers), JSON string escaping and RESP encoding.
 * Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "framebuffer/buf.h"

/* ============================================================== helpers */

/* Asserts that the buffer holds exactly `n` bytes `expected`. */
static void assert_bytes(struct fb_buf *b, const char *expected, size_t n)
{
  assert_int_equal(b->len, n);
  assert_memory_equal(b->data, expected, n);
}

#define assert_contents(b, lit) assert_bytes((b), (lit), sizeof(lit) - 1)

static void json_of(struct fb_buf *b, const char *s, size_t n)
{
  fb_buf_reset(b);
  assert_int_equal(fb_buf_json_string(b, s, n), 0);
}

/* ======================================================== bounded growth */

static void empty_buffer_is_empty_string(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(b.len, 0);
  assert_false(b.truncated);
  assert_string_equal(fb_buf_cstr(&b), "");
  fb_buf_free(&b);
}

static void append_and_cstr(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_append(&b, "abc", 3), 0);
  assert_int_equal(fb_buf_puts(&b, "def"), 0);
  assert_int_equal(fb_buf_append(&b, "", 0), 0);
  assert_contents(&b, "abcdef");
  assert_string_equal(fb_buf_cstr(&b), "abcdef");
  assert_int_equal(b.len, 6); /* the NUL is not counted */
  fb_buf_free(&b);
}

static void grows_past_initial_allocation(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100000);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(fb_buf_puts(&b, "0123456789"), 0);
  assert_int_equal(b.len, 10000);
  assert_true(b.cap > b.len);
  assert_memory_equal(b.data + 9990, "0123456789", 10);
  fb_buf_free(&b);
}

static void maximum_is_enforced(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 10);
  assert_int_equal(fb_buf_append(&b, "0123456789", 10), 0);
  assert_false(b.truncated);
  assert_int_equal(fb_buf_append(&b, "x", 1), -ENOSPC);
  assert_true(b.truncated);
  assert_int_equal(b.len, 10);
  assert_string_equal(fb_buf_cstr(&b), "0123456789");
  fb_buf_free(&b);
}

static void oversized_append_writes_nothing(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 8);
  assert_int_equal(fb_buf_puts(&b, "hello"), 0);
  assert_int_equal(fb_buf_puts(&b, "world!"), -ENOSPC);
  assert_contents(&b, "hello");
  fb_buf_free(&b);
}

static void zero_maximum_refuses_everything(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 0);
  assert_int_equal(fb_buf_append(&b, "x", 1), -ENOSPC);
  assert_true(b.truncated);
  assert_int_equal(b.len, 0);
  fb_buf_free(&b);
}

static void truncated_is_sticky_until_reset(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 4);
  assert_int_equal(fb_buf_puts(&b, "abcdef"), -ENOSPC);
  assert_true(b.truncated);
  assert_int_equal(fb_buf_puts(&b, "ab"), 0); /* fits, but the message is already broken */
  assert_true(b.truncated);
  fb_buf_reset(&b);
  assert_false(b.truncated);
  assert_int_equal(b.len, 0);
  assert_int_equal(fb_buf_puts(&b, "abcd"), 0);
  assert_false(b.truncated);
  fb_buf_free(&b);
}

static void reset_keeps_memory(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 1000);
  assert_int_equal(fb_buf_puts(&b, "some text"), 0);
  char *mem = b.data;
  size_t cap = b.cap;
  fb_buf_reset(&b);
  assert_ptr_equal(b.data, mem);
  assert_int_equal(b.cap, cap);
  assert_string_equal(fb_buf_cstr(&b), "");
  fb_buf_free(&b);
}

static void free_twice_is_safe(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_puts(&b, "x"), 0);
  fb_buf_free(&b);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  fb_buf_free(&b);
}

/* ========================================================= fixed buffers */

static void fixed_buffer_keeps_what_fits(void **state)
{
  char mem[8];
  struct fb_buf b;
  fb_buf_init_fixed(&b, mem, sizeof mem);
  assert_int_equal(fb_buf_puts(&b, "abcdefghij"), -ENOSPC);
  assert_true(b.truncated);
  assert_contents(&b, "abcdefg"); /* cap - 1: room for the NUL */
  assert_string_equal(fb_buf_cstr(&b), "abcdefg");
  assert_ptr_equal(b.data, mem);
  fb_buf_free(&b); /* caller memory: not freed */
}

static void fixed_buffer_never_writes_past_cap(void **state)
{
  char mem[24];
  memset(mem, '#', sizeof mem);
  struct fb_buf b;
  fb_buf_init_fixed(&b, mem, 16);
  assert_int_equal(fb_buf_puts(&b, "0123456789"), 0);
  assert_int_equal(fb_buf_puts(&b, "0123456789"), -ENOSPC);
  assert_int_equal(fb_buf_printf(&b, "%s", "more"), -ENOSPC);
  (void)fb_buf_cstr(&b);
  assert_int_equal(b.len, 15);
  assert_int_equal(mem[15], '\0');
  for (size_t i = 16; i < sizeof mem; i++)
    assert_int_equal(mem[i], '#');
}

static void fixed_buffer_within_cap(void **state)
{
  char mem[32];
  struct fb_buf b;
  fb_buf_init_fixed(&b, mem, sizeof mem);
  assert_int_equal(fb_buf_printf(&b, "%d-%s", 42, "ok"), 0);
  assert_string_equal(fb_buf_cstr(&b), "42-ok");
  assert_false(b.truncated);
}

/* ============================================================ printf/u64 */

static void printf_small(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_printf(&b, "%s=%d;", "a", 1), 0);
  assert_int_equal(fb_buf_printf(&b, "%s=%d", "b", -2), 0);
  assert_string_equal(fb_buf_cstr(&b), "a=1;b=-2");
  fb_buf_free(&b);
}

static void printf_larger_than_stack_buffer(void **state)
{
  char big[2000];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  struct fb_buf b;
  fb_buf_init(&b, 4096);
  assert_int_equal(fb_buf_printf(&b, "<%s>", big), 0);
  assert_int_equal(b.len, sizeof big + 1);
  assert_int_equal(b.data[0], '<');
  assert_int_equal(b.data[b.len - 1], '>');
  fb_buf_free(&b);
}

static void printf_over_maximum(void **state)
{
  char big[2000];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  struct fb_buf b;
  fb_buf_init(&b, 1000);
  assert_int_equal(fb_buf_printf(&b, "%s", big), -ENOSPC);
  assert_true(b.truncated);
  assert_int_equal(b.len, 0);
  fb_buf_free(&b);
  fb_buf_init(&b, 10);
  assert_int_equal(fb_buf_printf(&b, "%s", "0123456789a"), -ENOSPC);
  assert_true(b.truncated);
  fb_buf_free(&b);
}

static void u64_values(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_u64(&b, 0), 0);
  assert_int_equal(fb_buf_puts(&b, " "), 0);
  assert_int_equal(fb_buf_u64(&b, 42), 0);
  assert_int_equal(fb_buf_puts(&b, " "), 0);
  assert_int_equal(fb_buf_u64(&b, UINT64_MAX), 0);
  assert_string_equal(fb_buf_cstr(&b), "0 42 18446744073709551615");
  fb_buf_free(&b);
}

/* ========================================================= JSON strings */

static void json_plain_string_is_quoted(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  json_of(&b, "abc", 3);
  assert_contents(&b, "\"abc\"");
  json_of(&b, "", 0);
  assert_contents(&b, "\"\"");
  fb_buf_free(&b);
}

static void json_escapes_quote_and_backslash(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  json_of(&b, "a\"b\\c", 5);
  assert_contents(&b, "\"a\\\"b\\\\c\"");
  fb_buf_free(&b);
}

static void json_escapes_whitespace_controls(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  json_of(&b, "1\n2\r3\t4", 7);
  assert_contents(&b, "\"1\\n2\\r3\\t4\"");
  fb_buf_free(&b);
}

static void json_escapes_other_controls_as_unicode(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  json_of(&b, "\x01\x1f\b\f", 4);
  assert_contents(&b, "\"\\u0001\\u001f\\u0008\\u000c\"");
  json_of(&b, "a\0b", 3);
  assert_contents(&b, "\"a\\u0000b\"");
  fb_buf_free(&b);
}

static void json_keeps_utf8_and_slash(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  json_of(&b, "caf\xc3\xa9/\x7f", 7);
  assert_contents(&b, "\"caf\xc3\xa9/\x7f\"");
  fb_buf_free(&b);
}

static void json_escape_round_trips_every_ascii_byte(void **state)
{
  char all[128];
  for (int i = 0; i < 128; i++)
    all[i] = (char)i;
  struct fb_buf b;
  fb_buf_init(&b, 4096);
  json_of(&b, all, sizeof all);
  json_error_t err;
  json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (!v) fail_msg("escaped text is not JSON: %s", err.text);
  assert_true(json_is_string(v));
  assert_int_equal(json_string_length(v), sizeof all);
  assert_memory_equal(json_string_value(v), all, sizeof all);
  json_decref(v);
  fb_buf_free(&b);
}

/* Invalid UTF-8 (a lone lead byte, a stray continuation, an overlong form,
 * a surrogate) becomes U+FFFD; well-formed sequences pass as they are. */
static void json_string_replaces_what_is_not_utf8(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 256);
  const char in[] =
      "cam\xc3|\x80|\xc0\xaf|\xed\xa0\x80|\xc3\xa9\xe2\x82\xac\xf0\x9f\x93\xb7|\xf4\x90\x80\x80";
  assert_int_equal(fb_buf_json_string(&b, in, sizeof in - 1), 0);
  const char want[] = "\"cam\\ufffd|\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
                      "\xc3\xa9\xe2\x82\xac\xf0\x9f\x93\xb7|\\ufffd\\ufffd\\ufffd\\ufffd\"";
  assert_int_equal(b.len, sizeof want - 1);
  assert_memory_equal(b.data, want, sizeof want - 1);
  json_error_t err;
  json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY, &err);
  assert_non_null(v);
  json_decref(v);
  fb_buf_free(&b);
}

/* A buffer with room for the worst case (six bytes out for each byte in)
 * escapes in one pass, eight plain bytes at a time; one with room only for
 * the real output escapes in chunks. Both must write the same bytes, for text
 * that mixes plain runs, quotes, controls and UTF-8 (valid or not) across
 * word and chunk boundaries. */
static void json_string_same_in_one_pass_and_in_chunks(void **state)
{
  static const char *pieces[] = {"plain text", "\"", "\\", "\n", "\x01", "\xc3\xa9",
                                 "\xe2\x82\xac", "\xf0\x9f\x93\xb7", "\xc3", "\x80", "{\"a\":1}"};
  srand(7);
  for (int round = 0; round < 300; round++) {
    char in[1200];
    size_t n = 0;
    size_t want = (size_t)(rand() % 1000);
    while (n < want) {
      const char *p = pieces[rand() % (int)(sizeof pieces / sizeof *pieces)];
      size_t k = strlen(p);
      memcpy(in + n, p, k);
      n += k;
    }
    struct fb_buf one;
    fb_buf_init(&one, 16 * 1024);
    assert_int_equal(fb_buf_json_string(&one, in, n), 0);
    char mem[8 * 1024];
    struct fb_buf chunks;
    fb_buf_init_fixed(&chunks, mem, one.len + 1); /* too small for 6n + 2 */
    assert_int_equal(fb_buf_json_string(&chunks, in, n), 0);
    assert_false(chunks.truncated);
    assert_int_equal(chunks.len, one.len);
    assert_memory_equal(chunks.data, one.data, one.len);
    json_error_t err;
    json_t *v = json_loadb(one.data, one.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v) fail_msg("escaped text is not JSON: %s", err.text);
    json_decref(v);
    fb_buf_free(&one);
  }
}

static void json_string_over_maximum(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 6);
  assert_int_equal(fb_buf_json_string(&b, "abcdef", 6), -ENOSPC);
  assert_true(b.truncated);
  fb_buf_reset(&b);
  assert_int_equal(fb_buf_json_string(&b, "\n\n\n", 3), -ENOSPC); /* 8 bytes escaped */
  assert_true(b.truncated);
  fb_buf_free(&b);
}

/* ================================================================= RESP */

static void resp_bulk_string(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_resp_bulk(&b, "SET", 3), 0);
  assert_contents(&b, "$3\r\nSET\r\n");
  fb_buf_reset(&b);
  assert_int_equal(fb_buf_resp_bulk(&b, "", 0), 0);
  assert_contents(&b, "$0\r\n\r\n");
  fb_buf_free(&b);
}

static void resp_bulk_is_binary_safe(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_resp_bulk(&b, "a\r\n\0b", 5), 0);
  assert_contents(&b, "$5\r\na\r\n\0b\r\n");
  fb_buf_free(&b);
}

static void resp_array_command(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_resp_array(&b, 3), 0);
  assert_int_equal(fb_buf_resp_bulk(&b, "XACK", 4), 0);
  assert_int_equal(fb_buf_resp_bulk(&b, "frames:metadata", 15), 0);
  assert_int_equal(fb_buf_resp_bulk(&b, "1-0", 3), 0);
  assert_contents(&b, "*3\r\n$4\r\nXACK\r\n$15\r\nframes:metadata\r\n$3\r\n1-0\r\n");
  fb_buf_free(&b);
}

static void resp_large_lengths(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 100);
  assert_int_equal(fb_buf_resp_array(&b, 1234567), 0);
  assert_contents(&b, "*1234567\r\n");
  fb_buf_free(&b);
}

static void resp_over_maximum(void **state)
{
  struct fb_buf b;
  fb_buf_init(&b, 8);
  assert_int_equal(fb_buf_resp_bulk(&b, "abcdef", 6), -ENOSPC);
  assert_true(b.truncated);
  fb_buf_free(&b);
}

/* ================================================================ main */

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(empty_buffer_is_empty_string),
      cmocka_unit_test(append_and_cstr),
      cmocka_unit_test(grows_past_initial_allocation),
      cmocka_unit_test(maximum_is_enforced),
      cmocka_unit_test(oversized_append_writes_nothing),
      cmocka_unit_test(zero_maximum_refuses_everything),
      cmocka_unit_test(truncated_is_sticky_until_reset),
      cmocka_unit_test(reset_keeps_memory),
      cmocka_unit_test(free_twice_is_safe),
      cmocka_unit_test(fixed_buffer_keeps_what_fits),
      cmocka_unit_test(fixed_buffer_never_writes_past_cap),
      cmocka_unit_test(fixed_buffer_within_cap),
      cmocka_unit_test(printf_small),
      cmocka_unit_test(printf_larger_than_stack_buffer),
      cmocka_unit_test(printf_over_maximum),
      cmocka_unit_test(u64_values),
      cmocka_unit_test(json_plain_string_is_quoted),
      cmocka_unit_test(json_escapes_quote_and_backslash),
      cmocka_unit_test(json_escapes_whitespace_controls),
      cmocka_unit_test(json_escapes_other_controls_as_unicode),
      cmocka_unit_test(json_keeps_utf8_and_slash),
      cmocka_unit_test(json_escape_round_trips_every_ascii_byte),
      cmocka_unit_test(json_string_replaces_what_is_not_utf8),
      cmocka_unit_test(json_string_same_in_one_pass_and_in_chunks),
      cmocka_unit_test(json_string_over_maximum),
      cmocka_unit_test(resp_bulk_string),
      cmocka_unit_test(resp_bulk_is_binary_safe),
      cmocka_unit_test(resp_array_command),
      cmocka_unit_test(resp_large_lengths),
      cmocka_unit_test(resp_over_maximum),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
