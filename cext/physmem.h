/*
 * physmem.h -- the physical memory arena of the uvmloan model.
 *
 * One arena per simulated machine: an anonymous, private, MAP_NORESERVE
 * mapping of npages * page_size bytes (untouched frames cost nothing) with a
 * PROT_NONE guard region on each side, so that a stray access would fault
 * instead of corrupting memory.  A frame is an integer in [0, npages).
 *
 * Every entry point checks every argument before touching memory and returns
 * an int error code (PM_OK or one of the negative PM_E* codes).  No entry
 * point reads or writes outside the arena (or outside the caller's buffer of
 * the stated length), whatever it is passed.  Batch entry points validate all
 * of their input first and then act, so a bad element changes nothing.
 *
 * The section between the CDEF markers is fed verbatim to cffi's cdef() by
 * cext/build_physmem.py: keep it free of preprocessor directives.
 */
#ifndef UVMLOAN_PHYSMEM_H
#define UVMLOAN_PHYSMEM_H

#include <stdint.h>

/* BEGIN CDEF */
typedef struct pm_arena pm_arena;

/* One piece of a scatter/gather list: `length` bytes at byte `offset` of
 * frame `frame`; a piece never crosses the end of its page. */
typedef struct pm_piece {
    int64_t frame;
    int64_t offset;
    int64_t length;
} pm_piece;

enum {
    PM_OK = 0,
    PM_EFRAME = -1,   /* frame number outside [0, npages) */
    PM_EPAGE = -2,    /* offset outside the page, or offset + length past its end */
    PM_ERANGE = -3,   /* byte range past the arena or past the frame list */
    PM_ENEGLEN = -4,  /* negative length or count */
    PM_EINVAL = -5,   /* bad argument: page size, npages, fill byte, NULL handle */
    PM_ENOMEM = -6,   /* pm_create: the mapping could not be made */
    PM_EBUFSIZE = -7  /* caller buffer too small (gather) or of the wrong size (scatter) */
};

enum {
    PM_POISON_BYTE = 219,          /* 0xDB: the debug fill of released frames */
    PM_MIN_PAGE_SIZE = 512,
    PM_MAX_PAGE_SIZE = 1073741824  /* 1 GiB */
};

/* Arena life cycle.  pm_create stores the new arena in *out (NULL on error).
 * page_size must be a power of two in [PM_MIN_PAGE_SIZE, PM_MAX_PAGE_SIZE];
 * npages >= 1.  pm_destroy unmaps the arena; NULL is ignored. */
int pm_create(int64_t npages, int64_t page_size, pm_arena **out);
void pm_destroy(pm_arena *a);

/* Getters: PM_EINVAL for a NULL handle. */
int64_t pm_npages(const pm_arena *a);
int64_t pm_page_size(const pm_arena *a);
/* The first byte of frame 0 (NULL for a NULL handle).  For zero-copy,
 * read-only views only; all writes go through the entry points below. */
char *pm_base(pm_arena *a);

/* Single pages.  pm_copy_page copies src onto dst (NetBSD's
 * pmap_copy_page(src, dst) argument order). */
int pm_copy_page(pm_arena *a, int64_t src, int64_t dst);
int pm_zero_page(pm_arena *a, int64_t frame);
int pm_fill_page(pm_arena *a, int64_t frame, int64_t byte);
int pm_poison_page(pm_arena *a, int64_t frame);
/* *diff = -1 if the pages are equal, else the first differing offset. */
int pm_compare_pages(const pm_arena *a, int64_t f1, int64_t f2, int64_t *diff);

/* Batches: all frames are checked first, then the pages are processed in
 * order (src[i] -> dst[i]). */
int pm_copy_pages(pm_arena *a, const int64_t *src, const int64_t *dst, int64_t n);
int pm_zero_pages(pm_arena *a, const int64_t *frames, int64_t n);
int pm_fill_pages(pm_arena *a, const int64_t *frames, int64_t n, int64_t byte);

/* Byte ranges through a frame list: `len` bytes starting at byte `offset`
 * of frames[0] and continuing into frames[1], frames[2], ...
 * Requires 0 <= offset < page_size, len >= 0 and
 * offset + len <= nframes * page_size; every listed frame must be valid. */
int pm_copyin(pm_arena *a, const int64_t *frames, int64_t nframes, int64_t offset,
              const char *src, int64_t len);
int pm_copyout(const pm_arena *a, const int64_t *frames, int64_t nframes, int64_t offset,
               char *dst, int64_t len);
/* Single-frame forms (the common case of a user load or store). */
int pm_copyin1(pm_arena *a, int64_t frame, int64_t offset, const char *src, int64_t len);
int pm_copyout1(const pm_arena *a, int64_t frame, int64_t offset, char *dst, int64_t len);

/* Scatter/gather (a NIC's DMA).  gather writes the concatenation of the
 * pieces to dst (dstlen >= total, else PM_EBUFSIZE) and stores the total in
 * *written (unless written is NULL); scatter requires srclen == total. */
int pm_gather(const pm_arena *a, const pm_piece *pieces, int64_t n, char *dst,
              int64_t dstlen, int64_t *written);
int pm_scatter(pm_arena *a, const pm_piece *pieces, int64_t n, const char *src,
               int64_t srclen);

/* The Internet checksum (RFC 1071).  *sum receives the folded 16-bit ones'
 * complement sum (NOT inverted; the checksum field is ~sum & 0xffff) of the
 * byte stream formed by concatenating the pieces, plus `initial` (e.g. an
 * IPv4/TCP/UDP pseudo-header sum; any 64-bit value, folded). */
int pm_cksum(const pm_arena *a, const pm_piece *pieces, int64_t n, uint64_t initial,
             uint32_t *sum);
/* The same over a plain caller buffer (headers). */
int pm_cksum_buf(const char *buf, int64_t len, uint64_t initial, uint32_t *sum);
/* A NIC without checksum offload: gather the pieces into dst (as pm_gather)
 * and compute their folded sum (as pm_cksum) in the same pass, each piece
 * summed from dst while it is still in cache.  *written and *sum are set
 * only on success; on error nothing is written. */
int pm_gather_cksum(const pm_arena *a, const pm_piece *pieces, int64_t n, char *dst,
                    int64_t dstlen, uint64_t initial, int64_t *written, uint32_t *sum);
/* END CDEF */

#endif /* UVMLOAN_PHYSMEM_H */
