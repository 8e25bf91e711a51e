/*
 * core/ring.h -- the channel core: a ring of length-prefixed messages in a
 * mapped segment, shared by any number of sending and receiving processes.
 * (The Python type built on it is the binding's Channel,
 * binding/channel_type.c; "ring" here is the protocol alone.)
 *
 * Owns: the ring_* API, the shared header layout (ring_header) and the
 * rules below.  The caller maps the segment (platform/segment.h) and hands
 * the ring its address; the ring never maps anything itself.
 * May include: the C library, core/status.h, core/atomics.h and core/slot.h
 * (in ring.c: the slot's magic, to name it) and the platform contract
 * platform/sync.h for locks and waits.  No OS header,
 * no Python.h, no platform #ifdef.
 *
 * Never raises; every call returns a shm_status and fills a shm_error.  The
 * binding decides when the GIL is released; everything here is safe to
 * call without it.
 *
 * Layout of the segment (all integers in the machine's byte order):
 *
 *   offset 0      ring_header (RING_HEADER_SIZE bytes, cache-line separated
 *                 parts; see the struct below)
 *   offset 512    the ring: CAPACITY bytes, CAPACITY a multiple of 8
 *
 * Cursors are monotonic 64-bit byte counts; a cursor's place in the ring is
 * cursor % capacity.  write_cursor - read_cursor is the number of bytes
 * queued, never more than the capacity.
 *
 * A record is an 8-byte length word followed by the payload and zero to
 * seven bytes of padding to the next multiple of 8.  The length word holds
 * the payload size in its low 48 bits (RING_LEN_MASK), the record's kind in
 * bits 56-62 (RING_KIND_BYTES for send(), RING_KIND_OBJECT for the framed
 * object messages of the binding) and RING_REC_PAD in bit 63; bits 48-55
 * are zero.  Length words are 8-aligned and CAPACITY is a multiple of 8, so
 * a length word is never split.
 *
 * No record straddles the end of the ring (version 4; in version 3 only a
 * loan's did not), so that every message can be handed out in place -- a
 * loan (ring_reserve) is written there, a view (ring_recv_data) read there,
 * whatever its size and wherever the cursor stands.  When a record would
 * reach past the end, the sender lays a padding record over the rest of
 * the ring (RING_REC_PAD, its length the bytes after its length word up to
 * the end) and puts the record at offset 0; receivers consume padding
 * records silently.  The padding is published together with the record,
 * or -- when the record could never fit in front of the cursor (it is
 * longer than the cursor's offset) -- on its own, at once, so that
 * receivers clear the way.  In an empty ring a sender that gets the recv
 * lock at once consumes the padding itself (so a send that finds the ring
 * empty never waits for a receiver, as before, and the padding is never
 * counted as queued).  Either way the largest
 * message is CAPACITY - 8 bytes, as before.  The cost in ring space: at most one padding record
 * per lap, shorter than the record after it, consumed as soon as a
 * receiver reaches it; while it is queued, a sender may wait for up to
 * that many bytes more than a wrapping record would have needed.  A record
 * whose length word says it straddles the end is corrupt.
 *
 * Publishing: a sender writes the record into free space under the send
 * lock, then stores write_cursor with release order; receivers load it with
 * acquire order before reading.  Receivers consume under the recv lock and
 * store read_cursor with release order, which senders acquire before reusing
 * space.  A sender that dies before its store leaves nothing visible; a
 * receiver that dies before its store leaves the message queued.
 *
 * Waiting: each cursor has a 32-bit wait word (a sequence in
 * SYNC_SEQ_MASK) that its side bumps after every move.  A waiter snapshots
 * the word, re-checks, spins briefly (adaptive, capped), then blocks in
 * sync_wait() while the sequence is unchanged; sync_wait() registers it
 * first (a bit in the word on Linux, a count on Windows) and sync_bump()
 * makes a system call only for registered waiters, so the fast path makes
 * none and a waiter that died costs at most one.  Locks are never held
 * while blocking for data or space.
 *
 * Slices and signals: a blocking call sleeps in slices and returns
 * SHM_EINTR at the end of each (and on a signal), so that the binding can
 * check for signals with the GIL and call again; a ring_wait carries the
 * deadline and the progress across those calls.  The first sleep of a wait
 * is short (a signal that arrived while the thread spun, after the GIL was
 * released and before it slept, interrupts no system call: it is seen at
 * the end of that short slice); once a slice has passed, the next calls go
 * to sleep without spinning, in long slices.
 *
 * Locks: one 32-bit word per side, owned by the sync scheme (see
 * platform/sync.h): a valid owner id or 0, checked on every use.
 *
 * Trust: the header and records can be scribbled on by any process that maps
 * the segment.  Capacity is checked once at attach and kept in ring_t (never
 * re-read); every cursor and length word is checked against it before use,
 * so garbage gives SHM_ECORRUPT (or a timeout), never an access outside the
 * mapping.
 */
#ifndef PYSHM_CORE_RING_H
#define PYSHM_CORE_RING_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* uint32_t, uint64_t, int64_t */

#include "core/status.h"       /* shm_status, shm_error */
#include "platform/segment.h"  /* shm_segment */
#include "platform/sync.h"     /* sync_handles, the lock and word ids, SYNC_SEQ_MASK,
                                  SYNC_FOREVER; shm_char */

#define RING_MAGIC          0x4E414843u     /* "CHAN" read as little-endian bytes */
#define RING_VERSION        4u      /* 2: lock words, creator_pid, sent and received;
                                       3: record kinds and padding records;
                                       4: no record straddles the ring's end */
#define RING_HEADER_SIZE    512u
#define RING_LINE           64u
#define RING_MIN_CAPACITY   16u             /* room for one empty message and more */
#define RING_MAX_CAPACITY   ((uint64_t)1 << 46)  /* 64 TiB: far beyond any mapping */

/* The length word of a record (see "A record" above). */
#define RING_LEN_MASK       ((((uint64_t)1) << 48) - 1)
#define RING_KIND_SHIFT     56
#define RING_REC_PAD        (((uint64_t)1) << 63)
#define RING_KIND_BYTES     0u      /* send(), reserve(): raw bytes */
#define RING_KIND_OBJECT    1u      /* send_obj(): a frame of the binding's */
#define RING_KIND_MAX       1u

/* Deadlines (sync_now_ns() values).  RING_NOWAIT: one try, no spin, lock
   taken only if free at once (the binding's fast path, GIL held).  Any other
   expired deadline: the lock may be spun for briefly, the data is checked
   once.  RING_FOREVER: no limit. */
#define RING_NOWAIT  ((int64_t)0)
#define RING_FOREVER SYNC_FOREVER

typedef struct {
    /* Line 0: written by the creator before magic, then never changed. */
    uint32_t magic;             /* RING_MAGIC, stored last with release order */
    uint32_t version;           /* RING_VERSION */
    uint64_t capacity;          /* ring bytes, a multiple of 8 */
    uint32_t header_size;       /* RING_HEADER_SIZE: offset of the ring */
    uint32_t sync_kind;         /* SYNC_KIND_* of the creating build */
    uint32_t sync_domain;       /* sync_domain() of the creator: who may share
                                   the locks (0: everyone) */
    uint8_t pad0[RING_LINE - 28];

    /* Line 1: the senders' side. */
    uint64_t write_cursor;      /* bytes ever published */
    uint32_t data_seq;          /* wait word SYNC_WORD_DATA: bumped after each
                                   publish; receivers wait on it */
    uint32_t data_waiters;      /* its waiter count (Windows; zero elsewhere) */
    uint32_t send_cpu;          /* sync_cpu() of the last sender (a hint; 0 unknown) */
    uint32_t creator_pid;       /* sync_process_id() of the creator, written by
                                   ring_format and never changed (0 unknown) */
    uint64_t sent;              /* messages ever published (see ring_messages) */
    uint64_t data_woken;        /* sync_now_ns() of the last sender that found a
                                   receiver asleep, stored before it woke it: a
                                   hint for the woken one's spin (0 none) */
    uint8_t pad1[RING_LINE - 40];

    /* Line 2: the receivers' side. */
    uint64_t read_cursor;       /* bytes ever consumed */
    uint32_t space_seq;         /* wait word SYNC_WORD_SPACE: bumped after each
                                   consume; senders wait on it */
    uint32_t space_waiters;     /* its waiter count (Windows; zero elsewhere) */
    uint32_t recv_cpu;          /* sync_cpu() of the last receiver (a hint; 0 unknown) */
    uint32_t pad2a;
    uint64_t received;          /* messages ever consumed (see ring_messages) */
    uint64_t space_woken;       /* the same for the senders a receiver wakes */
    uint8_t pad2[RING_LINE - 40];

    /* Lines 3 and 4: the lock words, a line each (see platform/sync.h). */
    uint32_t send_lock;         /* SYNC_LOCK_SEND: serialises senders */
    uint8_t pad3[RING_LINE - 4];
    uint32_t recv_lock;         /* SYNC_LOCK_RECV: serialises receivers */
    uint8_t pad4[RING_LINE - 4];

    uint8_t reserved[RING_HEADER_SIZE - 5 * RING_LINE];     /* zero */
} ring_header;

/*
 * This process's view of one channel.  Right after ring_init() it is
 * detached (hdr == NULL) and ring_detach() is safe.
 */
typedef struct {
    ring_header *hdr;           /* start of the mapping; NULL when detached */
    unsigned char *ring;        /* hdr + RING_HEADER_SIZE */
    uint64_t capacity;          /* checked copy of hdr->capacity: never re-read */
    sync_handles sync;          /* this object's liveness slot and OS objects
                                   (platform/sync.h) */
    uint32_t spin[SYNC_NWORDS]; /* spin budgets (ns of spinning, core/spin.h), by the
                                   sync_word_id waited on: [SYNC_WORD_DATA] for
                                   receivers, [SYNC_WORD_SPACE] for senders */
    uint64_t seen_read;         /* read_cursor as this sender last saw it */
    uint64_t seen_write;        /* write_cursor as this receiver last saw it */
    int can_spin;               /* more than one CPU */
    int no_spin;                /* ring_set_spin(ch, 0): block at once */
    int closing;                /* set by ring_cancel(): waits return at once */
} ring_t;

/*
 * One blocking call of the binding, across the SHM_EINTR returns that let it
 * check for signals: set up with ring_wait_until(), passed to every call of
 * the same operation.
 */
typedef struct {
    int64_t deadline;           /* sync_now_ns() value; RING_FOREVER; expired:
                                   spin for the lock, check once, no sleep */
    int resumed;                /* set by the core when it returned SHM_EINTR
                                   after sleeping: the next call sleeps at once
                                   (no spin), in long slices */
} ring_wait;

static inline ring_wait
ring_wait_until(int64_t deadline)
{
    ring_wait w;

    w.deadline = deadline;
    w.resumed = 0;
    return w;
}

/* A received message between ring_recv_begin() and commit/abort. */
typedef struct {
    uint64_t cursor;            /* read cursor at the record */
    size_t len;                 /* payload bytes */
    unsigned kind;              /* RING_KIND_* */
} ring_msg;

/* One piece of a message sent with ring_sendv(). */
typedef struct {
    const void *data;
    size_t len;
} ring_piece;

/* A loan between ring_reserve() and commit/abort: LEN writable bytes at
   DATA, inside the ring, contiguous. */
typedef struct {
    uint64_t cursor;            /* write cursor at the reservation */
    uint64_t skip;              /* padding laid before the record (0 or up to the end) */
    size_t len;                 /* payload bytes */
    unsigned char *data;        /* the payload's place in the ring */
} ring_loan;

/* Round CAPACITY up to a multiple of 8 and check its range. */
shm_status ring_capacity(uint64_t requested, uint64_t *capacity, shm_error *err);

/* Size of the segment that holds a channel of CAPACITY bytes. */
uint64_t ring_segment_size(uint64_t capacity);

/* Largest payload a channel of CAPACITY bytes takes. */
static inline uint64_t
ring_max_message(uint64_t capacity)
{
    return capacity - 8;
}

void ring_init(ring_t *ch);

/*
 * Write a fresh header for a channel of CAPACITY into the new segment at
 * ADDR (SIZE bytes), magic last; it records this process as the creator.
 * Creator only, before anyone can attach.
 */
shm_status ring_format(void *addr, size_t size, uint64_t capacity, shm_error *err);

/*
 * Whether the header at ADDR (SIZE mapped bytes) has its magic (stored
 * last by ring_format, with release order): 0 for a segment that is not a
 * channel, or not one yet -- where segments do not appear whole
 * (shm_segment_appears_whole), the caller may wait for a creator between
 * its create and its format.
 */
int ring_formatted(const void *addr, size_t size);

/*
 * Check the header of the mapped segment SEG and attach CH to it; open the
 * sync handles for NAME (on POSIX they take over the descriptor SEG kept:
 * open it with seg->keep_fd set).  A segment that is not a channel (a zero
 * magic included: see ring_formatted), or one of another version, sync
 * scheme or sync domain, is SHM_ECORRUPT with a clear detail.  Never waits.
 * CH must not move while attached (sync_handles).
 */
shm_status ring_attach(ring_t *ch, shm_segment *seg, const shm_char *name, shm_error *err);

/*
 * How many channel objects, in any process, have the channel in the mapped
 * segment SEG attached right now (a snapshot): sync_users() on the
 * descriptor SEG kept (open it with seg->keep_fd set; read-only will do).
 * *USERS is -1 when this build's locks cannot tell.  The header is checked
 * as ring_attach() does (SHM_ECORRUPT for a segment that is not a channel
 * of this build); nothing is attached, waited for or written.
 */
shm_status ring_users(const shm_segment *seg, long *users, shm_error *err);

void ring_detach(ring_t *ch);

/*
 * Go on through ADDR, a second mapping of the same segment (the first one
 * is being given away: see platform/pages.h, "Private copies in place").
 * The capacity and the sync handles stay; the lock words the handles keep
 * (Linux, for fork) are moved along.  Only while nothing of this process
 * runs in the ring through the first mapping.
 */
void ring_rebase(ring_t *ch, void *addr);

/*
 * Send LEN bytes (LEN <= ring_max_message()).  WAITING: the wait (NULL:
 * one try without spinning or waiting, as RING_NOWAIT).  SHM_OK once
 * published; SHM_ETIMEOUT when no space came before the deadline;
 * SHM_EINTR: check for signals and call again with the same WAITING;
 * SHM_EVALUE after ring_cancel(); SHM_ECORRUPT.
 */
shm_status ring_send(ring_t *ch, const void *data, size_t len, ring_wait *waiting,
                     shm_error *err);

/*
 * Send one message of kind KIND (RING_KIND_*) gathered from NPIECES pieces,
 * copied one after the other into one record: the sum of their lengths is
 * the message's length (<= ring_max_message()).  Results as ring_send().
 */
shm_status ring_sendv(ring_t *ch, const ring_piece *pieces, size_t npieces, unsigned kind,
                      ring_wait *waiting, shm_error *err);

/*
 * Reserve a record of LEN bytes (LEN <= ring_max_message()) that does not
 * straddle the ring's end, and hold the send lock: on SHM_OK the caller
 * writes up to LEN bytes at LOAN->data (old contents, not zeroed) and must
 * end with ring_reserve_commit() or ring_reserve_abort() in the same
 * thread.  Other senders wait meanwhile.  Results as ring_send().  A sender
 * that dies holding a loan leaves nothing visible (at most a padding record,
 * which receivers skip).
 */
shm_status ring_reserve(ring_t *ch, size_t len, ring_wait *waiting, ring_loan *loan,
                        shm_error *err);

/* Publish the loan as a message of kind KIND and release the lock. */
void ring_reserve_commit(ring_t *ch, const ring_loan *loan, unsigned kind);

/* Release the lock; nothing of the loan becomes visible. */
void ring_reserve_abort(ring_t *ch);

/*
 * Wait for the next message and hold the recv lock: on SHM_OK, MSG says
 * where and how long it is and its kind, and the caller must end with
 * ring_recv_commit() or ring_recv_abort() in the same thread.  Padding
 * records met on the way are consumed.  WAITING and the other results as
 * ring_send().
 */
shm_status ring_recv_begin(ring_t *ch, ring_wait *waiting, ring_msg *msg, shm_error *err);

/* The held message's payload in place: contiguous, as every record is
   (ring_recv_begin checked that it does not straddle the ring's end). */
const unsigned char *ring_recv_data(const ring_t *ch, const ring_msg *msg);

/* Copy N bytes of the held message from OFFSET on to DST; the caller has
   checked OFFSET + N <= msg->len. */
void ring_recv_read(const ring_t *ch, const ring_msg *msg, size_t offset, void *dst, size_t n);

/* Copy the message to DST (msg->len bytes; none when DST is NULL), consume
   it, release the lock. */
void ring_recv_commit(ring_t *ch, const ring_msg *msg, void *dst);

/* Release the lock and leave the message queued. */
void ring_recv_abort(ring_t *ch);

/* Bytes queued, or UINT64_MAX when the cursors make no sense. */
uint64_t ring_queued(const ring_t *ch);

/*
 * Messages queued, or UINT64_MAX when the cursors make no sense.  The
 * difference of two counters that each side bumps after moving its cursor,
 * kept within what the queued bytes allow: 0 when no byte is queued or
 * all that is queued is one padding record (one published alone, see "No
 * record straddles"), at least 1 otherwise, at most one per 8 bytes.  A
 * snapshot, like ring_queued().  A process killed between moving a cursor
 * and counting leaves the counters one apart for good: the count is then
 * one off whenever messages are queued (still 0 exactly when none are).
 */
uint64_t ring_messages(const ring_t *ch);

/* The creator's process id as recorded at format time (0: unknown). */
uint32_t ring_creator_pid(const ring_t *ch);

/*
 * The wait policy of this process's view: SPIN non-zero (the default after
 * ring_init) spins adaptively before blocking; 0 blocks at once, trading
 * wake-up latency for CPU time.  Not shared: each process picks its own.
 */
void ring_set_spin(ring_t *ch, int spin);

/*
 * The spin of a wait, shared with waiters whose sleep is not ring_wait's
 * (the binding's readiness for event loops): spin as a wait on word ID
 * does before blocking -- the learned budget in ns, the yields -- until
 * the word's sequence moves from SEQ; 1 when it moved, 0 when the budget
 * ran out (at once with spin off or a budget learned down to 0).
 * ring_spin_adapt: such a waiter began at START, blocked at SLEPT and was
 * woken at WOKE (sync_now_ns() values; RESUMED as spin_learn's); the budget
 * learns from it, with the header's wake time, as a wait's does (core/spin.h).
 */
int ring_spin(ring_t *ch, sync_word_id id, uint32_t seq);
void ring_spin_adapt(ring_t *ch, sync_word_id id, int64_t start, int64_t slept, int64_t woke,
                     int resumed);

/*
 * Make every wait of this process on CH return SHM_EVALUE ("closed") soon:
 * sets closing and wakes all waiters (others re-check and sleep again).
 */
void ring_cancel(ring_t *ch);

#endif /* PYSHM_CORE_RING_H */
