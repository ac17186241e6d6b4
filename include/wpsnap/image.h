/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading wpsnap images (format v1, docs/FORMAT.md).
 *
 * An image is a local file, or an export on a Network Block Device server
 * named by a libnbd URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?
 * socket=PATH, nbds://... for TLS): every call below works the same on
 * both (docs/RESTORE.md, "Remote restore").
 *
 * An image is opened only when it is complete and its metadata is intact:
 * a partial, truncated or corrupted image is refused with -EBADMSG (or
 * -EPROTO for a wrong magic/version) and a logged message naming the file
 * and the offset at fault. Page data is verified against its group
 * checksum whenever it is read.
 */
#ifndef WPSNAP_IMAGE_H
#define WPSNAP_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WPS_IMG_BLOCK_SIZE 4096u
#define WPS_IMG_NAME_MAX 31   /* region names */
#define WPS_IMG_BLOB_NAME_MAX 47

struct wps_image;

struct wps_image_info {
	uint32_t version;
	uint8_t uuid[16];
	uint8_t parent_uuid[16];    /* all zero: no parent */
	uint32_t block_size;        /* 4096 */
	uint32_t group_blocks;      /* blocks per checksum group */
	uint32_t nr_regions;
	uint32_t nr_blobs;
	int64_t freeze_realtime_ns; /* CLOCK_REALTIME at the freeze */
	int64_t freeze_monotonic_ns;
	uint64_t file_size;
	uint64_t data_bytes;        /* bytes of present (non-zero) blocks */
	uint64_t present_blocks;
	bool complete;
	/* Filled by the library (callers only read it): appended fields. */
	bool remote;                /* an NBD export, not a local file */
	unsigned int connections;   /* remote: NBD connections (1 for faults) */
};

struct wps_image_region {
	uint64_t host_addr;
	uint64_t size;
	uint32_t page_size;
	uint32_t backing;           /* enum wps_backing */
	uint64_t nr_blocks;         /* size / block_size */
	uint64_t present_blocks;    /* blocks with data; the rest read as zero */
	char name[WPS_IMG_NAME_MAX + 1];
};

/* Flags for wps_image_open. */
#define WPS_IMG_OPEN_NO_VERIFY_DATA (1u << 0) /* skip per-read checksums */

/* path: a file, or an NBD URI (see above). */
/* An image UUID as text, RFC 4122 form: 36 characters and a NUL. */
void wps_uuid_str(const uint8_t uuid[16], char out[37]);

int wps_image_open(struct wps_ctx *ctx, const char *path, unsigned int flags,
		   struct wps_image **out);
void wps_image_close(struct wps_image *img);

const struct wps_image_info *wps_image_get_info(const struct wps_image *img);
/* NULL if idx is out of range. */
const struct wps_image_region *wps_image_get_region(const struct wps_image *img,
						    unsigned int idx);

/* Read len bytes of region r from byte offset off (both multiples of the
 * block size). Absent blocks read as zeros. Every checksum group touched
 * is verified (-EBADMSG, logged with the file offset, on mismatch). */
int wps_image_read(struct wps_image *img, unsigned int r, uint64_t off,
		   void *buf, size_t len);

/*
 * Raw bytes of the image at file offset off, neither interpreted nor
 * verified: for copies of the image and I/O baselines. Concurrent callers
 * of a remote image read over separate NBD connections.
 */
int wps_image_pread(struct wps_image *img, void *buf, size_t len,
		    uint64_t off);

/* 1 if block b of region r holds data, 0 if it is a hole, -EINVAL if out
 * of range. */
int wps_image_block_present(const struct wps_image *img, unsigned int r,
			    uint64_t b);

/* Find the first run of present blocks in region r at or after block
 * *from: 0 with *start and *count set, -ENOENT when there is none. */
int wps_image_next_extent(const struct wps_image *img, unsigned int r,
			  uint64_t from, uint64_t *start, uint64_t *count);

/* Check every group checksum of every region. 0 if intact; -EBADMSG with
 * *bad_offset (file offset of the first bad group) otherwise. */
int wps_image_verify(struct wps_image *img, uint64_t *bad_offset);

struct wps_image_load_stats {
	uint64_t bytes;         /* data read (present blocks) */
	uint64_t ns;            /* wall time of the load */
	bool direct;            /* O_DIRECT was used */
};

/*
 * Eager restore: read region r into dst (page aligned, the region's size)
 * at disk speed, with libaio O_DIRECT straight into dst (a remote image:
 * over all its NBD connections in parallel, several requests in flight on
 * each), verifying every checksum group as its data arrives. Holes are
 * skipped, never written:
 * dst must read as zero there (fresh memory), and its never-populated
 * pages stay unpopulated. -EBADMSG (logged with the file offset) on a
 * checksum mismatch; dst then holds partial data.
 */
int wps_image_load(struct wps_image *img, unsigned int r, void *dst,
		   struct wps_image_load_stats *st);

/* Blobs: by index (0 .. nr_blobs-1); data stays valid until close. */
int wps_image_get_blob(const struct wps_image *img, unsigned int idx,
		       const char **name, const void **data, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_IMAGE_H */
