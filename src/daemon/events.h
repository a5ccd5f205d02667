/* The daemon's event bus: lifecycle events now, migration events later
 * ("migration-iteration", "job-completed", ...). Publishers hand over a
 * complete control-protocol event message (control.h ctl_event_new); every
 * subscriber whose filters match gets it through its deliver hook.
 *
 * Returns: event_bus_new NULL + errno; event_bus_subscribe NULL + errno.
 * Threads: all functions are thread-safe. deliver hooks run on the
 * publisher's thread with the bus lock held: they must only queue (never
 * block or call back into the bus). After event_bus_unsubscribe returns,
 * the hook is never called again.
 * Lock order: daemon lock -> bus lock -> a subscriber's own lock. */
#ifndef GW_DAEMON_EVENTS_H
#define GW_DAEMON_EVENTS_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

struct event_bus;
struct event_sub;

/* ev is borrowed and must not be kept or serialised (json-c objects are
 * not thread-safe); text/len is its serialised form (borrowed: copy it). */
typedef void (*event_deliver_fn)(void *opaque, struct json_object *ev, const char *text, size_t len);

/* Whether type is an event type the daemon publishes ("lifecycle",
 * "migration-iteration", "job-completed"): a subscription to another one
 * (a misspelt --event) would wait for ever for nothing. */
bool event_type_known(const char *type);

struct event_bus *event_bus_new(void);
void event_bus_free(struct event_bus *bus);

/* domain: a name or UUID, NULL for every domain; type: an event type
 * ("lifecycle"), NULL for every type. Both are copied. */
struct event_sub *event_bus_subscribe(struct event_bus *bus, const char *domain, const char *type,
                                      event_deliver_fn fn, void *opaque);
void event_bus_unsubscribe(struct event_bus *bus, struct event_sub *sub);

/* Deliver ev (taken) to the matching subscribers. */
void event_bus_publish(struct event_bus *bus, struct json_object *ev);

#endif
