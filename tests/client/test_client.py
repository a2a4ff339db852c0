"""libframebuffer-client against the real gateway, redis-server and
nats-server, for each transport (Redis, core NATS, JetStream): frames arrive
and are acked, results reach result_stream, a processor killed with kill -9
gets its unacked frames again after a restart (none lost), heartbeats keep
it healthy, fbc_close marks it dead at once, and it comes back after the
gateway restarts or forgets it. Processors are fb-processor (built on the
library) and the example examples/processor.c."""
import os
import signal
import subprocess
import time
import unittest

import harness
from harness import IntegrationTest, add_frames, wait_for
from natsc import JetStream, Nats

P = "/api/v1/processors"
RESULTS = "frames:results"
GROUP = "frame-processors"


def frames(prefix, n, dtype="person"):
    return [{"frame_id": "%s-%05d" % (prefix, i), "camera_id": "cam-%02d" % (i % 8),
             "timestamp": "2026-01-01T00:00:00Z", "detection_type": dtype,
             "metadata": '{"detection_type":"%s","zone":"z1"}' % dtype,
             "trace_context": '{"trace_id":"%032x","span_id":"%016x"}' % (i + 1, i + 1)}
            for i in range(n)]


class ClientTest(IntegrationTest):

    # ------------------------------------------------------------ helpers
    def servers(self, kind, gw_env=None):
        """Redis, NATS (JetStream on for 'jetstream') and a gateway."""
        self.kind = kind
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        env = {"HEARTBEAT_TIMEOUT_MS": "60000"}
        self.nats = None
        if kind != "redis-only":
            self.nats = self.start_nats(jetstream=(kind == "jetstream"))
            env["NATS_URL"] = self.nats.url
        if kind == "jetstream":
            env["NATS_JETSTREAM"] = "1"
        env.update(gw_env or {})
        self.gw = self.start_gateway(self.redis, env=env)
        return self.gw

    def spawn(self, args, env=None, name="proc"):
        """A process whose output goes to a file shown when the test fails."""
        d = os.path.join(self.tmp, "%s-%d" % (name, len(self._resources.items)))
        os.makedirs(d)
        log = os.path.join(d, "out.log")
        with open(log, "wb") as out:
            p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

        class Item:
            pass
        item = Item()
        item.name, item.dir, item.proc = name, d, p
        item.log = lambda: harness.read_text(log)

        def stop():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self._keep(item, stop)
        return p

    def processor(self, pid, heartbeat_ms=500, extra=(), transport=None):
        transport = transport or self.kind
        args = [harness.fb_binary("fb-processor"), "--id", pid, "--capabilities", "person",
                "--api", self.gw.base, "--redis-url", self.redis.url,
                "--heartbeat-ms", str(heartbeat_ms), "--capacity", "16"]
        if transport == "nats":
            args += ["--transport", "nats", "--nats-url", self.nats.url]
        elif transport == "jetstream":
            args += ["--transport", "nats", "--jetstream", "--nats-url", self.nats.url]
        else:
            args += ["--nats-url", self.nats.url if self.nats else "none"]
        return self.spawn(args + list(extra), name=pid)

    def status(self, pid):
        code, _, body = self.gw.get(P + "/" + pid)
        return body.get("status") if code == 200 else code

    def wait_registered(self, pid, timeout=15):
        wait_for(lambda: self.gw.get(P + "/" + pid)[0] == 200, timeout, what=pid + " registered")

    def wait_subscribed(self, pid):
        """NATS transports: the gateway routes to a remote processor once it
        is registered; give the subscription (or the consumer) a moment."""
        self.wait_registered(pid)
        if self.kind == "jetstream":
            # The gateway creates FRAMES with its first remote frame; the
            # consumer is created when the processor sees the stream.
            return
        time.sleep(0.5)

    def result_ids(self, pid=None):
        ids = []
        for _, f in harness.xrange_all(self.r, RESULTS):
            if pid is None or f.get("processor_id") == pid:
                ids.append(f["frame_id"])
        return ids

    def wait_results(self, want, pid=None, timeout=30):
        want = set(want)
        wait_for(lambda: want <= set(self.result_ids(pid)), timeout,
                 what="results of %d frames" % len(want))

    def redis_pending(self, pid):
        return self.r.command("XPENDING", "frames:ready:" + pid, GROUP)[0]

    def js_consumer(self, pid):
        with Nats(self.nats.port) as nc:
            return JetStream(nc).api("CONSUMER.INFO.FRAMES." + pid)

    def assert_acked(self, pid):
        """Nothing of the processor's is left unacknowledged."""
        if self.kind == "jetstream":
            def done():
                info = self.js_consumer(pid)
                return info.get("num_ack_pending") == 0 and info.get("num_pending") == 0
            wait_for(done, 10, what="JetStream consumer %s: everything acked" % pid)
        elif self.kind in ("redis", "redis-only"):
            wait_for(lambda: self.redis_pending(pid) == 0, 10, what=pid + ": nothing pending")

    # ------------------------------------------------- one test per transport
    def check_flow(self, kind):
        self.servers(kind)
        pid = "lib-" + kind
        p = self.processor(pid)
        self.wait_subscribed(pid)
        batch = frames(kind, 300)
        add_frames(self.r, batch)
        want = [f["frame_id"] for f in batch]
        self.wait_results(want, pid)
        self.assert_acked(pid)
        got = self.result_ids(pid)
        self.assertEqual(sorted(set(got)), sorted(want))
        if kind != "jetstream":  # at-least-once may repeat after a redelivery; here none came
            self.assertEqual(len(got), len(want), "a frame's result was written twice")
        # the result entry carries what the processor made of the frame
        _, f = harness.xrange_all(self.r, RESULTS)[0]
        self.assertEqual(f["processor_id"], pid)
        self.assertIn('"detection_type":"person"', f["result"])
        self.assertTrue(f["camera_id"].startswith("cam-"))
        self.assertIn("processed_at", f)

        # heartbeats keep it healthy: its interval is 500 ms, stale after 750
        for _ in range(8):
            time.sleep(0.4)
            self.assertEqual(self.status(pid), "healthy")
        # fbc_close sends 'stopping': dead at once, not after a timeout
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        wait_for(lambda: self.status(pid) == "dead", 2, what=pid + " dead after SIGTERM")
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(p.wait(10), 0)

    def test_redis_frames_results_heartbeats_close(self):
        self.check_flow("redis")

    def test_nats_frames_results_heartbeats_close(self):
        self.check_flow("nats")

    def test_jetstream_frames_results_heartbeats_close(self):
        self.check_flow("jetstream")

    def test_jetstream_heartbeats_carry_the_real_depth(self):
        """A slow remote processor's backlog reaches the gateway through its
        heartbeats (undelivered + unacknowledged in its consumer), and drains."""
        self.servers("jetstream")
        pid = "lib-depth"
        self.processor(pid, heartbeat_ms=300, extra=["--work-ms", "100", "--capacity", "4"])
        self.wait_subscribed(pid)
        batch = frames("depth", 300)
        add_frames(self.r, batch)
        seen = []

        def deep():
            seen.append(self.gw.get(P + "/" + pid)[2].get("queue_depth"))
            return (seen[-1] or 0) >= 50
        wait_for(deep, 15, what="a queue_depth of 50 or more from the heartbeats (saw %s)" % seen)
        self.wait_results([f["frame_id"] for f in batch], pid, timeout=60)
        wait_for(lambda: self.gw.get(P + "/" + pid)[2].get("queue_depth") == 0, 5,
                 what="queue_depth back to 0")

    # --------------------------------------------------------- kill -9
    def check_crash(self, kind):
        self.servers(kind)
        pid = "crash-" + kind
        p = self.processor(pid, extra=["--die-after", "100", "--work-ms", "2"])
        self.wait_subscribed(pid)
        batch = frames(kind + "c", 1000)
        add_frames(self.r, batch)
        self.assertEqual(p.wait(30), 3, "fb-processor --die-after exits 3")
        done_before = set(self.result_ids(pid))
        self.assertLess(len(done_before), 1000, "it died before the end")
        if kind == "redis":
            self.assertGreater(self.redis_pending(pid), 0, "frames were in hand, unacked")
        else:
            self.assertGreater(self.js_consumer(pid)["num_ack_pending"], 0)
        # the same id again: its unacked frames come back (JetStream: after
        # the consumer's 30 s ack wait), and none is lost
        self.processor(pid)
        self.wait_results([f["frame_id"] for f in batch], pid, timeout=90)
        self.assert_acked(pid)

    def test_redis_kill9_restart_gets_unacked_frames(self):
        self.check_crash("redis")

    def test_jetstream_kill9_restart_gets_unacked_frames(self):
        self.check_crash("jetstream")

    # ------------------------------------------- the gateway comes and goes
    def test_survives_gateway_restart_and_being_forgotten(self):
        self.servers("redis-only")
        pid = "lib-restart"
        self.processor(pid, heartbeat_ms=300)
        self.wait_registered(pid)
        self.assertEqual(self.gw.stop(), 0)
        time.sleep(1.0)  # heartbeats fail meanwhile
        self.gw.start()
        wait_for(lambda: self.status(pid) == "healthy", 5, what="healthy after the restart")
        batch = frames("after", 50)
        add_frames(self.r, batch)
        self.wait_results([f["frame_id"] for f in batch], pid)
        # the gateway forgets it (its registration deleted): the next HTTP
        # heartbeat gets a 404 and the library registers again
        code = self.gw.delete(P + "/" + pid)[0]
        self.assertEqual(code, 204)
        wait_for(lambda: self.gw.get(P + "/" + pid)[0] == 200, 5, what="registered again")

    def test_registers_once_the_gateway_comes_up(self):
        self.kind = "redis-only"
        self.redis = self.start_redis()
        self.r = self.client(self.redis)
        self.nats = None
        self.gw = self.new_gateway(self.redis)
        self.gw.port = harness.free_port()  # not listening yet
        pid = "lib-early"
        p = self.processor(pid, heartbeat_ms=300)
        time.sleep(1.5)
        self.assertIsNone(p.poll(), "the processor gave up while the gateway was down")
        self.gw.start()
        wait_for(lambda: self.status(pid) == "healthy", 15, what=pid + " registered and healthy")
        batch = frames("early", 20)
        add_frames(self.r, batch)
        self.wait_results([f["frame_id"] for f in batch], pid)
        log = harness.read_text(os.path.join(self._resources.items[-1].dir, "out.log"))
        self.assertEqual(log.count("gateway not reachable"), 1, "one line for one kind of failure")

    def test_409_keeps_the_stored_registration(self):
        self.servers("redis-only")
        pid = "lib-409"
        self.assertStatus(self.gw.register(pid, ["person"], max_queue=12345), 201)
        self.processor(pid)
        wait_for(lambda: self.status(pid) == "healthy", 5, what=pid + " healthy")
        time.sleep(1.0)
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["max_queue"], 12345)

    # ------------------------------------------------------------ example
    def example(self, pid, kind, transport=None):
        env = dict(os.environ)
        env.update({"FB_API": self.gw.base, "REDIS_URL": self.redis.url,
                    "NATS_URL": self.nats.url if self.nats else "none",
                    "PROCESSOR_ID": pid, "PROCESSOR_CAPABILITIES": "person,face"})
        if transport:
            env["PROCESSOR_TRANSPORT"] = transport
        return self.spawn([harness.fb_binary("fb-example-processor")], env=env, name=pid)

    def check_example(self, kind, transport=None):
        self.servers(kind)
        pid = "example-" + kind
        p = self.example(pid, kind, transport)
        self.wait_subscribed(pid)
        batch = frames("ex" + kind, 100, dtype="face")
        add_frames(self.r, batch)
        self.wait_results([f["frame_id"] for f in batch], pid)
        self.assert_acked(pid)
        _, fields = harness.xrange_all(self.r, RESULTS)[0]
        self.assertIn('"label":"face"', fields["result"])
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), 0)
        wait_for(lambda: self.status(pid) == "dead", 2, what="example dead after SIGTERM")

    def test_example_redis_without_nats(self):
        self.check_example("redis-only")

    def test_example_nats(self):
        self.check_example("nats", transport="nats")


if __name__ == "__main__":
    unittest.main()
