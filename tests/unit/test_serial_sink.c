/* COM1's host side (src/vmm/serial_sink.c): bytes in order, a reader that
 * stops costs bytes (counted), never a caller that waits, and freeing the
 * sink returns while the reader still does not read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "vmm/serial_sink.h"

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + i / 251); }

/* Everything the pipe holds now (its writer gone or idle). */
static size_t drain(int fd, uint8_t *buf, size_t cap)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    fcntl(fd, F_SETFL, fl);
    return n;
}

static void test_bytes_in_order(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct serial_sink *s = serial_sink_new(p[1]);
    assert_non_null(s);
    enum { N = 20000 };
    for (size_t i = 0; i < N; i++)
        serial_sink_put(s, pattern(i));
    serial_sink_free(s, 5000); /* the pipe (64 KiB) takes them all */
    uint8_t *got = malloc(N + 1);
    assert_int_equal(drain(p[0], got, N + 1), N);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(got[i], pattern(i));
    free(got);
    close(p[0]);
    close(p[1]);
}

/* The reader never reads: puts go on (bytes past the queue and the pipe
 * are dropped, counted), freeing returns, and what the pipe got is the
 * start of the output, in order. (The UART's hook used to write(2) itself
 * and wait for the reader, with the UART's lock held.) */
static void test_stalled_reader_costs_bytes_not_waits(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_true(fcntl(p[1], F_SETPIPE_SZ, 4096) >= 4096);
    struct serial_sink *s = serial_sink_new(p[1]);
    assert_non_null(s);
    const size_t total = SERIAL_SINK_CAP + 3 * 65536;
    for (size_t i = 0; i < total; i++)
        serial_sink_put(s, pattern(i));
    uint64_t dropped = serial_sink_dropped(s);
    assert_true(dropped >= total - SERIAL_SINK_CAP - 65536);
    serial_sink_free(s, 100);
    size_t cap = 1 << 20;
    uint8_t *got = malloc(cap);
    size_t n = drain(p[0], got, cap);
    assert_true(n > 0 && n <= 65536);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(got[i], pattern(i));
    free(got);
    close(p[0]);
    close(p[1]);
}

/* A reader gone for good (EPIPE): everything after is dropped. */
static void test_reader_gone(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    close(p[0]);
    struct serial_sink *s = serial_sink_new(p[1]);
    assert_non_null(s);
    for (size_t i = 0; i < 10000; i++)
        serial_sink_put(s, pattern(i));
    for (int i = 0; i < 500 && serial_sink_dropped(s) < 10000; i++)
        usleep(10000);
    assert_int_equal(serial_sink_dropped(s), 10000);
    serial_sink_put(s, 0);
    assert_int_equal(serial_sink_dropped(s), 10001);
    serial_sink_free(s, 5000);
    close(p[1]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as godwit-vmm */
    gw_log_set_level(GW_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_in_order),
        cmocka_unit_test(test_stalled_reader_costs_bytes_not_waits),
        cmocka_unit_test(test_reader_gone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
