/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Eager restore: an image taken from the reference guest under writers is
 * loaded into fresh memory of the same backing and must equal the ledger
 * of the freeze block for block; holes must stay unpopulated; a damaged
 * block must be refused, not loaded.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "tests/unit/snaputil.h"
#include "tests/unit/testutil.h"
#include "guest/guest.h"

static struct rguest *fresh(enum rguest_backing b, uint64_t size)
{
	struct rguest_opts go = { .size = size, .backing = b, .threads = 1,
				     .pattern = RGUEST_IDLE };
	struct rguest *g;

	ck_assert_int_eq(rguest_new(&go, &g), 0);
	return g;
}

static const enum rguest_backing backings[] = {
	RGUEST_ANON, RGUEST_MEMFD, RGUEST_HUGETLB,
};

START_TEST(round_trip)
{
	enum rguest_backing b = backings[_i];
	struct rguest_hugepool hp = { 0 };
	struct wps_image_load_stats ls;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct rguest *g;
	struct wps_ctx *ctx;
	char path[512], why[256] = "";
	uint64_t bad;

	if (b == RGUEST_HUGETLB && rguest_hugepool_reserve(&hp, 64ull << 20)) {
		rguest_hugepool_release(&hp);
		TU_SKIP("hugetlb: %s", hp.why);
	}
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, b, 32 << 20, 60, path);
	g = fresh(b, 32 << 20);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_int_eq(wps_image_load(img, 0, rguest_mem(g), &ls), 0);
	ck_assert_uint_eq(ls.bytes, wps_image_get_region(img, 0)->present_blocks * 4096);
	ck_assert_msg(!rguest_ledger_verify_mem(l, rguest_mem(g), &bad, why,
					     sizeof(why)),
		      "restored memory differs: %s", why);
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	rguest_hugepool_release(&hp);
	wps_ctx_free(ctx);
}
END_TEST

/* Holes are skipped, not written as zeros: the restored guest's absent
 * blocks are still unpopulated. */
START_TEST(holes_stay_holes)
{
	const struct wps_image_region *ir;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct rguest *g;
	struct wps_ctx *ctx;
	char path[512];
	unsigned char *vec;
	uint64_t b, nb = (16 << 20) / 4096, holes = 0, resident_holes = 0;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, RGUEST_ANON, 16 << 20, 30, path);
	g = fresh(RGUEST_ANON, 16 << 20);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_int_eq(wps_image_load(img, 0, rguest_mem(g), NULL), 0);
	ir = wps_image_get_region(img, 0);
	ck_assert_uint_lt(ir->present_blocks, ir->nr_blocks);
	vec = malloc(nb);
	ck_assert_int_eq(mincore(rguest_mem(g), 16 << 20, vec), 0);
	for (b = 0; b < nb; b++) {
		if (wps_image_block_present(img, 0, b))
			continue;
		holes++;
		resident_holes += vec[b] & 1;
	}
	ck_assert_uint_gt(holes, 0);
	ck_assert_uint_eq(resident_holes, 0);
	free(vec);
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(damaged_block_refused)
{
	struct wps_image *img;
	struct rguest_ledger *l;
	struct rguest *g;
	struct wps_ctx *ctx;
	char path[512];
	uint64_t start, count, off;
	uint8_t byte;
	int fd;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, RGUEST_ANON, 16 << 20, 100, path);
	/* Flip a byte inside the 100th present block. */
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_int_eq(wps_image_next_extent(img, 0, 100, &start, &count), 0);
	wps_image_close(img);
	off = 2u << 20;  /* region 0's data starts at the first 2 MiB boundary */
	off += start * 4096 + 123;
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, off), 1);
	byte ^= 0xff;
	ck_assert_int_eq(pwrite(fd, &byte, 1, off), 1);
	close(fd);
	g = fresh(RGUEST_ANON, 16 << 20);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	tu_log_reset();
	ck_assert_int_eq(wps_image_load(img, 0, rguest_mem(g), NULL), -EBADMSG);
	ck_assert_msg(tu_logged("checksum mismatch"), "log: %s", tu_log_text());
	ck_assert_msg(tu_logged(path), "log does not name the file: %s",
		      tu_log_text());
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *restore_suite(void)
{
	Suite *s = suite_create("restore");
	TCase *tc = tcase_create("eager");

	tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, round_trip, 0,
			    sizeof(backings) / sizeof(backings[0]));
	tcase_add_test(tc, holes_stay_holes);
	tcase_add_test(tc, damaged_block_refused);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(restore_suite)
