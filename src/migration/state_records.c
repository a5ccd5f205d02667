/* struct vcpu_state <-> VCPU_STATE sections; the record itself is the typed
 * layer's (stream_writer.c, stream_reader.c). */
#include "migration/state_records.h"

#include <string.h>

/* What the typed layer accepts fits in struct vcpu_state (section lengths
 * equal to the KVM structures are asserted in stream_reader.c). */
_Static_assert(GWS_MAX_XSAVE <= CPU_STATE_XSAVE_MAX, "XSAVE section fits vcpu_state");
_Static_assert(GWS_MAX_MSRS <= CPU_STATE_MAX_MSRS, "MSR section fits vcpu_state");
_Static_assert(sizeof(((struct vcpu_state *)0)->mp.mp_state) == GWS_SEC_MP_STATE_LEN, "mp_state");
_Static_assert(GWS_MAX_CPUID <= CPU_STATE_MAX_CPUID, "CPUID section fits vcpu_state");
_Static_assert(sizeof(struct kvm_cpuid_entry2) == GWS_CPUID_ENTRY_LEN, "kvm_cpuid_entry2");

/* The MSRS section (doc 4.5): count, zero, then {index, zero, value}. */
struct msr_section {
    uint32_t count;
    uint32_t zero;
    struct gws_msr e[GWS_MAX_MSRS];
};
_Static_assert(sizeof(struct msr_section) == 8 + 16 * GWS_MAX_MSRS, "msr section");

/* Entries beyond GWS_MAX_MSRS are not copied; count keeps st->nmsrs, so
 * stream_write_vcpu's check refuses such a list with its own message. */
static uint32_t msrs_to_wire(const struct vcpu_state *st, struct msr_section *m)
{
    uint32_t n = st->nmsrs < GWS_MAX_MSRS ? st->nmsrs : GWS_MAX_MSRS;
    m->count = st->nmsrs;
    m->zero = 0;
    for (uint32_t i = 0; i < n; i++)
        m->e[i] = (struct gws_msr){ .index = st->msrs[i].index, .value = st->msrs[i].data };
    return 8 + 16 * n;
}

/* The CPUID section (doc 4.5): count, zero, then the KVM entries as they
 * are. Entries beyond GWS_MAX_CPUID are not copied; the count keeps
 * st->ncpuid for the writer's check to refuse. */
struct cpuid_section {
    uint32_t count;
    uint32_t zero;
    struct kvm_cpuid_entry2 e[GWS_MAX_CPUID];
};

static uint32_t cpuid_to_wire(const struct vcpu_state *st, struct cpuid_section *c)
{
    uint32_t n = st->ncpuid < GWS_MAX_CPUID ? st->ncpuid : GWS_MAX_CPUID;
    c->count = st->ncpuid;
    c->zero = 0;
    memcpy(c->e, st->cpuid, n * sizeof(c->e[0]));
    return 8 + GWS_CPUID_ENTRY_LEN * n;
}

int state_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct vcpu_state *st)
{
    struct msr_section m;
    uint32_t msr_len = msrs_to_wire(st, &m);
    struct cpuid_section c;
    uint32_t cpuid_len = cpuid_to_wire(st, &c);
    uint32_t tsc[2] = { st->tsc_khz, 0 };
    uint32_t mp = st->mp.mp_state;
    struct stream_section sec[GWS_SEC_MAX];
    unsigned k = 0;
    sec[k++] = (struct stream_section){ GWS_SEC_REGS, sizeof(st->regs), &st->regs };
    sec[k++] = (struct stream_section){ GWS_SEC_SREGS, sizeof(st->sregs), &st->sregs };
    sec[k++] = (struct stream_section){ GWS_SEC_XSAVE, st->xsave_size, st->xsave };
    if (st->has_xcrs)
        sec[k++] = (struct stream_section){ GWS_SEC_XCRS, sizeof(st->xcrs), &st->xcrs };
    sec[k++] = (struct stream_section){ GWS_SEC_MSRS, msr_len, &m };
    sec[k++] = (struct stream_section){ GWS_SEC_LAPIC, sizeof(st->lapic), &st->lapic };
    sec[k++] = (struct stream_section){ GWS_SEC_EVENTS, sizeof(st->events), &st->events };
    sec[k++] = (struct stream_section){ GWS_SEC_MP_STATE, sizeof(mp), &mp };
    sec[k++] = (struct stream_section){ GWS_SEC_DEBUGREGS, sizeof(st->debugregs), &st->debugregs };
    /* Without a CPU (has_cpuid false) the writer's check refuses the
     * record: "section cpuid is missing". */
    if (st->has_cpuid) {
        sec[k++] = (struct stream_section){ GWS_SEC_CPUID, cpuid_len, &c };
        sec[k++] = (struct stream_section){ GWS_SEC_TSC_KHZ, sizeof(tsc), tsc };
    }
    return stream_write_vcpu(s, vcpu_id, sec, k);
}

/* MSRS section already checked: count <= GWS_MAX_MSRS, length 8 + 16 * count. */
static void msrs_from_wire(struct vcpu_state *st, const uint8_t *p)
{
    memcpy(&st->nmsrs, p, 4);
    for (uint32_t i = 0; i < st->nmsrs; i++) {
        struct gws_msr e;
        memcpy(&e, p + 8 + 16 * i, sizeof(e));
        st->msrs[i].index = e.index;
        st->msrs[i].data = e.value;
    }
}

/* One checked section into st: its length is the one stream_check_section
 * demands, equal to sizeof the member (stream_reader.c asserts it). */
static void section_to_state(struct vcpu_state *st, const struct stream_section *sec)
{
    switch (sec->tag) {
    case GWS_SEC_REGS: memcpy(&st->regs, sec->data, sizeof(st->regs)); break;
    case GWS_SEC_SREGS: memcpy(&st->sregs, sec->data, sizeof(st->sregs)); break;
    case GWS_SEC_XSAVE:
        memcpy(st->xsave, sec->data, sec->len);
        st->xsave_size = sec->len;
        break;
    case GWS_SEC_XCRS:
        memcpy(&st->xcrs, sec->data, sizeof(st->xcrs));
        st->has_xcrs = true;
        break;
    case GWS_SEC_MSRS: msrs_from_wire(st, sec->data); break;
    case GWS_SEC_LAPIC: memcpy(&st->lapic, sec->data, sizeof(st->lapic)); break;
    case GWS_SEC_EVENTS: memcpy(&st->events, sec->data, sizeof(st->events)); break;
    case GWS_SEC_MP_STATE: memcpy(&st->mp.mp_state, sec->data, 4); break;
    case GWS_SEC_DEBUGREGS: memcpy(&st->debugregs, sec->data, sizeof(st->debugregs)); break;
    case GWS_SEC_CPUID:
        memcpy(&st->ncpuid, sec->data, 4);
        memcpy(st->cpuid, (const uint8_t *)sec->data + 8, st->ncpuid * sizeof(st->cpuid[0]));
        st->has_cpuid = true;
        break;
    case GWS_SEC_TSC_KHZ: memcpy(&st->tsc_khz, sec->data, 4); break;
    }
}

int state_parse_vcpu(const uint8_t *body, size_t len, uint32_t *vcpu_id, struct vcpu_state *st,
                     struct gw_error *err)
{
    struct stream_vcpu v;
    int r = stream_parse_vcpu(body, len, &v, err);
    if (r < 0)
        return r;
    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; i < v.nsec; i++)
        section_to_state(st, &v.sec[i]);
    *vcpu_id = v.id;
    return 0;
}
