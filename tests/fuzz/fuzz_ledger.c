/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the reference guest's ledger file (tools/guest/ledger.c,
 * wps_ledger_read), which `wpsnap-guest verify` reads from disk. Input:
 * byte 0 = flags (FZ_FIX_CRC: recompute both CRC-32 fields, so that
 * mutations reach the size checks), then the file.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "tools/guest/guest.h"
#include "tests/fuzz/fuzzutil.h"

#define HDR 32u

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);   /* little-endian host (x86-64) */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wps_ledger *l = NULL;
	uint8_t *file;
	char path[64];
	uint64_t b, sum = 0;
	int fd;

	if (!size)
		return 0;
	fz_begin();
	file = malloc(size);
	if (!file)
		abort();
	memcpy(file, data + 1, size - 1);
	if ((data[0] & FZ_FIX_CRC) && size - 1 >= HDR) {
		put32(file + 24, (uint32_t)crc32(0, file + HDR, (uInt)(size - 1 - HDR)));
		put32(file + 28, (uint32_t)crc32(0, file, 28));
	}
	fd = fz_memfd(file, size - 1, path, sizeof(path));
	if (fd < 0)
		abort();
	if (!wps_ledger_read(path, &l)) {
		if (HDR + l->nr_blocks * 4 != size - 1)
			abort();    /* the file's size is the ledger's */
		for (b = 0; b < l->nr_blocks; b++)
			sum += l->gen[b];
		wps_ledger_free(l);
	}
	close(fd);
	free(file);
	fz_end();
	return (int)(sum & 0);
}
