/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The public snapshot object: joins the engine (wp/) to the image writer
 * (stream/) and owns the order of the end game: every pre-image saved and
 * all protection removed first, then the image is committed; any failure
 * removes protection and the partial file, and publishes nothing.
 * It also owns the list of pages the engine saw written after the
 * instant, stored as the image blob "wpsnap.written" before the commit
 * (a working-set hint for lazy restore, include/wpsnap/wset.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wpsnap/wset.h>

#include "base/clock.h"
#include "base/log.h"
#include "src/snapshot_trace.h"
#include "stream/img_writer.h"
#include "wp/engine.h"

struct wps_snapshot {
	struct wps_ctx *ctx;
	struct wps_engine *eng;
	struct wps_img_writer *w;
	/* pages written after the instant (engine's fault thread), stored
	 * as the blob "wpsnap.written" before commit */
	struct wps_wset *written;
	int phase;              /* enum wps_phase, atomic */
	bool frozen, waited;
	int result;
	uint64_t t_start, t_end;
};

static void set_phase(struct wps_snapshot *s, enum wps_phase p)
{
	__atomic_store_n(&s->phase, p, __ATOMIC_RELEASE);
}

/* The engine's written-page callback (fault thread only, so the set has
 * one writer; called between faults, in batches, so the realloc of a
 * growing list never stalls a guest write). Best effort: the list is
 * bounded and ENOMEM only loses the hint, never the snapshot. */
static void note_written(void *arg, uint32_t region, uint64_t block,
			 uint64_t count)
{
	wps_wset_add(arg, region, block, count);
}

int wps_snapshot_new(struct wps_ctx *ctx, const struct wps_region *regions,
		     unsigned int nr, const struct wps_snapshot_opts *opts,
		     struct wps_snapshot **out)
{
	struct wps_img_writer_opts wo = { 0 };
	struct wps_img_writer_region *wr = NULL;
	struct wps_engine_opts eo;
	struct wps_snapshot *s;
	unsigned int i;
	int ret;

	if (!opts || !opts->path || !*opts->path) {
		wps_err(ctx, "snapshot: no image path given");
		return -EINVAL;
	}
	ret = wps_regions_check(ctx, regions, nr);
	if (ret)
		return ret;
	s = calloc(1, sizeof(*s));
	wr = calloc(nr, sizeof(*wr));
	if (!s || !wr) {
		ret = -ENOMEM;
		goto fail;
	}
	s->ctx = ctx;
	for (i = 0; i < nr; i++) {
		wr[i].host_addr = regions[i].host_addr;
		wr[i].size = regions[i].size;
		wr[i].page_size = regions[i].page_size;
		wr[i].backing = regions[i].backing;
		if (regions[i].name)
			snprintf(wr[i].name, sizeof(wr[i].name), "%s",
				 regions[i].name);
	}
	wo.buffer_budget = opts->buffer_budget;
	if (opts->flags & WPS_SNAP_OVERWRITE)
		wo.flags |= WPS_IMGW_OVERWRITE;
	if (opts->flags & WPS_SNAP_NO_DIRECT)
		wo.flags |= WPS_IMGW_NO_DIRECT;
	ret = wps_img_writer_open(ctx, opts->path, wr, nr, &wo, &s->w);
	if (!ret)
		ret = wps_wset_new(NULL, &s->written);
	if (ret)
		goto fail;
	eo = (struct wps_engine_opts){
		.uffd = opts->uffd,
		.pid = opts->pid,
		.sink = wps_img_writer_sink(s->w),
		.pause = opts->pause,
		.resume = opts->resume,
		.pause_arg = opts->pause_arg,
		.freeze_simple = !!(opts->flags & WPS_SNAP_FREEZE_SIMPLE),
		.fault_window = opts->fault_window,
		.written = note_written,
		.written_arg = s->written,
	};
	ret = wps_engine_new(ctx, regions, nr, &eo, &s->eng);
	if (ret)
		goto fail;
	set_phase(s, WPS_PHASE_NEW);
	free(wr);
	*out = s;
	return 0;
fail:
	free(wr);
	if (s) {
		wps_img_writer_free(s->w);
		wps_wset_free(s->written);
		free(s);
	}
	return ret;
}

int wps_snapshot_add_blob(struct wps_snapshot *s, const char *name,
			  const void *data, size_t len)
{
	if (s->waited)
		return -EBUSY;
	return wps_img_writer_add_blob(s->w, name, data, len);
}

int wps_snapshot_freeze(struct wps_snapshot *s)
{
	int64_t rt, mono;
	int ret;

	if (s->frozen || s->waited)
		return -EALREADY;
	s->t_start = wps_now_ns();
	set_phase(s, WPS_PHASE_FREEZING);
	ret = wps_engine_freeze(s->eng);
	if (ret) {
		wps_img_writer_abort(s->w);
		s->waited = true;
		s->result = ret;
		set_phase(s, WPS_PHASE_FAILED);
		return ret;
	}
	s->frozen = true;
	wps_engine_instant(s->eng, &rt, &mono);
	wps_img_writer_set_instant(s->w, rt, mono);
	set_phase(s, WPS_PHASE_COPYING);
	return 0;
}

/* The engine's fault thread is joined: its list of pages written after
 * the instant is final. A hint for restores, so failing to store it costs
 * the image nothing but the hint. */
static void add_written(struct wps_snapshot *s)
{
	size_t len;
	void *buf;
	int ret;

	if (!s->written->nr)
		return;
	ret = wps_wset_encode(s->written, &buf, &len);
	if (ret)
		return;
	ret = wps_img_writer_add_blob(s->w, WPS_WSET_BLOB, buf, len);
	free(buf);
	if (ret)
		wps_warn(s->ctx, "snapshot: the pages written during the "
			 "snapshot are not recorded in the image: %s",
			 strerror(-ret));
}

int wps_snapshot_wait(struct wps_snapshot *s)
{
	int ret;

	if (s->waited)
		return s->result;
	ret = wps_engine_wait(s->eng);
	if (!ret && !s->frozen)
		ret = -EINVAL;  /* nothing was frozen: nothing to publish */
	if (!ret) {
		set_phase(s, WPS_PHASE_PUBLISHING);
		add_written(s);
		ret = wps_img_writer_commit(s->w);
	} else {
		wps_img_writer_abort(s->w);
	}
	s->t_end = wps_now_ns();
	s->waited = true;
	s->result = ret;
	set_phase(s, !ret ? WPS_PHASE_DONE :
		     ret == -ECANCELED ? WPS_PHASE_CANCELLED : WPS_PHASE_FAILED);
	return ret;
}

void wps_snapshot_cancel(struct wps_snapshot *s)
{
	wps_engine_cancel(s->eng);
}

void wps_snapshot_progress(struct wps_snapshot *s, struct wps_progress *p)
{
	wps_engine_progress(s->eng, p);
	p->phase = __atomic_load_n(&s->phase, __ATOMIC_ACQUIRE);
}

void wps_snapshot_stats(struct wps_snapshot *s, struct wps_snapshot_stats *st)
{
	struct wps_img_writer_stats ws;

	memset(st, 0, sizeof(*st));
	wps_engine_stats(s->eng, st);
	wps_img_writer_get_stats(s->w, &ws);
	st->image_data_bytes = ws.data_bytes;
	st->image_file_bytes = ws.file_bytes;
	st->tracker_bytes += ws.memory_bytes;
	st->direct_io = ws.direct;
	if (s->t_end)
		st->total_ns = s->t_end - s->t_start;
}

int wps_snapshot_fault_trace(struct wps_snapshot *s,
			     struct wps_fault_trace *out)
{
	if (!s->waited || !s->frozen)
		return -EBUSY;
	return wps_engine_fault_trace(s->eng, out);
}

void wps_snapshot_free(struct wps_snapshot *s)
{
	if (!s)
		return;
	if (!s->waited) {
		wps_snapshot_cancel(s);
		wps_snapshot_wait(s);
	}
	wps_engine_free(s->eng);
	wps_img_writer_free(s->w);
	wps_wset_free(s->written);
	free(s);
}
