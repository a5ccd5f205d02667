/* Debian 12's real kernels (fetched by mk/fetch-kernels.sh into
 * build/kernels/, or $GODWIT_KERNEL_DIR): setup header, payload
 * decompression, vmlinux and the whole bzImage load. Skipped visibly when
 * the files are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/boot_internal.h"
#include "boot/bzimage.h"
#include "boot/elf_load.h"
#include "common/log.h"

static void check_kernel(const char *name)
{
    const char *dir = getenv("GODWIT_KERNEL_DIR") ? getenv("GODWIT_KERNEL_DIR") : "build/kernels";
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s absent (run mk/fetch-kernels.sh %s)\n", path, dir);
        skip();
    }
    struct gw_error err;
    gw_error_init(&err);
    uint8_t *k, *v;
    size_t len, vlen;
    struct bzimage_info bi;
    struct elf_info ei;
    assert_int_equal(boot_read_file(path, &k, &len, 1u << 30, &err), 0);
    if (bzimage_parse(k, len, &bi, &err) < 0 || bzimage_extract(k, len, &bi, &v, &vlen, &err) < 0 ||
        elf_parse(v, vlen, &ei, &err) < 0)
        fail_msg("%s: %s", path, err.msg);
    printf("%s: %zu bytes, boot protocol %u.%02u, %s payload %u bytes, init_size 0x%x, "
           "vmlinux %zu bytes ELF%d, entry 0x%llx (phys 0x%llx), loads 0x%llx-0x%llx\n", name, len,
           bi.version >> 8, bi.version & 0xff, bi.compression, bi.payload_length, bi.init_size,
           vlen, ei.is64 ? 64 : 32, (unsigned long long)ei.entry,
           (unsigned long long)ei.entry_phys, (unsigned long long)ei.low,
           (unsigned long long)ei.high);
    assert_true(bi.version >= 0x20c);
    assert_true(bi.xloadflags & XLF_KERNEL_64);
    assert_non_null(bi.compression);
    assert_true(ei.is64);
    assert_int_equal(ei.entry_phys, bi.pref_address); /* startup_64 at LOAD_PHYSICAL_ADDR */
    assert_true(ei.high - ei.low <= bi.init_size);

    struct guest_ram ram;
    assert_int_equal(guest_ram_init(&ram, 512ULL << 20, "t", &err), 0);
    struct boot_input in = { .kernel_path = path, .cmdline = "console=ttyS0 earlyprintk=ttyS0" };
    struct boot_result res;
    if (boot_load(&ram, &in, &res, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(res.kind, BOOT_LINUX64);
    assert_int_equal(res.regs.rip, ei.entry_phys);
    assert_memory_equal(ram.host + BOOT_ZERO_PAGE_ADDR + BZ_HEADER, "HdrS", 4);
    printf("%s: %s\n", name, res.desc);
    guest_ram_fini(&ram);
    /* Too little RAM for the kernel at 16 MiB: a clear error. */
    assert_int_equal(guest_ram_init(&ram, 32ULL << 20, "t", &err), 0);
    gw_error_init(&err);
    assert_true(boot_load(&ram, &in, &res, &err) < 0);
    assert_non_null(strstr(err.msg, "does not fit"));
    guest_ram_fini(&ram);
    free(v);
    free(k);
}

static void test_cloud(void **state) { check_kernel("vmlinuz-cloud"); }
static void test_generic(void **state) { check_kernel("vmlinuz-generic"); }

int main(void)
{
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cloud),
        cmocka_unit_test(test_generic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
