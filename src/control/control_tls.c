/* TLS sessions for the control protocol (GnuTLS). */
#include "control/control_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TLS_PRIORITY "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

struct ctl_tls {
    bool server;
    bool psk;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_certificate_credentials_t x509;
};

struct ctl_tls_session {
    gnutls_session_t s;
    char peer[256];
    char error[256];  /* why the last read or write failed */
};

bool ctl_tls_configured(const struct ctl_tls_config *cfg)
{
    return cfg->psk_file || cfg->cert_file || cfg->key_file || cfg->ca_file;
}

int ctl_tls_config_check(const struct ctl_tls_config *cfg, struct gw_error *err)
{
    bool any_x509 = cfg->cert_file || cfg->key_file || cfg->ca_file;
    if (cfg->psk_file && any_x509)
        return gw_error_set(err, EINVAL, "give either a TLS pre-shared key or certificates, not both");
    if (any_x509 && !(cfg->cert_file && cfg->key_file && cfg->ca_file))
        return gw_error_set(err, EINVAL, "X.509 TLS needs a certificate, its key and a CA file");
    return 0;
}

/* First "user:hexkey" line of a psktool file. */
static int read_psk_line(const char *path, char *user, size_t ulen, char *key, size_t klen,
                         struct gw_error *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return gw_error_set(err, errno, "cannot open TLS key file '%s': %m", path);
    char line[1024];
    int r = -EINVAL;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *colon = strchr(line, ':');
        if (!colon || colon == line || !colon[1])
            continue;
        *colon = '\0';
        snprintf(user, ulen, "%s", line);
        snprintf(key, klen, "%s", colon + 1);
        r = 0;
        break;
    }
    fclose(f);
    if (r < 0)
        gw_error_set(err, EINVAL, "TLS key file '%s' has no 'username:hexkey' line", path);
    return r;
}

/* A usable "user:hexkey" line: a user, then a key of whole hex bytes. */
static bool psk_line_usable(const char *line)
{
    const char *colon = strchr(line, ':');
    if (!colon || colon == line || !colon[1])
        return false;
    size_t n = strlen(colon + 1);
    return n % 2 == 0 && strspn(colon + 1, "0123456789abcdefABCDEF") == n;
}

/* The server's key file: GnuTLS only checks that it exists and reads it
 * at each handshake, so a file with no usable key would make a daemon
 * that refuses every peer. Refuse it at start instead. */
static int check_server_psk_file(const char *path, struct gw_error *err)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return gw_error_set(err, errno, "cannot open TLS key file '%s': %m", path);
    char line[1024];
    bool usable = false;
    while (!usable && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        usable = psk_line_usable(line);
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    return usable ? 0 : gw_error_set(err, EINVAL, "TLS key file '%s' has no 'username:hexkey' line "
                                     "(a user name, then a key in hexadecimal)", path);
}

static int setup_psk(struct ctl_tls *t, const char *file, struct gw_error *err)
{
    int g;
    t->psk = true;
    if (t->server) {
        if (check_server_psk_file(file, err) < 0)
            return -EINVAL;
        if ((g = gnutls_psk_allocate_server_credentials(&t->psk_server)) < 0)
            goto gnutls_err;
        if ((g = gnutls_psk_set_server_credentials_file(t->psk_server, file)) < 0)
            return gw_error_set(err, EINVAL, "cannot load TLS key file '%s': %s", file,
                                gnutls_strerror(g));
        return 0;
    }
    char user[256], hex[512];
    if (read_psk_line(file, user, sizeof(user), hex, sizeof(hex), err) < 0)
        return -EINVAL;
    if ((g = gnutls_psk_allocate_client_credentials(&t->psk_client)) < 0)
        goto gnutls_err;
    gnutls_datum_t key = { (unsigned char *)hex, (unsigned)strlen(hex) };
    if ((g = gnutls_psk_set_client_credentials(t->psk_client, user, &key, GNUTLS_PSK_KEY_HEX)) < 0)
        return gw_error_set(err, EINVAL, "bad key in TLS key file '%s': %s", file, gnutls_strerror(g));
    return 0;
gnutls_err:
    return gw_error_set(err, ENOMEM, "TLS: %s", gnutls_strerror(g));
}

static int setup_x509(struct ctl_tls *t, const struct ctl_tls_config *cfg, struct gw_error *err)
{
    int g = gnutls_certificate_allocate_credentials(&t->x509);
    if (g < 0)
        return gw_error_set(err, ENOMEM, "TLS: %s", gnutls_strerror(g));
    g = gnutls_certificate_set_x509_trust_file(t->x509, cfg->ca_file, GNUTLS_X509_FMT_PEM);
    if (g <= 0)
        return gw_error_set(err, EINVAL, "cannot load CA certificates from '%s': %s", cfg->ca_file,
                            g == 0 ? "no certificate found" : gnutls_strerror(g));
    g = gnutls_certificate_set_x509_key_file(t->x509, cfg->cert_file, cfg->key_file,
                                             GNUTLS_X509_FMT_PEM);
    if (g < 0)
        return gw_error_set(err, EINVAL, "cannot load certificate '%s' / key '%s': %s",
                            cfg->cert_file, cfg->key_file, gnutls_strerror(g));
    return 0;
}

struct ctl_tls *ctl_tls_new(const struct ctl_tls_config *cfg, bool server, struct gw_error *err)
{
    if (ctl_tls_config_check(cfg, err) < 0)
        return NULL;
    if (!ctl_tls_configured(cfg)) {
        gw_error_set(err, EINVAL, "no TLS credentials given");
        return NULL;
    }
    struct ctl_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    t->server = server;
    int r = cfg->psk_file ? setup_psk(t, cfg->psk_file, err) : setup_x509(t, cfg, err);
    if (r < 0) {
        ctl_tls_free(t);
        return NULL;
    }
    return t;
}

void ctl_tls_free(struct ctl_tls *t)
{
    if (!t)
        return;
    if (t->psk_server)
        gnutls_psk_free_server_credentials(t->psk_server);
    if (t->psk_client)
        gnutls_psk_free_client_credentials(t->psk_client);
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    free(t);
}

static int session_creds(struct ctl_tls *t, gnutls_session_t s)
{
    if (t->psk)
        return gnutls_credentials_set(s, GNUTLS_CRD_PSK,
                                      t->server ? (void *)t->psk_server : (void *)t->psk_client);
    int g = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->x509);
    if (g < 0)
        return g;
    if (t->server)
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(s, NULL, 0);
    return 0;
}

static void note_peer(struct ctl_tls *t, struct ctl_tls_session *ts)
{
    if (t->psk) {
        const char *u = t->server ? gnutls_psk_server_get_username(ts->s) : NULL;
        snprintf(ts->peer, sizeof(ts->peer), "psk:%s", u ? u : "-");
        return;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(ts->s, &n);
    gnutls_x509_crt_t crt;
    snprintf(ts->peer, sizeof(ts->peer), "x509:?");
    if (n == 0 || gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0) {
        char dn[200];
        size_t len = sizeof(dn);
        if (gnutls_x509_crt_get_dn(crt, dn, &len) == 0)
            snprintf(ts->peer, sizeof(ts->peer), "x509:%s", dn);
    }
    gnutls_x509_crt_deinit(crt);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The handshake, over by timeout_ms from now however the peer's bytes
 * come. GnuTLS's own handshake timeout waits afresh for each read, so a
 * peer that trickles a byte now and then kept a handshake (and a server's
 * handshake slot) for ever: the socket is non-blocking meanwhile, and
 * every wait is a poll() for what is left of the deadline. On failure the
 * alert goes out before the socket blocks again (best effort, never a
 * wait). */
static int handshake(gnutls_session_t s, int fd, int timeout_ms)
{
    uint64_t end = timeout_ms > 0 ? mono_ms() + (uint64_t)timeout_ms : UINT64_MAX;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return GNUTLS_E_PULL_ERROR;
    int g;
    for (;;) {
        g = gnutls_handshake(s);
        if (g == 0 || gnutls_error_is_fatal(g))
            break;
        uint64_t now = mono_ms();
        if (now >= end) {
            g = GNUTLS_E_TIMEDOUT;
            break;
        }
        if (g != GNUTLS_E_AGAIN)
            continue; /* interrupted, a warning alert: go on */
        struct pollfd p = { .fd = fd, .events = gnutls_record_get_direction(s) ? POLLOUT : POLLIN };
        int wait = end == UINT64_MAX ? -1 : end - now > INT32_MAX ? INT32_MAX : (int)(end - now);
        if (poll(&p, 1, wait) < 0 && errno != EINTR) {
            g = GNUTLS_E_PULL_ERROR;
            break;
        }
    }
    if (g < 0)
        gnutls_alert_send_appropriate(s, g); /* tell the peer why */
    fcntl(fd, F_SETFL, fl);
    return g;
}

struct ctl_tls_session *ctl_tls_session_new(struct ctl_tls *t, int fd, int timeout_ms,
                                            struct gw_error *err)
{
    struct ctl_tls_session *ts = calloc(1, sizeof(*ts));
    if (!ts) {
        gw_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    /* NO_SIGNAL: a write to a peer that hung up is an error, not SIGPIPE
     * (as fd_write's MSG_NOSIGNAL) */
    int g = gnutls_init(&ts->s, (t->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL);
    if (g < 0)
        goto fail;
    if ((g = gnutls_priority_set_direct(ts->s, TLS_PRIORITY, NULL)) < 0 ||
        (g = session_creds(t, ts->s)) < 0)
        goto fail;
    gnutls_transport_set_int(ts->s, fd);
    gnutls_handshake_set_timeout(ts->s, 0); /* handshake() keeps the time */
    if ((g = handshake(ts->s, fd, timeout_ms)) < 0)
        goto fail;
    note_peer(t, ts);
    return ts;
fail:
    gw_error_set(err, EACCES, "TLS handshake failed: %s", gnutls_strerror(g));
    if (ts->s)
        gnutls_deinit(ts->s);
    free(ts);
    return NULL;
}

void ctl_tls_session_free(struct ctl_tls_session *ts)
{
    if (!ts)
        return;
    gnutls_bye(ts->s, GNUTLS_SHUT_WR);
    gnutls_deinit(ts->s);
    free(ts);
}

static void note_error(struct ctl_tls_session *ts, ssize_t n)
{
    if (n == GNUTLS_E_FATAL_ALERT_RECEIVED)
        snprintf(ts->error, sizeof(ts->error), "TLS: the peer refused the session (%s)",
                 gnutls_alert_get_name(gnutls_alert_get(ts->s)));
    else
        snprintf(ts->error, sizeof(ts->error), "TLS: %s", gnutls_strerror((int)n));
}

static ssize_t tls_read(void *opaque, void *buf, size_t len)
{
    struct ctl_tls_session *ts = opaque;
    for (;;) {
        ssize_t n = gnutls_record_recv(ts->s, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n == GNUTLS_E_AGAIN) /* a receive timeout (SO_RCVTIMEO) */
            return -ETIMEDOUT;
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        note_error(ts, n);
        return -EIO;
    }
}

static ssize_t tls_write(void *opaque, const void *buf, size_t len)
{
    struct ctl_tls_session *ts = opaque;
    for (;;) {
        ssize_t n = gnutls_record_send(ts->s, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n == GNUTLS_E_AGAIN) /* a non-blocking socket is full: call again with the same bytes */
            return -ETIMEDOUT;
        note_error(ts, n);
        return -EIO;
    }
}

void ctl_tls_session_io(struct ctl_tls_session *ts, struct ctl_io *io)
{
    io->read = tls_read;
    io->write = tls_write;
    io->opaque = ts;
}

const char *ctl_tls_session_peer(const struct ctl_tls_session *ts) { return ts->peer; }

const char *ctl_tls_session_error(const struct ctl_tls_session *ts)
{
    return ts && ts->error[0] ? ts->error : NULL;
}
