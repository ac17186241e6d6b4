/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image writer: pages in any order -> a format-v1 image (docs/FORMAT.md).
 *
 * It owns, from open to commit or abort: the file "<path>.partial" (fd),
 * an arena of aligned I/O buffers (one mmap), an aio context, an eventfd
 * and one I/O thread. Every page has a fixed place in the file, so a page
 * is copied once into a buffer and written straight to its place; nothing
 * is reordered or kept beyond the write.
 *
 * Threads. Two lanes (sweep and fault) call put() concurrently; each owns
 * its current buffer and touches shared state only through atomics
 * (bitmaps, group checksums, stats) or under w->lock (free lists, the
 * submit queues, one per lane). The I/O thread alone calls io_submit, so
 * that a put() never blocks on the block layer (io_submit may, for
 * allocation): lanes queue a full buffer's iocbs and kick the eventfd.
 * It takes the fault lane's extents first. Completions are retired by a
 * reaper thread (file kind), so that a buffer comes back while io_submit
 * is blocked; without one the I/O thread reaps, woken by completions.
 *
 * Errors are sticky: the first failure is logged and every later call
 * returns it, and commit then removes the partial file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "stream/img_out.h"
#include "stream/img_reader_int.h"

int wps_imgw_error(const struct wps_img_writer *w)
{
	return __atomic_load_n(&w->error, __ATOMIC_ACQUIRE);
}

/*
 * Record the first failure; later ones are consequences and stay quiet.
 * Must not be called with w->lock held: waiters check the error under the
 * lock, and taking it here before the broadcast is what keeps them from
 * missing the wake-up.
 */
void wps_imgw_set_error(struct wps_img_writer *w, int err, const char *fmt, ...)
{
	int expected = 0;

	if (__atomic_compare_exchange_n(&w->error, &expected, err, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    fmt) {
		char msg[512];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		wps_err(w->ctx, "%s", msg);
	}
	pthread_mutex_lock(&w->lock);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void kick(struct wps_img_writer *w)
{
	uint64_t one = 1;

	/* Cannot fail short of counter overflow (2^64 - 2 kicks). */
	if (write(w->efd, &one, sizeof(one)) != sizeof(one))
		wps_imgw_set_error(w, -errno, "image %s: eventfd write failed: %s",
			  w->path, strerror(errno));
}

/* ------------------------------------------------------------------ */
/* Buffers                                                             */
/* ------------------------------------------------------------------ */

static void buf_release_locked(struct wps_img_writer *w, struct imgw_buf *b)
{
	b->used = 0;
	b->nr_ext = 0;
	b->submitted = 0;
	b->current = false;
	b->next = w->free_list[b->pool];
	w->free_list[b->pool] = b;
	w->nr_free[b->pool]++;
	pthread_cond_broadcast(&w->cond);
}

static struct imgw_buf *pop_locked(struct wps_img_writer *w, int pool)
{
	struct imgw_buf *b = w->free_list[pool];

	if (b) {
		w->free_list[pool] = b->next;
		w->nr_free[pool]--;
	}
	return b;
}

/*
 * The fault lane serves write faults, which stall a vCPU: it draws on the
 * reserve first and borrows a normal buffer before it waits, but never
 * one of the last sweep_keep: the sweep only ever waits for a normal one,
 * so it cannot starve the fault lane, and the fault lane cannot starve it
 * either. A sweep left without buffers falls behind the guest, whose
 * writes then fault on more pages, each saved as a 64 KiB random write
 * instead of in the sweep's 1 MiB runs: measured, the fault lane then
 * saved 94-98 % of the bytes, at half the bandwidth.
 */
static int get_buf_ex(struct wps_img_writer *w, enum wps_lane lane,
		      bool nowait)
{
	struct imgw_buf *b;
	int err = 0;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		err = wps_imgw_error(w);
		if (err)
			break;
		b = NULL;
		/* An optional (nowait) take leaves a quarter of the reserve
		 * for the pages that must be saved: those of faulting writes. */
		if (nowait && lane == WPS_LANE_FAULT &&
		    w->nr_free[POOL_RESERVE] <= w->nr_reserve / 4) {
			err = -EAGAIN;
			break;
		}
		if (lane == WPS_LANE_FAULT)
			b = pop_locked(w, POOL_RESERVE);
		if (!b && (lane == WPS_LANE_SWEEP ||
			   w->nr_free[POOL_NORMAL] > w->sweep_keep))
			b = pop_locked(w, POOL_NORMAL);
		if (b) {
			b->current = true;
			b->lane = lane;
			w->cur[lane] = b;
			break;
		}
		if (nowait) {
			err = -EAGAIN;
			break;
		}
		pthread_cond_wait(&w->cond, &w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return err;
}

static int get_buf(struct wps_img_writer *w, enum wps_lane lane)
{
	return get_buf_ex(w, lane, false);
}

/* Without the reaper thread, the I/O thread learns of completions from
 * the eventfd; with it, the reaper kicks the I/O thread once per batch
 * it retired, not the kernel once per completion (each a wake-up of a
 * thread on CPUs the guest needs). */
static void ext_notify(struct wps_img_writer *w, struct imgw_ext *e)
{
	if (!__atomic_load_n(&w->reaping, __ATOMIC_ACQUIRE))
		io_set_eventfd(&e->iocb, w->efd);
}

/* Cannot overflow: each ring covers every extent of every buffer, and an
 * extent is queued at most once at a time. */
static void queue_push_locked(struct wps_img_writer *w, struct imgw_ext *e)
{
	struct imgw_queue *q = &w->q[e->buf->lane];

	q->e[(q->head + q->len++) % w->qcap] = e;
	w->qlen++;
}

static struct imgw_ext *queue_pop_locked(struct wps_img_writer *w,
					 enum wps_lane lane)
{
	struct imgw_queue *q = &w->q[lane];
	struct imgw_ext *e = q->e[q->head];

	q->head = (q->head + 1) % w->qcap;
	q->len--;
	w->qlen--;
	return e;
}

/*
 * Hand the extents the lane added since the last submission to the I/O
 * thread, one iocb each. With keep, the buffer stays the lane's current
 * one and its free space keeps filling: an idle flush of the fault lane
 * then costs no buffer, so the reserve is not drained by small bursts.
 * A buffer returns to its pool once it is no longer current and every
 * extent completed.
 */
static void submit_ext(struct wps_img_writer *w, enum wps_lane lane, bool keep)
{
	struct imgw_buf *b = w->cur[lane];
	uint32_t i, first = b->submitted, n = b->nr_ext - b->submitted;

	if (!keep)
		w->cur[lane] = NULL;
	for (i = first; i < b->nr_ext; i++) {
		struct imgw_ext *e = &b->ext[i];

		e->buf = b;
		e->shorted = false;
		io_prep_pwrite(&e->iocb, w->fd, b->data + e->buf_off, e->len,
			       (long long)e->file_off);
		ext_notify(w, e);
	}
	b->submitted = b->nr_ext;
	pthread_mutex_lock(&w->lock);
	b->pending += n;
	if (!keep) {
		b->current = false;
		if (!b->pending)
			buf_release_locked(w, b);
	}
	for (i = first; i < first + n; i++)
		queue_push_locked(w, &b->ext[i]);
	pthread_mutex_unlock(&w->lock);
	if (n)
		kick(w);
}

static void submit_buf(struct wps_img_writer *w, enum wps_lane lane)
{
	submit_ext(w, lane, false);
}

/* ------------------------------------------------------------------ */
/* The I/O thread                                                      */
/* ------------------------------------------------------------------ */

static void ext_done_locked(struct wps_img_writer *w, struct imgw_ext *e)
{
	struct imgw_buf *b = e->buf;

	if (--b->pending == 0 && !b->current)
		buf_release_locked(w, b);
}

static void io_complete(struct wps_img_writer *w, struct io_event *ev)
{
	struct imgw_ext *e = (struct imgw_ext *)ev->obj;
	long res = (long)ev->res;

	if (res < 0) {
		wps_imgw_set_error(w, (int)res,
			  "image %s: write of %u bytes at offset %llu failed: %s",
			  w->partial, e->len, (unsigned long long)e->file_off,
			  strerror((int)-res));
	} else if (res == 0 || (unsigned long)res > e->len) {
		wps_imgw_set_error(w, -EIO,
			  "image %s: write of %u bytes at offset %llu returned %ld",
			  w->partial, e->len, (unsigned long long)e->file_off,
			  res);
	} else {
		uint32_t done = (uint32_t)res;

		if (done == e->len && (w->flags & WPS_IMGW_TEST_SHORT_WRITES) &&
		    !e->shorted && e->len > WPS_IMG_BLOCK) {
			/* Pretend; rewriting the rest is idempotent. */
			e->shorted = true;
			done = (e->len / 2) & ~(WPS_IMG_BLOCK - 1);
		}
		/* O_DIRECT needs aligned offsets: redo a partial block. */
		if (done < e->len && w->direct)
			done &= ~(WPS_IMG_BLOCK - 1);
		if (done < e->len) {
			wps_imgw_stat_add(&w->st_short, 1);
			e->file_off += done;
			e->buf_off += done;
			e->len -= done;
			io_prep_pwrite(&e->iocb, w->fd, e->buf->data + e->buf_off,
				       e->len, (long long)e->file_off);
			ext_notify(w, e);
			pthread_mutex_lock(&w->lock);
			w->inflight--;
			queue_push_locked(w, e);
			pthread_mutex_unlock(&w->lock);
			return;
		}
	}
	wps_imgw_done(w, e);
}

static void io_reap(struct wps_img_writer *w)
{
	struct io_event ev[IMGW_BATCH];
	int i, n;

	do {
		struct timespec zero = { 0, 0 };

		n = io_getevents(w->aio, 0, IMGW_BATCH, ev, &zero);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			wps_imgw_set_error(w, n, "image %s: io_getevents: %s", w->partial,
				  strerror(-n));
			return;
		}
		for (i = 0; i < n; i++)
			io_complete(w, &ev[i]);
	} while (n == IMGW_BATCH || n == -EINTR);
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/*
 * Up to max queued extents, the fault lane's first: a fault waiting for
 * a buffer waits for the fault lane's oldest one to complete, and it
 * must not also queue behind sweep I/O that is not yet submitted (the
 * queue holds hundreds of extents while io_submit is slow).
 */
uint32_t wps_imgw_peek(struct wps_img_writer *w, struct imgw_ext **batch,
		       uint32_t max)
{
	uint32_t i, nf, ns;
	int l;

	pthread_mutex_lock(&w->lock);
	if (w->qlen && (w->drop || wps_imgw_error(w))) {
		/* Nothing more will be written: give the buffers back so
		 * that waiters see the error and abort can finish. */
		for (l = 0; l < WPS_NR_LANES; l++)
			while (w->q[l].len)
				ext_done_locked(w, queue_pop_locked(w, l));
		pthread_cond_broadcast(&w->cond);
	}
	nf = min_u32(w->q[WPS_LANE_FAULT].len, max);
	ns = min_u32(w->q[WPS_LANE_SWEEP].len, max - nf);
	for (i = 0; i < nf; i++)
		batch[i] = w->q[WPS_LANE_FAULT].e[(w->q[WPS_LANE_FAULT].head + i) %
						   w->qcap];
	for (i = 0; i < ns; i++)
		batch[nf + i] = w->q[WPS_LANE_SWEEP].e[(w->q[WPS_LANE_SWEEP].head + i) %
						       w->qcap];
	w->peek_fault = nf;
	pthread_mutex_unlock(&w->lock);
	return nf + ns;
}

/* The peeked batch was fault extents first: the first n of it leave the
 * rings in that order (lanes only append, so the heads did not move). */
void wps_imgw_consumed(struct wps_img_writer *w, uint32_t n)
{
	uint32_t i;

	pthread_mutex_lock(&w->lock);
	for (i = 0; i < n; i++) {
		enum wps_lane lane = i < w->peek_fault ? WPS_LANE_FAULT
						       : WPS_LANE_SWEEP;

		queue_pop_locked(w, lane);
	}
	w->peek_fault = 0;
	if (!w->inflight && n)
		pthread_cond_signal(&w->reap_cond);
	w->inflight += n;
	pthread_mutex_unlock(&w->lock);
	wps_imgw_stat_add(&w->st_ios, n);
}

void wps_imgw_done(struct wps_img_writer *w, struct imgw_ext *e)
{
	pthread_mutex_lock(&w->lock);
	w->inflight--;
	ext_done_locked(w, e);
	if (!w->inflight && !w->qlen)
		pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

bool wps_imgw_io_finished(struct wps_img_writer *w)
{
	bool done;

	pthread_mutex_lock(&w->lock);
	done = w->stop && !w->qlen && !w->inflight;
	pthread_mutex_unlock(&w->lock);
	return done;
}

/* The last cnt of a consumed batch were not submitted after all: back at
 * the heads of their rings, in their order. */
static void unconsume(struct wps_img_writer *w, struct imgw_ext **ext,
		      uint32_t cnt)
{
	uint32_t i;

	pthread_mutex_lock(&w->lock);
	for (i = cnt; i-- > 0;) {
		struct imgw_queue *q = &w->q[ext[i]->buf->lane];

		q->head = (q->head + w->qcap - 1) % w->qcap;
		q->e[q->head] = ext[i];
		q->len++;
		w->qlen++;
	}
	w->inflight -= cnt;
	pthread_mutex_unlock(&w->lock);
	wps_imgw_stat_add(&w->st_ios, -(uint64_t)cnt);
}

/*
 * Submit in small batches, so that fault extents queued meanwhile go out
 * next. With reap (no reaper thread), reap before each batch.
 */
static void io_submit_queue(struct wps_img_writer *w, bool reap)
{
	struct imgw_ext *ext[IMGW_SUBMIT_BATCH];
	struct iocb *batch[IMGW_SUBMIT_BATCH];
	uint32_t i, n;
	int ret;

	for (;;) {
		if (reap)
			io_reap(w);
		n = wps_imgw_peek(w, ext, IMGW_SUBMIT_BATCH);
		if (!n)
			return;
		for (i = 0; i < n; i++)
			batch[i] = &ext[i]->iocb;
		/* In flight before the call: the reaper may retire them
		 * before io_submit returns (buffered I/O completes inside
		 * it), and must not see the count go below zero. */
		wps_imgw_consumed(w, n);
		ret = io_submit(w->aio, (long)n, batch);
		if ((uint32_t)ret != n)
			unconsume(w, ext + (ret > 0 ? ret : 0),
				  n - (ret > 0 ? (uint32_t)ret : 0));
		if (ret > 0 || ret == -EINTR)
			continue;
		if (ret == -EAGAIN || ret == 0) {
			bool busy;

			pthread_mutex_lock(&w->lock);
			busy = w->inflight > 0;
			pthread_mutex_unlock(&w->lock);
			/* A completion will kick us; retry then. */
			if (busy)
				return;
			ret = -EAGAIN;
		}
		wps_imgw_set_error(w, ret, "image %s: io_submit of %u bytes at offset %llu: %s",
			  w->partial, (unsigned int)batch[0]->u.c.nbytes,
			  (unsigned long long)batch[0]->u.c.offset,
			  strerror(-ret));
	}
}

/*
 * The reaper: completions are retired by a thread of their own, because
 * on ext4 an io_submit of writes that allocate blocks does the
 * allocation and its journal work in the call and can block there for
 * milliseconds (measured here: 0.3-0.6 s of a 1 s snapshot inside
 * io_submit, single calls up to 82 ms, even 16 iocbs at a time). A
 * buffer whose writes completed meanwhile is one a faulting write may
 * be waiting for: it must not wait for the next submission to end.
 * It sleeps in io_getevents only while something is counted in flight
 * (so a completion is due, or the count is about to drop back after a
 * failed io_submit: hence a timeout), otherwise on reap_cond.
 */
static void *file_reap_main(void *arg)
{
	struct wps_img_writer *w = arg;
	struct io_event ev[IMGW_BATCH];
	int i, n;

	pthread_setname_np(pthread_self(), "wps-imgw-reap");
	for (;;) {
		struct timespec tmo;
		bool finished;

		pthread_mutex_lock(&w->lock);
		while (!w->inflight && !(w->stop && !w->qlen))
			pthread_cond_wait(&w->reap_cond, &w->lock);
		finished = !w->inflight;
		pthread_mutex_unlock(&w->lock);
		if (finished)
			return NULL;
		/* Bounded: io_submit may fail after the batch was counted
		 * in flight, and then no completion comes. */
		tmo = (struct timespec){ .tv_nsec = 50 * 1000000 };
		n = io_getevents(w->aio, 1, IMGW_BATCH, ev, &tmo);
		if (n < 0 && n != -EINTR) {
			wps_imgw_set_error(w, n, "image %s: io_getevents: %s",
					   w->partial, strerror(-n));
			usleep(1000); /* keep trying, without spinning */
		}
		for (i = 0; i < n; i++)
			io_complete(w, &ev[i]);
		/* A short write queued again, or io_submit's EAGAIN
		 * waiting for a completion: the submitter may have work. */
		if (n > 0)
			kick(w);
	}
}

static void *file_io_main(void *arg)
{
	struct wps_img_writer *w = arg;
	pthread_t reaper;
	bool reap;
	uint64_t v;

	/* Without a reaper this thread reaps, as it did before. */
	reap = pthread_create(&reaper, NULL, file_reap_main, w) != 0;
	if (!reap)
		__atomic_store_n(&w->reaping, true, __ATOMIC_RELEASE);
	for (;;) {
		if (read(w->efd, &v, sizeof(v)) < 0 && errno != EINTR) {
			wps_imgw_set_error(w, -errno, "image %s: eventfd read: %s",
				  w->partial, strerror(errno));
			usleep(1000); /* keep reaping, without spinning */
		}
		if (reap)
			io_reap(w);
		io_submit_queue(w, reap);
		if (wps_imgw_io_finished(w))
			break;
	}
	if (!reap) {
		pthread_mutex_lock(&w->lock);
		pthread_cond_signal(&w->reap_cond);
		pthread_mutex_unlock(&w->lock);
		pthread_join(reaper, NULL);
	}
	return NULL;
}

/* Let in-flight I/O finish (or drop what is queued) and join. */
static void io_stop(struct wps_img_writer *w, bool drop)
{
	if (!w->io_started)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	w->drop = w->drop || drop;
	pthread_cond_signal(&w->reap_cond);
	pthread_mutex_unlock(&w->lock);
	kick(w);
	pthread_join(w->io_thread, NULL);
	w->io_started = false;
}

/* ------------------------------------------------------------------ */
/* put / flush                                                         */
/* ------------------------------------------------------------------ */

static bool block_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	size_t i, j;

	/* Chunks of 8 words: vectorizable, and non-zero pages usually
	 * stop in the first chunk. */
	for (i = 0; i < WPS_IMG_BLOCK / 8; i += 8) {
		uint64_t acc = 0;

		for (j = 0; j < 8; j++)
			acc |= q[i + j];
		if (acc)
			return false;
	}
	return true;
}

int wps_img_writer_put(struct wps_img_writer *w, enum wps_lane lane,
		       unsigned int r, uint64_t off, const void *src,
		       size_t len)
{
	const uint8_t *s = src;
	struct imgw_region *reg;
	uint64_t b, end, present = 0, zero = 0, replaced = 0;
	int err = wps_imgw_error(w);

	if (err)
		return err;
	if (w->state != ST_OPEN) {
		wps_err(w->ctx, "image %s: put after commit", w->path);
		return -EINVAL;
	}
	if ((unsigned int)lane >= WPS_NR_LANES || r >= w->nr_regions ||
	    (off | len) & (WPS_IMG_BLOCK - 1) ||
	    off > w->regions[r].desc.size ||
	    len > w->regions[r].desc.size - off) {
		wps_err(w->ctx,
			"image %s: bad put: lane %d region %u offset %llu length %zu",
			w->path, (int)lane, r, (unsigned long long)off, len);
		return -EINVAL;
	}
	reg = &w->regions[r];
	end = (off + len) >> WPS_IMG_BLOCK_SHIFT;
	for (b = off >> WPS_IMG_BLOCK_SHIFT; b < end; b++, s += WPS_IMG_BLOCK) {
		uint64_t bit = 1ull << (b & 63);
		uint64_t file_off = reg->lay.data_offset + (b << WPS_IMG_BLOCK_SHIFT);
		struct imgw_buf *buf;
		struct imgw_ext *e;
		uint8_t *dst;
		uint32_t crc;

		if (__atomic_fetch_or(&reg->seen[b >> 6], bit, __ATOMIC_RELAXED) &
		    bit) {
			if (!reg->bcrc) {
				wps_err(w->ctx,
					"image %s: internal error: block %llu of region %u (%s) put twice",
					w->path, (unsigned long long)b, r,
					reg->desc.name);
				err = -EEXIST;
				break;
			}
			/* Replaced (drained before, see the header): its
			 * old data leaves the checksum and the counts. */
			if (__atomic_fetch_and(&reg->present[b >> 6], ~bit,
					       __ATOMIC_RELAXED) & bit) {
				__atomic_fetch_xor(&reg->csum[b / WPS_IMG_GROUP_BLOCKS],
						   reg->bcrc[b], __ATOMIC_RELAXED);
				replaced++;
			}
		}
		buf = w->cur[lane];
		if (buf && buf->used == w->buf_size) {
			submit_buf(w, lane);
			buf = NULL;
		}
		if (buf && buf->nr_ext == IMGW_MAX_EXT) {
			e = &buf->ext[buf->nr_ext - 1];
			if (e->file_off + e->len != file_off) {
				submit_buf(w, lane);
				buf = NULL;
			}
		}
		if (!buf) {
			err = get_buf(w, lane);
			if (err)
				break;
			buf = w->cur[lane];
		}
		dst = buf->data + buf->used;
		memcpy(dst, s, WPS_IMG_BLOCK);
		if (!(w->flags & WPS_IMGW_KEEP_ZEROS) && block_is_zero(dst)) {
			zero++;
			continue;
		}
		/* The copy is in cache: checksum it, not the source, which
		 * also covers a source that changes under us. */
		crc = wps_img_block_crc(b, dst);
		if (reg->bcrc)
			reg->bcrc[b] = crc;
		__atomic_fetch_xor(&reg->csum[b / WPS_IMG_GROUP_BLOCKS], crc,
				   __ATOMIC_RELAXED);
		__atomic_fetch_or(&reg->present[b >> 6], bit, __ATOMIC_RELAXED);
		present++;

		e = buf->nr_ext > buf->submitted ? &buf->ext[buf->nr_ext - 1]
						  : NULL;
		if (e && e->file_off + e->len == file_off) {
			e->len += WPS_IMG_BLOCK;
		} else {
			e = &buf->ext[buf->nr_ext++];
			e->file_off = file_off;
			e->buf_off = buf->used;
			e->len = WPS_IMG_BLOCK;
		}
		buf->used += WPS_IMG_BLOCK;
		if (buf->used == w->buf_size)
			submit_buf(w, lane);
	}
	if (present) {
		wps_imgw_stat_add(&w->st_present, present);
		wps_imgw_stat_add(&w->st_data_bytes, present * WPS_IMG_BLOCK);
	}
	if (replaced) {
		wps_imgw_stat_add(&w->st_present, -replaced);
		wps_imgw_stat_add(&w->st_data_bytes, -replaced * WPS_IMG_BLOCK);
	}
	if (zero)
		wps_imgw_stat_add(&w->st_zero, zero);
	return err;
}

int wps_img_writer_flush(struct wps_img_writer *w, enum wps_lane lane)
{
	int err = wps_imgw_error(w);

	if (err)
		return err;
	if ((unsigned int)lane >= WPS_NR_LANES)
		return -EINVAL;
	if (w->cur[lane] && w->cur[lane]->nr_ext > w->cur[lane]->submitted)
		submit_ext(w, lane, w->cur[lane]->used < w->buf_size &&
				    w->cur[lane]->nr_ext < IMGW_MAX_EXT);
	return wps_imgw_error(w);
}

int wps_img_writer_drain(struct wps_img_writer *w)
{
	int err = wps_img_writer_flush(w, WPS_LANE_SWEEP);

	if (!err)
		err = wps_img_writer_flush(w, WPS_LANE_FAULT);
	if (err)
		return err;
	kick(w);
	pthread_mutex_lock(&w->lock);
	while ((w->qlen || w->inflight) && !wps_imgw_error(w))
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	return wps_imgw_error(w);
}

int wps_img_writer_reserve(struct wps_img_writer *w, enum wps_lane lane,
			   size_t len, bool nowait)
{
	struct imgw_buf *b = w->cur[lane];
	size_t blocks = len / WPS_IMG_BLOCK;
	int err = wps_imgw_error(w);

	if (err)
		return err;
	if ((unsigned int)lane >= WPS_NR_LANES || len > w->buf_size)
		return -EINVAL;
	/* Room for the bytes and, worst case, an extent per block. */
	if (b && b->used + len <= w->buf_size &&
	    b->nr_ext + blocks <= IMGW_MAX_EXT)
		return 0;
	if (nowait) {
		/* Keep the current buffer unless a free one is at hand. */
		struct imgw_buf *old = b;
		int err2;

		w->cur[lane] = NULL;
		err2 = get_buf_ex(w, lane, true);
		if (err2) {
			w->cur[lane] = old;
			return err2;
		}
		if (old) {
			struct imgw_buf *fresh = w->cur[lane];

			w->cur[lane] = old;
			submit_buf(w, lane);
			w->cur[lane] = fresh;
		}
		return 0;
	}
	if (b)
		submit_buf(w, lane);
	return get_buf(w, lane);
}

static int sink_put(void *priv, enum wps_lane lane, unsigned int r,
		    uint64_t off, const void *src, size_t len)
{
	return wps_img_writer_put(priv, lane, r, off, src, len);
}

static int sink_flush(void *priv, enum wps_lane lane)
{
	return wps_img_writer_flush(priv, lane);
}

static int sink_reserve(void *priv, enum wps_lane lane, size_t len,
			bool nowait)
{
	return wps_img_writer_reserve(priv, lane, len, nowait);
}

static int sink_drain(void *priv)
{
	return wps_img_writer_drain(priv);
}

static const struct wps_sink_ops imgw_sink_ops = {
	.put = sink_put,
	.flush = sink_flush,
	.reserve = sink_reserve,
	.drain = sink_drain,
};

struct wps_sink wps_img_writer_sink(struct wps_img_writer *w)
{
	return (struct wps_sink){ .ops = &imgw_sink_ops, .priv = w };
}

/* ------------------------------------------------------------------ */
/* Metadata                                                            */
/* ------------------------------------------------------------------ */

void wps_img_writer_set_instant(struct wps_img_writer *w, int64_t realtime_ns,
				int64_t monotonic_ns)
{
	w->realtime_ns = realtime_ns;
	w->monotonic_ns = monotonic_ns;
}

int wps_img_writer_add_blob(struct wps_img_writer *w, const char *name,
			    const void *data, size_t len)
{
	struct imgw_blob *nb, *blob;
	size_t nlen = name ? strnlen(name, sizeof(blob->name)) : 0;
	uint32_t i;

	if (w->state != ST_OPEN) {
		wps_err(w->ctx, "image %s: blob added after commit", w->path);
		return -EINVAL;
	}
	if (!nlen || nlen >= WPS_IMG_BLOB_NAME_LEN || (len && !data)) {
		wps_err(w->ctx, "image %s: bad blob name \"%.48s\" (1 to %u bytes)",
			w->path, name ? name : "", WPS_IMG_BLOB_NAME_LEN - 1);
		return -EINVAL;
	}
	for (i = 0; i < w->nr_blobs; i++) {
		if (!strcmp(w->blobs[i].name, name)) {
			wps_err(w->ctx, "image %s: blob \"%s\" added twice",
				w->path, name);
			return -EEXIST;
		}
	}
	nb = realloc(w->blobs, (w->nr_blobs + 1) * sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	w->blobs = nb;
	blob = &nb[w->nr_blobs];
	memset(blob, 0, sizeof(*blob));
	blob->data = malloc(len ? len : 1);
	if (!blob->data)
		return -ENOMEM;
	memcpy(blob->name, name, nlen);
	if (len)
		memcpy(blob->data, data, len);
	blob->len = len;
	blob->crc = wps_crc32c(0, data, len);
	w->nr_blobs++;
	return 0;
}

static uint64_t popcount_words(const uint64_t *p, uint64_t n)
{
	uint64_t i, c = 0;

	for (i = 0; i < n; i++)
		c += (uint64_t)__builtin_popcountll(p[i]);
	return c;
}

/* pwrite all of it. Under O_DIRECT a short write that stops inside a
 * block is redone from the block start. */
static int file_write_sync(struct wps_img_writer *w, const void *data,
			   size_t len, uint64_t off, const char *what)
{
	const uint8_t *buf = data;

	while (len) {
		ssize_t n = pwrite(w->fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			wps_err(w->ctx,
				"image %s: writing %s (%zu bytes at offset %llu): %s",
				w->partial, what, len, (unsigned long long)off,
				strerror(-err));
			return err;
		}
		if (w->direct && (size_t)n < len)
			n &= ~(ssize_t)(WPS_IMG_BLOCK - 1);
		buf += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static void *alloc_io(size_t len)
{
	void *p;

	if (posix_memalign(&p, WPS_IMG_BLOCK, len))
		return NULL;
	memset(p, 0, len);
	return p;
}

/* Trailer (bitmaps, checksum tables, blobs) and footer, in one write. */
static int write_trailer(struct wps_img_writer *w, uint64_t *present_total,
			 uint64_t *footer_offset)
{
	uint64_t t0 = w->lay.trailer_offset;
	uint64_t pos = wps_img_blob_data_start(w->lay.blob_table_offset,
					       w->nr_blobs);
	uint64_t tsize, present = 0, foff, i, j;
	struct wps_img_footer *ft;
	uint8_t *buf;
	int err;

	for (i = 0; i < w->nr_blobs; i++)
		pos = wps_img_align(pos, 8) + w->blobs[i].len;
	if (!w->nr_blobs)
		pos = w->lay.blob_table_offset;
	foff = wps_img_align(pos, WPS_IMG_BLOCK);
	tsize = foff - t0;
	if (tsize + WPS_IMG_BLOCK > SIZE_MAX)
		return -EFBIG;
	buf = alloc_io(tsize + WPS_IMG_BLOCK);
	if (!buf) {
		wps_err(w->ctx, "image %s: no memory for a %llu-byte trailer",
			w->path, (unsigned long long)tsize);
		return -ENOMEM;
	}
	for (i = 0; i < w->nr_regions; i++) {
		const struct imgw_region *reg = &w->regions[i];
		uint64_t words = wps_img_div_up(reg->lay.nr_blocks, 64);
		uint64_t groups = wps_img_nr_groups(reg->lay.nr_blocks,
						    WPS_IMG_GROUP_BLOCKS);
		uint8_t *bm = buf + (reg->lay.bitmap_offset - t0);
		uint8_t *cs = buf + (reg->lay.csum_offset - t0);

		for (j = 0; j < words; j++) {
			uint64_t v = htole64(reg->present[j]);

			memcpy(bm + j * 8, &v, 8);
		}
		for (j = 0; j < groups; j++) {
			uint32_t v = htole32(reg->csum[j]);

			memcpy(cs + j * 4, &v, 4);
		}
		present += popcount_words(reg->present, words);
	}
	pos = wps_img_blob_data_start(w->lay.blob_table_offset, w->nr_blobs);
	for (i = 0; i < w->nr_blobs; i++) {
		struct wps_img_blob_ent ent;

		memset(&ent, 0, sizeof(ent));
		pos = wps_img_align(pos, 8);
		memcpy(ent.name, w->blobs[i].name, sizeof(ent.name));
		ent.offset = htole64(pos);
		ent.length = htole64(w->blobs[i].len);
		ent.crc = htole32(w->blobs[i].crc);
		memcpy(buf + (w->lay.blob_table_offset - t0) + i * sizeof(ent),
		       &ent, sizeof(ent));
		memcpy(buf + (pos - t0), w->blobs[i].data, w->blobs[i].len);
		pos += w->blobs[i].len;
	}

	ft = (struct wps_img_footer *)(buf + tsize);
	memcpy(ft->magic, WPS_IMG_FOOTER_MAGIC, 8);
	ft->version = htole32(WPS_IMG_VERSION);
	ft->flags = htole32(WPS_IMG_FOOTER_COMPLETE);
	memcpy(ft->uuid, w->uuid, 16);
	ft->trailer_offset = htole64(t0);
	ft->trailer_size = htole64(tsize);
	ft->trailer_crc = htole32(wps_crc32c(0, buf, tsize));
	ft->nr_blobs = htole32(w->nr_blobs);
	ft->blob_table_offset = htole64(w->lay.blob_table_offset);
	ft->data_bytes = htole64(present * WPS_IMG_BLOCK);
	ft->present_blocks = htole64(present);
	ft->footer_offset = htole64(foff);
	ft->crc = htole32(wps_crc32c(0, ft, offsetof(struct wps_img_footer, crc)));

	err = w->out->write_sync(w, buf, tsize + WPS_IMG_BLOCK, t0,
				 "trailer and footer");
	free(buf);
	*present_total = present;
	*footer_offset = foff;
	return err;
}

/* Superblock and region table: written last, they make the file an image. */
static int write_meta(struct wps_img_writer *w, uint64_t footer_offset)
{
	uint8_t *buf = alloc_io(w->lay.meta_size);
	struct wps_img_super *sb = (struct wps_img_super *)buf;
	uint32_t i;
	int err;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < w->nr_regions; i++) {
		const struct imgw_region *reg = &w->regions[i];
		struct wps_img_region_ent *re =
			(struct wps_img_region_ent *)(buf + WPS_IMG_BLOCK) + i;

		re->host_addr = htole64(reg->desc.host_addr);
		re->size = htole64(reg->desc.size);
		re->page_size = htole32(reg->desc.page_size);
		re->backing = htole32(reg->desc.backing);
		re->nr_blocks = htole64(reg->lay.nr_blocks);
		re->data_offset = htole64(reg->lay.data_offset);
		re->bitmap_offset = htole64(reg->lay.bitmap_offset);
		re->csum_offset = htole64(reg->lay.csum_offset);
		re->present_blocks = htole64(popcount_words(
			reg->present, wps_img_div_up(reg->lay.nr_blocks, 64)));
		memcpy(re->name, reg->desc.name, sizeof(re->name));
	}
	memcpy(sb->magic, WPS_IMG_MAGIC, 8);
	sb->version = htole32(WPS_IMG_VERSION);
	memcpy(sb->uuid, w->uuid, 16);
	memcpy(sb->parent_uuid, w->parent_uuid, 16);
	sb->block_size = htole32(WPS_IMG_BLOCK);
	sb->group_blocks = htole32(WPS_IMG_GROUP_BLOCKS);
	sb->nr_regions = htole32(w->nr_regions);
	sb->region_entry_size = htole32(sizeof(struct wps_img_region_ent));
	sb->freeze_realtime_ns = (int64_t)htole64((uint64_t)w->realtime_ns);
	sb->freeze_monotonic_ns = (int64_t)htole64((uint64_t)w->monotonic_ns);
	sb->meta_size = htole64(w->lay.meta_size);
	sb->trailer_offset = htole64(w->lay.trailer_offset);
	sb->footer_offset = htole64(footer_offset);
	sb->region_table_crc = htole32(wps_crc32c(0, buf + WPS_IMG_BLOCK,
						  w->lay.meta_size - WPS_IMG_BLOCK));
	sb->crc = htole32(wps_crc32c(0, sb, offsetof(struct wps_img_super, crc)));
	err = w->out->write_sync(w, buf, w->lay.meta_size, 0,
				 "superblock and region table");
	free(buf);
	return err;
}

static int fsync_dir(struct wps_img_writer *w)
{
	const char *slash = strrchr(w->path, '/');
	char *dir;
	int fd, err = 0;

	if (!slash)
		dir = strdup(".");
	else if (slash == w->path)
		dir = strdup("/");
	else
		dir = strndup(w->path, (size_t)(slash - w->path));
	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		wps_err(w->ctx, "image %s: cannot open directory %s: %s",
			w->path, dir, strerror(errno));
		goto out;
	}
	if (fsync(fd) < 0) {
		err = -errno;
		wps_err(w->ctx, "image %s: fsync of directory %s: %s", w->path,
			dir, strerror(errno));
	}
	close(fd);
out:
	free(dir);
	return err;
}

static int file_rename(struct wps_img_writer *w)
{
	int err;

	if (w->flags & WPS_IMGW_OVERWRITE) {
		if (rename(w->partial, w->path) < 0)
			goto fail;
		return 0;
	}
	if (renameat2(AT_FDCWD, w->partial, AT_FDCWD, w->path,
		      RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		goto fail;
	/* No RENAME_NOREPLACE here: link() refuses to replace as well. */
	if (link(w->partial, w->path) < 0)
		goto fail;
	if (unlink(w->partial) < 0) {
		err = -errno;
		wps_err(w->ctx, "image %s: unlink %s after link: %s", w->path,
			w->partial, strerror(errno));
		unlink(w->path);
		return err;
	}
	return 0;
fail:
	err = -errno;
	if (err == -EEXIST)
		wps_err(w->ctx, "image %s: already exists (appeared during the snapshot); not replaced",
			w->path);
	else
		wps_err(w->ctx, "image %s: rename from %s: %s", w->path,
			w->partial, strerror(errno));
	return err;
}

/* Remove the partial file and stop everything; leaves the writer dead. */
static void teardown(struct wps_img_writer *w)
{
	int expected = 0;

	__atomic_compare_exchange_n(&w->error, &expected, -ECANCELED, false,
				    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	/* A lane blocked waiting for a buffer returns the error now. */
	pthread_mutex_lock(&w->lock);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	io_stop(w, true);
	if (w->out)
		w->out->discard(w);
	w->state = ST_DEAD;
}

static void file_discard(struct wps_img_writer *w)
{
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	if (w->partial_exists) {
		if (unlink(w->partial) < 0 && errno != ENOENT)
			wps_warn(w->ctx, "image %s: cannot remove: %s",
				 w->partial, strerror(errno));
		w->partial_exists = false;
	}
}

/* The final size now, so that the superblock's write never extends
 * the file. Durability comes with publish's one fdatasync: until the
 * rename, the partial file is no image whatever its content. */
static int file_seal(struct wps_img_writer *w, uint64_t size)
{
	struct stat st;

	if (fstat(w->fd, &st) < 0) {
		wps_err(w->ctx, "image %s: fstat: %s", w->partial, strerror(errno));
		return -errno;
	}
	if ((uint64_t)st.st_size != size && ftruncate(w->fd, (off_t)size) < 0) {
		wps_err(w->ctx, "image %s: cannot set size to %llu: %s",
			w->partial, (unsigned long long)size, strerror(errno));
		return -errno;
	}
	return 0;
}

static int file_publish(struct wps_img_writer *w)
{
	struct stat st;
	int err;

	if (fdatasync(w->fd) < 0) {
		wps_err(w->ctx, "image %s: fdatasync: %s", w->partial,
			strerror(errno));
		return -errno;
	}
	if (fstat(w->fd, &st) == 0)
		__atomic_store_n(&w->st_file_bytes, (uint64_t)st.st_blocks * 512,
				 __ATOMIC_RELAXED);
	err = file_rename(w);
	if (err)
		return err;
	w->partial_exists = false;
	close(w->fd);
	w->fd = -1;
	err = fsync_dir(w);
	if (err) {
		/* The name may not survive a crash, so the image is not
		 * durable and the commit fails: then nothing may stay
		 * under the final name either (a checkpoint that failed
		 * must not be found beside the full image after it). */
		if (unlink(w->path) < 0)
			wps_warn(w->ctx, "image %s: cannot remove after the "
				 "failed commit: %s", w->path, strerror(errno));
	}
	return err;
}

int wps_img_writer_commit(struct wps_img_writer *w)
{
	uint64_t present, foff;
	int err;

	if (w->state != ST_OPEN) {
		err = wps_imgw_error(w);
		return err ? err : -EINVAL;
	}
	err = wps_img_writer_flush(w, WPS_LANE_SWEEP);
	if (!err)
		err = wps_img_writer_flush(w, WPS_LANE_FAULT);
	io_stop(w, false);
	if (!err)
		err = wps_imgw_error(w);
	if (err)
		goto fail;

	err = write_trailer(w, &present, &foff);
	if (!err)
		err = w->out->seal(w, foff + WPS_IMG_BLOCK);
	if (!err)
		err = write_meta(w, foff);
	if (!err)
		err = w->out->publish(w);
	if (err)
		goto fail;
	w->state = ST_COMMITTED;
	wps_dbg(w->ctx, "image %s: committed (%s), %llu blocks present",
		w->path, w->out->kind, (unsigned long long)present);
	return 0;
fail:
	if (!wps_imgw_error(w)) {
		int expected = 0;

		__atomic_compare_exchange_n(&w->error, &expected, err, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
	}
	teardown(w);
	return err;
}

void wps_img_writer_abort(struct wps_img_writer *w)
{
	if (!w || w->state == ST_COMMITTED)
		return;
	teardown(w);
}

void wps_img_writer_get_stats(const struct wps_img_writer *w,
			      struct wps_img_writer_stats *st)
{
	st->data_bytes = __atomic_load_n(&w->st_data_bytes, __ATOMIC_RELAXED);
	st->present_blocks = __atomic_load_n(&w->st_present, __ATOMIC_RELAXED);
	st->zero_blocks = __atomic_load_n(&w->st_zero, __ATOMIC_RELAXED);
	st->ios = __atomic_load_n(&w->st_ios, __ATOMIC_RELAXED);
	st->short_ios = __atomic_load_n(&w->st_short, __ATOMIC_RELAXED);
	st->file_bytes = __atomic_load_n(&w->st_file_bytes, __ATOMIC_RELAXED);
	st->memory_bytes = w->memory_bytes;
	st->direct = w->direct;
}

const uint8_t *wps_img_writer_uuid(const struct wps_img_writer *w)
{
	return w->uuid;
}

void wps_img_writer_free(struct wps_img_writer *w)
{
	uint32_t i;

	if (!w)
		return;
	wps_img_writer_abort(w);
	if (w->out)
		w->out->close(w);
	if (w->efd >= 0)
		close(w->efd);
	if (w->arena)
		munmap(w->arena, w->arena_size);
	for (i = 0; i < w->nr_regions; i++) {
		free(w->regions[i].seen);
		free(w->regions[i].present);
		free(w->regions[i].csum);
		free(w->regions[i].bcrc);
	}
	for (i = 0; i < w->nr_blobs; i++)
		free(w->blobs[i].data);
	pthread_cond_destroy(&w->cond);
	pthread_cond_destroy(&w->reap_cond);
	pthread_mutex_destroy(&w->lock);
	free(w->blobs);
	free(w->regions);
	free(w->bufs);
	free(w->q[WPS_LANE_SWEEP].e);
	free(w->q[WPS_LANE_FAULT].e);
	free(w->partial);
	free(w->path);
	free(w);
}

/* ------------------------------------------------------------------ */
/* open                                                                */
/* ------------------------------------------------------------------ */

static int setup_regions(struct wps_img_writer *w,
			 const struct wps_img_writer_region *regions,
			 unsigned int nr)
{
	struct wps_img_layout_region *lay = NULL;
	uint64_t *sizes = NULL;
	unsigned int i;
	int err = -ENOMEM;

	w->regions = calloc(nr ? nr : 1, sizeof(*w->regions));
	sizes = calloc(nr ? nr : 1, sizeof(*sizes));
	lay = calloc(nr ? nr : 1, sizeof(*lay));
	if (!w->regions || !sizes || !lay)
		goto out;
	w->nr_regions = nr;
	for (i = 0; i < nr; i++) {
		const struct wps_img_writer_region *d = &regions[i];
		struct imgw_region *reg = &w->regions[i];

		if (!d->size || d->size & (WPS_IMG_BLOCK - 1) ||
		    (d->page_size & (d->page_size - 1)) ||
		    d->page_size < WPS_IMG_BLOCK) {
			wps_err(w->ctx,
				"image %s: region %u: size %llu and page size %u must be non-zero multiples of 4096",
				w->path, i, (unsigned long long)d->size,
				d->page_size);
			err = -EINVAL;
			goto out;
		}
		reg->desc = *d;
		memset(reg->desc.name, 0, sizeof(reg->desc.name));
		memcpy(reg->desc.name, d->name,
		       strnlen(d->name, WPS_IMG_REGION_NAME_LEN - 1));
		sizes[i] = d->size;
	}
	err = wps_img_layout(sizes, nr, WPS_IMG_GROUP_BLOCKS, lay, &w->lay);
	if (err) {
		wps_err(w->ctx, "image %s: regions too large for a file", w->path);
		goto out;
	}
	err = -ENOMEM;
	for (i = 0; i < nr; i++) {
		struct imgw_region *reg = &w->regions[i];
		uint64_t words = wps_img_div_up(lay[i].nr_blocks, 64);

		reg->lay = lay[i];
		reg->seen = calloc(words, 8);
		reg->present = calloc(words, 8);
		w->memory_bytes += 2 * words * 8 +
				   wps_img_nr_groups(lay[i].nr_blocks,
						     WPS_IMG_GROUP_BLOCKS) * 4;
		reg->csum = calloc(wps_img_nr_groups(lay[i].nr_blocks,
						     WPS_IMG_GROUP_BLOCKS), 4);
		if (!reg->seen || !reg->present || !reg->csum)
			goto out;
		if (w->flags & WPS_IMGW_REWRITE) {
			reg->bcrc = calloc(lay[i].nr_blocks ? lay[i].nr_blocks : 1, 4);
			if (!reg->bcrc)
				goto out;
			w->memory_bytes += lay[i].nr_blocks * 4;
		}
	}
	err = 0;
out:
	free(sizes);
	free(lay);
	return err;
}

static int setup_buffers(struct wps_img_writer *w,
			 const struct wps_img_writer_opts *o)
{
	uint64_t budget = o && o->buffer_budget ? o->buffer_budget
						: IMGW_DEFAULT_BUDGET;
	uint64_t bs = o ? o->buf_size : 0;
	uint32_t i, nr_reserve, maxpage = 0;

	for (i = 0; i < w->nr_regions; i++)
		if (w->regions[i].desc.page_size > maxpage)
			maxpage = w->regions[i].desc.page_size;
	if (!bs) {
		/* A huge page fits one buffer, but a 1 GiB page must not
		 * eat the whole budget: it simply spans buffers. */
		bs = maxpage;
		if (bs > budget / IMGW_MIN_BUFS)
			bs = budget / IMGW_MIN_BUFS;
		if (bs < IMGW_MIN_BUF)
			bs = IMGW_MIN_BUF;
	}
	if (bs < WPS_IMG_BLOCK || bs & (WPS_IMG_BLOCK - 1) || bs > (1u << 30)) {
		wps_err(w->ctx, "image %s: buffer size %llu is not a multiple of 4096 up to 1 GiB",
			w->path, (unsigned long long)bs);
		return -EINVAL;
	}
	w->buf_size = (uint32_t)bs;
	w->nr_bufs = budget / bs < IMGW_MIN_BUFS ? IMGW_MIN_BUFS
						 : (uint32_t)(budget / bs);
	/* The sweep needs only the queue depth that saturates the disk
	 * (DESIGN.md: 16 x 1 MiB; a few more to fill while those fly); a
	 * deeper sweep queue would only make fault pages wait behind it. The
	 * rest is the fault path's reserve. */
	nr_reserve = w->nr_bufs > IMGW_SWEEP_BUFS + 2 ?
		     w->nr_bufs - IMGW_SWEEP_BUFS :
		     (w->nr_bufs / 4 < 2 ? 2 : w->nr_bufs / 4);
	w->nr_reserve = nr_reserve;
	/* The sweep keeps its depth (DESIGN.md: 16 x 1 MiB saturates the
	 * disk); the fault lane borrows only normal buffers beyond it. */
	w->sweep_keep = (w->nr_bufs - nr_reserve) * 2 / 3;
	w->arena_size = (size_t)w->nr_bufs * w->buf_size;
	w->arena = mmap(NULL, w->arena_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w->arena == MAP_FAILED) {
		w->arena = NULL;
		wps_err(w->ctx, "image %s: cannot map %zu bytes of I/O buffers: %s",
			w->path, w->arena_size, strerror(errno));
		return -ENOMEM;
	}
	/* Huge pages spare the copy TLB misses (advice only: may fail);
	 * populated now, before the freeze, not on the copy path. */
	(void)madvise(w->arena, w->arena_size, MADV_HUGEPAGE);
	if (madvise(w->arena, w->arena_size, MADV_POPULATE_WRITE) < 0)
		memset(w->arena, 0, w->arena_size);
	w->bufs = calloc(w->nr_bufs, sizeof(*w->bufs));
	w->memory_bytes += w->arena_size + w->nr_bufs * sizeof(*w->bufs) +
			   (uint64_t)WPS_NR_LANES * w->nr_bufs * IMGW_MAX_EXT *
			   sizeof(*w->q[0].e);
	w->qcap = w->nr_bufs * IMGW_MAX_EXT;
	w->q[WPS_LANE_SWEEP].e = calloc(w->qcap, sizeof(*w->q[0].e));
	w->q[WPS_LANE_FAULT].e = calloc(w->qcap, sizeof(*w->q[0].e));
	if (!w->bufs || !w->q[WPS_LANE_SWEEP].e || !w->q[WPS_LANE_FAULT].e)
		return -ENOMEM;
	for (i = 0; i < w->nr_bufs; i++) {
		struct imgw_buf *b = &w->bufs[i];

		b->data = w->arena + (size_t)i * w->buf_size;
		b->pool = i < nr_reserve ? POOL_RESERVE : POOL_NORMAL;
		b->next = w->free_list[b->pool];
		w->free_list[b->pool] = b;
		w->nr_free[b->pool]++;
	}
	return 0;
}

static int open_partial(struct wps_img_writer *w)
{
	/* O_NOFOLLOW: a symlink planted as "<path>.partial" is never
	 * written through (wpsnapd creates images as root). */
	int oflags = O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC;
	struct stat st;

	if (!(w->flags & WPS_IMGW_OVERWRITE)) {
		if (lstat(w->path, &st) == 0) {
			wps_err(w->ctx, "image %s: already exists (not overwriting)",
				w->path);
			return -EEXIST;
		}
		if (errno != ENOENT) {
			wps_err(w->ctx, "image %s: %s", w->path, strerror(errno));
			return -errno;
		}
	}
	w->direct = !(w->flags & WPS_IMGW_NO_DIRECT);
	w->fd = open(w->partial, oflags | (w->direct ? O_DIRECT : 0), 0644);
	if (w->fd < 0 && w->direct && errno == EINVAL) {
		wps_log_once(w->ctx, WPS_LOG_WARN, &imgw_sink_ops,
			     "%s: filesystem refuses O_DIRECT, using buffered I/O",
			     w->path);
		w->direct = false;
		w->fd = open(w->partial, oflags, 0644);
	}
	if (w->fd < 0) {
		wps_err(w->ctx, "image %s: cannot create: %s", w->partial,
			strerror(errno));
		return -errno;
	}
	w->partial_exists = true;
	/* Data writes then never extend the file, which filesystems can
	 * do without serializing on the inode size. */
	if (ftruncate(w->fd, (off_t)w->lay.trailer_offset) < 0) {
		wps_err(w->ctx, "image %s: cannot size to %llu bytes: %s",
			w->partial, (unsigned long long)w->lay.trailer_offset,
			strerror(errno));
		return -errno;
	}
	return 0;
}

/* libaio context: room for every extent of every buffer if the system
 * allows (aio slots are a system-wide budget, fs.aio-max-nr); with
 * fewer, the I/O thread keeps the rest queued until completions free
 * slots. */
static int file_aio_setup(struct wps_img_writer *w)
{
	uint32_t nr = w->qcap < IMGW_MAX_AIO ? w->qcap : IMGW_MAX_AIO;
	int err;

	while ((err = io_setup((int)nr, &w->aio)) == -EAGAIN && nr > IMGW_MIN_AIO)
		nr /= 2;
	if (err) {
		wps_err(w->ctx, "image %s: io_setup(%u): %s (see /proc/sys/fs/aio-max-nr)",
			w->path, nr, strerror(-err));
		return err;
	}
	w->aio_ready = true;
	return 0;
}

static int file_open(struct wps_img_writer *w)
{
	int err;

	if (asprintf(&w->partial, "%s.partial", w->path) < 0) {
		w->partial = NULL;
		return -ENOMEM;
	}
	err = open_partial(w);
	return err ? err : file_aio_setup(w);
}

static void file_close(struct wps_img_writer *w)
{
	if (w->aio_ready)
		io_destroy(w->aio);
	w->aio_ready = false;
}

static const struct wps_img_out_ops img_out_file = {
	.kind = "file",
	.open = file_open,
	.io_main = file_io_main,
	.write_sync = file_write_sync,
	.seal = file_seal,
	.publish = file_publish,
	.discard = file_discard,
	.close = file_close,
};

static int start_io(struct wps_img_writer *w)
{
	sigset_t all, old;
	int err;

	/* Signals are for the application's threads, not ours (SIGXFSZ
	 * from a write past RLIMIT_FSIZE becomes a plain EFBIG). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&w->io_thread, NULL, w->out->io_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		wps_err(w->ctx, "image %s: cannot start the I/O thread: %s",
			w->path, strerror(-err));
		return err;
	}
	w->io_started = true;
	return 0;
}

int wps_img_writer_open(struct wps_ctx *ctx, const char *path,
			const struct wps_img_writer_region *regions,
			unsigned int nr, const struct wps_img_writer_opts *opts,
			struct wps_img_writer **out)
{
	static const uint8_t nil[16];
	struct wps_img_writer *w;
	int err = -ENOMEM;

	*out = NULL;
	if (!path || !*path || (nr && !regions) || nr > WPS_IMG_MAX_REGIONS) {
		wps_err(ctx, "image %s: bad arguments (%u regions, at most %u)",
			path ? path : "(null)", nr, WPS_IMG_MAX_REGIONS);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->ctx = ctx;
	w->fd = -1;
	w->efd = -1;
	w->flags = opts ? opts->flags : 0;
	w->keep = opts ? opts->keep : 0;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	pthread_cond_init(&w->reap_cond, NULL);
	/* The kind is the name's: an NBD URI is an export, anything else
	 * a file path. */
	w->out = wps_img_name_is_nbd(path) ? &wps_img_out_nbd : &img_out_file;
	w->path = strdup(path);
	if (!w->path)
		goto fail;
	if (opts && memcmp(opts->uuid, nil, 16)) {
		memcpy(w->uuid, opts->uuid, 16);
	} else {
		if (getrandom(w->uuid, 16, 0) != 16) {
			err = -errno;
			wps_err(ctx, "image %s: getrandom: %s", path, strerror(errno));
			goto fail;
		}
		w->uuid[6] = (w->uuid[6] & 0x0f) | 0x40; /* RFC 4122 v4 */
		w->uuid[8] = (w->uuid[8] & 0x3f) | 0x80;
	}
	if (opts)
		memcpy(w->parent_uuid, opts->parent_uuid, 16);

	err = setup_regions(w, regions, nr);
	if (err)
		goto fail;
	err = setup_buffers(w, opts);
	if (err)
		goto fail;
	w->efd = eventfd(0, EFD_CLOEXEC);
	if (w->efd < 0) {
		err = -errno;
		wps_err(ctx, "image %s: eventfd: %s", path, strerror(errno));
		goto fail;
	}
	err = w->out->open(w);
	if (err)
		goto fail;
	err = start_io(w);
	if (err)
		goto fail;
	wps_dbg(ctx, "image %s: %u regions, %u buffers of %u bytes, %s I/O",
		path, nr, w->nr_bufs, w->buf_size,
		w->direct ? "direct" : "buffered");
	*out = w;
	return 0;
fail:
	wps_img_writer_free(w);
	return err;
}
