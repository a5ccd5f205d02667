/* The VMM's vCPU state (struct vcpu_state, vmm/cpu_state.h) as a VCPU_STATE
 * record (docs/stream-format.md 4.5): the mapping between its fields and the
 * record's sections, and nothing else. Encoding, decoding and every check
 * of the record are the typed layer's (stream_write_vcpu,
 * stream_parse_vcpu in migration/stream_records.h), the same code that
 * stream_next_record and godwit-stream use. DEVICE_STATE needs no mapping:
 * callers use stream_write_device and stream_parse_device directly.
 *
 * Returns: 0 or -errno; the writer sets the stream's sticky error, the
 * parser fills err. */
#ifndef GW_MIGRATION_STATE_RECORDS_H
#define GW_MIGRATION_STATE_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "migration/stream_records.h"
#include "vmm/cpu_state.h"

/* One VCPU_STATE record (version 2) for vCPU vcpu_id: sections REGS, SREGS,
 * XSAVE, XCRS (if has_xcrs), MSRS, LAPIC, EVENTS, MP_STATE, DEBUGREGS,
 * CPUID, TSC_KHZ in this order; an MSR entry's reserved word is sent as 0.
 * A state without CPUID (has_cpuid false) is refused: version 2 needs it. */
int state_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct vcpu_state *st);
/* Check a VCPU_STATE body (stream_parse_vcpu) and only then fill *st (all
 * of it; fields the record does not carry are 0); *vcpu_id gets the vCPU
 * number, which the caller checks against its own vCPUs. */
int state_parse_vcpu(const uint8_t *body, size_t len, uint32_t *vcpu_id, struct vcpu_state *st,
                     struct gw_error *err);

#endif
