#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "migration/uri.h"

static void test_good(void **state)
{
    struct mig_uri u;
    struct gw_error err;
    gw_error_init(&err);
    assert_int_equal(mig_uri_parse("tcp:10.0.0.2:4444", &u, &err), 0);
    assert_int_equal(u.kind, MIG_URI_TCP);
    assert_string_equal(u.host, "10.0.0.2");
    assert_string_equal(u.port, "4444");
    assert_int_equal(mig_uri_parse("tcp:[::1]:80", &u, &err), 0);
    assert_string_equal(u.host, "::1");
    char buf[64];
    mig_uri_format(&u, buf, sizeof(buf));
    assert_string_equal(buf, "tcp:[::1]:80");
    assert_int_equal(mig_uri_parse("tcp::5555", &u, &err), 0);
    assert_string_equal(u.host, "");
    assert_int_equal(mig_uri_parse("unix:/tmp/x.sock", &u, &err), 0);
    assert_int_equal(u.kind, MIG_URI_UNIX);
    assert_string_equal(u.path, "/tmp/x.sock");
    assert_int_equal(mig_uri_parse("file:/var/save.gw", &u, &err), 0);
    assert_int_equal(u.kind, MIG_URI_FILE);
}

static void test_bad(void **state)
{
    struct mig_uri u;
    const char *bad[] = { "tcp:host", "tcp:host:", "tcp:host:99999", "tcp:host:12a",
                          "tcp:::1:80", "tcp:[::1]80", "unix:", "file:", "exec:cat",
                          "rdma:1.2.3.4:5", "" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct gw_error err;
        gw_error_init(&err);
        assert_int_equal(mig_uri_parse(bad[i], &u, &err), -EINVAL);
        assert_true(strlen(err.msg) > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
