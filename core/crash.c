/*
 * crash.c -- a fatal signal is reported before the process dies of it: one line in the
 * log's format, "TIME fatal: SIGSEGV in UNIT: GET /path; backtrace:", then the frames.
 * The handler uses async-signal-safe calls only (POSIX.1-2017 §2.4.3: write, raise,
 * sigaction, clock_gettime; backtrace_symbols_fd writes without allocating): no stdio,
 * no malloc, numbers formatted by hand.
 */
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crash.h"
#include "include/moonlet.h"

#define FRAMES 64
#define ALTSTACK (128 * 1024)

static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

/* Process-wide, unlike everything else (server.h): a signal handler can reach nothing but
 * globals. crash_running is the one the server writes; the rest is set once by crash_init. */
struct crash_ctx *volatile crash_running;
static struct sigaction chained[NSIG]; /* what was there before: ASan's, in a SAN build */
static char altstack[ALTSTACK];

struct line {
    char buf[1024];
    size_t n;
};

static void
put(struct line *l, const char *s)
{
    while (s && *s && l->n < sizeof l->buf - 1)
        l->buf[l->n++] = *s++;
}

/* v in decimal, at least width digits */
static void
put_num(struct line *l, unsigned long v, int width)
{
    char d[24];
    int i = 0;

    do {
        d[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v || i < width);
    while (i > 0 && l->n < sizeof l->buf - 1)
        l->buf[l->n++] = d[--i];
}

/* "2026-01-31T12:34:56.789Z", as log.c writes it (gmtime_r is not async-signal-safe:
 * days to a civil date by H. Hinnant's algorithm, for the proleptic Gregorian calendar). */
static void
put_time(struct line *l)
{
    struct timespec ts;
    long z, era, y;
    unsigned long doe, yoe, doy, mp, m, d, secs;

    clock_gettime(CLOCK_REALTIME, &ts);
    z = ts.tv_sec / 86400 + 719468;
    secs = (unsigned long)(ts.tv_sec % 86400);
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned long)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = (long)yoe + era * 400 + (m <= 2);
    put_num(l, (unsigned long)y, 4);
    put(l, "-");
    put_num(l, m, 2);
    put(l, "-");
    put_num(l, d, 2);
    put(l, "T");
    put_num(l, secs / 3600, 2);
    put(l, ":");
    put_num(l, secs / 60 % 60, 2);
    put(l, ":");
    put_num(l, secs % 60, 2);
    put(l, ".");
    put_num(l, (unsigned long)ts.tv_nsec / 1000000, 3);
    put(l, "Z");
}

static const char *
signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV (invalid memory access)";
    case SIGBUS:
        return "SIGBUS (bus error)";
    case SIGFPE:
        return "SIGFPE (arithmetic error)";
    case SIGILL:
        return "SIGILL (illegal instruction)";
    default:
        return "SIGABRT (abort)";
    }
}

static const char *
method_name(unsigned m)
{
    static const char *const names[] = {
        [MOONLET_GET] = "GET",       [MOONLET_POST] = "POST",   [MOONLET_PUT] = "PUT",
        [MOONLET_DELETE] = "DELETE", [MOONLET_FETCH] = "FETCH", [MOONLET_PATCH] = "PATCH",
        [MOONLET_IPATCH] = "iPATCH"};

    return m < sizeof names / sizeof names[0] && names[m] ? names[m] : "a request";
}

static void
write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);

        if (w <= 0)
            return; /* EINTR cannot be told from a closed stderr here: give up */
        p += w;
        n -= (size_t)w;
    }
}

/* The handler that was there before ours (a sanitizer's: it adds its own report), then
 * the default action: the process ends with the signal, as a supervisor expects. */
static void
die(int sig, siginfo_t *si, void *uc)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    const struct sigaction *p = &chained[sig];

    if ((p->sa_flags & SA_SIGINFO) && p->sa_sigaction)
        p->sa_sigaction(sig, si, uc);
    else if (!(p->sa_flags & SA_SIGINFO) && p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN)
        p->sa_handler(sig);
    sigaction(sig, &dfl, NULL);
    raise(sig); /* pending until we return; a fault would recur anyway */
}

static void
on_fatal(int sig, siginfo_t *si, void *uc)
{
    const struct crash_ctx *c = crash_running;
    void *frames[FRAMES];
    struct line l = {.n = 0};

    put_time(&l);
    put(&l, " fatal: ");
    put(&l, signal_name(sig));
    if (c == NULL) {
        put(&l, " outside any handler");
    } else {
        put(&l, " in ");
        put(&l, c->unit);
        put(&l, ": ");
        if (c->what) {
            put(&l, c->what);
            put(&l, c->path ? " " : "");
        }
        if (c->path || !c->what) {
            put(&l, c->path ? method_name(c->method) : "a timer");
            put(&l, c->path ? " " : "");
            put(&l, c->path);
        }
    }
    put(&l, "; backtrace:\n");
    write_all(l.buf, l.n);
    backtrace_symbols_fd(frames, backtrace(frames, FRAMES), STDERR_FILENO);
    die(sig, si, uc);
}

int
crash_init(void)
{
    struct sigaction sa = {.sa_sigaction = on_fatal,
                           .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND};
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack}, old;
    void *frame;

    /* the first backtrace loads libgcc's unwinder (dlopen, malloc): not in the handler */
    backtrace(&frame, 1);
    /* keep an alternate stack someone installed already (ASan does, per thread) */
    if (sigaltstack(NULL, &old) < 0 || ((old.ss_flags & SS_DISABLE) && sigaltstack(&ss, NULL) < 0))
        return -1;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        sigaddset(&sa.sa_mask, fatal[i]); /* one report, even if another signal follows */
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        if (sigaction(fatal[i], &sa, &chained[fatal[i]]) < 0)
            return -1;
    return 0;
}
