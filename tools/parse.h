/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The command line's numbers (header only, shared by the tools): one
 * parser, so that every option refuses the same things (a sign, trailing
 * text, overflow, a value out of its range) instead of strtoul's silent
 * zero or wrap.
 */
#ifndef TOOLS_PARSE_H
#define TOOLS_PARSE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* A decimal number in [min, max] into *out; -EINVAL for anything else
 * (*out untouched). */
static inline int tools_parse_u64(const char *s, uint64_t min, uint64_t max,
				  uint64_t *out)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || *end || errno || *s == '-' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

#endif /* TOOLS_PARSE_H */
