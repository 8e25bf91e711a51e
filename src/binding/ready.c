/*
 * binding/ready.c -- readiness for event loops: fileno() and wait_handle,
 * the private methods pyshm.asyncio builds on (_arm, _take, _disarm,
 * _hold, _release), and pyshm.wait(), for the named types that have it
 * (Channel, Slot: their kind's ready_* hooks).
 *
 * Owns: pyshm_readiness's life (binding.h; named.c calls it at close(),
 * fork and deallocation), the channel's arming rules, the readiness
 * methods and attributes (PYSHM_READY_METHODS, PYSHM_READY_GETSET),
 * pyshm.wait.
 * May include: binding/binding.h, core/ring.h, platform/ready.h, and
 * <poll.h> on POSIX (pyshm.wait over many descriptors).
 *
 * The mechanism is platform/ready.h's: an async waiter is an ordinary
 * waiter of the object's wait words, whose sleep is io_uring's (Linux),
 * the system thread pool's (Windows) or one watcher thread's (elsewhere).
 * Nothing changes for senders, the shared format neither.
 *
 * What a side waits for.  A receive waits for a message, a send for room;
 * both also need their side's lock, which a loan (reserve/recv_view) may
 * hold for long across Python code.  So arming a side arms its wait word
 * (DATA, SPACE), then looks: nothing there -> armed, wait; there but the
 * lock held -> arm the lock too (its release wakes us); there and the lock
 * free -> try again now.  Arming before looking is what makes it safe: a
 * move between the look and the sleep is never missed.  The first arm of a
 * wait may spin first (pyshm.asyncio asks when its loop has nothing else to
 * run): ring_spin, the sync waits' adaptive spin, without the GIL; a move
 * during it, or a look right after it that finds the side possible, is
 * answered with "try now" and nothing armed; the budget then learns from
 * the block (from the arm to the take) as a sync wait's does.  A slot has one
 * side: its generation word, armed, then the generation compared with the
 * one waited after (slot_type.c; readers take no lock).
 *
 * The descriptor is the object's (closed by close()), but an event loop
 * may still have it registered then: pyshm.asyncio holds it (_hold) while
 * registered, and close() then only makes it ready (the waiters look, find
 * the object closed and raise) and closes it at the last _release.  So a
 * selector never watches a number that was closed and reused.
 *
 * pyshm.wait(objects, timeout): the futex build waits on the data words
 * (a slot's generation word) of up to 128 objects at once with futex_waitv
 * (Linux 5.16); Windows with WaitForMultipleObjects (more than 64 through
 * the thread pool); the portable build naps as its sync waits do.  Where
 * that cannot be done (more than 128 objects, an older kernel) each
 * object's readiness is armed and poll() waits on their descriptors.  The GIL is released, the
 * wait is cut into slices (the first short) for signal checks, as the
 * channel's own waits are.
 */
#include "binding/binding.h"
#include "core/atomics.h"    /* the snapshot of a wait word */
#include "core/ring.h"
#include "platform/ready.h"

#include <math.h>       /* floor */
#include <errno.h>      /* errno for OSError, EINTR */
#ifndef _WIN32
#include <poll.h>       /* poll: many readiness descriptors */
#endif

#define FIRST_SLICE_NS ((int64_t)10000000)
#define LONG_SLICE_NS  ((int64_t)1000000000)

void
pyshm_readiness_closed(pyshm_readiness *rd)
{
    unsigned n;

    rd->closed = 1;
    rd->fileno = 0;
    if (rd->ready == NULL)
        return;
    for (n = 0; n < SYNC_READY_WATCHES; n++)
        sync_ready_disarm(rd->ready, n);
    if (rd->holds > 0) {
        sync_ready_wake(rd->ready);     /* the loop's waiters look and raise */
        return;
    }
    sync_ready_close(rd->ready);
    rd->ready = NULL;
}

void
pyshm_readiness_free(pyshm_readiness *rd)
{
    sync_ready_close(rd->ready);
    rd->ready = NULL;
    rd->holds = 0;
}

void
pyshm_readiness_forked(pyshm_readiness *rd)
{
    sync_ready_forget(rd->ready);
    rd->ready = NULL;
    rd->holds = 0;
    rd->fileno = 0;
}

/* An OSError for a failed platform call of readiness. */
static int
raise_arm(const shm_error *err)
{
#ifdef _WIN32
    PyErr_SetFromWindowsErr(err->os_code);
#else
    errno = err->os_code;
    PyErr_SetFromErrno(PyExc_OSError);
#endif
    return -1;
}

/* RD's sync_ready, made now if need be.  NULL with an exception. */
static sync_ready *
ready_of(pyshm_readiness *rd)
{
    shm_error err;

    if (rd->ready != NULL)
        return rd->ready;
    if (sync_ready_open(&rd->ready, &err) != SHM_OK) {
        rd->ready = NULL;
        (void)raise_arm(&err);
        return NULL;
    }
    return rd->ready;
}

sync_watch
pyshm_ready_word(sync_handles *h, sync_word_id id, uint32_t *word, uint32_t *count)
{
    sync_watch w;

    w.h = h;
    w.lock = 0;
    w.id = (int)id;
    w.word = word;
    w.count = count;
    return w;
}

/* The watch of CH's wait word ID. */
static sync_watch
ring_word(ring_t *ch, sync_word_id id)
{
    return pyshm_ready_word(&ch->sync, id,
                            id == SYNC_WORD_DATA ? &ch->hdr->data_seq : &ch->hdr->space_seq,
                            id == SYNC_WORD_DATA ? &ch->hdr->data_waiters
                                                 : &ch->hdr->space_waiters);
}

/* The watch of CH's lock ID. */
static sync_watch
lock_watch(ring_t *ch, sync_lock_id id)
{
    sync_watch w;

    w.h = &ch->sync;
    w.lock = 1;
    w.id = (int)id;
    w.word = id == SYNC_LOCK_SEND ? &ch->hdr->send_lock : &ch->hdr->recv_lock;
    w.count = NULL;
    return w;
}

/* Bytes a message of SIZE takes in the ring. */
static uint64_t
record_bytes(size_t size)
{
    return 8u + (((uint64_t)size + 7u) & ~(uint64_t)7u);
}

int
pyshm_ready_arm_watch(pyshm_named *self, unsigned n, const sync_watch *w)
{
    sync_ready *r = ready_of(&self->rd);
    shm_error err;
    int now = 0;

    if (r == NULL)
        return -1;
    if (sync_ready_arm(r, n, w, &now, &err) != SHM_OK)
        return raise_arm(&err);
    return 0;
}

/* A message queued (PYSHM_RECV), or room for SIZE bytes (PYSHM_SEND).
   Corrupt cursors read as "there": the next try raises ProtocolError. */
static int
ring_there(ring_t *ch, int side, size_t size)
{
    uint64_t queued;

    if (side == PYSHM_RECV)
        return ring_messages(ch) > 0;
    queued = ring_queued(ch);
    return queued == UINT64_MAX || ch->capacity - queued >= record_bytes(size);
}

/* There, and the side's lock free: a try now would likely succeed. */
static int
ring_looks_possible(ring_t *ch, int side, size_t size)
{
    uint32_t *lock = side == PYSHM_RECV ? &ch->hdr->recv_lock : &ch->hdr->send_lock;

    return ring_there(ch, side, size) && at_load32(lock) == 0;
}

int
pyshm_ready_arm_ring(pyshm_named *self, ring_t *ch, int side, size_t size, int spin)
{
    pyshm_readiness *rd = &self->rd;
    sync_ready *r = ready_of(rd);
    sync_word_id id = side == PYSHM_RECV ? SYNC_WORD_DATA : SYNC_WORD_SPACE;
    sync_watch w;
    shm_error err;
    uint64_t token;
    uint32_t seq;
    int now = 0, moved, closed;

    if (r == NULL)
        return -1;
    w = ring_word(ch, id);
    /* The last spin ran out and the waiter blocked: the budget learns
       from it as a sync wait's does (would a longer spin have paid?). */
    if (rd->spun_at != 0) {
        if (rd->woken_at > rd->spun_at)
            ring_spin_adapt(ch, (sync_word_id)rd->spun_id, rd->spin_began, rd->spun_at,
                            rd->woken_at, 0);
        rd->spun_at = rd->woken_at = 0;
    }
    if (spin) {
        /* The spin of a sync wait before it blocks, without the GIL (other
           threads of this process may be the peer), the mapping pinned
           (close() from another thread meanwhile: it stays until we are
           out). */
        seq = at_load32_sc(w.word);
        /* What came since the caller's try (before the snapshot) would
           never move the word again: look first. */
        if (ring_looks_possible(ch, side, size))
            return 2;
        token = pyshm_pin(self);
        rd->spin_began = sync_now_ns();
        Py_BEGIN_ALLOW_THREADS
        moved = ring_spin(ch, id, seq);
        Py_END_ALLOW_THREADS
        closed = self->closed;
        pyshm_unpin(self, token);
        if (closed)
            return pyshm_named_check_open(self);
        if (moved)
            return 2;
        rd->spun_at = sync_now_ns();
        rd->spun_id = (int)id;
        /* One look before arming: what came right after the spin is taken
           without arming (an arm that finds it there costs a registration,
           the peer's wake for it and, unless it completed, a cancel). */
        if (ring_looks_possible(ch, side, size))
            return 2;
    }
    if (sync_ready_arm(r, side == PYSHM_RECV ? PYSHM_WATCH_DATA : PYSHM_WATCH_SPACE, &w, &now,
                       &err) != SHM_OK)
        return raise_arm(&err);
    /* Armed: now look. */
    if (!ring_there(ch, side, size))
        return 0;
    /* It is there, yet the try failed (or raced): the lock, then. */
    w = lock_watch(ch, side == PYSHM_RECV ? SYNC_LOCK_RECV : SYNC_LOCK_SEND);
    if (sync_ready_arm(r, side == PYSHM_RECV ? PYSHM_WATCH_RLOCK : PYSHM_WATCH_SLOCK, &w, &now,
                       &err) != SHM_OK)
        return raise_arm(&err);
    return now;
}

/* The receive side's watches (what fileno() keeps armed). */
#define RECV_WATCHES ((1u << PYSHM_WATCH_DATA) | (1u << PYSHM_WATCH_RLOCK))

void
pyshm_ready_rearm(pyshm_named *self)
{
    pyshm_readiness *rd = &self->rd;
    PyObject *type, *value, *tb;
    unsigned fired;
    int rc;

    if (!rd->fileno || rd->ready == NULL || rd->closed || self->kind->ready_arm == NULL)
        return;
    /* The take's own exception is being raised: keep it. */
    PyErr_Fetch(&type, &value, &tb);
    fired = sync_ready_take(rd->ready);
    rc = self->kind->ready_arm(self, PYSHM_RECV, NULL, 0);
    /* There after all: ready at once.  And a readiness of another side
       (a coroutine of pyshm.asyncio awaiting room on the same object) was
       consumed with ours: it is made again, for its waiter to see. */
    if (rc > 0 || (fired & ~RECV_WATCHES) != 0)
        sync_ready_wake(rd->ready);
    if (rc < 0)
        PyErr_Clear();                  /* the next wait on it shows nothing: the
                                           caller's retry arms again */
    PyErr_Restore(type, value, tb);
}

/* SELF, open, with readiness made: its sync_ready, or NULL with an
   exception. */
static sync_ready *
open_ready(pyshm_named *self)
{
    if (pyshm_named_check_open(self) < 0)
        return NULL;
    return ready_of(&self->rd);
}

PyObject *
pyshm_ready_fileno(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_named *self = (pyshm_named *)obj;
    int rc;

    if (open_ready(self) == NULL)
        return NULL;
    rc = self->kind->ready_arm(self, PYSHM_RECV, NULL, 0);
    if (rc < 0)
        return NULL;
    if (rc > 0)
        sync_ready_wake(self->rd.ready);
    self->rd.fileno = 1;
    return PyLong_FromSsize_t((Py_ssize_t)sync_ready_fd(self->rd.ready));
}

PyObject *
pyshm_ready_get_handle(PyObject *obj, void *Py_UNUSED(closure))
{
    PyObject *fd = pyshm_ready_fileno(obj, NULL);

    if (fd == NULL)
        return NULL;
    Py_DECREF(fd);
    return PyLong_FromSsize_t((Py_ssize_t)sync_ready_handle(((pyshm_named *)obj)->rd.ready));
}

PyObject *
pyshm_ready_get_engine(PyObject *obj, void *Py_UNUSED(closure))
{
    pyshm_readiness *rd = &((pyshm_named *)obj)->rd;

    if (rd->ready == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(sync_ready_engine(rd->ready));
}

/* _arm(side, arg=None, spin=False): side 0 receive (a slot: wait(after=
   ARG)), 1 send (ARG: the message's bytes); SPIN: first spin as a sync
   wait does before it blocks.  0: armed, wait for readiness; 1: armed,
   and it looks possible now; 2: the word moved during the spin (nothing
   armed): try again now. */
PyObject *
pyshm_ready_arm_method(PyObject *obj, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames)
{
    static const char *const names[] = {"side", "arg", "spin", NULL};
    pyshm_named *self = (pyshm_named *)obj;
    PyObject *argv[3];
    Py_ssize_t side;
    int rc, spin = 0;

    if (pyshm_parse_args("_arm", args, nargs, kwnames, names, 3, 1, argv) < 0)
        return NULL;
    if (pyshm_ssize_arg(argv[0], "side", 0, &side) < 0)
        return NULL;
    if (argv[2] != NULL && (spin = PyObject_IsTrue(argv[2])) < 0)
        return NULL;
    if (open_ready(self) == NULL)
        return NULL;
    rc = self->kind->ready_arm(self, side == 0 ? PYSHM_RECV : PYSHM_SEND,
                               argv[1] == Py_None ? NULL : argv[1], spin);
    if (rc < 0)
        return NULL;
    return PyLong_FromLong(rc);
}

/* _take(token=None): consume the readiness; the mask of watches whose arm
   ended.  With the TOKEN of a _hold() that is no longer the latest (a loop
   whose registration another loop took over), nothing: that readiness is
   the new holder's. */
PyObject *
pyshm_ready_take(PyObject *obj, PyObject *const *args, Py_ssize_t nargs)
{
    pyshm_readiness *rd = &((pyshm_named *)obj)->rd;
    unsigned long token;

    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "_take() takes at most 1 argument (%zd given)", nargs);
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        token = PyLong_AsUnsignedLong(args[0]);
        if (token == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        if (token != rd->owner)
            return PyLong_FromLong(0);
    }
    if (rd->ready == NULL)
        return PyLong_FromLong(0);
    if (rd->spun_at != 0 && rd->woken_at == 0)
        rd->woken_at = sync_now_ns();       /* the next arm adapts the spin */
    return PyLong_FromUnsignedLong(sync_ready_take(rd->ready));
}

/* _disarm(): take every registration back (the last waiter of a loop left);
   fileno()'s receive side stays armed. */
PyObject *
pyshm_ready_disarm(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_readiness *rd = &((pyshm_named *)obj)->rd;
    unsigned n;

    if (rd->ready != NULL)
        for (n = 0; n < SYNC_READY_WATCHES; n++)
            if (!rd->fileno || !(RECV_WATCHES & (1u << n)))
                sync_ready_disarm(rd->ready, n);
    Py_RETURN_NONE;
}

/* _hold(): a loop registers the descriptor; returns (descriptor, handle,
   token) (POSIX: the descriptor twice; Windows: the socket and the event;
   the token for _take). */
PyObject *
pyshm_ready_hold(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_named *self = (pyshm_named *)obj;
    sync_ready *r = open_ready(self);

    if (r == NULL)
        return NULL;
    self->rd.holds++;
    self->rd.owner++;
    return Py_BuildValue("(nnk)", (Py_ssize_t)sync_ready_fd(r), (Py_ssize_t)sync_ready_handle(r),
                         self->rd.owner);
}

/* _release(): the loop no longer has it registered. */
PyObject *
pyshm_ready_release(PyObject *obj, PyObject *Py_UNUSED(ignored))
{
    pyshm_readiness *rd = &((pyshm_named *)obj)->rd;

    if (rd->holds > 0)
        rd->holds--;
    if (rd->holds == 0 && rd->closed && rd->ready != NULL) {
        sync_ready_close(rd->ready);
        rd->ready = NULL;
    }
    Py_RETURN_NONE;
}

/* ---- pyshm.wait --------------------------------------------------------------- */

typedef struct {
    pyshm_named *obj;
    uint64_t token;
    int began;
} wait_item;

/* Pin OBJ for pyshm.wait: 0, or -1 with TypeError (not a Channel or a
   Slot) or ValueError (closed). */
static int
begin_item(pyshm_state *st, PyObject *obj, wait_item *item)
{
    if (!PyObject_TypeCheck(obj, st->Channel_type) && !PyObject_TypeCheck(obj, st->Slot_type)) {
        PyErr_Format(PyExc_TypeError, "pyshm.wait(): %R is not a pyshm Channel or Slot", obj);
        return -1;
    }
    item->obj = (pyshm_named *)obj;
    if (pyshm_named_check_open(item->obj) < 0)
        return -1;
    item->token = pyshm_pin(item->obj);
    item->began = 1;
    return 0;
}

static void
end_all(wait_item *items, Py_ssize_t n)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++)
        if (items[i].began)
            pyshm_unpin(items[i].obj, items[i].token);
}

/* The ready ones, in the order given (a message queued, corrupt cursors
   included: the receive raises ProtocolError; a generation newer than the
   slot saw). */
static PyObject *
ready_list(wait_item *items, Py_ssize_t n, int *any)
{
    PyObject *list = PyList_New(0);
    Py_ssize_t i;

    *any = 0;
    if (list == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (!items[i].obj->kind->ready_now(items[i].obj))
            continue;
        *any = 1;
        if (PyList_Append(list, (PyObject *)items[i].obj) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

#ifndef _WIN32
/*
 * Wait on the readiness descriptors of ITEMS until UNTIL (one slice).
 * SHM_OK, SHM_ETIMEOUT, SHM_EINTR; -1 in *FAILED with an exception.  With
 * the GIL; releases it around poll().
 */
static shm_status
poll_items(wait_item *items, Py_ssize_t n, int64_t until, int *failed)
{
    struct pollfd *fds;
    pyshm_named *obj;
    Py_ssize_t i;
    int64_t now = sync_now_ns();
    int ms, rc, code, now_flag = 0;

    *failed = 0;
    fds = PyMem_Calloc((size_t)n, sizeof *fds);
    if (fds == NULL) {
        PyErr_NoMemory();
        *failed = 1;
        return SHM_EVALUE;
    }
    for (i = 0; i < n; i++) {
        obj = items[i].obj;
        rc = obj->kind->ready_arm(obj, PYSHM_RECV, NULL, 0);
        if (rc < 0) {
            PyMem_Free(fds);
            *failed = 1;
            return SHM_EVALUE;
        }
        if (rc > 0)
            now_flag = 1;
        fds[i].fd = (int)sync_ready_fd(obj->rd.ready);
        fds[i].events = POLLIN;
    }
    ms = until == SYNC_FOREVER ? -1 : (int)((until - now + 999999) / 1000000);
    if (now_flag || (until != SYNC_FOREVER && ms <= 0))
        ms = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = poll(fds, (nfds_t)n, ms);
    code = errno;
    Py_END_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        obj = items[i].obj;
        if (obj->rd.ready != NULL) {
            (void)sync_ready_take(obj->rd.ready);
            if (!obj->rd.fileno)
                sync_ready_disarm(obj->rd.ready, PYSHM_WATCH_DATA);
        }
    }
    PyMem_Free(fds);
    if (rc < 0)
        return code == EINTR ? SHM_EINTR : SHM_ETIMEOUT;
    return rc == 0 && !now_flag ? SHM_ETIMEOUT : SHM_OK;
}
#endif

PyDoc_STRVAR(wait_doc,
"wait($module, objects, timeout=None)\n"
"--\n\n"
"Block until one of OBJECTS (pyshm Channels and Slots) is ready -- a\n"
"channel with a message queued, a slot with a generation newer than the\n"
"object last saw -- and return the ready ones as a list, in the order\n"
"given; [] when TIMEOUT (seconds; None: for ever) passes first.  The GIL\n"
"is released; Ctrl-C interrupts.  Nothing is taken: receive with\n"
"timeout=0 (another receiver may be quicker), read the slot.  TypeError\n"
"for an object that is not a pyshm Channel or Slot, ValueError for a\n"
"closed one (also when another thread closes it during the wait) and for\n"
"a negative timeout.");

static PyObject *
module_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"objects", "timeout", NULL};
    pyshm_state *st = pyshm_get_state(module);
    PyObject *argv[2], *seq, *result = NULL;
    wait_item *items = NULL;
    sync_watch *watches = NULL;
    uint32_t *seen = NULL;
    Py_ssize_t n, i;
    double seconds;
    int forever, any, resumed = 0, use_poll = 0, failed;
    int64_t deadline, now, until, ns;
    shm_status status;
    shm_error err;

    if (pyshm_parse_args("wait", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (pyshm_timeout_arg(argv[1], &seconds, &forever) < 0)
        return NULL;
    seq = PySequence_Fast(argv[0], "pyshm.wait(): objects must be an iterable of Channels "
                                   "and Slots");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "pyshm.wait(): no objects to wait for");
        Py_DECREF(seq);
        return NULL;
    }
    items = PyMem_Calloc((size_t)n, sizeof *items);
    watches = PyMem_Calloc((size_t)n, sizeof *watches);
    seen = PyMem_Calloc((size_t)n, sizeof *seen);
    if (items == NULL || watches == NULL || seen == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        if (begin_item(st, PySequence_Fast_GET_ITEM(seq, i), &items[i]) < 0)
            goto done;
        watches[i] = items[i].obj->kind->ready_watch(items[i].obj);
    }
    if (forever) {
        deadline = SYNC_FOREVER;
    } else {
        now = sync_now_ns();
        ns = (int64_t)floor(seconds * 1e9);
        deadline = seconds * 1e9 >= (double)(SYNC_FOREVER - now) ? SYNC_FOREVER : now + ns;
    }
    for (;;) {
        /* Snapshot, then look: a move after the look wakes the wait. */
        for (i = 0; i < n; i++)
            seen[i] = at_load32_sc(watches[i].word);
        result = ready_list(items, n, &any);
        if (result == NULL || any)
            goto done;
        now = sync_now_ns();
        if (now >= deadline)
            goto done;      /* [] */
        Py_CLEAR(result);
        ns = resumed ? LONG_SLICE_NS : FIRST_SLICE_NS;
        until = deadline - now > ns ? now + ns : deadline;
        status = SHM_EVALUE;
        if (!use_poll) {
            Py_BEGIN_ALLOW_THREADS
            status = sync_wait_many(watches, seen, (size_t)n, until, &err);
            Py_END_ALLOW_THREADS
            if (status == SHM_EVALUE)
                use_poll = 1;
            else if (status == SHM_EOS) {
                pyshm_raise(st, &err, NULL);
                goto done;
            }
        }
#ifndef _WIN32
        if (use_poll) {
            status = poll_items(items, n, until, &failed);
            if (failed)
                goto done;
        }
#else
        (void)failed;
#endif
        resumed = status != SHM_OK;
        if (PyErr_CheckSignals() < 0)
            goto done;
        for (i = 0; i < n; i++) {
            if (items[i].obj->closed) {
                PyErr_Format(PyExc_ValueError,
                             "pyshm.wait(): %R was closed during the wait", items[i].obj);
                goto done;
            }
        }
    }

done:
    if (PyErr_Occurred())
        Py_CLEAR(result);
    else if (result == NULL)
        result = PyList_New(0);
    if (items != NULL)
        end_all(items, n);
    PyMem_Free(items);
    PyMem_Free(watches);
    PyMem_Free(seen);
    Py_DECREF(seq);
    return result;
}

/* _timeout(t): T checked as every timeout argument is (the same errors):
   None for "for ever", else the seconds as a float.  For pyshm.asyncio. */
static PyObject *
module_timeout(PyObject *module, PyObject *obj)
{
    double seconds;
    int forever;

    (void)module;
    if (pyshm_timeout_arg(obj, &seconds, &forever) < 0)
        return NULL;
    if (forever)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(seconds);
}

/* _frame_size(obj): the bytes send_obj(obj) would queue (it pickles OBJ
   once).  For pyshm.asyncio, whose send_obj must know how much room to
   wait for. */
static PyObject *
module_frame_size(PyObject *module, PyObject *obj)
{
    pyshm_state *st = pyshm_get_state(module);
    pyshm_frame frame;
    size_t len;

    if (pyshm_objects_ready(st) < 0 || pyshm_frame_pickle(st, obj, &frame) < 0)
        return NULL;
    len = frame.len;
    pyshm_frame_release(&frame);
    return PyLong_FromSize_t(len);
}

static PyMethodDef ready_functions[] = {
    {"wait", (PyCFunction)(void (*)(void))module_wait, METH_FASTCALL | METH_KEYWORDS, wait_doc},
    {"_timeout", (PyCFunction)module_timeout, METH_O, NULL},
    {"_frame_size", (PyCFunction)module_frame_size, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int
pyshm_ready_exec(PyObject *module, pyshm_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, ready_functions);
}
