/* Encoding and decoding the VCPU_STATE and DEVICE_STATE records
 * (docs/stream-format.md). Decoding is hostile-input safe: every section
 * length is checked against the size it must have before any copy.
 * Returns: 0 or -errno with a message in err. */
#ifndef GW_MIGRATION_STATE_RECORDS_H
#define GW_MIGRATION_STATE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "migration/stream.h"
#include "vmm/cpu_state.h"

int state_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct vcpu_state *st);
/* Parse a VCPU_STATE body into *st; *vcpu_id gets the vCPU number. */
int state_parse_vcpu(const uint8_t *body, size_t len, uint32_t *vcpu_id, struct vcpu_state *st,
                     struct gw_error *err);

int state_write_device(struct stream *s, const char *id, uint32_t instance, uint32_t version,
                       const void *data, size_t len);
/* Parse a DEVICE_STATE body: id, instance, version and the device's bytes. */
int state_parse_device(const uint8_t *body, size_t len, char id[33], uint32_t *instance,
                       uint32_t *version, const uint8_t **data, size_t *data_len,
                       struct gw_error *err);

#endif
