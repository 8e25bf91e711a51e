/*
 * binding/compat.h -- the C-API names of Python 3.10+ that the binding uses,
 * provided on Python 3.9 (pyproject.toml's floor, requires-python >= 3.9).
 *
 * Owns: nothing of its own; each block below stands in for one 3.10 name
 * and disappears on 3.10+, where Python.h has the real one.
 * May include: Python.h only (through binding/binding.h, which includes this
 * file right after it).
 *
 * A new 3.10+ name used by the binding goes here, with the version that
 * brought it; CI builds and tests every version from the floor up (.ci/run),
 * so a missing one fails the 3.9 build (implicit declaration, -Werror).
 */
#ifndef PYSHM_BINDING_COMPAT_H
#define PYSHM_BINDING_COMPAT_H

#ifndef PY_VERSION_HEX
#  error "binding/compat.h needs Python.h first"
#endif

#if PY_VERSION_HEX < 0x030A0000

/* Py_NewRef (3.10): a new strong reference, returned. */
static inline PyObject *
pyshm_compat_new_ref(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}
#define Py_NewRef(obj) pyshm_compat_new_ref((PyObject *)(obj))

/* PyModule_AddObjectRef (3.10): like PyModule_AddObject, but VALUE is not
   stolen, on success or on failure. */
static inline int
pyshm_compat_module_add_object_ref(PyObject *module, const char *name, PyObject *value)
{
    Py_XINCREF(value);
    if (PyModule_AddObject(module, name, value) < 0) {
        Py_XDECREF(value);
        return -1;
    }
    return 0;
}
#define PyModule_AddObjectRef pyshm_compat_module_add_object_ref

/* Py_TPFLAGS_IMMUTABLETYPE (3.10): 3.9 has no such flag, and its type
   setattr lets code assign to any heap type's attributes; the types stay
   what 3.9 makes of every heap type (tests/segments/test_api.py checks the
   flag where it exists). */
#define Py_TPFLAGS_IMMUTABLETYPE 0

#endif /* PY_VERSION_HEX < 0x030A0000 */

#endif /* PYSHM_BINDING_COMPAT_H */
