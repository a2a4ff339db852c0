/*
 * Heartbeat intake over NATS: processors.heartbeat.<id>, each recorded by
 * fb_heartbeat_apply. Its callback runs on nats.c's threads and touches only
 * a snapshot and atomics; no lock of its own.
 */
#ifndef FRAMEBUFFER_NATS_HEARTBEATS_H
#define FRAMEBUFFER_NATS_HEARTBEATS_H

#include "framebuffer/app.h"

/* Main thread, after fb_nats_start: subscribes on app->nats for the
 * connection's life (fb_nats_stop ends it). Returns 0 or -EIO, logged. */
int fb_nats_heartbeats_start(struct fb_app *app);

#endif
