#define LOG_PREFIX "ram"
#include "memory/guest_ram.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"

void guest_ram_layout(struct guest_ram *ram, uint64_t size)
{
    ram->size = size;
    ram->nr_regions = 0;
    uint64_t low = size < GUEST_RAM_LOW_MAX ? size : GUEST_RAM_LOW_MAX;
    ram->regions[ram->nr_regions++] = (struct guest_ram_region){ 0, low, 0 };
    if (size > low)
        ram->regions[ram->nr_regions++] =
            (struct guest_ram_region){ GUEST_RAM_HIGH_BASE, size - low, low };
}

int guest_ram_init(struct guest_ram *ram, uint64_t size, const char *name, struct gw_error *err)
{
    memset(ram, 0, sizeof(*ram));
    ram->memfd = -1;
    if (size == 0 || size % (2ULL << 20))
        return gw_error_set(err, EINVAL, "memory size must be a positive multiple of 2 MiB");
    guest_ram_layout(ram, size);
    ram->memfd = memfd_create(name ? name : "guest-ram", MFD_CLOEXEC);
    if (ram->memfd < 0)
        return gw_error_set(err, errno, "memfd_create: %s", strerror(errno));
    if (ftruncate(ram->memfd, (off_t)size) < 0) {
        int e = errno;
        gw_error_set(err, e, "cannot size guest RAM to %llu MiB: %s",
                     (unsigned long long)(size >> 20), strerror(e));
        goto err_close;
    }
    ram->host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                     ram->memfd, 0);
    if (ram->host == MAP_FAILED) {
        int e = errno;
        ram->host = NULL;
        gw_error_set(err, e, "cannot map %llu MiB of guest RAM: %s",
                     (unsigned long long)(size >> 20), strerror(e));
        goto err_close;
    }
    madvise(ram->host, size, MADV_HUGEPAGE);
    return 0;

err_close:
    close(ram->memfd);
    ram->memfd = -1;
    return -(err ? err->code : EINVAL);
}

void guest_ram_fini(struct guest_ram *ram)
{
    if (ram->host)
        munmap(ram->host, ram->size);
    if (ram->memfd >= 0)
        close(ram->memfd);
    ram->host = NULL;
    ram->memfd = -1;
}

bool guest_ram_gpa_to_offset(const struct guest_ram *ram, uint64_t gpa, uint64_t *offset)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size) {
            *offset = r->offset + (gpa - r->gpa);
            return true;
        }
    }
    return false;
}

void *guest_ram_ptr(const struct guest_ram *ram, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < ram->nr_regions; i++) {
        const struct guest_ram_region *r = &ram->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
            return ram->host ? ram->host + r->offset + (gpa - r->gpa) : NULL;
    }
    return NULL;
}

uint64_t guest_ram_end(const struct guest_ram *ram)
{
    const struct guest_ram_region *r = &ram->regions[ram->nr_regions - 1];
    return r->gpa + r->size;
}
