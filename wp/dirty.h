/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write tracking between checkpoints (wp/dirty.c): which pages of the
 * guest's regions were written, or handed back to the kernel, since the
 * last harvest, at a cost to the guest of one minor fault per page per
 * epoch and nothing after.
 */
#ifndef WPS_DIRTY_H
#define WPS_DIRTY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

struct wps_dirty;

/*
 * Track writes to regions (of process pid, 0: the caller) with uffd (a
 * userfaultfd not yet through UFFDIO_API, taken over; -1: open one).
 * Nothing is protected until wps_dirty_arm(). -EOPNOTSUPP naming the
 * missing feature when the kernel lacks asynchronous write-protection
 * (UFFD_FEATURE_WP_ASYNC, 6.7) or PAGEMAP_SCAN.
 */
int wps_dirty_new(struct wps_ctx *ctx, const struct wps_region *regions,
		  unsigned int nr, pid_t pid, int uffd, struct wps_dirty **out);

/* Start the first epoch: every page of every region, populated or not,
 * counts as clean from now on. */
int wps_dirty_arm(struct wps_dirty *d);

/*
 * One run of a harvest: [off, off + len) of region r, in bytes.
 * removed: the guest handed the run back (MADV_DONTNEED/REMOVE) and it now
 * reads as zero unless written again, which a written run of the same
 * harvest says. Non-zero return stops the harvest and is returned.
 */
typedef int (*wps_dirty_fn)(void *arg, unsigned int r, uint64_t off,
			    uint64_t len, bool removed);

/*
 * Report what changed since the last harvest (or the arm) and start a new
 * epoch: written runs are protected again in the same page-table walk, so
 * no write is lost between report and re-arm. A removed range is reported
 * by the two harvests after its event: the kernel zaps the pages only
 * after we have read the event, so the first may still see old data.
 * -ESTALE if the guest unmapped or moved part of a region (the tracker is
 * then useless: free it). One harvest at a time.
 */
int wps_dirty_harvest(struct wps_dirty *d, wps_dirty_fn fn, void *arg);

/* Events seen (REMOVE, UNMAP, ...). */
uint64_t wps_dirty_events(struct wps_dirty *d);

/* Unregister the regions (every protection goes with them) and close. */
void wps_dirty_free(struct wps_dirty *d);

#endif /* WPS_DIRTY_H */
