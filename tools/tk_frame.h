/*
 * Synthetic camera frames as XADD commands, shared by fb-inject and fb-bench:
 * realistic fields (docs/protocol.md: Frames in), unique frame ids, an inject_ts_us stamp for
 * latency, and optionally every K-th entry malformed in a rotating way.
 * A generator belongs to one thread.
 */
#ifndef FB_TK_FRAME_H
#define FB_TK_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TK_FRAME_MAX_ARGV 40

struct tk_framegen {
  uint64_t rng;     /* xorshift64* state */
  char run_id[9];   /* 8 hex chars, part of every frame_id */
  unsigned cameras; /* camera_id is cam-000 .. cam-<cameras-1> */
  char **types;     /* borrowed detection types, at least one */
  size_t ntypes;
  uint64_t seq;             /* frames generated so far */
  uint64_t malformed_every; /* 0: never */
  uint64_t malformed;       /* malformed frames generated so far */
  const char *stream;       /* borrowed target stream */
  char maxlen[24];          /* "" or the MAXLEN ~ value */
};

/* One XADD: argv points into `storage`, valid until the next call with the
 * same struct. redisAppendCommandArgv copies it, so one struct can be reused. */
struct tk_frame {
  int argc;
  const char *argv[TK_FRAME_MAX_ARGV];
  size_t argvlen[TK_FRAME_MAX_ARGV];
  char storage[2048];
  const char *frame_id; /* points into storage, "" for a malformed frame without one */
};

/* Sets up a generator. `types` is borrowed and must outlive it; `seed` 0
 * picks one from the clock and pid; `maxlen` 0 means no MAXLEN. */
void tk_framegen_init(struct tk_framegen *g, const char *stream, unsigned cameras, char **types,
                      size_t ntypes, uint64_t malformed_every, int64_t maxlen, uint64_t seed);

/* Fills `f` with the next frame's XADD command, stamped with `inject_ts_us`.
 * Returns true when the frame is a deliberately malformed one. */
bool tk_framegen_next(struct tk_framegen *g, struct tk_frame *f, int64_t inject_ts_us);

/* The next pseudo-random number of the generator. */
uint64_t tk_framegen_rand(struct tk_framegen *g);

#endif
