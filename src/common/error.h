/* Error objects for errors that must reach a person.
 *
 * The function that detects an error fills a struct gw_error (if the caller
 * passed one: err may be NULL) and returns -errno; callers either pass the
 * error up unchanged or report it, never both. The first error set wins. */
#ifndef GW_COMMON_ERROR_H
#define GW_COMMON_ERROR_H

#include <stdbool.h>

#define GW_ERROR_MSG_MAX 512

struct gw_error {
    int code;                    /* positive errno, 0 = no error */
    char msg[GW_ERROR_MSG_MAX];  /* human-readable, no trailing newline */
};

void gw_error_init(struct gw_error *err);
/* Set (if err is non-NULL and empty). Returns -code so callers can write
 * `return gw_error_set(err, EINVAL, "...")`. */
int gw_error_set(struct gw_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefix an already-set message with context ("loading kernel: ..."). */
void gw_error_prefix(struct gw_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool gw_error_is_set(const struct gw_error *err);

#endif
