/*
 * The fleet: the replicas that share one consumer group act as one gateway
 * through Redis. Every key is under frame-buffer:<group>:
 *
 *   events        stream: every replica's events; each dashboard shows each once
 *   heartbeats    stream: HTTP heartbeats, so that every replica counts them
 *   health        hash: processor -> last announced health (one announcement
 *                 per change, not one per replica)
 *   replica:<name>  this replica's live figures, rewritten each second and
 *                 gone 5 s after it stops (PX)
 *   replicas      set: the names, to find the figures
 *
 * (The routing settings are in settings.h.) What a replica keeps in memory
 * is a cache of these, read by the control thread.
 *
 * Threads: fb_fleet_tick, fb_fleet_announce_health and fb_fleet_leave run on
 * the control thread with its Redis connection; fb_fleet_heartbeat and
 * fb_fleet_forget on the API thread with its own; fb_fleet_view and
 * fb_fleet_rates on any thread (the view is guarded by `lock`).
 */
#ifndef FRAMEBUFFER_FLEET_H
#define FRAMEBUFFER_FLEET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/app.h"
#include "framebuffer/redis.h"
#include "framebuffer/registry.h"

#define FB_REPLICA_TTL_MS 5000 /* a replica that stops publishing leaves after this */

struct fb_fleet;

int fb_fleet_create(struct fb_fleet **out, struct fb_app *app);
void fb_fleet_destroy(struct fb_fleet *f);

/* Control thread, every tick: appends this replica's new events to the
 * stream, takes every replica's new events and HTTP heartbeats, polls the
 * routing settings, and once a second publishes this replica's figures,
 * reads everyone's and reads the DLQ's length (frame_buffer_dlq_length). */
void fb_fleet_tick(struct fb_fleet *f, struct fb_redis *r);

/* Control thread: true (once) when another replica registered or removed a
 * processor since the last call: time to read the registry, rather than
 * wait for the next periodic sync. */
bool fb_fleet_registry_changed(struct fb_fleet *f);

/* Control thread, at stop: removes this replica's figures at once. */
void fb_fleet_leave(struct fb_fleet *f, struct fb_redis *r);

/* Control thread: processor `id` went from `old` to `now` here. True when
 * this replica is the one to announce it (no other replica did yet, or
 * Redis cannot tell). */
bool fb_fleet_announce_health(struct fb_fleet *f, struct fb_redis *r, const char *id,
                              enum fb_health old, enum fb_health now);

/* API thread: passes an HTTP heartbeat (already applied here) to the other
 * replicas. Returns 0 or -EIO. */
int fb_fleet_heartbeat(struct fb_fleet *f, struct fb_redis *r, const char *json, size_t len);

/* API thread: processor `id` was registered or removed: its announced
 * health starts afresh. */
void fb_fleet_forget(struct fb_fleet *f, struct fb_redis *r, const char *id);

/* Any thread: {"fleet":{...}, "replicas":[...], "processors":{id:[routed,
 * rate]}} as last read (new reference, the caller's to change). */
json_t *fb_fleet_view(struct fb_fleet *f);

/* Any thread: the fleet's frames/s in and out, as last read. */
void fb_fleet_rates(const struct fb_fleet *f, int64_t *in, int64_t *out);

/* This replica's figures, as it publishes them. New reference. */
json_t *fb_fleet_record(struct fb_app *app, int64_t now_ms);

/*
 * Pure: merges replica records (as fb_fleet_record makes them) into
 * {"fleet":{replicas, in_per_s, out_per_s, consumed, distributed, blocked,
 * dropped{}, dlq{}, routing_latency_ms{p50,p99,mean}}, "replicas":[{consumer,
 * version, uptime_s, last_seen_ms, age_ms, self, connections, in_per_s,
 * out_per_s, consumed, distributed, blocked, dropped, dlq,
 * routing_latency_ms}], "processors":{id:[routed, rate]}}. Records that are
 * not objects are skipped. Returns a new reference.
 */
json_t *fb_fleet_merge(json_t *const *records, size_t n, int64_t now_ms, const char *self);

#endif
