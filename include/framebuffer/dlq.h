/*
 * The dead-letter queue from the API (docs/protocol.md: The dead-letter
 * queue): browse frames:dlq, a summary by reason, replay entries into the
 * input stream, purge. The handlers join api.c's route table. HTTP thread
 * only: they run on the API's Redis connection (api->redis), reading the
 * stream in chunks, with a bound on the work of every call.
 */
#ifndef FRAMEBUFFER_DLQ_H
#define FRAMEBUFFER_DLQ_H

#include "framebuffer/api.h"

#define FB_DLQ_CHUNK            500        /* entries per XRANGE / XREVRANGE */
#define FB_DLQ_LIST_DEFAULT     100        /* entries of a page without ?limit */
#define FB_DLQ_LIST_MAX         1000       /* ?limit's maximum */
#define FB_DLQ_LIST_SCAN_MAX    10000      /* entries one page looks at before it answers `next` */
#define FB_DLQ_LIST_BYTES_MAX   (8u << 20) /* a page stops adding entries past this */
#define FB_DLQ_SCAN_MAX         200000     /* entries one summary, replay or purge looks at */
#define FB_DLQ_REPLAY_DEFAULT   10000      /* entries one replay puts back without "limit" */
#define FB_DLQ_REPLAY_LIMIT_MAX 100000     /* "limit"'s maximum */
#define FB_DLQ_REPLAY_BATCH     100        /* entries per atomic step of a replay */
#define FB_DLQ_IDS_MAX          10000      /* "ids" of one replay */
#define FB_DLQ_VALUES_MAX       7000       /* field names + values of an entry a replay carries */

/* GET /api/v1/dlq?reason=&camera_id=&detection_type=&limit=&after=: a page
 * of entries, newest first: {"entries":[...],"next":id|null,"scanned":n}. */
fb_api_handler fb_api_dlq_list;

/* GET /api/v1/dlq/summary: counts, oldest and newest entry by reason, from
 * one pass over the stream in chunks. */
fb_api_handler fb_api_dlq_summary;

/* POST /api/v1/dlq/replay {"reason"|"ids"|"camera_id"|"detection_type",
 * "limit","force"}: entries back into the input stream, each with
 * replayed=<n>, moved by a script that deletes the entry from frames:dlq and
 * adds it to the input in one atomic step, only when the delete found it. */
fb_api_handler fb_api_dlq_replay;

/* DELETE /api/v1/dlq?reason=&camera_id=&detection_type= or ?all=true. */
fb_api_handler fb_api_dlq_purge;

#endif
