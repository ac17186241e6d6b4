/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap snapshot --qemu / --physmem: live snapshots of an unmodified
 * QEMU's guest RAM, and the guest-physical view of such an image. */
#ifndef WPS_SNAPSHOT_QEMU_H
#define WPS_SNAPSHOT_QEMU_H

#include <stdbool.h>

#include <wpsnap/wpsnap.h>

/* The blob that records QEMU's RAM blocks and the guest-physical map
 * (docs/QEMU.md describes its JSON). */
#define WPS_QEMU_LAYOUT_BLOB "qemu-layout"

struct wps_qemu_opts {
	const char *qmp_path;   /* QEMU's QMP socket (a unix socket path) */
	const char *out;        /* the image */
	unsigned int flags;     /* WPS_SNAP_* */
	unsigned int fault_window; /* wps_snapshot_opts.fault_window */
	bool json;              /* the report as one JSON object */
	/* No QMP stop/cont: the freeze's own stop of every QEMU thread
	 * (ptrace, sub-millisecond) is the only pause. */
	bool no_stop;
};

/* Snapshot the guest RAM of the QEMU behind opts->qmp_path. Returns the
 * process exit status (0, or 1 with the reason on stderr). */
int wps_qemu_snapshot(struct wps_ctx *ctx, const struct wps_qemu_opts *opts);

/* Write the guest-physical memory recorded in a --qemu image to out as a
 * raw file, laid out as QEMU's pmemsave would write it from address 0
 * (what no RAM backs stays a hole). Prints the ranges written. Returns
 * the process exit status. */
int wps_qemu_physmem(struct wps_ctx *ctx, const char *image, const char *out);

#endif
