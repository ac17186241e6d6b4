/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: chain resolution (src/chain.c). The input holds up to three
 * sparse image descriptions (fuzzutil.h) separated by FZ_SEP; image i is
 * written as "img<i>" in the harness's private directory and the last one
 * is opened with wps_chain_open, so that parents are found by the name
 * their child records, checked by UUID and layout, and walked.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/chain.h>

#include "tests/fuzz/fuzzutil.h"

#define MAX_IMAGES 3u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wps_chain *c;
	char path[MAX_IMAGES][256];
	unsigned int n = 0, i;
	uint64_t present = 0;
	size_t left = size;

	fz_begin();
	while (n < MAX_IMAGES && left) {
		const uint8_t *sep = memmem(data, left, FZ_SEP, FZ_SEP_LEN);
		size_t len = sep && n + 1 < MAX_IMAGES ? (size_t)(sep - data) : left;
		int fd;

		snprintf(path[n], sizeof(path[n]), "%s/img%u", fz_dir(), n);
		fd = open(path[n], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			abort();
		if (!fz_sparse_write(fd, data, len) && (data[0] & FZ_FIX_CRC))
			fz_image_fix_crc(fd);
		close(fd);
		n++;
		if (len == left)
			break;
		data += len + FZ_SEP_LEN;
		left -= len + FZ_SEP_LEN;
	}
	if (n && !wps_chain_open(fz_ctx(), path[n - 1], 0, &c)) {
		if (!wps_chain_length(c) || wps_chain_length(c) > n)
			abort();   /* only the files written can be in it */
		for (i = 0; i < wps_chain_length(c); i++)
			present += wps_image_get_info(wps_chain_image(c, i))->present_blocks;
		if (wps_chain_image(c, i) || wps_chain_path(c, i))
			abort();
		wps_chain_close(c);
	}
	for (i = 0; i < n; i++)
		unlink(path[i]);
	fz_end();
	return (int)(present & 0);
}
