/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restore of a VM's shared RAM block (src/vm_restore.c, docs/VM.md):
 * the new QEMU's memfd block is served on demand from the image by the
 * pager (<wpsnap/pager.h>), so the domain can run before its RAM is in.
 *
 * The pager fills a file, never the guest's address space (pwrite into
 * the memfd, then UFFDIO_CONTINUE of QEMU's mapping), through a
 * userfaultfd of QEMU's own: the attach makes QEMU create it and hands it
 * over (wps_attach_take_uffd), and lets go of QEMU at once.
 *
 * The one trap: the pager needs memory that reads as zero, and a fresh
 * QEMU has already written into its RAM (a ROM its reset copied there).
 * A page QEMU has mapped never faults, so it would keep QEMU's bytes, not
 * the image's. Its holes are punched first (the file reads zero there
 * and QEMU's mappings of those pages are zapped), which is safe because
 * QEMU waits for its incoming migration: no vCPU runs.
 *
 * Invariants: once vm_lazy_block() succeeds the pager serves every page
 * of the block until vm_lazy_graduate() has put all of it in place;
 * vm_lazy_free() before that poisons what was not delivered (an access
 * raises SIGBUS, never reads zeros): call it with the domain stopped or
 * destroyed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <wpsnap/attach.h>
#include <wpsnap/pager.h>

#include "base/clock.h"
#include "base/log.h"
#include "src/vm_int.h"

struct vm_lazy {
	struct wps_attach *at;
	struct wps_pager *pg;
};

/* Punch every populated range of [foff, foff + size) of fd. */
static int punch_populated(struct wps_ctx *ctx, int fd, uint64_t foff,
			   uint64_t size)
{
	off_t pos, end;

	for (pos = lseek(fd, (off_t)foff, SEEK_DATA);
	     pos >= 0 && (uint64_t)pos < foff + size; pos = end) {
		end = lseek(fd, pos, SEEK_HOLE);
		if (end < 0 || (uint64_t)end > foff + size)
			end = (off_t)(foff + size);
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      pos, end - pos)) {
			int err = -errno;

			wps_err(ctx, "clearing QEMU's RAM at file offset %lld: "
				"%s", (long long)pos, strerror(-err));
			return err;
		}
	}
	if (pos < 0 && errno != ENXIO) {
		int err = -errno;

		wps_err(ctx, "finding QEMU's populated RAM: %s",
			strerror(-err));
		return err;
	}
	return 0;
}

int vm_lazy_block(struct wps_ctx *ctx, struct wps_image *img, unsigned int r,
		  pid_t pid, const struct wps_region *dst, struct vm_lazy **out)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	struct wps_attach_range range = {
		.start = dst->host_addr, .end = dst->host_addr + dst->size,
	};
	uint64_t t0 = wps_now_ns(), t1 = 0, t2 = 0, t3 = 0;
	struct vm_lazy *l;
	int uffd = -1, err;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	err = punch_populated(ctx, dst->fd, dst->fd_offset, dst->size);
	t1 = wps_now_ns();
	if (!err)
		err = wps_attach_new(ctx, pid, &range, 1, &l->at);
	if (!err)
		err = wps_attach_take_uffd(l->at, &uffd);
	t2 = wps_now_ns();
	if (err) {
		wps_err(ctx, "lazy restore: no userfaultfd in QEMU (pid %d): "
			"%s", (int)pid, strerror(-err));
		goto fail;
	}
	po.uffd = uffd;         /* the pager's from here, even on failure */
	po.pid = pid;
	err = wps_pager_new(ctx, img, r, dst, &po, &l->pg);
	t3 = wps_now_ns();
	if (!err)
		err = wps_pager_start(l->pg);
	if (!err)
		wps_dbg(ctx, "lazy block %s: punched in %.1f ms, attached %.1f, "
			"pager ready %.1f, started %.1f", dst->name ? dst->name :
			"?", (t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6,
			(wps_now_ns() - t3) / 1e6);
	if (err) {
		wps_err(ctx, "lazy restore of region %u into QEMU (pid %d): %s",
			r, (int)pid, strerror(-err));
		goto fail;
	}
	*out = l;
	return 0;
fail:
	vm_lazy_free(l);
	return err;
}

int vm_lazy_graduate(struct vm_lazy *l, struct wps_pager_stats *st)
{
	int err = wps_pager_graduate(l->pg);

	wps_pager_stats(l->pg, st);
	return err;
}

void vm_lazy_free(struct vm_lazy *l)
{
	if (!l)
		return;
	wps_pager_free(l->pg);
	wps_attach_free(l->at);
	free(l);
}
