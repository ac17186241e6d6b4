/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The chain table of a checkpoint export (stream/nbd_chain.h has the
 * layout): naming a member ("URI#N"), reading the two copies and picking
 * the valid one of highest generation, encoding the next one. Shared by
 * the writer's NBD kind (stream/img_out_nbd.c), which appends entries,
 * and the NBD source (stream/nbd_source.c), which reads one member at
 * its offset. Owns no state: the table lives in the caller's struct.
 *
 * Invariant a reader relies on: an entry that passes the checks here
 * lies inside the export, after the table, 4 KiB-aligned, and does not
 * overlap the entries before it; everything else about the image there
 * is checked by the image reader as for any image.
 */
#include "config.h"

#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "stream/crc32c.h"
#include "stream/img_reader_int.h"
#include "stream/nbd_chain.h"
#include "stream/nbd_conn.h"

const char *wps_nbd_chain_member(const char *name)
{
	const char *h;

	if (!name || !wps_img_name_is_nbd(name))
		return NULL;
	h = strrchr(name, '#');
	return h && h[1] ? h : NULL;
}

int wps_nbd_chain_split(struct wps_ctx *ctx, const char *name, char **uri,
			int64_t *sel)
{
	const char *h = strrchr(name, '#');
	unsigned long long v = 0;
	const char *p;

	*uri = NULL;
	*sel = -1;
	if (h) {
		/* digits only, and no more than a seq can be */
		for (p = h + 1; *p && isdigit((unsigned char)*p) && p - h <= 18; p++)
			v = v * 10 + (unsigned long long)(*p - '0');
		if (p == h + 1 || *p) {
			wps_err(ctx, "image %s: '%s' does not name a checkpoint of "
				"the export's chain (#N, N its number)", name, h);
			return -EINVAL;
		}
		*sel = (int64_t)v;
	}
	*uri = h ? strndup(name, (size_t)(h - name)) : strdup(name);
	return *uri ? 0 : -ENOMEM;
}

/* One copy: 0 and *t filled if it is a valid table, else -EBADMSG
 * (quietly: a torn copy is expected after a crash). */
static int decode(const uint8_t *buf, struct wps_nbd_chain *t)
{
	struct wps_nbd_chain_hdr h;
	uint32_t crc, i;

	memcpy(&h, buf, sizeof(h));
	memcpy(&crc, buf + WPS_NBD_CHAIN_COPY - 4, 4);
	if (memcmp(h.magic, WPS_NBD_CHAIN_MAGIC, 8) ||
	    le32toh(h.version) != WPS_NBD_CHAIN_VERSION ||
	    le32toh(crc) != wps_crc32c(0, buf, WPS_NBD_CHAIN_COPY - 4) ||
	    le32toh(h.nr) > WPS_IMG_CHAIN_MAX || !le64toh(h.generation) ||
	    le64toh(h.data_offset) != WPS_NBD_CHAIN_DATA)
		return -EBADMSG;
	t->generation = le64toh(h.generation);
	t->nr = le32toh(h.nr);
	for (i = 0; i < t->nr; i++) {
		struct wps_nbd_chain_ent *e = &t->ent[i];

		memcpy(e, buf + sizeof(h) + i * sizeof(*e), sizeof(*e));
		e->seq = le64toh(e->seq);
		e->offset = le64toh(e->offset);
		e->length = le64toh(e->length);
	}
	return 0;
}

/* A valid copy's entries against the export: inside it, after the
 * table, aligned, seqs increasing, not overlapping. With retention the
 * entries form a ring (stream/nbd_chain.h): in seq order the offsets
 * increase, wrap back to the data area's start at most once, and the
 * wrapped ones end before the oldest entry begins. */
static int check_entries(struct wps_ctx *ctx, const char *uri,
			 const struct wps_nbd_chain *t, uint64_t size)
{
	uint64_t end = WPS_NBD_CHAIN_DATA;
	bool wrapped = false;
	uint32_t i;

	for (i = 0; i < t->nr; i++) {
		const struct wps_nbd_chain_ent *e = &t->ent[i];
		bool bad = e->offset % WPS_IMG_BLOCK ||
			   e->length < 2 * WPS_IMG_BLOCK ||
			   e->length % WPS_IMG_BLOCK || e->offset > size ||
			   e->length > size - e->offset ||
			   e->offset < WPS_NBD_CHAIN_DATA ||
			   (i && e->seq <= t->ent[i - 1].seq);

		if (!bad && e->offset < end) {
			/* the one wrap: back to the start, before the oldest */
			bad = wrapped || !i;
			wrapped = true;
		}
		if (!bad && wrapped && e->offset + e->length > t->ent[0].offset)
			bad = true;
		if (bad) {
			wps_err(ctx, "image %s: entry %u of the chain table "
				"(generation %llu: checkpoint %llu, %llu bytes at "
				"offset %llu) is impossible for a %llu-byte export "
				"(overlaps, misaligned or out of order): damaged "
				"table", uri, i, (unsigned long long)t->generation,
				(unsigned long long)e->seq,
				(unsigned long long)e->length,
				(unsigned long long)e->offset,
				(unsigned long long)size);
			return -EBADMSG;
		}
		end = e->offset + e->length;
	}
	return 0;
}

int wps_nbd_chain_read(struct wps_ctx *ctx, struct nbd_handle *h,
		       const char *uri, int timeout_ms,
		       struct wps_nbd_chain *t)
{
	struct wps_nbd_chain *c[2] = { NULL, NULL };
	int64_t size = nbd_get_size(h);
	uint8_t *buf = NULL;
	unsigned int k;
	int err = 0;

	memset(t, 0, sizeof(*t));
	if (size < 0) {
		err = wps_nbd_errno_or(-EIO);
		wps_err(ctx, "image %s: the NBD server did not give the export's "
			"size: %s", uri, wps_nbd_why());
		return err;
	}
	if ((uint64_t)size < 2 * WPS_NBD_CHAIN_COPY)
		return 0;   /* too small for a table: NONE (or an image) */
	buf = malloc(2 * WPS_NBD_CHAIN_COPY);
	c[0] = calloc(1, sizeof(*c[0]));
	c[1] = calloc(1, sizeof(*c[1]));
	if (!buf || !c[0] || !c[1]) {
		err = -ENOMEM;
		goto out;
	}
	err = wps_nbd_wait(h, nbd_aio_pread(h, buf, 2 * WPS_NBD_CHAIN_COPY, 0,
					    NBD_NULL_COMPLETION, 0), timeout_ms);
	if (err == -ETIMEDOUT)
		wps_err(ctx, WPS_NBD_STALL_FMT, uri, "the read of its chain table",
			timeout_ms / 1000.0);
	else if (err)
		wps_err(ctx, "image %s: reading the export's chain table: %s%s",
			uri, wps_nbd_lost(h), wps_nbd_why());
	if (err)
		goto out;
	for (k = 0; k < 2; k++)
		if (decode(buf + k * WPS_NBD_CHAIN_COPY, c[k]))
			c[k]->generation = 0;
	k = c[1]->generation > c[0]->generation ? 1 : 0;
	if (c[k]->generation) {
		*t = *c[k];
		t->state = WPS_NBD_CHAIN_VALID;
		err = check_entries(ctx, uri, t, (uint64_t)size);
	} else if (!memcmp(buf, WPS_NBD_CHAIN_MAGIC, 8) ||
		   !memcmp(buf + WPS_NBD_CHAIN_COPY, WPS_NBD_CHAIN_MAGIC, 8)) {
		t->state = WPS_NBD_CHAIN_DAMAGED;
	} else if (!memcmp(buf, WPS_IMG_MAGIC, 8)) {
		t->state = WPS_NBD_CHAIN_PLAIN;
	}
out:
	free(buf);
	free(c[0]);
	free(c[1]);
	return err;
}

const struct wps_nbd_chain_ent *wps_nbd_chain_find(const struct wps_nbd_chain *t,
						   int64_t sel)
{
	uint32_t i;

	if (t->state != WPS_NBD_CHAIN_VALID || !t->nr)
		return NULL;
	if (sel < 0)
		return &t->ent[t->nr - 1];
	for (i = 0; i < t->nr; i++)
		if (t->ent[i].seq == (uint64_t)sel)
			return &t->ent[i];
	return NULL;
}

uint64_t wps_nbd_chain_next_offset(const struct wps_nbd_chain *t)
{
	const struct wps_nbd_chain_ent *e;

	if (t->state != WPS_NBD_CHAIN_VALID || !t->nr)
		return WPS_NBD_CHAIN_DATA;
	e = &t->ent[t->nr - 1];
	return wps_img_align(e->offset + e->length, WPS_NBD_CHAIN_ALIGN);
}

void wps_nbd_chain_encode(const struct wps_nbd_chain *t, void *buf)
{
	struct wps_nbd_chain_hdr h = { 0 };
	uint8_t *p = buf;
	uint32_t crc, i;

	memset(buf, 0, WPS_NBD_CHAIN_COPY);
	memcpy(h.magic, WPS_NBD_CHAIN_MAGIC, 8);
	h.version = htole32(WPS_NBD_CHAIN_VERSION);
	h.nr = htole32(t->nr);
	h.generation = htole64(t->generation);
	h.data_offset = htole64(WPS_NBD_CHAIN_DATA);
	memcpy(p, &h, sizeof(h));
	for (i = 0; i < t->nr; i++) {
		struct wps_nbd_chain_ent e = t->ent[i];

		e.seq = htole64(e.seq);
		e.offset = htole64(e.offset);
		e.length = htole64(e.length);
		e.reserved = 0;
		memcpy(p + sizeof(h) + i * sizeof(e), &e, sizeof(e));
	}
	crc = htole32(wps_crc32c(0, p, WPS_NBD_CHAIN_COPY - 4));
	memcpy(p + WPS_NBD_CHAIN_COPY - 4, &crc, 4);
}

/* Index of the entry whose uuid is uuid, or -1. */
static int find_uuid(const struct wps_nbd_chain *t, const uint8_t *uuid)
{
	uint32_t i;

	for (i = 0; i < t->nr; i++)
		if (!memcmp(t->ent[i].uuid, uuid, 16))
			return (int)i;
	return -1;
}

int wps_nbd_chain_place(const struct wps_nbd_chain *t, unsigned int keep,
			uint64_t size, uint64_t need, uint32_t *drop,
			uint64_t *base, uint64_t *end)
{
	static const uint8_t none[16];
	uint32_t first, k, i;
	uint64_t next;

	*drop = 0;
	*base = wps_nbd_chain_next_offset(t);
	*end = size;
	if (t->state != WPS_NBD_CHAIN_VALID || !t->nr)
		return *base < size && size - *base >= need ? 0 : -ENOSPC;
	/* The protected suffix: the last `keep` entries and the images
	 * they are increments of, back to their full one. An increment's
	 * parent is an earlier entry, so this is e[first..nr-1]. */
	first = keep && keep < t->nr ? t->nr - keep : 0;
	for (i = t->nr; i-- > first;) {
		int p;

		if (!memcmp(t->ent[i].parent_uuid, none, 16))
			continue;
		p = find_uuid(t, t->ent[i].parent_uuid);
		if (p >= 0 && (uint32_t)p < first)
			first = (uint32_t)p;
	}
	if (!keep)
		first = 0;
	next = *base;
	/* Drop as few of the oldest as it takes; the newest stay. */
	for (k = 0; k <= first; k++) {
		const struct wps_nbd_chain_ent *o = &t->ent[k];
		const struct wps_nbd_chain_ent *l = &t->ent[t->nr - 1];

		if (t->nr - k >= WPS_IMG_CHAIN_MAX)
			continue;
		*drop = k;
		if (o->offset <= l->offset) {
			/* not wrapped: after the last, else from the start */
			if (next < size && size - next >= need) {
				*base = next;
				*end = size;
				return 0;
			}
			if (keep && o->offset - WPS_NBD_CHAIN_DATA >= need) {
				*base = WPS_NBD_CHAIN_DATA;
				*end = o->offset;
				return 0;
			}
		} else if (next <= o->offset && o->offset - next >= need) {
			*base = next;     /* wrapped: up to the oldest */
			*end = o->offset;
			return 0;
		}
	}
	*drop = 0;
	*base = next;
	*end = size;
	return -ENOSPC;
}
