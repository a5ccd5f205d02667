/* The destination's page list after a post-copy recovery: which pages it
 * still needs. One RP_RECV_BITMAP record carries up to 8 MiB of bitmap
 * (256 GiB of guest RAM); a larger list goes as RP_RECV_BITMAP_PART
 * records, in order (stream-format.md §7). Pure: the sender cuts the list,
 * the reader checks and places each record.
 * Returns: recv_bitmap_take: 1 once the list is whole, 0 while parts are
 * to come, -EPROTO for a record that breaks the rules (*why says which). */
#ifndef GW_MIGRATION_RECV_BITMAP_H
#define GW_MIGRATION_RECV_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "migration/stream_format.h"

/* Words a part may carry (its body: npages, first word, the words). */
#define RECV_BITMAP_PART_MAX_WORDS ((GWS_MAX_BITMAP_PART_BODY - 16u) / 8u)

struct recv_bitmap_reader {
    uint64_t npages;
    uint64_t next_word;         /* the first word the next part must carry */
};

void recv_bitmap_reader_init(struct recv_bitmap_reader *r, uint64_t npages);
/* Take one record of the list (type RP_RECV_BITMAP or RP_RECV_BITMAP_PART)
 * into map (npages bits, the tail beyond npages cleared). */
int recv_bitmap_take(struct recv_bitmap_reader *r, uint64_t *map, uint32_t type,
                     const uint8_t *body, uint32_t len, const char **why);
/* Sender: true if the list of npages fits one RP_RECV_BITMAP record. */
bool recv_bitmap_fits_one(uint64_t npages);
/* Sender: the words of the part that starts at word `first`, at most
 * max_words (0: the record's limit); 0 once the list is sent. */
uint64_t recv_bitmap_part_words(uint64_t npages, uint64_t first, uint64_t max_words);

#endif
