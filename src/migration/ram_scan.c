#include "migration/ram_scan.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "memory/bitmap.h"

int ram_scan_data_pages(const struct guest_ram *ram, uint64_t *map, uint64_t *npages_out)
{
    uint64_t total = 0;
    off_t pos = 0, end = (off_t)ram->size;
    while (pos < end) {
        off_t data = lseek(ram->memfd, pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                break; /* no more data */
            return -errno;
        }
        off_t hole = lseek(ram->memfd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        if (hole > end)
            hole = end;
        uint64_t first = (uint64_t)data / GUEST_PAGE_SIZE;
        uint64_t last = ((uint64_t)hole + GUEST_PAGE_SIZE - 1) / GUEST_PAGE_SIZE;
        bitmap_set_range(map, first, last - first);
        total += last - first;
        pos = hole;
    }
    *npages_out = total;
    return 0;
}

uint64_t ram_page_to_pfn(const struct guest_ram *ram, uint64_t idx)
{
    uint64_t off = idx * GUEST_PAGE_SIZE;
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (off >= r->offset && off - r->offset < r->size)
            return (r->gpa + (off - r->offset)) / GUEST_PAGE_SIZE;
    }
    return UINT64_MAX;
}

bool ram_pfn_to_page(const struct guest_ram *ram, uint64_t pfn, uint64_t *idx)
{
    if (pfn > UINT64_MAX / GUEST_PAGE_SIZE)
        return false;
    uint64_t off;
    if (!guest_ram_gpa_to_offset(ram, pfn * GUEST_PAGE_SIZE, &off))
        return false;
    *idx = off / GUEST_PAGE_SIZE;
    return true;
}
