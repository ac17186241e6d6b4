/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Test helpers that need the reference guest (restore and pager tests). */
#include "config.h"

#include <check.h>

#include "tests/unit/snaputil.h"

struct rguest_ledger *su_take(struct wps_ctx *ctx, enum rguest_backing b,
			   uint64_t size, unsigned int pct, const char *path)
{
	struct rguest_opts go = { .size = size, .backing = b, .threads = 2,
				     .pattern = RGUEST_RANDOM,
				     .populate_pct = pct, .seed = 7 };
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *s;
	struct rguest_ledger *l;
	struct rguest *g;
	struct wps_region r;

	ck_assert_int_eq(rguest_new(&go, &g), 0);
	rguest_region(g, &r);
	so.path = path;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), 0);
	ck_assert_int_eq(rguest_start(g), 0);
	ck_assert_int_eq(wps_snapshot_freeze(s), 0);
	ck_assert_int_eq(wps_snapshot_wait(s), 0);
	wps_snapshot_free(s);
	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	rguest_free(g);
	return l;
}
