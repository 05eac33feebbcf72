#!/usr/bin/env python3
"""test_browser.py -- CoAP over WebSockets (coap+ws://, RFC 8323 §4) from a real browser:
Debian's Chromium, headless, driven by npm's puppeteer-core (node/browser.js). The page is
served by request interception at an origin of its own (http://app.example/: a real Origin
header on the upgrade, and nothing leaves the machine), and its script builds and reads the
§4.4 messages itself: `new WebSocket(url, "coap")`, binaryType arraybuffer, its CSM first.
What the page received comes back as bytes and is checked here with rfc8323's decoder.

  python3 tests/integration/test_browser.py --moonlet build/moonlet \\
      --plugins build/plugins/hello.so build/tests/t_basic.so [-k NAME] [--list] [-v]

Every test starts its own server with `-l coap+ws://127.0.0.1:0` (the port comes from its
`ready coap+ws://...` line); the runner stops it by PID. One browser per test, started and
ended by browser.js (node is started in a session of its own and killed with it on a
timeout). Needs /usr/bin/chromium (.ci/deps) and tests/integration/node/node_modules
(`npm ci` there; the Makefile's check target runs it).
"""

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (CONTENT, CONTENT_FORMAT, ETAG, OBSERVE,  # noqa: E402
                      check, eq, note, stats, test)
from coaptest import main as run_main  # noqa: E402
from rfc8323 import CSM, OPT_BWT, OPT_MMS, Frame, block_val  # noqa: E402
from wstest import BIG, BLOCK2, NODE_DIR  # noqa: E402
import wstest  # noqa: E402

BROWSER_JS = os.path.join(NODE_DIR, "browser.js")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
APP, OTHER, EVIL = "http://app.example", "http://other.example:8080", "http://evil.example"
PAGE_TIMEOUT = 10.0         # one page's scenario, in the page
BROWSER_TIMEOUT = 30.0      # browser.js as a whole (launch, pages, close)


class WsServer(wstest.WsServer):
    """wstest's server (coap+ws:// on 127.0.0.1, tcp_res.lua when lua), and its pages."""

    def __init__(self, opts=None, lua=False):
        wstest.WsServer.__init__(self, opts, lua)
        self.url = "ws://127.0.0.1:%d/.well-known/coap" % self.port

    def page(self, scenario, origin=APP, **kw):
        d = {"scenario": scenario, "origin": origin, "url": self.url,
             "timeout": int(PAGE_TIMEOUT * 1000)}
        d.update(kw)
        return d


def browser(pages):
    """Run browser.js on these pages: the list of what each page saw (see browser.js)."""
    check(os.path.exists(CHROMIUM), "no %s (install Debian's chromium: .ci/deps)" % CHROMIUM)
    check(os.path.isdir(os.path.join(NODE_DIR, "node_modules", "puppeteer-core")),
          "no puppeteer-core in %s/node_modules (npm ci there)" % NODE_DIR)
    plan = {"chromium": CHROMIUM, "timeout": int(BROWSER_TIMEOUT * 1000), "pages": pages}
    p = subprocess.Popen(["node", BROWSER_JS, json.dumps(plan)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=NODE_DIR,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=BROWSER_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)       # node and the Chromium it started
        out, err = p.communicate()
        raise AssertionError("browser.js did not end within %.0fs; stderr:\n%s" % (
            BROWSER_TIMEOUT + 10, err.decode("utf-8", "replace")[-2000:]))
    err = err.decode("utf-8", "replace")
    eq(p.returncode, 0, "browser.js exit status (stderr %r)" % err[-2000:])
    res = json.loads(out.decode())["pages"]
    eq(len(res), len(pages), "pages run")
    return res


def messages(r):
    """The messages a page received, parsed here (not by the page's decoder)."""
    out = []
    for hx in r["msgs"]:
        check(not hx.startswith("text:"), "a text message: %r" % hx)
        raw = bytes.fromhex(hx)
        check(len(raw) >= 2 and raw[0] >> 4 == 0, "not an RFC 8323 §4.4 message: %s" % hx)
        try:
            out.append(Frame(raw, 2))
        except ValueError as e:
            raise AssertionError("unparsable message (%s): %s" % (e, hx))
    return out


def page_ok(r, what):
    """The page opened the WebSocket with the subprotocol coap, its scenario ran to the end,
    and it closed (1000) cleanly; the first message it got was the server's CSM: returns
    the parsed messages."""
    check(r["error"] is None, "%s: the page says %r (events %r, close %r, console %r)" % (
        what, r["error"], r["events"], r["close"], r["console"]))
    eq(r["origin"], r["_origin"], "%s: the page's origin" % what)
    eq((r["opened"], r["protocol"]), (True, "coap"), "%s: opened, subprotocol" % what)
    eq(r["events"], ["open", "close"], "%s: WebSocket events" % what)
    eq(r["close"], {"code": 1000, "reason": "", "wasClean": True}, "%s: close event" % what)
    eq(r["sent"][0], "00e1", "%s: the page's first message (an empty CSM)" % what)
    msgs = messages(r)
    check(msgs, "%s: nothing received" % what)
    eq((msgs[0].code_str, msgs[0].token), ("7.01", b""), "%s: first message" % what)
    return msgs


def csm_mms(f):
    """The server's CSM: Max-Message-Size (option 2) as a number; Block-Wise-Transfer too."""
    eq(f.code, CSM, "CSM code")
    eq([n for n, _ in f.options], [OPT_MMS, OPT_BWT], "CSM options %r" % f.options)
    eq(f.opt(OPT_BWT), b"", "Block-Wise-Transfer value")
    return f.opt_uint(OPT_MMS)


def run(pages):
    res = browser(pages)
    for p, r in zip(pages, res):
        r["_origin"] = p["origin"]
    return res


def check_hello(r, what):
    msgs = page_ok(r, what)
    eq(csm_mms(msgs[0]), 8192, "%s: the server's Max-Message-Size" % what)
    eq(len(msgs), 2, "%s: messages received (the CSM, the answer): %r" % (what, msgs))
    a = msgs[1]
    eq((a.code, a.token), (CONTENT, b"\x42"), "%s: code and token of the answer" % what)
    eq(a.options, [(CONTENT_FORMAT, b"")], "%s: options (Content-Format text/plain)" % what)
    eq(a.payload, b"Hello, world", "%s: payload" % what)
    eq(r["text"], "Hello, world", "%s: the text the page decoded" % what)
    eq(r["sent"][1], "010142b568656c6c6f", "%s: the page's GET /hello" % what)


# ---- the tests ------------------------------------------------------------------------------

@test("GET /hello from pages at http://app.example/ and http://evil.example/ (no "
      "ws_origins: any origin): the server's CSM first (Max-Message-Size 8192, Block-Wise-"
      "Transfer), then 2.05 'Hello, world' (Content-Format 0) under the page's token; the "
      "page's close 1000 is answered, wasClean")
def t_hello():
    with WsServer() as s:
        app, evil = run([s.page("hello", origin=APP, token="42", path="hello"),
                         s.page("hello", origin=EVIL, token="42", path="hello")])
        check_hello(app, "the page at %s" % APP)
        check_hello(evil, "the page at %s" % EVIL)


@test("Observe /tcp/clock from the page: the registration answer and 3 notifications, 2.05, "
      "one token, Observe and the clock rising; Observe 1 deregisters (an answer without "
      "Observe, nothing more under that token while a second observer gets two ticks); "
      "close 1000 clean, no observer left")
def t_observe():
    with WsServer(lua=True) as s:
        r, = run([s.page("observe", token="0b", token2="0c", count=3, path="tcp/clock")])
        msgs = page_ok(r, "observe")
        eq(csm_mms(msgs[0]), 8192, "the server's Max-Message-Size")
        eq(r["sent"][1:3], ["01010b605374637005636c6f636b", "01010b61015374637005636c6f636b"],
           "the page's registration and deregistration")
        dereg = r["dereg"]
        before = [f for f in msgs[1:dereg] if f.token == b"\x0b"]
        check(len(before) >= 4, "registration answer + 3 notifications before the "
              "deregistration: %r" % before)
        eq({f.code for f in msgs[1:]}, {CONTENT}, "codes of all the answers")
        obs = [f.opt_uint(OBSERVE) for f in before]
        check(None not in obs, "a message under the token without Observe: %r" % before)
        check(all(a < b for a, b in zip(obs, obs[1:])), "Observe values not rising: %r" % obs)
        clock = [int(f.payload.decode()[2:]) for f in before]
        check(all(f.payload.startswith(b"n=") for f in before), "payloads %r" % before)
        check(all(a < b for a, b in zip(clock, clock[1:])), "clock values %r" % clock)
        d = msgs[dereg]
        eq((d.code, d.token, d.opt(OBSERVE)), (CONTENT, b"\x0b", None),
           "the deregistration's answer (RFC 7641 §3.6: no Observe)")
        check(d.payload.startswith(b"n=") and int(d.payload[2:]) >= clock[-1],
              "the deregistration's payload %r after %r" % (d.payload, clock))
        after = msgs[dereg + 1:]
        eq([f for f in after if f.token == b"\x0b"], [], "messages under the deregistered token")
        second = [f for f in after if f.token == b"\x0c"]
        check(len(second) >= 3, "the second observer's registration answer and two "
              "notifications: %r" % second)
        obs2 = [f.opt_uint(OBSERVE) for f in second]
        check(None not in obs2 and all(a < b for a, b in zip(obs2, obs2[1:])),
              "the second observer's Observe values %r" % obs2)
        note("Observe values %r, then %r under the second token" % (obs, obs2))
        deadline = time.monotonic() + 3
        while stats(s.srv)["observers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        eq(stats(s.srv)["observers"], 0, "observers after the page's close")


@test("block-wise GET /tcp/big (256 KiB) from the page, Block2 SZX 6 one block after the "
      "other: 256 blocks 0..255, 1024 bytes each, M set but on the last, one ETag; the "
      "page's assembly is the expected words (checked in the page and here, sha256); the "
      "CSM says -o tcp_max_message=4096")
def t_blockwise():
    with WsServer({"tcp_max_message": 4096}, lua=True) as s:
        r, = run([s.page("block", token="0d", szx=6, path="tcp/big", max_blocks=300)])
        msgs = page_ok(r, "block-wise")
        eq(csm_mms(msgs[0]), 4096, "the server's Max-Message-Size (-o tcp_max_message=4096)")
        blocks = r["blocks"]
        eq(len(blocks), 256, "blocks")
        etags = set()
        for i, b in enumerate(blocks):
            f = Frame(bytes.fromhex(b["head"]), 2)     # parsed here, without the payload
            eq((f.code, f.token, block_val(f.opt(BLOCK2, b"")), b["len"]),
               (CONTENT, b"\x0d", (i, int(i < 255), 6), 1024),
               "block %d: code, token, Block2 (num, M, SZX), payload length" % i)
            eq((b["code"], b["num"], b["more"], b["szx"]), (f.code, i, int(i < 255), 6),
               "block %d as the page decoded it" % i)
            etags.add(f.opt(ETAG))
        eq(len(etags), 1, "ETags across the blocks: %r" % etags)
        check(None not in etags, "a block without an ETag")
        # the requests: Uri-Path tcp, big and Block2 num<<4|6, in order
        eq(r["sent"][1], "01010db374637003626967c106", "the first Block2 request")
        eq(r["sent"][2], "01010db374637003626967c116", "the second Block2 request")
        body = base64.b64decode(r["body_b64"])
        eq((r["body_len"], len(body)), (len(BIG), len(BIG)), "body length (page, here)")
        eq(r["first_bad_word"], -1, "the first wrong word the page found")
        eq(hashlib.sha256(body).hexdigest(), hashlib.sha256(BIG).hexdigest(), "sha256")
        check(body == BIG, "body differs")


def upgrade_status(port, origin):
    """A raw upgrade with this Origin header: the status line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("GET /.well-known/coap HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: coap\r\n"
                      "Origin: %s\r\n\r\n" % (port, origin)).encode())
        head = b""
        deadline = time.monotonic() + 5
        while b"\r\n" not in head and time.monotonic() < deadline:
            try:
                d = sock.recv(4096)
            except (socket.timeout, ConnectionResetError):
                break
            if not d:
                break
            head += d
        return head.split(b"\r\n", 1)[0].decode("latin-1")


@test("-o ws_origins=http://app.example,http://other.example:8080: pages at those origins "
      "connect and GET /hello; a page at http://evil.example gets error + close 1006 (its "
      "console: response code 403), the server logs a 403; raw upgrades: Origin evil -> 403, app -> 101")
def t_origins():
    with WsServer({"ws_origins": "%s,%s" % (APP, OTHER)}) as s:
        mark = len(s.srv.log.lines)
        evil, app, other = run([s.page("hello", origin=EVIL, token="42", path="hello"),
                                s.page("hello", origin=APP, token="42", path="hello"),
                                s.page("hello", origin=OTHER, token="42", path="hello")])
        eq(evil["origin"], EVIL, "the refused page's origin")
        eq((evil["opened"], evil["events"], evil["msgs"]), (False, ["error", "close"], []),
           "the page at %s: opened, events, messages" % EVIL)
        eq((evil["close"]["code"], evil["close"]["wasClean"]), (1006, False),
           "the page at %s: close event" % EVIL)
        check(any("403" in c for c in evil["console"]),
              "Chromium's console names no 403: %r" % evil["console"])
        m = s.srv.log.wait_for(r"\b403\b", 5.0, mark)
        check(m, "no log line with 403 after the refused page:\n" + s.srv.log.text())
        check_hello(app, "the page at %s" % APP)
        check_hello(other, "the page at %s" % OTHER)
        status = upgrade_status(s.port, EVIL)
        check(status.startswith("HTTP/1.1 403"), "raw upgrade, Origin %s: %r" % (EVIL, status))
        status = upgrade_status(s.port, APP)
        check(status.startswith("HTTP/1.1 101"), "raw upgrade, Origin %s: %r" % (APP, status))


if __name__ == "__main__":
    sys.exit(run_main())
