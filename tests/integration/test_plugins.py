#!/usr/bin/env python3
"""test_plugins.py -- the plugin loader: ABI checks, a failing init undone, a timer left
running at unload. The test plugins are found beside t_basic.so. Run like test_core.py.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CON, CONTENT, GET, Server, cfg, check, coap_client, eq, expect_msg, main, request,
    run_moonlet, test)


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


if __name__ == "__main__":
    sys.exit(main())
