/* Levelled logging to stderr.
 *
 * Every file defines LOG_PREFIX (a short module name) before including this
 * header; every line carries the process's VM name (gw_log_set_vm) so that a
 * log mixing several VMs stays readable. Hot paths use counters, not logs. */
#ifndef GW_COMMON_LOG_H
#define GW_COMMON_LOG_H

#include <stdarg.h>

enum gw_log_level {
    GW_LOG_ERROR = 0,
    GW_LOG_WARN  = 1,
    GW_LOG_INFO  = 2,
    GW_LOG_DEBUG = 3,
};

#ifndef LOG_PREFIX
#define LOG_PREFIX "godwit"
#endif

void gw_log_set_level(enum gw_log_level level);
enum gw_log_level gw_log_get_level(void);
/* Name shown in every line (the VM name for godwit-vmm); copied. */
void gw_log_set_vm(const char *name);
/* Parse "error|warn|info|debug"; returns -1 if unknown. */
int gw_log_parse_level(const char *s);

void gw_log(enum gw_log_level level, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void gw_vlog(enum gw_log_level level, const char *prefix, const char *fmt, va_list ap);

#define log_error(...) gw_log(GW_LOG_ERROR, LOG_PREFIX, __VA_ARGS__)
#define log_warn(...)  gw_log(GW_LOG_WARN, LOG_PREFIX, __VA_ARGS__)
#define log_info(...)  gw_log(GW_LOG_INFO, LOG_PREFIX, __VA_ARGS__)
#define log_debug(...)                                                         \
    do {                                                                       \
        if (gw_log_get_level() >= GW_LOG_DEBUG)                                \
            gw_log(GW_LOG_DEBUG, LOG_PREFIX, __VA_ARGS__);                     \
    } while (0)

#endif
