/*
 * binding/slot_type.c -- the pyshm.Slot type: the latest value of up to
 * SIZE bytes (core/slot.h), replaced whole by writers and read torn-free by
 * any number of readers, in any number of processes.
 *
 * Owns: SlotObject and its own methods (publish, reserve and its loan
 * hooks, read, readinto, snapshot, generation, wait, size);
 * pyshm_slot_exec.  Its lifecycle (opening by name, wait=, pins, fork,
 * close(), pickling, the loans' life) is binding/named.c's, through its
 * kind.
 * May include: binding/binding.h, core/slot.h, platform/sync.h and
 * platform/segment.h (through slot.h), the C library.
 *
 * The GIL.  A read or a small publish runs with the GIL held and makes no
 * system call when nothing stands in its way (a publish then takes the
 * write lock with one compare-and-swap; only the bump of the wait word may
 * wake a waiter).  A publish that finds the write lock taken, every copy of
 * at least PYSHM_NOGIL_COPY_MIN bytes and every wait run without the GIL,
 * the mapping pinned (named.c).  Outside a reserve() block the write lock
 * is never held while this thread waits for the GIL: a publish without the
 * GIL takes the lock, copies, commits and lets go of it before taking the
 * GIL back, so no writer of another process ever waits on our GIL.
 * Readers hold no lock: a reader's mark (core/slot.h) steers writers away
 * from the cell it copies, and a read that finds its copy overwritten
 * starts again (the core bounds how long).
 *
 * reserve(n): a loan (loan_type.c, named.c) of side PYSHM_PUBLISH that
 * holds the write lock across the block, with the same rules as a
 * channel's reserve(): exports alive at the end refuse it, a fork child's
 * copy is dead and private, close() ends a refused one.  Entering it waits
 * for the lock as publish() does: without the GIL, holding nothing when it
 * comes back, then one try with the GIL.
 *
 * Readiness (fileno(), wait_handle, pyshm.asyncio.Slot, pyshm.wait) is
 * binding/ready.c's: this file gives it the generation word and the
 * generation to compare (the ready_* hooks of its kind), and re-arms it at
 * a wait's TimeoutError.  Ready means a generation newer than the one
 * waited after (fileno(), pyshm.wait: the one this object saw).
 *
 * The generation this object saw: wait(after=None) waits for a generation
 * greater than the last one this object returned or saw -- from publish(),
 * a reserve() block, read(), readinto(), snapshot(), the generation
 * attribute, or wait() itself.
 */
#include "binding/binding.h"
#include "core/slot.h"

#include <string.h>     /* memcpy */

typedef struct {
    pyshm_named head;       /* the shared lifecycle (binding.h); head.seg maps sl,
                               head.size is the largest value (kept after close()) */
    slot_t sl;              /* sl.hdr == NULL once released */
    uint64_t seen;          /* the newest generation this object returned or saw */
} SlotObject;

static int
check_open(SlotObject *self)
{
    return pyshm_named_check_open(&self->head);
}

/* ---- construction ----------------------------------------------------------- */

/* The size argument: the largest value.  Any size opens (exist_ok compares
   a size given); a new slot needs one the core accepts. */
static int
value_size_arg(Py_ssize_t given, int create, uint64_t *asked)
{
    shm_error err;

    if (create && slot_value_size((uint64_t)given, &err) != SHM_OK) {
        PyErr_Format(PyExc_ValueError, "%s (got size=%zd)", err.detail, given);
        return -1;
    }
    *asked = (uint64_t)given;
    return 0;
}

static uint64_t
slot_bytes(uint64_t asked)
{
    return slot_segment_size(asked, SLOT_CELLS);
}

static shm_status
format_slot(void *addr, size_t size, uint64_t asked, shm_error *err)
{
    return slot_format(addr, size, asked, SLOT_CELLS, err);
}

/* attach, detach, cancel (close() ending this process's waits), rebase:
   the slot core's calls (binding.h, PYSHM_CORE_HOOKS); the largest value
   is what exist_ok compares. */
PYSHM_CORE_HOOKS(SlotObject, sl, slot, value_size)

static int
Slot_init(SlotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "size", "exist_ok", "mode", "track", "wait",
                             NULL};
    pyshm_open_args a = {Py_None, 0, 0, 0, 0, NULL, NULL, NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$pOpO:Slot", kwlist, &a.name,
                                     &a.create, &a.size, &a.exist_ok, &a.mode, &a.track,
                                     &a.wait))
        return -1;
    return pyshm_named_open(&self->head, &a);
}

/* ---- publishing ----------------------------------------------------------------- */

typedef struct {
    const void *data;
    size_t len;
    uint64_t generation;
} publish_arg;

/* A pyshm_op: the whole publish, waiting for the lock (no GIL). */
static shm_status
publish_op(pyshm_named *head, void *arg, shm_error *err)
{
    publish_arg *a = (publish_arg *)arg;

    return slot_publish(&((SlotObject *)head)->sl, a->data, a->len, SLOT_FOREVER,
                        &a->generation, err);
}

PyDoc_STRVAR(publish_doc,
"publish($self, data)\n"
"--\n\n"
"Make the bytes-like DATA (at most size bytes) the slot's value and return\n"
"its generation (1 for the first publish, one more each time).  Readers\n"
"see the old value or the new one, whole, never a mix.  Never waits for\n"
"readers; several writers take turns (a writer killed meanwhile is taken\n"
"over).  ValueError, and nothing published, when DATA is larger than size.");

static PyObject *
Slot_publish(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"data", NULL};
    PyObject *argv[1];
    Py_buffer view;
    publish_arg a;
    shm_error err;
    shm_status status = SHM_ETIMEOUT;
    int raised;

    if (pyshm_parse_args("publish", args, nargs, kwnames, names, 1, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0 || pyshm_check_side(&self->head, PYSHM_PUBLISH, "publish()") < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 0, "publish") < 0)
        return NULL;
    /* Exporting the buffer may have run Python code (close() say). */
    if (check_open(self) < 0)
        goto error;
    if ((uint64_t)view.len > self->sl.value_size) {
        PyErr_Format(PyExc_ValueError,
                     "publish(): a value of %zd bytes is larger than the slot's size (%llu "
                     "bytes); nothing was published", view.len,
                     (unsigned long long)self->sl.value_size);
        goto error;
    }
    a.data = view.buf;
    a.len = (size_t)view.len;
    a.generation = 0;
    if (view.len < PYSHM_NOGIL_COPY_MIN)
        status = slot_publish(&self->sl, a.data, a.len, SLOT_NOWAIT, &a.generation, &err);
    if (status == SHM_ETIMEOUT) {
        status = pyshm_run_unlocked(&self->head, publish_op, &a, &err, &raised);
        if (raised)
            goto error;
    }
    PyBuffer_Release(&view);
    if (status != SHM_OK)
        return pyshm_named_raise(&self->head, &err);
    self->seen = a.generation;
    return PyLong_FromUnsignedLongLong((unsigned long long)a.generation);

error:
    PyBuffer_Release(&view);
    return NULL;
}

/* A pyshm_op: wait until the write lock is free -- taken and let go on the
   way, so that nothing is held when the GIL is taken back (the cell it
   chose is left empty: it is not the latest, no reader needs it). */
static shm_status
wait_writable_op(pyshm_named *head, void *arg, shm_error *err)
{
    slot_t *sl = &((SlotObject *)head)->sl;
    slot_loan cell;
    shm_status status;

    (void)arg;
    status = slot_reserve(sl, SLOT_FOREVER, &cell, err);
    if (status == SHM_OK)
        slot_abort(sl, &cell);
    return status;
}

/* The try of take_write_lock (see pyshm_take): the lock and a cell, if
   the lock is free.  ARG: the loan. */
static shm_status
take_cell(pyshm_named *head, void *arg, shm_error *err)
{
    return slot_reserve(&((SlotObject *)head)->sl, SLOT_NOWAIT, &((pyshm_loan *)arg)->cell,
                        err);
}

/* The loan hooks of named.c: the write lock and a cell to fill (the
   mapping pinned), then publish or drop it.  reserve() waits for the lock
   as publish() does: for ever (Ctrl-C and close() end it). */
static int
take_write_lock(pyshm_named *head, pyshm_loan *loan, size_t size, PyObject *timeout)
{
    (void)timeout;
    if (pyshm_take(head, take_cell, wait_writable_op, loan) < 0)
        return -1;
    loan->data = loan->cell.data;
    loan->len = size;
    return 0;
}

static void
publish_or_drop(pyshm_named *head, pyshm_loan *loan, int commit)
{
    SlotObject *self = (SlotObject *)head;

    if (commit)
        self->seen = slot_commit(&self->sl, &loan->cell, loan->len);
    else
        slot_abort(&self->sl, &loan->cell);
}

PyDoc_STRVAR(reserve_doc,
"reserve($self, n=None)\n"
"--\n\n"
"A loan of the slot's next value, for a with statement:\n\n"
"    with slot.reserve() as buf:     # a writable memoryview of size bytes\n"
"        buf[:8] = ...               # (old contents: not zeroed)\n\n"
"The first N bytes (N=None: size) are published as the new value when the\n"
"block ends normally and never seen when it raises.  Entering waits for\n"
"the write lock and holds it until the block ends: other writers wait,\n"
"readers never do.  The memoryview is released at the end; BufferError\n"
"there if other exports of it (NumPy arrays, slices) are still alive.\n"
"ValueError for N < 0 or N > size.");

static PyObject *
Slot_reserve(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"n", NULL};
    PyObject *argv[1];
    Py_ssize_t n;

    if (pyshm_parse_args("reserve", args, nargs, kwnames, names, 1, 0, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (argv[0] == NULL || argv[0] == Py_None)
        return pyshm_loan_new(self->head.st, (PyObject *)self, PYSHM_PUBLISH,
                              (size_t)self->sl.value_size, NULL);
    if (pyshm_ssize_arg(argv[0], "reserve(): n", 0, &n) < 0)
        return NULL;
    if (check_open(self) < 0)       /* __index__ may have run Python code */
        return NULL;
    if ((uint64_t)n > self->sl.value_size) {
        PyErr_Format(PyExc_ValueError, "reserve(): %zd bytes is more than the slot's size "
                     "(%llu bytes)", n, (unsigned long long)self->sl.value_size);
        return NULL;
    }
    return pyshm_loan_new(self->head.st, (PyObject *)self, PYSHM_PUBLISH, (size_t)n, NULL);
}

/* ---- reading ------------------------------------------------------------------- */

/* slot_read() into CAP bytes at BUF: without the GIL, pinned, when large. */
static shm_status
read_into(SlotObject *self, void *buf, size_t cap, size_t *len, uint64_t *generation,
          shm_error *err)
{
    uint64_t token;
    shm_status status;

    if (cap < PYSHM_NOGIL_COPY_MIN)
        return slot_read(&self->sl, buf, cap, len, generation, err);
    token = pyshm_pin(&self->head);
    Py_BEGIN_ALLOW_THREADS
    status = slot_read(&self->sl, buf, cap, len, generation, err);
    Py_END_ALLOW_THREADS
    pyshm_unpin(&self->head, token);
    return status;
}

/*
 * The newest whole value as a new bytes object (*RESULT) and its
 * generation.  First one copy straight into a bytes object of the size the
 * value has (the read's mark keeps writers off its cell); if a writer
 * overwrote it anyway, the core's read (with its bounded retries) into a
 * bytes object as large as the value it reports.  0, or -1 with an
 * exception set.
 */
static int
read_value(SlotObject *self, PyObject **result, uint64_t *generation)
{
    slot_view v;
    PyObject *bytes;
    shm_error err;
    shm_status status;
    size_t len;
    uint64_t token = 0;
    int pinned, whole;

    if (check_open(self) < 0)
        return -1;
    if (slot_read_begin(&self->sl, &v, &err) != SHM_OK) {
        pyshm_named_raise(&self->head, &err);
        return -1;
    }
    /* Allocating a bytes object runs no Python code: the slot stays open. */
    bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)v.len);
    if (bytes == NULL) {
        (void)slot_read_end(&self->sl, &v);
        return -1;
    }
    pinned = v.len >= PYSHM_NOGIL_COPY_MIN;
    if (pinned) {
        /* The mark is let go through the mapping: the pin keeps it. */
        token = pyshm_pin(&self->head);
        Py_BEGIN_ALLOW_THREADS
        memcpy(PyBytes_AS_STRING(bytes), v.data, v.len);
        Py_END_ALLOW_THREADS
    } else if (v.len > 0) {
        memcpy(PyBytes_AS_STRING(bytes), v.data, v.len);
    }
    whole = slot_read_end(&self->sl, &v);
    if (pinned)
        pyshm_unpin(&self->head, token);
    len = v.len;
    while (!whole) {
        status = read_into(self, PyBytes_AS_STRING(bytes), len, &v.len, &v.generation, &err);
        if (status == SHM_OK) {
            if (v.len < len && _PyBytes_Resize(&bytes, (Py_ssize_t)v.len) < 0)
                return -1;
            break;
        }
        Py_DECREF(bytes);
        if (status != SHM_EVALUE || v.len <= len) {
            pyshm_named_raise(&self->head, &err);
            return -1;
        }
        /* A longer value came: a buffer of its size, and again. */
        len = v.len;
        bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
        if (bytes == NULL)
            return -1;
        if (check_open(self) < 0) {
            Py_DECREF(bytes);
            return -1;
        }
    }
    self->seen = v.generation;
    *generation = v.generation;
    *result = bytes;
    return 0;
}

PyDoc_STRVAR(read_doc,
"read($self)\n"
"--\n\n"
"Return the slot's value: one whole value that some publish wrote, never a\n"
"mix of two (b\"\" before the first publish).  Never waits for writers.");

static PyObject *
Slot_read(SlotObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result;
    uint64_t generation;

    if (read_value(self, &result, &generation) < 0)
        return NULL;
    return result;
}

PyDoc_STRVAR(snapshot_doc,
"snapshot($self)\n"
"--\n\n"
"Return (generation, value): the slot's value and the generation it was\n"
"published as, together ((0, b\"\") before the first publish).");

static PyObject *
Slot_snapshot(SlotObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *value;
    uint64_t generation;

    if (read_value(self, &value, &generation) < 0)
        return NULL;
    return Py_BuildValue("(KN)", (unsigned long long)generation, value);
}

PyDoc_STRVAR(readinto_doc,
"readinto($self, buffer)\n"
"--\n\n"
"Copy the slot's value into the writable BUFFER (a bytearray, a\n"
"ctypes.Structure, a NumPy array...) and return its length; the rest of\n"
"BUFFER is left as it was.  ValueError, and nothing copied, when the value\n"
"is larger than BUFFER.  Nothing is allocated.");

static PyObject *
Slot_readinto(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"buffer", NULL};
    PyObject *argv[1];
    Py_buffer view;
    Py_ssize_t cap;
    shm_error err;
    shm_status status;
    size_t len = 0;
    uint64_t generation = 0;

    if (pyshm_parse_args("readinto", args, nargs, kwnames, names, 1, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 1, "readinto") < 0)
        return NULL;
    if (check_open(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    cap = view.len;
    status = read_into(self, view.buf, (size_t)cap, &len, &generation, &err);
    PyBuffer_Release(&view);
    if (status == SHM_EVALUE && len > (size_t)cap) {
        PyErr_Format(PyExc_ValueError,
                     "readinto(): the value (generation %llu) has %zu bytes and does not "
                     "fit in a buffer of %zd bytes; nothing was copied",
                     (unsigned long long)generation, len, cap);
        return NULL;
    }
    if (status != SHM_OK)
        return pyshm_named_raise(&self->head, &err);
    self->seen = generation;
    return PyLong_FromSize_t(len);
}

/* ---- waiting ------------------------------------------------------------------- */

typedef struct {
    uint64_t after;
    slot_waiting w;
    uint64_t generation;
} wait_arg;

/* A pyshm_op: wait for a newer generation (no GIL; SHM_EINTR at the end of
   each slice, for the signal check). */
static shm_status
wait_op(pyshm_named *head, void *arg, shm_error *err)
{
    wait_arg *a = (wait_arg *)arg;

    return slot_wait(&((SlotObject *)head)->sl, a->after, &a->w, &a->generation, err);
}

/* wait()'s AFTER: None (the generation this object saw), or an int >= 0. */
static int
after_arg(SlotObject *self, PyObject *obj, uint64_t *after)
{
    unsigned long long value;

    if (obj == NULL || obj == Py_None) {
        *after = self->seen;
        return 0;
    }
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "wait(): after must be an int or None, not '%.100s'",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_RichCompareBool(obj, Py_False, Py_LT) == 1) {
        PyErr_SetString(PyExc_ValueError, "wait(): after must not be negative");
        return -1;
    }
    value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        /* Beyond 64 bits: a generation no slot reaches (they stop at 2**56). */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        value = (unsigned long long)-1;
    }
    *after = (uint64_t)value;
    return 0;
}

PyDoc_STRVAR(wait_doc,
"wait($self, after=None, timeout=None)\n"
"--\n\n"
"Block until the slot's generation is greater than AFTER (None: the last\n"
"generation this object returned or saw) and return it.  Sleeps without\n"
"the GIL, wakes when any process publishes; Ctrl-C interrupts it, and\n"
"close() from another thread ends it with ValueError.  TIMEOUT None waits\n"
"for ever, 0 only looks, otherwise seconds: TimeoutError when none came.");

static PyObject *
Slot_wait(SlotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"after", "timeout", NULL};
    PyObject *argv[2];
    double seconds;
    int forever, raised;
    wait_arg a;
    shm_error err;
    shm_status status;

    if (pyshm_parse_args("wait", args, nargs, kwnames, names, 2, 0, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (after_arg(self, argv[0], &a.after) < 0)
        return NULL;
    if (pyshm_timeout_arg(argv[1], &seconds, &forever) < 0)
        return NULL;
    if (check_open(self) < 0)       /* the arguments may have run Python code */
        return NULL;
    a.generation = slot_generation(&self->sl);
    if (a.generation <= a.after) {
        a.w = slot_wait_until(pyshm_deadline(forever, seconds));
        status = pyshm_run_unlocked(&self->head, wait_op, &a, &err, &raised);
        if (raised)
            return NULL;
        if (status == SHM_ETIMEOUT) {
            PyErr_Format(PyExc_TimeoutError, "wait(): no generation after %llu was "
                         "published before the timeout", (unsigned long long)a.after);
            pyshm_ready_rearm(&self->head);     /* fileno()'s protocol */
            return NULL;
        }
        if (status != SHM_OK) {
            /* Closed by another thread meanwhile: its own message. */
            if (check_open(self) < 0)
                return NULL;
            return pyshm_named_raise(&self->head, &err);
        }
    }
    self->seen = a.generation;
    return PyLong_FromUnsignedLongLong((unsigned long long)a.generation);
}

/* ---- readiness (binding/ready.c) ------------------------------------------------ */

PyDoc_STRVAR(fileno_doc,
"fileno($self)\n"
"--\n\n"
"A descriptor that becomes readable when a generation newer than the one\n"
"this object saw may exist, for selectors, trio, Qt and other event loops\n"
"(Windows: a socket; see also wait_handle).  After it is readable, call\n"
"wait(timeout=0) (or read the value) until wait(timeout=0) raises\n"
"TimeoutError, then wait on it again: that TimeoutError arms it anew.\n"
"The descriptor belongs to the slot: close() closes it.");

/* The kind's readiness hooks: the generation word, and a generation newer
   than ARG (wait()'s after; NULL: the one this object saw). */
static int
slot_ready_arm(pyshm_named *head, int side, PyObject *arg, int spin)
{
    SlotObject *self = (SlotObject *)head;
    sync_watch w;
    uint64_t after;

    (void)side;     /* one side: a newer value */
    (void)spin;     /* a slot's waiter arms at once (no spin before it) */
    if (after_arg(self, arg, &after) < 0)
        return -1;
    w = pyshm_ready_word(&self->sl.sync, SYNC_WORD_DATA, &self->sl.hdr->gen_seq,
                         &self->sl.hdr->gen_waiters);
    if (pyshm_ready_arm_watch(head, PYSHM_WATCH_DATA, &w) < 0)
        return -1;
    /* Armed: now look (a publish after this wakes the descriptor). */
    return slot_generation(&self->sl) > after;
}

static int
slot_ready_now(pyshm_named *head)
{
    SlotObject *self = (SlotObject *)head;

    return slot_generation(&self->sl) > self->seen;
}

static sync_watch
slot_ready_watch(pyshm_named *head)
{
    SlotObject *self = (SlotObject *)head;

    return pyshm_ready_word(&self->sl.sync, SYNC_WORD_DATA, &self->sl.hdr->gen_seq,
                            &self->sl.hdr->gen_waiters);
}

/* ---- attributes ---------------------------------------------------------------- */

static PyObject *
Slot_get_generation(SlotObject *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    self->seen = slot_generation(&self->sl);
    return PyLong_FromUnsignedLongLong((unsigned long long)self->seen);
}

/* Private (pyshm.asyncio.Slot.wait resolves after=None once, as the sync
   wait does): the generation this object returned or saw. */
static PyObject *
Slot_get_seen(SlotObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->seen);
}

static PyObject *
Slot_get_size(SlotObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->head.size);
}

static PyGetSetDef Slot_getset[] = {
    {"name", pyshm_named_get_name, NULL,
     "The slot's segment name, without the leading '/' on POSIX.", NULL},
    {"size", (getter)Slot_get_size, NULL,
     "The largest value, in bytes (an opened slot reports its creator's).\n"
     "Still readable after close().", NULL},
    {"generation", (getter)Slot_get_generation, NULL,
     "The generation of the newest value: how many values were published\n"
     "(0: none yet).  A snapshot that other processes may change at once.", NULL},
    {"closed", pyshm_named_get_closed, NULL, "True once close() has run.", NULL},
    {"_seen", (getter)Slot_get_seen, NULL,
     "Private: the generation this object returned or saw (wait()'s default\n"
     "after).", NULL},
    PYSHM_READY_GETSET(
     "Windows: an event HANDLE (an int) that is signalled when a newer\n"
     "generation may exist, for WaitForMultipleObjects and loops that wait on\n"
     "handles; the protocol of fileno() applies.  POSIX: the descriptor of\n"
     "fileno()."),
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
slot_repr(pyshm_named *head)
{
    SlotObject *self = (SlotObject *)head;

    return PyUnicode_FromFormat("<pyshm.Slot name=%R size=%llu generation=%llu>", head->name,
                                (unsigned long long)self->sl.value_size,
                                (unsigned long long)slot_generation(&self->sl));
}

/* ---- type ------------------------------------------------------------------------ */

PyDoc_STRVAR(close_doc,
"close($self)\n"
"--\n\n"
"Detach from the slot and unmap it; the name and the value stay (see\n"
"unlink()).  Idempotent.  Waits and publishes blocked in other threads of\n"
"this process end with ValueError; the mapping is released when the last\n"
"one has left.");

PyDoc_STRVAR(unlink_doc,
"unlink($self)\n"
"--\n\n"
"Remove the slot's name (POSIX) so no one else can open it; processes\n"
"attached keep working until they close.  Allowed after close().  On\n"
"Windows the name and its wait objects die with the last handle and this\n"
"does nothing.");

PyDoc_STRVAR(reduce_doc,
"__reduce__($self, /)\n"
"--\n\n"
"Pickle by name: the receiving process opens the same slot, as\n"
"multiprocessing does with arguments under 'spawn'.");

static PyMethodDef Slot_methods[] = {
    {"publish", (PyCFunction)(void (*)(void))Slot_publish, METH_FASTCALL | METH_KEYWORDS,
     publish_doc},
    {"reserve", (PyCFunction)(void (*)(void))Slot_reserve, METH_FASTCALL | METH_KEYWORDS,
     reserve_doc},
    {"read", (PyCFunction)Slot_read, METH_NOARGS, read_doc},
    {"readinto", (PyCFunction)(void (*)(void))Slot_readinto, METH_FASTCALL | METH_KEYWORDS,
     readinto_doc},
    {"snapshot", (PyCFunction)Slot_snapshot, METH_NOARGS, snapshot_doc},
    {"wait", (PyCFunction)(void (*)(void))Slot_wait, METH_FASTCALL | METH_KEYWORDS, wait_doc},
    PYSHM_NAMED_METHODS(close_doc, unlink_doc, reduce_doc),
    PYSHM_READY_METHODS(fileno_doc),
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Slot_doc,
"Slot(name=None, create=False, size=0, *, exist_ok=False, mode=_DEFAULT_MODE, "
"track=False, wait=None)\n"
"--\n\n"
"The latest value of up to SIZE bytes, in the named shared-memory segment\n"
"NAME: the state a program publishes for others to look at.  Writers\n"
"replace it whole (publish(), reserve()); readers (read(), readinto(),\n"
"snapshot()) always get one complete value that some publish wrote, with\n"
"its generation, never a mix of two; wait() sleeps until a newer one.\n"
"Writers never wait for readers, readers never wait for writers, and a\n"
"writer killed at any instant leaves the previous value readable.\n\n"
"create=True makes a new slot of SIZE bytes (> 0; FileExistsError if the\n"
"name is taken, unless exist_ok=True, which opens the existing one: a SIZE\n"
"given must be its size, or ValueError and nothing changes); without it an\n"
"existing slot is opened (FileNotFoundError if none; pyshm.ProtocolError if\n"
"the segment is not a slot).  name=None with create=True picks a short\n"
"random name.  MODE, track=True: as for SharedMemory.  wait=SECONDS: a\n"
"slot that does not exist yet (or is not yet formatted) is waited for\n"
"(sleeping; Ctrl-C ends it) that long at most, then FileNotFoundError.  A\n"
"Slot pickles by name: the receiving process opens the same slot.");

static const pyshm_kind kind = {
    .type_name = "Slot",
    .what = "slot",
    .size_arg = "size",
    .size_rule = PYSHM_EXACTLY,
    .size_default = 0,
    .size_check = value_size_arg,
    .segment_size = slot_bytes,
    .format = format_slot,
    PYSHM_CORE_KIND(slot),
    .loan_take = take_write_lock,
    .loan_end = publish_or_drop,
    .repr = slot_repr,
    .ready_arm = slot_ready_arm,
    .ready_now = slot_ready_now,
    .ready_watch = slot_ready_watch,
};

static PyType_Slot Slot_slots[] = {
    PYSHM_NAMED_SLOTS,
    {Py_tp_init, Slot_init},
    {Py_tp_methods, Slot_methods},
    {Py_tp_getset, Slot_getset},
    {Py_tp_doc, (void *)Slot_doc},
    {0, NULL},
};

static PyType_Spec Slot_spec = PYSHM_NAMED_SPEC("Slot", SlotObject, Slot_slots);

int
pyshm_slot_exec(PyObject *module, pyshm_state *st)
{
    if (pyshm_add_named_type(module, st, &Slot_spec, &kind, &st->Slot_type) < 0)
        return -1;
    /* The first four bytes of every slot (native byte order): tools tell
       slots from channels and raw segments by them without opening them. */
    return PyModule_AddIntConstant(module, "_SLOT_MAGIC", (long)SLOT_MAGIC);
}
