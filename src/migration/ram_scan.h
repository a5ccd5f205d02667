/* Finding the guest pages worth sending: the memfd's data extents
 * (SEEK_DATA/SEEK_HOLE: a hole was never written and reads as zero on both
 * sides). The all-zero test for a page is the codec's stream_page_is_zero().
 * Returns: 0 or -errno. */
#ifndef GW_MIGRATION_RAM_SCAN_H
#define GW_MIGRATION_RAM_SCAN_H

#include <stdbool.h>
#include <stdint.h>

#include "memory/guest_ram.h"

/* Set in `map` (one bit per RAM page) every page inside a data extent of the
 * RAM memfd; *npages_out gets the count. Pages in holes stay clear. */
int ram_scan_data_pages(const struct guest_ram *ram, uint64_t *map, uint64_t *npages_out);
/* Guest frame number of RAM page index `idx` (memfd offset / 4096). */
uint64_t ram_page_to_pfn(const struct guest_ram *ram, uint64_t idx);
/* RAM page index of guest frame `pfn`; false if not RAM. */
bool ram_pfn_to_page(const struct guest_ram *ram, uint64_t pfn, uint64_t *idx);

#endif
