/*
 * Blocking HTTP/1.1 client for the REST API: connect, send one request, read
 * the response until its length is known to be complete or the peer closes.
 * No shared state: any thread may call it.
 */
#include "tk_http.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "toolkit.h"

int tk_http_url_parse(struct tk_http_url *out, const char *url, char *err, size_t errlen)
{
  memset(out, 0, sizeof *out);
  const char *scheme = "http://";
  if (strncmp(url, scheme, strlen(scheme)) != 0) {
    snprintf(err, errlen, "'%s' does not start with http://", url);
    return -EINVAL;
  }
  const char *p = url + strlen(scheme);
  const char *slash = strchr(p, '/');
  const char *host_end = slash ? slash : p + strlen(p);
  const char *colon = memchr(p, ':', (size_t)(host_end - p));
  const char *he = colon ? colon : host_end;
  if (he == p || (size_t)(he - p) >= sizeof out->host) {
    snprintf(err, errlen, "bad host in '%s'", url);
    return -EINVAL;
  }
  memcpy(out->host, p, (size_t)(he - p));
  if (colon) {
    char portbuf[16];
    size_t plen = (size_t)(host_end - colon - 1);
    int64_t v;
    if (plen == 0 || plen >= sizeof portbuf) goto badport;
    memcpy(portbuf, colon + 1, plen);
    portbuf[plen] = '\0';
    if (tk_parse_i64(portbuf, 1, 65535, &v) < 0) goto badport;
    snprintf(out->port, sizeof out->port, "%d", (int)v);
  } else {
    snprintf(out->port, sizeof out->port, "80");
  }
  if (slash) {
    size_t len = strlen(slash);
    while (len > 0 && slash[len - 1] == '/')
      len--;
    if (len >= sizeof out->prefix) {
      snprintf(err, errlen, "path too long in '%s'", url);
      return -EINVAL;
    }
    memcpy(out->prefix, slash, len);
  }
  return 0;
badport:
  snprintf(err, errlen, "bad port in '%s'", url);
  return -EINVAL;
}

void tk_http_resp_free(struct tk_http_resp *r)
{
  free(r->body);
  r->body = NULL;
  r->body_len = 0;
}

/* Connects to the first address of host:port that answers. Returns the
 * socket or a negative errno. */
static int dial(const struct tk_http_url *u, int timeout_ms, char *err, size_t errlen)
{
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int gai = getaddrinfo(u->host, u->port, &hints, &res);
  if (gai != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(gai));
    return -EHOSTUNREACH;
  }
  int rc = -ECONNREFUSED;
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      rc = -errno;
      continue;
    }
    /* On Linux SO_SNDTIMEO also bounds connect(). */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      freeaddrinfo(res);
      return fd;
    }
    rc = (errno == EINPROGRESS || errno == EAGAIN) ? -ETIMEDOUT : -errno;
    close(fd);
  }
  freeaddrinfo(res);
  snprintf(err, errlen, "cannot connect to %s:%s: %s", u->host, u->port, strerror(-rc));
  return rc;
}

static int send_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Finds header `name` in the head [head, head_end) and returns its value's
 * start (length in *len), or NULL. */
static const char *find_header(const char *head, const char *head_end, const char *name,
                               size_t *len)
{
  size_t nlen = strlen(name);
  const char *line = strstr(head, "\r\n");
  while (line && line < head_end) {
    line += 2;
    const char *eol = strstr(line, "\r\n");
    if (!eol || eol > head_end) break;
    if ((size_t)(eol - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
      const char *v = line + nlen + 1;
      while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
      const char *ve = eol;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      *len = (size_t)(ve - v);
      return v;
    }
    line = eol;
  }
  return NULL;
}

/* Decodes a chunked body in place. Returns the decoded length, -EAGAIN when
 * it is not complete yet, or -EPROTO. */
static long dechunk(char *body, size_t len, bool in_place)
{
  size_t r = 0, w = 0;
  for (;;) {
    const char *eol = NULL;
    for (size_t i = r; i + 1 < len; i++) {
      if (body[i] == '\r' && body[i + 1] == '\n') {
        eol = body + i;
        break;
      }
    }
    if (!eol) return -EAGAIN;
    char *end = NULL;
    errno = 0;
    unsigned long sz = strtoul(body + r, &end, 16);
    if (end == body + r || errno || sz > TK_HTTP_MAX_RESPONSE) return -EPROTO;
    r = (size_t)(eol - body) + 2;
    if (sz == 0) return (long)w; /* trailers are ignored */
    if (len - r < sz + 2) return -EAGAIN;
    if (in_place) memmove(body + w, body + r, sz);
    w += sz;
    r += sz + 2;
  }
}

int tk_http_request(const struct tk_http_url *url, const char *method, const char *path,
                    const char *token, const char *body, int timeout_ms, struct tk_http_resp *out,
                    char *err, size_t errlen)
{
  memset(out, 0, sizeof *out);
  size_t blen = body ? strlen(body) : 0;
  char head[2048];
  int hn = snprintf(head, sizeof head,
                    "%s %s%s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: %s/" TK_VERSION
                    "\r\nAccept: application/json\r\nConnection: close\r\n%s%s%s"
                    "%sContent-Length: %zu\r\n\r\n",
                    method, url->prefix, path, url->host, url->port, tk_progname(),
                    (token && *token) ? "Authorization: Bearer " : "",
                    (token && *token) ? token : "", (token && *token) ? "\r\n" : "",
                    body ? "Content-Type: application/json\r\n" : "", blen);
  if (hn < 0 || (size_t)hn >= sizeof head) {
    snprintf(err, errlen, "request head too long");
    return -EMSGSIZE;
  }
  int fd = dial(url, timeout_ms, err, errlen);
  if (fd < 0) return fd;

  int rc = send_all(fd, head, (size_t)hn);
  if (rc == 0 && blen) rc = send_all(fd, body, blen);
  if (rc < 0) {
    snprintf(err, errlen, "sending %s %s: %s", method, path, strerror(-rc));
    close(fd);
    return rc;
  }

  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  /* Offsets, not pointers: buf moves when it grows. 0 = head not complete. */
  size_t body_off = 0;
  long content_length = -1;
  bool chunked = false, eof = false;
  for (;;) {
    if (len + 1 >= cap) {
      if (cap >= TK_HTTP_MAX_RESPONSE) {
        rc = -EMSGSIZE;
        snprintf(err, errlen, "response over %d bytes", TK_HTTP_MAX_RESPONSE);
        goto out;
      }
      size_t ncap = cap * 2 > TK_HTTP_MAX_RESPONSE ? TK_HTTP_MAX_RESPONSE : cap * 2;
      char *nb = realloc(buf, ncap);
      if (!nb) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
      }
      buf = nb;
      cap = ncap;
    }
    ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT : -errno;
      snprintf(err, errlen, "reading the response to %s %s: %s", method, path, strerror(-rc));
      goto out;
    }
    if (n == 0) eof = true;
    len += (size_t)n;
    buf[len] = '\0';
    if (!body_off) {
      char *e = strstr(buf, "\r\n\r\n");
      if (e) {
        const char *head_end = e + 2; /* keep the last header's CRLF inside the head */
        body_off = (size_t)(e + 4 - buf);
        size_t vlen;
        const char *v = find_header(buf, head_end, "Content-Length", &vlen);
        if (v) {
          char tmp[24];
          int64_t cl;
          if (vlen >= sizeof tmp) goto garbled;
          memcpy(tmp, v, vlen);
          tmp[vlen] = '\0';
          if (tk_parse_i64(tmp, 0, TK_HTTP_MAX_RESPONSE, &cl) < 0) goto garbled;
          content_length = (long)cl;
        }
        v = find_header(buf, head_end, "Transfer-Encoding", &vlen);
        if (v && vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0) chunked = true;
        /* 204 and 304 never have a body: do not wait for the peer to close. */
        if (strncmp(buf, "HTTP/1.1 204", 12) == 0 || strncmp(buf, "HTTP/1.1 304", 12) == 0 ||
            strncmp(buf, "HTTP/1.0 204", 12) == 0) {
          content_length = 0;
          chunked = false;
        }
      }
    }
    if (body_off) {
      size_t have = len - body_off;
      if (chunked) {
        if (dechunk(buf + body_off, have, false) >= 0) break;
      } else if (content_length >= 0 && have >= (size_t)content_length) {
        break;
      }
    }
    if (eof) break;
  }
  if (!body_off) goto garbled;

  /* Status line: HTTP/1.x NNN reason */
  if (strncmp(buf, "HTTP/1.", 7) != 0 || len < 12 || !isdigit((unsigned char)buf[9]) ||
      !isdigit((unsigned char)buf[10]) || !isdigit((unsigned char)buf[11]))
    goto garbled;
  out->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');

  size_t blen_in = len - body_off;
  if (chunked) {
    long d = dechunk(buf + body_off, blen_in, true);
    if (d < 0) goto garbled;
    blen_in = (size_t)d;
  } else if (content_length >= 0) {
    if (blen_in < (size_t)content_length) goto garbled; /* closed early */
    blen_in = (size_t)content_length;
  }
  memmove(buf, buf + body_off, blen_in);
  buf[blen_in] = '\0';
  out->body = buf;
  out->body_len = blen_in;
  buf = NULL; /* owned by out now */
  rc = 0;
  goto out;
garbled:
  rc = -EPROTO;
  snprintf(err, errlen, "garbled HTTP response to %s %s", method, path);
out:
  free(buf);
  close(fd);
  return rc;
}
