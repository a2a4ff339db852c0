"""The DLQ from the API (README: The dead-letter queue; docs/protocol.md): browse
with filters and paging, the summary, replay into the input stream (exactly
once, across a kill -9 of the gateway, with its cap and its malformed guard),
purge, bad input and the API token."""
import collections
import re
import threading
import time
import unittest
from urllib.parse import urlencode

from harness import (IntegrationTest, add_frames, metric, scrape, wait_for, wait_no_pending,
                     wait_stream_total, xrange_all)

INPUT = "frames:metadata"
DLQ = "frames:dlq"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REASONS = ["malformed", "no_processor", "expired", "overloaded", "poison"]


def frames(prefix, n, dtype="person", cams=4):
    return [{"frame_id": "%s-%06d" % (prefix, i), "camera_id": "cam-%d" % (i % cams),
             "timestamp": "1735689600", "detection_type": dtype} for i in range(n)]


def dlq_entry(fid, reason="no_processor", cam="cam-1", dtype="person", replayed=None):
    """An entry as the gateway writes it to frames:dlq (frame.c)."""
    e = {"frame_id": fid, "camera_id": cam, "timestamp": "1735689600", "detection_type": dtype}
    if replayed is not None:
        e["replayed"] = str(replayed)
    e.update({"dlq_reason": reason, "dlq_source_id": "1-0", "dlq_at": "2026-11-25T13:44:51.809Z",
              "dlq_detail": "written by the test"})
    return e


def q(path, **args):
    return path + ("?" + urlencode(args) if args else "")


class DlqTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)

    def gateway(self, **env):
        return self.start_gateway(self.redis, consumer_name="dlq-test", env=env)

    def dlq_of(self, gw, n, prefix, dtype="person", cams=4, timeout=30):
        """n frames through the gateway that no processor takes: n no_processor entries."""
        before = self.r.command("XLEN", DLQ)
        fs = frames(prefix, n, dtype, cams)
        for i in range(0, n, 5000):
            add_frames(self.r, fs[i:i + 5000])
        wait_stream_total(self.r, [DLQ], before + n, timeout)
        return fs

    def page_all(self, gw, **args):
        """Every page of GET /api/v1/dlq with `args`: (entries, pages)."""
        out, pages, after = [], 0, None
        while True:
            a = dict(args)
            if after:
                a["after"] = after
            resp = gw.get(q("/api/v1/dlq", **a))
            self.assertStatus(resp, 200, "GET /api/v1/dlq %s" % a)
            out += resp[2]["entries"]
            pages += 1
            after = resp[2]["next"]
            if after is None:
                return out, pages
            self.assertLess(pages, 1000, "paging does not end")

    def replay(self, gw, body, status=200, headers=None, timeout=120):
        resp = gw.post("/api/v1/dlq/replay", body, headers=headers, timeout=timeout)
        self.assertStatus(resp, status, "replay %s" % body)
        return resp[2]

    # -------------------------------------------------------------- browse
    def test_browse_real_entries_newest_first_with_each_filter(self):
        gw = self.gateway()
        self.dlq_of(gw, 30, "p", "person", cams=3)
        self.dlq_of(gw, 6, "v", "vehicle", cams=3)
        # metadata.detection_type counts when there is no top-level one
        add_frames(self.r, [{"frame_id": "meta-1", "camera_id": "cam-9",
                             "metadata": '{"detection_type":"face"}'}])
        # malformed: no frame_id; metadata not an object
        add_frames(self.r, [{"camera_id": "cam-0"}, {"frame_id": "bad-meta", "metadata": "[1]"}])
        wait_stream_total(self.r, [DLQ], 39, 10)

        status, _, page = gw.get("/api/v1/dlq")
        self.assertEqual(status, 200, page)
        entries = page["entries"]
        self.assertEqual(len(entries), 39)
        self.assertIsNone(page["next"])
        ids = [e["id"] for e in entries]
        want = [i for i, _ in reversed(xrange_all(self.r, DLQ))]
        self.assertEqual(ids, want, "newest first")
        for e in entries:
            self.assertIn(e["dlq_reason"], ("no_processor", "malformed"), e)
            self.assertTrue(e["dlq_detail"], e)
            self.assertRegex(e["dlq_at"], ISO)
            self.assertRegex(e["dlq_source_id"], r"^\d+-\d+$")
            self.assertEqual(e["replayed"], 0)
            self.assertFalse(any(k.startswith("dlq_") for k in e["fields"]), e)
        newest = entries[0]
        self.assertEqual(newest["fields"], {"frame_id": "bad-meta", "metadata": "[1]"})
        self.assertEqual(newest["dlq_reason"], "malformed")
        self.assertIn("metadata", newest["dlq_detail"])

        def only(**args):
            resp = gw.get(q("/api/v1/dlq", **args))
            self.assertStatus(resp, 200, str(args))
            return [e["fields"].get("frame_id") for e in resp[2]["entries"]]
        self.assertEqual(sorted(only(reason="malformed"), key=str), sorted([None, "bad-meta"], key=str))
        self.assertEqual(len(only(reason="no_processor")), 37)
        self.assertEqual(only(reason="poison"), [])
        self.assertEqual(len(only(camera_id="cam-1")), 12)  # 10 person + 2 vehicle
        self.assertEqual(len(only(detection_type="vehicle")), 6)
        self.assertEqual(only(detection_type="face"), ["meta-1"])
        self.assertEqual(only(detection_type="person", camera_id="cam-2", limit=3),
                         ["p-000029", "p-000026", "p-000023"])
        # ?reason= left empty (as a form sends it) is no filter
        self.assertEqual(len(gw.get("/api/v1/dlq?reason=&camera_id=&limit=100")[2]["entries"]), 39)

    def test_paging_visits_every_entry_once(self):
        gw = self.gateway()
        add_frames(self.r, [dlq_entry("f-%04d" % i, cam="cam-%d" % (i % 5)) for i in range(250)],
                   DLQ)
        got, pages = self.page_all(gw, limit=100)
        self.assertEqual(pages, 3)
        ids = [e["id"] for e in got]
        self.assertEqual(ids, [i for i, _ in reversed(xrange_all(self.r, DLQ))])
        self.assertEqual(len(set(ids)), 250)
        got, pages = self.page_all(gw, limit=7, camera_id="cam-3")
        self.assertEqual([e["fields"]["frame_id"] for e in got],
                         ["f-%04d" % i for i in range(248, -1, -1) if i % 5 == 3])
        # after=0-0: nothing is older
        self.assertEqual(gw.get("/api/v1/dlq?after=0-0")[2], {"entries": [], "next": None,
                                                             "scanned": 0})

    def test_a_filter_that_matches_little_is_bounded_per_page(self):
        gw = self.gateway()
        entries = [dlq_entry("needle", cam="cam-needle")]
        entries += [dlq_entry("hay-%05d" % i) for i in range(25000)]
        for i in range(0, len(entries), 5000):
            add_frames(self.r, entries[i:i + 5000], DLQ)
        resp = gw.get("/api/v1/dlq?camera_id=cam-needle")
        self.assertStatus(resp, 200)
        self.assertEqual(resp[2]["entries"], [])
        self.assertEqual(resp[2]["scanned"], 10000, "one page looks at 10,000 entries at most")
        self.assertIsNotNone(resp[2]["next"], "a page stopped by the bound says where to go on")
        got, pages = self.page_all(gw, camera_id="cam-needle")
        self.assertEqual([e["fields"]["frame_id"] for e in got], ["needle"])
        self.assertEqual(pages, 3)

    # ------------------------------------------------------------- summary
    def test_summary_counts_oldest_and_newest_by_reason(self):
        gw = self.gateway()
        status, _, s = gw.get("/api/v1/dlq/summary")
        self.assertEqual(status, 200, s)
        self.assertEqual(s["total"], 0)
        self.assertTrue(s["complete"])
        self.assertEqual(sorted(s["reasons"]), sorted(REASONS))
        self.assertEqual(s["reasons"]["poison"], {"count": 0, "oldest": None, "newest": None})

        spec = [("no_processor", 1200), ("malformed", 3), ("expired", 2), ("no_processor", 5)]
        ids = collections.defaultdict(list)
        for reason, n in spec:
            got = add_frames(self.r, [dlq_entry("s-%s-%d" % (reason, i), reason)
                                      for i in range(n)], DLQ)
            ids[reason] += got
        add_frames(self.r, [dlq_entry("odd", "no_such_reason")], DLQ)
        status, _, s = gw.get("/api/v1/dlq/summary")
        self.assertEqual(status, 200, s)
        self.assertEqual(s["total"], 1211)
        self.assertTrue(s["complete"])
        for reason in REASONS:
            got = s["reasons"][reason]
            self.assertEqual(got["count"], len(ids[reason]), reason)
            if ids[reason]:
                self.assertEqual(got["oldest"]["id"], ids[reason][0], reason)
                self.assertEqual(got["newest"]["id"], ids[reason][-1], reason)
                self.assertEqual(got["newest"]["at"], "2026-11-25T13:44:51.809Z")
        self.assertEqual(s["reasons"]["other"]["count"], 1)
        self.assertIsInstance(s["took_ms"], int)

    # -------------------------------------------------------------- replay
    def test_replay_of_10000_delivers_each_exactly_once(self):
        n = 10000
        gw = self.gateway()
        fs = self.dlq_of(gw, n, "r")
        self.assertEqual(self.r.command("XLEN", DLQ), n)
        self.assertStatus(gw.register("p1", ["person"], max_queue=1000000), 201)

        t0 = time.monotonic()
        out = self.replay(gw, {"reason": "no_processor"})
        took = time.monotonic() - t0
        self.assertEqual(out["replayed"], n, out)
        self.assertEqual(out["skipped"], 0, out)
        self.assertFalse(out["more"], out)
        self.assertEqual(self.r.command("XLEN", DLQ), 0, "the replayed entries left the DLQ")

        wait_stream_total(self.r, ["frames:ready:p1"], n, 60)
        time.sleep(0.3)  # a duplicate would arrive now
        got = [f for _, f in xrange_all(self.r, "frames:ready:p1")]
        count = collections.Counter(f["frame_id"] for f in got)
        self.assertEqual(len(got), n, "frames on the processor's stream")
        self.assertEqual(set(count), {f["frame_id"] for f in fs})
        self.assertEqual([k for k, c in count.items() if c > 1], [], "duplicates")
        self.assertTrue(all(f.get("replayed") == "1" for f in got), got[:2])
        self.assertFalse(any(k.startswith("dlq_") for f in got for k in f), got[:1])
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertIsNone(wait_no_pending(self.r))
        m = scrape(gw)
        self.assertEqual(metric(m, "frame_buffer_dlq_replayed_total"), n)
        self.assertEqual(metric(m, "frame_buffer_dlq_replay_skipped_total", cause="gone"), 0)
        print("\nreplay of %d no_processor entries: %.2fs (%.0f entries/s; the gateway's own "
              "count %d ms)" % (n, took, n / took, out["took_ms"]))

    def test_replay_interrupted_by_kill_9_loses_and_duplicates_nothing(self):
        n = 40000
        gw = self.gateway()
        fs = self.dlq_of(gw, n, "k", timeout=60)
        self.assertStatus(gw.register("p1", ["person"], max_queue=1000000), 201)
        answer = {}

        def call():
            try:
                answer["resp"] = gw.post("/api/v1/dlq/replay",
                                         {"reason": "no_processor", "limit": 100000}, timeout=60)
            except (OSError, ConnectionError) as e:
                answer["error"] = e
        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: self.r.command("XLEN", DLQ) < n - 2000, 30, interval=0.002,
                 what="the replay to be under way")
        gw.kill()
        t.join(30)
        at_kill = self.r.command("XLEN", DLQ)
        self.assertGreater(at_kill, 0, "the replay was over before the kill -9; the test did "
                           "not interrupt it (answer: %s)" % answer)
        self.assertNotIn("resp", answer, "the replay answered before the kill -9")

        gw.start()
        out = self.replay(gw, {"reason": "no_processor", "limit": 100000})
        self.assertEqual(out["replayed"], at_kill, out)
        target = "frames:ready:p1"
        wait_stream_total(self.r, [target], n, 60)
        time.sleep(0.3)
        count = collections.Counter(f["frame_id"] for _, f in xrange_all(self.r, target))
        self.assertEqual(set(count), {f["frame_id"] for f in fs}, "every frame arrived")
        self.assertEqual([k for k, c in count.items() if c > 1], [], "duplicates")
        self.assertEqual(sum(count.values()), n)
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertIsNone(wait_no_pending(self.r))
        print("\nkill -9 with %d of %d entries still in the DLQ" % (at_kill, n))

    def test_replay_cap_holds(self):
        gw = self.gateway(DLQ_REPLAY_MAX="2")
        self.dlq_of(gw, 1, "ghost", "ghost")  # a type nobody takes: back to the DLQ each time
        for i in (1, 2):
            out = self.replay(gw, {"detection_type": "ghost"})
            self.assertEqual((out["replayed"], out["skipped"]), (1, 0), out)
            wait_for(lambda: [f for _, f in xrange_all(self.r, DLQ)
                              if f.get("replayed") == str(i)], 10,
                     what="the frame back in the DLQ with replayed=%d" % i)
        (entry,) = gw.get("/api/v1/dlq")[2]["entries"]
        self.assertEqual(entry["replayed"], 2)
        self.assertEqual(entry["fields"]["replayed"], "2")
        out = self.replay(gw, {"detection_type": "ghost"})
        self.assertEqual((out["replayed"], out["skipped"], out["skipped_by"]["replay_max"]),
                         (0, 1, 1), out)
        out = self.replay(gw, {"ids": [entry["id"]], "force": True})
        self.assertEqual((out["replayed"], out["skipped_by"]["replay_max"]), (0, 1), out)
        self.assertEqual([i for i, _ in xrange_all(self.r, DLQ)], [entry["id"]], "it stays")
        self.assertEqual(metric(scrape(gw), "frame_buffer_dlq_replay_skipped_total",
                                cause="replay_max"), 2)

    def test_malformed_entries_are_skipped_unless_forced(self):
        gw = self.gateway()
        add_frames(self.r, [{"camera_id": "cam-%d" % i} for i in range(3)])
        wait_stream_total(self.r, [DLQ], 3, 10)
        out = self.replay(gw, {"reason": "malformed"})
        self.assertEqual((out["replayed"], out["skipped"], out["skipped_by"]["malformed"]),
                         (0, 3, 3), out)
        out = self.replay(gw, {"camera_id": "cam-1"})  # a filter meets it too
        self.assertEqual((out["replayed"], out["skipped_by"]["malformed"]), (0, 1), out)
        self.assertEqual(self.r.command("XLEN", DLQ), 3)
        out = self.replay(gw, {"reason": "malformed", "force": True})
        self.assertEqual((out["replayed"], out["skipped"]), (3, 0), out)
        # still malformed: back in the DLQ, once each, replayed once
        wait_for(lambda: sum(f.get("replayed") == "1" for _, f in xrange_all(self.r, DLQ)) == 3,
                 10, what="the three back in the DLQ with replayed=1")
        self.assertEqual(self.r.command("XLEN", DLQ), 3)

    def test_replay_by_ids_and_unknown_ids(self):
        gw = self.gateway()
        self.assertStatus(gw.register("p1", ["person"]), 201)
        ids = add_frames(self.r, [dlq_entry("i-%d" % i, replayed=1) for i in range(5)], DLQ)
        resp = gw.post("/api/v1/dlq/replay", {"ids": [ids[0], "1-1", "2-2"]})
        self.assertDetail(resp, 404)
        self.assertIn("1-1", resp[2]["detail"])
        self.assertIn("2 of the 3", resp[2]["detail"])
        self.assertEqual(self.r.command("XLEN", DLQ), 5, "nothing replayed on a 404")
        self.assertEqual(self.r.command("XLEN", INPUT), 0)

        out = self.replay(gw, {"ids": [ids[3], ids[1]]})
        self.assertEqual((out["replayed"], out["skipped"]), (2, 0), out)
        back = [f for _, f in xrange_all(self.r, INPUT)]
        self.assertEqual([(f["frame_id"], f["replayed"]) for f in back],
                         [("i-3", "2"), ("i-1", "2")], "in the order given, replayed counted on")
        self.assertEqual(back[0], {"frame_id": "i-3", "camera_id": "cam-1",
                                   "timestamp": "1735689600", "detection_type": "person",
                                   "replayed": "2"}, "the frame's fields, without the DLQ's")
        self.assertEqual([i for i, _ in xrange_all(self.r, DLQ)], [ids[0], ids[2], ids[4]])
        self.assertDetail(gw.post("/api/v1/dlq/replay", {"ids": [ids[1]]}), 404)

    # ---------------------------------------------------------------- purge
    def test_purge_by_reason_and_all(self):
        gw = self.gateway()
        add_frames(self.r, [dlq_entry("a-%d" % i, "expired") for i in range(700)], DLQ)
        add_frames(self.r, [dlq_entry("b-%d" % i, "poison", cam="cam-7") for i in range(3)], DLQ)
        add_frames(self.r, [dlq_entry("c-%d" % i, "expired", cam="cam-7") for i in range(2)], DLQ)
        status, _, out = gw.delete("/api/v1/dlq?reason=expired&camera_id=cam-7")
        self.assertEqual((status, out["purged"]), (200, 2), out)
        status, _, out = gw.delete("/api/v1/dlq?reason=expired")
        self.assertEqual((status, out["purged"], out["more"]), (200, 700, False), out)
        self.assertEqual({f["dlq_reason"] for _, f in xrange_all(self.r, DLQ)}, {"poison"})
        status, _, out = gw.delete("/api/v1/dlq?all=true")
        self.assertEqual((status, out["purged"]), (200, 3), out)
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertEqual(metric(scrape(gw), "frame_buffer_dlq_purged_total"), 705)

    # ------------------------------------------------------------ bad input
    def test_bad_input_gets_a_detail(self):
        gw = self.gateway()
        ids = add_frames(self.r, [dlq_entry("x")], DLQ)
        for path in ("/api/v1/dlq?limit=0", "/api/v1/dlq?limit=1001", "/api/v1/dlq?limit=ten",
                     "/api/v1/dlq?after=yesterday", "/api/v1/dlq?after=1-2-3",
                     "/api/v1/dlq?reasn=poison", "/api/v1/dlq/summary?reason=poison"):
            self.assertDetail(gw.get(path), 422, path)
        resp = gw.get("/api/v1/dlq?reason=lost")
        self.assertDetail(resp, 422)
        for reason in REASONS:
            self.assertIn(reason, resp[2]["detail"])
        bad_bodies = [
            {}, {"reason": "lost"}, {"reason": 5}, {"reasons": "poison"}, {"reason": "poison",
                                                                             "limit": 0},
            {"reason": "poison", "limit": 100001}, {"reason": "poison", "limit": "10"},
            {"reason": "poison", "force": "yes"}, {"camera_id": ""}, {"ids": []}, {"ids": "1-0"},
            {"ids": ["1-0", "1-0"]}, {"ids": ["one"]}, {"ids": [ids[0]], "reason": "poison"},
            {"ids": [ids[0]], "limit": 5}, {"detection_type": "person", "dry_run": True}]
        for body in bad_bodies:
            self.assertDetail(gw.post("/api/v1/dlq/replay", body), 422, str(body))
        resp = gw.post("/api/v1/dlq/replay", {"reasn": "poison"})
        self.assertIn('did you mean "reason"', resp[2]["detail"])
        self.assertDetail(gw.post("/api/v1/dlq/replay", raw="{not json"), 400)
        self.assertDetail(gw.post("/api/v1/dlq/replay", raw="[1]"), 400)
        self.assertStatus(gw.post("/api/v1/dlq/replay", raw='{"reason":"poison"}',
                                  headers={"Content-Type": "text/plain"}), 415)
        for path in ("/api/v1/dlq", "/api/v1/dlq?all=maybe", "/api/v1/dlq?all=true&reason=poison",
                     "/api/v1/dlq?reason=lost", "/api/v1/dlq?all=false"):
            self.assertDetail(gw.delete(path), 422, "DELETE " + path)
        self.assertStatus(gw.put("/api/v1/dlq", {}), 405)
        self.assertStatus(gw.get("/api/v1/dlq/replay"), 405)
        self.assertEqual(self.r.command("XLEN", DLQ), 1, "nothing changed")

    def test_token_guards_replay_and_purge(self):
        gw = self.gateway(API_TOKEN="s3cret")
        add_frames(self.r, [dlq_entry("t-%d" % i) for i in range(2)], DLQ)
        self.assertStatus(gw.get("/api/v1/dlq"), 200)
        self.assertStatus(gw.get("/api/v1/dlq/summary"), 200)
        self.assertDetail(gw.post("/api/v1/dlq/replay", {"reason": "no_processor"}), 401)
        self.assertDetail(gw.post("/api/v1/dlq/replay", {"reason": "no_processor"},
                                  headers={"Authorization": "Bearer wrong"}), 401)
        self.assertDetail(gw.delete("/api/v1/dlq?all=true"), 401)
        self.assertEqual(self.r.command("XLEN", DLQ), 2)
        auth = {"Authorization": "Bearer s3cret"}
        out = self.replay(gw, {"reason": "no_processor", "limit": 1}, headers=auth)
        self.assertEqual(out["replayed"], 1, out)
        self.assertTrue(out["more"], out)
        status, _, out = gw.delete("/api/v1/dlq?all=true", headers=auth)
        self.assertEqual(status, 200, out)


if __name__ == "__main__":
    unittest.main()
