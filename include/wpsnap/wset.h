/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Working sets for lazy restore (docs/RESTORE.md, "Working-set prefetch").
 *
 * A working set is an ordered list of block ranges that a restored guest
 * is known to need early; the pager prefetches them first
 * (wps_pager_opts.first), before its address-order sweep. Two sources:
 *
 *  - the blob "wpsnap.written" of the image (docs/FORMAT.md, 10.1): the
 *    pages the guest wrote during the snapshot, in the order their first
 *    write faulted, recorded by the snapshot engine;
 *  - a working-set file "<image>.wset" beside the image
 *    (docs/FORMAT.md, 10.2): the fault order of earlier lazy restores of
 *    the same image, written by the restore after graduation.
 *
 * A VMM restoring lazily does:
 *
 *   wps_wset_path(image_path, p, sizeof(p));
 *   wps_wset_load(ctx, p, info->uuid, &rec);       // -ENOENT: none yet
 *   wps_wset_from_image(ctx, img, &wr);            // -ENOENT: no blob
 *   wps_wset_pager_ranges(rec, r, &first, &nr);    // recorded order first,
 *   wps_wset_pager_ranges(wr, r, &first, &nr);     // then written pages
 *   opts.first = first; opts.nr_first = nr;        // wps_pager_new copies
 *   ... wps_pager_graduate(pg) ...
 *   wps_pager_fault_order(pg, &order, &n);         // what faulted this time
 *   wps_wset_add_ranges(rec, r, order, n);         // grows the record
 *   wps_wset_save(ctx, p, rec);                    // atomic tmp + rename
 */
#ifndef WPSNAP_WSET_H
#define WPSNAP_WSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Image blob of the pages written during the snapshot. */
#define WPS_WSET_BLOB "wpsnap.written"
/* Suffix of the working-set file beside an image. */
#define WPS_WSET_SUFFIX ".wset"
/* At most this many ranges are kept (24 bytes each: 1.5 MiB); later
 * additions are dropped and the set is marked truncated. */
#define WPS_WSET_MAX_RANGES 65536u

/* Blocks [block, block + count) (4 KiB image blocks) of region. */
struct wps_wset_range {
	uint32_t region;
	uint64_t block;
	uint64_t count;
};

struct wps_wset {
	uint8_t uuid[16];               /* the image it was recorded for */
	struct wps_wset_range *ranges;  /* in prefetch order */
	size_t nr;
	size_t cap;                     /* allocated entries (internal) */
	bool truncated;                 /* WPS_WSET_MAX_RANGES was reached */
};

/* An empty set for the image of this uuid (NULL: all zero). */
int wps_wset_new(const uint8_t *uuid, struct wps_wset **out);
void wps_wset_free(struct wps_wset *ws);

/*
 * Append blocks [block, block + count) of region, merged into the last
 * range when they continue it. -ENOSPC (ws->truncated set) once
 * WPS_WSET_MAX_RANGES ranges are held. Not thread-safe: one writer.
 */
int wps_wset_add(struct wps_wset *ws, uint32_t region, uint64_t block,
		 uint64_t count);

/*
 * Append the ranges (of region) that ws does not hold yet: blocks already
 * in ws when the call starts are skipped, the rest keeps its order. Hitting
 * the cap is not an error here (ws->truncated tells).
 */
int wps_wset_add_ranges(struct wps_wset *ws, uint32_t region,
			const struct wps_pager_range *r, size_t nr);
/* Same for every range of src (any region). */
int wps_wset_merge(struct wps_wset *ws, const struct wps_wset *src);

/* Blocks held (ranges may overlap only if added with wps_wset_add). */
uint64_t wps_wset_blocks(const struct wps_wset *ws, uint32_t region);

/* "<image>.wset" into buf; -ENAMETOOLONG if it does not fit. */
int wps_wset_path(const char *image, char *buf, size_t len);

/*
 * Read a working-set file. uuid (NULL: any) is the image it must belong
 * to. -ENOENT: no file (not logged); -ESTALE: recorded for another image
 * (logged as a warning: ignored); -EBADMSG / -EPROTO: damaged, truncated,
 * or not a working-set file (logged, naming the file and what is wrong).
 */
int wps_wset_load(struct wps_ctx *ctx, const char *path, const uint8_t *uuid,
		  struct wps_wset **out);

/* Write ws to path atomically: "<path>.tmp.<pid>", fsync, rename. */
int wps_wset_save(struct wps_ctx *ctx, const char *path,
		  const struct wps_wset *ws);

/*
 * The pages written during the snapshot, from the image's
 * "wpsnap.written" blob (uuid: the image's). -ENOENT: the image has no
 * such blob; -EBADMSG: the blob is malformed (logged).
 */
int wps_wset_from_image(struct wps_ctx *ctx, struct wps_image *img,
			struct wps_wset **out);

/* The blob's bytes for ws (records of docs/FORMAT.md 10.1); free(*buf). */
int wps_wset_encode(const struct wps_wset *ws, void **buf, size_t *len);

/*
 * Append ws's ranges of region to the array *out of *nr pager ranges
 * (realloc'd; *out NULL and *nr 0 to start; free() it). ws may be NULL.
 */
int wps_wset_pager_ranges(const struct wps_wset *ws, uint32_t region,
			  struct wps_pager_range **out, unsigned int *nr);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_WSET_H */
