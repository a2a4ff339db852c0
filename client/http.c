/*
 * The gateway's REST API through libcurl: one easy handle per request, a
 * hard cap on the response body. curl_global_init runs once (pthread_once);
 * after that any thread may call fbci_http_request at any time.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "fbc_internal.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init(void)
{
  curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct body_buf {
  char *data;
  size_t len;
  bool too_big;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
  struct body_buf *b = userdata;
  size_t n = size * nmemb;
  if (b->len + n > FBCI_HTTP_MAX) {
    b->too_big = true;
    return 0; /* curl stops with CURLE_WRITE_ERROR */
  }
  char *d = realloc(b->data, b->len + n + 1);
  if (!d) return 0;
  memcpy(d + b->len, ptr, n);
  b->data = d;
  b->len += n;
  b->data[b->len] = '\0';
  return n;
}

static int errno_of(CURLcode cc)
{
  switch (cc) {
  case CURLE_COULDNT_CONNECT: return -ECONNREFUSED;
  case CURLE_COULDNT_RESOLVE_HOST: return -EHOSTUNREACH;
  case CURLE_OPERATION_TIMEDOUT: return -ETIMEDOUT;
  case CURLE_OUT_OF_MEMORY: return -ENOMEM;
  case CURLE_URL_MALFORMAT: return -EINVAL;
  default: return -EPROTO;
  }
}

int fbci_http_request(const char *base, const char *method, const char *path, const char *token,
                      const char *body, int timeout_ms, struct fbci_http_resp *out, char *err,
                      size_t errlen)
{
  memset(out, 0, sizeof *out);
  pthread_once(&curl_once, curl_init);
  if (curl_init_rc != CURLE_OK) {
    snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(curl_init_rc));
    return -ENOMEM;
  }
  char url[2048], auth[600];
  size_t blen = strlen(base);
  while (blen > 0 && base[blen - 1] == '/')
    blen--;
  if (snprintf(url, sizeof url, "%.*s%s", (int)blen, base, path) >= (int)sizeof url) {
    snprintf(err, errlen, "URL too long");
    return -EINVAL;
  }
  CURL *h = curl_easy_init();
  if (!h) {
    snprintf(err, errlen, "libcurl: cannot create a handle");
    return -ENOMEM;
  }
  struct curl_slist *hdrs = NULL;
  struct body_buf b = {0};
  char cerr[CURL_ERROR_SIZE] = "";
  if (body) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
  if (token && *token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  CURLcode cc = curl_easy_perform(h);
  int rc = 0;
  if (cc != CURLE_OK) {
    rc = b.too_big ? -EMSGSIZE : errno_of(cc);
    snprintf(err, errlen, "%s %s: %s", method, url,
             b.too_big ? "response over the size limit"
                       : (cerr[0] ? cerr : curl_easy_strerror(cc)));
    free(b.data);
  } else {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = b.data ? b.data : strdup("");
    out->body_len = b.len;
    if (!out->body) rc = -ENOMEM;
  }
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(h);
  return rc;
}

void fbci_http_resp_free(struct fbci_http_resp *r)
{
  free(r->body);
  r->body = NULL;
  r->body_len = 0;
}
