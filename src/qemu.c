/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU module's front (<wpsnap/qemu.h>, docs/QEMU.md): the handle on
 * a QEMU (whose monitor is one of the kinds of src/qemu_int.h), the live
 * snapshot of its guest RAM, and the guest-physical view of such an
 * image (physmem). Discovery and the layout blob are qemu_layout.c's.
 *
 * The snapshot keeps one promise: QEMU is never left stopped by us. The
 * process itself is attached, write-protected and copied by
 * <wpsnap/attach.h>, which undoes all of that on every failure, and
 * which the kernel undoes if we die (a tracer's death detaches its
 * tracees; closing the last userfaultfd reference unprotects and
 * unregisters everything). Only a QMP `stop` outlives us, so a watchdog
 * process, forked before anything else is held (it must not inherit the
 * userfaultfd), shares the monitor connection and sends `cont` if we die
 * while the guest may be stopped by us.
 *
 * The sequence: attach, `stop`, freeze, `cont`, copy. The guest is
 * stopped only from `stop` to `cont`; one that was paused already is
 * left paused (the caller decides when it runs). With no_stop there is
 * no QMP stop at all: the freeze stops every thread of QEMU (ptrace) for
 * its last step only, and the RAM is still one instant of the whole
 * process; what QMP stop adds is QEMU's own quiescing (block I/O
 * drained, device state settled), which a RAM-only image does not need.
 *
 * $WPSNAP_QEMU_TEST_KILL=connected|attached|stopped|frozen|copying makes
 * the process SIGKILL itself at that point: tests/integration/qemu.py
 * uses it to check that QEMU survives our death wherever it happens.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <wpsnap/attach.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/zero.h"
#include "src/qemu_int.h"

/* ------------------------------------------------------------------ */
/* The handle and its monitor                                          */
/* ------------------------------------------------------------------ */

int qemu_new(struct wps_ctx *ctx, int (*open)(struct wps_qemu *q,
					      const void *arg),
	     const void *arg, struct wps_qemu **out)
{
	struct wps_qemu *q = calloc(1, sizeof(*q));
	int err;

	if (!q)
		return -ENOMEM;
	q->ctx = ctx;
	err = open(q, arg);
	if (err) {
		free(q);
		return err;
	}
	*out = q;
	return 0;
}

static int open_qmp(struct wps_qemu *q, const void *path)
{
	return qemu_qmp_open(q, path);
}

int wps_qemu_open_qmp(struct wps_ctx *ctx, const char *path,
		      struct wps_qemu **out)
{
	return qemu_new(ctx, open_qmp, path, out);
}

void wps_qemu_close(struct wps_qemu *q)
{
	if (!q)
		return;
	q->ops->close(q);
	free(q);
}

pid_t wps_qemu_pid(const struct wps_qemu *q)
{
	return q->ops->pid(q);
}

int wps_qemu_execute(struct wps_qemu *q, const char *cmd, const char *args,
		     char **ret)
{
	json_t *a = NULL, *r = NULL;
	json_error_t je;
	int err;

	if (args) {
		a = json_loads(args, 0, &je);
		if (!json_is_object(a)) {
			wps_err(q->ctx, "QMP %s: arguments are not a JSON "
				"object: %s", cmd, a ? args : je.text);
			json_decref(a);
			return -EINVAL;
		}
	}
	err = qemu_execute(q, cmd, a, ret ? &r : NULL);
	if (err || !ret)
		return err;
	*ret = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(r);
	return *ret ? 0 : -ENOMEM;
}

int wps_qemu_hmp(struct wps_qemu *q, const char *cmdline, char **out)
{
	return q->ops->hmp(q, cmdline, out);
}

int wps_qemu_send_fd(struct wps_qemu *q, int fd, const char *name)
{
	json_t *args = json_pack("{s:s}", "fdname", name);

	if (!args)
		return -ENOMEM;
	return q->ops->request(q, "getfd", args, NULL, fd);
}

static void kill_point(const char *name)
{
	const char *k = getenv("WPSNAP_QEMU_TEST_KILL");

	if (k && !strcmp(k, name)) {
		fflush(stdout);
		raise(SIGKILL);
	}
}

/* ------------------------------------------------------------------ */
/* The snapshot                                                        */
/* ------------------------------------------------------------------ */

struct run {
	struct wps_qemu *q;
	/* How the guest is paused around the freeze: QMP stop/cont, or the
	 * caller's own (wps_qemu_opts.pause) */
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *arg;
	struct qemu_watchdog wd;
	bool stopped;
	uint64_t t_stop, t_stopped, t_thawed, t_cont;
};

static int qmp_stop(void *q)
{
	return qemu_execute(q, "stop", NULL, NULL);
}

static int qmp_cont(void *q)
{
	return qemu_execute(q, "cont", NULL, NULL);
}

static int guest_stop(struct run *r)
{
	int err;

	qemu_watchdog_tell(&r->wd, QEMU_WD_STOPPING);
	r->t_stop = wps_now_ns();
	err = r->pause(r->arg);
	r->t_stopped = wps_now_ns();
	/* On an error the guest may still have stopped: cont it anyway. */
	r->stopped = true;
	return err;
}

static int guest_cont(struct run *r)
{
	int err;

	if (!r->stopped)
		return 0;
	err = r->resume(r->arg);
	r->t_cont = wps_now_ns();
	if (!err) {
		r->stopped = false;
		qemu_watchdog_tell(&r->wd, QEMU_WD_RUNNING);
	}
	return err;
}

/* The snapshot's outer pause (<wpsnap/attach.h>): QMP stop right before
 * the freeze's own stop of QEMU's threads, cont once they are let go. */
static int qemu_pause(void *arg)
{
	struct run *r = arg;
	int err = guest_stop(r);

	kill_point("stopped");
	return err;
}

static int qemu_resume(void *arg)
{
	struct run *r = arg;

	r->t_thawed = wps_now_ns();   /* QEMU's threads let go; cont follows */
	return guest_cont(r);
}

/* Wait for the copy; under the test hook, die half-way through it. */
static int wait_copy(struct wps_snapshot *snap)
{
	const char *k = getenv("WPSNAP_QEMU_TEST_KILL");

	if (k && !strcmp(k, "copying")) {
		struct wps_progress p;

		for (;;) {
			wps_snapshot_progress(snap, &p);
			if (p.phase != WPS_PHASE_COPYING ||
			    (p.bytes_total && p.bytes_done >= p.bytes_total / 2))
				break;
			usleep(1000);
		}
		kill_point("copying");
	}
	return wps_snapshot_wait(snap);
}

/* Is the guest running (QMP query-status)? */
static int guest_running(struct wps_qemu *q, bool *running)
{
	json_t *st = NULL;
	int err = qemu_execute(q, "query-status", NULL, &st);

	if (err)
		return err;
	*running = json_is_true(json_object_get(st, "running"));
	json_decref(st);
	return 0;
}

static void fill_report(const struct run *r, const struct wps_qemu_opts *o,
			const struct wps_qemu_layout *l,
			struct wps_qemu_report *rep)
{
	unsigned int i;

	rep->pid = r->q->ops->pid(r->q);
	/* With the caller's pause, stop_ns and cont_ns are its pause() and
	 * resume(), and they run even for a guest that was paused. */
	rep->paused_by_us = rep->was_running && (o->pause || !o->no_stop);
	rep->pause_ns = !rep->was_running ? 0 : o->no_stop && !o->pause ?
			rep->attach.freeze_stop_ns : r->t_cont - r->t_stop;
	rep->stop_ns = rep->paused_by_us || o->pause ?
		       r->t_stopped - r->t_stop : 0;
	rep->freeze_ns = r->t_thawed - r->t_stopped;
	rep->cont_ns = rep->paused_by_us || o->pause ?
		       r->t_cont - r->t_thawed : 0;
	rep->ram_bytes = 0;
	for (i = 0; i < l->nr_blocks; i++)
		if (l->blocks[i].snap)
			rep->ram_bytes += qemu_round_up(l->blocks[i].used,
							QEMU_PAGE);
}

unsigned int qemu_layout_ranges(const struct wps_qemu_layout *l,
				struct wps_attach_range *ranges,
				unsigned int max)
{
	unsigned int i, nr = 0;

	for (i = 0; i < l->nr_blocks && nr < max; i++) {
		const struct wps_qemu_block *b = &l->blocks[i];

		if (!b->snap)
			continue;
		ranges[nr].start = b->host_addr;
		ranges[nr].end = b->host_addr + qemu_block_span(b, b->used);
		nr++;
	}
	return nr;
}

int wps_qemu_snapshot(struct wps_qemu *q, const struct wps_qemu_layout *l,
		      const struct wps_qemu_opts *o,
		      struct wps_qemu_report *rep)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_attach_range ranges[WPS_QEMU_MAX_BLOCKS];
	struct wps_snapshot *snap = NULL;
	struct wps_attach *at = NULL;
	struct run r = {
		.q = q, .wd = { .pid = -1, .fd = -1 },
		.pause = o->pause ? o->pause : qmp_stop,
		.resume = o->pause ? o->resume : qmp_cont,
		.arg = o->pause ? o->pause_arg : q,
	};
	pid_t pid = q->ops->pid(q);
	unsigned int nr, i;
	char *blob = NULL;
	int qfd, err;

	memset(rep, 0, sizeof(*rep));
	err = guest_running(q, &rep->was_running);
	if (err)
		return err;
	nr = qemu_layout_ranges(l, ranges, WPS_QEMU_MAX_BLOCKS);
	err = wps_qemu_layout_format(q->ctx, l, &blob);
	if (err)
		return err;
	/* Before anything is held: the watchdog must not inherit the uffd,
	 * which would keep the guest protected after our death. */
	if (o->pause && (!o->resume || !o->resume_argv ||
			 !o->resume_argv[0] || o->resume_argv[0][0] != '/')) {
		wps_err(q->ctx, "a snapshot with its own pause needs resume() "
			"and an absolute resume_argv");
		err = -EINVAL;
		goto out;
	}
	qfd = o->pause ? -1 : q->ops->watchdog_fd(q);
	err = o->pause ? qemu_watchdog_start(&r.wd, -1, o->resume_argv,
					  o->resume_direct) :
	      qfd < 0 ? qfd : qemu_watchdog_start(&r.wd, qfd, NULL, NULL);
	if (err == -EOPNOTSUPP && (o->no_stop || !rep->was_running))
		err = 0;        /* nothing we would have to undo */
	else if (err) {
		wps_err(q->ctx, "cannot start the watchdog of QEMU (pid %d): %s",
			(int)pid, strerror(-err));
		goto out;
	}
	kill_point("connected");
	err = wps_attach_new(q->ctx, pid, ranges, nr, &at);
	if (err) {
		wps_err(q->ctx, "cannot attach to QEMU (pid %d): %s", (int)pid,
			strerror(-err));
		goto out;
	}
	kill_point("attached");
	so.path = o->out;
	so.flags = o->flags;
	so.fault_window = o->fault_window;
	if (o->pause || (rep->was_running && !o->no_stop)) {
		so.pause = qemu_pause;
		so.resume = qemu_resume;
		so.pause_arg = &r;
	}
	err = wps_attach_snapshot_new(at, &so, &snap);
	if (err) {
		wps_err(q->ctx, "preparing the snapshot of QEMU (pid %d): %s",
			(int)pid, strerror(-err));
		goto out;
	}
	err = wps_snapshot_add_blob(snap, WPS_QEMU_LAYOUT_BLOB, blob,
				    strlen(blob));
	if (err) {
		wps_err(q->ctx, "recording the guest layout: %s",
			strerror(-err));
		goto out;
	}
	if (!so.pause)
		r.t_stop = r.t_stopped = wps_now_ns();
	err = wps_snapshot_freeze(snap);   /* QMP stop and cont inside */
	if (!so.pause)
		r.t_thawed = r.t_cont = wps_now_ns();
	if (err) {
		wps_err(q->ctx, "freezing QEMU (pid %d): %s", (int)pid,
			wps_attach_exited(at) ? "QEMU exited" : strerror(-err));
		goto out;
	}
	kill_point("frozen");
	err = guest_cont(&r);   /* a cont that failed in the freeze */
	if (err)
		goto out;
	for (i = 0; i < o->nr_blobs; i++) {
		if (!o->blobs[i].name)
			continue;
		err = wps_snapshot_add_blob(snap, o->blobs[i].name,
					    o->blobs[i].data, o->blobs[i].len);
		if (err) {
			wps_err(q->ctx, "recording blob %s: %s",
				o->blobs[i].name, strerror(-err));
			goto out;
		}
	}
	if (o->frozen)
		o->frozen(o->frozen_arg);
	err = wait_copy(snap);
	if (err) {
		wps_err(q->ctx, "QEMU (pid %d): %s", (int)pid,
			wps_attach_exited(at) ? "QEMU exited during the copy" :
			strerror(-err));
		goto out;
	}
	wps_snapshot_stats(snap, &rep->stats);
	wps_attach_get_info(at, &rep->attach);
	fill_report(&r, o, l, rep);
out:
	/* A failure between stop and cont: the guest runs again before
	 * anything else (the attach object lets go of QEMU itself). */
	if (r.stopped && guest_cont(&r))
		wps_err(q->ctx, "QEMU (pid %d) may still be stopped: resume it "
			"with the QMP command cont", (int)pid);
	wps_snapshot_free(snap);
	wps_attach_free(at);
	free(blob);
	qemu_watchdog_stop(&r.wd);
	return err;
}

/* ------------------------------------------------------------------ */
/* physmem: the guest-physical view of an image                        */
/* ------------------------------------------------------------------ */

/* The image region holding block b, by its recorded host address. */
static int region_of(const struct wps_image *img,
		     const struct wps_qemu_block *b, uint64_t *size)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	unsigned int r;

	if (!b->snap)
		return -1;
	for (r = 0; r < in->nr_regions; r++) {
		const struct wps_image_region *ir = wps_image_get_region(img, r);

		if (ir->host_addr == b->host_addr) {
			*size = ir->size;
			return (int)r;
		}
	}
	return -1;
}

/* Copy one range, its zero pages left as holes: a sparse file of RAM. */
static int copy_range(struct wps_ctx *ctx, struct wps_image *img,
		      unsigned int r, const struct wps_qemu_phys *p, int fd,
		      unsigned char *buf, size_t chunk)
{
	uint64_t done;

	for (done = 0; done < p->size; done += chunk) {
		size_t len = p->size - done < chunk ? p->size - done : chunk;
		size_t k;
		int err = wps_image_read(img, r, p->offset + done, buf, len);

		if (err) {
			wps_err(ctx, "reading region %u at %#" PRIx64 ": %s", r,
				p->offset + done, strerror(-err));
			return err;
		}
		for (k = 0; k < len; k += QEMU_PAGE) {
			if (wps_all_zero(buf + k, QEMU_PAGE))
				continue;
			if (pwrite(fd, buf + k, QEMU_PAGE,
				   (off_t)(p->gpa + done + k)) != QEMU_PAGE) {
				err = errno ? -errno : -EIO;
				wps_err(ctx, "writing guest-physical %#" PRIx64
					": %s", p->gpa + done + k,
					strerror(-err));
				return err;
			}
		}
	}
	return 0;
}

int wps_qemu_physmem(struct wps_ctx *ctx, struct wps_image *img,
		     const struct wps_qemu_layout *l, int fd,
		     wps_qemu_range_fn range, void *arg)
{
	static const size_t chunk = 1u << 20;
	unsigned char *buf = malloc(chunk);
	uint64_t top = 0;
	unsigned int i;
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < l->nr_phys && !err; i++) {
		const struct wps_qemu_phys *p = &l->phys[i];
		const struct wps_qemu_block *b = &l->blocks[p->block];
		uint64_t rsize = 0;
		int r = region_of(img, b, &rsize);

		if (r < 0)
			continue;       /* a block the image does not hold */
		if ((p->gpa | p->size | p->offset) % QEMU_PAGE ||
		    p->offset > rsize || p->size > rsize - p->offset) {
			wps_err(ctx, "physmap range %#" PRIx64 "+%#" PRIx64
				" does not fit block %s", p->gpa, p->size,
				b->name);
			err = -EINVAL;
			break;
		}
		err = copy_range(ctx, img, (unsigned int)r, p, fd, buf, chunk);
		if (err)
			break;
		if (range)
			range(arg, l, p);
		if (p->gpa + p->size > top)
			top = p->gpa + p->size;
	}
	free(buf);
	if (!err && ftruncate(fd, (off_t)top)) {
		err = -errno;
		wps_err(ctx, "setting the size of the guest-physical file to "
			"%#" PRIx64 ": %s", top, strerror(-err));
	}
	return err;
}
