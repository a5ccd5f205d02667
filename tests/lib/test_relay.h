/* A relay between two unix-socket ends, for engine tests: it listens on
 * one path and forwards each connection to another, both ways, and can be
 * frozen: a frozen relay moves nothing in either direction, as a peer
 * process that stopped (SIGSTOP, a stall) reads and writes nothing, while
 * the sockets stay open. An end of stream or a reset on one side is passed
 * on to the other. */
#ifndef GW_TESTS_TEST_RELAY_H
#define GW_TESTS_TEST_RELAY_H

#include <pthread.h>
#include <stdbool.h>

#define RELAY_MAX_PAIRS 8

struct test_relay {
    int lfd;
    char from[108], to[108];      /* listened on / forwarded to */
    int a[RELAY_MAX_PAIRS], b[RELAY_MAX_PAIRS]; /* accepted / connected, -1 */
    pthread_t thread;
    volatile bool frozen, quit;
    volatile unsigned accepted;
    const void *inject;           /* sent back to each connecting side first */
    size_t inject_len;
};

/* Listen on `from` (a unix socket path) and forward to `to`; 0 or -errno. */
int test_relay_start(struct test_relay *r, const char *from, const char *to);
void test_relay_freeze(struct test_relay *r, bool frozen);
/* Bytes each new connection reads before anything its peer sends (set
 * before the connection; the memory stays the caller's). */
void test_relay_inject(struct test_relay *r, const void *bytes, size_t len);
/* Stop the thread, close every socket, remove `from`. */
void test_relay_stop(struct test_relay *r);

#endif
