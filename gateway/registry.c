/*
 * Processor registrations and registry snapshots (see registry.h).
 * Threads: fb_registry fields are guarded by `lock`; snapshots and processors
 * are immutable and reference-counted, so readers need no lock.
 */
#include "framebuffer/registry.h"

#include "framebuffer/sink.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"

#define STREAM_KEY_MAX 256
#define SUBJECT_MAX    256

/* ============================================================ processors */

static const char *const health_names[] = {"healthy", "stale", "dead"};

const char *fb_health_name(enum fb_health h)
{
  return (unsigned)h < 3 ? health_names[h] : "unknown";
}

const char *fb_transport_name(enum fb_transport t)
{
  return (unsigned)t < FB_SINKS_MAX && fb_sink_list[t] ? fb_sink_list[t]->name : "unknown";
}

bool fb_proc_id_is_valid(const char *id, size_t n)
{
  if (n < 1 || n > FB_PROC_ID_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == ':' || c == '-'))
      return false;
  }
  return true;
}

/* A Redis key or NATS subject given by a user: printable, no spaces. */
static bool is_token(const char *s, size_t max)
{
  size_t n = strlen(s);
  if (!n || n > max) return false;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f) return false;
  return true;
}

static bool is_subject(const char *s)
{
  if (!is_token(s, SUBJECT_MAX) || s[0] == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
    return false;
  return !strpbrk(s, "*>"); /* a publish subject has no wildcards */
}

/* The members a registration body may have. The first block is the
 * registration; the second is what the API shows and a client may send
 * back as it got it (ignored: runtime state is never taken from a body). */
static const char *const known_fields[] = {"id",
                                           "capabilities",
                                           "capacity",
                                           "queue",
                                           "endpoint",
                                           "health_endpoint",
                                           "metadata",
                                           "transport",
                                           "subject",
                                           "result_stream",
                                           "weight",
                                           "max_queue",
                                           "heartbeat_interval_ms",
                                           "status",
                                           "last_heartbeat",
                                           "frames_routed",
                                           "queue_depth",
                                           "registered_at_ms",
                                           NULL};

#define EDITS_MAX 3

/* Edit distance (optimal string alignment: insert, delete, substitute, swap
 * neighbours), case-insensitive, of two short names; larger than EDITS_MAX
 * when either is longer than 64. */
static int edits(const char *a, const char *b)
{
  size_t an = strlen(a), bn = strlen(b);
  if (an > 64 || bn > 64) return EDITS_MAX + 1;
  int d[65][65];
  for (size_t i = 0; i <= an; i++)
    d[i][0] = (int)i;
  for (size_t j = 0; j <= bn; j++)
    d[0][j] = (int)j;
  for (size_t i = 1; i <= an; i++)
    for (size_t j = 1; j <= bn; j++) {
      int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
      int v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
          tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[an][bn];
}

const char *fb_closest_name(const char *given, const char *const *names)
{
  size_t len = strlen(given);
  /* A third of the name may be wrong, at most EDITS_MAX characters. */
  int allowed = len >= 3 * EDITS_MAX ? EDITS_MAX : len >= 3 ? (int)(len / 3) : 0;
  const char *best = NULL;
  int best_d = allowed + 1;
  for (size_t k = 0; names[k]; k++) {
    int d = edits(given, names[k]);
    if (!strcasecmp(given, names[k])) d = 0;
    if (d < best_d) {
      best = names[k];
      best_d = d;
    }
  }
  return best;
}

#define UNKNOWN_NAMED_MAX 5 /* unknown members named in one answer */

int fb_proc_check_fields(const json_t *body, char *why, size_t n)
{
  if (!json_is_object(body)) return 0; /* fb_proc_from_json says what is wrong */
  size_t unknown = 0, len = 0;
  const char *key;
  json_t *v;
  why[0] = '\0';
  json_object_foreach((json_t *)body, key, v)
  {
    bool ok = false;
    for (size_t k = 0; known_fields[k] && !ok; k++)
      ok = !strcmp(key, known_fields[k]);
    if (ok) continue;
    if (++unknown > UNKNOWN_NAMED_MAX) continue;
    const char *near = fb_closest_name(key, known_fields);
    len = strlen(why);
    if (len + 1 < n)
      snprintf(why + len, n - len, "%s\"%.64s\"%s%s%s", unknown > 1 ? ", " : "", key,
               near ? " (did you mean \"" : "", near ? near : "", near ? "\"?)" : "");
  }
  if (!unknown) return 0;
  char names[400];
  snprintf(names, sizeof names, "%s", why);
  if (unknown > UNKNOWN_NAMED_MAX)
    snprintf(why, n, "unknown fields: %s and %zu more", names, unknown - UNKNOWN_NAMED_MAX);
  else
    snprintf(why, n, "unknown field%s: %s", unknown > 1 ? "s" : "", names);
  return -EINVAL;
}

int fb_proc_check_new(const struct fb_proc *p, char *why, size_t n)
{
  if (p->transport == FB_TRANSPORT_NATS && strchr(p->id, '.')) {
    snprintf(why, n,
             "id must not contain '.' with transport nats: the id is one token of the subjects "
             "processors.heartbeat.<id> and frames.results.<id> and names its JetStream "
             "consumer (use '-' or '_' instead)");
    return -EINVAL;
  }
  return 0;
}

static struct fb_proc_live *live_new(void)
{
  struct fb_proc_live *l = calloc(1, sizeof *l);
  if (!l) return NULL;
  atomic_init(&l->refs, 1);
  l->known_since_ms = fb_wall_ms();
  return l;
}

static void live_release(struct fb_proc_live *l)
{
  if (l && atomic_fetch_sub(&l->refs, 1) == 1) free(l);
}

void fb_proc_release(struct fb_proc *p)
{
  if (!p || atomic_fetch_sub(&p->refs, 1) != 1) return;
  free(p->id);
  for (size_t i = 0; i < p->ncaps; i++)
    free(p->caps[i]);
  free(p->caps);
  free(p->stream);
  free(p->subject);
  free(p->result_stream);
  json_decref(p->doc);
  free(p->stored);
  free(p->source);
  live_release(p->live);
  free(p);
}

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    snprintf(why, n, __VA_ARGS__);                                                                 \
    goto fail;                                                                                     \
  } while (0)

/* Reads an optional integer member: absent or null keeps *out. */
static int opt_int(const json_t *body, const char *key, int64_t min, int64_t max, int64_t *out,
                   char *why, size_t n)
{
  json_t *v = json_object_get(body, key);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v)) FAIL("%s must be an integer", key);
  int64_t x = json_integer_value(v);
  if (x < min || x > max)
    FAIL("%s must be between %lld and %lld", key, (long long)min, (long long)max);
  *out = x;
  return 0;
fail:
  return -EINVAL;
}

/* Reads an optional string member: absent or null gives NULL. */
static int opt_str(const json_t *body, const char *key, const char **out, char *why, size_t n)
{
  json_t *v = json_object_get(body, key);
  *out = NULL;
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v)) FAIL("%s must be a string", key);
  *out = json_string_value(v);
  return 0;
fail:
  return -EINVAL;
}

int fb_proc_from_json(struct fb_proc **out, const json_t *body, const char *input_stream, char *why,
                      size_t n)
{
  struct fb_proc *p = NULL;
  json_t *doc = NULL, *caps = NULL;
  *out = NULL;
  if (!json_is_object(body)) FAIL("body must be a JSON object");

  /* id */
  json_t *jid = json_object_get(body, "id");
  if (!jid || json_is_null(jid)) FAIL("id is required");
  if (!json_is_string(jid)) FAIL("id must be a string");
  const char *id = json_string_value(jid);
  if (!fb_proc_id_is_valid(id, json_string_length(jid)))
    FAIL("id must be 1-128 characters of A-Z a-z 0-9 . _ : -");

  /* capabilities */
  json_t *jcaps = json_object_get(body, "capabilities");
  if (!jcaps || json_is_null(jcaps)) FAIL("capabilities is required");
  if (!json_is_array(jcaps)) FAIL("capabilities must be an array of strings");
  size_t ncaps = json_array_size(jcaps);
  if (!ncaps) FAIL("capabilities must not be empty");
  if (ncaps > FB_PROC_MAX_CAPS) FAIL("at most %d capabilities", FB_PROC_MAX_CAPS);
  for (size_t i = 0; i < ncaps; i++) {
    json_t *c = json_array_get(jcaps, i);
    if (!json_is_string(c)) FAIL("capabilities[%zu] must be a string", i);
    if (!is_token(json_string_value(c), 128))
      FAIL("capabilities[%zu] must be 1-128 printable characters without spaces", i);
  }
  /* Each capability once, in the order first given. */
  caps = json_array();
  if (!caps) FAIL("out of memory");
  for (size_t i = 0; i < ncaps; i++) {
    json_t *c = json_array_get(jcaps, i);
    bool seen = false;
    for (size_t j = 0; j < json_array_size(caps) && !seen; j++)
      seen = json_equal(json_array_get(caps, j), c);
    if (!seen) json_array_append(caps, c);
  }
  ncaps = json_array_size(caps);

  /* capacity */
  json_t *jcap = json_object_get(body, "capacity");
  if (!jcap || json_is_null(jcap)) FAIL("capacity is required");
  if (!json_is_integer(jcap) || json_integer_value(jcap) <= 0 || json_integer_value(jcap) > 1000000)
    FAIL("capacity must be an integer between 1 and 1000000");

  /* queue */
  json_t *jqueue = json_object_get(body, "queue");
  if (!jqueue) FAIL("queue is required (\"\" for frames:ready:<id>)");
  if (!json_is_string(jqueue)) FAIL("queue must be a string");
  char stream[STREAM_KEY_MAX + 1];
  const char *queue = json_string_value(jqueue);
  if (!*queue) {
    snprintf(stream, sizeof stream, "frames:ready:%s", id);
  } else {
    if (!is_token(queue, STREAM_KEY_MAX))
      FAIL("queue must be a Redis key of 1-%d printable characters without spaces", STREAM_KEY_MAX);
    if (!strcmp(queue, input_stream) || !strcmp(queue, "frames:dlq") ||
        !strncmp(queue, "processors:", 11))
      FAIL("queue '%s' is reserved", queue);
    snprintf(stream, sizeof stream, "%s", queue);
  }

  /* endpoint, health_endpoint, metadata */
  const char *s;
  if (opt_str(body, "endpoint", &s, why, n)) goto fail;
  if (opt_str(body, "health_endpoint", &s, why, n)) goto fail;
  json_t *meta = json_object_get(body, "metadata");
  if (meta && !json_is_null(meta) && !json_is_object(meta)) FAIL("metadata must be an object");

  /* transport, subject, result_stream */
  enum fb_transport transport = FB_TRANSPORT_REDIS;
  if (opt_str(body, "transport", &s, why, n)) goto fail;
  if (s) {
    int sink = fb_sink_find(s);
    if (sink < 0) FAIL("transport must be \"redis\", \"nats\" or \"null\"");
    transport = (enum fb_transport)sink;
  }

  char subject[SUBJECT_MAX + 1];
  if (opt_str(body, "subject", &s, why, n)) goto fail;
  if (s && !is_subject(s)) FAIL("subject must be a NATS subject without wildcards");
  snprintf(subject, sizeof subject, "%s%s", s ? "" : "frames.ready.", s ? s : id);
  /* An id like ".x" makes no subject: fine off NATS, where it is stored as
   * null (a stored string would count as given, and be refused, on reading
   * the registration back). */
  bool usable = is_subject(subject);
  if (!usable && transport == FB_TRANSPORT_NATS)
    FAIL("id is not usable in a NATS subject; give a subject");

  if (opt_str(body, "result_stream", &s, why, n)) goto fail;
  if (s && (!is_token(s, STREAM_KEY_MAX) || !strcmp(s, input_stream)))
    FAIL("result_stream must be a Redis key other than the input stream");
  const char *result_stream = s ? s : "frames:results";

  /* numbers with defaults; metadata.queue_maxlen is the compat max_queue */
  int64_t weight = 1, max_queue = FB_DEFAULT_MAX_QUEUE, hb = FB_DEFAULT_HEARTBEAT_MS;
  if (opt_int(body, "weight", 1, 1000000, &weight, why, n)) goto fail;
  if (meta && json_is_object(meta) &&
      opt_int(meta, "queue_maxlen", 1, 100000000, &max_queue, why, n))
    goto fail;
  if (opt_int(body, "max_queue", 1, 100000000, &max_queue, why, n)) goto fail;
  if (opt_int(body, "heartbeat_interval_ms", 0, 86400000, &hb, why, n)) goto fail;

  /* The stored document: what came in (unknown members kept, as the old
   * service did) with every default made explicit. */
  doc = json_deep_copy(body);
  if (!doc) FAIL("out of memory");
  /* Runtime state is never taken from a body. */
  json_object_del(doc, "status");
  json_object_del(doc, "last_heartbeat");
  json_object_del(doc, "frames_routed");
  json_object_del(doc, "queue_depth");
  json_object_set_new(doc, "capabilities", json_deep_copy(caps));
  if (!json_object_get(doc, "endpoint")) json_object_set_new(doc, "endpoint", json_null());
  if (!json_object_get(doc, "health_endpoint"))
    json_object_set_new(doc, "health_endpoint", json_null());
  if (!meta || json_is_null(meta)) json_object_set_new(doc, "metadata", json_object());
  json_object_set_new(doc, "transport", json_string(fb_transport_name(transport)));
  json_object_set_new(doc, "subject", usable ? json_string(subject) : json_null());
  json_object_set_new(doc, "result_stream", json_string(result_stream));
  json_object_set_new(doc, "weight", json_integer(weight));
  json_object_set_new(doc, "max_queue", json_integer(max_queue));
  json_object_set_new(doc, "heartbeat_interval_ms", json_integer(hb));
  /* Set by the API on registration; absent from entries the old service
   * wrote, and then left absent so that re-reading them changes nothing. */
  int64_t registered_at = 0;
  json_t *jreg = json_object_get(body, "registered_at_ms");
  if (json_is_integer(jreg)) registered_at = json_integer_value(jreg);

  p = calloc(1, sizeof *p);
  if (!p) FAIL("out of memory");
  atomic_init(&p->refs, 1);
  p->doc = doc;
  doc = NULL; /* owned by p now */
  p->id = strdup(id);
  p->caps = calloc(ncaps, sizeof *p->caps);
  p->stream = strdup(stream);
  p->subject = strdup(subject);
  p->result_stream = strdup(result_stream);
  p->stored = json_dumps(p->doc, JSON_COMPACT | JSON_SORT_KEYS);
  p->live = live_new();
  if (!p->id || !p->caps || !p->stream || !p->subject || !p->result_stream || !p->stored ||
      !p->live)
    FAIL("out of memory");
  for (size_t i = 0; i < ncaps; i++) {
    p->caps[i] = strdup(json_string_value(json_array_get(caps, i)));
    if (!p->caps[i]) FAIL("out of memory");
    p->ncaps++;
  }
  p->capacity = json_integer_value(jcap);
  p->transport = transport;
  p->weight = weight;
  p->max_queue = max_queue;
  p->heartbeat_interval_ms = hb;
  p->registered_at_ms = registered_at;
  json_decref(caps);
  *out = p;
  return 0;

fail:
  json_decref(caps);
  json_decref(doc);
  fb_proc_release(p);
  return -EINVAL;
}

static json_t *iso_time(int64_t ms)
{
  if (!ms) return json_null();
  char buf[40];
  fb_iso_time(ms, buf, sizeof buf);
  return json_string(buf);
}

json_t *fb_proc_to_json(const struct fb_proc *p)
{
  json_t *o = json_deep_copy(p->doc);
  if (!o) return NULL;
  enum fb_health h = (enum fb_health)atomic_load(&p->live->status);
  json_object_set_new(o, "status", json_string(fb_health_name(h)));
  json_object_set_new(o, "last_heartbeat", iso_time(atomic_load(&p->live->last_heartbeat_ms)));
  json_object_set_new(o, "frames_routed",
                      json_integer((json_int_t)atomic_load(&p->live->frames_routed)));
  /* As last read, like /metrics: the same on every replica (see fb_proc_depth). */
  json_object_set_new(o, "queue_depth", json_integer(atomic_load(&p->live->queue_depth)));
  json_object_set_new(o, "queue", json_string(p->stream));
  return o;
}

static atomic_uint health_epoch;

enum fb_health fb_proc_set_health(const struct fb_proc *p, enum fb_health h)
{
  enum fb_health old = (enum fb_health)atomic_exchange(&p->live->status, (int)h);
  if (old != h) atomic_fetch_add(&health_epoch, 1);
  return old;
}

unsigned fb_health_epoch(void)
{
  return atomic_load_explicit(&health_epoch, memory_order_acquire);
}

int64_t fb_proc_depth(const struct fb_proc *p)
{
  const struct fb_proc_live *l = p->live;
  return atomic_load_explicit(&l->queue_depth, memory_order_relaxed) +
         atomic_load_explicit(&l->sent_since_poll, memory_order_relaxed) +
         atomic_load_explicit(&l->routed_in_flight, memory_order_relaxed);
}

/* ============================================================= snapshots */

static uint64_t hash_str(const char *s, size_t n)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

void fb_snapshot_release(struct fb_snapshot *s)
{
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
  for (size_t i = 0; i < s->n; i++)
    fb_proc_release(s->procs[i]);
  for (size_t i = 0; i < s->ngroups; i++) {
    free(s->groups[i].name);
    free(s->groups[i].members);
  }
  free(s->groups);
  free(s->all.members);
  free(s->hash);
  free(s->procs);
  free(s);
}

static int cmp_proc(const void *a, const void *b)
{
  return strcmp((*(struct fb_proc *const *)a)->id, (*(struct fb_proc *const *)b)->id);
}

static long group_find(const struct fb_snapshot *s, const char *name, size_t n)
{
  if (!s->hash) return -1;
  for (size_t i = hash_str(name, n) & s->hash_mask;; i = (i + 1) & s->hash_mask) {
    uint32_t g = s->hash[i];
    if (!g) return -1;
    const struct fb_cap_group *grp = &s->groups[g - 1];
    if (strlen(grp->name) == n && !memcmp(grp->name, name, n)) return (long)g - 1;
  }
}

struct fb_snapshot *fb_snapshot_build(struct fb_proc **procs, size_t n, uint64_t generation)
{
  struct fb_snapshot *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  atomic_init(&s->refs, 1);
  s->generation = generation;
  size_t ncaps = 0;
  if (n) {
    s->procs = calloc(n, sizeof *s->procs);
    s->all.members = calloc(n, sizeof *s->all.members);
    if (!s->procs || !s->all.members) goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    s->procs[i] = procs[i];
    atomic_fetch_add(&procs[i]->refs, 1);
    s->n++;
    ncaps += procs[i]->ncaps;
  }
  if (s->n) qsort(s->procs, s->n, sizeof *s->procs, cmp_proc);
  s->all.n = n;
  for (size_t i = 0; i < n; i++)
    s->all.members[i] = (uint32_t)i;

  /* Capability groups, found through a small open-addressing table. */
  size_t slots = 8;
  while (slots < ncaps * 2)
    slots *= 2;
  s->hash = calloc(slots, sizeof *s->hash);
  s->groups = calloc(ncaps ? ncaps : 1, sizeof *s->groups);
  if (!s->hash || !s->groups) goto fail;
  s->hash_mask = slots - 1;
  for (size_t i = 0; i < s->n; i++) {
    for (size_t c = 0; c < s->procs[i]->ncaps; c++) {
      const char *name = s->procs[i]->caps[c];
      size_t len = strlen(name);
      long g = group_find(s, name, len);
      if (g < 0) {
        g = (long)s->ngroups;
        struct fb_cap_group *grp = &s->groups[s->ngroups];
        grp->name = strdup(name);
        grp->members = calloc(s->n, sizeof *grp->members);
        if (!grp->name || !grp->members) {
          free(grp->name);
          free(grp->members);
          goto fail;
        }
        s->ngroups++;
        size_t slot = hash_str(name, len) & s->hash_mask;
        while (s->hash[slot])
          slot = (slot + 1) & s->hash_mask;
        s->hash[slot] = (uint32_t)s->ngroups;
      }
      struct fb_cap_group *grp = &s->groups[g];
      /* A processor listing a capability twice is a member once. */
      if (!grp->n || grp->members[grp->n - 1] != i) grp->members[grp->n++] = (uint32_t)i;
    }
  }
  return s;

fail:
  fb_snapshot_release(s);
  return NULL;
}

int fb_snapshot_find(const struct fb_snapshot *s, const char *id)
{
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(s->procs[mid]->id, id);
    if (!c) return (int)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

/* Decodes the JSON escapes of a short string into `out`. Returns its length
 * or -1 when it does not fit or holds an escape outside the BMP. */
static long unescape(struct fb_str in, char *out, size_t cap)
{
  size_t o = 0;
  for (size_t i = 0; i < in.n; i++) {
    if (o + 4 > cap) return -1;
    char c = in.p[i];
    if (c != '\\') {
      out[o++] = c;
      continue;
    }
    c = in.p[++i];
    switch (c) {
    case 'b': out[o++] = '\b'; break;
    case 'f': out[o++] = '\f'; break;
    case 'n': out[o++] = '\n'; break;
    case 'r': out[o++] = '\r'; break;
    case 't': out[o++] = '\t'; break;
    case 'u': {
      unsigned v = (unsigned)strtoul(
          (char[5]){in.p[i + 1], in.p[i + 2], in.p[i + 3], in.p[i + 4], 0}, NULL, 16);
      i += 4;
      if (v >= 0xd800 && v <= 0xdfff) return -1;
      if (v < 0x80)
        out[o++] = (char)v;
      else if (v < 0x800) {
        out[o++] = (char)(0xc0 | (v >> 6));
        out[o++] = (char)(0x80 | (v & 0x3f));
      } else {
        out[o++] = (char)(0xe0 | (v >> 12));
        out[o++] = (char)(0x80 | ((v >> 6) & 0x3f));
        out[o++] = (char)(0x80 | (v & 0x3f));
      }
      break;
    }
    default: out[o++] = c; break; /* \" \\ \/ */
    }
  }
  return (long)o;
}

const struct fb_cap_group *fb_snapshot_group(const struct fb_snapshot *s, struct fb_str type,
                                             bool escaped)
{
  if (!type.n) return &s->all;
  char tmp[256];
  if (escaped) {
    long n = unescape(type, tmp, sizeof tmp);
    if (n < 0) return NULL;
    type.p = tmp;
    type.n = (size_t)n;
  }
  long g = group_find(s, type.p, type.n);
  return g < 0 ? NULL : &s->groups[g];
}

/* ============================================================== registry */

/* A removed processor's count, kept for when it comes back. */
struct retired {
  char *id;
  uint64_t frames_routed;
};

struct fb_registry {
  pthread_mutex_t lock;
  struct fb_proc **procs;      /* guarded by lock; unordered */
  size_t n, cap;               /* guarded by lock */
  uint64_t local_version;      /* guarded by lock */
  struct fb_snapshot *current; /* guarded by lock */
  atomic_uint_fast64_t generation;
  struct retired retired[FB_RETIRED_MAX]; /* guarded by lock; a ring, oldest overwritten */
  size_t retired_next;                    /* guarded by lock */
};

int fb_registry_create(struct fb_registry **out)
{
  struct fb_registry *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  pthread_mutex_init(&r->lock, NULL);
  r->current = fb_snapshot_build(NULL, 0, 0);
  if (!r->current) {
    free(r);
    return -ENOMEM;
  }
  *out = r;
  return 0;
}

void fb_registry_destroy(struct fb_registry *r)
{
  if (!r) return;
  for (size_t i = 0; i < FB_RETIRED_MAX; i++)
    free(r->retired[i].id);
  for (size_t i = 0; i < r->n; i++)
    fb_proc_release(r->procs[i]);
  free(r->procs);
  fb_snapshot_release(r->current);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* Publishes a snapshot of r->procs. Called with the lock held. On failure
 * to allocate the old snapshot stays, which is stale but consistent. */
static void publish_locked(struct fb_registry *r)
{
  uint64_t gen = atomic_load(&r->generation) + 1;
  struct fb_snapshot *s = fb_snapshot_build(r->procs, r->n, gen);
  if (!s) {
    fb_error("registry", "out of memory building a snapshot; routing keeps the previous one");
    return;
  }
  fb_snapshot_release(r->current);
  r->current = s;
  atomic_store(&r->generation, gen);
}

static long index_locked(struct fb_registry *r, const char *id)
{
  for (size_t i = 0; i < r->n; i++)
    if (!strcmp(r->procs[i]->id, id)) return (long)i;
  return -1;
}

/* Keeps the count of processor `p`, which is being removed. Lock held. */
static void retire_locked(struct fb_registry *r, const struct fb_proc *p)
{
  uint64_t routed = atomic_load(&p->live->frames_routed);
  if (!routed) return;
  struct retired *slot = &r->retired[r->retired_next];
  free(slot->id);
  slot->id = strdup(p->id);
  slot->frames_routed = routed;
  r->retired_next = (r->retired_next + 1) % FB_RETIRED_MAX;
}

/* A processor new to the registry goes on counting where its earlier
 * registration under the same id stopped. Lock held; `p` is not yet
 * published, so its live state is still its own. */
static void revive_locked(struct fb_registry *r, struct fb_proc *p)
{
  for (size_t i = 0; i < FB_RETIRED_MAX; i++) {
    struct retired *slot = &r->retired[i];
    if (!slot->id || strcmp(slot->id, p->id)) continue;
    atomic_fetch_add(&p->live->frames_routed, slot->frames_routed);
    p->live->rate_prev += slot->frames_routed; /* not a burst of frames */
    free(slot->id);
    slot->id = NULL;
    return;
  }
}

/* Inserts or replaces, carrying the live state over. Lock held. */
static int put_locked(struct fb_registry *r, struct fb_proc *p)
{
  long i = index_locked(r, p->id);
  if (i >= 0) {
    struct fb_proc *old = r->procs[i];
    if (old->live != p->live) {
      atomic_fetch_add(&old->live->refs, 1);
      live_release(p->live);
      p->live = old->live;
    }
    atomic_fetch_add(&p->refs, 1);
    r->procs[i] = p;
    fb_proc_release(old);
    return 0;
  }
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    struct fb_proc **np = realloc(r->procs, cap * sizeof *np);
    if (!np) return -ENOMEM;
    r->procs = np;
    r->cap = cap;
  }
  revive_locked(r, p);
  atomic_fetch_add(&p->refs, 1);
  r->procs[r->n++] = p;
  return 0;
}

void fb_registry_put(struct fb_registry *r, struct fb_proc *p)
{
  pthread_mutex_lock(&r->lock);
  if (put_locked(r, p) == 0) {
    r->local_version++;
    publish_locked(r);
  }
  pthread_mutex_unlock(&r->lock);
}

int fb_registry_remove(struct fb_registry *r, const char *id)
{
  pthread_mutex_lock(&r->lock);
  long i = index_locked(r, id);
  if (i >= 0) {
    retire_locked(r, r->procs[i]);
    fb_proc_release(r->procs[i]);
    r->procs[i] = r->procs[--r->n];
    r->local_version++;
    publish_locked(r);
  }
  pthread_mutex_unlock(&r->lock);
  return i >= 0 ? 0 : -ENOENT;
}

uint64_t fb_registry_local_version(struct fb_registry *r)
{
  pthread_mutex_lock(&r->lock);
  uint64_t v = r->local_version;
  pthread_mutex_unlock(&r->lock);
  return v;
}

int fb_registry_sync(struct fb_registry *r, struct fb_proc **procs, size_t n, uint64_t seen_version)
{
  int changed = 0;
  pthread_mutex_lock(&r->lock);
  if (r->local_version != seen_version) {
    pthread_mutex_unlock(&r->lock);
    return -EAGAIN;
  }
  /* Drop processors that are gone from Redis. */
  for (size_t i = 0; i < r->n;) {
    bool keep = false;
    for (size_t j = 0; j < n && !keep; j++)
      keep = !strcmp(r->procs[i]->id, procs[j]->id);
    if (keep) {
      i++;
      continue;
    }
    fb_info("registry", "processor %s was removed by another replica", r->procs[i]->id);
    retire_locked(r, r->procs[i]);
    fb_proc_release(r->procs[i]);
    r->procs[i] = r->procs[--r->n];
    changed = 1;
  }
  /* Add new ones and replace changed ones. */
  for (size_t j = 0; j < n; j++) {
    long i = index_locked(r, procs[j]->id);
    if (i >= 0 && !strcmp(r->procs[i]->stored, procs[j]->stored)) continue;
    if (put_locked(r, procs[j]) == 0) {
      fb_info("registry", "processor %s %s from Redis", procs[j]->id,
              i >= 0 ? "updated" : "loaded");
      changed = 1;
    }
  }
  if (changed) publish_locked(r);
  pthread_mutex_unlock(&r->lock);
  return changed;
}

struct fb_snapshot *fb_registry_snapshot(struct fb_registry *r)
{
  pthread_mutex_lock(&r->lock);
  struct fb_snapshot *s = r->current;
  atomic_fetch_add(&s->refs, 1);
  pthread_mutex_unlock(&r->lock);
  return s;
}

uint64_t fb_registry_generation(struct fb_registry *r)
{
  return atomic_load(&r->generation);
}
