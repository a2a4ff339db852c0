/*
 * Builds synthetic frames (the fields of docs/protocol.md: Frames in) as XADD
 * argv vectors. Pure apart from the wall clock read for `timestamp`; a
 * generator belongs to one thread.
 */
#include "tk_frame.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "toolkit.h"

/* Malformed kinds, rotated so a test sees each one (docs/protocol.md: Frames in, "Malformed"). */
enum { BAD_NO_FRAME_ID, BAD_METADATA, BAD_TRACE_CONTEXT, BAD_KINDS };
static const char *const bad_kind_names[BAD_KINDS] = {"missing_frame_id", "metadata_not_object",
                                                      "trace_context_not_object"};

static const struct {
  const char *w, *h;
} resolutions[] = {{"1920", "1080"}, {"1280", "720"}, {"3840", "2160"}, {"2560", "1440"}};

uint64_t tk_framegen_rand(struct tk_framegen *g)
{
  uint64_t x = g->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  g->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

void tk_framegen_init(struct tk_framegen *g, const char *stream, unsigned cameras, char **types,
                      size_t ntypes, uint64_t malformed_every, int64_t maxlen, uint64_t seed)
{
  memset(g, 0, sizeof *g);
  if (seed == 0)
    seed = (uint64_t)fbci_real_us() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
  g->rng = seed ? seed : 1;
  g->stream = stream;
  g->cameras = cameras ? cameras : 1;
  g->types = types;
  g->ntypes = ntypes;
  g->malformed_every = malformed_every;
  /* The run id comes from the clock and pid even with a fixed seed, so two
   * runs never write the same frame_id. */
  uint64_t salt = (uint64_t)fbci_real_us() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
  salt ^= salt >> 29;
  snprintf(g->run_id, sizeof g->run_id, "%08x", (unsigned)(salt ^ (salt >> 32)));
  if (maxlen > 0) snprintf(g->maxlen, sizeof g->maxlen, "%lld", (long long)maxlen);
}

/* Fills one tk_frame: argv slots and the storage the values live in. */
struct builder {
  struct tk_frame *f;
  size_t used;
  bool overflow;
};

static void push_arg(struct builder *b, const char *s, size_t n)
{
  if (b->f->argc >= TK_FRAME_MAX_ARGV) {
    b->overflow = true;
    return;
  }
  b->f->argv[b->f->argc] = s;
  b->f->argvlen[b->f->argc] = n;
  b->f->argc++;
}

/* Formats into the storage and returns the start, or "" (and marks the
 * overflow) when it is full. */
static const char *store(struct builder *b, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const char *store(struct builder *b, size_t *len, const char *fmt, ...)
{
  char *dst = b->f->storage + b->used;
  size_t room = sizeof b->f->storage - b->used;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(dst, room, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= room) {
    b->overflow = true;
    *len = 0;
    return "";
  }
  b->used += (size_t)n + 1;
  *len = (size_t)n;
  return dst;
}

static void field(struct builder *b, const char *name, const char *value, size_t vlen)
{
  push_arg(b, name, strlen(name));
  push_arg(b, value, vlen);
}

bool tk_framegen_next(struct tk_framegen *g, struct tk_frame *f, int64_t inject_ts_us)
{
  struct builder b = {.f = f};
  f->argc = 0;
  f->frame_id = "";
  uint64_t seq = g->seq++;
  int bad = -1;
  if (g->malformed_every && (seq + 1) % g->malformed_every == 0)
    bad = (int)(g->malformed++ % BAD_KINDS);

  push_arg(&b, "XADD", 4);
  push_arg(&b, g->stream, strlen(g->stream));
  if (g->maxlen[0]) {
    push_arg(&b, "MAXLEN", 6);
    push_arg(&b, "~", 1);
    push_arg(&b, g->maxlen, strlen(g->maxlen));
  }
  push_arg(&b, "*", 1);

  unsigned cam = (unsigned)(seq % g->cameras);
  uint64_t r = tk_framegen_rand(g);
  const char *type = g->types[r % g->ntypes];
  size_t n;
  const char *s;

  if (bad != BAD_NO_FRAME_ID) {
    s = store(&b, &n, "cam-%03u-%012llu-%s", cam, (unsigned long long)seq, g->run_id);
    f->frame_id = s;
    field(&b, "frame_id", s, n);
  }
  s = store(&b, &n, "cam-%03u", cam);
  field(&b, "camera_id", s, n);
  char ts[32];
  fbci_iso8601(ts, sizeof ts, inject_ts_us);
  s = store(&b, &n, "%s", ts);
  field(&b, "timestamp", s, n);
  s = store(&b, &n, "%llu", 40000ULL + (unsigned long long)((r >> 8) % 360000));
  field(&b, "size_bytes", s, n);
  unsigned res = cam % (unsigned)(sizeof resolutions / sizeof resolutions[0]);
  field(&b, "width", resolutions[res].w, strlen(resolutions[res].w));
  field(&b, "height", resolutions[res].h, strlen(resolutions[res].h));
  field(&b, "format", "jpeg", 4);

  uint64_t t1 = tk_framegen_rand(g), t2 = tk_framegen_rand(g), sp = tk_framegen_rand(g);
  if (bad == BAD_TRACE_CONTEXT)
    s = store(&b, &n, "\"not-an-object\"");
  else
    s = store(&b, &n, "{\"trace_id\":\"%016llx%016llx\",\"span_id\":\"%016llx\",\"sampled\":true}",
              (unsigned long long)t1, (unsigned long long)t2, (unsigned long long)sp);
  field(&b, "trace_context", s, n);

  if (bad == BAD_METADATA)
    s = store(&b, &n, "[\"not\",\"an\",\"object\"]");
  else
    s = store(&b, &n,
              "{\"detection_type\":\"%s\",\"zone\":\"zone-%u\",\"confidence\":0.%02u,"
              "\"source\":\"fb-inject\"}",
              type, (unsigned)((r >> 20) % 8), 50u + (unsigned)((r >> 32) % 50));
  field(&b, "metadata", s, n);

  /* The real capture service sends the top-level form; half our frames do. */
  if (seq % 2 == 1) field(&b, "detection_type", type, strlen(type));

  s = store(&b, &n, "%lld", (long long)inject_ts_us);
  field(&b, "inject_ts_us", s, n);
  if (bad >= 0) field(&b, "fb_malformed", bad_kind_names[bad], strlen(bad_kind_names[bad]));

  /* The storage is sized for the longest frame; overflow means a bug here. */
  if (b.overflow) tk_die(1, "internal error: frame does not fit its buffer");
  return bad >= 0;
}
