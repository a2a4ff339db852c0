/*
 * The dashboard page, embedded in the binary. Service thread only.
 */
#include "framebuffer/dashboard.h"

#include <string.h>

static const char page[] =
    "<!doctype html><html lang=en><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width,initial-scale=1'>"
    "<title>frame-buffer</title></head><body><h1>frame-buffer</h1>"
    "<p>The gateway is running. See <a href=/api/v1/stats>/api/v1/stats</a> and "
    "<a href=/metrics>/metrics</a>.</p></body></html>";

bool fb_dashboard_serve(const char *path, struct fb_response *resp)
{
  if (strcmp(path, "/") && strcmp(path, "/index.html")) return false;
  resp->status = 200;
  resp->content_type = "text/html; charset=utf-8";
  fb_buf_reset(&resp->body);
  fb_buf_append(&resp->body, page, sizeof page - 1);
  return true;
}

struct lws_protocols fb_dashboard_protocol(void)
{
  return (struct lws_protocols){NULL, NULL, 0, 0, 0, NULL, 0};
}

void fb_dashboard_attach(struct lws_context *ctx, struct fb_app *app)
{
  (void)ctx;
  (void)app;
}

void fb_dashboard_detach(void)
{
}
