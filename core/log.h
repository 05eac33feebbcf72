/*
 * log.h -- the server log: one line per event on stderr, "TIME LEVEL: message".
 * The level is process-wide (like syslog's mask); it is the one piece of mutable state
 * outside struct server, set once at start-up.
 */
#ifndef LOG_H
#define LOG_H

#include "include/moonlet.h"

void log_set_level(int level);
int log_level(void);
void log_msg(int level, const char *fmt, ...) MOONLET_PRINTF(2, 3);
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap);

/* printed whatever the level: start-up and shutdown milestones */
#define log_notice(...) log_msg(-1, __VA_ARGS__)
#define log_error(...) log_msg(MOONLET_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(MOONLET_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(MOONLET_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(MOONLET_LOG_DEBUG, __VA_ARGS__)

#endif
