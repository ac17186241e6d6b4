/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap bench --restore: eager restore against a raw read of the image. */
#ifndef TOOLS_BENCH_RESTORE_H
#define TOOLS_BENCH_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

#include "guest/guest.h"

struct bench_restore_opts {
	uint64_t size;
	enum rguest_backing backing;
	unsigned int populate_pct;
	const char *dir;
	unsigned int runs;
	bool json;
};

/* Returns 0 when everything was measured, -errno otherwise (printed). */
int bench_restore(struct wps_ctx *ctx, const struct bench_restore_opts *o);

#endif
