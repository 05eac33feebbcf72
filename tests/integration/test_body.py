#!/usr/bin/env python3
"""test_body.py -- req.body against its contract (lua/README.md "The request"): the payload
decoded per its Content-Format on first read and cached; JSON integers kept (a JSON -> CBOR
round trip gives CBOR 01 for 1); CBOR tags kept through decode and encode; link-format as a
list of links; a body that cannot be decoded answered 4.00 (malformed), 4.13 (beyond
lua.memory) or 4.15 (no decoder) with the reason as diagnostic payload (RFC 7252 §5.5.2),
without running the rest of the handler. Script: tests/lua/body.lua; clients:
coap-client-notls and the raw UDP client of coaptest.py.

  python3 tests/integration/test_body.py --moonlet build/moonlet [-k NAME] [--list] [-v]

Every test starts its own server (`-a ::1 -p 0`) and the runner stops it by PID.
"""

import itertools
import json
import os
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACCEPT, ACK, CON, CONTENT, CONTENT_FORMAT, GET, POST, Server, check, code, coap_client,
    eq, error_code_of, expect_msg, hx, main, note, request, test)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.normpath(os.path.join(HERE, "..", "lua", "body.lua"))

BAD_REQUEST, TOO_LARGE, UNSUPPORTED = code(4, 0), code(4, 13), code(4, 15)
BLOCK1 = 27
TEXT, LINK, XML, OCTETS, JSON, CBOR, SENML_JSON, SENML_CBOR = 0, 40, 41, 42, 50, 60, 110, 112


def server(sets=()):
    return Server(plugins=[SCRIPT], sets=list(sets))


_mids = itertools.count(0x2000)


def call(c, method, path, payload=b"", ct=None, accept=None, mcode=None, options=()):
    """One CON request, fresh MID and token; the piggybacked answer (mcode if given)."""
    mid = next(_mids) & 0xFFFF
    tok = bytes([mid >> 8, mid & 255])
    opts = list(options)
    if ct is not None:
        opts.append((CONTENT_FORMAT, ct))
    if accept is not None:
        opts.append((ACCEPT, accept))
    if isinstance(payload, str):
        payload = payload.encode()
    d = request(CON, method, mid, tok, path, (), opts, payload)
    return expect_msg(c.exchange(d), d, ACK, mcode, mid, tok)


def post(c, path, payload, ct=None, **kw):
    return call(c, POST, path, payload, ct, **kw)


def echo(c, payload, ct):
    """POST /b/echo: the text body.lua's describe() gives for req.body ("ok ...")."""
    m = post(c, "b/echo", payload, ct, mcode=CONTENT)
    return m.payload.decode("utf-8", "replace")


def refused(c, payload, ct, mcode, *needles, path="b/echo"):
    """The body is answered mcode with a diagnostic payload holding every needle (and no
    Content-Format: §5.5.2); returns the reason."""
    m = post(c, path, payload, ct)
    why = m.payload.decode("utf-8", "replace")
    check(m.code == mcode, "%s %r: expected %s, got %r" % (
        ct, payload[:40], "%d.%02d" % (mcode >> 5, mcode & 31), m))
    check(m.opt(CONTENT_FORMAT) is None, "a diagnostic payload carries no Content-Format: %r"
          % m)
    for n in needles:
        check(n in why, "%r not in the reason %r" % (n, why))
    return why


def reached(c):
    return int(call(c, GET, "b/reached", mcode=CONTENT).payload)


def uri(s, path):
    return "coap://[::1]:%d/%s" % (s.port, path)


def lua_desc(v):
    """What body.lua's describe() prints for the Lua value the Python value v stands for."""
    if v is None or isinstance(v, bool):
        return {None: "nil", True: "true", False: "false"}[v]
    if isinstance(v, int):
        return "i%d" % v
    if isinstance(v, float):
        return "f%.17g" % v
    if isinstance(v, (bytes, str)):
        return "x" + (v.encode() if isinstance(v, str) else v).hex()
    if isinstance(v, list):
        v = {i: x for i, x in enumerate(v, 1)}
    return "{" + ",".join(sorted("%s=%s" % (lua_desc(k), lua_desc(x))
                                 for k, x in v.items())) + "}"


# =============================================================================================
# JSON (RFC 8259): integers stay integers
# =============================================================================================

@test("JSON -> CBOR round trip (coap-client-notls -t 50 -A 60): {\"id\":1} comes back as CBOR "
      "a1 62 69 64 01, the 1 an integer (01), not float32 1.0 (fa 3f800000)")
def t_json_cbor_roundtrip():
    with server() as s, tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.cbor")
        rc, _, err = coap_client("-m", "post", "-t", "50", "-A", "60", "-e", '{"id":1}',
                                 "-o", out, uri(s, "b/back"))
        check(rc == 0 and not error_code_of(err), "coap-client-notls: rc=%r %r" % (rc, err))
        with open(out, "rb") as f:
            got = f.read()
        eq(hx(got), "a1 62 69 64 01", "CBOR of {\"id\":1}")


@test("JSON numbers as Lua reads numerals: 1, -2, 2^63-1, -2^63 integers; 1.0, 1e3, 0.5, 1.1 "
      "and 2^63 (beyond int64) floats -- JSON in, CBOR out, byte for byte")
def t_json_numbers():
    doc = b"[1, -2, 9223372036854775807, -9223372036854775808, 1.0, 1e3, 0.5, 1.1, " \
          b"9223372036854775808, 0, -0]"
    want = ("8b 01 21 1b 7f ff ff ff ff ff ff ff 3b 7f ff ff ff ff ff ff ff fa 3f 80 00 00 "
            "fa 44 7a 00 00 fa 3f 00 00 00 fb 3f f1 99 99 99 99 99 9a fa 5f 00 00 00 00 00")
    with server() as s, s.client() as c:
        m = post(c, "b/back", doc, JSON, accept=CBOR, mcode=CONTENT)
        eq(m.opt_uint(CONTENT_FORMAT), CBOR, "Content-Format")
        eq(hx(m.payload), want, "CBOR")
        eq(echo(c, b'{"id":1,"f":1.0,"e":1E+3,"n":null,"t":true,"s":"\\u00e9\\ud83d\\ude00"}',
                JSON),
           "ok {x65=f1000,x66=f1,x6964=i1,x6e=null,x73=xc3a9f09f9880,x74=true}", "echo")


@test("moonlet.json.decode gives what req.body gives for JSON (integers kept), and SenML+JSON "
      "(110) decodes as JSON")
def t_json_same():
    docs = [b'{"id":1}', b'[1, 2.5, {"k": null}, [], {}]', b'"x"', b"-7", b"1e2",
            b'{"a":{"b":[1,[2,[3]]]}}', b'[18446744073709551616, -1.5e-7]']
    with server() as s, s.client() as c:
        for d in docs:
            got = post(c, "b/same", d, JSON, mcode=CONTENT).payload.decode()
            check(got.startswith("same "), "%r: %s" % (d, got))
        eq(echo(c, b'[{"bn":"dev/","n":"t","v":21}]', SENML_JSON),
           "ok {i1={x626e=x6465762f,x6e=x74,x76=i21}}", "SenML+JSON")


@test("malformed JSON -> 4.00 with yajl's reason and the byte; the rest of the handler does "
      "not run (moonlet.state.reached unchanged); coap-client-notls shows '4.00 JSON: ...'")
def t_json_malformed():
    cases = [
        (b'{"id":}', "JSON: parse error: unallowed token at this point in JSON text at byte 6"),
        (b'{"id":1} x', "JSON: parse error: trailing garbage at byte 9"),
        (b"[1,", "JSON: parse error: premature EOF at byte 3"),
        (b"", "JSON: parse error: premature EOF at byte 0"),
        (b"[01]", "JSON: parse error: after array element, I expect ',' or ']' at byte 2"),
        (b"NaN", "JSON: lexical error: invalid char in json text at byte 0"),
        (b"{'a':1}", "JSON: lexical error: invalid char in json text at byte 1"),
        (b"[1,]", "JSON: parse error: unallowed token at this point in JSON text at byte 3"),
        (b'"\\ud800"', "JSON: a high surrogate escape without its low one at byte 1"),
        (b'"\\udc00"', "JSON: a low surrogate escape without its high one at byte 1"),
        (b'"\\ud800\\u0041"', "JSON: a high surrogate escape without its low one at byte 1"),
        (b'"\xc0\x80"', "JSON: invalid UTF-8 at byte 1"),
        (b'"\xed\xa0\x80"', "JSON: invalid UTF-8 at byte 1"),
        (b"[" * 33 + b"]" * 33, "JSON: nested deeper than 32 at byte 32"),
    ]
    with server() as s, s.client() as c:
        for doc, why in cases:
            refused(c, doc, JSON, BAD_REQUEST, why)
        eq(reached(c), 0, "handler runs past req.body")
        rc, out, err = coap_client("-m", "post", "-t", "50", "-e", '{"id":}', uri(s, "b/echo"))
        eq(err.strip(), "4.00 JSON: parse error: unallowed token at this point in JSON text "
           "at byte 6", "coap-client-notls")
        echo(c, b"[1]", JSON)
        eq(reached(c), 1, "handler runs past req.body")
        check("script error" not in s.log.text() and " error: " not in s.log.text(),
              "a client's bad body is not a script error in the log:\n" + s.log.text())


# =============================================================================================
# CBOR (RFC 8949): every major type, tags kept
# =============================================================================================

CBOR_BACK = [  # (hex POSTed with Content-Format 60 and Accept 60: comes back the same)
    "a1 62 69 64 01",                                   # {"id": 1}
    "c1 1a 51 4b 67 b0",                                # tag 1 (epoch time), §3.4.2
    "83 c1 1a 51 4b 67 b0 d8 20 63 61 62 63 c2 49 01 00 00 00 00 00 00 00 00",  # with a bignum
    "d9 d9 f7 a1 61 61 c1 01",                          # self-described CBOR around a map
    "81 c6 c7 01",                                      # a tag of a tag
    "81 d8 18 42 61 62",                                # tag 24 over a byte string "ab"
    "81 db ff ff ff ff ff ff ff ff 00",                 # the largest tag number
    "81 43 ff 00 01",                                   # a byte string, not UTF-8
    "83 20 3b 7f ff ff ff ff ff ff ff f5",              # -1, -2^63, true
    "82 fb 3f f1 99 99 99 99 99 9a fa 3f 80 00 00",     # 1.1, 1.0
]


@test("CBOR tags kept: tagged items (epoch time, URI, bignum over a byte string, 55799, a tag "
      "of a tag, tag 2^64-1) POSTed as CBOR and returned as req.body come back byte for byte; "
      "so do byte strings that are not UTF-8, integers to -2^63, true, null")
def t_cbor_tags_back():
    with server() as s, s.client() as c:
        bad = []
        for h in CBOR_BACK:
            m = post(c, "b/back", bytes.fromhex(h), CBOR, accept=CBOR, mcode=CONTENT)
            if hx(m.payload) != h:
                bad.append("%s -> %s" % (h, hx(m.payload)))
        check(not bad, "\n".join(bad))
        eq(echo(c, bytes.fromhex("a2 61 74 c1 1a 51 4b 67 b0 61 62 d8 18 42 61 62"), CBOR),
           "ok {x62=tag24b(x6162),x74=tag1(i1363896240)}", "as the handler sees them")
        eq(echo(c, bytes.fromhex("9f 5f 41 61 ff 7f 61 62 ff bf ff 9f ff f4 f7 f9 3c 00 ff"),
                SENML_CBOR),
           "ok {i1=x61,i2=x62,i3={},i4={},i5=false,i7=f1}", "SenML+CBOR, indefinite lengths")


@test("the documented limit: a byte string that is valid UTF-8 and not a tag's content comes "
      "back as a text string (lua/README.md: a string is encoded as text when it is UTF-8)")
def t_cbor_bytes_text():
    with server() as s, s.client() as c:
        m = post(c, "b/back", bytes.fromhex("81 42 61 62"), CBOR, accept=CBOR, mcode=CONTENT)
        eq(hx(m.payload), "81 62 61 62", "untagged")


@test("malformed CBOR -> 4.00 'CBOR: what at byte N'; a map flooding the hash -> 4.00; the "
      "handler stops at req.body")
def t_cbor_malformed():
    flood = bytes([0xb9]) + (20000).to_bytes(2, "big") + b"".join(
        b"\x1a" + (32767 * (i + 3)).to_bytes(4, "big") + b"\xf6" for i in range(20000))
    with server() as s, s.client() as c:
        refused(c, b"", CBOR, BAD_REQUEST, "CBOR: unexpected end of input at byte 0")
        refused(c, bytes.fromhex("01 02"), CBOR, BAD_REQUEST,
                "CBOR: trailing bytes after the item at byte 1")
        refused(c, bytes.fromhex("9f 01"), SENML_CBOR, BAD_REQUEST,
                "CBOR: unexpected end of input at byte 2")
        refused(c, bytes.fromhex("c1"), CBOR, BAD_REQUEST, "CBOR: unexpected end of input")
        refused(c, bytes.fromhex("c6" * 40 + "00"), CBOR, BAD_REQUEST,
                "CBOR: nested deeper than 32 at byte 32")
        eq(reached(c), 0, "handler runs past req.body")
        m = upload(c, "b/echo", flood, CBOR)
        eq((m.code, m.payload), (BAD_REQUEST, b"CBOR: more than 256 keys in one map are "
                                 b"numbers beyond +-65536 at byte 1539"), "hash flood")


@test("moonlet.cbor.decode keeps dropping tags; decode(s, {tags = true}) keeps them as "
      "req.body does")
def t_cbor_decode_option():
    with server() as s, s.client() as c:
        eq(post(c, "b/cbor", bytes.fromhex("82 c1 01 d8 20 61 61"), mcode=CONTENT).payload,
           b"{i1=i1,i2=x61} {i1=tag1(i1),i2=tag32(x61)}", "plain, kept")


@test("moonlet.cbor.tag(n, v) and moonlet.cbor.tagged: tag 1, a bignum (bytes = true), a tag "
      "number above 2^63-1 given as a negative integer; a tagged table without an integer tag "
      "does not encode")
def t_cbor_tag_api():
    with server() as s, s.client() as c:
        eq(call(c, GET, "b/tag", mcode=CONTENT).payload.decode(),
           "83c11a514b67b0c249010000000000000000dbffffffffffffffff6178 false", "encoded")


# =============================================================================================
# link-format (RFC 6690 §2), text, octets, no Content-Format, unknown formats
# =============================================================================================

LINKS = ('</sensors/temp>;rt="temperature-c core.s";if=sensor;ct=0;obs,'
         '</b;x>;rt=p;RT=q;title="a \\"q\\", b; <c>";anchor="coap://h/",'
         '<coap://[::1]/x>;title*=UTF-8\'en\'%E2%82%AC')


@test("link-format: links with quoted values (escapes, ',' ';' '<' inside), several links, "
      "repeated attributes as lists (names lowercased), flags as true, an ext-value as "
      "written; returned as JSON (coap-client-notls -t 40 -A 50 -f)")
def t_links():
    want = [
        {"target": "/sensors/temp",
         "attrs": {"rt": "temperature-c core.s", "if": "sensor", "ct": "0", "obs": True}},
        {"target": "/b;x", "attrs": {"rt": ["p", "q"], "title": 'a "q", b; <c>',
                                     "anchor": "coap://h/"}},
        {"target": "coap://[::1]/x", "attrs": {"title*": "UTF-8'en'%E2%82%AC"}},
    ]
    with server() as s, s.client() as c, tempfile.TemporaryDirectory() as tmp:
        doc = os.path.join(tmp, "links")
        with open(doc, "w") as f:
            f.write(LINKS)      # -f: coap-client-notls decodes percent-encoding in -e
        rc, out, err = coap_client("-m", "post", "-t", "40", "-A", "50", "-f", doc,
                                   uri(s, "b/back"))
        check(rc == 0 and not error_code_of(err), "coap-client-notls: rc=%r %r" % (rc, err))
        eq(json.loads(out), want, "links")
        eq(echo(c, b"", LINK), "ok {}", "an empty document: no links")


@test("malformed link-format -> 4.00 'link-format: what at byte N' (whitespace outside quoted "
      "strings, trailing comma, unterminated quote, control characters, bad UTF-8); a link "
      "beyond the parser's limits -> 4.13")
def t_links_malformed():
    cases = [
        (b"</a>, </b>", "link-format: expected '<' at byte 5"),
        (b"</a> ;rt=x", "link-format: expected ';', ',' or the end after a link at byte 4"),
        (b"</a>,", "link-format: ',' at the end: a link must follow it at byte 4"),
        (b'</a>;t="x', "link-format: quoted string without its closing '\"' at byte 7"),
        (b'</a>;t="a\nb"', "link-format: a control character in a quoted string at byte 9"),
        (b"</a b>", "link-format: a character not allowed in a URI reference at byte 3"),
        (b'</a>;t="\xff"', "link-format: invalid UTF-8 at byte 8"),
        (b"</a>;=x", "link-format: expected an attribute name after ';' at byte 5"),
    ]
    with server() as s, s.client() as c:
        for doc, why in cases:
            refused(c, doc, LINK, BAD_REQUEST, why)
        many = b"</a>" + b"".join(b";a%d" % i for i in range(65))
        refused(c, many, LINK, TOO_LARGE, "link-format: the link at byte 0 has more than 64 "
                "attributes")
        eq(reached(c), 0, "handler runs past req.body")


@test("text/plain (0): the string, UTF-8 checked (RFC 7252 §12.3) -> 4.00 on invalid UTF-8; "
      "octets (42) and no Content-Format: the bytes as they came; xml (41), exi (47) and an "
      "unregistered number -> 4.15 (RFC 7252 §5.10.3)")
def t_text_octets_unknown():
    with server() as s, s.client() as c:
        eq(echo(c, "h\u00e9llo \U0001F600".encode(), TEXT), "ok x68c3a96c6c6f20f09f9880", "text")
        eq(echo(c, b"", TEXT), "ok x", "empty text")
        refused(c, b"ab\xc3", TEXT, BAD_REQUEST, "text/plain: invalid UTF-8 at byte 2")
        refused(c, b"\xed\xa0\x80", TEXT, BAD_REQUEST, "text/plain: invalid UTF-8 at byte 0")
        eq(echo(c, b"\x00\xff{", OCTETS), "ok x00ff7b", "octets")
        eq(echo(c, b"\x00\xff{", None), "ok x00ff7b", "no Content-Format")
        eq(echo(c, b"", None), "ok x", "no body at all")
        refused(c, b"<a/>", XML, UNSUPPORTED, "no decoder for Content-Format 41")
        refused(c, b"x", 47, UNSUPPORTED, "no decoder for Content-Format 47")
        refused(c, b"x", 65000, UNSUPPORTED, "no decoder for Content-Format 65000")
        eq(reached(c), 5, "handler runs past req.body")
        rc, out, err = coap_client("-m", "post", "-t", "41", "-e", "<a/>", uri(s, "b/echo"))
        eq(err.strip(), "4.15 no decoder for Content-Format 41", "coap-client-notls")


# =============================================================================================
# the cache, the error object, after a wait, memory
# =============================================================================================

@test("the cache: req.body read twice is decoded once -- the same table both times, a change "
      "through one seen through the other")
def t_cache():
    with server() as s, s.client() as c:
        eq(post(c, "b/twice", b'{"a":1}', JSON, mcode=CONTENT).payload, b"same yes", "JSON")
        eq(post(c, "b/twice", bytes.fromhex("a1 61 61 01"), CBOR, mcode=CONTENT).payload,
           b"same yes", "CBOR")
        eq(post(c, "b/twice", b"</a>", LINK, mcode=CONTENT).payload, b"same yes", "links")


@test("the error is an object a handler may catch: code 4.00, message, tostring '4.00 ...'; "
      "read again, the same object")
def t_caught():
    with server() as s, s.client() as c:
        eq(post(c, "b/caught", b'{"a":', JSON, mcode=CONTENT).payload.decode(),
           "4.00|JSON: parse error: premature EOF at byte 5|4.00 JSON: parse error: premature "
           "EOF at byte 5|true", "caught")
        eq(post(c, "b/caught", b"x", XML, mcode=CONTENT).payload.decode(),
           "4.15|no decoder for Content-Format 41|4.15 no decoder for Content-Format 41|true",
           "caught 4.15")
        eq(post(c, "b/caught", b"[1]", JSON, mcode=CONTENT).payload, b"read {i1=i1}", "read")


@test("read after moonlet.sleep (a detached request, the deferred answer): decoded, or 4.00 "
      "through the same path")
def t_after_wait():
    with server() as s, s.client() as c:
        eq(post(c, "b/later", b'{"a":[1]}', JSON, mcode=CONTENT).payload, b"ok {x61={i1=i1}}",
           "decoded after a wait")
        refused(c, b'{"a":', JSON, BAD_REQUEST, "JSON: parse error: premature EOF at byte 5",
                path="b/later")


def upload(c, path, body, ct, szx=6):
    """A Block1 upload (RFC 7959 §2.5) in blocks of 16 << szx bytes: the final answer."""
    size = 16 << szx
    n = (len(body) + size - 1) // size
    for num in range(n):
        more = num < n - 1
        o = [(BLOCK1, num << 4 | (8 if more else 0) | szx)]
        m = post(c, path, body[num * size:(num + 1) * size], ct, options=o)
        if more:
            check(m.code == code(2, 31), "block %d: %r" % (num, m))
        else:
            return m


@test("a body whose value exceeds lua.memory (1 MiB): 200 KB of JSON [{},...] uploaded by "
      "coap-client-notls -f, and 200 KB of CBOR, an array of empty maps -> 4.13 'not enough memory'; the "
      "script serves the next request")
def t_memory():
    n = 70000
    with server(sets=["lua.memory=1048576"]) as s, s.client() as c, \
            tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big.json")
        with open(big, "wb") as f:
            f.write(b"[" + b"{}," * n + b"{}]")
        rc, out, err = coap_client("-m", "post", "-t", "50", "-f", big, uri(s, "b/echo"),
                                   timeout=30.0)
        check(err.startswith("4.13 JSON: not enough memory (lua.memory) at byte "),
              "coap-client-notls: rc=%r out=%r err=%r" % (rc, out[:80], err))
        m = upload(c, "b/echo", b"\x9f" + b"\xa0" * 200000 + b"\xff", CBOR)
        eq(m.code, TOO_LARGE, "CBOR: %r" % m)
        check(m.payload.startswith(b"CBOR: not enough memory (lua.memory) at byte "),
              "reason: %r" % m.payload)
        eq(echo(c, b"[1]", JSON), "ok {i1=i1}", "the next request")
        note("JSON: %s" % err.strip())


if __name__ == "__main__":
    sys.exit(main())
