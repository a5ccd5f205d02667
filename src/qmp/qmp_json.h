/* JSON helpers shared by the QMP server, dispatcher and client: building
 * the protocol's messages (greeting, return, error, event) and turning a
 * message into a wire line.
 *
 * Returns: builders return a new json_object (the caller puts it) or NULL
 * on allocation failure; qmp_json_line() returns a malloc'd string the
 * caller frees, or NULL + errno.
 * Ownership: arguments marked "taken" become part of the result (and are put
 * even on failure); others are borrowed and get an extra reference.
 * Threads: all functions are pure and may run on any thread. */
#ifndef GW_QMP_QMP_JSON_H
#define GW_QMP_QMP_JSON_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

struct qmp_version;

/* Serialise o (borrowed) compactly and append "\r\n"; *len excludes the NUL. */
char *qmp_json_line(struct json_object *o, size_t *len);

/* {"QMP": {"version": {"qemu": {...}, "package": ...}, "capabilities": []}} */
struct json_object *qmp_json_greeting(const struct qmp_version *ver);
/* {"return": ret, "id": id}; ret taken (NULL: {}), id borrowed (NULL: none). */
struct json_object *qmp_json_return(struct json_object *ret, struct json_object *id);
/* {"error": {"class": cls, "desc": desc}, "id": id}; id borrowed. */
struct json_object *qmp_json_error(const char *cls, const char *desc, struct json_object *id);
/* {"event": name, "data": data, "timestamp": {"seconds", "microseconds"}};
 * data taken (NULL: no "data" member). */
struct json_object *qmp_json_event(const char *name, struct json_object *data, int64_t sec,
                                   int64_t usec);

/* Borrowed member of an object, or NULL (also when o is not an object). */
struct json_object *qmp_json_get(struct json_object *o, const char *key);
/* A string member, or NULL when absent or not a string. */
const char *qmp_json_get_str(struct json_object *o, const char *key);

#endif
