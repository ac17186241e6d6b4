/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot of a libvirt/QEMU VM (<wpsnap/vm.h>, docs/VM.md): disk,
 * memory and device state of one instant.
 *
 * Everything that takes time happens before the pause: libvirt
 * connection, the domain's XML and disks, attaching to QEMU and finding
 * its RAM (the QEMU module, through libvirt's monitor: qemu_libvirt.c),
 * the image's files. The pause is the QEMU module's freeze with our own
 * pause and resume around it (struct wps_qemu_opts.pause):
 *
 *	libvirt suspend -> device state -> disk-only atomic snapshot
 *	-> RAM freeze (write-protect) -> libvirt resume
 *
 * and the RAM streams afterwards while the guest runs. Suspend and
 * resume go through libvirt so that its view of the domain stays right
 * (a QMP stop behind its back would leave it saying "running").
 *
 * Device state: QMP xen-save-devices-state writes the devices alone
 * (no RAM) to a file; QEMU may not be able to open our paths (another
 * user, a sandbox), so the "file" is /dev/fdset/N: an fd of a memfd of
 * ours, write-only (QEMU's fdset matches the access mode), handed over
 * with add-fd. It becomes a blob of the memory image.
 *
 * Invariants: the domain is never left paused by us: a failed step
 * resumes it, and if this process dies between suspend and resume the
 * QEMU module's watchdog runs `virsh -c URI resume UUID`. Nothing is
 * published under DIR unless everything is in it: the directory is
 * built as DIR.partial and renamed, then its parent synced.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <wpsnap/qemu.h>
#include <wpsnap/vm.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/spawn.h"
#include "src/qemu_int.h"
#include "src/qemu_libvirt.h"
#include "src/vm_int.h"

struct vmsnap {
	struct vm_instant in;
	const struct wps_vm_snapshot_opts *o;
	char partial[PATH_MAX];
	struct wps_qemu_blob blob;
	uint64_t t_resume, t_resumed;   /* around our resume */
};

/* ------------------------------------------------------------------ */
/* Inside the pause                                                    */
/* ------------------------------------------------------------------ */

/* add-fd of fd into a new fdset: its id. */
static int add_fd(struct vm_instant *s, int fd, long long *id)
{
	json_t *ret = NULL, *v;
	int err = s->q->ops->request(s->q, "add-fd",
					json_pack("{s:s}", "opaque", "wpsnap"),
					&ret, fd);

	if (err)
		return err;
	v = json_object_get(ret, "fdset-id");
	if (!json_is_integer(v)) {
		wps_err(s->ctx, "domain %s: QMP add-fd: no fdset-id in the "
			"answer", s->m.domain);
		err = -EPROTO;
	}
	*id = json_integer_value(v);
	json_decref(ret);
	return err;
}

static int save_devices(struct vm_instant *s)
{
	char path[64], args[128];
	int mfd = memfd_create("wpsnap-devices", MFD_CLOEXEC), wfd = -1, err;
	long long id = -1;
	struct stat st;

	if (mfd < 0) {
		err = -errno;
		wps_err(s->ctx, "memfd for the device state: %s", strerror(-err));
		return err;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	wfd = open(path, O_WRONLY | O_CLOEXEC);
	if (wfd < 0) {
		err = -errno;
		wps_err(s->ctx, "%s: %s", path, strerror(-err));
		goto out;
	}
	err = add_fd(s, wfd, &id);
	if (err)
		goto out;
	snprintf(args, sizeof(args),
		 "{\"filename\":\"/dev/fdset/%lld\",\"live\":false}", id);
	err = wps_qemu_execute(s->q, "xen-save-devices-state", args, NULL);
	snprintf(args, sizeof(args), "{\"fdset-id\":%lld}", id);
	if (wps_qemu_execute(s->q, "remove-fd", args, NULL))
		wps_warn(s->ctx, "domain %s: fdset %lld stays in QEMU",
			 s->m.domain, id);
	if (err) {
		wps_err(s->ctx, "domain %s: saving the device state failed",
			s->m.domain);
		goto out;
	}
	if (fstat(mfd, &st) || st.st_size <= 0) {
		wps_err(s->ctx, "domain %s: QEMU saved no device state",
			s->m.domain);
		err = -EIO;
		goto out;
	}
	s->devices = malloc((size_t)st.st_size);
	if (!s->devices) {
		err = -ENOMEM;
		goto out;
	}
	if (pread(mfd, s->devices, (size_t)st.st_size, 0) != st.st_size) {
		err = -EIO;
		wps_err(s->ctx, "reading back the device state: short read");
		goto out;
	}
	s->devices_len = (size_t)st.st_size;
out:
	if (wfd >= 0)
		close(wfd);
	close(mfd);
	return err;
}

static int snapshot_disks(struct vm_instant *s)
{
	const unsigned int flags = VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY |
				   VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC |
				   VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA;
	virDomainSnapshotPtr sn;
	unsigned int i, n = 0;
	char *xml = NULL;
	int err;

	for (i = 0; i < s->m.nr_disks; i++)
		n += s->m.disks[i].snap;
	if (!n)
		return 0;       /* a VM without a disk to freeze */
	err = vm_xml_disk_snapshot(s->ctx, &s->m, &xml);
	if (err)
		return err;
	sn = virDomainSnapshotCreateXML(s->dom, xml, flags);
	free(xml);
	if (!sn) {
		wps_err(s->ctx, "domain %s: disk-only snapshot failed: %s",
			s->m.domain, qemu_libvirt_error());
		return -EIO;
	}
	virDomainSnapshotFree(sn);
	s->disks_done = true;
	return 0;
}

/* $WPSNAP_VM_TEST_STALL_MS: stay that long in the pause, right after
 * the suspend (tests/integration/vm_lost.py kills libvirtd there). */
static void test_stall(void)
{
	const char *e = getenv("WPSNAP_VM_TEST_STALL_MS");

	if (e && atoi(e) > 0)
		usleep((useconds_t)atoi(e) * 1000u);
}

int vm_pause(void *arg)
{
	struct vm_instant *s = arg;
	int err;

	/* the device state of an earlier instant (a checkpoint's) goes */
	free(s->devices);
	s->devices = NULL;
	s->devices_len = 0;
	s->disks_done = false;
	s->t_pause = wps_now_ns();
	if (s->m.was_running) {
		if (virDomainSuspend(s->dom) < 0) {
			wps_err(s->ctx, "domain %s: suspend failed: %s",
				s->m.domain, qemu_libvirt_error());
			return -EIO;
		}
		s->suspended = true;
	}
	s->t_suspended = wps_now_ns();
	test_stall();
	err = save_devices(s);
	s->t_devices = wps_now_ns();
	if (!err)
		err = snapshot_disks(s);
	s->t_disks = wps_now_ns();
	return err;
}

/*
 * libvirt lost (libvirtd died or restarts, our connection broke): the
 * domain must not stay paused because of us. A fresh connection first
 * (libvirt keeps its view right), else QMP cont on QEMU's own monitor
 * socket, which libvirtd's death has freed; a libvirtd that comes back
 * reads QEMU's state from QEMU.
 */
static int resume_direct(struct vm_instant *s)
{
	pid_t pid = s->q ? wps_qemu_pid(s->q) : 0;
	virConnectPtr c = NULL;
	virDomainPtr d = NULL;
	struct wps_qemu *q = NULL;
	int err = -EIO;

	if (!vm_connect(s->ctx, s->uri, &c) && !vm_lookup(s->ctx, c,
							  s->m.uuid, &d) &&
	    virDomainResume(d) == 0) {
		wps_info(s->ctx, "domain %s resumed on a new libvirt "
			 "connection", s->m.domain);
		err = 0;
	}
	if (d)
		virDomainFree(d);
	if (c)
		virConnectClose(c);
	if (!err || pid <= 0)
		return err;
	err = qemu_libvirt_open_direct(s->ctx, pid, &q);
	if (!err)
		err = wps_qemu_execute(q, "cont", NULL, NULL);
	wps_qemu_close(q);
	if (!err)
		wps_warn(s->ctx, "domain %s: libvirt is gone; resumed with QMP "
			 "cont on QEMU's monitor socket", s->m.domain);
	return err;
}

int vm_resume(void *arg)
{
	struct vm_instant *s = arg;

	if (!s->suspended)
		return 0;
	if (virDomainResume(s->dom) < 0) {
		wps_err(s->ctx, "domain %s: resume through libvirt failed: %s",
			s->m.domain, qemu_libvirt_error());
		if (resume_direct(s)) {
			wps_err(s->ctx, "domain %s stays paused: run virsh "
				"resume %s", s->m.domain, s->m.domain);
			return -EIO;
		}
	}
	s->suspended = false;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Before the pause                                                    */
/* ------------------------------------------------------------------ */

/* The overlay a snapshotted disk goes on with: beside a file, named
 * after it and the snapshot; for a block device, beside the snapshot
 * directory. */
int vm_overlay_path(struct vm_instant *s, struct vm_disk *d,
		    const char *name_from)
{
	char src[PATH_MAX], dir[PATH_MAX], out[PATH_MAX], *base, *dot;
	struct stat st;
	int n;

	snprintf(src, sizeof(src), "%s", name_from);
	if (!stat(src, &st) && S_ISBLK(st.st_mode)) {
		snprintf(dir, sizeof(dir), "%s", s->dir);
		n = snprintf(out, sizeof(out), "%s/%s-%s.wps-%s"
			     ".qcow2", dirname(dir), s->m.domain, d->target,
			     s->m.id);
	} else {
		snprintf(dir, sizeof(dir), "%s", name_from);
		base = basename(src);
		dot = strrchr(base, '.');
		if (dot && dot != base)
			*dot = '\0';
		n = snprintf(out, sizeof(out), "%s/%s.wps-%s.qcow2",
			     dirname(dir), base, s->m.id);
	}
	if (n < 0 || (size_t)n >= sizeof(d->overlay)) {
		wps_err(s->ctx, "disk %s: overlay path too long", d->target);
		return -ENAMETOOLONG;
	}
	memcpy(d->overlay, out, (size_t)n + 1);
	if (!lstat(d->overlay, &st)) {
		wps_err(s->ctx, "disk %s: %s exists already", d->target,
			d->overlay);
		return -EEXIST;
	}
	return 0;
}

int vm_prepare(struct vm_instant *s)
{
	char tbuf[32];
	time_t now = time(NULL);
	struct tm tm;
	int state = 0, reason, err;
	unsigned int i;

	err = vm_connect(s->ctx, s->uri, &s->conn);
	if (!err)
		err = vm_lookup(s->ctx, s->conn, s->domain, &s->dom);
	if (err)
		return err;
	snprintf(s->m.domain, sizeof(s->m.domain), "%s",
		 virDomainGetName(s->dom));
	virDomainGetUUIDString(s->dom, s->m.uuid);
	if (virDomainGetState(s->dom, &state, &reason, 0) < 0 ||
	    (state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED)) {
		wps_err(s->ctx, "domain %s is not running", s->m.domain);
		return -ESRCH;
	}
	s->m.was_running = state == VIR_DOMAIN_RUNNING;
	s->xml = virDomainGetXMLDesc(s->dom, VIR_DOMAIN_XML_SECURE |
				     VIR_DOMAIN_XML_MIGRATABLE);
	if (!s->xml) {
		wps_err(s->ctx, "domain %s: no XML: %s", s->m.domain,
			qemu_libvirt_error());
		return -EIO;
	}
	gmtime_r(&now, &tm);
	strftime(tbuf, sizeof(tbuf), "%Y%m%dT%H%M%S", &tm);
	snprintf(s->m.id, sizeof(s->m.id), "%s.%06llu", tbuf,
		 (unsigned long long)(wps_now_ns() / 1000 % 1000000));
	err = vm_xml_disks(s->ctx, s->xml, s->m.disks, &s->m.nr_disks);
	for (i = 0; !err && i < s->m.nr_disks; i++)
		if (s->m.disks[i].snap)
			err = vm_overlay_path(s, &s->m.disks[i],
					      s->m.disks[i].source);
	if (err)
		return err;
	err = qemu_libvirt_handle(s->ctx, s->dom, &s->q);
	if (!err)
		err = wps_qemu_discover(s->q, &s->layout);
	if (err)
		return err;
	/* for the watchdog, should libvirt die with us: a path too long
	 * for a socket address is no path (the watchdog then has virsh) */
	if (qemu_libvirt_monitor_path(s->ctx, wps_qemu_pid(s->q), s->monitor,
				      sizeof(s->monitor)))
		s->monitor[0] = '\0';
	snprintf(s->m.qemu_version, sizeof(s->m.qemu_version), "%s",
		 s->layout->version);
	snprintf(s->m.machine, sizeof(s->m.machine), "%s",
		 s->layout->machine);
	return 0;
}

/* A new file dir/name: text, or with text NULL m as vm.json; synced. */
int vm_write_file(struct wps_ctx *ctx, const char *dir, const char *name,
		  const char *text, const struct vm_meta *m)
{
	char path[PATH_MAX];
	int fd, err = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		err = -errno;
		wps_err(ctx, "cannot create %s: %s", path, strerror(-err));
		return err;
	}
	if (text) {
		size_t len = strlen(text);

		if (write(fd, text, len) != (ssize_t)len)
			err = errno ? -errno : -EIO;
	} else {
		err = vm_meta_write(ctx, m, fd);
	}
	if (!err && fsync(fd))
		err = -errno;
	if (close(fd) && !err)
		err = -errno;
	if (err)
		wps_err(ctx, "writing %s: %s", path, strerror(-err));
	return err;
}

int vm_fsync_dir(struct wps_ctx *ctx, const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0 || fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (err)
		wps_err(ctx, "syncing directory %s: %s", path, strerror(-err));
	return err;
}

/* After a failure past the disk snapshot: the domain's disks went on in
 * their overlays. */
void vm_warn_overlays(const struct vm_instant *s)
{
	unsigned int i;

	for (i = 0; s->disks_done && i < s->m.nr_disks; i++)
		if (s->m.disks[i].snap)
			wps_warn(s->ctx, "domain %s: disk %s goes on in %s; %s "
				 "is no longer written", s->m.domain,
				 s->m.disks[i].target, s->m.disks[i].overlay,
				 s->m.disks[i].source);
}

void vm_instant_release(struct vm_instant *s)
{
	free(s->uri_now);
	free(s->xml);
	free(s->devices);
	wps_qemu_layout_free(s->layout);
	wps_qemu_close(s->q);
	if (s->dom)
		virDomainFree(s->dom);
	if (s->conn)
		virConnectClose(s->conn);
	s->uri_now = NULL;
	s->xml = NULL;
	s->devices = NULL;
	s->layout = NULL;
	s->q = NULL;
	s->dom = NULL;
	s->conn = NULL;
}

/* Publish DIR.partial as DIR: its content is synced; rename; sync the
 * parent so the name survives a crash. */
static int publish(struct vmsnap *s)
{
	char parent[PATH_MAX];
	int err = vm_fsync_dir(s->in.ctx, s->partial);

	if (err)
		return err;
	if (rename(s->partial, s->o->dir)) {
		err = -errno;
		wps_err(s->in.ctx, "publishing %s: %s", s->o->dir,
			strerror(-err));
		return err;
	}
	snprintf(parent, sizeof(parent), "%s", s->o->dir);
	return vm_fsync_dir(s->in.ctx, dirname(parent));
}

static void remove_partial(struct vmsnap *s)
{
	static const char *const names[] = {
		WPS_VM_MEMORY, WPS_VM_MEMORY ".partial", WPS_VM_DOMAIN_XML,
		WPS_VM_META,
	};
	char path[PATH_MAX];
	unsigned int i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->partial,
				     names[i]) < sizeof(path))
			unlink(path);
	if (rmdir(s->partial) && errno != ENOENT)
		wps_warn(s->in.ctx, "cannot remove %s: %s", s->partial,
			 strerror(errno));
}

/* The instant's pause, and its device state as the image's blob (the
 * QEMU module reads the blobs after the freeze). */
static int snap_pause(void *arg)
{
	struct vmsnap *s = arg;
	int err = vm_pause(&s->in);

	s->blob.name = s->in.devices ? WPS_VM_DEVICES_BLOB : NULL;
	s->blob.data = s->in.devices;
	s->blob.len = s->in.devices_len;
	return err;
}

static int snap_resume(void *arg)
{
	struct vmsnap *s = arg;
	int err;

	s->t_resume = wps_now_ns();
	err = vm_resume(&s->in);
	s->t_resumed = wps_now_ns();
	return err;
}

/* The pause's figures, from our own stamps: the same whether told at
 * the instant (frozen) or in the final report. */
static void pause_figures(const struct vmsnap *s, struct wps_vm_report *p)
{
	const struct vm_instant *in = &s->in;
	unsigned int i;

	p->was_running = in->m.was_running;
	p->pause_ns = s->t_resumed - in->t_pause;
	p->suspend_ns = in->t_suspended - in->t_pause;
	p->devices_ns = in->t_devices - in->t_suspended;
	p->disks_ns = in->t_disks - in->t_devices;
	p->freeze_ns = s->t_resume - in->t_disks;
	p->resume_ns = in->m.was_running ? s->t_resumed - s->t_resume : 0;
	p->devices_bytes = in->devices_len;
	p->nr_disks = 0;
	for (i = 0; i < in->m.nr_disks; i++)
		p->nr_disks += in->m.disks[i].snap;
}

/* The QEMU module's "frozen": the guest runs again; the caller hears of
 * the pause now, not after the RAM has streamed. */
static void snap_frozen(void *arg)
{
	struct vmsnap *s = arg;
	struct wps_vm_report p = { 0 };

	pause_figures(s, &p);
	s->o->frozen(s->o->frozen_arg, &p);
}

static void fill_report(const struct vmsnap *s,
			const struct wps_qemu_report *qr, uint64_t t0,
			struct wps_vm_report *rep)
{
	rep->pid = qr->pid;
	pause_figures(s, rep);
	rep->prepare_ns = s->in.t_pause - t0;
	rep->total_ns = wps_now_ns() - t0;
	rep->ram_bytes = qr->ram_bytes;
	rep->stats = qr->stats;
}

int vm_virsh_resume_argv(struct vm_instant *s, char *virsh, size_t size,
			 char *argv[6])
{
	if (wps_spawn_find("virsh", virsh, size)) {
		wps_err(s->ctx, "virsh not found in PATH (Debian package "
			"libvirt-clients): it resumes the domain if wpsnap "
			"dies while it is paused");
		return -ENOENT;
	}
	s->uri_now = virConnectGetURI(s->conn);
	if (!s->uri_now) {
		wps_err(s->ctx, "domain %s: libvirt gives no connection URI: "
			"%s", s->m.domain, qemu_libvirt_error());
		return -EIO;
	}
	argv[0] = virsh;
	argv[1] = "-c";
	argv[2] = s->uri_now;
	argv[3] = "resume";
	argv[4] = s->m.uuid;
	argv[5] = NULL;
	return 0;
}

int wps_vm_snapshot(struct wps_ctx *ctx, const struct wps_vm_snapshot_opts *o,
		    struct wps_vm_report *rep)
{
	struct vmsnap s = { .in = { .ctx = ctx }, .o = o };
	struct wps_qemu_opts qo = { 0 };
	struct wps_qemu_report qr;
	char virsh[PATH_MAX], image[PATH_MAX], *argv[6];
	uint64_t t0 = wps_now_ns();
	bool made = false;
	struct stat st;
	int err;

	memset(rep, 0, sizeof(*rep));
	if (!o || !o->domain || !o->domain[0] || !o->dir || !o->dir[0]) {
		wps_err(ctx, "VM snapshot: a domain and a directory are needed");
		return -EINVAL;
	}
	s.in.uri = o->uri;
	s.in.domain = o->domain;
	s.in.dir = o->dir;
	if ((size_t)snprintf(s.partial, sizeof(s.partial), "%s.partial",
			     o->dir) >= sizeof(s.partial) - 32) {
		wps_err(ctx, "%s: path too long", o->dir);
		return -ENAMETOOLONG;
	}
	if (!lstat(o->dir, &st) || !lstat(s.partial, &st)) {
		wps_err(ctx, "%s exists already%s", lstat(o->dir, &st) ?
			s.partial : o->dir, lstat(o->dir, &st) ?
			" (left by a snapshot that died: remove it)" : "");
		return -EEXIST;
	}
	err = vm_prepare(&s.in);
	if (!err)
		err = vm_virsh_resume_argv(&s.in, virsh, sizeof(virsh), argv);
	if (err)
		goto out;
	if (mkdir(s.partial, 0700)) {
		err = -errno;
		wps_err(ctx, "cannot create %s: %s", s.partial, strerror(-err));
		goto out;
	}
	made = true;
	err = vm_write_file(ctx, s.partial, WPS_VM_DOMAIN_XML, s.in.xml, NULL);
	if (err)
		goto out;
	if ((size_t)snprintf(image, sizeof(image), "%s/%s", s.partial,
			     WPS_VM_MEMORY) >= sizeof(image)) {
		err = -ENAMETOOLONG;
		goto out;
	}
	qo.out = image;
	qo.flags = o->flags;
	qo.pause = snap_pause;
	qo.resume = snap_resume;
	qo.pause_arg = &s;
	qo.resume_argv = argv;
	qo.resume_direct = s.in.monitor[0] ? s.in.monitor : NULL;
	qo.blobs = &s.blob;
	qo.nr_blobs = 1;
	if (o->frozen) {
		qo.frozen = snap_frozen;
		qo.frozen_arg = &s;
	}
	err = wps_qemu_snapshot(s.in.q, s.in.layout, &qo, &qr);
	if (err) {
		vm_warn_overlays(&s.in);
		goto out;
	}
	err = vm_write_file(ctx, s.partial, WPS_VM_META, NULL, &s.in.m);
	if (!err)
		err = publish(&s);
	if (!err) {
		made = false;
		fill_report(&s, &qr, t0, rep);
	}
out:
	if (made)
		remove_partial(&s);
	vm_instant_release(&s.in);
	return err;
}
