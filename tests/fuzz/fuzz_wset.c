/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the working-set file beside an image (src/wset.c,
 * wps_wset_load and its record decoder), then what a lazy restore does
 * with the set: pager ranges, merge, re-encoding. Input: byte 0 = flags
 * (FZ_FIX_CRC: recompute the header and record crc32c; bit 1: require the
 * all-zero image UUID), then the file.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/wset.h>

#include "stream/crc32c.h"
#include "tests/fuzz/fuzzutil.h"

#define HDR 64u

static void fix(uint8_t *file, size_t len)
{
	if (len < HDR)
		return;
	fz_put32(file + 40, wps_crc32c(0, file + HDR, len - HDR));
	fz_put32(file + 60, wps_crc32c(0, file, 60));
}

static void use(const struct wps_wset *ws)
{
	struct wps_pager_range *pr = NULL;
	struct wps_wset *copy = NULL;
	unsigned int nr = 0;
	uint32_t r;
	size_t len;
	void *buf;

	for (r = 0; r < 3; r++)
		if (wps_wset_pager_ranges(ws, r, &pr, &nr) || nr > 3 * ws->nr)
			break;
	free(pr);
	if (!wps_wset_new(ws->uuid, &copy)) {
		wps_wset_merge(copy, ws);
		wps_wset_blocks(copy, 0);
		wps_wset_free(copy);
	}
	if (!wps_wset_encode(ws, &buf, &len)) {
		if (len != ws->nr * 24)
			abort();    /* one 24-byte record per range */
		free(buf);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t zero[16];
	struct wps_wset *ws = NULL;
	char path[64];
	int fd;

	if (!size)
		return 0;
	fz_begin();
	fd = fz_file_memfd(data, size, fix, path, sizeof(path));
	if (!wps_wset_load(fz_ctx(), path, data[0] & 2 ? zero : NULL, &ws)) {
		use(ws);
		wps_wset_free(ws);
	}
	close(fd);
	fz_end();
	return 0;
}
