/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: live snapshots of the guest RAM of an unmodified QEMU
 * (docs/QEMU.md).
 *
 *	wps_qemu_open_qmp(ctx, "/run/vm1-wpsnap.qmp", &q);
 *	wps_qemu_discover(q, &layout);         // RAM blocks, guest map
 *	wps_qemu_snapshot(q, layout, &opts, &report);
 *	wps_qemu_layout_free(layout);
 *	wps_qemu_close(q);
 *
 * and to read such an image back by guest-physical address:
 *
 *	wps_qemu_layout_load(ctx, img, &layout);
 *	wps_qemu_physmem(ctx, img, layout, fd, NULL, NULL);
 *
 * A QEMU is reached through its monitor (today a QMP Unix socket, one
 * client per socket: give QEMU a -qmp socket of its own for wpsnap). The
 * snapshot attaches to QEMU (<wpsnap/attach.h>: root, x86_64) and never
 * leaves it stopped: whatever fails, and even if the calling process is
 * killed, the guest runs again (a watchdog process sends QMP `cont`).
 *
 * Every function returns 0 or -errno with the reason logged through the
 * context.
 */
#ifndef WPSNAP_QEMU_H
#define WPSNAP_QEMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/attach.h>
#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The blob of every QEMU image: QEMU's RAM blocks and the guest-physical
 * map, JSON (docs/QEMU.md, "The layout blob"). */
#define WPS_QEMU_LAYOUT_BLOB "qemu-layout"
#define WPS_QEMU_LAYOUT_FORMAT "wpsnap-qemu-layout-1"

/* Limits of a layout (QEMU 7.2's pc has a handful of blocks). */
#define WPS_QEMU_MAX_BLOCKS 64
#define WPS_QEMU_MAX_PHYS 256

/* ------------------------------------------------------------------ */
/* The monitor                                                         */
/* ------------------------------------------------------------------ */

struct wps_qemu;

/*
 * Connect to QEMU's QMP Unix socket at path: greeting (5 s: a socket
 * busy with another client says nothing), capabilities negotiation.
 * QEMU's pid comes from the socket's peer credentials, so the process
 * attached later is the one that answers. Errors: -ECONNREFUSED/-ENOENT
 * (no QEMU there), -ETIMEDOUT (no greeting), -EPROTO (not QMP).
 */
int wps_qemu_open_qmp(struct wps_ctx *ctx, const char *path,
		      struct wps_qemu **out);

/* Close the monitor connection. NULL is a no-op. */
void wps_qemu_close(struct wps_qemu *q);

/* QEMU's pid. */
pid_t wps_qemu_pid(const struct wps_qemu *q);

/*
 * Run QMP command cmd with args (a JSON object as text, or NULL); *ret
 * (optional, malloc'ed) gets the "return" value as JSON text. Events
 * are skipped; 30 s without the answer is -ETIMEDOUT. A command QEMU
 * refuses is -EIO, with QEMU's description logged.
 */
int wps_qemu_execute(struct wps_qemu *q, const char *cmd, const char *args,
		     char **ret);

/* An HMP command line (human-monitor-command); *out is QEMU's text,
 * malloc'ed. */
int wps_qemu_hmp(struct wps_qemu *q, const char *cmdline, char **out);

/* Hand fd to QEMU under name (QMP getfd), e.g. for `migrate fd:name`.
 * fd stays the caller's. */
int wps_qemu_send_fd(struct wps_qemu *q, int fd, const char *name);

/* ------------------------------------------------------------------ */
/* The layout: QEMU's RAM blocks and the guest-physical map            */
/* ------------------------------------------------------------------ */

struct wps_qemu_block {
	char name[128];         /* QEMU's idstr: "pc.ram", "/rom@etc/..." */
	uint64_t ram_addr;      /* offset in QEMU's ram_addr space */
	uint64_t used, max;     /* used and maximum length, bytes */
	uint32_t page_size;     /* 0 when QEMU printed a unit we do not know */
	bool snap;              /* saved: writable RAM in the guest's view */
	bool memfd;             /* found as a memfd (discovery only) */
	uint64_t host_addr;     /* in QEMU, of its mapping; 0: not saved */
	int region;             /* image region holding it, -1: none */
};

struct wps_qemu_phys {
	uint64_t gpa, size;     /* guest-physical [gpa, gpa + size) */
	uint64_t offset;        /* into the block */
	unsigned int block;     /* index in blocks */
	bool readonly;          /* a ROM view of RAM (the BIOS shadow) */
};

struct wps_qemu_layout {
	char version[64];       /* QEMU's, "7.2.22" */
	char machine[64];       /* the machine type, "pc-i440fx-7.2"; "" if
				   unknown (images older than the field) */
	struct wps_qemu_block *blocks;
	unsigned int nr_blocks;
	struct wps_qemu_phys *phys;
	unsigned int nr_phys;
};

/*
 * Ask QEMU for its version and machine type, its RAM blocks (`info
 * ramblock`) and the flat view of address space "memory" (`info mtree
 * -f`), choose the blocks the guest can write (snap) and find each one's
 * mapping in /proc/PID/smaps (host_addr). -ENOTUNIQ when two mappings
 * could hold a block, -ENOENT when none does.
 */
int wps_qemu_discover(struct wps_qemu *q, struct wps_qemu_layout **out);

void wps_qemu_layout_free(struct wps_qemu_layout *l);

/* The layout as the blob's JSON; *json is malloc'ed, NUL-terminated. */
int wps_qemu_layout_format(struct wps_ctx *ctx,
			   const struct wps_qemu_layout *l, char **json);

/*
 * Parse a layout blob. Every field is checked (types, ranges, names
 * that refer to a block, ranges inside their block); anything malformed
 * is -EINVAL with the field named in the log.
 */
int wps_qemu_layout_parse(struct wps_ctx *ctx, const void *data, size_t len,
			  struct wps_qemu_layout **out);

/* Find and parse the layout blob of an image: -ENOENT when it has none
 * (not a snapshot of QEMU). */
int wps_qemu_layout_load(struct wps_ctx *ctx, const struct wps_image *img,
			 struct wps_qemu_layout **out);

/* Called for each guest-physical range wps_qemu_physmem() wrote. */
typedef void (*wps_qemu_range_fn)(void *arg, const struct wps_qemu_layout *l,
				  const struct wps_qemu_phys *p);

/*
 * Write the guest-physical memory of img to fd as QEMU's pmemsave would
 * (from address 0; zero pages and what no saved block backs stay holes)
 * and set the file's size to the top of the highest range. Ranges of
 * blocks the image does not hold are skipped. -EINVAL when a range does
 * not fit its region.
 */
int wps_qemu_physmem(struct wps_ctx *ctx, struct wps_image *img,
		     const struct wps_qemu_layout *l, int fd,
		     wps_qemu_range_fn range, void *arg);

/* ------------------------------------------------------------------ */
/* The snapshot                                                        */
/* ------------------------------------------------------------------ */

struct wps_qemu_blob {
	const char *name;
	const void *data;
	size_t len;
};

struct wps_qemu_opts {
	const char *out;        /* the image */
	unsigned int flags;     /* WPS_SNAP_* */
	unsigned int fault_window; /* wps_snapshot_opts.fault_window */
	/* No QMP stop/cont: the freeze's own stop of every QEMU thread
	 * (ptrace, sub-millisecond) is the only pause. */
	bool no_stop;
	/* Optional: called once the image is the RAM of one instant and
	 * QEMU is let go, before the copy (a caller that paused the guest
	 * itself may let it run from here). */
	void (*frozen)(void *arg);
	void *frozen_arg;
	/*
	 * Optional: the caller's own pause around the freeze instead of QMP
	 * stop/cont, run whether or not the guest was running (a VM
	 * snapshot suspends the domain through libvirt, snapshots its disks
	 * and saves its device state there). pause() runs right before the
	 * freeze stops QEMU's threads, resume() right after they are let go;
	 * an error from pause() fails the snapshot, and resume() runs then
	 * too. resume_argv (required with pause) is what the watchdog runs
	 * with execv if this process dies between the two: argv[0] an
	 * absolute path, e.g. {"/usr/bin/virsh", "-c", URI, "resume", DOM}.
	 */
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *pause_arg;
	char *const *resume_argv;
	/* Optional: more blobs for the image (besides the layout). They are
	 * read after the freeze, so pause() may fill them in (a VM's device
	 * state is saved while it is paused). A blob with no name is
	 * skipped. */
	const struct wps_qemu_blob *blobs;
	unsigned int nr_blobs;
	/* Optional, with resume_argv: a QMP Unix socket (QEMU's monitor
	 * under libvirt) on which the watchdog sends cont if resume_argv
	 * fails (libvirt died with us). */
	const char *resume_direct;
};

struct wps_qemu_report {
	pid_t pid;
	bool was_running;       /* the guest ran when we came */
	bool paused_by_us;      /* QMP stop/cont around the freeze */
	uint64_t pause_ns;      /* the guest's pause (0: it was paused) */
	uint64_t stop_ns, freeze_ns, cont_ns; /* its parts (QMP stop) */
	uint64_t ram_bytes;     /* of the blocks saved, page-rounded */
	struct wps_snapshot_stats stats;
	struct wps_attach_info attach;
};

/*
 * Snapshot the blocks of l marked snap into opts->out (l is the
 * discovery's, and is recorded as the image's layout blob). A guest
 * that was paused is left paused; one that ran is paused only from QMP
 * stop to cont (or, with no_stop, for the freeze's ptrace stop). On
 * failure the guest runs again, nothing stays attached or protected,
 * nothing is published under opts->out.
 */
int wps_qemu_snapshot(struct wps_qemu *q, const struct wps_qemu_layout *l,
		      const struct wps_qemu_opts *opts,
		      struct wps_qemu_report *report);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_QEMU_H */
