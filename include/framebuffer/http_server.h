/*
 * The HTTP + WebSocket listener, on libwebsockets. One service thread runs
 * the lws loop; it is the only thread that calls lws, except for
 * lws_cancel_service() in fb_http_stop().
 */
#ifndef FRAMEBUFFER_HTTP_SERVER_H
#define FRAMEBUFFER_HTTP_SERVER_H

#include "framebuffer/app.h"

struct fb_http;

/* Binds the listener, on the caller's thread, so that a port in use fails
 * here, before anything else starts: -EADDRINUSE, or -EINVAL for an address
 * that cannot be listened on, with one line for the user in `why`
 * (libwebsockets' own lines about it are not logged). Returns 0 or a
 * negative errno. Nothing is served until fb_http_run. */
int fb_http_listen(struct fb_http **out, struct fb_app *app, char *why, size_t n);

/* Starts the service thread: from now on requests are answered. Every
 * module the API reads (app.h) must be set before. Returns 0 or a negative
 * errno (the listener then still needs fb_http_stop). */
int fb_http_run(struct fb_http *h);

/* Stops the service thread (if it runs) and frees everything. NULL is fine. */
void fb_http_stop(struct fb_http *h);

#endif
