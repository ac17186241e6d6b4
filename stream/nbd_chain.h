/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A checkpoint chain on one NBD export (stream/nbd_chain.c; docs/REMOTE.md
 * "Checkpoints on an export"). An export is a block device: it cannot be
 * given files, and servers do not create exports on demand, so a whole
 * series lives in one export:
 *
 *   [0, 64 KiB)        chain table, copy A
 *   [64 KiB, 128 KiB)  chain table, copy B
 *   [1 MiB, ...)       format-v1 images, one after another, each at a
 *                      64 KiB-aligned offset, exactly as a file holds one
 *
 * The table lists the published images in order (seq, offset, length,
 * uuid, parent uuid). Each update writes a whole copy with the next
 * generation into the slot the current generation does not use, so a
 * crash that tears the write leaves the other copy, the previous state,
 * valid; a reader takes the valid copy of highest generation. An image
 * is entered only after its bytes and superblock were flushed: an entry
 * never names a partial image.
 *
 * Retention (wpsnap checkpoint --keep N on an export): the table may drop
 * its oldest entries to make room, and an image may then go back to the
 * start of the data area, so the entries form a ring: in seq order their
 * offsets increase, wrap at most once, and the wrapped ones end before
 * the oldest begins. A drop is its own durable table generation, written
 * before any byte lands in the space it frees: a durable table never
 * names a region being overwritten.
 *
 * A member of the chain is named "URI#N" (N the checkpoint's seq, the
 * number of ckpt-N.wpsnap in a directory); plain "URI" reads the last
 * entry, the last durable checkpoint. An increment's parent blob holds
 * "#N", so it is found on the same export whatever URI reaches it.
 */
#ifndef WPS_NBD_CHAIN_H
#define WPS_NBD_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <libnbd.h>

#include <wpsnap/wpsnap.h>

#include "stream/format.h"

#define WPS_NBD_CHAIN_MAGIC "WPSCHAIN"
#define WPS_NBD_CHAIN_VERSION 1u
#define WPS_NBD_CHAIN_COPY (64u << 10)    /* bytes of one copy */
#define WPS_NBD_CHAIN_DATA (1u << 20)     /* where the first image goes */
#define WPS_NBD_CHAIN_ALIGN (64u << 10)   /* images start aligned to this */

struct wps_nbd_chain_hdr {
	char magic[8];            /* "WPSCHAIN" */
	uint32_t version;         /* 1 */
	uint32_t nr;              /* entries, at most WPS_IMG_CHAIN_MAX */
	uint64_t generation;      /* >= 1; copy at slot generation % 2 */
	uint64_t data_offset;     /* WPS_NBD_CHAIN_DATA */
	uint8_t reserved[32];     /* zero */
} __attribute__((packed));

struct wps_nbd_chain_ent {
	uint64_t seq;             /* the checkpoint's number in its series */
	uint64_t offset;          /* of its superblock, 4 KiB multiple */
	uint64_t length;          /* footer_offset + 4096 */
	uint8_t uuid[16];
	uint8_t parent_uuid[16];  /* zero: a full image */
	uint64_t reserved;        /* zero */
} __attribute__((packed));

_Static_assert(sizeof(struct wps_nbd_chain_hdr) == 64, "chain header");
_Static_assert(sizeof(struct wps_nbd_chain_ent) == 64, "chain entry");
_Static_assert(64 + 64 * WPS_IMG_CHAIN_MAX <= WPS_NBD_CHAIN_COPY - 4,
	       "chain table copy");
/* A copy ends with the crc32c of its bytes [0, WPS_NBD_CHAIN_COPY - 4). */

enum wps_nbd_chain_state {
	WPS_NBD_CHAIN_NONE,       /* neither a table nor an image */
	WPS_NBD_CHAIN_PLAIN,      /* a single image at offset 0 */
	WPS_NBD_CHAIN_DAMAGED,    /* table magic, but no copy is valid */
	WPS_NBD_CHAIN_VALID,
};

/* The table in memory, in native byte order. */
struct wps_nbd_chain {
	enum wps_nbd_chain_state state;
	uint64_t generation;      /* of the copy read (0: none) */
	uint32_t nr;
	struct wps_nbd_chain_ent ent[WPS_IMG_CHAIN_MAX];
};

/*
 * The "#N" of name when name is an NBD URI naming a chain member, else
 * NULL (a file, or a URI without a selector).
 */
const char *wps_nbd_chain_member(const char *name);

/*
 * Split an NBD name into the URI libnbd connects to (*uri, malloc'd) and
 * the member it selects (*sel = N of "#N", or -1 without one). -EINVAL,
 * logged, for a "#" not followed by a decimal number.
 */
int wps_nbd_chain_split(struct wps_ctx *ctx, const char *name, char **uri,
			int64_t *sel);

/*
 * Read both copies of the table through h (synchronously, at most
 * timeout_ms of silence each) into *t. 0 with t->state saying what the
 * export holds; -errno (logged naming uri) if the reads fail, or
 * -EBADMSG for a valid copy whose entries are impossible (out of the
 * export, overlapping): a forged or corrupt table is refused, not used.
 */
int wps_nbd_chain_read(struct wps_ctx *ctx, struct nbd_handle *h,
		       const char *uri, int timeout_ms,
		       struct wps_nbd_chain *t);

/* The entry a selector names: sel < 0 the last (the last durable), else
 * the one of seq sel. NULL if there is none. */
const struct wps_nbd_chain_ent *wps_nbd_chain_find(const struct wps_nbd_chain *t,
						   int64_t sel);

/* Where the next image goes: after the last entry, aligned. */
uint64_t wps_nbd_chain_next_offset(const struct wps_nbd_chain *t);

/*
 * Where an image of need bytes goes in a size-byte export, keeping at
 * least the last keep entries (keep 0: no retention, drop nothing) and
 * every image they are increments of. 0 with *drop (how many of the
 * oldest entries the table must lose first, durably) and the free
 * stretch [*base, *end); -ENOSPC if no stretch fits even after every
 * droppable entry is gone. Also drops to stay under WPS_IMG_CHAIN_MAX
 * entries. Pure: the caller writes the table.
 */
int wps_nbd_chain_place(const struct wps_nbd_chain *t, unsigned int keep,
			uint64_t size, uint64_t need, uint32_t *drop,
			uint64_t *base, uint64_t *end);

/* Export offset of the copy of generation gen. */
static inline uint64_t wps_nbd_chain_slot(uint64_t gen)
{
	return (gen % 2) * WPS_NBD_CHAIN_COPY;
}

/* Encode t (its generation, nr and entries) as one copy of
 * WPS_NBD_CHAIN_COPY bytes into buf. */
void wps_nbd_chain_encode(const struct wps_nbd_chain *t, void *buf);

#endif /* WPS_NBD_CHAIN_H */
