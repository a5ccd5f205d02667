/* The CPU a guest keeps across hosts (vmm/cpu_model.c): which CPUID tables
 * a destination may give a migrated guest, and which TSC rates are the
 * same clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "vmm/cpu_model.h"
#include "vmm/vcpu.h"

#define SIG KVM_CPUID_FLAG_SIGNIFCANT_INDEX

/* A host's KVM_GET_SUPPORTED_CPUID, small but shaped like a real one. */
static const struct kvm_cpuid_entry2 host[] = {
    { .function = 0, .eax = 0xd, .ebx = 0x756e6547, .ecx = 0x6c65746e, .edx = 0x49656e69 },
    { .function = 1, .eax = 0x000306c3, .ecx = 0x37fa3203u, .edx = 0x0f8bfbffu },
    { .function = 7, .index = 0, .flags = SIG, .eax = 0x21, .ebx = 0x000007abu, .ecx = 0x4,
      .edx = 0x1c000400u },
    { .function = 7, .index = 1, .flags = SIG, .eax = 0x10 },
    { .function = 0xd, .index = 0, .flags = SIG, .eax = 0x7, .ebx = 0x340, .ecx = 0x340 },
    { .function = 0xd, .index = 1, .flags = SIG, .eax = 0x1 },
    { .function = 0x40000001, .eax = 0x01007afb },
    { .function = 0x80000001, .ecx = 0x121, .edx = 0x28100800 },
    { .function = 0x80000007, .edx = 0x100 },
};
#define NHOST (sizeof(host) / sizeof(host[0]))

static struct kvm_cpuid_entry2 guest[16];

static void guest_from_host(void)
{
    struct {
        struct kvm_cpuid2 hdr;
        struct kvm_cpuid_entry2 e[16];
    } in = { .hdr.nent = NHOST }, out;
    memcpy(in.e, host, sizeof(host));
    vcpu_build_cpuid(&in.hdr, &out.hdr, 1, 2);
    memcpy(guest, out.e, sizeof(host));
}

static struct kvm_cpuid_entry2 *entry(uint32_t function, uint32_t index)
{
    for (unsigned i = 0; i < NHOST; i++)
        if (guest[i].function == function && guest[i].index == index)
            return &guest[i];
    fail_msg("no entry 0x%x.%u", function, index);
    return NULL;
}

static const char *refusal(unsigned n)
{
    static struct gw_error err;
    gw_error_init(&err);
    if (cpu_model_check(guest, n, host, NHOST, &err) != -EINVAL)
        fail_msg("the table was accepted");
    return err.msg;
}

/* The table the VMM builds from its host's, with the bits KVM changes as
 * the guest runs, is accepted by that host. */
static void test_own_table_accepted(void **state)
{
    guest_from_host();
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(guest, NHOST, host, NHOST, &err), 0);
    entry(1, 0)->ecx |= (1u << 27) | (1u << 3); /* OSXSAVE, MONITOR */
    entry(1, 0)->edx |= 1u << 9;                /* APIC */
    entry(7, 0)->ecx |= 1u << 4;                /* OSPKE */
    assert_int_equal(cpu_model_check(guest, NHOST, host, NHOST, &err), 0);
    /* A guest shown less than the host has is fine. */
    entry(7, 0)->ebx = 0;
    assert_int_equal(cpu_model_check(guest, NHOST - 1, host, NHOST, &err), 0);
}

static void test_missing_feature_named(void **state)
{
    guest_from_host();
    entry(7, 0)->ebx |= 1u << 16;
    assert_string_equal(refusal(NHOST),
                        "the guest's CPU has 'avx512f', CPUID leaf 0x7 index 0 EBX bit 16, "
                        "which KVM on this host cannot give (1 such bit in that word)");
    guest_from_host();
    entry(1, 0)->ecx |= (1u << 4) | (1u << 6); /* neither is named */
    assert_string_equal(refusal(NHOST), "the guest's CPU has CPUID leaf 0x1 index 0 ECX bit 4, "
                                        "which KVM on this host cannot give (2 such bits in "
                                        "that word)");
    guest_from_host();
    entry(0xd, 0)->eax |= 1u << 5;
    assert_non_null(strstr(refusal(NHOST), "'xcr0.opmask', CPUID leaf 0xd index 0 EAX bit 5"));
    guest_from_host();
    entry(0x80000001, 0)->edx |= 1u << 26;
    assert_non_null(strstr(refusal(NHOST), "'pdpe1gb'"));
    guest_from_host();
    entry(0x40000001, 0)->eax |= 1u << 30;
    assert_non_null(strstr(refusal(NHOST), "leaf 0x40000001 index 0 EAX bit 30"));
}

/* A word the host has no entry for at all gives nothing. */
static void test_leaf_the_host_lacks(void **state)
{
    guest_from_host();
    guest[NHOST] = (struct kvm_cpuid_entry2){ .function = 0x80000008, .ebx = 1u << 9 };
    assert_non_null(strstr(refusal(NHOST + 1), "leaf 0x80000008 index 0 EBX bit 9"));
    /* Leaves that hold no feature bits are carried, not compared. */
    guest[NHOST] = (struct kvm_cpuid_entry2){ .function = 4, .eax = 0xffffffff };
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(guest, NHOST + 1, host, NHOST, &err), 0);
}

/* A host entry without the significant-index flag answers every index;
 * one with it answers its own only. */
static void test_index_matching(void **state)
{
    guest_from_host();
    entry(7, 1)->eax = 0x10;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(guest, NHOST, host, NHOST, &err), 0);
    /* bit 5 is in the host's 7.0 EAX, not its 7.1 EAX: leaf 7's words
     * depend on the index */
    entry(7, 1)->eax = 0x30;
    assert_non_null(strstr(refusal(NHOST), "leaf 0x7 index 1 EAX bit 5"));
    /* A leaf whose words do not depend on the index is compared whatever
     * index the guest's entry has: a guest asking with that index would
     * see it. */
    guest_from_host();
    guest[NHOST] = (struct kvm_cpuid_entry2){ .function = 0x80000001, .index = 3,
                                              .flags = SIG, .ecx = 0x1 };
    assert_int_equal(cpu_model_check(guest, NHOST + 1, host, NHOST, &err), 0);
    guest[NHOST].ecx = 0x2;
    assert_non_null(strstr(refusal(NHOST + 1), "leaf 0x80000001 index 0 ECX bit 1"));
}

static void test_invtsc(void **state)
{
    guest_from_host();
    assert_true(cpu_model_invtsc(guest, NHOST));
    entry(0x80000007, 0)->edx = 0;
    assert_false(cpu_model_invtsc(guest, NHOST));
    assert_false(cpu_model_invtsc(guest, 3)); /* no leaf 0x80000007 */
}

static void test_tsc_same(void **state)
{
    assert_true(cpu_model_tsc_same(2400000, 2400000));
    assert_true(cpu_model_tsc_same(2400600, 2400000));  /* 250 ppm */
    assert_false(cpu_model_tsc_same(2400601, 2400000));
    assert_true(cpu_model_tsc_same(2399400, 2400000));
    assert_false(cpu_model_tsc_same(2399399, 2400000));
    assert_false(cpu_model_tsc_same(3000000, 2400000));
    assert_true(cpu_model_tsc_same(0, 2400000));
    assert_true(cpu_model_tsc_same(2400000, 0));
    assert_false(cpu_model_tsc_same(UINT32_MAX, 1));
}

/* Decided before any ioctl: KVM_SET_TSC_KHZ whenever KVM will take it
 * (the same clock within its tolerance: no scaling, but the vCPU then
 * reports the guest's rate), refused only for an invariant TSC. */
static void test_tsc_plan(void **state)
{
    assert_int_equal(cpu_model_tsc_plan(0, 2400000, false, true), CPU_TSC_KEEP);
    assert_int_equal(cpu_model_tsc_plan(2400000, 2400000, false, true), CPU_TSC_SET);
    assert_int_equal(cpu_model_tsc_plan(2400500, 2400000, false, true), CPU_TSC_SET);
    assert_int_equal(cpu_model_tsc_plan(3000000, 2400000, true, true), CPU_TSC_SET);
    assert_int_equal(cpu_model_tsc_plan(1200000, 2400000, true, false), CPU_TSC_SET);
    /* Higher or lower, without scaling: KVM's catch-up mode for a higher
     * rate is not a rate. */
    assert_int_equal(cpu_model_tsc_plan(3000000, 2400000, false, false), CPU_TSC_WARN);
    assert_int_equal(cpu_model_tsc_plan(1200000, 2400000, false, false), CPU_TSC_WARN);
    assert_int_equal(cpu_model_tsc_plan(3000000, 2400000, false, true), CPU_TSC_REFUSE);
    assert_int_equal(cpu_model_tsc_plan(1200000, 2400000, false, true), CPU_TSC_REFUSE);
    /* This host's rate unknown: KVM decides. */
    assert_int_equal(cpu_model_tsc_plan(1200000, 0, false, true), CPU_TSC_SET);
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_tsc_refusal(3000000, 2400000, &err), -EINVAL);
    assert_string_equal(err.msg, "the guest's TSC runs at 3000000 kHz, this host's at 2400000 "
                                 "kHz, and KVM here cannot scale it; the guest was told its TSC "
                                 "is invariant");
}

/* The guest's physical address width may not exceed the host's; the
 * later feature words are compared too. */
static void test_address_bits_and_late_words(void **state)
{
    static const struct kvm_cpuid_entry2 h[] = {
        { .function = 0x80000008, .eax = 0x3027 }, /* 39 bits */
        { .function = 0x80000021, .eax = 0x45 },
        { .function = 7, .index = 2, .flags = SIG, .edx = 0x1 },
    };
    struct kvm_cpuid_entry2 g[3];
    memcpy(g, h, sizeof(h));
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(g, 3, h, 3, &err), 0);
    g[0].eax = 0x3026; /* fewer bits is fine */
    assert_int_equal(cpu_model_check(g, 3, h, 3, &err), 0);
    g[0].eax = 0x302e; /* 46 */
    assert_int_equal(cpu_model_check(g, 3, h, 3, &err), -EINVAL);
    assert_string_equal(err.msg, "the guest's CPU has 46 physical address bits, KVM on this host "
                                 "gives 39");
    memcpy(g, h, sizeof(h));
    g[1].eax |= 1u << 8;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(g, 3, h, 3, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "leaf 0x80000021 index 0 EAX bit 8"));
    memcpy(g, h, sizeof(h));
    g[2].edx |= 1u << 3;
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(g, 3, h, 3, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "leaf 0x7 index 2 EDX bit 3"));
}

static bool masks(const struct cpu_model_spec *s, uint32_t leaf, uint32_t index, unsigned reg,
                  unsigned bit)
{
    for (unsigned i = 0; i < s->nmask; i++)
        if (s->mask[i].leaf == leaf && s->mask[i].index == index && s->mask[i].reg == reg &&
            s->mask[i].bit == bit)
            return true;
    return false;
}

/* --cpu host,-FEATURE...: what it leaves out, with what depends on it. */
static void test_cpu_spec(void **state)
{
    struct cpu_model_spec s;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(cpu_model_parse("host", &s, &err), 0);
    assert_int_equal(s.nmask, 0);
    assert_int_equal(cpu_model_parse("host,-invtsc", &s, &err), 0);
    assert_int_equal(s.nmask, 1);
    assert_true(masks(&s, 0x80000007, 0, CPU_EDX, 8));
    assert_int_equal(cpu_model_parse("host,-avx512f,-avx512bw", &s, &err), 0);
    assert_true(masks(&s, 7, 0, CPU_EBX, 16) && masks(&s, 7, 0, CPU_EBX, 30) && masks(&s, 7, 0, CPU_EBX, 31));
    assert_true(masks(&s, 0xd, 0, CPU_EAX, 5) && masks(&s, 0xd, 0, CPU_EAX, 6) && masks(&s, 0xd, 0, CPU_EAX, 7));
    assert_false(masks(&s, 7, 0, CPU_EBX, 5)); /* avx2 stays */
    unsigned n = s.nmask;
    assert_int_equal(cpu_model_parse("host,-avx512bw,-avx512f", &s, &err), 0);
    assert_int_equal(s.nmask, n); /* each bit once, whatever the order */
    /* avx takes the AVX family and its XSAVE state with it */
    assert_int_equal(cpu_model_parse("host,-avx", &s, &err), 0);
    assert_true(masks(&s, 1, 0, CPU_ECX, 28) && masks(&s, 7, 0, CPU_EBX, 5) && masks(&s, 1, 0, CPU_ECX, 12));
    assert_true(masks(&s, 7, 0, CPU_EBX, 16) && masks(&s, 0xd, 0, CPU_EAX, 2) && masks(&s, 0xd, 0, CPU_EAX, 7));
    assert_false(masks(&s, 1, 0, CPU_ECX, 20)); /* sse4.2 stays */

    static const struct { const char *spec, *want; } bad[] = {
        { "max", "--cpu: unknown CPU model 'max'" },
        { "", "--cpu: unknown CPU model ''" },
        { "host,+avx", "--cpu: '+avx': a feature is left out with '-FEATURE'" },
        { "host,-", "--cpu: '-': a feature is left out" },
        { "host,,-avx", "--cpu: '': a feature is left out" },
        { "host,-avx5", "--cpu: unknown feature 'avx5'; known: sse3 " },
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        gw_error_init(&err);
        assert_int_equal(cpu_model_parse(bad[i].spec, &s, &err), -EINVAL);
        if (strncmp(err.msg, bad[i].want, strlen(bad[i].want)))
            fail_msg("%s: \"%s\", want \"%s...\"", bad[i].spec, err.msg, bad[i].want);
    }

    /* Applied to the VMM's table: the bits go, the rest stays; the result
     * passes this host's check (a subset of what it gives). */
    guest_from_host();
    assert_int_equal(cpu_model_parse("host,-avx2,-invtsc,-sse3", &s, &err), 0);
    cpu_model_apply(&s, guest, NHOST);
    assert_int_equal(entry(7, 0)->ebx, host[2].ebx & ~(1u << 5));
    assert_int_equal(entry(0x80000007, 0)->edx, 0);
    assert_int_equal(entry(1, 0)->ecx & 0x201u, 0);          /* sse3 and ssse3 */
    assert_int_equal(entry(1, 0)->ecx & (1u << 19), 0);       /* sse4.1 */
    assert_int_equal(entry(1, 0)->eax, host[1].eax);
    assert_false(cpu_model_invtsc(guest, NHOST));
    gw_error_init(&err);
    assert_int_equal(cpu_model_check(guest, NHOST, host, NHOST, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_table_accepted),
        cmocka_unit_test(test_missing_feature_named),
        cmocka_unit_test(test_leaf_the_host_lacks),
        cmocka_unit_test(test_index_matching),
        cmocka_unit_test(test_invtsc),
        cmocka_unit_test(test_tsc_same),
        cmocka_unit_test(test_tsc_plan),
        cmocka_unit_test(test_address_bits_and_late_words),
        cmocka_unit_test(test_cpu_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
