/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restore: the guest runs on empty memory from the first instant and
 * its pages arrive on demand from an image (docs/RESTORE.md).
 *
 *   wps_pager_new(ctx, img, r, &dst, &opts, &pg);  // describe target RAM
 *   wps_pager_start(pg);      // register; returns at once: resume guest
 *   ...                       // faults served first, rest prefetched
 *   wps_pager_graduate(pg);   // everything present, then unregister
 *   wps_pager_free(pg);       // the guest no longer depends on wpsnap
 *
 * Data is verified against its checksum group before any of it reaches
 * the guest. A damaged group is never delivered: the faulting thread
 * stays blocked, the pager is marked failed, and graduate/stats report
 * -EBADMSG so the VMM can stop the guest.
 */
#ifndef WPSNAP_PAGER_H
#define WPSNAP_PAGER_H

#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

struct wps_pager;

/* A run of image blocks (4 KiB) of the region. */
struct wps_pager_range {
	uint64_t block;
	uint64_t count;
};

struct wps_pager_opts {
	/*
	 * A userfaultfd handed over by the guest's owner, not yet through
	 * UFFDIO_API; -1 (use WPS_PAGER_OPTS_INIT) opens one. The pager
	 * owns and closes the fd in both cases.
	 */
	int uffd;
	/* Owner of the guest RAM (0: this process). For another process
	 * (wpsnapd restoring into a VMM), opts.uffd is its userfaultfd and
	 * dst its memfd region: dst->host_addr is only an ioctl argument, so
	 * nothing else changes. Its anonymous memory is served with
	 * UFFDIO_COPY into that process as well. */
	pid_t pid;
	/* Bytes per prefetch read (0: 512 KiB from a local image read with
	 * O_DIRECT, else 2 MiB). */
	uint64_t prefetch_chunk;
	/* Do not start the prefetch thread (faults only; graduate then
	 * populates the rest itself). */
	int no_prefetch;
	/*
	 * Working set: ranges prefetched first, in this order, before the
	 * address-order sweep (both prefetch threads take them in turn).
	 * Copied by wps_pager_new, and cut after the range that brings it
	 * to a quarter of the region's 64 KiB windows: beyond that the
	 * sweep's large reads fill memory faster than an ordered list.
	 * <wpsnap/wset.h> builds it from the image's written-during-
	 * snapshot blob and from the fault order of earlier restores.
	 */
	const struct wps_pager_range *first;
	unsigned int nr_first;
};

#define WPS_PAGER_OPTS_INIT { .uffd = -1 }

struct wps_pager_stats {
	uint64_t faults;            /* page faults served (incl. zero) */
	uint64_t zero_faults;       /* of which on absent or dropped pages */
	uint64_t fault_p50_ns;      /* handler side: message read .. wake */
	uint64_t fault_p99_ns;
	uint64_t fault_max_ns;
	uint64_t fault_bytes;       /* installed by the fault path (neighbours too) */
	uint64_t prefetch_bytes;    /* installed by prefetch / graduation */
	uint64_t first_bytes;       /* of which from the working set (first) */
	unsigned int first_ranges;  /* of opts.first, used (after the cap) */
	unsigned int order_ranges;  /* fault order recorded so far, ranges */
	uint64_t data_bytes;        /* bytes of image data for this region */
	uint64_t remaining_bytes;   /* image data not yet installed */
	uint64_t removed_bytes;     /* dropped by REMOVE/UNMAP before install */
	uint64_t events;            /* REMOVE/UNMAP events */
	uint64_t start_ns;          /* wps_pager_start() duration */
	uint64_t full_ns;           /* start .. all data present (0: not yet) */
	uint64_t graduate_ns;       /* start .. unregistered (0: not yet) */
	int graduated;
	int error;                  /* 0 or the -errno that failed the pager */
	uint64_t bad_offset;        /* image file offset of a damaged group */
	uint64_t bad_addr;          /* guest address it would have filled */
};

/*
 * Prepare a lazy restore of region r of img into dst. dst must be fresh
 * memory that reads as zero (an unpopulated mapping or an empty memfd) of
 * the region's size and page size; dst->backing selects the mechanism:
 * ANON: UFFDIO_COPY; MEMFD and HUGETLB: fill the file through the pager's
 * own shared mapping of dst->fd (required), then UFFDIO_CONTINUE.
 * dst->host_addr is never dereferenced. img must outlive the pager.
 */
int wps_pager_new(struct wps_ctx *ctx, struct wps_image *img, unsigned int r,
		  const struct wps_region *dst,
		  const struct wps_pager_opts *opts, struct wps_pager **out);

/* Register dst and start serving faults and prefetching. Returns as soon
 * as the range is registered: the guest may run. */
int wps_pager_start(struct wps_pager *pg);

/*
 * Populate every page not yet present and unregister, without stopping
 * the guest. On success the guest no longer depends on the pager. On
 * failure (damaged image, I/O error) nothing is unregistered, faults keep
 * being served where possible, and the error is returned.
 */
int wps_pager_graduate(struct wps_pager *pg);

/* Readable from any thread, any time. Returns st->error. */
int wps_pager_stats(struct wps_pager *pg, struct wps_pager_stats *st);

/*
 * The fault order so far: the blocks whose first fault needed image data,
 * in the order they faulted, adjacent ones merged, at most 65536 ranges
 * (later faults are not recorded). Stored beside the image
 * (<wpsnap/wset.h>), it becomes the working set of the next restore.
 * *out is malloc'd (NULL when none faulted); free() it. Any thread, any
 * time before wps_pager_free.
 */
int wps_pager_fault_order(struct wps_pager *pg, struct wps_pager_range **out,
			  unsigned int *nr);

/*
 * Stop the threads, unregister and close. Before a successful graduate
 * the guest must be stopped: pages whose data could not be delivered are
 * poisoned first (UFFDIO_POISON: an access raises SIGBUS, a syscall gets
 * EFAULT) rather than left to read as zero.
 */
void wps_pager_free(struct wps_pager *pg);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_PAGER_H */
