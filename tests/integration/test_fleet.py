"""Several replicas on one Redis act as one gateway: one set of routing
settings (a change on any replica reaches all within a second and survives
restarts; DELETE returns to the configured values), one fleet view (totals
equal the sum of the replicas; a dead replica leaves the list), events shown
once on every replica, and HTTP heartbeats that count on every replica
without NATS."""
import collections
import threading
import time
import unittest

from harness import (IntegrationTest, add_frames, dumps, metric, scrape, stream_lengths,
                     wait_for, wait_no_pending)
from natsc import Nats

P = "/api/v1/processors"
ROUTING = "/api/v1/routing"
SETTINGS = ("strategy", "overload_policy", "frame_max_age_ms", "slow_start_ms", "hash_bound")


def ready(pid):
    return "frames:ready:" + pid


class FleetTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)

    def replica(self, name, start=True, **env):
        e = {"NATS_URL": "none"}
        e.update({k: str(v) for k, v in env.items()})
        g = self.new_gateway(self.redis, consumer_name=name, env=e)
        return g.start() if start else g

    def routing(self, gw):
        status, _, doc = gw.get(ROUTING)
        self.assertEqual(status, 200, doc)
        return doc

    def events(self, gw, **match):
        status, _, doc = gw.get("/api/v1/events")
        self.assertEqual(status, 200, doc)
        return [e for e in doc if all(e.get(k) == v for k, v in match.items())]

    # ------------------------------------------------------ routing settings
    def test_routing_change_reaches_every_replica_and_survives_restarts(self):
        env = {"ROUTING_STRATEGY": "least_loaded", "HASH_BOUND": "1.25"}
        gws = [self.replica("fleet-%s" % n, **env) for n in "abc"]
        a, b, c = gws
        for g in gws:
            self.assertEqual(self.routing(g)["source"], {k: "config" for k in SETTINGS})

        t0 = time.monotonic()
        resp = a.put(ROUTING, {"strategy": "consistent_hash", "hash_bound": 1.5},
                     headers={"X-Request-ID": "fleet-req-1"})
        self.assertStatus(resp, 200, "PUT routing on a")
        self.assertEqual(resp[2]["strategy"], "consistent_hash")
        seen = {}
        for g in (b, c):
            wait_for(lambda: self.routing(g)["strategy"] == "consistent_hash", 1.0, interval=0.02,
                     what="replica %s to take a strategy PUT on replica a" % g.consumer_name)
            seen[g.consumer_name] = time.monotonic() - t0
        for g in gws:
            doc = self.routing(g)
            self.assertEqual((doc["strategy"], doc["hash_bound"]), ("consistent_hash", 1.5))
            self.assertEqual(doc["source"], {"strategy": "fleet", "hash_bound": "fleet",
                                             "overload_policy": "config",
                                             "frame_max_age_ms": "config",
                                             "slow_start_ms": "config"})
            self.assertEqual((doc["updated_by"], doc["request_id"]), ("fleet-a", "fleet-req-1"))

        # ... and replica b routes with it: its decisions are consistent_hash.
        self.assertStatus(b.register("ch-1", ["person"], max_queue=100000), 201)
        self.assertStatus(b.register("ch-2", ["person"], max_queue=100000), 201)
        wait_for(lambda: all(g.get(P + "/ch-2")[0] == 200 for g in gws), 2, what="registrations")
        add_frames(self.r, [{"frame_id": "ch-%d" % i, "camera_id": "cam-%d" % (i % 8),
                             "detection_type": "person"} for i in range(3000)])
        wait_for(lambda: sum(stream_lengths(self.r, [ready("ch-1"), ready("ch-2")]).values())
                 == 3000, 15, what="3000 frames routed")
        decisions = [metric(scrape(g), "frame_buffer_routing_decisions_total",
                            strategy="consistent_hash") for g in gws]
        self.assertEqual(sum(decisions), 3000, "every frame placed by consistent_hash: %s"
                         % decisions)

        # The audit: one event on every replica, naming the replica and request.
        for g in gws:
            wait_for(lambda: self.events(g, event="strategy", status="consistent_hash"), 1.0,
                     interval=0.02, what="the strategy event on %s" % g.consumer_name)
            evs = self.events(g, event="strategy", status="consistent_hash")
            self.assertEqual(len(evs), 1, "strategy events on %s: %s" % (g.consumer_name, evs))
            self.assertEqual((evs[0]["replica"], evs[0]["request_id"]),
                             ("fleet-a", "fleet-req-1"))
            self.assertIn("least_loaded -> consistent_hash", evs[0]["detail"])
            self.assertIn("hash_bound 1.25 -> 1.5", evs[0]["detail"])

        # A bad PUT changes nothing anywhere.
        gen = self.routing(a)["generation"]
        self.assertDetail(c.put(ROUTING, {"strategy": "random"}), 422, "unknown strategy")
        self.assertDetail(c.put(ROUTING, {"strategy": "round_robin", "hash_bound": 0.5}), 422,
                          "bad hash_bound with a good strategy")
        time.sleep(0.5)
        for g in gws:
            self.assertEqual((self.routing(g)["generation"], self.routing(g)["strategy"]),
                             (gen, "consistent_hash"))

        # Every replica restarts: the fleet's settings are still there.
        for g in gws:
            self.assertEqual(g.stop(), 0)
        for g in gws:
            g.start()
        for g in gws:
            doc = self.routing(g)
            self.assertEqual((doc["strategy"], doc["hash_bound"], doc["source"]["strategy"]),
                             ("consistent_hash", 1.5, "fleet"), g.consumer_name)

        # DELETE on c: every replica goes back to its configured values.
        resp = c.delete(ROUTING, headers={"X-Request-ID": "fleet-req-2"})
        self.assertStatus(resp, 200, "DELETE routing")
        for g in gws:
            wait_for(lambda: self.routing(g)["strategy"] == "least_loaded", 1.0, interval=0.02,
                     what="replica %s back to least_loaded after DELETE" % g.consumer_name)
            doc = self.routing(g)
            self.assertEqual((doc["hash_bound"], doc["source"]),
                             (1.25, {k: "config" for k in SETTINGS}))
            # the event travels through Redis on its own tick
            wait_for(lambda: self.events(g, request_id="fleet-req-2"), 1.0, interval=0.02,
                     what="the reset event on %s" % g.consumer_name)
            time.sleep(0.2)  # a second copy would show up now
            evs = self.events(g, request_id="fleet-req-2")
            self.assertEqual([(e["event"], e["status"], e["replica"]) for e in evs],
                             [("strategy", "least_loaded", "fleet-c")], g.consumer_name)
        print("\na strategy PUT on replica a was in effect on b after %.3fs, on c after %.3fs"
              % (seen["fleet-b"], seen["fleet-c"]))

    # ------------------------------------------------------ the fleet view
    def test_fleet_view_sums_the_replicas_and_drops_dead_ones(self):
        a = self.replica("view-a")
        b = self.replica("view-b")
        for pid in ("v-1", "v-2"):
            self.assertStatus(a.register(pid, ["person"], max_queue=1000000), 201)
        wait_for(lambda: b.get(P + "/v-2")[0] == 200, 2, what="b to know the processors")

        n, stop = 30000, threading.Event()

        def inject():
            r = self.redis.client()
            try:
                for i in range(0, n, 500):
                    if stop.is_set():
                        return
                    add_frames(r, [{"frame_id": "v-%d" % k, "camera_id": "c",
                                    "detection_type": "person"} for k in range(i, i + 500)])
                    time.sleep(0.05)
            finally:
                r.close()
        t = threading.Thread(target=inject)
        t.start()
        self.addCleanup(stop.set)
        # While frames flow, the rates add up (one read of the view).
        rates = []

        def busy():
            doc = a.get("/api/v1/stats")[2]
            reps = doc["replicas"]
            if len(reps) == 2 and doc["fleet"]["in_per_s"] > 0:
                rates.append((doc["fleet"]["in_per_s"], [r["in_per_s"] for r in reps]))
            return len(rates) >= 3
        wait_for(busy, 15, interval=0.3, what="the fleet's rates while frames flow")
        for total, parts in rates:
            self.assertEqual(total, sum(parts), "fleet in_per_s against its replicas")
        t.join()
        wait_for(lambda: sum(stream_lengths(self.r, [ready("v-1"), ready("v-2")]).values()) == n,
                 30, what="all %d frames" % n)
        self.assertIsNone(wait_no_pending(self.r))

        # Settled: the fleet's totals are the replicas' own counters, added up.
        own = {g.consumer_name: metric(scrape(g), "frame_buffer_frames_consumed_total")
               for g in (a, b)}
        self.assertGreater(min(own.values()), 0, "one replica did all the work: %s" % own)

        def settled(g):
            doc = g.get("/api/v1/stats")[2]
            return doc if doc["fleet"]["consumed"] == n else None
        for g in (a, b):
            doc = wait_for(lambda: settled(g), 3, what="%s's fleet view to count %d frames"
                           % (g.consumer_name, n))
            self.assertEqual(doc["fleet"]["replicas"], 2)
            self.assertEqual({r["consumer"]: r["consumed"] for r in doc["replicas"]}, own)
            self.assertEqual(doc["fleet"]["distributed"],
                             sum(r["distributed"] for r in doc["replicas"]))
            self.assertEqual([r["self"] for r in doc["replicas"]],
                             [r["consumer"] == g.consumer_name for r in doc["replicas"]])
            for r in doc["replicas"]:
                for k in ("consumer", "in_per_s", "out_per_s", "last_seen_ms"):
                    self.assertIn(k, r)
                self.assertGreater(r["routing_latency_ms"]["p99"], 0, r)
            lat = doc["fleet"]["routing_latency_ms"]
            self.assertGreater(lat["p99"], 0)
            self.assertLessEqual(lat["p50"], lat["p99"])
            routed = {p["id"]: p["fleet_frames_routed"] for p in doc["processors"]}
            self.assertEqual(sum(routed.values()), n, routed)
            # this replica's own numbers stay what they were
            self.assertEqual(doc["frames"]["consumed"], own[g.consumer_name])

        # kill -9: the replica leaves the list within 6 s (its record lives
        # 5 s after its last publish, the view is rebuilt each second), plus
        # the polling and a sanitizer build's slowness.
        b.kill()
        t0 = time.monotonic()
        wait_for(lambda: [r["consumer"] for r in a.get("/api/v1/replicas")[2]] == ["view-a"], 7.0,
                 interval=0.1, what="the killed replica to leave the list")
        gone_after = time.monotonic() - t0
        self.assertLessEqual(gone_after, 6.5)
        # A replica that stops cleanly leaves at once.
        c = self.replica("view-c")
        wait_for(lambda: len(a.get("/api/v1/replicas")[2]) == 2, 3, what="view-c to join")
        self.assertEqual(c.stop(), 0)
        t1 = time.monotonic()
        wait_for(lambda: len(a.get("/api/v1/replicas")[2]) == 1, 2, interval=0.05,
                 what="the stopped replica to leave the list")
        print("\nfleet of 2: %s consumed; a killed replica left the list after %.1fs, a "
              "stopped one after %.2fs" % (own, gone_after, time.monotonic() - t1))

    def test_fleet_view_can_be_turned_off(self):
        a = self.replica("off-a", FLEET_VIEW=0)
        b = self.replica("off-b", FLEET_VIEW=0)
        time.sleep(1.5)
        for g in (a, b):
            reps = g.get("/api/v1/replicas")[2]
            self.assertEqual([r["consumer"] for r in reps], [g.consumer_name])
        self.assertEqual(self.r.command("EXISTS", "frame-buffer:frame-buffer-group:replica:off-a"),
                         0)

    # ------------------------------------------------------ heartbeats, events
    def test_http_heartbeat_counts_on_every_replica_without_nats(self):
        env = {"HEARTBEAT_TIMEOUT_MS": 1500}
        a = self.replica("hb-a", **env)
        b = self.replica("hb-b", **env)
        self.assertStatus(a.register("hb-1", ["person"], heartbeat_interval_ms=400), 201)
        wait_for(lambda: b.get(P + "/hb-1")[0] == 200, 2, what="b to know hb-1")
        m0 = metric(scrape(b), "frame_buffer_heartbeats_total")
        t0 = time.monotonic()
        self.assertStatus(a.post(P + "/heartbeat", {"processor_id": "hb-1", "status": "healthy"}),
                          200)
        wait_for(lambda: b.get(P + "/hb-1")[2]["last_heartbeat"], 1.0, interval=0.02,
                 what="replica b to count an HTTP heartbeat sent to replica a")
        reached = time.monotonic() - t0
        statuses = collections.defaultdict(set)
        beats = 1
        t_end = time.monotonic() + 2.5
        while time.monotonic() < t_end:
            self.assertStatus(a.post(P + "/heartbeat", {"processor_id": "hb-1"}), 200)
            beats += 1
            for g in (a, b):
                statuses[g.consumer_name].add(g.get(P + "/hb-1")[2]["status"])
            time.sleep(0.15)
        self.assertEqual(dict(statuses), {"hb-a": {"healthy"}, "hb-b": {"healthy"}},
                         "heartbeats through a kept hb-1 healthy on both for longer than the "
                         "timeout")
        wait_for(lambda: metric(scrape(b), "frame_buffer_heartbeats_total") - m0 == beats, 1.0,
                 what="b to count each of the %d heartbeats once" % beats)
        time.sleep(0.3)
        self.assertEqual(metric(scrape(b), "frame_buffer_heartbeats_total") - m0, beats)
        print("\nan HTTP heartbeat to replica a counted on replica b after %.3fs" % reached)

    def test_events_appear_once_on_every_replica_and_on_nats(self):
        nats = self.start_nats()
        nc = Nats(nats.port)
        self.addCleanup(nc.close)
        sub = nc.subscribe("processors.events")
        nc.flush()
        env = {"HEARTBEAT_TIMEOUT_MS": 1500, "NATS_URL": nats.url}
        a = self.replica("ev-a", **env)
        b = self.replica("ev-b", **env)
        self.assertStatus(a.register("ev-1", ["person"], heartbeat_interval_ms=300,
                                     headers={"X-Request-ID": "ev-reg"}), 201)
        # No heartbeat: both replicas see ev-1 die (by way of stale, mostly).
        for g in (a, b):
            wait_for(lambda: g.get(P + "/ev-1")[2]["status"] == "dead", 5,
                     what="ev-1 dead on %s" % g.consumer_name)
        # Heartbeats over NATS revive it on both, and keep it alive.
        stop = threading.Event()

        def beat():
            while not stop.is_set():
                nc.publish("processors.heartbeat.ev-1", dumps({"processor_id": "ev-1",
                                                               "status": "ok"}))
                stop.wait(0.1)
        t = threading.Thread(target=beat)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(stop.set)
        for g in (a, b):
            wait_for(lambda: g.get(P + "/ev-1")[2]["status"] == "healthy", 3,
                     what="ev-1 healthy again on %s" % g.consumer_name)
        time.sleep(0.5)  # every announcement has travelled

        def about(g):
            return [(e["event"], e["status"]) for e in self.events(g, processor_id="ev-1")]
        seen = {g.consumer_name: about(g) for g in (a, b)}
        on_nats = [(m.json()["event"], m.json()["status"]) for m in sub.drain(0.2)
                   if m.json()["processor_id"] == "ev-1"]
        # One story, told once: the same on both dashboards and on NATS.
        self.assertEqual(seen["ev-a"], seen["ev-b"], "the replicas' event logs differ")
        self.assertEqual(on_nats, seen["ev-a"], "processors.events against the dashboards")
        story = seen["ev-a"]
        self.assertEqual(story[0], ("register", "healthy"), story)
        self.assertEqual(story[-1], ("health", "healthy"), story)
        self.assertEqual(story.count(("health", "dead")), 1, story)
        self.assertTrue(all(x != y for x, y in zip(story, story[1:])),
                        "an event told twice: %s" % story)
        reg = self.events(b, processor_id="ev-1", event="register")[0]
        self.assertEqual((reg["replica"], reg["request_id"]), ("ev-a", "ev-reg"))


if __name__ == "__main__":
    unittest.main()
