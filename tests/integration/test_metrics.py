#!/usr/bin/env python3
"""test_metrics.py -- GET /metrics on an HTTP listener (coap+ws://, http://): the Prometheus
text format checked by promtool (Debian's prometheus package), and the counters' values
after known traffic from independent clients (coap-client-notls) and our own raw ones: requests
by method and class, messages and bytes by transport and type, duplicates, RSTs,
retransmissions, notifications, block-wise transfers, Lua errors and budget kills, reloads,
the latency histogram by resource as registered (bounded: a scan of random paths adds no
series), monotonic across a hot reload; the bearer token, metrics_address and metrics=false.

  python3 tests/integration/test_metrics.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Every test starts its own server: UDP on [::1]:0 and `-l coap+ws://127.0.0.1:0` (ports from
the ready lines); the runner stops it by PID.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (ACK, CON, CONTENT, GET, OBSERVE, RST, Server, cfg, check,  # noqa: E402
                      coap_client, code, encode, eq, expect_msg, main, note, request, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
TCP_RES = os.path.join(ROOT, "tests", "lua", "tcp_res.lua")
SERIES_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

SCRIPT = r'''
local moonlet = require "moonlet"
local V = "%s"
moonlet.resource{ path = "/m/ok", get = function() return moonlet.CONTENT, V end }
moonlet.resource{ path = "/m/err", get = function() error("on purpose") end }
moonlet.resource{ path = "/m/spin", get = function() while true do end end }
moonlet.resource{ path = "/m/nap", get = function()
  moonlet.sleep(0.3)
  return moonlet.CONTENT, "nap"
end }
'''


def parse(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SERIES_RE.match(line)
        check(m is not None, "not a series line: %r" % line)
        labels = tuple(sorted(LABEL_RE.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def val(series, name, **labels):
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def http_get(port, path="/metrics", host="127.0.0.1", headers=""):
    """One HTTP/1.1 request on a new connection, read to the server's close -> (status,
    head, body)."""
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: moonlet\r\n%s\r\n" % (path, headers)).encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    m = re.search(rb"\r\nContent-Length: (\d+)", head)
    check(m is not None and int(m.group(1)) == len(body),
          "Content-Length vs body: %r, %d bytes" % (head[:300], len(body)))
    return status, head.decode("latin-1"), body.decode("utf-8")


class MServer:
    """moonlet: UDP on [::1], a coap+ws:// (HTTP) listener on 127.0.0.1, hello.so and
    extra units."""

    def __init__(self, opts=None, units=(), sets=(), listen=("coap+ws://127.0.0.1:0",)):
        args = []
        for u in listen:
            args += ["-l", u]
        self.srv = Server(opts=opts, sets=sets, plugins=list(cfg.plugins) + list(units),
                          args=args)
        self.http = []         # (host, port) of each listener, in the order given
        for u in listen:
            scheme, host = re.match(r"([a-z+]+)://(\[[^]]*\]|[^:]*):", u).groups()
            m = self.srv.log.wait_for(r"ready %s://%s:(\d+)" % (re.escape(scheme),
                                                                 re.escape(host)), 5.0)
            check(m, "no ready line for %s:\n%s" % (u, self.srv.log.text()))
            self.http.append((host.strip("[]"), int(m.group(1))))
        self.port = self.http[0][1]

    def scrape(self, headers="", port=None, host="127.0.0.1"):
        status, head, body = http_get(port or self.port, host=host, headers=headers)
        eq(status, 200, "GET /metrics (%s)" % head[:200])
        check("Content-Type: text/plain; version=0.0.4" in head, "content type: %r" % head)
        return parse(body), body

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()


def promtool(body):
    p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       text=True, timeout=30)
    eq(p.returncode, 0, "promtool check metrics: %s%s" % (p.stdout, p.stderr))


def udp_url(s, path):
    return "coap://[::1]:%d/%s" % (s.srv.port, path)


class Script:
    """A Lua script in a temporary directory (SCRIPT with a version)."""

    def __init__(self, version="v1"):
        self.dir = tempfile.mkdtemp(prefix="moonlet-metrics-")
        self.path = os.path.join(self.dir, "m.lua")
        self.write(version)

    def write(self, version, text=None):
        with open(self.path + ".tmp", "w") as f:
            f.write(text if text is not None else SCRIPT % version)
        os.replace(self.path + ".tmp", self.path)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the format and the request counters ----------------------------------------------------

@test("after known traffic (coap-client-notls: 3 GET /hello, GET /nope, POST /hello; a raw "
      "duplicate CON and a RST): promtool accepts the exposition; requests by method and "
      "class, messages and bytes by transport and type, duplicates, latency per resource "
      "('/hello': 3, '(none)': 1, '/hello' again for the 4.05)")
def t_counters():
    with MServer() as s:
        for _ in range(3):
            rc, out, _ = coap_client("-m", "get", udp_url(s, "hello"))
            eq((rc, out.strip()), (0, "Hello, world"), "GET /hello")
        rc, _, err = coap_client("-m", "get", udp_url(s, "nope"))
        check("4.04" in err, "GET /nope: %r" % err)
        rc, _, err = coap_client("-m", "post", udp_url(s, "hello"))
        check("4.05" in err, "POST /hello: %r" % err)
        with s.srv.client() as c:       # a duplicate: answered from the cache
            d = request(CON, GET, 0x4242, b"d", ["hello"])
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x4242, b"d")
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x4242, b"d")
            c.send(encode(RST, 0, 0x7777))
            time.sleep(0.1)     # nothing answers a RST: give it a turn of the loop
        m, body = s.scrape()
        promtool(body)
        eq(val(m, "moonlet_requests_total", method="GET", **{"class": "2"}), 4.0, "GET 2.xx")
        eq(val(m, "moonlet_requests_total", method="GET", **{"class": "4"}), 1.0, "GET 4.xx")
        eq(val(m, "moonlet_requests_total", method="POST", **{"class": "4"}), 1.0, "POST 4.xx")
        eq(val(m, "moonlet_duplicates_total"), 1.0, "duplicates")
        eq(val(m, "moonlet_messages_received_total", transport="coap", type="CON"), 7.0,
           "CONs received")
        eq(val(m, "moonlet_messages_received_total", transport="coap", type="RST"), 1.0,
           "RSTs received")
        eq(val(m, "moonlet_messages_sent_total", transport="coap", type="ACK"), 7.0,
           "ACKs sent (the duplicate's included)")
        check(val(m, "moonlet_received_bytes_total", transport="coap") > 7 * 10,
              "bytes received")
        check(val(m, "moonlet_sent_bytes_total", transport="coap") > 7 * 4, "bytes sent")
        eq(val(m, "moonlet_request_duration_seconds_count", resource="/hello"), 5.0,
           "/hello answers timed (4 GET, 1 POST)")
        eq(val(m, "moonlet_request_duration_seconds_count", resource="(none)"), 1.0, "(none)")
        eq(val(m, "moonlet_request_duration_seconds_bucket", resource="/hello", le="+Inf"),
           5.0, "+Inf bucket")
        check(val(m, "moonlet_request_duration_seconds_bucket", resource="/hello", le="0.1")
              == 5.0, "every /hello answer within 100 ms")
        check(val(m, "moonlet_sessions") >= 1, "sessions gauge")
        eq(val(m, "moonlet_connections"), 1.0, "connections: the scrape's own")
        eq(val(m, "moonlet_http_requests_total"), 1.0, "HTTP requests")


@test("a scan of 200 random paths adds no series (they count under '(none)'); "
      "-o metrics_resources=1: a second resource's latencies count under '(other)'")
def t_bounded():
    with MServer({"metrics_resources": 1}, units=[TCP_RES]) as s:
        m0, _ = s.scrape()
        with s.srv.client() as c:
            for i in range(200):
                d = request(CON, GET, i, b"s", ["scan", os.urandom(6).hex()])
                expect_msg(c.exchange(d), d, ACK, code(4, 4), i, b"s")
            for i, p in enumerate(("hello", "tcp/err", "tcp/up")):
                d = request(CON, GET, 1000 + i, b"r", p.split("/"))
                expect_msg(c.exchange(d), d, ACK, None, 1000 + i, b"r")
        m, body = s.scrape()
        promtool(body)
        resources = sorted({dict(k[1]).get("resource") for k in m
                            if k[0] == "moonlet_request_duration_seconds_count"})
        eq(resources, ["(none)", "(other)", "/hello"], "resource labels")
        eq(val(m, "moonlet_request_duration_seconds_count", resource="(none)"), 200.0,
           "the scan")
        eq(val(m, "moonlet_request_duration_seconds_count", resource="(other)"), 2.0,
           "beyond metrics_resources")
        check(len(m) - len(m0) <= 3 * 19, "series grew by %d" % (len(m) - len(m0)))


@test("Lua: an error and an instruction budget kill (-s lua.instructions=100000) are "
      "counted; hot reloads ok and failed (a syntax error: the old version serves on); the "
      "request counters and the latency of /m/ok are monotonic across the reloads; a "
      "deferred answer (moonlet.sleep 0.3 s) lands in the 0.5 s bucket, not the 0.25 s one")
def t_lua_reload():
    sc = Script()
    try:
        with MServer(units=[sc.path], sets=["lua.instructions=100000"]) as s:
            for p, want in (("m/ok", None), ("m/ok", None), ("m/err", "5.00"),
                            ("m/spin", "5.00"), ("m/nap", None)):
                rc, out, err = coap_client("-m", "get", udp_url(s, p))
                if want:
                    check(want in err, "%s: %r" % (p, err))
            m1, _ = s.scrape()
            eq(val(m1, "moonlet_lua_errors_total"), 2.0, "Lua errors")
            eq(val(m1, "moonlet_lua_budget_kills_total", budget="instructions"), 1.0,
               "instruction budget kills")
            eq(val(m1, "moonlet_requests_total", method="GET", **{"class": "5"}), 2.0, "5.xx")
            eq(val(m1, "moonlet_request_duration_seconds_bucket", resource="/m/nap",
                   le="0.25"), 0.0, "/m/nap under 0.25 s")
            eq(val(m1, "moonlet_request_duration_seconds_bucket", resource="/m/nap",
                   le="0.5"), 1.0, "/m/nap under 0.5 s")
            mark = len(s.srv.log.lines)
            os.utime(sc.path, None)
            sc.write("v2")
            check(s.srv.log.wait_for(r"reloaded .*m\.lua", 5.0, mark), "no reload")
            rc, out, _ = coap_client("-m", "get", udp_url(s, "m/ok"))
            eq(out.strip(), "v2", "the new version")
            mark = len(s.srv.log.lines)
            sc.write("", text="this is not Lua (")
            check(s.srv.log.wait_for(r"m\.lua.*(rejected|error|failed)", 5.0, mark),
                  "no rejection logged:\n" + "\n".join(s.srv.log.lines[mark:]))
            rc, out, _ = coap_client("-m", "get", udp_url(s, "m/ok"))
            eq(out.strip(), "v2", "the old version serves on")
            m2, body = s.scrape()
            promtool(body)
            eq(val(m2, "moonlet_reloads_total", result="ok"), 1.0, "reloads ok")
            eq(val(m2, "moonlet_reloads_total", result="failed"), 1.0, "reloads failed")
            eq(val(m2, "moonlet_request_duration_seconds_count", resource="/m/ok"), 4.0,
               "/m/ok answers: 2 before, 2 after the reloads")
            for k, v in m1.items():
                if k[0].endswith("_total") or k[0].endswith("_count"):
                    check(m2.get(k, 0) >= v, "%s%r went down: %s -> %s" % (k[0], k[1], v,
                                                                           m2.get(k)))
    finally:
        sc.close()


@test("Observe, retransmission, block-wise: a non-acknowledging observer of /tcp/clock "
      "(-o observe_con_every=1, ack_timeout=0.1) -> notifications and retransmissions "
      "counted; coap-client-notls downloads /tcp/big (256 KiB, -b 1024) and uploads it -> "
      "one download and one upload completed, none in progress")
def t_observe_block():
    with MServer({"observe_con_every": 1, "ack_timeout": 0.1, "max_retransmit": 1},
                 units=[TCP_RES]) as s:
        with s.srv.client() as c:       # it answers the verifying ping, nothing else
            d = request(CON, GET, 0x100, b"o", ["tcp", "clock"], (), [(OBSERVE, 0)])
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x100, b"o")
            got = 0
            deadline = time.monotonic() + 3
            while got < 2 and time.monotonic() < deadline:
                if c.recv(1.0) is not None:     # never acknowledged
                    got += 1
            # the first CON notification and its one retransmission (max_retransmit=1),
            # after which the observer is dropped (RFC 7641 §4.5)
            check(got >= 2, "notifications received: %d" % got)
            m, _ = s.scrape()
            check(val(m, "moonlet_notifications_total") >= 1, "notifications counted")
            check(val(m, "moonlet_retransmissions_total") >= 1, "retransmissions counted")
            eq(val(m, "moonlet_messages_sent_total", transport="coap", type="CON"),
               val(m, "moonlet_notifications_total") + val(m, "moonlet_retransmissions_total"),
               "CONs sent: notifications and retransmissions")
        big = os.path.join(tempfile.mkdtemp(prefix="moonlet-metrics-"), "big")
        try:
            rc, out, _ = coap_client("-b", "1024", "-m", "get", "-o", big,
                                     udp_url(s, "tcp/big"))
            eq((rc, os.path.getsize(big)), (0, 262144), "download")
            rc, out, err = coap_client("-b", "1024", "-m", "put", "-f", big,
                                       udp_url(s, "tcp/up"))
            check("len=262144 same=yes" in out, "upload: %r %r" % (out, err))
        finally:
            shutil.rmtree(os.path.dirname(big), ignore_errors=True)
        m, body = s.scrape()
        promtool(body)
        eq(val(m, "moonlet_block_transfers_completed_total", direction="download"), 1.0,
           "downloads completed")
        eq(val(m, "moonlet_block_transfers_completed_total", direction="upload"), 1.0,
           "uploads completed")
        eq(val(m, "moonlet_block_transfers", direction="upload"), 0.0, "uploads open")


# ---- who may scrape ---------------------------------------------------------------------------

@test("-o metrics_token=s3cret: no Authorization -> 401 with WWW-Authenticate: Bearer, a "
      "wrong token -> 401, 'Bearer s3cret' -> 200; the WebSocket upgrade needs no token")
def t_token():
    with MServer({"metrics_token": "s3cret"}) as s:
        st, head, _ = http_get(s.port)
        eq(st, 401, "no token")
        check("WWW-Authenticate: Bearer" in head, "challenge: %r" % head)
        eq(http_get(s.port, headers="Authorization: Bearer s3cre\r\n")[0], 401, "wrong")
        eq(http_get(s.port, headers="Authorization: Bearer s3cretx\r\n")[0], 401, "longer")
        s.scrape(headers="Authorization: Bearer s3cret\r\n")
        sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sk.sendall(b"GET /.well-known/coap HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                   b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n")
        check(sk.recv(100).startswith(b"HTTP/1.1 101 "), "the upgrade")
        sk.close()


@test("-o metrics_address=::1 with listeners on 127.0.0.1 and [::1] (http://): only the "
      "[::1] one serves /metrics (the other: 404); -o metrics=false: 404 everywhere, the "
      "WebSocket endpoint unaffected")
def t_address():
    with MServer({"metrics_address": "::1"},
                 listen=("coap+ws://127.0.0.1:0", "http://[::1]:0")) as s:
        eq(http_get(s.http[0][1])[0], 404, "127.0.0.1 listener")
        s.scrape(port=s.http[1][1], host="::1")
    with MServer({"metrics": "false"}) as s:
        eq(http_get(s.port)[0], 404, "metrics=false")
        eq(http_get(s.port, "/.well-known/coap")[0], 400, "the CoAP endpoint (no upgrade)")


@test("HTTP on the listener: GET / -> 404, a request target over 2 KiB -> 414, HEAD /metrics "
      "-> 405, a request without Host -> 400; scrapes while 200 UDP sessions exist")
def t_http():
    with MServer() as s:
        eq(http_get(s.port, "/")[0], 404, "GET /")
        eq(http_get(s.port, "/metrics?" + "x" * 3000)[0], 414, "long target")
        sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sk.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        check(sk.recv(100).startswith(b"HTTP/1.1 405"), "HEAD")
        sk.close()
        sk = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        sk.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        check(sk.recv(100).startswith(b"HTTP/1.1 400"), "no Host")
        sk.close()
        socks = []
        try:
            for i in range(200):
                u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                u.settimeout(5)
                u.sendto(request(CON, GET, i, b"", ["hello"]), ("::1", s.srv.port))
                socks.append(u)
            for u in socks:
                u.recv(100)
            t0 = time.monotonic()
            m, _ = s.scrape()
            note("scrape with %d sessions: %.1f ms" % (val(m, "moonlet_sessions"),
                                                      (time.monotonic() - t0) * 1000))
            check(val(m, "moonlet_sessions") >= 200, "sessions: %r" % val(m, "moonlet_sessions"))
        finally:
            for u in socks:
                u.close()


if __name__ == "__main__":
    sys.exit(main())
