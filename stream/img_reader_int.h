/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internals of the image reader, not part of the public image API:
 *
 *  - the *source* under the reader: where the image bytes come from (a
 *    local file, or an NBD export on another host), so that everything
 *    above it (open, verify, inspect, export, eager load, the lazy pager)
 *    works unchanged on both;
 *  - whole checksum groups read in one request and verified one by one,
 *    so that the lazy pager (src/pager.c) can install exactly the groups
 *    that are intact and name the one that is not.
 */
#ifndef WPS_IMG_READER_INT_H
#define WPS_IMG_READER_INT_H

#include <stddef.h>
#include <stdint.h>

#include <wpsnap/image.h>

/*
 * Which traffic a read belongs to. A local file serves both the same way
 * (pread is concurrent). A remote source keeps one connection for the
 * FAULT lane alone, so that a guest fault never queues behind a bulk
 * transfer, and a pool of BULK connections (prefetch, eager load, verify,
 * metadata), each checked out by one reader at a time.
 */
enum wps_img_lane {
	WPS_IMG_LANE_BULK = 0,
	WPS_IMG_LANE_FAULT = 1,
};

/* One piece of a vectored read: len bytes at image offset off into buf. */
struct wps_img_seg {
	void *buf;
	size_t len;
	uint64_t off;
};

struct wps_img_src;

struct wps_img_src_ops {
	/*
	 * Read every segment completely (all may be in flight at once), or
	 * fail: -errno, logged with the source's name and the offset. A
	 * read past the end of the source is -EBADMSG ("truncated").
	 */
	int (*read)(struct wps_img_src *src, enum wps_img_lane lane,
		    const struct wps_img_seg *seg, unsigned int nr);
	void (*close)(struct wps_img_src *src);
};

struct wps_img_src {
	const struct wps_img_src_ops *ops;
	struct wps_ctx *ctx;
	const char *name;       /* path or URI, for messages (owned by ops) */
	uint64_t size;          /* bytes */
	/* Readers that can run in parallel on the BULK lane without
	 * serialising on one another (the NBD bulk connections); 1 for a
	 * file, whose eager load uses libaio instead. */
	unsigned int bulk_lanes;
	unsigned int connections;   /* remote: connections open (0: a file) */
	/* Local file: its descriptor (the eager loader opens the path again
	 * with O_DIRECT); -1 for a remote source. */
	int fd;
	bool remote;
};

static inline int wps_img_src_read(struct wps_img_src *src,
				   enum wps_img_lane lane, void *buf,
				   size_t len, uint64_t off)
{
	struct wps_img_seg s = { .buf = buf, .len = len, .off = off };

	return src->ops->read(src, lane, &s, 1);
}

/* "nbd://", "nbds://", "nbd+unix://", ...: an NBD URI (libnbd syntax). */
bool wps_img_name_is_nbd(const char *name);

/*
 * Read groups [g0, g0 + ng) of region r into buf (ng * group bytes; the
 * last group of a region may be short, the rest of buf is then zeroed) in
 * one read, verify every group that holds data and zero the absent blocks.
 * 0, or -EBADMSG (logged with the file offset) with *bad_group set to the
 * first group that does not match: groups before it are good in buf,
 * groups from it on are not to be used. Other -errno for I/O errors.
 * wps_image_read_groups reads on the BULK lane.
 */
int wps_image_read_groups(struct wps_image *img, unsigned int r, uint64_t g0,
			  uint64_t ng, void *buf, uint64_t *bad_group);
int wps_image_read_groups_lane(struct wps_image *img, enum wps_img_lane lane,
			       unsigned int r, uint64_t g0, uint64_t ng,
			       void *buf, uint64_t *bad_group);

/*
 * The verification half of wps_image_read_groups_lane, for bytes the
 * caller read itself (the pager's O_DIRECT bulk reads): buf holds groups
 * [g0, g0 + ng) as stored (holes included). Same result and buf
 * contents as a read_groups of them; no I/O.
 */
int wps_image_check_groups(struct wps_image *img, unsigned int r, uint64_t g0,
			   uint64_t ng, void *buf, uint64_t *bad_group);

/* File offset of group g of region r (for error reports). */
uint64_t wps_image_group_offset(const struct wps_image *img, unsigned int r,
				uint64_t g);

/*
 * wps_image_open of path, an image of the same chain as sibling: a member
 * of the chain export sibling was read from shares its connections
 * (stream/nbd_source.h); anything else is opened as by wps_image_open.
 */
int wps_image_open_near(struct wps_image *sibling, const char *path,
			unsigned int flags, struct wps_image **out);

/* The image's source (a file or a remote export). */
struct wps_img_src *wps_image_source(struct wps_image *img);

#endif /* WPS_IMG_READER_INT_H */
