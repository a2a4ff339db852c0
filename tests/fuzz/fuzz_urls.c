/*
 * Fuzz target: the addresses among the settings: REDIS_URL
 * (fb_config_parse_redis_url, and through fb_config_load), REDIS_SENTINELS,
 * REDIS_SENTINEL_MASTER, NATS_URL, LISTEN and ALLOWED_ORIGINS, as flags to
 * fb_config_load (the environment's variables of these settings are cleared
 * first). A setting accepted must hold what it promises.
 *
 * Input: one setting a line, NAME=value, e.g. REDIS_URL=redis://:pw@h:6380/2
 */
#include "fuzz.h"

static const char *const names[][2] = {
    {"REDIS_URL", "--redis-url"},
    {"REDIS_SENTINELS", "--redis-sentinels"},
    {"REDIS_SENTINEL_MASTER", "--redis-sentinel-master"},
    {"NATS_URL", "--nats-url"},
    {"LISTEN", "--listen"},
    {"ALLOWED_ORIGINS", "--allowed-origins"},
};
#define NNAMES   (sizeof names / sizeof names[0])
#define MAX_ARGS 16

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  static const char *const env[] = {"REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD",
                                    "PORT"};
  for (size_t i = 0; i < NNAMES; i++)
    unsetenv(names[i][0]);
  for (size_t i = 0; i < sizeof env / sizeof env[0]; i++)
    unsetenv(env[i]);
  fuzz_quiet();
  return 0;
}

static bool port_ok(int port)
{
  return port >= 1 && port <= 65535;
}

/* A field of a fixed size holds a terminated, non-empty string. */
#define FILLED(a) (memchr((a), '\0', sizeof(a)) && (a)[0])

static void check_endpoint(const struct fb_redis_endpoint *ep)
{
  FUZZ_CHECK(FILLED(ep->host) && port_ok(ep->port) && ep->db >= 0 && ep->db <= 15);
  FUZZ_CHECK(memchr(ep->password, '\0', sizeof ep->password));
  FUZZ_CHECK(memchr(ep->username, '\0', sizeof ep->username));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *argv[2 * MAX_ARGS + 2] = {"frame-buffer"};
  int argc = 1;
  const char *line;
  size_t len;
  while (argc < 2 * MAX_ARGS && fuzz_line(&data, &size, &line, &len)) {
    const char *eq = memchr(line, '=', len);
    if (!eq) continue;
    size_t i = 0;
    while (i < NNAMES && (strlen(names[i][0]) != (size_t)(eq - line) ||
                          memcmp(line, names[i][0], (size_t)(eq - line))))
      i++;
    if (i == NNAMES) continue;
    char *value = strndup(eq + 1, len - (size_t)(eq + 1 - line)); /* cut at a NUL, like env */
    FUZZ_CHECK(value);
    if (i == 0) { /* the parser alone, as the tools and tests call it */
      struct fb_redis_endpoint ep;
      char why[256];
      memset(why, 'x', sizeof why);
      if (fb_config_parse_redis_url(value, &ep, why, sizeof why) == 0)
        check_endpoint(&ep);
      else
        FUZZ_CHECK(memchr(why, '\0', sizeof why) && why[0]);
    }
    argv[argc++] = (char *)names[i][1];
    argv[argc++] = value;
  }

  static struct fb_config cfg;
  char why[512];
  memset(why, 'x', sizeof why);
  int rc = fb_config_load(&cfg, argc, argv, why, sizeof why);
  if (rc == FB_CONFIG_OK) {
    check_endpoint(&cfg.redis);
    FUZZ_CHECK(cfg.redis.nsentinels <= FB_SENTINELS_MAX);
    for (size_t i = 0; i < cfg.redis.nsentinels; i++)
      FUZZ_CHECK(FILLED(cfg.redis.sentinels[i].host) && port_ok(cfg.redis.sentinels[i].port));
    FUZZ_CHECK(!cfg.redis.nsentinels == !cfg.redis.sentinel_master[0]);
    FUZZ_CHECK(cfg.nats_enabled == !!cfg.nats_url[0]);
    FUZZ_CHECK(memchr(cfg.nats_url, '\0', sizeof cfg.nats_url));
    FUZZ_CHECK(FILLED(cfg.listen_host) && port_ok(cfg.listen_port));
    FUZZ_CHECK(memchr(cfg.allowed_origins, '\0', sizeof cfg.allowed_origins));
  } else {
    FUZZ_CHECK(rc == -EINVAL && memchr(why, '\0', sizeof why) && why[0]);
  }
  for (int i = 2; i < argc; i += 2)
    free(argv[i]);
  return 0;
}
