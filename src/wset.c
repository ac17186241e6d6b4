/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Working sets (include/wpsnap/wset.h): ordered block ranges a restored
 * guest needs early, their two on-disk forms (the image blob
 * "wpsnap.written" and the "<image>.wset" file, docs/FORMAT.md section 10)
 * and their conversion to the pager's first-prefetch list.
 *
 * It owns only the set's range array. Files are written atomically
 * (temporary file, fsync, rename) so a reader sees the old set or the new
 * one, never a torn one; and every file carries the image's UUID and two
 * checksums, so a stale file left by another image of the same name, or a
 * damaged one, is refused with a message instead of steering prefetch
 * wrong. Prefetching wrong ranges would only cost time, never correctness
 * (the pager verifies every byte it installs), which is why a bad file is
 * ignored rather than fatal for the restore.
 */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/wset.h>

#include "base/log.h"
#include "stream/crc32c.h"

#define WSET_MAGIC "WPSNAPWS"
#define WSET_VERSION 1u
#define WSET_HDR 64u
#define WSET_REC 24u
#define WSET_F_TRUNCATED 1u

/* The 24-byte record shared by the blob and the file. */
static void put_rec(uint8_t *p, const struct wps_wset_range *r)
{
	uint32_t region = htole32(r->region), zero = 0;
	uint64_t block = htole64(r->block), count = htole64(r->count);

	memcpy(p, &region, 4);
	memcpy(p + 4, &zero, 4);
	memcpy(p + 8, &block, 8);
	memcpy(p + 16, &count, 8);
}

static void get_rec(const uint8_t *p, struct wps_wset_range *r,
		    uint32_t *reserved)
{
	uint32_t region, rsv;
	uint64_t block, count;

	memcpy(&region, p, 4);
	memcpy(&rsv, p + 4, 4);
	memcpy(&block, p + 8, 8);
	memcpy(&count, p + 16, 8);
	r->region = le32toh(region);
	*reserved = le32toh(rsv);
	r->block = le64toh(block);
	r->count = le64toh(count);
}

int wps_wset_new(const uint8_t *uuid, struct wps_wset **out)
{
	struct wps_wset *ws = calloc(1, sizeof(*ws));

	*out = NULL;
	if (!ws)
		return -ENOMEM;
	if (uuid)
		memcpy(ws->uuid, uuid, sizeof(ws->uuid));
	*out = ws;
	return 0;
}

void wps_wset_free(struct wps_wset *ws)
{
	if (!ws)
		return;
	free(ws->ranges);
	free(ws);
}

static int grow(struct wps_wset *ws)
{
	size_t cap = ws->cap ? ws->cap * 2 : 64;
	struct wps_wset_range *n;

	if (cap > WPS_WSET_MAX_RANGES)
		cap = WPS_WSET_MAX_RANGES;
	n = realloc(ws->ranges, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	ws->ranges = n;
	ws->cap = cap;
	return 0;
}

int wps_wset_add(struct wps_wset *ws, uint32_t region, uint64_t block,
		 uint64_t count)
{
	struct wps_wset_range *last = ws->nr ? &ws->ranges[ws->nr - 1] : NULL;
	int ret;

	if (!count)
		return 0;
	if (block + count < block)
		return -EINVAL;
	if (last && last->region == region && last->block + last->count == block) {
		last->count += count;
		return 0;
	}
	if (ws->nr >= WPS_WSET_MAX_RANGES) {
		ws->truncated = true;
		return -ENOSPC;
	}
	if (ws->nr == ws->cap && (ret = grow(ws)))
		return ret;
	ws->ranges[ws->nr++] = (struct wps_wset_range){ region, block, count };
	return 0;
}

/* Disjoint, sorted (region, block) intervals of what ws holds: the index
 * against which additions are deduplicated. */
struct cover {
	struct wps_wset_range *v;
	size_t n;
};

static int cmp_range(const void *a, const void *b)
{
	const struct wps_wset_range *x = a, *y = b;

	if (x->region != y->region)
		return x->region < y->region ? -1 : 1;
	return x->block < y->block ? -1 : x->block > y->block;
}

static int cover_build(const struct wps_wset *ws, struct cover *c)
{
	size_t i, n = 0;

	c->v = NULL;
	c->n = 0;
	if (!ws->nr)
		return 0;
	c->v = malloc(ws->nr * sizeof(*c->v));
	if (!c->v)
		return -ENOMEM;
	memcpy(c->v, ws->ranges, ws->nr * sizeof(*c->v));
	qsort(c->v, ws->nr, sizeof(*c->v), cmp_range);
	for (i = 0; i < ws->nr; i++) {
		struct wps_wset_range *p = n ? &c->v[n - 1] : NULL;

		if (p && p->region == c->v[i].region &&
		    c->v[i].block <= p->block + p->count) {
			uint64_t e = c->v[i].block + c->v[i].count;

			if (e > p->block + p->count)
				p->count = e - p->block;
			continue;
		}
		c->v[n++] = c->v[i];
	}
	c->n = n;
	return 0;
}

/* First interval of c that ends after (region, block), or c->n. */
static size_t cover_find(const struct cover *c, uint32_t region, uint64_t block)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct wps_wset_range *m = &c->v[mid];

		if (m->region < region ||
		    (m->region == region && m->block + m->count <= block))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Append the parts of [block, block + count) that c does not cover. */
static int add_uncovered(struct wps_wset *ws, const struct cover *c,
			 uint32_t region, uint64_t block, uint64_t count)
{
	uint64_t end = block + count;
	size_t i = cover_find(c, region, block);
	int ret;

	while (block < end) {
		const struct wps_wset_range *v = i < c->n ? &c->v[i] : NULL;

		if (!v || v->region != region || v->block >= end)
			return wps_wset_add(ws, region, block, end - block);
		if (v->block > block) {
			ret = wps_wset_add(ws, region, block, v->block - block);
			if (ret)
				return ret;
		}
		block = v->block + v->count;
		i++;
	}
	return 0;
}

/* Cap reached in the middle: what fitted stays, ws->truncated says so. */
int wps_wset_merge(struct wps_wset *ws, const struct wps_wset *src)
{
	struct cover c;
	size_t i;
	int ret;

	if (!src)
		return 0;
	ret = cover_build(ws, &c);
	for (i = 0; !ret && i < src->nr; i++)
		ret = add_uncovered(ws, &c, src->ranges[i].region,
				    src->ranges[i].block, src->ranges[i].count);
	free(c.v);
	return ret == -ENOSPC ? 0 : ret;
}

int wps_wset_add_ranges(struct wps_wset *ws, uint32_t region,
			const struct wps_pager_range *r, size_t nr)
{
	struct cover c;
	size_t i;
	int ret;

	ret = cover_build(ws, &c);
	for (i = 0; !ret && i < nr; i++)
		ret = add_uncovered(ws, &c, region, r[i].block, r[i].count);
	free(c.v);
	return ret == -ENOSPC ? 0 : ret;
}

uint64_t wps_wset_blocks(const struct wps_wset *ws, uint32_t region)
{
	uint64_t n = 0;
	size_t i;

	for (i = 0; ws && i < ws->nr; i++)
		if (ws->ranges[i].region == region)
			n += ws->ranges[i].count;
	return n;
}

int wps_wset_path(const char *image, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s%s", image, WPS_WSET_SUFFIX);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int wps_wset_encode(const struct wps_wset *ws, void **buf, size_t *len)
{
	uint8_t *p;
	size_t i;

	*buf = NULL;
	*len = ws->nr * WSET_REC;
	p = malloc(*len ? *len : 1);
	if (!p)
		return -ENOMEM;
	for (i = 0; i < ws->nr; i++)
		put_rec(p + i * WSET_REC, &ws->ranges[i]);
	*buf = p;
	return 0;
}

/* Parse n records at p into ws; what names the source for messages. */
static int decode(struct wps_ctx *ctx, const char *what, const uint8_t *p,
		  size_t n, struct wps_wset *ws)
{
	struct wps_wset_range r;
	uint32_t rsv;
	size_t i;
	int ret;

	if (n > WPS_WSET_MAX_RANGES) {
		wps_err(ctx, "%s: %zu ranges, more than the %u allowed", what,
			n, WPS_WSET_MAX_RANGES);
		return -EBADMSG;
	}
	for (i = 0; i < n; i++) {
		get_rec(p + i * WSET_REC, &r, &rsv);
		if (rsv || !r.count || r.block + r.count < r.block) {
			wps_err(ctx, "%s: record %zu is malformed (region %u, "
				"block %llu, count %llu, reserved %u)", what, i,
				r.region, (unsigned long long)r.block,
				(unsigned long long)r.count, rsv);
			return -EBADMSG;
		}
		ret = wps_wset_add(ws, r.region, r.block, r.count);
		if (ret)
			return ret;
	}
	return 0;
}

int wps_wset_from_image(struct wps_ctx *ctx, struct wps_image *img,
			struct wps_wset **out)
{
	const struct wps_image_info *ii = wps_image_get_info(img);
	struct wps_wset *ws = NULL;
	const void *data;
	const char *name;
	unsigned int i;
	size_t len;
	int ret;

	*out = NULL;
	for (i = 0; i < ii->nr_blobs; i++) {
		ret = wps_image_get_blob(img, i, &name, &data, &len);
		if (ret)
			return ret;
		if (!strcmp(name, WPS_WSET_BLOB))
			break;
	}
	if (i == ii->nr_blobs)
		return -ENOENT;
	if (len % WSET_REC) {
		wps_err(ctx, "image blob %s: %zu bytes, not a multiple of the "
			"%u-byte record", WPS_WSET_BLOB, len, WSET_REC);
		return -EBADMSG;
	}
	ret = wps_wset_new(ii->uuid, &ws);
	if (!ret)
		ret = decode(ctx, "image blob " WPS_WSET_BLOB, data,
			     len / WSET_REC, ws);
	if (ret) {
		wps_wset_free(ws);
		return ret;
	}
	*out = ws;
	return 0;
}

static void uuid_str(const uint8_t *u, char *s)
{
	static const char hx[] = "0123456789abcdef";
	unsigned int i;

	for (i = 0; i < 16; i++) {
		*s++ = hx[u[i] >> 4];
		*s++ = hx[u[i] & 15];
		if (i == 3 || i == 5 || i == 7 || i == 9)
			*s++ = '-';
	}
	*s = 0;
}

static int read_all(int fd, uint8_t *buf, size_t len)
{
	ssize_t n;

	while (len) {
		n = read(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -EBADMSG;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int wps_wset_load(struct wps_ctx *ctx, const char *path, const uint8_t *uuid,
		  struct wps_wset **out)
{
	uint8_t hdr[WSET_HDR], *recs = NULL;
	uint32_t version, flags, crc, rcrc;
	struct wps_wset *ws = NULL;
	char a[40], b[40];
	uint64_t nr;
	struct stat st;
	int fd, ret;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret != -ENOENT)
			wps_err(ctx, "working set %s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		wps_err(ctx, "working set %s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size < (off_t)WSET_HDR) {
		wps_err(ctx, "working set %s: %lld bytes, shorter than its "
			"header: ignored", path, (long long)st.st_size);
		ret = -EBADMSG;
		goto out;
	}
	ret = read_all(fd, hdr, sizeof(hdr));
	if (ret)
		goto io;
	if (memcmp(hdr, WSET_MAGIC, 8)) {
		wps_err(ctx, "working set %s: not a working-set file (bad "
			"magic): ignored", path);
		ret = -EPROTO;
		goto out;
	}
	memcpy(&version, hdr + 8, 4);
	memcpy(&flags, hdr + 12, 4);
	memcpy(&nr, hdr + 32, 8);
	memcpy(&rcrc, hdr + 40, 4);
	memcpy(&crc, hdr + 60, 4);
	version = le32toh(version);
	flags = le32toh(flags);
	nr = le64toh(nr);
	if (version != WSET_VERSION) {
		wps_err(ctx, "working set %s: version %u, this reader knows %u: "
			"ignored", path, version, WSET_VERSION);
		ret = -EPROTO;
		goto out;
	}
	if (le32toh(crc) != wps_crc32c(0, hdr, 60)) {
		wps_err(ctx, "working set %s: header checksum mismatch: "
			"damaged, ignored", path);
		ret = -EBADMSG;
		goto out;
	}
	if (flags & ~WSET_F_TRUNCATED || nr > WPS_WSET_MAX_RANGES ||
	    (uint64_t)st.st_size != WSET_HDR + nr * WSET_REC) {
		wps_err(ctx, "working set %s: %llu ranges in a file of %lld "
			"bytes (flags 0x%x): damaged, ignored", path,
			(unsigned long long)nr, (long long)st.st_size, flags);
		ret = -EBADMSG;
		goto out;
	}
	if (uuid && memcmp(uuid, hdr + 16, 16)) {
		uuid_str(hdr + 16, a);
		uuid_str(uuid, b);
		wps_warn(ctx, "working set %s was recorded for image %s, not "
			 "this image (%s): ignored", path, a, b);
		ret = -ESTALE;
		goto out;
	}
	recs = malloc(nr ? nr * WSET_REC : 1);
	if (!recs) {
		ret = -ENOMEM;
		goto out;
	}
	ret = read_all(fd, recs, nr * WSET_REC);
	if (ret)
		goto io;
	if (le32toh(rcrc) != wps_crc32c(0, recs, nr * WSET_REC)) {
		wps_err(ctx, "working set %s: checksum mismatch in its %llu "
			"ranges: damaged, ignored", path, (unsigned long long)nr);
		ret = -EBADMSG;
		goto out;
	}
	ret = wps_wset_new(hdr + 16, &ws);
	if (!ret)
		ret = decode(ctx, path, recs, nr, ws);
	if (ret)
		goto out;
	ws->truncated = flags & WSET_F_TRUNCATED;
	*out = ws;
	ws = NULL;
	goto out;
io:
	wps_err(ctx, "working set %s: read failed: %s", path,
		ret == -EBADMSG ? "file shorter than read" : strerror(-ret));
out:
	wps_wset_free(ws);
	free(recs);
	close(fd);
	return ret;
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	ssize_t n;

	while (len) {
		n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int wps_wset_save(struct wps_ctx *ctx, const char *path,
		  const struct wps_wset *ws)
{
	size_t len = WSET_HDR + ws->nr * WSET_REC, i;
	uint32_t v32;
	uint64_t v64;
	uint8_t *buf;
	char *tmp;
	int fd = -1, ret;

	buf = calloc(1, len);
	tmp = malloc(strlen(path) + 32);
	if (!buf || !tmp) {
		ret = -ENOMEM;
		goto out;
	}
	sprintf(tmp, "%s.tmp.%d", path, (int)getpid());
	memcpy(buf, WSET_MAGIC, 8);
	v32 = htole32(WSET_VERSION);
	memcpy(buf + 8, &v32, 4);
	v32 = htole32(ws->truncated ? WSET_F_TRUNCATED : 0);
	memcpy(buf + 12, &v32, 4);
	memcpy(buf + 16, ws->uuid, 16);
	v64 = htole64(ws->nr);
	memcpy(buf + 32, &v64, 8);
	for (i = 0; i < ws->nr; i++)
		put_rec(buf + WSET_HDR + i * WSET_REC, &ws->ranges[i]);
	v32 = htole32(wps_crc32c(0, buf + WSET_HDR, ws->nr * WSET_REC));
	memcpy(buf + 40, &v32, 4);
	v32 = htole32(wps_crc32c(0, buf, 60));
	memcpy(buf + 60, &v32, 4);

	/* A new file, never one found under the temporary name: wpsnapd
	 * (root) writes these beside images in directories its clients
	 * own, where a planted link must not redirect the write. A stale
	 * temporary of an earlier process with our pid is removed first. */
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  0644);
	if (fd < 0) {
		ret = -errno;
		wps_err(ctx, "working set %s: cannot create %s: %s", path, tmp,
			strerror(errno));
		goto out;
	}
	ret = write_all(fd, buf, len);
	if (!ret && fsync(fd))
		ret = -errno;
	if (!ret && close(fd))
		ret = -errno;
	fd = -1;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret) {
		wps_err(ctx, "working set %s: writing %s: %s", path, tmp,
			strerror(-ret));
		unlink(tmp);
	}
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(buf);
	return ret;
}

int wps_wset_pager_ranges(const struct wps_wset *ws, uint32_t region,
			  struct wps_pager_range **out, unsigned int *nr)
{
	struct wps_pager_range *v;
	size_t i, n = 0;

	for (i = 0; ws && i < ws->nr; i++)
		n += ws->ranges[i].region == region;
	if (!n)
		return 0;
	if (*nr + n > UINT32_MAX)
		return -EOVERFLOW;
	v = realloc(*out, (*nr + n) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (i = 0; i < ws->nr; i++)
		if (ws->ranges[i].region == region)
			v[(*nr)++] = (struct wps_pager_range){
				ws->ranges[i].block, ws->ranges[i].count };
	*out = v;
	return 0;
}
