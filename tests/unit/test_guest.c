/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the reference guest (guest/): the content rule, every
 * backing mapped and populated as asked (checked against the kernel's
 * page residency), the pause really parking the writers, the
 * copy-on-write ledger against a copy of memory taken at the instant, the
 * ledger file and its corruption checks, the writers' patterns and their
 * latency histogram. Image verification is covered by the engine tests.
 * Needs root only for the hugetlb case (it reserves huge pages itself).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guest/guest.h"
#include "tests/unit/testutil.h"

#define MiB (1ull << 20)

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static struct rguest *mkguest(uint64_t size, enum rguest_backing b,
				 unsigned int threads, enum rguest_pattern p,
				 unsigned int pct)
{
	struct rguest_opts o = {
		.size = size, .backing = b, .threads = threads, .pattern = p,
		.populate_pct = pct, .seed = 42,
	};
	struct rguest *g = NULL;
	int ret = rguest_new(&o, &g);

	ck_assert_msg(ret == 0, "rguest_new(%s, %" PRIu64 " bytes): %s",
		      rguest_backing_name(b), size, strerror(-ret));
	return g;
}

/* The ledger now (marks an instant; no writer may be running). */
static struct rguest_ledger *ledger_now(struct rguest *g)
{
	struct rguest_ledger *l = NULL;

	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	ck_assert_int_eq(rguest_resume(g), 0);
	return l;
}

/* ------------------------------------------------------------------ */

START_TEST(test_names)
{
	enum rguest_backing b;
	enum rguest_pattern p;
	const char *bn[] = { "anon", "thp", "memfd", "hugetlb" };
	const char *pn[] = { "idle", "seq", "random", "hot" };
	unsigned int i;

	for (i = 0; i < 4; i++) {
		ck_assert_int_eq(rguest_backing_parse(bn[i], &b), 0);
		ck_assert_int_eq(b, i);
		ck_assert_str_eq(rguest_backing_name(b), bn[i]);
		ck_assert_int_eq(rguest_pattern_parse(pn[i], &p), 0);
		ck_assert_int_eq(p, i);
		ck_assert_str_eq(rguest_pattern_name(p), pn[i]);
	}
	ck_assert_int_eq(rguest_backing_parse("shm", &b), -EINVAL);
	ck_assert_int_eq(rguest_pattern_parse("", &p), -EINVAL);
}
END_TEST

START_TEST(test_content_rule)
{
	static const uint64_t K = 0x9E3779B97F4A7C15ull;
	uint64_t a[512], c[512];
	uint64_t bs[] = { 0, 1, 1234, 0xFFFFFFFFull };
	unsigned int i, j, nz;

	for (i = 0; i < 4; i++) {
		uint64_t b = bs[i];

		rguest_block_content(b, 7, a);
		ck_assert_uint_eq(a[0], b << 32 | 7);
		ck_assert_uint_eq(a[0] >> 32, b);
		ck_assert_uint_eq((uint32_t)a[0], 7);
		for (j = 1; j < 512; j++)
			ck_assert_uint_eq(a[j], rguest_mix(b, 7) ^ (j * K));
		/* another generation, another block: different content */
		rguest_block_content(b, 8, c);
		ck_assert(memcmp(a, c, sizeof(a)) != 0);
		rguest_block_content(b + 1, 7, c);
		ck_assert(memcmp(a + 1, c + 1, sizeof(a) - 8) != 0);
		/* never all zero once written; mostly non-zero words */
		for (j = 0, nz = 0; j < 512; j++)
			nz += a[j] != 0;
		ck_assert_uint_ge(nz, 500);
	}
	ck_assert_uint_ne(rguest_mix(1, 2), rguest_mix(2, 1));
	ck_assert_uint_eq(rguest_mix(99, 3), rguest_mix(99, 3));
	rguest_block_content(5, 0, a);
	for (j = 0; j < 512; j++)
		ck_assert_uint_eq(a[j], 0);
}
END_TEST

/* Each backing maps and populates the requested share, and nothing else
 * has a page (mincore before anything reads the memory). */
static void check_backing(enum rguest_backing bk, uint64_t size, unsigned int pct)
{
	struct rguest *g = mkguest(size, bk, 2, RGUEST_RANDOM, pct);
	struct wps_region r;
	struct rguest_ledger *l;
	uint64_t nb = size / 4096, b, pop = 0, run;
	unsigned char *vec;
	char why[160];

	rguest_region(g, &r);
	ck_assert_uint_eq(r.host_addr, (uintptr_t)rguest_mem(g));
	ck_assert_uint_eq(r.size, size);
	ck_assert_uint_eq(rguest_size(g), size);
	switch (bk) {
	case RGUEST_ANON:
	case RGUEST_THP:
		ck_assert_uint_eq(r.backing, WPS_BACKING_ANON);
		ck_assert_int_eq(r.fd, -1);
		ck_assert_uint_eq(r.page_size, 4096);
		break;
	case RGUEST_MEMFD:
		ck_assert_uint_eq(r.backing, WPS_BACKING_MEMFD);
		ck_assert_int_ge(r.fd, 0);
		ck_assert_uint_eq(r.page_size, 4096);
		break;
	case RGUEST_HUGETLB:
		ck_assert_uint_eq(r.backing, WPS_BACKING_HUGETLB);
		ck_assert_int_ge(r.fd, 0);
		ck_assert_uint_eq(r.page_size, 2 * MiB);
		break;
	}
	if (bk == RGUEST_THP || bk == RGUEST_HUGETLB)
		ck_assert_uint_eq(r.host_addr % (2 * MiB), 0);

	l = ledger_now(g);
	ck_assert_uint_eq(l->nr_blocks, nb);
	vec = malloc(nb);
	ck_assert_ptr_nonnull(vec);
	ck_assert_int_eq(mincore(rguest_mem(g), size, vec), 0);
	for (b = 0; b < nb; b++) {
		ck_assert_uint_le(l->gen[b], 1);
		pop += l->gen[b];
		ck_assert_msg(!!(vec[b] & 1) == (l->gen[b] == 1),
			      "%s: block %" PRIu64 " generation %u but resident=%d",
			      rguest_backing_name(bk), b, l->gen[b], vec[b] & 1);
	}
	/* exact to one run of population */
	run = bk == RGUEST_ANON || bk == RGUEST_MEMFD ? 64 : 512;
	ck_assert_msg(pop + run >= nb * pct / 100 && pop <= nb * pct / 100 + run,
		      "%s: %" PRIu64 " of %" PRIu64 " blocks populated, asked %u%%",
		      rguest_backing_name(bk), pop, nb, pct);
	/* spread: both halves hold some when the share allows */
	if (pct >= 20 && pct <= 80) {
		uint64_t lo = 0;

		for (b = 0; b < nb / 2; b++)
			lo += l->gen[b];
		ck_assert_uint_gt(lo, 0);
		ck_assert_uint_lt(lo, pop);
	}
	ck_assert_msg(rguest_ledger_verify_mem(l, rguest_mem(g), NULL, why, sizeof(why)) == 0,
		      "%s", why);
	free(vec);
	rguest_ledger_free(l);
	rguest_free(g);
}

START_TEST(test_backings)
{
	static const enum rguest_backing bk[] = {
		RGUEST_ANON, RGUEST_THP, RGUEST_MEMFD,
	};

	check_backing(bk[_i], 64 * MiB, 37);
	check_backing(bk[_i], 16 * MiB, 0);
	check_backing(bk[_i], 16 * MiB, 100);
}
END_TEST

START_TEST(test_invalid)
{
	struct rguest_opts o = { .size = MiB, .threads = 1, .populate_pct = 50 };
	struct rguest *g = NULL;
	struct rguest_ledger *l = NULL;

	o.threads = 0;
	ck_assert_int_eq(rguest_new(&o, &g), -EINVAL);
	o.threads = 1;
	o.populate_pct = 101;
	ck_assert_int_eq(rguest_new(&o, &g), -EINVAL);
	o.populate_pct = 10;
	o.size = 0;
	ck_assert_int_eq(rguest_new(&o, &g), -EINVAL);
	o.size = 4096;
	o.threads = 2;      /* more writers than blocks */
	ck_assert_int_eq(rguest_new(&o, &g), -EINVAL);
	o.threads = 1;
	o.size = 5000;      /* rounded up to the block */
	ck_assert_int_eq(rguest_new(&o, &g), 0);
	ck_assert_uint_eq(rguest_size(g), 8192);
	ck_assert_int_eq(rguest_ledger(g, &l), -EINVAL);  /* no instant */
	ck_assert_int_eq(rguest_start(g), 0);
	ck_assert_int_eq(rguest_start(g), -EBUSY);
	rguest_free(g);
}
END_TEST

/* Pause parks every writer: the write count stays put while paused. */
START_TEST(test_pause_parks)
{
	static const enum rguest_pattern pat[] = {
		RGUEST_SEQ, RGUEST_RANDOM, RGUEST_HOT,
	};
	struct rguest *g = mkguest(32 * MiB, RGUEST_ANON, 2, pat[_i], 50);
	uint64_t w0, w1, w2, w3;

	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(20);
	w0 = rguest_writes(g);
	ck_assert_uint_gt(w0, 0);
	ck_assert_int_eq(rguest_pause(g), 0);
	w1 = rguest_writes(g);
	sleep_ms(20);
	w2 = rguest_writes(g);
	ck_assert_uint_eq(w1, w2);
	ck_assert_int_eq(rguest_resume(g), 0);
	sleep_ms(20);
	w3 = rguest_writes(g);
	ck_assert_uint_gt(w3, w2);

	/* nested: the inner resume does not release the writers */
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_resume(g), 0);
	w1 = rguest_writes(g);
	sleep_ms(20);
	ck_assert_uint_eq(rguest_writes(g), w1);
	ck_assert_int_eq(rguest_resume(g), 0);
	sleep_ms(20);
	ck_assert_uint_gt(rguest_writes(g), w1);

	/* stop while paused, then start again */
	ck_assert_int_eq(rguest_pause(g), 0);
	rguest_stop(g);
	ck_assert_int_eq(rguest_resume(g), 0);
	w1 = rguest_writes(g);
	sleep_ms(10);
	ck_assert_uint_eq(rguest_writes(g), w1);
	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(20);
	ck_assert_uint_gt(rguest_writes(g), w1);
	rguest_free(g);
}
END_TEST

START_TEST(test_idle)
{
	struct rguest *g = mkguest(8 * MiB, RGUEST_ANON, 2, RGUEST_IDLE, 100);
	struct rguest_ledger *l;

	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(20);
	ck_assert_uint_eq(rguest_writes(g), 0);
	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	ck_assert_int_eq(rguest_ledger_verify_mem(l, rguest_mem(g), NULL, NULL, 0), 0);
	ck_assert_int_eq(rguest_resume(g), 0);
	rguest_ledger_free(l);
	rguest_free(g);
}
END_TEST

/*
 * The copy-on-write ledger: the memory copied while frozen matches the
 * ledger taken much later, and the live memory does not.
 */
static void cow_round(struct rguest *g, void *copy, unsigned int run_ms,
		      bool expect_change)
{
	uint64_t size = rguest_size(g), bad = UINT64_MAX, w0;
	struct rguest_ledger *l = NULL;
	char why[200] = "";
	int ret;

	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	memcpy(copy, rguest_mem(g), size);
	w0 = rguest_writes(g);
	ck_assert_int_eq(rguest_resume(g), 0);
	sleep_ms(run_ms);
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	ret = rguest_ledger_verify_mem(l, copy, &bad, why, sizeof(why));
	ck_assert_msg(ret == 0, "copy at the instant: %s", why);
	if (expect_change) {
		ck_assert_uint_gt(rguest_writes(g), w0);
		ret = rguest_ledger_verify_mem(l, rguest_mem(g), &bad, why, sizeof(why));
		ck_assert_int_eq(ret, -EBADMSG);
		ck_assert_uint_lt(bad, l->nr_blocks);
		ck_assert_msg(strstr(why, "expected generation") &&
			      strstr(why, ", found generation"), "why: %s", why);
	}
	ck_assert_int_eq(rguest_resume(g), 0);
	rguest_ledger_free(l);
}

START_TEST(test_cow_ledger)
{
	static const enum rguest_pattern pat[] = {
		RGUEST_SEQ, RGUEST_RANDOM, RGUEST_HOT,
	};
	uint64_t size = 32 * MiB;
	struct rguest *g = mkguest(size, RGUEST_ANON, 2, pat[_i], 60);
	void *copy = malloc(size);

	ck_assert_ptr_nonnull(copy);
	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(30);
	cow_round(g, copy, 100, true);
	cow_round(g, copy, 50, true);   /* a second instant, a new epoch */
	rguest_stop(g);
	free(copy);
	rguest_free(g);
}
END_TEST

/* 50 snapshots in a row, each checked. */
START_TEST(test_many_cycles)
{
	uint64_t size = 8 * MiB;
	struct rguest *g = mkguest(size, RGUEST_ANON, 2, RGUEST_RANDOM, 100);
	void *copy = malloc(size);
	unsigned int i;

	ck_assert_ptr_nonnull(copy);
	ck_assert_int_eq(rguest_start(g), 0);
	for (i = 0; i < 50; i++)
		cow_round(g, copy, 5, false);
	/* and plain handshakes, back to back */
	for (i = 0; i < 1000; i++) {
		ck_assert_int_eq(rguest_pause(g), 0);
		ck_assert_int_eq(rguest_resume(g), 0);
	}
	cow_round(g, copy, 20, true);
	free(copy);
	rguest_free(g);
}
END_TEST

/* SEQ sweeps: within a partition generations differ by at most one. */
START_TEST(test_seq_sweep)
{
	struct rguest *g = mkguest(8 * MiB, RGUEST_ANON, 2, RGUEST_SEQ, 100);
	struct rguest_ledger *l = NULL;
	uint64_t b, half;
	uint32_t lo[2], hi[2];
	int i;

	ck_assert_int_eq(rguest_start(g), 0);
	/* Progress, not time: on a loaded machine one writer may not run for
	 * a while, so look at the ledger until both halves were swept. */
	for (i = 0; i < 500; i++) {
		sleep_ms(20);
		ck_assert_int_eq(rguest_freeze_pause(g), 0);
		ck_assert_int_eq(rguest_ledger(g, &l), 0);
		half = l->nr_blocks / 2;
		lo[0] = lo[1] = UINT32_MAX;
		hi[0] = hi[1] = 0;
		for (b = 0; b < l->nr_blocks; b++) {
			unsigned int t = b >= half;

			if (l->gen[b] < lo[t])
				lo[t] = l->gen[b];
			if (l->gen[b] > hi[t])
				hi[t] = l->gen[b];
		}
		if (hi[0] >= 2 && hi[1] >= 2)
			break;
		rguest_ledger_free(l);
		l = NULL;
		ck_assert_int_eq(rguest_resume(g), 0);
	}
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_uint_ge(hi[0], 2);
	ck_assert_uint_ge(hi[1], 2);
	ck_assert_uint_le(hi[0] - lo[0], 1);
	ck_assert_uint_le(hi[1] - lo[1], 1);
	ck_assert_int_eq(rguest_ledger_verify_mem(l, rguest_mem(g), NULL, NULL, 0), 0);
	rguest_resume(g);
	rguest_resume(g);
	rguest_ledger_free(l);
	rguest_free(g);
}
END_TEST

static int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* HOT: the hottest 1/16 of the blocks take about 90% of the writes;
 * RANDOM: they take about 1/16 of them. */
static double hot_share(enum rguest_pattern p)
{
	struct rguest *g = mkguest(16 * MiB, RGUEST_ANON, 2, p, 0);
	struct rguest_ledger *l;
	uint64_t b, tot = 0, top = 0;
	unsigned int ms;

	/* enough writes for the shares to mean something, even when slow */
	ck_assert_int_eq(rguest_start(g), 0);
	for (ms = 0; ms < 20000 && rguest_writes(g) < 100000; ms += 10)
		sleep_ms(10);
	ck_assert_int_eq(rguest_pause(g), 0);
	l = ledger_now(g);
	qsort(l->gen, l->nr_blocks, sizeof(uint32_t), cmp_u32_desc);
	for (b = 0; b < l->nr_blocks; b++) {
		tot += l->gen[b];
		if (b < l->nr_blocks / 16)
			top += l->gen[b];
	}
	ck_assert_uint_eq(tot, rguest_writes(g));
	ck_assert_uint_ge(tot, 100000);
	rguest_resume(g);
	rguest_ledger_free(l);
	rguest_free(g);
	return (double)top / (double)tot;
}

START_TEST(test_hot_pattern)
{
	double hot = hot_share(RGUEST_HOT), rnd = hot_share(RGUEST_RANDOM);

	ck_assert_msg(hot > 0.85 && hot < 0.97, "hot share %.3f", hot);
	ck_assert_msg(rnd < 0.25, "random top share %.3f", rnd);
}
END_TEST

START_TEST(test_latency)
{
	struct rguest *g = mkguest(32 * MiB, RGUEST_ANON, 2, RGUEST_RANDOM, 100);
	struct rguest_latency lat;

	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(100);
	ck_assert_int_eq(rguest_pause(g), 0);
	rguest_latency_get(g, &lat);
	ck_assert_uint_eq(lat.writes, rguest_writes(g));
	ck_assert_uint_gt(lat.writes, 1000);
	ck_assert_uint_gt(lat.p50_ns, 0);
	ck_assert_uint_le(lat.p50_ns, lat.p99_ns);
	ck_assert_uint_le(lat.p99_ns, lat.max_ns);
	ck_assert_uint_lt(lat.p50_ns, 1000000);   /* a 4 KiB fill, not ms */
	ck_assert_uint_le(lat.slow_writes, lat.writes);
	if (lat.slow_writes) {
		ck_assert_uint_ge(lat.slow_p50_ns, 5000);
		ck_assert_uint_le(lat.slow_p50_ns, lat.slow_p99_ns);
		ck_assert_uint_le(lat.slow_p99_ns, lat.max_ns);
	}
	rguest_latency_reset(g);
	rguest_latency_get(g, &lat);
	ck_assert_uint_eq(lat.writes, 0);
	ck_assert_uint_eq(lat.max_ns, 0);
	ck_assert_uint_eq(lat.slow_writes, 0);
	ck_assert_int_eq(rguest_resume(g), 0);
	sleep_ms(20);
	rguest_latency_get(g, &lat);
	ck_assert_uint_gt(lat.writes, 0);
	rguest_free(g);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Ledger file and messages                                            */
/* ------------------------------------------------------------------ */

static char tmpdir[64];

static void tmp_setup(void)
{
	strcpy(tmpdir, "/tmp/wps-guest-test.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tmp_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void patch_file(const char *path, off_t off, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, data, len, off), (ssize_t)len);
	close(fd);
}

static void copy_file(const char *from, const char *to)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_ledger_file)
{
	struct rguest *g = mkguest(8 * MiB, RGUEST_ANON, 2, RGUEST_RANDOM, 70);
	struct rguest_ledger *l, *r = NULL;
	char path[128], bad[128];
	struct stat st;
	uint8_t byte;
	uint32_t v;

	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(20);
	ck_assert_int_eq(rguest_freeze_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	ck_assert_int_eq(rguest_resume(g), 0);
	rguest_stop(g);

	snprintf(path, sizeof(path), "%s/ledger", tmpdir);
	snprintf(bad, sizeof(bad), "%s/bad", tmpdir);
	ck_assert_int_eq(rguest_ledger_write(l, path), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_size, 32 + l->nr_blocks * 4);
	ck_assert_int_eq(rguest_ledger_read(path, &r), 0);
	ck_assert_uint_eq(r->nr_blocks, l->nr_blocks);
	ck_assert_int_eq(memcmp(r->gen, l->gen, l->nr_blocks * 4), 0);
	rguest_ledger_free(r);
	r = NULL;

	/* one flipped bit in the array */
	copy_file(path, bad);
	byte = 0x01;
	patch_file(bad, 32 + 4 * 1000 + 1, &byte, 1);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EBADMSG);
	/* header field changed (block count) */
	copy_file(path, bad);
	byte = 0x7f;
	patch_file(bad, 17, &byte, 1);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EBADMSG);
	/* wrong magic, wrong version */
	copy_file(path, bad);
	patch_file(bad, 0, "WPSLEDGX", 8);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EPROTO);
	copy_file(path, bad);
	v = 2;
	patch_file(bad, 8, &v, 4);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EPROTO);
	/* truncated, in the array and in the header; trailing garbage */
	copy_file(path, bad);
	ck_assert_int_eq(truncate(bad, st.st_size - 4), 0);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EBADMSG);
	ck_assert_int_eq(truncate(bad, 20), 0);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EBADMSG);
	copy_file(path, bad);
	ck_assert_int_eq(truncate(bad, st.st_size + 4), 0);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -EBADMSG);
	ck_assert_ptr_null(r);
	/* missing file, unwritable place */
	snprintf(bad, sizeof(bad), "%s/none", tmpdir);
	ck_assert_int_eq(rguest_ledger_read(bad, &r), -ENOENT);
	snprintf(bad, sizeof(bad), "%s/no/such/dir", tmpdir);
	ck_assert_int_eq(rguest_ledger_write(l, bad), -ENOENT);

	rguest_ledger_free(l);
	rguest_free(g);
}
END_TEST

START_TEST(test_verify_messages)
{
	struct rguest_ledger l;
	uint32_t gen[6] = { 0, 3, 5, 2, 1, 4 };
	uint8_t *mem = aligned_alloc(4096, 6 * 4096);
	uint64_t bad = 0;
	char why[200];
	unsigned int i;

	ck_assert_ptr_nonnull(mem);
	l.nr_blocks = 6;
	l.gen = gen;
	for (i = 0; i < 6; i++)
		rguest_block_content(i, gen[i], mem + i * 4096);
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), 0);

	rguest_block_content(2, 4, mem + 2 * 4096);
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_uint_eq(bad, 2);
	ck_assert_str_eq(why, "block 2: expected generation 5, found generation 4");

	rguest_block_content(2, 5, mem + 2 * 4096);
	memset(mem + 3 * 4096, 0, 4096);
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_uint_eq(bad, 3);
	ck_assert_str_eq(why, "block 3: expected generation 2, found zeros");

	rguest_block_content(3, 2, mem + 3 * 4096);
	rguest_block_content(5, 4, mem + 4 * 4096);   /* misplaced */
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_uint_eq(bad, 4);
	ck_assert_str_eq(why, "block 4: expected generation 1, found block 5 generation 4 (misplaced)");

	rguest_block_content(4, 1, mem + 4 * 4096);
	mem[5 * 4096 + 100] ^= 1;                         /* one bit */
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_uint_eq(bad, 5);
	ck_assert_str_eq(why, "block 5: expected generation 4, found garbage "
			 "(first word says generation 4, the rest differs)");

	mem[5 * 4096 + 100] ^= 1;
	mem[7] = 1;                                        /* block 0: not zero */
	ck_assert_int_eq(rguest_ledger_verify_mem(&l, mem, &bad, why, sizeof(why)), -EBADMSG);
	ck_assert_uint_eq(bad, 0);
	ck_assert_str_eq(why, "block 0: expected zeros (never written), found "
			 "garbage (first word 0x0100000000000000)");
	free(mem);
}
END_TEST

/* ------------------------------------------------------------------ */
/* hugetlb: reserves its own pages in an unchecked fixture (the parent
 * process), so the old pool size comes back even if a test fails.      */
/* ------------------------------------------------------------------ */

#define HUGE_GUEST (32 * MiB)

static struct rguest_hugepool huge_pool;
static char huge_skip[256];

static void huge_setup(void)
{
	if (rguest_hugepool_reserve(&huge_pool, HUGE_GUEST))
		snprintf(huge_skip, sizeof(huge_skip), "%s", huge_pool.why);
	else
		huge_skip[0] = '\0';
}

static void huge_teardown(void)
{
	rguest_hugepool_release(&huge_pool);
}

START_TEST(test_hugetlb)
{
	struct rguest *g;
	void *copy;

	if (huge_skip[0])
		TU_SKIP("%s", huge_skip);
	check_backing(RGUEST_HUGETLB, HUGE_GUEST, 50);
	/* the pause and the ledger on huge pages too */
	g = mkguest(HUGE_GUEST, RGUEST_HUGETLB, 2, RGUEST_RANDOM, 50);
	copy = malloc(HUGE_GUEST);
	ck_assert_ptr_nonnull(copy);
	ck_assert_int_eq(rguest_start(g), 0);
	sleep_ms(20);
	cow_round(g, copy, 50, true);
	free(copy);
	rguest_free(g);
}
END_TEST

/* Without a reserved pool, hugetlb is -ENOSPC, not a crash. */
START_TEST(test_hugetlb_nospace)
{
	struct rguest_opts o = {
		/* More than any pool here can hold: 1 TiB of huge pages. */
		.size = 1ull << 40, .backing = RGUEST_HUGETLB, .threads = 1,
		.pattern = RGUEST_IDLE, .populate_pct = 0,
	};
	struct rguest *g = NULL;

	ck_assert_int_eq(rguest_new(&o, &g), -ENOSPC);
}
END_TEST

static Suite *guest_suite(void)
{
	Suite *s = suite_create("guest");
	TCase *tc;

	tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_content_rule);
	tcase_add_loop_test(tc, test_backings, 0, 3);
	tcase_add_test(tc, test_invalid);
	tcase_add_test(tc, test_verify_messages);
	suite_add_tcase(s, tc);

	tc = tcase_create("writers");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_pause_parks, 0, 3);
	tcase_add_test(tc, test_idle);
	tcase_add_loop_test(tc, test_cow_ledger, 0, 3);
	tcase_add_test(tc, test_many_cycles);
	tcase_add_test(tc, test_seq_sweep);
	tcase_add_test(tc, test_hot_pattern);
	tcase_add_test(tc, test_latency);
	suite_add_tcase(s, tc);

	tc = tcase_create("ledger-file");
	tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
	tcase_add_test(tc, test_ledger_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("hugetlb");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_hugetlb_nospace);
	tcase_add_unchecked_fixture(tc, huge_setup, huge_teardown);
	tcase_add_test(tc, test_hugetlb);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(guest_suite)
