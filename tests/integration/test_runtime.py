#!/usr/bin/env python3
"""test_runtime.py -- resources created and removed at run time, and subtrees (issue 13):
tests/lua/runtime.lua and the C plugin tests/plugins/t_runtime.c, driven by libcoap's
coap-client-notls, node's coap package and raw datagrams (coaptest). Run like
test_core.py:

    python3 tests/integration/test_runtime.py --moonlet build/moonlet

Every server is started on [::1] on a free port and stopped by its PID.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CON, CONTENT, ETAG, GET, OBSERVE, Server, cfg, check, code, coap_client, encode, eq,
    error_code_of, expect_msg, link_parse, main, request, stats, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
SCRIPT = os.path.join(ROOT, "tests", "lua", "runtime.lua")
NODE_DIR = os.path.join(HERE, "node")
POST, PUT, DELETE = 2, 3, 4
CREATED, DELETED, CHANGED = code(2, 1), code(2, 2), code(2, 4)
NOT_FOUND, UNAVAILABLE = code(4, 4), code(5, 3)
LOCATION_PATH, BLOCK2, BLOCK1 = 8, 23, 27


def plugin(name):
    return os.path.join(os.path.dirname(os.path.abspath(cfg.moonlet)), "tests", name + ".so")


def url(s, path):
    return "coap://[::1]:%d%s" % (s.port, path)


def call(c, method, path, mid, payload=b"", options=(), token=b"t"):
    path, _, qs = path.partition("?")
    segs = [x for x in path.strip("/").split("/") if x]
    q = qs.split("&") if qs else []
    d = request(CON, method, mid, token, segs, q, options, payload)
    return expect_msg(c.exchange(d), d, ACK, None, mid, token)


def create(c, mid, body=b"v", path="/things"):
    m = call(c, POST, path, mid, body)
    eq(m.code, CREATED, "POST %s" % path)
    return "/" + "/".join(v.decode() for v in m.opts(LOCATION_PATH))


def discovery(c, mid):
    m = call(c, GET, "/.well-known/core", mid)
    eq(m.code, CONTENT, "GET /.well-known/core")
    return {l[0]: l[1] for l in link_parse(m.payload.decode())}, m.opt(ETAG)


@test("a POST creates /things/1 (2.01, Location-Path things/1); coap-client GETs what was "
      "posted; /.well-known/core lists it at once with a new ETag; a DELETE removes it: 4.04 "
      "after, discovery as before, the same ETag as before")
def t_create_remove():
    with Server(plugins=[SCRIPT]) as s:
        c = s.client()
        links0, etag0 = discovery(c, 0x100)
        check(etag0 is not None, "discovery has an ETag")
        check("/things/1" not in links0, "not there yet")
        eq(create(c, 0x101, b"hello"), "/things/1", "Location-Path")
        rc, out, err = coap_client(url(s, "/things/1"))
        eq((rc, out.strip(), err), (0, "hello", ""), "coap-client GET /things/1")
        links1, etag1 = discovery(c, 0x102)
        eq(links1.get("/things/1"), {"rt": ["thing"], "obs": [None]}, "the new link")
        check(etag1 != etag0, "the ETag changed")
        rc, out, err = coap_client("-m", "delete", url(s, "/things/1"))
        eq((rc, err), (0, ""), "coap-client DELETE")
        rc, out, err = coap_client(url(s, "/things/1"))
        eq(error_code_of(err), "4.04", "GET after DELETE")
        links2, etag2 = discovery(c, 0x103)
        eq((links2, etag2), (links0, etag0), "discovery after the removal")


@test("an observer of a run-time resource gets a final 4.04 (CON, no Observe option) when "
      "it is removed, and is freed; libcoap's coap-client -s, observing too, prints 4.04")
def t_observer_removed():
    with Server(plugins=[SCRIPT]) as s:
        c, w = s.client(), s.client()
        path = create(w, 0x200, b"one")
        d = request(CON, GET, 0x201, b"ob", path.strip("/").split("/"), (), [(OBSERVE, 0)])
        r = expect_msg(c.exchange(d), d, ACK, CONTENT, 0x201, b"ob")
        eq(r.payload, b"one", "registration")
        cc = subprocess.Popen(["coap-client-notls", "-s", "3", "-B", "3", url(s, path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            end = time.monotonic() + 5  # coap-client's registration is in when there are two
            while stats(s)["observers"] != 2 and time.monotonic() < end:
                time.sleep(0.02)
            eq(stats(s)["observers"], 2, "observers before the removal")
            eq(call(w, DELETE, path, 0x203).code, DELETED, "DELETE")
            n = c.recv(3.0)
            check(n is not None, "no final notification")
            eq((n.type, n.code, n.token, n.opt_uint(OBSERVE)), (CON, NOT_FOUND, b"ob", None),
               "final notification")
            c.send(encode(ACK, 0, n.mid))
            out, err = cc.communicate(timeout=10)
            eq((out.decode().strip(), error_code_of(err.decode())), ("one", "4.04"),
               "coap-client -s: the payload, then 4.04")
        finally:
            if cc.poll() is None:
                cc.kill()
                cc.wait()
        eq(stats(s)["observers"], 0, "observers after the removal")


@test("node's coap: discovery, POST (2.01 + Location-Path), GET, observe, DELETE; its "
      "observation's last message is the final 4.04; GET after is 4.04; discovery as before")
def t_node():
    with Server(plugins=[SCRIPT]) as s:
        p = subprocess.run(["node", os.path.join(NODE_DIR, "runtime.js"), "::1", str(s.port)],
                           capture_output=True, timeout=20)
        eq(p.returncode, 0, "node runtime.js exit status (stderr %r)" % p.stderr[-300:])
        steps = {}
        for line in p.stdout.decode().splitlines():
            o = json.loads(line)
            steps[o.pop("step")] = o
        eq(steps["post"], {"code": "2.01", "location": ["things", "1"]}, "POST")
        eq(steps["get"], {"code": "2.05", "payload": "from node"}, "GET")
        eq(steps["observe"], {"code": "2.05", "payload": "from node"}, "observe")
        eq(steps["delete"], {"code": "2.02"}, "DELETE")
        eq(steps["final"], {"code": "4.04"}, "the observation's last message")
        eq(steps["get-after"], {"code": "4.04"}, "GET after")
        eq(steps["discovery-after"], steps["discovery"], "discovery after")


@test("runtime_resources=2: a third creation is refused (the script answers 5.03 with the "
      "reason); after a DELETE there is room again")
def t_bound():
    with Server(plugins=[SCRIPT], opts={"runtime_resources": 2}) as s:
        c = s.client()
        create(c, 0x300)
        create(c, 0x301)
        m = call(c, POST, "/things", 0x302, b"x")
        eq(m.code, UNAVAILABLE, "third POST")
        check(b"runtime_resources = 2" in m.payload, "diagnostic: %r" % m.payload)
        rc, out, err = coap_client("-m", "post", "-e", "y", url(s, "/things"))
        eq(error_code_of(err), "5.03", "coap-client: a third POST")
        eq(call(c, DELETE, "/things/1", 0x303).code, DELETED, "DELETE /things/1")
        eq(create(c, 0x304), "/things/5", "a creation after the DELETE")


class Copy:
    """runtime.lua in a temporary directory, to be rewritten (a hot reload)."""

    def __init__(self, keep):
        self.dir = tempfile.mkdtemp(prefix="moonlet-runtime-")
        self.path = os.path.join(self.dir, "runtime.lua")
        shutil.copy(SCRIPT, self.path)
        self.srv = Server(plugins=[self.path], sets=["runtime.keep=" + keep])

    def touch(self):
        mark = len(self.srv.log.lines)
        with open(SCRIPT) as f:
            text = f.read()
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n-- v2\n")
        os.replace(tmp, self.path)
        m = self.srv.log.wait_for(r"reloaded .*runtime\.lua", 5.0, mark)
        check(m is not None, "no reload within 5 s")

    def close(self):
        self.srv.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def reload_observed(keep, body, mid):
    """A resource created and observed, then a reload: (copy, clients, path, the first
    message the observer gets after the reload, ACKed if it is a CON)."""
    cp = Copy(keep)
    c, w = cp.srv.client(), cp.srv.client()
    path = create(w, mid, body)
    d = request(CON, GET, mid + 1, b"ob", path.strip("/").split("/"), (), [(OBSERVE, 0)])
    expect_msg(c.exchange(d), d, ACK, CONTENT, mid + 1, b"ob")
    cp.touch()
    n = c.recv(3.0)
    check(n is not None, "the observer heard nothing after the reload")
    if n.type == CON:
        c.send(encode(ACK, 0, n.mid))
    return cp, w, path, n


@test("a reload of a script that created resources at run time: declared again by the new "
      "version from moonlet.state, they keep their observers (a notification with the new "
      "version's answer, same token) and their content")
def t_reload_keep():
    cp, w, path, n = reload_observed("yes", b"kept", 0x400)
    try:
        eq((n.code, n.token, n.payload), (CONTENT, b"ob", b"kept"), "notification")
        check(n.opt_uint(OBSERVE) is not None, "still observing")
        eq(call(w, GET, path, 0x402).payload, b"kept", "GET after the reload")
        eq(stats(cp.srv)["observers"], 1, "the observer stays")
    finally:
        cp.close()


@test("a reload of a script whose new version does not declare its run-time resources "
      "again: they are removed like any path it no longer has (observers: 4.04)")
def t_reload_drop():
    cp, w, path, n = reload_observed("no", b"gone", 0x500)
    try:
        eq((n.code, n.token, n.opt_uint(OBSERVE)), (NOT_FOUND, b"ob", None), "final 4.04")
        eq(call(w, GET, path, 0x502).code, NOT_FOUND, "GET after the reload")
        eq(stats(cp.srv)["observers"], 0, "no observer left")
    finally:
        cp.close()


@test("a request in flight on a resource being removed (its handler sleeping 0.4 s) gets "
      "its answer; the resource is gone for the next request")
def t_in_flight():
    with Server(plugins=[SCRIPT], opts={"separate_after": 2}) as s:
        c, w = s.client(), s.client()
        path = create(w, 0x600, b"flight")
        d = request(CON, GET, 0x601, b"sl", path.strip("/").split("/"), ["slow=0.4"])
        c.send(d)
        eq(call(w, DELETE, path, 0x602).code, DELETED, "DELETE during the slow GET")
        m = c.recv(3.0)
        check(m is not None, "no answer to the request in flight")
        eq((m.code, m.payload), (CONTENT, b"(gone)"), "the answer in flight")
        eq(call(w, GET, path, 0x603).code, NOT_FOUND, "GET after")


@test("a removed resource's block-wise transfers end: a download's snapshot and an "
      "upload's reassembly buffer are freed at once, and the next block of each is 4.04")
def t_block_dropped():
    with Server(plugins=[SCRIPT]) as s:
        c, u = s.client(), s.client()
        thing = create(u, 0x710, b"t")
        m = call(u, PUT, thing, 0x711, b"a" * 64, options=[(BLOCK1, 0 << 4 | 1 << 3 | 2)])
        eq(m.code, code(2, 31), "Block1 block 0: 2.31 Continue")
        check(stats(s)["uploads"] > 0, "an upload buffer while uploading")
        path = create(c, 0x700, path="/big")
        m = call(c, GET, path, 0x701, options=[(BLOCK2, 0 << 4 | 2)])
        eq((m.code, len(m.payload)), (CONTENT, 64), "block 0")
        check(stats(s)["snapshots"] > 0, "a snapshot while downloading")
        eq(call(c, DELETE, "/big?id=1", 0x702).code, DELETED, "DELETE /big?id=1")
        eq(stats(s)["snapshots"], 0, "snapshot bytes after the removal")
        m = call(c, GET, path, 0x703, options=[(BLOCK2, 1 << 4 | 2)])
        eq(m.code, NOT_FOUND, "block 1")
        eq(call(u, DELETE, thing, 0x712).code, DELETED, "DELETE " + thing)
        eq(stats(s)["uploads"], 0, "upload bytes after the removal")
        m = call(u, PUT, thing, 0x713, b"b" * 10, options=[(BLOCK1, 1 << 4 | 2)])
        eq(m.code, NOT_FOUND, "Block1 block 1 after the removal")


@test("a subtree /files/*: it answers every path below /files and /files itself with the "
      "rest of the path (req.path the request's, req.rest the segments below); an exact "
      "resource inside it wins; discovery lists </files>; href filters see that")
def t_subtree():
    with Server(plugins=[SCRIPT]) as s:
        c = s.client()
        for path, want in [("/files/a/b", "path=/files/a/b rest=a/b"),
                           ("/files", "path=/files rest="),
                           ("/files/a%20b", "path=/files/a%20b rest=a b"),
                           ("/files/exact", "exact"),
                           ("/files/exact/x", "path=/files/exact/x rest=exact/x")]:
            rc, out, err = coap_client(url(s, path))
            eq((rc, out.strip(), err), (0, want, ""), "coap-client GET " + path)
        eq(call(c, GET, "/filesx", 0x801).code, NOT_FOUND, "/filesx is not below /files")
        links, _ = discovery(c, 0x802)
        eq(links.get("/files"), {"rt": ["files"]}, "the subtree's link")
        check("/files/*" not in links, "no '*' in an href")
        m = call(c, GET, "/.well-known/core?href=/files", 0x803)
        eq([l[0] for l in link_parse(m.payload.decode())], ["/files"], "?href=/files")


@test("a subtree that lists its children (Lua children = function): discovery lists them "
      "after the subtree's own link, with their attributes and through filters; a child "
      "added at run time is listed at once, with a new ETag")
def t_subtree_children():
    with Server(plugins=[SCRIPT]) as s:
        c = s.client()
        links, etag = discovery(c, 0x850)
        eq(links.get("/files/a.txt"), {}, "the first child")
        eq(links.get("/files/dir/b%20c.txt"), {"rt": ["file"], "ct": ["0"]}, "the second")
        m = call(c, GET, "/.well-known/core?rt=file", 0x851)
        eq([l[0] for l in link_parse(m.payload.decode())], ["/files/dir/b%20c.txt"],
           "?rt=file")
        m = call(c, GET, "/.well-known/core?href=/files/a*", 0x852)
        eq([l[0] for l in link_parse(m.payload.decode())], ["/files/a.txt"], "?href=/files/a*")
        eq(call(c, PUT, "/files/new.bin", 0x853, b"x").code, CHANGED, "PUT /files/new.bin")
        links2, etag2 = discovery(c, 0x854)
        check("/files/new.bin" in links2, "the new child is listed")
        check(etag2 != etag, "a new ETag")


@test("a children function that raises, returns a bad entry, or loops (lua.instructions): "
      "discovery is still served with every other link, the subtree's own included, and "
      "the log names the script, the subtree and the reason")
def t_children_broken():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "kids.lua")
        with open(path, "w") as f:
            f.write('local moonlet = require "moonlet"\n'
                    'local ok = function() return moonlet.CONTENT, "x" end\n'
                    'moonlet.resource{ path = "/a/*", get = ok,\n'
                    '  children = function() error("no listing today") end }\n'
                    'moonlet.resource{ path = "/b/*", get = ok,\n'
                    '  children = function() return { "good", 42, "never" } end }\n'
                    'moonlet.resource{ path = "/c/*", get = ok,\n'
                    '  children = function() while true do end end }\n'
                    'moonlet.resource{ path = "/d", get = ok }\n')
        with Server(plugins=[path], sets=["lua.instructions=100000"]) as s:
            c = s.client()
            links, _ = discovery(c, 0x880)
            eq(sorted(links), ["/a", "/b", "/b/good", "/c", "/d"], "links")
            for what in (r"/a/\*: children: .*no listing today",
                         r"/b/\*: children: .*entry 2 is not a path",
                         r"/c/\*: children: .*instruction budget"):
                check(s.log.wait_for(what, 2.0) is not None, "no log line %r" % what)
            eq(call(c, GET, "/d", 0x881).code, CONTENT, "the server serves on")


@test("C plugin: POST /t/items creates /t/items/N with moonlet_resource_add in a handler; "
      "GET answers the body; DELETE removes it with moonlet_resource_remove from its own "
      "handler; /t/tree/* sees moonlet_req_base and lists its children")
def t_plugin():
    with Server(plugins=[plugin("t_runtime")]) as s:
        c = s.client()
        rc, out, err = coap_client("-m", "post", "-e", "abc", url(s, "/t/items"))
        eq((rc, err), (0, ""), "coap-client POST")
        eq(create(c, 0x900, b"def", "/t/items"), "/t/items/2", "Location-Path")
        rc, out, err = coap_client(url(s, "/t/items/1"))
        eq(out.strip(), "abc", "GET /t/items/1")
        links, _ = discovery(c, 0x901)
        eq(links.get("/t/items/2"), {"rt": ["item"], "obs": [None]}, "discovery")
        rc, out, err = coap_client("-m", "delete", url(s, "/t/items/1"))
        eq((rc, err), (0, ""), "DELETE /t/items/1")
        rc, out, err = coap_client(url(s, "/t/items/1"))
        eq(error_code_of(err), "4.04", "GET after DELETE")
        eq(call(c, GET, "/t/items/2", 0x902).payload, b"def", "the other one stays")
        rc, out, err = coap_client(url(s, "/t/tree/x/y"))
        eq(out.strip(), "base=2 rest=x/y", "subtree")
        links, _ = discovery(c, 0x903)
        eq((links.get("/t/tree"), links.get("/t/tree/x"), links.get("/t/tree/y/z")),
           ({}, {}, {"rt": ["leaf"], "obs": [None]}), "the subtree and its children")


if __name__ == "__main__":
    sys.exit(main())
