/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where a write fault's time goes: the fault thread stamps each fault at a
 * few points (clock reads only) and keeps the slowest WPS_FTRACE_KEEP of
 * them, whole, in a fixed min-heap, plus the sums of every component over
 * all faults. Recording never allocates, locks or makes a system call, so
 * it is always on (docs/PERFORMANCE.md, "Where the slow faults' time
 * went", describes the fields).
 *
 * Invariant: for each record, total = pickup + (message read .. writer
 * woken), behind <= pickup, and queue + hint + buf + copy + sweep_wait +
 * wake <= total - pickup: the rest (finding the region, the THP path's own claims) is
 * small and reported as "other". Only the fault thread writes; readers
 * look after it is joined.
 */
#ifndef WPS_FTRACE_H
#define WPS_FTRACE_H

#include <stdint.h>

#define WPS_FTRACE_KEEP 512

enum {
	WPS_FTRACE_THP = 1,         /* served as a whole 2 MiB extent */
	WPS_FTRACE_COPIED = 2,      /* this fault copied the pre-image */
	WPS_FTRACE_SWEEP_HELD = 4,  /* the sweep held the unit: waited for it */
	WPS_FTRACE_POLLED = 8,      /* read right after a sleep in poll():
				       the wake-up is not in pickup */
};

struct wps_fault_rec {
	uint64_t addr;
	uint64_t total_ns;      /* pickup + read .. writer woken */
	uint64_t pickup_ns;     /* upper bound on the time in the kernel's
				   queue: since the last read found it empty */
	uint64_t behind_ns;     /* of pickup: the fault thread was still
				   serving earlier messages */
	uint64_t queue_ns;      /* read .. this message's turn (earlier
				   messages of the batch and their
				   neighbour copies) */
	uint64_t hint_ns;       /* the written-page callback */
	uint64_t buf_ns;        /* waiting for sink buffer space */
	uint64_t copy_ns;       /* copying the pre-image into the sink */
	uint64_t sweep_wait_ns; /* waiting for the sweep's copy of the unit */
	uint64_t wake_ns;       /* UFFDIO_WRITEPROTECT off, which wakes */
	uint64_t offcpu_ns;     /* of total: the fault thread was not on a
				   CPU (preempted, or blocked in a wait) */
	uint32_t flags;         /* WPS_FTRACE_* */
};

struct wps_fault_trace {
	uint64_t faults;        /* recorded (post-instant write faults) */
	/* Time the fault thread and the sweep spent runnable without a CPU
	 * (the scheduler's run_delay) over their lives; 0 if unknown. */
	uint64_t fault_rq_ns, sweep_rq_ns;
	struct wps_fault_rec sum; /* every component summed over all faults */
	unsigned int nr;        /* records in slow[] */
	struct wps_fault_rec slow[WPS_FTRACE_KEEP]; /* min-heap on total_ns;
						       sorted slowest first
						       once read out */
};

static inline void wps_ftrace_sift_down(struct wps_fault_trace *t,
					unsigned int i)
{
	for (;;) {
		unsigned int l = 2 * i + 1, m = i;
		struct wps_fault_rec tmp;

		if (l < t->nr && t->slow[l].total_ns < t->slow[m].total_ns)
			m = l;
		if (l + 1 < t->nr && t->slow[l + 1].total_ns < t->slow[m].total_ns)
			m = l + 1;
		if (m == i)
			return;
		tmp = t->slow[i];
		t->slow[i] = t->slow[m];
		t->slow[m] = tmp;
		i = m;
	}
}

/* Account one fault; keep it if it is among the slowest so far. */
static inline void wps_ftrace_add(struct wps_fault_trace *t,
				  const struct wps_fault_rec *f)
{
	unsigned int i;

	t->faults++;
	t->sum.total_ns += f->total_ns;
	t->sum.pickup_ns += f->pickup_ns;
	t->sum.behind_ns += f->behind_ns;
	t->sum.queue_ns += f->queue_ns;
	t->sum.hint_ns += f->hint_ns;
	t->sum.buf_ns += f->buf_ns;
	t->sum.copy_ns += f->copy_ns;
	t->sum.sweep_wait_ns += f->sweep_wait_ns;
	t->sum.wake_ns += f->wake_ns;
	t->sum.offcpu_ns += f->offcpu_ns;
	if (t->nr < WPS_FTRACE_KEEP) {
		/* sift up */
		i = t->nr++;
		t->slow[i] = *f;
		while (i && t->slow[(i - 1) / 2].total_ns > t->slow[i].total_ns) {
			struct wps_fault_rec tmp = t->slow[i];

			t->slow[i] = t->slow[(i - 1) / 2];
			t->slow[(i - 1) / 2] = tmp;
			i = (i - 1) / 2;
		}
		return;
	}
	if (f->total_ns <= t->slow[0].total_ns)
		return;
	t->slow[0] = *f;
	wps_ftrace_sift_down(t, 0);
}

/* Turn the heap into a list sorted slowest first (heap sort in place);
 * the trace takes no more records afterwards. */
static inline void wps_ftrace_sort(struct wps_fault_trace *t)
{
	unsigned int n = t->nr;

	while (t->nr > 1) {
		struct wps_fault_rec tmp = t->slow[0];

		t->slow[0] = t->slow[t->nr - 1];
		t->slow[t->nr - 1] = tmp;
		t->nr--;
		wps_ftrace_sift_down(t, 0);
	}
	t->nr = n;
}

#endif /* WPS_FTRACE_H */
