/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal reader calls for the lazy pager (src/pager.c), not part of the
 * public image API: whole checksum groups read in one pread and verified
 * one by one, so that the pager can install exactly the groups that are
 * intact and name the one that is not.
 */
#ifndef WPS_IMG_READER_INT_H
#define WPS_IMG_READER_INT_H

#include <stdint.h>

#include <wpsnap/image.h>

/*
 * Read groups [g0, g0 + ng) of region r into buf (ng * group bytes; the
 * last group of a region may be short, the rest of buf is then zeroed) in
 * one read, verify every group that holds data and zero the absent blocks.
 * 0, or -EBADMSG (logged with the file offset) with *bad_group set to the
 * first group that does not match: groups before it are good in buf,
 * groups from it on are not to be used. Other -errno for I/O errors.
 */
int wps_image_read_groups(struct wps_image *img, unsigned int r, uint64_t g0,
			  uint64_t ng, void *buf, uint64_t *bad_group);

/* File offset of group g of region r (for error reports). */
uint64_t wps_image_group_offset(const struct wps_image *img, unsigned int r,
				uint64_t g);

#endif /* WPS_IMG_READER_INT_H */
