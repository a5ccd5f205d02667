/* Request handlers for definitions and queries: domain-define,
 * domain-undefine, domain-list, domain-info, domain-state, domain-console. */
#define LOG_PREFIX "domains"
#include "daemon/domains.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "control/control.h"
#include "daemon/domain_store.h"
#include "daemon/monitor.h"
#include "daemon/vmm_proc.h"

#define CONSOLE_MAX_CHUNK (256u << 10)

/* ---- define / undefine ---- */

/* While the domain is active its VMM runs with dom->def: the new
 * definition is saved (STATE/domains) and waits in dom->next_def until the
 * domain stops (libvirt's persistent vs live configuration); the live one
 * is saved as run/NAME.def so that a restarted daemon still knows it. That
 * comes first: a crash between the two writes must not leave a new
 * persistent definition with no record of the one the VMM runs (a
 * restarted daemon would show, and migrate, the new one as running). */
static int save_live_def(struct daemon *dm, struct domain *dom, struct gw_error *err)
{
    if (!dom_state_active(dom->state) && !dom->starting)
        return 0;
    char path[PATH_MAX];
    domain_path(dm, dom, STORE_LIVE_DEF, path, sizeof(path));
    struct json_object *o = dom_def_to_json(&dom->def);
    int r = o ? store_write_json(path, o, err) : gw_error_set(err, ENOMEM, "out of memory");
    json_object_put(o);
    return r;
}

static int set_next_def(struct daemon *dm, struct domain *dom, const struct dom_def *def,
                        struct gw_error *err)
{
    struct dom_def *next = malloc(sizeof(*next));
    if (!next || dom_def_copy(next, def) < 0) {
        free(next);
        return gw_error_set(err, ENOMEM, "out of memory");
    }
    if (dom->next_def) {
        dom_def_fini(dom->next_def);
        free(dom->next_def);
    }
    dom->next_def = next;
    domain_apply_next_def(dm, dom); /* at once when inactive (our job holds the slot) */
    return 0;
}

static int update_def(struct daemon *dm, struct domain *dom, struct dom_def *def,
                      struct gw_error *err)
{
    int r = domain_job_begin(dm, &dom, DOM_JOB_MODIFY, "define", err);
    if (r < 0)
        return r;
    strcpy(def->uuid, dom->def.uuid);
    bool active = dom_state_active(dom->state);
    if ((r = save_live_def(dm, dom, err)) == 0 &&
        (r = store_save_def(dm->cfg.state_dir, def, err)) == 0 &&
        (r = set_next_def(dm, dom, def, err)) == 0) {
        if (active)
            log_info("domain '%s': new definition saved; it applies once the domain stops",
                     dom->def.name);
        daemon_emit_lifecycle(dm, dom, DOM_EVENT_DEFINED, DOM_DETAIL_UPDATED);
    }
    domain_job_end(dm, dom);
    return r;
}

static int add_def(struct daemon *dm, struct dom_def *def, struct gw_error *err)
{
    struct domain *other = daemon_find_domain_uuid(dm, def->uuid);
    if (other)
        return gw_error_set(err, EEXIST, "domain '%s' already exists with uuid %s",
                            other->def.name, def->uuid);
    struct domain *dom = domain_new(def);
    if (!dom)
        return gw_error_set(err, ENOMEM, "out of memory");
    int r = store_save_def(dm->cfg.state_dir, def, err);
    if (r == 0)
        r = domain_save_status(dm, dom, err);
    if (r < 0) {
        store_remove_domain(dm->cfg.state_dir, def->name);
        domain_free(dom);
        return r;
    }
    dom->next = dm->domains;
    dm->domains = dom;
    daemon_emit_lifecycle(dm, dom, DOM_EVENT_DEFINED, DOM_DETAIL_ADDED);
    return 0;
}

static int h_define(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                    struct json_object **ret, struct gw_error *err)
{
    struct json_object *o, *uuid;
    if (!json_object_object_get_ex(args, "definition", &o))
        return gw_error_set(err, EINVAL, "missing argument 'definition'");
    struct dom_def def;
    int r = dom_def_from_json(o, &def, err);
    if (r < 0)
        goto out;
    bool uuid_given = json_object_object_get_ex(o, "uuid", &uuid);
    pthread_mutex_lock(&dm->lock);
    struct domain *dom = NULL;
    for (struct domain *d = dm->domains; d; d = d->next)
        if (strcmp(d->def.name, def.name) == 0)
            dom = d;
    bool updated = dom != NULL;
    if (dom && uuid_given && strcmp(dom->def.uuid, def.uuid) != 0)
        r = gw_error_set(err, EEXIST, "domain '%s' is already defined with uuid %s", def.name,
                         dom->def.uuid);
    else
        r = dom ? update_def(dm, dom, &def, err) : add_def(dm, &def, err);
    pthread_mutex_unlock(&dm->lock);
    if (r == 0) {
        *ret = json_object_new_object();
        json_object_object_add(*ret, "name", json_object_new_string(def.name));
        json_object_object_add(*ret, "uuid", json_object_new_string(def.uuid));
        json_object_object_add(*ret, "updated", json_object_new_boolean(updated));
    }
out:
    dom_def_fini(&def);
    return r;
}

static void unlink_domain(struct daemon *dm, struct domain *dom)
{
    for (struct domain **p = &dm->domains; *p; p = &(*p)->next)
        if (*p == dom) {
            *p = dom->next;
            return;
        }
}

static int h_undefine(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                      struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, &dom, err);
    if (r == 0)
        r = domain_job_begin(dm, &dom, DOM_JOB_MODIFY, "undefine", err);
    if (r < 0)
        goto out;
    if (dom_state_active(dom->state)) {
        r = gw_error_set(err, EALREADY,
                         "Requested operation is not valid: cannot undefine domain '%s' while it "
                         "is running; shut it down or destroy it first", dom->def.name);
        domain_job_end(dm, dom);
        goto out;
    }
    monitor_join(dom);
    store_remove_domain(dm->cfg.state_dir, dom->def.name);
    daemon_emit_lifecycle(dm, dom, DOM_EVENT_UNDEFINED, DOM_DETAIL_REMOVED);
    unlink_domain(dm, dom);
    domain_free(dom);
    pthread_cond_broadcast(&dm->cond);
out:
    pthread_mutex_unlock(&dm->lock);
    return r;
}

/* ---- queries ---- */

static struct json_object *summary(const struct domain *dom)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_int(dom->id));
    json_object_object_add(o, "name", json_object_new_string(dom->def.name));
    json_object_object_add(o, "uuid", json_object_new_string(dom->def.uuid));
    json_object_object_add(o, "state", json_object_new_string(dom_state_name(dom->state)));
    json_object_object_add(o, "reason", json_object_new_string(dom_reason_name(dom->reason)));
    json_object_object_add(o, "job", json_object_new_string(dom_job_name(dom->job)));
    return o;
}

/* virsh's order: active domains by id, then inactive ones by name (the
 * daemon's list is newest first, and in directory order after a restart). */
static int list_order(const void *pa, const void *pb)
{
    const struct domain *a = *(const struct domain *const *)pa, *b = *(const struct domain *const *)pb;
    if (a->id >= 0 && b->id >= 0)
        return (a->id > b->id) - (a->id < b->id);
    if (a->id >= 0 || b->id >= 0)
        return a->id >= 0 ? -1 : 1;
    int c = strcasecmp(a->def.name, b->def.name);
    return c ? c : strcmp(a->def.name, b->def.name);
}

static int h_list(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                  struct json_object **ret, struct gw_error *err)
{
    bool all = false;
    int r = ctl_arg_bool(args, "all", &all, err);
    if (r < 0)
        return r;
    struct json_object *list = json_object_new_array();
    pthread_mutex_lock(&dm->lock);
    size_t n = 0, i = 0;
    for (struct domain *d = dm->domains; d; d = d->next)
        n++;
    struct domain **v = calloc(n ? n : 1, sizeof(*v));
    if (!v) {
        pthread_mutex_unlock(&dm->lock);
        json_object_put(list);
        return gw_error_set(err, ENOMEM, "out of memory");
    }
    for (struct domain *d = dm->domains; d; d = d->next)
        if (all || dom_state_active(d->state))
            v[i++] = d;
    qsort(v, i, sizeof(*v), list_order);
    for (size_t k = 0; k < i; k++)
        json_object_array_add(list, summary(v[k]));
    pthread_mutex_unlock(&dm->lock);
    free(v);
    *ret = json_object_new_object();
    json_object_object_add(*ret, "domains", list);
    return 0;
}

static int h_info(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                  struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, &dom, err);
    if (r == 0) {
        struct json_object *o = summary(dom);
        char log[PATH_MAX];
        domain_path(dm, dom, STORE_SERIAL_LOG, log, sizeof(log));
        json_object_object_add(o, "os_type", json_object_new_string("hvm"));
        json_object_object_add(o, "vcpus", json_object_new_int((int)dom->def.vcpus));
        json_object_object_add(o, "max_memory_kib", json_object_new_int64((int64_t)dom->def.memory_mib * 1024));
        json_object_object_add(o, "used_memory_kib", json_object_new_int64((int64_t)dom->def.memory_mib * 1024));
        json_object_object_add(o, "persistent", json_object_new_boolean(1));
        json_object_object_add(o, "autostart", json_object_new_boolean(0));
        json_object_object_add(o, "serial_log", json_object_new_string(log));
        if (dom_state_active(dom->state)) {
            json_object_object_add(o, "pid", json_object_new_int(dom->pid));
            json_object_object_add(o, "cpu_time_ns", json_object_new_int64((int64_t)vmm_cpu_time_ns(dom->pid)));
        }
        /* the persistent definition; while active the VMM runs with the live one
         * (vcpus, memory above), shown apart when they differ */
        json_object_object_add(o, "definition", dom_def_to_json(domain_persistent_def(dom)));
        if (dom->next_def)
            json_object_object_add(o, "live_definition", dom_def_to_json(&dom->def));
        *ret = o;
    }
    pthread_mutex_unlock(&dm->lock);
    return r;
}

static int h_state(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                   struct json_object **ret, struct gw_error *err)
{
    struct domain *dom;
    pthread_mutex_lock(&dm->lock);
    int r = daemon_lookup(dm, args, &dom, err);
    if (r == 0) {
        *ret = json_object_new_object();
        json_object_object_add(*ret, "state", json_object_new_string(dom_state_name(dom->state)));
        json_object_object_add(*ret, "reason", json_object_new_string(dom_reason_name(dom->reason)));
    }
    pthread_mutex_unlock(&dm->lock);
    return r;
}

/* ---- console ---- */

static int read_chunk(const char *path, int64_t offset, size_t max, struct json_object *o,
                      struct gw_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT)
        return gw_error_set(err, errno, "cannot open serial log '%s': %m", path);
    struct stat st = { 0 };
    if (fd >= 0)
        fstat(fd, &st);
    if (offset < 0)
        offset = st.st_size + offset > 0 ? st.st_size + offset : 0;
    if (offset > st.st_size)
        offset = st.st_size; /* the log was truncated (a new start) */
    if ((uint64_t)(st.st_size - offset) < max) /* what the log held at fstat: "size" says so */
        max = (size_t)(st.st_size - offset);
    uint8_t *buf = malloc(max ? max : 1);
    ssize_t n = fd >= 0 && buf && max ? pread(fd, buf, max, offset) : 0;
    if (n < 0)
        n = 0;
    char *b64 = buf ? ctl_base64(buf, (size_t)n) : NULL;
    free(buf);
    if (fd >= 0)
        close(fd);
    if (!b64)
        return gw_error_set(err, ENOMEM, "out of memory");
    json_object_object_add(o, "data", json_object_new_string(b64));
    json_object_object_add(o, "offset", json_object_new_int64(offset + n));
    json_object_object_add(o, "size", json_object_new_int64(st.st_size));
    free(b64);
    return 0;
}

static int h_console(struct daemon *dm, struct daemon_client *cl, struct json_object *args,
                     struct json_object **ret, struct gw_error *err)
{
    int64_t offset = 0, max = 64 << 10;
    struct domain *dom;
    int r;
    if ((r = ctl_arg_int(args, "offset", false, &offset, err)) < 0 ||
        (r = ctl_arg_int(args, "max", false, &max, err)) < 0)
        return r;
    if (max <= 0 || max > CONSOLE_MAX_CHUNK)
        max = CONSOLE_MAX_CHUNK;
    char path[PATH_MAX];
    bool active = false;
    pthread_mutex_lock(&dm->lock);
    r = daemon_lookup(dm, args, &dom, err);
    if (r == 0) {
        domain_path(dm, dom, STORE_SERIAL_LOG, path, sizeof(path));
        active = dom_state_active(dom->state);
    }
    pthread_mutex_unlock(&dm->lock);
    if (r < 0)
        return r;
    *ret = json_object_new_object();
    json_object_object_add(*ret, "active", json_object_new_boolean(active));
    return read_chunk(path, offset, (size_t)max, *ret, err);
}

const struct daemon_command domains_commands[] = {
    { "domain-define", h_define },
    { "domain-undefine", h_undefine },
    { "domain-list", h_list },
    { "domain-info", h_info },
    { "domain-state", h_state },
    { "domain-console", h_console },
};
const size_t domains_ncommands = sizeof(domains_commands) / sizeof(domains_commands[0]);
