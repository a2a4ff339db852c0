/*
 * Processors: validation of registrations, the in-memory registry, and the
 * immutable snapshots the router reads.
 *
 * Threads: the registry is changed by the HTTP thread (REST calls) and the
 * control thread (sync from Redis), under `fb_registry.lock`. Every change
 * publishes a new snapshot; readers (the ingest thread, the HTTP thread)
 * take a reference to the current one and never lock while routing.
 * Persistence in Redis lives in store.c; this module does no I/O.
 */
#ifndef FRAMEBUFFER_REGISTRY_H
#define FRAMEBUFFER_REGISTRY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "framebuffer/frame.h"

#define FB_PROC_ID_MAX          128
#define FB_PROC_MAX_CAPS        64
#define FB_DEFAULT_MAX_QUEUE    10000
#define FB_DEFAULT_HEARTBEAT_MS 30000
#define FB_RETIRED_MAX          4096 /* removed processors whose counters are kept */

/* A processor's sink, as an index into fb_sink_list (sink.h). The first two
 * are named here because registrations address them differently (a stream,
 * a subject); any other sink is just its index. */
enum fb_transport { FB_TRANSPORT_REDIS, FB_TRANSPORT_NATS };
enum fb_health { FB_HEALTH_HEALTHY, FB_HEALTH_STALE, FB_HEALTH_DEAD };

/* What changes while a processor runs. One per processor id, shared by every
 * version of its registration, so counters survive an update. Any thread. */
struct fb_proc_live {
  atomic_int refs;
  int64_t known_since_ms; /* when this gateway first learned of it (unix ms) */
  atomic_uint_fast64_t frames_routed;
  atomic_int_fast64_t queue_depth;       /* last read, from Redis or heartbeat (fb_proc_depth) */
  atomic_int_fast64_t last_heartbeat_ms; /* unix ms, 0 = never */
  atomic_int status;                     /* enum fb_health */
  atomic_bool stopping;                  /* its last heartbeat said "stopping" */
  atomic_int_fast64_t in_flight;         /* from its heartbeat */
  atomic_int_fast64_t sent_since_poll;   /* frames this gateway sent since depth was read */
  atomic_int_fast64_t routed_in_flight;  /* routed to it, hand-off not yet confirmed */
  int64_t next_rescue_ms;                /* control thread only */
  uint64_t rate_prev;                    /* control thread only: frames_routed a second ago */
  atomic_int_fast64_t rate;              /* frames/s routed to it over the last second */
};

/* A registration: immutable once built, reference-counted. */
struct fb_proc {
  atomic_int refs;
  char *id;
  char **caps;
  size_t ncaps;
  int64_t capacity;
  char *stream; /* Redis target: `queue`, or frames:ready:<id> */
  enum fb_transport transport;
  char *subject;
  char *result_stream;
  int64_t weight;
  int64_t max_queue;
  int64_t heartbeat_interval_ms;
  int64_t registered_at_ms;
  json_t *doc;  /* the registration with defaults filled in, as stored */
  char *stored; /* doc serialized as kept in processors:registry */
  char *source; /* the exact text it was read from in Redis, or NULL (= stored) */
  struct fb_proc_live *live;
};

/* Processors that share one capability. */
struct fb_cap_group {
  char *name;
  size_t n;
  uint32_t *members; /* indexes into fb_snapshot.procs */
};

/* An immutable view of every processor at one moment. */
struct fb_snapshot {
  atomic_int refs;
  uint64_t generation;
  size_t n;
  struct fb_proc **procs; /* sorted by id; each holds a reference */
  size_t ngroups;
  struct fb_cap_group *groups;
  struct fb_cap_group all; /* every processor, for frames with no detection type */
  uint32_t *hash;          /* open-addressing index into groups (+1; 0 = empty) */
  size_t hash_mask;
};

struct fb_registry;

/* ------------------------------------------------------------ processors */

/*
 * Validates a registration body and builds a processor from it, with every
 * default filled in. `input_stream` is refused as a target. Returns 0 and a
 * new processor in *out (release with fb_proc_release), or -EINVAL with a
 * message for the user in `why`.
 */
int fb_proc_from_json(struct fb_proc **out, const json_t *body, const char *input_stream, char *why,
                      size_t n);

/*
 * Checks that every top-level member of a registration body is one the
 * gateway knows: the registration's fields (the compat ones included) and
 * those the API shows (status, last_heartbeat, frames_routed, queue_depth,
 * registered_at_ms), which a client may send back as it got them and which
 * are ignored. Returns 0, or -EINVAL with `why` naming each unknown member
 * and the known one it is closest to ("did you mean"). Pure. Only for
 * bodies sent to the API: what is already stored is read as it is.
 */
int fb_proc_check_fields(const json_t *body, char *why, size_t n);

/*
 * What a new or changed registration must also satisfy, beyond
 * fb_proc_from_json (which stays lenient for registrations already stored):
 * a processor on NATS has no '.' in its id (its id is one token of
 * processors.heartbeat.<id> and frames.results.<id>, and names its
 * JetStream consumer). Returns 0, or -EINVAL with `why`. Pure.
 */
int fb_proc_check_new(const struct fb_proc *p, char *why, size_t n);

/* The name in `names` (NULL-terminated) closest to the mistyped `given`:
 * the same but for case, or within a few edits (insertions, deletions,
 * substitutions, swaps of neighbours). NULL when none is close. Pure. */
const char *fb_closest_name(const char *given, const char *const *names);

/* True when `id` is 1-128 of A-Z a-z 0-9 . _ : - */
bool fb_proc_id_is_valid(const char *id, size_t n);

void fb_proc_release(struct fb_proc *p);

/*
 * The processor as the API shows it: its registration plus status,
 * last_heartbeat, frames_routed and queue_depth (the depth as last read,
 * live->queue_depth, like /metrics; not fb_proc_depth). Returns a new json_t.
 */
json_t *fb_proc_to_json(const struct fb_proc *p);

/*
 * A processor's queue depth as this gateway estimates it: what routing and
 * the overload policies compare with max_queue, and what /api/v1/stats and
 * the dashboard show. It is the depth as last read (live->queue_depth: the
 * unread + pending entries of its stream in group frame-processors, read
 * by the control thread about every 250 ms; for a remote processor, the
 * queue_depth + in_flight of its last heartbeat) plus what this replica
 * handed off to it since that read (live->sent_since_poll) and what it has
 * routed to it in hand-offs not yet confirmed (live->routed_in_flight).
 * Any thread; relaxed loads, so the parts need not be from one instant.
 */
int64_t fb_proc_depth(const struct fb_proc *p);

/* Sets `p`'s health and returns the one before. Any thread: routers see
 * the change at their next pick (through fb_health_epoch). */
enum fb_health fb_proc_set_health(const struct fb_proc *p, enum fb_health h);

/* Moves on whenever fb_proc_set_health changes any processor's health. */
unsigned fb_health_epoch(void);

const char *fb_health_name(enum fb_health h);
const char *fb_transport_name(enum fb_transport t);

/* -------------------------------------------------------------- registry */

int fb_registry_create(struct fb_registry **out);
void fb_registry_destroy(struct fb_registry *r);

/* Adds or replaces processor `p` (borrowed: the registry takes its own
 * reference), keeping the live state of an earlier version. */
void fb_registry_put(struct fb_registry *r, struct fb_proc *p);

/* Removes a processor. Returns 0 or -ENOENT. Its frames_routed is kept
 * (for the last FB_RETIRED_MAX removed ids): when it registers again it
 * goes on from there, so frame_buffer_frames_distributed_total never goes
 * down while the process lives. */
int fb_registry_remove(struct fb_registry *r, const char *id);

/* A token that changes with every local put/remove: a sync from Redis that
 * started before a local change must not overwrite it (see fb_registry_sync). */
uint64_t fb_registry_local_version(struct fb_registry *r);

/*
 * Replaces the whole set with `procs` (borrowed), as read from Redis, unless
 * a local change happened since `seen_version`. Returns 1 when something
 * changed, 0 when nothing did, -EAGAIN when skipped.
 */
int fb_registry_sync(struct fb_registry *r, struct fb_proc **procs, size_t n,
                     uint64_t seen_version);

/* Returns a new reference to the current snapshot. Never NULL. */
struct fb_snapshot *fb_registry_snapshot(struct fb_registry *r);
/* The generation of the current snapshot; cheap, lock-free. */
uint64_t fb_registry_generation(struct fb_registry *r);

void fb_snapshot_release(struct fb_snapshot *s);

/* Index of processor `id` in the snapshot, or -1. */
int fb_snapshot_find(const struct fb_snapshot *s, const char *id);

/* The group for a detection type (`escaped` as fb_frame sets it), the group
 * of all processors for an empty one, or NULL when nobody has it. */
const struct fb_cap_group *fb_snapshot_group(const struct fb_snapshot *s, struct fb_str type,
                                             bool escaped);

/* For tests and tools: build a snapshot straight from processors. */
struct fb_snapshot *fb_snapshot_build(struct fb_proc **procs, size_t n, uint64_t generation);

#endif
