/*
 * Fuzz target: heartbeats, as each way in reads them.
 *  - NATS: an input whose first line is a subject processors.heartbeat.<id>
 *    is a NATS heartbeat; the rest is its payload, parsed as
 *    nats_heartbeats.c does (fb_heartbeat_parse with the subject's id).
 *  - HTTP and the fleet's heartbeat stream: any other input is a payload
 *    without a subject, parsed as fleet.c does (fb_heartbeat_parse) and as
 *    the API does (json_loadb rejecting duplicate members, then
 *    fb_heartbeat_parse_json); both must agree.
 * What is accepted is recorded (fb_heartbeat_record) in a registry of
 * tracker-a (Redis), detector-b (NATS) and cam.zone-1, and the processor's
 * health is evaluated from it (fb_health_eval). POST
 * /api/v1/processors/heartbeat as a whole is in fuzz_api.
 */
#include "fuzz.h"
#include "framebuffer/health.h"
#include "framebuffer/heartbeat.h"

#define PREFIX "processors.heartbeat."
#define NOW_MS INT64_C(1700000000000)

static struct fb_registry *reg;
static struct fb_metrics metrics;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  fuzz_quiet();
  fb_metrics_init(&metrics);
  FUZZ_CHECK(fb_registry_create(&reg) == 0);
  for (size_t i = 0; i < FUZZ_NPROCS; i++) {
    struct fb_proc *p = fuzz_proc(fuzz_procs[i]);
    fb_registry_put(reg, p);
    fb_proc_release(p);
  }
  return 0;
}

/* Parses `data` (not NUL-terminated, like a NATS message) with `parse`'s
 * promises checked. */
static int parse(struct fb_heartbeat *hb, const char *sid, const char *data, size_t size)
{
  char why[200];
  memset(why, 'x', sizeof why);
  int rc = fb_heartbeat_parse(hb, sid, data, size, why, sizeof why);
  if (rc) {
    FUZZ_CHECK((rc == -EINVAL || rc == -EMSGSIZE) && memchr(why, '\0', sizeof why) && why[0]);
    return rc;
  }
  FUZZ_CHECK(fb_proc_id_is_valid(hb->id, strlen(hb->id)) && (!sid || !strcmp(sid, hb->id)));
  FUZZ_CHECK(hb->queue_depth >= 0 && hb->queue_depth <= FB_HEARTBEAT_COUNT_MAX);
  FUZZ_CHECK(hb->in_flight >= 0 && hb->in_flight <= FB_HEARTBEAT_COUNT_MAX);
  FUZZ_CHECK(hb->has_depth || !hb->queue_depth);
  return 0;
}

/* The API's way: duplicate members refused, then the parsed document. */
static void parse_as_api(const struct fb_heartbeat *want, int want_rc, const char *data,
                         size_t size)
{
  json_t *doc = json_loadb(data, size, JSON_REJECT_DUPLICATES, NULL);
  if (!doc || size > FB_HEARTBEAT_MAX) {
    json_decref(doc);
    return;
  }
  struct fb_heartbeat hb;
  char why[200] = "";
  int rc = fb_heartbeat_parse_json(&hb, NULL, doc, why, sizeof why);
  json_decref(doc);
  FUZZ_CHECK(rc == want_rc && (rc || !memcmp(&hb, want, sizeof hb)));
}

static void record(const struct fb_heartbeat *hb)
{
  int rc = fb_heartbeat_record(reg, &metrics, hb, NOW_MS);
  struct fb_snapshot *s = fb_registry_snapshot(reg);
  int i = fb_snapshot_find(s, hb->id);
  FUZZ_CHECK(rc == (i >= 0 ? 0 : -ENOENT));
  if (i >= 0) {
    const struct fb_proc *p = s->procs[i];
    const struct fb_proc_live *l = p->live;
    FUZZ_CHECK(atomic_load(&l->last_heartbeat_ms) == NOW_MS);
    FUZZ_CHECK(atomic_load(&l->stopping) == hb->stopping && atomic_load(&l->queue_depth) >= 0);
    struct fb_health_input in = {.now_ms = NOW_MS + 1000,
                                 .last_heartbeat_ms = NOW_MS,
                                 .known_since_ms = NOW_MS - 60000,
                                 .interval_ms = p->heartbeat_interval_ms,
                                 .timeout_ms = 90000,
                                 .stopping = atomic_load(&l->stopping)};
    enum fb_health h = fb_health_eval(&in);
    FUZZ_CHECK((unsigned)h <= FB_HEALTH_DEAD && (!hb->stopping || h == FB_HEALTH_DEAD));
  }
  fb_snapshot_release(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *line;
  size_t len;
  char *sid = NULL;
  if (size >= sizeof PREFIX - 1 && !memcmp(data, PREFIX, sizeof PREFIX - 1)) {
    fuzz_line(&data, &size, &line, &len);
    sid = strndup(line + sizeof PREFIX - 1, len - (sizeof PREFIX - 1));
    FUZZ_CHECK(sid);
  }
  char *payload = fuzz_dup(data, size);
  struct fb_heartbeat hb;
  int rc = parse(&hb, sid, payload, size);
  if (!sid) parse_as_api(&hb, rc, payload, size);
  if (!rc) record(&hb);
  free(payload);
  free(sid);
  return 0;
}
