/*
 * peers-bench -- N devices observing one resource, each its own peer (RFC 7641, RFC 9175
 * §2.4): the server's memory per device, the time to register them, one notification's
 * fan-out to all of them.
 *
 *   peers-bench PORT SERVER_PID [PEERS [WINDOW [ROUNDS [LINGER]]]]
 *
 * One UDP socket, bound to 0.0.0.0, stands for PEERS (default 100000) devices: device i
 * sends from 127.1.0.1 + i (IP_PKTINFO's ipi_spec_dst picks the source; every 127.x.y.z
 * is local), so the server at 127.0.0.1:PORT sees PEERS distinct addresses on one port,
 * and its answers all come back to this socket, the destination telling which device
 * they are for. Each device registers on /obs/value (CON GET, Observe 0, its index as the
 * token), answers the server's ping with RST (that verifies it) and ACKs CON
 * notifications. WINDOW (default 256) registrations are outstanding at a time: the
 * server keeps at most unverified_sessions (10000) peers and unverified_observers
 * observers that have not answered their ping yet. Then ROUNDS (default 5) times one
 * POST /obs/bump from 127.0.0.1 notifies them all; with LINGER (seconds, default 0) it
 * then keeps answering for that long and notifies once more (late_notified: how many
 * devices the server still reaches). Prints one line on stdout:
 *
 *   peers=N registered=N register_s=F rss_before_kb=N rss_after_kb=N bytes_per_device=F
 *   fanout_ms_median=F fanout_ms_max=F server_cpu_ms=N client_cpu_ms=N notified_min=N
 *   missing=N retransmits=N unobserved=N pings=N server_drops=N client_drops=N
 *   [late_notified=N]
 *
 * fanout_ms is the time from sending the POST until the last device's notification
 * arrived; server_cpu_ms and client_cpu_ms are the CPU time of the server and of this
 * program over the same round (medians): on a busy machine they say more than the wall
 * time, and they tell which side set the pace. unobserved counts registrations answered
 * without Observe (then tried again); server_drops and client_drops the datagrams the
 * kernel dropped at a full receive buffer of the server's socket (udp_rcvbuf) and of
 * ours during the run. Loopback only; every phase is bounded in time. Exit status 1 when
 * a device is missing.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define BATCH 64
#define PEER_BASE 0x7F010001u /* 127.1.0.1 */
#define TRIGGER 0x7F000001u   /* 127.0.0.1, the server's own address: not a device */
#define REG_TIMEOUT 2.0       /* s before a registration is sent again (same MID) */

enum { IDLE, SENT, OBSERVING };

static int fd;
static unsigned npeers, own_port;
static uint8_t *state;
static uint16_t *mids;
static double *sent_at;
static uint32_t *seen; /* per device: the last round whose notification arrived */
static unsigned round_no, notified, registered, outstanding;
static unsigned long retransmits, unobserved, pings;
static double last_arrival;
static uint16_t trigger_mid = 1;

/* the send batch: each datagram with the source address it goes out from */
static struct {
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    uint8_t buf[BATCH][64];
    char ctl[BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];
    struct sockaddr_in to;
    unsigned n;
} out;

/* Datagrams dropped at the receive buffer of the UDP socket bound to local port (the
 * last column of /proc/net/udp): the server's socket and ours, apart from anyone else's. */
static long
udp_drops(unsigned port)
{
    char line[512];
    long drops = -1;
    FILE *f = fopen("/proc/net/udp", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f)) {
        char *local = strchr(line, ':'), *last, *tok, *save;
        unsigned p;

        if (local == NULL || sscanf(local + 1, " %*x:%x", &p) != 1 || p != port)
            continue;
        for (last = NULL, tok = strtok_r(line, " \n", &save); tok;
             tok = strtok_r(NULL, " \n", &save))
            last = tok;
        drops = last ? atol(last) : -1;
        break;
    }
    fclose(f);
    return drops;
}

static void
flush(void)
{
    unsigned sent = 0;

    while (sent < out.n) {
        int r = sendmmsg(fd, out.m + sent, out.n - sent, 0);

        if (r <= 0)
            break; /* loopback drops rather than blocks; a lost datagram is retried */
        sent += (unsigned)r;
    }
    out.n = 0;
}

/* Queue len bytes from the address src (host order). */
static void
queue(uint32_t src, const uint8_t *b, size_t len)
{
    unsigned k = out.n;
    struct msghdr *h = &out.m[k].msg_hdr;
    struct cmsghdr *c;
    struct in_pktinfo pi = {.ipi_spec_dst.s_addr = htonl(src)};

    memcpy(out.buf[k], b, len);
    out.iov[k] = (struct iovec){.iov_base = out.buf[k], .iov_len = len};
    *h = (struct msghdr){.msg_name = &out.to,
                         .msg_namelen = sizeof out.to,
                         .msg_iov = &out.iov[k],
                         .msg_iovlen = 1,
                         .msg_control = out.ctl[k],
                         .msg_controllen = sizeof out.ctl[k]};
    c = CMSG_FIRSTHDR(h);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof pi);
    memcpy(CMSG_DATA(c), &pi, sizeof pi);
    if (++out.n == BATCH)
        flush();
}

/* An empty message (RFC 7252 §4.1): ACK or RST of mid, from device i. */
static void
empty(unsigned i, int type, uint16_t mid)
{
    uint8_t b[4] = {(uint8_t)(0x40 | type << 4), 0, (uint8_t)(mid >> 8), (uint8_t)mid};

    queue(PEER_BASE + i, b, 4);
}

/* CON GET /obs/value, Observe 0, token = the device's index */
static void
send_register(unsigned i)
{
    uint8_t b[32] = {0x44, 0x01, (uint8_t)(mids[i] >> 8), (uint8_t)mids[i]};
    size_t n = 4;

    memcpy(b + n, &i, 4);
    n += 4;
    b[n++] = 0x60; /* Observe (6), empty: 0 */
    b[n++] = 0x53; /* Uri-Path (6 + 5 = 11), 3 bytes */
    memcpy(b + n, "obs", 3);
    n += 3;
    b[n++] = 0x05;
    memcpy(b + n, "value", 5);
    n += 5;
    sent_at[i] = now();
    queue(PEER_BASE + i, b, n);
}

/* NON POST /obs/bump from 127.0.0.1: its handler notifies once */
static void
send_trigger(void)
{
    uint8_t b[16] = {0x50, 0x02, (uint8_t)(trigger_mid >> 8), (uint8_t)trigger_mid, 0xB3};

    trigger_mid++;
    memcpy(b + 5, "obs", 3);
    b[8] = 0x04;
    memcpy(b + 9, "bump", 4);
    queue(TRIGGER, b, 13);
    flush();
}

struct msg {
    int type, code, obs;
    uint16_t mid;
    uint32_t tok;
    size_t tkl;
};

/* Just what we need: header, a 4-byte token, whether Observe is present. */
static int
parse(const uint8_t *b, size_t n, struct msg *m)
{
    size_t i;
    unsigned num = 0;

    if (n < 4 || b[0] >> 6 != 1)
        return -1;
    *m = (struct msg){.type = b[0] >> 4 & 3,
                      .code = b[1],
                      .mid = (uint16_t)(b[2] << 8 | b[3]),
                      .tkl = b[0] & 15u};
    if (m->tkl == 4 && n >= 8)
        memcpy(&m->tok, b + 4, 4);
    for (i = 4 + m->tkl; i < n && b[i] != 0xFF;) {
        unsigned d = b[i] >> 4, l = b[i] & 15;

        i++;
        if (d == 13)
            d = 13 + b[i++];
        else if (d == 14)
            d = 269 + (b[i] << 8 | b[i + 1]), i += 2;
        if (l == 13)
            l = 13 + b[i++];
        else if (l == 14)
            l = 269 + (b[i] << 8 | b[i + 1]), i += 2;
        num += d;
        m->obs |= num == 6;
        i += l;
    }
    return 0;
}

static void
on_answer(unsigned i, const struct msg *m)
{
    if (state[i] == SENT && m->mid == mids[i]) {
        outstanding--;
        if (m->code == 0x45 && m->obs) {
            state[i] = OBSERVING;
            registered++;
        } else {
            unobserved++; /* not registered (a budget, a 5.03): start over */
            state[i] = IDLE;
        }
    } else if (state[i] == OBSERVING && m->code == 0x45 && m->obs && seen[i] < round_no) {
        seen[i] = round_no;
        notified++;
        last_arrival = now();
    }
}

/* One datagram from the server to device i. */
static void
on_datagram(unsigned i, const uint8_t *b, size_t n)
{
    struct msg m;

    if (parse(b, n, &m) < 0)
        return;
    if (m.type == 0 && m.code == 0) { /* a ping: RST proves we got it (RFC 9175 §2.4) */
        pings++;
        empty(i, 3, m.mid);
        return;
    }
    if (m.type == 0)
        empty(i, 2, m.mid);
    if (m.code != 0 && m.tkl == 4 && m.tok == i)
        on_answer(i, &m);
}

/* Receive what is waiting (poll up to ms first), acknowledge, send what that queued. */
static void
pump(int ms)
{
    static uint8_t buf[BATCH][1280];
    static char ctl[BATCH][CMSG_SPACE(sizeof(struct in_pktinfo))];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;

    if (poll(&p, 1, ms) <= 0)
        return;
    do {
        for (unsigned k = 0; k < BATCH; k++) {
            iov[k] = (struct iovec){.iov_base = buf[k], .iov_len = sizeof buf[k]};
            m[k].msg_hdr = (struct msghdr){.msg_iov = &iov[k],
                                           .msg_iovlen = 1,
                                           .msg_control = ctl[k],
                                           .msg_controllen = sizeof ctl[k]};
        }
        r = recvmmsg(fd, m, BATCH, MSG_DONTWAIT, NULL);
        for (int k = 0; k < r; k++) {
            struct cmsghdr *c = CMSG_FIRSTHDR(&m[k].msg_hdr);
            struct in_pktinfo pi;
            uint32_t i;

            if (c == NULL || c->cmsg_level != IPPROTO_IP || c->cmsg_type != IP_PKTINFO)
                continue;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            i = ntohl(pi.ipi_addr.s_addr) - PEER_BASE;
            if (i < npeers)
                on_datagram(i, buf[k], m[k].msg_len);
        }
        flush();
    } while (r == BATCH);
}

static void
start_register(unsigned i)
{
    state[i] = SENT;
    mids[i]++;
    outstanding++;
    send_register(i);
}

/* Registrations of [lo, hi) unanswered for REG_TIMEOUT again (the same MID: the server's
 * deduplication answers a duplicate), refused ones anew. */
static void
retry(unsigned lo, unsigned hi, unsigned window)
{
    double t = now();

    for (unsigned i = lo; i < hi; i++) {
        if (state[i] == SENT && t - sent_at[i] > REG_TIMEOUT) {
            retransmits++;
            send_register(i);
        } else if (state[i] == IDLE && outstanding < window) {
            start_register(i);
        }
    }
}

/* Every device registered, WINDOW at a time; the seconds it took, or -1 on timeout. */
static double
register_all(unsigned window, double limit)
{
    double t0 = now(), scan = t0;
    unsigned lo = 0, next = 0;

    while (registered < npeers && now() - t0 < limit) {
        for (; outstanding < window && next < npeers; next++)
            start_register(next);
        flush();
        pump(10);
        if (now() - scan > 0.1) { /* only [lo, next) can still be waiting */
            scan = now();
            while (lo < next && state[lo] == OBSERVING)
                lo++;
            retry(lo, next, window);
        }
    }
    flush();
    return registered == npeers ? now() - t0 : -1;
}

/* One POST /obs/bump; the ms from sending it until the last notification arrived. */
static double
fanout(unsigned *got)
{
    double t0, quiet;

    round_no++;
    notified = 0;
    last_arrival = t0 = now();
    send_trigger();
    quiet = t0;
    while (notified < registered && now() - t0 < 10) {
        unsigned before = notified;

        pump(20);
        if (notified != before)
            quiet = now();
        else if (now() - quiet > 2)
            break; /* nothing for 2 s: the rest is lost */
    }
    *got = notified;
    return (last_arrival - t0) * 1000;
}

static int
setup(unsigned short port)
{
    struct sockaddr_in any = {.sin_family = AF_INET};
    int on = 1, sz = 256 << 20;

    if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) < 0 || bind(fd, (void *)&any, sizeof any) < 0 ||
        setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on) < 0) {
        perror("peers-bench: socket");
        return -1;
    }
    if (getsockname(fd, (void *)&any, &(socklen_t){sizeof any}) == 0)
        own_port = ntohs(any.sin_port);
    /* a notification to every device at once: far more than the default buffer */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    out.to = (struct sockaddr_in){
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(TRIGGER)};
    state = calloc(npeers, 1);
    mids = calloc(npeers, sizeof *mids);
    sent_at = calloc(npeers, sizeof *sent_at);
    seen = calloc(npeers, sizeof *seen);
    for (unsigned i = 0; i < npeers; i++)
        mids[i] = (uint16_t)(i * 7919);
    return state && mids && sent_at && seen ? 0 : -1;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Answer what comes (pings, CON notifications) for s seconds. */
static void
settle(double s)
{
    for (double t = now(); now() - t < s;)
        pump(50);
}

struct rounds {
    unsigned n, notified_min, missing;
    double fan[64], cpu[64], own[64]; /* sorted: medians and maxima */
};

static void
fanout_rounds(const char *pid, struct rounds *r)
{
    r->notified_min = registered;
    for (unsigned i = 0; i < r->n; i++) {
        double c0 = cpu_ms(pid), o0 = own_cpu_ms();
        unsigned got;

        r->fan[i] = fanout(&got);
        r->cpu[i] = cpu_ms(pid) - c0;
        r->own[i] = own_cpu_ms() - o0;
        r->missing += registered - got;
        r->notified_min = got < r->notified_min ? got : r->notified_min;
        settle(0.3); /* ACKs of the CON ones, then quiet */
    }
    qsort(r->fan, r->n, sizeof *r->fan, cmp_double);
    qsort(r->cpu, r->n, sizeof *r->cpu, cmp_double);
    qsort(r->own, r->n, sizeof *r->own, cmp_double);
}

int
main(int argc, char **argv)
{
    struct rounds r = {0};
    unsigned window, sport, late = 0;
    double reg_s, linger;
    long rss0, rss1, sdrops0, cdrops0;

    if (argc < 3) {
        fprintf(stderr, "usage: peers-bench PORT SERVER_PID [PEERS [WINDOW [ROUNDS [LINGER]]]]\n");
        return 2;
    }
    npeers = argc > 3 ? (unsigned)atoi(argv[3]) : 100000;
    window = argc > 4 ? (unsigned)atoi(argv[4]) : 256;
    r.n = argc > 5 ? (unsigned)atoi(argv[5]) : 5;
    linger = argc > 6 ? atof(argv[6]) : 0;
    if (npeers < 1 || npeers > 1u << 24 || window < 1 || r.n < 1 || r.n > 64 || linger < 0) {
        fprintf(stderr, "peers-bench: bad counts\n");
        return 2;
    }
    sport = (unsigned)atoi(argv[1]);
    if (setup((unsigned short)sport) < 0)
        return 1;
    sdrops0 = udp_drops(sport);
    cdrops0 = udp_drops(own_port);
    rss0 = rss_kb(argv[2]);
    reg_s = register_all(window, 300);
    if (reg_s < 0)
        fprintf(stderr, "peers-bench: only %u of %u registered within 300 s\n", registered, npeers);
    settle(1); /* late pings answered, the server settles */
    rss1 = rss_kb(argv[2]);
    fanout_rounds(argv[2], &r);
    if (linger > 0) { /* the server's ping retransmissions reach the unverified ones */
        settle(linger);
        fanout(&late);
    }
    printf("peers=%u registered=%u register_s=%.2f rss_before_kb=%ld rss_after_kb=%ld "
           "bytes_per_device=%.0f fanout_ms_median=%.1f fanout_ms_max=%.1f server_cpu_ms=%.0f "
           "client_cpu_ms=%.0f notified_min=%u missing=%u retransmits=%lu unobserved=%lu "
           "pings=%lu server_drops=%ld client_drops=%ld",
           npeers, registered, reg_s, rss0, rss1, (double)(rss1 - rss0) * 1024 / npeers,
           r.fan[r.n / 2], r.fan[r.n - 1], r.cpu[r.n / 2], r.own[r.n / 2], r.notified_min,
           r.missing, retransmits, unobserved, pings, udp_drops(sport) - sdrops0,
           udp_drops(own_port) - cdrops0);
    if (linger > 0)
        printf(" late_notified=%u", late);
    printf("\n");
    return registered == npeers && r.missing == 0 ? 0 : 1;
}
