/* Clocks: wall time for timestamps people read, monotonic for durations. */
#ifndef FRAMEBUFFER_CLOCK_H
#define FRAMEBUFFER_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

static inline void fb_sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Unix ms as ISO-8601 UTC with milliseconds ("2026-11-25T13:44:51.809Z"),
 * the one form of time the gateway writes (logs, DLQ, API). `n` >= 32. */
static inline void fb_iso_time(int64_t ms, char *out, size_t n)
{
  time_t sec = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t w = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + w, n - w, ".%03dZ", (int)(ms % 1000));
}

#endif
