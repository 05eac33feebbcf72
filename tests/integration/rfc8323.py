"""rfc8323.py -- CoAP over reliable transports for the tests (RFC 8323): the §3.2 frame codec,
the signaling codes and options (§5), and FrameConn, frames over a byte stream whose
subclasses move the bytes (a plain socket in test_tcp.py; TLS through Python's ssl or
gnutls-cli in test_tls.py)."""

import time

from coaptest import URI_PATH, URI_QUERY, Msg, code, code_str, encode_options, hx

# signaling (RFC 8323 §5.2) and its options (§5.3-§5.6)
CSM, PING, PONG, RELEASE, ABORT = code(7, 1), code(7, 2), code(7, 3), code(7, 4), code(7, 5)
OPT_MMS, OPT_BWT, OPT_CUSTODY, OPT_BAD_CSM = 2, 4, 2, 2
OPT_ALT_ADDRESS, OPT_HOLD_OFF = 2, 4


def _bytes(v):
    if isinstance(v, int):
        return v.to_bytes((v.bit_length() + 7) // 8, "big")
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


def frame(mcode, token=b"", options=(), payload=b"", body=None, tkl=None):
    """One message: Len/TKL (+ extended length), Code, Token, then options and payload (or
    body as given). tkl overrides the TKL nibble (for reserved values)."""
    if body is None:
        pl = _bytes(payload)
        body = encode_options(options) + (b"\xff" + pl if pl else b"")
    n, t = len(body), len(token) if tkl is None else tkl
    if n < 13:
        head = bytes([n << 4 | t])
    elif n < 269:
        head = bytes([13 << 4 | t, n - 13])
    elif n < 65805:
        head = bytes([14 << 4 | t]) + (n - 269).to_bytes(2, "big")
    else:
        head = bytes([15 << 4 | t]) + (n - 65805).to_bytes(4, "big")
    return head + bytes([mcode]) + bytes(token) + body


def req(method, token=b"", path=(), query=(), options=(), payload=b""):
    if isinstance(path, str):
        path = [s for s in path.split("/") if s]
    opts = [(URI_PATH, s) for s in path] + [(URI_QUERY, q) for q in query] + list(options)
    return frame(method, token, opts, payload)


def csm(mms=8192, bwt=True, extra=()):
    opts = ([(OPT_MMS, mms)] if mms is not None else []) + ([(OPT_BWT, b"")] if bwt else [])
    return frame(CSM, options=opts + list(extra))


CSM_OK = csm()


def frame_size(buf):
    """(total length, header length) of the frame at the start of buf, or None while its
    header is not whole."""
    if not buf:
        return None
    ln = buf[0] >> 4
    x = {13: 1, 14: 2, 15: 4}.get(ln, 0)
    if len(buf) < 2 + x:
        return None
    body = ln if x == 0 else (13, 269, 0, 65805)[x - 1] + int.from_bytes(buf[1:1 + x], "big")
    return 2 + x + (buf[0] & 15) + body, 2 + x


class Frame(Msg):
    """A message from the server: code, token, options, payload (coaptest.Msg's option
    decoder on a UDP-shaped copy); .frame holds the bytes as they came."""

    def __init__(self, raw, hl):
        Msg.__init__(self, bytes([0x40 | raw[0] & 15, raw[hl - 1], 0, 0]) + raw[hl:])
        self.frame = raw

    def __repr__(self):
        return "%s tok=%s opts=%s pl=%r  [%s%s]" % (
            self.code_str, self.token.hex() or "-", [(n, v.hex()) for n, v in self.options],
            self.payload[:60], hx(self.frame[:48]), " ..." if len(self.frame) > 48 else "")


def block_val(v):
    v = int.from_bytes(v, "big")
    return v >> 4, v >> 3 & 1, v & 7


class FrameConn:
    """Frames over a connection: subclasses provide _send(bytes) and _read(timeout) -> bytes,
    None (nothing yet) or b"" (the end: .eof says how it ended), and close()."""

    eof = None
    close_wait = 5.0            # closed()'s default wait

    def __init__(self):
        self.buf, self.sent, self.got, self.server_csm = bytearray(), [], [], None

    def start(self, csm=CSM_OK):
        """The server's CSM comes first; then ours (None: nothing)."""
        self.server_csm = self.expect(CSM, what="the server's CSM")
        if csm is not None:
            self.send(csm)

    def send(self, data):
        self.sent.append(bytes(data))
        self._send(bytes(data))

    def recv(self, timeout=5.0):
        """The next whole frame; None on timeout or at the end of the stream."""
        deadline = time.monotonic() + timeout
        while True:
            fs = frame_size(self.buf)
            if fs and len(self.buf) >= fs[0]:
                raw = bytes(self.buf[:fs[0]])
                del self.buf[:fs[0]]
                try:
                    f = Frame(raw, fs[1])
                except ValueError as e:
                    raise AssertionError("unparsable frame from the server (%s): %s" % (
                        e, hx(raw)))
                self.got.append(f)
                return f
            if self.eof:
                return None
            data = self._read(max(0.0, deadline - time.monotonic()))
            if not data:
                return None
            self.buf += data

    def state(self):
        return "closed by the server (%s)" % self.eof if self.eof else "still open"

    def diag(self):
        sent = [hx(d[:40]) + (" ..." if len(d) > 40 else "") for d in self.sent[-4:]]
        return "  sent (last %d): %s\n  received: %r\n  connection: %s" % (
            len(sent), "\n                 ".join(sent), self.got[-6:], self.state())

    def expect(self, mcode=None, token=None, timeout=5.0, what=None):
        """The next frame, which must have mcode (and token, if given)."""
        f = self.recv(timeout)
        if f is None:
            raise AssertionError("no %s within %.1fs\n%s" % (
                what or (code_str(mcode) if mcode is not None else "frame"), timeout,
                self.diag()))
        if (mcode is not None and f.code != mcode) or (token is not None and f.token != token):
            raise AssertionError("expected %s%s, got %r\n%s" % (
                code_str(mcode) if mcode is not None else "a frame",
                " tok=%s" % token.hex() if token is not None else "", f, self.diag()))
        return f

    def ask(self, data, mcode=None, token=None, timeout=5.0):
        """Send a request, return its answer (the next frame, token as sent)."""
        self.send(data)
        if token is None:
            fs = frame_size(data)
            token = data[fs[1]:fs[1] + (data[0] & 15)]
        return self.expect(mcode, token, timeout)

    def closed(self, timeout=None):
        """Read until the server ends the connection: the frames that came before
        (AssertionError if it is still open after timeout)."""
        timeout = self.close_wait if timeout is None else timeout
        deadline, frames = time.monotonic() + timeout, []
        while True:
            f = self.recv(max(0.0, deadline - time.monotonic()))
            if f is not None:
                frames.append(f)
            elif self.eof:
                return frames
            else:
                raise AssertionError("the server did not close the connection within %.1fs "
                                     "(frames meanwhile: %r)\n%s" % (timeout, frames,
                                                                      self.diag()))

    def silent(self, timeout=0.4):
        f = self.recv(timeout)
        if f is not None or self.eof:
            raise AssertionError("expected silence for %.1fs, got %r\n%s" % (
                timeout, f, self.diag()))

    def alive(self, token=b"\xa1"):
        """Ping -> Pong with the token: the connection is open and served."""
        self.send(frame(PING, token))
        self.expect(PONG, token, what="the Pong")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
