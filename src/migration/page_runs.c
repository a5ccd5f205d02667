#include "migration/page_runs.h"

#include <errno.h>

#include "memory/bitmap.h"
#include "migration/ram_scan.h"

/* Index one past the end of the RAM region holding page idx. */
static uint64_t region_end(const struct guest_ram *ram, uint64_t idx)
{
    uint64_t off = idx * GUEST_PAGE_SIZE;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (off >= r->offset && off - r->offset < r->size)
            return (r->offset + r->size) / GUEST_PAGE_SIZE;
    }
    return idx + 1;
}

size_t page_runs_collect(const struct guest_ram *ram, const uint64_t *map, uint64_t npages,
                         uint64_t *cursor, struct gws_page_run *out, size_t max)
{
    size_t n = 0;
    uint64_t i = *cursor;
    while (n < max) {
        i = bitmap_next_set(map, npages, i);
        if (i >= npages)
            break;
        uint64_t end = region_end(ram, i);
        if (end > npages)
            end = npages;
        uint64_t j = i + 1;
        while (j < end && bitmap_test(map, j))
            j++;
        out[n++] = (struct gws_page_run){ ram_page_to_pfn(ram, i), j - i };
        i = j;
    }
    *cursor = i;
    return n;
}

int page_runs_check(const struct guest_ram *ram, const struct gws_page_run *run,
                    uint64_t *first_idx)
{
    if (run->npages == 0 || run->pfn > UINT64_MAX / GUEST_PAGE_SIZE ||
        run->npages > ram->size / GUEST_PAGE_SIZE)
        return -EPROTO;
    uint64_t gpa = run->pfn * GUEST_PAGE_SIZE;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size &&
            run->npages <= (r->size - (gpa - r->gpa)) / GUEST_PAGE_SIZE) {
            *first_idx = (r->offset + (gpa - r->gpa)) / GUEST_PAGE_SIZE;
            return 0;
        }
    }
    return -EPROTO;
}

uint64_t page_runs_take_new(uint64_t *pending, uint64_t *fresh, uint64_t npages)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < BITMAP_WORDS(npages); w++) {
        fresh[w] &= ~pending[w];
        pending[w] |= fresh[w];
        n += (uint64_t)__builtin_popcountll(fresh[w]);
    }
    return n;
}
