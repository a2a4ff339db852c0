/*
 * The results bridge (see results.h). on_result runs on nats.c's threads and
 * appends to `buf` under `lock`; the results thread alone uses `redis`.
 */
#include "framebuffer/results.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"
#include "framebuffer/frame.h"
#include "framebuffer/log.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/redis.h"

#define RESULTS_PREFIX  "frames.results."
#define RESULTS_SUBJECT RESULTS_PREFIX ">"
#define RESULTS_MAX     (32u << 20)                     /* queued result commands, bytes */
#define RESULT_MAX      (FB_FRAME_MAX_BYTES * 2 + 1024) /* one result, bytes */

struct fb_results {
  struct fb_registry *reg;
  struct fb_metrics *m;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct fb_buf buf; /* RESP commands; guarded by lock */
  size_t count;      /* commands in buf; guarded by lock */
  bool stop;         /* guarded by lock */
  pthread_t thread;
  bool started;
  struct fb_redis redis; /* results thread only */
};

/* Appends an XADD of one result to the queue. Library thread. */
static void on_result(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
  struct fb_results *r = closure;
  const char *subject = natsMsg_GetSubject(msg);
  const char *pid = subject + sizeof RESULTS_PREFIX - 1;
  const char *data = natsMsg_GetData(msg);
  size_t len = (size_t)natsMsg_GetDataLength(msg);

  struct fb_snapshot *s = fb_registry_snapshot(r->reg);
  int idx = fb_snapshot_find(s, pid);
  json_t *doc = idx >= 0 && len <= RESULT_MAX ? json_loadb(data, len, 0, NULL) : NULL;
  if (idx < 0 || len > RESULT_MAX) {
    atomic_fetch_add(&r->m->results_dropped, 1);
    fb_debug("nats", "result on %s dropped: %s", subject,
             idx < 0 ? "unknown processor" : "too large");
    goto out;
  }

  /* An object's members become fields (strings as they are, the rest as
   * JSON); anything else is kept whole in a field named result. */
  char stamp[24];
  snprintf(stamp, sizeof stamp, "%lld", (long long)fb_wall_ms());
  size_t nfields = json_is_object(doc) ? json_object_size(doc) : 1;
  bool has_pid = json_is_object(doc) && json_object_get(doc, "processor_id");
  pthread_mutex_lock(&r->lock);
  struct fb_buf *o = &r->buf;
  size_t mark = o->len;
  fb_buf_resp_array(o, 3 + 2 * (nfields + (has_pid ? 0 : 1) + 1));
  fb_buf_resp_bulk(o, "XADD", 4);
  fb_buf_resp_bulk(o, s->procs[idx]->result_stream, strlen(s->procs[idx]->result_stream));
  fb_buf_resp_bulk(o, "*", 1);
  if (json_is_object(doc)) {
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
      fb_buf_resp_bulk(o, key, strlen(key));
      if (json_is_string(v)) {
        fb_buf_resp_bulk(o, json_string_value(v), json_string_length(v));
      } else {
        char *enc = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fb_buf_resp_bulk(o, enc ? enc : "null", enc ? strlen(enc) : 4);
        free(enc);
      }
    }
  } else {
    fb_buf_resp_bulk(o, "result", 6);
    fb_buf_resp_bulk(o, data, len);
  }
  if (!has_pid) {
    fb_buf_resp_bulk(o, "processor_id", 12);
    fb_buf_resp_bulk(o, pid, strlen(pid));
  }
  fb_buf_resp_bulk(o, "received_at_ms", 14);
  fb_buf_resp_bulk(o, stamp, strlen(stamp));
  if (o->truncated) {
    /* The queue is full (Redis is away): drop this result, keep the rest. */
    o->len = mark;
    o->truncated = false;
    atomic_fetch_add(&r->m->results_dropped, 1);
  } else {
    r->count++;
    pthread_cond_signal(&r->cond);
  }
  pthread_mutex_unlock(&r->lock);
out:
  json_decref(doc);
  fb_snapshot_release(s);
  natsMsg_Destroy(msg);
}

/* Writes queued results to Redis in one pipeline. A batch that fails is
 * kept and written again after the reconnect (a result may then be written
 * twice; results are at-least-once). */
static void *results_thread(void *arg)
{
  struct fb_results *r = arg;
  struct fb_buf mine;
  fb_buf_init(&mine, RESULTS_MAX);
  size_t count = 0;
  pthread_mutex_lock(&r->lock);
  for (;;) {
    while (!r->count && !count && !r->stop)
      pthread_cond_wait(&r->cond, &r->lock);
    if (r->stop && !r->count && !count) break;
    if (!count) {
      struct fb_buf t = mine;
      mine = r->buf;
      r->buf = t;
      fb_buf_reset(&r->buf);
      count = r->count;
      r->count = 0;
    }
    pthread_mutex_unlock(&r->lock);

    bool ok = fb_redis_ensure(&r->redis) == 0;
    if (ok) {
      redisContext *c = r->redis.ctx;
      redisAppendFormattedCommand(c, mine.data, mine.len);
      for (size_t i = 0; i < count && ok; i++) {
        void *rep = NULL;
        if (redisGetReply(c, &rep) != REDIS_OK) {
          fb_redis_drop(&r->redis, c->errstr);
          ok = false;
        } else {
          if (((redisReply *)rep)->type == REDIS_REPLY_ERROR) {
            fb_warn("nats", "writing a result: %s", ((redisReply *)rep)->str);
            atomic_fetch_add(&r->m->results_dropped, 1);
          } else {
            atomic_fetch_add(&r->m->results_written, 1);
          }
          freeReplyObject(rep);
        }
      }
    }
    if (ok) {
      fb_buf_reset(&mine);
      count = 0;
    } else {
      fb_sleep_ms(200);
    }
    pthread_mutex_lock(&r->lock);
    if (!ok && r->stop) break; /* Redis is gone at shutdown: give up */
  }
  pthread_mutex_unlock(&r->lock);
  if (count) fb_warn("nats", "%zu results not written at shutdown: Redis unreachable", count);
  fb_buf_free(&mine);
  return NULL;
}

int fb_results_start(struct fb_results **out, struct fb_nats *nats,
                     const struct fb_redis_endpoint *redis, struct fb_registry *reg,
                     struct fb_metrics *m)
{
  struct fb_results *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  r->reg = reg;
  r->m = m;
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->cond, NULL);
  fb_buf_init(&r->buf, RESULTS_MAX);
  fb_redis_init(&r->redis, redis, "results", 2000);
  if (pthread_create(&r->thread, NULL, results_thread, r)) {
    fb_error("nats", "cannot subscribe: %s", natsStatus_GetText(NATS_NO_MEMORY));
    fb_results_stop(r);
    return -EIO;
  }
  r->started = true;
  /* No subscription is left when this fails: `r` can go. */
  int rc = fb_nats_subscribe(nats, RESULTS_SUBJECT, on_result, r);
  if (rc) {
    fb_results_stop(r);
    return rc;
  }
  *out = r;
  return 0;
}

void fb_results_stop(struct fb_results *r)
{
  if (!r) return;
  if (r->started) {
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
  }
  fb_redis_close(&r->redis);
  fb_buf_free(&r->buf);
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->cond);
  free(r);
}
