"""Shadow routing (README: Shadow routing): a copy of real traffic for a
candidate processor. A 100% shadow gets one copy of every matching frame
while the primary gets every frame; a 50% camera-sampled shadow gets whole
cameras, about half of them; a full or dead target costs the primary
nothing (its copies are dropped and counted); shadows reach every replica
within a second; results of a shadow processor carry the shadow's name;
bad input gets 422 or 404 with a detail."""
import collections
import subprocess
import unittest

import harness
from harness import IntegrationTest, add_frames, metric, scrape, wait_for, xrange_all
from natsc import Nats

P = "/api/v1/processors"
S = "/api/v1/shadows/"


def ready(pid):
    return "frames:ready:" + pid


def fields(entry):
    return entry[1]


class ShadowsTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)

    def frames(self, n, cameras, kind="person", prefix="sf"):
        return [{"frame_id": "%s-%05d" % (prefix, i), "camera_id": "cam-%02d" % (i % cameras),
                 "detection_type": kind, "timestamp": "1735689600"} for i in range(n)]

    def copies(self, gw, name, outcome):
        """frame_buffer_shadow_frames_total of one shadow; 0 before its first copy."""
        try:
            return metric(scrape(gw), "frame_buffer_shadow_frames_total", shadow=name,
                          outcome=outcome)
        except AssertionError:
            return 0

    def test_full_shadow_copies_every_matching_frame_and_the_primary_gets_all(self):
        gw = self.start_gateway(self.redis)
        self.assertStatus(gw.register("prim", ["person", "car"], max_queue=100000), 201)
        # A candidate registered only for shadows: no frame carries its capability.
        self.assertStatus(gw.register("cand", ["shadow-only"], max_queue=100000), 201)
        status, _, doc = gw.put(S + "v2", {"match": {"detection_type": "person",
                                                      "camera_id": "cam-0*"},
                                           "target": "cand", "percent": 100})
        self.assertEqual(status, 201, doc)
        self.assertEqual(doc["sample"], "camera")
        frames = self.frames(300, 20) + self.frames(50, 5, kind="car", prefix="sc")
        add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", ready("prim")) == len(frames), 10,
                 what="every frame to the primary")
        want = sorted(f["frame_id"] for f in frames
                      if f["detection_type"] == "person" and f["camera_id"].startswith("cam-0"))
        wait_for(lambda: self.r.command("XLEN", ready("cand")) == len(want), 10,
                 what="one copy of each matching frame")
        got = [fields(e) for e in xrange_all(self.r, ready("cand"))]
        self.assertEqual(sorted(g["frame_id"] for g in got), want, "each matching frame once")
        for g in got:
            self.assertEqual(g["shadow"], "v2")
            self.assertEqual(g["shadow_of"], "prim")
        prim = [fields(e) for e in xrange_all(self.r, ready("prim"))]
        self.assertFalse(any("shadow" in p for p in prim), "the primary's frames are unchanged")
        self.assertEqual(self.copies(gw, "v2", "sent"), len(want))
        self.assertEqual(self.r.command("XLEN", "frames:dlq"), 0)
        status, _, doc = gw.get("/api/v1/shadows")
        self.assertEqual(doc["shadows"][0]["copies"]["sent"], len(want))

    def test_camera_sampling_takes_whole_cameras_about_half(self):
        gw = self.start_gateway(self.redis)
        self.assertStatus(gw.register("prim", ["person"], max_queue=100000), 201)
        self.assertStatus(gw.register("cand", ["shadow-only"], max_queue=100000), 201)
        self.assertStatus(gw.put(S + "half", {"target": "cand", "percent": 50}), 201)
        cameras = 60
        frames = self.frames(cameras * 20, cameras)
        add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", ready("prim")) == len(frames), 10,
                 what="every frame to the primary")
        per_camera = collections.Counter(f["camera_id"] for f in frames)
        wait_for(lambda: self.copies(gw, "half", "sent") > 0, 5, what="copies")
        wait_for(lambda: self.r.command("XLEN", ready("cand")) == self.copies(gw, "half", "sent"),
                 5, what="copies written")
        got = collections.Counter(fields(e)["camera_id"] for e in xrange_all(self.r, ready("cand")))
        for cam, n in got.items():
            self.assertEqual(n, per_camera[cam], "camera %s copied whole" % cam)
        self.assertGreater(len(got), cameras * 0.25, "about half the cameras")
        self.assertLess(len(got), cameras * 0.75, "about half the cameras")

    def test_full_or_dead_target_costs_the_primary_nothing(self):
        gw = self.start_gateway(self.redis)
        self.assertStatus(gw.register("prim", ["person"], max_queue=100000), 201)
        # Nobody reads cand's stream: it is full after 20 copies.
        self.assertStatus(gw.register("cand", ["shadow-only"], max_queue=20), 201)
        self.assertStatus(gw.register("gone", ["shadow-only"]), 201)
        self.assertStatus(gw.put(S + "full", {"target": "cand", "percent": 100}), 201)
        self.assertStatus(gw.put(S + "dead", {"target": "gone", "percent": 100}), 201)
        self.assertStatus(gw.delete(P + "/gone?purge=true"), 204)
        frames = self.frames(2000, 10)
        add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", ready("prim")) == len(frames), 15,
                 what="every frame to the primary")
        wait_for(lambda: self.copies(gw, "dead", "target_dead") == len(frames), 5,
                 what="every copy for the removed target dropped")
        full = self.copies(gw, "full", "target_full")
        sent = self.copies(gw, "full", "sent")
        self.assertEqual(full + sent, len(frames), "every copy sent or dropped as full")
        self.assertGreater(full, 0, "the full target's copies are dropped")
        self.assertEqual(self.r.command("XLEN", "frames:dlq"), 0, "no copy goes to the DLQ")
        self.assertEqual(self.r.command("EXISTS", ready("gone")), 0, "no copy for a removed target")

    def test_shadows_reach_the_other_replica_within_a_second(self):
        a = self.start_gateway(self.redis, consumer_name="replica-a")
        b = self.start_gateway(self.redis, consumer_name="replica-b")
        self.assertStatus(a.register("prim", ["person"], max_queue=100000), 201)
        self.assertStatus(a.register("cand", ["shadow-only"], max_queue=100000), 201)
        wait_for(lambda: b.get(P + "/cand")[0] == 200, 5, what="cand on b")
        self.assertStatus(a.put(S + "fleet", {"target": "cand"}), 201)
        wait_for(lambda: len(b.get("/api/v1/shadows")[2]["shadows"]) == 1, 1.0,
                 what="the shadow on replica b")
        frames = self.frames(2000, 8)
        add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", ready("cand")) == len(frames), 10,
                 what="a copy of every frame, whichever replica routed it")
        self.assertGreater(self.copies(a, "fleet", "sent"), 0)
        self.assertGreater(self.copies(b, "fleet", "sent"), 0)
        self.assertStatus(b.delete(S + "fleet"), 204)
        wait_for(lambda: a.get("/api/v1/shadows")[2]["shadows"] == [], 1.0,
                 what="the removal on replica a")

    def test_results_of_a_shadow_processor_carry_the_shadow(self):
        gw = self.start_gateway(self.redis)
        self.assertStatus(gw.register("prim", ["person"], max_queue=100000), 201)
        proc = subprocess.Popen(
            [harness.fb_binary("fb-processor"), "--id", "cand", "--capabilities", "shadow-only",
             "--api", gw.base, "--redis-url", self.redis.url, "--quiet", "--heartbeat-ms", "1000",
             "--result-stream", "results:cand"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))
        wait_for(lambda: gw.get(P + "/cand")[0] == 200, 10, what="cand registered")
        self.assertStatus(gw.put(S + "v2", {"target": "cand"}), 201)
        add_frames(self.r, self.frames(50, 5))
        wait_for(lambda: self.r.command("XLEN", "results:cand") == 50, 10, what="50 results")
        for e in xrange_all(self.r, "results:cand"):
            f = fields(e)
            self.assertEqual(f["shadow"], "v2")
            self.assertEqual(f["shadow_of"], "prim")

    def test_copies_to_a_nats_target_on_core_nats_and_jetstream(self):
        for jetstream in (False, True):
            with self.subTest(jetstream=jetstream):
                nats = self.start_nats(jetstream=jetstream)
                env = {"NATS_URL": nats.url, "NATS_JETSTREAM": "1" if jetstream else "0"}
                gw = self.start_gateway(self.redis, consumer_name="js" if jetstream else "core",
                                        env=env)
                nc = Nats(nats.port)
                self.addCleanup(nc.close)
                prim, cand = "prim-%d" % jetstream, "cand-%d" % jetstream
                self.assertStatus(gw.register(prim, ["k%d" % jetstream], transport="nats"), 201)
                self.assertStatus(gw.register(cand, ["shadow-only"], transport="nats"), 201)
                self.assertStatus(gw.put(S + "n%d" % jetstream, {"target": cand}), 201)
                frames = self.frames(200, 4, kind="k%d" % jetstream, prefix="n%d" % jetstream)
                if jetstream:
                    # Both go into stream FRAMES: the copy must not be taken for
                    # a duplicate of its frame (same frame_id).
                    add_frames(self.r, frames)
                    wait_for(lambda: self.copies(gw, "n1", "sent") == len(frames), 10,
                             what="every copy published")
                    info = nc.request("$JS.API.STREAM.INFO.FRAMES", b"", timeout=5).json()
                    self.assertEqual(info["state"]["messages"], 2 * len(frames),
                                     "frames and their copies both stored")
                    gw.stop()
                    continue
                sub = nc.subscribe("frames.ready." + cand)
                nc.flush()
                add_frames(self.r, frames)
                wait_for(lambda: self.copies(gw, "n0", "sent") == len(frames), 10,
                         what="every copy published")
                got = sub.drain(wait=0.5)
                self.assertEqual(sorted(m.json()["frame_id"] for m in got),
                                 sorted(f["frame_id"] for f in frames))
                for m in got:
                    self.assertEqual(m.json()["shadow"], "n0")
                    self.assertEqual(m.json()["shadow_of"], prim)
                    self.assertEqual(m.headers.get("Nats-Msg-Id"),
                                     m.json()["frame_id"] + ":shadow:n0")
                self.assertStatus(gw.delete(S + "n0"), 204)
                gw.stop()  # the next gateway reads the same input alone

    def test_bad_input(self):
        gw = self.start_gateway(self.redis, env={"API_TOKEN": "s3cret"})
        auth = {"Authorization": "Bearer s3cret"}
        self.assertStatus(gw.register("cand", ["x"], headers=auth), 201)
        cases = [
            ({"target": "nobody"}, "not a registered processor"),
            ({"target": "cand", "percent": 101}, "percent"),
            ({"target": "cand", "percent": -1}, "percent"),
            ({"target": "cand", "percent": "10"}, "percent"),
            ({"target": "cand", "match": {"camera_id": "cam-["}}, "not a valid glob"),
            ({"target": "cand", "match": {"camera": "x"}}, "unknown field match.camera"),
            ({"target": "cand", "sample": "pixel"}, "sample"),
            ({"target": "cand", "mirror": True}, "unknown field mirror"),
            ({}, "target"),
        ]
        for body, words in cases:
            status, _, doc = gw.put(S + "s1", body, headers=auth)
            self.assertEqual(status, 422, (body, doc))
            self.assertIn(words, doc["detail"], body)
        status, _, doc = gw.put(S + "bad*name", {"target": "cand"}, headers=auth)
        self.assertEqual(status, 422, doc)
        status, _, doc = gw.delete(S + "nope", headers=auth)
        self.assertEqual(status, 404, doc)
        self.assertIn("no shadow named", doc["detail"])
        status, _, doc = gw.put(S + "s1", {"target": "cand"})
        self.assertEqual(status, 401, doc)
        self.assertStatus(gw.put(S + "s1", {"target": "cand"}, headers=auth), 201)
        self.assertStatus(gw.put(S + "s1", {"target": "cand", "percent": 5}, headers=auth), 200)


if __name__ == "__main__":
    unittest.main()
