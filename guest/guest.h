/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reference guest: a tiny "VMM" with guest RAM of a chosen backing,
 * writer threads ("vCPUs") with chosen patterns, pause/resume around the
 * freeze, and a per-block generation ledger that says exactly what every
 * 4 KiB block held at the freeze instant. It is the test oracle of wpsnap.
 *
 * Content rule: block b at generation g (g >= 1) holds 512 little-endian
 * u64 words, w[0] = (b << 32) | g and w[i] = rguest_mix(b, g) ^ (i *
 * 0x9E3779B97F4A7C15) for i >= 1; generation 0 means never written (zero).
 * A block's content therefore never is all zero once written.
 */
#ifndef RGUEST_H
#define RGUEST_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#define RGUEST_BLOCK 4096u

enum rguest_backing {
	RGUEST_ANON = 0,     /* private anonymous, THP disabled (MADV_NOHUGEPAGE) */
	RGUEST_THP,          /* private anonymous, MADV_HUGEPAGE, 2 MiB aligned */
	RGUEST_MEMFD,        /* memfd, MAP_SHARED */
	RGUEST_HUGETLB,      /* memfd MFD_HUGETLB (2 MiB), MAP_SHARED */
};

enum rguest_pattern {
	RGUEST_IDLE = 0,     /* threads park; no writes */
	RGUEST_SEQ,          /* each thread sweeps its blocks in order */
	RGUEST_RANDOM,       /* uniformly random blocks of its own */
	RGUEST_HOT,          /* 90% of writes to a hot 1/16 of its blocks */
};

struct rguest_opts {
	uint64_t size;          /* bytes; rounded up to the backing page size */
	enum rguest_backing backing;
	unsigned int threads;   /* writer threads, >= 1 (idle: none run) */
	enum rguest_pattern pattern;
	unsigned int populate_pct; /* % of blocks written once at creation (0..100) */
	uint64_t seed;
	/* Block writes per second, per writer thread (0: as fast as it can):
	 * a guest dirtying a known number of bytes per second. */
	uint64_t rate;
};

struct rguest;

/* Parse names: "anon" "thp" "memfd" "hugetlb"; "idle" "seq" "random" "hot".
 * -EINVAL for an unknown name. */
int rguest_backing_parse(const char *s, enum rguest_backing *out);
int rguest_pattern_parse(const char *s, enum rguest_pattern *out);
const char *rguest_backing_name(enum rguest_backing b);
/* "384M", "1.5G", "2GiB", "4096": digits with an optional fraction, then
 * an optional K/M/G/T (powers of 1024), "i" and "B". -EINVAL for a sign,
 * an exponent, another suffix, or more than 2^64 - 1 bytes. */
int rguest_parse_size(const char *s, uint64_t *out);
/* The guest backing that maps an image region of this backing and page
 * size (enum wps_backing): false if the reference guest has none. */
bool rguest_backing_of(uint32_t backing, uint32_t page_size,
			  enum rguest_backing *out);
const char *rguest_pattern_name(enum rguest_pattern p);

/* Map guest RAM and populate it (populate_pct of the blocks, spread over
 * the whole range). Writers are created but not started. -ENOMEM /
 * -ENOSPC (no huge pages reserved) with a message on stderr-free return:
 * the caller prints strerror. */
int rguest_new(const struct rguest_opts *opts, struct rguest **out);
void rguest_free(struct rguest *g);   /* stops writers, unmaps */

/* Describe guest RAM for libwpsnap (one region). */
void rguest_region(const struct rguest *g, struct wps_region *r);
void *rguest_mem(const struct rguest *g);
uint64_t rguest_size(const struct rguest *g);

int rguest_start(struct rguest *g);   /* start the writers */
void rguest_stop(struct rguest *g);   /* stop and join them */

/*
 * Pause: returns once every writer is parked between two writes (a writer
 * blocked in a page fault finishes that write first). Resume releases
 * them. These have the signature of wps_snapshot_opts.pause/resume with
 * the guest as arg. rguest_freeze_pause() also marks the instant: the
 * ledger starts recording, copy-on-write, the generation each block had
 * at this moment.
 */
int rguest_pause(void *guest);
int rguest_resume(void *guest);
int rguest_freeze_pause(void *guest);

/* Total block writes so far (all threads), for write rates. */
uint64_t rguest_writes(const struct rguest *g);

/*
 * Write-op latency seen by the writers themselves: the time from the start
 * of one block write to its end, which includes any write-protect fault it
 * took. Percentiles over the writes since the last reset.
 */
struct rguest_latency {
	uint64_t writes;
	uint64_t p50_ns, p99_ns, max_ns;
	uint64_t slow_writes;   /* writes that took >= 5 us (faulted ones) */
	uint64_t slow_p50_ns, slow_p99_ns;
};
void rguest_latency_reset(struct rguest *g);
void rguest_latency_get(struct rguest *g, struct rguest_latency *lat);

/* ---- the ledger ---- */

struct rguest_ledger {
	uint64_t nr_blocks;
	uint32_t *gen;          /* generation of each block at the instant */
};

/* The ledger at the marked instant (call while paused or stopped).
 * -EINVAL if no instant was marked. Free with rguest_ledger_free. */
int rguest_ledger(struct rguest *g, struct rguest_ledger **out);
void rguest_ledger_free(struct rguest_ledger *l);
int rguest_ledger_write(const struct rguest_ledger *l, const char *path);
int rguest_ledger_read(const char *path, struct rguest_ledger **out);

/*
 * Lazy restore: make the ledger l (the content the guest's memory is being
 * restored to) the guest's current generations, so that writers started
 * on restored memory continue from it and a later freeze_pause + ledger
 * describes the memory exactly. Call before rguest_start or while
 * paused. -EINVAL if the sizes differ.
 */
int rguest_adopt_ledger(struct rguest *g, const struct rguest_ledger *l);

/* Fill buf (4 KiB) with the content of block b at generation g. */
void rguest_block_content(uint64_t b, uint32_t g, void *buf);
uint64_t rguest_mix(uint64_t b, uint32_t g);

/*
 * Compare region r of an image with the ledger, block by block. 0 if every
 * block matches; -EBADMSG with *bad_block set and a description in why
 * (expected/found generation) at the first mismatch; other -errno for
 * read errors. Size mismatch is -EINVAL.
 */
int rguest_ledger_verify_image(const struct rguest_ledger *l, struct wps_image *img,
			    unsigned int r, uint64_t *bad_block, char *why,
			    size_t whylen);

/* Same, against raw memory (e.g. the guest RAM itself while paused). */
int rguest_ledger_verify_mem(const struct rguest_ledger *l, const void *mem,
			  uint64_t *bad_block, char *why, size_t whylen);

/* ---- the 2 MiB huge page pool (needs root to grow) ---- */

struct rguest_hugepool {
	long added;             /* pages this holder added to the pool */
	char why[200];          /* reason, when reserve failed */
};

/* Make enough 2 MiB pages free for bytes of hugetlb guest RAM, growing
 * the pool by all of it (so that parallel holders never count the same
 * free pages). On failure hp->why says why; pages added so far are still
 * given back by rguest_hugepool_release. */
int rguest_hugepool_reserve(struct rguest_hugepool *hp, uint64_t bytes);
/* Shrink the pool by exactly what reserve added. */
void rguest_hugepool_release(struct rguest_hugepool *hp);

#endif /* RGUEST_H */
