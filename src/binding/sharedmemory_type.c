/*
 * binding/sharedmemory_type.c -- the pyshm.SharedMemory type: one named
 * segment (platform/segment.h) mapped into this process.
 *
 * Owns: SharedMemoryObject and its own methods (the copies, the buffer
 * exports, `buf`); pyshm_sharedmemory_exec.  Its lifecycle (opening by
 * name, close, pickling, ...) is binding/named.c's, through its kind.
 * May include: binding/binding.h, platform/segment.h, the C library.
 *
 * Like CPython's mmap object it exports the mapping through the buffer
 * protocol and counts live exports, refusing close() while any is alive so
 * that no view can outlive the mapping.  Copies that run without the GIL
 * pin the mapping (named.c): close() from another thread during one marks
 * the object closed at once and the last copy to finish unmaps (no
 * unmapping under a running copy).  Unmapping runs without the GIL.
 *
 * Fork: exports live on in a fork child (a memoryview is inherited with the
 * object), copies do not (the threads that ran them are not there): a child
 * drops their pins the first time it uses the object (named.c).
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

typedef struct {
    pyshm_named head;       /* the shared lifecycle (binding.h); head.seg is the mapping,
                               head.size its size (kept after close()) */
    PyObject *buf;          /* the memoryview `buf` returns, made on first use; NULL */
    Py_ssize_t exports;     /* live buffer exports (memoryviews, ...) */
} SharedMemoryObject;

#define SEG(self) ((self)->head.seg)

static int
check_open(SharedMemoryObject *self)
{
    return pyshm_named_check_open(&self->head);
}

static int
check_writable(SharedMemoryObject *self)
{
    if (SEG(self).readonly) {
        PyErr_SetString(PyExc_TypeError, "cannot write: the SharedMemory is read-only");
        return -1;
    }
    return 0;
}

/* Copy LEN bytes, without the GIL when it is worth it.  The copy count
   keeps the mapping meanwhile: a close() from another thread leaves the
   unmapping to the last copy.  memmove, not memcpy: the other side may be a
   view of this very segment (shm.write(shm.buf[a:b], c)), and memcpy on
   overlapping ranges is undefined behaviour. */
static void
copy_bytes(SharedMemoryObject *self, void *dst, const void *src, size_t len)
{
    uint64_t token;

    if (len < PYSHM_NOGIL_COPY_MIN) {
        memmove(dst, src, len);
        return;
    }
    token = pyshm_pin(&self->head);
    Py_BEGIN_ALLOW_THREADS
    memmove(dst, src, len);
    Py_END_ALLOW_THREADS
    pyshm_unpin(&self->head, token);
}

/* Check that OFFSET is inside the segment (the end itself included). */
static int
check_offset(SharedMemoryObject *self, Py_ssize_t offset, const char *fname)
{
    if ((size_t)offset > SEG(self).size) {
        PyErr_Format(PyExc_ValueError, "%s(): offset %zd is past the end of the segment "
                     "(%zu bytes: offsets 0 to %zu)", fname, offset, SEG(self).size,
                     SEG(self).size);
        return -1;
    }
    return 0;
}

/* Check that [offset, offset + len) lies inside the segment. */
static int
check_range(SharedMemoryObject *self, Py_ssize_t offset, Py_ssize_t len, const char *fname)
{
    size_t size = SEG(self).size;

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

/* The size argument: any size opens; a new segment has exactly SIZE > 0. */
static int
raw_size_arg(Py_ssize_t given, int create, uint64_t *asked)
{
    if (create && given == 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive when creating a segment");
        return -1;
    }
    *asked = (uint64_t)given;
    return 0;
}

static uint64_t
bytes_for(uint64_t asked)
{
    return asked;
}

static int
SharedMemory_init(SharedMemoryObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "create", "size", "readonly", "exist_ok", "mode", "track",
                             "wait", NULL};
    pyshm_open_args a = {Py_None, 0, 0, 0, 0, NULL, NULL, NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OpO$ppOpO:SharedMemory", kwlist,
                                     &a.name, &a.create, &a.size, &a.readonly, &a.exist_ok,
                                     &a.mode, &a.track, &a.wait))
        return -1;
    return pyshm_named_open(&self->head, &a);
}

/* The cached view refers back to this object (a cycle the GC breaks by
   dropping it: its release gives the export back). */
static int
visit_buf(pyshm_named *head, visitproc visit, void *arg)
{
    Py_VISIT(((SharedMemoryObject *)head)->buf);
    return 0;
}

static void
drop_buf(pyshm_named *head)
{
    Py_CLEAR(((SharedMemoryObject *)head)->buf);
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
    copy_bytes(self, (char *)SEG(self).addr + offset, view.buf, (size_t)len);
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
        size = (Py_ssize_t)(SEG(self).size - (size_t)offset);
    if (check_range(self, offset, size, "read") < 0)
        return NULL;
    if (size < PYSHM_NOGIL_COPY_MIN)
        return PyBytes_FromStringAndSize((const char *)SEG(self).addr + offset, size);
    result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL)
        return NULL;
    copy_bytes(self, PyBytes_AS_STRING(result), (const char *)SEG(self).addr + offset,
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
    if ((size_t)len > SEG(self).size - (size_t)offset)
        len = (Py_ssize_t)(SEG(self).size - (size_t)offset);
    copy_bytes(self, view.buf, (const char *)SEG(self).addr + offset, (size_t)len);
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

/* close() asked (named.c): `buf` goes first, then views still alive refuse. */
static int
release_views(pyshm_named *head)
{
    SharedMemoryObject *self = (SharedMemoryObject *)head;

    if (release_buf(self) < 0)
        return -1;
    if (self->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot close SharedMemory %R: %zd exported buffer(s) still alive "
                     "(memoryview, NumPy array, ...); release them first",
                     head->name, self->exports);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(unlink_doc,
"unlink($self)\n"
"--\n\n"
"Remove the segment's name (POSIX); mappings stay valid until closed.\n"
"Allowed after close().  On Windows the name dies with its last handle and\n"
"this does nothing.");

PyDoc_STRVAR(reduce_doc,
"__reduce__($self, /)\n"
"--\n\n"
"Pickle by name (and readonly=True when set): the receiving process opens\n"
"the same segment, as multiprocessing does with arguments under 'spawn'.");

static PyObject *
readonly_kwargs(pyshm_named *head)
{
    if (!head->seg.readonly)
        return NULL;
    return Py_BuildValue("{sO}", "readonly", Py_True);
}

/* len(shm): the size, as for bytes and memoryview; still known after close(). */
static Py_ssize_t
SharedMemory_length(SharedMemoryObject *self)
{
    return (Py_ssize_t)self->head.size;
}

static PyMethodDef SharedMemory_methods[] = {
    {"write", (PyCFunction)(void (*)(void))SharedMemory_write, METH_FASTCALL | METH_KEYWORDS,
     write_doc},
    {"read", (PyCFunction)(void (*)(void))SharedMemory_read, METH_FASTCALL | METH_KEYWORDS,
     read_doc},
    {"readinto", (PyCFunction)(void (*)(void))SharedMemory_readinto,
     METH_FASTCALL | METH_KEYWORDS, readinto_doc},
    PYSHM_NAMED_METHODS(close_doc, unlink_doc, reduce_doc),
    {NULL, NULL, 0, NULL},
};

/* ---- attributes ----------------------------------------------------------- */

static PyObject *
SharedMemory_get_size(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->head.size);
}

static PyObject *
SharedMemory_get_readonly(SharedMemoryObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(SEG(self).readonly);
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
    if (self->head.closed)
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
    {"name", pyshm_named_get_name, NULL,
     "The segment's name, without the leading '/' on POSIX.", NULL},
    {"size", (getter)SharedMemory_get_size, NULL,
     "Size in bytes: exact on POSIX; page-rounded on Windows when opened.\n"
     "Still readable after close(); len(shm) is the same.", NULL},
    {"readonly", (getter)SharedMemory_get_readonly, NULL, "True if mapped read-only.", NULL},
    {"closed", pyshm_named_get_closed, NULL, "True once close() has run.", NULL},
    {"buf", (getter)SharedMemory_get_buf, NULL,
     "A zero-copy memoryview of the whole segment: the same one until close()\n"
     "releases it; None once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
segment_repr(pyshm_named *head)
{
    return PyUnicode_FromFormat("<pyshm.SharedMemory name=%R size=%zu %s>", head->name,
                                head->seg.size, head->seg.readonly ? "ro" : "rw");
}

/* ---- buffer protocol ------------------------------------------------------ */

static int
SharedMemory_getbuffer(SharedMemoryObject *self, Py_buffer *view, int flags)
{
    if (check_open(self) < 0)
        return -1;
    if (SEG(self).readonly && (flags & PyBUF_WRITABLE)) {
        PyErr_SetString(PyExc_TypeError, "cannot export a writable buffer: the SharedMemory "
                        "is read-only");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, SEG(self).addr, (Py_ssize_t)SEG(self).size,
                          SEG(self).readonly, flags) < 0)
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
"mode=_DEFAULT_MODE, track=False, wait=None)\n"
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
"opened).  wait=SECONDS: a segment that does not exist yet is waited for\n"
"(sleeping; Ctrl-C ends it) that long at most, then FileNotFoundError.");

static const pyshm_kind kind = {
    .type_name = "SharedMemory",
    .what = "segment",
    .size_arg = "size",
    .size_rule = PYSHM_AT_LEAST,
    .size_default = 0,
    .size_check = raw_size_arg,
    .segment_size = bytes_for,
    .closing = release_views,
    .traverse = visit_buf,
    .clear = drop_buf,
    .repr = segment_repr,
    .reduce_kwargs = readonly_kwargs,
};

static PyType_Slot SharedMemory_slots[] = {
    PYSHM_NAMED_SLOTS,
    {Py_tp_init, SharedMemory_init},
    {Py_sq_length, SharedMemory_length},
    {Py_tp_methods, SharedMemory_methods},
    {Py_tp_getset, SharedMemory_getset},
    {Py_tp_doc, (void *)SharedMemory_doc},
    {Py_bf_getbuffer, SharedMemory_getbuffer},
    {Py_bf_releasebuffer, SharedMemory_releasebuffer},
    {0, NULL},
};

static PyType_Spec SharedMemory_spec = PYSHM_NAMED_SPEC("SharedMemory", SharedMemoryObject,
                                                         SharedMemory_slots);

int
pyshm_sharedmemory_exec(PyObject *module, pyshm_state *st)
{
    return pyshm_add_named_type(module, st, &SharedMemory_spec, &kind, &st->SharedMemory_type);
}
