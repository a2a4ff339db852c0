/*
 * The router: a pure function of (registry snapshot, frame) that picks the
 * processor a frame goes to. No I/O, no locks, no clock of its own. A router
 * keeps the strategies' memory (round-robin cursors, weighted credits, the
 * consistent-hash rings, the loads of the current batch) and belongs to one
 * thread.
 *
 * Every strategy works on the candidates for the frame: the processors
 * whose capabilities hold its detection type (any processor when it has
 * none), the healthy ones, or the stale ones when no healthy one can take
 * it, or remote ones while NATS is away when nobody else can (their frames
 * then wait until it is back); never the dead. Among
 * them it prefers those whose queue is not full (estimated depth below
 * max_queue); when every one is full it still picks, and says so.
 */
#ifndef FRAMEBUFFER_ROUTER_H
#define FRAMEBUFFER_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "framebuffer/config.h"
#include "framebuffer/frame.h"
#include "framebuffer/registry.h"

#define FB_HASH_BOUND_DEFAULT 1.25

struct fb_router;

/* Returns 0 and a new router in *out, or -ENOMEM. */
int fb_router_create(struct fb_router **out, enum fb_strategy strategy);
void fb_router_destroy(struct fb_router *r);

/* Changes the strategy; takes effect on the next pick. */
void fb_router_set_strategy(struct fb_router *r, enum fb_strategy strategy);
enum fb_strategy fb_router_strategy(const struct fb_router *r);

/* Whether sink `sink` (an index of fb_sink_list) can take frames now; all
 * can at first. A processor whose sink is down is a last resort. */
void fb_router_set_sink_up(struct fb_router *r, int sink, bool up);

/* consistent_hash: how far above the average load (in units of capacity) a
 * processor may go before a camera spills to the next one (>= 1.0). */
void fb_router_set_hash_bound(struct fb_router *r, double bound);

/* Slow start: a processor registered less than `ms` ago gets a share of
 * its normal traffic that grows linearly from 5% to 100% (0 = off). */
void fb_router_set_slow_start(struct fb_router *r, int64_t ms);

/*
 * Starts a batch at time `now_ms` (unix ms, for slow start and the return
 * of moved cameras): takes each processor's health and queue depth
 * (fb_proc_depth) as the strategies see them for the batch; every pick adds
 * one to the depth.
 * Optional: without it loads start at zero and nobody ramps up.
 * Returns 0 or -ENOMEM.
 */
int fb_router_begin(struct fb_router *r, const struct fb_snapshot *s, int64_t now_ms);

/*
 * Picks a processor for frame `f`. Returns the index into s->procs, or
 * -ENOENT when no processor can take it (-ENOMEM on allocation failure).
 * `*overloaded` is set when every candidate's queue was full.
 */
int fb_router_pick(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                   bool *overloaded);

/*
 * The same, among the processors of sink `sink` only (an index of
 * fb_sink_list), whatever the strategy: the best tier, then room, then the
 * lightest load. -ENOENT when none of them is alive.
 */
int fb_router_pick_on(struct fb_router *r, const struct fb_snapshot *s, const struct fb_frame *f,
                      int sink, bool *overloaded);

/* The load the router currently sees for processor `i` (tests, stats). */
int64_t fb_router_load(struct fb_router *r, uint32_t i);

/* Why consistent_hash moved a camera to another processor. */
enum fb_move_reason {
  FB_MOVE_SPILL,      /* its processor was overloaded or full */
  FB_MOVE_RETURN,     /* back home, once home had drained */
  FB_MOVE_MEMBERSHIP, /* a processor joined, left or died where it sits on the ring */
};
#define FB_MOVE_COUNT 3

/* The cameras this router has moved so far, by reason (counts only grow). */
void fb_router_moves(const struct fb_router *r, uint64_t out[FB_MOVE_COUNT]);
const char *fb_move_reason_name(enum fb_move_reason reason);

#endif
