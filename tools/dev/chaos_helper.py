#!/usr/bin/env python3
"""The Python half of tools/dev/chaos.sh and tools/dev/soak.sh (standard
library only, plus the stdlib RESP and NATS clients of the integration
tests): what bash does badly, that is counting frames and talking NATS,
Redis and WebSocket protocols.

    chaos_helper.py ports N                      N free TCP ports on 127.0.0.1
    chaos_helper.py js-create --nats H:P --replicas R
                                                 the JetStream stream FRAMES, for an audit
    chaos_helper.py js-leader --nats H:P         index (n<i>) of the node leading FRAMES
    chaos_helper.py nats-cluster-wait --monitor P1,P2,P3
    chaos_helper.py account --redis H:P [--nats H:P] --scenario NAME ...
                                                 waits until nothing is pending, counts
                                                 every frame, appends a JSON row
    chaos_helper.py table FILE                   the table of the rows in FILE
    chaos_helper.py ws-churn --url http://H:P --seconds S
                                                 dashboard WebSocket clients coming and going
    chaos_helper.py routing-burst --url http://H:P --n N
                                                 N routing changes (N events) in a row
    chaos_helper.py soak-report FILE --warmup S  growth of RSS, fds and lag from samples

The accounting (docs/protocol.md: Delivery guarantees) works on what is in Redis and
JetStream at the end, never on the gateway's own counters, which a kill -9
resets. The input stream `frames:metadata` is never trimmed during a
campaign, so its entries are what was injected (fb-inject's own count is
kept for comparison: a Redis that lost acknowledged writes, as an
asynchronous replica promoted by Sentinel may, makes them differ). Each
input entry must end in exactly one place:

  * delivered: an entry of a processor's stream `frames:ready:<id>` that the
    processor processed (its result is in `frames:results`) or still holds
    (unread or unacknowledged in its group); or a message of the JetStream
    stream FRAMES (remote processors). An entry of a processor's stream that
    was acknowledged without a result of that processor was moved on by the
    gateway's rescue of a dead processor: the frame is counted where it was
    moved to, not there;
  * in the DLQ `frames:dlq`, by `dlq_reason` (matched by `dlq_source_id`, or
    by `frame_id` for a frame a rescue could not place);
  * trimmed: removed by a stream's MAXLEN cap (XINFO STREAM entries-added
    minus length). Campaigns register processors with a cap far above the
    frame count, so this stays 0 and every frame is checked by its id.

A frame found twice is a duplicate; a frame found nowhere is missing;
entries left in the input's consumer group (pending or never read) or in a
Redis processor's group are pending (never read is counted from the stream:
XINFO GROUPS' lag is off after Redis restarts from its AOF or fails over). A row passes when there is no
duplicate, no missing frame beyond the trimmed ones, nothing unknown and
nothing pending.
"""
import argparse
import base64
import collections
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
from natsc import JetStream, JetStreamError, Nats, NatsError  # noqa: E402
from resp import Redis, ResponseError  # noqa: E402

INPUT = "frames:metadata"
GROUP = "frame-buffer-group"
PROC_GROUP = "frame-processors"
DLQ = "frames:dlq"
RESULTS = "frames:results"
READY_PREFIX = "frames:ready:"
JS_STREAM = "FRAMES"

# Reads a page of a stream and returns only the fields asked for: for every
# entry its id, then the value of each field in ARGV[3..] ("" when absent).
# One bulk string per value instead of every field of every entry keeps the
# Python side fast enough for a million entries.
FIELDS_LUA = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local want = {}
for i = 3, #ARGV do want[ARGV[i]] = i - 2 end
local k = #ARGV - 2
local out = {}
for _, e in ipairs(rows) do
  local vals = {}
  for j = 1, k do vals[j] = '' end
  local f = e[2]
  for j = 1, #f, 2 do
    local at = want[f[j]]
    if at then vals[at] = f[j + 1] end
  end
  out[#out + 1] = e[1]
  for j = 1, k do out[#out + 1] = vals[j] end
end
return out
"""


def hostport(s, default_host="127.0.0.1"):
    host, _, port = s.rpartition(":")
    return (host or default_host), int(port)


def redis_at(spec, timeout=30.0):
    host, port = hostport(spec)
    return Redis(port, host=host, timeout=timeout)


def sid_key(entry_id):
    """A stream id as a comparable tuple."""
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def stream_fields(r, key, fields, page=20000):
    """[(entry id, [value of each field])] for every entry of `key`."""
    sha = r.command("SCRIPT", "LOAD", FIELDS_LUA).decode()
    out = []
    start = "-"
    k = len(fields)
    while True:
        flat = r.command("EVALSHA", sha, 1, key, start, page, *fields)
        if not flat:
            return out
        step = k + 1
        for i in range(0, len(flat), step):
            out.append((flat[i].decode(), [v.decode(errors="replace") for v in flat[i + 1:i + step]]))
        last = out[-1][0]
        ms, seq = sid_key(last)
        start = "%d-%d" % (ms, seq + 1)
        if len(flat) // step < page:
            return out


def info_dict(flat):
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


# The entries of a stream after an id (at most ARGV[2]), counted in Redis.
COUNT_AFTER_LUA = """
return #redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
"""


def group_state(r, key, group, cap=100000):
    """(pending, unread, last-delivered-id) of `group` on `key`; None when
    the stream or group does not exist. Unread entries are counted from the
    stream (those after last-delivered-id, at most `cap`), not taken from
    XINFO's lag: Redis 7.0 reports a lag that is off after a restart from
    its AOF or a failover (the group's entries-read counter loses track)."""
    try:
        groups = r.command("XINFO", "GROUPS", key)
    except ResponseError:
        return None
    for g in groups:
        d = info_dict(g)
        if d["name"].decode() != group:
            continue
        last = d["last-delivered-id"].decode()
        unread = r.command("EVAL", COUNT_AFTER_LUA, 1, key, last, cap)
        return int(d["pending"]), int(unread), last
    return None


def processor_streams(r):
    keys = []
    cursor = b"0"
    while True:
        cursor, part = r.command("SCAN", cursor, "MATCH", READY_PREFIX + "*", "COUNT", 1000,
                                 "TYPE", "stream")
        keys.extend(k.decode() for k in part)
        if cursor == b"0":
            return sorted(set(keys))


def pending_now(r, cap=100000):
    """{where: pending + unread} for the input group and every Redis
    processor group."""
    out = {}
    st = group_state(r, INPUT, GROUP, cap)
    out[INPUT] = (st[0] + st[1]) if st else 0
    for key in processor_streams(r):
        st = group_state(r, key, PROC_GROUP, cap)
        if st:
            out[key] = st[0] + st[1]
    return out


def nats_connect(spec, timeout=10.0):
    """A natsc.Nats on the first server of a comma-separated list that answers."""
    last = None
    for one in spec.split(","):
        one = one.replace("nats://", "")
        host, port = hostport(one)
        try:
            return Nats(port, host=host, timeout=timeout, name="fb-chaos")
        except (OSError, NatsError) as e:
            last = e
    raise NatsError("no NATS server of %s answers: %s" % (spec, last))


# ------------------------------------------------------------------ ports
def cmd_ports(a):
    socks, ports = [], []
    while len(ports) < a.n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


# -------------------------------------------------------------- JetStream
def cmd_js_create(a):
    """FRAMES as the gateway would create it (subjects frames.ready.>, file
    storage, the 2-minute duplicate window, R replicas), but with limits
    retention instead of work-queue: processors acknowledging a frame do not
    remove it, so the campaign can count every stored frame at the end. The
    gateway uses an existing FRAMES as it is (docs/protocol.md: Frames out)."""
    cfg = {"name": JS_STREAM, "subjects": ["frames.ready.>"], "retention": "limits",
           "storage": "file", "num_replicas": a.replicas, "duplicate_window": 120 * 10**9,
           "discard": "old", "max_msgs": -1, "max_bytes": -1, "max_age": 0}
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with nats_connect(a.nats, timeout=3.0) as nc:
                js = JetStream(nc, timeout=3.0)
                doc = js.api("STREAM.CREATE." + JS_STREAM, cfg)
                if "error" in doc and doc["error"].get("err_code") != 10058:  # exists
                    raise JetStreamError(str(doc["error"]))
                info = js.stream_info(JS_STREAM)
                if a.replicas == 1 or (info.get("cluster") or {}).get("leader"):
                    return 0
        except (OSError, NatsError, ValueError) as e:
            last = e
        time.sleep(0.2)
    sys.exit("chaos_helper: cannot create stream %s on %s: %s" % (JS_STREAM, a.nats, last))


def cmd_js_leader(a):
    """Prints the name of the server leading FRAMES (n0, n1, ...)."""
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            with nats_connect(a.nats, timeout=2.0) as nc:
                leader = (JetStream(nc, timeout=2.0).stream_info(JS_STREAM).get("cluster")
                          or {}).get("leader")
            if leader:
                print(leader)
                return 0
        except (OSError, NatsError, ValueError):
            pass
        time.sleep(0.2)
    sys.exit("chaos_helper: no leader for %s" % JS_STREAM)


def cmd_nats_cluster_wait(a):
    """Waits until every monitor port answers /healthz ok and the nodes agree
    on a JetStream meta leader."""
    ports = [int(p) for p in a.monitor.split(",")]
    deadline = time.monotonic() + a.timeout
    why = "not checked"
    while time.monotonic() < deadline:
        try:
            leaders = set()
            for p in ports:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % p, timeout=2) as rsp:
                    rsp.read()
                with urllib.request.urlopen("http://127.0.0.1:%d/jsz" % p, timeout=2) as rsp:
                    meta = json.loads(rsp.read()).get("meta_cluster") or {}
                leaders.add(meta.get("leader"))
            if len(leaders) == 1 and None not in leaders:
                return 0
            why = "meta leaders %s" % leaders
        except (OSError, ValueError) as e:
            why = str(e)
        time.sleep(0.2)
    sys.exit("chaos_helper: NATS cluster not healthy: %s" % why)


def js_frame_ids(spec, expect, timeout=60.0):
    """Every message of FRAMES as [(stream sequence, frame_id)] (the id is its Nats-Msg-Id), read with a
    consumer of our own (no acks, all messages)."""
    nc = nats_connect(spec, timeout=10.0)
    try:
        js = JetStream(nc, timeout=10.0)
        try:
            info = js.stream_info(JS_STREAM)
        except JetStreamError as e:
            if getattr(e, "code", None) == 404:
                return [], 0
            raise
        stored = info["state"]["messages"]
        name = "chaos-audit-%d" % os.getpid()
        doc = js.api("CONSUMER.DURABLE.CREATE.%s.%s" % (JS_STREAM, name),
                     {"stream_name": JS_STREAM,
                      "config": {"durable_name": name, "ack_policy": "none",
                                 "deliver_policy": "all", "max_waiting": 512,
                                 "inactive_threshold": 600 * 10**9}})
        if "error" in doc:
            raise JetStreamError("audit consumer: %s" % doc["error"])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < stored and time.monotonic() < deadline:
            # never more than what is left: a pull for more waits out its expiry
            got = js.fetch(JS_STREAM, name, min(10000, stored - len(out)), expires=2.0)
            for m in got:
                # reply: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>...
                try:
                    seq = int(m.reply.split(".")[5])
                except (AttributeError, IndexError, ValueError):
                    seq = -1
                fid = m.headers.get("Nats-Msg-Id") if m.headers is not None else None
                if fid is None:
                    try:
                        fid = m.json().get("frame_id", "")
                    except ValueError:
                        fid = ""
                out.append((seq, fid))
            if not got:
                break
        js.delete_consumer(JS_STREAM, name)
        return out, stored
    finally:
        nc.close()


# -------------------------------------------------------------- accounting
def wait_drained(r, timeout, settle=1.0):
    """Polls until nothing is pending anywhere twice in a row `settle` s
    apart; returns the last reading."""
    deadline = time.monotonic() + timeout
    zero_since = None
    last = {}
    while True:
        try:
            last = pending_now(r)
        except (OSError, ConnectionError, ResponseError) as e:
            last = {"error": str(e)}
        busy = sum(v for v in last.values() if isinstance(v, int))
        if busy == 0 and "error" not in last:
            if zero_since is None:
                zero_since = time.monotonic()
            elif time.monotonic() - zero_since >= settle:
                return last
        else:
            zero_since = None
        if time.monotonic() >= deadline:
            return last
        time.sleep(0.2)


def cmd_account(a):
    t0 = time.monotonic()
    r = redis_at(a.redis)
    left = wait_drained(r, a.timeout)
    drained_in = time.monotonic() - t0
    time.sleep(0.5)  # a late duplicate would land now
    left = pending_now(r, cap=10**8)
    pending = sum(left.values())

    # What was injected: every input entry.
    inp = stream_fields(r, INPUT, ["frame_id"])
    injected = len(inp)
    by_fid = {}
    input_dups = 0
    input_ids = set()
    for eid, (fid,) in inp:
        input_ids.add(eid)
        if fid:
            if fid in by_fid:
                input_dups += 1  # the same frame_id injected twice: counted by entry
            by_fid.setdefault(fid, eid)

    # Where each went.
    hits = collections.Counter()   # input entry id -> places found
    reason_of = {}                 # input entry id -> DLQ reason (last seen)
    strangers = collections.Counter()
    dlq_reasons = collections.Counter()
    moved = 0

    places = {}  # input entry id -> where its copies are (kept for the report)

    def found(fid, via_eid=None, where=""):
        eid = via_eid if via_eid in input_ids else by_fid.get(fid)
        if eid is None:
            strangers[fid] += 1
            return None
        hits[eid] += 1
        if eid in places:
            places[eid] = places[eid] + " + " + where
        else:
            places[eid] = where
        return eid

    results = set()
    for _, (pid, fid) in stream_fields(r, RESULTS, ["processor_id", "frame_id"]):
        results.add((pid, fid))

    per_proc = {}
    for key in processor_streams(r):
        pid = key[len(READY_PREFIX):]
        st = group_state(r, key, PROC_GROUP, cap=10**8)
        held = set()
        last = (0, 0)
        if st:
            last = sid_key(st[2])
            if st[0]:
                for e in r.command("XPENDING", key, PROC_GROUP, "-", "+", st[0] + 10):
                    held.add(e[0].decode())
        n = 0
        for eid, (fid,) in stream_fields(r, key, ["frame_id"]):
            if (pid, fid) in results or eid in held or sid_key(eid) > last:
                found(fid, where="%s %s" % (key, eid))
                n += 1
            else:
                moved += 1  # acknowledged by the gateway's rescue: moved on
        per_proc[pid] = n

    js_count = js_stored = 0
    if a.nats:
        ids, js_stored = js_frame_ids(a.nats, None)
        js_count = len(ids)
        for seq, fid in ids:
            found(fid, where="FRAMES #%d" % seq)

    for _, (fid, reason, src) in stream_fields(r, DLQ, ["frame_id", "dlq_reason", "dlq_source_id"]):
        eid = found(fid, src, where="%s (%s, source %s)" % (DLQ, reason, src))
        if eid is not None:
            reason_of[eid] = reason or "?"

    # Trimmed entries, from the streams' own counters.
    trimmed = 0
    for key in [INPUT, DLQ] + processor_streams(r):
        try:
            d = info_dict(r.command("XINFO", "STREAM", key))
        except ResponseError:
            continue
        added = d.get("entries-added")
        if added is not None:
            trimmed += int(added) - int(d["length"])

    delivered = dlq_n = missing = dups = 0
    for eid, _ in inp:
        n = hits.get(eid, 0)
        if n == 0:
            missing += 1
            continue
        dups += n - 1
        if eid in reason_of and n == 1:
            dlq_n += 1
            dlq_reasons[reason_of[eid]] += 1
        elif n == 1:
            delivered += 1
        else:
            delivered += 1  # counted once; the extra copies are the duplicates
    stranger_n = sum(strangers.values())
    ok = (dups == 0 and missing == trimmed and stranger_n == 0 and pending == 0
          and delivered + dlq_n + trimmed == injected)
    missing_ids = [eid for eid, _ in inp if hits.get(eid, 0) == 0][:5]
    dup_ids = [eid for eid, _ in inp if hits.get(eid, 0) > 1][:5]
    fid_of = {eid: fid for eid, (fid,) in inp}
    row = {
        "scenario": a.scenario, "injected": injected, "delivered": delivered, "dlq": dlq_n,
        "dlq_by_reason": dict(sorted(dlq_reasons.items())), "trimmed": trimmed,
        "duplicates": dups, "missing": missing, "unknown": stranger_n, "pending": pending,
        "pending_where": {k: v for k, v in left.items() if v},
        "pass": ok, "injector_count": a.injector_count, "remote": js_count,
        "js_stored": js_stored, "rescued_copies": moved, "per_processor": per_proc,
        "input_duplicate_ids": input_dups, "drained_in_s": round(drained_in, 1),
        "account_s": round(time.monotonic() - t0, 1),
        "seconds": round(a.seconds, 1) if a.seconds else None,
        "events": a.events, "missing_examples": [(e, fid_of.get(e)) for e in missing_ids],
        "duplicate_examples": [(e, fid_of.get(e), places.get(e)) for e in dup_ids],
        "unknown_examples": list(strangers)[:5],
    }
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(summary_line(row))
    return 0 if ok else 1


def summary_line(row):
    dlq = ", ".join("%s %d" % kv for kv in row["dlq_by_reason"].items()) or "-"
    s = ("%s: injected %d, delivered %d (remote %d), dlq %d (%s), trimmed %d, duplicates %d, "
         "missing %d, pending %d%s -> %s" % (
             row["scenario"], row["injected"], row["delivered"], row["remote"], row["dlq"], dlq,
             row["trimmed"], row["duplicates"], row["missing"], row["pending"],
             (", unknown %d" % row["unknown"]) if row["unknown"] else "",
             "PASS" if row["pass"] else "FAIL"))
    if not row["pass"]:
        s += "\n  pending in %s; missing e.g. %s; duplicated e.g. %s; unknown e.g. %s" % (
            row["pending_where"], row["missing_examples"], row["duplicate_examples"],
            row["unknown_examples"])
    return s


def cmd_table(a):
    rows = []
    with open(a.file) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    head = ["scenario", "injected", "delivered", "dlq (by reason)", "trimmed", "duplicates",
            "pending", "result", "what happened"]
    body = []
    for r in rows:
        dlq = "%d" % r["dlq"]
        if r["dlq_by_reason"]:
            dlq += " (" + ", ".join("%s %d" % kv for kv in r["dlq_by_reason"].items()) + ")"
        delivered = "%d" % r["delivered"]
        if r["remote"]:
            delivered += " (%d remote)" % r["remote"]
        result = "pass" if r["pass"] else "FAIL"
        if not r["pass"] and r.get("missing"):
            result += " (%d missing)" % r["missing"]
        if r.get("unknown"):
            result += " (%d unknown)" % r["unknown"]
        notes = r.get("events") or ""
        acked = r.get("injector_count")
        if acked is not None and acked > r["injected"]:
            notes += ("; fb-inject had %d writes acknowledged: %d of them never reached the "
                      "new primary (asynchronous replication) and are not counted" % (
                          acked, acked - r["injected"]))
        elif acked is not None and acked < r["injected"]:
            notes += ("; %d entries of a pipelined burst in flight when Redis went away landed "
                      "without fb-inject counting them" % (r["injected"] - acked))
        if r.get("rescued_copies"):
            notes += "; %d frames moved off dead processors" % r["rescued_copies"]
        body.append([r["scenario"], "%d" % r["injected"], delivered, dlq, "%d" % r["trimmed"],
                     "%d" % r["duplicates"], "%d" % r["pending"], result, notes.strip("; ")])
    if a.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for b in body:
            print("| " + " | ".join(b) + " |")
    else:
        cols = head[:-1]
        w = [max(len(x[i]) for x in [cols] + [b[:-1] for b in body]) for i in range(len(cols))]
        fmt = "  ".join("%%-%ds" % n for n in w)
        print(fmt % tuple(cols))
        print(fmt % tuple("-" * n for n in w))
        for b in body:
            print(fmt % tuple(b[:-1]))
            if b[-1]:
                print("    " + b[-1])
    return 0 if rows and all(r["pass"] for r in rows) else 1


# --------------------------------------------------------------- dashboard
class WsClient:
    """A dashboard client: the /ws handshake (subprotocol fb-dashboard), then
    reads frames (or, as a stalled browser, reads nothing)."""

    def __init__(self, host, port, reader=True):
        self.sock = socket.create_connection((host, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: fb-dashboard\r\nOrigin: http://%s:%d\r\n\r\n"
               % (host, port, key, host, port))
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError("handshake refused: %r" % head[:80])
        self.reader = reader
        self.bytes = len(head) - head.index(b"\r\n\r\n") - 4

    def pump(self, seconds):
        """Reads (or, when not a reader, only sleeps) for `seconds`."""
        end = time.monotonic() + seconds
        if not self.reader:
            time.sleep(seconds)
            return
        self.sock.settimeout(0.5)
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                return
            self.bytes += len(data)

    def close(self, clean):
        try:
            if clean:  # a masked close frame, status 1000
                mask = os.urandom(4)
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
                self.sock.sendall(b"\x88\x82" + mask + payload)
            self.sock.close()
        except OSError:
            pass


def cmd_ws_churn(a):
    """Keeps dashboard clients coming and going until `seconds` pass: each
    worker opens a client (a reader, or one that never reads), keeps it
    1-20 s, closes it cleanly or just drops the socket, pauses, repeats."""
    host, port = hostport(a.url.replace("http://", "").rstrip("/"))
    stop = time.monotonic() + a.seconds
    counts = collections.Counter()
    lock = threading.Lock()

    def worker(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            try:
                c = WsClient(host, port, reader=rnd.random() < 0.8)
                with lock:
                    counts["opened"] += 1
                c.pump(min(rnd.uniform(1, 20), max(0.0, stop - time.monotonic())))
                c.close(clean=rnd.random() < 0.5)
                with lock:
                    counts["closed"] += 1
            except (OSError, ConnectionError) as e:
                with lock:
                    counts["errors"] += 1
                    counts["last_error:" + str(e)[:60]] = 1
            time.sleep(rnd.uniform(0.2, 3))

    threads = [threading.Thread(target=worker, args=(a.seed + i,), daemon=True)
               for i in range(a.clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        if a.stats:
            with lock:
                doc = json.dumps(dict(counts))
            with open(a.stats + ".tmp", "w") as f:
                f.write(doc + "\n")
            os.replace(a.stats + ".tmp", a.stats)
    print("ws-churn: %s" % json.dumps(dict(counts)))
    return 0


# ------------------------------------------------------------------- soak
def cmd_routing_burst(a):
    """PUT /api/v1/routing `n` times, every strategy in turn: each change is
    one event, so that the gateway's fixed event buffers (README: Running
    several replicas, events) have been written through once."""
    from httpc import http
    names = ["round_robin", "least_loaded", "weighted_round_robin", "consistent_hash"]
    bad = 0
    for i in range(a.n):
        st = http("PUT", a.url, "/api/v1/routing", body={"strategy": names[i % 4]},
                  headers={"Content-Type": "application/json"})[0]
        bad += st != 200
    print("routing-burst: %d changes, %d not 200" % (a.n, bad))
    return 1 if bad else 0


def cmd_soak_report(a):
    """Samples (one JSON object a line: t, rss_kb, fds, lag, ...) -> growth
    of each measure after the warm-up: the first third of the remaining
    samples against the last third. RSS and lag by their medians; fds by
    their minimum, so that dashboard clients connected at the moment of a
    sample do not count as a leak (a leaked descriptor raises the minimum).
    Lag is compared against a floor of `lag_floor` entries: an almost empty
    queue's lag of 0-300 makes a percentage meaningless."""
    rows = []
    with open(a.file) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    post = [r for r in rows if r["t"] >= a.warmup]
    out = {"samples": len(rows), "after_warmup": len(post), "warmup_s": a.warmup}
    if len(post) < 6:
        out["error"] = "too few samples after the warm-up"
        print(json.dumps(out))
        return 1
    third = max(2, len(post) // 3)
    first, last = post[:third], post[-third:]
    ok = True
    for name, pick, floor in (("rss_kb", statistics.median, 1), ("fds", min, 1),
                              ("lag", statistics.median, a.lag_floor)):
        f0 = pick([r[name] for r in first])
        f1 = pick([r[name] for r in last])
        growth = (f1 - f0) / max(f0, floor) * 100.0
        out[name] = {"first": f0, "last": f1, "growth_pct": round(growth, 2),
                     "min": min(r[name] for r in post), "max": max(r[name] for r in post)}
        if growth >= a.limit:
            ok = False
    out["pass"] = ok
    print(json.dumps(out))
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s.set_defaults(fn=cmd_ports)
    s = sub.add_parser("js-create")
    s.add_argument("--nats", required=True)
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(fn=cmd_js_create)
    s = sub.add_parser("js-leader")
    s.add_argument("--nats", required=True)
    s.add_argument("--timeout", type=float, default=20)
    s.set_defaults(fn=cmd_js_leader)
    s = sub.add_parser("nats-cluster-wait")
    s.add_argument("--monitor", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.set_defaults(fn=cmd_nats_cluster_wait)
    s = sub.add_parser("account")
    s.add_argument("--redis", required=True)
    s.add_argument("--nats")
    s.add_argument("--scenario", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--injector-count", type=int)
    s.add_argument("--seconds", type=float)
    s.add_argument("--events", default="")
    s.set_defaults(fn=cmd_account)
    s = sub.add_parser("table")
    s.add_argument("file")
    s.add_argument("--markdown", action="store_true")
    s.set_defaults(fn=cmd_table)
    s = sub.add_parser("ws-churn")
    s.add_argument("--url", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--clients", type=int, default=6)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--stats", help="a file rewritten every second with the counts")
    s.set_defaults(fn=cmd_ws_churn)
    s = sub.add_parser("routing-burst")
    s.add_argument("--url", required=True)
    s.add_argument("--n", type=int, default=1300)
    s.set_defaults(fn=cmd_routing_burst)
    s = sub.add_parser("soak-report")
    s.add_argument("file")
    s.add_argument("--warmup", type=float, default=300)
    s.add_argument("--limit", type=float, default=5.0)
    s.add_argument("--lag-floor", type=float, default=1000)
    s.set_defaults(fn=cmd_soak_report)
    a = p.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
