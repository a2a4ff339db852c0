/*
 * A Redis connection that knows how to come back: connects on demand with
 * AUTH and SELECT, gives up quickly when the server is away and retries with
 * exponential backoff (100 ms to 5 s), and logs each loss and recovery once.
 * hiredis errors are turned into our return codes here, in this one module.
 * Threads: one fb_redis belongs to one thread, like the redisContext inside.
 */
#ifndef FRAMEBUFFER_REDIS_H
#define FRAMEBUFFER_REDIS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "framebuffer/config.h"

struct fb_redis {
  const struct fb_redis_endpoint *ep; /* borrowed */
  const char *who;                    /* names the connection in logs */
  int timeout_ms;                     /* connect and command timeout, 0 = none */
  redisContext *ctx;                  /* NULL while disconnected */
  int64_t next_attempt_ms;            /* monotonic */
  int backoff_ms;
  bool lost; /* a loss was logged, the recovery is not yet */
  uint64_t connects;
};

void fb_redis_init(struct fb_redis *r, const struct fb_redis_endpoint *ep, const char *who,
                   int timeout_ms);

/* Connected: 0. Not yet time for another attempt, or it failed: -ENOTCONN. */
int fb_redis_ensure(struct fb_redis *r);

/* Closes the connection after an error and schedules a reconnect. */
void fb_redis_drop(struct fb_redis *r, const char *why);

void fb_redis_close(struct fb_redis *r);

/*
 * Runs one command (redisCommandArgv semantics). Returns the reply, which the
 * caller frees with freeReplyObject, or NULL when the connection failed (it is
 * then dropped). Error replies are returned as they are.
 */
redisReply *fb_redis_argv(struct fb_redis *r, int argc, const char **argv, const size_t *lens);
redisReply *fb_redis_cmd(struct fb_redis *r, const char *fmt, ...);

/* True for an error reply whose text starts with `prefix` (e.g. "BUSYGROUP"). */
bool fb_reply_is_error(const redisReply *rep, const char *prefix);

#endif
