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

#define FB_BODY_MAX  (64 * 1024)
#define FB_QUERY_MAX 8 /* query arguments kept per request; more are a 422 */

enum fb_method { FB_GET, FB_POST, FB_PUT, FB_DELETE, FB_HEAD, FB_OPTIONS, FB_PATCH, FB_OTHER };

/* One query argument, URL-decoded: ?name=value. */
struct fb_query_arg {
  const char *name;
  const char *value; /* "" for ?name or ?name= */
};

struct fb_request {
  enum fb_method method;
  const char *path;                 /* without query string, NUL-terminated */
  const struct fb_query_arg *query; /* in the order given; may be NULL when nquery is 0 */
  size_t nquery;
  bool query_truncated; /* more than FB_QUERY_MAX arguments, or one too long */
  const char *body;     /* may be NULL when body_len is 0 */
  size_t body_len;
  const char *authorization; /* header value, or NULL */
  const char *content_type;  /* header value, or NULL */
  const char *request_id;    /* X-Request-ID (given or made up), never NULL */
};

struct fb_response {
  int status;
  const char *content_type;
  struct fb_buf body; /* created by the caller with a maximum */
  const char *allow;  /* Allow header (405, OPTIONS), or NULL; static */
  const char *route;  /* the route template that answered, for metrics; static, or NULL */
  bool challenge;     /* add WWW-Authenticate: Bearer */
};

struct fb_api {
  struct fb_app *app;
  struct fb_redis redis;
};

/*
 * A route's handler. `param` is the path segment its template's {...}
 * matched (NUL-terminated), or NULL for a template without one. The
 * dispatcher has already checked the method, the token the route needs and,
 * for POST and PUT, the Content-Type. HTTP thread only.
 */
typedef void fb_api_handler(struct fb_api *api, const struct fb_request *req, const char *param,
                            struct fb_response *resp);

/* Who may call a route. */
enum fb_access {
  FB_ACCESS_OPEN,      /* anyone (reads) */
  FB_ACCESS_OPERATOR,  /* API_TOKEN, when one is set */
  FB_ACCESS_PROCESSOR, /* API_TOKEN or PROCESSOR_TOKEN (register, heartbeat) */
};

/* One line of the route table (api.c): a method on a path template. A
 * template is literal segments and at most one "{name}" segment, which
 * matches any one segment; a literal template wins over one with a
 * parameter for the same path. GET routes answer HEAD too; OPTIONS is
 * answered from the table. */
struct fb_route {
  enum fb_method method;
  const char *path;
  enum fb_access access;
  fb_api_handler *handler;
};

void fb_api_init(struct fb_api *api, struct fb_app *app);
void fb_api_close(struct fb_api *api);

/* Handles one request. Never fails: every problem becomes a status. Sets
 * resp->route to the matched template (or NULL: no route) and, for 405 and
 * OPTIONS, resp->allow to the methods the path takes. */
void fb_api_handle(struct fb_api *api, const struct fb_request *req, struct fb_response *resp);

/* The route template `path` falls under ("/api/v1/processors/{id}"), or
 * NULL when none: what the `route` label of the HTTP metrics says. Pure. */
const char *fb_api_route_of(const char *path);

/* The value of query argument `name`, or NULL when absent. Pure. */
const char *fb_request_arg(const struct fb_request *req, const char *name);

/* Answers 422 when the request has a query argument not in `known` (NULL-
 * terminated), naming it and the closest known one, or more arguments than
 * the gateway keeps. Returns true when the query is fine. */
bool fb_api_check_query(const struct fb_request *req, const char *const *known,
                        struct fb_response *resp);

/* The request's body as a JSON object (new reference), or NULL after
 * answering 400 with where the JSON is wrong. */
json_t *fb_api_json_body(const struct fb_request *req, struct fb_response *resp);

/* Fills `resp` with `doc` (taken) as JSON and `status`. */
void fb_api_respond_json(struct fb_response *resp, int status, json_t *doc);

/*
 * For a handler's Redis work on api->redis: call after an attempt that
 * failed. When the connection was lost (Redis restarted or went away since
 * the last call, found only now), arranges a fresh connection at once and
 * returns true on the first attempt (0): try once more. Otherwise false:
 * answer the error. `do rc = op(); while (rc && fb_api_retry(api, attempt++));`
 */
bool fb_api_retry(struct fb_api *api, int attempt);

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
