/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Working sets (src/wset.c, the engine's written-page record, the pager's
 * fault order): the .wset file survives a round trip, a file of another
 * image is ignored, damage is detected; a snapshot under writers records
 * only pages the guest wrote after the freeze; a lazy restore records
 * exactly its first faults, and a second restore of the same image with
 * that record has the working set in memory before most of the rest, and
 * takes no fault on it. All content is checked against the ledger.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wpsnap.h>
#include <wpsnap/wset.h>

#include "tests/unit/snaputil.h"
#include "tests/unit/testutil.h"
#include "guest/guest.h"

static const uint8_t uuid_a[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
				    13, 14, 15, 16 };
static const uint8_t uuid_b[16] = { 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
				    5, 4, 3, 2, 1 };

/* A set of three ranges over two regions (the middle one coalesced). */
static struct wps_wset *sample(void)
{
	struct wps_wset *ws;

	ck_assert_int_eq(wps_wset_new(uuid_a, &ws), 0);
	ck_assert_int_eq(wps_wset_add(ws, 0, 100, 4), 0);
	ck_assert_int_eq(wps_wset_add(ws, 0, 104, 2), 0);   /* continues */
	ck_assert_int_eq(wps_wset_add(ws, 1, 7, 1), 0);
	ck_assert_int_eq(wps_wset_add(ws, 0, 3, 16), 0);
	ck_assert_uint_eq(ws->nr, 3);
	ck_assert_uint_eq(ws->ranges[0].count, 6);
	return ws;
}

static void path_of(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tu_dir, name);
}

START_TEST(file_round_trip)
{
	struct wps_pager_range *pr = NULL;
	struct wps_wset *ws = sample(), *back;
	unsigned int nr = 0;
	struct wps_ctx *ctx;
	char p[512], img[512];
	struct stat st;
	size_t i;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	path_of(img, sizeof(img), "guest.wpsnap");
	ck_assert_int_eq(wps_wset_path(img, p, sizeof(p)), 0);
	ck_assert_str_eq(p + strlen(p) - 17, "guest.wpsnap.wset");
	ck_assert_int_eq(wps_wset_path(img, p, 10), -ENAMETOOLONG);
	ck_assert_int_eq(wps_wset_path(img, p, sizeof(p)), 0);
	ck_assert_int_eq(wps_wset_load(ctx, p, uuid_a, &back), -ENOENT);
	ws->truncated = true;
	ck_assert_int_eq(wps_wset_save(ctx, p, ws), 0);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_size, 64 + 3 * 24);
	ck_assert_int_eq(wps_wset_load(ctx, p, uuid_a, &back), 0);
	ck_assert(!memcmp(back->uuid, uuid_a, 16));
	ck_assert_uint_eq(back->nr, ws->nr);
	ck_assert(back->truncated);
	for (i = 0; i < ws->nr; i++) {
		ck_assert_uint_eq(back->ranges[i].region, ws->ranges[i].region);
		ck_assert_uint_eq(back->ranges[i].block, ws->ranges[i].block);
		ck_assert_uint_eq(back->ranges[i].count, ws->ranges[i].count);
	}
	/* Overwrite in place: the new set replaces the old one whole. */
	ws->nr = 1;
	ws->truncated = false;
	ck_assert_int_eq(wps_wset_save(ctx, p, ws), 0);
	wps_wset_free(back);
	ck_assert_int_eq(wps_wset_load(ctx, p, NULL, &back), 0);
	ck_assert_uint_eq(back->nr, 1);
	ck_assert(!back->truncated);
	/* Pager ranges of region 0 only, appended in order. */
	ck_assert_int_eq(wps_wset_pager_ranges(back, 0, &pr, &nr), 0);
	ws->nr = 3;
	ck_assert_int_eq(wps_wset_pager_ranges(ws, 0, &pr, &nr), 0);
	ck_assert_uint_eq(nr, 3);
	ck_assert_uint_eq(pr[0].block, 100);
	ck_assert_uint_eq(pr[1].block, 100);
	ck_assert_uint_eq(pr[2].block, 3);
	ck_assert_uint_eq(pr[2].count, 16);
	free(pr);
	/* No temporary file left beside it. */
	ck_assert_int_eq(rmdir(tu_dir), -1);
	unlink(p);
	ck_assert_int_eq(rmdir(tu_dir), 0);
	ck_assert_int_eq(mkdir(tu_dir, 0700), 0);
	wps_wset_free(back);
	wps_wset_free(ws);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(file_of_another_image_ignored)
{
	struct wps_wset *ws = sample(), *back = (void *)1;
	struct wps_ctx *ctx;
	char p[512];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
	path_of(p, sizeof(p), "x.wset");
	ck_assert_int_eq(wps_wset_save(ctx, p, ws), 0);
	ck_assert_int_eq(wps_wset_load(ctx, p, uuid_b, &back), -ESTALE);
	ck_assert_ptr_null(back);
	ck_assert_msg(tu_logged("recorded for image 01020304-0506-0708-090a-"
				"0b0c0d0e0f10, not this image"), "log: %s",
		      tu_log_text());
	wps_wset_free(ws);
	wps_ctx_free(ctx);
}
END_TEST

/* Flip one byte at off (or truncate to off when flip is false): load
 * must refuse with err and say why. */
static void damage_case(struct wps_ctx *ctx, const char *p, off_t off,
			bool flip, int err, const char *why)
{
	struct wps_wset *ws = sample(), *back = NULL;
	uint8_t byte;
	int fd;

	ck_assert_int_eq(wps_wset_save(ctx, p, ws), 0);
	fd = open(p, O_RDWR);
	ck_assert_int_ge(fd, 0);
	if (flip) {
		ck_assert_int_eq(pread(fd, &byte, 1, off), 1);
		byte ^= 0x10;
		ck_assert_int_eq(pwrite(fd, &byte, 1, off), 1);
	} else {
		ck_assert_int_eq(ftruncate(fd, off), 0);
	}
	close(fd);
	tu_log_reset();
	ck_assert_int_eq(wps_wset_load(ctx, p, uuid_a, &back), err);
	ck_assert_ptr_null(back);
	ck_assert_msg(tu_logged(why), "offset %lld: log: %s", (long long)off,
		      tu_log_text());
	wps_wset_free(ws);
}

START_TEST(damage_detected)
{
	struct wps_ctx *ctx;
	char p[512];
	off_t off;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	path_of(p, sizeof(p), "d.wset");
	damage_case(ctx, p, 0, true, -EPROTO, "bad magic");
	/* Every byte of every record is covered. */
	for (off = 64; off < 64 + 3 * 24; off++)
		damage_case(ctx, p, off, true, -EBADMSG,
			    "checksum mismatch in its 3 ranges");
	damage_case(ctx, p, 20, true, -EBADMSG, "header checksum");
	damage_case(ctx, p, 33, true, -EBADMSG, "header checksum");
	damage_case(ctx, p, 64 + 2 * 24, false, -EBADMSG, "damaged");
	damage_case(ctx, p, 30, false, -EBADMSG, "shorter than its header");
	wps_ctx_free(ctx);
}
END_TEST

/* Additions skip what the set holds and keep their own order. */
START_TEST(add_ranges_dedup)
{
	struct wps_pager_range add[] = { { 5, 20 }, { 50, 2 }, { 12, 3 } };
	struct wps_wset *ws, *other;

	ck_assert_int_eq(wps_wset_new(uuid_a, &ws), 0);
	ck_assert_int_eq(wps_wset_add(ws, 0, 10, 10), 0);   /* [10, 20) */
	ck_assert_int_eq(wps_wset_add(ws, 1, 0, 100), 0);   /* other region */
	ck_assert_int_eq(wps_wset_add_ranges(ws, 0, add, 3), 0);
	/* [5,10) [20,25) [50,52); [12,15) was held already. */
	ck_assert_uint_eq(ws->nr, 5);
	ck_assert_uint_eq(ws->ranges[2].block, 5);
	ck_assert_uint_eq(ws->ranges[2].count, 5);
	ck_assert_uint_eq(ws->ranges[3].block, 20);
	ck_assert_uint_eq(ws->ranges[3].count, 5);
	ck_assert_uint_eq(ws->ranges[4].block, 50);
	ck_assert_uint_eq(wps_wset_blocks(ws, 0), 10 + 5 + 5 + 2);
	ck_assert_int_eq(wps_wset_new(NULL, &other), 0);
	ck_assert_int_eq(wps_wset_add(other, 1, 99, 3), 0);
	ck_assert_int_eq(wps_wset_merge(ws, other), 0);
	ck_assert_uint_eq(ws->ranges[ws->nr - 1].block, 100);
	ck_assert_uint_eq(ws->ranges[ws->nr - 1].count, 2);
	wps_wset_free(other);
	wps_wset_free(ws);
}
END_TEST

START_TEST(cap_bounds_the_set)
{
	struct wps_wset *ws;
	uint64_t i;

	ck_assert_int_eq(wps_wset_new(NULL, &ws), 0);
	for (i = 0; i < WPS_WSET_MAX_RANGES; i++)
		ck_assert_int_eq(wps_wset_add(ws, 0, 2 * i, 1), 0);
	ck_assert(!ws->truncated);
	ck_assert_int_eq(wps_wset_add(ws, 0, 2 * i, 1), -ENOSPC);
	ck_assert(ws->truncated);
	/* Continuing the last range still fits. */
	ck_assert_int_eq(wps_wset_add(ws, 0, 2 * i - 1, 1), 0);
	ck_assert_uint_eq(ws->nr, WPS_WSET_MAX_RANGES);
	wps_wset_free(ws);
}
END_TEST

/*
 * A snapshot under two writers: the image's blob names pages, and every
 * one of them was written by the guest after the freeze (its generation
 * changed between the instant and the end of the snapshot).
 */
START_TEST(written_blob_is_written_after_freeze)
{
	struct rguest_opts go = { .size = 64 << 20, .backing = RGUEST_ANON,
				     .threads = 2, .pattern = RGUEST_RANDOM,
				     .populate_pct = 100, .seed = 5,
				     /* few blocks change after the freeze, so a
				      * wrong record cannot pass by luck */
				     .rate = 1000 };
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot_stats sst;
	struct rguest_ledger *at, *after;
	struct wps_snapshot *s;
	struct wps_image *img;
	struct wps_wset *ws;
	struct rguest *g;
	struct wps_region r;
	struct wps_ctx *ctx;
	uint64_t b, n = 0, changed = 0;
	char p[512];
	size_t i;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	path_of(p, sizeof(p), "w.wpsnap");
	ck_assert_int_eq(rguest_new(&go, &g), 0);
	rguest_region(g, &r);
	so.path = p;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), 0);
	ck_assert_int_eq(rguest_start(g), 0);
	ck_assert_int_eq(wps_snapshot_freeze(s), 0);
	ck_assert_int_eq(wps_snapshot_wait(s), 0);
	wps_snapshot_stats(s, &sst);
	wps_snapshot_free(s);
	/* Generations at the instant, then now (a second instant). */
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &at), 0);
	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &after), 0);
	for (b = 0; b < at->nr_blocks; b++)
		changed += at->gen[b] != after->gen[b];

	ck_assert_int_eq(wps_image_open(ctx, p, 0, &img), 0);
	ck_assert_int_eq(wps_wset_from_image(ctx, img, &ws), 0);
	ck_assert(!memcmp(ws->uuid, wps_image_get_info(img)->uuid, 16));
	ck_assert_uint_gt(ws->nr, 0);
	for (i = 0; i < ws->nr; i++) {
		ck_assert_uint_eq(ws->ranges[i].region, 0);
		for (b = ws->ranges[i].block;
		     b < ws->ranges[i].block + ws->ranges[i].count; b++) {
			ck_assert_uint_lt(b, at->nr_blocks);
			ck_assert_msg(at->gen[b] != after->gen[b],
				      "block %llu recorded as written, but its "
				      "generation %u did not change",
				      (unsigned long long)b, at->gen[b]);
			n++;
		}
	}
	/* One record per faulting unit at most: never more than faults. */
	ck_assert_uint_le(n, sst.faults);
	ck_assert_uint_le(n, changed);
	/* Blocks left unchanged are what makes the check discriminate; how
	 * many depends on how long the snapshot took on a loaded machine,
	 * so only "some" is asserted. */
	ck_assert_uint_lt(changed, at->nr_blocks);
	printf("written blob: %llu blocks of %llu written after the freeze "
	       "(%llu write faults)\n", (unsigned long long)n,
	       (unsigned long long)changed, (unsigned long long)sst.faults);
	wps_wset_free(ws);
	wps_image_close(img);
	rguest_resume(g);
	rguest_resume(g);
	rguest_ledger_free(at);
	rguest_ledger_free(after);
	rguest_free(g);
	wps_ctx_free(ctx);
}
END_TEST

/* ---- lazy restores of the same image, the second with the record ---- */

#define SIZE (128ull << 20)
#define RUN 4u              /* blocks per working-set run, one window */
#define NR_RUNS 150u

static bool block_ok(const struct rguest_ledger *l, const uint8_t *mem,
		     uint64_t b)
{
	uint8_t want[RGUEST_BLOCK];

	if (l->gen[b])
		rguest_block_content(b, l->gen[b], want);
	else
		memset(want, 0, sizeof(want));
	return !memcmp(mem + b * RGUEST_BLOCK, want, sizeof(want));
}

/* Run starts: NR_RUNS distinct 64 KiB windows, RUN blocks at a random
 * offset inside each, in a random order. */
static void pick(uint64_t nr_blocks, uint64_t *start)
{
	uint64_t x = 77, w, nw = nr_blocks / 16;
	unsigned int i, j;

	for (i = 0; i < NR_RUNS; i++) {
again:
		x = tu_mix64(x);
		w = x % nw;
		for (j = 0; j < i; j++)
			if (start[j] / 16 == w)
				goto again;
		start[i] = w * 16 + (x >> 32) % (16 / RUN) * RUN;
	}
}

static void touch_verify(const struct rguest_ledger *l, const uint8_t *mem,
			 const uint64_t *start)
{
	unsigned int i, k;

	for (i = 0; i < NR_RUNS; i++)
		for (k = 0; k < RUN; k++)
			ck_assert_msg(block_ok(l, mem, start[i] + k),
				      "block %llu wrong on first touch",
				      (unsigned long long)(start[i] + k));
}

/* Pages of [mem, mem + len) in memory. */
static uint64_t resident(const uint8_t *mem, uint64_t off, uint64_t len,
			 unsigned char *vec)
{
	uint64_t i, n = 0;

	ck_assert_int_eq(mincore((void *)(mem + off), len, vec), 0);
	for (i = 0; i < len / 4096; i++)
		n += vec[i] & 1;
	return n;
}

START_TEST(second_restore_prefetches_the_record_first)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct wps_pager_range *order, *first = NULL;
	struct wps_pager_stats st;
	struct wps_wset *rec, *back;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct wps_pager *pg;
	struct rguest *g;
	struct wps_region r;
	struct wps_ctx *ctx;
	uint64_t start[NR_RUNS], faults1, total, ws_res, other, bad, t0;
	unsigned char *vec;
	unsigned int nr_order, nr_first = 0, i;
	char p[512], wp[600], why[256] = "";
	uint8_t *mem;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	path_of(p, sizeof(p), "r.wpsnap");
	l = su_take(ctx, RGUEST_ANON, SIZE, 100, p);
	ck_assert_int_eq(wps_image_open(ctx, p, 0, &img), 0);
	ck_assert_int_eq(wps_wset_path(p, wp, sizeof(wp)), 0);
	pick(l->nr_blocks, start);
	vec = malloc(SIZE / 4096);
	ck_assert_ptr_nonnull(vec);

	/* Restore 1: faults only, so the record is exactly the touches. */
	ck_assert_int_eq(rguest_new(&(struct rguest_opts){
		.size = SIZE, .backing = RGUEST_ANON, .threads = 1 }, &g), 0);
	rguest_region(g, &r);
	po.no_prefetch = 1;
	ck_assert_int_eq(wps_pager_new(ctx, img, 0, &r, &po, &pg), 0);
	ck_assert_int_eq(wps_pager_start(pg), 0);
	touch_verify(l, rguest_mem(g), start);
	ck_assert_int_eq(wps_pager_stats(pg, &st), 0);
	faults1 = st.faults;
	ck_assert_uint_eq(faults1, NR_RUNS);
	ck_assert_uint_eq(st.first_bytes, 0);
	ck_assert_int_eq(wps_pager_fault_order(pg, &order, &nr_order), 0);
	ck_assert_uint_eq(nr_order, NR_RUNS);
	for (i = 0; i < NR_RUNS; i++) {
		ck_assert_uint_eq(order[i].block, start[i]);
		ck_assert_uint_eq(order[i].count, 1);
	}
	ck_assert_int_eq(wps_wset_new(wps_image_get_info(img)->uuid, &rec), 0);
	ck_assert_int_eq(wps_wset_add_ranges(rec, 0, order, nr_order), 0);
	ck_assert_int_eq(wps_wset_save(ctx, wp, rec), 0);
	free(order);
	ck_assert_int_eq(wps_pager_graduate(pg), 0);
	wps_pager_free(pg);
	ck_assert(!rguest_ledger_verify_mem(l, rguest_mem(g), &bad, why,
					 sizeof(why)));
	rguest_free(g);

	/* Restore 2: the record from the file, prefetched first. */
	ck_assert_int_eq(wps_wset_load(ctx, wp, wps_image_get_info(img)->uuid,
				       &back), 0);
	ck_assert_int_eq(wps_wset_pager_ranges(back, 0, &first, &nr_first), 0);
	ck_assert_uint_eq(nr_first, NR_RUNS);
	ck_assert_int_eq(rguest_new(&(struct rguest_opts){
		.size = SIZE, .backing = RGUEST_ANON, .threads = 1 }, &g), 0);
	rguest_region(g, &r);
	mem = rguest_mem(g);
	po.no_prefetch = 0;
	po.first = first;
	po.nr_first = nr_first;
	ck_assert_int_eq(wps_pager_new(ctx, img, 0, &r, &po, &pg), 0);
	ck_assert_int_eq(wps_pager_start(pg), 0);
	/* Wait, without touching, until every run is in memory. */
	t0 = (uint64_t)time(NULL);
	for (;;) {
		for (ws_res = 0, i = 0; i < NR_RUNS; i++)
			ws_res += resident(mem, start[i] * 4096, RUN * 4096,
					   vec);
		if (ws_res == NR_RUNS * RUN)
			break;
		ck_assert_msg((uint64_t)time(NULL) - t0 < 30,
			      "working set not prefetched in 30 s");
		usleep(200);
	}
	/* At that moment most of the rest is still to come: the record
	 * went first, not the address-order sweep. */
	total = resident(mem, 0, SIZE, vec);
	other = total - NR_RUNS * 16;   /* each window is installed whole */
	ck_assert_msg(other < (SIZE / 4096 - NR_RUNS * 16) / 2,
		      "%llu other pages were in before the working set",
		      (unsigned long long)other);
	touch_verify(l, mem, start);
	ck_assert_int_eq(wps_pager_stats(pg, &st), 0);
	ck_assert_uint_eq(st.faults, 0);
	ck_assert_uint_eq(st.first_ranges, NR_RUNS);
	ck_assert_int_eq(wps_pager_graduate(pg), 0);
	ck_assert_int_eq(wps_pager_stats(pg, &st), 0);
	ck_assert_uint_ge(st.first_bytes, NR_RUNS * 65536ull / 2);
	ck_assert_uint_le(st.first_bytes, NR_RUNS * 65536ull);
	printf("second restore: %llu faults on the working set (first: %llu); "
	       "%llu other pages in when it was complete\n",
	       (unsigned long long)st.faults, (unsigned long long)faults1,
	       (unsigned long long)other);
	wps_pager_free(pg);
	ck_assert_msg(!rguest_ledger_verify_mem(l, mem, &bad, why, sizeof(why)),
		      "restored memory differs: %s", why);
	rguest_free(g);
	free(first);
	free(vec);
	wps_wset_free(back);
	wps_wset_free(rec);
	wps_image_close(img);
	rguest_ledger_free(l);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *wset_suite(void)
{
	Suite *s = suite_create("wset");
	TCase *tc = tcase_create("wset");

	tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, file_round_trip);
	tcase_add_test(tc, file_of_another_image_ignored);
	tcase_add_test(tc, damage_detected);
	tcase_add_test(tc, add_ranges_dedup);
	tcase_add_test(tc, cap_bounds_the_set);
	tcase_add_test(tc, written_blob_is_written_after_freeze);
	tcase_add_test(tc, second_restore_prefetches_the_record_first);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(wset_suite)
