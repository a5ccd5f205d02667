/* godwit-memcheck FILE [--offset BYTES] [--length BYTES]: check the test
 * guest's memory invariant (docs/test-guest.md) in a dump made by QMP
 * pmemsave, over [offset, offset + length) of the file (default: all of
 * it). Prints one summary line. Exit status 0 when the invariant holds, 1
 * when not, 2 on usage or I/O errors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mem_invariant.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: godwit-memcheck [--offset BYTES] [--length BYTES] FILE\n"
               "Check the test guest's mem-invariant workload memory in a pmemsave dump.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "offset", required_argument, NULL, 'o' },
                                          { "length", required_argument, NULL, 'l' },
                                          { "help", no_argument, NULL, 'h' },
                                          { NULL, 0, NULL, 0 } };
    unsigned long long off = 0, len = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o': off = strtoull(optarg, NULL, 0); break;
        case 'l': len = strtoull(optarg, NULL, 0); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    int fd = open(argv[optind], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "godwit-memcheck: error: %s: %s\n", argv[optind], strerror(errno));
        return 2;
    }
    if (off > (unsigned long long)st.st_size || (len && len > st.st_size - off)) {
        fprintf(stderr, "godwit-memcheck: error: range outside the file\n");
        return 2;
    }
    if (!len)
        len = (unsigned long long)st.st_size - off;
    if (st.st_size == 0 || len == 0) {
        fprintf(stderr, "godwit-memcheck: error: empty range\n");
        return 2;
    }
    uint8_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        fprintf(stderr, "godwit-memcheck: error: mmap: %s\n", strerror(errno));
        return 2;
    }
    struct mem_invariant_report r;
    bool ok = mem_invariant_check(map + off, (size_t)len, &r);
    if (ok && r.boundaries)
        printf("ok: %llu pages, values %u..%u, boundary at page %llu\n", (unsigned long long)r.pages,
               r.first, r.last, (unsigned long long)r.boundary);
    else if (ok)
        printf("ok: %llu pages, all %u, no boundary\n", (unsigned long long)r.pages, r.first);
    else if (!r.pages)
        printf("FAIL: less than one page\n");
    else
        printf("FAIL: %llu pages, first bad page %llu (%u after %u), %llu boundaries, %llu changes\n",
               (unsigned long long)r.pages, (unsigned long long)r.bad_page, r.bad_value, r.bad_prev,
               (unsigned long long)r.boundaries, (unsigned long long)r.changes);
    munmap(map, (size_t)st.st_size);
    close(fd);
    return ok ? 0 : 1;
}
