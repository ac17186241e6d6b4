/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fault_driver: the reference guest through a live snapshot or a series of
 * checkpoints, for tests/integration/faults.sh, which runs it under the
 * faultinj shim. It owns the checks made after a failure, while the
 * library objects are still alive (a protection leaked then would stall
 * the guest for good in a real VMM):
 *
 *   snapshot IMG SIZE_MIB
 *     one live snapshot into IMG under two writers. On success the image
 *     is checked against the ledger of the freeze. On failure: no page of
 *     guest RAM keeps the uffd-wp bit, the writers keep going (not left
 *     paused), neither IMG nor IMG.partial exists, guest RAM equals its
 *     own ledger and every block takes a write, no fd leaked.
 *   checkpoint DIR LEDGER_DIR COUNT SIZE_MIB
 *     COUNT checkpoints DIR/ckpt-NNNNNN.wpsnap (one more if the last one
 *     failed). After a failed one: nothing under its name, no .partial,
 *     the writers keep going; the checkpoint after it must succeed as a
 *     full image. Every published one is restored through its chain and
 *     compared with the ledger of its instant; at the end no protection
 *     is left and no fd leaked.
 *
 * Prints "result ok" or "result failed ENAME: text" (the first failure's
 * errno), then "guest ok" or "guest BAD: why". Exit status: 0 nothing
 * failed, 1 a failure and every check passed, 2 a check failed.
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/checkpoint.h>
#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "tests/unit/testutil.h"
#include "guest/guest.h"

struct drv {
	void (*suspend)(int on);        /* the shim's, when it is loaded */
	struct wps_ctx *ctx;
	struct rguest *g;
	int first_err;          /* first failure, -errno */
	char bad[512];          /* first broken invariant */
};

static void bad(struct drv *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void bad(struct drv *d, const char *fmt, ...)
{
	va_list ap;

	if (d->bad[0])
		return;
	va_start(ap, fmt);
	vsnprintf(d->bad, sizeof(d->bad), fmt, ap);
	va_end(ap);
}

static void failed(struct drv *d, int err)
{
	if (!d->first_err)
		d->first_err = err;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* Nothing under path nor path.partial. */
static void check_unpublished(struct drv *d, const char *path)
{
	char partial[4096];

	snprintf(partial, sizeof(partial), "%s.partial", path);
	if (exists(path))
		bad(d, "%s published after a failure", path);
	if (exists(partial))
		bad(d, "%s left behind", partial);
}

/* The writers make progress: not left paused, not stalled on a fault.
 * Generous bound: only a stall takes that long, a loaded machine not. */
static void check_running(struct drv *d)
{
	uint64_t w0 = rguest_writes(d->g);
	int i;

	for (i = 0; i < 6000; i++) {
		if (rguest_writes(d->g) > w0 + 1000)
			return;
		nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	}
	bad(d, "the guest's writers made no progress for 60 s after the failure");
}

static void check_unprotected(struct drv *d, const char *when)
{
	uint64_t n = 0;
	int ret = tu_count_wp(rguest_mem(d->g), rguest_size(d->g), &n);

	if (ret)
		bad(d, "pagemap: %s", strerror(-ret));
	else if (n)
		bad(d, "%" PRIu64 " guest pages still write-protected %s", n, when);
}

/* Guest RAM is what the writers wrote, and every block takes a write. */
static void check_intact(struct drv *d)
{
	struct rguest_ledger *l = NULL;
	uint8_t *mem = rguest_mem(d->g);
	uint64_t b, nb = rguest_size(d->g) / RGUEST_BLOCK, at = 0;
	char why[256] = "";
	int ret;

	rguest_freeze_pause(d->g);
	ret = rguest_ledger(d->g, &l);
	if (!ret)
		ret = rguest_ledger_verify_mem(l, mem, &at, why, sizeof(why));
	rguest_resume(d->g);
	rguest_stop(d->g);
	rguest_ledger_free(l);
	if (ret) {
		bad(d, "guest RAM differs from its ledger: %s",
		    why[0] ? why : strerror(-ret));
		return;
	}
	for (b = 0; b < nb; b++) {
		volatile uint64_t *w = (volatile uint64_t *)(mem + b * RGUEST_BLOCK);

		*w = *w;
	}
}

/* Our own checks read the image back: not the I/O under test. */
static void verifying(struct drv *d, bool on)
{
	if (d->suspend)
		d->suspend(on);
}

/* The ledger of the instant just frozen (freeze_pause recorded it). */
static int instant_ledger(struct drv *d, struct rguest_ledger **l)
{
	int ret;

	rguest_pause(d->g);
	ret = rguest_ledger(d->g, l);
	rguest_resume(d->g);
	return ret;
}

static int run_snapshot(struct drv *d, const char *img)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *snap = NULL;
	struct rguest_ledger *l = NULL;
	struct wps_image *im = NULL;
	struct wps_region r;
	char why[256] = "";
	uint64_t at = 0;
	int ret;

	rguest_region(d->g, &r);
	so.path = img;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = d->g;
	ret = wps_snapshot_new(d->ctx, &r, 1, &so, &snap);
	if (!ret)
		ret = wps_snapshot_freeze(snap);
	if (!ret)
		ret = wps_snapshot_wait(snap);
	if (ret) {
		failed(d, ret);
		/* The snapshot object (its uffd) still lives: a protection
		 * left now would stall the writers for good. */
		check_unprotected(d, "after the failure");
		check_running(d);
		wps_snapshot_free(snap);
		check_unpublished(d, img);
		return 0;
	}
	ret = instant_ledger(d, &l);
	verifying(d, true);
	if (!ret)
		ret = wps_image_open(d->ctx, img, 0, &im);
	if (!ret)
		ret = rguest_ledger_verify_image(l, im, 0, &at, why, sizeof(why));
	if (ret)
		bad(d, "the image %s does not match the ledger: %s", img,
		    why[0] ? why : strerror(-ret));
	if (im)
		wps_image_close(im);
	verifying(d, false);
	rguest_ledger_free(l);
	wps_snapshot_free(snap);
	return 0;
}

/* Restore path through its chain and compare with l. */
static void check_chain(struct drv *d, const char *path,
			const struct rguest_ledger *l, bool full)
{
	struct wps_chain *c = NULL;
	char why[256] = "";
	uint64_t at = 0, size = rguest_size(d->g);
	void *mem;
	int ret;

	mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		bad(d, "no memory to restore %s", path);
		return;
	}
	verifying(d, true);
	ret = wps_chain_open(d->ctx, path, 0, &c);
	if (!ret && full && wps_chain_length(c) != 1)
		bad(d, "%s: the checkpoint after a failure is not a full image "
		    "(chain of %u)", path, wps_chain_length(c));
	if (!ret)
		ret = wps_chain_load(c, 0, mem, NULL);
	if (!ret)
		ret = rguest_ledger_verify_mem(l, mem, &at, why, sizeof(why));
	if (ret)
		bad(d, "%s restored through its chain differs from its ledger: %s",
		    path, why[0] ? why : strerror(-ret));
	wps_chain_close(c);
	verifying(d, false);
	munmap(mem, size);
}

static int run_checkpoints(struct drv *d, const char *dir, const char *ldir,
			   unsigned int count)
{
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_ckpt *ck = NULL;
	struct wps_region r;
	bool after_failure = false;
	unsigned int i;
	int ret;

	rguest_region(d->g, &r);
	co.pause = rguest_freeze_pause;
	co.resume = rguest_resume;
	co.pause_arg = d->g;
	ret = wps_ckpt_new(d->ctx, &r, 1, &co, &ck);
	if (ret) {
		failed(d, ret);
		check_running(d);
		return 0;
	}
	for (i = 0; i < count || after_failure; i++) {
		struct wps_ckpt_stats st;
		struct rguest_ledger *l = NULL;
		char path[4096], lpath[4096];

		snprintf(path, sizeof(path), "%s/ckpt-%06u.wpsnap", dir, i);
		ret = wps_ckpt_take(ck, path, &st);
		if (ret) {
			failed(d, ret);
			check_running(d);
			check_unpublished(d, path);
			after_failure = true;
			continue;
		}
		ret = instant_ledger(d, &l);
		snprintf(lpath, sizeof(lpath), "%s/ckpt-%06u.ledger", ldir, i);
		if (!ret)
			ret = rguest_ledger_write(l, lpath);
		if (ret)
			bad(d, "ledger %s: %s", lpath, strerror(-ret));
		else
			check_chain(d, path, l, after_failure);
		rguest_ledger_free(l);
		after_failure = false;
		if (i > count + 2) {
			bad(d, "checkpoints keep failing");
			break;
		}
	}
	wps_ckpt_free(ck);
	check_unprotected(d, "after the checkpointer was freed");
	return 0;
}

int main(int argc, char **argv)
{
	struct rguest_opts go = {
		.backing = RGUEST_ANON, .threads = 2,
		.pattern = RGUEST_RANDOM, .populate_pct = 100, .seed = 1,
	};
	struct drv d = { 0 };
	bool snap = argc == 4 && !strcmp(argv[1], "snapshot");
	bool ckpt = argc == 6 && !strcmp(argv[1], "checkpoint");
	int fds, ret;

	if (!snap && !ckpt) {
		fprintf(stderr, "usage: fault_driver snapshot IMG SIZE_MIB\n"
			"       fault_driver checkpoint DIR LEDGER_DIR COUNT SIZE_MIB\n");
		return 2;
	}
	go.size = strtoull(argv[argc - 1], NULL, 0) << 20;
	d.suspend = (void (*)(int))dlsym(RTLD_DEFAULT, "faultinj_suspend");
	ret = wps_ctx_new(&d.ctx);
	if (!ret)
		ret = rguest_new(&go, &d.g);
	if (!ret)
		ret = rguest_start(d.g);
	if (ret) {
		fprintf(stderr, "fault_driver: cannot start the guest: %s\n",
			strerror(-ret));
		return 2;
	}
	nanosleep(&(struct timespec){ 0, 100000000 }, NULL);
	fds = tu_count_fds();
	if (snap)
		run_snapshot(&d, argv[2]);
	else
		run_checkpoints(&d, argv[2], argv[3],
				(unsigned int)strtoul(argv[4], NULL, 0));
	if (tu_count_fds() != fds)
		bad(&d, "%d fds before, %d after", fds, tu_count_fds());
	check_intact(&d);
	if (d.first_err)
		printf("result failed %s: %s\n", strerrorname_np(-d.first_err),
		       strerror(-d.first_err));
	else
		printf("result ok\n");
	if (d.bad[0])
		printf("guest BAD: %s\n", d.bad);
	else
		printf("guest ok: running, unprotected, intact\n");
	rguest_free(d.g);
	wps_ctx_free(d.ctx);
	return d.bad[0] ? 2 : d.first_err ? 1 : 0;
}
