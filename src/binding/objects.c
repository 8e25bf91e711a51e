/*
 * binding/objects.c -- object messages: Channel.send_obj() and recv_obj()
 * turn Python objects into one ring record and back, with pickle protocol 5
 * and out-of-band buffers (PEP 574).
 *
 * Owns: the frame format below, pyshm_frame_* (declared in binding.h).
 * May include: binding/binding.h, core/ring.h, the C library.
 *
 * The frame is the payload of a RING_KIND_OBJECT record (the kind lets
 * recv_obj() refuse a record that send() wrote, and leave it queued):
 *
 *   offset 0    uint32   FRAME_MAGIC
 *   offset 4    uint32   NBUF, the out-of-band buffers
 *   offset 8    uint64   the pickle stream's length
 *   offset 16   NBUF x (uint64 offset, uint64 length) of each buffer,
 *               offsets from the start of the payload
 *   then        the pickle stream
 *   then        each buffer at the next multiple of 64 (the gaps zeroed),
 *               in order
 *
 * Sending copies each PickleBuffer (a NumPy array's memory, ...) once,
 * straight into the ring next to the stream: ring_sendv() gathers the
 * pieces, nothing is joined first.  Receiving copies the record once into
 * fresh memory (a MessageBuffer, buffer_type.c) and unpickles with
 * memoryview slices of it as the buffers, so the arrays pickle rebuilds
 * point into that copy.  Without out-of-band buffers only the stream is
 * copied, into a bytes object.
 *
 * The head comes from shared memory: every count, offset and length is
 * checked against the payload before use (ProtocolError when one is off);
 * the pickle stream itself is only as trustworthy as its sender, and
 * unpickling runs code it names -- object messages are for trusted peers.
 *
 * pickle.dumps cannot pickle a memoryview; when the fast call fails with
 * TypeError the object is pickled again by pyshm._objects, whose pickler
 * sends memoryviews as out-of-band buffers too.
 */
#include "binding/binding.h"

#include <string.h>     /* memcpy, memset */

#define FRAME_MAGIC 0x354F5950u     /* "PYO5" read as little-endian bytes */
#define FRAME_HEAD 16u              /* magic, count, stream length */
#define FRAME_ENTRY 16u             /* offset, length */
#define FRAME_ALIGN 64u

static const unsigned char zeros[FRAME_ALIGN];

int
pyshm_objects_ready(pyshm_state *st)
{
    PyObject *pickle;

    if (st->pickle_loads != NULL)
        return 0;
    pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL)
        return -1;
    st->pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    st->pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    if (st->dumps_kwnames == NULL)
        st->dumps_kwnames = Py_BuildValue("(s)", "buffer_callback");
    if (st->loads_kwnames == NULL)
        st->loads_kwnames = Py_BuildValue("(s)", "buffers");
    if (st->pickle_dumps == NULL || st->pickle_loads == NULL || st->dumps_kwnames == NULL ||
        st->loads_kwnames == NULL) {
        Py_CLEAR(st->pickle_dumps);
        Py_CLEAR(st->pickle_loads);
        return -1;
    }
    return 0;
}

static void
frame_init(pyshm_frame *f)
{
    f->pieces = NULL;
    f->npieces = 0;
    f->len = 0;
    f->head = NULL;
    f->stream = NULL;
    f->buffers = NULL;
    f->views = NULL;
    f->nviews = 0;
}

void
pyshm_frame_release(pyshm_frame *f)
{
    Py_ssize_t i;

    for (i = 0; i < f->nviews; i++)
        PyBuffer_Release(&f->views[i]);
    PyMem_Free(f->views);
    PyMem_Free(f->pieces);
    PyMem_Free(f->head);
    Py_CLEAR(f->stream);
    Py_CLEAR(f->buffers);
    frame_init(f);
}

/* The fast pickling: pickle.dumps(OBJ, 5, buffer_callback=BUFFERS.append).
   The stream (bytes), or NULL with the exception set. */
static PyObject *
dumps_fast(pyshm_state *st, PyObject *obj, PyObject *buffers)
{
    PyObject *append, *protocol, *stream, *args[3];

    append = PyObject_GetAttrString(buffers, "append");
    if (append == NULL)
        return NULL;
    protocol = PyLong_FromLong(5);
    if (protocol == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    args[0] = obj;
    args[1] = protocol;
    args[2] = append;
    stream = PyObject_Vectorcall(st->pickle_dumps, args, 2, st->dumps_kwnames);
    Py_DECREF(protocol);
    Py_DECREF(append);
    return stream;
}

/* pyshm._objects.dumps(OBJ) -> (stream, buffers): the pickler that also
   takes memoryviews.  0, or -1 with the exception set. */
static int
dumps_fallback(PyObject *obj, PyObject **stream, PyObject **buffers)
{
    PyObject *module, *result;

    module = PyImport_ImportModule("pyshm._objects");
    if (module == NULL)
        return -1;
    result = PyObject_CallMethod(module, "dumps", "O", obj);
    Py_DECREF(module);
    if (result == NULL)
        return -1;
    if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2 ||
        !PyBytes_Check(PyTuple_GET_ITEM(result, 0)) ||
        !PyList_Check(PyTuple_GET_ITEM(result, 1))) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_SystemError, "pyshm._objects.dumps returned a bad value");
        return -1;
    }
    *stream = Py_NewRef(PyTuple_GET_ITEM(result, 0));
    *buffers = Py_NewRef(PyTuple_GET_ITEM(result, 1));
    Py_DECREF(result);
    return 0;
}

static void
put64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static void
put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint64_t
get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t
get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Lay out F's head and pieces for the stream and the NVIEWS exported views. */
static int
frame_layout(pyshm_frame *f)
{
    Py_ssize_t i, n = f->nviews;
    size_t head, pos, off, gap, k = 0;
    unsigned char *entry;

    if ((size_t)n > (PY_SSIZE_T_MAX - FRAME_HEAD) / FRAME_ENTRY / 2 - 2) {
        PyErr_NoMemory();
        return -1;
    }
    head = FRAME_HEAD + FRAME_ENTRY * (size_t)n;
    f->head = PyMem_Malloc(head);
    f->pieces = PyMem_New(ring_piece, 2 + 2 * (size_t)n);
    if (f->head == NULL || f->pieces == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    put32(f->head, FRAME_MAGIC);
    put32(f->head + 4, (uint32_t)n);
    put64(f->head + 8, (uint64_t)PyBytes_GET_SIZE(f->stream));
    f->pieces[k].data = f->head;
    f->pieces[k++].len = head;
    f->pieces[k].data = PyBytes_AS_STRING(f->stream);
    f->pieces[k++].len = (size_t)PyBytes_GET_SIZE(f->stream);
    pos = head + (size_t)PyBytes_GET_SIZE(f->stream);
    for (i = 0; i < n; i++) {
        size_t len = (size_t)f->views[i].len;

        off = (pos + FRAME_ALIGN - 1) & ~(size_t)(FRAME_ALIGN - 1);
        gap = off - pos;
        if (off < pos || len > (size_t)PY_SSIZE_T_MAX - off) {
            PyErr_SetString(PyExc_OverflowError, "send_obj(): the message is too large");
            return -1;
        }
        entry = f->head + FRAME_HEAD + FRAME_ENTRY * (size_t)i;
        put64(entry, (uint64_t)off);
        put64(entry + 8, (uint64_t)len);
        if (gap > 0) {
            f->pieces[k].data = zeros;
            f->pieces[k++].len = gap;
        }
        f->pieces[k].data = f->views[i].buf;
        f->pieces[k++].len = len;
        pos = off + len;
    }
    f->npieces = k;
    f->len = pos;
    return 0;
}

int
pyshm_frame_pickle(pyshm_state *st, PyObject *obj, pyshm_frame *f)
{
    Py_ssize_t i, n;

    frame_init(f);
    if (pyshm_objects_ready(st) < 0)
        return -1;
    f->buffers = PyList_New(0);
    if (f->buffers == NULL)
        return -1;
    f->stream = dumps_fast(st, obj, f->buffers);
    if (f->stream == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError))
            goto error;
        /* Maybe a memoryview inside: the pickler of pyshm._objects takes
           those; anything else fails there again with its own message. */
        PyErr_Clear();
        Py_CLEAR(f->buffers);
        if (dumps_fallback(obj, &f->stream, &f->buffers) < 0)
            goto error;
    }
    if (!PyBytes_Check(f->stream)) {
        PyErr_SetString(PyExc_SystemError, "pickle.dumps did not return bytes");
        goto error;
    }
    n = PyList_GET_SIZE(f->buffers);
    if (n > 0) {
        f->views = PyMem_New(Py_buffer, (size_t)n);
        if (f->views == NULL) {
            PyErr_NoMemory();
            goto error;
        }
    }
    for (i = 0; i < n; i++) {
        /* A PickleBuffer forwards the request to the object it wraps; the
           memory of a C- or Fortran-contiguous buffer is one block. */
        if (PyObject_GetBuffer(PyList_GET_ITEM(f->buffers, i), &f->views[i],
                               PyBUF_FULL_RO) < 0)
            goto error;
        f->nviews++;
        if (!PyBuffer_IsContiguous(&f->views[i], 'A')) {
            PyErr_SetString(PyExc_BufferError,
                            "send_obj(): an out-of-band buffer is not contiguous");
            goto error;
        }
    }
    if (frame_layout(f) < 0)
        goto error;
    return 0;

error:
    pyshm_frame_release(f);
    return -1;
}

/* ---- receiving ------------------------------------------------------------- */

static int
bad_frame(pyshm_state *st, const char *why)
{
    PyErr_Format(st->ProtocolError,
                 "recv_obj(): the object message is corrupt (%s); it stays queued "
                 "(recv() takes it as bytes)", why);
    return -1;
}

int
pyshm_frame_parse(pyshm_state *st, const ring_t *ch, const ring_msg *msg, pyshm_frame_in *in)
{
    unsigned char head[FRAME_HEAD];
    size_t len = msg->len, nbuf, tab, pos, i;
    uint64_t stream_len, off, blen;

    in->table = NULL;
    in->nbuf = 0;
    in->len = len;
    if (len < FRAME_HEAD)
        return bad_frame(st, "shorter than its head");
    ring_recv_read(ch, msg, 0, head, FRAME_HEAD);
    if (get32(head) != FRAME_MAGIC)
        return bad_frame(st, "no frame magic number");
    nbuf = get32(head + 4);
    stream_len = get64(head + 8);
    if (nbuf > (len - FRAME_HEAD) / FRAME_ENTRY)
        return bad_frame(st, "more buffers than bytes");
    tab = FRAME_HEAD + FRAME_ENTRY * nbuf;
    if (stream_len > len - tab)
        return bad_frame(st, "the pickle stream runs past the end");
    if (nbuf > 0) {
        in->table = PyMem_Malloc(FRAME_ENTRY * nbuf);
        if (in->table == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        ring_recv_read(ch, msg, FRAME_HEAD, in->table, FRAME_ENTRY * nbuf);
    }
    /* Buffers in order after the stream, inside the payload, not overlapping. */
    pos = tab + (size_t)stream_len;
    for (i = 0; i < nbuf; i++) {
        off = in->table[2 * i];
        blen = in->table[2 * i + 1];
        if (off < pos || off > len || blen > len - off) {
            PyMem_Free(in->table);
            in->table = NULL;
            return bad_frame(st, "a buffer lies outside the message");
        }
        pos = (size_t)(off + blen);
    }
    in->nbuf = (Py_ssize_t)nbuf;
    in->stream_off = tab;
    in->stream_len = (size_t)stream_len;
    return 0;
}

void
pyshm_frame_in_release(pyshm_frame_in *in)
{
    PyMem_Free(in->table);
    in->table = NULL;
    in->nbuf = 0;
}

PyObject *
pyshm_frame_target(pyshm_state *st, const pyshm_frame_in *in, unsigned char **dst,
                   size_t *offset, size_t *n)
{
    PyObject *target;

    if (in->nbuf == 0) {
        /* Only the stream: a bytes object (no GC, so no Python code runs
           while the caller holds the recv lock). */
        target = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)in->stream_len);
        if (target == NULL)
            return NULL;
        *dst = (unsigned char *)PyBytes_AS_STRING(target);
        *offset = in->stream_off;
        *n = in->stream_len;
        return target;
    }
    target = pyshm_buffer_new(st, in->len, dst);
    if (target == NULL)
        return NULL;
    *offset = 0;
    *n = in->len;
    return target;
}

PyObject *
pyshm_frame_unpickle(pyshm_state *st, const pyshm_frame_in *in, PyObject *target)
{
    PyObject *whole = NULL, *stream = NULL, *buffers = NULL, *result = NULL, *args[2];
    Py_ssize_t i;

    if (in->nbuf == 0)
        return PyObject_CallOneArg(st->pickle_loads, target);
    whole = PyMemoryView_FromObject(target);
    if (whole == NULL)
        goto done;
    stream = PySequence_GetSlice(whole, (Py_ssize_t)in->stream_off,
                                 (Py_ssize_t)(in->stream_off + in->stream_len));
    buffers = PyList_New(in->nbuf);
    if (stream == NULL || buffers == NULL)
        goto done;
    for (i = 0; i < in->nbuf; i++) {
        Py_ssize_t off = (Py_ssize_t)in->table[2 * i];
        PyObject *slice = PySequence_GetSlice(whole, off,
                                              off + (Py_ssize_t)in->table[2 * i + 1]);
        if (slice == NULL)
            goto done;
        PyList_SET_ITEM(buffers, i, slice);
    }
    args[0] = stream;
    args[1] = buffers;
    result = PyObject_Vectorcall(st->pickle_loads, args, 1, st->loads_kwnames);

done:
    Py_XDECREF(buffers);
    Py_XDECREF(stream);
    Py_XDECREF(whole);
    return result;
}
