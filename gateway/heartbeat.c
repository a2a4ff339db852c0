/*
 * Heartbeat parsing and recording (see heartbeat.h).
 */
#include "framebuffer/heartbeat.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "framebuffer/sink.h"

/* The old service's statuses, "stopping", and "ok" (what the HTTP
 * heartbeat answers, and what processors written against it send). */
const char *const fb_heartbeat_statuses[] = {"healthy",  "degraded", "unhealthy",
                                             "stopping", "ok",       NULL};

bool fb_heartbeat_status_is_valid(const char *status)
{
  for (size_t k = 0; status && fb_heartbeat_statuses[k]; k++)
    if (!strcmp(status, fb_heartbeat_statuses[k])) return true;
  return false;
}

int fb_heartbeat_parse(struct fb_heartbeat *hb, const char *subject_id, const char *data,
                       size_t len, char *why, size_t n)
{
  if (len > FB_HEARTBEAT_MAX) {
    snprintf(why, n, "heartbeat is larger than %d KiB", FB_HEARTBEAT_MAX / 1024);
    return -EMSGSIZE;
  }
  json_t *doc = json_loadb(data, len, 0, NULL);
  int rc = fb_heartbeat_parse_json(hb, subject_id, doc, why, n);
  json_decref(doc);
  return rc;
}

/* Reads count `name` of `doc` into *out. Returns 1 when given, 0 when absent
 * or null, -EINVAL when it is not an integer in range. */
static int count(const json_t *doc, const char *name, int64_t *out, char *why, size_t n)
{
  const json_t *v = json_object_get(doc, name);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      json_integer_value(v) > FB_HEARTBEAT_COUNT_MAX) {
    snprintf(why, n, "%s must be an integer from 0 to %d", name, FB_HEARTBEAT_COUNT_MAX);
    return -EINVAL;
  }
  *out = json_integer_value(v);
  return 1;
}

int fb_heartbeat_parse_json(struct fb_heartbeat *hb, const char *subject_id, const json_t *doc,
                            char *why, size_t n)
{
  memset(hb, 0, sizeof *hb);
  if (!json_is_object(doc)) {
    snprintf(why, n, "heartbeat is not a JSON object");
    return -EINVAL;
  }
  const json_t *jid = json_object_get(doc, "processor_id");
  if (jid && !json_is_string(jid)) {
    snprintf(why, n, "processor_id must be a string");
    return -EINVAL;
  }
  const char *pid = jid ? json_string_value(jid) : subject_id;
  if (!pid || !pid[0]) {
    snprintf(why, n, "processor_id is required");
    return -EINVAL;
  }
  if (subject_id && strcmp(pid, subject_id)) {
    snprintf(why, n, "processor_id does not match the subject");
    return -EINVAL;
  }
  if (!fb_proc_id_is_valid(pid, strlen(pid))) {
    snprintf(why, n, "processor_id is not a valid id");
    return -EINVAL;
  }
  const json_t *status = json_object_get(doc, "status");
  if (status && !json_is_null(status) && !fb_heartbeat_status_is_valid(json_string_value(status))) {
    char list[120] = "";
    for (size_t k = 0; fb_heartbeat_statuses[k]; k++) {
      size_t len = strlen(list);
      snprintf(list + len, sizeof list - len, "%s%s", k ? ", " : "", fb_heartbeat_statuses[k]);
    }
    if (json_is_string(status))
      snprintf(why, n, "status \"%.40s\" is not one of %s", json_string_value(status), list);
    else
      snprintf(why, n, "status must be a string, one of %s", list);
    return -EINVAL;
  }
  int depth = count(doc, "queue_depth", &hb->queue_depth, why, n);
  if (depth < 0 || count(doc, "in_flight", &hb->in_flight, why, n) < 0) return -EINVAL;
  hb->has_depth = depth > 0;
  hb->stopping = json_is_string(status) && !strcmp(json_string_value(status), "stopping");
  snprintf(hb->id, sizeof hb->id, "%s", pid);
  return 0;
}

int fb_heartbeat_record(struct fb_registry *reg, struct fb_metrics *m,
                        const struct fb_heartbeat *hb, int64_t now_ms)
{
  struct fb_snapshot *s = fb_registry_snapshot(reg);
  int idx = fb_snapshot_find(s, hb->id);
  if (idx >= 0) {
    struct fb_proc_live *live = s->procs[idx]->live;
    atomic_store(&live->in_flight, hb->in_flight);
    /* A processor on a Redis stream has its depth read from the stream
     * (fresher than a heartbeat); another's is what it says, in flight
     * included. */
    if (!fb_sink_in_redis(s->procs[idx]->transport) && hb->has_depth) {
      atomic_store(&live->queue_depth, hb->queue_depth + hb->in_flight);
      atomic_store(&live->sent_since_poll, 0);
    }
    atomic_store(&live->stopping, hb->stopping);
    atomic_store(&live->last_heartbeat_ms, now_ms);
    atomic_fetch_add(&m->heartbeats, 1);
  }
  fb_snapshot_release(s);
  return idx >= 0 ? 0 : -ENOENT;
}
