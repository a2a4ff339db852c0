/*
 * Heartbeat parsing and recording (see heartbeat.h). Any thread.
 */
#include "framebuffer/heartbeat.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

int fb_heartbeat_apply(struct fb_app *app, const char *subject_id, const char *data, size_t len,
                       int64_t now_ms, char *id, const char **why)
{
  *why = NULL;
  id[0] = '\0';
  if (len > FB_HEARTBEAT_MAX) {
    *why = "heartbeat is larger than 8 KiB";
    return -EMSGSIZE;
  }
  json_t *doc = json_loadb(data, len, 0, NULL);
  int rc = fb_heartbeat_apply_json(app, subject_id, doc, now_ms, id, why);
  json_decref(doc);
  return rc;
}

int fb_heartbeat_apply_json(struct fb_app *app, const char *subject_id, const json_t *doc,
                            int64_t now_ms, char *id, const char **why)
{
  *why = NULL;
  id[0] = '\0';
  int rc = -EINVAL;
  if (!json_is_object(doc)) {
    *why = "heartbeat is not a JSON object";
    goto out;
  }
  json_t *jid = json_object_get(doc, "processor_id");
  if (jid && !json_is_string(jid)) {
    *why = "processor_id must be a string";
    goto out;
  }
  const char *pid = jid ? json_string_value(jid) : subject_id;
  if (!pid || !pid[0]) {
    *why = "processor_id is required";
    goto out;
  }
  if (subject_id && strcmp(pid, subject_id)) {
    *why = "processor_id does not match the subject";
    goto out;
  }
  if (!fb_proc_id_is_valid(pid, strlen(pid))) {
    *why = "processor_id is not a valid id";
    goto out;
  }
  snprintf(id, FB_PROC_ID_MAX + 1, "%s", pid);
  json_t *status = json_object_get(doc, "status");
  if (status && !json_is_string(status)) {
    *why = "status must be a string";
    goto out;
  }

  struct fb_snapshot *s = fb_registry_snapshot(app->registry);
  int idx = fb_snapshot_find(s, pid);
  if (idx < 0) {
    rc = -ENOENT;
    *why = "unknown processor";
  } else {
    struct fb_proc_live *live = s->procs[idx]->live;
    json_t *depth = json_object_get(doc, "queue_depth");
    json_t *inflight = json_object_get(doc, "in_flight");
    /* A Redis processor's depth is read from its stream (fresher than a
     * heartbeat); a remote one's is what it says, in flight included. */
    int64_t in_hand = json_is_integer(inflight) && json_integer_value(inflight) >= 0
                          ? json_integer_value(inflight)
                          : 0;
    atomic_store(&live->in_flight, in_hand);
    if (s->procs[idx]->transport == FB_TRANSPORT_NATS && json_is_integer(depth) &&
        json_integer_value(depth) >= 0) {
      atomic_store(&live->queue_depth, json_integer_value(depth) + in_hand);
      atomic_store(&live->sent_since_poll, 0);
    }
    atomic_store(&live->stopping, status && !strcmp(json_string_value(status), "stopping"));
    atomic_store(&live->last_heartbeat_ms, now_ms);
    atomic_fetch_add(&app->metrics->heartbeats, 1);
    rc = 0;
  }
  fb_snapshot_release(s);
out:
  return rc;
}
