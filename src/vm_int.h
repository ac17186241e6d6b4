/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the VM module (<wpsnap/vm.h>, docs/VM.md): the snapshot
 * (src/vm.c), the restore (src/vm_restore.c), the domain XML
 * (src/vm_xml.c, libxml2) and the snapshot directory's vm.json
 * (src/vm_meta.c). Built only with libvirt.
 */
#ifndef WPS_VM_INT_H
#define WPS_VM_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include <libvirt/libvirt.h>

#include <wpsnap/pager.h>
#include <wpsnap/qemu.h>
#include <wpsnap/vm.h>
#include <wpsnap/wpsnap.h>

#define VM_MAX_DISKS 32

struct vm_disk {
	char target[32];        /* "hda", "vda" */
	char source[PATH_MAX];  /* the image the domain used: frozen after */
	char format[16];        /* its format: "qcow2", "raw" */
	char overlay[PATH_MAX]; /* the new top the domain went on with */
	bool snap;              /* a writable file or block disk */
};

struct vm_meta {
	char domain[256];
	char uuid[VIR_UUID_STRING_BUFLEN];
	char qemu_version[64];
	char machine[64];
	char id[64];            /* the snapshot's id (overlay suffix) */
	bool was_running;
	struct vm_disk disks[VM_MAX_DISKS];
	unsigned int nr_disks;
};

/*
 * One instant of a domain (src/vm.c), shared by the snapshot and the
 * checkpoints (src/vm_ckpt.c): what vm_prepare() finds before any pause
 * (libvirt connection and domain, its XML and disks, the QEMU handle
 * through libvirt's monitor and the RAM layout), and what vm_pause()
 * takes inside it (libvirt suspend, device state, disk-only snapshot of
 * every disk onto m.disks[].overlay). vm_resume() undoes the suspend.
 */
struct vm_instant {
	struct wps_ctx *ctx;
	const char *uri;        /* libvirt's, NULL: its default */
	const char *domain;     /* name or UUID */
	const char *dir;        /* overlays of block devices go beside it */
	virConnectPtr conn;
	virDomainPtr dom;
	struct wps_qemu *q;
	struct wps_qemu_layout *layout;
	struct vm_meta m;
	char *xml;              /* the domain's, migratable */
	char *uri_now;          /* the connection's own (for virsh) */
	char monitor[108];      /* QEMU's monitor socket, for the watchdog
				   ("": not found; sun_path's size) */
	bool suspended, disks_done;
	void *devices;          /* the last pause's device state */
	size_t devices_len;
	/* inside the last pause; the QEMU module times freeze and resume */
	uint64_t t_pause, t_suspended, t_devices, t_disks;
};

int vm_prepare(struct vm_instant *s);
int vm_pause(void *arg);        /* arg: struct vm_instant */
int vm_resume(void *arg);
/* d->overlay for the instant m.id: beside name_from (an image file,
 * named after it), or beside s->dir for a block device; -EEXIST if it
 * exists. */
int vm_overlay_path(struct vm_instant *s, struct vm_disk *d,
		    const char *name_from);
/* The watchdog's command: virsh -c URI resume UUID (argv's strings live
 * in virsh and s). */
int vm_virsh_resume_argv(struct vm_instant *s, char *virsh, size_t size,
			 char *argv[6]);
void vm_warn_overlays(const struct vm_instant *s);
void vm_instant_release(struct vm_instant *s);

/* A new file dir/name (O_EXCL): text, or with text NULL m as vm.json;
 * synced. */
int vm_write_file(struct wps_ctx *ctx, const char *dir, const char *name,
		  const char *text, const struct vm_meta *m);
int vm_fsync_dir(struct wps_ctx *ctx, const char *path);

/*
 * Lazy restore of one shared RAM block (src/vm_lazy.c): dst is QEMU's
 * mapping (host_addr, size, page size, MEMFD or HUGETLB backing) and its
 * file (fd, kept open by the caller until vm_lazy_free, and fd_offset);
 * region r of img is served into it on demand from now on.
 */
struct vm_lazy;
int vm_lazy_block(struct wps_ctx *ctx, struct wps_image *img, unsigned int r,
		  pid_t pid, const struct wps_region *dst, struct vm_lazy **out);
int vm_lazy_graduate(struct vm_lazy *l, struct wps_pager_stats *st);
void vm_lazy_free(struct vm_lazy *l);

/* The disks of a domain XML. */
int vm_xml_disks(struct wps_ctx *ctx, const char *xml, struct vm_disk *d,
		 unsigned int *nr);

/*
 * The XML of a restored domain: named name (a new UUID) or, with name
 * NULL, as it was; every snapshotted disk on its new overlay (m's
 * overlay fields, filled by the caller), and QEMU started for a deferred
 * incoming migration of a device-only stream. *out malloc'ed.
 */
int vm_xml_restore(struct wps_ctx *ctx, const char *xml, const char *name,
		   const struct vm_meta *m, char **out);

/* libvirt's XML for a disk-only snapshot of m's disks: each snapshotted
 * one external, on its overlay. */
int vm_xml_disk_snapshot(struct wps_ctx *ctx, const struct vm_meta *m,
			 char **out);

/* vm.json of a snapshot directory, written to fd / read from path. */
int vm_meta_write(struct wps_ctx *ctx, const struct vm_meta *m, int fd);
int vm_meta_read(struct wps_ctx *ctx, const char *path, struct vm_meta *m);

/* libvirt: open uri quietly (errors come back through our log, not
 * libvirt's default stderr handler), find a domain by name or UUID. */
int vm_connect(struct wps_ctx *ctx, const char *uri, virConnectPtr *out);
int vm_lookup(struct wps_ctx *ctx, virConnectPtr c, const char *name,
	      virDomainPtr *out);

/* A whole small file, NUL-terminated, malloc'ed (at most max bytes). */
int vm_read_file(struct wps_ctx *ctx, const char *path, size_t max,
		 char **out, size_t *len);

#endif /* WPS_VM_INT_H */
