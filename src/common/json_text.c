/* One JSON object from a text or a file (json_text.h). */
#include "common/json_text.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* Line and column (from 1) of byte off of text. */
static void line_col(const char *text, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off; i++) {
        (*col)++;
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        }
    }
}

/* "offset N (line L, column C)" for byte off of text. */
static void where(char *buf, size_t cap, const char *text, size_t off)
{
    size_t line, col;
    line_col(text, off, &line, &col);
    snprintf(buf, cap, "offset %zu (line %zu, column %zu)", off, line, col);
}

/* The first bytes of text[0 .. len) as a quoted C-like string, followed by
 * how many more there are: "xyz", "{\"a\": 1,\n  \"b\"" and 40 more bytes. */
#define SHOW_MAX 16
static void show(char *buf, size_t cap, const char *text, size_t len)
{
    size_t n = len < SHOW_MAX ? len : SHOW_MAX, o = 0;
    char q[SHOW_MAX * 4 + 3];
    q[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\')
            o += (size_t)sprintf(q + o, "\\%c", c);
        else if (c == '\n')
            o += (size_t)sprintf(q + o, "\\n");
        else if (c < 0x20 || c >= 0x7f)
            o += (size_t)sprintf(q + o, "\\x%02x", c);
        else
            q[o++] = (char)c;
    }
    q[o++] = '"';
    q[o] = '\0';
    if (len > n)
        snprintf(buf, cap, "%s and %zu more bytes", q, len - n);
    else
        snprintf(buf, cap, "%s", q);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t skip_blanks(const char *text, size_t len, size_t off)
{
    while (off < len && is_blank(text[off]))
        off++;
    return off;
}

/* json-c spends ~0.5-1 KiB on every object or array (hash table or slot
 * array) and tens of bytes on every other value: `[{},{},...]` of 1 MiB
 * became ~260 MB of heap. Counted before it parses (outside strings;
 * comments count too, which only errs on the side of refusing). */
static int too_many_values(const char *text, size_t len, struct gw_error *err)
{
    size_t containers = 0, values = 1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            containers++;
        } else if (c == ',') {
            values++;
        }
    }
    if (containers > JSON_TEXT_MAX_CONTAINERS)
        return gw_error_set(err, E2BIG, "%zu objects and arrays, more than %u", containers,
                            JSON_TEXT_MAX_CONTAINERS);
    if (values > JSON_TEXT_MAX_VALUES)
        return gw_error_set(err, E2BIG, "%zu values, more than %u", values, JSON_TEXT_MAX_VALUES);
    return 0;
}

static int nul_byte(const char *text, const char *nul, struct gw_error *err)
{
    char at[96];
    where(at, sizeof(at), text, (size_t)(nul - text));
    return gw_error_set(err, EINVAL, "not valid JSON: a NUL byte at %s", at);
}

/* Why json-c stopped short of a whole object (text[start] is the first
 * byte that is not white space). */
static int parse_failed(const char *text, size_t len, size_t start, size_t end,
                        enum json_tokener_error jerr, struct gw_error *err)
{
    char at[96], found[SHOW_MAX * 4 + 40];
    if (jerr == json_tokener_continue && text[start] != '{' && text[start] != '/') {
        show(found, sizeof(found), text + start, len - start); /* "null", "12": json-c waits */
        return gw_error_set(err, EINVAL, "not a JSON object: %s", found);
    }
    if (jerr == json_tokener_continue) {
        where(at, sizeof(at), text, len);
        return gw_error_set(err, EINVAL, "the text ends at %s before the JSON object does", at);
    }
    where(at, sizeof(at), text, end);
    return gw_error_set(err, EINVAL, "not valid JSON: %s at %s", json_tokener_error_desc(jerr), at);
}

int json_text_object(const char *text, size_t len, struct json_object **out, struct gw_error *err)
{
    *out = NULL;
    if (len > INT_MAX)
        return gw_error_set(err, EFBIG, "%zu bytes, too many to parse", len);
    /* Before json-c: it stops at one ("unexpected end of data") or takes it
     * for a part of a comment. */
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return nul_byte(text, nul, err);
    size_t start = skip_blanks(text, len, 0);
    if (start == len)
        return gw_error_set(err, EINVAL, "empty (no JSON object in it)");
    if (too_many_values(text, len, err) < 0)
        return -err->code;
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return gw_error_set(err, ENOMEM, "out of memory");
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    int r = 0;
    char at[96], found[SHOW_MAX * 4 + 40];
    if (jerr != json_tokener_success)
        r = parse_failed(text, len, start, end, jerr, err);
    else if (!json_object_is_type(o, json_type_object)) /* o is NULL for "null" */
        r = gw_error_set(err, EINVAL, "a JSON %s, not an object", json_type_to_name(json_object_get_type(o)));
    else if ((end = skip_blanks(text, len, end)) < len) {
        where(at, sizeof(at), text, end);
        show(found, sizeof(found), text + end, len - end);
        r = gw_error_set(err, EINVAL, "unexpected data after the JSON object at %s: %s", at, found);
    }
    if (r < 0) {
        json_object_put(o);
        return r;
    }
    *out = o;
    return 0;
}

/* The whole of a regular file of at most max bytes (NUL added). */
static int read_file(const char *path, size_t max, char **text, size_t *len, struct gw_error *err)
{
    *text = NULL;
    /* O_NONBLOCK: a FIFO in the file's place is refused below, its open()
     * does not wait for a writer (reads of a regular file ignore it). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? -ENOENT : gw_error_set(err, errno, "cannot open: %m");
    struct stat st;
    int r = fstat(fd, &st) < 0 ? gw_error_set(err, errno, "cannot stat: %m") : 0;
    if (r == 0 && !S_ISREG(st.st_mode))
        r = gw_error_set(err, EINVAL, "not a regular file");
    else if (r == 0 && (uint64_t)st.st_size > max)
        r = gw_error_set(err, EFBIG, "%lld bytes, over the limit of %zu", (long long)st.st_size,
                         max);
    size_t cap = r == 0 ? (size_t)st.st_size + 1 : 0, n = 0; /* + 1: to see it grow */
    char *buf = r == 0 ? malloc(cap + 1) : NULL;
    if (r == 0 && !buf)
        r = gw_error_set(err, ENOMEM, "out of memory");
    while (r == 0 && n < cap) {
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            r = gw_error_set(err, errno, "cannot read: %m");
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    if (r == 0 && n == cap)
        r = gw_error_set(err, EINVAL, "the file grew while it was read");
    close(fd);
    if (r < 0) {
        free(buf);
        return r;
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

int json_file_object(const char *path, size_t max, struct json_object **out, struct gw_error *err)
{
    char *text;
    size_t len = 0;
    *out = NULL;
    int r = read_file(path, max, &text, &len, err);
    if (r == 0)
        r = json_text_object(text, len, out, err);
    free(text);
    return r;
}
