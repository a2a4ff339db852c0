/*
 * Reconnecting Redis connections over hiredis (see redis.h).
 * One thread per fb_redis; no locks.
 */
#include "framebuffer/redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"
#include "framebuffer/sentinel.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* Process-wide: bumped when the sentinels announce a new primary. */
static atomic_uint primary_epoch;

/* Process-wide: reconnects by connection name, a slot per name, claimed at
 * fb_redis_init under names_lock and never given back. */
static struct {
  _Atomic(const char *) who;
  atomic_uint_fast64_t count;
} by_name[FB_REDIS_NAMES_MAX];
static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;

/* The slot of connection name `who`, or -1 when every slot is taken. */
static int name_slot(const char *who)
{
  pthread_mutex_lock(&names_lock);
  int slot = -1;
  for (int i = 0; i < FB_REDIS_NAMES_MAX && slot < 0; i++) {
    const char *w = atomic_load(&by_name[i].who);
    if (!w) {
      atomic_store(&by_name[i].who, who);
      slot = i;
    } else if (!strcmp(w, who)) {
      slot = i;
    }
  }
  pthread_mutex_unlock(&names_lock);
  return slot;
}

size_t fb_redis_reconnects_by_name(const char **names, uint64_t *counts, size_t max)
{
  size_t n = 0;
  for (int i = 0; i < FB_REDIS_NAMES_MAX && n < max; i++) {
    const char *w = atomic_load(&by_name[i].who);
    if (!w) break;
    names[n] = w;
    counts[n++] = atomic_load(&by_name[i].count);
  }
  return n;
}

void fb_redis_primary_moved(void)
{
  atomic_fetch_add(&primary_epoch, 1);
}

bool fb_redis_is_stale(const struct fb_redis *r)
{
  return r->ctx && r->epoch != atomic_load(&primary_epoch);
}

void fb_redis_init(struct fb_redis *r, const struct fb_redis_endpoint *ep, const char *who,
                   int timeout_ms)
{
  memset(r, 0, sizeof *r);
  r->ep = ep;
  r->who = who;
  r->timeout_ms = timeout_ms;
  r->backoff_ms = BACKOFF_MIN_MS;
  snprintf(r->at.host, sizeof r->at.host, "%s", ep->host);
  r->at.port = ep->port;
  r->epoch = atomic_load(&primary_epoch);
  r->slot = name_slot(who);
}

void fb_redis_retry_now(struct fb_redis *r)
{
  r->next_attempt_ms = 0;
}

static struct timeval tv_ms(int ms)
{
  return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static void schedule_retry(struct fb_redis *r)
{
  r->next_attempt_ms = fb_mono_ms() + r->backoff_ms;
  r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

void fb_redis_drop(struct fb_redis *r, const char *why)
{
  if (!r->lost)
    fb_warn("redis", "%s connection to %s:%d lost: %s; reconnecting with backoff", r->who,
            r->at.host, r->at.port, why);
  r->lost = true;
  if (r->ctx) redisFree(r->ctx);
  r->ctx = NULL;
  schedule_retry(r);
}

void fb_redis_close(struct fb_redis *r)
{
  if (r->ctx) redisFree(r->ctx);
  r->ctx = NULL;
}

/* AUTH and SELECT on a fresh connection, and with sentinels a ROLE check
 * (a sentinel may name the old primary for a moment after a failover).
 * Returns 0 or -EIO with `why`. */
static int handshake(struct fb_redis *r, char *why, size_t n)
{
  redisReply *rep = NULL;
  if (r->ep->password[0]) {
    if (r->ep->username[0])
      rep = redisCommand(r->ctx, "AUTH %s %s", r->ep->username, r->ep->password);
    else
      rep = redisCommand(r->ctx, "AUTH %s", r->ep->password);
    if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
    freeReplyObject(rep);
  }
  if (r->ep->db) {
    rep = redisCommand(r->ctx, "SELECT %d", r->ep->db);
    if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
    freeReplyObject(rep);
  }
  if (r->ep->nsentinels) {
    rep = redisCommand(r->ctx, "ROLE");
    if (!rep || rep->type == REDIS_REPLY_ERROR) goto fail;
    bool primary = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                   rep->element[0]->type == REDIS_REPLY_STRING &&
                   !strcmp(rep->element[0]->str, "master");
    if (!primary) {
      snprintf(why, n, "it is not the primary (ROLE %s)",
               rep->type == REDIS_REPLY_ARRAY && rep->elements && rep->element[0]->str
                   ? rep->element[0]->str
                   : "?");
      freeReplyObject(rep);
      return -EIO;
    }
    freeReplyObject(rep);
  }
  return 0;
fail:
  snprintf(why, n, "%s", rep ? rep->str : r->ctx->errstr);
  if (rep) freeReplyObject(rep);
  return -EIO;
}

int fb_redis_ensure(struct fb_redis *r)
{
  unsigned epoch = atomic_load(&primary_epoch);
  if (r->ctx && r->epoch == epoch) return 0;
  if (r->ctx) {
    fb_info("redis", "%s connection moves to the new primary", r->who);
    redisFree(r->ctx);
    r->ctx = NULL;
    r->next_attempt_ms = 0;
  } else if (r->epoch != epoch) {
    r->next_attempt_ms = 0; /* the primary moved: no more waiting */
    r->backoff_ms = BACKOFF_MIN_MS;
  }
  if (fb_mono_ms() < r->next_attempt_ms) return -ENOTCONN;
  r->epoch = epoch;

  char why[300];
  if (r->ep->nsentinels && fb_sentinel_primary(r->ep, &r->at, why, sizeof why)) goto fail;
  r->ctx = r->timeout_ms ? redisConnectWithTimeout(r->at.host, r->at.port, tv_ms(r->timeout_ms))
                         : redisConnect(r->at.host, r->at.port);
  if (!r->ctx || r->ctx->err) {
    snprintf(why, sizeof why, "%s", r->ctx ? r->ctx->errstr : "out of memory");
    goto fail;
  }
  if (r->timeout_ms) redisSetTimeout(r->ctx, tv_ms(r->timeout_ms));
  redisEnableKeepAlive(r->ctx);
  if (handshake(r, why, sizeof why)) goto fail;

  r->backoff_ms = BACKOFF_MIN_MS;
  if (r->connects++ && r->slot >= 0) atomic_fetch_add(&by_name[r->slot].count, 1);
  if (r->lost)
    fb_info("redis", "%s connection to %s:%d is back", r->who, r->at.host, r->at.port);
  else
    fb_debug("redis", "%s connected to %s:%d", r->who, r->at.host, r->at.port);
  r->lost = false;
  return 0;

fail:
  if (!r->lost)
    fb_warn("redis", "%s cannot connect to %s:%d: %s; retrying with backoff", r->who, r->at.host,
            r->at.port, why);
  r->lost = true;
  if (r->ctx) redisFree(r->ctx);
  r->ctx = NULL;
  schedule_retry(r);
  return -ENOTCONN;
}

static redisReply *checked(struct fb_redis *r, redisReply *rep)
{
  if (!rep)
    fb_redis_drop(r, r->ctx->errstr[0] ? r->ctx->errstr : "no reply");
  else if (fb_reply_is_error(rep, "READONLY"))
    fb_redis_drop(r, "the server is a replica now (READONLY)");
  return rep;
}

redisReply *fb_redis_argv(struct fb_redis *r, int argc, const char **argv, const size_t *lens)
{
  if (fb_redis_ensure(r)) return NULL;
  return checked(r, redisCommandArgv(r->ctx, argc, argv, lens));
}

redisReply *fb_redis_cmd(struct fb_redis *r, const char *fmt, ...)
{
  if (fb_redis_ensure(r)) return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r->ctx, fmt, ap);
  va_end(ap);
  return checked(r, rep);
}

bool fb_reply_is_error(const redisReply *rep, const char *prefix)
{
  return rep && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, prefix, strlen(prefix));
}
