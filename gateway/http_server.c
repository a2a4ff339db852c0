/*
 * HTTP wire handling on libwebsockets: reads a request (method, path, query,
 * a body of at most FB_BODY_MAX bytes), hands it to api.c, writes the
 * response with X-Request-ID. Everything here runs on the lws service thread.
 */
#include "framebuffer/http_server.h"

#include <errno.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "framebuffer/api.h"
#include "framebuffer/clock.h"
#include "framebuffer/dashboard.h"
#include "framebuffer/events.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"

#define RESPONSE_MAX     (32u << 20) /* /metrics and lists of many processors */
#define CHUNK            16384
#define TIMEOUT_S        10 /* headers, or a silence in the body, longer than this: closed */
#define BODY_DEADLINE_NS (UINT64_C(10) * 1000000000) /* a whole body, however it trickles */
#define FD_RESERVE       128 /* descriptors kept for Redis, NATS and files, whatever clients do */

struct fb_http {
  struct fb_app *app;
  struct fb_api api; /* service thread only */
  struct lws_context *ctx;
  pthread_t thread;
  bool running; /* the service thread was started */
  atomic_bool stop;
  struct lws_protocols protocols[3];
};

/* Per connection: the request being read and the response being written. */
struct session {
  bool active;
  enum fb_method method;
  char path[512];
  char query_buf[1024]; /* the query arguments' names and values, NUL-separated */
  struct fb_query_arg query[FB_QUERY_MAX];
  size_t nquery;
  bool query_truncated;
  char auth[512];
  bool has_auth;
  char content_type[128];
  char origin[256];
  bool preflight; /* OPTIONS with Access-Control-Request-Method */
  char request_id[129];
  struct fb_buf body;
  bool too_large;
  bool close_after; /* the request's body is not read: close once answered */
  struct fb_response resp;
  size_t sent;
  uint64_t started_ns;
};

/* ================================================================ request */

static enum fb_method method_of(struct lws *wsi)
{
  char *uri;
  int len;
  switch (lws_http_get_uri_and_method(wsi, &uri, &len)) {
  case LWSHUMETH_GET: return FB_GET;
  case LWSHUMETH_POST: return FB_POST;
  case LWSHUMETH_PUT: return FB_PUT;
  case LWSHUMETH_DELETE: return FB_DELETE;
  case LWSHUMETH_HEAD: return FB_HEAD;
  case LWSHUMETH_OPTIONS: return FB_OPTIONS;
  case LWSHUMETH_PATCH: return FB_PATCH;
  default: return FB_OTHER;
  }
}

static const char *method_name(enum fb_method m)
{
  static const char *const names[] = {"GET",  "POST",    "PUT",   "DELETE",
                                      "HEAD", "OPTIONS", "PATCH", "?"};
  return names[m];
}

/* A request id we echo must be safe in a header and a log line. */
static void take_request_id(struct lws *wsi, struct session *s)
{
  int n = lws_hdr_custom_copy(wsi, s->request_id, sizeof s->request_id, "x-request-id:", 13);
  bool ok = n > 0;
  for (int i = 0; ok && i < n; i++)
    ok = s->request_id[i] > ' ' && s->request_id[i] < 0x7f;
  if (ok) return;
  uint8_t rnd[8];
  if (lws_get_random(lws_get_context(wsi), rnd, sizeof rnd) != sizeof rnd)
    memset(rnd, 0, sizeof rnd);
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf(s->request_id + 2 * i, 3, "%02x", rnd[i]);
}

/* The query's arguments (URL-decoded by lws), name and value apart; an
 * empty one (`?&a=1`) is skipped. lws says -1 both for "no more" and for
 * "does not fit"; the fragment's length tells them apart. */
static void take_query(struct lws *wsi, struct session *s)
{
  size_t used = 0;
  for (int i = 0;; i++) {
    char frag[512];
    int n = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < 0 && lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i) <= 0) break; /* none */
    if (n == 0) continue;
    if (n < 0 || s->nquery == FB_QUERY_MAX || used + (size_t)n + 2 > sizeof s->query_buf) {
      s->query_truncated = true; /* too long, or too many */
      continue;
    }
    char *name = s->query_buf + used;
    memcpy(name, frag, (size_t)n);
    name[n] = '\0';
    used += (size_t)n + 1;
    char *eq = strchr(name, '=');
    if (eq) *eq = '\0';
    s->query[s->nquery++] = (struct fb_query_arg){name, eq ? eq + 1 : name + n};
  }
}

static int begin(struct lws *wsi, struct session *s, const char *uri)
{
  memset(s, 0, sizeof *s);
  s->active = true;
  s->started_ns = fb_mono_ns();
  s->method = method_of(wsi);
  snprintf(s->path, sizeof s->path, "%s", uri && *uri ? uri : "/");
  /* Paths are accepted with or without the trailing slash. */
  size_t n = strlen(s->path);
  while (n > 1 && s->path[n - 1] == '/')
    s->path[--n] = '\0';
  take_query(wsi, s);
  int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
  if (alen > 0 && alen < (int)sizeof s->auth) {
    lws_hdr_copy(wsi, s->auth, sizeof s->auth, WSI_TOKEN_HTTP_AUTHORIZATION);
    s->has_auth = true;
  } else if (alen > 0) {
    snprintf(s->auth, sizeof s->auth, "oversized");
    s->has_auth = true;
  }
  take_request_id(wsi, s);
  lws_hdr_copy(wsi, s->content_type, sizeof s->content_type, WSI_TOKEN_HTTP_CONTENT_TYPE);
  lws_hdr_copy(wsi, s->origin, sizeof s->origin, WSI_TOKEN_ORIGIN);
  s->preflight = s->method == FB_OPTIONS && s->origin[0] &&
                 lws_hdr_custom_length(wsi, "access-control-request-method:", 30) > 0;
  fb_buf_init(&s->body, FB_BODY_MAX);
  fb_buf_init(&s->resp.body, RESPONSE_MAX);
  return 0;
}

static void end(struct session *s)
{
  if (!s || !s->active) return;
  fb_buf_free(&s->body);
  fb_buf_free(&s->resp.body);
  s->active = false;
}

/* =============================================================== response */

/* A file of the dashboard ("/" is its page). */
static bool is_asset(const char *path)
{
  if (!strcmp(path, "/")) return true;
  for (const struct fb_asset *a = fb_dashboard_assets; a->path; a++)
    if (!strcmp(a->path, path)) return true;
  return false;
}

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *e)
{
  return lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)value,
                                     (int)strlen(value), p, e);
}

/* CORS headers, only for an origin listed in ALLOWED_ORIGINS: other sites'
 * pages get none, so their browsers keep them from reading anything. */
static int add_cors(struct lws *wsi, const struct fb_http *h, const struct session *s,
                    unsigned char **p, unsigned char *e)
{
  if (!fb_origin_listed(s->origin, h->app->cfg->allowed_origins)) return 0;
  if (add_header(wsi, "Access-Control-Allow-Origin:", s->origin, p, e) ||
      add_header(wsi, "Vary:", "Origin", p, e) ||
      add_header(wsi, "Access-Control-Expose-Headers:", "X-Request-ID", p, e))
    return -1;
  if (!s->preflight) return 0;
  const char *methods = s->resp.allow ? s->resp.allow : "GET, HEAD, OPTIONS";
  return add_header(wsi, "Access-Control-Allow-Methods:", methods, p, e) ||
                 add_header(wsi, "Access-Control-Allow-Headers:",
                            "Authorization, Content-Type, X-Request-ID", p, e) ||
                 add_header(wsi, "Access-Control-Max-Age:", "600", p, e)
             ? -1
             : 0;
}

static int send_headers(struct lws *wsi, const struct fb_http *h, struct session *s)
{
  unsigned char buf[LWS_PRE + 1024];
  unsigned char *start = buf + LWS_PRE, *p = start, *e = buf + sizeof buf - 1;
  const struct fb_response *r = &s->resp;
  if (lws_add_http_common_headers(wsi, (unsigned)r->status, r->content_type,
                                  r->status == 204 ? LWS_ILLEGAL_HTTP_CONTENT_LEN : r->body.len, &p,
                                  e) ||
      add_header(wsi, "X-Request-ID:", s->request_id, &p, e) ||
      add_header(wsi, "Cache-Control:", "no-store", &p, e))
    return -1;
  if (r->allow && add_header(wsi, "Allow:", r->allow, &p, e)) return -1;
  if (r->challenge && add_header(wsi, "WWW-Authenticate:", "Bearer", &p, e)) return -1;
  if (add_cors(wsi, h, s, &p, e)) return -1;
  return lws_finalize_write_http_header(wsi, start, &p, e) ? -1 : 0;
}

static int finish(struct lws *wsi, struct session *s)
{
  const struct fb_http *h = lws_context_user(lws_get_context(wsi));
  uint64_t ns = fb_mono_ns() - s->started_ns;
  const char *route = s->resp.route ? s->resp.route : fb_api_route_of(s->path);
  if (!route) route = is_asset(s->path) ? "dashboard" : "other";
  fb_metrics_http_observe(h->app->metrics, route, s->resp.status, ns);
  fb_debug("http", "%s %s -> %d (%.2f ms, request %s)", method_name(s->method), s->path,
           s->resp.status, (double)ns / 1e6, s->request_id);
  bool close = s->too_large || s->close_after;
  end(s);
  if (close) return -1; /* the unread body is not worth draining */
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int respond(struct lws *wsi, struct session *s)
{
  const struct fb_http *h = lws_context_user(lws_get_context(wsi));
  if (send_headers(wsi, h, s)) return -1;
  if (s->method == FB_HEAD || !s->resp.body.len) return finish(wsi, s);
  lws_callback_on_writable(wsi);
  return 0;
}

static int write_body(struct lws *wsi, struct session *s)
{
  unsigned char buf[LWS_PRE + CHUNK];
  size_t left = s->resp.body.len - s->sent;
  size_t n = left < CHUNK ? left : CHUNK;
  memcpy(buf + LWS_PRE, s->resp.body.data + s->sent, n);
  bool last = n == left;
  if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
    return -1;
  s->sent += n;
  if (last) return finish(wsi, s);
  lws_callback_on_writable(wsi);
  return 0;
}

static int handle(struct lws *wsi, struct fb_http *h, struct session *s)
{
  if (s->too_large) {
    fb_api_error(&s->resp, 413, "request body is larger than 64 KiB");
    return respond(wsi, s);
  }
  if ((s->method == FB_GET || s->method == FB_HEAD) && fb_dashboard_serve(s->path, &s->resp)) {
    s->resp.route = "dashboard";
    return respond(wsi, s);
  }
  if (is_asset(s->path)) { /* the dashboard's files take GET alone */
    s->resp.route = "dashboard";
    s->resp.allow = "GET, HEAD, OPTIONS";
    if (s->method == FB_OPTIONS)
      s->resp.status = 204;
    else
      fb_api_error(&s->resp, 405, "Method Not Allowed");
    return respond(wsi, s);
  }
  /* OPTIONS, a CORS preflight included, is answered by the API: 204 with
   * the path's Allow (which the CORS headers repeat for a listed origin). */
  struct fb_request req = {
      .method = s->method,
      .path = s->path,
      .query = s->query,
      .nquery = s->nquery,
      .query_truncated = s->query_truncated,
      .body = s->body.data,
      .body_len = s->body.len,
      .authorization = s->has_auth ? s->auth : NULL,
      .content_type = s->content_type[0] ? s->content_type : NULL,
      .request_id = s->request_id,
  };
  fb_api_handle(&h->api, &req, &s->resp);
  return respond(wsi, s);
}

/* ============================================================== callback */

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
  struct session *s = user;
  struct fb_http *h = lws_context_user(lws_get_context(wsi));

  switch (reason) {
  case LWS_CALLBACK_HTTP: {
    if (!s || begin(wsi, s, in)) return -1;
    if (s->method != FB_POST && s->method != FB_PUT) return handle(wsi, h, s);
    char cl[32] = "";
    if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0) {
      char *endp;
      unsigned long long n = strtoull(cl, &endp, 10);
      if (*endp || n > FB_BODY_MAX) {
        s->too_large = true;
        return handle(wsi, h, s);
      }
      if (n == 0) return handle(wsi, h, s);
      return 0; /* wait for the body */
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
      /* libwebsockets 4.1 does not read chunked request bodies. */
      fb_api_error(&s->resp, 411,
                   "send the body with a Content-Length (chunked bodies are not "
                   "accepted)");
      s->close_after = true;
      return respond(wsi, s);
    }
    return handle(wsi, h, s); /* no body at all */
  }
  case LWS_CALLBACK_HTTP_BODY:
    if (!s || !s->active || s->too_large || s->resp.status) return 0;
    if (fb_mono_ns() - s->started_ns > BODY_DEADLINE_NS) { /* a byte now and then */
      fb_api_error(&s->resp, 408, "the request body took longer than 10 s");
      s->close_after = true;
      return respond(wsi, s);
    }
    if (fb_buf_append(&s->body, in, len)) {
      s->too_large = true;
      return handle(wsi, h, s);
    }
    return 0;
  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (!s || !s->active || s->resp.status) return 0;
    return handle(wsi, h, s);
  case LWS_CALLBACK_HTTP_WRITEABLE:
    if (!s || !s->active || !s->resp.status) return 0;
    return write_body(wsi, s);
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL: end(s); return 0;
  default: break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* =============================================================== service */

/* While the listener is being made, lws's lines are held back: when it
 * cannot bind, the gateway says so in one line of its own instead (set
 * and read on the main thread before the service thread exists). */
static bool holding;
static char held[4][512]; /* lines as lws_log keeps them */
static size_t nheld;

static void lws_log(int level, const char *line)
{
  char msg[512];
  snprintf(msg, sizeof msg, "%s", line);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
    msg[--n] = '\0';
  if (holding) {
    if (nheld < sizeof held / sizeof held[0]) snprintf(held[nheld++], sizeof held[0], "%s", msg);
    return;
  }
  fb_log(level & LLL_ERR ? FB_LOG_ERROR : FB_LOG_WARN, "lws", "%s", msg);
}

/* Why `host`:`port` cannot be listened on, found by trying it: an errno,
 * or 0 when it now can (the port was freed meanwhile). */
static int bind_error(const char *host, int port)
{
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  bool any = !strcmp(host, "0.0.0.0") || !strcmp(host, "*");
  int gai = getaddrinfo(any ? "0.0.0.0" : host, service, &hints, &ai);
  if (gai) return gai == EAI_SYSTEM ? errno : EADDRNOTAVAIL;
  int err = 0;
  int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
  if (fd < 0) {
    err = errno;
  } else {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen)) err = errno;
    close(fd);
  }
  freeaddrinfo(ai);
  return err;
}

/* The most connections lws may hold: what the process may open, less a
 * reserve, so that clients can never take the descriptors a reconnect to
 * Redis or NATS needs. Beyond it new connections are refused. */
static unsigned fd_limit(void)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY) return 0; /* lws's own */
  return rl.rlim_cur > 2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE)
                                      : (unsigned)(rl.rlim_cur / 2);
}

static void *service(void *arg)
{
  struct fb_http *h = arg;
  while (!atomic_load(&h->stop))
    if (lws_service(h->ctx, 0) < 0) break;
  return NULL;
}

int fb_http_listen(struct fb_http **out, struct fb_app *app, char *why, size_t n)
{
  struct fb_http *h = calloc(1, sizeof *h);
  if (!h) return -ENOMEM;
  h->app = app;
  fb_api_init(&h->api, app);
  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);

  h->protocols[0] = (struct lws_protocols){
      .name = "http", .callback = callback_http, .per_session_data_size = sizeof(struct session)};
  h->protocols[1] = fb_dashboard_protocol(app);
  h->protocols[2] = (struct lws_protocols){NULL, NULL, 0, 0, 0, NULL, 0};

  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = app->cfg->listen_port;
  const char *host = app->cfg->listen_host;
  info.iface = !strcmp(host, "0.0.0.0") || !strcmp(host, "*") ? NULL : host;
  info.protocols = h->protocols;
  info.user = h;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
  if (strchr(host, '.')) info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  info.timeout_secs = TIMEOUT_S;
  info.fd_limit_per_thread = fd_limit();
  info.keepalive_timeout = 30;
  info.max_http_header_data = 8192;
  /* Tried first by hand: a port in use is the usual refusal, and
   * libwebsockets leaks a little of a context it could not create. */
  int err = bind_error(host, app->cfg->listen_port);
  holding = true;
  nheld = 0;
  h->ctx = err ? NULL : lws_create_context(&info);
  holding = false;
  if (!h->ctx) {
    if (!err) err = bind_error(host, app->cfg->listen_port);
    snprintf(why, n, "cannot listen on %s:%d (--listen, LISTEN or PORT): %s", host,
             app->cfg->listen_port,
             err     ? strerror(err)
             : nheld ? held[0]
                     : "libwebsockets refused it");
    fb_api_close(&h->api);
    free(h);
    return err == EADDRINUSE ? -EADDRINUSE : -EINVAL;
  }
  for (size_t i = 0; i < nheld; i++) /* warnings of a listener that works */
    fb_warn("lws", "%s", held[i]);
  if (app->events) fb_events_set_waker(app->events, fb_dashboard_wake, h->ctx);
  *out = h;
  return 0;
}

int fb_http_run(struct fb_http *h)
{
  int rc = pthread_create(&h->thread, NULL, service, h);
  if (rc) return -rc;
  h->running = true;
  fb_info("http", "listening on http://%s:%d (API, /metrics, dashboard)", h->app->cfg->listen_host,
          h->app->cfg->listen_port);
  return 0;
}

void fb_http_stop(struct fb_http *h)
{
  if (!h) return;
  atomic_store(&h->stop, true);
  if (h->running) {
    lws_cancel_service(h->ctx);
    pthread_join(h->thread, NULL);
  }
  if (h->app->events) fb_events_set_waker(h->app->events, NULL, NULL);
  lws_context_destroy(h->ctx);
  fb_api_close(&h->api);
  free(h);
}
