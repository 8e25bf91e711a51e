/*
 * binding/buffer_type.c -- pyshm.MessageBuffer: the fresh memory that one
 * received object message is copied into, exported through the buffer
 * protocol.  recv_obj() unpickles from memoryview slices of it, so NumPy
 * arrays (and other out-of-band buffers) rebuilt by pickle point straight
 * into it: one copy out of the ring, none after.  It lives as long as any
 * of them does.
 *
 * Owns: MessageBufferObject, pyshm_buffer_new, pyshm_buffer_exec, the
 * spares (pyshm_state.spares, pyshm_buffer_spares_close).
 * May include: binding/binding.h, platform/pages.h, the C library.
 *
 * Fresh memory is the cost to beat (see platform/pages.h): a buffer of at
 * least SHM_PAGES_ALIGN bytes is its own anonymous mapping advised for
 * transparent huge pages; a smaller one comes from the raw allocator.
 * Either way the data starts on a 64-byte boundary, as the frame's
 * out-of-band buffers are laid out at multiples of 64 (objects.c).
 *
 * Spares: even huge pages must be faulted in and zeroed, once per 2 MiB,
 * which costs a new 64 MiB buffer about as much as the copy into it.  A
 * large buffer's mapping therefore outlives it: freed, it is kept (at most
 * PYSHM_SPARES of them, PYSHM_SPARE_BYTES in all) with its pages given
 * back to the OS lazily (shm_pages_idle: the OS takes them only when it
 * needs memory), and the next buffer of a size it fits -- not less than
 * half of it -- takes it over: a loop of recv_obj() calls fills the same
 * warm pages again.  The kept pages still count in the process's resident
 * size until the OS takes them.  A buffer's bytes are all written (the
 * frame's copy) before anyone sees them, so what a spare held never shows.
 */
#include "binding/binding.h"
#include "platform/pages.h"

#include <stdint.h>     /* uintptr_t */

#define ALIGN 64

typedef struct {
    PyObject_HEAD
    unsigned char *data;    /* ALIGN-aligned start */
    size_t size;
    void *raw;              /* small: the PyMem_Raw block behind data; else NULL */
    shm_pages pages;        /* large: the mapping behind data */
    pyshm_state *st;        /* its module's (the type keeps the module alive) */
} MessageBufferObject;

/* A kept mapping that SIZE bytes fit and that is no more than twice as
   large (the smallest such), taken over into *PAGES; 0 when none. */
static int
take_spare(pyshm_state *st, size_t size, shm_pages *pages)
{
    int i, best = -1;

    for (i = 0; i < PYSHM_SPARES; i++) {
        const shm_pages *s = &st->spares[i];
        if (s->addr != NULL && s->size >= size && s->size / 2 <= size &&
            (best < 0 || s->size < st->spares[best].size))
            best = i;
    }
    if (best < 0)
        return 0;
    *pages = st->spares[best];
    st->spares[best].addr = st->spares[best].base = NULL;
    st->spares[best].size = st->spares[best].mapped = 0;
    return 1;
}

/* Keep PAGES (taken over) for a buffer to come, its pages given back
   lazily: newest first, in the first empty slot's place or the oldest's,
   and then as many as PYSHM_SPARE_BYTES allows, newest first; or unmap it
   (larger than that, the module cleared).  With the GIL. */
static void
keep_spare(pyshm_state *st, shm_pages *pages)
{
    size_t total = 0;
    int i, slot;

    if (st->spares_closed || pages->mapped > PYSHM_SPARE_BYTES) {
        shm_pages_free(pages);
        return;
    }
    for (slot = 0; slot < PYSHM_SPARES - 1 && st->spares[slot].base != NULL; slot++)
        ;
    shm_pages_free(&st->spares[slot]);     /* the oldest, when none is empty */
    for (i = slot; i > 0; i--)
        st->spares[i] = st->spares[i - 1];
    shm_pages_idle(pages);
    st->spares[0] = *pages;
    pages->addr = pages->base = NULL;
    pages->size = pages->mapped = 0;
    for (i = 0; i < PYSHM_SPARES; i++) {
        total += st->spares[i].mapped;
        if (total > PYSHM_SPARE_BYTES) {
            total -= st->spares[i].mapped;
            shm_pages_free(&st->spares[i]);
        }
    }
}

void
pyshm_buffer_spares_close(pyshm_state *st)
{
    int i;

    st->spares_closed = 1;
    for (i = 0; i < PYSHM_SPARES; i++)
        shm_pages_free(&st->spares[i]);
}

PyObject *
pyshm_buffer_new(pyshm_state *st, size_t size, unsigned char **data)
{
    MessageBufferObject *self;
    shm_error err;
    shm_status status;

    if (size > (size_t)PY_SSIZE_T_MAX - ALIGN)
        return PyErr_NoMemory();
    self = PyObject_New(MessageBufferObject, st->MessageBuffer_type);
    if (self == NULL)
        return NULL;
    self->data = NULL;
    self->size = size;
    self->raw = NULL;
    self->st = st;
    self->pages.addr = self->pages.base = NULL;
    self->pages.size = self->pages.mapped = 0;
    if (size >= SHM_PAGES_ALIGN) {
        status = SHM_OK;
        if (!take_spare(st, size, &self->pages)) {
            Py_BEGIN_ALLOW_THREADS
            status = shm_pages_alloc(&self->pages, size, &err);
            Py_END_ALLOW_THREADS
        }
        if (status != SHM_OK) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
        self->data = self->pages.addr;
    } else {
        self->raw = PyMem_RawMalloc(size + ALIGN);
        if (self->raw == NULL) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
        self->data = (unsigned char *)(((uintptr_t)self->raw + ALIGN - 1) &
                                       ~(uintptr_t)(ALIGN - 1));
    }
    *data = self->data;
    return (PyObject *)self;
}

static void
MessageBuffer_dealloc(MessageBufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    /* Every export holds a reference: none is alive here. */
    if (self->pages.base != NULL)
        keep_spare(self->st, &self->pages);
    PyMem_RawFree(self->raw);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static int
MessageBuffer_getbuffer(MessageBufferObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, (Py_ssize_t)self->size, 0,
                             flags);
}

static PyObject *
MessageBuffer_repr(MessageBufferObject *self)
{
    return PyUnicode_FromFormat("<pyshm.MessageBuffer size=%zu%s>", self->size,
                                self->pages.addr != NULL ? " pages" : "");
}

PyDoc_STRVAR(MessageBuffer_doc,
"The memory one message received by Channel.recv_obj() was copied into.\n\n"
"Arrays and other buffers rebuilt from the message point into it (no\n"
"further copy); it is freed when the last of them goes.  Not made\n"
"directly.");

static PyType_Slot MessageBuffer_slots[] = {
    {Py_tp_dealloc, MessageBuffer_dealloc},
    {Py_tp_repr, MessageBuffer_repr},
    {Py_tp_doc, (void *)MessageBuffer_doc},
    {Py_bf_getbuffer, MessageBuffer_getbuffer},
    {0, NULL},
};

static PyType_Spec MessageBuffer_spec = {
    .name = "pyshm.MessageBuffer",
    .basicsize = sizeof(MessageBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = MessageBuffer_slots,
};

int
pyshm_buffer_exec(PyObject *module, pyshm_state *st)
{
    st->MessageBuffer_type = (PyTypeObject *)PyType_FromModuleAndSpec(module,
                                                                      &MessageBuffer_spec,
                                                                      NULL);
    if (st->MessageBuffer_type == NULL)
        return -1;
    return PyModule_AddType(module, st->MessageBuffer_type);
}
