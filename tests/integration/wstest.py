"""wstest.py -- a WebSocket client of our own for the coap+ws:// suites (test_ws.py,
test_browser.py): stdlib only -- the HTTP/1.1 upgrade (RFC 6455 §4), masked frames,
fragmentation, control frames -- carrying RFC 8323 frames (rfc8323.FrameConn over it, each
§3.2 frame converted to the §4.4 format on the way), and WsServer, moonlet with a
coap+ws:// listener on 127.0.0.1.
"""

import base64
import os
import re
import select
import socket
import ssl
import struct
import time

from coaptest import Server, cfg, check, eq
from rfc8323 import CSM_OK, FrameConn, frame, frame_size

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TCP_RES = os.path.join(ROOT, "tests", "lua", "tcp_res.lua")
NODE_DIR = os.path.join(ROOT, "tests", "integration", "node")
READY_WS_RE = re.compile(r"ready coap\+ws://\S+:(\d+)")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, WPING, WPONG = 1, 2, 8, 9, 10
BLOCK2 = 23
BIG = b"".join(((i * 2654435761) & 0xFFFFFFFF).to_bytes(4, "big") for i in range(65536))


def upgrade_request(key, path="/.well-known/coap", protocol="coap", version="13",
                    method="GET", extra=""):
    r = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" % (
        method, path)
    if key is not None:
        r += "Sec-WebSocket-Key: %s\r\n" % key
    if version is not None:
        r += "Sec-WebSocket-Version: %s\r\n" % version
    if protocol is not None:
        r += "Sec-WebSocket-Protocol: %s\r\n" % protocol
    return (r + extra + "\r\n").encode()


def ws_frame(op, payload, mask=True, fin=True, length=None):
    n = len(payload) if length is None else length
    h = bytes([(0x80 if fin else 0) | op])
    m = 0x80 if mask else 0
    if n < 126:
        h += bytes([m | n])
    elif n < 65536:
        h += bytes([m | 126]) + struct.pack(">H", n)
    else:
        h += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return h + payload
    k = os.urandom(4)
    return h + k + bytes(b ^ k[i % 4] for i, b in enumerate(payload))


def to_ws(data):
    """An RFC 8323 §3.2 frame as a §4.4 message: Len 0, no extended length."""
    fs = frame_size(data)
    return bytes([data[0] & 15, data[fs[1] - 1]]) + data[fs[1]:]


def from_ws(msg):
    """A §4.4 message as a §3.2 frame (for FrameConn's parser)."""
    tkl, body = msg[0] & 15, msg[2 + (msg[0] & 15):]
    return frame(msg[1], msg[2:2 + tkl], body=body)


class Ws(FrameConn):
    """A WebSocket connection carrying CoAP: the upgrade, then frames. .head: the HTTP
    answer; .closes: the close frames received as (code, reason); .eof as for TCP."""

    close_wait = 3.5

    def __init__(self, port, csm=CSM_OK, upgrade=True, ctx=None, rcvbuf=None, **kw):
        FrameConn.__init__(self)
        if rcvbuf:      # a small receive window: set before connecting (TCP's window scale)
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(5)
            self.sock.connect(("127.0.0.1", port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if ctx is not None:     # coaps+ws://: TLS first (Python's ssl: OpenSSL)
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.wbuf, self.closes, self.pongs, self.head = bytearray(), [], [], b""
        self.key = base64.b64encode(os.urandom(16)).decode()
        if upgrade:
            self.sock.sendall(upgrade_request(self.key, **kw))
            self.read_head()
            check(self.head.startswith(b"HTTP/1.1 101 "), "upgrade refused: %r" % self.head)
            self.start(csm)

    def read_head(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.wbuf and time.monotonic() < deadline:
            if not self.readable(deadline - time.monotonic()):
                break
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                self.eof = "fin"
                break
            self.wbuf += d
        i = self.wbuf.find(b"\r\n\r\n")
        if i >= 0:
            self.head, self.wbuf = bytes(self.wbuf[:i + 4]), self.wbuf[i + 4:]
        else:
            self.head, self.wbuf = bytes(self.wbuf), bytearray()
        return self.head

    def readable(self, timeout):
        """Bytes to read within timeout? (TLS: decrypted ones may wait in the SSL object.)"""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        return bool(r)

    def close(self):
        self.sock.close()

    def raw(self, data):
        self.sock.sendall(data)

    def _send(self, data):
        self.sock.sendall(ws_frame(BINARY, to_ws(data)))

    def _frame(self):
        """One WebSocket frame from wbuf: (fin, op, payload) or None."""
        b = self.wbuf
        if len(b) < 2:
            return None
        n, i = b[1] & 127, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, i = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, i = struct.unpack(">Q", b[2:10])[0], 10
        check(not b[1] & 0x80, "a masked frame from the server")
        if len(b) < i + n:
            return None
        f = (b[0] >> 7, b[0] & 15, bytes(b[i:i + n]))
        del b[:i + n]
        return f

    def _read(self, timeout):
        deadline = time.monotonic() + timeout
        out = b""
        while True:
            f = self._frame()
            while f is not None:
                fin, op, payload = f
                check(fin, "a fragmented message from the server")
                if op == BINARY:
                    out += from_ws(payload)
                elif op == CLOSE:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                    self.closes.append((code, payload[2:]))
                elif op == WPING:
                    self.raw(ws_frame(WPONG, payload))
                elif op == WPONG:
                    self.pongs.append(payload)
                else:
                    check(False, "unexpected frame op %d from the server" % op)
                f = self._frame()
            if out:
                return out
            if not self.readable(deadline - time.monotonic()):
                return None
            try:
                d = self.sock.recv(1 << 20)
            except (ConnectionResetError, ssl.SSLError):
                self.eof = "reset"
                return b""
            if not d:
                self.eof = "fin"
                return b""
            self.wbuf += d


class WsServer:
    """moonlet with a coap+ws:// listener on 127.0.0.1."""

    def __init__(self, opts=None, lua=False):
        plugins = list(cfg.plugins) + ([TCP_RES] if lua else [])
        self.srv = Server(opts=opts, plugins=plugins, args=["-l", "coap+ws://127.0.0.1:0"])
        m = self.srv.log.wait_for(READY_WS_RE.pattern, 5.0)
        check(m, "no 'ready coap+ws://' line:\n" + self.srv.log.text())
        self.port = int(m.group(1))

    def ws(self, **kw):
        return Ws(self.port, **kw)

    def refused(self, data, want_status):
        """Send an HTTP request head: the answer's status line starts with want_status and
        the connection closes."""
        w = Ws(self.port, upgrade=False)
        try:
            w.raw(data)
            head = w.read_head()
            check(head.startswith(b"HTTP/1.1 " + want_status.encode()),
                  "expected %s, got %r" % (want_status, head[:200]))
            m = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
            check(m is not None, "no Content-Length: %r" % head)
            body, deadline = bytes(w.wbuf), time.monotonic() + 3.0
            while time.monotonic() < deadline:     # the body (not frames), then the end
                if not w.readable(deadline - time.monotonic()):
                    break
                try:
                    d = w.sock.recv(4096)
                except ConnectionResetError:
                    d = b""
                if not d:
                    w.eof = "fin"
                    break
                body += d
            check(w.eof, "the connection stayed open after %r" % head[:40])
            eq(len(body), int(m.group(1)), "the body's length")
            return head
        finally:
            w.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.srv.stop()
