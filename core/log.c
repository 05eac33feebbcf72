/*
 * log.c -- the server log. Only this file prints (besides the CLI's usage text).
 */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int level = MOONLET_LOG_INFO;

void
log_set_level(int l)
{
    level = l;
}

int
log_level(void)
{
    return level;
}

void
log_vmsg(int l, const char *prefix, const char *fmt, va_list ap)
{
    static const char *names[] = {"notice", "error", "warn", "info", "debug"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    int n;

    if (l > level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: %s%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, names[l < 0 ? 0 : l > 3 ? 4 : l + 1],
                 prefix ? prefix : "", prefix ? ": " : "");
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void
log_msg(int l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(l, NULL, fmt, ap);
    va_end(ap);
}
