/*
 * frame-buffer: parse settings, start the modules in order, wait for a
 * signal, stop them in reverse order. The main thread owns start and stop.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "framebuffer/config.h"
#include "framebuffer/log.h"

int main(int argc, char **argv)
{
  struct fb_config cfg;
  char err[512];
  int rc = fb_config_load(&cfg, argc, argv, err, sizeof err);
  if (rc == FB_CONFIG_EXIT) return 0;
  if (rc < 0) {
    fprintf(stderr, "frame-buffer: %s\n", err);
    return 2;
  }
  fb_log_setup(cfg.log_level, cfg.log_format);
  fb_config_log(&cfg);
  return 0;
}
