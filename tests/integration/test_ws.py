#!/usr/bin/env python3
"""test_ws.py -- CoAP over WebSockets (coap+ws://, RFC 8323 §4) on loopback: the HTTP/1.1
upgrade at /.well-known/coap with the subprotocol coap (RFC 6455 §4, RFC 8323 §4.2-4.3),
binary messages in the §4.4 format, and the MALFORMED.md rows W1-W6 plus the T rows that
apply. A WebSocket client of our own (wstest.py: masked frames, fragmentation, control frames)
carries RFC 8323 frames: rfc8323.FrameConn over it, so requests are built as for TCP and
converted to §4.4 (no length) on the way.

  python3 tests/integration/test_ws.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Every test starts its own server with `-l coap+ws://127.0.0.1:0` (the port comes from its
`ready coap+ws://...` line); the runner stops it by PID.
"""

import base64
import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (CHANGED, CONTENT, DELETE, DELETED, GET, OBSERVE, POST,  # noqa: E402
                      PUT, Server, cfg, check, eq, main, note, stats, test)
from tlskeys import certs  # noqa: E402
from rfc8323 import (ABORT, CSM, CSM_OK, OPT_BWT, OPT_MMS, PING,  # noqa: E402
                     Frame, block_val, frame, frame_size, req)
from wstest import (BIG, BINARY, BLOCK2, CLOSE, GUID, NODE_DIR, READY_WS_RE,  # noqa: E402
                    TEXT, WPING, Ws, WsServer, from_ws, to_ws, upgrade_request, ws_frame)

def serving(s):
    with s.ws() as w:
        eq(w.ask(req(GET, b"\x5e", "hello"), CONTENT).payload, b"Hello, world", "/hello")


# ---- the upgrade (RFC 6455 §4.2, RFC 8323 §4.3) -------------------------------------------

@test("upgrade at /.well-known/coap with Sec-WebSocket-Protocol: coap -> 101, the right "
      "Sec-WebSocket-Accept, protocol coap; then the server's CSM, GET /hello, Ping -> Pong")
def t_upgrade():
    with WsServer() as s, s.ws() as w:
        want = base64.b64encode(hashlib.sha1(w.key.encode() + GUID).digest())
        check(b"Sec-WebSocket-Accept: " + want + b"\r\n" in w.head, "accept key: %r" % w.head)
        check(b"Sec-WebSocket-Protocol: coap\r\n" in w.head, "protocol: %r" % w.head)
        eq([(n, v) for n, v in w.server_csm.options], [(OPT_MMS, (8192).to_bytes(2, "big")),
                                                        (OPT_BWT, b"")], "the server's CSM")
        eq(w.ask(req(GET, b"\x01", "hello"), CONTENT).payload, b"Hello, world", "/hello")
        w.alive()


@test("W1 and the other refusals: no coap subprotocol -> 400, version 12 -> 426 with "
      "Sec-WebSocket-Version: 13, another path -> 404, POST -> 405, no key -> 400, "
      "a bad key -> 400, garbage -> 400, no Host -> 400; the server goes on")
def t_w1_refusals():
    key = base64.b64encode(b"0123456789abcdef").decode()
    with WsServer() as s:
        s.refused(upgrade_request(key, protocol=None), "400")
        s.refused(upgrade_request(key, protocol="mqtt, wamp"), "400")
        head = s.refused(upgrade_request(key, version="12"), "426")
        check(b"Sec-WebSocket-Version: 13\r\n" in head, "426 without the version: %r" % head)
        s.refused(upgrade_request(key, path="/"), "404")
        s.refused(upgrade_request(key, method="POST"), "405")
        s.refused(upgrade_request(None), "400")
        s.refused(upgrade_request("short"), "400")
        s.refused(b"\x16\x03\x01 this is not HTTP\r\n\r\n", "400")
        s.refused(b"GET /.well-known/coap HTTP/1.1\r\nUpgrade: websocket\r\nConnection: "
                  b"Upgrade\r\nSec-WebSocket-Key: " + key.encode() + b"\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n\r\n", "400")
        serving(s)


@test("W6 a request head over 8 KiB -> 431; a head never finished -> closed at the "
      "handshake deadline (-o tls_handshake_timeout=0.5)")
def t_w6():
    with WsServer({"tls_handshake_timeout": 0.5}) as s:
        key = base64.b64encode(b"0123456789abcdef").decode()
        s.refused(upgrade_request(key, extra="X-Pad: %s\r\n" % ("a" * 9000)), "431")
        w = Ws(s.port, upgrade=False)
        t0 = time.monotonic()
        w.raw(b"GET /.well-known/coap HTTP/1.1\r\nHost: x\r\n")
        w.closed(3.0)
        took = time.monotonic() - t0
        check(0.4 < took < 2.5, "closed after %.2fs" % took)
        serving(s)


@test("frames sent right behind the upgrade request, in the same write, are served")
def t_pipelined_after_upgrade():
    with WsServer() as s:
        w = Ws(s.port, upgrade=False)
        try:
            w.raw(upgrade_request(w.key) + ws_frame(BINARY, to_ws(CSM_OK)) +
                  ws_frame(BINARY, to_ws(req(GET, b"\x02", "hello"))))
            w.read_head()
            check(w.head.startswith(b"HTTP/1.1 101"), "upgrade: %r" % w.head)
            w.expect(CSM, what="the server's CSM")
            eq(w.expect(CONTENT, b"\x02").payload, b"Hello, world", "/hello")
        finally:
            w.close()


# ---- framing (RFC 6455 §5, RFC 8323 §4.4) -------------------------------------------------

@test("W2 a text frame -> close 1003; W3 an unmasked client frame -> close 1002")
def t_w2_w3():
    with WsServer() as s:
        with s.ws() as w:
            w.raw(ws_frame(TEXT, b"hello"))
            w.closed()
            eq([c for c, _ in w.closes], [1003], "close codes")
        with s.ws() as w:
            w.raw(ws_frame(BINARY, to_ws(req(GET, b"\x03", "hello")), mask=False))
            w.closed()
            eq([c for c, _ in w.closes], [1002], "close codes")
        serving(s)


@test("W4 a frame length of 2^62 -> close 1009, of 2^63 (top bit set: a protocol error) -> "
      "a close; nothing allocated either way; a message over tcp_max_message -> 1009; "
      "fragments whose total exceeds it -> 1009")
def t_w4():
    with WsServer({"tcp_max_message": 2048}) as s:
        with s.ws() as w:       # the top bit must be 0 (§5.2): a protocol error
            w.raw(bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 63) + os.urandom(4) +
                  b"x" * 100)
            w.closed()
            check(len(w.closes) == 1 and w.closes[0][0] in (None, 1002, 1009),
                  "close codes (2^63): %r" % w.closes)
        with s.ws() as w:
            w.raw(bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 62) + os.urandom(4) +
                  b"x" * 100)
            w.closed()
            eq([c for c, _ in w.closes], [1009], "close codes (2^62)")
        with s.ws() as w:
            w.raw(ws_frame(BINARY, b"\x00\x02" + b"x" * 3000))
            w.closed()
            eq([c for c, _ in w.closes], [1009], "close codes (3000 bytes)")
        with s.ws() as w:
            part = b"\x00\x02" + b"x" * 1500
            w.raw(ws_frame(BINARY, part, fin=False) + ws_frame(0, b"y" * 1500))
            w.closed()
            eq([c for c, _ in w.closes], [1009], "close codes (fragments)")
        serving(s)


@test("fragmentation: a request in three fragments with a ping between them is one message")
def t_fragments():
    with WsServer() as s, s.ws() as w:
        m = to_ws(req(GET, b"\x04", "hello"))
        w.raw(ws_frame(BINARY, m[:2], fin=False) + ws_frame(0, m[2:5], fin=False) +
              ws_frame(WPING, b"p") + ws_frame(0, m[5:]))
        eq(w.expect(CONTENT, b"\x04").payload, b"Hello, world", "/hello")
        eq(w.pongs, [b"p"], "the Pong to our ping")


@test("W5 a CoAP message with a nonzero Len nibble -> Abort, closed; TKL 9 -> Abort; a "
      "first message that is not CSM -> Abort (T1)")
def t_w5():
    with WsServer() as s:
        with s.ws() as w:
            w.raw(ws_frame(BINARY, bytes([0x31, GET, 0x05]) + b"\xb5hello"))
            f = w.expect(ABORT, what="the Abort")
            check(b"Len must be 0" in f.payload, "diagnostic %r" % f.payload)
            w.closed()
        with s.ws() as w:
            w.raw(ws_frame(BINARY, bytes([0x09, GET]) + b"123456789"))
            check(b"token length" in w.expect(ABORT).payload, "TKL 9")
        with s.ws(csm=None) as w:
            w.raw(ws_frame(BINARY, to_ws(req(GET, b"\x06", "hello"))))
            check(b"CSM" in w.expect(ABORT).payload, "not CSM first")
        serving(s)


@test("a close frame from the client mid-message -> the server answers the close and ends")
def t_close():
    with WsServer() as s, s.ws() as w:
        w.raw(ws_frame(BINARY, b"\x00", fin=False) + ws_frame(CLOSE, struct.pack(">H", 1000)))
        w.closed()
        check(w.closes and w.closes[0][0] in (1000, 1002), "close codes %r" % w.closes)
        serving(s)


# ---- CoAP over it ---------------------------------------------------------------------------

@test("Observe over WebSockets: notifications under the token; the connection's close "
      "ends the observation")
def t_observe():
    with WsServer(lua=True) as s:
        with s.ws() as w:
            f = w.ask(req(GET, b"\x0b", "tcp/clock", options=[(OBSERVE, 0)]), CONTENT)
            n0 = int(f.payload[2:])
            got = [int(w.expect(CONTENT, b"\x0b").payload[2:]) for _ in range(3)]
            check(got[0] > n0 and got == sorted(set(got)), "values %r after %d" % (got, n0))
        deadline = time.monotonic() + 3
        while stats(s.srv)["observers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        eq(stats(s.srv)["observers"], 0, "observers after the close")


@test("block-wise 256 KiB over WebSockets: 1024-byte blocks, and BERT blocks (the peer's "
      "CSM says 65536 bytes and Block-Wise-Transfer)")
def t_blockwise():
    with WsServer(lua=True) as s:
        for mms, szx in ((1152, 6), (65536, 7)):
            with s.ws(csm=frame(CSM, options=[(OPT_MMS, mms), (OPT_BWT, b"")])) as w:
                data, num, frames = b"", 0, 0
                opts = [(BLOCK2, szx)] if szx == 6 else []
                while True:
                    f = w.ask(req(GET, b"\x0c", "tcp/big", options=opts), CONTENT)
                    frames += 1
                    n, more, z = block_val(f.opt(BLOCK2))
                    eq(z, szx, "SZX")
                    data += f.payload
                    if not more:
                        break
                    num = n + len(f.payload) // (1024 if z == 7 else 16 << z)
                    opts = [(BLOCK2, num << 4 | z)]
                check(data == BIG, "body differs (SZX %d)" % szx)
                note("SZX %d: %d messages" % (szx, frames))


@test("SIGTERM: an open WebSocket gets 7.04 Release, then the WebSocket close (1001)")
def t_sigterm():
    s = WsServer()
    try:
        w = s.ws()
        w.alive()
        s.srv.stop()
        frames = w.closed(5.0)
        eq([f.code_str for f in frames], ["7.04"], "frames before the close")
        eq([c for c, _ in w.closes], [1001], "close codes")
    finally:
        s.srv.stop()


@test("the limits of coap+tcp:// hold: -o tcp_per_address=2 closes a third connection "
      "before the upgrade is read")
def t_limits():
    with WsServer({"tcp_per_address": 2}) as s:
        a, b = s.ws(), s.ws()
        c = Ws(s.port, upgrade=False)
        try:
            c.raw(upgrade_request(c.key))
            eq(c.read_head(3.0), b"", "an answer to the third")
        finally:
            c.close()
        a.close()
        b.alive()
        b.close()


@test("node's ws package (an independent WebSocket client): subprotocol coap agreed; the "
      "server's CSM, GET /hello -> 2.05 'Hello, world', Ping -> Pong; its close 1000 echoed")
def t_node_ws():
    with WsServer() as s:
        node_ws("ws://127.0.0.1:%d/.well-known/coap" % s.port, b"\x42", b"\x77")


def node_ws(url, tok, ping_tok, env=None):
    """node ws.js: CSM, GET /hello under tok, a Ping under ping_tok; the answers checked,
    and the close 1000 echoed."""
    msgs = [to_ws(CSM_OK), to_ws(req(GET, tok, "hello")), to_ws(frame(PING, ping_tok))]
    p = subprocess.run(["node", os.path.join(NODE_DIR, "ws.js"), url] +
                       [m.hex() for m in msgs], capture_output=True, text=True, timeout=20,
                       env=env)
    lines = p.stdout.split("\n")
    eq((p.returncode, lines[0]), (0, "proto coap"), "node ws.js (stderr %r)" % p.stderr)
    raw = [from_ws(bytes.fromhex(ln[2:])) for ln in lines if ln.startswith("< ")]
    got = [Frame(r, frame_size(r)[1]) for r in raw]
    eq([(f.code_str, f.token) for f in got], [("7.01", b""), ("2.05", tok),
                                              ("7.03", ping_tok)], "messages received")
    eq(got[1].payload, b"Hello, world", "GET /hello")
    check("closed 1000" in lines, "close: %r" % lines)


@test("every method over WebSockets: PUT and POST /tcp/up (the body back), GET it, DELETE "
      "/tcp/flood; discovery: GET /.well-known/core?href=/tcp/* lists the script's resources")
def t_methods():
    with WsServer(lua=True) as s, s.ws() as w:
        eq(w.ask(req(PUT, b"\x51", "tcp/up", payload=b"x" * 3000), CHANGED).payload,
           b"len=3000 same=no", "PUT")
        eq(w.ask(req(POST, b"\x52", "tcp/up", payload=b"abc"), CHANGED).payload,
           b"len=3 same=no", "POST")
        eq(w.ask(req(GET, b"\x53", "tcp/up"), CONTENT).payload, b"abc", "GET")
        w.ask(req(DELETE, b"\x54", "tcp/flood"), DELETED)
        f = w.ask(req(GET, b"\x55", ".well-known/core", ["href=/tcp/*"]), CONTENT)
        for r in (b"</tcp/big>", b"</tcp/up>", b"</tcp/clock>"):
            check(r in f.payload, "%s in %r" % (r, f.payload))
        check(b"</hello>" not in f.payload, "the filter: %r" % f.payload)


@test("hot reload over WebSockets: a script changed under an open WebSocket that observes "
      "it -> notifications go on from the new version on the same connection, requests too")
def t_reload():
    d = tempfile.mkdtemp(prefix="moonlet-ws-")
    try:
        script = os.path.join(d, "r.lua")
        body = ('local moonlet = require "moonlet"\nlocal n = 0\n'
                'moonlet.resource{ path = "/r", obs = true, get = function() '
                'return moonlet.CONTENT, "%s" .. n end }\n'
                'moonlet.every(0.05, function() n = n + 1; moonlet.notify("/r") end)\n')
        with open(script, "w") as f:
            f.write(body % "v1:")
        srv = Server(plugins=list(cfg.plugins) + [script],
                     args=["-l", "coap+ws://127.0.0.1:0"])
        try:
            port = int(srv.log.wait_for(READY_WS_RE.pattern, 5.0).group(1))
            with Ws(port) as w:
                f = w.ask(req(GET, b"\x0b", "r", options=[(OBSERVE, 0)]), CONTENT)
                check(f.payload.startswith(b"v1:"), "registration %r" % f.payload)
                with open(script + ".new", "w") as f:
                    f.write(body % "v2:")
                os.replace(script + ".new", script)
                deadline, seen = time.monotonic() + 5, None
                while time.monotonic() < deadline and seen is None:
                    n = w.recv(1.0)
                    if n is not None and n.token == b"\x0b" and n.payload.startswith(b"v2:"):
                        seen = n
                check(seen is not None, "no notification from the new version")
                check(seen.opt(OBSERVE) is not None, "notification without Observe")
                eq(w.ask(req(GET, b"\x0c", "r"), CONTENT).payload[:3], b"v2:", "a request")
        finally:
            srv.stop()
    finally:
        shutil.rmtree(d, True)


@test("queued output: -o tcp_write_bytes=4096, a WebSocket with a small receive window "
      "observes /tcp/flood (900 bytes every 1 ms) and never reads -> closed; another "
      "WebSocket is answered all along")
def t_queued_output():
    with WsServer({"tcp_write_bytes": 4096}, lua=True) as s, s.ws() as ctl:
        hog = Ws(s.port, rcvbuf=4096)
        try:
            hog.send(req(GET, b"\xf0", "tcp/flood", options=[(OBSERVE, 0)]))
            ctl.ask(req(POST, b"\x01", "tcp/flood", ["ms=1"]), CHANGED)
            t0, obs = time.monotonic(), None
            while time.monotonic() - t0 < 15:
                eq(ctl.ask(req(GET, b"\x02", "hello"), CONTENT, timeout=1.0).payload,
                   b"Hello, world", "the other client")
                obs = stats(s.srv)["observers"]
                if obs == 0:
                    break
                time.sleep(0.1)
            eq(obs, 0, "observers (the non-reading WebSocket was not closed within 15 s)")
            note("closed after %.1fs" % (time.monotonic() - t0))
            ctl.ask(req(DELETE, b"\x03", "tcp/flood"), DELETED)
        finally:
            hog.close()


@test("answers before the end: requests and a close frame in one write -> the answers, then "
      "the close (1000); a half-close after 200 pipelined requests -> all 200 answered (found "
      "by ws_fuzz); an upgrade in HTTP/1.0 -> 400 (RFC 6455 §4.1)")
def t_answers_before_end():
    with WsServer() as s:
        w = Ws(s.port, upgrade=False)
        try:
            w.raw(upgrade_request(w.key) + ws_frame(BINARY, to_ws(CSM_OK)) +
                  ws_frame(BINARY, to_ws(req(GET, b"\x07", "hello"))) +
                  ws_frame(CLOSE, struct.pack(">H", 1000)))
            w.read_head()
            eq([(f.code_str, f.token) for f in w.closed()], [("7.01", b""), ("2.05", b"\x07")],
               "messages before the close")
            eq([c for c, _ in w.closes], [1000], "close codes")
        finally:
            w.close()
        with s.ws() as w:
            w.raw(b"".join(ws_frame(BINARY, to_ws(req(GET, bytes([i]), "hello")))
                           for i in range(200)))
            w.sock.shutdown(socket.SHUT_WR)
            got = w.closed(5.0)
            eq(sorted(f.token[0] for f in got if f.code_str == "2.05"), list(range(200)),
               "answers after the half-close")
        key = base64.b64encode(b"0123456789abcdef").decode()
        s.refused(upgrade_request(key).replace(b"HTTP/1.1", b"HTTP/1.0", 1), "400")
        serving(s)


@test("a scanner: 40 refused requests in a burst -> at most 10 log lines for that second, "
      "then one line counting the rest (at the next refusal a second later); all 40 answered")
def t_refusal_log():
    with WsServer() as s:
        start = len(s.srv.log.lines)
        t0 = time.monotonic()
        for _ in range(40):
            s.refused(b"GET /wp-login.php HTTP/1.1\r\nHost: x\r\n\r\n", "404")
        burst = time.monotonic() - t0
        time.sleep(max(0.0, 1.1 - burst))  # the limit is per second of the server's clock
        s.refused(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404")
        m = s.srv.log.wait_for(r"http: (\d+) more refused requests not logged", 5.0, start)
        check(m is not None, "no summary line:\n" + "\n".join(s.srv.log.lines[start:][-5:]))
        lines = [ln for ln in s.srv.log.lines[start:] if "refused (404" in ln]
        check(len(lines) <= 10 + 1 + (10 if burst >= 1.0 else 0), "%d refusal lines" % len(lines))
        check(int(m.group(1)) + len(lines) >= 41 - (10 if burst >= 1.0 else 0),
              "%s skipped, %d logged" % (m.group(1), len(lines)))
        serving(s)


@test("W7 the request target over 2 KiB -> 414; bytes after the upgrade that are no "
      "WebSocket frame (a reserved opcode) -> close 1002; a listener "
      "also answers HTTP: GET /metrics -> 200, GET / -> 404")
def t_http_more():
    with WsServer() as s:
        key = base64.b64encode(b"0123456789abcdef").decode()
        s.refused(upgrade_request(key, path="/.well-known/coap?" + "x" * 3000), "414")
        w = Ws(s.port, upgrade=False)
        try:
            w.raw(upgrade_request(w.key) + b"\x8f\x85abcdhello")     # opcode 15: reserved
            w.read_head()
            check(w.head.startswith(b"HTTP/1.1 101"), "upgrade: %r" % w.head)
            w.closed()
            eq([c for c, _ in w.closes], [1002], "close codes")
        finally:
            w.close()
        w = Ws(s.port, upgrade=False)
        try:
            w.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            check(w.read_head().startswith(b"HTTP/1.1 200 OK"), "metrics: %r" % w.head)
        finally:
            w.close()
        s.refused(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404")
        serving(s)


@test("-o ws_origins='http://app.example, https://b.example' (RFC 6455 §10.2): Origin "
      "http://app.example -> 101, https://b.example -> 101, http://evil.example -> 403, "
      "http://app.example.evil -> 403; no Origin (not a browser) -> 101")
def t_origins():
    with WsServer({"ws_origins": "http://app.example, https://b.example"}) as s:
        for origin in ("http://app.example", "https://b.example"):
            with s.ws(extra="Origin: %s\r\n" % origin) as w:
                eq(w.ask(req(GET, b"\x21", "hello"), CONTENT).payload, b"Hello, world", origin)
        key = base64.b64encode(b"0123456789abcdef").decode()
        for origin in ("http://evil.example", "http://app.example.evil", "null"):
            s.refused(upgrade_request(key, extra="Origin: %s\r\n" % origin), "403")
        serving(s)


class WssServer:
    """moonlet with coaps+ws:// and https:// listeners (X.509: tlskeys's srv.pem) and a
    coap+ws:// one, from a configuration file in a temporary directory."""

    def __init__(self):
        c = certs()
        self.dir = tempfile.mkdtemp(prefix="moonlet-wss-")
        conf = os.path.join(self.dir, "moonlet.conf")
        with open(conf, "w") as f:
            f.write('listen = [ "coaps+ws://127.0.0.1:0", "https://127.0.0.1:0", '
                    '"coap+ws://127.0.0.1:0", "coap://127.0.0.1:0" ];\n')
            f.write('dtls = { certificate = "%s"; key = "%s"; ca = "%s"; };\n' % (
                c("srv.pem"), c("srv.key"), c("ca.pem")))
        self.srv = Server(addr=None, args=["-c", conf], plugins=cfg.plugins)
        self.ports = {}
        for scheme in ("coaps+ws", "https", "coap+ws"):
            m = self.srv.log.wait_for(r"ready %s://127\.0\.0\.1:(\d+)" % re.escape(scheme),
                                      5.0)
            check(m, "no ready line for %s:\n%s" % (scheme, self.srv.log.text()))
            self.ports[scheme] = int(m.group(1))

    def ctx(self, alpn=("http/1.1",)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(certs()("ca.pem"))
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()
        shutil.rmtree(self.dir, True)


@test("coaps+ws:// (RFC 8323 §8.4): TLS with ALPN http/1.1, then the upgrade, CSM, GET "
      "/hello, Observe and a block-wise exchange as over coap+ws; a client offering ALPN "
      "coap only is refused (no_application_protocol), one offering none is served; "
      "https:// serves /metrics over TLS; plain HTTP to the TLS port gets no answer")
def t_wss():
    with WssServer() as s:
        port = s.ports["coaps+ws"]
        with Ws(port, ctx=s.ctx()) as w:
            eq(w.sock.selected_alpn_protocol(), "http/1.1", "ALPN")
            eq(w.ask(req(GET, b"\x31", "hello"), CONTENT).payload, b"Hello, world", "/hello")
            w.alive()
        with Ws(port, ctx=s.ctx(alpn=None)) as w:
            eq(w.ask(req(GET, b"\x32", "hello"), CONTENT).payload, b"Hello, world", "no ALPN")
        try:
            Ws(port, ctx=s.ctx(alpn=("coap",))).close()
            check(False, "a client offering ALPN coap only was served")
        except ssl.SSLError as e:
            check(re.search(r"no.application.protocol", str(e), re.I), "the alert: %s" % e)
        w = Ws(s.ports["https"], ctx=s.ctx(), upgrade=False)
        try:
            w.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = w.read_head()
            check(head.startswith(b"HTTP/1.1 200 OK"), "https /metrics: %r" % head)
        finally:
            w.close()
        w = Ws(port, upgrade=False)
        try:
            w.raw(upgrade_request(w.key))
            check(not w.read_head(3.0).startswith(b"HTTP"), "an HTTP answer in the clear")
        finally:
            w.close()
        with Ws(s.ports["coap+ws"]) as w:
            eq(w.ask(req(GET, b"\x33", "hello"), CONTENT).payload, b"Hello, world", "coap+ws")


@test("node's ws package over coaps+ws:// (NODE_EXTRA_CA_CERTS: our CA): GET /hello and a "
      "Ping as over coap+ws")
def t_node_wss():
    with WssServer() as s:
        node_ws("wss://localhost:%d/.well-known/coap" % s.ports["coaps+ws"], b"\x43", b"\x78",
                env=dict(os.environ, NODE_EXTRA_CA_CERTS=certs()("ca.pem")))


if __name__ == "__main__":
    sys.exit(main())
