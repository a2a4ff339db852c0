/* Clocks: wall time for timestamps people read, monotonic for durations. */
#ifndef FRAMEBUFFER_CLOCK_H
#define FRAMEBUFFER_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fb_wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t fb_mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int64_t fb_mono_ms(void)
{
  return (int64_t)(fb_mono_ns() / 1000000u);
}

#endif
