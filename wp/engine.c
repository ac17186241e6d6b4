/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot engine. It owns, for one snapshot: the userfaultfd
 * registration of the guest's regions, the per-unit state bitmaps, the
 * sweep thread and the fault thread. docs/ENGINE.md explains the design;
 * the invariants that keep the image exact are:
 *
 *  1. After the freeze every unit (page of the region's page size) is
 *     write-protected, populated or not (WP_UNPOPULATED / shmem markers),
 *     so no write can change it without a fault reaching us first. A
 *     protected unit therefore still holds its content of the freeze
 *     instant, and it does not matter when we read it.
 *  2. A unit is saved by whoever wins the atomic test-and-set of its
 *     "claimed" bit: the sweep or the fault thread. So each unit is put
 *     into the sink exactly once.
 *  3. A unit may be unprotected by anyone only once its "copied" bit is
 *     set, i.e. its pre-image is safe in the sink (or it was found to be
 *     unpopulated at the freeze, so its pre-image is zero).
 *  4. Exactly one thread reads the uffd at any time (the fault thread while
 *     it runs, the caller before and after), because non-cooperative
 *     events must be read for UFFDIO_WRITEPROTECT to stop failing with
 *     EAGAIN.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/memsrc.h"
#include "wp/compat.h"
#include "wp/engine.h"
#include "wp/ftrace.h"
#include "wp/histo.h"
#include "wp/pagemap.h"
#include "wp/uffd.h"

/* Sweep granularity: unprotect in runs of at least this (a THP stays
 * whole, and the ~20 us fixed cost of an ioctl is amortised), but claim
 * and copy in smaller steps so a fault that lands on a unit the sweep is
 * copying waits for at most one step. */
#define SWEEP_CHUNK (2u << 20)
#define CLAIM_STEP 16u          /* units per claim when units are 4 KiB */
#define MSG_BATCH 64
#define FAULT_QUEUE 1024
/* Converging freeze: stop the live rounds once a round re-protects at most
 * this many units, and re-protect dirty units separated by less than
 * COALESCE units with one ioctl (protecting an already protected unit is
 * harmless, and a page-table walk of 256 KiB is cheaper than an ioctl). */
#define ROUNDS_MAX 12
#define ROUNDS_DONE 16
#define COALESCE 64
/* Fault thread: spin on the uffd this long after the last message before
 * sleeping in poll(); it doubles while faults keep coming. At most 20 us:
 * spinning up to 200 us kept the thread on a CPU through a whole fault
 * storm, so the scheduler preempted it like any CPU hog, often in the
 * middle of a fault (docs/PERFORMANCE.md: at 20 us the slowest 0.1 % of
 * faults took 0.35-0.66x as long, the guest-side p99 0.6-0.8x, the p50
 * and the stream unchanged). */
#define SPIN_MIN_NS 10000ull
#define SPIN_MAX_NS 20000ull
#define DEFAULT_FAULT_WINDOW 16
#define FLUSH_IDLE_MS 2
#define THP_SIZE (2ull << 20)
#define THP_UNITS 512u
#define SWEEP_NICE 10
#define HINT_BATCH 1024         /* written-page hints held between idles */

struct ereg {
	unsigned int idx;       /* index in the caller's table (sink's r) */
	uint64_t start, end;
	struct wps_memsrc src;  /* where the bytes can be read */
	uint32_t unit;
	unsigned int shift;
	uint64_t nr_units;
	uint32_t backing;
	int fd;
	uint64_t fd_offset;
	uint64_t *save;         /* populated at the freeze: sweep copies */
	uint64_t *claimed;      /* atomic: someone is saving this unit */
	uint64_t *copied;       /* atomic: pre-image safe, may unprotect */
	uint64_t *dirty;        /* atomic: written during the live rounds */
	uint64_t *huge;         /* per 2 MiB extent: a THP at the scan (anon) */
	unsigned int window;    /* units saved together on a fault */
	bool gone;              /* unmapped by the guest mid-snapshot */
};

struct wps_engine {
	struct wps_ctx *ctx;
	int uffd;
	bool own_uffd;
	pid_t pid;              /* owner of the memory; 0: this process */
	uint8_t *bounce[WPS_NR_LANES]; /* remote reads land here first */
	size_t bounce_size;
	uint64_t features;
	struct ereg *r;         /* sorted by address */
	unsigned int nr;
	struct wps_sink sink;
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *pause_arg;
	/* Written-page reporter: called from the fault thread only, off the
	 * fault path: faults append to hints[], handed over in fault order
	 * when the thread is idle (or the array is full). The callback may
	 * allocate (the snapshot's list grows by realloc): one such call
	 * was a 49 ms fault in the trace. */
	void (*written)(void *arg, uint32_t region, uint64_t block,
			uint64_t count);
	void *written_arg;
	struct hint {
		uint32_t region;
		uint64_t block, count;
	} *hints;
	unsigned int nr_hints;

	int stop_efd;
	pthread_t sweep_thr, fault_thr;
	bool sweep_started, fault_started;
	bool registered, protected_, waited;
	bool stop;              /* atomic: fault thread should exit */
	bool cancel;            /* atomic */
	bool freeze_simple;
	bool live;              /* atomic: past the instant; faults save */
	bool scanned;           /* atomic: save bitmaps are complete */
	bool swept;             /* the sweep finished every region */
	int busy;               /* atomic: fault thread handles messages */
	int err;                /* atomic: first failure */
	int result;

	uint64_t bytes_total, bytes_done, sweep_bytes, fault_bytes;
	uint64_t faults, faults_copied, events, thp_faults;
	unsigned int rounds;
	uint64_t pause_protect_units, tracker_bytes;
	struct wps_histo fault_lat; /* fault thread only until joined */
	struct wps_fault_trace *trace; /* likewise: the slowest faults */

	int64_t rt_instant, mono_instant;
	uint64_t t_start, t_end, pause_ns, protect_ns;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static inline bool bit_get(const uint64_t *m, uint64_t i)
{
	return (__atomic_load_n(&m[i / 64], __ATOMIC_ACQUIRE) >> (i % 64)) & 1;
}

static inline bool bit_test_and_set(uint64_t *m, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);

	return __atomic_fetch_or(&m[i / 64], bit, __ATOMIC_ACQ_REL) & bit;
}

/* Set bits [i, i + n) with release semantics (n may span words). */
static void bits_set_release(uint64_t *m, uint64_t i, uint64_t n)
{
	while (n) {
		unsigned int off = i % 64;
		uint64_t take = 64 - off < n ? 64 - off : n;
		uint64_t mask = (take == 64 ? ~0ull : ((1ull << take) - 1)) << off;

		__atomic_fetch_or(&m[i / 64], mask, __ATOMIC_RELEASE);
		i += take;
		n -= take;
	}
}

static bool failed(struct wps_engine *e)
{
	return __atomic_load_n(&e->err, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&e->cancel, __ATOMIC_ACQUIRE);
}

static void set_error(struct wps_engine *e, int err)
{
	int zero = 0;

	__atomic_compare_exchange_n(&e->err, &zero, err, false,
				    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static struct ereg *find_region(struct wps_engine *e, uint64_t addr)
{
	unsigned int lo = 0, hi = e->nr;

	while (lo < hi) {
		unsigned int mid = (lo + hi) / 2;
		struct ereg *r = &e->r[mid];

		if (addr < r->start)
			hi = mid;
		else if (addr >= r->end)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

/*
 * The guest dropped [start, end) (MADV_DONTNEED/REMOVE, munmap). The event
 * is delivered before the kernel zaps the pages, but the zap goes ahead as
 * soon as we have read it, so a pre-image not yet saved is lost for good:
 * the snapshot cannot be exact any more and must fail rather than publish
 * zeros. Units already saved are fine.
 */
static void handle_discard(struct wps_engine *e, uint64_t start, uint64_t end,
			   bool unmap)
{
	unsigned int i;

	__atomic_fetch_add(&e->events, 1, __ATOMIC_RELAXED);
	for (i = 0; i < e->nr; i++) {
		struct ereg *r = &e->r[i];
		uint64_t s = start > r->start ? start : r->start;
		uint64_t t = end < r->end ? end : r->end;
		uint64_t u;

		if (s >= t)
			continue;
		for (u = (s - r->start) >> r->shift;
		     u < ((t - r->start + r->unit - 1) >> r->shift); u++) {
			if (bit_get(r->copied, u))
				continue;
			wps_err(e->ctx, "the guest discarded [0x%llx, 0x%llx) "
				"(%s) before its pages were saved; the image "
				"could not be the memory of the freeze instant",
				(unsigned long long)start,
				(unsigned long long)end,
				unmap ? "munmap" : "madvise");
			set_error(e, -ESTALE);
			break;
		}
		if (unmap && s == r->start && t == r->end)
			r->gone = true;
	}
}

static void handle_event(struct wps_engine *e, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_REMOVE:
		handle_discard(e, m->arg.remove.start, m->arg.remove.end, false);
		break;
	case UFFD_EVENT_UNMAP:
		handle_discard(e, m->arg.remove.start, m->arg.remove.end, true);
		break;
	default:
		/* Not requested (fork, remap): note it and carry on. */
		__atomic_fetch_add(&e->events, 1, __ATOMIC_RELAXED);
		wps_warn(e->ctx, "unexpected userfaultfd event %u", m->event);
		break;
	}
}

/* ------------------------------------------------------------------ */
/* Protection changes                                                  */
/* ------------------------------------------------------------------ */

struct fault_queue {
	struct uffd_msg m[FAULT_QUEUE];
	unsigned int head, tail;
};

/*
 * Read what the uffd has now: events are handled at once (which is what
 * lets a pending UFFDIO_WRITEPROTECT stop failing with EAGAIN); page
 * faults go to q when the caller is the fault thread, and are dropped
 * otherwise (the caller is about to unprotect everything, which wakes
 * their threads).
 */
static int pump(struct wps_engine *e, struct fault_queue *q)
{
	struct uffd_msg msgs[MSG_BATCH];
	ssize_t n;
	int i;

	n = read(e->uffd, msgs, sizeof(msgs));
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
			handle_event(e, &msgs[i]);
			continue;
		}
		if (q && q->tail - q->head < FAULT_QUEUE)
			q->m[q->tail++ % FAULT_QUEUE] = msgs[i];
	}
	return n / sizeof(msgs[0]);
}

/*
 * Change protection of a range, riding out EAGAIN (mmap_changing). The
 * reader role decides how: the thread that reads the uffd pumps events
 * itself; any other thread waits for the reader to do it.
 */
static int change_wp(struct wps_engine *e, uint64_t start, uint64_t len,
		     bool protect, bool reader, struct fault_queue *q)
{
	unsigned int tries = 0;
	int ret;

	for (;;) {
		ret = wps_uffd_wp(e->uffd, start, len, protect, false);
		if (ret != -EAGAIN)
			return ret;
		if (++tries > 100000)
			return ret;
		if (reader) {
			ret = pump(e, q);
			if (ret < 0)
				return ret;
		} else {
			sched_yield();
		}
	}
}

static int unprotect_units(struct wps_engine *e, struct ereg *r, uint64_t u,
			   uint64_t n, bool reader, struct fault_queue *q)
{
	uint64_t start = r->start + (u << r->shift);
	int ret;

	if (r->gone)
		return 0;
	ret = change_wp(e, start, n << r->shift, false, reader, q);
	if (ret == -ENOENT && r->gone)
		return 0;
	if (ret) {
		wps_err(e->ctx, "cannot unprotect [0x%llx, +0x%llx): %s",
			(unsigned long long)start,
			(unsigned long long)(n << r->shift), strerror(-ret));
	}
	return ret;
}

/* ------------------------------------------------------------------ */
/* Fault service                                                       */
/* ------------------------------------------------------------------ */

static int claim_copy(struct wps_engine *e, struct ereg *r, uint64_t u,
		      unsigned int n, enum wps_lane lane);

/*
 * Hand units [u, u + n) of r to the sink: straight from our view of the
 * memory (zero-copy), or, for another process's anonymous memory, through
 * the lane's bounce buffer (base/memsrc.h; a read does not trip
 * write-protection and sees the frozen content).
 */
static int save_units(struct wps_engine *e, struct ereg *r, enum wps_lane lane,
		      uint64_t u, uint64_t n)
{
	return wps_memsrc_put(&r->src, &e->sink, lane, r->idx, u << r->shift,
			      n << r->shift, e->bounce[lane], e->bounce_size);
}

/* Unprotect the units of [u0, u1) whose pre-image is safe, in runs. */
static int unprotect_copied(struct wps_engine *e, struct ereg *r, uint64_t u0,
			    uint64_t u1, bool reader, struct fault_queue *q)
{
	uint64_t u, run = u0;
	int ret;

	for (u = u0; u <= u1; u++) {
		if (u < u1 && bit_get(r->copied, u))
			continue;
		if (u > run) {
			ret = unprotect_units(e, r, run, u - run, reader, q);
			if (ret)
				return ret;
		}
		run = u + 1;
	}
	return 0;
}

/*
 * Before the instant (live rounds of a converging freeze) a fault only
 * says "this unit was written": unprotect it, then mark it dirty, in that
 * order. Marking first would let a round take the mark and re-protect the
 * unit before our unprotect lands, leaving it unprotected and unmarked at
 * the instant. The pause waits for this thread to be idle, so every mark
 * is in place before the last round.
 */
static bool in_thp(const struct ereg *r, uint64_t u)
{
	uint64_t x = u / THP_UNITS;

	return r->huge && (x + 1) * THP_UNITS <= r->nr_units &&
	       (__atomic_load_n(&r->huge[x / 64], __ATOMIC_RELAXED) >> (x % 64) & 1);
}

static void serve_round_fault(struct wps_engine *e, struct ereg *r, uint64_t u,
			      struct fault_queue *q)
{
	uint64_t u0 = u, n = 1, i;
	int ret;

	/* In a THP, the whole extent: unprotecting 4 KiB would split it. */
	if (in_thp(r, u)) {
		u0 = u / THP_UNITS * THP_UNITS;
		n = THP_UNITS;
	}
	ret = unprotect_units(e, r, u0, n, true, q);
	if (ret)
		set_error(e, ret);
	for (i = u0; i < u0 + n; i += 64)
		__atomic_fetch_or(&r->dirty[i / 64],
				  n >= 64 ? ~0ull : 1ull << (u % 64),
				  __ATOMIC_RELEASE);
}

/*
 * A write into a transparent huge page: unprotecting 4 KiB of it would
 * split the huge page for good. When the buffers have room now, save the
 * whole 2 MiB extent and unprotect it as one piece. Returns true when the
 * fault was fully served this way; false leaves it to the 4 KiB path
 * (what this managed to save stays saved).
 */
/* The calling thread's run_delay so far (time runnable but waiting for a
 * CPU), 0 if the kernel does not say; read at a thread's start and end
 * only (a /proc read). */
static uint64_t thread_rq_ns(void)
{
	unsigned long long cpu = 0, delay = 0;
	FILE *f = fopen("/proc/thread-self/schedstat", "re");

	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &cpu, &delay) != 2)
		delay = 0;
	fclose(f);
	return delay;
}

/* CPU time of the calling thread: the trace tells the fault thread's
 * waits for a CPU from its work (a system call, not a vDSO read: once a
 * loop turn and once a fault). */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* The writer was just woken (unprotect started at t_wake): account the
 * fault's service time and its breakdown. f->offcpu_ns holds the thread's
 * CPU time when pickup started; it becomes the time it was off CPU. */
static void fault_done(struct wps_engine *e, struct wps_fault_rec *f,
		       uint64_t t0, uint64_t t_wake)
{
	uint64_t now = wps_now_ns(), cpu = thread_cpu_ns() - f->offcpu_ns;

	wps_histo_add(&e->fault_lat, now - t0);
	f->wake_ns = now - t_wake;
	f->total_ns = f->pickup_ns + (now - t0);
	f->offcpu_ns = f->total_ns > cpu ? f->total_ns - cpu : 0;
	wps_ftrace_add(e->trace, f);
}

static bool serve_thp_fault(struct wps_engine *e, struct ereg *r, uint64_t u,
			    uint64_t t0, struct wps_fault_rec *f,
			    struct fault_queue *q)
{
	uint64_t x = u / THP_UNITS, u0 = x * THP_UNITS, w, t1;
	int ret;

	if (!in_thp(r, u) || failed(e))
		return false;
	t1 = wps_now_ns();
	for (w = u0; w < u0 + THP_UNITS; w += 64) {
		ret = claim_copy(e, r, w, 64, WPS_LANE_FAULT);
		if (ret) {
			set_error(e, ret);
			return false;
		}
	}
	for (w = u0; w < u0 + THP_UNITS; w += 64)
		if (__atomic_load_n(&r->copied[w / 64], __ATOMIC_ACQUIRE) != ~0ull)
			return false;
	e->thp_faults++;
	f->flags |= WPS_FTRACE_THP;
	f->copy_ns = wps_now_ns() - t1;
	t1 += f->copy_ns;
	ret = unprotect_units(e, r, u0, THP_UNITS, true, q);
	if (ret)
		set_error(e, ret);
	fault_done(e, f, t0, t1);
	return true;
}

/* Hand the written-page hints gathered since the last call to the
 * caller's callback, in fault order. Fault thread only. */
static void hints_flush(struct wps_engine *e)
{
	unsigned int i;

	for (i = 0; i < e->nr_hints; i++)
		e->written(e->written_arg, e->hints[i].region,
			   e->hints[i].block, e->hints[i].count);
	e->nr_hints = 0;
}

/*
 * t0: when the message was read; f: its record, with pickup (and the
 * queue wait, from t0 to now) already set.
 */
static void serve_wp_fault(struct wps_engine *e, uint64_t addr, uint64_t t0,
			   struct wps_fault_rec *f, struct fault_queue *q)
{
	struct ereg *r = find_region(e, addr);
	uint64_t u, w0, w1, t1;
	int ret;

	if (!r) {
		/* Not ours (cannot happen with our registration): wake the
		 * thread rather than leave it blocked. */
		struct uffdio_range range = { .start = addr & ~4095ull,
					      .len = 4096 };

		ioctl(e->uffd, UFFDIO_WAKE, &range);
		return;
	}
	u = (addr - r->start) >> r->shift;
	if (!__atomic_load_n(&e->live, __ATOMIC_ACQUIRE)) {
		serve_round_fault(e, r, u, q);
		return;
	}
	__atomic_fetch_add(&e->faults, 1, __ATOMIC_RELAXED);
	/* The guest writes this unit after the instant: a page it needs,
	 * which the caller may record (the snapshot glue keeps it as the
	 * working-set hint of a later lazy restore). */
	t1 = wps_now_ns();
	if (e->written) {
		if (e->nr_hints == HINT_BATCH)
			hints_flush(e);
		e->hints[e->nr_hints++] = (struct hint){
			r->idx, (u << r->shift) / 4096, r->unit / 4096 };
	}
	f->addr = addr;
	f->hint_ns = wps_now_ns() - t1;
	if (serve_thp_fault(e, r, u, t0, f, q))
		return;
	t1 = wps_now_ns();
	if (!bit_test_and_set(r->claimed, u)) {
		/* Ours to save: the unit is still protected, so what we read
		 * is its content at the freeze (zero if it was unpopulated).
		 * Room first, apart, so that the trace can tell waiting for
		 * the disk's buffers from copying (the put would otherwise
		 * take the same wait inside). */
		f->flags |= WPS_FTRACE_COPIED;
		ret = 0;
		if (!failed(e) && e->sink.ops->reserve && r->unit == 4096) {
			ret = e->sink.ops->reserve(e->sink.priv, WPS_LANE_FAULT,
						   r->unit, false);
			f->buf_ns = wps_now_ns() - t1;
			t1 += f->buf_ns;
		}
		if (!failed(e) && !ret)
			ret = save_units(e, r, WPS_LANE_FAULT, u, 1);
		if (!failed(e)) {
			if (ret) {
				wps_err(e->ctx, "saving the pre-image of "
					"0x%llx failed: %s",
					(unsigned long long)addr, strerror(-ret));
				set_error(e, ret);
			} else {
				__atomic_fetch_add(&e->fault_bytes, r->unit,
						   __ATOMIC_RELAXED);
				__atomic_fetch_add(&e->bytes_done, r->unit,
						   __ATOMIC_RELAXED);
				e->faults_copied++;
			}
		}
		bits_set_release(r->copied, u, 1);
		f->copy_ns = wps_now_ns() - t1;
	} else {
		/* The sweep is copying it: that takes one claim step. Spin
		 * briefly, then sleep rather than yield, so that a sweep
		 * preempted on this very core gets to finish. */
		struct timespec nap = { .tv_nsec = 5000 };
		unsigned int spins = 0;

		f->flags |= WPS_FTRACE_SWEEP_HELD;
		while (!bit_get(r->copied, u) && !failed(e)) {
			if (++spins < 256)
				cpu_relax();
			else
				nanosleep(&nap, NULL);
		}
		f->sweep_wait_ns = wps_now_ns() - t1;
	}
	/* Wake the writer first: its unit alone is what it waits for. */
	t1 = wps_now_ns();
	ret = unprotect_units(e, r, u, 1, true, q);
	if (ret)
		set_error(e, ret);
	fault_done(e, f, t0, t1);
	/* Then neighbours ride along: a write near a write is likely, and
	 * copying 64 KiB costs less than one more fault round trip. Only
	 * once the population is known (copying an unpopulated neighbour of
	 * a memfd would allocate it), and only while buffer space is free. */
	if (r->window <= 1 || !__atomic_load_n(&e->scanned, __ATOMIC_ACQUIRE) ||
	    failed(e))
		return;
	w0 = u - u % r->window;
	w1 = w0 + r->window < r->nr_units ? w0 + r->window : r->nr_units;
	ret = claim_copy(e, r, w0, w1 - w0, WPS_LANE_FAULT);
	if (!ret)
		ret = unprotect_copied(e, r, w0, w1, true, q);
	if (ret)
		set_error(e, ret);
}

static void *fault_main(void *arg)
{
	struct wps_engine *e = arg;
	uint64_t spin = SPIN_MIN_NS, last = wps_now_ns();
	/* When a read last found the kernel's queue empty: a message read
	 * later arrived after it, so (read - empty) bounds its wait there. */
	uint64_t t_empty = last, cpu_empty = thread_cpu_ns();
	uint64_t t_idle = last;     /* the last batch was fully served */
	struct fault_queue *q;
	struct pollfd pfd[2];
	bool dirty = false, polled = false;

	/* Named, so that per-thread figures (/proc/PID/task/TID/schedstat,
	 * top -H, perf) can tell the fault thread from the guest's. */
	uint64_t rq0 = thread_rq_ns();

	pthread_setname_np(pthread_self(), "wps-fault");
	q = calloc(1, sizeof(*q));
	if (!q) {
		set_error(e, -ENOMEM);
		return NULL;
	}
	pfd[0] = (struct pollfd){ .fd = e->uffd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = e->stop_efd, .events = POLLIN };
	for (;;) {
		uint64_t t0, t_read, pickup, behind, cpu_read, cpu_start;
		int n, pr;

		/* busy is raised before the read, so a pauser that sees it
		 * low knows every message read so far was fully handled. */
		__atomic_store_n(&e->busy, 1, __ATOMIC_SEQ_CST);
		cpu_read = thread_cpu_ns();
		t_read = wps_now_ns();
		n = pump(e, q);
		t0 = wps_now_ns();
		pickup = t0 - t_empty;
		behind = t_idle > t_empty ? t_idle - t_empty : 0;
		cpu_start = cpu_empty;
		if (n < MSG_BATCH) {
			t_empty = t_read;
			cpu_empty = cpu_read;
		}
		if (n < 0) {
			wps_err(e->ctx, "reading the userfaultfd failed: %s",
				strerror(-n));
			set_error(e, n);
			__atomic_store_n(&e->busy, 0, __ATOMIC_RELEASE);
			break;
		}
		while (q->head != q->tail) {
			struct uffd_msg *m = &q->m[q->head++ % FAULT_QUEUE];

			if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
				struct wps_fault_rec f = {
					.pickup_ns = pickup,
					.behind_ns = behind,
					.queue_ns = wps_now_ns() - t0,
					.offcpu_ns = cpu_start,
					.flags = polled ? WPS_FTRACE_POLLED : 0,
				};

				serve_wp_fault(e, m->arg.pagefault.address, t0,
					       &f, q);
				dirty = true;
			} else {
				struct uffdio_range range = {
					.start = m->arg.pagefault.address & ~4095ull,
					.len = 4096,
				};

				/* A missing fault: we never asked for them. */
				ioctl(e->uffd, UFFDIO_WAKE, &range);
			}
		}
		__atomic_store_n(&e->busy, 0, __ATOMIC_RELEASE);
		t_idle = wps_now_ns();
		polled = false;
		if (n > 0) {
			/* Faults keep coming: spin longer next time. */
			if (t0 - last < spin && spin < SPIN_MAX_NS)
				spin *= 2;
			last = t0;
			continue;
		}
		/* Idle: the hints go to their owner now, not on a fault. */
		if (e->nr_hints)
			hints_flush(e);
		if (__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE))
			break;
		/* A blocking poll costs ~100 us of wake-up; a guest waiting
		 * on us feels that, so spin for a while after activity. */
		if (t0 - last < spin) {
			cpu_relax();
			continue;
		}
		if (spin > SPIN_MIN_NS)
			spin /= 2;
		/* Fault pages are safe once in a buffer; hand a partly filled
		 * buffer to the disk only after the fault path has been quiet
		 * for a while, or each burst would take a buffer of its own
		 * and drain the reserve down to the disk's pace. */
		pr = poll(pfd, 2, dirty ? FLUSH_IDLE_MS : -1);
		if (pr < 0 && errno != EINTR) {
			set_error(e, -errno);
			break;
		}
		if (pr == 0 && dirty) {
			int ret = e->sink.ops->flush(e->sink.priv, WPS_LANE_FAULT);

			if (ret && !failed(e))
				set_error(e, ret);
			dirty = false;
		}
		last = wps_now_ns();
		/* A message that woke poll() arrived during the sleep; its
		 * wait for the wake-up cannot be told from here (the writer's
		 * side shows it), so pickup counts from the wake. */
		t_empty = t_idle = last;
		cpu_empty = thread_cpu_ns();
		polled = true;
	}
	free(q);
	if (e->nr_hints)
		hints_flush(e);
	e->trace->fault_rq_ns = thread_rq_ns() - rq0;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Population and sweep                                                */
/* ------------------------------------------------------------------ */

static void mark_save(struct ereg *r, uint64_t start, uint64_t end)
{
	uint64_t u, last;

	if (start < r->start)
		start = r->start;
	if (end > r->end)
		end = r->end;
	if (start >= end)
		return;
	last = (end - r->start + r->unit - 1) >> r->shift;
	/* Atomic: the THP fault path may read these words while the scan
	 * after the instant still runs (it only adds bits). */
	for (u = (start - r->start) >> r->shift; u < last; u++)
		__atomic_fetch_or(&r->save[u / 64], 1ull << (u % 64),
				  __ATOMIC_RELAXED);
}

static int scan_cb(void *arg, uint64_t start, uint64_t end, uint64_t cats)
{
	struct ereg *r = arg;
	uint64_t x;

	mark_save(r, start, end);
	/* Whole THP extents, so a fault there can save the extent and keep
	 * the huge page whole instead of splitting it. */
	if (r->huge && (cats & PAGE_IS_HUGE) && (cats & PAGE_IS_PRESENT)) {
		for (x = (start + THP_SIZE - 1) / THP_SIZE * THP_SIZE;
		     x + THP_SIZE <= end; x += THP_SIZE) {
			uint64_t i = (x - r->start) / THP_SIZE;

			__atomic_fetch_or(&r->huge[i / 64], 1ull << (i % 64),
					  __ATOMIC_RELAXED);
		}
	}
	return 0;
}

/* Pages that live in the memfd but are not mapped in our page tables
 * (written through another mapping, or unmapped by reclaim) are invisible
 * to PAGEMAP_SCAN; the file knows them. */
static int scan_file(struct wps_engine *e, struct ereg *r)
{
	off_t pos = r->fd_offset, end = r->fd_offset + (r->end - r->start);

	while (pos < end) {
		off_t data = lseek(r->fd, pos, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO)
				return 0;
			wps_err(e->ctx, "SEEK_DATA on the memfd of region %u "
				"failed: %s", r->idx, strerror(errno));
			return -errno;
		}
		if (data >= end)
			return 0;
		hole = lseek(r->fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		if (hole > end)
			hole = end;
		mark_save(r, r->start + (data - r->fd_offset),
			  r->start + (hole - r->fd_offset));
		pos = hole;
	}
	return 0;
}

/*
 * Before the first protection: which extents are transparent huge pages.
 * Faults there, in the live rounds and after the instant, then handle the
 * whole extent and never split it. Their units are marked to be saved now
 * (a THP is fully populated), so the extent path works from the instant,
 * before the full population scan has run.
 */
static int scan_huge(struct wps_engine *e)
{
	struct wps_pagemap pm;
	unsigned int i;
	int ret = 0;

	for (i = 0; i < e->nr && !e->r[i].huge; i++)
		;
	if (i == e->nr)
		return 0;
	ret = wps_pagemap_open(e->ctx, e->pid, &pm);
	if (ret)
		return ret;
	for (i = 0; i < e->nr && !ret; i++)
		if (e->r[i].huge)
			ret = wps_pagemap_scan(&pm, e->r[i].start, e->r[i].end,
					       PAGE_IS_HUGE, PAGE_IS_PFNZERO,
					       scan_cb, &e->r[i]);
	wps_pagemap_close(&pm);
	return ret;
}

static int scan_population(struct wps_engine *e)
{
	struct wps_pagemap pm;
	unsigned int i;
	int ret;

	ret = wps_pagemap_open(e->ctx, e->pid, &pm);
	if (ret)
		return ret;
	for (i = 0; i < e->nr && !ret; i++) {
		struct ereg *r = &e->r[i];
		uint64_t u, n = 0;

		ret = wps_pagemap_scan(&pm, r->start, r->end,
				       PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
				       PAGE_IS_PFNZERO, scan_cb, r);
		if (!ret && r->fd >= 0 && r->backing == WPS_BACKING_MEMFD)
			ret = scan_file(e, r);
		for (u = 0; u < (r->nr_units + 63) / 64; u++)
			n += __builtin_popcountll(r->save[u]);
		e->bytes_total += n << r->shift;
	}
	wps_pagemap_close(&pm);
	return ret;
}

struct pending {
	struct ereg *r;
	uint64_t u, n;          /* units waiting to be unprotected */
};

static int pending_flush(struct wps_engine *e, struct pending *p)
{
	int ret = 0;

	if (p->n)
		ret = unprotect_units(e, p->r, p->u, p->n, false, NULL);
	p->n = 0;
	return ret;
}

static int pending_add(struct wps_engine *e, struct pending *p, struct ereg *r,
		       uint64_t u, uint64_t n)
{
	int ret = 0;

	if (p->n && p->r == r && p->u + p->n == u) {
		p->n += n;
		return 0;
	}
	ret = pending_flush(e, p);
	p->r = r;
	p->u = u;
	p->n = n;
	return ret;
}

/*
 * Claim units [u, u + n) of one word (n <= 64, not crossing a word) for
 * the caller's lane. Units already claimed are left to their owner. Of
 * ours, unpopulated ones have a zero pre-image and are done at once;
 * populated ones are copied in runs. Needs the save bitmap complete.
 */
static int claim_copy(struct wps_engine *e, struct ereg *r, uint64_t u,
		      unsigned int n, enum wps_lane lane)
{
	uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << (u % 64);
	uint64_t old;
	int ret = 0;

	/* Room first, claims second: a claim must never wait for the disk.
	 * The fault lane only takes neighbours when the room is there now
	 * (-EAGAIN: leave them to the sweep). */
	if (e->sink.ops->reserve &&
	    (r->save[u / 64] & mask & ~__atomic_load_n(&r->claimed[u / 64],
							__ATOMIC_RELAXED))) {
		ret = e->sink.ops->reserve(e->sink.priv, lane,
					   (uint64_t)n << r->shift,
					   lane == WPS_LANE_FAULT);
		if (ret == -EAGAIN && lane == WPS_LANE_FAULT)
			return 0;
		if (ret) {
			set_error(e, ret);
			return ret;
		}
	}
	old = __atomic_fetch_or(&r->claimed[u / 64], mask, __ATOMIC_ACQ_REL);
	uint64_t mine = mask & ~old;
	uint64_t copy = mine & r->save[u / 64];
	uint64_t base = u & ~63ull;

	while (copy) {
		unsigned int s = __builtin_ctzll(copy);
		uint64_t rest = ~(copy >> s);
		unsigned int len = rest ? (unsigned int)__builtin_ctzll(rest) : 64 - s;
		if (!failed(e)) {
			ret = save_units(e, r, lane, base + s, len);
			if (ret) {
				set_error(e, ret);
				break;
			}
			__atomic_fetch_add(lane == WPS_LANE_SWEEP ?
					   &e->sweep_bytes : &e->fault_bytes,
					   (uint64_t)len << r->shift,
					   __ATOMIC_RELAXED);
			__atomic_fetch_add(&e->bytes_done,
					   (uint64_t)len << r->shift,
					   __ATOMIC_RELAXED);
		}
		copy &= ~(len == 64 ? ~0ull : (((1ull << len) - 1) << s));
	}
	if (mine)
		__atomic_fetch_or(&r->copied[u / 64], mine, __ATOMIC_RELEASE);
	return ret;
}

/* Sweep one chunk, then queue for unprotection every unit of it whose
 * pre-image is safe; a fault-claimed unit still being copied splits the
 * run (its owner unprotects it). */
static int sweep_chunk(struct wps_engine *e, struct ereg *r, uint64_t u0,
		       uint64_t u1, struct pending *p)
{
	unsigned int step = r->unit == 4096 ? CLAIM_STEP : 1;
	uint64_t u, run = u0;
	int ret;

	for (u = u0; u < u1;) {
		unsigned int n = step - (u % step);

		if (u + n > u1)
			n = u1 - u;
		ret = claim_copy(e, r, u, n, WPS_LANE_SWEEP);
		if (ret)
			return ret;
		u += n;
	}
	for (u = u0; u < u1; u++) {
		if (bit_get(r->copied, u))
			continue;
		if (u > run) {
			ret = pending_add(e, p, r, run, u - run);
			if (ret)
				return ret;
		}
		run = u + 1;
	}
	if (u1 > run)
		return pending_add(e, p, r, run, u1 - run);
	return 0;
}

static bool chunk_has_data(const struct ereg *r, uint64_t u0, uint64_t u1)
{
	uint64_t w;

	for (w = u0 / 64; w <= (u1 - 1) / 64; w++)
		if (r->save[w])
			return true;
	return false;
}

static void *sweep_main(void *arg)
{
	struct wps_engine *e = arg;
	struct pending p = { 0 };
	unsigned int i;
	int ret;

	/* The sweep is background work: a guest thread woken from a fault
	 * should get a CPU at once, not after the scheduler's wake-up
	 * granularity (~1 ms, which is what faulted writes' p99 showed). */
	uint64_t rq0 = thread_rq_ns();

	pthread_setname_np(pthread_self(), "wps-sweep");
	if (setpriority(PRIO_PROCESS, (id_t)gettid(), SWEEP_NICE))
		wps_dbg(e->ctx, "sweep thread keeps its priority: %s",
			strerror(errno));

	ret = scan_population(e);
	if (ret) {
		set_error(e, ret);
		return NULL;
	}
	__atomic_store_n(&e->scanned, true, __ATOMIC_RELEASE);
	for (i = 0; i < e->nr && !failed(e); i++) {
		struct ereg *r = &e->r[i];
		uint64_t per = SWEEP_CHUNK > r->unit ? SWEEP_CHUNK >> r->shift : 1;
		uint64_t u = 0;

		while (u < r->nr_units && !failed(e)) {
			/* Chunk boundaries follow absolute 2 MiB alignment, so
			 * a THP is unprotected whole. */
			uint64_t addr = r->start + (u << r->shift);
			uint64_t next = ((addr / SWEEP_CHUNK) + 1) * SWEEP_CHUNK;
			uint64_t u1 = per > 1 ? (next - r->start) >> r->shift : u + 1;
			bool data;

			if (u1 > r->nr_units)
				u1 = r->nr_units;
			data = chunk_has_data(r, u, u1);
			ret = sweep_chunk(e, r, u, u1, &p);
			/* Unprotect populated memory promptly; let runs of
			 * never-populated memory grow into one ioctl. */
			if (!ret && data)
				ret = pending_flush(e, &p);
			if (ret) {
				set_error(e, ret);
				break;
			}
			u = u1;
		}
		ret = pending_flush(e, &p);
		if (ret)
			set_error(e, ret);
	}
	ret = e->sink.ops->flush(e->sink.priv, WPS_LANE_SWEEP);
	if (ret)
		set_error(e, ret);
	e->swept = !failed(e);
	e->trace->sweep_rq_ns = thread_rq_ns() - rq0;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Life cycle                                                          */
/* ------------------------------------------------------------------ */

static int cmp_ereg(const void *a, const void *b)
{
	const struct ereg *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void unregister_all(struct wps_engine *e)
{
	unsigned int i;

	if (!e->registered)
		return;
	for (i = 0; i < e->nr; i++) {
		int ret = wps_uffd_unregister(e->uffd, e->r[i].start,
					      e->r[i].end - e->r[i].start);

		if (ret && !e->r[i].gone)
			wps_warn(e->ctx, "unregistering [0x%llx, 0x%llx) "
				 "failed: %s",
				 (unsigned long long)e->r[i].start,
				 (unsigned long long)e->r[i].end,
				 strerror(-ret));
	}
	e->registered = false;
}

/* Remove every protection we may have set. The caller is the uffd reader
 * (no fault thread runs), so it pumps events itself. Unprotecting wakes
 * every thread blocked in the range. */
static int unprotect_all(struct wps_engine *e)
{
	unsigned int i;
	int ret = 0, r;

	for (i = 0; i < e->nr; i++) {
		r = unprotect_units(e, &e->r[i], 0, e->r[i].nr_units, true,
				    NULL);
		if (r && !ret)
			ret = r;
	}
	e->protected_ = false;
	return ret;
}

/* MemAvailable from /proc/meminfo, in bytes; 0 if unknown. */
static uint64_t mem_available(void)
{
	char line[128];
	uint64_t kb = 0;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * Protecting a region installs a marker in every page-table entry of it,
 * populated or not: 8 bytes per 4 KiB page. For a multi-TiB sparse
 * mapping (an ASan shadow, a VMM's reserved address space) that is tens
 * of GiB of page tables and the OOM killer. Refuse up front, naming the
 * region, when the markers alone would take a quarter of available memory.
 */
static int check_marker_cost(struct wps_ctx *ctx,
			     const struct wps_region *regions, unsigned int nr)
{
	uint64_t avail = mem_available(), need = 0, big = 0;
	unsigned int i, which = 0;

	for (i = 0; i < nr; i++) {
		uint64_t pt = regions[i].size / regions[i].page_size * 8;

		need += pt;
		if (pt > big) {
			big = pt;
			which = i;
		}
	}
	if (!avail || need <= avail / 4)
		return 0;
	wps_err(ctx, "write-protecting these regions would need %llu MiB of "
		"page tables (the largest, [0x%llx, +%llu GiB), alone %llu "
		"MiB) with %llu MiB of memory available: snapshot only the "
		"guest RAM, not reserved address space",
		(unsigned long long)(need >> 20),
		(unsigned long long)regions[which].host_addr,
		(unsigned long long)(regions[which].size >> 30),
		(unsigned long long)(big >> 20),
		(unsigned long long)(avail >> 20));
	return -E2BIG;
}

int wps_engine_new(struct wps_ctx *ctx, const struct wps_region *regions,
		   unsigned int nr, const struct wps_engine_opts *opts,
		   struct wps_engine **out)
{
	uint64_t need = WPS_UFFD_NEED_ANON, want;
	unsigned int window = opts->fault_window ? opts->fault_window :
						   DEFAULT_FAULT_WINDOW;
	struct wps_engine *e;
	unsigned int i;
	int ret;

	ret = wps_regions_check(ctx, regions, nr);
	if (!ret)
		ret = check_marker_cost(ctx, regions, nr);
	if (ret)
		return ret;
	if (!opts->sink.ops || !opts->sink.ops->put || !opts->sink.ops->flush)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ctx = ctx;
	e->uffd = -1;
	e->stop_efd = -1;
	e->sink = opts->sink;
	e->pause = opts->pause;
	e->resume = opts->resume;
	e->pause_arg = opts->pause_arg;
	e->written = opts->written;
	e->written_arg = opts->written_arg;
	e->freeze_simple = opts->freeze_simple;
	e->pid = opts->pid;
	if (e->pid && opts->uffd < 0) {
		wps_err(ctx, "memory of process %d needs that process's "
			"userfaultfd", (int)e->pid);
		ret = -EINVAL;
		goto fail;
	}
	e->nr = nr;
	e->trace = calloc(1, sizeof(*e->trace));
	e->hints = e->written ? calloc(HINT_BATCH, sizeof(*e->hints)) : NULL;
	if (!e->trace || (e->written && !e->hints)) {
		ret = -ENOMEM;
		goto fail;
	}
	e->tracker_bytes = sizeof(*e) + nr * sizeof(*e->r) +
			   sizeof(struct fault_queue) + sizeof(*e->trace) +
			   (e->hints ? HINT_BATCH * sizeof(*e->hints) : 0);
	if (window > 64 || (window & (window - 1))) {
		wps_err(ctx, "fault window %u must be a power of two <= 64 "
			"units", window);
		ret = -EINVAL;
		goto fail;
	}
	e->r = calloc(nr, sizeof(*e->r));
	if (!e->r) {
		ret = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < nr; i++) {
		struct ereg *r = &e->r[i];
		uint64_t words;

		r->idx = i;
		r->start = regions[i].host_addr;
		r->end = regions[i].host_addr + regions[i].size;
		/* In-process: the guest's own address; another process:
		 * the caller's mapping, our own of its memfd, or
		 * process_vm_readv for anonymous memory. */
		ret = wps_memsrc_open(&r->src, ctx, e->pid, &regions[i]);
		if (ret)
			goto fail;
		r->unit = regions[i].page_size;
		r->shift = __builtin_ctz(r->unit);
		r->nr_units = regions[i].size >> r->shift;
		r->backing = regions[i].backing;
		r->fd = regions[i].fd;
		r->fd_offset = regions[i].fd_offset;
		words = (r->nr_units + 63) / 64;
		r->save = calloc(words, 8);
		r->claimed = calloc(words, 8);
		r->copied = calloc(words, 8);
		r->dirty = calloc(words, 8);
		r->window = r->unit == 4096 ? window : 1;
		if (r->backing == WPS_BACKING_ANON && !(r->start % THP_SIZE)) {
			uint64_t ext = (regions[i].size / THP_SIZE + 63) / 64;

			r->huge = calloc(ext ? ext : 1, 8);
			e->tracker_bytes += (ext ? ext : 1) * 8;
		}
		e->tracker_bytes += 4 * words * 8;
		if (!r->save || !r->claimed || !r->copied || !r->dirty) {
			ret = -ENOMEM;
			goto fail;
		}
		if (r->backing != WPS_BACKING_ANON)
			need |= WPS_UFFD_NEED_SHMEM;
		else
			need |= UFFD_FEATURE_WP_UNPOPULATED;
	}
	/* Remote reads: a bounce buffer per lane, large enough for a claim
	 * step or a whole unit; longer runs go through it in pieces. */
	for (i = 0; i < nr; i++) {
		if (wps_memsrc_direct(&e->r[i].src, 0))
			continue;
		if (e->bounce_size < (256u << 10))
			e->bounce_size = 256u << 10;
		if (e->r[i].unit > e->bounce_size)
			e->bounce_size = e->r[i].unit;
	}
	for (i = 0; e->bounce_size && i < WPS_NR_LANES; i++) {
		e->bounce[i] = aligned_alloc(4096, e->bounce_size);
		if (!e->bounce[i]) {
			ret = -ENOMEM;
			goto fail;
		}
		e->tracker_bytes += e->bounce_size;
	}
	qsort(e->r, nr, sizeof(*e->r), cmp_ereg);

	if (opts->uffd >= 0) {
		int fl = fcntl(opts->uffd, F_GETFL);

		e->uffd = opts->uffd;
		/* A handed-over uffd may block: the fault thread must never
		 * sleep in read() with a message half handled. The flag is
		 * the open file's, shared with the owner, who no longer reads
		 * it. */
		if (fl < 0 || (!(fl & O_NONBLOCK) &&
			       fcntl(opts->uffd, F_SETFL, fl | O_NONBLOCK))) {
			ret = -errno;
			wps_err(ctx, "the userfaultfd handed over is not usable: "
				"%s", strerror(errno));
			goto fail;
		}
	} else {
		ret = wps_uffd_open(ctx, O_CLOEXEC | O_NONBLOCK, &e->uffd);
		if (ret)
			goto fail;
		e->own_uffd = true;
	}
	/* Events let us notice memory the guest throws away mid-snapshot
	 * instead of publishing an image that silently lacks it. */
	want = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP;
	ret = wps_uffd_negotiate(ctx, e->uffd, need, want, &e->features);
	if (ret)
		goto fail;
	for (i = 0; i < nr; i++) {
		ret = wps_uffd_register(ctx, e->uffd, e->r[i].start,
					e->r[i].end - e->r[i].start,
					UFFDIO_REGISTER_MODE_WP);
		if (ret) {
			while (i--)
				wps_uffd_unregister(e->uffd, e->r[i].start,
						    e->r[i].end - e->r[i].start);
			goto fail;
		}
	}
	e->registered = true;
	e->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->stop_efd < 0) {
		ret = -errno;
		goto fail;
	}
	*out = e;
	return 0;
fail:
	wps_engine_free(e);
	return ret;
}

/*
 * Re-protect every unit marked dirty since the last call, coalescing
 * nearby units into one ioctl. Returns the number of dirty units, or
 * -errno.
 */
static int64_t reprotect_dirty(struct wps_engine *e)
{
	int64_t total = 0;
	unsigned int i;
	int ret;

	for (i = 0; i < e->nr; i++) {
		struct ereg *r = &e->r[i];
		uint64_t w, words = (r->nr_units + 63) / 64;
		uint64_t rs = 0, re = 0;   /* pending run [rs, re) */
		bool have = false;

		for (w = 0; w < words; w++) {
			uint64_t d;

			if (!__atomic_load_n(&r->dirty[w], __ATOMIC_RELAXED))
				continue;
			d = __atomic_exchange_n(&r->dirty[w], 0, __ATOMIC_ACQ_REL);
			while (d) {
				uint64_t u = w * 64 + __builtin_ctzll(d);

				d &= d - 1;
				total++;
				if (have && u <= re + COALESCE) {
					re = u + 1;
					continue;
				}
				if (have) {
					ret = change_wp(e, r->start + (rs << r->shift),
							(re - rs) << r->shift,
							true, false, NULL);
					if (ret)
						return ret;
				}
				rs = u;
				re = u + 1;
				have = true;
			}
		}
		if (have) {
			ret = change_wp(e, r->start + (rs << r->shift),
					(re - rs) << r->shift, true, false, NULL);
			if (ret)
				return ret;
		}
	}
	return total;
}

static int protect_all(struct wps_engine *e)
{
	unsigned int i;
	int ret;

	e->protected_ = true;
	for (i = 0; i < e->nr; i++) {
		ret = change_wp(e, e->r[i].start, e->r[i].end - e->r[i].start,
				true, false, NULL);
		if (ret) {
			wps_err(e->ctx, "write-protecting [0x%llx, 0x%llx) "
				"failed: %s", (unsigned long long)e->r[i].start,
				(unsigned long long)e->r[i].end, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/*
 * Converging freeze, while the guest runs: protect everything, then keep
 * re-protecting what the guest wrote meanwhile (the fault thread
 * unprotects and marks it) until a round finds only a few units. What is
 * left for the pause is then tiny, whatever the guest's size.
 */
static int converge(struct wps_engine *e)
{
	int64_t n, prev = INT64_MAX;
	int ret;

	ret = protect_all(e);
	if (ret)
		return ret;
	for (e->rounds = 1; e->rounds <= ROUNDS_MAX; e->rounds++) {
		n = reprotect_dirty(e);
		if (n < 0)
			return (int)n;
		if (n <= ROUNDS_DONE)
			break;
		/* A writer faster than our rounds: more rounds do not help. */
		if (n >= prev && e->rounds >= 4)
			break;
		prev = n;
	}
	return 0;
}

/* Wait until the fault thread has handled every message it read. The
 * guest is paused, so no new fault comes from it. */
static void wait_fault_idle(struct wps_engine *e)
{
	unsigned int spins = 0;

	while (__atomic_load_n(&e->busy, __ATOMIC_ACQUIRE)) {
		if (++spins < 1024)
			cpu_relax();
		else
			sched_yield();
	}
}

int wps_engine_freeze(struct wps_engine *e)
{
	struct timespec rt, mono;
	bool paused = false;
	uint64_t t_paused = 0, t0;
	int64_t n = 0;
	int ret;

	if (e->fault_started)
		return -EALREADY;
	e->t_start = wps_now_ns();
	/* The fault thread reads the uffd from before the first page is
	 * protected: the live rounds need it, and any guest thread the pause
	 * callback does not stop is served from the first instant. */
	ret = pthread_create(&e->fault_thr, NULL, fault_main, e);
	if (ret)
		return -ret;
	e->fault_started = true;

	ret = scan_huge(e);
	if (ret)
		goto fail;
	if (!e->freeze_simple) {
		ret = converge(e);
		if (ret)
			goto fail;
	}
	if (e->pause) {
		ret = e->pause(e->pause_arg);
		if (ret) {
			wps_err(e->ctx, "pausing the guest failed: %s",
				strerror(ret < 0 ? -ret : ret));
			ret = ret < 0 ? ret : -ret;
			goto fail;
		}
		paused = true;
	}
	t_paused = wps_now_ns();
	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	t0 = wps_now_ns();
	if (e->freeze_simple) {
		ret = protect_all(e);
	} else {
		wait_fault_idle(e);
		n = reprotect_dirty(e);
		ret = n < 0 ? (int)n : 0;
		e->pause_protect_units = n > 0 ? n : 0;
	}
	if (ret)
		goto fail;
	/* The instant: from here on a fault saves a pre-image. */
	__atomic_store_n(&e->live, true, __ATOMIC_RELEASE);
	e->protect_ns = wps_now_ns() - t0;
	e->rt_instant = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec;
	e->mono_instant = (int64_t)mono.tv_sec * 1000000000 + mono.tv_nsec;
	if (paused) {
		ret = e->resume(e->pause_arg);
		paused = false;
		if (ret) {
			wps_err(e->ctx, "resuming the guest failed: %s",
				strerror(ret < 0 ? -ret : ret));
			ret = ret < 0 ? ret : -ret;
			goto fail;
		}
	}
	e->pause_ns = wps_now_ns() - t_paused;
	ret = pthread_create(&e->sweep_thr, NULL, sweep_main, e);
	if (ret) {
		ret = -ret;
		goto fail;
	}
	e->sweep_started = true;
	return 0;
fail:
	/* Leave nothing protected: unprotecting all regions, even those we
	 * did not reach, is harmless and wakes anyone we blocked. */
	set_error(e, ret);
	__atomic_store_n(&e->stop, true, __ATOMIC_RELEASE);
	eventfd_write(e->stop_efd, 1);
	pthread_join(e->fault_thr, NULL);
	e->fault_started = false;
	if (e->protected_)
		unprotect_all(e);
	if (paused)
		e->resume(e->pause_arg);
	unregister_all(e);
	e->waited = true;
	e->result = ret;
	return ret;
}

int wps_engine_wait(struct wps_engine *e)
{
	int ret;

	if (e->waited)
		return e->result;
	if (e->sweep_started) {
		pthread_join(e->sweep_thr, NULL);
		e->sweep_started = false;
	}
	if (e->fault_started) {
		__atomic_store_n(&e->stop, true, __ATOMIC_RELEASE);
		eventfd_write(e->stop_efd, 1);
		pthread_join(e->fault_thr, NULL);
		e->fault_started = false;
	}
	/* After a complete sweep every unit was unprotected, by the sweep or
	 * by the fault thread once its copy was safe; walking the page
	 * tables once more would cost ~15 ms/GiB for nothing. Any failure
	 * or cancel takes the full walk, which also wakes anyone blocked. */
	if (e->protected_ && !(e->swept && !failed(e))) {
		ret = unprotect_all(e);
		if (ret)
			set_error(e, ret);
	}
	e->protected_ = false;
	unregister_all(e);
	e->t_end = wps_now_ns();
	e->waited = true;
	if (__atomic_load_n(&e->err, __ATOMIC_ACQUIRE))
		e->result = e->err;
	else if (__atomic_load_n(&e->cancel, __ATOMIC_ACQUIRE))
		e->result = -ECANCELED;
	else
		e->result = 0;
	return e->result;
}

void wps_engine_cancel(struct wps_engine *e)
{
	__atomic_store_n(&e->cancel, true, __ATOMIC_RELEASE);
}

void wps_engine_progress(struct wps_engine *e, struct wps_progress *p)
{
	uint64_t total = __atomic_load_n(&e->bytes_total, __ATOMIC_RELAXED);
	uint64_t done = __atomic_load_n(&e->bytes_done, __ATOMIC_RELAXED);

	p->bytes_total = total;
	p->bytes_done = done > total ? total : done;
	p->faults = __atomic_load_n(&e->faults, __ATOMIC_RELAXED);
}

void wps_engine_stats(struct wps_engine *e, struct wps_snapshot_stats *st)
{
	st->pause_ns = e->pause_ns;
	st->protect_ns = e->protect_ns;
	st->populated_bytes = e->bytes_total;
	st->saved_bytes = e->sweep_bytes + e->fault_bytes;
	st->sweep_bytes = e->sweep_bytes;
	st->fault_bytes = e->fault_bytes;
	st->faults = e->faults;
	st->faults_copied = e->faults_copied;
	st->faults_huge = e->thp_faults;
	st->events = e->events;
	st->protect_rounds = e->rounds;
	st->pause_protect_pages = e->pause_protect_units;
	st->tracker_bytes = e->tracker_bytes;
	if (e->waited) {
		st->fault_p50_ns = wps_histo_pct(&e->fault_lat, 50);
		st->fault_p99_ns = wps_histo_pct(&e->fault_lat, 99);
		st->fault_max_ns = e->fault_lat.max;
	}
}

int wps_engine_fault_trace(struct wps_engine *e, struct wps_fault_trace *out)
{
	if (!e->waited)
		return -EBUSY;
	*out = *e->trace;
	wps_ftrace_sort(out);
	return 0;
}

void wps_engine_instant(const struct wps_engine *e, int64_t *realtime_ns,
			int64_t *monotonic_ns)
{
	*realtime_ns = e->rt_instant;
	*monotonic_ns = e->mono_instant;
}

void wps_engine_free(struct wps_engine *e)
{
	unsigned int i;

	if (!e)
		return;
	if (e->fault_started || e->sweep_started) {
		wps_engine_cancel(e);
		wps_engine_wait(e);
	}
	unregister_all(e);
	if (e->own_uffd && e->uffd >= 0)
		close(e->uffd);
	if (e->stop_efd >= 0)
		close(e->stop_efd);
	free(e->bounce[WPS_LANE_SWEEP]);
	free(e->bounce[WPS_LANE_FAULT]);
	if (e->r) {
		for (i = 0; i < e->nr; i++) {
			free(e->r[i].save);
			free(e->r[i].claimed);
			free(e->r[i].copied);
			free(e->r[i].dirty);
			free(e->r[i].huge);
			wps_memsrc_close(&e->r[i].src);
		}
		free(e->r);
	}
	free(e->trace);
	free(e->hints);
	free(e);
}
