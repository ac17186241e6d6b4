/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restore (include/wpsnap/pager.h, docs/RESTORE.md): serves the
 * missing-page faults of fresh guest RAM from an image, prefetches the
 * rest in the background, and "graduates" (everything present, then
 * unregister) without ever stopping the guest.
 *
 * It owns the userfaultfd (opened or handed over), an eventfd that stops
 * the fault thread, for hugetlb a shared mapping of the guest's memfd
 * through which it fills the page cache, the per-unit state array,
 * and its threads: the fault thread (the only reader of the uffd) and
 * two prefetch threads (four on a local image: below) sharing the sweep.
 * Reads name their lane of the image source (stream/img_reader_int.h):
 * faults the FAULT lane, which a remote (NBD) image serves on a
 * connection of its own, prefetch the BULK lane. A local image's bulk reads bypass the page cache (O_DIRECT, a
 * descriptor of the pager's own), are made by four prefetch threads and
 * pass the I/O gate, which keeps at most two of them at the disk and one
 * while a fault's read is out, so that a fault never queues behind much
 * bulk I/O.
 *
 * What the kernel (6.x) accepts, and therefore how each backing is filled:
 *  - ANON: register MODE_MISSING. A fault gets UFFDIO_COPY of verified
 *    image bytes; an absent block gets UFFDIO_ZEROPAGE (a read) or a COPY
 *    of zeros (a write: saves the COW fault on the zero page).
 *  - MEMFD (shmem) and HUGETLB: register MODE_MISSING | MODE_MINOR (needs
 *    MISSING_SHMEM + MINOR_SHMEM, or the HUGETLBFS pair). We never write
 *    into the guest's mapping and WAKE: the bytes go into the file's page
 *    cache first (pwrite to the memfd for shmem; a memcpy through our own
 *    MAP_SHARED mapping for hugetlbfs, which has no write(2)), invisible
 *    to the guest, then UFFDIO_CONTINUE installs the guest's PTE for that
 *    page and wakes the range. A hole
 *    raises a MISSING fault, a page already in the cache a MINOR one; both
 *    are served the same way (CONTINUE needs VM_UFFD_MINOR on the VMA,
 *    hence both modes). An absent block is a hole: fallocate() it (a
 *    zeroed page cache page), then CONTINUE. We fill the file, not the
 *    guest's address space, so a later daemon can do the same with another process's memfd and
 *    uffd: dst->host_addr is only ever an ioctl argument.
 *
 * Unit state (one byte per page of the region's page size) changes only
 * under pg->lock, which is also held across every install ioctl; that is
 * what makes a REMOVE event (marking units DROPPED, read by the fault
 * thread under the lock) exclusive with an install of stale image data
 * into the same range. The fault thread has priority: it bumps
 * fault_waiting before taking the lock, and prefetch steps aside between
 * two 64 KiB windows while that is non-zero. The fault thread does not
 * hold the lock across its own read of the image (installs re-check
 * every unit's state under the lock afterwards).
 *
 * Working sets (include/wpsnap/wset.h): the prefetch threads take the
 * caller's ordered list (opts.first) before the sweep, claiming its ranges
 * in turn; and the fault thread records which blocks faulted, in order
 * (first fault per unit, coalesced, bounded), so that the caller can store
 * it for the next restore of the same image (wps_pager_fault_order).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/pager.h>

#include "base/clock.h"
#include "base/log.h"
#include "stream/img_reader_int.h"
#include "wp/compat.h"
#include "wp/histo.h"
#include "wp/uffd.h"

/* UFFDIO_POISON (6.6): not in Debian 12's 6.1 headers. */
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
	struct uffdio_range range;
	__u64 mode;
	__s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#define PAGER_CHUNK_DEFAULT (2ull << 20)
#define PAGER_MSGS 64u
/* Prefetch threads sharing the address-order sweep chunk by chunk: while
 * one installs its chunk the other's read is in flight, so I/O (a disk,
 * or an NBD round trip) overlaps installs. A local image read with
 * O_DIRECT gets more of them, so that the gate below always has reads
 * waiting while the others verify and install (docs/PERFORMANCE.md,
 * "Lazy restore: full population against eager"). */
#define PAGER_PREFETCHERS 2u
#define PAGER_PREFETCHERS_DIRECT 4u
/* Bulk reads of a local image in flight at once (the I/O gate), and
 * their size: the disk's bandwidth with little in front of a fault. */
#define PAGER_BULK_INFLIGHT 2u
#define PAGER_CHUNK_DIRECT (512ull << 10)
/* Fault order kept for wps_pager_fault_order: 16 bytes per range, at
 * most 1 MiB; faults beyond are served, not recorded. */
#define PAGER_ORDER_MAX 65536u
/* The working set (opts.first) is prefetched up to this fraction of the
 * region's windows; the sweep does the rest (cap_first). */
#define PAGER_FIRST_FRACTION 4u

enum unit_state {
	U_NEED_DATA = 0,    /* image has data for it; not installed yet */
	U_NEED_ZERO,        /* absent in the image: reads as zero */
	U_DONE,             /* installed (data or zero) */
	U_DROPPED,          /* guest discarded it (REMOVE/UNMAP): zero */
	U_BAD,              /* its group failed verification: never wake */
};

struct pending_fault {
	uint64_t addr;
	uint64_t flags;
	uint64_t t;         /* when the message was read */
};

struct wps_pager {
	struct wps_ctx *ctx;
	struct wps_image *img;
	unsigned int r;
	struct wps_region dst;
	uint64_t unit;          /* page size of dst */
	uint64_t nr_units;
	uint64_t nr_blocks;
	uint64_t group_bytes;
	uint64_t nr_groups;
	uint64_t win;           /* bytes read per fault: max(group, unit) */
	uint64_t chunk;         /* bytes read per prefetch step */
	bool shared;            /* memfd/hugetlb: fill the file, CONTINUE */
	uint8_t *state;         /* enum unit_state per unit, owned */
	uint8_t *map;           /* hugetlb: our MAP_SHARED view of dst.fd */
	uint8_t *zero;          /* one unit of zeros (anon write faults) */
	uint8_t *fault_buf;     /* win bytes, fault thread only */
	int uffd;               /* owned */
	int dio_fd;             /* local image reopened O_DIRECT, or -1 */
	int stop_fd;            /* eventfd, owned */
	uint64_t features;
	struct wps_pager_range *first;
	unsigned int nr_first;
	atomic_uint first_next;  /* next range of first[] to claim */
	bool no_prefetch;

	pthread_mutex_t lock;   /* state[], installs, stats below */
	atomic_uint fault_waiting;
	/* the I/O gate (local image): bulk reads in flight, and faults
	 * reading, under gate_lock */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	unsigned int bulk_inflight, fault_reads;
	atomic_bool stop;
	pthread_t fault_tid, prefetch_tid[PAGER_PREFETCHERS_DIRECT];
	unsigned int nr_prefetchers;    /* running prefetch threads */
	atomic_uint_fast64_t sweep_next; /* next chunk of the shared sweep */
	bool fault_running;
	bool started, registered, graduated;

	/* fault thread's queue of faults read but not yet served */
	struct pending_fault *q;
	size_t qn, qcap;

	/* fault order (lock): blocks whose first fault needed image data */
	struct wps_pager_range *order;
	unsigned int nr_order, order_cap;
	bool order_full;

	/* stats (lock) */
	struct wps_histo hist;
	uint64_t faults, zero_faults, fault_bytes, prefetch_bytes, first_bytes;
	uint64_t removed_bytes, events, data_units, remaining;
	uint64_t t_start, start_ns, full_ns, graduate_ns;
	int error;
	uint64_t bad_offset, bad_addr;
};

static inline uint8_t ust(const struct wps_pager *pg, uint64_t u)
{
	return __atomic_load_n(&pg->state[u], __ATOMIC_RELAXED);
}

/* Lock held. Every transition goes through here so that remaining (data
 * not yet in the guest) and the full-population instant stay exact. */
static void set_state(struct wps_pager *pg, uint64_t u, uint8_t s)
{
	if (ust(pg, u) == U_NEED_DATA && s != U_BAD) {
		if (!--pg->remaining)
			pg->full_ns = wps_now_ns() - pg->t_start;
	} else if (ust(pg, u) == U_BAD && s != U_BAD) {
		/* The guest dropped a damaged page: it is no longer owed. */
		if (!--pg->remaining)
			pg->full_ns = wps_now_ns() - pg->t_start;
	}
	__atomic_store_n(&pg->state[u], s, __ATOMIC_RELAXED);
}

static inline uint64_t unit_addr(const struct wps_pager *pg, uint64_t u)
{
	return pg->dst.host_addr + u * pg->unit;
}

/* First error wins; the rest is logged by whoever saw it. */
static void set_error(struct wps_pager *pg, int err)
{
	if (!pg->error)
		pg->error = err;
}

/* ------------------------------------------------------------------ */
/* ioctls                                                              */
/* ------------------------------------------------------------------ */

/*
 * Install units [u, e): src holds their bytes (anon) or they already sit
 * in the page cache (shared). Partial progress and EEXIST (already
 * present: a race with the other installer, or a page we zero-filled) are
 * absorbed unit by unit; every unit that ends up present is U_DONE.
 * -EAGAIN: the mm is changing under an unread event; the caller lets the
 * fault thread read it and retries. Lock held.
 */
static int install_run(struct wps_pager *pg, uint64_t u, uint64_t e,
		       const uint8_t *src, uint64_t *bytes)
{
	uint64_t i;

	while (u < e) {
		uint64_t len = (e - u) * pg->unit;
		int64_t done;
		int ret;

		if (pg->shared) {
			struct uffdio_continue c = {
				.range = { .start = unit_addr(pg, u), .len = len },
			};

			ret = ioctl(pg->uffd, UFFDIO_CONTINUE, &c) ? -errno : 0;
			done = ret ? c.mapped : (int64_t)len;
		} else {
			struct uffdio_copy c = {
				.dst = unit_addr(pg, u),
				.src = (uint64_t)(uintptr_t)src,
				.len = len,
			};

			ret = ioctl(pg->uffd, UFFDIO_COPY, &c) ? -errno : 0;
			done = ret ? c.copy : (int64_t)len;
		}
		if (done > 0) {
			uint64_t n = (uint64_t)done / pg->unit;

			for (i = 0; i < n; i++)
				set_state(pg, u + i, U_DONE);
			*bytes += n * pg->unit;
			u += n;
			src += n * pg->unit;
			continue;
		}
		if (ret == -EEXIST || done == -EEXIST) {
			set_state(pg, u, U_DONE);
			u++;
			src += pg->unit;
			continue;
		}
		return ret ? ret : (int)done;
	}
	return 0;
}

static int uffd_wake(struct wps_pager *pg, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };

	return ioctl(pg->uffd, UFFDIO_WAKE, &r) ? -errno : 0;
}

/*
 * Serve unit u with zeros (absent in the image, or dropped by the guest,
 * or a fault on a unit we believe present). EEXIST: it is present after
 * all; just wake. Lock held.
 */
static int serve_zero(struct wps_pager *pg, uint64_t u, uint64_t flags)
{
	uint64_t addr = unit_addr(pg, u);
	int ret;

	if (pg->shared) {
		struct uffdio_continue c = {
			.range = { .start = addr, .len = pg->unit },
		};

		/* MINOR: the page cache has it (kept across a DONTNEED of
		 * a shared mapping): map what is there. MISSING: a hole;
		 * allocate a zeroed page in the file first. */
		if (!(flags & UFFD_PAGEFAULT_FLAG_MINOR) &&
		    fallocate(pg->dst.fd, 0, (off_t)(pg->dst.fd_offset + u * pg->unit),
			      (off_t)pg->unit)) {
			ret = -errno;
			wps_err(pg->ctx, "lazy restore: cannot allocate the "
				"zero page at 0x%llx in the memfd: %s",
				(unsigned long long)addr, strerror(errno));
			return ret;
		}
		ret = ioctl(pg->uffd, UFFDIO_CONTINUE, &c) ? -errno : 0;
	} else if (flags & UFFD_PAGEFAULT_FLAG_WRITE) {
		struct uffdio_copy c = {
			.dst = addr, .src = (uint64_t)(uintptr_t)pg->zero,
			.len = pg->unit,
		};

		ret = ioctl(pg->uffd, UFFDIO_COPY, &c) ? -errno : 0;
	} else {
		struct uffdio_zeropage z = {
			.range = { .start = addr, .len = pg->unit },
		};

		ret = ioctl(pg->uffd, UFFDIO_ZEROPAGE, &z) ? -errno : 0;
	}
	if (ret == -EEXIST)
		ret = uffd_wake(pg, addr, pg->unit);
	if (!ret && ust(pg, u) != U_DONE)
		set_state(pg, u, U_DONE);
	return ret;
}

/* ------------------------------------------------------------------ */
/* windows                                                             */
/* ------------------------------------------------------------------ */

/* Units of window w: [*u0, *u1). */
static void window_units(const struct wps_pager *pg, uint64_t w, uint64_t *u0,
			 uint64_t *u1)
{
	*u0 = w * (pg->win / pg->unit);
	*u1 = *u0 + pg->win / pg->unit;
	if (*u1 > pg->nr_units)
		*u1 = pg->nr_units;
}

static uint64_t nr_windows(const struct wps_pager *pg)
{
	return (pg->nr_units * pg->unit + pg->win - 1) / pg->win;
}

static bool window_needed(const struct wps_pager *pg, uint64_t w)
{
	uint64_t u, u0, u1;

	window_units(pg, w, &u0, &u1);
	for (u = u0; u < u1; u++)
		if (ust(pg, u) == U_NEED_DATA)
			return true;
	return false;
}

/*
 * Put the bytes of units [s, e) into the guest's file (page cache), where
 * the guest cannot see them until CONTINUE maps them. shmem: pwrite, which
 * allocates the pages without a fault per page in a mapping; hugetlbfs
 * has no write(2): memcpy through our shared mapping (one fault per 2 MiB
 * page).
 */
static int fill_file(struct wps_pager *pg, uint64_t s, uint64_t e,
		     const uint8_t *src)
{
	uint64_t off = pg->dst.fd_offset + s * pg->unit, len = (e - s) * pg->unit;
	ssize_t n;

	if (pg->dst.backing == WPS_BACKING_HUGETLB) {
		memcpy(pg->map + s * pg->unit, src, len);
		return 0;
	}
	while (len) {
		n = pwrite(pg->dst.fd, src, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			wps_err(pg->ctx, "lazy restore: writing %llu bytes into "
				"the guest's memfd at offset %llu: %s",
				(unsigned long long)len, (unsigned long long)off,
				strerror(-err));
			return err;
		}
		src += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/*
 * Install the still-needed units of window w from its verified bytes
 * data. For a shared backing the bytes go into the page cache through
 * our mapping first, only for units still needed: a unit the guest owns
 * now (DONE) or dropped must not be overwritten. Lock held.
 */
static int install_window(struct wps_pager *pg, uint64_t w,
			  const uint8_t *data, uint64_t *bytes)
{
	uint64_t u, u0, u1, s;
	int ret;

	window_units(pg, w, &u0, &u1);
	for (u = u0; u < u1;) {
		if (ust(pg, u) != U_NEED_DATA) {
			u++;
			continue;
		}
		for (s = u; u < u1 && ust(pg, u) == U_NEED_DATA; u++)
			;
		if (pg->shared) {
			ret = fill_file(pg, s, u, data + (s - u0) * pg->unit);
			if (ret)
				return ret;
		}
		ret = install_run(pg, s, u, data + (s - u0) * pg->unit, bytes);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * Group g failed verification (or could not be read): its units are
 * never delivered. Faults on them stay blocked; the pager is failed so
 * that graduate and stats tell the VMM to stop the guest. Lock held.
 */
static void fail_group(struct wps_pager *pg, uint64_t g, int err)
{
	uint64_t s = g * pg->group_bytes, e = s + pg->group_bytes;
	uint64_t u;

	for (u = s / pg->unit; u * pg->unit < e && u < pg->nr_units; u++)
		if (ust(pg, u) == U_NEED_DATA)
			set_state(pg, u, U_BAD);
	if (!pg->error) {
		pg->bad_offset = wps_image_group_offset(pg->img, pg->r, g);
		pg->bad_addr = pg->dst.host_addr + s;
	}
	set_error(pg, err);
	wps_err(pg->ctx, "lazy restore: region %u: %s in the group at image "
		"offset %llu (guest 0x%llx..0x%llx): not delivered; threads "
		"touching it stay blocked, stop the guest",
		pg->r, err == -EBADMSG ? "damaged data" : strerror(-err),
		(unsigned long long)wps_image_group_offset(pg->img, pg->r, g),
		(unsigned long long)(pg->dst.host_addr + s),
		(unsigned long long)(pg->dst.host_addr + e));
}

/*
 * The I/O gate of a local image. Its disk gives its full bandwidth with
 * one large read in flight, and serves a small read queued behind many
 * large ones tens of milliseconds late (docs/PERFORMANCE.md, "Lazy
 * restore: full population against eager"). So bulk reads go out at most
 * PAGER_BULK_INFLIGHT at a time, and none starts while a fault's read
 * is out: a fault's read waits for at most what was already in flight.
 */
static void gate_fault(struct wps_pager *pg, int d)
{
	pthread_mutex_lock(&pg->gate_lock);
	pg->fault_reads += (unsigned int)d;
	if (!pg->fault_reads)
		pthread_cond_broadcast(&pg->gate_cond);
	pthread_mutex_unlock(&pg->gate_lock);
}

/* Enter (wait for a slot) or leave the gate with one bulk read. */
static void gate_bulk(struct wps_pager *pg, bool enter)
{
	pthread_mutex_lock(&pg->gate_lock);
	if (enter) {
		while (pg->bulk_inflight >=
		       (pg->fault_reads ? 1u : PAGER_BULK_INFLIGHT))
			pthread_cond_wait(&pg->gate_cond, &pg->gate_lock);
		pg->bulk_inflight++;
	} else {
		pg->bulk_inflight--;
		pthread_cond_broadcast(&pg->gate_cond);
	}
	pthread_mutex_unlock(&pg->gate_lock);
}

/*
 * A bulk read of groups [g0, g0 + ng) of a local image: their stored
 * bytes (holes included) with O_DIRECT, no page cache copy. 0 when all
 * arrived. -EAGAIN when O_DIRECT could not do it but a buffered read may
 * (EINVAL: an alignment the file system wants; a short read, at the end
 * of a truncated file): the caller reads them again buffered, which
 * names what is wrong. Any other error is the disk's, and is returned
 * (logged): reading again buffered would hide a failing disk.
 */
static int read_direct(struct wps_pager *pg, uint64_t g0, uint64_t ng,
		       uint8_t *buf)
{
	uint64_t bpg = pg->group_bytes / WPS_IMG_BLOCK_SIZE, b1 = (g0 + ng) * bpg;
	uint64_t len = ((b1 < pg->nr_blocks ? b1 : pg->nr_blocks) - g0 * bpg) *
		       WPS_IMG_BLOCK_SIZE;
	off_t off = (off_t)wps_image_group_offset(pg->img, pg->r, g0);
	ssize_t n;
	int err;

	gate_bulk(pg, true);
	do
		n = pread(pg->dio_fd, buf, len, off);
	while (n < 0 && errno == EINTR);
	err = errno;
	gate_bulk(pg, false);
	if (n == (ssize_t)len)
		return 0;
	if (n >= 0 || err == EINVAL)
		return -EAGAIN;
	wps_err(pg->ctx, "lazy restore: reading %s at offset %lld (%llu "
		"bytes, O_DIRECT): %s", wps_image_source(pg->img)->name,
		(long long)off, (unsigned long long)len, strerror(err));
	return -err;
}

/* Read windows [w, w + n) into buf on the given lane (faults: the fault
 * lane, whose NBD connection nothing else uses; bulk reads of a local
 * image go through read_direct). Returns the number of leading windows
 * that are good (== n on success); a bad group fails its window. */
static uint64_t read_windows(struct wps_pager *pg, enum wps_img_lane lane,
			     uint64_t w, uint64_t n, uint8_t *buf, int *err,
			     uint64_t *bad_group)
{
	uint64_t gpw = pg->win / pg->group_bytes;
	uint64_t g0 = w * gpw, ng = n * gpw;

	if (ng > pg->nr_groups - g0)
		ng = pg->nr_groups - g0;
	memset(buf + ng * pg->group_bytes, 0, (n * gpw - ng) * pg->group_bytes);
	*err = lane == WPS_IMG_LANE_BULK && pg->dio_fd >= 0 ?
	       read_direct(pg, g0, ng, buf) : -EAGAIN;
	if (!*err)
		*err = wps_image_check_groups(pg->img, pg->r, g0, ng, buf,
					      bad_group);
	else if (*err == -EAGAIN)
		*err = wps_image_read_groups_lane(pg->img, lane, pg->r, g0,
						  ng, buf, bad_group);
	if (!*err)
		return n;
	if (*err != -EBADMSG)
		*bad_group = g0;
	return (*bad_group - g0) / gpw;
}

/* ------------------------------------------------------------------ */
/* fault thread                                                        */
/* ------------------------------------------------------------------ */

/* Lock held. Units entirely inside [start, end) were discarded by the
 * guest (MADV_DONTNEED/REMOVE) or unmapped: never populate them from the
 * image again; a later fault gets zeros (see serve_zero). */
static void drop_range(struct wps_pager *pg, uint64_t start, uint64_t end)
{
	uint64_t base = pg->dst.host_addr, lim = base + pg->dst.size, u, ue;

	pg->events++;
	if (end <= base || start >= lim)
		return;
	if (start < base)
		start = base;
	if (end > lim)
		end = lim;
	u = (start - base + pg->unit - 1) / pg->unit;
	ue = (end - base) / pg->unit;
	for (; u < ue; u++) {
		if (ust(pg, u) == U_NEED_DATA)
			pg->removed_bytes += pg->unit;
		set_state(pg, u, U_DROPPED);
	}
}

static int queue_fault(struct wps_pager *pg, uint64_t addr, uint64_t flags,
		       uint64_t t)
{
	if (pg->qn == pg->qcap) {
		size_t cap = pg->qcap ? pg->qcap * 2 : 256;
		struct pending_fault *q = realloc(pg->q, cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		pg->q = q;
		pg->qcap = cap;
	}
	pg->q[pg->qn++] = (struct pending_fault){ addr, flags, t };
	return 0;
}

/* Read every message available (the fd is non-blocking): events are
 * applied at once, faults queued. Fault thread, lock held. */
static int drain(struct wps_pager *pg)
{
	struct uffd_msg msg[PAGER_MSGS];
	ssize_t n;
	int i, ret;

	for (;;) {
		n = read(pg->uffd, msg, sizeof(msg));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : -errno;
		}
		for (i = 0; i < (int)(n / (ssize_t)sizeof(msg[0])); i++) {
			uint64_t t = wps_now_ns();

			switch (msg[i].event) {
			case UFFD_EVENT_PAGEFAULT:
				ret = queue_fault(pg, msg[i].arg.pagefault.address,
						  msg[i].arg.pagefault.flags, t);
				if (ret)
					return ret;
				break;
			case UFFD_EVENT_REMOVE:
				drop_range(pg, msg[i].arg.remove.start,
					   msg[i].arg.remove.end);
				break;
			case UFFD_EVENT_UNMAP:
				drop_range(pg, msg[i].arg.remove.start,
					   msg[i].arg.remove.end);
				break;
			default:
				break;
			}
		}
	}
}

/*
 * Unit u faulted and needed image data: append its blocks to the fault
 * order (merged with the last range when it continues it). A unit needs
 * data at most once, so this is the first fault of each block. Bounded:
 * past PAGER_ORDER_MAX ranges the order is only a prefix. Lock held.
 */
static void note_fault(struct wps_pager *pg, uint64_t u)
{
	uint64_t bpu = pg->unit / WPS_IMG_BLOCK_SIZE, b = u * bpu;
	struct wps_pager_range *last;

	last = pg->nr_order ? &pg->order[pg->nr_order - 1] : NULL;
	if (last && last->block + last->count == b) {
		last->count += bpu;
		return;
	}
	if (pg->nr_order == pg->order_cap) {
		unsigned int cap = pg->order_cap ? pg->order_cap * 2 : 256;
		struct wps_pager_range *o;

		if (pg->order_cap >= PAGER_ORDER_MAX) {
			pg->order_full = true;
			return;
		}
		o = realloc(pg->order, cap * sizeof(*o));
		if (!o) {
			pg->order_full = true;
			return;
		}
		pg->order = o;
		pg->order_cap = cap;
	}
	pg->order[pg->nr_order++] = (struct wps_pager_range){ b, bpu };
}

/* The fault thread takes the lock ahead of prefetch (yield_to_faults). */
static void fault_lock(struct wps_pager *pg)
{
	atomic_fetch_add(&pg->fault_waiting, 1);
	pthread_mutex_lock(&pg->lock);
}

static void fault_unlock(struct wps_pager *pg)
{
	pthread_mutex_unlock(&pg->lock);
	atomic_fetch_sub(&pg->fault_waiting, 1);
}

/*
 * Fault thread, lock held. The window's read happens without the lock
 * (and without fault_waiting): prefetch installs go on meanwhile instead
 * of spinning behind a disk read, and install_window re-checks every
 * unit afterwards. Only this thread reads the uffd, so no event is
 * consumed while it reads. pf is copied: drain may move the queue.
 */
static int serve_fault(struct wps_pager *pg, const struct pending_fault *pf)
{
	const struct pending_fault fault = *pf, *f = &fault;
	uint64_t base = pg->dst.host_addr, u, w, bad = 0, bytes = 0;
	uint64_t good;
	int ret = 0;

	/* After graduation's unregister the thread refaults normally. */
	if (!pg->registered || f->addr < base || f->addr >= base + pg->dst.size)
		return 0;
	u = (f->addr - base) / pg->unit;
	for (;;) {
		switch (ust(pg, u)) {
		case U_BAD:
			/* Never wrong data: the thread stays blocked. */
			return 0;
		case U_NEED_DATA:
			w = u * pg->unit / pg->win;
			fault_unlock(pg);
			gate_fault(pg, 1);
			good = read_windows(pg, WPS_IMG_LANE_FAULT, w, 1,
					    pg->fault_buf, &ret, &bad);
			gate_fault(pg, -1);
			fault_lock(pg);
			if (good != 1) {
				fail_group(pg, bad, ret);
				return 0;
			}
			ret = install_window(pg, w, pg->fault_buf, &bytes);
			pg->fault_bytes += bytes;
			if (!ret)
				ret = uffd_wake(pg, unit_addr(pg, u), pg->unit);
			if (!ret)
				note_fault(pg, u);
			break;
		default:
			ret = serve_zero(pg, u, f->flags);
			if (!ret)
				pg->zero_faults++;
			break;
		}
		if (ret != -EAGAIN)
			break;
		/* An event is pending: read it, then try again. */
		ret = drain(pg);
		if (ret)
			break;
	}
	if (ret == -ENOENT) {
		/* No registered VMA there any more (unmapped, or woken by
		 * graduation's unregister): nobody waits on us. */
		return 0;
	}
	if (ret) {
		set_error(pg, ret);
		wps_err(pg->ctx, "lazy restore: cannot serve the fault at "
			"0x%llx: %s", (unsigned long long)f->addr,
			strerror(-ret));
		return ret;
	}
	pg->faults++;
	wps_histo_add(&pg->hist, wps_now_ns() - f->t);
	return 0;
}

static void *fault_main(void *arg)
{
	struct wps_pager *pg = arg;
	struct pollfd pfd[2] = {
		{ .fd = pg->uffd, .events = POLLIN },
		{ .fd = pg->stop_fd, .events = POLLIN },
	};
	size_t i;
	int ret;

	while (!atomic_load(&pg->stop)) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto fail;
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & (POLLERR | POLLHUP)) {
			ret = -EPIPE;
			goto fail;
		}
		fault_lock(pg);
		ret = drain(pg);
		if (ret)
			set_error(pg, ret);
		/* serve_fault may drain (and so append) while we walk. */
		for (i = 0; i < pg->qn; i++)
			serve_fault(pg, &pg->q[i]);
		pg->qn = 0;
		fault_unlock(pg);
	}
	return NULL;
fail:
	pthread_mutex_lock(&pg->lock);
	set_error(pg, ret);
	pthread_mutex_unlock(&pg->lock);
	wps_err(pg->ctx, "lazy restore: fault thread stops: %s", strerror(-ret));
	return NULL;
}

/* ------------------------------------------------------------------ */
/* prefetch                                                            */
/* ------------------------------------------------------------------ */

/* Faults first: step aside while the fault thread wants the lock. */
static void yield_to_faults(struct wps_pager *pg)
{
	while (atomic_load_explicit(&pg->fault_waiting, memory_order_acquire) &&
	       !atomic_load(&pg->stop))
		sched_yield();
}

/* Install window w from data, retrying while an event is pending. first:
 * it belongs to the working-set list (counted apart in the stats). */
static int prefetch_window(struct wps_pager *pg, uint64_t w,
			   const uint8_t *data, bool first)
{
	uint64_t bytes = 0;
	int ret;

	for (;;) {
		yield_to_faults(pg);
		pthread_mutex_lock(&pg->lock);
		ret = install_window(pg, w, data, &bytes);
		pg->prefetch_bytes += bytes;
		if (first)
			pg->first_bytes += bytes;
		bytes = 0;
		pthread_mutex_unlock(&pg->lock);
		if (ret != -EAGAIN || atomic_load(&pg->stop))
			return ret == -EAGAIN ? 0 : ret;
		sched_yield();  /* the fault thread reads the event */
	}
}

/*
 * Install windows [w, w + good) of the n read into buf; when good < n,
 * window w + good holds the group that failed (bad, err): fail it, the
 * walk resumes after it. Returns 0 or the first hard install error.
 */
static int prefetch_install(struct wps_pager *pg, uint64_t w, uint64_t n,
			    uint64_t good, const uint8_t *buf, int err,
			    uint64_t bad, bool first)
{
	uint64_t i;
	int ret;

	for (i = 0; i < good; i++) {
		ret = prefetch_window(pg, w + i, buf + i * pg->win, first);
		if (ret) {
			pthread_mutex_lock(&pg->lock);
			set_error(pg, ret);
			pthread_mutex_unlock(&pg->lock);
			wps_err(pg->ctx, "lazy restore: prefetch at 0x%llx "
				"failed: %s", (unsigned long long)
				(pg->dst.host_addr + (w + i) * pg->win),
				strerror(-ret));
			return ret;
		}
	}
	if (good < n) {
		pthread_mutex_lock(&pg->lock);
		fail_group(pg, bad, err);
		pthread_mutex_unlock(&pg->lock);
	}
	return 0;
}

/* Populate every needed unit of windows [w, we) in large sequential
 * reads, one at a time (the working set, graduation's pass, a remote
 * image, a file without O_DIRECT). Returns 0 or the first hard error
 * (damaged groups are recorded by fail_group and skipped, not
 * returned). */
static int prefetch_span(struct wps_pager *pg, uint64_t w, uint64_t we,
			 uint8_t *buf, bool first)
{
	uint64_t per = pg->chunk / pg->win, n, good, bad = 0;
	int err, ret;

	while (w < we && !atomic_load(&pg->stop)) {
		while (w < we && !window_needed(pg, w))
			w++;
		if (w >= we)
			break;
		n = we - w < per ? we - w : per;
		good = read_windows(pg, WPS_IMG_LANE_BULK, w, n, buf, &err,
				    &bad);
		ret = prefetch_install(pg, w, n, good, buf, err, bad, first);
		if (ret)
			return ret;
		w += good < n ? good + 1 : good;    /* after a damaged one */
	}
	return 0;
}

/* Prefetch working-set range i (opts.first[i]), window-aligned. */
static int prefetch_first(struct wps_pager *pg, unsigned int i, uint8_t *buf)
{
	uint64_t nw = nr_windows(pg), bpw = pg->win / WPS_IMG_BLOCK_SIZE;
	uint64_t s = pg->first[i].block / bpw;
	uint64_t e = pg->first[i].block + pg->first[i].count;

	e = e < pg->first[i].block ? nw : (e + bpw - 1) / bpw;
	return prefetch_span(pg, s < nw ? s : nw, e < nw ? e : nw, buf, true);
}

/* Graduation's pass: the working-set ranges the threads left, then the
 * whole region in address order. */
static int prefetch_all(struct wps_pager *pg)
{
	uint8_t *buf;
	unsigned int i;
	int ret = 0;

	buf = aligned_alloc(4096, pg->chunk);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < pg->nr_first && !ret; i++)
		ret = prefetch_first(pg, i, buf);
	if (!ret)
		ret = prefetch_span(pg, 0, nr_windows(pg), buf, false);
	free(buf);
	return ret;
}

/*
 * The background prefetch: the working-set ranges, then the address-order
 * sweep. The threads claim both in turn (a range of first[], then a chunk
 * of the sweep), so the working set arrives with both threads' I/O and
 * installs overlapping, in the caller's order.
 * Graduation's own pass (prefetch_all) walks everything again, so a
 * chunk a failed thread left is not lost.
 */
struct prefetcher {
	struct wps_pager *pg;
	unsigned int id;
};

static void *prefetch_main(void *arg)
{
	struct prefetcher *pf = arg;
	struct wps_pager *pg = pf->pg;
	uint64_t nw = nr_windows(pg), per = pg->chunk / pg->win, c;
	unsigned int i;
	uint8_t *buf;
	int ret = 0;

	buf = aligned_alloc(4096, pg->chunk);
	if (!buf)
		goto out;
	while (!ret && !atomic_load(&pg->stop)) {
		i = atomic_fetch_add(&pg->first_next, 1);
		if (i >= pg->nr_first)
			break;
		ret = prefetch_first(pg, i, buf);
	}
	while (!ret && !atomic_load(&pg->stop)) {
		c = atomic_fetch_add(&pg->sweep_next, 1);
		if (c >= (nw + per - 1) / per)
			break;
		ret = prefetch_span(pg, c * per,
				    (c + 1) * per < nw ? (c + 1) * per : nw,
				    buf, false);
	}
	free(buf);
out:
	free(pf);
	return NULL;
}

/*
 * Keep the working set to the ranges whose windows fit in a 1/PAGER_FIRST_
 * FRACTION of the region, in order. Prefetching it costs a read per range
 * (one 64 KiB window for a scattered set); once it spans most of memory
 * its order buys little and the sweep's 2 MiB reads (pipelined 512 KiB
 * pieces over NBD) fill memory faster. A snapshot under random writers
 * records nearly every window as written, which is where this bites.
 */
static int cap_first(struct wps_pager *pg)
{
	uint64_t nw = nr_windows(pg), bpw = pg->win / WPS_IMG_BLOCK_SIZE;
	uint64_t budget = nw / PAGER_FIRST_FRACTION, used = 0, w, e;
	uint8_t *seen;
	unsigned int i;

	seen = calloc((nw + 7) / 8, 1);
	if (!seen)
		return -ENOMEM;
	for (i = 0; i < pg->nr_first && used <= budget; i++) {
		w = pg->first[i].block / bpw;
		e = pg->first[i].block + pg->first[i].count;
		e = e < pg->first[i].block ? nw : (e + bpw - 1) / bpw;
		for (; w < e && w < nw; w++) {
			used += !(seen[w / 8] >> (w % 8) & 1);
			seen[w / 8] |= (uint8_t)(1u << (w % 8));
		}
	}
	if (i < pg->nr_first)
		wps_info(pg->ctx, "lazy restore: working set of %u ranges "
			 "capped to the first %u (1/%u of the region)",
			 pg->nr_first, i, PAGER_FIRST_FRACTION);
	pg->nr_first = i;
	free(seen);
	return 0;
}

/* Start the prefetch threads; 0 if at least one runs. */
static int start_prefetchers(struct wps_pager *pg)
{
	unsigned int i;
	int ret = 0;

	atomic_init(&pg->sweep_next, 0);
	atomic_init(&pg->first_next, 0);
	for (i = 0; i < (pg->dio_fd >= 0 ? PAGER_PREFETCHERS_DIRECT
					  : PAGER_PREFETCHERS); i++) {
		struct prefetcher *pf = malloc(sizeof(*pf));

		if (!pf) {
			ret = -ENOMEM;
			break;
		}
		pf->pg = pg;
		pf->id = i;
		ret = -pthread_create(&pg->prefetch_tid[pg->nr_prefetchers],
				      NULL, prefetch_main, pf);
		if (ret) {
			free(pf);
			break;
		}
		pg->nr_prefetchers++;
	}
	return pg->nr_prefetchers ? 0 : ret;
}

static void join_prefetchers(struct wps_pager *pg)
{
	while (pg->nr_prefetchers)
		pthread_join(pg->prefetch_tid[--pg->nr_prefetchers], NULL);
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

static uint64_t backing_need(uint32_t backing)
{
	switch (backing) {
	case WPS_BACKING_MEMFD:
		return UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM;
	case WPS_BACKING_HUGETLB:
		return UFFD_FEATURE_MISSING_HUGETLBFS |
		       UFFD_FEATURE_MINOR_HUGETLBFS;
	default:
		return 0;
	}
}

/*
 * A local image is read by the sweep with O_DIRECT (read_direct): the
 * same open file, reopened through /proc so that it cannot be another
 * file by now, in a description of its own (the fault lane keeps its
 * buffered one). Not possible (a remote image, a filesystem without
 * O_DIRECT, no /proc): dio_fd stays -1 and the sweep reads buffered.
 */
static void open_direct(struct wps_pager *pg)
{
	struct wps_img_src *src = wps_image_source(pg->img);
	char path[64];

	if (src->remote || src->fd < 0 ||
	    wps_image_group_offset(pg->img, pg->r, 0) % 4096)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", src->fd);
	pg->dio_fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (pg->dio_fd < 0)
		wps_dbg(pg->ctx, "lazy restore: image %s without O_DIRECT "
			"(%s): the sweep reads it buffered", src->name,
			strerror(errno));
}

int wps_pager_new(struct wps_ctx *ctx, struct wps_image *img, unsigned int r,
		  const struct wps_region *dst,
		  const struct wps_pager_opts *opts, struct wps_pager **out)
{
	const struct wps_pager_opts def = WPS_PAGER_OPTS_INIT;
	const struct wps_image_region *ir = wps_image_get_region(img, r);
	const struct wps_image_info *ii = wps_image_get_info(img);
	struct wps_pager *pg;
	uint64_t u, b, start, count;
	int ret, fl;

	*out = NULL;
	if (!opts)
		opts = &def;
	if (!ir || dst->size != ir->size || !dst->page_size ||
	    dst->page_size & (dst->page_size - 1) ||
	    dst->page_size < WPS_IMG_BLOCK_SIZE ||
	    (dst->host_addr | dst->size) & (dst->page_size - 1) ||
	    (dst->backing != WPS_BACKING_ANON && dst->fd < 0)) {
		wps_err(ctx, "lazy restore: target does not fit region %u "
			"(size %llu vs %llu, page size %u, backing %u, fd %d)",
			r, (unsigned long long)dst->size,
			(unsigned long long)(ir ? ir->size : 0), dst->page_size,
			dst->backing, dst->fd);
		ret = -EINVAL;
		goto close_uffd;
	}
	pg = calloc(1, sizeof(*pg));
	if (!pg) {
		ret = -ENOMEM;
		goto close_uffd;
	}
	pg->ctx = ctx;
	pg->img = img;
	pg->r = r;
	pg->dst = *dst;
	pg->dst.name = NULL;
	pg->uffd = opts->uffd;
	pg->stop_fd = -1;
	pg->dio_fd = -1;
	pg->map = MAP_FAILED;
	pthread_mutex_init(&pg->lock, NULL);
	pthread_mutex_init(&pg->gate_lock, NULL);
	pthread_cond_init(&pg->gate_cond, NULL);
	pg->unit = dst->page_size;
	pg->nr_units = dst->size / pg->unit;
	pg->nr_blocks = ir->nr_blocks;
	pg->group_bytes = (uint64_t)ii->group_blocks * WPS_IMG_BLOCK_SIZE;
	pg->nr_groups = (pg->nr_blocks + ii->group_blocks - 1) / ii->group_blocks;
	pg->win = pg->group_bytes > pg->unit ? pg->group_bytes : pg->unit;
	pg->shared = dst->backing != WPS_BACKING_ANON;
	pg->no_prefetch = opts->no_prefetch;
	if (pg->win % pg->group_bytes || pg->win % pg->unit) {
		wps_err(ctx, "lazy restore: page size %u and checksum groups "
			"of %llu bytes do not nest", dst->page_size,
			(unsigned long long)pg->group_bytes);
		ret = -EINVAL;
		goto fail;
	}
	open_direct(pg);
	pg->chunk = opts->prefetch_chunk ? opts->prefetch_chunk :
		    pg->dio_fd >= 0 ? PAGER_CHUNK_DIRECT : PAGER_CHUNK_DEFAULT;
	pg->chunk = (pg->chunk + pg->win - 1) / pg->win * pg->win;

	ret = -ENOMEM;
	pg->state = malloc(pg->nr_units);
	pg->zero = aligned_alloc(4096, pg->unit);
	pg->fault_buf = aligned_alloc(4096, pg->win);
	if (!pg->state || !pg->zero || !pg->fault_buf)
		goto fail;
	memset(pg->zero, 0, pg->unit);
	if (opts->nr_first) {
		pg->first = malloc(opts->nr_first * sizeof(*pg->first));
		if (!pg->first)
			goto fail;
		memcpy(pg->first, opts->first, opts->nr_first * sizeof(*pg->first));
		pg->nr_first = opts->nr_first;
		ret = cap_first(pg);
		if (ret)
			goto fail;
	}
	/* Which units the image has data for: everything else is zero. */
	memset(pg->state, U_NEED_ZERO, pg->nr_units);
	for (b = 0; !wps_image_next_extent(img, r, b, &start, &count);
	     b = start + count) {
		uint64_t ue = ((start + count) * WPS_IMG_BLOCK_SIZE + pg->unit - 1) /
			      pg->unit;

		for (u = start * WPS_IMG_BLOCK_SIZE / pg->unit; u < ue; u++) {
			if (pg->state[u] != U_NEED_DATA)
				pg->data_units++;
			pg->state[u] = U_NEED_DATA;
		}
	}
	pg->remaining = pg->data_units;

	pg->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pg->stop_fd < 0) {
		ret = -errno;
		wps_err(ctx, "lazy restore: eventfd: %s", strerror(errno));
		goto fail;
	}
	if (dst->backing == WPS_BACKING_HUGETLB) {
		pg->map = mmap(NULL, dst->size, PROT_READ | PROT_WRITE,
			       MAP_SHARED, dst->fd, (off_t)dst->fd_offset);
		if (pg->map == MAP_FAILED) {
			ret = -errno;
			wps_err(ctx, "lazy restore: cannot map the guest's "
				"memfd (fd %d, %llu bytes): %s", dst->fd,
				(unsigned long long)dst->size, strerror(errno));
			goto fail;
		}
	}
	if (pg->uffd < 0) {
		ret = wps_uffd_open(ctx, O_CLOEXEC | O_NONBLOCK, &pg->uffd);
		if (ret)
			goto fail;
	} else {
		/* Handed over: the fault thread drains it non-blocking. */
		fl = fcntl(pg->uffd, F_GETFL);
		if (fl < 0 || fcntl(pg->uffd, F_SETFL, fl | O_NONBLOCK) < 0) {
			ret = -errno;
			wps_err(ctx, "lazy restore: userfaultfd %d: %s",
				pg->uffd, strerror(errno));
			goto fail;
		}
	}
	ret = wps_uffd_negotiate(ctx, pg->uffd,
				 backing_need(dst->backing) |
				 UFFD_FEATURE_EVENT_REMOVE |
				 UFFD_FEATURE_EVENT_UNMAP,
				 UFFD_FEATURE_POISON, &pg->features);
	if (ret)
		goto fail;
	*out = pg;
	return 0;
fail:
	wps_pager_free(pg);
	return ret;
close_uffd:
	if (opts->uffd >= 0)
		close(opts->uffd);
	return ret;
}

int wps_pager_start(struct wps_pager *pg)
{
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING;
	int ret;

	if (pg->started)
		return -EBUSY;
	pg->t_start = wps_now_ns();
	if (pg->shared)
		mode |= UFFDIO_REGISTER_MODE_MINOR;
	ret = wps_uffd_register(pg->ctx, pg->uffd, pg->dst.host_addr,
				pg->dst.size, mode);
	if (ret)
		return ret;
	pg->registered = true;
	pg->started = true;
	if (!pg->remaining)
		pg->full_ns = 1;
	ret = -pthread_create(&pg->fault_tid, NULL, fault_main, pg);
	if (ret)
		goto fail;
	pg->fault_running = true;
	if (!pg->no_prefetch) {
		ret = start_prefetchers(pg);
		if (ret)
			goto fail;
	}
	pg->start_ns = wps_now_ns() - pg->t_start;
	return 0;
fail:
	/* Nothing was served yet that the guest could depend on only if
	 * it has not run: the caller resumes the guest after us. */
	wps_err(pg->ctx, "lazy restore: cannot start threads: %s",
		strerror(-ret));
	atomic_store(&pg->stop, true);
	eventfd_write(pg->stop_fd, 1);
	if (pg->fault_running)
		pthread_join(pg->fault_tid, NULL);
	pg->fault_running = false;
	wps_uffd_unregister(pg->uffd, pg->dst.host_addr, pg->dst.size);
	pg->registered = false;
	pg->started = false;
	return ret;
}

static void stop_threads(struct wps_pager *pg)
{
	atomic_store(&pg->stop, true);
	if (pg->stop_fd >= 0)
		eventfd_write(pg->stop_fd, 1);
	join_prefetchers(pg);
	if (pg->fault_running)
		pthread_join(pg->fault_tid, NULL);
	pg->fault_running = false;
}

int wps_pager_graduate(struct wps_pager *pg)
{
	int ret, pass;

	if (!pg->started)
		return -EINVAL;
	if (pg->graduated)
		return 0;
	join_prefetchers(pg);
	/* Whatever the prefetch left (none ran, or a transient error):
	 * populate it here, the fault thread still serving meanwhile. */
	for (pass = 0; pass < 3; pass++) {
		pthread_mutex_lock(&pg->lock);
		ret = pg->error;
		if (!ret && !pg->remaining) {
			/*
			 * Everything the image holds is in the guest, and no
			 * unit can go back to needing data: unregister under
			 * the lock, so no install races with it. Threads
			 * still blocked in the range are woken by the kernel
			 * and retry a normal fault: zero or present, both
			 * right now.
			 */
			ret = wps_uffd_unregister(pg->uffd, pg->dst.host_addr,
						  pg->dst.size);
			if (ret) {
				wps_err(pg->ctx, "lazy restore: unregister "
					"failed: %s", strerror(-ret));
				set_error(pg, ret);
			} else {
				pg->registered = false;
				pg->graduated = true;
				pg->graduate_ns = wps_now_ns() - pg->t_start;
			}
			pthread_mutex_unlock(&pg->lock);
			break;
		}
		pthread_mutex_unlock(&pg->lock);
		if (ret)
			break;
		ret = prefetch_all(pg);
		if (ret)
			break;
	}
	if (!ret && !pg->graduated)
		ret = -EIO;
	if (ret)
		return ret;
	/* No registration left: the guest needs nothing of ours. */
	stop_threads(pg);
	close(pg->uffd);
	pg->uffd = -1;
	return 0;
}

int wps_pager_stats(struct wps_pager *pg, struct wps_pager_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&pg->lock);
	st->faults = pg->faults;
	st->zero_faults = pg->zero_faults;
	st->fault_p50_ns = wps_histo_pct(&pg->hist, 50);
	st->fault_p99_ns = wps_histo_pct(&pg->hist, 99);
	st->fault_max_ns = pg->hist.max;
	st->fault_bytes = pg->fault_bytes;
	st->prefetch_bytes = pg->prefetch_bytes;
	st->first_bytes = pg->first_bytes;
	st->first_ranges = pg->nr_first;
	st->order_ranges = pg->nr_order;
	st->data_bytes = pg->data_units * pg->unit;
	st->remaining_bytes = pg->remaining * pg->unit;
	st->removed_bytes = pg->removed_bytes;
	st->events = pg->events;
	st->start_ns = pg->start_ns;
	st->full_ns = pg->full_ns;
	st->graduate_ns = pg->graduate_ns;
	st->graduated = pg->graduated;
	st->error = pg->error;
	st->bad_offset = pg->bad_offset;
	st->bad_addr = pg->bad_addr;
	pthread_mutex_unlock(&pg->lock);
	return st->error;
}

int wps_pager_fault_order(struct wps_pager *pg, struct wps_pager_range **out,
			  unsigned int *nr)
{
	int ret = 0;

	*out = NULL;
	*nr = 0;
	pthread_mutex_lock(&pg->lock);
	if (pg->nr_order) {
		*out = malloc(pg->nr_order * sizeof(**out));
		if (*out) {
			memcpy(*out, pg->order, pg->nr_order * sizeof(**out));
			*nr = pg->nr_order;
		} else {
			ret = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&pg->lock);
	return ret;
}

/* Before an unregister that would let the kernel zero-fill them: units
 * whose data never reached the guest become poisoned (SIGBUS / EFAULT on
 * access), never silently zero. No thread runs. */
static void poison_undelivered(struct wps_pager *pg)
{
	uint64_t u, s, n = 0;

	for (u = 0; u < pg->nr_units;) {
		struct uffdio_poison p = { 0 };

		if (ust(pg, u) != U_NEED_DATA && ust(pg, u) != U_BAD) {
			u++;
			continue;
		}
		for (s = u; u < pg->nr_units &&
		     (ust(pg, u) == U_NEED_DATA || ust(pg, u) == U_BAD); u++)
			;
		if (!(pg->features & UFFD_FEATURE_POISON)) {
			n += u - s;
			continue;
		}
		p.range.start = unit_addr(pg, s);
		p.range.len = (u - s) * pg->unit;
		while (ioctl(pg->uffd, UFFDIO_POISON, &p) && errno == EAGAIN &&
		       !drain(pg))
			p.updated = 0;
	}
	if (n)
		wps_warn(pg->ctx, "lazy restore: %llu undelivered pages will "
			 "read as zero (no UFFD_FEATURE_POISON)",
			 (unsigned long long)n);
}

void wps_pager_free(struct wps_pager *pg)
{
	if (!pg)
		return;
	stop_threads(pg);
	if (pg->registered) {
		poison_undelivered(pg);
		wps_uffd_unregister(pg->uffd, pg->dst.host_addr, pg->dst.size);
	}
	if (pg->uffd >= 0)
		close(pg->uffd);
	if (pg->stop_fd >= 0)
		close(pg->stop_fd);
	if (pg->dio_fd >= 0)
		close(pg->dio_fd);
	if (pg->map != MAP_FAILED)
		munmap(pg->map, pg->dst.size);
	pthread_mutex_destroy(&pg->lock);
	pthread_mutex_destroy(&pg->gate_lock);
	pthread_cond_destroy(&pg->gate_cond);
	free(pg->q);
	free(pg->order);
	free(pg->first);
	free(pg->fault_buf);
	free(pg->zero);
	free(pg->state);
	free(pg);
}
