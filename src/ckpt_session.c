/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A checkpoint series (<wpsnap/session.h>): the one loop behind
 * `wpsnap checkpoint` (tools/checkpoint_cmd.c) and wpsnapd's
 * wps-checkpoint-start (daemon/ckptjob.c).
 *
 * Order of one checkpoint, and why:
 *   1. wait until the deadline (interval from the last report, on the
 *      monotonic clock) or a stop: a stop never interrupts a checkpoint,
 *      so every image the series started is finished and reported;
 *   2. wps_ckpt_take(); inside its pause, at the instant, the netbuf
 *      epoch closes (at_instant), so the epoch holds exactly the output
 *      the image's memory produced;
 *   3. only after the take returned 0 (the image is durable: renamed and
 *      fsync'd with its directory) is the epoch committed; a failed take
 *      leaves it held, and the caller's wps_netbuf_free drops it;
 *   4. retention (fold to the newest `keep`), after the commit (on an
 *      export: the writer reclaims, stream/nbd_chain.h): the
 *      output must not wait for a merge it does not depend on;
 *   5. the report, once all of that held.
 * Any failure ends the series (the chain cannot go on from an image that
 * does not exist; the checkpointer would start a full one anyway).
 *
 * Owns: the checkpointer, the stop flag and its eventfd, copies of the
 * directory and prefix. Borrows: the netbuf. Invariant: epoch is the
 * one closed in the pause of the take under way (0 before the first).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/netbuf.h>
#include <wpsnap/session.h>

#include "base/deadline.h"
#include "base/clock.h"
#include "base/log.h"
#include "stream/img_reader_int.h"
#include "stream/nbd_chain.h"

struct wps_ckpt_session {
	struct wps_ctx *ctx;
	struct wps_ckpt *ck;
	struct wps_ckpt_session_opts o;   /* dir, prefix: our copies */
	/* the caller's instant hooks, called from ours */
	int (*at_instant)(void *arg, uint64_t seq);
	int (*before_commit)(void *arg, struct wps_ckpt *ck, uint64_t seq);
	void *instant_arg;
	bool nbd;                         /* dir is a chain export */
	atomic_bool stop;
	int stop_efd;                     /* wakes the session's own wait */
	atomic_uint_fast64_t done;
	/* of the take under way (at_instant writes, inside the pause) */
	uint64_t epoch, epoch_t0, epoch_t1;
};

/* Inside the pause, at the instant: the epoch ends here. */
static int session_at_instant(void *arg, uint64_t seq)
{
	struct wps_ckpt_session *s = arg;
	int ret;

	if (s->o.netbuf) {
		s->epoch_t0 = wps_now_ns();
		ret = wps_netbuf_epoch(s->o.netbuf, &s->epoch);
		s->epoch_t1 = wps_now_ns();
		if (ret)
			return ret;   /* logged by the checkpointer, with seq */
	}
	return s->at_instant ? s->at_instant(s->instant_arg, seq) : 0;
}

static int session_before_commit(void *arg, struct wps_ckpt *ck, uint64_t seq)
{
	struct wps_ckpt_session *s = arg;

	return s->before_commit(s->instant_arg, ck, seq);
}

int wps_ckpt_session_new(struct wps_ctx *ctx, const struct wps_region *regions,
			 unsigned int nr, const struct wps_ckpt_opts *ckpt,
			 const struct wps_ckpt_session_opts *opts,
			 struct wps_ckpt_session **out)
{
	struct wps_ckpt_opts co = *ckpt;
	struct wps_ckpt_session *s;
	int ret;

	*out = NULL;
	if (!opts->dir || !opts->dir[0]) {
		wps_err(ctx, "checkpoint series: no directory given");
		ret = -EINVAL;
		goto fail_uffd;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		ret = -ENOMEM;
		goto fail_uffd;
	}
	s->ctx = ctx;
	s->o = *opts;
	s->nbd = wps_img_name_is_nbd(opts->dir);
	s->o.dir = strdup(opts->dir);
	s->o.prefix = strdup(opts->prefix ? opts->prefix : "ckpt");
	s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!s->o.dir || !s->o.prefix || s->stop_efd < 0) {
		ret = s->stop_efd < 0 ? -errno : -ENOMEM;
		wps_err(ctx, "checkpoint series in %s: %s", opts->dir, strerror(-ret));
		goto fail;
	}
	if (s->nbd && wps_nbd_chain_member(opts->dir)) {
		wps_err(ctx, "checkpoint series on %s: name the export, not a "
			"member (#N)", opts->dir);
		ret = -EINVAL;
		goto fail;
	}
	atomic_init(&s->stop, false);
	atomic_init(&s->done, 0);
	s->at_instant = ckpt->at_instant;
	s->before_commit = ckpt->before_commit;
	s->instant_arg = ckpt->instant_arg;
	co.at_instant = opts->netbuf || ckpt->at_instant ? session_at_instant : NULL;
	co.before_commit = ckpt->before_commit ? session_before_commit : NULL;
	co.instant_arg = s;
	/* On an export retention is the writer's ring (docs/REMOTE.md
	 * "Retention"), not a fold after the commit. */
	if (s->nbd)
		co.keep = opts->keep;
	ret = wps_ckpt_new(ctx, regions, nr, &co, &s->ck);   /* takes the uffd */
	if (ret) {
		wps_ckpt_session_free(s);
		return ret;
	}
	*out = s;
	return 0;
fail:
	wps_ckpt_session_free(s);
fail_uffd:
	if (ckpt->uffd >= 0)
		close(ckpt->uffd);   /* taken over, as wps_ckpt_new would */
	return ret;
}

void wps_ckpt_session_stop(struct wps_ckpt_session *s)
{
	int saved = errno;   /* from a signal handler: leave errno alone */
	uint64_t one = 1;

	atomic_store(&s->stop, true);
	if (write(s->stop_efd, &one, sizeof(one)) < 0) {
		/* full counter: a wakeup is pending anyway */
	}
	errno = saved;
}

uint64_t wps_ckpt_session_done(const struct wps_ckpt_session *s)
{
	return atomic_load(&s->done);
}

/* The session's own wait: the deadline, or a wps_ckpt_session_stop(). */
static bool own_wait(struct wps_ckpt_session *s, const struct timespec *dl)
{
	struct pollfd p = { .fd = s->stop_efd, .events = POLLIN };
	int ms;

	while (!atomic_load(&s->stop) && (ms = wps_deadline_poll_ms(dl)))
		poll(&p, 1, ms);   /* EINTR: look again */
	return atomic_load(&s->stop);
}

static bool session_wait(struct wps_ckpt_session *s, unsigned int ms)
{
	struct timespec dl = wps_deadline_from_ms(ms);

	if (s->o.wait && s->o.wait(s->o.arg, &dl))
		atomic_store(&s->stop, true);
	return s->o.wait ? atomic_load(&s->stop) : own_wait(s, &dl);
}

/* Fold the chain path ends so that the newest `keep` images remain. */
static int retain(struct wps_ckpt_session *s, const char *path)
{
	struct wps_chain *chain;
	int ret;

	ret = wps_chain_open(s->ctx, path, 0, &chain);
	if (!ret)
		ret = wps_chain_fold(chain, s->o.keep);
	if (ret)
		wps_err(s->ctx, "retention after %s (keep %u): %s", path, s->o.keep,
			strerror(-ret));
	return ret;
}

static int session_one(struct wps_ckpt_session *s, uint64_t seq)
{
	struct wps_ckpt_session_report r = { .seq = seq };
	struct wps_ckpt_stats st;
	char path[PATH_MAX];
	int ret;

	/* A directory holds files; a chain export (an NBD URI) holds its
	 * members "URI#N" (stream/nbd_chain.h). */
	if ((size_t)(s->nbd ?
		     snprintf(path, sizeof(path), "%s#%" PRIu64, s->o.dir, seq) :
		     snprintf(path, sizeof(path), "%s/%s-%06" PRIu64 ".wpsnap",
			      s->o.dir, s->o.prefix, seq)) >= sizeof(path)) {
		wps_err(s->ctx, "checkpoint %" PRIu64 ": the path in %s is too long",
			seq, s->o.dir);
		return -ENAMETOOLONG;
	}
	ret = wps_ckpt_take(s->ck, path, &st);
	if (ret) {
		wps_err(s->ctx, "checkpoint %" PRIu64 " to %s failed: %s", seq, path,
			strerror(-ret));
		return ret;
	}
	/* durable: the epoch that ended at its instant may go out */
	if (s->o.netbuf) {
		r.epoch = s->epoch;
		r.epoch_t0_ns = s->epoch_t0;
		r.epoch_t1_ns = s->epoch_t1;
		r.commit_t0_ns = wps_now_ns();
		ret = wps_netbuf_commit(s->o.netbuf, s->epoch);
		r.commit_t1_ns = wps_now_ns();
		if (ret) {
			wps_err(s->ctx, "checkpoint %" PRIu64 ": releasing epoch %"
				PRIu64 ": %s", seq, s->epoch, strerror(-ret));
			return ret;
		}
	}
	if (s->o.keep && !s->nbd) {
		ret = retain(s, path);
		if (ret)
			return ret;
	}
	atomic_store(&s->done, seq + 1);
	if (!s->o.report)
		return 0;
	r.path = path;
	r.st = &st;
	ret = s->o.report(s->o.arg, &r);
	if (ret)
		wps_err(s->ctx, "checkpoint %" PRIu64 " (%s): its report failed: %s",
			seq, path, strerror(-ret));
	return ret;
}

int wps_ckpt_session_run(struct wps_ckpt_session *s)
{
	unsigned int ms = s->o.first_ms;
	uint64_t seq;
	int ret = 0;

	for (seq = atomic_load(&s->done); !s->o.count || seq < s->o.count; seq++) {
		if (session_wait(s, ms))
			break;
		ms = s->o.interval_ms;
		ret = session_one(s, seq);
		if (ret)
			break;
	}
	return ret;
}

void wps_ckpt_session_free(struct wps_ckpt_session *s)
{
	if (!s)
		return;
	wps_ckpt_free(s->ck);   /* unregisters: no protection left */
	if (s->stop_efd >= 0)
		close(s->stop_efd);
	free((char *)s->o.dir);
	free((char *)s->o.prefix);
	free(s);
}
