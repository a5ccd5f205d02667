/* The AVX2 build of the stream checksum: this file alone is compiled with
 * -mavx2 (Makefile, tests/fuzz/fuzz.mk); stream_hash() calls it only where
 * the CPU has AVX2. */
#include "migration/stream_hash.h"

#include "migration/stream_hash_impl.h"

uint64_t stream_hash_avx2(const struct iovec *iov, int n) { return hash_iov(iov, n); }
