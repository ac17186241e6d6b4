/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: periodic checkpoints (docs/CHECKPOINT.md).
 *
 * The first checkpoint is a full image; each later one an incremental
 * image of the pages written since the one before, consistent at its own
 * instant, naming its parent by UUID. Between checkpoints the kernel
 * tracks writes (asynchronous write-protection): a guest write costs a
 * minor fault the first time in an epoch and nothing after.
 *
 *	wps_ckpt_new(ctx, regions, nr, &opts, &ck);   // tracking starts
 *	for (;;) {
 *		wps_ckpt_take(ck, path, &st);  // returns once durable
 *		...                            // release held output, etc.
 *	}
 *	wps_ckpt_free(ck);                    // tracking stops
 *
 * A take copies what changed in background rounds while the guest runs,
 * then pauses it to take the rest, at one instant, and resumes it; the
 * pause costs one page-table walk plus a copy of what was written during
 * the last round. Images: <wpsnap/image.h>; chains: <wpsnap/chain.h>.
 */
#ifndef WPSNAP_CHECKPOINT_H
#define WPSNAP_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

struct wps_ckpt;

#define WPS_CKPT_OVERWRITE  (1u << 0)  /* replace existing image files */
#define WPS_CKPT_NO_DIRECT  (1u << 1)  /* no O_DIRECT (testing) */

struct wps_ckpt_opts {
	unsigned int flags;
	/* Stop and restart the guest around the instant (required). */
	int (*pause)(void *arg);
	int (*resume)(void *arg);
	void *pause_arg;
	/*
	 * Optional, called inside the pause right after the dirty set is
	 * taken, with the checkpoint's sequence number (0 for the full
	 * one): the instant. Output commit closes its epoch here. Non-zero
	 * fails the checkpoint (the guest resumes, nothing is published).
	 */
	int (*at_instant)(void *arg, uint64_t seq);
	void *instant_arg;
	/*
	 * Optional, called after the guest has resumed and before the image
	 * is committed (same arg as at_instant): the place to attach blobs
	 * that describe the instant, such as a VMM's device state, with
	 * wps_ckpt_add_blob(). Non-zero fails the checkpoint.
	 */
	int (*before_commit)(void *arg, struct wps_ckpt *ck, uint64_t seq);
	/*
	 * Background copy rounds before the pause (0: 8). Each round takes
	 * what was written during the one before; the pause comes when a
	 * round finds less than precopy_target bytes (0: 4 MiB) or stops
	 * shrinking. WPS_CKPT_NO_PRECOPY: copy every change in the pause
	 * (the pause then grows with the dirty set; for comparison).
	 */
	unsigned int precopy_rounds;
	uint64_t precopy_target;
	/* I/O buffer bytes of the image writer (0: 64 MiB). */
	uint64_t buffer_budget;
	/* The RAM's owner (0: this process). For another process (a VMM
	 * that handed over its uffd and memfds, or an attached process,
	 * wps_attach_take_uffd()), shared regions are read through our own
	 * mapping of their fd (or .local), anonymous ones without an fd
	 * with process_vm_readv. */
	pid_t pid;
	/* A userfaultfd handed over (not through UFFDIO_API yet; taken
	 * over); -1 (WPS_CKPT_OPTS_INIT): open one. */
	int uffd;
	/* Retention on a chain export ("URI#N", docs/REMOTE.md): 0 none;
	 * else at least the last keep checkpoints stay restorable, older
	 * ones are reclaimed when an image needs their space, and every
	 * keep-th checkpoint is a full image so that the older ones can
	 * go. Ignored for files (wpsnap's session folds those). */
	unsigned int keep;
};

#define WPS_CKPT_NO_PRECOPY ((unsigned int)-1)
#define WPS_CKPT_OPTS_INIT { .uffd = -1 }

struct wps_ckpt_stats {
	uint64_t seq;               /* 0: the full image */
	uint8_t uuid[16];
	uint8_t parent_uuid[16];    /* all zero for seq 0 */
	uint64_t pause_ns;          /* pause() called .. resume() returned */
	uint64_t handshake_ns;      /* of which inside pause() and resume():
				       the guest's own cost of stopping */
	uint64_t scan_ns;           /* harvest walk inside the pause */
	uint64_t copy_ns;           /* copy inside the pause */
	uint64_t pause_bytes;       /* copied inside the pause */
	unsigned int rounds;        /* background rounds before it */
	uint64_t precopy_bytes;     /* copied by those rounds */
	uint64_t dirty_bytes;       /* distinct bytes saved (written since
				       the parent; all populated for seq 0) */
	uint64_t removed_bytes;     /* handed back by the guest: saved as zero */
	uint64_t image_data_bytes;  /* data blocks in the image */
	uint64_t image_file_bytes;  /* allocated size of the file */
	uint64_t commit_ns;         /* trailer, fdatasync, rename, dir fsync */
	uint64_t total_ns;          /* wps_ckpt_take() start .. durable */
	int64_t instant_realtime_ns;
};

/* Start tracking writes to regions. Nothing is saved yet. -EOPNOTSUPP
 * naming the missing kernel feature (WP_ASYNC, PAGEMAP_SCAN: Linux 6.7). */
int wps_ckpt_new(struct wps_ctx *ctx, const struct wps_region *regions,
		 unsigned int nr, const struct wps_ckpt_opts *opts,
		 struct wps_ckpt **out);

/*
 * Take the next checkpoint into path (written as path.partial, renamed
 * when complete, then fsync'd with its directory: a 0 return means it is
 * durable). The image records its parent's file name (a blob,
 * "wpsnap.parent", for chains kept in one directory) and UUID.
 * On failure the guest runs on, nothing is published under path, and the
 * next take is a full image again (the chain cannot go on from a
 * checkpoint that does not exist).
 */
int wps_ckpt_take(struct wps_ckpt *ck, const char *path,
		  struct wps_ckpt_stats *st);

/* A named blob in the checkpoint under way (from before_commit only). */
int wps_ckpt_add_blob(struct wps_ckpt *ck, const char *name, const void *data,
		      size_t len);

/* Stop tracking; every protection is removed. */
void wps_ckpt_free(struct wps_ckpt *ck);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_CHECKPOINT_H */
