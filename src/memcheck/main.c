/* godwit-memcheck: check the test guest's memory invariant in a dump made
 * by QMP pmemsave. Exit status 0 when it holds, 1 when not, 2 on errors. */
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
    if (ok)
        printf("ok: %llu pages, values %u..%u, boundary at page %llu\n", (unsigned long long)r.pages,
               r.first, r.last, (unsigned long long)r.boundary);
    else
        printf("FAIL: invariant broken at page %llu of %llu (%u boundaries)\n",
               (unsigned long long)r.bad_page, (unsigned long long)r.pages, r.boundaries + 1);
    return ok ? 0 : 1;
}
