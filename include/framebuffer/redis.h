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
  struct fb_hostport at; /* the server connected to (or last tried) */
  unsigned epoch;        /* the primary epoch when it connected */
  int slot;              /* its name's reconnect counter, -1 when none is left */
};

#define FB_REDIS_NAMES_MAX 16 /* connection names with their own reconnect count */

/* `who` names the connection in logs and in the reconnect counts; it must
 * outlive the process's use of them (a string literal). */
void fb_redis_init(struct fb_redis *r, const struct fb_redis_endpoint *ep, const char *who,
                   int timeout_ms);

/*
 * Connected: 0. Not yet time for another attempt, or it failed: -ENOTCONN.
 * With sentinels, the sentinels are asked for the primary first and the
 * answer is checked with ROLE. A connection older than the last move of
 * the primary is dropped first (see fb_redis_is_stale).
 */
int fb_redis_ensure(struct fb_redis *r);

/* True when the connection was made before the primary last moved: the
 * caller must forget what it has in flight on it (fb_redis_ensure then
 * reconnects, to the new primary). */
bool fb_redis_is_stale(const struct fb_redis *r);

/* Any thread: the primary moved (sentinel +switch-master). Every fb_redis
 * reconnects before its next command, at once rather than after backoff. */
void fb_redis_primary_moved(void);

/* Any thread: reconnects of each connection name (`who` of fb_redis_init:
 * "ingest", "control", "api", "results", ...), every name seen so far, in
 * the order first seen. Fills up to `max` of each array (names borrowed,
 * static) and returns how many it filled. */
size_t fb_redis_reconnects_by_name(const char **names, uint64_t *counts, size_t max);

/* The next fb_redis_ensure tries at once instead of waiting out the
 * backoff (an API call that would otherwise answer 503). */
void fb_redis_retry_now(struct fb_redis *r);

/* Closes the connection after an error and schedules a reconnect. */
void fb_redis_drop(struct fb_redis *r, const char *why);

void fb_redis_close(struct fb_redis *r);

/*
 * Runs one command (redisCommandArgv semantics). Returns the reply, which the
 * caller frees with freeReplyObject, or NULL when the connection failed (it is
 * then dropped). Error replies are returned as they are; after a -READONLY
 * (the server became a replica) the connection is dropped too, so that the
 * next command finds the primary.
 */
redisReply *fb_redis_argv(struct fb_redis *r, int argc, const char **argv, const size_t *lens);
redisReply *fb_redis_cmd(struct fb_redis *r, const char *fmt, ...);

/* True for an error reply whose text starts with `prefix` (e.g. "BUSYGROUP"). */
bool fb_reply_is_error(const redisReply *rep, const char *prefix);

#endif
