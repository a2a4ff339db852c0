/*
 * Heartbeat intake over NATS (see nats_heartbeats.h). The callback runs on
 * nats.c's threads. No locks.
 */
#include "framebuffer/nats_heartbeats.h"

#include <stdatomic.h>

#include "framebuffer/clock.h"
#include "framebuffer/heartbeat.h"
#include "framebuffer/log.h"

#define HEARTBEAT_PREFIX  "processors.heartbeat."
#define HEARTBEAT_SUBJECT HEARTBEAT_PREFIX ">" /* ids may hold dots */

/* The subscription's closure: lives as long as the connection. */
static struct intake {
  struct fb_registry *reg;
  struct fb_metrics *m;
} intake;

static void on_heartbeat(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
  struct intake *in = closure;
  const char *subject = natsMsg_GetSubject(msg);
  const char *sid = subject + sizeof HEARTBEAT_PREFIX - 1; /* the subscription guarantees it */
  struct fb_heartbeat hb;
  char why[200] = "unknown processor";
  int rc = fb_heartbeat_parse(&hb, sid, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                              why, sizeof why);
  if (!rc) rc = fb_heartbeat_record(in->reg, in->m, &hb, fb_wall_ms());
  if (rc) {
    atomic_fetch_add(&in->m->heartbeats_rejected, 1);
    fb_debug("nats", "heartbeat on %s ignored: %s", subject, why);
  }
  natsMsg_Destroy(msg);
}

int fb_nats_heartbeats_start(struct fb_nats *nats, struct fb_registry *reg, struct fb_metrics *m)
{
  intake = (struct intake){reg, m};
  return fb_nats_subscribe(nats, HEARTBEAT_SUBJECT, on_heartbeat, &intake);
}
