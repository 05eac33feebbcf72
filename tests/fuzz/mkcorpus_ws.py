#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/ws/ of ws_fuzz.c (CoAP over WebSockets, RFC 8323
§4): FLAGS NCTL CTL[NCTL] then the bytes the client sends -- an HTTP/1.1 request head, then
WebSocket frames. Client frames are masked (RFC 6455 §5.3), most with the key 0 so that the
payload is the CoAP message as it is and mutation reaches it. Run from the repository root;
the files are committed, this only rebuilds them."""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from coaptest import encode_options  # noqa: E402  (the one option encoder of the test suite)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "ws")

GET, POST, PUT = 1, 2, 3
CSM, PING, PONG, RELEASE, ABORT = 0xE1, 0xE2, 0xE3, 0xE4, 0xE5
URI_PATH, OBSERVE, BLOCK2, BLOCK1, SIZE1 = 11, 6, 23, 27, 60
CONT, TEXT, BINARY, CLOSE_OP, WPING, WPONG = 0, 1, 2, 8, 9, 10

# FLAGS bits (ws_fuzz.c)
CLOSE, SMALLBUF, BYTEWISE, RANDCUT, FIVES, KEEPALIVE, ANSWER, VARIANT, SILENT = (
    1, 2, 4, 8, 12, 16, 32, 64, 128)
# CTL: size index (low nibble; 15 = the rest), action << 4, 128 = do not read
SEC1, SEC5, ANS1, ANSALL, NOTIFY, REP16, HALF, NODRAIN = (
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80)
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 16, 24, 64, 256, 1024]
REST = 15
# NCTL's top bits: how the input ends (0: the client closes; METRICS_ELSEWHERE too, with
# /metrics served on 127.0.0.1 only)
UNLISTEN, STOP, METRICS_ELSEWHERE = 0x40, 0x80, 0xC0

KEY = "dGhlIHNhbXBsZSBub25jZQ=="     # RFC 6455 §1.3's example


def cut(n):
    """The CTL size index of an n-byte chunk."""
    return SIZES.index(n)


def head(path="/.well-known/coap", method="GET", host="example.com", upgrade="websocket",
         connection="Upgrade", key=KEY, version="13", protocol="coap", extra=(),
         version_line="HTTP/1.1"):
    lines = ["%s %s %s" % (method, path, version_line)]
    for name, val in (("Host", host), ("Upgrade", upgrade), ("Connection", connection),
                      ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", version),
                      ("Sec-WebSocket-Protocol", protocol)):
        if val is not None:
            lines.append("%s: %s" % (name, val))
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def plain(path, host="example.com", method="GET", extra=()):
    lines = ["%s %s HTTP/1.1" % (method, path)] + (["Host: " + host] if host else [])
    return ("\r\n".join(lines + list(extra)) + "\r\n\r\n").encode()


def ws(op, payload=b"", fin=True, key=b"\0\0\0\0", masked=True, length=None, rsv=0):
    """RFC 6455 §5.2: a client's frame (masked with key unless masked is False)."""
    n = len(payload) if length is None else length
    h = bytes([(0x80 if fin else 0) | rsv << 4 | op])
    m = 0x80 if masked else 0
    if n < 126:
        h += bytes([m | n])
    elif n < 65536:
        h += bytes([m | 126]) + struct.pack(">H", n)
    else:
        h += bytes([m | 127]) + struct.pack(">Q", n)
    if not masked:
        return h + payload
    return h + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def coap(code, token=b"", options=(), payload=b"", first=None):
    """§4.4: the TCP header with Len 0 and no extended length."""
    body = encode_options(options) + (b"\xff" + payload if payload else b"")
    return bytes([len(token) if first is None else first, code]) + token + body


def req(method, path, token=b"\x01", options=(), payload=b""):
    opts = [(URI_PATH, s) for s in path.split("/") if s] + list(options)
    return coap(method, token, opts, payload)


def csm(mms=2048, bwt=True):
    return coap(CSM, options=([(2, mms)] if mms is not None else []) + ([(4, b"")] if bwt else []))


def binary(msg, **kw):
    return ws(BINARY, msg, **kw)


def seed(stream, flags=0, ctl=(), end=0):
    return bytes([flags, len(ctl) | end]) + bytes(ctl) + stream


H0 = head()
H = head(extra=["User-Agent: " + "m" * (256 - len(H0) - 14)])   # 256 bytes: CTL 13 cuts it
assert len(H) == 256
HEAD = SIZES.index(256)
C = binary(csm())
GET_S = binary(req(GET, "s"))
GET_B = req(GET, "b", b"\x02")
GET_B16 = binary(req(GET, "b", b"123456"))     # 16 bytes: 16 of them are a 256-byte chunk
assert len(GET_B16) == 16

SEEDS = {
    # the upgrade, then the CoAP conversation
    "upgrade-csm-get.bin": seed(H + C + GET_S, 0, [HEAD, REST]),
    "upgrade-same-write.bin": seed(H + C + GET_S + binary(GET_B)),
    "upgrade-bytewise.bin": seed(H + C + GET_S, BYTEWISE | CLOSE),
    "upgrade-randcut.bin": seed(H + C + GET_S + binary(req(GET, ".well-known/core", b"\x03")),
                                RANDCUT),
    "upgrade-query-keepalive-list.bin": seed(
        head(path="/.well-known/coap?x=1", upgrade="h2c, WebSocket",
             connection="keep-alive, Upgrade", protocol="mqtt, coap") + C + GET_S),
    "upgrade-origin-ok.bin": seed(head(extra=["Origin: https://ok.example"]) + C + GET_S,
                                  VARIANT),
    "upgrade-masked-key.bin": seed(H + binary(csm(), key=b"\x12\x34\x56\x78") +
                                   binary(req(GET, "s"), key=b"\xa5\x5a\xff\x01")),
    "fragmented-ping.bin": seed(H + C + ws(BINARY, GET_B[:2], fin=False) +
                                ws(WPING, b"hi") + ws(CONT, GET_B[2:4], fin=False) +
                                ws(WPING) + ws(CONT, GET_B[4:]) + GET_S),
    "close-frame.bin": seed(H + C + GET_S + ws(CLOSE_OP, struct.pack(">H", 1000) + b"bye") +
                            GET_S),
    "close-bad.bin": seed(H + C + ws(CLOSE_OP, b"\x03")),
    "text-frame.bin": seed(H + C + ws(TEXT, b"GET /s") + GET_S, SILENT),
    "unmasked-frame.bin": seed(H + C + binary(req(GET, "s"), masked=False)),
    "huge-length.bin": seed(H + C + ws(BINARY, length=1 << 62) + b"\0" * 16),
    "too-large-2049.bin": seed(H + C + binary(req(PUT, "u", payload=b"x" * 2044))),
    "rsv-bit.bin": seed(H + C + binary(req(GET, "s"), rsv=4)),
    "reserved-opcode.bin": seed(H + C + ws(3, b"x") + GET_S),
    "continuation-alone.bin": seed(H + C + ws(CONT, b"\x00\x01") + GET_S),
    "ping-too-long.bin": seed(H + C + ws(WPING, b"p" * 126) + GET_S),
    "ping-fragmented.bin": seed(H + C + ws(WPING, b"p", fin=False) + GET_S),
    "empty-binary.bin": seed(H + C + binary(b"") + GET_S),
    "format-len-nibble.bin": seed(H + C + binary(b"\x31\x01\xb1s") + GET_S),
    "format-tkl9.bin": seed(H + C + binary(b"\x09\x01" + bytes(9))),
    "format-short-token.bin": seed(H + C + binary(b"\x04\x01\x01")),
    "no-csm-first.bin": seed(H + GET_S + C, SILENT),
    # stream layer behind the WebSocket
    "signals.bin": seed(H + C + binary(coap(PING, b"\x07")) + binary(coap(PONG)) +
                        binary(coap(RELEASE, options=[(2, "[::1]:8683")])) + GET_S),
    "abort.bin": seed(H + C + binary(coap(ABORT, options=[(2, 9)], payload=b"bye")) + GET_S,
                      SILENT),
    "bad-csm-critical.bin": seed(H + binary(coap(CSM, options=[(9, b"")])) + GET_S),
    "block2.bin": seed(H + binary(csm(mms=64, bwt=False)) + binary(GET_B) +
                       binary(req(GET, "b", b"\x03", [(BLOCK2, 0x12)]))),
    "bert.bin": seed(H + binary(csm(mms=8192)) + binary(req(GET, "b", options=[(BLOCK2, 0x07)])),
                     0, [HEAD, REST]),
    "block1-put.bin": seed(H + C + binary(req(PUT, "u", options=[(BLOCK1, 0x0A), (SIZE1, 1100)],
                                              payload=b"a" * 1024)) +
                           binary(req(PUT, "u", options=[(BLOCK1, 0x12)], payload=b"b" * 76)),
                           FIVES),
    "observe-notify.bin": seed(H + C + binary(req(GET, "o", options=[(OBSERVE, b"")])) +
                               binary(req(GET, "f", b"\x02", [(OBSERVE, b"")])) +
                               binary(req(POST, "o", b"\x03")),
                               0, [REST | NOTIFY, 5 | NOTIFY]),
    "deferred.bin": seed(H + C + binary(req(GET, "d", b"\x01")) + binary(req(GET, "d", b"\x02")) +
                         binary(req(GET, "d", b"\x03")) + GET_S, ANSWER,
                         [REST | ANS1, REST | SEC5]),
    "deferred-deadline-close.bin": seed(H + C + binary(req(GET, "d")) + GET_S, CLOSE),
    "burst.bin": seed(H + C + GET_S + ws(WPING) + GET_S, 0,
                       [HEAD, cut(8), cut(4), cut(len(GET_S)) | REP16, REST | REP16]),
    "slow-reader.bin": seed(H + C + binary(GET_B) * 12, SMALLBUF,
                            [HEAD, cut(1024) | NODRAIN, REST | NODRAIN]),
    "bert-burst.bin": seed(H + binary(csm(mms=65536)) + GET_B16 * 16, 0,
                           [HEAD, cut(len(binary(csm(mms=65536)))), cut(256) | REP16]),
    "burst-unread.bin": seed(H + C + GET_B16 * 16 + GET_S, 0,
                             [HEAD, cut(8), cut(4), cut(256) | REP16 | NODRAIN,
                              cut(256) | REP16 | NODRAIN, REST | NODRAIN | SEC5]),
    "slow-reader-burst.bin": seed(H + C + GET_B16 * 16 + GET_S, SMALLBUF,
                                  [HEAD, cut(8), cut(4), cut(256) | REP16 | NODRAIN,
                                   REST | NODRAIN]),
    "deferred-answer-closed.bin": seed(H + C + binary(req(GET, "d")) +
                                       binary(req(GET, "d", b"\x02")), CLOSE | ANSWER),
    "keepalive.bin": seed(H + C + GET_S, KEEPALIVE | SILENT, [REST | SEC5]),
    "unlisten.bin": seed(H + C + binary(req(GET, "o", options=[(OBSERVE, b"")])) +
                         binary(req(GET, "d", b"\x02")), end=UNLISTEN),
    "stop.bin": seed(H + C + binary(req(GET, "d")) + binary(req(GET, "c", b"\x02",
                                                                 [(OBSERVE, b"")])), end=STOP),
    "unlisten-before-upgrade.bin": seed(H[:40], end=UNLISTEN),
    # the upgrade's deadline, a head cut anywhere
    "handshake-timeout.bin": seed(H[:30], SILENT),
    "handshake-slow.bin": seed(H + C, 0, [cut(64) | SEC1, cut(64) | SEC1, cut(64) | SEC1,
                                          REST | SEC1]),
    "cut-everywhere.bin": seed(H + C + GET_S, 0, list(range(15))),
    # /metrics
    "metrics.bin": seed(plain("/metrics")),
    "metrics-smallbuf.bin": seed(plain("/metrics"), SMALLBUF, [REST | NODRAIN | SEC1]),
    "metrics-token.bin": seed(plain("/metrics?x", extra=["Authorization: Bearer s3cret"]),
                              VARIANT),
    "metrics-token-wrong.bin": seed(plain("/metrics", extra=["Authorization: bearer s3creT"]),
                                    VARIANT),
    "metrics-elsewhere.bin": seed(plain("/metrics"), end=METRICS_ELSEWHERE),
    "metrics-smallbuf-junk.bin": seed(plain("/metrics", extra=["X-Pad: " + "p" * 11]) +
                                      b"junk" * 1024, SMALLBUF,
                                      [cut(64) | NODRAIN, cut(1024) | NODRAIN,
                                       cut(1024) | NODRAIN, REST]),
    "metrics-after-coap.bin": seed(plain("/metrics") + C + GET_S),
    # refusals
    "refuse-no-host.bin": seed(head(host=None) + C),
    "refuse-version-8.bin": seed(head(version="8") + C),
    "refuse-no-protocol.bin": seed(head(protocol=None)),
    "refuse-other-protocol.bin": seed(head(protocol="mqtt")),
    "refuse-no-key.bin": seed(head(key=None)),
    "refuse-bad-key.bin": seed(head(key="short")),
    "refuse-no-upgrade.bin": seed(head(upgrade=None, connection="close")),
    "refuse-long-target.bin": seed(head(path="/.well-known/coap?" + "q" * 2100)),
    "refuse-9k-head.bin": seed(head(extra=["X-Pad: " + "p" * 9216])),
    "refuse-post.bin": seed(head(method="POST")),
    "refuse-other-path.bin": seed(head(path="/coap")),
    "refuse-origin.bin": seed(head(extra=["Origin: https://evil.example"]), VARIANT),
    "upgrade-http10.bin": seed(head(version_line="HTTP/1.0") + C + GET_S),
    "refuse-garbage-head.bin": seed(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" +
                                    b"\r\n\r\n"),
    "refuse-bad-method.bin": seed(b"BREW /.well-known/coap HTTP/1.1\r\nHost: x\r\n\r\n"),
    "garbage.bin": seed(bytes(range(256))),
    "refuse-pipelined.bin": seed(head(path="/") + head(), SMALLBUF),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), OUT))


if __name__ == "__main__":
    main()
