/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap bench --checkpoint: periodic checkpoints against raw costs. */
#ifndef TOOLS_BENCH_CKPT_H
#define TOOLS_BENCH_CKPT_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

#include "guest/guest.h"

struct bench_ckpt_opts {
	uint64_t size;
	enum rguest_backing backing;
	const char *dir;
	unsigned int count;     /* checkpoints per rate */
	bool json;
	bool quick;
};

/* Returns 0 when everything was measured, -errno otherwise (printed). */
int bench_checkpoint(struct wps_ctx *ctx, const struct bench_ckpt_opts *o);

#endif
