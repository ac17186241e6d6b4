/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoints: the write tracker against an oracle (exactly the pages
 * written are reported, on anon, THP, memfd and hugetlb; memory handed
 * back is reported as removed, twice), chains of checkpoints of the
 * reference guest under writers restored through the chain and checked
 * against the ledger of each instant, a balloon between checkpoints,
 * merge and retention (and a crash in the middle of either), missing and
 * mismatched parents, and a failed checkpoint: the guest runs on, no
 * image, the next one is full, no protection left after free. The
 * series (<wpsnap/session.h>): count, names and retention, a stop from
 * another thread and from the report, a failing step.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/checkpoint.h>
#include <wpsnap/image.h>
#include <wpsnap/session.h>

#include "tests/unit/testutil.h"
#include "guest/guest.h"
#include "wp/dirty.h"

#define PAGE 4096ull

static struct wps_ctx *new_ctx(void)
{
	struct wps_ctx *ctx;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	tu_log_reset();
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	return ctx;
}

/* ---- the tracker against an oracle ---- */

struct seen {
	uint8_t *written;   /* per page: reported written */
	uint8_t *removed;
	uint64_t pages;
	uint64_t unit;      /* alignment the kernel reports in */
};

static int collect(void *arg, unsigned int r, uint64_t off, uint64_t len,
		   bool removed)
{
	struct seen *s = arg;
	uint64_t p;

	ck_assert_uint_eq(r, 0);
	ck_assert_uint_eq(off % s->unit, 0);
	ck_assert_uint_eq(len % s->unit, 0);
	ck_assert_uint_le(off + len, s->pages * PAGE);
	for (p = off / PAGE; p < (off + len) / PAGE; p++)
		(removed ? s->removed : s->written)[p] = 1;
	return 0;
}

static void harvest(struct wps_dirty *d, struct seen *s)
{
	memset(s->written, 0, s->pages);
	memset(s->removed, 0, s->pages);
	ck_assert_int_eq(wps_dirty_harvest(d, collect, s), 0);
}

static const enum tu_backing tracker_backings[] = {
	TU_ANON, TU_THP, TU_MEMFD, TU_HUGETLB,
};

START_TEST(tracker_oracle)
{
	enum tu_backing b = tracker_backings[_i];
	uint64_t size = 64ull << 20, pages = size / PAGE, p, unit, i;
	struct rguest_hugepool hp = { 0 };
	uint8_t *oracle = calloc(pages, 1);
	struct seen s = { calloc(pages, 1), calloc(pages, 1), pages, PAGE };
	struct wps_dirty *d;
	struct wps_region r;
	struct tu_mem m;
	struct wps_ctx *ctx = new_ctx();
	int round, fds;
	uint64_t seed = 42 + _i, wp = 0;

	if (b == TU_HUGETLB && rguest_hugepool_reserve(&hp, size)) {
		tu_skip_note(__func__, "hugetlb: %s", hp.why);
		goto out_nomem;
	}
	ck_assert_int_eq(tu_mem_new(&m, b, size), 0);
	tu_mem_populate(&m, 50);
	tu_mem_region(&m, &r);
	fds = tu_count_fds();
	unit = b == TU_HUGETLB ? r.page_size : PAGE;
	s.unit = unit;
	ck_assert_int_eq(wps_dirty_new(ctx, &r, 1, 0, -1, &d), 0);
	ck_assert_int_eq(wps_dirty_arm(d), 0);
	harvest(d, &s);
	for (p = 0; p < pages; p++)
		ck_assert_msg(!s.written[p], "page %llu reported before any write",
			      (unsigned long long)p);
	for (round = 0; round < 4; round++) {
		memset(oracle, 0, pages);
		/* some pages once, some many times, some never-touched ones */
		for (i = 0; i < pages / 20; i++) {
			seed = tu_mix64(seed);
			p = seed % pages;
			m.p[p * PAGE + (seed >> 40) % PAGE] ^= 0x5a;
			for (uint64_t q = p - p % (unit / PAGE);
			     q < p - p % (unit / PAGE) + unit / PAGE; q++)
				oracle[q] = 1;
		}
		harvest(d, &s);
		for (p = 0; p < pages; p++)
			ck_assert_msg(s.written[p] == oracle[p],
				      "%s round %d page %llu: written %d, reported %d",
				      b == TU_ANON ? "anon" : b == TU_THP ? "thp" :
				      b == TU_MEMFD ? "memfd" : "hugetlb", round,
				      (unsigned long long)p, oracle[p], s.written[p]);
	}
	/* A harvest re-protects: nothing written, nothing reported. */
	harvest(d, &s);
	for (p = 0; p < pages; p++)
		ck_assert(!s.written[p]);
	wps_dirty_free(d);
	ck_assert_int_eq(tu_count_wp(m.p, size, &wp), 0);
	ck_assert_uint_eq(wp, 0);
	ck_assert_int_eq(tu_count_fds(), fds);
	tu_mem_free(&m);
out_nomem:
	rguest_hugepool_release(&hp);
	free(oracle);
	free(s.written);
	free(s.removed);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(tracker_removed)
{
	uint64_t size = 8ull << 20, pages = size / PAGE, p;
	struct seen s = { calloc(pages, 1), calloc(pages, 1), pages, PAGE };
	struct wps_ctx *ctx = new_ctx();
	struct wps_dirty *d;
	struct wps_region r;
	struct tu_mem m;

	ck_assert_int_eq(tu_mem_new(&m, TU_ANON, size), 0);
	tu_mem_populate(&m, 100);
	tu_mem_region(&m, &r);
	ck_assert_int_eq(wps_dirty_new(ctx, &r, 1, 0, -1, &d), 0);
	ck_assert_int_eq(wps_dirty_arm(d), 0);
	/* pages 100..199 handed back; 150 written again afterwards */
	ck_assert_int_eq(madvise(m.p + 100 * PAGE, 100 * PAGE, MADV_DONTNEED), 0);
	m.p[150 * PAGE] = 1;
	harvest(d, &s);
	for (p = 0; p < pages; p++) {
		ck_assert_msg(s.removed[p] == (p >= 100 && p < 200),
			      "page %llu: removed %d", (unsigned long long)p, s.removed[p]);
		/* a zapped anonymous page has no pte left, which PAGEMAP_SCAN
		 * counts as written: harmless, it reads as zero */
		ck_assert_msg(s.written[p] == (p == 150) ||
			      (p >= 100 && p < 200 && s.written[p]),
			      "page %llu: written %d", (unsigned long long)p, s.written[p]);
	}
	/* the next harvest reports the removed range once more */
	harvest(d, &s);
	for (p = 0; p < pages; p++) {
		ck_assert_msg(s.removed[p] == (p >= 100 && p < 200),
			      "page %llu: removed %d again", (unsigned long long)p,
			      s.removed[p]);
		ck_assert_msg(!s.written[p], "page %llu: written %d again",
			      (unsigned long long)p, s.written[p]);
	}
	harvest(d, &s);
	for (p = 0; p < pages; p++)
		ck_assert_int_eq(s.removed[p], 0);
	ck_assert_uint_ge(wps_dirty_events(d), 1);
	/* unmapping part of it: the tracker says so and stops */
	ck_assert_int_eq(munmap(m.p + size - 2 * PAGE, 2 * PAGE), 0);
	ck_assert_int_eq(wps_dirty_harvest(d, collect, &s), -ESTALE);
	ck_assert(tu_logged("unmapped"));
	wps_dirty_free(d);
	m.size -= 2 * PAGE;
	tu_mem_free(&m);
	free(s.written);
	free(s.removed);
	wps_ctx_free(ctx);
}
END_TEST

/* ---- chains of the reference guest ---- */

static void ckpath(char *buf, size_t len, const char *tag, unsigned int i)
{
	snprintf(buf, len, "%s/%s-%u.wpsnap", tu_dir, tag, i);
}

/* Restore the chain ending at path and compare with ledger l. */
static void check_chain(struct wps_ctx *ctx, const char *path,
			const struct rguest_ledger *l, uint64_t size,
			unsigned int expect_len)
{
	struct wps_chain *c;
	uint64_t bad = 0;
	char why[256];
	void *mem;
	int ret;

	ck_assert_int_eq(wps_chain_open(ctx, path, 0, &c), 0);
	ck_assert_uint_eq(wps_chain_length(c), expect_len);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	ck_assert(mem != MAP_FAILED);
	ck_assert_int_eq(wps_chain_load(c, 0, mem, NULL), 0);
	ret = rguest_ledger_verify_mem(l, mem, &bad, why, sizeof(why));
	ck_assert_msg(ret == 0, "%s: block %llu: %s", path,
		      (unsigned long long)bad, why);
	munmap(mem, size);
	wps_chain_close(c);
}

static struct rguest_ledger *instant_ledger(struct rguest *g)
{
	struct rguest_ledger *l;

	rguest_pause(g);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	rguest_resume(g);
	return l;
}

static const enum rguest_backing chain_backings[] = {
	RGUEST_ANON, RGUEST_THP, RGUEST_MEMFD, RGUEST_HUGETLB,
};

START_TEST(chain_under_writers)
{
	enum rguest_backing b = chain_backings[_i];
	struct rguest_opts go = { .size = 64ull << 20, .backing = b,
				     .threads = 2, .pattern = RGUEST_HOT,
				     .populate_pct = 70, .seed = 5 + _i };
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct rguest_ledger *l[5] = { 0 };
	struct rguest_hugepool hp = { 0 };
	struct wps_ctx *ctx = new_ctx();
	struct wps_ckpt_stats st;
	struct wps_ckpt *ck;
	struct rguest *g;
	struct wps_region r;
	char path[512];
	unsigned int i;
	uint64_t wp = 0;
	int fds = tu_count_fds();

	if (b == RGUEST_HUGETLB && rguest_hugepool_reserve(&hp, go.size)) {
		tu_skip_note(__func__, "hugetlb: %s", hp.why);
		goto out;
	}
	ck_assert_int_eq(rguest_new(&go, &g), 0);
	rguest_region(g, &r);
	co.pause = rguest_freeze_pause;
	co.resume = rguest_resume;
	co.pause_arg = g;
	co.flags = WPS_CKPT_NO_DIRECT * (b == RGUEST_HUGETLB);
	co.precopy_rounds = _i % 2 ? WPS_CKPT_NO_PRECOPY : 0;
	ck_assert_int_eq(wps_ckpt_new(ctx, &r, 1, &co, &ck), 0);
	ck_assert_int_eq(rguest_start(g), 0);
	for (i = 0; i < 5; i++) {
		usleep(30000);
		ckpath(path, sizeof(path), "c", i);
		ck_assert_int_eq(wps_ckpt_take(ck, path, &st), 0);
		ck_assert_uint_eq(st.seq, i);
		l[i] = instant_ledger(g);
	}
	ck_assert_uint_gt(rguest_writes(g), 0);
	rguest_stop(g);
	wps_ckpt_free(ck);
	ck_assert_int_eq(tu_count_wp(rguest_mem(g), rguest_size(g), &wp), 0);
	ck_assert_uint_eq(wp, 0);
	for (i = 0; i < 5; i++) {
		ckpath(path, sizeof(path), "c", i);
		check_chain(ctx, path, l[i], go.size, i + 1);
		rguest_ledger_free(l[i]);
	}
	rguest_free(g);
	ck_assert_int_eq(tu_count_fds(), fds);
out:
	rguest_hugepool_release(&hp);
	wps_ctx_free(ctx);
}
END_TEST

/* ---- plain memory: balloon, merge, fold, errors ---- */

static int nop(void *arg)
{
	return 0;
}

static void fill(uint8_t *p, uint64_t first, uint64_t n, uint8_t v)
{
	uint64_t i;

	for (i = first; i < first + n; i++) {
		memset(p + i * PAGE, v, PAGE);
		p[i * PAGE] = (uint8_t)i;
	}
}

/* Restore the chain ending at path into fresh memory; caller munmaps. */
static uint8_t *restore(struct wps_ctx *ctx, const char *path, uint64_t size)
{
	struct wps_chain *c;
	uint8_t *mem;

	ck_assert_int_eq(wps_chain_open(ctx, path, 0, &c), 0);
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	ck_assert(mem != MAP_FAILED);
	ck_assert_int_eq(wps_chain_load(c, 0, mem, NULL), 0);
	wps_chain_close(c);
	return mem;
}

struct mem_ckpt {
	struct wps_ctx *ctx;
	struct tu_mem m;
	struct wps_ckpt *ck;
	uint8_t *copy[6];   /* the memory at each instant */
};

static void mem_take(struct mem_ckpt *t, unsigned int i)
{
	char path[512];

	ckpath(path, sizeof(path), "m", i);
	ck_assert_int_eq(wps_ckpt_take(t->ck, path, NULL), 0);
	t->copy[i] = malloc(t->m.size);
	memcpy(t->copy[i], t->m.p, t->m.size);
}

static void mem_setup(struct mem_ckpt *t)
{
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_region r;

	memset(t, 0, sizeof(*t));
	t->ctx = new_ctx();
	ck_assert_int_eq(tu_mem_new(&t->m, TU_MEMFD, 4ull << 20), 0);
	tu_mem_region(&t->m, &r);
	co.pause = nop;
	co.resume = nop;
	ck_assert_int_eq(wps_ckpt_new(t->ctx, &r, 1, &co, &t->ck), 0);
	/* 0: pages 0..511 of 0x11; 1: 100..199 of 0x22;
	 * 2: 300..399 handed back (balloon); 3: 350 of 0x33 again;
	 * 4: 0..9 back; 5: 5 of 0x44 */
	fill(t->m.p, 0, 512, 0x11);
	mem_take(t, 0);
	fill(t->m.p, 100, 100, 0x22);
	mem_take(t, 1);
	ck_assert_int_eq(fallocate(t->m.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   300 * PAGE, 100 * PAGE), 0);
	ck_assert_int_eq(madvise(t->m.p + 300 * PAGE, 100 * PAGE, MADV_REMOVE), 0);
	mem_take(t, 2);
	fill(t->m.p, 350, 1, 0x33);
	mem_take(t, 3);
	ck_assert_int_eq(madvise(t->m.p, 10 * PAGE, MADV_REMOVE), 0);
	mem_take(t, 4);
	fill(t->m.p, 5, 1, 0x44);
	mem_take(t, 5);
}

static void mem_teardown(struct mem_ckpt *t)
{
	unsigned int i;

	wps_ckpt_free(t->ck);
	tu_mem_free(&t->m);
	for (i = 0; i < 6; i++)
		free(t->copy[i]);
	wps_ctx_free(t->ctx);
}

START_TEST(balloon_and_merge)
{
	struct wps_image *img;
	struct mem_ckpt t;
	char path[512], out[512];
	unsigned int i;
	uint8_t *mem;

	mem_setup(&t);
	for (i = 0; i < 6; i++) {
		ckpath(path, sizeof(path), "m", i);
		mem = restore(t.ctx, path, t.m.size);
		ck_assert_msg(!memcmp(mem, t.copy[i], t.m.size),
			      "checkpoint %u restores other memory", i);
		munmap(mem, t.m.size);
	}
	/* an increment holds only what changed: 100 pages at 1 */
	ckpath(path, sizeof(path), "m", 1);
	ck_assert_int_eq(wps_image_open(t.ctx, path, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->present_blocks, 100);
	wps_image_close(img);

	/* merge = the chain, as one full image with the tip's UUID */
	{
		struct wps_chain *c;
		uint8_t tip[16];

		ckpath(path, sizeof(path), "m", 5);
		snprintf(out, sizeof(out), "%s/merged.wpsnap", tu_dir);
		ck_assert_int_eq(wps_chain_open(t.ctx, path, 0, &c), 0);
		memcpy(tip, wps_image_get_info(wps_chain_image(c, 5))->uuid, 16);
		ck_assert_int_eq(wps_chain_merge(c, 5, out, 0), 0);
		wps_chain_close(c);
		ck_assert_int_eq(wps_image_open(t.ctx, out, 0, &img), 0);
		ck_assert(!memcmp(wps_image_get_info(img)->uuid, tip, 16));
		ck_assert_uint_eq(wps_image_get_info(img)->parent_uuid[0] |
				  wps_image_get_info(img)->parent_uuid[15], 0);
		wps_image_close(img);
		mem = restore(t.ctx, out, t.m.size);
		ck_assert(!memcmp(mem, t.copy[5], t.m.size));
		munmap(mem, t.m.size);
	}
	mem_teardown(&t);
}
END_TEST

START_TEST(fold_and_crashes)
{
	struct wps_chain *c;
	struct mem_ckpt t;
	char path[512], p0[512], partial[600];
	uint8_t *mem;
	int fd;

	mem_setup(&t);
	/* a crash before the rename leaves a stale partial: harmless */
	ckpath(path, sizeof(path), "m", 2);
	snprintf(partial, sizeof(partial), "%s.partial", path);
	fd = open(partial, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "junk", 4), 4);
	close(fd);
	ckpath(path, sizeof(path), "m", 5);
	mem = restore(t.ctx, path, t.m.size);
	ck_assert(!memcmp(mem, t.copy[5], t.m.size));
	munmap(mem, t.m.size);

	/* keep 3: 0..3 fold into 3, 0..2 go */
	ck_assert_int_eq(wps_chain_open(t.ctx, path, 0, &c), 0);
	ck_assert_int_eq(wps_chain_fold(c, 3), 0);
	ckpath(p0, sizeof(p0), "m", 0);
	ck_assert_int_eq(access(p0, F_OK), -1);
	ck_assert_int_eq(wps_chain_open(t.ctx, path, 0, &c), 0);
	ck_assert_uint_eq(wps_chain_length(c), 3);
	wps_chain_close(c);
	for (unsigned int i = 3; i < 6; i++) {
		ckpath(path, sizeof(path), "m", i);
		mem = restore(t.ctx, path, t.m.size);
		ck_assert_msg(!memcmp(mem, t.copy[i], t.m.size),
			      "checkpoint %u after the fold", i);
		munmap(mem, t.m.size);
	}
	/* checkpoints go on from a folded chain */
	fill(t.m.p, 7, 1, 0x55);
	ckpath(path, sizeof(path), "m", 6);
	ck_assert_int_eq(wps_ckpt_take(t.ck, path, NULL), 0);
	mem = restore(t.ctx, path, t.m.size);
	ck_assert(!memcmp(mem, t.m.p, t.m.size));
	munmap(mem, t.m.size);
	mem_teardown(&t);
}
END_TEST

START_TEST(bad_chains)
{
	struct wps_chain *c;
	struct mem_ckpt t;
	char path[512], other[512];

	mem_setup(&t);
	/* a missing parent */
	ckpath(path, sizeof(path), "m", 2);
	ckpath(other, sizeof(other), "m", 2);
	strcat(other, ".away");
	ck_assert_int_eq(rename(path, other), 0);
	ckpath(path, sizeof(path), "m", 4);
	ck_assert_int_eq(wps_chain_open(t.ctx, path, 0, &c), -ENOENT);
	ck_assert_msg(tu_logged("m-3.wpsnap: its parent") &&
		      tu_logged("m-2.wpsnap is missing"), "%s", tu_log_text());
	/* a parent of the right name but another UUID */
	ckpath(path, sizeof(path), "m", 2);
	ckpath(other, sizeof(other), "m", 1);
	ck_assert_int_eq(link(other, path), 0);
	tu_log_reset();
	ckpath(path, sizeof(path), "m", 4);
	ck_assert_int_eq(wps_chain_open(t.ctx, path, 0, &c), -EBADMSG);
	ck_assert_msg(tu_logged("its parent must be image"), "%s", tu_log_text());
	mem_teardown(&t);
}
END_TEST

START_TEST(failed_take)
{
	struct wps_ckpt_stats st;
	struct wps_image *img;
	struct mem_ckpt t;
	char path[512];
	uint8_t *mem;
	uint64_t wp = 0;

	mem_setup(&t);
	/* no such directory: refused, nothing published, tracking goes on */
	snprintf(path, sizeof(path), "%s/no/such/tu_dir/x.wpsnap", tu_dir);
	ck_assert_int_lt(wps_ckpt_take(t.ck, path, &st), 0);
	fill(t.m.p, 20, 3, 0x66);
	/* the next checkpoint is a full image again, and right */
	ckpath(path, sizeof(path), "after", 0);
	ck_assert_int_eq(wps_ckpt_take(t.ck, path, &st), 0);
	ck_assert_uint_eq(st.parent_uuid[0] | st.parent_uuid[7], 0);
	ck_assert_int_eq(wps_image_open(t.ctx, path, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->parent_uuid[0], 0);
	wps_image_close(img);
	mem = restore(t.ctx, path, t.m.size);
	ck_assert(!memcmp(mem, t.m.p, t.m.size));
	munmap(mem, t.m.size);
	/* blobs go in from before_commit only */
	ck_assert_int_eq(wps_ckpt_add_blob(t.ck, "x", "y", 1), -EINVAL);
	/* an existing image is not overwritten */
	ck_assert_int_eq(wps_ckpt_take(t.ck, path, &st), -EEXIST);
	wps_ckpt_free(t.ck);
	t.ck = NULL;
	ck_assert_int_eq(tu_count_wp(t.m.p, t.m.size, &wp), 0);
	ck_assert_uint_eq(wp, 0);
	mem_teardown(&t);
}
END_TEST

/* ---- the series (<wpsnap/session.h>) on plain memory ---- */

struct series_t {
	struct wps_ctx *ctx;
	struct tu_mem m;
	struct wps_ckpt_session *s;
	uint64_t reports;
	int fail_at;          /* report returns -EIO at this seq; -1: never */
	uint64_t stop_after;  /* report stops the series after this many */
};

/* Every report: the image, through its chain, is the memory now (the
 * test writes only here, between checkpoints); then a write for the
 * next one. */
static int series_report(void *arg, const struct wps_ckpt_session_report *r)
{
	struct series_t *t = arg;
	char want[512];
	uint8_t *mem;

	ck_assert_uint_eq(r->seq, t->reports);
	snprintf(want, sizeof(want), "%s/t-%06u.wpsnap", tu_dir, (unsigned int)r->seq);
	ck_assert_str_eq(r->path, want);
	ck_assert_uint_eq(r->epoch, 0);   /* no netbuf */
	ck_assert_uint_eq(wps_ckpt_session_done(t->s), r->seq + 1);
	mem = restore(t->ctx, r->path, t->m.size);
	ck_assert_msg(!memcmp(mem, t->m.p, t->m.size), "checkpoint %u",
		      (unsigned int)r->seq);
	munmap(mem, t->m.size);
	fill(t->m.p, r->seq * 3, 2, (uint8_t)(0x20 + r->seq));
	t->reports++;
	if (t->stop_after && t->reports == t->stop_after)
		wps_ckpt_session_stop(t->s);
	return (int)r->seq == t->fail_at ? -EIO : 0;
}

static void series_new(struct series_t *t, struct wps_ckpt_session_opts *so)
{
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_region r;

	t->ctx = new_ctx();
	t->reports = 0;
	ck_assert_int_eq(tu_mem_new(&t->m, TU_MEMFD, 2ull << 20), 0);
	fill(t->m.p, 0, 256, 0x11);
	tu_mem_region(&t->m, &r);
	co.pause = nop;
	co.resume = nop;
	co.flags = WPS_CKPT_OVERWRITE;   /* a second series in one test */
	so->dir = tu_dir;
	so->prefix = "t";
	so->report = series_report;
	so->arg = t;
	ck_assert_int_eq(wps_ckpt_session_new(t->ctx, &r, 1, &co, so, &t->s), 0);
}

static void series_free(struct series_t *t)
{
	uint64_t wp = 1;

	wps_ckpt_session_free(t->s);
	ck_assert_int_eq(tu_count_wp(t->m.p, t->m.size, &wp), 0);
	ck_assert_uint_eq(wp, 0);   /* no protection left */
	tu_mem_free(&t->m);
	wps_ctx_free(t->ctx);
}

static bool exists(const char *name)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tu_dir, name);
	return access(path, F_OK) == 0;
}

/* count and keep: three checkpoints, the oldest folded away */
START_TEST(session_count_keep)
{
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct series_t t = { .fail_at = -1 };

	so.interval_ms = 1;
	so.count = 3;
	so.keep = 2;
	series_new(&t, &so);
	ck_assert_int_eq(wps_ckpt_session_run(t.s), 0);
	ck_assert_uint_eq(t.reports, 3);
	ck_assert_uint_eq(wps_ckpt_session_done(t.s), 3);
	ck_assert(!exists("t-000000.wpsnap"));
	ck_assert(exists("t-000001.wpsnap"));
	ck_assert(exists("t-000002.wpsnap"));
	series_free(&t);
}
END_TEST

struct stopper {
	struct series_t *t;
	pthread_t th;
};

static void *stop_thread(void *arg)
{
	struct stopper *st = arg;

	while (wps_ckpt_session_done(st->t->s) < 1)
		usleep(1000);
	wps_ckpt_session_stop(st->t->s);
	return NULL;
}

/* A stop ends the session's own wait: with an interval of an hour the
 * run returns only because the stop woke it (from another thread), and
 * a stop from the report ends the series before the next checkpoint. */
START_TEST(session_stop)
{
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct series_t t = { .fail_at = -1 };
	struct stopper st = { .t = &t };

	so.interval_ms = 3600 * 1000;
	series_new(&t, &so);
	ck_assert_int_eq(pthread_create(&st.th, NULL, stop_thread, &st), 0);
	ck_assert_int_eq(wps_ckpt_session_run(t.s), 0);
	pthread_join(st.th, NULL);
	ck_assert_uint_eq(t.reports, 1);
	series_free(&t);

	so = (struct wps_ckpt_session_opts)WPS_CKPT_SESSION_OPTS_INIT;
	so.interval_ms = 3600 * 1000;
	t = (struct series_t){ .fail_at = -1, .stop_after = 1 };
	series_new(&t, &so);
	ck_assert_int_eq(wps_ckpt_session_run(t.s), 0);
	ck_assert_uint_eq(t.reports, 1);
	ck_assert(!exists("t-000001.wpsnap"));
	series_free(&t);
}
END_TEST

/* A failing step ends the series with its error, logged with the file. */
START_TEST(session_failure)
{
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct series_t t = { .fail_at = 1 };

	so.interval_ms = 1;
	so.count = 5;
	series_new(&t, &so);
	ck_assert_int_eq(wps_ckpt_session_run(t.s), -EIO);
	ck_assert_uint_eq(t.reports, 2);
	ck_assert_uint_eq(wps_ckpt_session_done(t.s), 2);   /* it is durable */
	ck_assert_msg(tu_logged("t-000001.wpsnap): its report failed"), "%s",
		      tu_log_text());
	ck_assert(!exists("t-000002.wpsnap"));
	series_free(&t);

	/* no directory: refused, logged */
	t.ctx = new_ctx();
	so = (struct wps_ckpt_session_opts)WPS_CKPT_SESSION_OPTS_INIT;
	{
		struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
		struct wps_region r = { 0 };

		co.pause = nop;
		co.resume = nop;
		ck_assert_int_eq(wps_ckpt_session_new(t.ctx, &r, 1, &co, &so, &t.s),
				 -EINVAL);
		ck_assert(t.s == NULL);
		ck_assert(tu_logged("no directory"));
	}
	wps_ctx_free(t.ctx);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("checkpoint");
	TCase *tc = tcase_create("tracker");

	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, tracker_oracle, 0, 4);
	tcase_add_test(tc, tracker_removed);
	suite_add_tcase(s, tc);
	tc = tcase_create("chain");
	tcase_set_timeout(tc, 300);
	tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
	tcase_add_loop_test(tc, chain_under_writers, 0, 4);
	tcase_add_test(tc, balloon_and_merge);
	tcase_add_test(tc, fold_and_crashes);
	tcase_add_test(tc, bad_chains);
	tcase_add_test(tc, failed_take);
	tcase_add_test(tc, session_count_keep);
	tcase_add_test(tc, session_stop);
	tcase_add_test(tc, session_failure);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
