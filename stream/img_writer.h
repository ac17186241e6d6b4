/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image writer: builds a format-v1 image (docs/FORMAT.md) from pages that
 * arrive in any order, with libaio O_DIRECT and a ring of aligned buffers.
 *
 * It owns the image file from creation ("<path>.partial") to publication
 * (rename to <path>) or removal. It implements struct wps_sink, so the
 * engine can feed it without knowing about files.
 */
#ifndef WPS_IMG_WRITER_H
#define WPS_IMG_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/sink.h>
#include <wpsnap/wpsnap.h>

struct wps_img_writer;

struct wps_img_writer_region {
	uint64_t host_addr;
	uint64_t size;      /* multiple of 4096 */
	uint32_t page_size;
	uint32_t backing;   /* enum wps_backing */
	char name[32];
};

/* Flags for wps_img_writer_opts.flags */
#define WPS_IMGW_OVERWRITE (1u << 0)   /* replace an existing <path> */
#define WPS_IMGW_NO_DIRECT (1u << 1)   /* do not even try O_DIRECT */
/* Blocks may be put again after wps_img_writer_drain(): the later data
 * replaces the earlier (checkpoint pre-copy rounds). Costs 4 bytes of
 * memory per block. */
#define WPS_IMGW_REWRITE (1u << 3)
/* Store all-zero blocks as data instead of holes: in an incremental image
 * a hole means "as in the parent", so a block that became zero must be
 * written. */
#define WPS_IMGW_KEEP_ZEROS (1u << 4)
/* Fault injection for tests: every I/O completes short (half of what was
 * asked, rounded to 4 KiB) once, and the writer must finish the rest. */
#define WPS_IMGW_TEST_SHORT_WRITES (1u << 2)

struct wps_img_writer_opts {
	unsigned int flags;
	uint64_t buffer_budget;  /* 0: 64 MiB */
	uint32_t buf_size;       /* 0: max(1 MiB, largest page size) */
	uint8_t uuid[16];        /* all zero: generate one */
	uint8_t parent_uuid[16];
	/* A chain export member: keep at least the last keep entries and
	 * reclaim older ones for room (0: never; stream/nbd_chain.h). */
	unsigned int keep;
};

struct wps_img_writer_stats {
	uint64_t data_bytes;      /* non-zero blocks written */
	uint64_t present_blocks;
	uint64_t zero_blocks;     /* put but all-zero: left as holes */
	uint64_t ios;             /* I/Os submitted (incl. resubmits) */
	uint64_t short_ios;       /* completions shorter than asked */
	uint64_t file_bytes;      /* st_blocks * 512 after commit */
	uint64_t memory_bytes;    /* buffers and bitmaps the writer holds */
	bool direct;              /* O_DIRECT in use */
};

/*
 * Create "<path>.partial" (replacing a stale one) and set up buffers and
 * the aio context. -EEXIST if <path> exists and WPS_IMGW_OVERWRITE is not
 * set. The writer keeps its own copy of regions.
 */
int wps_img_writer_open(struct wps_ctx *ctx, const char *path,
			const struct wps_img_writer_region *regions,
			unsigned int nr, const struct wps_img_writer_opts *opts,
			struct wps_img_writer **out);

/* The sink view of this writer (valid until free). */
struct wps_sink wps_img_writer_sink(struct wps_img_writer *w);

/* Same as the sink ops, callable directly (drain below is the sink's
 * drain op). */
int wps_img_writer_put(struct wps_img_writer *w, enum wps_lane lane,
		       unsigned int r, uint64_t off, const void *src,
		       size_t len);
int wps_img_writer_flush(struct wps_img_writer *w, enum wps_lane lane);
/* Make sure a put of len bytes on lane will not wait; with nowait,
 * -EAGAIN rather than waiting (see sink.h). */
int wps_img_writer_reserve(struct wps_img_writer *w, enum wps_lane lane,
			   size_t len, bool nowait);

/*
 * Flush both lanes and wait until every write issued so far is on disk
 * (not synced): afterwards a block may be put again (WPS_IMGW_REWRITE),
 * since no earlier write of it can land later. Only the caller's thread
 * may put meanwhile.
 */
int wps_img_writer_drain(struct wps_img_writer *w);

/* Record the freeze instant in the header (any time before commit). */
void wps_img_writer_set_instant(struct wps_img_writer *w, int64_t realtime_ns,
				int64_t monotonic_ns);

int wps_img_writer_add_blob(struct wps_img_writer *w, const char *name,
			    const void *data, size_t len);

/*
 * Finish: flush both lanes, wait for all I/O, write trailer, footer and
 * superblock, fdatasync, rename to <path>, fsync the directory. Any
 * failure removes the partial file and returns -errno.
 */
int wps_img_writer_commit(struct wps_img_writer *w);

/* Stop, wait for I/O in flight, remove the partial file. Idempotent;
 * a no-op after a successful commit. */
void wps_img_writer_abort(struct wps_img_writer *w);

void wps_img_writer_get_stats(const struct wps_img_writer *w,
			      struct wps_img_writer_stats *st);
const uint8_t *wps_img_writer_uuid(const struct wps_img_writer *w);

/* Aborts if not committed, then frees. */
void wps_img_writer_free(struct wps_img_writer *w);

#endif /* WPS_IMG_WRITER_H */
