/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Format v1 and its reader: layout rules, a hand-parse of an image that
 * follows docs/FORMAT.md rather than stream/format.h's helpers, round
 * trips of data, holes, bitmaps and blobs, and every kind of damage the
 * reader must refuse, with the errno and the message naming the offset.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/image.h>

#include "stream/format.h"
#include "stream/img_writer.h"
#include "tests/unit/testutil.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static struct wps_ctx *ctx;
static char tdir[PATH_MAX];
static char ipath[PATH_MAX + 32];

enum kind { ABSENT, ZERO, DATA };

#define NR_REG 3
static const struct wps_img_writer_region regs[NR_REG] = {
	{ 0x7f0000000000ull, 776 * 4096ull, 4096, 1, "ram-low" },
	{ 0x7f4000000000ull, 4ull << 20, 2u << 20, 3, "ram-huge" },
	{ 0x100000ull, 64 * 4096ull, 4096, 2, "never-touched" },
};

static enum kind kind(unsigned int r, uint64_t b)
{
	uint64_t h = tu_mix64(((uint64_t)r << 40) ^ b);

	/* A run crossing 64-bit words of the bitmap. */
	if (r == 0 && b >= 100 && b < 300)
		return DATA;
	if (r == 2 || h % 5 == 1)
		return ABSENT;
	if (h % 7 == 3)
		return ZERO;
	return DATA;
}

static void fill_block(unsigned int r, uint64_t b, uint8_t *p)
{
	uint64_t s = tu_mix64(((uint64_t)r << 48) ^ b ^ 0xabcdef), v;
	unsigned int i;

	for (i = 0; i < 4096; i += 8) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		v = s;
		memcpy(p + i, &v, 8);
	}
}

static uint8_t blob_a[1000];
static const char blob_long_name[] = "a-name-of-exactly-forty-seven-bytes-0123456789x";

/* Region r as the reader must return it. */
static uint8_t *expected(unsigned int r)
{
	uint64_t nb = regs[r].size / 4096, b;
	uint8_t *m = calloc(nb, 4096);

	ck_assert_ptr_nonnull(m);
	for (b = 0; b < nb; b++)
		if (kind(r, b) == DATA)
			fill_block(r, b, m + b * 4096);
	return m;
}

static uint64_t expected_present(unsigned int r)
{
	uint64_t b, n = 0;

	for (b = 0; b < regs[r].size / 4096; b++)
		n += kind(r, b) == DATA;
	return n;
}

/* Put every non-absent block, in runs of up to 16 blocks. */
static void write_image(const char *path, unsigned int flags)
{
	struct wps_img_writer_opts o = { .flags = flags };
	struct wps_img_writer *w;
	uint8_t *buf = malloc(16 * 4096);
	unsigned int r, i;

	ck_assert_ptr_nonnull(buf);
	memset(o.uuid, 0x5a, 16);
	memset(o.parent_uuid, 0xa5, 16);
	ck_assert_int_eq(wps_img_writer_open(ctx, path, regs, NR_REG, &o, &w), 0);
	wps_img_writer_set_instant(w, 1700000000123456789ll, 987654321ll);
	for (r = 0; r < NR_REG; r++) {
		uint64_t nb = regs[r].size / 4096, b = 0;

		while (b < nb) {
			uint64_t n = 0;

			while (b + n < nb && n < 16 && kind(r, b + n) != ABSENT) {
				if (kind(r, b + n) == DATA)
					fill_block(r, b + n, buf + n * 4096);
				else
					memset(buf + n * 4096, 0, 4096);
				n++;
			}
			if (n)
				ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, r,
								    b * 4096, buf,
								    n * 4096), 0);
			b += n ? n : 1;
		}
	}
	for (i = 0; i < sizeof(blob_a); i++)
		blob_a[i] = (uint8_t)tu_mix64(i);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "vmm-state", blob_a, sizeof(blob_a)), 0);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "empty", NULL, 0), 0);
	ck_assert_int_eq(wps_img_writer_add_blob(w, blob_long_name, "hello", 5), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_free(w);
	free(buf);
}

static void setup(void)
{
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
	strcpy(tdir, "/var/tmp/wps-fmt-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	snprintf(ipath, sizeof(ipath), "%s/img", tdir);
	write_image(ipath, 0);
	tu_log_reset();
}

static void teardown(void)
{
	tu_rmtree(tdir);
	wps_ctx_free(ctx);
}

static void pread_at(void *buf, size_t len, uint64_t off)
{
	int fd = open(ipath, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void pwrite_at(const void *buf, size_t len, uint64_t off)
{
	int fd = open(ipath, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void flip(uint64_t off)
{
	uint8_t c;

	pread_at(&c, 1, off);
	c ^= 0x10;
	pwrite_at(&c, 1, off);
}

static uint64_t u64_at(uint64_t off)
{
	uint64_t v;

	pread_at(&v, 8, off);
	return le64toh(v);
}

static uint32_t u32_at(uint64_t off)
{
	uint32_t v;

	pread_at(&v, 4, off);
	return le32toh(v);
}

/* Superblock / footer fields by their documented byte offsets. */
#define SB_TRAILER 88
#define SB_FOOTER 96
#define RE_DATA 32
#define RE_BITMAP 40
#define RE_CSUM 48

static uint64_t footer_off(void)
{
	return u64_at(SB_FOOTER);
}

/* Rewrite the crc of a 4 KiB block at off (superblock or footer). */
static void refresh_crc(uint64_t off)
{
	uint8_t b[4096];
	uint32_t c;

	pread_at(b, 4096, off);
	c = htole32(wps_crc32c(0, b, 4092));
	pwrite_at(&c, 4, off + 4092);
}

static int try_open(void)
{
	struct wps_image *img = NULL;
	int err = wps_image_open(ctx, ipath, 0, &img);

	if (!err)
		wps_image_close(img);
	else
		ck_assert_ptr_null(img);
	return err;
}

static void expect_refused(int err, const char *msg)
{
	int got = try_open();

	ck_assert_msg(got == err, "open returned %d, wanted %d; log:\n%s", got,
		      err, tu_log_text());
	ck_assert_msg(tu_logged(msg), "log lacks \"%s\":\n%s", msg, tu_log_text());
	ck_assert_msg(tu_logged(ipath), "log does not name the file:\n%s", tu_log_text());
}

/* ------------------------------------------------------------------ */
/* layout and round trip                                               */
/* ------------------------------------------------------------------ */

START_TEST(t_layout_rule)
{
	uint64_t sizes[3] = { 4096, 3ull << 20, 8192 };
	struct wps_img_layout_region lr[3];
	struct wps_img_layout l;

	ck_assert_int_eq(wps_img_layout(sizes, 3, 16, lr, &l), 0);
	ck_assert_uint_eq(l.meta_size, 8192);
	ck_assert_uint_eq(lr[0].data_offset, 2u << 20);
	ck_assert_uint_eq(lr[1].data_offset, 4u << 20);
	ck_assert_uint_eq(lr[2].data_offset, 8u << 20);
	ck_assert_uint_eq(l.trailer_offset, (8u << 20) + 8192);
	ck_assert_uint_eq(lr[0].bitmap_offset, l.trailer_offset);
	ck_assert_uint_eq(lr[0].csum_offset, l.trailer_offset + 4096);
	ck_assert_uint_eq(lr[1].bitmap_offset, l.trailer_offset + 8192);
	/* 768 blocks: 96 bitmap bytes, 48 groups: one block each. */
	ck_assert_uint_eq(lr[1].csum_offset, l.trailer_offset + 12288);
	ck_assert_uint_eq(l.blob_table_offset, l.trailer_offset + 6 * 4096);
	ck_assert_uint_eq(wps_img_meta_size(32), 8192);
	ck_assert_uint_eq(wps_img_meta_size(33), 12288);
	ck_assert_uint_eq(wps_img_blob_data_start(4096, 3), 4096 + 216);
	ck_assert_uint_eq(wps_img_blob_data_start(4096, 1), 4096 + 72);
}
END_TEST

/* Parse by documented offsets only, as an independent reader would. */
START_TEST(t_hand_parse)
{
	uint8_t sb[4096], ft[4096], blk[4096];
	uint64_t toff, foff, data, bm, cs, b, g;
	struct stat st;
	uint32_t x = 0, h;

	pread_at(sb, 4096, 0);
	ck_assert_mem_eq(sb, "WPSNAPIM", 8);
	ck_assert_uint_eq(u32_at(8), 1);
	ck_assert_uint_eq(u32_at(48), 4096);
	ck_assert_uint_eq(u32_at(52), 16);
	ck_assert_uint_eq(u32_at(56), NR_REG);
	ck_assert_uint_eq(u64_at(64), 1700000000123456789ull);
	ck_assert_uint_eq(u64_at(80), 8192);
	ck_assert_uint_eq(u32_at(4092), wps_crc32c(0, sb, 4092));
	toff = u64_at(SB_TRAILER);
	foff = u64_at(SB_FOOTER);
	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, foff + 4096);
	pread_at(ft, 4096, foff);
	ck_assert_mem_eq(ft, "WPSNAPFT", 8);
	ck_assert_mem_eq(ft + 16, sb + 16, 16);
	ck_assert_uint_eq(u32_at(foff + 12) & 1, 1);
	ck_assert_uint_eq(u32_at(foff + 4092), wps_crc32c(0, ft, 4092));
	ck_assert_uint_eq(u64_at(foff + 32), toff);
	ck_assert_uint_eq(u64_at(foff + 72),
			  expected_present(0) + expected_present(1));

	/* Region 0 entry at 4096. */
	pread_at(blk, 128, 4096);
	ck_assert_str_eq((char *)blk + 64, "ram-low");
	data = u64_at(4096 + RE_DATA);
	bm = u64_at(4096 + RE_BITMAP);
	cs = u64_at(4096 + RE_CSUM);
	ck_assert_uint_eq(data, 2u << 20);
	ck_assert_uint_eq(bm, toff);
	/* Group 7 checksum: XOR over present blocks of
	 * fmix32(crc32c(le64(b) || block)), fmix32 spelled out here. */
	g = 7;
	for (b = g * 16; b < g * 16 + 16; b++) {
		uint8_t byte;
		uint64_t le = htole64(b);

		pread_at(&byte, 1, bm + b / 8);
		ck_assert_uint_eq((byte >> (b % 8)) & 1, kind(0, b) == DATA);
		if (!(byte >> (b % 8) & 1))
			continue;
		pread_at(blk, 4096, data + b * 4096);
		h = wps_crc32c(wps_crc32c(0, &le, 8), blk, 4096);
		h ^= h >> 16;
		h *= 0x85ebca6bu;
		h ^= h >> 13;
		h *= 0xc2b2ae35u;
		h ^= h >> 16;
		x ^= h;
	}
	ck_assert_uint_ne(x, 0);
	ck_assert_uint_eq(u32_at(cs + g * 4), x);
}
END_TEST

START_TEST(t_roundtrip)
{
	const struct wps_image_info *info;
	struct wps_image *img;
	unsigned int r;
	struct stat st;
	uint64_t bad = 0;

	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	info = wps_image_get_info(img);
	ck_assert_uint_eq(info->version, 1);
	ck_assert_uint_eq(info->nr_regions, NR_REG);
	ck_assert_uint_eq(info->block_size, 4096);
	ck_assert_uint_eq(info->group_blocks, 16);
	ck_assert_uint_eq(info->nr_blobs, 3);
	ck_assert_int_eq(info->freeze_realtime_ns, 1700000000123456789ll);
	ck_assert_int_eq(info->freeze_monotonic_ns, 987654321ll);
	ck_assert_uint_eq(info->uuid[0], 0x5a);
	ck_assert_uint_eq(info->parent_uuid[15], 0xa5);
	ck_assert(info->complete);
	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_uint_eq(info->file_size, (uint64_t)st.st_size);
	ck_assert_uint_eq(info->present_blocks,
			  expected_present(0) + expected_present(1));
	ck_assert_uint_eq(info->data_bytes, info->present_blocks * 4096);
	ck_assert_ptr_null(wps_image_get_region(img, NR_REG));

	for (r = 0; r < NR_REG; r++) {
		const struct wps_image_region *ir = wps_image_get_region(img, r);
		uint8_t *want = expected(r), *got = malloc(regs[r].size);
		uint64_t off;

		ck_assert_ptr_nonnull(got);
		ck_assert_uint_eq(ir->host_addr, regs[r].host_addr);
		ck_assert_uint_eq(ir->size, regs[r].size);
		ck_assert_uint_eq(ir->page_size, regs[r].page_size);
		ck_assert_uint_eq(ir->backing, regs[r].backing);
		ck_assert_str_eq(ir->name, regs[r].name);
		ck_assert_uint_eq(ir->nr_blocks, regs[r].size / 4096);
		ck_assert_uint_eq(ir->present_blocks, expected_present(r));
		/* Whole region at once, then odd pieces crossing groups. */
		memset(got, 0xee, regs[r].size);
		ck_assert_int_eq(wps_image_read(img, r, 0, got, regs[r].size), 0);
		ck_assert(!memcmp(got, want, regs[r].size));
		memset(got, 0xee, regs[r].size);
		for (off = 0; off < regs[r].size;) {
			uint64_t n = (1 + tu_mix64(off) % 37) * 4096;

			if (n > regs[r].size - off)
				n = regs[r].size - off;
			ck_assert_int_eq(wps_image_read(img, r, off, got + off, n), 0);
			off += n;
		}
		ck_assert(!memcmp(got, want, regs[r].size));
		free(got);
		free(want);
	}
	ck_assert_int_eq(wps_image_verify(img, &bad), 0);
	{
		uint8_t b4[4096];

		ck_assert_int_eq(wps_image_read(img, 0, 100, b4, 4096), -EINVAL);
		ck_assert_int_eq(wps_image_read(img, 0, 0, b4, 100), -EINVAL);
		ck_assert_int_eq(wps_image_read(img, 0, regs[0].size, b4, 4096), -EINVAL);
		ck_assert_int_eq(wps_image_read(img, NR_REG, 0, b4, 4096), -EINVAL);
	}
	wps_image_close(img);
	/* Sparse: the file allocates about the present data, not the
	 * address space of the regions. */
	ck_assert_uint_lt((uint64_t)st.st_blocks * 512,
			  (expected_present(0) + expected_present(1)) * 4096 + (1u << 20));
}
END_TEST

START_TEST(t_bitmap_extents)
{
	struct wps_image *img;
	unsigned int r;

	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	for (r = 0; r < NR_REG; r++) {
		uint64_t nb = regs[r].size / 4096, b, from = 0, s, n, seen = 0;
		uint64_t runs = 0;

		for (b = 0; b < nb; b++)
			ck_assert_int_eq(wps_image_block_present(img, r, b),
					 kind(r, b) == DATA);
		ck_assert_int_eq(wps_image_block_present(img, r, nb), -EINVAL);
		while (wps_image_next_extent(img, r, from, &s, &n) == 0) {
			ck_assert_uint_ge(s, from);
			ck_assert_uint_gt(n, 0);
			for (b = from; b < s; b++)
				ck_assert(kind(r, b) != DATA);
			for (b = s; b < s + n; b++)
				ck_assert(kind(r, b) == DATA);
			ck_assert(s + n == nb || kind(r, s + n) != DATA);
			seen += n;
			runs++;
			from = s + n;
		}
		ck_assert_uint_eq(seen, expected_present(r));
		if (r == 0) {
			/* Blocks 100..299 are one run, crossing words. */
			ck_assert_int_eq(wps_image_next_extent(img, 0, 150, &s, &n), 0);
			ck_assert_uint_eq(s, 150);
			ck_assert_uint_ge(s + n, 300);
			ck_assert_uint_gt(runs, 10);
		}
		ck_assert_int_eq(wps_image_next_extent(img, r, nb, &s, &n), -ENOENT);
	}
	ck_assert_int_eq(wps_image_next_extent(img, 2, 0, &(uint64_t){ 0 },
					       &(uint64_t){ 0 }), -ENOENT);
	ck_assert_int_eq(wps_image_next_extent(img, NR_REG, 0, &(uint64_t){ 0 },
					       &(uint64_t){ 0 }), -EINVAL);
	wps_image_close(img);
}
END_TEST

START_TEST(t_blobs)
{
	struct wps_image *img;
	const char *name;
	const void *data;
	size_t len;

	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	ck_assert_int_eq(wps_image_get_blob(img, 0, &name, &data, &len), 0);
	ck_assert_str_eq(name, "vmm-state");
	ck_assert_uint_eq(len, sizeof(blob_a));
	ck_assert(!memcmp(data, blob_a, len));
	ck_assert_int_eq(wps_image_get_blob(img, 1, &name, &data, &len), 0);
	ck_assert_str_eq(name, "empty");
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(wps_image_get_blob(img, 2, &name, &data, &len), 0);
	ck_assert_str_eq(name, blob_long_name);
	ck_assert_uint_eq(len, 5);
	ck_assert(!memcmp(data, "hello", 5));
	ck_assert_uint_eq((uintptr_t)data % 8, 0);
	ck_assert_int_eq(wps_image_get_blob(img, 3, &name, &data, &len), -EINVAL);
	wps_image_close(img);
}
END_TEST

/* ------------------------------------------------------------------ */
/* damage                                                              */
/* ------------------------------------------------------------------ */

START_TEST(t_bad_superblock)
{
	flip(20); /* uuid */
	expect_refused(-EBADMSG, "superblock checksum mismatch at offset 4092");
}
END_TEST

START_TEST(t_bad_magic)
{
	pwrite_at("WPSNAPXX", 8, 0);
	expect_refused(-EPROTO, "bad magic at offset 0");
}
END_TEST

START_TEST(t_bad_version)
{
	uint32_t v = htole32(2);

	pwrite_at(&v, 4, 8);
	expect_refused(-EPROTO, "format version 2");
	refresh_crc(0);
	tu_log_reset();
	expect_refused(-EPROTO, "format version 2");
}
END_TEST

START_TEST(t_bad_region_table)
{
	flip(4096 + 128 + 10); /* region 1 size */
	expect_refused(-EBADMSG, "region table checksum mismatch (offsets 4096 to 8192");
}
END_TEST

START_TEST(t_blank_superblock)
{
	static const uint8_t z[4096];

	pwrite_at(z, 4096, 0);
	expect_refused(-EBADMSG, "partial image");
}
END_TEST

START_TEST(t_bad_footer)
{
	uint64_t f = footer_off();
	char want[128];

	flip(f + 60);
	snprintf(want, sizeof(want), "footer checksum mismatch at offset %llu",
		 (unsigned long long)(f + 4092));
	expect_refused(-EBADMSG, want);
}
END_TEST

START_TEST(t_footer_deleted)
{
	uint64_t f = footer_off();
	char want[128];

	ck_assert_int_eq(truncate(ipath, (off_t)f), 0);
	snprintf(want, sizeof(want),
		 "footer missing at offset %llu: snapshot did not complete",
		 (unsigned long long)f);
	expect_refused(-EBADMSG, want);
}
END_TEST

START_TEST(t_footer_zeroed)
{
	static const uint8_t z[4096];

	pwrite_at(z, 4096, footer_off());
	expect_refused(-EBADMSG, "partial image");
}
END_TEST

START_TEST(t_footer_incomplete)
{
	uint64_t f = footer_off();
	uint32_t fl = 0;

	pwrite_at(&fl, 4, f + 12);
	refresh_crc(f);
	expect_refused(-EBADMSG, "not marked complete");
}
END_TEST

START_TEST(t_footer_other_uuid)
{
	uint64_t f = footer_off();

	flip(f + 16);
	refresh_crc(f);
	expect_refused(-EBADMSG, "belongs to another image");
}
END_TEST

START_TEST(t_truncated)
{
	struct stat st;

	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_int_eq(truncate(ipath, st.st_size - 100), 0);
	expect_refused(-EBADMSG, "truncated");
	tu_log_reset();
	ck_assert_int_eq(truncate(ipath, 3 << 20), 0);
	expect_refused(-EBADMSG, "truncated");
	tu_log_reset();
	ck_assert_int_eq(truncate(ipath, 100), 0);
	expect_refused(-EBADMSG, "truncated");
}
END_TEST

START_TEST(t_trailing_bytes)
{
	struct stat st;

	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_int_eq(truncate(ipath, st.st_size + 4096), 0);
	expect_refused(-EBADMSG, "data after the footer");
}
END_TEST

START_TEST(t_bad_bitmap)
{
	flip(u64_at(4096 + RE_BITMAP) + 3);
	expect_refused(-EBADMSG, "trailer checksum mismatch");
}
END_TEST

START_TEST(t_bad_csum_table)
{
	flip(u64_at(4096 + 128 + RE_CSUM) + 5);
	expect_refused(-EBADMSG, "trailer checksum mismatch");
}
END_TEST

START_TEST(t_bad_blob)
{
	/* The last byte of the trailer holds blob data or its padding. */
	flip(footer_off() - 1);
	expect_refused(-EBADMSG, "trailer checksum mismatch");
}
END_TEST

static uint64_t first_data_block(unsigned int r, uint64_t from)
{
	uint64_t b;

	for (b = from; kind(r, b) != DATA; b++)
		;
	return b;
}

START_TEST(t_bad_data)
{
	uint64_t data = u64_at(4096 + 128 + RE_DATA); /* region 1 */
	uint64_t b = first_data_block(1, 40), grp = data + (b / 16) * 16 * 4096;
	uint64_t other = first_data_block(1, (b / 16 + 1) * 16);
	uint8_t *buf = malloc(1 << 20), *want = expected(1);
	struct wps_image *img;
	char msg[128];
	uint64_t bad = 0;

	ck_assert_ptr_nonnull(buf);
	flip(data + b * 4096 + 777);
	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	snprintf(msg, sizeof(msg), "at offset %llu", (unsigned long long)grp);
	/* Reading the damaged block itself, or a neighbour in its group. */
	ck_assert_int_eq(wps_image_read(img, 1, b * 4096, buf, 4096), -EBADMSG);
	ck_assert_msg(tu_logged(msg), "log lacks \"%s\":\n%s", msg, tu_log_text());
	ck_assert(tu_logged(ipath));
	tu_log_reset();
	ck_assert_int_eq(wps_image_read(img, 1, (b / 16) * 16 * 4096 +
					(b % 16 == 15 ? 0 : 15 * 4096), buf, 4096),
			 -EBADMSG);
	ck_assert(tu_logged(msg));
	ck_assert_int_eq(wps_image_read(img, 1, 0, buf, 1 << 20), -EBADMSG);
	/* Other groups still read fine. */
	ck_assert_int_eq(wps_image_read(img, 1, other * 4096, buf, 4096), 0);
	ck_assert(!memcmp(buf, want + other * 4096, 4096));
	ck_assert_int_eq(wps_image_verify(img, &bad), -EBADMSG);
	ck_assert_uint_eq(bad, grp);
	wps_image_close(img);

	/* Without verification the damaged bytes come through. */
	ck_assert_int_eq(wps_image_open(ctx, ipath, WPS_IMG_OPEN_NO_VERIFY_DATA, &img), 0);
	ck_assert_int_eq(wps_image_read(img, 1, b * 4096, buf, 4096), 0);
	ck_assert(memcmp(buf, want + b * 4096, 4096));
	ck_assert_uint_eq(buf[777] ^ want[b * 4096 + 777], 0x10);
	wps_image_close(img);
	free(buf);
	free(want);
}
END_TEST

/* Two blocks of one group swapped: every byte is a genuine block, only
 * the place is wrong; the block index in the checksum catches it. */
START_TEST(t_swapped_blocks)
{
	uint64_t data = u64_at(4096 + RE_DATA);
	uint64_t b1 = 100, b2 = 107; /* inside the forced run of data */
	uint8_t x1[4096], x2[4096];
	struct wps_image *img;
	uint64_t bad;

	ck_assert_uint_eq(b1 / 16, b2 / 16);
	pread_at(x1, 4096, data + b1 * 4096);
	pread_at(x2, 4096, data + b2 * 4096);
	pwrite_at(x2, 4096, data + b1 * 4096);
	pwrite_at(x1, 4096, data + b2 * 4096);
	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	ck_assert_int_eq(wps_image_verify(img, &bad), -EBADMSG);
	ck_assert_uint_eq(bad, data + (b1 / 16) * 16 * 4096);
	wps_image_close(img);
}
END_TEST

START_TEST(t_not_found)
{
	struct wps_image *img = (void *)1;

	strcat(ipath, ".nope");
	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), -ENOENT);
	ck_assert_ptr_null(img);
	ck_assert(tu_logged(ipath));
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("format");
	TCase *tc = tcase_create("image");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_layout_rule);
	tcase_add_test(tc, t_hand_parse);
	tcase_add_test(tc, t_roundtrip);
	tcase_add_test(tc, t_bitmap_extents);
	tcase_add_test(tc, t_blobs);
	tcase_add_test(tc, t_bad_superblock);
	tcase_add_test(tc, t_bad_magic);
	tcase_add_test(tc, t_bad_version);
	tcase_add_test(tc, t_bad_region_table);
	tcase_add_test(tc, t_blank_superblock);
	tcase_add_test(tc, t_bad_footer);
	tcase_add_test(tc, t_footer_deleted);
	tcase_add_test(tc, t_footer_zeroed);
	tcase_add_test(tc, t_footer_incomplete);
	tcase_add_test(tc, t_footer_other_uuid);
	tcase_add_test(tc, t_truncated);
	tcase_add_test(tc, t_trailing_bytes);
	tcase_add_test(tc, t_bad_bitmap);
	tcase_add_test(tc, t_bad_csum_table);
	tcase_add_test(tc, t_bad_blob);
	tcase_add_test(tc, t_bad_data);
	tcase_add_test(tc, t_swapped_blocks);
	tcase_add_test(tc, t_not_found);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
