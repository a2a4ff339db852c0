/*
 * Heartbeat intake over NATS: processors.heartbeat.<id>, each parsed and
 * recorded by heartbeat.h. Its callback runs on nats.c's threads and touches
 * only a snapshot and atomics; no lock of its own.
 */
#ifndef FRAMEBUFFER_NATS_HEARTBEATS_H
#define FRAMEBUFFER_NATS_HEARTBEATS_H

#include "framebuffer/metrics.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/registry.h"

/* Main thread, after fb_nats_start: subscribes on `nats` for the
 * connection's life (fb_nats_stop ends it), recording into `reg` and `m`
 * (borrowed: they outlive the connection). Returns 0 or -EIO, logged. */
int fb_nats_heartbeats_start(struct fb_nats *nats, struct fb_registry *reg, struct fb_metrics *m);

#endif
