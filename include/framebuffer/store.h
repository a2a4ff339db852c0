/*
 * Registrations in Redis, in the old service's layout (compat): the hash
 * `processors:registry` (id -> JSON) and the sets
 * `processors:capabilities:<cap>`. Each change is one server-side script, so
 * two replicas registering the same id cannot both win. Runs on whichever
 * thread owns the fb_redis passed in.
 */
#ifndef FRAMEBUFFER_STORE_H
#define FRAMEBUFFER_STORE_H

#include <stddef.h>

#include "framebuffer/redis.h"
#include "framebuffer/registry.h"

#define FB_REGISTRY_KEY      "processors:registry"
#define FB_CAPABILITY_PREFIX "processors:capabilities:"
#define FB_PROCESSOR_GROUP   "frame-processors"

/*
 * Creates the processor's stream and its group `frame-processors`
 * (MKSTREAM) when it receives frames over Redis, then stores it.
 * `replace` false: fails with -EEXIST when the id is taken. `replace` true:
 * fails with -ENOENT when it is not (`why` untouched: the errno says it).
 * Other errors, with the reason in `why`: -EIO (Redis unreachable or
 * refusing), -EINVAL (its queue key holds something that is not a stream).
 */
int fb_store_save(struct fb_redis *r, const struct fb_proc *p, bool replace, char *why, size_t n);

/* Removes a registration. Returns 0, -ENOENT, or -EIO. */
int fb_store_delete(struct fb_redis *r, const char *id);

/* Deletes a processor's stream, and with it its group frame-processors and
 * every frame still in it (DELETE ...?purge=true). A stream that does not
 * exist is fine. Returns 0 or -EIO. */
int fb_store_purge(struct fb_redis *r, const char *stream);

/*
 * Reads every registration. Entries that do not validate are logged and
 * skipped. An entry whose text is the same as that of a processor in
 * `known` (may be NULL) is not parsed again: that processor is reused (with
 * a new reference). Returns 0 with a new array of processors in *out (free
 * with fb_store_free), or -EIO.
 */
int fb_store_load(struct fb_redis *r, const char *input_stream, const struct fb_snapshot *known,
                  struct fb_proc ***out, size_t *n);
void fb_store_free(struct fb_proc **procs, size_t n);

#endif
