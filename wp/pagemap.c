/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * PAGEMAP_SCAN lets the freeze learn which pages are populated without
 * touching them: never-populated memory costs neither time nor image
 * bytes. The per-entry reader exists for the "no leaked protection"
 * checks of tests and the daemon.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "wp/compat.h"
#include "wp/pagemap.h"

#define SCAN_VEC 512

int wps_pagemap_open(struct wps_ctx *ctx, pid_t pid, struct wps_pagemap *pm)
{
	char path[64];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	pm->ctx = ctx;
	pm->pid = pid;
	pm->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (pm->fd < 0) {
		int err = errno;

		wps_err(ctx, "cannot open %s: %s", path, strerror(err));
		return -err;
	}
	return 0;
}

void wps_pagemap_close(struct wps_pagemap *pm)
{
	if (pm->fd >= 0)
		close(pm->fd);
	pm->fd = -1;
}

static int scan(struct wps_pagemap *pm, uint64_t start, uint64_t end,
		uint64_t flags, uint64_t mask, uint64_t inverted, uint64_t anyof,
		uint64_t ret_mask, wps_pagemap_fn fn, void *arg)
{
	struct page_region vec[SCAN_VEC];
	struct pm_scan_arg a;
	uint64_t pos = start;
	int i, n, ret;

	while (pos < end) {
		memset(&a, 0, sizeof(a));
		a.size = sizeof(a);
		a.flags = flags;
		a.start = pos;
		a.end = end;
		a.vec = (uint64_t)(uintptr_t)vec;
		a.vec_len = SCAN_VEC;
		a.category_inverted = inverted;
		a.category_mask = mask;
		a.category_anyof_mask = anyof;
		a.return_mask = ret_mask;
		n = ioctl(pm->fd, PAGEMAP_SCAN, &a);
		if (n < 0) {
			ret = -errno;
			wps_err(pm->ctx, "PAGEMAP_SCAN of [0x%llx, 0x%llx) "
				"failed: %s", (unsigned long long)pos,
				(unsigned long long)end, strerror(errno));
			return ret;
		}
		for (i = 0; i < n; i++) {
			ret = fn(arg, vec[i].start, vec[i].end,
				 vec[i].categories);
			if (ret)
				return ret;
		}
		if (a.walk_end <= pos)
			break;
		pos = a.walk_end;
	}
	return 0;
}

int wps_pagemap_scan(struct wps_pagemap *pm, uint64_t start, uint64_t end,
		     uint64_t anyof, uint64_t none, wps_pagemap_fn fn,
		     void *arg)
{
	/* categories ^ inverted must have every bit of mask set: inverting
	 * the excluded ones makes "none of them" a must. PAGE_IS_HUGE is
	 * reported too, so that callers can tell THP and hugetlb runs apart
	 * (runs split where it changes). */
	return scan(pm, start, end, 0, none, none, anyof,
		    anyof | none | PAGE_IS_HUGE, fn, arg);
}

int wps_pagemap_harvest(struct wps_pagemap *pm, uint64_t start, uint64_t end,
			wps_pagemap_fn fn, void *arg)
{
	/* A full vec stops the walk at walk_end, with the pages after it
	 * neither reported nor re-protected: the loop goes on from there. */
	return scan(pm, start, end, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		    PAGE_IS_WRITTEN, 0, 0, PAGE_IS_WRITTEN, fn, arg);
}

int wps_pagemap_count_wp(struct wps_pagemap *pm, uint64_t start, uint64_t end,
			 uint64_t *count)
{
	uint64_t ent[512];
	uint64_t va = start, n = 0;

	while (va < end) {
		uint64_t pages = (end - va) / 4096;
		ssize_t got, i;

		if (pages > 512)
			pages = 512;
		got = pread(pm->fd, ent, pages * 8, (va / 4096) * 8);
		if (got < 0)
			return -errno;
		if (got == 0)
			return -EIO;
		for (i = 0; i < got / 8; i++)
			if (ent[i] & WPS_PM_UFFD_WP)
				n++;
		va += (uint64_t)(got / 8) * 4096;
	}
	*count = n;
	return 0;
}
