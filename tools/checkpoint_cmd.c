/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap checkpoint: periodic checkpoints of the reference guest into a
 * directory (a full image, then increments), optionally with the guest's
 * ledger at each instant and retention; wpsnap chain: show a chain,
 * restore through it and check it against a ledger, fold it; wpsnap
 * merge: flatten a chain into one full image. Thin shells over
 * <wpsnap/session.h> (the series: interval, netbuf epochs, durability
 * commit, retention) and <wpsnap/chain.h>; what is the CLI's own is how
 * the guest pauses (the reference guest, or SIGSTOP/SIGCONT of --pid),
 * how the series is stopped (SIGINT/SIGTERM) and what it prints.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/attach.h>
#include <wpsnap/chain.h>
#include <wpsnap/checkpoint.h>
#include <wpsnap/netbuf.h>
#include <wpsnap/session.h>

#include "base/deadline.h"
#include "tools/checkpoint_cmd.h"
#include "tools/parse.h"
#include "guest/guest.h"
#include "tools/snapshot_cmd.h"

#define MiB (1024.0 * 1024.0)

static void checkpoint_usage(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap checkpoint --dir DIR [--count N] [--interval MS] "
		"[--keep N]\n"
		"                         [--size SIZE] [--backing anon|thp|memfd|"
		"hugetlb]\n"
		"                         [--threads N] [--pattern idle|seq|random|"
		"hot]\n"
		"                         [--rate MIB/S] [--ledger] [--ledger-dir D] "
		"[--no-precopy]\n                         "
		"[--overwrite]\n"
		"                         [--netbuf IF [--netns NS] [--queue N]]\n"
		"       wpsnap checkpoint --dir DIR --pid PID [--range START-END]... "
		"[...]\n"
		"Run the reference guest and checkpoint it every MS milliseconds "
		"(default 200)\nwhile it writes: DIR/ckpt-000000.wpsnap is a full "
		"image, each later one an\nincrement over the one before. --keep N "
		"folds older checkpoints into the\noldest kept one after each "
		"checkpoint. --ledger writes DIR/ckpt-NNNNNN.ledger,\nthe guest's "
		"content at each instant, for 'wpsnap chain --ledger'.\n"
		"DIR may be an NBD export (nbd://HOST[:PORT]/EXPORT, nbd+unix:///"
		"EXPORT?socket=P):\nthe whole chain goes into it, checkpoint N "
		"readable as EXPORT-URI#N, the last\ndurable one as EXPORT-URI "
		"(docs/REMOTE.md); ledgers then go to --ledger-dir D.\nThere --keep N "
		"keeps at least the last N: every N-th checkpoint is full, older\n"
		"ones are reclaimed for room (the export needs room for 2N images).\n");
}

/*
 * What the CLI brings to the library's series (src/ckpt_session.c): its
 * way of being stopped, and its lines and ledgers per checkpoint.
 */
struct series {
	sigset_t stop;             /* SIGINT, SIGTERM: blocked from the start */
	const char *ledger_dir;    /* DIR, or --ledger-dir for an export */
	struct rguest *g;       /* --ledger: write the guest's ledger */
	bool netbuf;               /* print the epoch and commit lines */
};

/*
 * The wait between checkpoints: the deadline, or SIGINT/SIGTERM. They
 * stay blocked while a checkpoint runs, so one that arrives then is seen
 * here, after it: the checkpoint under way is finished and reported
 * (its image, its epoch's commit), then the series stops.
 */
bool checkpoint_wait_signal(const sigset_t *stop,
			    const struct timespec *deadline)
{
	for (;;) {
		struct timespec left = wps_deadline_left(deadline);

		if (sigtimedwait(stop, NULL, &left) > 0)
			return true;
		if (errno == EAGAIN)
			return false;   /* the deadline; EINTR: wait again */
	}
}

static bool wait_or_signal(void *arg, const struct timespec *deadline)
{
	struct series *se = arg;

	return checkpoint_wait_signal(&se->stop, deadline);
}

static int report(void *arg, const struct wps_ckpt_session_report *r)
{
	const struct wps_ckpt_stats *st = r->st;
	struct series *se = arg;

	/* output commit: the lines of `wpsnap netbuf hold` (CLOCK_MONOTONIC
	 * ns around closing the epoch and releasing it) */
	if (se->netbuf) {
		printf("epoch %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", r->epoch,
		       r->epoch_t0_ns, r->epoch_t1_ns);
		printf("commit %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", r->epoch,
		       r->commit_t0_ns, r->commit_t1_ns);
	}
	printf("%-4" PRIu64 " %9.3f %9.3f %9.3f %6u %10.1f %10.1f %9.1f %9.2f\n",
	       st->seq, st->pause_ns / 1e6, st->scan_ns / 1e6, st->copy_ns / 1e6,
	       st->rounds, st->dirty_bytes / MiB, st->precopy_bytes / MiB,
	       st->total_ns / 1e6, st->commit_ns / 1e6);
	return 0;
}

/*
 * --ledger: the guest's content at checkpoint seq's instant, written
 * before the image is committed, so that every durable checkpoint has
 * its ledger even if this process dies right after the commit (a fail
 * over restores the last durable one and checks it against its ledger).
 * The instant's generations stay recorded (copy on write) until the next
 * freeze_pause, which is the next checkpoint's.
 */
static int write_ledger(void *arg, struct wps_ckpt *ck, uint64_t seq)
{
	struct series *se = arg;
	struct rguest_ledger *l = NULL;
	char lpath[4096];
	int ret;

	(void)ck;
	rguest_pause(se->g);
	ret = rguest_ledger(se->g, &l);
	rguest_resume(se->g);
	snprintf(lpath, sizeof(lpath), "%s/ckpt-%06" PRIu64 ".ledger",
		 se->ledger_dir, seq);
	if (!ret)
		ret = rguest_ledger_write(l, lpath);
	rguest_ledger_free(l);
	if (ret)
		fprintf(stderr, "wpsnap checkpoint: ledger %s: %s\n", lpath,
			strerror(-ret));
	return ret;
}

/*
 * The pause of an unmodified process: SIGSTOP, then wait until every
 * thread is in a stop (a group stop takes each thread at its next return
 * to user space). SIGSTOP rather than ptrace: holding the process under
 * ptrace for a whole series would delay every signal sent to it.
 */
static bool all_stopped(pid_t pid)
{
	char path[64], buf[512];
	struct dirent *de;
	bool all = true;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	while (all && (de = readdir(d))) {
		FILE *f;
		char *p;

		if (de->d_name[0] == '.')
			continue;
		snprintf(buf, sizeof(buf), "%s/%s/stat", path, de->d_name);
		f = fopen(buf, "re");
		if (!f)
			continue;   /* a thread that just exited */
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) &&
		    p[1] == ' ' && p[2] != 'T' && p[2] != 't')
			all = false;
		fclose(f);
	}
	closedir(d);
	return all;
}

static int pid_pause(void *arg)
{
	pid_t pid = *(pid_t *)arg;
	unsigned int i;

	if (kill(pid, SIGSTOP))
		return -errno;
	for (i = 0; i < 20000; i++) {   /* 2 s */
		if (all_stopped(pid))
			return 0;
		nanosleep(&(struct timespec){ 0, 100000 }, NULL);
	}
	kill(pid, SIGCONT);
	return -ETIMEDOUT;
}

/* A number option in [min, max] (tools/parse.h), or a usage error naming
 * the option: strtoul would take "-1", "5x" or "" as a silent number. */
static int opt_num(const char *opt, const char *s, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	if (!tools_parse_u64(s, min, max, out))
		return 0;
	fprintf(stderr, "wpsnap checkpoint: %s: '%s' is not a number from %llu "
		"to %llu\n", opt, s, (unsigned long long)min,
		(unsigned long long)max);
	return -EINVAL;
}

static int pid_resume(void *arg)
{
	return kill(*(pid_t *)arg, SIGCONT) ? -errno : 0;
}

int checkpoint_cmd_main(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "count", required_argument, NULL, 'n' },
		{ "interval", required_argument, NULL, 'i' },
		{ "keep", required_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 's' },
		{ "backing", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "ledger", no_argument, NULL, 'l' },
		{ "ledger-dir", required_argument, NULL, 'L' },
		{ "rate", required_argument, NULL, 'r' },
		{ "no-precopy", no_argument, NULL, 'P' },
		{ "overwrite", no_argument, NULL, 'o' },
		{ "netbuf", required_argument, NULL, 'N' },
		{ "netns", required_argument, NULL, 'S' },
		{ "queue", required_argument, NULL, 'Q' },
		{ "pid", required_argument, NULL, 'I' },
		{ "range", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_attach_range ranges[64];
	struct wps_attach *at = NULL;
	unsigned int nr_ranges = 0;
	pid_t pid = 0;
	struct wps_netbuf_opts no = WPS_NETBUF_OPTS_INIT;
	struct wps_netbuf *nb = NULL;
	const char *netns = NULL;
	struct rguest_opts go = {
		.size = 256ull << 20, .backing = RGUEST_ANON, .threads = 1,
		.pattern = RGUEST_RANDOM, .populate_pct = 90, .seed = 7,
	};
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct wps_ckpt_session *s = NULL;
	struct series se = { 0 };
	unsigned int keep = 0;
	uint64_t count = 5;
	unsigned int interval_ms = 200;
	struct rguest *g = NULL;
	struct wps_region reg;
	const char *dir = NULL;
	sigset_t old_mask;
	bool ledger = false, remote;
	const char *ledger_dir = NULL;
	double rate_mib = 0;
	uint64_t v;
	int c, ret, status = 1;

	while ((c = getopt_long(argc, argv, "d:n:i:k:s:b:t:p:r:lL:PoN:S:Q:I:R:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'n':
			if (opt_num("--count", optarg, 0, UINT64_MAX, &count))
				return 2;
			break;
		case 'i':
			if (opt_num("--interval", optarg, 0, UINT_MAX, &v))
				return 2;
			interval_ms = (unsigned int)v;
			break;
		case 'k':
			if (opt_num("--keep", optarg, 0, UINT_MAX, &v))
				return 2;
			keep = (unsigned int)v;
			break;
		case 't': go.threads = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'l': ledger = true; break;
		case 'L': ledger = true; ledger_dir = optarg; break;
		case 'r': rate_mib = strtod(optarg, NULL); break;
		case 'P': co.precopy_rounds = WPS_CKPT_NO_PRECOPY; break;
		case 'o': co.flags |= WPS_CKPT_OVERWRITE; break;
		case 'N': no.ifname = optarg; break;
		case 'S': netns = optarg; break;
		case 'Q': no.queue = (uint16_t)strtoul(optarg, NULL, 0); break;
		case 'I': pid = (pid_t)strtol(optarg, NULL, 10); break;
		case 'R':
			if (nr_ranges == 64 || cli_parse_range(optarg, &ranges[nr_ranges])) {
				fprintf(stderr, "wpsnap checkpoint: bad --range '%s' "
					"(hex START-END, at most 64)\n", optarg);
				return 2;
			}
			nr_ranges++;
			break;
		case 's':
			if (rguest_parse_size(optarg, &go.size)) {
				fprintf(stderr, "wpsnap checkpoint: bad size '%s'\n", optarg);
				return 2;
			}
			break;
		case 'b':
			if (rguest_backing_parse(optarg, &go.backing)) {
				fprintf(stderr, "wpsnap checkpoint: unknown backing '%s' "
					"(anon, thp, memfd, hugetlb)\n", optarg);
				return 2;
			}
			break;
		case 'p':
			if (rguest_pattern_parse(optarg, &go.pattern)) {
				fprintf(stderr, "wpsnap checkpoint: unknown pattern '%s' "
					"(idle, seq, random, hot)\n", optarg);
				return 2;
			}
			break;
		case 'h': checkpoint_usage(stdout); return 0;
		default: checkpoint_usage(stderr); return 2;
		}
	}
	if (!dir || optind != argc) {
		checkpoint_usage(stderr);
		return 2;
	}
	if (rate_mib > 0 && go.threads)
		go.rate = (uint64_t)(rate_mib * MiB / 4096 / go.threads) + 1;
	/* An NBD URI is a chain export (docs/REMOTE.md): nothing to
	 * create, and the ledgers need a directory of their own. */
	remote = strstr(dir, "://") != NULL;
	if (!ledger_dir && !remote)
		ledger_dir = dir;
	if (ledger && !ledger_dir) {
		fprintf(stderr, "wpsnap checkpoint: --dir %s is an export: give "
			"the ledgers a directory (--ledger-dir DIR)\n", dir);
		return 2;
	}
	if (!remote && mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "wpsnap checkpoint: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if (ledger_dir && ledger_dir != dir && mkdir(ledger_dir, 0755) &&
	    errno != EEXIST) {
		fprintf(stderr, "wpsnap checkpoint: %s: %s\n", ledger_dir,
			strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Blocked before any thread starts (the netbuf's, the guest's, the
	 * checkpointer's), so that only wait_or_signal receives them. */
	sigemptyset(&se.stop);
	sigaddset(&se.stop, SIGINT);
	sigaddset(&se.stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &se.stop, &old_mask);
	se.ledger_dir = ledger_dir;
	so.dir = dir;
	so.first_ms = interval_ms;   /* the guest writes for an interval first */
	so.interval_ms = interval_ms;
	so.count = count;
	so.keep = keep;
	so.wait = wait_or_signal;
	so.report = report;
	so.arg = &se;
	if (no.ifname) {
		if (netns) {
			no.netns_fd = wps_netbuf_open_netns(ctx, netns);
			if (no.netns_fd < 0)
				goto out;   /* logged, with the path */
		}
		ret = wps_netbuf_new(ctx, &no, &nb);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: cannot hold the output "
				"of %s: %s\n", no.ifname, strerror(-ret));
			goto out;
		}
		so.netbuf = nb;
		se.netbuf = true;
		printf("ready %s\n", wps_netbuf_backend_name(wps_netbuf_backend(nb)));
	}
	if (pid) {
		const struct wps_region *regs;
		unsigned int nregs;
		int uffd = -1;

		if (ledger) {
			fprintf(stderr, "wpsnap checkpoint: --ledger is for the "
				"reference guest, not --pid\n");
			goto out;
		}
		ret = wps_attach_new(ctx, pid, nr_ranges ? ranges : NULL,
				     nr_ranges, &at);
		if (!ret)
			ret = wps_attach_take_uffd(at, &uffd);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: cannot attach to process "
				"%d: %s\n", (int)pid, strerror(-ret));
			goto out;
		}
		regs = wps_attach_regions(at, &nregs);
		co.pause = pid_pause;
		co.resume = pid_resume;
		co.pause_arg = &pid;
		co.pid = pid;
		co.uffd = uffd;
		ret = wps_ckpt_session_new(ctx, regs, nregs, &co, &so, &s);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: cannot track process "
				"%d's writes: %s\n", (int)pid, strerror(-ret));
			goto out;
		}
		printf("process %d: %u region(s); checkpoint every %u ms\n",
		       (int)pid, nregs, interval_ms);
	} else {
		ret = rguest_new(&go, &g);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: cannot start the "
				"reference guest: %s\n", strerror(-ret));
			goto out;
		}
		rguest_region(g, &reg);
		/* freeze_pause also marks the ledger's instant: the
		 * checkpoint's is inside the same pause, every writer parked. */
		co.pause = ledger ? rguest_freeze_pause : rguest_pause;
		co.resume = rguest_resume;
		co.pause_arg = g;
		se.g = ledger ? g : NULL;
		if (ledger) {
			co.before_commit = write_ledger;
			co.instant_arg = &se;
		}
		ret = wps_ckpt_session_new(ctx, &reg, 1, &co, &so, &s);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: cannot track the guest's "
				"writes: %s\n", strerror(-ret));
			goto out;
		}
		ret = rguest_start(g);
		if (ret) {
			fprintf(stderr, "wpsnap checkpoint: guest writers: %s\n",
				strerror(-ret));
			goto out;
		}
		printf("guest: %.0f MiB %s, %u writer(s), %s", go.size / MiB,
		       rguest_backing_name(go.backing), go.threads,
		       rguest_pattern_name(go.pattern));
		if (go.rate)
			printf(" at %.1f MiB/s", rate_mib);
		printf("; checkpoint every %u ms\n", interval_ms);
	}
	/* commit: from the last page put to durable (drain, trailer, the
	 * flushes or fsyncs, the rename or the chain table's entry) */
	printf("%-4s %9s %9s %9s %6s %10s %10s %9s %9s\n", "seq", "pause ms",
	       "walk ms", "copy ms", "rounds", "saved MiB", "precopy", "total ms",
	       "commit ms");
	ret = wps_ckpt_session_run(s);
	if (ret) {
		/* the step and the file at fault are logged */
		fprintf(stderr, "wpsnap checkpoint: the series stopped at checkpoint "
			"%" PRIu64 ": %s\n", wps_ckpt_session_done(s), strerror(-ret));
		goto out;
	}
	status = 0;
out:
	if (g)
		rguest_stop(g);
	wps_ckpt_session_free(s);   /* unregisters: no protection left */
	wps_attach_free(at);    /* let go already; closes the region fds */
	rguest_free(g);
	/* what the last epochs held is dropped, never released */
	wps_netbuf_free(nb);
	if (no.netns_fd >= 0)
		close(no.netns_fd);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	return status;
}

static void chain_usage(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap chain IMAGE [--ledger LEDGER] [--fold KEEP]\n"
		"Show the chain of checkpoints that IMAGE ends. --ledger restores "
		"the chain into\nfresh memory (the full image, then each increment) "
		"and checks every block\nagainst the reference guest's LEDGER. "
		"--fold KEEP keeps the newest KEEP images\nand folds the older ones "
		"into the oldest kept one.\n");
}

static int chain_verify(struct wps_ctx *ctx, struct wps_chain *chain,
			const char *lpath)
{
	const struct wps_image_region *r = wps_image_get_region(
		wps_chain_image(chain, wps_chain_length(chain) - 1), 0);
	struct wps_image_load_stats st;
	struct rguest_ledger *l = NULL;
	uint64_t bad = 0;
	char why[256];
	void *mem;
	int ret;

	ret = rguest_ledger_read(lpath, &l);
	if (ret) {
		fprintf(stderr, "wpsnap chain: ledger %s: %s\n", lpath, strerror(-ret));
		return 1;
	}
	mem = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "wpsnap chain: no memory for %" PRIu64 " bytes\n",
			r->size);
		rguest_ledger_free(l);
		return 1;
	}
	ret = wps_chain_load(chain, 0, mem, &st);
	if (ret) {
		fprintf(stderr, "wpsnap chain: restore failed: %s\n", strerror(-ret));
	} else {
		ret = rguest_ledger_verify_mem(l, mem, &bad, why, sizeof(why));
		if (ret)
			fprintf(stderr, "wpsnap chain: block %" PRIu64 " differs "
				"from the ledger: %s\n", bad, why);
		else
			printf("restored through %u image(s): %.1f MiB read in %.1f ms, "
			       "every block matches the ledger\n",
			       wps_chain_length(chain), st.bytes / MiB, st.ns / 1e6);
	}
	munmap(mem, r->size);
	rguest_ledger_free(l);
	return ret ? 1 : 0;
}

int chain_cmd_main(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ledger", required_argument, NULL, 'l' },
		{ "fold", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *lpath = NULL;
	struct wps_chain *chain;
	unsigned int i, fold = 0;
	int c, ret;

	while ((c = getopt_long(argc, argv, "l:f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': lpath = optarg; break;
		case 'f': fold = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 'h': chain_usage(stdout); return 0;
		default: chain_usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		chain_usage(stderr);
		return 2;
	}
	ret = wps_chain_open(ctx, argv[optind], 0, &chain);
	if (ret) {
		fprintf(stderr, "wpsnap chain: %s: not a whole chain: %s\n",
			argv[optind], strerror(-ret));
		return 1;
	}
	for (i = 0; i < wps_chain_length(chain); i++) {
		const struct wps_image_info *in =
			wps_image_get_info(wps_chain_image(chain, i));
		char u[40], p[40];
		time_t t = (time_t)(in->freeze_realtime_ns / 1000000000);
		struct tm tm;
		char ts[32];

		wps_uuid_str(in->uuid, u);
		wps_uuid_str(in->parent_uuid, p);
		gmtime_r(&t, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		printf("%2u %-11s %s.%03dZ %10.1f MiB  %s  %s\n", i,
		       i ? "incremental" : "full", ts,
		       (int)(in->freeze_realtime_ns / 1000000 % 1000),
		       in->data_bytes / MiB, u, wps_chain_path(chain, i));
	}
	ret = 0;
	if (lpath)
		ret = chain_verify(ctx, chain, lpath);
	if (!ret && fold) {
		ret = wps_chain_fold(chain, fold);
		chain = NULL;
		if (ret) {
			fprintf(stderr, "wpsnap chain: fold: %s\n", strerror(-ret));
			ret = 1;
		}
	}
	wps_chain_close(chain);
	return ret;
}

int merge_cmd_main(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "overwrite", no_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	unsigned int flags = 0;
	struct wps_chain *chain;
	const char *out = NULL;
	int c, ret;

	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'O': flags |= WPS_CHAIN_MERGE_OVERWRITE; break;
		case 'h':
			printf("Usage: wpsnap merge IMAGE -o OUTPUT [--overwrite]\n"
			       "Flatten the chain that IMAGE ends into one full "
			       "image with IMAGE's UUID.\n");
			return 0;
		default: return 2;
		}
	}
	if (!out || optind + 1 != argc) {
		fprintf(stderr, "Usage: wpsnap merge IMAGE -o OUTPUT [--overwrite]\n");
		return 2;
	}
	ret = wps_chain_open(ctx, argv[optind], 0, &chain);
	if (ret) {
		fprintf(stderr, "wpsnap merge: %s: not a whole chain: %s\n",
			argv[optind], strerror(-ret));
		return 1;
	}
	ret = wps_chain_merge(chain, wps_chain_length(chain) - 1, out, flags);
	if (!ret)
		printf("merged %u image(s) into %s\n", wps_chain_length(chain), out);
	wps_chain_close(chain);
	return ret ? 1 : 0;
}
