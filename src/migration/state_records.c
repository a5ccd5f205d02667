#include "migration/state_records.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define VCPU_RECORD_VERSION 1

/* Build a VCPU_STATE body in a heap buffer (it is small: ~10 KiB). */
struct body {
    uint8_t *p;
    size_t len, cap;
};

static int put(struct body *b, const void *data, size_t len)
{
    size_t need = b->len + len + 8;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < need)
            cap *= 2;
        uint8_t *n = realloc(b->p, cap);
        if (!n)
            return -ENOMEM;
        b->p = n;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

static int section(struct body *b, uint32_t tag, const void *data, uint32_t len)
{
    struct gws_section h = { tag, len };
    static const uint8_t zeros[8];
    if (put(b, &h, sizeof(h)) < 0 || put(b, data, len) < 0)
        return -ENOMEM;
    return put(b, zeros, (8 - (len & 7)) & 7);
}

int state_write_vcpu(struct stream *s, uint32_t vcpu_id, const struct vcpu_state *st)
{
    struct body b = { 0 };
    struct gws_vcpu h = { vcpu_id, VCPU_RECORD_VERSION };
    uint32_t mp = st->mp.mp_state;
    int r = put(&b, &h, sizeof(h));
    r |= section(&b, GWS_SEC_REGS, &st->regs, sizeof(st->regs));
    r |= section(&b, GWS_SEC_SREGS, &st->sregs, sizeof(st->sregs));
    r |= section(&b, GWS_SEC_XSAVE, st->xsave, st->xsave_size);
    if (st->has_xcrs)
        r |= section(&b, GWS_SEC_XCRS, &st->xcrs, sizeof(st->xcrs));
    struct body m = { 0 };
    uint32_t cnt[2] = { st->nmsrs, 0 };
    r |= put(&m, cnt, sizeof(cnt));
    for (uint32_t i = 0; i < st->nmsrs; i++) {
        uint32_t idx[2] = { st->msrs[i].index, 0 };
        r |= put(&m, idx, sizeof(idx));
        r |= put(&m, &st->msrs[i].data, 8);
    }
    if (r == 0)
        r |= section(&b, GWS_SEC_MSRS, m.p, (uint32_t)m.len);
    free(m.p);
    r |= section(&b, GWS_SEC_LAPIC, &st->lapic, sizeof(st->lapic));
    r |= section(&b, GWS_SEC_EVENTS, &st->events, sizeof(st->events));
    r |= section(&b, GWS_SEC_MP_STATE, &mp, sizeof(mp));
    r |= section(&b, GWS_SEC_DEBUGREGS, &st->debugregs, sizeof(st->debugregs));
    if (r != 0) {
        free(b.p);
        return stream_set_error(s, ENOMEM, "out of memory encoding vCPU state");
    }
    struct iovec iov = { b.p, b.len };
    r = stream_write_record(s, GWS_VCPU_STATE, &iov, 1);
    free(b.p);
    return r;
}

static int fixed(const char *what, uint32_t len, size_t want, void *dst, const uint8_t *src,
                 struct gw_error *err)
{
    if (len != want)
        return gw_error_set(err, EPROTO, "vCPU state: %s section is %u bytes, expected %zu", what,
                            len, want);
    memcpy(dst, src, want);
    return 0;
}

static int parse_msrs(const uint8_t *p, uint32_t len, struct vcpu_state *st, struct gw_error *err)
{
    uint32_t cnt;
    if (len < 8)
        return gw_error_set(err, EPROTO, "vCPU state: MSR section too short");
    memcpy(&cnt, p, 4);
    if (cnt > CPU_STATE_MAX_MSRS || (uint64_t)cnt * 16 + 8 != len)
        return gw_error_set(err, EPROTO, "vCPU state: bad MSR count %u", cnt);
    st->nmsrs = cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        memset(&st->msrs[i], 0, sizeof(st->msrs[i]));
        memcpy(&st->msrs[i].index, p + 8 + i * 16, 4);
        memcpy(&st->msrs[i].data, p + 8 + i * 16 + 8, 8);
    }
    return 0;
}

static int parse_section(uint32_t tag, const uint8_t *p, uint32_t len, struct vcpu_state *st,
                         unsigned *seen, struct gw_error *err)
{
    if (tag >= 1 && tag <= 9) {
        if (*seen & (1u << tag))
            return gw_error_set(err, EPROTO, "vCPU state: section %u appears twice", tag);
        *seen |= 1u << tag;
    }
    switch (tag) {
    case GWS_SEC_REGS: return fixed("regs", len, sizeof(st->regs), &st->regs, p, err);
    case GWS_SEC_SREGS: return fixed("sregs", len, sizeof(st->sregs), &st->sregs, p, err);
    case GWS_SEC_XSAVE:
        if (len < 4096 || len > CPU_STATE_XSAVE_MAX || len % 64)
            return gw_error_set(err, EPROTO, "vCPU state: bad XSAVE size %u", len);
        memcpy(st->xsave, p, len);
        st->xsave_size = len;
        return 0;
    case GWS_SEC_XCRS:
        st->has_xcrs = true;
        return fixed("xcrs", len, sizeof(st->xcrs), &st->xcrs, p, err);
    case GWS_SEC_MSRS: return parse_msrs(p, len, st, err);
    case GWS_SEC_LAPIC: return fixed("lapic", len, sizeof(st->lapic), &st->lapic, p, err);
    case GWS_SEC_EVENTS: return fixed("events", len, sizeof(st->events), &st->events, p, err);
    case GWS_SEC_MP_STATE: return fixed("mp_state", len, 4, &st->mp.mp_state, p, err);
    case GWS_SEC_DEBUGREGS:
        return fixed("debugregs", len, sizeof(st->debugregs), &st->debugregs, p, err);
    default:
        return gw_error_set(err, EPROTO, "vCPU state: unknown section %u", tag);
    }
}

int state_parse_vcpu(const uint8_t *body, size_t len, uint32_t *vcpu_id, struct vcpu_state *st,
                     struct gw_error *err)
{
    struct gws_vcpu h;
    if (len < sizeof(h))
        return gw_error_set(err, EPROTO, "vCPU state record too short");
    memcpy(&h, body, sizeof(h));
    if (h.version != VCPU_RECORD_VERSION)
        return gw_error_set(err, EPROTO, "vCPU state version %u is not supported", h.version);
    memset(st, 0, offsetof(struct vcpu_state, xsave));
    st->has_xcrs = false;
    st->nmsrs = 0;
    *vcpu_id = h.vcpu_id;
    unsigned seen = 0;
    size_t pos = sizeof(h);
    while (pos < len) {
        struct gws_section sec;
        if (len - pos < sizeof(sec))
            return gw_error_set(err, EPROTO, "vCPU state: truncated section header");
        memcpy(&sec, body + pos, sizeof(sec));
        pos += sizeof(sec);
        size_t padded = sec.len + ((8 - (sec.len & 7)) & 7);
        if (sec.len > len - pos || padded > len - pos)
            return gw_error_set(err, EPROTO, "vCPU state: section %u overruns the record", sec.tag);
        int r = parse_section(sec.tag, body + pos, sec.len, st, &seen, err);
        if (r < 0)
            return r;
        pos += padded;
    }
    const unsigned required = (1u << GWS_SEC_REGS) | (1u << GWS_SEC_SREGS) | (1u << GWS_SEC_XSAVE) |
                              (1u << GWS_SEC_MSRS) | (1u << GWS_SEC_LAPIC) |
                              (1u << GWS_SEC_EVENTS) | (1u << GWS_SEC_MP_STATE) |
                              (1u << GWS_SEC_DEBUGREGS);
    if ((seen & required) != required)
        return gw_error_set(err, EPROTO, "vCPU %u state lacks sections (have 0x%x)", h.vcpu_id, seen);
    return 0;
}

int state_write_device(struct stream *s, const char *id, uint32_t instance, uint32_t version,
                       const void *data, size_t len)
{
    struct gws_device h = { .instance = instance, .version = version };
    strncpy(h.id, id, sizeof(h.id) - 1);
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)data, len } };
    return stream_write_record(s, GWS_DEVICE_STATE, iov, 2);
}

int state_parse_device(const uint8_t *body, size_t len, char id[33], uint32_t *instance,
                       uint32_t *version, const uint8_t **data, size_t *data_len,
                       struct gw_error *err)
{
    struct gws_device h;
    if (len < sizeof(h))
        return gw_error_set(err, EPROTO, "device state record too short");
    memcpy(&h, body, sizeof(h));
    if (memchr(h.id, 0, sizeof(h.id)) == NULL)
        return gw_error_set(err, EPROTO, "device state: id is not terminated");
    memcpy(id, h.id, sizeof(h.id));
    id[32] = 0;
    *instance = h.instance;
    *version = h.version;
    *data = body + sizeof(h);
    *data_len = len - sizeof(h);
    return 0;
}
