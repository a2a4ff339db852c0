"""Where did frame X go (README: Debugging the pipeline): GET
/api/v1/frames/{frame_id} finds a delivered, a DLQ'd and a dropped frame with
the right processor or reason, on the replica that routed it and on the
other one; an unknown frame gets 404 saying how far back the window goes;
FRAME_TRACE=0 turns the trace off."""
import time
import unittest

from harness import IntegrationTest, add_frames, wait_for

INPUT = "frames:metadata"


class FrameLookupTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)

    def lookup(self, gw, frame_id):
        status, _, doc = gw.get("/api/v1/frames/" + frame_id)
        return status, doc

    def test_delivered_dlq_and_dropped_frames_are_found_on_both_replicas(self):
        a = self.start_gateway(self.redis, consumer_name="replica-a")
        b = self.start_gateway(self.redis, consumer_name="replica-b")
        self.assertStatus(a.register("tr-p1", ["person"]), 201)
        self.assertStatus(a.register("tr-p2", ["face"]), 201)
        # tr-p2's stream becomes a plain key: its frames' writes fail (dropped).
        wait_for(lambda: b.get("/api/v1/processors/tr-p2")[0] == 200, 5, what="tr-p2 on b")
        self.r.command("DEL", "frames:ready:tr-p2")
        self.r.command("SET", "frames:ready:tr-p2", "not a stream")
        # Both replicas must be in each other's fleet view before asking.
        wait_for(lambda: len(a.get("/api/v1/replicas")[2]) == 2, 10,
                 what="two replicas in the fleet view")
        t0 = int(time.time() * 1000)
        frames = []
        for i in range(40):
            kind = ("person", "car", "face")[i % 3]
            frames.append({"frame_id": "tr-%s-%02d" % (kind, i), "camera_id": "cam-%d" % (i % 4),
                           "detection_type": kind, "timestamp": "1735689600"})
        ids = add_frames(self.r, frames)
        wait_for(lambda: self.r.command("XLEN", "frames:ready:tr-p1") >= 14, 10,
                 what="person frames delivered")
        routed_by = set()
        for f, source_id in zip(frames, ids):
            answers = []
            for gw in (a, b):
                status, doc = self.lookup(gw, f["frame_id"])
                self.assertEqual(status, 200, "%s on %s: %s" % (f["frame_id"], gw.consumer_name, doc))
                answers.append(doc)
            self.assertEqual(answers[0], answers[1], "both replicas answer alike")
            doc = answers[0]
            routed_by.add(doc["replica"])
            self.assertIn(doc["replica"], ("replica-a", "replica-b"))
            self.assertEqual(doc["frame_id"], f["frame_id"])
            self.assertEqual(doc["camera_id"], f["camera_id"])
            self.assertEqual(doc["source_id"], source_id)
            self.assertEqual(doc["strategy"], "least_loaded")
            self.assertGreaterEqual(doc["routed_at_ms"], t0 - 1000)
            self.assertGreaterEqual(doc["latency_ms"], 0)
            kind = f["detection_type"]
            if kind == "person":
                self.assertEqual(doc["outcome"], "delivered", doc)
                self.assertEqual(doc["processor_id"], "tr-p1")
                self.assertEqual(doc["transport"], "redis")
                self.assertEqual(doc["target"], "frames:ready:tr-p1")
                self.assertIsNone(doc["reason"])
            elif kind == "car":
                self.assertEqual(doc["outcome"], "dlq", doc)
                self.assertEqual(doc["reason"], "no_processor")
                self.assertIsNone(doc["processor_id"])
            else:
                self.assertEqual(doc["outcome"], "dropped", doc)
                self.assertEqual(doc["reason"], "write_failed")
                self.assertEqual(doc["processor_id"], "tr-p2")
        # Each replica answered for frames the other routed (both took some).
        self.assertEqual(routed_by, {"replica-a", "replica-b"},
                         "the two replicas shared the input group")

    def test_unknown_frame_is_404_with_the_window(self):
        a = self.start_gateway(self.redis, consumer_name="replica-a")
        b = self.start_gateway(self.redis, consumer_name="replica-b")
        wait_for(lambda: len(a.get("/api/v1/replicas")[2]) == 2, 10,
                 what="two replicas in the fleet view")
        add_frames(self.r, [{"frame_id": "known-1", "detection_type": "x"}])
        wait_for(lambda: self.lookup(a, "known-1")[0] == 200, 5, what="known-1 traced")
        status, doc = self.lookup(a, "never-seen")
        self.assertEqual(status, 404, doc)
        self.assertIn("remembers the last", doc["detail"])
        self.assertIn("1 of 1 other replicas answered", doc["detail"])
        b.stop()

    def test_frame_trace_off(self):
        a = self.start_gateway(self.redis, consumer_name="solo", env={"FRAME_TRACE": "0"})
        add_frames(self.r, [{"frame_id": "off-1", "detection_type": "x"}])
        wait_for(lambda: self.r.command("XLEN", "frames:dlq") == 1, 5, what="off-1 to the DLQ")
        status, doc = self.lookup(a, "off-1")
        self.assertEqual(status, 404, doc)
        self.assertIn("FRAME_TRACE=0", doc["detail"])


if __name__ == "__main__":
    unittest.main()
