/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench: live snapshots of the reference guest, measured against
 * this machine's own limits in the same run (bench_base.c), reported as
 * ratios: machines are shared and absolute times drift, ratios do not.
 *
 * Owns: the options, the guest (created and freed here), each run's
 * snapshot and image file (deleted after the run), the RSS sampler thread
 * and its /proc/self/status fd, and the report (text table or JSON).
 * All state lives in struct bench; nothing is global.
 *
 * Progress goes to stderr, the report to stdout. Exit status: 0 when
 * everything was measured (targets are information, not verdicts), 1 when
 * a measurement failed, 2 for a usage error.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <wpsnap/wpsnap.h>

#include "tools/bench.h"
#include "tools/parse.h"
#include "tools/bench_base.h"
#include "tools/bench_ckpt.h"
#include "tools/bench_restore.h"
#include "tools/bench_tail.h"
#include "guest/guest.h"

#define MiB (1024.0 * 1024.0)
#define HUGE_2M (UINT64_C(2) << 20)

#define RAW_WRITE_CAP (2ull << 30)
#define RAW_WRITE_MIN (32ull << 20)
#define MEMCPY_BYTES (256ull << 20)
#define FORK_COW_PAGES 20000u
#define WARMUP_US 500000u
#define RATE_US 1000000u
#define SETTLE_US 200000u
#define SAMPLE_US 10000u
#define MAX_RUNS 1000u

/* Targets of DESIGN.md section 6. */
#define TARGET_STREAM_RATIO 0.9
#define TARGET_PAUSE_MS 1.5
#define TARGET_FAULT_P50_US 30.0
#define TARGET_FAULT_P99_US 150.0
#define TARGET_IMAGE_RATIO 1.01

struct bench_opts {
	uint64_t size;
	enum rguest_backing backing;
	enum rguest_pattern pattern;
	unsigned int threads;
	unsigned int populate_pct;
	const char *dir;
	bool freeze_simple;
	unsigned int fault_window;  /* 0: the library's default */
	unsigned int runs;
	bool baselines;
	bool json;
	bool quick;
	bool restore;
	bool checkpoint;
};

/* Machine baselines; NAN when not measured. */
struct bench_baselines {
	uint64_t raw_write_bytes;
	double memcpy_mib_s;
	double wp_raw_ms;
	double fork_pause_ms;
	double fork_cow_us;
	unsigned int fork_cow_pages;
	double stop_copy_pause_ms;
	uint64_t stop_copy_bytes;
};

/* One snapshot. Every field a double, NAN when not measured, so that
 * medians can be taken field by field. */
struct bench_run {
	double pause_ms;
	double protect_ms;
	double total_ms;
	double stream_mib_s;
	double fault_p50_us;        /* guest side, faulted (slow) writes */
	double fault_p99_us;
	double fault_max_us;        /* guest side, any write */
	double fault_handler_p50_us;
	double fault_handler_p99_us;
	double fault_handler_max_us;
	double faults;
	double fault_lane_share;    /* bytes saved by the fault path / all */
	double slow_writes;
	double guest_rate_during;
	double image_bytes;
	double image_file_bytes;
	double populated_bytes;     /* ledger: blocks written before the freeze */
	double stats_populated_bytes;
	double image_ratio;
	double tracker_rss_mib;
	double tracker_rss_measured_mib;
	double protect_rounds;
	double pause_protect_pages;
	double direct_io;
	double raw_write_mib_s;     /* baseline, measured before this run */
	double stream_vs_raw_write; /* this run's stream / its raw write */
	struct bench_tail tail;     /* where the slow faults' time went (not
				       a double: never medianed) */
};

/*
 * The process's anonymous RSS minus the guest's own resident pages,
 * sampled while a snapshot runs: what the snapshot really allocated.
 */
struct rss_sampler {
	pthread_t tid;
	bool running;
	int status_fd;              /* /proc/self/status, owned */
	const void *guest_mem;
	uint64_t guest_len;
	unsigned char *vec;         /* mincore vector, owned; NULL when the
				       guest's RSS cannot change */
	uint64_t base;              /* bytes, before the snapshot */
	uint64_t peak;
	int err;
	atomic_bool stop;
};

struct bench {
	struct wps_ctx *ctx;
	struct bench_opts o;
	struct bench_baselines base;
	struct rguest *g;        /* owned */
	double guest_rate_before;
	struct bench_run *runs;     /* o.runs of them, owned */
	json_t *notes;              /* array of strings, owned */
	char path[4096];            /* image of the current run */
};

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap bench [OPTIONS]\n"
		"Take live snapshots of the reference guest and measure them against\n"
		"this machine's own limits, measured in the same run. Every figure is\n"
		"also given as a ratio to its baseline.\n\n"
		"  --size SIZE        guest RAM (K/M/G suffixes; default 2G)\n"
		"  --backing KIND     anon|thp|memfd|hugetlb (default anon)\n"
		"  --pattern KIND     idle|random|seq|hot (default random)\n"
		"  --threads N        guest writer threads (default 1)\n"
		"  --populate PCT     share of guest RAM written before (default 100)\n"
		"  --dir DIR          image directory, must take O_DIRECT (default /var/tmp)\n"
		"  --freeze MODE      rounds|simple (default rounds)\n"
		"  --fault-window N   4 KiB pages saved per fault (1..64, default: library's)\n"
		"  --runs N           snapshots to take (default 3); medians are reported\n"
		"  --no-baselines     skip the machine baselines (their keys are null)\n"
		"  --json             JSON on stdout instead of a table\n"
		"  --quick            32M guest, 1 run (for make check)\n"
		"  --restore          eager restore vs raw O_DIRECT read of the image\n"
		"  --checkpoint       periodic checkpoints vs raw walk, memcpy, store\n"
		"  --help             this text\n\n"
		"Progress goes to stderr. Exit status 0 when everything was measured,\n"
		"whether or not the targets were met.\n");
}

static int parse_uint(const char *s, unsigned int min, unsigned int max,
		      unsigned int *out)
{
	uint64_t v;
	int err = tools_parse_u64(s, min, max, &v);

	if (!err)
		*out = (unsigned int)v;
	return err;
}

/* 0: run, 1: --help printed, -EINVAL: usage error (printed). */
static int parse_opts(struct bench_opts *o, int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "backing", required_argument, NULL, 'b' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "populate", required_argument, NULL, 'P' },
		{ "dir", required_argument, NULL, 'd' },
		{ "freeze", required_argument, NULL, 'f' },
		{ "fault-window", required_argument, NULL, 'w' },
		{ "runs", required_argument, NULL, 'r' },
		{ "no-baselines", no_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "quick", no_argument, NULL, 'q' },
		{ "restore", no_argument, NULL, 'R' },
		{ "checkpoint", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	bool size_set = false, runs_set = false;
	int c;

	*o = (struct bench_opts){
		.size = 2ull << 30, .backing = RGUEST_ANON,
		.pattern = RGUEST_RANDOM, .threads = 1, .populate_pct = 100,
		.dir = "/var/tmp", .runs = 3, .baselines = true,
	};
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (rguest_parse_size(optarg, &o->size) || o->size < HUGE_2M) {
				fprintf(stderr, "wpsnap bench: bad --size '%s' "
					"(at least 2M; K/M/G suffixes)\n", optarg);
				return -EINVAL;
			}
			size_set = true;
			break;
		case 'b':
			if (rguest_backing_parse(optarg, &o->backing)) {
				fprintf(stderr, "wpsnap bench: unknown backing "
					"'%s' (anon, thp, memfd, hugetlb)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'p':
			if (rguest_pattern_parse(optarg, &o->pattern)) {
				fprintf(stderr, "wpsnap bench: unknown pattern "
					"'%s' (idle, random, seq, hot)\n", optarg);
				return -EINVAL;
			}
			break;
		case 't':
			if (parse_uint(optarg, 1, 256, &o->threads)) {
				fprintf(stderr, "wpsnap bench: bad --threads "
					"'%s' (1..256)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'P':
			if (parse_uint(optarg, 0, 100, &o->populate_pct)) {
				fprintf(stderr, "wpsnap bench: bad --populate "
					"'%s' (0..100)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'd':
			o->dir = optarg;
			break;
		case 'f':
			if (!strcmp(optarg, "rounds")) {
				o->freeze_simple = false;
			} else if (!strcmp(optarg, "simple")) {
				o->freeze_simple = true;
			} else {
				fprintf(stderr, "wpsnap bench: unknown --freeze "
					"'%s' (rounds, simple)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'R':
			o->restore = true;
			break;
		case 'w':
			if (parse_uint(optarg, 1, 64, &o->fault_window)) {
				fprintf(stderr, "wpsnap bench: bad --fault-window "
					"'%s' (1..64, a power of two)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'r':
			if (parse_uint(optarg, 1, MAX_RUNS, &o->runs)) {
				fprintf(stderr, "wpsnap bench: bad --runs '%s' "
					"(1..1000)\n", optarg);
				return -EINVAL;
			}
			runs_set = true;
			break;
		case 'C': o->checkpoint = true; break;
		case 'n': o->baselines = false; break;
		case 'j': o->json = true; break;
		case 'q': o->quick = true; break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			fprintf(stderr, "Try 'wpsnap bench --help'.\n");
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "wpsnap bench: unexpected argument '%s'\n",
			argv[optind]);
		return -EINVAL;
	}
	if (o->checkpoint && !size_set)
		o->size = 512ull << 20;   /* every rate starts with a full image */
	if (o->quick) {
		if (!size_set)
			o->size = 32ull << 20;
		if (!runs_set)
			o->runs = 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static void note(struct bench *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void note(struct bench *b, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "bench: note: %s\n", buf);
	json_array_append_new(b->notes, json_string(buf));
}

static double ratio(double a, double b)
{
	if (isnan(a) || isnan(b) || b == 0)
		return NAN;
	return a / b;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Median over runs of the double at offset off of struct bench_run,
 * ignoring NANs. */
static double run_median(const struct bench *b, size_t off)
{
	double v[MAX_RUNS];
	unsigned int i, n = 0;

	for (i = 0; i < b->o.runs; i++) {
		double x = *(const double *)((const char *)&b->runs[i] + off);

		if (!isnan(x))
			v[n++] = x;
	}
	if (!n)
		return NAN;
	qsort(v, n, sizeof(v[0]), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double run_max(const struct bench *b, size_t off)
{
	double m = NAN;
	unsigned int i;

	for (i = 0; i < b->o.runs; i++) {
		double x = *(const double *)((const char *)&b->runs[i] + off);

		if (!isnan(x) && (isnan(m) || x > m))
			m = x;
	}
	return m;
}

#define MEDIAN(b, f) run_median(b, offsetof(struct bench_run, f))
#define MAXOF(b, f) run_max(b, offsetof(struct bench_run, f))

static uint64_t read_u64_file(const char *path, uint64_t dflt)
{
	unsigned long long v;
	FILE *f = fopen(path, "re");

	if (!f)
		return dflt;
	if (fscanf(f, "%llu", &v) != 1)
		v = dflt;
	fclose(f);
	return v;
}

/* hugetlb needs reserved 2 MiB pages; say how to get them. Only one
 * hugetlb buffer of the guest's size exists at a time. */
static int check_hugetlb(const struct bench_opts *o)
{
	const char *dir = "/sys/kernel/mm/hugepages/hugepages-2048kB";
	uint64_t need = (o->size + HUGE_2M - 1) / HUGE_2M, nr, freep;
	char path[128];

	snprintf(path, sizeof(path), "%s/nr_hugepages", dir);
	nr = read_u64_file(path, 0);
	snprintf(path, sizeof(path), "%s/free_hugepages", dir);
	freep = read_u64_file(path, 0);
	if (freep >= need)
		return 0;
	fprintf(stderr,
		"wpsnap bench: --backing hugetlb needs %" PRIu64 " free 2 MiB "
		"huge pages for --size %.0fM, but %" PRIu64 " are free (%"
		PRIu64 " reserved).\nReserve them as root with:\n"
		"    echo %" PRIu64 " > /proc/sys/vm/nr_hugepages\n"
		"(or choose a smaller --size).\n", need, o->size / MiB, freep,
		nr, nr + need - freep);
	return -ENOSPC;
}

static void hugetlb_hint(const struct bench_opts *o, int err)
{
	if (o->backing == RGUEST_HUGETLB && (err == -ENOSPC || err == -ENOMEM))
		fprintf(stderr, "wpsnap bench: the hugetlb pool is too small; "
			"reserve %" PRIu64 " more pages with "
			"'echo N > /proc/sys/vm/nr_hugepages'\n",
			(o->size + HUGE_2M - 1) / HUGE_2M);
}

static int check_dir(struct bench *b)
{
	const struct bench_opts *o = &b->o;
	int ret = bench_dir_check(o->dir);
	struct statfs sf;

	if (ret == -EINVAL)
		fprintf(stderr, "wpsnap bench: %s does not take O_DIRECT "
			"writes (tmpfs?); choose --dir on a disk filesystem "
			"such as ext4 or xfs\n", o->dir);
	else if (ret)
		fprintf(stderr, "wpsnap bench: cannot write a test file in "
			"%s: %s\n", o->dir, strerror(-ret));
	else if (!statfs(o->dir, &sf) && sf.f_type == TMPFS_MAGIC)
		note(b, "%s is tmpfs: it takes O_DIRECT, but write bandwidth "
		     "there is memory bandwidth, not a disk's", o->dir);
	return ret;
}

/* ------------------------------------------------------------------ */
/* RSS sampler                                                         */
/* ------------------------------------------------------------------ */

static int rss_sample(struct rss_sampler *s, uint64_t *out)
{
	char buf[8192], *p;
	unsigned long long kib;
	uint64_t anon, guest = 0;
	ssize_t n;
	int ret;

	n = pread(s->status_fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	p = strstr(buf, "\nRssAnon:");
	if (!p || sscanf(p + 9, "%llu", &kib) != 1)
		return -ENODATA;
	anon = (uint64_t)kib * 1024;
	if (s->vec) {
		ret = bench_resident(s->guest_mem, s->guest_len, s->vec, &guest);
		if (ret)
			return ret;
	}
	*out = anon > guest ? anon - guest : 0;
	return 0;
}

static void *rss_main(void *arg)
{
	struct rss_sampler *s = arg;
	uint64_t v;
	int ret;

	while (!atomic_load(&s->stop)) {
		ret = rss_sample(s, &v);
		if (ret) {
			s->err = ret;
			break;
		}
		if (v > s->peak)
			s->peak = v;
		usleep(SAMPLE_US);
	}
	return NULL;
}

/*
 * The guest's anonymous pages are part of RssAnon. They only change
 * during a snapshot when writers can reach never-populated blocks; then
 * the sampler subtracts the guest's resident bytes (mincore) each time.
 * Shared backings (memfd, hugetlb) are not in RssAnon at all.
 */
static int rss_start(struct rss_sampler *s, const struct bench *b)
{
	const struct bench_opts *o = &b->o;
	bool anon = o->backing == RGUEST_ANON || o->backing == RGUEST_THP;
	int ret;

	memset(s, 0, sizeof(*s));
	s->guest_mem = rguest_mem(b->g);
	s->guest_len = rguest_size(b->g);
	s->status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (s->status_fd < 0)
		return -errno;
	if (anon && o->populate_pct < 100 && o->pattern != RGUEST_IDLE) {
		s->vec = malloc(s->guest_len / 4096);
		if (!s->vec) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ret = rss_sample(s, &s->base);
	if (ret)
		goto fail;
	s->peak = s->base;
	ret = -pthread_create(&s->tid, NULL, rss_main, s);
	if (ret)
		goto fail;
	s->running = true;
	return 0;
fail:
	free(s->vec);
	s->vec = NULL;
	close(s->status_fd);
	s->status_fd = -1;
	return ret;
}

/* Stop the sampler; bytes above the pre-snapshot value, or -errno. */
static int rss_stop(struct rss_sampler *s, uint64_t *growth)
{
	uint64_t v;
	int ret;

	if (s->running) {
		atomic_store(&s->stop, true);
		pthread_join(s->tid, NULL);
		s->running = false;
	}
	ret = s->err;
	if (!ret && !rss_sample(s, &v) && v > s->peak)
		s->peak = v;
	free(s->vec);
	s->vec = NULL;
	if (s->status_fd >= 0)
		close(s->status_fd);
	s->status_fd = -1;
	*growth = s->peak - s->base;
	return ret;
}

/* ------------------------------------------------------------------ */
/* Steps                                                               */
/* ------------------------------------------------------------------ */

static int measure_baselines(struct bench *b)
{
	const struct bench_opts *o = &b->o;
	uint64_t mc = o->quick ? 32ull << 20 : MEMCPY_BYTES;
	const char *bk = rguest_backing_name(o->backing);
	struct bench_fork fk;
	int ret;

	fprintf(stderr, "bench: memcpy, %.0f MiB buffer ...\n", mc / MiB);
	ret = bench_memcpy(mc, &b->base.memcpy_mib_s);
	if (ret) {
		fprintf(stderr, "wpsnap bench: memcpy: %s\n", strerror(-ret));
		return ret;
	}
	fprintf(stderr, "bench:   %.0f MiB/s\n", b->base.memcpy_mib_s);

	fprintf(stderr, "bench: one UFFDIO_WRITEPROTECT of %.0f MiB %s, "
		"%u%% populated ...\n", o->size / MiB, bk, o->populate_pct);
	ret = bench_wp_raw(o->backing, o->size, o->populate_pct,
			   &b->base.wp_raw_ms);
	if (ret) {
		fprintf(stderr, "wpsnap bench: raw write-protect of %s "
			"memory: %s\n", bk, strerror(-ret));
		hugetlb_hint(o, ret);
		return ret;
	}
	fprintf(stderr, "bench:   %.3f ms\n", b->base.wp_raw_ms);

	fprintf(stderr, "bench: fork() with %.0f MiB %s, then CoW writes ...\n",
		o->size / MiB, bk);
	ret = bench_fork(o->backing, o->size, o->populate_pct,
			 FORK_COW_PAGES, &fk);
	if (ret) {
		fprintf(stderr, "wpsnap bench: fork baseline: %s\n",
			strerror(-ret));
		hugetlb_hint(o, ret);
		return ret;
	}
	b->base.fork_pause_ms = fk.pause_ms;
	b->base.fork_cow_us = fk.cow_valid ? fk.cow_us : NAN;
	b->base.fork_cow_pages = fk.cow_pages;
	if (fk.cow_valid)
		fprintf(stderr, "bench:   pause %.3f ms, CoW %.2f us/page "
			"(median of %u pages)\n", fk.pause_ms, fk.cow_us,
			fk.cow_pages);
	else
		fprintf(stderr, "bench:   pause %.3f ms\n", fk.pause_ms);
	if (o->backing == RGUEST_MEMFD || o->backing == RGUEST_HUGETLB)
		note(b, "fork_cow_us is null: %s memory is MAP_SHARED, so a "
		     "forked child shares it and writes after fork() take no "
		     "copy-on-write fault", bk);
	else if (!fk.cow_valid)
		note(b, "fork_cow_us is null: no populated pages to write");
	return 0;
}

/*
 * Raw O_DIRECT write bandwidth, measured right before each snapshot: disk
 * bandwidth of a shared machine drifts within seconds, so each run gets
 * its own baseline, taken in the same conditions (the guest running).
 */
static int measure_raw_write(struct bench *b, unsigned int idx, double *mib_s)
{
	const struct bench_opts *o = &b->o;
	uint64_t pop = (uint64_t)((double)o->size * o->populate_pct / 100.0);
	uint64_t raw = pop < RAW_WRITE_MIN ? RAW_WRITE_MIN : pop;
	int ret;

	if (raw > RAW_WRITE_CAP)
		raw = RAW_WRITE_CAP;
	raw = raw / BENCH_IO_SIZE * BENCH_IO_SIZE;
	ret = bench_raw_write(o->dir, raw, mib_s);
	if (ret) {
		fprintf(stderr, "wpsnap bench: raw write to %s: %s\n", o->dir,
			strerror(-ret));
		return ret;
	}
	b->base.raw_write_bytes = raw;
	fprintf(stderr, "bench: run %u/%u: raw O_DIRECT write of %.0f MiB, "
		"%u KiB x %u in flight: %.0f MiB/s\n", idx + 1, o->runs,
		raw / MiB, BENCH_IO_SIZE / 1024, BENCH_IO_DEPTH, *mib_s);
	return 0;
}

static int guest_setup(struct bench *b)
{
	const struct bench_opts *o = &b->o;
	struct rguest_opts go = {
		.size = o->size, .backing = o->backing, .threads = o->threads,
		.pattern = o->pattern, .populate_pct = o->populate_pct,
		.seed = 1,
	};
	uint64_t w0;
	int ret;

	fprintf(stderr, "bench: guest: %.0f MiB %s, %u writer thread%s (%s), "
		"%u%% populated ...\n", o->size / MiB,
		rguest_backing_name(o->backing), o->threads,
		o->threads == 1 ? "" : "s", rguest_pattern_name(o->pattern),
		o->populate_pct);
	ret = rguest_new(&go, &b->g);
	if (ret) {
		fprintf(stderr, "wpsnap bench: cannot create the guest (%.0f "
			"MiB %s): %s\n", o->size / MiB,
			rguest_backing_name(o->backing), strerror(-ret));
		hugetlb_hint(o, ret);
		return ret;
	}
	ret = rguest_start(b->g);
	if (ret) {
		fprintf(stderr, "wpsnap bench: starting the guest's writers: "
			"%s\n", strerror(-ret));
		return ret;
	}
	usleep(WARMUP_US);
	w0 = rguest_writes(b->g);
	usleep(RATE_US);
	b->guest_rate_before = (rguest_writes(b->g) - w0) / (RATE_US / 1e6);
	fprintf(stderr, "bench:   undisturbed: %.0f writes/s\n",
		b->guest_rate_before);
	if (o->pattern == RGUEST_IDLE)
		note(b, "pattern idle: the guest does not write, so there are "
		     "no faults and no write rates");
	return 0;
}

static int measure_stop_copy(struct bench *b)
{
	int ret;

	fprintf(stderr, "bench: stop-and-copy: pause the guest, write its "
		"memory with O_DIRECT, fdatasync, resume ...\n");
	ret = bench_stop_copy(b->g, b->o.dir, &b->base.stop_copy_pause_ms,
			      &b->base.stop_copy_bytes);
	if (ret) {
		fprintf(stderr, "wpsnap bench: stop-and-copy to %s: %s\n",
			b->o.dir, strerror(-ret));
		return ret;
	}
	fprintf(stderr, "bench:   pause %.1f ms for %.0f MiB\n",
		b->base.stop_copy_pause_ms, b->base.stop_copy_bytes / MiB);
	usleep(SETTLE_US);
	return 0;
}

/* Bytes of the blocks the guest had written at the freeze instant. */
static int ledger_populated(struct bench *b, uint64_t *bytes)
{
	struct rguest_ledger *l = NULL;
	uint64_t i, n = 0;
	int ret, ret2;

	ret = rguest_pause(b->g);
	if (ret)
		return ret;
	ret = rguest_ledger(b->g, &l);
	ret2 = rguest_resume(b->g);
	if (ret)
		return ret;
	if (ret2) {
		rguest_ledger_free(l);
		return ret2;
	}
	for (i = 0; i < l->nr_blocks; i++)
		n += l->gen[i] != 0;
	rguest_ledger_free(l);
	*bytes = n * RGUEST_BLOCK;
	return 0;
}

static void remove_image(const char *path)
{
	char partial[4200];

	unlink(path);
	snprintf(partial, sizeof(partial), "%s.partial", path);
	unlink(partial);
}

static int snapshot_run(struct bench *b, unsigned int idx, struct bench_run *r)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *snap = NULL;
	struct wps_snapshot_stats st;
	struct rguest_latency lat;
	struct rss_sampler rs = { .status_fd = -1 };
	struct bench_sched sched;
	struct wps_region reg;
	uint64_t w0, w1, growth = 0, pop = 0;
	int ret, ret2;

	rguest_region(b->g, &reg);
	so.path = b->path;
	so.flags = WPS_SNAP_OVERWRITE |
		(b->o.freeze_simple ? WPS_SNAP_FREEZE_SIMPLE : 0);
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = b->g;
	so.fault_window = b->o.fault_window;

	/* Before the sampler starts: the threads now are the guest's. */
	bench_sched_begin(&sched);
	ret = rss_start(&rs, b);
	if (ret) {
		fprintf(stderr, "wpsnap bench: RSS sampler: %s\n",
			strerror(-ret));
		return ret;
	}
	ret = wps_snapshot_new(b->ctx, &reg, 1, &so, &snap);
	if (ret) {
		fprintf(stderr, "wpsnap bench: run %u: preparing the snapshot "
			"in %s: %s\n", idx + 1, b->o.dir, strerror(-ret));
		goto out;
	}
	rguest_latency_reset(b->g);
	w0 = rguest_writes(b->g);
	ret = wps_snapshot_freeze(snap);
	if (ret) {
		fprintf(stderr, "wpsnap bench: run %u: freeze failed: %s\n",
			idx + 1, strerror(-ret));
		goto out;
	}
	ret = wps_snapshot_wait(snap);
	w1 = rguest_writes(b->g);
	bench_sched_end(&sched, &r->tail);
	if (ret) {
		fprintf(stderr, "wpsnap bench: run %u: SNAPSHOT FAILED: %s\n",
			idx + 1, strerror(-ret));
		goto out;
	}
	ret2 = rss_stop(&rs, &growth);
	wps_snapshot_stats(snap, &st);
	rguest_latency_get(b->g, &lat);
	ret = bench_tail_take(snap, &lat, &r->tail);
	if (ret)
		fprintf(stderr, "wpsnap bench: run %u: no fault breakdown: "
			"%s\n", idx + 1, strerror(-ret));

	ret = ledger_populated(b, &pop);
	if (ret) {
		fprintf(stderr, "wpsnap bench: run %u: reading the guest's "
			"ledger: %s\n", idx + 1, strerror(-ret));
		goto out;
	}

	r->pause_ms = st.pause_ns / 1e6;
	r->protect_ms = st.protect_ns / 1e6;
	r->total_ms = st.total_ns / 1e6;
	r->stream_mib_s = st.total_ns && pop ?
		pop / MiB / (st.total_ns / 1e9) : NAN;
	r->fault_p50_us = lat.slow_writes ? lat.slow_p50_ns / 1e3 : NAN;
	r->fault_p99_us = lat.slow_writes ? lat.slow_p99_ns / 1e3 : NAN;
	r->fault_max_us = lat.writes ? lat.max_ns / 1e3 : NAN;
	r->fault_handler_p50_us = st.faults ? st.fault_p50_ns / 1e3 : NAN;
	r->fault_handler_p99_us = st.faults ? st.fault_p99_ns / 1e3 : NAN;
	r->fault_handler_max_us = st.faults ? st.fault_max_ns / 1e3 : NAN;
	r->faults = (double)st.faults;
	r->fault_lane_share = st.saved_bytes ?
		(double)st.fault_bytes / st.saved_bytes : NAN;
	r->slow_writes = (double)lat.slow_writes;
	r->guest_rate_during = st.total_ns ?
		(w1 - w0) / (st.total_ns / 1e9) : NAN;
	r->image_bytes = (double)st.image_data_bytes;
	r->image_file_bytes = (double)st.image_file_bytes;
	r->populated_bytes = (double)pop;
	r->stats_populated_bytes = (double)st.populated_bytes;
	r->image_ratio = pop ? (double)st.image_data_bytes / pop : NAN;
	r->tracker_rss_mib = st.tracker_bytes / MiB;
	r->tracker_rss_measured_mib = ret2 ? NAN : growth / MiB;
	r->protect_rounds = st.protect_rounds;
	r->pause_protect_pages = (double)st.pause_protect_pages;
	r->direct_io = st.direct_io;
	if (ret2)
		fprintf(stderr, "bench: run %u: RSS sampling failed (%s); "
			"tracker_rss_measured_mib is null\n", idx + 1,
			strerror(-ret2));

	fprintf(stderr, "bench: run %u/%u: pause %.3f ms, total %.0f ms, "
		"%.0f MiB/s, %" PRIu64 " faults (guest p50 %.1f us, p99 %.1f "
		"us), image %.0f/%.0f MiB\n", idx + 1, b->o.runs, r->pause_ms,
		r->total_ms, r->stream_mib_s, st.faults, r->fault_p50_us,
		r->fault_p99_us, r->image_bytes / MiB, pop / MiB);
	ret = 0;
out:
	if (rs.status_fd >= 0)
		rss_stop(&rs, &growth);
	wps_snapshot_free(snap);
	remove_image(b->path);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Report                                                              */
/* ------------------------------------------------------------------ */

/* Everything reported, medians over runs; NAN: not measured. */
struct bench_summary {
	struct bench_run m;         /* medians (maxima for *_max_us) */
	double rate_ratio;
	double stream_vs_raw_write, stream_vs_memcpy;
	double pause_vs_wp_raw, pause_vs_fork_pause, pause_vs_stop_copy;
	double fault_p50_vs_fork_cow;
	double image_ratio;
};

static void summarize(const struct bench *b, struct bench_summary *s)
{
	struct bench_run *m = &s->m;

	m->pause_ms = MEDIAN(b, pause_ms);
	m->protect_ms = MEDIAN(b, protect_ms);
	m->total_ms = MEDIAN(b, total_ms);
	m->stream_mib_s = MEDIAN(b, stream_mib_s);
	m->fault_p50_us = MEDIAN(b, fault_p50_us);
	m->fault_p99_us = MEDIAN(b, fault_p99_us);
	m->fault_max_us = MAXOF(b, fault_max_us);
	m->fault_handler_p50_us = MEDIAN(b, fault_handler_p50_us);
	m->fault_handler_p99_us = MEDIAN(b, fault_handler_p99_us);
	m->fault_handler_max_us = MAXOF(b, fault_handler_max_us);
	m->faults = MEDIAN(b, faults);
	m->fault_lane_share = MEDIAN(b, fault_lane_share);
	m->slow_writes = MEDIAN(b, slow_writes);
	m->guest_rate_during = MEDIAN(b, guest_rate_during);
	m->image_bytes = MEDIAN(b, image_bytes);
	m->image_file_bytes = MEDIAN(b, image_file_bytes);
	m->populated_bytes = MEDIAN(b, populated_bytes);
	m->stats_populated_bytes = MEDIAN(b, stats_populated_bytes);
	m->image_ratio = MEDIAN(b, image_ratio);
	m->tracker_rss_mib = MEDIAN(b, tracker_rss_mib);
	m->tracker_rss_measured_mib = MAXOF(b, tracker_rss_measured_mib);
	m->protect_rounds = MEDIAN(b, protect_rounds);
	m->pause_protect_pages = MEDIAN(b, pause_protect_pages);
	m->direct_io = run_median(b, offsetof(struct bench_run, direct_io));
	m->raw_write_mib_s = MEDIAN(b, raw_write_mib_s);

	s->rate_ratio = ratio(m->guest_rate_during, b->guest_rate_before);
	/* Paired per run: each run's raw write ran seconds before it. */
	s->stream_vs_raw_write = MEDIAN(b, stream_vs_raw_write);
	s->stream_vs_memcpy = ratio(m->stream_mib_s, b->base.memcpy_mib_s);
	s->pause_vs_wp_raw = ratio(m->pause_ms, b->base.wp_raw_ms);
	s->pause_vs_fork_pause = ratio(m->pause_ms, b->base.fork_pause_ms);
	s->pause_vs_stop_copy = ratio(m->pause_ms, b->base.stop_copy_pause_ms);
	s->fault_p50_vs_fork_cow = ratio(m->fault_p50_us, b->base.fork_cow_us);
	s->image_ratio = m->image_ratio;
}

static json_t *jnum(double v)
{
	return isnan(v) ? json_null() : json_real(v);
}

static json_t *jint(double v)
{
	return isnan(v) ? json_null() : json_integer((json_int_t)(v + 0.5));
}

/* true/false, or null when either side is missing. */
static json_t *jcmp(double v, double limit, bool at_least)
{
	if (isnan(v))
		return json_null();
	return json_boolean(at_least ? v >= limit : v <= limit);
}

static json_t *run_json(const struct bench_run *r)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
			 " s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
			 " s:o, s:o}",
		"pause_ms", jnum(r->pause_ms),
		"protect_ms", jnum(r->protect_ms),
		"total_ms", jnum(r->total_ms),
		"stream_mib_s", jnum(r->stream_mib_s),
		"fault_p50_us", jnum(r->fault_p50_us),
		"fault_p99_us", jnum(r->fault_p99_us),
		"fault_max_us", jnum(r->fault_max_us),
		"fault_handler_p50_us", jnum(r->fault_handler_p50_us),
		"fault_handler_p99_us", jnum(r->fault_handler_p99_us),
		"fault_handler_max_us", jnum(r->fault_handler_max_us),
		"faults", jint(r->faults),
		"fault_lane_share", jnum(r->fault_lane_share),
		"guest_rate_during", jnum(r->guest_rate_during),
		"image_bytes", jint(r->image_bytes),
		"populated_bytes", jint(r->populated_bytes),
		"image_ratio", jnum(r->image_ratio),
		"tracker_rss_mib", jnum(r->tracker_rss_mib),
		"tracker_rss_measured_mib", jnum(r->tracker_rss_measured_mib),
		"protect_rounds", jint(r->protect_rounds),
		"pause_protect_pages", jint(r->pause_protect_pages),
		"direct_io", json_boolean(r->direct_io > 0),
		"raw_write_mib_s", jnum(r->raw_write_mib_s),
		"stream_vs_raw_write", jnum(r->stream_vs_raw_write),
		"fault_breakdown", bench_tail_json(&r->tail));
}

/* The run whose slowest fault was slowest: its breakdown is the report's
 * (a median of breakdowns would explain no fault at all). */
static const struct bench_tail *worst_tail(const struct bench *b)
{
	const struct bench_tail *w = NULL;
	unsigned int i;

	for (i = 0; i < b->o.runs; i++)
		if (b->runs[i].tail.valid &&
		    (!w || b->runs[i].tail.max.total_us > w->max.total_us))
			w = &b->runs[i].tail;
	return w;
}

static json_t *build_json(const struct bench *b, const struct bench_summary *s)
{
	const struct bench_run *m = &s->m;
	const struct bench_baselines *bl = &b->base;
	json_t *root, *runs, *config, *host;
	struct utsname un;
	unsigned int i;

	root = json_object();
	if (!root)
		return NULL;
#define SETN(k, v) json_object_set_new(root, k, jnum(v))
#define SETI(k, v) json_object_set_new(root, k, jint(v))
	SETN("pause_ms", m->pause_ms);
	SETN("protect_ms", m->protect_ms);
	SETN("total_ms", m->total_ms);
	SETN("stream_mib_s", m->stream_mib_s);
	SETN("raw_write_mib_s", m->raw_write_mib_s);
	SETN("memcpy_mib_s", bl->memcpy_mib_s);
	SETN("fault_p50_us", m->fault_p50_us);
	SETN("fault_p99_us", m->fault_p99_us);
	SETN("fault_max_us", m->fault_max_us);
	SETN("fault_handler_p50_us", m->fault_handler_p50_us);
	SETN("fault_handler_p99_us", m->fault_handler_p99_us);
	SETN("fault_handler_max_us", m->fault_handler_max_us);
	SETI("faults", m->faults);
	SETN("fault_lane_share", m->fault_lane_share);
	SETI("slow_writes", m->slow_writes);
	SETN("guest_rate_before", b->guest_rate_before);
	SETN("guest_rate_during", m->guest_rate_during);
	SETN("guest_rate_ratio", s->rate_ratio);
	SETN("fork_pause_ms", bl->fork_pause_ms);
	SETN("fork_cow_us", bl->fork_cow_us);
	SETN("wp_raw_ms", bl->wp_raw_ms);
	SETN("stop_copy_pause_ms", bl->stop_copy_pause_ms);
	SETI("stop_copy_bytes", isnan(bl->stop_copy_pause_ms) ? NAN :
	     (double)bl->stop_copy_bytes);
	SETI("image_bytes", m->image_bytes);
	SETI("image_file_bytes", m->image_file_bytes);
	SETI("populated_bytes", m->populated_bytes);
	SETI("populated_bytes_stats", m->stats_populated_bytes);
	SETN("image_ratio", m->image_ratio);
	SETN("tracker_rss_mib", m->tracker_rss_mib);
	SETN("tracker_rss_measured_mib", m->tracker_rss_measured_mib);
	SETI("protect_rounds", m->protect_rounds);
	SETI("pause_protect_pages", m->pause_protect_pages);
	json_object_set_new(root, "fault_breakdown", worst_tail(b) ?
			    bench_tail_json(worst_tail(b)) : json_null());
	json_object_set_new(root, "direct_io", json_boolean(m->direct_io > 0));
#undef SETN
#undef SETI

	json_object_set_new(root, "ratios", json_pack(
		"{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
		"stream_vs_raw_write", jnum(s->stream_vs_raw_write),
		"stream_vs_memcpy", jnum(s->stream_vs_memcpy),
		"pause_vs_wp_raw", jnum(s->pause_vs_wp_raw),
		"pause_vs_fork_pause", jnum(s->pause_vs_fork_pause),
		"pause_vs_stop_copy", jnum(s->pause_vs_stop_copy),
		"guest_rate_during_vs_before", jnum(s->rate_ratio),
		"fault_p50_vs_fork_cow", jnum(s->fault_p50_vs_fork_cow),
		"image_vs_populated", jnum(s->image_ratio)));
	json_object_set_new(root, "targets", json_pack(
		"{s:o, s:o, s:o, s:o, s:o}",
		"stream_ge_0.9_raw_write",
		jcmp(s->stream_vs_raw_write, TARGET_STREAM_RATIO, true),
		"pause_le_1.5_ms", jcmp(m->pause_ms, TARGET_PAUSE_MS, false),
		"fault_p50_le_30_us",
		jcmp(m->fault_p50_us, TARGET_FAULT_P50_US, false),
		"fault_p99_le_150_us",
		jcmp(m->fault_p99_us, TARGET_FAULT_P99_US, false),
		"image_ratio_le_1.01",
		jcmp(m->image_ratio, TARGET_IMAGE_RATIO, false)));

	config = json_pack("{s:I, s:s, s:s, s:i, s:i, s:s, s:i, s:i, s:s, "
			   "s:b, s:b, s:I, s:i}",
		"size", (json_int_t)rguest_size(b->g),
		"backing", rguest_backing_name(b->o.backing),
		"pattern", rguest_pattern_name(b->o.pattern),
		"threads", (int)b->o.threads,
		"populate_pct", (int)b->o.populate_pct,
		"freeze", b->o.freeze_simple ? "simple" : "rounds",
		"fault_window", (int)b->o.fault_window,
		"runs", (int)b->o.runs,
		"dir", b->o.dir,
		"baselines", b->o.baselines,
		"quick", b->o.quick,
		"raw_write_bytes", (json_int_t)b->base.raw_write_bytes,
		"fork_cow_pages", (int)b->base.fork_cow_pages);
	json_object_set_new(root, "config", config);
	host = json_object();
	if (host && !uname(&un)) {
		json_object_set_new(host, "kernel", json_string(un.release));
		json_object_set_new(host, "machine", json_string(un.machine));
	}
	if (host)
		json_object_set_new(host, "cpus",
				    json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
	json_object_set_new(root, "host", host);

	runs = json_array();
	for (i = 0; runs && i < b->o.runs; i++)
		json_array_append_new(runs, run_json(&b->runs[i]));
	json_object_set_new(root, "runs", runs);
	json_object_set(root, "notes", b->notes);
	return root;
}

static void fmt(char *buf, size_t len, double v, int prec)
{
	if (isnan(v))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.*f", prec, v);
}

static const char *verdict(double v, double limit, bool at_least)
{
	if (isnan(v))
		return "?";
	return (at_least ? v >= limit : v <= limit) ? "yes" : "NO";
}

static void row(const char *fig, double w, double base, double r,
		int prec, const char *target)
{
	char a[32], c[32], d[32];

	fmt(a, sizeof(a), w, prec);
	fmt(c, sizeof(c), base, prec);
	fmt(d, sizeof(d), r, 3);
	printf("%-36s | %12s | %12s | %8s | %s\n", fig, a, c, d, target);
}

static void print_table(const struct bench *b, const struct bench_summary *s)
{
	const struct bench_run *m = &s->m;
	const struct bench_baselines *bl = &b->base;
	char t[64];
	size_t i, nn;

	printf("wpsnap bench: %.0f MiB %s, %s writes, %u thread%s, %u%% "
	       "populated, freeze %s, %u run%s (medians), images in %s%s\n\n",
	       rguest_size(b->g) / MiB, rguest_backing_name(b->o.backing),
	       rguest_pattern_name(b->o.pattern), b->o.threads,
	       b->o.threads == 1 ? "" : "s", b->o.populate_pct,
	       b->o.freeze_simple ? "simple" : "rounds", b->o.runs,
	       b->o.runs == 1 ? "" : "s", b->o.dir,
	       m->direct_io > 0 ? "" : " (NOT O_DIRECT)");
	printf("%-36s | %12s | %12s | %8s | %s\n", "figure", "wpsnap",
	       "baseline", "ratio", "target");
	printf("%.36s-+-%.12s-+-%.12s-+-%.8s-+-%.16s\n",
	       "------------------------------------",
	       "------------", "------------", "--------", "----------------");

	snprintf(t, sizeof(t), "<= %.1f ms: %s", TARGET_PAUSE_MS,
		 verdict(m->pause_ms, TARGET_PAUSE_MS, false));
	row("pause ms vs raw WRITEPROTECT", m->pause_ms, bl->wp_raw_ms,
	    s->pause_vs_wp_raw, 3, t);
	row("pause ms vs fork() pause", m->pause_ms, bl->fork_pause_ms,
	    s->pause_vs_fork_pause, 3, "");
	row("pause ms vs stop-and-copy pause", m->pause_ms,
	    bl->stop_copy_pause_ms, s->pause_vs_stop_copy, 3, "");
	row("  write-protect in pause ms", m->protect_ms, NAN, NAN, 3, "");
	snprintf(t, sizeof(t), ">= %.2f raw: %s", TARGET_STREAM_RATIO,
		 verdict(s->stream_vs_raw_write, TARGET_STREAM_RATIO, true));
	row("stream MiB/s vs raw O_DIRECT write", m->stream_mib_s,
	    m->raw_write_mib_s, s->stream_vs_raw_write, 0, t);
	row("stream MiB/s vs memcpy", m->stream_mib_s, bl->memcpy_mib_s,
	    s->stream_vs_memcpy, 0, "");
	row("total ms", m->total_ms, NAN, NAN, 1, "");
	snprintf(t, sizeof(t), "<= %.0f us: %s", TARGET_FAULT_P50_US,
		 verdict(m->fault_p50_us, TARGET_FAULT_P50_US, false));
	row("fault p50 us (guest) vs fork CoW", m->fault_p50_us,
	    bl->fork_cow_us, s->fault_p50_vs_fork_cow, 1, t);
	snprintf(t, sizeof(t), "<= %.0f us: %s", TARGET_FAULT_P99_US,
		 verdict(m->fault_p99_us, TARGET_FAULT_P99_US, false));
	row("fault p99 us (guest)", m->fault_p99_us, NAN, NAN, 1, t);
	row("write max us (guest, max of runs)", m->fault_max_us, NAN, NAN, 1,
	    "");
	row("fault p50 us (handler)", m->fault_handler_p50_us, NAN, NAN, 1, "");
	row("fault p99 us (handler)", m->fault_handler_p99_us, NAN, NAN, 1, "");
	row("faults", m->faults, NAN, NAN, 0, "");
	row("guest writes/s during vs before", m->guest_rate_during,
	    b->guest_rate_before, s->rate_ratio, 0, "");
	snprintf(t, sizeof(t), "<= %.2f: %s", TARGET_IMAGE_RATIO,
		 verdict(s->image_ratio, TARGET_IMAGE_RATIO, false));
	row("image MiB vs populated MiB", m->image_bytes / MiB,
	    m->populated_bytes / MiB, s->image_ratio, 1, t);
	row("image file MiB (allocated)", m->image_file_bytes / MiB, NAN, NAN,
	    1, "");
	row("tracker MiB (accounted)", m->tracker_rss_mib, NAN, NAN, 1, "");
	row("tracker MiB (RSS growth, max)", m->tracker_rss_measured_mib, NAN,
	    NAN, 1, "");
	row("protect rounds", m->protect_rounds, NAN, NAN, 0, "");
	row("pages re-protected in pause", m->pause_protect_pages, NAN, NAN, 0,
	    "");
	if (worst_tail(b))
		bench_tail_print(worst_tail(b));

	nn = json_array_size(b->notes);
	if (nn)
		printf("\n");
	for (i = 0; i < nn; i++)
		printf("note: %s\n", json_string_value(json_array_get(b->notes, i)));
}

/* ------------------------------------------------------------------ */
/* Entry                                                               */
/* ------------------------------------------------------------------ */

static void baselines_unset(struct bench_baselines *bl)
{
	memset(bl, 0, sizeof(*bl));
	bl->memcpy_mib_s = NAN;
	bl->wp_raw_ms = NAN;
	bl->fork_pause_ms = NAN;
	bl->fork_cow_us = NAN;
	bl->stop_copy_pause_ms = NAN;
}

static int bench_run_all(struct bench *b)
{
	struct bench_summary s;
	json_t *root;
	unsigned int i;
	int ret;

	ret = check_dir(b);
	if (ret)
		return ret;
	if (b->o.backing == RGUEST_HUGETLB) {
		ret = check_hugetlb(&b->o);
		if (ret)
			return ret;
	}
	if (b->o.baselines) {
		ret = measure_baselines(b);
		if (ret)
			return ret;
	}
	ret = guest_setup(b);
	if (ret)
		return ret;
	if (b->o.baselines) {
		ret = measure_stop_copy(b);
		if (ret)
			return ret;
	}
	if ((size_t)snprintf(b->path, sizeof(b->path), "%s/wpsnap-bench.%d.wpsnap",
			     b->o.dir, (int)getpid()) >= sizeof(b->path))
		return -ENAMETOOLONG;
	for (i = 0; i < b->o.runs; i++) {
		if (b->o.baselines) {
			ret = measure_raw_write(b, i, &b->runs[i].raw_write_mib_s);
			if (ret)
				return ret;
			usleep(SETTLE_US);
		}
		ret = snapshot_run(b, i, &b->runs[i]);
		if (ret)
			return ret;
		b->runs[i].stream_vs_raw_write = ratio(b->runs[i].stream_mib_s,
						       b->runs[i].raw_write_mib_s);
		usleep(SETTLE_US);
	}
	if (!b->runs[0].direct_io)
		note(b, "the image was not written with O_DIRECT, so stream "
		     "bandwidth is not comparable with raw_write_mib_s");
	if (b->o.baselines)
		note(b, "raw_write_mib_s: median of one raw write of %.0f MiB "
		     "(the guest's populated bytes, capped at %.0f MiB) right "
		     "before each snapshot",
		     b->base.raw_write_bytes / MiB, RAW_WRITE_CAP / MiB);

	summarize(b, &s);
	if (b->o.json) {
		root = build_json(b, &s);
		if (!root || json_dumpf(root, stdout, JSON_INDENT(2) |
					JSON_PRESERVE_ORDER |
					JSON_REAL_PRECISION(10))) {
			json_decref(root);
			fprintf(stderr, "wpsnap bench: cannot write JSON\n");
			return -EIO;
		}
		json_decref(root);
		printf("\n");
	} else {
		print_table(b, &s);
	}
	return fflush(stdout) ? -errno : 0;
}

int bench_main(struct wps_ctx *ctx, int argc, char **argv)
{
	struct bench b = { .ctx = ctx };
	unsigned int i;
	int ret;

	ret = parse_opts(&b.o, argc, argv);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (b.o.checkpoint) {
		struct bench_ckpt_opts co = {
			.size = b.o.size,
			.backing = b.o.backing, .dir = b.o.dir,
			.count = b.o.quick ? 3 : 20, .json = b.o.json,
			.quick = b.o.quick,
		};

		return bench_checkpoint(ctx, &co) ? 1 : 0;
	}
	if (b.o.restore) {
		struct bench_restore_opts ro = {
			.size = b.o.size, .backing = b.o.backing,
			.populate_pct = b.o.populate_pct, .dir = b.o.dir,
			.runs = b.o.runs, .json = b.o.json,
		};

		return bench_restore(ctx, &ro) ? 1 : 0;
	}
	baselines_unset(&b.base);
	b.guest_rate_before = NAN;
	b.notes = json_array();
	b.runs = calloc(b.o.runs, sizeof(*b.runs));
	if (!b.notes || !b.runs) {
		fprintf(stderr, "wpsnap bench: out of memory\n");
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < b.o.runs; i++) {
		b.runs[i].tracker_rss_measured_mib = NAN;
		b.runs[i].raw_write_mib_s = NAN;
		b.runs[i].stream_vs_raw_write = NAN;
	}
	ret = bench_run_all(&b);
out:
	rguest_free(b.g);
	free(b.runs);
	json_decref(b.notes);
	return ret ? 1 : 0;
}
