/*
 * NATS for the tools: a connection to a comma-separated server list with the
 * gateway's auth and TLS environment (NATS_TOKEN, NATS_USER + NATS_PASSWORD,
 * NATS_CREDS, NATS_TLS_CA), reconnecting forever, its events logged with
 * tk_log. A natsConnection may be used from any thread (nats.c locks it).
 */
#ifndef FB_TK_NATS_H
#define FB_TK_NATS_H

#include <stdbool.h>
#include <stddef.h>

#include "toolkit.h"

/*
 * Connects to `urls` as client `name`. With `retry`, servers that are down
 * are not an error: the connection comes back not yet connected and keeps
 * trying in the background (subscriptions made meanwhile start on connect).
 * Returns a new connection, to be closed with fbci_nats_close(), or NULL with
 * the reason in `err`.
 */
natsConnection *tk_nats_connect(const char *urls, const char *name, bool retry, char *err,
                                size_t errlen);

#endif
