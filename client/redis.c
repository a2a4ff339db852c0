/*
 * Redis for the library: URLs and connections (also used by the tools), and
 * the Redis transport: the processor's stream frames:ready:<id> read with
 * group frame-processors as consumer <id>, its own pending entries first;
 * results pipelined ahead of the acks. The transport's context belongs to
 * the owner thread; nothing here takes a lock.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fbc_internal.h"

/* ------------------------------------------------------- connections --- */

/* Copies the percent-decoded bytes [a, b) into out (size outlen).
 * Returns 0 or -EINVAL (bad escape, too long). */
static int pct_decode(char *out, size_t outlen, const char *a, const char *b)
{
  size_t n = 0;
  for (const char *p = a; p < b; p++) {
    char c = *p;
    if (c == '%') {
      if (b - p < 3 || !isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))
        return -EINVAL;
      char hex[3] = {p[1], p[2], 0};
      c = (char)strtol(hex, NULL, 16);
      p += 2;
    }
    if (n + 1 >= outlen) return -EINVAL;
    out[n++] = c;
  }
  out[n] = '\0';
  return 0;
}

int fbci_redis_url_parse(struct fbci_redis_url *out, const char *url, char *err, size_t errlen)
{
  memset(out, 0, sizeof *out);
  out->port = 6379;
  const char *scheme = "redis://";
  if (strncmp(url, scheme, strlen(scheme)) != 0) {
    snprintf(err, errlen, "'%s' does not start with redis://", url);
    return -EINVAL;
  }
  const char *p = url + strlen(scheme);
  const char *slash = strchr(p, '/');
  const char *auth_end = strrchr(p, '@');
  if (slash && auth_end && auth_end > slash) auth_end = NULL;
  if (auth_end) {
    const char *colon = memchr(p, ':', (size_t)(auth_end - p));
    const char *user_end = colon ? colon : auth_end;
    if (pct_decode(out->user, sizeof out->user, p, user_end) < 0 ||
        (colon && pct_decode(out->password, sizeof out->password, colon + 1, auth_end) < 0)) {
      snprintf(err, errlen, "bad user or password in Redis URL");
      return -EINVAL;
    }
    p = auth_end + 1;
  }
  const char *host_end = slash ? slash : p + strlen(p);
  const char *port_colon = NULL;
  if (*p == '[') { /* [ipv6]:port */
    const char *rb = memchr(p, ']', (size_t)(host_end - p));
    if (!rb) {
      snprintf(err, errlen, "unclosed '[' in Redis URL '%s'", url);
      return -EINVAL;
    }
    if ((size_t)(rb - p - 1) >= sizeof out->host) goto badhost;
    memcpy(out->host, p + 1, (size_t)(rb - p - 1));
    out->host[rb - p - 1] = '\0';
    if (rb + 1 < host_end && rb[1] == ':') port_colon = rb + 1;
  } else {
    port_colon = memchr(p, ':', (size_t)(host_end - p));
    const char *he = port_colon ? port_colon : host_end;
    if ((size_t)(he - p) >= sizeof out->host) goto badhost;
    memcpy(out->host, p, (size_t)(he - p));
    out->host[he - p] = '\0';
  }
  if (!out->host[0]) snprintf(out->host, sizeof out->host, "127.0.0.1");
  if (port_colon) {
    char portbuf[16];
    size_t plen = (size_t)(host_end - port_colon - 1);
    int64_t v;
    if (plen == 0 || plen >= sizeof portbuf) goto badport;
    memcpy(portbuf, port_colon + 1, plen);
    portbuf[plen] = '\0';
    if (fbci_parse_i64(portbuf, 1, 65535, &v) < 0) goto badport;
    out->port = (int)v;
  }
  if (slash && slash[1]) {
    int64_t v;
    if (fbci_parse_i64(slash + 1, 0, 15999, &v) < 0) {
      snprintf(err, errlen, "bad database number '%s' in Redis URL", slash + 1);
      return -EINVAL;
    }
    out->db = (int)v;
  }
  return 0;
badhost:
  snprintf(err, errlen, "host name too long in Redis URL");
  return -EINVAL;
badport:
  snprintf(err, errlen, "bad port in Redis URL '%s'", url);
  return -EINVAL;
}

redisContext *fbci_redis_connect(const struct fbci_redis_url *u, int timeout_ms, char *err,
                                 size_t errlen)
{
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  redisContext *c = redisConnectWithTimeout(u->host, u->port, tv);
  if (!c) {
    snprintf(err, errlen, "cannot allocate a Redis context");
    return NULL;
  }
  if (c->err) {
    snprintf(err, errlen, "Redis %s:%d: %s", u->host, u->port, c->errstr);
    redisFree(c);
    return NULL;
  }
  if (timeout_ms > 0) redisSetTimeout(c, tv);
  if (u->password[0]) {
    /* AUTH user pass (Redis 6 ACLs) or the classic AUTH pass. */
    const char *argv[3] = {"AUTH", u->user, u->password};
    int argc = 3;
    if (!u->user[0]) {
      argv[1] = u->password;
      argc = 2;
    }
    redisReply *r = fbci_redis_cmd(c, err, errlen, argc, argv);
    if (!r) goto fail;
    freeReplyObject(r);
  }
  if (u->db != 0) {
    char db[16];
    snprintf(db, sizeof db, "%d", u->db);
    redisReply *r = fbci_redis_cmd(c, err, errlen, 2, (const char *[]){"SELECT", db});
    if (!r) goto fail;
    freeReplyObject(r);
  }
  return c;
fail:
  redisFree(c);
  return NULL;
}

redisReply *fbci_redis_cmd(redisContext *c, char *err, size_t errlen, int argc, const char **argv)
{
  redisReply *r = redisCommandArgv(c, argc, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "%s: %s", argv[0], c->errstr[0] ? c->errstr : "connection lost");
    return NULL;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(err, errlen, "%s: %s", argv[0], r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

int fbci_redis_drain(redisContext *c, size_t n, char *err, size_t errlen)
{
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    void *v = NULL;
    if (redisGetReply(c, &v) != REDIS_OK || !v) {
      snprintf(err, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
      return -EIO;
    }
    redisReply *r = v;
    if (r->type == REDIS_REPLY_ERROR && rc == 0) {
      snprintf(err, errlen, "%s", r->str);
      rc = -EPROTO;
    }
    freeReplyObject(r);
  }
  return rc;
}

const redisReply *fbci_reply_field(const redisReply *flat, const char *field)
{
  if (!flat || flat->type != REDIS_REPLY_ARRAY) return NULL;
  for (size_t i = 0; i + 1 < flat->elements; i += 2) {
    const redisReply *k = flat->element[i];
    if ((k->type == REDIS_REPLY_STRING || k->type == REDIS_REPLY_STATUS) &&
        strcmp(k->str, field) == 0)
      return flat->element[i + 1];
  }
  return NULL;
}

/* --------------------------------------------------------- transport --- */

#define REDIS_CMD_TIMEOUT_MS 5000 /* on top of the BLOCK time */

static int create_group(struct fbc_client *c, char *err, size_t errlen)
{
  const char *argv[] = {"XGROUP", "CREATE", c->cfg.stream, FBCI_GROUP, "$", "MKSTREAM"};
  redisReply *r = redisCommandArgv(c->rc, 6, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "XGROUP CREATE: %s", c->rc->errstr);
    return -EIO;
  }
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0) {
    snprintf(err, errlen, "XGROUP CREATE %s: %s", c->cfg.stream, r->str);
    rc = -EIO;
  }
  freeReplyObject(r);
  return rc;
}

int fbci_redis_open(struct fbc_client *c, char *err, size_t errlen)
{
  /* The BLOCK of a read is at most the caller's timeout, which may be long:
   * the command timeout is set per read. */
  c->rc = fbci_redis_connect(&c->cfg.redis, REDIS_CMD_TIMEOUT_MS, err, errlen);
  if (!c->rc) return -ECONNREFUSED;
  int rc = create_group(c, err, errlen);
  if (rc < 0) {
    redisFree(c->rc);
    c->rc = NULL;
    return rc;
  }
  c->history_done = false; /* first what this consumer left pending before */
  snprintf(c->history_from, sizeof c->history_from, "0");
  c->queued = 0;
  return 0;
}

/* Reads the replies of queued results. A result refused by Redis (the
 * stream is of another type) would be refused forever: logged, not fatal. */
int fbci_redis_flush(struct fbc_client *c)
{
  if (!c->rc || c->queued == 0) return 0;
  char err[FBCI_ERR_MAX];
  size_t n = c->queued;
  c->queued = 0;
  int rc = fbci_redis_drain(c->rc, n, err, sizeof err);
  if (rc == -EPROTO) {
    fbci_log(c, FBC_LOG_ERROR, "writing results to %s: %s", c->cfg.result_stream, err);
    return 0;
  }
  if (rc < 0) {
    fbci_log(c, FBC_LOG_WARN, "lost Redis while writing results: %s", err);
    return -ECONNRESET;
  }
  return 0;
}

/* Acks entries that hold no frame (trimmed away, or not a field list): they
 * would otherwise come back at every restart. */
static void ack_skipped(struct fbc_client *c, const char **ids, size_t n)
{
  if (n == 0) return;
  c->argv[0] = "XACK";
  c->argv[1] = c->cfg.stream;
  c->argv[2] = FBCI_GROUP;
  memcpy(c->argv + 3, ids, n * sizeof *ids);
  redisAppendCommandArgv(c->rc, (int)(n + 3), c->argv, NULL);
  c->queued++; /* its reply is read with the next results */
  atomic_fetch_add(&c->skipped, n);
}

int fbci_redis_receive(struct fbc_client *c, size_t max, int block_ms, char *err, size_t errlen)
{
  if (fbci_redis_flush(c) < 0) {
    snprintf(err, errlen, "connection lost");
    return -EIO;
  }
  char count[16], block[16];
  snprintf(count, sizeof count, "%zu", max);
  snprintf(block, sizeof block, "%d", block_ms);
  const char *argv[11];
  int argc = 0;
  argv[argc++] = "XREADGROUP";
  argv[argc++] = "GROUP";
  argv[argc++] = FBCI_GROUP;
  argv[argc++] = c->cfg.id;
  argv[argc++] = "COUNT";
  argv[argc++] = count;
  if (c->history_done && block_ms > 0) {
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
  }
  argv[argc++] = "STREAMS";
  argv[argc++] = c->cfg.stream;
  argv[argc++] = c->history_done ? ">" : c->history_from;

  int tmo = block_ms + REDIS_CMD_TIMEOUT_MS;
  redisSetTimeout(c->rc, (struct timeval){.tv_sec = tmo / 1000, .tv_usec = (tmo % 1000) * 1000});
  redisReply *r = redisCommandArgv(c->rc, argc, argv, NULL);
  if (!r) {
    snprintf(err, errlen, "XREADGROUP: %s", c->rc->errstr[0] ? c->rc->errstr : "connection lost");
    return -EIO;
  }
  if (r->type == REDIS_REPLY_ERROR) {
    /* The stream or group vanished (Redis restarted empty, key deleted). */
    int rc = -EIO; /* reconnect after a pause rather than spin */
    if (strncmp(r->str, "NOGROUP", 7) == 0) {
      fbci_log(c, FBC_LOG_WARN, "group " FBCI_GROUP " on %s is gone; creating it again",
               c->cfg.stream);
      rc = create_group(c, err, errlen);
      c->history_done = false;
      snprintf(c->history_from, sizeof c->history_from, "0");
    } else {
      snprintf(err, errlen, "XREADGROUP: %s", r->str);
    }
    freeReplyObject(r);
    return rc;
  }
  /* [[stream, [[id, [f, v, ...]] ...]]] or nil on timeout */
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
      r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements < 2 ||
      r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    return 0;
  }
  const redisReply *entries = r->element[0]->element[1];
  if (entries->elements == 0 && !c->history_done) {
    c->history_done = true; /* nothing of ours pending any more: new entries now */
    freeReplyObject(r);
    return 0;
  }
  const char *skipped[FBC_MAX_BATCH];
  size_t nskipped = 0, n = 0;
  int64_t now = fbci_mono_us();
  for (size_t i = 0; i < entries->elements && n < max; i++) {
    const redisReply *e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
      continue;
    if (e->element[1]->type != REDIS_REPLY_ARRAY) {
      skipped[nskipped++] = e->element[0]->str;
      continue;
    }
    struct fbc_frame *f = &c->frames[n++];
    fbci_frame_from_redis(f, e->element[0]->str, e->element[1]);
    f->received_us = now;
  }
  if (!c->history_done && entries->elements > 0) {
    const redisReply *last = entries->element[entries->elements - 1];
    if (last->type == REDIS_REPLY_ARRAY && last->elements > 0 &&
        last->element[0]->type == REDIS_REPLY_STRING)
      snprintf(c->history_from, sizeof c->history_from, "%s", last->element[0]->str);
  }
  ack_skipped(c, skipped, nskipped);
  c->reply = r;
  return (int)n;
}

int fbci_redis_ack(struct fbc_client *c, const struct fbc_frame *const *f, size_t n)
{
  if (!c->rc) return -ECONNRESET;
  c->argv[0] = "XACK";
  c->argv[1] = c->cfg.stream;
  c->argv[2] = FBCI_GROUP;
  for (size_t i = 0; i < n; i++)
    c->argv[3 + i] = f[i]->source;
  redisAppendCommandArgv(c->rc, (int)(n + 3), c->argv, NULL);
  c->queued++;
  return fbci_redis_flush(c);
}

int fbci_redis_result(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                      const char *const *fields, size_t nfields)
{
  if (!c->rc) return -ECONNRESET;
  const struct fbci_config *cfg = &c->cfg;
  char maxlen[24], ts[32];
  snprintf(maxlen, sizeof maxlen, "%lld", cfg->result_maxlen);
  const char *fid = fbc_frame_id(f), *cam = fbc_frame_camera_id(f);
  const char *argv[22 + 2 * 16];
  if (nfields > 16) return -EINVAL;
  int argc = 0;
  argv[argc++] = "XADD";
  argv[argc++] = cfg->result_stream;
  if (cfg->result_maxlen > 0) {
    argv[argc++] = "MAXLEN";
    argv[argc++] = "~";
    argv[argc++] = maxlen;
  }
  argv[argc++] = "*";
  argv[argc++] = "processor_id";
  argv[argc++] = cfg->id;
  argv[argc++] = "frame_id";
  argv[argc++] = fid ? fid : "";
  argv[argc++] = "camera_id";
  argv[argc++] = cam ? cam : "";
  argv[argc++] = "result";
  argv[argc++] = json;
  argv[argc++] = "processed_at";
  argv[argc++] = fbci_iso8601(ts, sizeof ts, fbci_real_us());
  for (size_t i = 0; i < 2 * nfields; i++)
    argv[argc++] = fields[i] ? fields[i] : "";
  redisAppendCommandArgv(c->rc, argc, argv, NULL);
  c->queued++;
  return 0;
}

void fbci_redis_release(struct fbc_client *c)
{
  if (c->reply) freeReplyObject(c->reply);
  c->reply = NULL;
}

void fbci_redis_close(struct fbc_client *c)
{
  fbci_redis_release(c);
  if (c->rc) redisFree(c->rc);
  c->rc = NULL;
  c->queued = 0;
}
