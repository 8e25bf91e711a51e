/*
 * binding/named.c -- the lifecycle every named pyshm object shares
 * (SharedMemory, Channel, Slot), written once: the object head
 * pyshm_named, and each type passes its few hooks (pyshm_kind, binding.h).
 *
 * Owns: pyshm_named_* (new, open by name with wait=, the exist_ok and
 * track= steps, close, dealloc, unlink, the context manager, pickling by
 * name, repr, the name and closed attributes), pins and the fork
 * generation (pyshm_pin/pyshm_unpin, pyshm_named_after_fork), the
 * unlocked-call loop with its signal checks (pyshm_run_unlocked), and the
 * loans' life with their object (pyshm_loan_begin/end, settle/retire at
 * close(), the fork handlers' parts).
 * May include: binding/binding.h, platform/pages.h (a loan's pages made
 * private, a second mapping), platform/sync.h (the clock), the C library.
 *
 * A type's file then holds only its own protocol: SharedMemory its copies
 * and buffer exports, Channel the ring's calls, Slot the slot's.
 *
 * Readiness (binding/ready.c: fileno(), pyshm.asyncio, pyshm.wait) lives in
 * the head too (pyshm_named.rd); this file ends it with the object: close()
 * disarms it before the mapping can go, a fork child forgets the parent's,
 * deallocation closes it.
 *
 * Pins (binding.h, pyshm_named): close() marks the object closed; the
 * last unpin unmaps.  Anything that holds the segment across Python code
 * (a loan, a held message) pins at its start and unpins at its end, and
 * must not touch the segment after its unpin.
 *
 * wait= (pyshm_named_open): a name that does not exist yet is looked for
 * again, sleeping between looks (1 ms, doubling to WAIT_PAUSE_MAX_NS: a
 * name that appears is seen soon, a long wait costs a few wake-ups a
 * second), without the GIL and with the signal handlers run after each
 * sleep (Ctrl-C ends it).  A name that exists but is not whole yet -- a
 * raw segment of size 0, or a channel or slot whose magic is not there --
 * is waited for within the same time, as a creator that does not publish
 * whole is waited for without wait=.  When the time is up the last answer
 * stands: FileNotFoundError saying how long it waited, or what opening the
 * half-made object says.
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
 * (pyshm_run_unlocked) or by close().  Each loan keeps its own pin and
 * owner, so two threads taking loans of one object (one waits for the
 * other's lock) never mix them up.
 *
 * close() and loans.  A loan still in its block keeps working after close()
 * (its pin keeps the mapping; it publishes or consumes when it ends).  A
 * loan whose block is over but whose memory is still exported (refused,
 * see loan_type.c) ends at close() at the latest: once no other operation
 * runs in the mapping (settle()), its pages are made a private copy in
 * place and then its lock is let go (retire()), so that its exports stay
 * valid memory but can no longer write into space that other writers
 * reuse, nor show what they write there.  Where the platform cannot do
 * that (no mremap: Windows, other POSIX systems) the loan keeps its lock
 * until its exports are released.
 *
 * Fork.  Loans do not cross fork(): in a child, every loan the parent held
 * is dead.  The fork handler (pyshm_named_after_fork_child, run before any
 * code of the child) makes each one's pages a private copy as above and
 * moves its object onto a fresh mapping of the segment, so that the
 * child's views of the parent's loan neither write into the parent's
 * message or value nor break the child's own use of the object; the lock
 * stays the parent's.  Ending such a loan in the child (its block, its
 * views, its Loan freed, close(), the object freed) never touches the
 * segment.
 */
#include "binding/binding.h"
#include "platform/pages.h"     /* a retired loan's private pages, a second mapping */
#include "platform/sync.h"      /* sync_now_ns: deadlines */

#include <errno.h>      /* ENOENT: FileNotFoundError after a wait, on every platform */
#include <math.h>       /* floor */
#include <stddef.h>     /* offsetof */
#include <string.h>     /* memset */

/* wait=: the longest sleep between two looks for a name. */
#define WAIT_PAUSE_MIN_NS ((int64_t)1000000)
#define WAIT_PAUSE_MAX_NS ((int64_t)20000000)

/* Detach and unmap (without the GIL); only when no pin is out. */
static void
release_mapping(pyshm_named *self)
{
    if (self->kind->detach != NULL && self->seg.addr != NULL)
        self->kind->detach(self);
    pyshm_unmap(&self->seg);
}

PyObject *
pyshm_named_raise(pyshm_named *self, const shm_error *err)
{
    return pyshm_raise(self->st, err, self->name);
}

int
pyshm_named_check_open(pyshm_named *self)
{
    if (self->closed) {
        PyErr_Format(PyExc_ValueError, self->name == NULL
                     ? "operation on a %s whose __init__ has not run"
                     : "operation on a closed %s", self->kind->type_name);
        return -1;
    }
    return 0;
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

/* The loan's memory is in the segment (not empty): what retire() must
   make private. */
static int
in_segment(const pyshm_loan *l)
{
    return l->len > 0 && l->data != NULL;
}

/* The whole pages L's views point into, when they are pages of a mapping:
   its private copy (CARVED), or the segment's pages under it (HELD,
   INHERITED).  0 when it has none. */
static int
loan_span(const pyshm_loan *l, shm_private *span)
{
    size_t page = shm_page_size();
    uintptr_t start, end;

    if (l->state == PYSHM_LOAN_CARVED) {
        *span = l->priv;
        return l->priv.at != NULL;
    }
    if ((l->state != PYSHM_LOAN_HELD && l->state != PYSHM_LOAN_INHERITED) || !in_segment(l))
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
 * Make the loans of this object marked RETIRING let go of the segment (see
 * the top of this file).  Their pages -- for those whose memory is in the
 * segment -- become private copies in place, and the object goes on
 * through a second mapping of its segment (kind->rebase); the first
 * mapping is then unmapped except those pages.
 *
 * CLOSING (close(), the loans are this process's): the copies are made
 * now, while their locks are still held, so nothing can have changed what
 * they copy; the locks are let go afterwards, through the second mapping.
 * Otherwise (a fork child) the copies were made in the parent before the
 * fork (pyshm_named_before_fork), while it held the locks -- a copy made
 * here could see space the parent has already given back -- and the locks
 * stay the parent's; a loan without one is not retired.
 *
 * Each loan that made it is CARVED (and, when CLOSING, no longer counted
 * as held or pinned); one that did not (no mremap, no memory, no copy)
 * stays as it was and keeps RETIRING for the caller to see.  With the GIL,
 * and only while nothing runs in the segment through this object's mapping.
 */
static void
retire(pyshm_named *self, int closing)
{
    pyshm_state *st = self->st;
    pyshm_loan *l;
    shm_error err;
    void *old = self->seg.addr, *again = NULL;
    int paged = 0;

#define RETIRING(l) ((l)->retiring && (l)->named == (PyObject *)self)
    /* 1. The copies.  Nothing has changed yet if one fails. */
    for (l = st->loans; l != NULL; l = l->next) {
        if (!RETIRING(l) || !in_segment(l))
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
        /* 2. The object goes on (is unlocked, for close()) through a second
           mapping: the first one's pages under the loans -- and perhaps the
           header's, which may share its page with them -- are about to stop
           being shared. */
        if (shm_pages_share_again(old, self->seg.size, &again, &err) != SHM_OK)
            goto undo;
        self->kind->rebase(self, again);
        self->seg.addr = again;
        /* 3. The copies in place, each in one step. */
        for (l = st->loans; l != NULL; l = l->next) {
            if (!RETIRING(l) || !in_segment(l) || l->priv.copy == NULL)
                continue;
            if (shm_private_put(&l->priv, &err) != SHM_OK)
                shm_private_free(&l->priv);     /* this one keeps the shared pages */
        }
    }
    /* 4. Let go of the segment. */
    for (l = st->loans; l != NULL; l = l->next) {
        if (!RETIRING(l) || (in_segment(l) && l->priv.at == NULL))
            continue;
        if (closing) {
            self->kind->loan_end(self, l, 0);
            self->held[l->side]--;
            self->pins--;       /* its pin (the caller settles) */
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
 * and puts them in place (pyshm_named_after_fork_child), the parent drops
 * them.  A loan whose copy cannot be made stays shared in the child
 * (INHERITED).
 */
void
pyshm_named_before_fork(pyshm_state *st)
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
            in_segment(l) && l->priv.copy == NULL)
            (void)shm_private_copy(&l->priv, l->data, l->len, &err);
    }
}

void
pyshm_named_after_fork_parent(pyshm_state *st)
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

/* The forked part of pyshm_named_after_fork(): the parent's loans of this
   object, dead here (binding.h); their pins went with the parent's counts. */
static void
fork_loans(pyshm_named *self)
{
    pyshm_state *st = self->st;
    pyshm_loan *l;
    int any = 0;

    for (l = st->loans; l != NULL; l = l->next) {
        if (l->named == (PyObject *)self && l->pin != st->fork_generation &&
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
        if (l->named == (PyObject *)self && l->retiring) {
            /* No private copy: its views still show the shared segment, so
               the child's mapping stays until they are gone. */
            shm_private_free(&l->priv);
            l->retiring = 0;
            l->state = PYSHM_LOAN_INHERITED;
            l->pin = st->fork_generation;
            self->pins++;
        }
    }
}

void
pyshm_named_after_fork(pyshm_named *self)
{
    if (self->st == NULL || self->fork_generation == self->st->fork_generation)
        return;
    self->fork_generation = self->st->fork_generation;
    self->pins = 0;
    memset(self->held, 0, sizeof self->held);
    pyshm_readiness_forked(&self->rd);     /* the parent's, untouched */
    fork_loans(self);
    if (self->closed && self->pins == 0 && self->seg.addr != NULL)
        release_mapping(self);
}

void
pyshm_named_after_fork_child(pyshm_state *st)
{
    pyshm_loan *l;

    st->forks = 0;      /* the forking threads of the parent are not here */
again:
    for (l = st->loans; l != NULL; l = l->next) {
        if (l->pin != st->fork_generation &&
            (l->state == PYSHM_LOAN_HELD || l->state == PYSHM_LOAN_INHERITED)) {
            /* Every loan of that object at once; then look again. */
            pyshm_named_after_fork((pyshm_named *)l->named);
            fork_loans((pyshm_named *)l->named);    /* if after_fork ran before */
            goto again;
        }
        if (l->state == PYSHM_LOAN_CARVED)
            l->forked = 1;      /* retired in the parent: dead here as well */
    }
}

/* ---- pins ------------------------------------------------------------------ */

uint64_t
pyshm_pin(pyshm_named *self)
{
    pyshm_named_after_fork(self);
    self->pins++;
    return self->fork_generation;
}

/*
 * After close(): once every pin still out belongs to a loan whose block is
 * over (refused: its exports alive), nothing runs in the mapping -- those
 * loans are retired (their locks let go) -- and then the mapping goes.  A
 * loan still in its block (or kept: see retire) keeps it.
 */
static void
settle(pyshm_named *self)
{
    pyshm_state *st = self->st;
    pyshm_loan *l;
    Py_ssize_t refused = 0;
    int other = 0;

    if (!self->closed || self->seg.addr == NULL)
        return;
    if (self->pins > 0) {
        for (l = st->loans; l != NULL; l = l->next) {
            if (l->named != (PyObject *)self || l->pin != self->fork_generation ||
                l->state != PYSHM_LOAN_HELD)
                continue;
            if (l->refused)
                refused++;
            else
                other = 1;
        }
        if (other || refused != self->pins)
            return;
        for (l = st->loans; l != NULL; l = l->next)
            if (l->named == (PyObject *)self && l->state == PYSHM_LOAN_HELD)
                l->retiring = 1;
        retire(self, 1);
        for (l = st->loans; l != NULL; l = l->next)
            l->retiring = 0;    /* those left keep their lock until their end */
        if (self->pins > 0)
            return;
    }
    release_mapping(self);
}

void
pyshm_unpin(pyshm_named *self, uint64_t token)
{
    pyshm_named_after_fork(self);
    if (token == self->fork_generation)
        self->pins--;
    settle(self);
}

/* ---- loans' owners ------------------------------------------------------------ */

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
held_loan(pyshm_named *self, int side)
{
    pyshm_loan *l;

    for (l = self->st->loans; l != NULL; l = l->next)
        if (l->named == (PyObject *)self && l->side == side &&
            l->state == PYSHM_LOAN_HELD && l->pin == self->fork_generation)
            return l;
    return NULL;
}

/* What the block of a loan of each side is called. */
static const char *const side_block[PYSHM_NSIDES] = {
    [PYSHM_SEND] = "reserve()",
    [PYSHM_RECV] = "recv_view()",
    [PYSHM_PUBLISH] = "reserve()",
};

int
pyshm_check_side(pyshm_named *self, int side, const char *fname)
{
    pyshm_loan *l;

    if (self->held[side] == 0)
        return 0;
    pyshm_named_after_fork(self);   /* a fork child's counts are the parent's until then */
    if (self->held[side] == 0)
        return 0;
    l = held_loan(self, side);
    if (l == NULL || !pyshm_thread_is(self->st, l->owner))
        return 0;
    PyErr_Format(PyExc_RuntimeError,
                 "%s inside a %s block of the same %s would wait for itself: "
                 "end the block first", fname, side_block[side], self->kind->what);
    return -1;
}

/* ---- calls without the GIL ---------------------------------------------------- */

int64_t
pyshm_deadline(int forever, double seconds)
{
    int64_t now;
    double ns;

    if (forever)
        return SYNC_FOREVER;
    now = sync_now_ns();
    if (seconds == 0.0)
        return now > 0 ? now : 1;
    ns = floor(seconds * 1e9);
    if (ns >= (double)(SYNC_FOREVER - now))
        return SYNC_FOREVER;
    return now + (int64_t)ns;
}

shm_status
pyshm_run_unlocked(pyshm_named *self, pyshm_op op, void *arg, shm_error *err, int *raised)
{
    shm_status status;
    uint64_t token;

    *raised = 0;
    for (;;) {
        /* A loan of this process whose thread is gone may hold the very
           lock this call is about to wait for. */
        reap_abandoned(self->st);
        if (pyshm_named_check_open(self) < 0) {
            *raised = 1;
            return SHM_EVALUE;
        }
        token = pyshm_pin(self);
        Py_BEGIN_ALLOW_THREADS
        status = op(self, arg, err);
        Py_END_ALLOW_THREADS
        pyshm_unpin(self, token);
        if (status != SHM_EINTR)
            return status;
        if (PyErr_CheckSignals() < 0 || pyshm_named_check_open(self) < 0) {
            *raised = 1;
            return status;
        }
    }
}

int
pyshm_take(pyshm_named *self, pyshm_op take, pyshm_op wait, void *arg)
{
    shm_error err;
    shm_status status = take(self, arg, &err);
    int raised;

    while (status == SHM_ETIMEOUT) {
        status = pyshm_run_unlocked(self, wait, arg, &err, &raised);
        if (raised)
            return -1;
        if (status != SHM_OK)
            break;
        /* There now.  Signals that came during the wait first, so that a
           handler that raises leaves it untaken; and close() may have run
           meanwhile. */
        if (PyErr_CheckSignals() < 0 || pyshm_named_check_open(self) < 0)
            return -1;
        status = take(self, arg, &err);
    }
    if (status != SHM_OK) {
        pyshm_named_raise(self, &err);
        return -1;
    }
    return 0;
}

/* ---- loans ------------------------------------------------------------------- */

int
pyshm_loan_begin(PyObject *named, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    pyshm_named *self = (pyshm_named *)named;
    pyshm_state *st = self->st;
    int side = loan->side, rc;
    PyObject *owner;

    loan->data = NULL;
    if (pyshm_named_check_open(self) < 0 || pyshm_check_side(self, side, side_block[side]) < 0)
        return -1;
    owner = pyshm_thread_mark(st);
    if (owner == NULL)
        return -1;
    /* The loan's own pin, taken before the wait: another thread's close()
       never unmaps while this one holds the lock. */
    loan->pin = pyshm_pin(self);
    rc = self->kind->loan_take(self, loan, size, timeout);
    if (rc == 0 && self->closed) {
        /* Closed by another thread while this one waited: nothing taken. */
        self->kind->loan_end(self, loan, 0);
        loan->data = NULL;
        (void)pyshm_named_check_open(self);
        rc = -1;
    }
    if (rc < 0) {
        pyshm_unpin(self, loan->pin);
        Py_DECREF(owner);
        return -1;
    }
    loan->owner = owner;
    loan->named = named;
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
pyshm_loan_end(PyObject *named, pyshm_loan *loan, int commit)
{
    pyshm_named *self = (pyshm_named *)named;
    pyshm_state *st = self->st;
    int state = loan->state;

    if (state == PYSHM_LOAN_IDLE)
        return;
    pyshm_named_after_fork(self);   /* a HELD loan of the parent is not ours (fork_loans) */
    loan_unlink(st, loan);
    loan->state = PYSHM_LOAN_IDLE;
    if (state == PYSHM_LOAN_HELD && loan->pin == self->fork_generation) {
        /* Ours, pinned: the segment is attached. */
        self->kind->loan_end(self, loan, commit);
        self->held[loan->side]--;
    }
    if (state == PYSHM_LOAN_CARVED)
        release_private(st, loan);
    else
        shm_private_free(&loan->priv);  /* a copy made for a fork in progress */
    loan->data = NULL;
    Py_CLEAR(loan->owner);
    if (state == PYSHM_LOAN_HELD || state == PYSHM_LOAN_INHERITED)
        pyshm_unpin(self, loan->pin);   /* a token from before a fork lowers nothing */
}

/* ---- opening by name, wait= ------------------------------------------------------- */

/* What open_named() needs (it runs without the GIL), gathered by
   pyshm_named_open. */
typedef struct {
    pyshm_named *self;
    int create;
    int readonly;
    int flags;
    int mode;
    uint64_t asked;         /* the format's size (kind->size_check) */
    int waiting;            /* wait= was given */
    int64_t wait_until;     /* then: when to stop looking (sync_now_ns) */
    int waited_out;         /* set when the name never came within the wait */
} open_request;

/* The format hook of a new segment (see shm_hooks). */
static shm_status
format_segment(void *arg, void *addr, size_t size, shm_error *err)
{
    open_request *r = (open_request *)arg;

    return r->self->kind->format(addr, size, r->asked, err);
}

/* How long an opener gives a segment to become whole (sized: a creator
   that does not publish whole, between its shm_open and its ftruncate;
   formatted: a channel or slot whose magic is not there yet).  Raw
   segments may come from another library, whose creator may show the name
   before the size; pyshm's own formats are published whole where the OS
   allows (shm_segment_appears_whole), and a zero there is final.  wait=
   stretches it to the time left. */
static int64_t
whole_wait_ns(const open_request *r)
{
    int64_t ns = r->self->kind->format != NULL && shm_segment_appears_whole()
                 ? 0 : SHM_CREATOR_WAIT_NS;
    int64_t left;

    if (r->waiting) {
        left = r->wait_until - sync_now_ns();
        if (left > ns)
            ns = left;
    }
    return ns;
}

/*
 * Wait, sleeping, until the opened segment of SELF is formatted or UNTIL
 * comes (kind->attach then judges what is there).  SHM_EINTR when a signal
 * handler raised.
 */
static shm_status
wait_for_format(pyshm_named *self, int64_t until, void *signals, shm_error *err)
{
    int64_t pause = 10000;

    while (!self->kind->formatted(self->seg.addr, self->seg.size) && sync_now_ns() < until) {
        shm_sleep_ns(pause);
        if (pyshm_interrupted(signals))     /* a signal may have come */
            return shm_fail(err, SHM_EINTR, "interrupted by a signal");
        pause = pause * 2 > 10000000 ? 10000000 : pause * 2;
    }
    return SHM_OK;
}

/*
 * Map NAME once -- create it (formatted before it is published, see
 * shm_hooks; with SHM_EXIST_OK an existing one is opened instead) or open
 * it, waiting for it to be whole -- and attach.  On failure nothing stays
 * mapped, and a name this call created is removed again.
 */
static shm_status
open_once(open_request *r, const shm_char *name, void *signals, shm_error *err)
{
    pyshm_named *self = r->self;
    const pyshm_kind *kind = self->kind;
    int64_t whole = whole_wait_ns(r);
    shm_hooks hooks = {kind->format != NULL ? format_segment : NULL, r, pyshm_interrupted,
                       signals, whole};
    shm_status status;

    /* The locks' liveness lives on the segment's file (kind->attach). */
    self->seg.keep_fd = kind->attach != NULL;
    if (r->create)
        status = shm_segment_create_ex(&self->seg, name, (size_t)kind->segment_size(r->asked),
                                       r->mode, r->flags, &hooks, err);
    else
        status = shm_segment_open_ex(&self->seg, name, r->readonly, &hooks, err);
    if (status == SHM_OK && !self->seg.created && kind->formatted != NULL && whole > 0)
        status = wait_for_format(self, sync_now_ns() + whole, signals, err);
    if (status == SHM_OK) {
        if (kind->attach != NULL)
            status = kind->attach(self, name, err);
        else
            self->size = (uint64_t)self->seg.size;
    }
    if (status != SHM_OK && self->seg.addr != NULL) {
        shm_error ignored;
        int created = self->seg.created;
        shm_segment_close(&self->seg);
        if (created)
            (void)shm_segment_unlink(name, &ignored);
    }
    return status;
}

/* A pyshm_open_fn (no GIL): open_once, and with wait= again while the name
   does not exist, sleeping between looks (see the top of this file). */
static shm_status
open_named(void *arg, const shm_char *name, void *signals, shm_error *err)
{
    open_request *r = (open_request *)arg;
    int64_t pause = WAIT_PAUSE_MIN_NS, now;
    shm_status status;

    for (;;) {
        status = open_once(r, name, signals, err);
        if (!r->waiting || status != SHM_EOS || err->os_code != PYSHM_OS_ENOENT)
            return status;
        now = sync_now_ns();
        if (now >= r->wait_until) {
            r->waited_out = 1;
            return status;
        }
        shm_sleep_ns(pause < r->wait_until - now ? pause : r->wait_until - now);
        if (pyshm_interrupted(signals))
            return shm_fail(err, SHM_EINTR, "interrupted by a signal");
        pause = pause * 2 > WAIT_PAUSE_MAX_NS ? WAIT_PAUSE_MAX_NS : pause * 2;
    }
}

/* The name never came within wait=SECONDS: FileNotFoundError saying so,
   in place of the OS's plain one. */
static void
raise_waited_out(pyshm_named *self, PyObject *name, PyObject *seconds)
{
    PyObject *message, *args;

    PyErr_Clear();
    message = PyUnicode_FromFormat("No such %s: the name did not appear within wait=%S "
                                   "seconds", self->kind->what, seconds);
    if (message == NULL)
        return;
    /* OSError picks FileNotFoundError by the errno, on every platform. */
    args = Py_BuildValue("(iOO)", ENOENT, message, name);
    Py_DECREF(message);
    if (args == NULL)
        return;
    PyErr_SetObject(PyExc_OSError, args);
    Py_DECREF(args);
}

int
pyshm_named_open(pyshm_named *self, const pyshm_open_args *a)
{
    const pyshm_kind *kind = self->kind;
    pyshm_state *st = self->st;
    Py_ssize_t given = kind->size_default;
    PyObject *name;
    double wait_s = 0.0;
    int forever = 1, mode = 0600;
    open_request r;

    if (st == NULL)
        return -1;
    if (self->name != NULL) {
        PyErr_Format(PyExc_TypeError, "%s %R is already initialised: __init__ opens a %s "
                     "once", kind->type_name, self->name, kind->what);
        return -1;
    }
    if (pyshm_name_arg(a->name, a->create, kind->what) < 0)
        return -1;
    if (a->size != NULL && pyshm_ssize_arg(a->size, kind->size_arg, 0, &given) < 0)
        return -1;
    if (kind->size_check(given, a->create, &r.asked) < 0)
        return -1;
    if (a->create && a->readonly) {
        PyErr_Format(PyExc_ValueError, "readonly=True is for opening: a new %s is created "
                     "writable", kind->what);
        return -1;
    }
    if (pyshm_mode_arg(a->mode, &mode) < 0)
        return -1;
    if (pyshm_seconds_arg(a->wait, "wait", &wait_s, &forever) < 0)
        return -1;
    r.waiting = a->wait != NULL && a->wait != Py_None;
    if (r.waiting && a->create) {
        PyErr_Format(PyExc_ValueError, "wait= is for opening a %s that may not exist yet: "
                     "with create=True there is nothing to wait for", kind->what);
        return -1;
    }

    r.self = self;
    r.create = a->create;
    r.readonly = a->readonly;
    /* exist_ok only for a given name: a random one that is taken is retried. */
    r.flags = a->exist_ok && a->name != Py_None ? SHM_EXIST_OK : 0;
    r.mode = mode;
    r.wait_until = r.waiting ? pyshm_deadline(forever, wait_s) : 0;
    r.waited_out = 0;
    name = pyshm_open_by_name(st, a->name, open_named, &r, kind->what);
    if (name == NULL) {
        if (r.waited_out && PyErr_ExceptionMatches(PyExc_FileNotFoundError))
            raise_waited_out(self, a->name, a->wait);
        return -1;
    }
    /* exist_ok: a raw size must be at least what was asked; a size that is
       part of a format must be the one given (not given: the existing
       one's wins). */
    if (a->create && !self->seg.created &&
        (kind->size_rule == PYSHM_AT_LEAST || a->size != NULL) &&
        pyshm_exist_ok_size(name, kind->what, kind->size_arg, kind->size_rule,
                            (uint64_t)given, r.asked, self->size) < 0) {
        release_mapping(self);      /* opened, not created: nothing to remove */
        Py_DECREF(name);
        return -1;
    }
    if (a->track && self->seg.created && pyshm_track_name(st, name) < 0) {
        release_mapping(self);      /* the name is gone again: nothing half-made */
        Py_DECREF(name);
        return -1;
    }
    self->name = name;
    self->closed = 0;
    return 0;
}

/* ---- object life ------------------------------------------------------------- */

PyObject *
pyshm_named_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    pyshm_state *st = pyshm_state_from_type(type);
    const pyshm_kind *kind = NULL;
    pyshm_named *self;
    int i;

    if (st == NULL)
        return NULL;
    /* TYPE is one of ours or a user's subclass of one. */
    for (i = 0; i < st->nkinds && kind == NULL; i++)
        if (PyType_IsSubtype(type, st->kinds[i].type))
            kind = st->kinds[i].kind;
    if (kind == NULL) {
        PyErr_Format(PyExc_TypeError, "'%s' is not a pyshm named type", type->tp_name);
        return NULL;
    }
    /* tp_alloc zeroes the object: the type's own fields are zero until
       kind->attach, which is what every one of them wants. */
    self = (pyshm_named *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->kind = kind;
    self->st = st;
    shm_segment_init(&self->seg);
    self->name = NULL;
    self->size = 0;
    self->pins = 0;
    self->closed = 1;       /* until a mapping is attached */
    memset(self->held, 0, sizeof self->held);
    self->fork_generation = st->fork_generation;
    memset(&self->rd, 0, sizeof self->rd);      /* no readiness until first needed */
    self->weakreflist = NULL;
    return (PyObject *)self;
}

int
pyshm_named_traverse(PyObject *obj, visitproc visit, void *arg)
{
    pyshm_named *self = (pyshm_named *)obj;

    Py_VISIT(Py_TYPE(obj));
    if (self->kind->traverse != NULL)
        return self->kind->traverse(self, visit, arg);
    return 0;
}

int
pyshm_named_clear(PyObject *obj)
{
    pyshm_named *self = (pyshm_named *)obj;

    if (self->kind->clear != NULL)
        self->kind->clear(self);
    return 0;
}

void
pyshm_named_dealloc(PyObject *obj)
{
    pyshm_named *self = (pyshm_named *)obj;
    PyTypeObject *tp = Py_TYPE(obj);

    PyObject_GC_UnTrack(obj);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs(obj);
    /* What the type holds for Python (a cached view, released here: were
       it alive it would hold a reference to us). */
    if (self->kind->clear != NULL)
        self->kind->clear(self);
    /* Readiness first: its watches point into the mapping.  In a fork
       child that never used the object, the parent's is left alone. */
    if (self->fork_generation != self->st->fork_generation)
        pyshm_readiness_forked(&self->rd);
    else
        pyshm_readiness_free(&self->rd);
    /* Running operations, exports and loans (held or not) hold a reference,
       so no pin is out and no loan keeps anything here. */
    release_mapping(self);
    Py_CLEAR(self->name);
    tp->tp_free(obj);
    Py_DECREF(tp);
}

PyObject *
pyshm_named_close(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_named *self = (pyshm_named *)obj;

    pyshm_named_after_fork(self);   /* in a fork child: no pins, a deferred unmap done */
    if (self->kind->closing != NULL && self->kind->closing(self) < 0)
        return NULL;
    if (self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    /* Async waiters and pyshm.wait see the close (readiness's watches point
       into the mapping: disarmed before it can go). */
    pyshm_readiness_closed(&self->rd);
    if (self->pins > 0 && self->kind->cancel != NULL)
        self->kind->cancel(self);   /* they leave; the last one unmaps */
    /* Loans of threads that are gone end now (or become refused ones). */
    reap_abandoned(self->st);
    /* Now, or when the last operation leaves: refused loans end, the
       mapping goes (see settle). */
    settle(self);
    Py_RETURN_NONE;
}

PyObject *
pyshm_named_unlink(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_named *self = (pyshm_named *)obj;

    if (self->name == NULL) {
        (void)pyshm_named_check_open(self);     /* "__init__ has not run" */
        return NULL;
    }
    return pyshm_unlink_name(self->st, self->name);
}

PyObject *
pyshm_named_enter(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    if (pyshm_named_check_open((pyshm_named *)obj) < 0)
        return NULL;
    return Py_NewRef(obj);
}

PyObject *
pyshm_named_exit(PyObject *obj, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return pyshm_named_close(obj, NULL);
}

PyObject *
pyshm_named_reduce(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_named *self = (pyshm_named *)obj;
    PyObject *kwargs = NULL, *result;

    if (pyshm_named_check_open(self) < 0)
        return NULL;
    if (self->kind->reduce_kwargs != NULL) {
        kwargs = self->kind->reduce_kwargs(self);
        if (kwargs == NULL && PyErr_Occurred())
            return NULL;
    }
    result = pyshm_reduce_by_name(obj, self->name, kwargs);
    Py_XDECREF(kwargs);
    return result;
}

PyObject *
pyshm_named_repr(PyObject *obj)
{
    pyshm_named *self = (pyshm_named *)obj;

    if (self->name == NULL)
        return PyUnicode_FromFormat("<%s not opened>", Py_TYPE(obj)->tp_name);
    if (self->closed)
        return PyUnicode_FromFormat("<pyshm.%s name=%R closed>", self->kind->type_name,
                                    self->name);
    return self->kind->repr(self);
}

PyObject *
pyshm_named_get_name(PyObject *obj, void *Py_UNUSED(closure))
{
    pyshm_named *self = (pyshm_named *)obj;

    return Py_NewRef(self->name ? self->name : Py_None);
}

PyObject *
pyshm_named_get_closed(PyObject *obj, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((pyshm_named *)obj)->closed);
}

PyMemberDef pyshm_named_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(pyshm_named, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

int
pyshm_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **type)
{
    *type = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*type == NULL)
        return -1;
    return PyModule_AddType(module, *type);
}

int
pyshm_add_named_type(PyObject *module, pyshm_state *st, PyType_Spec *spec,
                     const pyshm_kind *kind, PyTypeObject **type)
{
    if (st->nkinds == (int)(sizeof st->kinds / sizeof st->kinds[0])) {
        PyErr_SetString(PyExc_SystemError, "pyshm: more named types than kinds' room");
        return -1;
    }
    if (pyshm_add_type(module, spec, type) < 0)
        return -1;
    st->kinds[st->nkinds].type = *type;
    st->kinds[st->nkinds].kind = kind;
    st->nkinds++;
    return 0;
}
