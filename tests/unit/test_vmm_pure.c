/* Unit tests for the VMM's pure parts: run states, options, CPUID build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/options.h"
#include "vmm/runstate.h"
#include "vmm/vmm_mig_rules.h"
#include "vmm/vcpu.h"

static void test_runstate_names(void **state)
{
    for (int s = 0; s < RUNSTATE__MAX; s++)
        assert_int_equal(runstate_from_name(runstate_name((enum runstate)s)), s);
    assert_int_equal(runstate_from_name("bogus"), -1);
    assert_string_equal(runstate_name(RUNSTATE_POSTMIGRATE), "postmigrate");
    assert_string_equal(runstate_name(RUNSTATE_INTERNAL_ERROR), "internal-error");
}

static void test_runstate_transitions(void **state)
{
    assert_true(runstate_transition_ok(RUNSTATE_RUNNING, RUNSTATE_PAUSED));
    assert_true(runstate_transition_ok(RUNSTATE_PAUSED, RUNSTATE_RUNNING));
    assert_true(runstate_transition_ok(RUNSTATE_INMIGRATE, RUNSTATE_RUNNING));
    assert_true(runstate_transition_ok(RUNSTATE_FINISH_MIGRATE, RUNSTATE_POSTMIGRATE));
    /* A guest that powered off cannot be migrated in or be in error again. */
    assert_false(runstate_transition_ok(RUNSTATE_SHUTDOWN, RUNSTATE_INMIGRATE));
    assert_false(runstate_transition_ok(RUNSTATE_RUNNING, RUNSTATE_INMIGRATE));
    assert_false(runstate_transition_ok(RUNSTATE_POSTMIGRATE, RUNSTATE_INMIGRATE));
    assert_false(runstate_transition_ok(RUNSTATE__MAX, RUNSTATE_RUNNING));
}

static int parse(struct vmm_options *o, struct gw_error *err, ...)
{
    char *argv[32] = { "godwit-vmm" };
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL;)
        argv[argc++] = a;
    va_end(ap);
    gw_error_init(err);
    FILE *null = fopen("/dev/null", "w");
    int r = vmm_options_parse(o, argc, argv, null, err);
    fclose(null);
    return r;
}

static void test_options_good(void **state)
{
    struct vmm_options o;
    struct gw_error err;
    assert_int_equal(parse(&o, &err, "--memory", "1024", "--vcpus", "2", "--test-guest",
                           "--cmdline", "workload=fpu", "--name", "vm1", "--qmp", "/tmp/q",
                           NULL), 0);
    assert_int_equal(o.memory_mib, 1024);
    assert_int_equal(o.vcpus, 2);
    assert_true(o.test_guest);
    assert_string_equal(o.cmdline, "workload=fpu");
    assert_string_equal(o.serial, "stdio");
    assert_int_equal(parse(&o, &err, "--incoming", NULL), 0);
    assert_true(o.incoming);
    assert_int_equal(parse(&o, &err, "--help", NULL), 1);
    assert_int_equal(parse(&o, &err, "--test-guest", "--uuid",
                           "0123ABCD-4567-89ab-cdef-0123456789AB", NULL), 0);
    assert_int_equal(o.uuid[0], 0x01);
    assert_int_equal(o.uuid[15], 0xab);
    char buf[37];
    vmm_uuid_format(o.uuid, buf);
    assert_string_equal(buf, "0123abcd-4567-89ab-cdef-0123456789ab");
    assert_int_equal(o.cpu.nmask, 0); /* the host's CPU by default */
    assert_int_equal(parse(&o, &err, "--test-guest", "--cpu", "host,-invtsc", NULL), 0);
    assert_int_equal(o.cpu.nmask, 1);
    assert_int_equal(o.cpu.mask[0].leaf, 0x80000007);
}

static void test_options_bad(void **state)
{
    struct vmm_options o;
    struct gw_error err;
    assert_int_equal(parse(&o, &err, "--memory", "abc", "--test-guest", NULL), -EINVAL);
    assert_non_null(strstr(err.msg, "--memory"));
    assert_int_equal(parse(&o, &err, "--memory", "-5", "--test-guest", NULL), -EINVAL);
    assert_int_equal(parse(&o, &err, "--memory", "3", "--test-guest", NULL), -EINVAL);
    assert_int_equal(parse(&o, &err, "--vcpus", "0", "--test-guest", NULL), -EINVAL);
    assert_int_equal(parse(&o, &err, "--bogus", NULL), -EINVAL);
    assert_non_null(strstr(err.msg, "--bogus"));
    assert_int_equal(parse(&o, &err, NULL), -EINVAL);
    assert_non_null(strstr(err.msg, "nothing to boot"));
    assert_int_equal(parse(&o, &err, "--test-guest", "--kernel", "x", NULL), -EINVAL);
    assert_int_equal(parse(&o, &err, "--test-guest", "--memory", NULL), -EINVAL);
    assert_non_null(strstr(err.msg, "needs an argument"));
    assert_int_equal(parse(&o, &err, "--test-guest", "extra", NULL), -EINVAL);
    assert_int_equal(parse(&o, &err, "--test-guest", "--cpu", "host,+avx", NULL), -EINVAL);
    assert_non_null(strstr(err.msg, "--cpu: '+avx'"));
    const char *bad_uuids[] = { "", "0123abcd-4567-89ab-cdef-0123456789a", "0123abcd-4567-89ab-cdef"
                                "-0123456789abc", "0123abcdx4567-89ab-cdef-0123456789ab",
                                "0123abcd-4567-89ab-cdef-0123456789ag" };
    for (unsigned i = 0; i < sizeof(bad_uuids) / sizeof(bad_uuids[0]); i++) {
        assert_int_equal(parse(&o, &err, "--test-guest", "--uuid", bad_uuids[i], NULL), -EINVAL);
        assert_non_null(strstr(err.msg, "--uuid"));
    }
}

static void test_cpuid_apic_ids(void **state)
{
    size_t sz = sizeof(struct kvm_cpuid2) + 3 * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *in = calloc(1, sz), *out = calloc(1, sz);
    in->nent = 3;
    in->entries[0].function = 1;
    in->entries[0].ebx = 0xff00abcd;
    in->entries[1].function = 7;
    in->entries[1].edx = 1u << 29 | 1u << 4;
    in->entries[2].function = 0xb;
    vcpu_build_cpuid(in, out, 3, 4);
    assert_int_equal(out->nent, 3);
    assert_int_equal(out->entries[0].ebx >> 24, 3);
    assert_int_equal((out->entries[0].ebx >> 16) & 0xff, 4);
    assert_int_equal(out->entries[0].ebx & 0xffff, 0xabcd);
    assert_true(out->entries[0].ecx & (1u << 31));
    assert_int_equal(out->entries[1].edx, 1u << 4);
    assert_int_equal(out->entries[2].edx, 3);
    free(in);
    free(out);
}

/* Source: who owns the guest after a migration. */
static void test_mig_handed_over(void **state)
{
    struct vmm_mig_facts f = { .status = MIG_COMPLETED, .run = RUNSTATE_POSTMIGRATE };
    assert_false(vmm_mig_handed_over(&f)); /* pre-copy: `cont` may run the source again */
    f.postcopy_started = true;
    assert_true(vmm_mig_handed_over(&f)); /* post-copy completed */
    f.status = MIG_FAILED;
    assert_true(vmm_mig_handed_over(&f)); /* failed after the hand-over: still the destination's */
    f.status = MIG_POSTCOPY_PAUSED;
    assert_true(vmm_mig_handed_over(&f));
    f.incoming = true;
    assert_false(vmm_mig_handed_over(&f)); /* the destination runs it */
}

/* Destination: may guest memory be touched (pmemsave, system_reset)? */
static void test_mig_memory_incomplete(void **state)
{
    struct vmm_mig_facts f = { .incoming = true, .status = MIG_POSTCOPY_PAUSED,
                               .postcopy_started = true, .run = RUNSTATE_RUNNING };
    assert_true(vmm_mig_memory_incomplete(&f));
    f.status = MIG_POSTCOPY_ACTIVE;
    assert_true(vmm_mig_memory_incomplete(&f));
    f.status = MIG_FAILED; /* the source was lost */
    f.run = RUNSTATE_INTERNAL_ERROR;
    assert_true(vmm_mig_memory_incomplete(&f));
    f.status = MIG_COMPLETED;
    f.run = RUNSTATE_RUNNING;
    assert_false(vmm_mig_memory_incomplete(&f)); /* every page is here */
    f.uffd_held = true;
    assert_true(vmm_mig_memory_incomplete(&f));
    f = (struct vmm_mig_facts){ .incoming = true, .status = MIG_FAILED, .run = RUNSTATE_INMIGRATE };
    assert_false(vmm_mig_memory_incomplete(&f)); /* a pre-copy that failed: discarded */
    f.status = MIG_ACTIVE;
    assert_true(vmm_mig_memory_incomplete(&f));
    f = (struct vmm_mig_facts){ .status = MIG_POSTCOPY_PAUSED, .postcopy_started = true };
    assert_false(vmm_mig_memory_incomplete(&f)); /* the source has all of it */
}

/* A reset or power-off the guest asked for, during and after migrations. */
static void test_mig_guest_request(void **state)
{
    bool cancel;
    struct vmm_mig_facts f = { .status = MIG_NONE, .run = RUNSTATE_RUNNING };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_GO);
    assert_false(cancel);
    /* Live pre-copy: the reset cancels it and waits for its end. */
    f.status = MIG_ACTIVE;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_LATER);
    assert_true(cancel);
    f.status = MIG_DEVICE;
    f.run = RUNSTATE_FINISH_MIGRATE;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_LATER);
    assert_true(cancel);
    /* Too late to cancel: the hand-over decides. */
    f.committing = true;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_LATER);
    assert_false(cancel);
    assert_int_equal(vmm_mig_guest_request(&f, false, &cancel), MACHINE_LATER);
    /* Cancelling already: wait for the end, cancel nothing more. */
    f = (struct vmm_mig_facts){ .status = MIG_CANCELLING, .run = RUNSTATE_RUNNING };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_LATER);
    assert_false(cancel);
    /* Ended without a hand-over: the reset goes ahead. */
    f.status = MIG_CANCELLED;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_GO);
    f.status = MIG_FAILED;
    assert_int_equal(vmm_mig_guest_request(&f, false, &cancel), MACHINE_GO);
    /* Handed over: dropped, the guest lives on the destination. */
    f = (struct vmm_mig_facts){ .status = MIG_COMPLETED, .run = RUNSTATE_POSTMIGRATE };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_DROP);
    assert_int_equal(vmm_mig_guest_request(&f, false, &cancel), MACHINE_DROP);
    f = (struct vmm_mig_facts){ .status = MIG_POSTCOPY_ACTIVE, .postcopy_started = true,
                                .run = RUNSTATE_POSTMIGRATE };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_DROP);
    assert_false(cancel);
    /* Pre-copy completed, then `cont` on the source: its own guest again. */
    f = (struct vmm_mig_facts){ .status = MIG_COMPLETED, .run = RUNSTATE_RUNNING };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_GO);
    /* Destination: a reset waits for the last page, or is dropped once
     * the source is lost; a power-off goes ahead. */
    f = (struct vmm_mig_facts){ .incoming = true, .status = MIG_POSTCOPY_PAUSED,
                                .postcopy_started = true, .run = RUNSTATE_RUNNING };
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_LATER);
    assert_int_equal(vmm_mig_guest_request(&f, false, &cancel), MACHINE_GO);
    f.status = MIG_FAILED;
    f.run = RUNSTATE_INTERNAL_ERROR;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_DROP);
    f.status = MIG_COMPLETED;
    f.run = RUNSTATE_RUNNING;
    assert_int_equal(vmm_mig_guest_request(&f, true, &cancel), MACHINE_GO);
    assert_false(cancel);
}

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runstate_names),
        cmocka_unit_test(test_runstate_transitions),
        cmocka_unit_test(test_mig_handed_over),
        cmocka_unit_test(test_mig_memory_incomplete),
        cmocka_unit_test(test_mig_guest_request),
        cmocka_unit_test(test_options_good),
        cmocka_unit_test(test_options_bad),
        cmocka_unit_test(test_cpuid_apic_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
