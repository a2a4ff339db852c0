"""README: The API: the processor REST API, operations endpoints, API_TOKEN, the
compat Redis layout of registrations, and bad settings at start (README: Settings)."""
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import unittest

import harness
from harness import (IntegrationTest, ResponseError, add_frames, info_map, metric, scrape,
                     wait_for)
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


    # ------------------------------------------------------ mistakes refused
    def test_register_422_names_unknown_fields(self):
        pid = new_id("typo")
        status, _, doc = self.gw.post(P + "/register", valid_body(pid, transprt="nats",
                                                                  colour="red"))
        self.assertEqual(status, 422, doc)
        self.assertEqual(doc["detail"], 'unknown fields: "transprt" (did you mean "transport"?), '
                                        '"colour"')
        status, _, doc = self.gw.post(P + "/register", valid_body(pid, Capacity=3))
        self.assertEqual((status, doc["detail"]),
                         (422, 'unknown field: "Capacity" (did you mean "capacity"?)'))
        self.assertIsNone(self.r.command("HGET", "processors:registry", pid), "stored anyway")
        # PUT is checked the same way
        self.register(pid)
        status, _, doc = self.gw.put(P + "/" + pid, valid_body(pid, max_queu=5))
        self.assertEqual((status, doc["detail"]),
                         (422, 'unknown field: "max_queu" (did you mean "max_queue"?)'))

    def test_compat_fields_and_what_get_shows_are_accepted(self):
        pid, _ = self.register(endpoint="http://h:1/", health_endpoint=None,
                               metadata={"queue_maxlen": 50})
        shown = self.gw.get(P + "/" + pid)[2]
        self.assertEqual(shown["max_queue"], 50)
        # read-modify-write: what GET shows goes back as it is
        shown["capacity"] = 9
        status, _, doc = self.gw.put(P + "/" + pid, shown)
        self.assertEqual(status, 200, doc)
        self.assertEqual(doc["capacity"], 9)

    def test_capabilities_are_deduplicated(self):
        pid, doc = self.register(capabilities=["person", "face", "person", "face", "car"])
        self.assertEqual(doc["capabilities"], ["person", "face", "car"])
        stored = json.loads(self.r.command("HGET", "processors:registry", pid))
        self.assertEqual(stored["capabilities"], ["person", "face", "car"])
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["capabilities"], ["person", "face", "car"])

    def test_nats_id_with_a_dot_is_refused_with_the_reason(self):
        status, _, doc = self.gw.post(P + "/register", valid_body("cam.1", transport="nats"))
        self.assertEqual(status, 422, doc)
        self.assertIn("must not contain '.' with transport nats", doc["detail"])
        self.register("cam.2." + new_id())  # on Redis a dot is fine

    def test_list_filters(self):
        cap = "cap-" + new_id()
        a, _ = self.register(capabilities=[cap])
        b, _ = self.register(capabilities=[cap, "person"], transport="null")
        self.register(capabilities=["person"])
        def ids(query):
            status, _, doc = self.gw.get(P + "/" + query)
            self.assertEqual(status, 200, "%s: %s" % (query, doc))
            return sorted(p["id"] for p in doc)
        self.assertEqual(ids("?capability=" + cap), sorted([a, b]))
        self.assertEqual(ids("?capability=%s&transport=redis" % cap), [a])
        self.assertEqual(ids("?capability=%s&transport=null&status=healthy" % cap), [b])
        self.assertEqual(ids("?capability=%s&status=dead" % cap), [])
        self.assertIn(a, ids("?status=healthy"))
        self.assertEqual(ids("?status=dead"), [])
        self.assertEqual(ids("?capability=nobody-has-it"), [])
        for query, detail in (
                ("?status=great", 'status "great" is not one of healthy, stale, dead'),
                ("?transport=pigeon", 'transport "pigeon" is not one of redis, nats, null'),
                ("?capability=", "capability must not be empty"),
                ("?stauts=dead", 'unknown query argument "stauts" (did you mean "status"?); '
                                 "this path takes capability, status, transport")):
            with self.subTest(query=query):
                status, _, doc = self.gw.get(P + "/" + query)
                self.assertEqual((status, doc["detail"]), (422, detail))
        too_many = "&".join("status=healthy" for _ in range(9))
        for query in ("?capability=" + "c" * 600, "?" + too_many):
            with self.subTest(query=query[:30]):
                status, _, doc = self.gw.get(P + "/" + query)
                self.assertEqual((status, doc["detail"]),
                                 (422, "too many or too long query arguments (at most 8)"))
        # the compat search takes the same filters
        status, _, doc = self.gw.get(P + "/search/?capability=%s&transport=null" % cap)
        self.assertEqual((status, [p["id"] for p in doc]), (200, [b]))
        self.assertDetail(self.gw.get(P + "/search/?capability=%s&status=great" % cap), 422,
                          "search with a status that is none")

    def test_heartbeat_status_is_checked(self):
        pid, _ = self.register(heartbeat_interval_ms=0)
        for st in ("healthy", "degraded", "unhealthy", "ok"):
            with self.subTest(status=st):
                self.assertStatus(self.gw.post(P + "/heartbeat",
                                               {"processor_id": pid, "status": st}), 200)
        status, _, doc = self.gw.post(P + "/heartbeat", {"processor_id": pid, "status": "great"})
        self.assertEqual((status, doc["detail"]),
                         (422, 'status "great" is not one of healthy, degraded, unhealthy, '
                               'stopping, ok'))
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["status"], "healthy")

    def test_allow_names_what_each_path_takes(self):
        pid, _ = self.register()
        cases = {
            P: "GET, HEAD, OPTIONS",
            P + "/register": "POST, OPTIONS",
            P + "/heartbeat": "POST, OPTIONS",
            P + "/search": "GET, HEAD, OPTIONS",
            P + "/" + pid: "GET, HEAD, PUT, DELETE, OPTIONS",
            "/api/v1/routing": "GET, HEAD, PUT, DELETE, OPTIONS",
            "/api/v1/stats": "GET, HEAD, OPTIONS",
            "/metrics": "GET, HEAD, OPTIONS",
            "/health": "GET, HEAD, OPTIONS",
            "/": "GET, HEAD, OPTIONS",
        }
        for path, allow in cases.items():
            with self.subTest(path=path):
                status, headers, body = self.gw.request("OPTIONS", path)
                self.assertEqual((status, headers.get("Allow"), body), (204, allow, ""))
                status, headers, doc = self.gw.request("PATCH", path, body={})
                self.assertEqual((status, headers.get("Allow")), (405, allow), doc)
        status, headers, _ = self.gw.request("OPTIONS", "/api/v1/nothing-here")
        self.assertEqual((status, headers.get("Allow")), (404, None))
        status, headers, _ = self.gw.post("/api/v1/stats", {})
        self.assertEqual((status, headers.get("Allow")), (405, "GET, HEAD, OPTIONS"))

    def test_delete_keeps_the_stream_unless_purge(self):
        pid, _ = self.register()
        stream = "frames:ready:" + pid
        self.r.command("XADD", stream, "*", "frame_id", "left-behind")
        self.assertStatus(self.gw.delete(P + "/" + pid), 204)
        self.assertEqual(self.r.command("XLEN", stream), 1, "the default DELETE kept the stream")
        groups = self.r.command("XINFO", "GROUPS", stream)
        self.assertEqual(len(groups), 1, "the default DELETE kept the group")
        self.register(pid)
        self.assertDetail(self.gw.delete(P + "/" + pid + "?purge=maybe"), 422, "purge=maybe")
        self.assertDetail(self.gw.delete(P + "/" + pid + "?purg=true"), 422, "purg=true")
        self.assertStatus(self.gw.get(P + "/" + pid), 200, "a refused DELETE deleted")
        self.assertStatus(self.gw.delete(P + "/" + pid + "?purge=true"), 204)
        self.assertEqual(self.r.command("EXISTS", stream), 0, "purge left the stream")
        self.assertIsNone(self.r.command("HGET", "processors:registry", pid))

    def test_purge_spares_a_stream_another_processor_reads(self):
        shared = "shared:" + new_id()
        a, _ = self.register(queue=shared)
        b, _ = self.register(queue=shared)
        status, _, doc = self.gw.delete(P + "/" + a + "?purge=true")
        self.assertEqual(status, 409, doc)
        self.assertIn("also the queue of processor " + b, doc["detail"])
        self.assertStatus(self.gw.get(P + "/" + a), 200, "refused, so not deleted")
        self.assertStatus(self.gw.delete(P + "/" + a), 204)
        self.assertStatus(self.gw.delete(P + "/" + b + "?purge=true"), 204)
        self.assertEqual(self.r.command("EXISTS", shared), 0)


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
        self.assertEqual(headers.get("Access-Control-Allow-Methods"), "POST, OPTIONS")
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


class RedisRestartTest(IntegrationTest):
    """README: The API: after Redis comes back, the first write does not
    answer 503: the API retries once on a fresh connection. Every
    connection counts its reconnects (frame_buffer_redis_reconnects_total)."""

    def test_first_write_after_a_redis_restart_succeeds(self):
        r = self.start_redis()
        gw = self.start_gateway(r, consumer_name="restart")
        self.assertStatus(gw.post(P + "/register", valid_body("before")), 201)
        before = scrape(gw)
        r.stop()
        wait_for(lambda: gw.ready_status() == 503, 10, what="/readyz 503 with Redis away")
        self.assertDetail(gw.post(P + "/register", valid_body("while-away")), 503,
                          "a write while Redis is away")
        r.start()  # same port, empty
        gw.wait_ready(15)
        # Nothing but this API call has noticed on the API's connection.
        self.assertStatus(gw.post(P + "/register", valid_body("after")), 201,
                          "the first write after Redis came back")
        self.assertStatus(gw.delete(P + "/after"), 204)
        for conn in ("ingest", "control", "api"):
            with self.subTest(connection=conn):
                was = metric(before, "frame_buffer_redis_reconnects_total", connection=conn)
                wait_for(lambda: metric(scrape(gw), "frame_buffer_redis_reconnects_total",
                                        connection=conn) >= was + 1, 10,
                         what="frame_buffer_redis_reconnects_total{connection=%s} to count"
                              % conn)

    def test_write_right_after_a_restart_needs_no_wait(self):
        r = self.start_redis()
        gw = self.start_gateway(r, consumer_name="restart-now")
        self.assertStatus(gw.post(P + "/register", valid_body("one")), 201)
        r.stop()
        self.assertDetail(gw.post(P + "/register", valid_body("two")), 503, "Redis away")
        r.start()
        # No waiting for readiness: the API connects at once, whatever its backoff.
        self.assertStatus(gw.post(P + "/register", valid_body("two")), 201)


class PortInUseTest(IntegrationTest):
    """README: Settings: a port already in use is one line on stderr, exit
    status 2, and nothing is done in Redis (the listener is bound first)."""

    def test_port_in_use_is_one_line_and_exit_2(self):
        r = self.start_redis()
        gw = self.start_gateway(r, consumer_name="holder")
        env = dict(gw.environment())
        env.update({"CONSUMER_NAME": "second", "INPUT_STREAM": "other:input",
                    "CONSUMER_GROUP": "other-group", "LOG_LEVEL": "debug"})
        p = subprocess.run([harness.fb_binary("frame-buffer")], env=env, capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 2, "stderr %r" % p.stderr)
        self.assertEqual(p.stdout, "")
        lines = p.stderr.strip("\n").split("\n")
        self.assertEqual(len(lines), 1, "expected one line, got %r" % p.stderr)
        self.assertRegex(lines[0], r"^frame-buffer: cannot listen on 0\.0\.0\.0:%d .*: Address "
                                   r"already in use$" % gw.port)
        c = self.client(r)
        self.assertEqual(c.command("EXISTS", "other:input"), 0,
                         "the second gateway created its consumer group")
        self.assertStatus(gw.get("/readyz"), 200, "the first gateway")


class MetricsTest(IntegrationTest):
    """README: Metrics: every series /metrics exports is in the README's list
    with its type, and what it says is true."""

    @classmethod
    def setUpClass(cls):
        tmp = cls.class_tmp()
        cls.redis = cls.class_redis(tmp)
        cls.gw = cls.class_gateway(tmp, cls.redis, consumer_name="metrics",
                                   env={"HEARTBEAT_TIMEOUT_MS": "60000"})
        cls.r = cls.redis.client()
        cls.addClassCleanup(cls.r.close)

    def register(self, pid, **over):
        self.assertStatus(self.gw.post(P + "/register", valid_body(pid, **over)), 201, pid)

    def test_promtool_check_metrics(self):
        promtool = shutil.which("promtool")
        self.assertIsNotNone(promtool, "promtool is needed (Debian package prometheus)")
        self.register(new_id("prom"))
        text = self.gw.get("/metrics")[2]
        p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual((p.stdout + p.stderr).strip(), "", "promtool's remarks")

    def test_readme_lists_every_series_with_its_type(self):
        pid = new_id("doc")
        self.register(pid)
        self.gw.post(P + "/heartbeat", {"processor_id": pid, "status": "healthy"})
        wait_for(lambda: "frame_buffer_dlq_length " in self.gw.get("/metrics")[2], 5,
                 what="frame_buffer_dlq_length")
        text = self.gw.get("/metrics")[2]
        exported = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
        readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
        section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
        documented = dict(re.findall(r"(?m)^\| `([a-z_]+)(?:\{[^`]*\})?` \| (\w+) \|", section))
        self.assertGreater(len(exported), 30)
        for name, kind in sorted(exported.items()):
            with self.subTest(series=name):
                self.assertEqual(documented.get(name), kind,
                                 "%s (%s) in the README's metric list" % (name, kind))

    def test_processor_series(self):
        pid = new_id("per")
        self.register(pid, capacity=6, max_queue=321, heartbeat_interval_ms=0)
        m = scrape(self.gw)
        self.assertEqual(metric(m, "frame_buffer_processor_capacity", processor_id=pid), 6)
        self.assertEqual(metric(m, "frame_buffer_processor_max_queue", processor_id=pid), 321)
        for state, want in (("healthy", 1), ("stale", 0), ("dead", 0)):
            self.assertEqual(metric(m, "frame_buffer_processor_state", processor_id=pid,
                                    state=state), want, state)
        self.assertRaises(AssertionError, metric, m,
                          "frame_buffer_processor_last_heartbeat_time_seconds", processor_id=pid)
        t = time.time()
        self.assertStatus(self.gw.post(P + "/heartbeat", {"processor_id": pid,
                                                          "status": "stopping"}), 200)
        wait_for(lambda: metric(scrape(self.gw), "frame_buffer_processor_state",
                                processor_id=pid, state="dead") == 1, 3,
                 what="the state gauge to say dead after stopping")
        m = scrape(self.gw)
        self.assertEqual(metric(m, "frame_buffer_processor_state", processor_id=pid,
                                state="healthy"), 0)
        self.assertAlmostEqual(metric(m, "frame_buffer_processor_last_heartbeat_time_seconds",
                                      processor_id=pid), t, delta=2)

    def test_distributed_counter_survives_registering_again(self):
        pid = new_id("again")
        cap = "cap-" + pid
        self.register(pid, capabilities=[cap], heartbeat_interval_ms=0)
        add_frames(self.r, [{"frame_id": "%s-%d" % (pid, i), "detection_type": cap}
                            for i in range(5)])
        def routed():
            try:
                return metric(scrape(self.gw), "frame_buffer_frames_distributed_total",
                              processor_id=pid, transport="redis")
            except AssertionError:
                return None
        wait_for(lambda: routed() == 5, 10, what="5 frames routed to " + pid)
        self.assertStatus(self.gw.delete(P + "/" + pid), 204)
        self.assertIsNone(routed(), "a removed processor still in /metrics")
        self.register(pid, capabilities=[cap], heartbeat_interval_ms=0)
        self.assertEqual(routed(), 5, "the counter went back to 0 on registering again")
        add_frames(self.r, [{"frame_id": "%s-b%d" % (pid, i), "detection_type": cap}
                            for i in range(2)])
        wait_for(lambda: routed() == 7, 10, what="7 frames routed to " + pid)
        self.assertEqual(self.gw.get(P + "/" + pid)[2]["frames_routed"], 7)

    def test_http_requests_by_route_template(self):
        m0 = scrape(self.gw)
        def count(m, route, code):
            try:
                return metric(m, "frame_buffer_http_requests_total", route=route, code=code)
            except AssertionError:
                return 0
        for i in range(3):
            self.assertStatus(self.gw.get(P + "/" + new_id("nobody")), 404)
        self.assertStatus(self.gw.get("/api/v1/no-such-thing"), 404)
        self.assertStatus(self.gw.get("/"), 200)
        m1 = scrape(self.gw)
        tpl = P + "/{id}"
        self.assertEqual(count(m1, tpl, 404) - count(m0, tpl, 404), 3)
        self.assertEqual(count(m1, "other", 404) - count(m0, "other", 404), 1)
        self.assertEqual(count(m1, "dashboard", 200) - count(m0, "dashboard", 200), 1)
        self.assertGreaterEqual(metric(m1, "frame_buffer_http_request_duration_seconds_count",
                                       route=tpl), 3)
        self.assertEqual(metric(m1, "frame_buffer_http_request_duration_seconds_bucket",
                                route=tpl, le="+Inf"),
                         metric(m1, "frame_buffer_http_request_duration_seconds_count",
                                route=tpl))
        routes = {dict(re.findall(r'(\w+)="([^"]*)"', k)).get("route") for k in m1
                  if k.startswith("frame_buffer_http_requests_total")}
        self.assertFalse([r for r in routes if "nobody" in r], "a raw path became a label")

    def test_dashboard_clients(self):
        def clients():
            return metric(scrape(self.gw), "frame_buffer_dashboard_clients")
        self.assertEqual(clients(), 0)
        socks = [ws_open(self.gw.port) for _ in range(2)]
        try:
            wait_for(lambda: clients() == 2, 3, what="2 dashboard clients")
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: clients() == 0, 3, what="0 dashboard clients after they left")

    def test_dlq_length(self):
        def length():
            return metric(scrape(self.gw), "frame_buffer_dlq_length")
        wait_for(lambda: "frame_buffer_dlq_length" in str(scrape(self.gw)), 5,
                 what="frame_buffer_dlq_length")
        n0 = self.r.command("XLEN", "frames:dlq")
        self.r.pipeline([["XADD", "frames:dlq", "*", "dlq_reason", "malformed"]] * 3)
        wait_for(lambda: length() == n0 + 3, 3, what="frame_buffer_dlq_length %d" % (n0 + 3))

    def test_build_info_and_process(self):
        m = scrape(self.gw)
        version = subprocess.run([harness.fb_binary("frame-buffer"), "--version"],
                                 capture_output=True, text=True).stdout.split()[-1]
        self.assertEqual(metric(m, "frame_buffer_build_info", version=version), 1)
        self.assertGreater(metric(m, "process_resident_memory_bytes"), 1 << 20)
        self.assertGreater(metric(m, "process_open_fds"), 3)
        self.assertLess(metric(m, "process_open_fds"), metric(m, "process_max_fds"))
        self.assertGreater(metric(m, "process_cpu_seconds_total"), 0)
        pid = self.gw.proc.pid
        started = os.stat("/proc/%d" % pid).st_mtime
        self.assertAlmostEqual(metric(m, "process_start_time_seconds"), started, delta=30)
        self.assertLess(metric(m, "process_start_time_seconds"), time.time())


def ws_open(port):
    """An open dashboard WebSocket (the upgrade read), for the caller to close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: fb-dashboard\r\n\r\n"
               % port).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise AssertionError("the gateway closed the WebSocket upgrade")
        data += chunk
    if b" 101 " not in data.split(b"\r\n")[0]:
        raise AssertionError("WebSocket upgrade refused: %r" % data[:100])
    return s


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
