/*
 * binding/channel_type.c -- the pyshm.Channel type: a named segment holding
 * a ring of messages (core/ring.h), shared by any number of processes.
 *
 * Owns: ChannelObject and its own methods (the ring's calls); the loans'
 * work with the ring (the hooks loan_take/loan_end/rebase); the private
 * module function _channel_users (for the CLI); pyshm_channel_exec.  Its
 * lifecycle (opening by name, pins, fork, close(), the loans' life with
 * the object) is binding/named.c's, through its kind.
 * May include: binding/binding.h, core/ring.h, platform/segment.h and
 * platform/sync.h (through ring.h), the C library.
 *
 * The fast path runs with the GIL held and makes no system call: a send or
 * receive that can complete at once (lock free, space or data there, small
 * copy) is done with RING_NOWAIT.  Anything that may wait, and every copy of
 * at least PYSHM_NOGIL_COPY_MIN bytes, runs with the GIL released.
 *
 * Pins (named.c): every operation pins the mapping for as long as it runs
 * without the GIL, and for as long as it holds a side's lock or a message
 * (from ring_recv_begin() to commit or abort), GIL or not; close() cancels
 * this process's waits (ring_cancel) and the last unpin unmaps.
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
 * Object messages (send_obj/recv_obj) use the frame of binding/objects.c;
 * loans (reserve/recv_view) the Loan type of binding/loan_type.c, which
 * calls back into pyshm_channel_loan_begin/end here.
 *
 * Readiness (fileno(), wait_handle, pyshm.asyncio's private methods,
 * pyshm.wait) is binding/ready.c's: this file gives it the ring (the
 * ready_* hooks of its kind) and re-arms it at a receive's TimeoutError.
 *
 * Loans (named.c has their life: owners, close(), fork): reserve() holds
 * the send lock and a record of the ring, recv_view() the receive lock and
 * a message in place (no message straddles the ring's end); the hooks
 * below take and end them.
 */
#include "binding/binding.h"
#include "core/ring.h"

typedef struct {
    pyshm_named head;       /* the shared lifecycle (binding.h); head.seg maps ch,
                               head.size is its capacity (kept after close()) */
    ring_t ch;              /* ch.hdr == NULL once released */
    int no_spin;            /* the wait policy: 0 spins before blocking (the default) */
} ChannelObject;

static int
check_open(ChannelObject *self)
{
    return pyshm_named_check_open(&self->head);
}

/* ---- construction --------------------------------------------------------- */

/* The capacity argument, rounded as a new ring would have it (checked when
   opening too: exist_ok compares it). */
static int
capacity_arg(Py_ssize_t given, int create, uint64_t *asked)
{
    shm_error err;

    (void)create;
    if (ring_capacity((uint64_t)given, asked, &err) != SHM_OK) {
        PyErr_Format(PyExc_ValueError, "%s (got %zd)", err.detail, given);
        return -1;
    }
    return 0;
}

/* attach, detach, cancel (close() ending this process's waits), rebase:
   the ring's calls (binding.h, PYSHM_CORE_HOOKS); the capacity is what
   exist_ok compares. */
PYSHM_CORE_HOOKS(ChannelObject, ch, ring, capacity)

static int
Channel_init(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "capacity", "exist_ok", "mode", "track", "spin",
                             "wait", NULL};
    pyshm_open_args a = {Py_None, 0, 0, 0, 0, NULL, NULL, NULL};
    int spin = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$pOppO:Channel", kwlist,
                                     &a.name, &a.create, &a.size, &a.exist_ok, &a.mode,
                                     &a.track, &spin, &a.wait))
        return -1;
    if (pyshm_named_open(&self->head, &a) < 0)
        return -1;
    self->no_spin = !spin;
    ring_set_spin(&self->ch, spin);
    return 0;
}

/* ---- operations without the GIL (send and receive) -------------------------- */

/* Raise for a failed operation; a closed channel reads as ValueError. */
static PyObject *
raise_status(ChannelObject *self, const shm_error *err)
{
    return pyshm_named_raise(&self->head, err);
}

static int
check_side(ChannelObject *self, int side, const char *fname)
{
    return pyshm_check_side(&self->head, side, fname);
}

/* A pyshm_op on the ring (see pyshm_run_unlocked): the call, its argument
   and the wait it goes on with after each signal check. */
typedef struct {
    shm_status (*call)(ChannelObject *self, void *arg, ring_wait *w, shm_error *err);
    void *arg;
    ring_wait w;
} ring_op;

static shm_status
run_ring_op(pyshm_named *head, void *arg, shm_error *err)
{
    ring_op *op = (ring_op *)arg;

    return op->call((ChannelObject *)head, op->arg, &op->w, err);
}

/* The slow path of send/recv: OP without the GIL until it stops asking for
   a signal check (pyshm_run_unlocked), waiting as TIMEOUT said. */
static shm_status
run_slow(ChannelObject *self, ring_op *op, int forever, double seconds, shm_error *err,
         int *raised)
{
    op->w = ring_wait_until(pyshm_deadline(forever, seconds));
    return pyshm_run_unlocked(&self->head, run_ring_op, op, err, raised);
}

/* ---- send ------------------------------------------------------------------ */

typedef struct {
    const void *data;
    size_t len;
} send_arg;

/* A ring_op: the whole send (the lock is let go inside ring_send). */
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
    ring_op op = {send_op, &a, {0, 0}};
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
        status = run_slow(self, &op, forever, seconds, &err, &raised);
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

/* A ring_op: wait until a message is queued.  The recv lock is taken and let
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
    uint64_t pin;
} held_msg;

/* The try of begin_recv (see pyshm_take): the next message, if the lock
   is free and one is queued.  ARG: the ring_op whose arg is the ring_msg. */
static shm_status
take_message(pyshm_named *head, void *arg, shm_error *err)
{
    ring_op *op = (ring_op *)arg;

    return ring_recv_begin(&((ChannelObject *)head)->ch, NULL, (ring_msg *)op->arg, err);
}

/*
 * Take the next message, waiting for one as TIMEOUT says.  0 with the recv
 * lock held and the mapping pinned (the caller ends with finish_recv() or
 * abort_recv(), holding the GIL all along except inside finish_recv()), or
 * -1 with an exception set (nothing held).
 */
static int
begin_recv(ChannelObject *self, PyObject *timeout, held_msg *held)
{
    ring_op op = {wait_message_op, &held->msg, {0, 0}};
    double seconds;
    int forever;

    if (pyshm_timeout_arg(timeout, &seconds, &forever) < 0)
        return -1;
    if (check_open(self) < 0 || check_side(self, PYSHM_RECV, "a receive") < 0)
        return -1;
    op.w = ring_wait_until(pyshm_deadline(forever, seconds));
    if (pyshm_take(&self->head, take_message, run_ring_op, &op) < 0) {
        /* fileno()'s protocol: a TimeoutError arms the descriptor again. */
        if (PyErr_ExceptionMatches(PyExc_TimeoutError))
            pyshm_ready_rearm(&self->head);
        return -1;
    }
    held->pin = pyshm_pin(&self->head);
    return 0;
}

/* End a begin_recv() that took nothing: the message stays queued. */
static void
abort_recv(ChannelObject *self, const held_msg *held)
{
    ring_recv_abort(&self->ch);
    pyshm_unpin(&self->head, held->pin);
}

/* Copy the held message to DST, consume it and let go of the lock; a big
   copy without the GIL (the lock is let go before the GIL is taken back).
   FRESH: DST is new memory of the allocator's (a new bytes object), which
   a big message first advises to fault cheaply (platform/pages.h). */
static void
finish_recv(ChannelObject *self, const held_msg *held, void *dst, int fresh)
{
    if (held->msg.len < PYSHM_NOGIL_COPY_MIN) {
        ring_recv_commit(&self->ch, &held->msg, dst);
    } else {
        Py_BEGIN_ALLOW_THREADS
        if (fresh && held->msg.len >= PYSHM_PREPARE_MIN)
            shm_pages_prepare(dst, held->msg.len);
        ring_recv_commit(&self->ch, &held->msg, dst);
        Py_END_ALLOW_THREADS
    }
    pyshm_unpin(&self->head, held->pin);
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
    finish_recv(self, &held, PyBytes_AS_STRING(result), 1);
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
    finish_recv(self, &held, view.buf, 0);
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
    pyshm_state *st = self->head.st;
    pyshm_frame frame;
    double seconds;
    int forever, raised;
    ring_op op = {sendv_op, &frame, {0, 0}};
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
        status = run_slow(self, &op, forever, seconds, &err, &raised);
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
    pyshm_state *st = self->head.st;
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
        int fresh = PyBytes_Check(target);  /* a MessageBuffer's pages are its own */

        Py_BEGIN_ALLOW_THREADS
        if (fresh && n >= PYSHM_PREPARE_MIN)
            shm_pages_prepare(dst, n);
        ring_recv_read(&self->ch, &held.msg, offset, dst, n);
        ring_recv_commit(&self->ch, &held.msg, NULL);
        Py_END_ALLOW_THREADS
    }
    pyshm_unpin(&self->head, held.pin);
    /* Consumed: from here on a failure (unpickling) loses the message, as
       the exception says. */
    result = pyshm_frame_unpickle(st, &in, target);
    pyshm_frame_in_release(&in);
    Py_DECREF(target);
    return result;
}

/* ---- loans ------------------------------------------------------------------ */

/* A ring_op: wait until the loan fits.  As wait_message_op, the send lock
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

/* The try of begin_reserve (see pyshm_take): a record of the loan's size
   that is contiguous in the ring, if the lock is free and there is room. */
static shm_status
take_room(pyshm_named *head, void *arg, shm_error *err)
{
    pyshm_loan *loan = (pyshm_loan *)((ring_op *)arg)->arg;

    return ring_reserve(&((ChannelObject *)head)->ch, loan->len, NULL, &loan->loan, err);
}

/* The send side of take_side: wait for room and reserve. */
static int
begin_reserve(ChannelObject *self, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    ring_op op = {wait_room_op, loan, {0, 0}};
    double seconds;
    int forever;

    if (pyshm_timeout_arg(timeout, &seconds, &forever) < 0)
        return -1;
    loan->len = size;
    op.w = ring_wait_until(pyshm_deadline(forever, seconds));
    if (pyshm_take(&self->head, take_room, run_ring_op, &op) < 0)
        return -1;
    loan->data = loan->loan.data;
    return 0;
}

/* The receive side: wait for a message and find it in place (no record
   straddles the ring's end: core/ring.h). */
static int
begin_view(ChannelObject *self, pyshm_loan *loan, PyObject *timeout)
{
    held_msg held;

    if (begin_recv(self, timeout, &held) < 0)
        return -1;
    /* The loan's own pin (pyshm_loan_begin) keeps the mapping. */
    pyshm_unpin(&self->head, held.pin);
    loan->msg = held.msg;
    loan->len = loan->msg.len;
    loan->data = (unsigned char *)ring_recv_data(&self->ch, &loan->msg);
    return 0;
}

/* The loan hooks of named.c: take a side (the mapping pinned), end it. */
static int
take_side(pyshm_named *head, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    ChannelObject *self = (ChannelObject *)head;

    return loan->side == PYSHM_SEND ? begin_reserve(self, loan, size, timeout)
                                    : begin_view(self, loan, timeout);
}

static void
end_side(pyshm_named *head, pyshm_loan *loan, int commit)
{
    ChannelObject *self = (ChannelObject *)head;

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
    return pyshm_loan_new(self->head.st, (PyObject *)self, PYSHM_SEND, (size_t)size, argv[1]);
}

PyDoc_STRVAR(recv_view_doc,
"recv_view($self, timeout=None)\n"
"--\n\n"
"A loan of the next message, for a with statement:\n\n"
"    with ch.recv_view() as view:    # a read-only memoryview, in place\n"
"        total = sum(view)\n\n"
"No copy: the view is the message inside the ring, whatever its size and\n"
"wherever it lies (no message straddles the ring's end).\n"
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
    return pyshm_loan_new(self->head.st, (PyObject *)self, PYSHM_RECV, 0, argv[0]);
}

/* ---- close, unlink, context manager ---------------------------------------- */

PyDoc_STRVAR(close_doc,
"close($self)\n"
"--\n\n"
"Detach from the channel and unmap it; the name stays (see unlink()).\n"
"Idempotent.  Sends and receives blocked in other threads of this process\n"
"end with ValueError; the mapping is released when the last one has left.");

PyDoc_STRVAR(unlink_doc,
"unlink($self)\n"
"--\n\n"
"Remove the channel's name (POSIX) so no one else can open it; processes\n"
"attached keep working until they close.  Allowed after close().  On\n"
"Windows the name and its wait objects die with the last handle and this\n"
"does nothing.");

PyDoc_STRVAR(reduce_doc,
"__reduce__($self, /)\n"
"--\n\n"
"Pickle by name (and spin=False when set): the receiving process opens the\n"
"same channel, as multiprocessing does with arguments under 'spawn'.");

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

/* The kind's readiness hooks: a side of the ring (ARG: a send's bytes). */
static int
channel_ready_arm(pyshm_named *head, int side, PyObject *arg, int spin)
{
    Py_ssize_t size = 0;

    if (arg != NULL && pyshm_ssize_arg(arg, "size", 0, &size) < 0)
        return -1;
    return pyshm_ready_arm_ring(head, &((ChannelObject *)head)->ch, side, (size_t)size, spin);
}

/* Ready for pyshm.wait: a message queued (corrupt cursors too: the
   receive raises ProtocolError). */
static int
channel_ready_now(pyshm_named *head)
{
    return ring_messages(&((ChannelObject *)head)->ch) > 0;
}

static sync_watch
channel_ready_watch(pyshm_named *head)
{
    ring_t *ch = &((ChannelObject *)head)->ch;

    return pyshm_ready_word(&ch->sync, SYNC_WORD_DATA, &ch->hdr->data_seq,
                            &ch->hdr->data_waiters);
}

static PyObject *
spin_kwargs(pyshm_named *head)
{
    if (!((ChannelObject *)head)->no_spin)
        return NULL;
    return Py_BuildValue("{sO}", "spin", Py_False);
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
    PYSHM_NAMED_METHODS(close_doc, unlink_doc, reduce_doc),
    PYSHM_READY_METHODS(fileno_doc),
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ------------------------------------------------------------- */

/* capacity and max_message_size stay readable after close(), as the
   standard library's SharedMemory.size does. */
static PyObject *
Channel_get_capacity(ChannelObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->head.size);
}

static PyObject *
Channel_get_max_message_size(ChannelObject *self, void *Py_UNUSED(closure))
{
    if (self->head.size == 0)   /* never opened */
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong((unsigned long long)ring_max_message(self->head.size));
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
        PyErr_Format(self->head.st->ProtocolError,
                     "%R: channel cursors are corrupt (header overwritten?)", self->head.name);
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
    return PyBool_FromLong(!self->no_spin);
}

static PyGetSetDef Channel_getset[] = {
    {"name", pyshm_named_get_name, NULL,
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
    {"closed", pyshm_named_get_closed, NULL, "True once close() has run.", NULL},
    PYSHM_READY_GETSET(
     "Windows: an event HANDLE (an int) that is signalled when a message may be\n"
     "queued, for WaitForMultipleObjects and loops that wait on handles; the\n"
     "protocol of fileno() applies (take with timeout=0 until TimeoutError, then\n"
     "wait again).  POSIX: the descriptor of fileno()."),
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
channel_repr(pyshm_named *head)
{
    ChannelObject *self = (ChannelObject *)head;
    uint64_t queued = ring_queued(&self->ch);

    if (queued == UINT64_MAX)
        return PyUnicode_FromFormat("<pyshm.Channel name=%R capacity=%llu corrupt cursors>",
                                    head->name, (unsigned long long)self->ch.capacity);
    return PyUnicode_FromFormat("<pyshm.Channel name=%R capacity=%llu queued=%llu wait=%s%s>",
                                head->name, (unsigned long long)self->ch.capacity,
                                (unsigned long long)queued, sync_kind_name(),
                                self->no_spin ? " spin=False" : "");
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
"mode=_DEFAULT_MODE, track=False, spin=True, wait=None)\n"
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
"wake-ups; see the spin attribute).  wait=SECONDS: a channel that does not\n"
"exist yet (or is not yet formatted) is waited for (sleeping; Ctrl-C ends\n"
"it) that long at most, then FileNotFoundError.  A Channel pickles by name:\n"
"the receiving process opens the same channel.");

static const pyshm_kind kind = {
    .type_name = "Channel",
    .what = "channel",
    .size_arg = "capacity",
    .size_rule = PYSHM_EXACTLY,
    .size_default = 1 << 20,
    .size_check = capacity_arg,
    .segment_size = ring_segment_size,
    .format = ring_format,
    PYSHM_CORE_KIND(ring),
    .loan_take = take_side,
    .loan_end = end_side,
    .repr = channel_repr,
    .reduce_kwargs = spin_kwargs,
    .ready_arm = channel_ready_arm,
    .ready_now = channel_ready_now,
    .ready_watch = channel_ready_watch,
};

static PyType_Slot Channel_slots[] = {
    PYSHM_NAMED_SLOTS,
    {Py_tp_init, Channel_init},
    {Py_tp_methods, Channel_methods},
    {Py_tp_getset, Channel_getset},
    {Py_tp_doc, (void *)Channel_doc},
    {0, NULL},
};

static PyType_Spec Channel_spec = PYSHM_NAMED_SPEC("Channel", ChannelObject, Channel_slots);

int
pyshm_channel_exec(PyObject *module, pyshm_state *st)
{
    if (pyshm_add_named_type(module, st, &Channel_spec, &kind, &st->Channel_type) < 0)
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
