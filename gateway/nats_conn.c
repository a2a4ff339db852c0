/*
 * The NATS connection (see nats_conn.h). nats.c owns its threads; the
 * connection callbacks only update atomics. `subs` is the main thread's, at
 * start and stop; fb_nats_check's `core_checked` the control thread's.
 */
#include "framebuffer/nats_conn.h"

#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/clock.h"
#include "framebuffer/log.h"

#define EVENTS_SUBJECT "processors.events"
#define SUBS_MAX       4
#define IO_BUF_SIZE    (1024 * 1024) /* publishes are written out a megabyte at a time */

struct fb_nats {
  struct fb_app *app;
  natsOptions *opts;
  natsConnection *nc;
  natsSubscription *subs[SUBS_MAX]; /* main thread */
  int nsubs;
  atomic_bool connected;
  atomic_bool closing; /* fb_nats_stop has begun: a disconnect is expected */
  bool core_checked;   /* control thread: the FRAMES check of core mode ran */
};

/* ============================================================ connection */

static void on_disconnected(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  atomic_store(&n->connected, false);
  atomic_store(&n->app->metrics->nats_up, 0);
  if (!atomic_load(&n->closing))
    fb_warn("nats", "disconnected from NATS; reconnecting with backoff (Redis routing goes on)");
}

static void on_connected(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  atomic_store(&n->connected, true);
  atomic_store(&n->app->metrics->nats_up, 1);
  fb_info("nats", "connected to %s", url);
}

static void on_closed(natsConnection *nc, void *closure)
{
  struct fb_nats *n = closure;
  atomic_store(&n->connected, false);
  atomic_store(&n->app->metrics->nats_up, 0);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
  fb_warn("nats", "asynchronous error: %s", natsStatus_GetText(err));
}

/* Reconnect backoff: 250 ms doubling to 5 s, restarting after a success. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
  int64_t d = 250;
  for (int i = 1; i < attempts && d < 5000; i++)
    d *= 2;
  return d > 5000 ? 5000 : d;
}

static int set_servers(natsOptions *opts, const char *urls)
{
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", urls);
  const char *servers[32];
  int count = 0;
  char *save = NULL;
  for (char *s = strtok_r(copy, ",", &save); s && count < 32; s = strtok_r(NULL, ",", &save)) {
    while (*s == ' ')
      s++;
    if (*s) servers[count++] = s;
  }
  return natsOptions_SetServers(opts, servers, count) == NATS_OK ? 0 : -EINVAL;
}

static int build_options(struct fb_nats *n)
{
  const struct fb_config *c = n->app->cfg;
  char name[300];
  snprintf(name, sizeof name, "frame-buffer %s", c->consumer_name);
  natsStatus s = natsOptions_Create(&n->opts);
  if (s == NATS_OK && set_servers(n->opts, c->nats_url)) s = NATS_INVALID_ARG;
  if (s == NATS_OK) s = natsOptions_SetName(n->opts, name);
  if (s == NATS_OK) s = natsOptions_SetNoEcho(n->opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(n->opts, -1);
  if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(n->opts, reconnect_delay, n);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(n->opts, 32 * 1024 * 1024);
  if (s == NATS_OK) s = natsOptions_SetIOBufSize(n->opts, IO_BUF_SIZE);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected, n);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected, n);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(n->opts, on_connected, n);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(n->opts, on_closed, n);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(n->opts, on_error, n);
  if (s == NATS_OK && c->nats_token[0]) s = natsOptions_SetToken(n->opts, c->nats_token);
  if (s == NATS_OK && c->nats_user[0])
    s = natsOptions_SetUserInfo(n->opts, c->nats_user, c->nats_password);
  if (s == NATS_OK && c->nats_creds[0])
    s = natsOptions_SetUserCredentialsFromFiles(n->opts, c->nats_creds, NULL);
  if (s == NATS_OK && c->nats_tls_ca[0]) {
    s = natsOptions_LoadCATrustedCertificates(n->opts, c->nats_tls_ca);
    if (s == NATS_OK) s = natsOptions_SetSecure(n->opts, true);
  }
  if (s != NATS_OK) {
    /* Said the way a bad setting is said: main exits with status 2. */
    fprintf(stderr,
            "frame-buffer: invalid NATS setting (NATS_URL, NATS_CREDS, NATS_TLS_CA, ...): %s\n",
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s));
    return -EINVAL;
  }
  return 0;
}

bool fb_nats_is_connected(const struct fb_nats *n)
{
  return n && atomic_load(&n->connected);
}

natsConnection *fb_nats_connection(struct fb_nats *n)
{
  return n->nc;
}

int fb_nats_subscribe(struct fb_nats *n, const char *subject, natsMsgHandler cb, void *closure)
{
  natsStatus s = n->nsubs < SUBS_MAX ? NATS_OK : NATS_NO_MEMORY;
  if (s == NATS_OK) s = natsConnection_Subscribe(&n->subs[n->nsubs], n->nc, subject, cb, closure);
  if (s != NATS_OK) {
    fb_error("nats", "cannot subscribe: %s", natsStatus_GetText(s));
    return -EIO;
  }
  n->nsubs++;
  return 0;
}

/* ================================================================ events */

void fb_nats_publish_event(struct fb_nats *n, const char *event, const char *processor_id,
                           const char *status)
{
  if (!n || !atomic_load(&n->connected)) return;
  json_t *doc = json_pack("{s:s,s:s,s:s,s:I}", "event", event, "processor_id", processor_id,
                          "status", status, "at", (json_int_t)fb_wall_ms());
  char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  if (s) natsConnection_PublishString(n->nc, EVENTS_SUBJECT, s);
  free(s);
  json_decref(doc);
}

void fb_nats_check(struct fb_nats *n)
{
  if (!n || n->app->cfg->nats_jetstream || n->core_checked || !atomic_load(&n->connected)) return;
  n->core_checked = true;
  /* Core mode, yet a stream captures frames.ready.>: every frame published
   * is also stored there, with no consumer to take it away. */
  jsCtx *js = NULL;
  jsStreamInfo *si = NULL;
  if (natsConnection_JetStream(&js, n->nc, NULL) == NATS_OK &&
      js_GetStreamInfo(&si, js, FB_NATS_JS_STREAM, NULL, NULL) == NATS_OK)
    fb_warn("nats",
            "JetStream stream %s exists and stores every frame sent on %s, but this gateway "
            "runs core NATS (NATS_JETSTREAM=0): its messages pile up. Delete the stream, or "
            "set NATS_JETSTREAM=1",
            FB_NATS_JS_STREAM, FB_NATS_JS_SUBJECTS);
  jsStreamInfo_Destroy(si);
  jsCtx_Destroy(js);
}

/* ============================================================= lifecycle */

int fb_nats_start(struct fb_nats **out, struct fb_app *app)
{
  struct fb_nats *n = calloc(1, sizeof *n);
  if (!n) return -ENOMEM;
  n->app = app;
  if (build_options(n)) {
    fb_nats_stop(n);
    return -EINVAL;
  }
  natsStatus s = natsConnection_Connect(&n->nc, n->opts);
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    fb_error("nats", "cannot start the NATS client: %s (%s)", natsStatus_GetText(s),
             nats_GetLastError(NULL));
    fb_nats_stop(n);
    return -EINVAL;
  }
  if (s == NATS_NOT_YET_CONNECTED)
    fb_warn("nats", "NATS at %s is not reachable yet; retrying in the background",
            app->cfg->nats_url);
  else
    on_connected(n->nc, n); /* the callback only runs for a late first connect */
  *out = n;
  return 0;
}

void fb_nats_stop(struct fb_nats *n)
{
  if (!n) return;
  atomic_store(&n->closing, true);
  for (int i = 0; i < n->nsubs; i++)
    natsSubscription_Unsubscribe(n->subs[i]);
  for (int i = 0; i < n->nsubs; i++)
    natsSubscription_Destroy(n->subs[i]);
  if (n->nc) natsConnection_FlushTimeout(n->nc, 1000);
  natsConnection_Destroy(n->nc);
  natsOptions_Destroy(n->opts);
  /* The library runs the closed callback (which touches `n`) on its own
   * thread after the destroy: wait for its threads before freeing `n`. */
  nats_CloseAndWait(2000);
  free(n);
}
