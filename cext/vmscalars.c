/*
 * uvmloan._vmscalars: the integer fields of struct vm_page and struct
 * vm_anon stored as machine words.
 *
 * NetBSD's vm_page (sys/uvm/uvm_page.h) and vm_anon (uvm_anon.h) are C
 * structs whose scalar fields are words inside the struct.  The model's
 * Page and Anon are Python objects, and a Python int field holds a pointer
 * to an int object: for a value above 256 (a frame number, a page's flags,
 * an object offset, the va of its first mapping, an anon's number) that is
 * a separate 32-byte object per page, about a third of what a resident page
 * cost.  These two base types give those fields word storage instead:
 *
 *   PageScalars: frame, flags, offset (signed 64-bit) and pv_va (unsigned
 *                64-bit: a kernel va is above 2**63 on amd64);
 *   AnonScalars: an_id, an_swslot (signed 64-bit).
 *
 * Page (through the pmap's VMPageMD) and Anon subclass them in Python and
 * keep their other fields (object references, small counts) as slots.  A
 * read returns a fresh int (a cached one for small values); a store takes
 * any int the word can hold, and anything else is a TypeError or an
 * OverflowError that leaves the field as it was.  A new object's fields are
 * 0.  The pure-Python twin (uvmloan/vmscalars.py) keeps the same fields as
 * slots; the tests run both.
 *
 * The types hold no object references, so they take no part in garbage
 * collection themselves (a Python subclass with object slots does).
 * Built against the stable ABI (3.11) where setup.py tags the wheel abi3.
 */

#include "pymodule.h" /* Python.h; setup.py defines Py_LIMITED_API where the wheel is abi3 */

#include <stddef.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    int64_t frame;
    int64_t flags;
    int64_t offset;
    uint64_t pv_va;
} PageScalars;

typedef struct {
    PyObject_HEAD
    int64_t an_id;
    int64_t an_swslot;
} AnonScalars;

static void
vs_dealloc(PyObject *self)
{
    /* A heap type's instance owns a reference to its type (for a Python
     * subclass, the subclass: subtype_dealloc leaves the decref to the
     * heap base's dealloc). */
    PyTypeObject *tp = Py_TYPE(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tp_free(self);
    Py_DECREF(tp);
}

static int
refuse_delete(PyObject *value, const char *name)
{
    if (value == NULL) {
        PyErr_Format(PyExc_TypeError, "cannot delete the %s field", name);
        return -1;
    }
    if (!PyLong_Check(value)) {
        PyObject *tname = PyType_GetName(Py_TYPE(value));
        if (tname != NULL) {
            PyErr_Format(PyExc_TypeError, "%s must be an int, not %U", name, tname);
            Py_DECREF(tname);
        }
        return -1;
    }
    return 0;
}

/* Store a signed word: the field is written only when the value fits. */
static int
set_i64(int64_t *field, PyObject *value, const char *name)
{
    long long v;
    if (refuse_delete(value, name) < 0)
        return -1;
    v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_OverflowError, "%s does not fit in a signed 64-bit word", name);
        return -1;
    }
    *field = (int64_t)v;
    return 0;
}

#define I64_FIELD(Type, fld)                                                   \
    static PyObject *get_##Type##_##fld(PyObject *self, void *closure)         \
    {                                                                          \
        (void)closure;                                                         \
        return PyLong_FromLongLong((long long)((Type *)self)->fld);            \
    }                                                                          \
    static int set_##Type##_##fld(PyObject *self, PyObject *value, void *closure) \
    {                                                                          \
        (void)closure;                                                         \
        return set_i64(&((Type *)self)->fld, value, #fld);                     \
    }

I64_FIELD(PageScalars, frame)
I64_FIELD(PageScalars, flags)
I64_FIELD(PageScalars, offset)
I64_FIELD(AnonScalars, an_id)
I64_FIELD(AnonScalars, an_swslot)

static PyObject *
get_pv_va(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong((unsigned long long)((PageScalars *)self)->pv_va);
}

static int
set_pv_va(PyObject *self, PyObject *value, void *closure)
{
    unsigned long long v;
    (void)closure;
    if (refuse_delete(value, "pv_va") < 0)
        return -1;
    v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_SetString(PyExc_OverflowError, "pv_va does not fit in an unsigned 64-bit word");
        return -1;
    }
    ((PageScalars *)self)->pv_va = (uint64_t)v;
    return 0;
}

static PyGetSetDef page_getset[] = {
    {"frame", get_PageScalars_frame, set_PageScalars_frame, "page frame number", NULL},
    {"flags", get_PageScalars_flags, set_PageScalars_flags, "PG_* flags", NULL},
    {"offset", get_PageScalars_offset, set_PageScalars_offset, "offset in the owner", NULL},
    {"pv_va", get_pv_va, set_pv_va, "va of the inline pv entry", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyGetSetDef anon_getset[] = {
    {"an_id", get_AnonScalars_an_id, set_AnonScalars_an_id, "the anon's number", NULL},
    {"an_swslot", get_AnonScalars_an_swslot, set_AnonScalars_an_swslot, "swap slot (0: none)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot page_slots[] = {
    {Py_tp_dealloc, vs_dealloc},
    {Py_tp_getset, page_getset},
    {Py_tp_doc, "struct vm_page's integer fields as machine words (see uvmloan.vmscalars)."},
    {0, NULL},
};

static PyType_Slot anon_slots[] = {
    {Py_tp_dealloc, vs_dealloc},
    {Py_tp_getset, anon_getset},
    {Py_tp_doc, "struct vm_anon's integer fields as machine words (see uvmloan.vmscalars)."},
    {0, NULL},
};

static PyType_Spec page_spec = {
    "uvmloan._vmscalars.PageScalars",
    sizeof(PageScalars),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    page_slots,
};

static PyType_Spec anon_spec = {
    "uvmloan._vmscalars.AnonScalars",
    sizeof(AnonScalars),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    anon_slots,
};

static int
vs_exec(PyObject *m)
{
    if (uvm_add_type(m, &page_spec, "PageScalars") < 0)
        return -1;
    return uvm_add_type(m, &anon_spec, "AnonScalars");
}

UVMLOAN_MODULE(_vmscalars,
               "vm_page and vm_anon integer fields as machine words (uvmloan.vmscalars is the "
               "Python face).",
               vs_exec)
