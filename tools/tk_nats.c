/*
 * NATS connection helpers for the tools (see tk_nats.h). No state of its
 * own besides a rate limit on logged asynchronous errors (an atomic), so any
 * thread may call it; the callbacks run on nats.c threads.
 */
#include "tk_nats.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "toolkit.h"

#define TK_NATS_RECONNECT_BUF (8 * 1024 * 1024)

static atomic_llong last_async_log_us;

int tk_nats_url_check(const char *urls, char *err, size_t errlen)
{
  const char *p = urls;
  if (!*p) {
    snprintf(err, errlen, "empty server list");
    return -EINVAL;
  }
  for (;;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && *p == ' ')
      p++;
    const char *e = end;
    while (e > p && e[-1] == ' ')
      e--;
    size_t n = (size_t)(e - p);
    if (n == 0) {
      snprintf(err, errlen, "empty server in '%s'", urls);
      return -EINVAL;
    }
    for (const char *q = p; q < e; q++)
      if (isspace((unsigned char)*q) || !isprint((unsigned char)*q)) {
        snprintf(err, errlen, "server '%.*s' has a space or control character", (int)n, p);
        return -EINVAL;
      }
    const char *scheme_end = strstr(p, "://");
    if (scheme_end && scheme_end < e) {
      size_t sl = (size_t)(scheme_end - p);
      if (!((sl == 4 && strncmp(p, "nats", 4) == 0) || (sl == 3 && strncmp(p, "tls", 3) == 0))) {
        snprintf(err, errlen, "server '%.*s' is not nats:// or tls://", (int)n, p);
        return -EINVAL;
      }
      if (scheme_end + 3 >= e) {
        snprintf(err, errlen, "server '%.*s' has no host", (int)n, p);
        return -EINVAL;
      }
    }
    if (!comma) break;
    p = comma + 1;
  }
  return 0;
}

const char *tk_nats_err(natsStatus s, char *out, size_t outlen)
{
  const char *last = nats_GetLastError(NULL);
  if (last && *last)
    snprintf(out, outlen, "%s (%s)", natsStatus_GetText(s), last);
  else
    snprintf(out, outlen, "%s", natsStatus_GetText(s));
  return out;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
  (void)closure;
  if (natsConnection_IsClosed(nc)) return; /* our own close at exit */
  tk_log("NATS: disconnected; reconnecting in the background");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
  (void)closure;
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  tk_log("NATS: connected to %s", url);
}

/* Slow-consumer and similar errors can come thousands a second: log at most
 * one a second. */
static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
  (void)nc;
  (void)closure;
  long long now = tk_mono_us(), last = atomic_load(&last_async_log_us);
  if (now - last < 1000000 || !atomic_compare_exchange_strong(&last_async_log_us, &last, now))
    return;
  int64_t dropped = 0;
  if (sub) natsSubscription_GetDropped(sub, &dropped);
  tk_log("NATS: asynchronous error: %s%s%lld%s", natsStatus_GetText(err),
         sub ? " (dropped so far on the subscription: " : "", sub ? (long long)dropped : 0LL,
         sub ? ")" : "");
}

natsConnection *tk_nats_connect(const char *urls, const char *name, bool retry, char *err,
                                size_t errlen)
{
  natsOptions *o = NULL;
  natsConnection *nc = NULL;
  char why[256];
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, urls);
  if (s == NATS_OK) s = natsOptions_SetName(o, name);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 500);
  if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(o, TK_NATS_RECONNECT_BUF);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, NULL);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, NULL);
  if (s == NATS_OK) s = natsOptions_SetErrorHandler(o, on_async_error, NULL);
  if (s == NATS_OK && retry) s = natsOptions_SetRetryOnFailedConnect(o, true, on_reconnected, NULL);
  const char *token = tk_env_or("NATS_TOKEN", NULL), *user = tk_env_or("NATS_USER", NULL);
  const char *creds = tk_env_or("NATS_CREDS", NULL), *ca = tk_env_or("NATS_TLS_CA", NULL);
  if (s == NATS_OK && token) s = natsOptions_SetToken(o, token);
  if (s == NATS_OK && user) s = natsOptions_SetUserInfo(o, user, tk_env_or("NATS_PASSWORD", ""));
  if (s == NATS_OK && creds) s = natsOptions_SetUserCredentialsFromFiles(o, creds, NULL);
  if (s == NATS_OK && ca) {
    s = natsOptions_LoadCATrustedCertificates(o, ca);
    if (s == NATS_OK) s = natsOptions_SetSecure(o, true);
  }
  if (s != NATS_OK) {
    snprintf(err, errlen, "NATS options: %s", tk_nats_err(s, why, sizeof why));
    natsOptions_Destroy(o);
    return NULL;
  }
  s = natsConnection_Connect(&nc, o);
  natsOptions_Destroy(o); /* the connection keeps its own copy */
  if (s == NATS_OK || (retry && s == NATS_NOT_YET_CONNECTED)) return nc;
  snprintf(err, errlen, "NATS %s: %s", urls, tk_nats_err(s, why, sizeof why));
  natsConnection_Destroy(nc);
  return NULL;
}

bool tk_nats_is_connected(natsConnection *nc)
{
  return nc && natsConnection_Status(nc) == NATS_CONN_STATUS_CONNECTED;
}

void tk_nats_close(natsConnection *nc, int flush_ms)
{
  if (!nc) return;
  if (tk_nats_is_connected(nc)) natsConnection_FlushTimeout(nc, flush_ms);
  natsConnection_Close(nc);
  natsConnection_Destroy(nc);
}
