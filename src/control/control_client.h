/* A blocking client of the control protocol (docs/daemon.md): connect to
 * "unix:PATH" or "tcp:HOST:PORT" (TLS when credentials are given), say
 * hello, send requests and wait for their replies, wait for events. Used
 * by godwit and, for daemon-to-daemon migration, by godwitd.
 *
 * Returns: ctl_client_connect NULL with err filled (a daemon whose hello
 * reply carries another protocol version is refused: err->code
 * EPROTONOSUPPORT, EPROTO when it carries none); operations 0 or -errno
 * with err filled: -EREMOTEIO for an error reply (err->msg is its desc,
 * *cls its class), -EBADMSG for a reply with neither a return nor an error
 * object (not a refusal: the caller knows nothing of what the peer did),
 * -ETIMEDOUT when timeout_ms passed (one deadline for the whole call,
 * sending the request included, whatever comes meanwhile: events, replies
 * to other ids; the client is then broken: a request may be half sent or a
 * reply half read; reconnect), -ECONNRESET when the peer
 * hung up (err says why when TLS knows). Timeouts in ms, -1 = none.
 * Threads: a client belongs to one thread at a time.
 * Ownership: args are taken; *ret and *ev are new references. */
#ifndef GW_CONTROL_CONTROL_CLIENT_H
#define GW_CONTROL_CONTROL_CLIENT_H

#include <json-c/json.h>

#include "common/error.h"
#include "control/control_tls.h"

#define CTL_CLIENT_PENDING_EVENTS 256  /* events kept while waiting for a reply */

struct ctl_client;

/* tls may be NULL or unconfigured (then TCP is plain: the daemon must run
 * with --insecure). who: "godwit 0.1.0", "godwitd 0.1.0 (peer)". */
struct ctl_client *ctl_client_connect(const char *uri, const struct ctl_tls_config *tls,
                                      const char *who, int timeout_ms, struct gw_error *err);
void ctl_client_free(struct ctl_client *c);

/* The server's hello return: {"protocol", "server", "hostname", "peer"} (borrowed). */
struct json_object *ctl_client_hello(const struct ctl_client *c);

/* Send `command` with args (taken) and wait up to timeout_ms (-1: no
 * limit) for its reply, keeping events that come meanwhile for
 * ctl_client_next_event. 0 with *ret (the return value, to put; ret may be
 * NULL), or -errno with the daemon's error description in err. */
int ctl_client_call(struct ctl_client *c, const char *command, struct json_object *args,
                    struct json_object **ret, int timeout_ms, struct gw_error *err);
/* The next event (subscribe first with the "events-subscribe" command). */
int ctl_client_next_event(struct ctl_client *c, int timeout_ms, struct json_object **ev,
                          struct gw_error *err);

#endif
