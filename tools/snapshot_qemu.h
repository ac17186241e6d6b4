/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap snapshot --qemu / --physmem: the command-line front of the
 * library's QEMU module (<wpsnap/qemu.h>). */
#ifndef WPSNAP_TOOLS_SNAPSHOT_QEMU_H
#define WPSNAP_TOOLS_SNAPSHOT_QEMU_H

#include <stdbool.h>

#include <wpsnap/wpsnap.h>

struct cmd_qemu_opts {
	const char *qmp_path;   /* QEMU's QMP socket (a unix socket path) */
	const char *out;        /* the image */
	unsigned int flags;     /* WPS_SNAP_* */
	unsigned int fault_window; /* wps_snapshot_opts.fault_window */
	bool json;              /* the report as one JSON object */
	bool no_stop;           /* wps_qemu_opts.no_stop */
};

/* Snapshot the guest RAM of the QEMU behind opts->qmp_path. Returns the
 * process exit status (0, or 1 with the reason on stderr). */
int cmd_snapshot_qemu(struct wps_ctx *ctx, const struct cmd_qemu_opts *opts);

/* Write the guest-physical memory recorded in a --qemu image to out as a
 * raw file, laid out as QEMU's pmemsave would write it from address 0
 * (what no RAM backs stays a hole). Prints the ranges written. Returns
 * the process exit status. */
int cmd_physmem(struct wps_ctx *ctx, const char *image, const char *out);

#endif
