#include "common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Logging configuration is per process by nature (one stderr). */
static enum gw_log_level log_level = GW_LOG_INFO;
static char log_vm[64];
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {
    [GW_LOG_ERROR] = "error",
    [GW_LOG_WARN] = "warn",
    [GW_LOG_INFO] = "info",
    [GW_LOG_DEBUG] = "debug",
};

void gw_log_set_level(enum gw_log_level level) { log_level = level; }
enum gw_log_level gw_log_get_level(void) { return log_level; }

void gw_log_set_vm(const char *name)
{
    snprintf(log_vm, sizeof(log_vm), "%s", name ? name : "");
}

int gw_log_parse_level(const char *s)
{
    for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(s, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void gw_vlog(enum gw_log_level level, const char *prefix, const char *fmt, va_list ap)
{
    if (level > log_level)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s%s%s: ", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, level_names[level], log_vm[0] ? log_vm : "",
            log_vm[0] ? " " : "", prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&log_lock);
}

void gw_log(enum gw_log_level level, const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gw_vlog(level, prefix, fmt, ap);
    va_end(ap);
}
