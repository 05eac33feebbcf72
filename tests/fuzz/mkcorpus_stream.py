#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/stream/ of stream_fuzz.c (CoAP over TCP, RFC 8323):
FLAGS NCTL CTL[NCTL] then the bytes the peer sends, which open with a CSM in most seeds so
that mutation reaches requests. Run from the repository root; the files are committed, this
only rebuilds them."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from rfc8323 import frame  # noqa: E402  (the test suite's one RFC 8323 frame encoder)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "stream")

GET, POST, PUT = 1, 2, 3
CSM, PING, PONG, RELEASE, ABORT = 0xE1, 0xE2, 0xE3, 0xE4, 0xE5
URI_PATH, OBSERVE, BLOCK2, BLOCK1, SIZE1 = 11, 6, 23, 27, 60

# FLAGS bits (stream_fuzz.c)
CLOSE, SMALLBUF, BYTEWISE, RANDCUT, FIVES, KEEPALIVE, ANSWER, FBIG, SILENT = (
    1, 2, 4, 8, 12, 16, 32, 64, 128)
# CTL: size index (low nibble; 15 = the rest), action << 4, 128 = do not read
SEC1, SEC5, ANS1, ANSALL, NOTIFY, REP16, REP256, NODRAIN = (
    0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80)
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 16, 24, 64, 256, 1024]
REST = 15


def cut(n):
    """The CTL size index of an n-byte chunk."""
    return SIZES.index(n)


def req(method, path, token=b"\x01", options=(), payload=b""):
    opts = [(URI_PATH, s) for s in path.split("/") if s] + list(options)
    return frame(method, token, opts, payload)


def csm(mms=2048, bwt=True, extra=()):
    opts = ([(2, mms)] if mms is not None else []) + ([(4, b"")] if bwt else []) + list(extra)
    return frame(CSM, options=opts)


# NCTL's top bits: how the input ends (0: the peer closes)
UNLISTEN, STOP = 0x40, 0x80


def seed(stream, flags=0, ctl=(), end=0):
    return bytes([flags, len(ctl) | end]) + bytes(ctl) + stream


C = csm()
GET_S = req(GET, "s")
SEEDS = {
    "csm-get.bin": seed(C + GET_S),
    "csm-get-bytewise.bin": seed(C + GET_S, BYTEWISE),
    "csm-get-close.bin": seed(C + GET_S, CLOSE),
    "csm-ping.bin": seed(C + frame(PING, b"\x07\x08") + frame(PING, b"", [(2, b"")])),
    "csm-pong.bin": seed(C + frame(PONG, b"\x01"), KEEPALIVE, [cut(len(C)) | SEC5, REST]),
    "csm-release.bin": seed(C + GET_S + frame(RELEASE, options=[(2, "[::1]:5683")]) + GET_S),
    "csm-abort.bin": seed(C + frame(ABORT, options=[(2, 9)], payload=b"bye") + GET_S),
    "csm-oversize.bin": seed(C + bytes([0xF0, 0, 0, 0, 0, 0x01])),
    "csm-oversize-2049.bin": seed(C + frame(PUT, b"", [(URI_PATH, "u")],
                                            payload=b"x" * 2040)),
    "csm-tkl9.bin": seed(C + bytes([0x09, 0x01]) + bytes(9)),
    "bad-first.bin": seed(GET_S + C),
    "bad-first-silent.bin": seed(GET_S, SILENT),
    "csm-critical-option.bin": seed(csm(extra=[(9, b"")]) + GET_S),
    "csm-unknown-signal.bin": seed(C + frame(0xE6) + GET_S),
    "csm-reserved-class.bin": seed(C + frame(0x21, b"\x01") + GET_S),
    "csm-empty-response.bin": seed(C + frame(0) + frame(0x45, b"\x01", payload=b"x") + GET_S),
    "csm-format-error.bin": seed(C + frame(GET, b"\x01", body=b"\xff") + GET_S),
    "bert-block2-szx7.bin": seed(csm(mms=65536) + req(GET, "b", options=[(BLOCK2, 0x07)]) +
                                 req(GET, "b", b"\x02", [(BLOCK2, 0x17)]), FBIG),
    "bert-f-big.bin": seed(csm(mms=8192) + req(GET, "f", options=[(BLOCK2, 0x07)]), FBIG),
    "small-mms-block2.bin": seed(csm(mms=64, bwt=False) + req(GET, "b") +
                                 req(GET, "b", b"\x02", [(BLOCK2, 0x12)])),
    "default-mms-big.bin": seed(csm(mms=None, bwt=False) + req(GET, "b")),
    "block1-put.bin": seed(C + req(PUT, "u", options=[(BLOCK1, 0x0A), (SIZE1, 1100)],
                                   payload=b"a" * 1024) +
                           req(PUT, "u", options=[(BLOCK1, 0x12)], payload=b"b" * 76), FIVES),
    "bert-block1.bin": seed(C + req(PUT, "u", options=[(BLOCK1, 0x0F)], payload=b"c" * 1024) +
                            req(PUT, "u", options=[(BLOCK1, 0x17)], payload=b"d" * 10)),
    "observe.bin": seed(C + req(GET, "o", options=[(OBSERVE, b"")]) +
                        req(GET, "f", b"\x02", [(OBSERVE, b"")]) + req(POST, "o", b"\x03"),
                        0, [cut(len(C)), REST | NOTIFY, 1 | NOTIFY]),
    "observe-cancel-release.bin": seed(C + req(GET, "o", options=[(OBSERVE, b"")]) +
                                       req(GET, "o", options=[(OBSERVE, 1)]) +
                                       req(GET, "c", b"\x05", [(OBSERVE, b"")]) +
                                       frame(RELEASE), RANDCUT),
    "pipelined.bin": seed(C + b"".join(req(GET, p, bytes([i])) for i, p in
                                       enumerate(["s", "b", ".well-known/core", "nothere",
                                                  "s"]))),
    "deferred-paused.bin": seed(C + req(GET, "d", b"\x01") + req(GET, "d", b"\x02") +
                                req(GET, "d", b"\x03") + GET_S, ANSWER,
                                [REST | ANS1, REST | SEC5]),
    "deferred-deadline.bin": seed(C + req(GET, "d") + req(GET, "d", b"\x02") + GET_S,
                                  CLOSE),
    "deferred-burst.bin": seed(C + req(GET, "d") + req(GET, "d", b"\x02") +
                               req(GET, "s", b"\x03" * 8), ANSWER,
                               [cut(len(C)), REST | REP16, REST | ANSALL]),
    "slow-reader.bin": seed(C + req(GET, "b", b"\x01") * 12, SMALLBUF,
                            [cut(len(C)), cut(len(req(GET, "b"))) | NODRAIN | REP16, REST | NODRAIN]),
    "unlisten-observing.bin": seed(C + req(GET, "o", options=[(OBSERVE, b"")]) +
                                   req(GET, "d", b"\x02"), end=UNLISTEN),
    "stop-deferred.bin": seed(C + req(GET, "d") + req(GET, "c", b"\x02", [(OBSERVE, b"")]),
                              end=STOP),
    "csm-timeout.bin": seed(C[:3], 0, [cut(2) | SEC5, REST | SEC5]),
    "keepalive.bin": seed(C + GET_S, KEEPALIVE | SILENT, [REST | SEC5]),
    "ext-lengths.bin": seed(C + req(PUT, "u", payload=b"y" * 20) +
                            req(PUT, "u", payload=b"z" * 300), BYTEWISE),
    "cut-everywhere.bin": seed(C + req(GET, "s", bytes(8)) + frame(PING, b"\x01"),
                               0, list(range(15))),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s" % (len(SEEDS), OUT))


if __name__ == "__main__":
    main()
