/*
 * core/slot.h -- the slot core: the latest value of up to VALUE_SIZE bytes
 * in a mapped segment, replaced whole by writers and read torn-free by any
 * number of readers, in any number of processes.  (The Python type built on
 * it comes later; "slot" here is the protocol alone.  Not to be confused
 * with the Linux lock scheme's "liveness slots", platform/sync_linux.c.)
 *
 * Owns: the slot_* API, the shared layout (slot_header, slot_cell) and the
 * rules below.  The caller maps the segment (platform/segment.h) and hands
 * the slot its address; the slot never maps anything itself.
 * May include: the C library, core/status.h, core/atomics.h and core/ring.h
 * (in slot.c: the channel's magic, to name it), the platform contracts
 * platform/sync.h and platform/segment.h.  No OS header, no Python.h, no
 * platform #ifdef.
 *
 * Never raises; every call returns a shm_status and fills a shm_error.
 * Everything here is safe to call without the GIL.  docs/format.md is the
 * specification of the same layout for other languages.
 *
 * Layout of the segment (all integers in the machine's byte order; every
 * platform pyshm supports is little-endian):
 *
 *   offset 0            slot_header (SLOT_HEADER_SIZE bytes, below)
 *   offset 512 + i*S    cell i, i = 0 .. CELLS-1, S = cell_size:
 *                         slot_cell (SLOT_CELL_HEADER = 128 bytes), then
 *                         the value's bytes (VALUE_SIZE, padded to 64)
 *
 * The design: a few cells (SLOT_CELLS = 4 by default), each holding one
 * whole value with its generation; a word `latest` naming the newest
 * complete one; seqlock-style validation of every read; and marks by which
 * readers announce the cell they copy from, so that writers go elsewhere.
 *
 *   latest     (generation << 8) | cell: the newest complete value, or 0
 *              before the first publish.  Generations count publishes
 *              from 1, so a generation is also "how many values so far".
 *   state      per cell: the generation of the whole value it holds, with
 *              SLOT_BUSY set while a writer fills it; 0 when it never held
 *              one (or a reserve was aborted).
 *   marks      per cell: (tag << 32) | count, readers announcing the cell;
 *              TAG is the low 32 bits of the generation they read there.
 *              A mark is a hint: it steers writers, it never decides
 *              whether a read is whole (the state does).
 *
 * Publishing (writers, one at a time under the write lock, a lock word of
 * platform/sync.h that survives its holder's death): load latest (G, c);
 * pick a cell t != c -- starting after c, so the oldest first -- whose
 * marks do not announce its current value; store state[t] = BUSY | G+1
 * (sequentially consistent), load marks[t] again (sequentially consistent)
 * and, if a reader announced itself meanwhile, put the old state back (the
 * cell's bytes are untouched: its readers lose nothing) and try the next
 * cell.  When every cell but c is announced, take the one with the oldest
 * generation anyway (its readers retry).  Then a release fence, the bytes,
 * length[t], state[t] = G+1 (release), latest = (G+1, t) (release), unlock,
 * and the wait word is bumped.  At most CELLS steps whatever the readers
 * do: the writer never waits on a reader (wait-free), and it never writes
 * the cell latest names, so a writer killed at any instant leaves the
 * previous value whole and readable; the next writer takes the lock over
 * and starts from latest again (a cell the dead one left BUSY is just a
 * free cell).
 *
 * Reading (no lock): load latest (G, c) with acquire order; mark cell c
 * for G (compare-and-swap: count + 1 when the tag is G, else a fresh (G, 1)
 * -- readers of another generation in c read a value that is gone, or we
 * do); load state[c] (sequentially consistent): it must be G, else unmark
 * and start again (and if latest still says (G, c), the segment is
 * corrupt: an honest writer never touches that cell).  Then
 * read length[c] (checked against VALUE_SIZE), copy the bytes, an acquire
 * fence, load state[c] again, unmark: the copy is whole exactly when the
 * state is still G.
 *
 * Why marks: the mark and the busy store are a Dekker pair (each side
 * stores, then loads the other's word, both sequentially consistent), so
 * either the writer sees the reader's mark and goes elsewhere, or the
 * reader sees BUSY (or a newer value in latest) and starts again at once,
 * before copying anything.  "Readers never starve" is then exact: once a
 * reader's mark is in place and its state check passed, its copy is
 * overwritten only by a publish that found every cell other than the
 * latest announced, that is with at least CELLS - 1 other reads in flight
 * on CELLS - 1 distinct older values (or marks left by readers killed
 * mid-read: each forced publish clears one, as it retags that cell), and
 * then only the reader on the oldest of them retries.  A reader's start
 * (load latest, mark) fails only when, between its load of latest and its
 * mark -- a window of a few instructions --, one publish completes and the
 * next one starts on that very cell.  Copy
 * speed does not matter: a reader preempted for a second in the middle of
 * a 64 KiB copy still finishes with the value it started on, whatever the
 * writer did meanwhile.  Without marks (a plain ring of cells) a reader
 * fails whenever CELLS - 1 publishes complete during its copy, which a
 * writer publishing flat out does to any reader slower than it.
 *
 * Waiting: gen_seq is a wait word of platform/sync.h (SYNC_WORD_DATA),
 * bumped after every publish; a waiter snapshots it, compares the
 * generation, spins (adaptively, as the channel does: see slot.c), then
 * blocks in sync_wait() in slices (the first short, then long; SHM_EINTR
 * at the end of each, as the channel does, so the binding can check
 * signals).  A writer killed between its
 * latest store and its bump costs waiters at most one slice.
 *
 * Trust: any process that maps the segment can scribble on it.  The
 * constant line (cells, value size, cell size, sync scheme) is checked once
 * at attach and kept in slot_t, never re-read; latest's cell index,
 * every state and length are checked before use; marks are hints whose
 * every value is safe.  Garbage gives SHM_ECORRUPT (a reader that cannot
 * get a whole value for SLOT_PATIENCE_NS gives it too), never an access
 * outside the mapping and never a hang.
 */
#ifndef PYSHM_CORE_SLOT_H
#define PYSHM_CORE_SLOT_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* uint32_t, uint64_t, int64_t */

#include "core/status.h"       /* shm_status, shm_error */
#include "platform/segment.h"  /* shm_segment, shm_char */
#include "platform/sync.h"     /* sync_handles, SYNC_FOREVER */

#define SLOT_MAGIC          0x544F4C53u     /* "SLOT" read as little-endian bytes */
#define SLOT_VERSION        1u
#define SLOT_HEADER_SIZE    512u
#define SLOT_LINE           64u
#define SLOT_CELL_HEADER    128u            /* slot_cell: state line + marks line */
#define SLOT_CELLS          4u              /* cells of a new slot */
#define SLOT_MIN_CELLS      2u              /* what an opener accepts */
#define SLOT_MAX_CELLS      64u
#define SLOT_MAX_SIZE       ((uint64_t)1 << 40)     /* 1 TiB per value */

/* latest = (generation << SLOT_GEN_SHIFT) | cell. */
#define SLOT_GEN_SHIFT      8
#define SLOT_CELL_MASK      0xffu
#define SLOT_GEN_LIMIT      ((((uint64_t)1) << 56) - 1)     /* last generation */
/* state: the generation, with SLOT_BUSY while a writer fills the cell. */
#define SLOT_BUSY           (((uint64_t)1) << 63)

/* How long a read keeps trying to get a whole value before it reports the
   segment corrupt (see "Trust"): far beyond anything an honest writer
   causes (see "Why marks"). */
#define SLOT_PATIENCE_NS    ((int64_t)2000000000)

/* Deadlines for the write lock and for slot_wait (sync_now_ns() values):
   SLOT_NOWAIT tries once, SLOT_FOREVER has no limit. */
#define SLOT_NOWAIT  ((int64_t)0)
#define SLOT_FOREVER SYNC_FOREVER

typedef struct {
    /* Line 0: written by the creator before magic, then never changed. */
    uint32_t magic;             /* SLOT_MAGIC, stored last with release order */
    uint32_t version;           /* SLOT_VERSION */
    uint32_t header_size;       /* SLOT_HEADER_SIZE: offset of cell 0 */
    uint32_t cells;             /* number of cells, SLOT_MIN_CELLS..SLOT_MAX_CELLS */
    uint64_t value_size;        /* largest value, 1..SLOT_MAX_SIZE */
    uint64_t cell_size;         /* SLOT_CELL_HEADER + value_size rounded up to 64 */
    uint32_t sync_kind;         /* SYNC_KIND_* of the creating build */
    uint32_t sync_domain;       /* sync_domain() of the creator (0: everyone) */
    uint32_t creator_pid;       /* sync_process_id() of the creator (0 unknown) */
    uint8_t pad0[SLOT_LINE - 44];

    /* Line 1: what writers publish. */
    uint64_t latest;            /* (generation << 8) | cell; 0 before any publish */
    uint32_t gen_seq;           /* wait word SYNC_WORD_DATA: bumped after each publish */
    uint32_t gen_waiters;       /* its waiter count (Windows; zero elsewhere) */
    uint32_t publish_cpu;       /* sync_cpu() of the last publisher (a hint; 0 unknown) */
    uint8_t pad1[SLOT_LINE - 20];

    /* Line 2: the write lock word (SYNC_LOCK_SEND of platform/sync.h). */
    uint32_t write_lock;
    uint8_t pad2[SLOT_LINE - 4];

    uint8_t reserved[SLOT_HEADER_SIZE - 3 * SLOT_LINE];     /* zero */
} slot_header;

/* The head of each cell; the value's bytes follow at SLOT_CELL_HEADER. */
typedef struct {
    uint64_t state;             /* generation held, | SLOT_BUSY while written; 0 none */
    uint64_t length;            /* bytes of that value, <= value_size */
    uint8_t pad0[SLOT_LINE - 16];
    uint64_t marks;             /* readers: (low 32 bits of generation << 32) | count */
    uint8_t pad1[SLOT_LINE - 8];
} slot_cell;

/*
 * This process's view of one slot.  Right after slot_init() it is detached
 * (hdr == NULL) and slot_detach() is safe.  Nothing in it changes after
 * attach except closing: any number of threads may read, publish and wait
 * on one slot_t at once.
 */
typedef struct {
    slot_header *hdr;           /* start of the mapping; NULL when detached */
    unsigned char *cell0;       /* hdr + SLOT_HEADER_SIZE */
    uint32_t cells;             /* checked copies of the constant line: never re-read */
    uint64_t value_size;
    uint64_t cell_size;
    sync_handles sync;          /* the write lock's and the wait word's handles */
    int can_spin;               /* more than one CPU */
    int no_spin;                /* slot_set_spin(sl, 0): waits block at once */
    uint32_t spin;              /* slot_wait's spin budget (ns, core/spin.h) */
    int closing;                /* set by slot_cancel(): waits return at once */
} slot_t;

/* One read between slot_read_begin() and slot_read_end(). */
typedef struct {
    uint64_t generation;        /* of the value; 0: nothing published yet */
    size_t len;                 /* its length (0 when generation is 0) */
    const unsigned char *data;  /* its bytes in the mapping; NULL when generation is 0 */
    uint32_t cell;
    int marked;                 /* this read's mark is counted on the cell */
} slot_view;

/* A cell being filled, between slot_reserve() and commit/abort. */
typedef struct {
    uint32_t cell;
    uint64_t generation;        /* what slot_commit() publishes it as */
    unsigned char *data;        /* value_size writable bytes (old contents) */
} slot_loan;

/* One blocking slot_wait() across the SHM_EINTR returns that let the
   binding check for signals (as ring_wait). */
typedef struct {
    int64_t deadline;           /* sync_now_ns() value; SLOT_FOREVER; SLOT_NOWAIT */
    int resumed;                /* set when it returned SHM_EINTR after sleeping */
} slot_waiting;

static inline slot_waiting
slot_wait_until(int64_t deadline)
{
    slot_waiting w;

    w.deadline = deadline;
    w.resumed = 0;
    return w;
}

/* Check a requested value size (1..SLOT_MAX_SIZE, and mappable here). */
shm_status slot_value_size(uint64_t requested, shm_error *err);

/* Bytes from one cell to the next for values of VALUE_SIZE. */
uint64_t slot_cell_size(uint64_t value_size);

/* Size of the segment that holds a slot of VALUE_SIZE with CELLS cells. */
uint64_t slot_segment_size(uint64_t value_size, uint32_t cells);

void slot_init(slot_t *sl);

/*
 * Write a fresh header and cells for a slot of VALUE_SIZE bytes and CELLS
 * cells into the new segment at ADDR (SIZE bytes), magic last.  Creator
 * only, before anyone can attach.
 */
shm_status slot_format(void *addr, size_t size, uint64_t value_size, uint32_t cells,
                       shm_error *err);

/* Whether the segment at ADDR (SIZE bytes) has a magic yet (as
   ring_formatted: 0 for a raw segment or a creator not done). */
int slot_formatted(const void *addr, size_t size);

/*
 * Check the header of the mapped segment SEG and attach SL to it; open the
 * sync handles for NAME (on POSIX they take over the descriptor SEG kept:
 * open it with seg->keep_fd set).  A segment that is not a slot (a channel
 * is named as such), or one of another version, sync scheme or domain, is
 * SHM_ECORRUPT with a clear detail.  SL must not move while attached.
 */
shm_status slot_attach(slot_t *sl, shm_segment *seg, const shm_char *name, shm_error *err);

void slot_detach(slot_t *sl);

/*
 * Go on through ADDR, a second mapping of the same segment (the first one
 * is being given away: a loan's pages made private, see platform/pages.h
 * and binding/named.c).  The checked constants and the sync handles stay;
 * the lock word the handles keep (Linux, for fork) is moved along.  Only
 * while nothing of this process runs in the slot through the first mapping
 * (a cell being filled keeps its index: slot_commit and slot_abort find it
 * through ADDR).
 */
void slot_rebase(slot_t *sl, void *addr);

/*
 * Publish LEN bytes (LEN <= value_size) as the new value: SHM_OK and its
 * generation in *GENERATION.  The write lock is waited for until DEADLINE
 * (SLOT_NOWAIT: tried once); SHM_EINTR at a lock-wait slice or a signal
 * (call again), SHM_ETIMEOUT, SHM_EVALUE (too long, or after
 * slot_cancel()), SHM_ECORRUPT.  Nothing is published on failure.
 */
shm_status slot_publish(slot_t *sl, const void *data, size_t len, int64_t deadline,
                        uint64_t *generation, shm_error *err);

/*
 * Take the write lock (until DEADLINE, results as slot_publish) and a cell
 * to fill in place: on SHM_OK the caller writes up to value_size bytes at
 * LOAN->data and ends with slot_commit() or slot_abort(), from any thread
 * of this process (the write lock belongs to SL's sync handles, never to a
 * thread: platform/sync.h).  Other writers wait meanwhile; readers do not.
 */
shm_status slot_reserve(slot_t *sl, int64_t deadline, slot_loan *loan, shm_error *err);

/* Publish the loan's first LEN bytes (LEN <= value_size) and release the
   lock; returns the new generation. */
uint64_t slot_commit(slot_t *sl, const slot_loan *loan, size_t len);

/* Release the lock; nothing of the loan is published. */
void slot_abort(slot_t *sl, const slot_loan *loan);

/*
 * Start a read: VIEW describes the newest whole value (generation 0 and no
 * data before the first publish) and holds this reader's mark.  The caller
 * copies what it needs from VIEW->data, then calls slot_read_end(), which
 * says whether the copy is whole.  SHM_ECORRUPT on garbage.
 */
shm_status slot_read_begin(const slot_t *sl, slot_view *view, shm_error *err);

/* End a read: 1 when everything copied since slot_read_begin() is the
   value VIEW describes, 0 when a writer overwrote it (begin again).  Always
   releases the mark. */
int slot_read_end(const slot_t *sl, slot_view *view);

/*
 * Copy the newest whole value into BUF (CAP bytes): SHM_OK with its length
 * in *LEN and generation in *GENERATION (0 and 0 before the first
 * publish).  A value longer than CAP is SHM_EVALUE with *LEN and
 * *GENERATION telling which, and nothing copied.  SHM_ECORRUPT on garbage.
 */
shm_status slot_read(const slot_t *sl, void *buf, size_t cap, size_t *len,
                     uint64_t *generation, shm_error *err);

/* The newest generation (0: nothing published); a snapshot. */
uint64_t slot_generation(const slot_t *sl);

/*
 * Wait until the generation is greater than AFTER: SHM_OK with it in
 * *GENERATION.  SHM_ETIMEOUT at WAITING's deadline; SHM_EINTR at the end of
 * a wait slice or on a signal (check, call again with the same WAITING);
 * SHM_EVALUE after slot_cancel().
 */
shm_status slot_wait(slot_t *sl, uint64_t after, slot_waiting *waiting, uint64_t *generation,
                     shm_error *err);

/* The creator's process id as recorded at format time (0: unknown). */
uint32_t slot_creator_pid(const slot_t *sl);

/* Spin before blocking in slot_wait (the default) or not. */
void slot_set_spin(slot_t *sl, int spin);

/* Make every wait of this process on SL return SHM_EVALUE soon. */
void slot_cancel(slot_t *sl);

#endif /* PYSHM_CORE_SLOT_H */
