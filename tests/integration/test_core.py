#!/usr/bin/env python3
"""test_core.py -- moonlet's core over UDP on loopback: real clients (coap-client-notls),
raw datagrams for every applicable MALFORMED.md row, separate responses, NSTART, start-up.

  python3 tests/integration/test_core.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Test names start with the MALFORMED.md row IDs they cover. Every test starts its own server
(`-a ::1 -p 0`) and the runner stops it by PID.
"""

import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACCEPT, ACK, CHANGED, CON, CONTENT, CONTENT_FORMAT, DELETE, DELETED, ECHO, FETCH, GET,
    LOCATION_PATH, MAX_AGE, NO_RESPONSE, NON, OBSERVE, OSCORE, POST, PROXY_SCHEME, PROXY_URI,
    PUT, RST, URI_HOST, Server, check, code, coap_client, eq, error_code_of, expect_bytes,
    expect_msg, free_port, h, link_parse, main, note, request, run_moonlet, test)

MID = 0xABCD
HELLO = b"\xb5hello"            # Uri-Path "hello" as the first option (delta 11, length 5)
BAD_OPTION, NOT_FOUND, NOT_ALLOWED = code(4, 2), code(4, 4), code(4, 5)
NOT_ACCEPTABLE, UNSUPPORTED_CF, BAD_REQUEST = code(4, 6), code(4, 15), code(4, 0)
TOO_LARGE, PROXY_NOT_SUPPORTED = code(4, 13), code(5, 5)


def rst(mid=MID):
    return bytes([0x70, 0, mid >> 8, mid & 255])


def empty_ack(mid):
    return bytes([0x60, 0, mid >> 8, mid & 255])


def serving(c):
    """The server still answers: CON GET /hello -> ACK 2.05 'Hello, world'."""
    d = request(CON, GET, 0x5EED, b"\x5e", "hello")
    expect_msg(c.exchange(d), d, ACK, CONTENT, 0x5EED, b"\x5e", b"Hello, world")


def get(c, path, mid, token=b"\x01", query=(), options=()):
    d = request(CON, GET, mid, token, path, query, options)
    return expect_msg(c.exchange(d), d, ACK, None, mid, token)


def counter(c, mid=0x7000):
    d = request(CON, GET, mid, b"\xc0", "t/counter")
    m = expect_msg(c.exchange(d), d, ACK, CONTENT, mid, b"\xc0")
    return int(m.payload)


def expect_code(c, dgram, mcode, mid=MID, token=b"", mtype=ACK):
    return expect_msg(c.exchange(dgram), dgram, mtype, mcode, mid, token)


def expect_rst(c, dgram, mid=MID):
    m = c.exchange(dgram)
    expect_bytes(m.raw, rst(mid), dgram, "RST")


def rst_rows(rows):
    """Each (hex-or-bytes datagram, MID) -> exactly the RST echoing the MID; still serving."""
    with Server() as s, s.client() as c:
        for d, mid in rows:
            expect_rst(c, d, mid)
        serving(c)


def drop_rows(rows, silence=0.4):
    with Server() as s, s.client() as c:
        for d in rows:
            c.expect_silence(silence, after=d)
        serving(c)


# ---- basic message layer ------------------------------------------------------------------

@test("CON GET /hello -> piggybacked ACK 2.05, same MID and token, CF 0")
def t_con_get():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"\x11\x22\x33\x44", "hello")
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, MID, b"\x11\x22\x33\x44", b"Hello, world")
        eq(m.opt_uint(CONTENT_FORMAT), 0, "Content-Format")


@test("NON GET /hello -> NON 2.05 with the same token")
def t_non_get():
    with Server() as s, s.client() as c:
        d = request(NON, GET, MID, b"\xaa\xbb", "hello")
        expect_msg(c.exchange(d), d, NON, CONTENT, None, b"\xaa\xbb", b"Hello, world")


@test("GET with an 8-byte token and 0-byte token -> echoed")
def t_tokens():
    with Server() as s, s.client() as c:
        for mid, tok in ((1, bytes(range(1, 9))), (2, b"")):
            d = request(CON, GET, mid, tok, "hello")
            expect_msg(c.exchange(d), d, ACK, CONTENT, mid, tok)


# ---- H: message layer (MALFORMED.md) ------------------------------------------------------

@test("H1 1-3 byte datagrams -> drop")
def t_h1():
    drop_rows([h("40"), h("40 01"), h("40 01 ab")])


@test("H2 version 0 -> silent drop")
def t_h2():
    drop_rows([h("00 01 ab cd"), h("00 01 ab cd") + HELLO])


@test("H3 version 2 and 3 -> silent drop")
def t_h3():
    drop_rows([h("80 01 ab cd"), h("c0 01 ab cd"), h("80 01 ab cd") + HELLO])


@test("H4 TKL 9-12 CON -> RST")
def t_h4():
    rst_rows([(bytes([0x40 | tkl, 1, 0xAB, tkl]) + bytes(tkl) + HELLO, 0xAB00 | tkl)
              for tkl in (9, 10, 11, 12)])


@test("H5 TKL 15 CON -> RST")
def t_h5():
    rst_rows([(h("4f 01 ab cd"), MID), (h("4f 01 ab ce") + bytes(15) + HELLO, 0xABCE)])


@test("H6 TKL 13 without the extension byte -> RST (no RFC 8974)")
def t_h6():
    rst_rows([(h("4d 01 ab cd"), MID), (h("4e 01 ab ce"), 0xABCE)])


@test("H7 TKL 13 with a 13-byte extended token -> RST (no RFC 8974)")
def t_h7():
    rst_rows([(h("4d 01 ab cd 00") + bytes(range(13)) + HELLO, MID)])


@test("H8 TKL 8 but 2 token bytes, CON -> RST")
def t_h8():
    rst_rows([(h("48 01 ab cd 11 22"), MID)])


@test("H9 TKL 8 but 2 token bytes, NON -> drop (RST allowed)")
def t_h9():
    with Server() as s, s.client() as c:
        d = h("58 01 ab cd 11 22")
        c.send(d)
        raw = c.recv_raw(0.4)
        if raw is not None:
            expect_bytes(raw, rst(), d, "the only allowed answer (RST)")
            note("H9: answered with RST (allowed)")
        else:
            note("H9: dropped")
        serving(c)


@test("H10 CoAP ping (empty CON) -> RST with the same MID")
def t_h10():
    rst_rows([(h("40 00 ab cd"), MID), (h("40 00 00 00"), 0), (h("40 00 ff ff"), 0xFFFF)])


@test("H11 empty CON with a token -> RST")
def t_h11():
    rst_rows([(h("41 00 ab cd 11"), MID)])


@test("H12 empty CON with a payload -> RST")
def t_h12():
    rst_rows([(h("40 00 ab cd ff 41"), MID)])


@test("H13 empty CON with options -> RST")
def t_h13():
    rst_rows([(h("40 00 ab cd b4 74 69 6d 65"), MID)])


@test("H14 empty NON -> drop")
def t_h14():
    drop_rows([h("50 00 ab cd")])


@test("H15 ACK with an unknown MID -> drop")
def t_h15():
    drop_rows([h("60 00 ab cd")])


@test("H16 RST with an unknown MID -> drop")
def t_h16():
    drop_rows([h("70 00 ab cd")])


@test("H17 RST with a token -> drop")
def t_h17():
    drop_rows([h("71 00 ab cd 11")])


@test("H18 ACK carrying a GET / a POST -> drop, handler not run")
def t_h18():
    with Server() as s, s.client() as c:
        before = counter(c)
        c.expect_silence(0.4, after=h("60 01 ab cd") + HELLO)
        c.expect_silence(0.4, after=request(ACK, POST, 0xABCE, b"\x01", "t/counter"))
        eq(counter(c, 0x7001), before, "t/counter after an ACK-typed POST (state changed)")


@test("H19 CON code 1.00 (reserved class) -> RST")
def t_h19():
    rst_rows([(h("40 20 ab cd"), MID), (h("40 3f ab ce") + HELLO, 0xABCE)])


@test("H20 CON code 6.00 -> RST")
def t_h20():
    rst_rows([(h("40 c0 ab cd"), MID)])


@test("H21 CON 7.01 (CSM) over UDP -> RST")
def t_h21():
    rst_rows([(h("40 e1 ab cd"), MID)])


@test("H22 unsolicited CON 2.05 -> RST")
def t_h22():
    rst_rows([(h("41 45 ab cd 11"), MID), (h("40 84 ab ce"), 0xABCE)])


@test("H23 unsolicited NON 2.05 -> drop")
def t_h23():
    drop_rows([h("51 45 ab cd 11"), h("51 45 ab ce 11 ff 41")])


@test("H24 method 0.08 -> 4.05")
def t_h24():
    with Server() as s, s.client() as c:
        expect_code(c, h("40 08 ab cd") + HELLO, NOT_ALLOWED)


@test("H25 method 0.31 -> 4.05")
def t_h25():
    with Server() as s, s.client() as c:
        expect_code(c, h("40 1f ab cd") + HELLO, NOT_ALLOWED)


@test("H26 FETCH/PATCH/iPATCH on /hello -> 4.05")
def t_h26():
    with Server() as s, s.client() as c:
        for i, method in enumerate((FETCH, 6, 7)):
            expect_code(c, request(CON, method, MID + i, b"", "hello"), NOT_ALLOWED, MID + i)


@test("H27/R12 oversized datagram (65 527 B, the largest UDP/IPv6 payload, and just over the "
      "2 KiB receive slot) holding a request -> 4.13 with Size1 (issue 12: R12 over H27's "
      "drop), from its head alone; a response that large -> dropped; still serving")
def t_h27():
    # 70 000 B cannot be sent as one UDP datagram (IPv6 limit 65 527 B without jumbograms):
    # the largest one, and one just above moonlet's 2 KiB slot, both hold a valid GET.
    with Server() as s, s.client() as c:
        for size in (65527, 2049, 8000):
            d = request(CON, GET, MID, b"", "hello", payload=b"x" * 1)
            d = d[:-1] + b"x" * (size - len(d) + 1)
            eq(len(d), size, "datagram size")
            m = expect_msg(c.exchange(d), d, ACK, code(4, 13), MID, b"")
            check(m.opt_uint(60) is not None, "Size1 on the 4.13")
            c.expect_silence(0.1)
        big = h("61 45 ab cd 77") + b"\xff" + b"r" * 5000      # an unsolicited 2.05
        c.expect_silence(0.4, after=big)
        serving(c)


# ---- O: options ---------------------------------------------------------------------------

@test("O1-O10 option format errors -> RST")
def t_o1_o10():
    base = h("40 01 ab cd")
    rst_rows([
        (base + h("f1 41"), MID),                       # O1 delta nibble 15, not 0xFF
        (base + h("1f"), MID),                          # O2 length nibble 15
        (base + h("d0"), MID),                          # O3 delta 13, extension missing
        (base + h("e0 01"), MID),                       # O4 delta 14, 1 of 2 bytes
        (base + h("0d"), MID),                          # O5 length 13, extension missing
        (base + h("0e 01"), MID),                       # O6 length 14, 1 of 2 bytes
        (base + h("b5 74 69 6d"), MID),                 # O7 value past the end
        (base + h("e0 ff ff"), MID),                    # O8 number 65804
        (base + h("e0 fe f2 c0"), MID),                 # O9 65535 then +12 wraps
        (base + HELLO + h("ff"), MID),                  # O10 payload marker, no payload
    ])


@test("O11 unknown critical option 99 in CON GET -> 4.02 with a diagnostic payload")
def t_o11():
    with Server() as s, s.client() as c:
        d = h("40 01 ab cd") + HELLO + h("d0 4b")
        m = expect_code(c, d, BAD_OPTION)
        check(m.payload, "4.02 has no diagnostic payload: %r" % m)
        note("O11 diagnostic: %r" % m.payload)


@test("O12 unknown critical option 99 in NON GET -> NON 4.02 or RST, never 2.05")
def t_o12():
    with Server() as s, s.client() as c:
        d = h("51 01 ab cd 77") + HELLO + h("d0 4b")
        m = c.exchange(d)
        if m.type == RST:
            expect_bytes(m.raw, rst(), d, "RST")
            note("O12: RST")
        else:
            expect_msg(m, d, NON, BAD_OPTION, None, b"\x77")
            note("O12: NON 4.02 %r" % m.payload)


@test("O13 PUT /t/counter with critical option 99 -> 4.02, counter unchanged")
def t_o13():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(CON, PUT, MID, b"\x13", "t/counter", options=[(99, b"")], payload=b"777")
        expect_code(c, d, BAD_OPTION, token=b"\x13")
        eq(counter(c, 0x7001), before, "t/counter after a rejected PUT (state changed)")
        d = request(CON, PUT, MID + 1, b"\x13", "t/store", options=[(99, b"x")],
                    payload=b"evil")
        expect_code(c, d, BAD_OPTION, MID + 1, b"\x13")
        eq(get(c, "t/store", 0x7002).payload, b"", "t/store after a rejected PUT")
        eq(counter(c, 0x7003), before, "t/counter after a rejected PUT (state changed)")


@test("O14 unknown elective option 100 -> ignored, 2.05")
def t_o14():
    with Server() as s, s.client() as c:
        expect_msg(c.exchange(h("40 01 ab cd") + HELLO + h("d0 4c")), None, ACK, CONTENT, MID,
                   b"", b"Hello, world")


@test("O15 OSCORE option 9 (unsupported) -> 4.02")
def t_o15():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"", "hello", options=[(OSCORE, b"\x09")])
        expect_code(c, d, BAD_OPTION)
        d = request(CON, GET, MID + 1, b"", "hello", options=[(OSCORE, b"")])
        expect_code(c, d, BAD_OPTION, MID + 1)


@test("O16 two Accept -> 4.02")
def t_o16():
    with Server() as s, s.client() as c:
        expect_code(c, h("40 01 ab cd") + HELLO + h("61 00 01 00"), BAD_OPTION)


@test("O17 two Uri-Host -> 4.02")
def t_o17():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"", "hello", options=[(URI_HOST, "a"), (URI_HOST, "b")])
        expect_code(c, d, BAD_OPTION)


@test("O18 two Content-Format in a PUT -> the first is used")
def t_o18():
    with Server() as s, s.client() as c:
        before = counter(c)
        # ct 0 then 42: 42 is not in /t/store's ct list, so using the second would be 4.15
        d = request(CON, PUT, MID, b"", "t/store",
                    options=[(CONTENT_FORMAT, 0), (CONTENT_FORMAT, 42)], payload=b"first")
        expect_code(c, d, CHANGED)
        eq(get(c, "t/store", 0x7002).payload, b"first", "t/store")
        eq(counter(c, 0x7003), before + 1, "handler runs")


@test("O19 two Observe on GET /hello -> second ignored, 2.05")
def t_o19():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"\x19", "hello", options=[(OBSERVE, 0), (OBSERVE, 0)])
        expect_msg(c.exchange(d), d, ACK, CONTENT, MID, b"\x19", b"Hello, world")


@test("O20-O25 option value length out of range -> 4.02")
def t_o20_o25():
    with Server() as s, s.client() as c:
        cases = [
            ("O20 Uri-Host length 0", h("40 01 ab 20 30") + h("85") + b"hello"),
            ("O21 Accept length 3", h("40 01 ab 21") + HELLO + h("63 00 00 00")),
            ("O22 If-None-Match length 1", h("40 01 ab 22 51 00 65") + b"hello"),
            ("O23 Uri-Port length 3", h("40 01 ab 23 73 00 16 33 45") + b"hello"),
            ("O24 Uri-Path 256 B", h("40 01 ab 24 bd f3") + b"a" * 256),
            ("O25 Uri-Query 256 B", h("40 01 ab 25") + HELLO + h("4d f3") + b"q" * 256),
        ]
        bad = []
        for name, d in cases:
            try:
                expect_code(c, d, BAD_OPTION, d[2] << 8 | d[3])
            except AssertionError as e:
                bad.append("%s: %s" % (name, e))
        check(not bad, "\n".join(bad))


@test("O20 Uri-Host length 0 in a PUT -> 4.02, no change")
def t_o20_put():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(CON, PUT, MID, b"", "t/store", options=[(URI_HOST, b"")], payload=b"x")
        expect_code(c, d, BAD_OPTION)
        eq(counter(c, 0x7001), before, "t/counter (state changed)")


@test("O26 Content-Format of length 3 (elective) -> ignored, 2.05")
def t_o26():
    with Server() as s, s.client() as c:
        d = h("40 01 ab cd") + HELLO + h("13 00 00 00")
        expect_msg(c.exchange(d), d, ACK, CONTENT, MID, b"", b"Hello, world")


@test("O27 Max-Age in a PUT -> ignored, 2.04")
def t_o27():
    with Server() as s, s.client() as c:
        d = request(CON, PUT, MID, b"", "t/store", options=[(MAX_AGE, 60)], payload=b"ma")
        expect_code(c, d, CHANGED)
        eq(get(c, "t/store", 0x7002).payload, b"ma", "t/store")


@test("O28 Location-Path + reserved option 136 in a PUT -> 4.02, no change")
def t_o28():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(CON, PUT, MID, b"", "t/store",
                    options=[(LOCATION_PATH, "x"), (136, "y")], payload=b"evil")
        expect_code(c, d, BAD_OPTION)
        eq(counter(c, 0x7001), before, "t/counter (state changed)")
        eq(get(c, "t/store", 0x7002).payload, b"", "t/store")


@test("O29-O31 Proxy-Uri / Proxy-Scheme on a non-proxy -> 5.05")
def t_o29_o31():
    with Server() as s, s.client() as c:
        cases = [
            ("O29 Proxy-Uri", request(CON, GET, 0x2901, b"", (),
                                      options=[(PROXY_URI, "coap://[::1]/hello")])),
            ("O30 Proxy-Uri + Uri-Path", request(CON, GET, 0x3001, b"", "hello",
                                                 options=[(PROXY_URI, "coap://x/hello")])),
            ("O31 Proxy-Scheme without Uri-Host", request(CON, GET, 0x3101, b"", "hello",
                                                          options=[(PROXY_SCHEME, "coap")])),
        ]
        bad = []
        for name, d in cases:
            try:
                expect_code(c, d, PROXY_NOT_SUPPORTED, d[2] << 8 | d[3])
            except AssertionError as e:
                bad.append("%s: %s" % (name, e))
        check(not bad, "\n".join(bad))
        before = counter(c)
        d = request(CON, PUT, MID, b"", "t/counter", options=[(PROXY_URI, "coap://x/y")],
                    payload=b"5")
        expect_code(c, d, PROXY_NOT_SUPPORTED)
        eq(counter(c, 0x7001), before, "t/counter after a proxied PUT (state changed)")


@test("O32 1000 zero-length elective options -> 2.05 or 4.00/4.13, still serving")
def t_o32():
    with Server() as s, s.client() as c:
        d = h("40 01 ab cd") + HELLO + h("d0 4c") + b"\x00" * 999
        m = c.exchange(d)
        expect_msg(m, d, ACK, None, MID, b"")
        check(m.code in (CONTENT, BAD_REQUEST, TOO_LARGE), "code %s: %r" % (m.code_str, m))
        note("O32: %s" % m.code_str)
        serving(c)


@test("O34 No-Response=2 on a NON GET -> no response")
def t_o34():
    with Server() as s, s.client() as c:
        d = request(NON, GET, MID, b"\x34", "hello", options=[(NO_RESPONSE, 2)])
        c.expect_silence(0.5, after=d)
        # No-Response=2 suppresses 2.xx only: a 4.04 still comes
        d = request(NON, GET, MID + 1, b"\x35", "nope", options=[(NO_RESPONSE, 2)])
        expect_msg(c.exchange(d), d, NON, NOT_FOUND, None, b"\x35")


@test("O35 Echo with no challenge outstanding -> ignored, 2.05")
def t_o35():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"", "hello", options=[(ECHO, bytes(range(8)))])
        expect_msg(c.exchange(d), d, ACK, CONTENT, MID, b"", b"Hello, world")


# ---- R: request semantics, URIs, link format -----------------------------------------------

@test("R1 GET with a payload -> payload ignored, 2.05")
def t_r1():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"", "hello", payload=b"AB")
        expect_msg(c.exchange(d), d, ACK, CONTENT, MID, b"", b"Hello, world")


@test("R2/R3 Uri-Path '..' and '.' -> 4.04 (opaque segments)")
def t_r2_r3():
    with Server() as s, s.client() as c:
        paths = [["t", "..", "hello"], ["..", "hello"], ["t", "getonly", ".."],
                 [".", "hello"], ["hello", "."], ["t", ".", "getonly"]]
        for i, p in enumerate(paths):
            d = request(CON, GET, MID + i, b"", p)
            expect_code(c, d, NOT_FOUND, MID + i)


@test("R4 one Uri-Path 'a/b': 4.04 unless registered so (/t/a%2Fb); 't','a','b' -> 4.04")
def t_r4():
    with Server() as s, s.client() as c:
        expect_code(c, request(CON, GET, 1, b"", ["t/getonly"]), NOT_FOUND, 1)
        expect_code(c, request(CON, GET, 2, b"", ["t", "a", "b"]), NOT_FOUND, 2)
        d = request(CON, GET, 3, b"", ["t", "a/b"])
        expect_msg(c.exchange(d), d, ACK, CONTENT, 3, b"", b"a/b")


@test("R5 Uri-Path with NUL -> 4.04 (no truncation)")
def t_r5():
    with Server() as s, s.client() as c:
        for i, seg in enumerate((b"hello\x00", b"hel\x00lo", b"hello\x00x")):
            expect_code(c, request(CON, GET, MID + i, b"", [seg]), NOT_FOUND, MID + i)


@test("R6 Uri-Path with invalid UTF-8 -> 4.04 or 4.00")
def t_r6():
    with Server() as s, s.client() as c:
        for i, seg in enumerate((b"\xff\xfe", b"hello\xff", b"\xc3")):
            d = request(CON, GET, MID + i, b"", [seg])
            m = expect_msg(c.exchange(d), d, ACK, None, MID + i, b"")
            check(m.code in (NOT_FOUND, BAD_REQUEST), "code %s: %r" % (m.code_str, m))
        serving(c)


@test("R7 33 Uri-Path segments -> 4.04 or 4.00")
def t_r7():
    with Server() as s, s.client() as c:
        d = request(CON, GET, MID, b"", ["t"] * 33)
        m = expect_msg(c.exchange(d), d, ACK, None, MID, b"")
        check(m.code in (NOT_FOUND, BAD_REQUEST), "code %s: %r" % (m.code_str, m))
        serving(c)


@test("R10 PUT /t/store with Content-Format 42 (not in ct) -> 4.15, no change")
def t_r10():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(CON, PUT, MID, b"", "t/store", options=[(CONTENT_FORMAT, 42)],
                    payload=b"bin")
        expect_code(c, d, UNSUPPORTED_CF)
        eq(counter(c, 0x7001), before, "t/counter (state changed)")
        d = request(CON, PUT, MID + 1, b"", "t/store", options=[(CONTENT_FORMAT, 50)],
                    payload=b"json")
        expect_code(c, d, CHANGED, MID + 1)


@test("R11 GET /t/store Accept 42 -> 4.06; Accept 50 -> CF 50; Accept 0 -> CF 0")
def t_r11():
    with Server() as s, s.client() as c:
        d = request(CON, PUT, 1, b"", "t/store", options=[(CONTENT_FORMAT, 0)], payload=b"v")
        expect_code(c, d, CHANGED, 1)
        expect_code(c, request(CON, GET, 2, b"", "t/store", options=[(ACCEPT, 42)]),
                    NOT_ACCEPTABLE, 2)
        m = get(c, "t/store", 3, options=[(ACCEPT, 50)])
        eq((m.code_str, m.opt_uint(CONTENT_FORMAT), m.payload), ("2.05", 50, b'"v"'), "Accept 50")
        m = get(c, "t/store", 4, options=[(ACCEPT, 0)])
        eq((m.code_str, m.opt_uint(CONTENT_FORMAT), m.payload), ("2.05", 0, b"v"), "Accept 0")


def wkc(c, mid, query=()):
    m = get(c, ".well-known/core", mid, query=query)
    return m


def hrefs(m):
    return [href for href, _ in link_parse(m.payload.decode())]


@test("/.well-known/core over raw UDP: CF 40, every non-hidden resource once, attributes")
def t_wkc_raw():
    with Server() as s, s.client() as c:
        m = wkc(c, 1)
        eq((m.code_str, m.opt_uint(CONTENT_FORMAT)), ("2.05", 40), "code, Content-Format")
        links = dict(link_parse(m.payload.decode()))
        check(len(links) == len(hrefs(m)), "duplicate hrefs: %r" % hrefs(m))
        for href in ("/hello", "/echo", "/slow", "/t/counter", "/t/store", "/t/getonly",
                     "/t/defer", "/t/a%2Fb", "/t/attrs", "/t/big", "/t/conf"):
            check(href in links, "%s not listed in %r" % (href, m.payload))
        check("/t/hidden" not in links, "/t/hidden (hidden=1) is listed")
        eq(links["/hello"].get("rt"), ["hello"], "/hello rt")
        a = links["/t/attrs"]
        eq(a.get("rt"), ["x y"], "rt")
        eq(a.get("if"), ["sensor"], "if")
        eq(a.get("ct"), ["0 50"], "ct")
        eq(a.get("sz"), ["123"], "sz")
        eq(a.get("title"), ['A, "quoted" title'], "title")
        for flag in ("obs", "foo", "bar"):
            eq(a.get(flag), [None], flag)
        eq(links["/t/store"].get("ct"), ["0 50"], "/t/store ct")


@test("R13 /.well-known/core?rt (no '=') -> 2.05 with the links that have an rt (policy)")
def t_r13():
    with Server() as s, s.client() as c:
        every = dict(link_parse(wkc(c, 1).payload.decode()))
        m = wkc(c, 2, ["rt"])
        eq(m.code, CONTENT, "code")
        eq(sorted(hrefs(m)), sorted(h for h, a in every.items() if "rt" in a), "?rt")
        eq(hrefs(wkc(c, 3, ["nosuchattr=1"])), [], "unknown attribute -> empty")
        serving(c)


@test("R13 (contrast) /.well-known/core?rt=hello -> only /hello (RFC 6690 §4.1)")
def t_r13_filter():
    with Server() as s, s.client() as c:
        eq(hrefs(wkc(c, 1, ["rt=hello"])), ["/hello"], "?rt=hello")
        eq(hrefs(wkc(c, 2, ["rt=x"])), ["/t/attrs"], "?rt=x (one of the tokens of rt=\"x y\")")


@test("R14 /.well-known/core?href=* -> all links")
def t_r14():
    with Server() as s, s.client() as c:
        eq(sorted(hrefs(wkc(c, 1, ["href=*"]))), sorted(hrefs(wkc(c, 2))), "?href=* vs no query")


@test("R15 /.well-known/core?href=/t* -> only the /t links")
def t_r15():
    with Server() as s, s.client() as c:
        every = hrefs(wkc(c, 1))
        got = hrefs(wkc(c, 2, ["href=/t*"]))
        eq(sorted(got), sorted(x for x in every if x.startswith("/t")), "?href=/t*")
        check(got, "empty result")


@test("R16 /.well-known/core with a 255-byte '%zz' query -> 2.05/4.00, still serving")
def t_r16():
    with Server() as s, s.client() as c:
        for i, q in enumerate((("href=" + "%zz" * 84).encode()[:255], b"%zz" * 85,
                               b"rt=%", b"%00=%00")):
            m = wkc(c, 1 + i, [q])
            check(m.code in (CONTENT, BAD_REQUEST), "query %r: code %s" % (q[:20], m.code_str))
        serving(c)


@test("4.04 unknown path, 4.05 method without a handler (raw)")
def t_404_405():
    with Server() as s, s.client() as c:
        expect_code(c, request(CON, GET, 1, b"\x01", "nope"), NOT_FOUND, 1, b"\x01")
        expect_code(c, request(CON, GET, 2, b"\x01", "t/nope/deeper"), NOT_FOUND, 2, b"\x01")
        expect_code(c, request(CON, DELETE, 3, b"\x02", "hello"), NOT_ALLOWED, 3, b"\x02")
        for i, method in enumerate((POST, PUT, DELETE)):
            d = request(CON, method, 4 + i, b"", "t/getonly", payload=b"x")
            expect_code(c, d, NOT_ALLOWED, 4 + i)
        d = request(NON, GET, 9, b"\x09", "nope")
        expect_msg(c.exchange(d), d, NON, NOT_FOUND, None, b"\x09")


@test("/t/big -> 1000-byte payload in one datagram")
def t_big():
    with Server() as s, s.client() as c:
        m = get(c, "t/big", 1)
        eq(m.payload, bytes((ord("0") + i % 10) for i in range(1000)), "payload")


# ---- D: deduplication ----------------------------------------------------------------------

@test("D1 the same CON twice -> byte-identical response, handler runs once")
def t_d1():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(CON, POST, MID, b"\xd1", "t/counter")
        r1 = expect_code(c, d, CHANGED, token=b"\xd1").raw
        r2 = c.exchange(d).raw
        expect_bytes(r2, r1, d, "duplicate's response")
        eq(counter(c, 0x7001), before + 1, "handler runs")
        d = request(CON, POST, MID + 1, b"\xd2", "echo", options=[(CONTENT_FORMAT, 0)],
                    payload=b"twice")
        r1 = c.exchange(d).raw
        expect_bytes(c.exchange(d).raw, r1, d, "duplicate's response (/echo)")


@test("D2 the same NON twice -> the second is ignored")
def t_d2():
    with Server() as s, s.client() as c:
        before = counter(c)
        d = request(NON, POST, MID, b"\xd2", "t/counter")
        expect_msg(c.exchange(d), d, NON, CHANGED, None, b"\xd2")
        c.expect_silence(0.4, after=d)
        eq(counter(c, 0x7001), before + 1, "handler runs")


@test("D3 the same MID from another source port -> an independent exchange")
def t_d3():
    with Server() as s, s.client() as c1, s.client() as c2:
        before = counter(c1)
        d = request(CON, POST, MID, b"\xd3", "t/counter")
        expect_code(c1, d, CHANGED, token=b"\xd3")
        expect_code(c2, d, CHANGED, token=b"\xd3")
        eq(counter(c1, 0x7001), before + 2, "handler runs")


@test("D4 same (peer, MID) with a different token -> a new request (policy), counted once each")
def t_d4():
    with Server() as s, s.client() as c:
        before = counter(c)
        d1 = request(CON, POST, MID, b"\xa1", "t/counter")
        expect_code(c, d1, CHANGED, token=b"\xa1")
        d2 = request(CON, POST, MID, b"\xb2", "t/counter")
        expect_msg(c.exchange(d2), d2, ACK, CHANGED, MID, b"\xb2")
        eq(counter(c, 0x7001) - before, 2, "handler runs")
        r = c.exchange(d2)      # and the new request is itself deduplicated
        expect_msg(r, d2, ACK, CHANGED, MID, b"\xb2")
        eq(counter(c, 0x7002) - before, 2, "handler runs after a duplicate of the second")
        serving(c)


@test("D5 100 000 requests with fresh MIDs from one socket: all answered, RSS bounded, "
      "a recent duplicate still gets the cached response")
def t_d5():
    with Server() as s, s.client() as c:
        sock, total, window = c.sock, 100000, 32
        tmpl = request(CON, GET, 0, b"", "hello")

        def flood(first, n, deadline):
            sent = got = 0
            sock.settimeout(1.0)
            while sent < n and time.monotonic() < deadline:
                batch = min(window, n - sent)
                for i in range(batch):
                    mid = (first + sent + i) & 0xFFFF
                    sock.send(tmpl[:2] + bytes([mid >> 8, mid & 255]) + tmpl[4:])
                for _ in range(batch):
                    try:
                        sock.recv(2048)
                    except socket.timeout:
                        break
                    got += 1
                sent += batch
            return sent, got

        flood(0x8000, 5000, time.monotonic() + 10)      # warm-up: allocator, session
        rss0 = s.rss_kb()
        t0 = time.monotonic()
        sent, got = flood(0, total, t0 + 40)
        dt = time.monotonic() - t0
        rss1 = s.rss_kb()
        note("D5: %d sent, %d answered in %.1fs; VmRSS %d -> %d kB" % (sent, got, dt, rss0, rss1))
        eq(sent, total, "requests sent within 40 s")
        check(got >= total * 0.999, "only %d of %d answered" % (got, total))
        check(rss1 - rss0 < 4096, "VmRSS grew by %d kB" % (rss1 - rss0))
        sock.settimeout(None)
        before = counter(c, 0x9000)
        d = request(CON, POST, 0x9001, b"\xd5", "t/counter")
        r1 = expect_code(c, d, CHANGED, 0x9001, b"\xd5").raw
        for i in range(8):
            get(c, "hello", 0x9002 + i)
        expect_bytes(c.exchange(d).raw, r1, d, "recent duplicate's response")
        eq(counter(c, 0x9100), before + 1, "handler runs")


# ---- separate responses (RFC 7252 §5.2.2) and NSTART ---------------------------------------

SEP = {"separate_after": 0.1, "ack_timeout": 0.3}


def slow_start(c, mid=MID, token=b"\x5a\x5b"):
    """CON GET /slow -> the empty ACK (within ~0.5 s) -> the CON 2.05 (after ~3 s)."""
    d = request(CON, GET, mid, token, "slow")
    t0 = time.monotonic()
    m = c.exchange(d, 2.0)
    dt = time.monotonic() - t0
    expect_bytes(m.raw, empty_ack(mid), d, "empty ACK")
    check(dt < 1.0, "empty ACK after %.2fs (separate_after=0.1)" % dt)
    con = c.recv(6.0)
    check(con is not None, "no separate response within 6 s")
    expect_msg(con, d, CON, CONTENT, None, token, b"slow response")
    check(con.mid != mid, "the separate response reuses the request's MID %04x" % mid)
    return con, t0, dt


@test("separate response: empty ACK, CON 2.05, max_retransmit retransmissions, doubling")
def t_sep_retransmit():
    with Server(dict(SEP, max_retransmit=3)) as s, s.client() as c:
        con, t0, ack_dt = slow_start(c)
        times = [time.monotonic()]
        while len(times) < 4:
            m = c.recv(6.0)
            check(m is not None, "only %d retransmissions (max_retransmit=3)" % (len(times) - 1))
            expect_bytes(m.raw, con.raw, None, "retransmission %d" % len(times))
            times.append(time.monotonic())
        iv = [b - a for a, b in zip(times, times[1:])]
        note("empty ACK after %.3fs, CON after %.2fs, intervals %s" % (
            ack_dt, times[0] - t0, ", ".join("%.3f" % x for x in iv)))
        check(0.25 <= iv[0] <= 0.6, "first timeout %.3fs, expected 0.3-0.45" % iv[0])
        for a, b in zip(iv, iv[1:]):
            check(1.6 <= b / a <= 2.5, "intervals not doubling: %r" % iv)
        c.expect_silence(iv[0] * 8 + 0.5)    # the give-up time: no 4th retransmission


@test("separate response: the client ACKs the CON -> no retransmission")
def t_sep_ack():
    with Server(SEP) as s, s.client() as c:
        con, _, _ = slow_start(c)
        c.expect_silence(1.5, after=empty_ack(con.mid))
        serving(c)


@test("separate response: the client RSTs the CON -> no retransmission")
def t_sep_rst():
    with Server(SEP) as s, s.client() as c:
        con, _, _ = slow_start(c)
        c.expect_silence(1.5, after=rst(con.mid))
        serving(c)


@test("D1 duplicate of a pending request -> the empty ACK again, handler runs once")
def t_sep_dup():
    with Server(SEP) as s, s.client() as c:
        d = request(CON, GET, MID, b"\xdd", "slow")
        expect_bytes(c.exchange(d, 2.0).raw, empty_ack(MID), d, "empty ACK")
        t_dup = time.monotonic()
        expect_bytes(c.exchange(d, 2.0).raw, empty_ack(MID), d, "empty ACK for the duplicate")
        con = c.recv(6.0)
        check(con is not None, "no separate response within 6 s")
        expect_msg(con, d, CON, CONTENT, None, b"\xdd", b"slow response")
        c.send(empty_ack(con.mid))
        # a second handler run would answer ~3 s after the duplicate
        c.expect_silence(max(0.5, t_dup + 3.5 - time.monotonic()))


@test("NSTART=1: two separate CONs due together -> the second only after the first's ACK")
def t_nstart():
    opts = {"separate_after": 0.05, "ack_timeout": 1.0, "ack_random_factor": 1.0}
    with Server(opts) as s, s.client() as c:
        toks = {b"\xa1": 0x1001, b"\xb2": 0x1002}
        for tok, mid in toks.items():
            c.send(request(CON, GET, mid, tok, "t/defer", ["ms=200"]))
        acks, first = set(), None
        deadline = time.monotonic() + 3
        while first is None and time.monotonic() < deadline:
            m = c.recv(deadline - time.monotonic())
            check(m is not None, "no separate response within 3 s (acks %r)" % acks)
            if m.type == ACK:
                expect_bytes(m.raw, empty_ack(m.mid), None, "empty ACK")
                acks.add(m.mid)
            else:
                expect_msg(m, None, CON, CONTENT, None, None, b"late")
                first = m
        eq(acks, set(toks.values()), "empty ACKs")
        check(first.token in toks, "unknown token %r" % first)
        other = [t for t in toks if t != first.token][0]
        t_first = time.monotonic()
        # the second response is due now; it must wait (retransmissions of the first are fine)
        while time.monotonic() - t_first < 0.6:
            m = c.recv(0.6 - (time.monotonic() - t_first))
            if m is None:
                break
            check(m.raw == first.raw, "sent while the first CON is unacknowledged: %r" % m)
        c.send(empty_ack(first.mid))
        t_ack = time.monotonic()
        m = c.recv(3.0)
        check(m is not None, "second CON not sent within 3 s of the first's ACK")
        expect_msg(m, None, CON, CONTENT, None, other, b"late")
        note("NSTART: second CON %.3fs after the first's ACK" % (time.monotonic() - t_ack))
        c.send(empty_ack(m.mid))
        c.expect_silence(0.3)


# ---- coap-client-notls ---------------------------------------------------------------------

def uri(s, path):
    return "coap://[::1]:%d/%s" % (s.port, path)


def client_ok(rc, out, err):
    check(rc == 0 and not error_code_of(err),
          "coap-client-notls rc=%r stdout=%r stderr=%r" % (rc, out, err))


@test("coap-client GET /hello -> 'Hello, world'")
def t_cc_hello():
    with Server() as s:
        rc, out, err = coap_client("-m", "get", uri(s, "hello"))
        client_ok(rc, out, err)
        eq(out.rstrip("\n"), "Hello, world", "stdout")


@test("coap-client POST /echo -e -t 50 -> echoed; raw: 2.04 with CF 50")
def t_cc_echo():
    with Server() as s, s.client() as c:
        rc, out, err = coap_client("-m", "post", "-t", "50", "-e", '{"n":42}', uri(s, "echo"))
        client_ok(rc, out, err)
        eq(out.rstrip("\n"), '{"n":42}', "stdout")
        d = request(CON, POST, MID, b"\xec", "echo", options=[(CONTENT_FORMAT, 50)],
                    payload=b'{"n":42}')
        m = expect_code(c, d, CHANGED, token=b"\xec")
        eq((m.opt_uint(CONTENT_FORMAT), m.payload), (50, b'{"n":42}'), "CF and payload")
        d = request(CON, POST, MID + 1, b"", "echo", options=[(CONTENT_FORMAT, 0)],
                    payload=b"txt")
        m = expect_code(c, d, CHANGED, MID + 1)
        eq((m.opt_uint(CONTENT_FORMAT), m.payload), (0, b"txt"), "CF 0 and payload")


@test("coap-client PUT/GET/DELETE on /t/store and POST /t/counter")
def t_cc_store():
    with Server() as s, s.client() as c:
        client_ok(*coap_client("-m", "put", "-t", "0", "-e", "word", uri(s, "t/store")))
        rc, out, err = coap_client("-m", "get", uri(s, "t/store"))
        client_ok(rc, out, err)
        eq(out.rstrip("\n"), "word", "GET after PUT")
        rc, out, err = coap_client("-m", "get", "-A", "50", uri(s, "t/store"))
        eq(out.rstrip("\n"), '"word"', "GET Accept 50")
        client_ok(*coap_client("-m", "delete", uri(s, "t/store")))
        rc, out, err = coap_client("-m", "get", uri(s, "t/store"))
        client_ok(rc, out, err)
        eq(out.rstrip("\n"), "", "GET after DELETE")
        client_ok(*coap_client("-m", "post", uri(s, "t/counter")))
        eq(counter(c), 3, "t/counter after PUT, DELETE, POST")
        d = request(CON, DELETE, MID, b"", "t/store")
        expect_code(c, d, DELETED)


@test("coap-client GET /.well-known/core -> /hello /echo /slow with their attributes")
def t_cc_wkc():
    with Server() as s:
        rc, out, err = coap_client("-m", "get", uri(s, ".well-known/core"))
        client_ok(rc, out, err)
        links = dict(link_parse(out.strip()))
        eq(links.get("/hello", {}).get("rt"), ["hello"], "/hello rt")
        for href in ("/echo", "/slow"):
            check(href in links, "%s missing from %r" % (href, out))
        check("/t/hidden" not in links, "/t/hidden listed")
        note("/hello %r /echo %r /slow %r" % (links["/hello"], links["/echo"], links["/slow"]))


@test("coap-client 4.04 and 4.05: printed as 'C.DD[ payload]' on stderr (exit 0)")
def t_cc_errors():
    with Server() as s, s.client() as c:
        rc, out, err = coap_client("-m", "get", uri(s, "nope"))
        eq(error_code_of(err), "4.04", "code printed by coap-client (stderr %r)" % err)
        note("coap-client 4.04: rc=%r stdout=%r stderr=%r" % (rc, out, err))
        rc, out, err = coap_client("-m", "delete", uri(s, "hello"))
        eq(error_code_of(err), "4.05", "code printed by coap-client (stderr %r)" % err)
        rc, out, err = coap_client("-m", "post", "-e", "x", uri(s, "t/getonly"))
        eq(error_code_of(err), "4.05", "code printed by coap-client (stderr %r)" % err)
        expect_code(c, request(CON, GET, 1, b"", "nope"), NOT_FOUND, 1)
        expect_code(c, request(CON, DELETE, 2, b"", "hello"), NOT_ALLOWED, 2)


@test("coap-client GET /slow -> 2.05 'slow response' after ~3 s")
def t_cc_slow():
    with Server() as s:
        t0 = time.monotonic()
        rc, out, err = coap_client("-m", "get", uri(s, "slow"), wait=10, timeout=20)
        dt = time.monotonic() - t0
        client_ok(rc, out, err)
        eq(out.rstrip("\n"), "slow response", "stdout")
        check(2.5 <= dt <= 8, "answered after %.2fs" % dt)


# ---- start-up and configuration ------------------------------------------------------------

def one_error(rc, lines, *needles):
    check(rc is not None, "moonlet still running after 5 s: %r" % lines)
    check(rc != 0, "exit status 0: %r" % lines)
    errs = [line for line in lines if "error:" in line]
    check(len(errs) == 1, "expected one 'error:' line, got %r" % lines)
    for n in needles:
        check(n in errs[0], "%r not in %r" % (n, errs[0]))
    note("rc=%d: %s" % (rc, errs[0]))


@test("start-up: port in use -> one 'error:' line naming the address, non-zero exit")
def t_port_in_use():
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as held:
        held.bind(("::1", 0))
        port = held.getsockname()[1]
        rc, lines = run_moonlet(["-a", "::1", "-p", str(port)])
        one_error(rc, lines, str(port), "::1")


@test("start-up: a second moonlet on a running one's port (-a ::1, and -a :: dual stack) -> "
      "exit 1, one line 'address in use' naming the address; the first one serves on")
def t_port_second_moonlet():
    with Server() as s:
        for addr in ("::1", "::"):
            rc, lines = run_moonlet(["-a", addr, "-p", str(s.port)])
            one_error(rc, lines, "[%s]:%d" % (addr, s.port))
            eq(rc, 1, "exit status")
            check("address in use" in [x for x in lines if "error:" in x][0].lower(),
                  "no 'address in use' in %r" % lines)
        with s.client() as c:
            d = request(CON, GET, 0x77, b"w", [".well-known", "core"])
            expect_msg(c.exchange(d), d, ACK, CONTENT, 0x77, b"w")


@test("start-up: nonexistent plugin -> error naming the path")
def t_no_plugin():
    path = "/nonexistent/dir/nothing.so"
    rc, lines = run_moonlet(["-a", "::1", "-p", "0"], plugins=[path])
    one_error(rc, lines, path)


@test("start-up: a file that is not a plugin -> error naming the path")
def t_not_plugin():
    d = tempfile.mkdtemp(prefix="moonlet-test-")
    try:
        path = os.path.join(d, "notaplugin.so")
        if os.path.exists("/etc/hostname"):
            shutil.copy("/etc/hostname", path)
        else:
            with open(path, "w") as f:
                f.write("not an ELF file\n")
        rc, lines = run_moonlet(["-a", "::1", "-p", "0"], plugins=[path])
        one_error(rc, lines, path)
    finally:
        shutil.rmtree(d)


@test("start-up: -o bogus=1 and -o ack_timeout=abc -> error")
def t_bad_options():
    for opt, key in (("bogus=1", "bogus"), ("ack_timeout=abc", "ack_timeout")):
        rc, lines = run_moonlet(["-a", "::1", "-p", "0", "-o", opt])
        one_error(rc, lines, key)


@test("SIGTERM -> exit status 0")
def t_sigterm():
    s = Server()
    with s.client() as c:
        serving(c)
    t0 = time.monotonic()
    rc = s.stop()
    eq(rc, 0, "exit status after SIGTERM")
    check(time.monotonic() - t0 < 3, "SIGTERM took %.1fs" % (time.monotonic() - t0))
    check(s.log.wait_for(r"ready udp://", 0), "ready line missing from the log")


@test("-s t_basic.greeting=Hi -> GET /t/conf 'Hi' (default 'none')")
def t_conf():
    with Server(sets=["t_basic.greeting=Hi"]) as s, s.client() as c:
        eq(get(c, "t/conf", 1).payload, b"Hi", "/t/conf with -s")
    with Server() as s, s.client() as c:
        eq(get(c, "t/conf", 1).payload, b"none", "/t/conf without -s")


@test("moonlet_conf_int: decimal, hex, LONG_MAX itself; out of range, trailing garbage and "
      "an absent key give the default (-1 here), never a clamped value")
def t_conf_int():
    sets = ["t_basic.n=42", "t_basic.h=0x10", "t_basic.max=9223372036854775807",
            "t_basic.over=9223372036854775808", "t_basic.under=-99999999999999999999",
            "t_basic.bad=12x"]
    want = {"n": b"42", "h": b"16", "max": b"9223372036854775807", "over": b"-1",
            "under": b"-1", "bad": b"-1", "absent": b"-1"}
    with Server(sets=sets) as s, s.client() as c:
        for i, (k, v) in enumerate(want.items()):
            d = request(CON, GET, 0x70 + i, b"c", ["t", "conf"], ["int=" + k])
            eq(expect_msg(c.exchange(d), d, ACK, CONTENT).payload, v, "conf_int(%s)" % k)


@test("-q still prints the ready line; -a 127.0.0.1 -p N serves IPv4 on N")
def t_quiet_v4():
    port = free_port("127.0.0.1")
    with Server(args=["-q"], addr="127.0.0.1", port=port) as s, s.client() as c:
        eq(s.port, port, "port in the ready line")
        serving(c)


if __name__ == "__main__":
    sys.exit(main())
