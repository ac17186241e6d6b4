/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap-guest: run the reference guest on its own, either to measure the
 * writers' undisturbed write rate, or to take a live snapshot of itself
 * through libwpsnap and check the image, block by block, against the
 * ledger of the freeze instant. Exit status 0 only if that check passed.
 *
 * This file owns the command line, the messages, and the optional
 * reservation of huge pages (the guest library never changes system
 * settings); everything else is guest/ and libwpsnap.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <wpsnap/client.h>
#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "base/clock.h"
#include "guest/guest.h"

#define PROG "wpsnap-guest"
#define NR_HUGE "/proc/sys/vm/nr_hugepages"
#define HUGE_2M (2ull << 20)

struct args {
	struct rguest_opts g;
	double warmup, duration;
	const char *snapshot, *ledger;
	bool overwrite, reserve_huge;
	const char *daemon, *name;   /* --daemon SOCKET, --name GUEST */
	bool self_pause, verify_self, device_state;
	const char *restore, *restore_ledger;   /* --restore IMG --restore-ledger L */
	bool restore_no_wset;                   /* --restore-no-working-set */
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " [options]\n"
"Run the reference guest: guest RAM written by vCPU-like threads.\n"
"\n"
"  --size SIZE          guest RAM, e.g. 256M, 1G (default 256M)\n"
"  --backing KIND       anon | thp | memfd | hugetlb (default anon)\n"
"  --threads N          writer threads (default 2)\n"
"  --pattern P          idle | seq | random | hot (default random)\n"
"  --populate PCT       percent of RAM written before the start (default 100)\n"
"  --seed N             seed of population and writers (default 1)\n"
"  --rate MIB/S         all writers together write this much (default: as\n"
"                       fast as they can)\n"
"  --warmup SECONDS     writers run this long first (default 0.5)\n"
"  --duration SECONDS   without --snapshot: measure this long (default 2)\n"
"  --snapshot PATH      take a live snapshot into PATH and verify it\n"
"  --ledger FILE        also write the ledger of the freeze to FILE (a %%u in\n"
"                       FILE: one per pause, numbered from 1)\n"
"  --overwrite          replace an existing image at PATH\n"
"  --reserve-hugepages  grow " NR_HUGE " as needed (undone at exit)\n"
"  --daemon SOCKET      hand guest RAM to wpsnapd at SOCKET and answer its\n"
"                       pause/resume requests (backing memfd or hugetlb);\n"
"                       with --snapshot the snapshot goes through the daemon,\n"
"                       else serve third-party snapshots for --duration\n"
"                       (SIGUSR1 ends the serving early, like --duration)\n"
"                       (--ledger: the ledger of each freeze, written at once)\n"
"  --name NAME          guest name at the daemon (default guest-PID)\n"
"  --self-pause         with --daemon --snapshot: pause the vCPUs before the\n"
"                       start command (vcpus-paused) instead of on request\n"
"  --restore IMG        with --daemon: start on empty RAM, lazily restored\n"
"                       by wpsnapd from IMG (a file or nbd:// URI), writers\n"
"                       running from the first instant (--restore-ledger L:\n"
"                       IMG's ledger, which --verify-self then checks;\n"
"                       --restore-no-working-set: \"working-set\": false)\n"
"  --device-state       with --daemon: hand a device state with each pause\n"
"                       (\"wpsnap-guest NAME pause N\", N from 1)\n"
"  --verify-self        at the end: check guest RAM against the ledger of\n"
"                       this instant, then write every block once\n"
"  --help               this text\n"
"\n"
"Exit status: 0 on success (with --snapshot: the image matched the ledger).\n");
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v > max || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_secs(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0) || v > 1e6)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	enum { O_SIZE = 256, O_BACKING, O_THREADS, O_PATTERN, O_POPULATE, O_SEED,
	       O_WARMUP, O_DURATION, O_SNAPSHOT, O_LEDGER, O_OVERWRITE,
	       O_RESERVE, O_HELP, O_DAEMON, O_NAME, O_SELF_PAUSE, O_VERIFY_SELF,
	       O_DEVICE_STATE, O_RESTORE, O_RESTORE_LEDGER, O_RATE,
	       O_RESTORE_NO_WSET };
	static const struct option lo[] = {
		{ "size", required_argument, NULL, O_SIZE },
		{ "backing", required_argument, NULL, O_BACKING },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "pattern", required_argument, NULL, O_PATTERN },
		{ "populate", required_argument, NULL, O_POPULATE },
		{ "seed", required_argument, NULL, O_SEED },
		{ "warmup", required_argument, NULL, O_WARMUP },
		{ "duration", required_argument, NULL, O_DURATION },
		{ "snapshot", required_argument, NULL, O_SNAPSHOT },
		{ "ledger", required_argument, NULL, O_LEDGER },
		{ "overwrite", no_argument, NULL, O_OVERWRITE },
		{ "reserve-hugepages", no_argument, NULL, O_RESERVE },
		{ "help", no_argument, NULL, O_HELP },
		{ "daemon", required_argument, NULL, O_DAEMON },
		{ "name", required_argument, NULL, O_NAME },
		{ "self-pause", no_argument, NULL, O_SELF_PAUSE },
		{ "verify-self", no_argument, NULL, O_VERIFY_SELF },
		{ "device-state", no_argument, NULL, O_DEVICE_STATE },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "restore-ledger", required_argument, NULL, O_RESTORE_LEDGER },
		{ "restore-no-working-set", no_argument, NULL, O_RESTORE_NO_WSET },
		{ "rate", required_argument, NULL, O_RATE },
		{ NULL, 0, NULL, 0 },
	};
	double rate_mib = 0;
	uint64_t v;
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		ret = 0;
		switch (c) {
		case O_SIZE:
			ret = rguest_parse_size(optarg, &a->g.size);
			if (!ret && !a->g.size)
				ret = -EINVAL;
			break;
		case O_BACKING:
			ret = rguest_backing_parse(optarg, &a->g.backing);
			break;
		case O_THREADS:
			ret = parse_uint(optarg, 1024, &v);
			if (!ret && !v)
				ret = -EINVAL;
			a->g.threads = (unsigned int)v;
			break;
		case O_PATTERN:
			ret = rguest_pattern_parse(optarg, &a->g.pattern);
			break;
		case O_POPULATE:
			ret = parse_uint(optarg, 100, &v);
			a->g.populate_pct = (unsigned int)v;
			break;
		case O_SEED:
			ret = parse_uint(optarg, UINT64_MAX, &a->g.seed);
			break;
		case O_WARMUP:
			ret = parse_secs(optarg, &a->warmup);
			break;
		case O_DURATION:
			ret = parse_secs(optarg, &a->duration);
			break;
		case O_SNAPSHOT:
			a->snapshot = optarg;
			break;
		case O_LEDGER:
			a->ledger = optarg;
			break;
		case O_OVERWRITE:
			a->overwrite = true;
			break;
		case O_RESERVE:
			a->reserve_huge = true;
			break;
		case O_DAEMON:
			a->daemon = optarg;
			break;
		case O_NAME:
			a->name = optarg;
			break;
		case O_SELF_PAUSE:
			a->self_pause = true;
			break;
		case O_VERIFY_SELF:
			a->verify_self = true;
			break;
		case O_DEVICE_STATE:
			a->device_state = true;
			break;
		case O_RESTORE:
			a->restore = optarg;
			a->g.populate_pct = 0;   /* fresh memory: the image fills it */
			break;
		case O_RESTORE_LEDGER:
			a->restore_ledger = optarg;
			break;
		case O_RESTORE_NO_WSET:
			a->restore_no_wset = true;
			break;
		case O_RATE: {
			double mib = strtod(optarg, NULL);

			if (mib <= 0) {
				fprintf(stderr, PROG ": bad --rate '%s' (MiB/s, > 0)\n",
					optarg);
				return -EINVAL;
			}
			rate_mib = mib;
			break;
		}
		case 'h':
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (ret) {
			fprintf(stderr, PROG ": invalid value '%s' for --%s\n",
				optarg, lo[c - O_SIZE].name);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	if (a->ledger && !a->snapshot && !a->daemon) {
		fprintf(stderr, PROG ": --ledger needs --snapshot or --daemon\n");
		return -EINVAL;
	}
	if (rate_mib > 0 && a->g.threads)   /* block writes/s per thread */
		a->g.rate = (uint64_t)(rate_mib * 1048576.0 / RGUEST_BLOCK /
				       a->g.threads) + 1;
	return 0;
}

static void sleep_secs(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* "850 ns", "12.3 us", "4.56 ms" */
static const char *fmt_ns(uint64_t ns, char *buf, size_t len)
{
	if (ns < 1000)
		snprintf(buf, len, "%" PRIu64 " ns", ns);
	else if (ns < 1000000)
		snprintf(buf, len, "%.1f us", (double)ns / 1e3);
	else
		snprintf(buf, len, "%.2f ms", (double)ns / 1e6);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Huge page pool                                                      */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* Modes                                                               */
/* ------------------------------------------------------------------ */

static void print_latency(struct rguest *g)
{
	struct rguest_latency lat;
	char a[32], b[32], c[32];

	rguest_latency_get(g, &lat);
	if (!lat.writes)
		return;
	printf("  write latency: p50 %s, p99 %s, max %s; %" PRIu64 " slow (>= 5 us)",
	       fmt_ns(lat.p50_ns, a, sizeof(a)), fmt_ns(lat.p99_ns, b, sizeof(b)),
	       fmt_ns(lat.max_ns, c, sizeof(c)), lat.slow_writes);
	if (lat.slow_writes)
		printf(", slow p50 %s p99 %s", fmt_ns(lat.slow_p50_ns, a, sizeof(a)),
		       fmt_ns(lat.slow_p99_ns, b, sizeof(b)));
	printf("\n");
}

static int run_rate(struct rguest *g, const struct args *a)
{
	uint64_t w0, w1, t0, t1;
	double secs, rate;

	sleep_secs(a->warmup);
	rguest_pause(g);
	rguest_latency_reset(g);
	w0 = rguest_writes(g);
	t0 = wps_now_ns();
	rguest_resume(g);
	sleep_secs(a->duration);
	rguest_pause(g);
	t1 = wps_now_ns();
	w1 = rguest_writes(g);
	secs = (double)(t1 - t0) / 1e9;
	rate = (double)(w1 - w0) / secs;
	printf("%s guest, %" PRIu64 " MiB, %u thread(s), pattern %s: %.0f writes/s "
	       "(%.0f per thread, %.1f MiB/s) over %.2f s\n",
	       rguest_backing_name(a->g.backing), rguest_size(g) >> 20,
	       a->g.threads, rguest_pattern_name(a->g.pattern), rate,
	       rate / a->g.threads, rate * 4096 / (1 << 20), secs);
	print_latency(g);
	rguest_resume(g);
	return 0;
}

static int run_snapshot(struct rguest *g, const struct args *a)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot_stats st;
	struct wps_snapshot *snap = NULL;
	struct rguest_ledger *l = NULL;
	struct wps_image *img = NULL;
	struct wps_ctx *ctx = NULL;
	struct wps_region r;
	uint64_t bad = 0, writes0, writes1;
	char why[256] = "", p[32];
	bool paused = false;
	int ret;

	ret = wps_ctx_new(&ctx);
	if (ret) {
		fprintf(stderr, PROG ": creating the libwpsnap context: %s\n", strerror(-ret));
		goto out;
	}
	rguest_region(g, &r);
	so.path = a->snapshot;
	so.flags = a->overwrite ? WPS_SNAP_OVERWRITE : 0;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ret = wps_snapshot_new(ctx, &r, 1, &so, &snap);
	if (ret) {
		fprintf(stderr, PROG ": preparing the snapshot %s: %s%s\n", a->snapshot,
			strerror(-ret), ret == -EEXIST ? " (use --overwrite)" : "");
		goto out;
	}

	sleep_secs(a->warmup);
	rguest_pause(g);
	rguest_latency_reset(g);
	writes0 = rguest_writes(g);
	rguest_resume(g);

	ret = wps_snapshot_freeze(snap);
	if (ret) {
		fprintf(stderr, PROG ": freezing guest RAM for %s: %s\n", a->snapshot,
			strerror(-ret));
		goto out;
	}
	ret = wps_snapshot_wait(snap);   /* the writers keep going meanwhile */
	if (ret) {
		fprintf(stderr, PROG ": snapshot %s failed: %s\n", a->snapshot,
			strerror(-ret));
		goto out;
	}

	/* The ledger of the freeze instant, taken now that the copy is done. */
	rguest_pause(g);
	paused = true;
	writes1 = rguest_writes(g);
	ret = rguest_ledger(g, &l);
	if (ret) {
		fprintf(stderr, PROG ": taking the ledger: %s\n", strerror(-ret));
		goto out;
	}
	if (a->ledger) {
		ret = rguest_ledger_write(l, a->ledger);
		if (ret) {
			fprintf(stderr, PROG ": writing the ledger %s: %s\n", a->ledger,
				strerror(-ret));
			goto out;
		}
	}
	wps_snapshot_stats(snap, &st);
	printf("snapshot %s: %" PRIu64 " MiB %s, %u thread(s) %s; guest wrote %"
	       PRIu64 " blocks during the snapshot\n", a->snapshot,
	       rguest_size(g) >> 20, rguest_backing_name(a->g.backing),
	       a->g.threads, rguest_pattern_name(a->g.pattern), writes1 - writes0);
	print_latency(g);
	/* The verification only reads the image: stop the writers for it. */
	rguest_resume(g);
	paused = false;
	rguest_stop(g);

	ret = wps_image_open(ctx, a->snapshot, 0, &img);
	if (ret) {
		fprintf(stderr, PROG ": opening the image %s: %s\n", a->snapshot,
			strerror(-ret));
		goto out;
	}
	ret = rguest_ledger_verify_image(l, img, 0, &bad, why, sizeof(why));
	printf("snapshot %s: pause %s, total %.1f ms, %.1f MiB/s, %" PRIu64
	       " faults, verify %s\n", a->snapshot, fmt_ns(st.pause_ns, p, sizeof(p)),
	       (double)st.total_ns / 1e6,
	       st.total_ns ? (double)st.populated_bytes / (1 << 20) /
			     ((double)st.total_ns / 1e9) : 0.0,
	       st.faults, ret ? "FAILED" : "OK");
	if (ret == -EBADMSG)
		fprintf(stderr, PROG ": %s does not match the ledger: %s\n",
			a->snapshot, why);
	else if (ret)
		fprintf(stderr, PROG ": verifying %s: %s%s%s\n", a->snapshot,
			strerror(-ret), why[0] ? ": " : "", why);
out:
	if (paused)
		rguest_resume(g);
	if (img)
		wps_image_close(img);
	if (snap)
		wps_snapshot_free(snap);
	rguest_ledger_free(l);
	if (ctx)
		wps_ctx_free(ctx);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Daemon mode: the guest as a VMM of wpsnapd                          */
/* ------------------------------------------------------------------ */

struct vmm {
	struct rguest *g;
	struct wps_ctx *ctx;
	const struct args *a;
	uint64_t t_pause, paused_ns, max_paused_ns;
	unsigned int pauses;
	bool paused, ledger_due;
	int restored;          /* 1 completed, -1 failed (events) */
};

static int vmm_pause(void *arg, const char *guest)
{
	struct vmm *v = arg;

	(void)guest;
	if (v->paused)
		return 0;
	v->t_pause = wps_now_ns();
	rguest_freeze_pause(v->g);   /* marks the instant of the ledger */
	v->paused = true;
	return 0;
}

/* The "device state" of this pause: its number, which the test finds in
 * the image's blob, so that the blob is known to be this instant's. */
static int vmm_device_state(void *arg, const char *guest, int *fd)
{
	struct vmm *v = arg;
	char text[160];
	int n, mfd;

	*fd = -1;
	if (!v->a->device_state)
		return 0;
	n = snprintf(text, sizeof(text), "wpsnap-guest %s pause %u\n", guest,
		     v->pauses + 1);
	mfd = memfd_create("device-state", MFD_CLOEXEC);
	if (mfd < 0)
		return -errno;
	if (write(mfd, text, (size_t)n) != n) {
		close(mfd);
		return -EIO;
	}
	*fd = mfd;
	return 0;
}

static int vmm_resume(void *arg, const char *guest)
{
	struct vmm *v = arg;
	uint64_t ns;

	(void)guest;
	if (!v->paused)
		return 0;   /* a resume after a pause we never did: harmless */
	rguest_resume(v->g);
	v->paused = false;
	ns = wps_now_ns() - v->t_pause;
	v->paused_ns = ns;
	if (ns > v->max_paused_ns)
		v->max_paused_ns = ns;
	v->pauses++;
	v->ledger_due = true;
	return 0;
}

static void vmm_event(void *arg, const char *name, const char *data)
{
	struct vmm *v = arg;

	if (!strcmp(name, "WPS_RESTORE_COMPLETED"))
		v->restored = 1;
	else if (!strcmp(name, "WPS_RESTORE_FAILED")) {
		v->restored = -1;
		fprintf(stderr, PROG ": lazy restore failed: %s\n", data);
	}
}

/*
 * --restore: the guest's RAM is empty; wpsnapd pages it in from the image
 * while the writers run from the first instant. The ledger of the image
 * becomes the guest's, so --verify-self checks every block at the end.
 */
static void vmm_serve(struct vmm *v, struct wps_client *c, double secs);

static int vmm_restore(struct vmm *v, struct wps_client *c, const char *name)
{
	struct rguest_ledger *l = NULL;
	char args[4096 + 256];
	uint64_t t0, end;
	int ret;

	if (v->a->restore_ledger) {
		ret = rguest_ledger_read(v->a->restore_ledger, &l);
		if (!ret)
			ret = rguest_adopt_ledger(v->g, l);
		rguest_ledger_free(l);
		if (ret) {
			fprintf(stderr, PROG ": ledger %s: %s\n", v->a->restore_ledger,
				strerror(-ret));
			return ret;
		}
	}
	snprintf(args, sizeof(args), "{\"guest\": \"%s\", \"image\": \"%s\"%s}",
		 name, v->a->restore, v->a->restore_no_wset ?
		 ", \"working-set\": false" : "");
	t0 = wps_now_ns();
	ret = wps_client_execute(c, "wps-restore-start", args, NULL);
	if (ret) {
		fprintf(stderr, PROG ": wps-restore-start %s: %s\n", v->a->restore,
			strerror(-ret));
		return ret;
	}
	ret = rguest_start(v->g);   /* the vCPUs run at once */
	if (ret)
		return ret;
	printf("restore from %s: guest running after %.3f ms\n", v->a->restore,
	       (wps_now_ns() - t0) / 1e6);
	fflush(stdout);
	end = wps_now_ns() + 120000000000ull;
	while (!v->restored && wps_now_ns() < end)
		vmm_serve(v, c, 0.02);
	if (v->restored != 1) {
		fprintf(stderr, PROG ": the restore did not complete\n");
		return -EIO;
	}
	printf("restore from %s: complete (graduated) after %.1f ms\n",
	       v->a->restore, (wps_now_ns() - t0) / 1e6);
	fflush(stdout);
	return 0;
}

/* The ledger of the last freeze, written whole under its final name
 * (tmp + rename) so a reader never sees half of it. */
static int vmm_write_ledger(struct vmm *v, struct rguest_ledger **keep)
{
	struct rguest_ledger *l = NULL;
	char tmp[4096];
	int ret;

	v->ledger_due = false;
	rguest_pause(v->g);
	ret = rguest_ledger(v->g, &l);
	rguest_resume(v->g);
	if (ret) {
		fprintf(stderr, PROG ": taking the ledger: %s\n", strerror(-ret));
		return ret;
	}
	if (v->a->ledger) {
		/* "%u" in the name: one ledger per pause, numbered from 1
		 * (a checkpoint series pauses once per checkpoint) */
		const char *pu = strstr(v->a->ledger, "%u");
		char name[4000];

		if (pu)
			snprintf(name, sizeof(name), "%.*s%u%s",
				 (int)(pu - v->a->ledger), v->a->ledger, v->pauses,
				 pu + 2);
		else
			snprintf(name, sizeof(name), "%s", v->a->ledger);
		snprintf(tmp, sizeof(tmp), "%s.tmp", name);
		ret = rguest_ledger_write(l, tmp);
		if (!ret && rename(tmp, name))
			ret = -errno;
		if (ret)
			fprintf(stderr, PROG ": writing the ledger %s: %s\n",
				name, strerror(-ret));
	}
	if (keep && !ret)
		*keep = l;
	else
		rguest_ledger_free(l);
	return ret;
}

/* Whether SIGUSR1 is pending; consumes it. */
static bool usr1_pending(void)
{
	static const struct timespec zero = { 0, 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	return sigtimedwait(&set, NULL, &zero) == SIGUSR1;
}

/* Serve the daemon's requests for secs seconds (it may go away: the
 * guest keeps running regardless). */
static void vmm_serve(struct vmm *v, struct wps_client *c, double secs)
{
	uint64_t end = wps_now_ns() + (uint64_t)(secs * 1e9), t;
	struct pollfd pfd;
	bool up = true;

	while ((t = wps_now_ns()) < end) {
		/* SIGUSR1 (blocked in main, so pending) ends the serving as
		 * --duration would: a test stops the guest when it is done
		 * with it instead of guessing how long that takes. */
		if (usr1_pending())
			break;
		pfd = (struct pollfd){ .fd = wps_client_fd(c), .events = POLLIN };
		if (!up) {
			sleep_secs((double)(end - t) / 1e9 > 0.05 ? 0.05 :
				   (double)(end - t) / 1e9);
		} else if (poll(&pfd, 1, 50) > 0 && wps_client_dispatch(c) == -ECONNRESET) {
			up = false;
			printf("wpsnapd went away; the guest keeps running\n");
			fflush(stdout);
		}
		if (v->ledger_due)
			vmm_write_ledger(v, NULL);
	}
}

static int verify_image(struct wps_ctx *ctx, const char *path,
			const struct rguest_ledger *l)
{
	struct wps_image *img = NULL;
	uint64_t bad = 0;
	char why[256] = "";
	int ret;

	ret = wps_image_open(ctx, path, 0, &img);
	if (ret) {
		fprintf(stderr, PROG ": opening the image %s: %s\n", path, strerror(-ret));
		return ret;
	}
	ret = rguest_ledger_verify_image(l, img, 0, &bad, why, sizeof(why));
	if (ret == -EBADMSG)
		fprintf(stderr, PROG ": %s does not match the ledger: %s\n", path, why);
	else if (ret)
		fprintf(stderr, PROG ": verifying %s: %s%s%s\n", path, strerror(-ret),
			why[0] ? ": " : "", why);
	wps_image_close(img);
	return ret;
}

static int run_daemon(struct rguest *g, const struct args *a)
{
	struct wps_client_ops ops = { .pause = vmm_pause, .resume = vmm_resume,
				      .event = vmm_event,
				      .device_state = vmm_device_state };
	struct wps_client_snap_opts so = { 0 };
	struct wps_client_result res;
	struct wps_client_guest cg = { 0 };
	struct wps_client *c = NULL;
	struct rguest_ledger *l = NULL;
	struct vmm v = { .g = g, .a = a };
	struct wps_region r;
	char name[64], p1[32], p2[32], p3[32];
	int ret;

	ret = wps_ctx_new(&v.ctx);
	if (ret)
		goto out;
	rguest_region(g, &r);
	if (r.fd < 0) {
		fprintf(stderr, PROG ": --daemon needs guest RAM in a memfd "
			"(--backing memfd or hugetlb): wpsnapd cannot read the "
			"anonymous memory of another process\n");
		ret = -EINVAL;
		goto out;
	}
	ret = wps_client_connect(v.ctx, a->daemon, &c);
	if (ret) {
		fprintf(stderr, PROG ": connecting to wpsnapd at %s: %s\n", a->daemon,
			strerror(-ret));
		goto out;
	}
	wps_client_set_ops(c, &ops, &v);
	snprintf(name, sizeof(name), "%s", a->name ? a->name : "");
	if (!a->name)
		snprintf(name, sizeof(name), "guest-%d", (int)getpid());
	cg.name = name;
	cg.uffd = -1;
	cg.regions = &r;
	cg.nr = 1;
	ret = wps_client_register(c, &cg);
	if (ret) {
		fprintf(stderr, PROG ": registering with wpsnapd: %s\n", strerror(-ret));
		goto out;
	}
	printf("registered %s: %" PRIu64 " MiB %s with wpsnapd at %s\n", name,
	       rguest_size(g) >> 20, rguest_backing_name(a->g.backing),
	       a->daemon);
	fflush(stdout);

	if (a->restore) {
		ret = vmm_restore(&v, c, name);
		if (ret)
			goto out;
		vmm_serve(&v, c, a->duration);
		goto out;
	}
	if (!a->snapshot) {
		vmm_serve(&v, c, a->duration);
		printf("served %u pause(s); last guest pause %s, longest %s\n",
		       v.pauses, fmt_ns(v.paused_ns, p1, sizeof(p1)),
		       fmt_ns(v.max_paused_ns, p2, sizeof(p2)));
		goto out;
	}

	vmm_serve(&v, c, a->warmup);
	so.path = a->snapshot;
	so.overwrite = a->overwrite;
	so.wait = true;
	if (a->self_pause) {
		so.vcpus_paused = true;
		so.wait = false;
		vmm_pause(&v, name);
		ret = wps_client_snapshot(c, name, &so, &res);
		vmm_resume(&v, name);
		if (!ret) {
			struct wps_client_progress pr;

			/* wait for the end by polling: events also arrive */
			do {
				vmm_serve(&v, c, 0.02);
				ret = wps_client_query(c, name, &pr);
			} while (!ret && strcmp(pr.status, "completed") &&
				 strcmp(pr.status, "failed") &&
				 strcmp(pr.status, "cancelled"));
			if (!ret && strcmp(pr.status, "completed"))
				ret = -EIO;
		}
	} else {
		ret = wps_client_snapshot(c, name, &so, &res);
	}
	if (ret) {
		fprintf(stderr, PROG ": snapshot %s through wpsnapd: %s%s%s\n",
			a->snapshot, strerror(-ret), res.cause[0] ? ": " : "", res.cause);
		goto out;
	}
	ret = vmm_write_ledger(&v, &l);
	if (ret)
		goto out;
	printf("snapshot %s via wpsnapd: guest paused %s (daemon: pause %s, "
	       "handshake %s), total %.1f ms\n", a->snapshot,
	       fmt_ns(v.paused_ns, p1, sizeof(p1)), fmt_ns(res.pause_ns, p2, sizeof(p2)),
	       fmt_ns(res.handshake_ns, p3, sizeof(p3)), (double)res.total_ns / 1e6);
	rguest_stop(g);
	ret = verify_image(v.ctx, a->snapshot, l);
	printf("snapshot %s: verify %s\n", a->snapshot, ret ? "FAILED" : "OK");
out:
	wps_client_close(c);
	rguest_ledger_free(l);
	if (v.ctx)
		wps_ctx_free(v.ctx);
	return ret;
}

/*
 * After the run: guest RAM must hold exactly what the writers wrote (no
 * snapshot may have changed it), and every block must be writable (a
 * protection left behind with nobody reading the uffd would hang here:
 * the caller runs us under a timeout).
 */
static int verify_self(struct rguest *g)
{
	struct rguest_ledger *l = NULL;
	uint64_t bad = 0, b, n = rguest_size(g) / RGUEST_BLOCK;
	char why[256] = "";
	uint8_t *mem = rguest_mem(g);
	int ret;

	rguest_freeze_pause(g);
	ret = rguest_ledger(g, &l);
	if (!ret)
		ret = rguest_ledger_verify_mem(l, mem, &bad, why, sizeof(why));
	rguest_resume(g);
	rguest_stop(g);
	if (ret) {
		fprintf(stderr, PROG ": verify-self: guest RAM does not match its "
			"ledger: %s\n", why[0] ? why : strerror(-ret));
		goto out;
	}
	for (b = 0; b < n; b++) {
		volatile uint64_t *w = (volatile uint64_t *)(mem + b * RGUEST_BLOCK);

		*w = *w;
	}
	printf("verify-self: %" PRIu64 " blocks match the ledger; all written "
	       "once\n", n);
out:
	rguest_ledger_free(l);
	return ret;
}

int main(int argc, char **argv)
{
	struct args a = {
		.g = {
			.size = 256ull << 20, .backing = RGUEST_ANON, .threads = 2,
			.pattern = RGUEST_RANDOM, .populate_pct = 100, .seed = 1,
		},
		.warmup = 0.5, .duration = 2,
	};
	struct rguest_hugepool hp = { 0 };
	struct rguest *g = NULL;
	int ret;

	if (parse_args(argc, argv, &a))
		return 2;
	if (a.daemon) {
		sigset_t usr1;

		/* before any thread: SIGUSR1 then stays pending for
		 * vmm_serve() instead of killing us */
		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	}
	if (a.reserve_huge && a.g.backing == RGUEST_HUGETLB) {
		ret = rguest_hugepool_reserve(&hp, a.g.size);
		if (ret)
			fprintf(stderr, PROG ": %s\n", hp.why);
		if (ret)
			goto out;
	}

	ret = rguest_new(&a.g, &g);
	if (ret) {
		fprintf(stderr, PROG ": creating a %s guest of %" PRIu64 " bytes: %s\n",
			rguest_backing_name(a.g.backing), a.g.size, strerror(-ret));
		if (ret == -ENOSPC)
			fprintf(stderr, PROG ": not enough 2 MiB huge pages in the pool "
				"(%s); use --reserve-hugepages\n", NR_HUGE);
		goto out;
	}
	/* A restored guest's writers start once its RAM is being paged in. */
	ret = a.restore ? 0 : rguest_start(g);
	if (ret) {
		fprintf(stderr, PROG ": starting the writers: %s\n", strerror(-ret));
		goto out;
	}
	if (a.restore && !a.daemon) {
		fprintf(stderr, PROG ": --restore needs --daemon\n");
		ret = -EINVAL;
		goto out;
	}
	if (a.daemon)
		ret = run_daemon(g, &a);
	else
		ret = a.snapshot ? run_snapshot(g, &a) : run_rate(g, &a);
	if (!ret && a.verify_self)
		ret = verify_self(g);
out:
	rguest_free(g);
	rguest_hugepool_release(&hp);
	return ret ? 1 : 0;
}
