#!/usr/bin/env python3
"""test_hostile.py -- peers that lie about their address, vanish, or send what no client
should (issue 12): no lock-out by one datagram per slot, the 3x rule toward unverified
addresses (RFC 9175 §2.4), address verification by ping and by Echo, the budgets of
unverified peers, observers of departed peers reaped, oversize datagrams (MALFORMED R12),
a bad Observe length (V7). Every server is on loopback, on a free port, stopped by PID.

Raw clients stand for spoofed peers: one that never answers a ping (answer_pings=False)
cannot prove its address, exactly like a request with a forged source. Real clients
(libcoap's coap-client-notls, node's coap) show what verification costs them.
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CHANGED, CON, CONTENT, ECHO, GET, MAX_AGE, NON, OBSERVE, POST, PUT, Client, Server,
    cfg, check, coap_client, code, eq, expect_msg, main, note, request, stats, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
EXAMPLES = os.path.join(ROOT, "examples")
NODE_DIR = os.path.join(HERE, "node")
UNAVAILABLE, UNAUTHORIZED, TOO_LARGE = code(5, 3), code(4, 1), code(4, 13)
BLOCK1, BLOCK2, SIZE1 = 27, 23, 60
WIRE = 48           # IPv6 + UDP headers on the wire, per datagram


def plugins(*names):
    """The suite's plugins and the named test plugins, built beside the server binary
    (BUILD/moonlet, BUILD/tests/NAME.so)."""
    build = os.path.dirname(os.path.abspath(cfg.moonlet))
    return list(cfg.plugins) + [os.path.join(build, "tests", n + ".so") for n in names]


def answer(c, timeout=5.0):
    """The next message that is not a ping (a client that does not answer them sees them)."""
    while True:
        m = c.recv(timeout)
        if m is None or not (m.type == CON and m.code == 0):
            return m


def collect(c, wait):
    """Every datagram within wait seconds (pings included): [raw]."""
    out, end = [], time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        raw = c.recv_raw(left) if left > 0 else None
        if raw is None:
            return out
        out.append(raw)


def verify(c, mid=0x6f00):
    """Make c a verified peer: /t/big (1000 bytes) is over 3x a GET, so the answer waits
    for a ping, which c answers."""
    d = request(CON, GET, mid, b"\xbb", "t/big")
    expect_msg(c.exchange(d), d, ACK, CONTENT, mid, b"\xbb")


def wait_stat(s, key, want, timeout):
    """Poll the SIGUSR1 stats until key == want; the last value."""
    end = time.monotonic() + timeout
    while True:
        v = stats(s)[key]
        if v == want or time.monotonic() > end:
            return v
        time.sleep(0.2)


# ---- lock-out ------------------------------------------------------------------------------

@test("lock-out: 60 one-shot GETs to a slow resource from ports closed at once, with "
      "max_sessions=50: a new peer is answered 2.05 at once (no 5.03), and so is the next")
def t_lockout_slow():
    with Server(opts={"max_sessions": 50, "separate_after": 5}) as s:
        for i in range(60):
            with s.client(answer_pings=False) as c:
                c.send(request(CON, GET, i, b"s", "t/defer", query=["ms=3000"]))
        for i in range(2):
            with s.client() as c:
                d = request(CON, GET, 0x100 + i, b"n", "hello")
                t0 = time.monotonic()
                expect_msg(c.exchange(d), d, ACK, CONTENT, 0x100 + i, b"n")
                check(time.monotonic() - t0 < 0.5, "answered at once")
        st = stats(s)
        note("after 60 abandoned slow requests: %d sessions (%d unverified), %d deferred "
             "answers of unverified peers" % (st["sessions"], st["unverified"],
                                              st["unverified_pendings"]))


@test("unverified_pendings=8: a 9th deferred answer of an unverified peer ends the oldest "
      "(5.03 + Max-Age); a verified peer's deferred answer is never shed")
def t_unverified_pendings():
    with Server(opts={"unverified_pendings": 8, "separate_after": 5}) as s:
        v = s.client()
        verify(v)
        slow = request(CON, GET, 7, b"v", "t/defer", query=["ms=1500"])
        v.send(slow)
        first = s.client(answer_pings=False)
        d = request(CON, GET, 1, b"f", "t/defer", query=["ms=1500"])
        first.send(d)
        others = []
        for i in range(8):
            c = s.client(answer_pings=False)
            c.send(request(CON, GET, 2 + i, b"o", "t/defer", query=["ms=1500"]))
            others.append(c)
        m = expect_msg(answer(first), d, ACK, UNAVAILABLE, 1, b"f")
        check(m.opt_uint(MAX_AGE) is not None, "Max-Age on the shed answer")
        expect_msg(answer(v, 3.0), slow, ACK, CONTENT, 7, b"v", b"late")
        for c in [v, first] + others:
            c.close()


@test("observers of vanished peers: 50 register on /t/obs and close without answering the "
      "ping, with max_sessions=50: new peers are served meanwhile; the 50 are reaped when "
      "their pings go unanswered (RFC 7641 §7, RFC 9175 §2.4)")
def t_vanished_observers():
    opts = {"max_sessions": 50, "ack_timeout": 0.2, "max_retransmit": 2}
    with Server(opts=opts, plugins=plugins("t_observe")) as s:
        for i in range(50):
            with s.client(answer_pings=False) as c:
                c.send(request(CON, GET, i, b"o", "t/obs", options=[(OBSERVE, 0)]))
                m = answer(c)
                check(m is not None and m.code == CONTENT, "registration answer %r" % m)
        with s.client() as c:
            d = request(CON, GET, 0x200, b"n", "hello")
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x200, b"n")
        left = wait_stat(s, "observers", 0, 5.0)
        eq(left, 0, "observers left 5 s later")


@test("observers of a departed verified peer on a resource that never changes are reaped "
      "by the CON check after observe_check (RFC 7641 §4.5); a live peer gets the check as a "
      "CON notification, acknowledges it and stays")
def t_quiet_observer():
    opts = {"observe_check": 1, "ack_timeout": 0.2, "max_retransmit": 2}
    with Server(opts=opts, plugins=plugins("t_observe")) as s:
        live, gone = s.client(), s.client()
        for c, tok in ((live, b"L"), (gone, b"G")):
            verify(c)
            d = request(CON, GET, 0x300, tok, "t/obs", options=[(OBSERVE, 0)])
            m = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x300, tok)
            check(m.opt_uint(OBSERVE) is not None, "registered")
        gone.close()
        m = live.recv(5.0)
        check(m is not None and m.type == CON and m.token == b"L" and
              m.opt_uint(OBSERVE) is not None, "a CON check to the live observer: %r" % m)
        live.send(bytes([0x60, 0, m.raw[2], m.raw[3]]))
        eq(wait_stat(s, "observers", 1, 8.0), 1, "observers once the departed one is reaped")
        live.close()


@test("an honest deployment: 300 observers, each its own peer, with max_sessions=300, and "
      "one more peer writing the observed resource: the writer is answered and every "
      "observer gets the notification")
def t_honest_fanout():
    with Server(opts={"max_sessions": 300}, plugins=plugins("t_observe")) as s:
        obs = []
        for i in range(300):
            c = s.client()
            d = request(CON, GET, 0x400, b"o", "t/obs", options=[(OBSERVE, 0)])
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x400, b"o")
            obs.append(c)
        # each answered the ping its registration brought (before the registration answer)
        eq(wait_stat(s, "verified", 300, 5.0), 300, "verified observers")
        with s.client() as w:
            d = request(CON, POST, 0x401, b"w", "t/obs")
            expect_msg(w.exchange(d), d, ACK, CHANGED, 0x401, b"w")
        missing = []
        for i, c in enumerate(obs):
            m = c.recv(3.0)
            if m is None or m.token != b"o" or m.opt_uint(OBSERVE) is None:
                missing.append(i)
        eq(missing, [], "observers without the notification")
        for c in obs:
            c.close()


@test("unverified_sessions=20: 200 peers, one request each: every one answered, never more "
      "than 20 unverified sessions kept")
def t_unverified_sessions():
    with Server(opts={"unverified_sessions": 20}) as s:
        ports = set()
        for i in range(200):
            with s.client(answer_pings=False) as c:
                ports.add(c.sock.getsockname()[1])      # the kernel may reuse a port
                d = request(CON, GET, i, b"x", "hello")
                expect_msg(c.exchange(d), d, ACK, CONTENT, i, b"x")
        st = stats(s)
        eq(st["unverified"], 20, "unverified sessions")
        # a session per distinct port at least (a reused port may come back after its
        # session went), one per request at most
        check(len(ports) - 20 <= st["evicted"] <= 200 - 20, "evicted %d for %d ports" % (
            st["evicted"], len(ports)))


@test("unverified_observers=3: a 4th registration of an unverified peer is answered without "
      "Observe (not registered); once the peer answered its ping it registers")
def t_unverified_observers():
    with Server(opts={"unverified_observers": 3}, plugins=plugins("t_observe")) as s:
        cs = [s.client(answer_pings=False) for _ in range(3)]
        for c in cs:
            c.send(request(CON, GET, 1, b"o", "t/obs", options=[(OBSERVE, 0)]))
            check(answer(c).opt_uint(OBSERVE) is not None, "registered")
        with s.client() as c:
            d = request(CON, GET, 2, b"p", "t/obs", options=[(OBSERVE, 0)])
            m = expect_msg(c.exchange(d), d, ACK, CONTENT, 2, b"p")
            eq(m.opt_uint(OBSERVE), None, "Observe on the 4th (budget full)")
            c.recv(0.3)                             # the ping comes and is answered
            d = request(CON, GET, 3, b"q", "t/obs", options=[(OBSERVE, 0)])
            m = expect_msg(c.exchange(d), d, ACK, CONTENT, 3, b"q")
            check(m.opt_uint(OBSERVE) is not None, "registered once verified")
        for c in cs:
            c.close()


@test("unverified_bytes=4096: Block1 uploads of unverified peers share it: a 5th 1 KiB block "
      "0 -> 5.03 + Max-Age; its peer answers the ping, and its retry is taken (2.31)")
def t_unverified_bytes():
    with Server(opts={"unverified_bytes": 4096}) as s:
        body = b"u" * 1024
        cs = [s.client(answer_pings=False) for _ in range(4)]
        for i, c in enumerate(cs):
            c.send(request(CON, PUT, i, b"u", "t/store", options=[(BLOCK1, 8 | 6)],
                           payload=body))
            eq(answer(c).code, code(2, 31), "block 0 of upload %d" % i)
        with s.client() as c:
            d = request(CON, PUT, 9, b"x", "t/store", options=[(BLOCK1, 8 | 6)], payload=body)
            m = expect_msg(c.exchange(d), d, ACK, UNAVAILABLE, 9, b"x")
            check(m.opt_uint(MAX_AGE) is not None, "Max-Age")
            c.recv(0.3)                             # answers the ping
            d = request(CON, PUT, 10, b"x", "t/store", options=[(BLOCK1, 8 | 6)],
                        payload=body)
            expect_msg(c.exchange(d), d, ACK, code(2, 31), 10, b"x")
        for c in cs:
            c.close()


# ---- the 3x rule ---------------------------------------------------------------------------

def amplification(s, dgram, wait, host="::1"):
    """Send dgram as a peer that never answers a ping; (payload factor, wire factor, what
    came back) after wait seconds."""
    with Client(s.port, host, answer_pings=False) as c:
        c.send(dgram)
        got = collect(c, wait)
    out = sum(len(r) for r in got)
    wire = sum(len(r) + WIRE for r in got)
    return out / len(dgram), wire / (len(dgram) + WIRE), got


@test("the 3x rule on the wire (RFC 9175 §2.4): a peer that never answers a ping gets at most "
      "three times its bytes, IP and UDP headers included, over the whole ping window, for "
      "GET /.well-known/core (sensors.lua), /t/big (1000 B) and the first firmware block; "
      "20 repetitions stay under it; answering the ping gets the whole answer")
def t_three_x():
    sensors = os.path.join(EXAMPLES, "sensors.lua")
    fw = os.path.join(EXAMPLES, "firmware.lua")
    cases = [("/.well-known/core of sensors.lua", [sensors], ".well-known/core"),
             ("/t/big", None, "t/big"), ("the first firmware block", [fw],
                                         "firmware/update.bin")]
    for what, plg, path in cases:
        # ack_timeout 0.4: the ping goes after 0.1 s and is repeated 4 times within 5 s
        with Server(plugins=plg, opts={"ack_timeout": 0.4}) as s:
            d = request(CON, GET, 0x500, b"\x01\x02", path)
            f, fw_, got = amplification(s, d, 5.0)
            check(fw_ <= 3.0, "%s: %.2fx the request's bytes on the wire (%d datagrams)" % (
                what, fw_, len(got)))
            note("%s: %.2fx payload, %.2fx on the wire (%d datagrams back)" % (
                what, f, fw_, len(got)))
            with Client(s.port, answer_pings=False) as c:
                sent = recv = 0
                for i in range(20):
                    d = request(CON, GET, 0x600 + i, b"\x07", path)
                    c.send(d)
                    sent += len(d)
                got = collect(c, 1.0)
                recv = sum(len(r) + WIRE for r in got)
                check(recv <= 3 * (sent + 20 * WIRE), "%s x20: %d bytes back for %d" % (
                    what, recv, sent + 20 * WIRE))
            with s.client() as c:
                d = request(CON, GET, 0x700, b"\x09", path)
                m = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x700, b"\x09")
                eq(c.pings, 1, "pings answered before the whole answer")
                check(len(m.payload) >= 64, "the whole answer")


@test("Echo (RFC 9175 §2.3): verify=always answers a first request 4.01 + Echo with no "
      "state kept; the request repeated with it is served, and a wrong Echo gets another "
      "challenge; with verify=auto and no room to hold answers (unverified_bytes=0) an "
      "answer over 3x becomes that challenge too")
def t_echo():
    with Server(opts={"verify": "always"}) as s, s.client(answer_pings=False) as c:
        d = request(CON, GET, 1, b"e", "hello")
        m = expect_msg(c.exchange(d), d, ACK, UNAUTHORIZED, 1, b"e")
        echo = m.opt(ECHO)
        eq(len(echo or b""), 12, "Echo length")
        eq(stats(s)["sessions"], 0, "sessions after the challenge")
        bad = bytes([echo[0] ^ 1]) + echo[1:]
        d = request(CON, GET, 2, b"e", "hello", options=[(ECHO, bad)])
        expect_msg(c.exchange(d), d, ACK, UNAUTHORIZED, 2, b"e")
        d = request(CON, GET, 3, b"e", "hello", options=[(ECHO, echo)])
        expect_msg(c.exchange(d), d, ACK, CONTENT, 3, b"e", b"Hello, world")
        d = request(CON, GET, 4, b"e", "hello")
        expect_msg(c.exchange(d), d, ACK, CONTENT, 4, b"e")
    with Server(opts={"unverified_bytes": 0}) as s, s.client(answer_pings=False) as c:
        d = request(CON, GET, 1, b"e", "t/big")
        m = expect_msg(c.exchange(d), d, ACK, UNAUTHORIZED, 1, b"e")
        d = request(CON, GET, 2, b"e", "t/big", options=[(ECHO, m.opt(ECHO))])
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, 2, b"e")
        eq(len(m.payload), 1000, "payload once verified by Echo")


@test("libcoap's coap-client-notls with verification: verify=always (Echo, one extra round "
      "trip) and verify=auto with unverified_bytes=0 (Echo instead of a ping): the 256 KiB "
      "firmware image and /.well-known/core arrive whole")
def t_libcoap_echo():
    fw = os.path.join(EXAMPLES, "firmware.lua")
    for opts in ({"verify": "always"}, {"unverified_bytes": 0}):
        with Server(opts=opts, plugins=[fw]) as s, tempfile.TemporaryDirectory() as d:
            url = "coap://[::1]:%d" % s.port
            out = os.path.join(d, "image")
            rc, _, err = coap_client("-m", "get", "-o", out, url + "/firmware/update.bin")
            eq((rc, os.path.getsize(out) if os.path.exists(out) else None), (0, 262144),
               "%r: image bytes (stderr %r)" % (opts, err[-200:]))
            rc, out, err = coap_client("-m", "get", url + "/.well-known/core")
            check("</firmware/update.bin>" in out, "%r: discovery %r" % (opts, out))
            st = stats(s)
            note("%r: %d challenges, %d verifications, %d pings" % (
                opts, st["challenges"], st["verifications"], st["pings"]))


def node(script, *args, timeout=60):
    p = subprocess.run(["node", "-e", script] + [str(a) for a in args], cwd=NODE_DIR,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


NODE_GET = r"""
const coap = require('coap');
const [port, path] = process.argv.slice(1);
const t0 = Date.now();
const req = coap.request({host: '::1', port: +port, pathname: path});
req.on('response', r => {
  console.log(JSON.stringify({code: r.code, len: r.payload.length, ms: Date.now() - t0,
                              head: r.payload.slice(0, 40).toString()}));
  process.exit(0);
});
req.on('error', e => { console.log('error ' + e); process.exit(1); });
req.end();
"""

NODE_OBSERVE = r"""
const coap = require('coap');
const [port, path, n] = process.argv.slice(1);
const req = coap.request({host: '::1', port: +port, pathname: path, observe: true});
let got = 0;
req.on('response', r => {
  r.on('data', d => { got++; if (got >= +n) { console.log('notifications ' + got);
                                              r.close(); process.exit(0); } });
});
req.on('error', e => { console.log('error ' + e); process.exit(1); });
req.end();
setTimeout(() => { console.log('notifications ' + got); process.exit(1); }, 15000);
"""


@test("node's coap (no Echo support) under the default verification: the 256 KiB firmware "
      "image, /.well-known/core of sensors.lua and an observation of /sensors/humidity work; "
      "the cost is one ping per peer")
def t_node():
    import json
    fw, sensors = os.path.join(EXAMPLES, "firmware.lua"), os.path.join(EXAMPLES, "sensors.lua")
    with Server(plugins=[fw, sensors]) as s:
        rc, out = node(NODE_GET, s.port, "/firmware/update.bin")
        r = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
        eq((rc, r.get("code"), r.get("len")), (0, "2.05", 262144), "firmware: %s" % out)
        rc, out = node(NODE_GET, s.port, "/.well-known/core")
        d = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
        check(d.get("code") == "2.05" and d.get("len", 0) > 500, "discovery: %s" % out)
        rc, out = node(NODE_OBSERVE, s.port, "/sensors/humidity", 3)
        eq((rc, out.strip()), (0, "notifications 3"), "observe")
        st = stats(s)
        note("node: 3 peers, %d pings, %d verifications, %d challenges; the firmware took "
             "%s ms" % (st["pings"], st["verifications"], st["challenges"], r.get("ms")))
        check(st["pings"] <= 3 and st["challenges"] == 0, "one ping per peer")


# ---- oversize datagrams, bad Observe -------------------------------------------------------

@test("R12: an 8193-byte PUT in one datagram (over the 2048-byte receive slot) -> 4.13 with "
      "Size1 = max_body and a Block1 hint (CON: ACK; NON: NON); max_body=100 applies to a "
      "500-byte body in one datagram -> 4.13, Size1 100; nothing changed")
def t_r12():
    with Server() as s, s.client() as c:
        d = request(CON, PUT, 0x800, b"\x0b", "t/store", payload=b"z" * 8193)
        m = expect_msg(c.exchange(d), d, ACK, TOO_LARGE, 0x800, b"\x0b")
        eq(m.opt_uint(SIZE1), 1048576, "Size1")
        eq(m.opt_uint(BLOCK1), 6, "Block1 hint (NUM 0, SZX 6)")
        d = request(NON, PUT, 0x801, b"\x0c", "t/store", payload=b"y" * 20000)
        expect_msg(c.exchange(d), d, NON, TOO_LARGE, None, b"\x0c")
        d = request(CON, GET, 0x802, b"\x0d", "t/store")
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x802, b"\x0d")
        check(b"z" not in m.payload and b"y" not in m.payload, "store unchanged: %r" % m)
    with Server(opts={"max_body": 100}) as s, s.client() as c:
        d = request(CON, PUT, 1, b"\x0e", "t/store", payload=b"q" * 500)
        m = expect_msg(c.exchange(d), d, ACK, TOO_LARGE, 1, b"\x0e")
        eq(m.opt_uint(SIZE1), 100, "Size1")


@test("V7: an Observe option of 4 bytes (over its 0..3) is ignored as a bad elective option "
      "(RFC 7252 §5.4.3): a plain GET, no Observe in the answer, no observer")
def t_v7():
    with Server(plugins=plugins("t_observe")) as s, s.client() as c:
        d = request(CON, GET, 1, b"v", "t/obs", options=[(OBSERVE, b"\x00\x00\x00\x00")])
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, 1, b"v")
        eq(m.opt_uint(OBSERVE), None, "Observe in the answer")
        eq(stats(s)["observers"], 0, "observers")


if __name__ == "__main__":
    sys.exit(main())
