/*
 * Fuzz target: the body of PUT /api/v1/routing, read as the API reads it
 * (json_loadb rejecting duplicate members, then
 * fb_routing_patch_from_json), and the change described for the event and
 * the log (fb_routing_diff), into a buffer of every size from 1 byte up.
 * What is accepted must be in range; a refusal must say why.
 *
 * Input: the request body, as is.
 */
#include "fuzz.h"
#include "framebuffer/settings.h"

#define MAX_MS (INT64_C(86400000) * 365)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_quiet();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_t *body =
      json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
  if (!body) return 0;
  struct fb_routing_patch patch;
  char why[300];
  memset(why, 'x', sizeof why);
  int rc = fb_routing_patch_from_json(body, &patch, why, sizeof why);
  json_decref(body);
  if (rc) {
    FUZZ_CHECK(rc == -EINVAL && memchr(why, '\0', sizeof why) && why[0]);
    return 0;
  }

  /* The configured defaults, then the patch over them, as a PUT stores it. */
  const struct fb_routing before = {FB_STRATEGY_LEAST_LOADED, FB_OVERLOAD_DROP_OLDEST, 0, 0, 1.25};
  struct fb_routing after = before;
  const struct fb_routing *v = &patch.v;
  if (patch.set[FB_SET_STRATEGY]) {
    FUZZ_CHECK((unsigned)v->strategy < FB_STRATEGY_COUNT);
    after.strategy = v->strategy;
  }
  if (patch.set[FB_SET_OVERLOAD_POLICY]) {
    FUZZ_CHECK((unsigned)v->overload_policy < FB_OVERLOAD_COUNT);
    after.overload_policy = v->overload_policy;
  }
  if (patch.set[FB_SET_FRAME_MAX_AGE_MS]) {
    FUZZ_CHECK(v->frame_max_age_ms >= 0 && v->frame_max_age_ms <= MAX_MS);
    after.frame_max_age_ms = v->frame_max_age_ms;
  }
  if (patch.set[FB_SET_SLOW_START_MS]) {
    FUZZ_CHECK(v->slow_start_ms >= 0 && v->slow_start_ms <= MAX_MS);
    after.slow_start_ms = v->slow_start_ms;
  }
  if (patch.set[FB_SET_HASH_BOUND]) {
    FUZZ_CHECK(v->hash_bound >= 1.0 && v->hash_bound <= 100.0);
    after.hash_bound = v->hash_bound;
  }

  char full[400], cut[400];
  fb_routing_diff(&before, &after, full, sizeof full);
  size_t len = strlen(full);
  FUZZ_CHECK(len < sizeof full);
  if (!memcmp(&before, &after, sizeof before)) FUZZ_CHECK(len == 0);
  for (size_t n = 1; n <= len + 1; n++) {
    memset(cut, 'x', sizeof cut);
    fb_routing_diff(&before, &after, cut, n);
    FUZZ_CHECK(memchr(cut, '\0', n) && !strncmp(cut, full, strlen(cut)));
  }
  return 0;
}
