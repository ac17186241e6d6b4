/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A log-linear latency histogram (8 sub-buckets per power of two, so a
 * reported percentile is within 12.5% of the truth) with a fixed footprint:
 * recording is a few instructions and never allocates, which matters on
 * the fault path.
 */
#ifndef WPS_HISTO_H
#define WPS_HISTO_H

#include <stdint.h>
#include <string.h>

#define WPS_HISTO_SUB 8
#define WPS_HISTO_BUCKETS (WPS_HISTO_SUB + 61 * WPS_HISTO_SUB)

struct wps_histo {
	uint64_t count;
	uint64_t max;
	uint64_t b[WPS_HISTO_BUCKETS];
};

static inline unsigned int wps_histo_idx(uint64_t v)
{
	unsigned int e;

	if (v < WPS_HISTO_SUB)
		return v;
	e = 63 - __builtin_clzll(v);
	return WPS_HISTO_SUB + (e - 3) * WPS_HISTO_SUB +
	       ((v >> (e - 3)) & (WPS_HISTO_SUB - 1));
}

/* Midpoint of the values that land in bucket i. */
static inline uint64_t wps_histo_value(unsigned int i)
{
	unsigned int e, m;
	uint64_t lo;

	if (i < WPS_HISTO_SUB)
		return i;
	e = (i - WPS_HISTO_SUB) / WPS_HISTO_SUB + 3;
	m = (i - WPS_HISTO_SUB) % WPS_HISTO_SUB;
	lo = ((uint64_t)(WPS_HISTO_SUB + m)) << (e - 3);
	return lo + (((uint64_t)1 << (e - 3)) >> 1);
}

static inline void wps_histo_add(struct wps_histo *h, uint64_t v)
{
	h->b[wps_histo_idx(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

static inline void wps_histo_merge(struct wps_histo *dst,
				   const struct wps_histo *src)
{
	unsigned int i;

	for (i = 0; i < WPS_HISTO_BUCKETS; i++)
		dst->b[i] += src->b[i];
	dst->count += src->count;
	if (src->max > dst->max)
		dst->max = src->max;
}

/* pct in [0, 100]; 0 for an empty histogram; never above max. */
static inline uint64_t wps_histo_pct(const struct wps_histo *h, double pct)
{
	uint64_t want, seen = 0, v;
	unsigned int i;

	if (!h->count)
		return 0;
	want = (uint64_t)(pct / 100.0 * (double)h->count + 0.5);
	if (want < 1)
		want = 1;
	for (i = 0; i < WPS_HISTO_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			v = wps_histo_value(i);
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

static inline void wps_histo_reset(struct wps_histo *h)
{
	memset(h, 0, sizeof(*h));
}

#endif /* WPS_HISTO_H */
