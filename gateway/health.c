/*
 * The heartbeat state machine (see health.h). Pure; any thread.
 */
#include "framebuffer/health.h"

enum fb_health fb_health_eval(const struct fb_health_input *in)
{
  if (in->stopping) return FB_HEALTH_DEAD;
  if (in->interval_ms <= 0) return FB_HEALTH_HEALTHY;
  if (!in->last_heartbeat_ms)
    return in->now_ms - in->known_since_ms >= in->timeout_ms ? FB_HEALTH_DEAD : FB_HEALTH_HEALTHY;
  int64_t silent = in->now_ms - in->last_heartbeat_ms;
  if (silent >= in->timeout_ms) return FB_HEALTH_DEAD;
  if (silent * 2 > in->interval_ms * 3) return FB_HEALTH_STALE;
  return FB_HEALTH_HEALTHY;
}
