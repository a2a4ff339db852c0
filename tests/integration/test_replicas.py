"""Two replicas (different CONSUMER_NAME and port) on one Redis and one
NATS: they share the input group without handing a frame out twice or
losing one, see each other's registrations within a second (README: The API), and
both see every heartbeat, whichever way it came in (README: Remote processors and NATS)."""
import collections
import time
import unittest

from harness import (IntegrationTest, add_frames, dumps, metric, scrape, stream_lengths,
                     wait_for, wait_no_pending, xrange_all)
from natsc import Nats

P = "/api/v1/processors"
DLQ = "frames:dlq"
INPUT = "frames:metadata"


def ready(pid):
    return "frames:ready:" + pid


class ReplicasTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        self.nats = self.start_nats()
        self.nc = Nats(self.nats.port)
        self.addCleanup(self.nc.close)

    def replica(self, name, start=True, **env):
        e = {"NATS_URL": self.nats.url}
        e.update({k: str(v) for k, v in env.items()})
        g = self.new_gateway(self.redis, consumer_name=name, env=e)
        return g.start() if start else g

    def proc(self, gw, pid):
        status, _, doc = gw.get(P + "/" + pid)
        self.assertEqual(status, 200, "%s on %s: %s" % (pid, gw.consumer_name, doc))
        return doc

    # ------------------------------------------------------ exactly once
    def test_two_replicas_hand_out_every_frame_once(self):
        n = 100000
        a = self.replica("replica-a")
        targets = []
        for i in range(4):
            pid = "rep-p%d" % i
            self.assertStatus(a.register(pid, ["person"], max_queue=10000000), 201)
            targets.append(ready(pid))
        self.assertEqual(a.stop(), 0)
        b = self.replica("replica-b", start=False)
        frames = [{"frame_id": "rep-%07d" % i, "camera_id": "cam-%02d" % (i % 32),
                   "timestamp": "1735689600"} for i in range(n)]
        add_frames(self.r, frames)
        a.start(wait_ready=False)
        b.start(wait_ready=False)

        def progress():
            return sum(stream_lengths(self.r, targets + [DLQ]).values())
        try:
            wait_for(lambda: progress() >= n, 90, interval=0.05, what="all %d frames" % n)
        finally:
            time.sleep(0.5)  # a duplicate would show up now
            count = collections.Counter()
            for k in targets:
                count.update(f["frame_id"] for _, f in xrange_all(self.r, k))
            want = {f["frame_id"] for f in frames}
            dups = sorted(fid for fid, c in count.items() if c > 1)
            missing = sorted(want - set(count))
            self.assertEqual((dups[:5], len(dups), missing[:5], len(missing)), ([], 0, [], 0),
                             "frames duplicated or missing across two replicas")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        self.assertIsNone(wait_no_pending(self.r))
        consumed = [metric(scrape(g), "frame_buffer_frames_consumed_total") for g in (a, b)]
        self.assertEqual(sum(consumed), n, "frames_consumed_total of the two: %s" % consumed)
        self.assertGreater(min(consumed), 0, "one replica did all the work (%s): the test did "
                           "not exercise two readers" % consumed)
        print("\nframes consumed by the replicas: %s" % consumed)

    # ------------------------------------------------------ registrations
    def test_registration_on_one_is_routed_to_by_the_other_within_a_second(self):
        a = self.replica("replica-a", ROUTING_STRATEGY="round_robin")
        b = self.replica("replica-b", ROUTING_STRATEGY="round_robin")
        t0 = time.monotonic()
        self.assertStatus(a.register("late-1", ["face"]), 201)
        wait_for(lambda: b.get(P + "/late-1")[0] == 200, 1.0, interval=0.02,
                 what="replica b to know a processor registered on replica a")
        seen_after = time.monotonic() - t0
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        # from now on both must route to it: face frames in small bursts, so
        # that both replicas' blocked reads get some
        frames = [{"frame_id": "late-%04d" % i, "camera_id": "c", "detection_type": "face"}
                  for i in range(2000)]
        for i in range(0, len(frames), 50):
            add_frames(self.r, frames[i:i + 50])
            time.sleep(0.01)
        wait_for(lambda: self.r.command("XLEN", ready("late-1")) +
                 self.r.command("XLEN", DLQ) >= len(frames), 15, what="2000 face frames")
        time.sleep(0.3)
        self.assertEqual(xrange_all(self.r, DLQ)[:3], [],
                         "face frames not routed more than a second after the registration")
        self.assertEqual(self.r.command("XLEN", ready("late-1")), len(frames))
        routed = [metric(scrape(g), "frame_buffer_frames_distributed_total",
                         processor_id="late-1", transport="redis") for g in (a, b)]
        self.assertEqual(sum(routed), len(frames))
        self.assertGreater(routed[1], 0, "replica b never routed to late-1 (a: %d)" % routed[0])

        # an update and a removal travel too
        body = {"id": "late-1", "capabilities": ["face", "plate"], "capacity": 9, "queue": ""}
        self.assertStatus(b.put(P + "/late-1", body), 200)
        wait_for(lambda: self.proc(a, "late-1")["capacity"] == 9, 1.0, interval=0.02,
                 what="replica a to see the update made on b")
        self.assertStatus(a.delete(P + "/late-1"), 204)
        wait_for(lambda: b.get(P + "/late-1")[0] == 404, 1.0, interval=0.02,
                 what="replica b to see the removal made on a")
        print("\nreplica b knew the registration after %.3fs" % seen_after)

    # ------------------------------------------------------ heartbeats
    def test_heartbeats_reach_both_replicas(self):
        env = {"HEARTBEAT_TIMEOUT_MS": 1500}
        a = self.replica("replica-a", **env)
        b = self.replica("replica-b", **env)
        for pid in ("hb-nats", "hb-http"):
            self.assertStatus(a.register(pid, ["person"], heartbeat_interval_ms=400), 201)
        wait_for(lambda: all(g.get(P + "/" + pid)[0] == 200 for g in (a, b)
                             for pid in ("hb-nats", "hb-http")), 2, what="both registrations")
        m0 = [metric(scrape(g), "frame_buffer_heartbeats_total") for g in (a, b)]

        # NATS: every replica subscribes
        self.nc.publish("processors.heartbeat.hb-nats", dumps({"processor_id": "hb-nats",
                                                               "status": "ok"}))
        self.nc.flush()
        for g in (a, b):
            wait_for(lambda: self.proc(g, "hb-nats")["last_heartbeat"], 2,
                     what="replica %s to see the NATS heartbeat" % g.consumer_name)
        # HTTP to replica a only: b learns of it through NATS
        self.assertStatus(a.post(P + "/heartbeat", {"processor_id": "hb-http", "status": "ok"}),
                          200)
        for g in (a, b):
            wait_for(lambda: self.proc(g, "hb-http")["last_heartbeat"], 2,
                     what="replica %s to see the HTTP heartbeat sent to replica a"
                     % g.consumer_name)
        time.sleep(0.3)
        m1 = [metric(scrape(g), "frame_buffer_heartbeats_total") for g in (a, b)]
        self.assertEqual([m1[0] - m0[0], m1[1] - m0[1]], [2, 2],
                         "each replica counts each heartbeat once")

        # Heartbeats over HTTP to a alone keep the processor alive on b too,
        # for longer than HEARTBEAT_TIMEOUT_MS; the NATS one dies on both.
        statuses = collections.defaultdict(set)
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            self.assertStatus(a.post(P + "/heartbeat", {"processor_id": "hb-http"}), 200)
            for g in (a, b):
                statuses[g.consumer_name].add(self.proc(g, "hb-http")["status"])
            time.sleep(0.15)
        self.assertEqual(dict(statuses), {"replica-a": {"healthy"}, "replica-b": {"healthy"}})
        for g in (a, b):
            self.assertEqual(self.proc(g, "hb-nats")["status"], "dead", g.consumer_name)


if __name__ == "__main__":
    unittest.main()
