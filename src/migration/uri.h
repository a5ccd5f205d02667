/* Migration URIs, as QEMU spells them: tcp:HOST:PORT (HOST may be [v6]),
 * unix:PATH, file:PATH. Parsing is pure; connecting/listening turns a URI
 * into a file descriptor for the engine (which never opens connections).
 * Returns: 0 or -errno with a message in err; fds are >= 0. */
#ifndef GW_MIGRATION_URI_H
#define GW_MIGRATION_URI_H

#include <stdbool.h>

#include "common/error.h"

enum mig_uri_kind { MIG_URI_TCP, MIG_URI_UNIX, MIG_URI_FILE };

struct mig_uri {
    enum mig_uri_kind kind;
    char host[256];   /* tcp: without brackets */
    char port[16];    /* tcp */
    char path[4096];  /* unix:, file: */
};

int mig_uri_parse(const char *uri, struct mig_uri *out, struct gw_error *err);
/* Outgoing: connect (tcp/unix) or create+truncate (file). Blocking; a TCP
 * connect gives up after MIG_CONNECT_TIMEOUT_MS per address, or once
 * *cancel (may be NULL) is set (getaddrinfo itself is not bounded). */
int mig_uri_connect(const struct mig_uri *u, const volatile bool *cancel, struct gw_error *err);
/* Incoming: listen (tcp/unix; returns the listening fd) or open the file for
 * reading (returns the file fd; *is_listener = false). */
int mig_uri_listen(const struct mig_uri *u, bool *is_listener, struct gw_error *err);
/* TCP: make a dead or unreachable peer an error within ~timeout_ms
 * (keepalive + TCP_USER_TIMEOUT), and send small records at once
 * (TCP_NODELAY: post-copy). No-op on other sockets. */
void mig_socket_liveness(int fd, unsigned timeout_ms);
/* The same without TCP_NODELAY, for the bulk stream of pre-copy. */
void mig_socket_deadline(int fd, unsigned timeout_ms);
/* Pre-copy's bound: a peer that acknowledges nothing (or keeps its window
 * shut) this long is gone; a stopped source then resumes its guest. */
#define MIG_PRECOPY_LIVENESS_MS 10000
/* How long a TCP connect may take (mig_uri_connect). */
#define MIG_CONNECT_TIMEOUT_MS 10000
/* Format back to text (for messages). */
void mig_uri_format(const struct mig_uri *u, char *buf, unsigned len);

#endif
