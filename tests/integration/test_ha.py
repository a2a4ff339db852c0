"""High availability under the gateway: Redis with Sentinel (the primary
killed with kill -9, or moved with SENTINEL FAILOVER, while two replicas of
the gateway route 200,000 frames: every frame arrives exactly once, counted
by frame_id on the new primary) and a three-node NATS cluster with JetStream
(a node killed during 100,000 remote frames: stream FRAMES holds each one
exactly once). NATS away: the gateway stays ready and keeps routing."""
import collections
import time
import unittest

from harness import (IntegrationTest, add_frames, metric, scrape, stream_lengths, wait_for,
                     xrange_all)
from natsc import JetStream, JetStreamError, NatsError

P = "/api/v1/processors"
INPUT = "frames:metadata"
GROUP = "frame-buffer-group"
DLQ = "frames:dlq"


def ready(pid):
    return "frames:ready:" + pid


def frames(prefix, n, cameras=32, **extra):
    out = []
    for i in range(n):
        f = {"frame_id": "%s-%07d" % (prefix, i), "camera_id": "cam-%02d" % (i % cameras),
             "timestamp": "1735689600"}
        f.update(extra)
        out.append(f)
    return out


class SentinelTest(IntegrationTest):
    """Two gateways on a primary, a replica and three sentinels."""

    N = 200000
    PROCS = ["ha-p%d" % i for i in range(4)]

    def setUp(self):
        super().setUp()
        self.s = self.start_redis_sentinel()

    def gateways(self, **env):
        gws = [self.new_gateway(self.s, consumer_name="ha-%s" % n,
                                env=self.s.gateway_env(NATS_URL="none", **env)) for n in "ab"]
        gws[0].start()
        for pid in self.PROCS:
            self.assertStatus(gws[0].register(pid, ["person"], max_queue=10000000), 201)
        return gws

    def preload(self):
        """N frames in the input, on the replica as well (WAIT)."""
        want = frames("ha", self.N)
        with self.s.client() as r:
            for i in range(0, self.N, 20000):
                add_frames(r, want[i:i + 20000])
            self.assertEqual(r.command("WAIT", 1, 10000), 1, "the replica did not get the input")
        return {f["frame_id"] for f in want}

    def routed(self, r):
        return sum(stream_lengths(r, [ready(p) for p in self.PROCS]).values())

    def assert_exactly_once(self, want, what):
        with self.s.client() as r:
            count = collections.Counter()
            for p in self.PROCS:
                count.update(f["frame_id"] for _, f in xrange_all(r, ready(p)))
            dups = sorted(fid for fid, c in count.items() if c > 1)
            missing = sorted(want - set(count))
            self.assertEqual((dups[:5], len(dups), missing[:5], len(missing)), ([], 0, [], 0),
                             "frames duplicated or missing across %s" % what)
            self.assertEqual(r.command("XLEN", DLQ), 0)
            self.assertEqual(r.command("XPENDING", INPUT, GROUP)[0], 0)

    def run_through(self, move, what, **env):
        a, b = self.gateways(**env)
        self.assertEqual(a.stop(), 0)
        want = self.preload()
        a.start(wait_ready=False)
        b.start(wait_ready=False)
        with self.s.client() as r:
            wait_for(lambda: self.routed(r) >= self.N // 4, 60, interval=0.005,
                     what="a quarter of the frames routed before the %s" % what)
        def consumed():
            return sum(metric(scrape(g), "frame_buffer_frames_consumed_total") for g in (a, b))
        old = move()
        t0 = time.monotonic()
        at = consumed()  # no hand-off is confirmed until the gateways reach a primary again
        self.assertLess(at, self.N, "every frame was routed before the %s" % what)
        wait_for(lambda: consumed() > at, 30, interval=0.01,
                 what="routing to go on after the %s" % what)
        again = time.monotonic() - t0
        new = self.s.wait_new_primary(old, timeout=30)
        promoted = time.monotonic() - t0
        with self.s.client(new) as r:
            for g in (a, b):
                wait_for(lambda: g.ready_status() == 200, 15, what="/readyz of %s 200 again"
                         % g.consumer_name)
            wait_for(lambda: self.routed(r) >= self.N, 120, interval=0.1,
                     what="all %d frames on the new primary" % self.N)
            time.sleep(1.0)  # a duplicate would show up now
        self.assert_exactly_once(want, what)
        moved = [metric(scrape(g), "frame_buffer_redis_reconnects_total", connection="ingest")
                 for g in (a, b)]
        self.assertTrue(all(m > 0 for m in moved), "reconnects counted: %s" % moved)
        print("\n%s: new primary after %.2fs, routing again %.2fs after the %s; %d frames "
              "exactly once" % (what, promoted, again, what, self.N))

    def test_primary_killed_mid_run(self):
        self.run_through(self.s.kill_primary, "kill -9")

    def test_sentinel_failover_under_load_with_wait_replicas(self):
        self.run_through(self.s.failover, "SENTINEL FAILOVER", REDIS_WAIT_REPLICAS=1)

    def test_sentinel_settings_and_not_ready_without_sentinels(self):
        gw = self.new_gateway(self.s, consumer_name="ha-x",
                              env={"NATS_URL": "none", "REDIS_SENTINELS": "127.0.0.1:1",
                                   "REDIS_SENTINEL_MASTER": "fbmaster"})
        gw.start(wait_ready=False)
        wait_for(lambda: gw.ready_status() == 503, 5, what="/readyz 503 with no sentinel")
        self.assertIn("sentinel 127.0.0.1:1", gw.log())
        gw.stop()
        gw.extra_env.update({"REDIS_SENTINELS": self.s.sentinels,
                             "REDIS_SENTINEL_MASTER": "nosuchmaster"})
        gw.start(wait_ready=False)
        wait_for(lambda: "does not know master 'nosuchmaster'" in gw.log(), 5,
                 what="the gateway to say the sentinels do not know the master")
        self.assertEqual(gw.ready_status(), 503)


class NatsClusterTest(IntegrationTest):
    """A three-node NATS cluster with JetStream and NATS_JS_REPLICAS=3."""

    N = 100000

    def test_node_killed_during_remote_frames(self):
        redis = self.start_redis()
        r = self.client(redis)
        cluster = self.start_nats_cluster()
        gw = self.new_gateway(redis, consumer_name="js-cluster",
                              env={"NATS_URL": cluster.url, "NATS_JETSTREAM": 1,
                                   "NATS_JS_REPLICAS": 3})
        gw.start()
        for pid in ("jc-1", "jc-2"):
            self.assertStatus(gw.register(pid, ["face"], transport="nats", max_queue=10000000,
                                          heartbeat_interval_ms=0), 201)
        nc = cluster.client(0)
        self.addCleanup(nc.close)
        js = JetStream(nc)
        add_frames(r, frames("jc-warm", 10, detection_type="face"))
        wait_for(lambda: self.stored(js) == 10, 20, what="stream FRAMES created and used")
        self.assertEqual(js.stream_info("FRAMES")["config"]["num_replicas"], 3)
        self.assertIn("3 replicas", gw.log())

        want = frames("jc", self.N, detection_type="face")
        for i in range(0, self.N, 20000):
            add_frames(r, want[i:i + 20000])
        wait_for(lambda: self.stored(js) >= 10 + self.N // 4, 60, interval=0.01,
                 what="a quarter of the remote frames in JetStream")
        leader = cluster.stream_leader("FRAMES")
        self.assertIsNotNone(leader)
        victim = leader if leader != 0 else 1  # node 0 holds our own connection
        at = self.stored(js)
        cluster.kill(victim)
        t0 = time.monotonic()
        self.assertLess(at, 10 + self.N, "everything was stored before the kill")

        def done():
            groups = [g for g in r.command("XINFO", "GROUPS", INPUT)]
            g = dict(zip(groups[0][::2], groups[0][1::2]))
            return g[b"pending"] == 0 and g[b"lag"] == 0 and self.stored(js) >= 10 + self.N
        wait_for(done, 120, interval=0.2, what="every remote frame stored and acked (stored %s)"
                 % self.stored(js))
        flowing = time.monotonic() - t0
        time.sleep(1.0)
        self.assertEqual(self.stored(js), 10 + self.N, "FRAMES holds a different count than sent")
        count = collections.Counter()
        for pid in ("jc-1", "jc-2"):
            def added():  # the cluster may still be electing its meta leader
                try:
                    js.add_pull_consumer("FRAMES", "w-" + pid,
                                         filter_subject="frames.ready." + pid)
                    return True
                except (NatsError, JetStreamError):
                    return False
            wait_for(added, 30, interval=0.5, what="a pull consumer on FRAMES")
        # A consumer just created on a cluster that lost a node may have no
        # leader yet: its first pulls then come back empty for a while
        # (fetch_all stops at the first empty pull). Pull until every stored
        # message was seen; acked ones are gone (work queue), so a message
        # seen twice is a real duplicate.
        deadline = time.monotonic() + 60
        while sum(count.values()) < 10 + self.N and time.monotonic() < deadline:
            for pid in ("jc-1", "jc-2"):
                for m in js.fetch_all("FRAMES", "w-" + pid, batch=5000, idle=1.0):
                    count[m.json()["frame_id"]] += 1
        ids = {f["frame_id"] for f in want}
        dups = sorted(fid for fid, c in count.items() if c > 1)
        missing = sorted(ids - set(count))
        self.assertEqual((dups[:5], len(dups), missing[:5], len(missing)), ([], 0, [], 0),
                         "frames duplicated or missing in JetStream after a node died")
        self.assertEqual(r.command("XLEN", DLQ), 0, xrange_all(r, DLQ)[:3])
        print("\nnode %d of 3 (stream leader: %s) killed with %d of %d frames stored; all "
              "stored and acked %.1fs later, each once"
              % (victim, victim == leader, at - 10, self.N, flowing))

    @staticmethod
    def stored(js):
        """Messages in FRAMES; 0 while it does not exist, -1 while the
        cluster does not answer (a leader election)."""
        try:
            return js.stream_info("FRAMES")["state"]["messages"]
        except JetStreamError as e:
            if getattr(e, "code", None) == 404:
                return 0
            if getattr(e, "code", None) == 503:
                return -1
            raise
        except NatsError:
            return -1


class NatsAwayTest(IntegrationTest):

    def test_nats_killed_gateway_stays_ready_and_routes(self):
        redis = self.start_redis()
        r = self.client(redis)
        nats = self.start_nats()
        a, b = [self.start_gateway(redis, consumer_name="away-%s" % n,
                                   env={"NATS_URL": nats.url}) for n in "ab"]
        self.assertStatus(a.register("away-local", ["person"], max_queue=1000000), 201)
        wait_for(lambda: b.get(P + "/away-local")[0] == 200, 1, interval=0.01,
                 what="replica b to know the processor registered on a")
        nats.proc.kill()
        nats.proc.wait()
        for g in (a, b):
            wait_for(lambda: g.get("/health")[2]["status"] == "degraded", 10,
                     what="%s degraded without NATS" % g.consumer_name)
            status, _, doc = g.get("/health")
            self.assertEqual((status, doc["connections"]),
                             (200, {"redis": True, "group": True, "nats": False}))
            self.assertEqual(g.ready_status(), 200)
        add_frames(r, frames("away", 5000, detection_type="person"))
        wait_for(lambda: r.command("XLEN", ready("away-local")) == 5000, 20,
                 what="Redis routing to go on without NATS")
        consumed = [metric(scrape(g), "frame_buffer_frames_consumed_total") for g in (a, b)]
        self.assertEqual(sum(consumed), 5000)


if __name__ == "__main__":
    unittest.main()
