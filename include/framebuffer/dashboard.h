/*
 * The browser dashboard: the embedded page at GET / and its WebSocket /ws.
 * Service thread only (the lws thread), except where noted.
 */
#ifndef FRAMEBUFFER_DASHBOARD_H
#define FRAMEBUFFER_DASHBOARD_H

#include <libwebsockets.h>
#include <stdbool.h>

#include "framebuffer/api.h"
#include "framebuffer/app.h"

/* A file of the page, embedded at build time. */
struct fb_asset {
  const char *path; /* "/index.html" */
  const char *type; /* Content-Type */
  const unsigned char *data;
  unsigned long size;
};

/* Terminated by an entry whose path is NULL. */
extern const struct fb_asset fb_dashboard_assets[];

/* Fills `resp` when `path` is a dashboard asset ("/" is /index.html).
 * Returns true if it was. */
bool fb_dashboard_serve(const char *path, struct fb_response *resp);

/* The WebSocket protocol entry for the lws protocol list; its callbacks
 * read the gateway through `app` (kept in the entry's `user`). */
struct lws_protocols fb_dashboard_protocol(struct fb_app *app);

/* Any thread: wakes the service thread (an lws_context) to push new events. */
void fb_dashboard_wake(void *ctx);

#endif
