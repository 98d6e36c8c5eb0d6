/*
 * uvmloan._physmem_fast: the hottest physmem calls without cffi.
 *
 * A cffi call converts every argument through its type machinery and the
 * PhysMem method around it adds a Python frame: together about 2.5 times the
 * memcpy of a 4 KiB page.  This module binds one arena once, in a small
 * object whose copy_page and copy_pages methods are METH_FASTCALL builtins:
 * PhysMem stores the bound methods, so a call goes from the interpreter
 * straight here.
 *
 * The same is done for zero_page (every zero-fill fault), the one-frame
 * copyin of a user store (copyin1), the
 * checksum of a piece list (cksum_sum), of a plain buffer (cksum_bytes) and
 * a NIC's gather+checksum (gather_cksum): for these the argument marshalling
 * in Python and cffi cost more than the C work on a 64 KiB packet.
 *
 * gather_frame builds a whole transmitted frame in one call: kernel-memory
 * buffers copied and runs of arena pieces gathered (pm_gather_cksum, one
 * pass) into a new bytearray, with the sum of the transport segment taken
 * as each part is written; no Python object per piece, and the frame is
 * not zeroed first (every byte of it is written).
 *
 * Only the common case is handled here: exact ints (and, for copy_pages, a
 * list or tuple of exact ints; for pieces, a list or tuple of exact 3-tuples
 * of exact ints or an array('q') of flat triples; for data, any contiguous
 * buffer; for gather_cksum's output, an
 * exact bytearray) that the pm_* entry points accept.
 * Anything else - another type, an int that does not fit in 64 bits, a
 * frame out of range, a closed arena, keywords - goes to the "slow"
 * callable the object was made with (the PhysMem's own Python method),
 * which makes the same call through cffi and raises the usual diagnosis.
 * So behaviour, errors included, is that of the Python method.
 *
 * The object keeps the arena's owner (the cffi gc'd base pointer) alive;
 * PhysMem.close() calls invalidate() first, which drops it and sends every
 * later call to the slow path (which reports the closed arena).
 *
 * Built against the stable ABI (3.11) where setup.py tags the wheel abi3.
 */

#include "pymodule.h" /* Python.h; setup.py defines Py_LIMITED_API where the wheel is abi3 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "physmem.h"

typedef struct {
    PyObject_HEAD
    pm_arena *arena;
    PyObject *keep;      /* owner of the arena (cffi gc'd pointer), or NULL */
    PyObject *slow_one;  /* copy_page(src, dst) through cffi */
    PyObject *slow_many; /* copy_pages(srcs, dsts) through cffi */
    PyObject *slow_zero_page;    /* zero_page(frame) */
    PyObject *slow_copyin1;      /* copyin1(frame, offset, data) */
    PyObject *slow_cksum_sum;    /* cksum_sum(pieces, initial=0) */
    PyObject *slow_cksum_bytes;  /* cksum_bytes(data, initial=0) */
    PyObject *slow_gather_cksum; /* gather_cksum(pieces, out, offset=0, initial=0) */
    PyObject *slow_gather_frame; /* gather_frame(parts, size, sum_from) */
} Fast;

/* array.array, to recognise piece arrays (set when the module is loaded) */
static PyObject *array_type = NULL;

static PyObject *
call_slow(PyObject *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(tuple, i, args[i]); /* steals */
    }
    PyObject *kw = NULL;
    if (kwnames != NULL) {
        Py_ssize_t nk = PyTuple_Size(kwnames);
        kw = PyDict_New();
        if (kw == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < nk; i++) {
            if (PyDict_SetItem(kw, PyTuple_GetItem(kwnames, i), args[nargs + i]) < 0) {
                Py_DECREF(kw);
                Py_DECREF(tuple);
                return NULL;
            }
        }
    }
    PyObject *r = PyObject_Call(fn, tuple, kw);
    Py_DECREF(tuple);
    Py_XDECREF(kw);
    return r;
}

/* An exact int that fits in int64_t into *out; 0 if it is not one. */
static int
exact_i64(PyObject *o, int64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

static PyObject *
fast_copy_page(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    int64_t src, dst;
    if (kwnames == NULL && nargs == 2 && self->arena != NULL && exact_i64(args[0], &src) &&
        exact_i64(args[1], &dst) && pm_copy_page(self->arena, src, dst) == PM_OK)
        Py_RETURN_NONE;
    return call_slow(self->slow_one, args, nargs, kwnames);
}

/* The frames of an exact list or tuple of exact ints into buf[0..n); 0 if
 * the sequence is anything else. */
static int
frames_of(PyObject *seq, int64_t *buf, Py_ssize_t n)
{
    int is_list = PyList_CheckExact(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = is_list ? PyList_GetItem(seq, i) : PyTuple_GetItem(seq, i);
        if (item == NULL || !exact_i64(item, &buf[i])) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

static Py_ssize_t
seq_len(PyObject *seq)
{
    if (PyList_CheckExact(seq))
        return PyList_Size(seq);
    if (PyTuple_CheckExact(seq))
        return PyTuple_Size(seq);
    return -1;
}

static PyObject *
fast_copy_pages(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    if (kwnames != NULL || nargs != 2 || self->arena == NULL)
        return call_slow(self->slow_many, args, nargs, kwnames);
    Py_ssize_t n = seq_len(args[0]);
    if (n < 0 || seq_len(args[1]) != n)
        return call_slow(self->slow_many, args, nargs, kwnames);
    /* Both lists converted up front: pm_copy_pages checks every frame before
     * it copies a byte.  Small batches on the stack. */
    int64_t stack[2 * 64];
    int64_t *buf = stack;
    if (n > 64) {
        buf = malloc(2 * (size_t)n * sizeof *buf);
        if (buf == NULL)
            return PyErr_NoMemory();
    }
    int ok = frames_of(args[0], buf, n) && frames_of(args[1], buf + n, n) &&
             pm_copy_pages(self->arena, buf, buf + n, (int64_t)n) == PM_OK;
    if (buf != stack)
        free(buf);
    if (ok)
        Py_RETURN_NONE;
    return call_slow(self->slow_many, args, nargs, kwnames);
}

static PyObject *
fast_zero_page(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    int64_t frame;
    if (kwnames == NULL && nargs == 1 && self->arena != NULL && exact_i64(args[0], &frame) &&
        pm_zero_page(self->arena, frame) == PM_OK)
        Py_RETURN_NONE;
    return call_slow(self->slow_zero_page, args, nargs, kwnames);
}

static PyObject *
fast_copyin1(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    int64_t frame, off;
    if (kwnames == NULL && nargs == 3 && self->arena != NULL && exact_i64(args[0], &frame) &&
        exact_i64(args[1], &off)) {
        if (PyBytes_CheckExact(args[2])) {
            char *p;
            Py_ssize_t n;
            if (PyBytes_AsStringAndSize(args[2], &p, &n) == 0 &&
                pm_copyin1(self->arena, frame, off, p, (int64_t)n) == PM_OK)
                Py_RETURN_NONE;
            PyErr_Clear();
        } else {
            /* any other contiguous buffer (a view of kernel memory: what
             * soreceive copies out), as its bytes, as the slow path takes
             * it (ffi.from_buffer); a non-contiguous one goes there */
            Py_buffer v;
            if (PyObject_GetBuffer(args[2], &v, PyBUF_SIMPLE) == 0) {
                int rc = pm_copyin1(self->arena, frame, off, (const char *)v.buf, (int64_t)v.len);
                PyBuffer_Release(&v);
                if (rc == PM_OK)
                    Py_RETURN_NONE;
            } else {
                PyErr_Clear();
            }
        }
    }
    return call_slow(self->slow_copyin1, args, nargs, kwnames);
}

/* An exact int in [0, 2^64) into *out; 0 if it is not one. */
static int
exact_u64(PyObject *o, uint64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (uint64_t)v;
    return 1;
}

/*
 * Pieces as the C entry points take them.  A list or tuple of exact
 * 3-tuples of exact ints is converted into the caller's stack buffer (or a
 * malloc'd one past its size, returned in *heap for the caller to free); an
 * array('q') of flat triples is used in place (the buffer stays held in
 * *view, released by the caller when view->obj is not NULL).  Returns the
 * pieces and their count in *n, or NULL (no error set) for anything else.
 */
#define STACK_PIECES 32

static const pm_piece *
pieces_of(PyObject *obj, pm_piece *stack, pm_piece **heap, Py_buffer *view, int64_t *n)
{
    *heap = NULL;
    view->obj = NULL;
    if (array_type != NULL && Py_TYPE(obj) == (PyTypeObject *)array_type) {
        if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
            PyErr_Clear();
            view->obj = NULL;
            return NULL;
        }
        const char *fmt = view->format;
        if (view->itemsize != 8 || fmt == NULL || (strcmp(fmt, "q") && strcmp(fmt, "l")) ||
            view->len % (Py_ssize_t)sizeof(pm_piece)) {
            PyBuffer_Release(view);
            view->obj = NULL;
            return NULL;
        }
        *n = (int64_t)(view->len / (Py_ssize_t)sizeof(pm_piece));
        return (const pm_piece *)view->buf;
    }
    Py_ssize_t len = seq_len(obj);
    if (len < 0)
        return NULL;
    pm_piece *buf = stack;
    if (len > STACK_PIECES) {
        buf = malloc((size_t)len * sizeof *buf);
        if (buf == NULL)
            return NULL;
        *heap = buf;
    }
    int is_list = PyList_CheckExact(obj);
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *t = is_list ? PyList_GetItem(obj, i) : PyTuple_GetItem(obj, i);
        if (t == NULL || !PyTuple_CheckExact(t) || PyTuple_Size(t) != 3 ||
            !exact_i64(PyTuple_GetItem(t, 0), &buf[i].frame) ||
            !exact_i64(PyTuple_GetItem(t, 1), &buf[i].offset) ||
            !exact_i64(PyTuple_GetItem(t, 2), &buf[i].length)) {
            PyErr_Clear();
            free(*heap);
            *heap = NULL;
            return NULL;
        }
    }
    *n = (int64_t)len;
    return buf;
}

static void
pieces_done(pm_piece *heap, Py_buffer *view)
{
    free(heap);
    if (view->obj != NULL)
        PyBuffer_Release(view);
}

static PyObject *
fast_cksum_sum(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    uint64_t initial = 0;
    if (kwnames == NULL && (nargs == 1 || nargs == 2) && self->arena != NULL &&
        (nargs == 1 || exact_u64(args[1], &initial))) {
        pm_piece stack[STACK_PIECES];
        pm_piece *heap;
        Py_buffer view;
        int64_t n = 0;
        const pm_piece *p = pieces_of(args[0], stack, &heap, &view, &n);
        if (p != NULL) {
            uint32_t sum = 0;
            int rc = pm_cksum(self->arena, p, n, initial, &sum);
            pieces_done(heap, &view);
            if (rc == PM_OK)
                return PyLong_FromUnsignedLong(sum);
        }
    }
    return call_slow(self->slow_cksum_sum, args, nargs, kwnames);
}

static PyObject *
fast_cksum_bytes(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    uint64_t initial = 0;
    if (kwnames == NULL && (nargs == 1 || nargs == 2) && self->arena != NULL &&
        (nargs == 1 || exact_u64(args[1], &initial))) {
        Py_buffer view;
        if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) == 0) {
            uint32_t sum = 0;
            int rc = pm_cksum_buf((const char *)view.buf, (int64_t)view.len, initial, &sum);
            PyBuffer_Release(&view);
            if (rc == PM_OK)
                return PyLong_FromUnsignedLong(sum);
        } else {
            PyErr_Clear();
        }
    }
    return call_slow(self->slow_cksum_bytes, args, nargs, kwnames);
}

static PyObject *
fast_gather_cksum(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    int64_t offset = 0;
    uint64_t initial = 0;
    if (kwnames == NULL && nargs >= 2 && nargs <= 4 && self->arena != NULL &&
        PyByteArray_CheckExact(args[1]) && (nargs < 3 || exact_i64(args[2], &offset)) &&
        (nargs < 4 || exact_u64(args[3], &initial))) {
        Py_ssize_t size = PyByteArray_Size(args[1]);
        if (offset >= 0 && offset <= (int64_t)size) {
            pm_piece stack[STACK_PIECES];
            pm_piece *heap;
            Py_buffer view;
            int64_t n = 0;
            const pm_piece *p = pieces_of(args[0], stack, &heap, &view, &n);
            if (p != NULL) {
                /* (an empty bytearray's storage may be NULL: pm_gather_cksum
                 * accepts that when the pieces hold no bytes) */
                char *dst = PyByteArray_AsString(args[1]);
                int64_t written = 0;
                uint32_t sum = 0;
                int rc = pm_gather_cksum(self->arena, p, n, dst == NULL ? NULL : dst + offset,
                                         (int64_t)size - offset, initial, &written, &sum);
                pieces_done(heap, &view);
                if (rc == PM_OK)
                    return Py_BuildValue("(Lk)", (long long)written, (unsigned long)sum);
            }
        }
    }
    return call_slow(self->slow_gather_cksum, args, nargs, kwnames);
}

static uint64_t
swap16_(uint64_t s)
{
    return ((s & 0xff) << 8) | ((s >> 8) & 0xff);
}

/*
 * The frame of gather_frame, or NULL with no error set when the call is not
 * the common case (the slow path then decides, and raises its diagnosis),
 * or NULL with an error set (no memory).  See PhysMem.gather_frame.
 */
static PyObject *
gather_frame(Fast *self, PyObject *parts, int64_t size, int64_t sum_from, uint64_t initial)
{
    Py_ssize_t nparts = PyList_Size(parts);
    PyObject *frame = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (frame == NULL)
        return NULL;
    /* (an empty bytearray's storage may be NULL: nothing is written then) */
    char *dst = PyByteArray_AsString(frame);
    int summing = sum_from >= 0;
    int64_t pos = 0;
    uint64_t acc = 0; /* network-order partial sums, each placed at its parity */
    for (Py_ssize_t i = 0; i < nparts; i++) {
        PyObject *part = PyList_GetItem(parts, i);
        uint32_t s = 0;
        if (part == NULL)
            goto slow;
        if (array_type != NULL && Py_TYPE(part) == (PyTypeObject *)array_type) {
            /* a run of arena pieces: gathered and summed in one pass; it
             * lies inside the summed segment (or nothing is summed) */
            if (summing && pos < sum_from)
                goto slow;
            pm_piece stack[STACK_PIECES];
            pm_piece *heap;
            Py_buffer view;
            int64_t n = 0;
            const pm_piece *p = pieces_of(part, stack, &heap, &view, &n);
            if (p == NULL)
                goto slow;
            int64_t written = 0;
            int rc = pm_gather_cksum(self->arena, p, n, dst == NULL ? NULL : dst + pos,
                                     size - pos, 0, &written, &s);
            pieces_done(heap, &view);
            if (rc != PM_OK)
                goto slow;
            if (summing)
                acc += ((pos - sum_from) & 1) ? swap16_(s) : s;
            pos += written;
        } else {
            /* kernel memory: copied, and summed where it is in the segment */
            Py_buffer v;
            if (PyObject_GetBuffer(part, &v, PyBUF_SIMPLE) < 0) {
                PyErr_Clear();
                goto slow;
            }
            int64_t len = (int64_t)v.len;
            if (len > size - pos) {
                PyBuffer_Release(&v);
                goto slow;
            }
            if (len > 0)
                memcpy(dst + pos, v.buf, (size_t)len);
            PyBuffer_Release(&v);
            int64_t end = pos + len;
            if (summing && end > sum_from) {
                int64_t start = pos > sum_from ? pos : sum_from;
                if (pm_cksum_buf(dst + start, end - start, 0, &s) != PM_OK)
                    goto slow;
                acc += ((start - sum_from) & 1) ? swap16_(s) : s;
            }
            pos = end;
        }
        if (acc >> 62)
            acc = (acc & 0xffff) + (acc >> 16);
    }
    if (pos != size)
        goto slow;
    if (summing) {
        /* the initial value (a pseudo-header sum), folded without overflow */
        uint64_t i = (initial & 0xffffffffu) + (initial >> 32);
        while (i >> 16)
            i = (i & 0xffff) + (i >> 16);
        acc += i;
    }
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return Py_BuildValue("(Nk)", frame, (unsigned long)acc);
slow:
    Py_DECREF(frame);
    return NULL;
}

static PyObject *
fast_gather_frame(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Fast *self = (Fast *)op;
    int64_t size = 0, sum_from = 0;
    uint64_t initial = 0;
    if (kwnames == NULL && (nargs == 3 || nargs == 4) && self->arena != NULL &&
        PyList_CheckExact(args[0]) && exact_i64(args[1], &size) && exact_i64(args[2], &sum_from) &&
        (nargs == 3 || exact_u64(args[3], &initial)) && size >= 0 && size <= PY_SSIZE_T_MAX) {
        PyObject *r = gather_frame(self, args[0], size, sum_from, initial);
        if (r != NULL || PyErr_Occurred())
            return r;
    }
    return call_slow(self->slow_gather_frame, args, nargs, kwnames);
}

static PyObject *
fast_invalidate(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    Fast *self = (Fast *)op;
    self->arena = NULL;
    Py_CLEAR(self->keep);
    Py_RETURN_NONE;
}

static PyObject *
fast_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    unsigned long long addr;
    PyObject *keep, *slow_one, *slow_many, *slow_zero_page, *slow_copyin1, *slow_cksum_sum, *slow_cksum_bytes,
        *slow_gather_cksum, *slow_gather_frame;
    static char *kwlist[] = {"address",   "keep",      "copy_page",   "copy_pages",
                             "zero_page", "copyin1",   "cksum_sum",   "cksum_bytes",
                             "gather_cksum", "gather_frame", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KOOOOOOOOO", kwlist, &addr, &keep, &slow_one,
                                     &slow_many, &slow_zero_page, &slow_copyin1, &slow_cksum_sum,
                                     &slow_cksum_bytes, &slow_gather_cksum, &slow_gather_frame))
        return NULL;
    if (addr == 0) {
        PyErr_SetString(PyExc_ValueError, "_physmem_fast.Fast: NULL arena");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    Fast *self = (Fast *)alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->arena = (pm_arena *)(uintptr_t)addr;
    Py_INCREF(keep);
    self->keep = keep;
    Py_INCREF(slow_one);
    self->slow_one = slow_one;
    Py_INCREF(slow_many);
    self->slow_many = slow_many;
    Py_INCREF(slow_zero_page);
    self->slow_zero_page = slow_zero_page;
    Py_INCREF(slow_copyin1);
    self->slow_copyin1 = slow_copyin1;
    Py_INCREF(slow_cksum_sum);
    self->slow_cksum_sum = slow_cksum_sum;
    Py_INCREF(slow_cksum_bytes);
    self->slow_cksum_bytes = slow_cksum_bytes;
    Py_INCREF(slow_gather_cksum);
    self->slow_gather_cksum = slow_gather_cksum;
    Py_INCREF(slow_gather_frame);
    self->slow_gather_frame = slow_gather_frame;
    return (PyObject *)self;
}

static int
fast_traverse(PyObject *op, visitproc visit, void *arg)
{
    Fast *self = (Fast *)op;
    Py_VISIT(self->keep);
    Py_VISIT(self->slow_one);
    Py_VISIT(self->slow_many);
    Py_VISIT(self->slow_zero_page);
    Py_VISIT(self->slow_copyin1);
    Py_VISIT(self->slow_cksum_sum);
    Py_VISIT(self->slow_cksum_bytes);
    Py_VISIT(self->slow_gather_cksum);
    Py_VISIT(self->slow_gather_frame);
    Py_VISIT(Py_TYPE(op));
    return 0;
}

static int
fast_clear(PyObject *op)
{
    Fast *self = (Fast *)op;
    self->arena = NULL;
    Py_CLEAR(self->keep);
    Py_CLEAR(self->slow_one);
    Py_CLEAR(self->slow_many);
    Py_CLEAR(self->slow_zero_page);
    Py_CLEAR(self->slow_copyin1);
    Py_CLEAR(self->slow_cksum_sum);
    Py_CLEAR(self->slow_cksum_bytes);
    Py_CLEAR(self->slow_gather_cksum);
    Py_CLEAR(self->slow_gather_frame);
    return 0;
}

static void
fast_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    fast_clear(op);
    freefunc tfree = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    tfree(op);
    Py_DECREF(tp);
}

static PyMethodDef fast_methods[] = {
    {"copy_page", (PyCFunction)(void (*)(void))fast_copy_page, METH_FASTCALL | METH_KEYWORDS,
     "copy_page(src, dst): copy frame src onto frame dst."},
    {"copy_pages", (PyCFunction)(void (*)(void))fast_copy_pages, METH_FASTCALL | METH_KEYWORDS,
     "copy_pages(srcs, dsts): copy srcs[i] onto dsts[i] for every i."},
    {"zero_page", (PyCFunction)(void (*)(void))fast_zero_page, METH_FASTCALL | METH_KEYWORDS,
     "zero_page(frame): fill frame with zeros."},
    {"copyin1", (PyCFunction)(void (*)(void))fast_copyin1, METH_FASTCALL | METH_KEYWORDS,
     "copyin1(frame, offset, data): write data at offset of frame."},
    {"cksum_sum", (PyCFunction)(void (*)(void))fast_cksum_sum, METH_FASTCALL | METH_KEYWORDS,
     "cksum_sum(pieces, initial=0): the folded ones'-complement sum of the pieces."},
    {"cksum_bytes", (PyCFunction)(void (*)(void))fast_cksum_bytes,
     METH_FASTCALL | METH_KEYWORDS,
     "cksum_bytes(data, initial=0): the folded ones'-complement sum of a buffer."},
    {"gather_cksum", (PyCFunction)(void (*)(void))fast_gather_cksum,
     METH_FASTCALL | METH_KEYWORDS,
     "gather_cksum(pieces, out, offset=0, initial=0): gather into out and sum, one pass."},
    {"gather_frame", (PyCFunction)(void (*)(void))fast_gather_frame,
     METH_FASTCALL | METH_KEYWORDS,
     "gather_frame(parts, size, sum_from, initial=0): a new frame of the parts and its "
     "segment's sum."},
    {"invalidate", fast_invalidate, METH_NOARGS,
     "Forget the arena: every later call takes the slow path."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot fast_slots[] = {
    {Py_tp_new, fast_new},
    {Py_tp_dealloc, fast_dealloc},
    {Py_tp_traverse, fast_traverse},
    {Py_tp_clear, fast_clear},
    {Py_tp_methods, fast_methods},
    {Py_tp_doc, "Fast(address, keep, copy_page, copy_pages, zero_page, copyin1, cksum_sum, cksum_bytes, "
                "gather_cksum, gather_frame): one arena's fast calls."},
    {0, NULL},
};

static PyType_Spec fast_spec = {
    "uvmloan._physmem_fast.Fast",
    sizeof(Fast),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    fast_slots,
};

static int
fast_exec(PyObject *m)
{
    if (array_type == NULL) {
        PyObject *mod = PyImport_ImportModule("array");
        if (mod == NULL)
            return -1;
        array_type = PyObject_GetAttrString(mod, "array"); /* kept for the process's life */
        Py_DECREF(mod);
        if (array_type == NULL)
            return -1;
    }
    return uvm_add_type(m, &fast_spec, "Fast");
}

UVMLOAN_MODULE(_physmem_fast,
               "The hottest physmem calls (page copies, one-frame copyin, checksums) without cffi.",
               fast_exec)
