/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: chains of checkpoint images (docs/CHECKPOINT.md).
 *
 * A chain is a full image followed by incremental ones, each naming its
 * parent by UUID (and by file name, a hint for finding it in the same
 * directory). Opening the newest image of a chain finds and checks every
 * ancestor; a missing parent, or one whose UUID or region layout does not
 * match, is a clear error, never a restore of the wrong memory.
 */
#ifndef WPSNAP_CHAIN_H
#define WPSNAP_CHAIN_H

#include <stdint.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

struct wps_chain;

/*
 * Open the image at path and all its ancestors. -ENOENT (missing parent),
 * -EBADMSG (parent UUID or layout mismatch, or a cycle), or any error of
 * wps_image_open(), each logged with the file at fault.
 */
int wps_chain_open(struct wps_ctx *ctx, const char *path, unsigned int flags,
		   struct wps_chain **out);
void wps_chain_close(struct wps_chain *c);

/* Images, 0 = the full one .. length - 1 = the one opened. */
unsigned int wps_chain_length(const struct wps_chain *c);
struct wps_image *wps_chain_image(const struct wps_chain *c, unsigned int i);
const char *wps_chain_path(const struct wps_chain *c, unsigned int i);

/*
 * Eager restore of region r through the whole chain: the full image, then
 * every increment over it, with wps_image_load() (libaio O_DIRECT, every
 * checksum verified). dst as for wps_image_load(): zero where the chain
 * has no data. st sums the loads.
 */
int wps_chain_load(struct wps_chain *c, unsigned int r, void *dst,
		   struct wps_image_load_stats *st);

/* Flags for wps_chain_merge. */
#define WPS_CHAIN_MERGE_OVERWRITE (1u << 0)

/*
 * Flatten images [0, upto] of the chain into one full image at out_path,
 * with the UUID of image upto (it holds the same memory: an increment
 * whose parent was image upto still finds it) and no parent. Every block
 * is read once, from the newest image that has it, and verified.
 */
int wps_chain_merge(struct wps_chain *c, unsigned int upto,
		    const char *out_path, unsigned int flags);

/*
 * The image at path as one full image, for what reads a single image
 * (the lazy restore's pager): the image itself when it has no parent;
 * else its chain merged (wps_chain_merge, same UUID) into a hidden file
 * beside it, "PATH.flat.PID", unlinked as soon as it is open, so that it
 * takes disk space only while open and is never left behind. *merged
 * (may be NULL): the chain's length when a merge was made, else 0. An
 * increment on an NBD chain export (docs/REMOTE.md) is merged the same
 * way into $TMPDIR (default /var/tmp); another URI: -EOPNOTSUPP.
 */
int wps_chain_open_flat(struct wps_ctx *ctx, const char *path,
			unsigned int flags, struct wps_image **out,
			unsigned int *merged);

/*
 * Retention: keep the newest `keep` checkpoints (>= 1) and fold everything
 * older into the oldest of them, which becomes the chain's full image.
 * The merge is written as "<its path>.partial" and renamed over it (same
 * UUID, so the next image still finds its parent); only then are the
 * older files removed. A crash at any point leaves a restorable chain,
 * with at worst files no chain uses. 0 with nothing to do if the chain
 * has at most keep images. The chain object is closed and must be opened
 * again to be used. A chain on an NBD export: -EOPNOTSUPP (it cannot be
 * rewritten in place, docs/REMOTE.md).
 */
int wps_chain_fold(struct wps_chain *c, unsigned int keep);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_CHAIN_H */
