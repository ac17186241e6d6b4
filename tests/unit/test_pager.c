/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restore: an image taken from the reference guest under writers is
 * paged into a fresh guest on demand. Reads while the prefetch runs must
 * see the freeze content; writers may start at the first instant; after
 * graduation the guest equals its ledger, keeps no registration and no fd
 * leaks; absent blocks read zero, discarded ones are not repopulated, and
 * a damaged block is never delivered. The verification the pager's
 * O_DIRECT sweep applies to bytes it read itself gives what a verified
 * group read gives.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wpsnap.h>

#include "stream/img_reader_int.h"
#include "tests/unit/snaputil.h"
#include "tests/unit/testutil.h"
#include "guest/guest.h"

static struct rguest *fresh(enum rguest_backing b, uint64_t size,
			       unsigned int threads)
{
	struct rguest_opts go = { .size = size, .backing = b,
				     .threads = threads ? threads : 1,
				     .pattern = threads ? RGUEST_RANDOM
							: RGUEST_IDLE,
				     .seed = 11 };
	struct rguest *g;

	ck_assert_int_eq(rguest_new(&go, &g), 0);
	return g;
}

static struct wps_pager *pager(struct wps_ctx *ctx, struct wps_image *img,
			       struct rguest *g, bool no_prefetch)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct wps_pager *pg;
	struct wps_region r;

	rguest_region(g, &r);
	po.no_prefetch = no_prefetch;
	ck_assert_int_eq(wps_pager_new(ctx, img, 0, &r, &po, &pg), 0);
	ck_assert_int_eq(wps_pager_start(pg), 0);
	return pg;
}

/* Block b of mem holds what the ledger says (zero for generation 0). */
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

/* Touch n random blocks while pages arrive: every one must be right the
 * first time it is seen (the read itself is the fault). */
static void read_verify(const struct rguest_ledger *l, const uint8_t *mem,
			unsigned int n)
{
	uint64_t x = 12345, b;
	unsigned int i;

	for (i = 0; i < n; i++) {
		x = tu_mix64(x);
		b = x % l->nr_blocks;
		ck_assert_msg(block_ok(l, mem, b), "block %llu wrong on first "
			      "touch", (unsigned long long)b);
	}
}

/* Pages with image data are mapped (pagemap present) after graduation. */
static void check_present(struct wps_image *img, const uint8_t *mem,
			  uint64_t size)
{
	uint64_t b, e, start, count, pme, missing = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	ck_assert_int_ge(fd, 0);
	for (b = 0; !wps_image_next_extent(img, 0, b, &start, &count);
	     b = start + count) {
		for (e = start; e < start + count && e * 4096 < size; e++) {
			uint64_t va = (uint64_t)(uintptr_t)mem + e * 4096;

			ck_assert_int_eq(pread(fd, &pme, 8, (off_t)(va / 4096 * 8)), 8);
			missing += !(pme >> 63);
		}
	}
	close(fd);
	ck_assert_uint_eq(missing, 0);
}

/* Nobody holds a registration on the range any more: a new uffd can
 * register it (EBUSY otherwise). */
static void check_unregistered(struct rguest *g)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct wps_region r;
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct wps_ctx *ctx;
	int fd;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	rguest_region(g, &r);
	fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	if (r.backing == WPS_BACKING_MEMFD)
		api.features = UFFD_FEATURE_MISSING_SHMEM;
	else if (r.backing == WPS_BACKING_HUGETLB)
		api.features = UFFD_FEATURE_MISSING_HUGETLBFS;
	ck_assert_int_eq(ioctl(fd, UFFDIO_API, &api), 0);
	reg.range.start = r.host_addr;
	reg.range.len = r.size;
	ck_assert_msg(!ioctl(fd, UFFDIO_REGISTER, &reg), "still registered: %s",
		      strerror(errno));
	close(fd);
	wps_ctx_free(ctx);
}

static const enum rguest_backing backings[] = {
	RGUEST_ANON, RGUEST_MEMFD, RGUEST_HUGETLB,
};

static bool reserve(enum rguest_backing b, struct rguest_hugepool *hp,
		    const char *what)
{
	if (b != RGUEST_HUGETLB || !rguest_hugepool_reserve(hp, 64ull << 20))
		return true;
	tu_skip_note(what, "hugetlb: %s", hp->why);
	rguest_hugepool_release(hp);
	return false;
}

START_TEST(lazy_round_trip)
{
	enum rguest_backing b = backings[_i];
	struct rguest_hugepool hp = { 0 };
	struct wps_pager_stats st;
	struct wps_pager *pg;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct rguest *g;
	struct wps_ctx *ctx;
	char path[512], why[256] = "";
	uint64_t bad;
	int fds;

	if (!reserve(b, &hp, "lazy_round_trip"))
		return;
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, b, 32 << 20, 60, path);
	g = fresh(b, 32 << 20, 0);
	fds = tu_count_fds();
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	pg = pager(ctx, img, g, false);
	read_verify(l, rguest_mem(g), 3000);
	ck_assert_int_eq(wps_pager_graduate(pg), 0);
	ck_assert_int_eq(wps_pager_stats(pg, &st), 0);
	ck_assert(st.graduated);
	ck_assert_uint_eq(st.remaining_bytes, 0);
	ck_assert_uint_gt(st.faults, 0);
	ck_assert_uint_gt(st.full_ns, 0);
	ck_assert_uint_eq(st.data_bytes, st.fault_bytes + st.prefetch_bytes);
	wps_pager_free(pg);
	ck_assert_msg(!rguest_ledger_verify_mem(l, rguest_mem(g), &bad, why,
					     sizeof(why)),
		      "restored memory differs: %s", why);
	check_present(img, rguest_mem(g), rguest_size(g));
	check_unregistered(g);
	/* Writable everywhere, nothing waits on us. */
	memset(rguest_mem(g), 0x5a, rguest_size(g));
	wps_image_close(img);
	ck_assert_int_eq(tu_count_fds(), fds);
	rguest_free(g);
	rguest_ledger_free(l);
	rguest_hugepool_release(&hp);
	wps_ctx_free(ctx);
}
END_TEST

/* Writers run on the restored memory from the first instant; the final
 * memory must match the guest's own ledger, which starts from the image's. */
START_TEST(lazy_with_writers)
{
	enum rguest_backing b = backings[_i];
	struct rguest_hugepool hp = { 0 };
	struct rguest_ledger *l, *now;
	struct wps_image *img;
	struct wps_pager *pg;
	struct rguest *g;
	struct wps_ctx *ctx;
	char path[512], why[256] = "";
	uint64_t bad;

	if (!reserve(b, &hp, "lazy_with_writers"))
		return;
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, b, 32 << 20, 70, path);
	g = fresh(b, 32 << 20, 2);
	ck_assert_int_eq(rguest_adopt_ledger(g, l), 0);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	pg = pager(ctx, img, g, false);
	ck_assert_int_eq(rguest_start(g), 0);
	usleep(100 * 1000);
	ck_assert_int_eq(wps_pager_graduate(pg), 0);
	usleep(50 * 1000);
	wps_pager_free(pg);
	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &now), 0);
	ck_assert_msg(!rguest_ledger_verify_mem(now, rguest_mem(g), &bad, why,
					     sizeof(why)),
		      "memory differs from the guest's ledger: %s", why);
	ck_assert_uint_gt(rguest_writes(g), 0);
	rguest_resume(g);
	rguest_ledger_free(now);
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	rguest_hugepool_release(&hp);
	wps_ctx_free(ctx);
}
END_TEST

/* Absent blocks read zero; a discarded (MADV_DONTNEED) range is never
 * repopulated from the image. */
START_TEST(absent_and_removed)
{
	struct wps_pager_stats st;
	struct wps_pager *pg;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct rguest *g;
	struct wps_ctx *ctx;
	uint8_t *mem, zero[4096] = { 0 };
	uint64_t b, start, count, holes = 0;
	char path[512];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, RGUEST_ANON, 16 << 20, 30, path);
	g = fresh(RGUEST_ANON, 16 << 20, 0);
	mem = rguest_mem(g);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	pg = pager(ctx, img, g, true);
	for (b = 0; b < l->nr_blocks && holes < 200; b++) {
		if (wps_image_block_present(img, 0, b))
			continue;
		holes++;
		ck_assert(!memcmp(mem + b * 4096, zero, 4096));
	}
	ck_assert_uint_gt(holes, 0);
	/* Discard a run of data blocks that were never touched. */
	ck_assert_int_eq(wps_image_next_extent(img, 0, l->nr_blocks / 2,
					       &start, &count), 0);
	ck_assert_int_eq(madvise(mem + start * 4096, 4096, MADV_DONTNEED), 0);
	ck_assert_int_eq(wps_pager_graduate(pg), 0);
	ck_assert_int_eq(wps_pager_stats(pg, &st), 0);
	ck_assert_uint_ge(st.zero_faults, holes);
	ck_assert_uint_eq(st.removed_bytes, 4096);
	wps_pager_free(pg);
	ck_assert(!memcmp(mem + start * 4096, zero, 4096));
	for (b = 0; b < l->nr_blocks; b++)
		if (b != start)
			ck_assert(block_ok(l, mem, b));
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	wps_ctx_free(ctx);
}
END_TEST

struct reader {
	const uint8_t *page;
	int pipe_w;
	atomic_int done;
	int err;            /* errno of the write, 0 if data was delivered */
};

/* A syscall reading the page: it blocks in the kernel on the fault just
 * as a vCPU would, and tells what came of it without a signal. */
static void *reader_main(void *arg)
{
	struct reader *rd = arg;

	rd->err = write(rd->pipe_w, rd->page, 64) == 64 ? 0 : errno;
	atomic_store(&rd->done, 1);
	return NULL;
}

START_TEST(damaged_never_delivered)
{
	struct reader rd = { 0 };
	struct wps_pager_stats st;
	struct wps_pager *pg;
	struct rguest_ledger *l;
	struct wps_image *img;
	struct rguest *g;
	struct wps_ctx *ctx;
	pthread_t tid;
	char path[512];
	uint64_t start, count, off, blk;
	uint8_t byte;
	int fd, p[2];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	l = su_take(ctx, RGUEST_ANON, 16 << 20, 100, path);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_int_eq(wps_image_next_extent(img, 0, 1000, &start, &count), 0);
	wps_image_close(img);
	blk = start;
	off = (2u << 20) + blk * 4096 + 123;  /* data starts at 2 MiB */
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, (off_t)off), 1);
	byte ^= 0xff;
	ck_assert_int_eq(pwrite(fd, &byte, 1, (off_t)off), 1);
	close(fd);

	g = fresh(RGUEST_ANON, 16 << 20, 0);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	tu_log_reset();
	pg = pager(ctx, img, g, false);
	ck_assert_int_eq(pipe(p), 0);
	rd.page = (uint8_t *)rguest_mem(g) + blk * 4096;
	rd.pipe_w = p[1];
	ck_assert_int_eq(pthread_create(&tid, NULL, reader_main, &rd), 0);
	usleep(300 * 1000);
	ck_assert_msg(!atomic_load(&rd.done), "damaged page was delivered");
	/* Everything else is served. */
	ck_assert(block_ok(l, rguest_mem(g), 0));
	ck_assert(block_ok(l, rguest_mem(g), l->nr_blocks - 1));
	ck_assert_int_eq(wps_pager_graduate(pg), -EBADMSG);
	ck_assert_int_eq(wps_pager_stats(pg, &st), -EBADMSG);
	ck_assert_uint_eq(st.bad_offset, (2u << 20) + blk / 16 * 16 * 4096);
	ck_assert_msg(tu_logged("damaged data"), "log: %s", tu_log_text());
	ck_assert(!atomic_load(&rd.done));
	/* Teardown poisons what was not delivered: the blocked read fails
	 * (EFAULT) instead of seeing zeros. */
	wps_pager_free(pg);
	pthread_join(tid, NULL);
	ck_assert_int_eq(rd.err, EFAULT);
	close(p[0]);
	close(p[1]);
	wps_image_close(img);
	rguest_free(g);
	rguest_ledger_free(l);
	wps_ctx_free(ctx);
}
END_TEST

/*
 * wps_image_check_groups on the stored bytes of a region (read raw, as
 * the sweep's O_DIRECT reads do) yields exactly what
 * wps_image_read_groups yields, and a flipped bit names its group.
 */
START_TEST(check_groups_as_read)
{
	const struct wps_image_region *ir;
	struct wps_image *img;
	struct wps_ctx *ctx;
	uint64_t G, ng, gb, start, count, bad = 0;
	uint8_t *a, *b;
	char path[512];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	rguest_ledger_free(su_take(ctx, RGUEST_ANON, (4 << 20) + 3 * 4096, 50,
				   path));
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ir = wps_image_get_region(img, 0);
	G = wps_image_get_info(img)->group_blocks;
	ng = (ir->nr_blocks + G - 1) / G;
	gb = G * 4096;
	ck_assert_uint_ne(ir->nr_blocks % G, 0);    /* a short last group */
	a = malloc(ng * gb);
	b = malloc(ng * gb);
	ck_assert(a && b);
	memset(a, 0x5a, ng * gb);
	memset(b, 0xa5, ng * gb);
	ck_assert_int_eq(wps_image_read_groups(img, 0, 0, ng, a, &bad), 0);
	ck_assert_int_eq(wps_image_pread(img, b, ir->nr_blocks * 4096,
					 wps_image_group_offset(img, 0, 0)), 0);
	ck_assert_int_eq(wps_image_check_groups(img, 0, 0, ng, b, &bad), 0);
	ck_assert(!memcmp(a, b, ng * gb));
	/* The same for a slice at the end of the region. */
	ck_assert_int_eq(wps_image_pread(img, b, (ir->nr_blocks - (ng - 2) * G) *
					 4096, wps_image_group_offset(img, 0,
								      ng - 2)), 0);
	ck_assert_int_eq(wps_image_check_groups(img, 0, ng - 2, 2, b, &bad), 0);
	ck_assert(!memcmp(a + (ng - 2) * gb, b, 2 * gb));
	/* One flipped bit in a present block: its group is named. */
	ck_assert_int_eq(wps_image_pread(img, b, ir->nr_blocks * 4096,
					 wps_image_group_offset(img, 0, 0)), 0);
	ck_assert_int_eq(wps_image_next_extent(img, 0, ir->nr_blocks / 2,
					       &start, &count), 0);
	b[start * 4096 + 7] ^= 1;
	ck_assert_int_eq(wps_image_check_groups(img, 0, 0, ng, b, &bad),
			 -EBADMSG);
	ck_assert_uint_eq(bad, start / G);
	ck_assert_int_eq(wps_image_check_groups(img, 0, ng, 1, b, &bad),
			 -EINVAL);
	free(a);
	free(b);
	wps_image_close(img);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *pager_suite(void)
{
	Suite *s = suite_create("pager");
	TCase *tc = tcase_create("lazy");

	tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, lazy_round_trip, 0,
			    sizeof(backings) / sizeof(backings[0]));
	tcase_add_loop_test(tc, lazy_with_writers, 0,
			    sizeof(backings) / sizeof(backings[0]));
	tcase_add_test(tc, absent_and_removed);
	tcase_add_test(tc, damaged_never_delivered);
	tcase_add_test(tc, check_groups_as_read);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(pager_suite)
