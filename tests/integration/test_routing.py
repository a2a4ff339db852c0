"""README: Routing: overload policies end to end (every frame accounted for),
FRAME_MAX_AGE_MS, a live strategy change, weighted round robin and
consistent hashing."""
import collections
import datetime
import os
import subprocess
import time
import unittest

import harness
from harness import (IntegrationTest, add_frames, info_map, metric, scrape, wait_for,
                     wait_no_pending, xrange_all)

P = "/api/v1/processors"
DLQ = "frames:dlq"
INPUT = "frames:metadata"
GROUP = "frame-buffer-group"
PGROUP = "frame-processors"


def ready(pid):
    return "frames:ready:" + pid


def frames_of(prefix, n, cameras=8, **extra):
    out = []
    for i in range(n):
        f = {"frame_id": "%s-%05d" % (prefix, i), "camera_id": "cam-%02d" % (i % cameras)}
        f.update(extra)
        out.append(f)
    return out


class RoutingTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)

    def gateway(self, **env):
        return self.start_gateway(self.redis, consumer_name="routing-test",
                                  env={k: str(v) for k, v in env.items()})

    def register(self, gw, pid, caps=("person",), **extra):
        extra.setdefault("heartbeat_interval_ms", 0)  # never dead: not what these test
        resp = gw.register(pid, caps, **extra)
        self.assertStatus(resp, 201, "registering " + pid)

    def added(self, key):
        """entries-added of a stream: every XADD it ever took, trimmed or not."""
        return info_map(self.r.command("XINFO", "STREAM", key))["entries-added"]

    def input_waiting(self):
        """Entries of the input the gateway has not handed off: unread (lag)
        plus read and not acked (pending)."""
        g = [info_map(x) for x in self.r.command("XINFO", "GROUPS", INPUT)]
        g = [x for x in g if x["name"] == GROUP.encode()][0]
        return g["lag"] + g["pending"]

    def where(self, pids):
        """frame_id -> [processor ids whose stream holds it]."""
        out = collections.defaultdict(list)
        for pid in pids:
            for _, f in xrange_all(self.r, ready(pid)):
                out[f["frame_id"]].append(pid)
        return out

    def cameras_by_processor(self, frames, where):
        cams = collections.defaultdict(set)
        for f in frames:
            for pid in where.get(f["frame_id"], []):
                cams[f["camera_id"]].add(pid)
        return cams

    # ================================================= overload policies
    MAXQ = 50
    N = 1000

    def overload_setup(self, policy, node_entries=None):
        """Two processors that never read, max_queue 50; 1000 frames."""
        if node_entries:
            self.r.command("CONFIG", "SET", "stream-node-max-entries", node_entries)
        gw = self.gateway(OVERLOAD_POLICY=policy, ROUTING_STRATEGY="round_robin")
        pids = ["ov-a", "ov-b"]
        for pid in pids:
            self.register(gw, pid, max_queue=self.MAXQ)
        time.sleep(0.6)  # the depth poll has seen the empty streams
        m0 = scrape(gw)
        frames = frames_of("ov", self.N)
        add_frames(self.r, frames)
        return gw, pids, frames, m0

    def counted(self, m0, m1, kind, reason):
        return (metric(m1, kind, reason=reason) - metric(m0, kind, reason=reason))

    def test_overload_drop_oldest_caps_streams_and_counts_trimmed(self):
        # One entry per stream node makes `MAXLEN ~` trim exactly, so what
        # Redis trimmed and what the gateway counted can be compared.
        gw, pids, frames, m0 = self.overload_setup("drop_oldest", node_entries=1)
        keys = [ready(p) for p in pids]
        wait_for(lambda: sum(self.added(k) for k in keys) >= self.N, 15,
                 what="every frame handed to a processor stream")
        self.assertIsNone(wait_no_pending(self.r))
        time.sleep(0.3)
        m1 = scrape(gw)
        lens = {k: self.r.command("XLEN", k) for k in keys}
        added = {k: self.added(k) for k in keys}
        trimmed = self.counted(m0, m1, "frame_buffer_frames_dropped_total", "trimmed")
        self.assertEqual(sum(added.values()), self.N, "drop_oldest delivers every frame")
        self.assertEqual(lens, {k: self.MAXQ for k in keys}, "streams not capped at max_queue")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertEqual(sum(lens.values()) + trimmed, self.N,
                         "delivered and still queued (%s) + counted as trimmed (%d) must be the "
                         "%d injected" % (lens, trimmed, self.N))
        # the newest frames are the ones kept
        kept = {f["frame_id"] for k in keys for _, f in xrange_all(self.r, k)}
        self.assertEqual(kept, {f["frame_id"] for f in frames[-len(kept):]},
                         "drop_oldest kept something other than the newest frames")

    def test_overload_reject_sends_the_rest_to_dlq(self):
        gw, pids, frames, m0 = self.overload_setup("reject")
        keys = [ready(p) for p in pids]
        wait_for(lambda: sum(self.r.command("XLEN", k) for k in keys + [DLQ]) >= self.N, 15,
                 what="every frame delivered or rejected")
        self.assertIsNone(wait_no_pending(self.r))
        time.sleep(0.3)
        m1 = scrape(gw)
        lens = {k: self.r.command("XLEN", k) for k in keys}
        dlq = xrange_all(self.r, DLQ)
        reasons = collections.Counter(f["dlq_reason"] for _, f in dlq)
        self.assertEqual(set(reasons), {"overloaded"}, reasons)
        for k in keys:
            self.assertEqual(self.added(k), lens[k], "%s was trimmed under reject: frames lost"
                             % k)
        self.assertEqual(sum(lens.values()) + len(dlq), self.N,
                         "delivered %s + rejected %d != injected" % (lens, len(dlq)))
        with self.subTest("each queue takes max_queue frames, then frames are rejected"):
            self.assertEqual(lens, {k: self.MAXQ for k in keys},
                             "queues with max_queue %d hold %s" % (self.MAXQ, lens))
        ids = [f["frame_id"] for _, f in dlq] + [f["frame_id"] for k in keys
                                                 for _, f in xrange_all(self.r, k)]
        self.assertEqual(sorted(ids), sorted(f["frame_id"] for f in frames))
        self.assertEqual(self.counted(m0, m1, "frame_buffer_dlq_total", "overloaded"), len(dlq))
        self.assertEqual(self.counted(m0, m1, "frame_buffer_frames_dropped_total", "overloaded"),
                         len(dlq))

    def test_overload_block_stops_reading_until_there_is_room(self):
        gw, pids, frames, m0 = self.overload_setup("block")
        keys = [ready(p) for p in pids]

        def blocked():
            return metric(scrape(gw), "frame_buffer_blocked_frames") > 0
        wait_for(blocked, 10, what="frame_buffer_blocked_frames > 0")
        time.sleep(1.0)
        lens = {k: self.r.command("XLEN", k) for k in keys}
        waiting = self.input_waiting()
        self.assertEqual(self.r.command("XLEN", DLQ), 0, "block must not drop anything")
        for k in keys:
            self.assertEqual(self.added(k), lens[k], "%s was trimmed under block" % k)
        with self.subTest("reading stops when every queue holds max_queue frames"):
            self.assertEqual(lens, {k: self.MAXQ for k in keys},
                             "queues with max_queue %d hold %s" % (self.MAXQ, lens))
        self.assertEqual(sum(lens.values()) + waiting, self.N,
                         "delivered %s + waiting in the input %d != injected" % (lens, waiting))
        self.assertGreater(waiting, 0)

        # More input: it waits, nothing moves.
        more = frames_of("ov-more", 500)
        add_frames(self.r, more)
        time.sleep(1.0)
        self.assertEqual({k: self.r.command("XLEN", k) for k in keys}, lens,
                         "frames delivered while every queue is full")
        self.assertEqual(self.input_waiting(), waiting + len(more), "the input is still read")
        m1 = scrape(gw)
        for reason in ("trimmed", "overloaded", "expired", "no_processor"):
            self.assertEqual(self.counted(m0, m1, "frame_buffer_frames_dropped_total", reason), 0,
                             "dropped as %s under block" % reason)
        self.assertGreater(metric(m1, "frame_buffer_consumer_lag"), 0)

        # The processors drain their streams: the rest flows.
        total = self.N + len(more)
        got = collections.Counter()
        deadline = time.monotonic() + 40
        while sum(got.values()) < total and time.monotonic() < deadline and gw.running():
            n = 0
            for pid in pids:
                rep = self.r.command("XREADGROUP", "GROUP", PGROUP, pid, "COUNT", 25,
                                     "STREAMS", ready(pid), ">")
                if not rep:
                    continue
                entries = rep[0][1]
                for eid, flat in entries:
                    fields = dict(zip(flat[::2], flat[1::2]))
                    got[fields[b"frame_id"].decode()] += 1
                self.r.command("XACK", ready(pid), PGROUP, *[e[0] for e in entries])
                n += len(entries)
            if not n:
                time.sleep(0.05)
        self.assertTrue(gw.running(), "the gateway exited (status %s) when reading resumed, "
                        "after %d of %d frames" % (gw.proc.returncode, sum(got.values()), total))
        want = {f["frame_id"] for f in frames + more}
        dups = [fid for fid, c in got.items() if c > 1]
        missing = want - set(got)
        self.assertEqual((dups[:5], len(dups), sorted(missing)[:5], len(missing)),
                         ([], 0, [], 0), "frames duplicated or lost under block")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertEqual(self.input_waiting(), 0)
        self.assertEqual(metric(scrape(gw), "frame_buffer_blocked_frames"), 0)

    # ======================================================= max age
    def test_frame_max_age_drops_old_frames_as_expired(self):
        gw = self.gateway(FRAME_MAX_AGE_MS=60000)
        self.register(gw, "age-p")
        now = datetime.datetime.now(datetime.timezone.utc)
        east = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        west = datetime.timezone(datetime.timedelta(hours=-3))
        old = {
            "old-iso-z": "2020-01-01T00:00:00Z",
            "old-iso-ms": (now - datetime.timedelta(minutes=5)).strftime(
                "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "old-offset": (now - datetime.timedelta(minutes=10)).astimezone(east).isoformat(),
            "old-unix": "1500000000",
            "old-unix-frac": "%.3f" % (time.time() - 3600),
        }
        fresh = {
            "fresh-iso-z": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "fresh-offset": now.astimezone(west).isoformat(),
            "fresh-offset-east": now.astimezone(east).isoformat(),
            "fresh-unix": "%d" % int(time.time()),
            "fresh-unix-frac": "%.3f" % time.time(),
        }
        m0 = scrape(gw)
        frames = []
        for i in range(20):
            for fid, ts in list(old.items()) + list(fresh.items()):
                frames.append({"frame_id": "%s-%d" % (fid, i), "camera_id": "c", "timestamp": ts})
        add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", ready("age-p")) + self.r.command("XLEN", DLQ)
                 >= len(frames), 10, what="every frame delivered or expired")
        time.sleep(0.3)
        dlq = {f["frame_id"]: f for _, f in xrange_all(self.r, DLQ)}
        delivered = {f["frame_id"] for _, f in xrange_all(self.r, ready("age-p"))}
        want_old = {f["frame_id"] for f in frames if f["frame_id"].startswith("old")}
        want_fresh = {f["frame_id"] for f in frames if f["frame_id"].startswith("fresh")}
        self.assertEqual(sorted(set(dlq) - want_old), [], "fresh frames dropped as expired")
        self.assertEqual(sorted(want_old - set(dlq)), [], "old frames not dropped")
        self.assertEqual(delivered, want_fresh)
        for f in dlq.values():
            self.assertEqual(f["dlq_reason"], "expired", f)
        m1 = scrape(gw)
        self.assertEqual(metric(m1, "frame_buffer_dlq_total", reason="expired")
                         - metric(m0, "frame_buffer_dlq_total", reason="expired"), len(want_old))
        self.assertEqual(metric(m1, "frame_buffer_frames_dropped_total", reason="expired")
                         - metric(m0, "frame_buffer_frames_dropped_total", reason="expired"),
                         len(want_old))
        self.assertIsNone(wait_no_pending(self.r))

    # ======================================================= strategies
    def test_live_strategy_change_round_robin_to_consistent_hash(self):
        gw = self.gateway(ROUTING_STRATEGY="round_robin")
        pids = ["live-%d" % i for i in range(3)]
        for pid in pids:
            self.register(gw, pid, max_queue=1000000)
        self.assertEqual(gw.get("/api/v1/routing")[2]["strategy"], "round_robin")
        before = frames_of("rr", 600, cameras=20)
        add_frames(self.r, before)
        wait_for(lambda: sum(self.r.command("XLEN", ready(p)) for p in pids) == 600, 10,
                 what="600 frames")
        cams = self.cameras_by_processor(before, self.where(pids))
        self.assertTrue(all(len(v) == 3 for v in cams.values()),
                        "round robin: every camera on every processor: %s" % dict(cams))

        self.assertDetail(gw.put("/api/v1/routing", {"strategy": "random"}), 422, "bad strategy")
        status, _, doc = gw.put("/api/v1/routing", {"strategy": "consistent_hash"})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["strategy"], "consistent_hash")
        self.assertEqual(gw.get("/api/v1/routing")[2]["strategy"], "consistent_hash")
        self.assertEqual(gw.get("/api/v1/stats")[2]["routing"]["strategy"], "consistent_hash")
        time.sleep(0.6)  # depths polled: equal loads
        after = frames_of("ch", 200, cameras=20)
        add_frames(self.r, after)
        wait_for(lambda: sum(self.r.command("XLEN", ready(p)) for p in pids) == 800, 10,
                 what="200 more frames")
        cams = self.cameras_by_processor(after, self.where(pids))
        spread = {c: sorted(v) for c, v in cams.items() if len(v) > 1}
        self.assertEqual(spread, {}, "after the change to consistent_hash, cameras on more than "
                         "one processor")
        self.assertGreater(len({next(iter(v)) for v in cams.values()}), 1,
                           "every camera on one processor: not hashing")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)

    def test_weighted_round_robin_in_proportion_to_weight(self):
        gw = self.gateway(ROUTING_STRATEGY="weighted_round_robin")
        weights = {"w-1": 1, "w-2": 2, "w-3": 3, "w-6": 6}
        for pid, w in weights.items():
            self.register(gw, pid, weight=w, max_queue=1000000)
        n = 2400
        frames = frames_of("wrr", n)
        add_frames(self.r, frames)
        wait_for(lambda: sum(self.r.command("XLEN", ready(p)) for p in weights) == n, 10,
                 what="%d frames" % n)
        time.sleep(0.3)
        got = {p: self.r.command("XLEN", ready(p)) for p in weights}
        total_w = sum(weights.values())
        want = {p: n * w // total_w for p, w in weights.items()}
        for p in weights:
            self.assertLessEqual(abs(got[p] - want[p]), n // 100,
                                 "weighted round robin: got %s, want about %s" % (got, want))
        # smooth: the weight-6 processor gets every other frame, not runs of six
        where = self.where(list(weights))
        seq = [where[f["frame_id"]][0] for f in frames]
        longest, run = 1, 1
        for a, b in zip(seq, seq[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        self.assertLessEqual(longest, 2, "weighted round robin is not smooth (a run of %d)"
                             % longest)

    def test_consistent_hash_keeps_cameras_and_moves_few(self):
        gw = self.gateway(ROUTING_STRATEGY="consistent_hash")
        pids = ["ch-a", "ch-b", "ch-c"]

        def preload(pid):
            # A backlog of equal size on every processor: loads stay far
            # below the bound, so the camera's place on the ring decides.
            self.r.pipeline([("XADD", ready(pid), "*", "frame_id", "pre-%s-%d" % (pid, i))
                             for i in range(1000)])
        for pid in pids:
            self.register(gw, pid, max_queue=1000000)
            preload(pid)
        wait_for(lambda: all(gw.get(P + "/" + p)[2]["queue_depth"] >= 1000 for p in pids), 5,
                 what="the gateway to see the backlogs")

        def run(prefix, live):
            frames = frames_of(prefix, 300, cameras=30)
            add_frames(self.r, frames)
            wait_for(lambda: len([1 for fid in self.where(live) if fid.startswith(prefix)]) == 300,
                     10, what="300 %s frames" % prefix)
            cams = self.cameras_by_processor(frames, self.where(live))
            spread = {c: sorted(v) for c, v in cams.items() if len(v) != 1}
            self.assertEqual(spread, {}, "%s: cameras on more than one processor" % prefix)
            return {c: next(iter(v)) for c, v in cams.items()}

        first = run("one", pids)
        self.assertEqual(len(set(first.values())), 3, "30 cameras on 3 processors: %s" % first)
        again = run("two", pids)
        self.assertEqual(again, first, "cameras moved with nothing changed")

        # A processor comes: cameras move only to it.
        self.register(gw, "ch-d", max_queue=1000000)
        preload("ch-d")
        wait_for(lambda: gw.get(P + "/ch-d")[2]["queue_depth"] >= 1000, 5,
                 what="the new backlog to be seen")
        pids4 = pids + ["ch-d"]
        grown = run("three", pids4)
        moved = {c for c in first if grown[c] != first[c]}
        self.assertEqual({grown[c] for c in moved}, {"ch-d"} if moved else set(),
                         "cameras moved between old processors when one was added")
        self.assertTrue(0 < len(moved) < 20, "%d of 30 cameras moved to the new processor"
                        % len(moved))
        self.assertEqual(self.moves(gw), {"spill": 0, "return": 0, "membership": len(moved)},
                         "each camera that moved to the new processor counted once")

        # A processor goes: only its cameras move.
        self.assertStatus(gw.delete(P + "/ch-a"), 204)
        time.sleep(0.3)
        live = ["ch-b", "ch-c", "ch-d"]
        shrunk = run("four", live)
        for c, pid in grown.items():
            if pid != "ch-a":
                self.assertEqual(shrunk[c], pid, "camera %s moved though its processor stayed"
                                 % c)
        gone = sum(1 for pid in grown.values() if pid == "ch-a")
        self.assertEqual(self.moves(gw)["membership"], len(moved) + gone,
                         "each camera of the removed processor counted once")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)

    # ======================================== consistent_hash, sticky, real processors
    def moves(self, gw):
        m = scrape(gw)
        return {r: metric(m, "frame_buffer_camera_moves_total", reason=r)
                for r in ("spill", "return", "membership")}

    def processor(self, gw, pid, **opts):
        """A running fb-processor (Redis transport), stopped at cleanup."""
        args = [harness.fb_binary("fb-processor"), "--id", pid, "--capabilities",
                "object_detection", "--api", gw.base, "--redis-url", self.redis.url, "--quiet"]
        opts.setdefault("heartbeat_ms", 1000)
        for k, v in opts.items():
            args += ["--" + k.replace("_", "-"), str(v)]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.terminate(), p.wait(10)))
        wait_for(lambda: gw.get(P + "/" + pid)[0] == 200, 10, what=pid + " registered")
        return p

    def inject(self, n, rate, cameras=16, seed=1):
        subprocess.run([harness.fb_binary("fb-inject"), "--redis-url", self.redis.url,
                        "--frames", str(n), "--rate", str(rate), "--cameras", str(cameras),
                        "--types", "object_detection", "--seed", str(seed), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)

    def camera_map(self, pids, since=None):
        """camera -> {processor: frames} for the frames in the processors' streams."""
        def key(eid):
            ms, seq = eid.split("-")
            return int(ms), int(seq)
        out = collections.defaultdict(collections.Counter)
        for pid in pids:
            for eid, f in xrange_all(self.r, ready(pid)):
                if since is None or key(eid) > key(since[pid]):
                    out[f["camera_id"]][pid] += 1
        return out

    def last_ids(self, pids):
        """The id of each processor stream's newest entry ("0-0" when empty)."""
        last = {p: self.r.command("XREVRANGE", ready(p), "+", "-", "COUNT", 1) for p in pids}
        return {p: v[0][0].decode() if v else "0-0" for p, v in last.items()}

    def test_consistent_hash_sticky_at_light_load(self):
        """16 cameras at 30 frames/s each over three consuming processors of
        capacity 8: every camera on one processor, and no move counted."""
        gw = self.gateway(ROUTING_STRATEGY="consistent_hash")
        pids = ["obj-1", "obj-2", "obj-3"]
        for pid in pids:
            self.processor(gw, pid, capacity=8)
        self.inject(1920, 480)
        wait_for(lambda: sum(self.added(ready(p)) for p in pids) == 1920, 20, what="1920 frames")
        cams = self.camera_map(pids)
        split = {c: dict(v) for c, v in cams.items() if len(v) > 1}
        self.assertEqual(split, {}, "cameras split across processors at light load")
        self.assertEqual(len(cams), 16)
        self.assertGreater(len({next(iter(v)) for v in cams.values()}), 1, "not hashing")
        self.assertEqual(self.moves(gw), {"spill": 0, "return": 0, "membership": 0})

    def test_consistent_hash_moves_whole_cameras_off_an_overloaded_processor(self):
        """One processor stops reading: once its backlog is past its capacity and
        the bound, its cameras move away whole (each to one other processor) and
        the moves are counted; when it drains they come back."""
        gw = self.gateway(ROUTING_STRATEGY="consistent_hash")
        pids = ["hot-1", "hot-2", "hot-3"]
        # Not health-tracked: a stopped one stays healthy, only its backlog grows.
        procs = {pid: self.processor(gw, pid, capacity=4, heartbeat_ms=0) for pid in pids}
        self.inject(480, 480, seed=2)
        wait_for(lambda: sum(self.added(ready(p)) for p in pids) == 480, 20, what="480 frames")
        home = {c: next(iter(v)) for c, v in self.camera_map(pids).items()}
        victim = "hot-1"
        theirs = {c for c, p in home.items() if p == victim}
        self.assertTrue(theirs, "hot-1 has no camera: %s" % home)

        procs[victim].send_signal(19)  # SIGSTOP: it stops reading, its backlog grows
        self.addCleanup(lambda: procs[victim].send_signal(18))
        mark = self.last_ids(pids)
        self.inject(960, 240, seed=3)
        wait_for(lambda: sum(self.added(ready(p)) for p in pids) == 1440, 20, what="960 more")
        moved = self.moves(gw)
        self.assertEqual(moved["spill"], len(theirs), "one spill per camera of the stopped one")
        after = self.camera_map(pids, since=mark)
        for c in theirs:
            away = {p: n for p, n in after[c].items() if p != victim}
            self.assertEqual(len(away), 1, "camera %s did not move whole: %s" % (c, dict(after[c])))
        for c in set(home) - theirs:
            self.assertEqual(set(after[c]), {home[c]}, "camera %s moved though its processor "
                             "kept up" % c)

        procs[victim].send_signal(18)  # SIGCONT: it drains
        wait_for(lambda: gw.get(P + "/" + victim)[2]["queue_depth"] <= 1, 20,
                 what="the stopped processor to drain")
        time.sleep(2.5)  # a moved camera returns no sooner than 2 s after it left
        mark = self.last_ids(pids)
        self.inject(480, 240, seed=4)
        wait_for(lambda: sum(self.added(ready(p)) for p in pids) == 1920, 20, what="480 more")
        back = self.camera_map(pids, since=mark)
        for c in theirs:
            self.assertEqual(set(back[c]), {victim}, "camera %s did not come back" % c)
        self.assertEqual(self.moves(gw)["return"], len(theirs))


if __name__ == "__main__":
    unittest.main()
