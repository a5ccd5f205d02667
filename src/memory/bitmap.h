/* Page bitmaps: one bit per guest page, 64-bit words.
 * Pure helpers (no allocation except bitmap_new); safe for unit tests.
 * bitmap_set_atomic() may be called from any thread; the others need the
 * caller's exclusion. */
#ifndef GW_MEMORY_BITMAP_H
#define GW_MEMORY_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BITMAP_WORDS(nbits) (((nbits) + 63) / 64)

/* NULL + errno on failure; all bits clear. */
uint64_t *bitmap_new(size_t nbits);
void bitmap_free(uint64_t *map);

static inline bool bitmap_test(const uint64_t *map, size_t bit)
{
    return (map[bit / 64] >> (bit % 64)) & 1;
}
static inline void bitmap_set(uint64_t *map, size_t bit) { map[bit / 64] |= 1ULL << (bit % 64); }
static inline void bitmap_clear_bit(uint64_t *map, size_t bit)
{
    map[bit / 64] &= ~(1ULL << (bit % 64));
}
static inline void bitmap_set_atomic(uint64_t *map, size_t bit)
{
    __atomic_fetch_or(&map[bit / 64], 1ULL << (bit % 64), __ATOMIC_RELAXED);
}

/* Clear a bit atomically; true if this call cleared it (it was set). */
static inline bool bitmap_test_and_clear_atomic(uint64_t *map, size_t bit)
{
    uint64_t m = 1ULL << (bit % 64);
    return (__atomic_fetch_and(&map[bit / 64], ~m, __ATOMIC_ACQ_REL) & m) != 0;
}

void bitmap_zero(uint64_t *map, size_t nbits);
/* Set bits [start, start+n). */
void bitmap_set_range(uint64_t *map, size_t start, size_t n);
void bitmap_clear_range(uint64_t *map, size_t start, size_t n);
size_t bitmap_count(const uint64_t *map, size_t nbits);
/* How many bits are set in a or in b (neither changed). */
size_t bitmap_count_or(const uint64_t *a, const uint64_t *b, size_t nbits);
/* How many bits are set in a and in b but not in c. */
size_t bitmap_count_and_andnot(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                               size_t nbits);
/* dst |= src over [dst_start, dst_start+n) taking src bits from 0 (bit-level
 * shift allowed). */
void bitmap_or_at(uint64_t *dst, size_t dst_start, const uint64_t *src, size_t n);
/* Clear in dst the bits of [from, nbits) that are set in src (src
 * untouched); returns how many were cleared. */
size_t bitmap_andnot_from(uint64_t *dst, const uint64_t *src, size_t from, size_t nbits);
/* dst bits [dst_start, dst_start+n) = src bits [src_start, src_start+n);
 * other dst bits untouched. */
void bitmap_copy_bits(uint64_t *dst, size_t dst_start, const uint64_t *src, size_t src_start,
                      size_t n);
/* Atomically take the words of `src` into `dst` (dst |= src; src = 0). */
void bitmap_take_atomic(uint64_t *dst, uint64_t *src, size_t nbits);
/* First set bit at or after `from`, or nbits if none. */
size_t bitmap_next_set(const uint64_t *map, size_t nbits, size_t from);

#endif
