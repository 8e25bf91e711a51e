/*
 * binding/loan_type.c -- pyshm.Loan: the context manager behind
 * Channel.reserve(size), Channel.recv_view() and Slot.reserve(n), a
 * zero-copy view of a message inside the ring or of a slot's next value.
 *
 * Owns: LoanObject, pyshm_loan_new, pyshm_loan_exec.
 * May include: binding/binding.h, the C library.
 *
 *   with ch.reserve(size) as buf:     buf: a writable memoryview of SIZE
 *       ...                           bytes in the ring; published when the
 *                                     block ends normally, never seen when
 *                                     it raises
 *   with ch.recv_view() as view:      view: a read-only memoryview of the
 *       ...                           next message in place; consumed when
 *                                     the block ends normally, left queued
 *                                     when it raises
 *   with slot.reserve(n) as buf:      buf: a writable memoryview of N bytes
 *       ...                           of a free cell; published as the new
 *                                     value when the block ends normally,
 *                                     never seen when it raises
 *
 * __enter__ waits like send()/recv()/publish() and takes the side's lock
 * (other senders, receivers or writers of the object wait until the block
 * ends) and pins the mapping (named.c: pyshm_loan_begin).  The memoryview
 * is exported by this object, which counts its exports like an mmap.
 *
 * The end of the block must not leave a view that reads reused memory: the
 * loan releases the memoryview it gave out (touching it then raises
 * ValueError), and if anything else still exports the memory -- a NumPy
 * array made with frombuffer, a slice, a second memoryview -- it refuses to
 * end: __exit__ raises BufferError and the loan stays held until the last
 * export is released, and then it ends as a failed block does (nothing
 * sent or published; the message stays queued), in whichever thread
 * releases it.  At close() such a loan ends at the latest, its memory made
 * private first (named.c, retire).
 *
 * Ownership (named.c, "Loans"): a loan belongs to the process that
 * took it and to this object.  __exit__ is the block's end and belongs to
 * the thread that entered it (RuntimeError from any other); the other ends
 * -- the last export released, the object freed (by the garbage collector
 * in any thread), close(), an owner thread that ended without leaving the
 * block (pyshm_loan_abandon) -- happen in whichever thread they come.  In a
 * fork child a loan the parent held is dead: leaving its block ends
 * nothing of the segment (a normal exit raises RuntimeError to say so; an
 * exception in flight is left alone), its views there are private copies.
 */
#include "binding/binding.h"

enum { LOAN_NEW, LOAN_ACTIVE, LOAN_REFUSED, LOAN_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *named;        /* the Channel or Slot (strong) */
    PyObject *timeout;      /* as given to reserve()/recv_view() */
    size_t size;            /* bytes to lend (send, publish) */
    int state;              /* LOAN_* */
    pyshm_loan loan;        /* while LOAN_ACTIVE or LOAN_REFUSED */
    PyObject *view;         /* the memoryview __enter__ returned; NULL once released */
    Py_ssize_t exports;     /* live buffer exports of this object */
} LoanObject;

static const char *
what(LoanObject *self)
{
    return self->loan.side == PYSHM_RECV ? "recv_view()" : "reserve()";
}

/* What a loan that ends as a failed block leaves: by side, as of now
   ("is") and as said after the fact ("was"). */
static const char *const lost_is[PYSHM_NSIDES] = {
    [PYSHM_SEND] = "nothing is sent",
    [PYSHM_RECV] = "the message stays queued",
    [PYSHM_PUBLISH] = "nothing is published",
};
static const char *const lost_was[PYSHM_NSIDES] = {
    [PYSHM_SEND] = "nothing was sent",
    [PYSHM_RECV] = "the message was not consumed",
    [PYSHM_PUBLISH] = "nothing was published",
};

PyObject *
pyshm_loan_new(pyshm_state *st, PyObject *named, int side, size_t size, PyObject *timeout)
{
    LoanObject *self = PyObject_GC_New(LoanObject, st->Loan_type);

    if (self == NULL)
        return NULL;
    self->named = Py_NewRef(named);
    self->timeout = Py_NewRef(timeout != NULL ? timeout : Py_None);
    self->size = size;
    self->state = LOAN_NEW;
    self->loan.side = side;
    self->loan.data = NULL;
    self->loan.len = 0;
    self->loan.copy = NULL;
    self->loan.state = PYSHM_LOAN_IDLE;
    self->loan.refused = 0;
    self->loan.forked = 0;
    self->loan.retiring = 0;
    self->loan.pin = 0;
    self->loan.owner = NULL;
    self->loan.object = (PyObject *)self;
    self->loan.named = NULL;
    self->loan.priv.at = self->loan.priv.copy = NULL;
    self->loan.priv.size = 0;
    self->loan.next = self->loan.prev = NULL;
    self->view = NULL;
    self->exports = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/* End the held loan (COMMIT as pyshm_loan_end), in any thread. */
static void
finish(LoanObject *self, int commit)
{
    pyshm_loan_end(self->named, &self->loan, commit);
    self->state = LOAN_DONE;
}

/* Release the memoryview __enter__ gave out.  It refuses (BufferError,
   cleared here) while it has exports of its own; it is let go of either
   way, and those exports then count as the loan's. */
static void
release_view(LoanObject *self)
{
    PyObject *released;

    if (self->view == NULL)
        return;
    released = PyObject_CallMethod(self->view, "release", NULL);
    if (released == NULL)
        PyErr_Clear();
    Py_XDECREF(released);
    Py_CLEAR(self->view);
}

/* The block is over but exports live on: the loan ends when the last one
   goes (Loan_releasebuffer), or at close() (named.c, settle). */
static void
refuse(LoanObject *self)
{
    self->state = LOAN_REFUSED;
    self->loan.refused = 1;
}

void
pyshm_loan_abandon(PyObject *loan)
{
    LoanObject *self = (LoanObject *)loan;

    if (self->state != LOAN_ACTIVE)
        return;
    release_view(self);
    if (self->exports == 0)
        finish(self, 0);
    else
        refuse(self);
}

PyDoc_STRVAR(enter_doc,
"__enter__($self, /)\n"
"--\n\n"
"Wait for the loan (room for the record, the next message, the slot's\n"
"write lock) and return its memoryview.");

static PyObject *
Loan_enter(LoanObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *view;

    if (self->named == NULL) {
        PyErr_SetString(PyExc_TypeError, "a Loan comes from Channel.reserve(), "
                        "Channel.recv_view() or Slot.reserve()");
        return NULL;
    }
    if (self->state != LOAN_NEW) {
        PyErr_Format(PyExc_ValueError, "%s: a loan is used once; call it again for the "
                     "next message", what(self));
        return NULL;
    }
    if (pyshm_loan_begin(self->named, &self->loan, self->size, self->timeout) < 0)
        return NULL;
    self->state = LOAN_ACTIVE;
    view = PyMemoryView_FromObject((PyObject *)self);
    if (view == NULL) {
        finish(self, 0);
        return NULL;
    }
    self->view = Py_NewRef(view);
    return view;
}

PyDoc_STRVAR(exit_doc,
"__exit__($self, exc_type, exc, tb, /)\n"
"--\n\n"
"End the loan: publish the record or the value, or consume the message,\n"
"when the block ended normally, else leave nothing sent or published and\n"
"the message queued.  The\n"
"memoryview is released; BufferError when other exports of it are still\n"
"alive (the loan then ends, as a failed block, when they are released, in\n"
"any thread, or at close()).  RuntimeError from a thread other than the\n"
"one that entered the block, and on a normal exit in a fork child of the\n"
"process that took the loan (it is dead there: nothing is sent, published\n"
"or consumed).");

static PyObject *
Loan_exit(LoanObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int failed = nargs >= 1 && args[0] != Py_None;
    pyshm_state *st = pyshm_state_from_type(Py_TYPE(self));

    if (self->state != LOAN_ACTIVE) {
        PyErr_Format(PyExc_ValueError, "%s: the loan is not held (__exit__ without "
                     "__enter__, or twice)", what(self));
        return NULL;
    }
    if (self->loan.forked) {
        /* The parent's loan, dead in this child: nothing of the segment. */
        release_view(self);
        if (self->exports == 0)
            finish(self, 0);
        else
            refuse(self);
        if (failed)
            Py_RETURN_NONE;     /* the exception in flight says enough */
        PyErr_Format(PyExc_RuntimeError,
                     "%s: this loan was taken before fork() by the parent process and is "
                     "dead in this child: %s here (the parent ends its own loan)",
                     what(self), lost_was[self->loan.side]);
        return NULL;
    }
    if (!pyshm_thread_is(st, self->loan.owner)) {
        PyErr_Format(PyExc_RuntimeError, "%s: a loan ends in the thread that took it",
                     what(self));
        return NULL;
    }
    release_view(self);
    if (self->exports == 0) {
        finish(self, !failed);
        Py_RETURN_NONE;
    }
    refuse(self);
    PyErr_Format(PyExc_BufferError,
                 "%s: %zd export(s) of the loan's memory (a NumPy array, a slice, a "
                 "memoryview of the view...) are still alive at the end of the with "
                 "block; the loan ends when they are released, as a failed block: %s",
                 what(self), self->exports, lost_is[self->loan.side]);
    return NULL;
}

static int
Loan_getbuffer(LoanObject *self, Py_buffer *view, int flags)
{
    if (self->state != LOAN_ACTIVE) {
        PyErr_Format(PyExc_ValueError, "%s: the loan is not held: no memory to view",
                     what(self));
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->loan.data,
                          (Py_ssize_t)self->loan.len, self->loan.side == PYSHM_RECV,
                          flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void
Loan_releasebuffer(LoanObject *self, Py_buffer *Py_UNUSED(view))
{
    self->exports--;
    if (self->exports > 0 || self->state != LOAN_REFUSED)
        return;
    /* The last export of a refused loan, in whatever thread: it ends now,
       as a failed block. */
    finish(self, 0);
}

static int
Loan_traverse(LoanObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->named);
    Py_VISIT(self->timeout);
    Py_VISIT(self->view);
    Py_VISIT(self->loan.owner);
    return 0;
}

static int
Loan_clear(LoanObject *self)
{
    /* Only the view can close a cycle (it holds this object); the channel
       or slot stays until dealloc, which may still need it to end the loan. */
    Py_CLEAR(self->view);
    return 0;
}

static void
Loan_dealloc(LoanObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    /* Taken and never ended (a with block that was never left, a collected
       cycle), in whatever thread frees it: no export is alive, so it ends
       as a failed block. */
    if (self->state == LOAN_ACTIVE || self->state == LOAN_REFUSED) {
        Py_CLEAR(self->view);
        pyshm_loan_end(self->named, &self->loan, 0);
        self->state = LOAN_DONE;
    }
    Py_CLEAR(self->view);
    Py_CLEAR(self->named);
    Py_CLEAR(self->timeout);
    PyObject_GC_Del(self);
    Py_DECREF(tp);
}

static PyObject *
Loan_get_size(LoanObject *self, void *Py_UNUSED(closure))
{
    if (self->loan.side != PYSHM_RECV)
        return PyLong_FromSize_t(self->size);
    if (self->state == LOAN_ACTIVE || self->state == LOAN_REFUSED)
        return PyLong_FromSize_t(self->loan.len);
    Py_RETURN_NONE;
}

static PyObject *
Loan_get_active(LoanObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->state == LOAN_ACTIVE || self->state == LOAN_REFUSED);
}

static PyObject *
Loan_repr(LoanObject *self)
{
    static const char *const states[] = {"not taken", "held", "held (exports alive)",
                                         "ended"};
    if (self->loan.forked && (self->state == LOAN_ACTIVE || self->state == LOAN_REFUSED))
        return PyUnicode_FromFormat("<pyshm.Loan %s dead (taken before fork())>", what(self));
    if (self->state == LOAN_REFUSED && self->loan.state == PYSHM_LOAN_CARVED)
        return PyUnicode_FromFormat("<pyshm.Loan %s ended at close() (exports alive, "
                                    "private)>", what(self));
    return PyUnicode_FromFormat("<pyshm.Loan %s %s>", what(self), states[self->state]);
}

static PyMethodDef Loan_methods[] = {
    {"__enter__", (PyCFunction)Loan_enter, METH_NOARGS, enter_doc},
    {"__exit__", (PyCFunction)(void (*)(void))Loan_exit, METH_FASTCALL, exit_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Loan_getset[] = {
    {"size", (getter)Loan_get_size, NULL,
     "reserve(): the bytes reserved (a Slot's: the value's length once\n"
     "published).  recv_view(): the message's size while held, else None.", NULL},
    {"active", (getter)Loan_get_active, NULL,
     "True from __enter__ until the loan has ended.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(Loan_doc,
"A zero-copy loan of a channel's ring or a slot's next value: what\n"
"Channel.reserve(), Channel.recv_view() and Slot.reserve() return, to use\n"
"in a with statement.  Not made directly.");

static PyType_Slot Loan_slots[] = {
    {Py_tp_dealloc, Loan_dealloc},
    {Py_tp_traverse, Loan_traverse},
    {Py_tp_clear, Loan_clear},
    {Py_tp_repr, Loan_repr},
    {Py_tp_methods, Loan_methods},
    {Py_tp_getset, Loan_getset},
    {Py_tp_doc, (void *)Loan_doc},
    {Py_bf_getbuffer, Loan_getbuffer},
    {Py_bf_releasebuffer, Loan_releasebuffer},
    {0, NULL},
};

static PyType_Spec Loan_spec = {
    .name = "pyshm.Loan",
    .basicsize = sizeof(LoanObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Loan_slots,
};

int
pyshm_loan_exec(PyObject *module, pyshm_state *st)
{
    return pyshm_add_type(module, &Loan_spec, &st->Loan_type);
}
