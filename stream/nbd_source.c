/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image source on an NBD export (stream/nbd_source.h): the image file
 * lives on another host, exported as is by a standard NBD server, and is
 * read with libnbd. An image is random-access, which is exactly what NBD
 * serves, so no page server of our own is needed.
 *
 * It owns the libnbd handles: one connection reserved for the FAULT lane
 * (the lazy pager's fault thread: a guest fault must never queue behind a
 * bulk transfer, on our side or in the server's per-connection queue) and
 * a pool of BULK connections (NBD multi-conn) checked out one reader at a
 * time by prefetch, eager load, verify and metadata reads.
 *
 * A libnbd handle is thread-safe, but its synchronous calls hold the
 * handle for the whole round trip, so two threads sharing one handle
 * would serialise anyway; and an asynchronous reader must be the only one
 * polling its handle (another poller could retire its commands and leave
 * it waiting for nothing). Hence exclusive checkout: one reader per
 * connection, which then pipelines its whole request (split in pieces, up
 * to NBD_DEPTH in flight) on it, so that even one reader keeps the
 * network busy. Several readers (the eager loader's workers) use several
 * connections in parallel.
 *
 * Every wait for the server is bounded by silence (WPSNAP_NBD_TIMEOUT,
 * default 30 s, as for the writer): a connection whose reads get no
 * reply for that long fails them with ETIMEDOUT and is never used
 * again, so a stopped server or a cut link ends a restore with a clear
 * error instead of hanging it. A chain export's members (stream/
 * nbd_chain.h) share one set of connections (struct nbd_export) and
 * read at their own offset.
 */
#include "config.h"

#include <errno.h>
#include <libnbd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "stream/nbd_chain.h"
#include "stream/nbd_conn.h"
#include "stream/nbd_source.h"

#define NBD_PIECE (512u << 10)      /* bytes per NBD read request */
#define NBD_DEPTH 16u               /* requests in flight per connection */
#define NBD_CONNECT_MS 10000        /* first connection: server must answer */
#define NBD_EXTRA_CONNECT_MS 3000   /* further ones: else use what we have */

/* The reads in flight on one connection (one reader at a time). It lives
 * with the connection, not on the reader's stack: should libnbd retire a
 * command late (when the handle is closed), its callback still lands in
 * valid memory. */
struct nbd_io {
	unsigned int inflight;
	int err;
};

struct nbd_conn {
	struct nbd_handle *h;
	struct nbd_io io;
	bool busy;              /* checked out (bulk: under src->lock) */
	bool dead;              /* poll failed: never used again */
};

/* The connections to one export, shared by every source reading a
 * member of the chain it holds (wps_nbd_src_member): a chain of N images
 * then costs the connections of one, not N times as many (qemu-nbd
 * serves 1 client unless told more). The last source closes them. */
struct nbd_export {
	unsigned int refs;      /* sources using it; atomic */
	char *conn_uri;         /* what libnbd connects to (no "#N") */
	uint64_t piece;
	int timeout_ms;         /* silence that makes the server stalled */
	pthread_mutex_t lock;   /* bulk[].busy/dead, fault.dead */
	pthread_cond_t freed;
	pthread_mutex_t fault_lock;     /* held across a fault-lane read */
	struct nbd_conn fault;
	struct nbd_conn bulk[WPS_NBD_BULK_CONNS];
	unsigned int nr_bulk;
};

struct nbd_src {
	struct wps_img_src pub;
	char *uri;              /* the image's name: "URI" or "URI#N" */
	/* A member of a checkpoint chain on the export (stream/nbd_chain.h)
	 * starts at base; every read is shifted by it, and pub.size is the
	 * member's length. 0 for an image at the export's start. */
	uint64_t base;
	struct nbd_export *x;
};

/*
 * Connect c to s->uri within timeout_ms. We read into buffers we fully
 * overwrite or discard on error: no need for libnbd to zero them first.
 */
static int conn_open(struct nbd_src *s, struct nbd_conn *c, int timeout_ms,
		     bool quiet)
{
	int err = wps_nbd_connect(s->pub.ctx, s->x->conn_uri, timeout_ms, quiet,
				  &c->h);

	if (!err)
		nbd_set_pread_initialize(c->h, false);
	return err;
}

/* Completion of one piece, called from nbd_poll in the reader's thread
 * (the only poller of its connection). */
static int piece_done(void *user_data, int *error)
{
	struct nbd_io *io = user_data;

	if (*error && !io->err)
		io->err = -*error;
	io->inflight--;
	return 1;   /* retire the command */
}

/*
 * Read every segment on connection c, which the caller has checked out:
 * segments cut in pieces of s->x->piece bytes, up to NBD_DEPTH in flight.
 * On a poll failure the connection is dead (its pieces will never
 * complete, and nobody polls it again, so no late write lands in the
 * caller's buffers).
 */
static int conn_read(struct nbd_src *s, struct nbd_conn *c,
		     const struct wps_img_seg *seg, unsigned int nr)
{
	struct nbd_io *io = &c->io;
	nbd_completion_callback cb = { .callback = piece_done, .user_data = io };
	uint64_t fail_off = 0;
	size_t done = 0;
	unsigned int i = 0;
	int err = 0, r;

	io->err = 0;
	io->inflight = 0;
	for (;;) {
		while (!err && i < nr && io->inflight < NBD_DEPTH) {
			size_t len = seg[i].len - done;

			if (!len) {
				i++;
				done = 0;
				continue;
			}
			if (len > s->x->piece)
				len = s->x->piece;
			if (nbd_aio_pread(c->h, (uint8_t *)seg[i].buf + done, len,
					  s->base + seg[i].off + done, cb, 0) < 0) {
				err = wps_nbd_errno_or(-EIO);
				fail_off = seg[i].off + done;
				wps_err(s->pub.ctx, "image %s: NBD read of %zu "
					"bytes at offset %llu: %s", s->uri, len,
					(unsigned long long)fail_off, wps_nbd_why());
				break;
			}
			io->inflight++;
			done += len;
			if (done == seg[i].len) {
				i++;
				done = 0;
			}
		}
		if (!io->inflight)
			break;
		/* Bounded by silence, as the writer's waits: a server that
		 * stops answering (stopped, hung, a link whose packets
		 * vanish) fails the read instead of hanging a restore, or a
		 * guest's fault, for TCP's minutes. Each reply restarts it. */
		r = nbd_poll(c->h, s->x->timeout_ms);
		if (r <= 0) {
			int e = r ? wps_nbd_errno_or(-EIO) : -ETIMEDOUT;
			char what[64];

			if (r) {
				wps_err(s->pub.ctx, "image %s: connection to the "
					"NBD server lost: %s", s->uri, wps_nbd_why());
			} else {
				snprintf(what, sizeof(what), "%u read requests",
					 io->inflight);
				wps_err(s->pub.ctx, WPS_NBD_STALL_FMT, s->uri, what,
					s->x->timeout_ms / 1000.0);
			}
			/* never polled again: its reads may never complete,
			 * and no late one lands in the caller's buffers */
			pthread_mutex_lock(&s->x->lock);
			c->dead = true;
			pthread_mutex_unlock(&s->x->lock);
			return err ? err : e;
		}
	}
	if (!err && io->err) {
		err = io->err;
		wps_err(s->pub.ctx, "image %s: the NBD server failed a read "
			"(in %u segment(s) from offset %llu): %s", s->uri, nr,
			(unsigned long long)seg[0].off, strerror(-err));
	}
	return err;
}

/* A free, live bulk connection, waiting for one if all are busy; NULL if
 * none is alive. */
static struct nbd_conn *bulk_get(struct nbd_src *s)
{
	struct nbd_conn *c = NULL;
	unsigned int i, alive;

	pthread_mutex_lock(&s->x->lock);
	for (;;) {
		for (i = 0, alive = 0; i < s->x->nr_bulk; i++) {
			if (s->x->bulk[i].dead)
				continue;
			alive++;
			if (!s->x->bulk[i].busy) {
				c = &s->x->bulk[i];
				c->busy = true;
				goto out;
			}
		}
		if (!alive)
			break;
		pthread_cond_wait(&s->x->freed, &s->x->lock);
	}
out:
	pthread_mutex_unlock(&s->x->lock);
	return c;
}

static void bulk_put(struct nbd_src *s, struct nbd_conn *c)
{
	pthread_mutex_lock(&s->x->lock);
	c->busy = false;
	pthread_cond_signal(&s->x->freed);
	pthread_mutex_unlock(&s->x->lock);
}

static int read_fault_conn(struct nbd_src *s, const struct wps_img_seg *seg,
			   unsigned int nr)
{
	int err;

	pthread_mutex_lock(&s->x->fault_lock);
	err = s->x->fault.dead ? -ENOTCONN : conn_read(s, &s->x->fault, seg, nr);
	pthread_mutex_unlock(&s->x->fault_lock);
	return err;
}

static int nbd_src_read(struct wps_img_src *src, enum wps_img_lane lane,
			const struct wps_img_seg *seg, unsigned int nr)
{
	struct nbd_src *s = (struct nbd_src *)src;
	struct nbd_conn *c;
	unsigned int i;
	int err;

	for (i = 0; i < nr; i++) {
		if (seg[i].off > src->size || seg[i].len > src->size - seg[i].off) {
			wps_err(src->ctx, "image %s: read of %zu bytes at offset "
				"%llu is past the end of the %llu-byte export: "
				"truncated", s->uri, seg[i].len,
				(unsigned long long)seg[i].off,
				(unsigned long long)src->size);
			return -EBADMSG;
		}
	}
	/* The fault lane owns its connection; if it died, faults borrow a
	 * bulk one (slower under load, but served). Bulk readers never
	 * touch the fault connection while bulk ones are alive. */
	if (lane == WPS_IMG_LANE_FAULT) {
		pthread_mutex_lock(&s->x->lock);
		c = s->x->fault.dead ? NULL : &s->x->fault;
		pthread_mutex_unlock(&s->x->lock);
		if (c)
			return read_fault_conn(s, seg, nr);
	}
	c = bulk_get(s);
	if (!c)
		return read_fault_conn(s, seg, nr);
	err = conn_read(s, c, seg, nr);
	bulk_put(s, c);
	return err;
}

static void export_put(struct nbd_export *x)
{
	unsigned int i;

	if (!x || __atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL))
		return;
	/* A connection that failed or stalled is closed without a word;
	 * the others say goodbye, bounded: the server may stall now. */
	for (i = 0; i < x->nr_bulk; i++) {
		if (!x->bulk[i].dead)
			wps_nbd_disconnect(x->bulk[i].h, x->timeout_ms);
		nbd_close(x->bulk[i].h);
	}
	if (x->fault.h && !x->fault.dead)
		wps_nbd_disconnect(x->fault.h, x->timeout_ms);
	nbd_close(x->fault.h);
	pthread_cond_destroy(&x->freed);
	pthread_mutex_destroy(&x->fault_lock);
	pthread_mutex_destroy(&x->lock);
	free(x->conn_uri);
	free(x);
}

static void nbd_src_close(struct wps_img_src *src)
{
	struct nbd_src *s = (struct nbd_src *)src;

	export_put(s->x);
	free(s->uri);
	free(s);
}

static const struct wps_img_src_ops nbd_src_ops = {
	.read = nbd_src_read,
	.close = nbd_src_close,
};

/*
 * If the export holds a checkpoint chain, point the source at the member
 * sel names (sel < 0: the last entry, the last durable checkpoint): base
 * and size become the member's, the name "URI#N". Its superblock must
 * carry the UUID the table names, so a table and an image that disagree
 * (a damaged or foreign export) are refused here, not restored. Without
 * a table, a selector is an error and the export is read from offset 0.
 */
static int find_member(struct nbd_src *s, int64_t sel)
{
	struct wps_ctx *ctx = s->pub.ctx;
	const struct wps_nbd_chain_ent *e;
	struct wps_img_super sb;
	struct wps_nbd_chain *t;
	struct nbd_conn *c;
	struct nbd_handle *h;
	char name[64], a[40], b[40];
	size_t len;
	int timeout_ms, err;
	char *p;

	timeout_ms = s->x->timeout_ms;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	/* A bulk connection, checked out (its only poller), as metadata
	 * reads go: the fault connection carries faults alone. */
	c = bulk_get(s);
	if (!c)
		pthread_mutex_lock(&s->x->fault_lock);
	h = c ? c->h : s->x->fault.h;
	s->base = 0;
	s->pub.size = (uint64_t)nbd_get_size(h);
	err = wps_nbd_chain_read(ctx, h, s->uri, timeout_ms, t);
	if (err)
		goto out;
	if (t->state == WPS_NBD_CHAIN_DAMAGED) {
		wps_err(ctx, "image %s: the export's chain table is damaged (no "
			"copy of it is valid)", s->uri);
		err = -EBADMSG;
		goto out;
	}
	if (t->state != WPS_NBD_CHAIN_VALID) {
		if (sel >= 0) {
			wps_err(ctx, "image %s: the export holds no checkpoint "
				"chain, so no checkpoint #%lld", s->uri,
				(long long)sel);
			err = -ENOENT;
		}
		goto out;
	}
	e = wps_nbd_chain_find(t, sel);
	if (!e) {
		if (t->nr && sel >= 0 && (uint64_t)sel < t->ent[0].seq)
			wps_err(ctx, "image %s: checkpoint #%lld was reclaimed "
				"by retention (--keep); the oldest one kept is "
				"#%llu (the chain holds #%llu to #%llu)", s->uri,
				(long long)sel,
				(unsigned long long)t->ent[0].seq,
				(unsigned long long)t->ent[0].seq,
				(unsigned long long)t->ent[t->nr - 1].seq);
		else if (t->nr)
			wps_err(ctx, "image %s: the export's chain has no "
				"checkpoint #%lld (it holds #%llu to #%llu)",
				s->uri, (long long)sel,
				(unsigned long long)t->ent[0].seq,
				(unsigned long long)t->ent[t->nr - 1].seq);
		else
			wps_err(ctx, "image %s: the export's checkpoint chain is "
				"empty (its first checkpoint never became "
				"durable)", s->uri);
		err = -ENOENT;
		goto out;
	}
	err = wps_nbd_wait(h, nbd_aio_pread(h, &sb, sizeof(sb), e->offset,
					    NBD_NULL_COMPLETION, 0), timeout_ms);
	if (err == -ETIMEDOUT)
		wps_err(ctx, WPS_NBD_STALL_FMT, s->uri, "the read of the "
			"checkpoint's superblock", timeout_ms / 1000.0);
	else if (err)
		wps_err(ctx, "image %s: reading the superblock of checkpoint "
			"#%llu at offset %llu: %s", s->uri,
			(unsigned long long)e->seq, (unsigned long long)e->offset,
			wps_nbd_why());
	if (err)
		goto out;
	if (memcmp(sb.magic, WPS_IMG_MAGIC, 8) || memcmp(sb.uuid, e->uuid, 16)) {
		wps_uuid_str(e->uuid, a);
		wps_uuid_str(sb.uuid, b);
		wps_err(ctx, "image %s: the chain table names image %s at offset "
			"%llu (checkpoint #%llu), but %s is there: damaged export",
			s->uri, a, (unsigned long long)e->offset,
			(unsigned long long)e->seq,
			memcmp(sb.magic, WPS_IMG_MAGIC, 8) ? "no image" : b);
		err = -EBADMSG;
		goto out;
	}
	s->base = e->offset;
	s->pub.size = e->length;
	/* the canonical name: the member, whatever selected it */
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)e->seq);
	len = strlen(s->x->conn_uri);
	p = malloc(len + strlen(name) + 1);
	if (!p) {
		err = -ENOMEM;
		goto out;
	}
	memcpy(p, s->x->conn_uri, len);
	strcpy(p + len, name);
	free(s->uri);
	s->uri = p;
	s->pub.name = s->uri;
out:
	/* a request left unanswered: nobody may poll that handle again */
	if (c && err == -ETIMEDOUT) {
		pthread_mutex_lock(&s->x->lock);
		c->dead = true;
		pthread_mutex_unlock(&s->x->lock);
	}
	if (c)
		bulk_put(s, c);
	else
		pthread_mutex_unlock(&s->x->fault_lock);
	free(t);
	return err;
}

/* A source named name on export x (shared: one more reference). */
static int src_new(struct wps_ctx *ctx, const char *name,
		   struct nbd_export *x, struct nbd_src **out)
{
	struct nbd_src *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->uri = strdup(name);
	if (!s->uri) {
		free(s);
		return -ENOMEM;
	}
	s->pub.ops = &nbd_src_ops;
	s->pub.ctx = ctx;
	s->pub.name = s->uri;
	s->pub.fd = -1;
	s->pub.remote = true;
	s->pub.bulk_lanes = x->nr_bulk ? x->nr_bulk : 1;
	s->pub.connections = 1 + x->nr_bulk;
	__atomic_add_fetch(&x->refs, 1, __ATOMIC_ACQ_REL);
	s->x = x;
	*out = s;
	return 0;
}

/* Connect to conn_uri: the fault connection and what bulk ones the
 * server accepts. uri names the image in messages. */
static int export_open(struct wps_ctx *ctx, const char *uri, char *conn_uri,
		       struct nbd_export **out)
{
	struct nbd_export *x;
	struct nbd_src tmp = { .pub.ctx = ctx };
	int64_t size, max;
	unsigned int i;
	int err;

	*out = NULL;
	x = calloc(1, sizeof(*x));
	if (!x) {
		free(conn_uri);
		return -ENOMEM;
	}
	x->refs = 1;
	x->conn_uri = conn_uri;
	x->piece = NBD_PIECE;
	pthread_mutex_init(&x->lock, NULL);
	pthread_mutex_init(&x->fault_lock, NULL);
	pthread_cond_init(&x->freed, NULL);
	tmp.x = x;

	err = wps_nbd_timeout_ms(ctx, uri, &x->timeout_ms);
	if (err)
		goto fail;
	err = conn_open(&tmp, &x->fault, x->timeout_ms < NBD_CONNECT_MS ?
			x->timeout_ms : NBD_CONNECT_MS, false);
	if (err)
		goto fail;
	size = nbd_get_size(x->fault.h);
	if (size < 0) {
		err = wps_nbd_errno_or(-EIO);
		wps_err(ctx, "image %s: the NBD server did not give the "
			"export's size: %s", uri, wps_nbd_why());
		goto fail;
	}
	/* The server's largest request, if it says; pieces stay 4 KiB
	 * multiples (every image structure is). */
	max = nbd_get_block_size(x->fault.h, LIBNBD_SIZE_MAXIMUM);
	if (max > 0 && (uint64_t)max < x->piece)
		x->piece = (uint64_t)max >= 4096 ? (uint64_t)max & ~4095ull
						  : (uint64_t)max;
	/*
	 * Bulk connections. Multi-conn is what a server advertises when all
	 * connections see the same data; an image is never written while it
	 * is read, so we open them either way, and take what the server
	 * accepts: the first refusal ends the attempt.
	 */
	for (i = 0; i < WPS_NBD_BULK_CONNS; i++) {
		struct nbd_conn *c = &x->bulk[x->nr_bulk];

		if (conn_open(&tmp, c, x->timeout_ms < NBD_EXTRA_CONNECT_MS ?
			      x->timeout_ms : NBD_EXTRA_CONNECT_MS, true))
			break;
		if (nbd_get_size(c->h) != size) {
			wps_warn(ctx, "image %s: a second connection sees a "
				 "different export size; using one connection",
				 uri);
			nbd_close(c->h);
			c->h = NULL;
			break;
		}
		x->nr_bulk++;
	}
	if (!x->nr_bulk)
		wps_warn(ctx, "image %s: the NBD server accepted only one "
			 "connection: faults will share it with bulk reads "
			 "(for qemu-nbd, use --shared=%u)", uri,
			 WPS_NBD_BULK_CONNS + 1);
	else if (x->nr_bulk < WPS_NBD_BULK_CONNS)
		wps_info(ctx, "image %s: the NBD server accepted %u bulk "
			 "connections of %u", uri, x->nr_bulk,
			 WPS_NBD_BULK_CONNS);
	wps_dbg(ctx, "image %s: %lld bytes over NBD (%s), 1 fault + %u bulk "
		"connections, multi-conn %s, %llu-byte requests", uri,
		(long long)size, nbd_get_protocol(x->fault.h), x->nr_bulk,
		nbd_can_multi_conn(x->fault.h) == 1 ? "advertised" : "not advertised",
		(unsigned long long)x->piece);
	*out = x;
	return 0;
fail:
	export_put(x);
	return err;
}

/* Open name over x if given (a sibling's connections), else its own. */
static int src_open(struct wps_ctx *ctx, const char *name,
		    struct nbd_export *x, struct wps_img_src **out)
{
	struct nbd_src *s = NULL;
	char *conn_uri;
	int64_t sel;
	int err;

	*out = NULL;
	err = wps_nbd_chain_split(ctx, name, &conn_uri, &sel);
	if (err)
		return err;
	if (x && strcmp(x->conn_uri, conn_uri))
		x = NULL;   /* another export: connections of its own */
	if (x) {
		free(conn_uri);
		err = src_new(ctx, name, x, &s);
	} else {
		err = export_open(ctx, name, conn_uri, &x);
		if (!err) {
			err = src_new(ctx, name, x, &s);
			export_put(x);   /* s holds it now, or nobody */
		}
	}
	if (err)
		return err;
	err = find_member(s, sel);
	if (err) {
		nbd_src_close(&s->pub);
		return err;
	}
	*out = &s->pub;
	return 0;
}

int wps_nbd_src_open(struct wps_ctx *ctx, const char *uri,
		     struct wps_img_src **out)
{
	return src_open(ctx, uri, NULL, out);
}

int wps_nbd_src_member(struct wps_img_src *sibling, const char *name,
		       struct wps_img_src **out)
{
	struct nbd_export *x = NULL;

	if (sibling && sibling->ops == &nbd_src_ops)
		x = ((struct nbd_src *)sibling)->x;
	return src_open(sibling->ctx, name, x, out);
}
