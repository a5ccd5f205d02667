/* One JSON object read from text that must hold nothing else: the one
 * reader of the daemon's state files (definitions, status, jobs) and of its
 * control messages, so that all of them refuse the same things the same way.
 *
 * The text must hold one JSON object and nothing after it but white space
 * (space, tab, CR, LF). json-c's default mode is used: it also takes C and
 * C++ comments as white space (docs/daemon.md). A NUL byte
 * anywhere is refused (json-c would stop there, or take it for a part of a
 * comment). Anything else is refused whole, never half-read, with err
 * saying where (byte offset, line, column) and what was found there.
 *
 * Returns: 0 with a new object in *out, or -EINVAL (-ENOMEM, -E2BIG) with *out NULL
 * and err filled. Pure: no I/O, no shared state. */
#ifndef GW_COMMON_JSON_TEXT_H
#define GW_COMMON_JSON_TEXT_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/error.h"

/* What one text may hold, counted before json-c allocates anything (an
 * object or array costs json-c ~0.5-1 KiB of heap): -E2BIG beyond. */
#define JSON_TEXT_MAX_CONTAINERS 16384u
#define JSON_TEXT_MAX_VALUES     131072u

int json_text_object(const char *text, size_t len, struct json_object **out, struct gw_error *err);

/* The whole of the regular file at path, of at most max bytes, read as by
 * json_text_object. -ENOENT when there is no such file (err not filled),
 * -EFBIG over max, -EINVAL for a file that is not regular (a FIFO too: it is
 * opened without waiting for a writer) or grew while it
 * was read; messages do not name the path (the caller prefixes it). */
int json_file_object(const char *path, size_t max, struct json_object **out, struct gw_error *err);

#endif
