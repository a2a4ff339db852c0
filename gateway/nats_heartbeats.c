/*
 * Heartbeat intake over NATS (see nats_heartbeats.h). The callback runs on
 * nats.c's threads; its closure is the app, which outlives the connection.
 * No locks.
 */
#include "framebuffer/nats_heartbeats.h"

#include <stdatomic.h>

#include "framebuffer/clock.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"
#include "framebuffer/nats_conn.h"

#define HEARTBEAT_PREFIX  "processors.heartbeat."
#define HEARTBEAT_SUBJECT HEARTBEAT_PREFIX ">" /* ids may hold dots */

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
  struct fb_app *app = closure;
  const char *subject = natsMsg_GetSubject(msg);
  const char *sid = subject + sizeof HEARTBEAT_PREFIX - 1; /* the subscription guarantees it */
  char id[FB_PROC_ID_MAX + 1];
  const char *why;
  int rc = fb_heartbeat_apply(app, sid, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                              fb_wall_ms(), id, &why);
  if (rc) {
    atomic_fetch_add(&app->metrics->heartbeats_rejected, 1);
    fb_debug("nats", "heartbeat on %s ignored: %s", subject, why);
  }
  natsMsg_Destroy(msg);
}

int fb_nats_heartbeats_start(struct fb_app *app)
{
  return fb_nats_subscribe(app->nats, HEARTBEAT_SUBJECT, on_heartbeat, app);
}
