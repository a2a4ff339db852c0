/*
 * Unit tests for gateway/trace.c: the frame trace keeps the last frames'
 * fates, finds the newest record of an id, forgets the oldest past its
 * window, and stays within its memory budget. Single-threaded except where
 * a test says otherwise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "framebuffer/trace.h"

static struct fb_str str(const char *s)
{
  return (struct fb_str){s, strlen(s)};
}

static void add(struct fb_trace *t, const char *id, enum fb_trace_outcome o, const char *proc,
                int64_t at)
{
  char src[48];
  snprintf(src, sizeof src, "%lld-7", (long long)(at - 5));
  struct fb_trace_in in = {.frame_id = str(id),
                           .camera_id = str("cam-1"),
                           .source_id = src,
                           .outcome = o,
                           .reason = o == FB_TRACE_DLQ ? 1 : -1,
                           .strategy = 2,
                           .transport = proc ? 0 : -1,
                           .processor_id = proc,
                           .target = proc ? "frames:ready:p" : NULL,
                           .routed_at_ms = at};
  fb_trace_begin(t);
  fb_trace_add(t, &in);
  fb_trace_end(t);
}

static void finds_what_it_recorded(void **state)
{
  struct fb_trace *t;
  assert_int_equal(fb_trace_create(&t, 16), 0);
  add(t, "f-1", FB_TRACE_DELIVERED, "proc-a", 1000);
  add(t, "f-2", FB_TRACE_DLQ, NULL, 1001);
  struct fb_trace_record r;
  assert_true(fb_trace_find(t, "f-1", 3, &r));
  assert_string_equal(r.frame_id, "f-1");
  assert_string_equal(r.camera_id, "cam-1");
  assert_string_equal(r.processor_id, "proc-a");
  assert_string_equal(r.target, "frames:ready:p");
  assert_string_equal(r.source_id, "995-7");
  assert_int_equal(r.outcome, FB_TRACE_DELIVERED);
  assert_int_equal(r.latency_ms, 5);
  assert_int_equal(r.routed_at_ms, 1000);
  assert_true(fb_trace_find(t, "f-2", 3, &r));
  assert_int_equal(r.outcome, FB_TRACE_DLQ);
  assert_int_equal(r.reason, 1);
  assert_string_equal(r.processor_id, "");
  assert_false(fb_trace_find(t, "f-3", 3, &r));
  assert_false(fb_trace_find(t, "f-", 2, &r));
  fb_trace_destroy(t);
}

/* A frame held, then delivered: the lookup gives its latest fate. */
static void newest_record_wins(void **state)
{
  struct fb_trace *t;
  assert_int_equal(fb_trace_create(&t, 16), 0);
  add(t, "f-1", FB_TRACE_HELD, "proc-a", 1000);
  add(t, "f-9", FB_TRACE_DELIVERED, "proc-b", 1001);
  add(t, "f-1", FB_TRACE_DELIVERED, "proc-b", 1002);
  struct fb_trace_record r;
  assert_true(fb_trace_find(t, "f-1", 3, &r));
  assert_int_equal(r.outcome, FB_TRACE_DELIVERED);
  assert_string_equal(r.processor_id, "proc-b");
  assert_int_equal(r.routed_at_ms, 1002);
  fb_trace_destroy(t);
}

/* The default window holds at least the last 100,000 frames in at most
 * 16 MB; the frame before the window is forgotten. */
static void window_of_the_last_frames_within_budget(void **state)
{
  struct fb_trace *t;
  assert_int_equal(fb_trace_create(&t, FB_TRACE_DEFAULT_FRAMES), 0);
  assert_true(FB_TRACE_DEFAULT_FRAMES >= 100000);
  assert_true(fb_trace_bytes(t) <= 16u * 1000 * 1000);
  size_t total = FB_TRACE_DEFAULT_FRAMES + 1000;
  char id[32];
  for (size_t i = 0; i < total; i++) {
    snprintf(id, sizeof id, "frame-%zu", i);
    add(t, id, FB_TRACE_DELIVERED, i % 2 ? "proc-a" : "proc-b", (int64_t)i + 10);
  }
  struct fb_trace_record r;
  for (size_t i = total - 100000; i < total; i += 997) {
    snprintf(id, sizeof id, "frame-%zu", i);
    assert_true(fb_trace_find(t, id, strlen(id), &r));
    assert_string_equal(r.processor_id, i % 2 ? "proc-a" : "proc-b");
  }
  assert_false(fb_trace_find(t, "frame-999", 9, &r));
  size_t frames;
  int64_t oldest;
  fb_trace_window(t, &frames, &oldest);
  assert_int_equal(frames, FB_TRACE_DEFAULT_FRAMES);
  assert_int_equal(oldest, 1000 + 10);
  fb_trace_destroy(t);
}

/* Ids longer than what a record keeps are found by their whole text, and
 * another id with the same first bytes is not taken for them. */
static void long_ids_are_found_and_told_apart(void **state)
{
  struct fb_trace *t;
  assert_int_equal(fb_trace_create(&t, 16), 0);
  char a[200], b[200];
  memset(a, 'x', sizeof a - 1);
  a[sizeof a - 1] = '\0';
  memcpy(b, a, sizeof b);
  b[150] = 'y';
  add(t, a, FB_TRACE_DELIVERED, "proc-a", 1);
  struct fb_trace_record r;
  assert_true(fb_trace_find(t, a, strlen(a), &r));
  assert_true(r.frame_id_cut);
  assert_int_equal(strlen(r.frame_id), FB_TRACE_ID_MAX);
  assert_false(fb_trace_find(t, b, strlen(b), &r));
  assert_false(fb_trace_find(t, a, FB_TRACE_ID_MAX, &r)); /* its first bytes alone */
  fb_trace_destroy(t);
}

/* Processor names are interned: past the table's size new ones are
 * recorded as unknown, and the known ones stay right. */
static void names_past_the_table_are_unknown(void **state)
{
  struct fb_trace *t;
  assert_int_equal(fb_trace_create(&t, 8), 0);
  char name[32], id[32];
  for (int i = 0; i < FB_TRACE_NAMES_MAX; i++) { /* with the one target: one too many */
    snprintf(name, sizeof name, "proc-%d", i);
    snprintf(id, sizeof id, "f-%d", i);
    add(t, id, FB_TRACE_DELIVERED, name, i);
  }
  add(t, "late", FB_TRACE_DELIVERED, "proc-new", 1);
  add(t, "known", FB_TRACE_DELIVERED, "proc-3", 1);
  struct fb_trace_record r;
  assert_true(fb_trace_find(t, "late", 4, &r));
  assert_non_null(strstr(r.processor_id, "unknown"));
  assert_true(fb_trace_find(t, "known", 5, &r));
  assert_string_equal(r.processor_id, "proc-3");
  fb_trace_destroy(t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(finds_what_it_recorded),
      cmocka_unit_test(newest_record_wins),
      cmocka_unit_test(window_of_the_last_frames_within_budget),
      cmocka_unit_test(long_ids_are_found_and_told_apart),
      cmocka_unit_test(names_past_the_table_are_unknown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
