/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Validation of the guest RAM description. Everything downstream (unit
 * bitmaps, ioctl ranges, image offsets) assumes what is checked here, so a
 * bad table is refused with the exact reason before anything is touched.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int cmp_addr(const void *a, const void *b)
{
	const struct wps_region *x = *(const struct wps_region *const *)a;
	const struct wps_region *y = *(const struct wps_region *const *)b;

	return x->host_addr < y->host_addr ? -1 : x->host_addr > y->host_addr;
}

int wps_regions_check(struct wps_ctx *ctx, const struct wps_region *regions,
		      unsigned int nr)
{
	const struct wps_region **sorted;
	unsigned int i;
	int ret = 0;

	if (!nr || !regions) {
		wps_err(ctx, "no guest RAM regions given");
		return -EINVAL;
	}
	for (i = 0; i < nr; i++) {
		const struct wps_region *r = &regions[i];

		if (r->backing < WPS_BACKING_ANON ||
		    r->backing > WPS_BACKING_HUGETLB) {
			wps_err(ctx, "region %u: unknown backing %u", i,
				r->backing);
			return -EINVAL;
		}
		if (!is_pow2(r->page_size) || r->page_size < 4096 ||
		    (r->backing != WPS_BACKING_HUGETLB && r->page_size != 4096)) {
			wps_err(ctx, "region %u: page size %u is not valid for "
				"its backing (4096 for anon/memfd, the huge page "
				"size for hugetlb)", i, r->page_size);
			return -EINVAL;
		}
		if (!r->size) {
			wps_err(ctx, "region %u at 0x%llx is empty", i,
				(unsigned long long)r->host_addr);
			return -EINVAL;
		}
		if (r->host_addr % r->page_size || r->size % r->page_size) {
			wps_err(ctx, "region %u [0x%llx, +0x%llx) is not aligned "
				"to its page size %u", i,
				(unsigned long long)r->host_addr,
				(unsigned long long)r->size, r->page_size);
			return -EINVAL;
		}
		if (r->host_addr + r->size < r->host_addr) {
			wps_err(ctx, "region %u wraps the address space", i);
			return -EINVAL;
		}
		if (r->name && strlen(r->name) > WPS_REGION_NAME_MAX) {
			wps_err(ctx, "region %u: name longer than %d bytes", i,
				WPS_REGION_NAME_MAX);
			return -EINVAL;
		}
	}
	sorted = malloc(nr * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	for (i = 0; i < nr; i++)
		sorted[i] = &regions[i];
	qsort(sorted, nr, sizeof(*sorted), cmp_addr);
	for (i = 1; i < nr; i++) {
		const struct wps_region *a = sorted[i - 1], *b = sorted[i];

		if (a->host_addr + a->size > b->host_addr) {
			wps_err(ctx, "regions [0x%llx, 0x%llx) and [0x%llx, "
				"0x%llx) overlap",
				(unsigned long long)a->host_addr,
				(unsigned long long)(a->host_addr + a->size),
				(unsigned long long)b->host_addr,
				(unsigned long long)(b->host_addr + b->size));
			ret = -EINVAL;
			break;
		}
	}
	free(sorted);
	return ret;
}

const char *wps_phase_name(enum wps_phase phase)
{
	static const char *const names[] = {
		[WPS_PHASE_NEW] = "new",
		[WPS_PHASE_FREEZING] = "freezing",
		[WPS_PHASE_COPYING] = "copying",
		[WPS_PHASE_PUBLISHING] = "publishing",
		[WPS_PHASE_DONE] = "done",
		[WPS_PHASE_FAILED] = "failed",
		[WPS_PHASE_CANCELLED] = "cancelled",
	};

	if ((unsigned int)phase >= sizeof(names) / sizeof(names[0]))
		return "unknown";
	return names[phase];
}
