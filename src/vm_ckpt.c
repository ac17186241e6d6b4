/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Periodic checkpoints of a libvirt/QEMU VM (<wpsnap/vm.h>, docs/VM.md):
 * the checkpoint series of <wpsnap/session.h> applied to QEMU's RAM, with
 * each checkpoint's pause being a VM snapshot's instant (src/vm.c:
 * libvirt suspend, device state, disk-only snapshot, resume).
 *
 * Before the first pause: libvirt, the domain, the RAM layout (the QEMU
 * module through libvirt's monitor), the watchdog (forked before the
 * userfaultfd exists, so that it cannot keep the guest protected), the
 * attach that hands us QEMU's userfaultfd, and the asynchronous
 * write-protection the series tracks writes with. Then per checkpoint:
 *
 *	pause:  watchdog "stopping" -> vm_pause (suspend, devices, disks)
 *	        (the checkpointer takes the rest of the dirty set here)
 *	resume: vm_resume -> watchdog "running"
 *	before the image is committed: its blobs (the layout, this
 *	        instant's device state) and ckpt-N.json (the disks it froze)
 *	report: the next instant's overlays; retention of the .json files
 *
 * Disks: each checkpoint freezes every disk and the domain goes on in a
 * new overlay, so checkpoint N's disk is the overlay checkpoint N-1 made
 * (the first's, the image the domain had). Overlays are named after the
 * disk the series began with (DISK.wps-ID.cN.qcow2), not after the one
 * before, so names do not grow. They are never removed here: every
 * later overlay is built on them.
 *
 * Invariants: the domain is never left paused by us (vm_resume on every
 * path; the watchdog's `virsh resume` if we die); when this returns,
 * nothing of wpsnap stays in QEMU (the session's end unregisters, the
 * attach lets go); a checkpoint is restorable once its image is
 * published, its .json being written and synced before.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/attach.h>
#include <wpsnap/checkpoint.h>
#include <wpsnap/qemu.h>
#include <wpsnap/session.h>
#include <wpsnap/vm.h>

#include "base/clock.h"
#include "base/log.h"
#include "src/qemu_int.h"
#include "src/qemu_libvirt.h"
#include "src/vm_int.h"

struct vmck {
	struct vm_instant in;
	const struct wps_vm_checkpoint_opts *o;
	struct qemu_watchdog wd;
	char *layout;           /* the layout blob, the same for every image */
	char base_id[40];       /* the series' id; checkpoint N's is ID.cN */
	char roots[VM_MAX_DISKS][PATH_MAX]; /* overlay names derive from them */
	uint64_t kept_from;     /* ckpt-N.json below this are gone */
	bool wrote_xml;         /* domain.xml is ours */
	bool published;         /* a checkpoint exists */
};

static int ckpt_name(const struct vmck *k, uint64_t seq, const char *ext,
		     char *out, size_t size)
{
	if ((size_t)snprintf(out, size, "%s/" WPS_VM_CKPT_PREFIX "-%06" PRIu64
			     "%s", k->o->dir, seq, ext) >= size)
		return -ENAMETOOLONG;
	return 0;
}

/* Checkpoint seq's overlays: every snapshotted disk's, named after the
 * disk the series began with. */
static int next_overlays(struct vmck *k, uint64_t seq)
{
	struct vm_meta *m = &k->in.m;
	unsigned int i;
	int err = 0;

	snprintf(m->id, sizeof(m->id), "%s.c%06" PRIu64, k->base_id, seq);
	for (i = 0; !err && i < m->nr_disks; i++)
		if (m->disks[i].snap)
			err = vm_overlay_path(&k->in, &m->disks[i], k->roots[i]);
	return err;
}

/* ------------------------------------------------------------------ */
/* The series' hooks                                                   */
/* ------------------------------------------------------------------ */

static int ck_pause(void *arg)
{
	struct vmck *k = arg;
	int state = 0, reason;

	/* The domain may have been paused or resumed by its owner since the
	 * last checkpoint: a paused one stays paused. */
	if (virDomainGetState(k->in.dom, &state, &reason, 0) < 0) {
		wps_err(k->in.ctx, "domain %s: no state: %s", k->in.m.domain,
			qemu_libvirt_error());
		return -EIO;
	}
	if (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED) {
		wps_err(k->in.ctx, "domain %s is no longer running",
			k->in.m.domain);
		return -ESRCH;
	}
	k->in.m.was_running = state == VIR_DOMAIN_RUNNING;
	qemu_watchdog_tell(&k->wd, QEMU_WD_STOPPING);
	return vm_pause(&k->in);
}

static int ck_resume(void *arg)
{
	struct vmck *k = arg;
	int err = vm_resume(&k->in);

	if (!err)
		qemu_watchdog_tell(&k->wd, QEMU_WD_RUNNING);
	return err;
}

/* The image's blobs, and ckpt-N.json: written, synced, then renamed in
 * place, so that a .json is whole wherever it is found. */
static int ck_before_commit(void *arg, struct wps_ckpt *ck, uint64_t seq)
{
	struct vmck *k = arg;
	char tmp[PATH_MAX], path[PATH_MAX];
	int err;

	if (!k->in.devices) {
		wps_err(k->in.ctx, "domain %s: checkpoint %" PRIu64 " has no "
			"device state", k->in.m.domain, seq);
		return -EIO;
	}
	err = wps_ckpt_add_blob(ck, WPS_QEMU_LAYOUT_BLOB, k->layout,
				strlen(k->layout));
	if (!err)
		err = wps_ckpt_add_blob(ck, WPS_VM_DEVICES_BLOB, k->in.devices,
					k->in.devices_len);
	if (err) {
		wps_err(k->in.ctx, "checkpoint %" PRIu64 ": recording its "
			"blobs: %s", seq, strerror(-err));
		return err;
	}
	err = ckpt_name(k, seq, ".json.partial", tmp, sizeof(tmp));
	if (!err)
		err = ckpt_name(k, seq, ".json", path, sizeof(path));
	if (err)
		return err;
	unlink(tmp);    /* left by a checkpoint that failed after it */
	err = vm_write_file(k->in.ctx, k->o->dir, strrchr(tmp, '/') + 1, NULL,
			    &k->in.m);
	if (err)
		return err;
	if (rename(tmp, path)) {
		err = -errno;
		wps_err(k->in.ctx, "publishing %s: %s", path, strerror(-err));
		unlink(tmp);
		return err;
	}
	return vm_fsync_dir(k->in.ctx, k->o->dir);
}

/* Retention: the RAM images the session folded away take their .json
 * with them (the oldest kept image now holds their RAM; its own .json
 * describes its instant). */
static void drop_folded(struct vmck *k, uint64_t seq)
{
	char img[PATH_MAX], meta[PATH_MAX];
	struct stat st;

	for (; k->kept_from < seq; k->kept_from++) {
		if (ckpt_name(k, k->kept_from, ".wpsnap", img, sizeof(img)) ||
		    ckpt_name(k, k->kept_from, ".json", meta, sizeof(meta)))
			return;
		if (!stat(img, &st))
			return;         /* still a checkpoint */
		if (unlink(meta) && errno != ENOENT)
			wps_warn(k->in.ctx, "cannot remove %s: %s", meta,
				 strerror(errno));
	}
}

static int ck_report(void *arg, const struct wps_ckpt_session_report *r)
{
	struct vmck *k = arg;
	struct wps_vm_checkpoint_report rep = { 0 };
	char meta[PATH_MAX];
	unsigned int i;
	int err;

	k->published = true;
	rep.seq = r->seq;
	rep.image = r->path;
	rep.meta = ckpt_name(k, r->seq, ".json", meta, sizeof(meta)) ? "" :
		   meta;
	rep.pause_ns = r->st->pause_ns;
	rep.suspend_ns = k->in.t_suspended - k->in.t_pause;
	rep.devices_ns = k->in.t_devices - k->in.t_suspended;
	rep.disks_ns = k->in.t_disks - k->in.t_devices;
	rep.devices_bytes = k->in.devices_len;
	rep.st = r->st;
	/* The domain writes into the overlays this checkpoint made: they
	 * are what the next one freezes. */
	for (i = 0; i < k->in.m.nr_disks; i++) {
		struct vm_disk *d = &k->in.m.disks[i];

		if (!d->snap)
			continue;
		rep.nr_disks++;
		memcpy(d->source, d->overlay, sizeof(d->source));
		snprintf(d->format, sizeof(d->format), "qcow2");
	}
	if (k->o->keep)
		drop_folded(k, r->seq);
	err = next_overlays(k, r->seq + 1);
	if (err)
		return err;
	return k->o->report ? k->o->report(k->o->arg, &rep) : 0;
}

/* The caller's wait, with the caller's arg (the session gives its hooks
 * one arg: ours). */
static bool ck_wait(void *arg, const struct timespec *deadline)
{
	struct vmck *k = arg;

	return k->o->wait(k->o->arg, deadline);
}

/* ------------------------------------------------------------------ */
/* The series                                                          */
/* ------------------------------------------------------------------ */

/* DIR, created if missing, holding no series yet. */
static int check_dir(struct wps_ctx *ctx, struct vmck *k)
{
	char path[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int err = 0;

	if (mkdir(k->o->dir, 0700) && errno != EEXIST) {
		err = -errno;
		wps_err(ctx, "cannot create %s: %s", k->o->dir, strerror(-err));
		return err;
	}
	d = opendir(k->o->dir);
	if (!d) {
		err = -errno;
		wps_err(ctx, "%s: %s", k->o->dir, strerror(-err));
		return err;
	}
	while ((e = readdir(d)))
		if (!strcmp(e->d_name, WPS_VM_DOMAIN_XML) ||
		    !strncmp(e->d_name, WPS_VM_CKPT_PREFIX "-",
			     strlen(WPS_VM_CKPT_PREFIX "-"))) {
			snprintf(path, sizeof(path), "%s", e->d_name);
			err = -EEXIST;
			break;
		}
	closedir(d);
	if (err)
		wps_err(ctx, "%s holds a checkpoint series already (%s): "
			"choose an empty directory", k->o->dir, path);
	return err;
}

/* Everything before the first pause, but the attach. */
static int prepare(struct vmck *k, char *virsh, size_t size, char *argv[6])
{
	unsigned int i;
	int err;

	err = vm_prepare(&k->in);
	if (!err)
		err = vm_virsh_resume_argv(&k->in, virsh, size, argv);
	if (!err)
		err = wps_qemu_layout_format(k->in.ctx, k->in.layout,
					     &k->layout);
	if (err)
		return err;
	snprintf(k->base_id, sizeof(k->base_id), "%.39s", k->in.m.id);
	for (i = 0; i < k->in.m.nr_disks; i++)
		memcpy(k->roots[i], k->in.m.disks[i].source,
		       sizeof(k->roots[i]));
	err = next_overlays(k, 0);
	if (!err)
		err = vm_write_file(k->in.ctx, k->o->dir, WPS_VM_DOMAIN_XML,
				    k->in.xml, NULL);
	k->wrote_xml = !err;
	return err;
}

/* A series that failed before its first checkpoint leaves DIR as it
 * found it, so that the same command can be run again. */
static void undo_start(struct vmck *k)
{
	static const char *const ext[] = { ".json", ".json.partial" };
	char path[PATH_MAX];
	unsigned int i;

	if (k->published || !k->wrote_xml)
		return;
	for (i = 0; i < 2; i++)
		if (!ckpt_name(k, 0, ext[i], path, sizeof(path)))
			unlink(path);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", k->o->dir,
			     WPS_VM_DOMAIN_XML) < sizeof(path))
		unlink(path);
}

static int run(struct vmck *k, struct wps_attach **at,
	       struct wps_ckpt_session **s)
{
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct wps_attach_range ranges[WPS_QEMU_MAX_BLOCKS];
	const struct wps_region *regs;
	pid_t pid = wps_qemu_pid(k->in.q);
	unsigned int nr, nregs;
	int uffd = -1, err;

	nr = qemu_layout_ranges(k->in.layout, ranges, WPS_QEMU_MAX_BLOCKS);
	err = wps_attach_new(k->in.ctx, pid, ranges, nr, at);
	if (!err)
		err = wps_attach_take_uffd(*at, &uffd);
	if (err) {
		wps_err(k->in.ctx, "cannot attach to QEMU (pid %d): %s",
			(int)pid, strerror(-err));
		return err;
	}
	regs = wps_attach_regions(*at, &nregs);
	co.flags = k->o->flags;
	co.pause = ck_pause;
	co.resume = ck_resume;
	co.pause_arg = k;
	co.before_commit = ck_before_commit;
	co.instant_arg = k;
	co.pid = pid;
	co.uffd = uffd;
	so.dir = k->o->dir;
	so.prefix = WPS_VM_CKPT_PREFIX;
	so.first_ms = 0;        /* the full image at once */
	so.interval_ms = k->o->interval_ms ? k->o->interval_ms : 1000;
	so.count = k->o->count;
	so.keep = k->o->keep;
	so.wait = k->o->wait ? ck_wait : NULL;
	so.report = ck_report;
	so.arg = k;
	err = wps_ckpt_session_new(k->in.ctx, regs, nregs, &co, &so, s);
	if (err) {
		wps_err(k->in.ctx, "cannot track QEMU's (pid %d) writes: %s",
			(int)pid, strerror(-err));
		return err;
	}
	return wps_ckpt_session_run(*s);
}

int wps_vm_checkpoint(struct wps_ctx *ctx,
		      const struct wps_vm_checkpoint_opts *o)
{
	struct vmck *k;
	struct wps_attach *at = NULL;
	struct wps_ckpt_session *s = NULL;
	char virsh[PATH_MAX], *argv[6];
	int err;

	if (!o || !o->domain || !o->domain[0] || !o->dir || !o->dir[0]) {
		wps_err(ctx, "VM checkpoints: a domain and a directory are "
			"needed");
		return -EINVAL;
	}
	k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->in.ctx = ctx;
	k->in.uri = o->uri;
	k->in.domain = o->domain;
	k->in.dir = o->dir;
	k->o = o;
	k->wd.pid = -1;
	k->wd.fd = -1;
	err = check_dir(ctx, k);
	if (!err)
		err = prepare(k, virsh, sizeof(virsh), argv);
	if (!err) {
		/* before the userfaultfd exists: the watchdog must not
		 * inherit it */
		err = qemu_watchdog_start(&k->wd, -1, argv, k->in.monitor[0] ?
					  k->in.monitor : NULL);
		if (err)
			wps_err(ctx, "cannot start the watchdog: %s",
				strerror(-err));
	}
	if (!err)
		err = run(k, &at, &s);
	if (err) {
		vm_warn_overlays(&k->in);
		undo_start(k);
	}
	wps_ckpt_session_free(s);       /* unregisters: nothing protected */
	wps_attach_free(at);
	qemu_watchdog_stop(&k->wd);
	free(k->layout);
	vm_instant_release(&k->in);
	free(k);
	return err;
}
