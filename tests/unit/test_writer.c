/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The image writer: concurrent out-of-order puts on both lanes with many
 * I/Os in flight, holes, forced short writes, ENOSPC and EFBIG failing
 * cleanly, refusal to replace, duplicate puts, the buffered fallback on a
 * filesystem without O_DIRECT, and no file descriptor left behind.
 */
#include "config.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
static char ppath[PATH_MAX + 48];

static void rm_dir_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX + 300];

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		unlink(p);
	}
	closedir(d);
}

static unsigned int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static bool exists(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0;
}

static unsigned int count_fds(void)
{
	return dir_entries("/proc/self/fd");
}

static void set_paths(const char *dir)
{
	snprintf(ipath, sizeof(ipath), "%s/img", dir);
	snprintf(ppath, sizeof(ppath), "%s/img.partial", dir);
}

static void setup(void)
{
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
	strcpy(tdir, "/var/tmp/wps-wr-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	set_paths(tdir);
}

static void teardown(void)
{
	tu_rmtree(tdir);
	wps_ctx_free(ctx);
}

enum kind { ABSENT, ZERO, DATA };

/* Guest memory for the tests: two regions, some blocks never put, some
 * all-zero, the rest random; a block goes to the fault lane by hash. */
struct guest {
	unsigned int nr;
	struct wps_img_writer_region regs[2];
	uint8_t *mem[2];
	uint8_t *kinds[2];
};

static void guest_init(struct guest *g, uint64_t size0, uint64_t size1,
		       unsigned int seed)
{
	unsigned int r;

	memset(g, 0, sizeof(*g));
	g->nr = 2;
	g->regs[0] = (struct wps_img_writer_region){ 0x10000000, size0, 4096, 1, "lo" };
	g->regs[1] = (struct wps_img_writer_region){ 0x40000000, size1, 2u << 20, 3, "hi" };
	for (r = 0; r < 2; r++) {
		uint64_t nb = g->regs[r].size / 4096, b, i;

		g->mem[r] = calloc(nb, 4096);
		g->kinds[r] = calloc(nb, 1);
		ck_assert_ptr_nonnull(g->mem[r]);
		ck_assert_ptr_nonnull(g->kinds[r]);
		for (b = 0; b < nb; b++) {
			uint64_t h = tu_mix64(((uint64_t)seed << 50) ^ ((uint64_t)r << 40) ^ b);

			g->kinds[r][b] = h % 6 == 1 ? ABSENT : h % 6 == 2 ? ZERO : DATA;
			if (g->kinds[r][b] != DATA)
				continue;
			for (i = 0; i < 4096; i += 8) {
				uint64_t v = tu_mix64(h ^ i);

				memcpy(g->mem[r] + b * 4096 + i, &v, 8);
			}
		}
	}
}

static void guest_free(struct guest *g)
{
	unsigned int r;

	for (r = 0; r < g->nr; r++) {
		free(g->mem[r]);
		free(g->kinds[r]);
	}
}

static uint64_t guest_count(const struct guest *g, unsigned int r, enum kind k)
{
	uint64_t b, n = 0;

	for (b = 0; b < g->regs[r].size / 4096; b++)
		n += g->kinds[r][b] == k;
	return n;
}

static bool is_fault_block(unsigned int r, uint64_t b)
{
	return tu_mix64(b * 7 + r) % 4 == 0;
}

struct lane_arg {
	struct wps_img_writer *w;
	struct guest *g;
	int err;
};

/* Sweep lane: runs of non-absent, non-fault blocks, from the end of the
 * last region backwards, in pieces of up to 64 KiB. */
static void *sweep_main(void *p)
{
	struct lane_arg *a = p;
	int r;

	for (r = (int)a->g->nr - 1; r >= 0 && !a->err; r--) {
		uint64_t b = a->g->regs[r].size / 4096;

		while (b > 0 && !a->err) {
			uint64_t n = 0;

			while (b - n > 0 && n < 16 &&
			       a->g->kinds[r][b - n - 1] != ABSENT &&
			       !is_fault_block((unsigned int)r, b - n - 1))
				n++;
			if (n) {
				a->err = wps_img_writer_put(a->w, WPS_LANE_SWEEP,
							    (unsigned int)r,
							    (b - n) * 4096,
							    a->g->mem[r] + (b - n) * 4096,
							    n * 4096);
				b -= n;
			} else {
				b--;
			}
		}
	}
	if (!a->err)
		a->err = wps_img_writer_flush(a->w, WPS_LANE_SWEEP);
	return NULL;
}

/* Fault lane: single blocks in a scrambled order, flushing now and then
 * as an idle fault thread would. */
static void *fault_main(void *p)
{
	struct lane_arg *a = p;
	uint64_t total = 0, i, k = 0;
	unsigned int r;
	uint64_t (*list)[2];

	for (r = 0; r < a->g->nr; r++)
		total += a->g->regs[r].size / 4096;
	list = calloc(total, sizeof(*list));
	ck_assert_ptr_nonnull(list);
	for (r = 0; r < a->g->nr; r++)
		for (i = 0; i < a->g->regs[r].size / 4096; i++)
			if (a->g->kinds[r][i] != ABSENT && is_fault_block(r, i)) {
				list[k][0] = r;
				list[k++][1] = i;
			}
	for (i = k; i > 1; i--) {
		uint64_t j = tu_mix64(i) % i, t0 = list[i - 1][0], t1 = list[i - 1][1];

		list[i - 1][0] = list[j][0];
		list[i - 1][1] = list[j][1];
		list[j][0] = t0;
		list[j][1] = t1;
	}
	for (i = 0; i < k && !a->err; i++) {
		r = (unsigned int)list[i][0];
		a->err = wps_img_writer_put(a->w, WPS_LANE_FAULT, r, list[i][1] * 4096,
					    a->g->mem[r] + list[i][1] * 4096, 4096);
		if (!a->err && i % 97 == 0)
			a->err = wps_img_writer_flush(a->w, WPS_LANE_FAULT);
	}
	if (!a->err)
		a->err = wps_img_writer_flush(a->w, WPS_LANE_FAULT);
	free(list);
	return NULL;
}

/* Both lanes at once; returns the first error. */
static int feed(struct wps_img_writer *w, struct guest *g)
{
	struct lane_arg s = { w, g, 0 }, f = { w, g, 0 };
	pthread_t ts, tf;

	ck_assert_int_eq(pthread_create(&ts, NULL, sweep_main, &s), 0);
	ck_assert_int_eq(pthread_create(&tf, NULL, fault_main, &f), 0);
	pthread_join(ts, NULL);
	pthread_join(tf, NULL);
	return s.err ? s.err : f.err;
}

/* The image holds exactly the guest: bytes, presence, checksums. */
static void check_image(const char *path, struct guest *g)
{
	struct wps_image *img;
	uint64_t bad = 0, present = 0;
	unsigned int r;

	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->nr_regions, g->nr);
	for (r = 0; r < g->nr; r++) {
		size_t size = g->regs[r].size;
		uint8_t *buf = malloc(size);
		uint64_t b, s, n, from = 0, runs = 0;

		ck_assert_ptr_nonnull(buf);
		memset(buf, 0x55, size);
		ck_assert_int_eq(wps_image_read(img, r, 0, buf, size), 0);
		ck_assert_msg(!memcmp(buf, g->mem[r], size), "region %u differs", r);
		for (b = 0; b < size / 4096; b++)
			ck_assert_int_eq(wps_image_block_present(img, r, b),
					 g->kinds[r][b] == DATA);
		while (!wps_image_next_extent(img, r, from, &s, &n)) {
			runs += n;
			from = s + n;
		}
		ck_assert_uint_eq(runs, guest_count(g, r, DATA));
		ck_assert_uint_eq(wps_image_get_region(img, r)->present_blocks,
				  guest_count(g, r, DATA));
		present += guest_count(g, r, DATA);
		free(buf);
	}
	ck_assert_uint_eq(wps_image_get_info(img)->present_blocks, present);
	ck_assert_int_eq(wps_image_verify(img, &bad), 0);
	wps_image_close(img);
}

static bool same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	int ca, cb;
	bool same = true;

	ck_assert_ptr_nonnull(fa);
	ck_assert_ptr_nonnull(fb);
	do {
		ca = fgetc(fa);
		cb = fgetc(fb);
		if (ca != cb)
			same = false;
	} while (same && ca != EOF);
	fclose(fa);
	fclose(fb);
	return same;
}

/* ------------------------------------------------------------------ */
/* tests                                                               */
/* ------------------------------------------------------------------ */

START_TEST(t_two_lanes)
{
	/* Small buffers: lanes wait for buffers, many I/Os in flight. */
	struct wps_img_writer_opts o = { .buffer_budget = 2 << 20,
					 .buf_size = 64 << 10 };
	struct wps_img_writer_stats st;
	struct wps_img_writer *w;
	struct guest g;
	struct stat sb;

	guest_init(&g, 24 << 20, (8 << 20) + 4096 * 37, 1);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, g.regs, 2, &o, &w), 0);
	ck_assert(exists(ppath));
	ck_assert(!exists(ipath));
	ck_assert_int_eq(feed(w, &g), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_get_stats(w, &st);
	ck_assert(st.direct);
	ck_assert_uint_eq(st.present_blocks, guest_count(&g, 0, DATA) + guest_count(&g, 1, DATA));
	ck_assert_uint_eq(st.data_bytes, st.present_blocks * 4096);
	ck_assert_uint_eq(st.zero_blocks, guest_count(&g, 0, ZERO) + guest_count(&g, 1, ZERO));
	ck_assert_uint_gt(st.ios, 32 * 2 * 4);
	ck_assert_int_eq(stat(ipath, &sb), 0);
	ck_assert_uint_eq(st.file_bytes, (uint64_t)sb.st_blocks * 512);
	ck_assert(!exists(ppath));
	wps_img_writer_free(w);
	check_image(ipath, &g);
	guest_free(&g);
}
END_TEST

START_TEST(t_zero_blocks_are_holes)
{
	struct wps_img_writer_region reg = { 0, 64 << 20, 4096, 1, "z" };
	struct wps_img_writer_stats st;
	struct wps_img_writer *w;
	struct wps_image *img;
	uint8_t *zero = calloc(1, 1 << 20), blk[4096];
	struct stat sb;
	uint64_t off, s, n;

	ck_assert_ptr_nonnull(zero);
	memset(blk, 0x42, sizeof(blk));
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), 0);
	for (off = 0; off < reg.size; off += 1 << 20) {
		if (off == 5 << 20) {
			ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, off, blk, 4096), 0);
			ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, off + 4096,
							    zero, (1 << 20) - 4096), 0);
		} else {
			ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, off,
							    zero, 1 << 20), 0);
		}
	}
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_get_stats(w, &st);
	ck_assert_uint_eq(st.present_blocks, 1);
	ck_assert_uint_eq(st.zero_blocks, reg.size / 4096 - 1);
	ck_assert_int_eq(stat(ipath, &sb), 0);
	/* 64 MiB of address space; one data block, the trailer, the footer
	 * and the superblock take a few blocks. */
	ck_assert_uint_lt((uint64_t)sb.st_blocks * 512, 64 << 10);
	ck_assert_uint_gt((uint64_t)sb.st_size, 64 << 20);
	wps_img_writer_free(w);

	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->present_blocks, 1);
	ck_assert_int_eq(wps_image_next_extent(img, 0, 0, &s, &n), 0);
	ck_assert_uint_eq(s, (5 << 20) / 4096);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(wps_image_next_extent(img, 0, s + 1, &s, &n), -ENOENT);
	memset(zero, 1, 1 << 20);
	ck_assert_int_eq(wps_image_read(img, 0, 5 << 20, zero, 1 << 20), 0);
	ck_assert(!memcmp(zero, blk, 4096));
	ck_assert_uint_eq(zero[4096], 0);
	ck_assert_uint_eq(zero[(1 << 20) - 1], 0);
	wps_image_close(img);
	free(zero);
}
END_TEST

static void write_fixed(const char *path, struct guest *g, unsigned int flags,
			struct wps_img_writer_stats *st)
{
	struct wps_img_writer_opts o = { .flags = flags,
					 .buffer_budget = 4 << 20,
					 .buf_size = 256 << 10 };
	struct wps_img_writer *w;
	uint64_t r, off;

	memset(o.uuid, 7, 16);
	ck_assert_int_eq(wps_img_writer_open(ctx, path, g->regs, g->nr, &o, &w), 0);
	wps_img_writer_set_instant(w, 11, 22);
	/* One lane, in order, whole present runs: long extents to shorten. */
	for (r = 0; r < g->nr; r++)
		for (off = 0; off < g->regs[r].size; off += 4096)
			if (g->kinds[r][off / 4096] != ABSENT)
				ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, (unsigned int)r,
								    off, g->mem[r] + off, 4096), 0);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "dev", "state", 5), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_get_stats(w, st);
	wps_img_writer_free(w);
}

START_TEST(t_short_writes)
{
	struct wps_img_writer_stats a, b;
	char other[PATH_MAX + 32];
	struct guest g;
	uint64_t r, bb;

	guest_init(&g, 8 << 20, 4 << 20, 2);
	/* Long runs, so that extents are long enough to be shortened. */
	for (r = 0; r < 2; r++)
		for (bb = 0; bb < 600; bb++)
			if (g.kinds[r][bb] == ABSENT)
				g.kinds[r][bb] = ZERO;
	snprintf(other, sizeof(other), "%s/other", tdir);
	write_fixed(ipath, &g, 0, &a);
	write_fixed(other, &g, WPS_IMGW_TEST_SHORT_WRITES, &b);
	ck_assert_uint_eq(a.short_ios, 0);
	ck_assert_uint_gt(b.short_ios, 10);
	ck_assert_uint_gt(b.ios, a.ios);
	ck_assert(same_file(ipath, other));
	check_image(other, &g);
	guest_free(&g);
}
END_TEST

START_TEST(t_enospc)
{
	char mnt[] = "/var/tmp/wps-enospc-XXXXXX";
	struct wps_img_writer *w;
	struct guest g;
	int err;

	ck_assert_ptr_nonnull(mkdtemp(mnt));
	if (mount("none", mnt, "tmpfs", 0, "size=1m") < 0) {
		int e = errno;

		rmdir(mnt);
		TU_SKIP("cannot mount tmpfs: %s", strerror(e));
	}
	set_paths(mnt);
	guest_init(&g, 4 << 20, 2 << 20, 3);
	err = wps_img_writer_open(ctx, ipath, g.regs, 2, NULL, &w);
	ck_assert_int_eq(err, 0);
	err = feed(w, &g);
	ck_assert_msg(err == 0 || err == -ENOSPC, "put: %d", err);
	if (!err)
		err = wps_img_writer_commit(w);
	ck_assert_int_eq(err, -ENOSPC);
	ck_assert_int_eq(wps_img_writer_commit(w), -ENOSPC);
	ck_assert(tu_logged("No space left on device"));
	ck_assert(tu_logged(ppath));
	wps_img_writer_free(w);
	ck_assert(!exists(ipath));
	ck_assert(!exists(ppath));
	ck_assert_uint_eq(dir_entries(mnt), 0);
	guest_free(&g);
	ck_assert_int_eq(umount(mnt), 0);
	rmdir(mnt);
}
END_TEST

/* In a child with RLIMIT_FSIZE: 0 if the writer failed with -EFBIG and
 * left nothing, else a code saying what went wrong. */
static int efbig_child(rlim_t limit, bool big_blob)
{
	struct rlimit rl = { limit, limit };
	struct wps_img_writer_region reg = { 0, 1 << 20, 4096, 1, "r" };
	struct wps_img_writer *w;
	static uint8_t blk[4096], blob[1 << 20];
	int err;

	signal(SIGXFSZ, SIG_IGN);
	if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
		return 10;
	memset(blk, 1, sizeof(blk));
	err = wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w);
	if (!err) {
		uint64_t off;

		for (off = 0; off < reg.size && !err; off += 4096)
			err = wps_img_writer_put(w, WPS_LANE_SWEEP, 0, off, blk, 4096);
		if (!err && big_blob)
			err = wps_img_writer_add_blob(w, "big", blob, sizeof(blob));
		if (!err)
			err = wps_img_writer_commit(w);
		wps_img_writer_free(w);
	}
	if (err != -EFBIG)
		return 20 + (err < 0 ? -err : 99) % 100;
	if (!tu_logged("File too large"))
		return 11;
	if (exists(ipath) || exists(ppath))
		return 12;
	return 0;
}

static void run_efbig(rlim_t limit, bool big_blob)
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (!pid)
		_exit(efbig_child(limit, big_blob));
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "child died, status %#x", status);
	ck_assert_msg(WEXITSTATUS(status) == 0, "child: code %d",
		      WEXITSTATUS(status));
}

START_TEST(t_efbig)
{
	/* Data ends at 3 MiB: a limit below fails at open (sizing), one
	 * just above it fails writing the trailer with a 1 MiB blob. */
	run_efbig(1 << 20, false);
	run_efbig((3 << 20) + 65536, true);
	ck_assert_uint_eq(dir_entries(tdir), 0);
}
END_TEST

START_TEST(t_exists)
{
	struct wps_img_writer_region reg = { 0, 1 << 20, 4096, 1, "r" };
	struct wps_img_writer_opts o = { .flags = WPS_IMGW_OVERWRITE };
	struct wps_img_writer *w = (void *)1;
	uint8_t blk[4096];
	struct stat st;
	int fd;

	fd = open(ipath, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "keep", 4), 4);
	close(fd);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), -EEXIST);
	ck_assert_ptr_null(w);
	ck_assert(tu_logged("already exists"));
	ck_assert(!exists(ppath));

	/* Overwrite replaces it. */
	memset(blk, 3, sizeof(blk));
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, &o, &w), 0);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_FAULT, 0, 8192, blk, 4096), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_free(w);
	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_int_gt(st.st_size, 4);

	/* The image appears while the snapshot runs: commit must not
	 * replace it, and must remove its partial. */
	ck_assert_int_eq(unlink(ipath), 0);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), 0);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 0, blk, 4096), 0);
	fd = open(ipath, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "keep", 4), 4);
	close(fd);
	ck_assert_int_eq(wps_img_writer_commit(w), -EEXIST);
	wps_img_writer_free(w);
	ck_assert_int_eq(stat(ipath, &st), 0);
	ck_assert_int_eq(st.st_size, 4);
	ck_assert(!exists(ppath));
}
END_TEST

START_TEST(t_stale_partial)
{
	struct wps_img_writer_region reg = { 0, 1 << 20, 4096, 1, "r" };
	struct wps_img_writer *w;
	struct guest g;
	int fd;

	fd = open(ppath, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 100 << 20), 0);
	ck_assert_int_eq(pwrite(fd, "junk", 4, 50 << 20), 4);
	close(fd);
	guest_init(&g, reg.size, 4096 * 3, 4);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, g.regs, 2, NULL, &w), 0);
	ck_assert_int_eq(feed(w, &g), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_free(w);
	check_image(ipath, &g);
	ck_assert(!exists(ppath));
	guest_free(&g);
}
END_TEST

START_TEST(t_double_put_and_args)
{
	struct wps_img_writer_region reg = { 0, 1 << 20, 4096, 1, "r" };
	struct wps_img_writer *w;
	struct wps_sink sink;
	uint8_t blk[3 * 4096];
	struct wps_image *img;
	uint8_t back[4096];

	memset(blk, 9, sizeof(blk));
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), 0);
	sink = wps_img_writer_sink(w);
	ck_assert_int_eq(sink.ops->put(sink.priv, WPS_LANE_SWEEP, 0, 4096, blk, 4096), 0);
	ck_assert_int_eq(sink.ops->flush(sink.priv, WPS_LANE_SWEEP), 0);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_FAULT, 0, 4096, blk, 4096), -EEXIST);
	ck_assert(tu_logged("block 1 of region 0 (r) put twice"));
	/* A range running into it stores what comes before, then fails. */
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 0, blk, 8192), -EEXIST);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 100, blk, 4096), -EINVAL);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 8192, blk, 100), -EINVAL);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, reg.size, blk, 4096), -EINVAL);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, reg.size - 4096, blk, 8192), -EINVAL);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 1, 0, blk, 4096), -EINVAL);
	ck_assert_int_eq(wps_img_writer_put(w, (enum wps_lane)5, 0, 0, blk, 4096), -EINVAL);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "", "x", 1), -EINVAL);
	ck_assert_int_eq(wps_img_writer_add_blob(w,
		"this-name-is-forty-eight-bytes-long-0123456789ab", "x", 1), -EINVAL);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "b", "x", 1), 0);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "b", "y", 1), -EEXIST);
	/* Not sticky: the first put stands and the image is good. */
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 8192, blk, 4096), -EINVAL);
	wps_img_writer_free(w);
	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->present_blocks, 2);
	ck_assert_int_eq(wps_image_block_present(img, 0, 0), 1);
	ck_assert_int_eq(wps_image_block_present(img, 0, 2), 0);
	ck_assert_int_eq(wps_image_read(img, 0, 4096, back, 4096), 0);
	ck_assert(!memcmp(back, blk, 4096));
	wps_image_close(img);
}
END_TEST

START_TEST(t_bad_regions)
{
	struct wps_img_writer_region reg = { 0, (1 << 20) + 100, 4096, 1, "r" };
	struct wps_img_writer *w = NULL;

	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), -EINVAL);
	reg.size = 0;
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), -EINVAL);
	reg.size = 1 << 20;
	reg.page_size = 3000;
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, &reg, 1, NULL, &w), -EINVAL);
	ck_assert_ptr_null(w);
	ck_assert_uint_eq(dir_entries(tdir), 0);
}
END_TEST

START_TEST(t_buffered_fallback)
{
	char mnt[] = "/var/tmp/wps-ramfs-XXXXXX";
	struct wps_img_writer_stats st;
	struct wps_img_writer *w;
	struct guest g;

	ck_assert_ptr_nonnull(mkdtemp(mnt));
	/* tmpfs accepts O_DIRECT since Linux 6.6; ramfs still refuses it. */
	if (mount("none", mnt, "ramfs", 0, NULL) < 0) {
		int e = errno;

		rmdir(mnt);
		TU_SKIP("cannot mount ramfs: %s", strerror(e));
	}
	set_paths(mnt);
	guest_init(&g, 6 << 20, 1 << 20, 5);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, g.regs, 2, NULL, &w), 0);
	ck_assert(tu_logged("filesystem refuses O_DIRECT, using buffered I/O"));
	ck_assert(tu_logged(ipath));
	ck_assert_int_eq(feed(w, &g), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_get_stats(w, &st);
	ck_assert(!st.direct);
	wps_img_writer_free(w);
	check_image(ipath, &g);
	rm_dir_files(mnt);
	ck_assert_int_eq(umount(mnt), 0);
	rmdir(mnt);
	guest_free(&g);
}
END_TEST

START_TEST(t_no_direct_flag)
{
	struct wps_img_writer_opts o = { .flags = WPS_IMGW_NO_DIRECT };
	struct wps_img_writer_stats st;
	struct wps_img_writer *w;
	struct guest g;

	guest_init(&g, 2 << 20, 2 << 20, 6);
	ck_assert_int_eq(wps_img_writer_open(ctx, ipath, g.regs, 2, &o, &w), 0);
	ck_assert_int_eq(feed(w, &g), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_get_stats(w, &st);
	ck_assert(!st.direct);
	ck_assert(!tu_logged("refuses O_DIRECT"));
	wps_img_writer_free(w);
	check_image(ipath, &g);
	guest_free(&g);
}
END_TEST

START_TEST(t_abort_and_fds)
{
	unsigned int before = count_fds();
	struct wps_img_writer *w;
	struct wps_image *img;
	struct guest g;
	int i;

	guest_init(&g, 4 << 20, 2 << 20, 7);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(wps_img_writer_open(ctx, ipath, g.regs, 2, NULL, &w), 0);
		ck_assert_int_eq(feed(w, &g), 0);
		if (i == 0) {
			/* Abort with I/O possibly in flight, twice. */
			wps_img_writer_abort(w);
			wps_img_writer_abort(w);
			ck_assert(!exists(ppath));
			ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, 0,
							    g.mem[0], 4096), -ECANCELED);
			ck_assert_int_eq(wps_img_writer_commit(w), -ECANCELED);
		} else if (i == 1) {
			/* Freed without commit: same as abort. */
		} else {
			ck_assert_int_eq(wps_img_writer_commit(w), 0);
			wps_img_writer_abort(w); /* no-op after commit */
			ck_assert(exists(ipath));
		}
		wps_img_writer_free(w);
		ck_assert(!exists(ppath));
	}
	ck_assert_int_eq(wps_image_open(ctx, ipath, 0, &img), 0);
	wps_image_close(img);
	ck_assert_int_eq(wps_image_open(ctx, "/nonexistent/x", 0, &img), -ENOENT);
	ck_assert_uint_eq(count_fds(), before);
	guest_free(&g);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("writer");
	TCase *tc = tcase_create("writer");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t_two_lanes);
	tcase_add_test(tc, t_zero_blocks_are_holes);
	tcase_add_test(tc, t_short_writes);
	tcase_add_test(tc, t_enospc);
	tcase_add_test(tc, t_efbig);
	tcase_add_test(tc, t_exists);
	tcase_add_test(tc, t_stale_partial);
	tcase_add_test(tc, t_double_put_and_args);
	tcase_add_test(tc, t_bad_regions);
	tcase_add_test(tc, t_buffered_fallback);
	tcase_add_test(tc, t_no_direct_flag);
	tcase_add_test(tc, t_abort_and_fds);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
