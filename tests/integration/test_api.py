"""README: The API: the processor REST API, operations endpoints, API_TOKEN, the
compat Redis layout of registrations, and bad settings at start (README: Settings)."""
import itertools
import json
import socket
import subprocess
import time
import unittest

import harness
from harness import IntegrationTest, ResponseError, info_map, wait_for
from httpc import http_raw

P = "/api/v1/processors"
_ids = itertools.count(1)


def new_id(prefix="proc"):
    return "%s-%d" % (prefix, next(_ids))


def valid_body(pid, **over):
    b = {"id": pid, "capabilities": ["person", "vehicle"], "capacity": 4, "queue": ""}
    b.update(over)
    return b


class ApiTest(IntegrationTest):
    """One Redis and one gateway for the whole class; every test uses its own
    processor ids."""

    @classmethod
    def setUpClass(cls):
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="api-test")
        cls.r = cls.redis.client()
        cls.addClassCleanup(cls.r.close)

    def register(self, pid=None, **over):
        pid = pid or new_id()
        resp = self.gw.post(P + "/register", valid_body(pid, **over))
        self.assertStatus(resp, 201, "registering %s" % pid)
        return pid, resp[2]

    # ------------------------------------------------------ registration
    def test_register_201_returns_processor_with_runtime_fields(self):
        pid = new_id()
        body = valid_body(pid, capacity=7, weight=3, endpoint="http://x:1/",
                          metadata={"zone": "a"})
        status, headers, doc = self.gw.post(P + "/register", body)
        self.assertEqual(status, 201, doc)
        self.assertIn("application/json", headers.get("Content-Type", ""))
        self.assertEqual(doc["id"], pid)
        self.assertEqual(doc["capabilities"], ["person", "vehicle"])
        self.assertEqual(doc["capacity"], 7)
        self.assertEqual(doc["weight"], 3)
        self.assertEqual(doc["endpoint"], "http://x:1/")
        self.assertEqual(doc["metadata"], {"zone": "a"})
        for k in ("status", "last_heartbeat", "frames_routed", "queue_depth"):
            self.assertIn(k, doc, "registration response lacks %s" % k)
        self.assertEqual(doc["status"], "healthy")  # new registrations count as healthy
        self.assertEqual(doc["frames_routed"], 0)
        self.assertEqual(doc["queue_depth"], 0)

    def test_register_duplicate_409(self):
        pid, _ = self.register()
        self.assertDetail(self.gw.post(P + "/register", valid_body(pid)), 409, "duplicate")

    def test_register_422_for_each_invalid_field(self):
        pid = new_id("bad")
        cases = {
            "missing id": {k: v for k, v in valid_body(pid).items() if k != "id"},
            "id with a space": valid_body("bad id"),
            "id with a slash": valid_body("bad/id"),
            "id with a non-ASCII letter": valid_body("caf\u00e9"),
            "empty id": valid_body(""),
            "id of 129 characters": valid_body("a" * 129),
            "id not a string": valid_body(12),
            "capabilities missing": {k: v for k, v in valid_body(pid).items()
                                     if k != "capabilities"},
            "capabilities empty": valid_body(pid, capabilities=[]),
            "capabilities not strings": valid_body(pid, capabilities=["person", 3]),
            "capabilities not an array": valid_body(pid, capabilities="person"),
            "capacity 0": valid_body(pid, capacity=0),
            "capacity negative": valid_body(pid, capacity=-1),
            "capacity a string": valid_body(pid, capacity="4"),
            "capacity missing": {k: v for k, v in valid_body(pid).items() if k != "capacity"},
            "queue missing": {k: v for k, v in valid_body(pid).items() if k != "queue"},
            "bad transport": valid_body(pid, transport="carrier-pigeon"),
            "weight 0": valid_body(pid, weight=0),
        }
        for name, body in cases.items():
            with self.subTest(name):
                self.assertDetail(self.gw.post(P + "/register", body), 422, name)
        # nothing of it was stored
        self.assertIsNone(self.r.command("HGET", "processors:registry", pid))
        self.assertStatus(self.gw.get(P + "/" + pid), 404)

    def test_register_id_of_128_characters_is_accepted(self):
        pid = "b" * 127 + "Z"
        self.assertEqual(len(pid), 128)
        self.register(pid)
        self.assertStatus(self.gw.get(P + "/" + pid), 200)

    def test_register_id_with_every_allowed_character(self):
        self.register("Az09._:-" + new_id())

    def test_malformed_json_400(self):
        for raw in ('{"id": "x", ', "not json at all", '{"id": "a",}'):
            with self.subTest(raw=raw):
                self.assertDetail(self.gw.post(P + "/register", raw=raw), 400, "malformed JSON")

    def test_body_over_64_kib_413(self):
        pid = new_id()
        body = json.dumps(valid_body(pid, metadata={"pad": "x" * (70 * 1024)})).encode()
        req = (b"POST %s/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % (P.encode(), len(body))) + body
        status, headers, doc = http_raw(self.gw.base, req)
        self.assertEqual(status, 413, doc)
        self.assertIsInstance(doc, dict)
        self.assertTrue(doc.get("detail"))
        self.assertStatus(self.gw.get(P + "/" + pid), 404, "an oversized registration")
        # still serving
        self.assertStatus(self.gw.get("/healthz"), 200)

    def test_body_of_60_kib_is_not_too_large(self):
        pid = new_id()
        resp = self.gw.post(P + "/register", valid_body(pid, metadata={"pad": "x" * 60000}))
        self.assertStatus(resp, 201, "a 60 KiB registration")

    def test_unknown_method_405(self):
        pid, _ = self.register()
        self.assertDetail(self.gw.request("PATCH", P + "/" + pid, body={"capacity": 2}), 405,
                          "PATCH on a processor")
        self.assertDetail(self.gw.request("PATCH", P + "/"), 405, "PATCH on the list")
        self.assertDetail(self.gw.get(P + "/register"), 405, "GET on register")
        self.assertDetail(self.gw.request("POST", "/api/v1/routing", body={}), 405, "POST on routing")

    # ------------------------------------------------------ list / get
    def test_list_200_array_with_registered(self):
        a, _ = self.register()
        b, _ = self.register()
        status, _, doc = self.gw.get(P + "/")
        self.assertEqual(status, 200)
        self.assertIsInstance(doc, list)
        ids = [p["id"] for p in doc]
        self.assertIn(a, ids)
        self.assertIn(b, ids)
        self.assertEqual(len(ids), len(set(ids)), "a processor listed twice")

    def test_get_200_and_404(self):
        pid, reg = self.register()
        status, _, doc = self.gw.get(P + "/" + pid)
        self.assertEqual(status, 200)
        self.assertEqual(doc["id"], pid)
        self.assertEqual(doc["capabilities"], reg["capabilities"])
        self.assertDetail(self.gw.get(P + "/" + new_id("nobody")), 404, "unknown id")

    # ------------------------------------------------------ update
    def test_put_200_changes_processor_and_capability_sets(self):
        pid, _ = self.register()
        status, _, doc = self.gw.put(P + "/" + pid, valid_body(pid, capabilities=["face"],
                                                               capacity=9))
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["capabilities"], ["face"])
        self.assertEqual(doc["capacity"], 9)
        status, _, doc = self.gw.get(P + "/" + pid)
        self.assertEqual(doc["capacity"], 9)
        self.assertEqual(self.r.command("SISMEMBER", "processors:capabilities:face", pid), 1)
        self.assertEqual(self.r.command("SISMEMBER", "processors:capabilities:person", pid), 0,
                         "the old capability set still lists the processor after PUT")
        stored = json.loads(self.r.command("HGET", "processors:registry", pid))
        self.assertEqual(stored["capacity"], 9)

    def test_put_without_id_in_body_uses_path_id(self):
        pid, _ = self.register()
        body = valid_body(pid, capacity=5)
        del body["id"]
        status, _, doc = self.gw.put(P + "/" + pid, body)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["id"], pid)

    def test_put_400_id_mismatch(self):
        pid, _ = self.register()
        self.assertDetail(self.gw.put(P + "/" + pid, valid_body(new_id())), 400, "id mismatch")
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["capacity"], 4, "changed anyway")

    def test_put_404_unknown(self):
        pid = new_id("nobody")
        self.assertDetail(self.gw.put(P + "/" + pid, valid_body(pid)), 404, "PUT unknown")
        self.assertIsNone(self.r.command("HGET", "processors:registry", pid),
                          "a PUT of an unknown processor registered it")

    def test_put_422_invalid(self):
        pid, _ = self.register()
        self.assertDetail(self.gw.put(P + "/" + pid, valid_body(pid, capacity=0)), 422,
                          "capacity 0")
        self.assertDetail(self.gw.put(P + "/" + pid, valid_body(pid, capabilities=[])), 422,
                          "empty capabilities")
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["capacity"], 4, "changed anyway")

    def test_put_malformed_json_400(self):
        pid, _ = self.register()
        self.assertDetail(self.gw.put(P + "/" + pid, raw="{nope"), 400, "malformed JSON")

    # ------------------------------------------------------ delete
    def test_delete_204_then_404(self):
        pid, _ = self.register()
        status, _, body = self.gw.delete(P + "/" + pid)
        self.assertEqual(status, 204, body)
        self.assertEqual(body, "", "a 204 with a body")
        self.assertStatus(self.gw.get(P + "/" + pid), 404, "after DELETE")
        self.assertIsNone(self.r.command("HGET", "processors:registry", pid))
        self.assertEqual(self.r.command("SISMEMBER", "processors:capabilities:person", pid), 0)
        self.assertDetail(self.gw.delete(P + "/" + pid), 404, "second DELETE")
        self.assertDetail(self.gw.delete(P + "/" + new_id("nobody")), 404, "DELETE unknown")

    def test_register_again_after_delete(self):
        pid, _ = self.register()
        self.assertStatus(self.gw.delete(P + "/" + pid), 204)
        self.register(pid)

    # ------------------------------------------------------ search
    def test_search_by_capability_and_status(self):
        cap = "cap-" + new_id()
        a, _ = self.register(capabilities=[cap, "person"])
        b, _ = self.register(capabilities=[cap])
        c, _ = self.register(capabilities=["person"])
        status, _, doc = self.gw.get(P + "/search/?capability=" + cap)
        self.assertEqual(status, 200, doc)
        self.assertEqual(sorted(p["id"] for p in doc), sorted([a, b]))
        status, _, doc = self.gw.get(P + "/search?capability=%s&status=healthy" % cap)
        self.assertEqual(status, 200, doc)
        self.assertEqual(sorted(p["id"] for p in doc), sorted([a, b]))
        status, _, doc = self.gw.get(P + "/search/?capability=%s&status=dead" % cap)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc, [])
        status, _, doc = self.gw.get(P + "/search/?capability=nobody-has-this")
        self.assertEqual((status, doc), (200, []))
        self.assertNotIn(c, [p["id"] for p in self.gw.get(P + "/search/?capability=" + cap)[2]])

    def test_search_422_without_capability(self):
        self.assertDetail(self.gw.get(P + "/search/"), 422, "no capability")
        self.assertDetail(self.gw.get(P + "/search?status=healthy"), 422, "only status")

    # ------------------------------------------------------ heartbeat
    def test_heartbeat_200(self):
        pid, _ = self.register()
        status, _, doc = self.gw.post(P + "/heartbeat", {"processor_id": pid, "status": "healthy",
                                                         "queue_depth": 3})
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc, {"status": "ok", "processor_id": pid})
        doc = self.gw.get(P + "/" + pid)[2]
        self.assertIsNotNone(doc["last_heartbeat"], "heartbeat did not set last_heartbeat")

    def test_heartbeat_400_without_processor_id(self):
        self.assertDetail(self.gw.post(P + "/heartbeat", {"status": "healthy"}), 400,
                          "no processor_id")

    def test_heartbeat_404_unknown(self):
        self.assertDetail(self.gw.post(P + "/heartbeat", {"processor_id": new_id("nobody")}), 404,
                          "unknown processor")

    def test_heartbeat_422_counts_out_of_range(self):
        """A depth past any real queue is refused and changes nothing: one such
        heartbeat once wrapped the processor's load negative."""
        pid, _ = self.register()
        before = self.gw.get(P + "/" + pid)[2]["queue_depth"]
        for body in ({"queue_depth": 9223372036854775807, "in_flight": 1},
                     {"queue_depth": -1}, {"in_flight": "many"}):
            body["processor_id"] = pid
            with self.subTest(body=body):
                status, _, doc = self.gw.post(P + "/heartbeat", body)
                self.assertEqual(status, 422, doc)
                self.assertIn("must be an integer from 0 to 1000000000", doc["detail"])
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["queue_depth"], before)

    # ------------------------------------------------------ paths, headers
    def test_paths_with_and_without_trailing_slash(self):
        pid, _ = self.register()
        for path in (P, P + "/", P + "/" + pid, P + "/" + pid + "/", "/health", "/health/",
                     "/healthz", "/healthz/", "/readyz", "/readyz/", "/api/v1/stats",
                     "/api/v1/stats/", "/api/v1/routing", "/api/v1/routing/",
                     P + "/search?capability=person", P + "/search/?capability=person"):
            with self.subTest(path=path):
                self.assertStatus(self.gw.get(path), 200, "GET " + path)
        other = new_id()
        self.assertStatus(self.gw.post(P + "/register/", valid_body(other)), 201, "register/")
        self.assertStatus(self.gw.post(P + "/heartbeat/", {"processor_id": other}), 200,
                          "heartbeat/")
        self.assertStatus(self.gw.put(P + "/" + other + "/", valid_body(other)), 200, "PUT id/")
        self.assertStatus(self.gw.delete(P + "/" + other + "/"), 204, "DELETE id/")

    def test_request_id_echoed_and_generated(self):
        for path in ("/health", P + "/", P + "/" + new_id("nobody")):
            with self.subTest(path=path):
                _, headers, _ = self.gw.get(path, headers={"X-Request-ID": "abc-123.XYZ"})
                self.assertEqual(headers.get("X-Request-ID"), "abc-123.XYZ")
                _, headers, _ = self.gw.get(path)
                self.assertTrue(headers.get("X-Request-ID"), "no X-Request-ID made up")
        # on errors and state changes too
        _, headers, _ = self.gw.post(P + "/register", raw="{", headers={"X-Request-ID": "r-400"})
        self.assertEqual(headers.get("X-Request-ID"), "r-400")
        _, headers, _ = self.gw.post(P + "/register", valid_body(new_id()),
                                     headers={"X-Request-ID": "r-201"})
        self.assertEqual(headers.get("X-Request-ID"), "r-201")
        ids = {self.gw.get("/healthz")[1].get("X-Request-ID") for _ in range(3)}
        self.assertEqual(len(ids), 3, "generated request ids repeat: %s" % ids)

    def test_error_bodies_are_json_detail(self):
        self.assertDetail(self.gw.get("/no/such/path"), 404, "unknown path")

    # ------------------------------------------------------ operations
    def test_health(self):
        status, _, doc = self.gw.get("/health")
        self.assertEqual((status, doc["status"], doc["service"]),
                         (200, "healthy", "frame-buffer-v2"), doc)
        self.assertEqual(doc["connections"], {"redis": True, "group": True, "nats": "disabled"})

    def test_healthz_and_readyz(self):
        self.assertStatus(self.gw.get("/healthz"), 200)
        self.assertStatus(self.gw.get("/readyz"), 200)

    def test_metrics(self):
        status, headers, text = self.gw.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers.get("Content-Type", ""))
        for name in ("frame_buffer_frames_consumed_total", "frame_buffer_consumer_lag",
                     "frame_buffer_routing_duration_seconds_bucket"):
            self.assertRegex(text, r"(?m)^%s(\{[^}]*\})? [0-9.eE+-]+$" % name,
                             "%s is not a sample in /metrics" % name)
        self.assertRegex(text, r'(?m)^frame_buffer_routing_duration_seconds_bucket\{le="\+Inf"\}')

    def test_stats_json(self):
        pid, _ = self.register()
        status, headers, doc = self.gw.get("/api/v1/stats")
        self.assertEqual(status, 200)
        self.assertIn("application/json", headers.get("Content-Type", ""))
        self.assertIsInstance(doc, dict)
        self.assertIn(pid, json.dumps(doc), "stats do not show a registered processor")

    def test_routing_get_put(self):
        status, _, doc = self.gw.get("/api/v1/routing")
        self.assertEqual(status, 200)
        before = doc["strategy"]
        self.assertIn(before, ("round_robin", "weighted_round_robin", "least_loaded",
                               "consistent_hash"))
        new = "weighted_round_robin" if before != "weighted_round_robin" else "round_robin"
        try:
            status, _, doc = self.gw.put("/api/v1/routing", {"strategy": new})
            self.assertEqual(status, 200, doc)
            self.assertEqual(doc["strategy"], new)
            self.assertEqual(self.gw.get("/api/v1/routing")[2]["strategy"], new)
            self.assertDetail(self.gw.put("/api/v1/routing", {"strategy": "nope"}), 422,
                              "unknown strategy")
            self.assertDetail(self.gw.put("/api/v1/routing", {}), 422, "no strategy")
            self.assertEqual(self.gw.get("/api/v1/routing")[2], doc,
                             "a rejected PUT changed the routing settings")
            self.assertDetail(self.gw.put("/api/v1/routing", raw="{"), 400, "malformed")
        finally:
            self.gw.put("/api/v1/routing", {"strategy": before})

    # ------------------------------------------------------ Redis layout
    def test_registration_creates_stream_and_group_before_201(self):
        pid, _ = self.register()
        # right after the 201: no waiting
        groups = [info_map(g) for g in self.r.command("XINFO", "GROUPS", "frames:ready:" + pid)]
        self.assertIn(b"frame-processors", [g["name"] for g in groups])
        self.assertEqual(self.r.command("TYPE", "frames:ready:" + pid), b"stream")

    def test_registration_with_own_queue_creates_that_stream(self):
        pid = new_id()
        queue = "custom:queue:" + pid
        _, doc = self.register(pid, queue=queue)
        self.assertEqual(doc["queue"], queue)
        groups = [info_map(g) for g in self.r.command("XINFO", "GROUPS", queue)]
        self.assertIn(b"frame-processors", [g["name"] for g in groups])

    def test_old_processor_creating_group_without_mkstream_works(self):
        # what older processors do right after registering
        pid, _ = self.register()
        try:
            self.r.command("XGROUP", "CREATE", "frames:ready:" + pid, "frame-processors", "0")
        except ResponseError as e:
            self.assertIn("BUSYGROUP", str(e))

    def test_compat_registry_layout(self):
        pid, _ = self.register(capabilities=["person", "face"], capacity=6)
        raw = self.r.command("HGET", "processors:registry", pid)
        self.assertIsNotNone(raw, "processors:registry has no field %s" % pid)
        doc = json.loads(raw)
        self.assertEqual(doc["id"], pid)
        self.assertEqual(doc["capabilities"], ["person", "face"])
        self.assertEqual(doc["capacity"], 6)
        for cap in ("person", "face"):
            self.assertEqual(self.r.command("SISMEMBER", "processors:capabilities:" + cap, pid),
                             1, "processors:capabilities:%s lacks %s" % (cap, pid))
        self.assertEqual(self.r.command("SISMEMBER", "processors:capabilities:vehicle", pid), 0)

    def test_json_body_that_is_not_an_object(self):
        for raw in ("[]", '"id"', "42", "null"):
            with self.subTest(raw=raw):
                resp = self.gw.post(P + "/register", raw=raw)
                self.assertIn(resp[0], (400, 422), resp)
                self.assertIsInstance(resp[2], dict)
                self.assertTrue(resp[2].get("detail"))


class RobustnessTest(IntegrationTest):
    """Things that must not kill the gateway; each test has its own gateway
    so that a crash fails only that test."""

    def test_bare_tcp_connection_does_not_crash(self):
        gw = self.start_gateway(self.start_redis())
        # What a Kubernetes tcpSocket probe or a port scanner does.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
            s.close()
        time.sleep(0.3)
        self.assertTrue(gw.running(), "the gateway died after a TCP connect-and-close "
                        "(exit status %s)" % gw.proc.returncode)
        self.assertStatus(gw.get("/healthz"), 200)

    def test_chunked_body_is_411_with_a_detail(self):
        gw = self.start_gateway(self.start_redis())
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        try:
            body = b'{"id":"c1","capabilities":["x"],"capacity":1,"queue":""}'
            s.sendall(b"POST /api/v1/processors/register HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
                      b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        finally:
            s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 411"), reply[:200])
        self.assertIn(b"Content-Length", reply.split(b"\r\n\r\n", 1)[1])
        self.assertStatus(gw.get("/api/v1/processors/c1"), 404)  # nothing registered
        self.assertStatus(gw.get("/healthz"), 200)

    def test_garbage_request_line_does_not_crash(self):
        gw = self.start_gateway(self.start_redis())
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=2)
        try:
            s.sendall(b"\x00\x01garbage\r\n\r\n")
            try:
                s.recv(4096)
            except OSError:
                pass
        finally:
            s.close()
        time.sleep(0.2)
        self.assertTrue(gw.running(), "the gateway died after a garbage request "
                        "(exit status %s)" % gw.proc.returncode)
        self.assertStatus(gw.get("/healthz"), 200)


class ApiTokenTest(IntegrationTest):
    """API_TOKEN set: state changes need the bearer token; reads stay open."""

    TOKEN = "s3cret-token"

    @classmethod
    def setUpClass(cls):
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="token-test",
                                   env={"API_TOKEN": cls.TOKEN})

    def auth(self, token=None):
        return {"Authorization": "Bearer " + (token or self.TOKEN)}

    def test_state_changes_need_token(self):
        pid = new_id()
        no = {}
        wrong = self.auth("wrong")
        other = {"Authorization": "Basic " + self.TOKEN}
        for name, h in (("no token", no), ("wrong token", wrong), ("not bearer", other)):
            with self.subTest(name):
                self.assertDetail(self.gw.post(P + "/register", valid_body(pid), headers=h), 401,
                                  "register with " + name)
        self.assertStatus(self.gw.get(P + "/" + pid), 404, "registered without the token")
        self.assertStatus(self.gw.post(P + "/register", valid_body(pid), headers=self.auth()), 201)
        for name, h in (("no token", no), ("wrong token", wrong)):
            with self.subTest(name):
                self.assertDetail(self.gw.put(P + "/" + pid, valid_body(pid, capacity=9),
                                              headers=h), 401, "PUT with " + name)
                self.assertDetail(self.gw.delete(P + "/" + pid, headers=h), 401,
                                  "DELETE with " + name)
                self.assertDetail(self.gw.put("/api/v1/routing", {"strategy": "round_robin"},
                                              headers=h), 401, "PUT routing with " + name)
        doc = self.gw.get(P + "/" + pid)[2]
        self.assertEqual(doc["capacity"], 4, "a PUT without the token changed the processor")
        self.assertStatus(self.gw.put(P + "/" + pid, valid_body(pid, capacity=9),
                                      headers=self.auth()), 200)
        self.assertStatus(self.gw.post(P + "/heartbeat", {"processor_id": pid},
                                       headers=self.auth()), 200, "heartbeat with the token")
        self.assertStatus(self.gw.put("/api/v1/routing", {"strategy": "round_robin"},
                                      headers=self.auth()), 200, "PUT routing with the token")
        self.assertStatus(self.gw.delete(P + "/" + pid, headers=self.auth()), 204)

    def test_reads_stay_open(self):
        pid = new_id()
        self.assertStatus(self.gw.post(P + "/register", valid_body(pid), headers=self.auth()), 201)
        for path in (P + "/", P + "/" + pid, P + "/search/?capability=person", "/health",
                     "/healthz", "/readyz", "/metrics", "/api/v1/stats", "/api/v1/routing"):
            with self.subTest(path=path):
                self.assertStatus(self.gw.get(path), 200, "GET %s without a token" % path)


class ProcessorTokenTest(IntegrationTest):
    """PROCESSOR_TOKEN: a second token that processors use on register and
    heartbeat, and nothing else; PROCESSOR_TOKEN=open for clients that send
    no token at all."""

    @classmethod
    def setUpClass(cls):
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="ptoken-test",
                                   env={"API_TOKEN": "operator", "PROCESSOR_TOKEN": "processor"})
        cls.open = cls.class_gateway(tmp, cls.redis, consumer_name="ptoken-open",
                                     env={"API_TOKEN": "operator", "PROCESSOR_TOKEN": "open"})

    def test_processor_token_registers_and_heartbeats_only(self):
        pt = {"Authorization": "Bearer processor"}
        pid = new_id()
        self.assertStatus(self.gw.post(P + "/register", valid_body(pid), headers=pt), 201)
        self.assertStatus(self.gw.post(P + "/heartbeat", {"processor_id": pid}, headers=pt), 200)
        self.assertDetail(self.gw.put(P + "/" + pid, valid_body(pid, capacity=9), headers=pt),
                          401, "PUT with the processor token")
        self.assertDetail(self.gw.delete(P + "/" + pid, headers=pt), 401,
                          "DELETE with the processor token")
        self.assertDetail(self.gw.put("/api/v1/routing", {"strategy": "round_robin"}, headers=pt),
                          401, "routing with the processor token")
        self.assertDetail(self.gw.post(P + "/register", valid_body(new_id())), 401,
                          "register with no token")
        self.assertStatus(self.gw.delete(P + "/" + pid,
                                         headers={"Authorization": "Bearer operator"}), 204)

    def test_open_processor_endpoints_for_clients_without_a_token(self):
        pid = new_id()
        self.assertStatus(self.open.post(P + "/register", valid_body(pid)), 201)
        self.assertStatus(self.open.post(P + "/heartbeat", {"processor_id": pid}), 200)
        self.assertDetail(self.open.delete(P + "/" + pid), 401, "DELETE with no token")
        self.assertDetail(self.open.put("/api/v1/routing", {"strategy": "round_robin"}), 401,
                          "routing with no token")
        self.assertIn("PROCESSOR_TOKEN=open", self.open.log())


def ws_handshake(port, origin=None, host=None):
    """The status of a WebSocket upgrade to /ws (101 when accepted, 0 when the
    gateway closed the connection instead)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        lines = ["GET /ws HTTP/1.1", "Host: %s" % (host or "127.0.0.1:%d" % port),
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Protocol: fb-dashboard"]
        if origin:
            lines.append("Origin: " + origin)
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                return 0
            data += chunk
        return int(data.split(b" ")[1])
    except (ConnectionResetError, socket.timeout):
        return 0
    finally:
        s.close()


class CrossSiteTest(IntegrationTest):
    """README: Security: another site's page cannot change state through a
    visitor's browser (JSON only), read the API (no CORS headers unless
    ALLOWED_ORIGINS lists it) or open /ws."""

    EVIL = "http://evil.example"
    OPS = "https://ops.example.com"

    @classmethod
    def setUpClass(cls):
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="xsite")
        cls.listed = cls.class_gateway(tmp, cls.redis, consumer_name="xsite-listed",
                                       env={"ALLOWED_ORIGINS": cls.OPS})

    def test_state_changes_need_json(self):
        pid = new_id()
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                      None):
            with self.subTest(ctype=ctype):
                status, _, doc = self.gw.post(P + "/register", raw=json.dumps(valid_body(pid)),
                                              headers={"Content-Type": ctype})
                self.assertEqual(status, 415, doc)
                self.assertEqual(doc["detail"], "Content-Type must be application/json")
        self.assertStatus(self.gw.get(P + "/" + pid), 404, "registered by a simple request")
        status, _, _ = self.gw.post(P + "/register", raw=json.dumps(valid_body(pid)),
                                    headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(status, 201, "JSON with a charset parameter")

    def test_no_cors_headers_for_unlisted_origins(self):
        for gw in (self.gw, self.listed):
            status, headers, _ = gw.get("/api/v1/stats", headers={"Origin": self.EVIL})
            self.assertEqual(status, 200)
            self.assertIsNone(headers.get("Access-Control-Allow-Origin"))
        status, headers, _ = self.gw.get("/api/v1/stats", headers={"Origin": self.OPS})
        self.assertIsNone(headers.get("Access-Control-Allow-Origin"), "ALLOWED_ORIGINS unset")

    def test_listed_origin_gets_cors_and_preflight(self):
        status, headers, _ = self.listed.get("/api/v1/stats", headers={"Origin": self.OPS})
        self.assertEqual((status, headers.get("Access-Control-Allow-Origin")), (200, self.OPS))
        status, headers, _ = self.listed.request(
            "OPTIONS", P + "/register",
            headers={"Origin": self.OPS, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"})
        self.assertEqual(status, 204)
        self.assertEqual(headers.get("Access-Control-Allow-Origin"), self.OPS)
        self.assertIn("POST", headers.get("Access-Control-Allow-Methods", ""))
        self.assertIn("Content-Type", headers.get("Access-Control-Allow-Headers", ""))

    def test_ws_checks_origin(self):
        port = self.gw.port
        self.assertEqual(ws_handshake(port), 101, "no Origin (not a browser)")
        self.assertEqual(ws_handshake(port, "http://127.0.0.1:%d" % port), 101, "its own page")
        self.assertEqual(ws_handshake(port, self.EVIL), 0, "another site")
        self.assertEqual(ws_handshake(self.listed.port, self.OPS), 101, "a listed origin")
        self.assertEqual(ws_handshake(self.listed.port, self.EVIL), 0, "an unlisted origin")


class HostileClientsTest(IntegrationTest):
    """README: Security: 3,000 connections that never finish their request
    (silent, half-sent headers, a body trickled a byte at a time) neither
    starve the API and the dashboard nor stay open: each is closed within
    about 10 s of its last byte, and a trickled body within 10 s of its start
    plus one silence."""

    HOSTILE = 3000

    @classmethod
    def setUpClass(cls):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = cls.HOSTILE + 1000
        if soft < need:  # the test and the gateway (its child) both hold the sockets
            if hard != resource.RLIM_INFINITY and hard < need:
                raise AssertionError("this test needs %d file descriptors; the hard limit is %d"
                                     % (need, hard))
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="hostile")

    def test_half_open_connections_neither_starve_nor_stay(self):
        socks = []
        starts = [b"", b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n",
                  b"POST " + P.encode() + b"/register HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"]
        try:
            for i in range(self.HOSTILE):
                s = socket.create_connection(("127.0.0.1", self.gw.port), timeout=5)
                s.sendall(starts[i % 3])
                socks.append(s)
            began = time.monotonic()
            worst = 0.0
            closed = set()
            while time.monotonic() - began < 40 and len(closed) < len(socks):
                t = time.monotonic()
                self.assertStatus(self.gw.get("/healthz", timeout=5), 200)
                self.assertStatus(self.gw.get("/api/v1/stats", timeout=5), 200)
                self.assertEqual(ws_handshake(self.gw.port), 101, "the dashboard's WebSocket")
                worst = max(worst, time.monotonic() - t)
                for i, s in enumerate(socks):
                    if i in closed:
                        continue
                    try:
                        if i % 3 == 2:
                            s.send(b" ")  # the trickled body: a byte a second
                        s.setblocking(False)
                        if s.recv(4096) == b"":
                            closed.add(i)
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed.add(i)
                    finally:
                        s.setblocking(True)
                time.sleep(1)
            took = time.monotonic() - began
            self.assertEqual(len(closed), len(socks),
                             "%d of %d hostile connections still open after %.0f s"
                             % (len(socks) - len(closed), len(socks), took))
            self.assertLess(worst, 2.0, "the API or the dashboard waited %.2f s" % worst)
            print("\n  %d hostile connections closed by the gateway within %.0f s; the API and "
                  "the dashboard answered in at most %.3f s meanwhile" % (len(socks), took, worst))
        finally:
            for s in socks:
                s.close()
        self.assertStatus(self.gw.get("/readyz"), 200, "Redis stayed connected")


class SettingsTest(IntegrationTest):
    """README: Settings: bad settings exit 2 with one line naming the setting."""

    def run_fb(self, args, env=None, timeout=10):
        binary = harness.fb_binary("frame-buffer")
        e = {"PATH": "/usr/bin:/bin", "NATS_URL": "none", "REDIS_URL": "redis://127.0.0.1:1/0"}
        e.update(env or {})
        return subprocess.run([binary] + args, env=e, capture_output=True, text=True,
                              timeout=timeout)

    def assertBadSetting(self, p, name):
        self.assertEqual(p.returncode, 2, "exit status %s, stderr %r" % (p.returncode, p.stderr))
        lines = p.stderr.strip("\n").split("\n")
        self.assertEqual(len(lines), 1, "expected one line on stderr, got %r" % p.stderr)
        self.assertIn(name, lines[0])

    def test_bad_strategy_flag(self):
        self.assertBadSetting(self.run_fb(["--strategy", "nope"]), "--strategy")

    def test_bad_strategy_env(self):
        self.assertBadSetting(self.run_fb([], {"ROUTING_STRATEGY": "nope"}), "ROUTING_STRATEGY")

    def test_bad_port_env(self):
        self.assertBadSetting(self.run_fb([], {"PORT": "99999"}), "PORT")

    def test_bad_redis_url(self):
        self.assertBadSetting(self.run_fb(["--redis-url", "http://x"]), "--redis-url")

    def test_help_and_version_exit_0(self):
        p = self.run_fb(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--strategy", p.stdout)
        p = self.run_fb(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\d+\.\d+")

    def test_redis_down_is_not_a_bad_setting(self):
        # README: Settings: starts, reports not-ready, keeps trying.
        port = harness.free_port()
        g = harness.Gateway(self.tmp + "/gw", "redis://127.0.0.1:%d/0" % port, "down")
        self._keep(g, g.stop)
        g.start(wait_ready=False)
        self.assertEqual(g.ready_status(), 503)
        self.assertTrue(g.running())
        self.assertEqual(g.get("/health")[0], 503)
        self.assertEqual(g.get("/healthz")[0], 200)
        # Redis comes up on that port: the gateway becomes ready.
        r = harness.RedisServer(self.tmp + "/redis")
        r.port = port
        self._keep(r, r.stop)
        r.start()
        wait_for(lambda: g.ready_status() == 200, 15, what="/readyz 200 once Redis is up")


if __name__ == "__main__":
    unittest.main()
