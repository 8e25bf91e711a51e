/*
 * core/ring.c -- the channel ring protocol (see core/ring.h for the layout
 * and the rules).
 *
 * Owns: the implementation of ring_*: header format and validation, the
 * send and receive paths, spinning and blocking.
 * May include: the C library, the core/ headers (slot.h for the slot's
 * magic only), platform/sync.h (waits and locks by sync_lock_id /
 * sync_word_id).  No OS header, no Python.h, no #ifdef.
 */
#include "core/ring.h"

#include <stddef.h>     /* offsetof */
#include <string.h>     /* memcpy, memset */

#include "core/atomics.h"    /* acquire/release loads and stores on shared words */
#include "core/slot.h"       /* SLOT_MAGIC: a slot opened as a channel is named */
#include "core/spin.h"       /* the spin before a sleep, its budget's rule */

/* The header layout is part of the on-disk (in-memory) format. */
typedef char ring_check_header_size[sizeof(ring_header) == RING_HEADER_SIZE ? 1 : -1];
typedef char ring_check_send_line[offsetof(ring_header, write_cursor) == RING_LINE ? 1 : -1];
typedef char ring_check_recv_line[offsetof(ring_header, read_cursor) == 2 * RING_LINE ? 1 : -1];
typedef char ring_check_locks[offsetof(ring_header, send_lock) == 3 * RING_LINE &&
                              offsetof(ring_header, recv_lock) == 4 * RING_LINE ? 1 : -1];
typedef char ring_check_sent[offsetof(ring_header, sent) == RING_LINE + 24 ? 1 : -1];
typedef char ring_check_received[offsetof(ring_header, received) == 2 * RING_LINE + 24 ? 1 : -1];


/*
 * Wait slices (see core/ring.h, "Slices and signals").  FIRST_SLICE_NS
 * bounds how late a signal that hit the spin is seen (Ctrl-C must feel
 * prompt); LONG_SLICE_NS how often an idle waiter takes the GIL to check
 * (once a second is no polling), and how long a waiter sleeps when a waker
 * died between its publish and its wake.
 */
#define FIRST_SLICE_NS ((int64_t)10000000)
#define LONG_SLICE_NS  ((int64_t)1000000000)

static uint64_t
pad8(uint64_t n)
{
    return (n + 7u) & ~(uint64_t)7u;
}

shm_status
ring_capacity(uint64_t requested, uint64_t *capacity, shm_error *err)
{
    uint64_t cap;

    if (requested < RING_MIN_CAPACITY)
        return shm_fail(err, SHM_EVALUE, "capacity is too small (at least 16 bytes)");
    if (requested > RING_MAX_CAPACITY)
        return shm_fail(err, SHM_EVALUE, "capacity is too large");
    cap = pad8(requested);
    if (cap > (uint64_t)SIZE_MAX - RING_HEADER_SIZE)
        return shm_fail(err, SHM_EVALUE, "capacity is larger than this process can map");
    *capacity = cap;
    return SHM_OK;
}

uint64_t
ring_segment_size(uint64_t capacity)
{
    return RING_HEADER_SIZE + capacity;
}

void
ring_init(ring_t *ch)
{
    ch->hdr = NULL;
    ch->ring = NULL;
    ch->capacity = 0;
    sync_handles_init(&ch->sync);
    ch->spin[SYNC_WORD_DATA] = (uint32_t)SPIN_START_NS;
    ch->spin[SYNC_WORD_SPACE] = (uint32_t)SPIN_START_NS;
    ch->can_spin = sync_ncpu() > 1;
    ch->no_spin = 0;
    ch->seen_read = 0;
    ch->seen_write = 0;
    ch->closing = 0;
}

shm_status
ring_format(void *addr, size_t size, uint64_t capacity, shm_error *err)
{
    ring_header *h = (ring_header *)addr;

    if (capacity < RING_MIN_CAPACITY || capacity % 8 != 0 ||
        size < RING_HEADER_SIZE || capacity > size - RING_HEADER_SIZE)
        return shm_fail(err, SHM_EVALUE, "segment too small for the channel");
    /* Zero is a free lock, a fresh wait word and an empty count. */
    memset(h, 0, RING_HEADER_SIZE);
    h->version = RING_VERSION;
    h->capacity = capacity;
    h->header_size = RING_HEADER_SIZE;
    h->sync_kind = sync_kind();
    h->sync_domain = sync_domain();
    h->creator_pid = sync_process_id();
    /* Last: an opener that sees the magic sees everything above. */
    at_store32(&h->magic, RING_MAGIC);
    return SHM_OK;
}

int
ring_formatted(const void *addr, size_t size)
{
    return size >= RING_HEADER_SIZE && at_load32(&((const ring_header *)addr)->magic) != 0;
}

/* The header of the mapped segment SEG, checked as ring_attach says: a
   channel of this build's version, sync scheme and domain, whose capacity
   fits.  SHM_OK with the capacity in *CAPACITY, else SHM_ECORRUPT. */
static shm_status
check_header(const shm_segment *seg, uint64_t *capacity, shm_error *err)
{
    size_t size = seg->size;
    const ring_header *h = (const ring_header *)seg->addr;
    uint32_t magic;

    if (size < RING_HEADER_SIZE + RING_MIN_CAPACITY)
        return shm_fail(err, SHM_ECORRUPT, "not a pyshm channel: the segment is too small "
                        "for one (a raw segment? open it with SharedMemory)");
    /* Acquire: with the magic, everything ring_format wrote before it. */
    magic = at_load32(&h->magic);
    if (magic == 0)
        return shm_fail(err, SHM_ECORRUPT,
                        "not a pyshm channel: its header has no magic number, as in a raw "
                        "segment (open it with SharedMemory)");
    if (magic == SLOT_MAGIC)
        return shm_fail(err, SHM_ECORRUPT,
                        "the segment is a slot, not a channel (open it as a Slot)");
    if (magic != RING_MAGIC)
        return shm_fail(err, SHM_ECORRUPT,
                        "not a pyshm channel: its header has no channel magic number; it "
                        "looks like a raw segment (open it with SharedMemory)");
    if (h->version != RING_VERSION)
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel of another format version (this build speaks "
                        "version 4): create it again with this build");
    if (h->header_size != RING_HEADER_SIZE)
        return shm_fail(err, SHM_ECORRUPT, "pyshm channel header has a bad size");
    if (h->sync_kind == SYNC_KIND_WIN32_MUTEX && sync_kind() != SYNC_KIND_WIN32_MUTEX)
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel was created by an older Windows build (locks in "
                        "named mutexes): this build's locks are lock words in the header, "
                        "so they cannot share a channel; create it again with this build");
    if (h->sync_kind != sync_kind())
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel was created by a build with another wait/lock "
                        "scheme (futex, fallback or Windows): they cannot share a channel");
    if (h->sync_domain != sync_domain())
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel was created in another PID namespace: this build's "
                        "locks (the portable fallback) name their owners by pid and cannot "
                        "be shared across namespaces");
    *capacity = h->capacity;
    if (*capacity < RING_MIN_CAPACITY || *capacity % 8 != 0 ||
        *capacity > (uint64_t)(size - RING_HEADER_SIZE))
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel header has a capacity that does not fit the segment");
    return SHM_OK;
}

shm_status
ring_attach(ring_t *ch, shm_segment *seg, const shm_char *name, shm_error *err)
{
    ring_header *h = (ring_header *)seg->addr;
    uint32_t *words[SYNC_NLOCKS];
    uint64_t capacity;
    shm_status status = check_header(seg, &capacity, err);

    if (status != SHM_OK)
        return status;
    words[SYNC_LOCK_SEND] = &h->send_lock;
    words[SYNC_LOCK_RECV] = &h->recv_lock;
    status = sync_handles_open(&ch->sync, name, &seg->handle, words, err);
    if (status != SHM_OK)
        return status;
    ch->hdr = h;
    ch->ring = (unsigned char *)seg->addr + RING_HEADER_SIZE;
    ch->capacity = capacity;
    at_storei(&ch->closing, 0);
    return SHM_OK;
}

shm_status
ring_users(const shm_segment *seg, long *users, shm_error *err)
{
    uint64_t capacity;
    shm_status status = check_header(seg, &capacity, err);

    if (status != SHM_OK)
        return status;
    return sync_users(seg->handle, users, err);
}

void
ring_detach(ring_t *ch)
{
    sync_handles_close(&ch->sync);
    ch->hdr = NULL;
    ch->ring = NULL;
    ch->capacity = 0;
}

void
ring_rebase(ring_t *ch, void *addr)
{
    ring_header *h = (ring_header *)addr;

    ch->hdr = h;
    ch->ring = (unsigned char *)addr + RING_HEADER_SIZE;
    /* The words sync_handles_open was given (Linux clears orphans in them
       when a fork child claims its slot): the same words, seen here now. */
    ch->sync.words[SYNC_LOCK_SEND] = &h->send_lock;
    ch->sync.words[SYNC_LOCK_RECV] = &h->recv_lock;
}

/* ---- ring copies (positions are cursors) ----------------------------------- */

/* Every copy lies inside one record, and no record straddles the ring's
   end (core/ring.h): the caller has checked [cursor, cursor + n) against
   the capacity (claim() for records written, take_record() for records
   read), so one memcpy at the cursor's offset does. */
static void
copy_in(ring_t *ch, uint64_t cursor, const void *src, size_t n)
{
    memcpy(ch->ring + (size_t)(cursor % ch->capacity), src, n);
}

static void
copy_out(const ring_t *ch, uint64_t cursor, void *dst, size_t n)
{
    memcpy(dst, ch->ring + (size_t)(cursor % ch->capacity), n);
}

/* ---- locks and wait words by id ------------------------------------------ */

/* The header fields behind each sync_lock_id and sync_word_id: one place
   says which is which, the protocol below speaks of ids only. */
static uint32_t *
lock_word(ring_header *h, sync_lock_id id)
{
    return id == SYNC_LOCK_SEND ? &h->send_lock : &h->recv_lock;
}

/* The wait word of ID. */
static uint32_t *
seq_word(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->data_seq : &h->space_seq;
}

/* The waiter count of ID (Windows): receivers for data, senders for space. */
static uint32_t *
waiters_of(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->data_waiters : &h->space_waiters;
}

/* When the side that bumps ID last found one of its waiters asleep. */
static uint64_t *
woken_at(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->data_woken : &h->space_woken;
}

/* The CPU hint of the side that bumps ID (the peer of its waiters). */
static uint32_t *
bumper_cpu(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->send_cpu : &h->recv_cpu;
}

/* W NULL: try once, no spin (RING_NOWAIT). */
static int64_t
deadline_of(const ring_wait *w)
{
    return w == NULL ? RING_NOWAIT : w->deadline;
}

static shm_status
take_lock(ring_t *ch, sync_lock_id id, const ring_wait *w, shm_error *err)
{
    uint32_t *word = lock_word(ch->hdr, id);

    if (deadline_of(w) == RING_NOWAIT)
        return sync_trylock(&ch->sync, id, word, err);
    return sync_lock(&ch->sync, id, word, w->deadline, err);
}

static void
drop_lock(ring_t *ch, sync_lock_id id)
{
    sync_unlock(&ch->sync, id, lock_word(ch->hdr, id));
}

/*
 * After a publish (DATA) or a consume (SPACE): move the word on so that
 * every waiter re-checks; sync_bump() wakes only registered waiters, so
 * the fast path makes no system call.  When a waiter is registered, the
 * time goes into the header first, for the woken waiter's spin budget
 * (see the top of this file); whether to wake is sync_bump()'s alone.
 */
static void
bump_and_wake(ring_t *ch, sync_word_id id)
{
    uint32_t *word = seq_word(ch->hdr, id), *waiters = waiters_of(ch->hdr, id);

    if (sync_waiting(word, waiters))
        at_store64_relaxed(woken_at(ch->hdr, id), (uint64_t)sync_now_ns());
    sync_bump(&ch->sync, id, word, waiters);
}

/* ---- waiting -------------------------------------------------------------- */

static shm_status
closed_error(shm_error *err)
{
    return shm_fail(err, SHM_EVALUE, "operation on a closed Channel");
}

int
ring_spin(ring_t *ch, sync_word_id id, uint32_t seq)
{
    return spin_until_moved(seq_word(ch->hdr, id), seq, ch->no_spin ? 0 : (int64_t)ch->spin[id],
                            at_load32_relaxed(bumper_cpu(ch->hdr, id)), ch->can_spin);
}

void
ring_spin_adapt(ring_t *ch, sync_word_id id, int64_t start, int64_t slept, int64_t woke,
                int resumed)
{
    /* Not with spin off: its budget stays 0.  Races between threads on
       this budget only blur a heuristic. */
    if (ch->no_spin)
        return;
    ch->spin[id] = spin_learn(ch->spin[id], start, slept, woke,
                              (int64_t)at_load64_relaxed(woken_at(ch->hdr, id)), resumed);
}

/*
 * Wait until wait word ID moves from SEQ (the snapshot taken before the
 * failed check), the deadline of W passes, or a signal arrives.  ID also
 * picks the spin budget and the sync objects.  SHM_OK means "check again";
 * SHM_EINTR at the end of a slice or on a signal (W->resumed is then set:
 * the next call goes straight to sleep).
 */
static shm_status
wait_change(ring_t *ch, sync_word_id id, uint32_t seq, ring_wait *w, shm_error *err)
{
    uint32_t *word = seq_word(ch->hdr, id), *waiters = waiters_of(ch->hdr, id);
    int64_t start = sync_now_ns(), slept, woke, until, slice;
    int resumed = w->resumed;
    shm_status status;

    if (w->deadline <= start)
        return shm_fail(err, SHM_ETIMEOUT, id == SYNC_WORD_DATA
                                               ? "no message before the timeout"
                                               : "no space before the timeout");
    if (!resumed && ring_spin(ch, id, seq))
        return SHM_OK;
    if (at_loadi(&ch->closing))
        return closed_error(err);

    /* Sleep one slice at most; sync_wait registers first and re-checks the
       word, so a bump between our check and our sleep is never missed. */
    slept = sync_now_ns();
    slice = resumed ? LONG_SLICE_NS : FIRST_SLICE_NS;
    until = w->deadline - slept > slice ? slept + slice : w->deadline;
    status = sync_wait(&ch->sync, id, word, waiters, seq, until, err);
    woke = sync_now_ns();

    if (status == SHM_OK) {
        /* Woken: the budget learns whether the spin would have paid. */
        ring_spin_adapt(ch, id, start, slept, woke, resumed);
        w->resumed = 0;
        if (at_loadi(&ch->closing))
            return closed_error(err);
        return SHM_OK;
    }
    if (status == SHM_ETIMEOUT) {
        if (woke >= w->deadline)
            return shm_fail(err, SHM_ETIMEOUT, id == SYNC_WORD_DATA
                                                   ? "no message before the timeout"
                                                   : "no space before the timeout");
        /* The slice is over: back to the binding for a signal check.
           Never "woken": a signal that came during the spin is pending
           there, and only the binding can see it. */
        w->resumed = 1;
        return shm_fail(err, SHM_EINTR, "wait slice");
    }
    if (status == SHM_EINTR)
        w->resumed = 1;
    return status;
}

static shm_status
corrupt(shm_error *err, const char *detail)
{
    return shm_fail(err, SHM_ECORRUPT, detail);
}

/* ---- send ----------------------------------------------------------------- */

/*
 * Publish a padding record at W over the rest of the ring (TAIL bytes, its
 * length word included); the send lock is held and the space is free.
 * Receivers are woken: they consume it, which is what makes room.
 */
static void
publish_padding(ring_t *ch, uint64_t w, uint64_t tail)
{
    uint64_t word = RING_REC_PAD | (tail - 8);

    copy_in(ch, w, &word, 8);
    at_store64(&ch->hdr->write_cursor, w + tail);
    bump_and_wake(ch, SYNC_WORD_DATA);
}

/*
 * The ring is empty, and a record does not fit in front of the write
 * cursor W (TAIL bytes to the ring's end).  Rather than publish a padding
 * record and leave it to a receiver (which may not come before the record
 * needs the room -- there may be none yet, or it may be this very thread,
 * as in a send(timeout=0) followed by a recv() -- and which would count
 * the padding in the bytes queued meanwhile), take the recv lock if it is
 * free at once and do both: publish the padding, then consume it.  The send lock is held.
 * Returns 1 when done (the cursors stand at the next lap's start, the
 * padding gone), 0 when the recv lock was not free at once (a receiver is
 * busy: it will clear the way) or the ring is no longer empty.  Only ever
 * tried, never waited for: receivers take the send lock while they hold
 * theirs (a recv_view forwarded into a reserve), so the other order must
 * not wait.  Killed half-way, the padding stays published, as when it is
 * published alone.
 */
static int
skip_empty_lap(ring_t *ch, uint64_t w, uint64_t tail)
{
    ring_header *h = ch->hdr;
    uint64_t word = RING_REC_PAD | (tail - 8);
    shm_error ignored;

    if (sync_trylock(&ch->sync, SYNC_LOCK_RECV, lock_word(h, SYNC_LOCK_RECV), &ignored) !=
        SHM_OK)
        return 0;   /* busy, or garbage that the receivers will report */
    if (at_load64(&h->read_cursor) != w) {
        drop_lock(ch, SYNC_LOCK_RECV);
        return 0;
    }
    /* In this order, so that a snapshot (ring_messages, ring_queued) sees
       an empty ring, a lone padding record, or an empty ring again. */
    copy_in(ch, w, &word, 8);
    at_store64(&h->write_cursor, w + tail);
    at_store64(&h->read_cursor, w + tail);
    drop_lock(ch, SYNC_LOCK_RECV);
    /* A consume: senders waiting for room look again. */
    bump_and_wake(ch, SYNC_WORD_SPACE);
    return 1;
}

/*
 * Take the send lock and wait until a record of NEED bytes fits at the
 * write cursor without straddling the ring's end; *SKIP says how much
 * padding goes before it (0, or the rest of the ring, the record starting
 * at offset 0).  Returns SHM_OK with the lock held and *WP the write
 * cursor; on any other status the lock is not held.
 */
static shm_status
claim(ring_t *ch, uint64_t need, ring_wait *waiting, uint64_t *wp, uint64_t *skip,
      shm_error *err)
{
    ring_header *h = ch->hdr;
    uint64_t w, r, used, room, off, tail;
    uint32_t seq;
    shm_status status;

    *skip = 0;
    for (;;) {
        if (at_loadi(&ch->closing))
            return closed_error(err);
        /* Snapshot before the check: any consume after this bumps it. */
        seq = at_load32_sc(&h->space_seq);
        status = take_lock(ch, SYNC_LOCK_SEND, waiting, err);
        if (status != SHM_OK)
            return status;
        for (;;) {
            w = at_load64_relaxed(&h->write_cursor);
            r = at_load64(&h->read_cursor);
            ch->seen_read = r;
            used = w - r;
            if ((w | r) % 8 != 0 || used > ch->capacity) {
                drop_lock(ch, SYNC_LOCK_SEND);
                return corrupt(err, "channel cursors are corrupt (header overwritten?)");
            }
            room = ch->capacity - used;
            off = w % ch->capacity;
            tail = ch->capacity - off;
            *wp = w;
            if (need <= tail) {
                if (need <= room)
                    return SHM_OK;
            } else if (used == 0 && skip_empty_lap(ch, w, tail)) {
                continue;       /* the record now goes at offset 0 */
            } else if (tail + need <= room) {
                /* Padding to the end, the record at offset 0: both
                   published together by the commit. */
                *skip = tail;
                return SHM_OK;
            } else if (need > off && tail <= room) {
                /* The record can never fit in front of the cursor in this
                   lap: publish the padding now so that receivers clear the
                   way, then look again (the record now goes at offset 0). */
                publish_padding(ch, w, tail);
                continue;
            }
            break;
        }
        drop_lock(ch, SYNC_LOCK_SEND);
        if (deadline_of(waiting) == RING_NOWAIT)
            return shm_fail(err, SHM_ETIMEOUT, "the channel is full");
        status = wait_change(ch, SYNC_WORD_SPACE, seq, waiting, err);
        if (status != SHM_OK)
            return status;
    }
}

/* After the record at W (NEED bytes, after SKIP bytes of padding) is
   written: publish it, count it, release the lock, wake receivers. */
static void
publish(ring_t *ch, uint64_t w, uint64_t skip, uint64_t need)
{
    ring_header *h = ch->hdr;

    at_store64(&h->write_cursor, w + skip + need);
    /* Counted after publishing, under the lock (see ring_messages). */
    at_store64(&h->sent, at_load64_relaxed(&h->sent) + 1);
    at_store32_relaxed(&h->send_cpu, sync_cpu());
    drop_lock(ch, SYNC_LOCK_SEND);
    bump_and_wake(ch, SYNC_WORD_DATA);
}

shm_status
ring_send(ring_t *ch, const void *data, size_t len, ring_wait *waiting, shm_error *err)
{
    ring_piece piece;

    piece.data = data;
    piece.len = len;
    return ring_sendv(ch, &piece, 1, RING_KIND_BYTES, waiting, err);
}

shm_status
ring_sendv(ring_t *ch, const ring_piece *pieces, size_t npieces, unsigned kind,
           ring_wait *waiting, shm_error *err)
{
    ring_header *h = ch->hdr;
    uint64_t max = ring_max_message(ch->capacity), need, w, r, used, lenword, skip, pos;
    size_t len = 0, i;
    shm_status status;

    for (i = 0; i < npieces; i++) {
        if ((uint64_t)pieces[i].len > max - len)
            return shm_fail(err, SHM_EVALUE, "message is larger than the channel can hold");
        len += pieces[i].len;
    }
    if (kind > RING_KIND_MAX)
        return shm_fail(err, SHM_EVALUE, "unknown record kind");
    need = 8 + pad8((uint64_t)len);

    /* The fast path: the read cursor this process saw last.  Cursors only
       grow, so a stale one can only understate the free space; when it says
       "enough", there is enough, and the receivers' cache line (read_cursor,
       space_seq) is not pulled over to this CPU for every message.  A
       record that would straddle the ring's end takes the slow path, which
       lays the padding. */
    if (at_loadi(&ch->closing))
        return closed_error(err);
    status = take_lock(ch, SYNC_LOCK_SEND, waiting, err);
    if (status != SHM_OK)
        return status;
    w = at_load64_relaxed(&h->write_cursor);
    r = ch->seen_read;
    used = w - r;
    skip = 0;
    if (!(w % 8 == 0 && used <= ch->capacity && need <= ch->capacity - used &&
          need <= ch->capacity - w % ch->capacity)) {
        drop_lock(ch, SYNC_LOCK_SEND);
        status = claim(ch, need, waiting, &w, &skip, err);
        if (status != SHM_OK)
            return status;
    }

    /* Free space is ours alone while we hold the lock; a death from here to
       the store in publish() leaves it unpublished (the padding too) and
       the next sender reuses it. */
    if (skip > 0) {
        lenword = RING_REC_PAD | (skip - 8);
        copy_in(ch, w, &lenword, 8);
    }
    lenword = (uint64_t)len | ((uint64_t)kind << RING_KIND_SHIFT);
    copy_in(ch, w + skip, &lenword, 8);
    pos = w + skip + 8;
    for (i = 0; i < npieces; i++) {
        if (pieces[i].len > 0)
            copy_in(ch, pos, pieces[i].data, pieces[i].len);
        pos += pieces[i].len;
    }
    publish(ch, w, skip, need);
    return SHM_OK;
}

/* ---- loans ----------------------------------------------------------------- */

shm_status
ring_reserve(ring_t *ch, size_t len, ring_wait *waiting, ring_loan *loan, shm_error *err)
{
    uint64_t need, w, skip;
    shm_status status;

    if ((uint64_t)len > ring_max_message(ch->capacity))
        return shm_fail(err, SHM_EVALUE, "message is larger than the channel can hold");
    need = 8 + pad8((uint64_t)len);
    status = claim(ch, need, waiting, &w, &skip, err);
    if (status != SHM_OK)
        return status;
    loan->cursor = w;
    loan->skip = skip;
    loan->len = len;
    /* claim() saw to it that [w + skip, w + skip + need) does not wrap. */
    loan->data = ch->ring + (size_t)((w + skip) % ch->capacity) + 8;
    return SHM_OK;
}

void
ring_reserve_commit(ring_t *ch, const ring_loan *loan, unsigned kind)
{
    uint64_t lenword = (uint64_t)loan->len | ((uint64_t)kind << RING_KIND_SHIFT);
    uint64_t pad;

    if (loan->skip > 0) {
        pad = RING_REC_PAD | (loan->skip - 8);
        copy_in(ch, loan->cursor, &pad, 8);
    }
    copy_in(ch, loan->cursor + loan->skip, &lenword, 8);
    publish(ch, loan->cursor, loan->skip, 8 + pad8((uint64_t)loan->len));
}

void
ring_reserve_abort(ring_t *ch)
{
    drop_lock(ch, SYNC_LOCK_SEND);
}

/* ---- receive -------------------------------------------------------------- */

/*
 * Holding the recv lock, with USED > 0 bytes queued at R: consume the
 * padding records there and describe the first message in MSG.  Returns 1
 * (found; lock held), 0 (only padding was queued, now consumed; lock held)
 * or -1 (corrupt; lock dropped, ERR says why).
 */
static int
take_record(ring_t *ch, uint64_t r, uint64_t used, ring_msg *msg, shm_error *err)
{
    uint64_t word, len, kind;

    for (;;) {
        /* One load of the length word, then only the checked copy is used. */
        word = at_load64_relaxed((const uint64_t *)(ch->ring + (size_t)(r % ch->capacity)));
        len = word & RING_LEN_MASK;
        if (word & RING_REC_PAD) {
            /* Padding reaches exactly to the end of the ring. */
            if ((word & ~(RING_REC_PAD | RING_LEN_MASK)) != 0 || used < 8 ||
                len > used - 8 || r % ch->capacity + 8 + len != ch->capacity)
                break;
            r += 8 + len;
            used -= 8 + len;
            at_store64(&ch->hdr->read_cursor, r);
            bump_and_wake(ch, SYNC_WORD_SPACE);
            if (used == 0)
                return 0;
            continue;
        }
        kind = word >> RING_KIND_SHIFT;
        /* A record never straddles the ring's end (core/ring.h): then every
           copy out of it is one memcpy inside the ring, and a view of it is
           the ring itself. */
        if ((word & ~(RING_LEN_MASK | ((uint64_t)0x7f << RING_KIND_SHIFT))) != 0 ||
            kind > RING_KIND_MAX || used < 8 || len > used - 8 || 8 + pad8(len) > used ||
            8 + pad8(len) > ch->capacity - r % ch->capacity)
            break;
        msg->cursor = r;
        msg->len = (size_t)len;
        msg->kind = (unsigned)kind;
        return 1;
    }
    drop_lock(ch, SYNC_LOCK_RECV);
    corrupt(err, "channel record is corrupt (length word overwritten?)");
    return -1;
}

shm_status
ring_recv_begin(ring_t *ch, ring_wait *waiting, ring_msg *msg, shm_error *err)
{
    ring_header *h = ch->hdr;
    uint64_t w, r, used;
    uint32_t seq;
    int found;
    shm_status status;

    /* The fast path, as in ring_send: the write cursor this process saw
       last.  Everything below it was published (acquired when it was
       loaded), so while it is ahead of the read cursor a message is there
       without touching the senders' cache line. */
    if (at_loadi(&ch->closing))
        return closed_error(err);
    /* Not even the lock when the cursor this process saw last is where the
       read cursor stands: nothing it knows of is queued (the cursors are
       read again under the lock before anything is taken). */
    if (ch->seen_write != at_load64_relaxed(&h->read_cursor)) {
        status = take_lock(ch, SYNC_LOCK_RECV, waiting, err);
        if (status != SHM_OK)
            return status;
        r = at_load64_relaxed(&h->read_cursor);
        w = ch->seen_write;
        used = w - r;
        if (r % 8 == 0 && used != 0 && used <= ch->capacity) {
            found = take_record(ch, r, used, msg, err);
            if (found != 0)
                return found > 0 ? SHM_OK : SHM_ECORRUPT;
        }
        drop_lock(ch, SYNC_LOCK_RECV);
    }

    for (;;) {
        if (at_loadi(&ch->closing))
            return closed_error(err);
        seq = at_load32_sc(&h->data_seq);
        /* A call that waits needs no lock to see an empty ring: the
           snapshot above comes first, so a publish after this look moves
           the word and the wait below returns.  (A dead holder, or garbage
           in the lock word, is then met once there is something to take;
           a call that does not wait -- the binding's first try -- still
           takes the lock, and reports garbage there at once.) */
        w = at_load64(&h->write_cursor);
        r = at_load64(&h->read_cursor);
        if (w == r && w % 8 == 0 && deadline_of(waiting) != RING_NOWAIT) {
            ch->seen_write = w;
            status = wait_change(ch, SYNC_WORD_DATA, seq, waiting, err);
            if (status != SHM_OK)
                return status;
            continue;
        }
        status = take_lock(ch, SYNC_LOCK_RECV, waiting, err);
        if (status != SHM_OK)
            return status;
        r = at_load64_relaxed(&h->read_cursor);
        w = at_load64(&h->write_cursor);
        ch->seen_write = w;
        used = w - r;
        if ((w | r) % 8 != 0 || used > ch->capacity) {
            drop_lock(ch, SYNC_LOCK_RECV);
            return corrupt(err, "channel cursors are corrupt (header overwritten?)");
        }
        if (used != 0) {
            found = take_record(ch, r, used, msg, err);
            if (found != 0)
                return found > 0 ? SHM_OK : SHM_ECORRUPT;
        }
        drop_lock(ch, SYNC_LOCK_RECV);
        if (deadline_of(waiting) == RING_NOWAIT)
            return shm_fail(err, SHM_ETIMEOUT, "the channel is empty");
        status = wait_change(ch, SYNC_WORD_DATA, seq, waiting, err);
        if (status != SHM_OK)
            return status;
    }
}

const unsigned char *
ring_recv_data(const ring_t *ch, const ring_msg *msg)
{
    /* take_record() checked that the record lies before the ring's end
       (an empty one in the last 8 bytes: its payload is the end). */
    return ch->ring + (size_t)(msg->cursor % ch->capacity) + 8;
}

void
ring_recv_read(const ring_t *ch, const ring_msg *msg, size_t offset, void *dst, size_t n)
{
    if (n > 0)
        copy_out(ch, msg->cursor + 8 + offset, dst, n);
}

void
ring_recv_commit(ring_t *ch, const ring_msg *msg, void *dst)
{
    ring_header *h = ch->hdr;

    if (dst != NULL && msg->len > 0)
        copy_out(ch, msg->cursor + 8, dst, msg->len);
    at_store64(&h->read_cursor, msg->cursor + 8 + pad8((uint64_t)msg->len));
    at_store64(&h->received, at_load64_relaxed(&h->received) + 1);
    at_store32_relaxed(&h->recv_cpu, sync_cpu());
    drop_lock(ch, SYNC_LOCK_RECV);
    bump_and_wake(ch, SYNC_WORD_SPACE);
}

void
ring_recv_abort(ring_t *ch)
{
    drop_lock(ch, SYNC_LOCK_RECV);
}

uint64_t
ring_queued(const ring_t *ch)
{
    uint64_t r = at_load64(&ch->hdr->read_cursor);
    uint64_t w = at_load64(&ch->hdr->write_cursor);

    if (w - r > ch->capacity)
        return UINT64_MAX;
    return w - r;
}

/*
 * Whether the QUEUED bytes at R are one padding record and nothing else
 * (published alone; see "No record straddles" in core/ring.h).  A
 * snapshot, read without the lock: checked like any length word.
 */
static int
lone_padding(const ring_t *ch, uint64_t r, uint64_t queued)
{
    uint64_t word, off = r % ch->capacity;

    if (r % 8 != 0 || queued < 8)
        return 0;
    word = at_load64_relaxed((const uint64_t *)(ch->ring + (size_t)off));
    return (word & ~(RING_REC_PAD | RING_LEN_MASK)) == 0 && (word & RING_REC_PAD) &&
           (word & RING_LEN_MASK) == queued - 8 && off + queued == ch->capacity;
}

uint64_t
ring_messages(const ring_t *ch)
{
    uint64_t r = at_load64(&ch->hdr->read_cursor);
    uint64_t w = at_load64(&ch->hdr->write_cursor);
    uint64_t queued = w - r;
    int64_t count;

    if (queued > ch->capacity)
        return UINT64_MAX;
    if (queued == 0)
        return 0;
    /* Two racing counters (and possibly a drift of one after a crash):
       clamp to what the bytes allow, every record taking >= 8 of them;
       padding is no message. */
    count = (int64_t)(at_load64(&ch->hdr->sent) - at_load64(&ch->hdr->received));
    if (count < 1)
        return lone_padding(ch, r, queued) ? 0 : 1;
    if ((uint64_t)count > queued / 8)
        return queued / 8;
    return (uint64_t)count;
}

uint32_t
ring_creator_pid(const ring_t *ch)
{
    return at_load32_relaxed(&ch->hdr->creator_pid);
}

void
ring_set_spin(ring_t *ch, int spin)
{
    ch->no_spin = !spin;
}

void
ring_cancel(ring_t *ch)
{
    ring_header *h = ch->hdr;

    at_storei(&ch->closing, 1);
    if (h == NULL)
        return;
    /* Bumping the words wakes every registered waiter (here and elsewhere)
       and makes every other one re-check; the others find nothing new and
       sleep again. */
    bump_and_wake(ch, SYNC_WORD_DATA);
    bump_and_wake(ch, SYNC_WORD_SPACE);
}
