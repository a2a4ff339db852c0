/*
 * Fuzz target: the validating JSON scanner of frame.c
 * (fb_json_scan_object), as it checks a frame's metadata and trace_context
 * and finds metadata.detection_type, and the unescaping of that type when
 * it is looked up (fb_snapshot_group). jansson is the reference: an object
 * it accepts, nested no deeper than the scanner's 64, must be accepted,
 * with the same detection_type, which must find the same capability group.
 *
 * Input: the JSON text, as is.
 */
#include "fuzz.h"
#include "framebuffer/frame.h"

static struct fb_snapshot *snap;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_quiet();
  snap = fuzz_snapshot();
  return 0;
}

/* Nesting depth as the scanner counts it: each object or array is one. */
static int depth(json_t *j)
{
  int d = 0, c;
  const char *k;
  size_t i;
  json_t *v;
  if (json_is_object(j)) {
    json_object_foreach(j, k, v) if ((c = depth(v)) > d) d = c;
  } else if (json_is_array(j)) {
    json_array_foreach(j, i, v) if ((c = depth(v)) > d) d = c;
  } else {
    return 0;
  }
  return d + 1;
}

static enum fb_json_type type_of(const json_t *j)
{
  switch (j ? json_typeof(j) : JSON_NULL) {
  case JSON_OBJECT: return FB_JSON_OBJECT;
  case JSON_ARRAY: return FB_JSON_ARRAY;
  case JSON_STRING: return FB_JSON_STRING;
  case JSON_INTEGER:
  case JSON_REAL: return FB_JSON_NUMBER;
  case JSON_TRUE: return FB_JSON_TRUE;
  case JSON_FALSE: return FB_JSON_FALSE;
  default: return j ? FB_JSON_NULL : FB_JSON_NONE;
  }
}

/* True when every "\u" of the input lies inside `v`: then no member name
 * elsewhere is spelled with \u escapes, which the scanner does not decode
 * (only \u escapes can spell "detection_type" another way). */
static bool no_escaped_names(const char *s, size_t n, struct fb_str v)
{
  for (const char *p = s; (p = memmem(p, n - (size_t)(p - s), "\\u", 2)); p += 2)
    if (!v.p || p < v.p || p >= v.p + v.n) return false;
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *s = fuzz_dup(data, size);
  enum fb_json_type t = FB_JSON_NONE;
  struct fb_str v = {NULL, 0};
  bool esc = false;
  int any = fb_json_scan_object(s, size, NULL, NULL, NULL, NULL);
  int rc = fb_json_scan_object(s, size, "detection_type", &t, &v, &esc);
  FUZZ_CHECK(rc == any && (rc == 0 || rc == -EINVAL));
  if (!rc && t != FB_JSON_NONE) {
    FUZZ_CHECK(v.p >= s && v.p + v.n <= s + size && (v.n || t == FB_JSON_STRING));
    if (t == FB_JSON_STRING)
      FUZZ_CHECK(v.p[-1] == '"' && v.p[v.n] == '"' && (esc || !memchr(v.p, '\\', v.n)));
    if (t == FB_JSON_OBJECT) FUZZ_CHECK(!fb_json_scan_object(v.p, v.n, NULL, NULL, NULL, NULL));
  }
  const struct fb_cap_group *g = NULL;
  if (!rc && t == FB_JSON_STRING) g = fb_snapshot_group(snap, v, esc);

  /* jansson reads a NUL byte between tokens as the end of the text. */
  json_t *doc = memchr(s, '\0', size) ? NULL : json_loadb(s, size, 0, NULL);
  if (json_is_object(doc) && depth(doc) <= 64) {
    FUZZ_CHECK(rc == 0); /* valid JSON is never a malformed frame */
    json_t *dt = json_object_get(doc, "detection_type");
    if (no_escaped_names(s, size, t == FB_JSON_STRING ? v : (struct fb_str){NULL, 0})) {
      FUZZ_CHECK(type_of(dt) == t);
      if (t == FB_JSON_STRING) {
        const char *want = json_string_value(dt);
        if (!want[0])
          FUZZ_CHECK(g == &snap->all);
        else if (g)
          FUZZ_CHECK(!strcmp(g->name, want) && json_string_length(dt) == strlen(want));
        else
          for (size_t i = 0; i < snap->ngroups; i++)
            FUZZ_CHECK(strcmp(snap->groups[i].name, want));
      }
    }
  }
  json_decref(doc);
  free(s);
  return 0;
}
