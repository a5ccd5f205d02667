/* Shared between the boot protocol files; not for other modules.
 * Returns: 0 or -errno + err, like boot.h. */
#ifndef GW_BOOT_BOOT_INTERNAL_H
#define GW_BOOT_BOOT_INTERNAL_H

#include <stdbool.h>
#include <stdio.h>

#include "boot/boot.h"

#define BOOT_KERNEL_FILE_MAX (1ULL << 30)

int boot_read_file(const char *path, uint8_t **buf, size_t *len, size_t max, struct gw_error *err);
int boot_place_cmdline(struct guest_ram *ram, const char *cmdline, struct gw_error *err);
/* Load the initrd file page-aligned as high as possible below max_addr
 * (inclusive) and the end of low RAM, wholly above kernel_end and 1 MiB.
 * No initrd (path NULL): *addr = *size = 0; an empty file is refused. */
int boot_place_initrd(struct guest_ram *ram, const char *path, uint64_t max_addr,
                      uint64_t kernel_end, uint64_t *addr, uint64_t *size, struct gw_error *err);
/* The GDT of boot.h's selectors at BOOT_GDT_ADDR. */
int boot_write_gdt(struct guest_ram *ram, enum boot_kind kind, struct gw_error *err);

/* pvh.c */
bool pvh_find_entry(const uint8_t *k, size_t len, uint32_t *entry);
int pvh_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
             struct boot_result *out, struct gw_error *err);

/* bzimage.c */
bool linux_is_bzimage(const uint8_t *k, size_t len);
int linux_load(struct guest_ram *ram, const uint8_t *k, size_t len, const struct boot_input *in,
               struct boot_result *out, struct gw_error *err);

#endif
