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
 * A VMM restoring lazily uses the plan below (wps_wset_plan_*), which
 * does, for one region:
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

/* Write ws to path atomically: "<path>.tmp.<pid>" (created new, never
 * through a link found there), fsync, rename. */
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

/*
 * The working-set plan of one lazy restore (src/wsplan.c): the policy
 * every front end uses (wpsnap restore --lazy, wpsnapd's
 * wps-restore-start, wpsnap bench --restore), so they prefetch the same
 * way. In order:
 *
 *  1. the fault order recorded by earlier restores, from the working-set
 *     file (opts.path, by default "<image>.wset" beside a local image;
 *     an NBD image has none unless a path is given);
 *  2. the pages written during the snapshot (the image's blob), minus
 *     those already in 1, unless the blob names more than a quarter of
 *     the region's 64 KiB windows (then it carries no order: left out);
 *  3. the pager's address-order sweep.
 *
 * After graduation wps_wset_plan_record adds this run's fault order to
 * the file (atomically) for the next restore. A missing, stale or
 * damaged file only means no recorded order: logged, and the restore
 * goes on.
 *
 *   wps_wset_plan_new(ctx, img, image, NULL, r, &wo, &plan);
 *   wps_wset_plan_apply(plan, &popts);     // opts.first / nr_first
 *   wps_pager_new(...); ... wps_pager_graduate(pg);
 *   wps_wset_plan_record(plan, pg);        // grows "<image>.wset"
 *   wps_wset_plan_free(plan);
 */
struct wps_wset_plan;

struct wps_wset_plan_opts {
	/* The working-set file; NULL: "<image>.wset" beside a local image,
	 * none for an image read over NBD. */
	const char *path;
	/* No working set at all: the file is neither read nor written and
	 * the blob is not used (the plain sweep). */
	bool off;
	/* Leave out the image's written-pages blob (only the file). */
	bool no_written;
	/* Read the file but never write it. */
	bool no_save;
};

#define WPS_WSET_PLAN_OPTS_INIT { .path = NULL }

/* A written-pages blob naming more than this share (1/1000) of the
 * region's 64 KiB windows is left out of the plan. */
#define WPS_WSET_WRITTEN_SPREAD_MAX 250u

/* What a plan uses and, once recorded, what it wrote. */
struct wps_wset_plan_info {
	const char *path;               /* the file, or NULL (none / off) */
	bool off;                       /* opts.off */
	int load;                       /* wps_wset_load's result (0: used) */
	uint64_t recorded_blocks;       /* from the file */
	uint64_t written_blocks;        /* from the blob, beyond the file's */
	unsigned int written_spread;    /* 1/1000 of windows the blob names */
	bool written_dropped;           /* spread above the maximum: left out */
	unsigned int nr_first;          /* ranges handed to the pager */
	/* After wps_wset_plan_record: */
	bool saved;                     /* the file was written */
	unsigned int added_ranges;      /* faulting ranges of this run */
	uint64_t file_blocks;           /* blocks the file now holds */
	size_t file_ranges;
	bool file_truncated;            /* the cap was reached */
};

/*
 * Build the plan for region of img. image: the name the user gave (the
 * file beside it holds the record; an NBD URI has none by default).
 * uuid: the image the record belongs to (NULL: img's own; a restore of a
 * chain merged into a temporary passes the named image's). opts NULL:
 * defaults. Only -ENOMEM and -EINVAL (no such region) fail it.
 */
int wps_wset_plan_new(struct wps_ctx *ctx, struct wps_image *img,
		      const char *image, const uint8_t *uuid,
		      unsigned int region, const struct wps_wset_plan_opts *opts,
		      struct wps_wset_plan **out);

/* Point opts->first / nr_first at the plan's list (valid until the plan
 * is freed; wps_pager_new copies it). */
void wps_wset_plan_apply(const struct wps_wset_plan *p,
			 struct wps_pager_opts *opts);

/*
 * After graduation: add pg's fault order to the record and save the file
 * (no-op when off, without a file or with no_save). Errors are logged
 * and returned; the restore itself is not affected by them.
 */
int wps_wset_plan_record(struct wps_wset_plan *p, struct wps_pager *pg);

void wps_wset_plan_get_info(const struct wps_wset_plan *p,
			    struct wps_wset_plan_info *info);

void wps_wset_plan_free(struct wps_wset_plan *p);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_WSET_H */
