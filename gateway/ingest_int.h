/*
 * The ingest thread's own state, shared by its three files (private to the
 * gateway; everything here runs on the ingest thread):
 *   ingest.c          the reader: consumer group, pipelining, recovery of our
 *                     pending entries, claims of abandoned ones, held entries;
 *   ingest_route.c    a batch's routing: the state of now, parsing, the pure
 *                     dispatcher (dispatch.h), the sends of sinks outside
 *                     Redis, and the hand-off transaction;
 *   ingest_handoff.c  the hand-off's completion: its replies, what became of
 *                     every entry (metrics, held, blocked), retries.
 */
#ifndef FRAMEBUFFER_INGEST_INT_H
#define FRAMEBUFFER_INGEST_INT_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "framebuffer/buf.h"
#include "framebuffer/dispatch.h"
#include "framebuffer/frame.h"
#include "framebuffer/ingest.h"
#include "framebuffer/redis.h"
#include "framebuffer/router.h"
#include "framebuffer/settings.h"
#include "framebuffer/shadows.h"
#include "framebuffer/sink.h"

#define BLOCK_MS          1000 /* XREADGROUP BLOCK when idle */
#define REDIS_TIMEOUT_MS  5000 /* must exceed BLOCK_MS */
#define CLAIM_INTERVAL_MS 5000 /* how often to look for abandoned entries */
#define MAX_TX            2    /* transactions in flight */
#define MAX_AWAIT         4    /* routed batches waiting for their sinks' confirmations */
#define NBATCH            (MAX_TX + 1 + MAX_AWAIT) /* batches: in flight, awaiting, being read */
#define TX_MAX_BYTES      (256u << 20)             /* a batch of 64 KiB entries fits easily */
#define HELD_MAX          65536                    /* remote entries waiting for NATS, remembered */
#define TX_RETRIES        3                        /* then reconnect and re-read from the PEL */
#define BLOCK_RETRY_MS    50   /* backpressure: how often full queues are checked */
#define WAIT_TIMEOUT_MS   1000 /* REDIS_WAIT_REPLICAS: longest wait per hand-off */

enum phase { PHASE_SETUP, PHASE_RECOVER, PHASE_LIVE };

enum op_kind { OP_READ, OP_TX };

struct batch {
  bool busy;
  redisReply *reply;    /* owns the entries */
  redisReply **entries; /* [id, fields] arrays */
  size_t n;
  int64_t *deliveries; /* per entry, when known (recovered or claimed) */
  bool have_deliveries;
  bool retried; /* held entries handed off again: every one was seen before */
  struct fb_frame *frames;
  struct fb_field *fields; /* every field of its entries; frames point into it */
  size_t fields_cap;
  int32_t *outcome; /* >= 0: processor index; < 0: FB_OUTCOME_DLQ(reason) */
  uint32_t *order;  /* hand-off order: higher priority first */
  int32_t *xadd_of; /* entry -> its XADD's index in the transaction, or -1 */
  uint8_t *held;    /* enum fb_hold: why an entry is not acked */
  size_t nxadd;
  size_t nacks;    /* entries in the XACK */
  size_t ntrimmed; /* delivered to full streams (drop_oldest) */
  bool in_flight;  /* its picks count in their processors' routed_in_flight */
  bool has_tx;     /* false when there was nothing to write */
  struct fb_snapshot *snap;
  uint64_t read_ns;
  int64_t wall_ms;  /* when it was routed */
  struct fb_buf tx; /* the transaction, kept for a resend */
  int attempts;
  struct fb_shadow_set *shadows; /* the set its copies were made with, or NULL */
  struct shadow_copy *copies;
  size_t ncopies, copies_cap;
  struct fb_field *copy_fields; /* the copies' fields */
  size_t copy_fields_cap;
};

/* A shadow copy of entry `entry` (see shadows.h). */
struct shadow_copy {
  uint32_t entry;
  uint16_t shadow;       /* index in the batch's shadow set */
  int32_t target;        /* the target's index in the batch's snapshot */
  int32_t write;         /* its XADD's index in the transaction, or -1 */
  size_t field_at;       /* where its fields start in the batch's copy_fields */
  struct fb_frame frame; /* the entry's fields plus shadow and shadow_of */
};

struct op {
  enum op_kind kind;
  struct batch *b;
};

struct fb_ingest {
  struct fb_settings *settings;
  struct fb_events *events;
  struct fb_sinks sinks; /* one of each sink; a processor's `transport` indexes it */
  const struct fb_config *cfg;
  struct fb_registry *reg;
  struct fb_metrics *m;
  struct fb_trace *trace; /* NULL with FRAME_TRACE=0 */
  struct fb_shadows *shadows;
  unsigned shadows_seen;            /* fb_shadows_gen when shadow_set was taken */
  struct fb_shadow_set *shadow_set; /* the shadows in use */
  struct fb_redis redis;
  struct fb_router *router;
  unsigned routing_seen;              /* fb_settings_gen when `routing` was taken */
  struct fb_routing routing;          /* the settings in use */
  uint64_t moves_seen[FB_MOVE_COUNT]; /* the router's camera moves already counted */
  atomic_bool stop;
  pthread_t thread;

  enum phase phase;
  char cursor[64]; /* recover: last id handed off; claim: XAUTOCLAIM cursor */
  bool claiming;   /* draining the pipeline for, or running, a claim pass */
  int64_t next_claim_ms;
  bool idle; /* the last read found nothing */
  /* Batches holding entries that wait for room (OVERLOAD_POLICY=block),
   * oldest first: with hand-offs pipelined, several can be caught. */
  struct batch *blocked[NBATCH];
  size_t nblocked;
  /* Entries whose remote publish failed (NATS away): pending in Redis,
   * handed off again once NATS is back. Their idle time is kept short
   * (XCLAIM JUSTID, which does not count as a delivery) so that no claim pass
   * takes them meanwhile. */
  char (*held_ids)[32];
  size_t nheld;
  bool resending; /* draining the pipeline for, or running, a resend */
  int64_t next_touch_ms;
  int64_t next_resend_ms; /* after a resend was refused again */
  int resend_backoff_ms;
  bool held_overflow_said;

  /* Routed batches, oldest first, whose transactions are not built or sent
   * yet: their frames outside Redis wait for their sinks' confirmations
   * (JetStream's acks), and the batches after them wait their turn, so
   * that every processor gets its frames in order. */
  struct batch *await[MAX_AWAIT];
  size_t nawait;
  bool sink_sent[FB_SINKS_MAX]; /* sinks sent to since the last settle */

  struct op ops[NBATCH + 1]; /* FIFO of replies we wait for */
  size_t op_head, op_count;
  bool read_in_flight;
  size_t tx_in_flight;
  struct batch batches[NBATCH];

  struct fb_snapshot *snap;
  char read_block[512], read_now[512]; /* ready-made XREADGROUP commands */
  size_t read_block_len, read_now_len;
  uint64_t recovered;
};

/* ingest.c */
void ingest_release_in_flight(struct batch *b);
void ingest_batch_clear(struct batch *b);
void ingest_op_push(struct fb_ingest *g, enum op_kind kind, struct batch *b);
struct op ingest_op_pop(struct fb_ingest *g);
/* Drops the connection and forgets everything in flight: the entries are
 * still pending in Redis and are read again by the recovery pass. */
void ingest_lose_connection(struct fb_ingest *g, const char *why);
/* Writes the pipeline out; -EIO (connection lost) or 0. */
int ingest_flush(struct fb_ingest *g);
/* The next reply, or NULL when the connection was lost. */
redisReply *ingest_get_reply(struct fb_ingest *g);

/* ingest_route.c */
/* Routes every entry of `b`, sends its frames that leave Redis, and queues
 * it in g->await for ingest_settle. Returns 0, or -ENOMEM (not queued). */
int ingest_route_batch(struct fb_ingest *g, struct batch *b);
/* True when a queued batch has frames its sinks have not confirmed yet. */
bool ingest_awaits_sinks(const struct fb_ingest *g);
/* Waits for the sinks' confirmations of the queued batches (holding the
 * frames that did not make it) and builds each one's transaction in its
 * b->tx. The caller sends them in order and empties g->await. Returns 0,
 * or a negative errno when a transaction cannot be built. */
int ingest_settle(struct fb_ingest *g);
/* True when every sink can take frames (held ones are worth sending again). */
bool ingest_sinks_up(const struct fb_ingest *g);

/* ingest_handoff.c */
/* Puts the batch's transaction on the wire and returns true. A batch with
 * nothing to write (every frame held) is finished at once: false. */
bool ingest_send_tx(struct fb_ingest *g, struct batch *b);
/* Handles a transaction's replies, `first` being MULTI's. Returns 0 when the
 * batch is done, 1 when it was sent again, -EIO when the connection was lost. */
int ingest_complete_tx(struct fb_ingest *g, struct batch *b, redisReply *first);
/* Sends the batch's transaction and waits for it (an empty pipeline). */
int ingest_hand_off_sync(struct fb_ingest *g, struct batch *b);

#endif
