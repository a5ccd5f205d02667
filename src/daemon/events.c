/* The daemon's event bus. */
#include "daemon/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct event_sub {
    struct event_sub *next;
    char *domain;
    char *type;
    event_deliver_fn fn;
    void *opaque;
};

struct event_bus {
    pthread_mutex_t lock;
    struct event_sub *subs;
};

bool event_type_known(const char *type)
{
    static const char *const types[] = { "lifecycle", "migration-iteration", "job-completed" };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(type, types[i]) == 0)
            return true;
    return false;
}

struct event_bus *event_bus_new(void)
{
    struct event_bus *bus = calloc(1, sizeof(*bus));
    if (bus)
        pthread_mutex_init(&bus->lock, NULL);
    return bus;
}

static void sub_free(struct event_sub *s)
{
    free(s->domain);
    free(s->type);
    free(s);
}

void event_bus_free(struct event_bus *bus)
{
    if (!bus)
        return;
    while (bus->subs) {
        struct event_sub *s = bus->subs;
        bus->subs = s->next;
        sub_free(s);
    }
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

struct event_sub *event_bus_subscribe(struct event_bus *bus, const char *domain, const char *type,
                                      event_deliver_fn fn, void *opaque)
{
    struct event_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->domain = domain ? strdup(domain) : NULL;
    s->type = type ? strdup(type) : NULL;
    if ((domain && !s->domain) || (type && !s->type)) {
        sub_free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->fn = fn;
    s->opaque = opaque;
    pthread_mutex_lock(&bus->lock);
    s->next = bus->subs;
    bus->subs = s;
    pthread_mutex_unlock(&bus->lock);
    return s;
}

void event_bus_unsubscribe(struct event_bus *bus, struct event_sub *sub)
{
    if (!sub)
        return;
    pthread_mutex_lock(&bus->lock);
    for (struct event_sub **p = &bus->subs; *p; p = &(*p)->next)
        if (*p == sub) {
            *p = sub->next;
            break;
        }
    pthread_mutex_unlock(&bus->lock);
    sub_free(sub);
}

static const char *member(struct json_object *ev, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(ev, key, &v) ? json_object_get_string(v) : NULL;
}

static bool matches(const struct event_sub *s, struct json_object *ev)
{
    if (s->type && strcmp(s->type, member(ev, "event") ? member(ev, "event") : "") != 0)
        return false;
    if (!s->domain)
        return true;
    const char *name = member(ev, "domain"), *uuid = member(ev, "uuid");
    return (name && strcmp(name, s->domain) == 0) || (uuid && strcasecmp(uuid, s->domain) == 0);
}

void event_bus_publish(struct event_bus *bus, struct json_object *ev)
{
    size_t len = 0;
    const char *text = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &len);
    pthread_mutex_lock(&bus->lock);
    for (struct event_sub *s = bus->subs; text && s; s = s->next)
        if (matches(s, ev))
            s->fn(s->opaque, ev, text, len);
    pthread_mutex_unlock(&bus->lock);
    json_object_put(ev);
}
