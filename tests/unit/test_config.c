/*
 * Unit tests for gateway/config.c: defaults (README: Settings), environment and flags
 * (flags win), the compat variables, Redis URL parsing and the messages for
 * bad settings. Single-threaded: the tests change this process's environment,
 * and every test starts from an environment without any setting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "framebuffer/config.h"

/* ============================================================== helpers */

static const char *const all_env[] = {
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_PASSWORD",
    "NATS_URL",
    "NATS_TOKEN",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_CREDS",
    "NATS_TLS_CA",
    "NATS_JETSTREAM",
    "PORT",
    "LISTEN",
    "INPUT_STREAM",
    "CONSUMER_GROUP",
    "CONSUMER_NAME",
    "ROUTING_STRATEGY",
    "OVERLOAD_POLICY",
    "HEARTBEAT_TIMEOUT_MS",
    "FRAME_MAX_AGE_MS",
    "MAX_DELIVERIES",
    "BATCH_SIZE",
    "CLAIM_IDLE_MS",
    "DLQ_MAXLEN",
    "API_TOKEN",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_WAIT_REPLICAS",
    "NATS_JS_REPLICAS",
    "FLEET_VIEW",
};

static int clean_env(void **state)
{
  for (size_t i = 0; i < sizeof all_env / sizeof all_env[0]; i++)
    unsetenv(all_env[i]);
  return 0;
}

static struct fb_config cfg;
static char err[512];

/* Runs fb_config_load with argv = {"frame-buffer", args..., NULL}. */
static int load_argv(const char *const *args)
{
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"frame-buffer";
  for (; *args; args++) {
    assert_true(argc < 31);
    argv[argc++] = (char *)*args;
  }
  argv[argc] = NULL;
  err[0] = '\0';
  return fb_config_load(&cfg, argc, argv, err, sizeof err);
}

#define LOAD(...)     load_argv((const char *const[]){__VA_ARGS__, NULL})
#define LOAD_NOARGS() load_argv((const char *const[]){NULL})

static void env(const char *name, const char *value)
{
  assert_int_equal(setenv(name, value, 1), 0);
}

/* Asserts that loading failed with a message that names `setting`. */
static void assert_bad_setting(int rc, const char *setting)
{
  assert_int_equal(rc, -EINVAL);
  if (!strstr(err, setting)) fail_msg("message '%s' does not name %s", err, setting);
}

static int parse_url(const char *url, struct fb_redis_endpoint *ep)
{
  err[0] = '\0';
  memset(ep, 0x5a, sizeof *ep);
  return fb_config_parse_redis_url(url, ep, err, sizeof err);
}

/* ============================================================= defaults */

static void defaults_match_spec(void **state)
{
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.redis.host, "127.0.0.1");
  assert_int_equal(cfg.redis.port, 6379);
  assert_int_equal(cfg.redis.db, 0);
  assert_string_equal(cfg.redis.password, "");
  assert_true(cfg.nats_enabled);
  assert_string_equal(cfg.nats_url, "nats://127.0.0.1:4222");
  assert_false(cfg.nats_jetstream);
  assert_string_equal(cfg.nats_token, "");
  assert_string_equal(cfg.listen_host, "0.0.0.0");
  assert_int_equal(cfg.listen_port, 8002);
  assert_string_equal(cfg.input_stream, "frames:metadata");
  assert_string_equal(cfg.consumer_group, "frame-buffer-group");
  assert_int_equal(cfg.strategy, FB_STRATEGY_LEAST_LOADED);
  assert_int_equal(cfg.overload_policy, FB_OVERLOAD_DROP_OLDEST);
  assert_int_equal(cfg.heartbeat_timeout_ms, 90000);
  assert_int_equal(cfg.frame_max_age_ms, 0);
  assert_int_equal(cfg.max_deliveries, 5);
  assert_string_equal(cfg.api_token, "");
  assert_int_equal(cfg.log_level, FB_LOG_INFO);
  assert_int_equal(cfg.log_format, FB_LOG_TEXT);
}

static void default_consumer_name_is_host_name(void **state)
{
  char host[256] = "";
  assert_int_equal(gethostname(host, sizeof host - 1), 0);
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.consumer_name, host[0] ? host : "frame-buffer");
}

/* ========================================================= environment */

static void environment_sets_values(void **state)
{
  env("INPUT_STREAM", "cams:in");
  env("CONSUMER_GROUP", "g2");
  env("CONSUMER_NAME", "frame-buffer-0");
  env("ROUTING_STRATEGY", "round_robin");
  env("OVERLOAD_POLICY", "reject");
  env("HEARTBEAT_TIMEOUT_MS", "5000");
  env("FRAME_MAX_AGE_MS", "2500");
  env("MAX_DELIVERIES", "3");
  env("API_TOKEN", "s3cret");
  env("LOG_LEVEL", "debug");
  env("LOG_FORMAT", "json");
  env("NATS_JETSTREAM", "1");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.input_stream, "cams:in");
  assert_string_equal(cfg.consumer_group, "g2");
  assert_string_equal(cfg.consumer_name, "frame-buffer-0");
  assert_int_equal(cfg.strategy, FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(cfg.overload_policy, FB_OVERLOAD_REJECT);
  assert_int_equal(cfg.heartbeat_timeout_ms, 5000);
  assert_int_equal(cfg.frame_max_age_ms, 2500);
  assert_int_equal(cfg.max_deliveries, 3);
  assert_string_equal(cfg.api_token, "s3cret");
  assert_int_equal(cfg.log_level, FB_LOG_DEBUG);
  assert_int_equal(cfg.log_format, FB_LOG_JSON);
  assert_true(cfg.nats_jetstream);
}

static void flags_set_values(void **state)
{
  assert_int_equal(LOAD("--strategy", "weighted_round_robin", "--input-stream=in:x",
                        "--consumer-name", "r-1", "--overload-policy", "block"),
                   FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_WEIGHTED_ROUND_ROBIN);
  assert_string_equal(cfg.input_stream, "in:x");
  assert_string_equal(cfg.consumer_name, "r-1");
  assert_int_equal(cfg.overload_policy, FB_OVERLOAD_BLOCK);
}

static void flags_win_over_environment(void **state)
{
  env("ROUTING_STRATEGY", "round_robin");
  env("REDIS_URL", "redis://env-host:1111/1");
  env("NATS_URL", "none");
  env("INPUT_STREAM", "env:stream");
  assert_int_equal(LOAD("--strategy", "consistent_hash", "--redis-url", "redis://flag-host:2222/2",
                        "--nats-url", "nats://n1:4222", "--input-stream", "flag:stream"),
                   FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_CONSISTENT_HASH);
  assert_string_equal(cfg.redis.host, "flag-host");
  assert_int_equal(cfg.redis.port, 2222);
  assert_int_equal(cfg.redis.db, 2);
  assert_true(cfg.nats_enabled);
  assert_string_equal(cfg.nats_url, "nats://n1:4222");
  assert_string_equal(cfg.input_stream, "flag:stream");
}

static void environment_used_when_no_flag(void **state)
{
  env("ROUTING_STRATEGY", "round_robin");
  assert_int_equal(LOAD("--input-stream", "x"), FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_ROUND_ROBIN);
}

/* ============================================================== listen */

static void port_alone_sets_the_port(void **state)
{
  env("PORT", "9000");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.listen_host, "0.0.0.0");
  assert_int_equal(cfg.listen_port, 9000);
}

static void listen_flag_wins_over_port(void **state)
{
  env("PORT", "9000");
  assert_int_equal(LOAD("--listen", "127.0.0.1:7000"), FB_CONFIG_OK);
  assert_string_equal(cfg.listen_host, "127.0.0.1");
  assert_int_equal(cfg.listen_port, 7000);
}

static void listen_without_host_is_all_interfaces(void **state)
{
  assert_int_equal(LOAD("--listen", ":7001"), FB_CONFIG_OK);
  assert_string_equal(cfg.listen_host, "0.0.0.0");
  assert_int_equal(cfg.listen_port, 7001);
}

/* A pod spec that names $(POD_NAME) before defining it passes the text on. */
static void unexpanded_consumer_name_is_refused(void **state)
{
  env("CONSUMER_NAME", "$(POD_NAME)");
  assert_bad_setting(LOAD_NOARGS(), "CONSUMER_NAME");
  assert_non_null(strstr(err, "unexpanded"));
  unsetenv("CONSUMER_NAME");
}

static void bad_port_is_refused(void **state)
{
  env("PORT", "http");
  assert_bad_setting(LOAD_NOARGS(), "PORT");
  env("PORT", "0");
  assert_bad_setting(LOAD_NOARGS(), "PORT");
  env("PORT", "65536");
  assert_bad_setting(LOAD_NOARGS(), "PORT");
  unsetenv("PORT");
  assert_bad_setting(LOAD("--listen", "8002"), "--listen");
  assert_bad_setting(LOAD("--listen", "0.0.0.0:x"), "--listen");
}

/* ================================================================ Redis */

static void redis_url_sets_everything(void **state)
{
  env("REDIS_URL", "redis://:secret@redis.local:6380/2");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.redis.host, "redis.local");
  assert_int_equal(cfg.redis.port, 6380);
  assert_int_equal(cfg.redis.db, 2);
  assert_string_equal(cfg.redis.password, "secret");
}

static void redis_compat_variables(void **state)
{
  env("REDIS_HOST", "redis-master");
  env("REDIS_PORT", "7000");
  env("REDIS_DB", "3");
  env("REDIS_PASSWORD", "pw");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.redis.host, "redis-master");
  assert_int_equal(cfg.redis.port, 7000);
  assert_int_equal(cfg.redis.db, 3);
  assert_string_equal(cfg.redis.password, "pw");
}

static void redis_host_alone_keeps_default_port(void **state)
{
  env("REDIS_HOST", "redis");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.redis.host, "redis");
  assert_int_equal(cfg.redis.port, 6379);
  assert_int_equal(cfg.redis.db, 0);
}

static void redis_password_survives_url_without_one(void **state)
{
  env("REDIS_PASSWORD", "pw");
  env("REDIS_URL", "redis://h:6379/0");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.redis.host, "h");
  assert_string_equal(cfg.redis.password, "pw");
}

static void redis_bad_values_are_refused(void **state)
{
  env("REDIS_PORT", "abc");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_PORT");
  unsetenv("REDIS_PORT");
  env("REDIS_DB", "16");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_DB");
  unsetenv("REDIS_DB");
  env("REDIS_HOST", "");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_HOST");
  unsetenv("REDIS_HOST");
  env("REDIS_URL", "http://h:6379");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_URL");
  unsetenv("REDIS_URL");
  assert_bad_setting(LOAD("--redis-url", "redis://h:99999"), "--redis-url");
}

static void parse_url_host_only(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("redis://localhost", &ep), 0);
  assert_string_equal(ep.host, "localhost");
  assert_int_equal(ep.port, 6379);
  assert_int_equal(ep.db, 0);
  assert_string_equal(ep.password, "");
  assert_string_equal(ep.username, "");
}

static void parse_url_port_and_db(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("redis://10.0.0.5:6380/7", &ep), 0);
  assert_string_equal(ep.host, "10.0.0.5");
  assert_int_equal(ep.port, 6380);
  assert_int_equal(ep.db, 7);
  assert_int_equal(parse_url("redis://h/", &ep), 0);
  assert_int_equal(ep.db, 0);
  assert_int_equal(parse_url("redis://h/15", &ep), 0);
  assert_int_equal(ep.db, 15);
}

static void parse_url_password(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("redis://:pw@h:1234/1", &ep), 0);
  assert_string_equal(ep.username, "");
  assert_string_equal(ep.password, "pw");
  assert_string_equal(ep.host, "h");
  assert_int_equal(ep.port, 1234);
  assert_int_equal(ep.db, 1);
}

static void parse_url_user_and_password(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("redis://app:pw@h", &ep), 0);
  assert_string_equal(ep.username, "app");
  assert_string_equal(ep.password, "pw");
  assert_string_equal(ep.host, "h");
}

static void parse_url_password_with_at_sign(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("redis://:p@ss:w@h:6379/0", &ep), 0);
  assert_string_equal(ep.password, "p@ss:w");
  assert_string_equal(ep.host, "h");
}

static void parse_url_errors(void **state)
{
  struct fb_redis_endpoint ep;
  assert_int_equal(parse_url("rediss://h:6379", &ep), -EINVAL);
  assert_non_null(strstr(err, "redis://"));
  assert_int_equal(parse_url("h:6379", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://", &ep), -EINVAL);
  assert_non_null(strstr(err, "no host"));
  assert_int_equal(parse_url("redis://:pw@/0", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://h:", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://h:abc", &ep), -EINVAL);
  assert_non_null(strstr(err, "port"));
  assert_int_equal(parse_url("redis://h:0", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://h:65536", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://h/16", &ep), -EINVAL);
  assert_non_null(strstr(err, "database"));
  assert_int_equal(parse_url("redis://h/x", &ep), -EINVAL);
  assert_int_equal(parse_url("redis://h/-1", &ep), -EINVAL);
}

static void parse_url_failure_leaves_output_alone(void **state)
{
  struct fb_redis_endpoint ep, before;
  memset(&ep, 0x5a, sizeof ep);
  memcpy(&before, &ep, sizeof ep);
  assert_int_equal(fb_config_parse_redis_url("redis://h:0", &ep, err, sizeof err), -EINVAL);
  assert_memory_equal(&ep, &before, sizeof ep);
}

/* ================================================================= NATS */

static void nats_none_disables_nats(void **state)
{
  env("NATS_URL", "none");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_false(cfg.nats_enabled);
  env("NATS_URL", "NONE");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_false(cfg.nats_enabled);
  unsetenv("NATS_URL");
  assert_int_equal(LOAD("--nats-url", "none"), FB_CONFIG_OK);
  assert_false(cfg.nats_enabled);
}

static void nats_server_list(void **state)
{
  env("NATS_URL", "nats://a:4222,nats://b:4222, tls://c:4443");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_true(cfg.nats_enabled);
  assert_string_equal(cfg.nats_url, "nats://a:4222,nats://b:4222, tls://c:4443");
}

/* A readable file for the settings that name one; `path` gets its name. */
static void temp_file(char *path, size_t n, const char *stem)
{
  snprintf(path, n, "/tmp/fb-test-%s-XXXXXX", stem);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
}

static void nats_auth_settings(void **state)
{
  char creds[64], ca[64];
  temp_file(creds, sizeof creds, "creds");
  temp_file(ca, sizeof ca, "ca");
  env("NATS_TOKEN", "tok");
  env("NATS_USER", "u");
  env("NATS_PASSWORD", "p");
  env("NATS_CREDS", creds);
  env("NATS_TLS_CA", ca);
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_string_equal(cfg.nats_token, "tok");
  assert_string_equal(cfg.nats_user, "u");
  assert_string_equal(cfg.nats_password, "p");
  assert_string_equal(cfg.nats_creds, creds);
  assert_string_equal(cfg.nats_tls_ca, ca);
  unlink(creds);
  unlink(ca);
}

static void nats_unreadable_files_are_refused(void **state)
{
  env("NATS_CREDS", "/nonexistent/gateway.creds");
  assert_bad_setting(LOAD_NOARGS(), "NATS_CREDS");
  unsetenv("NATS_CREDS");
  env("NATS_TLS_CA", "/nonexistent/ca.pem");
  assert_bad_setting(LOAD_NOARGS(), "NATS_TLS_CA");
}

static void nats_bad_url_is_refused(void **state)
{
  env("NATS_URL", "localhost");
  assert_bad_setting(LOAD_NOARGS(), "NATS_URL");
}

/* =========================================================== bad values */

static void bad_strategy_names_the_setting(void **state)
{
  env("ROUTING_STRATEGY", "fastest");
  assert_bad_setting(LOAD_NOARGS(), "ROUTING_STRATEGY");
  assert_non_null(strstr(err, "fastest"));
  unsetenv("ROUTING_STRATEGY");
  assert_bad_setting(LOAD("--strategy", "fastest"), "--strategy");
}

static void bad_numbers_name_the_setting(void **state)
{
  env("HEARTBEAT_TIMEOUT_MS", "-5");
  assert_bad_setting(LOAD_NOARGS(), "HEARTBEAT_TIMEOUT_MS");
  env("HEARTBEAT_TIMEOUT_MS", "90s");
  assert_bad_setting(LOAD_NOARGS(), "HEARTBEAT_TIMEOUT_MS");
  unsetenv("HEARTBEAT_TIMEOUT_MS");
  env("FRAME_MAX_AGE_MS", "");
  assert_bad_setting(LOAD_NOARGS(), "FRAME_MAX_AGE_MS");
  unsetenv("FRAME_MAX_AGE_MS");
  env("MAX_DELIVERIES", "0");
  assert_bad_setting(LOAD_NOARGS(), "MAX_DELIVERIES");
  unsetenv("MAX_DELIVERIES");
  env("BATCH_SIZE", "99999999999999999999");
  assert_bad_setting(LOAD_NOARGS(), "BATCH_SIZE");
}

static void bad_enums_name_the_setting(void **state)
{
  env("LOG_LEVEL", "loud");
  assert_bad_setting(LOAD_NOARGS(), "LOG_LEVEL");
  unsetenv("LOG_LEVEL");
  env("LOG_FORMAT", "xml");
  assert_bad_setting(LOAD_NOARGS(), "LOG_FORMAT");
  unsetenv("LOG_FORMAT");
  env("OVERLOAD_POLICY", "panic");
  assert_bad_setting(LOAD_NOARGS(), "OVERLOAD_POLICY");
  unsetenv("OVERLOAD_POLICY");
  env("NATS_JETSTREAM", "maybe");
  assert_bad_setting(LOAD_NOARGS(), "NATS_JETSTREAM");
}

static void bad_names_name_the_setting(void **state)
{
  env("INPUT_STREAM", "");
  assert_bad_setting(LOAD_NOARGS(), "INPUT_STREAM");
  unsetenv("INPUT_STREAM");
  env("CONSUMER_NAME", "a b");
  assert_bad_setting(LOAD_NOARGS(), "CONSUMER_NAME");
  unsetenv("CONSUMER_NAME");
  assert_bad_setting(LOAD("--consumer-group", "g\tx"), "--consumer-group");
}

static void too_long_value_is_refused(void **state)
{
  char long_name[FB_NAME_MAX + 10];
  memset(long_name, 'n', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  env("INPUT_STREAM", long_name);
  assert_bad_setting(LOAD_NOARGS(), "INPUT_STREAM");
}

static void error_is_one_line(void **state)
{
  env("ROUTING_STRATEGY", "fastest");
  assert_int_equal(LOAD_NOARGS(), -EINVAL);
  assert_null(strchr(err, '\n'));
  assert_true(strncmp(err, "invalid setting ROUTING_STRATEGY", 32) == 0);
}

/* ============================================================ arguments */

static void unknown_option_is_refused(void **state)
{
  assert_int_equal(LOAD("--bogus", "1"), -EINVAL);
  assert_non_null(strstr(err, "--bogus"));
}

static void missing_option_value_is_refused(void **state)
{
  assert_int_equal(LOAD("--strategy"), -EINVAL);
  assert_non_null(strstr(err, "--strategy"));
  assert_non_null(strstr(err, "missing"));
}

static void positional_argument_is_refused(void **state)
{
  assert_int_equal(LOAD("extra"), -EINVAL);
  assert_non_null(strstr(err, "extra"));
}

static void repeated_loads_start_over(void **state)
{
  /* getopt state is reset inside: a second parse sees its own argv. */
  assert_int_equal(LOAD("--strategy", "round_robin"), FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_ROUND_ROBIN);
  assert_int_equal(LOAD("--strategy", "consistent_hash"), FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_CONSISTENT_HASH);
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_int_equal(cfg.strategy, FB_STRATEGY_LEAST_LOADED);
}

static void version_exits(void **state)
{
  assert_int_equal(LOAD("--version"), FB_CONFIG_EXIT);
}

/* =============================================================== names */

static void strategy_names_round_trip(void **state)
{
  for (int i = 0; i < FB_STRATEGY_COUNT; i++) {
    enum fb_strategy s;
    assert_int_equal(fb_strategy_parse(fb_strategy_name((enum fb_strategy)i), &s), 0);
    assert_int_equal(s, i);
  }
  enum fb_strategy s;
  assert_int_equal(fb_strategy_parse("random", &s), -EINVAL);
  assert_string_equal(fb_strategy_name(FB_STRATEGY_LEAST_LOADED), "least_loaded");
  assert_string_equal(fb_overload_policy_name(FB_OVERLOAD_BLOCK), "block");
  assert_string_equal(fb_strategy_name(FB_STRATEGY_COUNT), "unknown");
}

static void overload_policy_names_round_trip(void **state)
{
  for (int i = 0; i < FB_OVERLOAD_COUNT; i++) {
    enum fb_overload_policy p;
    assert_int_equal(
        fb_overload_policy_parse(fb_overload_policy_name((enum fb_overload_policy)i), &p), 0);
    assert_int_equal(p, i);
  }
  enum fb_overload_policy p = FB_OVERLOAD_REJECT;
  assert_int_equal(fb_overload_policy_parse("drop", &p), -EINVAL);
  assert_int_equal(fb_overload_policy_parse("BLOCK", &p), -EINVAL); /* exact names only */
  assert_int_equal(p, FB_OVERLOAD_REJECT);                          /* untouched */
  assert_string_equal(fb_overload_policy_name(FB_OVERLOAD_DROP_OLDEST), "drop_oldest");
  assert_string_equal(fb_overload_policy_name(FB_OVERLOAD_REJECT), "reject");
  assert_string_equal(fb_overload_policy_name((enum fb_overload_policy)FB_OVERLOAD_COUNT),
                      "unknown");
}

/* The lists messages and --help spell out, word for word. */
static void name_lists_are_in_order(void **state)
{
  char list[FB_NAME_LIST_MAX];
  assert_string_equal(fb_strategy_list(list, sizeof list),
                      "round_robin, weighted_round_robin, least_loaded, consistent_hash");
  assert_ptr_equal(fb_overload_policy_list(list, sizeof list), list);
  assert_string_equal(list, "drop_oldest, reject, block");
  char small[12];
  memset(small, 'x', sizeof small);
  fb_strategy_list(small, sizeof small); /* cut, never overrun */
  assert_string_equal(small, "round_robin");
  static const char *const three[] = {"a", "b", "c"};
  assert_string_equal(fb_names_join(three, 3, list, sizeof list), "a, b, c");
  assert_string_equal(fb_names_join(three, 0, list, sizeof list), "");
  fb_names_join(three, 3, small, 0); /* nothing written */
  assert_string_equal(small, "round_robin");
}

/* Messages and --help take the names from the tables: same words as ever. */
static void name_messages_are_stable(void **state)
{
  assert_int_equal(LOAD("--strategy", "nope"), -EINVAL);
  assert_string_equal(err, "invalid setting --strategy: 'nope' is not one of round_robin, "
                           "weighted_round_robin, least_loaded, consistent_hash");
  env("OVERLOAD_POLICY", "x");
  assert_int_equal(LOAD_NOARGS(), -EINVAL);
  assert_string_equal(
      err, "invalid setting OVERLOAD_POLICY: 'x' is not one of drop_oldest, reject, block");
}

/* ======================================================== high availability */

static void ha_defaults(void **state)
{
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_int_equal(cfg.redis.nsentinels, 0);
  assert_int_equal(cfg.redis_wait_replicas, 0);
  assert_int_equal(cfg.nats_js_replicas, 1);
  assert_true(cfg.fleet_view);
}

static void sentinels_are_parsed(void **state)
{
  env("REDIS_SENTINELS", "s1:26379, 10.0.0.2:26380,s3.example:5000");
  env("REDIS_SENTINEL_MASTER", "mymaster");
  env("REDIS_SENTINEL_PASSWORD", "sp");
  env("REDIS_URL", "redis://:datapw@ignored:1/4");
  assert_int_equal(LOAD_NOARGS(), FB_CONFIG_OK);
  assert_int_equal(cfg.redis.nsentinels, 3);
  assert_string_equal(cfg.redis.sentinels[0].host, "s1");
  assert_int_equal(cfg.redis.sentinels[0].port, 26379);
  assert_string_equal(cfg.redis.sentinels[1].host, "10.0.0.2");
  assert_int_equal(cfg.redis.sentinels[1].port, 26380);
  assert_string_equal(cfg.redis.sentinels[2].host, "s3.example");
  assert_int_equal(cfg.redis.sentinels[2].port, 5000);
  assert_string_equal(cfg.redis.sentinel_master, "mymaster");
  assert_string_equal(cfg.redis.sentinel_password, "sp");
  /* The data nodes' credentials and database still come from the URL. */
  assert_string_equal(cfg.redis.password, "datapw");
  assert_int_equal(cfg.redis.db, 4);
  /* A --redis-url flag after them keeps the sentinels. */
  assert_int_equal(LOAD("--redis-url", "redis://other:6390/1"), FB_CONFIG_OK);
  assert_int_equal(cfg.redis.nsentinels, 3);
  assert_int_equal(cfg.redis.db, 1);
}

static void sentinel_settings_need_each_other(void **state)
{
  env("REDIS_SENTINELS", "s1:26379");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_SENTINEL_MASTER");
  unsetenv("REDIS_SENTINELS");
  env("REDIS_SENTINEL_MASTER", "m");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_SENTINELS");
}

static void bad_ha_values_name_the_setting(void **state)
{
  env("REDIS_SENTINEL_MASTER", "m");
  const char *bad_sentinels[] = {"s1", "s1:", ":26379", "s1:0", "s1:x", "s1:26379,s2"};
  for (size_t i = 0; i < sizeof bad_sentinels / sizeof *bad_sentinels; i++) {
    env("REDIS_SENTINELS", bad_sentinels[i]);
    assert_bad_setting(LOAD_NOARGS(), "REDIS_SENTINELS");
  }
  unsetenv("REDIS_SENTINELS");
  unsetenv("REDIS_SENTINEL_MASTER");
  const char *bad_js[] = {"0", "2", "4", "6", "three", ""};
  for (size_t i = 0; i < sizeof bad_js / sizeof *bad_js; i++) {
    env("NATS_JS_REPLICAS", bad_js[i]);
    assert_bad_setting(LOAD_NOARGS(), "NATS_JS_REPLICAS");
  }
  unsetenv("NATS_JS_REPLICAS");
  assert_int_equal(
      LOAD("--nats-js-replicas", "5", "--redis-wait-replicas", "2", "--fleet-view", "0"),
      FB_CONFIG_OK);
  assert_int_equal(cfg.nats_js_replicas, 5);
  assert_int_equal(cfg.redis_wait_replicas, 2);
  assert_false(cfg.fleet_view);
  env("REDIS_WAIT_REPLICAS", "-1");
  assert_bad_setting(LOAD_NOARGS(), "REDIS_WAIT_REPLICAS");
  env("REDIS_WAIT_REPLICAS", "1");
  env("FLEET_VIEW", "sometimes");
  assert_bad_setting(LOAD_NOARGS(), "FLEET_VIEW");
}

/* ================================================================ main */

#define CFG_TEST(f) cmocka_unit_test_setup_teardown(f, clean_env, clean_env)

int main(void)
{
  const struct CMUnitTest tests[] = {
      CFG_TEST(defaults_match_spec),
      CFG_TEST(default_consumer_name_is_host_name),
      CFG_TEST(environment_sets_values),
      CFG_TEST(flags_set_values),
      CFG_TEST(flags_win_over_environment),
      CFG_TEST(environment_used_when_no_flag),
      CFG_TEST(port_alone_sets_the_port),
      CFG_TEST(listen_flag_wins_over_port),
      CFG_TEST(listen_without_host_is_all_interfaces),
      CFG_TEST(unexpanded_consumer_name_is_refused),
      CFG_TEST(bad_port_is_refused),
      CFG_TEST(redis_url_sets_everything),
      CFG_TEST(redis_compat_variables),
      CFG_TEST(redis_host_alone_keeps_default_port),
      CFG_TEST(redis_password_survives_url_without_one),
      CFG_TEST(redis_bad_values_are_refused),
      CFG_TEST(parse_url_host_only),
      CFG_TEST(parse_url_port_and_db),
      CFG_TEST(parse_url_password),
      CFG_TEST(parse_url_user_and_password),
      CFG_TEST(parse_url_password_with_at_sign),
      CFG_TEST(parse_url_errors),
      CFG_TEST(parse_url_failure_leaves_output_alone),
      CFG_TEST(nats_none_disables_nats),
      CFG_TEST(nats_server_list),
      CFG_TEST(nats_auth_settings),
      CFG_TEST(nats_unreadable_files_are_refused),
      CFG_TEST(nats_bad_url_is_refused),
      CFG_TEST(bad_strategy_names_the_setting),
      CFG_TEST(bad_numbers_name_the_setting),
      CFG_TEST(bad_enums_name_the_setting),
      CFG_TEST(bad_names_name_the_setting),
      CFG_TEST(too_long_value_is_refused),
      CFG_TEST(error_is_one_line),
      CFG_TEST(unknown_option_is_refused),
      CFG_TEST(missing_option_value_is_refused),
      CFG_TEST(positional_argument_is_refused),
      CFG_TEST(repeated_loads_start_over),
      CFG_TEST(version_exits),
      CFG_TEST(strategy_names_round_trip),
      CFG_TEST(overload_policy_names_round_trip),
      CFG_TEST(name_lists_are_in_order),
      CFG_TEST(name_messages_are_stable),
      CFG_TEST(ha_defaults),
      CFG_TEST(sentinels_are_parsed),
      CFG_TEST(sentinel_settings_need_each_other),
      CFG_TEST(bad_ha_values_name_the_setting),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
