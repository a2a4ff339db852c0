/*
 * A tiny blocking HTTP/1.1 client over a raw TCP socket, enough for the
 * gateway's REST API: one request per connection (Connection: close), JSON
 * bodies, Content-Length or chunked responses, a hard cap on response size.
 * Every call is self-contained, so any thread may call it at any time.
 */
#ifndef FB_TK_HTTP_H
#define FB_TK_HTTP_H

#include <stddef.h>

/* Largest response (head + body) we accept. */
#define TK_HTTP_MAX_RESPONSE (1024 * 1024)

struct tk_http_url {
  char host[256];
  char port[8];
  char prefix[256]; /* path prefix without the trailing slash, usually "" */
};

struct tk_http_resp {
  int status; /* e.g. 201 */
  char *body; /* NUL-terminated, owned; "" when there is none */
  size_t body_len;
};

/* Parses http://host[:port][/prefix]. Returns 0 or -EINVAL with the reason in
 * `err`. https is refused: the tools talk to a gateway on the same network. */
int tk_http_url_parse(struct tk_http_url *out, const char *url, char *err, size_t errlen);

/* Sends `method` `path` (appended to the URL's prefix) with an optional JSON
 * `body` (NULL: none) and an optional bearer `token` (NULL or "": none), and
 * waits at most `timeout_ms` for each connect/send/receive step.
 * Returns 0 with `out` filled (free it with tk_http_resp_free) whatever the
 * HTTP status, or a negative errno when no response arrived (-ECONNREFUSED,
 * -ETIMEDOUT, -EPROTO for a garbled one, -EMSGSIZE when over the cap) with the
 * reason in `err`; `out` then needs no freeing. */
int tk_http_request(const struct tk_http_url *url, const char *method, const char *path,
                    const char *token, const char *body, int timeout_ms, struct tk_http_resp *out,
                    char *err, size_t errlen);

void tk_http_resp_free(struct tk_http_resp *r);

#endif
