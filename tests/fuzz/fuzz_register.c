/*
 * Fuzz target: a registration body (POST /api/v1/processors/register, PUT
 * /api/v1/processors/<id>), validated by fb_proc_from_json as the API does
 * it. What it accepts must keep its promises: a valid id, 1-64
 * capabilities, a target that is not the input stream; the API's view of it
 * (fb_proc_to_json) builds; every capability finds its group in a snapshot;
 * and the stored text, read back the way every replica reads the registry
 * from Redis (fb_store_load: json_loadb, then fb_proc_from_json), gives the
 * same processor and the same stored text.
 *
 * Input: the request body, as is.
 */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_quiet();
  return 0;
}

/* Runs the validation; on a refusal checks the message. */
static struct fb_proc *validate(const json_t *body)
{
  struct fb_proc *p = (struct fb_proc *)1;
  char why[300];
  memset(why, 'x', sizeof why);
  int rc = fb_proc_from_json(&p, body, FUZZ_INPUT_STREAM, why, sizeof why);
  if (rc) {
    FUZZ_CHECK(rc == -EINVAL && !p && memchr(why, '\0', sizeof why) && why[0]);
    return NULL;
  }
  FUZZ_CHECK(p && p->id && fb_proc_id_is_valid(p->id, strlen(p->id)));
  FUZZ_CHECK(p->ncaps >= 1 && p->ncaps <= FB_PROC_MAX_CAPS);
  FUZZ_CHECK(p->capacity >= 1 && p->weight >= 1 && p->max_queue >= 1);
  FUZZ_CHECK(strcmp(p->stream, FUZZ_INPUT_STREAM) && strcmp(p->stream, FB_DLQ_STREAM));
  FUZZ_CHECK(p->stored && p->subject && p->result_stream && p->live);
  return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
  if (!body) return 0;
  struct fb_proc *p = validate(body);
  json_decref(body);
  if (!p) return 0;

  json_t *shown = fb_proc_to_json(p);
  FUZZ_CHECK(json_is_object(shown));
  json_decref(shown);

  struct fb_snapshot *s = fb_snapshot_build(&p, 1, 1);
  FUZZ_CHECK(s);
  for (size_t i = 0; i < p->ncaps; i++) {
    struct fb_str cap = {p->caps[i], strlen(p->caps[i])};
    const struct fb_cap_group *g = fb_snapshot_group(s, cap, false);
    FUZZ_CHECK(g && g->n == 1 && g->members[0] == 0);
  }
  fb_snapshot_release(s);

  json_t *again = json_loadb(p->stored, strlen(p->stored), 0, NULL);
  FUZZ_CHECK(again);
  struct fb_proc *q = validate(again);
  if (!q) { /* the reason, for the report */
    char why[300] = "";
    fb_proc_from_json(&q, again, FUZZ_INPUT_STREAM, why, sizeof why);
    fprintf(stderr, "%s:%d: check failed: stored registration %s is refused when read back: %s\n",
            __FILE__, __LINE__, p->stored, why);
    abort();
  }
  json_decref(again);
  FUZZ_CHECK(!strcmp(p->id, q->id) && !strcmp(p->stored, q->stored));
  FUZZ_CHECK(!strcmp(p->stream, q->stream) && p->transport == q->transport);
  fb_proc_release(q);
  fb_proc_release(p);
  return 0;
}
