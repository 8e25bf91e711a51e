/*
 * binding/sharedmemory_type.c -- the pyshm.SharedMemory type: one named
 * segment (platform/segment.h) mapped into this process.
 *
 * Owns: SharedMemoryObject and its methods; pyshm_sharedmemory_exec.
 * May include: binding/binding.h, platform/segment.h, the C library.
 *
 * Like CPython's mmap object it exports the mapping through the buffer
 * protocol and counts live exports, refusing close() while any is alive so
 * that no view can outlive the mapping.  Copies that run without the GIL
 * are counted apart: close() from another thread during one marks the
 * object closed at once and the last copy to finish unmaps (no unmapping
 * under a running copy).  Unmapping runs without the GIL.
 *
 * Fork: exports live on in a fork child (a memoryview is inherited with the
 * object), copies do not (the threads that ran them are not there): a child
 * drops the count of copies the first time it uses the object (after_fork).
 */
#include "binding/binding.h"

#include <string.h>     /* memmove */
#include <stddef.h>     /* offsetof */
#include <structmember.h>  /* PyMemberDef for __weaklistoffset__ */

typedef struct {
    PyObject_HEAD
    shm_segment seg;        /* seg.addr == NULL once unmapped */
    PyObject *name;         /* str, as given or generated */
    Py_ssize_t exports;     /* live buffer exports (memoryviews, ...) */
    Py_ssize_t copies;      /* copies of this process running without the GIL */
    int closed;             /* close() was called (the unmap may wait for copies) */
    uint64_t fork_generation;   /* pyshm_fork_generation() when copies was last
                                   right for this process */
    PyObject *weakreflist;
} SharedMemoryObject;

#define IS_CLOSED(self) ((self)->closed)

static int
check_open(SharedMemoryObject *self)
{
    if (IS_CLOSED(self)) {
        PyErr_SetString(PyExc_ValueError, "operation on a closed SharedMemory");
        return -1;
    }
    return 0;
}

static int
check_writable(SharedMemoryObject *self)
{
    if (self->seg.readonly) {
        PyErr_SetString(PyExc_TypeError, "cannot write: the SharedMemory is read-only");
        return -1;
    }
    return 0;
}

/* Unmap (without the GIL); only when no copy is running. */
static void
release_mapping(SharedMemoryObject *self)
{
    pyshm_unmap(&self->seg);
}

/* In a fork child (for the first time since the fork): the copies counted
   ran in threads the child does not have. */
static void
after_fork(SharedMemoryObject *self)
{
    if (!pyshm_forked(Py_TYPE(self), &self->fork_generation))
        return;
    self->copies = 0;
    if (self->closed)
        release_mapping(self);
}

/* Copy LEN bytes, without the GIL when it is worth it.  The copy count
   keeps the mapping meanwhile: a close() from another thread leaves the
   unmapping to the last copy.  memmove, not memcpy: the other side may be a
   view of this very segment (shm.write(shm.buf[a:b], c)), and memcpy on
   overlapping ranges is undefined behaviour. */
static void
copy_bytes(SharedMemoryObject *self, void *dst, const void *src, size_t len)
{
    if (len < PYSHM_NOGIL_COPY_MIN) {
        memmove(dst, src, len);
        return;
    }
    after_fork(self);
    self->copies++;
    Py_BEGIN_ALLOW_THREADS
    memmove(dst, src, len);
    Py_END_ALLOW_THREADS
    self->copies--;
    if (self->closed && self->copies == 0)
        release_mapping(self);
}

/* Check that [offset, offset + len) lies inside the segment. */
static int
check_range(SharedMemoryObject *self, Py_ssize_t offset, Py_ssize_t len, const char *fname)
{
    size_t size = self->seg.size;

    if ((size_t)offset > size || (size_t)len > size - (size_t)offset) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): %zd bytes at offset %zd do not fit in the segment of %zu bytes",
                     fname, len, offset, size);
        return -1;
    }
    return 0;
}

/* ---- construction --------------------------------------------------------- */

/* What open_segment() needs, gathered by SharedMemory_new. */
typedef struct {
    shm_segment *seg;
    int create;
    size_t size;
    int readonly;
    int flags;
    int mode;
} open_args;

/* A pyshm_open_fn (runs without the GIL): create or open the segment. */
static shm_status
open_segment(void *arg, const shm_char *name, void *signals, shm_error *err)
{
    open_args *a = (open_args *)arg;
    /* Another library's creator may show the name before its size. */
    shm_hooks hooks = {NULL, NULL, pyshm_interrupted, signals, SHM_CREATOR_WAIT_NS};

    if (a->create)
        return shm_segment_create_ex(a->seg, name, a->size, a->mode, a->flags, &hooks, err);
    return shm_segment_open_ex(a->seg, name, a->readonly, &hooks, err);
}

static PyObject *
SharedMemory_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "size", "readonly", "exist_ok", "mode", NULL};
    PyObject *name = Py_None, *size_obj = NULL, *mode_obj = NULL;
    int create = 0, readonly = 0, exist_ok = 0, mode = 0600;
    Py_ssize_t size = 0;
    SharedMemoryObject *self;
    open_args a;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$ppO:SharedMemory", kwlist,
                                     &name, &create, &size_obj, &readonly, &exist_ok,
                                     &mode_obj))
        return NULL;
    if (pyshm_name_arg(name, create, "segment") < 0)
        return NULL;
    if (size_obj != NULL && pyshm_ssize_arg(size_obj, "size", 0, &size) < 0)
        return NULL;
    if (create && size == 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive when creating a segment");
        return NULL;
    }
    if (create && readonly) {
        PyErr_SetString(PyExc_ValueError,
                        "readonly=True is for opening: a new segment is created writable");
        return NULL;
    }
    if (pyshm_mode_arg(mode_obj, &mode) < 0)
        return NULL;

    self = (SharedMemoryObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    shm_segment_init(&self->seg);
    self->name = NULL;
    self->exports = 0;
    self->copies = 0;
    self->closed = 1;       /* until a mapping is there */
    self->fork_generation = pyshm_fork_generation(type);
    self->weakreflist = NULL;

    a.seg = &self->seg;
    a.create = create;
    a.size = (size_t)size;
    a.readonly = readonly;
    /* exist_ok only for a given name: a random one that is taken is retried. */
    a.flags = exist_ok && name != Py_None ? SHM_EXIST_OK : 0;
    a.mode = mode;
    self->name = pyshm_open_by_name(pyshm_state_from_type(type), name, open_segment, &a,
                                    "segment");
    if (self->name == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->closed = 0;
    return (PyObject *)self;
}

static void
SharedMemory_dealloc(SharedMemoryObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* Exports and running copies hold a reference: none is out here. */
    release_mapping(self);
    Py_CLEAR(self->name);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ---- methods ------------------------------------------------------------ */

PyDoc_STRVAR(write_doc,
"write($self, data, offset=0)\n"
"--\n\n"
"Copy the bytes-like DATA into the segment at OFFSET and return the number\n"
"of bytes written.  All or nothing: ValueError, and nothing written, when\n"
"DATA does not fit.  TypeError on a read-only segment.");

static PyObject *
SharedMemory_write(SharedMemoryObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    static const char *const names[] = {"data", "offset", NULL};
    PyObject *argv[2];
    Py_ssize_t offset = 0, len;
    Py_buffer view;

    if (pyshm_parse_args("write", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0 || check_writable(self) < 0)
        return NULL;
    if (argv[1] != NULL && pyshm_ssize_arg(argv[1], "offset", 0, &offset) < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 0, "write") < 0)
        return NULL;
    if (check_open(self) < 0 || check_range(self, offset, view.len, "write") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    len = view.len;
    copy_bytes(self, (char *)self->seg.addr + offset, view.buf, (size_t)len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(len);
}

PyDoc_STRVAR(read_doc,
"read($self, size=-1, offset=0)\n"
"--\n\n"
"Return SIZE bytes copied from the segment at OFFSET; SIZE -1 means up to\n"
"the end.  ValueError when the range does not lie inside the segment.");

static PyObject *
SharedMemory_read(SharedMemoryObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    static const char *const names[] = {"size", "offset", NULL};
    PyObject *argv[2], *result;
    Py_ssize_t size = -1, offset = 0;

    if (pyshm_parse_args("read", args, nargs, kwnames, names, 2, 0, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (argv[0] != NULL && argv[0] != Py_None &&
        pyshm_ssize_arg(argv[0], "size", -1, &size) < 0)
        return NULL;
    if (argv[1] != NULL && pyshm_ssize_arg(argv[1], "offset", 0, &offset) < 0)
        return NULL;
    /* Converting the arguments may have run Python code (__index__) that
       closed the segment: check again before its size is used. */
    if (check_open(self) < 0)
        return NULL;
    if ((size_t)offset > self->seg.size) {
        PyErr_Format(PyExc_ValueError, "read(): offset %zd is past the end of the segment "
                     "(%zu bytes)", offset, self->seg.size);
        return NULL;
    }
    if (size == -1)
        size = (Py_ssize_t)(self->seg.size - (size_t)offset);
    if (check_range(self, offset, size, "read") < 0)
        return NULL;
    if (size < PYSHM_NOGIL_COPY_MIN)
        return PyBytes_FromStringAndSize((const char *)self->seg.addr + offset, size);
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        return NULL;
    copy_bytes(self, PyBytes_AS_STRING(result), (const char *)self->seg.addr + offset,
               (size_t)size);
    return result;
}

PyDoc_STRVAR(readinto_doc,
"readinto($self, buffer, offset=0)\n"
"--\n\n"
"Copy bytes from the segment at OFFSET into the writable BUFFER, as many as\n"
"fit in it or remain in the segment, whichever is fewer; return the count.\n"
"Nothing is allocated.");

static PyObject *
SharedMemory_readinto(SharedMemoryObject *self, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    static const char *const names[] = {"buffer", "offset", NULL};
    PyObject *argv[2];
    Py_ssize_t offset = 0, len;
    Py_buffer view;

    if (pyshm_parse_args("readinto", args, nargs, kwnames, names, 2, 1, argv) < 0)
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    if (argv[1] != NULL && pyshm_ssize_arg(argv[1], "offset", 0, &offset) < 0)
        return NULL;
    if (pyshm_get_buffer(argv[0], &view, 1, "readinto") < 0)
        return NULL;
    if (check_open(self) < 0 || check_range(self, offset, 0, "readinto") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    len = view.len;
    if ((size_t)len > self->seg.size - (size_t)offset)
        len = (Py_ssize_t)(self->seg.size - (size_t)offset);
    copy_bytes(self, view.buf, (const char *)self->seg.addr + offset, (size_t)len);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(len);
}

PyDoc_STRVAR(close_doc,
"close($self)\n"
"--\n\n"
"Unmap the segment and release its handles; the name stays (see unlink()).\n"
"Idempotent.  BufferError while a memoryview or other export is alive:\n"
"release those first (the mapping stays valid until then).  During a copy\n"
"in another thread it closes at once; the copy ends, then unmaps.");

static PyObject *
SharedMemory_close(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    after_fork(self);       /* in a fork child: no copies, a deferred unmap done */
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot close SharedMemory %R: %zd exported buffer(s) still alive "
                     "(memoryview, NumPy array, ...); release them first",
                     self->name, self->exports);
        return NULL;
    }
    if (self->closed)
        Py_RETURN_NONE;
    self->closed = 1;
    if (self->copies == 0)
        release_mapping(self);      /* else the last copy does */
    Py_RETURN_NONE;
}

PyDoc_STRVAR(unlink_doc,
"unlink($self)\n"
"--\n\n"
"Remove the segment's name (POSIX); mappings stay valid until closed.\n"
"Allowed after close().  On Windows the name dies with its last handle and\n"
"this does nothing.");

static PyObject *
SharedMemory_unlink(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    return pyshm_unlink_name(pyshm_state_from_type(Py_TYPE(self)), self->name);
}

static PyObject *
SharedMemory_enter(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    return Py_NewRef(self);
}

static PyObject *
SharedMemory_exit(SharedMemoryObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    return SharedMemory_close(self, NULL);
}

static PyObject *
SharedMemory_reduce(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    return pyshm_refuse_pickle("SharedMemory", self->name);
}

static PyMethodDef SharedMemory_methods[] = {
    {"write", (PyCFunction)(void (*)(void))SharedMemory_write, METH_FASTCALL | METH_KEYWORDS,
     write_doc},
    {"read", (PyCFunction)(void (*)(void))SharedMemory_read, METH_FASTCALL | METH_KEYWORDS,
     read_doc},
    {"readinto", (PyCFunction)(void (*)(void))SharedMemory_readinto,
     METH_FASTCALL | METH_KEYWORDS, readinto_doc},
    {"close", (PyCFunction)SharedMemory_close, METH_NOARGS, close_doc},
    {"unlink", (PyCFunction)SharedMemory_unlink, METH_NOARGS, unlink_doc},
    {"__enter__", (PyCFunction)SharedMemory_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))SharedMemory_exit, METH_FASTCALL, NULL},
    {"__reduce__", (PyCFunction)SharedMemory_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ----------------------------------------------------------- */

static PyObject *
SharedMemory_get_name(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->name);
}

static PyObject *
SharedMemory_get_size(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromSize_t(self->seg.size);
}

static PyObject *
SharedMemory_get_readonly(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->seg.readonly);
}

static PyObject *
SharedMemory_get_closed(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(IS_CLOSED(self));
}

static PyObject *
SharedMemory_get_buf(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    /* A fresh view each time: nothing is cached, so the caller's view alone
       decides when close() becomes possible again. */
    return PyMemoryView_FromObject((PyObject *)self);
}

static PyGetSetDef SharedMemory_getset[] = {
    {"name", (getter)SharedMemory_get_name, NULL,
     "The segment's name, without the leading '/' on POSIX.", NULL},
    {"size", (getter)SharedMemory_get_size, NULL,
     "Size in bytes: exact on POSIX; page-rounded on Windows when opened.", NULL},
    {"readonly", (getter)SharedMemory_get_readonly, NULL, "True if mapped read-only.", NULL},
    {"closed", (getter)SharedMemory_get_closed, NULL, "True once close() has run.", NULL},
    {"buf", (getter)SharedMemory_get_buf, NULL,
     "A new zero-copy memoryview of the whole segment.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef SharedMemory_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SharedMemoryObject, weakreflist), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
SharedMemory_repr(SharedMemoryObject *self)
{
    if (IS_CLOSED(self))
        return PyUnicode_FromFormat("<pyshm.SharedMemory name=%R closed>", self->name);
    return PyUnicode_FromFormat("<pyshm.SharedMemory name=%R size=%zu %s>", self->name,
                                self->seg.size, self->seg.readonly ? "ro" : "rw");
}

/* ---- buffer protocol ------------------------------------------------------ */

static int
SharedMemory_getbuffer(SharedMemoryObject *self, Py_buffer *view, int flags)
{
    if (check_open(self) < 0)
        return -1;
    if (self->seg.readonly && (flags & PyBUF_WRITABLE)) {
        PyErr_SetString(PyExc_TypeError, "cannot export a writable buffer: the SharedMemory "
                        "is read-only");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->seg.addr, (Py_ssize_t)self->seg.size,
                          self->seg.readonly, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void
SharedMemory_releasebuffer(SharedMemoryObject *self, Py_buffer *Py_UNUSED(view))
{
    self->exports--;
}

/* ---- type ----------------------------------------------------------------- */

PyDoc_STRVAR(SharedMemory_doc,
"SharedMemory(name=None, create=False, size=0, *, readonly=False, exist_ok=False, mode=0o600)\n"
"--\n\n"
"A named shared-memory segment mapped into this process.\n\n"
"create=True makes a new segment of exactly SIZE bytes (FileExistsError if\n"
"the name is taken, unless exist_ok=True, which opens it instead); without it\n"
"an existing segment is opened (FileNotFoundError if there is none).\n"
"name=None with create=True picks a short random name.  The segment lives\n"
"until it is unlinked (POSIX) or its last handle closes (Windows); closing\n"
"never removes it.");

static PyType_Slot SharedMemory_slots[] = {
    {Py_tp_new, SharedMemory_new},
    {Py_tp_dealloc, SharedMemory_dealloc},
    {Py_tp_repr, SharedMemory_repr},
    {Py_tp_methods, SharedMemory_methods},
    {Py_tp_getset, SharedMemory_getset},
    {Py_tp_members, SharedMemory_members},
    {Py_tp_doc, (void *)SharedMemory_doc},
    {Py_bf_getbuffer, SharedMemory_getbuffer},
    {Py_bf_releasebuffer, SharedMemory_releasebuffer},
    {0, NULL},
};

static PyType_Spec SharedMemory_spec = {
    .name = "pyshm.SharedMemory",
    .basicsize = sizeof(SharedMemoryObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = SharedMemory_slots,
};

int
pyshm_sharedmemory_exec(PyObject *module, pyshm_state *st)
{
    st->SharedMemory_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &SharedMemory_spec,
                                                                     NULL);
    if (st->SharedMemory_type == NULL)
        return -1;
    return PyModule_AddType(module, st->SharedMemory_type);
}
