#!/usr/bin/env python3
"""test_block.py -- block-wise transfer (RFC 7959, Request-Tag RFC 9175 §3): libcoap's
coap-client-notls at every block size, a raw client for what it never sends (MALFORMED.md
rows B1-B24), the state limits (max_body, block_per_peer, block1_bytes, block_idle), and a
256 KiB download over a lossy link (tests/tools/lossy_relay.py, 10 % loss each way) by a
CON downloader written here with a short ACK_TIMEOUT. Run like test_core.py:

    python3 tests/integration/test_block.py --moonlet build/moonlet \
        --plugins build/plugins/hello.so build/tests/t_basic.so

The server side is tests/lua/block_res.lua (its header lists the resources), plus
t_basic.so (/t/big) and t_stream.so (a streamed upload), found beside t_basic.so.
Policy where the RFCs leave a choice is block.c's (see the README's "Block-wise transfer").
"""

import hashlib
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CHANGED, CON, CONTENT, CONTENT_FORMAT, ETAG, GET, MAX_AGE, POST, PUT, Msg, ProcLog,
    Server, cfg, check, coap_client, code, encode, eq, expect_msg, hx, main, note, request,
    test)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "lua", "block_res.lua")
RELAY = os.path.join(ROOT, "tests", "tools", "lossy_relay.py")

BLOCK2, BLOCK1, SIZE2, SIZE1, REQUEST_TAG = 23, 27, 28, 60, 292
CONTINUE = code(2, 31)
BAD_REQUEST, BAD_OPTION, NOT_FOUND, NOT_ALLOWED = code(4, 0), code(4, 2), code(4, 4), code(4, 5)
INCOMPLETE, TOO_LARGE, UNAVAILABLE = code(4, 8), code(4, 13), code(5, 3)
MAX_BODY = 1048576                  # the default max_body
BIG_SEED, BIG = 2463534242, 256 * 1024
MUT_SIZE = 5000


# ---- the bytes block_res.lua serves ---------------------------------------------------

def prng(seed, n):
    """xorshift32 from seed, each state as 4 little-endian bytes (block_res.lua's)."""
    x = seed & 0xFFFFFFFF or 1
    out = []
    for _ in range((n + 3) // 4):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(x)
    return struct.pack("<%dI" % len(out), *out)[:n]


_big = []


def big():
    if not _big:
        _big.append(prng(BIG_SEED, BIG))
    return _big[0]


def mut(version):
    return prng((version * 2654435761 + 12345) & 0xFFFFFFFF, MUT_SIZE)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def t_basic_dir():
    for p in cfg.plugins:
        if os.path.basename(p) == "t_basic.so":
            return os.path.dirname(p)
    raise AssertionError("t_basic.so not among --plugins: %r" % cfg.plugins)


def server(opts=None, extra=(), **kw):
    return Server(opts=opts, plugins=[SCRIPT] + list(extra), **kw)


# ---- Block options ---------------------------------------------------------------------

def blk(num, more, szx):
    """A Block1/Block2 value (RFC 7959 §2.2): NUM << 4 | M << 3 | SZX."""
    return num << 4 | (8 if more else 0) | szx


def unblk(m, opt):
    """(NUM, M, SZX) of a message's Block option, or None."""
    v = m.opt_uint(opt)
    return None if v is None else (v >> 4, (v >> 3) & 1, v & 7)


def diag(m):
    return "%s %r" % (m.code_str, m.payload[:80])


class Peer:
    """One raw client (a socket: one peer for the server) with its own MIDs and tokens."""

    def __init__(self, s):
        self.c = s.client()
        self.mid = random.randrange(0x10000)
        self.tok = random.randrange(1 << 32)
        self.last = None

    def close(self):
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def next(self):
        self.mid = (self.mid + 1) & 0xFFFF
        self.tok = (self.tok + 1) & 0xFFFFFFFF
        return self.mid, self.tok.to_bytes(4, "big")

    def send_req(self, method, path, query=(), options=(), payload=b"", mid=None, tok=None):
        if mid is None:
            mid, tok = self.next()
        d = request(CON, method, mid, tok, path, query, options, payload)
        self.last = (d, mid, tok)
        self.c.send(d)
        return d, mid, tok

    def req(self, method, path, query=(), options=(), payload=b"", mcode=None, timeout=5.0,
            mid=None, tok=None):
        """A CON request; returns the answer, piggybacked or separate (the separate CON is
        acknowledged). mcode, when given, must match."""
        d, mid, tok = self.send_req(method, path, query, options, payload, mid, tok)
        m = self.c.recv(timeout)
        if m is None:
            raise AssertionError("no answer within %.1fs to %s" % (timeout, hx(d)))
        if m.type == ACK and m.code == 0 and m.mid == mid:     # empty ACK: separate answer
            m = self.c.recv(timeout)
            if m is None:
                raise AssertionError("no separate answer within %.1fs to %s" % (timeout, hx(d)))
            expect_msg(m, d, CON, mcode, None, tok)
            self.c.send(encode(ACK, 0, m.mid))
            m.separate = True
            return m
        expect_msg(m, d, ACK, mcode, mid, tok)
        m.separate = False
        return m

    def get(self, path, num=None, szx=6, more=0, query=(), options=(), mcode=CONTENT,
            method=GET, **kw):
        o = list(options)
        if num is not None:
            o.append((BLOCK2, blk(num, more, szx)))
        return self.req(method, path, query, o, mcode=mcode, **kw)

    def put_block(self, path, num, more, szx, piece, tag=None, options=(), mcode=None,
                  method=PUT, query=()):
        o = list(options) + [(BLOCK1, blk(num, more, szx))]
        if tag is not None:
            o.append((REQUEST_TAG, tag))
        return self.req(method, path, query, o, piece, mcode)


def cont(m, num, szx=6, what="2.31"):
    """m is 2.31 Continue echoing Block1 NUM with M=1 (RFC 7959 §2.3)."""
    check(m.code == CONTINUE, "%s: expected 2.31, got %s" % (what, diag(m)))
    eq(unblk(m, BLOCK1), (num, 1, szx), "%s: Block1 of the 2.31" % what)
    return m


def upload(p, path, data, szx=6, tag=None, method=PUT, options=(), mcode=CHANGED, query=()):
    """A whole Block1 upload in order, heeding a smaller SZX the server asks for (§2.3).
    Returns the final answer (which must echo Block1 with M=0)."""
    off, num, size = 0, 0, 16 << szx
    for _ in range(70000):
        piece = data[off:off + size]
        more = off + size < len(data)
        m = p.put_block(path, num, more, szx, piece, tag, options, None, method, query)
        if not more:
            check(m.code == mcode, "final block %d: expected %s, got %s" % (
                num, "%d.%02d" % (mcode >> 5, mcode & 31), diag(m)))
            b1 = unblk(m, BLOCK1)
            check(b1 is not None and b1[0] == num and b1[1] == 0,
                  "final answer echoes Block1 NUM %d M=0: %r" % (num, b1))
            return m
        check(m.code == CONTINUE, "block %d: expected 2.31, got %s" % (num, diag(m)))
        b1 = unblk(m, BLOCK1)
        check(b1 is not None and b1[0] == num and b1[1] == 1 and b1[2] <= szx,
              "block %d: 2.31 echoes Block1 %r" % (num, b1))
        off += size
        if b1[2] < szx:                 # the server asks for smaller blocks
            szx, size = b1[2], 16 << b1[2]
        num = off // size
    raise AssertionError("upload did not end")


def download(p, path, szx=6, first_block2=True, query=(), method=GET, options=(),
             expect_szx=None, max_blocks=70000):
    """A whole Block2 download; asserts the NUM sequence, one SZX, one ETag, M=0 only last.
    Returns (bytes, [answers])."""
    m = p.get(path, 0 if first_block2 else None, szx, query=query, method=method,
              options=options)
    msgs, parts = [m], [m.payload]
    b = unblk(m, BLOCK2)
    if b is None:
        return m.payload, msgs
    num, more, rszx = b
    eq(num, 0, "first block NUM")
    if expect_szx is not None:
        eq(rszx, expect_szx, "SZX of block 0")
    etag = m.opt(ETAG)
    check(etag is not None, "block 0 carries an ETag: %r" % m)
    for _ in range(max_blocks):
        if not more:
            return b"".join(parts), msgs
        check(len(m.payload) == 16 << rszx, "block %d (M=1) is %d bytes, SZX %d" % (
            num, len(m.payload), rszx))
        m = p.get(path, num + 1, rszx, query=query, method=method, options=options,
                  mcode=msgs[0].code)
        n2, more, s2 = unblk(m, BLOCK2)
        eq((n2, s2), (num + 1, rszx), "Block2 NUM/SZX of the answer")
        eq(m.opt(ETAG), etag, "ETag of block %d" % n2)
        num = n2
        msgs.append(m)
        parts.append(m.payload)
    raise AssertionError("more than %d blocks" % max_blocks)


def runs(s):
    with Peer(s) as p:
        m = p.get("b/runs")
        return dict(kv.split("=") for kv in m.payload.decode().split())


def nruns(s, name):
    return int(runs(s)[name])


def bodies(s):
    with Peer(s) as p:
        return int(p.get("b/up", query=["n"]).payload)


def body(s, i):
    with Peer(s) as p:
        return download(p, "b/up", query=["i=%d" % i])[0]


def url(s, path):
    return "coap://[::1]:%d/%s" % (s.port, path)


# ---- libcoap's client --------------------------------------------------------------------

SIZES = (16, 32, 64, 128, 256, 512, 1024)


@test("coap-client -b 16..1024: GET of the 256 KiB resource is byte-exact at every size")
def t_client_get():
    with tempfile.TemporaryDirectory() as d, server() as s:
        times = []
        for b in SIZES:
            out = os.path.join(d, "out%d" % b)
            t0 = time.monotonic()
            rc, _, err = coap_client("-b", b, "-m", "get", url(s, "b/big"), "-o", out,
                                     timeout=60, wait=30)
            times.append("%d:%.2fs" % (b, time.monotonic() - t0))
            check(rc == 0 and os.path.exists(out), "-b %d: exit %r, stderr %r" % (b, rc, err))
            with open(out, "rb") as f:
                got = f.read()
            eq(sha(got), sha(big()), "SHA-256 at -b %d (%d bytes, stderr %r)" % (
                b, len(got), err))
        note("times " + " ".join(times))


@test("coap-client -b 16..1024 -f: a 64 KiB PUT is stored byte-exact at every size (read "
      "back with GET); the handler runs once per upload")
def t_client_put():
    with tempfile.TemporaryDirectory() as d, server() as s:
        for i, b in enumerate(SIZES, 1):
            data = os.urandom(64 * 1024)
            f = os.path.join(d, "in%d" % b)
            with open(f, "wb") as fh:
                fh.write(data)
            rc, out, err = coap_client("-b", b, "-m", "put", "-f", f, url(s, "b/up"),
                                       timeout=60, wait=30)
            eq((out.strip(), err.strip()), (str(i), ""), "-b %d: answer (index, no error)" % b)
            back = os.path.join(d, "back%d" % b)
            rc, out, err = coap_client("-b", 1024, "-m", "get", url(s, "b/up?i=%d" % i),
                                       "-o", back, timeout=30)
            with open(back, "rb") as fh:
                got = fh.read()
            check(got == data, "-b %d: read back %d bytes, sha %s, expected %s (%r)" % (
                b, len(got), sha(got)[:16], sha(data)[:16], err))
        eq(nruns(s, "up"), len(SIZES), "handler runs")


# ---- Block2 ---------------------------------------------------------------------------------

@test("Block2 random access: GET with NUM=100 as the first request -> block 100, its bytes, "
      "the representation's ETag, M=1; the handler runs once, later blocks from the snapshot")
def t_random_access():
    with server() as s, Peer(s) as p, Peer(s) as q:
        m = p.get("b/big", 100)
        eq(unblk(m, BLOCK2), (100, 1, 6), "Block2")
        check(m.payload == big()[102400:103424], "block 100 bytes differ: got %d bytes %s" % (
            len(m.payload), hx(m.payload[:16])))
        etag = m.opt(ETAG)
        check(etag is not None and 1 <= len(etag) <= 8, "ETag %r" % etag)
        eq(nruns(s, "big"), 1, "handler runs")
        m0 = q.get("b/big", 0)              # another peer, block 0: the same representation
        eq(m0.opt(ETAG), etag, "ETag of block 0 (another peer)")
        m = p.get("b/big", 101)
        eq((unblk(m, BLOCK2), m.payload == big()[103424:104448], m.opt(ETAG)),
           ((101, 1, 6), True, etag), "block 101 from the snapshot")
        m = p.get("b/big", 255)
        eq((unblk(m, BLOCK2), m.payload == big()[-1024:]), ((255, 0, 6), True), "last block")
        eq(nruns(s, "big"), 2, "handler runs (one per peer that started a transfer)")


@test("Block2 early negotiation: GET with NUM=0 SZX=2 -> 64-byte blocks all the way "
      "(4096 of them, byte-exact); the handler runs once")
def t_early_negotiation():
    with server() as s, Peer(s) as p:
        data, msgs = download(p, "b/big", szx=2, expect_szx=2)
        eq(len(msgs), 4096, "blocks")
        eq(sha(data), sha(big()), "SHA-256")
        eq(nruns(s, "big"), 1, "handler runs")


@test("block_size=256: a client asking SZX 6 gets SZX 4 answers (Block2, byte-exact); a "
      "Block1 upload in 1024-byte blocks is asked down to 256 (2.31 with SZX 4, then NUM 4)")
def t_server_block_size():
    with server(opts={"block_size": 256}) as s, Peer(s) as p, Peer(s) as q:
        data, msgs = download(p, "b/big", szx=6, expect_szx=4)
        eq((len(msgs), sha(data)), (1024, sha(big())), "blocks, SHA-256")
        data, msgs = download(q, "b/big", first_block2=False, expect_szx=4)
        eq((len(msgs), sha(data)), (1024, sha(big())), "no Block2 at first: blocks, SHA-256")
        body_ = os.urandom(4000)
        m = p.put_block("b/up", 0, 1, 6, body_[:1024])
        cont(m, 0, 4, "block 0 of 1024 bytes")
        for num in range(4, 15):
            m = p.put_block("b/up", num, 1, 4, body_[num * 256:(num + 1) * 256])
            cont(m, num, 4, "block %d of 256" % num)
        m = p.put_block("b/up", 15, 0, 4, body_[15 * 256:], mcode=CHANGED)
        eq(unblk(m, BLOCK1), (15, 0, 4), "Block1 echo of the last block")
        eq(body(s, int(m.payload)), body_, "stored body")
        # random access with the client's larger SZX: whatever block is served must be
        # the one its own Block2 option names (NUM, SZX -> offset, RFC 7959 §2.2)
        m = p.get("b/big", 3, 6)
        num, more, szx = unblk(m, BLOCK2)
        off = num * (16 << szx)
        eq((szx, m.payload == big()[off:off + (16 << szx)]), (4, True),
           "a later block asked with SZX 6: SZX and the bytes its Block2 names")
        note("GET Block2 NUM=3 SZX=6 (offset 3072) to block_size=256 -> Block2 NUM=%d SZX=%d "
             "(offset %d)" % (num, szx, off))


@test("Size2 (RFC 7959 §4): on block 0, on a later block only when asked with Size2=0")
def t_size2():
    with server() as s, Peer(s) as p, Peer(s) as q:
        eq(p.get("b/big", 0).opt_uint(SIZE2), BIG, "Size2 on block 0 (Block2 asked)")
        eq(p.get("b/big", 1).opt_uint(SIZE2), None, "Size2 on block 1 (not asked)")
        eq(p.get("b/big", 2, options=[(SIZE2, 0)]).opt_uint(SIZE2), BIG, "Size2=0 on block 2")
        eq(q.get("b/big").opt_uint(SIZE2), BIG, "Size2 on block 0 (no Block2 asked)")
        eq(q.get("b/big", 7, options=[(SIZE2, 0)]).opt_uint(SIZE2), BIG,
           "Size2=0 on random access")
        m = q.get("b/small", 0)
        eq((unblk(m, BLOCK2), len(m.payload)), ((0, 0, 6), 100),
           "a representation that fits: block 0 is all of it (§2.4)")


@test("B22 + ETag: stable within a transfer although the resource changes mid-way (the "
      "snapshot); a new transfer gets the new representation and a new ETag; a NEW peer's "
      "first request NUM>0 gets the new representation's block with the new ETag")
def t_etag_change():
    with server() as s, Peer(s) as a, Peer(s) as b, Peer(s) as c:
        m0 = a.get("b/mut", 0)
        e1 = m0.opt(ETAG)
        eq((unblk(m0, BLOCK2), m0.payload), ((0, 1, 6), mut(1)[:1024]), "v1 block 0")
        b.req(PUT, "b/mut", payload=b"2", mcode=CHANGED)
        for n in range(1, 5):
            m = a.get("b/mut", n)
            eq((m.opt(ETAG), m.payload), (e1, mut(1)[n * 1024:(n + 1) * 1024]),
               "block %d after the change: the v1 snapshot" % n)
        eq(unblk(m, BLOCK2), (4, 0, 6), "last block")
        m = a.get("b/mut", 0)               # a new transfer
        e2 = m.opt(ETAG)
        check(e2 is not None and e2 != e1, "a new transfer has a new ETag: %r vs %r" % (e2, e1))
        eq(m.payload, mut(2)[:1024], "v2 block 0")
        m = c.get("b/mut", 2)               # B22
        eq((m.opt(ETAG), m.payload), (e2, mut(2)[2048:3072]), "B22: new peer, NUM 2")
        # the handler's own ETag is the one on every block
        d1, msgs = download(b, "b/tagged")
        eq((d1, {x.opt(ETAG) for x in msgs}, {len(x.opts(ETAG)) for x in msgs}),
           (mut(2), {b"v2"}, {1}), "/b/tagged: one ETag option, the handler's, on each block")


@test("a transfer started WITHOUT a Block2 option (block 0 by the server's choice, §2.4) "
      "continues from its snapshot: handler run once, one ETag, across a change")
def t_no_block2_first():
    with server() as s, Peer(s) as a, Peer(s) as b:
        m0 = a.get("b/mut")
        eq(unblk(m0, BLOCK2), (0, 1, 6), "Block2 of the answer")
        e1 = m0.opt(ETAG)
        b.req(PUT, "b/mut", payload=b"3", mcode=CHANGED)
        got = [m0.payload]
        etags = [e1]
        for n in range(1, 5):
            m = a.get("b/mut", n)
            got.append(m.payload)
            etags.append(m.opt(ETAG))
        r = nruns(s, "mut")
        check(etags == [e1] * 5 and b"".join(got) == mut(1) and r == 1,
              "later blocks must come from block 0's representation (RFC 7959 §2.4; README: "
              "'later blocks come from the snapshot without running the handler')\n"
              "  ETags: %s\n  bytes == v1: %s, == v3 after block 0: %s\n  handler runs: %d "
              "(expected 1)" % ([hx(e) for e in etags], b"".join(got) == mut(1),
                                b"".join(got[1:]) == mut(3)[1024:], r))


@test("block2_bytes=1000 (no room for a snapshot): blocks are cut straight from the "
      "handler's answer, every block runs it, the download is still byte-exact")
def t_no_snapshot():
    with server(opts={"block2_bytes": 1000}) as s, Peer(s) as p:
        data, msgs = download(p, "b/mut")
        eq((data, len(msgs), nruns(s, "mut")), (mut(1), 5, 5), "bytes, blocks, handler runs")


@test("B1: Block2 SZX=7 in a UDP request -> 4.00; B2: Block1 SZX=7 PUT -> 4.00, nothing "
      "stored")
def t_b1_b2():
    with server() as s, Peer(s) as p:
        p.get("b/big", 0, 7, mcode=BAD_REQUEST)
        p.get("b/big", 3, 7, mcode=BAD_REQUEST)
        p.put_block("b/up", 0, 1, 7, os.urandom(1024), mcode=BAD_REQUEST)
        p.put_block("b/up", 0, 0, 7, os.urandom(1024), mcode=BAD_REQUEST)
        eq((bodies(s), nruns(s, "big")), (0, 0), "bodies stored, /b/big runs")


@test("B3/B4: a Block1 or Block2 option of length 4 -> 4.02, nothing stored")
def t_b3_b4():
    with server() as s, Peer(s) as p:
        v = b"\x00\x00\x00\x0e"             # NUM 0, M=1, SZX 6 in four bytes
        p.req(PUT, "b/up", options=[(BLOCK1, v)], payload=os.urandom(1024), mcode=BAD_OPTION)
        p.req(PUT, "b/up", options=[(BLOCK1, b"\x00\x00\x00\x06")], payload=b"x",
              mcode=BAD_OPTION)
        p.req(GET, "b/big", options=[(BLOCK2, b"\x00\x00\x00\x16")], mcode=BAD_OPTION)
        eq((bodies(s), nruns(s, "big")), (0, 0), "bodies stored, /b/big runs")


@test("B5: first Block1 with NUM=5 -> 4.08; B6: a skipped block -> 4.08 (the upload is "
      "dropped); B7: the final block with earlier ones missing -> 4.08, handler not run")
def t_b5_b6_b7():
    data = os.urandom(8192)
    with server() as s, Peer(s) as p:
        p.put_block("b/up", 5, 1, 6, data[5120:6144], mcode=INCOMPLETE)
        p.put_block("b/up", 5, 0, 6, data[5120:6144], mcode=INCOMPLETE)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024]), 0)
        p.put_block("b/up", 2, 1, 6, data[2048:3072], mcode=INCOMPLETE)      # B6
        p.put_block("b/up", 1, 1, 6, data[1024:2048], mcode=INCOMPLETE)      # dropped
        cont(p.put_block("b/up", 0, 1, 6, data[:1024]), 0)
        cont(p.put_block("b/up", 1, 1, 6, data[1024:2048]), 1)
        p.put_block("b/up", 3, 0, 6, data[3072:4000], mcode=INCOMPLETE)      # B7
        eq((bodies(s), nruns(s, "up")), (0, 0), "bodies stored, handler runs")


@test("B8: the SZX grows mid-transfer -> 4.00 and the upload is dropped")
def t_b8():
    data = os.urandom(4096)
    with server() as s, Peer(s) as p:
        cont(p.put_block("b/up", 0, 1, 4, data[:256]), 0, 4)
        p.put_block("b/up", 1, 1, 5, data[512:1024], mcode=BAD_REQUEST)
        p.put_block("b/up", 1, 1, 4, data[256:512], mcode=INCOMPLETE)
        eq(bodies(s), 0, "bodies stored")


@test("B9: a non-final block whose payload is not the block size -> 4.00 (short, long); a "
      "final block longer than the block size -> 4.00")
def t_b9():
    data = os.urandom(4096)
    with server() as s, Peer(s) as p:
        p.put_block("b/up", 0, 1, 6, data[:1000], mcode=BAD_REQUEST)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024]), 0)
        p.put_block("b/up", 1, 1, 6, data[1024:2049], mcode=BAD_REQUEST)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024]), 0)
        p.put_block("b/up", 1, 1, 6, data[1024:1040], mcode=BAD_REQUEST)
        p.put_block("b/up", 0, 0, 4, data[:300], mcode=BAD_REQUEST)
        eq(bodies(s), 0, "bodies stored")


@test("B10: the Content-Format changes mid-transfer -> 4.08")
def t_b10():
    data = os.urandom(3000)
    with server() as s, Peer(s) as p:
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], options=[(CONTENT_FORMAT, 0)]), 0)
        p.put_block("b/up", 1, 1, 6, data[1024:2048], options=[(CONTENT_FORMAT, 42)],
                    mcode=INCOMPLETE)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], options=[(CONTENT_FORMAT, 42)]), 0)
        p.put_block("b/up", 1, 1, 6, data[1024:2048], mcode=INCOMPLETE)   # format dropped
        eq(bodies(s), 0, "bodies stored")


@test("B11: Size1=0xFFFFFFFF on block 0 -> 4.13 with Size1=max_body, nothing kept; early "
      "4.13 at max_body=10000 for Size1=10001, 2.31 for Size1=10000; a plain PUT with a huge "
      "Size1 -> 4.13")
def t_b11():
    with server() as s, Peer(s) as p:
        m = p.put_block("b/up", 0, 1, 6, os.urandom(1024), options=[(SIZE1, 0xFFFFFFFF)],
                        mcode=TOO_LARGE)
        eq(m.opt_uint(SIZE1), MAX_BODY, "Size1 of the 4.13")
        p.put_block("b/up", 1, 1, 6, os.urandom(1024), mcode=INCOMPLETE)
        m = p.req(PUT, "b/up", options=[(SIZE1, 0xFFFFFFFF)], payload=b"tiny",
                  mcode=TOO_LARGE)
        eq(m.opt_uint(SIZE1), MAX_BODY, "Size1 of the 4.13 (no Block1)")
        eq(bodies(s), 0, "bodies stored")
    with server(opts={"max_body": 10000}) as s, Peer(s) as p:
        m = p.put_block("b/up", 0, 1, 6, os.urandom(1024), options=[(SIZE1, 10001)],
                        mcode=TOO_LARGE)
        eq(m.opt_uint(SIZE1), 10000, "Size1 = max_body")
        cont(p.put_block("b/up", 0, 1, 6, os.urandom(1024), options=[(SIZE1, 10000)]), 0)


@test("B12: blocks crossing max_body=10000 without Size1 -> 4.13 with Size1=10000 at the "
      "crossing block, the state is freed (next block 4.08); exactly 10000 bytes is fine")
def t_b12():
    data = os.urandom(12000)
    with server(opts={"max_body": 10000}) as s, Peer(s) as p:
        for n in range(9):
            cont(p.put_block("b/up", n, 1, 6, data[n * 1024:(n + 1) * 1024]), n)
        m = p.put_block("b/up", 9, 1, 6, data[9216:10240], mcode=TOO_LARGE)
        eq(m.opt_uint(SIZE1), 10000, "Size1 of the late 4.13")
        p.put_block("b/up", 10, 1, 6, data[10240:11264], mcode=INCOMPLETE)
        eq(bodies(s), 0, "bodies stored")
        m = upload(p, "b/up", data[:10000])
        eq(body(s, int(m.payload)), data[:10000], "a body of exactly max_body")


@test("B13: Block1 NUM=2^20-1 SZX 6 (a 1 GiB offset) -> 4.08 with or without an upload in "
      "progress, nothing allocated by offset (VmRSS), still serving")
def t_b13():
    with server() as s, Peer(s) as p:
        rss0 = s.rss_kb()
        top = (1 << 20) - 1
        p.put_block("b/up", top, 1, 6, os.urandom(1024), mcode=INCOMPLETE)
        p.put_block("b/up", top, 0, 6, os.urandom(1024), mcode=INCOMPLETE)
        cont(p.put_block("b/up", 0, 1, 6, os.urandom(1024)), 0)
        p.put_block("b/up", top, 1, 6, os.urandom(1024), mcode=INCOMPLETE)
        p.put_block("b/up", top, 0, 6, os.urandom(100), mcode=INCOMPLETE)
        rss1 = s.rss_kb()
        check(rss1 - rss0 < 4096, "VmRSS grew by %d KiB" % (rss1 - rss0))
        eq(bodies(s), 0, "bodies stored")
        note("VmRSS %d -> %d KiB" % (rss0, rss1))


@test("B14: Block1 to a missing resource -> 4.04 and no state (block_per_peer=1 still lets "
      "the next upload start); Block1 PUT to a GET-only resource -> 4.05")
def t_b14():
    with server(opts={"block_per_peer": 1}) as s, Peer(s) as p:
        p.put_block("nope", 0, 1, 6, os.urandom(1024), mcode=NOT_FOUND)
        p.put_block("b/nope", 0, 1, 6, os.urandom(1024), mcode=NOT_FOUND)
        p.put_block("b/big", 0, 1, 6, os.urandom(1024), mcode=NOT_ALLOWED)
        data = os.urandom(3000)
        m = upload(p, "b/up", data)
        eq(body(s, int(m.payload)), data, "the upload after them")


@test("B15: Block1 NUM 0 again mid-transfer restarts the upload; only the new body is stored")
def t_b15():
    a, b = os.urandom(5000), os.urandom(3500)
    with server() as s, Peer(s) as p:
        for n in range(3):
            cont(p.put_block("b/up", n, 1, 6, a[n * 1024:(n + 1) * 1024]), n)
        m = upload(p, "b/up", b)
        eq((bodies(s), body(s, int(m.payload))), (1, b), "bodies, the stored one")


@test("B16: a repeated block (new MID: 2.31 again; same MID: the cached answer) is stored "
      "once")
def t_b16():
    data = os.urandom(4500)
    with server() as s, Peer(s) as p:
        for n in range(3):
            cont(p.put_block("b/up", n, 1, 6, data[n * 1024:(n + 1) * 1024]), n)
        cont(p.put_block("b/up", 2, 1, 6, data[2048:3072]), 2, what="block 2 again, new MID")
        d, mid, tok = p.last
        first = p.c.exchange(d)              # the same datagram: a retransmission
        eq((first.mid, first.code, unblk(first, BLOCK1)), (mid, CONTINUE, (2, 1, 6)),
           "the retransmission's answer")
        cont(p.put_block("b/up", 3, 1, 6, data[3072:4096]), 3)
        m = p.put_block("b/up", 4, 0, 6, data[4096:], mcode=CHANGED)
        eq((bodies(s), nruns(s, "up"), body(s, int(m.payload))), (1, 1, data),
           "bodies, handler runs, the stored body")


@test("B17: two uploads from ONE peer to one resource with different Request-Tags, "
      "interleaved block by block, both complete byte-exact")
def t_b17():
    x, y = os.urandom(6000), os.urandom(7000)
    with server() as s, Peer(s) as p:
        res = {}
        for n in range(7):
            for tag, data in ((b"\x01", x), (b"\x02\x02", y)):
                piece = data[n * 1024:(n + 1) * 1024]
                if not piece:
                    continue
                more = (n + 1) * 1024 < len(data)
                m = p.put_block("b/up", n, more, 6, piece, tag=tag)
                if more:
                    cont(m, n, what="tag %s block %d" % (tag.hex(), n))
                else:
                    eq(m.code, CHANGED, "tag %s final: %s" % (tag.hex(), diag(m)))
                    res[tag] = int(m.payload)
        eq((body(s, res[b"\x01"]), body(s, res[b"\x02\x02"])), (x, y), "both bodies")


@test("B18: without Request-Tag one upload per (peer, resource): a NUM 0 restarts it, the "
      "new one completes, the interrupted one's next block -> 4.08")
def t_b18():
    x, y = os.urandom(5000), os.urandom(2500)
    with server() as s, Peer(s) as p:
        for n in range(3):
            cont(p.put_block("b/up", n, 1, 6, x[n * 1024:(n + 1) * 1024]), n)
        m = upload(p, "b/up", y)
        p.put_block("b/up", 3, 1, 6, x[3072:4096], mcode=INCOMPLETE)
        eq((bodies(s), body(s, int(m.payload))), (1, y), "bodies, the stored one")


@test("B19: the Request-Tag changes mid-transfer -> that block is a new operation without "
      "block 0 (4.08); the first tag's upload is its own operation and completes")
def t_b19():
    x = os.urandom(4000)
    with server() as s, Peer(s) as p:
        cont(p.put_block("b/up", 0, 1, 6, x[:1024], tag=b"t1"), 0)
        cont(p.put_block("b/up", 1, 1, 6, x[1024:2048], tag=b"t1"), 1)
        p.put_block("b/up", 2, 1, 6, x[2048:3072], tag=b"t2", mcode=INCOMPLETE)
        cont(p.put_block("b/up", 2, 1, 6, x[2048:3072], tag=b"t1"), 2)
        m = p.put_block("b/up", 3, 0, 6, x[3072:], tag=b"t1", mcode=CHANGED)
        eq(body(s, int(m.payload)), x, "the t1 body")
        note("MALFORMED.md B19 expects the old tag's next block to be 4.08; block.c keys "
             "uploads by Request-Tag (RFC 9175 §3.3, as B17), so it continues")


@test("RFC 9175 §3.3: a block whose method or query differs from block 0's is not "
      "Request-Tag-matchable, so another operation without block 0 -> 4.08; nothing stored")
def t_matchable():
    x = os.urandom(2000)
    bad = []
    for what, first, second in (
            ("PUT block 0, then POST block 1 (final)", {}, {"method": POST}),
            ("?a=1 block 0, then ?a=2 block 1 (final)", {"query": ["a=1"]},
             {"query": ["a=2"]})):
        with server() as s, Peer(s) as p:
            cont(p.put_block("b/up", 0, 1, 6, x[:1024], **first), 0)
            m = p.put_block("b/up", 1, 0, 6, x[1024:], **second)
            if m.code != INCOMPLETE:
                bad.append("%s: expected 4.08, got %s; bodies stored: %d" % (
                    what, diag(m), bodies(s)))
    check(not bad, "\n".join(bad))


@test("two peers upload to the same path at once, interleaved block by block: both "
      "complete byte-exact")
def t_two_peers():
    x, y = os.urandom(20000), os.urandom(17000)
    with server() as s, Peer(s) as p, Peer(s) as q:
        res = {}
        for n in range(20):
            for who, data in ((p, x), (q, y)):
                piece = data[n * 1024:(n + 1) * 1024]
                if not piece:
                    continue
                more = (n + 1) * 1024 < len(data)
                m = who.put_block("b/up", n, more, 6, piece)
                if more:
                    cont(m, n)
                else:
                    eq(m.code, CHANGED, "final block: %s" % diag(m))
                    res[who] = int(m.payload)
        eq((body(s, res[p]), body(s, res[q])), (x, y), "both bodies")


@test("block_idle=0.5: an upload left half done is gone after the idle time: its reassembly "
      "budget (block1_bytes=8192) serves another upload that failed before, and its next "
      "block -> 4.08")
def t_idle_expiry():
    x, y = os.urandom(12000), os.urandom(8192)
    opts = {"block_idle": 0.5, "block1_bytes": 8192}
    with server(opts=opts) as s, Peer(s) as a, Peer(s) as b:
        for n in range(8):                  # 8 KiB buffered: the whole budget
            cont(a.put_block("b/up", n, 1, 6, x[n * 1024:(n + 1) * 1024]), n)
        m = b.put_block("b/up", 0, 1, 6, y[:1024], mcode=UNAVAILABLE)
        check(m.opt_uint(MAX_AGE) is not None, "Max-Age on the 5.03")
        rss0 = s.rss_kb()
        idle = time.monotonic()
        time.sleep(1.5)                     # the idle time itself is what is tested
        m = b.put_block("b/up", 0, 1, 6, y[:1024])
        late = []
        if m.code != CONTINUE:
            # how long until it is forgotten at all (bounded): for the diagnostic only
            for _ in range(40):
                time.sleep(0.25)
                m2 = b.put_block("b/up", 0, 1, 6, y[:1024])
                if m2.code == CONTINUE:
                    late.append(time.monotonic() - idle)
                    break
        check(m.code == CONTINUE, "1.5 s after the last block of an upload with "
              "block_idle=0.5 its budget is still held: another upload's block 0 -> %s%s" % (
                  diag(m), "; it was freed %.1f s after the last block" % late[0] if late
                  else "; not freed within 11.5 s"))
        upload(b, "b/up", y)
        a.put_block("b/up", 8, 1, 6, x[8192:9216], mcode=INCOMPLETE)
        note("VmRSS %d KiB with the upload held, %d KiB after" % (rss0, s.rss_kb()))


@test("block_per_peer=2: a third upload from one peer -> 5.03 with Max-Age (another peer "
      "may still start); once one completes the third can start")
def t_per_peer():
    data = os.urandom(2000)
    with server(opts={"block_per_peer": 2}) as s, Peer(s) as p, Peer(s) as q:
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], tag=b"1"), 0)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], tag=b"2"), 0)
        m = p.put_block("b/up", 0, 1, 6, data[:1024], tag=b"3", mcode=UNAVAILABLE)
        check(m.opt_uint(MAX_AGE) is not None, "Max-Age on the 5.03: %r" % m)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], tag=b"1"), 0)   # a restart is fine
        cont(q.put_block("b/up", 0, 1, 6, data[:1024]), 0)
        p.put_block("b/up", 1, 0, 6, data[1024:], tag=b"1", mcode=CHANGED)
        cont(p.put_block("b/up", 0, 1, 6, data[:1024], tag=b"3"), 0)


@test("block1_bytes=4096: reassembly memory of all uploads full -> 5.03 with Max-Age for "
      "another peer's block; after the holder completes, it can start")
def t_block1_bytes():
    # the holder's buffer grows by doubling (1024, 2048, 4096): after its third block the
    # budget is spent, and its last block fits what it holds
    x, y = os.urandom(4096), os.urandom(3000)
    with server(opts={"block1_bytes": 4096}) as s, Peer(s) as p, Peer(s) as q:
        for n in range(3):
            cont(p.put_block("b/up", n, 1, 6, x[n * 1024:(n + 1) * 1024]), n)
        m = q.put_block("b/up", 0, 1, 6, y[:1024], mcode=UNAVAILABLE)
        check(m.opt_uint(MAX_AGE) is not None, "Max-Age on the 5.03: %r" % m)
        m = p.put_block("b/up", 3, 0, 6, x[3072:], mcode=CHANGED)
        eq(body(s, int(m.payload)), x, "the holder's body")
        m = upload(q, "b/up", y)
        eq(body(s, int(m.payload)), y, "the second body")


@test("B20: Block2 NUM past the end -> 4.02 (block.c's choice; MALFORMED.md says 4.00), "
      "with or without a transfer in progress")
def t_b20():
    with server() as s, Peer(s) as p, Peer(s) as q:
        p.get("b/big", 256, mcode=BAD_OPTION)
        p.get("b/big", (1 << 20) - 1, mcode=BAD_OPTION)
        p.get("b/big", 16384, 0, mcode=BAD_OPTION)
        p.get("b/big", 16383, 0)             # the last 16-byte block exists
        q.get("b/big", 0)
        q.get("b/big", 300, mcode=BAD_OPTION)
        q.get("b/small", 1, mcode=BAD_OPTION)
        m = q.get("b/big", 1)                # the transfer goes on
        eq(m.payload, big()[1024:2048], "block 1 after the 4.02")


@test("B21: Block2 with M=1 in a request: M ignored")
def t_b21():
    with server() as s, Peer(s) as p:
        m = p.get("b/big", 3, 6, more=1)
        eq((unblk(m, BLOCK2), m.payload), ((3, 1, 6), big()[3072:4096]), "block 3")
        m = p.get("b/big", 0, 2, more=1)
        eq((unblk(m, BLOCK2), m.payload), ((0, 1, 2), big()[:64]), "block 0 SZX 2")
        m = p.get("b/big", 255, 6, more=1)
        eq(unblk(m, BLOCK2), (255, 0, 6), "the last block says M=0")


@test("Block1 + Block2 (RFC 7959 §3, Figure 13): a 3000-byte POST whose answer is 6000 "
      "bytes: the last Block1 gets Block2 block 0 + the Block1 echo, the rest is fetched "
      "with POST Block2 NUM=k (no payload); handler once; another peer's NUM=1 -> 4.08")
def t_block1_block2():
    x = os.urandom(3000)
    with server() as s, Peer(s) as p, Peer(s) as q:
        cont(p.put_block("b/echo", 0, 1, 6, x[:1024], method=POST), 0)
        cont(p.put_block("b/echo", 1, 1, 6, x[1024:2048], method=POST), 1)
        m = p.put_block("b/echo", 2, 0, 6, x[2048:], method=POST, mcode=CHANGED)
        want = x + x[::-1]
        eq((unblk(m, BLOCK1), unblk(m, BLOCK2), m.payload),
           ((2, 0, 6), (0, 1, 6), want[:1024]), "answer to the last Block1")
        etag = m.opt(ETAG)
        parts = [m.payload]
        for n in range(1, 6):
            m = p.req(POST, "b/echo", options=[(BLOCK2, blk(n, 0, 6))], mcode=CHANGED)
            eq((unblk(m, BLOCK2), m.opt(ETAG), unblk(m, BLOCK1)), ((n, n < 5, 6), etag, None),
               "POST Block2 NUM=%d" % n)
            parts.append(m.payload)
        eq(b"".join(parts), want, "the whole answer")
        eq(nruns(s, "echo"), 1, "handler runs")
        q.req(POST, "b/echo", options=[(BLOCK2, blk(1, 0, 6))], mcode=INCOMPLETE)
        eq(nruns(s, "echo"), 1, "handler runs after another peer's NUM=1")
        # early negotiation of the answer's size in the last Block1 request
        y = os.urandom(500)
        cont(p.put_block("b/echo", 0, 1, 4, y[:256], method=POST), 0, 4)
        m = p.req(POST, "b/echo", options=[(BLOCK1, blk(1, 0, 4)), (BLOCK2, blk(0, 0, 2))],
                  payload=y[256:], mcode=CHANGED)
        eq((unblk(m, BLOCK1), unblk(m, BLOCK2)), ((1, 0, 4), (0, 1, 2)), "Block1/Block2")
        parts = [m.payload]
        for n in range(1, 16):
            m = p.req(POST, "b/echo", options=[(BLOCK2, blk(n, 0, 2))], mcode=CHANGED)
            eq(unblk(m, BLOCK2), (n, n < 15, 2), "POST Block2 NUM=%d SZX 2" % n)
            parts.append(m.payload)
        eq(b"".join(parts), y + y[::-1], "the whole answer in 64-byte blocks")


@test("a deferred handler (moonlet.sleep past separate_after) returning 20000 bytes: the "
      "separate CON carries block 0 (Block2, ETag, Size2), later blocks from the snapshot "
      "(handler once); a piggybacked slow answer is sliced too")
def t_deferred():
    with server(opts={"separate_after": 0.1}) as s, Peer(s) as p:
        q = ["s=0.4", "n=20000"]
        m = p.get("b/slow", 0, query=q, timeout=5)
        check(m.separate, "a separate answer: %r" % m)
        eq((unblk(m, BLOCK2), m.opt_uint(SIZE2), m.payload), ((0, 1, 6), 20000, big()[:1024]),
           "block 0")
        etag, parts = m.opt(ETAG), [m.payload]
        t0 = time.monotonic()
        for n in range(1, 20):
            m = p.get("b/slow", n, query=q)
            eq((unblk(m, BLOCK2), m.opt(ETAG), m.separate), ((n, n < 19, 6), etag, False),
               "block %d" % n)
            parts.append(m.payload)
        eq(b"".join(parts), big()[:20000], "the whole answer")
        eq(nruns(s, "slow"), 1, "handler runs")
        check(time.monotonic() - t0 < 2, "later blocks did not sleep")
    with server() as s, Peer(s) as p:
        m = p.get("b/slow", query=["s=0.05", "n=3000"])
        eq((m.separate, unblk(m, BLOCK2), m.payload), (False, (0, 1, 6), big()[:1024]),
           "piggybacked block 0")


@test("a Block1 upload to a deferred handler (POST, moonlet.sleep past separate_after): the "
      "separate CON echoes Block1 and carries Block2 block 0; the rest by POST Block2 NUM=k")
def t_deferred_block1():
    x = os.urandom(2500)
    with server(opts={"separate_after": 0.1}) as s, Peer(s) as p:
        q = ["s=0.3"]
        cont(p.put_block("b/slow", 0, 1, 6, x[:1024], method=POST, query=q), 0)
        cont(p.put_block("b/slow", 1, 1, 6, x[1024:2048], method=POST, query=q), 1)
        m = p.put_block("b/slow", 2, 0, 6, x[2048:], method=POST, query=q, mcode=CHANGED)
        want = x + x[::-1]
        eq((m.separate, unblk(m, BLOCK1), unblk(m, BLOCK2), m.payload),
           (True, (2, 0, 6), (0, 1, 6), want[:1024]), "the separate answer")
        parts = [m.payload]
        for n in range(1, 5):
            m = p.req(POST, "b/slow", q, [(BLOCK2, blk(n, 0, 6))], mcode=CHANGED)
            eq((m.separate, unblk(m, BLOCK2)), (False, (n, n < 4, 6)), "block %d" % n)
            parts.append(m.payload)
        eq((b"".join(parts), nruns(s, "slow")), (want, 1), "the whole answer, handler runs")


@test("a C plugin's answer is sliced like a script's: /t/big (1000 bytes) at block_size=256 "
      "-> 4 blocks, byte-exact")
def t_plugin_sliced():
    t_basic = os.path.join(t_basic_dir(), "t_basic.so")
    want = bytes(ord("0") + i % 10 for i in range(1000))
    with Server(opts={"block_size": 256}, plugins=[t_basic]) as s, Peer(s) as p:
        data, msgs = download(p, "t/big", first_block2=False, expect_szx=4)
        eq((data, len(msgs), msgs[0].opt_uint(SIZE2)), (want, 4, 1000), "bytes, blocks, Size2")


@test("streamed upload (t_stream.so): a repeated block is answered 2.31 again and passed to "
      "the plugin once; a gap -> 4.08")
def t_streamed():
    so = os.path.join(t_basic_dir(), "t_stream.so")
    check(os.path.exists(so), "%s missing (make check builds it)" % so)
    data = os.urandom(5000)
    with Server(plugins=[so]) as s, Peer(s) as p:
        for n in range(3):
            cont(p.put_block("t/stream", n, 1, 6, data[n * 1024:(n + 1) * 1024]), n)
        cont(p.put_block("t/stream", 2, 1, 6, data[2048:3072]), 2, what="block 2 again")
        cont(p.put_block("t/stream", 3, 1, 6, data[3072:4096]), 3)
        m = p.put_block("t/stream", 4, 0, 6, data[4096:], mcode=CHANGED)
        h = 14695981039346656037
        for c in data:
            h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        eq(m.payload.decode(), "5000 %016x 5" % h, "size hash pieces")
        cont(p.put_block("t/stream", 0, 1, 6, data[:1024]), 0)
        p.put_block("t/stream", 2, 1, 6, data[2048:3072], mcode=INCOMPLETE)


@test("B24: 10000 Block1 starts (M=1) from 250 ports, 40 Request-Tags each: over "
      "block_per_peer -> 5.03 + Max-Age, over block1_bytes=1 MiB -> 5.03; memory "
      "bounded; everything expires (block_idle=3) and the budget is free again")
def t_b24():
    # block_idle 3 s: longer than the starts take (under ASan too), or the first uploads
    # would expire while the last start, and more than the budget would seem to be taken
    opts = {"block1_bytes": 1 << 20, "block_idle": 3}
    piece = os.urandom(1024)
    with server(opts=opts) as s:
        rss0 = s.rss_kb()
        socks = [Peer(s) for _ in range(250)]
        counts = {}
        try:
            for p in socks:
                sent = {}
                for i in range(40):
                    d, mid, tok = p.send_req(PUT, "b/up", options=[
                        (BLOCK1, blk(0, 1, 6)), (REQUEST_TAG, i.to_bytes(2, "big"))],
                        payload=piece)
                    sent[mid] = i
                for _ in range(40):
                    m = p.c.recv(5.0)
                    check(m is not None, "an answer to each start (%d so far)" % sum(
                        counts.values()))
                    check(m.mid in sent, "answer to a MID we sent: %r" % m)
                    check(m.code in (CONTINUE, UNAVAILABLE), "start -> %s" % diag(m))
                    if m.code == UNAVAILABLE:
                        check(m.opt_uint(MAX_AGE) is not None, "Max-Age on the 5.03")
                    counts[m.code] = counts.get(m.code, 0) + 1
            rss1 = s.rss_kb()
            ok = counts.get(CONTINUE, 0)
            check(ok <= 1024, "uploads in progress %d > block1_bytes / 1024" % ok)
            check(ok >= 1000, "uploads in progress %d: expected about 1024" % ok)
            eq(ok + counts.get(UNAVAILABLE, 0), 10000, "answers")
            check(rss1 - rss0 < 16 * 1024, "VmRSS grew %d KiB" % (rss1 - rss0))
            t0 = time.monotonic()
            with Peer(s) as late:
                freed = None
                for _ in range(100):        # poll: expiry may wait for the sweep
                    m = late.put_block("b/up", 0, 1, 6, piece, tag=b"late")
                    if m.code == CONTINUE:
                        freed = time.monotonic() - t0
                        break
                    time.sleep(0.1)
                check(freed is not None, "budget not free 10 s after the starts")
            socks[0].put_block("b/up", 1, 1, 6, piece, tag=b"\x00\x00", mcode=INCOMPLETE)
            note("2.31: %d, 5.03: %d; VmRSS %d -> %d KiB; budget free again %.1f s after "
                 "the last start (block_idle=3)" % (ok, counts.get(UNAVAILABLE, 0), rss0,
                                                    rss1, freed))
        finally:
            for p in socks:
                p.close()


# ---- a lossy link ---------------------------------------------------------------------------

class Relay:
    """tests/tools/lossy_relay.py in front of a server; stopped by PID."""

    def __init__(self, port, loss, seed, delay_ms=0):
        argv = [sys.executable, RELAY, "--server-port", str(port), "--loss", str(loss),
                "--seed", str(seed), "--delay-ms", str(delay_ms), "--lifetime", "300"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.log = ProcLog(self.proc)
        m = self.log.wait_for(r"relay ready (\d+)", 10.0)
        if not m:
            self.stop()
            raise AssertionError("relay did not start: %s" % self.log.text())
        self.port = int(m.group(1))

    def stop(self):
        """SIGTERM by PID; returns the counter line."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.t.join(2)
        m = self.log.wait_for(r"^relay up_forwarded=.*", 0.1)
        return m.group(0) if m else "(no counters: %r)" % self.log.text()


class ConDownloader:
    """GET block by block over CON with RFC 7252 §4.2 back-off: the first timeout random in
    [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR], doubled for each of MAX_RETRANSMIT
    retransmissions; then the block is asked again as a new exchange (new MID), at most
    `rounds` times."""

    def __init__(self, port, ack_timeout=0.2, factor=1.5, max_retransmit=4, rounds=4,
                 seed=0):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.bind(("::1", 0))
        self.sock.connect(("::1", port))
        self.sock.settimeout(None)
        self.rng = random.Random(seed)
        self.ack_timeout, self.factor = ack_timeout, factor
        self.max_retransmit, self.rounds = max_retransmit, rounds
        self.mid = self.rng.randrange(0x10000)
        self.retransmissions = self.new_exchanges = self.stale = self.pings = 0

    def close(self):
        self.sock.close()

    def exchange(self, path, options, deadline):
        for _ in range(self.rounds):
            self.mid = (self.mid + 1) & 0xFFFF
            tok = self.mid.to_bytes(2, "big") + b"\x5a"
            d = request(CON, GET, self.mid, tok, path, options=options)
            timeout = self.rng.uniform(self.ack_timeout, self.ack_timeout * self.factor)
            for tx in range(self.max_retransmit + 1):
                if tx:
                    self.retransmissions += 1
                self.sock.send(d)
                until = min(time.monotonic() + timeout, deadline)
                while True:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    r, _, _ = select.select([self.sock], [], [], left)
                    if not r:
                        break
                    m = Msg(self.sock.recv(70000))
                    if m.type == CON and m.code == 0:   # a ping verifies our address
                        self.sock.send(bytes([0x70, 0]) + m.raw[2:4])
                        self.pings += 1
                        continue
                    if m.type == ACK and m.mid == self.mid and m.token == tok:
                        return m
                    self.stale += 1         # a late answer to an earlier exchange
                if time.monotonic() >= deadline:
                    raise AssertionError("deadline passed")
                timeout *= 2
            self.new_exchanges += 1
        raise AssertionError("block not fetched in %d exchanges" % self.rounds)

    def download(self, path, szx, limit_s):
        deadline = time.monotonic() + limit_s
        parts, num, etag = [], 0, None
        for _ in range(70000):
            m = self.exchange(path, [(BLOCK2, blk(num, 0, szx))], deadline)
            check(m.code == CONTENT, "block %d: %s" % (num, diag(m)))
            b = unblk(m, BLOCK2)
            eq(b[0::2], (num, szx), "Block2 NUM/SZX")
            if etag is None:
                etag = m.opt(ETAG)
            eq(m.opt(ETAG), etag, "ETag of block %d" % num)
            parts.append(m.payload)
            if not b[1]:
                return b"".join(parts)
            num += 1
        raise AssertionError("too many blocks")


def relay_round(s, loss, seed, n=100):
    """n NON GETs of /b/small through a relay: (tokens answered, the relay's counters)."""
    relay = Relay(s.port, loss, seed)
    got = set()
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sk:
            sk.bind(("::1", 0))
            sk.connect(("::1", relay.port))
            for i in range(n):
                sk.send(request(1, GET, i, i.to_bytes(2, "big"), "b/small"))
            # answers arrive at once or never: wait until 0.5 s pass without one
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r, _, _ = select.select([sk], [], [], 0.5)
                if not r:
                    break
                got.add(Msg(sk.recv(70000)).token)
    finally:
        counters = relay.stop()
    return got, dict(kv.split("=") for kv in counters.split()[1:])


@test("lossy_relay.py: --loss 0 forwards every datagram both ways; the same --seed drops the "
      "same datagrams; the counters line on SIGTERM adds up")
def t_relay_tool():
    # the relay is under test, not the server: no verification pings among the datagrams
    with server(opts={"verify": "off"}) as s:
        got, c = relay_round(s, 0, 1)
        eq((len(got), c), (100, {"up_forwarded": "100", "up_dropped": "0",
                                 "down_forwarded": "100", "down_dropped": "0", "peers": "1"}),
           "answers and counters at --loss 0")
        a, ca = relay_round(s, 0.3, 5)
        b, cb = relay_round(s, 0.3, 5)
        eq((a, ca), (b, cb), "two runs with --seed 5: answered tokens and counters")
        up_f, up_d = int(ca["up_forwarded"]), int(ca["up_dropped"])
        dn_f, dn_d = int(ca["down_forwarded"]), int(ca["down_dropped"])
        eq((up_f + up_d, dn_f + dn_d, dn_f), (100, up_f, len(a)), "counters add up")
        check(15 <= up_d <= 45 and 5 <= dn_d <= 40, "drops near 30%%: %r" % ca)
        note("--loss 0.3 --seed 5: %r" % ca)


@test("lossy link (lossy_relay.py, 10% loss each way, seeded): 256 KiB over CON at 1024- "
      "and 512-byte blocks (two downloads at once, ACK_TIMEOUT 0.2 s with back-off), "
      "SHA-256 equal to the resource's, each within 60 s")
def t_lossy():
    with server() as s:
        results, errors = {}, []

        def run(szx, seed):
            relay = Relay(s.port, 0.1, seed)
            dl = ConDownloader(relay.port, seed=seed)
            t0 = time.monotonic()
            try:
                data = dl.download("b/big", szx, 90)
                results[szx] = (time.monotonic() - t0, data, dl, relay.stop())
            except Exception as e:      # noqa: BLE001 -- reported by the main thread
                errors.append("%d-byte blocks: %s (after %.1f s, %d retransmissions); relay: "
                              "%s" % (16 << szx, e, time.monotonic() - t0,
                                      dl.retransmissions, relay.stop()))
            finally:
                dl.close()
                relay.stop()

        threads = [threading.Thread(target=run, args=(szx, seed), daemon=True)
                   for szx, seed in ((6, 7), (5, 11))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        check(not errors, "\n".join(errors))
        for szx in (6, 5):
            check(szx in results, "%d-byte download did not finish" % (16 << szx))
            dt, data, dl, counters = results[szx]
            eq(sha(data), sha(big()), "SHA-256 at %d-byte blocks" % (16 << szx))
            check(dt < 60, "%d-byte blocks took %.1f s" % (16 << szx, dt))
            note("%4d-byte blocks: %.1f s, %d retransmissions, %d new exchanges, %d stale, "
                 "%d pings answered; %s" % (16 << szx, dt, dl.retransmissions,
                                            dl.new_exchanges, dl.stale, dl.pings, counters))


if __name__ == "__main__":
    sys.exit(main())
