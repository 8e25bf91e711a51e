/*
 * core/ring.c -- the channel ring protocol (see core/ring.h for the layout
 * and the rules).
 *
 * Owns: the implementation of ring_*: header format and validation, the
 * send and receive paths, spinning and blocking.
 * May include: the C library, the core/ headers, platform/sync.h (waits
 * and locks by sync_lock_id / sync_word_id).  No OS header, no Python.h,
 * no #ifdef.
 */
#include "core/ring.h"

#include <stddef.h>     /* offsetof */
#include <string.h>     /* memcpy, memset */

#include "core/atomics.h"    /* acquire/release loads and stores on shared words */

/* The header layout is part of the on-disk (in-memory) format. */
typedef char ring_check_header_size[sizeof(ring_header) == RING_HEADER_SIZE ? 1 : -1];
typedef char ring_check_send_line[offsetof(ring_header, write_cursor) == RING_LINE ? 1 : -1];
typedef char ring_check_recv_line[offsetof(ring_header, read_cursor) == 2 * RING_LINE ? 1 : -1];
typedef char ring_check_locks[offsetof(ring_header, send_lock) == 3 * RING_LINE ? 1 : -1];

/*
 * Spin budgets, in sync_cpu_relax() iterations (~22-26 ns each on the
 * reference machines, see DESIGN.md).  A wake-up across CPUs costs 25-30 us,
 * so a spin pays only if it outlasts that: the cap is ~50 us.  Every
 * YIELD_EVERY iterations the spinner yields its CPU, because the kernel
 * often wakes a peer onto the waker's CPU: without the yield the peer
 * cannot answer until the spin gives up, and each round trip would cost a
 * whole spin.  The first yield comes only after YIELD_AFTER iterations
 * (~6 us): a peer on another CPU usually answers sooner, and a yield is a
 * system call that may hand the CPU to an unrelated process.
 *
 * When the peer last ran on this very CPU (the CPU hints in the header,
 * stored by each side as it publishes), every iteration yields instead:
 * the peer is most likely waiting for this CPU, and spinning only delays
 * its answer (measured: 12.5 us round trips instead of 2 us).
 *
 * The budget adapts per wait word (senders waiting for space, receivers for
 * data: ring_t.spin) to what happened after a spin gave up and the
 * waiter blocked: woken soon (within SHORT_BLOCK_NS) means the peer answered
 * just too late from another CPU, so the budget doubles; a long block means
 * an idle peer, so it halves.  The floor keeps a cheap probe alive.
 */
#define SPIN_MIN    32u
#define SPIN_MAX    2048u
#define SPIN_START  512u
#define YIELD_AFTER 256u
#define YIELD_EVERY 64u
#define SHORT_BLOCK_NS ((int64_t)100000)

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
    ch->spin[SYNC_WORD_DATA] = SPIN_START;
    ch->spin[SYNC_WORD_SPACE] = SPIN_START;
    ch->can_spin = sync_ncpu() > 1;
    ch->seen_read = 0;
    ch->seen_write = 0;
    ch->closing = 0;
}

shm_status
ring_format(void *addr, size_t size, uint64_t capacity, shm_error *err)
{
    ring_header *h = (ring_header *)addr;
    void *locks[SYNC_NLOCKS];
    shm_status status;

    if (capacity < RING_MIN_CAPACITY || capacity % 8 != 0 ||
        size < RING_HEADER_SIZE || capacity > size - RING_HEADER_SIZE)
        return shm_fail(err, SHM_EVALUE, "segment too small for the channel");
    memset(h, 0, RING_HEADER_SIZE);
    h->version = RING_VERSION;
    h->capacity = capacity;
    h->header_size = RING_HEADER_SIZE;
    h->sync_kind = sync_kind();
    locks[SYNC_LOCK_SEND] = h->send_lock;
    locks[SYNC_LOCK_RECV] = h->recv_lock;
    status = sync_locks_format(locks, err);
    if (status != SHM_OK)
        return status;
    /* Last: an opener that sees the magic sees everything above. */
    at_store32(&h->magic, RING_MAGIC);
    return SHM_OK;
}

int
ring_formatted(const void *addr, size_t size)
{
    return size >= RING_HEADER_SIZE && at_load32(&((const ring_header *)addr)->magic) != 0;
}

shm_status
ring_attach(ring_t *ch, void *addr, size_t size, const shm_char *name, shm_error *err)
{
    ring_header *h = (ring_header *)addr;
    uint32_t magic;
    uint64_t capacity;
    shm_status status;

    if (size < RING_HEADER_SIZE + RING_MIN_CAPACITY)
        return shm_fail(err, SHM_ECORRUPT, "not a pyshm channel: the segment is too small");
    /* Acquire: with the magic, everything ring_format wrote before it. */
    magic = at_load32(&h->magic);
    if (magic != RING_MAGIC)
        return shm_fail(err, SHM_ECORRUPT,
                        "not a pyshm channel (bad magic number in the header)");
    if (h->version != RING_VERSION)
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel of another version (this build speaks version 1)");
    if (h->header_size != RING_HEADER_SIZE)
        return shm_fail(err, SHM_ECORRUPT, "pyshm channel header has a bad size");
    if (h->sync_kind != sync_kind())
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel was created by a build with another wait/lock "
                        "scheme (futex vs fallback): they cannot share a channel");
    capacity = h->capacity;
    if (capacity < RING_MIN_CAPACITY || capacity % 8 != 0 ||
        capacity > (uint64_t)(size - RING_HEADER_SIZE))
        return shm_fail(err, SHM_ECORRUPT,
                        "pyshm channel header has a capacity that does not fit the segment");
    status = sync_handles_open(&ch->sync, name, err);
    if (status != SHM_OK)
        return status;
    ch->hdr = h;
    ch->ring = (unsigned char *)addr + RING_HEADER_SIZE;
    ch->capacity = capacity;
    at_storei(&ch->closing, 0);
    return SHM_OK;
}

void
ring_detach(ring_t *ch)
{
    sync_handles_close(&ch->sync);
    ch->hdr = NULL;
    ch->ring = NULL;
    ch->capacity = 0;
}

/* ---- ring copies (positions are cursors; the ring wraps) ------------------ */

static void
copy_in(ring_t *ch, uint64_t cursor, const void *src, size_t n)
{
    size_t off = (size_t)(cursor % ch->capacity);
    size_t first = (size_t)(ch->capacity - off);

    if (first >= n) {
        memcpy(ch->ring + off, src, n);
    } else {
        memcpy(ch->ring + off, src, first);
        memcpy(ch->ring, (const unsigned char *)src + first, n - first);
    }
}

static void
copy_out(ring_t *ch, uint64_t cursor, void *dst, size_t n)
{
    size_t off = (size_t)(cursor % ch->capacity);
    size_t first = (size_t)(ch->capacity - off);

    if (first >= n) {
        memcpy(dst, ch->ring + off, n);
    } else {
        memcpy(dst, ch->ring + off, first);
        memcpy((unsigned char *)dst + first, ch->ring, n - first);
    }
}

/* ---- locks and wait words by id ------------------------------------------ */

/* The header fields behind each sync_lock_id and sync_word_id: one place
   says which is which, the protocol below speaks of ids only. */
static void *
lock_area(ring_header *h, sync_lock_id id)
{
    return id == SYNC_LOCK_SEND ? (void *)h->send_lock : (void *)h->recv_lock;
}

/* The sequence word of ID. */
static uint32_t *
seq_word(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->data_seq : &h->space_seq;
}

/* The count of processes blocked on ID: receivers for data, senders for space. */
static uint32_t *
waiters_of(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->recv_waiters : &h->send_waiters;
}

/* The CPU hint of the side that bumps ID (the peer of its waiters). */
static uint32_t *
bumper_cpu(ring_header *h, sync_word_id id)
{
    return id == SYNC_WORD_DATA ? &h->send_cpu : &h->recv_cpu;
}

static shm_status
take_lock(ring_t *ch, sync_lock_id id, int64_t deadline, shm_error *err)
{
    void *area = lock_area(ch->hdr, id);

    if (deadline == RING_NOWAIT)
        return sync_trylock(&ch->sync, id, area, err);
    return sync_lock(&ch->sync, id, area, deadline, err);
}

static void
drop_lock(ring_t *ch, sync_lock_id id)
{
    sync_unlock(&ch->sync, id, lock_area(ch->hdr, id));
}

/*
 * After a publish (DATA) or a consume (SPACE): bump the word so that every
 * waiter re-checks, and wake them only when one is registered, so that the
 * fast path makes no system call.  Both steps are sequentially consistent:
 * see the registration in wait_change().
 */
static void
bump_and_wake(ring_t *ch, sync_word_id id)
{
    uint32_t *word = seq_word(ch->hdr, id);
    uint32_t waiters;

    at_add32_sc(word, 1);
    waiters = at_load32_sc(waiters_of(ch->hdr, id));
    if (waiters != 0)
        sync_wake(&ch->sync, id, word, waiters);
}

/* ---- waiting -------------------------------------------------------------- */

static shm_status
closed_error(shm_error *err)
{
    return shm_fail(err, SHM_EVALUE, "operation on a closed Channel");
}

/*
 * Wait until wait word ID moves from SEQ (the snapshot taken before the
 * failed check), DEADLINE passes, or a signal arrives.  ID also picks the
 * spin budget and the sync objects.  SHM_OK means "check again".
 */
static shm_status
wait_change(ring_t *ch, sync_word_id id, uint32_t seq, int64_t deadline, shm_error *err)
{
    uint32_t *word = seq_word(ch->hdr, id), *waiters = waiters_of(ch->hdr, id);
    uint32_t budget = ch->spin[id], i, peer_cpu, share_cpu;
    int64_t start = sync_now_ns(), blocked;
    shm_status status;

    if (deadline <= start)
        return shm_fail(err, SHM_ETIMEOUT, id == SYNC_WORD_DATA
                                               ? "no message before the timeout"
                                               : "no space before the timeout");
    /* A hint from shared memory: only ever compared, so garbage costs at
       most a few needless yields. */
    peer_cpu = at_load32_relaxed(bumper_cpu(ch->hdr, id));
    share_cpu = !ch->can_spin || (peer_cpu != 0 && peer_cpu == sync_cpu());
    for (i = 1; i <= budget; i++) {
        if (at_load32(word) != seq)
            return SHM_OK;
        if (share_cpu || (i >= YIELD_AFTER && i % YIELD_EVERY == 0))
            sync_yield();
        else
            sync_cpu_relax();
    }
    if (at_loadi(&ch->closing))
        return closed_error(err);

    /* Register, then look once more: the other side bumps the word before
       it reads the count (both sequentially consistent), so either it sees
       us or we see its bump -- never neither. */
    blocked = sync_now_ns();
    at_add32_sc(waiters, 1);
    if (at_load32_sc(word) == seq)
        status = sync_wait(&ch->sync, id, word, seq, deadline, err);
    else
        status = SHM_OK;
    at_sub32_sc(waiters, 1);
    blocked = sync_now_ns() - blocked;

    if (status == SHM_OK) {
        /* Adapt the spin budget to how long the block lasted.  Races between
           threads on this budget only blur a heuristic. */
        if (blocked < SHORT_BLOCK_NS)
            budget = budget * 2 > SPIN_MAX ? SPIN_MAX : budget * 2;
        else
            budget = budget / 2 < SPIN_MIN ? SPIN_MIN : budget / 2;
        ch->spin[id] = budget;
    }
    if (status == SHM_OK && at_loadi(&ch->closing))
        return closed_error(err);
    return status;
}

static shm_status
corrupt(shm_error *err, const char *detail)
{
    return shm_fail(err, SHM_ECORRUPT, detail);
}

/* ---- send ----------------------------------------------------------------- */

shm_status
ring_send(ring_t *ch, const void *data, size_t len, int64_t deadline, shm_error *err)
{
    ring_header *h = ch->hdr;
    uint64_t need, w, r, used, lenword;
    uint32_t seq;
    shm_status status;

    if ((uint64_t)len > ring_max_message(ch->capacity))
        return shm_fail(err, SHM_EVALUE, "message is larger than the channel can hold");
    need = 8 + pad8((uint64_t)len);

    /* The fast path: the read cursor this process saw last.  Cursors only
       grow, so a stale one can only understate the free space; when it says
       "enough", there is enough, and the receivers' cache line (read_cursor,
       space_seq) is not pulled over to this CPU for every message. */
    if (at_loadi(&ch->closing))
        return closed_error(err);
    status = take_lock(ch, SYNC_LOCK_SEND, deadline, err);
    if (status != SHM_OK)
        return status;
    w = at_load64_relaxed(&h->write_cursor);
    r = ch->seen_read;
    used = w - r;
    if (w % 8 == 0 && used <= ch->capacity && need <= ch->capacity - used)
        goto publish;
    drop_lock(ch, SYNC_LOCK_SEND);

    for (;;) {
        if (at_loadi(&ch->closing))
            return closed_error(err);
        /* Snapshot before the check: any consume after this bumps it. */
        seq = at_load32_sc(&h->space_seq);
        status = take_lock(ch, SYNC_LOCK_SEND, deadline, err);
        if (status != SHM_OK)
            return status;
        w = at_load64_relaxed(&h->write_cursor);
        r = at_load64(&h->read_cursor);
        ch->seen_read = r;
        used = w - r;
        if ((w | r) % 8 != 0 || used > ch->capacity) {
            drop_lock(ch, SYNC_LOCK_SEND);
            return corrupt(err, "channel cursors are corrupt (header overwritten?)");
        }
        if (need <= ch->capacity - used)
            break;
        drop_lock(ch, SYNC_LOCK_SEND);
        if (deadline == RING_NOWAIT)
            return shm_fail(err, SHM_ETIMEOUT, "the channel is full");
        status = wait_change(ch, SYNC_WORD_SPACE, seq, deadline, err);
        if (status != SHM_OK)
            return status;
    }

publish:
    /* Free space is ours alone while we hold the lock; a death from here to
       the store below leaves it unpublished and the next sender reuses it. */
    lenword = (uint64_t)len;
    copy_in(ch, w, &lenword, 8);
    if (len > 0)
        copy_in(ch, w + 8, data, len);
    at_store64(&h->write_cursor, w + need);
    at_store32_relaxed(&h->send_cpu, sync_cpu());
    drop_lock(ch, SYNC_LOCK_SEND);
    bump_and_wake(ch, SYNC_WORD_DATA);
    return SHM_OK;
}

/* ---- receive -------------------------------------------------------------- */

shm_status
ring_recv_begin(ring_t *ch, int64_t deadline, ring_msg *msg, shm_error *err)
{
    ring_header *h = ch->hdr;
    uint64_t w, r, used, len;
    uint32_t seq;
    shm_status status;

    /* The fast path, as in ring_send: the write cursor this process saw
       last.  Everything below it was published (acquired when it was
       loaded), so while it is ahead of the read cursor a message is there
       without touching the senders' cache line. */
    if (at_loadi(&ch->closing))
        return closed_error(err);
    status = take_lock(ch, SYNC_LOCK_RECV, deadline, err);
    if (status != SHM_OK)
        return status;
    r = at_load64_relaxed(&h->read_cursor);
    w = ch->seen_write;
    used = w - r;
    if (r % 8 == 0 && used != 0 && used <= ch->capacity)
        goto found;
    drop_lock(ch, SYNC_LOCK_RECV);

    for (;;) {
        if (at_loadi(&ch->closing))
            return closed_error(err);
        seq = at_load32_sc(&h->data_seq);
        status = take_lock(ch, SYNC_LOCK_RECV, deadline, err);
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
        if (used != 0)
            break;
        drop_lock(ch, SYNC_LOCK_RECV);
        if (deadline == RING_NOWAIT)
            return shm_fail(err, SHM_ETIMEOUT, "the channel is empty");
        status = wait_change(ch, SYNC_WORD_DATA, seq, deadline, err);
        if (status != SHM_OK)
            return status;
    }

found:
    /* One load of the length word, then only the checked copy is used. */
    len = at_load64_relaxed((const uint64_t *)(ch->ring + (size_t)(r % ch->capacity)));
    if (used < 8 || len > used - 8 || 8 + pad8(len) > used) {
        drop_lock(ch, SYNC_LOCK_RECV);
        return corrupt(err, "channel record is corrupt (length word overwritten?)");
    }
    msg->cursor = r;
    msg->len = (size_t)len;
    return SHM_OK;
}

void
ring_recv_commit(ring_t *ch, const ring_msg *msg, void *dst)
{
    ring_header *h = ch->hdr;

    if (msg->len > 0)
        copy_out(ch, msg->cursor + 8, dst, msg->len);
    at_store64(&h->read_cursor, msg->cursor + 8 + pad8((uint64_t)msg->len));
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

void
ring_cancel(ring_t *ch)
{
    ring_header *h = ch->hdr;

    at_storei(&ch->closing, 1);
    if (h == NULL)
        return;
    /* Bumping the words makes every waiter (here and elsewhere) re-check;
       the others find nothing new and sleep again. */
    at_add32_sc(&h->data_seq, 1);
    sync_wake(&ch->sync, SYNC_WORD_DATA, &h->data_seq, UINT32_MAX);
    at_add32_sc(&h->space_seq, 1);
    sync_wake(&ch->sync, SYNC_WORD_SPACE, &h->space_seq, UINT32_MAX);
}
