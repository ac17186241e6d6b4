/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image reader (include/wpsnap/image.h): opens a format-v1 image only when
 * it is complete and its metadata intact, and verifies page data against
 * the group checksums whenever it reads it.
 *
 * It owns the image's source (stream/img_reader_int.h: a local file, or
 * an NBD export on another host, stream/nbd_source.c) and one in-memory
 * copy of the trailer, which holds every bitmap, checksum table and blob
 * (converted to host order in place once its checksum has been checked),
 * so that presence queries never touch the source. Reads allocate their
 * own scratch space, so reads from several threads do not interfere.
 *
 * Eager load has two engines: libaio O_DIRECT straight into guest memory
 * for a file (the disk's queue depth from one thread), and for a remote
 * source one worker per bulk connection, each pipelining its chunk's
 * present runs on its own connection.
 */
#include "config.h"

#include <libaio.h>
#include <time.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>
#include <unistd.h>

/* image.h carries a comment with a nested comment opener. */
#include <wpsnap/image.h>

#include "base/bits.h"
#include "base/zero.h"
#include "base/log.h"
#include "stream/format.h"
#include "stream/img_reader_int.h"
#include "stream/nbd_source.h"

#define IMGR_VERIFY_CHUNK (8u << 20) /* bytes per read in verify */

struct imgr_region {
	struct wps_image_region pub;
	uint64_t data_offset;
	uint64_t nr_groups;
	uint64_t *bitmap;       /* in img->trailer, host order */
	uint32_t *csum;         /* in img->trailer, host order */
};

struct imgr_blob {
	const char *name;
	const void *data;
	size_t len;
};

struct wps_image {
	struct wps_ctx *ctx;
	char *path;             /* file path or NBD URI */
	struct wps_img_src *src;
	unsigned int flags;
	struct wps_image_info info;
	uint64_t footer_offset;
	uint8_t *trailer;       /* [trailer_offset, footer_offset) */
	uint64_t trailer_offset;
	uint64_t blob_table_offset;     /* from the layout rule */
	struct imgr_region *regions;
	struct imgr_blob *blobs;
};

/* Every refusal names the file; the message says where and why. */
static int img_fail(struct wps_image *img, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int img_fail(struct wps_image *img, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	wps_err(img->ctx, "image %s: %s", img->path, msg);
	return err;
}

/* ------------------------------------------------------------------ */
/* sources                                                             */
/* ------------------------------------------------------------------ */

bool wps_img_name_is_nbd(const char *name)
{
	/* nbd, nbds, nbd+unix, nbds+vsock, ...: libnbd's URI schemes. */
	size_t n = strcspn(name, ":/");

	return !strncmp(name, "nbd", 3) && n >= 3 && !strncmp(name + n, "://", 3) &&
	       (n == 3 || name[3] == 's' || name[3] == '+');
}

struct file_src {
	struct wps_img_src pub;
	char *path;
	struct stat st;         /* of the file opened, checked by type */
};

static int file_src_read(struct wps_img_src *src, enum wps_img_lane lane,
			 const struct wps_img_seg *seg, unsigned int nr)
{
	unsigned int i;

	for (i = 0; i < nr; i++) {
		uint8_t *p = seg[i].buf;
		uint64_t off = seg[i].off;
		size_t len = seg[i].len;

		while (len) {
			ssize_t n = pread(src->fd, p, len, (off_t)off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				int err = -errno;

				wps_err(src->ctx, "image %s: read of %zu bytes at "
					"offset %llu: %s", src->name, len,
					(unsigned long long)off, strerror(-err));
				return err;
			}
			if (n == 0) {
				wps_err(src->ctx, "image %s: unexpected end of "
					"file at offset %llu: truncated",
					src->name, (unsigned long long)off);
				return -EBADMSG;
			}
			p += n;
			off += (uint64_t)n;
			len -= (size_t)n;
		}
	}
	return 0;
}

static void file_src_close(struct wps_img_src *src)
{
	struct file_src *f = (struct file_src *)src;

	if (src->fd >= 0)
		close(src->fd);
	free(f->path);
	free(f);
}

static const struct wps_img_src_ops file_src_ops = {
	.read = file_src_read,
	.close = file_src_close,
};

/* What st is, for a refusal: "a FIFO", "a directory"... */
static const char *file_kind(mode_t m)
{
	return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" :
	       S_ISSOCK(m) ? "a socket" : S_ISCHR(m) ? "a character device" :
	       S_ISLNK(m) ? "a symbolic link" : "not a regular file";
}

/*
 * Open path for reading as an image: a regular file or a block device and
 * nothing else. O_NONBLOCK so that a FIFO without a writer (or a device
 * that would wait) cannot stall the open; the type is checked with fstat
 * before anything is read, then O_NONBLOCK is cleared for the reads.
 * Returns the fd with *size set, or -errno (logged, naming the file).
 * same, if not NULL, is a stat the file must match (a reopen must find
 * the file that was validated, not whatever the path names now).
 */
static int img_open_fd(struct wps_image *img, const char *path, int oflags,
		       const struct stat *same, struct stat *st,
		       uint64_t *size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | oflags);
	int err, fl;

	if (fd < 0) {
		err = -errno;
		/* The O_DIRECT caller retries without it, quietly. */
		if (err != -EINVAL || !(oflags & O_DIRECT))
			img_fail(img, err, "cannot open: %s", strerror(-err));
		return err;
	}
	if (fstat(fd, st) < 0) {
		err = img_fail(img, -errno, "fstat: %s", strerror(errno));
		goto fail;
	}
	/* Identity first: then -EINVAL only ever means a wrong type here
	 * (or, from open, O_DIRECT refused), which the reopen relies on. */
	if (same && (same->st_dev != st->st_dev || same->st_ino != st->st_ino)) {
		err = img_fail(img, -ESTALE,
			       "the path names another file than the one opened and checked");
		goto fail;
	}
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		err = img_fail(img, -EINVAL,
			       "%s, not a regular file or a block device: refused",
			       file_kind(st->st_mode));
		goto fail;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		err = img_fail(img, -errno, "fcntl: %s", strerror(errno));
		goto fail;
	}
	if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0) {
			err = img_fail(img, -errno, "block device size: %s",
				       strerror(errno));
			goto fail;
		}
	} else {
		*size = (uint64_t)st->st_size;
	}
	return fd;
fail:
	close(fd);
	return err;
}

static int file_src_open(struct wps_image *img, const char *path,
			 struct wps_img_src **out)
{
	struct file_src *f = calloc(1, sizeof(*f));
	int err;

	if (!f || !(f->path = strdup(path))) {
		free(f);
		return -ENOMEM;
	}
	f->pub.ops = &file_src_ops;
	f->pub.ctx = img->ctx;
	f->pub.name = f->path;
	f->pub.bulk_lanes = 1;
	f->pub.fd = img_open_fd(img, path, 0, NULL, &f->st, &f->pub.size);
	if (f->pub.fd < 0) {
		err = f->pub.fd;
		goto fail;
	}
	*out = &f->pub;
	return 0;
fail:
	file_src_close(&f->pub);
	return err;
}

/* All reads of the reader go through here (errors are logged by the
 * source, naming the file or URI and the offset). */
static int pread_full(struct wps_image *img, void *buf, size_t len,
		      uint64_t off)
{
	return wps_img_src_read(img->src, WPS_IMG_LANE_BULK, buf, len, off);
}

static bool test_bit(const uint64_t *bm, uint64_t b)
{
	return bm[b >> 6] >> (b & 63) & 1;
}

static bool group_has_data(const struct imgr_region *reg, uint64_t g, uint32_t G)
{
	uint64_t s = g * G, e = s + G < reg->pub.nr_blocks ? s + G
							   : reg->pub.nr_blocks;

	return wps_bit_find(reg->bitmap, s, e, true) < e;
}

/* ------------------------------------------------------------------ */
/* open                                                                */
/* ------------------------------------------------------------------ */

static int check_super(struct wps_image *img, const struct wps_img_super *sb,
		       uint64_t size)
{
	uint32_t crc;
	uint64_t meta, toff, foff;

	if (wps_all_zero(sb, sizeof(*sb)))
		return img_fail(img, -EBADMSG,
				"superblock at offset 0 was never written: snapshot did not complete (partial image)");
	if (memcmp(sb->magic, WPS_IMG_MAGIC, 8))
		return img_fail(img, -EPROTO,
				"bad magic at offset 0: not a wpsnap image");
	if (le32toh(sb->version) != WPS_IMG_VERSION)
		return img_fail(img, -EPROTO,
				"format version %u at offset 8; this reader knows version %u",
				le32toh(sb->version), WPS_IMG_VERSION);
	crc = wps_crc32c(0, sb, offsetof(struct wps_img_super, crc));
	if (crc != le32toh(sb->crc))
		return img_fail(img, -EBADMSG,
				"superblock checksum mismatch at offset %zu (stored %08x, computed %08x)",
				offsetof(struct wps_img_super, crc),
				le32toh(sb->crc), crc);
	if (le32toh(sb->flags))
		return img_fail(img, -EPROTO,
				"unknown superblock flags %#x at offset 12",
				le32toh(sb->flags));
	meta = le64toh(sb->meta_size);
	toff = le64toh(sb->trailer_offset);
	foff = le64toh(sb->footer_offset);
	if (le32toh(sb->block_size) != WPS_IMG_BLOCK ||
	    le32toh(sb->region_entry_size) != sizeof(struct wps_img_region_ent) ||
	    !le32toh(sb->group_blocks) ||
	    le32toh(sb->group_blocks) > WPS_IMG_GROUP_BLOCKS_MAX ||
	    le32toh(sb->nr_regions) > WPS_IMG_MAX_REGIONS ||
	    meta != wps_img_meta_size(le32toh(sb->nr_regions)) ||
	    toff < meta || foff < toff || (toff | foff) & (WPS_IMG_BLOCK - 1) ||
	    foff > UINT64_MAX - WPS_IMG_BLOCK)
		return img_fail(img, -EBADMSG,
				"superblock geometry is inconsistent (block size %u, group %u, %u regions, meta %llu, trailer %llu, footer %llu)",
				le32toh(sb->block_size), le32toh(sb->group_blocks),
				le32toh(sb->nr_regions), (unsigned long long)meta,
				(unsigned long long)toff, (unsigned long long)foff);
	if (size < foff + WPS_IMG_BLOCK) {
		if (size == foff)
			return img_fail(img, -EBADMSG,
					"footer missing at offset %llu: snapshot did not complete (partial image)",
					(unsigned long long)foff);
		return img_fail(img, -EBADMSG,
				"file is %llu bytes, expected %llu: truncated",
				(unsigned long long)size,
				(unsigned long long)(foff + WPS_IMG_BLOCK));
	}
	/* An NBD export has the size its server gives it, usually more than
	 * the image the writer put at its start (stream/img_out_nbd.c); a
	 * file has exactly the image's. */
	if (size > foff + WPS_IMG_BLOCK && !img->src->remote)
		return img_fail(img, -EBADMSG,
				"file is %llu bytes, expected %llu: data after the footer",
				(unsigned long long)size,
				(unsigned long long)(foff + WPS_IMG_BLOCK));
	return 0;
}

static int check_footer(struct wps_image *img, const struct wps_img_super *sb,
			const struct wps_img_footer *ft)
{
	uint64_t foff = le64toh(sb->footer_offset);
	uint64_t toff = le64toh(sb->trailer_offset);
	uint32_t crc;

	if (wps_all_zero(ft, sizeof(*ft)) || memcmp(ft->magic, WPS_IMG_FOOTER_MAGIC, 8))
		return img_fail(img, -EBADMSG,
				"footer missing at offset %llu: snapshot did not complete (partial image)",
				(unsigned long long)foff);
	crc = wps_crc32c(0, ft, offsetof(struct wps_img_footer, crc));
	if (crc != le32toh(ft->crc))
		return img_fail(img, -EBADMSG,
				"footer checksum mismatch at offset %llu (stored %08x, computed %08x)",
				(unsigned long long)(foff + offsetof(struct wps_img_footer, crc)),
				le32toh(ft->crc), crc);
	if (le32toh(ft->version) != WPS_IMG_VERSION)
		return img_fail(img, -EPROTO,
				"footer at offset %llu has format version %u",
				(unsigned long long)foff, le32toh(ft->version));
	if (!(le32toh(ft->flags) & WPS_IMG_FOOTER_COMPLETE))
		return img_fail(img, -EBADMSG,
				"footer at offset %llu is not marked complete: snapshot did not complete (partial image)",
				(unsigned long long)foff);
	if (le32toh(ft->flags) & ~WPS_IMG_FOOTER_COMPLETE)
		return img_fail(img, -EPROTO,
				"unknown footer flags %#x at offset %llu",
				le32toh(ft->flags), (unsigned long long)(foff + 12));
	if (memcmp(ft->uuid, sb->uuid, 16))
		return img_fail(img, -EBADMSG,
				"footer at offset %llu belongs to another image (uuid differs from the superblock's)",
				(unsigned long long)foff);
	if (le64toh(ft->trailer_offset) != toff ||
	    le64toh(ft->trailer_size) != foff - toff ||
	    le64toh(ft->footer_offset) != foff ||
	    le64toh(ft->data_bytes) != le64toh(ft->present_blocks) * WPS_IMG_BLOCK)
		return img_fail(img, -EBADMSG,
				"footer at offset %llu disagrees with the superblock (trailer %llu+%llu, footer %llu)",
				(unsigned long long)foff,
				(unsigned long long)le64toh(ft->trailer_offset),
				(unsigned long long)le64toh(ft->trailer_size),
				(unsigned long long)le64toh(ft->footer_offset));
	return 0;
}

static int load_regions(struct wps_image *img, const struct wps_img_super *sb,
			const uint8_t *table)
{
	uint32_t nr = le32toh(sb->nr_regions), G = le32toh(sb->group_blocks);
	struct wps_img_layout_region *lay;
	struct wps_img_layout l;
	uint64_t *sizes;
	uint32_t i;
	int err = -ENOMEM;

	sizes = calloc(nr ? nr : 1, sizeof(*sizes));
	lay = calloc(nr ? nr : 1, sizeof(*lay));
	img->regions = calloc(nr ? nr : 1, sizeof(*img->regions));
	if (!sizes || !lay || !img->regions)
		goto out;
	for (i = 0; i < nr; i++) {
		struct wps_img_region_ent re;
		uint64_t off = WPS_IMG_BLOCK + (uint64_t)i * sizeof(re);

		memcpy(&re, table + i * sizeof(re), sizeof(re));
		sizes[i] = le64toh(re.size);
		/* The writer refuses a page size that is not a power of two
		 * of at least 4096; restore maps with it. */
		if (!sizes[i] || sizes[i] & (WPS_IMG_BLOCK - 1) ||
		    le64toh(re.nr_blocks) != sizes[i] / WPS_IMG_BLOCK ||
		    le32toh(re.page_size) < WPS_IMG_BLOCK ||
		    le32toh(re.page_size) & (le32toh(re.page_size) - 1) ||
		    !memchr(re.name, 0, sizeof(re.name))) {
			err = img_fail(img, -EBADMSG,
				       "region entry %u at offset %llu is invalid (size %llu, %llu blocks, page size %u, name %s)",
				       i, (unsigned long long)off,
				       (unsigned long long)sizes[i],
				       (unsigned long long)le64toh(re.nr_blocks),
				       le32toh(re.page_size),
				       memchr(re.name, 0, sizeof(re.name)) ?
				       "terminated" : "not NUL-terminated");
			goto out;
		}
	}
	if (wps_img_layout(sizes, nr, G, lay, &l) ||
	    l.trailer_offset != le64toh(sb->trailer_offset)) {
		err = img_fail(img, -EBADMSG,
			       "region table does not match the trailer offset %llu in the superblock",
			       (unsigned long long)le64toh(sb->trailer_offset));
		goto out;
	}
	for (i = 0; i < nr; i++) {
		struct imgr_region *reg = &img->regions[i];
		struct wps_img_region_ent re;

		memcpy(&re, table + i * sizeof(re), sizeof(re));
		if (le64toh(re.data_offset) != lay[i].data_offset ||
		    le64toh(re.bitmap_offset) != lay[i].bitmap_offset ||
		    le64toh(re.csum_offset) != lay[i].csum_offset) {
			err = img_fail(img, -EBADMSG,
				       "region entry %u at offset %llu: offsets differ from the v1 layout",
				       i, (unsigned long long)(WPS_IMG_BLOCK + i * sizeof(re)));
			goto out;
		}
		reg->pub.host_addr = le64toh(re.host_addr);
		reg->pub.size = sizes[i];
		reg->pub.page_size = le32toh(re.page_size);
		reg->pub.backing = le32toh(re.backing);
		reg->pub.nr_blocks = lay[i].nr_blocks;
		reg->pub.present_blocks = le64toh(re.present_blocks);
		memcpy(reg->pub.name, re.name, sizeof(reg->pub.name));
		reg->data_offset = lay[i].data_offset;
		reg->nr_groups = wps_img_nr_groups(lay[i].nr_blocks, G);
	}
	img->trailer_offset = l.trailer_offset;
	img->blob_table_offset = l.blob_table_offset;
	err = 0;
out:
	free(sizes);
	free(lay);
	return err;
}

/* Bitmaps and checksum tables: to host order, and consistent. */
static int load_tables(struct wps_image *img, const uint8_t *table,
		       uint64_t *present_total)
{
	uint32_t G = img->info.group_blocks;
	uint64_t total = 0, j;
	uint32_t i;

	for (i = 0; i < img->info.nr_regions; i++) {
		struct imgr_region *reg = &img->regions[i];
		struct wps_img_region_ent re;
		uint64_t nb = reg->pub.nr_blocks, words = wps_img_div_up(nb, 64);
		uint64_t count = 0;

		memcpy(&re, table + i * sizeof(re), sizeof(re));
		/* 4096-aligned offsets into a malloc'd buffer: aligned. */
		reg->bitmap = (uint64_t *)(void *)(img->trailer +
				(le64toh(re.bitmap_offset) - img->trailer_offset));
		reg->csum = (uint32_t *)(void *)(img->trailer +
				(le64toh(re.csum_offset) - img->trailer_offset));
		for (j = 0; j < words; j++) {
			reg->bitmap[j] = le64toh(reg->bitmap[j]);
			count += (uint64_t)__builtin_popcountll(reg->bitmap[j]);
		}
		if (nb & 63 && reg->bitmap[words - 1] >> (nb & 63))
			return img_fail(img, -EBADMSG,
					"region %u bitmap at offset %llu has bits past block %llu",
					i, (unsigned long long)le64toh(re.bitmap_offset),
					(unsigned long long)nb);
		if (count != reg->pub.present_blocks)
			return img_fail(img, -EBADMSG,
					"region %u: bitmap at offset %llu has %llu blocks, region table says %llu",
					i, (unsigned long long)le64toh(re.bitmap_offset),
					(unsigned long long)count,
					(unsigned long long)reg->pub.present_blocks);
		for (j = 0; j < reg->nr_groups; j++) {
			reg->csum[j] = le32toh(reg->csum[j]);
			if (reg->csum[j] && !group_has_data(reg, j, G))
				return img_fail(img, -EBADMSG,
						"region %u: checksum of empty group %llu at offset %llu is not zero",
						i, (unsigned long long)j,
						(unsigned long long)(le64toh(re.csum_offset) + j * 4));
		}
		total += count;
	}
	*present_total = total;
	return 0;
}

/*
 * The blob table, entry by entry, against the rule of docs/FORMAT.md 5:
 * names 1..47 bytes and terminated, the bytes of each blob exactly where
 * the previous one ends (8-aligned, the first right after the table), the
 * footer at the next 4096 boundary after the last. From mem (the trailer,
 * once read) or, before the trailer is allocated, from the source in
 * small chunks: so the trailer's size is proven by the table before it
 * decides an allocation, and a table made of holes fails at its first
 * chunk. Every sum is bounded by footer_offset, itself by the file size.
 */
#define IMGR_BLOBTAB_CHUNK 910u /* entries per read: 64 KiB */

static int walk_blob_table(struct wps_image *img, uint64_t tab, uint32_t nr,
			   const uint8_t *mem)
{
	struct wps_img_blob_ent *chunk = NULL;
	uint64_t pos = wps_img_blob_data_start(tab, nr), end;
	uint32_t i;
	int err = 0;

	if (!mem && nr) {
		chunk = malloc(IMGR_BLOBTAB_CHUNK * sizeof(*chunk));
		if (!chunk)
			return -ENOMEM;
	}
	for (i = 0; i < nr; i++) {
		uint64_t eoff = tab + (uint64_t)i * sizeof(*chunk), off, len;
		const struct wps_img_blob_ent *e;

		if (mem) {
			e = (const void *)(mem + (eoff - img->trailer_offset));
		} else {
			uint32_t k = i % IMGR_BLOBTAB_CHUNK;

			if (!k) {
				uint32_t n = nr - i < IMGR_BLOBTAB_CHUNK ?
					     nr - i : IMGR_BLOBTAB_CHUNK;

				err = pread_full(img, chunk, n * sizeof(*chunk), eoff);
				if (err)
					goto out;
			}
			e = &chunk[k];
		}
		off = le64toh(e->offset);
		len = le64toh(e->length);
		pos = wps_img_align(pos, 8);
		if (!e->name[0] || !memchr(e->name, 0, sizeof(e->name)) ||
		    off != pos || len > img->footer_offset - off) {
			err = img_fail(img, -EBADMSG,
				       "blob entry %u at offset %llu is invalid (data at %llu, expected %llu; %llu bytes; footer at %llu)",
				       i, (unsigned long long)eoff,
				       (unsigned long long)off,
				       (unsigned long long)pos,
				       (unsigned long long)len,
				       (unsigned long long)img->footer_offset);
			goto out;
		}
		pos = off + len;
	}
	end = nr ? wps_img_align(pos, WPS_IMG_BLOCK) : tab;
	if (end != img->footer_offset)
		err = img_fail(img, -EBADMSG,
			       "footer at offset %llu, but the blob table (%u entries at offset %llu) puts it at %llu",
			       (unsigned long long)img->footer_offset, nr,
			       (unsigned long long)tab, (unsigned long long)end);
out:
	free(chunk);
	return err;
}

/*
 * Before the trailer is read or allocated: the footer's blob table
 * offset is the layout's, the bitmaps and checksum tables fit before it,
 * the table fits before the footer, and the blobs fill the rest exactly.
 */
static int check_trailer_shape(struct wps_image *img,
			       const struct wps_img_footer *ft)
{
	uint64_t tab = le64toh(ft->blob_table_offset);
	uint32_t nr = le32toh(ft->nr_blobs);

	if (img->blob_table_offset > img->footer_offset)
		return img_fail(img, -EBADMSG,
				"trailer of %llu bytes at offset %llu is too small for the regions' bitmaps and checksum tables (%llu bytes): footer at %llu",
				(unsigned long long)(img->footer_offset - img->trailer_offset),
				(unsigned long long)img->trailer_offset,
				(unsigned long long)(img->blob_table_offset - img->trailer_offset),
				(unsigned long long)img->footer_offset);
	if (tab != img->blob_table_offset)
		return img_fail(img, -EBADMSG,
				"footer at offset %llu puts the blob table at %llu; the region table puts it at %llu",
				(unsigned long long)img->footer_offset,
				(unsigned long long)tab,
				(unsigned long long)img->blob_table_offset);
	if (nr > (img->footer_offset - tab) / sizeof(struct wps_img_blob_ent))
		return img_fail(img, -EBADMSG,
				"footer at offset %llu counts %u blobs, more than fit between the blob table at %llu and the footer",
				(unsigned long long)img->footer_offset, nr,
				(unsigned long long)tab);
	return walk_blob_table(img, tab, nr, NULL);
}

static int blob_name_cmp(const void *a, const void *b)
{
	const struct imgr_blob *x = a, *y = b;

	return strcmp(x->name, y->name);
}

static int load_blobs(struct wps_image *img, const struct wps_img_footer *ft)
{
	uint64_t tab = le64toh(ft->blob_table_offset);
	uint32_t nr = le32toh(ft->nr_blobs), i;
	struct imgr_blob *sorted;
	int err;

	/* Again, on the bytes the checksum covered (the file may have
	 * changed since check_trailer_shape read it). */
	err = walk_blob_table(img, tab, nr, img->trailer);
	if (err)
		return err;
	img->blobs = calloc(nr ? nr : 1, sizeof(*img->blobs));
	sorted = calloc(nr ? nr : 1, sizeof(*sorted));
	if (!img->blobs || !sorted) {
		free(sorted);
		return -ENOMEM;
	}
	for (i = 0; i < nr; i++) {
		uint64_t eoff = tab + i * sizeof(struct wps_img_blob_ent);
		struct wps_img_blob_ent *e = (struct wps_img_blob_ent *)(void *)
			(img->trailer + (eoff - img->trailer_offset));
		uint64_t off = le64toh(e->offset), len = le64toh(e->length);
		uint32_t crc;

		img->blobs[i].name = e->name;
		img->blobs[i].data = img->trailer + (off - img->trailer_offset);
		img->blobs[i].len = (size_t)len;
		crc = wps_crc32c(0, img->blobs[i].data, len);
		if (crc != le32toh(e->crc)) {
			free(sorted);
			return img_fail(img, -EBADMSG,
					"blob %u at offset %llu: checksum mismatch",
					i, (unsigned long long)off);
		}
	}
	/* Names are unique (the writer refuses a second one): sorted, any
	 * duplicate is next to its twin. */
	memcpy(sorted, img->blobs, nr * sizeof(*sorted));
	qsort(sorted, nr, sizeof(*sorted), blob_name_cmp);
	for (i = 1; i < nr; i++) {
		if (!strcmp(sorted[i - 1].name, sorted[i].name)) {
			err = img_fail(img, -EBADMSG,
				       "two blobs have the same name (entries at offsets %llu and %llu)",
				       (unsigned long long)(img->trailer_offset +
					       (uint64_t)((const uint8_t *)sorted[i - 1].name - img->trailer)),
				       (unsigned long long)(img->trailer_offset +
					       (uint64_t)((const uint8_t *)sorted[i].name - img->trailer)));
			free(sorted);
			return err;
		}
	}
	free(sorted);
	img->info.nr_blobs = nr;
	return 0;
}

void wps_uuid_str(const uint8_t uuid[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[uuid[i] >> 4];
		out[o++] = hex[uuid[i] & 15];
	}
	out[o] = '\0';
}

/* sibling: an open image whose source path may share (a member of the
 * same chain export, stream/nbd_source.h), or NULL. */
static int image_open(struct wps_ctx *ctx, const char *path, unsigned int flags,
		      struct wps_image *sibling, struct wps_image **out)
{
	struct wps_img_super sb;
	struct wps_img_footer ft;
	struct wps_image *img;
	uint8_t *table = NULL;
	uint64_t meta, tsize, present = 0, size;
	uint32_t crc;
	int err = -ENOMEM;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	if (!img)
		return -ENOMEM;
	img->ctx = ctx;
	img->flags = flags;
	img->path = strdup(path);
	if (!img->path)
		goto out;
	/* A URI is an export on an NBD server; anything else a file. */
	if (wps_img_name_is_nbd(path))
		err = sibling ? wps_nbd_src_member(sibling->src, path, &img->src) :
		      wps_nbd_src_open(ctx, path, &img->src);
	else
		err = file_src_open(img, path, &img->src);
	if (err)
		goto out;
	size = img->src->size;
	if (size < 2 * WPS_IMG_BLOCK) {
		err = img_fail(img, -EBADMSG,
			       "%s is %llu bytes, too short for a superblock and a footer: %s",
			       img->src->remote ? "export" : "file",
			       (unsigned long long)size,
			       img->src->remote ? "not a wpsnap image" : "truncated");
		goto out;
	}
	err = pread_full(img, &sb, sizeof(sb), 0);
	if (err)
		goto out;
	err = check_super(img, &sb, size);
	if (err)
		goto out;
	img->footer_offset = le64toh(sb.footer_offset);

	meta = le64toh(sb.meta_size);
	table = malloc(meta - WPS_IMG_BLOCK + 1);
	if (!table) {
		err = -ENOMEM;
		goto out;
	}
	err = pread_full(img, table, meta - WPS_IMG_BLOCK, WPS_IMG_BLOCK);
	if (err)
		goto out;
	crc = wps_crc32c(0, table, meta - WPS_IMG_BLOCK);
	if (crc != le32toh(sb.region_table_crc)) {
		err = img_fail(img, -EBADMSG,
			       "region table checksum mismatch (offsets %u to %llu; stored %08x, computed %08x)",
			       WPS_IMG_BLOCK, (unsigned long long)meta,
			       le32toh(sb.region_table_crc), crc);
		goto out;
	}
	err = pread_full(img, &ft, sizeof(ft), img->footer_offset);
	if (err)
		goto out;
	err = check_footer(img, &sb, &ft);
	if (err)
		goto out;

	img->info.version = le32toh(sb.version);
	memcpy(img->info.uuid, sb.uuid, 16);
	memcpy(img->info.parent_uuid, sb.parent_uuid, 16);
	img->info.block_size = WPS_IMG_BLOCK;
	img->info.group_blocks = le32toh(sb.group_blocks);
	img->info.nr_regions = le32toh(sb.nr_regions);
	img->info.freeze_realtime_ns = (int64_t)le64toh((uint64_t)sb.freeze_realtime_ns);
	img->info.freeze_monotonic_ns = (int64_t)le64toh((uint64_t)sb.freeze_monotonic_ns);
	img->info.file_size = size;
	img->info.remote = img->src->remote;
	img->info.connections = img->src->connections;
	img->info.present_blocks = le64toh(ft.present_blocks);
	img->info.data_bytes = le64toh(ft.data_bytes);
	img->info.complete = true;

	err = load_regions(img, &sb, table);
	if (err)
		goto out;
	err = check_trailer_shape(img, &ft);
	if (err)
		goto out;
	tsize = img->footer_offset - img->trailer_offset;
	if (tsize > SIZE_MAX - 1) {
		err = img_fail(img, -EFBIG, "trailer of %llu bytes is too large",
			       (unsigned long long)tsize);
		goto out;
	}
	img->trailer = malloc(tsize + 1);
	if (!img->trailer) {
		err = img_fail(img, -ENOMEM, "no memory for a %llu-byte trailer",
			       (unsigned long long)tsize);
		goto out;
	}
	err = pread_full(img, img->trailer, tsize, img->trailer_offset);
	if (err)
		goto out;
	crc = wps_crc32c(0, img->trailer, tsize);
	if (crc != le32toh(ft.trailer_crc)) {
		err = img_fail(img, -EBADMSG,
			       "trailer checksum mismatch (offsets %llu to %llu; stored %08x, computed %08x)",
			       (unsigned long long)img->trailer_offset,
			       (unsigned long long)img->footer_offset,
			       le32toh(ft.trailer_crc), crc);
		goto out;
	}
	err = load_tables(img, table, &present);
	if (err)
		goto out;
	if (present != img->info.present_blocks) {
		err = img_fail(img, -EBADMSG,
			       "footer at offset %llu counts %llu present blocks, bitmaps %llu",
			       (unsigned long long)img->footer_offset,
			       (unsigned long long)img->info.present_blocks,
			       (unsigned long long)present);
		goto out;
	}
	err = load_blobs(img, &ft);
	if (err)
		goto out;
	*out = img;
	img = NULL;
out:
	free(table);
	wps_image_close(img);
	return err;
}

int wps_image_open(struct wps_ctx *ctx, const char *path, unsigned int flags,
		   struct wps_image **out)
{
	return image_open(ctx, path, flags, NULL, out);
}

int wps_image_open_near(struct wps_image *sibling, const char *path,
			unsigned int flags, struct wps_image **out)
{
	return image_open(sibling->ctx, path, flags, sibling, out);
}

void wps_image_close(struct wps_image *img)
{
	if (!img)
		return;
	if (img->src)
		img->src->ops->close(img->src);
	free(img->blobs);
	free(img->regions);
	free(img->trailer);
	free(img->path);
	free(img);
}

const struct wps_image_info *wps_image_get_info(const struct wps_image *img)
{
	return &img->info;
}

const struct wps_image_region *wps_image_get_region(const struct wps_image *img,
						    unsigned int idx)
{
	return idx < img->info.nr_regions ? &img->regions[idx].pub : NULL;
}

/* ------------------------------------------------------------------ */
/* data                                                                */
/* ------------------------------------------------------------------ */

/* Check group g, whose blocks [g*G, ...) are at data (holes included). */
static int check_group(struct wps_image *img, unsigned int r, uint64_t g,
		       const uint8_t *data)
{
	const struct imgr_region *reg = &img->regions[r];
	uint32_t G = img->info.group_blocks;
	uint64_t s = g * G, e = s + G < reg->pub.nr_blocks ? s + G
							   : reg->pub.nr_blocks;
	uint32_t x = 0;
	uint64_t b;

	for (b = wps_bit_find(reg->bitmap, s, e, true); b < e;
	     b = wps_bit_find(reg->bitmap, b + 1, e, true))
		x ^= wps_img_block_crc(b, data + ((b - s) << WPS_IMG_BLOCK_SHIFT));
	if (x == reg->csum[g])
		return 0;
	return img_fail(img, -EBADMSG,
			"region %u (%s): checksum mismatch in group %llu at offset %llu (%u blocks; stored %08x, computed %08x)",
			r, reg->pub.name, (unsigned long long)g,
			(unsigned long long)(reg->data_offset + (s << WPS_IMG_BLOCK_SHIFT)),
			(unsigned int)(e - s), reg->csum[g], x);
}

/* Zero the absent blocks of [s, e) held at dst (holes may hold anything
 * in a damaged file; absent reads as zero by definition). */
static void zero_absent(const struct imgr_region *reg, uint64_t s, uint64_t e,
			uint8_t *dst)
{
	uint64_t b = wps_bit_find(reg->bitmap, s, e, false);

	while (b < e) {
		uint64_t n = wps_bit_find(reg->bitmap, b, e, true);

		memset(dst + ((b - s) << WPS_IMG_BLOCK_SHIFT), 0,
		       (n - b) << WPS_IMG_BLOCK_SHIFT);
		b = wps_bit_find(reg->bitmap, n, e, false);
	}
}

/* No verification: read only the present runs. */
static int read_runs(struct wps_image *img, const struct imgr_region *reg,
		     uint64_t s, uint64_t e, uint8_t *dst)
{
	uint64_t b = wps_bit_find(reg->bitmap, s, e, true);
	int err;

	memset(dst, 0, (e - s) << WPS_IMG_BLOCK_SHIFT);
	while (b < e) {
		uint64_t n = wps_bit_find(reg->bitmap, b, e, false);

		err = pread_full(img, dst + ((b - s) << WPS_IMG_BLOCK_SHIFT),
				 (n - b) << WPS_IMG_BLOCK_SHIFT,
				 reg->data_offset + (b << WPS_IMG_BLOCK_SHIFT));
		if (err)
			return err;
		b = wps_bit_find(reg->bitmap, n, e, true);
	}
	return 0;
}

int wps_image_read(struct wps_image *img, unsigned int r, uint64_t off,
		   void *buf, size_t len)
{
	const struct imgr_region *reg;
	uint32_t G = img->info.group_blocks;
	uint8_t *scratch = NULL, *out = buf;
	uint64_t b0, b1, g;
	int err = 0;

	if (r >= img->info.nr_regions || (off | len) & (WPS_IMG_BLOCK - 1) ||
	    off > img->regions[r].pub.size ||
	    len > img->regions[r].pub.size - off)
		return -EINVAL;
	reg = &img->regions[r];
	b0 = off >> WPS_IMG_BLOCK_SHIFT;
	b1 = (off + len) >> WPS_IMG_BLOCK_SHIFT;
	if (img->flags & WPS_IMG_OPEN_NO_VERIFY_DATA)
		return read_runs(img, reg, b0, b1, out);

	for (g = b0 / G; b0 < b1 && g <= (b1 - 1) / G; g++) {
		uint64_t gs = g * G;
		uint64_t ge = gs + G < reg->pub.nr_blocks ? gs + G : reg->pub.nr_blocks;
		uint64_t rs = gs > b0 ? gs : b0, re = ge < b1 ? ge : b1;
		uint8_t *dst = out + ((rs - b0) << WPS_IMG_BLOCK_SHIFT);
		uint8_t *grp = dst;

		if (!group_has_data(reg, g, G)) {
			memset(dst, 0, (re - rs) << WPS_IMG_BLOCK_SHIFT);
			continue;
		}
		if (rs != gs || re != ge) {
			/* Partly wanted: the whole group is needed to check it. */
			if (!scratch) {
				scratch = malloc((size_t)G << WPS_IMG_BLOCK_SHIFT);
				if (!scratch) {
					err = -ENOMEM;
					goto out;
				}
			}
			grp = scratch;
		}
		err = pread_full(img, grp, (ge - gs) << WPS_IMG_BLOCK_SHIFT,
				 reg->data_offset + (gs << WPS_IMG_BLOCK_SHIFT));
		if (!err)
			err = check_group(img, r, g, grp);
		if (err)
			goto out;
		if (grp != dst)
			memcpy(dst, grp + ((rs - gs) << WPS_IMG_BLOCK_SHIFT),
			       (re - rs) << WPS_IMG_BLOCK_SHIFT);
		zero_absent(reg, rs, re, dst);
	}
out:
	free(scratch);
	return err;
}

int wps_image_pread(struct wps_image *img, void *buf, size_t len,
		    uint64_t off)
{
	if (off > img->info.file_size || len > img->info.file_size - off)
		return -EINVAL;
	return pread_full(img, buf, len, off);
}

int wps_image_block_present(const struct wps_image *img, unsigned int r,
			    uint64_t b)
{
	if (r >= img->info.nr_regions || b >= img->regions[r].pub.nr_blocks)
		return -EINVAL;
	return test_bit(img->regions[r].bitmap, b);
}

int wps_image_next_extent(const struct wps_image *img, unsigned int r,
			  uint64_t from, uint64_t *start, uint64_t *count)
{
	const struct imgr_region *reg;
	uint64_t s, e;

	if (r >= img->info.nr_regions)
		return -EINVAL;
	reg = &img->regions[r];
	if (from >= reg->pub.nr_blocks)
		return -ENOENT;
	s = wps_bit_find(reg->bitmap, from, reg->pub.nr_blocks, true);
	if (s >= reg->pub.nr_blocks)
		return -ENOENT;
	e = wps_bit_find(reg->bitmap, s, reg->pub.nr_blocks, false);
	*start = s;
	*count = e - s;
	return 0;
}

int wps_image_verify(struct wps_image *img, uint64_t *bad_offset)
{
	uint32_t G = img->info.group_blocks;
	uint64_t chunk_groups = IMGR_VERIFY_CHUNK / ((uint64_t)G << WPS_IMG_BLOCK_SHIFT);
	uint8_t *buf;
	unsigned int r;
	int err = 0;

	if (!chunk_groups)
		chunk_groups = 1;
	buf = malloc(chunk_groups * ((size_t)G << WPS_IMG_BLOCK_SHIFT));
	if (!buf)
		return -ENOMEM;
	for (r = 0; r < img->info.nr_regions; r++) {
		const struct imgr_region *reg = &img->regions[r];
		uint64_t g = 0;

		while (g < reg->nr_groups) {
			uint64_t s, e, n, i;

			/* Skip to the next group with data; read from there. */
			s = wps_bit_find(reg->bitmap, g * G, reg->pub.nr_blocks, true);
			if (s >= reg->pub.nr_blocks)
				break;
			g = s / G;
			n = reg->nr_groups - g < chunk_groups ? reg->nr_groups - g
							      : chunk_groups;
			e = (g + n) * G < reg->pub.nr_blocks ? (g + n) * G
							     : reg->pub.nr_blocks;
			err = pread_full(img, buf, (e - g * G) << WPS_IMG_BLOCK_SHIFT,
					 reg->data_offset + ((g * G) << WPS_IMG_BLOCK_SHIFT));
			if (err)
				goto out;
			for (i = 0; i < n; i++) {
				err = check_group(img, r, g + i,
						  buf + ((i * G) << WPS_IMG_BLOCK_SHIFT));
				if (err) {
					if (bad_offset)
						*bad_offset = reg->data_offset +
							(((g + i) * G) << WPS_IMG_BLOCK_SHIFT);
					goto out;
				}
			}
			g += n;
		}
	}
out:
	free(buf);
	return err;
}

int wps_image_get_blob(const struct wps_image *img, unsigned int idx,
		       const char **name, const void **data, size_t *len)
{
	if (idx >= img->info.nr_blobs)
		return -EINVAL;
	if (name)
		*name = img->blobs[idx].name;
	if (data)
		*data = img->blobs[idx].data;
	if (len)
		*len = img->blobs[idx].len;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Eager load                                                          */
/* ------------------------------------------------------------------ */

#define LOAD_CHUNK_BLOCKS 256u  /* 1 MiB: whole groups, one unit of I/O */
#define LOAD_DEPTH 16u          /* chunks in flight: the disk's depth */
#define LOAD_MAX_IOCB 64u       /* present runs per chunk we issue */

struct load_slot {
	uint64_t s, e;          /* blocks [s, e) of the region */
	unsigned int pending;   /* iocbs not done */
	unsigned int nr;
	struct iocb iocb[LOAD_MAX_IOCB];
};

struct loader {
	struct wps_image *img;
	const struct imgr_region *reg;
	unsigned int r;
	uint8_t *dst;
	int fd;
	io_context_t aio;
	struct load_slot slot[LOAD_DEPTH];
	unsigned int busy;
	uint64_t next;          /* first block not yet issued */
	uint64_t bytes;
};

/* Issue the present runs of the next chunk that has any into slot sl.
 * Returns 1 if issued, 0 when the region is done, -errno. */
static int load_issue(struct loader *ld, struct load_slot *sl)
{
	const struct imgr_region *reg = ld->reg;
	uint64_t nb = reg->pub.nr_blocks, b, s, e;
	struct iocb *ptrs[LOAD_MAX_IOCB];
	unsigned int i;
	int ret;

	b = wps_bit_find(reg->bitmap, ld->next, nb, true);
	if (b >= nb) {
		ld->next = nb;
		return 0;
	}
	s = b / LOAD_CHUNK_BLOCKS * LOAD_CHUNK_BLOCKS;
	e = s + LOAD_CHUNK_BLOCKS < nb ? s + LOAD_CHUNK_BLOCKS : nb;
	sl->s = s;
	sl->e = e;
	sl->nr = 0;
	while (b < e && sl->nr < LOAD_MAX_IOCB) {
		uint64_t n = wps_bit_find(reg->bitmap, b, e, false);

		io_prep_pread(&sl->iocb[sl->nr], ld->fd,
			      ld->dst + (b << WPS_IMG_BLOCK_SHIFT),
			      (n - b) << WPS_IMG_BLOCK_SHIFT,
			      (long long)(reg->data_offset + (b << WPS_IMG_BLOCK_SHIFT)));
		sl->iocb[sl->nr].data = sl;
		ptrs[sl->nr] = &sl->iocb[sl->nr];
		ld->bytes += (n - b) << WPS_IMG_BLOCK_SHIFT;
		sl->nr++;
		b = wps_bit_find(reg->bitmap, n, e, true);
	}
	/* A chunk with more runs than iocbs ends early; the rest is the
	 * next chunk's (chunks then start mid-group, so verification waits
	 * for the slot holding the group's end: see load_complete). */
	if (b < e) {
		sl->e = b;
		e = b;
	}
	ld->next = e;
	sl->pending = sl->nr;
	for (i = 0; i < sl->nr; i += ret) {
		ret = io_submit(ld->aio, sl->nr - i, ptrs + i);
		if (ret <= 0) {
			/* Only the reads submitted will complete: the error
			 * path waits for exactly those. */
			sl->pending = i;
			return ret < 0 ? ret : -EIO;
		}
	}
	return 1;
}

/* Verify the groups whose blocks all arrived: every group starting in
 * [s, e) and ending by e. Chunks end on group boundaries except when cut
 * by LOAD_MAX_IOCB; the cut group is then verified with its last chunk,
 * which load_main completes in order. */
static int load_verify(struct loader *ld, uint64_t s, uint64_t e)
{
	uint32_t G = ld->img->info.group_blocks;
	uint64_t g;
	int ret;

	if (ld->img->flags & WPS_IMG_OPEN_NO_VERIFY_DATA)
		return 0;
	for (g = s / G; g * G < e; g++) {
		uint64_t end = (g + 1) * G;

		if (end > ld->reg->pub.nr_blocks)
			end = ld->reg->pub.nr_blocks;
		if (end > e)
			break;  /* finished by a later chunk */
		ret = check_group(ld->img, ld->r, g,
				  ld->dst + ((g * G) << WPS_IMG_BLOCK_SHIFT));
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Eager load from a remote source: one worker per bulk connection (the
 * caller is one of them), each claiming the next chunk of whole groups,
 * reading its present runs in one vectored read (pipelined on the
 * worker's connection, straight into dst) and verifying its groups. The
 * workers' connections run in parallel, and so do their checksums.
 */
#define RLOAD_CHUNK_BLOCKS 512u     /* 2 MiB, rounded up to whole groups */

struct rloader {
	struct wps_image *img;
	const struct imgr_region *reg;
	unsigned int r;
	uint8_t *dst;
	uint64_t chunk_blocks, nr_chunks;
	atomic_uint_fast64_t next;      /* next chunk to claim */
	atomic_uint_fast64_t bytes;
	atomic_int err;                 /* first error; stops the others */
};

static int rload_chunk(struct rloader *rl, uint64_t c, struct wps_img_seg *seg)
{
	const struct imgr_region *reg = rl->reg;
	uint32_t G = rl->img->info.group_blocks;
	uint64_t s = c * rl->chunk_blocks, e = s + rl->chunk_blocks, b, g;
	uint64_t bytes = 0;
	unsigned int n = 0;
	int err;

	if (e > reg->pub.nr_blocks)
		e = reg->pub.nr_blocks;
	for (b = wps_bit_find(reg->bitmap, s, e, true); b < e;
	     b = wps_bit_find(reg->bitmap, b, e, true)) {
		uint64_t x = wps_bit_find(reg->bitmap, b, e, false);

		seg[n].buf = rl->dst + (b << WPS_IMG_BLOCK_SHIFT);
		seg[n].len = (x - b) << WPS_IMG_BLOCK_SHIFT;
		seg[n].off = reg->data_offset + (b << WPS_IMG_BLOCK_SHIFT);
		bytes += seg[n].len;
		n++;
		b = x;
	}
	if (!n)
		return 0;
	err = rl->img->src->ops->read(rl->img->src, WPS_IMG_LANE_BULK, seg, n);
	if (err)
		return err;
	atomic_fetch_add(&rl->bytes, bytes);
	if (rl->img->flags & WPS_IMG_OPEN_NO_VERIFY_DATA)
		return 0;
	/* Chunks are whole groups: every group here is complete. */
	for (g = s / G; g * G < e; g++) {
		if (!group_has_data(reg, g, G))
			continue;
		err = check_group(rl->img, rl->r, g,
				  rl->dst + ((g * G) << WPS_IMG_BLOCK_SHIFT));
		if (err)
			return err;
	}
	return 0;
}

static void *rload_main(void *arg)
{
	struct rloader *rl = arg;
	struct wps_img_seg *seg;
	uint64_t c;
	int err = 0, zero = 0;

	/* At most one run per two blocks. */
	seg = malloc((rl->chunk_blocks / 2 + 1) * sizeof(*seg));
	if (!seg)
		err = -ENOMEM;
	while (!err && !atomic_load(&rl->err)) {
		c = atomic_fetch_add(&rl->next, 1);
		if (c >= rl->nr_chunks)
			break;
		err = rload_chunk(rl, c, seg);
	}
	if (err)
		atomic_compare_exchange_strong(&rl->err, &zero, err);
	free(seg);
	return NULL;
}

static int load_remote(struct wps_image *img, unsigned int r, void *dst,
		       uint64_t *bytes)
{
	uint32_t G = img->info.group_blocks;
	struct rloader rl = {
		.img = img, .reg = &img->regions[r], .r = r, .dst = dst,
	};
	pthread_t tid[WPS_NBD_BULK_CONNS];
	unsigned int i, nt = 0, want = img->src->bulk_lanes;

	rl.chunk_blocks = (RLOAD_CHUNK_BLOCKS + G - 1) / G * G;
	rl.nr_chunks = wps_img_div_up(rl.reg->pub.nr_blocks, rl.chunk_blocks);
	atomic_init(&rl.next, 0);
	atomic_init(&rl.bytes, 0);
	atomic_init(&rl.err, 0);
	if (want > WPS_NBD_BULK_CONNS)
		want = WPS_NBD_BULK_CONNS;
	/* The caller is the last worker; fewer threads is only slower. */
	for (i = 0; i + 1 < want; i++)
		if (!pthread_create(&tid[nt], NULL, rload_main, &rl))
			nt++;
	rload_main(&rl);
	for (i = 0; i < nt; i++)
		pthread_join(tid[i], NULL);
	*bytes = atomic_load(&rl.bytes);
	return atomic_load(&rl.err);
}

int wps_image_load(struct wps_image *img, unsigned int r, void *dst,
		   struct wps_image_load_stats *st)
{
	struct file_src *fsrc = (struct file_src *)img->src;
	struct loader *ld;
	struct io_event ev[LOAD_DEPTH * 4];
	struct stat fst;
	uint64_t fsize;
	struct timespec t0, t1;
	uint64_t verified = 0;  /* blocks [0, verified) checked */
	unsigned int i;
	int ret = 0, n;

	if (r >= img->info.nr_regions || ((uintptr_t)dst & 4095))
		return -EINVAL;
	if (img->src->remote) {
		uint64_t bytes = 0;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		ret = load_remote(img, r, dst, &bytes);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (st) {
			memset(st, 0, sizeof(*st));
			st->bytes = bytes;
			st->ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull +
				 (uint64_t)(t1.tv_nsec - t0.tv_nsec);
		}
		return ret;
	}
	ld = calloc(1, sizeof(*ld));
	if (!ld)
		return -ENOMEM;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ld->img = img;
	ld->r = r;
	ld->reg = &img->regions[r];
	ld->dst = dst;
	if (st)
		memset(st, 0, sizeof(*st));
	/* The same file again, with O_DIRECT: it must still be the file
	 * that was checked at open, not whatever the path names now. */
	ld->fd = img_open_fd(img, img->path, O_DIRECT, &fsrc->st, &fst, &fsize);
	if (ld->fd >= 0 && st)
		st->direct = true;
	if (ld->fd == -EINVAL) {
		wps_log_once(img->ctx, WPS_LOG_WARN, img,
			     "image %s: filesystem refuses O_DIRECT, reading "
			     "buffered", img->path);
		ld->fd = img_open_fd(img, img->path, 0, &fsrc->st, &fst, &fsize);
	}
	if (ld->fd < 0) {
		ret = ld->fd;
		goto out;
	}
	ret = io_setup(LOAD_DEPTH * LOAD_MAX_IOCB, &ld->aio);
	if (ret) {
		ret = img_fail(img, ret, "io_setup failed: %s", strerror(-ret));
		ld->aio = 0;
		goto out;
	}
	/* Slots complete in any order, but verification walks the region in
	 * order (a group cut between two chunks needs both): keep issuing
	 * into free slots, and verify the prefix of completed chunks. */
	for (;;) {
		for (i = 0; i < LOAD_DEPTH && ld->next < ld->reg->pub.nr_blocks; i++) {
			if (ld->slot[i].pending || ld->slot[i].nr)
				continue;
			ret = load_issue(ld, &ld->slot[i]);
			if (ret < 0) {
				img_fail(img, ret, "read submission failed: %s",
					 strerror(-ret));
				goto out;
			}
			if (ret)
				ld->busy++;
		}
		ret = 0;
		if (!ld->busy)
			break;
		n = io_getevents(ld->aio, 1, LOAD_DEPTH * 4, ev, NULL);
		if (n < 0) {
			if (n == -EINTR)
				continue;
			ret = img_fail(img, n, "io_getevents failed: %s",
				       strerror(-n));
			goto out;
		}
		for (i = 0; i < (unsigned int)n; i++) {
			struct load_slot *sl = ev[i].data;
			long res = (long)ev[i].res;

			/* Arrived, whatever its result: the error path
			 * waits only for the reads still in flight. */
			sl->pending--;
			if (ret || res == (long)ev[i].obj->u.c.nbytes)
				continue;
			if (res < 0)
				ret = img_fail(img, (int)res, "read of %lu bytes "
					       "at offset %lld: %s",
					       ev[i].obj->u.c.nbytes,
					       ev[i].obj->u.c.offset,
					       strerror((int)-res));
			else
				ret = img_fail(img, -EIO, "read of %lu bytes at "
					       "offset %lld: short read of %ld",
					       ev[i].obj->u.c.nbytes,
					       ev[i].obj->u.c.offset, res);
		}
		if (ret)
			goto out;		/* Verify completed chunks in address order. */
		for (;;) {
			struct load_slot *low = NULL;

			for (i = 0; i < LOAD_DEPTH; i++)
				if (ld->slot[i].nr &&
				    (!low || ld->slot[i].s < low->s))
					low = &ld->slot[i];
			if (!low || low->pending)
				break;
			ret = load_verify(ld, verified < low->s ? low->s : verified,
					  low->e);
			if (ret)
				goto out;
			verified = low->e;
			low->nr = 0;
			ld->busy--;
		}
	}
out:
	if (ret && ld->aio) {
		/* Let reads in flight land before the caller's memory goes
		 * (a slot whose submission failed half-way is not busy). */
		for (;;) {
			unsigned int left = 0;

			for (i = 0; i < LOAD_DEPTH; i++)
				left += ld->slot[i].pending;
			if (!left)
				break;
			n = io_getevents(ld->aio, 1, LOAD_DEPTH * 4, ev, NULL);
			if (n < 0 && n != -EINTR)
				break;
			for (i = 0; n > 0 && i < (unsigned int)n; i++)
				((struct load_slot *)ev[i].data)->pending--;
		}
	}
	if (ld->aio)
		io_destroy(ld->aio);
	if (ld->fd >= 0)
		close(ld->fd);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (st) {
		st->bytes = ld->bytes;
		st->ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull +
			 (uint64_t)(t1.tv_nsec - t0.tv_nsec);
	}
	free(ld);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Internal: group reads for the lazy pager (stream/img_reader_int.h)  */
/* ------------------------------------------------------------------ */

int wps_image_read_groups(struct wps_image *img, unsigned int r, uint64_t g0,
			  uint64_t ng, void *buf, uint64_t *bad_group)
{
	return wps_image_read_groups_lane(img, WPS_IMG_LANE_BULK, r, g0, ng,
					  buf, bad_group);
}

struct wps_img_src *wps_image_source(struct wps_image *img)
{
	return img->src;
}

/* Blocks [*s, *e) of region r covered by groups [g0, g0 + ng), or
 * -EINVAL if those groups are not all in the region. */
static int group_span(const struct wps_image *img, unsigned int r,
		      uint64_t g0, uint64_t ng, uint64_t *s, uint64_t *e)
{
	uint32_t G = img->info.group_blocks;

	if (r >= img->info.nr_regions || !ng ||
	    g0 >= img->regions[r].nr_groups ||
	    ng > img->regions[r].nr_groups - g0)
		return -EINVAL;
	*s = g0 * G;
	*e = (g0 + ng) * G < img->regions[r].pub.nr_blocks ?
	     (g0 + ng) * G : img->regions[r].pub.nr_blocks;
	return 0;
}

int wps_image_read_groups_lane(struct wps_image *img, enum wps_img_lane lane,
			       unsigned int r, uint64_t g0, uint64_t ng,
			       void *buf, uint64_t *bad_group)
{
	const struct imgr_region *reg;
	uint32_t G = img->info.group_blocks;
	uint64_t s, e;
	uint8_t *out = buf;
	int err;

	if (group_span(img, r, g0, ng, &s, &e))
		return -EINVAL;
	reg = &img->regions[r];
	/* Nothing present: no I/O at all. */
	if (wps_bit_find(reg->bitmap, s, e, true) >= e) {
		memset(out, 0, (ng * G) << WPS_IMG_BLOCK_SHIFT);
		return 0;
	}
	err = wps_img_src_read(img->src, lane, out, (e - s) << WPS_IMG_BLOCK_SHIFT,
			       reg->data_offset + (s << WPS_IMG_BLOCK_SHIFT));
	if (err)
		return err;
	return wps_image_check_groups(img, r, g0, ng, buf, bad_group);
}

int wps_image_check_groups(struct wps_image *img, unsigned int r, uint64_t g0,
			   uint64_t ng, void *buf, uint64_t *bad_group)
{
	const struct imgr_region *reg;
	uint32_t G = img->info.group_blocks;
	uint64_t s, e, g;
	uint8_t *out = buf;
	int err;

	if (group_span(img, r, g0, ng, &s, &e))
		return -EINVAL;
	reg = &img->regions[r];
	/* The region's last group may be short: the rest of buf reads 0. */
	if (e - s < ng * G)
		memset(out + ((e - s) << WPS_IMG_BLOCK_SHIFT), 0,
		       (ng * G - (e - s)) << WPS_IMG_BLOCK_SHIFT);
	for (g = g0; g < g0 + ng; g++) {
		uint8_t *grp = out + (((g - g0) * G) << WPS_IMG_BLOCK_SHIFT);

		if (!(img->flags & WPS_IMG_OPEN_NO_VERIFY_DATA) &&
		    group_has_data(reg, g, G)) {
			err = check_group(img, r, g, grp);
			if (err) {
				if (bad_group)
					*bad_group = g;
				/* The groups before it are usable: clean. */
				zero_absent(reg, s, g * G, out);
				return err;
			}
		}
	}
	zero_absent(reg, s, e, out);
	return 0;
}

uint64_t wps_image_group_offset(const struct wps_image *img, unsigned int r,
				uint64_t g)
{
	return img->regions[r].data_offset +
	       ((g * img->info.group_blocks) << WPS_IMG_BLOCK_SHIFT);
}
