/*
 * The CPython module boilerplate that the model's small extension modules
 * (uvmloan._physmem_fast, _ptetable, _vmscalars) share: adding a heap type
 * made from its spec to the module, and the multi-phase module definition
 * with its init function.  Stable-ABI (3.11) calls only.
 */
#ifndef UVMLOAN_PYMODULE_H
#define UVMLOAN_PYMODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The type of ``spec``, added to module ``m`` as ``name``; -1 on error. */
static inline int
uvm_add_type(PyObject *m, PyType_Spec *spec, const char *name)
{
    PyObject *type = PyType_FromSpec(spec);
    if (type == NULL)
        return -1;
    if (PyModule_AddObject(m, name, type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/* The module uvmloan.<NAME> (NAME an identifier such as _ptetable), with
 * ``doc`` and ``exec_fn`` run at import (Py_mod_exec). */
#define UVMLOAN_MODULE(NAME, doc, exec_fn)                                     \
    static PyModuleDef_Slot module_slots[] = {                                 \
        {Py_mod_exec, (void *)(exec_fn)},                                      \
        {0, NULL},                                                             \
    };                                                                         \
    static struct PyModuleDef module = {                                       \
        PyModuleDef_HEAD_INIT, "uvmloan." #NAME, doc, 0, NULL, module_slots,   \
        NULL, NULL, NULL,                                                      \
    };                                                                         \
    PyMODINIT_FUNC PyInit_##NAME(void) { return PyModuleDef_Init(&module); }

#endif
