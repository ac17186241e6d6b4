/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * /proc/PID/pagemap: PAGEMAP_SCAN walks (which pages are populated) and
 * per-page entries (is a page still uffd write-protected).
 */
#ifndef WPS_PAGEMAP_H
#define WPS_PAGEMAP_H

#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

struct wps_pagemap {
	struct wps_ctx *ctx;
	int fd;
	pid_t pid;
};

/* pid 0: the calling process. */
int wps_pagemap_open(struct wps_ctx *ctx, pid_t pid, struct wps_pagemap *pm);
void wps_pagemap_close(struct wps_pagemap *pm);

typedef int (*wps_pagemap_fn)(void *arg, uint64_t start, uint64_t end,
			      uint64_t categories);

/*
 * Call fn for each run of pages in [start, end) that has at least one of
 * the categories in anyof and none of those in none (PAGE_IS_* bits).
 * Runs are reported in address order; fn returning non-zero stops the walk
 * and is returned.
 */
int wps_pagemap_scan(struct wps_pagemap *pm, uint64_t start, uint64_t end,
		     uint64_t anyof, uint64_t none, wps_pagemap_fn fn,
		     void *arg);

/* Number of 4 KiB pages in [start, end) whose pagemap entry still has the
 * uffd-wp bit (bit 57). */
/*
 * Report the runs of [start, end) written since they were last
 * write-protected (a userfaultfd with UFFD_FEATURE_WP_ASYNC), and
 * write-protect them again in the same walk: no write between the report
 * and the re-arm can be lost. -EPERM from the kernel if the range is not
 * registered for async write-protection.
 */
int wps_pagemap_harvest(struct wps_pagemap *pm, uint64_t start, uint64_t end,
			wps_pagemap_fn fn, void *arg);

int wps_pagemap_count_wp(struct wps_pagemap *pm, uint64_t start, uint64_t end,
			 uint64_t *count);

#endif /* WPS_PAGEMAP_H */
