/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine tests against an in-memory sink: the engine alone, without the
 * image format, so a failure here points at wp/. The oracle is a copy of
 * guest RAM taken inside the pause; writer threads hammer the memory
 * during the whole copy, and the sink must end up equal to the oracle,
 * every unit put exactly once, and no page left write-protected.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/unit/testutil.h"
#include "guest/guest.h"
#include "wp/compat.h"
#include "wp/engine.h"
#include "wp/ftrace.h"
#include "wp/pagemap.h"

struct memsink {
	uint8_t *data;          /* region 0 image */
	uint64_t size;
	uint8_t *seen;          /* per 4 KiB block: times put */
	uint64_t puts[WPS_NR_LANES];
	int fail_after;         /* put() fails with -ENOSPC after this many */
	int calls;
	pthread_mutex_t lock;
};

static int mem_put(void *priv, enum wps_lane lane, unsigned int r,
		   uint64_t off, const void *src, size_t len)
{
	struct memsink *m = priv;
	uint64_t b;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->fail_after && ++m->calls > m->fail_after) {
		ret = -ENOSPC;
		goto out;
	}
	ck_assert_uint_eq(r, 0);
	ck_assert_uint_le(off + len, m->size);
	memcpy(m->data + off, src, len);
	for (b = off / 4096; b < (off + len) / 4096; b++)
		m->seen[b]++;
	m->puts[lane]++;
out:
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static int mem_flush(void *priv, enum wps_lane lane)
{
	return 0;
}

static const struct wps_sink_ops mem_ops = { .put = mem_put, .flush = mem_flush };

static void memsink_init(struct memsink *m, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->size = size;
	m->data = calloc(1, size);
	m->seen = calloc(1, size / 4096);
	ck_assert_ptr_nonnull(m->data);
	ck_assert_ptr_nonnull(m->seen);
	pthread_mutex_init(&m->lock, NULL);
}

static void memsink_fini(struct memsink *m)
{
	free(m->data);
	free(m->seen);
	pthread_mutex_destroy(&m->lock);
}

/* Oracle: copy guest RAM while the writers are parked. */
struct oracle {
	struct tu_writers *w;
	uint8_t *copy;
	const void *mem;
	uint64_t size;
};

static int oracle_pause(void *arg)
{
	struct oracle *o = arg;

	tu_writers_pause(o->w);
	memcpy(o->copy, o->mem, o->size);
	return 0;
}

static int oracle_resume(void *arg)
{
	struct oracle *o = arg;

	tu_writers_resume(o->w);
	return 0;
}

/* The written-page hints a run received (struct wps_engine_opts.written):
 * calls, blocks out of range, calls from a thread other than the first. */
struct hints {
	uint64_t calls, bad, blocks_max;
	pthread_t thread;
	bool have_thread, other_thread;
};

static void hints_cb(void *arg, uint32_t region, uint64_t block,
		     uint64_t count)
{
	struct hints *h = arg;

	if (!h->have_thread) {
		h->thread = pthread_self();
		h->have_thread = true;
	} else if (!pthread_equal(h->thread, pthread_self())) {
		h->other_thread = true;
	}
	h->calls++;
	if (region != 0 || count != 1 || block >= h->blocks_max)
		h->bad++;
}

/* Snapshot mem while writers run; check the result against the oracle.
 * With hints, the written-page callback is set and its calls checked
 * against the faults the engine counted. */
static void run_snapshot_h(struct tu_mem *mem, unsigned int nthreads,
			   unsigned int populate_pct, int fail_after,
			   int expect, struct hints *hints)
{
	struct wps_ctx *ctx;
	struct wps_engine *e;
	struct memsink m;
	struct oracle o;
	struct wps_region reg;
	struct tu_writers *w;
	struct wps_snapshot_stats st;
	struct wps_engine_opts eo;
	uint64_t b, wp = 0;
	int ret;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	tu_mem_populate(mem, populate_pct);
	memsink_init(&m, mem->size);
	m.fail_after = fail_after;
	w = tu_writers_start(mem->p, mem->size, nthreads);
	o = (struct oracle){ .w = w, .copy = malloc(mem->size), .mem = mem->p,
			     .size = mem->size };
	ck_assert_ptr_nonnull(o.copy);
	tu_mem_region(mem, &reg);
	eo = (struct wps_engine_opts){
		.uffd = -1,
		.sink = { &mem_ops, &m },
		.pause = oracle_pause,
		.resume = oracle_resume,
		.pause_arg = &o,
		.written = hints ? hints_cb : NULL,
		.written_arg = hints,
	};
	if (hints)
		hints->blocks_max = mem->size / 4096;
	usleep(20000);
	ck_assert_int_eq(wps_engine_new(ctx, &reg, 1, &eo, &e), 0);
	ck_assert_int_eq(wps_engine_freeze(e), 0);
	ret = wps_engine_wait(e);
	ck_assert_int_eq(ret, expect);
	wps_engine_stats(e, &st);
	/* Writers still running: protection must be gone, or they block. */
	usleep(20000);
	ck_assert_uint_gt(tu_writers_stop(w), 0);
	ck_assert_int_eq(tu_count_wp(mem->p, mem->size, &wp), 0);
	ck_assert_uint_eq(wp, 0);
	if (expect == 0) {
		for (b = 0; b < mem->size / 4096; b++) {
			ck_assert_msg(m.seen[b] <= 1,
				      "block %llu put %u times",
				      (unsigned long long)b, m.seen[b]);
			if (memcmp(m.data + b * 4096, o.copy + b * 4096, 4096))
				ck_abort_msg("block %llu differs from the "
					     "freeze instant (put %u times)",
					     (unsigned long long)b, m.seen[b]);
		}
		ck_assert_uint_eq(st.saved_bytes, st.sweep_bytes + st.fault_bytes);
	}
	if (hints) {
		/* One hint per fault after the instant, all delivered by the
		 * time wait returned, from one thread, never on the fault path
		 * (so the engine's own trace counts the same faults). */
		struct wps_fault_trace *tr = malloc(sizeof(*tr));

		ck_assert_ptr_nonnull(tr);
		ck_assert_int_eq(wps_engine_fault_trace(e, tr), 0);
		ck_assert_uint_eq(hints->calls, st.faults);
		ck_assert_uint_eq(tr->faults, st.faults);
		ck_assert_uint_eq(hints->bad, 0);
		ck_assert(!hints->other_thread);
		free(tr);
	}
	wps_engine_free(e);
	free(o.copy);
	memsink_fini(&m);
	wps_ctx_free(ctx);
}

static void run_snapshot(struct tu_mem *mem, unsigned int nthreads,
			 unsigned int populate_pct, int fail_after, int expect)
{
	run_snapshot_h(mem, nthreads, populate_pct, fail_after, expect, NULL);
}

START_TEST(anon_random_writers)
{
	struct tu_mem mem;

	ck_assert_int_eq(tu_mem_new(&mem, TU_ANON, 64 << 20), 0);
	run_snapshot(&mem, 2, 70, 0, 0);
	tu_mem_free(&mem);
}
END_TEST

START_TEST(memfd_random_writers)
{
	struct tu_mem mem;

	ck_assert_int_eq(tu_mem_new(&mem, TU_MEMFD, 64 << 20), 0);
	run_snapshot(&mem, 2, 70, 0, 0);
	tu_mem_free(&mem);
}
END_TEST

START_TEST(thp_random_writers)
{
	struct tu_mem mem;

	ck_assert_int_eq(tu_mem_new(&mem, TU_THP, 64 << 20), 0);
	run_snapshot(&mem, 2, 100, 0, 0);
	tu_mem_free(&mem);
}
END_TEST

START_TEST(hugetlb_random_writers)
{
	struct tu_mem mem;
	struct rguest_hugepool hp;

	if (rguest_hugepool_reserve(&hp, 64ull << 21)) {
		rguest_hugepool_release(&hp);
		TU_SKIP("hugetlb: cannot reserve 2 MiB huge pages");
	}
	if (tu_mem_new(&mem, TU_HUGETLB, 32 << 20)) {
		rguest_hugepool_release(&hp);
		TU_SKIP("hugetlb: cannot map huge pages");
	}
	run_snapshot(&mem, 2, 100, 0, 0);
	tu_mem_free(&mem);
	rguest_hugepool_release(&hp);
}
END_TEST

START_TEST(sink_failure_unprotects)
{
	struct tu_mem mem;

	ck_assert_int_eq(tu_mem_new(&mem, TU_ANON, 32 << 20), 0);
	run_snapshot(&mem, 2, 100, 50, -ENOSPC);
	tu_mem_free(&mem);
}
END_TEST

/* Written-page hints are gathered on the fault path and handed over
 * between faults: none lost, none twice, all before wait returns. */
START_TEST(written_hints_all_delivered)
{
	struct hints h = { 0 };
	struct tu_mem mem;

	ck_assert_int_eq(tu_mem_new(&mem, TU_ANON, 32 << 20), 0);
	run_snapshot_h(&mem, 2, 100, 0, 0, &h);
	tu_mem_free(&mem);
}
END_TEST

START_TEST(bad_regions)
{
	struct wps_ctx *ctx;
	struct wps_engine *e = NULL;
	struct memsink m;
	struct wps_engine_opts eo = { .uffd = -1, .sink = { &mem_ops, &m } };
	struct wps_region r[2] = {
		{ .host_addr = 0x10000, .size = 0x3000, .page_size = 4096,
		  .backing = WPS_BACKING_ANON, .fd = -1 },
		{ .host_addr = 0x12000, .size = 0x2000, .page_size = 4096,
		  .backing = WPS_BACKING_ANON, .fd = -1 },
	};

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_level(ctx, 0);
	ck_assert_int_eq(wps_engine_new(ctx, r, 2, &eo, &e), -EINVAL);
	r[1].host_addr = 0x13000;
	r[1].size = 0x1800;
	ck_assert_int_eq(wps_engine_new(ctx, r, 2, &eo, &e), -EINVAL);
	r[1].size = 0x2000;
	r[1].backing = 9;
	ck_assert_int_eq(wps_engine_new(ctx, r, 2, &eo, &e), -EINVAL);
	r[1].backing = WPS_BACKING_HUGETLB;
	ck_assert_int_eq(wps_engine_new(ctx, r, 2, &eo, &e), -EINVAL);
	ck_assert_int_eq(wps_engine_new(ctx, r, 0, &eo, &e), -EINVAL);
	/* Not mapped: registration fails cleanly. */
	r[1].backing = WPS_BACKING_ANON;
	ck_assert_int_lt(wps_engine_new(ctx, r, 2, &eo, &e), 0);
	ck_assert_ptr_null(e);
	wps_ctx_free(ctx);
}
END_TEST

/* A multi-TiB sparse mapping (an ASan shadow, reserved address space)
 * would need tens of GiB of page tables for its markers: refused up front
 * instead of running the machine out of memory. */
START_TEST(huge_sparse_refused)
{
	const uint64_t size = 4ull << 40;
	struct wps_engine_opts eo = { .uffd = -1, .sink = { &mem_ops, NULL } };
	struct wps_engine *e = NULL;
	struct wps_region r = { .size = size, .page_size = 4096,
				.backing = WPS_BACKING_ANON, .fd = -1 };
	struct wps_ctx *ctx;
	void *p;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		TU_SKIP("cannot reserve 4 TiB: %s", strerror(errno));
	r.host_addr = (uintptr_t)p;
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	ck_assert_int_eq(wps_engine_new(ctx, &r, 1, &eo, &e), -E2BIG);
	ck_assert_ptr_null(e);
	ck_assert_msg(tu_logged("page tables"), "log: %s", tu_log_text());
	munmap(p, size);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, anon_random_writers);
	tcase_add_test(tc, memfd_random_writers);
	tcase_add_test(tc, thp_random_writers);
	tcase_add_test(tc, hugetlb_random_writers);
	tcase_add_test(tc, written_hints_all_delivered);
	tcase_add_test(tc, sink_failure_unprotects);
	tcase_add_test(tc, bad_regions);
	tcase_add_test(tc, huge_sparse_refused);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(engine_suite)
