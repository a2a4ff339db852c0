"""Delivery (README: Delivery guarantees): the atomic hand-off loses and duplicates nothing when
the gateway is killed -9 or Redis restarts in the middle of a run, and
entries a dead consumer left pending are claimed."""
import collections
import time
import unittest

from harness import (IntegrationTest, add_frames, info_map, stream_lengths, wait_for,
                     wait_no_pending, xrange_all)

INPUT = "frames:metadata"
GROUP = "frame-buffer-group"
DLQ = "frames:dlq"
CONSUMER = "crash-test"


def make_frames(prefix, n, start=0):
    return [{"frame_id": "%s-%07d" % (prefix, i), "camera_id": "cam-%02d" % (i % 16),
             "timestamp": "1735689600"} for i in range(start, start + n)]


class CrashTest(IntegrationTest):

    NPROC = 4

    def prepare(self, persistent=False, env=None):
        """Redis, and processors registered through a gateway that is then
        stopped, so that frames loaded next wait for the gateway under test.
        Returns (redis, client, gateway-not-running, target keys)."""
        redis = self.start_redis(persistent=persistent)
        r = self.client(redis)
        gw = self.start_gateway(redis, consumer_name=CONSUMER, env=env)
        targets = []
        for i in range(self.NPROC):
            pid = "crash-p%d" % i
            # max_queue well above the frame count: the stream cap must not trim
            self.assertStatus(gw.register(pid, ["person"], max_queue=10000000), 201)
            targets.append("frames:ready:" + pid)
        self.assertEqual(gw.stop(), 0)
        return redis, r, gw, targets

    def progress(self, r, targets):
        return sum(stream_lengths(r, targets + [DLQ]).values())

    def wait_progress(self, r, targets, n, timeout, what):
        wait_for(lambda: self.progress(r, targets) >= n, timeout, interval=0.005, what=what)

    def wait_all_then_check(self, r, targets, frame_ids, timeout, what):
        """Waits for every frame, then checks exactly-once; on a timeout the
        failure says which frames are missing or duplicated."""
        try:
            self.wait_progress(r, targets, len(frame_ids), timeout, what)
        except AssertionError as e:
            self.assertExactlyOnce(r, targets, frame_ids, prefix=str(e) + ": ")
            raise
        time.sleep(0.5)  # any duplicate would arrive now
        self.assertExactlyOnce(r, targets, frame_ids)

    def assertExactlyOnce(self, r, targets, frame_ids, prefix=""):
        """Every frame id in `frame_ids` is in exactly one target stream, once;
        nothing else is there; the DLQ is empty; nothing is pending."""
        count = collections.Counter()
        per_target = {}
        for k in targets:
            entries = xrange_all(r, k)
            per_target[k] = len(entries)
            count.update(f.get("frame_id") for _, f in entries)
        dlq = xrange_all(r, DLQ)
        want = set(frame_ids)
        dups = sorted(fid for fid, c in count.items() if c > 1)
        missing = sorted(want - set(count))
        strangers = sorted(set(count) - want, key=str)
        msg = prefix + ("%d frames expected; streams hold %s; %d duplicated (e.g. %s), %d missing "
               "(e.g. %s), %d unexpected (e.g. %s); DLQ %d (e.g. %s)" % (
                   len(want), per_target, len(dups), dups[:5], len(missing), missing[:5],
                   len(strangers), strangers[:5], len(dlq), [f for _, f in dlq[:3]]))
        if dups or missing or strangers or dlq:
            self.fail(msg)
        left = wait_no_pending(r, timeout=10.0)
        self.assertIsNone(left, "entries left pending in the input group: %r" % (left,))

    # ------------------------------------------------------------ kill -9
    def test_kill_9_mid_run_loses_and_duplicates_nothing(self):
        n = 200000
        redis, r, gw, targets = self.prepare()
        frames = make_frames("k", n)
        add_frames(r, frames)
        self.assertEqual(r.command("XLEN", INPUT), n)

        gw.start(wait_ready=False)
        kills = []
        for part in (n // 3, 2 * n // 3):  # twice: also while recovering from the first
            self.wait_progress(r, targets, part, 60, "%d frames to arrive" % part)
            gw.kill()
            at_kill = self.progress(r, targets)
            self.assertLess(at_kill, n, "the gateway handed off everything before the kill -9; "
                            "the test did not crash it mid-run")
            kills.append((at_kill, r.command("XPENDING", INPUT, GROUP)[0]))
            gw.start(wait_ready=False)  # same CONSUMER_NAME: it recovers its own pending entries

        self.wait_all_then_check(r, targets, [f["frame_id"] for f in frames], 90,
                                 "all %d frames after the restarts" % n)
        # For the record, in the test output.
        print("\nkill -9 at (handed off, pending): %s of %d" % (kills, n))

    # ------------------------------------------------------ Redis restart
    def test_redis_restart_mid_run(self):
        n, more = 100000, 5000
        redis, r, gw, targets = self.prepare(persistent=True)
        frames = make_frames("rr", n)
        add_frames(r, frames)
        gw.start(wait_ready=False)
        self.wait_progress(r, targets, n // 3, 60, "a third of the frames to arrive")
        r.close()
        redis.shutdown()
        down_at = time.monotonic()
        wait_for(lambda: gw.ready_status() == 503, 10,
                 what="/readyz to answer 503 while Redis is down")
        status, _, doc = gw.get("/health")
        self.assertEqual((status, doc["status"], doc["connections"]["redis"]),
                         (503, "unhealthy", False), "/health while Redis is down: %s" % doc)
        time.sleep(1.0)
        self.assertTrue(gw.running(), "the gateway exited while Redis was down")
        self.assertEqual(gw.ready_status(), 503, "/readyz while Redis is still down")

        redis.start()  # same port, same directory: the AOF brings the data back
        down_for = time.monotonic() - down_at
        r = self.client(redis)
        self.assertGreater(r.command("XLEN", INPUT), 0, "the AOF did not survive the restart")
        wait_for(lambda: gw.ready_status() == 200, 30,
                 what="/readyz to answer 200 again after Redis came back")
        extra = make_frames("rr-after", more)
        add_frames(r, extra)
        self.wait_all_then_check(r, targets, [f["frame_id"] for f in frames + extra], 90,
                                 "all frames after the Redis restart")
        print("\nRedis was down for %.1fs" % down_for)

    # ------------------------------------------------------ dead consumer
    def test_entries_left_by_a_dead_consumer_are_claimed(self):
        redis, r, gw, targets = self.prepare(env={"CLAIM_IDLE_MS": "500"})
        frames = make_frames("g", 1000)
        add_frames(r, frames)
        # "ghost" reads 600 entries and dies without acking them
        rep = r.command("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", 600, "STREAMS", INPUT, ">")
        self.assertEqual(len(rep[0][1]), 600)
        self.assertEqual(r.command("XPENDING", INPUT, GROUP)[0], 600)

        gw.start()
        self.wait_all_then_check(r, targets, [f["frame_id"] for f in frames], 30,
                                 "all frames, including the 600 the ghost left pending")
        consumers = {info_map(c)["name"]: info_map(c)
                     for c in r.command("XINFO", "CONSUMERS", INPUT, GROUP)}
        self.assertEqual(consumers[b"ghost"]["pending"], 0, "the ghost still owns entries")


if __name__ == "__main__":
    unittest.main()
