/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reference guest: guest RAM (anon, THP, memfd or hugetlb), the writer
 * threads that play the vCPUs, the pause/resume handshake a VMM would do
 * around the freeze, the copy-on-write record of the generation every
 * block had at the marked instant, and the writers' own latency histogram.
 *
 * Everything lives in struct rguest; nothing here prints. The ledger
 * file and the comparison of memory or images against a ledger live in
 * ledger.c.
 *
 * Concurrency, in one place:
 *  - Block b belongs to exactly one writer (contiguous partitions), so
 *    gen[b] and snap[b] are plain memory written by one thread only.
 *  - The controller (whoever calls pause/resume/freeze/ledger/start/stop)
 *    serialises on ctl_lock. It reads gen[]/snap[] and changes epoch only
 *    while every running writer is parked; the parked counter carries the
 *    writers' stores to it (release RMWs, acquire load), and the ctl word
 *    carries the controller's epoch back to them.
 *  - The instant is recorded lazily: snap[b] holds (epoch << 32 | gen) and
 *    is current only when its top half equals the epoch. A writer about to
 *    bump gen[b] saves the old value first if snap[b] is stale. Marking a
 *    new instant is therefore one increment of epoch, done while parked:
 *    the freeze pays nothing per block, and there is no array to reset
 *    between snapshots (a reset could race with a writer mid-write).
 */
#include "config.h"

#include <ctype.h>

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "guest/guest.h"
#include "guest/guest_int.h"

#define HUGE_2M (2u << 20)

/* Populate in runs: 256 KiB for small pages, one huge page otherwise, so
 * that an unpopulated run never shares a (huge) page with a written one. */
#define RUN_BLOCKS_SMALL 64u
#define RUN_BLOCKS_HUGE (HUGE_2M / RGUEST_BLOCK)

/* ctl word bits: the one word writers check before every write. */
#define CTL_PAUSE 1u
#define CTL_STOP 2u

/* A parked writer polls this many times before sleeping: the snapshot's
 * write-protect runs during the pause and needs the CPUs more than a
 * writer needs a fast resume. */
#define WRITER_SPIN 64u
/* The pauser polls for this long before sleeping on the parked count. */
#define PAUSER_SPIN_NS 2000u

#define HIST_SUB_BITS 3u
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (64u * HIST_SUB)
#define SLOW_NS 5000u

#define GOLDEN 0x9E3779B97F4A7C15ull

/* One vCPU. Cache-line aligned: the counters are written on every block
 * write and must not share a line with another writer's. */
struct rguest_writer {
	struct rguest *g;
	pthread_t tid;
	unsigned int idx;
	uint64_t first, count;  /* own partition of blocks */
	uint64_t hot_first, hot_count;
	uint64_t rng;
	uint64_t pos;           /* SEQ cursor, relative to first */
	/* Written by the writer with relaxed stores, read by anyone. */
	uint64_t writes;
	uint64_t slow;
	uint64_t max_ns;
	uint64_t hist[HIST_BUCKETS];
	/* populate: runs selected at creation (borrowed from rguest_new) */
	const uint8_t *sel;
	unsigned int run_blocks;
} __attribute__((aligned(64)));

struct rguest {
	struct rguest_opts opts;
	uint8_t *mem;           /* guest RAM, mem .. mem + size, owned */
	uint64_t size;
	uint64_t nr_blocks;
	uint32_t page_size;
	int fd;                 /* memfd for MEMFD/HUGETLB, owned; -1 otherwise */

	uint32_t *gen;          /* current generation per block */
	uint64_t *snap;         /* epoch << 32 | generation at the instant */

	struct rguest_writer *w;  /* opts.threads of them */
	unsigned int nthreads;

	pthread_mutex_t ctl_lock;    /* serialises the controller side */
	unsigned int depth;          /* nested pauses */
	unsigned int nrunning;       /* writer threads started (ctl_lock) */
	bool started;

	_Atomic uint32_t epoch;      /* 0: no instant marked yet */
	_Atomic uint32_t ctl __attribute__((aligned(64)));
	_Atomic uint32_t sleepers;   /* writers asleep on ctl */
	_Atomic uint32_t parked __attribute__((aligned(64)));
	_Atomic uint32_t nrun_seen;  /* nrunning, as writers see it */
	_Atomic uint32_t pauser_waiting;
};

static long futex(_Atomic uint32_t *uaddr, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)uaddr, op, val, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* ------------------------------------------------------------------ */
/* Names                                                               */
/* ------------------------------------------------------------------ */

static const char *const backing_names[] = {
	[RGUEST_ANON] = "anon",
	[RGUEST_THP] = "thp",
	[RGUEST_MEMFD] = "memfd",
	[RGUEST_HUGETLB] = "hugetlb",
};

static const char *const pattern_names[] = {
	[RGUEST_IDLE] = "idle",
	[RGUEST_SEQ] = "seq",
	[RGUEST_RANDOM] = "random",
	[RGUEST_HOT] = "hot",
};

int rguest_backing_parse(const char *s, enum rguest_backing *out)
{
	unsigned int i;

	for (i = 0; s && i < sizeof(backing_names) / sizeof(backing_names[0]); i++) {
		if (!strcmp(s, backing_names[i])) {
			*out = (enum rguest_backing)i;
			return 0;
		}
	}
	return -EINVAL;
}

int rguest_pattern_parse(const char *s, enum rguest_pattern *out)
{
	unsigned int i;

	for (i = 0; s && i < sizeof(pattern_names) / sizeof(pattern_names[0]); i++) {
		if (!strcmp(s, pattern_names[i])) {
			*out = (enum rguest_pattern)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *rguest_backing_name(enum rguest_backing b)
{
	if ((unsigned int)b >= sizeof(backing_names) / sizeof(backing_names[0]))
		return "?";
	return backing_names[b];
}

const char *rguest_pattern_name(enum rguest_pattern p)
{
	if ((unsigned int)p >= sizeof(pattern_names) / sizeof(pattern_names[0]))
		return "?";
	return pattern_names[p];
}

/* ------------------------------------------------------------------ */
/* Content rule                                                        */
/* ------------------------------------------------------------------ */

/* splitmix64's finaliser over a mix of (b, g): every (block, generation)
 * pair gets an unrelated 64-bit pattern, so a stale or misplaced block
 * cannot pass for the expected one. */
uint64_t rguest_mix(uint64_t b, uint32_t g)
{
	uint64_t z = b * GOLDEN + g + 0x632BE59BD9B4E019ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void rguest_block_content(uint64_t b, uint32_t g, void *buf)
{
	if (!g) {
		memset(buf, 0, RGUEST_BLOCK);
		return;
	}
	guest_fill_block(buf, b, g);
}

/* ------------------------------------------------------------------ */
/* Latency histogram: 64 exponents x 8 linear sub-buckets              */
/* ------------------------------------------------------------------ */

static inline unsigned int hist_index(uint64_t v)
{
	unsigned int e;

	if (v < HIST_SUB)
		return (unsigned int)v;    /* exponent 0: exact */
	e = 63u - (unsigned int)__builtin_clzll(v);
	return e * HIST_SUB + (unsigned int)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

static uint64_t hist_lower(unsigned int i)
{
	unsigned int e = i / HIST_SUB, s = i % HIST_SUB;

	if (e < HIST_SUB_BITS)
		return s;
	return (uint64_t)(HIST_SUB + s) << (e - HIST_SUB_BITS);
}

/* A representative value for bucket i: its midpoint. */
static uint64_t hist_value(unsigned int i)
{
	unsigned int e = i / HIST_SUB;

	if (e < HIST_SUB_BITS)
		return hist_lower(i);
	return hist_lower(i) + ((1ull << (e - HIST_SUB_BITS)) >> 1);
}

static inline void relaxed_inc(uint64_t *p)
{
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static inline void account(struct rguest_writer *w, uint64_t ns)
{
	relaxed_inc(&w->hist[hist_index(ns)]);
	if (ns >= SLOW_NS)
		relaxed_inc(&w->slow);
	if (ns > __atomic_load_n(&w->max_ns, __ATOMIC_RELAXED))
		__atomic_store_n(&w->max_ns, ns, __ATOMIC_RELAXED);
	relaxed_inc(&w->writes);
}

/*
 * Reset races with running writers (a lost increment at worst: each
 * counter is owned by its writer and reset with plain relaxed stores).
 * Call it while paused for exact numbers.
 */
void rguest_latency_reset(struct rguest *g)
{
	unsigned int t, i;

	for (t = 0; t < g->nthreads; t++) {
		struct rguest_writer *w = &g->w[t];

		for (i = 0; i < HIST_BUCKETS; i++)
			__atomic_store_n(&w->hist[i], 0, __ATOMIC_RELAXED);
		__atomic_store_n(&w->slow, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&w->max_ns, 0, __ATOMIC_RELAXED);
	}
}

/* Value at rank (1-based) among the counts from bucket `from` upwards,
 * where bucket `from` only contributes `first` of its counts. */
static uint64_t hist_rank(const uint64_t *h, unsigned int from, uint64_t first,
			  uint64_t rank)
{
	uint64_t acc = 0;
	unsigned int i;

	for (i = from; i < HIST_BUCKETS; i++) {
		acc += i == from ? first : h[i];
		if (acc >= rank)
			return hist_value(i);
	}
	return 0;
}

static uint64_t pct_rank(uint64_t n, unsigned int pct)
{
	uint64_t r = (n * pct + 99) / 100;

	return r ? r : 1;
}

/*
 * Writes (and the slow count) are per-thread totals read with relaxed
 * loads; while writers run they may be a few writes apart from the
 * histogram sums. Percentiles are bucket midpoints (at most 1/16 off),
 * clamped to the exact max.
 */
void rguest_latency_get(struct rguest *g, struct rguest_latency *lat)
{
	uint64_t h[HIST_BUCKETS] = { 0 };
	uint64_t n = 0, slow = 0, max = 0, above = 0;
	unsigned int t, i, sb;

	for (t = 0; t < g->nthreads; t++) {
		struct rguest_writer *w = &g->w[t];
		uint64_t m;

		for (i = 0; i < HIST_BUCKETS; i++)
			h[i] += __atomic_load_n(&w->hist[i], __ATOMIC_RELAXED);
		slow += __atomic_load_n(&w->slow, __ATOMIC_RELAXED);
		m = __atomic_load_n(&w->max_ns, __ATOMIC_RELAXED);
		if (m > max)
			max = m;
	}
	for (i = 0; i < HIST_BUCKETS; i++)
		n += h[i];

	memset(lat, 0, sizeof(*lat));
	lat->writes = n;
	lat->max_ns = max;
	if (!n)
		return;
	lat->p50_ns = hist_rank(h, 0, h[0], pct_rank(n, 50));
	lat->p99_ns = hist_rank(h, 0, h[0], pct_rank(n, 99));

	/* Slow writes: the bucket holding SLOW_NS is shared with fast ones;
	 * the exact slow count tells how many of it are slow. */
	sb = hist_index(SLOW_NS);
	for (i = sb + 1; i < HIST_BUCKETS; i++)
		above += h[i];
	if (slow > n)
		slow = n;
	if (slow < above)
		slow = above;
	if (slow - above > h[sb])
		slow = above + h[sb];
	lat->slow_writes = slow;
	if (slow) {
		lat->slow_p50_ns = hist_rank(h, sb, slow - above, pct_rank(slow, 50));
		lat->slow_p99_ns = hist_rank(h, sb, slow - above, pct_rank(slow, 99));
		if (lat->slow_p50_ns < SLOW_NS)
			lat->slow_p50_ns = SLOW_NS;
		if (lat->slow_p99_ns < lat->slow_p50_ns)
			lat->slow_p99_ns = lat->slow_p50_ns;
	}
	if (lat->p50_ns > max)
		lat->p50_ns = max;
	if (lat->p99_ns > max)
		lat->p99_ns = max;
	if (lat->slow_p50_ns > max)
		lat->slow_p50_ns = max;
	if (lat->slow_p99_ns > max)
		lat->slow_p99_ns = max;
}

uint64_t rguest_writes(const struct rguest *g)
{
	uint64_t n = 0;
	unsigned int t;

	for (t = 0; t < g->nthreads; t++)
		n += __atomic_load_n(&g->w[t].writes, __ATOMIC_RELAXED);
	return n;
}

/* ------------------------------------------------------------------ */
/* Writers                                                             */
/* ------------------------------------------------------------------ */

static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n) without a division (Lemire). */
static inline uint64_t below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)xorshift(s) * n) >> 64);
}

static inline uint64_t next_block(struct rguest_writer *w,
				  enum rguest_pattern p)
{
	uint64_t b;

	switch (p) {
	case RGUEST_SEQ:
		b = w->pos;
		if (++w->pos == w->count)
			w->pos = 0;
		return w->first + b;
	case RGUEST_HOT:
		/* 90% into the hot set, 10% anywhere in the partition */
		if (below(&w->rng, 10) != 0)
			return w->hot_first + below(&w->rng, w->hot_count);
		return w->first + below(&w->rng, w->count);
	default:
		return w->first + below(&w->rng, w->count);
	}
}

/* One guest write: bump the generation (saving the instant's value
 * first, once per epoch) and then store the block's new content. */
static inline void write_block(struct rguest *g, uint64_t b)
{
	uint32_t epoch = atomic_load_explicit(&g->epoch, memory_order_relaxed);
	uint32_t gen = g->gen[b];

	if ((uint32_t)(g->snap[b] >> 32) != epoch)
		g->snap[b] = (uint64_t)epoch << 32 | gen;
	if (++gen == 0)
		gen = 1;    /* after 2^32 writes; generation 0 means "zero" */
	g->gen[b] = gen;
	guest_fill_block(g->mem + b * RGUEST_BLOCK, b, gen);
}

/* Park between two writes until the pause is lifted. true: stop. */
static bool writer_park(struct rguest *g)
{
	uint32_t c, n;
	unsigned int i;

	/* seq_cst RMW: releases this writer's stores to the pauser, and is
	 * ordered before the pauser_waiting load (Dekker with the pauser). */
	n = atomic_fetch_add(&g->parked, 1) + 1;
	if (n == atomic_load_explicit(&g->nrun_seen, memory_order_relaxed) &&
	    atomic_load(&g->pauser_waiting))
		futex(&g->parked, FUTEX_WAKE_PRIVATE, 1);

	for (i = 0;; i++) {
		c = atomic_load(&g->ctl);
		if (!(c & CTL_PAUSE) || (c & CTL_STOP))
			break;
		if (i < WRITER_SPIN) {
			cpu_relax();
			continue;
		}
		atomic_fetch_add(&g->sleepers, 1);
		futex(&g->ctl, FUTEX_WAIT_PRIVATE, c);
		atomic_fetch_sub(&g->sleepers, 1);
	}
	/*
	 * Leaving the park: the pauser of a later pause may still count us
	 * parked, which is right as long as we look at ctl again before the
	 * next write. The seq_cst RMW here and the seq_cst ctl load in the
	 * write loop pair with the pauser's ctl store and parked load.
	 */
	atomic_fetch_sub(&g->parked, 1);
	return c & CTL_STOP;
}

/*
 * With a rate, write k is due at start + k / rate. A writer that fell
 * behind (paused, faulting) does not burst to catch up beyond 5 ms of
 * writes, and never sleeps more than 100 us at once so that a pause
 * request is seen promptly. true: not yet.
 */
static bool not_due(struct rguest *g, uint64_t *due)
{
	uint64_t now = wps_now_ns(), d;

	if (*due > now) {
		d = *due - now < 100000ull ? *due - now : 100000ull;
		nanosleep(&(struct timespec){ 0, (long)d }, NULL);
		return true;
	}
	if (now - *due > 5000000ull)
		*due = now;
	*due += 1000000000ull / g->opts.rate;
	return false;
}

static void *writer_main(void *arg)
{
	struct rguest_writer *w = arg;
	struct rguest *g = w->g;
	enum rguest_pattern p = g->opts.pattern;
	uint64_t b, t0, due = wps_now_ns();

	for (;;) {
		if (atomic_load(&g->ctl)) {
			if (writer_park(g))
				break;
			continue;
		}
		if (g->opts.rate && not_due(g, &due))
			continue;   /* look at ctl again first */
		b = next_block(w, p);
		t0 = wps_now_ns();
		write_block(g, b);
		account(w, wps_now_ns() - t0);
	}
	return NULL;
}

int rguest_start(struct rguest *g)
{
	unsigned int t;
	int ret = 0;

	pthread_mutex_lock(&g->ctl_lock);
	if (g->started) {
		ret = -EBUSY;
		goto out;
	}
	g->started = true;
	if (g->opts.pattern == RGUEST_IDLE)
		goto out;   /* idle vCPUs never write: no thread needed */

	/* Publish the count before any writer can park and compare to it. */
	atomic_store(&g->nrun_seen, g->nthreads);
	for (t = 0; t < g->nthreads; t++) {
		ret = -pthread_create(&g->w[t].tid, NULL, writer_main, &g->w[t]);
		if (ret)
			break;
	}
	g->nrunning = t;
	atomic_store(&g->nrun_seen, t);
	if (ret) {
		/* Undo: stop the ones that did start. */
		atomic_fetch_or(&g->ctl, CTL_STOP);
		futex(&g->ctl, FUTEX_WAKE_PRIVATE, INT_MAX);
		while (t--)
			pthread_join(g->w[t].tid, NULL);
		atomic_fetch_and(&g->ctl, ~CTL_STOP);
		g->nrunning = 0;
		atomic_store(&g->nrun_seen, 0);
		g->started = false;
	}
out:
	pthread_mutex_unlock(&g->ctl_lock);
	return ret;
}

void rguest_stop(struct rguest *g)
{
	unsigned int t;

	pthread_mutex_lock(&g->ctl_lock);
	if (g->started) {
		atomic_fetch_or(&g->ctl, CTL_STOP);
		futex(&g->ctl, FUTEX_WAKE_PRIVATE, INT_MAX);
		for (t = 0; t < g->nrunning; t++)
			pthread_join(g->w[t].tid, NULL);
		atomic_fetch_and(&g->ctl, ~CTL_STOP);
		g->nrunning = 0;
		atomic_store(&g->nrun_seen, 0);
		g->started = false;
	}
	pthread_mutex_unlock(&g->ctl_lock);
}

/* ------------------------------------------------------------------ */
/* Pause / resume                                                      */
/* ------------------------------------------------------------------ */

static void pause_locked(struct rguest *g)
{
	uint32_t n = g->nrunning, v;
	uint64_t deadline = 0;

	if (g->depth++)
		return;
	atomic_fetch_or(&g->ctl, CTL_PAUSE);   /* seq_cst */
	for (;;) {
		v = atomic_load(&g->parked);
		if (v == n)
			break;
		/* Spin first: a writer is at most one 4 KiB store loop away. */
		if (!deadline)
			deadline = wps_now_ns() + PAUSER_SPIN_NS;
		if (wps_now_ns() < deadline) {
			cpu_relax();
			continue;
		}
		/* Then sleep; the writer that completes the count wakes us. */
		atomic_store(&g->pauser_waiting, 1);
		v = atomic_load(&g->parked);
		if (v != n)
			futex(&g->parked, FUTEX_WAIT_PRIVATE, v);
		atomic_store(&g->pauser_waiting, 0);
	}
}

static void resume_locked(struct rguest *g)
{
	if (!g->depth || --g->depth)
		return;
	atomic_fetch_and(&g->ctl, ~CTL_PAUSE);  /* seq_cst */
	/* Dekker with the writer's sleepers++ / futex wait on ctl: either we
	 * see a sleeper, or its FUTEX_WAIT sees the cleared bit. */
	if (atomic_load(&g->sleepers))
		futex(&g->ctl, FUTEX_WAKE_PRIVATE, INT_MAX);
}

/*
 * Pauses nest: each pause needs a resume, the last resume releases the
 * writers. A pause before start or after stop is immediate (no writer
 * runs) and still counts for nesting. An unbalanced resume is ignored
 * rather than failed: libwpsnap treats a failing resume() as a broken
 * guest, and there is nothing to undo.
 */
int rguest_pause(void *guest)
{
	struct rguest *g = guest;

	pthread_mutex_lock(&g->ctl_lock);
	pause_locked(g);
	pthread_mutex_unlock(&g->ctl_lock);
	return 0;
}

int rguest_resume(void *guest)
{
	struct rguest *g = guest;

	pthread_mutex_lock(&g->ctl_lock);
	resume_locked(g);
	pthread_mutex_unlock(&g->ctl_lock);
	return 0;
}

/* Pause and mark the instant: a new epoch, while every writer is parked,
 * so each block's first write from here on saves its generation. */
int rguest_freeze_pause(void *guest)
{
	struct rguest *g = guest;
	uint32_t e;

	pthread_mutex_lock(&g->ctl_lock);
	pause_locked(g);
	e = atomic_load_explicit(&g->epoch, memory_order_relaxed) + 1;
	if (!e) {
		/* 2^32 instants later: old tags could alias the new epoch. */
		memset(g->snap, 0, g->nr_blocks * sizeof(*g->snap));
		e = 1;
	}
	atomic_store_explicit(&g->epoch, e, memory_order_relaxed);
	pthread_mutex_unlock(&g->ctl_lock);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Ledger at the instant                                               */
/* ------------------------------------------------------------------ */

/*
 * Must be called while paused or stopped: gen[] and snap[] are read
 * without any lock against the writers.
 */
int rguest_ledger(struct rguest *g, struct rguest_ledger **out)
{
	struct rguest_ledger *l = NULL;
	uint32_t e;
	uint64_t b, s;
	int ret;

	pthread_mutex_lock(&g->ctl_lock);
	e = atomic_load_explicit(&g->epoch, memory_order_relaxed);
	if (!e) {
		ret = -EINVAL;
		goto out;
	}
	ret = rguest_ledger_alloc(g->nr_blocks, &l);
	if (ret)
		goto out;
	for (b = 0; b < g->nr_blocks; b++) {
		s = g->snap[b];
		l->gen[b] = (uint32_t)(s >> 32) == e ? (uint32_t)s : g->gen[b];
	}
	*out = l;
out:
	pthread_mutex_unlock(&g->ctl_lock);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Guest RAM                                                           */
/* ------------------------------------------------------------------ */

static int map_anon(struct rguest *g, bool thp)
{
	size_t len = g->size, extra = thp ? HUGE_2M : 0;
	uint8_t *p, *a;

	p = mmap(NULL, len + extra, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	a = p;
	if (thp) {
		/* THP wants 2 MiB aligned ranges: over-map, trim both ends. */
		a = (uint8_t *)(((uintptr_t)p + HUGE_2M - 1) & ~((uintptr_t)HUGE_2M - 1));
		if (a > p)
			munmap(p, (size_t)(a - p));
		if (p + len + extra > a + len)
			munmap(a + len, (size_t)(p + len + extra - (a + len)));
	}
	g->mem = a;
	/* Without THP in the kernel, NOHUGEPAGE fails and is moot; a THP
	 * guest without THP is not the guest that was asked for. */
	if (madvise(a, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) && thp)
		return -errno;
	return 0;
}

static int map_memfd(struct rguest *g, bool huge)
{
	unsigned int flags = MFD_CLOEXEC | (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
	void *p;

	g->fd = memfd_create(huge ? "wpsnap-guest-huge" : "wpsnap-guest", flags);
	if (g->fd < 0)
		return -errno;
	if (ftruncate(g->fd, (off_t)g->size))
		return huge && (errno == ENOMEM || errno == EINVAL) ? -ENOSPC : -errno;
	p = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd, 0);
	if (p == MAP_FAILED) {
		/* hugetlb reserves at mmap: ENOMEM means the pool is short */
		return huge && errno == ENOMEM ? -ENOSPC : -errno;
	}
	g->mem = p;
	return 0;
}

static void *populate_main(void *arg)
{
	struct rguest_writer *w = arg;
	struct rguest *g = w->g;
	uint64_t b;

	for (b = w->first; b < w->first + w->count; b++) {
		if (!w->sel[b / w->run_blocks])
			continue;
		g->gen[b] = 1;
		guest_fill_block(g->mem + b * RGUEST_BLOCK, b, 1);
	}
	return NULL;
}

/*
 * Write generation 1 into populate_pct of the runs, chosen by a seeded
 * shuffle so the share is exact and spread over the whole range; leave
 * the rest untouched (no page at all). One thread per partition.
 */
static int populate(struct rguest *g)
{
	unsigned int run_blocks = g->page_size > RGUEST_BLOCK ||
		g->opts.backing == RGUEST_THP ? RUN_BLOCKS_HUGE : RUN_BLOCKS_SMALL;
	uint64_t nr_runs = (g->nr_blocks + run_blocks - 1) / run_blocks;
	uint64_t k = (nr_runs * g->opts.populate_pct + 50) / 100, i, j, rng;
	uint64_t *perm = NULL;
	uint8_t *sel = NULL;
	unsigned int t, started = 0;
	int ret = -ENOMEM;

	if (!k)
		return 0;
	sel = calloc(nr_runs, 1);
	if (!sel)
		goto out;
	if (k == nr_runs) {
		memset(sel, 1, nr_runs);
	} else {
		perm = malloc(nr_runs * sizeof(*perm));
		if (!perm)
			goto out;
		for (i = 0; i < nr_runs; i++)
			perm[i] = i;
		rng = rguest_mix(g->opts.seed, 0x9090) | 1;
		for (i = 0; i < k; i++) {   /* partial Fisher-Yates */
			uint64_t tmp;

			j = i + below(&rng, nr_runs - i);
			tmp = perm[i];
			perm[i] = perm[j];
			perm[j] = tmp;
			sel[perm[i]] = 1;
		}
	}

	ret = 0;
	for (t = 0; t < g->nthreads; t++) {
		g->w[t].sel = sel;
		g->w[t].run_blocks = run_blocks;
		ret = -pthread_create(&g->w[t].tid, NULL, populate_main, &g->w[t]);
		if (ret)
			break;
		started++;
	}
	for (t = 0; t < started; t++)
		pthread_join(g->w[t].tid, NULL);
	for (t = 0; t < g->nthreads; t++)
		g->w[t].sel = NULL;
out:
	free(perm);
	free(sel);
	return ret;
}

static void guest_destroy(struct rguest *g)
{
	if (g->mem)
		munmap(g->mem, g->size);
	if (g->fd >= 0)
		close(g->fd);
	free(g->gen);
	free(g->snap);
	free(g->w);
	pthread_mutex_destroy(&g->ctl_lock);
	free(g);
}

int rguest_new(const struct rguest_opts *opts, struct rguest **out)
{
	struct rguest *g;
	uint64_t align;
	unsigned int t;
	int ret;

	if (!opts->size || !opts->threads || opts->populate_pct > 100 ||
	    (unsigned int)opts->backing > RGUEST_HUGETLB ||
	    (unsigned int)opts->pattern > RGUEST_HOT)
		return -EINVAL;
	align = opts->backing == RGUEST_HUGETLB ? HUGE_2M : RGUEST_BLOCK;
	if (opts->size > UINT64_MAX - align ||
	    (opts->size + align - 1) / RGUEST_BLOCK > UINT32_MAX)
		return -EINVAL;   /* w[0] holds the block number in 32 bits */

	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->opts = *opts;
	g->fd = -1;
	g->size = (opts->size + align - 1) & ~(align - 1);
	g->nr_blocks = g->size / RGUEST_BLOCK;
	g->page_size = opts->backing == RGUEST_HUGETLB ? HUGE_2M : RGUEST_BLOCK;
	g->nthreads = opts->threads;
	pthread_mutex_init(&g->ctl_lock, NULL);
	if (g->nthreads > g->nr_blocks) {
		ret = -EINVAL;   /* every writer needs at least one block */
		goto fail;
	}

	ret = -ENOMEM;
	g->gen = calloc(g->nr_blocks, sizeof(*g->gen));
	g->snap = calloc(g->nr_blocks, sizeof(*g->snap));
	g->w = aligned_alloc(64, g->nthreads * sizeof(*g->w));
	if (!g->gen || !g->snap || !g->w)
		goto fail;
	memset(g->w, 0, g->nthreads * sizeof(*g->w));

	for (t = 0; t < g->nthreads; t++) {
		struct rguest_writer *w = &g->w[t];
		uint64_t hot_span;

		w->g = g;
		w->idx = t;
		w->first = g->nr_blocks * t / g->nthreads;
		w->count = g->nr_blocks * (t + 1) / g->nthreads - w->first;
		w->rng = rguest_mix(opts->seed, t + 1) | 1;
		w->hot_count = w->count / 16 ? w->count / 16 : 1;
		hot_span = w->count - w->hot_count + 1;
		w->hot_first = w->first + rguest_mix(opts->seed ^ 0x407, t) % hot_span;
	}

	switch (opts->backing) {
	case RGUEST_ANON:
		ret = map_anon(g, false);
		break;
	case RGUEST_THP:
		ret = map_anon(g, true);
		break;
	case RGUEST_MEMFD:
		ret = map_memfd(g, false);
		break;
	case RGUEST_HUGETLB:
		ret = map_memfd(g, true);
		break;
	}
	if (ret)
		goto fail;

	ret = populate(g);
	if (ret)
		goto fail;
	*out = g;
	return 0;
fail:
	guest_destroy(g);
	return ret;
}

void rguest_free(struct rguest *g)
{
	if (!g)
		return;
	rguest_stop(g);
	guest_destroy(g);
}

void rguest_region(const struct rguest *g, struct wps_region *r)
{
	memset(r, 0, sizeof(*r));
	r->host_addr = (uint64_t)(uintptr_t)g->mem;
	r->size = g->size;
	r->page_size = g->page_size;
	switch (g->opts.backing) {
	case RGUEST_MEMFD:
		r->backing = WPS_BACKING_MEMFD;
		break;
	case RGUEST_HUGETLB:
		r->backing = WPS_BACKING_HUGETLB;
		break;
	default:
		r->backing = WPS_BACKING_ANON;
		break;
	}
	r->fd = g->fd;
	r->fd_offset = 0;
	r->name = "guest";
}

void *rguest_mem(const struct rguest *g)
{
	return g->mem;
}

uint64_t rguest_size(const struct rguest *g)
{
	return g->size;
}

/* ------------------------------------------------------------------ */
/* Lazy restore: adopt a ledger                                        */
/* ------------------------------------------------------------------ */

/*
 * gen[] is written only by a block's own writer, so this runs with every
 * writer parked or not started (ctl_lock serialises us with the
 * controller). snap[] needs no change: its tags belong to older epochs
 * and the next freeze_pause starts a new one.
 */
int rguest_adopt_ledger(struct rguest *g, const struct rguest_ledger *l)
{
	if (l->nr_blocks != g->nr_blocks)
		return -EINVAL;
	pthread_mutex_lock(&g->ctl_lock);
	memcpy(g->gen, l->gen, g->nr_blocks * sizeof(*g->gen));
	pthread_mutex_unlock(&g->ctl_lock);
	return 0;
}

bool rguest_backing_of(uint32_t backing, uint32_t page_size,
			  enum rguest_backing *out)
{
	switch (backing) {
	case WPS_BACKING_ANON: *out = RGUEST_ANON; return true;
	case WPS_BACKING_MEMFD: *out = RGUEST_MEMFD; return true;
	case WPS_BACKING_HUGETLB:
		*out = RGUEST_HUGETLB;
		return page_size == (2u << 20);
	default: return false;
	}
}

int rguest_parse_size(const char *s, uint64_t *out)
{
	const char *p = s;
	unsigned int dots = 0;
	double v, mul = 1;
	char *end;

	/* Digits and one '.' only: strtod would also take a sign, an
	 * exponent, "inf" and "nan". */
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p) || *p == '.'; p++)
		dots += *p == '.';
	if (dots > 1)
		return -EINVAL;
	v = strtod(s, &end);
	if (end != p)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': mul = 0x1p10; end++; break;
	case 'm': case 'M': mul = 0x1p20; end++; break;
	case 'g': case 'G': mul = 0x1p30; end++; break;
	case 't': case 'T': mul = 0x1p40; end++; break;
	default: break;
	}
	if (mul > 1 && (*end == 'i' || *end == 'I'))
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	v *= mul;
	if (*end || v >= 0x1p64)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}
