#include "migration/recv_bitmap.h"

#include <errno.h>
#include <string.h>

#include "memory/bitmap.h"

void recv_bitmap_reader_init(struct recv_bitmap_reader *r, uint64_t npages)
{
    r->npages = npages;
    r->next_word = 0;
}

static int refuse(const char **why, const char *what)
{
    *why = what;
    return -EPROTO;
}

/* The list is whole: clear what lies beyond the last page. */
static int whole(const struct recv_bitmap_reader *r, uint64_t *map)
{
    if (r->npages % 64)
        map[BITMAP_WORDS(r->npages) - 1] &= (1ULL << (r->npages % 64)) - 1;
    return 1;
}

static int take_one(struct recv_bitmap_reader *r, uint64_t *map, const uint8_t *body,
                    uint32_t len, const char **why)
{
    uint64_t words = BITMAP_WORDS(r->npages);
    if (r->next_word)
        return refuse(why, "a whole page list after a part of one");
    if (len != 8 + words * 8)
        return refuse(why, "the page list's length does not match this VM");
    memcpy(map, body + 8, words * 8);
    r->next_word = words;
    return whole(r, map);
}

static int take_part(struct recv_bitmap_reader *r, uint64_t *map, const uint8_t *body,
                     uint32_t len, const char **why)
{
    uint64_t words = BITMAP_WORDS(r->npages), first;
    if (len < 24 || (len - 16) % 8)
        return refuse(why, "a page list part of a bad length");
    memcpy(&first, body + 8, 8);
    uint64_t k = (len - 16) / 8;
    if (first != r->next_word)
        return refuse(why, "a page list part out of order");
    if (first >= words || k > words - first)
        return refuse(why, "a page list part beyond this VM's pages");
    memcpy(map + first, body + 16, k * 8);
    r->next_word += k;
    return r->next_word == words ? whole(r, map) : 0;
}

int recv_bitmap_take(struct recv_bitmap_reader *r, uint64_t *map, uint32_t type,
                     const uint8_t *body, uint32_t len, const char **why)
{
    uint64_t npages;
    if (type != GWS_RP_RECV_BITMAP && type != GWS_RP_RECV_BITMAP_PART)
        return refuse(why, "not a page list");
    if (len < 8)
        return refuse(why, "a page list without its page count");
    memcpy(&npages, body, 8);
    if (npages != r->npages)
        return refuse(why, "the page list's page count does not match this VM");
    if (r->next_word == BITMAP_WORDS(r->npages) && r->next_word)
        return refuse(why, "more page list than this VM has pages");
    return type == GWS_RP_RECV_BITMAP ? take_one(r, map, body, len, why)
                                      : take_part(r, map, body, len, why);
}

bool recv_bitmap_fits_one(uint64_t npages)
{
    return 8 + BITMAP_WORDS(npages) * 8 <= GWS_MAX_BITMAP_BODY;
}

uint64_t recv_bitmap_part_words(uint64_t npages, uint64_t first, uint64_t max_words)
{
    uint64_t words = BITMAP_WORDS(npages);
    if (!max_words || max_words > RECV_BITMAP_PART_MAX_WORDS)
        max_words = RECV_BITMAP_PART_MAX_WORDS;
    if (first >= words)
        return 0;
    return words - first < max_words ? words - first : max_words;
}
