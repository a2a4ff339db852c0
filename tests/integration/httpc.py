"""A tiny HTTP helper over http.client.

    status, headers, body = http("GET", base, "/api/v1/processors/")

`body` is the decoded JSON when the response says application/json and it
parses, else the text. `headers` is a case-insensitive http.client
HTTPMessage. A new connection per request keeps tests independent.
"""
import http.client as hc
import json
import socket
from urllib.parse import urlsplit


def _decode(raw, ctype):
    text = raw.decode("utf-8", errors="replace")
    if "json" in (ctype or ""):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def http(method, base, path, body=None, headers=None, raw=None, timeout=10.0):
    """One request. `body` (any JSON value) is sent as JSON; `raw` (bytes or
    str) is sent as it is, for malformed input."""
    u = urlsplit(base)
    conn = hc.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        h = {"Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}  # None: leave the header out
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, resp.headers, _decode(payload, resp.headers.get("Content-Type"))
    finally:
        conn.close()


def http_raw(base, request_bytes, timeout=10.0):
    """Writes `request_bytes` as they are and parses whatever response comes
    back, even when the server answers before reading all of it and then
    closes (a 413 for an oversized body). Returns (status, headers-dict with
    lower-case names, body text)."""
    u = urlsplit(base)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    try:
        try:
            s.sendall(request_bytes)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read what it said
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
            data = b"".join(chunks)
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                hdrs = _headers(head)
                n = int(hdrs.get("content-length", "-1"))
                if n >= 0 and len(rest) >= n:
                    break
    finally:
        s.close()
    data = b"".join(chunks)
    if not data:
        raise ConnectionError("no response at all")
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1])
    hdrs = _headers(head)
    return status, hdrs, _decode(rest, hdrs.get("content-type"))


def _headers(head):
    out = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.strip().lower().decode()] = v.strip().decode()
    return out
