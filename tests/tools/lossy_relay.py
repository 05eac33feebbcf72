#!/usr/bin/env python3
"""lossy_relay.py -- a UDP relay that loses datagrams, for testing CoAP over a bad link.

    lossy_relay.py --server-port PORT [--loss P] [--seed N] [--delay-ms MS] ...

Listens on [::1]:<ephemeral> (--listen-host/--listen-port to change) and prints
`relay ready PORT` on stdout once it does. Every client address that sends to that port
gets its own upstream socket towards the server, so the server sees one peer per client;
answers go back to the client they belong to.

Each datagram is dropped with probability --loss (or --loss-up for client->server,
--loss-down for server->client), decided by a random generator per direction seeded from
--seed: the same seed and the same traffic give the same drops, and the two directions are
independent. --delay-ms (plus a uniform --jitter-ms) holds every forwarded datagram back
that long (jitter may reorder them).

On SIGTERM or SIGINT it prints one line and exits 0:

    relay up_forwarded=N up_dropped=N down_forwarded=N down_dropped=N peers=N

(SIGUSR1 prints the same line and carries on.) It also stops by itself after --lifetime
seconds (default 900), so a forgotten relay never runs forever. Python 3 stdlib only.
"""

import argparse
import heapq
import os
import random
import select
import signal
import socket
import sys
import time


def parse_args(argv):
    ap = argparse.ArgumentParser(description="lossy UDP relay (drops, delays)")
    ap.add_argument("--server-port", type=int, required=True, help="where to forward")
    ap.add_argument("--server-host", default="::1")
    ap.add_argument("--listen-host", default="::1")
    ap.add_argument("--listen-port", type=int, default=0, help="0: an ephemeral port")
    ap.add_argument("--loss", type=float, default=0.0, help="drop probability, both ways")
    ap.add_argument("--loss-up", type=float, help="client->server drop probability")
    ap.add_argument("--loss-down", type=float, help="server->client drop probability")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="added to every datagram")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra delay")
    ap.add_argument("--lifetime", type=float, default=900.0, help="exit after this (s)")
    ap.add_argument("--max-peers", type=int, default=256, help="client addresses served")
    a = ap.parse_args(argv)
    a.loss_up = a.loss if a.loss_up is None else a.loss_up
    a.loss_down = a.loss if a.loss_down is None else a.loss_down
    for p in (a.loss_up, a.loss_down):
        if not 0.0 <= p <= 1.0:
            ap.error("a loss probability is in [0, 1]")
    if a.delay_ms < 0 or a.jitter_ms < 0 or a.lifetime <= 0 or a.max_peers < 1:
        ap.error("delays are >= 0, the lifetime and max-peers > 0")
    return a


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Relay:
    def __init__(self, a):
        self.a = a
        self.server = (a.server_host, a.server_port)
        self.down = socket.socket(family(a.listen_host), socket.SOCK_DGRAM)
        self.down.bind((a.listen_host, a.listen_port))
        self.down.setblocking(False)
        self.port = self.down.getsockname()[1]
        self.up_by_client = {}      # client address -> upstream socket
        self.client_by_up = {}      # upstream socket fileno -> (socket, client address)
        # one generator per direction (drops), one for delays: independent streams
        self.rng_up = random.Random("%d:up" % a.seed)
        self.rng_down = random.Random("%d:down" % a.seed)
        self.rng_delay = random.Random("%d:delay" % a.seed)
        self.n = {"up_forwarded": 0, "up_dropped": 0, "down_forwarded": 0, "down_dropped": 0}
        self.queue = []             # (due, seq, socket, datagram, address or None)
        self.seq = 0

    def counters(self):
        return "relay " + " ".join("%s=%d" % (k, v) for k, v in self.n.items()) + \
            " peers=%d" % len(self.up_by_client)

    def upstream(self, client):
        s = self.up_by_client.get(client)
        if s is None:
            if len(self.up_by_client) >= self.a.max_peers:
                return None
            s = socket.socket(family(self.a.server_host), socket.SOCK_DGRAM)
            s.bind((self.a.server_host, 0))
            s.connect(self.server)
            s.setblocking(False)
            self.up_by_client[client] = s
            self.client_by_up[s.fileno()] = (s, client)
        return s

    def forward(self, direction, sock, data, addr):
        rng, p = (self.rng_up, self.a.loss_up) if direction == "up" else \
            (self.rng_down, self.a.loss_down)
        if rng.random() < p:
            self.n[direction + "_dropped"] += 1
            return
        self.n[direction + "_forwarded"] += 1
        delay = self.a.delay_ms
        if self.a.jitter_ms:
            delay += self.rng_delay.uniform(0, self.a.jitter_ms)
        if delay <= 0:
            self.send(sock, data, addr)
        else:
            self.seq += 1
            heapq.heappush(self.queue, (time.monotonic() + delay / 1000.0, self.seq, sock,
                                        data, addr))

    @staticmethod
    def send(sock, data, addr):
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:
            pass        # ICMP errors, a full buffer: a lossy link loses it

    def drain(self, sock, direction, limit=64):
        """Read what is queued on one socket (at most limit datagrams per turn)."""
        for _ in range(limit):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:     # ICMP port unreachable from a previous send
                continue
            if direction == "up":
                up = self.upstream(addr)
                if up is not None:
                    self.forward("up", up, data, None)
            else:
                _, client = self.client_by_up[sock.fileno()]
                self.forward("down", self.down, data, client)

    def run(self, wake_fd, deadline):
        signals = []
        while time.monotonic() < deadline:
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, sock, data, addr = heapq.heappop(self.queue)
                self.send(sock, data, addr)
            timeout = min(deadline - now, 0.5)
            if self.queue:
                timeout = max(0.0, min(timeout, self.queue[0][0] - now))
            socks = [self.down] + [s for s, _ in self.client_by_up.values()]
            r, _, _ = select.select(socks + [wake_fd], [], [], timeout)
            for s in r:
                if s is wake_fd:
                    try:
                        signals += list(os.read(wake_fd.fileno(), 64))
                    except BlockingIOError:
                        pass
                elif s is self.down:
                    self.drain(s, "up")
                else:
                    self.drain(s, "down")
            for sig in signals:
                if sig == signal.SIGUSR1:
                    print(self.counters(), flush=True)
                else:
                    return
            signals = []


def main(argv=None):
    a = parse_args(argv)
    relay = Relay(a)
    # signals wake the select through a pipe; their numbers are read from it
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, lambda *_: None)
    print("relay ready %d" % relay.port, flush=True)
    with os.fdopen(rfd, "rb", buffering=0) as wake:
        relay.run(wake, time.monotonic() + a.lifetime)
    print(relay.counters(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
