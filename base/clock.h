/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The clock of every interval and timestamp wpsnap reports: nanoseconds
 * of CLOCK_MONOTONIC (wps_now_ns), or of another clock where an image
 * records wall time. Header-only, so the library, the daemon and the
 * tools share it without an exported symbol.
 */
#ifndef WPS_CLOCK_H
#define WPS_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t wps_clock_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t wps_now_ns(void)
{
	return wps_clock_ns(CLOCK_MONOTONIC);
}

#endif
