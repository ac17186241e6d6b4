/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: one image through the public reader (include/wpsnap/
 * image.h). The input is a sparse file description (fuzzutil.h) written
 * into a memfd and opened as /proc/self/fd/N; an image that opens is then
 * walked like a restore would: regions, presence, extents, a few reads,
 * blobs (and the working-set blob decoder), verification.
 */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/wset.h>

#include "tests/fuzz/fuzzutil.h"

#define READ_BLOCKS 4u

static void walk(struct wps_image *img)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	static uint8_t buf[READ_BLOCKS * WPS_IMG_BLOCK_SIZE];
	struct wps_wset *ws = NULL;
	uint64_t bad, s, k, from;
	unsigned int r, i, n;

	for (r = 0; r < in->nr_regions && r < 16; r++) {
		const struct wps_image_region *reg = wps_image_get_region(img, r);

		if (!reg)
			abort();    /* in range: the reader must have it */
		wps_image_block_present(img, r, 0);
		wps_image_block_present(img, r, reg->nr_blocks - 1);
		wps_image_block_present(img, r, reg->nr_blocks);
		for (from = 0, n = 0; n < 8; n++, from = s + k) {
			if (wps_image_next_extent(img, r, from, &s, &k))
				break;
			if (!k || s < from)
				abort();    /* an extent is never empty nor behind */
			wps_image_read(img, r, s * WPS_IMG_BLOCK_SIZE, buf,
				       (k < READ_BLOCKS ? k : READ_BLOCKS) *
				       WPS_IMG_BLOCK_SIZE);
		}
		wps_image_read(img, r, 0, buf, WPS_IMG_BLOCK_SIZE);
	}
	wps_image_get_region(img, in->nr_regions);
	for (i = 0; i < in->nr_blobs && i < 256; i++) {
		const char *name;
		const void *data;
		size_t len;

		if (!wps_image_get_blob(img, i, &name, &data, &len) && len)
			buf[0] ^= ((const uint8_t *)data)[len - 1] ^ (uint8_t)name[0];
	}
	if (!wps_wset_from_image(fz_ctx(), img, &ws))
		wps_wset_free(ws);
	wps_image_verify(img, &bad);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wps_image *img;
	char path[64];
	int fd;

	if (size < 5)
		return 0;
	fz_begin();
	fd = fz_memfd("", 0, path, sizeof(path));
	if (fd < 0)
		abort();
	if (!fz_sparse_write(fd, data, size)) {
		if (data[0] & FZ_FIX_CRC)
			fz_image_fix_crc(fd);
		if (!wps_image_open(fz_ctx(), path, 0, &img)) {
			walk(img);
			wps_image_close(img);
		}
	}
	close(fd);
	fz_end();
	return 0;
}
