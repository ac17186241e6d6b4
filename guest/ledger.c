/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest's ledger as an object: its file format, and the check of guest
 * memory or of an image region against it, block by block, with a message
 * that says what was found where something else was expected.
 *
 * Ledger file, all little endian:
 *   0  magic "WPSLEDG1"        16 u64 nr_blocks
 *   8  u32 version (1)         24 u32 crc32 of the generation array
 *  12  u32 block size (4096)   28 u32 crc32 of bytes 0..27
 *  32  u32 generation[nr_blocks]
 * A wrong magic or version is -EPROTO (not a ledger, or a newer one);
 * anything truncated or failing a checksum is -EBADMSG.
 */
#include "config.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest/guest.h"
#include "guest/guest_int.h"

#define LEDGER_MAGIC "WPSLEDG1"
#define LEDGER_VERSION 1u
#define LEDGER_HDR 32u
#define IO_CHUNK (64u << 10)          /* ledger file I/O */
#define VERIFY_CHUNK (4u << 20)       /* image reads */

int rguest_ledger_alloc(uint64_t nr_blocks, struct rguest_ledger **out)
{
	struct rguest_ledger *l;

	if (nr_blocks > SIZE_MAX / sizeof(uint32_t))
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->nr_blocks = nr_blocks;
	l->gen = calloc(nr_blocks ? nr_blocks : 1, sizeof(*l->gen));
	if (!l->gen) {
		free(l);
		return -ENOMEM;
	}
	*out = l;
	return 0;
}

void rguest_ledger_free(struct rguest_ledger *l)
{
	if (!l)
		return;
	free(l->gen);
	free(l);
}

/* ------------------------------------------------------------------ */
/* CRC-32 (IEEE, reflected); the table lives with the caller           */
/* ------------------------------------------------------------------ */

struct crc32 {
	uint32_t t[256];
	uint32_t crc;
};

static void crc32_init(struct crc32 *c)
{
	uint32_t i, j, v;

	for (i = 0; i < 256; i++) {
		v = i;
		for (j = 0; j < 8; j++)
			v = v & 1 ? (v >> 1) ^ 0xEDB88320u : v >> 1;
		c->t[i] = v;
	}
	c->crc = ~0u;
}

static void crc32_update(struct crc32 *c, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint32_t v = c->crc;

	while (len--)
		v = c->t[(v ^ *p++) & 0xff] ^ (v >> 8);
	c->crc = v;
}

static uint32_t crc32_final(const struct crc32 *c)
{
	return ~c->crc;
}

/* ------------------------------------------------------------------ */
/* File                                                                */
/* ------------------------------------------------------------------ */

static int write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A short read means the file ended early: a truncated ledger. */
static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len) {
		n = read(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!n)
			return -EBADMSG;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* The array converted to little endian, IO_CHUNK bytes at a time; either
 * fed to the checksum (fd < 0) or written. */
static int ledger_stream(const struct rguest_ledger *l, struct crc32 *c, int fd,
			 uint32_t *chunk)
{
	uint64_t b = 0, n, i;
	int ret;

	while (b < l->nr_blocks) {
		n = l->nr_blocks - b;
		if (n > IO_CHUNK / 4)
			n = IO_CHUNK / 4;
		for (i = 0; i < n; i++)
			chunk[i] = htole32(l->gen[b + i]);
		if (fd < 0) {
			crc32_update(c, chunk, n * 4);
		} else {
			ret = write_full(fd, chunk, n * 4);
			if (ret)
				return ret;
		}
		b += n;
	}
	return 0;
}

/* Written to "<path>.tmp" and renamed over path: a reader never sees a
 * half-written ledger. */
int rguest_ledger_write(const struct rguest_ledger *l, const char *path)
{
	uint8_t hdr[LEDGER_HDR] = { 0 };
	struct crc32 c;
	uint32_t *chunk = NULL;
	char *tmp = NULL;
	int fd = -1, ret;

	ret = -ENOMEM;
	chunk = malloc(IO_CHUNK);
	if (!chunk || asprintf(&tmp, "%s.tmp", path) < 0) {
		tmp = NULL;
		goto out;
	}

	crc32_init(&c);
	ledger_stream(l, &c, -1, chunk);
	memcpy(hdr, LEDGER_MAGIC, 8);
	put_le32(hdr + 8, LEDGER_VERSION);
	put_le32(hdr + 12, RGUEST_BLOCK);
	put_le64(hdr + 16, l->nr_blocks);
	put_le32(hdr + 24, crc32_final(&c));
	crc32_init(&c);
	crc32_update(&c, hdr, 28);
	put_le32(hdr + 28, crc32_final(&c));

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = write_full(fd, hdr, sizeof(hdr));
	if (!ret)
		ret = ledger_stream(l, NULL, fd, chunk);
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	fd = -1;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret)
		unlink(tmp);
out:
	free(tmp);
	free(chunk);
	return ret;
}

int rguest_ledger_read(const char *path, struct rguest_ledger **out)
{
	uint8_t hdr[LEDGER_HDR];
	struct rguest_ledger *l = NULL;
	struct crc32 c;
	struct stat st;
	uint64_t nr, b;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	ret = read_full(fd, hdr, sizeof(hdr));
	if (ret)
		goto out;
	if (memcmp(hdr, LEDGER_MAGIC, 8) || get_le32(hdr + 8) != LEDGER_VERSION) {
		ret = -EPROTO;
		goto out;
	}
	crc32_init(&c);
	crc32_update(&c, hdr, 28);
	if (crc32_final(&c) != get_le32(hdr + 28)) {
		ret = -EBADMSG;
		goto out;
	}
	if (get_le32(hdr + 12) != RGUEST_BLOCK) {
		ret = -EPROTO;
		goto out;
	}
	nr = get_le64(hdr + 16);
	if (nr > ((uint64_t)st.st_size - LEDGER_HDR) / 4 ||
	    (uint64_t)st.st_size != LEDGER_HDR + nr * 4) {
		ret = -EBADMSG;   /* truncated, or trailing bytes */
		goto out;
	}
	ret = rguest_ledger_alloc(nr, &l);
	if (ret)
		goto out;
	ret = read_full(fd, l->gen, nr * 4);
	if (ret)
		goto out;
	crc32_init(&c);
	crc32_update(&c, l->gen, nr * 4);
	if (crc32_final(&c) != get_le32(hdr + 24)) {
		ret = -EBADMSG;
		goto out;
	}
	for (b = 0; b < nr; b++)
		l->gen[b] = le32toh(l->gen[b]);
	*out = l;
	l = NULL;
out:
	rguest_ledger_free(l);
	close(fd);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Verification                                                        */
/* ------------------------------------------------------------------ */

static bool block_is_zero(const void *blk)
{
	const uint64_t *w = blk;
	unsigned int i;

	for (i = 0; i < RGUEST_WORDS; i++)
		if (w[i])
			return false;
	return true;
}

/* Compare in one pass, without building the expected block. */
static bool block_matches(const void *blk, uint64_t b, uint32_t g)
{
	const uint64_t *w = blk;
	uint64_t m, k = 0;
	unsigned int i;

	if (!g)
		return block_is_zero(blk);
	if (le64toh(w[0]) != (b << 32 | g))
		return false;
	m = rguest_mix(b, g);
	for (i = 1; i < RGUEST_WORDS; i++) {
		k += RGUEST_STEP;
		if (le64toh(w[i]) != (m ^ k))
			return false;
	}
	return true;
}

/* Name what a mismatching block holds: zeros, some generation of this or
 * another block, or garbage. */
static void describe(uint64_t b, uint32_t want, const void *blk, char *why,
		     size_t whylen)
{
	uint64_t w0 = le64toh(*(const uint64_t *)blk);
	uint64_t fb = w0 >> 32;
	uint32_t fg = (uint32_t)w0;
	char exp[48], found[96];

	if (!why || !whylen)
		return;
	if (want)
		snprintf(exp, sizeof(exp), "generation %" PRIu32, want);
	else
		snprintf(exp, sizeof(exp), "zeros (never written)");

	if (block_is_zero(blk))
		snprintf(found, sizeof(found), "zeros");
	else if (fg && block_matches(blk, fb, fg) && fb == b)
		snprintf(found, sizeof(found), "generation %" PRIu32, fg);
	else if (fg && block_matches(blk, fb, fg))
		snprintf(found, sizeof(found), "block %" PRIu64 " generation %" PRIu32
			 " (misplaced)", fb, fg);
	else if (fg && fb == b)
		snprintf(found, sizeof(found), "garbage (first word says generation %"
			 PRIu32 ", the rest differs)", fg);
	else
		snprintf(found, sizeof(found), "garbage (first word 0x%016" PRIx64 ")", w0);
	snprintf(why, whylen, "block %" PRIu64 ": expected %s, found %s", b, exp, found);
}

static int check_blocks(const struct rguest_ledger *l, uint64_t first,
			const uint8_t *p, uint64_t n, uint64_t *bad_block,
			char *why, size_t whylen)
{
	uint64_t i;

	for (i = 0; i < n; i++, p += RGUEST_BLOCK) {
		if (block_matches(p, first + i, l->gen[first + i]))
			continue;
		if (bad_block)
			*bad_block = first + i;
		describe(first + i, l->gen[first + i], p, why, whylen);
		return -EBADMSG;
	}
	return 0;
}

int rguest_ledger_verify_mem(const struct rguest_ledger *l, const void *mem,
			  uint64_t *bad_block, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	return check_blocks(l, 0, mem, l->nr_blocks, bad_block, why, whylen);
}

int rguest_ledger_verify_image(const struct rguest_ledger *l, struct wps_image *img,
			    unsigned int r, uint64_t *bad_block, char *why,
			    size_t whylen)
{
	const struct wps_image_region *ir;
	uint64_t size = l->nr_blocks * RGUEST_BLOCK, off, len;
	void *buf = NULL;
	int ret;

	if (why && whylen)
		why[0] = '\0';
	ir = wps_image_get_region(img, r);
	if (!ir) {
		if (why && whylen)
			snprintf(why, whylen, "image has no region %u", r);
		return -EINVAL;
	}
	if (ir->size != size) {
		if (why && whylen)
			snprintf(why, whylen, "image region %u is %" PRIu64
				 " bytes, the ledger covers %" PRIu64, r, ir->size, size);
		return -EINVAL;
	}
	len = size < VERIFY_CHUNK ? size : VERIFY_CHUNK;
	/* Page aligned: the reader may use O_DIRECT into it. */
	if (posix_memalign(&buf, 4096, len ? len : 4096))
		return -ENOMEM;
	for (off = 0; off < size; off += len) {
		if (len > size - off)
			len = size - off;
		ret = wps_image_read(img, r, off, buf, len);
		if (ret) {
			if (why && whylen)
				snprintf(why, whylen, "reading region %u at offset %" PRIu64
					 ": %s", r, off, strerror(-ret));
			goto out;
		}
		ret = check_blocks(l, off / RGUEST_BLOCK, buf,
				   len / RGUEST_BLOCK, bad_block, why, whylen);
		if (ret)
			goto out;
	}
	ret = 0;
out:
	free(buf);
	return ret;
}
