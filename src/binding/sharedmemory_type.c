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
 *
 * As a drop-in for multiprocessing.shared_memory.SharedMemory: the work is
 * done in __init__ (subclasses override it and call super().__init__()),
 * the type may be subclassed, `buf` is one memoryview per open segment that
 * close() releases (views derived from it still refuse close()), and `size`
 * stays readable after close().  The cached view refers back to the object,
 * so the type takes part in garbage collection.
 */
#include "binding/binding.h"

#include <string.h>     /* memmove */
#include <stddef.h>     /* offsetof */
#include <structmember.h>  /* PyMemberDef for __weaklistoffset__ */

typedef struct {
    PyObject_HEAD
    shm_segment seg;        /* seg.addr == NULL once unmapped (or before __init__) */
    PyObject *name;         /* str, as given or generated; NULL until __init__ opened */
    size_t size;            /* seg.size, kept after close() */
    PyObject *buf;          /* the memoryview `buf` returns, made on first use; NULL */
    Py_ssize_t exports;     /* live buffer exports (memoryviews, ...) */
    Py_ssize_t copies;      /* copies of this process running without the GIL */
    int closed;             /* close() was called, or __init__ has not opened (the
                               unmap may wait for copies) */
    uint64_t fork_generation;   /* pyshm_fork_generation() when copies was last
                                   right for this process */
    PyObject *weakreflist;
} SharedMemoryObject;

#define IS_CLOSED(self) ((self)->closed)

static int
check_open(SharedMemoryObject *self)
{
    if (IS_CLOSED(self)) {
        PyErr_SetString(PyExc_ValueError, self->name == NULL
                        ? "operation on a SharedMemory whose __init__ has not run"
                        : "operation on a closed SharedMemory");
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

/* Check that OFFSET is inside the segment (the end itself included). */
static int
check_offset(SharedMemoryObject *self, Py_ssize_t offset, const char *fname)
{
    if ((size_t)offset > self->seg.size) {
        PyErr_Format(PyExc_ValueError, "%s(): offset %zd is past the end of the segment "
                     "(%zu bytes: offsets 0 to %zu)", fname, offset, self->seg.size,
                     self->seg.size);
        return -1;
    }
    return 0;
}

/* Check that [offset, offset + len) lies inside the segment. */
static int
check_range(SharedMemoryObject *self, Py_ssize_t offset, Py_ssize_t len, const char *fname)
{
    size_t size = self->seg.size;

    if (check_offset(self, offset, fname) < 0)
        return -1;
    if ((size_t)len > size - (size_t)offset) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): %zd bytes at offset %zd do not fit in the segment of %zu bytes "
                     "(%zu bytes from that offset)", fname, len, offset, size,
                     size - (size_t)offset);
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

/* __new__: an object in the "not opened" state; __init__ does the work, so
   that subclasses may take other arguments in their own __init__. */
static PyObject *
SharedMemory_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    SharedMemoryObject *self = (SharedMemoryObject *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    shm_segment_init(&self->seg);
    self->name = NULL;
    self->size = 0;
    self->buf = NULL;
    self->exports = 0;
    self->copies = 0;
    self->closed = 1;       /* until a mapping is there */
    self->fork_generation = pyshm_fork_generation(type);
    self->weakreflist = NULL;
    return (PyObject *)self;
}

static int
SharedMemory_init(SharedMemoryObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "size", "readonly", "exist_ok", "mode", "track",
                             NULL};
    PyObject *name = Py_None, *size_obj = NULL, *mode_obj = NULL;
    int create = 0, readonly = 0, exist_ok = 0, track = 0, mode = 0600;
    Py_ssize_t size = 0;
    pyshm_state *st = pyshm_state_from_type(Py_TYPE(self));
    open_args a;

    if (st == NULL)
        return -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$ppOp:SharedMemory", kwlist,
                                     &name, &create, &size_obj, &readonly, &exist_ok,
                                     &mode_obj, &track))
        return -1;
    if (self->name != NULL) {
        PyErr_Format(PyExc_TypeError, "SharedMemory %R is already initialised: __init__ "
                     "opens a segment once", self->name);
        return -1;
    }
    if (pyshm_name_arg(name, create, "segment") < 0)
        return -1;
    if (size_obj != NULL && pyshm_ssize_arg(size_obj, "size", 0, &size) < 0)
        return -1;
    if (create && size == 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive when creating a segment");
        return -1;
    }
    if (create && readonly) {
        PyErr_SetString(PyExc_ValueError,
                        "readonly=True is for opening: a new segment is created writable");
        return -1;
    }
    if (pyshm_mode_arg(mode_obj, &mode) < 0)
        return -1;

    a.seg = &self->seg;
    a.create = create;
    a.size = (size_t)size;
    a.readonly = readonly;
    /* exist_ok only for a given name: a random one that is taken is retried. */
    a.flags = exist_ok && name != Py_None ? SHM_EXIST_OK : 0;
    a.mode = mode;
    name = pyshm_open_by_name(st, name, open_segment, &a, "segment");
    if (name == NULL)
        return -1;
    if (create && !self->seg.created &&
        pyshm_exist_ok_size(name, "segment", "size", PYSHM_AT_LEAST, (uint64_t)size,
                            (uint64_t)size, (uint64_t)self->seg.size) < 0) {
        release_mapping(self);      /* opened, not created: nothing to remove */
        Py_DECREF(name);
        return -1;
    }
    if (track && self->seg.created && pyshm_track_name(st, name) < 0) {
        release_mapping(self);      /* the name is gone again: nothing half-made */
        Py_DECREF(name);
        return -1;
    }
    self->size = self->seg.size;
    self->name = name;
    self->closed = 0;
    return 0;
}

static int
SharedMemory_traverse(SharedMemoryObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->buf);
    return 0;
}

static int
SharedMemory_clear(SharedMemoryObject *self)
{
    /* The cached view refers back to this object: dropping it breaks the
       cycle (its release gives the export back). */
    Py_CLEAR(self->buf);
    return 0;
}

static void
SharedMemory_dealloc(SharedMemoryObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* A live cached view would hold a reference, so it is released here. */
    Py_CLEAR(self->buf);
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

/* read()'s SIZE: -1 (to the end) or a count >= 0; say so when it is neither. */
static int
read_size_arg(PyObject *obj, Py_ssize_t *size)
{
    if (pyshm_ssize_arg(obj, "size", -1, size) == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "read(): size must be -1 (to the end of the segment) "
                     "or a byte count >= 0, not %R", obj);
    }
    return -1;
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
        read_size_arg(argv[0], &size) < 0)
        return NULL;
    if (argv[1] != NULL && pyshm_ssize_arg(argv[1], "offset", 0, &offset) < 0)
        return NULL;
    /* Converting the arguments may have run Python code (__index__) that
       closed the segment: check again before its size is used. */
    if (check_open(self) < 0)
        return NULL;
    if (check_offset(self, offset, "read") < 0)
        return NULL;
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
    if (check_open(self) < 0 || check_offset(self, offset, "readinto") < 0) {
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
"Idempotent.  Releases `buf` (as the standard library does); BufferError\n"
"while another view is alive -- a slice of `buf`, a NumPy array over it, a\n"
"memoryview(shm) -- release those first (the mapping stays valid until then).  During a\n"
"copy in another thread it closes at once; the copy ends, then unmaps.");

/* Release the cached `buf` view.  When views made from it still live
   (memoryview.release() refuses) it is kept, and close() then reports the
   exports.  -1 only for an unexpected error. */
static int
release_buf(SharedMemoryObject *self)
{
    PyObject *result;

    if (self->buf == NULL)
        return 0;
    result = PyObject_CallMethod(self->buf, "release", NULL);
    if (result == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(result);
    Py_CLEAR(self->buf);
    return 0;
}

static PyObject *
SharedMemory_close(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    after_fork(self);       /* in a fork child: no copies, a deferred unmap done */
    if (release_buf(self) < 0)
        return NULL;
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
    if (self->name == NULL) {
        (void)check_open(self);     /* "__init__ has not run" */
        return NULL;
    }
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

PyDoc_STRVAR(reduce_doc,
"__reduce__($self, /)\n"
"--\n\n"
"Pickle by name (and readonly=True when set): the receiving process opens\n"
"the same segment, as multiprocessing does with arguments under 'spawn'.");

static PyObject *
SharedMemory_reduce(SharedMemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *kwargs, *result;

    if (check_open(self) < 0)
        return NULL;
    if (!self->seg.readonly)
        return pyshm_reduce_by_name((PyObject *)self, self->name, NULL);
    kwargs = Py_BuildValue("{sO}", "readonly", Py_True);
    if (kwargs == NULL)
        return NULL;
    result = pyshm_reduce_by_name((PyObject *)self, self->name, kwargs);
    Py_DECREF(kwargs);
    return result;
}

/* len(shm): the size, as for bytes and memoryview; still known after close(). */
static Py_ssize_t
SharedMemory_length(SharedMemoryObject *self)
{
    return (Py_ssize_t)self->size;
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
    {"__reduce__", (PyCFunction)SharedMemory_reduce, METH_NOARGS, reduce_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ----------------------------------------------------------- */

static PyObject *
SharedMemory_get_name(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *
SharedMemory_get_size(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->size);
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

/* True when VIEW (a memoryview) was released: it refuses to export. */
static int
view_released(PyObject *view)
{
    Py_buffer probe;

    if (PyObject_GetBuffer(view, &probe, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 1;
    }
    PyBuffer_Release(&probe);
    return 0;
}

static PyObject *
SharedMemory_get_buf(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    /* One view per open segment, as the standard library's `buf`: close()
       releases it, so `buffer = shm.buf; ...; shm.close()` works.  A view
       the user released is replaced. */
    if (IS_CLOSED(self))
        Py_RETURN_NONE;
    if (self->buf != NULL && view_released(self->buf))
        Py_CLEAR(self->buf);
    if (self->buf == NULL) {
        self->buf = PyMemoryView_FromObject((PyObject *)self);
        if (self->buf == NULL)
            return NULL;
    }
    return Py_NewRef(self->buf);
}

static PyGetSetDef SharedMemory_getset[] = {
    {"name", (getter)SharedMemory_get_name, NULL,
     "The segment's name, without the leading '/' on POSIX.", NULL},
    {"size", (getter)SharedMemory_get_size, NULL,
     "Size in bytes: exact on POSIX; page-rounded on Windows when opened.\n"
     "Still readable after close(); len(shm) is the same.", NULL},
    {"readonly", (getter)SharedMemory_get_readonly, NULL, "True if mapped read-only.", NULL},
    {"closed", (getter)SharedMemory_get_closed, NULL, "True once close() has run.", NULL},
    {"buf", (getter)SharedMemory_get_buf, NULL,
     "A zero-copy memoryview of the whole segment: the same one until close()\n"
     "releases it; None once closed.", NULL},
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
    if (self->name == NULL)
        return PyUnicode_FromFormat("<%s not opened>", Py_TYPE(self)->tp_name);
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
"SharedMemory(name=None, create=False, size=0, *, readonly=False, exist_ok=False, "
"mode=_DEFAULT_MODE, track=False)\n"
"--\n\n"
"A named shared-memory segment mapped into this process.\n\n"
"create=True makes a new segment of exactly SIZE bytes (FileExistsError if\n"
"the name is taken, unless exist_ok=True, which opens it instead when it\n"
"has at least SIZE bytes -- a smaller one is ValueError and left as it\n"
"was); without it an existing segment is opened (FileNotFoundError if there\n"
"is none; an OSError at once if the name is not a segment, a FIFO say).\n"
"name=None with create=True picks a short random name.  MODE: the POSIX\n"
"permission bits of a new segment (0o600, owner only).  The segment lives\n"
"until it is unlinked (POSIX) or its last handle closes (Windows); closing\n"
"never removes it, unless track=True: then the segment this call creates is\n"
"removed when this process exits without unlink(), even if it is killed\n"
"(multiprocessing's resource tracker does it; never for a segment only\n"
"opened).");

static PyType_Slot SharedMemory_slots[] = {
    {Py_tp_new, SharedMemory_new},
    {Py_tp_init, SharedMemory_init},
    {Py_tp_dealloc, SharedMemory_dealloc},
    {Py_tp_traverse, SharedMemory_traverse},
    {Py_tp_clear, SharedMemory_clear},
    {Py_sq_length, SharedMemory_length},
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
    /* Subclassable: users of the standard library's class subclass it. */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE |
             Py_TPFLAGS_HAVE_GC,
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
