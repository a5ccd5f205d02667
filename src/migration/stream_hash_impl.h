/* Included once by each build of the stream checksum (stream_hash.c,
 * stream_hash_avx2.c): xxHash inlined, so that the compiler's flags for
 * that file choose the vector code. Defines hash_iov(). */
#ifndef GW_MIGRATION_STREAM_HASH_IMPL_H
#define GW_MIGRATION_STREAM_HASH_IMPL_H

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <sys/uio.h>

static uint64_t hash_iov(const struct iovec *iov, int n)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    for (int i = 0; i < n; i++)
        XXH3_64bits_update(&st, iov[i].iov_base, iov[i].iov_len);
    return XXH3_64bits_digest(&st);
}

#endif
