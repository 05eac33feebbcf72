#!/usr/bin/env python3
"""test_reload.py -- hot reload of scripts and plugins (core/reload.c): a script or plugin
rewritten while clients observe, download block-wise and load the server; a broken new
version; a removed resource; the admin view. Run like test_core.py:

    python3 tests/integration/test_reload.py --moonlet build/moonlet \\
        --plugins build/plugins/hello.so build/tests/t_basic.so

Every test writes its script (or builds its plugin with cc) into a temporary directory,
starts moonlet on it, and rewrites the file; "reloaded PATH" in the log is the event it
waits for. The load test needs build/coap-bench (`make check` builds it).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CON, CONTENT, ETAG, GET, NON, OBSERVE, Server, cfg, check, code, coap_client, encode,
    eq, expect_msg, main, note, request, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
BLOCK2 = 23
NOT_FOUND = code(4, 4)

SCRIPT = r'''
local moonlet = require "moonlet"
local V = "%(version)s"
moonlet.state.loads = (moonlet.state.loads or 0) + 1
moonlet.resource{ path = "/v", obs = true,
  get = function() return moonlet.CONTENT, V .. " loads=" .. moonlet.state.loads end }
moonlet.resource{ path = "/big", get = function()
  local t = {}
  for i = 1, 128 do t[i] = ("%%s line %%03d %%s\n"):format(V, i, ("x"):rep(40)) end
  return moonlet.CONTENT, table.concat(t)
end }
moonlet.resource{ path = "/slow", get = function()
  moonlet.sleep(%(sleep)s)
  return moonlet.CONTENT, "slow " .. V
end }
%(extra)s
'''


class Scripted:
    """A script in a temporary directory, served by moonlet, rewritten on demand."""

    def __init__(self, opts=None, extra='moonlet.resource{ path = "/extra", obs = true, '
                 'get = function() return moonlet.CONTENT, "e" end }', sleep=0.5):
        self.dir = tempfile.mkdtemp(prefix="moonlet-reload-")
        self.path = os.path.join(self.dir, "app.lua")
        self.sleep = sleep
        self.write("v1", extra)
        self.srv = Server(opts=opts, plugins=[self.path])
        self.reloads = 0

    def write(self, version, extra="", text=None):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text if text is not None else SCRIPT % {
                "version": version, "extra": extra, "sleep": self.sleep})
        os.replace(tmp, self.path)      # as editors save: one atomic switch

    def wait(self, pattern, what):
        start = self.mark
        m = self.srv.log.wait_for(pattern, 5.0, start)
        check(m is not None, "no %s in the log within 5 s:\n%s" % (what, "\n".join(
            self.srv.log.lines[start:][-10:])))
        return m

    def rewrite(self, version, extra="", text=None):
        """Write a new version and wait until the server has reloaded it."""
        self.mark = len(self.srv.log.lines)
        self.write(version, extra, text)
        self.wait(r"reloaded .*app\.lua", "reload")

    def close(self):
        self.srv.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def get(c, path, mid, token=b"g", options=()):
    d = request(CON, GET, mid, token, path.strip("/").split("/"), (), options)
    return expect_msg(c.exchange(d), d, ACK, None, mid, token)


@test("a script edited while a client observes /v and another downloads /big block-wise: "
      "the observer gets the new value with the same token (no re-registration), the "
      "download completes with the bytes and ETag it started with, moonlet.state carries "
      "over, and a new download gets the new version")
def t_edit_observe_download():
    with Scripted() as s:
        obs, dl = s.srv.client(), s.srv.client()
        d = request(CON, GET, 0x100, b"ob", ["v"], (), [(OBSERVE, 0)])
        r = expect_msg(obs.exchange(d), d, ACK, CONTENT, 0x100, b"ob")
        eq(r.payload, b"v1 loads=1", "registration")
        first = get(dl, "/big", 0x200, options=[(BLOCK2, 0 << 4 | 2)])   # 64-byte blocks
        etag, body = first.opt(ETAG), first.payload
        s.rewrite("v2")
        n = obs.recv(5.0)
        check(n is not None, "no notification after the reload")
        eq((n.token, n.payload), (b"ob", b"v2 loads=2"), "notification after reload")
        check(n.opt_uint(OBSERVE) is not None, "the notification has Observe")
        if n.type == CON:
            obs.send(encode(ACK, 0, n.mid))
        num, mid = 1, 0x201
        while True:
            m = get(dl, "/big", mid, options=[(BLOCK2, num << 4 | 2)])
            eq(m.opt(ETAG), etag, "ETag of block %d" % num)
            body += m.payload
            if not (m.opt_uint(BLOCK2) & 8):
                break
            num, mid = num + 1, mid + 1
        lines = body.decode().splitlines()
        eq(len(lines), 128, "lines downloaded")
        check(all(x.startswith("v1 ") for x in lines), "a line of v2 in the v1 download")
        m = get(dl, "/big", 0x300, options=[(BLOCK2, 0 << 4 | 2)])
        check(m.payload.startswith(b"v2 ") and m.opt(ETAG) != etag, "a new download: %r" % (
            m.payload[:10],))


@test("a request in flight (a handler sleeping 0.5 s) finishes on the old version; the "
      "next one is answered by the new")
def t_in_flight():
    with Scripted() as s:
        c, w = s.srv.client(), s.srv.client()
        d = request(CON, GET, 0x400, b"sl", ["slow"])
        c.send(d)
        ack = c.recv(2.0)       # the empty ACK (separate_after 0.5 s) or nothing yet
        s.rewrite("v2")
        got = [ack] if ack is not None and ack.code else []
        while not got:
            m = c.recv(3.0)
            check(m is not None, "no answer to the request in flight")
            if m.code:
                got.append(m)
                if m.type == CON:
                    c.send(encode(ACK, 0, m.mid))
        eq(got[0].payload, b"slow v1", "the answer in flight")
        eq(get(w, "/v", 0x401).payload, b"v2 loads=2", "a new request")


@test("a handler of the old version in moonlet.wait without a timeout (nothing left to "
      "signal it): bounded by defer_deadline after the reload, so the old version is freed; "
      "its request had its 5.03 at the deadline")
def t_wait_forever():
    extra = ('moonlet.resource{ path = "/w", get = function()\n'
             '  local v, why = moonlet.wait("never")\n'
             '  return moonlet.CONTENT, tostring(why) end }')
    with Scripted(opts={"defer_deadline": 0.5}, extra=extra) as s:
        c = s.srv.client()
        d = request(NON, GET, 0x450, b"w", ["w"])
        c.send(d)
        eq(get(c, "/v", 0x451).payload, b"v1 loads=1", "/v (the waiting request is in)")
        s.rewrite("v2", extra)
        m = c.recv(2.0)
        eq(m and (m.token, m.code), (b"w", code(5, 3)), "the waiting request at its deadline")
        s.wait(r"app\.lua: the retired version is freed", "free of the old version")


@test("a syntax error in the new version: the old one keeps serving and the log names "
      "FILE:LINE; fixing the file reloads")
def t_syntax_error():
    with Scripted() as s:
        c = s.srv.client()
        s.mark = len(s.srv.log.lines)
        s.write("v2", text='local moonlet = require "moonlet"\nlocal x = = 1\n')
        m = s.wait(r"error: (\S+):(\d+): .*the running version keeps serving", "error line")
        eq((os.path.basename(m.group(1)), m.group(2)), ("app.lua", "2"), "FILE:LINE")
        eq(get(c, "/v", 0x500).payload, b"v1 loads=1", "still the old version")
        s.rewrite("v3")
        eq(get(c, "/v", 0x501).payload, b"v3 loads=2", "the fixed version")


@test("a resource the new version no longer has: its observers get a final 4.04 (CON, no "
      "Observe) and are freed; /.well-known/core no longer lists it; the others stay")
def t_removed():
    with Scripted() as s:
        c, w = s.srv.client(), s.srv.client()
        d = request(CON, GET, 0x600, b"ex", ["extra"], (), [(OBSERVE, 0)])
        expect_msg(c.exchange(d), d, ACK, CONTENT, 0x600, b"ex")
        s.rewrite("v2", extra="")
        n = c.recv(5.0)
        check(n is not None, "no final notification")
        eq((n.type, n.code, n.token, n.opt_uint(OBSERVE)), (CON, NOT_FOUND, b"ex", None),
           "final notification")
        c.send(encode(ACK, 0, n.mid))
        eq(get(w, "/extra", 0x601).code, NOT_FOUND, "GET /extra")
        rc, out, err = coap_client("-m", "get", "coap://[::1]:%d/.well-known/core" % s.srv.port)
        check("</extra>" not in out and "</v>" in out, "discovery: %r" % out)


@test("a plugin rebuilt with a changed handler (cc into the watched path): the new answer "
      "is served, the old code is unloaded without a crash")
def t_plugin_rebuild():
    d = tempfile.mkdtemp(prefix="moonlet-reload-")
    src = os.path.join(d, "p.c")
    so = os.path.join(d, "p.so")
    cc = os.environ.get("CC", "cc")

    def build(answer):
        with open(src, "w") as f:
            f.write('#include "moonlet.h"\n#include <string.h>\n'
                    'static int get(moonlet_req *q, moonlet_resp *r, void *u) {\n'
                    '    (void)q; (void)u;\n'
                    '    return moonlet_resp_payload(r, "%s", strlen("%s"));\n}\n'
                    'static int init(moonlet_plugin *p, const moonlet_conf *c) {\n'
                    '    static const moonlet_resource_def d = {.path = "/p", .get = get};\n'
                    '    (void)c; return moonlet_resource_add(p, &d, NULL) ? 0 : -1;\n}\n'
                    'MOONLET_PLUGIN("rebuilt", "%s", init, NULL);\n' % (answer, answer, answer))
        tmp = so + ".tmp"
        subprocess.run([cc, "-shared", "-fPIC", "-I", os.path.join(ROOT, "core", "include"),
                        "-o", tmp, src], check=True)
        os.replace(tmp, so)
    try:
        build("one")
        with Server(plugins=[so], opts={"admin": 1}) as srv:
            c = srv.client()
            eq(get(c, "/p", 0x700).payload, b"one", "first build")
            mark = len(srv.log.lines)
            build("two")
            check(srv.log.wait_for(r"reloaded .*p\.so", 5.0, mark), "no reload of p.so")
            eq(get(c, "/p", 0x701).payload, b"two", "after the rebuild")
            units = get(c, "/.well-known/moonlet/units", 0x702).payload.decode()
            check(re.search(r"p\.so plugin rebuilt two ", units), "admin view: %r" % units)
            eq(srv.stop(), 0, "exit status")
    finally:
        shutil.rmtree(d, ignore_errors=True)


STATEFUL = r'''#include "moonlet.h"
#include <stdio.h>
#include <stdlib.h>
struct st { long count; };
static int get(moonlet_req *q, moonlet_resp *r, void *u) {
    struct st *s = moonlet_plugin_data(u);
    char b[64];
    int n = snprintf(b, sizeof b, "%(ver)s %%ld", ++s->count);
    (void)q;
    return moonlet_resp_payload(r, b, (size_t)n);
}
static int init(moonlet_plugin *p, const moonlet_conf *c) {
    static const moonlet_resource_def d = {.path = "/n", .get = get};
    static const moonlet_resource_def h = {.path = "/hello", .get = get};
    struct st *s = moonlet_plugin_inherit(p);
    (void)c;
    if (!s && !(s = calloc(1, sizeof *s)))
        return -1;
    moonlet_plugin_set_data(p, s);
    if (%(fail)d)
        return -1;
    if (%(collide)d && !moonlet_resource_add(p, &h, p))
        return -1;
    return moonlet_resource_add(p, &d, p) ? 0 : -1;
}
static void fini(moonlet_plugin *p) { free(moonlet_plugin_data(p)); }
MOONLET_PLUGIN_STATE("stateful", "%(ver)s", init, fini, %(sv)d);
'''


@test("plugin state handoff (moonlet_plugin_inherit): a rebuild with the same state_version "
      "continues the count, another state_version starts afresh; a new version whose init "
      "fails after inheriting, or whose path collides at commit, leaves the old one counting "
      "(under ASan: nothing freed twice, nothing leaked)")
def t_plugin_state():
    d = tempfile.mkdtemp(prefix="moonlet-reload-")
    src, so = os.path.join(d, "s.c"), os.path.join(d, "s.so")
    cc = os.environ.get("CC", "cc")
    hello = [p for p in cfg.plugins if os.path.basename(p) == "hello.so"]

    def build(ver, sv, fail=0, collide=0):
        with open(src, "w") as f:
            f.write(STATEFUL % {"ver": ver, "sv": sv, "fail": fail, "collide": collide})
        subprocess.run([cc, "-shared", "-fPIC", "-I", os.path.join(ROOT, "core", "include"),
                        "-o", so + ".tmp", src], check=True)
        os.replace(so + ".tmp", so)

    def rebuild(srv, ver, sv, event, **kw):
        mark = len(srv.log.lines)
        build(ver, sv, **kw)
        check(srv.log.wait_for(event, 5.0, mark), "%s: no %r in the log" % (ver, event))

    try:
        build("v1", 1)
        with Server(plugins=hello + [so]) as srv:
            c = srv.client()
            n = iter(range(0x900, 0x9ff))
            eq(get(c, "/n", next(n)).payload, b"v1 1", "first")
            eq(get(c, "/n", next(n)).payload, b"v1 2", "second")
            rebuild(srv, "v2", 1, r"reloaded .*s\.so")
            eq(get(c, "/n", next(n)).payload, b"v2 3", "same state_version: handed over")
            rebuild(srv, "v3", 2, r"reloaded .*s\.so")
            eq(get(c, "/n", next(n)).payload, b"v3 1", "another state_version: afresh")
            rebuild(srv, "v4", 2, r"init of 'stateful' failed.*running version keeps", fail=1)
            eq(get(c, "/n", next(n)).payload, b"v3 2", "init failed: the old one counts on")
            rebuild(srv, "v5", 2, r"/hello is already served by .*running version keeps",
                    collide=1)
            eq(get(c, "/n", next(n)).payload, b"v3 3", "commit failed: the old one counts on")
            eq(srv.stop(), 0, "exit status")
    finally:
        shutil.rmtree(d, ignore_errors=True)


@test("the admin view is off by default (4.04); with -o admin=1 it lists each unit: path, "
      "kind, name, version, load time, resources")
def t_admin():
    with Scripted() as s:
        eq(get(s.srv.client(), "/.well-known/moonlet/units", 0x800).code, NOT_FOUND, "off")
    with Scripted(opts={"admin": 1}) as s:
        units = get(s.srv.client(), "/.well-known/moonlet/units", 0x801).payload.decode()
        check(re.search(r"app\.lua script \S+app\.lua - \d{4}-\d\d-\d\dT[\d:]+Z 4\n", units),
              "admin view: %r" % units)


@test("reload under load: coap-bench at window 16 on /v while the script is rewritten 20 "
      "times: every CON answered exactly once (errors 0, lost 0), 20 reloads")
def t_under_load():
    bench = os.path.join(ROOT, "build", "coap-bench")
    check(os.access(bench, os.X_OK), "build/coap-bench missing (make check builds it)")
    with Scripted() as s:
        s.mark = len(s.srv.log.lines)
        p = subprocess.Popen([bench, "-w", "16", "-d", "8", "-W", "0", "::1", str(s.srv.port),
                              "/v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(20):
            s.write("v%d" % (i + 2))
            s.wait(r"reloaded .*app\.lua", "reload %d" % (i + 1))
            s.mark = len(s.srv.log.lines)
        out, err = p.communicate(timeout=30)
        line = out.decode().strip()
        m = re.search(r"sent=(\d+) ok=(\d+) errors=(\d+) lost=(\d+)", line)
        check(m is not None, "coap-bench output %r (%r)" % (line, err.decode()[-300:]))
        sent, ok, errors, lost = map(int, m.groups())
        eq((errors, lost), (0, 0), "errors, lost (%s)" % line)
        check(ok > 1000, "only %d answers" % ok)
        note("%d requests during 20 reloads: %d answered, 0 errors, 0 lost; %s" % (
            sent, ok, line))


if __name__ == "__main__":
    main()
