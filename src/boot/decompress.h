/* Decompressing a Linux kernel payload on the host, chosen by its magic:
 * gzip, xz, lzma, lz4 (legacy frame, as the kernel writes it), zstd; an
 * uncompressed ELF is copied. Output is capped at `max_out` bytes (at most
 * DECOMPRESS_MAX): an output of exactly max_out bytes is accepted.
 * Returns: 0 and a malloc'd buffer (caller frees), or -errno + err. */
#ifndef GW_BOOT_DECOMPRESS_H
#define GW_BOOT_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define DECOMPRESS_MAX ((size_t)1 << 32)

const char *decompress_format(const uint8_t *buf, size_t len); /* NULL if unknown */
int decompress_payload(const uint8_t *in, size_t in_len, size_t max_out, uint8_t **out,
                       size_t *out_len, struct gw_error *err);

#endif
