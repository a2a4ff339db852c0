/*
 * The frame trace (see trace.h): a ring of fixed-size records and, beside
 * it, their frame ids' hashes, so that a lookup scans 8 bytes a frame. One
 * mutex: the ingest thread takes it once a batch, a lookup for one scan.
 */
#include "framebuffer/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_NONE    0      /* interned index + 1; 0: no name */
#define NAME_UNKNOWN 0xffff /* the table was full */
#define NAME_SLOTS   (2 * FB_TRACE_NAMES_MAX)
#define PTR_CACHE    256

struct rec {
  int64_t routed_at_ms;
  uint64_t src_ms, src_seq;
  uint16_t proc, target; /* interned names */
  int8_t reason, strategy, transport;
  uint8_t outcome;
  uint8_t id_len; /* bytes kept of frame_id */
  uint8_t id_cut;
  char frame_id[FB_TRACE_ID_MAX];
  char camera_id[FB_TRACE_CAMERA_MAX];
};

struct fb_trace {
  pthread_mutex_t lock;
  size_t cap, head, count; /* head: the next slot written */
  struct rec *recs;
  uint64_t *hashes;
  /* Interned names: names[i] for index i + 1. */
  char *names[FB_TRACE_NAMES_MAX];
  size_t nnames;
  uint16_t slots[NAME_SLOTS]; /* open addressing by the name's hash */
  struct {
    const char *ptr;
    uint16_t name;
  } recent[PTR_CACHE]; /* by the caller's pointer: most ids come from the same strings */
};

static uint64_t hash_bytes(const char *p, size_t n)
{
  uint64_t h = UINT64_C(1469598103934665603);
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

const char *fb_trace_outcome_name(enum fb_trace_outcome o)
{
  static const char *const names[] = {"delivered", "dlq", "dropped", "held"};
  return (unsigned)o < sizeof names / sizeof *names ? names[o] : "unknown";
}

int fb_trace_create(struct fb_trace **out, size_t frames)
{
  struct fb_trace *t = calloc(1, sizeof *t);
  if (!t) return -ENOMEM;
  t->cap = frames ? frames : 1;
  t->recs = calloc(t->cap, sizeof *t->recs);
  t->hashes = calloc(t->cap, sizeof *t->hashes);
  if (!t->recs || !t->hashes) {
    fb_trace_destroy(t);
    return -ENOMEM;
  }
  pthread_mutex_init(&t->lock, NULL);
  *out = t;
  return 0;
}

void fb_trace_destroy(struct fb_trace *t)
{
  if (!t) return;
  if (t->recs && t->hashes) pthread_mutex_destroy(&t->lock);
  for (size_t i = 0; i < t->nnames; i++)
    free(t->names[i]);
  free(t->recs);
  free(t->hashes);
  free(t);
}

size_t fb_trace_bytes(const struct fb_trace *t)
{
  return sizeof *t + t->cap * (sizeof *t->recs + sizeof *t->hashes);
}

/* The interned index + 1 of `name`, NAME_NONE for NULL, NAME_UNKNOWN when
 * the table is full. Under the lock. */
static uint16_t intern(struct fb_trace *t, const char *name)
{
  if (!name) return NAME_NONE;
  size_t c = ((uintptr_t)name >> 4) % PTR_CACHE;
  uint16_t k = t->recent[c].name;
  if (t->recent[c].ptr == name && k != NAME_NONE && k != NAME_UNKNOWN &&
      !strcmp(t->names[k - 1], name))
    return k;
  size_t len = strlen(name);
  uint64_t h = hash_bytes(name, len);
  size_t s = (size_t)(h % NAME_SLOTS);
  for (; t->slots[s]; s = (s + 1) % NAME_SLOTS)
    if (!strcmp(t->names[t->slots[s] - 1], name)) break;
  if (!t->slots[s]) {
    char *copy = t->nnames < FB_TRACE_NAMES_MAX ? strdup(name) : NULL;
    if (!copy) return NAME_UNKNOWN;
    t->names[t->nnames++] = copy;
    t->slots[s] = (uint16_t)t->nnames;
  }
  t->recent[c].ptr = name;
  t->recent[c].name = t->slots[s];
  return t->slots[s];
}

static const char *name_of(const struct fb_trace *t, uint16_t k)
{
  if (k == NAME_NONE) return "";
  if (k == NAME_UNKNOWN) return "(unknown: too many names to remember)";
  return t->names[k - 1];
}

void fb_trace_begin(struct fb_trace *t)
{
  pthread_mutex_lock(&t->lock);
}

void fb_trace_end(struct fb_trace *t)
{
  pthread_mutex_unlock(&t->lock);
}

static void copy_cut(char *dst, size_t cap, struct fb_str s, uint8_t *len, uint8_t *cut)
{
  size_t n = s.n < cap ? s.n : cap;
  if (n) memcpy(dst, s.p, n); /* an absent field is {NULL, 0} */
  if (n < cap) dst[n] = '\0';
  if (len) *len = (uint8_t)n;
  if (cut) *cut = s.n > cap;
}

void fb_trace_add(struct fb_trace *t, const struct fb_trace_in *in)
{
  struct rec *r = &t->recs[t->head];
  t->hashes[t->head] = hash_bytes(in->frame_id.p, in->frame_id.n);
  r->routed_at_ms = in->routed_at_ms;
  r->src_ms = r->src_seq = 0;
  if (in->source_id) sscanf(in->source_id, "%" SCNu64 "-%" SCNu64, &r->src_ms, &r->src_seq);
  r->proc = intern(t, in->processor_id);
  r->target = intern(t, in->target);
  r->reason = (int8_t)in->reason;
  r->strategy = (int8_t)in->strategy;
  r->transport = (int8_t)in->transport;
  r->outcome = (uint8_t)in->outcome;
  copy_cut(r->frame_id, sizeof r->frame_id, in->frame_id, &r->id_len, &r->id_cut);
  copy_cut(r->camera_id, sizeof r->camera_id, in->camera_id, NULL, NULL);
  t->head = (t->head + 1) % t->cap;
  if (t->count < t->cap) t->count++;
}

static bool same_id(const struct rec *r, const char *id, size_t n)
{
  if (n <= FB_TRACE_ID_MAX) return !r->id_cut && r->id_len == n && !memcmp(r->frame_id, id, n);
  return r->id_cut && !memcmp(r->frame_id, id, FB_TRACE_ID_MAX);
}

static void fill(const struct fb_trace *t, const struct rec *r, struct fb_trace_record *out)
{
  memcpy(out->frame_id, r->frame_id, r->id_len);
  out->frame_id[r->id_len] = '\0';
  out->frame_id_cut = r->id_cut;
  size_t cn = strnlen(r->camera_id, sizeof r->camera_id);
  memcpy(out->camera_id, r->camera_id, cn);
  out->camera_id[cn] = '\0';
  snprintf(out->source_id, sizeof out->source_id, "%" PRIu64 "-%" PRIu64, r->src_ms, r->src_seq);
  out->outcome = (enum fb_trace_outcome)r->outcome;
  out->reason = r->reason;
  out->strategy = r->strategy;
  out->transport = r->transport;
  out->processor_id = name_of(t, r->proc);
  out->target = name_of(t, r->target);
  out->routed_at_ms = r->routed_at_ms;
  out->latency_ms = r->src_ms ? r->routed_at_ms - (int64_t)r->src_ms : 0;
}

bool fb_trace_find(struct fb_trace *t, const char *id, size_t n, struct fb_trace_record *out)
{
  uint64_t h = hash_bytes(id, n);
  bool found = false;
  pthread_mutex_lock(&t->lock);
  for (size_t k = 1; k <= t->count && !found; k++) {
    size_t i = (t->head + t->cap - k) % t->cap;
    if (t->hashes[i] == h && same_id(&t->recs[i], id, n)) {
      fill(t, &t->recs[i], out);
      found = true;
    }
  }
  pthread_mutex_unlock(&t->lock);
  return found;
}

void fb_trace_window(struct fb_trace *t, size_t *frames, int64_t *oldest_ms)
{
  pthread_mutex_lock(&t->lock);
  *frames = t->count;
  size_t oldest = (t->head + t->cap - t->count) % t->cap;
  *oldest_ms = t->count ? t->recs[oldest].routed_at_ms : 0;
  pthread_mutex_unlock(&t->lock);
}
