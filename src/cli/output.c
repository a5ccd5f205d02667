/* godwit's output helpers: errors, virsh-style tables and labels. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_fail_err(const struct gw_error *err)
{
    return cli_fail("%s", err->msg[0] ? err->msg : "unknown error");
}

/* " Id   Name   State" then dashes, then rows: columns padded to their
 * widest cell, three spaces apart, one leading space. */
void cli_table(FILE *out, const char *const *header, size_t ncols, const char *const *cells,
               size_t nrows)
{
    size_t width[CLI_MAX_OPTS] = { 0 }, total = 0;
    for (size_t c = 0; c < ncols && c < CLI_MAX_OPTS; c++) {
        width[c] = strlen(header[c]);
        for (size_t r = 0; r < nrows; r++)
            if (strlen(cells[r * ncols + c]) > width[c])
                width[c] = strlen(cells[r * ncols + c]);
        total += width[c] + 3;
    }
    for (size_t r = 0; r <= nrows; r++) {
        const char *const *row = r == 0 ? header : cells + (r - 1) * ncols;
        for (size_t c = 0; c < ncols; c++) {
            if (c + 1 < ncols)
                fprintf(out, " %-*s  ", (int)width[c], row[c]);
            else
                fprintf(out, " %s", row[c]);
        }
        fputc('\n', out);
        if (r == 0) {
            for (size_t i = 0; i < total + 1; i++)
                fputc('-', out);
            fputc('\n', out);
        }
    }
    fputc('\n', out);
}

void cli_label(FILE *out, const char *label, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(out, "%-15s ", label);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
}

struct json_object *cli_domain_args(const char *name)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "domain", json_object_new_string(name));
    return o;
}
