/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Is a buffer all zero bytes: the one test of that for a whole buffer
 * (a superblock, a page, a chunk of RAM). Header-only. The image writer
 * keeps its own word-wise test of one block on its hot path.
 */
#ifndef WPS_BASE_ZERO_H
#define WPS_BASE_ZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* The first byte is zero and every byte equals the next (memcmp of the
 * buffer against itself shifted by one: libc's vectorised compare). */
static inline bool wps_all_zero(const void *p, size_t len)
{
	const unsigned char *b = p;

	return !len || (b[0] == 0 && !memcmp(b, b + 1, len - 1));
}

#endif /* WPS_BASE_ZERO_H */
