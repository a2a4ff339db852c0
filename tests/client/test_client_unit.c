/*
 * Unit tests of libframebuffer-client's parts without I/O: frame views (from
 * a Redis reply and from a NATS payload) and options (defaults, the
 * environment, validation, a caller built against a smaller struct).
 * Single-threaded.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fbc_internal.h"

/* ------------------------------------------------------------- frames --- */

/* A flat [field, value, ...] reply like XREADGROUP's, built by hand. */
struct fake_fields {
  redisReply arr;
  redisReply items[16];
  redisReply *ptrs[16];
};

static void fake_init(struct fake_fields *f, const char *const *kv, size_t n)
{
  memset(f, 0, sizeof *f);
  f->arr.type = REDIS_REPLY_ARRAY;
  f->arr.elements = n;
  f->arr.element = f->ptrs;
  for (size_t i = 0; i < n; i++) {
    f->items[i].type = REDIS_REPLY_STRING;
    f->items[i].str = (char *)kv[i];
    f->items[i].len = strlen(kv[i]);
    f->ptrs[i] = &f->items[i];
  }
}

static void redis_view_reads_fields(void **state)
{
  const char *kv[] = {"frame_id",       "f-1",
                      "camera_id",      "cam-7",
                      "timestamp",      "2026-01-01T00:00:00.000Z",
                      "metadata",       "{\"detection_type\":\"face\"}",
                      "detection_type", "person",
                      "trace_context",  "{\"trace_id\":\"ab\"}",
                      "width",          "1920"};
  struct fake_fields ff;
  fake_init(&ff, kv, 14);
  struct fbc_frame f;
  fbci_frame_from_redis(&f, "1-0", &ff.arr);
  assert_string_equal(fbc_frame_id(&f), "f-1");
  assert_string_equal(fbc_frame_camera_id(&f), "cam-7");
  assert_string_equal(fbc_frame_timestamp(&f), "2026-01-01T00:00:00.000Z");
  assert_string_equal(fbc_frame_detection_type(&f), "person"); /* top level wins */
  assert_string_equal(fbc_frame_metadata(&f), "{\"detection_type\":\"face\"}");
  assert_string_equal(fbc_frame_trace_context(&f), "{\"trace_id\":\"ab\"}");
  assert_string_equal(fbc_frame_field(&f, "width"), "1920");
  assert_string_equal(fbc_frame_source(&f), "1-0");
  assert_null(fbc_frame_field(&f, "height"));
  assert_null(fbc_frame_traceparent(&f));
}

static void redis_view_takes_type_from_metadata(void **state)
{
  const char *kv[] = {"frame_id", "f-2", "metadata",
                      "{\"zone\":\"z1\",\"detection_type\":\"vehicle\"}"};
  struct fake_fields ff;
  fake_init(&ff, kv, 4);
  struct fbc_frame f;
  fbci_frame_from_redis(&f, "2-0", &ff.arr);
  assert_string_equal(fbc_frame_detection_type(&f), "vehicle");
  assert_string_equal(fbc_frame_detection_type(&f), "vehicle"); /* cached */
  assert_null(fbc_frame_camera_id(&f));
}

static void redis_view_without_type(void **state)
{
  const char *kv[] = {"frame_id", "f-3", "metadata", "not json"};
  struct fake_fields ff;
  fake_init(&ff, kv, 4);
  struct fbc_frame f;
  fbci_frame_from_redis(&f, "3-0", &ff.arr);
  assert_null(fbc_frame_detection_type(&f));
  assert_null(fbc_frame_field(&f, NULL));
  assert_null(fbc_frame_id(NULL));
}

static void json_view_reads_fields(void **state)
{
  const char *doc = "{\"frame_id\":\"n-1\",\"camera_id\":\"cam-1\",\"traceparent\":"
                    "\"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01\","
                    "\"metadata\":\"{\\\"detection_type\\\":\\\"face\\\"}\",\"size_bytes\":5}";
  struct fbc_frame f;
  assert_int_equal(fbci_frame_from_json(&f, "frames.ready.p1", doc, strlen(doc)), 0);
  assert_string_equal(fbc_frame_id(&f), "n-1");
  assert_string_equal(fbc_frame_camera_id(&f), "cam-1");
  assert_string_equal(fbc_frame_detection_type(&f), "face");
  assert_string_equal(fbc_frame_traceparent(&f),
                      "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01");
  assert_string_equal(fbc_frame_source(&f), "frames.ready.p1");
  assert_null(fbc_frame_field(&f, "size_bytes")); /* not a string: not a frame field */
  fbci_frame_clear(&f);
}

static void json_view_refuses_non_frames(void **state)
{
  const char *bad[] = {
      "[1,2]", "{\"camera_id\":\"c\"}", "{\"frame_id\":\"\"}", "{\"frame_id\":7}", "not json", ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct fbc_frame f;
    assert_int_equal(fbci_frame_from_json(&f, "s", bad[i], strlen(bad[i])), -EINVAL);
    assert_null(f.doc);
  }
}

/* ------------------------------------------------------------ options --- */

static void good_options(struct fbc_options *o)
{
  fbc_options_init(o);
  o->id = "tracker-1";
  o->capabilities = "person,vehicle";
}

static void defaults_are_set(void **state)
{
  struct fbc_options o;
  fbc_options_init(&o);
  assert_int_equal(o.size, sizeof o);
  assert_int_equal(o.capacity, 4);
  assert_int_equal(o.transport, FBC_REDIS);
  assert_int_equal(o.heartbeat_interval_ms, 30000);
  assert_string_equal(o.result_stream, "frames:results");
  assert_string_equal(o.redis_url, "redis://127.0.0.1:6379/0");
  assert_string_equal(o.api_url, "http://127.0.0.1:8002");
  assert_null(o.nats_url);
  assert_null(o.log);
}

static void expect_invalid(const struct fbc_options *o, const char *starts)
{
  char why[512] = "";
  assert_int_equal(fbc_options_validate(o, why, sizeof why), -EINVAL);
  if (strncmp(why, starts, strlen(starts)) != 0)
    fail_msg("why '%s' does not start with '%s'", why, starts);
}

static void validation_names_the_field(void **state)
{
  struct fbc_options o;
  good_options(&o);
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);

  good_options(&o);
  o.id = NULL;
  expect_invalid(&o, "id:");
  o.id = "has space";
  expect_invalid(&o, "id:");
  good_options(&o);
  o.capabilities = "person,,face";
  expect_invalid(&o, "capabilities:");
  o.capabilities = "per son";
  expect_invalid(&o, "capabilities:");
  o.capabilities = NULL;
  expect_invalid(&o, "capabilities:");
  good_options(&o);
  o.capacity = 0;
  expect_invalid(&o, "capacity:");
  good_options(&o);
  o.redis_url = "http://x";
  expect_invalid(&o, "redis_url:");
  good_options(&o);
  o.api_url = "ftp://x";
  expect_invalid(&o, "api_url:");
  o.api_url = "none";
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  good_options(&o);
  o.heartbeat_interval_ms = -1;
  expect_invalid(&o, "heartbeat_interval_ms:");
  good_options(&o);
  o.result_stream = "";
  expect_invalid(&o, "result_stream:");
}

static void validation_of_nats(void **state)
{
  struct fbc_options o;
  good_options(&o);
  o.transport = FBC_NATS;
  expect_invalid(&o, "nats_url:"); /* NATS transport without NATS */
  o.nats_url = "none";
  expect_invalid(&o, "nats_url:");
  o.nats_url = "nats://127.0.0.1:4222,tls://b:4222";
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  o.nats_url = "http://x";
  expect_invalid(&o, "nats_url:");
  o.nats_url = "nats://127.0.0.1:4222";
  o.id = "dotted.id";
  expect_invalid(&o, "id:");
  o.id = "p1";
  o.subject = "frames.*";
  expect_invalid(&o, "subject:");
  o.subject = "custom.subject";
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  o.transport = FBC_JETSTREAM;
  expect_invalid(&o, "subject:"); /* outside frames.ready.> */
  o.subject = "frames.ready.p1-hd";
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  good_options(&o);
  o.subject = "frames.ready.x";
  expect_invalid(&o, "subject:"); /* Redis takes no subject */
  good_options(&o);
  o.id = "dotted.id";
  o.nats_url = "nats://127.0.0.1:4222"; /* Redis + NATS heartbeats: allowed (HTTP then) */
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  o.transport = (enum fbc_transport)7;
  expect_invalid(&o, "transport:");
}

/* A program built against an older, smaller struct: the fields it does not
 * know keep their defaults, and the library reads nothing past its size. */
static void smaller_struct_keeps_defaults(void **state)
{
  size_t old_size = offsetof(struct fbc_options, log);
  struct fbc_options o;
  memset(&o, 0xAB, sizeof o); /* what lies past the old struct: garbage */
  fbc_options_init_sized(&o, old_size);
  assert_int_equal(o.size, old_size);
  const unsigned char *tail = (const unsigned char *)&o + old_size;
  for (size_t i = 0; i < sizeof o - old_size; i++)
    assert_int_equal(tail[i], 0xAB); /* init wrote nothing past the size */
  o.id = "old-1";
  o.capabilities = "person";
  assert_int_equal(fbc_options_validate(&o, NULL, 0), 0);
  struct fbci_config cfg;
  char why[256];
  assert_int_equal(fbci_config_make(&cfg, &o, why, sizeof why), 0);
  assert_string_equal(cfg.stream, "frames:ready:old-1");
  assert_string_equal(cfg.subject, "frames.ready.old-1");
  fbci_config_free(&cfg);
  o.size = 8; /* not from fbc_options_init at all */
  expect_invalid(&o, "options:");
}

static void environment_overrides(void **state)
{
  struct fbc_options o;
  fbc_options_init(&o);
  setenv("PROCESSOR_ID", "env-proc", 1);
  setenv("PROCESSOR_CAPABILITIES", "face", 1);
  setenv("FB_API", "http://10.0.0.1:9000", 1);
  setenv("NATS_URL", "none", 1);
  setenv("REDIS_URL", "", 1); /* empty: the default stays */
  setenv("PROCESSOR_TRANSPORT", "jetstream", 1);
  assert_int_equal(fbc_options_from_env(&o), 0);
  assert_string_equal(o.id, "env-proc");
  assert_string_equal(o.capabilities, "face");
  assert_string_equal(o.api_url, "http://10.0.0.1:9000");
  assert_string_equal(o.nats_url, "none");
  assert_string_equal(o.redis_url, "redis://127.0.0.1:6379/0");
  assert_int_equal(o.transport, FBC_JETSTREAM);
  expect_invalid(&o, "nats_url:"); /* JetStream with NATS_URL=none */
  setenv("PROCESSOR_TRANSPORT", "carrier-pigeon", 1);
  assert_int_equal(fbc_options_from_env(&o), -EINVAL);
  unsetenv("PROCESSOR_TRANSPORT");
}

static void errors_have_text(void **state)
{
  assert_string_equal(fbc_strerror(0), "success");
  assert_non_null(strstr(fbc_strerror(-ECONNRESET), "come again"));
  assert_non_null(fbc_strerror(-EHOSTUNREACH));
  assert_string_equal(fbc_version(), FBC_VERSION_STRING);
}

static void connect_refuses_bad_options(void **state)
{
  struct fbc_options o;
  good_options(&o);
  o.capacity = -3;
  struct fbc_client *c = (struct fbc_client *)&o; /* must be reset to NULL */
  assert_int_equal(fbc_connect(&c, &o), -EINVAL);
  assert_null(c);
  assert_int_equal(fbc_close(NULL), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(redis_view_reads_fields),
      cmocka_unit_test(redis_view_takes_type_from_metadata),
      cmocka_unit_test(redis_view_without_type),
      cmocka_unit_test(json_view_reads_fields),
      cmocka_unit_test(json_view_refuses_non_frames),
      cmocka_unit_test(defaults_are_set),
      cmocka_unit_test(validation_names_the_field),
      cmocka_unit_test(validation_of_nats),
      cmocka_unit_test(smaller_struct_keeps_defaults),
      cmocka_unit_test(environment_overrides),
      cmocka_unit_test(errors_have_text),
      cmocka_unit_test(connect_refuses_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
