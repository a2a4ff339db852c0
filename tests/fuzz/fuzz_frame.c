/*
 * Fuzz target: one entry of the input stream, as the ingest thread takes it
 * (fb_frame_parse), then what is done with a frame: its timestamp
 * (fb_frame_time_ms), its capability group (fb_snapshot_group, which
 * unescapes a JSON detection type), a pick by every strategy
 * (fb_router_pick), and its hand-off as RESP (checked with hiredis's
 * reader) and as JSON (checked with jansson).
 *
 * Input: one field a line, `name=value` (the first '=' splits; a line
 * without one is a name with an empty value). Each name and value is copied
 * to its own allocation of its exact size, like the views into a Redis
 * reply the parser gets, so a read past one is an ASan report.
 */
#include <hiredis/hiredis.h>

#include "fuzz.h"
#include "framebuffer/frame.h"
#include "framebuffer/router.h"

#define MAX_FIELDS 256

static struct fb_snapshot *snap;
static struct fb_router *routers[FB_STRATEGY_COUNT];
static redisReader *reader; /* empty between inputs */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_quiet();
  snap = fuzz_snapshot();
  for (int s = 0; s < FB_STRATEGY_COUNT; s++)
    FUZZ_CHECK(fb_router_create(&routers[s], (enum fb_strategy)s) == 0);
  FUZZ_CHECK((reader = redisReaderCreate()));
  return 0;
}

/* Reads one RESP reply from `b` and checks it is an XADD of `nargs` bulk
 * strings, `f`'s fields among them as they are, that fills `b` exactly. */
static void check_resp(const struct fb_buf *b, const struct fb_frame *f, size_t nargs)
{
  FUZZ_CHECK(!b->truncated);
  void *reply = NULL;
  FUZZ_CHECK(redisReaderFeed(reader, b->data, b->len) == REDIS_OK);
  FUZZ_CHECK(redisReaderGetReply(reader, &reply) == REDIS_OK && reply);
  const redisReply *rep = reply;
  FUZZ_CHECK(rep->type == REDIS_REPLY_ARRAY && rep->elements == nargs);
  FUZZ_CHECK(!strcmp(rep->element[0]->str, "XADD"));
  for (size_t i = 0; i < nargs; i++)
    FUZZ_CHECK(rep->element[i]->type == REDIS_REPLY_STRING);
  for (size_t i = 0; i < 2 * f->nfields; i++) {
    const struct fb_str *want = i % 2 ? &f->fields[i / 2].value : &f->fields[i / 2].name;
    const redisReply *got = rep->element[6 + i];
    FUZZ_CHECK(got->len == want->n && !memcmp(got->str, want->p, want->n));
  }
  freeReplyObject(reply);
  reply = NULL;
  FUZZ_CHECK(redisReaderGetReply(reader, &reply) == REDIS_OK && !reply); /* nothing left over */
}

/* Hands the parsed frame on the way the gateway does. */
static void use(const struct fb_frame *f, bool checkable)
{
  int64_t ms;
  if (f->timestamp.n) (void)fb_frame_time_ms(f->timestamp, &ms);

  const struct fb_cap_group *g = fb_snapshot_group(snap, f->detection_type, f->detection_escaped);
  for (size_t i = 0; g && i < g->n; i++)
    FUZZ_CHECK(g->members[i] < snap->n);
  for (int s = 0; s < FB_STRATEGY_COUNT; s++) {
    bool overloaded = false;
    FUZZ_CHECK(fb_router_begin(routers[s], snap, 1700000000000) == 0);
    int idx = fb_router_pick(routers[s], snap, f, &overloaded);
    FUZZ_CHECK(idx == -ENOENT || (idx >= 0 && (size_t)idx < snap->n));
  }

  struct fb_buf b;
  fb_buf_init(&b, 1u << 20);
  size_t extra = (!f->has_priority + !f->has_storage_path + !f->has_storage_backend) * 2u;
  fb_frame_append_xadd(&b, f, "frames:ready:tracker-a", 10000);
  check_resp(&b, f, 6 + 2 * f->nfields + extra);
  fb_buf_reset(&b);
  fb_frame_append_dlq(&b, f, FB_DLQ_STREAM, 100000, "no_processor", f->frame_id,
                      "2024-01-01T00:00:00.000Z", "no processor has capability person");
  check_resp(&b, f, 6 + 2 * f->nfields + 8);
  fb_buf_reset(&b);
  fb_frame_append_json(&b, f);
  FUZZ_CHECK(!b.truncated);
  if (checkable) { /* bytes that are not UTF-8 are passed through as they are */
    json_t *doc = json_loadb(b.data, b.len, JSON_ALLOW_NUL, NULL);
    FUZZ_CHECK(json_is_object(doc));
    json_decref(doc);
  }
  fb_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct fb_field fields[MAX_FIELDS];
  size_t n = 0, len;
  const char *line;
  bool checkable = true; /* by jansson: UTF-8, no NUL in a name */
  while (n < MAX_FIELDS && fuzz_line(&data, &size, &line, &len)) {
    const char *eq = memchr(line, '=', len);
    size_t kn = eq ? (size_t)(eq - line) : len, vn = eq ? len - kn - 1 : 0;
    fields[n].name = (struct fb_str){fuzz_dup(line, kn), kn};
    fields[n].value = (struct fb_str){fuzz_dup(eq ? eq + 1 : "", vn), vn};
    json_t *k = json_stringn(line, kn), *v = json_stringn(eq ? eq + 1 : "", vn);
    checkable = checkable && k && v && !memchr(line, '\0', kn);
    json_decref(k);
    json_decref(v);
    n++;
  }

  struct fb_frame f;
  enum fb_frame_error e = fb_frame_parse(&f, fields, n);
  FUZZ_CHECK(e == f.error && f.nfields == n);
  FUZZ_CHECK(strcmp(fb_frame_error_str(e), "unknown"));
  if (e == FB_FRAME_OK) {
    FUZZ_CHECK(f.frame_id.n > 0 && f.bytes <= FB_FRAME_MAX_BYTES);
    use(&f, checkable);
  }

  for (size_t i = 0; i < n; i++) {
    free((void *)fields[i].name.p);
    free((void *)fields[i].value.p);
  }
  return 0;
}
