/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The reference guest: a tiny "VMM" with guest RAM of a chosen backing,
 * writer threads ("vCPUs") with chosen patterns, pause/resume around the
 * freeze, and a per-block generation ledger that says exactly what every
 * 4 KiB block held at the freeze instant. It is the test oracle of wpsnap.
 *
 * Content rule: block b at generation g (g >= 1) holds 512 little-endian
 * u64 words, w[0] = (b << 32) | g and w[i] = wps_guest_mix(b, g) ^ (i *
 * 0x9E3779B97F4A7C15) for i >= 1; generation 0 means never written (zero).
 * A block's content therefore never is all zero once written.
 */
#ifndef WPS_GUEST_H
#define WPS_GUEST_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#define WPS_GUEST_BLOCK 4096u

enum wps_guest_backing {
	WPS_GUEST_ANON = 0,     /* private anonymous, THP disabled (MADV_NOHUGEPAGE) */
	WPS_GUEST_THP,          /* private anonymous, MADV_HUGEPAGE, 2 MiB aligned */
	WPS_GUEST_MEMFD,        /* memfd, MAP_SHARED */
	WPS_GUEST_HUGETLB,      /* memfd MFD_HUGETLB (2 MiB), MAP_SHARED */
};

enum wps_guest_pattern {
	WPS_GUEST_IDLE = 0,     /* threads park; no writes */
	WPS_GUEST_SEQ,          /* each thread sweeps its blocks in order */
	WPS_GUEST_RANDOM,       /* uniformly random blocks of its own */
	WPS_GUEST_HOT,          /* 90% of writes to a hot 1/16 of its blocks */
};

struct wps_guest_opts {
	uint64_t size;          /* bytes; rounded up to the backing page size */
	enum wps_guest_backing backing;
	unsigned int threads;   /* writer threads, >= 1 (idle: none run) */
	enum wps_guest_pattern pattern;
	unsigned int populate_pct; /* % of blocks written once at creation (0..100) */
	uint64_t seed;
	/* Block writes per second, per writer thread (0: as fast as it can):
	 * a guest dirtying a known number of bytes per second. */
	uint64_t rate;
};

struct wps_guest;

/* Parse names: "anon" "thp" "memfd" "hugetlb"; "idle" "seq" "random" "hot".
 * -EINVAL for an unknown name. */
int wps_guest_backing_parse(const char *s, enum wps_guest_backing *out);
int wps_guest_pattern_parse(const char *s, enum wps_guest_pattern *out);
const char *wps_guest_backing_name(enum wps_guest_backing b);
/* "384M", "1.5G", "2GiB", "4096": digits with an optional fraction, then
 * an optional K/M/G/T (powers of 1024), "i" and "B". -EINVAL for a sign,
 * an exponent, another suffix, or more than 2^64 - 1 bytes. */
int wps_guest_parse_size(const char *s, uint64_t *out);
/* The guest backing that maps an image region of this backing and page
 * size (enum wps_backing): false if the reference guest has none. */
bool wps_guest_backing_of(uint32_t backing, uint32_t page_size,
			  enum wps_guest_backing *out);
const char *wps_guest_pattern_name(enum wps_guest_pattern p);

/* Map guest RAM and populate it (populate_pct of the blocks, spread over
 * the whole range). Writers are created but not started. -ENOMEM /
 * -ENOSPC (no huge pages reserved) with a message on stderr-free return:
 * the caller prints strerror. */
int wps_guest_new(const struct wps_guest_opts *opts, struct wps_guest **out);
void wps_guest_free(struct wps_guest *g);   /* stops writers, unmaps */

/* Describe guest RAM for libwpsnap (one region). */
void wps_guest_region(const struct wps_guest *g, struct wps_region *r);
void *wps_guest_mem(const struct wps_guest *g);
uint64_t wps_guest_size(const struct wps_guest *g);

int wps_guest_start(struct wps_guest *g);   /* start the writers */
void wps_guest_stop(struct wps_guest *g);   /* stop and join them */

/*
 * Pause: returns once every writer is parked between two writes (a writer
 * blocked in a page fault finishes that write first). Resume releases
 * them. These have the signature of wps_snapshot_opts.pause/resume with
 * the guest as arg. wps_guest_freeze_pause() also marks the instant: the
 * ledger starts recording, copy-on-write, the generation each block had
 * at this moment.
 */
int wps_guest_pause(void *guest);
int wps_guest_resume(void *guest);
int wps_guest_freeze_pause(void *guest);

/* Total block writes so far (all threads), for write rates. */
uint64_t wps_guest_writes(const struct wps_guest *g);

/*
 * Write-op latency seen by the writers themselves: the time from the start
 * of one block write to its end, which includes any write-protect fault it
 * took. Percentiles over the writes since the last reset.
 */
struct wps_guest_latency {
	uint64_t writes;
	uint64_t p50_ns, p99_ns, max_ns;
	uint64_t slow_writes;   /* writes that took >= 5 us (faulted ones) */
	uint64_t slow_p50_ns, slow_p99_ns;
};
void wps_guest_latency_reset(struct wps_guest *g);
void wps_guest_latency_get(struct wps_guest *g, struct wps_guest_latency *lat);

/* ---- the ledger ---- */

struct wps_ledger {
	uint64_t nr_blocks;
	uint32_t *gen;          /* generation of each block at the instant */
};

/* The ledger at the marked instant (call while paused or stopped).
 * -EINVAL if no instant was marked. Free with wps_ledger_free. */
int wps_guest_ledger(struct wps_guest *g, struct wps_ledger **out);
void wps_ledger_free(struct wps_ledger *l);
int wps_ledger_write(const struct wps_ledger *l, const char *path);
int wps_ledger_read(const char *path, struct wps_ledger **out);

/*
 * Lazy restore: make the ledger l (the content the guest's memory is being
 * restored to) the guest's current generations, so that writers started
 * on restored memory continue from it and a later freeze_pause + ledger
 * describes the memory exactly. Call before wps_guest_start or while
 * paused. -EINVAL if the sizes differ.
 */
int wps_guest_adopt_ledger(struct wps_guest *g, const struct wps_ledger *l);

/* Fill buf (4 KiB) with the content of block b at generation g. */
void wps_guest_block_content(uint64_t b, uint32_t g, void *buf);
uint64_t wps_guest_mix(uint64_t b, uint32_t g);

/*
 * Compare region r of an image with the ledger, block by block. 0 if every
 * block matches; -EBADMSG with *bad_block set and a description in why
 * (expected/found generation) at the first mismatch; other -errno for
 * read errors. Size mismatch is -EINVAL.
 */
int wps_ledger_verify_image(const struct wps_ledger *l, struct wps_image *img,
			    unsigned int r, uint64_t *bad_block, char *why,
			    size_t whylen);

/* Same, against raw memory (e.g. the guest RAM itself while paused). */
int wps_ledger_verify_mem(const struct wps_ledger *l, const void *mem,
			  uint64_t *bad_block, char *why, size_t whylen);

/* ---- the 2 MiB huge page pool (needs root to grow) ---- */

struct wps_hugepool {
	long added;             /* pages this holder added to the pool */
	char why[200];          /* reason, when reserve failed */
};

/* Make enough 2 MiB pages free for bytes of hugetlb guest RAM, growing
 * the pool by what is missing. On failure hp->why says why; pages added
 * so far are still given back by wps_hugepool_release. */
int wps_hugepool_reserve(struct wps_hugepool *hp, uint64_t bytes);
/* Shrink the pool by exactly what reserve added. */
void wps_hugepool_release(struct wps_hugepool *hp);

#endif /* WPS_GUEST_H */
