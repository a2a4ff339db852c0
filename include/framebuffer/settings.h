/*
 * The routing settings that change while the fleet runs: strategy,
 * overload_policy, frame_max_age_ms, slow_start_ms and hash_bound. One set
 * for every replica of a consumer group, kept in Redis (the hash
 * frame-buffer:<group>:routing) with a generation number; whatever is not
 * stored there takes this replica's configured value (environment, flags).
 *
 * Threads: the API thread stores changes (fb_settings_store) and the control
 * thread polls Redis (fb_settings_poll), each with its own connection; any
 * thread reads the settings in effect (fb_settings_get, a copy taken under
 * `lock`); the ingest thread compares fb_settings_gen once a batch.
 */
#ifndef FRAMEBUFFER_SETTINGS_H
#define FRAMEBUFFER_SETTINGS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/config.h"
#include "framebuffer/redis.h"

enum fb_setting {
  FB_SET_STRATEGY,
  FB_SET_OVERLOAD_POLICY,
  FB_SET_FRAME_MAX_AGE_MS,
  FB_SET_SLOW_START_MS,
  FB_SET_HASH_BOUND,
  FB_SET_COUNT
};

/* The settings' names as the API and Redis spell them. */
const char *fb_setting_name(enum fb_setting s);

struct fb_routing {
  enum fb_strategy strategy;
  enum fb_overload_policy overload_policy;
  int64_t frame_max_age_ms; /* 0 = off */
  int64_t slow_start_ms;    /* 0 = off */
  double hash_bound;        /* consistent_hash, 1.0..100 */
};

/* The settings in effect and where they came from. */
struct fb_routing_info {
  struct fb_routing r;
  bool stored[FB_SET_COUNT];    /* from Redis; else this replica's configuration */
  long long generation;         /* of the stored set; 0 = never changed */
  char updated_by[FB_NAME_MAX]; /* consumer name of the replica that changed it */
  char request_id[129];         /* X-Request-ID of that change */
  int64_t updated_at_ms;
};

/* Some of the settings, as a PUT gives them. */
struct fb_routing_patch {
  bool set[FB_SET_COUNT];
  struct fb_routing v;
};

/*
 * Pure: reads the members of a PUT /api/v1/routing body into `out`.
 * Read-only members of the GET answer (generation, source, ...) are
 * ignored, so a GET's body can be PUT back. Returns 0, or -EINVAL with what
 * is wrong (a message for the user) in `why`.
 */
int fb_routing_patch_from_json(const json_t *body, struct fb_routing_patch *out, char *why,
                               size_t n);

/* Pure: "strategy least_loaded -> consistent_hash, hash_bound 1.25 -> 1.5",
 * or "" when `a` and `b` are the same. */
void fb_routing_diff(const struct fb_routing *a, const struct fb_routing *b, char *out, size_t n);

struct fb_settings;

int fb_settings_create(struct fb_settings **out, const struct fb_config *cfg);
void fb_settings_destroy(struct fb_settings *s);

/* Any thread, lock-free: changes whenever the settings in effect change. */
unsigned fb_settings_gen(const struct fb_settings *s);

/* Any thread: a copy of the settings in effect. */
void fb_settings_get(struct fb_settings *s, struct fb_routing_info *out);

/*
 * API thread: stores `patch` for the fleet (NULL: removes every stored
 * setting, back to the configured defaults), marked with `replica` and
 * `request_id`, and applies the result here at once. The settings as stored
 * just before and just after go to `before`/`after`. Returns 0, or -EIO when Redis is not
 * reachable (nothing changed).
 */
int fb_settings_store(struct fb_settings *s, struct fb_redis *r,
                      const struct fb_routing_patch *patch, const char *replica,
                      const char *request_id, struct fb_routing_info *before,
                      struct fb_routing_info *after);

/* Control thread: reads the stored settings and applies them when their
 * generation changed. Quiet when Redis is away (the last ones stay). */
void fb_settings_poll(struct fb_settings *s, struct fb_redis *r);

#endif
