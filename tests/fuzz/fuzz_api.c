/*
 * Fuzz target: the API's routing of a request: method, path (with or
 * without the trailing slash), the query arguments, the headers the API
 * reads (Authorization, Content-Type, X-Request-ID, Origin, Host) and the
 * body, through the dashboard's files (fb_dashboard_serve), and the route
 * table and handlers (fb_api_handle, OPTIONS and CORS preflights included),
 * as http_server.c calls them; and the Origin checks of the API and of /ws
 * (fb_origin_listed, fb_origin_allowed). The gateway has
 * an API token (fuzz-token), a processor token (proc-token), two allowed
 * origins, the processors of fuzz.h, and no Redis: writes answer 503.
 *
 * http_server.c takes the path, query and headers from libwebsockets in its
 * lws callback (begin()), which cannot run without a connection; the harness
 * does that part the same way: the path cut to 511 bytes and stripped of
 * trailing slashes, query arguments URL-decoded and kept as lws and
 * take_query() keep them, a header too long for its field left out (an Authorization of 512
 * bytes or more is "oversized").
 *
 * Input: a request as on the wire, "\r" optional:
 *   POST /api/v1/processors/register?x=1 HTTP/1.1
 *   Authorization: Bearer fuzz-token
 *   Content-Type: application/json
 *
 *   {"id":"tracker-1", ...}
 */
#include <ctype.h>
#include <strings.h>

#include "fuzz.h"
#include "framebuffer/api.h"
#include "framebuffer/dashboard.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/settings.h"
#include "framebuffer/shadows.h"
#include "framebuffer/trace.h"

/* The gateway as the HTTP thread sees it, with no server behind it: the
 * configuration (NATS on, tokens, origins), the processors of fuzz.h, metrics,
 * events, routing settings, the fleet, shadows, a frame trace, and an API whose Redis connection is
 * down and never retried: every write answers 503, nothing leaves the
 * process. */
static struct fb_config cfg;
static struct fb_metrics metrics;
static struct fb_app app;
static struct fb_api api;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  char *args[] = {
      "frame-buffer",    "--nats-url",        "nats://127.0.0.1:4222",
      "--api-token",     "fuzz-token",        "--processor-token",
      "proc-token",      "--allowed-origins", "https://ops.example.com,http://localhost:3000",
      "--consumer-name", "fuzz-replica-0"};
  char why[300] = "";
  if (fb_config_load(&cfg, (int)(sizeof args / sizeof args[0]), args, why, sizeof why)) {
    fprintf(stderr, "fuzz setup: %s\n", why);
    abort();
  }
  fuzz_quiet();
  fb_metrics_init(&metrics);
  app.cfg = &cfg;
  app.metrics = &metrics;
  FUZZ_CHECK(fb_registry_create(&app.registry) == 0);
  for (size_t i = 0; i < FUZZ_NPROCS; i++) {
    struct fb_proc *p = fuzz_proc(fuzz_procs[i]);
    fb_registry_put(app.registry, p);
    fb_proc_release(p);
  }
  FUZZ_CHECK(fb_events_create(&app.events, cfg.consumer_name) == 0);
  FUZZ_CHECK(fb_settings_create(&app.settings, &cfg) == 0);
  FUZZ_CHECK(fb_fleet_create(&app.fleet, &app) == 0);
  FUZZ_CHECK(fb_shadows_create(&app.shadows, &cfg) == 0);
  FUZZ_CHECK(fb_trace_create(&app.trace, 64) == 0);
  fb_trace_begin(app.trace); /* one frame to find: GET /api/v1/frames/f-1 */
  fb_trace_add(app.trace, &(struct fb_trace_in){.frame_id = {"f-1", 3},
                                                .camera_id = {"cam-1", 5},
                                                .source_id = "1-0",
                                                .outcome = FB_TRACE_DELIVERED,
                                                .reason = -1,
                                                .transport = 0,
                                                .processor_id = "tracker-a",
                                                .target = "frames:ready:tracker-a",
                                                .routed_at_ms = 1000});
  fb_trace_end(app.trace);
  fb_api_init(&api, &app);
  api.redis.lost = true;                 /* said once: no warning per request */
  api.redis.next_attempt_ms = INT64_MAX; /* never time to connect */
  return 0;
}

/* What the API promises for every application/json answer. */
static bool is_json(const struct fb_buf *body)
{
  json_t *doc = json_loadb(body->data, body->len, JSON_DECODE_ANY, NULL);
  json_decref(doc);
  return doc != NULL;
}

static enum fb_method method_of(const char *s, size_t n)
{
  static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i]) == n && !memcmp(s, names[i], n)) return (enum fb_method)i;
  return FB_OTHER;
}

/* As take_query() in http_server.c: each argument URL-decoded (as lws
 * does), cut at its first '=', an empty one skipped, at most FB_QUERY_MAX
 * of them in `buf`, one of 512 bytes or more not kept (truncated). */
struct query {
  char buf[1024];
  struct fb_query_arg args[FB_QUERY_MAX];
  size_t n;
  bool truncated;
};

static void take_query(const char *q, size_t qn, struct query *out)
{
  size_t used = 0;
  while (qn) {
    const char *amp = memchr(q, '&', qn);
    size_t an = amp ? (size_t)(amp - q) : qn, o = 0;
    char frag[512];
    bool fits = true;
    for (size_t i = 0; i < an; i++) {
      if (o >= sizeof frag - 1) {
        fits = false;
        break;
      }
      if (q[i] == '%' && i + 2 < an && isxdigit((unsigned char)q[i + 1]) &&
          isxdigit((unsigned char)q[i + 2])) {
        frag[o++] = (char)strtol((char[3]){q[i + 1], q[i + 2], 0}, NULL, 16);
        i += 2;
      } else {
        frag[o++] = q[i] == '+' ? ' ' : q[i];
      }
    }
    q += an + (amp ? 1 : 0);
    qn -= an + (amp ? 1 : 0);
    if (fits && !o) continue; /* an empty argument is skipped */
    if (!fits || out->n == FB_QUERY_MAX || used + o + 2 > sizeof out->buf) {
      out->truncated = true;
      continue;
    }
    char *name = out->buf + used;
    memcpy(name, frag, o);
    name[o] = '\0';
    used += o + 1;
    char *eq = memchr(name, '=', o);
    if (eq) *eq = '\0';
    out->args[out->n++] = (struct fb_query_arg){name, eq ? eq + 1 : name + o};
  }
}

/* The headers begin() takes. */
struct headers {
  char auth[512], request_id[129], content_type[128], origin[256], host[256];
  bool has_auth;
};

/* One header line into `h`, as lws_hdr_copy gives it: a value that does
 * not fit its field is left out. */
static void take_header(struct headers *h, const char *line, size_t len)
{
  const char *colon = memchr(line, ':', len), *v = colon ? colon + 1 : NULL;
  if (!colon) return;
  while (v < line + len && *v == ' ')
    v++;
  size_t kn = (size_t)(colon - line), vn = (size_t)(line + len - v);
#define IS(name) (kn == strlen(name) && !strncasecmp(line, name, kn))
#define COPY(f)  (vn < sizeof h->f ? (void)snprintf(h->f, sizeof h->f, "%.*s", (int)vn, v) : (void)0)
  if (IS("authorization") && vn) {
    snprintf(h->auth, sizeof h->auth, "%.*s", (int)vn, vn < sizeof h->auth ? v : "oversized");
    h->has_auth = true;
  } else if (IS("x-request-id")) {
    bool ok = vn > 0; /* take_request_id(): printable, no spaces */
    for (size_t i = 0; i < vn; i++)
      ok = ok && v[i] > ' ' && v[i] < 0x7f;
    if (ok) COPY(request_id);
  } else if (IS("content-type")) {
    COPY(content_type);
  } else if (IS("origin")) {
    COPY(origin);
  } else if (IS("host")) {
    COPY(host);
  }
#undef IS
#undef COPY
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *line, *sp;
  size_t len;
  if (!fuzz_line(&data, &size, &line, &len)) return 0;
  if (len && line[len - 1] == '\r') len--;
  sp = memchr(line, ' ', len);
  enum fb_method method = method_of(line, sp ? (size_t)(sp - line) : len);
  const char *uri = sp ? sp + 1 : line + len;
  size_t un = sp ? len - (size_t)(uri - line) : 0;
  if ((sp = memchr(uri, ' ', un))) un = (size_t)(sp - uri); /* " HTTP/1.1" */
  const char *qmark = memchr(uri, '?', un);
  size_t pn = qmark ? (size_t)(qmark - uri) : un;

  /* begin() */
  char path[512];
  static struct query query;
  memset(&query, 0, sizeof query);
  struct headers h = {0};
  snprintf(path, sizeof path, "%.*s", (int)pn, pn ? uri : "/");
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/')
    path[--n] = '\0';
  take_query(qmark ? qmark + 1 : "", qmark ? un - pn - 1 : 0, &query);
  while (fuzz_line(&data, &size, &line, &len)) {
    if (len && line[len - 1] == '\r') len--;
    if (!len) break;
    take_header(&h, line, len);
  }
  if (!h.request_id[0]) snprintf(h.request_id, sizeof h.request_id, "0123456789abcdef");
  char *body = fuzz_dup(data, size);

  /* The Origin checks: CORS headers for a listed origin, /ws for the
   * gateway's own pages and listed ones. */
  const char *allowed = cfg.allowed_origins;
  bool listed = fb_origin_listed(h.origin, allowed);
  FUZZ_CHECK(!listed || fb_origin_allowed(h.origin, h.host, allowed));
  FUZZ_CHECK(h.origin[0] || fb_origin_allowed(h.origin, h.host, allowed));
  FUZZ_CHECK(fb_origin_listed(h.origin, "*") == !!h.origin[0] && !fb_origin_listed(h.origin, ""));

  /* handle() */
  struct fb_response resp = {0};
  fb_buf_init(&resp.body, 32u << 20);
  if ((method == FB_GET || method == FB_HEAD) && fb_dashboard_serve(path, &resp)) {
    FUZZ_CHECK(resp.status == 200);
  } else {
    struct fb_request req = {
        .method = method,
        .path = path,
        .query = query.args,
        .nquery = query.n,
        .query_truncated = query.truncated,
        .body = body,
        .body_len = method == FB_POST || method == FB_PUT ? size : 0,
        .authorization = h.has_auth ? h.auth : NULL,
        .content_type = h.content_type[0] ? h.content_type : NULL,
        .request_id = h.request_id,
    };
    fb_api_handle(&api, &req, &resp);
    FUZZ_CHECK(resp.status >= 200 && resp.status <= 599);
    FUZZ_CHECK(resp.status != 405 || resp.allow);
    FUZZ_CHECK(method != FB_OPTIONS || resp.status == 204 || resp.status == 404);
    FUZZ_CHECK(resp.status != 404 || !resp.route || method != FB_OPTIONS);
    FUZZ_CHECK(resp.route == fb_api_route_of(path));
    FUZZ_CHECK(resp.status != 401 || resp.challenge);
    FUZZ_CHECK(resp.status != 204 || !resp.body.len);
    if (resp.content_type && !strcmp(resp.content_type, "application/json"))
      FUZZ_CHECK(is_json(&resp.body));
  }
  FUZZ_CHECK(!resp.body.truncated);
  fb_buf_free(&resp.body);
  free(body);
  return 0;
}
