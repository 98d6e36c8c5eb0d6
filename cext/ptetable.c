/*
 * uvmloan._ptetable: a pmap's PTEs kept in page-table pages.
 *
 * ``Pmap.ptes`` maps a page-aligned virtual address to its PTE.  As a dict
 * every PTE cost a hash-table entry (about 72 bytes, with the table's
 * growth) besides the int objects; here the PTEs are stored as the x86 pmap
 * stores them, in page-table pages (PTPs) of 512 entries, each covering 512
 * pages of address space (2 MiB with 4 KiB pages: the L1 PTP that
 * pmap_get_ptp allocates in NetBSD's sys/arch/x86/x86/pmap.c).  A PTP is
 * 8 bytes a PTE plus a presence bit, made when its first PTE is entered and
 * freed when its last one goes (pmap_free_ptp).  The PTPs are found through
 * a small open-addressed hash keyed by va >> (page_shift + 9), with the PTP
 * found last checked first (faults and range walks stay within one).
 *
 * A presence bit, not a zero PTE, says whether an address has an entry: the
 * model may keep an entry whose PTE_P is clear (``pte & PTE_P`` is tested),
 * and the dict it replaces had those too.
 *
 * The type is a mapping with the dict operations the model uses: len, in,
 * [] (KeyError), []=, del, get, pop, clear, and keys/values/items in address
 * order (as a page-table walk visits them; lists, so the caller may change
 * the table while it goes through one), plus ``nbytes``, the C memory held
 * (benchmarks count it beside tracemalloc's figure).  Keys are page-aligned
 * ints in [0, 2**64) and PTEs ints in [0, 2**64).  For a lookup, any other
 * key (another type, an unaligned or out-of-range int) is simply absent, as
 * it would be from the dict; storing one is a TypeError or ValueError.  The
 * pure-Python twin (uvmloan/ptetable.py) behaves the same, and the tests
 * run both against a dict.
 *
 * Holds no Python objects, so it takes no part in garbage collection.
 * Built against the stable ABI (3.11) where setup.py tags the wheel abi3.
 */

#include "pymodule.h" /* Python.h; setup.py defines Py_LIMITED_API where the wheel is abi3 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PTP_SHIFT 9
#define PTP_N (1u << PTP_SHIFT)
#define PTP_WORDS (PTP_N / 64)

typedef struct {
    uint64_t key;                 /* va >> (page_shift + PTP_SHIFT) */
    uint32_t n;                   /* entries present */
    uint64_t present[PTP_WORDS];  /* bit i: entry i is present */
    uint64_t pte[PTP_N];
} ptp_t;

typedef struct {
    PyObject_HEAD
    unsigned shift;     /* page shift */
    uint64_t pgmask;    /* page size - 1 */
    Py_ssize_t count;   /* entries present in all PTPs */
    ptp_t **tab;        /* hash of PTPs; NULL: an empty slot */
    size_t mask;        /* slots - 1 (a power of two minus one); 0 with no table */
    size_t nptp;        /* PTPs in the hash */
    ptp_t *last;        /* the PTP found last, or NULL */
} PT;

static size_t
home(const PT *t, uint64_t key)
{
    /* splitmix64's finaliser: PTP keys are consecutive numbers */
    uint64_t h = key;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return (size_t)h & t->mask;
}

static ptp_t *
ptp_find(PT *t, uint64_t key)
{
    ptp_t *p = t->last;
    if (p != NULL && p->key == key)
        return p;
    if (t->tab == NULL)
        return NULL;
    for (size_t i = home(t, key);; i = (i + 1) & t->mask) {
        p = t->tab[i];
        if (p == NULL)
            return NULL;
        if (p->key == key) {
            t->last = p;
            return p;
        }
    }
}

/* Put p in the hash (which has room and does not hold p's key). */
static void
slot_put(PT *t, ptp_t *p)
{
    size_t i = home(t, p->key);
    while (t->tab[i] != NULL)
        i = (i + 1) & t->mask;
    t->tab[i] = p;
}

/* Double the hash (or make its first 8 slots); -1 with MemoryError set. */
static int
grow(PT *t)
{
    size_t slots = t->tab == NULL ? 8 : 2 * (t->mask + 1);
    ptp_t **old = t->tab;
    size_t oldslots = old == NULL ? 0 : t->mask + 1;
    ptp_t **tab = calloc(slots, sizeof *tab);
    if (tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->tab = tab;
    t->mask = slots - 1;
    for (size_t i = 0; i < oldslots; i++)
        if (old[i] != NULL)
            slot_put(t, old[i]);
    free(old);
    return 0;
}

/* The PTP for key, made if missing; NULL with MemoryError set. */
static ptp_t *
ptp_get(PT *t, uint64_t key)
{
    ptp_t *p = ptp_find(t, key);
    if (p != NULL)
        return p;
    /* at most half full: probes stay short */
    if (t->tab == NULL || 2 * (t->nptp + 1) > t->mask + 1) {
        if (grow(t) < 0)
            return NULL;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    p->key = key;
    slot_put(t, p);
    t->nptp++;
    t->last = p;
    return p;
}

/* Take an empty PTP out of the hash and free it (backward-shift deletion:
 * no tombstones, so lookups never probe past a deleted PTP). */
static void
ptp_free(PT *t, ptp_t *p)
{
    size_t i = home(t, p->key);
    while (t->tab[i] != p)
        i = (i + 1) & t->mask;
    t->tab[i] = NULL;
    for (size_t j = (i + 1) & t->mask; t->tab[j] != NULL; j = (j + 1) & t->mask) {
        size_t k = home(t, t->tab[j]->key);
        /* the entry at j may fill the hole at i if its home is not in (i, j] */
        if (((j - k) & t->mask) >= ((j - i) & t->mask)) {
            t->tab[i] = t->tab[j];
            t->tab[j] = NULL;
            i = j;
        }
    }
    t->nptp--;
    if (t->last == p)
        t->last = NULL;
    free(p);
}

/* A key as a page-aligned va: 1 and *va set, or 0 (absent: any error is
 * cleared). */
static int
key_va(const PT *t, PyObject *key, uint64_t *va)
{
    if (!PyLong_Check(key))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(key);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (v & t->pgmask)
        return 0;
    *va = (uint64_t)v;
    return 1;
}

/* The PTE slot for va if present, else NULL. */
static uint64_t *
lookup(PT *t, uint64_t va)
{
    uint64_t vpn = va >> t->shift;
    ptp_t *p = ptp_find(t, vpn >> PTP_SHIFT);
    if (p == NULL)
        return NULL;
    unsigned i = (unsigned)(vpn & (PTP_N - 1));
    if (!(p->present[i >> 6] >> (i & 63) & 1))
        return NULL;
    return &p->pte[i];
}

/* Remove the entry of va, which is present. */
static void
remove_present(PT *t, uint64_t va)
{
    uint64_t vpn = va >> t->shift;
    ptp_t *p = ptp_find(t, vpn >> PTP_SHIFT);
    unsigned i = (unsigned)(vpn & (PTP_N - 1));
    p->present[i >> 6] &= ~((uint64_t)1 << (i & 63));
    p->pte[i] = 0;
    t->count--;
    if (--p->n == 0)
        ptp_free(t, p);
}

static int
store(PT *t, PyObject *key, PyObject *value)
{
    if (!PyLong_Check(key)) {
        PyObject *name = PyType_GetName(Py_TYPE(key));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "PTETable: a virtual address is an int, not %U", name);
            Py_DECREF(name);
        }
        return -1;
    }
    unsigned long long va = PyLong_AsUnsignedLongLong(key);
    if (va == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "PTETable: a virtual address is in [0, 2**64)");
        return -1;
    }
    if (va & t->pgmask) {
        /* (PyErr_Format has no %llx) */
        char msg[64];
        snprintf(msg, sizeof msg, "PTETable: va %#llx is not page aligned", va);
        PyErr_SetString(PyExc_ValueError, msg);
        return -1;
    }
    if (!PyLong_Check(value)) {
        PyObject *name = PyType_GetName(Py_TYPE(value));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "PTETable: a PTE is an int, not %U", name);
            Py_DECREF(name);
        }
        return -1;
    }
    unsigned long long pte = PyLong_AsUnsignedLongLong(value);
    if (pte == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "PTETable: a PTE is in [0, 2**64)");
        return -1;
    }
    uint64_t vpn = (uint64_t)va >> t->shift;
    ptp_t *p = ptp_get(t, vpn >> PTP_SHIFT);
    if (p == NULL)
        return -1;
    unsigned i = (unsigned)(vpn & (PTP_N - 1));
    uint64_t bit = (uint64_t)1 << (i & 63);
    if (!(p->present[i >> 6] & bit)) {
        p->present[i >> 6] |= bit;
        p->n++;
        t->count++;
    }
    p->pte[i] = (uint64_t)pte;
    return 0;
}

/* ------------------------------------------------------------------ */
/* the mapping protocol                                               */

static Py_ssize_t
pt_len(PyObject *op)
{
    return ((PT *)op)->count;
}

static PyObject *
pt_subscript(PyObject *op, PyObject *key)
{
    PT *t = (PT *)op;
    uint64_t va;
    uint64_t *slot = key_va(t, key, &va) ? lookup(t, va) : NULL;
    if (slot == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(*slot);
}

static int
pt_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    PT *t = (PT *)op;
    if (value != NULL)
        return store(t, key, value);
    uint64_t va;
    if (!key_va(t, key, &va) || lookup(t, va) == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    remove_present(t, va);
    return 0;
}

static int
pt_contains(PyObject *op, PyObject *key)
{
    PT *t = (PT *)op;
    uint64_t va;
    return key_va(t, key, &va) && lookup(t, va) != NULL;
}

static PyObject *
pt_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PT *t = (PT *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(va, default=None)");
        return NULL;
    }
    uint64_t va;
    uint64_t *slot = key_va(t, args[0], &va) ? lookup(t, va) : NULL;
    if (slot != NULL)
        return PyLong_FromUnsignedLongLong(*slot);
    PyObject *d = nargs == 2 ? args[1] : Py_None;
    Py_INCREF(d);
    return d;
}

static PyObject *
pt_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PT *t = (PT *)op;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(va[, default])");
        return NULL;
    }
    uint64_t va;
    uint64_t *slot = key_va(t, args[0], &va) ? lookup(t, va) : NULL;
    if (slot == NULL) {
        if (nargs == 2) {
            Py_INCREF(args[1]);
            return args[1];
        }
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *r = PyLong_FromUnsignedLongLong(*slot);
    if (r != NULL)
        remove_present(t, va);
    return r;
}

static int
by_key(const void *a, const void *b)
{
    uint64_t x = (*(ptp_t *const *)a)->key, y = (*(ptp_t *const *)b)->key;
    return x < y ? -1 : x > y;
}

enum { WALK_KEYS, WALK_VALUES, WALK_ITEMS };

/* Every entry in address order, as a new list of vas, PTEs or (va, PTE). */
static PyObject *
walk(PT *t, int what)
{
    PyObject *out = PyList_New(0);
    if (out == NULL || t->nptp == 0)
        return out;
    ptp_t **ptps = malloc(t->nptp * sizeof *ptps);
    if (ptps == NULL) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    size_t n = 0;
    for (size_t i = 0; i <= t->mask; i++)
        if (t->tab[i] != NULL)
            ptps[n++] = t->tab[i];
    qsort(ptps, n, sizeof *ptps, by_key);
    for (size_t k = 0; k < n; k++) {
        ptp_t *p = ptps[k];
        for (unsigned i = 0; i < PTP_N; i++) {
            if (!(p->present[i >> 6] >> (i & 63) & 1))
                continue;
            uint64_t va = ((p->key << PTP_SHIFT) | i) << t->shift;
            PyObject *item;
            if (what == WALK_KEYS) {
                item = PyLong_FromUnsignedLongLong(va);
            } else if (what == WALK_VALUES) {
                item = PyLong_FromUnsignedLongLong(p->pte[i]);
            } else {
                PyObject *a = PyLong_FromUnsignedLongLong(va);
                PyObject *b = a == NULL ? NULL : PyLong_FromUnsignedLongLong(p->pte[i]);
                item = b == NULL ? NULL : PyTuple_Pack(2, a, b);
                Py_XDECREF(a);
                Py_XDECREF(b);
            }
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                free(ptps);
                return NULL;
            }
            Py_DECREF(item);
        }
    }
    free(ptps);
    return out;
}

static PyObject *
pt_keys(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return walk((PT *)op, WALK_KEYS);
}

static PyObject *
pt_values(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return walk((PT *)op, WALK_VALUES);
}

static PyObject *
pt_items(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return walk((PT *)op, WALK_ITEMS);
}

static PyObject *
pt_iter(PyObject *op)
{
    PyObject *keys = walk((PT *)op, WALK_KEYS);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static void
free_all(PT *t)
{
    if (t->tab != NULL) {
        for (size_t i = 0; i <= t->mask; i++)
            free(t->tab[i]);
        free(t->tab);
    }
    t->tab = NULL;
    t->mask = 0;
    t->nptp = 0;
    t->count = 0;
    t->last = NULL;
}

static PyObject *
pt_clear(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    free_all((PT *)op);
    Py_RETURN_NONE;
}

static PyObject *
pt_nbytes(PyObject *op, void *Py_UNUSED(closure))
{
    PT *t = (PT *)op;
    size_t slots = t->tab == NULL ? 0 : t->mask + 1;
    return PyLong_FromSize_t(slots * sizeof(ptp_t *) + t->nptp * sizeof(ptp_t));
}

static PyObject *
pt_nptp(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(((PT *)op)->nptp);
}

static PyObject *
pt_page_shift(PyObject *op, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(((PT *)op)->shift);
}

static PyObject *
pt_repr(PyObject *op)
{
    PT *t = (PT *)op;
    return PyUnicode_FromFormat("<PTETable %zd PTEs in %zu PTPs>", t->count, t->nptp);
}

static PyObject *
pt_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int shift;
    static char *kwlist[] = {"page_shift", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &shift))
        return NULL;
    /* a page of 16 bytes .. 1 GiB, so a PTP's span fits in 64 bits */
    if (shift < 4 || shift > 30) {
        PyErr_Format(PyExc_ValueError, "PTETable: page_shift must be in [4, 30], got %d", shift);
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    PT *t = (PT *)alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->shift = (unsigned)shift;
    t->pgmask = ((uint64_t)1 << shift) - 1;
    t->count = 0;
    t->tab = NULL;
    t->mask = 0;
    t->nptp = 0;
    t->last = NULL;
    return (PyObject *)t;
}

static void
pt_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    free_all((PT *)op);
    freefunc tfree = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tfree(op);
    Py_DECREF(tp);
}

static PyMethodDef pt_methods[] = {
    {"get", (PyCFunction)(void (*)(void))pt_get, METH_FASTCALL,
     "get(va, default=None): the PTE at va, or default."},
    {"pop", (PyCFunction)(void (*)(void))pt_pop, METH_FASTCALL,
     "pop(va[, default]): remove the entry at va and return its PTE."},
    {"keys", pt_keys, METH_NOARGS, "The vas with an entry, in address order (a list)."},
    {"values", pt_values, METH_NOARGS, "The PTEs, in address order (a list)."},
    {"items", pt_items, METH_NOARGS, "(va, PTE) of every entry, in address order (a list)."},
    {"clear", pt_clear, METH_NOARGS, "Remove every entry (and free every PTP)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pt_getset[] = {
    {"nbytes", pt_nbytes, NULL, "C memory held: the PTPs and the hash that finds them.", NULL},
    {"nptp", pt_nptp, NULL, "Page-table pages in use.", NULL},
    {"page_shift", pt_page_shift, NULL, "log2 of the page size.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot pt_slots[] = {
    {Py_tp_new, pt_new},
    {Py_tp_dealloc, pt_dealloc},
    {Py_tp_repr, pt_repr},
    {Py_tp_iter, pt_iter},
    {Py_mp_length, pt_len},
    {Py_mp_subscript, pt_subscript},
    {Py_mp_ass_subscript, pt_ass_subscript},
    {Py_sq_contains, pt_contains},
    {Py_tp_methods, pt_methods},
    {Py_tp_getset, pt_getset},
    {Py_tp_doc, "PTETable(page_shift): page-aligned va -> PTE, kept in 512-entry page-table "
                "pages."},
    {0, NULL},
};

static PyType_Spec pt_spec = {
    "uvmloan._ptetable.PTETable",
    sizeof(PT),
    0,
    Py_TPFLAGS_DEFAULT,
    pt_slots,
};

static int
pt_exec(PyObject *m)
{
    return uvm_add_type(m, &pt_spec, "PTETable");
}

UVMLOAN_MODULE(_ptetable,
               "A pmap's PTEs in 512-entry page-table pages (uvmloan.ptetable is the Python face).",
               pt_exec)
