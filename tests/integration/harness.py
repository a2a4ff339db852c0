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

For high availability: start_redis_sentinel() (RedisSentinelSet: primary,
replica, three sentinels) and start_nats_cluster() (NatsCluster: three
JetStream nodes in one cluster).
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
import urllib.error
import urllib.request

from httpc import http
from natsc import JetStream, Nats, NatsError
from resp import Redis, ResponseError, pairs, xrange_all, info_map  # noqa: F401 (re-exported)

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
def redis_connect(port, password=None, timeout=30.0):
    """A resp.Redis on 127.0.0.1:port, AUTHed when a password is given."""
    r = Redis(port, timeout=timeout)
    if password:
        try:
            r.command("AUTH", password)
        except BaseException:
            r.close()
            raise
    return r


class RedisServer:
    """redis-server in its own directory. persistent=True turns on the AOF
    with appendfsync always, so data survives SHUTDOWN + start(). With a
    password, it requires AUTH (and uses it towards its primary)."""

    def __init__(self, workdir, persistent=False, password=None):
        self.binary = system_binary("redis-server")
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.persistent = persistent
        self.password = password
        self.port = None
        self.proc = None
        self.logfile = os.path.join(self.dir, "redis.log")
        self.name = "redis-server"

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def arguments(self, port):
        """The command line of a start on `port`."""
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--daemonize", "no",
                "--logfile", self.logfile, "--protected-mode", "no"]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        return args

    def start(self, timeout=10.0, extra_args=()):
        """Starts the server; on the same port as before when restarting.
        extra_args are added to the command line of this start only."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            self.proc = subprocess.Popen(self.arguments(port) + list(extra_args),
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with redis_connect(port, self.password, timeout=1.0) as r:
                        if r.command("PING") == b"PONG":
                            self.port = port
                            return self
                except (OSError, ConnectionError, ResponseError):
                    time.sleep(0.02)
            self._kill()
        raise AssertionError("%s did not start (port %s); its log:\n%s"
                             % (self.name, self.port, read_text(self.logfile)[-4000:]))

    def client(self, timeout=30.0):
        return redis_connect(self.port, self.password, timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self, timeout=10.0):
        """SHUTDOWN (the AOF is fsynced), then wait for the process."""
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            with redis_connect(self.port, self.password, timeout=5.0) as r:
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

    def kill(self):
        """kill -9."""
        self._kill()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self._kill()

    def log(self):
        return read_text(self.logfile, 4000)


class _ConfRedis(RedisServer):
    """redis-server started from a config file of its own: sentinel rewrites
    it (CONFIG REWRITE on a data node, its state on a sentinel), so what
    sentinel set survives a restart, as in a real deployment."""

    conf_name = "redis.conf"

    def __init__(self, workdir, persistent=False, password=None):
        super().__init__(workdir, persistent, password)
        self.conf = os.path.join(self.dir, self.conf_name)
        self._conf_port = None

    def config_lines(self, port):
        raise NotImplementedError

    def arguments(self, port):
        if self._conf_port != port:  # first start, or a retry on another port
            with open(self.conf, "w") as f:
                f.write("\n".join(self.config_lines(port)) + "\n")
            self._conf_port = port
        return [self.binary, self.conf]


class SentinelDataNode(_ConfRedis):
    """A data node of a RedisSentinelSet: the primary, or a replica of the
    port `replicaof` (at its first start; later sentinel decides)."""

    def __init__(self, workdir, replicaof=None, persistent=False, password=None):
        super().__init__(workdir, persistent, password)
        self.replicaof = replicaof

    def config_lines(self, port):
        lines = ["port %d" % port, "bind 127.0.0.1", "protected-mode no", "daemonize no",
                 'dir "%s"' % self.dir, 'logfile "%s"' % self.logfile, 'save ""',
                 "replica-announce-ip 127.0.0.1",
                 # a (re)joining replica is synced at once, not after 5 s
                 "repl-diskless-sync-delay 0"]
        if self.persistent:
            lines += ["appendonly yes", "appendfsync always"]
        else:
            lines += ["appendonly no"]
        if self.password:
            lines += ['requirepass "%s"' % self.password, 'masterauth "%s"' % self.password]
        if self.replicaof:
            lines += ["replicaof 127.0.0.1 %d" % self.replicaof]
        return lines


# SENTINEL DEBUG settings the harness applies to every sentinel it starts
# (runtime only: they are not written to the config file).
#  - info-period: stock sentinel refreshes INFO of an instance every 10 s, so
#    a restarted node took ~20 s to be seen as a synced replica;
#  - publish-period: a master that came back (the old primary) is turned
#    into a replica 4 publish periods (stock: 8 s) after its role changed;
#  - ping-period: sentinel reconnects to an instance at most once a ping
#    period (stock: 1 s), and a new primary must answer a PING within
#    down-after-milliseconds (1 s here) of the switch: with the stock period
#    sentinels sometimes saw the brand-new primary as down and failed over
#    again, back to the old one. Not lower than 400 ms: while the primary is
#    down a replica is a candidate only if its INFO (refreshed every 1 s
#    then) is younger than 5 ping periods (200 ms gave "no good slave").
SENTINEL_DEBUG = {"info-period": 1000, "publish-period": 500, "ping-period": 400}


class SentinelNode(_ConfRedis):
    """One `redis-server --sentinel` watching one master; `debug` is given
    to SENTINEL DEBUG after every start."""

    conf_name = "sentinel.conf"

    def __init__(self, workdir, master_name, master_port, quorum=2, password=None,
                 sentinel_password=None, debug=None):
        super().__init__(workdir, False, sentinel_password)
        self.logfile = os.path.join(self.dir, "sentinel.log")
        self.name = "redis-sentinel"
        self.master_name = master_name
        self.master_port = master_port
        self.quorum = quorum
        self.data_password = password
        self.debug = dict(debug or {})

    def start(self, timeout=10.0, extra_args=()):
        super().start(timeout, extra_args)
        if self.debug:
            args = []
            for k, v in self.debug.items():
                args += [k, v]
            with self.client(5.0) as r:
                r.command("SENTINEL", "DEBUG", *args)
        return self

    def config_lines(self, port):
        m = self.master_name
        lines = ["port %d" % port, "bind 127.0.0.1", "protected-mode no", "daemonize no",
                 'dir "%s"' % self.dir, 'logfile "%s"' % self.logfile,
                 "sentinel announce-ip 127.0.0.1", "sentinel announce-port %d" % port,
                 "sentinel resolve-hostnames no", "sentinel announce-hostnames no",
                 "sentinel monitor %s 127.0.0.1 %d %d" % (m, self.master_port, self.quorum),
                 "sentinel down-after-milliseconds %s 1000" % m,
                 "sentinel failover-timeout %s 5000" % m,
                 "sentinel parallel-syncs %s 1" % m]
        if self.data_password:
            lines += ['sentinel auth-pass %s "%s"' % (m, self.data_password)]
        if self.password:  # the sentinels' own password, also between themselves
            lines += ['requirepass "%s"' % self.password,
                      'sentinel sentinel-pass "%s"' % self.password]
        return lines

    def arguments(self, port):
        return super().arguments(port) + ["--sentinel"]


def _info(reply):
    """An INFO reply -> {field: value} (str)."""
    out = {}
    for line in reply.decode(errors="replace").splitlines():
        k, sep, v = line.partition(":")
        if sep and not k.startswith("#"):
            out[k] = v.strip()
    return out


class RedisSentinelSet:
    """A primary redis-server, one replica and three sentinels (quorum 2,
    down-after 1 s, failover-timeout 5 s), each in its own directory under
    `workdir`, all on 127.0.0.1. Data nodes and sentinels run from config
    files of their own that sentinel rewrites.

        s = self.start_redis_sentinel()          # in an IntegrationTest
        gw = self.start_gateway(s, env=s.gateway_env())
        old = s.kill_primary()
        new = s.wait_new_primary(old)
        s.restart(old)          # comes back as a replica of `new`

    password protects the data nodes (sentinels get auth-pass);
    sentinel_password protects the sentinels (requirepass, sentinel-pass);
    sentinel_debug: SENTINEL DEBUG settings (see SENTINEL_DEBUG; {} for
    stock timings)."""

    def __init__(self, workdir, master_name="fbmaster", password=None, sentinel_password=None,
                 persistent=False, sentinel_debug=SENTINEL_DEBUG):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.name = "redis-sentinel-set"
        self.master_name = master_name
        self.password = password
        self.sentinel_password = sentinel_password
        self.servers = [SentinelDataNode(os.path.join(self.dir, "redis-%d" % i),
                                         persistent=persistent, password=password)
                        for i in range(2)]
        self.sentinel_nodes = [SentinelNode(os.path.join(self.dir, "sentinel-%d" % i),
                                            master_name, None, 2, password, sentinel_password,
                                            sentinel_debug)
                               for i in range(3)]

    # -- addresses
    @property
    def sentinels(self):
        """"127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3" (REDIS_SENTINELS)."""
        return ",".join("127.0.0.1:%d" % s.port for s in self.sentinel_nodes)

    @property
    def url(self):
        """A REDIS_URL for the data nodes: the password and db matter, the
        address is the primary's now."""
        try:
            port = self.primary_port()
        except AssertionError:
            port = self.servers[0].port
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, port)

    def gateway_env(self, **extra):
        """REDIS_SENTINELS, REDIS_SENTINEL_MASTER (and _PASSWORD) for a
        Gateway's env=, plus `extra`."""
        env = {"REDIS_SENTINELS": self.sentinels, "REDIS_SENTINEL_MASTER": self.master_name}
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        env.update(extra)
        return env

    def server(self, port):
        """The data node on `port`."""
        for s in self.servers:
            if s.port == port:
                return s
        raise AssertionError("no data node of the sentinel set on port %s (ports %s)"
                             % (port, [s.port for s in self.servers]))

    # -- clients
    def client(self, port=None, timeout=30.0):
        """A resp.Redis on the data node `port` (default: the primary)."""
        return redis_connect(port or self.primary_port(), self.password, timeout)

    def sentinel_client(self, i=0, timeout=5.0):
        return redis_connect(self.sentinel_nodes[i].port, self.sentinel_password, timeout)

    def _sentinel(self, i, *cmd):
        with self.sentinel_client(i) as s:
            return s.command("SENTINEL", *cmd)

    def _data(self, port, *cmd):
        with redis_connect(port, self.password, 2.0) as r:
            return r.command(*cmd)

    def role(self, port):
        """ROLE of a data node, decoded: ["master", ...] / ["slave", host,
        port, state, offset]."""
        return [x.decode() if isinstance(x, bytes) else x for x in self._data(port, "ROLE")]

    def _views(self):
        """{sentinel index: the primary port it reports (None: no answer)}
        over the running sentinels."""
        out = {}
        for i, s in enumerate(self.sentinel_nodes):
            if not s.running():
                continue
            try:
                addr = self._sentinel(i, "get-master-addr-by-name", self.master_name)
                out[i] = int(addr[1]) if addr else None
            except (OSError, ConnectionError, ResponseError):
                out[i] = None
        return out

    def primary_port(self):
        """The primary's port as the first sentinel that answers says."""
        for port in self._views().values():
            if port:
                return port
        raise AssertionError("no sentinel of %s answers get-master-addr-by-name"
                             % self.master_name)

    # -- lifecycle
    def start(self, timeout=30.0):
        """Starts the primary, the replica and the sentinels; waits until
        the replica is in sync and every sentinel knows the master, sees the
        replica and the two other sentinels (a failover can happen)."""
        primary, replica = self.servers
        primary.start()
        replica.replicaof = primary.port
        replica.start()
        for s in self.sentinel_nodes:
            s.master_port = primary.port
            s.start()
        self.wait_healthy(timeout)
        return self

    def _problem(self):
        """What keeps the set from being healthy (see wait_healthy), or ""."""
        views = self._views()
        if not views:
            return "no sentinel is running"
        ports = set(views.values())
        if len(ports) != 1 or None in ports:
            return "the sentinels report the primary as %s" % views
        p = ports.pop()
        role = self.role(p)
        if role[0] != "master":
            return "the reported primary %d answers ROLE %s" % (p, role)
        live = [s.port for s in self.servers if s.running() and s.port != p]
        info = _info(self._data(p, "INFO", "replication"))
        online = {int(dict(kv.split("=", 1) for kv in v.split(","))["port"])
                  for k, v in info.items() if k.startswith("slave") and "state=online" in v}
        if set(live) - online:
            return "replicas %s are not online on the primary %d (INFO: %s)" % (
                sorted(set(live) - online), p, info)
        for i in views:
            m = pairs(self._sentinel(i, "master", self.master_name))
            if m.get("flags") != "master":
                return "sentinel %d: master flags %r" % (i, m.get("flags"))
            reps = {int(r["port"]): r for r in
                    map(pairs, self._sentinel(i, "replicas", self.master_name))}
            for port in live:
                r = reps.get(port)
                if (not r or r.get("flags") != "slave" or r.get("master-link-status") != "ok"
                        or int(r.get("master-port", 0)) != p):
                    return "sentinel %d: replica %d is %s" % (i, port, r)
            others = {int(x["port"]): x["flags"] for x in
                      map(pairs, self._sentinel(i, "sentinels", self.master_name))}
            for j, s in enumerate(self.sentinel_nodes):
                # master_down is only that sentinel's last vote (kept for 5 s)
                flags = set(others.get(s.port, "unknown").split(",")) - {"master_down"}
                if j != i and s.running() and flags != {"sentinel"}:
                    return "sentinel %d: sentinel %d is %s (knows %s)" % (
                        i, j, others.get(s.port, "unknown"), others)
        return ""

    def wait_healthy(self, timeout=30.0):
        """Waits until the running sentinels agree on a primary that answers
        ROLE master, every other running data node is an online replica of
        it, and every running sentinel sees those replicas (link ok) and the
        other running sentinels, with no failover in progress."""
        why = ["not checked yet"]

        def ok():
            try:
                why[0] = self._problem()
            except ResponseError as e:  # LOADING, MASTERDOWN...
                why[0] = "error: %s" % e
            return not why[0]
        try:
            wait_for(ok, timeout, interval=0.1, what="the sentinel set to be healthy")
        except AssertionError as e:
            raise AssertionError("%s: %s" % (e, why[0]))
        return self.primary_port()

    def kill_primary(self):
        """kill -9 of the data node serving as primary; returns its port."""
        port = self.primary_port()
        node = self.server(port)
        if not node.running():
            raise AssertionError("the sentinels still report %d as primary, but it is down"
                                 % port)
        node.kill()
        return port

    def failover(self, timeout=10.0):
        """SENTINEL FAILOVER on a running sentinel (again while it answers
        NOGOODSLAVE, for up to `timeout` s); returns the old primary's port."""
        old = self.primary_port()
        i = next(i for i, s in enumerate(self.sentinel_nodes) if s.running())
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sentinel(i, "failover", self.master_name)
                return old
            except ResponseError as e:
                if not str(e).startswith("NOGOODSLAVE") or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def wait_new_primary(self, old_port, timeout=30.0):
        """Waits until every running sentinel reports a primary other than
        old_port and has finished the failover (its master entry is the new
        primary, no failover in progress), and that server answers ROLE
        master; returns its port."""
        last = [None]

        def new():
            views = last[0] = self._views()
            ports = set(views.values())
            if len(ports) != 1:
                return None
            p = ports.pop()
            try:
                if p in (None, old_port) or self.role(p)[0] != "master":
                    return None
                for i in views:
                    m = pairs(self._sentinel(i, "master", self.master_name))
                    if int(m["port"]) != p or "failover_in_progress" in m["flags"]:
                        last[0] = "sentinel %d: master %s flags %s" % (i, m["port"], m["flags"])
                        return None
            except ResponseError:
                return None
            return p
        try:
            return wait_for(new, timeout, interval=0.05,
                            what="a primary other than %d" % old_port)
        except AssertionError as e:
            raise AssertionError("%s (sentinels report %s)" % (e, last[0]))

    def wait_replica(self, port, timeout=30.0):
        """Waits until the data node `port` is an online replica of the
        primary and every running sentinel sees it so (and the set is
        healthy otherwise)."""
        self.wait_healthy(timeout)
        if self.primary_port() == port:
            raise AssertionError("data node %d is the primary, not a replica" % port)

    def restart(self, port, wait=True, timeout=30.0, as_replica=False):
        """Starts a killed data node again (same port, directory and config
        file). It comes back as its config file says: sentinel rewrites that
        file on every change it makes, so a node that was a replica comes
        back as one, but a killed primary comes back as a primary (with
        the data it had: none unless persistent) until sentinel turns it
        into a replica of the current primary, about 3 s later. With
        as_replica=True it is started with --replicaof the current primary
        instead. wait=True waits until it is an online replica."""
        node = self.server(port)
        if node.running():
            raise AssertionError("data node %d is running" % port)
        extra = ["--replicaof", "127.0.0.1", str(self.primary_port())] if as_replica else []
        node.start(extra_args=extra)
        if wait:
            self.wait_replica(port, timeout)
        return node

    def kill_sentinel(self, i):
        """kill -9 of sentinel i."""
        self.sentinel_nodes[i].kill()

    def restart_sentinel(self, i):
        """Starts sentinel i again (same port and config file)."""
        return self.sentinel_nodes[i].start()

    def stop(self):
        """kill -9 of every process, sentinels first."""
        for s in self.sentinel_nodes + self.servers:
            s.kill()

    def log(self):
        """The tail of every log."""
        parts = []
        for s in self.servers + self.sentinel_nodes:
            parts.append("=== %s port %s (%s) ===\n%s" % (
                s.name, s.port, os.path.basename(s.dir), read_text(s.logfile, 6000).rstrip()))
        return "\n".join(parts)


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


class NatsClusterNode:
    """One nats-server of a NatsCluster: client, cluster and monitoring
    ports on 127.0.0.1, JetStream store in its own directory."""

    def __init__(self, workdir, index, cluster_name):
        self.binary = system_binary("nats-server")
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.index = index
        self.server_name = "n%d" % index
        self.cluster_name = cluster_name
        self.port = self.cluster_port = self.monitor_port = None
        self.routes = []  # the other nodes' cluster ports
        self.proc = None
        self.killed = False  # by the test: not an unexpected exit
        self.logfile = os.path.join(self.dir, "nats.log")
        self.name = "nats-server %s" % self.server_name

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        """Starts the process (does not wait: NatsCluster does)."""
        with open(self.logfile, "ab") as log:
            log.write(b"===== harness: start =====\n")
        args = [self.binary, "-n", self.server_name, "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "--cluster_name", self.cluster_name,
                "--cluster", "nats://127.0.0.1:%d" % self.cluster_port,
                "--routes", ",".join("nats://127.0.0.1:%d" % p for p in self.routes),
                "-js", "-sd", os.path.join(self.dir, "js"), "-l", self.logfile]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path):
        """GET http://127.0.0.1:<monitor port><path> as JSON (urllib errors
        are OSErrors; /healthz answers 503 while JetStream is not ready)."""
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.monitor_port, path),
                                    timeout=2.0) as resp:
            return json.loads(resp.read())

    def kill(self):
        """kill -9."""
        if self.running():
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self, limit=6000):
        return read_text(self.logfile, limit)


class NatsCluster:
    """Three nats-server processes forming one cluster with JetStream on
    each (server names n0, n1, n2), each in its own directory under
    `workdir`, all on 127.0.0.1.

        c = self.start_nats_cluster()          # in an IntegrationTest
        gw = self.start_gateway(redis, env={"NATS_URL": c.url, ...})
        i = c.wait_stream_leader("FRAMES")
        c.kill(i)
        c.wait_stream_leader("FRAMES", not_index=i)
        c.restart(i)"""

    def __init__(self, workdir, size=3, cluster_name="fbcluster"):
        self.dir = workdir
        os.makedirs(self.dir, exist_ok=True)
        self.name = "nats-cluster"
        self.cluster_name = cluster_name
        self.nodes = [NatsClusterNode(os.path.join(self.dir, "n%d" % i), i, cluster_name)
                      for i in range(size)]

    @property
    def url(self):
        """"nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c"."""
        return ",".join(n.url for n in self.nodes)

    @property
    def ports(self):
        """The client ports, by node index."""
        return [n.port for n in self.nodes]

    def _assign_ports(self):
        ports = set()
        while len(ports) < 3 * len(self.nodes):
            ports.add(free_port())
        ports = list(ports)
        for n in self.nodes:
            n.port, n.cluster_port, n.monitor_port = ports.pop(), ports.pop(), ports.pop()
        for n in self.nodes:
            n.routes = [o.cluster_port for o in self.nodes if o is not n]

    def start(self, timeout=30.0):
        """Starts every node and waits until the cluster is complete (see
        wait_healthy). Picks other ports when one was taken meanwhile."""
        for attempt in range(3):
            self._assign_ports()
            for n in self.nodes:
                n.start()
            try:
                self.wait_healthy(timeout)
                return self
            except AssertionError:
                lost = any(not n.running() for n in self.nodes) and any(
                    "address already in use" in n.log(20000) for n in self.nodes)
                if not lost or attempt == 2:
                    raise
                for n in self.nodes:  # a port was taken: start over elsewhere
                    n.kill()
        return self

    def _problem(self):
        """What keeps the running nodes from being a healthy cluster, or ""."""
        live = [n for n in self.nodes if n.running()]
        if not live:
            return "no node is running"
        ids = {}
        for n in live:
            ids[n.index] = n.monitor("/varz")["server_id"]
        leaders = set()
        for n in live:
            routes = {r.get("remote_id") for r in n.monitor("/routez").get("routes") or []}
            missing = [o.server_name for o in live if o is not n and ids[o.index] not in routes]
            if missing:
                return "%s has no route to %s" % (n.server_name, ", ".join(missing))
            meta = n.monitor("/jsz").get("meta_cluster") or {}
            if not meta.get("leader"):
                return "%s knows no JetStream meta leader (%s)" % (n.server_name, meta)
            leaders.add(meta["leader"])
            try:
                n.monitor("/healthz")
            except urllib.error.HTTPError as e:
                return "%s /healthz: %s %s" % (n.server_name, e.code, e.read()[:200])
        if len(leaders) != 1:
            return "the nodes name different meta leaders: %s" % sorted(leaders)
        return ""

    def wait_healthy(self, timeout=30.0):
        """Waits until every running node has a route to every other running
        node, all agree on a JetStream meta leader and /healthz says ok."""
        why = ["not checked yet"]

        def ok():
            for n in self.nodes:
                if n.proc is not None and not n.running() and not n.killed:
                    raise AssertionError("%s exited (status %s)" % (n.name, n.proc.returncode))
            why[0] = self._problem()
            return not why[0]
        try:
            wait_for(ok, timeout, interval=0.1, what="the NATS cluster to be healthy")
        except AssertionError as e:
            raise AssertionError("%s: %s" % (e, why[0]))

    def client(self, i=None, **kw):
        """A natsc.Nats on node i (default: the first running node)."""
        n = self.nodes[i] if i is not None else next(n for n in self.nodes if n.running())
        return Nats(n.port, **kw)

    def meta_leader(self):
        """The index of the JetStream meta leader as a running node says,
        or None."""
        for n in self.nodes:
            if n.running():
                try:
                    name = (n.monitor("/jsz").get("meta_cluster") or {}).get("leader")
                except OSError:
                    continue
                return self._index(name)
        return None

    def _index(self, server_name):
        for n in self.nodes:
            if n.server_name == server_name:
                return n.index
        return None

    def stream_leader(self, stream, timeout=2.0):
        """The index of the node leading a JetStream stream, from the
        stream's own answer to $JS.API.STREAM.INFO (sent by its leader);
        None while it has no (running) leader or cannot be asked."""
        for n in self.nodes:
            if not n.running():
                continue
            try:
                nc = Nats(n.port, timeout=timeout)
            except (OSError, NatsError):
                continue  # try another node
            try:
                info = JetStream(nc, timeout=timeout).stream_info(stream)
            except (OSError, NatsError, ValueError):
                return None  # no leader answers (now)
            finally:
                nc.close()
            i = self._index((info.get("cluster") or {}).get("leader"))
            return i if i is not None and self.nodes[i].running() else None
        return None

    def wait_stream_leader(self, stream, not_index=None, timeout=30.0):
        """Waits until `stream` has a running leader other than not_index;
        returns its index."""
        def leader():
            i = self.stream_leader(stream)
            return None if i is None or i == not_index else i + 1  # 0 is falsy
        return wait_for(leader, timeout, interval=0.1,
                        what="stream %s to have a leader%s" % (
                            stream, "" if not_index is None else " other than n%d" % not_index)) - 1

    def wait_stream_current(self, stream, timeout=30.0):
        """Waits until `stream` has a leader and every other running node is
        a current replica of it (so one more node may be lost); returns the
        leader's index."""
        last = [None]

        def current():
            try:
                with self.client(timeout=2.0) as nc:
                    info = last[0] = JetStream(nc, timeout=2.0).stream_info(stream)
            except (NatsError, ValueError):
                return None
            cl = info.get("cluster") or {}
            i = self._index(cl.get("leader"))
            if i is None:
                return None
            reps = {r["name"]: r.get("current") for r in cl.get("replicas") or []}
            for n in self.nodes:
                if n.running() and n.index != i and not reps.get(n.server_name):
                    return None
            return i + 1  # 0 is falsy
        try:
            return wait_for(current, timeout, interval=0.1,
                            what="every replica of stream %s to be current" % stream) - 1
        except AssertionError as e:
            raise AssertionError("%s (last cluster info: %s)" % (
                e, (last[0] or {}).get("cluster")))

    def kill(self, i):
        """kill -9 of node i."""
        self.nodes[i].killed = True
        self.nodes[i].kill()

    def restart(self, i, wait=True, timeout=30.0):
        """Starts node i again (same ports and store directory); by default
        waits until the cluster is healthy again."""
        n = self.nodes[i]
        if n.running():
            raise AssertionError("%s is running" % n.name)
        n.killed = False
        n.start()
        if wait:
            self.wait_healthy(timeout)
        return n

    def stop(self):
        for n in self.nodes:
            n.stop()

    def log(self):
        """The tail of every node's log."""
        return "\n".join("=== %s port %s (%s) ===\n%s" % (n.name, n.port, n.dir, n.log().rstrip())
                         for n in self.nodes)


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
                     "NATS_CREDS", "NATS_TLS_CA", "DLQ_MAXLEN", "SLOW_START_MS", "HASH_BOUND",
                     "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD",
                     "REDIS_WAIT_REPLICAS", "NATS_JS_REPLICAS", "FLEET_VIEW",
                     "FRAME_TRACE", "DLQ_REPLAY_MAX"):
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

    def start_redis_sentinel(self, master_name="fbmaster", password=None, sentinel_password=None,
                             persistent=False):
        """A started RedisSentinelSet (primary, replica, three sentinels)."""
        s = RedisSentinelSet(tempfile.mkdtemp(prefix="sentinel-", dir=self.tmp), master_name,
                             password, sentinel_password, persistent)
        self._keep(s, s.stop)
        return s.start()

    def start_nats(self, jetstream=False):
        n = NatsServer(tempfile.mkdtemp(prefix="nats-", dir=self.tmp), jetstream)
        self._keep(n, n.stop)
        return n.start()

    def start_nats_cluster(self, size=3):
        """A started NatsCluster (three JetStream nodes in one cluster)."""
        c = NatsCluster(tempfile.mkdtemp(prefix="nats-cluster-", dir=self.tmp), size)
        self._keep(c, c.stop)
        return c.start()

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
