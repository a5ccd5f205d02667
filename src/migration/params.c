#include "migration/params.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

struct param_desc {
    const char *name;
    size_t offset;
    uint64_t min, max, def;
};

#define P(n, field, mn, mx, d) { n, offsetof(struct mig_params, field), mn, mx, d }

static const struct param_desc params[] = {
    P("downtime-limit", downtime_limit_ms, 0, 2000000, 300),
    P("max-bandwidth", max_bandwidth, 0, INT64_MAX, 0),
    P("cpu-throttle-initial", cpu_throttle_initial, 1, 99, 20),
    P("cpu-throttle-increment", cpu_throttle_increment, 1, 99, 10),
    P("max-cpu-throttle", max_cpu_throttle, 1, 99, 99),
    P("throttle-trigger-threshold", throttle_trigger_threshold, 1, 100, 50),
    P("max-postcopy-bandwidth", max_postcopy_bandwidth, 0, INT64_MAX, 0),
    P("compress-level", compress_level, 1, 19, 1),
    P("max-switchover-retries", max_switchover_retries, 0, 100, 2),
};

#define NPARAMS (sizeof(params) / sizeof(params[0]))

static uint64_t *field(struct mig_params *p, unsigned i)
{
    return (uint64_t *)((char *)p + params[i].offset);
}

void mig_params_default(struct mig_params *p)
{
    for (unsigned i = 0; i < NPARAMS; i++)
        *field(p, i) = params[i].def;
}

int mig_params_set(struct mig_params *p, const char *name, int64_t value, struct gw_error *err)
{
    for (unsigned i = 0; i < NPARAMS; i++) {
        if (strcmp(params[i].name, name) != 0)
            continue;
        if (value < 0 || (uint64_t)value < params[i].min || (uint64_t)value > params[i].max)
            return gw_error_set(err, EINVAL,
                                "Parameter '%s' expects a value between %llu and %llu", name,
                                (unsigned long long)params[i].min,
                                (unsigned long long)params[i].max);
        *field(p, i) = (uint64_t)value;
        return 0;
    }
    return gw_error_set(err, ENOENT, "Parameter '%s' is unexpected", name);
}

unsigned mig_params_count(void) { return NPARAMS; }

const char *mig_params_get(const struct mig_params *p, unsigned i, uint64_t *value)
{
    if (i >= NPARAMS)
        return NULL;
    *value = *field((struct mig_params *)p, i);
    return params[i].name;
}

static const char *const cap_names[MIG_CAP__MAX] = {
    [MIG_CAP_EVENTS] = "events",
    [MIG_CAP_AUTO_CONVERGE] = "auto-converge",
    [MIG_CAP_POSTCOPY_RAM] = "postcopy-ram",
    [MIG_CAP_COMPRESS_ZSTD] = "compress-zstd",
    [MIG_CAP_POSTCOPY_AFTER_PRECOPY] = "postcopy-after-precopy",
};

void mig_caps_default(struct mig_caps *c) { memset(c, 0, sizeof(*c)); }

int mig_caps_set(struct mig_caps *c, const char *name, bool on, struct gw_error *err)
{
    for (unsigned i = 0; i < MIG_CAP__MAX; i++) {
        if (cap_names[i] && strcmp(cap_names[i], name) == 0) {
            c->on[i] = on;
            return 0;
        }
    }
    return gw_error_set(err, ENOENT, "Capability '%s' is not supported", name);
}

unsigned mig_caps_count(void) { return MIG_CAP__MAX; }
const char *mig_caps_name(unsigned i) { return i < MIG_CAP__MAX ? cap_names[i] : NULL; }
