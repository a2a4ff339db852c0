"""README: Remote processors and NATS: remote processors on NATS. Frames as JSON with Nats-Msg-Id and
traceparent headers (core NATS); results into the processor's result
stream; JetStream mode (stream FRAMES, exactly once across a kill -9 of the
gateway); a nats-server restart in the middle of a run; NATS_URL=none."""
import collections
import json
import time
import unittest

from harness import (IntegrationTest, add_frames, dumps, info_map, metric, scrape, wait_for,
                     wait_no_pending, xrange_all)
from natsc import JetStream, JetStreamError, Nats, NatsError

P = "/api/v1/processors"
DLQ = "frames:dlq"
INPUT = "frames:metadata"
GROUP = "frame-buffer-group"


def ready(pid):
    return "frames:ready:" + pid


def trace(i):
    return {"trace_id": "%032x" % (0xabc000 + i), "span_id": "%016x" % (0x5100 + i),
            "sampled": True}


def input_done(r):
    """Nothing unread and nothing pending in the input group."""
    groups = [info_map(g) for g in r.command("XINFO", "GROUPS", INPUT)]
    g = [x for x in groups if x["name"] == GROUP.encode()][0]
    return g["pending"] == 0 and g["lag"] == 0


def stored(js, stream="FRAMES"):
    """Messages in the JetStream stream; 0 while it does not exist yet (the
    gateway creates it with its first remote frame)."""
    try:
        return js.stream_info(stream)["state"]["messages"]
    except JetStreamError as e:
        if getattr(e, "code", None) == 404:
            return 0
        raise


class NatsTest(IntegrationTest):

    def nats_client(self, nats):
        nc = Nats(nats.port)
        self.addCleanup(nc.close)
        return nc

    def gateway(self, redis, nats, **env):
        e = {"NATS_URL": nats.url}
        e.update({k: str(v) for k, v in env.items()})
        return self.new_gateway(redis, consumer_name="nats-test", env=e)

    def register(self, gw, pid, caps, **extra):
        resp = gw.register(pid, caps, **extra)
        self.assertStatus(resp, 201, "registering " + pid)
        return resp[2]

    # ----------------------------------------------------------- core NATS
    def test_core_nats_remote_processor_gets_every_frame_with_headers(self):
        redis = self.start_redis()
        r = self.client(redis)
        nats = self.start_nats()
        gw = self.gateway(redis, nats, ROUTING_STRATEGY="round_robin").start()
        nc = self.nats_client(nats)
        sub = nc.subscribe("frames.ready.remote-1")
        custom = nc.subscribe("custom.subject.remote-2")
        nc.flush()
        doc = self.register(gw, "remote-1", ["face"], transport="nats")
        self.assertEqual(doc["transport"], "nats")
        self.register(gw, "remote-2", ["plate"], transport="nats", subject="custom.subject.remote-2")
        self.register(gw, "local-1", ["person"])

        n = 1000
        frames = []
        for i in range(n):
            fid = "nf-%05d" % i
            if i == 3:  # a hostile id must not end the header block early
                fid += "\r\nX-Injected: yes"
            f = {"frame_id": fid, "camera_id": "cam-%d" % (i % 5),
                 "timestamp": "2025-01-01T00:00:%02d.000Z" % (i % 60), "detection_type": "face",
                 "width": "640", "metadata": dumps({"zone": "z%d" % (i % 3)})}
            if i % 2 == 0:
                f["trace_context"] = dumps(trace(i))
            if i % 10 == 1:
                f["priority"] = "3"
                f["storage_backend"] = "s3"
            frames.append(f)
        plates = [{"frame_id": "np-%d" % i, "camera_id": "cam-p", "detection_type": "plate"}
                  for i in range(20)]
        persons = [{"frame_id": "nl-%d" % i, "camera_id": "cam-l", "detection_type": "person"}
                   for i in range(100)]
        add_frames(r, frames + plates + persons)

        got = {}
        deadline = time.monotonic() + 20
        while len(got) < n and time.monotonic() < deadline:
            try:
                m = sub.next(max(0.1, deadline - time.monotonic()))
            except NatsError:
                break
            body = m.json()
            self.assertNotIn(body["frame_id"], got, "frame delivered twice on core NATS")
            got[body["frame_id"]] = m
        self.assertEqual(len(got), n, "remote frames received on frames.ready.remote-1")
        for f in frames:
            m = got[f["frame_id"]]
            body = m.json()
            want = dict(f)
            want.setdefault("priority", "0")
            want.setdefault("storage_path", "")
            want.setdefault("storage_backend", "redis")
            self.assertEqual(body, want, "payload of %s" % f["frame_id"])
            self.assertTrue(all(isinstance(v, str) for v in body.values()))
            self.assertIsNotNone(m.headers, "%s came without headers" % f["frame_id"])
            self.assertEqual(m.headers.get("Nats-Msg-Id"),
                             f["frame_id"].replace("\r", " ").replace("\n", " ").strip())
            self.assertNotIn("X-Injected", m.headers, "a header injected through a frame id")
            if "trace_context" in f:
                t = json.loads(f["trace_context"])
                self.assertEqual(m.headers.get("traceparent"),
                                 "00-%s-%s-01" % (t["trace_id"], t["span_id"]),
                                 "traceparent of %s" % f["frame_id"])
        plates_got = custom.drain(wait=1.0)
        self.assertEqual(sorted(m.json()["frame_id"] for m in plates_got),
                         sorted(f["frame_id"] for f in plates),
                         "frames for the processor with its own subject")
        self.assertEqual(sub.drain(wait=0.3), [], "more messages than frames")
        wait_for(lambda: r.command("XLEN", ready("local-1")) == len(persons), 10,
                 what="local frames")
        self.assertEqual(r.command("XLEN", DLQ), 0, xrange_all(r, DLQ)[:3])
        for pid in ("remote-1", "remote-2"):
            self.assertEqual(r.command("EXISTS", ready(pid)), 0,
                             "a remote processor's frames went to a Redis stream")
        self.assertIsNone(wait_no_pending(r))
        m = scrape(gw)
        self.assertEqual(metric(m, "frame_buffer_frames_distributed_total",
                                processor_id="remote-1", transport="nats"), n)
        self.assertEqual(metric(m, "frame_buffer_frames_distributed_total",
                                processor_id="local-1", transport="redis"), len(persons))
        self.assertEqual(metric(m, "frame_buffer_nats_up"), 1)
        status, _, doc = gw.get("/readyz")
        self.assertEqual(status, 200)
        self.assertIs(doc["checks"]["nats"], True, doc)

    # ------------------------------------------------------------- results
    def test_results_land_in_result_stream(self):
        redis = self.start_redis()
        r = self.client(redis)
        nats = self.start_nats()
        gw = self.gateway(redis, nats).start()
        nc = self.nats_client(nats)
        self.register(gw, "res-1", ["face"], transport="nats", result_stream="results:res-1")
        self.register(gw, "res-2", ["face"], transport="nats")  # default frames:results
        written0 = metric(scrape(gw), "frame_buffer_results_written_total")

        results = [{"frame_id": "rf-%d" % i, "label": "cat", "score": 0.5 + i / 100,
                    "boxes": [[1, 2, 3, i]], "ok": True, "note": None} for i in range(50)]
        for res in results:
            nc.publish("frames.results.res-1", dumps(res))
        nc.publish("frames.results.res-2", dumps({"frame_id": "other", "label": "dog"}))
        nc.publish("frames.results.res-2", b"[1,2]")  # not an object: kept whole
        nc.publish("frames.results.nobody", dumps({"frame_id": "lost"}))
        nc.flush()
        wait_for(lambda: r.command("XLEN", "results:res-1") >= len(results), 10,
                 what="50 results in results:res-1")
        wait_for(lambda: r.command("XLEN", "frames:results") >= 2, 10,
                 what="2 results in frames:results")
        time.sleep(0.3)
        entries = [f for _, f in xrange_all(r, "results:res-1")]
        self.assertEqual(len(entries), len(results), "results written once each")
        now_ms = time.time() * 1000
        for res, got in zip(results, entries):  # in order
            want = {"frame_id": res["frame_id"], "label": "cat", "boxes": dumps(res["boxes"]),
                    "ok": "true", "note": "null", "processor_id": "res-1"}
            stamp = got.pop("received_at_ms", None)
            score = got.pop("score", None)
            self.assertEqual(got, want, "fields of %s" % res["frame_id"])
            # a number is kept as JSON: the same number (not necessarily the same digits)
            self.assertEqual(json.loads(score), res["score"], "score of %s" % res["frame_id"])
            self.assertIsNotNone(stamp, "received_at_ms missing")
            self.assertLess(abs(int(stamp) - now_ms), 30000, "received_at_ms %s" % stamp)
        other = [f for _, f in xrange_all(r, "frames:results")]
        self.assertEqual(other[0]["frame_id"], "other")
        self.assertEqual(other[0]["processor_id"], "res-2")
        self.assertEqual(other[1]["result"], "[1,2]")
        self.assertEqual(r.command("EXISTS", "results:nobody"), 0)
        self.assertEqual(metric(scrape(gw), "frame_buffer_results_written_total") - written0,
                         len(results) + 2)

    # ------------------------------------------------------------ JetStream
    def test_jetstream_exactly_once_across_kill_9(self):
        n = 50000
        redis = self.start_redis()
        r = self.client(redis)
        nats = self.start_nats(jetstream=True)
        gw = self.gateway(redis, nats, NATS_JETSTREAM=1, CLAIM_IDLE_MS=2000)
        gw.start()
        for pid in ("js-1", "js-2"):
            self.register(gw, pid, ["face"], transport="nats", max_queue=10000000)
        self.register(gw, "js-local", ["person"], max_queue=10000000)
        self.assertEqual(gw.stop(), 0)

        frames = [{"frame_id": "js-%06d" % i, "camera_id": "cam-%d" % (i % 13),
                   "timestamp": "1735689600",
                   "detection_type": "person" if i % 10 == 0 else "face"}
                  for i in range(n)]
        remote_ids = {f["frame_id"] for f in frames if f["detection_type"] == "face"}
        local_ids = {f["frame_id"] for f in frames if f["detection_type"] == "person"}
        add_frames(r, frames)

        nc = self.nats_client(nats)
        js = JetStream(nc)

        gw.start(wait_ready=False)
        wait_for(lambda: stored(js) >= len(remote_ids) // 3, 60, interval=0.005,
                 what="a third of the remote frames in JetStream")
        gw.kill()
        at_kill = stored(js)
        self.assertLess(at_kill, len(remote_ids), "everything was published before the kill -9; "
                        "the test did not crash the gateway mid-run")
        pending_at_kill = r.command("XPENDING", INPUT, GROUP)[0]
        gw.start(wait_ready=False)  # same CONSUMER_NAME: replays its own pending entries

        try:
            wait_for(lambda: input_done(r), 90, interval=0.1,
                     what="the input to be read and acked completely")
        finally:
            print("\nkill -9 with %d of %d remote frames stored, %d entries pending"
                  % (at_kill, len(remote_ids), pending_at_kill))
        if pending_at_kill:  # they were published again: JetStream dropped the duplicates
            self.assertIn("pending entries left from before", gw.log())
        time.sleep(0.5)
        info = js.stream_info("FRAMES")
        cfg = info["config"]
        self.assertEqual(cfg["subjects"], ["frames.ready.>"])
        self.assertEqual(cfg["retention"], "workqueue")
        self.assertGreater(cfg.get("duplicate_window", 0), 0)
        self.assertEqual(info["state"]["messages"], len(remote_ids),
                         "JetStream holds a different number of frames than were sent remote "
                         "(duplicates, or lost frames)")

        # The remote processors pull what they were sent.
        count = collections.Counter()
        per_pid = collections.Counter()
        for pid in ("js-1", "js-2"):
            js.add_pull_consumer("FRAMES", "worker-" + pid, filter_subject="frames.ready." + pid)
            for m in js.fetch_all("FRAMES", "worker-" + pid, batch=2000, idle=0.5):
                body = m.json()
                self.assertEqual(m.headers.get("Nats-Msg-Id"), body["frame_id"])
                count[body["frame_id"]] += 1
                per_pid[pid] += 1
        dups = [fid for fid, c in count.items() if c > 1]
        missing = remote_ids - set(count)
        strangers = set(count) - remote_ids
        self.assertEqual((len(dups), len(missing), len(strangers)), (0, 0, 0),
                         "duplicated %s, missing %s, unexpected %s"
                         % (dups[:5], sorted(missing)[:5], sorted(strangers)[:5]))
        self.assertGreater(min(per_pid.values()), 0, "one remote processor got nothing: %s"
                           % per_pid)
        local = collections.Counter(f["frame_id"] for _, f in xrange_all(r, ready("js-local")))
        self.assertEqual(set(local), local_ids)
        self.assertEqual(max(local.values()), 1, "local frames duplicated")
        self.assertEqual(r.command("XLEN", DLQ), 0, xrange_all(r, DLQ)[:3])
        self.assertEqual(js.stream_info("FRAMES")["state"]["messages"], 0,
                         "acked frames stay in a work-queue stream")

    # --------------------------------------------------- nats-server restart
    def test_nats_server_restart_mid_run(self):
        redis = self.start_redis()
        r = self.client(redis)
        nats = self.start_nats(jetstream=True)
        gw = self.gateway(redis, nats, NATS_JETSTREAM=1, CLAIM_IDLE_MS=1000).start()
        self.register(gw, "rs-remote", ["face"], transport="nats", heartbeat_interval_ms=60000)
        self.register(gw, "rs-local", ["person"], max_queue=1000000)
        nc = self.nats_client(nats)
        js = JetStream(nc)

        def face(prefix, k):
            return [{"frame_id": "%s-%d" % (prefix, i), "camera_id": "c", "detection_type": "face"}
                    for i in range(k)]

        def person(prefix, k):
            return [{"frame_id": "%s-%d" % (prefix, i), "camera_id": "c",
                     "detection_type": "person"} for i in range(k)]

        add_frames(r, face("before", 200) + person("pbefore", 200))
        wait_for(lambda: stored(js) == 200, 15,
                 what="200 remote frames in JetStream before the restart")
        nc.publish("processors.heartbeat.rs-remote", dumps({"processor_id": "rs-remote",
                                                            "status": "ok"}))
        nc.flush()
        wait_for(lambda: gw.get(P + "/rs-remote")[2]["last_heartbeat"], 5,
                 what="the first heartbeat")
        nc.close()

        nats.stop()
        down_at = time.monotonic()
        # NATS away degrades the gateway; it stays ready (it can serve).
        wait_for(lambda: gw.get("/health")[2]["status"] == "degraded", 10,
                 what="/health to say degraded while NATS is down")
        status, _, doc = gw.get("/health")
        self.assertEqual((status, doc["connections"]),
                         (200, {"redis": True, "group": True, "nats": False}), doc)
        status, _, doc = gw.get("/readyz")
        self.assertEqual((status, doc["checks"]["nats"], doc["checks"]["redis"]), (200, False, True),
                         doc)
        self.assertEqual(metric(scrape(gw), "frame_buffer_nats_up"), 0)
        # Redis -> Redis goes on. Remote frames that come now must not be
        # lost either: they wait in Redis and are delivered when NATS is back.
        during = person("pduring", 3000)
        remote_during = face("during", 120)
        for i in range(0, len(during), 500):
            add_frames(r, during[i:i + 500] + remote_during[i // 25:i // 25 + 20])
            time.sleep(0.2)
        wait_for(lambda: r.command("XLEN", ready("rs-local")) == 3200, 15,
                 what="local frames to flow while NATS is down")
        self.assertEqual(gw.ready_status(), 200, "/readyz while NATS is down")
        self.assertTrue(gw.running(), "the gateway exited while NATS was down")
        # an HTTP heartbeat is still taken
        self.assertStatus(gw.post(P + "/heartbeat", {"processor_id": "rs-remote",
                                                     "status": "ok"}), 200)

        nats.start()  # same port, same -sd directory
        down_for = time.monotonic() - down_at
        wait_for(lambda: gw.get("/health")[2]["status"] == "healthy", 30,
                 what="/health healthy after NATS came back")
        self.assertEqual(metric(scrape(gw), "frame_buffer_nats_up"), 1)
        nc = self.nats_client(nats)
        js = JetStream(nc)
        # heartbeats resume: the gateway subscribed again by itself
        before = gw.get(P + "/rs-remote")[2]["last_heartbeat"]
        time.sleep(0.01)

        def beat_arrives():
            nc.publish("processors.heartbeat.rs-remote", dumps({"processor_id": "rs-remote",
                                                                "status": "ok"}))
            nc.flush()
            time.sleep(0.1)
            return gw.get(P + "/rs-remote")[2]["last_heartbeat"] != before
        wait_for(beat_arrives, 10, what="a NATS heartbeat to reach the gateway after the restart")
        # remote routing resumes
        add_frames(r, face("after", 300) + person("pafter", 100))
        wait_for(lambda: stored(js) >= 500, 20,
                 what="500 remote frames in JetStream (200 before, 300 after)")
        wait_for(lambda: input_done(r), 30, what="the input to be read and acked")
        time.sleep(0.5)
        js.add_pull_consumer("FRAMES", "rs-worker", filter_subject="frames.ready.rs-remote")
        ids = [m.json()["frame_id"] for m in js.fetch_all("FRAMES", "rs-worker", idle=0.5)]
        self.assertEqual(len(ids), len(set(ids)), "remote frames duplicated")
        self.assertEqual({i for i in ids if not i.startswith("during-")},
                         {f["frame_id"] for f in face("before", 200) + face("after", 300)})
        local = [f["frame_id"] for _, f in xrange_all(r, ready("rs-local"))]
        self.assertEqual(len(local), 3300)
        self.assertEqual(len(set(local)), 3300)
        dlq = [f for _, f in xrange_all(r, DLQ)]
        self.assertEqual([f for f in dlq if not f["frame_id"].startswith("during-")], [],
                         "frames in the DLQ that were not remote frames sent during the outage")
        later = [i for i in ids if i.startswith("during-")]
        dlq_ids = [f["frame_id"] for f in dlq]
        self.assertEqual(sorted(later + dlq_ids), sorted(f["frame_id"] for f in remote_during),
                         "remote frames sent during the outage: each must end up once in "
                         "JetStream or in the DLQ")
        # With JetStream they wait in Redis for NATS and are all delivered.
        self.assertEqual(dlq_ids, [], "remote frames sent during the outage went to the DLQ")
        print("\nNATS was down for %.1fs; of %d remote frames sent meanwhile, %d were delivered "
              "after it came back, %d went to the DLQ (%s)"
              % (down_for, len(remote_during), len(later), len(dlq_ids),
                 dict(collections.Counter(f["dlq_reason"] for f in dlq))))

    # ---------------------------------------------------------- NATS_URL=none
    def test_nats_url_none_runs_redis_only(self):
        redis = self.start_redis()
        r = self.client(redis)
        gw = self.start_gateway(redis, consumer_name="nats-none", env={"NATS_URL": "none"})
        status, _, doc = gw.get("/readyz")
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["checks"]["nats"], "disabled", doc)
        resp = gw.register("remote-x", ["face"], transport="nats")
        self.assertDetail(resp, 422, "a nats registration with NATS_URL=none")
        self.assertIn("nats", resp[2]["detail"].lower())
        self.assertStatus(gw.get(P + "/remote-x"), 404)
        self.assertIsNone(r.command("HGET", "processors:registry", "remote-x"))
        self.register(gw, "local-x", ["face"])
        add_frames(r, [{"frame_id": "x-%d" % i, "detection_type": "face"} for i in range(100)])
        wait_for(lambda: r.command("XLEN", ready("local-x")) == 100, 10, what="100 local frames")
        self.assertStatus(gw.post(P + "/heartbeat", {"processor_id": "local-x"}), 200)
        self.assertIsNotNone(gw.get(P + "/local-x")[2]["last_heartbeat"])


if __name__ == "__main__":
    unittest.main()
