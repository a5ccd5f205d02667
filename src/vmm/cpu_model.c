#include "vmm/cpu_model.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

enum { EAX = CPU_EAX, EBX = CPU_EBX, ECX = CPU_ECX, EDX = CPU_EDX };

/* A CPUID register that holds feature bits. */
struct feature_word {
    uint32_t leaf, index;
    unsigned reg;
    uint32_t ignored; /* bits the VMM or KVM set, not the host's CPU */
};

static const struct feature_word words[] = {
    /* MONITOR (3) follows MISC_ENABLE, OSXSAVE (27) CR4; the hypervisor
     * bit (31) is the VMM's. */
    { 1, 0, ECX, (1u << 3) | (1u << 27) | (1u << 31) },
    /* APIC (9) follows the APIC base MSR; HTT (28) is the VMM's. */
    { 1, 0, EDX, (1u << 9) | (1u << 28) },
    { 6, 0, EAX, 0 },
    /* OSPKE (4) follows CR4. */
    { 7, 0, EBX, 0 },          { 7, 0, ECX, 1u << 4 },  { 7, 0, EDX, 0 },
    { 7, 1, EAX, 0 },          { 7, 1, EDX, 0 },        { 7, 2, EDX, 0 },
    { 0xd, 0, EAX, 0 },        { 0xd, 0, EDX, 0 },      { 0xd, 1, EAX, 0 },
    { 0xd, 1, ECX, 0 },        { 0xd, 1, EDX, 0 },      /* IA32_XSS components */
    { 0x14, 0, EBX, 0 },       { 0x14, 0, ECX, 0 },     { 0x24, 0, EBX, 0 },
    { 0x40000001, 0, EAX, 0 },
    { 0x80000001, 0, ECX, 0 }, { 0x80000001, 0, EDX, 0 },
    { 0x80000007, 0, EDX, 0 }, { 0x80000008, 0, EBX, 0 },
    { 0x8000000a, 0, EDX, 0 }, { 0x80000021, 0, EAX, 0 },
};

/* Names for the features a user is most likely to meet in a refusal. */
static const struct {
    uint32_t leaf, index;
    unsigned reg, bit;
    const char *name;
} names[] = {
    { 1, 0, ECX, 0, "sse3" },        { 1, 0, ECX, 1, "pclmulqdq" },   { 1, 0, ECX, 9, "ssse3" },
    { 1, 0, ECX, 12, "fma" },        { 1, 0, ECX, 13, "cx16" },       { 1, 0, ECX, 19, "sse4.1" },
    { 1, 0, ECX, 20, "sse4.2" },     { 1, 0, ECX, 21, "x2apic" },     { 1, 0, ECX, 22, "movbe" },
    { 1, 0, ECX, 23, "popcnt" },     { 1, 0, ECX, 24, "tsc-deadline" }, { 1, 0, ECX, 25, "aes" },
    { 1, 0, ECX, 26, "xsave" },      { 1, 0, ECX, 28, "avx" },        { 1, 0, ECX, 29, "f16c" },
    { 1, 0, ECX, 30, "rdrand" },     { 1, 0, EDX, 0, "fpu" },         { 1, 0, EDX, 4, "tsc" },
    { 1, 0, EDX, 25, "sse" },        { 1, 0, EDX, 26, "sse2" },       { 7, 0, EBX, 0, "fsgsbase" },
    { 7, 0, EBX, 3, "bmi1" },        { 7, 0, EBX, 5, "avx2" },        { 7, 0, EBX, 7, "smep" },
    { 7, 0, EBX, 8, "bmi2" },        { 7, 0, EBX, 9, "erms" },        { 7, 0, EBX, 16, "avx512f" },
    { 7, 0, EBX, 17, "avx512dq" },   { 7, 0, EBX, 18, "rdseed" },     { 7, 0, EBX, 19, "adx" },
    { 7, 0, EBX, 20, "smap" },       { 7, 0, EBX, 28, "avx512cd" },   { 7, 0, EBX, 29, "sha-ni" },
    { 7, 0, EBX, 30, "avx512bw" },   { 7, 0, EBX, 31, "avx512vl" },   { 7, 0, ECX, 1, "avx512vbmi" },
    { 7, 0, ECX, 2, "umip" },        { 7, 0, ECX, 3, "pku" },         { 7, 0, ECX, 8, "gfni" },
    { 7, 0, ECX, 9, "vaes" },        { 7, 0, ECX, 10, "vpclmulqdq" }, { 7, 0, ECX, 11, "avx512vnni" },
    { 7, 0, ECX, 22, "rdpid" },      { 7, 0, EDX, 4, "fsrm" },        { 7, 0, EDX, 14, "serialize" },
    { 7, 0, EDX, 24, "amx-tile" },   { 0xd, 0, EAX, 2, "xcr0.avx" },  { 0xd, 0, EAX, 5, "xcr0.opmask" },
    { 0xd, 0, EAX, 6, "xcr0.zmm_hi256" }, { 0xd, 0, EAX, 7, "xcr0.hi16_zmm" },
    { 0xd, 0, EAX, 9, "xcr0.pkru" }, { 0xd, 0, EAX, 17, "xcr0.xtilecfg" },
    { 0xd, 0, EAX, 18, "xcr0.xtiledata" }, { 0xd, 1, EAX, 0, "xsaveopt" },
    { 0xd, 1, EAX, 1, "xsavec" },    { 0xd, 1, EAX, 3, "xsaves" },
    { 0x80000001, 0, ECX, 0, "lahf_lm" }, { 0x80000001, 0, ECX, 5, "abm" },
    { 0x80000001, 0, EDX, 11, "syscall" }, { 0x80000001, 0, EDX, 20, "nx" },
    { 0x80000001, 0, EDX, 26, "pdpe1gb" }, { 0x80000001, 0, EDX, 27, "rdtscp" },
    { 0x80000001, 0, EDX, 29, "lm" }, { 0x80000007, 0, EDX, 8, "invtsc" },
    { 0x40000001, 0, EAX, 3, "kvmclock2" },
};

/* Masking the first takes the second with it. */
static const struct {
    const char *feature, *dependent;
} depends[] = {
    { "xsave", "avx" },        { "xsave", "xsaveopt" },       { "xsave", "xsavec" },
    { "xsave", "xsaves" },     { "xsave", "pku" },            { "xsave", "amx-tile" },
    { "avx", "avx2" },         { "avx", "fma" },              { "avx", "f16c" },
    { "avx", "avx512f" },      { "avx", "vaes" },             { "avx", "vpclmulqdq" },
    { "avx", "xcr0.avx" },     { "avx512f", "avx512dq" },     { "avx512f", "avx512cd" },
    { "avx512f", "avx512bw" }, { "avx512f", "avx512vl" },     { "avx512f", "avx512vbmi" },
    { "avx512f", "avx512vnni" }, { "avx512f", "xcr0.opmask" }, { "avx512f", "xcr0.zmm_hi256" },
    { "avx512f", "xcr0.hi16_zmm" }, { "pku", "xcr0.pkru" },   { "amx-tile", "xcr0.xtilecfg" },
    { "amx-tile", "xcr0.xtiledata" }, { "sse", "sse2" },      { "sse2", "sse3" },
    { "sse3", "ssse3" },       { "ssse3", "sse4.1" },         { "sse4.1", "sse4.2" },
    { "sse2", "aes" },         { "sse2", "pclmulqdq" },       { "sse2", "sha-ni" },
    { "sse2", "gfni" },
};

static int name_index(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i].name) == len && !strncmp(names[i].name, name, len))
            return (int)i;
    return -1;
}

static int add_mask(struct cpu_model_spec *s, int ni, struct gw_error *err)
{
    for (unsigned i = 0; i < s->nmask; i++)
        if (s->mask[i].leaf == names[ni].leaf && s->mask[i].index == names[ni].index &&
            s->mask[i].reg == names[ni].reg && s->mask[i].bit == names[ni].bit)
            return 0;
    if (s->nmask == CPU_MODEL_MAX_MASKS)
        return gw_error_set(err, EINVAL, "--cpu: more than %d features masked",
                            CPU_MODEL_MAX_MASKS);
    s->mask[s->nmask].leaf = names[ni].leaf;
    s->mask[s->nmask].index = names[ni].index;
    s->mask[s->nmask].reg = (uint8_t)names[ni].reg;
    s->mask[s->nmask].bit = (uint8_t)names[ni].bit;
    s->nmask++;
    for (size_t d = 0; d < sizeof(depends) / sizeof(depends[0]); d++) {
        if (strcmp(depends[d].feature, names[ni].name) != 0)
            continue;
        int r = add_mask(s, name_index(depends[d].dependent, strlen(depends[d].dependent)), err);
        if (r < 0)
            return r;
    }
    return 0;
}

int cpu_model_parse(const char *spec, struct cpu_model_spec *out, struct gw_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *p = spec, *comma = strchr(spec, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len != 4 || strncmp(p, "host", 4) != 0)
        return gw_error_set(err, EINVAL, "--cpu: unknown CPU model '%.*s' (there is 'host', "
                            "with ',-FEATURE' to leave features out)", (int)len, p);
    while (comma) {
        p = comma + 1;
        comma = strchr(p, ',');
        len = comma ? (size_t)(comma - p) : strlen(p);
        if (len < 2 || p[0] != '-')
            return gw_error_set(err, EINVAL, "--cpu: '%.*s': a feature is left out with "
                                "'-FEATURE' (features cannot be added to the host's)",
                                (int)len, p);
        int ni = name_index(p + 1, len - 1);
        if (ni < 0) {
            char known[1024];
            size_t k = 0;
            for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && k < sizeof(known); i++)
                k += (size_t)snprintf(known + k, sizeof(known) - k, "%s%s", i ? " " : "",
                                      names[i].name);
            return gw_error_set(err, EINVAL, "--cpu: unknown feature '%.*s'; known: %s",
                                (int)(len - 1), p + 1, known);
        }
        int r = add_mask(out, ni, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *e, unsigned n,
                                           uint32_t leaf, uint32_t index)
{
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == leaf && e[i].index == index)
            return &e[i];
    /* An entry whose index KVM says does not matter answers every index. */
    for (unsigned i = 0; i < n; i++)
        if (e[i].function == leaf && !(e[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX))
            return &e[i];
    return NULL;
}

/* Where register `reg` sits in an entry: read by the check, cleared by
 * cpu_model_apply. */
static const size_t reg_offset[] = {
    [EAX] = offsetof(struct kvm_cpuid_entry2, eax), [EBX] = offsetof(struct kvm_cpuid_entry2, ebx),
    [ECX] = offsetof(struct kvm_cpuid_entry2, ecx), [EDX] = offsetof(struct kvm_cpuid_entry2, edx),
};

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, unsigned reg)
{
    uint32_t v;
    memcpy(&v, (const uint8_t *)e + reg_offset[reg], sizeof(v));
    return v;
}

static const char *name_of(const struct feature_word *w, unsigned bit)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].leaf == w->leaf && names[i].index == w->index && names[i].reg == w->reg &&
            names[i].bit == bit)
            return names[i].name;
    return NULL;
}

/* A leaf whose feature words depend on the index (ECX) the guest asks
 * with; the others answer every index alike. */
static bool leaf_indexed(uint32_t leaf)
{
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (words[i].leaf == leaf && words[i].index != 0)
            return true;
    return leaf == 0x14;
}

/* Does entry g answer a guest asking for (leaf, index)? A leaf whose
 * words do not depend on the index answers every index alike. */
static bool holds(const struct kvm_cpuid_entry2 *g, uint32_t leaf, uint32_t index)
{
    return g->function == leaf && (g->index == index || !leaf_indexed(leaf));
}

void cpu_model_apply(const struct cpu_model_spec *spec, struct kvm_cpuid_entry2 *e, unsigned n)
{
    for (unsigned m = 0; m < spec->nmask; m++)
        for (unsigned i = 0; i < n; i++)
            if (holds(&e[i], spec->mask[m].leaf, spec->mask[m].index)) {
                uint32_t *r = (uint32_t *)((uint8_t *)&e[i] + reg_offset[spec->mask[m].reg]);
                *r &= ~(1u << spec->mask[m].bit);
            }
}

/* The first bit of word w that guest entry g has and the host lacks. */
static int check_word(const struct kvm_cpuid_entry2 *g, const struct feature_word *w,
                      const struct kvm_cpuid_entry2 *host, unsigned host_n, struct gw_error *err)
{
    static const char reg_name[][4] = { "EAX", "EBX", "ECX", "EDX" };
    const struct kvm_cpuid_entry2 *h = find(host, host_n, w->leaf, w->index);
    uint32_t lacking = reg_of(g, w->reg) & ~w->ignored & ~(h ? reg_of(h, w->reg) : 0);
    if (!lacking)
        return 0;
    unsigned bit = (unsigned)__builtin_ctz(lacking);
    int nbits = __builtin_popcount(lacking);
    const char *nm = name_of(w, bit);
    return gw_error_set(err, EINVAL,
                        "the guest's CPU has %s%s%sCPUID leaf 0x%x index %u %s bit %u, "
                        "which KVM on this host cannot give (%d such bit%s in that word)",
                        nm ? "'" : "", nm ? nm : "", nm ? "', " : "", w->leaf, w->index,
                        reg_name[w->reg], bit, nbits, nbits == 1 ? "" : "s");
}

int cpu_model_check(const struct kvm_cpuid_entry2 *guest, unsigned n,
                    const struct kvm_cpuid_entry2 *host, unsigned host_n, struct gw_error *err)
{
    /* Physical address bits (0x80000008 EAX[7:0]): the guest may have
     * page tables and MTRRs that use every one of its bits. */
    const struct kvm_cpuid_entry2 *gw = find(guest, n, 0x80000008, 0);
    const struct kvm_cpuid_entry2 *hw = find(host, host_n, 0x80000008, 0);
    if (gw && hw && (gw->eax & 0xff) > (hw->eax & 0xff))
        return gw_error_set(err, EINVAL,
                            "the guest's CPU has %u physical address bits, KVM on this host "
                            "gives %u", gw->eax & 0xff, hw->eax & 0xff);
    for (unsigned gi = 0; gi < n; gi++) {
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            if (!holds(&guest[gi], words[i].leaf, words[i].index))
                continue;
            int r = check_word(&guest[gi], &words[i], host, host_n, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

bool cpu_model_invtsc(const struct kvm_cpuid_entry2 *e, unsigned n)
{
    const struct kvm_cpuid_entry2 *x = find(e, n, 0x80000007, 0);
    return x && (x->edx & (1u << 8));
}

enum cpu_tsc_plan cpu_model_tsc_plan(uint32_t guest_khz, uint32_t host_khz, bool can_scale,
                                     bool invtsc)
{
    if (guest_khz == 0)
        return CPU_TSC_KEEP;
    if (can_scale || cpu_model_tsc_same(guest_khz, host_khz))
        return CPU_TSC_SET;
    return invtsc ? CPU_TSC_REFUSE : CPU_TSC_WARN;
}

int cpu_model_tsc_refusal(uint32_t guest_khz, uint32_t host_khz, struct gw_error *err)
{
    return gw_error_set(err, EINVAL,
                        "the guest's TSC runs at %u kHz, this host's at %u kHz, and KVM here "
                        "cannot scale it; the guest was told its TSC is invariant",
                        guest_khz, host_khz);
}

bool cpu_model_tsc_same(uint32_t a_khz, uint32_t b_khz)
{
    if (a_khz == 0 || b_khz == 0)
        return true;
    uint64_t d = a_khz > b_khz ? a_khz - b_khz : b_khz - a_khz;
    return d * 1000000ULL <= 250ULL * b_khz;
}
