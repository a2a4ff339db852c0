/*
 * The REST API: routes a parsed request to its handler and fills a
 * response. Knows nothing of libwebsockets (http_server.c does the wire), so
 * every route can be read in one place. Runs on the HTTP thread only: it owns
 * `redis`, the connection registrations are written through.
 */
#ifndef FRAMEBUFFER_API_H
#define FRAMEBUFFER_API_H

#include <stdbool.h>
#include <stddef.h>

#include "framebuffer/app.h"
#include "framebuffer/buf.h"
#include "framebuffer/redis.h"

#define FB_BODY_MAX (64 * 1024)

enum fb_method { FB_GET, FB_POST, FB_PUT, FB_DELETE, FB_HEAD, FB_OPTIONS, FB_PATCH, FB_OTHER };

struct fb_request {
  enum fb_method method;
  const char *path;       /* without query string, NUL-terminated */
  const char *capability; /* ?capability= (search), or NULL */
  const char *status;     /* ?status= (search), or NULL */
  const char *body;       /* may be NULL when body_len is 0 */
  size_t body_len;
  const char *authorization; /* header value, or NULL */
  const char *content_type;  /* header value, or NULL */
  const char *request_id;    /* X-Request-ID (given or made up), never NULL */
};

struct fb_response {
  int status;
  const char *content_type;
  struct fb_buf body; /* created by the caller with a maximum */
  const char *allow;  /* Allow header for 405, or NULL */
  bool challenge;     /* add WWW-Authenticate: Bearer */
};

struct fb_api {
  struct fb_app *app;
  struct fb_redis redis;
};

void fb_api_init(struct fb_api *api, struct fb_app *app);
void fb_api_close(struct fb_api *api);

/* Handles one request. Never fails: every problem becomes a status. */
void fb_api_handle(struct fb_api *api, const struct fb_request *req, struct fb_response *resp);

/* True when a page from `origin` (the Origin header) may call the API and
 * open /ws: it is this gateway's own (`host`, the Host header), or listed in
 * `allowed` (ALLOWED_ORIGINS: comma-separated, or "*"). No Origin (not a
 * browser) is allowed. Pure. */
bool fb_origin_allowed(const char *origin, const char *host, const char *allowed);

/* True when a listed origin (ALLOWED_ORIGINS) is `origin`: then responses
 * carry CORS headers for it. Pure. */
bool fb_origin_listed(const char *origin, const char *allowed);

/* Fills `resp` with {"detail": msg}. */
void fb_api_error(struct fb_response *resp, int status, const char *msg);

/* The JSON the dashboard and /api/v1/stats show. Returns a new json_t. */
json_t *fb_api_stats(struct fb_app *app);

/* Any thread: {"redis":b,"group":b,"nats":b or "disabled"} as /health and
 * the fleet view show them. Returns a new json_t. */
json_t *fb_api_connections(struct fb_app *app);

#endif
