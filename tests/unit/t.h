/*
 * t.h -- the unit-test helper: each check prints a TAP-style "ok N - name" or
 * "not ok N - name (detail, file:line)" line; t_done prints "N passed, M failed" and returns
 * the exit status. One test program per .c file, so the counters are file-static.
 */
#ifndef T_H
#define T_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static unsigned t_passed, t_failed;

/* Each macro evaluates to 1 on success, 0 on failure, so a test can stop early. */
#define T_OK(cond, ...) t_ok(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define T_EQ_INT(a, b, name) t_eq_int((long long)(a), (long long)(b), __FILE__, __LINE__, name)
#define T_EQ_MEM(a, alen, b, blen, name)                                                           \
    t_eq_mem((a), (size_t)(alen), (b), (size_t)(blen), __FILE__, __LINE__, name)

static inline int
t_result(int ok, const char *name, const char *detail, const char *file, int line)
{
    unsigned n = t_passed + t_failed + 1;

    if (ok) {
        t_passed++;
        printf("ok %u - %s\n", n, name);
    } else {
        t_failed++;
        printf("not ok %u - %s (%s, %s:%d)\n", n, name, detail, file, line);
    }
    return ok;
}

static inline int
t_ok(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
{
    char name[200], detail[240];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    snprintf(detail, sizeof detail, "false: %s", expr);
    return t_result(ok, name, detail, file, line);
}

static inline int
t_eq_int(long long got, long long want, const char *file, int line, const char *name)
{
    char detail[80];

    snprintf(detail, sizeof detail, "got %lld, expected %lld", got, want);
    return t_result(got == want, name, detail, file, line);
}

static inline int
t_eq_mem(const void *a, size_t alen, const void *b, size_t blen, const char *file, int line,
         const char *name)
{
    const unsigned char *x = a, *y = b;
    char detail[120];
    size_t i = 0;

    while (i < alen && i < blen && x[i] == y[i])
        i++;
    snprintf(detail, sizeof detail, "got %zu bytes, expected %zu; first difference at byte %zu",
             alen, blen, i);
    return t_result(alen == blen && i == alen, name, detail, file, line);
}

/* Prints the summary; the exit status is 0 iff nothing failed. */
static inline int
t_done(void)
{
    printf("%u passed, %u failed\n", t_passed, t_failed);
    return t_failed != 0;
}

#endif
