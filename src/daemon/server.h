/* godwitd's listeners and client connections.
 *
 * Unix sockets are created mode 0600 and accept only peers whose uid
 * (SO_PEERCRED) is 0 or the daemon's; others get a PermissionDenied error
 * reply and are closed. TCP listeners speak TLS (control_tls.h) unless the
 * daemon runs with --insecure and no TLS credentials. Each connection has
 * a thread reading requests and, once it subscribes to events, a writer
 * thread sending them; replies and events never interleave mid-message.
 *
 * Returns: constructors NULL with err filled; operations 0 or -errno. */
#ifndef GW_DAEMON_SERVER_H
#define GW_DAEMON_SERVER_H

#include "common/error.h"
#include "daemon/daemon.h"

#define SERVER_MAX_CLIENTS    64     /* authenticated: unix peers, TLS peers after the handshake */
#define SERVER_MAX_HANDSHAKES 16     /* per TLS listener: connections still in their handshake */
#define SERVER_EVENT_QUEUE    1024   /* events queued per subscriber; one more: disconnected */
#define SERVER_HANDSHAKE_MS   3000

struct server *server_new(struct daemon *dm, struct gw_error *err);
/* spec: "unix:PATH" or "tcp:HOST:PORT". */
int server_listen(struct server *s, const char *spec, struct gw_error *err);
/* Close the listeners and every connection; wait for their threads (up to
 * 20 s): false when some still run (a handler busy), so that the caller
 * does not free what they use. */
bool server_stop(struct server *s);
void server_free(struct server *s);

/* For request handlers: subscribe this client to events (domain and type
 * may be NULL for all). */
int daemon_client_subscribe(struct daemon_client *cl, const char *domain, const char *type,
                            struct gw_error *err);
/* "uid:N" for Unix peers, "psk:USER"/"x509:DN" for TLS, "tcp:ADDR" otherwise. */
const char *daemon_client_peer(const struct daemon_client *cl);

#endif
