/* A stand-in VM for driving the migration engine without KVM (tests and
 * benchmarks): guest RAM in a real memfd, the engine's mig_vm_ops, and one
 * thread per side acting as the vCPU. On a source it keeps writing a hot
 * working set (reporting each write to the dirty log, as the VMM does for
 * its own writes); on a destination it reads pages in a scattered order
 * and compares each with the source's frozen copy, faulting on what is
 * missing. The source's vCPU thread writes through its own mapping of the
 * memfd (`mem`), as a KVM guest does not touch the VMM's mapping: the
 * engine's first read of a page then costs what it costs in a real VMM
 * (a page-table fault per page; on PVM hosts an expensive one). The
 * destination's vCPU reads through the VMM's mapping, where userfaultfd
 * catches it, as KVM's accesses are caught there.
 * Layout of the source's RAM (page indices):
 *   [0, EVM_STATIC_END)        written once before the migration
 *   [EVM_STATIC_END, EVM_HOT_END)  rewritten all the time
 *   [EVM_HOT_END, EVM_ZERO_END)    written with zeros
 *   the rest                   never written (holes)
 * Returns: 0 or -errno (evm_init). */
#ifndef GW_TESTS_ENGINE_VM_H
#define GW_TESTS_ENGINE_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/migration.h"

#define EVM_STATIC_END(v) ((v)->npages / 4)
#define EVM_HOT_END(v)    ((v)->npages / 2)
#define EVM_ZERO_END(v)   ((v)->npages / 2 + (v)->npages / 16)

struct evm {
    struct guest_ram ram;
    uint8_t *mem;                 /* what the vCPU thread uses (see above) */
    struct dirty_log dl;
    struct migration mig;
    uint64_t npages;
    struct evm *src;              /* destination: the source, to compare with */
    pthread_t thr;
    bool thr_started;
    pthread_mutex_t lk;
    pthread_cond_t cv;
    bool run, parked, quit;
    volatile int tid;
    volatile uint64_t gen, errors, checked;
    unsigned read_delay_us;       /* destination reader: pause per page */
    uint64_t load_touch[4];       /* destination: pages that loading the state reads and */
    unsigned load_touches;        /* writes back (a word of each), as KVM may */
    uint64_t load_stray;          /* destination: a page loading the state writes into
                                     the memfd, bypassing userfaultfd (0: none) */
    bool load_break;              /* destination: loading the state breaks the preempt
                                     channel first */
    unsigned write_delay_us;      /* source writer: pause per page (0: full speed) */
    unsigned save_delay_us;       /* source: saving the state takes this long */
    uint64_t got_state;
    bool have_state;
    bool describe_cpu;            /* source: send a CPU_MODEL after the header */
    bool refuse_cpu;              /* destination: refuse a CPU_MODEL, as a host whose
                                     KVM cannot give the guest's CPU */
    bool got_cpu_model;           /* destination: a CPU_MODEL came (and was taken) */
    volatile bool started, lost, completed;
    enum mig_state state_at_start; /* destination: its status when the guest started */
    volatile bool discarded;      /* destination: the engine discarded the guest */
    volatile bool discard_caught; /* ... while its RAM was still registered with a
                                     userfaultfd (a fallback clearing would block) */
    volatile uint64_t zero_first, zero_count; /* source: a clearing the vCPU is to do */
    volatile unsigned throttle_pct;  /* source: auto-converge's throttle (set_throttle) */
    unsigned throttle_max;           /* ... the highest it went */
};

/* A source (src NULL: RAM filled, writer running) or a destination of src.
 * Both get the postcopy-ram capability. */
int evm_init(struct evm *v, uint64_t ram_bytes, struct evm *src);
/* Source: park the writer and write `bytes` of data from guest page 0
 * (an idle guest holding that much). */
void evm_fill_idle(struct evm *v, uint64_t bytes);
/* Source: have the vCPU thread clear pages [first, first+count) as a
 * guest would (so only while it runs, never after the engine stopped it).
 * False if it was not done within timeout_ms. */
bool evm_guest_zero(struct evm *v, uint64_t first, uint64_t count, int timeout_ms);
/* Stop the thread and the engine, free everything. */
void evm_fini(struct evm *v);
/* Run or park the vCPU thread (waiting until parked when asked). */
void evm_set_run(struct evm *v, bool run, bool wait_parked);
enum mig_state evm_state(struct evm *v);
/* Poll until the state is `want` (false on timeout or another final state). */
bool evm_wait_state(struct evm *v, enum mig_state want, int timeout_ms);
/* Wait, bounded, until the engine started v's guest (op_start): a
 * post-copy destination publishes postcopy-active just before that. */
bool evm_wait_started(struct evm *v, int timeout_ms);
int evm_set_param(struct evm *v, const char *name, int64_t value);
int evm_set_cap(struct evm *v, enum mig_cap cap, bool on);
/* Pages of dst that differ from src (first one in *first). */
uint64_t evm_compare(const struct evm *dst, const struct evm *src, uint64_t *first);
void evm_sleep_us(unsigned us);
/* The source's downtime phases are known and add up to its downtime (ms,
 * from the same clock: within 1 ms); prints them. */
bool evm_phases_add_up(const struct mig_stats *s);
/* A HEADER record describing v's RAM (one vCPU), for hand-written sources. */
int evm_write_header(const struct evm *v, struct stream *s);
/* ... with these header flags (0 is the only valid value). */
int evm_write_header_flags(const struct evm *v, struct stream *s, uint32_t flags);

#endif
