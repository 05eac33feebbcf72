/*
 * t_crash.c -- test plugin for the crash report (core/crash.c, tests/integration/
 * test_plugins.py): each GET ends the server with a fatal signal from inside a handler.
 *
 * /crash/segv   a write through a NULL pointer (SIGSEGV)
 * /crash/abort  abort() (SIGABRT)
 * /crash/fpe    an integer division by zero (SIGFPE on x86 and most others; raise()
 *               where the division does not trap)
 * /crash/stack  unbounded recursion (SIGSEGV on the guard page: the report needs its
 *               alternate stack)
 * /crash/body   a streamed resource whose body callback aborts (PUT)
 * -s t_crash.at=init (or fini): abort() in the plugin's init (or fini)
 */
#include <signal.h>
#include <stdlib.h>

#include "moonlet.h"

static volatile int zero; /* volatile: the compiler must not see the crash coming */
static volatile int stop;

/* UBSan (SAN=1) would report the NULL store and exit before the fault: not the case here */
__attribute__((no_sanitize("undefined"))) static int
segv(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    volatile int *volatile p = NULL;

    (void)req, (void)resp, (void)ud;
    *p = 1;
    return MOONLET_OK;
}

static int
do_abort(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)resp, (void)ud;
    abort();
}

/* the same for the division */
__attribute__((no_sanitize("undefined"))) static int
fpe(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    volatile int one = 1, q = one / zero;

    (void)req, (void)resp, (void)ud;
    raise(SIGFPE);
    return q;
}

static int
deep(int n)
{
    volatile char frame[512];

    frame[0] = (char)n;
    return stop ? frame[0] : deep(n + 1) + frame[0];
}

static int
stack(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)resp, (void)ud;
    return deep(0);
}

static int
body_abort(moonlet_req *req, size_t offset, const uint8_t *data, size_t len, int last,
           void *ud)
{
    (void)req, (void)offset, (void)data, (void)len, (void)last, (void)ud;
    abort();
}

static int at_fini;

static int
crash_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    static const moonlet_resource_def defs[] = {
        {.path = "/crash/segv", .get = segv},
        {.path = "/crash/abort", .get = do_abort},
        {.path = "/crash/fpe", .get = fpe},
        {.path = "/crash/stack", .get = stack},
        {.path = "/crash/body", .put = do_abort, .body = body_abort},
    };
    const char *at = moonlet_conf_str(conf, "at", "");

    if (at[0] == 'i')
        abort();
    at_fini = at[0] == 'f';
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (!moonlet_resource_add(p, &defs[i], NULL))
            return MOONLET_EINVAL;
    return MOONLET_OK;
}

static void
crash_fini(moonlet_plugin *p)
{
    (void)p;
    if (at_fini)
        abort();
}

MOONLET_PLUGIN("t_crash", "1", crash_init, crash_fini);
