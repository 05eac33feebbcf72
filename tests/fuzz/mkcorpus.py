#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/msg/: valid requests and responses with options
on the nibble boundaries (RFC 7252 §3.1), and the malformed examples of MALFORMED.md (H and O
rows, same hex). Run from the repository root; the files are committed, this only rebuilds
them."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from coaptest import encode  # noqa: E402  (the one CoAP encoder of the test suite)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "msg")


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


def msg(mtype, code, mid=0xABCD, token=b"", opts=(), payload=b""):
    return encode(mtype, code, mid, token, opts, payload)


CON, NON, ACK, RST = 0, 1, 2, 3
GET, POST, PUT, DELETE, FETCH = 1, 2, 3, 4, 5
TIME = (11, b"time")
HDR = "40 01 ab cd "
HDR_TIME = HDR + "b4 74696d65 "

SEEDS = {
    # valid messages
    "get-uri-path.bin": msg(CON, GET, opts=[TIME]),
    "get-token8-path-query.bin": msg(CON, GET, token=bytes(range(1, 9)),
                                     opts=[(11, b"sensors"), (11, b"temp"), (15, b"unit=c")]),
    "non-get-observe-accept.bin": msg(NON, GET, token=b"\x11\x22",
                                      opts=[(6, b""), TIME, (17, b"\x32")]),
    "put-content-format-payload.bin": msg(CON, PUT, token=b"\x01",
                                          opts=[TIME, (12, b"\x32")], payload=b'{"a":1}'),
    "post-block1-size1.bin": msg(CON, POST, token=b"\x0a\x0b\x0c\x0d",
                                 opts=[(11, b"up"), (27, b"\x08"), (60, b"\x04\x00")],
                                 payload=bytes(16)),
    "get-block2-szx6.bin": msg(CON, GET, opts=[TIME, (23, b"\x16")]),
    "delete.bin": msg(NON, DELETE, token=b"\x99", opts=[TIME]),
    "fetch-payload.bin": msg(CON, FETCH, opts=[TIME, (12, b"\x3c")], payload=b"\xa1\x01\x02"),
    "get-uri-host-port.bin": msg(CON, GET, opts=[(3, b"localhost"), (7, b"\x16\x33"), TIME]),
    "put-if-match-etag.bin": msg(CON, PUT, opts=[(1, b"\x01\x02"), (1, b""), (4, b"\xee"),
                                                 TIME], payload=b"x"),
    "echo-request-tag-no-response.bin": msg(NON, GET, opts=[TIME, (252, bytes(8)),
                                                            (258, b"\x02"), (292, b"\x07")]),
    "response-205-content.bin": msg(ACK, 0x45, token=b"\x11", opts=[(12, b"")],
                                    payload=b"12:00"),
    "ping.bin": msg(CON, 0),
    "rst.bin": msg(RST, 0),
    "numbers-12-13-268-269.bin": msg(CON, GET, opts=[(12, b""), (25, b""), (293, b""),
                                                     (562, b"")]),
    "number-65535.bin": msg(CON, GET, opts=[(65535, b"\x01")]),
    "lengths-12-13.bin": msg(CON, GET, opts=[(11, b"a" * 12), (11, b"b" * 13)]),
    "lengths-268-269.bin": msg(CON, GET, opts=[(11, b"c" * 268), (15, b"d" * 269)]),
    "many-zero-length-options.bin": msg(NON, GET, opts=[(100, b"")] * 100),
    # malformed, MALFORMED.md "Message layer"
    "h1-short.bin": h("40 01"),
    "h2-version-0.bin": h("00 01 ab cd"),
    "h3-version-2.bin": h("80 01 ab cd"),
    "h4-tkl-9.bin": h("49 01 ab cd") + bytes(range(9)),
    "h5-tkl-15.bin": h("4f 01 ab cd"),
    "h6-tkl-13-no-extension.bin": h("4d 01 ab cd"),
    "h7-tkl-13-token-13.bin": h("4d 01 ab cd 00") + bytes(range(13)),
    "h8-tkl-8-two-bytes.bin": h("48 01 ab cd 11 22"),
    "h12-empty-with-payload.bin": h("40 00 ab cd ff 41"),
    "h13-empty-with-options.bin": h("40 00 ab cd b4 74696d65"),
    # malformed, MALFORMED.md "Options"
    "o1-delta-15.bin": h(HDR + "f1 41"),
    "o2-length-15.bin": h(HDR + "1f"),
    "o3-delta-13-no-extension.bin": h(HDR_TIME + "d0"),
    "o4-delta-14-one-byte.bin": h(HDR_TIME + "e0 01"),
    "o5-length-13-no-extension.bin": h(HDR_TIME + "0d"),
    "o6-length-14-one-byte.bin": h(HDR_TIME + "0e 01"),
    "o7-length-past-end.bin": h(HDR + "b5 74 69 6d"),
    "o8-number-65804.bin": h(HDR + "e0 ff ff"),
    "o9-number-wrap.bin": h(HDR + "e0 fe f2 c0"),
    "o10-marker-no-payload.bin": h(HDR_TIME + "ff"),
    "o11-critical-99.bin": h(HDR_TIME + "d0 4b"),
    "o15-oscore.bin": h(HDR + "90 24 74696d65"),
    "o16-two-accept.bin": h(HDR_TIME + "61 00 01 00"),
    "o20-uri-host-empty.bin": h(HDR + "30 84 74696d65"),
    "o28-reserved-136.bin": h("40 03 ab cd 83 666f6f 34 74696d65 d0 70 ff 41"),
    "o29-proxy-uri.bin": msg(CON, GET, opts=[(35, b"coap://example.org/time")]),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {OUT}")
