/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Seed generator for the fuzz corpora (`make fuzz-seeds`; the results are
 * checked in under tests/fuzz/corpus/). Every seed is what the real
 * writers produce (image writer, ledger writer, working-set writer), so
 * the fuzzers start from valid files; images are small (a few 4 KiB
 * blocks per region) and stored in the sparse encoding of fuzzutil.h.
 *
 * Usage: gen_seeds OUTDIR (OUTDIR/TARGET/ must exist).
 */
#include "config.h"

#include <endian.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/qemu.h>
#include <wpsnap/wset.h>

#include "stream/format.h"
#include "stream/img_writer.h"
#include "tests/fuzz/fuzzutil.h"
#include "guest/guest.h"
#include "guest/guest_int.h"
#include "tests/unit/qemu_sample.h"

static const char *out;

/* A working set of n (region, block, count) ranges. */
static int wset_of(const uint64_t (*r)[3], unsigned int n, struct wps_wset **ws)
{
	unsigned int i;
	int ret = wps_wset_new(NULL, ws);

	for (i = 0; !ret && i < n; i++)
		ret = wps_wset_add(*ws, (uint32_t)r[i][0], r[i][1], r[i][2]);
	return ret;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "gen_seeds: %s: %s\n", what, strerror(-err));
	exit(1);
}

static void save(const char *target, const char *name, const void *p,
		 size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", out, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f))
		die(path, -5);
}

/* An image of nr regions of blocks[i] 4 KiB blocks each, block b of every
 * region holding a short pattern when b % 2 == 0; blobs as given. */
static void image(const char *path, unsigned int nr, const uint64_t *blocks,
		  const uint8_t *parent, const char *parent_name,
		  const char *const *blobs, uint8_t uuid_out[16])
{
	struct wps_img_writer_region reg[4] = { { 0 } };
	struct wps_img_writer_opts o = { .flags = WPS_IMGW_NO_DIRECT | WPS_IMGW_OVERWRITE };
	struct wps_img_writer *w;
	uint8_t blk[4096] = { 0 };
	unsigned int i;
	uint64_t b;
	int ret;

	for (i = 0; i < nr; i++) {
		reg[i].host_addr = 0x7f0000000000ull + i * 0x100000ull;
		reg[i].size = blocks[i] * 4096;
		reg[i].page_size = 4096;
		reg[i].backing = WPS_BACKING_ANON;
		snprintf(reg[i].name, sizeof(reg[i].name), "ram%u", i);
	}
	if (parent)
		memcpy(o.parent_uuid, parent, 16);
	ret = wps_img_writer_open(fz_ctx(), path, reg, nr, &o, &w);
	if (ret)
		die(path, ret);
	wps_img_writer_set_instant(w, 1700000000000000000ll, 1000000000ll);
	for (i = 0; i < nr && !ret; i++)
		for (b = 0; b < blocks[i] && !ret; b += 2) {
			snprintf((char *)blk, 32, "region %u block %llu", i,
				 (unsigned long long)b);
			ret = wps_img_writer_put(w, WPS_LANE_SWEEP, i, b * 4096, blk, 4096);
		}
	if (!ret && parent_name)
		ret = wps_img_writer_add_blob(w, "wpsnap.parent", parent_name,
					      strlen(parent_name));
	for (i = 0; blobs && blobs[i] && !ret; i += 2)
		ret = wps_img_writer_add_blob(w, blobs[i], blobs[i + 1],
					      strlen(blobs[i + 1]));
	if (!ret && blobs) {
		/* the pages written during the snapshot (docs/FORMAT.md 10.1),
		 * encoded by the working-set code itself */
		static const uint64_t rs[][3] = { { 0, 2, 1 }, { 1, 0, 2 } };
		struct wps_wset *ws = NULL;
		size_t wlen;
		void *wbuf;

		ret = wset_of(rs, 2, &ws);
		if (!ret)
			ret = wps_wset_encode(ws, &wbuf, &wlen);
		wps_wset_free(ws);
		if (!ret) {
			ret = wps_img_writer_add_blob(w, WPS_WSET_BLOB, wbuf, wlen);
			free(wbuf);
		}
	}
	if (!ret)
		ret = wps_img_writer_commit(w);
	if (ret)
		die(path, ret);
	memcpy(uuid_out, wps_img_writer_uuid(w), 16);
	wps_img_writer_free(w);
}

/* The sparse encoding of the file at path, with the FZ_FIX_CRC flag. */
static uint8_t *encode(const char *path, size_t *len)
{
	uint8_t *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		die(path, -2);
	ret = fz_sparse_encode(fd, FZ_FIX_CRC, &p, len);
	close(fd);
	if (ret)
		die(path, ret);
	return p;
}

static void images(void)
{
	static const char *const blobs[] = { "device-state", "{\"cpu\":0}",
		"note", "hello", NULL };
	const uint64_t one[] = { 4 }, two[] = { 3, 5 };
	uint8_t u0[16], u1[16], u2[16], *a, *b, *c, *cat;
	char p0[256], p1[256], p2[256];
	size_t la, lb, lc;
	const char *dir = fz_dir();

	snprintf(p0, sizeof(p0), "%s/img0", dir);
	snprintf(p1, sizeof(p1), "%s/img1", dir);
	snprintf(p2, sizeof(p2), "%s/img2", dir);

	image(p0, 1, one, NULL, NULL, NULL, u0);
	a = encode(p0, &la);
	save("image", "one-region", a, la);
	free(a);

	image(p0, 2, two, NULL, NULL, blobs, u0);
	a = encode(p0, &la);
	save("image", "two-regions-blobs", a, la);
	free(a);


	/* chain: full img0, img1 on it, img2 on img1 */
	image(p0, 2, two, NULL, NULL, NULL, u0);
	image(p1, 2, two, u0, "img0", NULL, u1);
	image(p2, 2, two, u1, "img1", NULL, u2);
	a = encode(p0, &la);
	b = encode(p1, &lb);
	c = encode(p2, &lc);
	save("chain", "full-only", a, la);
	cat = malloc(la + lb + lc + 2 * FZ_SEP_LEN);
	if (!cat)
		die("malloc", -12);
	memcpy(cat, a, la);
	memcpy(cat + la, FZ_SEP, FZ_SEP_LEN);
	memcpy(cat + la + FZ_SEP_LEN, b, lb);
	save("chain", "two", cat, la + FZ_SEP_LEN + lb);
	memcpy(cat + la + FZ_SEP_LEN + lb, FZ_SEP, FZ_SEP_LEN);
	memcpy(cat + la + 2 * FZ_SEP_LEN + lb, c, lc);
	save("chain", "three", cat, la + lb + lc + 2 * FZ_SEP_LEN);
	free(cat);
	free(a);
	free(b);
	free(c);
	unlink(p0);
	unlink(p1);
	unlink(p2);
}

/*
 * Hostile images for the image target: the structural lies of
 * tests/unit/test_hostile.c, each applied to a fresh valid image by the
 * real writer. The seeds keep the FZ_FIX_CRC flag, so the fuzzer's first
 * run of each gets past the checksums to the lie; that the reader refuses
 * every one (checksums fixed) is checked here, or no seed is written.
 */
static void hostile_nr_blobs(int fd, struct wps_img_super *sb,
			     struct wps_img_footer *ft)
{
	(void)fd; (void)sb;
	ft->nr_blobs = htole32(1);   /* it has 3 */
}

static void hostile_blob_table_8(int fd, struct wps_img_super *sb,
				 struct wps_img_footer *ft)
{
	(void)fd; (void)sb;
	ft->blob_table_offset = htole64(le64toh(ft->blob_table_offset) + 8);
}

/* blob entry 1 takes blob entry 0's name (or, with huge, a length that
 * wraps) */
static void blob_ent(int fd, const struct wps_img_footer *ft, bool huge)
{
	struct wps_img_blob_ent be[2];
	off_t at = (off_t)le64toh(ft->blob_table_offset);

	if (pread(fd, be, sizeof(be), at) != (ssize_t)sizeof(be))
		die("blob table", -5);
	if (huge)
		be[1].length = htole64(UINT64_MAX - 4);
	else
		memcpy(be[1].name, be[0].name, sizeof(be[1].name));
	if (pwrite(fd, be, sizeof(be), at) != (ssize_t)sizeof(be))
		die("blob table", -5);
}

static void hostile_dup_names(int fd, struct wps_img_super *sb,
			      struct wps_img_footer *ft)
{
	(void)sb;
	blob_ent(fd, ft, false);
}

static void hostile_blob_huge(int fd, struct wps_img_super *sb,
			      struct wps_img_footer *ft)
{
	(void)sb;
	blob_ent(fd, ft, true);
}

static void hostile_page_3000(int fd, struct wps_img_super *sb,
			      struct wps_img_footer *ft)
{
	struct wps_img_region_ent re;

	(void)sb; (void)ft;
	if (pread(fd, &re, sizeof(re), 4096) != (ssize_t)sizeof(re))
		die("region table", -5);
	re.page_size = htole32(3000);
	if (pwrite(fd, &re, sizeof(re), 4096) != (ssize_t)sizeof(re))
		die("region table", -5);
}

/* The footer (and the file's end) where the blob table must start, less
 * a block: the checksum table then runs into it (issue 12, item 2). */
static void hostile_footer_early(int fd, struct wps_img_super *sb,
				 struct wps_img_footer *ft)
{
	uint64_t foff = le64toh(ft->blob_table_offset) - 4096;

	sb->footer_offset = htole64(foff);
	ft->footer_offset = htole64(foff);
	ft->trailer_size = htole64(foff - le64toh(ft->trailer_offset));
	ft->nr_blobs = 0;
	ft->blob_table_offset = htole64(foff);
	if (ftruncate(fd, (off_t)(foff + sizeof(*ft))))
		die("ftruncate", -5);
}

static void hostile(void)
{
	static const char *const blobs[] = { "device-state", "{\"cpu\":0}",
		"note", "hello", NULL };
	static const struct {
		const char *name;
		void (*lie)(int fd, struct wps_img_super *sb, struct wps_img_footer *ft);
	} m[] = {
		{ "hostile-nr-blobs", hostile_nr_blobs },
		{ "hostile-blob-table-plus-8", hostile_blob_table_8 },
		{ "hostile-duplicate-blob-names", hostile_dup_names },
		{ "hostile-blob-length-wraps", hostile_blob_huge },
		{ "hostile-page-size-3000", hostile_page_3000 },
		{ "hostile-footer-before-blob-table", hostile_footer_early },
	};
	const uint64_t blocks[] = { 4 };
	struct wps_img_super sb;
	struct wps_img_footer ft;
	struct wps_image *img;
	uint8_t u[16], *enc;
	size_t len, i;
	char p[256];
	off_t foff;
	int fd;

	snprintf(p, sizeof(p), "%s/hostile", fz_dir());
	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		image(p, 1, blocks, NULL, NULL, blobs, u);
		fd = open(p, O_RDWR | O_CLOEXEC);
		if (fd < 0 || pread(fd, &sb, sizeof(sb), 0) != (ssize_t)sizeof(sb))
			die(p, -5);
		foff = (off_t)le64toh(sb.footer_offset);
		if (pread(fd, &ft, sizeof(ft), foff) != (ssize_t)sizeof(ft))
			die(p, -5);
		m[i].lie(fd, &sb, &ft);
		if (pwrite(fd, &sb, sizeof(sb), 0) != (ssize_t)sizeof(sb) ||
		    pwrite(fd, &ft, sizeof(ft), (off_t)le64toh(sb.footer_offset)) !=
		    (ssize_t)sizeof(ft))
			die(p, -5);
		if (fz_sparse_encode(fd, FZ_FIX_CRC, &enc, &len))
			die(p, -5);
		fz_image_fix_crc(fd);     /* what the fuzzer's run will see */
		close(fd);
		if (!wps_image_open(fz_ctx(), p, 0, &img)) {
			fprintf(stderr, "gen_seeds: %s opens: not hostile\n", m[i].name);
			exit(1);
		}
		save("image", m[i].name, enc, len);
		free(enc);
	}
	unlink(p);
}

/* The layout of tests/unit/test_qemu.c's round trip, as the writer
 * formats it. */
static void qemu_layouts(void)
{
	char *json;
	int ret = wps_qemu_layout_format(fz_ctx(), &sample, &json);

	if (ret)
		die("qemu layout", ret);
	save("qemu_layout", "pc-sample", json, strlen(json));
	free(json);
}

static void file_seed(const char *target, const char *name, const char *path)
{
	uint8_t buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die(path, -2);
	buf[0] = FZ_FIX_CRC;
	n = read(fd, buf + 1, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		die(path, -5);
	save(target, name, buf, (size_t)n + 1);
	unlink(path);
}

static void ledgers(void)
{
	struct rguest_ledger *l;
	char p[256];
	uint64_t b;
	int ret;

	snprintf(p, sizeof(p), "%s/ledger", fz_dir());
	ret = rguest_ledger_alloc(8, &l);
	if (ret)
		die("ledger", ret);
	for (b = 0; b < 8; b++)
		l->gen[b] = (uint32_t)(b * 3);
	ret = rguest_ledger_write(l, p);
	rguest_ledger_free(l);
	if (ret)
		die(p, ret);
	file_seed("ledger", "eight-blocks", p);
}

static void wsets(void)
{
	static const uint64_t rs[][3] = { { 0, 2, 2 }, { 1, 0, 1 }, { 0, 100, 7 } };
	struct wps_wset *ws = NULL;
	char p[256];
	int ret;

	snprintf(p, sizeof(p), "%s/x.wset", fz_dir());
	ret = wset_of(rs, 3, &ws);
	if (!ret)
		ret = wps_wset_save(fz_ctx(), p, ws);
	wps_wset_free(ws);
	if (ret)
		die(p, ret);
	file_seed("wset", "three-ranges", p);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_seeds OUTDIR\n");
		return 2;
	}
	out = argv[1];
	images();
	hostile();
	qemu_layouts();
	ledgers();
	wsets();
	return 0;
}
