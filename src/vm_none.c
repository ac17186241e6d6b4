/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM module (<wpsnap/vm.h>) of a library built without libvirt: the
 * same symbols, each saying so, so that a program linked against one
 * build runs against the other.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <wpsnap/vm.h>

#include "base/log.h"

static int no_libvirt(struct wps_ctx *ctx)
{
	wps_err(ctx, "wpsnap was built without libvirt: VM snapshots need "
		"it (Debian package libvirt-dev, then ./configure "
		"--with-libvirt)");
	return -ENOTSUP;
}

int wps_vm_snapshot(struct wps_ctx *ctx, const struct wps_vm_snapshot_opts *o,
		    struct wps_vm_report *report)
{
	(void)o;
	memset(report, 0, sizeof(*report));
	return no_libvirt(ctx);
}

int wps_vm_restore(struct wps_ctx *ctx, const struct wps_vm_restore_opts *o,
		   struct wps_vm_restore_report *report)
{
	(void)o;
	memset(report, 0, sizeof(*report));
	return no_libvirt(ctx);
}

int wps_vm_checkpoint(struct wps_ctx *ctx,
		      const struct wps_vm_checkpoint_opts *o)
{
	(void)o;
	return no_libvirt(ctx);
}
