/*
 * Registry persistence in Redis (see store.h). Small Lua scripts make each
 * change atomic; the caller's thread owns the connection.
 */
#include "framebuffer/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/log.h"

/* ARGV: replace ("0"/"1"), id, json, capabilities... Returns 1, or 0 when
 * the id is taken (register) or missing (replace). */
static const char save_script[] =
    "local reg = KEYS[1]\n"
    "local old = redis.call('HGET', reg, ARGV[2])\n"
    "if ARGV[1] == '0' and old then return 0 end\n"
    "if ARGV[1] == '1' and not old then return 0 end\n"
    "if old then\n"
    "  local ok, doc = pcall(cjson.decode, old)\n"
    "  if ok and type(doc) == 'table' and type(doc.capabilities) == 'table' then\n"
    "    for _, c in ipairs(doc.capabilities) do\n"
    "      if type(c) == 'string' then redis.call('SREM', KEYS[2] .. c, ARGV[2]) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', reg, ARGV[2], ARGV[3])\n"
    "for i = 4, #ARGV do redis.call('SADD', KEYS[2] .. ARGV[i], ARGV[2]) end\n"
    "return 1\n";

/* ARGV: id. Returns 1, or 0 when it was not registered. */
static const char delete_script[] =
    "local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not old then return 0 end\n"
    "local ok, doc = pcall(cjson.decode, old)\n"
    "if ok and type(doc) == 'table' and type(doc.capabilities) == 'table' then\n"
    "  for _, c in ipairs(doc.capabilities) do\n"
    "    if type(c) == 'string' then redis.call('SREM', KEYS[2] .. c, ARGV[1]) end\n"
    "  end\n"
    "end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "return 1\n";

static int io_error(redisReply *rep, char *why, size_t n, const char *what)
{
  snprintf(why, n, "Redis %s failed: %s", what,
           rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "not reachable");
  if (rep) freeReplyObject(rep);
  return -EIO;
}

int fb_store_save(struct fb_redis *r, const struct fb_proc *p, bool replace, char *why, size_t n)
{
  redisReply *rep;
  if (p->transport == FB_TRANSPORT_REDIS) {
    rep = fb_redis_cmd(r, "XGROUP CREATE %s %s $ MKSTREAM", p->stream, FB_PROCESSOR_GROUP);
    if (fb_reply_is_error(rep, "WRONGTYPE")) {
      snprintf(why, n, "queue %s exists in Redis and is not a stream", p->stream);
      freeReplyObject(rep);
      return -EINVAL;
    }
    if (!rep || (rep->type == REDIS_REPLY_ERROR && !fb_reply_is_error(rep, "BUSYGROUP")))
      return io_error(rep, why, n, "XGROUP CREATE");
    freeReplyObject(rep);
  }

  /* EVAL script 2 registry prefix replace id json capabilities... */
  size_t argc = 8 + p->ncaps;
  const char **argv = calloc(argc, sizeof *argv);
  if (!argv) return -ENOMEM;
  argv[0] = "EVAL";
  argv[1] = save_script;
  argv[2] = "2";
  argv[3] = FB_REGISTRY_KEY;
  argv[4] = FB_CAPABILITY_PREFIX;
  argv[5] = replace ? "1" : "0";
  argv[6] = p->id;
  argv[7] = p->stored;
  for (size_t i = 0; i < p->ncaps; i++)
    argv[8 + i] = p->caps[i];
  rep = fb_redis_argv(r, (int)argc, argv, NULL);
  free(argv);
  if (!rep || rep->type != REDIS_REPLY_INTEGER) return io_error(rep, why, n, "EVAL");
  long long ok = rep->integer;
  freeReplyObject(rep);
  if (ok) return 0;
  return replace ? -ENOENT : -EEXIST;
}

int fb_store_delete(struct fb_redis *r, const char *id)
{
  redisReply *rep = fb_redis_cmd(r, "EVAL %s 2 %s %s %s", delete_script, FB_REGISTRY_KEY,
                                 FB_CAPABILITY_PREFIX, id);
  char why[256];
  if (!rep || rep->type != REDIS_REPLY_INTEGER) {
    int rc = io_error(rep, why, sizeof why, "EVAL");
    fb_warn("store", "deleting %s: %s", id, why);
    return rc;
  }
  long long ok = rep->integer;
  freeReplyObject(rep);
  return ok ? 0 : -ENOENT;
}

int fb_store_purge(struct fb_redis *r, const char *stream)
{
  redisReply *rep = fb_redis_cmd(r, "DEL %s", stream);
  char why[256];
  if (!rep || rep->type != REDIS_REPLY_INTEGER) {
    int rc = io_error(rep, why, sizeof why, "DEL");
    fb_warn("store", "purging %s: %s", stream, why);
    return rc;
  }
  freeReplyObject(rep);
  return 0;
}

void fb_store_free(struct fb_proc **procs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    fb_proc_release(procs[i]);
  free(procs);
}

int fb_store_load(struct fb_redis *r, const char *input_stream, const struct fb_snapshot *known,
                  struct fb_proc ***out, size_t *n)
{
  *out = NULL;
  *n = 0;
  redisReply *rep = fb_redis_cmd(r, "HGETALL %s", FB_REGISTRY_KEY);
  if (!rep || rep->type != REDIS_REPLY_ARRAY) {
    if (rep) freeReplyObject(rep);
    return -EIO;
  }
  struct fb_proc **procs = calloc(rep->elements / 2 + 1, sizeof *procs);
  if (!procs) {
    freeReplyObject(rep);
    return -ENOMEM;
  }
  size_t count = 0, parsed = 0;
  for (size_t i = 0; i + 1 < rep->elements; i += 2) {
    const redisReply *k = rep->element[i], *v = rep->element[i + 1];
    /* Unchanged since the last read (the common case, twice a second):
     * no JSON to parse. */
    int idx = known && k->str ? fb_snapshot_find(known, k->str) : -1;
    const char *was = idx >= 0 ? known->procs[idx]->source : NULL;
    if (idx >= 0 && !was) was = known->procs[idx]->stored; /* written by us as it is */
    if (was && strlen(was) == v->len && !memcmp(was, v->str, v->len)) {
      procs[count] = known->procs[idx];
      atomic_fetch_add(&procs[count]->refs, 1);
      count++;
      continue;
    }
    json_error_t jerr;
    parsed++;
    json_t *doc = json_loadb(v->str, v->len, 0, &jerr);
    char why[256] = "";
    struct fb_proc *p = NULL;
    if (!doc)
      snprintf(why, sizeof why, "invalid JSON: %s", jerr.text);
    else if (fb_proc_from_json(&p, doc, input_stream, why, sizeof why) == 0 &&
             strcmp(p->id, k->str)) {
      snprintf(why, sizeof why, "stored under a different id (%s)", p->id);
      fb_proc_release(p);
      p = NULL;
    }
    json_decref(doc);
    if (p && !(p->source = strndup(v->str, v->len))) {
      snprintf(why, sizeof why, "out of memory");
      fb_proc_release(p);
      p = NULL;
    }
    if (p)
      procs[count++] = p;
    else
      fb_debug("store", "skipping registry entry %s: %s", k->str, why);
  }
  freeReplyObject(rep);
  if (parsed) fb_debug("store", "registry read: %zu entries, %zu new or changed", count, parsed);
  *out = procs;
  *n = count;
  return 0;
}
