#!/usr/bin/env python3
"""test_observe.py -- Observe (RFC 7641): libcoap's coap-client-notls and node's `coap`
package as observers, and a raw client for what they do not show (types, MIDs, Observe
values, RSTs, unacknowledged CONs). Run like test_core.py:

    python3 tests/integration/test_observe.py --moonlet build/moonlet \\
        --plugins build/plugins/hello.so build/tests/t_basic.so

The server side is tests/lua/observe_res.lua (its header lists the resources) and
t_observe.so (found beside t_basic.so). Observer counts come from the server's SIGUSR1
stats line. The node test needs tests/integration/node/node_modules (`npm ci` there, which
`make check` does); without node it fails and says so.
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACCEPT, ACK, CHANGED, CON, CONTENT, CONTENT_FORMAT, ETAG, GET, NON, OBSERVE, POST, PUT,
    RST, Client, Msg, Server, cfg, check, code, coap_client, encode, eq, expect_msg, main,
    note, request, stats, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(ROOT, "tests", "lua", "observe_res.lua")
NODE_DIR = os.path.join(HERE, "node")

DELETE = 4
BLOCK2, SIZE2 = 23, 28
NOT_FOUND = code(4, 4)

_mid = [0x2000]


def mid():
    _mid[0] = (_mid[0] + 1) & 0xFFFF
    return _mid[0]


def t_observe_so():
    for p in cfg.plugins:
        if os.path.basename(p) == "t_basic.so":
            return os.path.join(os.path.dirname(p), "t_observe.so")
    raise AssertionError("t_basic.so not among --plugins: %r" % cfg.plugins)


def server(opts=None, **kw):
    return Server(opts=opts, plugins=[SCRIPT, t_observe_so()], **kw)


def observers(srv):
    return stats(srv)["observers"]


def wait_observers(srv, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        got = observers(srv)
        if got == n or time.monotonic() > deadline:
            eq(got, n, "observers (SIGUSR1 stats)")
            return
        time.sleep(0.05)


def newer(v1, v2):
    """RFC 7641 §3.4: is V2 newer than V1 (ignoring the 128-second rule)?"""
    return (v1 < v2 and v2 - v1 < 1 << 23) or (v1 > v2 and v1 - v2 > 1 << 23)


def register(c, path, token, mtype=CON, options=(), query=(), expect_obs=True, observe=0):
    m_id = mid()
    d = request(mtype, GET, m_id, token, path.strip("/").split("/"), query,
                [(OBSERVE, observe)] + list(options))
    m = c.exchange(d)
    if mtype == CON:
        expect_msg(m, d, ACK, CONTENT, m_id, token)
    else:
        expect_msg(m, d, NON, CONTENT, None, token)
    if expect_obs:
        check(m.opt_uint(OBSERVE) is not None,
              "registration answered without Observe: %r" % m)
    else:
        eq(m.opt_uint(OBSERVE), None, "Observe option in the answer")
    return m


def call(c, method, path, payload=b"", query=(), options=(), mcode=None):
    m_id = mid()
    d = request(CON, method, m_id, b"\xc1", path.strip("/").split("/"), query, options, payload)
    m = c.exchange(d)
    return expect_msg(m, d, ACK, mcode, m_id, b"\xc1")


def next_notification(c, token, timeout=5.0, ack=True):
    """The next message for token (ACKing a CON unless ack is False)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        m = c.recv(max(left, 0.01)) if left > 0 else None
        if m is None:
            raise AssertionError("no notification within %.1fs" % timeout)
        if m.token != token:
            continue
        if m.type == CON and ack:
            c.send(encode(ACK, 0, m.mid))
        return m


# ---- real clients ---------------------------------------------------------------------------

@test("coap-client-notls -s 3 observes /o/tick (notified every 50 ms): one registration answer "
      "and successive notifications with the ticking value; the observer is gone after it "
      "leaves (it deregisters or ignores with RST)")
def t_coap_client():
    with server() as srv:
        c = srv.client()
        call(c, POST, "/o/tick", query=["ms=50"], mcode=CHANGED)
        rc, out, err = coap_client("-s", "3", "-B", "4",
                                   "coap://[::1]:%d/o/tick" % srv.port, timeout=15)
        vals = [int(x) for x in re.findall(r"t=(\d+)", out)]
        check(len(vals) >= 10, "only %d representations in 3 s: %r" % (len(vals), out[:200]))
        check(all(b > a for a, b in zip(vals, vals[1:])),
              "values do not increase: %r" % vals)
        call(c, DELETE, "/o/tick", mcode=code(2, 2))
        note("%d representations in 3 s; values %d..%d" % (len(vals), vals[0], vals[-1]))
        wait_observers(srv, 0, timeout=10)


@test("coap-client-notls -v 7 shows the notifications' Observe option increasing")
def t_coap_client_observe_values():
    with server() as srv:
        c = srv.client()
        call(c, POST, "/o/tick", query=["ms=100"], mcode=CHANGED)
        rc, out, err = coap_client("-v", "7", "-s", "2", "-B", "3",
                                   "coap://[::1]:%d/o/tick" % srv.port, timeout=15)
        # only our answers: "t:ACK c:2.05 ... [ ETag:.., Observe:N ]", "t:NON c:2.05 ..."
        obs = re.findall(r"t:(?:ACK|NON|CON) c:2\.05 i:\w+ \{\w*\} \[[^\]]*?Observe:(\d+)",
                         out + err)
        ours = [int(v) for v in obs]
        check(len(ours) >= 5, "Observe values seen: %r" % obs)
        check(all(newer(a, b) for a, b in zip(ours, ours[1:])), "not increasing: %r" % ours)


@test("node's coap package observes /o/counter: the registration answer and two "
      "notifications after PUTs (autonotify), with increasing Observe values")
def t_node():
    node = shutil.which("node")
    check(node is not None, "node not installed (make deps)")
    check(os.path.isdir(os.path.join(NODE_DIR, "node_modules", "coap")),
          "tests/integration/node/node_modules missing: run `npm ci` there (make check does)")
    with server() as srv:
        p = subprocess.Popen([node, "observe.js", "::1", str(srv.port), "/o/counter", "3", "10"],
                             cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        c = srv.client()
        wait_observers(srv, 1)
        call(c, PUT, "/o/counter", b"7", mcode=CHANGED)
        time.sleep(0.1)     # two distinct states (two notifies in one loop turn make one)
        call(c, PUT, "/o/counter", b"8", mcode=CHANGED)
        out, err = p.communicate(timeout=15)
        eq(p.returncode, 0, "node observe.js exit status (stderr %r)" % err.decode())
        import json
        lines = [json.loads(x) for x in out.decode().splitlines()]
        eq([x["payload"] for x in lines], ["n=0", "n=7", "n=8"], "payloads seen by node")
        vals = [x["observe"] for x in lines]
        check(all(newer(a, b) for a, b in zip(vals, vals[1:])), "Observe values %r" % vals)


# ---- registration ------------------------------------------------------------------------

@test("registration (§4.1): CON GET Observe=0 -> ACK 2.05 with Observe; each PUT notifies "
      "as NON with the same token, the new value, a newer Observe value and an ETag that "
      "changes with the value")
def t_register():
    with server() as srv:
        c, w = srv.client(), srv.client()
        r = register(c, "/o/counter", b"ob1")
        eq(r.payload, b"n=0", "registration payload")
        last = r.opt_uint(OBSERVE)
        etags = [r.opt(ETAG)]
        for v in (5, 6, 7):
            call(w, PUT, "/o/counter", str(v).encode(), mcode=CHANGED)
            n = next_notification(c, b"ob1")
            eq((n.type, n.code, n.payload), (NON, CONTENT, b"n=%d" % v), "notification")
            etags.append(n.opt(ETAG))
            check(newer(last, n.opt_uint(OBSERVE)), "Observe %d after %d" % (
                n.opt_uint(OBSERVE), last))
            last = n.opt_uint(OBSERVE)
        check(None not in etags and len(set(etags)) == 4, "ETags %r" % etags)
        call(w, PUT, "/o/counter", b"7", mcode=CHANGED)     # the same state again
        eq(next_notification(c, b"ob1").opt(ETAG), etags[-1], "ETag of an equal state")
        eq(observers(srv), 1, "observers")


@test("a NON registration is answered NON with Observe; notifications follow")
def t_register_non():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/counter", b"nn", mtype=NON)
        call(w, PUT, "/o/counter", b"3", mcode=CHANGED)
        eq(next_notification(c, b"nn").payload, b"n=3", "notification")


@test("not observable (/o/plain) or Observe on a POST: answered without Observe, nothing "
      "registered")
def t_not_observable():
    with server() as srv:
        c = srv.client()
        register(c, "/o/plain", b"p1", expect_obs=False)
        m = call(c, POST, "/o/tick", options=[(OBSERVE, 0)], mcode=CHANGED)
        eq(m.opt_uint(OBSERVE), None, "Observe on a POST answer")
        call(c, DELETE, "/o/tick", mcode=code(2, 2))
        eq(observers(srv), 0, "observers")


@test("an error answer does not register (§4.1): Observe=0 on a missing path -> 4.04 "
      "without Observe; /o/gone answering 4.04 -> no observer")
def t_error_no_register():
    with server() as srv:
        c = srv.client()
        m_id = mid()
        d = request(CON, GET, m_id, b"e1", ["o", "nothere"], (), [(OBSERVE, 0)])
        m = expect_msg(c.exchange(d), d, ACK, NOT_FOUND, m_id, b"e1")
        eq(m.opt_uint(OBSERVE), None, "Observe on 4.04")
        call(c, PUT, "/o/counter", b"99", mcode=CHANGED)
        m_id = mid()
        d = request(CON, GET, m_id, b"e2", ["o", "gone"], (), [(OBSERVE, 0)])
        m = expect_msg(c.exchange(d), d, ACK, NOT_FOUND, m_id, b"e2")
        eq(m.opt_uint(OBSERVE), None, "Observe on 4.04")
        eq(observers(srv), 0, "observers")


@test("re-registration with the same token replaces (§4.1): one observer, one notification "
      "per change; another token is another observer")
def t_reregister():
    with server() as srv:
        c, w = srv.client(), srv.client()
        a = register(c, "/o/counter", b"rr").opt_uint(OBSERVE)
        b = register(c, "/o/counter", b"rr").opt_uint(OBSERVE)
        check(newer(a, b), "the second registration's Observe %d is not newer than %d" % (b, a))
        eq(observers(srv), 1, "observers after re-registration")
        call(w, PUT, "/o/counter", b"1", mcode=CHANGED)
        eq(next_notification(c, b"rr").payload, b"n=1", "notification")
        c.expect_silence(0.3)
        register(c, "/o/counter", b"r2")
        eq(observers(srv), 2, "observers with two tokens")


# ---- cancellation -----------------------------------------------------------------------

@test("cancellation by Observe=1 (§3.6): answered as a plain GET (2.05 without Observe), "
      "the observer is freed, no more notifications")
def t_cancel_observe1():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/counter", b"c1")
        eq(observers(srv), 1, "observers")
        register(c, "/o/counter", b"c1", observe=1, expect_obs=False)
        eq(observers(srv), 0, "observers after Observe=1")
        call(w, PUT, "/o/counter", b"2", mcode=CHANGED)
        c.expect_silence(0.4)


@test("cancellation by RST to a NON notification (§3.6): the observer is freed, no more "
      "notifications")
def t_cancel_rst_non():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/counter", b"r1")
        call(w, PUT, "/o/counter", b"4", mcode=CHANGED)
        n = next_notification(c, b"r1")
        eq(n.type, NON, "notification type")
        c.send(encode(RST, 0, n.mid))
        wait_observers(srv, 0)
        call(w, PUT, "/o/counter", b"5", mcode=CHANGED)
        c.expect_silence(0.4)


@test("cancellation by RST to a CON notification: the retransmission stops, the observer "
      "is freed")
def t_cancel_rst_con():
    with server({"ack_timeout": 0.2}) as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/con", b"rc")
        call(w, PUT, "/o/counter", b"4", mcode=CHANGED)
        n = next_notification(c, b"rc", ack=False)
        eq(n.type, CON, "notification type")
        c.send(encode(RST, 0, n.mid))
        wait_observers(srv, 0)
        c.expect_silence(0.8)   # no retransmission (0.2-0.3 s) and nothing new


@test("cancellation by CON timeout (§4.5, the client is gone): observe_con_every=1, "
      "ack_timeout=0.1, max_retransmit=2: the CON notification goes 3 times with doubling "
      "gaps, then the observer is freed and nothing more is sent")
def t_cancel_timeout():
    with server({"ack_timeout": 0.1, "ack_random_factor": 1.0, "max_retransmit": 2,
                 "observe_con_every": 1}) as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/counter", b"to")
        call(w, PUT, "/o/counter", b"9", mcode=CHANGED)
        times, mids = [], set()
        for _ in range(3):
            n = next_notification(c, b"to", ack=False)
            eq((n.type, n.payload), (CON, b"n=9"), "notification")
            times.append(time.monotonic())
            mids.add(n.mid)
        eq(len(mids), 1, "one MID for the retransmissions")
        gaps = [b - a for a, b in zip(times, times[1:])]
        check(0.07 < gaps[0] < 0.3 and 0.15 < gaps[1] < 0.5, "gaps %r" % gaps)
        wait_observers(srv, 0)
        call(w, PUT, "/o/counter", b"10", mcode=CHANGED)
        c.expect_silence(0.4)


# ---- reliability --------------------------------------------------------------------------

@test("sequence numbers increase across NON and CON notifications (observe_con_every=3: "
      "every third is a CON); 9 changes -> 9 notifications, 3 of them CON")
def t_seq_non_con():
    with server({"observe_con_every": 3}) as srv:
        c, w = srv.client(), srv.client()
        last = register(c, "/o/counter", b"sq").opt_uint(OBSERVE)
        types = []
        for v in range(1, 10):
            call(w, PUT, "/o/counter", str(v).encode(), mcode=CHANGED)
            n = next_notification(c, b"sq")
            eq(n.payload, b"n=%d" % v, "notification payload")
            check(newer(last, n.opt_uint(OBSERVE)), "Observe %d after %d (%s)" % (
                n.opt_uint(OBSERVE), last, types))
            last = n.opt_uint(OBSERVE)
            types.append("CON" if n.type == CON else "NON")
        eq(types.count("CON"), 3, "CON notifications among %s" % types)


@test("notify_con resource: every notification is a CON; the ACK ends its retransmission")
def t_notify_con():
    with server({"ack_timeout": 0.2}) as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/con", b"nc")
        for v in (1, 2):
            call(w, PUT, "/o/counter", str(v).encode(), mcode=CHANGED)
            n = next_notification(c, b"nc")
            eq((n.type, n.payload), (CON, b"n=%d" % v), "notification")
        c.expect_silence(0.6)


@test("burst (§4.5.2): 1000 changes while a CON notification is unacknowledged leave no "
      "backlog: after the ACK exactly one notification with the latest value, then silence")
def t_burst():
    with server({"ack_timeout": 2.0, "ack_random_factor": 1.0}) as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/con", b"bu")
        call(w, PUT, "/o/counter", b"1", mcode=CHANGED)
        first = next_notification(c, b"bu", ack=False)
        eq((first.type, first.payload), (CON, b"n=1"), "first notification")
        for v in range(2, 1002):
            call(w, PUT, "/o/counter", str(v).encode(), mcode=CHANGED)
        extra = c.drain(0.05)   # a retransmission may have gone out meanwhile (2 s)
        c.send(encode(ACK, 0, first.mid))
        msgs = []
        for raw in extra:
            m = Msg(raw)
            if m.mid != first.mid:
                msgs.append(m)
        if not msgs:
            msgs.append(next_notification(c, b"bu", timeout=3.0))
        for m in msgs:
            if m.type == CON:
                c.send(encode(ACK, 0, m.mid))
        eq(msgs[-1].payload, b"n=1001", "the notification after the ACK")
        check(len(msgs) == 1, "more than one notification after the ACK: %r" % msgs)
        c.expect_silence(0.5)
        eq(observers(srv), 1, "observers")
        note("1000 changes, %d retransmission(s) of the first CON, then 1 notification" % (
            len(extra) - len(msgs) if extra else 0))


# ---- limits --------------------------------------------------------------------------------

@test("observe_per_peer=2: a third registration from one peer -> 2.05 without Observe; "
      "observe_max=3: another peer's second -> without Observe; freeing one makes room")
def t_limits():
    with server({"observe_per_peer": 2, "observe_max": 3}) as srv:
        c, d = srv.client(), srv.client()
        register(c, "/o/counter", b"l1")
        register(c, "/o/con", b"l2")
        register(c, "/o/variant", b"l3", expect_obs=False)
        register(d, "/o/counter", b"l4")
        register(d, "/o/con", b"l5", expect_obs=False)
        eq(observers(srv), 3, "observers")
        register(c, "/o/counter", b"l1", observe=1, expect_obs=False)
        register(d, "/o/con", b"l5")
        eq(observers(srv), 3, "observers")


# ---- representation -------------------------------------------------------------------------

@test("variants (§4.2): observers of /o/variant with Accept text and json get their own "
      "format; the handler runs once per variant per change, not per observer")
def t_variants():
    with server() as srv:
        w = srv.client()
        cs = [srv.client() for _ in range(6)]
        for i, c in enumerate(cs):
            opts = [(ACCEPT, 50)] if i % 2 else []
            register(c, "/o/variant", b"v%d" % i, options=opts)
        before = call(w, GET, "/o/runs", mcode=CONTENT).payload
        call(w, PUT, "/o/counter", b"12", mcode=CHANGED)
        for i, c in enumerate(cs):
            n = next_notification(c, b"v%d" % i)
            if i % 2:
                eq((n.opt_uint(CONTENT_FORMAT), n.payload), (50, b'{"n":12}'), "json observer")
            else:
                eq((n.opt_uint(CONTENT_FORMAT), n.payload), (0, b"n=12"), "text observer")
        after = call(w, GET, "/o/runs", mcode=CONTENT).payload
        b = int(re.search(rb"variant=(\d+)", before).group(1))
        a = int(re.search(rb"variant=(\d+)", after).group(1))
        eq(a - b, 2, "handler runs for one change with 6 observers in 2 variants")


@test("observe + Block2 (RFC 7959 §3.4): a 4 KiB representation is notified as block 0 "
      "(Block2 NUM 0 M=1 SZX 6, ETag, Size2 4096); GETs for blocks 1..3 return the rest of "
      "that very representation (same ETag) although the state changed meanwhile")
def t_observe_block2():
    with server() as srv:
        c, w = srv.client(), srv.client()
        r = register(c, "/o/big", b"bb")
        eq(r.opt_uint(BLOCK2), 0x8 | 6, "registration Block2 (NUM 0, M=1, SZX 6)")
        call(w, PUT, "/o/counter", b"3", mcode=CHANGED)
        n = next_notification(c, b"bb")
        eq(n.opt_uint(BLOCK2), 0x8 | 6, "notification Block2")
        eq(n.opt_uint(SIZE2), 4096, "Size2")
        etag = n.opt(ETAG)
        check(etag is not None, "no ETag on the notification")
        call(w, PUT, "/o/silent", b"4", mcode=CHANGED)     # changes it, notifies nobody
        got = n.payload
        for num in (1, 2, 3):
            m = call(c, GET, "/o/big", options=[(BLOCK2, num << 4 | 6)], mcode=CONTENT)
            eq(m.opt(ETAG), etag, "ETag of block %d" % num)
            eq(m.opt_uint(BLOCK2), num << 4 | (8 if num < 3 else 0) | 6, "Block2 of %d" % num)
            got += m.payload
        eq(len(got), 4096, "representation size")
        lines = got.split(b"\n")[:-1]
        eq(len(lines), 64, "lines")
        check(all(x.startswith(b"3:") for x in lines), "a line of another state: %r" % [
            x[:6] for x in lines if not x.startswith(b"3:")][:3])
        # a new transfer (block 0 by GET) sees the new state under a new ETag
        m = call(c, GET, "/o/big", options=[(BLOCK2, 6)], mcode=CONTENT)
        check(m.payload.startswith(b"4:1:") and m.opt(ETAG) != etag, "a new transfer: %r %r" % (
            m.payload[:6], m.opt(ETAG)))


@test("a notification whose handler waits (moonlet.sleep in /o/slow) still reaches every "
      "observer, after the wait")
def t_deferred_build():
    with server() as srv:
        cs = [srv.client() for _ in range(3)]
        w = srv.client()
        for i, c in enumerate(cs):
            eq(register(c, "/o/slow", b"s%d" % i).payload, b"s=0", "registration")
        call(w, PUT, "/o/counter", b"21", mcode=CHANGED)
        for i, c in enumerate(cs):
            eq(next_notification(c, b"s%d" % i).payload, b"s=21", "notification %d" % i)


@test("an error notification ends the observation (§4.2): /o/gone answers 4.04 once n=99 "
      "-> a CON 4.04 without Observe, the observer freed")
def t_error_ends():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/gone", b"go")
        call(w, PUT, "/o/counter", b"99", mcode=CHANGED)
        n = next_notification(c, b"go")
        eq((n.type, n.code, n.opt_uint(OBSERVE)), (CON, NOT_FOUND, None), "final notification")
        wait_observers(srv, 0)
        call(w, PUT, "/o/counter", b"1", mcode=CHANGED)
        c.expect_silence(0.4)


@test("the server stops (SIGTERM): every observer gets a final CON 5.03 without Observe "
      "(§4.2) before it exits 0")
def t_shutdown():
    srv = server()
    try:
        cs = [srv.client() for _ in range(2)]
        register(cs[0], "/o/counter", b"sd0")
        register(cs[1], "/t/obs", b"sd1")
        eq(srv.stop(), 0, "exit status")
        for i, c in enumerate(cs):
            n = next_notification(c, b"sd%d" % i, ack=False)
            eq((n.type, n.code, n.opt_uint(OBSERVE)), (CON, code(5, 3), None),
               "final notification %d" % i)
    finally:
        srv.stop()


# ---- C plugin -------------------------------------------------------------------------------

@test("C plugin (t_observe.so): moonlet_notify from a POST handler notifies /t/obs; "
      "autonotify notifies /t/obs-auto after a 2.04 PUT but not after a 4.00")
def t_plugin():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/t/obs", b"cp")
        register(c, "/t/obs-auto", b"ca")
        call(w, POST, "/t/obs", mcode=CHANGED)
        eq(next_notification(c, b"cp").payload, b"c=1", "/t/obs notification")
        call(w, PUT, "/t/obs-auto", b"42", mcode=CHANGED)
        eq(next_notification(c, b"ca").payload, b"m=42", "/t/obs-auto notification")
        call(w, PUT, "/t/obs-auto", b"", mcode=code(4, 0))
        c.expect_silence(0.3)


@test("several notifies in one loop turn make one notification (a PUT handler notifying "
      "several resources; /o/counter's own autonotify)")
def t_coalesce():
    with server() as srv:
        c, w = srv.client(), srv.client()
        register(c, "/o/con", b"k1")
        register(c, "/o/counter", b"k2")
        call(w, PUT, "/o/counter", b"5", mcode=CHANGED)
        got = sorted((next_notification(c, t).token for t in (b"k1", b"k2")))
        eq(got, [b"k1", b"k2"], "one notification each")
        c.expect_silence(0.3)


if __name__ == "__main__":
    main()
