"""Integration test harness: real redis-server / nats-server / frame-buffer
processes on free loopback ports, each in its own temporary directory.

Binaries come from $FB_BIN_DIR (ctest sets it), default build/bin (relative
paths are taken from the repository root). A missing binary FAILS the test
with a clear message; nothing is skipped.

    class MyTest(harness.IntegrationTest):
        def test_x(self):
            redis = self.start_redis()
            gw = self.start_gateway(redis)
            status, headers, body = gw.get("/health")

Everything started through start_* is stopped when the test ends, pass or
fail. When a test fails or errors, the stderr of every gateway it started
(and the log of every redis-server) is printed.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from httpc import http
from resp import Redis, ResponseError, xrange_all, info_map  # noqa: F401 (re-exported)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LOG_LEVEL = os.environ.get("FB_TEST_LOG_LEVEL", "info")


# ---------------------------------------------------------------- binaries
class MissingBinary(AssertionError):
    """Raised (as a test failure, never a skip) when a program is missing."""


def bin_dir():
    d = os.environ.get("FB_BIN_DIR", "build/bin")
    return d if os.path.isabs(d) else os.path.join(REPO, d)


def fb_binary(name):
    path = os.path.join(bin_dir(), name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise MissingBinary(
            "%s not found at %s: build the project and point FB_BIN_DIR at its bin/ "
            "directory (ctest sets it)" % (name, path))
    return path


def system_binary(name):
    path = shutil.which(name)
    if not path:
        for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"):
            if os.access(os.path.join(d, name), os.X_OK):
                path = os.path.join(d, name)
                break
    if not path:
        raise MissingBinary("%s is not installed (not on PATH nor in /usr/bin, /usr/sbin)" % name)
    return path


# --------------------------------------------------------------- utilities
def free_port():
    """A port the kernel just gave us on 127.0.0.1 (bound to 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns something truthy; returns it.
    Raises AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except (OSError, ConnectionError) as e:  # server not up yet
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, " (last error: %s)" % last_exc if last_exc else ""))
        time.sleep(interval)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def read_text(path, limit=200000):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if len(data) > limit:
        data = b"[... %d bytes cut ...]\n" % (len(data) - limit) + data[-limit:]
    return data.decode("utf-8", errors="replace")


# ------------------------------------------------------------------ Redis
class RedisServer:
    """redis-server in its own directory. persistent=True turns on the AOF
    with appendfsync always, so data survives SHUTDOWN + start()."""

    def __init__(self, workdir, persistent=False):
        self.binary = system_binary("redis-server")
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.persistent = persistent
        self.port = None
        self.proc = None
        self.logfile = os.path.join(self.dir, "redis.log")
        self.name = "redis-server"

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, timeout=10.0):
        """Starts the server; on the same port as before when restarting."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            args = [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", self.dir, "--save", "", "--daemonize", "no",
                    "--logfile", self.logfile, "--protected-mode", "no"]
            if self.persistent:
                args += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                args += ["--appendonly", "no"]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with Redis(port, timeout=1.0) as r:
                        if r.command("PING") == b"PONG":
                            self.port = port
                            return self
                except (OSError, ConnectionError, ResponseError):
                    time.sleep(0.02)
            self._kill()
        raise AssertionError("redis-server did not start (port %s); its log:\n%s"
                             % (self.port, read_text(self.logfile)[-4000:]))

    def client(self, timeout=30.0):
        return Redis(self.port, timeout=timeout)

    def shutdown(self, timeout=10.0):
        """SHUTDOWN (the AOF is fsynced), then wait for the process."""
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            with Redis(self.port, timeout=5.0) as r:
                r.command("SHUTDOWN")
        except (OSError, ConnectionError, ResponseError):
            pass  # the connection closes as the server exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._kill()

    def log(self):
        return read_text(self.logfile, 4000)


# ------------------------------------------------------------------- NATS
class NatsServer:
    """nats-server (with JetStream when jetstream=True) in its own directory."""

    def __init__(self, workdir, jetstream=False):
        self.binary = system_binary("nats-server")
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.jetstream = jetstream
        self.port = None
        self.proc = None
        self.logfile = os.path.join(self.dir, "nats.log")
        self.name = "nats-server"

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            args = [self.binary, "-a", "127.0.0.1", "-p", str(port), "-l", self.logfile]
            if self.jetstream:
                args += ["-js", "-sd", os.path.join(self.dir, "js")]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if port_open(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            self.stop()
        raise AssertionError("nats-server did not start; its log:\n%s"
                             % read_text(self.logfile)[-4000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        return read_text(self.logfile, 20000)


# ---------------------------------------------------------------- gateway
class Gateway:
    """The frame-buffer binary with its settings in the environment.
    Its stdout and stderr go to a file in its directory (log())."""

    def __init__(self, workdir, redis_url, consumer_name="fb-it", env=None, args=None):
        self.binary = fb_binary("frame-buffer")
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.redis_url = redis_url
        self.consumer_name = consumer_name
        self.extra_env = dict(env or {})
        self.args = list(args or [])
        self.port = None
        self.proc = None
        self.starts = 0
        self.logfile = os.path.join(self.dir, "gateway.log")
        self.name = "frame-buffer"

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def environment(self):
        env = dict(os.environ)
        for k in list(env):  # settings of the developer's shell must not leak in
            if k in ("API_TOKEN", "ROUTING_STRATEGY", "INPUT_STREAM", "CONSUMER_GROUP",
                     "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "LISTEN",
                     "OVERLOAD_POLICY", "MAX_DELIVERIES", "BATCH_SIZE", "CLAIM_IDLE_MS",
                     "FRAME_MAX_AGE_MS", "HEARTBEAT_TIMEOUT_MS", "LOG_FORMAT",
                     "NATS_JETSTREAM", "NATS_TOKEN", "NATS_USER", "NATS_PASSWORD",
                     "NATS_CREDS", "NATS_TLS_CA", "DLQ_MAXLEN", "SLOW_START_MS", "HASH_BOUND"):
                del env[k]
        env.update({"REDIS_URL": self.redis_url, "NATS_URL": "none", "PORT": str(self.port),
                    "CONSUMER_NAME": self.consumer_name, "LOG_LEVEL": LOG_LEVEL})
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def start(self, wait_ready=True, timeout=20.0):
        """Starts (or restarts, on the same HTTP port) the gateway; by default
        waits until /readyz answers 200."""
        attempts = 1 if self.port else 3
        for _ in range(attempts):
            if not self.port:
                self.port = free_port()
            self.starts += 1
            with open(self.logfile, "ab") as log:
                log.write(b"===== start %d: port %d =====\n" % (self.starts, self.port))
                log.flush()
                self.proc = subprocess.Popen([self.binary] + self.args, env=self.environment(),
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            # Probe with a real HTTP request: a bare TCP connect-and-close is
            # its own test (test_api), not something to build the harness on.
            try:
                wait_for(lambda: self.proc.poll() is not None or self.ready_status() is not None,
                         timeout, what="the gateway to answer HTTP on port %d" % self.port)
            except AssertionError:
                self.kill()
                raise
            if self.proc.poll() is None:
                break
            if "cannot listen" in read_text(self.logfile) and self.starts < 3:
                self.port = None  # lost a race for the port: try another
                continue
            raise AssertionError("frame-buffer exited at start with status %s" % self.proc.returncode)
        else:
            raise AssertionError("frame-buffer could not listen on a free port")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def ready_status(self):
        try:
            return http("GET", self.base, "/readyz", timeout=2.0)[0]
        except (OSError, ConnectionError):
            return None

    def wait_ready(self, timeout=20.0):
        def ok():
            if self.proc.poll() is not None:
                raise AssertionError("frame-buffer exited (status %s) before it was ready"
                                     % self.proc.returncode)
            return self.ready_status() == 200
        wait_for(ok, timeout, what="/readyz to answer 200")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL when it does not exit in time. Returns the
        exit status."""
        if not self.proc:
            return None
        if self.proc.poll() is not None and not getattr(self.proc, "reported", False):
            self.proc.reported = True
            rc = self.proc.returncode
            with open(self.logfile, "ab") as log:
                log.write(b"===== harness: the gateway had exited on its own, status %d%s =====\n"
                          % (rc, b" (%s)" % signal.Signals(-rc).name.encode() if rc < 0 else b""))
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with open(self.logfile, "ab") as log:
                    log.write(b"===== harness: no exit %.0fs after SIGTERM; SIGKILL =====\n"
                              % timeout)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        """kill -9."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc.reported = True
            with open(self.logfile, "ab") as log:
                log.write(b"===== harness: SIGKILL =====\n")

    def log(self):
        return read_text(self.logfile)

    # HTTP shortcuts
    def request(self, method, path, body=None, headers=None, raw=None, timeout=10.0):
        return http(method, self.base, path, body=body, headers=headers, raw=raw, timeout=timeout)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def register(self, pid, capabilities, capacity=4, queue="", headers=None, **extra):
        body = {"id": pid, "capabilities": list(capabilities), "capacity": capacity,
                "queue": queue}
        body.update(extra)
        return self.post("/api/v1/processors/register", body, headers=headers)


# ------------------------------------------------------------ test cases
class _Resources:
    def __init__(self):
        self.items = []  # things with .log() and .name, in start order

    def dump(self, out, title):
        for it in self.items:
            text = getattr(it, "final_log", None) or it.log()
            out.write("\n----- %s: %s (%s) -----\n%s\n----- end of %s -----\n"
                      % (title, it.name, it.dir, text.rstrip() or "(empty)", it.name))


class IntegrationTest(unittest.TestCase):
    """Starts servers on demand and stops them all when the test ends. Logs
    of every process are printed when the test fails."""

    maxDiff = None
    _class_resources = None

    # -- lifecycle
    def run(self, result=None):
        self._resources = _Resources()
        before = (len(result.failures) + len(result.errors)) if result is not None else 0
        out = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > before:
            sys.stderr.write("\n===== logs of %s =====" % self.id())
            self._resources.dump(sys.stderr, "test")
            if type(self)._class_resources:
                type(self)._class_resources.dump(sys.stderr, "class")
            sys.stderr.flush()
        return out

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fb-it-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _keep(self, thing, stop):
        self._resources.items.append(thing)

        def stop_and_keep_log():
            try:
                stop()
            finally:  # the temporary directory goes away before logs are shown
                thing.final_log = thing.log()
        self.addCleanup(stop_and_keep_log)
        return thing

    def start_redis(self, persistent=False):
        r = RedisServer(tempfile.mkdtemp(prefix="redis-", dir=self.tmp), persistent)
        self._keep(r, r.stop)
        return r.start()

    def start_nats(self, jetstream=False):
        n = NatsServer(tempfile.mkdtemp(prefix="nats-", dir=self.tmp), jetstream)
        self._keep(n, n.stop)
        return n.start()

    def new_gateway(self, redis, consumer_name="fb-it", env=None, args=None):
        g = Gateway(tempfile.mkdtemp(prefix="gw-", dir=self.tmp), redis.url, consumer_name,
                    env, args)
        return self._keep(g, g.stop)

    def start_gateway(self, redis, consumer_name="fb-it", env=None, args=None, wait_ready=True):
        return self.new_gateway(redis, consumer_name, env, args).start(wait_ready)

    def client(self, redis):
        c = redis.client()
        self.addCleanup(c.close)
        return c

    # class-wide servers (setUpClass), for suites of quick API checks
    @classmethod
    def class_tmp(cls):
        d = tempfile.mkdtemp(prefix="fb-it-%s-" % cls.__name__)
        cls.addClassCleanup(shutil.rmtree, d, ignore_errors=True)
        cls._class_resources = _Resources()
        return d

    @classmethod
    def class_redis(cls, tmp):
        r = RedisServer(os.path.join(tmp, "redis"))
        cls._class_resources.items.append(r)
        cls.addClassCleanup(r.stop)
        return r.start()

    @classmethod
    def class_gateway(cls, tmp, redis, consumer_name="fb-it", env=None):
        g = Gateway(os.path.join(tmp, "gw"), redis.url, consumer_name, env)
        cls._class_resources.items.append(g)
        cls.addClassCleanup(g.stop)
        try:
            return g.start()
        except AssertionError as e:
            raise AssertionError("%s\ngateway log:\n%s" % (e, g.log()))

    # -- assertions
    def assertStatus(self, resp, status, msg=""):
        """resp is (status, headers, body)."""
        self.assertEqual(resp[0], status, "%s: expected HTTP %d, got %d with body %r"
                         % (msg or "request", status, resp[0], resp[2]))

    def assertDetail(self, resp, status, msg=""):
        """An error response: the status, and {"detail": "<non-empty>"}."""
        self.assertStatus(resp, status, msg)
        body = resp[2]
        self.assertIsInstance(body, dict, "%s: error body is not a JSON object: %r" % (msg, body))
        self.assertIsInstance(body.get("detail"), str, "%s: no detail in %r" % (msg, body))
        self.assertTrue(body["detail"], "%s: empty detail" % msg)


# ------------------------------------------------------------- frames
def add_frames(r, frames, stream="frames:metadata"):
    """XADDs every frame (a dict of fields) with pipelining; returns the ids."""
    cmds = []
    for f in frames:
        c = ["XADD", stream, "*"]
        for k, v in f.items():
            c += [k, v]
        cmds.append(c)
    ids = r.pipeline(cmds)
    for i in ids:
        if isinstance(i, ResponseError):
            raise i
    return [i.decode() for i in ids]


def stream_lengths(r, keys):
    return dict(zip(keys, r.pipeline([("XLEN", k) for k in keys])))


def pending_count(r, stream="frames:metadata", group="frame-buffer-group"):
    """The number of entries pending in the group (XPENDING summary)."""
    rep = r.command("XPENDING", stream, group)
    return rep[0]


def wait_stream_total(r, keys, n, timeout, what=None):
    """Waits until the streams `keys` together hold at least n entries;
    returns {key: length}."""
    lens = {}

    def done():
        lens.clear()
        lens.update(stream_lengths(r, keys))
        return sum(lens.values()) >= n
    try:
        wait_for(done, timeout, interval=0.05, what=what or "%d entries in %s" % (n, keys))
    except AssertionError as e:
        raise AssertionError("%s; lengths now %s" % (e, lens))
    return dict(lens)


def wait_no_pending(r, timeout=10.0, stream="frames:metadata", group="frame-buffer-group"):
    """Waits until nothing is pending in the input group; returns the last
    XPENDING summary when it never gets there (for the assertion message)."""
    last = [None]

    def done():
        last[0] = r.command("XPENDING", stream, group)
        return last[0][0] == 0
    try:
        wait_for(done, timeout, what="XPENDING %s %s to reach 0" % (stream, group))
        return None
    except AssertionError:
        return last[0]


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


# ------------------------------------------------------------- metrics
def scrape(gw):
    """GET /metrics as {series: value}, a series written as Prometheus
    renders it: 'frame_buffer_dlq_total{reason="expired"}'."""
    status, _, text = gw.get("/metrics")
    if status != 200:
        raise AssertionError("GET /metrics answered %d: %r" % (status, text))
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        out[series] = float(value)
    return out


def metric(samples, name, **labels):
    """One value from scrape()'s result; labels in any order. Raises
    AssertionError naming the series when it is not there."""
    want = {k: str(v) for k, v in labels.items()}
    for series, value in samples.items():
        base, _, rest = series.partition("{")
        if base != name:
            continue
        got = {}
        for part in rest.rstrip("}").split(",") if rest else []:
            k, _, v = part.partition("=")
            got[k] = v.strip('"')
        if got == want:
            return value
    raise AssertionError("metric %s%s is not in /metrics" % (name, want or ""))
