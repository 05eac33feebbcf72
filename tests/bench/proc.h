/*
 * proc.h -- what the benchmark generators read about time and about the server process:
 * a monotonic clock, CPU time (their own, and the server's from /proc/PID/stat), the
 * server's resident memory from /proc/PID/status, and a run's marks (time and CPU at its
 * start and end) with the one-line report of its rate and costs.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* this process's CPU time, ms */
static inline double
own_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* utime + stime of process pid, in ms (/proc/PID/stat fields 14 and 15); -1 if unreadable */
static inline double
cpu_ms(const char *pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut, st;
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%s/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* the name in parentheses may hold spaces: the fields after the last ')' */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (ut + st) * 1000.0 / sysconf(_SC_CLK_TCK);
}

/* VmRSS of process pid in KiB, -1 if it cannot be read */
static inline long
rss_kb(const char *pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%s/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* ---- runs: time and CPU at their start and end ---------------------------------------- */

struct mark {
    double t, server_ms, client_ms, busy_ms, all_ms;
};

/* CPU time of the whole machine in ms: busy (all but idle and iowait) and all of it, from
 * /proc/stat's first line; -1 when it cannot be read */
static inline void
machine_cpu_ms(double *busy, double *all)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    double tick = 1000.0 / sysconf(_SC_CLK_TCK);

    if (f)
        fclose(f);
    *busy = *all = -1;
    if (n != 8)
        return;
    *all = (v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]) * tick;
    *busy = *all - (v[3] + v[4]) * tick;
}

/* now: the clock, the server's CPU (pid NULL: -1), ours, the machine's */
static inline struct mark
mark_now(const char *pid)
{
    struct mark m = {now(), pid ? cpu_ms(pid) : -1, own_cpu_ms(), 0, 0};

    machine_cpu_ms(&m.busy_ms, &m.all_ms);
    return m;
}

struct run {
    unsigned long ops;
    struct mark a, b;
};

static inline double
run_rate(const struct run *r)
{
    return r->ops / (r->b.t - r->a.t);
}

/* " PREFIXelsewhere=N%": the machine's CPU that neither the server nor we used between a
 * and b -- other work, which makes the rates of a shared machine wander */
static inline void
print_elsewhere(const char *prefix, const struct mark *a, const struct mark *b)
{
    double all = b->all_ms - a->all_ms;
    double other = b->busy_ms - a->busy_ms - (b->client_ms - a->client_ms) -
                   (a->server_ms >= 0 ? b->server_ms - a->server_ms : 0);

    if (a->all_ms < 0 || b->all_ms < 0 || all <= 0)
        printf(" %selsewhere=-", prefix);
    else
        printf(" %selsewhere=%.0f%%", prefix, other > 0 ? 100 * other / all : 0);
}

/* " PREFIXsecs=.. PREFIXrate=.. PREFIXserver_us=.. PREFIXclient_us=.. PREFIXelsewhere=.." */
static inline void
print_run(const char *prefix, const struct run *r)
{
    double per = r->ops ? 1e3 / r->ops : 0;

    printf(" %ssecs=%.2f %srate=%.0f %sserver_us=", prefix, r->b.t - r->a.t, prefix, run_rate(r),
           prefix);
    if (r->a.server_ms >= 0 && r->b.server_ms >= 0)
        printf("%.1f", (r->b.server_ms - r->a.server_ms) * per);
    else
        printf("-");
    printf(" %sclient_us=%.1f", prefix, (r->b.client_ms - r->a.client_ms) * per);
    print_elsewhere(prefix, &r->a, &r->b);
}

#endif
