/* Loading ELF images (32 or 64-bit, little-endian x86) into guest RAM by
 * physical address, with every header field checked against the file and
 * the RAM map. Also finds ELF notes. Returns: 0 or -errno + err. */
#ifndef GW_BOOT_ELF_LOAD_H
#define GW_BOOT_ELF_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "memory/guest_ram.h"

struct elf_info {
    bool is64;
    uint64_t entry;        /* e_entry as written (may be virtual) */
    uint64_t entry_phys;   /* e_entry translated through the PT_LOAD holding it */
    uint64_t low, high;    /* physical extent of the loaded segments */
};

bool elf_is_elf(const uint8_t *buf, size_t len);
/* Validate headers (no loading). */
int elf_parse(const uint8_t *buf, size_t len, struct elf_info *info, struct gw_error *err);
/* Copy PT_LOAD segments to their physical addresses, zeroing bss. Every
 * segment is checked first (inside RAM, not below BOOT_LOW_END, not over
 * the EBDA/ROM area 0x9fc00..1 MiB, not over another segment); nothing is
 * written if one fails. */
int elf_load(struct guest_ram *ram, const uint8_t *buf, size_t len, struct elf_info *info,
             struct gw_error *err);
/* elf_load()'s checks alone: nothing is written. */
int elf_check(struct guest_ram *ram, const uint8_t *buf, size_t len, struct elf_info *info,
              struct gw_error *err);
/* True if physical address paddr lies inside a PT_LOAD segment (its memory
 * size) of a file that elf_parse() accepted. */
bool elf_paddr_loaded(const uint8_t *buf, size_t len, uint64_t paddr);
/* At most this many notes are looked at in all, whatever the headers say:
 * overlapping note segments and sections would otherwise cost the number of
 * headers times the file size. */
#define ELF_NOTES_MAX 4096
/* Find note (name, type) in PT_NOTE segments, then in SHT_NOTE sections;
 * desc and desc_len point into buf (bounds-checked).
 * Returns true if found among the first ELF_NOTES_MAX notes. */
bool elf_find_note(const uint8_t *buf, size_t len, const char *name, uint32_t type,
                   const uint8_t **desc, uint32_t *desc_len);

#endif
