/*
 * Shadow routing: a copy of real traffic for a candidate processor (a new
 * model version). A shadow matches frames by detection type and a camera-id
 * glob, samples `percent` of them — whole cameras by default, so a tracker
 * sees complete sequences, or single frames — and sends each sampled
 * frame's copy to its target with `shadow=<name>` and `shadow_of=<primary>`
 * added. Copies never change the primary's delivery: a full, dead or
 * unknown target drops the copy (counted per shadow), nothing is held, sent
 * to the DLQ or counted against the primary's load.
 *
 * The fleet's shadows are kept in Redis (hash frame-buffer:<group>:shadows,
 * name -> JSON, and a generation counter beside it) and reach every replica
 * within a second: the control thread polls the generation.
 *
 * Threads: the API thread changes them; the control thread polls; the
 * ingest thread takes the set in effect (fb_shadows_get, a reference) when
 * fb_shadows_gen changed, and counts copies.
 */
#ifndef FRAMEBUFFER_SHADOWS_H
#define FRAMEBUFFER_SHADOWS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "framebuffer/api.h"
#include "framebuffer/buf.h"
#include "framebuffer/config.h"
#include "framebuffer/frame.h"
#include "framebuffer/redis.h"
#include "framebuffer/registry.h"

#define FB_SHADOWS_MAX      32
#define FB_SHADOW_NAME_MAX  64
#define FB_SHADOW_MATCH_MAX 128

struct fb_shadow {
  char name[FB_SHADOW_NAME_MAX + 1];
  char detection_type[FB_SHADOW_MATCH_MAX + 1]; /* "" = any */
  char camera_glob[FB_SHADOW_MATCH_MAX + 1];    /* fnmatch(3) pattern; "" = any */
  char target[FB_PROC_ID_MAX + 1];
  int percent;   /* 0..100 */
  bool by_frame; /* sample "frame"; else "camera" */
};

/* What became of a copy. */
enum fb_shadow_outcome {
  FB_SHADOW_SENT,
  FB_SHADOW_TARGET_FULL,
  FB_SHADOW_TARGET_DEAD, /* dead, or not registered */
  FB_SHADOW_FAILED,      /* its write or publish failed */
  FB_SHADOW_OUTCOMES
};

/* Pure: is `name` a shadow name (1..64 of A-Z a-z 0-9 . _ -)? */
bool fb_shadow_name_ok(const char *name);
/* Pure: reads a PUT body for shadow `name`. Returns 0, or -EINVAL with a
 * message for the user in `why`. The target's existence is the caller's to
 * check. */
int fb_shadow_from_json(const char *name, const json_t *body, struct fb_shadow *out, char *why,
                        size_t n);
/* Pure: the shadow as the API shows it and Redis keeps it (new reference). */
json_t *fb_shadow_to_json(const struct fb_shadow *s);
/* Pure: does frame `f` get a copy? */
bool fb_shadow_matches(const struct fb_shadow *s, const struct fb_frame *f);

/* An immutable set of shadows, reference-counted. */
struct fb_shadow_set {
  atomic_int refs;
  size_t n;
  struct fb_shadow v[];
};

void fb_shadow_set_release(struct fb_shadow_set *set);

struct fb_shadows;

int fb_shadows_create(struct fb_shadows **out, const struct fb_config *cfg);
void fb_shadows_destroy(struct fb_shadows *sh);
/* Any thread, lock-free: changes whenever the set in effect changes. */
unsigned fb_shadows_gen(const struct fb_shadows *sh);
/* Any thread: the set in effect (a reference: fb_shadow_set_release). */
struct fb_shadow_set *fb_shadows_get(struct fb_shadows *sh);
/* Ingest thread: counts `n` copies of shadow `name`. */
void fb_shadows_count(struct fb_shadows *sh, const char *name, enum fb_shadow_outcome o,
                      uint64_t n);
/* frame_buffer_shadow_frames_total{shadow,outcome} for /metrics. */
int fb_shadows_render_metrics(struct fb_shadows *sh, struct fb_buf *out);
/* The shadows with their counts, as the dashboard and GET show them. */
json_t *fb_shadows_json(struct fb_shadows *sh);
/* Control thread: reads the fleet's shadows when their generation moved. */
void fb_shadows_poll(struct fb_shadows *sh, struct fb_redis *r);

/* GET /api/v1/shadows, PUT and DELETE /api/v1/shadows/{name} */
fb_api_handler fb_api_shadows_list, fb_api_shadow_put, fb_api_shadow_delete;

#endif
