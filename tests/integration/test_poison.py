"""README: Delivery guarantees: entries delivered more than MAX_DELIVERIES times go to the DLQ
as poison, whether the gateway finds them among its own pending entries at
start or claims them from a dead consumer."""
import re
import time
import unittest

from harness import (IntegrationTest, add_frames, wait_no_pending, wait_stream_total,
                     xrange_all)

INPUT = "frames:metadata"
GROUP = "frame-buffer-group"
DLQ = "frames:dlq"
TARGET = "frames:ready:poison-p1"
CONSUMER = "poison-test"


def frame(fid):
    return {"frame_id": fid, "camera_id": "cam-1", "timestamp": "1735689600"}


class PoisonTest(IntegrationTest):

    def prepare(self, env):
        """Registers a processor through a gateway that is then stopped; the
        input group exists from then on."""
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        gw = self.start_gateway(self.redis, consumer_name=CONSUMER, env=env)
        self.assertStatus(gw.register("poison-p1", ["person"]), 201)
        self.assertEqual(gw.stop(), 0)
        return gw

    def read_as(self, consumer, start, count=100):
        return self.r.command("XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count,
                              "STREAMS", INPUT, start)

    def deliveries(self, entry_id):
        rep = self.r.command("XPENDING", INPUT, GROUP, entry_id, entry_id, 1)
        return rep[0][3] if rep else 0

    def check(self, poison_ids, good_frame_ids, timeout):
        wait_stream_total(self.r, [DLQ, TARGET], len(poison_ids) + len(good_frame_ids), timeout)
        time.sleep(0.3)
        dlq = {f.get("dlq_source_id"): f for _, f in xrange_all(self.r, DLQ)}
        for src, fid in poison_ids.items():
            self.assertIn(src, dlq, "poison entry %s (%s) is not in the DLQ; DLQ: %s; %s: %s"
                          % (src, fid, list(dlq.values()), TARGET,
                             [f["frame_id"] for _, f in xrange_all(self.r, TARGET)]))
            self.assertEqual(dlq[src].get("dlq_reason"), "poison", dlq[src])
            self.assertEqual(dlq[src].get("frame_id"), fid)
            self.assertRegex(dlq[src].get("dlq_at", ""), re.compile(r"^\d{4}-\d{2}-\d{2}T"))
        self.assertEqual(len(dlq), len(poison_ids), "unexpected DLQ entries: %s" % dlq)
        delivered = sorted(f["frame_id"] for _, f in xrange_all(self.r, TARGET))
        self.assertEqual(delivered, sorted(good_frame_ids),
                         "frames that are not poison must be delivered, once")
        left = wait_no_pending(self.r)
        self.assertIsNone(left, "entries left pending: %r" % (left,))

    def test_own_pending_entry_over_max_deliveries_is_poison(self):
        gw = self.prepare({"MAX_DELIVERIES": "2"})
        # The poison entry: read by this very consumer name three times, as
        # if the gateway had crashed on it over and over.
        (p,) = add_frames(self.r, [frame("poison-1")])
        self.read_as(CONSUMER, ">")
        self.read_as(CONSUMER, "0")
        self.read_as(CONSUMER, "0")
        self.assertEqual(self.deliveries(p), 3, "precondition: delivery count of the entry")
        # A healthy pending entry read once, and one nobody read yet.
        (q,) = add_frames(self.r, [frame("pending-once")])
        self.read_as(CONSUMER, ">")
        self.assertEqual(self.deliveries(q), 1)
        add_frames(self.r, [frame("fresh")])

        gw.start()
        add_frames(self.r, [frame("after-start")])
        self.check({p: "poison-1"}, ["pending-once", "fresh", "after-start"], 15)

    def test_claimed_entry_over_max_deliveries_is_poison(self):
        gw = self.prepare({"MAX_DELIVERIES": "2", "CLAIM_IDLE_MS": "500"})
        (p,) = add_frames(self.r, [frame("ghost-poison")])
        for start in (">", "0", "0", "0"):
            self.read_as("ghost", start)
        self.assertEqual(self.deliveries(p), 4, "precondition: delivery count of the entry")
        (q,) = add_frames(self.r, [frame("ghost-once")])
        self.read_as("ghost", ">")
        add_frames(self.r, [frame("fresh")])

        gw.start()
        # the first claim pass comes a few seconds after start
        self.check({p: "ghost-poison"}, ["ghost-once", "fresh"], 30)


if __name__ == "__main__":
    unittest.main()
