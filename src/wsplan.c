/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The working-set plan of a lazy restore (include/wpsnap/wset.h,
 * docs/RESTORE.md "Working-set prefetch"): which ranges the pager
 * prefetches first, and the recording of this run's fault order for the
 * next restore. One policy for every front end (CLI, daemon, bench), so a
 * restore prefetches the same way whoever starts it.
 *
 * Owns the two loaded sets (the file's record, the image's blob) and the
 * pager list built from them. Invariants: the list is the record's order
 * first, then the blob's blocks the record does not hold; the record only
 * grows (this run's faults are added, never substituted: a working set
 * prefetched first produces few faults, and replacing the record with
 * those would forget it). Everything about the file is a hint: a bad one
 * costs time, never correctness (the pager verifies every byte), so only
 * allocation failures fail the plan.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wpsnap/wset.h>

#include "base/log.h"

struct wps_wset_plan {
	struct wps_ctx *ctx;
	unsigned int region;
	uint8_t uuid[16];
	bool off, no_save;
	char *path;                     /* owned; NULL: no file */
	struct wps_wset *rec;           /* loaded from path (or NULL) */
	struct wps_pager_range *first;
	struct wps_wset_plan_info info;
};

/*
 * The share of the region's 64 KiB windows (16 blocks) that ws touches, in
 * 1/1000. A written-pages record of a guest writing all over its memory
 * names most windows: it then says nothing about order, and prefetching it
 * range by range would only delay the sweep's large reads.
 */
static int spread(const struct wps_wset *ws, unsigned int region,
		  uint64_t nr_blocks, unsigned int *out)
{
	uint64_t nw = (nr_blocks + 15) / 16, n = 0, w, e;
	uint8_t *seen;
	size_t i;

	*out = 0;
	if (!nw)
		return 0;
	seen = calloc((nw + 7) / 8, 1);
	if (!seen)
		return -ENOMEM;
	for (i = 0; i < ws->nr; i++) {
		if (ws->ranges[i].region != region)
			continue;
		e = (ws->ranges[i].block + ws->ranges[i].count + 15) / 16;
		for (w = ws->ranges[i].block / 16; w < e && w < nw; w++) {
			n += !(seen[w / 8] >> (w % 8) & 1);
			seen[w / 8] |= (uint8_t)(1u << (w % 8));
		}
	}
	free(seen);
	*out = (unsigned int)(n * 1000 / nw);
	return 0;
}

/* The image's written-pages blob, or NULL when it has none, is damaged
 * (logged by wps_wset_from_image) or names too much to carry an order. */
static int load_written(struct wps_wset_plan *p, struct wps_image *img,
			uint64_t nr_blocks, struct wps_wset **out)
{
	struct wps_wset *wr = NULL;
	int ret;

	*out = NULL;
	ret = wps_wset_from_image(p->ctx, img, &wr);
	if (ret == -ENOMEM)
		return ret;
	if (!wr)
		return 0;
	ret = spread(wr, p->region, nr_blocks, &p->info.written_spread);
	if (ret) {
		wps_wset_free(wr);
		return ret;
	}
	if (p->info.written_spread > WPS_WSET_WRITTEN_SPREAD_MAX) {
		wps_dbg(p->ctx, "working set: the pages written during the "
			 "snapshot span %u%% of region %u: not a working set, "
			 "not used", p->info.written_spread / 10, p->region);
		p->info.written_dropped = true;
		wps_wset_free(wr);
		return 0;
	}
	*out = wr;
	return 0;
}

/* Recorded order first, then the written pages it does not hold. */
static int build_first(struct wps_wset_plan *p, const struct wps_wset *wr)
{
	struct wps_wset *both = NULL;
	unsigned int nr = 0;
	int ret;

	if (!p->rec || !wr) {
		p->info.written_blocks = wps_wset_blocks(wr, p->region);
		ret = wps_wset_pager_ranges(p->rec ? p->rec : wr, p->region,
					    &p->first, &nr);
		p->info.nr_first = nr;
		return ret;
	}
	ret = wps_wset_new(p->uuid, &both);
	if (!ret)
		ret = wps_wset_merge(both, p->rec);
	if (!ret)
		ret = wps_wset_merge(both, wr);
	if (!ret) {
		p->info.written_blocks = wps_wset_blocks(both, p->region) -
					 wps_wset_blocks(p->rec, p->region);
		ret = wps_wset_pager_ranges(both, p->region, &p->first, &nr);
	}
	p->info.nr_first = nr;
	wps_wset_free(both);
	return ret;
}

int wps_wset_plan_new(struct wps_ctx *ctx, struct wps_image *img,
		      const char *image, const uint8_t *uuid,
		      unsigned int region, const struct wps_wset_plan_opts *opts,
		      struct wps_wset_plan **out)
{
	static const struct wps_wset_plan_opts defaults = WPS_WSET_PLAN_OPTS_INIT;
	const struct wps_image_region *ir = wps_image_get_region(img, region);
	struct wps_wset *wr = NULL;
	struct wps_wset_plan *p;
	const char *want;
	char buf[4096];
	int ret;

	*out = NULL;
	if (!opts)
		opts = &defaults;
	if (!ir) {
		wps_err(ctx, "working set: %s has no region %u", image, region);
		return -EINVAL;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->ctx = ctx;
	p->region = region;
	memcpy(p->uuid, uuid ? uuid : wps_image_get_info(img)->uuid, 16);
	p->off = p->info.off = opts->off;
	p->no_save = opts->no_save;
	p->info.load = -ENOENT;
	if (p->off)
		goto done;
	want = opts->path;
	/* Too long a name only means no file: a hint lost. */
	if (!want && !wps_image_get_info(img)->remote &&
	    !wps_wset_path(image, buf, sizeof(buf)))
		want = buf;
	if (want && !(p->path = strdup(want))) {
		ret = -ENOMEM;
		goto fail;
	}
	if (p->path) {
		/* Missing, stale, damaged, unreadable: logged by the load
		 * (except a missing one), and only the hint is lost. */
		p->info.load = wps_wset_load(ctx, p->path, p->uuid, &p->rec);
		if (p->info.load == -ENOMEM) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	p->info.path = p->path;
	p->info.recorded_blocks = wps_wset_blocks(p->rec, region);
	if (!opts->no_written) {
		ret = load_written(p, img, ir->nr_blocks, &wr);
		if (ret)
			goto fail;
	}
	ret = build_first(p, wr);
	wps_wset_free(wr);
	if (ret)
		goto fail;
done:
	*out = p;
	return 0;
fail:
	wps_err(ctx, "working set of %s: %s", image, strerror(-ret));
	wps_wset_plan_free(p);
	return ret;
}

void wps_wset_plan_apply(const struct wps_wset_plan *p,
			 struct wps_pager_opts *opts)
{
	opts->first = p->first;
	opts->nr_first = p->info.nr_first;
}

int wps_wset_plan_record(struct wps_wset_plan *p, struct wps_pager *pg)
{
	struct wps_pager_range *order = NULL;
	unsigned int nr = 0;
	int ret;

	if (p->off || !p->path || p->no_save)
		return 0;
	ret = wps_pager_fault_order(pg, &order, &nr);
	if (!ret && !p->rec)
		ret = wps_wset_new(p->uuid, &p->rec);
	if (!ret)
		ret = wps_wset_add_ranges(p->rec, p->region, order, nr);
	if (!ret)
		ret = wps_wset_save(p->ctx, p->path, p->rec);
	free(order);
	if (ret) {
		wps_err(p->ctx, "working set %s: this restore's fault order is "
			"not recorded: %s", p->path, strerror(-ret));
		return ret;
	}
	p->info.saved = true;
	p->info.added_ranges = nr;
	p->info.file_blocks = wps_wset_blocks(p->rec, p->region);
	p->info.file_ranges = p->rec->nr;
	p->info.file_truncated = p->rec->truncated;
	return 0;
}

void wps_wset_plan_get_info(const struct wps_wset_plan *p,
			    struct wps_wset_plan_info *info)
{
	*info = p->info;
}

void wps_wset_plan_free(struct wps_wset_plan *p)
{
	if (!p)
		return;
	wps_wset_free(p->rec);
	free(p->first);
	free(p->path);
	free(p);
}
