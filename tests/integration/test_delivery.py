"""README: Delivery guarantees and Routing: what processors receive, capability routing, round
robin, the DLQ for malformed and unroutable frames, registrations across a
gateway restart."""
import re
import time
import unittest

from harness import (IntegrationTest, add_frames, dumps, pending_count, stream_lengths,
                     wait_no_pending, wait_stream_total, xrange_all)

DLQ = "frames:dlq"
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")


def ready(pid):
    return "frames:ready:" + pid


def frame(fid, **fields):
    f = {"frame_id": fid, "camera_id": "cam-1", "timestamp": "2025-01-01T00:00:00.000Z"}
    f.update(fields)
    return f


class DeliveryTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        self.gw = self.start_gateway(self.redis, consumer_name="delivery-test")

    def register(self, pid, caps, **extra):
        resp = self.gw.register(pid, caps, **extra)
        self.assertStatus(resp, 201, "registering " + pid)

    def by_frame_id(self, key):
        return {f["frame_id"]: (eid, f) for eid, f in xrange_all(self.r, key)}

    def assertNothingPending(self):
        left = wait_no_pending(self.r)
        self.assertIsNone(left, "entries left pending in the input group: %r" % (left,))

    # ----------------------------------------------------------- fields
    def test_frames_arrive_with_exactly_the_spec_fields(self):
        self.register("p1", ["person"])
        minimal = frame("f-min", detection_type="person")
        full = {
            "frame_id": "f-full", "camera_id": "cam-\u00e9t\u00e9", "timestamp": "1735689600.25",
            "size_bytes": "12345", "width": "640", "height": "480", "format": "png",
            "trace_context": dumps({"trace_id": "t" * 32, "span_id": "s" * 16}),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "metadata": dumps({"detection_type": "person", "zone": "z-1", "n": [1, 2]}),
            "priority": "7", "storage_path": "/data/f-full.jpg", "storage_backend": "s3",
            "custom_field": "kept as it is", "empty_field": "",
        }
        partial = frame("f-part", detection_type="person", priority="-3",
                        storage_backend="minio")
        add_frames(self.r, [minimal, full, partial])
        wait_stream_total(self.r, [ready("p1"), DLQ], 3, 10)
        got = self.by_frame_id(ready("p1"))
        self.assertEqual(sorted(got), ["f-full", "f-min", "f-part"],
                         "DLQ: %s" % xrange_all(self.r, DLQ))

        want = dict(minimal, priority="0", storage_path="", storage_backend="redis")
        self.assertEqual(got["f-min"][1], want, "fields of a minimal frame")
        self.assertEqual(got["f-full"][1], full, "a frame with every field must arrive untouched")
        want = dict(partial, storage_path="")
        self.assertEqual(got["f-part"][1], want, "present fields kept, absent ones added")
        self.assertNothingPending()

    # ----------------------------------------------------------- routing
    def test_capability_routing(self):
        self.register("p-person", ["person"])
        self.register("p-vehicle", ["vehicle", "truck"])
        frames = [
            frame("top-person", detection_type="person",
                  metadata=dumps({"detection_type": "vehicle"})),
            frame("meta-vehicle", metadata=dumps({"detection_type": "vehicle"})),
            frame("top-vehicle", detection_type="vehicle",
                  metadata=dumps({"detection_type": "person"})),
            frame("top-truck", detection_type="truck"),
            frame("meta-person", metadata=dumps({"zone": "a", "detection_type": "person"})),
        ] + [frame("any-%d" % i) for i in range(20)] + [
            frame("meta-no-type-%d" % i, metadata=dumps({"zone": "b"})) for i in range(4)]
        add_frames(self.r, frames)
        keys = [ready("p-person"), ready("p-vehicle"), DLQ]
        wait_stream_total(self.r, keys, len(frames), 10)
        time.sleep(0.3)  # anything extra would show up now
        person = self.by_frame_id(ready("p-person"))
        vehicle = self.by_frame_id(ready("p-vehicle"))
        dlq = xrange_all(self.r, DLQ)
        self.assertEqual(dlq, [], "frames went to the DLQ")
        self.assertEqual(len(person) + len(vehicle), len(frames),
                         "frames duplicated or lost: %s" % stream_lengths(self.r, keys))
        self.assertFalse(set(person) & set(vehicle), "frames delivered twice")
        for fid in ("top-person", "meta-person"):
            self.assertIn(fid, person, "%s not routed to the person processor" % fid)
        for fid in ("meta-vehicle", "top-vehicle", "top-truck"):
            self.assertIn(fid, vehicle, "%s not routed to the vehicle processor" % fid)
        anywhere = [f["frame_id"] for f in frames if f["frame_id"].startswith(("any-", "meta-no"))]
        for fid in anywhere:
            self.assertTrue(fid in person or fid in vehicle, fid)
        self.assertNothingPending()

    def test_round_robin_spreads_evenly(self):
        for i in range(3):
            self.register("rr-%d" % i, ["person"])
        self.register("rr-other", ["vehicle"])
        status, _, doc = self.gw.put("/api/v1/routing", {"strategy": "round_robin"})
        self.assertEqual(status, 200, doc)
        n = 300
        add_frames(self.r, [frame("rr-f-%d" % i, detection_type="person") for i in range(n)])
        keys = [ready("rr-%d" % i) for i in range(3)]
        wait_stream_total(self.r, keys + [DLQ], n, 15)
        time.sleep(0.3)
        lens = stream_lengths(self.r, keys + [ready("rr-other"), DLQ])
        self.assertEqual(lens[ready("rr-other")], 0, "person frames reached a vehicle processor")
        self.assertEqual(lens[DLQ], 0)
        counts = [lens[k] for k in keys]
        self.assertEqual(sum(counts), n)
        self.assertLessEqual(max(counts) - min(counts), 1,
                             "round robin did not spread evenly: %s" % lens)
        # in turn: consecutive frames of the input go to different processors
        where = {}
        for k in keys:
            for _, f in xrange_all(self.r, k):
                where[f["frame_id"]] = k
        seq = [where["rr-f-%d" % i] for i in range(n)]
        repeats = sum(1 for a, b in zip(seq, seq[1:]) if a == b)
        self.assertEqual(repeats, 0, "round robin sent consecutive frames to the same processor "
                         "%d times" % repeats)
        self.assertNothingPending()

    # ----------------------------------------------------------- DLQ
    def test_malformed_entries_go_to_dlq_and_the_rest_flows(self):
        self.register("p1", ["person"])
        big = "x" * (65 * 1024)
        bad = [
            ("no frame_id", {"camera_id": "cam-1", "detection_type": "person"}),
            ("empty frame_id", {"frame_id": "", "camera_id": "cam-1"}),
            ("metadata not JSON", frame("bad-meta-1", metadata="not json")),
            ("metadata an array", frame("bad-meta-2", metadata="[1,2]")),
            ("metadata a string", frame("bad-meta-3", metadata='"person"')),
            ("trace_context not JSON", frame("bad-trace-1", trace_context="nope")),
            ("trace_context an array", frame("bad-trace-2", trace_context="[]")),
            ("metadata.detection_type a number",
             frame("bad-dt", metadata=dumps({"detection_type": 5}))),
            ("entry over 64 KiB", frame("bad-big", detection_type="person", blob=big)),
        ]
        entries, kinds = [], {}
        for i, (kind, f) in enumerate(bad):
            entries.append(f)
            entries.append(frame("good-%d" % i, detection_type="person"))
        entries.append(frame("good-under-limit", detection_type="person", blob="y" * 60000))
        ids = add_frames(self.r, entries)
        for i, (kind, f) in enumerate(bad):
            kinds[ids[2 * i]] = (kind, f)
        n_good = len(entries) - len(bad)
        wait_stream_total(self.r, [ready("p1"), DLQ], len(entries), 15)
        time.sleep(0.3)

        delivered = self.by_frame_id(ready("p1"))
        self.assertEqual(sorted(delivered),
                         sorted(["good-%d" % i for i in range(len(bad))] + ["good-under-limit"]),
                         "the good frames around malformed ones must all be delivered, only them")
        self.assertEqual(len(xrange_all(self.r, ready("p1"))), n_good, "duplicates")
        dlq = xrange_all(self.r, DLQ)
        by_source = {f.get("dlq_source_id"): f for _, f in dlq}
        self.assertEqual(len(dlq), len(bad), "DLQ holds %d entries for %d malformed ones: %s"
                         % (len(dlq), len(bad), [f.get("dlq_source_id") for _, f in dlq]))
        for src, (kind, original) in kinds.items():
            with self.subTest(kind):
                self.assertIn(src, by_source, "%s (entry %s) is not in the DLQ" % (kind, src))
                got = by_source[src]
                self.assertEqual(got.get("dlq_reason"), "malformed", kind)
                self.assertRegex(got.get("dlq_at", ""), ISO_RE, "dlq_at of " + kind)
                for k, v in original.items():
                    self.assertEqual(got.get(k), v, "%s: field %s not kept in the DLQ" % (kind, k))
        self.assertNothingPending()

    def test_no_matching_processor_goes_to_dlq(self):
        # nobody registered at all
        ids = add_frames(self.r, [frame("lonely-1", detection_type="person"), frame("lonely-2")])
        wait_stream_total(self.r, [DLQ], 2, 10)
        self.register("p-vehicle", ["vehicle"])
        ids += add_frames(self.r, [frame("nobody-does-faces", detection_type="face"),
                                   frame("vehicle-ok", detection_type="vehicle")])
        wait_stream_total(self.r, [DLQ, ready("p-vehicle")], 4, 10)
        time.sleep(0.3)
        dlq = {f["frame_id"]: f for _, f in xrange_all(self.r, DLQ)}
        self.assertEqual(sorted(dlq), ["lonely-1", "lonely-2", "nobody-does-faces"])
        for fid, src in (("lonely-1", ids[0]), ("lonely-2", ids[1]),
                         ("nobody-does-faces", ids[2])):
            self.assertEqual(dlq[fid]["dlq_reason"], "no_processor", fid)
            self.assertEqual(dlq[fid]["dlq_source_id"], src, fid)
            self.assertRegex(dlq[fid]["dlq_at"], ISO_RE)
        self.assertEqual(list(self.by_frame_id(ready("p-vehicle"))), ["vehicle-ok"])
        self.assertNothingPending()

    # ----------------------------------------------------------- restart
    def test_null_sink_acks_and_counts_without_writing(self):
        """transport "null": frames are counted and acked, and go nowhere
        (the sink benchmarks use); other processors are unaffected."""
        from harness import metric, scrape, wait_for
        self.register("void-1", ["person"], transport="null")
        self.register("real-1", ["face"])
        doc = self.gw.get("/api/v1/processors/void-1")[2]
        self.assertEqual(doc["transport"], "null")
        add_frames(self.r, [frame("v-%d" % i, detection_type="person") for i in range(500)] +
                   [frame("f-%d" % i, detection_type="face") for i in range(100)])
        wait_for(lambda: self.r.command("XLEN", ready("real-1")) == 100, 10,
                 what="the face frames in their stream")
        self.assertNothingPending()
        m = scrape(self.gw)
        self.assertEqual(metric(m, "frame_buffer_frames_distributed_total", processor_id="void-1",
                                transport="null"), 500)
        self.assertEqual(self.r.command("EXISTS", ready("void-1")), 0,
                         "a null processor has no stream")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        bad = self.gw.register("void-2", ["person"], transport="grpc")
        self.assertDetail(bad, 422, "an unknown transport")
        self.assertIn('"redis", "nats" or "null"', bad[2]["detail"])

    def test_registrations_survive_gateway_restart(self):
        self.register("keep-a", ["person"], capacity=3, weight=2)
        self.register("keep-b", ["vehicle"], queue="custom:keep-b")
        before = {p["id"]: p for p in self.gw.get("/api/v1/processors/")[2]}
        add_frames(self.r, [frame("before-%d" % i, detection_type="person") for i in range(5)])
        wait_stream_total(self.r, [ready("keep-a")], 5, 10)

        self.assertEqual(self.gw.stop(), 0, "the gateway did not exit 0 on SIGTERM")
        # frames written while it is down wait for it
        add_frames(self.r, [frame("down-%d" % i, detection_type="vehicle") for i in range(5)])
        self.gw.start()
        status, _, doc = self.gw.get("/api/v1/processors/")
        self.assertEqual(status, 200)
        after = {p["id"]: p for p in doc}
        self.assertEqual(sorted(after), ["keep-a", "keep-b"])
        for pid in after:
            for k in ("capabilities", "capacity", "queue", "weight", "transport", "max_queue"):
                self.assertEqual(after[pid][k], before[pid][k], "%s.%s after restart" % (pid, k))
        self.assertStatus(self.gw.get("/api/v1/processors/keep-b"), 200)

        add_frames(self.r, [frame("after-%d" % i, detection_type="person") for i in range(5)])
        wait_stream_total(self.r, [ready("keep-a"), "custom:keep-b", DLQ], 15, 10)
        time.sleep(0.3)
        self.assertEqual(sorted(self.by_frame_id(ready("keep-a"))),
                         sorted(["before-%d" % i for i in range(5)] +
                                ["after-%d" % i for i in range(5)]))
        self.assertEqual(sorted(self.by_frame_id("custom:keep-b")),
                         ["down-%d" % i for i in range(5)])
        self.assertEqual(xrange_all(self.r, DLQ), [])
        self.assertNothingPending()
        self.assertEqual(pending_count(self.r), 0)


if __name__ == "__main__":
    unittest.main()
