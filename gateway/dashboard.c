/*
 * The dashboard: its embedded files, and the WebSocket /ws (subprotocol
 * "fb-dashboard") that pushes a snapshot of /api/v1/stats four times a
 * second and every event as it happens.
 *
 * Threads: everything here runs on the lws service thread, except the
 * waker, which other threads call (it only calls lws_cancel_service). The
 * per-vhost state and the clients belong to the service thread.
 *
 * A slow browser never slows anything else: each client has a bounded queue
 * of shared messages; a newer snapshot replaces one not yet sent, and a
 * client whose queue overflows with events is disconnected (it reconnects
 * and starts over with a hello).
 */
#include "framebuffer/dashboard.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "framebuffer/clock.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/log.h"

#define SNAPSHOT_US     (250 * LWS_US_PER_MS)
#define HISTORY_SECONDS 300
#define CLIENT_QUEUE    64 /* messages waiting per client */
#define MAX_CLIENTS     256
#define SNDBUF          (256 * 1024) /* kernel send buffer per browser: bounded too */

/* ================================================================ assets */

bool fb_dashboard_serve(const char *path, struct fb_response *resp)
{
  if (!strcmp(path, "/")) path = "/index.html";
  for (const struct fb_asset *a = fb_dashboard_assets; a->path; a++) {
    if (strcmp(a->path, path)) continue;
    resp->status = 200;
    resp->content_type = a->type;
    fb_buf_reset(&resp->body);
    fb_buf_append(&resp->body, a->data, a->size);
    return true;
  }
  return false;
}

/* ============================================================== messages */

/* A message shared by every client it is queued for. */
struct msg {
  int refs;
  bool snapshot;
  size_t len;
  unsigned char data[]; /* LWS_PRE bytes of room, then the text */
};

static struct msg *msg_new(const char *text, size_t len, bool snapshot)
{
  struct msg *m = malloc(sizeof *m + LWS_PRE + len);
  if (!m) return NULL;
  m->refs = 1;
  m->snapshot = snapshot;
  m->len = len;
  memcpy(m->data + LWS_PRE, text, len);
  return m;
}

static void msg_release(struct msg *m)
{
  if (m && --m->refs == 0) free(m);
}

/* ================================================================ state */

struct client {
  struct client *next;
  struct lws *wsi;
  struct msg *queue[CLIENT_QUEUE]; /* FIFO */
  size_t head, count;
  bool overflow;
};

struct history_point {
  int64_t t, in, out;
};

/* Per vhost, service thread only. */
struct vhd {
  struct lws_context *ctx;
  struct lws_vhost *vhost;
  const struct lws_protocols *protocol;
  struct fb_app *app;
  struct client *clients;
  size_t nclients;
  lws_sorted_usec_list_t sul;
  int64_t next_tick_us; /* when the next snapshot is due, monotonic */
  uint64_t event_seq;
  struct history_point history[HISTORY_SECONDS];
  size_t hist_next, hist_count;
  int64_t last_history_ms;
};

static void enqueue(struct vhd *v, struct client *c, struct msg *m)
{
  if (m->snapshot) {
    /* Latest wins: a snapshot still waiting is replaced, in place. */
    for (size_t k = 0; k < c->count; k++) {
      struct msg **slot = &c->queue[(c->head + k) % CLIENT_QUEUE];
      if ((*slot)->snapshot) {
        msg_release(*slot);
        m->refs++;
        *slot = m;
        return;
      }
    }
  }
  if (c->count == CLIENT_QUEUE) {
    c->overflow = true; /* closed on its next writeable */
    return;
  }
  m->refs++;
  c->queue[(c->head + c->count++) % CLIENT_QUEUE] = m;
}

static void broadcast(struct vhd *v, struct msg *m)
{
  for (struct client *c = v->clients; c; c = c->next)
    enqueue(v, c, m);
  lws_callback_on_writable_all_protocol_vhost(v->vhost, v->protocol);
}

static struct msg *json_msg(json_t *doc, bool snapshot)
{
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (!s) return NULL;
  struct msg *m = msg_new(s, strlen(s), snapshot);
  free(s);
  return m;
}

static void push_events(struct vhd *v)
{
  struct fb_event evs[64];
  size_t n;
  while ((n = fb_events_since(v->app->events, &v->event_seq, evs, 64)) > 0) {
    for (size_t i = 0; i < n; i++) {
      json_t *doc = fb_event_to_json(&evs[i]);
      struct msg *m = doc ? json_msg(doc, false) : NULL;
      if (!m) continue;
      broadcast(v, m);
      msg_release(m);
    }
    if (n < 64) break;
  }
}

static void record_history(struct vhd *v, int64_t now)
{
  if (now - v->last_history_ms < 1000) return;
  v->last_history_ms = now;
  int64_t in, out;
  fb_fleet_rates(v->app->fleet, &in, &out);
  v->history[v->hist_next] = (struct history_point){now, in, out};
  v->hist_next = (v->hist_next + 1) % HISTORY_SECONDS;
  if (v->hist_count < HISTORY_SECONDS) v->hist_count++;
}

static void tick(lws_sorted_usec_list_t *sul);

/* Arms the next tick from the time the last one was due, so that delays do
 * not add up; after a long stall it starts afresh. */
static void schedule(struct vhd *v)
{
  int64_t now = (int64_t)(fb_mono_ns() / 1000);
  v->next_tick_us += SNAPSHOT_US;
  if (v->next_tick_us < now - SNAPSHOT_US) v->next_tick_us = now + SNAPSHOT_US;
  int64_t wait = v->next_tick_us - now;
  lws_sul_schedule(v->ctx, 0, &v->sul, tick, wait > 0 ? wait : 0);
}

/* Four times a second: one snapshot, serialized once, for every client. */
static void tick(lws_sorted_usec_list_t *sul)
{
  struct vhd *v = lws_container_of(sul, struct vhd, sul);
  record_history(v, fb_wall_ms());
  if (v->clients) {
    json_t *doc = fb_api_stats(v->app);
    if (doc) {
      json_object_set_new(doc, "type", json_string("snapshot"));
      struct msg *m = json_msg(doc, true);
      if (m) {
        broadcast(v, m);
        msg_release(m);
      }
    }
  }
  schedule(v);
}

static struct msg *hello(struct vhd *v)
{
  struct fb_app *app = v->app;
  json_t *events = json_array(), *history = json_array();
  struct fb_event evs[100];
  uint64_t from = 0;
  size_t n = fb_events_since(app->events, &from, evs, 100);
  for (size_t i = 0; i < n; i++)
    json_array_append_new(events, fb_event_to_json(&evs[i]));
  for (size_t k = 0; k < v->hist_count; k++) {
    const struct history_point *h =
        &v->history[(v->hist_next + HISTORY_SECONDS - v->hist_count + k) % HISTORY_SECONDS];
    json_array_append_new(history, json_pack("{s:I,s:I,s:I}", "t", (json_int_t)h->t, "in",
                                             (json_int_t)h->in, "out", (json_int_t)h->out));
  }
  return json_msg(json_pack("{s:s,s:s,s:s,s:b,s:o,s:o}", "type", "hello", "version", FB_VERSION,
                            "consumer", app->cfg->consumer_name, "auth_required",
                            app->cfg->api_token[0] != '\0', "events", events, "history", history),
                  false);
}

/* ============================================================== callback */

static void drop_client(struct vhd *v, struct client *c)
{
  for (struct client **pp = &v->clients; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      v->nclients--;
      break;
    }
  for (size_t k = 0; k < c->count; k++)
    msg_release(c->queue[(c->head + k) % CLIENT_QUEUE]);
  c->count = 0;
}

static int callback_dashboard(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                              void *in, size_t len)
{
  struct client *c = user;
  struct lws_vhost *vh = lws_get_vhost(wsi);
  const struct lws_protocols *proto = lws_get_protocol(wsi);
  struct vhd *v = vh && proto ? lws_protocol_vh_priv_get(vh, proto) : NULL;

  switch (reason) {
  case LWS_CALLBACK_PROTOCOL_INIT:
    v = lws_protocol_vh_priv_zalloc(vh, proto, sizeof *v);
    if (!v) return -1;
    v->ctx = lws_get_context(wsi);
    v->vhost = vh;
    v->protocol = proto;
    v->app = proto->user; /* set by fb_dashboard_protocol */
    v->next_tick_us = (int64_t)(fb_mono_ns() / 1000);
    schedule(v);
    return 0;

  case LWS_CALLBACK_PROTOCOL_DESTROY:
    if (v) lws_sul_cancel(&v->sul);
    return 0;

  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    if (v) push_events(v);
    return 0;

  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
    /* Before the handshake is answered: a page of another site must not
     * read the gateway's state through the visitor's browser. */
    char origin[256] = "", host[256] = "";
    lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST);
    if (v && fb_origin_allowed(origin, host, v->app->cfg->allowed_origins)) return 0;
    fb_warn("dashboard", "refusing a WebSocket from origin %s (not %s, nor in ALLOWED_ORIGINS)",
            origin, host);
    return -1;
  }

  case LWS_CALLBACK_ESTABLISHED: {
    char uri[64] = "";
    lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI);
    if (!v || strcmp(uri, "/ws") || v->nclients >= MAX_CLIENTS) {
      fb_warn("dashboard", "refusing a WebSocket on %s (%zu clients)", uri, v ? v->nclients : 0);
      return -1;
    }

    memset(c, 0, sizeof *c);
    c->wsi = wsi;
    /* A browser that stops reading must not park megabytes in the kernel. */
    int sndbuf = SNDBUF;
    setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    c->next = v->clients;
    v->clients = c;
    v->nclients++;
    atomic_store(&v->app->metrics->dashboard_clients, (int64_t)v->nclients);
    struct msg *m = hello(v);
    if (m) {
      enqueue(v, c, m);
      msg_release(m);
    }
    lws_callback_on_writable(wsi);
    fb_debug("dashboard", "browser connected (%zu now)", v->nclients);
    return 0;
  }

  case LWS_CALLBACK_SERVER_WRITEABLE: {
    if (!v || !c->wsi) return 0;
    if (c->overflow) {
      fb_warn("dashboard", "a browser fell too far behind; disconnecting it");
      return -1;
    }
    if (!c->count) return 0;
    struct msg *m = c->queue[c->head];
    c->head = (c->head + 1) % CLIENT_QUEUE;
    c->count--;
    int n = lws_write(wsi, m->data + LWS_PRE, m->len, LWS_WRITE_TEXT);
    msg_release(m);
    if (n < 0) return -1;
    if (c->count) lws_callback_on_writable(wsi);
    return 0;
  }

  case LWS_CALLBACK_RECEIVE: return 0; /* the page talks to the REST API, not to us */

  case LWS_CALLBACK_CLOSED:
    if (v && c->wsi) {
      drop_client(v, c);
      c->wsi = NULL;
      atomic_store(&v->app->metrics->dashboard_clients, (int64_t)v->nclients);
      fb_debug("dashboard", "browser disconnected (%zu left)", v->nclients);
    }
    return 0;

  default: return 0;
  }
}

struct lws_protocols fb_dashboard_protocol(struct fb_app *app)
{
  return (struct lws_protocols){
      .name = "fb-dashboard",
      .callback = callback_dashboard,
      .per_session_data_size = sizeof(struct client),
      .rx_buffer_size = 4096,
      .user = app,
  };
}

void fb_dashboard_wake(void *ctx)
{
  lws_cancel_service(ctx);
}
