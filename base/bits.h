/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bitmaps of blocks or pages (uint64_t words, bit b of word b / 64): the
 * image's presence bitmap, the checkpointer's marks, the write tracker's
 * removed ranges. Header-only, shared by those modules.
 */
#ifndef WPS_BITS_H
#define WPS_BITS_H

#include <stdbool.h>
#include <stdint.h>

/* First bit at or after b (below end) that equals want; end if none. */
static inline uint64_t wps_bit_find(const uint64_t *bm, uint64_t b,
				    uint64_t end, bool want)
{
	uint64_t flip = want ? 0 : ~0ull;

	while (b < end) {
		uint64_t word = (bm[b >> 6] ^ flip) & (~0ull << (b & 63));

		if (word) {
			b = (b & ~63ull) + (uint64_t)__builtin_ctzll(word);
			return b < end ? b : end;
		}
		b = (b | 63) + 1;
	}
	return end;
}

static inline void wps_bits_set(uint64_t *bm, uint64_t first, uint64_t n)
{
	uint64_t b;

	for (b = first; b < first + n; b++)
		bm[b >> 6] |= 1ull << (b & 63);
}

/* Bits set among the first words words. */
static inline uint64_t wps_bits_count(const uint64_t *bm, uint64_t words)
{
	uint64_t w, n = 0;

	for (w = 0; w < words; w++)
		n += (uint64_t)__builtin_popcountll(bm[w]);
	return n;
}

#endif
