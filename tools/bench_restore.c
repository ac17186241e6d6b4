/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench --restore. Takes one snapshot of the reference guest, then
 * per run: a raw libaio O_DIRECT read of the same bytes of the same file,
 * with the loader's I/O shape (1 MiB requests, 16 in flight), and an eager
 * restore (wps_image_load) into fresh guest memory of the same backing.
 * The ratio of the two is the figure: restore bandwidth against what the
 * disk gives a plain reader right now.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libaio.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/image.h>

#include "tools/bench_base.h"
#include "tools/bench_restore.h"

#define MiB (1024.0 * 1024.0)
#define MAX_RUNS 100

/* Region 0's data starts at the first 2 MiB boundary (docs/FORMAT.md). */
#define DATA_OFFSET (2ull << 20)

/* Sequential O_DIRECT read of [off, off + len) into a ring of buffers. */
static int raw_read(const char *path, uint64_t off, uint64_t len, double *mib_s)
{
	struct iocb iocbs[BENCH_IO_DEPTH], *ptr;
	struct io_event ev[BENCH_IO_DEPTH];
	io_context_t aio = 0;
	uint8_t *ring = NULL;
	uint64_t next = 0, done = 0, t0;
	unsigned int inflight = 0, i;
	int fd, ret = 0, n;

	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ring = aligned_alloc(4096, (size_t)BENCH_IO_DEPTH * BENCH_IO_SIZE);
	ret = ring ? io_setup(BENCH_IO_DEPTH, &aio) : -ENOMEM;
	if (ret)
		goto out;
	t0 = bench_now_ns();
	for (i = 0; i < BENCH_IO_DEPTH && next < len; i++) {
		uint64_t l = len - next < BENCH_IO_SIZE ? len - next : BENCH_IO_SIZE;

		io_prep_pread(&iocbs[i], fd, ring + (size_t)i * BENCH_IO_SIZE, l,
			      (long long)(off + next));
		ptr = &iocbs[i];
		ret = io_submit(aio, 1, &ptr);
		if (ret != 1)
			goto out;
		next += l;
		inflight++;
	}
	ret = 0;
	while (inflight) {
		n = io_getevents(aio, 1, BENCH_IO_DEPTH, ev, NULL);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ret = n;
			goto out;
		}
		for (i = 0; i < (unsigned int)n; i++) {
			struct iocb *cb = ev[i].obj;

			if ((long)ev[i].res <= 0) {
				ret = (long)ev[i].res < 0 ? (int)ev[i].res : -EIO;
				goto out;
			}
			done += ev[i].res;
			inflight--;
			if (next < len) {
				uint64_t l = len - next < BENCH_IO_SIZE ?
					     len - next : BENCH_IO_SIZE;

				io_prep_pread(cb, fd, cb->u.c.buf, l,
					      (long long)(off + next));
				if (io_submit(aio, 1, &cb) != 1) {
					ret = -EIO;
					goto out;
				}
				next += l;
				inflight++;
			}
		}
	}
	*mib_s = done / MiB / ((bench_now_ns() - t0) / 1e9);
out:
	if (aio)
		io_destroy(aio);
	free(ring);
	close(fd);
	return ret < 0 ? ret : 0;
}

static int take_image(struct wps_ctx *ctx, const struct bench_restore_opts *o,
		      const char *path)
{
	struct wps_guest_opts go = { .size = o->size, .backing = o->backing,
				     .threads = 1, .pattern = WPS_GUEST_IDLE,
				     .populate_pct = o->populate_pct, .seed = 3 };
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *s = NULL;
	struct wps_guest *g = NULL;
	struct wps_region r;
	int ret;

	ret = wps_guest_new(&go, &g);
	if (ret)
		return ret;
	wps_guest_region(g, &r);
	so.path = path;
	so.flags = WPS_SNAP_OVERWRITE;
	ret = wps_snapshot_new(ctx, &r, 1, &so, &s);
	if (!ret)
		ret = wps_snapshot_freeze(s);
	if (!ret)
		ret = wps_snapshot_wait(s);
	wps_snapshot_free(s);
	wps_guest_free(g);
	return ret;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int bench_restore(struct wps_ctx *ctx, const struct bench_restore_opts *o)
{
	double raw[MAX_RUNS], load[MAX_RUNS], ms[MAX_RUNS], ratio[MAX_RUNS];
	struct wps_guest_opts fo = { .size = o->size, .backing = o->backing,
				     .threads = 1, .pattern = WPS_GUEST_IDLE };
	struct wps_image_load_stats ls;
	const struct wps_image_region *ir;
	struct wps_image *img = NULL;
	struct wps_guest *g = NULL;
	char path[4096];
	uint64_t bytes = 0;
	unsigned int i, runs = o->runs > MAX_RUNS ? MAX_RUNS : o->runs;
	int ret;

	snprintf(path, sizeof(path), "%s/wpsnap-bench-restore.%d.wpsnap",
		 o->dir, (int)getpid());
	fprintf(stderr, "wpsnap bench --restore: snapshot of %.0f MiB %s "
		"into %s\n", o->size / MiB, wps_guest_backing_name(o->backing),
		path);
	ret = take_image(ctx, o, path);
	if (ret) {
		fprintf(stderr, "wpsnap bench --restore: snapshot failed: %s\n",
			strerror(-ret));
		goto out;
	}
	ret = wps_image_open(ctx, path, 0, &img);
	if (ret)
		goto out;
	ir = wps_image_get_region(img, 0);
	for (i = 0; i < runs; i++) {
		fprintf(stderr, "  run %u: raw read, then eager restore\n", i + 1);
		/* The bytes the loader reads: region 0's data area up to its
		 * last present block (all of it for a fully populated guest). */
		ret = raw_read(path, DATA_OFFSET, ir->size, &raw[i]);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: raw read of %s: "
				"%s\n", path, strerror(-ret));
			goto out;
		}
		ret = wps_guest_new(&fo, &g);
		if (!ret)
			ret = wps_image_load(img, 0, wps_guest_mem(g), &ls);
		wps_guest_free(g);
		g = NULL;
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: restore: %s\n",
				strerror(-ret));
			goto out;
		}
		bytes = ls.bytes;
		ms[i] = ls.ns / 1e6;
		load[i] = ls.bytes / MiB / (ls.ns / 1e9);
		ratio[i] = load[i] / raw[i];
	}
	if (o->json) {
		json_t *j = json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:i}",
				      "backing", wps_guest_backing_name(o->backing),
				      "size", (json_int_t)o->size,
				      "restore_bytes", (json_int_t)bytes,
				      "restore_ms", median(ms, runs),
				      "restore_mib_s", median(load, runs),
				      "raw_read_mib_s", median(raw, runs),
				      "restore_vs_raw_read", median(ratio, runs),
				      "runs", (int)runs);
		char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;

		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(j);
	} else {
		printf("eager restore of %.0f MiB (%s), %u runs, medians\n",
		       bytes / MiB, wps_guest_backing_name(o->backing), runs);
		printf("  restore        %.1f ms, %.0f MiB/s\n", median(ms, runs),
		       median(load, runs));
		printf("  raw O_DIRECT read of the same bytes  %.0f MiB/s\n",
		       median(raw, runs));
		printf("  ratio          %.3f (target >= 0.90)\n",
		       median(ratio, runs));
	}
out:
	wps_image_close(img);
	unlink(path);
	return ret;
}
