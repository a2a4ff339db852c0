"""A minimal NATS client over a plain socket (Python standard library only),
with the little of JetStream the tests need.

    nc = Nats(port)
    sub = nc.subscribe("frames.ready.p1")     # messages queue up in sub
    nc.flush()                                # the server has the SUB now
    nc.publish("processors.heartbeat.p1", b"{...}", headers={"X": "y"})
    msg = sub.next(timeout=5)                 # Msg(subject, reply, data, headers)
    rep = nc.request("$JS.API.STREAM.INFO.FRAMES", b"", timeout=5)

Text protocol: INFO, CONNECT (headers and no_responders on, verbose off),
PUB/HPUB, SUB/UNSUB, MSG/HMSG, PING/PONG, +OK/-ERR. One reader thread
parses everything the server sends and puts each message in its
subscription's queue. No reconnects: a test that restarts nats-server opens
a new client.
"""
import itertools
import json
import queue
import random
import socket
import string
import threading
import time


class NatsError(Exception):
    """-ERR from the server, a closed connection or a timeout."""


class Headers(dict):
    """Header names are case-insensitive (as in HTTP); values are the last
    value given. `status` and `description` come from the NATS/1.0 line
    (e.g. 404 "No Messages" on a JetStream pull)."""

    def __init__(self):
        super().__init__()
        self.status = None
        self.description = ""
        self.all = []  # [(name, value)] as sent

    def get(self, name, default=None):
        for k, v in reversed(self.all):
            if k.lower() == name.lower():
                return v
        return default

    def __contains__(self, name):
        return self.get(name) is not None

    def __getitem__(self, name):
        v = self.get(name)
        if v is None:
            raise KeyError(name)
        return v


def parse_headers(raw):
    """b"NATS/1.0[ 404 No Messages]\\r\\nName: value\\r\\n...\\r\\n\\r\\n" -> Headers."""
    h = Headers()
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\r\n")
    first = lines[0]
    if not first.startswith("NATS/1.0"):
        raise NatsError("bad header block %r" % raw[:80])
    rest = first[len("NATS/1.0"):].strip()
    if rest:
        code, _, desc = rest.partition(" ")
        if code.isdigit():
            h.status = int(code)
            h.description = desc
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if not sep:
            continue
        h.all.append((k.strip(), v.strip()))
    return h


def encode_headers(headers):
    out = ["NATS/1.0\r\n"]
    for k, v in (headers or {}).items():
        out.append("%s: %s\r\n" % (k, v))
    out.append("\r\n")
    return "".join(out).encode()


class Msg:
    __slots__ = ("subject", "sid", "reply", "data", "headers")

    def __init__(self, subject, sid, reply, data, headers):
        self.subject, self.sid, self.reply, self.data, self.headers = (
            subject, sid, reply, data, headers)

    def json(self):
        return json.loads(self.data)

    @property
    def status(self):
        return self.headers.status if self.headers is not None else None

    def __repr__(self):
        return "Msg(%r, reply=%r, headers=%r, data=%r)" % (
            self.subject, self.reply, self.headers.all if self.headers is not None else None,
            self.data[:200])


class Subscription:
    def __init__(self, nc, sid, subject):
        self.nc, self.sid, self.subject = nc, sid, subject
        self.queue = queue.Queue()

    def next(self, timeout=5.0):
        """The next message; NatsError on timeout or when the connection
        closed."""
        try:
            m = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise NatsError("no message on %s within %.1fs" % (self.subject, timeout))
        if m is None:
            self.queue.put(None)  # keep telling other waiters
            raise NatsError("connection closed: %s" % self.nc.error)
        return m

    def drain(self, wait=0.0):
        """Every message queued now (and arriving within `wait` seconds)."""
        out = []
        deadline = time.monotonic() + wait
        while True:
            try:
                left = deadline - time.monotonic()
                m = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                return out
            if m is None:
                self.queue.put(None)
                return out
            out.append(m)

    def unsubscribe(self):
        self.nc.unsubscribe(self)


class Nats:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, name="fb-it", connect=None):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb", buffering=1 << 16)
        self.wlock = threading.Lock()
        self.subs = {}
        self.sids = itertools.count(1)
        self.pongs = queue.Queue()
        self.error = None
        self.closed = False
        line = self.rf.readline()
        if not line.startswith(b"INFO "):
            raise NatsError("expected INFO, got %r" % line[:200])
        self.info = json.loads(line[5:])
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "lang": "python-stdlib", "version": "0.1", "name": name, "protocol": 1}
        opts.update(connect or {})
        self._send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        # Before the reader starts: the answer is PONG, or -ERR.
        while True:
            line = self.rf.readline()
            if line.startswith(b"PONG"):
                break
            if line.startswith(b"-ERR") or not line:
                raise NatsError("CONNECT refused: %r" % line)
            # +OK, PING or INFO updates: nothing to do yet
            if line.startswith(b"PING"):
                self._send(b"PONG\r\n")
        self.sock.settimeout(None)
        self.inbox_prefix = "_INBOX." + "".join(
            random.choice(string.ascii_letters + string.digits) for _ in range(16))
        self._inbox_sub = None
        self._requests = {}
        self._req_ids = itertools.count(1)
        self._reqlock = threading.Lock()
        self.reader = threading.Thread(target=self._read_loop, daemon=True)
        self.reader.start()

    # ------------------------------------------------------------- plumbing
    def _send(self, data):
        with self.wlock:
            self.sock.sendall(data)

    def _read_loop(self):
        rf = self.rf
        try:
            while True:
                line = rf.readline()
                if not line:
                    raise NatsError("server closed the connection")
                if line.startswith(b"MSG "):
                    # MSG <subject> <sid> [reply-to] <#bytes>
                    parts = line.split()
                    n = int(parts[-1])
                    reply = parts[3].decode() if len(parts) == 5 else None
                    data = rf.read(n + 2)[:-2]
                    self._deliver(Msg(parts[1].decode(), int(parts[2]), reply, data, None))
                elif line.startswith(b"HMSG "):
                    # HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
                    parts = line.split()
                    hn, total = int(parts[-2]), int(parts[-1])
                    reply = parts[3].decode() if len(parts) == 6 else None
                    blob = rf.read(total + 2)
                    hdrs = parse_headers(blob[:hn])
                    self._deliver(Msg(parts[1].decode(), int(parts[2]), reply,
                                      blob[hn:total], hdrs))
                elif line.startswith(b"PING"):
                    self._send(b"PONG\r\n")
                elif line.startswith(b"PONG"):
                    self.pongs.put(True)
                elif line.startswith(b"-ERR"):
                    self.error = line.decode(errors="replace").strip()
                elif line.startswith((b"+OK", b"INFO")):
                    pass
                else:
                    raise NatsError("unexpected line from server: %r" % line[:200])
        except (OSError, ValueError, NatsError) as e:
            if not self.closed:
                self.error = self.error or str(e)
        finally:
            self.closed = True
            self.pongs.put(False)
            for s in list(self.subs.values()):
                s.queue.put(None)

    def _deliver(self, msg):
        s = self.subs.get(msg.sid)
        if s is not None:
            s.queue.put(msg)

    # ------------------------------------------------------------ commands
    def subscribe(self, subject, queue_group=None):
        sid = next(self.sids)
        s = Subscription(self, sid, subject)
        self.subs[sid] = s
        q = (" " + queue_group) if queue_group else ""
        self._send(("SUB %s%s %d\r\n" % (subject, q, sid)).encode())
        return s

    def unsubscribe(self, sub):
        self.subs.pop(sub.sid, None)
        if not self.closed:
            self._send(b"UNSUB %d\r\n" % sub.sid)

    def publish(self, subject, data=b"", headers=None, reply=None):
        if isinstance(data, str):
            data = data.encode()
        r = (" " + reply) if reply else ""
        if headers:
            hb = encode_headers(headers)
            self._send(b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
                subject.encode(), r.encode(), len(hb), len(hb) + len(data), hb, data))
        else:
            self._send(b"PUB %s%s %d\r\n%s\r\n" % (subject.encode(), r.encode(), len(data), data))

    def publish_many(self, items):
        """[(subject, data)] in one write (acks, bulk heartbeats)."""
        out = []
        for subject, data in items:
            if isinstance(data, str):
                data = data.encode()
            out.append(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(data), data))
        if out:
            self._send(b"".join(out))

    def flush(self, timeout=5.0):
        """PING and wait for the PONG: everything sent before is processed
        by the server (subscriptions are in place)."""
        if self.closed:
            raise NatsError("connection closed: %s" % self.error)
        self._send(b"PING\r\n")
        try:
            ok = self.pongs.get(timeout=timeout)
        except queue.Empty:
            raise NatsError("no PONG within %.1fs" % timeout)
        if not ok:
            raise NatsError("connection closed: %s" % self.error)

    def new_inbox(self):
        return "%s.%d" % (self.inbox_prefix, next(self._req_ids))

    def request(self, subject, data=b"", timeout=5.0, headers=None):
        """Publishes with a fresh inbox as reply subject and returns the first
        answer. A 503 no-responders status raises NatsError."""
        inbox = self.new_inbox()
        sub = self.subscribe(inbox)
        try:
            self.publish(subject, data, headers=headers, reply=inbox)
            m = sub.next(timeout)
        finally:
            self.unsubscribe(sub)
        if m.status == 503:
            raise NatsError("no responders on %s" % subject)
        return m

    def close(self):
        if self.closed and not self.reader.is_alive():
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reader.join(5)
        try:
            self.rf.close()
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------ JetStream
class JetStreamError(NatsError):
    pass


class JetStream:
    """The JetStream API subjects, as plain requests."""

    def __init__(self, nc, timeout=5.0):
        self.nc = nc
        self.timeout = timeout

    def api(self, subject, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        m = self.nc.request("$JS.API." + subject, data, timeout=self.timeout)
        doc = m.json()
        return doc

    def _check(self, doc, what):
        if "error" in doc:
            raise JetStreamError("%s: %s" % (what, doc["error"]))
        return doc

    def stream_info(self, stream):
        """The INFO document, or raises JetStreamError (code 404 when it does
        not exist: .code)."""
        doc = self.api("STREAM.INFO." + stream)
        if "error" in doc:
            e = JetStreamError("stream %s: %s" % (stream, doc["error"]))
            e.code = doc["error"].get("code")
            raise e
        return doc

    def add_pull_consumer(self, stream, durable, filter_subject=None, ack_wait_s=60,
                          max_ack_pending=-1):
        cfg = {"durable_name": durable, "ack_policy": "explicit", "deliver_policy": "all",
               "ack_wait": int(ack_wait_s * 1e9), "max_ack_pending": max_ack_pending,
               "max_waiting": 512}
        if filter_subject:
            cfg["filter_subject"] = filter_subject
        return self._check(self.api("CONSUMER.DURABLE.CREATE.%s.%s" % (stream, durable),
                                    {"stream_name": stream, "config": cfg}),
                           "creating consumer %s on %s" % (durable, stream))

    def delete_consumer(self, stream, durable):
        return self.api("CONSUMER.DELETE.%s.%s" % (stream, durable))

    def fetch(self, stream, durable, batch, expires=1.0, no_wait=False):
        """Up to `batch` messages (fewer when the stream has no more within
        `expires` seconds). Messages carry their ack subject in .reply."""
        inbox = self.nc.new_inbox()
        sub = self.nc.subscribe(inbox)
        out = []
        try:
            self.nc.publish("$JS.API.CONSUMER.MSG.NEXT.%s.%s" % (stream, durable),
                            json.dumps({"batch": batch, "no_wait": True} if no_wait else
                                       {"batch": batch, "expires": int(expires * 1e9)}).encode(),
                            reply=inbox)
            deadline = time.monotonic() + expires + 2.0
            while len(out) < batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    m = sub.next(left)
                except NatsError:
                    break
                if m.status is not None and not m.data:
                    # 404 no messages, 408 request timeout, 409 ...: the pull is over
                    if m.status in (404, 408, 409):
                        break
                    if m.status == 100:  # idle heartbeat
                        continue
                    raise JetStreamError("pull from %s: status %s %s" % (
                        durable, m.status, m.headers.description))
                out.append(m)
        finally:
            self.nc.unsubscribe(sub)
        return out

    def ack_all(self, msgs):
        self.nc.publish_many([(m.reply, b"+ACK") for m in msgs if m.reply])

    def fetch_all(self, stream, durable, batch=1000, idle=1.0, ack=True, limit=None):
        """Pulls until the consumer has nothing more for `idle` seconds;
        acks everything (work-queue retention removes it). Returns the
        messages."""
        out = []
        while limit is None or len(out) < limit:
            got = self.fetch(stream, durable, batch, expires=idle)
            if ack:
                self.ack_all(got)
            out.extend(got)
            if not got:
                break
        if ack:
            self.nc.flush()
        return out
