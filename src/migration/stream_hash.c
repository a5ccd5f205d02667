#include "migration/stream_hash.h"

#include "migration/stream_hash_impl.h"

uint64_t stream_hash_generic(const struct iovec *iov, int n) { return hash_iov(iov, n); }

uint64_t stream_hash(const struct iovec *iov, int n)
{
    /* __builtin_cpu_supports reads what libgcc found at start-up: cheap. */
    if (__builtin_cpu_supports("avx2"))
        return stream_hash_avx2(iov, n);
    return stream_hash_generic(iov, n);
}
