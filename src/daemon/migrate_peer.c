/* Migration messages between daemons: pure building, parsing and checks.
 * See migrate_peer.h and docs/migration-protocol.md. */
#include "daemon/migrate_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "control/control.h"
#include "migration/stream_format.h"
#include "qmp/qmp_json.h"

static void put_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static int copy_member(struct json_object *o, const char *k, char *dst, size_t cap, bool required,
                       struct gw_error *err)
{
    const char *s;
    int r = ctl_arg_str(o, k, required, &s, err);
    if (r < 0)
        return r;
    if (!s) {
        dst[0] = '\0';
        return 0;
    }
    if (strlen(s) >= cap)
        return gw_error_set(err, EINVAL, "'%s' is too long", k);
    snprintf(dst, cap, "%s", s);
    return 0;
}

struct json_object *mig_head_to_json(const char *job, const char *uuid)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "version", json_object_new_int(MIG_PROTO_VERSION));
    put_str(o, "job", job);
    put_str(o, "uuid", uuid);
    return o;
}

int mig_head_from_json(struct json_object *args, struct mig_msg_head *h, struct gw_error *err)
{
    int64_t v = 0;
    int r = ctl_arg_int(args, "version", true, &v, err);
    if (r < 0)
        return r;
    if (v != MIG_PROTO_VERSION)
        return gw_error_set(err, EPROTONOSUPPORT,
                            "migration protocol version %lld is not supported (this daemon "
                            "speaks version %d)", (long long)v, MIG_PROTO_VERSION);
    h->version = (int)v;
    if ((r = copy_member(args, "job", h->job, sizeof(h->job), true, err)) < 0 ||
        (r = copy_member(args, "uuid", h->uuid, sizeof(h->uuid), true, err)) < 0)
        return r;
    if (!job_id_valid(h->job))
        return gw_error_set(err, EINVAL, "invalid job id '%s'", h->job);
    if (!job_uuid_valid(h->uuid))
        return gw_error_set(err, EINVAL, "invalid uuid '%s'", h->uuid);
    return 0;
}

int mig_begin_init(struct mig_begin *b, const struct job *j, const struct dom_def *def,
                   const char *src_host, const char *dest_host, bool src_postcopy,
                   struct gw_error *err)
{
    memset(b, 0, sizeof(*b));
    b->head.version = MIG_PROTO_VERSION;
    snprintf(b->head.job, sizeof(b->head.job), "%s", j->id);
    snprintf(b->head.uuid, sizeof(b->head.uuid), "%s", j->uuid);
    snprintf(b->src_host, sizeof(b->src_host), "%s", src_host ? src_host : "");
    snprintf(b->dest_host, sizeof(b->dest_host), "%s", dest_host ? dest_host : "");
    if (dom_def_copy(&b->def, def) < 0)
        return gw_error_set(err, ENOMEM, "out of memory");
    free(b->def.serial_log);
    b->def.serial_log = NULL;
    b->mem_size = def->memory_mib << 20;
    b->page_size = MIG_PAGE_SIZE;
    b->src_postcopy = src_postcopy;
    b->flags = j->flags;
    return 0;
}

void mig_begin_fini(struct mig_begin *b) { dom_def_fini(&b->def); }

struct json_object *mig_begin_to_json(const struct mig_begin *b)
{
    struct json_object *o = mig_head_to_json(b->head.job, b->head.uuid);
    put_str(o, "dest_host", b->dest_host);
    struct json_object *c = json_object_new_object(), *host = json_object_new_object(),
                       *mem = json_object_new_object(), *feat = json_object_new_object();
    put_str(host, "name", b->src_host);
    put_str(host, "daemon_version", GODWIT_VERSION);
    json_object_object_add(c, "host", host);
    json_object_object_add(c, "domain", dom_def_to_json(&b->def));
    json_object_object_add(mem, "size", json_object_new_int64((int64_t)b->mem_size));
    json_object_object_add(mem, "page_size", json_object_new_int64((int64_t)b->page_size));
    json_object_object_add(c, "memory", mem);
    json_object_object_add(feat, "postcopy", json_object_new_boolean(b->src_postcopy));
    json_object_object_add(feat, "stream_version", json_object_new_int(GWS_VERSION));
    json_object_object_add(c, "features", feat);
    json_object_object_add(c, "flags", job_flags_to_json(b->flags));
    json_object_object_add(o, "cookie", c);
    return o;
}

static int flags_from(struct json_object *a, unsigned *out, struct gw_error *err)
{
    *out = 0;
    if (!a)
        return 0;
    if (!json_object_is_type(a, json_type_array))
        return gw_error_set(err, EINVAL, "'flags' must be an array");
    for (size_t i = 0; i < json_object_array_length(a); i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(a, i));
        int bit = job_flag_bit(s);
        if (bit < 0)
            return gw_error_set(err, EINVAL, "unknown migration flag '%s'", s ? s : "?");
        *out |= 1u << bit;
    }
    return 0;
}

static int begin_memory(struct json_object *c, struct mig_begin *b, struct gw_error *err)
{
    struct json_object *mem, *feat, *v;
    int64_t size = 0, page = 0;
    int r;
    if (!json_object_object_get_ex(c, "memory", &mem) ||
        (r = ctl_arg_int(mem, "size", true, &size, err)) < 0 ||
        (r = ctl_arg_int(mem, "page_size", true, &page, err)) < 0)
        return gw_error_set(err, EINVAL, "the begin cookie has no valid 'memory'");
    if (size <= 0 || page <= 0)
        return gw_error_set(err, EINVAL, "invalid memory size in the begin cookie");
    b->mem_size = (uint64_t)size;
    b->page_size = (uint64_t)page;
    bool has_feat = json_object_object_get_ex(c, "features", &feat);
    b->src_postcopy = has_feat && json_object_object_get_ex(feat, "postcopy", &v) &&
                      json_object_get_boolean(v);
    /* The stream the source's VMM will write: refused here, in Prepare,
     * rather than by the VMM after a Perform has begun. */
    if (has_feat && json_object_object_get_ex(feat, "stream_version", &v) &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != GWS_VERSION))
        return gw_error_set(err, EPROTONOSUPPORT, "the source writes migration stream format "
                            "version %s; this host reads version %d",
                            json_object_to_json_string(v), GWS_VERSION);
    return 0;
}

int mig_begin_from_json(struct json_object *args, struct mig_begin *b, struct gw_error *err)
{
    struct json_object *c, *d, *v;
    memset(b, 0, sizeof(*b));
    int r = mig_head_from_json(args, &b->head, err);
    if (r < 0)
        return r;
    if ((r = copy_member(args, "dest_host", b->dest_host, sizeof(b->dest_host), true, err)) < 0)
        return r;
    if (!json_object_object_get_ex(args, "cookie", &c) || !json_object_is_type(c, json_type_object))
        return gw_error_set(err, EINVAL, "missing argument 'cookie'");
    if (!json_object_object_get_ex(c, "domain", &d))
        return gw_error_set(err, EINVAL, "the begin cookie has no 'domain'");
    if ((r = dom_def_from_json(d, &b->def, err)) < 0)
        return r;
    if (strcmp(b->def.uuid, b->head.uuid) != 0)
        return gw_error_set(err, EINVAL, "the cookie's domain uuid %s is not the job's %s",
                            b->def.uuid, b->head.uuid);
    free(b->def.serial_log);
    b->def.serial_log = NULL;
    if (json_object_object_get_ex(c, "host", &v))
        copy_member(v, "name", b->src_host, sizeof(b->src_host), false, NULL);
    if ((r = begin_memory(c, b, err)) < 0)
        return r;
    return flags_from(json_object_object_get_ex(c, "flags", &v) ? v : NULL, &b->flags, err);
}

int mig_prepare_check(const struct mig_begin *b, const struct mig_prepare_facts *f,
                      struct gw_error *err)
{
    if (f->uuid_active || f->uuid_job)
        return gw_error_set(err, EEXIST, "domain '%s' (uuid %s) is already %s on the destination",
                            b->def.name, b->head.uuid, f->uuid_active ? "active" : "busy with a job");
    if (f->uuid_defined && f->uuid_name && strcmp(f->uuid_name, b->def.name) != 0)
        return gw_error_set(err, EEXIST, "domain '%s' is already defined on the destination with "
                            "uuid %s: a migration does not rename it to '%s' (undefine '%s' "
                            "there first)", f->uuid_name, b->head.uuid, b->def.name, f->uuid_name);
    if (f->name_other_active)
        return gw_error_set(err, EEXIST, "a domain named '%s' is already running on the "
                            "destination (with another uuid)", b->def.name);
    if (f->name_other_uuid)
        return gw_error_set(err, EEXIST, "a domain named '%s' is already defined on the "
                            "destination with another uuid", b->def.name);
    if (b->mem_size != (b->def.memory_mib << 20))
        return gw_error_set(err, EINVAL, "memory layout mismatch: the stream carries %llu bytes, "
                            "the domain has %llu MiB", (unsigned long long)b->mem_size,
                            (unsigned long long)b->def.memory_mib);
    if (b->page_size != MIG_PAGE_SIZE)
        return gw_error_set(err, EINVAL, "page size %llu is not supported on the destination "
                            "(only %d)", (unsigned long long)b->page_size, MIG_PAGE_SIZE);
    if (b->def.vcpus < 1 || b->def.vcpus > DOM_MAX_VCPUS)
        return gw_error_set(err, EINVAL, "%u vcpus cannot run on the destination", b->def.vcpus);
    if ((b->flags & JOB_F_POSTCOPY) && !b->def.policy.permit_postcopy)
        return gw_error_set(err, ENOTSUP, "post-copy is not permitted by domain '%s'", b->def.name);
    if ((b->flags & JOB_F_POSTCOPY) && !f->local_postcopy)
        return gw_error_set(err, ENOTSUP, "post-copy is not supported on the destination "
                            "(userfaultfd is not available)");
    if ((b->flags & JOB_F_POSTCOPY) && !b->src_postcopy)
        return gw_error_set(err, ENOTSUP, "post-copy is not supported on the source");
    return 0;
}

void mig_tcp_uri(char *buf, size_t len, const char *host, unsigned port)
{
    snprintf(buf, len, strchr(host, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u", host, port);
}

int mig_uri_host(const char *uri, char *host, size_t len, struct gw_error *err)
{
    struct ctl_uri u;
    int r = ctl_uri_parse(uri, &u, err);
    if (r < 0)
        return r;
    if (u.kind != CTL_URI_TCP)
        return gw_error_set(err, EINVAL, "the destination must be a peer daemon's tcp:HOST:PORT, "
                            "not '%s'", uri);
    const char *h = u.host;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if (n == 0 || n >= len)
        return gw_error_set(err, EINVAL, "bad host in '%s'", uri);
    memcpy(host, h, n);
    host[n] = '\0';
    return 0;
}

struct json_object *mig_finish_to_json(const struct job *j, bool cancelled, bool postcopy,
                                       struct json_object *stats)
{
    struct json_object *o = mig_head_to_json(j->id, j->uuid), *c = json_object_new_object();
    json_object_object_add(c, "cancelled", json_object_new_boolean(cancelled));
    json_object_object_add(c, "postcopy", json_object_new_boolean(postcopy));
    if (stats)
        json_object_object_add(c, "stats", stats);
    json_object_object_add(o, "cookie", c);
    return o;
}

int mig_finish_from_json(struct json_object *args, struct mig_finish *f, struct gw_error *err)
{
    struct json_object *c, *v;
    memset(f, 0, sizeof(*f));
    int r = mig_head_from_json(args, &f->head, err);
    if (r < 0)
        return r;
    if (!json_object_object_get_ex(args, "cookie", &c) || !json_object_is_type(c, json_type_object))
        return gw_error_set(err, EINVAL, "missing argument 'cookie'");
    if ((r = ctl_arg_bool(c, "cancelled", &f->cancelled, err)) < 0 ||
        (r = ctl_arg_bool(c, "postcopy", &f->postcopy, err)) < 0)
        return r;
    f->stats = json_object_object_get_ex(c, "stats", &v) ? v : NULL;
    return 0;
}

int mig_uri_from_reply(struct json_object *ret, const char *what, char *uri, size_t len,
                       struct gw_error *err)
{
    const char *u = qmp_json_get_str(ret, "uri");
    struct ctl_uri parsed;
    if (!u || strlen(u) >= len)
        return gw_error_set(err, EPROTO, "the destination's %s has no valid 'uri'", what);
    /* It becomes our VMM's `migrate` uri: a peer may name where its VMM
     * listens, never a unix: socket or a file: on this host. */
    if (ctl_uri_parse(u, &parsed, NULL) < 0 || parsed.kind != CTL_URI_TCP || !parsed.host[0])
        return gw_error_set(err, EPROTO, "the destination's %s has 'uri' \"%.64s\", not a "
                            "tcp:HOST:PORT address", what, u);
    snprintf(uri, len, "%s", u);
    return 0;
}

int mig_outcome_from_reply(struct json_object *ret, enum job_peer_outcome *out,
                           struct gw_error *err)
{
    const char *s;
    int r = ctl_arg_str(ret, "outcome", true, &s, err);
    if (r < 0)
        return r;
    if (job_peer_outcome_from_name(s, out) < 0 || *out == JOB_PEER_UNREACHABLE)
        return gw_error_set(err, EINVAL, "unknown outcome '%s' from the peer", s);
    return 0;
}

static bool is(const char *a, const char *b) { return a && strcmp(a, b) == 0; }

enum mig_perform_step mig_perform_classify(const char *status, bool switched)
{
    if (is(status, "completed"))
        return switched ? MIG_PERFORM_POSTCOPY : MIG_PERFORM_COMPLETED;
    if (is(status, "postcopy-active"))
        return switched ? MIG_PERFORM_POSTCOPY : MIG_PERFORM_CONTINUE;
    if (status && strncmp(status, "postcopy-", 9) == 0)
        return switched ? MIG_PERFORM_BROKEN : MIG_PERFORM_FAILED;
    if (is(status, "failed") || is(status, "cancelled"))
        return switched ? MIG_PERFORM_BROKEN : MIG_PERFORM_FAILED;
    if (!status || !status[0] || is(status, "none"))
        return switched ? MIG_PERFORM_BROKEN : MIG_PERFORM_FAILED; /* no migration: the VMM forgot it */
    return MIG_PERFORM_CONTINUE; /* setup, active, device, cancelling */
}

static bool is_postcopy(const char *status)
{
    return status && strncmp(status, "postcopy-", 9) == 0;
}

enum mig_watch_step mig_watch_classify(enum job_phase phase, const char *status,
                                       uint64_t arrived_ms, uint64_t now_ms, uint64_t finish_wait_ms)
{
    switch (phase) {
    case JOB_PHASE_PREPARE:
        if (is(status, "failed") || is(status, "cancelled"))
            return MIG_WATCH_DISCARD;
        /* Post-copy: the guest is, or may be, ours alone now (or the source
         * decides, by Finish, abort or a recovery): never a timer's. */
        if (is(status, "postcopy-active"))
            return MIG_WATCH_GO_ON;
        if (is_postcopy(status))
            return MIG_WATCH_POSTCOPY_FAILED; /* paused, recover, recover-setup */
        if (arrived_ms && now_ms - arrived_ms > finish_wait_ms)
            return MIG_WATCH_DISCARD;
        return MIG_WATCH_GO_ON;
    case JOB_PHASE_FINISH:
        if (is(status, "completed"))
            return MIG_WATCH_COMPLETE;
        if (is(status, "postcopy-paused") || is(status, "failed"))
            return MIG_WATCH_POSTCOPY_FAILED;
        return MIG_WATCH_GO_ON;
    default:
        return MIG_WATCH_GO_ON;
    }
}

bool mig_watch_start_overdue(const char *status, uint64_t watch_ms, uint64_t now_ms,
                             uint64_t start_wait_ms)
{
    bool waiting = !status || !status[0] || is(status, "none") || is(status, "setup");
    return waiting && now_ms - watch_ms > start_wait_ms;
}

bool mig_watch_unanswered_discard(enum job_phase phase, bool postcopy_seen, unsigned failed,
                                  unsigned max_failed)
{
    return phase == JOB_PHASE_PREPARE && !postcopy_seen && failed >= max_failed;
}

bool mig_abort_allowed(enum job_phase phase, bool vmm_switched)
{
    return (phase == JOB_PHASE_PREPARE || phase == JOB_PHASE_POSTCOPY_FAILED) && !vmm_switched;
}

bool mig_jobabort_allowed(enum job_phase phase)
{
    return phase == JOB_PHASE_PERFORM || phase == JOB_PHASE_PERFORM_POSTCOPY;
}

enum mig_force_verdict mig_force_resume_allowed(const struct mig_force_facts *f)
{
    if (f->kind == JOB_KIND_MIGRATION_IN)
        return MIG_FORCE_INCOMING;
    if (f->kind != JOB_KIND_MIGRATION_OUT)
        return MIG_FORCE_PHASE;
    if (f->job_switched)
        return MIG_FORCE_JOB_SWITCHED;
    if (mig_jobabort_allowed(f->phase))
        return MIG_FORCE_USE_ABORT;
    if (f->phase != JOB_PHASE_PERFORM_DONE)
        return MIG_FORCE_PHASE;
    if (!f->vmm_asked)
        return MIG_FORCE_RESUME;
    if (!f->vmm_answered)
        return MIG_FORCE_VMM_UNKNOWN;
    if ((f->vmm_said && f->vmm_started) || is_postcopy(f->vmm_status))
        return MIG_FORCE_VMM_SWITCHED;
    return f->vmm_said ? MIG_FORCE_RESUME : MIG_FORCE_VMM_UNKNOWN;
}

enum mig_perform_step mig_perform_unanswered(bool switched, unsigned failed, unsigned max_failed)
{
    if (failed < max_failed)
        return MIG_PERFORM_CONTINUE;
    return switched ? MIG_PERFORM_BROKEN : MIG_PERFORM_FAILED;
}

bool mig_vmm_may_have_switched(bool answered, const char *status, bool said, bool started)
{
    if (!answered)
        return true;
    if (!status || !status[0] || is(status, "none"))
        return false; /* no migration in this VMM */
    return !said || started;
}

bool mig_finish_already_running(const struct job *j, const struct mig_finish *f,
                                bool guest_running)
{
    if (f->cancelled)
        return false;
    if (j && (j->kind != JOB_KIND_MIGRATION_IN || strcmp(j->id, f->head.job) != 0))
        j = NULL; /* another job: it says nothing about this one */
    if (j && job_active(j))
        return false; /* find_job takes it */
    if (j && j->phase != JOB_PHASE_DONE)
        return false; /* failed: discarded here */
    return job_peer_outcome_of(j, guest_running) == JOB_PEER_RUNNING;
}

bool mig_finish_postcopy(bool said_postcopy, const char *status, bool vmm_switched)
{
    if (vmm_switched || is_postcopy(status))
        return true;
    if (is(status, "completed"))
        return false;
    return said_postcopy;
}

enum mig_confirm_step mig_confirm_classify(const char *status, unsigned failed_samples,
                                           unsigned max_failed)
{
    if (!status)
        return failed_samples >= max_failed ? MIG_CONFIRM_BROKEN : MIG_CONFIRM_WAIT;
    if (is(status, "completed"))
        return MIG_CONFIRM_DONE;
    if (is(status, "postcopy-active") || is(status, "postcopy-recover"))
        return MIG_CONFIRM_WAIT;
    return MIG_CONFIRM_BROKEN;
}

enum mig_resume_step mig_resume_classify(const struct mig_resume_facts *f)
{
    if (is(f->status, "postcopy-active") || is(f->status, "completed"))
        return MIG_RESUME_RUNNING;
    if (!is(f->status, "postcopy-recover") && !is(f->status, "postcopy-paused"))
        return MIG_RESUME_FAILED;
    if (is(f->status, "postcopy-paused")) {
        bool counted = f->pauses_before >= 0 && f->pauses_now >= 0;
        if (counted && f->pauses_now > f->pauses_before)
            return MIG_RESUME_FAILED;
        if (!counted && f->seen_recover && f->errmsg &&
            strncmp(f->errmsg, "recovery failed:", 16) == 0)
            return MIG_RESUME_FAILED;
    }
    return f->elapsed_ms > f->limit_ms ? MIG_RESUME_TIMEOUT : MIG_RESUME_WAIT;
}

/* Does the destination's record of the job (or its absence) let the VMM's
 * word decide? */
static enum mig_resume_target resume_target_of_job(const struct mig_resume_target_facts *f,
                                                   bool completed)
{
    const struct job *j = f->job;
    bool ours = j && j->kind == JOB_KIND_MIGRATION_IN && strcmp(j->id, f->job_id) == 0;
    if (j && j->kind != JOB_KIND_NONE && !ours && job_active(j))
        return MIG_RESUME_TARGET_REFUSE; /* another job holds the domain */
    if (ours && j->phase == JOB_PHASE_POSTCOPY_FAILED)
        return completed           ? MIG_RESUME_TARGET_COMPLETED
               : f->only_completed ? MIG_RESUME_TARGET_REFUSE
                                   : MIG_RESUME_TARGET_RECOVER;
    if (ours && j->phase == JOB_PHASE_FAILED)
        return MIG_RESUME_TARGET_REFUSE; /* discarded here */
    /* prepare, finish, done, or no record of it (or of an ended other job) */
    return completed ? MIG_RESUME_TARGET_COMPLETED : MIG_RESUME_TARGET_REFUSE;
}

enum mig_resume_target mig_resume_target_classify(const struct mig_resume_target_facts *f)
{
    if (!f->domain_active)
        return MIG_RESUME_TARGET_REFUSE; /* no VMM here to listen */
    return resume_target_of_job(f, is(f->vmm_status, "completed") && f->vmm_switched);
}

enum mig_paused_step mig_paused_classify(const struct mig_paused_facts *f)
{
    if (!is(f->vmm_status, "postcopy-paused") || f->resumes >= f->max_resumes)
        return MIG_PAUSED_FAILED;
    if (!f->asked)
        return MIG_PAUSED_ASK_PEER;
    return f->peer == JOB_PEER_RUNNING ? MIG_PAUSED_RESUME : MIG_PAUSED_FAILED;
}

bool mig_host_postcopy_supported(void)
{
#ifdef SYS_userfaultfd
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        close(fd);
        return true;
    }
#endif
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        close(dev);
        return true;
    }
    return false;
}
