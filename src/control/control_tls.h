/* TLS for the control protocol over TCP (GnuTLS): a pre-shared key file
 * (psktool's format, one "username:hexkey" per line; a client uses the
 * first line) or X.509 certificates (both sides present a certificate
 * signed by the CA; the chain is verified, host names are not).
 *
 * Returns: constructors NULL with err filled; operations 0 or -errno.
 * Threads: a ctl_tls (credentials) is shared read-only by any number of
 * sessions. A session may be read by one thread while another writes. */
#ifndef GW_CONTROL_CONTROL_TLS_H
#define GW_CONTROL_CONTROL_TLS_H

#include <stdbool.h>

#include "common/error.h"
#include "control/control.h"

struct ctl_tls_config {
    const char *psk_file;
    const char *cert_file;
    const char *key_file;
    const char *ca_file;
};

struct ctl_tls;
struct ctl_tls_session;

/* True when cfg names a PSK file or a certificate set. */
bool ctl_tls_configured(const struct ctl_tls_config *cfg);
/* Check that cfg is complete and consistent (both kinds, or a partial
 * certificate set, are errors). */
int ctl_tls_config_check(const struct ctl_tls_config *cfg, struct gw_error *err);

struct ctl_tls *ctl_tls_new(const struct ctl_tls_config *cfg, bool server, struct gw_error *err);
void ctl_tls_free(struct ctl_tls *tls);

/* Handshake on a connected socket (borrowed: the caller closes it after
 * ctl_tls_session_free), over within timeout_ms however the peer's bytes
 * come (<= 0: no limit); the socket is non-blocking meanwhile. */
struct ctl_tls_session *ctl_tls_session_new(struct ctl_tls *tls, int fd, int timeout_ms,
                                            struct gw_error *err);
/* Send close_notify (best effort) and free. */
void ctl_tls_session_free(struct ctl_tls_session *s);
void ctl_tls_session_io(struct ctl_tls_session *s, struct ctl_io *io);
/* Who the peer authenticated as: "psk:USER" or "x509:DN". */
const char *ctl_tls_session_peer(const struct ctl_tls_session *s);
/* Why the session's last read or write failed (NULL: it did not, or s is NULL). */
const char *ctl_tls_session_error(const struct ctl_tls_session *s);

#endif
