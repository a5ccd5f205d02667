/* Shared between the boot protocol files; not for other modules. */
#ifndef GW_BOOT_BOOT_INTERNAL_H
#define GW_BOOT_BOOT_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "boot/boot.h"

int boot_read_file(const char *path, uint8_t **buf, size_t *len, size_t max, struct gw_error *err);
int boot_place_cmdline(struct guest_ram *ram, const char *cmdline, struct gw_error *err);
/* Load the initrd page-aligned as high as possible below max_addr and the
 * end of low RAM, above kernel_end. */
int boot_place_initrd(struct guest_ram *ram, const char *path, uint64_t max_addr,
                      uint64_t kernel_end, uint64_t *addr, uint64_t *size, struct gw_error *err);

bool linux_is_bzimage(const uint8_t *k, size_t len);
int linux_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
               struct boot_result *out, struct gw_error *err);

#endif
