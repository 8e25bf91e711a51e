/*
 * core/slot.c -- the slot protocol: the latest value, replaced whole (see
 * core/slot.h for the layout, the rules and why they hold).
 *
 * Owns: the implementation of slot_*: header format and validation, the
 * writer's cell choice and publish, the readers' marks and validation,
 * waiting for a new generation.
 * May include: the C library, the core/ headers, platform/sync.h.  No OS
 * header, no Python.h, no #ifdef.
 */
#include "core/slot.h"

#include <stddef.h>     /* offsetof */
#include <string.h>     /* memcpy, memset */

#include "core/atomics.h"   /* acquire/release, sequentially consistent, fences */
#include "core/ring.h"      /* RING_MAGIC: a channel opened as a slot is named */
#include "core/spin.h"      /* the spin before a sleep, its budget's rule */

/* The layout is part of the shared format (docs/format.md). */
typedef char slot_check_header_size[sizeof(slot_header) == SLOT_HEADER_SIZE ? 1 : -1];
typedef char slot_check_latest[offsetof(slot_header, latest) == SLOT_LINE ? 1 : -1];
typedef char slot_check_seq[offsetof(slot_header, gen_seq) == SLOT_LINE + 8 ? 1 : -1];
typedef char slot_check_lock[offsetof(slot_header, write_lock) == 2 * SLOT_LINE ? 1 : -1];
typedef char slot_check_cell[sizeof(slot_cell) == SLOT_CELL_HEADER ? 1 : -1];
typedef char slot_check_marks[offsetof(slot_cell, marks) == SLOT_LINE ? 1 : -1];
/* Cell indexes must fit the low byte of latest. */
typedef char slot_check_cells[SLOT_MAX_CELLS <= SLOT_CELL_MASK + 1 ? 1 : -1];

/* Waits: slices as in core/ring.c (a short first one, so that a signal that
   came while spinning is seen soon; then long ones), and a spin before the
   first sleep -- a publish that comes within it is seen without a system
   call on either side.  The spin and its budget are the channel's
   (core/spin.c): the budget learns whether spinning paid lately (a slot's
   publisher leaves no wake time, so the sleep itself is judged), and when
   the last publisher ran on this CPU (publish_cpu) every iteration yields,
   since spinning there only delays the publisher. */
#define SLOT_FIRST_SLICE_NS ((int64_t)10000000)
#define SLOT_LONG_SLICE_NS  ((int64_t)1000000000)

/* Reads that failed this many times in a row yield the CPU before trying
   again (the writer may need it); the clock is asked every few tries. */
#define SLOT_QUICK_TRIES    16u

/* Compare-and-swap attempts on a mark before going on without one (a mark
   is a hint; a process that keeps changing the word must not hold a reader). */
#define SLOT_MARK_TRIES     64

static uint64_t
pad64(uint64_t n)
{
    return (n + 63u) & ~(uint64_t)63u;
}

uint64_t
slot_cell_size(uint64_t value_size)
{
    return SLOT_CELL_HEADER + pad64(value_size);
}

uint64_t
slot_segment_size(uint64_t value_size, uint32_t cells)
{
    return SLOT_HEADER_SIZE + (uint64_t)cells * slot_cell_size(value_size);
}

shm_status
slot_value_size(uint64_t requested, shm_error *err)
{
    if (requested == 0)
        return shm_fail(err, SHM_EVALUE, "size must be positive (the largest value, in bytes)");
    if (requested > SLOT_MAX_SIZE)
        return shm_fail(err, SHM_EVALUE, "size is too large (at most 1 TiB)");
    /* SLOT_MAX_CELLS cells of SLOT_MAX_SIZE fit 64 bits with room to spare;
       what matters is this process's address space. */
    if (slot_segment_size(requested, SLOT_CELLS) > (uint64_t)SIZE_MAX)
        return shm_fail(err, SHM_EVALUE, "size is larger than this process can map");
    return SHM_OK;
}

void
slot_init(slot_t *sl)
{
    sl->hdr = NULL;
    sl->cell0 = NULL;
    sl->cells = 0;
    sl->value_size = 0;
    sl->cell_size = 0;
    sync_handles_init(&sl->sync);
    sl->can_spin = sync_ncpu() > 1;
    sl->no_spin = 0;
    sl->spin = (uint32_t)SPIN_START_NS;
    sl->closing = 0;
}

shm_status
slot_format(void *addr, size_t size, uint64_t value_size, uint32_t cells, shm_error *err)
{
    slot_header *h = (slot_header *)addr;

    if (value_size == 0 || value_size > SLOT_MAX_SIZE || cells < SLOT_MIN_CELLS ||
        cells > SLOT_MAX_CELLS || slot_segment_size(value_size, cells) > (uint64_t)size)
        return shm_fail(err, SHM_EVALUE, "segment too small for the slot");
    /* Zero: a free lock, a fresh wait word, latest "nothing yet", and cells
       that hold nothing and are marked by no one. */
    memset(h, 0, (size_t)slot_segment_size(value_size, cells));
    h->version = SLOT_VERSION;
    h->header_size = SLOT_HEADER_SIZE;
    h->cells = cells;
    h->value_size = value_size;
    h->cell_size = slot_cell_size(value_size);
    h->sync_kind = sync_kind();
    h->sync_domain = sync_domain();
    h->creator_pid = sync_process_id();
    /* Last: an opener that sees the magic sees everything above. */
    at_store32(&h->magic, SLOT_MAGIC);
    return SHM_OK;
}

int
slot_formatted(const void *addr, size_t size)
{
    return size >= SLOT_HEADER_SIZE && at_load32(&((const slot_header *)addr)->magic) != 0;
}

static shm_status
not_a_slot(shm_error *err, const char *detail)
{
    return shm_fail(err, SHM_ECORRUPT, detail);
}

shm_status
slot_attach(slot_t *sl, shm_segment *seg, const shm_char *name, shm_error *err)
{
    slot_header *h = (slot_header *)seg->addr;
    size_t size = seg->size;
    uint32_t *words[SYNC_NLOCKS];
    uint32_t magic, cells;
    uint64_t value_size, cell_size;
    shm_status status;

    if (size < SLOT_HEADER_SIZE)
        return not_a_slot(err, "not a pyshm slot: the segment is too small for one (a raw "
                               "segment? open it with SharedMemory)");
    /* Acquire: with the magic, everything slot_format wrote before it. */
    magic = at_load32(&h->magic);
    if (magic == 0)
        return not_a_slot(err, "not a pyshm slot: its header has no magic number, as in a "
                               "raw segment (open it with SharedMemory)");
    if (magic == RING_MAGIC)
        return not_a_slot(err, "the segment is a channel, not a slot (open it as a Channel)");
    if (magic != SLOT_MAGIC)
        return not_a_slot(err, "not a pyshm slot: its header has no slot magic number; it "
                               "looks like a raw segment (open it with SharedMemory)");
    if (h->version != SLOT_VERSION)
        return not_a_slot(err, "pyshm slot of another format version (this build speaks "
                               "slot version 1)");
    if (h->header_size != SLOT_HEADER_SIZE)
        return not_a_slot(err, "pyshm slot header has a bad size");
    if (h->sync_kind != sync_kind())
        return not_a_slot(err, "pyshm slot was created by a build with another wait/lock "
                               "scheme (futex, fallback or Windows): they cannot share a slot");
    if (h->sync_domain != sync_domain())
        return not_a_slot(err, "pyshm slot was created in another PID namespace: this "
                               "build's locks (the portable fallback) name their owners by "
                               "pid and cannot be shared across namespaces");
    /* One load of each, then only the checked copies are used. */
    cells = h->cells;
    value_size = h->value_size;
    cell_size = h->cell_size;
    if (cells < SLOT_MIN_CELLS || cells > SLOT_MAX_CELLS)
        return not_a_slot(err, "pyshm slot header has a bad number of cells");
    if (value_size == 0 || value_size > SLOT_MAX_SIZE || cell_size != slot_cell_size(value_size) ||
        slot_segment_size(value_size, cells) > (uint64_t)size)
        return not_a_slot(err, "pyshm slot header has a value size that does not fit the "
                               "segment");
    words[SYNC_LOCK_SEND] = &h->write_lock;
    words[SYNC_LOCK_RECV] = NULL;       /* a slot has one lock */
    status = sync_handles_open(&sl->sync, name, &seg->handle, words, err);
    if (status != SHM_OK)
        return status;
    sl->hdr = h;
    sl->cell0 = (unsigned char *)h + SLOT_HEADER_SIZE;
    sl->cells = cells;
    sl->value_size = value_size;
    sl->cell_size = cell_size;
    at_storei(&sl->closing, 0);
    return SHM_OK;
}

void
slot_detach(slot_t *sl)
{
    sync_handles_close(&sl->sync);
    sl->hdr = NULL;
    sl->cell0 = NULL;
    sl->cells = 0;
    sl->value_size = 0;
    sl->cell_size = 0;
}

void
slot_rebase(slot_t *sl, void *addr)
{
    slot_header *h = (slot_header *)addr;

    sl->hdr = h;
    sl->cell0 = (unsigned char *)addr + SLOT_HEADER_SIZE;
    /* The word sync_handles_open was given (Linux clears orphans in it when
       a fork child claims its slot): the same word, seen here now. */
    sl->sync.words[SYNC_LOCK_SEND] = &h->write_lock;
}

/* ---- cells ----------------------------------------------------------------- */

/* Cell I (< cells, checked by the caller). */
static slot_cell *
cell_at(const slot_t *sl, uint32_t i)
{
    return (slot_cell *)(sl->cell0 + (size_t)i * (size_t)sl->cell_size);
}

static unsigned char *
cell_data(const slot_t *sl, uint32_t i)
{
    return (unsigned char *)cell_at(sl, i) + SLOT_CELL_HEADER;
}

static uint32_t
tag_of(uint64_t generation)
{
    return (uint32_t)generation;
}

/* Whether marks word M announces readers of the value that state S says
   the cell holds (a busy or empty cell has no readers to protect). */
static int
announced(uint64_t m, uint64_t s)
{
    return s != 0 && !(s & SLOT_BUSY) && (uint32_t)(m >> 32) == tag_of(s) && (uint32_t)m != 0;
}

static shm_status
bad_slot(shm_error *err, const char *detail)
{
    return shm_fail(err, SHM_ECORRUPT, detail);
}

static shm_status
slot_closed(shm_error *err)
{
    return shm_fail(err, SHM_EVALUE, "operation on a closed Slot");
}

/* ---- writers ------------------------------------------------------------- */

/*
 * Pick the cell for generation NEXT and mark it busy (see "Publishing" in
 * core/slot.h).  CUR is the cell latest names, or CELLS when nothing was
 * published yet.  The write lock is held.
 */
static uint32_t
choose_cell(slot_t *sl, uint32_t cur, uint64_t next)
{
    uint32_t k, t, oldest = SLOT_MAX_CELLS;
    uint64_t s, m, oldest_gen = UINT64_MAX;
    slot_cell *cell;

    for (k = 1; k <= sl->cells; k++) {
        t = (cur + k) % sl->cells;
        if (t == cur)
            continue;
        cell = cell_at(sl, t);
        s = at_load64_sc(&cell->state);
        if ((s & ~SLOT_BUSY) < oldest_gen) {
            oldest_gen = s & ~SLOT_BUSY;
            oldest = t;
        }
        if (announced(at_load64_sc(&cell->marks), s))
            continue;
        at_store64_sc(&cell->state, SLOT_BUSY | next);
        /* The other half of the Dekker pair: a reader that marked the cell
           before our store is seen here; one that marks it after sees
           BUSY and goes away.  Seen: the bytes are untouched, so putting
           the old state back leaves that reader's value whole. */
        m = at_load64_sc(&cell->marks);
        if (announced(m, s)) {
            at_store64_sc(&cell->state, s);
            continue;
        }
        return t;
    }
    /* Every cell but the latest is announced: the oldest value goes (its
       readers see the state move and start again on the latest). */
    at_store64_sc(&cell_at(sl, oldest)->state, SLOT_BUSY | next);
    return oldest;
}

static shm_status
lock_writers(slot_t *sl, int64_t deadline, shm_error *err)
{
    if (deadline == SLOT_NOWAIT)
        return sync_trylock(&sl->sync, SYNC_LOCK_SEND, &sl->hdr->write_lock, err);
    return sync_lock(&sl->sync, SYNC_LOCK_SEND, &sl->hdr->write_lock, deadline, err);
}

static void
unlock_writers(slot_t *sl)
{
    sync_unlock(&sl->sync, SYNC_LOCK_SEND, &sl->hdr->write_lock);
}

shm_status
slot_reserve(slot_t *sl, int64_t deadline, slot_loan *loan, shm_error *err)
{
    uint64_t v, g;
    uint32_t cur;
    shm_status status;

    if (at_loadi(&sl->closing))
        return slot_closed(err);
    status = lock_writers(sl, deadline, err);
    if (status != SHM_OK)
        return status;
    /* Only writers store latest, and we hold their lock: this is current
       (unless a hostile process writes it, which the checks catch). */
    v = at_load64(&sl->hdr->latest);
    g = v >> SLOT_GEN_SHIFT;
    cur = (uint32_t)(v & SLOT_CELL_MASK);
    if (v == 0) {
        cur = sl->cells;        /* no cell to spare: every one is free */
    } else if (cur >= sl->cells || g == 0) {
        unlock_writers(sl);
        return bad_slot(err, "slot's latest value names no cell (header overwritten?)");
    } else if (g >= SLOT_GEN_LIMIT) {
        unlock_writers(sl);
        return bad_slot(err, "slot's generation is at its limit (header overwritten?)");
    }
    loan->generation = g + 1;
    loan->cell = choose_cell(sl, cur, loan->generation);
    loan->data = cell_data(sl, loan->cell);
    /* BUSY is visible before any byte of the value changes: a reader whose
       copy saw one of ours sees BUSY (or later) after its acquire fence. */
    at_fence_release();
    return SHM_OK;
}

uint64_t
slot_commit(slot_t *sl, const slot_loan *loan, size_t len)
{
    slot_cell *cell = cell_at(sl, loan->cell);

    at_store64_relaxed(&cell->length, (uint64_t)len);
    /* Release: the bytes and the length before the state, the state before
       latest. */
    at_store64(&cell->state, loan->generation);
    at_store64(&sl->hdr->latest, (loan->generation << SLOT_GEN_SHIFT) | loan->cell);
    at_store32_relaxed(&sl->hdr->publish_cpu, sync_cpu());
    unlock_writers(sl);
    sync_bump(&sl->sync, SYNC_WORD_DATA, &sl->hdr->gen_seq, &sl->hdr->gen_waiters);
    return loan->generation;
}

void
slot_abort(slot_t *sl, const slot_loan *loan)
{
    /* Its bytes are half-written: the cell holds no value now.  It is not
       the latest, so no reader needs it. */
    at_store64_sc(&cell_at(sl, loan->cell)->state, 0);
    unlock_writers(sl);
}

shm_status
slot_publish(slot_t *sl, const void *data, size_t len, int64_t deadline, uint64_t *generation,
             shm_error *err)
{
    slot_loan loan;
    shm_status status;

    if ((uint64_t)len > sl->value_size)
        return shm_fail(err, SHM_EVALUE, "value is larger than the slot's size");
    status = slot_reserve(sl, deadline, &loan, err);
    if (status != SHM_OK)
        return status;
    if (len > 0)
        memcpy(loan.data, data, len);
    *generation = slot_commit(sl, &loan, len);
    return SHM_OK;
}

/* ---- readers ------------------------------------------------------------- */

/*
 * Announce a read of generation G in CELL: 1 when counted, 0 when not (the
 * count is saturated, or the word kept changing: the read goes on
 * unprotected, still validated).  A word tagged with another generation is
 * replaced by (G, 1): its readers, if any, read a value that is no longer
 * there, or we do -- then our state check fails and we start again, having
 * cost them at most their protection for one copy.  (Comparing tags by age
 * would need them never to wrap: 2^31 publishes pass in minutes.)
 */
static int
mark(slot_cell *cell, uint64_t g)
{
    uint64_t m = at_load64(&cell->marks), want;
    int i;

    for (i = 0; i < SLOT_MARK_TRIES; i++) {
        if ((uint32_t)(m >> 32) == tag_of(g)) {
            if ((uint32_t)m == UINT32_MAX)
                return 0;
            want = m + 1;
        } else {
            want = ((uint64_t)tag_of(g) << 32) | 1u;
        }
        if (at_cas64_val(&cell->marks, &m, want))
            return 1;
    }
    return 0;
}

static void
unmark(slot_cell *cell, uint64_t g)
{
    uint64_t m = at_load64(&cell->marks);
    int i;

    /* Only our own tag's count goes down; a word retagged meanwhile says
       our value is gone, and there is nothing of ours left in it. */
    for (i = 0; i < SLOT_MARK_TRIES; i++) {
        if ((uint32_t)(m >> 32) != tag_of(g) || (uint32_t)m == 0)
            return;
        if (at_cas64_val(&cell->marks, &m, m - 1))
            return;
    }
}

/* The state of a read's retries: when to yield, when to give up. */
typedef struct {
    unsigned tries;
    int64_t give_up;
} slot_retry;

/* After a failed attempt: 0 to try again (having yielded if it keeps
   failing), or SHM_ECORRUPT once SLOT_PATIENCE_NS has passed. */
static shm_status
retry_read(slot_retry *r, shm_error *err)
{
    r->tries++;
    if (r->tries < SLOT_QUICK_TRIES)
        return SHM_OK;
    if (r->give_up == 0)
        r->give_up = sync_now_ns() + SLOT_PATIENCE_NS;
    else if (r->tries % SLOT_QUICK_TRIES == 0 && sync_now_ns() >= r->give_up)
        return bad_slot(err, "slot: no whole value could be read for 2 s, every copy was "
                            "overwritten (a writer that ignores the protocol?)");
    sync_yield();
    return SHM_OK;
}

static shm_status
begin_read(const slot_t *sl, slot_view *view, slot_retry *r, shm_error *err)
{
    uint64_t v, g, s, len;
    uint32_t c;
    slot_cell *cell;
    int marked;
    shm_status status;

    for (;;) {
        v = at_load64(&sl->hdr->latest);
        if (v == 0) {
            view->generation = 0;
            view->len = 0;
            view->data = NULL;
            view->cell = 0;
            view->marked = 0;
            return SHM_OK;
        }
        g = v >> SLOT_GEN_SHIFT;
        c = (uint32_t)(v & SLOT_CELL_MASK);
        if (c >= sl->cells || g == 0)
            return bad_slot(err, "slot's latest value names no cell (header overwritten?)");
        cell = cell_at(sl, c);
        marked = mark(cell, g);
        s = at_load64_sc(&cell->state);
        if (s == g) {
            len = at_load64_relaxed(&cell->length);
            if (len <= sl->value_size) {
                view->generation = g;
                view->len = (size_t)len;
                view->data = cell_data(sl, c);
                view->cell = c;
                view->marked = marked;
                return SHM_OK;
            }
        }
        if (marked)
            unmark(cell, g);
        /* An honest writer never touches the cell latest names, and writes
           the length before the state: while latest still says (g, c), the
           cell must hold g and a length that fits. */
        if (at_load64(&sl->hdr->latest) == v && at_load64_sc(&cell->state) == s)
            return bad_slot(err, s == g ? "slot value's length is larger than the slot "
                                         "(cell overwritten?)"
                                       : "slot's latest value is not in its cell "
                                         "(cell overwritten?)");
        status = retry_read(r, err);
        if (status != SHM_OK)
            return status;
    }
}

shm_status
slot_read_begin(const slot_t *sl, slot_view *view, shm_error *err)
{
    slot_retry r = {0, 0};

    return begin_read(sl, view, &r, err);
}

int
slot_read_end(const slot_t *sl, slot_view *view)
{
    slot_cell *cell;
    uint64_t s;

    if (view->generation == 0)
        return 1;
    cell = cell_at(sl, view->cell);
    /* Every load of the copy before the state's: if the copy saw a byte of
       a later writer, this sees its BUSY (or later). */
    at_fence_acquire();
    s = at_load64_relaxed(&cell->state);
    if (view->marked)
        unmark(cell, view->generation);
    view->marked = 0;
    return s == view->generation;
}

shm_status
slot_read(const slot_t *sl, void *buf, size_t cap, size_t *len, uint64_t *generation,
          shm_error *err)
{
    slot_retry r = {0, 0};
    slot_view view;
    shm_status status;
    int whole;

    for (;;) {
        status = begin_read(sl, &view, &r, err);
        if (status != SHM_OK)
            return status;
        if (view.len > cap) {
            /* Say how long a whole value is, and copy nothing. */
            if (slot_read_end(sl, &view)) {
                *len = view.len;
                *generation = view.generation;
                return shm_fail(err, SHM_EVALUE, "the value is larger than the buffer");
            }
        } else {
            if (view.len > 0)
                memcpy(buf, view.data, view.len);
            whole = slot_read_end(sl, &view);
            if (whole) {
                *len = view.len;
                *generation = view.generation;
                return SHM_OK;
            }
        }
        status = retry_read(&r, err);
        if (status != SHM_OK)
            return status;
    }
}

uint64_t
slot_generation(const slot_t *sl)
{
    return at_load64(&sl->hdr->latest) >> SLOT_GEN_SHIFT;
}

uint32_t
slot_creator_pid(const slot_t *sl)
{
    return at_load32_relaxed(&sl->hdr->creator_pid);
}

void
slot_set_spin(slot_t *sl, int spin)
{
    sl->no_spin = !spin;
}

/* ---- waiting ------------------------------------------------------------- */

static shm_status
wait_timed_out(shm_error *err)
{
    return shm_fail(err, SHM_ETIMEOUT, "no new value before the timeout");
}

shm_status
slot_wait(slot_t *sl, uint64_t after, slot_waiting *w, uint64_t *generation, shm_error *err)
{
    slot_header *h = sl->hdr;
    uint32_t seq, budget;
    uint64_t g;
    int64_t start, slept, until;
    shm_status status;

    for (;;) {
        if (at_loadi(&sl->closing))
            return slot_closed(err);
        /* Snapshot before the check: any publish after this bumps it. */
        seq = at_load32_sc(&h->gen_seq);
        g = slot_generation(sl);
        if (g > after) {
            *generation = g;
            w->resumed = 0;
            return SHM_OK;
        }
        start = sync_now_ns();
        if (w->deadline <= start)
            return wait_timed_out(err);
        budget = sl->no_spin ? 0 : at_load32_relaxed(&sl->spin);
        /* The CPU hint is from shared memory: only ever compared. */
        if (!w->resumed && spin_until_moved(&h->gen_seq, seq, (int64_t)budget,
                                            at_load32_relaxed(&h->publish_cpu), sl->can_spin))
            continue;
        slept = sync_now_ns();
        until = slept + (w->resumed ? SLOT_LONG_SLICE_NS : SLOT_FIRST_SLICE_NS);
        if (until > w->deadline || until < slept)
            until = w->deadline;
        status = sync_wait(&sl->sync, SYNC_WORD_DATA, &h->gen_seq, &h->gen_waiters, seq, until,
                           err);
        if (status == SHM_OK) {
            /* The word moved or a wake came: the budget learns (not with
               spin off: it stays unused), then look again.  Threads racing
               on it only blur a heuristic. */
            if (!sl->no_spin)
                at_store32_relaxed(&sl->spin, spin_learn(budget, start, slept, sync_now_ns(),
                                                         INT64_MIN, w->resumed));
            continue;
        }
        if (status == SHM_ETIMEOUT) {
            if (sync_now_ns() >= w->deadline) {
                g = slot_generation(sl);
                if (g > after) {
                    *generation = g;
                    return SHM_OK;
                }
                return wait_timed_out(err);
            }
            /* The slice is over: back to the caller for a signal check. */
            w->resumed = 1;
            return shm_fail(err, SHM_EINTR, "wait slice");
        }
        if (status == SHM_EINTR)
            w->resumed = 1;
        return status;
    }
}

void
slot_cancel(slot_t *sl)
{
    at_storei(&sl->closing, 1);
    if (sl->hdr == NULL)
        return;
    /* Every registered waiter wakes and sees closing. */
    sync_bump(&sl->sync, SYNC_WORD_DATA, &sl->hdr->gen_seq, &sl->hdr->gen_waiters);
}
