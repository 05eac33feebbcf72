#!/usr/bin/env python3
"""mcast_netns.py -- multicast discovery (RFC 7252 §8, RFC 6690 §4.1) between real
processes, run by test_discovery.py inside a network namespace of its own:

    unshare -n python3 tests/integration/mcast_netns.py --moonlet build/moonlet --plugins ...

It refuses to run where any interface but lo exists (never touch a real network). It makes
a veth pair: v0 carries the servers' addresses (fd00::1, fd00::2, 10.0.0.1, 10.0.0.2), v1
the client's (fd00::10, 10.0.0.10). Four moonlet servers serve examples/sensors.lua on port
5683 of one address each, all with `-g v0` and a 0.2 s leisure; the client sends to the
All-CoAP-Nodes groups out of v1, with a raw socket (to see codes, tokens and source
addresses) and with coap-client-notls -N.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coaptest import (  # noqa: E402
    CON, CONTENT, GET, NO_RESPONSE, NON, Msg, Server, check, coap_client, code, eq, link_parse,
    main, request, test)

BLOCK2 = 23

HERE = os.path.dirname(os.path.abspath(__file__))
SENSORS = os.path.normpath(os.path.join(HERE, "..", "..", "examples", "sensors.lua"))
LEISURE = 0.2
WAIT = 1.0          # longer than the leisure: an answer that comes, comes by then


def sh(*cmds):
    for c in cmds:
        subprocess.run(c, shell=True, check=True, stdout=subprocess.DEVNULL)


def setup():
    links = [name for _, name in socket.if_nameindex()]     # this namespace's own
    if links != ["lo"]:
        sys.exit("mcast_netns.py: interfaces %r here: run me under `unshare -n`" % links)
    for key in ("ipv6/conf/all/accept_dad", "ipv6/conf/default/accept_dad",
                "ipv4/conf/all/rp_filter", "ipv4/conf/default/rp_filter",
                "ipv4/conf/all/accept_local", "ipv4/conf/default/accept_local"):
        with open("/proc/sys/net/" + key, "w") as f:   # this namespace's own settings
            f.write("1" if key.endswith("accept_local") else "0")
    sh("ip link set lo up",
       "ip link add v0 type veth peer name v1",
       "ip link set v0 up", "ip link set v1 up",
       "ip -6 addr add fd00::1/64 dev v0 nodad", "ip -6 addr add fd00::2/64 dev v0 nodad",
       "ip -6 addr add fd00::10/64 dev v1 nodad",
       "ip addr add 10.0.0.1/24 dev v0", "ip addr add 10.0.0.2/24 dev v0",
       "ip addr add 10.0.0.10/24 dev v1",
       "ip route add 224.0.0.0/4 dev v1")


def servers():
    """Four servers for this test (the runner stops them by PID after it)."""
    return [Server(plugins=[SENSORS], addr=a, port=5683, args=["-g", "v0"],
                   opts={"multicast_leisure": LEISURE})
            for a in ("fd00::1", "fd00::2", "10.0.0.1", "10.0.0.2")]


def v6_client():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("fd00::10", 0))
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("v1"))
    return s, ("ff02::fd", 5683, 0, socket.if_nametoindex("v1"))


def v4_client():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.0.0.10", 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.0.0.10"))
    return s, ("224.0.1.187", 5683)


def ask(client, dgram, wait=WAIT, keep=False):
    """Send dgram to the group; every (source address, port, Msg) that arrives within wait.
    The socket is closed after, unless keep (then it is the caller's: client[0])."""
    sock, group = client
    sock.sendto(dgram, group)
    out, end = [], time.monotonic() + wait
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data, src = sock.recvfrom(4096)
        except socket.timeout:
            break
        if len(data) == 4 and data[0] == 0x40 and data[1] == 0:
            # a ping from a server verifying our address before its answer (RFC 9175
            # §2.4: an answer over 3x the request waits for that): RST, as §4.3 says
            sock.sendto(bytes([0x70, 0]) + data[2:4], src)
            continue
        out.append((src[0], src[1], Msg(data)))
    if not keep:
        sock.close()
    return out


def unicast(sock, dst, dgram):
    """One answer to dgram from dst (pings answered on the way, RFC 7252 §4.3)."""
    sock.settimeout(5)
    sock.sendto(dgram, dst)
    while True:
        data, src = sock.recvfrom(4096)
        if len(data) == 4 and data[0] == 0x40 and data[1] == 0:
            sock.sendto(bytes([0x70, 0]) + data[2:4], src)
            continue
        return Msg(data)


def whole(sock, addr, port, first, query):
    """The document a group answer starts: a server cuts its answer to a peer it has not
    verified into blocks within three times the request (RFC 9175 §2.4); the client fetches
    the rest from that server by unicast (RFC 7959 §2.4), with the block size given."""
    body, m = first.payload, first
    while m.opt_uint(BLOCK2) is not None and m.opt_uint(BLOCK2) & 8:
        b = m.opt_uint(BLOCK2)
        num, szx = (b >> 4) + 1, b & 7
        m = unicast(sock, (addr, port), request(CON, GET, 0x5400 + num, b"w",
                                                [".well-known", "core"], [query],
                                                [(BLOCK2, num << 4 | szx)]))
        eq((m.code, (m.opt_uint(BLOCK2) or 0) >> 4), (CONTENT, num), "block %d" % num)
        body += m.payload
    return body


def discovery(query, mtype=NON, options=(), path=(".well-known", "core")):
    return request(mtype, GET, 0x5100 + len(query or ""), b"mc", list(path),
                   [query] if query else [], options)


@test("IPv6: one NON GET /.well-known/core?rt=temperature to [ff02::fd] -> exactly two "
      "answers, NON 2.05 with the token, from fd00::1 and fd00::2 port 5683, each listing "
      "/sensors/temp and /sensors/temp_outdoor")
def t_v6():
    servers()
    client = v6_client()
    dgram = discovery("rt=temperature")
    got = ask(client, dgram, keep=True)
    eq(sorted((a, p) for a, p, _ in got), [("fd00::1", 5683), ("fd00::2", 5683)],
       "answering addresses")
    for a, p, m in got:
        eq((m.type, m.code, m.token), (NON, CONTENT, b"mc"), "answer from %s" % a)
        check(len(m.raw) <= 3 * len(dgram), "answer from %s: %d bytes to a %d-byte request "
              "(the 3x rule)" % (a, len(m.raw), len(dgram)))
        eq(sorted(h for h, _ in link_parse(whole(client[0], a, p, m, "rt=temperature").decode())),
           ["/sensors/temp", "/sensors/temp_outdoor"], "links from %s" % a)
    client[0].close()


@test("IPv4: the same to 224.0.1.187 -> two answers, from 10.0.0.1 and 10.0.0.2")
def t_v4():
    servers()
    got = ask(v4_client(), discovery("rt=temperature"))
    eq(sorted((a, p) for a, p, _ in got), [("10.0.0.1", 5683), ("10.0.0.2", 5683)],
       "answering addresses")
    for a, _, m in got:
        eq((m.type, m.code), (NON, CONTENT), "answer from %s" % a)


@test("coap-client-notls -N 'coap://[ff02::fd%v1]/.well-known/core?rt=temperature' prints "
      "the whole document: the group answer is block 0 (within 3x the request), libcoap "
      "fetches the rest by unicast")
def t_coap_client():
    servers()
    rc, out, err = coap_client("-N", "-m", "get",
                               "coap://[ff02::fd%v1]/.well-known/core?rt=temperature", wait=2)
    links = sorted(h for h, _ in link_parse(out.strip()))
    # libcoap 4.3.1 continues one responder's Block2 answer only: one whole document
    eq(links, ["/sensors/temp", "/sensors/temp_outdoor"],
       "links in coap-client's output %r (stderr %r)" % (out, err))


@test("a filter matching nothing (?rt=nothing) -> no answer from anybody (RFC 6690 §4.1)")
def t_no_match():
    servers()
    eq(ask(v6_client(), discovery("rt=nothing")), [], "answers")
    eq(ask(v4_client(), discovery("rt=nothing")), [], "answers (IPv4)")


@test("a missing path -> no error answer (RFC 7252 §8.2): silence, while unicast gets 4.04")
def t_missing():
    servers()
    eq(ask(v6_client(), discovery(None, path=("nothere",))), [], "answers")
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(request(CON, GET, 0x5200, b"u", ["nothere"]), ("fd00::1", 5683))
    m = Msg(s.recv(4096))
    s.close()
    eq(m.code, code(4, 4), "unicast answer code")


@test("a CON to the group (RFC 7252 §8.1: multicast is NON) and a No-Response for 2.xx "
      "(RFC 7967) -> silence; the servers still answer the next request")
def t_con_noresponse():
    srv = servers()
    eq(ask(v6_client(), discovery("rt=temperature", mtype=CON)), [], "answers to a CON")
    eq(ask(v6_client(), discovery("rt=temperature", options=[(NO_RESPONSE, 2)])), [],
       "answers with No-Response 2")
    eq(len(ask(v6_client(), discovery("rt=humidity"))), 2, "answers afterwards")
    check(all(s.alive() for s in srv), "a server died")



@test("SIGHUP and the file's multicast list: a server listening on [fd00::1]:5683 without "
      "groups is silent to ff02::fd; multicast = [\"v0\"] and SIGHUP -> it answers; the "
      "list emptied and SIGHUP -> silent again, unicast still served")
def t_sighup_groups():
    d = tempfile.mkdtemp(prefix="moonlet-mc-")
    conf = os.path.join(d, "m.conf")

    def write(groups):
        with open(conf + ".tmp", "w") as f:
            f.write('listen = [ "coap://[fd00::1]:5683" ];\nmulticast = [ %s ];\n'
                    'settings = { multicast_leisure = %s; };\nscripts = ( { path = "%s"; } );\n'
                    % (groups, LEISURE, SENSORS))
        os.replace(conf + ".tmp", conf)

    def hup(groups, event):
        mark = len(srv.log.lines)
        write(groups)
        os.kill(srv.pid, signal.SIGHUP)
        check(srv.log.wait_for(event, 5.0, mark), "no %r in the log" % event)

    try:
        write("")
        srv = Server(args=["-c", conf], plugins=[], addr=None)
        eq(ask(v6_client(), discovery("rt=temperature")), [], "answers without groups")
        hup('"v0"', r"udp://\[fd00::1\]:5683: multicast groups joined on v0")
        eq([(a, p) for a, p, _ in ask(v6_client(), discovery("rt=temperature"))],
           [("fd00::1", 5683)], "answers once joined")
        hup("", r"udp://\[fd00::1\]:5683: multicast groups left on v0")
        eq(ask(v6_client(), discovery("rt=temperature")), [], "answers once left")
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(request(CON, GET, 0x5300, b"u", ["sensors", "temp"]), ("fd00::1", 5683))
        eq(Msg(s.recv(4096)).code, CONTENT, "unicast after leaving")
        s.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    setup()
    sys.exit(main())
