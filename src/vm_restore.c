/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Restoring a VM snapshot directory (<wpsnap/vm.h>, docs/VM.md) into a
 * new libvirt domain that continues from the snapshot's instant.
 *
 * The sequence: each frozen disk gets a new qcow2 overlay (qemu-img),
 * the domain XML is renamed and pointed at them, and libvirt starts it
 * paused with QEMU waiting for a deferred incoming migration; the RAM
 * of the image is written into the new QEMU's RAM blocks (found by the
 * QEMU module's discovery, matched by name and size), then QEMU loads
 * the device state (migrate-incoming of the device-only stream over an
 * fd) and libvirt resumes it. Any RAM backing works:
 * a shared block is loaded straight into QEMU's memfd, a private one
 * written in with process_vm_writev.
 *
 * Why not QEMU's own RAM loading: libvirt's `virsh restore` reads a RAM
 * stream through QEMU's migration code, page by page, with the guest
 * stopped throughout; writing the RAM straight into the new process is
 * what lets a restore be as fast as the disk, and is the ground the
 * lazy restore stands on.
 *
 * Invariants: a device state is loaded only into the same QEMU version
 * and machine type it came from (-EPROTO, both named); a failure after
 * the domain was created destroys it and removes the overlays made for
 * it; the snapshot directory is only read.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include <wpsnap/chain.h>
#include <wpsnap/image.h>
#include <wpsnap/qemu.h>
#include <wpsnap/vm.h>

#include "base/clock.h"
#include "base/procmaps.h"
#include "base/log.h"
#include "base/memsrc.h"
#include "base/spawn.h"
#include "base/zero.h"
#include "src/qemu_libvirt.h"
#include "src/vm_int.h"

#define CHUNK (1u << 20)
#define INCOMING_TIMEOUT_NS (300ull * 1000000000ull)

struct vmrest {
	struct wps_ctx *ctx;
	const struct wps_vm_restore_opts *o;
	struct vm_meta m;
	char *xml;
	struct wps_chain *chain;  /* the RAM: one image, or a checkpoint's chain */
	struct wps_image *img;    /* its newest: layout and device state */
	struct wps_image *flat;   /* lazy: the chain as one image to page */
	struct wps_qemu_layout *saved, *now;
	const void *devices;
	size_t devices_len;
	virConnectPtr conn;
	virDomainPtr dom;
	struct wps_qemu *q;
	bool made[VM_MAX_DISKS];
	uint64_t ram_bytes;
	/* lazy: a pager per shared block, and the file it fills */
	struct vm_lazy *lazy[WPS_QEMU_MAX_BLOCKS];
	int lazy_fd[WPS_QEMU_MAX_BLOCKS];
	unsigned int nr_lazy;
	uint64_t lazy_bytes;
};

/*
 * Which instant of dir: a snapshot directory's (vm.json, memory.wps), or
 * a checkpoint directory's checkpoint o->seq, else its newest (the
 * highest N with ckpt-N.wpsnap and ckpt-N.json).
 */
static int pick(struct vmrest *r, char *meta, char *mem, size_t size)
{
	const char *dir = r->o->dir;
	uint64_t seq = 0, n;
	bool found = false;
	struct dirent *e;
	struct stat st;
	DIR *d;

	snprintf(meta, size, "%s/%s", dir, WPS_VM_META);
	if (!stat(meta, &st)) {
		if (r->o->at_seq) {
			wps_err(r->ctx, "%s is a snapshot, not a checkpoint "
				"directory: there is no checkpoint %" PRIu64,
				dir, r->o->seq);
			return -EINVAL;
		}
		snprintf(mem, size, "%s/%s", dir, WPS_VM_MEMORY);
		return 0;
	}
	d = opendir(dir);
	if (!d) {
		int err = -errno;

		wps_err(r->ctx, "%s: %s", dir, strerror(-err));
		return err;
	}
	while ((e = readdir(d))) {
		char tail[16];

		if (sscanf(e->d_name, WPS_VM_CKPT_PREFIX "-%" SCNu64 "%15s", &n,
			   tail) != 2 || strcmp(tail, ".wpsnap") ||
		    (r->o->at_seq && n != r->o->seq) || (found && n < seq))
			continue;
		snprintf(meta, size, "%s/" WPS_VM_CKPT_PREFIX "-%06" PRIu64
			 ".json", dir, n);
		if (stat(meta, &st))
			continue;
		seq = n;
		found = true;
	}
	closedir(d);
	if (!found) {
		if (r->o->at_seq)
			wps_err(r->ctx, "%s: no checkpoint %" PRIu64 " (its "
				WPS_VM_CKPT_PREFIX "-%06" PRIu64 ".wpsnap and "
				".json)", dir, r->o->seq, r->o->seq);
		else
			wps_err(r->ctx, "%s: neither a snapshot (no %s) nor a "
				"checkpoint directory (no checkpoint)", dir,
				WPS_VM_META);
		return -ENOENT;
	}
	snprintf(meta, size, "%s/" WPS_VM_CKPT_PREFIX "-%06" PRIu64 ".json",
		 dir, seq);
	snprintf(mem, size, "%s/" WPS_VM_CKPT_PREFIX "-%06" PRIu64 ".wpsnap",
		 dir, seq);
	wps_dbg(r->ctx, "%s: checkpoint %" PRIu64, dir, seq);
	return 0;
}

static int load_dir(struct vmrest *r)
{
	char meta[PATH_MAX], mem[PATH_MAX], path[PATH_MAX];
	const struct wps_image_info *in;
	unsigned int i;
	int err;

	err = pick(r, meta, mem, sizeof(mem));
	if (!err)
		err = vm_meta_read(r->ctx, meta, &r->m);
	if (err)
		return err;
	snprintf(path, sizeof(path), "%s/%s", r->o->dir, WPS_VM_DOMAIN_XML);
	err = vm_read_file(r->ctx, path, 16u << 20, &r->xml, NULL);
	if (err)
		return err;
	err = wps_chain_open(r->ctx, mem, 0, &r->chain);
	if (err)
		return err;
	r->img = wps_chain_image(r->chain, wps_chain_length(r->chain) - 1);
	err = wps_qemu_layout_load(r->ctx, r->img, &r->saved);
	if (err) {
		wps_err(r->ctx, "%s: no QEMU layout in the image", mem);
		return err;
	}
	in = wps_image_get_info(r->img);
	for (i = 0; i < in->nr_blobs; i++) {
		const char *name;
		const void *data;
		size_t len;

		if (!wps_image_get_blob(r->img, i, &name, &data, &len) &&
		    !strcmp(name, WPS_VM_DEVICES_BLOB)) {
			r->devices = data;
			r->devices_len = len;
		}
	}
	if (!r->devices || !r->devices_len) {
		wps_err(r->ctx, "%s: no device state (blob %s)", mem,
			WPS_VM_DEVICES_BLOB);
		return -EINVAL;
	}
	return 0;
}

/* New qcow2 overlays on the frozen images, beside them. */
static int make_overlays(struct vmrest *r, const char *name)
{
	char id[32], dir[PATH_MAX], out[PATH_MAX];
	time_t now = time(NULL);
	struct tm tm;
	unsigned int i;

	gmtime_r(&now, &tm);
	strftime(id, sizeof(id), "%Y%m%dT%H%M%S", &tm);
	for (i = 0; i < r->m.nr_disks; i++) {
		struct vm_disk *d = &r->m.disks[i];
		struct wps_spawn_result res;
		char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2",
				 "-F", d->format, "-b", d->source, d->overlay,
				 NULL };
		struct stat st;
		int n, err;

		if (!d->snap)
			continue;
		snprintf(dir, sizeof(dir), "%s", d->source);
		n = snprintf(out, sizeof(out),
			     "%s/%s-%s.wps-%s.%06llu.qcow2", dirname(dir), name,
			     d->target, id, (unsigned long long)
			     (wps_now_ns() / 1000 % 1000000));
		if (n < 0 || (size_t)n >= sizeof(d->overlay))
			return -ENAMETOOLONG;
		memcpy(d->overlay, out, (size_t)n + 1);
		if (stat(d->source, &st)) {
			err = -errno;
			wps_err(r->ctx, "disk %s: frozen image %s: %s",
				d->target, d->source, strerror(-err));
			return err;
		}
		err = wps_spawn_run(argv, -1, &res);
		if (err == -ENOENT)
			wps_err(r->ctx, "qemu-img not found in PATH (Debian "
				"package qemu-utils)");
		else if (!err && res.status) {
			wps_err(r->ctx, "disk %s: '%s' failed: %s", d->target,
				res.cmd, res.out);
			err = -EIO;
		}
		if (err)
			return err;
		r->made[i] = true;
	}
	return 0;
}

static int check_same_qemu(struct vmrest *r)
{
	const struct wps_qemu_layout *a = r->saved, *b = r->now;

	if (strcmp(a->version, b->version) || strcmp(a->machine, b->machine)) {
		wps_err(r->ctx, "the snapshot is of QEMU %s, machine %s; the "
			"restored domain runs QEMU %s, machine %s: a device "
			"state loads only into the same version and machine",
			a->version, a->machine[0] ? a->machine : "(unknown)",
			b->version, b->machine[0] ? b->machine : "(unknown)");
		return -EPROTO;
	}
	return 0;
}

/* Write len bytes at QEMU's address addr. */
static int poke(struct vmrest *r, pid_t pid, uint64_t addr, void *buf,
		size_t len)
{
	size_t done = 0;

	while (done < len) {
		struct iovec l = { (char *)buf + done, len - done };
		struct iovec rv = { (void *)(uintptr_t)(addr + done),
				    len - done };
		ssize_t n = process_vm_writev(pid, &l, 1, &rv, 1, 0);

		if (n <= 0) {
			int err = n < 0 ? errno : EIO;

			wps_err(r->ctx, "writing QEMU (pid %d) at 0x%" PRIx64
				": %s", (int)pid, addr + done, strerror(err));
			return -err;
		}
		done += (size_t)n;
	}
	return 0;
}

/*
 * One saved block into the new QEMU's block of the same name and size.
 * The region is loaded at disk speed (wps_image_load: libaio, several
 * reads in flight, checksums verified) into a fresh mapping of ours, then
 * written over in large pieces; a piece that is zero in the image is
 * written only if the new QEMU has something there (a ROM its reset
 * copied into RAM): reading fresh memory costs no allocation, writing
 * zeros would. The mapping holds the block once, for the length of the
 * copy.
 */
static int copy_block(struct vmrest *r, const struct wps_qemu_block *sb,
		      const struct wps_qemu_block *nb, uint64_t size,
		      unsigned char *cur)
{
	pid_t pid = wps_qemu_pid(r->q);
	struct wps_image_load_stats ls;
	struct wps_memsrc qemu;
	unsigned char *buf;
	uint64_t off;
	int err;

	buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE |
		   MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (buf == MAP_FAILED) {
		err = -errno;
		wps_err(r->ctx, "RAM block %s: cannot map %" PRIu64 " bytes: "
			"%s", sb->name, size, strerror(-err));
		return err;
	}
	err = wps_chain_load(r->chain, (unsigned int)sb->region, buf, &ls);
	if (!err)
		wps_dbg(r->ctx, "RAM block %s: %" PRIu64 " bytes loaded in "
			"%.1f ms%s", sb->name, ls.bytes, ls.ns / 1e6,
			ls.direct ? " (O_DIRECT)" : "");
	wps_memsrc_init_remote(&qemu, r->ctx, pid, nb->host_addr, size);
	for (off = 0; off < size && !err; off += CHUNK) {
		size_t len = size - off < CHUNK ? size - off : CHUNK;

		if (wps_all_zero(buf + off, len) &&
		    !wps_memsrc_try_read(&qemu, off, cur, len) &&
		    wps_all_zero(cur, len))
			continue;
		err = poke(r, pid, nb->host_addr + off, buf + off, len);
	}
	wps_memsrc_close(&qemu);
	munmap(buf, size);
	return err;
}

/*
 * The file behind QEMU's mapping of a shared block (its memfd), opened
 * read-write through /proc/PID/map_files, and where the block starts in
 * it: -ENOENT when the mapping is not a shared file.
 */
static int open_block_file(struct vmrest *r, const struct wps_qemu_block *nb,
			   uint64_t *offset)
{
	pid_t pid = wps_qemu_pid(r->q);
	struct wps_maps_vma *v = NULL;
	unsigned int n = 0, i;
	int fd = -ENOENT;
	char path[96];

	if (!nb->memfd || wps_maps_read(pid, 0, &v, &n))
		return -ENOENT;
	for (i = 0; i < n; i++) {
		if (v[i].start != nb->host_addr || v[i].perms[3] != 's')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64
			 "-%" PRIx64, (int)pid, v[i].start, v[i].end);
		fd = open(path, O_RDWR | O_CLOEXEC);
		fd = fd < 0 ? -errno : fd;
		*offset = v[i].offset;
		break;
	}
	free(v);
	return fd;
}

/* Does any image of the chain hold block b of region r? */
static bool chain_present(struct wps_chain *c, unsigned int r, uint64_t b)
{
	unsigned int i;

	for (i = 0; i < wps_chain_length(c); i++)
		if (wps_image_block_present(wps_chain_image(c, i), r, b) > 0)
			return true;
	return false;
}

/*
 * A shared block (memfd): the image is loaded straight into it through a
 * mapping of our own, at disk speed, with no copy and no page faults in
 * QEMU. What the fresh QEMU put there itself (a ROM its reset copied into
 * RAM) is found with SEEK_DATA and cleared first where the image has a
 * hole, since the load skips holes.
 */
static int load_shared(struct vmrest *r, const struct wps_qemu_block *sb,
		       int fd, uint64_t foff, uint64_t size)
{
	struct wps_image_load_stats ls;
	unsigned char *map;
	off_t pos;
	int err;

	map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   (off_t)foff);
	if (map == MAP_FAILED) {
		err = -errno;
		wps_err(r->ctx, "RAM block %s: cannot map QEMU's memory: %s",
			sb->name, strerror(-err));
		return err;
	}
	for (pos = lseek(fd, (off_t)foff, SEEK_DATA);
	     pos >= 0 && (uint64_t)pos < foff + size;
	     pos = lseek(fd, pos, SEEK_DATA)) {
		off_t end = lseek(fd, pos, SEEK_HOLE);
		uint64_t b;

		if (end < 0 || (uint64_t)end > foff + size)
			end = (off_t)(foff + size);
		for (b = ((uint64_t)pos - foff) / 4096;
		     b < ((uint64_t)end - foff) / 4096; b++)
			if (!chain_present(r->chain,
					   (unsigned int)sb->region, b))
				memset(map + b * 4096, 0, 4096);
		pos = end;
	}
	err = wps_chain_load(r->chain, (unsigned int)sb->region, map, &ls);
	if (!err)
		wps_dbg(r->ctx, "RAM block %s: %" PRIu64 " bytes loaded into "
			"QEMU's memfd in %.1f ms", sb->name, ls.bytes,
			ls.ns / 1e6);
	munmap(map, size);
	return err;
}

/* A shared block served on demand: the pager keeps fd. */
static int lazy_block(struct vmrest *r, const struct wps_qemu_block *sb,
		      const struct wps_qemu_block *nb, int fd, uint64_t foff,
		      uint64_t size)
{
	const struct wps_image_region *ir =
		wps_image_get_region(r->img, (unsigned int)sb->region);
	struct wps_region dst = {
		.host_addr = nb->host_addr, .size = size,
		.page_size = ir->page_size, .fd = fd, .fd_offset = foff,
		.backing = ir->page_size > 4096 ? WPS_BACKING_HUGETLB :
						  WPS_BACKING_MEMFD,
		.name = sb->name,
	};
	int err;

	if (r->nr_lazy == WPS_QEMU_MAX_BLOCKS) {
		close(fd);
		return -E2BIG;
	}
	r->lazy_fd[r->nr_lazy] = fd;
	err = vm_lazy_block(r->ctx, r->flat, (unsigned int)sb->region,
			    wps_qemu_pid(r->q), &dst, &r->lazy[r->nr_lazy]);
	r->nr_lazy++;           /* the fd is closed with the others */
	if (!err)
		r->lazy_bytes += size;
	return err;
}

/* Every lazy block in place: the domain depends on us no longer. */
static int graduate(struct vmrest *r, struct wps_vm_restore_report *rep)
{
	unsigned int i;
	int err = 0;

	for (i = 0; i < r->nr_lazy && !err; i++) {
		struct wps_pager_stats st;

		err = vm_lazy_graduate(r->lazy[i], &st);
		if (err) {
			wps_err(r->ctx, "lazy restore: the RAM could not all "
				"be delivered: %s (the domain is stopped)",
				strerror(-err));
			break;
		}
		rep->faults += st.faults;
		if (st.fault_p99_ns > rep->fault_p99_ns)
			rep->fault_p99_ns = st.fault_p99_ns;
		if (st.fault_max_ns > rep->fault_max_ns)
			rep->fault_max_ns = st.fault_max_ns;
	}
	return err;
}

static void lazy_free(struct vmrest *r)
{
	unsigned int i;

	for (i = 0; i < r->nr_lazy; i++) {
		vm_lazy_free(r->lazy[i]);
		close(r->lazy_fd[i]);
	}
	r->nr_lazy = 0;
}

static int fill_block(struct vmrest *r, const struct wps_qemu_block *sb,
		      unsigned char *cur)
{
	const struct wps_qemu_block *nb = NULL;
	uint64_t size, foff = 0;
	unsigned int i;
	int fd, err;

	for (i = 0; i < r->now->nr_blocks && !nb; i++)
		if (!strcmp(r->now->blocks[i].name, sb->name))
			nb = &r->now->blocks[i];
	if (!nb || !nb->host_addr || nb->used != sb->used) {
		wps_err(r->ctx, "RAM block %s (%" PRIu64 " bytes) of the "
			"snapshot has no match in the restored QEMU%s",
			sb->name, sb->used, nb ? " of the same size" : "");
		return -EPROTO;
	}
	size = wps_image_get_region(r->img, (unsigned int)sb->region)->size;
	fd = open_block_file(r, nb, &foff);
	if (fd >= 0 && r->o->lazy) {
		err = lazy_block(r, sb, nb, fd, foff, size);
	} else if (fd >= 0) {
		err = load_shared(r, sb, fd, foff, size);
		close(fd);
	} else {
		err = copy_block(r, sb, nb, size, cur);
	}
	r->ram_bytes += size;
	return err;
}

static int fill_ram(struct vmrest *r)
{
	unsigned char *cur = malloc(CHUNK);
	unsigned int i;
	int err = cur ? 0 : -ENOMEM;

	for (i = 0; !err && i < r->saved->nr_blocks; i++)
		if (r->saved->blocks[i].region >= 0)
			err = fill_block(r, &r->saved->blocks[i], cur);
	free(cur);
	return err;
}

/* migrate-incoming of the device state over an fd; wait for the end. */
static int load_devices(struct vmrest *r)
{
	uint64_t end = wps_now_ns() + INCOMING_TIMEOUT_NS;
	int fd = memfd_create("wpsnap-devices", MFD_CLOEXEC), err;

	if (fd < 0)
		return -errno;
	if (pwrite(fd, r->devices, r->devices_len, 0) !=
	    (ssize_t)r->devices_len) {
		close(fd);
		return -EIO;
	}
	err = wps_qemu_send_fd(r->q, fd, "wpsnap-devices");
	close(fd);
	if (!err)
		err = wps_qemu_execute(r->q, "migrate-incoming",
				       "{\"uri\":\"fd:wpsnap-devices\"}", NULL);
	while (!err) {
		char *ret = NULL;
		json_t *st;
		const char *s;

		err = wps_qemu_execute(r->q, "query-migrate", NULL, &ret);
		if (err)
			break;
		st = json_loads(ret, 0, NULL);
		free(ret);
		s = json_string_value(json_object_get(st, "status"));
		if (s && !strcmp(s, "completed")) {
			json_decref(st);
			return 0;
		}
		if (s && (!strcmp(s, "failed") || !strcmp(s, "cancelled"))) {
			const char *d = json_string_value(
				json_object_get(st, "error-desc"));

			wps_err(r->ctx, "QEMU refused the device state: %s "
				"(QEMU's log has more)", d ? d : s);
			err = -EIO;
		} else if (wps_now_ns() > end) {
			wps_err(r->ctx, "loading the device state: still %s "
				"after %llu s", s ? s : "not started",
				INCOMING_TIMEOUT_NS / 1000000000ull);
			err = -ETIMEDOUT;
		}
		json_decref(st);
		if (!err)
			usleep(2000);
	}
	return err;
}

static int start_domain(struct vmrest *r, const char *name)
{
	virDomainPtr old = virDomainLookupByName(r->conn, name);
	char *xml = NULL;
	int err;

	if (old) {
		int active = virDomainIsActive(old);

		virDomainFree(old);
		if (active) {
			wps_err(r->ctx, "domain %s is running: restore under "
				"another name", name);
			return -EEXIST;
		}
	}
	err = make_overlays(r, name);
	if (!err)
		err = vm_xml_restore(r->ctx, r->xml, r->o->name, &r->m, &xml);
	if (err)
		return err;
	r->dom = virDomainCreateXML(r->conn, xml, VIR_DOMAIN_START_PAUSED);
	free(xml);
	if (!r->dom) {
		wps_err(r->ctx, "starting domain %s: %s", name,
			qemu_libvirt_error());
		return -EIO;
	}
	err = qemu_libvirt_handle(r->ctx, r->dom, &r->q);
	if (!err)
		err = wps_qemu_discover(r->q, &r->now);
	if (!err)
		err = check_same_qemu(r);
	return err;
}

static void undo(struct vmrest *r)
{
	unsigned int i;

	if (r->dom && virDomainDestroy(r->dom) < 0)
		wps_err(r->ctx, "cannot destroy the half-restored domain: %s",
			qemu_libvirt_error());
	for (i = 0; i < r->m.nr_disks; i++)
		if (r->made[i] && unlink(r->m.disks[i].overlay))
			wps_warn(r->ctx, "cannot remove %s: %s",
				 r->m.disks[i].overlay, strerror(errno));
}

int wps_vm_restore(struct wps_ctx *ctx, const struct wps_vm_restore_opts *o,
		   struct wps_vm_restore_report *rep)
{
	struct vmrest r = { .ctx = ctx, .o = o };
	uint64_t t0 = wps_now_ns(), t1 = 0, t2 = 0;
	const char *name;
	unsigned int i;
	int err;

	memset(rep, 0, sizeof(*rep));
	if (!o || !o->dir) {
		wps_err(ctx, "VM restore: no snapshot directory");
		return -EINVAL;
	}
	err = load_dir(&r);
	if (err)
		goto out;
	/* the pager reads one image: an increment is merged first */
	if (o->lazy) {
		err = wps_chain_open_flat(ctx, wps_chain_path(r.chain,
				wps_chain_length(r.chain) - 1), 0, &r.flat, NULL);
		if (err)
			goto out;
	}
	name = o->name ? o->name : r.m.domain;
	err = vm_connect(ctx, o->uri, &r.conn);
	if (!err)
		err = start_domain(&r, name);
	t1 = wps_now_ns();
	if (!err)
		err = fill_ram(&r);
	t2 = wps_now_ns();
	wps_dbg(ctx, "restore: domain started in %.1f ms, RAM %s in %.1f ms",
		(t1 - t0) / 1e6, o->lazy ? "set up for paging" : "written",
		(t2 - t1) / 1e6);
	if (!err)
		err = load_devices(&r);
	if (!err && !o->paused && virDomainResume(r.dom) < 0) {
		wps_err(ctx, "domain %s: resume failed: %s", name,
			qemu_libvirt_error());
		err = -EIO;
	}
	if (!err) {
		rep->pid = wps_qemu_pid(r.q);
		rep->start_ns = t1 - t0;
		rep->fill_ns = t2 - t1;
		rep->devices_ns = wps_now_ns() - t2;
		rep->total_ns = wps_now_ns() - t0;
		rep->ram_bytes = r.ram_bytes;
		rep->lazy_bytes = r.lazy_bytes;
		for (i = 0; i < r.m.nr_disks; i++)
			rep->nr_disks += r.made[i];
		if (o->lazy && o->running)
			o->running(o->arg, rep);
		err = graduate(&r, rep);
		rep->graduate_ns = wps_now_ns() - t0 - rep->total_ns;
	}
	if (err) {
		/* stopped before the undelivered pages are poisoned */
		if (r.dom && r.nr_lazy)
			virDomainSuspend(r.dom);
		lazy_free(&r);
		undo(&r);
	}
out:
	lazy_free(&r);
	wps_qemu_close(r.q);
	if (r.dom)
		virDomainFree(r.dom);
	if (r.conn)
		virConnectClose(r.conn);
	wps_qemu_layout_free(r.saved);
	wps_qemu_layout_free(r.now);
	wps_image_close(r.flat);
	wps_chain_close(r.chain);
	free(r.xml);
	return err;
}
