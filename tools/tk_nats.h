/*
 * NATS for the tools: a connection to a comma-separated server list with the
 * gateway's auth and TLS environment (NATS_TOKEN, NATS_USER + NATS_PASSWORD,
 * NATS_CREDS, NATS_TLS_CA), reconnecting forever. A natsConnection may be
 * used from any thread (nats.c locks it); its callbacks run on library
 * threads and here only log.
 */
#ifndef FB_TK_NATS_H
#define FB_TK_NATS_H

#include <stdbool.h>
#include <stddef.h>

#include <nats/nats.h>

#define TK_DEFAULT_NATS_URL "nats://127.0.0.1:4222"

/* The JetStream stream the gateway publishes remote frames into (README: Remote processors and
 * NATS). */
#define TK_JS_STREAM "FRAMES"

/* Checks a server list for a flag: non-empty items without spaces, each
 * nats://, tls:// or a bare host:port. Returns 0 or -EINVAL with the reason
 * in `err`. */
int tk_nats_url_check(const char *urls, char *err, size_t errlen);

/*
 * Connects to `urls` as client `name`. With `retry`, servers that are down
 * are not an error: the connection comes back not yet connected and keeps
 * trying in the background (subscriptions made meanwhile start on connect).
 * Returns a new connection, to be closed with tk_nats_close(), or NULL with
 * the reason in `err`.
 */
natsConnection *tk_nats_connect(const char *urls, const char *name, bool retry, char *err,
                                size_t errlen);

/* Whether the connection is up right now. Any thread. */
bool tk_nats_is_connected(natsConnection *nc);

/* Flushes for at most `flush_ms`, closes and destroys `nc` (NULL is fine). */
void tk_nats_close(natsConnection *nc, int flush_ms);

/* natsStatus and the library's last error text, for a log line. Returns
 * `out`. */
const char *tk_nats_err(natsStatus s, char *out, size_t outlen);

#endif
