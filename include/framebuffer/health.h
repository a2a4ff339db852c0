/*
 * Processor health as a pure function of time (docs/protocol.md: Heartbeats
 * and health): the clock is an argument, so every transition can be tested
 * without servers or sleeps. Any thread.
 */
#ifndef FRAMEBUFFER_HEALTH_H
#define FRAMEBUFFER_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "framebuffer/registry.h"

struct fb_health_input {
  int64_t now_ms;
  int64_t last_heartbeat_ms; /* 0 = none seen by this gateway */
  int64_t known_since_ms;    /* registration, or this gateway's start if later */
  int64_t interval_ms;       /* the processor's heartbeat interval; 0 = not tracked */
  int64_t timeout_ms;        /* HEARTBEAT_TIMEOUT_MS */
  bool stopping;             /* its last heartbeat said "stopping" */
};

/*
 * healthy: a heartbeat within interval x 1.5 (or none yet, and not yet
 * timeout_ms since it became known); stale: late; dead: nothing for
 * timeout_ms, or a "stopping" heartbeat. A processor with interval 0 is
 * always healthy.
 */
enum fb_health fb_health_eval(const struct fb_health_input *in);

#endif
