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

/* Fills `resp` when `path` is a dashboard asset. Returns true if it was. */
bool fb_dashboard_serve(const char *path, struct fb_response *resp);

/* The WebSocket protocol entry for the lws protocol list. */
struct lws_protocols fb_dashboard_protocol(void);

/* Starts and stops the periodic push on the service thread's context. */
void fb_dashboard_attach(struct lws_context *ctx, struct fb_app *app);
void fb_dashboard_detach(void);

#endif
