/*
 * frame-buffer: parse settings, start the modules in order, wait for
 * SIGINT/SIGTERM, stop them in reverse order. The main thread owns start and
 * stop and handles the signals (every other thread blocks them).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framebuffer/app.h"
#include "framebuffer/shadows.h"
#include "framebuffer/trace.h"
#include "framebuffer/config.h"
#include "framebuffer/control.h"
#include "framebuffer/events.h"
#include "framebuffer/fleet.h"
#include "framebuffer/http_server.h"
#include "framebuffer/ingest.h"
#include "framebuffer/log.h"
#include "framebuffer/metrics.h"
#include "framebuffer/nats_conn.h"
#include "framebuffer/nats_heartbeats.h"
#include "framebuffer/registry.h"
#include "framebuffer/results.h"
#include "framebuffer/sentinel.h"
#include "framebuffer/settings.h"

int main(int argc, char **argv)
{
  static struct fb_config cfg;
  char why[512];
  int rc = fb_config_load(&cfg, argc, argv, why, sizeof why);
  if (rc == FB_CONFIG_EXIT) return 0;
  if (rc < 0) {
    fprintf(stderr, "frame-buffer: %s\n", why);
    return 2;
  }
  fb_log_setup(cfg.log_level, cfg.log_format);

  /* Threads inherit this mask: only the main thread takes the signals. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  static struct fb_metrics metrics;
  fb_metrics_init(&metrics);
  struct fb_app app = {.cfg = &cfg, .metrics = &metrics};
  struct fb_control *control = NULL;
  struct fb_http *http = NULL;
  struct fb_sentinel_watch *sentinel = NULL;
  struct fb_results *results = NULL;
  int status = 1;

  /* In memory only, then the listener: a port in use is said in one line,
   * like a bad setting, before anything else is logged or touches Redis. */
  if ((rc = fb_registry_create(&app.registry))) goto out;
  if ((rc = fb_events_create(&app.events, cfg.consumer_name))) goto out;
  if ((rc = fb_settings_create(&app.settings, &cfg))) goto out;
  if ((rc = fb_fleet_create(&app.fleet, &app))) goto out;
  if (cfg.frame_trace && (rc = fb_trace_create(&app.trace, FB_TRACE_DEFAULT_FRAMES))) goto out;
  if ((rc = fb_shadows_create(&app.shadows, &cfg))) goto out;
  if ((rc = fb_http_listen(&http, &app, why, sizeof why))) {
    fprintf(stderr, "frame-buffer: %s\n", why);
    rc = 0; /* said */
    status = 2;
    goto out;
  }

  fb_info("main", "frame-buffer %s starting (consumer %s)", FB_VERSION, cfg.consumer_name);
  fb_config_log(&cfg);
  if (cfg.redis.nsentinels && (rc = fb_sentinel_watch_start(&sentinel, &cfg.redis))) goto out;
  if (cfg.nats_enabled && (rc = fb_nats_start(&app.nats, &app))) goto out;
  fb_events_set_nats(app.events, app.nats);
  if (cfg.nats_enabled && (rc = fb_nats_heartbeats_start(app.nats, app.registry, &metrics)))
    goto out;
  if (cfg.nats_enabled &&
      (rc = fb_results_start(&results, app.nats, &cfg.redis, app.registry, &metrics)))
    goto out;
  if ((rc = fb_control_start(&control, &app))) goto out;
  struct fb_ingest_deps ingest = {&cfg,       app.registry, &metrics,  app.settings,
                                  app.events, app.nats,     app.trace, app.shadows};
  if ((rc = fb_ingest_start(&app.ingest, &ingest))) goto out;
  if ((rc = fb_http_run(http))) goto out;

  int sig = 0;
  sigwait(&sigs, &sig);
  fb_info("main", "%s received: finishing the batches in flight and stopping",
          sig == SIGINT ? "SIGINT" : "SIGTERM");
  status = 0;

out:
  if (rc == -EINVAL)
    status = 2; /* a setting the libraries refused, said already */
  else if (rc)
    fb_error("main", "cannot start: %s", strerror(-rc));
  fb_http_stop(http);
  fb_ingest_stop(app.ingest);
  fb_control_stop(control);
  fb_nats_stop(app.nats);   /* ends every subscription: no callback runs after */
  fb_results_stop(results); /* its callback used `results` until then */
  fb_sentinel_watch_stop(sentinel);
  fb_registry_destroy(app.registry);
  fb_fleet_destroy(app.fleet);
  fb_settings_destroy(app.settings);
  fb_events_destroy(app.events);
  fb_trace_destroy(app.trace);
  fb_shadows_destroy(app.shadows);
  if (!rc && status != 2) fb_info("main", "stopped");
  return status;
}
