/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The image writer's NBD output kind (stream/img_out.h): a format-v1
 * image written straight to an NBD export (nbdkit, qemu-nbd in front of
 * any QEMU block driver) with libnbd, byte for byte the layout of a file
 * image, so the NBD reader (stream/nbd_source.c) reads it back as is.
 *
 * It owns its libnbd handles: one connection, plus up to NBDW_CONNS - 1
 * more when the server advertises multi-conn (then a flush on one covers
 * the writes completed on all, which is what publication relies on).
 * Only the writer's I/O thread polls them while pages flow; the
 * synchronous metadata writes come after that thread stopped, so a
 * handle never has two pollers.
 *
 * Publication. An export cannot be renamed, so what makes a plain image
 * is its superblock (offset 0), written last:
 *   open:    the old superblock is overwritten with zeros and flushed, so
 *            from here until publish the export holds no valid image;
 *   pages, trailer, footer, region table (the writer; holes not written:
 *            an absent block is zero by the bitmap, never read);
 *   seal:    flush, acknowledged by the server;
 *   publish: superblock (already written by the writer), flush again.
 * A failure or cancel leaves the zeroed superblock; one after the
 * superblock was sent is undone by zeroing it again (best effort, as the
 * server may be gone; then the reader still refuses an image whose
 * superblock is torn or names a footer that is not there).
 *
 * A member of a checkpoint chain ("URI#N", stream/nbd_chain.h) is
 * published by its entry in the export's chain table instead: the image
 * goes after the table's last entry (n->base; every offset is shifted
 * by it), superblock included, then one flush, acknowledged, then the
 * next table generation with the entry, FUA (or write + flush). Until
 * that write is acknowledged the table names the previous checkpoint;
 * the image's own bytes, in no entry, are never read.
 *
 * Back-pressure: at most NBDW_DEPTH requests per connection are given to
 * libnbd; the rest stays in the writer's queue, whose buffers are the
 * writer's fixed budget, so a slow server stalls the lanes, never memory.
 *
 * Stalls: a server that accepts the connection and then stops answering
 * (stopped, hung, or a link whose packets vanish: TCP notices that only
 * after many minutes) must not hang the snapshot, whose guest may be
 * waiting on a write fault. Every wait for the server is bounded by
 * n->timeout_ms of silence (WPSNAP_NBD_TIMEOUT, default 30 s): in the
 * I/O thread, a connection with requests outstanding and no reply for
 * that long is failed with ETIMEDOUT; the synchronous requests (open,
 * metadata, flushes) wait through wps_nbd_wait. A failed connection is
 * closed at once, so that no late callback of it can touch an extent the
 * writer has reused, and the extents it held are finished as failed.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/image.h>

#include "base/clock.h"
#include "base/log.h"
#include "stream/img_out.h"
#include "stream/nbd_chain.h"
#include "stream/nbd_conn.h"

#define NBDW_CONNS 4u               /* connections at most (multi-conn) */
#define NBDW_DEPTH 64u              /* requests in flight per connection */
#define NBDW_PIECE (256u << 10)     /* bytes per write request at most */
#define NBDW_CONNECT_MS 10000       /* first connection: server must answer */
#define NBDW_EXTRA_CONNECT_MS 3000  /* further ones: else use what we have */

struct nbdw_conn {
	struct nbd_handle *h;       /* NULL once dead */
	struct wps_img_writer *w;
	unsigned int inflight;      /* requests; I/O thread only */
	uint64_t since_ns;          /* last reply, or the first request
				       after none was outstanding */
	/* Extents with requests on this connection (or being issued on
	 * it): what a failed connection must finish. Each but the one
	 * being issued has a request in flight, hence the bound. */
	struct imgw_ext *ext[NBDW_DEPTH + 1];
	unsigned int nr_ext;
	bool dead;                  /* lost or stalled: never used again */
};

struct nbdw {
	struct nbdw_conn conn[NBDW_CONNS];
	char *uri;                  /* what libnbd connects to (no "#N") */
	/* A chain member ("URI#N"): the table read at open, the member's
	 * seq, and where its image goes. base is 0 and chain NULL for a
	 * plain image at the export's start. */
	struct wps_nbd_chain *chain;
	int64_t seq;
	uint64_t base;
	uint64_t avail;             /* bytes from base the image may use: to
				       the export's end or, in a ring, the
				       oldest entry kept */
	bool can_fua;
	unsigned int nr_conns;
	unsigned int next;          /* round robin over connections */
	uint64_t export_size;
	uint64_t piece;
	int timeout_ms;             /* silence that makes the server stalled */
	bool can_flush;
	struct imgw_ext *cur;       /* extent being issued, piece by piece */
	uint32_t cur_done;          /* its bytes issued */
	bool sb_sent;               /* superblock written, not yet published */
};

static struct nbdw *priv(struct wps_img_writer *w)
{
	return w->out_priv;
}

/* A live connection: the first one that did not die. */
static struct nbdw_conn *live_conn(struct nbdw *n)
{
	unsigned int i;

	for (i = 0; i < n->nr_conns; i++)
		if (!n->conn[i].dead)
			return &n->conn[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The I/O thread                                                      */
/* ------------------------------------------------------------------ */

/* e has no request left on its connection: it is written (or failed,
 * the error set). */
static void ext_finish(struct nbdw_conn *c, struct imgw_ext *e)
{
	unsigned int i;

	for (i = 0; i < c->nr_ext; i++)
		if (c->ext[i] == e) {
			c->ext[i] = c->ext[--c->nr_ext];
			break;
		}
	wps_imgw_done(c->w, e);
}

/*
 * c is gone (its error already set): close it now, before anything
 * else, so that none of its callbacks can ever run again (they would
 * find extents the writer has reused), then finish the extents it held
 * as failed. After this the writer waits for nothing from c.
 */
static void conn_fail(struct nbdw *n, struct nbdw_conn *c)
{
	c->dead = true;
	nbd_close(c->h);
	c->h = NULL;
	if (n->cur && n->cur->conn == c)
		n->cur = NULL;
	while (c->nr_ext) {
		struct imgw_ext *e = c->ext[--c->nr_ext];

		e->pieces = 0;
		wps_imgw_done(c->w, e);
	}
	c->inflight = 0;
}

/* libnbd aborts a dead connection's requests (their callbacks ran in
 * the notify that failed); conn_fail finishes whatever remains. */
static void conn_lost(struct wps_img_writer *w, struct nbdw *n,
		      struct nbdw_conn *c)
{
	wps_imgw_set_error(w, wps_nbd_errno_or(-EIO), "image %s: connection "
			   "to the NBD server lost: %s", w->path,
			   wps_nbd_why());
	conn_fail(n, c);
}

/* Completion of one piece, from nbd_aio_notify_* in the I/O thread
 * (also for the requests libnbd aborts when the connection dies, with
 * ENOTCONN). An extent is done when its last piece is. */
static int piece_done(void *user_data, int *error)
{
	struct imgw_ext *e = user_data;
	struct nbdw_conn *c = e->conn;
	struct wps_img_writer *w = c->w;

	if (c->dead)
		return 1;   /* accounted for by conn_fail */
	c->inflight--;
	c->since_ns = wps_now_ns();
	if (*error)
		wps_imgw_set_error(w, -*error, "image %s: the NBD server failed "
				   "a write of %u bytes at offset %llu: %s",
				   w->path, e->len,
				   (unsigned long long)e->file_off,
				   strerror(*error));
	if (--e->pieces == 0)
		ext_finish(c, e);
	return 1;   /* retire the command */
}

/* A live connection with room for a request, round robin. */
static struct nbdw_conn *conn_with_room(struct nbdw *n)
{
	unsigned int i;

	for (i = 0; i < n->nr_conns; i++) {
		struct nbdw_conn *c = &n->conn[(n->next + i) % n->nr_conns];

		if (!c->dead && c->inflight < NBDW_DEPTH) {
			n->next = (n->next + i + 1) % n->nr_conns;
			return c;
		}
	}
	return NULL;
}

/*
 * Hand queued extents to libnbd while connections have room. An extent
 * goes out on one connection, in pieces of at most n->piece bytes; its
 * pieces count holds one extra reference while it is being issued, so
 * that it is done exactly once, whether its pieces complete before the
 * last is issued or an issue fails half way.
 */
static void nbdw_submit(struct wps_img_writer *w, struct nbdw *n)
{
	nbd_completion_callback cb = { .callback = piece_done };

	for (;;) {
		struct imgw_ext *e = n->cur;
		struct nbdw_conn *c;

		if (!e) {
			if (!wps_imgw_peek(w, &e, 1))
				return;
			c = conn_with_room(n);
			if (!c)
				return;     /* a completion wakes us */
			wps_imgw_consumed(w, 1);
			c->ext[c->nr_ext++] = e;
			e->conn = c;
			e->pieces = 1;
			n->cur = e;
			n->cur_done = 0;
		}
		c = e->conn;
		if (wps_imgw_error(w))
			n->cur_done = e->len;   /* the rest is not written */
		while (n->cur_done < e->len && c->inflight < NBDW_DEPTH) {
			uint32_t len = e->len - n->cur_done;
			uint64_t off = n->base + e->file_off + n->cur_done;

			if (len > n->piece)
				len = (uint32_t)n->piece;
			cb.user_data = e;
			/* Counted before the call: a request libnbd queued
			 * is completed (its callback run) even when the
			 * connection dies inside this very call, before it
			 * returns; counted after, that callback would take
			 * the extent's last reference and finish it, and
			 * the issue would finish it a second time. */
			if (!c->inflight++)
				c->since_ns = wps_now_ns();
			e->pieces++;
			if (nbd_aio_pwrite(c->h, e->buf->data + e->buf_off +
					   n->cur_done, len, off, cb, 0) < 0) {
				/* not queued: no callback will come */
				c->inflight--;
				e->pieces--;
				wps_imgw_set_error(w, wps_nbd_err(c->h, -EIO),
						   "image %s: NBD write of %u bytes "
						   "at offset %llu: %s%s", w->path,
						   len, (unsigned long long)off,
						   wps_nbd_lost(c->h),
						   wps_nbd_why());
				n->cur_done = e->len;
				break;
			}
			n->cur_done += len;
			if (nbd_aio_is_dead(c->h) > 0 || nbd_aio_is_closed(c->h) > 0) {
				/* died inside the call: its requests were
				 * completed as failed; finish the rest,
				 * this extent included, and leave it */
				conn_lost(w, n, c);
				return;
			}
		}
		if (n->cur_done < e->len)
			return;             /* connection full */
		n->cur = NULL;
		if (--e->pieces == 0)
			ext_finish(c, e);
	}
}

/*
 * Fail every connection whose outstanding requests got no reply for the
 * timeout; return the poll timeout until the next one could, -1 when
 * no request is outstanding (nothing to wait for but the writer).
 */
static int check_stalls(struct wps_img_writer *w, struct nbdw *n)
{
	uint64_t now = wps_now_ns();
	uint64_t limit = (uint64_t)n->timeout_ms * 1000000u;
	int next = -1;
	unsigned int i;

	for (i = 0; i < n->nr_conns; i++) {
		struct nbdw_conn *c = &n->conn[i];
		uint64_t waited, ms;
		char what[64];

		if (c->dead || !c->inflight)
			continue;
		waited = now > c->since_ns ? now - c->since_ns : 0;
		if (waited >= limit) {
			snprintf(what, sizeof(what), "%u write requests",
				 c->inflight);
			wps_imgw_set_error(w, -ETIMEDOUT, WPS_NBD_STALL_FMT, w->path,
					   what, n->timeout_ms / 1000.0);
			conn_fail(n, c);
			continue;
		}
		ms = (limit - waited + 999999) / 1000000;
		if (next < 0 || ms < (uint64_t)next)
			next = (int)ms;
	}
	return next;
}

static void *nbdw_io_main(void *arg)
{
	struct wps_img_writer *w = arg;
	struct nbdw *n = priv(w);
	struct pollfd pfd[1 + NBDW_CONNS];
	struct nbdw_conn *pc[1 + NBDW_CONNS];

	for (;;) {
		unsigned int i, k = 1;
		uint64_t v;
		int tmo;

		nbdw_submit(w, n);
		tmo = check_stalls(w, n);
		if (wps_imgw_io_finished(w))
			return NULL;
		pfd[0] = (struct pollfd){ .fd = w->efd, .events = POLLIN };
		for (i = 0; i < n->nr_conns; i++) {
			struct nbdw_conn *c = &n->conn[i];
			unsigned int dir;

			if (c->dead)
				continue;
			dir = nbd_aio_get_direction(c->h);
			pfd[k].fd = nbd_aio_get_fd(c->h);
			pfd[k].events =
				(dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
				(dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
			pfd[k].revents = 0;
			pc[k++] = c;
		}
		if (poll(pfd, k, tmo) < 0) {
			if (errno == EINTR)
				continue;
			wps_imgw_set_error(w, -errno, "image %s: poll: %s",
					   w->path, strerror(errno));
			usleep(1000); /* keep going, without spinning */
			continue;
		}
		if (pfd[0].revents & POLLIN &&
		    read(w->efd, &v, sizeof(v)) < 0 && errno != EINTR)
			wps_imgw_set_error(w, -errno, "image %s: eventfd read: %s",
					   w->path, strerror(errno));
		for (i = 1; i < k; i++) {
			int r = 0;

			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				r = nbd_aio_notify_read(pc[i]->h);
			else if (pfd[i].revents & POLLOUT)
				r = nbd_aio_notify_write(pc[i]->h);
			if (r < 0 || (pfd[i].revents & POLLNVAL))
				conn_lost(w, n, pc[i]);
		}
	}
}

/* ------------------------------------------------------------------ */
/* Synchronous requests (before the I/O thread, or after it stopped)   */
/* ------------------------------------------------------------------ */

/*
 * Wait for the command cookie on c (issued without a callback; -1 when
 * the issue itself failed), bounded by the timeout. -errno, logged as
 * "image URI: WHAT: why". A stalled connection is failed (closed), so
 * that what comes next (the discard's clearing of the superblock) goes
 * to another connection or fails at once instead of waiting again.
 */
static int conn_wait(struct wps_img_writer *w, struct nbdw_conn *c,
		     int64_t cookie, const char *what)
{
	struct nbdw *n = priv(w);
	int err = wps_nbd_wait(c->h, cookie, n->timeout_ms);

	if (err == -ETIMEDOUT) {
		wps_err(w->ctx, WPS_NBD_STALL_FMT, w->path, what,
			n->timeout_ms / 1000.0);
		conn_fail(n, c);
	} else if (err) {
		wps_err(w->ctx, "image %s: %s: %s%s", w->path, what,
			wps_nbd_lost(c->h), wps_nbd_why());
	}
	return err;
}

static int nbdw_write_sync(struct wps_img_writer *w, const void *data,
			   size_t len, uint64_t off, const char *what)
{
	struct nbdw *n = priv(w);
	struct nbdw_conn *c = live_conn(n);
	const uint8_t *p = data;

	if (!c) {
		wps_err(w->ctx, "image %s: writing %s: no live connection to "
			"the NBD server", w->path, what);
		return -ENOTCONN;
	}
	if (off > n->avail || len > n->avail - off) {
		wps_err(w->ctx, "image %s: %s (%zu bytes at offset %llu) ends "
			"past the end of the %llu-byte export", w->path, what,
			len, (unsigned long long)(n->base + off),
			(unsigned long long)n->export_size);
		return -ENOSPC;
	}
	/* The superblock goes at offset 0, last of all: from its first
	 * byte on, a failure must take it back (a chain member's is not
	 * published before its table entry: nothing to take back). */
	if (off == 0 && !n->chain)
		n->sb_sent = true;
	off += n->base;
	while (len) {
		size_t piece = len < n->piece ? len : n->piece;
		char desc[128];
		int err;

		snprintf(desc, sizeof(desc), "writing %s (%zu bytes at offset "
			 "%llu)", what, piece, (unsigned long long)off);
		err = conn_wait(w, c, nbd_aio_pwrite(c->h, p, piece, off,
						     NBD_NULL_COMPLETION, 0),
				desc);
		if (err)
			return err;
		p += piece;
		off += piece;
		len -= piece;
	}
	return 0;
}

/* Flush on one connection: with multi-conn (the only case where we hold
 * several) it covers the writes completed on all of them. */
static int nbdw_flush(struct wps_img_writer *w, const char *why)
{
	struct nbdw *n = priv(w);
	struct nbdw_conn *c = live_conn(n);
	char desc[96];

	if (!n->can_flush)
		return 0;
	if (!c) {
		wps_err(w->ctx, "image %s: flush %s: no live connection to the "
			"NBD server", w->path, why);
		return -ENOTCONN;
	}
	snprintf(desc, sizeof(desc), "NBD flush %s", why);
	return conn_wait(w, c, nbd_aio_flush(c->h, NBD_NULL_COMPLETION, 0),
			 desc);
}

/* ------------------------------------------------------------------ */
/* Publication                                                         */
/* ------------------------------------------------------------------ */

static int nbdw_seal(struct wps_img_writer *w, uint64_t size)
{
	struct nbdw *n = priv(w);

	if (size > n->avail) {
		if (n->chain)
			wps_err(w->ctx, "image %s: the checkpoint is %llu bytes, "
				"the export has %llu left after the %u checkpoint(s) "
				"it holds: export full (they stay intact)", w->path,
				(unsigned long long)size,
				(unsigned long long)n->avail, n->chain->nr);
		else
			wps_err(w->ctx, "image %s: the image is %llu bytes, the "
				"export only %llu", w->path,
				(unsigned long long)size,
				(unsigned long long)n->export_size);
		return -ENOSPC;
	}
	if (n->chain) {
		struct wps_nbd_chain_ent *e = &n->chain->ent[n->chain->nr];

		/* the entry publish will add: what seal made durable */
		memset(e, 0, sizeof(*e));
		e->seq = (uint64_t)n->seq;
		e->offset = n->base;
		e->length = size;
		memcpy(e->uuid, w->uuid, 16);
		memcpy(e->parent_uuid, w->parent_uuid, 16);
		/* A member's superblock publishes nothing (its table entry
		 * does): it may go out with the rest, and publish's one
		 * flush covers them all, before the entry is written. */
		__atomic_store_n(&w->st_file_bytes, size, __ATOMIC_RELAXED);
		return 0;
	}
	__atomic_store_n(&w->st_file_bytes, size, __ATOMIC_RELAXED);
	return nbdw_flush(w, "before the superblock");
}

/*
 * Write the table copy of generation t->generation into its slot and
 * make it durable: with FUA where the server offers it (one round trip),
 * else write + flush. The other slot keeps the previous generation
 * until this one is complete.
 */
static int table_write(struct wps_img_writer *w, const struct wps_nbd_chain *t,
		       const char *why)
{
	struct nbdw *n = priv(w);
	struct nbdw_conn *c = live_conn(n);
	uint64_t off = wps_nbd_chain_slot(t->generation);
	char desc[160];
	void *buf;
	int err;

	if (!c) {
		wps_err(w->ctx, "image %s: writing the chain table %s: no live "
			"connection to the NBD server", w->path, why);
		return -ENOTCONN;
	}
	buf = malloc(WPS_NBD_CHAIN_COPY);
	if (!buf)
		return -ENOMEM;
	wps_nbd_chain_encode(t, buf);
	snprintf(desc, sizeof(desc), "writing the chain table %s (generation "
		 "%llu at offset %llu)", why, (unsigned long long)t->generation,
		 (unsigned long long)off);
	err = conn_wait(w, c, nbd_aio_pwrite(c->h, buf, WPS_NBD_CHAIN_COPY, off,
					     NBD_NULL_COMPLETION,
					     n->can_fua ? LIBNBD_CMD_FLAG_FUA : 0),
			desc);
	free(buf);
	if (!err && !n->can_fua)
		err = nbdw_flush(w, why);
	return err;
}

static int nbdw_publish(struct wps_img_writer *w)
{
	struct nbdw *n = priv(w);
	int err = nbdw_flush(w, n->chain ? "of the checkpoint's image" :
			     "of the superblock");

	if (err)
		return err;
	n->sb_sent = false;
	if (!n->chain)
		return 0;
	/* The image is durable; only its entry makes it a checkpoint. */
	n->chain->nr++;
	n->chain->generation++;
	err = table_write(w, n->chain, "entering the checkpoint");
	if (err) {
		n->chain->nr--;
		n->chain->generation--;
	}
	return err;
}

/* Zeros over the superblock, flushed: the export holds no valid image. */
static int zero_super(struct wps_img_writer *w, const char *why)
{
	struct nbdw *n = priv(w);
	struct nbdw_conn *c = live_conn(n);
	static const uint8_t zero[WPS_IMG_BLOCK];
	char desc[96];
	int err;

	if (!c)
		return -ENOTCONN;
	snprintf(desc, sizeof(desc), "clearing the superblock %s", why);
	err = conn_wait(w, c, nbd_aio_pwrite(c->h, zero, sizeof(zero), 0,
					     NBD_NULL_COMPLETION, 0), desc);
	return err ? err : nbdw_flush(w, why);
}

static void nbdw_discard(struct wps_img_writer *w)
{
	struct nbdw *n = priv(w);

	if (!n || !n->sb_sent)
		return;
	n->sb_sent = false;
	if (zero_super(w, "after the failed commit"))
		wps_warn(w->ctx, "image %s: the superblock of the failed image "
			 "may still be on the export; readers refuse it only "
			 "if its footer or checksums are wrong", w->path);
}

static void nbdw_close(struct wps_img_writer *w)
{
	struct nbdw *n = priv(w);
	unsigned int i;

	if (!n)
		return;
	for (i = 0; i < n->nr_conns; i++)
		if (n->conn[i].h)
			nbd_close(n->conn[i].h);
	free(n->chain);
	free(n->uri);
	free(n);
	w->out_priv = NULL;
}

/* ------------------------------------------------------------------ */
/* open                                                                */
/* ------------------------------------------------------------------ */

/* What the image needs at least: everything up to the footer with no
 * blob (blobs, known at commit, are checked again by seal). */
static uint64_t min_image_size(const struct wps_img_writer *w)
{
	return wps_img_align(w->lay.blob_table_offset, WPS_IMG_BLOCK) +
	       WPS_IMG_BLOCK;
}

/* Refuse to overwrite an image without WPS_IMGW_OVERWRITE, as for a
 * file: the magic at offset 0 is what names one. */
static int check_existing(struct wps_img_writer *w, struct nbdw_conn *c)
{
	uint8_t sb[WPS_IMG_BLOCK];
	int err;

	if (w->flags & WPS_IMGW_OVERWRITE)
		return 0;
	err = conn_wait(w, c, nbd_aio_pread(c->h, sb, sizeof(sb), 0,
					    NBD_NULL_COMPLETION, 0),
			"reading the export's first block");
	if (err)
		return err;
	if (!memcmp(sb, WPS_IMG_MAGIC, 8)) {
		wps_err(w->ctx, "image %s: the export already holds an image "
			"(not overwriting)", w->path);
		return -EEXIST;
	}
	if (!memcmp(sb, WPS_NBD_CHAIN_MAGIC, 8)) {
		wps_err(w->ctx, "image %s: the export holds a checkpoint chain "
			"(not overwriting)", w->path);
		return -EEXIST;
	}
	return 0;
}

/*
 * Open a chain member "URI#N": read the table and decide where the
 * image goes. A new series (N == 0) starts a new table, over an existing
 * chain or image only with WPS_IMGW_OVERWRITE; the table is reset (an
 * empty generation, durable) before any image byte lands, so the old
 * chain is never half overwritten. A later checkpoint is appended after
 * the last entry, which must be its parent: a table that changed under
 * the series (another writer) is refused, not extended.
 */
static int chain_open(struct wps_img_writer *w, struct nbdw *n,
		      struct nbdw_conn *c)
{
	struct wps_nbd_chain *t;
	const struct wps_nbd_chain_ent *last;
	static const uint8_t none[16];
	bool reset = false;
	uint64_t end = 0;
	uint32_t drop = 0;
	char a[40], b[40];
	int err;

	t = n->chain = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	err = wps_nbd_chain_read(w->ctx, c->h, w->path, n->timeout_ms, t);
	if (err)
		return err;
	last = wps_nbd_chain_find(t, -1);
	switch (t->state) {
	case WPS_NBD_CHAIN_NONE:
		reset = true;
		break;
	case WPS_NBD_CHAIN_PLAIN:
	case WPS_NBD_CHAIN_DAMAGED:
		if (!(w->flags & WPS_IMGW_OVERWRITE)) {
			wps_err(w->ctx, "image %s: the export holds %s (not "
				"overwriting)", w->path,
				t->state == WPS_NBD_CHAIN_PLAIN ? "an image" :
				"a chain table no copy of which is valid");
			return t->state == WPS_NBD_CHAIN_PLAIN ? -EEXIST : -EBADMSG;
		}
		reset = true;
		break;
	case WPS_NBD_CHAIN_VALID:
		if (n->seq == 0 && t->nr) {
			if (!(w->flags & WPS_IMGW_OVERWRITE)) {
				wps_err(w->ctx, "image %s: the export holds a chain "
					"of %u checkpoint(s), the last #%llu (not "
					"overwriting)", w->path, t->nr,
					(unsigned long long)last->seq);
				return -EEXIST;
			}
			reset = true;
		} else if (last && (uint64_t)n->seq <= last->seq) {
			wps_err(w->ctx, "image %s: the export's chain already "
				"reaches checkpoint #%llu", w->path,
				(unsigned long long)last->seq);
			return -EEXIST;
		}
		break;
	}
	if (reset)
		last = NULL;
	/* An increment goes only after its parent: on a fresh (or reset)
	 * table its chain could never be followed. */
	if (memcmp(w->parent_uuid, none, 16) &&
	    (!last || memcmp(last->uuid, w->parent_uuid, 16))) {
		wps_uuid_str(w->parent_uuid, a);
		if (last)
			wps_uuid_str(last->uuid, b);
		wps_err(w->ctx, "image %s: its parent is image %s, but the "
			"export's chain ends with %s: the table changed under "
			"this series (another writer?)", w->path, a,
			last ? b : "nothing");
		return -ESTALE;
	}
	if (reset) {
		t->state = WPS_NBD_CHAIN_VALID;
		t->nr = 0;
	}
	if (t->nr == WPS_IMG_CHAIN_MAX && !w->keep) {
		wps_err(w->ctx, "image %s: the export's chain holds %u "
			"checkpoints, the most a chain may have (docs/FORMAT.md "
			"3.1): start a new one (--overwrite)", w->path, t->nr);
		return -ENOSPC;
	}
	if (wps_nbd_chain_place(t, w->keep, n->export_size, min_image_size(w),
				&drop, &n->base, &end)) {
		wps_err(w->ctx, "image %s: checkpoint #%llu needs at least %llu "
			"bytes, the export has %llu left at offset %llu after "
			"its %u checkpoint(s)%s: export full (they stay intact)",
			w->path, (unsigned long long)n->seq,
			(unsigned long long)min_image_size(w),
			(unsigned long long)(n->base < n->export_size ?
					     n->export_size - n->base : 0),
			(unsigned long long)n->base, t->nr,
			w->keep ? ", none of which retention may reclaim" : "");
		return -ENOSPC;
	}
	/* Bounded by the stretch: the image never reaches an entry. */
	n->avail = end - n->base;
	if (drop) {
		/* Reclaim first, durably: until this generation is on the
		 * export, the space stays named and is not written. */
		wps_info(w->ctx, "image %s: retention reclaims checkpoint(s) "
			 "#%llu to #%llu (keep %u)", w->path,
			 (unsigned long long)t->ent[0].seq,
			 (unsigned long long)t->ent[drop - 1].seq, w->keep);
		memmove(t->ent, t->ent + drop, (t->nr - drop) * sizeof(t->ent[0]));
		t->nr -= drop;
		t->generation++;
		err = table_write(w, t, "reclaiming old checkpoints");
		if (err)
			return err;
	}
	/* Only once the image is known to fit: a refused series leaves
	 * the export as it found it. */
	if (reset) {
		t->generation++;
		err = table_write(w, t, "starting a new chain");
	}
	return err;
}

static void open_more_conns(struct wps_img_writer *w, struct nbdw *n)
{
	while (n->nr_conns < NBDW_CONNS) {
		struct nbdw_conn *c = &n->conn[n->nr_conns];

		if (wps_nbd_connect(w->ctx, n->uri,
				    n->timeout_ms < NBDW_EXTRA_CONNECT_MS ?
				    n->timeout_ms : NBDW_EXTRA_CONNECT_MS,
				    true, &c->h))
			break;
		if (nbd_get_size(c->h) != (int64_t)n->export_size) {
			wps_warn(w->ctx, "image %s: another connection sees a "
				 "different export size; using fewer", w->path);
			nbd_close(c->h);
			c->h = NULL;
			break;
		}
		c->w = w;
		n->nr_conns++;
	}
}

static int nbdw_open(struct wps_img_writer *w)
{
	struct nbdw *n;
	struct nbdw_conn *c;
	int64_t size, max;
	int err;

	w->partial = strdup(w->path);   /* what the shared messages name */
	n = calloc(1, sizeof(*n));
	if (!w->partial || !n) {
		free(n);
		return -ENOMEM;
	}
	w->out_priv = n;
	n->piece = NBDW_PIECE;
	err = wps_nbd_chain_split(w->ctx, w->path, &n->uri, &n->seq);
	if (err)
		return err;
	err = wps_nbd_timeout_ms(w->ctx, w->path, &n->timeout_ms);
	if (err)
		return err;
	c = &n->conn[0];
	err = wps_nbd_connect(w->ctx, n->uri,
			      n->timeout_ms < NBDW_CONNECT_MS ? n->timeout_ms :
			      NBDW_CONNECT_MS, false, &c->h);
	if (err)
		return err;
	c->w = w;
	n->nr_conns = 1;
	if (nbd_is_read_only(c->h) == 1) {
		wps_err(w->ctx, "image %s: the NBD export is read-only", w->path);
		return -EROFS;
	}
	size = nbd_get_size(c->h);
	if (size < 0) {
		err = wps_nbd_errno_or(-EIO);
		wps_err(w->ctx, "image %s: the NBD server did not give the "
			"export's size: %s", w->path, wps_nbd_why());
		return err;
	}
	n->export_size = (uint64_t)size;
	n->avail = n->export_size;
	if (n->seq < 0 && n->export_size < min_image_size(w)) {
		wps_err(w->ctx, "image %s: the export is %llu bytes, the image "
			"needs at least %llu", w->path,
			(unsigned long long)n->export_size,
			(unsigned long long)min_image_size(w));
		return -ENOSPC;
	}
	max = nbd_get_block_size(c->h, LIBNBD_SIZE_MAXIMUM);
	if (max > 0 && (uint64_t)max < n->piece)
		n->piece = (uint64_t)max >= WPS_IMG_BLOCK ?
			   (uint64_t)max & ~(uint64_t)(WPS_IMG_BLOCK - 1) :
			   (uint64_t)max;
	n->can_flush = nbd_can_flush(c->h) == 1;
	n->can_fua = nbd_can_fua(c->h) == 1;
	if (!n->can_flush)
		wps_warn(w->ctx, "image %s: the NBD server offers no flush: the "
			 "image is as durable as the server makes its writes",
			 w->path);
	if (n->seq >= 0) {
		err = chain_open(w, n, c);
	} else {
		err = check_existing(w, c);
		if (!err)
			err = zero_super(w, "before writing");
	}
	if (err)
		return err;
	/* Several connections only where the server promises that a flush
	 * on one covers the writes of all (publication depends on it). */
	if (nbd_can_multi_conn(c->h) == 1)
		open_more_conns(w, n);
	wps_dbg(w->ctx, "image %s: %llu-byte NBD export (%s), %u connection(s), "
		"%llu-byte requests, flush %s", w->path,
		(unsigned long long)n->export_size, nbd_get_protocol(c->h),
		n->nr_conns, (unsigned long long)n->piece,
		n->can_flush ? "yes" : "no");
	return 0;
}

const struct wps_img_out_ops wps_img_out_nbd = {
	.kind = "nbd",
	.open = nbdw_open,
	.io_main = nbdw_io_main,
	.write_sync = nbdw_write_sync,
	.seal = nbdw_seal,
	.publish = nbdw_publish,
	.discard = nbdw_discard,
	.close = nbdw_close,
};
