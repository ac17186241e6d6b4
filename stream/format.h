/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Image format v1, on-disk structures and layout rules (docs/FORMAT.md is
 * the normative text; this header must agree with it byte for byte).
 *
 * The writer and the reader share this header so that both compute the
 * same layout from the same region table: where each region's data,
 * bitmap and checksum table live is a pure function of the region sizes,
 * known before the first page arrives.
 *
 * All integers are little-endian on disk. The structs are packed and
 * their sizes and offsets asserted, so a field moved by accident breaks
 * the build rather than the images.
 */
#ifndef WPS_IMG_FORMAT_H
#define WPS_IMG_FORMAT_H

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "stream/crc32c.h"

#define WPS_IMG_VERSION 1u
#define WPS_IMG_BLOCK 4096u
#define WPS_IMG_BLOCK_SHIFT 12
#define WPS_IMG_GROUP_BLOCKS 16u        /* what the writer uses */
#define WPS_IMG_GROUP_BLOCKS_MAX 65536u /* what a reader accepts */
#define WPS_IMG_DATA_ALIGN (2u << 20)   /* region data starts 2 MiB aligned */
#define WPS_IMG_MAX_REGIONS 4096u
#define WPS_IMG_REGION_NAME_LEN 32u /* field size; at most 31 bytes + NUL */
#define WPS_IMG_BLOB_NAME_LEN 48u   /* field size; at most 47 bytes + NUL */
/* Images in a chain a reader follows, the full one included (FORMAT 3.1):
 * each stays open while the chain is, so this bounds a reader's fds. */
#define WPS_IMG_CHAIN_MAX 256u

#define WPS_IMG_MAGIC "WPSNAPIM"
#define WPS_IMG_FOOTER_MAGIC "WPSNAPFT"

#define WPS_IMG_FOOTER_COMPLETE (1u << 0)

/* Superblock: block 0, written last, at commit. */
struct wps_img_super {
	char magic[8];               /* "WPSNAPIM" */
	uint32_t version;            /* 1 */
	uint32_t flags;              /* 0; readers refuse unknown bits */
	uint8_t uuid[16];
	uint8_t parent_uuid[16];     /* all zero: no parent */
	uint32_t block_size;         /* 4096 */
	uint32_t group_blocks;       /* G */
	uint32_t nr_regions;
	uint32_t region_entry_size;  /* 128 */
	int64_t freeze_realtime_ns;
	int64_t freeze_monotonic_ns;
	uint64_t meta_size;          /* superblock + region table, 4 KiB multiple */
	uint64_t trailer_offset;
	uint64_t footer_offset;
	uint32_t region_table_crc;   /* crc32c of [4096, meta_size) */
	uint32_t reserved0;
	uint8_t reserved[3980];      /* zero */
	uint32_t crc;                /* crc32c of bytes [0, 4092) */
} __attribute__((packed));

_Static_assert(sizeof(struct wps_img_super) == 4096, "superblock size");
_Static_assert(offsetof(struct wps_img_super, block_size) == 48, "sb");
_Static_assert(offsetof(struct wps_img_super, freeze_realtime_ns) == 64, "sb");
_Static_assert(offsetof(struct wps_img_super, meta_size) == 80, "sb");
_Static_assert(offsetof(struct wps_img_super, region_table_crc) == 104, "sb");
_Static_assert(offsetof(struct wps_img_super, reserved) == 112, "sb");
_Static_assert(offsetof(struct wps_img_super, crc) == 4092, "sb");

/* Region table entry: 128 bytes each, from offset 4096. */
struct wps_img_region_ent {
	uint64_t host_addr;
	uint64_t size;               /* bytes, multiple of 4096 */
	uint32_t page_size;
	uint32_t backing;            /* enum wps_backing */
	uint64_t nr_blocks;          /* size / 4096 */
	uint64_t data_offset;        /* block b at data_offset + b * 4096 */
	uint64_t bitmap_offset;      /* presence bitmap, in the trailer */
	uint64_t csum_offset;        /* group checksum table, in the trailer */
	uint64_t present_blocks;     /* bits set in the bitmap */
	char name[32];               /* NUL padded, NUL terminated */
	uint8_t reserved[32];        /* zero */
} __attribute__((packed));

_Static_assert(sizeof(struct wps_img_region_ent) == 128, "region entry size");
_Static_assert(offsetof(struct wps_img_region_ent, nr_blocks) == 24, "re");
_Static_assert(offsetof(struct wps_img_region_ent, present_blocks) == 56, "re");
_Static_assert(offsetof(struct wps_img_region_ent, name) == 64, "re");

/* Blob table entry: in the trailer at blob_table_offset, nr_blobs of them. */
struct wps_img_blob_ent {
	char name[48];               /* NUL padded, NUL terminated, not empty */
	uint64_t offset;             /* absolute file offset, 8-aligned */
	uint64_t length;
	uint32_t crc;                /* crc32c of the blob bytes */
	uint32_t reserved;           /* zero */
} __attribute__((packed));

_Static_assert(sizeof(struct wps_img_blob_ent) == 72, "blob entry size");
_Static_assert(offsetof(struct wps_img_blob_ent, offset) == 48, "be");

/* Footer: the last 4096 bytes of the file; its presence with the complete
 * flag is what makes the image whole. */
struct wps_img_footer {
	char magic[8];               /* "WPSNAPFT" */
	uint32_t version;            /* 1 */
	uint32_t flags;              /* bit 0: complete */
	uint8_t uuid[16];            /* == superblock uuid */
	uint64_t trailer_offset;     /* == superblock trailer_offset */
	uint64_t trailer_size;       /* footer_offset - trailer_offset */
	uint32_t trailer_crc;        /* crc32c of [trailer_offset, footer_offset) */
	uint32_t nr_blobs;
	uint64_t blob_table_offset;  /* absolute */
	uint64_t data_bytes;         /* present_blocks * 4096 */
	uint64_t present_blocks;     /* sum over regions */
	uint64_t footer_offset;      /* where this footer is */
	uint8_t reserved[4004];      /* zero */
	uint32_t crc;                /* crc32c of bytes [0, 4092) */
} __attribute__((packed));

_Static_assert(sizeof(struct wps_img_footer) == 4096, "footer size");
_Static_assert(offsetof(struct wps_img_footer, trailer_offset) == 32, "ft");
_Static_assert(offsetof(struct wps_img_footer, trailer_crc) == 48, "ft");
_Static_assert(offsetof(struct wps_img_footer, blob_table_offset) == 56, "ft");
_Static_assert(offsetof(struct wps_img_footer, footer_offset) == 80, "ft");
_Static_assert(offsetof(struct wps_img_footer, reserved) == 88, "ft");
_Static_assert(offsetof(struct wps_img_footer, crc) == 4092, "ft");

static inline uint64_t wps_img_align(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static inline uint64_t wps_img_div_up(uint64_t v, uint64_t d)
{
	return (v + d - 1) / d;
}

static inline uint64_t wps_img_meta_size(uint32_t nr_regions)
{
	return WPS_IMG_BLOCK +
	       wps_img_align((uint64_t)nr_regions *
				     sizeof(struct wps_img_region_ent),
			     WPS_IMG_BLOCK);
}

static inline uint64_t wps_img_nr_groups(uint64_t nr_blocks, uint32_t g)
{
	return wps_img_div_up(nr_blocks, g);
}

static inline uint64_t wps_img_bitmap_bytes(uint64_t nr_blocks)
{
	return wps_img_align(wps_img_div_up(nr_blocks, 8), WPS_IMG_BLOCK);
}

static inline uint64_t wps_img_csum_bytes(uint64_t nr_blocks, uint32_t g)
{
	return wps_img_align(wps_img_nr_groups(nr_blocks, g) * 4,
			     WPS_IMG_BLOCK);
}

/* Where a region's pieces go, in file order. */
struct wps_img_layout_region {
	uint64_t nr_blocks;
	uint64_t data_offset;
	uint64_t bitmap_offset;
	uint64_t csum_offset;
};

struct wps_img_layout {
	uint64_t meta_size;
	uint64_t trailer_offset;
	uint64_t blob_table_offset;
};

/*
 * The layout rule of v1: data areas in region order, each at the next
 * 2 MiB boundary at or after the previous end (the first after the meta
 * area); the trailer right after the last data area; in the trailer, per
 * region, bitmap then checksum table; then the blob table. sizes[] in
 * bytes (multiples of 4096). -EFBIG if offsets would overflow.
 */
static inline int wps_img_layout(const uint64_t *sizes, uint32_t nr,
				 uint32_t group_blocks,
				 struct wps_img_layout_region *out,
				 struct wps_img_layout *lay)
{
	uint64_t cur = wps_img_meta_size(nr);
	uint32_t i;

	lay->meta_size = cur;
	for (i = 0; i < nr; i++) {
		uint64_t start = wps_img_align(cur, WPS_IMG_DATA_ALIGN);

		if (start < cur || sizes[i] > (UINT64_MAX >> 2) - start)
			return -EFBIG;
		out[i].nr_blocks = sizes[i] >> WPS_IMG_BLOCK_SHIFT;
		out[i].data_offset = start;
		cur = start + sizes[i];
	}
	lay->trailer_offset = cur;
	for (i = 0; i < nr; i++) {
		out[i].bitmap_offset = cur;
		cur += wps_img_bitmap_bytes(out[i].nr_blocks);
		out[i].csum_offset = cur;
		cur += wps_img_csum_bytes(out[i].nr_blocks, group_blocks);
	}
	lay->blob_table_offset = cur;
	return 0;
}

/* Blob bytes start after the table, each 8-aligned. */
static inline uint64_t wps_img_blob_data_start(uint64_t blob_table_offset,
					       uint32_t nr_blobs)
{
	return wps_img_align(blob_table_offset +
				     (uint64_t)nr_blobs *
					     sizeof(struct wps_img_blob_ent),
			     8);
}

/*
 * The check value of block b holding data: fmix32(crc32c(le64(b) || data)),
 * where fmix32 is MurmurHash3's finalizer. A group checksum is the XOR of
 * the check values of its present blocks, so blocks may arrive in any
 * order. The finalizer is what makes that XOR bind each block to its
 * index: a CRC is affine, so without it crc(b, D) = F(b) ^ G(D) and the
 * XOR over a group would not change when two of its blocks swap places.
 * fmix32 is a bijection, so damage to any one block always shows.
 */
static inline uint32_t wps_img_fmix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static inline uint32_t wps_img_block_crc(uint64_t b, const void *data)
{
	uint64_t le = htole64(b);

	return wps_img_fmix32(wps_crc32c(wps_crc32c(0, &le, sizeof(le)), data,
					 WPS_IMG_BLOCK));
}

#endif /* WPS_IMG_FORMAT_H */
