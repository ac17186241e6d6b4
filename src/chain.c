/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint chains: finding and checking ancestors, eager restore through
 * a chain, merge and retention. An incremental image (one with a parent
 * UUID) holds every block written since its parent's instant, zeros
 * included; a block it lacks is its parent's. So a restore applies the
 * images oldest first, and a merge takes each block from the newest image
 * that has it.
 *
 * Owns: the open images of a chain and their paths.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/chain.h>

#include "base/log.h"
#include "stream/format.h"
#include "stream/img_reader_int.h"
#include "stream/img_writer.h"
#include "stream/nbd_chain.h"

#define PARENT_BLOB "wpsnap.parent"
#define MERGE_CHUNK (1u << 20)

struct wps_chain {
	struct wps_ctx *ctx;
	unsigned int n;
	struct wps_image **img;   /* [0] full .. [n-1] the one opened */
	char **path;
};

static const uint8_t no_uuid[16];

/* The parent's path: its file name (blob) in the child's directory, or
 * on a chain export (stream/nbd_chain.h) the member "#N" of the export
 * the child was read from, whatever member or URI named the child. */
static int parent_path(struct wps_ctx *ctx, struct wps_image *img,
		       const char *child, char *out, size_t len)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	char dir[PATH_MAX], name[256];
	const char *bname;
	const void *data;
	unsigned int i;
	size_t blen;

	for (i = 0; i < in->nr_blobs; i++) {
		if (wps_image_get_blob(img, i, &bname, &data, &blen) ||
		    strcmp(bname, PARENT_BLOB))
			continue;
		if (!blen || blen >= sizeof(name) || memchr(data, '/', blen) ||
		    memchr(data, '\0', blen)) {
			wps_err(ctx, "%s: its parent's name is not a file name", child);
			return -EBADMSG;
		}
		memcpy(name, data, blen);
		name[blen] = '\0';
		if (name[0] == '#' && wps_img_name_is_nbd(child)) {
			const char *m = wps_nbd_chain_member(child);
			size_t ulen = m ? (size_t)(m - child) : strlen(child);

			if ((size_t)snprintf(out, len, "%.*s%s", (int)ulen, child,
					     name) >= len)
				return -ENAMETOOLONG;
			return 0;
		}
		snprintf(dir, sizeof(dir), "%s", child);
		if ((size_t)snprintf(out, len, "%s/%s", dirname(dir), name) >= len)
			return -ENAMETOOLONG;
		return 0;
	}
	wps_err(ctx, "%s: an incremental image without its parent's name", child);
	return -EBADMSG;
}

static int same_layout(struct wps_ctx *ctx, struct wps_image *a, const char *pa,
		       struct wps_image *b, const char *pb)
{
	const struct wps_image_info *ia = wps_image_get_info(a);
	const struct wps_image_info *ib = wps_image_get_info(b);
	unsigned int i;

	if (ia->nr_regions != ib->nr_regions)
		goto bad;
	for (i = 0; i < ia->nr_regions; i++) {
		const struct wps_image_region *ra = wps_image_get_region(a, i);
		const struct wps_image_region *rb = wps_image_get_region(b, i);

		if (ra->size != rb->size || ra->page_size != rb->page_size ||
		    ra->host_addr != rb->host_addr || ra->backing != rb->backing)
			goto bad;
	}
	return 0;
bad:
	wps_err(ctx, "%s and its parent %s describe different memory (regions "
		"differ): not one chain", pa, pb);
	return -EBADMSG;
}

int wps_chain_open(struct wps_ctx *ctx, const char *path, unsigned int flags,
		   struct wps_chain **out)
{
	struct wps_image **img = NULL, *cur = NULL;
	char **paths = NULL, next[PATH_MAX];
	struct wps_chain *c = NULL;
	unsigned int n = 0, cap = 0, i;
	char want[40], got[40];
	int ret;

	*out = NULL;
	snprintf(next, sizeof(next), "%s", path);
	for (;;) {
		const struct wps_image_info *in;

		/* Every image of a chain stays open (one fd each): a bound
		 * on the depth is a bound on the fds, and a chain deeper than
		 * docs/FORMAT.md allows is refused before it costs any. */
		if (n == WPS_IMG_CHAIN_MAX) {
			wps_err(ctx, "%s: a chain of more than %u images (the "
				"limit of docs/FORMAT.md 3.1): merge it (wpsnap "
				"merge, or checkpoint --keep)", path,
				WPS_IMG_CHAIN_MAX);
			ret = -EBADMSG;
			goto fail;
		}
		/* a parent on the same chain export shares the child's
		 * connections (stream/nbd_source.h) */
		ret = n ? wps_image_open_near(img[n - 1], next, flags, &cur) :
		      wps_image_open(ctx, next, flags, &cur);
		if (ret) {
			if (ret == -ENOENT && n)
				wps_err(ctx, "%s: its parent %s is missing", paths[n - 1],
					next);
			goto fail;
		}
		if (n) {
			const struct wps_image_info *child = wps_image_get_info(img[n - 1]);

			in = wps_image_get_info(cur);
			if (memcmp(in->uuid, child->parent_uuid, 16)) {
				wps_uuid_str(child->parent_uuid, want);
				wps_uuid_str(in->uuid, got);
				wps_err(ctx, "%s: its parent must be image %s, but %s is "
					"image %s", paths[n - 1], want, next, got);
				ret = -EBADMSG;
				goto fail;
			}
			ret = same_layout(ctx, img[n - 1], paths[n - 1], cur, next);
			if (ret)
				goto fail;
		}
		if (n == cap) {
			void *p1, *p2;

			cap = cap ? 2 * cap : 8;
			p1 = realloc(img, cap * sizeof(*img));
			if (p1)
				img = p1;
			p2 = realloc(paths, cap * sizeof(*paths));
			if (p2)
				paths = p2;
			if (!p1 || !p2) {
				ret = -ENOMEM;
				goto fail;
			}
		}
		img[n] = cur;
		paths[n] = strdup(next);
		cur = NULL;
		if (!paths[n++]) {
			ret = -ENOMEM;
			goto fail;
		}
		in = wps_image_get_info(img[n - 1]);
		if (!memcmp(in->parent_uuid, no_uuid, 16))
			break;
		/* A parent already in the chain (the image itself, or a
		 * descendant) is a cycle: refused before opening it again. */
		for (i = 0; i < n; i++) {
			if (memcmp(wps_image_get_info(img[i])->uuid,
				   in->parent_uuid, 16))
				continue;
			wps_uuid_str(in->parent_uuid, want);
			wps_err(ctx, "%s: its parent is image %s, which is %s, "
				"already in its chain: a cycle", paths[n - 1],
				want, i == n - 1 ? "itself" : paths[i]);
			ret = -EBADMSG;
			goto fail;
		}
		ret = parent_path(ctx, img[n - 1], paths[n - 1], next, sizeof(next));
		if (ret)
			goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		ret = -ENOMEM;
		goto fail;
	}
	/* Found newest first; kept oldest first. */
	for (i = 0; i < n / 2; i++) {
		struct wps_image *ti = img[i];
		char *tp = paths[i];

		img[i] = img[n - 1 - i];
		img[n - 1 - i] = ti;
		paths[i] = paths[n - 1 - i];
		paths[n - 1 - i] = tp;
	}
	c->ctx = ctx;
	c->n = n;
	c->img = img;
	c->path = paths;
	*out = c;
	return 0;
fail:
	wps_image_close(cur);
	for (i = 0; i < n; i++) {
		wps_image_close(img[i]);
		free(paths[i]);
	}
	free(img);
	free(paths);
	return ret;
}

void wps_chain_close(struct wps_chain *c)
{
	unsigned int i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++) {
		wps_image_close(c->img[i]);
		free(c->path[i]);
	}
	free(c->img);
	free(c->path);
	free(c);
}

unsigned int wps_chain_length(const struct wps_chain *c)
{
	return c->n;
}

struct wps_image *wps_chain_image(const struct wps_chain *c, unsigned int i)
{
	return i < c->n ? c->img[i] : NULL;
}

const char *wps_chain_path(const struct wps_chain *c, unsigned int i)
{
	return i < c->n ? c->path[i] : NULL;
}

int wps_chain_load(struct wps_chain *c, unsigned int r, void *dst,
		   struct wps_image_load_stats *st)
{
	struct wps_image_load_stats one, sum = { 0 };
	unsigned int i;
	int ret;

	sum.direct = true;
	for (i = 0; i < c->n; i++) {
		memset(&one, 0, sizeof(one));
		ret = wps_image_load(c->img[i], r, dst, &one);
		if (ret)
			return ret;
		sum.bytes += one.bytes;
		sum.ns += one.ns;
		sum.direct = sum.direct && one.direct;
	}
	if (st)
		*st = sum;
	return 0;
}

/* Blocks of region r still to take, newest image first. */
static int merge_region(struct wps_chain *c, unsigned int upto, unsigned int r,
			struct wps_img_writer *w, uint8_t *buf)
{
	const struct wps_image_region *reg = wps_image_get_region(c->img[0], r);
	uint64_t nb = reg->nr_blocks, *done, from, s, k, b, e;
	const uint64_t bs = WPS_IMG_BLOCK_SIZE;
	int ret = 0, i;

	done = calloc((nb + 63) / 64 + 1, 8);
	if (!done)
		return -ENOMEM;
	for (i = (int)upto; i >= 0 && !ret; i--) {
		for (from = 0; !ret; from = s + k) {
			ret = wps_image_next_extent(c->img[i], r, from, &s, &k);
			if (ret == -ENOENT) {
				ret = 0;
				break;
			}
			if (ret)
				break;
			for (b = s; b < s + k && !ret; b = e) {
				/* a run of blocks not yet taken, at most a chunk */
				while (b < s + k && (done[b / 64] >> (b % 64) & 1))
					b++;
				for (e = b; e < s + k && e - b < MERGE_CHUNK / bs &&
				     !(done[e / 64] >> (e % 64) & 1); e++)
					;
				if (e == b)
					break;
				ret = wps_image_read(c->img[i], r, b * bs, buf,
						     (e - b) * bs);
				if (!ret)
					ret = wps_img_writer_put(w, WPS_LANE_SWEEP, r,
								 b * bs, buf, (e - b) * bs);
				for (; !ret && b < e; b++)
					done[b / 64] |= 1ull << (b % 64);
				b = e;
			}
		}
	}
	free(done);
	return ret;
}

int wps_chain_merge(struct wps_chain *c, unsigned int upto,
		    const char *out_path, unsigned int flags)
{
	const struct wps_image_info *top;
	struct wps_img_writer_opts wo = { 0 };
	struct wps_img_writer_region *wr = NULL;
	struct wps_img_writer *w = NULL;
	uint8_t *buf = NULL;
	unsigned int i, nr;
	int ret;

	if (upto >= c->n)
		return -EINVAL;
	top = wps_image_get_info(c->img[upto]);
	nr = top->nr_regions;
	wr = calloc(nr ? nr : 1, sizeof(*wr));
	buf = malloc(MERGE_CHUNK);
	if (!wr || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nr; i++) {
		const struct wps_image_region *r = wps_image_get_region(c->img[upto], i);

		wr[i].host_addr = r->host_addr;
		wr[i].size = r->size;
		wr[i].page_size = r->page_size;
		wr[i].backing = r->backing;
		snprintf(wr[i].name, sizeof(wr[i].name), "%s", r->name);
	}
	memcpy(wo.uuid, top->uuid, 16);
	if (flags & WPS_CHAIN_MERGE_OVERWRITE)
		wo.flags |= WPS_IMGW_OVERWRITE;
	ret = wps_img_writer_open(c->ctx, out_path, wr, nr, &wo, &w);
	if (ret)
		goto out;
	wps_img_writer_set_instant(w, top->freeze_realtime_ns,
				   top->freeze_monotonic_ns);
	for (i = 0; i < top->nr_blobs && !ret; i++) {
		const char *name;
		const void *data;
		size_t len;

		ret = wps_image_get_blob(c->img[upto], i, &name, &data, &len);
		if (!ret && strcmp(name, PARENT_BLOB))
			ret = wps_img_writer_add_blob(w, name, data, len);
	}
	for (i = 0; i < nr && !ret; i++)
		ret = merge_region(c, upto, i, w, buf);
	if (!ret)
		ret = wps_img_writer_commit(w);
	if (ret)
		wps_err(c->ctx, "merging %s (%u images) into %s failed: %s",
			c->path[upto], upto + 1, out_path, strerror(-ret));
out:
	wps_img_writer_free(w);
	free(wr);
	free(buf);
	return ret;
}

int wps_chain_fold(struct wps_chain *c, unsigned int keep)
{
	unsigned int k, i;
	int ret = 0;

	if (!keep)
		return -EINVAL;
	if (wps_img_name_is_nbd(c->path[c->n - 1])) {
		/* A fold rewrites the oldest kept image in place and removes
		 * the older ones: neither exists on an export's chain table
		 * (docs/REMOTE.md, "Retention"). */
		wps_err(c->ctx, "%s: a chain on an NBD export cannot be folded: "
			"merge it into a file (wpsnap merge) or start a new chain",
			c->path[c->n - 1]);
		wps_chain_close(c);
		return -EOPNOTSUPP;
	}
	if (c->n <= keep) {
		wps_chain_close(c);
		return 0;
	}
	k = c->n - keep;    /* the oldest image kept: becomes the full one */
	/*
	 * The writer writes "<path>.partial" and renames it over path: until
	 * the rename the old chain is whole, after it the new one is (same
	 * UUID at the same name), and the images before k are then unused.
	 */
	ret = wps_chain_merge(c, k, c->path[k], WPS_CHAIN_MERGE_OVERWRITE);
	if (ret)
		goto out;
	for (i = 0; i < k; i++)
		if (unlink(c->path[i]) && errno != ENOENT)
			wps_warn(c->ctx, "retention: cannot remove %s, no longer "
				 "needed: %s", c->path[i], strerror(errno));
	wps_info(c->ctx, "retention: folded %u image(s) into %s", k + 1, c->path[k]);
out:
	wps_chain_close(c);
	return ret;
}

int wps_chain_open_flat(struct wps_ctx *ctx, const char *path,
			unsigned int flags, struct wps_image **out,
			unsigned int *merged)
{
	static const uint8_t none[16];
	struct wps_chain *chain;
	char tmp[PATH_MAX];
	int ret;

	if (merged)
		*merged = 0;
	ret = wps_image_open(ctx, path, flags, out);
	if (ret || !memcmp(wps_image_get_info(*out)->parent_uuid, none, 16))
		return ret;
	wps_image_close(*out);
	*out = NULL;
	if (wps_img_name_is_nbd(path)) {
		/* A chain on an export (stream/nbd_chain.h) has no directory
		 * beside it: the merge goes to a local temporary directory,
		 * unlinked as soon as it is open, like the file case. */
		const char *td = getenv("TMPDIR");

		if ((size_t)snprintf(tmp, sizeof(tmp), "%s/wpsnap-flat.%d.wpsnap",
				     td && *td ? td : "/var/tmp",
				     (int)getpid()) >= sizeof(tmp))
			return -ENAMETOOLONG;
	} else if (strstr(path, "://")) {
		wps_err(ctx, "%s: an incremental image over a URI cannot be "
			"merged here: merge it where its chain is (wpsnap "
			"merge)", path);
		return -EOPNOTSUPP;
	} else if ((size_t)snprintf(tmp, sizeof(tmp), "%s.flat.%d", path,
				    (int)getpid()) >= sizeof(tmp)) {
		return -ENAMETOOLONG;
	}
	ret = wps_chain_open(ctx, path, flags, &chain);
	if (ret)
		return ret;
	ret = wps_chain_merge(chain, wps_chain_length(chain) - 1, tmp,
			      WPS_CHAIN_MERGE_OVERWRITE);
	if (!ret && merged)
		*merged = wps_chain_length(chain);
	wps_chain_close(chain);
	if (!ret)
		ret = wps_image_open(ctx, tmp, flags, out);
	unlink(tmp);
	return ret;
}
