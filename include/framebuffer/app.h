/*
 * The gateway's modules as the services that answer about all of them see
 * them: the HTTP API, the dashboard, the control thread and the fleet view.
 * Every other module is given only what it uses. Built by main.c, each
 * pointer set before the first thread that reads it starts; none changes
 * after.
 */
#ifndef FRAMEBUFFER_APP_H
#define FRAMEBUFFER_APP_H

#include "framebuffer/config.h"
#include "framebuffer/metrics.h"
#include "framebuffer/registry.h"

struct fb_events;
struct fb_ingest;
struct fb_nats;
struct fb_settings;
struct fb_fleet;
struct fb_trace;
struct fb_shadows;

struct fb_app {
  const struct fb_config *cfg;
  struct fb_registry *registry;
  struct fb_metrics *metrics;
  struct fb_ingest *ingest;
  struct fb_nats *nats; /* NULL when NATS_URL=none */
  struct fb_events *events;
  struct fb_settings *settings; /* the fleet's routing settings */
  struct fb_fleet *fleet;       /* what the replicas share through Redis */
  struct fb_trace *trace;       /* where the last frames went; NULL with FRAME_TRACE=0 */
  struct fb_shadows *shadows;   /* the fleet's shadow routes */
};

#endif
