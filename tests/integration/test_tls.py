#!/usr/bin/env python3
"""test_tls -- CoAP over TLS (coaps+tcp://, RFC 8323 §4.1, §8.2) with independent peers:
libcoap's coap-client-gnutls and coap-client-openssl (two TLS stacks), gnutls-cli (its
--priority forces TLS 1.2 or 1.3, --alpn, PSK) used as a raw pipe for RFC 8323 frames, and
Python's ssl module (OpenSSL; X.509 only: Python 3.11 has no TLS-PSK) for raw frames, the
handshake's stages and how a connection ends. What plain coap+tcp:// does (framing, CSM,
signaling, the MALFORMED.md rows) is test_tcp.py's; this file tests what TLS adds.

  python3 tests/integration/test_tls.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Every test starts its own server from a configuration file (listeners coap://[::1]:0,
coap+tcp://127.0.0.1:0 and coaps+tcp://127.0.0.1:0, a `dtls = {...}` group, the Lua script
below) plus the --plugins; ports come from the `ready ...` lines, the runner stops it by PID.
Certificates and raw public keys are made once at test time with certtool (as test_dtls.py).
IPv4 only for TLS: libcoap 4.3.1 over OpenSSL sends an IPv6 literal as SNI, which GnuTLS
refuses.
"""

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (CONTENT, GET, OBSERVE, Server, check, eq, hx, main,  # noqa: E402
                      note, stats, test)
from rfc8323 import (CSM_OK, OPT_BWT, OPT_HOLD_OFF, OPT_MMS, PING, PONG,  # noqa: E402
                     FrameConn, frame, req)
from tlskeys import certs, spki_sha256  # noqa: E402

PSK = [("sensor-1", "secret1"), ("gw", "gateway-key")]
READY_TLS_RE = re.compile(r"ready coaps\+tcp://\S+:(\d+)")
READY_TCP_RE = re.compile(r"ready coap\+tcp://\S+:(\d+)")
FAIL_RE = r"handshake with 127\.0\.0\.1:\d+ failed"
X509_ID = "x509|CN=sensor-7,O=moonlet|dns:sensor-7.example"

# ---- material -------------------------------------------------------------------------

SECURE_RES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "lua", "secure_res.lua")


BIG = bytes(65 + (i * 7) % 26 for i in range(262144))
LISTEN = '"coap://[::1]:0", "coap+tcp://127.0.0.1:0", "coaps+tcp://127.0.0.1:0"'


def psk_group(keys=PSK):
    return "psk = ( %s );" % ", ".join('{ identity = "%s"; key = "%s"; }' % kv for kv in keys)


def x509_group(extra=""):
    c = certs()
    return 'certificate = "%s"; key = "%s"; ca = "%s"; %s' % (
        c("srv.pem"), c("srv.key"), c("ca.pem"), extra)


def tls_conf(d, dtls, listen=LISTEN, extra=""):
    script = os.path.join(d, "tls.lua")
    shutil.copy(SECURE_RES, script)
    path = os.path.join(d, "moonlet.conf")
    with open(path, "w") as f:
        f.write("listen = [ %s ];\n" % listen)
        f.write("dtls = { %s };\n" % dtls)
        f.write('scripts = ( { path = "%s"; } );\n' % script)
        f.write(extra + "\n")
    return path


class Tls:
    """A moonlet with a coaps+tcp:// listener (and coap+tcp://, coap://) on loopback; its
    configuration in a temp dir. dtls: the credentials (default: the PSKs and X.509)."""

    def __init__(self, dtls=None, opts=None, extra=""):
        self.dir = tempfile.mkdtemp(prefix="moonlet-tls-conf-")
        if dtls is None:
            dtls = psk_group() + " " + x509_group()
        self.conf = tls_conf(self.dir, dtls, extra=extra)
        self.srv = Server(opts=opts, addr=None, args=["-c", self.conf])
        m = self.srv.log.wait_for(READY_TLS_RE.pattern, 5.0)
        check(m, "no 'ready coaps+tcp://' line:\n" + self.srv.log.text())
        self.port = int(m.group(1))
        m = self.srv.log.wait_for(READY_TCP_RE.pattern, 5.0)
        check(m, "no 'ready coap+tcp://' line:\n" + self.srv.log.text())
        self.tcp_port = int(m.group(1))
        self.uri = "coaps+tcp://127.0.0.1:%d" % self.port
        self.plain = "coap+tcp://127.0.0.1:%d" % self.tcp_port

    def stats(self):
        return stats(self.srv)

    def mark(self):
        return len(self.srv.log.lines)

    def lines(self, start, pattern=None, barrier=False):
        """Log lines from index start (those matching pattern). barrier: first make the server
        log its stats line and wait for it, so every line written before has been read."""
        if barrier:
            self.stats()
        return [l for l in self.srv.log.lines[start:] if pattern is None or re.search(pattern, l)]

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()
        shutil.rmtree(self.dir, True)


# ---- libcoap clients --------------------------------------------------------------------

def client(kind, *args, wait=5, timeout=30):
    """coap-client-gnutls / -openssl / -notls -> (rc, stdout, stderr)."""
    argv = ["coap-client-" + kind, "-B", str(wait)] + [str(a) for a in args]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def psk_args(ident="sensor-1", key=None):
    return ["-u", ident, "-k", key or dict(PSK)[ident]]


def cert_args(name="cli"):
    c = certs()
    return ["-c", c(name + ".pem"), "-j", c(name + ".key"), "-C", c("ca.pem")]


def get(kind, uri, *args, wait=5):
    """The payload of a 2.xx (stdout) or the 'C.DD ...' line of an error (stderr)."""
    rc, out, err = client(kind, *(list(args) + [uri]), wait=wait)
    return out if out else err


def refused_by_tls(kind, uri, *args):
    """A libcoap client whose handshake fails: no response at all, the TLS error it printed
    (libcoap 4.3.1 logs its warnings on stdout)."""
    rc, out, err = client(kind, *(list(args) + [uri]), wait=3)
    text = out + err
    check(not re.search(r"^([245]\.\d\d|(psk|x509|anon|rpk|none)\||Hello)", text, re.M),
          "coap-client-%s %s: a response after a failed handshake? stdout %r stderr %r" % (
              kind, " ".join(map(str, args)), out, err))
    check(re.search(r"TLS|[Aa]lert|handshake|SSL|cannot send", text),
          "coap-client-%s: no TLS error reported: stdout %r stderr %r" % (kind, out, err))
    return text


# ---- raw TLS connections ------------------------------------------------------------------

def py_context(version=None, alpn=None, cert=None):
    """An OpenSSL client context (Python's ssl) trusting our CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs()("ca.pem"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(certs()(cert + ".pem"), certs()(cert + ".key"))
    return ctx


class PyTls(FrameConn):
    """X.509 through Python's ssl module (OpenSSL); the server's certificate is verified.
    .eof: 'close_notify', 'no close_notify' (the TCP stream ended without one), 'reset' or
    'alert: ...'."""

    def __init__(self, port, csm=CSM_OK, ctx=None, start=True, timeout=5.0):
        FrameConn.__init__(self)
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = s
        self.sock = (ctx or py_context()).wrap_socket(s, server_hostname="127.0.0.1",
                                                      suppress_ragged_eofs=False)
        if start:
            self.start(csm)

    def _send(self, data):
        self.sock.sendall(data)

    def _read(self, timeout):
        if not self.sock.pending():
            r, _, _ = select.select([self.sock], [], [], timeout)
            if not r:
                return None
        self.sock.settimeout(max(timeout, 0.5))
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, ssl.SSLWantReadError):
            return None
        except ssl.SSLEOFError:
            self.eof = "no close_notify"
            return b""
        except ssl.SSLError as e:
            self.eof = "alert: %s" % e
            return b""
        except (ConnectionResetError, BrokenPipeError):
            self.eof = "reset"
            return b""
        if not data:
            self.eof = "close_notify"
        return data

    def close(self):
        self.sock.close()


class CliTls(FrameConn):
    """gnutls-cli as a raw pipe (PSK, forced versions, ALPN): our frames go to its stdin, the
    server's bytes come on its stdout; its own messages go to a log file (.log())."""

    def __init__(self, port, ident="sensor-1", key=None, priority=None, alpn=None,
                 args=(), csm=CSM_OK, start=True):
        FrameConn.__init__(self)
        fd, self.logfile = tempfile.mkstemp(prefix="moonlet-gnutls-cli-")
        os.close(fd)
        argv = ["gnutls-cli", "-p", str(port), "--logfile", self.logfile]
        if ident:
            argv += ["--pskusername", ident, "--pskkey",
                     (key or dict(PSK)[ident]).encode().hex()]
        argv += ["--priority", priority or "NORMAL:-KX-ALL:+ECDHE-PSK:+PSK"]
        if alpn:
            argv += ["--alpn", alpn]
        argv += list(args) + ["127.0.0.1"]
        self.argv, self.text = argv, ""
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        if start:
            self.start(csm)

    def _send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def _read(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if not r:
            return None
        data = os.read(self.p.stdout.fileno(), 1 << 16)
        if not data:
            self.eof = "gnutls-cli exited"
        return data

    def finish(self):
        """Close our side, wait for gnutls-cli to exit: its log (written at exit)."""
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait()
        if self.logfile is None:
            return self.text
        with open(self.logfile, errors="replace") as f:
            self.text = f.read()
        os.unlink(self.logfile)
        self.logfile = None
        return self.text

    def close(self):
        self.finish()


def gnutls_cli_handshake(port, priority, ident="sensor-1", key=None, alpn=None):
    """One gnutls-cli handshake with stdin closed at once: (exit status, its log)."""
    c = CliTls(port, ident=ident, key=key, priority=priority, alpn=alpn, start=False)
    text = c.finish()
    return c.p.returncode, text


def tcp_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def wait_closed(s, timeout):
    """Read (and discard) until the server closes s: seconds it took, or None if still open.
    The bytes that came are in the second item (an alert record, say)."""
    t0, got = time.monotonic(), b""
    deadline = t0 + timeout
    while True:
        r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            return None, got
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return time.monotonic() - t0, got
        if not d:
            return time.monotonic() - t0, got
        got += d


def client_hello():
    """A real TLS ClientHello (Python's ssl through memory BIOs)."""
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = py_context().wrap_bio(inc, outg, server_hostname="127.0.0.1")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def serving(t, kind="gnutls"):
    eq(get(kind, t.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", "a good client")


# ---- tests ----------------------------------------------------------------------------

@test("PSK with coap-client-gnutls and coap-client-openssl over coaps+tcp://: GET /who names "
      "the identity; PUT -f then GET /t/store; /.well-known/core?href=/t/* filters; "
      "/t/defer?ms=300 answers 'late' after at least 0.3 s")
def t_psk_clients():
    with Tls() as t, tempfile.TemporaryDirectory() as d:
        for kind in ("gnutls", "openssl"):
            eq(get(kind, t.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", kind)
            eq(get(kind, t.uri + "/who", *psk_args("gw")).strip(), "psk|gw|", kind)
            eq(get(kind, t.uri + "/hello", *psk_args()).strip(), "Hello, world", kind)
            f = os.path.join(d, kind)
            with open(f, "w") as fh:
                fh.write("stored over TLS by " + kind)
            rc, out, err = client(kind, "-m", "put", "-f", f, *psk_args(), t.uri + "/t/store")
            check(err == "" or not re.search(r"^[45]\.\d\d", err, re.M), "PUT: %r" % err)
            eq(get(kind, t.uri + "/t/store", *psk_args()).strip(), "stored over TLS by " + kind,
               kind + " GET after PUT")
            text = get(kind, t.uri + "/.well-known/core?href=/t/*", *psk_args())
            links = re.findall(r"<([^>]*)>", text)
            check(links and all(h.startswith("/t/") for h in links) and "/t/store" in links
                  and "/t/hidden" not in links and "/hello" not in links,
                  "%s href=/t/* filter: %r" % (kind, text))
            t0 = time.monotonic()
            eq(get(kind, t.uri + "/t/defer?ms=300", *psk_args()).strip(), "late", kind + " defer")
            dt = time.monotonic() - t0
            check(dt >= 0.3, "%s: the deferred answer came after %.2fs" % (kind, dt))
        s = t.stats()
        check(s["dtls_full"] == 14 and s["dtls_fail_psk"] == 0, "handshakes counted: %r" % s)


@test("X.509 with both stacks: a CA-signed client certificate is the identity req.identity "
      "shows (x509|subject|dns:...) and admits it to /sensors (x509:dns:*.example); a client "
      "without a certificate is anonymous (client_auth optional): /who anon, /sensors 4.01")
def t_x509_clients():
    c = certs()
    with Tls() as t:
        for kind in ("gnutls", "openssl"):
            eq(get(kind, t.uri + "/who", *cert_args()).strip(), X509_ID, kind + " identity")
            eq(get(kind, t.uri + "/sensors", *cert_args()).strip(), "sensors", kind + " allow")
            eq(get(kind, t.uri + "/hello", *cert_args()).strip(), "Hello, world", kind)
        eq(get("gnutls", t.uri + "/who", "-C", c("ca.pem")).strip(), "anon||", "anonymous")
        check(get("gnutls", t.uri + "/sensors", "-C", c("ca.pem")).startswith("4.01"),
              "anonymous on /sensors")


@test("access: /secret (secure = true) is 4.01 over coap+tcp:// and 2.05 over coaps+tcp://; "
      "/sensors (allow psk:sensor-*) is 2.05 for sensor-1, 4.03 for gw; /.well-known/core over "
      "TLS lists only what the requester may use")
def t_access():
    with Tls() as t:
        rc, out, err = client("notls", t.plain + "/secret", wait=2)
        check(err.startswith("4.01"), "coap+tcp:// /secret: %r %r" % (out, err))
        rc, out, err = client("notls", t.plain + "/hello", wait=2)
        eq(out.strip(), "Hello, world", "coap+tcp:// /hello")
        for kind in ("gnutls", "openssl"):
            eq(get(kind, t.uri + "/secret", *psk_args()).strip(), "secret", kind + " /secret")
            eq(get(kind, t.uri + "/sensors", *psk_args()).strip(), "sensors", kind + " sensor-1")
            check(get(kind, t.uri + "/sensors", *psk_args("gw")).startswith("4.03"),
                  kind + ": gw on /sensors")
        for ident, want in (("gw", False), ("sensor-1", True)):
            links = set(re.findall(r"<([^>]*)>", get("gnutls", t.uri + "/.well-known/core",
                                                      *psk_args(ident))))
            eq(("/secret" in links, "/sensors" in links), (True, want), "discovery as " + ident)


@test("block-wise over coaps+tcp://: a 256 KiB download and upload (-b 1024), byte for byte, "
      "with both clients")
def t_blockwise():
    with Tls() as t, tempfile.TemporaryDirectory() as d:
        up = os.path.join(d, "up")
        with open(up, "wb") as f:
            f.write(BIG)
        for kind in ("gnutls", "openssl"):
            out = os.path.join(d, "big." + kind)
            rc, _, err = client(kind, "-b", "1024", "-o", out, *psk_args(), t.uri + "/big",
                                wait=20, timeout=60)
            got = open(out, "rb").read() if os.path.exists(out) else b""
            eq((len(got), got == BIG), (len(BIG), True), kind + " download (%s)" % err[-200:])
            rc, o, err = client(kind, "-m", "put", "-b", "1024", "-f", up, *psk_args(),
                                t.uri + "/up", wait=20, timeout=60)
            eq(o.strip(), "262144:same", kind + " upload (%s)" % err[-200:])


@test("Observe over coaps+tcp://: coap-client-gnutls and -openssl (-s 2, at once) each get "
      "several notifications in order; their observations end with their connections")
def t_observe():
    with Tls() as t:
        procs = {kind: subprocess.Popen(
            ["coap-client-" + kind, "-B", "4", "-w", "-s", "2"] + psk_args() + [t.uri + "/clock"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for kind in ("gnutls", "openssl")}
        for kind, p in procs.items():
            out, err = p.communicate(timeout=15)
            values = [int(x) for x in out.decode().split() if x.isdigit()]
            check(len(values) >= 5 and values == sorted(values) and
                  len(set(values)) == len(values), "%s notifications: %r %r" % (kind, out, err))
        deadline = time.monotonic() + 5
        while t.stats()["observers"] and time.monotonic() < deadline:
            time.sleep(0.1)
        eq(t.stats()["observers"], 0, "observers left")


@test("a wrong PSK key and an unknown identity, with both stacks: no response (the client "
      "gets an alert), one 'handshake with ... failed' line each (the unknown one named), "
      "counted; a good client is served meanwhile and after")
def t_wrong_psk():
    with Tls() as t:
        start = t.mark()
        for kind in ("gnutls", "openssl"):
            out = refused_by_tls(kind, t.uri + "/who", *psk_args("sensor-1", "wrong"))
            check(re.search(r"[Aa]lert", out), kind + " wrong key: no alert: %r" % out)
            out = refused_by_tls(kind, t.uri + "/who", "-u", "nobody", "-k", "x")
            check(re.search(r"(?i)alert.*(unknown psk identity|PSK username is missing or not "
                            r"known)", out), kind + " unknown identity: the RFC 4279 §2 alert: "
                  "%r" % out)
        serving(t, "openssl")
        serving(t)
        fails = t.lines(start, FAIL_RE, barrier=True)
        eq(len(fails), 4, "failure lines: %r" % fails)
        eq(len([l for l in fails if "unknown PSK identity 'nobody'" in l]), 2,
           "the unknown identity named: %r" % fails)
        s = t.stats()
        eq((s["dtls_fail_psk"], s["dtls_full"]), (2, 2), "counters %r" % s)


@test("client_auth = required: no client certificate (coap-client-gnutls with only -C; "
      "Python's ssl) -> the handshake fails, logged; a CA-signed one (both stacks, Python) is "
      "served and named; another CA's and a revoked one (CRL) are refused")
def t_client_auth():
    c = certs()
    dtls = x509_group('crl = "%s"; client_auth = "required";' % c("crl.pem"))
    with Tls(dtls=dtls) as t:
        start = t.mark()
        refused_by_tls("gnutls", t.uri + "/who", "-C", c("ca.pem"))
        check(t.srv.log.wait_for(FAIL_RE + ".*(certificate|Certificate)", 3, start),
              "no certificate: logged: %r" % t.lines(start))
        start = t.mark()
        # TLS 1.3: the client's side of the handshake completes first; the server's alert
        # then comes instead of its CSM
        try:
            p = PyTls(t.port, start=False)
            csm, eof = p.recv(5), p.eof
            p.close()
        except OSError as e:        # ssl.SSLError: the alert within the handshake (TLS 1.2)
            csm, eof = None, "alert: %s" % e
        check(csm is None and eof, "Python ssl without a certificate: %r (%s)" % (csm, eof))
        note("Python ssl without a certificate: %s" % eof)
        check(t.srv.log.wait_for(FAIL_RE, 3, start), "Python without a certificate: logged")
        for kind in ("gnutls", "openssl"):
            eq(get(kind, t.uri + "/who", *cert_args()).strip(), X509_ID, kind)
        with PyTls(t.port, ctx=py_context(cert="cli")) as p:
            eq(p.ask(req(GET, b"\x01", "who"), CONTENT).payload.decode(), X509_ID, "Python")
        start = t.mark()
        refused_by_tls("openssl", t.uri + "/who", *cert_args("other"))
        check(t.srv.log.wait_for(FAIL_RE + ".*issuer is unknown", 3, start),
              "another CA: log names the reason: %r" % t.lines(start))
        start = t.mark()
        for kind in ("gnutls", "openssl"):
            refused_by_tls(kind, t.uri + "/who", *cert_args("revoked"))
        check(t.srv.log.wait_for(FAIL_RE + ".*revoked", 3, start),
              "revoked: log names the reason: %r" % t.lines(start))
        s = t.stats()
        check(s["dtls_full"] == 3 and s["dtls_fail_cert"] + s["dtls_fail_other"] == 5,
              "counted: %r" % s)


@test("raw public keys (RFC 7250) over TLS: a client key on rpk_clients is served as "
      "rpk|sha256:SPKI|; one that is not is refused and logged")
def t_rpk():
    c = certs()
    allowed = spki_sha256(c("rpkcli.pub"))
    dtls = ('rpk = "%s"; rpk_key = "%s"; rpk_clients = [ "%s" ];' %
            (c("rpksrv.pub"), c("rpksrv.key"), allowed))
    with Tls(dtls=dtls) as t:
        eq(get("gnutls", t.uri + "/who", "-M", c("rpkcli.pub"), "-j", c("rpkcli.key")).strip(),
           "rpk|%s|" % allowed, "allowed key")
        start = t.mark()
        refused_by_tls("gnutls", t.uri + "/who", "-M", c("rpkbad.pub"), "-j", c("rpkbad.key"))
        check(t.srv.log.wait_for(FAIL_RE + ".*raw public key not on rpk_clients", 3, start),
              "log line: %r" % t.lines(start))


@test("ALPN (RFC 8323 §4.1): gnutls-cli --alpn=coap and Python's ssl offering 'coap' get "
      "'coap' negotiated; a client offering no ALPN is served all the same")
def t_alpn():
    with Tls() as t:
        with CliTls(t.port, alpn="coap") as g:
            g.alive()
            log = g.finish()
            check(re.search(r"Application protocol: coap\b", log),
                  "gnutls-cli did not report ALPN coap:\n" + log)
        with PyTls(t.port, ctx=py_context(alpn=["coap"])) as p:
            eq(p.sock.selected_alpn_protocol(), "coap", "Python ALPN")
            eq(p.ask(req(GET, b"\x01", "hello"), CONTENT).payload, b"Hello, world", "/hello")
        with PyTls(t.port) as p:
            eq(p.sock.selected_alpn_protocol(), None, "no ALPN offered")
            eq(p.ask(req(GET, b"\x02", "hello"), CONTENT).payload, b"Hello, world", "no ALPN")
        with CliTls(t.port) as g:
            g.alive()
            check("Application protocol" not in g.finish(), "gnutls-cli without --alpn")
        # RFC 7301 §3.2 wants no_application_protocol when nothing offered matches; we record
        # what happens (not the behaviour under test)
        try:
            with PyTls(t.port, ctx=py_context(alpn=["h2", "http/1.1"])) as p:
                p.alive()
                note("a client offering only h2, http/1.1 is served (ALPN %r)" %
                     p.sock.selected_alpn_protocol())
        except (ssl.SSLError, AssertionError, ConnectionError) as e:
            note("a client offering only h2, http/1.1 is refused: %s" % str(e)[:80])


@test("TLS 1.2 and TLS 1.3 both accepted: gnutls-cli (PSK) and Python's ssl (X.509) forced to "
      "each get it and are served (PSK identity on /who); TLS 1.1 is refused")
def t_versions():
    with Tls() as t:
        for ver in ("1.2", "1.3"):
            prio = "NORMAL:-VERS-ALL:+VERS-TLS%s:-KX-ALL:+ECDHE-PSK:+PSK" % ver
            with CliTls(t.port, priority=prio) as g:
                eq(g.ask(req(GET, b"\x01", "who"), CONTENT).payload, b"psk|sensor-1|",
                   "TLS %s /who" % ver)
                log = g.finish()
                check(re.search(r"Description: \(TLS%s-" % re.escape(ver), log),
                      "gnutls-cli did not get TLS %s:\n%s" % (ver, log))
                check("PSK authentication. Connected as 'sensor-1'" in log, "PSK: " + log)
        for ver, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            with PyTls(t.port, ctx=py_context(version=ver)) as p:
                eq(p.sock.version(), name, "Python's version")
                eq(p.ask(req(GET, b"\x02", "hello"), CONTENT).payload, b"Hello, world", name)
        start = t.mark()
        rc, log = gnutls_cli_handshake(
            t.port, "NORMAL:-VERS-ALL:+VERS-TLS1.1:-KX-ALL:+ECDHE-PSK:+PSK")
        check(rc != 0 and "Handshake was completed" not in log, "TLS 1.1: %r" % log[-400:])
        check(t.srv.log.wait_for(FAIL_RE, 3, start), "TLS 1.1 refusal logged")


@test("after the handshake the server's first message is its CSM (7.01: Max-Message-Size 8192, "
      "Block-Wise-Transfer), then RFC 8323 framing works over TLS: Ping -> Pong, a frame sent "
      "one byte per TLS record, three frames in one record answered in order")
def t_csm_first():
    with Tls() as t:
        for name, mk in (("Python/X.509", lambda: PyTls(t.port, csm=None)),
                         ("gnutls-cli/PSK", lambda: CliTls(t.port, csm=None))):
            with mk() as c:
                f = c.server_csm
                eq((f.token, f.payload, f.options), (b"", b"", [(OPT_MMS, (8192).to_bytes(
                    2, "big")), (OPT_BWT, b"")]), name + ": the CSM")
                c.send(CSM_OK)
                c.alive(b"\x51\x52")
                r = req(GET, b"\x07\x08", "hello")
                for b in r:             # one TLS record each (Python: one sendall each)
                    c.send(bytes([b]))
                eq(c.expect(CONTENT, b"\x07\x08").payload, b"Hello, world", name + ": bytewise")
                c.send(frame(PING, b"\x61") + req(GET, b"\x62", "who") + frame(PING, b"\x63"))
                got = [c.recv() for _ in range(3)]
                eq([(g.code, g.token) if g else None for g in got],
                   [(PONG, b"\x61"), (CONTENT, b"\x62"), (PONG, b"\x63")], name + ": pipelined")


@test("not TLS on the TLS port (random bytes, an HTTP request, a coap+tcp CSM, a ClientHello "
      "cut short): each connection is closed, at most one failure line each and nothing else "
      "in the log; 30 more at once are logged at most 10 a second and then summed up")
def t_garbage():
    with Tls() as t:
        start = t.mark()
        hello = client_hello()
        junk = [("random", b"\xff" + os.urandom(599)),
                ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("coap+tcp CSM", CSM_OK), ("half a ClientHello", hello[:len(hello) // 2])]
        socks = []
        for name, data in junk:
            s = tcp_connect(t.port)
            s.sendall(data)
            if name.startswith("half"):
                s.shutdown(socket.SHUT_WR)
            socks.append((name, s))
        for name, s in socks:
            dt, got = wait_closed(s, 5)
            check(dt is not None, "%s: still open after 5 s" % name)
            check(not got or got[0] == 21, "%s: anything but an alert came: %s" % (
                name, hx(got[:16])))
            s.close()
        serving(t)
        logged = [l for l in t.lines(start, r" (warn|error|notice|info): ", barrier=True)
                  if "stats: " not in l]
        other = [l for l in logged if not re.search(FAIL_RE, l)]
        eq(other, [], "log lines other than handshake failures")
        check(1 <= len(logged) <= len(junk), "one failure line per connection at most: %r" % logged)
        # a flood: 30 connections with garbage within a moment
        start = t.mark()
        socks = []
        for _ in range(30):
            s = tcp_connect(t.port)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            socks.append(s)
        for s in socks:
            check(wait_closed(s, 5)[0] is not None, "flood: still open after 5 s")
            s.close()
        lines = t.lines(start, FAIL_RE, barrier=True)
        check(len(lines) <= 21, "%d failure lines for 30 failures within a second" % len(lines))
        time.sleep(1.1)     # the next second's first failure writes the sum (no event before)
        s = tcp_connect(t.port)
        s.sendall(b"not tls at all\r\n")
        wait_closed(s, 5)
        s.close()
        check(t.srv.log.wait_for(r"\d+ more failed handshakes not logged", 3, start),
              "the sum line: %r" % t.lines(start)[-3:])
        serving(t, "openssl")


@test("-o tls_handshake_timeout=0.5: a TCP connection that never starts a handshake, one that "
      "stops after its ClientHello and one trickling its ClientHello a byte per 0.1 s are closed "
      "0.5-2.5 s after they connected, logged; a good client is served meanwhile")
def t_handshake_timeout():
    with Tls(opts={"tls_handshake_timeout": 0.5}) as t:
        start = t.mark()
        hello = client_hello()
        silent = tcp_connect(t.port)
        t_silent = time.monotonic()
        stalled = tcp_connect(t.port)
        t_stalled = time.monotonic()
        stalled.sendall(hello)
        trickle = tcp_connect(t.port)
        t_trickle = time.monotonic()
        closed = {}
        pending = {"silent": (silent, t_silent), "stalled": (stalled, t_stalled),
                   "trickle": (trickle, t_trickle)}
        flight = b""
        i = 0
        deadline = time.monotonic() + 4
        while pending and time.monotonic() < deadline:
            if "trickle" in pending and i < len(hello):
                try:
                    trickle.send(hello[i:i + 1])
                except OSError:
                    pass
                i += 1
            r, _, _ = select.select([s for s, _ in pending.values()], [], [], 0.1)
            for name, (s, t0) in list(pending.items()):
                if s not in r:
                    continue
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    d = b""
                if name == "stalled":
                    flight += d
                if not d:
                    closed[name] = time.monotonic() - t0
                    del pending[name]
        for s in (silent, stalled, trickle):
            s.close()
        check(flight[:1] == b"\x16", "the server's first flight to the stalled client: %s" %
              hx(flight[:16]))
        check(not pending, "still open after 4 s: %s (closed: %r)" % (list(pending), closed))
        for name, dt in closed.items():
            check(0.45 <= dt <= 2.5, "%s: closed after %.2f s" % (name, dt))
        note("closed after: " + ", ".join("%s %.2f s" % kv for kv in sorted(closed.items())))
        check(len(t.lines(start, r"TLS handshake not done in time", barrier=True)) == 3,
              "log: %r" % t.lines(start))
        serving(t)


@test("-o tcp_connections=2 over TLS: with one established connection and one TCP connection "
      "still before its handshake, a third is closed before a handshake completes (counted as "
      "overload); when the idle one times out (tls_handshake_timeout=1.5) a new one is served")
def t_connection_limit():
    with Tls(opts={"tcp_connections": 2, "tls_handshake_timeout": 1.5}) as t:
        est = PyTls(t.port)
        idle = tcp_connect(t.port)
        third = tcp_connect(t.port)
        ctx = py_context()
        t0 = time.monotonic()
        refused = None
        try:
            ctx.wrap_socket(third, server_hostname="127.0.0.1").close()
        except OSError as e:        # ssl.SSLError, ConnectionError
            refused = "%s" % e
        check(refused, "the third connection's handshake completed")
        check(time.monotonic() - t0 < 2.0, "the refusal took %.2f s" % (time.monotonic() - t0))
        third.close()
        check(t.stats()["overload"] >= 1, "overload not counted")
        est.alive()
        dt, _ = wait_closed(idle, 4)
        check(dt is not None, "the idle connection was not closed")
        idle.close()
        with PyTls(t.port) as p:
            eq(p.ask(req(GET, b"\x03", "hello"), CONTENT).payload, b"Hello, world", "new one")
        eq(est.ask(req(GET, b"\x04", "hello"), CONTENT).payload, b"Hello, world", "established")
        est.close()
        note("third connection: %s" % refused[:100])


@test("SIGHUP with new credentials: a PSK key changed and a certificate added -> new "
      "handshakes use them (the old key is refused), a coaps+tcp connection opened before keeps "
      "working with its identity; a reload naming a missing file is rejected, the keys stay")
def t_reload_credentials():
    certs()                     # made before the server starts: the reload names them
    with Tls(dtls=psk_group()) as t:
        refused_by_tls("gnutls", t.uri + "/who", *cert_args())      # no certificate yet
        old = CliTls(t.port)
        eq(old.ask(req(GET, b"\x01", "who"), CONTENT).payload, b"psk|sensor-1|", "before")
        with open(t.conf) as f:
            text = f.read()
        with open(t.conf, "w") as f:
            f.write(text.replace("secret1", "secret2").replace(
                "dtls = {", "dtls = { " + x509_group()))
        start = t.mark()
        os.kill(t.srv.pid, signal.SIGHUP)
        check(t.srv.log.wait_for("reloaded", 5, start), "reloaded: %r" % t.lines(start))
        eq(get("gnutls", t.uri + "/who", *psk_args("sensor-1", "secret2")).strip(),
           "psk|sensor-1|", "new key")
        refused_by_tls("openssl", t.uri + "/who", *psk_args())
        eq(get("openssl", t.uri + "/who", *cert_args()).strip(), X509_ID, "new certificate")
        old.alive()
        eq(old.ask(req(GET, b"\x02", "who"), CONTENT).payload, b"psk|sensor-1|",
           "the established connection after the reload")
        with open(t.conf, "w") as f:
            f.write(text.replace("secret1", "secret3").replace(
                "dtls = {", 'dtls = { certificate = "/nonexistent.pem"; key = "/x.key";'))
        start = t.mark()
        os.kill(t.srv.pid, signal.SIGHUP)
        check(t.srv.log.wait_for("/nonexistent.pem: cannot read", 5, start), "names the file")
        check(t.srv.log.wait_for("reload rejected", 5, start), "rejected")
        eq(get("gnutls", t.uri + "/who", *psk_args("sensor-1", "secret2")).strip(),
           "psk|sensor-1|", "the keys stayed")
        eq(get("gnutls", t.uri + "/who", *cert_args()).strip(), X509_ID, "the certificate stayed")
        old.alive(b"\x77")
        old.close()


def stop_async(t):
    """t.srv.stop() (SIGTERM by PID, wait) in a thread: the test reads meanwhile."""
    th = threading.Thread(target=t.srv.stop, daemon=True)
    th.start()
    return th


@test("SIGTERM while a client observes over coaps+tcp://: a 5.03 notification, then a 7.04 "
      "Release with Hold-Off, then close_notify and the end of the stream; exit status 0. A "
      "SIGHUP that removes the coaps+tcp listener sends Release ('listener closed') and "
      "close_notify")
def t_shutdown():
    with Tls() as t:
        p = PyTls(t.port)
        first = p.ask(req(GET, b"\x0b", "clock", options=[(OBSERVE, 0)]), CONTENT)
        check(first.opt(OBSERVE) is not None, "registered: %r" % first)
        p.expect(CONTENT, b"\x0b", what="a notification")
        th = stop_async(t)
        frames = [f for f in p.closed(5) if not (f.code == CONTENT and f.token == b"\x0b")]
        th.join(6)
        eq([(f.code_str, f.token) for f in frames], [("5.03", b"\x0b"), ("7.04", b"")],
           "after SIGTERM: %r" % frames)
        check(frames[1].opt(OPT_HOLD_OFF) is not None, "Release without Hold-Off: %r" % frames[1])
        eq(p.eof, "close_notify", "how the connection ended")
        eq(t.srv.rc, 0, "exit status")
        p.close()
    with Tls() as t:
        p = PyTls(t.port)
        p.alive()
        with open(t.conf) as f:
            text = f.read()
        with open(t.conf, "w") as f:
            f.write(text.replace(', "coaps+tcp://127.0.0.1:0"', ""))
        os.kill(t.srv.pid, signal.SIGHUP)
        frames = p.closed(5)
        eq([(f.code_str, f.payload) for f in frames], [("7.04", b"listener closed")],
           "after the listener went: %r" % frames)
        eq(p.eof, "close_notify", "how the connection ended")
        p.close()


@test("SIGTERM with TCP connections still before their TLS handshake (no bytes; part of a "
      "ClientHello): they are closed and the server exits 0 (no crash)")
def t_stop_handshaking():
    hello = client_hello()
    with Tls() as t:
        idle = tcp_connect(t.port)
        half = tcp_connect(t.port)
        half.sendall(hello[:40])
        t.stats()       # the server's loop went past both accepts
        th = stop_async(t)
        for name, s in (("idle", idle), ("half", half)):
            dt, _ = wait_closed(s, 5)
            check(dt is not None, "%s: not closed at shutdown" % name)
            s.close()
        th.join(6)
        crash = [l for l in t.srv.log.lines if "SIGSEGV" in l or "fatal" in l]
        check(t.srv.rc == 0 and not crash, "exit status %r after SIGTERM with connections in "
              "their handshake: %r" % (t.srv.rc, crash[:2]))


@test("a SIGHUP that removes the coaps+tcp listener while a TCP connection is still before its "
      "TLS handshake: the connection is closed, the server stays up and serves coap+tcp://")
def t_unlisten_handshaking():
    with Tls() as t:
        idle = tcp_connect(t.port)
        t.stats()
        with open(t.conf) as f:
            text = f.read()
        with open(t.conf, "w") as f:
            f.write(text.replace(', "coaps+tcp://127.0.0.1:0"', ""))
        start = t.mark()
        os.kill(t.srv.pid, signal.SIGHUP)
        dt, _ = wait_closed(idle, 5)
        idle.close()
        t.srv.log.wait_for("reloaded|SIGSEGV", 5, start)
        crash = [l for l in t.srv.log.lines[start:] if "SIGSEGV" in l or "fatal" in l]
        check(t.srv.alive() and not crash, "the server after the reload: alive %r, %r" % (
            t.srv.alive(), crash[:2]))
        check(dt is not None, "the connection was not closed")
        rc, out, err = client("notls", t.plain + "/hello", wait=2)
        eq(out.strip(), "Hello, world", "coap+tcp:// still served")


if __name__ == "__main__":
    missing = [c for c in ("coap-client-gnutls", "coap-client-openssl", "gnutls-cli", "certtool")
               if shutil.which(c) is None]
    if missing:
        print("1 passed, 0 failed  # skipped: %s missing" % ", ".join(missing))
        sys.exit(0)
    sys.exit(main())
