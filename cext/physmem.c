/*
 * physmem.c -- the physical memory arena of the uvmloan model (see physmem.h).
 *
 * Rules every entry point follows:
 *   - the handle, every count, length, offset and frame is checked before the
 *     first byte is touched (batches: all elements first, then the work);
 *   - the order of the checks is part of the contract: the pure-Python twin
 *     (uvmloan/_physmem_py.py) returns the same code for the same input;
 *   - nothing is read or written outside [base, base + npages * page_size)
 *     or outside the caller's buffer of the stated length.
 *
 * The source of copyin/scatter may alias the arena (a read-only frame view
 * passed back in), so those two use memmove; the destinations of
 * copyout/gather are writable caller buffers, which cannot be arena views.
 *
 * Portable C11 plus POSIX mmap/mprotect (and madvise(MADV_HUGEPAGE) where
 * the platform defines it, a hint only); no compiler intrinsics, no
 * -march assumptions.  Unaligned loads go through memcpy, which the compiler
 * turns into plain loads on x86-64 and aarch64.
 */
#define _DEFAULT_SOURCE 1

#include "physmem.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif
#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

struct pm_arena {
    unsigned char *base;   /* frame 0 */
    int64_t npages;
    int64_t page_size;
    unsigned page_shift;
    void *map;             /* guard + arena + guard */
    size_t maplen;
};

/* ------------------------------------------------------------------ */
/* checks                                                             */

static inline int
frame_ok(const pm_arena *a, int64_t f)
{
    return (uint64_t)f < (uint64_t)a->npages;
}

static inline unsigned char *
frame_ptr(const pm_arena *a, int64_t f)
{
    return a->base + ((size_t)f << a->page_shift);
}

static int
check_frames(const pm_arena *a, const int64_t *frames, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!frame_ok(a, frames[i]))
            return PM_EFRAME;
    return PM_OK;
}

/*
 * Check a byte range through a frame list: offset in [0, page_size),
 * len >= 0, offset + len <= nframes * page_size, every frame valid.
 */
static int
check_range(const pm_arena *a, const int64_t *frames, int64_t nframes, int64_t offset,
            const void *buf, int64_t len)
{
    if (nframes < 0 || len < 0)
        return PM_ENEGLEN;
    if (offset < 0 || offset >= a->page_size)
        return PM_EPAGE;
    /* room = nframes * page_size - offset, saturated */
    int64_t room;
    if (nframes > (INT64_MAX >> a->page_shift))
        room = INT64_MAX;
    else
        room = (nframes << a->page_shift) - offset;
    if (len > room)
        return PM_ERANGE;
    if ((nframes > 0 && frames == NULL) || (len > 0 && buf == NULL))
        return PM_EINVAL;
    return check_frames(a, frames, nframes);
}

/* Check a piece list; *total receives the sum of the lengths (saturated). */
static int
check_pieces(const pm_arena *a, const pm_piece *pieces, int64_t n, int64_t *total)
{
    int64_t t = 0;
    if (n < 0)
        return PM_ENEGLEN;
    if (n > 0 && pieces == NULL)
        return PM_EINVAL;
    for (int64_t i = 0; i < n; i++) {
        const pm_piece *p = &pieces[i];
        if (!frame_ok(a, p->frame))
            return PM_EFRAME;
        if (p->length < 0)
            return PM_ENEGLEN;
        if (p->offset < 0 || p->offset >= a->page_size)
            return PM_EPAGE;
        if (p->length > a->page_size - p->offset)
            return PM_EPAGE;
        t = (t > INT64_MAX - p->length) ? INT64_MAX : t + p->length;
    }
    *total = t;
    return PM_OK;
}

/* ------------------------------------------------------------------ */
/* life cycle                                                         */

int
pm_create(int64_t npages, int64_t page_size, pm_arena **out)
{
    if (out == NULL)
        return PM_EINVAL;
    *out = NULL;
    if (page_size < PM_MIN_PAGE_SIZE || page_size > PM_MAX_PAGE_SIZE ||
        (page_size & (page_size - 1)) != 0)
        return PM_EINVAL;
    if (npages < 1)
        return PM_EINVAL;

    unsigned shift = 0;
    while (((int64_t)1 << shift) < page_size)
        shift++;

    long sp = sysconf(_SC_PAGESIZE);
    size_t syspage = sp > 0 ? (size_t)sp : 4096;
    /* arena bytes, rounded up to the system page; guards of at least one
     * system page and at least one model page on each side */
    size_t guard = (size_t)page_size > syspage ? (size_t)page_size : syspage;
    if ((uint64_t)npages > (((uint64_t)SIZE_MAX / 2) >> shift))
        return PM_ENOMEM;
    size_t bytes = (size_t)npages << shift;
    size_t body = (bytes + syspage - 1) / syspage * syspage;
    if (body > SIZE_MAX - 2 * guard)
        return PM_ENOMEM;
    size_t maplen = body + 2 * guard;

    pm_arena *a = malloc(sizeof *a);
    if (a == NULL)
        return PM_ENOMEM;
    void *map = mmap(NULL, maplen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        free(a);
        return PM_ENOMEM;
    }
    unsigned char *base = (unsigned char *)map + guard;
    if (mprotect(base, body, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, maplen);
        free(a);
        return PM_ENOMEM;
    }
#ifdef MADV_HUGEPAGE
    /* Transparent huge pages for the frames: the host kernel then takes one
     * fault per 2 MiB of the arena the model first touches instead of one
     * per 4 KiB (a first touch was a quarter of a zero-fill uvm_fault).  A
     * hint only: where THP is off or unavailable this fails harmlessly and
     * the arena is as before. */
    (void)madvise(base, body, MADV_HUGEPAGE);
#endif
    a->base = base;
    a->npages = npages;
    a->page_size = page_size;
    a->page_shift = shift;
    a->map = map;
    a->maplen = maplen;
    *out = a;
    return PM_OK;
}

void
pm_destroy(pm_arena *a)
{
    if (a == NULL)
        return;
    munmap(a->map, a->maplen);
    a->base = NULL;
    a->npages = 0;
    free(a);
}

int64_t
pm_npages(const pm_arena *a)
{
    return a == NULL ? PM_EINVAL : a->npages;
}

int64_t
pm_page_size(const pm_arena *a)
{
    return a == NULL ? PM_EINVAL : a->page_size;
}

char *
pm_base(pm_arena *a)
{
    return a == NULL ? NULL : (char *)a->base;
}

/* ------------------------------------------------------------------ */
/* single pages                                                       */

int
pm_copy_page(pm_arena *a, int64_t src, int64_t dst)
{
    if (a == NULL)
        return PM_EINVAL;
    if (!frame_ok(a, src) || !frame_ok(a, dst))
        return PM_EFRAME;
    if (src != dst)
        memcpy(frame_ptr(a, dst), frame_ptr(a, src), (size_t)a->page_size);
    return PM_OK;
}

int
pm_zero_page(pm_arena *a, int64_t frame)
{
    if (a == NULL)
        return PM_EINVAL;
    if (!frame_ok(a, frame))
        return PM_EFRAME;
    memset(frame_ptr(a, frame), 0, (size_t)a->page_size);
    return PM_OK;
}

int
pm_fill_page(pm_arena *a, int64_t frame, int64_t byte)
{
    if (a == NULL || byte < 0 || byte > 255)
        return PM_EINVAL;
    if (!frame_ok(a, frame))
        return PM_EFRAME;
    memset(frame_ptr(a, frame), (int)byte, (size_t)a->page_size);
    return PM_OK;
}

int
pm_poison_page(pm_arena *a, int64_t frame)
{
    return pm_fill_page(a, frame, PM_POISON_BYTE);
}

int
pm_compare_pages(const pm_arena *a, int64_t f1, int64_t f2, int64_t *diff)
{
    if (a == NULL || diff == NULL)
        return PM_EINVAL;
    if (!frame_ok(a, f1) || !frame_ok(a, f2))
        return PM_EFRAME;
    const unsigned char *p = frame_ptr(a, f1);
    const unsigned char *q = frame_ptr(a, f2);
    size_t ps = (size_t)a->page_size;
    *diff = -1;
    if (p == q || memcmp(p, q, ps) == 0)
        return PM_OK;
    /* locate the first difference: 8 bytes at a time, then bytewise */
    size_t i = 0;
    for (; i + 8 <= ps; i += 8) {
        uint64_t x, y;
        memcpy(&x, p + i, 8);
        memcpy(&y, q + i, 8);
        if (x != y)
            break;
    }
    for (; i < ps; i++) {
        if (p[i] != q[i]) {
            *diff = (int64_t)i;
            break;
        }
    }
    return PM_OK;
}

/* ------------------------------------------------------------------ */
/* batches                                                            */

int
pm_copy_pages(pm_arena *a, const int64_t *src, const int64_t *dst, int64_t n)
{
    if (a == NULL)
        return PM_EINVAL;
    if (n < 0)
        return PM_ENEGLEN;
    if (n > 0 && (src == NULL || dst == NULL))
        return PM_EINVAL;
    for (int64_t i = 0; i < n; i++)
        if (!frame_ok(a, src[i]) || !frame_ok(a, dst[i]))
            return PM_EFRAME;
    size_t ps = (size_t)a->page_size;
    for (int64_t i = 0; i < n; i++)
        if (src[i] != dst[i])
            memcpy(frame_ptr(a, dst[i]), frame_ptr(a, src[i]), ps);
    return PM_OK;
}

int
pm_zero_pages(pm_arena *a, const int64_t *frames, int64_t n)
{
    return pm_fill_pages(a, frames, n, 0);
}

int
pm_fill_pages(pm_arena *a, const int64_t *frames, int64_t n, int64_t byte)
{
    if (a == NULL)
        return PM_EINVAL;
    if (n < 0)
        return PM_ENEGLEN;
    if (byte < 0 || byte > 255 || (n > 0 && frames == NULL))
        return PM_EINVAL;
    int rc = check_frames(a, frames, n);
    if (rc != PM_OK)
        return rc;
    size_t ps = (size_t)a->page_size;
    for (int64_t i = 0; i < n; i++)
        memset(frame_ptr(a, frames[i]), (int)byte, ps);
    return PM_OK;
}

/* ------------------------------------------------------------------ */
/* byte ranges through a frame list                                   */

int
pm_copyin(pm_arena *a, const int64_t *frames, int64_t nframes, int64_t offset,
          const char *src, int64_t len)
{
    if (a == NULL)
        return PM_EINVAL;
    int rc = check_range(a, frames, nframes, offset, src, len);
    if (rc != PM_OK)
        return rc;
    const unsigned char *s = (const unsigned char *)src;
    size_t ps = (size_t)a->page_size;
    size_t off = (size_t)offset;
    size_t left = (size_t)len;
    for (int64_t i = 0; left > 0; i++) {
        size_t chunk = ps - off < left ? ps - off : left;
        memmove(frame_ptr(a, frames[i]) + off, s, chunk);
        s += chunk;
        left -= chunk;
        off = 0;
    }
    return PM_OK;
}

int
pm_copyout(const pm_arena *a, const int64_t *frames, int64_t nframes, int64_t offset,
           char *dst, int64_t len)
{
    if (a == NULL)
        return PM_EINVAL;
    int rc = check_range(a, frames, nframes, offset, dst, len);
    if (rc != PM_OK)
        return rc;
    unsigned char *d = (unsigned char *)dst;
    size_t ps = (size_t)a->page_size;
    size_t off = (size_t)offset;
    size_t left = (size_t)len;
    for (int64_t i = 0; left > 0; i++) {
        size_t chunk = ps - off < left ? ps - off : left;
        memcpy(d, frame_ptr(a, frames[i]) + off, chunk);
        d += chunk;
        left -= chunk;
        off = 0;
    }
    return PM_OK;
}

int
pm_copyin1(pm_arena *a, int64_t frame, int64_t offset, const char *src, int64_t len)
{
    if (a == NULL)
        return PM_EINVAL;
    return pm_copyin(a, &frame, 1, offset, src, len);
}

int
pm_copyout1(const pm_arena *a, int64_t frame, int64_t offset, char *dst, int64_t len)
{
    if (a == NULL)
        return PM_EINVAL;
    return pm_copyout(a, &frame, 1, offset, dst, len);
}

/* ------------------------------------------------------------------ */
/* scatter / gather                                                   */

/* What pm_gather and pm_gather_cksum check before they move a byte: valid
 * pieces that fit the destination.  *total gets the bytes they hold. */
static int
check_gather(const pm_arena *a, const pm_piece *pieces, int64_t n, const char *dst,
             int64_t dstlen, int64_t *total)
{
    if (a == NULL)
        return PM_EINVAL;
    if (dstlen < 0)
        return PM_ENEGLEN;
    int rc = check_pieces(a, pieces, n, total);
    if (rc != PM_OK)
        return rc;
    if (*total > dstlen)
        return PM_EBUFSIZE;
    if (*total > 0 && dst == NULL)
        return PM_EINVAL;
    return PM_OK;
}

int
pm_gather(const pm_arena *a, const pm_piece *pieces, int64_t n, char *dst, int64_t dstlen,
          int64_t *written)
{
    int64_t total = 0;
    int rc = check_gather(a, pieces, n, dst, dstlen, &total);
    if (rc != PM_OK)
        return rc;
    unsigned char *d = (unsigned char *)dst;
    for (int64_t i = 0; i < n; i++) {
        const pm_piece *p = &pieces[i];
        memcpy(d, frame_ptr(a, p->frame) + p->offset, (size_t)p->length);
        d += p->length;
    }
    if (written != NULL)
        *written = total;
    return PM_OK;
}

int
pm_scatter(pm_arena *a, const pm_piece *pieces, int64_t n, const char *src, int64_t srclen)
{
    if (a == NULL)
        return PM_EINVAL;
    if (srclen < 0)
        return PM_ENEGLEN;
    int64_t total = 0;
    int rc = check_pieces(a, pieces, n, &total);
    if (rc != PM_OK)
        return rc;
    if (total != srclen)
        return PM_EBUFSIZE;
    if (total > 0 && src == NULL)
        return PM_EINVAL;
    const unsigned char *s = (const unsigned char *)src;
    for (int64_t i = 0; i < n; i++) {
        const pm_piece *p = &pieces[i];
        memmove(frame_ptr(a, p->frame) + p->offset, s, (size_t)p->length);
        s += p->length;
    }
    return PM_OK;
}

/* ------------------------------------------------------------------ */
/* Internet checksum (RFC 1071)                                       */
/*
 * The ones'-complement sum is computed over native-order words and
 * converted to network order at the end (RFC 1071 section 2(B): the sum is
 * byte-order independent up to a final swap).  32-bit words are summed into
 * a 64-bit accumulator, which is valid because 2^16 == 1 modulo 0xffff; a
 * piece that starts at an odd position of the byte stream contributes its
 * byte-swapped sum (section 2(B) again: swapping is multiplying by 2^8).
 */

static inline uint64_t
fold16(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return s;
}

static inline uint64_t
swap16(uint64_t s)
{
    return ((s & 0xff) << 8) | ((s >> 8) & 0xff);
}

static inline int
little_endian(void)
{
    const uint16_t one = 1;
    unsigned char c;
    memcpy(&c, &one, 1);
    return c == 1;
}

/*
 * Native-order partial sum of n bytes (n < 2^34, so the accumulator cannot
 * overflow: every 4 bytes add less than 2^32).  An odd trailing byte is
 * padded with a zero byte after it.  The main loop is deliberately the plain
 * "32-bit words into a 64-bit accumulator" form: compilers vectorise it with
 * the baseline instruction set (SSE2 on x86-64, NEON on aarch64).
 */
/*
 * On x86-64 with GCC and glibc the loop is also compiled for AVX2 and the
 * best version is picked at load time (function multiversioning through an
 * ifunc): still safe on any x86-64, twice the width where AVX2 exists.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) \
    && defined(__has_attribute)
#if __has_attribute(target_clones)
#define PM_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef PM_MULTIVERSION
#define PM_MULTIVERSION
#endif

PM_MULTIVERSION static uint64_t
sum_native(const unsigned char *p, size_t n)
{
    uint64_t acc = 0;
    size_t words = n / 4;
    for (size_t i = 0; i < words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        acc += w;
    }
    p += 4 * words;
    n -= 4 * words;
    if (n >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        acc += w;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t w = 0;
        memcpy(&w, p, 1);
        acc += w;
    }
    return acc;
}

/*
 * Copy n bytes (n at most one page) and return their native-order partial
 * sum, as sum_native would: one pass over the source, each word loaded once,
 * stored and added.  Compilers vectorise it like sum_native.
 */
PM_MULTIVERSION static uint64_t
copy_sum_native(unsigned char *restrict d, const unsigned char *restrict p, size_t n)
{
    uint64_t acc = 0;
    size_t words = n / 4;
    for (size_t i = 0; i < words; i++) {
        uint32_t w;
        memcpy(&w, p + 4 * i, 4);
        memcpy(d + 4 * i, &w, 4);
        acc += w;
    }
    size_t done = 4 * words;
    if (n - done >= 2) {
        uint16_t w;
        memcpy(&w, p + done, 2);
        memcpy(d + done, &w, 2);
        acc += w;
        done += 2;
    }
    if (n - done) {
        uint16_t w = 0;
        memcpy(&w, p + done, 1);
        d[done] = p[done];
        acc += w;
    }
    return acc;
}

#define SUM_CHUNK ((size_t)1 << 30)

/* folded native-order sum of any number of bytes */
static uint64_t
sum_native_any(const unsigned char *p, size_t n)
{
    uint64_t acc = 0;
    while (n > SUM_CHUNK) {  /* SUM_CHUNK is even: chunks keep the parity */
        acc += fold16(sum_native(p, SUM_CHUNK));
        p += SUM_CHUNK;
        n -= SUM_CHUNK;
    }
    return fold16(acc + fold16(sum_native(p, n)));
}

static uint32_t
finish(uint64_t native, uint64_t initial)
{
    uint64_t s = fold16(native);
    if (little_endian())
        s = swap16(s);
    /* fold the 64-bit initial value without overflow */
    uint64_t i = (initial & 0xffffffffu) + (initial >> 32);
    return (uint32_t)fold16(s + fold16(i));
}

int
pm_cksum(const pm_arena *a, const pm_piece *pieces, int64_t n, uint64_t initial, uint32_t *sum)
{
    if (a == NULL || sum == NULL)
        return PM_EINVAL;
    int64_t total = 0;
    int rc = check_pieces(a, pieces, n, &total);
    if (rc != PM_OK)
        return rc;
    uint64_t acc = 0;
    int odd = 0;
    for (int64_t i = 0; i < n; i++) {
        const pm_piece *p = &pieces[i];
        if (p->length == 0)
            continue;
        uint64_t s = sum_native_any(frame_ptr(a, p->frame) + p->offset, (size_t)p->length);
        acc += odd ? swap16(s) : s;
        odd ^= (int)(p->length & 1);
        if (acc >> 62)
            acc = fold16(acc);
    }
    *sum = finish(acc, initial);
    return PM_OK;
}

int
pm_gather_cksum(const pm_arena *a, const pm_piece *pieces, int64_t n, char *dst, int64_t dstlen,
                uint64_t initial, int64_t *written, uint32_t *sum)
{
    if (sum == NULL)
        return PM_EINVAL;
    int64_t total = 0;
    int rc = check_gather(a, pieces, n, dst, dstlen, &total);
    if (rc != PM_OK)
        return rc;
    unsigned char *d = (unsigned char *)dst;
    uint64_t acc = 0;
    int odd = 0;
    for (int64_t i = 0; i < n; i++) {
        const pm_piece *p = &pieces[i];
        if (p->length == 0)
            continue;
        /* A piece is at most one page (< 2^34 bytes), so one pass cannot
         * overflow the 64-bit partial sum; fold it as sum_native_any does. */
        uint64_t s = fold16(copy_sum_native(d, frame_ptr(a, p->frame) + p->offset,
                                            (size_t)p->length));
        acc += odd ? swap16(s) : s;
        odd ^= (int)(p->length & 1);
        if (acc >> 62)
            acc = fold16(acc);
        d += p->length;
    }
    if (written != NULL)
        *written = total;
    *sum = finish(acc, initial);
    return PM_OK;
}

int
pm_cksum_buf(const char *buf, int64_t len, uint64_t initial, uint32_t *sum)
{
    if (sum == NULL)
        return PM_EINVAL;
    if (len < 0)
        return PM_ENEGLEN;
    if (len > 0 && buf == NULL)
        return PM_EINVAL;
    *sum = finish(sum_native_any((const unsigned char *)buf, (size_t)len), initial);
    return PM_OK;
}
