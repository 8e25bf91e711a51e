/*
 * binding/buffer_type.c -- pyshm.MessageBuffer: the fresh memory that one
 * received object message is copied into, exported through the buffer
 * protocol.  recv_obj() unpickles from memoryview slices of it, so NumPy
 * arrays (and other out-of-band buffers) rebuilt by pickle point straight
 * into it: one copy out of the ring, none after.  It lives as long as any
 * of them does.
 *
 * Owns: MessageBufferObject, pyshm_buffer_new, pyshm_buffer_exec.
 * May include: binding/binding.h, platform/pages.h, the C library.
 *
 * Fresh memory is the cost to beat (see platform/pages.h): a buffer of at
 * least SHM_PAGES_ALIGN bytes is its own anonymous mapping advised for
 * transparent huge pages; a smaller one comes from the raw allocator.
 * Either way the data starts on a 64-byte boundary, as the frame's
 * out-of-band buffers are laid out at multiples of 64 (objects.c).
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
} MessageBufferObject;

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
    self->pages.addr = self->pages.base = NULL;
    self->pages.size = self->pages.mapped = 0;
    if (size >= SHM_PAGES_ALIGN) {
        Py_BEGIN_ALLOW_THREADS
        status = shm_pages_alloc(&self->pages, size, &err);
        Py_END_ALLOW_THREADS
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
    shm_pages_free(&self->pages);
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
