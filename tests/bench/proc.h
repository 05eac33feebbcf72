/*
 * proc.h -- what the benchmark generators read about time and about the server process:
 * a monotonic clock, CPU time (their own, and the server's from /proc/PID/stat), and the
 * server's resident memory from /proc/PID/status.
 */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* this process's CPU time, ms */
static double
own_cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* utime + stime of process pid, in ms (/proc/PID/stat fields 14 and 15); -1 if unreadable */
static double
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
static long
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

#endif
