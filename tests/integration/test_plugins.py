#!/usr/bin/env python3
"""test_plugins.py -- the plugin loader: ABI checks, a failing init undone, a timer left
running at unload. The test plugins are found beside t_basic.so. Run like test_core.py.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CON, CONTENT, GET, PUT, READY_RE, Client, ProcLog, Server, cfg, check, coap_client, eq,
    expect_msg, free_port, main, note, request, run_moonlet, test)


def plugin(name):
    for p in cfg.plugins:
        if os.path.basename(p) == "t_basic.so":
            return os.path.join(os.path.dirname(p), name + ".so")
    raise AssertionError("t_basic.so not among --plugins: %r" % cfg.plugins)


def hello():
    return [p for p in cfg.plugins if os.path.basename(p) == "hello.so"]


def refused(name, reason):
    rc, out = run_moonlet(["-a", "::1", "-p", "0"], plugins=hello() + [plugin(name)])
    errors = [line for line in out if "error:" in line]
    check(not any("Sanitizer" in line or "runtime error" in line for line in out),
          "sanitizer report: %r" % out)
    check(rc != 0, "exit status %r, expected non-zero" % rc)
    eq(len(errors), 1, "error lines in %r" % out)
    check(plugin(name) in errors[0] and reason in errors[0],
          "error line %r names the file and says %r" % (errors[0], reason))


@test("a plugin built for ABI 2.0 -> refused at start-up, one line, exit 1")
def t_abi_major():
    refused("t_abi2", "plugin needs ABI 2.0, server has 1.")


@test("a plugin needing a newer minor ABI -> refused at start-up")
def t_abi_minor():
    refused("t_abinewer", "plugin needs ABI 1.")


@test("init fails after registering and starting a timer -> refused by name, exit 1, no leak")
def t_failinit():
    refused("t_failinit", "init of 't_failinit' failed")


@test("a timer left running at unload is stopped and logged; resources served until then")
def t_timer_leak():
    with Server(plugins=hello() + [plugin("t_failinit")], sets=["t_failinit.fail=0"]) as s, \
            s.client() as c:
        d = request(CON, GET, 1, b"\x01", "t/failinit")
        expect_msg(c.exchange(d), d, ACK, CONTENT, 1, b"\x01", b"up")
        eq(s.stop(), 0, "exit status")
        check("t_failinit: timer still running at unload; stopped" in s.log.text(),
              "log names the leaked timer")


@test("the same plugin twice -> the second refused by name, exit 1")
def t_twice():
    rc, out = run_moonlet(["-a", "::1", "-p", "0"], plugins=hello() + hello())
    errors = [line for line in out if "error:" in line]
    check(rc != 0, "exit status %r" % rc)
    check(len(errors) == 1 and "a plugin named 'hello' is already loaded" in errors[0],
          "error lines %r" % errors)


def fnv64(data):
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


@test("streamed upload (body callback, ABI 1.1): coap-client -b 1024 PUT of 64 KiB arrives "
      "in 64 ordered pieces, never buffered; a small PUT is one piece; over the plugin's "
      "limit -> 4.13")
def t_stream():
    data = bytes((i * 7 + (i >> 8)) & 255 for i in range(65536))
    with tempfile.TemporaryDirectory() as d, \
            Server(plugins=hello() + [plugin("t_stream")]) as s:
        f = os.path.join(d, "up.bin")
        with open(f, "wb") as fh:
            fh.write(data)
        url = "coap://[::1]:%d/t/stream" % s.port
        rc, out, err = coap_client("-b", "1024", "-m", "put", "-f", f, url)
        eq(out.strip(), "65536 %016x 64" % fnv64(data), "PUT answer (%r)" % err)
        rc, out, err = coap_client("-m", "get", url)
        eq(out.strip(), "65536 %016x 64" % fnv64(data), "GET after")
        rc, out, err = coap_client("-m", "put", "-e", "small", url)
        eq(out.strip(), "5 %016x 1" % fnv64(b"small"), "a body without Block1")
        with open(f, "wb") as fh:
            fh.write(bytes(210000))
        rc, out, err = coap_client("-b", "1024", "-m", "put", "-f", f, url)
        check(err.startswith("4.13"), "over 200000 bytes: %r %r" % (out, err))


# ---- the crash report (core/crash.c) -------------------------------------------------------

class Doomed:
    """A server expected to die: not a coaptest Server, whose runner would count its death and
    a sanitizer's report (a SAN=1 build adds ASan's) as failures. Killed by PID if it lives."""

    def __init__(self, files, args=()):
        self.port = free_port()
        self.argv = [cfg.moonlet, "-a", "::1", "-p", str(self.port)] + list(args) + files
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.log = ProcLog(self.proc)
        if not self.log.wait_for(READY_RE.pattern, 5.0):
            self.end(0)
            raise AssertionError("no ready line:\n%s" % self.log.text())

    def end(self, timeout=10.0):
        """The exit status (None: still alive after timeout, then killed)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None
        finally:
            self.log.t.join(2)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.end(0)


def died_of(d, sig, *names):
    """d ended by sig with one 'fatal:' line naming sig and each of names, then a backtrace.
    A SAN=1 build chains to ASan's handler, which reports too and exits 1."""
    rc, text = d.end(), d.log.text()
    asan = "ERROR: AddressSanitizer" in text
    check(rc == -sig or (asan and rc == 1), "exit status %r, expected -%s:\n%s" % (
        rc, signal.Signals(sig).name, text[-3000:]))
    fatal = [i for i, line in enumerate(d.log.lines) if " fatal: " in line]
    eq(len(fatal), 1, "'fatal:' lines in\n%s\n" % text[-3000:])
    line = d.log.lines[fatal[0]]
    for n in (signal.Signals(sig).name,) + names:
        check(n in line, "%r not in %r" % (n, line))
    frames = d.log.lines[fatal[0] + 1:fatal[0] + 4]
    check(frames and all(re.search(r"\[0x[0-9a-f]+\]$", f) for f in frames),
          "no backtrace after %r: %r" % (line, frames))
    note(line + (" (and ASan's report)" if asan else ""))


@test("a plugin handler crashing (GET /crash/segv, /crash/abort, /crash/fpe, /crash/stack: a "
      "NULL write, abort(), a division by zero, a stack overflow) -> the server dies of that "
      "signal after one 'fatal:' line naming it, the plugin, GET and the path, then a backtrace")
def t_crash_report():
    for path, sig in (("/crash/segv", signal.SIGSEGV), ("/crash/abort", signal.SIGABRT),
                      ("/crash/fpe", signal.SIGFPE), ("/crash/stack", signal.SIGSEGV)):
        with Doomed([plugin("t_crash")]) as d, Client(d.port) as c:
            c.send(request(CON, GET, 1, b"c", path))
            died_of(d, sig, "t_crash", "GET " + path)


@test("a crash outside request handlers is reported where it happened: a streamed upload's "
      "body callback ('body of PUT /crash/body'), the plugin's init (before the ready line) "
      "and its fini (at SIGTERM) -- each one 'fatal:' line naming the plugin and the phase")
def t_crash_phases():
    with Doomed([plugin("t_crash")]) as d, Client(d.port) as c:
        c.send(request(CON, PUT, 1, b"c", "/crash/body", payload=b"x"))
        died_of(d, signal.SIGABRT, "t_crash", "body of PUT /crash/body")
    p = subprocess.Popen([cfg.moonlet, "-a", "::1", "-p", "0", "-s", "t_crash.at=init",
                          plugin("t_crash")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.communicate(timeout=10)[0].decode("utf-8", "replace")
    fatal = [x for x in out.splitlines() if " fatal: " in x]
    check(p.returncode in (-signal.SIGABRT, 1) and len(fatal) == 1 and
          "SIGABRT" in fatal[0] and "in t_crash: init;" in fatal[0],
          "init crash: %r %r" % (p.returncode, out[-800:]))
    with Doomed([plugin("t_crash")], ["-s", "t_crash.at=fini"]) as d:
        os.kill(d.proc.pid, signal.SIGTERM)
        died_of(d, signal.SIGABRT, "t_crash: fini")


@test("a signal from outside (kill -SEGV) while a Lua handler loops -> the line names the "
      "script and GET /busy; while idle -> 'outside any handler'")
def t_crash_lua():
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "busy.lua")
        with open(script, "w") as f:
            f.write('local moonlet = require "moonlet"\n'
                    'moonlet.resource{ path = "/busy", get = function()\n'
                    '  while true do end end }\n')
        with Doomed([script], ["-s", "lua.instructions=0"]) as d, Client(d.port) as c:
            c.send(request(CON, GET, 1, b"b", "/busy"))
            time.sleep(0.5)     # the empty ACK cannot come: the loop holds the server
            os.kill(d.proc.pid, signal.SIGSEGV)
            died_of(d, signal.SIGSEGV, script, "GET /busy")
        with Doomed([script]) as d:
            os.kill(d.proc.pid, signal.SIGSEGV)
            died_of(d, signal.SIGSEGV, "outside any handler")


if __name__ == "__main__":
    sys.exit(main())
