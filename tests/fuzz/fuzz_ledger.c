/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the reference guest's ledger file (guest/ledger.c,
 * rguest_ledger_read), which `wpsnap-guest verify` reads from disk. Input:
 * byte 0 = flags (FZ_FIX_CRC: recompute both CRC-32 fields, so that
 * mutations reach the size checks), then the file.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "guest/guest.h"
#include "tests/fuzz/fuzzutil.h"

#define HDR 32u

static void fix(uint8_t *file, size_t len)
{
	if (len < HDR)
		return;
	fz_put32(file + 24, (uint32_t)crc32(0, file + HDR, (uInt)(len - HDR)));
	fz_put32(file + 28, (uint32_t)crc32(0, file, 28));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rguest_ledger *l = NULL;
	char path[64];
	uint64_t b, sum = 0;
	int fd;

	if (!size)
		return 0;
	fz_begin();
	fd = fz_file_memfd(data, size, fix, path, sizeof(path));
	if (!rguest_ledger_read(path, &l)) {
		if (HDR + l->nr_blocks * 4 != size - 1)
			abort();    /* the file's size is the ledger's */
		for (b = 0; b < l->nr_blocks; b++)
			sum += l->gen[b];
		rguest_ledger_free(l);
	}
	close(fd);
	fz_end();
	return (int)(sum & 0);
}
