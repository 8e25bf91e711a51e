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

/* Py_TPFLAGS_DISALLOW_INSTANTIATION (3.10): 3.10's bit, which 3.9 leaves
   unused; the wrapper below takes it out of the flags 3.9 sees and does
   what 3.10 does for it (tp_new cleared once the type is made). */
#define Py_TPFLAGS_DISALLOW_INSTANTIATION (1UL << 7)

/* A text signature on a type made from a spec (3.10 keeps it): 3.9's
   PyType_FromSpec stores the Py_tp_doc text with its "Name(...)\n--\n\n"
   line cut off, and the type's __text_signature__ -- what help() and
   inspect.signature(pyshm.SharedMemory) read -- is then None.  This wrapper
   puts the whole text back into tp_doc; __doc__ was set from the cut text
   already and stays without the signature line, as on 3.10+.  (A heap
   type's tp_doc is freed with PyObject_Free, so it is allocated so.) */
static inline PyObject *
pyshm_compat_type_from_module_and_spec(PyObject *module, PyType_Spec *spec, PyObject *bases)
{
    PyType_Spec spec39 = *spec;
    PyObject *type;
    PyType_Slot *slot;

    spec39.flags &= ~(unsigned int)Py_TPFLAGS_DISALLOW_INSTANTIATION;
    type = PyType_FromModuleAndSpec(module, &spec39, bases);
    if (type == NULL)
        return NULL;
    if (spec->flags & Py_TPFLAGS_DISALLOW_INSTANTIATION) {
        /* What 3.10 does for the flag: calling the type raises TypeError. */
        ((PyTypeObject *)type)->tp_new = NULL;
        PyType_Modified((PyTypeObject *)type);
    }
    for (slot = spec->slots; slot->slot != 0; slot++) {
        if (slot->slot == Py_tp_doc && slot->pfunc != NULL) {
            size_t len = strlen((const char *)slot->pfunc) + 1;
            char *doc = (char *)PyObject_Malloc(len);

            if (doc == NULL) {
                Py_DECREF(type);
                return PyErr_NoMemory();
            }
            memcpy(doc, slot->pfunc, len);
            PyObject_Free((void *)((PyTypeObject *)type)->tp_doc);
            ((PyTypeObject *)type)->tp_doc = doc;
        }
    }
    return type;
}
#define PyType_FromModuleAndSpec pyshm_compat_type_from_module_and_spec

#endif /* PY_VERSION_HEX < 0x030A0000 */

#endif /* PYSHM_BINDING_COMPAT_H */
