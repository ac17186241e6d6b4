/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared between guest.c and ledger.c, not part of the guest API: the
 * block fill of the content rule (inline, it is the writers' hot path) and
 * the ledger allocator.
 */
#ifndef RGUEST_INT_H
#define RGUEST_INT_H

#include <endian.h>
#include <stdint.h>

#include "guest/guest.h"

#define RGUEST_WORDS (RGUEST_BLOCK / 8u)
#define RGUEST_STEP 0x9E3779B97F4A7C15ull

/* Content of block b at generation g >= 1 (see guest.h). The running sum
 * k equals i * RGUEST_STEP mod 2^64 without a multiply per word. */
static inline void guest_fill_block(void *buf, uint64_t b, uint32_t g)
{
	uint64_t *w = buf, m = rguest_mix(b, g), k = 0;
	unsigned int i;

	w[0] = htole64(b << 32 | g);
	for (i = 1; i < RGUEST_WORDS; i++) {
		k += RGUEST_STEP;
		w[i] = htole64(m ^ k);
	}
}

/* A ledger of nr_blocks zero generations. */
int rguest_ledger_alloc(uint64_t nr_blocks, struct rguest_ledger **out);

#endif /* RGUEST_INT_H */
