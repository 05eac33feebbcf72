#!/usr/bin/env python3
"""test_discovery.py -- /.well-known/core (RFC 6690) through libcoap's coap-client-notls:
every filter of §4.1, prefix wildcards, multi-valued attributes, quoting, hidden resources,
a document larger than one block; and multicast discovery (RFC 7252 §8), which runs
tests/integration/mcast_netns.py in a network namespace of its own (`unshare -n`, root).
Run like test_core.py:

    python3 tests/integration/test_discovery.py --moonlet build/moonlet \\
        --plugins build/plugins/hello.so build/tests/t_basic.so

The resources are tests/lua/discovery_res.lua (its header lists them).
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CON, CONTENT, CONTENT_FORMAT, ETAG, GET, Server, cfg, check, coap_client, eq,
    expect_msg, link_parse, main, note, request, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(ROOT, "tests", "lua", "discovery_res.lua")
BLOCK2, SIZE2 = 23, 28
MANY = ["/many/r%02d" % i for i in range(1, 41)]


def server():
    return Server(plugins=[SCRIPT])


def discover(s, query=""):
    """coap-client-notls GET /.well-known/core?query -> [(href, attrs)]; the whole document
    (coap-client fetches every block)."""
    rc, out, err = coap_client("-m", "get", "coap://[::1]:%d/.well-known/core%s" % (
        s.port, "?" + query if query else ""))
    eq((rc, err.strip()), (0, ""), "coap-client for ?%s" % query)
    out = out.strip()
    return link_parse(out) if out else []


def hrefs(s, query):
    return sorted(h for h, _ in discover(s, query))


@test("the whole document: every resource but the hidden one, with its attributes; larger "
      "than one block, which coap-client reassembles")
def t_all():
    with server() as s:
        links = dict(discover(s))
        eq(sorted(links), sorted(["/sensors/temp", "/sensors/temp_outdoor", "/sensors/hum",
                                  "/ext"] + MANY), "hrefs")
        t = links["/sensors/temp"]
        eq((t["rt"], t["if"], t["ct"], t["sz"], t["obs"]),
           (["temperature c"], ["sensor"], ["0 50"], ["12"], [None]), "/sensors/temp")
        eq(links["/ext"], {"foo": ["bar"], "x-flag": [None]}, "/ext extra attributes")


@test("Content-Format 40, and a document over one block goes out block-wise (RFC 7959) "
      "with Block2 M=1, Size2 and an ETag on block 0; the ETag is the same on block 1")
def t_block():
    with server() as s:
        c = s.client()
        d = request(CON, GET, 0x4001, b"w", [".well-known", "core"])
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x4001, b"w")
        eq(m.opt_uint(CONTENT_FORMAT), 40, "Content-Format")
        eq(m.opt_uint(BLOCK2), 0x8 | 6, "Block2 of block 0 (M=1, SZX 6)")
        check(m.opt_uint(SIZE2) > 1024, "Size2 %r" % m.opt_uint(SIZE2))
        etag = m.opt(ETAG)
        check(etag is not None, "no ETag on block 0")
        d = request(CON, GET, 0x4002, b"w", [".well-known", "core"],
                    options=[(BLOCK2, 1 << 4 | 6)])
        m = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x4002, b"w")
        eq(m.opt(ETAG), etag, "ETag of block 1")


@test("?rt=: a token of a multi-valued attribute matches (rt=\"temperature c\" for ?rt=c "
      "and ?rt=temperature); the seed chapter's ?rt=temperature gives exactly the two")
def t_rt():
    with server() as s:
        eq(hrefs(s, "rt=temperature"), ["/sensors/temp", "/sensors/temp_outdoor"],
           "?rt=temperature")
        eq(hrefs(s, "rt=c"), ["/sensors/temp"], "?rt=c")
        eq(hrefs(s, "rt=temperature c"), [], "?rt=temperature c (one token, not the list)")


@test("?if= with several tokens, ?ct= against one of several formats, ?sz=, ?obs, ?title= "
      "(with a comma and a quote in the value)")
def t_other_attrs():
    with server() as s:
        eq(hrefs(s, "if=sensor"), ["/sensors/hum", "/sensors/temp"], "?if=sensor")
        eq(hrefs(s, "if=core.s"), ["/sensors/hum"], "?if=core.s")
        eq(hrefs(s, "ct=50"), ["/sensors/temp"], "?ct=50")
        eq(hrefs(s, "ct=0"), ["/sensors/temp", "/sensors/temp_outdoor"], "?ct=0")
        eq(hrefs(s, "sz=12"), ["/sensors/temp"], "?sz=12")
        eq(hrefs(s, "obs"), ["/sensors/temp"], "?obs")
        eq(hrefs(s, 'title=Temp, "inside"'), ["/sensors/temp"], "?title=...")


@test("?href= exact and with a trailing * (prefix); an attribute a resource declared itself "
      "(?foo=bar, the flag ?x-flag)")
def t_href_extra():
    with server() as s:
        eq(hrefs(s, "href=/sensors/hum"), ["/sensors/hum"], "?href exact")
        eq(hrefs(s, "href=/sensors/*"), ["/sensors/hum", "/sensors/temp",
                                         "/sensors/temp_outdoor"], "?href=/sensors/*")
        eq(hrefs(s, "href=/many/r0*"), MANY[:9], "?href=/many/r0*")
        eq(hrefs(s, "foo=bar"), ["/ext"], "?foo=bar")
        eq(hrefs(s, "x-flag"), ["/ext"], "?x-flag")


@test("wildcards: ?rt=temp* matches both temperature resources, ?title=Filler* all forty, "
      "?rt=* every resource with an rt")
def t_wildcard():
    with server() as s:
        eq(hrefs(s, "rt=temp*"), ["/sensors/temp", "/sensors/temp_outdoor"], "?rt=temp*")
        eq(hrefs(s, "title=Filler*"), MANY, "?title=Filler*")
        eq(hrefs(s, "rt=*"), sorted(["/sensors/temp", "/sensors/temp_outdoor",
                                     "/sensors/hum"] + MANY), "?rt=*")


@test("quoting (RFC 6690 §2): the title 'Temp, \"inside\"' is one quoted string with the "
      "quote escaped, so the comma does not split the link")
def t_quoting():
    with server() as s:
        rc, out, err = coap_client("-m", "get",
                                   "coap://[::1]:%d/.well-known/core?href=/sensors/temp" % s.port)
        check('title="Temp, \\"inside\\""' in out, "title as sent: %r" % out)
        eq(dict(link_parse(out.strip()))["/sensors/temp"]["title"], ['Temp, "inside"'], "title parsed")


@test("hidden resources: /secret is served but never listed, not even by ?href=/secret; "
      "several filters must all match; a filter nothing has -> an empty 2.05")
def t_hidden_combined():
    with server() as s:
        rc, out, err = coap_client("-m", "get", "coap://[::1]:%d/secret" % s.port)
        eq(out.strip(), "v", "/secret served")
        eq(hrefs(s, "href=/secret"), [], "?href=/secret")
        eq(hrefs(s, "rt=temperature&if=sensor"), ["/sensors/temp"], "two filters")
        eq(hrefs(s, "nosuch=1"), [], "?nosuch=1")


@test("multicast discovery (RFC 7252 §8, RFC 6690 §4.1) in a network namespace: two servers "
      "answer one request to ff02::fd and one to 224.0.1.187, from their unicast addresses; "
      "a filter matching nothing and a missing path get no answer (mcast_netns.py)")
def t_multicast():
    argv = ["unshare", "-n", sys.executable, os.path.join(HERE, "mcast_netns.py"),
            "--moonlet", cfg.moonlet, "--plugins"] + list(cfg.plugins)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    last = [x for x in out.splitlines() if " passed, " in x]
    for line in out.splitlines():
        if line.startswith(("ok ", "not ok ")):
            note(line)
    check(p.returncode == 0 and last and last[-1].endswith(" 0 failed"),
          "mcast_netns.py (exit %d):\n%s" % (p.returncode, out[-3000:]))


if __name__ == "__main__":
    main()
