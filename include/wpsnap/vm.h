/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: snapshots of a libvirt/QEMU VM, disk, memory and device
 * state of one instant, and their restore (docs/VM.md).
 *
 *	struct wps_vm_snapshot_opts o = { .domain = "vm1", .dir = "/snap/1" };
 *	wps_vm_snapshot(ctx, &o, &report);
 *
 *	struct wps_vm_restore_opts r = { .dir = "/snap/1", .name = "vm1-copy" };
 *	wps_vm_restore(ctx, &r, &rreport);
 *
 * A snapshot directory holds memory.wps (the guest RAM, with the QEMU
 * layout and device-state blobs), domain.xml (the domain as it was) and
 * vm.json (what the snapshot froze: QEMU version and machine type, each
 * disk's frozen image and the overlay the running domain went on with).
 * It is built as DIR.partial and renamed to DIR once complete.
 *
 * The domain is reached through libvirt (root, the QEMU driver). Built
 * without libvirt, every function here is -ENOTSUP and says so. As libvirt
 * asks of its applications, ignore SIGPIPE: a libvirtd that dies then
 * gives an error (and a domain we paused is resumed without it) instead
 * of killing the process.
 * Every function returns 0 or -errno with the reason logged.
 */
#ifndef WPSNAP_VM_H
#define WPSNAP_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <wpsnap/checkpoint.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WPS_VM_MEMORY "memory.wps"
#define WPS_VM_DOMAIN_XML "domain.xml"
#define WPS_VM_META "vm.json"
#define WPS_VM_META_FORMAT "wpsnap-vm-1"
/* The image blob with QEMU's device state (a QEMU migration stream of
 * the devices only, as xen-save-devices-state writes it). */
#define WPS_VM_DEVICES_BLOB "qemu-devices"

struct wps_vm_report;

struct wps_vm_snapshot_opts {
	const char *uri;        /* libvirt connection; NULL: libvirt's default */
	const char *domain;     /* name or UUID */
	const char *dir;        /* the snapshot directory: must not exist */
	unsigned int flags;     /* WPS_SNAP_* for the memory image */
	/* Optional: called once the guest runs again after the instant,
	 * before the RAM streams, with the pause's figures (was_running,
	 * pause_ns and its parts, devices_bytes, nr_disks; the rest 0). */
	void (*frozen)(void *arg, const struct wps_vm_report *pause);
	void *frozen_arg;
};

struct wps_vm_report {
	pid_t pid;              /* QEMU's */
	bool was_running;
	uint64_t pause_ns;      /* the guest's one pause: suspend to resume */
	uint64_t suspend_ns;    /* its parts: libvirt suspend, */
	uint64_t devices_ns;    /* device state, */
	uint64_t disks_ns;      /* disk-only snapshot of every disk, */
	uint64_t freeze_ns;     /* the RAM freeze, */
	uint64_t resume_ns;     /* libvirt resume */
	uint64_t prepare_ns;    /* before the pause: attach, discovery */
	uint64_t total_ns;      /* call to published directory */
	uint64_t devices_bytes;
	uint64_t ram_bytes;     /* of the RAM blocks saved */
	unsigned int nr_disks;  /* disks snapshotted */
	struct wps_snapshot_stats stats;
};

/*
 * Snapshot a running (or paused) domain into o->dir. The guest pauses
 * once: libvirt suspend, device state, a disk-only atomic snapshot of
 * every writable disk (each gets a qcow2 overlay beside it; the old
 * image is now frozen), the RAM freeze, libvirt resume; the RAM streams
 * while it runs. A paused domain stays paused. Whatever fails, and if
 * this process dies, the domain runs again (a watchdog runs `virsh
 * resume`), unprotected, and nothing is published under o->dir.
 * Errors: -ENOENT domain not found, -ESRCH not running, -EEXIST o->dir
 * (or DIR.partial) exists, -ECONNREFUSED no libvirt, -ENOTSUP built
 * without libvirt, and those of wps_qemu_snapshot().
 */
int wps_vm_snapshot(struct wps_ctx *ctx, const struct wps_vm_snapshot_opts *o,
		    struct wps_vm_report *report);

struct wps_vm_restore_report;

struct wps_vm_restore_opts {
	const char *uri;        /* NULL: libvirt's default */
	const char *dir;        /* a snapshot directory */
	/* The new domain's name (it gets a new UUID); NULL: the snapshot's
	 * own name and UUID, refused while that domain runs. */
	const char *name;
	bool paused;            /* leave it paused at the snapshot's instant */
	/* dir a checkpoint directory (wps_vm_checkpoint): restore
	 * checkpoint seq; false: its newest. */
	bool at_seq;
	uint64_t seq;
	/*
	 * Lazy: the domain runs as soon as its device state is in; the RAM
	 * of its shared (memfd) blocks arrives on demand and in the
	 * background (<wpsnap/pager.h>), private blocks are written first as
	 * without it. The call returns once every page is in place
	 * (graduation); running(arg) is called when the domain runs. A
	 * checkpoint increment is merged with its chain first, beside it
	 * (wps_chain_open_flat). If this process dies before the call returns,
	 * the pages not yet delivered are lost to the guest: keep it alive.
	 */
	bool lazy;
	void (*running)(void *arg, const struct wps_vm_restore_report *r);
	void *arg;
};

struct wps_vm_restore_report {
	pid_t pid;              /* the new QEMU's */
	uint64_t start_ns;      /* domain created (QEMU up, incoming) */
	uint64_t fill_ns;       /* RAM written into it */
	uint64_t devices_ns;    /* device state loaded */
	uint64_t total_ns;      /* call to running (or paused) */
	uint64_t ram_bytes;
	unsigned int nr_disks;  /* new overlays on the frozen images */
	/* lazy: */
	uint64_t lazy_bytes;    /* of ram_bytes, served by the pager */
	uint64_t faults;        /* QEMU's page faults the pager served */
	uint64_t fault_p99_ns, fault_max_ns;  /* pager side */
	uint64_t graduate_ns;   /* running .. every page in place */
};

/*
 * Start a domain from a snapshot directory, or from one checkpoint of a
 * checkpoint directory (the newest unless o->at_seq): the domain XML with the
 * name (and UUID) asked for, each disk a new qcow2 overlay on the frozen
 * image (beside it: NAME-TARGET.wps-ID.qcow2), QEMU started paused with
 * a deferred incoming migration, the RAM written into it, the device
 * state loaded, then resumed: the guest continues from the snapshot's
 * instant. The snapshot must come from the same QEMU version and
 * machine type (-EPROTO otherwise, with both named). On failure the new
 * domain is destroyed and its overlays removed.
 */
int wps_vm_restore(struct wps_ctx *ctx, const struct wps_vm_restore_opts *o,
		   struct wps_vm_restore_report *report);

/* ------------------------------------------------------------------ */
/* Periodic checkpoints of a VM                                         */
/* ------------------------------------------------------------------ */

/*
 * A checkpoint directory holds domain.xml (the domain when the series
 * began) and, for each checkpoint N (6 digits):
 *	ckpt-N.wpsnap  the RAM: a full image for the first, an increment
 *	               over N-1 after (<wpsnap/chain.h>), each with the QEMU
 *	               layout and the device state of its instant as blobs;
 *	ckpt-N.json    vm.json of that instant: the disks it froze (each
 *	               checkpoint gives every disk a new overlay; the frozen
 *	               one is the overlay the one before made).
 * A checkpoint exists once its image does; the .json is written first.
 */
#define WPS_VM_CKPT_PREFIX "ckpt"

struct wps_vm_checkpoint_report {
	uint64_t seq;           /* 0: the full one */
	const char *image;      /* DIR/ckpt-N.wpsnap, durable */
	const char *meta;       /* DIR/ckpt-N.json */
	uint64_t pause_ns;      /* suspend to resume, as the guest saw it */
	uint64_t suspend_ns;    /* its parts: libvirt suspend, */
	uint64_t devices_ns;    /* device state, */
	uint64_t disks_ns;      /* disk-only snapshot of every disk */
	uint64_t devices_bytes;
	unsigned int nr_disks;
	const struct wps_ckpt_stats *st;  /* the RAM's (<wpsnap/checkpoint.h>) */
};

struct wps_vm_checkpoint_opts {
	const char *uri;        /* NULL: libvirt's default */
	const char *domain;     /* name or UUID */
	const char *dir;        /* created if missing; must hold no series */
	unsigned int interval_ms;  /* between checkpoints (0: 1000) */
	uint64_t count;         /* checkpoints to take; 0: until stopped */
	unsigned int keep;      /* 0: all; N: fold older RAM images into
				   the oldest of the newest N */
	unsigned int flags;     /* WPS_CKPT_* */
	/* As in <wpsnap/session.h>: sleep until deadline unless told to
	 * stop (true: the series ends); NULL: sleep. */
	bool (*wait)(void *arg, const struct timespec *deadline);
	/* Each durable checkpoint; non-zero stops the series. */
	int (*report)(void *arg, const struct wps_vm_checkpoint_report *r);
	void *arg;
};

/*
 * Checkpoint a running domain every interval: the first checkpoint at
 * once, a full image; then increments of the pages written since (the
 * kernel tracks them: asynchronous write-protection of QEMU's RAM). Each
 * checkpoint pauses the guest once, as a snapshot does (libvirt suspend,
 * device state, disk-only snapshot, the end of the RAM's dirty set,
 * resume); the rest of its RAM is copied while the guest runs. Any
 * checkpoint restores with wps_vm_restore(). On return (the count
 * reached, a stop, or an error) the domain runs, nothing of wpsnap stays
 * in QEMU; if this process dies, the domain runs on too (a watchdog's
 * `virsh resume` if it was paused).
 */
int wps_vm_checkpoint(struct wps_ctx *ctx,
		      const struct wps_vm_checkpoint_opts *o);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_VM_H */
