/*
 * binding/module.c -- the pyshm._pyshm extension module: multi-phase init,
 * module state, pyshm.unlink(), the fork handlers (os.register_at_fork:
 * the generation, and the loans' part in named.c), and the helpers
 * every binding file shares (names, errors, argument parsing, opening by
 * name, thread marks).
 *
 * Owns: the module and everything declared in binding/binding.h that is
 * not a type's exec function or named.c's (the objects' lifecycle); in a
 * coverage build (PYSHM_COVERAGE), the os._exit that writes the line
 * counts first.
 * May include: binding/binding.h (Python.h, core/status.h,
 * platform/segment.h) and the C library.
 */
#include "binding/binding.h"

#include <math.h>       /* isnan, isinf */
#include <string.h>     /* strcmp, memset */
#ifndef _WIN32
#  include <errno.h>    /* errno: OSError from an OS code */
#endif
#ifdef PYSHM_COVERAGE
#  include <limits.h>   /* INT_MIN, INT_MAX: an exit status */
#  include <unistd.h>   /* _exit */
#endif

/* A name that is taken: the OS's text plus what to do about it.  Only a
   create meets it; the exception is FileExistsError already. */
static void
add_exists_hint(void)
{
    PyObject *type, *value, *tb, *text, *hinted;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    text = value != NULL ? PyObject_GetAttrString(value, "strerror") : NULL;
    if (text != NULL && PyUnicode_Check(text)) {
        hinted = PyUnicode_FromFormat(
            "%U (pass exist_ok=True to open it instead, or remove it first: "
            "pyshm.unlink(name), or `pyshm rm NAME` from a shell)", text);
        if (hinted == NULL || PyObject_SetAttrString(value, "strerror", hinted) < 0)
            PyErr_Clear();      /* the plain OS text stays: still right */
        Py_XDECREF(hinted);
    }
    PyErr_Clear();
    Py_XDECREF(text);
    PyErr_Restore(type, value, tb);
}

PyObject *
pyshm_raise(pyshm_state *st, const shm_error *err, PyObject *name)
{
    switch (err->status) {
    case SHM_EOS:
#ifdef _WIN32
        /* Maps the Windows code to errno, so OSError picks the subclass
           (ERROR_ALREADY_EXISTS -> FileExistsError, ...). */
        PyErr_SetExcFromWindowsErrWithFilenameObject(PyExc_OSError, err->os_code, name);
#else
        if (err->detail != NULL) {
            /* The platform layer knows more than strerror (a name that is a
               FIFO, not a segment): OSError(errno, detail, name) still picks
               the subclass by errno. */
            PyObject *args = Py_BuildValue("(isO)", err->os_code, err->detail,
                                           name != NULL ? name : Py_None);
            if (args != NULL) {
                PyErr_SetObject(PyExc_OSError, args);
                Py_DECREF(args);
            }
            break;
        }
        errno = err->os_code;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
#endif
        if (PyErr_ExceptionMatches(PyExc_FileExistsError))
            add_exists_hint();
        break;
    case SHM_EVALUE:
        PyErr_SetString(PyExc_ValueError, err->detail ? err->detail : "invalid value");
        break;
    case SHM_ETIMEOUT:
        PyErr_SetString(PyExc_TimeoutError, err->detail ? err->detail : "timed out");
        break;
    case SHM_ECORRUPT:
        /* Named: "'jobs': not a pyshm channel: ..." says which segment. */
        if (name != NULL)
            PyErr_Format(st->ProtocolError, "%R: %s", name,
                         err->detail ? err->detail : "shared memory contents are corrupt");
        else
            PyErr_SetString(st->ProtocolError,
                            err->detail ? err->detail : "shared memory contents are corrupt");
        break;
    case SHM_EINTR:
        /* The caller should have run PyErr_CheckSignals(); be safe. */
        if (PyErr_CheckSignals() == 0)
            PyErr_SetString(PyExc_InterruptedError, "interrupted");
        break;
    default:
        PyErr_SetString(PyExc_SystemError, "pyshm: unexpected status");
        break;
    }
    return NULL;
}

pyshm_state *
pyshm_state_from_type(PyTypeObject *type)
{
    /* TYPE may be a user's subclass, which has no module of its own: ours is
       found up the MRO (what PyType_GetModuleByDef does from 3.11 on). */
#if PY_VERSION_HEX >= 0x030B0000
    PyObject *module = PyType_GetModuleByDef(type, &pyshm_module_def);
    return module == NULL ? NULL : pyshm_get_state(module);
#else
    PyObject *mro = type->tp_mro;
    Py_ssize_t i;

    for (i = 0; mro != NULL && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *module;

        if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE))
            continue;
        module = PyType_GetModule(base);
        if (module == NULL) {
            PyErr_Clear();
            continue;
        }
        if (PyModule_GetDef(module) == &pyshm_module_def)
            return pyshm_get_state(module);
    }
    PyErr_Format(PyExc_TypeError, "'%s' is not a pyshm type", type->tp_name);
    return NULL;
#endif
}

/* ---- names ------------------------------------------------------------ */

int
pyshm_name_from_object(PyObject *obj, pyshm_name *out)
{
    Py_ssize_t len;

    out->chars = NULL;
    out->owner = NULL;
    out->wide = NULL;
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "name must be a str, not '%.100s'",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    len = PyUnicode_GET_LENGTH(obj);
    if (len == 0) {
        PyErr_SetString(PyExc_ValueError, "name must not be empty");
        return -1;
    }
    if (PyUnicode_FindChar(obj, 0, 0, len, 1) != -1) {
        PyErr_SetString(PyExc_ValueError, "name must not contain NUL");
        return -1;
    }
    if (PyUnicode_CompareWithASCIIString(obj, ".") == 0 ||
        PyUnicode_CompareWithASCIIString(obj, "..") == 0) {
        /* On Linux "/." and "/.." name /dev/shm itself and its parent:
           shm_open fails with odd errors (EISDIR, EINVAL), never a segment. */
        PyErr_SetString(PyExc_ValueError, "name must not be '.' or '..'");
        return -1;
    }
    if (PyUnicode_FindChar(obj, '/', 0, len, 1) != -1) {
        PyErr_SetString(PyExc_ValueError,
                        "name must not contain '/' (give it without the leading '/': "
                        "pyshm adds it on POSIX)");
        return -1;
    }
#ifdef _WIN32
    {
        Py_ssize_t wlen;
        wchar_t *w = PyUnicode_AsWideCharString(obj, &wlen);
        if (w == NULL)
            return -1;
        if (wlen > SHM_NAME_MAX) {
            PyMem_Free(w);
            PyErr_Format(PyExc_ValueError, "name is too long (at most %d characters)",
                         SHM_NAME_MAX);
            return -1;
        }
        out->wide = w;
        out->chars = w;
    }
#else
    {
        PyObject *bytes = PyUnicode_EncodeFSDefault(obj);
        if (bytes == NULL)
            return -1;
        if (PyBytes_GET_SIZE(bytes) > SHM_NAME_MAX) {
            Py_DECREF(bytes);
            PyErr_Format(PyExc_ValueError, "name is too long (at most %d bytes)",
                         SHM_NAME_MAX);
            return -1;
        }
        out->owner = bytes;
        out->chars = PyBytes_AS_STRING(bytes);
    }
#endif
    return 0;
}

void
pyshm_name_release(pyshm_name *name)
{
    Py_CLEAR(name->owner);
    if (name->wide != NULL) {
        PyMem_Free(name->wide);
        name->wide = NULL;
    }
    name->chars = NULL;
}

PyObject *
pyshm_random_name(void)
{
    /* "psm_" + 10 hex digits = 14 characters, FreeBSD's limit for portable
       names; 40 random bits make a collision with a live name unlikely, and
       the exclusive create catches the rest (the caller retries). */
    PyObject *os, *raw, *hex, *name;

    os = PyImport_ImportModule("os");
    if (os == NULL)
        return NULL;
    raw = PyObject_CallMethod(os, "urandom", "i", 5);
    Py_DECREF(os);
    if (raw == NULL)
        return NULL;
    hex = PyObject_CallMethod(raw, "hex", NULL);
    Py_DECREF(raw);
    if (hex == NULL)
        return NULL;
    name = PyUnicode_FromFormat("psm_%U", hex);
    Py_DECREF(hex);
    return name;
}

/* ---- opening by name (every constructor: named.c) ----------------------- */

int
pyshm_interrupted(void *signals)
{
    /* SIGNALS is open_under's saved thread state, updated as we let go. */
    PyThreadState **saved = (PyThreadState **)signals;
    int raised;

    PyEval_RestoreThread(*saved);
    raised = PyErr_CheckSignals() < 0;
    *saved = PyEval_SaveThread();
    return raised;
}

/* Convert NAME and run OPEN_FN on it without the GIL.  -1 with an exception
   set when NAME is not a valid name (OPEN_FN did not run); else 0 with OPEN_FN's
   result in *STATUS (SHM_EINTR: a signal handler raised, the exception is set). */
static int
open_under(PyObject *name, pyshm_open_fn open_fn, void *arg, shm_status *status,
           shm_error *err)
{
    pyshm_name cname;
    PyThreadState *saved;

    if (pyshm_name_from_object(name, &cname) < 0)
        return -1;
    saved = PyEval_SaveThread();
    *status = open_fn(arg, cname.chars, &saved, err);
    PyEval_RestoreThread(saved);
    pyshm_name_release(&cname);
    return 0;
}

PyObject *
pyshm_open_by_name(pyshm_state *st, PyObject *name, pyshm_open_fn open_fn, void *arg,
                   const char *what)
{
    shm_status status;
    shm_error err;
    int attempt;

    if (name != Py_None) {
        if (open_under(name, open_fn, arg, &status, &err) < 0)
            return NULL;
        if (status == SHM_EINTR && PyErr_Occurred())
            return NULL;
        if (status != SHM_OK)
            return pyshm_raise(st, &err, name);
        return Py_NewRef(name);
    }
    /* A generated name: retry the (rare) collisions with a live segment. */
    for (attempt = 0; attempt < 64; attempt++) {
        PyObject *fresh = pyshm_random_name();

        if (fresh == NULL)
            return NULL;
        if (open_under(fresh, open_fn, arg, &status, &err) < 0) {
            Py_DECREF(fresh);
            return NULL;
        }
        if (status == SHM_OK)
            return fresh;
        if (status != SHM_EOS || err.os_code != PYSHM_OS_EEXIST) {
            if (!(status == SHM_EINTR && PyErr_Occurred()))
                pyshm_raise(st, &err, fresh);
            Py_DECREF(fresh);
            return NULL;
        }
        Py_DECREF(fresh);
    }
    PyErr_Format(PyExc_FileExistsError, "could not find a free random %s name", what);
    return NULL;
}

/* ---- arguments -------------------------------------------------------- */

int
pyshm_name_arg(PyObject *name, int create, const char *what)
{
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be a str or None, not '%.100s'",
                     Py_TYPE(name)->tp_name);
        return -1;
    }
    if (name == Py_None && !create) {
        PyErr_Format(PyExc_ValueError,
                     "name is required to open an existing %s "
                     "(name=None is only for create=True)", what);
        return -1;
    }
    return 0;
}

int
pyshm_mode_arg(PyObject *obj, int *mode)
{
    Py_ssize_t value;

    if (obj == NULL)
        return 0;
    if (pyshm_ssize_arg(obj, "mode", 0, &value) < 0)
        return -1;
    if (value > 07777) {
        PyErr_SetString(PyExc_ValueError, "mode must be permission bits (0 to 0o7777)");
        return -1;
    }
    *mode = (int)value;
    return 0;
}

int
pyshm_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, const char *const *names,
                 Py_ssize_t max_pos, Py_ssize_t min_required, PyObject **out)
{
    Py_ssize_t nnames = 0, i, j, nkw;

    while (names[nnames] != NULL)
        nnames++;
    for (i = 0; i < nnames; i++)
        out[i] = NULL;
    if (nargs > max_pos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd positional argument%s (%zd given)",
                     fname, max_pos, max_pos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++)
        out[i] = args[i];
    nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (j = 0; j < nkw; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        for (i = 0; i < nnames; i++) {
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                break;
        }
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                         fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (i = 0; i < min_required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'",
                         fname, names[i]);
            return -1;
        }
    }
    return 0;
}

int
pyshm_ssize_arg(PyObject *obj, const char *what, Py_ssize_t min, Py_ssize_t *out)
{
    PyObject *index;
    int overflow = 0;
    long long value;

    if (PyFloat_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not float", what);
        return -1;
    }
    index = PyNumber_Index(obj);
    if (index == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be an int, not '%.100s'", what,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    value = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (overflow != 0 || value < (long long)min || value > (long long)PY_SSIZE_T_MAX) {
        if (min >= 0 && (overflow < 0 || (overflow == 0 && value < 0)))
            PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
        else
            PyErr_Format(PyExc_ValueError, "%s is out of range", what);
        return -1;
    }
    *out = (Py_ssize_t)value;
    return 0;
}

int
pyshm_seconds_arg(PyObject *obj, const char *what, double *seconds, int *forever)
{
    double value;

    if (obj == NULL || obj == Py_None) {
        *forever = 1;
        *seconds = 0.0;
        return 0;
    }
    if (!PyFloat_Check(obj) && !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a number or None, not '%.100s'", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            /* A timeout beyond a double's range is "for ever" in practice. */
            PyErr_Clear();
            if (PyObject_RichCompareBool(obj, Py_False, Py_GT) == 1) {
                *forever = 1;
                *seconds = 0.0;
                return 0;
            }
            PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
        }
        return -1;
    }
    if (isnan(value)) {
        PyErr_Format(PyExc_ValueError, "%s must not be NaN", what);
        return -1;
    }
    if (value < 0) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", what);
        return -1;
    }
    *forever = isinf(value) ? 1 : 0;
    *seconds = value;
    return 0;
}

int
pyshm_timeout_arg(PyObject *obj, double *seconds, int *forever)
{
    return pyshm_seconds_arg(obj, "timeout", seconds, forever);
}

int
pyshm_get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *fname)
{
    if (PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() needs a bytes-like object, not 'str' (encode it first, "
                     "e.g. text.encode())", fname);
        return -1;
    }
    if (!PyObject_CheckBuffer(obj)) {
        /* A Channel carries bytes; other objects travel pickled by send_obj(). */
        int is_send = strcmp(fname, "send") == 0;
        PyErr_Format(PyExc_TypeError, "%s() needs a bytes-like object, not '%.100s'%s",
                     fname, Py_TYPE(obj)->tp_name,
                     is_send ? " (to send a Python object use send_obj(), or convert "
                               "it to bytes first)" : "");
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        Py_buffer probe;

        /* Read-only or non-contiguous: the wrong kind of object, a TypeError
           (DESIGN.md).  memoryview reports it as BufferError, NumPy as
           ValueError ("ndarray is not C-contiguous", "buffer source array is
           read-only").  A ValueError is ours only if the object does export
           a buffer when asked for any layout; otherwise (a released
           memoryview, say) the exporter's own error stands. */
        if (!PyErr_ExceptionMatches(PyExc_BufferError) &&
            !PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear();
        if (PyObject_GetBuffer(obj, &probe, PyBUF_FULL_RO) < 0)
            return -1;
        PyBuffer_Release(&probe);
        PyErr_Format(PyExc_TypeError, "%s() needs a %scontiguous buffer; '%.100s' is not "
                     "(%s)", fname, writable ? "writable " : "", Py_TYPE(obj)->tp_name,
                     writable ? "pass a bytearray, or a writable C-contiguous array"
                              : "make a contiguous copy first: numpy.ascontiguousarray(a), "
                                "or bytes(a)");
        return -1;
    }
    return 0;
}

/* ---- track=True ------------------------------------------------------------ */

/* Call pyshm._track.FN(NAME): the work of track=True is done in Python
   (multiprocessing's resource tracker), one place for every type.  IMPORT:
   import the module if need be; otherwise do nothing when it was never
   imported (no import on every unlink).  0, or -1 with an exception set. */
static int
call_track(const char *fn, PyObject *name, int import)
{
    PyObject *modname, *track, *result;

    modname = PyUnicode_FromString("pyshm._track");
    if (modname == NULL)
        return -1;
    track = import ? PyImport_Import(modname) : PyImport_GetModule(modname);
    Py_DECREF(modname);
    if (track == NULL)
        return PyErr_Occurred() ? -1 : 0;
    result = PyObject_CallMethod(track, fn, "O", name);
    Py_DECREF(track);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

int
pyshm_track_name(pyshm_state *st, PyObject *name)
{
    PyObject *type, *value, *tb, *ignored;

    if (call_track("register", name, 1) == 0)
        return 0;
    /* The caller just created NAME: remove it again, keeping this error. */
    PyErr_Fetch(&type, &value, &tb);
    ignored = pyshm_unlink_name(st, name);
    Py_XDECREF(ignored);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return -1;
}

/* ---- exist_ok: the existing object must be what was asked for ----------- */

int
pyshm_exist_ok_size(PyObject *name, const char *what, const char *arg,
                    pyshm_size_rule rule, uint64_t given, uint64_t asked, uint64_t found)
{
    PyObject *rounded;

    if (rule == PYSHM_AT_LEAST ? found >= asked : found == asked)
        return 0;
    /* "capacity=1001 (1008 once rounded)": the number the caller wrote
       first, then the one compared. */
    rounded = given == asked
        ? PyUnicode_FromString("")
        : PyUnicode_FromFormat(" (%llu once rounded)", (unsigned long long)asked);
    if (rounded == NULL)
        return -1;
    if (rule == PYSHM_AT_LEAST)
        PyErr_Format(PyExc_ValueError,
                     "%s %R exists with %s=%llu, smaller than the %s=%llu%U asked for; "
                     "nothing was changed (exist_ok=True opens an existing %s only when it "
                     "is at least as large: ask for %s=%llu or less, or remove it first)",
                     what, name, arg, (unsigned long long)found, arg,
                     (unsigned long long)given, rounded, what, arg,
                     (unsigned long long)found);
    else
        PyErr_Format(PyExc_ValueError,
                     "%s %R exists with %s=%llu, not the %s=%llu%U asked for; nothing was "
                     "changed (exist_ok=True opens an existing %s only with the %s asked "
                     "for: pass %s=%llu, or leave %s out to take the existing one's, or "
                     "remove it first)",
                     what, name, arg, (unsigned long long)found, arg,
                     (unsigned long long)given, rounded, what, arg, arg,
                     (unsigned long long)found, arg);
    Py_DECREF(rounded);
    return -1;
}

/* ---- what the types' lifecycle shares (named.c) --------------------------- */

void
pyshm_unmap(shm_segment *seg)
{
    shm_segment copy = *seg;

    shm_segment_init(seg);
    if (copy.addr == NULL)
        return;
    Py_BEGIN_ALLOW_THREADS
    shm_segment_close(&copy);
    Py_END_ALLOW_THREADS
}

PyObject *
pyshm_reduce_by_name(PyObject *self, PyObject *name, PyObject *kwargs)
{
    PyObject *type = (PyObject *)Py_TYPE(self), *functools, *partial, *args, *opener;

    if (kwargs == NULL)
        return Py_BuildValue("(O(O))", type, name);
    functools = PyImport_ImportModule("functools");
    if (functools == NULL)
        return NULL;
    partial = PyObject_GetAttrString(functools, "partial");
    Py_DECREF(functools);
    if (partial == NULL)
        return NULL;
    args = PyTuple_Pack(1, type);
    opener = args == NULL ? NULL : PyObject_Call(partial, args, kwargs);
    Py_XDECREF(args);
    Py_DECREF(partial);
    if (opener == NULL)
        return NULL;
    return Py_BuildValue("(N(O))", opener, name);
}

/* ---- module functions --------------------------------------------------- */

PyDoc_STRVAR(unlink_doc,
"unlink(name, /)\n"
"--\n\n"
"Remove the segment NAME so that it can no longer be opened; processes that\n"
"have it mapped keep their mapping.  FileNotFoundError if there is none.\n"
"On Windows a name lives until its last handle closes: this does nothing.");

PyObject *
pyshm_unlink_name(pyshm_state *st, PyObject *name)
{
    pyshm_name cname;
    shm_error err;
    shm_status status;

    if (pyshm_name_from_object(name, &cname) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = shm_segment_unlink(cname.chars, &err);
    Py_END_ALLOW_THREADS
    pyshm_name_release(&cname);
    /* Removed (or already gone): nothing left for track=True to remove. */
    if ((status == SHM_OK || (status == SHM_EOS && err.os_code == PYSHM_OS_ENOENT)) &&
        call_track("forget", name, 0) < 0)
        return NULL;
    if (status != SHM_OK)
        return pyshm_raise(st, &err, name);
    Py_RETURN_NONE;
}

static PyObject *
pyshm_unlink(PyObject *module, PyObject *arg)
{
    return pyshm_unlink_name(pyshm_get_state(module), arg);
}

static PyMethodDef module_methods[] = {
    {"unlink", (PyCFunction)pyshm_unlink, METH_O, unlink_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- fork ----------------------------------------------------------------- */

/* Run by os.register_at_fork in each child (see pyshm_fork_generation),
   before any code of the child: the loans the parent held die here. */
static PyObject *
after_fork_in_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pyshm_state *st = pyshm_get_state(module);

    st->fork_generation++;
    pyshm_named_after_fork_child(st);
    Py_RETURN_NONE;
}

/* ---- thread marks (see binding.h) ---------------------------------------------- */

/* The thread dict's key for our mark: an object of this module's own (its
   Loan type), so that no other extension's key can be equal to it. */
static PyObject *
mark_key(pyshm_state *st)
{
    return (PyObject *)st->Loan_type;
}

PyObject *
pyshm_thread_mark(pyshm_state *st)
{
    PyObject *dict = PyThreadState_GetDict(), *mark;
    int rc;

    if (dict == NULL || mark_key(st) == NULL) {
        /* (The key is gone once the module is cleared, at shutdown.) */
        PyErr_SetString(PyExc_RuntimeError, "pyshm: no thread state dict (or the module "
                        "is being torn down)");
        return NULL;
    }
    mark = PyDict_GetItemWithError(dict, mark_key(st));    /* borrowed */
    if (mark == NULL) {
        if (PyErr_Occurred())
            return NULL;
        /* Any object that takes weak references will do; an empty set is
           the cheapest built-in one. */
        mark = PySet_New(NULL);
        if (mark == NULL)
            return NULL;
        rc = PyDict_SetItem(dict, mark_key(st), mark);
        Py_DECREF(mark);    /* the dict holds it now */
        if (rc < 0)
            return NULL;
    }
    /* Without a callback: CPython hands out one shared reference per object. */
    return PyWeakref_NewRef(mark, NULL);
}

/* MARK's object (borrowed; it lives as long as its thread), or NULL once
   the thread has ended. */
static PyObject *
mark_target(PyObject *mark)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *obj = NULL;

    /* PyWeakref_GetObject is deprecated from 3.13 on. */
    if (PyWeakref_GetRef(mark, &obj) <= 0) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(obj);     /* still held by its thread's dict */
    return obj;
#else
    PyObject *obj = PyWeakref_GetObject(mark);

    if (obj == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return obj == Py_None ? NULL : obj;
#endif
}

int
pyshm_thread_alive(PyObject *mark)
{
    return mark != NULL && mark_target(mark) != NULL;
}

int
pyshm_thread_is(pyshm_state *st, PyObject *mark)
{
    PyObject *dict = PyThreadState_GetDict(), *mine, *target;

    if (dict == NULL || mark == NULL || mark_key(st) == NULL)
        return 0;
    mine = PyDict_GetItemWithError(dict, mark_key(st));
    if (mine == NULL) {
        PyErr_Clear();
        return 0;       /* this thread never took a loan: not its owner */
    }
    target = mark_target(mark);
    return target != NULL && target == mine;
}

/* Run before every fork (the parent) and after it in the parent. */
static PyObject *
before_fork(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pyshm_named_before_fork(pyshm_get_state(module));
    Py_RETURN_NONE;
}

static PyObject *
after_fork_in_parent(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    pyshm_named_after_fork_parent(pyshm_get_state(module));
    Py_RETURN_NONE;
}

static PyMethodDef after_fork_def = {
    "_pyshm_after_fork_in_child", after_fork_in_child, METH_NOARGS, NULL,
};
static PyMethodDef before_fork_def = {
    "_pyshm_before_fork", before_fork, METH_NOARGS, NULL,
};
static PyMethodDef after_fork_parent_def = {
    "_pyshm_after_fork_in_parent", after_fork_in_parent, METH_NOARGS, NULL,
};

/* os.register_at_fork(before=..., after_in_parent=..., after_in_child=...)
   where os has it (not on Windows). */
static int
register_fork_handler(PyObject *module)
{
    PyObject *os, *reg, *func, *before = NULL, *parent = NULL, *args = NULL, *kwargs = NULL,
             *done = NULL;

    os = PyImport_ImportModule("os");
    if (os == NULL)
        return -1;
    reg = PyObject_GetAttrString(os, "register_at_fork");
    Py_DECREF(os);
    if (reg == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();      /* no fork here */
        return 0;
    }
    func = PyCFunction_NewEx(&after_fork_def, module, NULL);
    if (func != NULL)
        before = PyCFunction_NewEx(&before_fork_def, module, NULL);
    if (before != NULL)
        parent = PyCFunction_NewEx(&after_fork_parent_def, module, NULL);
    if (parent != NULL)
        args = PyTuple_New(0);
    if (args != NULL)
        kwargs = Py_BuildValue("{sOsOsO}", "before", before, "after_in_parent", parent,
                               "after_in_child", func);
    if (kwargs != NULL)
        done = PyObject_Call(reg, args, kwargs);
    Py_XDECREF(done);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(parent);
    Py_XDECREF(before);
    Py_XDECREF(func);
    Py_DECREF(reg);
    return done == NULL ? -1 : 0;
}

/* ---- coverage builds ------------------------------------------------------ */

#ifdef PYSHM_COVERAGE
/*
 * Only in a coverage build (setup.py, PYSHM_COVERAGE=1; never in a wheel).
 * gcc's runtime writes a process's line counts (.gcda) at exit(); a fork
 * child that ends with os._exit() skips exit(), and the paths only such
 * children run (after_fork, the Linux slot reclaim of sync_linux.c) would
 * never be counted.  So os._exit is replaced by this function: it writes
 * the counts, then ends the process as os._exit() does (_exit(2), nothing
 * else run).  A child killed by a signal still loses its counts: what only
 * such children run is tested where a process ends normally.
 */
extern void __gcov_dump(void);      /* libgcov, linked in by --coverage */

static PyObject *
coverage_exit(PyObject *module, PyObject *arg)
{
    int overflow = 0;
    long status = PyLong_AsLongAndOverflow(arg, &overflow);

    (void)module;
    if (status == -1 && PyErr_Occurred())
        return NULL;
    if (overflow != 0 || status < INT_MIN || status > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "exit status out of range");
        return NULL;
    }
    __gcov_dump();
    _exit((int)status);
}

static PyMethodDef coverage_exit_def = {
    "_exit", coverage_exit, METH_O,
    "_exit($module, status, /)\n--\n\n"
    "os._exit() of a pyshm coverage build: writes the line counts, then _exit(status).",
};

static int
install_coverage_exit(PyObject *module)
{
    PyObject *os, *func;
    int rc;

    os = PyImport_ImportModule("os");
    if (os == NULL)
        return -1;
    func = PyCFunction_NewEx(&coverage_exit_def, module, NULL);
    rc = func == NULL ? -1 : PyObject_SetAttrString(os, "_exit", func);
    Py_XDECREF(func);
    Py_DECREF(os);
    return rc;
}
#endif /* PYSHM_COVERAGE */

/* ---- init ----------------------------------------------------------------- */

static int
module_exec(PyObject *module)
{
    pyshm_state *st = pyshm_get_state(module);

    st->nkinds = 0;
    st->ProtocolError = PyErr_NewExceptionWithDoc(
        "pyshm.ProtocolError",
        "Shared memory contents break the pyshm protocol: a corrupt or hostile\n"
        "peer, or a segment that is not what it was opened as.",
        PyExc_RuntimeError, NULL);
    if (st->ProtocolError == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "ProtocolError", st->ProtocolError) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "PAGE_SIZE", (long)shm_page_size()) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "NAME_MAX", SHM_NAME_MAX) < 0)
        return -1;
    if (pyshm_sharedmemory_exec(module, st) < 0)
        return -1;
    if (pyshm_channel_exec(module, st) < 0)
        return -1;
    if (pyshm_slot_exec(module, st) < 0)
        return -1;
    st->fork_generation = 0;
    st->loans = NULL;
    st->forks = 0;
    memset(st->spares, 0, sizeof st->spares);
    st->spares_closed = 0;
    if (register_fork_handler(module) < 0)
        return -1;
#ifdef PYSHM_COVERAGE
    if (install_coverage_exit(module) < 0)
        return -1;
#endif
    if (pyshm_loan_exec(module, st) < 0)
        return -1;
    if (pyshm_ready_exec(module, st) < 0)
        return -1;
    if (pyshm_buffer_exec(module, st) < 0)
        return -1;
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    pyshm_state *st = pyshm_get_state(module);
    Py_VISIT(st->SharedMemory_type);
    Py_VISIT(st->Channel_type);
    Py_VISIT(st->Slot_type);
    Py_VISIT(st->ProtocolError);
    Py_VISIT(st->Loan_type);
    Py_VISIT(st->MessageBuffer_type);
    Py_VISIT(st->pickle_dumps);
    Py_VISIT(st->pickle_loads);
    Py_VISIT(st->dumps_kwnames);
    Py_VISIT(st->loads_kwnames);
    return 0;
}

static int
module_clear(PyObject *module)
{
    pyshm_state *st = pyshm_get_state(module);
    Py_CLEAR(st->SharedMemory_type);
    Py_CLEAR(st->Channel_type);
    Py_CLEAR(st->Slot_type);
    st->nkinds = 0;         /* the kinds' types were borrowed from the above */
    Py_CLEAR(st->ProtocolError);
    Py_CLEAR(st->Loan_type);
    Py_CLEAR(st->MessageBuffer_type);
    Py_CLEAR(st->pickle_dumps);
    Py_CLEAR(st->pickle_loads);
    Py_CLEAR(st->dumps_kwnames);
    Py_CLEAR(st->loads_kwnames);
    pyshm_buffer_spares_close(st);
    return 0;
}

static void
module_free(void *module)
{
    (void)module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

PyModuleDef pyshm_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyshm._pyshm",
    .m_doc = "C core of pyshm: named shared memory and channels between processes.",
    .m_size = sizeof(pyshm_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__pyshm(void)
{
    return PyModuleDef_Init(&pyshm_module_def);
}
