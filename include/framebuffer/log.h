/*
 * Logging: one line per event, as text or as one JSON object a line.
 * Thread-safe: every call formats into a local buffer and writes it with one
 * write(2), so lines from different threads never interleave.
 */
#ifndef FRAMEBUFFER_LOG_H
#define FRAMEBUFFER_LOG_H

#include <stdbool.h>

enum fb_log_level { FB_LOG_DEBUG, FB_LOG_INFO, FB_LOG_WARN, FB_LOG_ERROR };
enum fb_log_format { FB_LOG_TEXT, FB_LOG_JSON };

/* Sets the threshold and format. Call once at start, before other threads. */
void fb_log_setup(enum fb_log_level level, enum fb_log_format format);

/* Parses "debug", "info", "warn"/"warning", "error". Returns 0 or -EINVAL. */
int fb_log_level_parse(const char *s, enum fb_log_level *out);
int fb_log_format_parse(const char *s, enum fb_log_format *out);
const char *fb_log_level_name(enum fb_log_level level);

bool fb_log_enabled(enum fb_log_level level);

/* Logs one line from module `mod` (a short word: "ingest", "http", ...). */
void fb_log(enum fb_log_level level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define fb_debug(mod, ...)                                                                         \
  do {                                                                                             \
    if (fb_log_enabled(FB_LOG_DEBUG)) fb_log(FB_LOG_DEBUG, mod, __VA_ARGS__);                      \
  } while (0)
#define fb_info(mod, ...)  fb_log(FB_LOG_INFO, mod, __VA_ARGS__)
#define fb_warn(mod, ...)  fb_log(FB_LOG_WARN, mod, __VA_ARGS__)
#define fb_error(mod, ...) fb_log(FB_LOG_ERROR, mod, __VA_ARGS__)

#endif
