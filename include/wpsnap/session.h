/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: a checkpoint series (docs/CHECKPOINT.md), the loop that both
 * `wpsnap checkpoint` and wpsnapd's wps-checkpoint-start run.
 *
 *	wps_ckpt_session_new(ctx, regions, nr, &ckpt_opts, &opts, &s);
 *	wps_ckpt_session_run(s);     // until count, a stop, or a failure
 *	wps_ckpt_session_free(s);    // tracking stops
 *
 * One round of the series: wait for the interval (a deadline on the
 * monotonic clock) or a stop; take checkpoint N into DIR/PREFIX-N.wpsnap
 * (six digits); with a netbuf, close its output epoch inside the pause
 * (the checkpoint's instant) and commit it once the image is durable,
 * never before; with keep, fold the chain so that the newest `keep`
 * images remain; then report the figures. A failure at any step stops
 * the series: an epoch whose image is not durable is never committed.
 *
 * What differs between front ends (how the guest is paused, what goes
 * into each image besides memory, how a front end sleeps and is stopped,
 * what it does with the figures) comes in as callbacks; the series itself
 * is the same everywhere.
 */
#ifndef WPSNAP_SESSION_H
#define WPSNAP_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <wpsnap/checkpoint.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

struct wps_ckpt_session;
struct wps_netbuf;

/* One durable checkpoint of the series; valid during the report only. */
struct wps_ckpt_session_report {
	uint64_t seq;                    /* 0: the full image, then 1, 2, ... */
	const char *path;                /* the image */
	const struct wps_ckpt_stats *st;
	/* Output commit (opts.netbuf set; else all 0): the epoch closed at
	 * the instant and released once the image was durable, with
	 * CLOCK_MONOTONIC ns around wps_netbuf_epoch and wps_netbuf_commit,
	 * so that a peer can check that no packet left early. */
	uint64_t epoch;
	uint64_t epoch_t0_ns, epoch_t1_ns;
	uint64_t commit_t0_ns, commit_t1_ns;
};

struct wps_ckpt_session_opts {
	const char *dir;             /* an existing directory (required) */
	const char *prefix;          /* file names: NULL means "ckpt" */
	unsigned int first_ms;       /* wait before the first checkpoint */
	unsigned int interval_ms;    /* from a checkpoint's report to the
					next checkpoint's start */
	uint64_t count;              /* checkpoints to take; 0: until stopped */
	unsigned int keep;           /* 0: keep every image; N: fold the
					older ones into the oldest of the
					newest N after each checkpoint */
	/* Output commit (docs/NETBUF.md), borrowed: freed by the caller,
	 * after the session; what it holds past the last commit is then
	 * dropped. NULL: none. */
	struct wps_netbuf *netbuf;
	/*
	 * Optional: sleep until deadline (CLOCK_MONOTONIC, absolute) unless
	 * the front end is told to stop; true if it was (the series ends
	 * without another checkpoint). Called before every checkpoint, the
	 * first included, even when the deadline has passed. NULL: the
	 * session's own wait, which wps_ckpt_session_stop() ends.
	 */
	bool (*wait)(void *arg, const struct timespec *deadline);
	/*
	 * Optional: the checkpoint is durable, its epoch committed, the
	 * retention done. Non-zero stops the series with that error.
	 */
	int (*report)(void *arg, const struct wps_ckpt_session_report *r);
	void *arg;                   /* of wait and report */
};

#define WPS_CKPT_SESSION_OPTS_INIT { .interval_ms = 1000 }

/*
 * Start tracking writes to regions (wps_ckpt_new with ckpt, which gives
 * the pause and resume, the device state as before_commit, the uffd; its
 * at_instant, if any, runs after the session has closed the epoch, with
 * ckpt->instant_arg as before). The uffd is taken over even on failure.
 * -EINVAL (logged) for a missing dir.
 */
int wps_ckpt_session_new(struct wps_ctx *ctx, const struct wps_region *regions,
			 unsigned int nr, const struct wps_ckpt_opts *ckpt,
			 const struct wps_ckpt_session_opts *opts,
			 struct wps_ckpt_session **out);

/*
 * Run the series in the calling thread: 0 once count checkpoints are
 * taken or on a stop, else the first error, logged with the checkpoint
 * and the step (take, commit of the epoch, retention, report). Once.
 */
int wps_ckpt_session_run(struct wps_ckpt_session *s);

/* Durable checkpoints so far (= the seq of the next one). */
uint64_t wps_ckpt_session_done(const struct wps_ckpt_session *s);

/*
 * End the series: no checkpoint starts after this call; one under way
 * completes (and is reported) first. From any thread, and
 * async-signal-safe, so a signal handler may call it. With a wait hook
 * the stop is seen when the hook returns.
 */
void wps_ckpt_session_stop(struct wps_ckpt_session *s);

/* Stop tracking; every protection is removed. */
void wps_ckpt_session_free(struct wps_ckpt_session *s);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_SESSION_H */
