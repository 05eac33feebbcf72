#!/usr/bin/env python3
"""test_observe_cf.py -- the Observe Content-Format rule (RFC 7641 §4.2) on /obs of
examples/plugtest.lua: a notification's Content-Format must be the one of the answer that
registered the observer; when the representation changes format, an observer registered
in the old one gets a final 4.06 and is removed, observers registered in the new one keep
getting 2.05. Clients: raw datagrams (coaptest), libcoap's coap-client-notls and node's
`coap` package. Run like test_observe.py:

    python3 tests/integration/test_observe_cf.py --moonlet build/moonlet

/obs notifies in CONs; a PUT stores the body with its Content-Format and notifies; every
5 s plugtest.lua's clock rewrites it as text/plain and notifies. The tests wait for one of
those ticks (an observer of /obs-non, written by the same clock) and then have 5 s in which
the format is theirs. Observer counts come from the server's SIGUSR1 stats line.
"""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    ACK, CHANGED, CON, CONTENT, CONTENT_FORMAT, GET, NON, OBSERVE, PUT, Server, check,
    code, coap_client, encode, eq, expect_msg, main, note, request, stats, test)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PLUGTEST = os.path.join(ROOT, "examples", "plugtest.lua")
NODE_DIR = os.path.join(HERE, "node")
NOT_ACCEPTABLE = code(4, 6)
TEXT, XML = 0, 41

_mid = [0x5100]


def mid():
    _mid[0] = (_mid[0] + 1) & 0xFFFF
    return _mid[0]


def server():
    return Server(plugins=[PLUGTEST])


def observers(srv):
    return stats(srv)["observers"]


def register(c, path, token):
    """CON GET Observe 0 -> the ACK 2.05 with an Observe option."""
    m_id = mid()
    d = request(CON, GET, m_id, token, path, (), [(OBSERVE, 0)])
    m = expect_msg(c.exchange(d), d, ACK, CONTENT, m_id, token)
    check(m.opt_uint(OBSERVE) is not None, "registration answered without Observe: %r" % m)
    return m


def put(c, payload, fmt):
    m_id = mid()
    d = request(CON, PUT, m_id, b"\x71", "obs", (),
                [(CONTENT_FORMAT, fmt)], payload)
    expect_msg(c.exchange(d), d, ACK, CHANGED, m_id, b"\x71")


def next_for(c, token, timeout=6.0):
    """The next message with token (a CON is acknowledged); AssertionError if none."""
    while True:
        m = c.recv(timeout)
        if m is None:
            raise AssertionError("nothing for token %s within %.1f s" % (token.hex(), timeout))
        if m.type == CON:
            c.send(encode(ACK, 0, m.mid))
        if m.token == token:
            return m


def tick(srv):
    """Wait for a tick of plugtest.lua's 5-second clock (as an observer of /obs-non sees it):
    /obs is text/plain now and stays as the test makes it for the next 5 s. Returns that
    observer's client (it is an observer the stats count)."""
    c = srv.client()
    register(c, "obs-non", b"tk")
    m = next_for(c, b"tk", timeout=6.0)
    eq((m.type, m.code), (NON, CONTENT), "the clock's notification")
    return c


@test("raw clients, one format change each way: A registers on /obs in text/plain (0), a PUT "
      "stores XML (41): A gets one final CON 4.06 without Observe and is no observer any "
      "more; B registers in XML and gets the next change as 2.05 with Content-Format 41, A "
      "nothing; the clock's next tick (text/plain again) ends B with 4.06 in turn")
def t_raw():
    with server() as srv:
        clock = tick(srv)
        a, b, w = srv.client(), srv.client(), srv.client()
        r = register(a, "obs", b"A")
        eq(r.opt_uint(CONTENT_FORMAT), TEXT, "A's registration answer: Content-Format")
        eq(observers(srv), 2, "observers (the clock's and A)")
        put(w, b"<v>1</v>", XML)
        n = next_for(a, b"A")
        eq((n.type, n.code, n.opt_uint(OBSERVE), n.opt_uint(CONTENT_FORMAT), n.payload),
           (CON, NOT_ACCEPTABLE, None, None, b"Content-Format now 41"),
           "A's notification after the change to XML (type, code, Observe, Content-Format, "
           "payload)")
        eq(observers(srv), 1, "observers once A got its 4.06")
        r = register(b, "obs", b"B")
        eq((r.opt_uint(CONTENT_FORMAT), r.payload), (XML, b"<v>1</v>"), "B's registration")
        put(w, b"<v>2</v>", XML)
        n = next_for(b, b"B")
        eq((n.type, n.code, n.opt_uint(CONTENT_FORMAT), n.payload),
           (CON, CONTENT, XML, b"<v>2</v>"), "B's notification")
        check(n.opt_uint(OBSERVE) is not None, "B's notification has Observe: %r" % n)
        a.expect_silence(0.5)
        eq(observers(srv), 2, "observers (the clock's and B)")
        n = next_for(b, b"B", timeout=6.0)         # the clock: text/plain again
        eq((n.type, n.code, n.opt_uint(OBSERVE), n.payload),
           (CON, NOT_ACCEPTABLE, None, b"Content-Format now 0"), "B at the clock's tick")
        eq(observers(srv), 1, "observers (the clock's)")
        a.expect_silence(0.2)
        for c in (clock, a, b, w):
            c.close()


NODE_OBSERVE = r"""
const coap = require('coap');
const [port, path, n] = process.argv.slice(1);
const req = coap.request({host: '::1', port: +port, pathname: path, observe: true});
let got = 0;
req.on('response', r => {
  r.on('data', d => {
    const cf = r.options.filter(o => o.name === 'Content-Format').map(o => o.value);
    console.log(JSON.stringify({code: r.code, cf: cf.length ? cf[0] : null,
                                payload: d.toString()}));
    if (++got >= +n) { r.close(); setTimeout(() => process.exit(0), 100); }
  });
});
req.on('error', e => { console.log(JSON.stringify({error: '' + e})); process.exit(1); });
req.end();
setTimeout(() => { console.log(JSON.stringify({timeout: got})); process.exit(1); }, 8000);
"""


@test("coap-client-notls registered in text/plain gets 4.06 once the representation is XML, "
      "and nothing after, and is no observer any more; node's coap registered in XML gets the "
      "next change as 2.05 application/xml, and the clock's tick back to text/plain ends "
      "that observation too")
def t_clients():
    with server() as srv:
        clock = tick(srv)
        url = "coap://[::1]:%d/obs" % srv.port
        a = subprocess.Popen(["coap-client-notls", "-v", "7", "-s", "4", "-B", "5", url],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            seen = []
            for line in iter(a.stdout.readline, b""):      # its log: wait for the answer
                seen.append(line.decode("utf-8", "replace"))
                if re.search(r"t:ACK c:2\.05", seen[-1]):
                    break
            check(any("c:2.05" in x for x in seen), "coap-client: no registration answer:\n%s"
                  % "".join(seen)[-1500:])
            rc, out, err = coap_client("-m", "put", "-t", XML, "-e", "<v>1</v>", url)
            eq((rc, err.strip()), (0, ""), "PUT of XML (coap-client)")
            for line in iter(a.stdout.readline, b""):      # until it has the 4.06
                seen.append(line.decode("utf-8", "replace"))
                if re.search(r"t:CON c:4\.06", seen[-1]):
                    break
            eq(observers(srv), 1, "observers once coap-client got its 4.06 (the clock's)")
            node = subprocess.Popen(["node", "-e", NODE_OBSERVE, str(srv.port), "/obs", "2"],
                                    cwd=NODE_DIR, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
            first = json.loads(node.stdout.readline() or b"{}")
            eq(first, {"code": "2.05", "cf": "application/xml", "payload": "<v>1</v>"},
               "node's registration answer")
            rc, out, err = coap_client("-m", "put", "-t", XML, "-e", "<v>2</v>", url)
            eq((rc, err.strip()), (0, ""), "second PUT of XML")
            out, _ = node.communicate(timeout=15)
            eq(node.returncode, 0, "node's exit status (%r)" % out)
            eq(json.loads(out.decode().splitlines()[0]),
               {"code": "2.05", "cf": "application/xml", "payload": "<v>2</v>"},
               "node's notification")
            text, _ = a.communicate(timeout=15)
            text = "".join(seen) + text.decode("utf-8", "replace")
        finally:
            for p in (a, node) if "node" in locals() else (a,):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        # coap-client's log of what it sent and received; the responses only (pings, its
        # empty ACKs are 0.00): "v:1 t:CON c:4.06 i:.. {token} [ .. ] :: 'Content-Format.."
        ours = [x for x in re.findall(r"t:(?:CON|NON|ACK) c:(\d\.\d\d) i:\w+ \{\w*\} "
                                      r"\[[^\]]*\](?: :: '([^']*)')?", text) if x[0] != "0.00"]
        codes = [c for c, _ in ours]
        check("4.06" in codes, "coap-client saw no 4.06:\n%s" % text[-2000:])
        after = codes[codes.index("4.06") + 1:]
        eq((codes[:codes.index("4.06")], ours[codes.index("4.06")][1], after),
           (["2.05"], "Content-Format now 41", []),
           "what coap-client got: the registration answer, the 4.06 (and its diagnostic), "
           "then nothing")
        check(not re.search(r"Observe:\d+[^\]]*\] :: 'Content-Format", text),
              "the 4.06 carries no Observe option")
        eq(observers(srv), 2, "observers before the tick (the clock's, node's)")
        # node left without deregistering (the package cancels lazily, by RST); the clock's
        # next tick (text/plain) ends its XML observation with a 4.06 as well
        m = next_for(clock, b"tk", timeout=6.0)
        eq((m.type, m.code), (NON, CONTENT), "the clock's next tick")
        eq(observers(srv), 1, "observers left (the clock's)")
        note("coap-client: %s" % " ".join(codes))
        clock.close()


if __name__ == "__main__":
    main()
