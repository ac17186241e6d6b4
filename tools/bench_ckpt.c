/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench --checkpoint. Raw costs first, on this machine, in this
 * run: a PAGEMAP_SCAN walk of the guest's range with nothing written (the
 * least a harvest costs), memcpy bandwidth, and a store to each page of
 * populated memory that nothing tracks. Then, for guests dirtying D MiB/s
 * (random pages), N checkpoints at a fixed interval with pre-copy rounds
 * and N without; and as many back-to-back checkpoints as fit in a few
 * seconds (the sustained rate). Every figure is reported with its ratio
 * to the raw cost it should approach:
 *
 *   pause / (walk + memcpy of what the pause copied)
 *   image bytes / dirty bytes, I/O bytes / dirty bytes
 *   first store to a page in an epoch - untracked store (the guest's cost)
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/checkpoint.h>

#include "base/clock.h"
#include "tools/bench_ckpt.h"
#include "wp/dirty.h"

#define MiB (1024.0 * 1024.0)
#define PAGE 4096ull

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* p in [0, 1] of n values (sorted in place). */
static double pct(double *v, unsigned int n, double p)
{
	if (!n)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	return v[(unsigned int)(p * (n - 1) + 0.5)];
}

struct raw_costs {
	double walk_ms;          /* harvest of a clean, armed range */
	double memcpy_mib_s;
	double store_ns;         /* untracked store, populated page */
	double first_store_ns;   /* first store to a page in an epoch */
	double second_store_ns;  /* the same page again */
};

static double store_pass(uint8_t *p, uint64_t size, uint8_t v)
{
	uint64_t t0 = wps_now_ns(), off;

	for (off = 0; off < size; off += PAGE)
		((volatile uint8_t *)p)[off] = v;
	return (double)(wps_now_ns() - t0) / (double)(size / PAGE);
}

static int nop_cb(void *arg, unsigned int r, uint64_t off, uint64_t len,
		  bool removed)
{
	return 0;
}

static int measure_raw(struct wps_ctx *ctx, uint64_t size, struct raw_costs *rc)
{
	struct wps_region r = { .page_size = PAGE, .backing = WPS_BACKING_ANON,
				.fd = -1 };
	uint64_t copy = 64ull << 20, t0;
	struct wps_dirty *d = NULL;
	uint8_t *p, *q;
	int ret, i;

	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	q = mmap(NULL, 2 * copy, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || q == MAP_FAILED)
		return -ENOMEM;
	madvise(p, size, MADV_NOHUGEPAGE);
	memset(p, 1, size);
	memset(q, 1, 2 * copy);
	t0 = wps_now_ns();
	for (i = 0; i < 4; i++)
		memcpy(q + copy, q, copy);
	rc->memcpy_mib_s = 4 * copy / MiB / ((wps_now_ns() - t0) / 1e9);
	store_pass(p, size, 2);
	rc->store_ns = store_pass(p, size, 3);
	r.host_addr = (uint64_t)(uintptr_t)p;
	r.size = size;
	ret = wps_dirty_new(ctx, &r, 1, 0, -1, &d);
	if (!ret)
		ret = wps_dirty_arm(d);
	if (!ret) {
		t0 = wps_now_ns();
		ret = wps_dirty_harvest(d, nop_cb, NULL);   /* nothing written */
		rc->walk_ms = (wps_now_ns() - t0) / 1e6;
	}
	if (!ret) {
		rc->first_store_ns = store_pass(p, size, 4);
		rc->second_store_ns = store_pass(p, size, 5);
	}
	wps_dirty_free(d);
	munmap(p, size);
	munmap(q, 2 * copy);
	return ret;
}

struct rate_result {
	double rate_mib_s;
	bool precopy;
	unsigned int n;
	double pause_p50_ms, pause_max_ms, walk_p50_ms, copy_p50_ms;
	double work_p50_ms;         /* pause minus the guest's stop/resume */
	double pause_bytes_p50;
	double dirty_mib_p50;       /* per checkpoint */
	double image_vs_dirty;      /* image data bytes / dirty bytes */
	double io_vs_dirty;         /* bytes copied (rounds + pause) / dirty */
	double pause_vs_raw;        /* pause work / (walk_raw + memcpy(pause bytes)) */
	double total_p50_ms;
	double per_s;               /* sustained: back-to-back checkpoints/s */
};

static int run_rate(struct wps_ctx *ctx, const struct bench_ckpt_opts *o,
		    const struct raw_costs *rc, double rate, bool precopy,
		    unsigned int interval_ms, double seconds, struct rate_result *res)
{
	struct rguest_opts go = {
		.size = o->size, .backing = o->backing, .threads = 1,
		.pattern = RGUEST_RANDOM, .populate_pct = 100, .seed = 3,
		.rate = (uint64_t)(rate * MiB / PAGE) + 1,
	};
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	unsigned int n = o->count, i, cap = seconds > 0 ? 100000 : n;
	double *pause = calloc(cap, sizeof(double)), *walk = calloc(cap, sizeof(double));
	double *copy = calloc(cap, sizeof(double)), *pb = calloc(cap, sizeof(double));
	double *dirty = calloc(cap, sizeof(double)), *tot = calloc(cap, sizeof(double));
	double *work = calloc(cap, sizeof(double));
	double img = 0, io = 0, dsum = 0, raw;
	struct wps_ckpt *ck = NULL;
	struct rguest *g = NULL;
	struct wps_region reg;
	uint64_t t0 = 0;
	char path[4096];
	int ret;

	memset(res, 0, sizeof(*res));
	res->rate_mib_s = rate;
	res->precopy = precopy;
	if (!pause || !walk || !copy || !pb || !dirty || !tot || !work) {
		ret = -ENOMEM;
		goto out;
	}
	ret = rguest_new(&go, &g);
	if (ret)
		goto out;
	rguest_region(g, &reg);
	co.pause = rguest_pause;
	co.resume = rguest_resume;
	co.pause_arg = g;
	co.flags = WPS_CKPT_OVERWRITE;
	if (!precopy)
		co.precopy_rounds = WPS_CKPT_NO_PRECOPY;
	ret = wps_ckpt_new(ctx, &reg, 1, &co, &ck);
	if (!ret)
		ret = rguest_start(g);
	for (i = 0; !ret; i++) {
		struct wps_ckpt_stats st;

		if (seconds > 0 ? (i > 0 && (wps_now_ns() - t0) / 1e9 >= seconds) || i >= cap :
				  i > n)
			break;
		if (interval_ms)
			nanosleep(&(struct timespec){ 0, (long)interval_ms * 1000000L },
				  NULL);
		snprintf(path, sizeof(path), "%s/bench-ckpt-%u.wpsnap", o->dir, i % 2);
		if (i >= 2)
			unlink(path);   /* keep two files: a parent and a child */
		ret = wps_ckpt_take(ck, path, &st);
		if (ret)
			break;
		if (i == 0) {       /* the full image is not what is measured */
			t0 = wps_now_ns();
			continue;
		}
		pause[res->n] = st.pause_ns / 1e6;
		work[res->n] = (st.pause_ns - st.handshake_ns) / 1e6;
		walk[res->n] = st.scan_ns / 1e6;
		copy[res->n] = st.copy_ns / 1e6;
		pb[res->n] = (double)st.pause_bytes;
		dirty[res->n] = st.dirty_bytes / MiB;
		tot[res->n] = st.total_ns / 1e6;
		img += (double)st.image_data_bytes;
		io += (double)(st.precopy_bytes + st.pause_bytes);
		dsum += (double)st.dirty_bytes;
		res->n++;
	}
	if (ret) {
		fprintf(stderr, "wpsnap bench --checkpoint: %.0f MiB/s: %s\n", rate,
			strerror(-ret));
		goto out;
	}
	if (seconds > 0)
		res->per_s = res->n / ((wps_now_ns() - t0) / 1e9);
	res->pause_max_ms = pct(pause, res->n, 1.0);
	res->pause_p50_ms = pct(pause, res->n, 0.5);
	res->walk_p50_ms = pct(walk, res->n, 0.5);
	res->work_p50_ms = pct(work, res->n, 0.5);
	res->copy_p50_ms = pct(copy, res->n, 0.5);
	res->pause_bytes_p50 = pct(pb, res->n, 0.5);
	res->dirty_mib_p50 = pct(dirty, res->n, 0.5);
	res->total_p50_ms = pct(tot, res->n, 0.5);
	res->image_vs_dirty = dsum ? img / dsum : NAN;
	res->io_vs_dirty = dsum ? io / dsum : NAN;
	raw = rc->walk_ms + res->pause_bytes_p50 / MiB / rc->memcpy_mib_s * 1e3;
	res->pause_vs_raw = res->work_p50_ms / raw;
out:
	if (g)
		rguest_stop(g);
	wps_ckpt_free(ck);
	rguest_free(g);
	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/bench-ckpt-%u.wpsnap", o->dir, i);
		unlink(path);
	}
	free(pause);
	free(walk);
	free(copy);
	free(pb);
	free(dirty);
	free(tot);
	free(work);
	return ret;
}

static json_t *num(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

int bench_checkpoint(struct wps_ctx *ctx, const struct bench_ckpt_opts *o)
{
	static const double rates_full[] = { 10, 50, 200 };
	static const double rates_quick[] = { 20 };
	const double *rates = o->quick ? rates_quick : rates_full;
	unsigned int nr = o->quick ? 1 : 3, i, k = 0;
	struct rate_result res[8], sus;
	struct raw_costs rc = { 0 };
	int ret;

	ret = measure_raw(ctx, o->size, &rc);
	if (ret) {
		fprintf(stderr, "wpsnap bench --checkpoint: raw costs: %s\n",
			strerror(-ret));
		return ret;
	}
	for (i = 0; i < nr; i++) {
		ret = run_rate(ctx, o, &rc, rates[i], true, 100, 0, &res[k++]);
		if (!ret)
			ret = run_rate(ctx, o, &rc, rates[i], false, 100, 0, &res[k++]);
		if (ret)
			return ret;
	}
	ret = run_rate(ctx, o, &rc, rates[nr - 1], true, 0, o->quick ? 1.0 : 5.0, &sus);
	if (ret)
		return ret;
	if (o->json) {
		json_t *j = json_pack("{s:s,s:I,s:s}", "bench", "checkpoint",
				      "size", (json_int_t)o->size, "backing",
				      rguest_backing_name(o->backing));
		json_t *a = json_array();

		json_object_set_new(j, "raw_walk_ms", num(rc.walk_ms));
		json_object_set_new(j, "raw_memcpy_mib_s", num(rc.memcpy_mib_s));
		json_object_set_new(j, "raw_store_ns", num(rc.store_ns));
		json_object_set_new(j, "first_store_ns", num(rc.first_store_ns));
		json_object_set_new(j, "second_store_ns", num(rc.second_store_ns));
		json_object_set_new(j, "first_store_overhead_ns",
				    num(rc.first_store_ns - rc.store_ns));
		for (i = 0; i < k; i++)
			json_array_append_new(a, json_pack(
				"{s:f,s:b,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
				"rate_mib_s", res[i].rate_mib_s, "precopy", res[i].precopy,
				"checkpoints", (int)res[i].n,
				"pause_p50_ms", num(res[i].pause_p50_ms),
				"pause_max_ms", num(res[i].pause_max_ms),
				"pause_work_p50_ms", num(res[i].work_p50_ms),
				"walk_p50_ms", num(res[i].walk_p50_ms),
				"copy_p50_ms", num(res[i].copy_p50_ms),
				"dirty_mib_p50", num(res[i].dirty_mib_p50),
				"pause_vs_raw", num(res[i].pause_vs_raw),
				"image_vs_dirty", num(res[i].image_vs_dirty),
				"io_vs_dirty", num(res[i].io_vs_dirty),
				"total_p50_ms", num(res[i].total_p50_ms)));
		json_object_set_new(j, "runs", a);
		json_object_set_new(j, "sustained_rate_mib_s", num(sus.rate_mib_s));
		json_object_set_new(j, "sustained_checkpoints_per_s", num(sus.per_s));
		json_object_set_new(j, "sustained_pause_p50_ms", num(sus.pause_p50_ms));
		json_dumpf(j, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(j);
		return 0;
	}
	printf("wpsnap bench --checkpoint: %.0f MiB %s guest, random writes, "
	       "%u checkpoints every 100 ms per row\n\n", o->size / MiB,
	       rguest_backing_name(o->backing), o->count);
	printf("raw costs (this run): PAGEMAP_SCAN walk of the range %.3f ms, "
	       "memcpy %.0f MiB/s\n", rc.walk_ms, rc.memcpy_mib_s);
	printf("guest store to a page: untracked %.0f ns, first in an epoch "
	       "%.0f ns (+%.2f us), again %.0f ns\n\n", rc.store_ns,
	       rc.first_store_ns, (rc.first_store_ns - rc.store_ns) / 1e3,
	       rc.second_store_ns);
	printf("%8s %8s %9s %9s %9s %9s %9s %8s %9s %8s %8s %9s\n", "MiB/s",
	       "precopy", "pause p50", "pause max", "work", "walk", "copy", "dirty",
	       "work/raw", "img/dirty", "io/dirty", "total");
	for (i = 0; i < k; i++)
		printf("%8.0f %8s %9.3f %9.3f %9.3f %9.3f %9.3f %8.1f %9.2f %8.3f %8.2f %9.1f\n",
		       res[i].rate_mib_s, res[i].precopy ? "yes" : "no",
		       res[i].pause_p50_ms, res[i].pause_max_ms, res[i].work_p50_ms,
		       res[i].walk_p50_ms,
		       res[i].copy_p50_ms, res[i].dirty_mib_p50, res[i].pause_vs_raw,
		       res[i].image_vs_dirty, res[i].io_vs_dirty, res[i].total_p50_ms);
	printf("\n(ms; dirty in MiB per checkpoint; work = the pause minus the "
	       "guest's own stop and\nresume; work/raw = work / (walk + memcpy of "
	       "what the pause copied))\n");
	printf("sustained, back to back at %.0f MiB/s: %.1f checkpoints/s, pause "
	       "p50 %.3f ms\n", sus.rate_mib_s, sus.per_s, sus.pause_p50_ms);
	return 0;
}
