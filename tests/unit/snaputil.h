/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Test helpers that need the reference guest: a live snapshot of it. */
#ifndef WPS_SNAPUTIL_H
#define WPS_SNAPUTIL_H

#include <stdint.h>

#include <wpsnap/wpsnap.h>

#include "guest/guest.h"

/* Snapshot a fresh guest of backing b (size bytes, pct% populated) into
 * path while two writers run from just before the freeze; returns the
 * ledger of the freeze. Asserts on any failure. */
struct rguest_ledger *su_take(struct wps_ctx *ctx, enum rguest_backing b,
			   uint64_t size, unsigned int pct, const char *path);

#endif
