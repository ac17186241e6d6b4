/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap restore IMAGE --lazy: maps a fresh reference guest with the
 * region's backing (nothing populated), starts the pager and lets the
 * guest run at once. A reader thread touches random blocks while pages
 * arrive and checks each against the ledger on first sight (its reads are
 * the faults); writer threads may run from the first instant. After
 * graduation the guest is paused and its whole memory compared with its
 * own ledger (the image's, plus what the writers wrote since).
 * IMAGE may be an NBD URI: faults then travel on the image's reserved
 * fault connection, prefetch on the bulk ones.
 *
 * Working set (include/wpsnap/wset.h): by default the prefetch first
 * takes the fault order recorded by earlier restores of the same image
 * ("IMAGE.wset", or --working-set FILE), then the pages written during
 * the snapshot (the image's blob), then sweeps; after graduation this
 * run's faults are added to the file for the next restore.
 *
 * Owns everything it creates (image, guest, pager, ledgers, the reader
 * thread) and releases it on every path.
 */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wpsnap.h>
#include <wpsnap/wset.h>

#include "base/clock.h"
#include "guest/guest.h"
#include "tools/restore_lazy.h"
#include "wp/histo.h"

#define MiB (1024.0 * 1024.0)
/* A touch slower than this took a fault (an in-memory 4 KiB compare
 * takes well under a microsecond). */
#define FAULTED_NS 2000u

struct lazy_reader {
	const struct rguest_ledger *l;
	const uint8_t *mem;
	bool exact;             /* no writers: compare whole blocks */
	atomic_bool stop;
	pthread_t tid;
	uint64_t touched, bad, bad_block;
	struct wps_histo faulted;   /* guest-side latency of faulting touches */
};

/*
 * With writers running a block may be newer than the ledger, and a full
 * compare could see a write in progress; word 0 (one aligned store) still
 * says which block and generation it holds, which must be the ledger's or
 * later, never older or foreign.
 */
static bool touch_ok(struct lazy_reader *rd, uint64_t b)
{
	const uint8_t *p = rd->mem + b * RGUEST_BLOCK;
	uint32_t want = rd->l->gen[b];
	uint8_t buf[RGUEST_BLOCK];
	uint64_t w0;

	if (rd->exact) {
		if (want)
			rguest_block_content(b, want, buf);
		else
			memset(buf, 0, sizeof(buf));
		return !memcmp(p, buf, sizeof(buf));
	}
	w0 = le64toh(__atomic_load_n((const uint64_t *)(const void *)p,
				     __ATOMIC_RELAXED));
	if (!w0)
		return !want;
	return w0 >> 32 == b && (uint32_t)w0 >= want;
}

static void *reader_main(void *arg)
{
	struct lazy_reader *rd = arg;
	uint64_t x = 0x1234567, b, t0, dt;

	while (!atomic_load_explicit(&rd->stop, memory_order_relaxed)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b = x % rd->l->nr_blocks;
		t0 = wps_now_ns();
		if (!touch_ok(rd, b) && !rd->bad++)
			rd->bad_block = b;
		dt = wps_now_ns() - t0;
		if (dt >= FAULTED_NS)
			wps_histo_add(&rd->faulted, dt);
		rd->touched++;
	}
	return NULL;
}

bool restore_lazy_requested(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--lazy"))
			return true;
	return false;
}

static void usage(void)
{
	printf("Usage: wpsnap restore IMAGE --lazy [--region N] [--ledger FILE]\n"
	       "                      [--writers N] [--graduate-after MS]\n"
	       "                      [--no-prefetch] [--reserve-hugepages]\n"
	       "                      [--working-set FILE | --no-working-set]\n"
	       "Lazy restore: the reference guest runs at once on empty memory;\n"
	       "pages arrive on demand (faults first) and in the background, then\n"
	       "graduation populates the rest and unregisters without a pause.\n"
	       "IMAGE is a file or an NBD URI (nbd://HOST[:PORT]/EXPORT): faults\n"
	       "then use a connection of their own, prefetch the others.\n"
	       "With a ledger, a reader checks blocks as they arrive and the whole\n"
	       "memory is verified at the end. --writers starts N writer threads\n"
	       "at the first instant (their writes are tracked on top of the\n"
	       "ledger). --graduate-after waits MS before graduating;\n"
	       "--no-prefetch serves only faults until then (lazy, then graduate).\n"
	       "--reserve-hugepages grows the huge page pool for a hugetlb region.\n"
	       "Working set: prefetch first the fault order recorded by earlier\n"
	       "restores of this image (IMAGE.wset, or --working-set FILE; needed\n"
	       "for an NBD image), then the pages written during the snapshot;\n"
	       "after graduation this run's faults are added to the file.\n"
	       "--no-working-set neither reads nor writes it (plain sweep).\n");
}

/*
 * The image to page from: an incremental image (a checkpoint) is merged
 * with its chain first (wps_chain_open_flat): the pager reads one image,
 * and the merge costs one sequential pass. The working set belongs to
 * the image named; the merge keeps its UUID.
 */
static int open_flat(struct wps_ctx *ctx, const char *path,
		     struct wps_image **img, uint8_t *uuid)
{
	unsigned int merged;
	int ret = wps_chain_open_flat(ctx, path, 0, img, &merged);

	if (ret)
		return ret;
	if (merged)
		printf("merged a chain of %u images for paging\n", merged);
	memcpy(uuid, wps_image_get_info(*img)->uuid, 16);
	return 0;
}

/* Say what the working-set plan (src/wsplan.c) uses. */
static void wset_say_plan(const struct wps_wset_plan_info *in)
{
	if (in->off) {
		printf("working set: not used (--no-working-set)\n");
		return;
	}
	if (in->written_dropped)
		printf("working set: the pages written during the snapshot span "
		       "%u%% of memory: not a working set, not used\n",
		       in->written_spread / 10);
	if (!in->nr_first && in->path)
		printf("working set: none (no usable %s, no pages written "
		       "during the snapshot): address-order prefetch\n",
		       in->path);
	else if (!in->nr_first)
		printf("working set: none (an NBD image has no file beside it:"
		       " see --working-set; no pages written during the "
		       "snapshot): address-order prefetch\n");
	else
		printf("working set: %.1f MiB recorded by earlier restores%s%s%s,"
		       " %.1f MiB written during the snapshot; %u ranges "
		       "prefetched first\n", in->recorded_blocks * 4096.0 / MiB,
		       !in->load ? " (" : "", !in->load ? in->path : "",
		       !in->load ? ")" : "", in->written_blocks * 4096.0 / MiB,
		       in->nr_first);
}

/* After graduation: this run's faults, added to the file for the next
 * restore. Failure is reported (by the library), not fatal. */
static void wset_record(struct wps_wset_plan *plan, struct wps_pager *pg)
{
	struct wps_wset_plan_info in;

	if (wps_wset_plan_record(plan, pg))
		return;
	wps_wset_plan_get_info(plan, &in);
	if (in.saved)
		printf("working set: %u faulting ranges of this run added; %s "
		       "holds %.1f MiB in %zu ranges%s\n", in.added_ranges,
		       in.path, in.file_blocks * 4096.0 / MiB, in.file_ranges,
		       in.file_truncated ? " (full)" : "");
}

int cmd_restore_lazy(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lazy", no_argument, NULL, 'L' },
		{ "ledger", required_argument, NULL, 'l' },
		{ "region", required_argument, NULL, 'r' },
		{ "writers", required_argument, NULL, 'w' },
		{ "graduate-after", required_argument, NULL, 'g' },
		{ "no-prefetch", no_argument, NULL, 'N' },
		{ "reserve-hugepages", no_argument, NULL, 'H' },
		{ "working-set", required_argument, NULL, 'W' },
		{ "no-working-set", no_argument, NULL, 'X' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct rguest_opts go = { .threads = 1, .pattern = RGUEST_IDLE,
				     .seed = 99 };
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct rguest_hugepool hp = { 0 };
	const struct wps_image_region *reg;
	struct rguest_ledger *ledger = NULL, *now = NULL;
	struct lazy_reader *rd = NULL;
	struct wps_pager_stats st;
	struct wps_pager *pg = NULL;
	struct wps_image *img = NULL;
	struct rguest *g = NULL;
	struct wps_region dst;
	struct wps_wset_plan_opts wo = WPS_WSET_PLAN_OPTS_INIT;
	struct wps_wset_plan_info wi;
	struct wps_wset_plan *plan = NULL;
	uint8_t uuid[16];
	const char *ledger_path = NULL, *path;
	unsigned int region = 0, writers = 0, after_ms = 0;
	bool reader_running = false, paused = false, reserve = false;
	uint64_t t0, run_ns, bad;
	char why[256];
	int c, ret, status = 1;

	while ((c = getopt_long(argc, argv, "l:r:w:g:NHW:Xh", opts, NULL)) != -1) {
		switch (c) {
		case 'L': break;
		case 'l': ledger_path = optarg; break;
		case 'r': region = strtoul(optarg, NULL, 0); break;
		case 'w': writers = strtoul(optarg, NULL, 0); break;
		case 'g': after_ms = strtoul(optarg, NULL, 0); break;
		case 'N': po.no_prefetch = 1; break;
		case 'H': reserve = true; break;
		case 'W': wo.path = optarg; break;
		case 'X': wo.off = true; break;
		case 'h': usage(); return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "wpsnap restore: expected one IMAGE\n");
		return 2;
	}
	path = argv[optind];
	ret = open_flat(ctx, path, &img, uuid);
	if (ret) {
		fprintf(stderr, "wpsnap: %s: %s\n", path, strerror(-ret));
		return 1;
	}
	reg = wps_image_get_region(img, region);
	if (!reg || !rguest_backing_of(reg->backing, reg->page_size, &go.backing)) {
		fprintf(stderr, "wpsnap restore: %s: no region %u of a backing "
			"the reference guest can map\n", path, region);
		goto out;
	}
	if (ledger_path) {
		ret = rguest_ledger_read(ledger_path, &ledger);
		if (ret) {
			fprintf(stderr, "wpsnap restore: ledger %s: %s\n",
				ledger_path, strerror(-ret));
			goto out;
		}
	}
	if (reserve && go.backing == RGUEST_HUGETLB &&
	    rguest_hugepool_reserve(&hp, reg->size)) {
		fprintf(stderr, "wpsnap restore: %s\n", hp.why);
		goto out;
	}
	go.size = reg->size;
	if (writers) {
		go.threads = writers;
		go.pattern = RGUEST_RANDOM;
	}
	ret = rguest_new(&go, &g);
	if (ret) {
		fprintf(stderr, "wpsnap restore: cannot map %.0f MiB of %s "
			"memory: %s\n", reg->size / MiB,
			rguest_backing_name(go.backing), strerror(-ret));
		goto out;
	}
	if (ledger && (ret = rguest_adopt_ledger(g, ledger))) {
		fprintf(stderr, "wpsnap restore: ledger %s does not fit region "
			"%u\n", ledger_path, region);
		goto out;
	}
	rguest_region(g, &dst);
	ret = wps_wset_plan_new(ctx, img, path, uuid, region, &wo, &plan);
	if (ret) {
		fprintf(stderr, "wpsnap restore: working set: %s\n",
			strerror(-ret));
		goto out;
	}
	wps_wset_plan_get_info(plan, &wi);
	wset_say_plan(&wi);
	wps_wset_plan_apply(plan, &po);
	ret = wps_pager_new(ctx, img, region, &dst, &po, &pg);
	if (ret) {
		fprintf(stderr, "wpsnap restore: %s\n", strerror(-ret));
		goto out;
	}

	/* From here the guest runs: time to running is the pager's start. */
	t0 = wps_now_ns();
	ret = wps_pager_start(pg);
	if (ret) {
		fprintf(stderr, "wpsnap restore: cannot start the pager: %s\n",
			strerror(-ret));
		goto out;
	}
	if (writers && (ret = rguest_start(g))) {
		fprintf(stderr, "wpsnap restore: writers: %s\n", strerror(-ret));
		goto out;
	}
	run_ns = wps_now_ns() - t0;
	if (ledger) {
		rd = calloc(1, sizeof(*rd));
		if (!rd)
			goto out;
		rd->l = ledger;
		rd->mem = rguest_mem(g);
		rd->exact = !writers;
		if (pthread_create(&rd->tid, NULL, reader_main, rd)) {
			fprintf(stderr, "wpsnap restore: reader thread failed\n");
			goto out;
		}
		reader_running = true;
	}
	printf("guest running after %.3f ms (%.0f MiB %s, %u writer(s)%s)\n",
	       run_ns / 1e6, reg->size / MiB, rguest_backing_name(go.backing),
	       writers, wps_image_get_info(img)->remote ?
	       ", image over NBD" : "");
	if (after_ms)
		usleep(after_ms * 1000u);
	ret = wps_pager_graduate(pg);
	wps_pager_stats(pg, &st);
	if (ret) {
		fprintf(stderr, "wpsnap restore: graduation failed: %s%s\n",
			strerror(-ret), st.bad_offset ?
			" (damaged image data; the guest must be stopped)" : "");
		goto out;
	}
	if (reader_running) {
		atomic_store(&rd->stop, true);
		pthread_join(rd->tid, NULL);
		reader_running = false;
	}
	rguest_freeze_pause(g);
	paused = true;
	wset_record(plan, pg);
	printf("faults %llu (%llu zero), handler latency p50 %.1f us p99 %.1f us"
	       " max %.1f us\n", (unsigned long long)st.faults,
	       (unsigned long long)st.zero_faults, st.fault_p50_ns / 1e3,
	       st.fault_p99_ns / 1e3, st.fault_max_ns / 1e3);
	if (rd && rd->faulted.count)
		printf("guest-side faulting reads %llu: p50 %.1f us p99 %.1f us\n",
		       (unsigned long long)rd->faulted.count,
		       wps_histo_pct(&rd->faulted, 50) / 1e3,
		       wps_histo_pct(&rd->faulted, 99) / 1e3);
	printf("data %.1f MiB (%.1f by faults, %.1f prefetched, %.1f of it from "
	       "the working set): fully populated after %.1f ms (%.0f MiB/s), "
	       "graduated after %.1f ms\n",
	       st.data_bytes / MiB, st.fault_bytes / MiB,
	       st.prefetch_bytes / MiB, st.first_bytes / MiB, st.full_ns / 1e6,
	       st.full_ns ? st.data_bytes / MiB / (st.full_ns / 1e9) : 0.0,
	       st.graduate_ns / 1e6);
	if (rd) {
		if (rd->bad) {
			fprintf(stderr, "wpsnap restore: %llu of %llu reads during "
				"the restore were wrong (first: block %llu)\n",
				(unsigned long long)rd->bad,
				(unsigned long long)rd->touched,
				(unsigned long long)rd->bad_block);
			goto out;
		}
		printf("%llu reads during the restore matched the ledger\n",
		       (unsigned long long)rd->touched);
		ret = rguest_ledger(g, &now);
		if (ret) {
			fprintf(stderr, "wpsnap restore: guest ledger: %s\n",
				strerror(-ret));
			goto out;
		}
		ret = rguest_ledger_verify_mem(now, rguest_mem(g), &bad, why,
					    sizeof(why));
		if (ret) {
			fprintf(stderr, "wpsnap restore: memory differs from the "
				"ledger: %s\n", ret == -EBADMSG ? why
							: strerror(-ret));
			goto out;
		}
		printf("verified: every block as in %s%s\n", ledger_path,
		       writers ? " plus the writers' writes" : "");
	}
	status = 0;
out:
	if (reader_running) {
		/* Only on failure: the reader may be blocked on a page that
		 * will never come; freeing the pager poisons it (EFAULT/SIGBUS
		 * ends the process, which is the point: no wrong data). */
		atomic_store(&rd->stop, true);
		wps_pager_free(pg);
		pg = NULL;
		pthread_join(rd->tid, NULL);
	}
	if (paused)
		rguest_resume(g);
	wps_pager_free(pg);
	wps_wset_plan_free(plan);
	free(rd);
	rguest_ledger_free(now);
	rguest_ledger_free(ledger);
	rguest_free(g);
	rguest_hugepool_release(&hp);
	wps_image_close(img);
	return status;
}
