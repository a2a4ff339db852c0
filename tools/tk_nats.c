/*
 * NATS connections for the tools (see tk_nats.h): the client library's
 * connect with the environment's auth; its events go to tk_log from nats.c's
 * threads (the logger's rate limit is an atomic).
 */
#include "tk_nats.h"

static struct fbci_nats_logger tool_logger = {.log = tk_log_fbc};

natsConnection *tk_nats_connect(const char *urls, const char *name, bool retry, char *err,
                                size_t errlen)
{
  struct fbci_nats_auth auth = {
      .token = tk_env_or("NATS_TOKEN", NULL),
      .user = tk_env_or("NATS_USER", NULL),
      .password = tk_env_or("NATS_PASSWORD", ""),
      .creds = tk_env_or("NATS_CREDS", NULL),
      .tls_ca = tk_env_or("NATS_TLS_CA", NULL),
  };
  return fbci_nats_connect(urls, name, &auth, retry, &tool_logger, err, errlen);
}
