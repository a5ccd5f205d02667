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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_table_accepted),
        cmocka_unit_test(test_missing_feature_named),
        cmocka_unit_test(test_leaf_the_host_lacks),
        cmocka_unit_test(test_index_matching),
        cmocka_unit_test(test_invtsc),
        cmocka_unit_test(test_tsc_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
