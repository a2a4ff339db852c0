/*
 * The fleet's routing settings (see settings.h). `lock` guards the settings
 * in effect; `gen` is bumped after each change, so the ingest thread needs
 * no lock to see that nothing changed.
 */
#include "framebuffer/settings.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"

#define MAX_MS (INT64_C(86400000) * 365)

static const char *const names[FB_SET_COUNT] = {"strategy", "overload_policy", "frame_max_age_ms",
                                                "slow_start_ms", "hash_bound"};

const char *fb_setting_name(enum fb_setting s)
{
  return (unsigned)s < FB_SET_COUNT ? names[s] : "unknown";
}

/* ================================================================ values */

/* "strategy, overload_policy, frame_max_age_ms, slow_start_ms, hash_bound" */
static const char *setting_list(char *out, size_t n)
{
  return fb_names_join(names, FB_SET_COUNT, out, n);
}

/* Sets setting `k` of `r` from a JSON value. Returns 0, or -EINVAL with
 * what is wrong in `why`. */
static int set_from_json(struct fb_routing *r, enum fb_setting k, const json_t *v, char *why,
                         size_t n)
{
  char list[FB_NAME_LIST_MAX];
  switch (k) {
  case FB_SET_STRATEGY:
    if (json_is_string(v) && !fb_strategy_parse(json_string_value(v), &r->strategy)) return 0;
    snprintf(why, n, "%s must be one of %s", names[k], fb_strategy_list(list, sizeof list));
    return -EINVAL;
  case FB_SET_OVERLOAD_POLICY:
    if (json_is_string(v) && !fb_overload_policy_parse(json_string_value(v), &r->overload_policy))
      return 0;
    snprintf(why, n, "%s must be one of %s", names[k], fb_overload_policy_list(list, sizeof list));
    return -EINVAL;
  case FB_SET_FRAME_MAX_AGE_MS:
  case FB_SET_SLOW_START_MS:
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_MS) {
      snprintf(why, n, "%s and %s must be integers >= 0 (0 = off)", names[FB_SET_FRAME_MAX_AGE_MS],
               names[FB_SET_SLOW_START_MS]);
      return -EINVAL;
    }
    *(k == FB_SET_FRAME_MAX_AGE_MS ? &r->frame_max_age_ms : &r->slow_start_ms) =
        json_integer_value(v);
    return 0;
  case FB_SET_HASH_BOUND:
    if (!json_is_number(v) || json_number_value(v) < 1.0 || json_number_value(v) > 100.0) {
      snprintf(why, n, "%s must be a number between 1.0 and 100", names[k]);
      return -EINVAL;
    }
    r->hash_bound = json_number_value(v);
    return 0;
  default: snprintf(why, n, "unknown setting"); return -EINVAL;
  }
}

/* Setting `k` of `r` as the text kept in Redis. */
static void to_text(const struct fb_routing *r, enum fb_setting k, char *out, size_t n)
{
  switch (k) {
  case FB_SET_STRATEGY: snprintf(out, n, "%s", fb_strategy_name(r->strategy)); break;
  case FB_SET_OVERLOAD_POLICY:
    snprintf(out, n, "%s", fb_overload_policy_name(r->overload_policy));
    break;
  case FB_SET_FRAME_MAX_AGE_MS: snprintf(out, n, "%lld", (long long)r->frame_max_age_ms); break;
  case FB_SET_SLOW_START_MS: snprintf(out, n, "%lld", (long long)r->slow_start_ms); break;
  case FB_SET_HASH_BOUND: snprintf(out, n, "%.17g", r->hash_bound); break;
  default: snprintf(out, n, "?"); break;
  }
}

/* Setting `k` of `r` from the text kept in Redis. 0 or -EINVAL. */
static int from_text(struct fb_routing *r, enum fb_setting k, const char *text)
{
  json_t *v = NULL;
  if (k == FB_SET_STRATEGY || k == FB_SET_OVERLOAD_POLICY)
    v = json_string(text);
  else
    v = json_loads(text, JSON_DECODE_ANY, NULL);
  char why[200];
  int rc = v ? set_from_json(r, k, v, why, sizeof why) : -EINVAL;
  json_decref(v);
  return rc;
}

int fb_routing_patch_from_json(const json_t *body, struct fb_routing_patch *out, char *why,
                               size_t n)
{
  char list[FB_NAME_LIST_MAX];
  memset(out, 0, sizeof *out);
  if (!json_is_object(body) || !json_object_size(body)) {
    snprintf(why, n, "no routing setting given (%s)", setting_list(list, sizeof list));
    return -EINVAL;
  }
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)body, key, v)
  {
    int k = 0;
    while (k < FB_SET_COUNT && strcmp(key, names[k]))
      k++;
    if (k < FB_SET_COUNT) {
      if (set_from_json(&out->v, (enum fb_setting)k, v, why, n)) return -EINVAL;
      out->set[k] = true;
      continue;
    }
    /* What GET answers besides the settings may come back in a PUT. */
    static const char *const read_only[] = {
        "max_deliveries", "batch_size", "strategies", "overload_policies", "source",
        "generation",     "updated_by", "request_id", "updated_at_ms",     NULL};
    bool known = false;
    for (const char *const *ro = read_only; *ro && !known; ro++)
      known = !strcmp(key, *ro);
    if (!known) {
      snprintf(why, n, "unknown routing setting (%s)", setting_list(list, sizeof list));
      return -EINVAL;
    }
  }
  return 0;
}

void fb_routing_diff(const struct fb_routing *a, const struct fb_routing *b, char *out, size_t n)
{
  size_t len = 0;
  out[0] = '\0';
  for (int k = 0; k < FB_SET_COUNT; k++) {
    char x[64], y[64];
    to_text(a, (enum fb_setting)k, x, sizeof x);
    to_text(b, (enum fb_setting)k, y, sizeof y);
    if (k == FB_SET_HASH_BOUND) { /* the short form people read */
      snprintf(x, sizeof x, "%g", a->hash_bound);
      snprintf(y, sizeof y, "%g", b->hash_bound);
    }
    if (!strcmp(x, y)) continue;
    int w = snprintf(out + len, len < n ? n - len : 0, "%s%s %s -> %s", len ? ", " : "", names[k],
                     x, y);
    if (w < 0 || (size_t)w >= n - len) break;
    len += (size_t)w;
  }
}

/* ============================================================== settings */

struct fb_settings {
  const struct fb_config *cfg;
  char key[FB_NAME_MAX + 32];
  pthread_mutex_t lock;
  struct fb_routing_info now; /* guarded by lock */
  atomic_uint gen;
  long long bad_generation; /* control thread: a stored value that did not parse was said */
};

static struct fb_routing defaults(const struct fb_config *c)
{
  return (struct fb_routing){c->strategy, c->overload_policy, c->frame_max_age_ms, c->slow_start_ms,
                             c->hash_bound};
}

int fb_settings_create(struct fb_settings **out, const struct fb_config *cfg)
{
  struct fb_settings *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->cfg = cfg;
  snprintf(s->key, sizeof s->key, "frame-buffer:%s:routing", cfg->consumer_group);
  pthread_mutex_init(&s->lock, NULL);
  s->now.r = defaults(cfg);
  atomic_init(&s->gen, 1);
  *out = s;
  return 0;
}

void fb_settings_destroy(struct fb_settings *s)
{
  if (!s) return;
  pthread_mutex_destroy(&s->lock);
  free(s);
}

unsigned fb_settings_gen(const struct fb_settings *s)
{
  return atomic_load(&s->gen);
}

void fb_settings_get(struct fb_settings *s, struct fb_routing_info *out)
{
  pthread_mutex_lock(&s->lock);
  *out = s->now;
  pthread_mutex_unlock(&s->lock);
}

/* Builds the settings in effect from a HGETALL reply of the hash. */
static void from_hash(struct fb_settings *s, const redisReply *h, struct fb_routing_info *out)
{
  memset(out, 0, sizeof *out);
  out->r = defaults(s->cfg);
  for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2) {
    const char *f = h->element[i]->str, *v = h->element[i + 1]->str;
    if (!f || !v) continue;
    if (!strcmp(f, "generation"))
      out->generation = strtoll(v, NULL, 10);
    else if (!strcmp(f, "updated_by"))
      snprintf(out->updated_by, sizeof out->updated_by, "%s", v);
    else if (!strcmp(f, "request_id"))
      snprintf(out->request_id, sizeof out->request_id, "%s", v);
    else if (!strcmp(f, "updated_at_ms"))
      out->updated_at_ms = strtoll(v, NULL, 10);
    for (int k = 0; k < FB_SET_COUNT; k++) {
      if (strcmp(f, names[k])) continue;
      if (from_text(&out->r, (enum fb_setting)k, v) == 0) {
        out->stored[k] = true;
      } else if (s->bad_generation != out->generation) {
        fb_warn("settings",
                "stored routing setting %s='%s' in %s is not valid; using %s's "
                "configured value",
                f, v, s->key, s->cfg->consumer_name);
        s->bad_generation = out->generation;
      }
    }
  }
}

/* Makes `next` the settings in effect; says so when they changed. */
static void apply(struct fb_settings *s, const struct fb_routing_info *next)
{
  pthread_mutex_lock(&s->lock);
  bool changed = memcmp(&s->now.r, &next->r, sizeof next->r) != 0;
  char diff[400];
  fb_routing_diff(&s->now.r, &next->r, diff, sizeof diff);
  s->now = *next;
  pthread_mutex_unlock(&s->lock);
  if (changed) {
    atomic_fetch_add(&s->gen, 1);
    fb_info("settings", "routing settings (generation %lld, by %s): %s", next->generation,
            next->updated_by[0] ? next->updated_by : "?", diff);
  }
}

void fb_settings_poll(struct fb_settings *s, struct fb_redis *r)
{
  if (fb_redis_ensure(r)) return;
  redisReply *rep = fb_redis_cmd(r, "HGETALL %s", s->key);
  if (!rep) return;
  if (rep->type == REDIS_REPLY_ARRAY) {
    pthread_mutex_lock(&s->lock);
    long long have = s->now.generation;
    pthread_mutex_unlock(&s->lock);
    struct fb_routing_info next;
    from_hash(s, rep, &next);
    if (next.generation != have) apply(s, &next);
  }
  freeReplyObject(rep);
}

/* KEYS[1] the hash; ARGV: reset ("1"/"0"), replica, request id, now,
 * then field/value pairs. Answers the whole hash before and after. */
static const char store_script[] =
    "local before = redis.call('HGETALL', KEYS[1])\n"
    "if ARGV[1] == '1' then\n"
    "  redis.call('HDEL', KEYS[1], 'strategy', 'overload_policy', 'frame_max_age_ms',\n"
    "             'slow_start_ms', 'hash_bound')\n"
    "end\n"
    "for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
    "redis.call('HINCRBY', KEYS[1], 'generation', 1)\n"
    "redis.call('HSET', KEYS[1], 'updated_by', ARGV[2], 'request_id', ARGV[3],\n"
    "           'updated_at_ms', ARGV[4])\n"
    "return {before, redis.call('HGETALL', KEYS[1])}\n";

int fb_settings_store(struct fb_settings *s, struct fb_redis *r,
                      const struct fb_routing_patch *patch, const char *replica,
                      const char *request_id, struct fb_routing_info *before,
                      struct fb_routing_info *after)
{
  char now[24], values[FB_SET_COUNT][64];
  snprintf(now, sizeof now, "%lld", (long long)fb_wall_ms());
  const char *argv[8 + 2 * FB_SET_COUNT];
  int argc = 0;
  argv[argc++] = "EVAL";
  argv[argc++] = store_script;
  argv[argc++] = "1";
  argv[argc++] = s->key;
  argv[argc++] = patch ? "0" : "1";
  argv[argc++] = replica;
  argv[argc++] = request_id ? request_id : "";
  argv[argc++] = now;
  for (int k = 0; patch && k < FB_SET_COUNT; k++)
    if (patch->set[k]) {
      to_text(&patch->v, (enum fb_setting)k, values[k], sizeof values[k]);
      argv[argc++] = names[k];
      argv[argc++] = values[k];
    }
  redisReply *rep = fb_redis_argv(r, argc, argv, NULL);
  if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
    if (rep) {
      fb_warn("settings", "storing the routing settings: %s",
              rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
      freeReplyObject(rep);
    }
    return -EIO;
  }
  /* Before and after as stored, not as this replica last polled them: a
   * change made elsewhere a moment ago is not this one's. */
  from_hash(s, rep->element[0], before);
  from_hash(s, rep->element[1], after);
  freeReplyObject(rep);
  apply(s, after);
  return 0;
}
