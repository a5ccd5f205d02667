/* libFuzzer target: a domain definition as a user submits it (the JSON of
 * `godwit define FILE`, the "definition" of a domain-define request, the
 * "domain" of a peer's begin cookie) through dom_def_from_json.
 * Oracles: a refused definition carries an errno and a message; an
 * accepted one obeys every rule of docs/daemon.md ("Domain JSON"), keeps
 * each string it was given byte for byte, survives dom_def_copy, and
 * dom_def_to_json turns it into text that parses back to the same
 * definition and serialises to the same text (the normal form is stable). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/domain_def.h"
#include "fuzz_util.h"

static void check_rules(const struct dom_def *d)
{
    char uuid[DOM_UUID_LEN + 1];
    const struct dom_policy *p = &d->policy;
    FUZZ_CHECK(dom_name_valid(d->name));
    FUZZ_CHECK(dom_uuid_parse(d->uuid, uuid) && strcmp(uuid, d->uuid) == 0);
    FUZZ_CHECK(d->memory_mib >= 2 && d->memory_mib <= DOM_MAX_MEMORY_MIB && d->memory_mib % 2 == 0);
    FUZZ_CHECK(d->vcpus >= 1 && d->vcpus <= DOM_MAX_VCPUS);
    FUZZ_CHECK(d->test_guest != (d->kernel != NULL));
    FUZZ_CHECK(!d->initrd || d->kernel);
    FUZZ_CHECK(p->max_downtime_ms >= 1 && p->max_downtime_ms <= DOM_MAX_DOWNTIME_MS);
    FUZZ_CHECK(p->bandwidth_mib_s <= 1u << 20);
    FUZZ_CHECK(p->completion_timeout_s <= 86400);
    FUZZ_CHECK(p->switchover_retries <= 100);
    FUZZ_CHECK((unsigned)p->timeout_action < DOM_TIMEOUT__COUNT);
    FUZZ_CHECK(p->timeout_action != DOM_TIMEOUT_POSTCOPY || p->permit_postcopy);
}

/* A string member that was accepted is stored whole: no NUL byte inside
 * it cut it short (the name, a kernel path or a command line must not
 * mean something else than what was submitted). */
static void check_strings_kept(struct json_object *o, const struct dom_def *d)
{
    static const char *const keys[] = { "name", "kernel", "initrd", "cmdline", "serial_log", "uuid" };
    const char *const vals[] = { d->name, d->kernel, d->initrd, d->cmdline, d->serial_log, d->uuid };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct json_object *v;
        if (!json_object_object_get_ex(o, keys[i], &v) || !json_object_is_type(v, json_type_string))
            continue;
        size_t n = (size_t)json_object_get_string_len(v);
        FUZZ_CHECK(vals[i] && strlen(vals[i]) == n);
        FUZZ_CHECK(strncasecmp(vals[i], json_object_get_string(v), n) == 0);
    }
}

static bool def_equal(const struct dom_def *a, const struct dom_def *b)
{
    const struct dom_policy *p = &a->policy, *q = &b->policy;
    return strcmp(a->name, b->name) == 0 && strcmp(a->uuid, b->uuid) == 0 &&
           a->memory_mib == b->memory_mib && a->memory_prealloc == b->memory_prealloc &&
           a->vcpus == b->vcpus && a->test_guest == b->test_guest &&
           fuzz_str_eq(a->kernel, b->kernel) && fuzz_str_eq(a->initrd, b->initrd) &&
           fuzz_str_eq(a->cmdline, b->cmdline) && fuzz_str_eq(a->serial_log, b->serial_log) &&
           p->permit_postcopy == q->permit_postcopy &&
           p->permit_auto_converge == q->permit_auto_converge &&
           p->max_downtime_ms == q->max_downtime_ms && p->bandwidth_mib_s == q->bandwidth_mib_s &&
           p->completion_timeout_s == q->completion_timeout_s &&
           p->timeout_action == q->timeout_action && p->switchover_retries == q->switchover_retries;
}

static void round_trip(const struct dom_def *d)
{
    struct dom_def back, copy;
    struct gw_error err;
    gw_error_init(&err);
    struct json_object *o = dom_def_to_json(d), *wire = fuzz_over_the_wire(o, JSON_C_TO_STRING_PRETTY);
    FUZZ_CHECK(dom_def_from_json(wire, &back, &err) == 0);
    FUZZ_CHECK(def_equal(d, &back));
    struct json_object *o2 = dom_def_to_json(&back);
    FUZZ_CHECK(strcmp(json_object_to_json_string(o), json_object_to_json_string(o2)) == 0);
    FUZZ_CHECK(dom_def_copy(&copy, d) == 0 && def_equal(d, &copy));
    dom_def_fini(&copy);
    dom_def_fini(&back);
    json_object_put(o2);
    json_object_put(wire);
    json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_object *o = fuzz_parse_json(data, size);
    if (!o)
        return 0;
    struct dom_def def;
    struct gw_error err;
    gw_error_init(&err);
    int r = dom_def_from_json(o, &def, &err);
    if (r < 0) {
        fuzz_check_refused(r, &err);
    } else {
        check_rules(&def);
        check_strings_kept(o, &def);
        round_trip(&def);
    }
    dom_def_fini(&def);
    json_object_put(o);
    return 0;
}
