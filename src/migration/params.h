/* Migration parameters and capabilities, with QEMU's QMP names
 * (migrate-set-parameters / migrate-set-capabilities). Pure: a table of
 * names, ranges and defaults. Setting several values is all-or-nothing: the
 * caller applies them to a copy and commits the copy on success.
 * Returns: 0 or -EINVAL/-ENOENT with a message in err. */
#ifndef GW_MIGRATION_PARAMS_H
#define GW_MIGRATION_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"

struct mig_params {
    uint64_t downtime_limit_ms;     /* downtime-limit, ms */
    uint64_t max_bandwidth;         /* max-bandwidth, bytes/s, 0 = unlimited */
    uint64_t cpu_throttle_initial;  /* % */
    uint64_t cpu_throttle_increment;/* % */
    uint64_t max_cpu_throttle;      /* % */
    uint64_t throttle_trigger_threshold; /* % dirtied/sent that triggers a step */
    uint64_t max_postcopy_bandwidth;/* bytes/s, 0 = unlimited */
    uint64_t compress_level;        /* zstd level for compress-zstd (1..19) */
    uint64_t max_switchover_retries;/* godwit: stops given up (switchover_guard.h) */
};

enum mig_cap {
    MIG_CAP_EVENTS,
    MIG_CAP_AUTO_CONVERGE,
    MIG_CAP_POSTCOPY_RAM,
    MIG_CAP_COMPRESS_ZSTD,
    MIG_CAP_POSTCOPY_AFTER_PRECOPY, /* godwit: switch to post-copy after pass 1 */
    MIG_CAP__MAX
};

struct mig_caps {
    bool on[MIG_CAP__MAX];
};

void mig_params_default(struct mig_params *p);
/* Set one parameter by QMP name; checks the type range. */
int mig_params_set(struct mig_params *p, const char *name, int64_t value, struct gw_error *err);
unsigned mig_params_count(void);
/* Name and current value of parameter i (for query-migrate-parameters). */
const char *mig_params_get(const struct mig_params *p, unsigned i, uint64_t *value);

void mig_caps_default(struct mig_caps *c);
/* Capability by QMP name; -ENOENT if unknown. */
int mig_caps_set(struct mig_caps *c, const char *name, bool on, struct gw_error *err);
unsigned mig_caps_count(void);
/* Name of capability i (NULL past the end). */
const char *mig_caps_name(unsigned i);

#endif
