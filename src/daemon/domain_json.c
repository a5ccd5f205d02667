/* Domain definitions to and from JSON (docs/daemon.md, "Domain JSON"). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/domain_def.h"
#include "vmm/cpu_model.h"

static const char *const def_keys[] = {
    "name", "uuid", "memory_mib", "memory_prealloc", "vcpus", "test_guest", "kernel", "initrd",
    "cmdline", "serial_log", "cpu", "migration", NULL,
};
static const char *const policy_keys[] = {
    "permit_postcopy", "permit_auto_converge", "max_downtime_ms", "bandwidth_mib_s", "switchover_retries",
    "completion_timeout_s", "timeout_action", NULL,
};

static int check_keys(struct json_object *o, const char *const *known, const char *where,
                      struct gw_error *err)
{
    json_object_object_foreach(o, key, val) {
        (void)val;
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, key) == 0;
        if (!ok)
            return gw_error_set(err, EINVAL, "unknown key '%s' in %s", key, where);
    }
    return 0;
}

static int get_uint(struct json_object *o, const char *key, uint64_t min, uint64_t max,
                    uint64_t *out, struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return gw_error_set(err, EINVAL, "'%s' must be an integer", key);
    int64_t n = json_object_get_int64(v);
    if (n < 0 || (uint64_t)n < min || (uint64_t)n > max)
        return gw_error_set(err, EINVAL, "'%s' must be between %llu and %llu (got %lld)", key,
                            (unsigned long long)min, (unsigned long long)max, (long long)n);
    *out = (uint64_t)n;
    return 0;
}

static int get_bool(struct json_object *o, const char *key, bool *out, struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return gw_error_set(err, EINVAL, "'%s' must be true or false", key);
    *out = json_object_get_boolean(v);
    return 0;
}

/* A NUL byte would cut the string short: a name, path or command line
 * must not mean something else than what was written. */
static bool has_nul(struct json_object *v)
{
    return strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v);
}

/* A string member of at most max bytes: a definition must stay small
 * enough to be shown (a reply is at most CTL_MAX_MSG) and to start (the
 * VMM's argv: execve refuses E2BIG). */
#define DEF_CMDLINE_MAX (64u << 10)
#define DEF_PATH_MAX    4095u /* PATH_MAX less its NUL */
#define DEF_CPU_MAX     1024u

static int get_str(struct json_object *o, const char *key, size_t max, char **out,
                   struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return gw_error_set(err, EINVAL, "'%s' must be a string", key);
    if (has_nul(v))
        return gw_error_set(err, EINVAL, "'%s' contains a NUL byte", key);
    if ((size_t)json_object_get_string_len(v) > max)
        return gw_error_set(err, EINVAL, "'%s' is %d bytes long, over the limit of %zu", key,
                            json_object_get_string_len(v), max);
    free(*out);
    *out = strdup(json_object_get_string(v));
    return *out ? 0 : gw_error_set(err, ENOMEM, "out of memory");
}

static int parse_action(struct json_object *o, enum dom_timeout_action *out, struct gw_error *err)
{
    char *s = NULL;
    int r = get_str(o, "timeout_action", 32, &s, err);
    if (r < 0 || !s)
        return r;
    r = -EINVAL;
    for (int a = 0; a < DOM_TIMEOUT__COUNT; a++)
        if (strcmp(s, dom_timeout_action_name((enum dom_timeout_action)a)) == 0) {
            *out = (enum dom_timeout_action)a;
            r = 0;
        }
    if (r < 0)
        gw_error_set(err, EINVAL,
                     "'timeout_action' must be \"postcopy\", \"pause\" or \"abort\" (got \"%s\")", s);
    free(s);
    return r;
}

static int parse_policy(struct json_object *o, struct dom_policy *p, struct gw_error *err)
{
    if (!json_object_is_type(o, json_type_object))
        return gw_error_set(err, EINVAL, "'migration' must be an object");
    uint64_t downtime = p->max_downtime_ms, bw = p->bandwidth_mib_s, tmo = p->completion_timeout_s;
    uint64_t retries = p->switchover_retries;
    int r;
    if ((r = check_keys(o, policy_keys, "'migration'", err)) < 0 ||
        (r = get_bool(o, "permit_postcopy", &p->permit_postcopy, err)) < 0 ||
        (r = get_bool(o, "permit_auto_converge", &p->permit_auto_converge, err)) < 0 ||
        (r = get_uint(o, "max_downtime_ms", 1, DOM_MAX_DOWNTIME_MS, &downtime, err)) < 0 ||
        (r = get_uint(o, "bandwidth_mib_s", 0, 1u << 20, &bw, err)) < 0 ||
        (r = get_uint(o, "completion_timeout_s", 0, 86400, &tmo, err)) < 0 ||
        (r = get_uint(o, "switchover_retries", 0, 100, &retries, err)) < 0 ||
        (r = parse_action(o, &p->timeout_action, err)) < 0)
        return r;
    if (p->timeout_action == DOM_TIMEOUT_POSTCOPY && !p->permit_postcopy)
        return gw_error_set(err, EINVAL,
                            "'timeout_action' \"postcopy\" needs 'permit_postcopy': true");
    p->max_downtime_ms = (uint32_t)downtime;
    p->bandwidth_mib_s = (uint32_t)bw;
    p->completion_timeout_s = (uint32_t)tmo;
    p->switchover_retries = (uint32_t)retries;
    return 0;
}

static int parse_identity(struct json_object *o, struct dom_def *def, struct gw_error *err)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, "name", &v) || !json_object_is_type(v, json_type_string))
        return gw_error_set(err, EINVAL, "the definition needs a 'name' string");
    const char *name = json_object_get_string(v);
    if (has_nul(v) || !dom_name_valid(name))
        return gw_error_set(err, EINVAL,
                            "invalid domain name '%s': use 1-%d letters, digits, '-', '_' or '.', "
                            "not starting with '.' or '-'", name, DOM_NAME_MAX);
    strcpy(def->name, name);
    if (!json_object_object_get_ex(o, "uuid", &v) || json_object_is_type(v, json_type_null)) {
        dom_uuid_generate(def->uuid);
        return 0;
    }
    if (!json_object_is_type(v, json_type_string) || has_nul(v) ||
        !dom_uuid_parse(json_object_get_string(v), def->uuid))
        return gw_error_set(err, EINVAL, "invalid UUID '%s' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                            json_object_get_string(v));
    return 0;
}

static int parse_machine(struct json_object *o, struct dom_def *def, struct gw_error *err)
{
    uint64_t mem = 0, vcpus = 1;
    int r;
    if ((r = get_uint(o, "memory_mib", 2, DOM_MAX_MEMORY_MIB, &mem, err)) < 0 ||
        (r = get_uint(o, "vcpus", 1, DOM_MAX_VCPUS, &vcpus, err)) < 0 ||
        (r = get_bool(o, "memory_prealloc", &def->memory_prealloc, err)) < 0 ||
        (r = get_bool(o, "test_guest", &def->test_guest, err)) < 0 ||
        (r = get_str(o, "kernel", DEF_PATH_MAX, &def->kernel, err)) < 0 ||
        (r = get_str(o, "initrd", DEF_PATH_MAX, &def->initrd, err)) < 0 ||
        (r = get_str(o, "cmdline", DEF_CMDLINE_MAX, &def->cmdline, err)) < 0 ||
        (r = get_str(o, "serial_log", DEF_PATH_MAX, &def->serial_log, err)) < 0 ||
        (r = get_str(o, "cpu", DEF_CPU_MAX, &def->cpu, err)) < 0)
        return r;
    struct cpu_model_spec spec;
    if (def->cpu && cpu_model_parse(def->cpu, &spec, err) < 0) /* godwit-vmm --cpu's words */
        return -err->code;
    if (mem == 0)
        return gw_error_set(err, EINVAL, "the definition needs 'memory_mib'");
    if (mem % 2)
        return gw_error_set(err, EINVAL, "'memory_mib' must be a multiple of 2 (got %llu)",
                            (unsigned long long)mem);
    if (def->test_guest == (def->kernel != NULL))
        return gw_error_set(err, EINVAL, "give either 'kernel' or 'test_guest': true");
    if (def->initrd && !def->kernel)
        return gw_error_set(err, EINVAL, "'initrd' needs a 'kernel'");
    def->memory_mib = mem;
    def->vcpus = (unsigned)vcpus;
    return 0;
}

int dom_def_from_json(struct json_object *o, struct dom_def *def, struct gw_error *err)
{
    memset(def, 0, sizeof(*def));
    dom_policy_default(&def->policy);
    if (!json_object_is_type(o, json_type_object))
        return gw_error_set(err, EINVAL, "a domain definition must be a JSON object");
    struct json_object *pol;
    int r;
    if ((r = check_keys(o, def_keys, "the domain definition", err)) < 0 ||
        (r = parse_identity(o, def, err)) < 0 || (r = parse_machine(o, def, err)) < 0)
        return r;
    if (json_object_object_get_ex(o, "migration", &pol) && (r = parse_policy(pol, &def->policy, err)) < 0)
        return r;
    return 0;
}

static void add_str(struct json_object *o, const char *key, const char *s)
{
    if (s)
        json_object_object_add(o, key, json_object_new_string(s));
}

struct json_object *dom_def_to_json(const struct dom_def *def)
{
    struct json_object *o = json_object_new_object();
    add_str(o, "name", def->name);
    add_str(o, "uuid", def->uuid);
    json_object_object_add(o, "memory_mib", json_object_new_int64((int64_t)def->memory_mib));
    if (def->memory_prealloc)
        json_object_object_add(o, "memory_prealloc", json_object_new_boolean(1));
    json_object_object_add(o, "vcpus", json_object_new_int((int)def->vcpus));
    if (def->test_guest)
        json_object_object_add(o, "test_guest", json_object_new_boolean(1));
    add_str(o, "kernel", def->kernel);
    add_str(o, "initrd", def->initrd);
    add_str(o, "cmdline", def->cmdline);
    add_str(o, "serial_log", def->serial_log);
    add_str(o, "cpu", def->cpu);
    const struct dom_policy *p = &def->policy;
    struct json_object *m = json_object_new_object();
    json_object_object_add(m, "permit_postcopy", json_object_new_boolean(p->permit_postcopy));
    json_object_object_add(m, "permit_auto_converge", json_object_new_boolean(p->permit_auto_converge));
    json_object_object_add(m, "max_downtime_ms", json_object_new_int64(p->max_downtime_ms));
    json_object_object_add(m, "bandwidth_mib_s", json_object_new_int64(p->bandwidth_mib_s));
    json_object_object_add(m, "completion_timeout_s", json_object_new_int64(p->completion_timeout_s));
    add_str(m, "timeout_action", dom_timeout_action_name(p->timeout_action));
    json_object_object_add(m, "switchover_retries", json_object_new_int64(p->switchover_retries));
    json_object_object_add(o, "migration", m);
    return o;
}
