/*
 * The results bridge: frames.results.<id> on NATS -> an XADD to the
 * processor's result_stream in Redis (at least once). Its callback (nats.c's
 * threads) only appends to a bounded queue under the module's lock; the
 * results thread writes the queue to Redis on its own connection.
 */
#ifndef FRAMEBUFFER_RESULTS_H
#define FRAMEBUFFER_RESULTS_H

#include "framebuffer/metrics.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/redis.h"
#include "framebuffer/registry.h"

struct fb_results;

/* Main thread, after fb_nats_start: starts the results thread, which writes
 * to the Redis of `redis`, and subscribes on `nats`. `reg` and `m` are
 * borrowed (they outlive the thread). Returns 0 or -EIO, logged. */
int fb_results_start(struct fb_results **out, struct fb_nats *nats,
                     const struct fb_redis_endpoint *redis, struct fb_registry *reg,
                     struct fb_metrics *m);
/* Main thread, after fb_nats_stop (no callback can run any more): the thread
 * writes what is queued, or gives up when Redis is away, and ends. */
void fb_results_stop(struct fb_results *r);

#endif
