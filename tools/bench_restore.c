/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench --restore. Takes one snapshot of the reference guest, then
 * per run:
 *  - local: a raw libaio O_DIRECT read of the same bytes of the same file,
 *    with the loader's I/O shape (1 MiB requests, 16 in flight), an eager
 *    restore (wps_image_load) into fresh guest memory of the same backing,
 *    and a lazy restore with a probe thread touching random pages (the
 *    guest's view of fault latency) until graduation;
 *  - remote: the same image exported by nbdkit (read-only, over a Unix
 *    socket, started and stopped here), read raw over the same NBD
 *    connections the loader uses (no checksums, no guest memory), copied
 *    by nbdcopy to nowhere, restored eagerly and lazily from the URI;
 *  - working set: a guest that, once resumed, reads a fixed list of blocks
 *    in a fixed order (its working set), timed until it has read every
 *    one once, after a lazy restore (a) with no working-set information,
 *    (b) with the fault order recorded by restore (a) of the same image,
 *    stored in and loaded from an "<image>.wset" file by the working-set
 *    plan every lazy restore uses (src/wsplan.c).
 * Ratios are against what the disk, or the NBD server, gives a plain
 * reader right now, in the same run.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libaio.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wset.h>

#include "tools/bench_base.h"
#include "tools/bench_restore.h"
#include "wp/histo.h"

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
	t0 = wps_now_ns();
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
	*mib_s = done / MiB / ((wps_now_ns() - t0) / 1e9);
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
	struct rguest_opts go = { .size = o->size, .backing = o->backing,
				     .threads = 1, .pattern = RGUEST_IDLE,
				     .populate_pct = o->populate_pct, .seed = 3 };
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *s = NULL;
	struct rguest *g = NULL;
	struct wps_region r;
	int ret;

	ret = rguest_new(&go, &g);
	if (ret)
		return ret;
	rguest_region(g, &r);
	so.path = path;
	so.flags = WPS_SNAP_OVERWRITE;
	ret = wps_snapshot_new(ctx, &r, 1, &so, &s);
	if (!ret)
		ret = wps_snapshot_freeze(s);
	if (!ret)
		ret = wps_snapshot_wait(s);
	wps_snapshot_free(s);
	rguest_free(g);
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


/* ------------------------------------------------------------------ */
/* lazy restore, seen from the guest                                   */
/* ------------------------------------------------------------------ */

/* A touch slower than this took a fault (a cached load is ~100 ns). */
#define PROBE_FAULTED_NS 2000u

struct probe {
	const uint8_t *mem;
	uint64_t nr_blocks;
	atomic_bool stop;
	struct wps_histo faulted;
};

/* The guest: loads from random pages, timing each. */
static void *probe_main(void *arg)
{
	struct probe *p = arg;
	uint64_t x = 0x9e3779b97f4a7c15ull, b, t0, dt;

	while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b = x % p->nr_blocks;
		t0 = wps_now_ns();
		(void)*(const volatile uint64_t *)(const void *)
			(p->mem + b * WPS_IMG_BLOCK_SIZE);
		dt = wps_now_ns() - t0;
		if (dt >= PROBE_FAULTED_NS)
			wps_histo_add(&p->faulted, dt);
	}
	return NULL;
}

struct lazy_fig {
	double p50_us, p99_us;  /* guest side, faulting touches */
	double h50_us, h99_us;  /* the pager's handler (message .. wake) */
	double full_ms;         /* start .. every page present */
	double mib_s;           /* image data / full_ms */
};

static int lazy_run(struct wps_ctx *ctx, struct wps_image *img,
		    const struct rguest_opts *fo, struct lazy_fig *f)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct wps_pager_stats st;
	struct wps_pager *pg = NULL;
	struct rguest *g = NULL;
	struct probe *p = NULL;
	struct wps_region dst;
	pthread_t tid;
	int ret;

	ret = rguest_new(fo, &g);
	if (ret)
		return ret;
	p = calloc(1, sizeof(*p));
	if (!p) {
		ret = -ENOMEM;
		goto out;
	}
	rguest_region(g, &dst);
	ret = wps_pager_new(ctx, img, 0, &dst, &po, &pg);
	if (!ret)
		ret = wps_pager_start(pg);
	if (ret)
		goto out;
	p->mem = rguest_mem(g);
	p->nr_blocks = rguest_size(g) / WPS_IMG_BLOCK_SIZE;
	ret = -pthread_create(&tid, NULL, probe_main, p);
	if (ret)
		goto out;
	ret = wps_pager_graduate(pg);
	atomic_store(&p->stop, true);
	if (ret) {
		/* The probe may be blocked on an undelivered page: freeing
		 * the pager poisons it (SIGBUS), never wrong data. */
		wps_pager_free(pg);
		pg = NULL;
	}
	pthread_join(tid, NULL);
	if (ret)
		goto out;
	wps_pager_stats(pg, &st);
	f->p50_us = p->faulted.count ? wps_histo_pct(&p->faulted, 50) / 1e3 : NAN;
	f->p99_us = p->faulted.count ? wps_histo_pct(&p->faulted, 99) / 1e3 : NAN;
	f->h50_us = st.faults ? st.fault_p50_ns / 1e3 : NAN;
	f->h99_us = st.faults ? st.fault_p99_ns / 1e3 : NAN;
	f->full_ms = st.full_ns / 1e6;
	f->mib_s = st.full_ns ? st.data_bytes / MiB / (st.full_ns / 1e9) : NAN;
out:
	wps_pager_free(pg);
	free(p);
	rguest_free(g);
	return ret;
}

/* ------------------------------------------------------------------ */
/* working set: time for the guest to read it once after resume        */
/* ------------------------------------------------------------------ */

/* The working set: 1/16 of the blocks, as runs of WS_RUN blocks (a data
 * structure spans pages) at random places, read in a random but fixed
 * order. Each block is read whole, as a program using it would. */
#define WS_RUN 4u
#define WS_FRACTION 16u

struct ws_list {
	uint64_t *block;    /* first block of each run, in touch order */
	size_t n;
};

static int ws_pick(uint64_t nr_blocks, struct ws_list *ws)
{
	uint64_t x = 0x2545f4914f6cdd1dull, slots = nr_blocks / WS_RUN;
	size_t i;

	ws->n = nr_blocks / WS_FRACTION / WS_RUN;
	if (!ws->n || !slots)
		return -EINVAL;
	ws->block = malloc(ws->n * sizeof(*ws->block));
	if (!ws->block)
		return -ENOMEM;
	for (i = 0; i < ws->n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		ws->block[i] = x % slots * WS_RUN;
	}
	return 0;
}

struct ws_fig {
	double ms;          /* resume .. every block of the set read once */
	uint64_t faults;    /* faults served until then */
	uint64_t first_bytes;
};

/*
 * One lazy restore whose guest reads the working set once, prefetching by
 * plan and recording the fault order of the whole restore through it.
 */
static int ws_run(struct wps_ctx *ctx, struct wps_image *img,
		  const struct rguest_opts *fo, const struct ws_list *ws,
		  struct wps_wset_plan *plan, struct ws_fig *f)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct wps_pager_stats st;
	struct wps_pager *pg = NULL;
	struct rguest *g = NULL;
	struct wps_region dst;
	const uint64_t *mem;
	uint64_t t0, sum = 0;
	size_t i, j;
	int ret;

	ret = rguest_new(fo, &g);
	if (ret)
		return ret;
	rguest_region(g, &dst);
	wps_wset_plan_apply(plan, &po);
	ret = wps_pager_new(ctx, img, 0, &dst, &po, &pg);
	if (ret)
		goto out;
	mem = rguest_mem(g);
	ret = wps_pager_start(pg);
	if (ret)
		goto out;
	/* The guest resumes here. */
	t0 = wps_now_ns();
	for (i = 0; i < ws->n; i++)
		for (j = ws->block[i] * 512; j < (ws->block[i] + WS_RUN) * 512; j++)
			sum += ((const volatile uint64_t *)mem)[j];
	f->ms = (wps_now_ns() - t0) / 1e6;
	wps_pager_stats(pg, &st);
	f->faults = st.faults;
	f->first_bytes = st.first_bytes;
	/* Keep the reads: the sum depends on every one of them. */
	__asm__ volatile("" : : "r"(sum));
	ret = wps_pager_graduate(pg);
	if (!ret)
		ret = wps_wset_plan_record(plan, pg);
out:
	wps_pager_free(pg);
	rguest_free(g);
	return ret;
}

/*
 * Restore (a) without working-set information, record its fault order in
 * "<image>.wset" through the working-set plan of every lazy restore
 * (<wpsnap/wset.h>), then restore (b) with the plan loaded back from that
 * file. Both leave out the image's written-pages blob, so the recorded
 * order is the only difference between them.
 */
static int ws_pair(struct wps_ctx *ctx, struct wps_image *img,
		   const char *path, const struct rguest_opts *fo,
		   const struct ws_list *ws, struct ws_fig *a, struct ws_fig *b)
{
	struct wps_wset_plan_opts wo = WPS_WSET_PLAN_OPTS_INIT;
	struct wps_wset_plan *plan = NULL;
	char wpath[4200];
	int ret;

	wo.no_written = true;
	ret = wps_wset_path(path, wpath, sizeof(wpath));
	if (ret)
		return ret;
	unlink(wpath);
	ret = wps_wset_plan_new(ctx, img, path, NULL, 0, &wo, &plan);
	if (!ret)
		ret = ws_run(ctx, img, fo, ws, plan, a);
	wps_wset_plan_free(plan);
	plan = NULL;
	wo.no_save = true;
	if (!ret)
		ret = wps_wset_plan_new(ctx, img, path, NULL, 0, &wo, &plan);
	if (!ret)
		ret = ws_run(ctx, img, fo, ws, plan, b);
	wps_wset_plan_free(plan);
	unlink(wpath);
	return ret;
}

/* ------------------------------------------------------------------ */
/* remote: nbdkit, raw NBD reads, nbdcopy                              */
/* ------------------------------------------------------------------ */

/* nbdkit serving path read-only on a Unix socket; 0 with *pid, or -errno
 * (-ENOENT: nbdkit is not installed). */
static int nbdkit_start(const char *path, const char *sock, pid_t *pid)
{
	char *argv[] = { "nbdkit", "-f", "-r", "--exit-with-parent", "-U",
			 (char *)sock, "file", (char *)path, NULL };
	struct stat st;
	int i, status;

	*pid = fork();
	if (*pid < 0)
		return -errno;
	if (!*pid) {
		int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	for (i = 0; i < 500; i++) {
		if (!stat(sock, &st))
			return 0;
		if (waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = 0;
			return WIFEXITED(status) && WEXITSTATUS(status) == 127 ?
			       -ENOENT : -EIO;
		}
		usleep(10000);
	}
	kill(*pid, SIGTERM);
	waitpid(*pid, NULL, 0);
	*pid = 0;
	return -ETIMEDOUT;
}

static void nbdkit_stop(pid_t pid, const char *sock)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	unlink(sock);
}

/* nbdcopy of the whole export to nowhere: MiB/s of the file, or NAN. */
static double nbdcopy_run(const char *uri, uint64_t bytes)
{
	char *argv[] = { "nbdcopy", (char *)uri, "null:", NULL };
	uint64_t t0 = wps_now_ns();
	int status;
	pid_t pid;

	pid = fork();
	if (pid < 0)
		return NAN;
	if (!pid) {
		int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		return NAN;
	return bytes / MiB / ((wps_now_ns() - t0) / 1e9);
}

#define RAW_NBD_CHUNK (2u << 20)    /* the remote loader's chunk */

struct raw_nbd {
	struct wps_image *img;
	uint64_t off, len;
	atomic_uint_fast64_t next;
	atomic_int err;
};

static void *raw_nbd_main(void *arg)
{
	struct raw_nbd *rn = arg;
	uint8_t *buf = malloc(RAW_NBD_CHUNK);
	uint64_t c, l;
	int ret;

	if (!buf) {
		atomic_store(&rn->err, -ENOMEM);
		return NULL;
	}
	while (!atomic_load(&rn->err)) {
		c = atomic_fetch_add(&rn->next, 1) * RAW_NBD_CHUNK;
		if (c >= rn->len)
			break;
		l = rn->len - c < RAW_NBD_CHUNK ? rn->len - c : RAW_NBD_CHUNK;
		ret = wps_image_pread(rn->img, buf, l, rn->off + c);
		if (ret)
			atomic_store(&rn->err, ret);
	}
	free(buf);
	return NULL;
}

/* Raw reads of [off, off + len) over the image's bulk NBD connections,
 * one reader per connection, the eager loader's chunks: what the server
 * and the network give without checksums or guest memory. */
static int raw_nbd_read(struct wps_image *img, uint64_t off, uint64_t len,
			double *mib_s)
{
	unsigned int n = wps_image_get_info(img)->connections, i, nt = 0;
	struct raw_nbd rn = { .img = img, .off = off, .len = len };
	pthread_t tid[8];
	uint64_t t0;

	n = n > 1 ? n - 1 : 1;      /* the bulk ones */
	if (n > 8)
		n = 8;
	atomic_init(&rn.next, 0);
	atomic_init(&rn.err, 0);
	t0 = wps_now_ns();
	for (i = 0; i < n; i++)
		if (!pthread_create(&tid[nt], NULL, raw_nbd_main, &rn))
			nt++;
	if (!nt)
		return -EAGAIN;
	for (i = 0; i < nt; i++)
		pthread_join(tid[i], NULL);
	*mib_s = len / MiB / ((wps_now_ns() - t0) / 1e9);
	return atomic_load(&rn.err);
}

struct remote_figs {
	double raw[MAX_RUNS], load[MAX_RUNS], copy[MAX_RUNS];
	double vs_raw[MAX_RUNS], vs_copy[MAX_RUNS];
	double lz_p50[MAX_RUNS], lz_p99[MAX_RUNS], lz_ms[MAX_RUNS];
	double lz_mib[MAX_RUNS], lz_vs_raw[MAX_RUNS];
	unsigned int connections;
	bool measured;
	char why[160];          /* not measured: why */
};

static int remote_runs(struct wps_ctx *ctx, const struct bench_restore_opts *o,
		       const char *path, const struct rguest_opts *fo,
		       unsigned int runs, struct remote_figs *rf)
{
	struct wps_image_load_stats ls;
	const struct wps_image_region *ir;
	struct wps_image *img = NULL;
	struct rguest *g = NULL;
	char sock[4200], uri[4400];
	struct lazy_fig lf;
	struct stat st;
	unsigned int i;
	pid_t pid = 0;
	int ret;

	snprintf(sock, sizeof(sock), "%s/wps-bench-nbd.%d.sock", o->dir,
		 (int)getpid());
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", sock);
	ret = nbdkit_start(path, sock, &pid);
	if (ret) {
		snprintf(rf->why, sizeof(rf->why), "%s",
			 ret == -ENOENT ? "nbdkit is not installed" :
			 "nbdkit did not start");
		fprintf(stderr, "wpsnap bench --restore: no remote figures: %s\n",
			rf->why);
		return 0;
	}
	ret = wps_image_open(ctx, uri, 0, &img);
	if (ret) {
		fprintf(stderr, "wpsnap bench --restore: %s: %s\n", uri,
			strerror(-ret));
		goto out;
	}
	ir = wps_image_get_region(img, 0);
	rf->connections = wps_image_get_info(img)->connections;
	if (stat(path, &st)) {
		ret = -errno;
		goto out;
	}
	for (i = 0; i < runs; i++) {
		fprintf(stderr, "  run %u: over NBD: raw reads, nbdcopy, eager "
			"and lazy restore\n", i + 1);
		ret = raw_nbd_read(img, DATA_OFFSET, ir->size, &rf->raw[i]);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: raw NBD reads: "
				"%s\n", strerror(-ret));
			goto out;
		}
		rf->copy[i] = nbdcopy_run(uri, (uint64_t)st.st_size);
		ret = rguest_new(fo, &g);
		if (!ret)
			ret = wps_image_load(img, 0, rguest_mem(g), &ls);
		rguest_free(g);
		g = NULL;
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: eager restore "
				"over NBD: %s\n", strerror(-ret));
			goto out;
		}
		rf->load[i] = ls.bytes / MiB / (ls.ns / 1e9);
		rf->vs_raw[i] = rf->load[i] / rf->raw[i];
		rf->vs_copy[i] = rf->load[i] / rf->copy[i];
		ret = lazy_run(ctx, img, fo, &lf);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: lazy restore "
				"over NBD: %s\n", strerror(-ret));
			goto out;
		}
		rf->lz_p50[i] = lf.p50_us;
		rf->lz_p99[i] = lf.p99_us;
		rf->lz_ms[i] = lf.full_ms;
		rf->lz_mib[i] = lf.mib_s;
		rf->lz_vs_raw[i] = lf.mib_s / rf->raw[i];
	}
	rf->measured = true;
out:
	wps_image_close(img);
	nbdkit_stop(pid, sock);
	return ret;
}

/* Median of the values that were measured (NAN: none was). */
static double median_of(const double *v, unsigned int n)
{
	double tmp[MAX_RUNS];
	unsigned int i, m = 0;

	for (i = 0; i < n; i++)
		if (!isnan(v[i]))
			tmp[m++] = v[i];
	return m ? median(tmp, m) : NAN;
}

/* Per-run figures, in run order (null where not measured). */
static json_t *num_array(const double *v, unsigned int n)
{
	json_t *a = json_array();
	unsigned int i;

	for (i = 0; a && i < n; i++)
		json_array_append_new(a, isnan(v[i]) ? json_null() : json_real(v[i]));
	return a;
}

static json_t *num_or_null(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

int bench_restore(struct wps_ctx *ctx, const struct bench_restore_opts *o)
{
	double raw[MAX_RUNS], load[MAX_RUNS], ms[MAX_RUNS], ratio[MAX_RUNS];
	double lz_p50[MAX_RUNS], lz_p99[MAX_RUNS], lz_ms[MAX_RUNS];
	double lz_mib[MAX_RUNS], lz_vs_raw[MAX_RUNS], lz_vs_eager[MAX_RUNS];
	double lz_h50[MAX_RUNS], lz_h99[MAX_RUNS];
	double ws_a[MAX_RUNS], ws_b[MAX_RUNS], ws_ratio[MAX_RUNS];
	double ws_fa[MAX_RUNS], ws_fb[MAX_RUNS];
	struct rguest_opts fo = { .size = o->size, .backing = o->backing,
				     .threads = 1, .pattern = RGUEST_IDLE };
	struct ws_list wl = { 0 };
	struct ws_fig wa, wb;
	struct remote_figs *rf = NULL;
	struct wps_image_load_stats ls;
	const struct wps_image_region *ir;
	struct wps_image *img = NULL;
	struct rguest *g = NULL;
	struct lazy_fig lf;
	char path[4096];
	uint64_t bytes = 0;
	unsigned int i, runs = o->runs > MAX_RUNS ? MAX_RUNS : o->runs;
	int ret;

	snprintf(path, sizeof(path), "%s/wpsnap-bench-restore.%d.wpsnap",
		 o->dir, (int)getpid());
	fprintf(stderr, "wpsnap bench --restore: snapshot of %.0f MiB %s "
		"into %s\n", o->size / MiB, rguest_backing_name(o->backing),
		path);
	rf = calloc(1, sizeof(*rf));
	if (!rf) {
		ret = -ENOMEM;
		goto out;
	}
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
	ret = ws_pick(ir->nr_blocks, &wl);
	if (ret)
		goto out;
	for (i = 0; i < runs; i++) {
		fprintf(stderr, "  run %u: raw read, then eager and lazy "
			"restore\n", i + 1);
		/* The bytes the loader reads: region 0's data area up to its
		 * last present block (all of it for a fully populated guest). */
		ret = raw_read(path, DATA_OFFSET, ir->size, &raw[i]);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: raw read of %s: "
				"%s\n", path, strerror(-ret));
			goto out;
		}
		ret = rguest_new(&fo, &g);
		if (!ret)
			ret = wps_image_load(img, 0, rguest_mem(g), &ls);
		rguest_free(g);
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
		ret = lazy_run(ctx, img, &fo, &lf);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: lazy restore: "
				"%s\n", strerror(-ret));
			goto out;
		}
		lz_p50[i] = lf.p50_us;
		lz_p99[i] = lf.p99_us;
		lz_ms[i] = lf.full_ms;
		lz_mib[i] = lf.mib_s;
		lz_vs_raw[i] = lf.mib_s / raw[i];
		lz_vs_eager[i] = lf.full_ms / ms[i];
		lz_h50[i] = lf.h50_us;
		lz_h99[i] = lf.h99_us;
		ret = ws_pair(ctx, img, path, &fo, &wl, &wa, &wb);
		if (ret) {
			fprintf(stderr, "wpsnap bench --restore: working-set "
				"runs: %s\n", strerror(-ret));
			goto out;
		}
		ws_a[i] = wa.ms;
		ws_b[i] = wb.ms;
		ws_ratio[i] = wb.ms / wa.ms;
		ws_fa[i] = (double)wa.faults;
		ws_fb[i] = (double)wb.faults;
	}
	ret = remote_runs(ctx, o, path, &fo, runs, rf);
	if (ret)
		goto out;
	if (!rf->measured)
		for (i = 0; i < runs; i++)
			rf->raw[i] = rf->load[i] = rf->copy[i] = rf->vs_raw[i] =
			rf->vs_copy[i] = rf->lz_p50[i] = rf->lz_p99[i] =
			rf->lz_ms[i] = rf->lz_mib[i] = rf->lz_vs_raw[i] = NAN;
	if (o->json) {
		json_t *j = json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:i}",
				      "backing", rguest_backing_name(o->backing),
				      "size", (json_int_t)o->size,
				      "restore_bytes", (json_int_t)bytes,
				      "restore_ms", median(ms, runs),
				      "restore_mib_s", median(load, runs),
				      "raw_read_mib_s", median(raw, runs),
				      "restore_vs_raw_read", median(ratio, runs),
				      "runs", (int)runs);
		char *s = NULL;

		if (j) {
			json_object_set_new(j, "lazy_fault_p50_us", num_or_null(median_of(lz_p50, runs)));
			json_object_set_new(j, "lazy_fault_p99_us", num_or_null(median_of(lz_p99, runs)));
			json_object_set_new(j, "lazy_full_ms", num_or_null(median_of(lz_ms, runs)));
			json_object_set_new(j, "lazy_mib_s", num_or_null(median_of(lz_mib, runs)));
			json_object_set_new(j, "lazy_vs_raw_read", num_or_null(median_of(lz_vs_raw, runs)));
			json_object_set_new(j, "lazy_handler_p50_us", num_or_null(median_of(lz_h50, runs)));
			json_object_set_new(j, "lazy_handler_p99_us", num_or_null(median_of(lz_h99, runs)));
			json_object_set_new(j, "lazy_full_vs_eager", num_or_null(median_of(lz_vs_eager, runs)));
			json_object_set_new(j, "lazy_full_vs_eager_runs", num_array(lz_vs_eager, runs));
			json_object_set_new(j, "ws_bytes", json_integer((json_int_t)(wl.n * WS_RUN * WPS_IMG_BLOCK_SIZE)));
			json_object_set_new(j, "ws_no_wset_ms", json_real(median(ws_a, runs)));
			json_object_set_new(j, "ws_wset_ms", json_real(median(ws_b, runs)));
			json_object_set_new(j, "ws_wset_vs_no_wset", json_real(median(ws_ratio, runs)));
			json_object_set_new(j, "ws_no_wset_faults", json_real(median(ws_fa, runs)));
			json_object_set_new(j, "ws_wset_faults", json_real(median(ws_fb, runs)));
			json_object_set_new(j, "nbd_connections", json_integer(rf->connections));
			json_object_set_new(j, "nbd_raw_read_mib_s", num_or_null(median_of(rf->raw, runs)));
			json_object_set_new(j, "nbdcopy_mib_s", num_or_null(median_of(rf->copy, runs)));
			json_object_set_new(j, "nbd_restore_mib_s", num_or_null(median_of(rf->load, runs)));
			json_object_set_new(j, "nbd_restore_vs_raw_nbd", num_or_null(median_of(rf->vs_raw, runs)));
			json_object_set_new(j, "nbd_restore_vs_nbdcopy", num_or_null(median_of(rf->vs_copy, runs)));
			json_object_set_new(j, "nbd_lazy_fault_p50_us", num_or_null(median_of(rf->lz_p50, runs)));
			json_object_set_new(j, "nbd_lazy_fault_p99_us", num_or_null(median_of(rf->lz_p99, runs)));
			json_object_set_new(j, "nbd_lazy_full_ms", num_or_null(median_of(rf->lz_ms, runs)));
			json_object_set_new(j, "nbd_lazy_mib_s", num_or_null(median_of(rf->lz_mib, runs)));
			json_object_set_new(j, "nbd_lazy_vs_raw_nbd", num_or_null(median_of(rf->lz_vs_raw, runs)));
			if (!rf->measured)
				json_object_set_new(j, "nbd_not_measured", json_string(rf->why));
			s = json_dumps(j, JSON_INDENT(2));
		}
		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(j);
	} else {
		printf("restore of %.0f MiB (%s), %u runs, medians\n",
		       bytes / MiB, rguest_backing_name(o->backing), runs);
		printf("local image\n");
		printf("  eager restore  %.1f ms, %.0f MiB/s\n", median(ms, runs),
		       median(load, runs));
		printf("  raw O_DIRECT read of the same bytes  %.0f MiB/s\n",
		       median(raw, runs));
		printf("  ratio          %.3f (target >= 0.90)\n",
		       median(ratio, runs));
		printf("  lazy restore   guest-side fault p50 %.1f us p99 %.1f us; "
		       "fully populated in %.1f ms, %.0f MiB/s (%.2f of raw)\n",
		       median_of(lz_p50, runs), median_of(lz_p99, runs),
		       median_of(lz_ms, runs), median_of(lz_mib, runs),
		       median_of(lz_vs_raw, runs));
		printf("  lazy vs eager  full population %.2fx the eager restore "
		       "(target <= 1.20); pager handler p50 %.1f us p99 %.1f us\n",
		       median_of(lz_vs_eager, runs), median_of(lz_h50, runs),
		       median_of(lz_h99, runs));
		printf("  working set    %.1f MiB in runs of %u blocks, read once "
		       "after resume: %.2f ms without working-set info (%.0f "
		       "faults), %.2f ms with the order recorded by that restore "
		       "(%.0f faults): ratio %.2f\n",
		       wl.n * WS_RUN * 4096.0 / MiB, WS_RUN, median(ws_a, runs),
		       median(ws_fa, runs), median(ws_b, runs),
		       median(ws_fb, runs), median(ws_ratio, runs));
		if (!rf->measured) {
			printf("remote image: not measured (%s)\n", rf->why);
		} else {
			printf("remote image (nbdkit over a Unix socket, %u NBD "
			       "connections)\n", rf->connections);
			printf("  eager restore  %.0f MiB/s\n",
			       median_of(rf->load, runs));
			printf("  raw NBD reads of the same bytes  %.0f MiB/s "
			       "(ratio %.3f)\n", median_of(rf->raw, runs),
			       median_of(rf->vs_raw, runs));
			printf("  nbdcopy of the export            %.0f MiB/s "
			       "(ratio %.3f)\n", median_of(rf->copy, runs),
			       median_of(rf->vs_copy, runs));
			printf("  lazy restore   guest-side fault p50 %.1f us p99 "
			       "%.1f us; fully populated in %.1f ms, %.0f MiB/s "
			       "(%.2f of raw NBD)\n",
			       median_of(rf->lz_p50, runs),
			       median_of(rf->lz_p99, runs),
			       median_of(rf->lz_ms, runs),
			       median_of(rf->lz_mib, runs),
			       median_of(rf->lz_vs_raw, runs));
		}
	}
out:
	free(wl.block);
	free(rf);
	wps_image_close(img);
	unlink(path);
	return ret;
}
