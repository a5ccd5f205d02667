/* Two test hosts on one machine: network namespaces joined by a veth
 * pair, for engine tests that cut or slow a link (tests only; needs root
 * and iproute2). The destination's side is 10.99.0.1 on v-dst, the
 * source's 10.99.0.2 on v-src; the names carry the process id.
 * Returns: 0, or -1 (a command failed; the test should skip). */
#ifndef GW_TESTS_TEST_NETNS_H
#define GW_TESTS_TEST_NETNS_H

#include <stdbool.h>

struct test_hosts {
    char dst[32], src[32];      /* namespace names */
    int home;                   /* the calling thread's namespace before (test_hosts_down
                                   takes it back there) */
};

/* Run a command (argv[0] looked up in PATH) with posix_spawn, which does
 * not copy the address space (registered guest RAM) as fork would; 0 if
 * it exited 0. */
int test_run(char **argv);
int test_hosts_up(struct test_hosts *h, const char *tag);
void test_hosts_down(struct test_hosts *h);
/* This thread (and the threads it starts from now on) into namespace ns. */
int test_hosts_enter(const char *ns);
/* The veth link up or down at the destination's end: the source's
 * packets are lost without an error, as with a cut cable. */
int test_hosts_link(const struct test_hosts *h, bool up);

#endif
