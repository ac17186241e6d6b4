/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench: where the slowest write faults of a snapshot spent their
 * time (the engine's fault trace, wp/ftrace.h), set against what the
 * guest's writers measured themselves. docs/PERFORMANCE.md describes the
 * fields.
 */
#ifndef TOOLS_BENCH_TAIL_H
#define TOOLS_BENCH_TAIL_H

#include <jansson.h>
#include <stdbool.h>

#include <wpsnap/wpsnap.h>

#include "guest/guest.h"

/* One fault's time, or a mean over several, in microseconds. */
struct bench_fault_split {
	double total_us, pickup_us, behind_us, queue_us, hint_us, buf_us, copy_us,
	       sweep_wait_us, wake_us, other_us, offcpu_us;
	unsigned int flags;         /* of the single fault (max); 0 for means */
	double addr;                /* likewise */
};

struct bench_tail {
	bool valid;
	double faults;              /* recorded faults */
	unsigned int top;           /* faults in the "top 0.1 %" (>= 1) */
	struct bench_fault_split all;   /* mean over every fault */
	struct bench_fault_split slow;  /* mean over the top 0.1 % */
	struct bench_fault_split max;   /* the slowest one */
	/* The writers' own figures against the server's: what the server
	 * does not see (writer scheduling after the wake, kernel entry and
	 * exit, poll() wake-ups). Same rank, not necessarily same fault. */
	double writer_p99_us, server_p99_us, writer_minus_server_p99_us;
	double writer_max_us, writer_minus_server_max_us;
	/* bench_sched_end: run-queue delay during the run, ms */
	double rq_fault_ms, rq_sweep_ms, rq_writers_ms, rq_other_ms;
};

/*
 * Time threads spent runnable but without a CPU (the scheduler's
 * run_delay, /proc/self/task/TID/schedstat) during a run: the guest's
 * writers (the threads that existed before the run, but the caller's)
 * and the others still alive at its end (the RSS sampler; the engine's
 * threads are joined by then and report their own through the trace).
 * Milliseconds, NAN if unknown.
 */
#define BENCH_SCHED_MAX_TASKS 64
struct bench_sched {
	unsigned int nr;
	int tid[BENCH_SCHED_MAX_TASKS];
	double delay_ms[BENCH_SCHED_MAX_TASKS];
};
/* Before the run: remember the threads (the guest's writers, ...). */
void bench_sched_begin(struct bench_sched *s);
/* After the run: fill t's run-delay figures from the deltas. */
void bench_sched_end(const struct bench_sched *s, struct bench_tail *t);

/* After wps_snapshot_wait(): read the trace and set it against lat. */
int bench_tail_take(struct wps_snapshot *snap, const struct rguest_latency *lat,
		    struct bench_tail *t);
json_t *bench_tail_json(const struct bench_tail *t);
void bench_tail_print(const struct bench_tail *t);

#endif
