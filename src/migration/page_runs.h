/* Runs of guest pages for post-copy's DISCARD_PAGES record: built from a
 * page bitmap on the source, checked against the RAM map on the
 * destination. A run never crosses a RAM region, so it is contiguous both
 * in guest frames and in RAM page indices. Pure.
 * Returns: counts (page_runs_collect, page_runs_take_new); 0 or -EPROTO
 * (page_runs_check). */
#ifndef GW_MIGRATION_PAGE_RUNS_H
#define GW_MIGRATION_PAGE_RUNS_H

#include <stddef.h>
#include <stdint.h>

#include "memory/guest_ram.h"
#include "migration/stream_format.h"

/* Fill out[0..max) with the runs of set bits in `map` (npages bits, RAM
 * page order) from *cursor on; *cursor moves past the last run taken.
 * Returns the number of runs (0 once the bitmap is exhausted). */
size_t page_runs_collect(const struct guest_ram *ram, const uint64_t *map, uint64_t npages,
                         uint64_t *cursor, struct gws_page_run *out, size_t max);
/* Check a received run: every frame is RAM, within one region; *first_idx
 * gets the RAM page index of its first frame. */
int page_runs_check(const struct guest_ram *ram, const struct gws_page_run *run,
                    uint64_t *first_idx);
/* The source's late discards: keep in `fresh` only the pages not already in
 * `pending` (the destination dropped those earlier) and add them to
 * `pending`. Returns how many pages `fresh` keeps. */
uint64_t page_runs_take_new(uint64_t *pending, uint64_t *fresh, uint64_t npages);

#endif
