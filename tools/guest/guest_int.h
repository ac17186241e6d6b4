/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared between guest.c and ledger.c, not part of the guest API: the
 * block fill of the content rule (inline, it is the writers' hot path) and
 * the ledger allocator.
 */
#ifndef WPS_GUEST_INT_H
#define WPS_GUEST_INT_H

#include <endian.h>
#include <stdint.h>

#include "tools/guest/guest.h"

#define WPS_GUEST_WORDS (WPS_GUEST_BLOCK / 8u)
#define WPS_GUEST_STEP 0x9E3779B97F4A7C15ull

/* Content of block b at generation g >= 1 (see guest.h). The running sum
 * k equals i * WPS_GUEST_STEP mod 2^64 without a multiply per word. */
static inline void guest_fill_block(void *buf, uint64_t b, uint32_t g)
{
	uint64_t *w = buf, m = wps_guest_mix(b, g), k = 0;
	unsigned int i;

	w[0] = htole64(b << 32 | g);
	for (i = 1; i < WPS_GUEST_WORDS; i++) {
		k += WPS_GUEST_STEP;
		w[i] = htole64(m ^ k);
	}
}

/* A ledger of nr_blocks zero generations. */
int wps_ledger_alloc(uint64_t nr_blocks, struct wps_ledger **out);

#endif /* WPS_GUEST_INT_H */
