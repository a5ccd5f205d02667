#include "test_netns.h"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int test_run(char **argv)
{
    pid_t pid;
    int st;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int test_hosts_up(struct test_hosts *h, const char *tag)
{
    h->home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    snprintf(h->dst, sizeof(h->dst), "gw%s-dst-%d", tag, getpid());
    snprintf(h->src, sizeof(h->src), "gw%s-src-%d", tag, getpid());
    char *cmds[][16] = {
        { "ip", "netns", "add", h->dst, NULL },
        { "ip", "netns", "add", h->src, NULL },
        { "ip", "-n", h->src, "link", "add", "v-src", "type", "veth", "peer", "name", "v-dst",
          "netns", h->dst, NULL },
        { "ip", "-n", h->src, "addr", "add", "10.99.0.2/24", "dev", "v-src", NULL },
        { "ip", "-n", h->dst, "addr", "add", "10.99.0.1/24", "dev", "v-dst", NULL },
        { "ip", "-n", h->src, "link", "set", "v-src", "up", NULL },
        { "ip", "-n", h->dst, "link", "set", "v-dst", "up", NULL },
        { "ip", "-n", h->src, "link", "set", "lo", "up", NULL },
        { "ip", "-n", h->dst, "link", "set", "lo", "up", NULL },
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (test_run(cmds[i]) != 0)
            return -1;
    return 0;
}

void test_hosts_down(struct test_hosts *h)
{
    if (h->home >= 0 && setns(h->home, CLONE_NEWNET) == 0) {
        close(h->home);
        h->home = -1;
    }
    char *a[] = { "ip", "netns", "del", (char *)h->dst, NULL };
    char *b[] = { "ip", "netns", "del", (char *)h->src, NULL };
    test_run(a);
    test_run(b);
}

int test_hosts_enter(const char *ns)
{
    char path[64];
    snprintf(path, sizeof(path), "/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = setns(fd, CLONE_NEWNET);
    close(fd);
    return r;
}

int test_hosts_link(const struct test_hosts *h, bool up)
{
    /* The far end: the source keeps its route and its packets vanish, as
     * with a cut cable (down here, it would get "network unreachable"). */
    char *argv[] = { "ip", "-n", (char *)h->dst, "link", "set", "v-dst", up ? "up" : "down", NULL };
    return test_run(argv);
}
