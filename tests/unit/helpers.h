/*
 * Helpers shared by the unit tests: building processors and snapshots from
 * JSON text. Include after <cmocka.h>. Single-threaded, test code only.
 */
#ifndef FB_TESTS_UNIT_HELPERS_H
#define FB_TESTS_UNIT_HELPERS_H

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/registry.h"

#define FB_TEST_INPUT_STREAM "frames:metadata"

/* A processor from a registration body that must be valid. Returns a new
 * processor (release with fb_proc_release). */
static inline struct fb_proc *test_proc_from_text(const char *text)
{
  json_error_t jerr;
  json_t *body = json_loads(text, 0, &jerr);
  if (!body) fail_msg("test body is not JSON: %s (%s)", text, jerr.text);
  struct fb_proc *p = NULL;
  char detail[256] = "";
  int rc = fb_proc_from_json(&p, body, FB_TEST_INPUT_STREAM, detail, sizeof detail);
  json_decref(body);
  if (rc) fail_msg("registration refused: %s: %s", text, detail);
  return p;
}

/* A processor with one or two capabilities (cap2 may be NULL), a weight,
 * and a fixed registered_at_ms so two builds store the same text. */
static inline struct fb_proc *test_proc(const char *id, const char *cap1, const char *cap2,
                                        int weight)
{
  char text[512];
  if (cap2)
    snprintf(text, sizeof text,
             "{\"id\":\"%s\",\"capabilities\":[\"%s\",\"%s\"],\"capacity\":4,\"queue\":\"\","
             "\"weight\":%d,\"registered_at_ms\":1700000000000}",
             id, cap1, cap2, weight);
  else
    snprintf(text, sizeof text,
             "{\"id\":\"%s\",\"capabilities\":[\"%s\"],\"capacity\":4,\"queue\":\"\","
             "\"weight\":%d,\"registered_at_ms\":1700000000000}",
             id, cap1, weight);
  return test_proc_from_text(text);
}

static inline void test_set_health(struct fb_proc *p, enum fb_health h)
{
  fb_proc_set_health(p, h);
}

/* Releases the caller's references to `n` processors. */
static inline void test_release_procs(struct fb_proc **procs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    fb_proc_release(procs[i]);
}

#endif
