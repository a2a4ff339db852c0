/*
 * Redis Sentinel (see sentinel.h): the primary's address, and the
 * +switch-master watcher. hiredis errors are turned into our codes here.
 * The watcher thread owns its connection; the only shared state is the
 * primary epoch in redis.c (an atomic).
 */
#include "framebuffer/sentinel.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"
#include "framebuffer/redis.h"

#define SENTINEL_TIMEOUT_MS 500  /* connect and command, per sentinel */
#define WATCH_POLL_MS       250  /* how often the watcher checks for a stop */
#define WATCH_RETRY_MS      1000 /* after every sentinel failed */

/* A connection to one sentinel, authenticated. NULL with `why` on failure. */
static redisContext *sentinel_connect(const struct fb_redis_endpoint *ep,
                                      const struct fb_hostport *s, char *why, size_t n)
{
  struct timeval tv = {0, SENTINEL_TIMEOUT_MS * 1000};
  redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
  if (!c || c->err) {
    snprintf(why, n, "sentinel %s:%d: %s", s->host, s->port, c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  if (ep->sentinel_password[0]) {
    redisReply *rep = redisCommand(c, "AUTH %s", ep->sentinel_password);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
      snprintf(why, n, "sentinel %s:%d: AUTH: %s", s->host, s->port, rep ? rep->str : c->errstr);
      if (rep) freeReplyObject(rep);
      redisFree(c);
      return NULL;
    }
    freeReplyObject(rep);
  }
  return c;
}

/* Asks sentinel `s` (connected as `c`) for the primary. 0 or -ENOENT. */
static int ask(const struct fb_redis_endpoint *ep, redisContext *c, const struct fb_hostport *s,
               struct fb_hostport *out, char *why, size_t n)
{
  redisReply *rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", ep->sentinel_master);
  bool ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            rep->element[1]->type == REDIS_REPLY_STRING && rep->element[0]->len < sizeof out->host;
  if (ok) {
    char *end;
    long port = strtol(rep->element[1]->str, &end, 10);
    ok = *end == '\0' && port > 0 && port < 65536;
    if (ok) {
      memcpy(out->host, rep->element[0]->str, rep->element[0]->len + 1);
      out->port = (int)port;
    }
  }
  if (!ok)
    snprintf(why, n, "sentinel %s:%d does not know master '%s'%s%s", s->host, s->port,
             ep->sentinel_master, rep && rep->type == REDIS_REPLY_ERROR ? ": " : "",
             rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "");
  if (rep) freeReplyObject(rep);
  return ok ? 0 : -ENOENT;
}

int fb_sentinel_primary(const struct fb_redis_endpoint *ep, struct fb_hostport *out, char *why,
                        size_t n)
{
  snprintf(why, n, "no sentinel configured");
  for (size_t i = 0; i < ep->nsentinels; i++) {
    const struct fb_hostport *s = &ep->sentinels[i];
    redisContext *c = sentinel_connect(ep, s, why, n);
    if (!c) continue;
    int rc = ask(ep, c, s, out, why, n);
    redisFree(c);
    if (!rc) return 0;
  }
  return -ENOTCONN;
}

/* ================================================================ watcher */

struct fb_sentinel_watch {
  const struct fb_redis_endpoint *ep;
  pthread_t thread;
  atomic_bool stop;
  struct fb_hostport primary; /* last known; port 0 = not yet */
};

/* The primary is (now) at `at`: when that is news, every connection moves. */
static void primary_is(struct fb_sentinel_watch *w, const struct fb_hostport *at)
{
  if (w->primary.port && (w->primary.port != at->port || strcmp(w->primary.host, at->host))) {
    fb_warn("sentinel",
            "failover: the primary of %s moved from %s:%d to %s:%d; every connection "
            "follows",
            w->ep->sentinel_master, w->primary.host, w->primary.port, at->host, at->port);
    fb_redis_primary_moved();
  }
  w->primary = *at;
}

/* A pub/sub message: ["message", "+switch-master", "<name> <old ip> <old
 * port> <new ip> <new port>"]. */
static void on_message(struct fb_sentinel_watch *w, const redisReply *rep)
{
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
      rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") ||
      rep->element[2]->type != REDIS_REPLY_STRING)
    return;
  char name[128], oh[256], op[16];
  struct fb_hostport at;
  if (sscanf(rep->element[2]->str, "%127s %255s %15s %255s %d", name, oh, op, at.host, &at.port) !=
          5 ||
      strcmp(name, w->ep->sentinel_master))
    return;
  primary_is(w, &at);
}

/* Listens on one sentinel until it fails or we stop. */
static void listen_on(struct fb_sentinel_watch *w, redisContext *c, const struct fb_hostport *s)
{
  /* A failover may have happened while nobody listened. */
  struct fb_hostport at;
  char why[300];
  if (!ask(w->ep, c, s, &at, why, sizeof why)) primary_is(w, &at);
  redisReply *rep = redisCommand(c, "SUBSCRIBE +switch-master");
  if (!rep || rep->type == REDIS_REPLY_ERROR) {
    fb_warn("sentinel", "cannot subscribe on %s:%d: %s", s->host, s->port,
            rep ? rep->str : c->errstr);
    if (rep) freeReplyObject(rep);
    return;
  }
  freeReplyObject(rep);
  fb_debug("sentinel", "watching %s:%d for failovers of %s", s->host, s->port,
           w->ep->sentinel_master);
  while (!atomic_load(&w->stop)) {
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int r = poll(&pfd, 1, WATCH_POLL_MS);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return;
    if (r == 0) continue;
    if (redisBufferRead(c) != REDIS_OK) {
      fb_warn("sentinel", "lost sentinel %s:%d: %s; trying the next", s->host, s->port, c->errstr);
      return;
    }
    void *v = NULL;
    while (redisGetReplyFromReader(c, &v) == REDIS_OK && v) {
      on_message(w, v);
      freeReplyObject(v);
      v = NULL;
    }
  }
}

static void *watch(void *arg)
{
  struct fb_sentinel_watch *w = arg;
  size_t next = 0;
  while (!atomic_load(&w->stop)) {
    for (size_t k = 0; k < w->ep->nsentinels && !atomic_load(&w->stop); k++) {
      const struct fb_hostport *s = &w->ep->sentinels[(next + k) % w->ep->nsentinels];
      char why[300];
      redisContext *c = sentinel_connect(w->ep, s, why, sizeof why);
      if (!c) continue;
      listen_on(w, c, s);
      redisFree(c);
      next = (next + k + 1) % w->ep->nsentinels; /* the next one after a loss */
      break;
    }
    for (int t = 0; t < WATCH_RETRY_MS / WATCH_POLL_MS && !atomic_load(&w->stop); t++)
      fb_sleep_ms(WATCH_POLL_MS);
  }
  return NULL;
}

int fb_sentinel_watch_start(struct fb_sentinel_watch **out, const struct fb_redis_endpoint *ep)
{
  struct fb_sentinel_watch *w = calloc(1, sizeof *w);
  if (!w) return -ENOMEM;
  w->ep = ep;
  int rc = pthread_create(&w->thread, NULL, watch, w);
  if (rc) {
    free(w);
    return -rc;
  }
  *out = w;
  return 0;
}

void fb_sentinel_watch_stop(struct fb_sentinel_watch *w)
{
  if (!w) return;
  atomic_store(&w->stop, true);
  pthread_join(w->thread, NULL);
  free(w);
}
