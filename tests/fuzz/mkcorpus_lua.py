#!/usr/bin/env python3
"""Writes the seed corpora tests/fuzz/corpus/cbor/ and tests/fuzz/corpus/json/ for the
moonlet.cbor.decode and moonlet.json.decode harnesses: valid items of every kind (RFC 8949
§3, RFC 8259), hostile ones (counts and lengths the input cannot hold, deep nesting, many
small tables) and malformed ones. Run from the repository root; the files are committed, this
only rebuilds them (the fuzzer's own finds, minimised with -merge=1, sit beside them)."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


CBOR = {
    # valid: every major type, every argument width, indefinite lengths, tags, floats
    "uint-widths.cbor": h("86 00 17 18 18 19 01 00 1a 00 01 00 00 1b 7f ff ff ff ff ff ff ff"),
    "uint64-max.cbor": h("1b ff ff ff ff ff ff ff ff"),
    "negint-widths.cbor": h("85 20 38 63 39 01 00 3a 00 01 00 00 3b 7f ff ff ff ff ff ff ff"),
    "negint-min-1.cbor": h("3b 80 00 00 00 00 00 00 00"),
    "bytes.cbor": h("83 40 43 00 01 ff 58 03 61 62 63"),
    "bytes-indef.cbor": h("5f 42 01 02 40 41 03 ff"),
    "text.cbor": h("83 60 63 61 62 63 78 02 c3 a9"),
    "text-indef.cbor": h("7f 62 61 62 61 63 ff"),
    "array-nested.cbor": h("83 01 82 02 03 9f 04 05 ff"),
    "map.cbor": h("a2 61 61 01 61 62 82 01 02"),
    "map-indef.cbor": h("bf 61 61 01 61 62 9f f5 ff ff"),
    "map-keys.cbor": h("a5 f6 01 f7 02 f9 7e 00 03 f9 3c 00 04 81 01 05"),
    "tags.cbor": h("84 c1 1a 51 4b 67 b0 d8 20 63 61 62 63 d2 80 d9 d9 f7 a0"),
    "floats.cbor": h("86 f9 3c 00 f9 7c 00 f9 7e 00 f9 00 01 fa 47 c3 50 00"
                     "fb 3f f1 99 99 99 99 99 9a"),
    "simple.cbor": h("84 f4 f5 f6 f7"),
    "senml.cbor": h("81 a4 21 68 75726e3a6465763a 00 64 74656d70 01 63 43656c 02 f9 4d 5a"),
    # hostile: counts and lengths the input cannot hold, depth, many small tables
    "forged-array-2e28.cbor": h("9a 10 00 00 00"),
    "forged-array-2e32.cbor": h("9b 00 00 00 01 00 00 00 00"),
    "forged-map-2e64.cbor": h("bb ff ff ff ff ff ff ff ff"),
    "forged-bytes-2e32.cbor": h("5b 00 00 00 01 00 00 00 00 00"),
    "forged-text-2e28.cbor": h("7a 10 00 00 00 61"),
    "forged-nested.cbor": h("9a 7f ff ff ff" * 8 + "a0"),
    "deep-33.cbor": h("81" * 33 + "00"),
    "deep-indef.cbor": h("9f" * 40),
    "deep-tags.cbor": h("c6" * 200 + "00"),
    "empty-maps.cbor": h("99 01 00") + b"\xa0" * 256,
    "empty-maps-indef.cbor": b"\x9f" + b"\xa0" * 256 + b"\xff",
    "table-keys.cbor": b"\xbf" + b"\xa0\x80" * 128 + b"\xff",
    "int-keys.cbor": h("b8 40") + b"".join(h("1a") + (i * 127).to_bytes(4, "big") + b"\x00"
                                           for i in range(64)),
    # malformed
    "empty.cbor": b"",
    "trailing.cbor": h("01 02"),
    "reserved-ai.cbor": h("1c"),
    "break-alone.cbor": h("ff"),
    "break-in-definite.cbor": h("82 01 ff"),
    "break-after-key.cbor": h("bf 01 ff"),
    "break-after-tag.cbor": h("c1 ff"),
    "chunk-wrong-type.cbor": h("5f 61 61 ff"),
    "chunk-indef.cbor": h("7f 7f ff ff"),
    "simple-f8.cbor": h("f8 20"),
    "simple-unassigned.cbor": h("e0"),
    "truncated-head.cbor": h("19 01"),
    "truncated-string.cbor": h("82 01 5a 00 00 01 00"),
}

JSON = {
    # valid
    "object.json": b'{"a": [1, 2.5, "x"], "b": null, "c": true, "d": false, "e": {}}',
    "senml.json": b'[{"bn":"urn:dev:ow:10e2073a01080063","n":"temp","u":"Cel","v":23.1}]',
    "escapes.json": b'"\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/"',
    "numbers.json": b"[0, -1, 1e300, -2.5E-3, 9007199254740993, 0.1]",
    "nan-inf.json": b"[NaN, Infinity, -Infinity, 0x10]",
    "string-commas.json": b'["a,b,[c],{d}", "\\"[,{"]',
    "deep-32.json": b"[" * 32 + b"]" * 32,
    "scalar.json": b"  42  ",
    # hostile
    "deep-33.json": b"[" * 33 + b"]" * 33,
    "deep-open.json": b'{"a":' * 200,
    "empty-objects.json": b"[" + b"{}," * 300 + b"{}]",
    "empty-arrays.json": b"[" + b"[]," * 300 + b"[]]",
    "keys.json": b"{" + b",".join(b'"k%d":[]' % i for i in range(200)) + b"}",
    "commas.json": b"[" + b"," * 500 + b"]",
    # malformed
    "empty.json": b"",
    "unterminated.json": b"[1, 2",
    "no-colon.json": b'{"a" 1}',
    "trailing.json": b"[1] x",
    "utf16.json": b"\x00[\x00]",
    "open-string.json": b'"abc',
    "bad-escape.json": b'"\\uZZZZ"',
    "bare-word.json": b"tru",
    "nul-in-string.json": b'"a\x00b"',
}


def write(name, seeds):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    for fname, data in seeds.items():
        with open(os.path.join(out, fname), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {out}")


write("cbor", CBOR)
write("json", JSON)
