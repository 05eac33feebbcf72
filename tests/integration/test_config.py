#!/usr/bin/env python3
"""test_config.py -- the configuration file (`moonlet -c FILE`, core/config.c): `-t` checks,
FILE:LINE errors, serving from a file, SIGHUP re-reading it. Run like test_core.py:

    python3 tests/integration/test_config.py --moonlet build/moonlet \\
        --plugins build/plugins/hello.so build/tests/t_basic.so

Each test writes its files into a temporary directory. Servers get `-a ::1 -p 0` from the
harness, which takes precedence over the file's listen list.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, COAP_CLIENT, CON, CONTENT, GET, NON, OBSERVE, SANITIZER_MARKERS, Client, Server, cfg,
    check, code, coap_client, eq, expect_msg, free_port, main, request, run_moonlet, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "moonlet.conf")
SCRIPT = '''local moonlet = require "moonlet"
moonlet.resource{ path = "/%s", get = function()
  return moonlet.CONTENT, moonlet.conf("word", "none") end }
'''


def plugin_so(name):
    return os.path.abspath([p for p in cfg.plugins if os.path.basename(p) == name][0])


def hello_so():
    return plugin_so("hello.so")


class Dir:
    def __init__(self):
        self.d = tempfile.mkdtemp(prefix="moonlet-conf-")

    def file(self, name, text):
        p = os.path.join(self.d, name)
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.replace(p + ".tmp", p)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *a):
        shutil.rmtree(self.d, ignore_errors=True)


def errors_of(lines):
    return [x.split("error: ", 1)[1] for x in lines if "error: " in x]


def hup(s, d, text):
    """Rewrite m.conf and send SIGHUP; returns the log mark to wait from."""
    mark = len(s.log.lines)
    d.file("m.conf", text)
    os.kill(s.pid, signal.SIGHUP)
    return mark


def get(c, path, mid):
    d = request(CON, GET, mid, b"c", path.strip("/").split("/"))
    return expect_msg(c.exchange(d), d, ACK, None, mid, b"c")


class LibcoapServer:
    """libcoap's coap-server-notls on ADDR:PORT (it binds with SO_REUSEADDR), answering
    before this returns; stopped by its PID."""

    def __init__(self, addr, port):
        self.proc = subprocess.Popen(["coap-server-notls", "-A", addr, "-p", str(port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        with Client(port, addr) as c:
            for mid in range(50):
                c.send(request(CON, GET, mid, b"p", [".well-known", "core"]))
                try:
                    if c.recv(0.1) is not None:
                        return
                except AssertionError:      # ICMP unreachable: not bound yet
                    time.sleep(0.1)
        self.stop()
        raise AssertionError("coap-server-notls -A %s -p %d did not answer" % (addr, port))

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


def address_in_use(rc, out, where):
    errs = errors_of(out)
    check(rc == 1 and len(errs) == 1 and where in errs[0] and
          "address in use" in errs[0].lower(),
          "expected exit 1 and one 'address in use' line naming %s, got %r %r" % (where, rc, out))


@test("moonlet -t -c examples/moonlet.conf -> 'configuration OK', exit 0, nothing served")
def t_check_example():
    rc, out = run_moonlet(["-t", "-c", EXAMPLE], plugins=[])
    eq((rc, out), (0, [EXAMPLE + ": configuration OK"]), "exit status and output")


@test("-t checks -s lua.* as a load would (noticed in issue 12's review): a memory below "
      "64 KiB and an unknown lua setting are one error line each, exit 1; a good one passes")
def t_check_lua_sets():
    for s, want in [("lua.memory=12", "-s lua.memory=12: bytes, 65536..1099511627776"),
                    ("lua.bogus=1", "-s lua.bogus: unknown setting")]:
        rc, out = run_moonlet(["-t", "-c", EXAMPLE, "-s", s], plugins=[])
        eq((rc, errors_of(out)), (1, [EXAMPLE + ": " + want]), "-t -s " + s)
    rc, out = run_moonlet(["-t", "-c", EXAMPLE, "-s", "lua.memory=1048576"], plugins=[])
    eq((rc, out), (0, [EXAMPLE + ": configuration OK"]), "-t -s lua.memory=1048576")


@test("-t reports every problem as FILE:LINE: an unknown scheme, an unknown key, a bad -o value, an unknown -o "
      "key, a bad log_level, a wrong suffix, a wrong type; exit 1")
def t_check_errors():
    with Dir() as d:
        f = d.file("bad.conf", "\n".join([
            'listen = [ "coap://[::1]:0", "mqtt://[::1]:0" ];',       # 1
            'setings = { x = 1; };',                          # 2
            'settings = { ack_timeout = "soon";',             # 3
            '             bogus = 1; };',                     # 4
            'log_level = "loud";',                            # 5
            'scripts = ( { path = "a.txt"; } );',             # 6
            'multicast = 7;',                                 # 7
        ]) + "\n")
        rc, out = run_moonlet(["-t", "-c", f], plugins=[])
        eq(rc, 1, "exit status")
        got = sorted(errors_of(out))
        want = sorted([
            f + ":1: listen: 'mqtt://[::1]:0': not SCHEME://ADDR:PORT (coap://, coaps://, "
            "coap+tcp://, coaps+tcp://, coap+ws://, coaps+ws://, http://, https://; IPv6 in "
            "brackets)",
            f + ":2: unknown key 'setings' (listen, multicast, log_level, settings, lua, "
            "plugins, scripts, watch, admin, dtls, access)",
            f + ":3: settings: ack_timeout=soon: not a number",
            f + ":4: settings: bogus: unknown setting",
            f + ':5: log_level: one of "error", "warn", "info", "debug"',
            f + ":6: scripts: 'a.txt' does not end in the expected suffix",
            f + ":7: multicast must be a list of strings: [ \"...\", ... ]",
        ])
        eq(got, want, "error lines")


@test("-l with an unknown scheme, or no listener URI at all -> one error line saying "
      "which, exit 1")
def t_cli_listen_errors():
    for uri, want in (("mqtt://[::1]:0", "not SCHEME://ADDR:PORT (coap://, coaps://, "
                                          "coap+tcp://, coaps+tcp://, coap+ws://, coaps+ws://, "
                                          "http://, https://; IPv6 in brackets)"),
                      ("http://x:y", "not SCHEME://ADDR:PORT"),
                      ("coaps://[::1]:99999", "not SCHEME://ADDR:PORT")):
        rc, out = run_moonlet(["-l", uri], plugins=[])
        errs = errors_of(out)
        check(rc == 1 and len(errs) == 1 and errs[0].startswith("-l %s: %s" % (uri, want)),
              "-l %s: exit 1 and one error line, got %r %r" % (uri, rc, out))


@test("two bad listen entries in a row (the first with an address, the second failing "
      "before one) -> two FILE:LINE errors, exit 1, no double free (found by config_fuzz)")
def t_check_listen_twice():
    with Dir() as d:
        f = d.file("l.conf", 'listen = [ "coap://[::1]:99999", "mqtt://x" ];\n')
        rc, out = run_moonlet(["-t", "-c", f], plugins=[])
        check(not any(m in "\n".join(out) for m in SANITIZER_MARKERS), "sanitizer: %r" % out)
        eq((rc, len(errors_of(out))), (1, 2), "exit status and error lines (%r)" % out)


@test("numbers are checked as written, never as libconfig 1.5 wraps them: max_sessions = "
      "4294967297, 2^63, -1, 0x100000001, 1e30 (also after a good setting on the same line), "
      "lua.memory over 1 TiB or over 64 bits -> -t says FILE:LINE with the value, exit 1; "
      "10000L, 0x2710, 1e4 -> OK")
def t_check_numbers():
    cases = [  # (the literal, what the error line must show)
        ("4294967297", "4294967297"), ("9223372036854775808", "9223372036854775808"),
        ("-1", "-1"), ("0x100000001", "4294967297"), ("1e30", "1e+30")]
    with Dir() as d:
        for lit, shown in cases:
            for line in ('settings = { max_sessions = %s; };',
                         'settings = { observe_max = 1; max_sessions = %s; };'):
                f = d.file("n.conf", "# numbers\n" + line % lit + "\n")
                rc, out = run_moonlet(["-t", "-c", f], plugins=[])
                errs = errors_of(out)
                check(rc == 1 and len(errs) == 1 and errs[0].startswith(f + ":2: ") and
                      "max_sessions" in errs[0] and shown in errs[0],
                      "%s: exit 1 and one error naming max_sessions and %s, got %r %r" % (
                          line % lit, shown, rc, out))
        for lit, shown in (("2199023255552", "2199023255552"),
                           ("18446744073709551616", "18446744073709551616")):
            f = d.file("l.conf", "\nlua = {\n  memory = %s;\n};\n" % lit)
            rc, out = run_moonlet(["-t", "-c", f], plugins=[])
            errs = errors_of(out)
            check(rc == 1 and len(errs) == 1 and errs[0].startswith(f + ":3: lua.memory") and
                  shown in errs[0], "lua.memory = %s: got %r %r" % (lit, rc, out))
        for lit in ("10000L", "0x2710", "1e4"):
            f = d.file("ok.conf", "settings = { max_sessions = %s; };\n" % lit)
            rc, out = run_moonlet(["-t", "-c", f], plugins=[])
            eq((rc, out), (0, [f + ": configuration OK"]), "max_sessions = " + lit)


@test("a syntax error -> FILE:LINE: syntax error, exit 1; a missing file -> one line; "
      "-t without -c -> one line")
def t_syntax():
    with Dir() as d:
        f = d.file("syn.conf", 'listen = [ "coap://[::1]:0" ];\nx = ;\n')
        rc, out = run_moonlet(["-t", "-c", f], plugins=[])
        eq(rc, 1, "exit status")
        check(len(errors_of(out)) == 1 and errors_of(out)[0].startswith(f + ":2: syntax error"),
              "error %r" % out)
        rc, out = run_moonlet(["-t", "-c", os.path.join(d.d, "none.conf")], plugins=[])
        check(rc == 1 and errors_of(out) == [os.path.join(d.d, "none.conf") +
                                             ": cannot read the configuration file"],
              "missing file: %r %r" % (rc, out))
        rc, out = run_moonlet(["-t"], plugins=[])
        check(rc == 1 and errors_of(out) == ["-t needs -c FILE"], "-t alone: %r" % out)


@test("serving from a file: its script (path relative to the file) with its own setting, "
      "a plugin, and settings (max_payload) in force; -o on the command line overrides")
def t_serve():
    with Dir() as d:
        d.file("a.lua", SCRIPT % "a")
        f = d.file("m.conf", '''
            scripts = ( { path = "a.lua"; settings = { word = "from-the-file"; }; } );
            plugins = ( { path = "%s"; settings = { text = "hi there"; }; } );
            settings = { max_payload = 3; };
            ''' % hello_so())
        with Server(args=["-c", f], plugins=[]) as s:
            c = s.client()
            eq(get(c, "/hello", 1).code, code(5, 0), "/hello over max_payload 3")
        with Server(args=["-c", f, "-o", "max_payload=100"], plugins=[]) as s:
            c = s.client()
            eq(get(c, "/a", 2).payload, b"from-the-file", "script setting")
            eq(get(c, "/hello", 3).payload, b"hi there", "plugin setting")


@test("SIGHUP with a bad file: rejected whole (the log says so), the old configuration keeps "
      "serving; SIGHUP with a good one: a script added, one removed, one reloaded with a new "
      "setting, one left alone; a change of the lua group reloads the scripts, not a plugin")
def t_sighup():
    with Dir() as d:
        for n in "abcd":
            d.file(n + ".lua", SCRIPT % n)
        conf = '''scripts = ( %s );\n'''
        unit = '{ path = "%s.lua"; settings = { word = "%s"; }; }'
        f = d.file("m.conf", conf % ", ".join([unit % ("a", "1"), unit % ("b", "1"),
                                                unit % ("c", "1")]))
        with Server(args=["-c", f], plugins=[]) as s:
            c = s.client()
            eq(get(c, "/a", 10).payload, b"1", "/a")
            mark = hup(s, d, conf % unit % ("a", "2") + "bogus = 1;\n")
            check(s.log.wait_for(r"error: .*m\.conf: reload rejected; the running "
                                 r"configuration stays", 5.0, mark), "no rejection line")
            check(s.log.wait_for(r"error: .*m\.conf:2: unknown key 'bogus'", 1.0, mark),
                  "no FILE:LINE for the bad key")
            eq(get(c, "/b", 11).payload, b"1", "/b still served")
            acd = conf % ", ".join([unit % ("a", "1"), unit % ("c", "2"), unit % ("d", "1")])

            def summary(text):
                m = s.log.wait_for(r"reloaded .*m\.conf: (\d+) added, (\d+) removed, (\d+) "
                                   r"reloaded, (\d+) unchanged", 5.0, hup(s, d, text))
                check(m is not None, "no reload summary")
                return m.groups()
            eq(summary(acd), ("1", "1", "1", "1"), "added, removed, reloaded, unchanged")
            eq(get(c, "/a", 12).payload, b"1", "/a unchanged")
            eq(get(c, "/b", 13).code, code(4, 4), "/b removed")
            eq(get(c, "/c", 14).payload, b"2", "/c with its new setting")
            eq(get(c, "/d", 15).payload, b"1", "/d added")
            # the lua group changes: the scripts reload, the plugin does not
            plugin = 'plugins = ( { path = "%s"; } );\n' % hello_so()
            eq(summary(acd + "lua = { instructions = 5000000; };\n" + plugin),
               ("1", "0", "3", "0"), "plugin added, scripts reloaded")
            eq(summary(acd + "lua = { instructions = 6000000; };\n" + plugin),
               ("0", "0", "3", "1"), "lua changed: scripts only")


@test("SIGHUP with max_sessions = 4294967297 (which libconfig 1.5 reads as 1): rejected "
      "whole with FILE:LINE, the running configuration stays")
def t_sighup_number():
    with Dir() as d:
        d.file("a.lua", SCRIPT % "a")
        conf = 'scripts = ( { path = "a.lua"; settings = { word = "%s"; }; } );\n'
        f = d.file("m.conf", conf % "1")
        with Server(args=["-c", f], plugins=[]) as s:
            c = s.client()
            mark = hup(s, d, conf % "2" + "settings = { max_sessions = 4294967297; };\n")
            check(s.log.wait_for(r"error: .*m\.conf: reload rejected; the running "
                                 r"configuration stays", 5.0, mark), "no rejection line")
            check(s.log.wait_for(r"error: .*m\.conf:2: .*max_sessions.*4294967297", 0.1, mark),
                  "no FILE:LINE for the number")
            eq(get(c, "/a", 40).payload, b"1", "/a with the old setting")


@test("SIGHUP changing the lua group: the scripts reload under the new limits at once "
      "(a loop within the default instruction budget then exceeds 100000 -> 5.00); a bad "
      "value fails the reload and the script serves on under the old limits")
def t_sighup_lua():
    with Dir() as d:
        d.file("l.lua", 'local moonlet = require "moonlet"\n'
               'moonlet.resource{ path = "/loop", get = function()\n'
               '  local n = 0\n  for i = 1, 200000 do n = n + i end\n'
               '  return moonlet.CONTENT, tostring(n) end }\n')
        conf = 'scripts = ( { path = "l.lua"; } );\n'
        f = d.file("m.conf", conf)
        with Server(args=["-c", f], plugins=[]) as s:
            c = s.client()
            eq(get(c, "/loop", 30).payload, b"20000100000", "default budget")
            mark = hup(s, d, conf + "lua = { instructions = 100000; };\n")
            m = s.log.wait_for(r"reloaded .*m\.conf: .* (\d+) reloaded", 5.0, mark)
            eq(m and m.group(1), "1", "scripts reloaded")
            eq(get(c, "/loop", 31).code, code(5, 0), "over the new budget")
            mark = hup(s, d, conf + "lua = { instructions = -1; };\n")
            check(s.log.wait_for(r"error: .*lua\.instructions=-1", 5.0, mark),
                  "no error for the bad value")
            eq(get(c, "/loop", 32).code, code(5, 0), "the old limits stay")
            mark = hup(s, d, conf)
            check(s.log.wait_for(r"reloaded .*m\.conf", 5.0, mark), "no reload")
            eq(get(c, "/loop", 33).payload, b"20000100000", "back to the default budget")


@test("SIGHUP moving the listener from [::1] to 127.0.0.1: the old one closes after telling "
      "its peers (a deferred answer and an observation end with 5.03), the new one serves, "
      "the owner of the ended deferred answer frees it later without harm")
def t_sighup_listeners():
    with Dir() as d:
        d.file("o.lua", 'local moonlet = require "moonlet"\n'
               'moonlet.resource{ path = "/o", obs = true, get = function()\n'
               '  return moonlet.CONTENT, "v" end }\n')
        conf = ('listen = [ "%%s" ];\nscripts = ( { path = "o.lua"; } );\n'
                'plugins = ( { path = "%s"; } );\n' % plugin_so("t_basic.so"))
        f = d.file("m.conf", conf % "coap://[::1]:0")
        with Server(args=["-c", f], plugins=[], addr=None) as s:
            old = s.port
            a = Client(old, "::1")
            reg = request(CON, GET, 1, b"ob", ["o"], options=[(OBSERVE, b"")])
            m = expect_msg(a.exchange(reg), reg, ACK, CONTENT, 1, b"ob")
            check(m.opt(OBSERVE) is not None, "registered")
            a.send(request(NON, GET, 2, b"df", ["t", "defer"], ["ms=1500"]))
            eq(get(a, "/o", 6).payload, b"v", "/o (the deferred request is in)")
            # and an independent observer: libcoap's client
            obs = subprocess.Popen([COAP_CLIENT, "-v", "7", "-s", "3", "-B", "3",
                                    "coap://[::1]:%d/o" % old], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            seen = []
            for line in iter(obs.stdout.readline, b""):
                seen.append(line.decode("utf-8", "replace"))
                if re.search(r"t:ACK c:2\.05 .*Observe:", seen[-1]):   # registered
                    break
            mark = hup(s, d, conf % "coap://127.0.0.1:0")
            new = s.log.wait_for(r"ready udp://127\.0\.0\.1:(\d+)", 5.0, mark)
            check(new is not None, "no ready line for the new listener")
            check(s.log.wait_for(r"closed udp://\[::1\]:%d" % old, 1.0, mark),
                  "no line for the closed listener")
            m = s.log.wait_for(r"listeners: (\d+) opened, (\d+) closed", 1.0, mark)
            eq(m and m.groups(), ("1", "1"), "listeners opened, closed")
            got = sorted((x.token, x.type, x.code, x.opt(OBSERVE)) for x in
                         (a.recv(2.0), a.recv(2.0)) if x is not None)
            eq(got, [(b"df", NON, code(5, 3), None), (b"ob", NON, code(5, 3), None)],
               "the goodbyes: (token, type, code, Observe)")
            text = "".join(seen) + obs.communicate(timeout=10)[0].decode("utf-8", "replace")
            # (its diagnostic goes when the 3x rule would refuse it: an unverified peer)
            check(re.search(r"t:NON c:5\.03 ", text),
                  "coap-client saw no final 5.03:\n%s" % text[-1500:])
            try:
                a.expect_silence(0.3, request(CON, GET, 3, b"x", ["o"]))
            except AssertionError as e:     # ICMP unreachable is as good as silence
                check("unreachable" in str(e), str(e))
            b = Client(int(new.group(1)), "127.0.0.1")
            eq(get(b, "/o", 4).payload, b"v", "/o on the new listener")
            rc, out, err = coap_client("-m", "get", "coap://127.0.0.1:%s/o" % new.group(1))
            eq((out.strip(), err), ("v", ""), "coap-client on the new listener")
            # its deadline comes after the first one's: when it answers, t_basic has sent
            # the ended pending (MOONLET_EGONE) and freed it
            late = request(CON, GET, 5, b"l8", ["t", "defer"], ["ms=1500"])
            m = b.exchange(late)
            if m.code == 0:
                m = b.recv(5.0)
            eq(m and (m.code, m.payload), (CONTENT, b"late"), "a deferred answer on the new")
            eq(s.stop(), 0, "exit status")


@test("SIGHUP adding a listener whose port is taken: one error line, the rest of the reload "
      "stands and the first listener serves on; the next SIGHUP (port free) opens it")
def t_sighup_port_taken():
    with Dir() as d:
        d.file("a.lua", SCRIPT % "a")
        conf = 'listen = [ %s ];\nscripts = ( { path = "a.lua"; } );\n'
        f = d.file("m.conf", conf % '"coap://[::1]:0"')
        with Server(args=["-c", f], plugins=[], addr=None) as s, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as blocker:
            blocker.bind(("::1", 0))
            taken = blocker.getsockname()[1]
            both = conf % ('"coap://[::1]:0", "coap://[::1]:%d"' % taken)
            mark = hup(s, d, both)
            m = s.log.wait_for(r"listeners: (\d+) opened, (\d+) closed", 5.0, mark)
            eq(m and m.groups(), ("0", "0"), "listeners opened, closed")
            check(s.log.wait_for(r"error: udp://\[::1\]:%d: address in use" % taken,
                                 0.1, mark), "no error line for the taken port")
            eq(get(Client(s.port, "::1"), "/a", 20).payload, b"none", "the first listener")
            blocker.close()
            mark = hup(s, d, both)
            m = s.log.wait_for(r"listeners: (\d+) opened, (\d+) closed", 5.0, mark)
            eq(m and m.groups(), ("1", "0"), "listeners opened, closed (retried)")
            eq(get(Client(taken, "::1"), "/a", 21).payload, b"none", "the retried listener")


@test("start-up on a port libcoap's coap-server-notls holds (on ::1: moonlet on ::1 and on "
      "::; on 127.0.0.1: moonlet on :: and on 127.0.0.1) -> exit 1, 'address in use'")
def t_port_held_by_libcoap():
    for held, ours in (("::1", "::1"), ("::1", "::"), ("127.0.0.1", "::"),
                       ("127.0.0.1", "127.0.0.1")):
        port = free_port(held)
        with LibcoapServer(held, port):
            rc, out = run_moonlet(["-a", ours, "-p", str(port)], plugins=[hello_so()])
            address_in_use(rc, out, ("[%s]:%d" if ":" in ours else "%s:%d") % (ours, port))


@test("SIGHUP adding a listener on a port coap-server-notls holds: one 'address in use' "
      "error line, the rest of the reload stands, the first listener serves on")
def t_sighup_port_libcoap():
    with Dir() as d:
        d.file("a.lua", SCRIPT % "a")
        conf = 'listen = [ %s ];\nscripts = ( { path = "a.lua"; } );\n'
        f = d.file("m.conf", conf % '"coap://[::1]:0"')
        port = free_port("::1")
        with Server(args=["-c", f], plugins=[], addr=None) as s, LibcoapServer("::1", port):
            mark = hup(s, d, conf % ('"coap://[::1]:0", "coap://[::1]:%d"' % port))
            m = s.log.wait_for(r"listeners: (\d+) opened, (\d+) closed", 5.0, mark)
            eq(m and m.groups(), ("0", "0"), "listeners opened, closed")
            errs = errors_of(s.log.lines[mark:])
            check(len(errs) == 1 and "udp://[::1]:%d: address in use" % port in errs[0],
                  "one error line for the held port: %r" % errs)
            eq(get(Client(s.port, "::1"), "/a", 22).payload, b"none", "the first listener")


if __name__ == "__main__":
    main()
