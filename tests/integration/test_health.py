"""README: Health, and Remote processors and NATS (heartbeats, processors.events): heartbeats on
NATS and HTTP keep a processor healthy; silence makes it stale, then dead; a
"stopping" heartbeat kills it at once; malformed heartbeats change nothing
and are counted; a dead processor gets no frames and its backlog is moved to
live processors (or the DLQ), every frame accounted for."""
import collections
import datetime
import threading
import time
import unittest

from harness import (IntegrationTest, add_frames, dumps, metric, scrape, wait_for,
                     wait_no_pending, xrange_all)
from natsc import Nats

P = "/api/v1/processors"
DLQ = "frames:dlq"
TIMEOUT_MS = 1500   # HEARTBEAT_TIMEOUT_MS of every gateway here
INTERVAL_MS = 400   # heartbeat_interval_ms of tracked processors: stale after 600 ms
EVENTS = "processors.events"


def ready(pid):
    return "frames:ready:" + pid


def heartbeat(pid, status="ok", **extra):
    doc = {"processor_id": pid, "status": status,
           "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    doc.update(extra)
    return dumps(doc).encode()


def parse_iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


class Beater(threading.Thread):
    """Publishes a heartbeat for `pid` every `period` seconds until stop()."""

    def __init__(self, nc, pid, period=0.15):
        super().__init__(daemon=True)
        self.nc, self.pid, self.period = nc, pid, period
        self.halt = threading.Event()
        self.sent = 0
        self.last_sent = None

    def run(self):
        while not self.halt.is_set():
            self.nc.publish("processors.heartbeat." + self.pid, heartbeat(self.pid))
            self.sent += 1
            self.last_sent = time.monotonic()
            self.halt.wait(self.period)

    def stop(self):
        self.halt.set()
        self.join(5)
        self.nc.flush()
        return self.last_sent


class HealthTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        self.nats = self.start_nats()
        self.nc = self.nats_client()
        self.events = self.nc.subscribe(EVENTS)
        self._seen_events = []
        self.nc.flush()

    def nats_client(self):
        nc = Nats(self.nats.port)
        self.addCleanup(nc.close)
        return nc

    def gateway(self, **env):
        e = {"NATS_URL": self.nats.url, "HEARTBEAT_TIMEOUT_MS": str(TIMEOUT_MS)}
        e.update({k: str(v) for k, v in env.items()})
        return self.start_gateway(self.redis, consumer_name="health-test", env=e)

    def register(self, gw, pid, caps=("person",), interval=INTERVAL_MS, **extra):
        resp = gw.register(pid, caps, heartbeat_interval_ms=interval, **extra)
        self.assertStatus(resp, 201, "registering " + pid)
        return resp[2]

    def proc(self, gw, pid):
        status, _, doc = gw.get(P + "/" + pid)
        self.assertEqual(status, 200, doc)
        return doc

    def status_of(self, gw, pid):
        return self.proc(gw, pid)["status"]

    def wait_status(self, gw, pid, want, timeout):
        wait_for(lambda: self.status_of(gw, pid) == want, timeout, interval=0.02,
                 what="processor %s to be %s (it is %s)" % (pid, want, self.status_of(gw, pid)))
        return time.monotonic()

    def events_for(self, pid, wait=0.0):
        """(event, status) of every processors.events message about `pid` so
        far, checking each message's shape."""
        out = []
        for m in self.events.drain(wait):
            doc = m.json()
            self.assertEqual(set(doc), {"event", "processor_id", "status", "at"},
                             "processors.events message %r" % doc)
            self.assertIsInstance(doc["at"], int, "at of %r" % doc)
            self.assertLess(abs(doc["at"] / 1000.0 - time.time()), 60, "at of %r" % doc)
            self._seen_events.append(doc)
        return [(d["event"], d["status"]) for d in self._seen_events
                if d["processor_id"] == pid]

    def sync_heartbeats(self, gw, pid="sentinel"):
        """A valid heartbeat for `pid` after everything published so far: once
        the gateway shows it, it has handled every earlier heartbeat (one
        subscription, in order)."""
        before = self.proc(gw, pid)["last_heartbeat"]
        time.sleep(0.002)  # last_heartbeat has millisecond resolution
        self.nc.publish("processors.heartbeat." + pid, heartbeat(pid))
        self.nc.flush()
        wait_for(lambda: self.proc(gw, pid)["last_heartbeat"] not in (None, before), 5,
                 interval=0.01, what="the sentinel heartbeat to be applied")

    # ------------------------------------------------- healthy/stale/dead
    def test_nats_heartbeats_then_silence_stale_then_dead(self):
        gw = self.gateway()
        changes0 = metric(scrape(gw), "frame_buffer_health_changes_total")
        hb0 = metric(scrape(gw), "frame_buffer_heartbeats_total")
        reg = self.register(gw, "hb-1")
        self.assertEqual(reg["status"], "healthy")
        self.assertIsNone(reg["last_heartbeat"], "last_heartbeat before any heartbeat")

        # Heartbeats for 2 s (longer than HEARTBEAT_TIMEOUT_MS): healthy throughout.
        beater = Beater(self.nats_client(), "hb-1", period=0.15)
        beater.start()
        t_end = time.monotonic() + 2.0
        seen = set()
        while time.monotonic() < t_end:
            doc = self.proc(gw, "hb-1")
            seen.add(doc["status"])
            time.sleep(0.05)
        last = beater.stop()
        self.assertEqual(seen, {"healthy"}, "statuses while heartbeating every 150 ms")
        doc = self.proc(gw, "hb-1")
        self.assertIsNotNone(doc["last_heartbeat"], "no last_heartbeat after %d heartbeats"
                             % beater.sent)
        age = (datetime.datetime.now(datetime.timezone.utc)
               - parse_iso(doc["last_heartbeat"])).total_seconds()
        self.assertLess(abs(age), 1.0, "last_heartbeat %s is not the last heartbeat's time"
                        % doc["last_heartbeat"])
        wait_for(lambda: metric(scrape(gw), "frame_buffer_heartbeats_total") - hb0 >= beater.sent,
                 2, what="frame_buffer_heartbeats_total to count %d heartbeats" % beater.sent)
        self.assertEqual(metric(scrape(gw), "frame_buffer_heartbeats_total") - hb0, beater.sent,
                         "frame_buffer_heartbeats_total does not count every heartbeat")

        # Silence: stale once late (interval x 1.5 = 600 ms), dead at 1500 ms.
        t_stale = self.wait_status(gw, "hb-1", "stale", 2.0) - last
        t_dead = self.wait_status(gw, "hb-1", "dead", 3.0) - last
        self.assertGreaterEqual(t_stale, 0.55, "stale too early")
        self.assertLess(t_stale, 1.4, "stale too late")
        self.assertGreaterEqual(t_dead, 1.45, "dead before HEARTBEAT_TIMEOUT_MS")
        self.assertLess(t_dead, 2.6, "dead too late")

        # A heartbeat brings it back (and more keep it there while we look).
        beater = Beater(self.nats_client(), "hb-1", period=0.15)
        beater.start()
        self.addCleanup(beater.halt.set)
        self.wait_status(gw, "hb-1", "healthy", 2.0)

        self.assertEqual(self.events_for("hb-1", wait=0.5),
                         [("register", "healthy"), ("health", "stale"), ("health", "dead"),
                          ("health", "healthy")], "processors.events for hb-1")
        self.assertEqual(metric(scrape(gw), "frame_buffer_health_changes_total") - changes0, 3)
        beater.stop()
        self.assertIn("processor hb-1: stale -> dead", gw.log())

    def test_new_registration_without_heartbeat_dies_after_timeout(self):
        gw = self.gateway()
        t0 = time.monotonic()
        self.register(gw, "silent-1")
        self.register(gw, "untracked-1", interval=0)
        self.assertEqual(self.status_of(gw, "silent-1"), "healthy")
        time.sleep(0.9)  # past interval x 1.5, but it never sent one: still healthy
        self.assertEqual(self.status_of(gw, "silent-1"), "healthy",
                         "a new registration counts as healthy until its first timeout")
        t_dead = self.wait_status(gw, "silent-1", "dead", 3.0) - t0
        self.assertGreaterEqual(t_dead, 1.4)
        time.sleep(0.5)
        self.assertEqual(self.status_of(gw, "untracked-1"), "healthy",
                         "heartbeat_interval_ms 0 is not health-tracked")
        self.assertEqual(self.events_for("silent-1", wait=0.3),
                         [("register", "healthy"), ("health", "dead")])
        self.assertEqual(self.events_for("untracked-1"), [("register", "healthy")])

    def test_stopping_heartbeat_is_dead_at_once_and_gets_no_frames(self):
        gw = self.gateway(ROUTING_STRATEGY="round_robin")
        self.register(gw, "stopper")
        self.register(gw, "keeper", interval=0)
        beater = Beater(self.nats_client(), "stopper", period=0.15)
        beater.start()
        self.addCleanup(beater.halt.set)
        wait_for(lambda: self.proc(gw, "stopper")["last_heartbeat"], 5,
                 what="the first heartbeat to be applied")
        add_frames(self.r, [{"frame_id": "before-%d" % i, "camera_id": "c"} for i in range(10)])
        wait_for(lambda: self.r.command("XLEN", ready("stopper")) +
                 self.r.command("XLEN", ready("keeper")) == 10, 10, what="10 frames")
        self.assertEqual(self.r.command("XLEN", ready("stopper")), 5, "round robin over two")

        beater.stop()
        t0 = time.monotonic()
        # on the beater's connection: after its last heartbeat
        beater.nc.publish("processors.heartbeat.stopper", heartbeat("stopper", status="stopping"))
        t_dead = self.wait_status(gw, "stopper", "dead", 2.0) - t0
        self.assertLess(t_dead, 0.8, "a stopping heartbeat must make it dead at once, not after "
                        "the timeout")
        add_frames(self.r, [{"frame_id": "after-%d" % i, "camera_id": "c"} for i in range(50)])
        wait_for(lambda: self.r.command("XLEN", ready("keeper")) >= 55, 10,
                 what="the 50 new frames at keeper")
        time.sleep(0.3)
        got = [f["frame_id"] for _, f in xrange_all(self.r, ready("stopper"))]
        self.assertEqual(len(got), 5)
        self.assertFalse([g for g in got if g.startswith("after-")],
                         "frames routed to a dead processor: %s" % got)
        self.assertEqual(self.events_for("stopper", wait=0.3),
                         [("register", "healthy"), ("health", "dead")])
        self.assertIn("it said stopping", gw.log())

    # --------------------------------------------------------------- HTTP
    def test_ids_with_dots_heartbeat_over_nats(self):
        gw = self.gateway()
        self.register(gw, "cam.tracker.1")
        nc = self.nats_client()
        hb0 = metric(scrape(gw), "frame_buffer_heartbeats_total")
        nc.publish("processors.heartbeat.cam.tracker.1", heartbeat("cam.tracker.1"))
        nc.flush()
        wait_for(lambda: self.proc(gw, "cam.tracker.1")["last_heartbeat"], 5,
                 what="the heartbeat of an id with dots to be applied")
        self.assertEqual(metric(scrape(gw), "frame_buffer_heartbeats_total"), hb0 + 1)

    def test_http_heartbeat(self):
        gw = self.gateway()
        self.register(gw, "http-1")
        hb0 = metric(scrape(gw), "frame_buffer_heartbeats_total")
        t_end = time.monotonic() + 2.2  # longer than the timeout
        n = 0
        while time.monotonic() < t_end:
            status, _, doc = gw.post(P + "/heartbeat", {"processor_id": "http-1", "status": "ok",
                                                        "queue_depth": 3})
            self.assertEqual((status, doc), (200, {"status": "ok", "processor_id": "http-1"}))
            n += 1
            self.assertEqual(self.status_of(gw, "http-1"), "healthy")
            time.sleep(0.1)
        self.assertIsNotNone(self.proc(gw, "http-1")["last_heartbeat"])
        self.assertEqual(metric(scrape(gw), "frame_buffer_heartbeats_total") - hb0, n)
        self.assertDetail(gw.post(P + "/heartbeat", {"processor_id": "nobody"}), 404,
                          "heartbeat of an unknown processor")
        self.assertDetail(gw.post(P + "/heartbeat", {"status": "ok"}), 400,
                          "heartbeat without processor_id")
        # stopping over HTTP, too
        self.assertStatus(gw.post(P + "/heartbeat", {"processor_id": "http-1",
                                                     "status": "stopping"}), 200)
        self.wait_status(gw, "http-1", "dead", 1.0)
        self.assertEqual(self.events_for("http-1", wait=0.3),
                         [("register", "healthy"), ("health", "dead")])

    # ---------------------------------------------------------- malformed
    def test_malformed_heartbeats_are_counted_and_change_nothing(self):
        gw = self.gateway()
        self.register(gw, "target")
        self.register(gw, "other", interval=0)
        self.register(gw, "sentinel", interval=0)
        t0 = time.monotonic()
        m0 = scrape(gw)
        big = heartbeat("target", pad="x" * (8 * 1024 + 16))
        self.assertGreater(len(big), 8192)
        bad = [
            ("processors.heartbeat.target", b"{not json"),
            ("processors.heartbeat.target", b"[1, 2, 3]"),
            ("processors.heartbeat.target", b""),
            ("processors.heartbeat.nobody", heartbeat("nobody")),
            ("processors.heartbeat.target", big),
            ("processors.heartbeat.other", heartbeat("target")),  # id != subject
            ("processors.heartbeat.target", heartbeat("other")),  # id != subject
            ("processors.heartbeat.target", dumps({"processor_id": 7}).encode()),
            ("processors.heartbeat.target", heartbeat("target", status="great")),
            ("processors.heartbeat.target", heartbeat("target", status=1)),
        ]
        for subject, data in bad:
            self.nc.publish(subject, data)
        self.sync_heartbeats(gw)
        m1 = scrape(gw)
        self.assertEqual(metric(m1, "frame_buffer_heartbeats_rejected_total")
                         - metric(m0, "frame_buffer_heartbeats_rejected_total"), len(bad),
                         "frame_buffer_heartbeats_rejected_total after %d malformed heartbeats"
                         % len(bad))
        self.assertEqual(metric(m1, "frame_buffer_heartbeats_total")
                         - metric(m0, "frame_buffer_heartbeats_total"), 1,
                         "only the sentinel's heartbeat counts")
        for pid in ("target", "other"):
            self.assertIsNone(self.proc(gw, pid)["last_heartbeat"],
                              "a malformed heartbeat set last_heartbeat of %s" % pid)
        # it dies on time: nothing above counted as a heartbeat
        t_dead = self.wait_status(gw, "target", "dead", 3.0) - t0
        self.assertGreaterEqual(t_dead, 1.3)
        self.assertEqual(self.status_of(gw, "other"), "healthy")
        self.assertEqual(self.events_for("target", wait=0.3),
                         [("register", "healthy"), ("health", "dead")])
        self.assertEqual(self.events_for("nobody"), [])
        self.assertTrue(gw.running(), "the gateway died on malformed heartbeats")

    # ------------------------------------------------------------- rescue
    def test_dead_processors_backlog_is_moved_to_live_ones(self):
        gw = self.gateway(ROUTING_STRATEGY="round_robin", CLAIM_IDLE_MS=300)
        # victim does person and face; the live ones person only, so its face
        # backlog has nowhere to go but the DLQ.
        self.register(gw, "victim", caps=("person", "face"), max_queue=1000000)
        self.register(gw, "live-a", interval=0, max_queue=1000000)
        self.register(gw, "live-b", interval=0, max_queue=1000000)
        beater = Beater(self.nats_client(), "victim", period=0.15)
        beater.start()
        self.addCleanup(beater.halt.set)

        frames = ([{"frame_id": "p1-%04d" % i, "camera_id": "c%d" % (i % 7),
                    "detection_type": "person"} for i in range(600)] +
                  [{"frame_id": "f1-%04d" % i, "camera_id": "c9", "detection_type": "face"}
                   for i in range(60)])
        add_frames(self.r, frames)
        keys = [ready("victim"), ready("live-a"), ready("live-b"), DLQ]
        wait_for(lambda: sum(self.r.command("XLEN", k) for k in keys) == len(frames), 15,
                 what="phase 1 frames")
        self.assertEqual(self.r.command("XLEN", DLQ), 0)
        n_victim = self.r.command("XLEN", ready("victim"))
        self.assertEqual(n_victim, 200 + 60, "round robin: a third of person, all face")

        # The victim reads 100 entries, acks 30 of them (done with those) and
        # dies holding 70; the rest it never read.
        rep = self.r.command("XREADGROUP", "GROUP", "frame-processors", "victim", "COUNT", 100,
                             "STREAMS", ready("victim"), ">")
        read = rep[0][1]
        self.assertEqual(len(read), 100)
        done_ids = [e[0] for e in read[:30]]
        self.assertEqual(self.r.command("XACK", ready("victim"), "frame-processors", *done_ids), 30)
        done = {dict(zip(e[1][::2], e[1][1::2]))[b"frame_id"].decode() for e in read[:30]}
        time.sleep(0.4)  # the 70 are now idle longer than CLAIM_IDLE_MS
        rescued0 = metric(scrape(gw), "frame_buffer_frames_rescued_total")

        beater.stop()
        self.wait_status(gw, "victim", "dead", 4.0)
        # the rescue runs on the control thread's next pass
        in_victim = collections.Counter(f["frame_id"][:2] for _, f in
                                        xrange_all(self.r, ready("victim"))
                                        if f["frame_id"] not in done)
        person_backlog, face_backlog = in_victim["p1"], in_victim["f1"]
        self.assertEqual(person_backlog + face_backlog, n_victim - 30)
        self.assertGreater(person_backlog, 0)
        self.assertGreater(face_backlog, 0)

        # Frames that arrive now go to live processors only.
        later = ([{"frame_id": "p2-%04d" % i, "camera_id": "c%d" % (i % 7),
                   "detection_type": "person"} for i in range(300)] +
                 [{"frame_id": "f2-%04d" % i, "camera_id": "c9", "detection_type": "face"}
                  for i in range(20)])
        add_frames(self.r, later)
        everything = frames + later

        def settled():
            xp = self.r.command("XPENDING", ready("victim"), "frame-processors")
            grp = [x for x in self.r.command("XINFO", "GROUPS", ready("victim"))]
            lag = dict(zip(grp[0][::2], grp[0][1::2])).get(b"lag")
            total = sum(self.r.command("XLEN", k) for k in keys[1:])
            return xp[0] == 0 and lag == 0 and total + len(done) == len(everything)
        try:
            wait_for(settled, 20, what="the victim's backlog to be moved")
        finally:
            where = collections.defaultdict(list)
            for k in keys[1:]:
                for _, f in xrange_all(self.r, k):
                    where[f["frame_id"]].append(k)
            for fid in done:
                where[fid].append("done by the victim")
            dups = {fid: w for fid, w in where.items() if len(w) > 1}
            missing = [f["frame_id"] for f in everything if f["frame_id"] not in where]
            self.assertEqual(dups, {}, "frames in more than one place")
            self.assertEqual(missing, [], "frames lost (%d)" % len(missing))
        victim_frames = [f["frame_id"] for _, f in xrange_all(self.r, ready("victim"))]
        self.assertFalse([fid for fid in victim_frames if fid[1] == "2"],
                         "frames routed to a dead processor")
        dlq = {f["frame_id"]: f for _, f in xrange_all(self.r, DLQ)}
        for fid, f in dlq.items():
            self.assertTrue(fid.startswith(("f1-", "f2-")), "%s in the DLQ: %s" % (fid, f))
            self.assertEqual(f["dlq_reason"], "no_processor", f)
        self.assertEqual(len(dlq), face_backlog + 20, "face frames: backlog + new ones")
        for k in keys[1:3]:
            self.assertFalse([f for _, f in xrange_all(self.r, k) if f["frame_id"][0] == "f"],
                             "a face frame reached a person-only processor")
        self.assertEqual(metric(scrape(gw), "frame_buffer_frames_rescued_total") - rescued0,
                         person_backlog, "frame_buffer_frames_rescued_total")
        self.assertIsNone(wait_no_pending(self.r), "input entries left pending")
        consumers = {dict(zip(c[::2], c[1::2]))[b"name"].decode(): dict(zip(c[::2], c[1::2]))
                     for c in self.r.command("XINFO", "CONSUMERS", ready("victim"),
                                             "frame-processors")}
        self.assertEqual(consumers["victim"][b"pending"], 0, "the victim still owns entries")
        self.assertIn("frame-buffer-rescue", consumers)
        self.assertEqual(self.events_for("victim", wait=0.3)[-1], ("health", "dead"))


if __name__ == "__main__":
    unittest.main()
