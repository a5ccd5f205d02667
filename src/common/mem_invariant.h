/* The test guest's memory invariant (docs/test-guest.md): byte 0 of every
 * 4 KiB page equals its predecessor's, except at most one boundary where it
 * is one less (mod 256). Pure; used by godwit-memcheck and tests.
 * Returns: true when the invariant holds; the report says where it breaks. */
#ifndef GW_COMMON_MEM_INVARIANT_H
#define GW_COMMON_MEM_INVARIANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mem_invariant_report {
    uint64_t pages;        /* pages examined */
    uint64_t boundary;     /* page index of the drop (0 = none) */
    unsigned boundaries;   /* drops seen (at most 1 when it holds) */
    uint64_t bad_page;     /* first page breaking it (when it does not hold) */
    uint8_t first, last;   /* byte 0 of the first and last page */
};

bool mem_invariant_check(const uint8_t *buf, size_t len, struct mem_invariant_report *rep);

#endif
