/* Stream codec and state records: round trips, corruption anywhere,
 * truncation, wrong magic/version, oversized lengths, optional/mandatory
 * unknown records, vCPU/device state validation, fd io over a socketpair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/state_records.h"
#include "migration/stream.h"
#include "migration/stream_hash.h"
#include <xxhash.h>

static struct stream_membuf out;

static void writer(struct stream *s)
{
    memset(&out, 0, sizeof(out));
    stream_init(s, &stream_mem_ops, &out);
}

static void reader(struct stream *s, struct stream_membuf *in, const uint8_t *d, size_t len)
{
    memset(in, 0, sizeof(*in));
    in->data = d;
    in->len = len;
    stream_init(s, &stream_mem_ops, in);
}

static uint8_t pages[4][4096];

/* A small valid stream: preamble, 2 records of pages, an optional record,
 * end of stream. */
static void build(void)
{
    struct stream s;
    writer(&s);
    for (int i = 0; i < 4; i++)
        memset(pages[i], i + 1, 4096);
    assert_int_equal(stream_write_preamble(&s), 0);
    struct gws_pages h = { 4, 0 };
    uint64_t pfn[4] = { 256, 257, 300, 301 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { pages, sizeof(pages) } };
    assert_int_equal(stream_write_record(&s, GWS_PAGE_DATA, iov, 3), 0);
    const char *txt = "hello";
    struct iovec t = { (void *)txt, 5 };
    assert_int_equal(stream_write_record(&s, GWS_INFO, &t, 1), 0);
    assert_int_equal(stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0), 0);
    assert_int_equal(stream_flush(&s), 0);
    stream_fini(&s);
}

static int read_all(const uint8_t *d, size_t len, int *nrec, char *err, size_t el)
{
    struct stream s;
    struct stream_membuf in;
    reader(&s, &in, d, len);
    int r = stream_read_preamble(&s);
    *nrec = 0;
    while (r == 0) {
        struct stream_record rec;
        r = stream_read_record(&s, &rec);
        if (r == 0) {
            (*nrec)++;
            if (rec.type == GWS_PAGE_DATA) {
                assert_int_equal(rec.length, 8 + 32 + 4 * 4096);
                assert_memory_equal(rec.body + 40 + 4096 * 2, pages[2], 4096);
            }
            if (rec.type == GWS_END_OF_STREAM)
                break;
        }
    }
    snprintf(err, el, "%s", stream_error(&s));
    stream_fini(&s);
    return r;
}

static void test_round_trip(void **state)
{
    build();
    int n;
    char err[256];
    assert_int_equal(read_all(out.out, out.out_len, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out.out_len % 8, 0);
    free(out.out);
}

/* `queued` counts a record once it is taken, buffered or not; `bytes`
 * once it reached the output. After a flush they agree. */
static void test_queued_counts_buffered_records(void **state)
{
    struct stream s;
    writer(&s);
    assert_int_equal(stream_write_preamble(&s), 0);
    const char *txt = "a small record stays in the buffer";
    struct iovec t = { (void *)txt, strlen(txt) };
    assert_int_equal(stream_write_record(&s, GWS_INFO, &t, 1), 0);
    assert_int_equal(s.bytes, 0);
    assert_true(s.queued >= 16 + strlen(txt) + 8);
    uint64_t small = s.queued;
    struct gws_pages h = { 4, 0 };
    uint64_t pfn[4] = { 256, 257, 300, 301 };
    struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { pages, sizeof(pages) } };
    for (int i = 0; i < 4; i++)
        assert_int_equal(stream_write_record(&s, GWS_PAGE_DATA, iov, 3), 0);
    assert_true(s.queued > small + 4 * sizeof(pages));
    assert_int_equal(stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0), 0);
    assert_true(s.bytes < s.queued);
    assert_int_equal(stream_flush(&s), 0);
    assert_int_equal(s.bytes, s.queued);
    assert_int_equal(out.out_len, s.queued);
    stream_fini(&s);
    free(out.out);
}

static void test_every_byte_corruption_detected(void **state)
{
    build();
    uint8_t *copy = malloc(out.out_len);
    /* Flip each byte after the preamble in turn (every 7th, for speed). */
    for (size_t i = 16; i < out.out_len; i += 7) {
        memcpy(copy, out.out, out.out_len);
        copy[i] ^= 0x40;
        int n;
        char err[256];
        int r = read_all(copy, out.out_len, &n, err, sizeof(err));
        assert_true(r < 0);
        assert_true(strlen(err) > 0);
    }
    free(copy);
    free(out.out);
}

static void test_truncation_and_preamble(void **state)
{
    build();
    int n;
    char err[256];
    for (size_t cut = 0; cut < out.out_len; cut += 97) {
        int r = read_all(out.out, cut, &n, err, sizeof(err));
        assert_true(r < 0 || r == -ENODATA);
    }
    uint8_t *copy = malloc(out.out_len);
    memcpy(copy, out.out, out.out_len);
    copy[0] = 'X';
    assert_true(read_all(copy, out.out_len, &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "magic"));
    memcpy(copy, out.out, out.out_len);
    copy[8] = 2;
    assert_true(read_all(copy, out.out_len, &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "version 2"));
    free(copy);
    free(out.out);
}

static void test_oversized_length(void **state)
{
    uint8_t buf[16 + 8] = "GODWITMS\1\0\0\0\0\0\0\0";
    uint32_t h[2] = { GWS_PAGE_DATA, 0xfffffff0u };
    memcpy(buf + 16, h, 8);
    int n;
    char err[256];
    assert_true(read_all(buf, sizeof(buf), &n, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "exceeds"));
}

static void test_state_records(void **state)
{
    static struct vcpu_state st, back;
    memset(&st, 0, sizeof(st));
    st.regs.rip = 0x1234;
    st.xsave_size = 4096;
    st.xsave[100] = 7;
    st.nmsrs = 2;
    st.msrs[0].index = 0x10;
    st.msrs[0].data = 99;
    st.msrs[1].index = 0xc0000080;
    st.mp.mp_state = 1;
    struct stream s;
    writer(&s);
    assert_int_equal(state_write_vcpu(&s, 3, &st), 0);
    assert_int_equal(stream_write_device(&s, "serial0", 0, 1, "abcd", 4), 0);
    stream_flush(&s);
    struct stream r;
    struct stream_membuf in;
    uint8_t *w = malloc(out.out_len + 16);
    memcpy(w, "GODWITMS\1\0\0\0\0\0\0\0", 16);
    memcpy(w + 16, out.out, out.out_len);
    reader(&r, &in, w, out.out_len + 16);
    assert_int_equal(stream_read_preamble(&r), 0);
    struct stream_record rec;
    assert_int_equal(stream_read_record(&r, &rec), 0);
    struct gw_error err;
    gw_error_init(&err);
    uint32_t id;
    assert_int_equal(state_parse_vcpu(rec.body, rec.length, &id, &back, &err), 0);
    assert_int_equal(id, 3);
    assert_int_equal(back.regs.rip, 0x1234);
    assert_int_equal(back.xsave[100], 7);
    assert_int_equal(back.nmsrs, 2);
    assert_int_equal(back.msrs[0].data, 99);
    /* Damaged bodies: every truncation fails cleanly. */
    for (size_t cut = 0; cut < rec.length; cut += 13) {
        gw_error_init(&err);
        assert_true(state_parse_vcpu(rec.body, cut, &id, &back, &err) < 0);
    }
    uint8_t *bad = malloc(rec.length);
    memcpy(bad, rec.body, rec.length);
    ((uint32_t *)bad)[3] = 100000; /* first section's length */
    gw_error_init(&err);
    assert_true(state_parse_vcpu(bad, rec.length, &id, &back, &err) < 0);
    free(bad);
    assert_int_equal(stream_read_record(&r, &rec), 0);
    struct stream_device dev;
    gw_error_init(&err);
    assert_int_equal(stream_parse_device(rec.body, rec.length, &dev, &err), 0);
    assert_string_equal(dev.id, "serial0");
    assert_int_equal(dev.len, 4);
    assert_memory_equal(dev.data, "abcd", 4);
    stream_fini(&r);
    stream_fini(&s);
    free(w);
    free(out.out);
}

static void *sock_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)fd);
    stream_write_preamble(&s);
    static uint8_t big[512][4096];
    static uint64_t pfn[512];
    for (int i = 0; i < 512; i++) {
        pfn[i] = (uint64_t)i;
        memset(big[i], i, 4096);
    }
    for (int k = 0; k < 8; k++) {
        struct gws_pages h = { 512, 0 };
        struct iovec iov[3] = { { &h, sizeof(h) }, { pfn, sizeof(pfn) }, { big, sizeof(big) } };
        stream_write_record(&s, GWS_PAGE_DATA, iov, 3);
    }
    stream_write_record(&s, GWS_END_OF_STREAM, NULL, 0);
    stream_flush(&s);
    stream_fini(&s);
    close(fd);
    return NULL;
}

/* Both builds of the checksum give XXH3-64 of the concatenated pieces,
 * however the bytes are split (the vector code's stripes and the streaming
 * buffer's 256-byte boundary are the places they could differ). */
static void test_hash_builds_agree(void **state)
{
    size_t len = 3 * 4096 + 777;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 7));
    static const size_t sizes[] = { 0, 1, 8, 63, 64, 240, 241, 256, 1024, 4096, 8192 + 5 };
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (size_t cut = 0; cut <= sizes[k]; cut += sizes[k] / 3 + 1) {
            struct iovec iov[3] = { { buf, cut }, { buf + cut, (sizes[k] - cut) / 2 },
                                    { buf + cut + (sizes[k] - cut) / 2,
                                      sizes[k] - cut - (sizes[k] - cut) / 2 } };
            uint64_t want = XXH3_64bits(buf, sizes[k]);
            assert_true(stream_hash_generic(iov, 3) == want);
            assert_true(stream_hash(iov, 3) == want);
            if (__builtin_cpu_supports("avx2"))
                assert_true(stream_hash_avx2(iov, 3) == want);
        }
    }
    free(buf);
}

static void test_fd_io(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pthread_t t;
    pthread_create(&t, NULL, sock_writer, (void *)(intptr_t)sv[0]);
    struct stream s;
    stream_init(&s, &stream_fd_ops, (void *)(intptr_t)sv[1]);
    assert_int_equal(stream_read_preamble(&s), 0);
    int n = 0;
    struct stream_record rec;
    while (stream_read_record(&s, &rec) == 0 && rec.type != GWS_END_OF_STREAM) {
        assert_int_equal(rec.length, 8 + 512 * 8 + 512 * 4096);
        assert_int_equal(rec.body[8 + 512 * 8 + 4096 * 77], 77);
        n++;
    }
    assert_int_equal(n, 8);
    assert_int_equal(rec.type, GWS_END_OF_STREAM);
    pthread_join(t, NULL);
    stream_fini(&s);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_queued_counts_buffered_records),
        cmocka_unit_test(test_every_byte_corruption_detected),
        cmocka_unit_test(test_truncation_and_preamble),
        cmocka_unit_test(test_oversized_length),
        cmocka_unit_test(test_state_records),
        cmocka_unit_test(test_fd_io),
        cmocka_unit_test(test_hash_builds_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
