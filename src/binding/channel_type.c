/*
 * binding/channel_type.c -- the pyshm.Channel type: a named segment holding
 * a ring of messages (core/ring.h), shared by any number of processes.
 *
 * Owns: ChannelObject and its methods; pyshm_channel_exec; the loans' life
 * with the ring (pyshm_channel_loan_begin/end, the fork handlers' parts,
 * settle/retire at close()); the private module function _channel_users
 * (for the CLI).
 * May include: binding/binding.h, core/ring.h, platform/segment.h and
 * platform/sync.h (through ring.h), platform/pages.h (a loan's pages made
 * private, a second mapping), the C library.
 *
 * The fast path runs with the GIL held and makes no system call: a send or
 * receive that can complete at once (lock free, space or data there, small
 * copy) is done with RING_NOWAIT.  Anything that may wait, and every copy of
 * at least PYSHM_NOGIL_COPY_MIN bytes, runs with the GIL released.
 *
 * Pins: the mapping stays while anything of this process uses it.  pin()
 * raises the object's in-flight count and unpin() lowers it; every
 * operation pins for as long as it runs without the GIL, and for as long as
 * it holds a side's lock or a message (from ring_recv_begin() to commit or
 * abort), GIL or not.  close() -- from any thread, at any time, even from
 * Python code run in the middle of a pinned stretch -- only marks the object
 * closed and, while pins are out, cancels this process's waits; the last
 * unpin() unmaps.  So no thread ever touches an unmapped ring.  Anything new
 * that holds the ring across Python code (a loan, a held message) pins at
 * its start and unpins at its end, and must not touch the ring after its
 * unpin.  pin() returns a token for its unpin(): the count is per process,
 * and a fork child starts with none (after_fork() drops the parent's,
 * whose threads are not in the child); an unpin() with a token from before
 * the fork then lowers nothing.
 *
 * Locks and the GIL: no thread waits for the GIL while it holds a side's
 * lock or a message, or other processes' senders or receivers would wait on
 * this process's GIL.  So a receive that has to wait does it in two steps:
 * without the GIL it waits until a message is queued (taking and letting go
 * of the lock on the way, holding nothing when it returns); then, with the
 * GIL, it takes the message as the fast path does (one try: the lock,
 * the buffer, the copy -- a large one without the GIL again, the lock let go
 * before the GIL is taken back).  When another receiver was quicker it waits
 * again.  A send holds its lock only inside ring_send(), which returns
 * without it.  Unmapping (munmap, UnmapViewOfFile) also runs without the
 * GIL: a large mapping takes long to tear down.
 *
 * Signals: the core returns SHM_EINTR when a wait was interrupted or a
 * wait slice ended (the first one short, so that a signal that came while
 * the thread spun is seen soon; see core/ring.h); we take the GIL, run
 * PyErr_CheckSignals() and go on waiting with the same ring_wait unless a
 * handler raised.  A receive that waited also checks once the message is
 * there, before taking it: a signal that came meanwhile raises and the
 * message stays queued.  A send raises only when nothing was sent.
 *
 * Readiness (fileno(), wait_handle, pyshm.asyncio's private methods,
 * pyshm.wait) is binding/ready.c's: this file keeps the object's
 * pyshm_readiness, passes it the ring, and calls it at close(), fork,
 * deallocation and a receive's TimeoutError.
 *
 * Object messages (send_obj/recv_obj) use the frame of binding/objects.c;
 * loans (reserve/recv_view) the Loan type of binding/loan_type.c, which
 * calls back into pyshm_channel_loan_begin/end here.
 *
 * Loans.  A loan holds its side's lock across Python code (binding.h has
 * its states).  It belongs to the process that took it and to its Loan
 * object, never to a thread identifier: the lock word names this object's
 * liveness slot, so any thread of the process may end it (a loan whose last
 * export is released in another thread, or whose Loan is freed there, ends
 * there and then).  The taking thread is remembered by its mark (binding.h)
 * for two rules only: a call on the same side from that thread while the
 * loan is held is refused (RuntimeError) rather than left to wait for
 * itself, and a loan whose thread has ended without leaving its block is
 * abandoned -- ended as a failed block, now or when its last export goes
 * -- by the next wait of this process that comes back for a signal check
 * (run_slow) or by close().  Each loan keeps its own pin and owner, so two
 * threads taking loans of one object (one waits for the other's lock) never
 * mix them up.
 *
 * close() and loans.  A loan still in its block keeps working after close()
 * (its pin keeps the mapping; it publishes or consumes when it ends).  A
 * loan whose block is over but whose memory is still exported (refused,
 * see loan_type.c) ends at close() at the latest: once no other operation
 * runs in the mapping (settle()), its pages are made a private copy in
 * place and then its lock is let go (retire()), so that its exports stay
 * valid memory but can no longer write into ring space that other senders
 * reuse, nor show what they write there.  Where the platform cannot do
 * that (no mremap: Windows, other POSIX systems) the loan keeps its lock
 * until its exports are released.
 *
 * Fork.  Loans do not cross fork(): in a child, every loan the parent held
 * is dead.  The fork handler (pyshm_channel_after_fork, run before any code
 * of the child) makes each one's pages a private copy as above and moves
 * the channel onto a fresh mapping of the segment, so that the child's
 * views of the parent's loan neither write into the parent's message nor
 * break the child's own use of the channel; the lock stays the parent's.
 * Ending such a loan in the child (its block, its views, its Loan freed,
 * close(), the Channel freed) never touches the ring.
 */
#include "binding/binding.h"
#include "core/ring.h"
#include "platform/pages.h"     /* a retired loan's private pages, a second mapping */

#include <math.h>       /* floor */
#include <stddef.h>     /* offsetof */
#include <structmember.h>  /* PyMemberDef for __weaklistoffset__ */

typedef struct {
    PyObject_HEAD
    ring_t ch;              /* ch.hdr == NULL once released */
    shm_segment seg;        /* the mapping behind ch */
    PyObject *name;         /* str, as given or generated; NULL until __init__ opened */
    Py_ssize_t inflight;    /* pins: operations of this process using the mapping
                               without the GIL or holding a lock or message */
    int closed;             /* close() was called, or __init__ has not opened
                               (release may be deferred) */
    uint64_t fork_generation;   /* pyshm_fork_generation() when inflight was last
                                   right for this process */
    uint64_t capacity;      /* ch.capacity, kept after close() */
    int spin;               /* the wait policy: spin before blocking (the default) */
    int held[2];            /* by PYSHM_SEND/PYSHM_RECV: this process's HELD loans of
                               this object (0 or 1; the loans list says whose) */
    pyshm_state *st;        /* the module's state: kept alive by our type, which holds
                               the module (looked up once: it walks the MRO) */
    pyshm_readiness rd;     /* fileno(), pyshm.asyncio, pyshm.wait (binding/ready.c) */
    PyObject *weakreflist;
} ChannelObject;

static int
check_open(ChannelObject *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_ValueError, self->name == NULL
                        ? "operation on a Channel whose __init__ has not run"
                        : "operation on a closed Channel");
        return -1;
    }
    return 0;
}

static pyshm_state *
state_of(ChannelObject *self)
{
    return self->st;
}

/* Detach and unmap (without the GIL); only when no pin is out. */
static void
release_mapping(ChannelObject *self)
{
    ring_detach(&self->ch);
    pyshm_unmap(&self->seg);
}

/* ---- the process's loans (binding.h: pyshm_state.loans) ----------------------- */

static void
loan_link(pyshm_state *st, pyshm_loan *l)
{
    l->prev = NULL;
    l->next = st->loans;
    if (st->loans != NULL)
        st->loans->prev = l;
    st->loans = l;
}

static void
loan_unlink(pyshm_state *st, pyshm_loan *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else if (st->loans == l)
        st->loans = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* The loan's memory is in the ring (not a private copy of a straddling
   message, not empty): what retire() must make private. */
static int
in_ring(const pyshm_loan *l)
{
    return l->len > 0 && l->copy == NULL && l->data != NULL;
}

/* The whole pages L's views point into, when they are pages of a mapping:
   its private copy (CARVED), or the ring's pages under it (HELD, INHERITED).
   0 when it has none. */
static int
loan_span(const pyshm_loan *l, shm_private *span)
{
    size_t page = shm_page_size();
    uintptr_t start, end;

    if (l->state == PYSHM_LOAN_CARVED) {
        *span = l->priv;
        return l->priv.at != NULL;
    }
    if ((l->state != PYSHM_LOAN_HELD && l->state != PYSHM_LOAN_INHERITED) || !in_ring(l))
        return 0;
    start = (uintptr_t)l->data & ~(uintptr_t)(page - 1);
    end = ((uintptr_t)l->data + l->len + page - 1) & ~(uintptr_t)(page - 1);
    span->at = (void *)start;
    span->size = (size_t)(end - start);
    span->copy = NULL;
    return 1;
}

/* Unmap the whole pages of [ADDR, ADDR + SIZE) except those any loan on
   the list still has views into (loan_span): two loans may meet in one
   page, and a loan whose copy could not be put keeps shared pages. */
static void
unmap_except_loans(pyshm_state *st, void *addr, size_t size)
{
    pyshm_loan *o;
    shm_private *keep, span;
    size_t n = 0;

    for (o = st->loans; o != NULL; o = o->next)
        n += (size_t)loan_span(o, &span);
    keep = PyMem_Malloc((n > 0 ? n : 1) * sizeof *keep);
    if (keep == NULL)
        return;     /* the pages stay mapped: a leak, never a view into nothing */
    n = 0;
    for (o = st->loans; o != NULL; o = o->next)
        if (loan_span(o, &span))
            keep[n++] = span;
    shm_pages_unmap_except(addr, size, keep, n);
    PyMem_Free(keep);
}

/* Unmap the private pages of L (CARVED, off the list already), but for
   those another loan still has views into. */
static void
release_private(pyshm_state *st, pyshm_loan *l)
{
    if (l->priv.at == NULL)
        return;
    unmap_except_loans(st, l->priv.at, l->priv.size);
    l->priv.at = NULL;
    l->priv.size = 0;
}

/*
 * Make the loans of this object marked RETIRING let go of the ring (see
 * the top of this file).  Their pages -- for those whose memory is in the
 * ring -- become private copies in place, and the channel goes on through
 * a second mapping of its segment; the first mapping is then unmapped
 * except those pages.
 *
 * CLOSING (close(), the loans are this process's): the copies are made
 * now, while their locks are still held, so nothing can have changed what
 * they copy; the locks are let go afterwards, through the second mapping.
 * Otherwise (a fork child) the copies were made in the parent before the
 * fork (pyshm_channel_before_fork), while it held the locks -- a copy made
 * here could see ring space the parent has already given back -- and the
 * locks stay the parent's; a loan without one is not retired.
 *
 * Each loan that made it is CARVED (and, when CLOSING, no longer counted
 * as held or pinned); one that did not (no mremap, no memory, no copy)
 * stays as it was and keeps RETIRING for the caller to see.  With the GIL,
 * and only while nothing runs in the ring through this object's mapping.
 */
static void
retire(ChannelObject *self, int closing)
{
    pyshm_state *st = state_of(self);
    pyshm_loan *l;
    shm_error err;
    void *old = self->seg.addr, *again = NULL;
    int paged = 0;

#define RETIRING(l) ((l)->retiring && (l)->channel == (PyObject *)self)
    /* 1. The copies.  Nothing has changed yet if one fails. */
    for (l = st->loans; l != NULL; l = l->next) {
        if (!RETIRING(l) || !in_ring(l))
            continue;
        if (closing) {
            /* A copy made for a fork in progress (another thread's) may be
               older than what the views hold now: a fresh one.  The fork,
               when it comes, gives the child this loan's private pages. */
            shm_private_free(&l->priv);
            if (shm_private_copy(&l->priv, l->data, l->len, &err) != SHM_OK)
                goto undo;
        } else if (l->priv.copy == NULL) {
            continue;           /* no copy from before the fork: kept (fork_loans) */
        }
        paged = 1;
    }
    if (paged) {
        /* 2. The ring goes on (is unlocked, for close()) through a second
           mapping: the first one's pages under the loans -- and perhaps the
           header's, which shares its page with the ring's start -- are
           about to stop being shared. */
        if (shm_pages_share_again(old, self->seg.size, &again, &err) != SHM_OK)
            goto undo;
        ring_rebase(&self->ch, again);
        self->seg.addr = again;
        /* 3. The copies in place, each in one step. */
        for (l = st->loans; l != NULL; l = l->next) {
            if (!RETIRING(l) || !in_ring(l) || l->priv.copy == NULL)
                continue;
            if (shm_private_put(&l->priv, &err) != SHM_OK)
                shm_private_free(&l->priv);     /* this one keeps the shared pages */
        }
    }
    /* 4. Let go of the ring. */
    for (l = st->loans; l != NULL; l = l->next) {
        if (!RETIRING(l) || (in_ring(l) && l->priv.at == NULL))
            continue;
        if (closing) {
            if (l->side == PYSHM_SEND)
                ring_reserve_abort(&self->ch);
            else
                ring_recv_abort(&self->ch);
            self->held[l->side]--;
            self->inflight--;       /* its pin (the caller settles) */
        }
        l->state = PYSHM_LOAN_CARVED;
        l->retiring = 0;
    }
    /* 5. The first mapping, but for the pages some loan still has views
       into.  A loan that could not be given its copy points into shared
       pages there, which are kept; as the rest of the mapping is no longer
       this object's, they are simply left mapped (a leak, rare: mremap
       failing on memory it already holds). */
    if (paged)
        unmap_except_loans(st, old, self->seg.size);
    return;

undo:
    for (l = st->loans; l != NULL; l = l->next)
        if (RETIRING(l))
            shm_private_free(&l->priv);
#undef RETIRING
}

/*
 * The fork handlers' parts (module.c, os.register_at_fork).  Before the
 * fork, in the parent: a private copy of the pages of every loan this
 * process holds, made while it holds them; the child inherits the copies
 * and puts them in place (pyshm_channel_after_fork), the parent drops them.
 * A loan whose copy cannot be made stays shared in the child (INHERITED).
 */
void
pyshm_channel_before_fork(pyshm_state *st)
{
    pyshm_loan *l;
    shm_error err;

    /* Several threads may be forking at once (each lets go of the GIL for
       the import lock between its handlers): a copy stays until the last
       one's after_in_parent, and a loan taken meanwhile gets one from the
       next "before".  A loan that ends meanwhile drops its own. */
    st->forks++;
    for (l = st->loans; l != NULL; l = l->next) {
        if ((l->state == PYSHM_LOAN_HELD || l->state == PYSHM_LOAN_INHERITED) &&
            in_ring(l) && l->priv.copy == NULL)
            (void)shm_private_copy(&l->priv, l->data, l->len, &err);
    }
}

void
pyshm_channel_after_fork_parent(pyshm_state *st)
{
    pyshm_loan *l;

    if (st->forks > 0)
        st->forks--;
    if (st->forks > 0)
        return;         /* another thread's fork still needs them */
    for (l = st->loans; l != NULL; l = l->next)
        if (l->state == PYSHM_LOAN_HELD || l->state == PYSHM_LOAN_INHERITED)
            shm_private_free(&l->priv);
}

/* A pin's token: the fork generation it was taken in. */
typedef uint64_t pin_token;

static void unpin(ChannelObject *self, pin_token token);

/* The forked part of after_fork(): the parent's loans of this object, dead
   here (binding.h); their pins went with the parent's counts. */
static void
fork_loans(ChannelObject *self)
{
    pyshm_state *st = state_of(self);
    pyshm_loan *l;
    int any = 0;

    for (l = st->loans; l != NULL; l = l->next) {
        if (l->channel == (PyObject *)self && l->pin != st->fork_generation &&
            (l->state == PYSHM_LOAN_HELD || l->state == PYSHM_LOAN_INHERITED)) {
            l->forked = 1;
            l->retiring = 1;
            any = 1;
        }
    }
    if (!any)
        return;
    retire(self, 0);
    for (l = st->loans; l != NULL; l = l->next) {
        if (l->channel == (PyObject *)self && l->retiring) {
            /* No private copy: its views still show the shared ring, so
               the child's mapping stays until they are gone. */
            shm_private_free(&l->priv);
            l->retiring = 0;
            l->state = PYSHM_LOAN_INHERITED;
            l->pin = st->fork_generation;
            self->inflight++;
        }
    }
}

/* In a fork child (for the first time since the fork): the pins and held
   loans belong to threads the child does not have. */
static void
after_fork(ChannelObject *self)
{
    if (self->fork_generation == self->st->fork_generation)
        return;
    self->fork_generation = self->st->fork_generation;
    self->inflight = 0;
    self->held[PYSHM_SEND] = self->held[PYSHM_RECV] = 0;
    pyshm_readiness_forked(&self->rd);
    fork_loans(self);
    if (self->closed && self->inflight == 0 && self->seg.addr != NULL)
        release_mapping(self);
}

void
pyshm_channel_after_fork(pyshm_state *st)
{
    pyshm_loan *l;

    st->forks = 0;      /* the forking threads of the parent are not here */
again:
    for (l = st->loans; l != NULL; l = l->next) {
        if (l->pin != st->fork_generation &&
            (l->state == PYSHM_LOAN_HELD || l->state == PYSHM_LOAN_INHERITED)) {
            /* Every loan of that channel at once; then look again. */
            after_fork((ChannelObject *)l->channel);
            fork_loans((ChannelObject *)l->channel);    /* if after_fork ran before */
            goto again;
        }
        if (l->state == PYSHM_LOAN_CARVED)
            l->forked = 1;      /* retired in the parent: dead here as well */
    }
}

/* The mapping stays until the matching unpin() (see the top of this file). */
static pin_token
pin(ChannelObject *self)
{
    after_fork(self);
    self->inflight++;
    return self->fork_generation;
}

/*
 * After close(): once every pin still out belongs to a loan whose block is
 * over (refused: its exports alive), nothing runs in the mapping -- those
 * loans are retired (their locks let go) -- and then the mapping goes.  A
 * loan still in its block (or kept: see retire) keeps it.
 */
static void
settle(ChannelObject *self)
{
    pyshm_state *st;
    pyshm_loan *l;
    Py_ssize_t refused = 0;
    int other = 0;

    if (!self->closed || self->seg.addr == NULL)
        return;
    if (self->inflight > 0) {
        st = state_of(self);
        for (l = st->loans; l != NULL; l = l->next) {
            if (l->channel != (PyObject *)self || l->pin != self->fork_generation ||
                l->state != PYSHM_LOAN_HELD)
                continue;
            if (l->refused)
                refused++;
            else
                other = 1;
        }
        if (other || refused != self->inflight)
            return;
        for (l = st->loans; l != NULL; l = l->next)
            if (l->channel == (PyObject *)self && l->state == PYSHM_LOAN_HELD)
                l->retiring = 1;
        retire(self, 1);
        for (l = st->loans; l != NULL; l = l->next)
            l->retiring = 0;    /* those left keep their lock until their end */
        if (self->inflight > 0)
            return;
    }
    release_mapping(self);
}

/* With the GIL.  The last unpin after close() unmaps (settle). */
static void
unpin(ChannelObject *self, pin_token token)
{
    after_fork(self);
    if (token == self->fork_generation)
        self->inflight--;
    settle(self);
}

/*
 * Loans of this process whose owner thread has ended without leaving the
 * block (binding.h, thread marks) can never be left: abandon them -- they
 * end as failed blocks, now or when their last export goes.  From waits
 * that come back for a signal check (one of them may be waiting for that
 * very lock) and from close().  With the GIL and no exception set.
 */
static void
reap_abandoned(pyshm_state *st)
{
    pyshm_loan *l;
    PyObject *obj;

again:
    for (l = st->loans; l != NULL; l = l->next) {
        if (l->state != PYSHM_LOAN_HELD || l->refused || l->forked ||
            l->pin != st->fork_generation || pyshm_thread_alive(l->owner))
            continue;
        obj = Py_NewRef(l->object);
        pyshm_loan_abandon(obj);    /* refused or ended: not seen here again */
        Py_DECREF(obj);
        goto again;                 /* the list may have changed */
    }
}

/* This process's HELD loan of SIDE of this object, or NULL. */
static pyshm_loan *
held_loan(ChannelObject *self, int side)
{
    pyshm_loan *l;

    for (l = state_of(self)->loans; l != NULL; l = l->next)
        if (l->channel == (PyObject *)self && l->side == side &&
            l->state == PYSHM_LOAN_HELD && l->pin == self->fork_generation)
            return l;
    return NULL;
}

/*
 * Before a call on SIDE: the calling thread may not hold a loan of that
 * side (the call would wait for its own lock).  Another thread's loan is
 * waited for, as any holder is.
 */
static int
check_side(ChannelObject *self, int side, const char *fname)
{
    pyshm_loan *l;

    if (self->held[side] == 0)
        return 0;
    after_fork(self);       /* a fork child's counts are the parent's until then */
    if (self->held[side] == 0)
        return 0;
    l = held_loan(self, side);
    if (l == NULL || !pyshm_thread_is(state_of(self), l->owner))
        return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "%s inside a %s block of the same channel would wait for itself: "
                 "end the block first", fname,
                 side == PYSHM_SEND ? "reserve()" : "recv_view()");
    return -1;
}

/* Absolute deadline for a timeout: RING_FOREVER, or an expired non-zero
   value for 0 ("try, spin for the lock, but do not wait for data"). */
static int64_t
deadline_for(int forever, double seconds)
{
    int64_t now;
    double ns;

    if (forever)
        return RING_FOREVER;
    now = sync_now_ns();
    if (seconds == 0.0)
        return now > 0 ? now : 1;
    ns = floor(seconds * 1e9);
    if (ns >= (double)(RING_FOREVER - now))
        return RING_FOREVER;
    return now + (int64_t)ns;
}

/* ---- construction --------------------------------------------------------- */

/* What open_channel() needs, gathered by Channel_new. */
typedef struct {
    ChannelObject *self;
    int create;
    uint64_t capacity;
    int flags;
    int mode;
} open_args;

/* The format hook of a new channel's segment (see shm_hooks): ARG is the
   open_args. */
static shm_status
format_channel(void *arg, void *addr, size_t size, shm_error *err)
{
    return ring_format(addr, size, ((open_args *)arg)->capacity, err);
}

/*
 * Where segments do not appear whole (shm_segment_appears_whole), a creator
 * may still be formatting the header of the segment SELF opened: wait for
 * its magic, sleeping, up to SHM_CREATOR_WAIT_NS (ring_attach then judges
 * what is there).  Where they do, a zero magic is final (not a channel)
 * and nothing is waited for.  SHM_EINTR when a signal handler raised.
 */
static shm_status
wait_for_format(ChannelObject *self, void *signals, shm_error *err)
{
    int64_t give_up, pause = 10000;

    if (shm_segment_appears_whole() || ring_formatted(self->seg.addr, self->seg.size))
        return SHM_OK;
    give_up = sync_now_ns() + SHM_CREATOR_WAIT_NS;
    while (!ring_formatted(self->seg.addr, self->seg.size) && sync_now_ns() < give_up) {
        shm_sleep_ns(pause);
        if (pyshm_interrupted(signals))     /* a signal may have come */
            return shm_fail(err, SHM_EINTR, "interrupted by a signal");
        pause = pause * 2 > 10000000 ? 10000000 : pause * 2;
    }
    return SHM_OK;
}

/*
 * A pyshm_open_fn (runs without the GIL): map NAME and attach the ring.
 * CREATE: a new segment of CAPACITY (formatted before it is published, see
 * shm_hooks); with SHM_EXIST_OK an existing one is opened and checked
 * instead.  On failure nothing stays mapped, and a name this call created
 * is removed again.
 */
static shm_status
open_channel(void *arg, const shm_char *name, void *signals, shm_error *err)
{
    open_args *a = (open_args *)arg;
    ChannelObject *self = a->self;
    /* Only pyshm makes channels: where it publishes them whole, a size of
       0 is final (not a channel); elsewhere its creator may not have sized
       it yet. */
    shm_hooks hooks = {format_channel, a, pyshm_interrupted, signals,
                       shm_segment_appears_whole() ? 0 : SHM_CREATOR_WAIT_NS};
    shm_status status;

    /* The ring's lock liveness lives on the segment's file (ring_attach). */
    self->seg.keep_fd = 1;
    if (a->create)
        status = shm_segment_create_ex(&self->seg, name,
                                       (size_t)ring_segment_size(a->capacity), a->mode,
                                       a->flags, &hooks, err);
    else
        status = shm_segment_open_ex(&self->seg, name, 0, &hooks, err);
    if (status == SHM_OK && !self->seg.created)
        status = wait_for_format(self, signals, err);
    if (status == SHM_OK)
        status = ring_attach(&self->ch, &self->seg, name, err);
    if (status != SHM_OK && self->seg.addr != NULL) {
        shm_error ignored;
        int created = self->seg.created;
        shm_segment_close(&self->seg);
        if (created)
            (void)shm_segment_unlink(name, &ignored);
    }
    return status;
}

/* __new__: an object in the "not opened" state; __init__ does the work, so
   that subclasses may take other arguments in their own __init__. */
static PyObject *
Channel_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    ChannelObject *self = (ChannelObject *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    ring_init(&self->ch);
    shm_segment_init(&self->seg);
    self->name = NULL;
    self->inflight = 0;
    self->closed = 1;       /* until a mapping is attached */
    self->capacity = 0;
    self->spin = 1;
    self->held[PYSHM_SEND] = self->held[PYSHM_RECV] = 0;
    pyshm_readiness_init(&self->rd);
    self->weakreflist = NULL;
    self->st = pyshm_state_from_type(type);
    if (self->st == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->fork_generation = self->st->fork_generation;
    return (PyObject *)self;
}

static int
Channel_init(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "capacity", "exist_ok", "mode", "track", "spin",
                             NULL};
    PyObject *name = Py_None, *cap_obj = NULL, *mode_obj = NULL;
    int create = 0, exist_ok = 0, track = 0, spin = 1, mode = 0600;
    Py_ssize_t cap_value = 1 << 20;
    uint64_t capacity;
    pyshm_state *st = self->st;
    shm_error err;
    open_args a;

    if (st == NULL)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$pOpp:Channel", kwlist,
                                     &name, &create, &cap_obj, &exist_ok, &mode_obj, &track,
                                     &spin))
        return -1;
    if (self->name != NULL) {
        PyErr_Format(PyExc_TypeError, "Channel %R is already initialised: __init__ "
                     "opens a channel once", self->name);
        return -1;
    }
    if (pyshm_name_arg(name, create, "channel") < 0)
        return -1;
    if (cap_obj != NULL && pyshm_ssize_arg(cap_obj, "capacity", 0, &cap_value) < 0)
        return -1;
    if (ring_capacity((uint64_t)cap_value, &capacity, &err) != SHM_OK) {
        PyErr_Format(PyExc_ValueError, "%s (got %zd)", err.detail, cap_value);
        return -1;
    }
    if (pyshm_mode_arg(mode_obj, &mode) < 0)
        return -1;

    a.self = self;
    a.create = create;
    a.capacity = capacity;
    /* exist_ok only for a given name: a random one that is taken is retried. */
    a.flags = exist_ok && name != Py_None ? SHM_EXIST_OK : 0;
    a.mode = mode;
    name = pyshm_open_by_name(st, name, open_channel, &a, "channel");
    if (name == NULL)
        return -1;
    /* exist_ok: a capacity given must be the existing channel's; not given,
       the existing one's wins. */
    if (create && cap_obj != NULL && !self->seg.created &&
        pyshm_exist_ok_size(name, "channel", "capacity", PYSHM_EXACTLY, (uint64_t)cap_value,
                            capacity, self->ch.capacity) < 0) {
        release_mapping(self);      /* opened, not created: nothing to remove */
        Py_DECREF(name);
        return -1;
    }
    if (track && self->seg.created && pyshm_track_name(st, name) < 0) {
        release_mapping(self);    /* the name is gone again: nothing half-made */
        Py_DECREF(name);
        return -1;
    }
    self->capacity = self->ch.capacity;
    self->spin = spin;
    ring_set_spin(&self->ch, spin);
    self->name = name;
    self->closed = 0;
    return 0;
}

static int
Channel_traverse(ChannelObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void
Channel_dealloc(ChannelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* Running operations and loans (held or not) hold a reference, so no
       pin is out and no loan keeps anything here.  Readiness first: its
       watches point into the mapping. */
    pyshm_readiness_free(&self->rd);
    release_mapping(self);
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- operations without the GIL (send and receive) -------------------------- */

/* Raise for a failed operation; a closed channel reads as ValueError. */
static PyObject *
raise_status(ChannelObject *self, const shm_error *err)
{
    pyshm_state *st = self->st;
    return pyshm_raise(st, err, self->name);
}

/*
 * The slow path of send/recv: call OP without the GIL until it stops
 * asking for a signal check.  Returns the final status; -1 in *raised when
 * a signal handler raised (or the channel was closed meanwhile).
 */
typedef shm_status (*slow_op)(ChannelObject *self, void *arg, ring_wait *w, shm_error *err);

static shm_status
run_slow(ChannelObject *self, slow_op op, void *arg, ring_wait *w, shm_error *err,
         int *raised)
{
    shm_status status;
    pin_token token;

    *raised = 0;
    for (;;) {
        /* A loan of this process whose thread is gone may hold the very
           lock this call is about to wait for. */
        reap_abandoned(state_of(self));
        if (check_open(self) < 0) {
            *raised = 1;
            return SHM_EVALUE;
        }
        token = pin(self);
        Py_BEGIN_ALLOW_THREADS
        status = op(self, arg, w, err);
        Py_END_ALLOW_THREADS
        unpin(self, token);
        if (status != SHM_EINTR)
            return status;
        if (PyErr_CheckSignals() < 0) {
            *raised = 1;
            return status;
        }
        if (check_open(self) < 0) {
            *raised = 1;
            return status;
        }
    }
}

/* ---- send ------------------------------------------------------------------ */

typedef struct {
    const void *data;
    size_t len;
} send_arg;

static shm_status
send_op(ChannelObject *self, void *arg, ring_wait *w, shm_error *err)
{
    send_arg *a = (send_arg *)arg;
    return ring_send(&self->ch, a->data, a->len, w, err);
}

PyDoc_STRVAR(send_doc,
"send($self, data, timeout=None)\n"
"--\n\n"
"Queue the bytes-like DATA as one message, waiting while the channel is\n"
"full.  TIMEOUT None waits for ever, 0 never waits, otherwise seconds;\n"
"TimeoutError when no space came in time (nothing is sent).  ValueError,\n"
"and nothing sent, when DATA is larger than max_message_size.");

static PyObject *
Channel_send(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout", NULL};
    PyObject *argv[2];
    Py_buffer view;
    double seconds;
    int forever, raised;
    send_arg a;
    ring_wait w;
    shm_error err;
    shm_status status;

    if (pyshm_parse_args("send", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0 || check_side(self, PYSHM_SEND, "send()") < 0)
        return NULL;
    if (pyshm_timeout_arg(argv[1], &seconds, &forever) < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 0, "send") < 0)
        return NULL;
    if (check_open(self) < 0)
        goto error;
    if ((uint64_t)view.len > ring_max_message(self->ch.capacity)) {
        PyErr_Format(PyExc_ValueError,
                     "send(): a message of %zd bytes is larger than this channel can hold "
                     "(max_message_size is %llu)", view.len,
                     (unsigned long long)ring_max_message(self->ch.capacity));
        goto error;
    }
    a.data = view.buf;
    a.len = (size_t)view.len;
    status = SHM_ETIMEOUT;
    if (view.len < PYSHM_NOGIL_COPY_MIN)
        status = ring_send(&self->ch, a.data, a.len, NULL, &err);
    if (status == SHM_ETIMEOUT) {
        w = ring_wait_until(deadline_for(forever, seconds));
        status = run_slow(self, send_op, &a, &w, &err, &raised);
        if (raised)
            goto error;
    }
    PyBuffer_Release(&view);
    if (status != SHM_OK)
        return raise_status(self, &err);
    Py_RETURN_NONE;

error:
    PyBuffer_Release(&view);
    return NULL;
}

/* ---- receive ---------------------------------------------------------------- */

/* A slow_op: wait until a message is queued.  The recv lock is taken and let
   go on the way: nothing is held on return (see the top of this file). */
static shm_status
wait_message_op(ChannelObject *self, void *arg, ring_wait *w, shm_error *err)
{
    ring_msg msg;
    shm_status status;

    (void)arg;
    status = ring_recv_begin(&self->ch, w, &msg, err);
    if (status == SHM_OK)
        ring_recv_abort(&self->ch);
    return status;
}

/* A message taken by begin_recv(): where it is, and the pin that keeps its
   mapping until finish_recv() or abort_recv(). */
typedef struct {
    ring_msg msg;
    pin_token pin;
} held_msg;

/*
 * Take the next message, waiting for one as TIMEOUT says.  0 with the recv
 * lock held and the mapping pinned (the caller ends with finish_recv() or
 * abort_recv(), holding the GIL all along except inside finish_recv()), or
 * -1 with an exception set (nothing held).
 */
static int
begin_recv(ChannelObject *self, PyObject *timeout, held_msg *held)
{
    ring_msg *msg = &held->msg;
    double seconds;
    int forever, raised;
    ring_wait w;
    shm_error err;
    shm_status status;

    if (pyshm_timeout_arg(timeout, &seconds, &forever) < 0)
        return -1;
    if (check_open(self) < 0 || check_side(self, PYSHM_RECV, "a receive") < 0)
        return -1;
    status = ring_recv_begin(&self->ch, NULL, msg, &err);
    if (status == SHM_ETIMEOUT) {
        w = ring_wait_until(deadline_for(forever, seconds));
        for (;;) {
            status = run_slow(self, wait_message_op, NULL, &w, &err, &raised);
            if (raised)
                return -1;
            if (status != SHM_OK)
                break;
            /* A message is queued.  Signals that came during the wait first,
               so that a handler that raises leaves it queued; and close()
               may have run meanwhile. */
            if (PyErr_CheckSignals() < 0 || check_open(self) < 0)
                return -1;
            status = ring_recv_begin(&self->ch, NULL, msg, &err);
            if (status != SHM_ETIMEOUT)
                break;
            /* Another receiver was quicker (or holds the lock): wait again. */
        }
    }
    if (status != SHM_OK) {
        /* fileno()'s protocol: a TimeoutError arms the descriptor again. */
        if (status == SHM_ETIMEOUT && self->rd.fileno)
            pyshm_channel_rearm(&self->rd, &self->ch);
        raise_status(self, &err);
        return -1;
    }
    held->pin = pin(self);
    return 0;
}

/* End a begin_recv() that took nothing: the message stays queued. */
static void
abort_recv(ChannelObject *self, const held_msg *held)
{
    ring_recv_abort(&self->ch);
    unpin(self, held->pin);
}

/* Copy the held message to DST, consume it and let go of the lock; a big
   copy without the GIL (the lock is let go before the GIL is taken back). */
static void
finish_recv(ChannelObject *self, const held_msg *held, void *dst)
{
    if (held->msg.len < PYSHM_NOGIL_COPY_MIN) {
        ring_recv_commit(&self->ch, &held->msg, dst);
    } else {
        Py_BEGIN_ALLOW_THREADS
        ring_recv_commit(&self->ch, &held->msg, dst);
        Py_END_ALLOW_THREADS
    }
    unpin(self, held->pin);
}

PyDoc_STRVAR(recv_doc,
"recv($self, timeout=None)\n"
"--\n\n"
"Return the next message as bytes, waiting while the channel is empty.\n"
"TIMEOUT None waits for ever, 0 never waits, otherwise seconds;\n"
"TimeoutError when none came in time.");

static PyObject *
Channel_recv(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *argv[1], *result;
    held_msg held;

    if (pyshm_parse_args("recv", args, nargs, kwnames, names, 1, 0, argv) < 0)
        return NULL;
    if (begin_recv(self, argv[0], &held) < 0)
        return NULL;
    /* Allocating a bytes object runs no Python code (bytes are not tracked
       by the GC), so holding the recv lock across it is safe. */
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)held.msg.len);
    if (result == NULL) {
        abort_recv(self, &held);
        return NULL;
    }
    finish_recv(self, &held, PyBytes_AS_STRING(result));
    return result;
}

PyDoc_STRVAR(recv_into_doc,
"recv_into($self, buffer, timeout=None)\n"
"--\n\n"
"Copy the next message into the writable BUFFER and return its size;\n"
"nothing is allocated.  ValueError when the message is larger than BUFFER:\n"
"it then stays queued.  TIMEOUT as for recv().");

static PyObject *
Channel_recv_into(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const char *const names[] = {"buffer", "timeout", NULL};
    PyObject *argv[2];
    Py_buffer view;
    held_msg held;

    if (pyshm_parse_args("recv_into", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 1, "recv_into") < 0)
        return NULL;
    if (begin_recv(self, argv[1], &held) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (held.msg.len > (size_t)view.len) {
        abort_recv(self, &held);
        PyErr_Format(PyExc_ValueError,
                     "recv_into(): the next message has %zu bytes and does not fit in a "
                     "buffer of %zd bytes (it stays queued)", held.msg.len, view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    finish_recv(self, &held, view.buf);
    PyBuffer_Release(&view);
    return PyLong_FromSize_t(held.msg.len);
}

/* ---- object messages ----------------------------------------------------------- */

static shm_status
sendv_op(ChannelObject *self, void *arg, ring_wait *w, shm_error *err)
{
    pyshm_frame *f = (pyshm_frame *)arg;
    return ring_sendv(&self->ch, f->pieces, f->npieces, RING_KIND_OBJECT, w, err);
}

PyDoc_STRVAR(send_obj_doc,
"send_obj($self, obj, timeout=None)\n"
"--\n\n"
"Send the Python object OBJ as one message: pickled with protocol 5, its\n"
"out-of-band buffers (NumPy arrays, PickleBuffer, memoryviews) copied once,\n"
"straight into the ring next to the pickle stream.  recv_obj() rebuilds it.\n"
"ValueError, and nothing sent, when it does not fit in max_message_size;\n"
"TIMEOUT as for send().  Unpickling runs code: for trusted peers only.");

static PyObject *
Channel_send_obj(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"obj", "timeout", NULL};
    PyObject *argv[2];
    pyshm_state *st = self->st;
    pyshm_frame frame;
    double seconds;
    int forever, raised;
    ring_wait w;
    shm_error err;
    shm_status status;
    uint64_t max;

    if (pyshm_parse_args("send_obj", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0 || check_side(self, PYSHM_SEND, "send_obj()") < 0)
        return NULL;
    if (pyshm_timeout_arg(argv[1], &seconds, &forever) < 0)
        return NULL;
    if (pyshm_frame_pickle(st, argv[0], &frame) < 0)
        return NULL;
    /* Pickling ran Python code: the channel may have been closed meanwhile. */
    if (check_open(self) < 0 || check_side(self, PYSHM_SEND, "send_obj()") < 0)
        goto error;
    max = ring_max_message(self->ch.capacity);
    if ((uint64_t)frame.len > max) {
        PyErr_Format(PyExc_ValueError,
                     "send_obj(): the object pickles to a message of %zu bytes (%zd "
                     "out-of-band buffer(s) and the frame included), more than this channel "
                     "can hold (max_message_size is %llu); nothing was sent",
                     frame.len, frame.nviews, (unsigned long long)max);
        goto error;
    }
    status = SHM_ETIMEOUT;
    if (frame.len < PYSHM_NOGIL_COPY_MIN)
        status = ring_sendv(&self->ch, frame.pieces, frame.npieces, RING_KIND_OBJECT,
                            NULL, &err);
    if (status == SHM_ETIMEOUT) {
        w = ring_wait_until(deadline_for(forever, seconds));
        status = run_slow(self, sendv_op, &frame, &w, &err, &raised);
        if (raised)
            goto error;
    }
    pyshm_frame_release(&frame);
    if (status != SHM_OK)
        return raise_status(self, &err);
    Py_RETURN_NONE;

error:
    pyshm_frame_release(&frame);
    return NULL;
}

PyDoc_STRVAR(recv_obj_doc,
"recv_obj($self, timeout=None)\n"
"--\n\n"
"Return the next message as the object send_obj() sent.  The message is\n"
"copied once, into fresh memory that rebuilt NumPy arrays and other\n"
"out-of-band buffers point into.  A message not sent by send_obj() raises\n"
"ValueError and stays queued (recv() takes it); a corrupt frame raises\n"
"ProtocolError and stays queued.  TIMEOUT as for recv().  Unpickling runs\n"
"code named by the sender: use it with peers you trust.");

static PyObject *
Channel_recv_obj(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *argv[1], *target, *result;
    pyshm_state *st = self->st;
    pyshm_frame_in in;
    unsigned char *dst;
    size_t offset, n;
    held_msg held;

    if (pyshm_parse_args("recv_obj", args, nargs, kwnames, names, 1, 0, argv) < 0)
        return NULL;
    if (pyshm_objects_ready(st) < 0)
        return NULL;
    if (check_open(self) < 0 || check_side(self, PYSHM_RECV, "recv_obj()") < 0)
        return NULL;
    /* Pinned from the take to the commit (begin_recv): another thread's
       close() cannot unmap while this one holds a message. */
    if (begin_recv(self, argv[0], &held) < 0)
        return NULL;
    if (held.msg.kind != RING_KIND_OBJECT) {
        abort_recv(self, &held);
        PyErr_Format(PyExc_ValueError,
                     "recv_obj(): the next message was not sent by send_obj() (it is %zu "
                     "bytes from send() or reserve()); it stays queued: take it with recv()",
                     held.msg.len);
        return NULL;
    }
    if (pyshm_frame_parse(st, &self->ch, &held.msg, &in) < 0) {
        abort_recv(self, &held);
        return NULL;
    }
    /* A bytes object or a MessageBuffer: no Python code runs under the lock. */
    target = pyshm_frame_target(st, &in, &dst, &offset, &n);
    if (target == NULL) {
        abort_recv(self, &held);        /* the message stays queued */
        pyshm_frame_in_release(&in);
        return NULL;
    }
    /* The commit lets go of the lock before the GIL is taken back. */
    if (n < PYSHM_NOGIL_COPY_MIN) {
        ring_recv_read(&self->ch, &held.msg, offset, dst, n);
        ring_recv_commit(&self->ch, &held.msg, NULL);
    } else {
        Py_BEGIN_ALLOW_THREADS
        ring_recv_read(&self->ch, &held.msg, offset, dst, n);
        ring_recv_commit(&self->ch, &held.msg, NULL);
        Py_END_ALLOW_THREADS
    }
    unpin(self, held.pin);
    /* Consumed: from here on a failure (unpickling) loses the message, as
       the exception says. */
    result = pyshm_frame_unpickle(st, &in, target);
    pyshm_frame_in_release(&in);
    Py_DECREF(target);
    return result;
}

/* ---- loans ------------------------------------------------------------------ */

/* A slow_op: wait until the loan fits.  As wait_message_op, the send lock
   is taken and let go on the way: nothing is held on return (a padding
   record the wait laid for receivers to clear stays published). */
static shm_status
wait_room_op(ChannelObject *self, void *arg, ring_wait *w, shm_error *err)
{
    pyshm_loan *loan = (pyshm_loan *)arg;
    shm_status status;

    status = ring_reserve(&self->ch, loan->len, w, &loan->loan, err);
    if (status == SHM_OK)
        ring_reserve_abort(&self->ch);
    return status;
}

/* The send side of pyshm_channel_loan_begin: wait for room and reserve. */
static int
begin_reserve(ChannelObject *self, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    double seconds;
    int forever, raised;
    ring_wait w;
    shm_error err;
    shm_status status;

    if (pyshm_timeout_arg(timeout, &seconds, &forever) < 0)
        return -1;
    loan->len = size;
    status = ring_reserve(&self->ch, size, NULL, &loan->loan, &err);
    if (status == SHM_ETIMEOUT) {
        w = ring_wait_until(deadline_for(forever, seconds));
        for (;;) {
            status = run_slow(self, wait_room_op, loan, &w, &err, &raised);
            if (raised)
                return -1;
            if (status != SHM_OK)
                break;
            /* It fits now; signals and close() first, as in begin_recv. */
            if (PyErr_CheckSignals() < 0 || check_open(self) < 0)
                return -1;
            status = ring_reserve(&self->ch, size, NULL, &loan->loan, &err);
            if (status != SHM_ETIMEOUT)
                break;
            /* Another sender was quicker (or holds the lock): wait again. */
        }
    }
    if (status != SHM_OK) {
        raise_status(self, &err);
        return -1;
    }
    loan->data = loan->loan.data;
    return 0;
}

/* The receive side: wait for a message and find it in place, or (straddling
   the ring's end) copy it once into private memory. */
static int
begin_view(ChannelObject *self, pyshm_loan *loan, PyObject *timeout)
{
    const unsigned char *place;
    held_msg held;

    if (begin_recv(self, timeout, &held) < 0)
        return -1;
    /* The loan's own pin (pyshm_channel_loan_begin) keeps the mapping. */
    unpin(self, held.pin);
    loan->msg = held.msg;
    loan->len = loan->msg.len;
    place = ring_recv_data(&self->ch, &loan->msg);
    if (place != NULL) {
        loan->data = (unsigned char *)place;
        return 0;
    }
    loan->copy = PyMem_RawMalloc(loan->len);
    if (loan->copy == NULL) {
        ring_recv_abort(&self->ch);
        PyErr_NoMemory();
        return -1;
    }
    if (loan->len < PYSHM_NOGIL_COPY_MIN) {
        ring_recv_read(&self->ch, &loan->msg, 0, loan->copy, loan->len);
    } else {
        Py_BEGIN_ALLOW_THREADS
        ring_recv_read(&self->ch, &loan->msg, 0, loan->copy, loan->len);
        Py_END_ALLOW_THREADS
    }
    loan->data = loan->copy;
    return 0;
}

int
pyshm_channel_loan_begin(PyObject *channel, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    ChannelObject *self = (ChannelObject *)channel;
    pyshm_state *st = state_of(self);
    int side = loan->side, rc;
    PyObject *owner;

    loan->data = NULL;
    loan->copy = NULL;
    if (check_open(self) < 0 ||
        check_side(self, side, side == PYSHM_SEND ? "reserve()" : "recv_view()") < 0)
        return -1;
    owner = pyshm_thread_mark(st);
    if (owner == NULL)
        return -1;
    /* The loan's own pin, taken before the wait: another thread's close()
       never unmaps while this one holds the lock. */
    loan->pin = pin(self);
    rc = side == PYSHM_SEND ? begin_reserve(self, loan, size, timeout)
                            : begin_view(self, loan, timeout);
    if (rc == 0 && self->closed) {
        /* Closed by another thread while this one waited: nothing taken. */
        if (side == PYSHM_SEND)
            ring_reserve_abort(&self->ch);
        else
            ring_recv_abort(&self->ch);
        PyMem_RawFree(loan->copy);
        loan->copy = NULL;
        loan->data = NULL;
        (void)check_open(self);
        rc = -1;
    }
    if (rc < 0) {
        unpin(self, loan->pin);
        Py_DECREF(owner);
        return -1;
    }
    loan->owner = owner;
    loan->channel = channel;
    loan->state = PYSHM_LOAN_HELD;
    loan->refused = 0;
    loan->forked = 0;
    loan->retiring = 0;
    loan->priv.at = loan->priv.copy = NULL;
    loan->priv.size = 0;
    loan_link(st, loan);
    self->held[side]++;
    return 0;
}

void
pyshm_channel_loan_end(PyObject *channel, pyshm_loan *loan, int commit)
{
    ChannelObject *self = (ChannelObject *)channel;
    pyshm_state *st = state_of(self);
    int state = loan->state;

    if (state == PYSHM_LOAN_IDLE)
        return;
    after_fork(self);       /* a HELD loan of the parent is not ours (fork_loans) */
    loan_unlink(st, loan);
    loan->state = PYSHM_LOAN_IDLE;
    if (state == PYSHM_LOAN_HELD && loan->pin == self->fork_generation) {
        /* Ours, pinned: the ring is attached. */
        if (loan->side == PYSHM_SEND) {
            if (commit)
                ring_reserve_commit(&self->ch, &loan->loan, RING_KIND_BYTES);
            else
                ring_reserve_abort(&self->ch);
        } else {
            if (commit)
                ring_recv_commit(&self->ch, &loan->msg, NULL);
            else
                ring_recv_abort(&self->ch);
        }
        self->held[loan->side]--;
    }
    if (state == PYSHM_LOAN_CARVED)
        release_private(st, loan);
    else
        shm_private_free(&loan->priv);  /* a copy made for a fork in progress */
    PyMem_RawFree(loan->copy);
    loan->copy = NULL;
    loan->data = NULL;
    Py_CLEAR(loan->owner);
    if (state == PYSHM_LOAN_HELD || state == PYSHM_LOAN_INHERITED)
        unpin(self, loan->pin);     /* a token from before a fork lowers nothing */
}

PyDoc_STRVAR(reserve_doc,
"reserve($self, size, timeout=None)\n"
"--\n\n"
"A loan of SIZE bytes inside the ring, for a with statement:\n\n"
"    with ch.reserve(size) as buf:   # a writable memoryview, in place\n"
"        buf[:] = ...                # (old contents: not zeroed)\n\n"
"The message is published when the block ends normally and never seen\n"
"when it raises.  Entering waits for room (TIMEOUT as for send()) and holds\n"
"the channel's send lock until the block ends: other senders wait.  The\n"
"memoryview is released at the end; BufferError there if other exports of\n"
"it (NumPy arrays, slices) are still alive.  ValueError for SIZE < 0 or >\n"
"max_message_size.");

static PyObject *
Channel_reserve(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"size", "timeout", NULL};
    PyObject *argv[2];
    Py_ssize_t size;
    double seconds;
    int forever;
    uint64_t max;

    if (pyshm_parse_args("reserve", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (pyshm_ssize_arg(argv[0], "reserve(): size", 0, &size) < 0)
        return NULL;
    max = ring_max_message(self->ch.capacity);
    if ((uint64_t)size > max) {
        PyErr_Format(PyExc_ValueError,
                     "reserve(): %zd bytes is more than this channel can hold "
                     "(max_message_size is %llu)", size, (unsigned long long)max);
        return NULL;
    }
    if (pyshm_timeout_arg(argv[1], &seconds, &forever) < 0)
        return NULL;
    return pyshm_loan_new(self->st, (PyObject *)self,
                          PYSHM_SEND, (size_t)size, argv[1]);
}

PyDoc_STRVAR(recv_view_doc,
"recv_view($self, timeout=None)\n"
"--\n\n"
"A loan of the next message, for a with statement:\n\n"
"    with ch.recv_view() as view:    # a read-only memoryview, in place\n"
"        total = sum(view)\n\n"
"No copy: the view is the message inside the ring (a message from send()\n"
"that straddles the ring's end is copied once; loans never straddle it).\n"
"It is consumed when the block ends normally and stays queued when it\n"
"raises.  Entering waits (TIMEOUT as for recv()) and holds the channel's\n"
"receive lock until the block ends: other receivers wait.  The view is\n"
"released at the end; BufferError there if other exports of it (NumPy\n"
"arrays, slices) are still alive.");

static PyObject *
Channel_recv_view(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *argv[1];
    double seconds;
    int forever;

    if (pyshm_parse_args("recv_view", args, nargs, kwnames, names, 1, 0, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (pyshm_timeout_arg(argv[0], &seconds, &forever) < 0)
        return NULL;
    return pyshm_loan_new(self->st, (PyObject *)self,
                          PYSHM_RECV, 0, argv[0]);
}

/* ---- readiness (binding/ready.c) ------------------------------------------------ */

PyDoc_STRVAR(fileno_doc,
"fileno($self)\n"
"--\n\n"
"A descriptor that becomes readable when a message may be queued, for\n"
"selectors, trio, Qt and other event loops (Windows: a socket; see also\n"
"wait_handle).  After it is readable, take messages with timeout=0 until\n"
"TimeoutError, then wait on it again: that TimeoutError arms it anew.\n"
"Readiness is a hint (another receiver may have been quicker).  The\n"
"descriptor belongs to the channel: close() closes it.");

static PyObject *
Channel_fileno(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return pyshm_ready_fileno((PyObject *)self, &self->rd, &self->ch);
}

static PyObject *
Channel_arm(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (check_open(self) < 0)
        return NULL;
    return pyshm_ready_arm((PyObject *)self, &self->rd, &self->ch, args, nargs, kwnames);
}

static PyObject *
Channel_take(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    return pyshm_ready_take((PyObject *)self, &self->rd);
}

static PyObject *
Channel_disarm(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    return pyshm_ready_disarm((PyObject *)self, &self->rd);
}

static PyObject *
Channel_hold(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return pyshm_ready_hold((PyObject *)self, &self->rd, &self->ch);
}

static PyObject *
Channel_release(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    return pyshm_ready_release((PyObject *)self, &self->rd);
}

int
pyshm_channel_wait_begin(PyObject *obj, ring_t **ch, pyshm_readiness **rd, uint64_t *token)
{
    ChannelObject *self = (ChannelObject *)obj;
    pyshm_state *st = pyshm_state_from_type(Py_TYPE(obj));

    if (st == NULL || !PyObject_TypeCheck(obj, st->Channel_type)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "pyshm.wait(): %R is not a pyshm Channel", obj);
        return -1;
    }
    if (check_open(self) < 0)
        return -1;
    *ch = &self->ch;
    *rd = &self->rd;
    *token = pin(self);
    return 0;
}

void
pyshm_channel_wait_end(PyObject *obj, uint64_t token)
{
    unpin((ChannelObject *)obj, token);
}

int
pyshm_channel_is_closed(PyObject *obj)
{
    return ((ChannelObject *)obj)->closed;
}

/* ---- close, unlink, context manager ---------------------------------------- */

PyDoc_STRVAR(close_doc,
"close($self)\n"
"--\n\n"
"Detach from the channel and unmap it; the name stays (see unlink()).\n"
"Idempotent.  Sends and receives blocked in other threads of this process\n"
"end with ValueError; the mapping is released when the last one has left.");

static PyObject *
Channel_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    after_fork(self);       /* in a fork child: no pins, and a deferred unmap done */
    if (self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    /* Async waiters and pyshm.wait see the close (their watches point into
       the mapping: disarmed before it can go). */
    pyshm_readiness_closed(&self->rd);
    if (self->inflight > 0)
        ring_cancel(&self->ch);     /* they leave; the last one unmaps */
    /* Loans of threads that are gone end now (or become refused ones). */
    reap_abandoned(state_of(self));
    /* Now, or when the last operation leaves: refused loans end, the
       mapping goes (see settle). */
    settle(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(unlink_doc,
"unlink($self)\n"
"--\n\n"
"Remove the channel's name (POSIX) so no one else can open it; processes\n"
"attached keep working until they close.  Allowed after close().  On\n"
"Windows the name and its wait objects die with the last handle and this\n"
"does nothing.");

static PyObject *
Channel_unlink(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->name == NULL) {
        (void)check_open(self);     /* "__init__ has not run" */
        return NULL;
    }
    return pyshm_unlink_name(self->st, self->name);
}

static PyObject *
Channel_enter(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *
Channel_exit(ChannelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return Channel_close(self, NULL);
}

PyDoc_STRVAR(reduce_doc,
"__reduce__($self, /)\n"
"--\n\n"
"Pickle by name (and spin=False when set): the receiving process opens the\n"
"same channel, as multiprocessing does with arguments under 'spawn'.");

static PyObject *
Channel_reduce(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *kwargs, *result;

    if (check_open(self) < 0)
        return NULL;
    if (self->spin)
        return pyshm_reduce_by_name((PyObject *)self, self->name, NULL);
    kwargs = Py_BuildValue("{sO}", "spin", Py_False);
    if (kwargs == NULL)
        return NULL;
    result = pyshm_reduce_by_name((PyObject *)self, self->name, kwargs);
    Py_DECREF(kwargs);
    return result;
}

static PyMethodDef Channel_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Channel_send, METH_FASTCALL | METH_KEYWORDS,
     send_doc},
    {"recv", (PyCFunction)(void (*)(void))Channel_recv, METH_FASTCALL | METH_KEYWORDS,
     recv_doc},
    {"recv_into", (PyCFunction)(void (*)(void))Channel_recv_into,
     METH_FASTCALL | METH_KEYWORDS, recv_into_doc},
    {"send_obj", (PyCFunction)(void (*)(void))Channel_send_obj,
     METH_FASTCALL | METH_KEYWORDS, send_obj_doc},
    {"recv_obj", (PyCFunction)(void (*)(void))Channel_recv_obj,
     METH_FASTCALL | METH_KEYWORDS, recv_obj_doc},
    {"reserve", (PyCFunction)(void (*)(void))Channel_reserve,
     METH_FASTCALL | METH_KEYWORDS, reserve_doc},
    {"recv_view", (PyCFunction)(void (*)(void))Channel_recv_view,
     METH_FASTCALL | METH_KEYWORDS, recv_view_doc},
    {"close", (PyCFunction)Channel_close, METH_NOARGS, close_doc},
    {"unlink", (PyCFunction)Channel_unlink, METH_NOARGS, unlink_doc},
    {"__enter__", (PyCFunction)Channel_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Channel_exit, METH_FASTCALL, NULL},
    {"__reduce__", (PyCFunction)Channel_reduce, METH_NOARGS, reduce_doc},
    {"fileno", (PyCFunction)Channel_fileno, METH_NOARGS, fileno_doc},
    /* pyshm.asyncio's (binding/ready.c says what each does) */
    {"_arm", (PyCFunction)(void (*)(void))Channel_arm, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"_take", (PyCFunction)Channel_take, METH_NOARGS, NULL},
    {"_disarm", (PyCFunction)Channel_disarm, METH_NOARGS, NULL},
    {"_hold", (PyCFunction)Channel_hold, METH_NOARGS, NULL},
    {"_release", (PyCFunction)Channel_release, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ------------------------------------------------------------- */

static PyObject *
Channel_get_name(ChannelObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->name ? self->name : Py_None);
}

/* capacity and max_message_size stay readable after close(), as the
   standard library's SharedMemory.size does. */
static PyObject *
Channel_get_capacity(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->capacity);
}

static PyObject *
Channel_get_max_message_size(ChannelObject *self, void *Py_UNUSED(closure))
{
    if (self->capacity == 0)    /* never opened */
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong((unsigned long long)ring_max_message(self->capacity));
}

/* queued and messages: COUNT's snapshot, or ProtocolError when the cursors
   (shared memory) make no sense. */
static PyObject *
get_count(ChannelObject *self, uint64_t (*count)(const ring_t *))
{
    uint64_t n;

    if (check_open(self) < 0)
        return NULL;
    n = count(&self->ch);
    if (n == UINT64_MAX) {
        PyErr_Format(self->st->ProtocolError,
                     "%R: channel cursors are corrupt (header overwritten?)", self->name);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong((unsigned long long)n);
}

static PyObject *
Channel_get_queued(ChannelObject *self, void *Py_UNUSED(closure))
{
    return get_count(self, ring_queued);
}

static PyObject *
Channel_get_messages(ChannelObject *self, void *Py_UNUSED(closure))
{
    return get_count(self, ring_messages);
}

static PyObject *
Channel_get_creator_pid(ChannelObject *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong((unsigned long)ring_creator_pid(&self->ch));
}

static PyObject *
Channel_get_spin(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->spin);
}

static PyObject *
Channel_get_closed(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
Channel_get_wait_handle(ChannelObject *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return pyshm_ready_handle((PyObject *)self, &self->rd, &self->ch);
}

static PyObject *
Channel_get_ready_engine(ChannelObject *self, void *Py_UNUSED(closure))
{
    return pyshm_ready_engine(&self->rd);
}

static PyGetSetDef Channel_getset[] = {
    {"name", (getter)Channel_get_name, NULL,
     "The channel's segment name, without the leading '/' on POSIX.", NULL},
    {"capacity", (getter)Channel_get_capacity, NULL,
     "Bytes in the ring (the requested capacity rounded up to a multiple of 8;\n"
     "an opened channel reports its creator's).  Still readable after close().", NULL},
    {"max_message_size", (getter)Channel_get_max_message_size, NULL,
     "The largest message that fits: capacity - 8 (each message costs an 8-byte\n"
     "length word and padding to a multiple of 8 in the ring).", NULL},
    {"queued", (getter)Channel_get_queued, NULL,
     "Bytes queued in the ring right now (records with their length words and\n"
     "padding); a snapshot that other processes may change at once.", NULL},
    {"messages", (getter)Channel_get_messages, NULL,
     "Messages queued right now; a snapshot, like queued.  0 when queued is 0\n"
     "or holds only the padding a loan laid before the ring's end.  A peer killed in the instant between moving a cursor and\n"
     "counting leaves it one off from then on while messages are queued.", NULL},
    {"creator_pid", (getter)Channel_get_creator_pid, NULL,
     "Process id of the process that created the channel (recorded in the\n"
     "header; it may have exited since).", NULL},
    {"spin", (getter)Channel_get_spin, NULL,
     "This object's wait policy: True (the default) spins briefly, adaptively,\n"
     "before blocking -- the lowest latency; False blocks at once -- the least\n"
     "CPU while waiting.  Per object, not shared: each process picks its own.", NULL},
    {"closed", (getter)Channel_get_closed, NULL, "True once close() has run.", NULL},
    {"wait_handle", (getter)Channel_get_wait_handle, NULL,
     "Windows: an event HANDLE (an int) that is signalled when a message may be\n"
     "queued, for WaitForMultipleObjects and loops that wait on handles; the\n"
     "protocol of fileno() applies (take with timeout=0 until TimeoutError, then\n"
     "wait again).  POSIX: the descriptor of fileno().", NULL},
    {"_ready_engine", (getter)Channel_get_ready_engine, NULL,
     "Private: which readiness engine serves this object (None before its first\n"
     "use): 'io_uring', 'thread' or 'threadpool' (platform/ready.h).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Channel_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ChannelObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
Channel_repr(ChannelObject *self)
{
    uint64_t queued;

    if (self->name == NULL)
        return PyUnicode_FromFormat("<%s not opened>", Py_TYPE(self)->tp_name);
    if (self->closed)
        return PyUnicode_FromFormat("<pyshm.Channel name=%R closed>", self->name);
    queued = ring_queued(&self->ch);
    if (queued == UINT64_MAX)
        return PyUnicode_FromFormat("<pyshm.Channel name=%R capacity=%llu corrupt cursors>",
                                    self->name, (unsigned long long)self->ch.capacity);
    return PyUnicode_FromFormat("<pyshm.Channel name=%R capacity=%llu queued=%llu wait=%s%s>",
                                self->name, (unsigned long long)self->ch.capacity,
                                (unsigned long long)queued, sync_kind_name(),
                                self->spin ? "" : " spin=False");
}

/* ---- module functions ------------------------------------------------------- */

PyDoc_STRVAR(channel_users_doc,
"_channel_users(name, /)\n"
"--\n\n"
"Private (the CLI's `rm --stale`): how many Channel objects, in any process\n"
"and any PID namespace, have channel NAME open right now -- the liveness\n"
"slots held on its file; a snapshot.  None when this build cannot tell\n"
"(the fallback's locks, Windows).  Opens NAME read-only and attaches\n"
"nothing: OSError as opening would raise it, pyshm.ProtocolError when NAME\n"
"is not a channel of this build.");

static PyObject *
channel_users(PyObject *module, PyObject *name)
{
    pyshm_state *st = pyshm_get_state(module);
    pyshm_name cname;
    shm_segment seg;
    shm_error err;
    shm_status status;
    long users = -1;

    if (pyshm_name_from_object(name, &cname) < 0)
        return NULL;
    shm_segment_init(&seg);
    seg.keep_fd = 1;        /* the slots are locks on the file (POSIX) */
    Py_BEGIN_ALLOW_THREADS
    /* No hooks: a segment still of size 0 is not waited for. */
    status = shm_segment_open_ex(&seg, cname.chars, 1, NULL, &err);
    if (status == SHM_OK)
        status = ring_users(&seg, &users, &err);
    shm_segment_close(&seg);
    Py_END_ALLOW_THREADS
    pyshm_name_release(&cname);
    if (status != SHM_OK)
        return pyshm_raise(st, &err, name);
    if (users < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(users);
}

static PyMethodDef channel_functions[] = {
    {"_channel_users", (PyCFunction)channel_users, METH_O, channel_users_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- type ------------------------------------------------------------------- */

PyDoc_STRVAR(Channel_doc,
"Channel(name=None, create=False, capacity=1048576, *, exist_ok=False, "
"mode=_DEFAULT_MODE, track=False, spin=True)\n"
"--\n\n"
"A message channel between processes: a ring of CAPACITY bytes in the named\n"
"shared-memory segment NAME.  Any number of processes may send and receive;\n"
"each message is delivered whole, once, in the order each sender sent it.\n\n"
"create=True makes a new channel (FileExistsError if the name is taken,\n"
"unless exist_ok=True, which opens and checks the existing one: a CAPACITY\n"
"given must be its capacity, once rounded, or ValueError and nothing\n"
"changes; not given, its capacity wins); without it an existing channel is\n"
"opened (FileNotFoundError if none; pyshm.ProtocolError if the segment is\n"
"not a channel).  name=None with create=True picks a short random name.\n"
"Messages may be 0 to max_message_size (capacity - 8) bytes.  MODE: the POSIX\n"
"permission bits of a new channel (0o600, owner only).  track=True: the\n"
"channel this call creates is removed when this process exits without\n"
"unlink(), even if it is killed (as for SharedMemory).  spin=False: this\n"
"object's waits block at once instead of spinning first (less CPU, slower\n"
"wake-ups; see the spin attribute).  A Channel pickles by name: the\n"
"receiving process opens the same channel.");

static PyType_Slot Channel_slots[] = {
    {Py_tp_new, Channel_new},
    {Py_tp_init, Channel_init},
    {Py_tp_dealloc, Channel_dealloc},
    {Py_tp_traverse, Channel_traverse},
    {Py_tp_repr, Channel_repr},
    {Py_tp_methods, Channel_methods},
    {Py_tp_getset, Channel_getset},
    {Py_tp_members, Channel_members},
    {Py_tp_doc, (void *)Channel_doc},
    {0, NULL},
};

static PyType_Spec Channel_spec = {
    .name = "pyshm.Channel",
    .basicsize = sizeof(ChannelObject),
    /* Subclassable like SharedMemory; GC-tracked so that subclass instances
       with a __dict__ in a cycle are collected. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_HAVE_GC,
    .slots = Channel_slots,
};

int
pyshm_channel_exec(PyObject *module, pyshm_state *st)
{
    st->Channel_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Channel_spec, NULL);
    if (st->Channel_type == NULL)
        return -1;
    if (PyModule_AddType(module, st->Channel_type) < 0)
        return -1;
    if (PyModule_AddFunctions(module, channel_functions) < 0)
        return -1;
    /* The first four bytes of every channel (native byte order): tools tell
       channels from raw segments by them without opening either. */
    if (PyModule_AddIntConstant(module, "_CHANNEL_MAGIC", (long)RING_MAGIC) < 0)
        return -1;
    /* Which wait/lock scheme this build uses ("futex", "fallback", "win32"). */
    return PyModule_AddStringConstant(module, "CHANNEL_WAIT", sync_kind_name());
}
