#include "vmm/cpu_model.h"

#include <errno.h>
#include <stddef.h>

enum { EAX, EBX, ECX, EDX };

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
    { 7, 1, EAX, 0 },          { 7, 1, EDX, 0 },
    { 0xd, 0, EAX, 0 },        { 0xd, 0, EDX, 0 },      { 0xd, 1, EAX, 0 },
    { 0x14, 0, EBX, 0 },       { 0x14, 0, ECX, 0 },
    { 0x40000001, 0, EAX, 0 },
    { 0x80000001, 0, ECX, 0 }, { 0x80000001, 0, EDX, 0 },
    { 0x80000007, 0, EDX, 0 }, { 0x80000008, 0, EBX, 0 },
    { 0x8000000a, 0, EDX, 0 },
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

static uint32_t reg_of(const struct kvm_cpuid_entry2 *e, unsigned reg)
{
    switch (reg) {
    case EAX: return e->eax;
    case EBX: return e->ebx;
    case ECX: return e->ecx;
    default: return e->edx;
    }
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

/* Which feature word entry g holds in register w->reg, if any. */
static bool holds(const struct kvm_cpuid_entry2 *g, const struct feature_word *w)
{
    return g->function == w->leaf && (g->index == w->index || !leaf_indexed(w->leaf));
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
    for (unsigned gi = 0; gi < n; gi++) {
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            if (!holds(&guest[gi], &words[i]))
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

bool cpu_model_tsc_same(uint32_t a_khz, uint32_t b_khz)
{
    if (a_khz == 0 || b_khz == 0)
        return true;
    uint64_t d = a_khz > b_khz ? a_khz - b_khz : b_khz - a_khz;
    return d * 1000000ULL <= 250ULL * b_khz;
}
