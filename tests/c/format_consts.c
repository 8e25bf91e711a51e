/*
 * format_consts -- prints the shared formats' numbers as the compiler sees
 * them in src/ (the cores' and the sync contract's headers), for
 * tests/native/test_format_spec.py, which holds docs/format.md against them.
 *
 *   format_consts      one line per number:
 *                        const NAME VALUE
 *                        struct NAME SIZE
 *                        member STRUCT FIELD OFFSET SIZE
 *
 * Every member of each shared struct is printed, padding included, so that
 * the test can see that the members tile the struct: a member added to a
 * header but not here leaves a gap the test reports.
 */
#include <stddef.h>     /* offsetof */
#include <stdio.h>      /* printf */

#include "core/ring.h"
#include "core/slot.h"
#include "platform/segment.h"
#include "platform/sync.h"

#define CONST(name) printf("const %s %llu\n", #name, (unsigned long long)(name))
#define STRUCT(type) printf("struct %s %llu\n", #type, (unsigned long long)sizeof(type))
#define MEMBER(type, field) \
    printf("member %s %s %llu %llu\n", #type, #field, \
           (unsigned long long)offsetof(type, field), \
           (unsigned long long)sizeof(((type *)0)->field))

int
main(void)
{
    /* The channel (core/ring.h). */
    CONST(RING_MAGIC);
    CONST(RING_VERSION);
    CONST(RING_HEADER_SIZE);
    CONST(RING_LINE);
    CONST(RING_MIN_CAPACITY);
    CONST(RING_MAX_CAPACITY);
    CONST(RING_LEN_MASK);
    CONST(RING_KIND_SHIFT);
    CONST(RING_REC_PAD);
    CONST(RING_KIND_BYTES);
    CONST(RING_KIND_OBJECT);
    CONST(RING_KIND_MAX);
    STRUCT(ring_header);
    MEMBER(ring_header, magic);
    MEMBER(ring_header, version);
    MEMBER(ring_header, capacity);
    MEMBER(ring_header, header_size);
    MEMBER(ring_header, sync_kind);
    MEMBER(ring_header, sync_domain);
    MEMBER(ring_header, pad0);
    MEMBER(ring_header, write_cursor);
    MEMBER(ring_header, data_seq);
    MEMBER(ring_header, data_waiters);
    MEMBER(ring_header, send_cpu);
    MEMBER(ring_header, creator_pid);
    MEMBER(ring_header, sent);
    MEMBER(ring_header, pad1);
    MEMBER(ring_header, read_cursor);
    MEMBER(ring_header, space_seq);
    MEMBER(ring_header, space_waiters);
    MEMBER(ring_header, recv_cpu);
    MEMBER(ring_header, pad2a);
    MEMBER(ring_header, received);
    MEMBER(ring_header, pad2);
    MEMBER(ring_header, send_lock);
    MEMBER(ring_header, pad3);
    MEMBER(ring_header, recv_lock);
    MEMBER(ring_header, pad4);
    MEMBER(ring_header, reserved);

    /* The slot (core/slot.h). */
    CONST(SLOT_MAGIC);
    CONST(SLOT_VERSION);
    CONST(SLOT_HEADER_SIZE);
    CONST(SLOT_LINE);
    CONST(SLOT_CELL_HEADER);
    CONST(SLOT_CELLS);
    CONST(SLOT_MIN_CELLS);
    CONST(SLOT_MAX_CELLS);
    CONST(SLOT_MAX_SIZE);
    CONST(SLOT_GEN_SHIFT);
    CONST(SLOT_CELL_MASK);
    CONST(SLOT_GEN_LIMIT);
    CONST(SLOT_BUSY);
    STRUCT(slot_header);
    MEMBER(slot_header, magic);
    MEMBER(slot_header, version);
    MEMBER(slot_header, header_size);
    MEMBER(slot_header, cells);
    MEMBER(slot_header, value_size);
    MEMBER(slot_header, cell_size);
    MEMBER(slot_header, sync_kind);
    MEMBER(slot_header, sync_domain);
    MEMBER(slot_header, creator_pid);
    MEMBER(slot_header, pad0);
    MEMBER(slot_header, latest);
    MEMBER(slot_header, gen_seq);
    MEMBER(slot_header, gen_waiters);
    MEMBER(slot_header, publish_cpu);
    MEMBER(slot_header, pad1);
    MEMBER(slot_header, write_lock);
    MEMBER(slot_header, pad2);
    MEMBER(slot_header, reserved);
    STRUCT(slot_cell);
    MEMBER(slot_cell, state);
    MEMBER(slot_cell, length);
    MEMBER(slot_cell, pad0);
    MEMBER(slot_cell, marks);
    MEMBER(slot_cell, pad1);

    /* Locks and waits (platform/sync.h). */
    CONST(SYNC_KIND_LINUX);
    CONST(SYNC_KIND_FALLBACK);
    CONST(SYNC_KIND_WIN32_MUTEX);
    CONST(SYNC_KIND_WIN32);
    CONST(SYNC_SEQ_MASK);
    CONST(SYNC_WAITERS);
    CONST(SYNC_SLOT_MAX);
    CONST(SHM_NAME_MAX);
    CONST(SHM_CREATOR_WAIT_NS);
    return 0;
}
