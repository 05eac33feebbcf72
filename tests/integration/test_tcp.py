#!/usr/bin/env python3
"""test_tcp.py -- CoAP over TCP (coap+tcp://, RFC 8323) on loopback: raw frames for the
message layer (§3.2 framing, CSM, Ping/Pong, Release, Abort, the connection limits) and every
MALFORMED.md row that applies over TCP, and coap-client-notls as an independent peer.

  python3 tests/integration/test_tcp.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Every test starts its own server with `-l coap+tcp://127.0.0.1:0` (the port comes from its
`ready coap+tcp://...` line) beside the usual UDP listener, plus tests/lua/tcp_res.lua where
a test needs its resources; the runner stops it by PID. Test names start with the
MALFORMED.md row IDs they cover (T1-T15 and the O/R/H rows that make sense over TCP: the
answer over TCP is the same code, and where UDP would RST, TCP aborts).
"""

import os
import re
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACCEPT, CHANGED, CONTENT, CONTENT_FORMAT, DELETE, DELETED, ECHO, FETCH, GET,
    LOCATION_PATH, MAX_AGE, NO_RESPONSE, OBSERVE, OSCORE, POST, PROXY_SCHEME, PROXY_URI, PUT,
    URI_HOST, URI_PATH, Server, cfg, check, code, code_str, coap_client, encode_options, eq,
    error_code_of, h, hx, link_parse, main, note, stats, test)
from rfc8323 import (  # noqa: E402
    ABORT, CSM, CSM_OK, OPT_BAD_CSM, OPT_BWT, OPT_CUSTODY, OPT_MMS, PING, PONG, RELEASE,
    FrameConn, block_val, csm, frame, frame_size, req)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TCP_RES = os.path.join(ROOT, "tests", "lua", "tcp_res.lua")
READY_TCP_RE = re.compile(r"ready coap\+tcp://\S+:(\d+)")

BLOCK2, BLOCK1 = 23, 27
BAD_REQUEST, BAD_OPTION, NOT_FOUND, NOT_ALLOWED = code(4, 0), code(4, 2), code(4, 4), code(4, 5)
NOT_ACCEPTABLE, TOO_LARGE, UNSUPPORTED_CF = code(4, 6), code(4, 13), code(4, 15)
INTERNAL, PROXY_NOT_SUPPORTED = code(5, 0), code(5, 5)
HELLO = b"\xb5hello"            # Uri-Path "hello" as the first option
T_BIG = bytes((ord("0") + i % 10) for i in range(1000))                       # /t/big
BIG = b"".join(((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "big") for i in range(65536))
ABORT_CLOSE = 3.5       # after an Abort the server closes (its grace for the peer: 1 s)


# ---- a raw connection ------------------------------------------------------------------

class Conn(FrameConn):
    """A TCP connection to the server: the server's CSM is read first (wait_csm), then ours
    is sent (csm; None: nothing). recv() returns whole frames, None on timeout or at the end
    of the stream (then .eof is 'fin' or 'reset')."""

    close_wait = ABORT_CLOSE

    def __init__(self, port, csm=CSM_OK, host="127.0.0.1", src=None, rcvbuf=None,
                 wait_csm=True):
        FrameConn.__init__(self)
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                          socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if src:
            s.bind((src, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5.0)
        s.connect((host, port))
        self.sock = s
        if wait_csm:
            self.start(csm)
        elif csm is not None:
            self.send(csm)

    def close(self):
        self.sock.close()

    def _send(self, data):
        self.sock.sendall(data)

    def _read(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            self.eof = "reset"
            return b""
        if not data:
            self.eof = "fin"
        return data


class Tcp:
    """moonlet with a coap+tcp:// listener on 127.0.0.1 (and its UDP one on [::1])."""

    def __init__(self, opts=None, lua=False, plugins=None):
        plugins = list(cfg.plugins if plugins is None else plugins) + ([TCP_RES] if lua else [])
        self.srv = Server(opts=opts, plugins=plugins, args=["-l", "coap+tcp://127.0.0.1:0"])
        m = self.srv.log.wait_for(READY_TCP_RE.pattern, 5.0)
        check(m, "no 'ready coap+tcp://' line:\n" + self.srv.log.text())
        self.port = int(m.group(1))
        self.uri = "coap+tcp://127.0.0.1:%d" % self.port

    def conn(self, **kw):
        return Conn(self.port, **kw)

    def stats(self):
        return stats(self.srv)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()


def serving(t):
    """A new connection is served: GET /hello -> 2.05 'Hello, world'."""
    with t.conn() as c:
        eq(c.ask(req(GET, b"\x5e", "hello"), CONTENT).payload, b"Hello, world", "/hello")


def aborts(t, rows, csm_first=True):
    """Each (name, bytes, why, bad_csm_option) on a connection of its own, all at once:
    exactly one 7.05 Abort comes (its diagnostic payload contains why, and Bad-CSM-Option is
    the number given), nothing else, and the server closes the connection; then a new
    connection is still served."""
    conns = []
    for name, data, why, bad in rows:
        c = t.conn(csm=CSM_OK if csm_first else None)
        c.send(data)
        conns.append((name, data, why, bad, c))
    problems, deadline = [], time.monotonic() + ABORT_CLOSE
    for name, data, why, bad, c in conns:
        try:
            frames = c.closed(max(0.0, deadline - time.monotonic()))
            check(len(frames) == 1 and frames[0].code == ABORT,
                  "expected exactly one 7.05 Abort, got %r" % frames)
            a = frames[0]
            if why:
                check(why.encode() in a.payload, "Abort diagnostic %r lacks %r" % (a.payload, why))
            if bad is not None:
                eq(a.opt_uint(OPT_BAD_CSM), bad, "Bad-CSM-Option")
            else:
                eq(a.opts(OPT_BAD_CSM), [], "Bad-CSM-Option")
        except AssertionError as e:
            problems.append("%s: sent %s\n    %s" % (name, hx(data[:40]), str(e).replace(
                "\n", "\n    ")))
        finally:
            c.close()
    check(not problems, "\n".join(problems))
    serving(t)


def download(c, path, token=b"\xb2", block2=None, max_frame=None, query=()):
    """GET path, following Block2 to the end (BERT too): (body, frames)."""
    data, frames = b"", []
    opts = [(BLOCK2, block2)] if block2 is not None else []
    while True:
        f = c.ask(req(GET, token, path, query, opts), CONTENT, token)
        frames.append(f)
        if max_frame is not None:
            check(len(f.frame) <= max_frame, "a %d-byte answer to a peer whose "
                  "Max-Message-Size is %d: %r" % (len(f.frame), max_frame, f))
        b2 = f.opt(BLOCK2)
        if b2 is None:
            check(not data, "a block without Block2 in the middle of a transfer: %r" % f)
            return f.payload, frames
        num, more, szx = block_val(b2)
        unit = 1024 if szx == 7 else 16 << szx
        eq(num * unit, len(data), "block offset (NUM %d SZX %d)" % (num, szx))
        data += f.payload
        if not more:
            return data, frames
        check(f.payload and len(f.payload) % unit == 0,
              "a non-final block of %d bytes at SZX %d" % (len(f.payload), szx))
        check(len(frames) < 20000, "too many blocks")
        opts = [(BLOCK2, (num + len(f.payload) // unit) << 4 | szx)]


def counter(c):
    return int(c.ask(req(GET, b"\xc0", "t/counter"), CONTENT).payload)


# ---- CSM (§5.3) ------------------------------------------------------------------------

@test("CSM: the server's 7.01 comes at once on accept, before we send anything: "
      "Max-Message-Size 8192 and Block-Wise-Transfer (empty); -o tcp_max_message=1152 -> 1152")
def t_csm():
    for opts, mms in ((None, 8192), ({"tcp_max_message": 1152}, 1152)):
        with Tcp(opts) as t:
            t0 = time.monotonic()
            with t.conn(csm=None) as c:
                f = c.server_csm
                check(time.monotonic() - t0 < 1.0, "the CSM took %.2fs" % (time.monotonic() - t0))
                eq((f.token, f.payload), (b"", b""), "CSM token, payload")
                eq(f.options, [(OPT_MMS, mms.to_bytes(2, "big")), (OPT_BWT, b"")], "CSM options")


@test("T1 the first message is not a CSM (GET /hello; a Ping) -> 7.05 Abort 'first message "
      "must be CSM', not answered, closed")
def t_t1():
    with Tcp() as t:
        aborts(t, [("GET first", req(GET, b"\x01", "hello"), "first message must be CSM", None),
                   ("Ping first", frame(PING, b"\x02"), "first message must be CSM", None)],
               csm_first=False)


@test("T2 CSM with an unknown critical option 9 -> Abort with Bad-CSM-Option 9; an unknown "
      "elective option 10 is ignored; a later CSM is accepted")
def t_t2():
    with Tcp() as t:
        aborts(t, [("critical 9", csm(extra=[(9, b"")]), "critical", 9),
                   ("critical 9 with a value", csm(extra=[(9, b"\x01\x02")]), None, 9)],
               csm_first=False)
        with t.conn(csm=csm(extra=[(10, b"x"), (12, b"")])) as c:
            eq(c.ask(req(GET, b"\x0a", "hello"), CONTENT).payload, b"Hello, world", "/hello")
            c.send(csm(mms=4096))                       # §5.3: a CSM may come at any time
            c.alive()
            eq(c.ask(req(GET, b"\x0b", "hello"), CONTENT).payload, b"Hello, world", "/hello")


@test("T3 Len=15 with extended length 0xFFFFFFFF -> Abort 'message exceeds Max-Message-Size', "
      "closed; nothing allocated (RSS); another connection keeps being served")
def t_t3():
    with Tcp() as t, t.conn() as other:
        rss = t.srv.rss_kb()
        head = bytes([0xF0, 0xFF, 0xFF, 0xFF, 0xFF, GET])
        rows = [("whole header", head, "exceeds Max-Message-Size", None),
                ("with a token and bytes", bytes([0xF4]) + head[1:] + b"\x01\x02\x03\x04" +
                 b"\x00" * 1000, "exceeds Max-Message-Size", None)]
        aborts(t, rows)
        # the header a byte at a time: the length is judged once it is whole
        with t.conn() as c:
            for b in head:
                c.send(bytes([b]))
                time.sleep(0.01)
            frames = c.closed()
            check(len(frames) == 1 and frames[0].code == ABORT, "expected Abort: %r" % frames)
        grew = t.srv.rss_kb() - rss
        check(grew < 4096, "RSS grew by %d KiB" % grew)
        other.alive()
        eq(other.ask(req(GET, b"\x03", "t/big"), CONTENT).payload, T_BIG, "/t/big")


def sized_post(total, token=b"\x04"):
    """POST /echo whose frame is exactly total bytes long (Len 14: 3-byte header + Code)."""
    opts = [(URI_PATH, "echo")]
    body_len = total - 4 - len(token)
    pl = b"p" * (body_len - len(encode_options(opts)) - 1)
    f = req(POST, token, "echo", payload=pl)
    eq(len(f), total, "frame size")
    return f, pl


@test("T4 -o tcp_max_message=1152: a 1152-byte message is served, a 1153-byte one -> Abort "
      "(its header alone is enough: the body is never waited for), closed")
def t_t4():
    with Tcp({"tcp_max_message": 1152}) as t:
        with t.conn() as c:
            f, pl = sized_post(1152)
            eq(c.ask(f, CHANGED).payload, pl, "echo of the 1152-byte message")
        f, pl = sized_post(1153)
        aborts(t, [("1153 bytes", f, "exceeds Max-Message-Size", None),
                   ("its header only", f[:5], "exceeds Max-Message-Size", None)])


@test("T5 peer Max-Message-Size 64 (with Block-Wise-Transfer): every answer <= 64 bytes; GET "
      "/t/big (1000 B) comes in Block2 blocks, byte-exact; 200: the same, and a 4.00 with a "
      "300-byte diagnostic becomes a short 5.00")
def t_t5():
    with Tcp(lua=True) as t:
        for mms in (64, 200):
            with t.conn(csm=csm(mms=mms)) as c:
                body, frames = download(c, "t/big", max_frame=mms)
                eq(body, T_BIG, "/t/big at MMS %d" % mms)
                check(len(frames) > 1, "not block-wise")
                note("MMS %d: %d blocks of %d bytes" % (mms, len(frames), len(frames[0].payload)))
                f = c.ask(req(GET, b"\x05", "hello"), CONTENT)
                eq(f.payload, b"Hello, world", "/hello")
                f = c.ask(req(GET, b"\x06", "tcp/err"))
                check(len(f.frame) <= mms, "%d-byte answer: %r" % (len(f.frame), f))
                check(f.code in (INTERNAL, BAD_REQUEST), "code %r" % f)
                note("MMS %d: /tcp/err (300-byte diagnostic) -> %s %r" % (mms, f.code_str,
                                                                          f.payload[:40]))
        # a later CSM lowers it (§5.3): the same connection, whole, then in blocks
        with t.conn() as c:
            eq(c.ask(req(GET, b"\x07", "t/big"), CONTENT).payload, T_BIG, "/t/big whole")
            c.send(csm(mms=200))
            body, frames = download(c, "t/big", max_frame=200)
            eq(body, T_BIG, "/t/big after the second CSM")


@test("T5 peer Max-Message-Size 64 without Block-Wise-Transfer: no answer above 64 bytes "
      "(Block2 anyway, or a short 5.00)")
def t_t5_nobwt():
    with Tcp() as t, t.conn(csm=csm(mms=64, bwt=False)) as c:
        f = c.ask(req(GET, b"\x08", "t/big"))
        check(len(f.frame) <= 64, "%d-byte answer: %r" % (len(f.frame), f))
        if f.code == CONTENT:
            body, _ = download(c, "t/big", max_frame=64)
            eq(body, T_BIG, "/t/big")
            note("without Block-Wise-Transfer: Block2 blocks (RFC 8323 §5.3.2: the option's "
                 "absence says nothing)")
        else:
            eq(f.code, INTERNAL, "code")
            note("without Block-Wise-Transfer: 5.00")


@test("T6 peer Max-Message-Size 2^32-1 -> accepted (capped at what the server frames): "
      "/t/big whole, /tcp/big (256 KiB) in BERT blocks, no frame above 64 KiB + header")
def t_t6():
    with Tcp(lua=True) as t, t.conn(csm=csm(mms=0xFFFFFFFF)) as c:
        eq(c.ask(req(GET, b"\x09", "t/big"), CONTENT).payload, T_BIG, "/t/big")
        body, frames = download(c, "tcp/big", max_frame=65536 + 6)
        eq(len(body), len(BIG), "length")
        check(body == BIG, "/tcp/big differs")
        szx = block_val(frames[0].opt(BLOCK2))[2] if frames[0].opt(BLOCK2) else None
        note("T6: %d answers for 256 KiB, SZX %s, first payload %d bytes" % (
            len(frames), szx, len(frames[0].payload)))
    # 2^32 itself needs 5 bytes (a uint option has at most 4): taken as "very large" too
    with Tcp(lua=True) as t, t.conn(csm=frame(CSM, options=[(OPT_MMS, 1 << 32),
                                                            (OPT_BWT, b"")])) as c:
        body, frames = download(c, "tcp/big", max_frame=65536 + 6)
        check(body == BIG, "/tcp/big differs (MMS 2^32)")


@test("T12 BERT (Block2/Block1 SZX 7) from a peer whose CSM had no Block-Wise-Transfer -> 4.00; "
      "with it, a BERT Block2 request is served")
def t_t12():
    with Tcp(lua=True) as t:
        with t.conn(csm=csm(bwt=False)) as c:
            f = c.ask(req(GET, b"\x12", "tcp/big", options=[(BLOCK2, 0x07)]), BAD_REQUEST)
            note("T12 GET: %r" % f.payload)
            before = c.ask(req(GET, b"\x13", "tcp/up"), CONTENT).payload
            c.ask(req(PUT, b"\x14", "tcp/up", options=[(BLOCK1, 0x0F)], payload=BIG[:2048]),
                  BAD_REQUEST)
            eq(c.ask(req(GET, b"\x15", "tcp/up"), CONTENT).payload, before, "/tcp/up changed")
        with t.conn() as c:
            f = c.ask(req(GET, b"\x16", "tcp/big", options=[(BLOCK2, 0x07)]), CONTENT)
            num, more, szx = block_val(f.opt(BLOCK2))
            eq((num, more, szx), (0, 1, 7), "Block2")
            eq(f.payload, BIG[:len(f.payload)], "block 0")
            check(len(f.payload) % 1024 == 0, "BERT block of %d bytes" % len(f.payload))


# ---- signaling: Ping, Release, Abort (§5.4-§5.6) -----------------------------------------

@test("T7 7.02 Ping -> 7.03 Pong with the same token (0-8 bytes); Custody asked with nothing "
      "in flight -> Pong with Custody; with a deferred request owed -> no Custody before it")
def t_t7():
    with Tcp() as t, t.conn() as c:
        for tok in (b"", b"\x77", bytes(range(1, 9))):
            c.send(frame(PING, tok))
            f = c.expect(PONG, tok)
            eq(f.opts(OPT_CUSTODY), [], "Custody not asked for")
        c.send(frame(PING, b"\xcc", [(OPT_CUSTODY, b"")]))
        eq(c.expect(PONG, b"\xcc").opts(OPT_CUSTODY), [b""], "Custody")
        c.send(req(GET, b"\xd1", "t/defer", ["ms=300"]) +
               frame(PING, b"\xcd", [(OPT_CUSTODY, b"")]))
        f = c.recv(2.0)
        check(f is not None, "no Pong\n" + c.diag())
        if f.code == PONG:
            eq(f.opts(OPT_CUSTODY), [], "Custody while /t/defer is owed")
            c.expect(CONTENT, b"\xd1")
            note("T7: Pong at once, without Custody")
        else:
            expect_late(f)
            eq(c.expect(PONG, b"\xcd").opts(OPT_CUSTODY), [b""], "Custody after the answer")


def expect_late(f, token=b"\xd1"):
    eq((f.code_str, f.token, f.payload), ("2.05", token, b"late"), "/t/defer answer")


@test("T8 7.04 Release: the request in flight (/t/defer?ms=300) is still answered, then the "
      "server closes; a request sent after the Release is not answered")
def t_t8():
    with Tcp() as t, t.conn() as c:
        t0 = time.monotonic()
        c.send(req(GET, b"\xd1", "t/defer", ["ms=300"]) + frame(RELEASE))
        c.send(req(GET, b"\xd2", "hello"))
        frames = c.closed(3.0)
        dt = time.monotonic() - t0
        eq(len(frames), 1, "frames before the close: %r" % frames)
        expect_late(frames[0])
        check(0.25 < dt < 2.0, "closed after %.2fs" % dt)
        serving(t)


@test("T9 7.05 Abort from the client -> the server closes at once, without answering what is "
      "in flight; its observation ends with it")
def t_t9():
    with Tcp(lua=True) as t, t.conn() as c:
        c.ask(req(GET, b"\x0b", "tcp/clock", options=[(OBSERVE, 0)]), CONTENT)
        eq(t.stats()["observers"], 1, "observers")
        t0 = time.monotonic()
        c.send(req(GET, b"\xd1", "t/defer", ["ms=500"]) + frame(ABORT, payload="bye"))
        frames = c.closed(1.0)
        check(time.monotonic() - t0 < 0.4, "closed after %.2fs" % (time.monotonic() - t0))
        check(all(f.token == b"\x0b" for f in frames), "frames after our Abort: %r" % frames)
        deadline = time.monotonic() + 3
        while t.stats()["observers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        eq(t.stats()["observers"], 0, "observers after the close")
        serving(t)


@test("T10 T11 reserved code classes 1.xx 3.xx 6.xx, TKL 9-15, unknown signaling 7.06/7.31 "
      "-> Abort, closed (never an answer, never RST)")
def t_t10_t11():
    rows = [("class %s" % code_str(c), frame(c, b"\x01", [(URI_PATH, "hello")]), None, None)
            for c in (code(1, 0), code(1, 31), code(3, 0), code(3, 5), code(6, 0), code(6, 31))]
    rows += [("TKL %d" % n, frame(GET, bytes(n), [(URI_PATH, "hello")]), "token length", None)
             for n in range(9, 16)]
    rows += [("signal %s" % code_str(c), frame(c, b"\x01"), "signaling", None)
             for c in (code(7, 6), code(7, 31), code(7, 0))]
    with Tcp() as t:
        aborts(t, rows)


@test("O1-O10 option format errors over TCP -> Abort (where UDP sends RST), closed")
def t_o1_o10():
    rows = [
        ("O1 delta nibble 15", h("f1 41")), ("O2 length nibble 15", h("1f")),
        ("O3 delta 13 cut", h("d0")), ("O4 delta 14 cut", h("e0 01")),
        ("O5 length 13 cut", h("0d")), ("O6 length 14 cut", h("0e 01")),
        ("O7 value past the end", h("b5 74 69 6d")), ("O8 number 65804", h("e0 ff ff")),
        ("O9 number wraps", h("e0 fe f2 c0")), ("O10 payload marker, no payload", HELLO + h("ff")),
    ]
    with Tcp() as t:
        aborts(t, [(n, frame(GET, b"\x0e", body=b), "format", None) for n, b in rows])


@test("Empty messages (0.00, also with a token and payload) are ignored; responses from the "
      "client (2.05, 4.04, 5.00) are ignored; the connection stays and is served")
def t_empty_and_responses():
    with Tcp() as t, t.conn() as c:
        for f in (frame(0), frame(0, b"\x01\x02", payload=b"x"), frame(CONTENT, b"\x33",
                  payload=b"unsolicited"), frame(NOT_FOUND, b""), frame(INTERNAL, b"\x44")):
            c.send(f)
            c.silent(0.2)
        c.alive()
        eq(c.ask(req(GET, b"\x45", "hello"), CONTENT).payload, b"Hello, world", "/hello")


# ---- chunking invariance (T13) -------------------------------------------------------------

@test("T13 the CSM and a request fed 1 byte at a time (5 ms apart) -> the right answer")
def t_t13_bytes():
    with Tcp() as t, t.conn(csm=None) as c:
        data = CSM_OK + req(GET, b"\x13\x13\x13\x13", "t/big") + req(POST, b"\x14", "echo",
                                                                    payload=b"z" * 30)
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.005)
        eq(c.expect(CONTENT, b"\x13\x13\x13\x13").payload, T_BIG, "/t/big")
        eq(c.expect(CHANGED, b"\x14").payload, b"z" * 30, "echo")


@test("T13 200 pipelined requests in one write -> 200 answers, in order")
def t_t13_pipelined():
    with Tcp() as t, t.conn() as c:
        data = b""
        for i in range(200):
            data += req(GET, i.to_bytes(2, "big"), "hello" if i % 3 else "t/big")
        c.send(data)
        for i in range(200):
            f = c.expect(CONTENT, i.to_bytes(2, "big"))
            eq(f.payload, b"Hello, world" if i % 3 else T_BIG, "answer %d" % i)


@test("T13 a frame cut at every byte boundary (Len 0-12, 13 and 14 headers, tokens, "
      "options, payload): the first part is held, the rest completes it")
def t_t13_splits():
    with Tcp() as t, t.conn() as c:
        msgs = [req(GET, b"\x01", "hello"),
                req(GET, b"\x02\x02\x02\x02\x02\x02\x02\x02", "t/getonly"),
                req(POST, b"\x03\x03", "echo", payload=b"q" * 300)]
        n = 0
        for m in msgs:
            fs = frame_size(m)
            for k in range(1, len(m)):
                # a Ping in front: its Pong says the server has read this write
                c.send(frame(PING, b"\x99") + m[:k])
                c.expect(PONG, b"\x99")
                c.send(m[k:])
                f = c.expect(None, m[fs[1]:fs[1] + (m[0] & 15)])
                check(f.code in (CONTENT, CHANGED), "cut at %d: %r" % (k, f))
                n += 1
        note("T13: %d cuts" % n)


# ---- deadlines, keepalive, limits (T14, T15) ----------------------------------------------

@test("T14 -o tcp_csm_timeout=0.5: a silent connection gets the CSM, then Abort 'no CSM in "
      "time' and is closed within 3 s; slowloris (a CSM byte every 0.4 s, 8 connections) too; "
      "a new connection is served meanwhile")
def t_t14():
    with Tcp({"tcp_csm_timeout": 0.5}) as t:
        t0 = time.monotonic()
        silent = t.conn(csm=None)
        slow = [t.conn(csm=None) for _ in range(8)]
        slow_csm = csm(extra=[(10, b"s" * 40)])
        sent, closed, aborted = 0, {}, {}
        while len(closed) < len(slow) + 1 and time.monotonic() - t0 < 4.0:
            for i, c in enumerate([silent] + slow):
                if i in closed:
                    continue
                while True:
                    f = c.recv(0)
                    if f is None:
                        break
                    eq(f.code, ABORT, "frame on connection %d" % i)
                    check(b"no CSM in time" in f.payload, "Abort payload %r" % f.payload)
                    aborted.setdefault(i, time.monotonic() - t0)
                if c.eof:
                    closed[i] = time.monotonic() - t0
            if sent < len(slow_csm) - 1 and time.monotonic() - t0 >= sent * 0.4:
                for i, c in enumerate(slow, 1):
                    if i not in closed:
                        try:
                            c.send(slow_csm[sent:sent + 1])
                        except OSError:
                            pass
                sent += 1
            r = [c.sock for i, c in enumerate([silent] + slow) if i not in closed]
            select.select(r, [], [], 0.05)
        check(len(closed) == len(slow) + 1, "still open after %.1fs: %s" % (
            time.monotonic() - t0, [i for i in range(len(slow) + 1) if i not in closed]))
        check(len(aborted) == len(slow) + 1, "no Abort on %s" % [
            i for i in range(len(slow) + 1) if i not in aborted])
        check(all(0.4 < a < 1.5 for a in aborted.values()), "Abort times %r" % aborted)
        check(max(closed.values()) < 3.2, "close times %r" % closed)
        note("T14: Abort after %.2f-%.2fs, closed after %.2f-%.2fs; %d CSM bytes sent" % (
            min(aborted.values()), max(aborted.values()), min(closed.values()),
            max(closed.values()), sent))
        serving(t)


@test("keepalive -o tcp_keepalive=0.5 -o tcp_ping_timeout=0.5: an idle client gets a Ping; "
      "answering Pong keeps the connection (and the next Ping comes); silence closes it")
def t_keepalive():
    with Tcp({"tcp_keepalive": 0.5, "tcp_ping_timeout": 0.5}) as t:
        t0 = time.monotonic()
        good, mute = t.conn(), t.conn()
        pings, closed_at = 0, None
        while time.monotonic() - t0 < 3.0 and (pings < 3 or closed_at is None):
            select.select([good.sock] + ([mute.sock] if closed_at is None else []), [], [], 0.1)
            f = good.recv(0)
            if f is not None:
                eq(f.code, PING, "frame to the client that answers")
                good.send(frame(PONG, f.token))
                pings += 1
            if closed_at is None:
                f = mute.recv(0)
                if f is not None:
                    eq(f.code, PING, "frame to the mute client")
                if mute.eof:
                    closed_at = time.monotonic() - t0
        check(pings >= 3, "only %d Pings to the client that answers in %.1fs\n%s" % (
            pings, time.monotonic() - t0, good.diag()))
        check(closed_at is not None, "the mute client is still open after 3 s\n" + mute.diag())
        eq([f.code for f in mute.got[1:]], [PING], "frames to the mute client")
        check(0.9 < closed_at < 1.6, "the mute client closed after %.2fs" % closed_at)
        note("keepalive: %d Pings answered; the mute client closed after %.2fs" % (pings,
                                                                                  closed_at))
        eq(good.ask(req(GET, b"\x61", "hello"), CONTENT).payload, b"Hello, world", "/hello")
        good.close()


@test("T14 slowloris after the CSM (-o tcp_keepalive=0.5 -o tcp_ping_timeout=0.5): a GET fed "
      "a byte every 0.1 s and never finished -> a Ping, then the close: bytes are no sign of "
      "life, whole messages are")
def t_t14_trickle():
    with Tcp({"tcp_keepalive": 0.5, "tcp_ping_timeout": 0.5}) as t, t.conn() as c:
        t0, i = time.monotonic(), 0
        # a frame whose header promises 269 bytes of body: it never completes
        data = bytes([14 << 4 | 1, 0, 0, GET, 0x71]) + b"\xb5hello"
        while not c.eof and time.monotonic() - t0 < 4.0:
            try:
                c.send(data[i:i + 1] if i < len(data) else b"\x00")
            except (BrokenPipeError, ConnectionResetError):
                c.eof = "reset"
                break
            i += 1
            f = c.recv(0.1)
            check(f is None or f.code == PING, "unexpected %r" % f)
        check(c.eof, "still open after 4 s of trickling\n" + c.diag())
        took = time.monotonic() - t0
        check(0.8 < took < 2.5, "closed after %.2fs" % took)
        note("trickling peer closed after %.2fs" % took)
        serving(t)

def refused(t, src=None):
    """A connection accepted and closed at once: no CSM, no bytes."""
    c = Conn(t.port, csm=None, wait_csm=False, src=src)
    try:
        eq(c.closed(2.0), [], "frames on a refused connection")
    finally:
        c.close()


def accepted_again(t, src=None, timeout=3.0):
    """A new connection is served again, once the server has seen one close."""
    deadline = time.monotonic() + timeout
    while True:
        c = Conn(t.port, csm=None, wait_csm=False, src=src)
        f = c.recv(1.0)
        if f is not None and f.code == CSM:
            c.send(CSM_OK)
            c.alive()
            return c
        c.close()
        check(time.monotonic() < deadline, "no connection accepted within %.1fs" % timeout)
        time.sleep(0.05)


@test("T14 -o tcp_connections=3: the 4th connection is accepted and closed at once without a "
      "CSM (counted as overload); after one closes a new one is served; the others still are")
def t_connections():
    with Tcp({"tcp_connections": 3}) as t:
        conns = [t.conn() for _ in range(3)]
        refused(t)
        refused(t, "127.0.0.2")
        conns[0].close()
        conns[0] = accepted_again(t)
        refused(t)
        for i, c in enumerate(conns):
            eq(c.ask(req(GET, bytes([i]), "hello"), CONTENT).payload, b"Hello, world",
               "connection %d" % i)
            c.close()
        check(t.stats()["overload"] >= 3, "overload not counted: %r" % t.stats())


@test("T14 -o tcp_per_address=2: a third connection from 127.0.0.1 is closed without a CSM "
      "while 127.0.0.2 is served; after one closes, 127.0.0.1 is served again")
def t_per_address():
    with Tcp({"tcp_per_address": 2}) as t:
        a = [t.conn(), t.conn()]
        refused(t)
        b = [Conn(t.port, src="127.0.0.2"), Conn(t.port, src="127.0.0.2")]
        refused(t, "127.0.0.2")
        a[1].close()
        a[1] = accepted_again(t)
        for c in a + b:
            c.alive()
            c.close()


def hog(tokens):
    """-o tcp_write_bytes=4096; a connection with a small receive window observes /tcp/flood
    (900 bytes every 1 ms) under each token and never reads; another client checks the server
    answers meanwhile, until the observers are gone (the hog was closed)."""
    with Tcp({"tcp_write_bytes": 4096}, lua=True) as t, t.conn() as ctl:
        rss = t.srv.rss_kb()
        hog = Conn(t.port, rcvbuf=4096)
        for tok in tokens:
            hog.send(req(GET, tok, "tcp/flood", options=[(OBSERVE, 0)]))
        ctl.ask(req(POST, b"\x01", "tcp/flood", ["ms=1"]), CHANGED)
        t0, obs = time.monotonic(), None
        try:
            while time.monotonic() - t0 < 15:
                eq(ctl.ask(req(GET, b"\x02", "hello"), CONTENT, timeout=1.0).payload,
                   b"Hello, world", "the other client")
                obs = t.stats()["observers"]
                if obs == 0:
                    break
                time.sleep(0.1)
            eq(obs, 0, "observers (the non-reading observer was not closed within 15 s)")
            note("T15: closed after %.1fs" % (time.monotonic() - t0))
            grew = t.srv.rss_kb() - rss
            check(grew < 16384, "RSS grew by %d KiB" % grew)
            hog.sock.settimeout(5.0)
            drained = 0
            while True:             # what the kernel held, then the end of the stream
                try:
                    d = hog.sock.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not d:
                    break
                drained += len(d)
            note("T15: %d bytes were in flight when it was closed" % drained)
        finally:
            if t.srv.alive():
                ctl.ask(req(DELETE, b"\x03", "tcp/flood"), DELETED)
            hog.close()


@test("T15 -o tcp_write_bytes=4096: an observer that never reads (small receive window) of a "
      "fast-notifying resource is closed; another client is answered all along; RSS bounded")
def t_t15():
    hog([b"\xf0"])


@test("T15 the same with 8 observations (8 tokens) on the non-reading connection: closed, "
      "the server survives the close in the middle of a notification fan-out")
def t_t15_tokens():
    hog([bytes([0xf0 + i]) for i in range(8)])


@test("-o tcp_inflight=2: with 2 deferred answers owed the server reads no further on that "
      "connection (a request and a Ping pipelined behind them wait); once one is answered, "
      "the rest is handled")
def t_inflight():
    with Tcp({"tcp_inflight": 2}) as t, t.conn() as c:
        t0 = time.monotonic()
        c.send(req(GET, b"\xd1", "t/defer", ["ms=300"]) + req(GET, b"\xd2", "t/defer", ["ms=700"]) +
               req(GET, b"\xd3", "hello") + frame(PING, b"\x9a"))
        got = []
        for _ in range(4):
            got.append((c.expect(None, timeout=3.0), time.monotonic() - t0))
        eq([f.token for f, _ in got], [b"\xd1", b"\xd3", b"\x9a", b"\xd2"], "order: %r" % got)
        expect_late(got[0][0], b"\xd1")
        check(got[1][1] > 0.25, "/hello answered after %.2fs, while 2 answers were owed" %
              got[1][1])
        note("tcp_inflight: /hello after %.2fs, the Pong after %.2fs, the second /t/defer after "
             "%.2fs" % (got[1][1], got[2][1], got[3][1]))


@test("half-close: requests (one deferred) then shutdown(SHUT_WR) -> both answers arrive, "
      "then the server closes")
def t_half_close():
    with Tcp() as t, t.conn() as c:
        c.send(req(GET, b"\xd1", "t/defer", ["ms=200"]) + req(GET, b"\x01", "hello"))
        c.sock.shutdown(socket.SHUT_WR)
        frames = c.closed(3.0)
        eq(sorted(f.token for f in frames), [b"\x01", b"\xd1"], "answers: %r" % frames)
        eq(c.eof, "fin", "end of the stream")


@test("SIGTERM: every connection gets 7.04 Release, then the close; exit status 0")
def t_sigterm():
    with Tcp() as t:
        c1, c2 = t.conn(), t.conn()
        c1.alive()
        rc = []
        th = threading.Thread(target=lambda: rc.append(t.srv.stop()), daemon=True)
        th.start()              # one SIGTERM by PID and the wait, while we read
        for c in (c1, c2):
            frames = c.closed(5.0)
            eq([f.code_str for f in frames], ["7.04"], "frames before the close")
        th.join(6)
        eq(rc, [0], "exit status")


@test("-l coap+tcp://[::1]:0: an IPv6 listener (its ready line names [::1]) serves raw frames "
      "and coap-client-notls")
def t_ipv6():
    srv = Server(args=["-l", "coap+tcp://[::1]:0"])
    m = srv.log.wait_for(r"ready coap\+tcp://\[::1\]:(\d+)", 5.0)
    check(m, "no 'ready coap+tcp://[::1]:PORT' line:\n" + srv.log.text())
    port = int(m.group(1))
    with Conn(port, host="::1") as c:
        eq(c.ask(req(GET, b"\x06", "hello"), CONTENT).payload, b"Hello, world", "/hello")
    rc, out, err = coap_client("coap+tcp://[::1]:%d/hello" % port)
    eq(out.strip(), "Hello, world", "coap-client (stderr %r)" % err)
    srv.stop()


# ---- requests over TCP ---------------------------------------------------------------------

@test("GET/PUT/POST/DELETE over TCP: /t/store, /t/counter, 4.04, 4.05; tokens of 0-8 bytes "
      "echoed; a 0-byte token answer")
def t_methods():
    with Tcp() as t, t.conn() as c:
        for tok in (b"", b"\x01", bytes(range(8))):
            eq(c.ask(req(GET, tok, "hello"), CONTENT, tok).payload, b"Hello, world", "/hello")
        before = counter(c)
        c.ask(req(PUT, b"\x02", "t/store", payload=b"tcp"), CHANGED)
        eq(c.ask(req(GET, b"\x03", "t/store"), CONTENT).payload, b"tcp", "/t/store")
        c.ask(req(DELETE, b"\x04", "t/store"), DELETED)
        eq(c.ask(req(GET, b"\x05", "t/store"), CONTENT).payload, b"", "/t/store")
        c.ask(req(POST, b"\x06", "t/counter"), CHANGED)
        eq(counter(c), before + 3, "/t/counter")
        c.ask(req(GET, b"\x07", "nope"), NOT_FOUND)
        c.ask(req(DELETE, b"\x08", "hello"), NOT_ALLOWED)
        f = c.ask(req(POST, b"\x09", "echo", options=[(CONTENT_FORMAT, 50)], payload=b"{}"),
                  CHANGED)
        eq((f.opt_uint(CONTENT_FORMAT), f.payload), (50, b"{}"), "echo")


@test("H24 H25 H26 methods 0.08, 0.31 and FETCH/PATCH/iPATCH on /hello over TCP -> 4.05")
def t_h24_h26():
    with Tcp() as t, t.conn() as c:
        for i, m in enumerate((code(0, 8), code(0, 31), FETCH, code(0, 6), code(0, 7))):
            c.ask(req(m, bytes([i]), "hello"), NOT_ALLOWED)


@test("Observe over TCP: GET Observe=0 /tcp/clock -> 2.05 with Observe, notifications under "
      "the token with growing sequence numbers (no types, nothing to acknowledge); "
      "Observe=1 ends it; closing the connection ends another; the server goes on")
def t_observe():
    with Tcp(lua=True) as t:
        with t.conn() as c:
            f = c.ask(req(GET, b"\x0b", "tcp/clock", options=[(OBSERVE, 0)]), CONTENT)
            check(f.opt(OBSERVE) is not None, "no Observe in the answer: %r" % f)
            seqs, vals = [f.opt_uint(OBSERVE)], [f.payload]
            for _ in range(3):
                n = c.expect(CONTENT, b"\x0b", timeout=1.0)
                seqs.append(n.opt_uint(OBSERVE))
                vals.append(n.payload)
            check(seqs == sorted(set(seqs)), "sequence numbers %r" % seqs)
            check(len(set(vals)) == 4, "values %r" % vals)
            eq(t.stats()["observers"], 1, "observers")
            f = c.ask(req(GET, b"\x0b", "tcp/clock", options=[(OBSERVE, 1)]), CONTENT)
            eq(f.opt(OBSERVE), None, "Observe in the deregistration's answer")
            c.silent(0.35)
            eq(t.stats()["observers"], 0, "observers after Observe=1")
            c.ask(req(GET, b"\x0c", "tcp/clock", options=[(OBSERVE, 0)]), CONTENT)
            c.expect(CONTENT, b"\x0c", timeout=1.0)
        deadline = time.monotonic() + 3
        while t.stats()["observers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        eq(t.stats()["observers"], 0, "observers after the close")
        s = t.srv.log.wait_for(r"\b(warn|error)\b", 0.3)
        check(s is None, "log after the close: %s" % (s and s.string))
        serving(t)


@test("/.well-known/core over TCP: one CF 40 answer with every resource; R13 ?rt=tcp-clock -> "
      "only /tcp/clock; R15 ?href=/t* -> only the /t links")
def t_wkc():
    with Tcp(lua=True) as t, t.conn() as c:
        f = c.ask(req(GET, b"\x01", ".well-known/core"), CONTENT)
        eq(f.opt_uint(CONTENT_FORMAT), 40, "Content-Format")
        every = [href for href, _ in link_parse(f.payload.decode())]
        for href in ("/hello", "/t/store", "/tcp/clock", "/tcp/big"):
            check(href in every, "%s not in %r" % (href, every))
        f = c.ask(req(GET, b"\x02", ".well-known/core", ["rt=tcp-clock"]), CONTENT)
        eq([href for href, _ in link_parse(f.payload.decode())], ["/tcp/clock"], "?rt=tcp-clock")
        f = c.ask(req(GET, b"\x03", ".well-known/core", ["href=/t*"]), CONTENT)
        got = [href for href, _ in link_parse(f.payload.decode())]
        eq(sorted(got), sorted(x for x in every if x.startswith("/t")), "?href=/t*")


# ---- MALFORMED O/R rows over TCP: the same codes as over UDP --------------------------------

def codes(t, cases, mms=None):
    """Each (name, request frame, expected code or tuple of codes) on one connection."""
    bad = []
    with t.conn(csm=csm(mms=mms) if mms else CSM_OK) as c:
        for i, (name, f, want) in enumerate(cases):
            fs = frame_size(f)
            tok = f[fs[1]:fs[1] + (f[0] & 15)]
            try:
                m = c.ask(f, None, tok)
                want = want if isinstance(want, tuple) else (want,)
                check(m.code in want, "expected %s, got %r" % (
                    "/".join(code_str(w) for w in want), m))
            except AssertionError as e:
                bad.append("%s: %s" % (name, e))
                if c.eof:
                    break
        if not c.eof:
            c.alive()
    check(not bad, "\n".join(bad))


@test("O11 O14 O15 O16 O17 O19 O26 O32 O35 R1 over TCP: unknown critical 99 -> 4.02 (with a "
      "diagnostic), elective 100 ignored, OSCORE -> 4.02, two Accept / Uri-Host -> 4.02, two "
      "Observe ignored, CF of length 3 ignored, 1000 empty options, Echo, GET payload")
def t_options():
    hello = [(URI_PATH, "hello")]
    cases = [
        ("O11", frame(GET, b"\x11", body=HELLO + h("d0 4b")), BAD_OPTION),
        ("O14", frame(GET, b"\x14", body=HELLO + h("d0 4c")), CONTENT),
        ("O15", frame(GET, b"\x15", hello + [(OSCORE, b"\x09")]), BAD_OPTION),
        ("O16", frame(GET, b"\x16", body=HELLO + h("61 00 01 00")), BAD_OPTION),
        ("O17", frame(GET, b"\x17", hello + [(URI_HOST, "a"), (URI_HOST, "b")]), BAD_OPTION),
        ("O19", frame(GET, b"\x19", hello + [(OBSERVE, 0), (OBSERVE, 0)]), CONTENT),
        ("O26", frame(GET, b"\x26", body=HELLO + h("13 00 00 00")), CONTENT),
        ("O32", frame(GET, b"\x32", body=HELLO + h("d0 4c") + b"\x00" * 999),
         (CONTENT, BAD_REQUEST, TOO_LARGE)),
        ("O35", frame(GET, b"\x35", hello + [(ECHO, bytes(range(8)))]), CONTENT),
        ("R1", frame(GET, b"\x01", hello, payload=b"AB"), CONTENT),
    ]
    with Tcp() as t:
        codes(t, cases)
        with t.conn() as c:
            m = c.ask(frame(GET, b"\x11", body=HELLO + h("d0 4b")), BAD_OPTION)
            check(m.payload, "4.02 without a diagnostic payload: %r" % m)
            note("O11 diagnostic: %r" % m.payload)


@test("O13 O18 O20 O27 O28 R10 over TCP: a PUT with critical 99, Uri-Host of length 0, "
      "Location-Path + 136 -> 4.02/4.15 and no state change; two CF -> the first; Max-Age "
      "ignored")
def t_state_rows():
    with Tcp() as t, t.conn() as c:
        before = counter(c)
        for tok, opts in ((b"\x13", [(99, b"")]), (b"\x20", [(URI_HOST, b"")]),
                          (b"\x28", [(LOCATION_PATH, "x"), (136, "y")])):
            c.ask(req(PUT, tok, "t/store", options=opts, payload=b"evil"), BAD_OPTION)
            c.ask(req(PUT, tok, "t/counter", options=opts, payload=b"777"), BAD_OPTION)
        # R10: 42 is not in /t/store's ct list
        c.ask(req(PUT, b"\x10", "t/store", options=[(CONTENT_FORMAT, 42)], payload=b"evil"),
              UNSUPPORTED_CF)
        eq(counter(c), before, "/t/counter (state changed)")
        eq(c.ask(req(GET, b"\x01", "t/store"), CONTENT).payload, b"", "/t/store")
        c.ask(req(PUT, b"\x18", "t/store", options=[(CONTENT_FORMAT, 0), (CONTENT_FORMAT, 42)],
                  payload=b"first"), CHANGED)
        eq(c.ask(req(GET, b"\x02", "t/store"), CONTENT).payload, b"first", "O18")
        c.ask(req(PUT, b"\x27", "t/store", options=[(MAX_AGE, 60)], payload=b"ma"), CHANGED)
        eq(c.ask(req(GET, b"\x03", "t/store"), CONTENT).payload, b"ma", "O27")
        eq(counter(c), before + 2, "/t/counter")


@test("O20-O25 option value lengths out of range over TCP -> 4.02")
def t_o20_o25():
    cases = [
        ("O20 Uri-Host length 0", frame(GET, b"\x20", body=h("30 85") + b"hello"), BAD_OPTION),
        ("O21 Accept length 3", frame(GET, b"\x21", body=HELLO + h("63 00 00 00")), BAD_OPTION),
        ("O22 If-None-Match length 1", frame(GET, b"\x22", body=h("51 00 65") + b"hello"),
         BAD_OPTION),
        ("O23 Uri-Port length 3", frame(GET, b"\x23", body=h("73 00 16 33 45") + b"hello"),
         BAD_OPTION),
        ("O24 Uri-Path 256 B", frame(GET, b"\x24", body=h("bd f3") + b"a" * 256), BAD_OPTION),
        ("O25 Uri-Query 256 B", frame(GET, b"\x25", body=HELLO + h("4d f3") + b"q" * 256),
         BAD_OPTION),
    ]
    with Tcp() as t:
        codes(t, cases)


@test("O29-O31 O34 over TCP: Proxy-Uri / Proxy-Scheme on a non-proxy -> 5.05 (a PUT changes "
      "nothing); No-Response=2 suppresses a 2.05 but not a 4.04")
def t_o29_o34():
    cases = [
        ("O29", frame(GET, b"\x29", [(PROXY_URI, "coap+tcp://127.0.0.1/hello")]),
         PROXY_NOT_SUPPORTED),
        ("O30", frame(GET, b"\x30", [(URI_PATH, "hello"), (PROXY_URI, "coap://x/hello")]),
         PROXY_NOT_SUPPORTED),
        ("O31", frame(GET, b"\x31", [(URI_PATH, "hello"), (PROXY_SCHEME, "coap")]),
         PROXY_NOT_SUPPORTED),
    ]
    with Tcp() as t:
        codes(t, cases)
        with t.conn() as c:
            before = counter(c)
            c.ask(req(PUT, b"\x29", "t/counter", options=[(PROXY_URI, "coap://x/y")],
                      payload=b"5"), PROXY_NOT_SUPPORTED)
            eq(counter(c), before, "/t/counter")
            c.send(req(GET, b"\x34", "hello", options=[(NO_RESPONSE, 2)]))
            c.silent(0.4)
            c.ask(req(GET, b"\x35", "nope", options=[(NO_RESPONSE, 2)]), NOT_FOUND)


@test("R2-R7 R11 over TCP: '..' '.', 'a/b' in one segment, NUL, bad UTF-8, 33 segments -> "
      "4.04 (or 4.00); Accept 42 -> 4.06, Accept 50 -> CF 50")
def t_r_rows():
    nf = (NOT_FOUND, BAD_REQUEST)
    cases = [("R2", req(GET, b"\x02", ["t", "..", "hello"]), NOT_FOUND),
             ("R3", req(GET, b"\x03", [".", "hello"]), NOT_FOUND),
             ("R4", req(GET, b"\x04", ["t/getonly"]), NOT_FOUND),
             ("R4 registered", req(GET, b"\x41", ["t", "a/b"]), CONTENT),
             ("R5", req(GET, b"\x05", [b"hel\x00lo"]), NOT_FOUND),
             ("R6", req(GET, b"\x06", [b"\xff\xfe"]), nf),
             ("R7", req(GET, b"\x07", ["t"] * 33), nf),
             ("R11 Accept 42", req(GET, b"\x11", "t/store", options=[(ACCEPT, 42)]),
              NOT_ACCEPTABLE),
             ("R11 Accept 50", req(GET, b"\x12", "t/store", options=[(ACCEPT, 50)]), CONTENT)]
    with Tcp() as t:
        codes(t, cases)


@test("R13 R14 R16 over TCP: ?rt (no '='), ?href=*, a 255-byte '%zz' query -> 2.05/4.00, "
      "still serving")
def t_r13_r16():
    cases = [("R13", req(GET, b"\x13", ".well-known/core", ["rt"]), CONTENT),
             ("R14", req(GET, b"\x14", ".well-known/core", ["href=*"]), CONTENT),
             ("R16", req(GET, b"\x16", ".well-known/core", [b"%zz" * 85]),
              (CONTENT, BAD_REQUEST))]
    with Tcp() as t:
        codes(t, cases)


@test("O33 10 000 empty Uri-Path options (-o tcp_max_message=16384) -> 4.00/4.04 (segment cap), "
      "answered at once, still serving")
def t_o33():
    with Tcp({"tcp_max_message": 16384}) as t, t.conn() as c:
        f = frame(GET, b"\x33", body=b"\xb0" + b"\x00" * 9999)
        t0 = time.monotonic()
        m = c.ask(f)
        check(m.code in (BAD_REQUEST, NOT_FOUND), "code %r" % m)
        check(time.monotonic() - t0 < 1.0, "took %.2fs" % (time.monotonic() - t0))
        note("O33: %s %r" % (m.code_str, m.payload[:60]))
        c.alive()


# ---- coap-client-notls (libcoap 4.3.1) as the peer ----------------------------------------

@test("coap-client-notls coap+tcp://: GET /hello, PUT/GET/DELETE /t/store, 4.04 on stderr, "
      "/.well-known/core?rt=hello")
def t_client_basic():
    with Tcp() as t:
        rc, out, err = coap_client(t.uri + "/hello")
        eq((rc, out.strip()), (0, "Hello, world"), "GET /hello (stderr %r)" % err)
        rc, out, err = coap_client("-m", "put", "-e", "libcoap", t.uri + "/t/store")
        eq(rc, 0, "PUT rc (stderr %r)" % err)
        eq(coap_client(t.uri + "/t/store")[1].strip(), "libcoap", "GET /t/store")
        coap_client("-m", "delete", t.uri + "/t/store")
        eq(coap_client(t.uri + "/t/store")[1].strip(), "", "GET /t/store after DELETE")
        rc, out, err = coap_client(t.uri + "/nope")
        eq(error_code_of(err), "4.04", "GET /nope (stdout %r stderr %r)" % (out, err))
        rc, out, err = coap_client(t.uri + "/.well-known/core?rt=hello")
        eq([href for href, _ in link_parse(out.strip())], ["/hello"], "?rt=hello")


@test("coap-client-notls coap+tcp://: 256 KiB GET and PUT/POST -f with -b 1024 and without "
      "(BERT) -> byte-exact both ways")
def t_client_big():
    d = tempfile.mkdtemp(prefix="moonlet-tcp-")
    try:
        src, dst = os.path.join(d, "big.bin"), os.path.join(d, "out.bin")
        with open(src, "wb") as f:
            f.write(BIG)
        with Tcp(lua=True) as t:
            for blk in (["-b", "1024"], []):
                if os.path.exists(dst):
                    os.unlink(dst)
                rc, out, err = coap_client(*(blk + ["-o", dst, t.uri + "/tcp/big"]))
                data = open(dst, "rb").read() if os.path.exists(dst) else b""
                check(data == BIG, "GET /tcp/big %s: %d bytes, rc %r, stderr %r" % (
                    blk, len(data), rc, err[-300:]))
                for method in ("put", "post"):
                    rc, out, err = coap_client(*(blk + ["-m", method, "-f", src,
                                                        t.uri + "/tcp/up"]))
                    eq(out.strip(), "len=262144 same=yes", "%s %s (stderr %r)" % (
                        method, blk, err[-300:]))
    finally:
        shutil.rmtree(d, True)


@test("coap-client-notls coap+tcp://: Observe /tcp/clock with -s 2 -> a run of increasing "
      "values; its observation ends with its connection")
def t_client_observe():
    with Tcp(lua=True) as t:
        rc, out, err = coap_client("-s", "2", t.uri + "/tcp/clock", timeout=10)
        vals = [int(v) for v in re.findall(r"n=(\d+)", out)]
        check(len(vals) >= 10, "only %d notifications: %r (stderr %r)" % (len(vals), out, err))
        eq(vals, sorted(set(vals)), "values")
        deadline = time.monotonic() + 3
        while t.stats()["observers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        eq(t.stats()["observers"], 0, "observers after coap-client left")


# ---- BERT uploads, listener removal, hot reload ------------------------------------------

@test("BERT upload (RFC 8323 §6): PUT /tcp/up in Block1 SZX 7 blocks of 3 KiB -> 2.31 echoing "
      "NUM/SZX 7 each, 2.04 at the last (shorter) block, the body whole; a non-final block "
      "that is not a multiple of 1024 bytes -> 4.00")
def t_bert_upload():
    with Tcp(lua=True) as t, t.conn() as c:
        step, num, off = 3072, 0, 0
        while off < len(BIG):
            chunk = BIG[off:off + step]
            more = off + len(chunk) < len(BIG)
            f = c.ask(req(PUT, b"\xbe", "tcp/up", options=[(BLOCK1, num << 4 | more << 3 | 7)],
                          payload=chunk), None, b"\xbe")
            if more:
                eq(f.code_str, "2.31", "block at %d" % off)
                eq(block_val(f.opt(BLOCK1)), (num, 1, 7), "Block1 echoed")
            else:
                eq((f.code_str, f.payload), ("2.04", b"len=262144 same=yes"), "last block")
            num += len(chunk) // 1024
            off += len(chunk)
        f = c.ask(req(PUT, b"\xbf", "tcp/up", options=[(BLOCK1, 0 << 4 | 1 << 3 | 7)],
                      payload=BIG[:1500]), BAD_REQUEST)
        note("non-multiple BERT block: %r" % f.payload)


@test("SIGHUP removing a coap+tcp:// listener: its connections get 7.04 Release with the "
      "remaining coap+tcp:// listener as Alternative-Address, then the close; the other "
      "listener goes on serving")
def t_sighup_release():
    d = tempfile.mkdtemp(prefix="moonlet-tcp-")
    try:
        a, b = free_tcp_port(), free_tcp_port()
        conf = os.path.join(d, "m.conf")

        def write(ports):
            with open(conf, "w") as f:
                f.write("listen = [ \"coap://127.0.0.1:0\", %s ];\n" % ", ".join(
                    '"coap+tcp://127.0.0.1:%d"' % p for p in ports))
        write((a, b))
        srv = Server(addr=None, args=["-c", conf])
        try:
            check(srv.log.wait_for(r"ready coap\+tcp://127\.0\.0\.1:%d" % b, 5.0), "second ready")
            ca, cb = Conn(a), Conn(b)
            ca.alive()
            write((b,))
            os.kill(srv.pid, signal.SIGHUP)
            frames = ca.closed(5.0)
            eq([f.code_str for f in frames], ["7.04"], "frames before the close")
            eq(frames[0].opts(2), [("127.0.0.1:%d" % b).encode()], "Alternative-Address")
            eq(frames[0].opts(4), [], "no Hold-Off (the server goes on)")
            cb.alive()
            with Conn(b) as c:
                c.alive()
            cb.close()
        finally:
            srv.stop()
    finally:
        shutil.rmtree(d, True)


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@test("hot reload over TCP: a script changed under an open connection that observes it -> "
      "notifications go on from the new version on the same connection, requests too")
def t_reload():
    d = tempfile.mkdtemp(prefix="moonlet-tcp-")
    try:
        script = os.path.join(d, "r.lua")
        body = ('local moonlet = require "moonlet"\nlocal n = 0\n'
                'moonlet.resource{ path = "/r", obs = true, get = function() '
                'return moonlet.CONTENT, "%s" .. n end }\n'
                'moonlet.every(0.05, function() n = n + 1; moonlet.notify("/r") end)\n')
        with open(script, "w") as f:
            f.write(body % "v1:")
        with Tcp(plugins=[script]) as t, t.conn() as c:
            f = c.ask(req(GET, b"\x0b", "r", options=[(OBSERVE, 0)]), CONTENT)
            check(f.payload.startswith(b"v1:"), "registration %r" % f.payload)
            with open(script + ".new", "w") as f:
                f.write(body % "v2:")
            os.replace(script + ".new", script)
            deadline, seen = time.monotonic() + 5, None
            while time.monotonic() < deadline:
                n = c.recv(1.0)
                if n is not None and n.token == b"\x0b" and n.payload.startswith(b"v2:"):
                    seen = n
                    break
            check(seen is not None, "no notification from the new version\n" + c.diag())
            check(seen.opt(OBSERVE) is not None, "notification without Observe")
            eq(c.ask(req(GET, b"\x0c", "r"), CONTENT).payload[:3], b"v2:", "a new request")
    finally:
        shutil.rmtree(d, True)


if __name__ == "__main__":
    sys.exit(main())
