#!/usr/bin/env python3
"""soak.py -- a bounded soak run of moonlet under peer churn (issue 12; `make soak`).

  soak.py [--moonlet build/moonlet] [--seconds N] [--warmup N] [--rate F] [--out DIR]
          [--rewrite-every S] [--kinds K,...] [--malloc-stats] [--seed N]

Starts moonlet on 127.0.0.1 (a free port) with tests/soak/soak.lua, then for --seconds
(SOAK_SECONDS, default 1800) makes peers come and go at bounded rates, each from its own
socket bound to a random 127.x.y.z (so every one is a new peer, and no port is reused):

  oneshot     GET /soak/small (CON or NON), the socket closed at once or after the answer
  liar        a spoofed observer of /soak/tick or /soak/still: never answers the ping
  vanish      an observer that answers pings and ACKs notifications for 5..120 s, then
              closes its socket without deregistering
  download    fetches 1..63 of the 64 blocks of /soak/big, then leaves (20 %: spoofed)
  upload      sends part of a Block1 PUT to /soak/up, then leaves (20 %: spoofed)
  slow        GET /soak/slow (a deferred answer), the socket closed before it comes

One honest client (127.0.0.1) stays all along: it observes /soak/tick and /soak/still and,
one after the other, GETs, slow GETs, full downloads (checked byte for byte), full uploads
and re-registrations, with RFC 7252 retransmission. A 5.03, an exchange that gets no
answer, or /soak/tick silent for 10 s is a refusal; a wrong answer is an error. The
script is rewritten every 60 s (a comment with a counter), so it hot-reloads.

Every 10 s it samples the server's VmRSS and RssAnon and the SIGUSR1 stats into
DIR/samples.csv (DIR: tests/soak/out/<time>/, with the server log, the script and the copy
of the server binary that ran) and at the end prints RSS at the end of the warm-up
(--warmup, default 300 s) and at the end, the least-squares slope of RSS after the warm-up
(target < 1 KiB/min), the maximum of each counter, the refusals and a text plot of RSS.
Exit status 0 only if the slope is under the target, there were no refusals or errors, and
the server exited cleanly (status 0, no sanitizer report: run it with build/san/moonlet for
LeakSanitizer).

To tell a leak from the allocator when RSS grows: --malloc-stats also samples glibc's
malloc_stats() through gdb (bytes held from the system and in use) and tries malloc_trim(0)
at the end; --kinds and --rewrite-every 0 (no reloads) take parts of the churn away.

Python, not C: the load is bounded (about ten new peers a second, a few hundred datagrams
a second) and the logic -- ten behaviours, retransmission, separate responses, Block1 and
Block2 -- reads far better here; one epoll loop (selectors) carries it with CPU to spare.
"""

import argparse
import heapq
import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from coaptest import (  # noqa: E402
    ACK, CON, GET, NON, OBSERVE, PUT, RST, Msg, request)

BLOCK2, BLOCK1, ETAG = 23, 27, 4
CONTENT, CHANGED, CONTINUE, UNAVAILABLE = 0x45, 0x44, 0x5F, 0xA3
BIG = bytes(i % 251 for i in range(65536))          # /soak/big, as soak.lua makes it
# Churn state must expire within a soak's minutes, not the defaults' hours: an observer
# that never acknowledges is reaped within ack_timeout * 31 * 1.5 (46 s), a quiet one is
# checked after 30 s, idle transfers go after 20 s and idle sessions after 60 s, so the
# state reaches its steady level well inside the 5-minute warm-up.
SERVER_OPTS = ["observe_check=30", "ack_timeout=1", "block_idle=20", "exchange_lifetime=60",
               "non_lifetime=60"]
STAT_KEYS = ["sessions", "verified", "unverified", "observers", "unverified_observers",
             "unverified_pendings", "unverified_bytes", "uploads", "snapshots"]
EXTRA_KEYS = ["evicted", "pings", "verifications", "shed", "amplification", "overload"]
SLOPE_TARGET = 1.0      # KiB/min
SAMPLE_EVERY = 10.0
# new peers per second of each kind, times --rate
RATES = {"oneshot": 4.0, "liar": 2.0, "vanish": 2.0, "download": 1.0, "upload": 1.0,
         "slow": 0.5}


def blk(num, more, szx=6):
    """A Block1/Block2 option value (RFC 7959 §2.2)."""
    return num << 4 | more << 3 | szx


def unblk(m, opt):
    v = m.opt_uint(opt)
    return None if v is None else (v >> 4, v >> 3 & 1, v & 7)


# ---- the event loop ------------------------------------------------------------------------

class Loop:
    """epoll for sockets, a heap for timers. Timers are not cancelled: their callbacks
    check whether their owner is still alive."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.timers, self.seq = [], 0

    def after(self, delay, fn):
        self.seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.seq, fn))

    def run_until(self, deadline):
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = deadline - now
            if self.timers:
                wait = min(wait, max(0.0, self.timers[0][0] - now))
            for key, _ in self.sel.select(wait):
                key.data()
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                heapq.heappop(self.timers)[2]()


# ---- a peer ------------------------------------------------------------------------------

class Peer:
    """One UDP socket connected to the server. answers_pings: RST to a CoAP ping (how the
    server verifies the address, RFC 9175 §2.4) and ACK to CON notifications; a spoofed
    peer does neither. Requests sent with request() are retransmitted like RFC 7252 §4.2
    when retransmit is set, and their answer (piggybacked or separate) goes to a callback
    by token; other messages with a token go to on_other."""

    ACK_TIMEOUT, MAX_RETRANSMIT = 2.0, 4

    def __init__(self, soak, host, answers_pings):
        self.soak, self.loop = soak, soak.loop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, 0))
        self.sock.connect(("127.0.0.1", soak.port))
        self.answers_pings = answers_pings
        self.alive = True
        self.mid = random.randrange(65536)
        self.pending = {}           # token -> [callback, dgram, tries, acked]
        self.loop.sel.register(self.sock, selectors.EVENT_READ, self._readable)

    def close(self):
        if self.alive:
            self.alive = False
            self.loop.sel.unregister(self.sock)
            self.sock.close()
            self.pending.clear()

    def send(self, dgram):
        if self.alive:
            try:
                self.sock.send(dgram)
            except OSError:         # ICMP from an earlier datagram, or a full buffer
                pass

    def next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def request(self, mtype, method, token, path, cb, options=(), payload=b"", query=(),
                retransmit=False, timeout=5.0):
        """Send; cb(msg) with the answer, or cb(None) when none came in time."""
        d = request(mtype, method, self.next_mid(), token, path, query, options, payload)
        self.pending[token] = [cb, d, 0, False]
        self.send(d)
        if retransmit and mtype == CON:
            delay = self.ACK_TIMEOUT * random.uniform(1, 1.5)
            self.loop.after(delay, lambda: self._retransmit(token, d, delay))
        else:
            self.loop.after(timeout, lambda: self._expire(token, d))

    def _retransmit(self, token, d, delay):
        p = self.pending.get(token)
        if p is None or p[1] is not d:
            return
        if p[3]:                    # empty ACK: the answer comes separately, later
            self.loop.after(30.0, lambda: self._expire(token, d))
        elif p[2] < self.MAX_RETRANSMIT:
            p[2] += 1
            self.send(d)
            self.loop.after(delay * 2, lambda: self._retransmit(token, d, delay * 2))
        else:
            self._expire(token, d)

    def _expire(self, token, d):
        p = self.pending.get(token)
        if p is not None and p[1] is d:
            del self.pending[token]
            p[0](None)

    def _readable(self):
        while self.alive:
            try:
                raw = self.sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:         # ICMP port unreachable: the server is gone (it is
                return              # watched by its exit status)
            self._datagram(raw)

    def _datagram(self, raw):
        if len(raw) == 4 and raw[0] == 0x40 and raw[1] == 0:
            if self.answers_pings:
                self.send(bytes([0x70, 0]) + raw[2:4])
            return
        try:
            m = Msg(raw)
        except ValueError:
            self.soak.errors.add("unparsable datagram %s" % raw[:40].hex())
            return
        if m.type == CON and self.answers_pings:
            self.send(bytes([0x60, 0]) + raw[2:4])
        if m.type == ACK and m.code == 0:
            for p in self.pending.values():
                if p[1][2:4] == raw[2:4]:
                    p[3] = True
            return
        p = self.pending.pop(m.token, None) if m.token else None
        if p is not None:
            p[0](m)
        elif m.code != 0 and m.type != RST:
            self.on_other(m)

    def on_other(self, m):
        pass


# ---- churn: peers that come and go -------------------------------------------------------

def random_host():
    """A loopback address no other peer of this run is likely to have had."""
    return "127.%d.%d.%d" % (random.randint(16, 250), random.randint(0, 255),
                             random.randint(1, 254))


class Actor(Peer):
    kind = None

    def __init__(self, soak, answers_pings):
        super().__init__(soak, random_host(), answers_pings)
        soak.live[self.kind] += 1
        soak.spawned[self.kind] += 1

    def close(self):
        if self.alive:
            self.soak.live[self.kind] -= 1
        super().close()

    def close_after(self, delay):
        self.loop.after(delay, self.close)

    def token(self):
        return random.randbytes(4)


class OneShot(Actor):
    kind = "oneshot"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=True)
        mtype = CON if random.random() < 0.7 else NON
        if random.random() < 0.5:
            self.send(request(mtype, GET, self.next_mid(), self.token(), "soak/small"))
            self.close()
        else:
            self.request(mtype, GET, self.token(), "soak/small", lambda m: self.close(),
                         timeout=2.0)


class Liar(Actor):
    """A spoofed observer: the ping goes to an address that never answers."""
    kind = "liar"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=False)
        path = random.choice(["soak/tick", "soak/still"])
        mtype = CON if random.random() < 0.7 else NON
        self.send(request(mtype, GET, self.next_mid(), self.token(), path,
                          options=[(OBSERVE, 0)]))
        self.close_after(0 if random.random() < 0.5 else random.uniform(5, 90))


class Vanish(Actor):
    """An honest observer that goes away without a word (RFC 7641 §3.6 says it should
    not, devices do)."""
    kind = "vanish"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=True)
        r = random.random()
        paths = ["soak/tick"] if r < 0.6 else ["soak/still"] if r < 0.8 else \
            ["soak/tick", "soak/still"]
        for p in paths:
            self.send(request(CON, GET, self.next_mid(), self.token(), p,
                              options=[(OBSERVE, 0)]))
        self.close_after(random.uniform(5, 120))


class Download(Actor):
    kind = "download"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=random.random() < 0.8)
        self.stop_at = random.randint(1, 63)
        self.block(0)

    def block(self, num):
        if num >= self.stop_at:
            self.close_after(random.uniform(0, 5))
            return
        self.request(CON, GET, self.token(), "soak/big", lambda m: self.got(m, num),
                     options=[(BLOCK2, blk(num, 0))])

    def got(self, m, num):
        if m is None or m.code != CONTENT:
            self.close()
        else:
            self.block(num + 1)


class Upload(Actor):
    kind = "upload"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=random.random() < 0.8)
        self.blocks = random.randint(8, 64)
        self.stop_at = random.randint(1, self.blocks - 1)
        self.tag = self.token()
        self.block(0)

    def block(self, num):
        if num >= self.stop_at:
            self.close_after(random.uniform(0, 5))
            return
        self.request(CON, PUT, self.token(), "soak/up", lambda m: self.got(m, num),
                     options=[(BLOCK1, blk(num, 1)), (292, self.tag)],
                     payload=BIG[num * 1024:(num + 1) * 1024])

    def got(self, m, num):
        if m is None or m.code != CONTINUE:
            self.close()
        else:
            self.block(num + 1)


class Slow(Actor):
    kind = "slow"

    def __init__(self, soak):
        super().__init__(soak, answers_pings=random.random() < 0.5)
        self.send(request(CON, GET, self.next_mid(), self.token(), "soak/slow",
                          query=["s=%.1f" % random.uniform(1, 3)]))
        self.close_after(0 if not self.answers_pings else random.uniform(0.3, 1.0))


KINDS = {c.kind: c for c in (OneShot, Liar, Vanish, Download, Upload, Slow)}


# ---- the honest client -------------------------------------------------------------------

class Honest(Peer):
    """The device that must never be refused: it observes both observable resources and
    runs its operations one after the other, a second apart."""

    def __init__(self, soak):
        super().__init__(soak, "127.0.0.1", answers_pings=True)
        self.ops = [self.get_small, self.get_slow, self.download, self.upload,
                    self.reregister]
        self.n = 0
        self.tick_token, self.still_token = b"TICK", b"STIL"
        self.last_tick = time.monotonic()
        self.done = {"get": 0, "slow": 0, "download": 0, "upload": 0, "observe": 0,
                     "notifications": 0}

    def start(self):
        self.observe(self.tick_token, "soak/tick")
        self.observe(self.still_token, "soak/still")
        self.loop.after(1.0, self.next_op)
        self.loop.after(5.0, self.watch_tick)

    def next_op(self):
        if self.alive:
            op = self.ops[self.n % len(self.ops)]
            self.n += 1
            op()

    def finished(self, what):
        self.done[what] += 1
        self.loop.after(1.0, self.next_op)

    def answer(self, m, what, code, payload=None):
        """Whether m is the expected answer; refusals and errors are counted."""
        if m is None:
            self.soak.refuse("%s: no answer" % what)
        elif m.code == UNAVAILABLE:
            self.soak.refuse("%s: 5.03 %r" % (what, m.payload[:60]))
        elif m.code != code or (payload is not None and m.payload != payload):
            self.soak.errors.add("%s: %r" % (what, m))
        else:
            return True
        return False

    def req(self, method, path, cb, **kw):
        self.request(CON, method, random.randbytes(4), path, cb, retransmit=True, **kw)

    def get_small(self):
        self.req(GET, "soak/small", lambda m: (self.answer(m, "GET /soak/small", CONTENT,
                                                           b"small"), self.finished("get")))

    def get_slow(self):
        self.req(GET, "soak/slow", lambda m: (self.answer(m, "GET /soak/slow", CONTENT,
                                                          b"slow"), self.finished("slow")),
                 query=["s=%.1f" % random.uniform(1, 3)])

    def download(self, num=0, etag=None):
        self.req(GET, "soak/big", lambda m: self.got_block(m, num, etag),
                 options=[(BLOCK2, blk(num, 0))])

    def got_block(self, m, num, etag):
        what = "GET /soak/big block %d" % num
        if not self.answer(m, what, CONTENT, BIG[num * 1024:(num + 1) * 1024]):
            return self.finished("download")
        if etag is not None and m.opt(ETAG) != etag:
            self.soak.errors.add("%s: ETag changed mid-transfer" % what)
        if unblk(m, BLOCK2) != (num, int(num < 63), 6):
            self.soak.errors.add("%s: Block2 %r" % (what, unblk(m, BLOCK2)))
            return self.finished("download")
        if num == 63:
            return self.finished("download")
        self.download(num + 1, m.opt(ETAG))

    def upload(self, num=0, tag=None, blocks=32):
        tag = tag or random.randbytes(4)
        more = int(num < blocks - 1)
        self.req(PUT, "soak/up", lambda m: self.sent_block(m, num, tag, blocks),
                 options=[(BLOCK1, blk(num, more)), (292, tag)],
                 payload=BIG[num * 1024:(num + 1) * 1024])

    def sent_block(self, m, num, tag, blocks):
        last = num == blocks - 1
        what = "PUT /soak/up block %d" % num
        ok = self.answer(m, what, CHANGED if last else CONTINUE,
                         str(blocks * 1024).encode() if last else None)
        if ok and not last:
            return self.upload(num + 1, tag, blocks)
        self.finished("upload")

    def reregister(self):
        """The same token again replaces the registration (RFC 7641 §4.1)."""
        self.observe(self.tick_token, "soak/tick", then=lambda: self.finished("observe"))

    def observe(self, token, path, then=None):
        def got(m):
            if self.answer(m, "observe /%s" % path, CONTENT) and m.opt(OBSERVE) is None:
                self.soak.refuse("observe /%s: answered without Observe" % path)
            if token == self.tick_token:
                self.last_tick = time.monotonic()
            if then:
                then()
        self.request(CON, GET, token, path, got, options=[(OBSERVE, 0)], retransmit=True)

    def on_other(self, m):
        if m.token == self.tick_token and m.code == CONTENT and m.opt(OBSERVE) is not None:
            self.last_tick = time.monotonic()
            self.done["notifications"] += 1
        elif m.token not in (self.tick_token, self.still_token):
            return                  # a late answer to an exchange already given up
        elif m.code != CONTENT or m.opt(OBSERVE) is None:
            self.soak.refuse("observation ended: %r" % m)

    def watch_tick(self):
        """/soak/tick changes every second: ten seconds without a notification is an
        observation lost; register again."""
        if not self.alive:
            return
        if time.monotonic() - self.last_tick > 10:
            self.soak.refuse("/soak/tick silent for %.0f s" % (time.monotonic() -
                                                                 self.last_tick))
            self.observe(self.tick_token, "soak/tick")
        self.loop.after(5.0, self.watch_tick)


# ---- the run -------------------------------------------------------------------------------

class Limited(list):
    """A list of problems that keeps the first 20 and counts the rest."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def add(self, text):
        self.count += 1
        if len(self) < 20:
            self.append("%.0fs %s" % (time.monotonic() - T0, text))


T0 = time.monotonic()


class Soak:
    def __init__(self, args):
        self.args, self.loop = args, Loop()
        self.out = args.out
        self.live = {k: 0 for k in KINDS}
        self.spawned = {k: 0 for k in KINDS}
        self.refusals, self.errors = Limited(), Limited()
        self.samples, self.rewrites = [], 0
        self.script = os.path.join(self.out, "soak.lua")
        with open(os.path.join(HERE, "soak.lua")) as f:
            self.template = f.read()

    def refuse(self, text):
        self.refusals.add(text)

    # the server

    def start_server(self):
        self.write_script()
        self.log_path = os.path.join(self.out, "moonlet.log")
        # a copy: a rebuild of the tree during the run cannot touch it, and gdb
        # (--malloc-stats) still finds its symbols
        exe = os.path.join(self.out, "moonlet")
        shutil.copy2(self.args.moonlet, exe)
        argv = [exe, "-a", "127.0.0.1", "-p", "0"]
        for o in SERVER_OPTS:
            argv += ["-o", o]
        argv.append(self.script)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.log_pos = 0
        m = self.wait_log(r"ready udp://\S+:(\d+)", 5.0)
        if m is None:
            self.stop_server()
            sys.exit("soak: moonlet did not start:\n" + open(self.log_path).read())
        self.port = int(m.group(1).decode())
        print("soak: %s (pid %d) on 127.0.0.1:%d with %s; output in %s" % (
            self.args.moonlet, self.proc.pid, self.port, " ".join(SERVER_OPTS), self.out))

    def wait_log(self, pattern, timeout):
        """The first new log line matching pattern within timeout (the log is read from
        where the last call stopped)."""
        rx, end = re.compile(pattern.encode()), time.monotonic() + timeout
        with open(self.log_path, "rb") as f:
            while True:
                f.seek(self.log_pos)
                for line in f:
                    if not line.endswith(b"\n"):
                        break
                    self.log_pos += len(line)
                    m = rx.search(line)
                    if m:
                        return m
                if time.monotonic() > end:
                    return None
                time.sleep(0.02)

    def stop_server(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def write_script(self):
        """In place, like an editor that keeps the inode; the server reloads it once it
        has been quiet for 0.2 s."""
        with open(self.script, "w") as f:
            f.write(self.template + "-- soak rewrite %d\n" % self.rewrites)

    def rewrite(self):
        self.rewrites += 1
        self.write_script()
        self.loop.after(self.args.rewrite_every, self.rewrite)

    # churn

    def spawn(self, kind):
        if self.spawning:
            if self.live[kind] < 2000:      # a bound, whatever the timing
                KINDS[kind](self)
            self.loop.after(random.expovariate(RATES[kind] * self.args.rate),
                            lambda: self.spawn(kind))

    # samples

    def proc_status(self):
        out = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon"):
                    out[k] = int(v.split()[0])
        return out

    def sample(self):
        """RSS and the SIGUSR1 line; the server answers within a loop turn, which a
        short blocking wait covers without starving the peers."""
        st = self.proc_status()
        self.proc.send_signal(signal.SIGUSR1)
        m = self.wait_log(r"stats: (.*)", 2.0)
        words = m.group(1).decode().split() if m else []
        stats = {words[i]: int(words[i + 1]) for i in range(len(words) - 1)
                 if words[i + 1].isdigit() and not words[i].isdigit()}
        row = {"t": round(time.monotonic() - self.t0, 1), "rss_kb": st.get("VmRSS", -1),
               "anon_kb": st.get("RssAnon", -1)}
        for k in STAT_KEYS + EXTRA_KEYS:
            row[k] = stats.get(k, -1)
        row["refusals"], row["errors"] = self.refusals.count, self.errors.count
        row["peers_live"] = sum(self.live.values())
        row["reloads"] = self.rewrites
        if self.args.malloc_stats:
            row["heap_kb"], row["inuse_kb"] = self.malloc_stats()
        if not self.samples:
            self.csv.write(",".join(row) + "\n")
        self.samples.append(row)
        self.csv.write(",".join(str(row[k]) for k in row) + "\n")
        self.csv.flush()
        if len(self.samples) % 6 == 1:
            print("soak: %5.0fs rss %6d KiB sessions %5d (%d unverified) observers %5d "
                  "peers %4d refusals %d errors %d" % (
                      row["t"], row["rss_kb"], row["sessions"], row["unverified"],
                      row["observers"], row["peers_live"], row["refusals"],
                      row["errors"]), flush=True)

    def gdb_call(self, expr):
        """Call a libc function inside the server (--malloc-stats). The sampler is this
        thread, so no SIGUSR1 comes meanwhile; unwindonsignal keeps any other signal from
        leaving gdb's return frame behind, which would crash the server after detach."""
        subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex",
                        "set unwindonsignal on", "-ex", "call " + expr, "-ex", "detach"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def malloc_stats(self):
        """glibc's totals, from malloc_stats() on the server's stderr: KiB held from the
        system and KiB in use. In use growing is a leak; held growing alone is the
        allocator's (fragmentation, high-water marks)."""
        self.gdb_call("(void)malloc_stats()")
        if self.wait_log(r"Total \(incl\. mmap\)", 5.0) is None:
            return -1, -1
        held = self.wait_log(r"system bytes\s+=\s+(\d+)", 1.0)
        used = self.wait_log(r"in use bytes\s+=\s+(\d+)", 1.0)
        return (int(held.group(1)) >> 10 if held else -1,
                int(used.group(1)) >> 10 if used else -1)

    def sampler(self):
        self.sample()
        self.loop.after(SAMPLE_EVERY, self.sampler)

    def run(self):
        self.start_server()
        self.csv = open(os.path.join(self.out, "samples.csv"), "w")
        self.t0 = time.monotonic()
        self.spawning = True
        self.honest = Honest(self)
        self.honest.start()
        for kind in self.args.kinds if self.args.rate > 0 else ():
            self.spawn(kind)
        self.sampler()
        if self.args.rewrite_every > 0:
            self.loop.after(self.args.rewrite_every, self.rewrite)
        end = self.t0 + self.args.seconds
        while time.monotonic() < end and self.proc.poll() is None:
            self.loop.run_until(min(end, time.monotonic() + 1.0))
        self.spawning = False
        died = self.proc.poll()
        if died is None:
            self.sample()
        if died is None and self.args.malloc_stats:
            before = self.proc_status()["VmRSS"]
            self.gdb_call("(int)malloc_trim(0)")
            self.trimmed = (before, self.proc_status()["VmRSS"])
        rc = self.stop_server()
        self.csv.close()
        return report(self, died, rc)


# ---- the summary -----------------------------------------------------------------------------

def slope(points):
    """Least-squares slope of [(x, y)] and its standard error."""
    n = len(points)
    if n < 3:
        return 0.0, 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return 0.0, 0.0
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    res = sum((y - my - b * (x - mx)) ** 2 for x, y in points)
    return b, (res / (n - 2) / sxx) ** 0.5


def floors(samples, key, per=12):
    """The lowest value of each run of per samples (two minutes): live state comes and goes
    above it, what is never given back raises it."""
    return [(min(s["t"] for s in samples[i:i + per]) / 60, min(s[key] for s in samples[i:i + per]))
            for i in range(0, len(samples) - per + 1, per)]


def text_plot(samples, key, width=72, height=12):
    ys = [s[key] for s in samples]
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, 1)
    ncols = min(width, len(ys))
    cols = [ys[int(i * len(ys) / ncols)] for i in range(ncols)]
    rows = []
    for r in range(height, -1, -1):
        level = lo + span * r / height
        line = "".join("*" if abs(y - level) <= span / height / 2 else " " for y in cols)
        rows.append("%8d |%s" % (level, line))
    rows.append("%8s +%s" % ("", "-" * len(cols)))
    rows.append("%8s  %d s%s%d s" % ("", samples[0]["t"], " " * max(1, len(cols) - 12),
                                      samples[-1]["t"]))
    return "\n".join(rows)


def print_samples(samples):
    """About a dozen rows of the CSV, and every counter's maximum."""
    print("\n%8s %9s %9s %s" % ("t (s)", "rss KiB", "anon KiB",
                               " ".join("%8s" % k[:8] for k in STAT_KEYS)))
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        print("%8.0f %9d %9d %s" % (s["t"], s["rss_kb"], s["anon_kb"],
                                    " ".join("%8d" % s[k] for k in STAT_KEYS)))
    print("\nmax: " + ", ".join("%s %d" % (k, max(s[k] for s in samples))
                                for k in STAT_KEYS))


def print_rss(soak, samples, warm):
    """The curve and its slope after the warm-up; the slope is returned."""
    rss_slope, rss_se = slope([(s["t"] / 60, s["rss_kb"]) for s in warm])
    print("\nRSS (KiB) over time:\n" + text_plot(samples, "rss_kb"))
    print("\nRSS (KiB) after the warm-up:\n" + text_plot(warm, "rss_kb"))
    print("\nRSS at the end of the warm-up: %d KiB; at the end: %d KiB" % (
        warm[0]["rss_kb"], samples[-1]["rss_kb"]))
    print("RSS slope after the warm-up: %.2f KiB/min (standard error %.2f; target < %.0f)" % (
        rss_slope, rss_se, SLOPE_TARGET))
    print("  RssAnon: %.2f KiB/min; RSS floor (2-minute minima): %.2f KiB/min" % (
        slope([(s["t"] / 60, s["anon_kb"]) for s in warm])[0],
        slope(floors(warm, "rss_kb"))[0]))
    if soak.args.malloc_stats:
        print("  malloc held: %.2f KiB/min, in use: %.2f KiB/min (%d -> %d KiB in use)" % (
            slope([(s["t"] / 60, s["heap_kb"]) for s in warm])[0],
            slope([(s["t"] / 60, s["inuse_kb"]) for s in warm])[0], warm[0]["inuse_kb"],
            samples[-1]["inuse_kb"]))
        if getattr(soak, "trimmed", None):
            print("  malloc_trim(0) at the end: RSS %d -> %d KiB" % soak.trimmed)
    return rss_slope


def server_clean(soak, died, rc):
    """Exit status 0 after SIGTERM and no sanitizer report in its log."""
    log = open(soak.log_path, errors="replace").read()
    sanitizer = [m for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:")
                 if m in log]
    print("server: %s, exit status %s%s" % (
        "died during the run" if died is not None else "stopped by SIGTERM", rc,
        ", sanitizer report in the log: " + ", ".join(sanitizer) if sanitizer else ""))
    return died is None and rc == 0 and not sanitizer


def report(soak, died, rc):
    args, samples = soak.args, soak.samples
    warm = [s for s in samples if s["t"] >= args.warmup] or samples[-1:]
    print("\nsoak: %.0f s, warm-up %.0f s, %d samples in %s" % (
        args.seconds, args.warmup, len(samples), os.path.join(soak.out, "samples.csv")))
    print("peers spawned: " + ", ".join("%s %d" % kv for kv in soak.spawned.items()))
    print("honest client: " + ", ".join("%s %d" % kv for kv in soak.honest.done.items()))
    print("script rewrites: %d, reloads logged: %d" % (
        soak.rewrites, open(soak.log_path, errors="replace").read().count("reloaded ")))
    print_samples(samples)
    rss_slope = print_rss(soak, samples, warm)
    print("refusals: %d, errors: %d" % (soak.refusals.count, soak.errors.count))
    for line in soak.refusals:
        print("  refusal: " + line)
    for line in soak.errors:
        print("  error: " + line)
    clean = server_clean(soak, died, rc)
    ok = rss_slope < SLOPE_TARGET and soak.refusals.count == 0 and \
        soak.errors.count == 0 and clean
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moonlet", default=os.path.join(ROOT, "build", "moonlet"))
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("SOAK_SECONDS", "1800")))
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds not counted in the slope (default 300, at most half)")
    ap.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "1")),
                    help="multiplies every churn rate (default 1: about 10 peers/s; 0: none)")
    ap.add_argument("--rewrite-every", type=float, default=60.0,
                    help="seconds between rewrites of the script (0: never)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="the churning peers, a comma-separated subset of " + ",".join(KINDS))
    ap.add_argument("--malloc-stats", action="store_true",
                    help="also sample glibc's malloc_stats() through gdb, and try "
                         "malloc_trim(0) at the end (diagnosis of a growing RSS)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", "12")))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    a.kinds = [k for k in a.kinds.split(",") if k]
    if any(k not in KINDS for k in a.kinds):
        ap.error("--kinds: one or more of " + ",".join(KINDS))
    if a.warmup is None:
        a.warmup = min(300.0, a.seconds / 2)
    a.out = a.out or os.path.join(HERE, "out", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(a.out, exist_ok=True)
    random.seed(a.seed)
    return Soak(a).run()


if __name__ == "__main__":
    sys.exit(main())
