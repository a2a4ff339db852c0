/*
 * The HTTP + WebSocket listener, on libwebsockets. One service thread runs
 * the lws loop; it is the only thread that calls lws, except for
 * lws_cancel_service() in fb_http_stop().
 */
#ifndef FRAMEBUFFER_HTTP_SERVER_H
#define FRAMEBUFFER_HTTP_SERVER_H

#include "framebuffer/app.h"

struct fb_http;

/* Binds the listener (so a port in use fails here, on the caller's thread)
 * and starts the service thread. Returns 0 or a negative errno. */
int fb_http_start(struct fb_http **out, struct fb_app *app);

/* Stops the service thread and frees everything. */
void fb_http_stop(struct fb_http *h);

#endif
