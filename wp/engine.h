/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The write-protect snapshot engine: freeze, background sweep, prioritised
 * write-fault service. It feeds a struct wps_sink and knows nothing about
 * files. See docs/ENGINE.md for the invariants.
 */
#ifndef WPS_ENGINE_H
#define WPS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/sink.h>
#include <wpsnap/wpsnap.h>

struct wps_engine;
struct wps_fault_trace;

struct wps_engine_opts {
	int uffd;                     /* -1: open our own */
	pid_t pid;                    /* owner of the memory (0: us) */
	struct wps_sink sink;
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *pause_arg;
	bool freeze_simple;           /* protect all inside the pause */
	unsigned int fault_window;    /* units saved per fault (0: default) */
	/* Optional: called by the fault thread for each unit whose write
	 * faulted after the instant, in fault order: blocks [block, block +
	 * count) (4 KiB blocks) of region (index in the caller's table).
	 * The fault path only records the unit; the calls come in batches
	 * while the thread is idle (or every 1024 faults), so no guest
	 * thread waits for them, but faults arriving meanwhile do: keep it
	 * cheap, never block, never call back into the engine. The engine
	 * ignores its result (the record is a hint). Calls end when
	 * wps_engine_wait returns (the thread is joined). */
	void (*written)(void *arg, uint32_t region, uint64_t block,
			uint64_t count);
	void *written_arg;
};

/* Validates regions, opens/negotiates the uffd and registers the regions
 * in write-protect mode (which by itself protects nothing). */
int wps_engine_new(struct wps_ctx *ctx, const struct wps_region *regions,
		   unsigned int nr, const struct wps_engine_opts *opts,
		   struct wps_engine **out);

/* Pause (if a callback is set), protect everything, resume, start the
 * sweep. On failure nothing stays protected. */
int wps_engine_freeze(struct wps_engine *e);

/* Wait until every pre-image is in the sink (0) or the engine failed or
 * was cancelled (-errno / -ECANCELED); then remove all protection and
 * unregister. Idempotent. */
int wps_engine_wait(struct wps_engine *e);

void wps_engine_cancel(struct wps_engine *e);

void wps_engine_progress(struct wps_engine *e, struct wps_progress *p);
void wps_engine_stats(struct wps_engine *e, struct wps_snapshot_stats *st);
/* The breakdown of the slowest write faults (wp/ftrace.h), slowest
 * first. Only once wps_engine_wait returned (-EBUSY before). */
int wps_engine_fault_trace(struct wps_engine *e, struct wps_fault_trace *out);
void wps_engine_instant(const struct wps_engine *e, int64_t *realtime_ns,
			int64_t *monotonic_ns);

void wps_engine_free(struct wps_engine *e);

#endif /* WPS_ENGINE_H */
