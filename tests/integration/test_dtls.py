#!/usr/bin/env python3
"""test_dtls -- CoAP over DTLS 1.2 (coaps://, RFC 7252 §9, RFC 6347) with independent peers:
libcoap's coap-client-gnutls and coap-client-openssl (two DTLS stacks), our GnuTLS
dtls-send for what a stock client cannot do (raw CoAP bytes, holding an association open,
restarting on the same port), and raw UDP for what comes before a handshake (cookies,
floods, garbage). Certificates and raw public keys are made at test time with certtool."""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coaptest  # noqa: E402
from coaptest import (CON, GET, Server, check, eq, main, request, run_moonlet,  # noqa: E402
                      stats, test)
from tlskeys import certs, spki_sha256  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DTLS_SEND = os.path.join(ROOT, "build", "dtls-send")
PSK = [("sensor-1", "secret1"), ("gw", "gateway-key")]

# ---- material -------------------------------------------------------------------------

def built(*path):
    """A file of the build the tests run (build/ or build/san/: the moonlet's directory)."""
    return os.path.join(os.path.dirname(coaptest.cfg.moonlet), *path)


SECURE_RES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "lua", "secure_res.lua")


BIG = bytes(65 + (i * 7) % 26 for i in range(262144))


def dtls_conf(d, extra="", dtls=None, listen=None):
    """A configuration with coap:// and coaps:// on [::1] and the test script."""
    if dtls is None:
        dtls = ("psk = ( %s );" % ", ".join('{ identity = "%s"; key = "%s"; }' % kv
                                          for kv in PSK))
    script = os.path.join(d, "secure.lua")
    shutil.copy(SECURE_RES, script)
    path = os.path.join(d, "moonlet.conf")
    with open(path, "w") as f:
        f.write('listen = [ %s ];\n' % (listen or '"coap://[::1]:0", "coaps://127.0.0.1:0"'))
        f.write("dtls = { %s };\n" % dtls)
        f.write('scripts = ( { path = "%s"; } );\n' % script)
        f.write(extra + "\n")
    return path


class Dtls:
    """A moonlet with a coaps:// listener (and coap://), its configuration in a temp dir."""

    def __init__(self, extra="", dtls=None, opts=None, plugins=None):
        self.dir = tempfile.mkdtemp(prefix="moonlet-dtls-conf-")
        self.conf = dtls_conf(self.dir, extra, dtls)
        self.srv = Server(opts=opts, addr=None, args=["-c", self.conf], dtls=True,
                          plugins=[] if plugins is None else plugins)
        check(self.srv.dtls_port, "no 'ready dtls://' line:\n" + self.srv.log.text())
        # IPv4: libcoap 4.3.1 over OpenSSL sends an IPv6 literal as SNI, which RFC 6066 §3
        # forbids and GnuTLS refuses ("disallowed SNI server name")
        self.uri = "coaps://127.0.0.1:%d" % self.srv.dtls_port
        self.plain = "coap://[::1]:%d" % self.srv.port

    def stats(self):
        return stats(self.srv)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()
        shutil.rmtree(self.dir, True)


def client(kind, *args, wait=5, timeout=20):
    """coap-client-gnutls / -openssl -> (rc, stdout, stderr)."""
    argv = ["coap-client-" + kind, "-B", str(wait)] + [str(a) for a in args]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def psk_args(ident="sensor-1"):
    return ["-u", ident, "-k", dict(PSK)[ident]]


def get(kind, uri, *args, wait=5):
    rc, out, err = client(kind, *(list(args) + [uri]), wait=wait)
    return out if out else err


def dsend(port, *args, timeout=30):
    """build/dtls-send -> its output lines."""
    argv = [DTLS_SEND] + [str(a) for a in args[1:]] + ["127.0.0.1", str(port)] + list(args[0])
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return p.stdout.decode().splitlines()


def dsend_bg(port, msgs, *opts):
    argv = [DTLS_SEND] + [str(a) for a in opts] + ["127.0.0.1", str(port)] + list(msgs)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_line(proc, pattern, timeout):
    """Read proc's stdout lines until one matches (or timeout): the match or None."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    import select
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], max(0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            m = rx.search(line)
            if m:
                return m
    return None


def hexmsg(mtype, method, mid, token, path):
    return request(mtype, method, mid, token, path).hex()


def wait_stat(d, key, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        s = d.stats()
        if s.get(key) == want or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


# ---- raw DTLS records for what comes before a handshake --------------------------------

def client_hello(cookie=b"", seq=0, rnd=None):
    """An unfragmented DTLS 1.2 ClientHello offering TLS_PSK_WITH_AES_128_CCM_8."""
    body = b"\xfe\xfd" + (rnd or os.urandom(32)) + b"\x00" + bytes([len(cookie)]) + cookie
    body += struct.pack("!HH", 2, 0xC0A8) + b"\x01\x00"
    hs = (bytes([1]) + len(body).to_bytes(3, "big") + struct.pack("!H", 1 if cookie else 0) +
          b"\x00\x00\x00" + len(body).to_bytes(3, "big") + body)
    return bytes([22]) + b"\xfe\xfd\x00\x00" + seq.to_bytes(6, "big") + \
        struct.pack("!H", len(hs)) + hs


def hvr_cookie(dgram):
    """The cookie of a HelloVerifyRequest (record 13 + handshake 12 + version 2), or None."""
    if dgram is None or len(dgram) < 28 or dgram[0] != 22 or dgram[13] != 3:
        return None
    return dgram[28:28 + dgram[27]]


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.settimeout(1.0)
    return s


def recv(s, timeout=1.0):
    s.settimeout(timeout)
    try:
        return s.recv(65536)
    except socket.timeout:
        return None


def stalled_handshake(port, rnd=None):
    """Start a handshake and stop after the server's first flight: (socket, that flight)."""
    s = udp(port)
    rnd = rnd or os.urandom(32)
    s.send(client_hello(rnd=rnd))
    cookie = hvr_cookie(recv(s))
    check(cookie, "no HelloVerifyRequest")
    s.send(client_hello(cookie, seq=1, rnd=rnd))
    return s, recv(s, 1.5)


# ---- tests ----------------------------------------------------------------------------

@test("PSK with coap-client-gnutls and coap-client-openssl: GET /who names the identity; the "
      "cookie exchange happened (HelloVerifyRequest counted), both handshakes full, their "
      "close_notify freed both associations")
def t_psk_both_stacks():
    with Dtls() as d:
        for kind in ("gnutls", "openssl"):
            eq(get(kind, d.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", kind)
            eq(get(kind, d.uri + "/who", *psk_args("gw")).strip(), "psk|gw|", kind)
        s = wait_stat(d, "dtls_sessions", 0)
        eq((s["dtls_full"], s["dtls_hvr"] >= 4, s["dtls_closed_by_peer"], s["dtls_sessions"]),
           (4, True, 4, 0), "full handshakes, cookies, closes, sessions open")


@test("access: over coap:// a secure resource is 4.01; over coaps:// /sensors admits psk:sensor-* "
      "and a certificate with dNSName *.example, refuses gw with 4.03; /.well-known/core lists "
      "only what the requester may use")
def t_access():
    c = certs()
    dtls = ('psk = ( { identity = "sensor-1"; key = "secret1"; }, '
            '{ identity = "gw"; key = "gateway-key"; } ); certificate = "%s"; key = "%s"; '
            'ca = "%s";' % (c("srv.pem"), c("srv.key"), c("ca.pem")))
    with Dtls(dtls=dtls) as d:
        for path in ("secret", "sensors"):
            rc, out, err = client("notls", d.plain + "/" + path, wait=2)
            check(err.startswith("4.01"), "coap:// /%s: %r %r" % (path, out, err))
        eq(get("gnutls", d.uri + "/sensors", *psk_args()).strip(), "sensors", "sensor-1")
        check(get("openssl", d.uri + "/sensors", *psk_args("gw")).startswith("4.03"),
              "gw on /sensors")
        cert = ["-c", c("cli.pem"), "-j", c("cli.key"), "-C", c("ca.pem")]
        for kind in ("gnutls", "openssl"):
            eq(get(kind, d.uri + "/sensors", *cert).strip(), "sensors", kind + " x509")
            eq(get(kind, d.uri + "/who", *cert).strip(),
               "x509|CN=sensor-7,O=moonlet|dns:sensor-7.example", kind + " x509 identity")
        # a secure peer without a client certificate is anonymous: 4.01 (authenticate)
        eq(get("gnutls", d.uri + "/who", "-C", c("ca.pem")).strip(), "anon||", "anonymous")
        check(get("gnutls", d.uri + "/sensors", "-C", c("ca.pem")).startswith("4.01"),
              "anonymous on /sensors")
        wkc = {
            "coap": client("notls", d.plain + "/.well-known/core", wait=2)[1],
            "gw": get("gnutls", d.uri + "/.well-known/core", *psk_args("gw")),
            "sensor": get("openssl", d.uri + "/.well-known/core", *psk_args()),
        }
        for who, text in wkc.items():
            links = set(re.findall(r"<([^>]*)>", text))
            want_secret = who != "coap"
            want_sensors = who == "sensor"
            eq(("/secret" in links, "/sensors" in links, "/who" in links),
               (want_secret, want_sensors, True), "discovery as %s: %r" % (who, text))


@test("C API: moonlet_req_identity and moonlet_identity_match in a plugin; allow and secure in a "
      "C definition; the configuration file's access rule narrows /hello to psk:gw")
def t_access_c():
    plugins = [built("tests", "t_secure.so"), built("plugins", "hello.so")]
    extra = 'access = ( { path = "/hello"; allow = [ "psk:gw" ]; } );'
    with Dtls(extra=extra, plugins=plugins) as d:
        eq(get("gnutls", d.uri + "/c/who", *psk_args()).strip(), "psk|sensor-1|", "c/who")
        eq(client("notls", d.plain + "/c/who", wait=2)[1].strip(), "none||", "c/who coap")
        check(client("notls", d.plain + "/c/secure", wait=2)[2].startswith("4.01"), "secure")
        eq(get("gnutls", d.uri + "/c/secure", *psk_args()).strip(), "ok", "secure over coaps")
        check(get("gnutls", d.uri + "/c/gw", *psk_args()).startswith("4.03"), "c/gw sensor-1")
        eq(get("openssl", d.uri + "/c/gw", *psk_args("gw")).strip(), "ok", "c/gw gw")
        for pat, want in (("psk:sensor-*", "1"), ("psk:gw", "0"), ("any", "1"),
                          ("x509:*", "0"), ("any:sensor-?", "1")):
            eq(get("gnutls", d.uri + "/c/match?p=" + pat, *psk_args()).strip(), want, pat)
        check(get("gnutls", d.uri + "/hello", *psk_args()).startswith("4.03"), "rule: sensor-1")
        eq(get("gnutls", d.uri + "/hello", *psk_args("gw")).strip(), "Hello, world", "rule: gw")
        check(client("notls", d.plain + "/hello", wait=2)[2].startswith("4.01"), "rule: coap")


@test("raw public keys (RFC 7250): a client key on rpk_clients authenticates as sha256:SPKI; "
      "one that is not is refused (handshake fails, logged, state freed)")
def t_rpk():
    c = certs()
    allowed = spki_sha256(c("rpkcli.pub"))
    dtls = ('rpk = "%s"; rpk_key = "%s"; rpk_clients = [ "%s" ];' %
            (c("rpksrv.pub"), c("rpksrv.key"), allowed))
    with Dtls(dtls=dtls) as d:
        eq(get("gnutls", d.uri + "/who", "-M", c("rpkcli.pub"), "-j", c("rpkcli.key")).strip(),
           "rpk|%s|" % allowed, "allowed key")
        out = dsend(d.srv.dtls_port, [hexmsg(CON, GET, 1, b"t", "who")], "-M", "-c",
                    c("rpkbad.pub"), "-j", c("rpkbad.key"), "-w", "1")
        check(out and out[0].startswith("handshake FAILED"), "unlisted key: %r" % out)
        check(d.srv.log.wait_for("raw public key not on rpk_clients", 3), "log line")
        s = wait_stat(d, "dtls_handshaking", 0)
        eq((s["dtls_fail_cert"], s["dtls_sessions"]), (1, 0), "counted, freed")


@test("certificates: untrusted (another CA), expired, not yet valid client certificates fail the "
      "handshake with a log line naming the reason; client_auth = required refuses a client "
      "without one")
def t_bad_certs():
    c = certs()
    base = 'certificate = "%s"; key = "%s"; ca = "%s";' % (c("srv.pem"), c("srv.key"),
                                                           c("ca.pem"))
    with Dtls(dtls=base) as d:
        # a GnuTLS client does not offer a certificate the server's CA list does not name:
        # the OpenSSL one does
        rc, out, err = client("openssl", "-c", c("other.pem"), "-j", c("other.key"), "-C",
                              c("ca.pem"), d.uri + "/who", wait=2)
        check("anon" not in out and "x509" not in out, "untrusted: %r" % out)
        check(d.srv.log.wait_for("issuer is unknown", 3), "untrusted: log names the reason")
        for name, reason in (("expired", "expired"), ("future", "not yet valid")):
            out = dsend(d.srv.dtls_port, [hexmsg(CON, GET, 1, b"t", "who")], "-c",
                        c(name + ".pem"), "-j", c(name + ".key"), "-w", "1")
            check(out and out[0].startswith("handshake FAILED") and "alert Certificate is bad" in out,
                  "%s: a fatal alert: %r" % (name, out))
            check(d.srv.log.wait_for(reason, 3), "%s: log names '%s'" % (name, reason))
        s = wait_stat(d, "dtls_handshaking", 0)
        eq((s["dtls_fail_cert"], s["dtls_sessions"]), (3, 0), "counted, nothing kept")
    with Dtls(dtls=base + ' client_auth = "required";') as d:
        out = dsend(d.srv.dtls_port, [hexmsg(CON, GET, 1, b"t", "who")], "-w", "1")
        check(out and out[0].startswith("handshake FAILED"), "no certificate: %r" % out)
        eq(get("openssl", d.uri + "/who", "-c", c("cli.pem"), "-j", c("cli.key"), "-C",
               c("ca.pem")).strip(), "x509|CN=sensor-7,O=moonlet|dns:sensor-7.example",
           "with one")


@test("wrong PSK: no alert exists for it in DTLS, the handshake is dropped at "
      "dtls_handshake_timeout and logged; an unknown identity fails at once, logged by name")
def t_wrong_psk():
    with Dtls(opts={"dtls_handshake_timeout": 1}) as d:
        out = dsend(d.srv.dtls_port, [], "-u", "sensor-1", "-k", "wrong", "-t", "2")
        check(out and out[0].startswith("handshake FAILED"), "wrong key: %r" % out)
        out = dsend(d.srv.dtls_port, [], "-u", "nobody", "-k", "x", "-w", "1")
        check(out and out[0].startswith("handshake FAILED") and "alert The SRP/PSK username is missing or not known" in out, "unknown identity: the RFC 4279 §2 alert: %r" % out)
        check(d.srv.log.wait_for("unknown PSK identity 'nobody'", 3), "log names the identity")
        s = wait_stat(d, "dtls_handshaking", 0, 4)
        eq((s["dtls_handshaking"], s["dtls_sessions"], s["dtls_fail_psk"],
            s["dtls_fail_timeout"]), (0, 0, 1, 1), "both freed and counted")


@test("hot reload and discovery over coaps: an association stays up while its script is "
      "edited and reloaded, and the next request on it reaches the new version; "
      "/.well-known/core?href=/s* filters as over coap://")
def t_reload_and_filters():
    with Dtls() as d:
        script = os.path.join(d.dir, "secure.lua")
        ask = hexmsg(CON, GET, 0x100, b"n", "new")
        p = dsend_bg(d.srv.dtls_port, [ask, ask.replace("0100", "0101", 1)], *psk_args(),
                     "-i", "2", "-w", "1")
        check(wait_line(p, r"^= 1", 5), "first answer")     # 4.04: not there yet
        with open(script, "a") as f:
            f.write('\nmoonlet.resource{ path = "/new", get = function() '
                    'return moonlet.CONTENT, "v2" end }\n')
        check(d.srv.log.wait_for("reloaded .*secure.lua", 5), "reloaded")
        m = wait_line(p, r"^< (\S+)", 5)
        check(m and m.group(1).endswith(b"v2".hex()), "the new version answers: %r" %
              (m and m.group(0)))
        p.wait()
        text = get("gnutls", d.uri + "/.well-known/core?href=/s*", *psk_args())
        eq(sorted(re.findall(r"<([^>]*)>", text)), ["/secret", "/sensors"], "href=/s* filter")


@test("session resumption (RFC 5077 tickets): a resumed handshake right away and after one key "
      "rotation (dtls_ticket_rotate = 1: the previous key still opens its tickets); none with "
      "dtls_ticket_rotate = 0")
def t_resumption():
    with Dtls(opts={"dtls_ticket_rotate": 1}) as d:
        for pause in ("0", "1.3"):
            out = dsend(d.srv.dtls_port, [], *psk_args(), "-R", pause)
            hs = [l for l in out if l.startswith("handshake")]
            check(len(hs) == 2 and hs[0].startswith("handshake OK") and hs[1].endswith(" resumed"),
                  "resumed after %s s: %r" % (pause, out))
        s = wait_stat(d, "dtls_resumed", 2)    # the client's Finished may still be on its way
        eq((s["dtls_full"], s["dtls_resumed"]), (2, 2), "full and resumed handshakes")
        out = dsend(d.srv.dtls_port, [hexmsg(CON, GET, 9, b"q", "who")], *psk_args(), "-R", "0")
        check(any("7c73656e736f722d317c" in l for l in out), "a resumed session keeps the "
              "identity: %r" % out)     # "|sensor-1|"
    with Dtls(opts={"dtls_ticket_rotate": 0}) as d:
        out = dsend(d.srv.dtls_port, [], *psk_args(), "-R", "0")
        hs = [l for l in out if l.startswith("handshake OK")]
        check(len(hs) == 2 and not hs[1].endswith("resumed"), "no tickets: %r" % out)


@test("block-wise over coaps: a 256 KiB download (Block2) and upload (Block1) with 1024-byte "
      "blocks, byte for byte, with both clients")
def t_blockwise():
    with Dtls() as d, tempfile.TemporaryDirectory() as t:
        up = os.path.join(t, "up")
        with open(up, "wb") as f:
            f.write(BIG)
        for kind in ("gnutls", "openssl"):
            out = os.path.join(t, "big." + kind)
            rc, _, err = client(kind, "-b", "1024", "-o", out, *psk_args(), d.uri + "/big",
                                wait=20, timeout=60)
            got = open(out, "rb").read() if os.path.exists(out) else b""
            eq((len(got), got == BIG), (len(BIG), True), kind + " download (%s)" % err[-200:])
            rc, o, err = client(kind, "-m", "put", "-b", "1024", "-f", up, *psk_args(),
                                d.uri + "/up", wait=20, timeout=60)
            eq(o.strip(), "262144:same", kind + " upload")


@test("Observe over coaps: coap-client-gnutls -s 2 gets several notifications; the peer's "
      "close_notify ends the observation with its association")
def t_observe():
    with Dtls() as d:
        rc, out, err = client("gnutls", "-w", "-s", "2", *psk_args(), d.uri + "/clock", wait=3)
        values = [int(x) for x in out.split() if x.isdigit()]
        check(len(values) >= 4 and values == sorted(values), "notifications: %r" % out)
        s = wait_stat(d, "observers", 0)
        eq((s["observers"], s["dtls_sessions"]), (0, 0), "observation ended with the session")


@test("replays: a duplicated CoAP message in two records runs the handler once (dedup); the same "
      "record replayed by the network (a relay doubling every datagram) is dropped by the "
      "DTLS replay window")
def t_replay():
    with Dtls() as d:
        post = hexmsg(CON, 2, 0x7001, b"r", "count")
        out = dsend(d.srv.dtls_port, [post], *psk_args(), "-x", "2", "-n", "2", "-w", "1")
        answers = [l for l in out if l.startswith("< ")]
        eq((len(answers), answers[0] == answers[-1] if answers else None), (2, True),
           "two identical answers: %r" % out)
        eq(get("gnutls", d.uri + "/count", *psk_args()).strip(), "1", "handler ran once")
        # a relay doubling each datagram from the client
        relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        relay.bind(("127.0.0.1", 0))
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.connect(("127.0.0.1", d.srv.dtls_port))
        stop = threading.Event()

        def pump():
            peer = None
            relay.settimeout(0.05)
            up.settimeout(0.05)
            while not stop.is_set():
                try:
                    data, peer = relay.recvfrom(65536)
                    up.send(data)
                    up.send(data)
                except socket.timeout:
                    pass
                try:
                    data = up.recv(65536)
                    if peer:
                        relay.sendto(data, peer)
                except socket.timeout:
                    pass
        th = threading.Thread(target=pump, daemon=True)
        th.start()
        try:
            out = dsend(relay.getsockname()[1], [hexmsg(CON, 2, 0x7002, b"s", "count")],
                        *psk_args(), "-w", "2")
            check(any(l.startswith("< ") for l in out), "answer through the relay: %r" % out)
        finally:
            stop.set()
            th.join(2)
        eq(get("gnutls", d.uri + "/count", *psk_args()).strip(), "2", "handler ran once more")


@test("before a handshake: garbage, truncated records, application data and 2000 ClientHellos "
      "without a cookie from 2000 source ports create no state (only HelloVerifyRequests, each "
      "smaller than the hello) and memory stays flat")
def t_stateless():
    with Dtls() as d:
        port = d.srv.dtls_port
        s = udp(port)
        for junk in (b"\x00", b"garbage datagram", bytes(13), client_hello()[:40],
                     b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x10" + os.urandom(16)):
            s.send(junk)
            eq(recv(s, 0.2), None, "answer to %r" % junk[:8])
        rss = d.srv.rss_kb()
        sizes = []
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(100)]
        for batch in range(20):     # 100 in flight at a time: no socket buffer overflows
            hellos = [client_hello() for _ in socks]
            for c, hello in zip(socks, hellos):
                c.sendto(hello, ("127.0.0.1", port))
            for c, hello in zip(socks, hellos):
                c.settimeout(5)
                sizes.append((len(c.recv(2048)), len(hello)))
        st = d.stats()
        grew = d.srv.rss_kb() - rss
        eq((st["dtls_handshaking"], st["dtls_sessions"], st["sessions"]), (0, 0, 0), "state")
        check(st["dtls_hvr"] == 2000 and st["dtls_stray"] >= 4, "counters %r" % st)
        check(all(a < b for a, b in sizes), "HelloVerifyRequest smaller than the hello: %r" %
              sizes[:3])
        check(grew < 512, "RSS grew by %d KiB" % grew)
        for c in socks:
            c.close()


@test("handshake limits: a peer that stops after the first flight is freed at "
      "dtls_handshake_timeout; dtls_handshakes = 1 turns a second handshake away while one is "
      "in progress; dtls_handshake_rate = 1 turns away a second from the same address")
def t_handshake_limits():
    with Dtls(opts={"dtls_handshake_timeout": 1, "dtls_handshakes": 1}) as d:
        s1, flight = stalled_handshake(d.srv.dtls_port)
        check(flight and flight[0] == 22, "server's first flight: %r" % flight[:16])
        eq(d.stats()["dtls_handshaking"], 1, "in progress")
        s2, flight2 = stalled_handshake(d.srv.dtls_port)
        eq(flight2, None, "second handshake answered while the first one holds the only slot")
        st = wait_stat(d, "dtls_handshaking", 0, 4)
        eq((st["dtls_handshaking"], st["dtls_handshakes_full"], st["dtls_fail_timeout"]),
           (0, 1, 1), "timed out, turned away")
        eq(get("gnutls", d.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", "then one works")
    with Dtls(opts={"dtls_handshake_rate": 1}) as d:
        eq(get("gnutls", d.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", "first")
        s3, flight3 = stalled_handshake(d.srv.dtls_port)
        eq(flight3, None, "a second handshake within the second")
        eq(d.stats()["dtls_rate_limited"], 1, "rate_limited")


@test("handshake retransmission (RFC 6347 §4.2.4): a client that stops answering gets the "
      "server's flight again after about 1 s, then after about 2 s more (the timer doubles)")
def t_retransmission():
    with Dtls(opts={"dtls_handshake_timeout": 10}) as d:
        s, flight = stalled_handshake(d.srv.dtls_port)
        t0 = time.monotonic()
        check(flight and flight[0] == 22, "first flight")
        again = recv(s, 2.0)
        t1 = time.monotonic()
        third = recv(s, 3.5)
        t2 = time.monotonic()
        eq((again is not None and len(again) == len(flight), third is not None), (True, True),
           "the flight twice more")
        check(0.6 < t1 - t0 < 1.8 and 1.4 < t2 - t1 < 3.2 and t2 - t1 > 1.3 * (t1 - t0),
              "after %.2f s, then %.2f s (1 s, then 2 s)" % (t1 - t0, t2 - t1))


@test("failed handshakes are logged one line each up to 10 a second; the rest are counted "
      "and summed up in one line (a flood of failures is not a flood of lines)")
def t_log_rate():
    with Dtls(opts={"dtls_handshake_rate": 1000}) as d:
        for _ in range(30):
            dsend(d.srv.dtls_port, [], "-u", "nobody", "-k", "x", "-t", "1")
        time.sleep(1.1)     # the next second's first failure writes the sum
        dsend(d.srv.dtls_port, [], "-u", "nobody", "-k", "x", "-t", "1")
        check(d.srv.log.wait_for(r"\d+ more failed handshakes not logged", 3), "the sum line")
        lines = [l for l in d.srv.log.lines if "unknown PSK identity" in l]
        check(len(lines) <= 21, "%d lines for 31 failures in about a second" % len(lines))
        eq(d.stats()["dtls_fail_psk"], 31, "all counted")


@test("dtls_sessions = 2: a third association evicts the least recently active idle one (it "
      "gets close_notify); dtls_idle frees a quiet association, CoAP pings keep one alive")
def t_session_limits():
    with Dtls(opts={"dtls_sessions": 2}) as d:
        ping = "40000001"
        a = dsend_bg(d.srv.dtls_port, [ping], *psk_args(), "-H", "8")
        check(wait_line(a, r"^= 1", 5), "first association")
        b = dsend_bg(d.srv.dtls_port, [ping], *psk_args("gw"), "-H", "8")
        check(wait_line(b, r"^= 1", 5), "second association")
        eq(get("gnutls", d.uri + "/who", *psk_args()).strip(), "psk|sensor-1|", "third")
        check(wait_line(a, r"^closed", 5), "the least recently active one got close_notify")
        eq(d.stats()["dtls_evicted"], 1, "evicted")
        b.kill()
        a.kill()
        a.wait()
        b.wait()
    with Dtls(opts={"dtls_idle": 1.5}) as d:
        quiet = dsend_bg(d.srv.dtls_port, [ping], *psk_args(), "-H", "6")
        pinger = dsend_bg(d.srv.dtls_port, [ping] * 6, *psk_args("gw"), "-i", "0.6", "-H", "0.2")
        check(wait_line(quiet, r"^closed", 5), "idle association closed")
        check(wait_line(pinger, r"^open", 8), "pinging association kept")
        eq(wait_stat(d, "dtls_idle", 1)["dtls_idle"], 1, "one idle close")
        for p in (quiet, pinger):
            p.kill()
            p.wait()


@test("a peer restarting on the same port (RFC 6347 §4.2.8): the new handshake completes and "
      "replaces the old association; the old one served until then")
def t_restart():
    with Dtls() as d:
        port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        port.bind(("127.0.0.1", 0))
        local = port.getsockname()[1]
        port.close()
        msg = hexmsg(CON, GET, 1, b"t", "who")
        out = dsend(d.srv.dtls_port, [msg], *psk_args(), "-p", local, "-q")
        check(any(l.startswith("< ") for l in out), "first: %r" % out)
        eq(d.stats()["dtls_sessions"], 1, "kept (no close_notify)")
        out = dsend(d.srv.dtls_port, [msg], *psk_args("gw"), "-p", local, "-q")
        check(any("7c67777c" in l for l in out), "second identity served: %r" % out)  # "|gw|"
        st = d.stats()
        eq((st["dtls_replaced"], st["dtls_sessions"]), (1, 1), "replaced, one association")


@test("shutdown and SIGHUP: an established association gets close_notify when the server stops "
      "and when a reload removes its listener")
def t_close_notify():
    with Dtls() as d:
        a = dsend_bg(d.srv.dtls_port, ["40000001"], *psk_args(), "-H", "8")
        check(wait_line(a, r"^= 1", 5), "association")
        with open(d.conf) as f:
            text = f.read()
        with open(d.conf, "w") as f:
            f.write(text.replace(', "coaps://127.0.0.1:0"', ""))
        os.kill(d.srv.pid, signal.SIGHUP)
        check(wait_line(a, r"^closed", 5), "close_notify when the listener went")
        a.wait()
    with Dtls() as d:
        a = dsend_bg(d.srv.dtls_port, ["40000001"], *psk_args(), "-H", "8")
        check(wait_line(a, r"^= 1", 5), "association")
        d.srv.stop()
        check(wait_line(a, r"^closed", 5), "close_notify at shutdown")
        a.wait()


@test("SIGHUP changes a PSK: new handshakes use the new key, an established association keeps "
      "serving; a reload whose certificate file is missing is rejected and the keys stay")
def t_reload_credentials():
    with Dtls() as d:
        a = dsend_bg(d.srv.dtls_port, ["40000001"] * 4, *psk_args(), "-i", "1", "-H", "0.5")
        check(wait_line(a, r"^= 1", 5), "association")
        with open(d.conf) as f:
            text = f.read()
        with open(d.conf, "w") as f:
            f.write(text.replace("secret1", "secret2"))
        start = len(d.srv.log.lines)
        os.kill(d.srv.pid, signal.SIGHUP)
        check(d.srv.log.wait_for("reloaded", 5, start), "reloaded")
        eq(get("gnutls", d.uri + "/who", "-u", "sensor-1", "-k", "secret2").strip(),
           "psk|sensor-1|", "new key")
        out = dsend(d.srv.dtls_port, [], *psk_args(), "-t", "2")
        check(out and out[0].startswith("handshake FAILED"), "old key refused: %r" % out)
        check(wait_line(a, r"^open", 8), "the established association kept serving")
        with open(d.conf, "w") as f:
            f.write(text.replace("secret1", "secret3").replace(
                "dtls = {", 'dtls = { certificate = "/nonexistent.pem"; key = "/x.key";'))
        start = len(d.srv.log.lines)
        os.kill(d.srv.pid, signal.SIGHUP)
        check(d.srv.log.wait_for("/nonexistent.pem: cannot read", 5, start), "names the file")
        check(d.srv.log.wait_for("reload rejected", 5, start), "rejected")
        eq(get("gnutls", d.uri + "/who", "-u", "sensor-1", "-k", "secret2").strip(),
           "psk|sensor-1|", "the keys stayed")
        a.wait()


@test("start-up: a missing key file, a file that is not PEM, a key that does not match its "
      "certificate, a missing PSK file, a coaps:// listener without credentials: one error "
      "line naming the file (or what is missing), exit 1")
def t_startup_errors():
    c = certs()
    cases = [
        ('certificate = "%s"; key = "/nonexistent.key";' % c("srv.pem"), "/nonexistent.key"),
        ('certificate = "%s"; key = "%s";' % (c("notpem.pem"), c("srv.key")), "notpem.pem"),
        ('certificate = "%s"; key = "%s";' % (c("srv.pem"), c("cli.key")), "does not match"),
        ('psk_file = "/nonexistent.psk";', "/nonexistent.psk"),
        ('certificate = "%s"; key = "%s";' % (c("srv.pem"), os.path.dirname(c("srv.key"))),
         os.path.dirname(c("srv.key"))),      # a directory: read fails
        ('psk_hint = "x";', "needs DTLS credentials"),
    ]
    with tempfile.TemporaryDirectory() as t:
        for dtls, want in cases:
            conf = dtls_conf(t, dtls=dtls)
            for args in (["-t", "-c", conf], ["-c", conf]):
                rc, out = run_moonlet(args, plugins=[])
                errors = [l for l in out if " error: " in l]
                check(rc == 1 and len(errors) == 1 and want in errors[0],
                      "%s %s: exit 1 and one error naming %r, got %r %r" % (
                          args[0], dtls, want, rc, out))


@test("a PSK file (IDENTITY KEY per line, hex: keys) and -d on the command line: "
      "moonlet -l coaps://127.0.0.1:0 -d psk_file=FILE serves")
def t_psk_file_cli():
    with tempfile.TemporaryDirectory() as t:
        f = os.path.join(t, "keys.psk")
        with open(f, "w") as fh:
            fh.write("# devices\nsensor-1 secret1\n\ngw hex:%s\n" % b"gateway-key".hex())
        srv = Server(addr=None, args=["-l", "coap://[::1]:0", "-l", "coaps://127.0.0.1:0",
                                      "-d", "psk_file=" + f], dtls=True,
                     plugins=[built("plugins", "hello.so")])
        try:
            for ident in ("sensor-1", "gw"):
                eq(get("openssl", "coaps://127.0.0.1:%d/hello" % srv.dtls_port,
                       *psk_args(ident)).strip(), "Hello, world", ident)
        finally:
            srv.stop()


MALFORMED = [  # MALFORMED.md rows that hold after decryption: (id, hex with MID abcd, reaction)
    ("H1", "4001", "drop"), ("H2", "0001abcd", "drop"), ("H3", "8001abcd", "drop"),
    ("H4", "4901abcd" + "00" * 9, "rst"), ("H5", "4f01abcd", "rst"),
    ("H8", "4801abcd1122", "rst"), ("H10", "4000abcd", "rst"), ("H11", "4100abcd11", "rst"),
    ("H12", "4000abcdff41", "rst"), ("H14", "5000abcd", "drop"), ("H15", "6000abcd", "drop"),
    ("H16", "7000abcd", "drop"), ("H17", "7100abcd11", "drop"),
    ("H18", "6001abcdb377686f", "drop"), ("H19", "4020abcd", "rst"), ("H20", "40c0abcd", "rst"),
    ("H21", "40e1abcd", "rst"), ("H22", "4145abcd11", "rst"),
    ("H24", "4008abcdb377686f", "4.05"),
    ("O1", "4001abcdf141", "rst"), ("O2", "4001abcd1f", "rst"), ("O3", "4001abcdd0", "rst"),
    ("O7", "4001abcdb5776f", "rst"), ("O10", "4001abcdb377686fff", "rst"),
    ("O11", "4001abcdb377686fd04b", "4.02"), ("O16", "4001abcdb377686f61000100", "4.02"),
    ("O20", "4001abcd308377686f", "4.02"), ("R2", "4001abcdb22e2e", "4.04"),
    ("R5", "4001abcdb377006f", "4.04"),
]


def malformed_msgs():
    """The rows with a MID of their own each (one association: no dedup between them)."""
    return [hx.replace("abcd", "%04x" % (0x1000 + i), 1) for i, (_, hx, _) in
            enumerate(MALFORMED)]


@test("the MALFORMED.md rows that apply after decryption get the same reactions over coaps:// "
      "(drop, RST, 4.0x) in one association, which keeps serving")
def t_malformed():
    with Dtls() as d:
        msgs = malformed_msgs() + [hexmsg(CON, GET, 0x77, b"z", "who")]
        out = dsend(d.srv.dtls_port, msgs, *psk_args(), "-w", "0.3")
        eq(out[0].startswith("handshake OK"), True, "handshake: %r" % out[:1])
        groups, cur = [], []
        for line in out[1:]:
            if line.startswith("< "):
                cur.append(bytes.fromhex(line[2:]))
            elif line.startswith("= "):
                groups.append(cur)
                cur = []
        eq(len(groups), len(msgs), "answers per message")
        for (rid, _, want), hx, got in zip(MALFORMED, malformed_msgs(), groups):
            if want == "drop":
                eq(got, [], rid)
            elif want == "rst":
                check(len(got) == 1 and got[0][:2] == b"\x70\x00" and got[0][2:4] == bytes.fromhex(
                    hx[4:8]), "%s: RST, got %r" % (rid, got))
            else:
                c, dd = want.split(".")
                check(len(got) == 1 and got[0][1] == (int(c) << 5 | int(dd)),
                      "%s: %s, got %r" % (rid, want, got))
        check(groups[-1] and groups[-1][0][1] == 0x45, "still serving: %r" % groups[-1])


NODE_DIR = os.path.join(ROOT, "tests", "integration", "node")


def node_dtls(*args, want_rc=0, timeout=30):
    """node tests/integration/node/dtls.js ARGS -> its JSON line (its stderr if want_rc != 0)."""
    import json
    node = shutil.which("node")
    check(node is not None, "node not installed (make deps)")
    check(os.path.isdir(os.path.join(NODE_DIR, "node_modules", "node-coap-client")),
          "tests/integration/node/node_modules missing: run `npm ci` there (make check does)")
    p = subprocess.run([node, "dtls.js"] + [str(a) for a in args], cwd=NODE_DIR,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    eq(p.returncode, want_rc, "node dtls.js %s: exit status (stdout %r, stderr %r)" %
       (" ".join(map(str, args)), out, err))
    return json.loads(out.strip().splitlines()[-1]) if want_rc == 0 else err


@test("node-coap-client (node-dtls-client, a third DTLS stack): GET /who with PSK and an Observe "
      "of /clock; of its 11 PSK suites our order picks TLS_PSK_WITH_AES_128_CCM_8, GCM is "
      "accepted when that is all it offers, CBC is refused with handshake_failure; each "
      "association ends with its close_notify and takes the observation with it")
def t_node_coap_client():
    with Dtls() as d:
        uri = d.uri + "/who"
        for ident, key in PSK:
            r = node_dtls(uri, ident, key)
            eq((r["code"], r["payload"], r["cipher"]),
               ("2.05", "psk|%s|" % ident, "TLS_PSK_WITH_AES_128_CCM_8"), "GET /who as " + ident)
        r = node_dtls("--ciphers", "TLS_PSK_WITH_AES_128_GCM_SHA256", uri, *PSK[0])
        eq((r["code"], r["payload"], r["cipher"]),
           ("2.05", "psk|sensor-1|", "TLS_PSK_WITH_AES_128_GCM_SHA256"), "GCM only")
        # no suite in common (we offer AEAD suites only): refused; node-coap-client makes 3
        # handshakes, each ended by the handshake_failure alert
        err = node_dtls("--ciphers", "TLS_PSK_WITH_AES_128_CBC_SHA256", "--timeout", "8", uri,
                        *PSK[0], want_rc=1)
        check("handshake_failure" in err, "CBC only: the alert reached node: %r" % err)
        check(d.srv.log.wait_for("handshake with .* failed", 3), "CBC only: logged")
        seen = node_dtls("--observe", "1.5", d.uri + "/clock", *PSK[0])
        values = [int(x["payload"]) for x in seen]
        check(len(values) >= 4 and all(x["code"] == "2.05" for x in seen) and
              values == sorted(set(values)), "registration answer and notifications: %r" % seen)
        s = wait_stat(d, "dtls_sessions", 0)
        eq((s["dtls_full"], s["dtls_closed_by_peer"], s["dtls_sessions"], s["observers"]),
           (4, 4, 0, 0), "full handshakes, close_notify, sessions and observers left")


if __name__ == "__main__":
    if shutil.which("coap-client-gnutls") is None or not os.path.exists(DTLS_SEND):
        print("1 passed, 0 failed  # skipped: coap-client-gnutls or build/dtls-send missing")
        sys.exit(0)
    main()
