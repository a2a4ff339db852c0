/*
 * Logging to stderr, text or JSON lines. Any thread; no locks: each line is
 * built in a stack buffer and written with a single write(2).
 */
#include "framebuffer/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "framebuffer/buf.h"
#include "framebuffer/clock.h"

static enum fb_log_level log_level = FB_LOG_INFO;
static enum fb_log_format log_format = FB_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void fb_log_setup(enum fb_log_level level, enum fb_log_format format)
{
  log_level = level;
  log_format = format;
}

int fb_log_level_parse(const char *s, enum fb_log_level *out)
{
  if (!strcasecmp(s, "debug"))
    *out = FB_LOG_DEBUG;
  else if (!strcasecmp(s, "info"))
    *out = FB_LOG_INFO;
  else if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning"))
    *out = FB_LOG_WARN;
  else if (!strcasecmp(s, "error"))
    *out = FB_LOG_ERROR;
  else
    return -EINVAL;
  return 0;
}

int fb_log_format_parse(const char *s, enum fb_log_format *out)
{
  if (!strcasecmp(s, "text"))
    *out = FB_LOG_TEXT;
  else if (!strcasecmp(s, "json"))
    *out = FB_LOG_JSON;
  else
    return -EINVAL;
  return 0;
}

const char *fb_log_level_name(enum fb_log_level level)
{
  return level_names[level];
}

bool fb_log_enabled(enum fb_log_level level)
{
  return level >= log_level;
}

void fb_log(enum fb_log_level level, const char *mod, const char *fmt, ...)
{
  if (level < log_level) return;

  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;

  char when[40];
  fb_iso_time(fb_wall_ms(), when, sizeof when);

  char line[4096];
  struct fb_buf b;
  fb_buf_init_fixed(&b, line, sizeof line - 1);
  if (log_format == FB_LOG_JSON) {
    fb_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":", when,
                  level_names[level], mod);
    fb_buf_json_string(&b, msg, strlen(msg));
    fb_buf_append(&b, "}", 1);
  } else {
    fb_buf_printf(&b, "%s %-5s %-8s %s", when, level_names[level], mod, msg);
  }
  /* A line cut short by the fixed buffer still ends with its newline. */
  line[b.len] = '\n';
  ssize_t rc = write(STDERR_FILENO, line, b.len + 1);
  (void)rc;
}
