/*
 * Helpers shared by the fuzz targets: checks that abort (so libFuzzer keeps
 * the input), cutting an input into lines, and processors from JSON text.
 * Single-threaded, test code only.
 */
#ifndef FB_TESTS_FUZZ_H
#define FB_TESTS_FUZZ_H

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/log.h"
#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"

#define FUZZ_INPUT_STREAM "frames:metadata"

/* A broken promise of the code under test: abort, which libFuzzer reports
 * as a crash and saves the input of. */
#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                     \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* Takes the next line (without its '\n') off the front of the input (p, n). Returns
 * false when nothing is left. */
static inline bool fuzz_line(const uint8_t **p, size_t *n, const char **line, size_t *len)
{
  if (!*n) return false;
  const uint8_t *nl = memchr(*p, '\n', *n);
  *line = (const char *)*p;
  *len = nl ? (size_t)(nl - *p) : *n;
  *p += *len + (nl ? 1 : 0);
  *n -= *len + (nl ? 1 : 0);
  return true;
}

/* A heap copy of exactly `n` bytes (no terminator), so that ASan catches
 * any read past the end. Never NULL. */
static inline char *fuzz_dup(const void *p, size_t n)
{
  char *c = malloc(n ? n : 1);
  FUZZ_CHECK(c);
  if (n) memcpy(c, p, n);
  return c;
}

/* A processor from a registration that must be valid. */
static inline struct fb_proc *fuzz_proc(const char *text)
{
  json_t *body = json_loads(text, 0, NULL);
  struct fb_proc *p = NULL;
  char why[300] = "";
  if (!body || fb_proc_from_json(&p, body, FUZZ_INPUT_STREAM, why, sizeof why)) {
    fprintf(stderr, "fuzz setup: bad registration %s: %s\n", text, why);
    abort();
  }
  json_decref(body);
  return p;
}

/* Registrations the targets route to: a local and a remote processor, and
 * one with dots in its id that sends no heartbeats. */
static const char *const fuzz_procs[] = {
    "{\"id\":\"tracker-a\",\"capabilities\":[\"person\",\"vehicle\"],\"capacity\":8,\"queue\":\"\","
    "\"registered_at_ms\":1700000000000}",
    "{\"id\":\"detector-b\",\"capabilities\":[\"person\",\"face\"],\"capacity\":4,\"queue\":\"\","
    "\"transport\":\"nats\",\"weight\":3,\"max_queue\":50}",
    "{\"id\":\"cam.zone-1\",\"capabilities\":[\"vehicle\",\"licence-plate\"],\"capacity\":2,"
    "\"queue\":\"frames:zone1\",\"heartbeat_interval_ms\":0}",
};
#define FUZZ_NPROCS (sizeof fuzz_procs / sizeof fuzz_procs[0])

/* Logs only errors: the targets drive many refusals, each a warning. */
static inline void fuzz_quiet(void)
{
  fb_log_setup(FB_LOG_ERROR, FB_LOG_TEXT);
}

/* A snapshot of fuzz_procs (the snapshot holds the references). */
static inline struct fb_snapshot *fuzz_snapshot(void)
{
  struct fb_proc *procs[FUZZ_NPROCS];
  for (size_t i = 0; i < FUZZ_NPROCS; i++)
    procs[i] = fuzz_proc(fuzz_procs[i]);
  struct fb_snapshot *s = fb_snapshot_build(procs, FUZZ_NPROCS, 1);
  FUZZ_CHECK(s);
  for (size_t i = 0; i < FUZZ_NPROCS; i++)
    fb_proc_release(procs[i]);
  return s;
}

#endif
