#!/usr/bin/env python3
"""test_limits.py -- every state limit of the core, hit on purpose: dedup_per_peer,
unverified_sessions and max_sessions (the two pools of peers, README "How state is
bounded"), dedup_bytes, defer_deadline, max_payload. Run like test_core.py. The hostile-peer
limits (unverified_pendings, unverified_observers, unverified_bytes, observer reaping, the
3x rule) are in test_hostile.py.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CHANGED, CON, CONTENT, GET, POST, Server, check, code, eq, expect_msg, main, request,
    stats, test)

UNAVAILABLE, INTERNAL = code(5, 3), code(5, 0)


def post_counter(c, mid, token):
    d = request(CON, POST, mid, token, "t/counter")
    return expect_msg(c.exchange(d), d, ACK, CHANGED, mid, token)


def runs(s):
    """The handler-run count, read from a fresh client (a session of its own)."""
    with s.client() as c:
        d = request(CON, GET, 0x7000, b"\xc0", "t/counter")
        return int(expect_msg(c.exchange(d), d, ACK, CONTENT, 0x7000, b"\xc0").payload)


@test("dedup_per_peer=4: the 5th exchange pushes out the 1st; recent duplicates still cached")
def t_dedup_per_peer():
    with Server(opts={"dedup_per_peer": 4}) as s, s.client() as c:
        for i in range(1, 6):
            post_counter(c, i, bytes([i]))
        eq(runs(s), 5, "runs after 5 requests")
        first = post_counter(c, 5, b"\x05")       # in the ring: the cached answer
        eq(runs(s), 5, "runs after a duplicate of the 5th")
        check(first.raw, "answered")
        post_counter(c, 1, b"\x01")               # pushed out: processed again
        eq(runs(s), 6, "runs after a duplicate of the 1st (beyond the ring)")


def verify(c, mid=0x6f00):
    """Get a verified peer: /t/big (1000 bytes) is over 3x a GET, so the answer waits for
    a ping, which the client answers (RFC 9175 §2.4)."""
    d = request(CON, GET, mid, b"\xbb", "t/big")
    expect_msg(c.exchange(d), d, ACK, CONTENT, mid, b"\xbb")
    check(c.pings == 1, "verified by one ping (%d)" % c.pings)


@test("unverified_sessions=2: a third peer makes the least recently active unverified one "
      "forgotten")
def t_unverified_sessions_evict():
    with Server(opts={"unverified_sessions": 2}) as s, \
            s.client() as c1, s.client() as c2, s.client() as c3:
        post_counter(c1, 1, b"\x01")
        post_counter(c2, 1, b"\x02")
        post_counter(c3, 1, b"\x03")              # c1 is forgotten
        post_counter(c1, 1, b"\x01")              # so its duplicate runs again (c2 goes)
        post_counter(c3, 1, b"\x03")              # c3 is still known: cached
        eq(runs(s), 4, "handler runs")


@test("max_sessions=2 (verified peers): a third verified peer makes the least recently "
      "active idle verified one forgotten; unverified peers never push verified ones out")
def t_max_sessions_evict():
    with Server(opts={"max_sessions": 2, "unverified_sessions": 1}) as s, \
            s.client() as c1, s.client() as c2, s.client() as c3, s.client() as c4:
        for c in (c1, c2):
            verify(c)
            post_counter(c, 1, bytes([c.sock.getsockname()[1] & 255]))
        post_counter(c4, 1, b"\x04")              # unverified: its own pool
        eq(stats(s)["verified"], 2, "verified peers")
        verify(c3)                                # c1 (least recent) goes
        post_counter(c2, 1, bytes([c2.sock.getsockname()[1] & 255]))   # cached: no run
        post_counter(c1, 1, bytes([c1.sock.getsockname()[1] & 255]))   # forgotten: runs
        eq(runs(s), 4, "handler runs")


@test("max_sessions=1 with the only verified peer busy (deferred): a new peer is served "
      "all the same, and can verify: it stays in the unverified pool, evicted first")
def t_max_sessions_busy():
    with Server(opts={"max_sessions": 1, "separate_after": 5}) as s, \
            s.client() as c1, s.client() as c2:
        verify(c1)
        slow = request(CON, GET, 1, b"\x01", "t/defer", query=["ms=800"])
        c1.send(slow)
        d = request(CON, GET, 2, b"\x02", "hello")
        expect_msg(c2.exchange(d), d, ACK, CONTENT, 2, b"\x02")
        verify(c2, 3)                             # proven, though the pool is full
        st = stats(s)
        eq((st["verified"], st["sessions"]), (1, 2), "verified pool, sessions")
        expect_msg(c1.recv(3.0), slow, ACK, CONTENT, 1, b"\x01", b"late")


@test("dedup_bytes=1000: a response too big to keep is not cached, its duplicate is answered "
      "again; idle peers are forgotten first")
def t_dedup_bytes():
    with Server(opts={"dedup_bytes": 1000}) as s, s.client() as c1, s.client() as c2:
        post_counter(c1, 1, b"\x01")
        big = request(CON, GET, 7, b"\x07", "t/big")
        expect_msg(c2.exchange(big), big, ACK, CONTENT, 7, b"\x07")
        m = c2.exchange(big)                      # not cached, but never left unanswered
        expect_msg(m, big, ACK, CONTENT, 7, b"\x07")
        eq(len(m.payload), 1000, "payload")
        post_counter(c1, 1, b"\x01")              # c1 was evicted to make room: runs again
        eq(runs(s), 2, "handler runs")


@test("defer_deadline=0.3: a handler that never answers in time -> 5.03 at the deadline")
def t_defer_deadline():
    with Server(opts={"defer_deadline": 0.3, "separate_after": 5}) as s, s.client() as c:
        d = request(CON, GET, 1, b"\x01", "t/defer", query=["ms=1500"])
        t0 = time.monotonic()
        m = expect_msg(c.exchange(d, timeout=2.0), d, ACK, UNAVAILABLE, 1, b"\x01")
        dt = time.monotonic() - t0
        check(0.25 < dt < 1.0, "5.03 after %.2f s" % dt)
        c.expect_silence(1.6)                     # the late pending_send is void (EGONE)
        eq(runs(s), 0, "server still serving")
        del m


@test("max_payload=500: a 1000-byte response -> 5.00, logged; still serving")
def t_max_payload():
    with Server(opts={"max_payload": 500}) as s, s.client() as c:
        d = request(CON, GET, 1, b"\x01", "t/big")
        expect_msg(c.exchange(d), d, ACK, INTERNAL, 1, b"\x01")
        check(s.log.wait_for(r"t/big handler failed", 2.0), "log line names the resource")
        eq(runs(s), 0, "server still serving")


if __name__ == "__main__":
    sys.exit(main())
