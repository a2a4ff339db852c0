"""A minimal RESP2 client over a plain socket (Python standard library only).

    r = Redis(port)
    r.command("SET", "k", "v")            # -> b"OK"; raises ResponseError on -ERR
    r.pipeline([("XLEN", "a"), ("XLEN", "b")])  # -> [n, m]; errors come back
                                                 #    as ResponseError objects

Replies: simple strings and bulk strings are bytes, integers are int, nil is
None, arrays are lists. Nothing is decoded: callers decode what they need.
"""
import socket


class ResponseError(Exception):
    """A -ERR reply."""


def encode(args):
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, (int, float)):
            b = str(a).encode()
        else:
            raise TypeError("cannot send %r to Redis" % (a,))
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(b"\r\n")
    return b"".join(out)


class Redis:
    def __init__(self, port, host="127.0.0.1", timeout=30.0):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb", buffering=1 << 16)

    def close(self):
        try:
            self.rf.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ replies
    def _read(self):
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return ResponseError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("Redis closed the connection")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError("unexpected RESP reply %r" % line)

    # ----------------------------------------------------------- commands
    def command(self, *args):
        self.sock.sendall(encode(args))
        rep = self._read()
        if isinstance(rep, ResponseError):
            raise rep
        return rep

    def pipeline(self, commands, chunk=10000):
        """Sends many commands with few round trips; returns every reply
        (errors as ResponseError objects, not raised)."""
        out = []
        commands = list(commands)
        for i in range(0, len(commands), chunk):
            part = commands[i:i + chunk]
            self.sock.sendall(b"".join(encode(c) for c in part))
            out.extend(self._read() for _ in part)
        return out


# ------------------------------------------------------------- helpers
def pairs(flat):
    """[k1, v1, k2, v2, ...] (bytes) -> {str: str}."""
    return {flat[i].decode(): flat[i + 1].decode(errors="surrogateescape")
            for i in range(0, len(flat), 2)}


def xrange_all(r, key, chunk=10000):
    """Every entry of a stream as [(id, {field: value})], read in chunks."""
    out = []
    start = "-"
    while True:
        part = r.command("XRANGE", key, start, "+", "COUNT", chunk)
        if not part:
            return out
        for eid, flat in part:
            out.append((eid.decode(), pairs(flat)))
        last = part[-1][0].decode()
        ms, seq = last.split("-")
        start = "%s-%d" % (ms, int(seq) + 1)
        if len(part) < chunk:
            return out


def info_map(reply):
    """An XINFO reply ([k, v, k, v, ...]) -> {str: value}."""
    return {reply[i].decode(): reply[i + 1] for i in range(0, len(reply), 2)}
