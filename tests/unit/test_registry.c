/*
 * Unit tests for gateway/registry.c: registration validation and its 422
 * messages (README: The API), the API view of a processor, snapshots with capability
 * groups, and the registry's put/remove/sync. Single-threaded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "framebuffer/log.h"
#include "framebuffer/registry.h"
#include "helpers.h"

/* ============================================================== helpers */

#define VALID "\"capabilities\":[\"person\"],\"capacity\":4,\"queue\":\"\""

static char detail[512];

/* Runs fb_proc_from_json on `text` against input stream `input`. */
static int try_register_on(const char *text, const char *input, struct fb_proc **out)
{
  json_error_t jerr;
  json_t *body = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
  if (!body) fail_msg("test body is not JSON: %s (%s)", text, jerr.text);
  detail[0] = '\0';
  int rc = fb_proc_from_json(out, body, input, detail, sizeof detail);
  json_decref(body);
  return rc;
}

/* Asserts that `text` is refused with exactly `message`. */
static void assert_refused(const char *text, const char *message)
{
  struct fb_proc *p = (struct fb_proc *)1;
  int rc = try_register_on(text, FB_TEST_INPUT_STREAM, &p);
  if (rc != -EINVAL) fail_msg("accepted: %s", text);
  assert_null(p);
  assert_string_equal(detail, message);
}

/* Asserts that `text` is accepted; returns the new processor. */
static struct fb_proc *accepted(const char *text)
{
  struct fb_proc *p = NULL;
  int rc = try_register_on(text, FB_TEST_INPUT_STREAM, &p);
  if (rc) fail_msg("refused: %s: %s", text, detail);
  assert_non_null(p);
  return p;
}

static char *repeat(char c, size_t n)
{
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

static const char *doc_str(const struct fb_proc *p, const char *key)
{
  json_t *v = json_object_get(p->doc, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ============================================================= defaults */

static void minimal_registration_fills_defaults(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p1\"," VALID "}");
  assert_string_equal(p->id, "p1");
  assert_int_equal(p->ncaps, 1);
  assert_string_equal(p->caps[0], "person");
  assert_int_equal(p->capacity, 4);
  assert_string_equal(p->stream, "frames:ready:p1");
  assert_int_equal(p->transport, FB_TRANSPORT_REDIS);
  assert_string_equal(p->subject, "frames.ready.p1");
  assert_string_equal(p->result_stream, "frames:results");
  assert_int_equal(p->weight, 1);
  assert_int_equal(p->max_queue, 10000);
  assert_int_equal(p->heartbeat_interval_ms, 30000);
  /* Set by the API on registration, never made up here: an entry the old
   * service wrote reads back unchanged. */
  assert_int_equal(p->registered_at_ms, 0);
  assert_null(json_object_get(p->doc, "registered_at_ms"));
  assert_non_null(p->live);
  assert_int_equal(atomic_load(&p->live->status), FB_HEALTH_HEALTHY);

  /* The stored document makes every default explicit. */
  assert_true(json_is_null(json_object_get(p->doc, "endpoint")));
  assert_true(json_is_null(json_object_get(p->doc, "health_endpoint")));
  assert_true(json_is_object(json_object_get(p->doc, "metadata")));
  assert_string_equal(doc_str(p, "transport"), "redis");
  assert_string_equal(doc_str(p, "subject"), "frames.ready.p1");
  assert_string_equal(doc_str(p, "result_stream"), "frames:results");
  assert_int_equal(json_integer_value(json_object_get(p->doc, "weight")), 1);
  assert_int_equal(json_integer_value(json_object_get(p->doc, "max_queue")), 10000);
  assert_int_equal(json_integer_value(json_object_get(p->doc, "heartbeat_interval_ms")), 30000);
  assert_non_null(p->stored);
  json_t *back = json_loads(p->stored, 0, NULL);
  assert_non_null(back);
  assert_true(json_equal(back, p->doc));
  json_decref(back);
  fb_proc_release(p);
}

static void full_registration_is_kept(void **state)
{
  struct fb_proc *p =
      accepted("{\"id\":\"gpu-1\",\"capabilities\":[\"person\",\"vehicle\"],\"capacity\":8,"
               "\"queue\":\"custom:q\",\"endpoint\":\"http://gpu-1:8080\",\"health_endpoint\":null,"
               "\"metadata\":{\"zone\":\"a\"},\"transport\":\"nats\",\"subject\":\"gpu.one\","
               "\"result_stream\":\"results:gpu\",\"weight\":3,\"max_queue\":500,"
               "\"heartbeat_interval_ms\":5000,\"registered_at_ms\":1700000000000,\"extra\":true}");
  assert_int_equal(p->ncaps, 2);
  assert_string_equal(p->caps[1], "vehicle");
  assert_int_equal(p->capacity, 8);
  assert_string_equal(p->stream, "custom:q");
  assert_int_equal(p->transport, FB_TRANSPORT_NATS);
  assert_string_equal(p->subject, "gpu.one");
  assert_string_equal(p->result_stream, "results:gpu");
  assert_int_equal(p->weight, 3);
  assert_int_equal(p->max_queue, 500);
  assert_int_equal(p->heartbeat_interval_ms, 5000);
  assert_int_equal(p->registered_at_ms, INT64_C(1700000000000));
  assert_string_equal(doc_str(p, "endpoint"), "http://gpu-1:8080");
  assert_string_equal(doc_str(p, "queue"), "custom:q");
  /* Unknown members survive, as they did in the old service. */
  assert_true(json_is_true(json_object_get(p->doc, "extra")));
  fb_proc_release(p);
}

static void body_must_be_object(void **state)
{
  assert_refused("[]", "body must be a JSON object");
  assert_refused("\"p1\"", "body must be a JSON object");
  assert_refused("null", "body must be a JSON object");
}

/* =================================================================== id */

static void id_charset_is_validated(void **state)
{
  assert_true(fb_proc_id_is_valid("a", 1));
  assert_true(fb_proc_id_is_valid("AZaz09._:-", 10));
  assert_true(fb_proc_id_is_valid("proc.v2:gpu_0-a", 15));
  assert_false(fb_proc_id_is_valid("", 0));
  assert_false(fb_proc_id_is_valid("../x", 4));
  assert_false(fb_proc_id_is_valid("a b", 3));
  assert_false(fb_proc_id_is_valid("a/b", 3));
  assert_false(fb_proc_id_is_valid("a*", 2));
  assert_false(fb_proc_id_is_valid("a\n", 2));
  assert_false(fb_proc_id_is_valid("caf\xc3\xa9", 5));
  assert_false(fb_proc_id_is_valid("a\0b", 3));
  assert_false(fb_proc_id_is_valid("{x}", 3));
}

static void id_length_is_1_to_128(void **state)
{
  char *id128 = repeat('a', 128), *id129 = repeat('a', 129);
  assert_true(fb_proc_id_is_valid(id128, 128));
  assert_false(fb_proc_id_is_valid(id129, 129));

  char text[512];
  snprintf(text, sizeof text, "{\"id\":\"%s\"," VALID "}", id128);
  fb_proc_release(accepted(text));
  snprintf(text, sizeof text, "{\"id\":\"%s\"," VALID "}", id129);
  assert_refused(text, "id must be 1-128 characters of A-Z a-z 0-9 . _ : -");
  free(id128);
  free(id129);
}

static void id_is_required(void **state)
{
  assert_refused("{" VALID "}", "id is required");
  assert_refused("{\"id\":null," VALID "}", "id is required");
}

static void id_must_be_string(void **state)
{
  assert_refused("{\"id\":5," VALID "}", "id must be a string");
  assert_refused("{\"id\":[\"a\"]," VALID "}", "id must be a string");
}

static void hostile_ids_are_refused(void **state)
{
  const char *msg = "id must be 1-128 characters of A-Z a-z 0-9 . _ : -";
  assert_refused("{\"id\":\"../x\"," VALID "}", msg);
  assert_refused("{\"id\":\"a b\"," VALID "}", msg);
  assert_refused("{\"id\":\"\"," VALID "}", msg);
  assert_refused("{\"id\":\"a\\u0000b\"," VALID "}", msg);
  assert_refused("{\"id\":\"a\\nb\"," VALID "}", msg);
  assert_refused("{\"id\":\"x\\\"}\"," VALID "}", msg);
  assert_refused("{\"id\":\"caf\\u00e9\"," VALID "}", msg);
  assert_refused("{\"id\":\"a*\"," VALID "}", msg);
}

/* Every id of the README: The API charset registers as a Redis processor; only a
 * NATS processor needs an id that makes a valid default subject. */
static void id_ending_in_dot_is_valid_for_redis_transport(void **state)
{
  fb_proc_release(accepted("{\"id\":\"a.\"," VALID "}"));
  fb_proc_release(accepted("{\"id\":\".\"," VALID "}"));
  fb_proc_release(accepted("{\"id\":\"x..y\"," VALID ",\"transport\":\"redis\"}"));
  /* ... and read back as stored, as another replica reads it. */
  struct fb_proc *p = accepted("{\"id\":\".tracker-1\"," VALID "}");
  assert_true(json_is_null(json_object_get(p->doc, "subject")));
  fb_proc_release(accepted(p->stored));
  fb_proc_release(p);
}

static void id_unusable_in_subject_needs_subject_for_nats(void **state)
{
  assert_refused("{\"id\":\"a.\"," VALID ",\"transport\":\"nats\"}",
                 "id is not usable in a NATS subject; give a subject");
  struct fb_proc *p =
      accepted("{\"id\":\"a.\"," VALID ",\"transport\":\"nats\",\"subject\":\"a\"}");
  assert_string_equal(p->subject, "a");
  fb_proc_release(p);
}

/* ========================================================= capabilities */

static void capabilities_are_required(void **state)
{
  assert_refused("{\"id\":\"p\",\"capacity\":1,\"queue\":\"\"}", "capabilities is required");
  assert_refused("{\"id\":\"p\",\"capabilities\":null,\"capacity\":1,\"queue\":\"\"}",
                 "capabilities is required");
}

static void capabilities_must_be_array(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":\"person\",\"capacity\":1,\"queue\":\"\"}",
                 "capabilities must be an array of strings");
  assert_refused("{\"id\":\"p\",\"capabilities\":{},\"capacity\":1,\"queue\":\"\"}",
                 "capabilities must be an array of strings");
}

static void capabilities_must_not_be_empty(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[],\"capacity\":1,\"queue\":\"\"}",
                 "capabilities must not be empty");
}

static void capabilities_must_be_strings(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[1],\"capacity\":1,\"queue\":\"\"}",
                 "capabilities[0] must be a string");
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\",null],\"capacity\":1,\"queue\":\"\"}",
                 "capabilities[1] must be a string");
}

static void capabilities_must_be_non_empty_strings(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\",\"\"],\"capacity\":1,\"queue\":\"\"}",
                 "capabilities[1] must be 1-128 printable characters without spaces");
}

static void capabilities_at_most_64(void **state)
{
  char text[4096];
  size_t n = (size_t)snprintf(text, sizeof text,
                              "{\"id\":\"p\",\"capacity\":1,\"queue\":\"\","
                              "\"capabilities\":[");
  for (int i = 0; i < 65; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "%s\"c%d\"", i ? "," : "", i);
  snprintf(text + n, sizeof text - n, "]}");
  assert_refused(text, "at most 64 capabilities");
}

/* ============================================================= capacity */

static void capacity_is_required(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"queue\":\"\"}", "capacity is required");
}

static void capacity_must_be_positive_integer(void **state)
{
  const char *msg = "capacity must be an integer between 1 and 1000000";
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":0,\"queue\":\"\"}", msg);
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":-1,\"queue\":\"\"}", msg);
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1.5,\"queue\":\"\"}", msg);
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":\"4\",\"queue\":\"\"}", msg);
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":true,\"queue\":\"\"}", msg);
  struct fb_proc *p =
      accepted("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"\"}");
  assert_int_equal(p->capacity, 1);
  fb_proc_release(p);
}

/* ================================================================ queue */

static void queue_is_required(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1}",
                 "queue is required (\"\" for frames:ready:<id>)");
}

static void queue_must_be_string(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":5}",
                 "queue must be a string");
}

static void queue_empty_means_default_stream(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"cam.proc-1\"," VALID "}");
  assert_string_equal(p->stream, "frames:ready:cam.proc-1");
  fb_proc_release(p);
}

static void queue_custom_stream_is_kept(void **state)
{
  struct fb_proc *p =
      accepted("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"my:queue\"}");
  assert_string_equal(p->stream, "my:queue");
  fb_proc_release(p);
}

static void queue_reserved_keys_are_refused(void **state)
{
  assert_refused(
      "{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"frames:metadata\"}",
      "queue 'frames:metadata' is reserved");
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"frames:dlq\"}",
                 "queue 'frames:dlq' is reserved");
  assert_refused(
      "{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"processors:registry\"}",
      "queue 'processors:registry' is reserved");
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,"
                 "\"queue\":\"processors:capabilities:a\"}",
                 "queue 'processors:capabilities:a' is reserved");
}

static void queue_refuses_configured_input_stream(void **state)
{
  struct fb_proc *p = NULL;
  int rc = try_register_on("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,"
                           "\"queue\":\"cams:in\"}",
                           "cams:in", &p);
  assert_int_equal(rc, -EINVAL);
  assert_string_equal(detail, "queue 'cams:in' is reserved");
}

static void queue_with_spaces_is_refused(void **state)
{
  assert_refused("{\"id\":\"p\",\"capabilities\":[\"a\"],\"capacity\":1,\"queue\":\"a b\"}",
                 "queue must be a Redis key of 1-256 printable characters without spaces");
}

/* ============================================ transport, subject, result */

static void transport_redis_or_nats(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"transport\":\"nats\"}");
  assert_int_equal(p->transport, FB_TRANSPORT_NATS);
  fb_proc_release(p);
  p = accepted("{\"id\":\"p\"," VALID ",\"transport\":\"redis\"}");
  assert_int_equal(p->transport, FB_TRANSPORT_REDIS);
  fb_proc_release(p);
  p = accepted("{\"id\":\"p\"," VALID ",\"transport\":null}");
  assert_int_equal(p->transport, FB_TRANSPORT_REDIS);
  fb_proc_release(p);
}

static void transport_other_is_refused(void **state)
{
  assert_refused("{\"id\":\"p\"," VALID ",\"transport\":\"grpc\"}",
                 "transport must be \"redis\", \"nats\" or \"null\"");
  assert_refused("{\"id\":\"p\"," VALID ",\"transport\":\"NATS\"}",
                 "transport must be \"redis\", \"nats\" or \"null\"");
  assert_refused("{\"id\":\"p\"," VALID ",\"transport\":1}", "transport must be a string");
}

static void subject_defaults_to_frames_ready_id(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"edge:7\"," VALID ",\"transport\":\"nats\"}");
  assert_string_equal(p->subject, "frames.ready.edge:7");
  fb_proc_release(p);
}

static void subject_with_wildcards_is_refused(void **state)
{
  const char *msg = "subject must be a NATS subject without wildcards";
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"frames.*\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"frames.>\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"a..b\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\".a\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"a.\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"a b\"}", msg);
  assert_refused("{\"id\":\"p\"," VALID ",\"subject\":\"\"}", msg);
}

static void result_stream_default_and_custom(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"result_stream\":\"res:p\"}");
  assert_string_equal(p->result_stream, "res:p");
  fb_proc_release(p);
  assert_refused("{\"id\":\"p\"," VALID ",\"result_stream\":\"frames:metadata\"}",
                 "result_stream must be a Redis key other than the input stream");
  assert_refused("{\"id\":\"p\"," VALID ",\"result_stream\":7}", "result_stream must be a string");
}

/* ========================================================= numbers */

static void weight_default_and_minimum(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"weight\":5}");
  assert_int_equal(p->weight, 5);
  fb_proc_release(p);
  p = accepted("{\"id\":\"p\"," VALID ",\"weight\":null}");
  assert_int_equal(p->weight, 1);
  fb_proc_release(p);
  assert_refused("{\"id\":\"p\"," VALID ",\"weight\":0}", "weight must be between 1 and 1000000");
  assert_refused("{\"id\":\"p\"," VALID ",\"weight\":-2}", "weight must be between 1 and 1000000");
  assert_refused("{\"id\":\"p\"," VALID ",\"weight\":\"2\"}", "weight must be an integer");
  assert_refused("{\"id\":\"p\"," VALID ",\"weight\":1.5}", "weight must be an integer");
}

static void max_queue_default_and_explicit(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"max_queue\":250}");
  assert_int_equal(p->max_queue, 250);
  fb_proc_release(p);
  assert_refused("{\"id\":\"p\"," VALID ",\"max_queue\":0}",
                 "max_queue must be between 1 and 100000000");
}

static void metadata_queue_maxlen_sets_max_queue(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"metadata\":{\"queue_maxlen\":750}}");
  assert_int_equal(p->max_queue, 750);
  assert_int_equal(json_integer_value(json_object_get(p->doc, "max_queue")), 750);
  fb_proc_release(p);
}

static void max_queue_wins_over_metadata_queue_maxlen(void **state)
{
  struct fb_proc *p =
      accepted("{\"id\":\"p\"," VALID ",\"max_queue\":300,\"metadata\":{\"queue_maxlen\":750}}");
  assert_int_equal(p->max_queue, 300);
  fb_proc_release(p);
}

static void metadata_queue_maxlen_must_be_integer(void **state)
{
  struct fb_proc *p = NULL;
  int rc = try_register_on("{\"id\":\"p\"," VALID ",\"metadata\":{\"queue_maxlen\":\"x\"}}",
                           FB_TEST_INPUT_STREAM, &p);
  assert_int_equal(rc, -EINVAL);
  assert_non_null(strstr(detail, "queue_maxlen"));
  assert_non_null(strstr(detail, "integer"));
}

static void heartbeat_interval_default_zero_and_range(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"heartbeat_interval_ms\":0}");
  assert_int_equal(p->heartbeat_interval_ms, 0);
  fb_proc_release(p);
  p = accepted("{\"id\":\"p\"," VALID ",\"heartbeat_interval_ms\":1000}");
  assert_int_equal(p->heartbeat_interval_ms, 1000);
  fb_proc_release(p);
  assert_refused("{\"id\":\"p\"," VALID ",\"heartbeat_interval_ms\":-1}",
                 "heartbeat_interval_ms must be between 0 and 86400000");
  assert_refused("{\"id\":\"p\"," VALID ",\"heartbeat_interval_ms\":\"1s\"}",
                 "heartbeat_interval_ms must be an integer");
}

/* ============================================== endpoints and metadata */

static void endpoints_must_be_string_or_null(void **state)
{
  assert_refused("{\"id\":\"p\"," VALID ",\"endpoint\":5}", "endpoint must be a string");
  assert_refused("{\"id\":\"p\"," VALID ",\"health_endpoint\":[]}",
                 "health_endpoint must be a string");
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"endpoint\":null}");
  assert_true(json_is_null(json_object_get(p->doc, "endpoint")));
  fb_proc_release(p);
}

static void metadata_must_be_object(void **state)
{
  assert_refused("{\"id\":\"p\"," VALID ",\"metadata\":[]}", "metadata must be an object");
  assert_refused("{\"id\":\"p\"," VALID ",\"metadata\":\"x\"}", "metadata must be an object");
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"metadata\":null}");
  assert_true(json_is_object(json_object_get(p->doc, "metadata")));
  fb_proc_release(p);
}

/* fb_proc_check_fields on `text`: 0, or -EINVAL with `detail`. */
static int check_fields(const char *text)
{
  json_t *body = json_loads(text, 0, NULL);
  if (!body) fail_msg("test body is not JSON: %s", text);
  detail[0] = '\0';
  int rc = fb_proc_check_fields(body, detail, sizeof detail);
  json_decref(body);
  return rc;
}

static void unknown_fields_are_named_with_the_closest_known_one(void **state)
{
  assert_int_equal(check_fields("{\"id\":\"a\"," VALID ",\"transprt\":\"nats\"}"), -EINVAL);
  assert_string_equal(detail, "unknown field: \"transprt\" (did you mean \"transport\"?)");
  assert_int_equal(check_fields("{\"id\":\"a\"," VALID ",\"CAPACITY\":1,\"zz\":1}"), -EINVAL);
  assert_string_equal(detail, "unknown fields: \"CAPACITY\" (did you mean \"capacity\"?), \"zz\"");
  assert_int_equal(check_fields("{\"a1\":1,\"a2\":2,\"a3\":3,\"a4\":4,\"a5\":5,\"a6\":6,\"a7\":7}"),
                   -EINVAL);
  assert_string_equal(detail, "unknown fields: \"a1\", \"a2\", \"a3\", \"a4\", \"a5\" and 2 more");
}

/* The compat fields, the rest of the registration, and what the API shows
 * (sent back by a client that read it first) are all known. */
static void known_fields_pass_the_check(void **state)
{
  assert_int_equal(
      check_fields("{\"id\":\"a\"," VALID ",\"endpoint\":null,\"health_endpoint\":\"http://h/\","
                   "\"metadata\":{\"anything\":1},\"transport\":\"redis\",\"subject\":\"s\","
                   "\"result_stream\":\"r\",\"weight\":1,\"max_queue\":5,"
                   "\"heartbeat_interval_ms\":0,\"status\":\"dead\",\"last_heartbeat\":null,"
                   "\"frames_routed\":3,\"queue_depth\":2,\"registered_at_ms\":1}"),
      0);
  assert_int_equal(check_fields("[1]"), 0); /* not an object: fb_proc_from_json says so */
}

static void closest_name_allows_a_few_edits(void **state)
{
  static const char *const names[] = {"capability", "status", "transport", NULL};
  assert_string_equal(fb_closest_name("stauts", names), "status");        /* a swap */
  assert_string_equal(fb_closest_name("Status", names), "status");        /* case */
  assert_string_equal(fb_closest_name("capabilty", names), "capability"); /* a deletion */
  assert_string_equal(fb_closest_name("transports", names), "transport"); /* an insertion */
  assert_null(fb_closest_name("colour", names));
  assert_null(fb_closest_name("st", names)); /* too short to guess */
  assert_null(fb_closest_name("", names));
}

static void capabilities_are_deduplicated(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"d\",\"capabilities\":[\"person\",\"face\",\"person\","
                               "\"face\",\"car\"],\"capacity\":1,\"queue\":\"\"}");
  assert_int_equal(p->ncaps, 3);
  assert_string_equal(p->caps[0], "person");
  assert_string_equal(p->caps[1], "face");
  assert_string_equal(p->caps[2], "car");
  assert_non_null(strstr(p->stored, "\"capabilities\":[\"person\",\"face\",\"car\"]"));
  fb_proc_release(p);
}

static void nats_ids_with_a_dot_are_refused_for_new_registrations(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"cam.1\"," VALID ",\"transport\":\"nats\"}");
  char why[300] = "";
  assert_int_equal(fb_proc_check_new(p, why, sizeof why), -EINVAL);
  assert_non_null(strstr(why, "id must not contain '.' with transport nats"));
  fb_proc_release(p);
  p = accepted("{\"id\":\"cam.1\"," VALID "}"); /* on Redis a dot is fine */
  assert_int_equal(fb_proc_check_new(p, why, sizeof why), 0);
  fb_proc_release(p);
  p = accepted("{\"id\":\"cam-1\"," VALID ",\"transport\":\"nats\"}");
  assert_int_equal(fb_proc_check_new(p, why, sizeof why), 0);
  fb_proc_release(p);
}

static void runtime_state_in_body_is_ignored(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p\"," VALID ",\"status\":\"dead\",\"frames_routed\":99,"
                               "\"queue_depth\":7,\"last_heartbeat\":\"x\"}");
  assert_null(json_object_get(p->doc, "status"));
  assert_null(json_object_get(p->doc, "frames_routed"));
  assert_null(json_object_get(p->doc, "queue_depth"));
  assert_null(json_object_get(p->doc, "last_heartbeat"));
  json_t *o = fb_proc_to_json(p);
  assert_string_equal(json_string_value(json_object_get(o, "status")), "healthy");
  assert_int_equal(json_integer_value(json_object_get(o, "frames_routed")), 0);
  json_decref(o);
  fb_proc_release(p);
}

static void small_detail_buffer_is_truncated_safely(void **state)
{
  json_t *body = json_loads("{\"id\":\"../x\"}", 0, NULL);
  char small[8];
  memset(small, 'Z', sizeof small);
  struct fb_proc *p = NULL;
  assert_int_equal(fb_proc_from_json(&p, body, FB_TEST_INPUT_STREAM, small, sizeof small), -EINVAL);
  assert_int_equal(strlen(small), sizeof small - 1);
  json_decref(body);
}

/* ============================================================ to_json */

static void to_json_adds_runtime_state(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p1\"," VALID ",\"registered_at_ms\":1}");
  json_t *o = fb_proc_to_json(p);
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "id")), "p1");
  assert_string_equal(json_string_value(json_object_get(o, "status")), "healthy");
  assert_true(json_is_null(json_object_get(o, "last_heartbeat")));
  assert_int_equal(json_integer_value(json_object_get(o, "frames_routed")), 0);
  assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 0);
  assert_string_equal(json_string_value(json_object_get(o, "queue")), "frames:ready:p1");
  json_decref(o);
  fb_proc_release(p);
}

/* fb_proc_depth: the depth as last read, plus what this replica sent since
 * and has in flight; to_json keeps showing the depth as read. */
static void depth_adds_what_was_routed_since_the_read(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p1\"," VALID "}");
  assert_int_equal(fb_proc_depth(p), 0);
  atomic_store(&p->live->queue_depth, 40);
  assert_int_equal(fb_proc_depth(p), 40);
  atomic_store(&p->live->sent_since_poll, 5);
  atomic_store(&p->live->routed_in_flight, 2);
  assert_int_equal(fb_proc_depth(p), 47);
  atomic_store(&p->live->in_flight, 9); /* a heartbeat's own count is in queue_depth already */
  assert_int_equal(fb_proc_depth(p), 47);
  json_t *o = fb_proc_to_json(p);
  assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 40);
  json_decref(o);
  /* A new read starts the count since it over (control.c, heartbeat.c). */
  atomic_store(&p->live->queue_depth, 44);
  atomic_store(&p->live->sent_since_poll, 0);
  assert_int_equal(fb_proc_depth(p), 46);
  fb_proc_release(p);
}

static void to_json_reflects_live_state(void **state)
{
  struct fb_proc *p = accepted("{\"id\":\"p1\"," VALID "}");
  int64_t hb = INT64_C(1700000000123);
  atomic_store(&p->live->status, FB_HEALTH_STALE);
  atomic_store(&p->live->last_heartbeat_ms, hb);
  atomic_store(&p->live->frames_routed, 12);
  atomic_store(&p->live->queue_depth, 3);

  time_t sec = (time_t)(hb / 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  char expected[64];
  size_t n = strftime(expected, sizeof expected, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(expected + n, sizeof expected - n, ".123Z");

  json_t *o = fb_proc_to_json(p);
  assert_string_equal(json_string_value(json_object_get(o, "status")), "stale");
  assert_string_equal(json_string_value(json_object_get(o, "last_heartbeat")), expected);
  assert_int_equal(json_integer_value(json_object_get(o, "frames_routed")), 12);
  assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 3);
  json_decref(o);

  atomic_store(&p->live->status, FB_HEALTH_DEAD);
  o = fb_proc_to_json(p);
  assert_string_equal(json_string_value(json_object_get(o, "status")), "dead");
  json_decref(o);
  fb_proc_release(p);
}

static void health_and_transport_names(void **state)
{
  assert_string_equal(fb_health_name(FB_HEALTH_HEALTHY), "healthy");
  assert_string_equal(fb_health_name(FB_HEALTH_STALE), "stale");
  assert_string_equal(fb_health_name(FB_HEALTH_DEAD), "dead");
  assert_string_equal(fb_health_name((enum fb_health)7), "unknown");
  assert_string_equal(fb_transport_name(FB_TRANSPORT_REDIS), "redis");
  assert_string_equal(fb_transport_name(FB_TRANSPORT_NATS), "nats");
}

/* ============================================================ snapshots */

static struct fb_str s_(const char *s)
{
  return (struct fb_str){s, strlen(s)};
}

static void snapshot_sorts_by_id_and_finds(void **state)
{
  struct fb_proc *procs[] = {test_proc("c", "person", NULL, 1), test_proc("a", "person", NULL, 1),
                             test_proc("b", "vehicle", NULL, 1)};
  struct fb_snapshot *s = fb_snapshot_build(procs, 3, 9);
  assert_non_null(s);
  assert_int_equal(s->generation, 9);
  assert_int_equal(s->n, 3);
  assert_string_equal(s->procs[0]->id, "a");
  assert_string_equal(s->procs[1]->id, "b");
  assert_string_equal(s->procs[2]->id, "c");
  assert_int_equal(fb_snapshot_find(s, "a"), 0);
  assert_int_equal(fb_snapshot_find(s, "b"), 1);
  assert_int_equal(fb_snapshot_find(s, "c"), 2);
  assert_int_equal(fb_snapshot_find(s, "d"), -1);
  assert_int_equal(fb_snapshot_find(s, ""), -1);
  test_release_procs(procs, 3);
  fb_snapshot_release(s);
}

static void snapshot_groups_by_capability(void **state)
{
  struct fb_proc *procs[] = {test_proc("p1", "person", "vehicle", 1),
                             test_proc("p2", "person", NULL, 1),
                             test_proc("p3", "vehicle", "face", 1)};
  struct fb_snapshot *s = fb_snapshot_build(procs, 3, 1);
  test_release_procs(procs, 3);
  assert_int_equal(s->ngroups, 3);

  const struct fb_cap_group *g = fb_snapshot_group(s, s_("person"), false);
  assert_non_null(g);
  assert_string_equal(g->name, "person");
  assert_int_equal(g->n, 2);
  assert_string_equal(s->procs[g->members[0]]->id, "p1");
  assert_string_equal(s->procs[g->members[1]]->id, "p2");

  g = fb_snapshot_group(s, s_("vehicle"), false);
  assert_int_equal(g->n, 2);
  assert_string_equal(s->procs[g->members[0]]->id, "p1");
  assert_string_equal(s->procs[g->members[1]]->id, "p3");

  g = fb_snapshot_group(s, s_("face"), false);
  assert_int_equal(g->n, 1);
  assert_string_equal(s->procs[g->members[0]]->id, "p3");

  assert_null(fb_snapshot_group(s, s_("dog"), false));
  assert_null(fb_snapshot_group(s, s_("Person"), false));
  assert_null(fb_snapshot_group(s, s_("person "), false));
  fb_snapshot_release(s);
}

static void snapshot_empty_type_is_everyone(void **state)
{
  struct fb_proc *procs[] = {test_proc("p1", "person", NULL, 1),
                             test_proc("p2", "vehicle", NULL, 1)};
  struct fb_snapshot *s = fb_snapshot_build(procs, 2, 1);
  test_release_procs(procs, 2);
  const struct fb_cap_group *g = fb_snapshot_group(s, (struct fb_str){"", 0}, false);
  assert_ptr_equal(g, &s->all);
  assert_int_equal(g->n, 2);
  assert_int_equal(g->members[0], 0);
  assert_int_equal(g->members[1], 1);
  fb_snapshot_release(s);
}

static void snapshot_group_decodes_escaped_type(void **state)
{
  struct fb_proc *procs[] = {test_proc("p1", "person", NULL, 1)};
  struct fb_snapshot *s = fb_snapshot_build(procs, 1, 1);
  test_release_procs(procs, 1);
  const struct fb_cap_group *g = fb_snapshot_group(s, s_("\\u0070erso\\u006E"), true);
  assert_non_null(g);
  assert_string_equal(g->name, "person");
  /* Unescaped, the same text is a different name. */
  assert_null(fb_snapshot_group(s, s_("\\u0070erso\\u006E"), false));
  fb_snapshot_release(s);
}

static void snapshot_duplicate_capability_counts_once(void **state)
{
  struct fb_proc *procs[] = {test_proc("p1", "person", "person", 1)};
  struct fb_snapshot *s = fb_snapshot_build(procs, 1, 1);
  test_release_procs(procs, 1);
  const struct fb_cap_group *g = fb_snapshot_group(s, s_("person"), false);
  assert_int_equal(g->n, 1);
  fb_snapshot_release(s);
}

static void snapshot_empty(void **state)
{
  struct fb_snapshot *s = fb_snapshot_build(NULL, 0, 0);
  assert_non_null(s);
  assert_int_equal(s->n, 0);
  assert_int_equal(fb_snapshot_find(s, "x"), -1);
  assert_null(fb_snapshot_group(s, s_("person"), false));
  const struct fb_cap_group *g = fb_snapshot_group(s, (struct fb_str){"", 0}, false);
  assert_non_null(g);
  assert_int_equal(g->n, 0);
  fb_snapshot_release(s);
}

static void snapshot_many_capabilities_all_found(void **state)
{
  enum { N = 60 };
  struct fb_proc *procs[N];
  char id[16], c1[16], c2[16];
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "p%02d", i);
    snprintf(c1, sizeof c1, "cap%d", i);
    snprintf(c2, sizeof c2, "shared%d", i % 7);
    procs[i] = test_proc(id, c1, c2, 1);
  }
  struct fb_snapshot *s = fb_snapshot_build(procs, N, 1);
  test_release_procs(procs, N);
  assert_int_equal(s->ngroups, N + 7);
  for (int i = 0; i < N; i++) {
    snprintf(c1, sizeof c1, "cap%d", i);
    const struct fb_cap_group *g = fb_snapshot_group(s, s_(c1), false);
    assert_non_null(g);
    assert_int_equal(g->n, 1);
    snprintf(id, sizeof id, "p%02d", i);
    assert_string_equal(s->procs[g->members[0]]->id, id);
  }
  size_t total = 0;
  for (int k = 0; k < 7; k++) {
    snprintf(c2, sizeof c2, "shared%d", k);
    const struct fb_cap_group *g = fb_snapshot_group(s, s_(c2), false);
    assert_non_null(g);
    total += g->n;
  }
  assert_int_equal(total, N);
  fb_snapshot_release(s);
}

static void snapshot_keeps_processors_alive(void **state)
{
  struct fb_proc *p = test_proc("p1", "person", NULL, 1);
  struct fb_snapshot *s = fb_snapshot_build(&p, 1, 1);
  fb_proc_release(p);
  p = NULL; /* the snapshot holds the only reference now */
  assert_string_equal(s->procs[0]->id, "p1");
  assert_string_equal(s->procs[0]->caps[0], "person");
  fb_snapshot_release(s);
}

/* ============================================================= registry */

static int setup_registry(void **state)
{
  struct fb_registry *r = NULL;
  if (fb_registry_create(&r)) return -1;
  *state = r;
  return 0;
}

static int teardown_registry(void **state)
{
  fb_registry_destroy(*state);
  return 0;
}

static void registry_starts_empty(void **state)
{
  struct fb_registry *r = *state;
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_non_null(s);
  assert_int_equal(s->n, 0);
  fb_snapshot_release(s);
}

static void registry_put_publishes_snapshot(void **state)
{
  struct fb_registry *r = *state;
  uint64_t gen = fb_registry_generation(r), ver = fb_registry_local_version(r);
  struct fb_proc *p = test_proc("p1", "person", NULL, 1);
  fb_registry_put(r, p);
  fb_proc_release(p);
  assert_true(fb_registry_generation(r) > gen);
  assert_true(fb_registry_local_version(r) != ver);
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 1);
  assert_int_equal(fb_snapshot_find(s, "p1"), 0);
  assert_int_equal(s->generation, fb_registry_generation(r));
  assert_non_null(fb_snapshot_group(s, s_("person"), false));
  fb_snapshot_release(s);
}

static void registry_put_update_keeps_live_counters(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *v1 = test_proc("p1", "person", NULL, 1);
  fb_registry_put(r, v1);
  atomic_store(&v1->live->frames_routed, 41);
  atomic_store(&v1->live->queue_depth, 6);
  atomic_store(&v1->live->status, FB_HEALTH_STALE);

  struct fb_proc *v2 = test_proc("p1", "person", "vehicle", 3);
  fb_registry_put(r, v2);
  assert_ptr_equal(v2->live, v1->live);

  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 1);
  struct fb_proc *cur = s->procs[0];
  assert_ptr_equal(cur, v2);
  assert_int_equal(cur->weight, 3);
  assert_int_equal(atomic_load(&cur->live->frames_routed), 41);
  assert_int_equal(atomic_load(&cur->live->queue_depth), 6);
  assert_int_equal(atomic_load(&cur->live->status), FB_HEALTH_STALE);
  assert_non_null(fb_snapshot_group(s, s_("vehicle"), false));
  fb_snapshot_release(s);
  fb_proc_release(v1);
  fb_proc_release(v2);
}

static void registry_remove(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1), *b = test_proc("b", "person", NULL, 1);
  fb_registry_put(r, a);
  fb_registry_put(r, b);
  fb_proc_release(a);
  fb_proc_release(b);
  struct fb_snapshot *before = fb_registry_snapshot(r);

  assert_int_equal(fb_registry_remove(r, "a"), 0);
  assert_int_equal(fb_registry_remove(r, "a"), -ENOENT);
  assert_int_equal(fb_registry_remove(r, "zzz"), -ENOENT);

  struct fb_snapshot *after = fb_registry_snapshot(r);
  assert_int_equal(after->n, 1);
  assert_int_equal(fb_snapshot_find(after, "a"), -1);
  assert_int_equal(fb_snapshot_find(after, "b"), 0);
  /* A snapshot taken earlier is immutable and still complete. */
  assert_int_equal(before->n, 2);
  assert_string_equal(before->procs[0]->id, "a");
  fb_snapshot_release(before);
  fb_snapshot_release(after);
}

/* A processor that leaves and registers again (here, or on another replica
 * as the sync sees it) goes on counting where it was. */
static void registry_counters_survive_registering_again(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *v1 = test_proc("p1", "person", NULL, 1);
  fb_registry_put(r, v1);
  atomic_store(&v1->live->frames_routed, 41);
  fb_proc_release(v1);
  assert_int_equal(fb_registry_remove(r, "p1"), 0);

  struct fb_proc *v2 = test_proc("p1", "person", NULL, 1);
  fb_registry_put(r, v2);
  assert_int_equal(atomic_load(&v2->live->frames_routed), 41);
  assert_int_equal(v2->live->rate_prev, 41); /* not a burst of 41 frames/s */
  atomic_fetch_add(&v2->live->frames_routed, 1);

  /* Gone from Redis (removed by another replica), then back. */
  struct fb_proc *other = test_proc("other", "person", NULL, 1);
  assert_int_equal(fb_registry_sync(r, &other, 1, fb_registry_local_version(r)), 1);
  struct fb_proc *v3 = test_proc("p1", "person", NULL, 1);
  struct fb_proc *both[] = {other, v3};
  assert_int_equal(fb_registry_sync(r, both, 2, fb_registry_local_version(r)), 1);
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(atomic_load(&s->procs[fb_snapshot_find(s, "p1")]->live->frames_routed), 42);
  assert_int_equal(atomic_load(&s->procs[fb_snapshot_find(s, "other")]->live->frames_routed), 0);
  fb_snapshot_release(s);
  fb_proc_release(v2);
  fb_proc_release(v3);
  fb_proc_release(other);
}

static void registry_sync_skips_after_local_change(void **state)
{
  struct fb_registry *r = *state;
  uint64_t seen = fb_registry_local_version(r);
  struct fb_proc *local = test_proc("local", "person", NULL, 1);
  fb_registry_put(r, local); /* happens while the sync reads Redis */
  fb_proc_release(local);
  uint64_t gen = fb_registry_generation(r);

  struct fb_proc *remote = test_proc("remote", "person", NULL, 1);
  assert_int_equal(fb_registry_sync(r, &remote, 1, seen), -EAGAIN);
  fb_proc_release(remote);

  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 1);
  assert_int_equal(fb_snapshot_find(s, "local"), 0);
  assert_int_equal(fb_registry_generation(r), gen);
  fb_snapshot_release(s);
}

static void registry_sync_skips_after_local_remove(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1);
  fb_registry_put(r, a);
  uint64_t seen = fb_registry_local_version(r);
  assert_int_equal(fb_registry_remove(r, "a"), 0);
  /* Redis still showed `a` when the sync read it: it must not come back. */
  assert_int_equal(fb_registry_sync(r, &a, 1, seen), -EAGAIN);
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 0);
  fb_snapshot_release(s);
  fb_proc_release(a);
}

static void registry_sync_adds_and_removes(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1), *b = test_proc("b", "person", NULL, 1);
  fb_registry_put(r, a);
  fb_registry_put(r, b);
  fb_proc_release(a);
  fb_proc_release(b);
  uint64_t gen = fb_registry_generation(r);

  struct fb_proc *remote[] = {test_proc("b", "person", NULL, 1),
                              test_proc("c", "vehicle", NULL, 1)};
  assert_int_equal(fb_registry_sync(r, remote, 2, fb_registry_local_version(r)), 1);
  test_release_procs(remote, 2);
  assert_true(fb_registry_generation(r) > gen);

  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 2);
  assert_int_equal(fb_snapshot_find(s, "a"), -1);
  assert_int_equal(fb_snapshot_find(s, "b"), 0);
  assert_int_equal(fb_snapshot_find(s, "c"), 1);
  assert_non_null(fb_snapshot_group(s, s_("vehicle"), false));
  fb_snapshot_release(s);
}

static void registry_sync_unchanged_returns_zero(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1);
  fb_registry_put(r, a);
  fb_proc_release(a);
  uint64_t gen = fb_registry_generation(r);

  struct fb_proc *same = test_proc("a", "person", NULL, 1);
  assert_int_equal(fb_registry_sync(r, &same, 1, fb_registry_local_version(r)), 0);
  fb_proc_release(same);
  assert_int_equal(fb_registry_generation(r), gen);
}

static void registry_sync_update_keeps_live_counters(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1);
  fb_registry_put(r, a);
  atomic_store(&a->live->frames_routed, 17);
  fb_proc_release(a);

  struct fb_proc *changed = test_proc("a", "person", NULL, 4);
  assert_int_equal(fb_registry_sync(r, &changed, 1, fb_registry_local_version(r)), 1);
  fb_proc_release(changed);

  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->procs[0]->weight, 4);
  assert_int_equal(atomic_load(&s->procs[0]->live->frames_routed), 17);
  fb_snapshot_release(s);
}

static void registry_sync_to_empty_removes_all(void **state)
{
  struct fb_registry *r = *state;
  struct fb_proc *a = test_proc("a", "person", NULL, 1);
  fb_registry_put(r, a);
  fb_proc_release(a);
  assert_int_equal(fb_registry_sync(r, NULL, 0, fb_registry_local_version(r)), 1);
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 0);
  fb_snapshot_release(s);
}

static void registry_many_puts(void **state)
{
  struct fb_registry *r = *state;
  char id[16];
  for (int i = 0; i < 40; i++) {
    snprintf(id, sizeof id, "p%02d", i);
    struct fb_proc *p = test_proc(id, "person", NULL, 1);
    fb_registry_put(r, p);
    fb_proc_release(p);
  }
  struct fb_snapshot *s = fb_registry_snapshot(r);
  assert_int_equal(s->n, 40);
  assert_int_equal(fb_snapshot_group(s, s_("person"), false)->n, 40);
  fb_snapshot_release(s);
}

/* ================================================================ main */

#define REG_TEST(f) cmocka_unit_test_setup_teardown(f, setup_registry, teardown_registry)

int main(void)
{
  fb_log_setup(FB_LOG_ERROR, FB_LOG_TEXT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(minimal_registration_fills_defaults),
      cmocka_unit_test(full_registration_is_kept),
      cmocka_unit_test(body_must_be_object),
      cmocka_unit_test(id_charset_is_validated),
      cmocka_unit_test(id_length_is_1_to_128),
      cmocka_unit_test(id_is_required),
      cmocka_unit_test(id_must_be_string),
      cmocka_unit_test(hostile_ids_are_refused),
      cmocka_unit_test(id_ending_in_dot_is_valid_for_redis_transport),
      cmocka_unit_test(id_unusable_in_subject_needs_subject_for_nats),
      cmocka_unit_test(capabilities_are_required),
      cmocka_unit_test(capabilities_must_be_array),
      cmocka_unit_test(capabilities_must_not_be_empty),
      cmocka_unit_test(capabilities_must_be_strings),
      cmocka_unit_test(capabilities_must_be_non_empty_strings),
      cmocka_unit_test(capabilities_at_most_64),
      cmocka_unit_test(capacity_is_required),
      cmocka_unit_test(capacity_must_be_positive_integer),
      cmocka_unit_test(queue_is_required),
      cmocka_unit_test(queue_must_be_string),
      cmocka_unit_test(queue_empty_means_default_stream),
      cmocka_unit_test(queue_custom_stream_is_kept),
      cmocka_unit_test(queue_reserved_keys_are_refused),
      cmocka_unit_test(queue_refuses_configured_input_stream),
      cmocka_unit_test(queue_with_spaces_is_refused),
      cmocka_unit_test(transport_redis_or_nats),
      cmocka_unit_test(transport_other_is_refused),
      cmocka_unit_test(subject_defaults_to_frames_ready_id),
      cmocka_unit_test(subject_with_wildcards_is_refused),
      cmocka_unit_test(result_stream_default_and_custom),
      cmocka_unit_test(weight_default_and_minimum),
      cmocka_unit_test(max_queue_default_and_explicit),
      cmocka_unit_test(metadata_queue_maxlen_sets_max_queue),
      cmocka_unit_test(max_queue_wins_over_metadata_queue_maxlen),
      cmocka_unit_test(metadata_queue_maxlen_must_be_integer),
      cmocka_unit_test(heartbeat_interval_default_zero_and_range),
      cmocka_unit_test(endpoints_must_be_string_or_null),
      cmocka_unit_test(metadata_must_be_object),
      cmocka_unit_test(unknown_fields_are_named_with_the_closest_known_one),
      cmocka_unit_test(known_fields_pass_the_check),
      cmocka_unit_test(closest_name_allows_a_few_edits),
      cmocka_unit_test(capabilities_are_deduplicated),
      cmocka_unit_test(nats_ids_with_a_dot_are_refused_for_new_registrations),
      cmocka_unit_test(runtime_state_in_body_is_ignored),
      cmocka_unit_test(small_detail_buffer_is_truncated_safely),
      cmocka_unit_test(to_json_adds_runtime_state),
      cmocka_unit_test(to_json_reflects_live_state),
      cmocka_unit_test(depth_adds_what_was_routed_since_the_read),
      cmocka_unit_test(health_and_transport_names),
      cmocka_unit_test(snapshot_sorts_by_id_and_finds),
      cmocka_unit_test(snapshot_groups_by_capability),
      cmocka_unit_test(snapshot_empty_type_is_everyone),
      cmocka_unit_test(snapshot_group_decodes_escaped_type),
      cmocka_unit_test(snapshot_duplicate_capability_counts_once),
      cmocka_unit_test(snapshot_empty),
      cmocka_unit_test(snapshot_many_capabilities_all_found),
      cmocka_unit_test(snapshot_keeps_processors_alive),
      REG_TEST(registry_starts_empty),
      REG_TEST(registry_put_publishes_snapshot),
      REG_TEST(registry_put_update_keeps_live_counters),
      REG_TEST(registry_remove),
      REG_TEST(registry_counters_survive_registering_again),
      REG_TEST(registry_sync_skips_after_local_change),
      REG_TEST(registry_sync_skips_after_local_remove),
      REG_TEST(registry_sync_adds_and_removes),
      REG_TEST(registry_sync_unchanged_returns_zero),
      REG_TEST(registry_sync_update_keeps_live_counters),
      REG_TEST(registry_sync_to_empty_removes_all),
      REG_TEST(registry_many_puts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
