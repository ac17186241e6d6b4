/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Periodic checkpoints: the write tracker (wp/dirty.c) joined to the image
 * writer, and the order of a take (docs/CHECKPOINT.md has the reasoning):
 *
 *   1. full checkpoint only: copy every populated page while the guest
 *      runs (tracking is already on, so whatever changes under the copy
 *      is written again below);
 *   2. rounds, guest running: harvest what was written since the last
 *      harvest (which re-protects it), copy it into the image, again,
 *      until a round finds little or stops shrinking;
 *   3. pause; harvest the last changes: that is the instant; copy them
 *      to memory; resume;
 *   4. write those pages over their earlier copies, commit, fsync.
 *
 * The image is the memory at the instant of step 3: every page written
 * after its last copy in steps 1-2 was written after a harvest protected
 * it, so step 3 (or a later round) sees it. Blocks are written more than
 * once only across drains (WPS_IMGW_REWRITE), so a later write of a block
 * never lands before an earlier one.
 *
 * Page data goes through the writer's sink (<wpsnap/sink.h>: put, and
 * drain between rounds); the writer itself is only opened, given its
 * blobs, committed or freed here. Guest memory is read with the shared
 * reader (base/memsrc.h).
 *
 * Owns: the tracker, the writer of the take under way, the bitmaps of
 * what a take must save and the staging buffer of the pause.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/checkpoint.h>

#include "base/bits.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/memsrc.h"
#include "stream/img_writer.h"
#include "stream/nbd_chain.h"
#include "wp/compat.h"
#include "wp/dirty.h"
#include "wp/pagemap.h"

#define PAGE 4096ull
#define DEFAULT_ROUNDS 8
#define DEFAULT_TARGET (4ull << 20)
#define PARENT_BLOB "wpsnap.parent"

struct cregion {
	struct wps_region r;
	struct wps_memsrc src;  /* where we read it */
	char name[WPS_REGION_NAME_MAX + 1];
	uint64_t words;
	uint64_t *want;     /* pages to save in this step */
	uint64_t *zero;     /* pages handed back: save as zero */
};

struct wps_ckpt {
	struct wps_ctx *ctx;
	struct wps_ckpt_opts o;
	struct cregion *reg;
	unsigned int nr;
	struct wps_dirty *dirty;
	struct wps_pagemap pm;
	uint64_t seq;                  /* of the next take */
	bool have_parent;
	uint8_t parent_uuid[16];
	char parent_path[PATH_MAX];
	uint8_t *stage;                /* pause copies; grows, kept */
	size_t stage_size;
	uint8_t *bounce;               /* remote anonymous memory, in chunks */
	struct wps_img_writer *w;      /* of the take under way, for blobs */
	struct wps_sink sink;          /* its page data, during a take */
};

/* The harvest callback: mark the pages to save. */
static int mark(void *arg, unsigned int r, uint64_t off, uint64_t len,
		bool removed)
{
	struct wps_ckpt *ck = arg;
	struct cregion *g = &ck->reg[r];

	wps_bits_set(removed ? g->zero : g->want, off / PAGE,
		     (len + PAGE - 1) / PAGE);
	return 0;
}

typedef int (*run_fn)(struct wps_ckpt *ck, unsigned int r, uint64_t off,
		      uint64_t len, void *arg);

/* Runs of set bits of bm, in address order. */
static int for_each_run(struct wps_ckpt *ck, unsigned int r, const uint64_t *bm,
			run_fn fn, void *arg)
{
	uint64_t nb = ck->reg[r].r.size / PAGE, s, e;
	int ret;

	for (s = wps_bit_find(bm, 0, nb, true); s < nb;
	     s = wps_bit_find(bm, e, nb, true)) {
		e = wps_bit_find(bm, s, nb, false);
		ret = fn(ck, r, s * PAGE, (e - s) * PAGE, arg);
		if (ret)
			return ret;
	}
	return 0;
}

/*
 * What a harvest says must be saved: its written pages (want), and the
 * pages handed back and not written again since (zero: saved as zeros; a
 * page written after its removal is saved with its data).
 */
static int harvest_marks(struct wps_ckpt *ck)
{
	unsigned int i;
	uint64_t w;
	int ret;

	for (i = 0; i < ck->nr; i++) {
		memset(ck->reg[i].want, 0, ck->reg[i].words * 8);
		memset(ck->reg[i].zero, 0, ck->reg[i].words * 8);
	}
	ret = wps_dirty_harvest(ck->dirty, mark, ck);
	for (i = 0; !ret && i < ck->nr; i++)
		for (w = 0; w < ck->reg[i].words; w++)
			ck->reg[i].zero[w] &= ~ck->reg[i].want[w];
	return ret;
}

static uint64_t marked_bytes(struct wps_ckpt *ck, bool zero)
{
	uint64_t n = 0;
	unsigned int i;

	for (i = 0; i < ck->nr; i++)
		n += wps_bits_count(zero ? ck->reg[i].zero : ck->reg[i].want,
				    ck->reg[i].words);
	return n * PAGE;
}

#define BOUNCE (1u << 20)

/* Between rounds: every copy put so far is on the device, so a block put
 * again lands after its earlier copy. */
static int drain(struct wps_ckpt *ck)
{
	return ck->sink.ops->drain ? ck->sink.ops->drain(ck->sink.priv) : 0;
}

/* Copy a run from the guest straight into the image (guest running). */
static int put_live(struct wps_ckpt *ck, unsigned int r, uint64_t off,
		    uint64_t len, void *arg)
{
	return wps_memsrc_put(&ck->reg[r].src, &ck->sink, WPS_LANE_SWEEP, r,
			      off, len, ck->bounce, BOUNCE);
}

static int put_zero(struct wps_ckpt *ck, unsigned int r, uint64_t off,
		    uint64_t len, void *arg)
{
	static const uint8_t zeros[64 * 1024];
	int ret = 0;

	while (len && !ret) {
		uint64_t n = len < sizeof(zeros) ? len : sizeof(zeros);

		ret = ck->sink.ops->put(ck->sink.priv, WPS_LANE_SWEEP, r, off,
					zeros, n);
		off += n;
		len -= n;
	}
	return ret;
}

struct stage_pos {
	uint64_t used;
};

static int stage_copy(struct wps_ckpt *ck, unsigned int r, uint64_t off,
		      uint64_t len, void *arg)
{
	struct stage_pos *p = arg;
	int ret = wps_memsrc_read(&ck->reg[r].src, off, ck->stage + p->used,
				  len);

	p->used += len;
	return ret;
}

static int stage_put(struct wps_ckpt *ck, unsigned int r, uint64_t off,
		     uint64_t len, void *arg)
{
	struct stage_pos *p = arg;
	int ret;

	ret = ck->sink.ops->put(ck->sink.priv, WPS_LANE_SWEEP, r, off,
				ck->stage + p->used, len);
	p->used += len;
	return ret;
}

/*
 * Step 1: every populated page. A memfd's pages may sit in the file
 * without being mapped here (written through another mapping, or by a
 * restore with pwrite): its data extents come from the file; anonymous
 * memory from the page tables.
 */
struct pop_arg {
	struct wps_ckpt *ck;
	unsigned int r;
	uint64_t bytes;
};

static int pop_run(void *arg, uint64_t start, uint64_t end, uint64_t cat)
{
	struct pop_arg *p = arg;
	uint64_t base = p->ck->reg[p->r].r.host_addr;

	p->bytes += end - start;
	return put_live(p->ck, p->r, start - base, end - start, NULL);
}

static int copy_populated(struct wps_ckpt *ck, uint64_t *bytes)
{
	unsigned int i;
	int ret;

	for (i = 0; i < ck->nr; i++) {
		struct wps_region *r = &ck->reg[i].r;
		struct pop_arg p = { ck, i, 0 };

		if (r->fd >= 0 && r->backing != WPS_BACKING_ANON) {
			off_t pos = (off_t)r->fd_offset, end = pos + (off_t)r->size;

			while (pos < end) {
				off_t d = lseek(r->fd, pos, SEEK_DATA), h;

				if (d < 0 || d >= end)
					break;
				h = lseek(r->fd, d, SEEK_HOLE);
				if (h < 0 || h > end)
					h = end;
				ret = put_live(ck, i, (uint64_t)(d - (off_t)r->fd_offset),
					       (uint64_t)(h - d), NULL);
				if (ret)
					return ret;
				p.bytes += (uint64_t)(h - d);
				pos = h;
			}
		} else {
			ret = wps_pagemap_scan(&ck->pm, r->host_addr,
					       r->host_addr + r->size,
					       PAGE_IS_PRESENT | PAGE_IS_SWAPPED, 0,
					       pop_run, &p);
			if (ret)
				return ret;
		}
		*bytes += p.bytes;
	}
	return 0;
}

/* Step 2: one background round. Returns the bytes it copied. */
static int round_copy(struct wps_ckpt *ck, uint64_t *bytes)
{
	unsigned int i;
	int ret;

	ret = harvest_marks(ck);
	if (ret)
		return ret;
	*bytes = marked_bytes(ck, false) + marked_bytes(ck, true);
	ret = drain(ck);   /* earlier copies land first */
	for (i = 0; !ret && i < ck->nr; i++) {
		ret = for_each_run(ck, i, ck->reg[i].want, put_live, NULL);
		if (!ret)
			ret = for_each_run(ck, i, ck->reg[i].zero, put_zero, NULL);
	}
	return ret;
}

static int grow_stage(struct wps_ckpt *ck, uint64_t bytes)
{
	uint8_t *p;

	if (bytes <= ck->stage_size)
		return 0;
	p = realloc(ck->stage, bytes);
	if (!p)
		return -ENOMEM;
	ck->stage = p;
	ck->stage_size = bytes;
	return 0;
}

/* Step 3, inside the pause. */
static int take_instant(struct wps_ckpt *ck, struct wps_ckpt_stats *st,
			int64_t *rt, int64_t *mono)
{
	struct stage_pos pos = { 0 };
	uint64_t t0, t1, bytes;
	unsigned int i;
	int ret;

	t0 = wps_now_ns();
	ret = harvest_marks(ck);
	*mono = (int64_t)wps_now_ns();
	*rt = (int64_t)wps_clock_ns(CLOCK_REALTIME);
	if (ret)
		return ret;
	t1 = wps_now_ns();
	st->scan_ns = t1 - t0;
	if (ck->o.at_instant) {
		ret = ck->o.at_instant(ck->o.instant_arg, st->seq);
		if (ret) {
			wps_err(ck->ctx, "checkpoint %" PRIu64 ": the instant hook "
				"failed: %s", st->seq, strerror(ret < 0 ? -ret : ret));
			return ret < 0 ? ret : -EIO;
		}
	}
	bytes = marked_bytes(ck, false);
	ret = grow_stage(ck, bytes);
	if (ret) {
		wps_err(ck->ctx, "checkpoint %" PRIu64 ": no memory to copy the "
			"last %" PRIu64 " bytes in the pause", st->seq, bytes);
		return ret;
	}
	for (i = 0; i < ck->nr; i++) {
		ret = for_each_run(ck, i, ck->reg[i].want, stage_copy, &pos);
		if (ret)
			return ret;
	}
	st->copy_ns = wps_now_ns() - t1;
	st->pause_bytes = bytes;
	return 0;
}

static int open_writer(struct wps_ckpt *ck, const char *path,
		       struct wps_img_writer **w)
{
	struct wps_img_writer_opts wo = { 0 };
	struct wps_img_writer_region *wr;
	unsigned int i;
	int ret;

	wr = calloc(ck->nr, sizeof(*wr));
	if (!wr)
		return -ENOMEM;
	for (i = 0; i < ck->nr; i++) {
		wr[i].host_addr = ck->reg[i].r.host_addr;
		wr[i].size = ck->reg[i].r.size;
		wr[i].page_size = ck->reg[i].r.page_size;
		wr[i].backing = ck->reg[i].r.backing;
		snprintf(wr[i].name, sizeof(wr[i].name), "%s", ck->reg[i].name);
	}
	wo.flags = WPS_IMGW_REWRITE;
	if (ck->have_parent) {
		wo.flags |= WPS_IMGW_KEEP_ZEROS;
		memcpy(wo.parent_uuid, ck->parent_uuid, 16);
	}
	if (ck->o.flags & WPS_CKPT_OVERWRITE)
		wo.flags |= WPS_IMGW_OVERWRITE;
	if (ck->o.flags & WPS_CKPT_NO_DIRECT)
		wo.flags |= WPS_IMGW_NO_DIRECT;
	wo.buffer_budget = ck->o.buffer_budget;
	if (wps_nbd_chain_member(path))
		wo.keep = ck->o.keep;
	ret = wps_img_writer_open(ck->ctx, path, wr, ck->nr, &wo, w);
	free(wr);
	if (ret)
		return ret;
	if (ck->have_parent) {
		/* The parent's name where its child will look for it: a
		 * file's name in the same directory, or on a chain export
		 * the member "#N" (stream/nbd_chain.h), which holds whatever
		 * URI later reaches the export. */
		const char *member = wps_nbd_chain_member(ck->parent_path);
		char tmp[PATH_MAX];
		const char *name;

		snprintf(tmp, sizeof(tmp), "%s", ck->parent_path);
		name = member ? member : basename(tmp);
		ret = wps_img_writer_add_blob(*w, PARENT_BLOB, name, strlen(name));
	}
	return ret;
}

int wps_ckpt_take(struct wps_ckpt *ck, const char *path,
		  struct wps_ckpt_stats *st)
{
	struct wps_ckpt_stats s = { .seq = ck->seq };
	unsigned int max_rounds = ck->o.precopy_rounds ? ck->o.precopy_rounds :
				  DEFAULT_ROUNDS;
	uint64_t target = ck->o.precopy_target ? ck->o.precopy_target :
			  DEFAULT_TARGET;
	struct wps_img_writer *w = NULL;
	struct wps_img_writer_stats ws;
	struct stage_pos pos = { 0 };
	uint64_t t0 = wps_now_ns(), tp, th, prev = UINT64_MAX, n;
	int64_t rt = 0, mono = 0;
	unsigned int i;
	int ret, rret;

	if (ck->o.precopy_rounds == WPS_CKPT_NO_PRECOPY)
		max_rounds = 0;
	/* Retention on an export reclaims only what no kept checkpoint
	 * needs: a full image every keep checkpoints is what lets the
	 * images before it go (docs/REMOTE.md "Retention"). */
	if (ck->o.keep && wps_nbd_chain_member(path) && ck->seq % ck->o.keep == 0)
		ck->have_parent = false;
	ret = open_writer(ck, path, &w);
	if (ret)
		goto fail;
	ck->sink = wps_img_writer_sink(w);
	if (!ck->have_parent) {
		ret = copy_populated(ck, &s.precopy_bytes);
		if (ret)
			goto fail;
	}
	while (s.rounds < max_rounds) {
		ret = round_copy(ck, &n);
		if (ret)
			goto fail;
		s.rounds++;
		s.precopy_bytes += n;
		if (n < target || n >= prev - prev / 8)
			break;   /* small enough, or not converging */
		prev = n;
	}

	tp = wps_now_ns();
	ret = ck->o.pause(ck->o.pause_arg);
	th = wps_now_ns();
	s.handshake_ns = th - tp;
	if (ret) {
		wps_err(ck->ctx, "checkpoint %" PRIu64 ": pausing the guest "
			"failed: %s", s.seq, strerror(-ret));
		goto fail;
	}
	ret = take_instant(ck, &s, &rt, &mono);
	th = wps_now_ns();
	rret = ck->o.resume(ck->o.pause_arg);
	s.pause_ns = wps_now_ns() - tp;
	s.handshake_ns += wps_now_ns() - th;
	if (!ret && rret) {
		wps_err(ck->ctx, "checkpoint %" PRIu64 ": resuming the guest "
			"failed: %s", s.seq, strerror(-rret));
		ret = rret;
	}
	if (ret)
		goto fail;

	ret = drain(ck);
	for (i = 0; !ret && i < ck->nr; i++)
		ret = for_each_run(ck, i, ck->reg[i].want, stage_put, &pos);
	s.removed_bytes = marked_bytes(ck, true);
	for (i = 0; !ret && i < ck->nr; i++)
		ret = for_each_run(ck, i, ck->reg[i].zero, put_zero, NULL);
	if (ret)
		goto fail;
	if (ck->o.before_commit) {
		ck->w = w;
		ret = ck->o.before_commit(ck->o.instant_arg, ck, s.seq);
		ck->w = NULL;
		if (ret) {
			wps_err(ck->ctx, "checkpoint %" PRIu64 ": the caller's "
				"before-commit step failed: %s", s.seq,
				strerror(ret < 0 ? -ret : ret));
			ret = ret < 0 ? ret : -EIO;
			goto fail;
		}
	}
	wps_img_writer_set_instant(w, rt, mono);
	tp = wps_now_ns();
	ret = wps_img_writer_commit(w);
	s.commit_ns = wps_now_ns() - tp;
	if (ret)
		goto fail;
	wps_img_writer_get_stats(w, &ws);
	memcpy(s.uuid, wps_img_writer_uuid(w), 16);
	if (ck->have_parent)
		memcpy(s.parent_uuid, ck->parent_uuid, 16);
	s.image_data_bytes = ws.data_bytes;
	s.image_file_bytes = ws.file_bytes;
	s.dirty_bytes = ws.present_blocks * PAGE;
	s.instant_realtime_ns = rt;
	wps_img_writer_free(w);
	ck->sink = (struct wps_sink){ 0 };
	memcpy(ck->parent_uuid, s.uuid, 16);
	snprintf(ck->parent_path, sizeof(ck->parent_path), "%s", path);
	ck->have_parent = true;
	ck->seq++;
	s.total_ns = wps_now_ns() - t0;
	if (st)
		*st = s;
	wps_info(ck->ctx, "checkpoint %" PRIu64 " %s: pause %.3f ms (walk %.3f, "
		 "copy %.3f ms of %" PRIu64 " KiB), %u rounds, %" PRIu64 " KiB saved",
		 s.seq, path, s.pause_ns / 1e6, s.scan_ns / 1e6, s.copy_ns / 1e6,
		 s.pause_bytes >> 10, s.rounds, s.dirty_bytes >> 10);
	return 0;
fail:
	/* Whatever this take harvested is lost to the chain: only a full
	 * image can follow. Tracking goes on. */
	wps_img_writer_free(w);
	ck->sink = (struct wps_sink){ 0 };
	ck->have_parent = false;
	if (st)
		*st = s;
	return ret;
}

int wps_ckpt_add_blob(struct wps_ckpt *ck, const char *name, const void *data,
		      size_t len)
{
	if (!ck->w) {
		wps_err(ck->ctx, "checkpoint blob %s: only from before_commit", name);
		return -EINVAL;
	}
	return wps_img_writer_add_blob(ck->w, name, data, len);
}

int wps_ckpt_new(struct wps_ctx *ctx, const struct wps_region *regions,
		 unsigned int nr, const struct wps_ckpt_opts *opts,
		 struct wps_ckpt **out)
{
	struct wps_ckpt *ck;
	unsigned int i;
	int ret, uffd = opts ? opts->uffd : -1;

	*out = NULL;
	if (!opts || !opts->pause || !opts->resume) {
		wps_err(ctx, "checkpoints need the guest's pause and resume calls");
		ret = -EINVAL;
		goto fail_fd;
	}
	for (i = 0; opts->pid && i < nr; i++) {
		if (regions[i].fd < 0 && !regions[i].local &&
		    regions[i].backing != WPS_BACKING_ANON) {
			wps_err(ctx, "region %u at 0x%llx of process %d: shared "
				"memory needs its fd", i,
				(unsigned long long)regions[i].host_addr,
				(int)opts->pid);
			ret = -EINVAL;
			goto fail_fd;
		}
	}
	ck = calloc(1, sizeof(*ck));
	if (!ck) {
		ret = -ENOMEM;
		goto fail_fd;
	}
	ck->ctx = ctx;
	ck->o = *opts;
	ck->pm.fd = -1;
	ck->reg = calloc(nr ? nr : 1, sizeof(*ck->reg));
	if (!ck->reg) {
		ret = -ENOMEM;
		goto fail;
	}
	ck->nr = nr;
	for (i = 0; i < nr; i++) {
		struct cregion *g = &ck->reg[i];

		g->r = regions[i];
		if (regions[i].name)
			snprintf(g->name, sizeof(g->name), "%s", regions[i].name);
		g->r.name = g->name;
		ret = wps_memsrc_open(&g->src, ctx, opts->pid, &regions[i]);
		if (ret)
			goto fail;
		g->words = (regions[i].size / PAGE + 63) / 64;
		g->want = calloc(g->words ? g->words : 1, 8);
		g->zero = calloc(g->words ? g->words : 1, 8);
		if (!g->want || !g->zero) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	ck->bounce = malloc(BOUNCE);
	if (!ck->bounce) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = wps_pagemap_open(ctx, opts->pid, &ck->pm);
	if (ret)
		goto fail;
	ret = wps_dirty_new(ctx, regions, nr, opts->pid, uffd, &ck->dirty);
	uffd = -1;   /* the tracker has it, closed or kept */
	if (ret)
		goto fail;
	ret = wps_dirty_arm(ck->dirty);
	if (ret)
		goto fail;
	*out = ck;
	return 0;
fail:
	wps_ckpt_free(ck);
fail_fd:
	if (uffd >= 0)
		close(uffd);
	return ret;
}

void wps_ckpt_free(struct wps_ckpt *ck)
{
	unsigned int i;

	if (!ck)
		return;
	wps_dirty_free(ck->dirty);
	wps_pagemap_close(&ck->pm);
	for (i = 0; i < ck->nr; i++) {
		free(ck->reg[i].want);
		free(ck->reg[i].zero);
		wps_memsrc_close(&ck->reg[i].src);
	}
	free(ck->reg);
	free(ck->stage);
	free(ck->bounce);
	free(ck);
}
