/*
 * The client: options, connect, the receive loop with reconnects, acks,
 * results, stats and close. Everything here runs on the owner thread except
 * fbc_stats and the option helpers (any thread); the heartbeat thread is
 * started and stopped from here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fbc_internal.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000

/* ------------------------------------------------------------- options --- */

void fbc_options_init_sized(struct fbc_options *o, size_t size)
{
  struct fbc_options d = {
      .size = size < sizeof d ? size : sizeof d,
      .capacity = 4,
      .transport = FBC_REDIS,
      .api_url = FBCI_DEFAULT_API,
      .redis_url = FBCI_DEFAULT_REDIS,
      .result_stream = "frames:results",
      .result_maxlen = 1000000,
      .heartbeat_interval_ms = 30000,
  };
  memset(o, 0, size);
  memcpy(o, &d, d.size);
}

static void env_str(const char **field, const char *name)
{
  const char *v = getenv(name);
  if (v && *v) *field = v;
}

int fbc_options_from_env(struct fbc_options *o)
{
  env_str(&o->api_url, "FB_API");
  env_str(&o->api_token, "API_TOKEN");
  env_str(&o->redis_url, "REDIS_URL");
  env_str(&o->nats_url, "NATS_URL");
  env_str(&o->nats_token, "NATS_TOKEN");
  env_str(&o->nats_user, "NATS_USER");
  env_str(&o->nats_password, "NATS_PASSWORD");
  env_str(&o->nats_creds, "NATS_CREDS");
  env_str(&o->nats_tls_ca, "NATS_TLS_CA");
  env_str(&o->id, "PROCESSOR_ID");
  env_str(&o->capabilities, "PROCESSOR_CAPABILITIES");
  const char *t = NULL;
  env_str(&t, "PROCESSOR_TRANSPORT");
  if (!t) return 0;
  if (strcmp(t, "redis") == 0)
    o->transport = FBC_REDIS;
  else if (strcmp(t, "nats") == 0)
    o->transport = FBC_NATS;
  else if (strcmp(t, "jetstream") == 0)
    o->transport = FBC_JETSTREAM;
  else
    return -EINVAL;
  return 0;
}

static char *dup_or_null(const char *s)
{
  return s ? strdup(s) : NULL;
}

/* Whether `s` is a NATS subject without wildcards. */
static bool valid_subject(const char *s)
{
  size_t n = strlen(s);
  return n > 0 && n < 256 && !strpbrk(s, " \t*>") && s[0] != '.' && s[n - 1] != '.' &&
         !strstr(s, "..");
}

/* Checks the comma-separated capabilities: 1-256 items of 1-127 name chars. */
static int check_caps(const char *caps, char *why, size_t n)
{
  if (!caps || !*caps) {
    snprintf(why, n, "capabilities: required (comma-separated detection types)");
    return -EINVAL;
  }
  size_t items = 0;
  for (const char *p = caps;; p++) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    char item[128];
    if (len == 0 || len >= sizeof item) {
      snprintf(why, n, "capabilities: '%s' has an empty item or one over 127 bytes", caps);
      return -EINVAL;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (!fbci_valid_id(item)) {
      snprintf(why, n, "capabilities: '%s' has a character outside [A-Za-z0-9._:-]", item);
      return -EINVAL;
    }
    if (++items > 256) {
      snprintf(why, n, "capabilities: more than 256");
      return -EINVAL;
    }
    if (!e) break;
    p = e;
  }
  return 0;
}

int fbci_config_make(struct fbci_config *cfg, const struct fbc_options *opts, char *why, size_t n)
{
  memset(cfg, 0, sizeof *cfg);
  char err[FBCI_ERR_MAX];
  if (!opts || opts->size < offsetof(struct fbc_options, log)) {
    snprintf(why, n, "options: not set up with fbc_options_init");
    return -EINVAL;
  }
  /* Only the first `size` bytes are the caller's: the rest keep defaults. */
  struct fbc_options o;
  fbc_options_init(&o);
  memcpy(&o, opts, opts->size < sizeof o ? opts->size : sizeof o);
  if (!fbci_valid_id(o.id)) {
    snprintf(why, n, "id: '%s' is not 1-128 of [A-Za-z0-9._:-]", o.id ? o.id : "");
    return -EINVAL;
  }
  if (check_caps(o.capabilities, why, n) < 0) return -EINVAL;
  if (o.capacity < 1 || o.capacity > 100000) {
    snprintf(why, n, "capacity: %d is not in [1, 100000]", o.capacity);
    return -EINVAL;
  }
  if (o.transport != FBC_REDIS && o.transport != FBC_NATS && o.transport != FBC_JETSTREAM) {
    snprintf(why, n, "transport: %d is not FBC_REDIS, FBC_NATS or FBC_JETSTREAM", (int)o.transport);
    return -EINVAL;
  }
  if (o.heartbeat_interval_ms < 0) {
    snprintf(why, n, "heartbeat_interval_ms: %d is negative", o.heartbeat_interval_ms);
    return -EINVAL;
  }
  if (o.result_maxlen < 0) {
    snprintf(why, n, "result_maxlen: %lld is negative", o.result_maxlen);
    return -EINVAL;
  }
  if (!o.result_stream || !*o.result_stream) {
    snprintf(why, n, "result_stream: must not be empty");
    return -EINVAL;
  }
  if (!o.redis_url || fbci_redis_url_parse(&cfg->redis, o.redis_url, err, sizeof err) < 0) {
    snprintf(why, n, "redis_url: %s", o.redis_url ? err : "required");
    return -EINVAL;
  }
  bool use_api = o.api_url && *o.api_url && strcmp(o.api_url, "none") != 0;
  if (use_api && strncmp(o.api_url, "http://", 7) != 0 && strncmp(o.api_url, "https://", 8) != 0) {
    snprintf(why, n, "api_url: '%s' is not http://host[:port] or https://...", o.api_url);
    return -EINVAL;
  }
  bool nats = o.nats_url && *o.nats_url && strcmp(o.nats_url, "none") != 0;
  if (!nats && o.transport != FBC_REDIS) {
    snprintf(why, n, "nats_url: the %s transport needs NATS",
             o.transport == FBC_NATS ? "NATS" : "JetStream");
    return -EINVAL;
  }
  if (nats && fbci_nats_url_check(o.nats_url, err, sizeof err) < 0) {
    snprintf(why, n, "nats_url: %s", err);
    return -EINVAL;
  }
  /* The gateway takes heartbeats and results from one subject token
   * (processors.heartbeat.*, frames.results.*): an id with a '.' cannot. */
  bool dotted = strchr(o.id, '.') != NULL;
  if (o.transport != FBC_REDIS && dotted) {
    snprintf(why, n,
             "id: '%s' has a '.', which NATS cannot use: the gateway takes heartbeats and "
             "results from one subject token (processors.heartbeat.*, frames.results.*)",
             o.id);
    return -EINVAL;
  }
  if (o.subject && o.transport == FBC_REDIS) {
    snprintf(why, n, "subject: only for the NATS and JetStream transports");
    return -EINVAL;
  }
  if (o.subject && !valid_subject(o.subject)) {
    snprintf(why, n, "subject: '%s' is not a NATS subject without wildcards", o.subject);
    return -EINVAL;
  }
  snprintf(cfg->stream, sizeof cfg->stream, "frames:ready:%s", o.id);
  snprintf(cfg->hb_subject, sizeof cfg->hb_subject, "processors.heartbeat.%s", o.id);
  snprintf(cfg->results_subject, sizeof cfg->results_subject, "frames.results.%s", o.id);
  char subject[300];
  snprintf(subject, sizeof subject, "%s%s", o.subject ? "" : FBCI_READY_PREFIX,
           o.subject ? o.subject : o.id);
  if (o.transport == FBC_JETSTREAM &&
      strncmp(subject, FBCI_READY_PREFIX, strlen(FBCI_READY_PREFIX)) != 0) {
    snprintf(why, n, "subject: '%s' is outside frames.ready.>, the subjects of stream FRAMES",
             subject);
    return -EINVAL;
  }
  cfg->capacity = o.capacity;
  cfg->transport = o.transport;
  cfg->result_maxlen = o.result_maxlen;
  cfg->heartbeat_ms = o.heartbeat_interval_ms;
  cfg->unregister = o.unregister_on_close;
  cfg->use_api = use_api;
  cfg->hb_nats = nats && !dotted;
  cfg->id = strdup(o.id);
  cfg->capabilities = strdup(o.capabilities);
  cfg->api_url = dup_or_null(use_api ? o.api_url : NULL);
  cfg->api_token = dup_or_null(o.api_token && *o.api_token ? o.api_token : NULL);
  cfg->redis_url = strdup(o.redis_url);
  cfg->nats_url = dup_or_null(nats ? o.nats_url : NULL);
  cfg->subject = strdup(subject);
  cfg->result_stream = strdup(o.result_stream);
  cfg->nats_token = dup_or_null(o.nats_token);
  cfg->nats_user = dup_or_null(o.nats_user);
  cfg->nats_password = dup_or_null(o.nats_password);
  cfg->nats_creds = dup_or_null(o.nats_creds);
  cfg->nats_tls_ca = dup_or_null(o.nats_tls_ca);
  if (!cfg->id || !cfg->capabilities || !cfg->redis_url || !cfg->subject || !cfg->result_stream) {
    fbci_config_free(cfg);
    snprintf(why, n, "out of memory");
    return -ENOMEM;
  }
  return 0;
}

void fbci_config_free(struct fbci_config *cfg)
{
  char **all[] = {&cfg->id,         &cfg->capabilities, &cfg->api_url,       &cfg->api_token,
                  &cfg->redis_url,  &cfg->nats_url,     &cfg->subject,       &cfg->result_stream,
                  &cfg->nats_token, &cfg->nats_user,    &cfg->nats_password, &cfg->nats_creds,
                  &cfg->nats_tls_ca};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
    free(*all[i]);
    *all[i] = NULL;
  }
}

int fbc_options_validate(const struct fbc_options *o, char *why, size_t whylen)
{
  char scratch[FBCI_ERR_MAX];
  struct fbci_config cfg;
  int rc = fbci_config_make(&cfg, o, why ? why : scratch, why ? whylen : sizeof scratch);
  if (rc == 0) fbci_config_free(&cfg);
  return rc;
}

/* ---------------------------------------------------------- transport --- */

static int transport_open(struct fbc_client *c, char *err, size_t errlen)
{
  return c->cfg.transport == FBC_REDIS ? fbci_redis_open(c, err, errlen)
                                       : fbci_nats_open(c, err, errlen);
}

static void transport_release(struct fbc_client *c)
{
  if (c->cfg.transport == FBC_REDIS)
    fbci_redis_release(c);
  else
    fbci_nats_release(c);
  c->nframes = 0;
}

static void transport_close(struct fbc_client *c)
{
  if (c->cfg.transport == FBC_REDIS)
    fbci_redis_close(c);
  else
    fbci_nats_close_transport(c);
  c->nframes = 0;
  c->connected = false;
}

/* A connection is lost: close it and try again after the backoff. */
static void lost(struct fbc_client *c, const char *why)
{
  fbci_log(c, FBC_LOG_WARN, "lost %s: %s; reconnecting",
           c->cfg.transport == FBC_REDIS ? "Redis" : "NATS", why);
  transport_close(c);
  c->next_attempt_us = fbci_mono_us() + c->backoff_ms * 1000;
}

/* Opens the transport when it is due. 0: open; -EAGAIN: not yet; -EINVAL. */
static int ensure_open(struct fbc_client *c)
{
  if (c->connected) return 0;
  if (fbci_mono_us() < c->next_attempt_us) return -EAGAIN;
  char err[FBCI_ERR_MAX];
  const char *source = c->cfg.transport == FBC_REDIS ? "Redis" : "NATS";
  int rc = transport_open(c, err, sizeof err);
  if (rc == -EINVAL) {
    fbci_log(c, FBC_LOG_ERROR, "%s", err);
    atomic_store(&c->fatal, -EINVAL);
    return -EINVAL;
  }
  if (rc < 0) {
    if (c->failures++ == 0) fbci_log(c, FBC_LOG_WARN, "%s; retrying with backoff", err);
    c->next_attempt_us = fbci_mono_us() + c->backoff_ms * 1000;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    return -EAGAIN;
  }
  if (c->ever_connected) {
    fbci_log(c, FBC_LOG_INFO, "reconnected to %s (after %d failed attempts)", source, c->failures);
    atomic_fetch_add(&c->reconnects, 1);
  } else if (c->failures) {
    fbci_log(c, FBC_LOG_INFO, "connected to %s (after %d failed attempts)", source, c->failures);
  }
  c->ever_connected = c->connected = true;
  c->failures = 0;
  c->backoff_ms = BACKOFF_FIRST_MS;
  return 0;
}

/* -------------------------------------------------------------- client --- */

/* Frees a client whose threads are stopped and transport closed; NATS gets
 * `flush_ms` to send what it holds. */
static void client_free(struct fbc_client *c, int flush_ms)
{
  fbci_hb_free(c);
  fbci_nats_close(c->nc, flush_ms);
  free(c->frames);
  free(c->argv);
  fbci_config_free(&c->cfg);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

int fbc_connect(struct fbc_client **out, const struct fbc_options *o)
{
  *out = NULL;
  struct fbc_client *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  if (o && o->size >= offsetof(struct fbc_options, log_user) + sizeof o->log_user) {
    c->log = o->log;
    c->log_user = o->log_user;
  }
  c->nats_logger.log = c->log;
  c->nats_logger.user = c->log_user;
  char why[FBCI_ERR_MAX];
  int rc = fbci_config_make(&c->cfg, o, why, sizeof why);
  if (rc < 0) {
    fbci_log(c, FBC_LOG_ERROR, "%s", why);
    free(c);
    return rc;
  }
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->backoff_ms = BACKOFF_FIRST_MS;
  c->frames = calloc(FBC_MAX_BATCH, sizeof *c->frames);
  c->argv = calloc(FBC_MAX_BATCH + 3, sizeof *c->argv);
  if (!c->frames || !c->argv) {
    rc = -ENOMEM;
    goto fail;
  }
  const struct fbci_config *cfg = &c->cfg;
  if (cfg->nats_url) {
    char name[200], err[FBCI_ERR_MAX];
    snprintf(name, sizeof name, "libframebuffer-client %s", cfg->id);
    struct fbci_nats_auth auth = {cfg->nats_token, cfg->nats_user, cfg->nats_password,
                                  cfg->nats_creds, cfg->nats_tls_ca};
    c->nc = fbci_nats_connect(cfg->nats_url, name, &auth, true, &c->nats_logger, err, sizeof err);
    if (!c->nc) {
      fbci_log(c, FBC_LOG_ERROR, "%s", err);
      rc = -EINVAL;
      goto fail;
    }
    if (!fbci_nats_is_connected(c->nc))
      fbci_log(c, FBC_LOG_WARN, "NATS at %s is not reachable yet; retrying in the background",
               cfg->nats_url);
  }
  if (cfg->use_api) {
    rc = fbci_register_once(c);
    if (rc == -EINVAL) goto fail;
  }
  rc = ensure_open(c);
  if (rc == -EINVAL) goto fail;
  rc = fbci_hb_start(c);
  if (rc < 0) {
    fbci_log(c, FBC_LOG_ERROR, "cannot start the heartbeat thread: %s", fbc_strerror(rc));
    goto fail;
  }
  if (cfg->transport == FBC_REDIS)
    fbci_log(c, FBC_LOG_INFO, "%s: consuming %s as %s/%s, results to %s%s", cfg->id, cfg->stream,
             FBCI_GROUP, cfg->id, cfg->result_stream, cfg->use_api ? "" : " (no REST API)");
  else if (cfg->transport == FBC_JETSTREAM)
    fbci_log(c, FBC_LOG_INFO,
             "%s: pulling %s from JetStream stream " FBCI_JS_STREAM
             " (durable consumer %s), results on %s%s",
             cfg->id, cfg->subject, cfg->id, cfg->results_subject,
             cfg->use_api ? "" : " (no REST API)");
  else
    fbci_log(c, FBC_LOG_INFO, "%s: subscribed to %s (core NATS, queue group %s), results on %s%s",
             cfg->id, cfg->subject, cfg->id, cfg->results_subject,
             cfg->use_api ? "" : " (no REST API)");
  *out = c;
  return 0;
fail:
  transport_close(c);
  client_free(c, 0);
  return rc;
}

/* The frames of the current batch that were not acked leave our hands. */
static void drop_batch(struct fbc_client *c)
{
  transport_release(c);
  atomic_store(&c->in_flight, 0);
}

int fbc_next(struct fbc_client *c, const struct fbc_frame **frames, size_t max, int timeout_ms)
{
  drop_batch(c);
  int fatal = atomic_load(&c->fatal);
  if (fatal) return fatal;
  if (max > FBC_MAX_BATCH) max = FBC_MAX_BATCH;
  if (max == 0) return 0;
  if (timeout_ms < 0) timeout_ms = 0;
  const int64_t deadline = fbci_mono_us() + (int64_t)timeout_ms * 1000;
  for (;;) {
    int64_t now = fbci_mono_us();
    int rc = ensure_open(c);
    if (rc == -EINVAL) return rc;
    if (rc < 0) {
      if (now >= deadline) return 0;
      int64_t until = c->next_attempt_us < deadline ? c->next_attempt_us : deadline;
      struct timespec ts = {.tv_sec = (until - now) / 1000000,
                            .tv_nsec = (long)((until - now) % 1000000) * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    int left_ms = (int)((deadline - now + 999) / 1000);
    if (left_ms < 0) left_ms = 0;
    char err[FBCI_ERR_MAX];
    int n = c->cfg.transport == FBC_REDIS ? fbci_redis_receive(c, max, left_ms, err, sizeof err)
                                          : fbci_nats_receive(c, max, left_ms, err, sizeof err);
    if (n < 0) {
      lost(c, err);
      continue;
    }
    if (n == 0) {
      /* Switched from our old pending entries to new ones, or a batch held
       * only entries that were no frames: read again while time is left. */
      transport_release(c);
      if (fbci_mono_us() < deadline || (c->cfg.transport == FBC_REDIS && !c->history_done))
        continue;
      return 0;
    }
    c->nframes = (size_t)n;
    for (int i = 0; i < n; i++)
      frames[i] = &c->frames[i];
    atomic_fetch_add(&c->received, (uint64_t)n);
    atomic_store(&c->in_flight, n);
    return n;
  }
}

/* Whether `f` is a frame of the current batch. */
static bool in_batch(const struct fbc_client *c, const struct fbc_frame *f)
{
  return f >= c->frames && f < c->frames + c->nframes;
}

int fbc_ack(struct fbc_client *c, const struct fbc_frame *const *frames, size_t n)
{
  if (n == 0) return 0;
  if (n > c->nframes) return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!in_batch(c, frames[i])) return -EINVAL;
  if (!c->connected) return -ECONNRESET;
  int rc =
      c->cfg.transport == FBC_REDIS ? fbci_redis_ack(c, frames, n) : fbci_nats_ack(c, frames, n);
  if (rc < 0) {
    lost(c, "while acknowledging");
    return rc;
  }
  int64_t now = fbci_mono_us();
  uint64_t us = 0, newly = 0;
  for (size_t i = 0; i < n; i++) {
    struct fbc_frame *f = (struct fbc_frame *)frames[i]; /* the client's own memory */
    if (f->acked) continue;
    f->acked = true;
    newly++;
    us += (uint64_t)(now - f->received_us);
  }
  atomic_fetch_add(&c->acked, newly);
  atomic_fetch_add(&c->work_us, us);
  atomic_fetch_add(&c->work_frames, newly);
  atomic_fetch_sub(&c->in_flight, (int_fast64_t)newly);
  return 0;
}

int fbc_result_fields(struct fbc_client *c, const struct fbc_frame *f, const char *json,
                      const char *const *fields, size_t nfields)
{
  if (!f || !json || !in_batch(c, f) || (nfields && !fields) || nfields > 64) return -EINVAL;
  if (!c->connected) return -ECONNRESET;
  /* A shadow copy's result says so, so that the two versions can be told
   * apart in the result stream. */
  const char *all[2 * 64 + 4];
  size_t n = nfields;
  memcpy(all, fields ? fields : all, 2 * nfields * sizeof *all);
  static const char *const shadow_fields[] = {"shadow", "shadow_of"};
  for (size_t k = 0; k < 2; k++) {
    const char *v = fbc_frame_field(f, shadow_fields[k]);
    if (v) {
      all[2 * n] = shadow_fields[k];
      all[2 * n + 1] = v;
      n++;
    }
  }
  int rc = c->cfg.transport == FBC_REDIS ? fbci_redis_result(c, f, json, all, n)
                                         : fbci_nats_result(c, f, json, all, n);
  if (rc == 0) atomic_fetch_add(&c->results, 1);
  return rc;
}

int fbc_result(struct fbc_client *c, const struct fbc_frame *f, const char *json)
{
  return fbc_result_fields(c, f, json, NULL, 0);
}

int fbc_flush(struct fbc_client *c)
{
  if (c->cfg.transport != FBC_REDIS || !c->connected) return 0;
  int rc = fbci_redis_flush(c);
  if (rc < 0) lost(c, "while writing results");
  return rc;
}

int fbc_close(struct fbc_client *c)
{
  if (!c) return 0;
  fbci_hb_stop(c);
  fbc_flush(c);
  drop_batch(c);
  transport_close(c);
  int rc = fbci_say_goodbye(c);
  client_free(c, 2000);
  return rc;
}

void fbc_stats_sized(const struct fbc_client *c, struct fbc_stats *dst, size_t size)
{
  struct fbc_client *m = (struct fbc_client *)c; /* atomics only */
  struct fbc_stats st = {.size = size < sizeof st ? size : sizeof st}, *out = &st;
  out->received = atomic_load(&m->received);
  out->acked = atomic_load(&m->acked);
  out->results = atomic_load(&m->results);
  out->skipped = atomic_load(&m->skipped);
  out->reconnects = atomic_load(&m->reconnects);
  out->in_flight = atomic_load(&m->in_flight);
  out->registered = atomic_load(&m->registered);
  memset(dst, 0, size);
  memcpy(dst, &st, st.size);
}
