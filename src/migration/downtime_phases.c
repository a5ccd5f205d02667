#include "migration/downtime_phases.h"

#include <stdio.h>

const char *const mig_phase_names[MIG_NPHASES] = {
    "stop", "sync", "pages", "state", "load", "resume",
};

const char *mig_phases_text(const uint64_t us[MIG_NPHASES], char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < MIG_NPHASES && at < len; i++) {
        int n = snprintf(buf + at, len - at, "%s%s %llu us", i ? ", " : "", mig_phase_names[i],
                         (unsigned long long)us[i]);
        if (n < 0)
            break;
        at += (size_t)n;
    }
    return buf;
}
