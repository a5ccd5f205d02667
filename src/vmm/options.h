/* godwit-vmm command-line options (pure parsing, unit-tested).
 * Returns: 0 on success, 1 when --help/--version was handled (exit 0),
 * -EINVAL with a message in err for bad input. */
#ifndef GW_VMM_OPTIONS_H
#define GW_VMM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/error.h"
#include "vmm/cpu_model.h"

struct vmm_options {
    uint64_t memory_mib;
    unsigned vcpus;
    const char *kernel;
    const char *initrd;
    const char *cmdline;
    bool test_guest;
    const char *qmp_path;
    const char *serial;      /* "stdio", "none" or a file path */
    const char *name;
    uint8_t uuid[16];        /* --uuid; all zero when not given */
    bool incoming;
    bool no_reboot;
    bool paused;             /* -S: do not start the vCPUs until `cont` */
    bool mem_prealloc;       /* populate guest RAM in the background from the start */
    int log_level;           /* enum gw_log_level */
    struct cpu_model_spec cpu; /* --cpu: host, less what it names */
};

int vmm_options_parse(struct vmm_options *o, int argc, char **argv, FILE *help_out,
                      struct gw_error *err);
void vmm_options_usage(FILE *out);
/* Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (hex, any case); 0 or -EINVAL. */
int vmm_uuid_parse(const char *s, uint8_t out[16]);
/* Format 16 bytes as a lower-case UUID into buf (37 bytes). */
void vmm_uuid_format(const uint8_t uuid[16], char *buf);

#endif
