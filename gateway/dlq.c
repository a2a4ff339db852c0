/*
 * The dead-letter queue from the API (see dlq.h): browse, summary, replay,
 * purge. HTTP thread only, on api->redis. The stream is read in chunks of
 * FB_DLQ_CHUNK entries and every call has a bound on the entries it looks
 * at, so Redis never serves one long command for it; the HTTP thread is
 * busy for the whole call (docs: what each call costs).
 */
#include "framebuffer/dlq.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/frame.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"

#define ID_MAX 48 /* "(" + two 20-digit numbers and a dash, NUL */

/* The fields the gateway adds to a DLQ entry (frame.c), which a replay
 * takes off again, and the one a replay adds. */
static const char *const dlq_fields[] = {"dlq_reason", "dlq_source_id", "dlq_at", "dlq_detail",
                                         NULL};
#define REPLAYED "replayed"

/*
 * One replay step: for each entry (ARGV: id, count of values, names and
 * values...), delete it from the DLQ and, only when the delete found it,
 * add its fields to the input. A script runs whole or not at all, and is
 * replicated and written to the AOF as one MULTI/EXEC; the condition makes
 * an entry two replays (or a replay and a purge) race for go to the input
 * once at most. With "#!lua" Redis refuses the script up front when out of
 * memory, so no XADD fails after its XDEL; the type check covers the other
 * way an XADD can fail.
 */
static const char replay_script[] =
    "#!lua\n"
    "local dlq, input = KEYS[1], KEYS[2]\n"
    "local t = redis.call('TYPE', input)['ok']\n"
    "if t ~= 'stream' and t ~= 'none' then\n"
    "  return redis.error_reply('WRONGTYPE the input stream ' .. input .. ' is a ' .. t)\n"
    "end\n"
    "local done, i = {}, 1\n"
    "while i <= #ARGV do\n"
    "  local n = tonumber(ARGV[i + 1])\n"
    "  if redis.call('XDEL', dlq, ARGV[i]) == 1 then\n"
    "    redis.call('XADD', input, '*', unpack(ARGV, i + 2, i + 1 + n))\n"
    "    done[#done + 1] = 1\n"
    "  else\n"
    "    done[#done + 1] = 0\n"
    "  end\n"
    "  i = i + 2 + n\n"
    "end\n"
    "return done\n";

/* ============================================================== entries */

/* One entry of an XRANGE reply, [id, [name, value, ...]]: views into it. */
struct entry {
  const char *id;
  redisReply **kv; /* names and values, alternating */
  size_t nkv;      /* even */
};

static bool entry_of(const redisReply *e, struct entry *out)
{
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) return false;
  const redisReply *id = e->element[0], *kv = e->element[1];
  if (id->type != REDIS_REPLY_STRING) return false;
  out->id = id->str;
  out->kv = kv->type == REDIS_REPLY_ARRAY ? kv->element : NULL;
  out->nkv = kv->type == REDIS_REPLY_ARRAY ? kv->elements & ~(size_t)1 : 0;
  for (size_t i = 0; i < out->nkv; i++)
    if (out->kv[i]->type != REDIS_REPLY_STRING) return false;
  return true;
}

static bool name_is(const redisReply *r, const char *name)
{
  return r->len == strlen(name) && !memcmp(r->str, name, r->len);
}

/* The value of field `name` (its last occurrence: the gateway appends its
 * own fields after the frame's), or NULL. */
static const redisReply *entry_get(const struct entry *e, const char *name)
{
  for (size_t i = e->nkv; i >= 2; i -= 2)
    if (name_is(e->kv[i - 2], name)) return e->kv[i - 1];
  return NULL;
}

static bool value_is(const redisReply *v, const char *s)
{
  return v && name_is(v, s);
}

static bool is_dlq_field(const redisReply *name)
{
  for (size_t k = 0; dlq_fields[k]; k++)
    if (name_is(name, dlq_fields[k])) return true;
  return false;
}

/* Fields a replay carries back: the frame's own (not the DLQ's, not an
 * older `replayed`). */
static bool is_frame_field(const redisReply *name)
{
  return !is_dlq_field(name) && !name_is(name, REPLAYED);
}

/* How often the entry was replayed already: its `replayed` field, 0 when
 * absent or not a count. */
static int64_t replayed_of(const struct entry *e)
{
  const redisReply *v = entry_get(e, REPLAYED);
  if (!v || !v->len || v->len > 18) return 0;
  int64_t n = 0;
  for (size_t i = 0; i < v->len; i++) {
    if (v->str[i] < '0' || v->str[i] > '9') return 0;
    n = n * 10 + (v->str[i] - '0');
  }
  return n;
}

/* An entry id "<ms>-<seq>", each part a 64-bit number. */
static bool id_parse(const char *s, uint64_t *ms, uint64_t *seq)
{
  uint64_t part[2] = {0, 0};
  for (int k = 0; k < 2; k++) {
    const char *start = s;
    while (*s >= '0' && *s <= '9') {
      uint64_t d = (uint64_t)(*s - '0');
      if (part[k] > (UINT64_MAX - d) / 10) return false;
      part[k] = part[k] * 10 + d;
      s++;
    }
    if (s == start || s - start > 20) return false;
    if (k == 0 && *s++ != '-') return false;
  }
  if (*s) return false;
  *ms = part[0], *seq = part[1];
  return true;
}

/* ============================================================== filters */

/* What GET and DELETE /api/v1/dlq and a replay select: each optional. */
struct filter {
  int reason;                 /* enum fb_reason, -1: any */
  const char *camera_id;      /* NULL: any */
  const char *detection_type; /* NULL: any */
};

static bool filter_any(const struct filter *f)
{
  return f->reason >= 0 || f->camera_id || f->detection_type;
}

/* A DLQ reason by name (the first five of enum fb_reason), or -1. */
static int reason_find(const char *s)
{
  for (int r = FB_REASON_MALFORMED; r <= FB_REASON_POISON; r++)
    if (!strcmp(s, fb_reason_name((enum fb_reason)r))) return r;
  return -1;
}

static void bad_reason(struct fb_response *resp, const char *s)
{
  char msg[300];
  size_t len = (size_t)snprintf(msg, sizeof msg, "reason \"%.64s\" is not one of ", s);
  for (int r = FB_REASON_MALFORMED; r <= FB_REASON_POISON && len < sizeof msg; r++)
    len += (size_t)snprintf(msg + len, sizeof msg - len, "%s%s", r ? ", " : "",
                            fb_reason_name((enum fb_reason)r));
  fb_api_error(resp, 422, msg);
}

/* The frame's detection type as routing sees it (top-level field, else
 * metadata.detection_type) equals `want`. */
static bool detection_is(const struct entry *e, const char *want)
{
  size_t n = e->nkv / 2;
  struct fb_field *fields = n ? malloc(n * sizeof *fields) : NULL;
  if (n && !fields) return false;
  for (size_t i = 0; i < n; i++) {
    fields[i].name = (struct fb_str){e->kv[2 * i]->str, e->kv[2 * i]->len};
    fields[i].value = (struct fb_str){e->kv[2 * i + 1]->str, e->kv[2 * i + 1]->len};
  }
  struct fb_frame f;
  fb_frame_parse(&f, fields, n);
  bool eq =
      f.detection_type.n == strlen(want) && !memcmp(f.detection_type.p, want, f.detection_type.n);
  free(fields);
  return eq;
}

static bool matches(const struct filter *f, const struct entry *e)
{
  if (f->reason >= 0 &&
      !value_is(entry_get(e, "dlq_reason"), fb_reason_name((enum fb_reason)f->reason)))
    return false;
  if (f->camera_id && !value_is(entry_get(e, "camera_id"), f->camera_id)) return false;
  return !f->detection_type || detection_is(e, f->detection_type);
}

/* Reads ?reason=, ?camera_id= and ?detection_type=; answers 422 for an
 * unknown reason. */
static bool read_filter(const struct fb_request *req, struct filter *f, struct fb_response *resp)
{
  *f = (struct filter){-1, NULL, NULL};
  const char *v = fb_request_arg(req, "reason");
  if (v && *v && (f->reason = reason_find(v)) < 0) {
    bad_reason(resp, v);
    return false;
  }
  if ((v = fb_request_arg(req, "camera_id")) && *v) f->camera_id = v;
  if ((v = fb_request_arg(req, "detection_type")) && *v) f->detection_type = v;
  return true;
}

/* ================================================================ Redis */

/* One command, once more on a fresh connection when the old one turned out
 * to be lost. NULL when Redis cannot be reached. */
static redisReply *run(struct fb_api *api, int argc, const char **argv, const size_t *lens)
{
  redisReply *rep;
  int attempt = 0;
  do
    rep = fb_redis_argv(&api->redis, argc, argv, lens);
  while (!rep && fb_api_retry(api, attempt++));
  return rep;
}

/* Answers a failed call: Redis away (NULL) or an error reply. `done` says
 * what the call had done before, for the detail ("" when nothing). */
static void redis_failed(struct fb_response *resp, const redisReply *rep, const char *done)
{
  char msg[400];
  if (!rep)
    snprintf(msg, sizeof msg, "the DLQ is unavailable: Redis is not reachable%s", done);
  else
    snprintf(msg, sizeof msg, "Redis refused the DLQ request: %.200s%s",
             rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply", done);
  fb_api_error(resp, 503, msg);
}

/* Up to `count` entries: newest first from `from` ("+" or "(<id>") down to
 * the start, or, with !rev, oldest first from `from` ("-" or "(<id>") up to
 * `to`. NULL or an error reply when that failed (the caller frees it). */
static redisReply *read_chunk(struct fb_api *api, bool rev, const char *from, const char *to,
                              long count)
{
  char n[24];
  snprintf(n, sizeof n, "%ld", count);
  const char *argv[] = {
      rev ? "XREVRANGE" : "XRANGE", FB_DLQ_STREAM, from, rev ? "-" : to, "COUNT", n};
  return run(api, 6, argv, NULL);
}

static bool is_array(const redisReply *rep)
{
  return rep && rep->type == REDIS_REPLY_ARRAY;
}

/* The id of the newest entry into `out` (empty when the DLQ is empty): what
 * a replay or purge goes up to, so that entries a replay sends straight back
 * are not met again in the same call. */
static redisReply *newest_id(struct fb_api *api, char *out)
{
  redisReply *rep = read_chunk(api, true, "+", "-", 1);
  out[0] = '\0';
  struct entry e;
  if (is_array(rep) && rep->elements && entry_of(rep->element[0], &e))
    snprintf(out, ID_MAX, "%s", e.id);
  return rep;
}

/* ============================================================ browse */

static void append_value(struct fb_buf *o, const redisReply *v)
{
  if (v)
    fb_buf_json_string(o, v->str, v->len);
  else
    fb_buf_puts(o, "null");
}

/* {"id", "dlq_reason", "dlq_detail", "dlq_at", "dlq_source_id", "replayed",
 * "fields": the frame's own fields, the last of a repeated name}. */
static void append_entry(struct fb_buf *o, const struct entry *e)
{
  fb_buf_puts(o, "{\"id\":");
  fb_buf_json_string(o, e->id, strlen(e->id));
  for (size_t k = 0; dlq_fields[k]; k++) {
    fb_buf_printf(o, ",\"%s\":", dlq_fields[k]);
    append_value(o, entry_get(e, dlq_fields[k]));
  }
  fb_buf_printf(o, ",\"replayed\":%" PRId64 ",\"fields\":{", replayed_of(e));
  bool first = true;
  for (size_t i = 0; i < e->nkv; i += 2) {
    if (is_dlq_field(e->kv[i])) continue;
    bool later = false;
    for (size_t j = i + 2; j < e->nkv && !later; j += 2)
      later =
          e->kv[j]->len == e->kv[i]->len && !memcmp(e->kv[j]->str, e->kv[i]->str, e->kv[i]->len);
    if (later) continue;
    if (!first) fb_buf_puts(o, ",");
    first = false;
    fb_buf_json_string(o, e->kv[i]->str, e->kv[i]->len);
    fb_buf_puts(o, ":");
    fb_buf_json_string(o, e->kv[i + 1]->str, e->kv[i + 1]->len);
  }
  fb_buf_puts(o, "}}");
}

/* Parses a whole decimal `s` within [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < lo || v > hi) return false;
  *out = v;
  return true;
}

void fb_api_dlq_list(struct fb_api *api, const struct fb_request *req, const char *param,
                     struct fb_response *resp)
{
  static const char *const known[] = {"reason", "camera_id", "detection_type",
                                      "limit",  "after",     NULL};
  if (!fb_api_check_query(req, known, resp)) return;
  struct filter f;
  if (!read_filter(req, &f, resp)) return;
  long limit = FB_DLQ_LIST_DEFAULT;
  const char *v = fb_request_arg(req, "limit");
  if (v && !parse_long(v, 1, FB_DLQ_LIST_MAX, &limit)) {
    fb_api_error(resp, 422, "limit must be an integer from 1 to 1000");
    return;
  }
  char from[ID_MAX + 1] = "+", last[ID_MAX] = ""; /* from: "(" and an id */
  bool end = false;
  if ((v = fb_request_arg(req, "after")) && *v) {
    uint64_t ms, seq;
    if (!id_parse(v, &ms, &seq)) {
      fb_api_error(
          resp, 422,
          "after must be an entry id of frames:dlq (<ms>-<seq>), as a page's next gives it");
      return;
    }
    snprintf(from, sizeof from, "(%" PRIu64 "-%" PRIu64, ms, seq);
    end = !ms && !seq; /* nothing is older than 0-0 */
  }

  struct fb_buf *o = &resp->body;
  fb_buf_reset(o);
  fb_buf_puts(o, "{\"entries\":[");
  long n = 0, scanned = 0;
  bool stopped = false;
  while (!end && !stopped) {
    long want = FB_DLQ_CHUNK;
    if (!filter_any(&f) && limit - n < want) want = limit - n;
    if (FB_DLQ_LIST_SCAN_MAX - scanned < want) want = FB_DLQ_LIST_SCAN_MAX - scanned;
    redisReply *rep = read_chunk(api, true, from, "-", want);
    if (!is_array(rep)) {
      redis_failed(resp, rep, "");
      freeReplyObject(rep);
      return;
    }
    size_t i = 0;
    for (; i < rep->elements && !stopped; i++) {
      struct entry e;
      if (!entry_of(rep->element[i], &e)) continue;
      snprintf(last, sizeof last, "%s", e.id);
      scanned++;
      if (matches(&f, &e)) {
        if (n) fb_buf_puts(o, ",");
        append_entry(o, &e);
        n++;
      }
      stopped = n == limit || scanned == FB_DLQ_LIST_SCAN_MAX || o->len >= FB_DLQ_LIST_BYTES_MAX;
    }
    end = !stopped && (long)rep->elements < want;
    freeReplyObject(rep);
    snprintf(from, sizeof from, "(%s", last);
  }
  fb_buf_puts(o, "],\"next\":");
  if (end || !last[0])
    fb_buf_puts(o, "null");
  else
    fb_buf_json_string(o, last, strlen(last));
  fb_buf_printf(o, ",\"scanned\":%ld}", scanned);
  if (o->truncated) {
    fb_api_error(resp, 500, "the page is too large: ask for fewer entries with ?limit");
    return;
  }
  resp->status = 200;
  resp->content_type = "application/json";
}

/* ============================================================= summary */

struct reason_sum {
  uint64_t count;
  char oldest[ID_MAX], newest[ID_MAX];
  char oldest_at[40], newest_at[40];
};

static void note_at(char *out, const redisReply *at)
{
  snprintf(out, 40, "%.*s", at ? (int)(at->len < 39 ? at->len : 39) : 0, at ? at->str : "");
}

static json_t *end_json(const char *id, const char *at)
{
  if (!id[0]) return json_null();
  json_t *a = at[0] ? json_string(at) : NULL;
  return json_pack("{s:s,s:o}", "id", id, "at", a ? a : json_null());
}

void fb_api_dlq_summary(struct fb_api *api, const struct fb_request *req, const char *param,
                        struct fb_response *resp)
{
  static const char *const known[] = {NULL};
  if (!fb_api_check_query(req, known, resp)) return;
  int64_t t0 = fb_mono_ms();
  enum { NREASONS = FB_REASON_POISON + 1 };
  struct reason_sum *sum = calloc(NREASONS + 1, sizeof *sum); /* the last: any other reason */
  if (!sum) {
    fb_api_error(resp, 500, "out of memory");
    return;
  }
  char from[ID_MAX] = "-";
  long scanned = 0;
  bool end = false;
  while (!end && scanned < FB_DLQ_SCAN_MAX) {
    redisReply *rep = read_chunk(api, false, from, "+", FB_DLQ_CHUNK);
    if (!is_array(rep)) {
      redis_failed(resp, rep, "");
      freeReplyObject(rep);
      free(sum);
      return;
    }
    for (size_t i = 0; i < rep->elements; i++) {
      struct entry e;
      if (!entry_of(rep->element[i], &e)) continue;
      scanned++;
      const redisReply *why = entry_get(&e, "dlq_reason");
      int r = NREASONS;
      for (int k = 0; k < NREASONS && r == NREASONS; k++)
        if (value_is(why, fb_reason_name((enum fb_reason)k))) r = k;
      struct reason_sum *s = &sum[r];
      if (!s->count++) {
        snprintf(s->oldest, ID_MAX, "%s", e.id);
        note_at(s->oldest_at, entry_get(&e, "dlq_at"));
      }
      snprintf(s->newest, ID_MAX, "%s", e.id);
      note_at(s->newest_at, entry_get(&e, "dlq_at"));
      snprintf(from, sizeof from, "(%s", e.id);
    }
    end = rep->elements < FB_DLQ_CHUNK;
    freeReplyObject(rep);
  }
  json_t *reasons = json_object();
  for (int r = 0; r <= NREASONS; r++) {
    if (r == NREASONS && !sum[r].count) break;
    json_object_set_new(reasons, r < NREASONS ? fb_reason_name((enum fb_reason)r) : "other",
                        json_pack("{s:I,s:o,s:o}", "count", (json_int_t)sum[r].count, "oldest",
                                  end_json(sum[r].oldest, sum[r].oldest_at), "newest",
                                  end_json(sum[r].newest, sum[r].newest_at)));
  }
  free(sum);
  fb_api_respond_json(resp, 200,
                      json_pack("{s:I,s:o,s:b,s:I}", "total", (json_int_t)scanned, "reasons",
                                reasons, "complete", (int)end, "took_ms",
                                (json_int_t)(fb_mono_ms() - t0)));
}

/* ============================================================== replay */

/* One replay call: what it selected, what it did, and the step being built. */
struct replay {
  struct fb_api *api;
  bool force;
  long limit;
  uint64_t replayed, skipped[FB_SKIP_COUNT];
  struct entry batch[FB_DLQ_REPLAY_BATCH];
  size_t nbatch;
  redisReply *failed; /* the error reply that stopped the call (owned), or NULL */
  bool error;         /* Redis failed: stop */
};

/* Runs the replay script over the entries of the step. */
static void replay_flush(struct replay *rp)
{
  if (!rp->nbatch || rp->error) return;
  const char *input = rp->api->app->cfg->input_stream;
  size_t argc = 5;
  for (size_t i = 0; i < rp->nbatch; i++)
    argc += 2 + rp->batch[i].nkv + 2;
  const char **argv = malloc(argc * sizeof *argv);
  size_t *lens = malloc(argc * sizeof *lens);
  char(*nums)[2][24] = malloc(rp->nbatch * sizeof *nums);
  if (!argv || !lens || !nums) {
    free(argv), free(lens), free(nums);
    rp->error = true;
    return;
  }
  size_t a = 0;
#define ARG(s, n) (argv[a] = (s), lens[a++] = (n))
  ARG("EVAL", 4);
  ARG(replay_script, sizeof replay_script - 1);
  ARG("2", 1);
  ARG(FB_DLQ_STREAM, strlen(FB_DLQ_STREAM));
  ARG(input, strlen(input));
  for (size_t i = 0; i < rp->nbatch; i++) {
    const struct entry *e = &rp->batch[i];
    size_t values = 2;
    for (size_t k = 0; k < e->nkv; k += 2)
      if (is_frame_field(e->kv[k])) values += 2;
    snprintf(nums[i][0], 24, "%zu", values);
    snprintf(nums[i][1], 24, "%" PRId64, replayed_of(e) + 1);
    ARG(e->id, strlen(e->id));
    ARG(nums[i][0], strlen(nums[i][0]));
    for (size_t k = 0; k < e->nkv; k += 2) {
      if (!is_frame_field(e->kv[k])) continue;
      ARG(e->kv[k]->str, e->kv[k]->len);
      ARG(e->kv[k + 1]->str, e->kv[k + 1]->len);
    }
    ARG(REPLAYED, strlen(REPLAYED));
    ARG(nums[i][1], strlen(nums[i][1]));
  }
#undef ARG
  /* Sent again after a lost connection, the step is harmless: an entry
   * it already moved is gone from the DLQ and is not added twice. */
  redisReply *rep = run(rp->api, (int)a, argv, lens);
  free(argv), free(lens), free(nums);
  if (!is_array(rep) || rep->elements != rp->nbatch) {
    rp->error = true;
    rp->failed = rep;
    return;
  }
  for (size_t i = 0; i < rep->elements; i++) {
    if (rep->element[i]->type == REDIS_REPLY_INTEGER && rep->element[i]->integer == 1)
      rp->replayed++;
    else
      rp->skipped[FB_SKIP_GONE]++;
  }
  freeReplyObject(rep);
  rp->nbatch = 0;
}

/* An entry the call selected: skipped, or into the step (run when full or
 * when it makes up the call's limit). */
static void replay_consider(struct replay *rp, const struct entry *e)
{
  if (!rp->force && value_is(entry_get(e, "dlq_reason"), fb_reason_name(FB_REASON_MALFORMED))) {
    rp->skipped[FB_SKIP_MALFORMED]++;
    return;
  }
  if (replayed_of(e) >= rp->api->app->cfg->dlq_replay_max) {
    rp->skipped[FB_SKIP_REPLAY_MAX]++;
    return;
  }
  if (e->nkv + 2 > FB_DLQ_VALUES_MAX) {
    rp->skipped[FB_SKIP_TOO_LARGE]++;
    return;
  }
  rp->batch[rp->nbatch++] = *e;
  if (rp->nbatch == FB_DLQ_REPLAY_BATCH || (long)(rp->replayed + rp->nbatch) >= rp->limit)
    replay_flush(rp);
}

static bool replay_full(const struct replay *rp)
{
  return rp->error || (long)rp->replayed >= rp->limit;
}

/* The entries a filter selects, oldest first, up to the newest there was
 * when the call began. Returns the entries looked at; *more when it stopped
 * before the end. */
static long replay_scan(struct replay *rp, const struct filter *f, bool *more)
{
  char to[ID_MAX], from[ID_MAX] = "-";
  redisReply *rep = newest_id(rp->api, to);
  *more = false;
  if (!is_array(rep)) {
    rp->error = true;
    rp->failed = rep;
    return 0;
  }
  freeReplyObject(rep);
  long scanned = 0;
  bool end = !to[0];
  while (!end && !replay_full(rp)) {
    rep = read_chunk(rp->api, false, from, to, FB_DLQ_CHUNK);
    if (!is_array(rep)) {
      rp->error = true;
      rp->failed = rep;
      return scanned;
    }
    size_t i = 0;
    for (; i < rep->elements && !replay_full(rp) && scanned < FB_DLQ_SCAN_MAX; i++) {
      struct entry e;
      if (!entry_of(rep->element[i], &e)) continue;
      scanned++;
      snprintf(from, sizeof from, "(%s", e.id);
      if (matches(f, &e)) replay_consider(rp, &e);
    }
    replay_flush(rp); /* before the reply its entries point into goes */
    end = (i == rep->elements && rep->elements < FB_DLQ_CHUNK) || !strcmp(from + 1, to);
    *more = !end && (replay_full(rp) || scanned >= FB_DLQ_SCAN_MAX);
    freeReplyObject(rep);
    if (scanned >= FB_DLQ_SCAN_MAX) break;
  }
  return scanned;
}

/* The entries named by id, in the order given. Answers 404 itself, naming
 * them, when any is not in the DLQ: then nothing is replayed. Returns false
 * when it answered. */
static bool replay_ids(struct replay *rp, const char **ids, size_t n, struct fb_response *resp)
{
  struct fb_redis *r = &rp->api->redis;
  redisReply **reps = calloc(n, sizeof *reps);
  if (!reps) {
    fb_api_error(resp, 500, "out of memory");
    return false;
  }
  bool ok = true;
  for (int attempt = 0;; attempt++) {
    ok = !fb_redis_ensure(r);
    for (size_t i = 0; ok && i < n; i += FB_DLQ_CHUNK) { /* pipelined, a chunk at a time */
      size_t m = n - i < FB_DLQ_CHUNK ? n - i : FB_DLQ_CHUNK;
      for (size_t k = 0; k < m; k++)
        redisAppendCommand(r->ctx, "XRANGE %s %s %s", FB_DLQ_STREAM, ids[i + k], ids[i + k]);
      for (size_t k = 0; k < m && ok; k++) {
        void *v = NULL;
        if (redisGetReply(r->ctx, &v) != REDIS_OK || !v) {
          fb_redis_drop(r, r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
          ok = false;
        }
        reps[i + k] = v;
      }
    }
    if (ok || !fb_api_retry(rp->api, attempt)) break;
    for (size_t i = 0; i < n; i++) {
      freeReplyObject(reps[i]);
      reps[i] = NULL;
    }
  }
  size_t unknown = 0;
  char list[300] = "";
  redisReply *failed = NULL;
  for (size_t i = 0; ok && i < n; i++) {
    if (!is_array(reps[i])) {
      failed = reps[i];
      ok = false;
    } else if (!reps[i]->elements) {
      size_t len = strlen(list);
      if (unknown++ < 5)
        snprintf(list + len, sizeof list - len, "%s%s", unknown > 1 ? ", " : "", ids[i]);
    }
  }
  bool answered = !ok;
  if (!ok) redis_failed(resp, failed, "; nothing was replayed");
  if (ok && unknown) {
    char msg[500];
    snprintf(msg, sizeof msg, "%zu of the %zu ids %s not in %s (%s%s); nothing was replayed",
             unknown, n, unknown == 1 ? "is" : "are", FB_DLQ_STREAM, list,
             unknown > 5 ? ", ..." : "");
    fb_api_error(resp, 404, msg);
    answered = true;
  }
  for (size_t i = 0; !answered && i < n && !rp->error; i++) {
    struct entry e;
    if (entry_of(reps[i]->element[0], &e)) replay_consider(rp, &e);
  }
  if (!answered) replay_flush(rp); /* before the replies its entries point into go */
  for (size_t i = 0; i < n; i++)
    freeReplyObject(reps[i]);
  free(reps);
  return !answered;
}

static int cmp_str(const void *a, const void *b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A replay body: what it selects, into `f`, `ids` (borrowed from `body`,
 * sorted copy checked for repeats) and the limit and force. Answers 422 and
 * returns false when the body is not one. */
static bool read_replay(json_t *body, struct filter *f, const char ***ids, size_t *nids,
                        long *limit, bool *force, struct fb_response *resp)
{
  static const char *const known[] = {"reason", "ids",   "camera_id", "detection_type",
                                      "limit",  "force", NULL};
  char msg[400];
  const char *key;
  json_t *v;
  json_object_foreach(body, key, v)
  {
    bool ok = false;
    for (size_t k = 0; known[k] && !ok; k++)
      ok = !strcmp(key, known[k]);
    if (ok) continue;
    const char *near = fb_closest_name(key, known);
    size_t len = (size_t)snprintf(msg, sizeof msg, "unknown field: \"%.64s\"", key);
    if (near) len += (size_t)snprintf(msg + len, sizeof msg - len, " (did you mean \"%s\"?)", near);
    snprintf(msg + len, sizeof msg - len,
             "; a replay takes reason, ids, camera_id, detection_type, limit and force");
    fb_api_error(resp, 422, msg);
    return false;
  }
  *f = (struct filter){-1, NULL, NULL};
  *ids = NULL, *nids = 0, *limit = FB_DLQ_REPLAY_DEFAULT, *force = false;
  if ((v = json_object_get(body, "reason"))) {
    if (!json_is_string(v)) {
      fb_api_error(resp, 422, "reason must be a string");
      return false;
    }
    if ((f->reason = reason_find(json_string_value(v))) < 0) {
      bad_reason(resp, json_string_value(v));
      return false;
    }
  }
  static const char *const strs[] = {"camera_id", "detection_type"};
  for (int k = 0; k < 2; k++) {
    if (!(v = json_object_get(body, strs[k]))) continue;
    if (!json_is_string(v) || !json_string_length(v)) {
      snprintf(msg, sizeof msg, "%s must be a non-empty string", strs[k]);
      fb_api_error(resp, 422, msg);
      return false;
    }
    *(k ? &f->detection_type : &f->camera_id) = json_string_value(v);
  }
  if ((v = json_object_get(body, "limit")) && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                                               json_integer_value(v) > FB_DLQ_REPLAY_LIMIT_MAX)) {
    fb_api_error(resp, 422, "limit must be an integer from 1 to 100000");
    return false;
  }
  if (v) *limit = (long)json_integer_value(v);
  if ((v = json_object_get(body, "force"))) {
    if (!json_is_boolean(v)) {
      fb_api_error(resp, 422, "force must be true or false");
      return false;
    }
    *force = json_is_true(v);
  }
  json_t *list = json_object_get(body, "ids");
  if (!list) {
    if (filter_any(f)) return true;
    fb_api_error(resp, 422,
                 "say what to replay: reason, ids, or a filter (camera_id, detection_type)");
    return false;
  }
  if (filter_any(f) || json_object_get(body, "limit")) {
    fb_api_error(resp, 422,
                 "ids replays the entries it names: leave out reason, camera_id, detection_type "
                 "and limit");
    return false;
  }
  size_t n = json_is_array(list) ? json_array_size(list) : 0;
  if (!n || n > FB_DLQ_IDS_MAX) {
    fb_api_error(resp, 422, "ids must be an array of 1 to 10000 entry ids of frames:dlq");
    return false;
  }
  const char **out = malloc(n * sizeof *out), **sorted = malloc(n * sizeof *sorted);
  if (!out || !sorted) {
    free(out), free(sorted);
    fb_api_error(resp, 500, "out of memory");
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    json_t *s = json_array_get(list, i);
    uint64_t ms, seq;
    if (!json_is_string(s) || !id_parse(json_string_value(s), &ms, &seq)) {
      snprintf(msg, sizeof msg, "ids[%zu] is not an entry id (<ms>-<seq>, e.g. 1735689600000-0)",
               i);
      fb_api_error(resp, 422, msg);
      free(out), free(sorted);
      return false;
    }
    out[i] = sorted[i] = json_string_value(s);
  }
  qsort(sorted, n, sizeof *sorted, cmp_str);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(sorted[i - 1], sorted[i])) continue;
    snprintf(msg, sizeof msg, "id %.48s is listed twice in ids", sorted[i]);
    fb_api_error(resp, 422, msg);
    free(out), free(sorted);
    return false;
  }
  free(sorted);
  *ids = out, *nids = n;
  return true;
}

/* What a replay or purge changed: counted, logged, and an event of the
 * fleet's. */
static void note_replay(struct fb_api *api, const struct fb_request *req, const struct replay *rp)
{
  struct fb_metrics *m = api->app->metrics;
  uint64_t skipped = 0;
  atomic_fetch_add(&m->dlq_replayed, rp->replayed);
  for (int c = 0; c < FB_SKIP_COUNT; c++) {
    atomic_fetch_add(&m->dlq_replay_skipped[c], rp->skipped[c]);
    skipped += rp->skipped[c];
  }
  if (!rp->replayed && !skipped) return;
  fb_info("dlq", "replay (request %s): %" PRIu64 " entries back into %s, %" PRIu64 " skipped",
          req->request_id, rp->replayed, api->app->cfg->input_stream, skipped);
  fb_event_emit_by(api->app->events, req->request_id, "dlq", NULL, "replayed",
                   "%" PRIu64 " DLQ entries replayed into %s, %" PRIu64 " skipped", rp->replayed,
                   api->app->cfg->input_stream, skipped);
}

void fb_api_dlq_replay(struct fb_api *api, const struct fb_request *req, const char *param,
                       struct fb_response *resp)
{
  static const char *const known[] = {NULL};
  if (!fb_api_check_query(req, known, resp)) return;
  json_t *body = fb_api_json_body(req, resp);
  if (!body) return;
  struct filter f;
  const char **ids;
  size_t nids;
  struct replay *rp = calloc(1, sizeof *rp);
  if (!rp) {
    json_decref(body);
    fb_api_error(resp, 500, "out of memory");
    return;
  }
  rp->api = api;
  if (!read_replay(body, &f, &ids, &nids, &rp->limit, &rp->force, resp)) {
    json_decref(body);
    free(rp);
    return;
  }
  int64_t t0 = fb_mono_ms();
  bool more = false, answered = false;
  long scanned;
  if (ids) {
    rp->limit = (long)nids;
    answered = !replay_ids(rp, ids, nids, resp);
    scanned = (long)nids;
  } else {
    scanned = replay_scan(rp, &f, &more);
  }
  free(ids);
  json_decref(body);
  note_replay(api, req, rp);
  if (answered) {
    /* replay_ids answered: 404 or 503, nothing replayed */
  } else if (rp->error) {
    char done[160];
    snprintf(done, sizeof done,
             "; %" PRIu64 " entries were replayed before, the last step's are in the DLQ or "
             "the input: replay again",
             rp->replayed);
    redis_failed(resp, rp->failed, done);
  } else {
    uint64_t skipped = 0;
    json_t *by = json_object();
    for (int c = 0; c < FB_SKIP_COUNT; c++) {
      skipped += rp->skipped[c];
      json_object_set_new(by, fb_replay_skip_name((enum fb_replay_skip)c),
                          json_integer((json_int_t)rp->skipped[c]));
    }
    fb_api_respond_json(resp, 200,
                        json_pack("{s:I,s:I,s:o,s:I,s:b,s:I}", "replayed", (json_int_t)rp->replayed,
                                  "skipped", (json_int_t)skipped, "skipped_by", by, "scanned",
                                  (json_int_t)scanned, "more", (int)more, "took_ms",
                                  (json_int_t)(fb_mono_ms() - t0)));
  }
  freeReplyObject(rp->failed);
  free(rp);
}

/* =============================================================== purge */

/* Deletes the entries `f` selects, up to the newest there was when the
 * call began, a chunk's matches at a time (one XDEL each). Returns 0, or -1
 * with the error reply in *failed (NULL: Redis away). */
static int purge_scan(struct fb_api *api, const struct filter *f, uint64_t *purged, long *scanned,
                      bool *more, redisReply **failed)
{
  char to[ID_MAX], from[ID_MAX] = "-";
  redisReply *rep = newest_id(api, to);
  if (!is_array(rep)) {
    *failed = rep;
    return -1;
  }
  freeReplyObject(rep);
  const char *argv[2 + FB_DLQ_CHUNK] = {"XDEL", FB_DLQ_STREAM};
  bool end = !to[0];
  while (!end && *scanned < FB_DLQ_SCAN_MAX) {
    rep = read_chunk(api, false, from, to, FB_DLQ_CHUNK);
    if (!is_array(rep)) {
      *failed = rep;
      return -1;
    }
    int argc = 2;
    for (size_t i = 0; i < rep->elements; i++) {
      struct entry e;
      if (!entry_of(rep->element[i], &e)) continue;
      ++*scanned;
      snprintf(from, sizeof from, "(%s", e.id);
      if (matches(f, &e)) argv[argc++] = e.id;
    }
    end = rep->elements < FB_DLQ_CHUNK || !strcmp(from + 1, to);
    redisReply *del = argc > 2 ? run(api, argc, argv, NULL) : NULL;
    freeReplyObject(rep);
    if (argc > 2 && (!del || del->type != REDIS_REPLY_INTEGER)) {
      *failed = del;
      return -1;
    }
    if (del) *purged += (uint64_t)del->integer;
    freeReplyObject(del);
  }
  *more = !end;
  return 0;
}

void fb_api_dlq_purge(struct fb_api *api, const struct fb_request *req, const char *param,
                      struct fb_response *resp)
{
  static const char *const known[] = {"reason", "camera_id", "detection_type", "all", NULL};
  if (!fb_api_check_query(req, known, resp)) return;
  struct filter f;
  if (!read_filter(req, &f, resp)) return;
  const char *all = fb_request_arg(req, "all");
  if (all && strcmp(all, "true") && strcmp(all, "false")) {
    fb_api_error(resp, 422, "all must be true or false");
    return;
  }
  bool everything = all && !strcmp(all, "true");
  if (everything && filter_any(&f)) {
    fb_api_error(resp, 422,
                 "all=true deletes every entry: leave out reason, camera_id and "
                 "detection_type, or all");
    return;
  }
  if (!everything && !filter_any(&f)) {
    fb_api_error(resp, 422,
                 "say what to purge: ?reason=<reason> (or camera_id, detection_type), "
                 "or ?all=true for every entry");
    return;
  }
  uint64_t purged = 0;
  long scanned = 0;
  bool more = false;
  redisReply *failed = NULL;
  int rc = 0;
  if (everything) {
    /* XTRIM, not DEL: a consumer group someone keeps on the DLQ stays. */
    const char *argv[] = {"XTRIM", FB_DLQ_STREAM, "MAXLEN", "0"};
    redisReply *rep = run(api, 4, argv, NULL);
    if (rep && rep->type == REDIS_REPLY_INTEGER) {
      purged = (uint64_t)rep->integer, scanned = (long)rep->integer;
      freeReplyObject(rep);
    } else {
      failed = rep, rc = -1;
    }
  } else {
    rc = purge_scan(api, &f, &purged, &scanned, &more, &failed);
  }
  atomic_fetch_add(&api->app->metrics->dlq_purged, purged);
  if (purged) {
    const char *why = f.reason >= 0 ? fb_reason_name((enum fb_reason)f.reason) : NULL;
    fb_info("dlq", "purge (request %s): %" PRIu64 " entries deleted from %s", req->request_id,
            purged, FB_DLQ_STREAM);
    fb_event_emit_by(api->app->events, req->request_id, "dlq", NULL, "purged",
                     "%" PRIu64 " DLQ entries deleted%s%s", purged, why ? ", reason " : "",
                     why ? why : "");
  }
  if (rc) {
    char done[120];
    snprintf(done, sizeof done, "; %" PRIu64 " entries were deleted before", purged);
    redis_failed(resp, failed, done);
    freeReplyObject(failed);
    return;
  }
  fb_api_respond_json(resp, 200,
                      json_pack("{s:I,s:I,s:b}", "purged", (json_int_t)purged, "scanned",
                                (json_int_t)scanned, "more", (int)more));
}
