/*
 * Shadow routing (see shadows.h): the pure rules, the fleet's set kept in
 * Redis, the per-shadow counts and the API.
 */
#include "framebuffer/shadows.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/app.h"
#include "framebuffer/log.h"

#define COUNTED_MAX 64 /* shadow names with counts, since start */

/* ================================================================ rules */

bool fb_shadow_name_ok(const char *name)
{
  size_t n = strlen(name);
  if (n < 1 || n > FB_SHADOW_NAME_MAX) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i])) return false;
  return true;
}

/* A glob fnmatch takes as meant: printable, and every '[' closed. */
static bool glob_ok(const char *g)
{
  for (const char *p = g; *p; p++) {
    if ((unsigned char)*p < 0x20 || *p == 0x7f) return false;
    if (*p == '\\' && p[1]) {
      p++;
      continue;
    }
    if (*p == '[') {
      const char *q = p + 1;
      if (*q == '!' || *q == '^') q++;
      if (*q == ']') q++;
      while (*q && *q != ']')
        q++;
      if (!*q) return false;
      p = q;
    }
  }
  return true;
}

static int copy_text(char *dst, size_t cap, const json_t *v, const char *what, char *why, size_t n)
{
  if (!json_is_string(v) || json_string_length(v) >= cap) {
    snprintf(why, n, "%s must be a string of at most %zu bytes", what, cap - 1);
    return -EINVAL;
  }
  memcpy(dst, json_string_value(v), json_string_length(v) + 1);
  return 0;
}

static int match_from_json(const json_t *m, struct fb_shadow *s, char *why, size_t n)
{
  if (!m) return 0;
  if (!json_is_object(m)) {
    snprintf(why, n, "match must be an object with detection_type and/or camera_id");
    return -EINVAL;
  }
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)m, k, v)
  {
    if (!strcmp(k, "detection_type")) {
      if (copy_text(s->detection_type, sizeof s->detection_type, v, "match.detection_type", why, n))
        return -EINVAL;
    } else if (!strcmp(k, "camera_id")) {
      if (copy_text(s->camera_glob, sizeof s->camera_glob, v, "match.camera_id", why, n))
        return -EINVAL;
      if (!glob_ok(s->camera_glob)) {
        snprintf(why, n,
                 "match.camera_id '%s' is not a valid glob (an unclosed '[' or a control "
                 "character)",
                 s->camera_glob);
        return -EINVAL;
      }
    } else {
      snprintf(why, n, "unknown field match.%s (known: detection_type, camera_id)", k);
      return -EINVAL;
    }
  }
  return 0;
}

int fb_shadow_from_json(const char *name, const json_t *body, struct fb_shadow *out, char *why,
                        size_t n)
{
  memset(out, 0, sizeof *out);
  if (!fb_shadow_name_ok(name)) {
    snprintf(why, n, "a shadow name is 1 to %d of A-Z a-z 0-9 . _ -", FB_SHADOW_NAME_MAX);
    return -EINVAL;
  }
  snprintf(out->name, sizeof out->name, "%s", name);
  out->percent = 100;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)body, k, v)
  {
    if (!strcmp(k, "match")) {
      if (match_from_json(v, out, why, n)) return -EINVAL;
    } else if (!strcmp(k, "target")) {
      if (copy_text(out->target, sizeof out->target, v, "target", why, n)) return -EINVAL;
    } else if (!strcmp(k, "percent")) {
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100) {
        snprintf(why, n, "percent must be an integer from 0 to 100");
        return -EINVAL;
      }
      out->percent = (int)json_integer_value(v);
    } else if (!strcmp(k, "sample")) {
      const char *s = json_string_value(v);
      if (!s || (strcmp(s, "camera") && strcmp(s, "frame"))) {
        snprintf(why, n, "sample must be \"camera\" (whole cameras) or \"frame\"");
        return -EINVAL;
      }
      out->by_frame = !strcmp(s, "frame");
    } else if (strcmp(k, "name")) { /* a GET's body can be PUT back */
      snprintf(why, n, "unknown field %s (known: match, target, percent, sample)", k);
      return -EINVAL;
    }
  }
  if (!out->target[0]) {
    snprintf(why, n, "target (a processor id) is required");
    return -EINVAL;
  }
  return 0;
}

json_t *fb_shadow_to_json(const struct fb_shadow *s)
{
  json_t *match = json_object();
  if (s->detection_type[0])
    json_object_set_new(match, "detection_type", json_string(s->detection_type));
  if (s->camera_glob[0]) json_object_set_new(match, "camera_id", json_string(s->camera_glob));
  return json_pack("{s:s, s:o, s:s, s:i, s:s}", "name", s->name, "match", match, "target",
                   s->target, "percent", s->percent, "sample", s->by_frame ? "frame" : "camera");
}

static uint64_t mix(const char *a, struct fb_str b)
{
  uint64_t h = UINT64_C(1469598103934665603);
  for (const char *p = a; *p; p++)
    h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
  h = (h ^ 0xff) * UINT64_C(1099511628211);
  for (size_t i = 0; i < b.n; i++)
    h = (h ^ (unsigned char)b.p[i]) * UINT64_C(1099511628211);
  return h ^ (h >> 29);
}

bool fb_shadow_matches(const struct fb_shadow *s, const struct fb_frame *f)
{
  if (!s->percent) return false;
  if (s->detection_type[0] &&
      (f->detection_escaped || !fb_str_eq(f->detection_type, s->detection_type)))
    return false;
  if (s->camera_glob[0]) {
    char cam[FB_SHADOW_MATCH_MAX * 2];
    if (f->camera_id.n >= sizeof cam) return false;
    memcpy(cam, f->camera_id.p, f->camera_id.n);
    cam[f->camera_id.n] = '\0';
    if (fnmatch(s->camera_glob, cam, 0)) return false;
  }
  if (s->percent >= 100) return true;
  /* By the shadow's name too, so that two shadows at 50% take different halves. */
  return mix(s->name, s->by_frame ? f->frame_id : f->camera_id) % 100 < (uint64_t)s->percent;
}

/* ============================================================== the set */

struct counted {
  char name[FB_SHADOW_NAME_MAX + 1];
  atomic_uint_fast64_t n[FB_SHADOW_OUTCOMES];
};

struct fb_shadows {
  char k_hash[FB_NAME_MAX + 32], k_gen[FB_NAME_MAX + 32];
  pthread_mutex_t lock;
  struct fb_shadow_set *set; /* guarded by lock */
  atomic_uint gen;           /* bumped after each change of `set` */
  long long stored_gen;      /* control thread: the generation read last, -1 never */
  struct counted counted[COUNTED_MAX];
  atomic_size_t ncounted; /* entries are added under lock, then published */
};

static const char *const outcome_names[FB_SHADOW_OUTCOMES] = {"sent", "target_full", "target_dead",
                                                              "failed"};

static struct fb_shadow_set *set_new(size_t n)
{
  struct fb_shadow_set *s = calloc(1, sizeof *s + n * sizeof s->v[0]);
  if (s) atomic_init(&s->refs, 1);
  return s;
}

void fb_shadow_set_release(struct fb_shadow_set *set)
{
  if (set && atomic_fetch_sub(&set->refs, 1) == 1) free(set);
}

int fb_shadows_create(struct fb_shadows **out, const struct fb_config *cfg)
{
  struct fb_shadows *sh = calloc(1, sizeof *sh);
  if (!sh || !(sh->set = set_new(0))) {
    free(sh);
    return -ENOMEM;
  }
  snprintf(sh->k_hash, sizeof sh->k_hash, "frame-buffer:%s:shadows", cfg->consumer_group);
  snprintf(sh->k_gen, sizeof sh->k_gen, "frame-buffer:%s:shadows-generation", cfg->consumer_group);
  pthread_mutex_init(&sh->lock, NULL);
  sh->stored_gen = -1;
  *out = sh;
  return 0;
}

void fb_shadows_destroy(struct fb_shadows *sh)
{
  if (!sh) return;
  fb_shadow_set_release(sh->set);
  pthread_mutex_destroy(&sh->lock);
  free(sh);
}

unsigned fb_shadows_gen(const struct fb_shadows *sh)
{
  return atomic_load(&sh->gen);
}

struct fb_shadow_set *fb_shadows_get(struct fb_shadows *sh)
{
  pthread_mutex_lock(&sh->lock);
  struct fb_shadow_set *s = sh->set;
  atomic_fetch_add(&s->refs, 1);
  pthread_mutex_unlock(&sh->lock);
  return s;
}

/* The counts of `name`, added when new; NULL past COUNTED_MAX names. */
static struct counted *counted_of(struct fb_shadows *sh, const char *name)
{
  size_t n = atomic_load(&sh->ncounted);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(sh->counted[i].name, name)) return &sh->counted[i];
  pthread_mutex_lock(&sh->lock);
  struct counted *c = NULL;
  n = atomic_load(&sh->ncounted);
  for (size_t i = 0; i < n && !c; i++)
    if (!strcmp(sh->counted[i].name, name)) c = &sh->counted[i];
  if (!c && n < COUNTED_MAX) {
    c = &sh->counted[n];
    snprintf(c->name, sizeof c->name, "%s", name);
    atomic_store(&sh->ncounted, n + 1);
  }
  pthread_mutex_unlock(&sh->lock);
  return c;
}

void fb_shadows_count(struct fb_shadows *sh, const char *name, enum fb_shadow_outcome o, uint64_t n)
{
  struct counted *c = counted_of(sh, name);
  if (c) atomic_fetch_add_explicit(&c->n[o], n, memory_order_relaxed);
}

int fb_shadows_render_metrics(struct fb_shadows *sh, struct fb_buf *out)
{
  fb_buf_puts(out, "# HELP frame_buffer_shadow_frames_total Shadow copies, by shadow and what "
                   "became of them.\n# TYPE frame_buffer_shadow_frames_total counter\n");
  size_t n = atomic_load(&sh->ncounted);
  for (size_t i = 0; i < n; i++)
    for (int o = 0; o < FB_SHADOW_OUTCOMES; o++)
      fb_buf_printf(out, "frame_buffer_shadow_frames_total{shadow=\"%s\",outcome=\"%s\"} %llu\n",
                    sh->counted[i].name, outcome_names[o],
                    (unsigned long long)atomic_load(&sh->counted[i].n[o]));
  return out->truncated ? -ENOSPC : 0;
}

json_t *fb_shadows_json(struct fb_shadows *sh)
{
  struct fb_shadow_set *set = fb_shadows_get(sh);
  json_t *arr = json_array();
  for (size_t i = 0; i < set->n; i++) {
    json_t *o = fb_shadow_to_json(&set->v[i]);
    struct counted *c = counted_of(sh, set->v[i].name);
    json_t *counts = json_object();
    for (int k = 0; k < FB_SHADOW_OUTCOMES; k++)
      json_object_set_new(counts, outcome_names[k],
                          json_integer(c ? (json_int_t)atomic_load(&c->n[k]) : 0));
    json_object_set_new(o, "copies", counts);
    json_array_append_new(arr, o);
  }
  fb_shadow_set_release(set);
  return arr;
}

static void install(struct fb_shadows *sh, struct fb_shadow_set *next)
{
  pthread_mutex_lock(&sh->lock);
  struct fb_shadow_set *old = sh->set;
  sh->set = next;
  pthread_mutex_unlock(&sh->lock);
  atomic_fetch_add(&sh->gen, 1);
  fb_shadow_set_release(old);
}

/* Rebuilds the set from the hash's HGETALL reply. */
static void load(struct fb_shadows *sh, const redisReply *h)
{
  size_t n = h->elements / 2 < FB_SHADOWS_MAX ? h->elements / 2 : FB_SHADOWS_MAX;
  struct fb_shadow_set *next = set_new(n);
  if (!next) return;
  for (size_t i = 0; i < n; i++) {
    const char *name = h->element[2 * i]->str;
    json_t *doc = json_loads(h->element[2 * i + 1]->str ? h->element[2 * i + 1]->str : "", 0, NULL);
    char why[200];
    if (name && json_is_object(doc) &&
        !fb_shadow_from_json(name, doc, &next->v[next->n], why, sizeof why))
      next->n++;
    else
      fb_warn("shadows", "shadow %s in Redis is not valid and is ignored", name ? name : "?");
    json_decref(doc);
  }
  install(sh, next);
}

/* Reads the hash and installs it; -EIO when Redis did not answer. */
static int reload(struct fb_shadows *sh, struct fb_redis *r)
{
  redisReply *rep = fb_redis_cmd(r, "HGETALL %s", sh->k_hash);
  if (!rep) return -EIO;
  if (rep->type == REDIS_REPLY_ARRAY) load(sh, rep);
  freeReplyObject(rep);
  return 0;
}

void fb_shadows_poll(struct fb_shadows *sh, struct fb_redis *r)
{
  redisReply *rep = fb_redis_cmd(r, "GET %s", sh->k_gen);
  if (!rep) return;
  long long g = rep->type == REDIS_REPLY_STRING ? atoll(rep->str) : 0;
  freeReplyObject(rep);
  if (g != sh->stored_gen && !reload(sh, r)) sh->stored_gen = g;
}

/* ================================================================== API */

static struct fb_shadows *shadows_of(struct fb_api *api)
{
  return api->app->shadows;
}

void fb_api_shadows_list(struct fb_api *api, const struct fb_request *req, const char *param,
                         struct fb_response *resp)
{
  fb_api_respond_json(resp, 200, json_pack("{s:o}", "shadows", fb_shadows_json(shadows_of(api))));
}

/* Frees a reply; false when there was none (the connection failed). */
static bool answered(redisReply *rep)
{
  if (!rep) return false;
  freeReplyObject(rep);
  return true;
}

/* Runs `argv` then INCR of the generation in one MULTI/EXEC, retrying once
 * on a fresh connection; then reloads the set here at once. 0 or -EIO. */
static int store(struct fb_api *api, int argc, const char **argv)
{
  struct fb_shadows *sh = shadows_of(api);
  int attempt = 0, rc;
  do {
    rc = -EIO;
    /* MULTI, the change, INCR of the generation, EXEC: queued replies
     * first, EXEC's last. */
    bool alive = answered(fb_redis_cmd(&api->redis, "MULTI")) &&
                 answered(fb_redis_argv(&api->redis, argc, argv, NULL)) &&
                 answered(fb_redis_cmd(&api->redis, "INCR %s", sh->k_gen));
    redisReply *rep = alive ? fb_redis_cmd(&api->redis, "EXEC") : NULL;
    if (rep && rep->type == REDIS_REPLY_ARRAY) rc = 0;
    if (rep) freeReplyObject(rep);
  } while (rc && fb_api_retry(api, attempt++));
  if (!rc) rc = reload(sh, &api->redis);
  return rc;
}

/* Is shadow `name` in the set in effect? *count: how many there are. */
static bool in_effect(struct fb_shadows *sh, const char *name, size_t *count)
{
  struct fb_shadow_set *set = fb_shadows_get(sh);
  bool found = false;
  for (size_t i = 0; i < set->n && !found; i++)
    found = !strcmp(set->v[i].name, name);
  *count = set->n;
  fb_shadow_set_release(set);
  return found;
}

void fb_api_shadow_put(struct fb_api *api, const struct fb_request *req, const char *param,
                       struct fb_response *resp)
{
  json_t *body = fb_api_json_body(req, resp);
  if (!body) return;
  struct fb_shadow s;
  char why[300];
  int rc = fb_shadow_from_json(param, body, &s, why, sizeof why);
  json_decref(body);
  if (rc) {
    fb_api_error(resp, 422, why);
    return;
  }
  struct fb_snapshot *snap = fb_registry_snapshot(api->app->registry);
  bool known = fb_snapshot_find(snap, s.target) >= 0;
  fb_snapshot_release(snap);
  if (!known) {
    snprintf(why, sizeof why, "target '%s' is not a registered processor", s.target);
    fb_api_error(resp, 422, why);
    return;
  }
  size_t count;
  bool exists = in_effect(shadows_of(api), s.name, &count);
  if (!exists && count >= FB_SHADOWS_MAX) {
    snprintf(why, sizeof why, "at most %d shadows", FB_SHADOWS_MAX);
    fb_api_error(resp, 422, why);
    return;
  }
  json_t *doc = fb_shadow_to_json(&s);
  char *text = json_dumps(doc, JSON_COMPACT);
  const char *argv[] = {"HSET", shadows_of(api)->k_hash, s.name, text ? text : "{}"};
  rc = text ? store(api, 4, argv) : -ENOMEM;
  free(text);
  if (rc) {
    json_decref(doc);
    fb_api_error(resp, 503, "shadows unavailable: Redis did not answer");
    return;
  }
  fb_info("shadows", "shadow %s: %d%% of %s%s%s frames (by %s) copied to %s", s.name, s.percent,
          s.detection_type[0] ? s.detection_type : "all", s.camera_glob[0] ? " camera " : "",
          s.camera_glob, s.by_frame ? "frame" : "camera", s.target);
  fb_api_respond_json(resp, exists ? 200 : 201, doc);
}

void fb_api_shadow_delete(struct fb_api *api, const struct fb_request *req, const char *param,
                          struct fb_response *resp)
{
  size_t count;
  if (!in_effect(shadows_of(api), param, &count)) {
    char why[160];
    snprintf(why, sizeof why, "no shadow named '%.64s'", param);
    fb_api_error(resp, 404, why);
    return;
  }
  const char *argv[] = {"HDEL", shadows_of(api)->k_hash, param};
  if (store(api, 3, argv)) {
    fb_api_error(resp, 503, "shadows unavailable: Redis did not answer");
    return;
  }
  fb_info("shadows", "shadow %s removed", param);
  resp->status = 204;
  fb_buf_reset(&resp->body);
}
