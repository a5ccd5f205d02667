#include "memory/bitmap.h"

#include <stdlib.h>
#include <string.h>

uint64_t *bitmap_new(size_t nbits)
{
    return calloc(BITMAP_WORDS(nbits) ? BITMAP_WORDS(nbits) : 1, sizeof(uint64_t));
}

void bitmap_free(uint64_t *map) { free(map); }

/* The bits of word nbits / 64 that lie below nbits (when nbits % 64 != 0). */
static inline uint64_t tail_mask(size_t nbits) { return (1ULL << (nbits % 64)) - 1; }

void bitmap_zero(uint64_t *map, size_t nbits)
{
    memset(map, 0, BITMAP_WORDS(nbits) * sizeof(uint64_t));
}

void bitmap_set_range(uint64_t *map, size_t start, size_t n)
{
    size_t end = start + n;
    while (start < end && start % 64)
        bitmap_set(map, start++);
    while (start + 64 <= end) {
        map[start / 64] = ~0ULL;
        start += 64;
    }
    while (start < end)
        bitmap_set(map, start++);
}

void bitmap_clear_range(uint64_t *map, size_t start, size_t n)
{
    size_t end = start + n;
    while (start < end && start % 64)
        bitmap_clear_bit(map, start++);
    while (start + 64 <= end) {
        map[start / 64] = 0;
        start += 64;
    }
    while (start < end)
        bitmap_clear_bit(map, start++);
}

size_t bitmap_count(const uint64_t *map, size_t nbits)
{
    size_t n = 0, words = nbits / 64;
    for (size_t i = 0; i < words; i++)
        n += (size_t)__builtin_popcountll(map[i]);
    if (nbits % 64)
        n += (size_t)__builtin_popcountll(map[words] & tail_mask(nbits));
    return n;
}

size_t bitmap_count_or(const uint64_t *a, const uint64_t *b, size_t nbits)
{
    size_t n = 0, words = nbits / 64;
    for (size_t i = 0; i < words; i++)
        n += (size_t)__builtin_popcountll(a[i] | b[i]);
    if (nbits % 64)
        n += (size_t)__builtin_popcountll((a[words] | b[words]) & tail_mask(nbits));
    return n;
}

size_t bitmap_count_and_andnot(const uint64_t *a, const uint64_t *b, const uint64_t *c,
                               size_t nbits)
{
    size_t n = 0, words = nbits / 64;
    for (size_t i = 0; i < words; i++)
        n += (size_t)__builtin_popcountll(a[i] & b[i] & ~c[i]);
    if (nbits % 64)
        n += (size_t)__builtin_popcountll(a[words] & b[words] & ~c[words] & tail_mask(nbits));
    return n;
}

void bitmap_or_at(uint64_t *dst, size_t dst_start, const uint64_t *src, size_t n)
{
    if (dst_start % 64 == 0) {
        size_t w = n / 64, base = dst_start / 64;
        for (size_t i = 0; i < w; i++)
            dst[base + i] |= src[i];
        for (size_t b = w * 64; b < n; b++)
            if (bitmap_test(src, b))
                bitmap_set(dst, dst_start + b);
        return;
    }
    for (size_t b = 0; b < n; b++)
        if (bitmap_test(src, b))
            bitmap_set(dst, dst_start + b);
}

size_t bitmap_andnot_from(uint64_t *dst, const uint64_t *src, size_t from, size_t nbits)
{
    size_t n = 0, words = BITMAP_WORDS(nbits);
    for (size_t w = from / 64; w < words; w++) {
        uint64_t both = dst[w] & src[w];
        if (w == from / 64)
            both &= ~0ULL << (from % 64);
        if (w == words - 1 && nbits % 64)
            both &= tail_mask(nbits);
        dst[w] &= ~both;
        n += (size_t)__builtin_popcountll(both);
    }
    return n;
}

void bitmap_copy_bits(uint64_t *dst, size_t dst_start, const uint64_t *src, size_t src_start,
                      size_t n)
{
    size_t b = 0;
    if (dst_start % 64 == 0 && src_start % 64 == 0)
        for (; b + 64 <= n; b += 64)
            dst[(dst_start + b) / 64] = src[(src_start + b) / 64];
    for (; b < n; b++) {
        if (bitmap_test(src, src_start + b))
            bitmap_set(dst, dst_start + b);
        else
            bitmap_clear_bit(dst, dst_start + b);
    }
}

void bitmap_take_atomic(uint64_t *dst, uint64_t *src, size_t nbits)
{
    for (size_t i = 0; i < BITMAP_WORDS(nbits); i++) {
        if (!__atomic_load_n(&src[i], __ATOMIC_RELAXED))
            continue;
        dst[i] |= __atomic_exchange_n(&src[i], 0, __ATOMIC_ACQ_REL);
    }
}

size_t bitmap_next_set(const uint64_t *map, size_t nbits, size_t from)
{
    if (from >= nbits)
        return nbits;
    size_t w = from / 64;
    uint64_t word = map[w] & (~0ULL << (from % 64));
    for (;;) {
        if (word) {
            size_t bit = w * 64 + (size_t)__builtin_ctzll(word);
            return bit < nbits ? bit : nbits;
        }
        if (++w >= BITMAP_WORDS(nbits))
            return nbits;
        word = map[w];
    }
}
