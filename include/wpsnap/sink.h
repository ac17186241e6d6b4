/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The narrow interface between the snapshot engine and whatever keeps the
 * pages: an image file, a stream, or memory in a test.
 *
 * The engine calls put() with page-aligned bytes of guest RAM that are
 * write-protected for the duration of the call. When put() returns 0 the
 * bytes are safe in the sink (copied out), and the engine may unprotect
 * them. Each block (4 KiB unit) of each region is put at most once.
 *
 * Lanes: the sweep uses WPS_LANE_SWEEP and may be made to wait for buffer
 * space; the fault path uses WPS_LANE_FAULT, which must be served from
 * reserved space and wait only when that is exhausted. Each lane is used
 * by one thread at a time; different lanes may be used concurrently.
 *
 * The checkpointer (src/checkpoint.c) writes its page data through the
 * same interface; between its rounds it calls drain().
 */
#ifndef WPSNAP_SINK_H
#define WPSNAP_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum wps_lane {
	WPS_LANE_SWEEP = 0,
	WPS_LANE_FAULT = 1,
	WPS_NR_LANES = 2,
};

struct wps_sink_ops {
	/* Copy len bytes (multiple of 4096) of region r, region byte offset
	 * off, from src. 0 once the bytes are safe, or -errno (sticky: once
	 * a sink failed, every later call fails too). */
	int (*put)(void *priv, enum wps_lane lane, unsigned int r, uint64_t off,
		   const void *src, size_t len);
	/* Hand what the lane has buffered to the device; never waits for it
	 * to complete. Called when a lane goes idle. */
	int (*flush)(void *priv, enum wps_lane lane);
	/* Optional: make sure a put() of up to len bytes on lane will not
	 * wait. The sweep calls it (waiting) before it claims pages, so it
	 * never holds a claim a faulting guest thread may wait for while it
	 * waits for the device. With nowait it returns -EAGAIN instead of
	 * waiting: the fault path copies neighbours only when space is free
	 * now. */
	int (*reserve)(void *priv, enum wps_lane lane, size_t len, bool nowait);
	/* Optional (NULL: the sink buffers nothing, every put() is already
	 * on the device): hand what every lane has buffered to the device
	 * and wait until everything put so far is there (written, not
	 * necessarily synced). A block put after drain() returns lands
	 * after its earlier copies, so a caller may put a block again (the
	 * checkpointer's rounds). No put() may run concurrently. 0, or the
	 * sink's sticky -errno.
	 *
	 * ABI: appended after reserve, so an ops table compiled against the
	 * header without it is shorter. The library reads drain only from
	 * sinks it makes itself (the image writer's); the engine never calls
	 * it, so a caller's older table is never read past reserve. */
	int (*drain)(void *priv);
};

struct wps_sink {
	const struct wps_sink_ops *ops;
	void *priv;
};

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_SINK_H */
