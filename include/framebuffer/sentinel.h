/*
 * Redis Sentinel: which server is the primary now, and a watcher that hears
 * of a failover the moment the sentinels announce it (+switch-master).
 *
 * The watcher only bumps the primary epoch (fb_redis_primary_moved); every
 * fb_redis compares it and moves to the new primary on its own thread, so
 * no connection is ever touched by two threads.
 *
 * Threads: fb_sentinel_primary may be called from any thread (it opens its
 * own short connections). The watcher is one thread with its own connection.
 */
#ifndef FRAMEBUFFER_SENTINEL_H
#define FRAMEBUFFER_SENTINEL_H

#include <stddef.h>

#include "framebuffer/config.h"

/*
 * Asks the sentinels of `ep`, in order, for the address of the primary of
 * `ep->sentinel_master`; the first that knows answers. Returns 0 with the
 * address in `out`, or -ENOTCONN with why in `why` (no sentinel reachable,
 * or none knows the master).
 */
int fb_sentinel_primary(const struct fb_redis_endpoint *ep, struct fb_hostport *out, char *why,
                        size_t n);

struct fb_sentinel_watch;

/* Starts the watcher thread (it subscribes to +switch-master on one sentinel
 * after another until one answers). `ep` is borrowed. Returns 0 or a
 * negative errno. */
int fb_sentinel_watch_start(struct fb_sentinel_watch **out, const struct fb_redis_endpoint *ep);
void fb_sentinel_watch_stop(struct fb_sentinel_watch *w);

#endif
