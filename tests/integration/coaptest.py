"""coaptest -- helpers for moonlet's integration tests (Python 3, stdlib only).

  Server          start build/moonlet on loopback (port 0), wait for its ready line,
                  keep its log, stop it by PID (SIGTERM, then SIGKILL).
  run_moonlet     run moonlet expecting it to exit (start-up errors).
  Client          a raw UDP CoAP client: send datagrams, receive with a timeout.
  encode / parse  the RFC 7252 §3 message format, options with delta/length nibbles.
  coap_client     run coap-client-notls with a timeout -> (rc, stdout, stderr).
  link_parse      RFC 6690 link-format -> [(href, {attr: [values]})].
  @test / main    a tiny registry and TAP-like runner.

Every server started here is killed by its PID at the end of its test or at exit.
"""

import argparse
import atexit
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

CON, NON, ACK, RST = 0, 1, 2, 3
TYPES = ("CON", "NON", "ACK", "RST")

# option numbers (RFC 7252 §12.2, 7641, 7959, 7967, 9175, 8613)
IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT = 1, 3, 4, 5, 6, 7
LOCATION_PATH, OSCORE, URI_PATH, CONTENT_FORMAT, MAX_AGE, URI_QUERY = 8, 9, 11, 12, 14, 15
ACCEPT, PROXY_URI, PROXY_SCHEME, ECHO, NO_RESPONSE = 17, 35, 39, 252, 258


def code(c, d):
    return (c << 5) | d


GET, POST, PUT, DELETE, FETCH = 1, 2, 3, 4, 5
CONTENT, CHANGED, DELETED = code(2, 5), code(2, 4), code(2, 2)


def code_str(c):
    return "%d.%02d" % (c >> 5, c & 31)


def h(text):
    """Hex with spaces -> bytes: h('40 01 ab cd')."""
    return bytes.fromhex(text)


def hx(data):
    return data.hex(" ") if data is not None else "(nothing)"


# ---- message codec ---------------------------------------------------------------------

def uint_bytes(v):
    return v.to_bytes((v.bit_length() + 7) // 8, "big")


def _value(v):
    if isinstance(v, int):
        return uint_bytes(v)
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


def _nibble(n):
    """An option delta or length -> (nibble, extension bytes)."""
    if n < 13:
        return n, b""
    if n < 269:
        return 13, bytes([n - 13])
    return 14, (n - 269).to_bytes(2, "big")


def encode_options(options):
    """[(number, value)] -> bytes; stable sort, so repeated options keep their order."""
    out, prev = bytearray(), 0
    for num, val in sorted(options, key=lambda o: o[0]):
        val = _value(val)
        dn, dx = _nibble(num - prev)
        ln, lx = _nibble(len(val))
        out += bytes([dn << 4 | ln]) + dx + lx + val
        prev = num
    return bytes(out)


def encode(mtype, mcode, mid, token=b"", options=(), payload=b"", ver=1):
    head = bytes([ver << 6 | mtype << 4 | len(token), mcode, mid >> 8, mid & 255])
    pl = _value(payload)
    return head + bytes(token) + encode_options(options) + (b"\xff" + pl if pl else b"")


def request(mtype, method, mid, token=b"", path=(), query=(), options=(), payload=b""):
    """A request: path and query are lists of segments / items (str or bytes)."""
    if isinstance(path, str):
        path = [s for s in path.split("/") if s]
    opts = [(URI_PATH, s) for s in path] + [(URI_QUERY, q) for q in query]
    return encode(mtype, method, mid, token, opts + list(options), payload)


class Msg:
    def __init__(self, raw):
        self.raw = raw
        if len(raw) < 4:
            raise ValueError("short datagram")
        self.ver, self.type, tkl = raw[0] >> 6, (raw[0] >> 4) & 3, raw[0] & 15
        self.code, self.mid = raw[1], raw[2] << 8 | raw[3]
        if tkl > 8 or len(raw) < 4 + tkl:
            raise ValueError("bad token length")
        self.token = raw[4:4 + tkl]
        self.options, self.payload = [], b""
        i, num = 4 + tkl, 0
        while i < len(raw):
            if raw[i] == 0xFF:
                self.payload = raw[i + 1:]
                if not self.payload:
                    raise ValueError("payload marker without payload")
                break
            dn, ln = raw[i] >> 4, raw[i] & 15
            i += 1
            d, i = self._ext(raw, dn, i)
            n, i = self._ext(raw, ln, i)
            num += d
            if i + n > len(raw):
                raise ValueError("option past the end")
            self.options.append((num, raw[i:i + n]))
            i += n

    @staticmethod
    def _ext(raw, nib, i):
        if nib < 13:
            return nib, i
        if nib == 13 and i < len(raw):
            return raw[i] + 13, i + 1
        if nib == 14 and i + 1 < len(raw):
            return (raw[i] << 8 | raw[i + 1]) + 269, i + 2
        raise ValueError("bad option nibble")

    def opts(self, num):
        return [v for n, v in self.options if n == num]

    def opt(self, num, default=None):
        v = self.opts(num)
        return v[0] if v else default

    def opt_uint(self, num, default=None):
        v = self.opt(num)
        return int.from_bytes(v, "big") if v is not None else default

    @property
    def code_str(self):
        return code_str(self.code)

    def __repr__(self):
        return "%s %s mid=%04x tok=%s opts=%s pl=%r  [%s]" % (
            TYPES[self.type], self.code_str, self.mid, self.token.hex() or "-",
            [(n, v.hex()) for n, v in self.options], self.payload[:60], hx(self.raw[:80]))


def parse(raw):
    return Msg(raw)


# ---- raw UDP client -----------------------------------------------------------------------

class Client:
    """A UDP socket on loopback connected to the server: only its datagrams arrive.
    Like every RFC 7252 endpoint it answers a CoAP ping (an Empty CON) with RST (§4.3),
    which is how the server verifies its address (RFC 9175 §2.4); answer_pings=False
    leaves pings to the test (it then sees them like any datagram)."""

    def __init__(self, port, host="::1", answer_pings=True):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.connect((host, port))
        self.port, self.host = port, host
        self.answer_pings = answer_pings
        self.pings = 0          # pings answered
        self.sent = []          # datagrams sent, for diagnostics

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, dgram):
        self.sent.append(dgram)
        self.sock.send(dgram)

    def recv_raw(self, timeout):
        """One datagram, or None after timeout seconds (pings answered on the way)."""
        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                return None
            try:
                raw = self.sock.recv(70000)
            except ConnectionRefusedError:
                raise AssertionError("ICMP port unreachable: the server is not listening")
            if self.answer_pings and len(raw) == 4 and raw[0] == 0x40 and raw[1] == 0:
                self.pings += 1
                self.sock.send(bytes([0x70, 0]) + raw[2:4])
                continue
            return raw

    def recv(self, timeout=5.0):
        """One parsed message, or None after timeout (unparsable: AssertionError)."""
        raw = self.recv_raw(timeout)
        if raw is None:
            return None
        try:
            return Msg(raw)
        except ValueError as e:
            raise AssertionError("unparsable datagram from the server (%s): %s" % (e, hx(raw)))

    def exchange(self, dgram, timeout=5.0):
        """Send, then return the first answer; AssertionError if none within timeout."""
        self.send(dgram)
        m = self.recv(timeout)
        if m is None:
            raise AssertionError("no answer within %.1fs to %s" % (timeout, hx(dgram)))
        return m

    def expect_silence(self, timeout=0.4, after=None):
        """Nothing may arrive for timeout seconds (after sending `after`, if given)."""
        if after is not None:
            self.send(after)
        raw = self.recv_raw(timeout)
        if raw is not None:
            sent = "  sent: %s\n" % hx(after) if after is not None else ""
            raise AssertionError("expected silence, got a datagram\n%s  got:  %s%s" % (
                sent, hx(raw), "  (%r)" % _try_parse(raw)))

    def drain(self, timeout=0.05):
        out = []
        while True:
            raw = self.recv_raw(timeout)
            if raw is None:
                return out
            out.append(raw)


def _try_parse(raw):
    try:
        return Msg(raw)
    except ValueError as e:
        return "unparsable: %s" % e


# ---- assertions with wire-level diagnostics ----------------------------------------------

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(got, exp, what):
    if got != exp:
        raise AssertionError("%s: expected %r, got %r" % (what, exp, got))


def expect_bytes(got, exp, sent=None, what="reply"):
    if got != exp:
        s = "  sent:     %s\n" % hx(sent) if sent is not None else ""
        raise AssertionError("%s differs\n%s  expected: %s\n  got:      %s" % (
            what, s, hx(exp), hx(got)))


def expect_msg(m, sent, mtype=None, mcode=None, mid=None, token=None, payload=None):
    """Compare the fields given; the diagnostic shows both datagrams."""
    exp = {"type": mtype, "code": mcode, "mid": mid, "token": token, "payload": payload}
    got = {"type": m.type, "code": m.code, "mid": m.mid, "token": m.token, "payload": m.payload}
    bad = [k for k, v in exp.items() if v is not None and got[k] != v]
    if bad:
        fmt = {"type": lambda t: TYPES[t], "code": code_str, "mid": lambda x: "%04x" % x,
               "token": lambda t: t.hex() or "-", "payload": repr}
        lines = ["  %s: expected %s, got %s" % (k, fmt[k](exp[k]), fmt[k](got[k])) for k in bad]
        raise AssertionError("reply differs\n%s\n  sent: %s\n  got:  %r" % (
            "\n".join(lines), hx(sent), m))
    return m


# ---- the server process ---------------------------------------------------------------------

READY_RE = re.compile(r"ready udp://\S+:(\d+)")
READY_DTLS_RE = re.compile(r"ready dtls://\S+:(\d+)")
_live = []          # every Server not yet stopped (atexit kills them by PID)
_started = []       # servers started by the running test (the runner stops them)
cfg = argparse.Namespace(moonlet="build/moonlet", plugins=[], verbose=False)


class ProcLog:
    """Read a process's merged stdout/stderr in a thread; wait for a pattern."""

    def __init__(self, proc):
        self.proc, self.lines, self.eof = proc, [], False
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in iter(self.proc.stdout.readline, b""):
            with self.cv:
                self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def wait_for(self, pattern, timeout, start=0):
        """First match of pattern in a line at index >= start, or None (timeout or EOF)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cv.wait(left)

    def text(self):
        with self.cv:
            return "\n".join(self.lines)


class Server:
    """moonlet on [::1]:<ephemeral>. opts: {'ack_timeout': 0.3}; sets: ['t_basic.k=v'].
    addr None: no -a/-p (the configuration file in args says where; port is the first
    ready line's). dtls: wait for a coaps:// listener's ready line too (dtls_port)."""

    def __init__(self, opts=None, sets=(), plugins=None, args=(), addr="::1", port=0,
                 dtls=False):
        argv = [cfg.moonlet] + (["-a", addr, "-p", str(port)] if addr else [])
        for k, v in (opts or {}).items():
            argv += ["-o", "%s=%s" % (k, v)]
        for s in sets:
            argv += ["-s", s]
        if cfg.verbose:
            argv.append("-v")
        argv += list(args) + list(cfg.plugins if plugins is None else plugins)
        self.argv, self.addr = argv, addr
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pid, self.rc, self.died = self.proc.pid, None, None
        _live.append(self)
        _started.append(self)
        self.log = ProcLog(self.proc)
        m = self.log.wait_for(READY_RE.pattern, 5.0)
        if not m:
            self.stop()
            raise AssertionError("moonlet did not print its ready line within 5 s\n  argv: %s\n"
                                 "  log:\n%s" % (" ".join(argv), indent(self.log.text())))
        self.port = int(m.group(1))
        self.dtls_port = None
        if dtls:        # a coaps:// listener too: its port from its ready line
            m = self.log.wait_for(READY_DTLS_RE.pattern, 5.0)
            self.dtls_port = int(m.group(1)) if m else None

    def client(self, host=None, answer_pings=True):
        return Client(self.port, host or self.addr, answer_pings)

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for pid %d" % self.pid)

    def stop(self, timeout=5.0):
        """SIGTERM by PID, wait, SIGKILL if needed. Returns the exit status."""
        if self.rc is not None:
            return self.rc
        if self.proc.poll() is not None:
            self.died = self.proc.returncode    # gone before we asked
        else:
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        self.rc = self.proc.returncode
        self.log.t.join(2)
        if self in _live:
            _live.remove(self)
        return self.rc

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


@atexit.register
def _kill_all():
    for s in list(_live):
        try:
            os.kill(s.pid, signal.SIGKILL)
            s.proc.wait(2)
        except (OSError, subprocess.TimeoutExpired):
            pass


def run_moonlet(args, timeout=5.0, plugins=None):
    """Run moonlet expecting it to exit: (rc, output lines). rc None: still running (killed)."""
    argv = [cfg.moonlet] + list(args) + list(cfg.plugins if plugins is None else plugins)
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = None
    return rc, out.decode("utf-8", "replace").splitlines()


def stats(srv):
    """The server's counters, from the line SIGUSR1 makes it log: {'sessions': 3, ...}."""
    start = len(srv.log.lines)
    os.kill(srv.pid, signal.SIGUSR1)
    m = srv.log.wait_for(r"stats: (.*)", 5.0, start)
    check(m is not None, "no stats line after SIGUSR1")
    words = m.group(1).split()
    return {words[i]: int(words[i + 1]) for i in range(len(words) - 1)
            if re.fullmatch(r"\d+", words[i + 1]) and not re.fullmatch(r"\d+", words[i])}


def free_port(host="::1"):
    """A UDP port nobody holds right now on host."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- coap-client-notls --------------------------------------------------------------------

COAP_CLIENT = "coap-client-notls"


def coap_client(*args, timeout=15.0, wait=5):
    """coap-client-notls -B wait ARGS -> (rc, stdout, stderr); rc None on timeout.
    coap-client-notls prints a 2.xx payload on stdout; for a 4.xx/5.xx response it prints
    one line 'C.DD[ diagnostic payload]' on stderr, and exits 0 either way."""
    argv = [COAP_CLIENT, "-B", str(wait)] + [str(a) for a in args]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def error_code_of(stderr):
    """The 'C.DD' coap-client-notls printed for an error response, or None."""
    m = re.search(r"^([45]\.\d\d)\b", stderr, re.M)
    return m.group(1) if m else None


# ---- RFC 6690 link format -----------------------------------------------------------------

def link_parse(text):
    """'<a>;x=1;y="p q";z,<b>' -> [('a', {'x': ['1'], 'y': ['p q'], 'z': [None]}), ...].
    A strict little parser: quoted strings with backslash escapes, commas inside quotes."""
    links, i, n = [], 0, len(text)

    def fail(why):
        raise AssertionError("link-format parse error at %d (%s): %r" % (i, why, text[i:i + 40]))

    while i < n:
        if text[i] != "<":
            fail("expected '<'")
        j = text.find(">", i)
        if j < 0:
            fail("unterminated URI reference")
        href, attrs, i = text[i + 1:j], {}, j + 1
        while i < n and text[i] == ";":
            i += 1
            m = re.compile(r"[A-Za-z0-9!#$&+\-.^_`|~*]+").match(text, i)
            if not m:
                fail("expected a parameter name")
            name, i, val = m.group(0), m.end(), None
            if i < n and text[i] == "=":
                i += 1
                if i < n and text[i] == '"':
                    i += 1
                    buf = []
                    while i < n and text[i] != '"':
                        if text[i] == "\\" and i + 1 < n:
                            i += 1
                        buf.append(text[i])
                        i += 1
                    if i >= n:
                        fail("unterminated quoted string")
                    i += 1
                    val = "".join(buf)
                else:
                    m = re.compile(r"[^;,\s\"]*").match(text, i)
                    val, i = m.group(0), m.end()
            attrs.setdefault(name, []).append(val)
        links.append((href, attrs))
        if i < n:
            if text[i] != ",":
                fail("expected ',' or end")
            i += 1
    return links


# ---- registry and runner -----------------------------------------------------------------

_tests = []
_notes = []
# a server built with `make SAN=1` reports here (on its stderr, which we keep)
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def test(name):
    """Register a test function under a name (prefix it with the MALFORMED.md row IDs)."""
    def deco(fn):
        _tests.append((name, fn))
        return fn
    return deco


def note(text):
    """A comment printed under the test's result line (documented observations)."""
    _notes.append(text)


def indent(text, pre="    "):
    return "\n".join(pre + line for line in text.splitlines())


def _teardown():
    """Stop the servers the test started; report any that died on its own."""
    problems = []
    while _started:
        s = _started.pop()
        s.stop()
        if s.died is not None:
            problems.append("server pid %d died during the test (status %d)\n  argv: %s" % (
                s.pid, s.died, " ".join(s.argv)))
        text = s.log.text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                problems.append("server pid %d log has a sanitizer report (%r):\n%s" % (
                    s.pid, marker, indent(text[max(0, text.index(marker) - 200):][:3000])))
                break
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description="moonlet integration tests")
    ap.add_argument("--moonlet", default="build/moonlet")
    ap.add_argument("--plugins", nargs="+", default=[])
    ap.add_argument("-k", dest="pattern", help="run only tests whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the tests and exit")
    ap.add_argument("-v", dest="verbose", action="store_true", help="start moonlet with -v")
    a = ap.parse_args(argv)
    cfg.moonlet, cfg.plugins, cfg.verbose = a.moonlet, a.plugins, a.verbose
    tests = [(n, f) for n, f in _tests if not a.pattern or a.pattern.lower() in n.lower()]
    if a.list:
        for n, _ in tests:
            print(n)
        return 0
    passed = failed = 0
    t0 = time.monotonic()
    for num, (name, fn) in enumerate(tests, 1):
        del _notes[:]
        diag, logs = None, []
        t1 = time.monotonic()
        try:
            fn()
        except AssertionError as e:
            diag = str(e) or "assertion failed"
        except Exception:
            diag = traceback.format_exc().rstrip()
        logs = [(s.pid, s.log.text()) for s in _started]
        problems = _teardown()
        if problems and diag is None:
            diag = "\n".join(problems)
        elif problems:
            diag += "\n" + "\n".join(problems)
        dt = time.monotonic() - t1
        if diag is None:
            passed += 1
            print("ok %d - %s  (%.2fs)" % (num, name, dt))
        else:
            failed += 1
            print("not ok %d - %s  (%.2fs)" % (num, name, dt))
            print(indent(diag))
            for pid, text in logs:
                tail = text.splitlines()[-15:]
                print("    server %d log (last %d lines):" % (pid, len(tail)))
                print(indent("\n".join(tail), "      "))
        for line in _notes:
            print(indent(line, "    # "))
        sys.stdout.flush()
    print("# %d tests in %.1fs" % (len(tests), time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
