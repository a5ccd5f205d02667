#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void gw_error_init(struct gw_error *err)
{
    err->code = 0;
    err->msg[0] = '\0';
}

int gw_error_set(struct gw_error *err, int code, const char *fmt, ...)
{
    if (code < 0)
        code = -code;
    if (code == 0)
        code = 1;
    if (err && err->code == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return -code;
}

void gw_error_prefix(struct gw_error *err, const char *fmt, ...)
{
    if (!err || err->code == 0)
        return;
    char pre[GW_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    char old[GW_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", pre, old);
}

bool gw_error_is_set(const struct gw_error *err) { return err && err->code != 0; }
