/* Helpers shared by the daemon-side fuzz targets (header only: each
 * fuzz_NAME.c is one translation unit). A failed oracle calls
 * __builtin_trap() so that libFuzzer saves the input. */
#ifndef GW_FUZZ_UTIL_H
#define GW_FUZZ_UTIL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/error.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

/* A refusal must say why: an errno and a message for a person. */
static inline void fuzz_check_refused(int r, const struct gw_error *err)
{
    FUZZ_CHECK(r < 0 && err->code == -r && err->msg[0]);
}

/* Parse len bytes of JSON text (any type), as json-c does for the daemon;
 * NULL when they are not one complete value. */
static inline struct json_object *fuzz_parse_json(const uint8_t *data, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return NULL;
    struct json_object *o = json_tokener_parse_ex(tok, (const char *)data, (int)len);
    if (o && json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* o as the peer (or the file) carries it: serialised, then parsed again. */
static inline struct json_object *fuzz_over_the_wire(struct json_object *o, int flags)
{
    size_t len;
    const char *text = json_object_to_json_string_length(o, flags, &len);
    FUZZ_CHECK(text);
    struct json_object *back = fuzz_parse_json((const uint8_t *)text, len);
    FUZZ_CHECK(back);
    return back;
}

static inline bool fuzz_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

#endif
