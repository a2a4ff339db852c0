/* A frame-buffer processor: register, take frames, "work", send a result for
 * each, ack, and leave cleanly on SIGTERM. Settings from the environment:
 * FB_API, REDIS_URL, NATS_URL ("none" allowed), PROCESSOR_ID and
 * PROCESSOR_CAPABILITIES (comma-separated).
 *   cc processor.c $(pkg-config --cflags --libs framebuffer-client) */
#include <framebuffer/client.h>
#include <signal.h>
#include <stdio.h>

static volatile sig_atomic_t stopping;
static void on_signal(int sig)
{
  stopping = sig;
}

static void log_line(enum fbc_log_level level, const char *message, void *user)
{
  if (level <= FBC_LOG_INFO) fprintf(stderr, "processor: %s\n", message);
}

int main(void)
{
  struct fbc_options o;
  fbc_options_init(&o);
  o.id = "example-processor";
  o.capabilities = "person";
  o.log = log_line;
  if (fbc_options_from_env(&o) < 0) return 2;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  struct fbc_client *c;
  int rc = fbc_connect(&c, &o); /* registers; servers may still be coming up */
  if (rc < 0) return fprintf(stderr, "processor: %s\n", fbc_strerror(rc)), 1;

  const struct fbc_frame *batch[64];
  while (!stopping) {
    int n = fbc_next(c, batch, 64, 1000); /* up to 64 frames, waiting at most 1 s */
    if (n < 0) break;                     /* only when it cannot go on */
    for (int i = 0; i < n; i++) {
      const char *type = fbc_frame_detection_type(batch[i]);
      char result[256]; /* the "work": a detection of the frame's type */
      snprintf(result, sizeof result, "{\"label\":\"%s\",\"confidence\":0.9}",
               type ? type : "unknown");
      fbc_result(c, batch[i], result);
    }
    fbc_ack(c, batch, (size_t)n); /* results first, then the acks */
  }
  return fbc_close(c) < 0 ? 1 : 0; /* 'stopping' heartbeat: the gateway re-routes at once */
}
