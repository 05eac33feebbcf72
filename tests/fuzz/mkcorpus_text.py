#!/usr/bin/env python3
"""Writes the seeds of tests/fuzz/corpus/linkfmt/ (query strings, '&' between Uri-Query
items) and tests/fuzz/corpus/path/ (CoAP requests, and path strings with NUL between
them; the last of several is also the attribute text): the R13-R19 rows of MALFORMED.md,
the filters of tests/integration/test_discovery.py and the README's examples. Run from the
repository root; the files are committed, this only rebuilds the seeds (what a fuzzing run
added is kept)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from coaptest import encode, request  # noqa: E402  (the one CoAP encoder of the test suite)

CON, NON = 0, 1
GET, POST = 1, 2
URI_PATH, CONTENT_FORMAT, ACCEPT, NO_RESPONSE = 11, 12, 17, 258
WKC = [".well-known", "core"]

# the filters of test_discovery.py, in its order
DISCOVERY = [
    "rt=temperature", "rt=c", "rt=temperature c", "if=sensor", "if=core.s", "ct=50", "ct=0",
    "sz=12", "obs", 'title=Temp, "inside"', "href=/sensors/hum", "href=/sensors/*",
    "href=/many/r0*", "foo=bar", "x-flag", "rt=temp*", "title=Filler*", "rt=*",
    "href=/sensors/temp", "href=/secret", "rt=temperature&if=sensor", "nosuch=1",
]

LINKFMT = {
    "empty-whole-document.txt": "",
    "r13-rt-without-value.txt": "rt",
    "r14-href-star.txt": "href=*",
    "r15-href-prefix.txt": "href=/t*",
    "r16-percent-garbage-255.txt": "rt=" + "%zz" * 84,
    "r16-percent-encoded-href.txt": "href=/a%2Fb",
    "r16-percent-encoded-title.txt": "title=Temp%2C%20%22inside%22",
    "r17-breakout-rt.txt": 'rt=x",</secret>;rt="y',
    "r18-href-gt-comma-crlf.txt": "href=/a>b&href=/a,b&href=/a\r\nb",
    "r19-title-filler-all.txt": "title=Filler*",
    "readme-rt-temp-star.txt": "rt=temp*",
    "readme-href-a-star.txt": "href=/a/*",
    "readme-several-items.txt": "rt=temp*&obs&ct=0&if=sensor",
    "ct-without-value.txt": "ct",
    "ct-65535.txt": "ct=65535",
    "sz-long-max.txt": "sz=2147483647",
    "obs-with-value.txt": "obs=1",
    "extra-empty-value.txt": "empty=&note=",
    "extra-repeated-name.txt": "foo=second*",
    "extra-quote-backslash.txt": 'q=\\o/',
    "href-nul-byte.txt": "href=/nul%00byte",
    "href-root.txt": "href=/",
    "empty-items.txt": "&&=&*",
    "forty-items.txt": "&".join(["obs"] * 40),
    "utf8-title.txt": "title=caf\u00e9",
}
for i, f in enumerate(DISCOVERY):
    LINKFMT["discovery-%02d.txt" % i] = f


def get(path, query=(), options=(), mtype=CON, token=b"\x01"):
    return request(mtype, GET, 0xABCD, token, path, query, options)


def segments(n, length=1):
    return [bytes([0x61 + i % 26]) * length for i in range(n)]


PATH = {
    # (a) requests
    "get-sensors-temp.bin": get("sensors/temp"),
    "get-root.bin": get([]),
    "get-wkc-rt-temp-star-obs.bin": get(WKC, ["rt=temp*", "obs"]),
    "get-wkc-query-with-amp.bin": get(WKC, ["title=a&b", "href=*"]),
    "r2-dotdot.bin": get(["a", ".."]),
    "r3-dot.bin": get(["."]),
    "r4-one-segment-a-slash-b.bin": get(["a/b"]),
    "r5-nul-in-segment.bin": get([b"ti\x00me"]),
    "r5-nul-byte-resource.bin": get([b"nul\x00byte"]),
    "r6-invalid-utf8.bin": get([b"\xff\xfe"]),
    "r7-33-segments.bin": get(segments(33)),
    "33-queries.bin": get(WKC, ["obs"] * 33),
    "empty-segment.bin": get(["sensors", b""]),
    "segment-255.bin": get([b"s" * 255]),
    "segment-256-too-long.bin": encode(CON, GET, 0xABCD, b"", [(URI_PATH, b"s" * 256)]),
    "ct-accept-no-response.bin": get("sensors/temp", options=[(CONTENT_FORMAT, b"\x32"),
                                                              (ACCEPT, b"\x00\x32"),
                                                              (NO_RESPONSE, b"\x02")]),
    "two-content-formats.bin": get("x", options=[(CONTENT_FORMAT, b"\x00\x00\x00"),
                                                 (CONTENT_FORMAT, b"\x32")]),
    "post-payload.bin": request(NON, POST, 0xABCD, b"", "a/b", [], [], b"payload"),
    # (b) path strings; NUL separates several, the last of several is the attribute text
    "path-sensors-temp.txt": b"/sensors/temp",
    "path-root.txt": b"/",
    "path-encoded-slash-and-literal.txt": b"/a%2Fb\x00/a/b",
    "path-duplicate-after-decoding.txt": b"/a/b\x00/a/%62\x00/A/b",
    "path-space-utf8-nul.txt": b"/x%20y\x00/caf%C3%A9\x00/caf\xc3\xa9\x00/n%00",
    "path-kept-characters.txt": b"/-._~!$&'()*+=:@\x00/%2d%2E%5f",
    "path-lowercase-hex.txt": b"/%c3%a9%2c%3b",
    "path-bad-tree-test.txt": b"\x00".join([b"", b"a", b"//", b"/a//b", b"/a/", b"/%zz",
                                            b"/%4", b"/a b", b"/a?b", b"/a#b", b"/<x>",
                                            b'/a"b']),
    "r18-gt-comma-crlf.txt": b"/a>b\x00/a,b\x00/a\r\nb\x00/a\rb\x00/ok",
    "r17-attribute-breakout.txt": b'/x\x00x",</secret>;rt="y',
    "attr-two-tokens.txt": b"/p\x00/q\x00temperature c",
    "attr-title-quotes.txt": b'/p\x00Temp, "inside" \\',
    "attr-double-space.txt": b"/p\x00a  b",
    "r7-33-segments.txt": b"".join(b"/" + s for s in segments(33)),
    "boundary-32-segments-255.txt": b"".join(b"/" + s for s in segments(32, 255)),
}

for sub, seeds in (("linkfmt", LINKFMT), ("path", PATH)):
    out = os.path.join(HERE, "corpus", sub)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    print(f"{len(seeds)} seeds in {out}")
