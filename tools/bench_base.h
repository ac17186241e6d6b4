/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench, the machine side: what this machine can do right now,
 * measured with no wpsnap code in the way. Raw O_DIRECT write bandwidth,
 * memcpy bandwidth, one UFFDIO_WRITEPROTECT of a whole range, fork()'s
 * pause and per-page copy-on-write cost, and a stop-and-copy snapshot of
 * the guest. Every figure here is a baseline that bench.c divides by.
 *
 * Every function returns 0 or -errno and prints nothing; the caller says
 * what failed. Each baseline maps its own buffers and unmaps them before
 * it returns, so two baselines never hold memory (or huge pages) at once.
 */
#ifndef TOOLS_BENCH_BASE_H
#define TOOLS_BENCH_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/clock.h"
#include "guest/guest.h"

/* The image writer's I/O shape: 1 MiB requests, 16 in flight. */
#define BENCH_IO_SIZE (1u << 20)
#define BENCH_IO_DEPTH 16u

/* A piece of memory to write: page-aligned address and length. */
struct bench_extent {
	const void *addr;
	uint64_t len;
};

/*
 * Memory of one guest backing, mapped the way the reference guest maps
 * its RAM (anon without THP, anon with THP 2 MiB aligned, memfd shared,
 * hugetlb memfd shared), so that baselines see the same page tables.
 */
struct bench_buf {
	uint8_t *addr;          /* the usable range, len bytes */
	uint64_t len;           /* rounded up to page_size */
	uint8_t *map;           /* the mapping, owned: munmap(map, map_len) */
	uint64_t map_len;
	int fd;                 /* memfd, owned; -1 for anonymous memory */
	uint32_t page_size;
	enum rguest_backing backing;
};

/* -ENOSPC: hugetlb pool too small. */
int bench_buf_map(struct bench_buf *b, enum rguest_backing backing,
		  uint64_t size);
/* Write non-zero data into the first pct% of b (whole pages). */
void bench_buf_populate(struct bench_buf *b, unsigned int pct);
/* Bytes bench_buf_populate(b, pct) touches. */
uint64_t bench_buf_populated(const struct bench_buf *b, unsigned int pct);
void bench_buf_unmap(struct bench_buf *b);

/*
 * Open an anonymous O_DIRECT file in dir (already unlinked: closing it
 * deletes it). -EINVAL when the filesystem refuses O_DIRECT (tmpfs).
 */
int bench_tmpfile(const char *dir, int *fd_out);

/* Write a few aligned blocks with O_DIRECT to prove dir takes it. */
int bench_dir_check(const char *dir);

/*
 * Write the extents back to back from offset 0 of fd (O_DIRECT) with
 * kernel AIO, BENCH_IO_SIZE requests, BENCH_IO_DEPTH in flight, short
 * completions resubmitted; then fdatasync. The file is first sized to the
 * total with ftruncate (no fallocate), as the image writer does. Extents
 * must be 4 KiB aligned.
 */
int bench_aio_write(int fd, const struct bench_extent *ext, size_t n);

/* Sequential O_DIRECT write of bytes to a file in dir, fdatasync included. */
int bench_raw_write(const char *dir, uint64_t bytes, double *mib_s);

/* memcpy of a bytes-sized buffer, best of 3. */
int bench_memcpy(uint64_t bytes, double *mib_s);

/* One UFFDIO_WRITEPROTECT of a populated (pct%) buffer of this backing. */
int bench_wp_raw(enum rguest_backing backing, uint64_t size,
		 unsigned int pct, double *ms);

struct bench_fork {
	double pause_ms;        /* fork() as the parent sees it */
	double cow_us;          /* median first write to a page after fork */
	bool cow_valid;         /* false for shared memory: no CoW there */
	unsigned int cow_pages; /* pages written to measure cow_us */
};

/* fork() with a populated (pct%) buffer of this backing, then time the
 * first write to up to nr_pages random populated pages (the BGSAVE way). */
int bench_fork(enum rguest_backing backing, uint64_t size,
	       unsigned int pct, unsigned int nr_pages, struct bench_fork *out);

/*
 * Stop-and-copy snapshot of the guest: pause it, find its resident pages
 * (mincore), write them to a file in dir with bench_aio_write (fdatasync
 * included), resume. *pause_ms is the whole pause, *bytes what was written.
 */
int bench_stop_copy(struct rguest *g, const char *dir, double *pause_ms,
		    uint64_t *bytes);

/* Resident bytes of [addr, addr + len) (mincore); vec holds len / 4096
 * entries and is the caller's. */
int bench_resident(const void *addr, uint64_t len, unsigned char *vec,
		   uint64_t *bytes);

#endif /* TOOLS_BENCH_BASE_H */
