/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the image writer (stream/img_writer.c): its state, and the ops
 * table of its output kinds. The writer builds the image in memory order
 * of arrival and owns buffers, lanes, bitmaps and the metadata; an output
 * kind owns where the bytes go and how an image becomes valid there:
 *
 *  - file (img_writer.c): "<path>.partial" with libaio O_DIRECT,
 *    published by rename after fdatasync;
 *  - nbd (img_out_nbd.c): an NBD export, written with libnbd's aio API;
 *    an export cannot be renamed, so it is published by its superblock,
 *    written last, after a flush the server acknowledged
 *    (docs/FORMAT.md, "Publication"; docs/REMOTE.md).
 *
 * Invariant shared by every kind: the superblock at offset 0 is written
 * only after seal() made every other byte durable, and nothing before it
 * can make a reader take the output for a complete image.
 */
#ifndef WPS_IMG_OUT_H
#define WPS_IMG_OUT_H

#include <libaio.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/format.h"
#include "stream/img_writer.h"

#define IMGW_MAX_EXT 64                 /* iocbs per buffer */
#define IMGW_DEFAULT_BUDGET (64ull << 20)
#define IMGW_MIN_BUF (1u << 20)
#define IMGW_MIN_BUFS 4                 /* 2 normal + 2 reserve */
#define IMGW_SWEEP_BUFS 24              /* sweep's share, when there is more */
#define IMGW_BATCH 128                  /* iocbs per io_getevents */
#define IMGW_SUBMIT_BATCH 16            /* ... per io_submit (file kind) */
#define IMGW_MAX_AIO 4096u              /* aio slots asked for, at most */
#define IMGW_MIN_AIO 64u                /* ... and at least */

enum { POOL_NORMAL, POOL_RESERVE, NR_POOLS };

enum imgw_state { ST_OPEN, ST_COMMITTED, ST_DEAD };

struct imgw_buf;

struct imgw_ext {
	struct iocb iocb;       /* io_event.obj points here */
	struct imgw_buf *buf;
	uint64_t file_off;
	uint32_t buf_off;
	uint32_t len;
	bool shorted;           /* WPS_IMGW_TEST_SHORT_WRITES done for it */
	uint32_t pieces;        /* nbd: requests of it not yet completed */
	void *conn;             /* nbd: the connection it went out on */
};

struct imgw_buf {
	uint8_t *data;
	uint32_t used;          /* bytes filled, all in extents */
	uint32_t nr_ext;
	uint32_t submitted;     /* extents handed to the I/O thread; lane only */
	uint32_t pending;       /* submitted extents not done; under lock */
	bool current;           /* a lane still fills it; under lock */
	int pool;
	enum wps_lane lane;     /* whose it is while current or pending */
	struct imgw_buf *next;  /* free list */
	struct imgw_ext ext[IMGW_MAX_EXT];
};

struct imgw_region {
	struct wps_img_writer_region desc;
	struct wps_img_layout_region lay;
	uint64_t *seen;         /* bit per block: put() already had it */
	uint64_t *present;      /* bit per block: non-zero data written */
	uint32_t *csum;         /* per group: XOR of block crcs */
	uint32_t *bcrc;         /* per block, with WPS_IMGW_REWRITE: its crc,
				   to take it out of csum when replaced */
};

struct imgw_blob {
	char name[48];
	void *data;
	size_t len;
	uint32_t crc;
};

struct wps_img_writer {
	struct wps_ctx *ctx;
	char *path;
	unsigned int flags;
	enum imgw_state state;
	const struct wps_img_out_ops *out;  /* the output kind */
	void *out_priv;                     /* its state (nbd) */

	/* The file kind's state. */
	char *partial;          /* name written until published */
	int fd;
	bool direct;
	bool partial_exists;    /* created by us, not yet renamed or unlinked */
	io_context_t aio;
	bool aio_ready;

	uint8_t uuid[16];
	uint8_t parent_uuid[16];
	unsigned int keep;      /* chain retention (wps_img_writer_opts) */
	int64_t realtime_ns;
	int64_t monotonic_ns;

	uint32_t nr_regions;
	struct imgw_region *regions;
	struct wps_img_layout lay;

	struct imgw_blob *blobs;
	uint32_t nr_blobs;

	uint8_t *arena;         /* mmap, nr_bufs * buf_size */
	size_t arena_size;
	struct imgw_buf *bufs;
	uint32_t nr_bufs;
	uint32_t buf_size;
	struct imgw_buf *cur[WPS_NR_LANES]; /* owned by the lane's thread */

	int efd;
	pthread_t io_thread;
	bool io_started;

	pthread_mutex_t lock;
	pthread_cond_t cond;    /* a buffer came back, an error, I/O idle */
	pthread_cond_t reap_cond; /* file kind: something is in flight, or
				     stop */
	struct imgw_buf *free_list[NR_POOLS];
	uint32_t nr_free[NR_POOLS];
	uint64_t memory_bytes;  /* buffers, bitmaps, tables we allocated */
	uint32_t nr_reserve;    /* buffers of the fault path's pool */
	uint32_t sweep_keep;    /* normal buffers the fault lane leaves */
	/* Extents to submit, one ring per lane: the I/O thread takes the
	 * fault lane's first (a vCPU may wait for its buffer to return). */
	struct imgw_queue {
		struct imgw_ext **e;
		uint32_t head, len;
	} q[WPS_NR_LANES];
	uint32_t qcap;          /* of each ring */
	uint32_t qlen;          /* both rings */
	uint32_t peek_fault;    /* of the last peek, from the fault ring */
	uint32_t inflight;      /* iocbs in the kernel */
	bool stop;              /* I/O thread: exit once idle */
	bool reaping;           /* atomic: file kind's reaper thread runs */
	bool drop;              /* I/O thread: discard the queue (abort) */

	int error;              /* sticky, atomic */

	uint64_t st_data_bytes; /* atomic, like the rest of st_ */
	uint64_t st_present;
	uint64_t st_zero;
	uint64_t st_ios;
	uint64_t st_short;
	uint64_t st_file_bytes;
};

static inline void wps_imgw_stat_add(uint64_t *p, uint64_t v)
{
	__atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

struct wps_img_out_ops {
	const char *kind;
	/* Before any page (and before the guest is touched): create or
	 * connect, refuse an existing image without WPS_IMGW_OVERWRITE and
	 * an output too small for the image. */
	int (*open)(struct wps_img_writer *w);
	/* The I/O thread: submits w->queue (wps_imgw_peek/_consumed),
	 * retires completions (wps_imgw_done), returns once
	 * wps_imgw_io_finished(). Woken through w->efd. */
	void *(*io_main)(void *w);
	/* Write all of buf at off, synchronously (metadata). */
	int (*write_sync)(struct wps_img_writer *w, const void *buf,
			  size_t len, uint64_t off, const char *what);
	/* All but the superblock is written, the image is size bytes:
	 * make that durable before the superblock may land. */
	int (*seal)(struct wps_img_writer *w, uint64_t size);
	/* The superblock is written: make it durable, publish the image
	 * under its name. On failure nothing valid stays published. */
	int (*publish)(struct wps_img_writer *w);
	/* Failed or cancelled, the I/O thread stopped: leave no valid image
	 * and release the output. Idempotent. */
	void (*discard)(struct wps_img_writer *w);
	/* Free what open allocated (after discard or publish). */
	void (*close)(struct wps_img_writer *w);
};

extern const struct wps_img_out_ops wps_img_out_nbd;

/* Record the first failure (logged), wake every waiter. Not under lock. */
void wps_imgw_set_error(struct wps_img_writer *w, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int wps_imgw_error(const struct wps_img_writer *w);

/* Up to max queued extents, the fault lane's first, each lane's oldest
 * first, left queued (after an error or an abort the queues are emptied
 * and 0 returned). */
uint32_t wps_imgw_peek(struct wps_img_writer *w, struct imgw_ext **batch,
		       uint32_t max);
/* The first n peeked extents are now in flight. */
void wps_imgw_consumed(struct wps_img_writer *w, uint32_t n);
/* An in-flight extent is done (written, or failed after set_error). */
void wps_imgw_done(struct wps_img_writer *w, struct imgw_ext *e);
/* Stop was asked and nothing is queued or in flight. */
bool wps_imgw_io_finished(struct wps_img_writer *w);

#endif /* WPS_IMG_OUT_H */
