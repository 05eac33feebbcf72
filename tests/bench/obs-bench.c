/*
 * obs-bench -- Observe fan-out benchmark (RFC 7641).
 *
 *   obs-bench HOST PORT SERVER_PID [OBSERVERS [SOCKETS [ROUNDS]]]
 *
 * Registers OBSERVERS (default 10000) observers of /obs/value spread over SOCKETS
 * (default 40) UDP sockets, each with its own token (NON GET, Observe 0), and reads the
 * server's VmRSS before and after (bytes per observer = delta / observers). Then, ROUNDS
 * times (default 5), sends one POST /obs/bump (whose handler calls notify once) and times
 * from sending it until the last observer's notification has arrived; CON notifications
 * are acknowledged. Prints one line on stdout:
 *
 *   observers=N registered=N bytes_per_observer=F fanout_ms_median=F fanout_ms_max=F
 *   missing=N
 *
 * Loopback only; everything is bounded by timeouts (5 s per phase).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define MAX_SOCKETS 256
#define WINDOW 32           /* registrations outstanding per socket */

static int socks[MAX_SOCKETS];
static unsigned nsocks, nobs;
static uint16_t mids[MAX_SOCKETS];
static uint32_t *seen;      /* per observer: the round whose notification arrived */

/* A request: type, code, MID, 4-byte token, Observe (or none), Uri-Path segments. */
static size_t
build(uint8_t *b, int type, int code, uint16_t mid, uint32_t tok, int observe,
      const char *seg1, const char *seg2)
{
    size_t n = 0, l1 = strlen(seg1), l2 = strlen(seg2);

    b[n++] = (uint8_t)(0x40 | type << 4 | 4);
    b[n++] = (uint8_t)code;
    b[n++] = (uint8_t)(mid >> 8);
    b[n++] = (uint8_t)mid;
    memcpy(b + n, &tok, 4);
    n += 4;
    if (observe >= 0) {         /* option 6, value 0: empty */
        b[n++] = 0x60;
        b[n++] = (uint8_t)(0x50 | l1);     /* delta 5 -> 11 Uri-Path */
    } else {
        b[n++] = (uint8_t)(0xB0 | l1);     /* delta 11 */
    }
    memcpy(b + n, seg1, l1);
    n += l1;
    b[n++] = (uint8_t)(0x00 | l2);
    memcpy(b + n, seg2, l2);
    return n + l2;
}

/* Parse just what we need: type, code, MID, token (4 bytes expected), Observe present. */
static int
parse(const uint8_t *b, size_t n, int *type, int *code, uint16_t *mid, uint32_t *tok,
      int *has_obs)
{
    size_t tkl, i;
    unsigned num = 0;

    if (n < 4 || (b[0] >> 6) != 1)
        return -1;
    *type = (b[0] >> 4) & 3;
    tkl = b[0] & 15;
    *code = b[1];
    *mid = (uint16_t)(b[2] << 8 | b[3]);
    *tok = 0;
    *has_obs = 0;
    if (tkl == 4 && n >= 8)
        memcpy(tok, b + 4, 4);
    for (i = 4 + tkl; i < n && b[i] != 0xFF;) {
        unsigned d = b[i] >> 4, l = b[i] & 15;

        i++;
        if (d == 13) d = 13 + b[i++];
        else if (d == 14) { d = 269 + (b[i] << 8 | b[i + 1]); i += 2; }
        if (l == 13) l = 13 + b[i++];
        else if (l == 14) { l = 269 + (b[i] << 8 | b[i + 1]); i += 2; }
        num += d;
        if (num == 6)
            *has_obs = 1;
        i += l;
    }
    return 0;
}

static void
ack(int fd, uint16_t mid)
{
    uint8_t b[4] = {0x60, 0, (uint8_t)(mid >> 8), (uint8_t)mid};

    send(fd, b, 4, 0);
}

/* One waiting datagram of fd, parsed (a CON is acknowledged). 0: none left. */
struct in {
    int code, obs;
    uint32_t tok;
};

static int
next_msg(int fd, struct in *in)
{
    uint8_t buf[2048];
    ssize_t r;

    while ((r = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        int type;
        uint16_t mid;

        if (parse(buf, (size_t)r, &type, &in->code, &mid, &in->tok, &in->obs) < 0)
            continue;
        if (type == 0)
            ack(fd, mid);   /* a notification, or the server's ping verifying us */
        if (in->code == 0)
            continue;
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *ai;
    unsigned rounds = 5, registered = 0, missing = 0, next_reg[MAX_SOCKETS] = {0};
    unsigned outstanding[MAX_SOCKETS] = {0};
    struct pollfd pfd[MAX_SOCKETS + 1];
    double fan[64], deadline;
    long rss0, rss1;
    uint8_t buf[2048];
    int trig = -1;

    if (argc < 4) {
        fprintf(stderr, "usage: obs-bench HOST PORT SERVER_PID [OBSERVERS [SOCKETS [ROUNDS]]]\n");
        return 2;
    }
    nobs = argc > 4 ? (unsigned)atoi(argv[4]) : 10000;
    nsocks = argc > 5 ? (unsigned)atoi(argv[5]) : 40;
    rounds = argc > 6 ? (unsigned)atoi(argv[6]) : 5;
    if (nsocks < 1 || nsocks > MAX_SOCKETS || nobs < 1 || rounds < 1 || rounds > 64) {
        fprintf(stderr, "obs-bench: bad counts\n");
        return 2;
    }
    if (getaddrinfo(argv[1], argv[2], &hints, &ai) != 0) {
        fprintf(stderr, "obs-bench: cannot resolve %s\n", argv[1]);
        return 2;
    }
    seen = calloc(nobs, sizeof *seen);
    for (unsigned s = 0; s <= nsocks; s++) {
        int fd = socket(ai->ai_family, SOCK_DGRAM, 0), sz = 4 << 20;

        if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            perror("obs-bench: socket");
            return 1;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        if (s < nsocks) {
            socks[s] = fd;
            mids[s] = (uint16_t)(s * 1000);
        } else {
            trig = fd;
        }
        pfd[s] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    rss0 = rss_kb(argv[3]);

    /* registrations: observer i on socket i % nsocks, token i */
    deadline = now() + 10;
    while (registered < nobs && now() < deadline) {
        for (unsigned s = 0; s < nsocks; s++) {
            while (outstanding[s] < WINDOW && next_reg[s] * nsocks + s < nobs) {
                uint32_t i = next_reg[s]++ * nsocks + s;
                size_t n = build(buf, 1, 1, mids[s]++, i, 0, "obs", "value");

                send(socks[s], buf, n, 0);
                outstanding[s]++;
            }
        }
        if (poll(pfd, nsocks, 100) <= 0)
            continue;
        for (unsigned s = 0; s < nsocks; s++) {
            struct in in;

            while (next_msg(socks[s], &in)) {
                if (in.code == 0x45 && in.obs && in.tok < nobs && !seen[in.tok]) {
                    seen[in.tok] = 1;
                    registered++;
                    outstanding[s]--;
                } else if (in.code != 0x45 || !in.obs) {
                    fprintf(stderr, "obs-bench: registration %u answered %d.%02d%s\n",
                            in.tok, in.code >> 5, in.code & 31,
                            in.obs ? "" : " without Observe");
                    return 1;
                }
            }
        }
    }
    if (registered < nobs) {
        fprintf(stderr, "obs-bench: only %u of %u registered\n", registered, nobs);
        return 1;
    }
    usleep(200000);             /* let the allocator settle before reading RSS */
    rss1 = rss_kb(argv[3]);

    for (unsigned round = 0; round < rounds; round++) {
        unsigned got = 0;
        double t0, last = 0;
        size_t n = build(buf, 0, 2, (uint16_t)(40000 + round), 0xFFFFFFFFu, -1, "obs", "bump");

        t0 = now();
        send(trig, buf, n, 0);
        deadline = t0 + 5;
        while (got < nobs && now() < deadline) {
            if (poll(pfd, nsocks + 1, 50) <= 0)
                continue;
            for (unsigned s = 0; s <= nsocks; s++) {
                int fd = s < nsocks ? socks[s] : trig;
                struct in in;

                while (next_msg(fd, &in)) {
                    if (fd != trig && in.code == 0x45 && in.tok < nobs &&
                        seen[in.tok] == round + 1) {
                        seen[in.tok] = round + 2;
                        got++;
                        last = now();
                    }
                }
            }
        }
        missing += nobs - got;
        fan[round] = (last - t0) * 1000;
        usleep(100000);
    }
    /* median and max */
    for (unsigned i = 1; i < rounds; i++)
        for (unsigned j = i; j > 0 && fan[j - 1] > fan[j]; j--) {
            double t = fan[j];

            fan[j] = fan[j - 1];
            fan[j - 1] = t;
        }
    printf("observers=%u registered=%u bytes_per_observer=%.0f fanout_ms_median=%.2f "
           "fanout_ms_max=%.2f missing=%u\n", nobs, registered,
           (double)(rss1 - rss0) * 1024 / nobs, fan[rounds / 2], fan[rounds - 1], missing);
    freeaddrinfo(ai);
    return missing ? 1 : 0;
}
