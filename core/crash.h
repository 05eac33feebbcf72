/*
 * crash.h -- the last word of a process a fatal signal ends (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGABRT): one log line naming the unit, method and resource that were running,
 * then a backtrace; then the process dies of that very signal (status 128 + signal).
 */
#ifndef CRASH_H
#define CRASH_H

/* What runs: filled on the caller's stack around a call into plugin or script code. */
struct crash_ctx {
    const char *unit; /* a plugin's name, a script's path */
    const char *path; /* the resource's path; NULL: a timer */
    unsigned method;  /* MOONLET_GET..., with path */
    const char *what; /* NULL: a handler (path) or a timer; else "init", "fini", or
                         "body of" (a streamed upload's callback, with path) */
};

/* The call running now, or NULL. Global because a signal handler has no other way to find
 * it; written only by crash_enter/crash_leave, read only by the handler. */
extern struct crash_ctx *volatile crash_running;

/* Install the handlers, on an alternate stack (a stack overflow is reported too). Once, at
 * start-up. 0, or -1 (nothing is reported then; the process still dies the same way). */
int crash_init(void);

/* Around a call into unit code: two pointer stores, no system call. */
static inline struct crash_ctx *
crash_enter(struct crash_ctx *c)
{
    struct crash_ctx *prev = crash_running;

    crash_running = c;
    return prev;
}

static inline void
crash_leave(struct crash_ctx *prev)
{
    crash_running = prev;
}

#endif
