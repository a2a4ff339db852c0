/*
 * Frame views: a frame's fields read in place from the Redis reply, or from
 * a NATS payload parsed once with jansson. Pure, no I/O; a view belongs to
 * its client's owner thread, which is why the detection type resolved from
 * metadata may be cached in it.
 */
#include <errno.h>
#include <string.h>

#include "fbc_internal.h"

void fbci_frame_from_redis(struct fbc_frame *f, const char *entry_id, const redisReply *fields)
{
  memset(f, 0, sizeof *f);
  f->kind = FBCI_FRAME_REDIS;
  f->source = entry_id;
  f->fields = fields;
}

int fbci_frame_from_json(struct fbc_frame *f, const char *subject, const char *data, size_t len)
{
  memset(f, 0, sizeof *f);
  json_t *doc = json_loadb(data, len, 0, NULL);
  const char *fid = json_string_value(json_object_get(doc, "frame_id"));
  if (!json_is_object(doc) || !fid || !*fid) {
    json_decref(doc);
    return -EINVAL;
  }
  f->kind = FBCI_FRAME_JSON;
  f->source = subject;
  f->doc = doc;
  return 0;
}

void fbci_frame_clear(struct fbc_frame *f)
{
  json_decref(f->doc);
  if (f->msg) natsMsg_Destroy(f->msg);
  f->doc = NULL;
  f->msg = NULL;
}

const char *fbc_frame_field(const struct fbc_frame *f, const char *name)
{
  if (!f || !name) return NULL;
  if (f->kind == FBCI_FRAME_JSON) return json_string_value(json_object_get(f->doc, name));
  const redisReply *v = fbci_reply_field(f->fields, name);
  return v && v->type == REDIS_REPLY_STRING ? v->str : NULL;
}

const char *fbc_frame_id(const struct fbc_frame *f)
{
  return fbc_frame_field(f, "frame_id");
}

const char *fbc_frame_camera_id(const struct fbc_frame *f)
{
  return fbc_frame_field(f, "camera_id");
}

const char *fbc_frame_timestamp(const struct fbc_frame *f)
{
  return fbc_frame_field(f, "timestamp");
}

const char *fbc_frame_metadata(const struct fbc_frame *f)
{
  return fbc_frame_field(f, "metadata");
}

const char *fbc_frame_trace_context(const struct fbc_frame *f)
{
  return fbc_frame_field(f, "trace_context");
}

const char *fbc_frame_source(const struct fbc_frame *f)
{
  return f ? f->source : NULL;
}

const char *fbc_frame_traceparent(const struct fbc_frame *f)
{
  const char *tp = fbc_frame_field(f, "traceparent");
  if (tp || !f || !f->msg) return tp;
  if (natsMsgHeader_Get(f->msg, "traceparent", &tp) != NATS_OK) return NULL;
  return tp;
}

/* The top-level field wins over metadata's, as in the gateway's routing. */
const char *fbc_frame_detection_type(const struct fbc_frame *f)
{
  const char *top = fbc_frame_field(f, "detection_type");
  if (top || !f) return top;
  struct fbc_frame *mut = (struct fbc_frame *)f; /* the client's own memory */
  if (!mut->dtype_done) {
    mut->dtype_done = true;
    const char *meta = fbc_frame_metadata(f);
    json_t *doc = meta ? json_loads(meta, 0, NULL) : NULL;
    const char *t = json_string_value(json_object_get(doc, "detection_type"));
    if (t && strlen(t) < sizeof mut->dtype) memcpy(mut->dtype, t, strlen(t) + 1);
    json_decref(doc);
  }
  return mut->dtype[0] ? mut->dtype : NULL;
}
