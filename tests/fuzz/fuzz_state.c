/* libFuzzer target: the vCPU and device state loaders on raw record
 * bodies (first byte picks which). */
#include <stdint.h>

#include "migration/state_records.h"

static struct vcpu_state st;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct gw_error err;
    gw_error_init(&err);
    if (data[0] & 1) {
        uint32_t id;
        state_parse_vcpu(data + 1, size - 1, &id, &st, &err);
    } else {
        char id[33];
        uint32_t inst, ver;
        const uint8_t *d;
        size_t dl;
        state_parse_device(data + 1, size - 1, id, &inst, &ver, &d, &dl, &err);
    }
    return 0;
}
