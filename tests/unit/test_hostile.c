/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hostile images: a valid image written by the real writer, then one
 * structural lie at a time with every checksum recomputed, so that only
 * the lie can be what the reader refuses (a stale checksum would hide a
 * missing check). Each mutant must be refused, with the exact errno, by
 * wps_image_open or wps_chain_open, before the reader allocates or reads
 * what the lie declares; a crash, an over-read (ASan) or a hang (the
 * tcase timeout, and alarm() in the FIFO cases) fails the test.
 *
 * The model keeps an image's metadata in memory (superblock and region
 * table; trailer; footer) and writes mutants as files holding only those:
 * opening reads no page data, so the data area stays a hole and a
 * mutant declaring a terabyte costs nothing on disk.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/image.h>

#include "stream/format.h"
#include "stream/img_writer.h"
#include "tests/unit/testutil.h"

static struct wps_ctx *ctx;
static unsigned int rejected;   /* mutants refused in this test */

#define REGION (4ull << 20)     /* the "4 MiB region" of issue 12 */
#define GUARD_S 30              /* alarm: a hang fails instead of waiting */

/* An image's metadata, in memory. */
struct hm {
	uint8_t *head;          /* [0, meta_size) */
	size_t head_len;
	uint64_t toff;          /* where trailer[] goes */
	uint8_t *trailer;       /* stored bytes from toff; zeros up to foff */
	size_t trailer_len;
	uint64_t foff;          /* where the footer goes */
	struct wps_img_footer ft;
	uint64_t bto;           /* the blob table, as written */
};

#define SB(h) ((struct wps_img_super *)(void *)(h)->head)
#define RE(h, i) ((struct wps_img_region_ent *)(void *)((h)->head + 4096) + (i))
#define BE(h, i) ((struct wps_img_blob_ent *)(void *)((h)->trailer + \
		  ((h)->bto - (h)->toff)) + (i))

static char *path_in(const char *name)
{
	char *p;

	ck_assert_int_gt(asprintf(&p, "%s/%s", tu_dir, name), 0);
	return p;
}

/*
 * A valid image by the real writer: one 4 MiB region (every 8th block
 * present), blobs "vmm-state" and "b2", and, when parent is set, the
 * parent's name and UUID. uuid is filled with the byte u.
 */
static void write_image(const char *name, uint8_t u, int parent_u,
			const char *parent, const char *region_name,
			const char *blob_name)
{
	struct wps_img_writer_region r = {
		0x7f0000000000ull, REGION, 4096, 1, "ram",
	};
	struct wps_img_writer_opts o = { .flags = WPS_IMGW_NO_DIRECT };
	struct wps_img_writer *w;
	char *p = path_in(name);
	uint8_t blk[4096], state[100];
	uint64_t b;

	if (region_name)
		snprintf(r.name, sizeof(r.name), "%s", region_name);
	memset(o.uuid, u, 16);
	if (parent_u >= 0)
		memset(o.parent_uuid, parent_u, 16);
	ck_assert_int_eq(wps_img_writer_open(ctx, p, &r, 1, &o, &w), 0);
	for (b = 0; b < REGION / 4096; b += 8) {
		memset(blk, (int)(b % 251) + 1, sizeof(blk));
		ck_assert_int_eq(wps_img_writer_put(w, WPS_LANE_SWEEP, 0, b * 4096,
						    blk, sizeof(blk)), 0);
	}
	memset(state, 0x42, sizeof(state));
	ck_assert_int_eq(wps_img_writer_add_blob(w, blob_name ? blob_name :
						 "vmm-state", state,
						 sizeof(state)), 0);
	ck_assert_int_eq(wps_img_writer_add_blob(w, "b2", "0123456789", 10), 0);
	if (parent)
		ck_assert_int_eq(wps_img_writer_add_blob(w, "wpsnap.parent", parent,
							 strlen(parent)), 0);
	ck_assert_int_eq(wps_img_writer_commit(w), 0);
	wps_img_writer_free(w);
	free(p);
}

static void read_at(int fd, void *buf, size_t len, uint64_t off)
{
	ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
}

static void hm_load(struct hm *h, const char *name)
{
	char *p = path_in(name);
	int fd = open(p, O_RDONLY);
	struct wps_img_super sb;

	ck_assert_int_ge(fd, 0);
	read_at(fd, &sb, sizeof(sb), 0);
	h->head_len = le64toh(sb.meta_size);
	h->head = malloc(h->head_len);
	ck_assert_ptr_nonnull(h->head);
	read_at(fd, h->head, h->head_len, 0);
	h->toff = le64toh(sb.trailer_offset);
	h->foff = le64toh(sb.footer_offset);
	h->trailer_len = h->foff - h->toff;
	h->trailer = malloc(h->trailer_len);
	ck_assert_ptr_nonnull(h->trailer);
	read_at(fd, h->trailer, h->trailer_len, h->toff);
	read_at(fd, &h->ft, sizeof(h->ft), h->foff);
	h->bto = le64toh(h->ft.blob_table_offset);
	close(fd);
	free(p);
}

static void hm_free(struct hm *h)
{
	free(h->head);
	free(h->trailer);
}

/* crc32c of the trailer as the reader sees it: stored bytes, then zeros
 * (a hole) up to the footer. */
static uint32_t trailer_crc(const struct hm *h)
{
	static const uint8_t zeros[1 << 20];
	uint64_t left = h->foff - h->toff;
	uint32_t c;

	if (h->trailer_len >= left)
		return wps_crc32c(0, h->trailer, left);
	c = wps_crc32c(0, h->trailer, h->trailer_len);
	for (left -= h->trailer_len; left; ) {
		size_t n = left < sizeof(zeros) ? left : sizeof(zeros);

		c = wps_crc32c(c, zeros, n);
		left -= n;
	}
	return c;
}

/* Every checksum, recomputed over what the mutant holds. */
static void hm_seal(struct hm *h)
{
	struct wps_img_super *sb = SB(h);

	sb->region_table_crc = htole32(wps_crc32c(0, h->head + 4096,
						  h->head_len - 4096));
	sb->crc = htole32(wps_crc32c(0, sb, offsetof(struct wps_img_super, crc)));
	h->ft.trailer_crc = htole32(trailer_crc(h));
	h->ft.crc = htole32(wps_crc32c(0, &h->ft,
				       offsetof(struct wps_img_footer, crc)));
}

/* Seal and write as name: metadata only, the rest a hole. */
static char *hm_write(struct hm *h, const char *name)
{
	char *p = path_in(name);
	int fd;

	hm_seal(h);
	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, h->head, h->head_len, 0), (ssize_t)h->head_len);
	if (h->trailer_len)
		ck_assert_int_eq(pwrite(fd, h->trailer, h->trailer_len, (off_t)h->toff),
				 (ssize_t)h->trailer_len);
	ck_assert_int_eq(pwrite(fd, &h->ft, sizeof(h->ft), (off_t)h->foff),
			 (ssize_t)sizeof(h->ft));
	ck_assert_int_eq(close(fd), 0);
	return p;
}

/* Move the footer to foff (superblock and footer agree on it). */
static void hm_set_footer(struct hm *h, uint64_t foff)
{
	h->foff = foff;
	SB(h)->footer_offset = htole64(foff);
	h->ft.footer_offset = htole64(foff);
	h->ft.trailer_size = htole64(foff - le64toh(h->ft.trailer_offset));
}

/* One refusal: the errno, the log's words, the file named (a chain's
 * refusal names the image at fault, which may be a parent: there only
 * the directory is known here), one more mutant counted. */
static void assert_refused(const char *p, const char *named, int got, int err,
			   const char *msg)
{
	ck_assert_msg(got == err, "%s: returned %d, wanted %d; log:\n%s",
		      p, got, err, tu_log_text());
	ck_assert_msg(tu_logged(msg), "log lacks \"%s\":\n%s", msg, tu_log_text());
	ck_assert_msg(tu_logged(named), "log does not name %s:\n%s", named,
		      tu_log_text());
	rejected++;
}

static void open_refused_as(const char *p, int err, const char *msg)
{
	struct wps_image *img = (void *)1;
	int got;

	tu_log_reset();
	alarm(GUARD_S);
	got = wps_image_open(ctx, p, 0, &img);
	alarm(0);
	ck_assert_ptr_null(img);
	assert_refused(p, p, got, err, msg);
}

/* Mutant h, written as "m", must be refused with err and msg. */
static void refused(struct hm *h, int err, const char *msg)
{
	char *p = hm_write(h, "m");

	open_refused_as(p, err, msg);
	free(p);
}

static void chain_refused_as(const char *name, int err, const char *msg)
{
	struct wps_chain *c = (void *)1;
	char *p = path_in(name);
	int fds = tu_count_fds(), got;

	tu_log_reset();
	alarm(GUARD_S);
	got = wps_chain_open(ctx, p, 0, &c);
	alarm(0);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(tu_count_fds(), fds);
	assert_refused(p, tu_dir, got, err, msg);
	free(p);
}

static void setup(void)
{
	tu_dir_setup();
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	rejected = 0;
	write_image("base", 0x11, -1, NULL, NULL, NULL);
	tu_log_reset();
}

static void teardown(void)
{
	printf("hostile images rejected: %u\n", rejected);
	wps_ctx_free(ctx);
	tu_dir_teardown();
}

/* ------------------------------------------------------------------ */
/* the model itself                                                    */
/* ------------------------------------------------------------------ */

/* Resealing an untouched model gives an image the reader accepts: so
 * every refusal below is the mutation's doing. */
START_TEST(t_model_roundtrip)
{
	struct wps_image *img;
	struct hm h;
	char *p;

	hm_load(&h, "base");
	p = hm_write(&h, "m");
	ck_assert_int_eq(wps_image_open(ctx, p, 0, &img), 0);
	ck_assert_uint_eq(wps_image_get_info(img)->nr_blobs, 2);
	wps_image_close(img);
	free(p);
	hm_free(&h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* issue 12, items 1-3: the trailer's shape                           */
/* ------------------------------------------------------------------ */

/* 1 TiB region, 4 KiB trailer: the bitmap alone needs 32 MiB. The
 * region table, superblock and footer agree; only the room is missing. */
START_TEST(t_tib_region_small_trailer)
{
	struct hm h;
	uint64_t size = 1ull << 40, toff, nb = size / 4096;
	struct wps_img_region_ent *re;

	hm_load(&h, "base");
	re = RE(&h, 0);
	toff = le64toh(re->data_offset) + size;
	re->size = htole64(size);
	re->nr_blocks = htole64(nb);
	re->bitmap_offset = htole64(toff);
	re->csum_offset = htole64(toff + wps_img_bitmap_bytes(nb));
	re->present_blocks = 0;
	SB(&h)->trailer_offset = htole64(toff);
	h.ft.trailer_offset = htole64(toff);
	h.ft.nr_blobs = 0;
	h.ft.blob_table_offset = htole64(toff + 4096);
	h.ft.present_blocks = 0;
	h.ft.data_bytes = 0;
	h.toff = toff;
	memset(h.trailer, 0, 4096);
	h.trailer_len = 4096;
	hm_set_footer(&h, toff + 4096);
	refused(&h, -EBADMSG, "too small for the regions' bitmaps and checksum tables");
	hm_free(&h);
}
END_TEST

/* The footer where the blob table must start, and before it: the
 * checksum table runs into the footer (the heap over-read of item 2). */
START_TEST(t_footer_before_blob_table)
{
	struct hm h;
	uint64_t back;

	for (back = 4096; back <= 8192; back += 4096) {
		hm_load(&h, "base");
		h.ft.nr_blobs = 0;
		h.ft.blob_table_offset = htole64(h.bto - back);
		hm_set_footer(&h, h.bto - back);
		h.trailer_len = h.foff - h.toff;
		refused(&h, -EBADMSG, "too small for the regions' bitmaps");
		hm_free(&h);
	}
}
END_TEST

/* A 4 GiB trailer: on a file that is really tiny (refused by its size),
 * and on a sparse file of the declared size with every checksum right
 * (refused by the blob table, before the trailer is read: its checksum
 * is never reached). */
START_TEST(t_4gib_trailer)
{
	struct hm h;
	char *p;
	int fd;

	hm_load(&h, "base");
	hm_set_footer(&h, h.toff + (4ull << 30));
	p = hm_write(&h, "m");
	fd = open(p, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 64 << 10), 0);
	close(fd);
	open_refused_as(p, -EBADMSG, "truncated");
	free(p);

	refused(&h, -EBADMSG, "puts it at");
	ck_assert(!tu_logged("trailer checksum"));
	hm_free(&h);
}
END_TEST

/* ------------------------------------------------------------------ */
/* item 6: what the writer guarantees, the reader checks               */
/* ------------------------------------------------------------------ */

START_TEST(t_duplicate_blob_names)
{
	struct hm h;

	hm_load(&h, "base");
	memset(BE(&h, 1)->name, 0, sizeof(BE(&h, 1)->name));
	strcpy(BE(&h, 1)->name, "vmm-state");
	refused(&h, -EBADMSG, "two blobs have the same name");
	hm_free(&h);
}
END_TEST

START_TEST(t_nr_blobs_mismatch)
{
	static const struct { uint32_t nr; const char *msg; } c[] = {
		{ 0, "puts it at" },
		{ 1, "blob entry 0" },
		{ 3, "blob entry 0" },
		{ 1000000, "more than fit" },
		{ UINT32_MAX, "more than fit" },
	};
	unsigned int i;
	struct hm h;

	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		hm_load(&h, "base");
		h.ft.nr_blobs = htole32(c[i].nr);
		refused(&h, -EBADMSG, c[i].msg);
		hm_free(&h);
	}
}
END_TEST

START_TEST(t_misplaced_blob_table)
{
	static const int64_t d[] = { -4096, -72, -8, 8, 72, 4096 };
	unsigned int i;
	struct hm h;

	for (i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
		hm_load(&h, "base");
		h.ft.blob_table_offset = htole64(h.bto + (uint64_t)d[i]);
		refused(&h, -EBADMSG, "puts the blob table at");
		hm_free(&h);
	}
}
END_TEST

/* Lies in one blob or region entry, each with what the log must say. */
static void blob0_unterminated(struct hm *h)
{
	memset(BE(h, 0)->name, 'x', sizeof(BE(h, 0)->name));
}

static void blob1_empty_name(struct hm *h)
{
	memset(BE(h, 1)->name, 0, sizeof(BE(h, 1)->name));
}

static void blob1_gap(struct hm *h)     /* not where blob 0 ends */
{
	BE(h, 1)->offset = htole64(le64toh(BE(h, 1)->offset) + 8);
}

static void blob1_huge(struct hm *h)
{
	BE(h, 1)->length = htole64(UINT64_MAX - 4);
}

static void blob1_past_footer(struct hm *h)
{
	BE(h, 1)->length = htole64(5000);
}

static void region_unterminated(struct hm *h)
{
	memset(RE(h, 0)->name, 'r', sizeof(RE(h, 0)->name));
}

static void region_page_3000(struct hm *h)
{
	RE(h, 0)->page_size = htole32(3000);
}

static void region_page_0(struct hm *h)
{
	RE(h, 0)->page_size = 0;
}

static const struct {
	void (*lie)(struct hm *h);
	const char *msg;
} entry_lies[] = {
	{ blob0_unterminated, "blob entry 0" },
	{ blob1_empty_name, "blob entry 1" },
	{ blob1_gap, "blob entry 1" },
	{ blob1_huge, "blob entry 1" },
	{ blob1_past_footer, "5000 bytes; footer at" },
	{ region_unterminated, "not NUL-terminated" },
	{ region_page_3000, "page size 3000" },
	{ region_page_0, "page size 0" },
};

START_TEST(t_entries)
{
	unsigned int i;
	struct hm h;

	for (i = 0; i < sizeof(entry_lies) / sizeof(entry_lies[0]); i++) {
		hm_load(&h, "base");
		entry_lies[i].lie(&h);
		refused(&h, -EBADMSG, entry_lies[i].msg);
		hm_free(&h);
	}
}
END_TEST

/*
 * Every offset, length and count field of the superblock, the region
 * entry, the footer and the blob entries, set to values around and far
 * from the true one (checksums resealed): each must be refused with
 * EBADMSG, none may crash or over-read. (group_blocks is not among them:
 * any G in 1..65536 is a valid shape, and a wrong one shows as a data
 * checksum mismatch when pages are read, not at open.)
 */
static const uint64_t field_delta[] = {
	1, 8, 72, 4096, 8192, 2u << 20, -1ull, -8ull, -72ull, -4096ull,
	-8192ull,
};
static const uint64_t field_abs[] = {
	0, 1, 4096, 1ull << 32, 1ull << 40, 1ull << 62, UINT32_MAX,
	UINT64_MAX, UINT64_MAX - 4095,
};

struct field {
	const char *name;
	int where;              /* 0 superblock, 1 region 0, 2 footer, 3+ blob */
	size_t off;
	size_t len;             /* 4 or 8 */
};

#define F(n, w, s, m) { n, w, offsetof(s, m), sizeof(((s *)0)->m) }
static const struct field fields[] = {
	F("sb.meta_size", 0, struct wps_img_super, meta_size),
	F("sb.trailer_offset", 0, struct wps_img_super, trailer_offset),
	F("sb.footer_offset", 0, struct wps_img_super, footer_offset),
	F("sb.nr_regions", 0, struct wps_img_super, nr_regions),
	F("sb.block_size", 0, struct wps_img_super, block_size),
	F("sb.region_entry_size", 0, struct wps_img_super, region_entry_size),
	F("re.size", 1, struct wps_img_region_ent, size),
	F("re.nr_blocks", 1, struct wps_img_region_ent, nr_blocks),
	F("re.data_offset", 1, struct wps_img_region_ent, data_offset),
	F("re.bitmap_offset", 1, struct wps_img_region_ent, bitmap_offset),
	F("re.csum_offset", 1, struct wps_img_region_ent, csum_offset),
	F("re.present_blocks", 1, struct wps_img_region_ent, present_blocks),
	F("ft.trailer_offset", 2, struct wps_img_footer, trailer_offset),
	F("ft.trailer_size", 2, struct wps_img_footer, trailer_size),
	F("ft.nr_blobs", 2, struct wps_img_footer, nr_blobs),
	F("ft.blob_table_offset", 2, struct wps_img_footer, blob_table_offset),
	F("ft.data_bytes", 2, struct wps_img_footer, data_bytes),
	F("ft.present_blocks", 2, struct wps_img_footer, present_blocks),
	F("ft.footer_offset", 2, struct wps_img_footer, footer_offset),
	F("blob0.offset", 3, struct wps_img_blob_ent, offset),
	F("blob0.length", 3, struct wps_img_blob_ent, length),
	F("blob1.offset", 4, struct wps_img_blob_ent, offset),
	F("blob1.length", 4, struct wps_img_blob_ent, length),
};

static uint8_t *field_ptr(struct hm *h, const struct field *f)
{
	switch (f->where) {
	case 0: return h->head + f->off;
	case 1: return (uint8_t *)RE(h, 0) + f->off;
	case 2: return (uint8_t *)&h->ft + f->off;
	default: return (uint8_t *)BE(h, f->where - 3) + f->off;
	}
}

static void try_field(const struct field *f, uint64_t v, bool absolute)
{
	struct hm h;
	uint8_t *p;
	uint64_t old = 0, nv;

	hm_load(&h, "base");
	p = field_ptr(&h, f);
	memcpy(&old, p, f->len);
	old = le64toh(old);
	nv = absolute ? v : old + v;
	if (f->len == 4)
		nv &= UINT32_MAX;
	if (nv == old) {
		hm_free(&h);
		return;
	}
	nv = htole64(nv);
	memcpy(p, &nv, f->len);
	tu_log_reset();
	{
		char *path = hm_write(&h, "m");
		struct wps_image *img = NULL;
		int got;

		alarm(GUARD_S);
		got = wps_image_open(ctx, path, 0, &img);
		alarm(0);
		ck_assert_msg(got == -EBADMSG,
			      "%s = %llu (was %llu): open returned %d; log:\n%s",
			      f->name, (unsigned long long)le64toh(nv),
			      (unsigned long long)old, got, tu_log_text());
		ck_assert_ptr_null(img);
		free(path);
	}
	rejected++;
	hm_free(&h);
}

START_TEST(t_field_sweep)
{
	unsigned int i, k;

	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		for (k = 0; k < sizeof(field_delta) / sizeof(field_delta[0]); k++)
			try_field(&fields[i], field_delta[k], false);
		for (k = 0; k < sizeof(field_abs) / sizeof(field_abs[0]); k++)
			try_field(&fields[i], field_abs[k], true);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* item 4: not a file                                                  */
/* ------------------------------------------------------------------ */

START_TEST(t_fifo_image)
{
	char *p = path_in("fifo");

	ck_assert_int_eq(mkfifo(p, 0600), 0);
	open_refused_as(p, -EINVAL, "a FIFO, not a regular file or a block device");
	free(p);
}
END_TEST

START_TEST(t_not_files)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *p = path_in("dir");
	int s;

	ck_assert_int_eq(mkdir(p, 0700), 0);
	open_refused_as(p, -EINVAL, "a directory");
	free(p);
	open_refused_as("/dev/null", -EINVAL, "a character device");
	p = path_in("sock");
	ck_assert_uint_lt(strlen(p), sizeof(sa.sun_path));
	strcpy(sa.sun_path, p);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	open_refused_as(p, -ENXIO, "cannot open");
	close(s);
	free(p);
}
END_TEST

START_TEST(t_fifo_parent)
{
	char *p;

	write_image("child", 0x22, 0x11, "par", NULL, NULL);
	p = path_in("par");
	ck_assert_int_eq(mkfifo(p, 0600), 0);
	chain_refused_as("child", -EINVAL, "a FIFO");
	free(p);
}
END_TEST

/* ------------------------------------------------------------------ */
/* item 5: chains                                                      */
/* ------------------------------------------------------------------ */

START_TEST(t_self_parent)
{
	write_image("self", 0x33, 0x33, "self", NULL, NULL);
	chain_refused_as("self", -EBADMSG, "which is itself, already in its chain: a cycle");
}
END_TEST

START_TEST(t_two_cycle)
{
	write_image("a", 0x44, 0x55, "b", NULL, NULL);
	write_image("b", 0x55, 0x44, "a", NULL, NULL);
	chain_refused_as("a", -EBADMSG, "a cycle");
	chain_refused_as("b", -EBADMSG, "a cycle");
}
END_TEST

/* Clone the incremental template as cNNN: uuid n, parent n - 1, parent's
 * name "c(n-1)" (same length: only bytes change, then every crc). */
static void clone_incremental(const struct hm *tpl, unsigned int n)
{
	struct hm h = *tpl;
	char name[8], parent[8];
	unsigned int i;

	h.head = malloc(tpl->head_len);
	h.trailer = malloc(tpl->trailer_len);
	ck_assert(h.head && h.trailer);
	memcpy(h.head, tpl->head, tpl->head_len);
	memcpy(h.trailer, tpl->trailer, tpl->trailer_len);
	memset(SB(&h)->uuid, 0, 16);
	memcpy(SB(&h)->uuid, &n, sizeof(n));
	SB(&h)->uuid[15] = 0xc0;
	memset(SB(&h)->parent_uuid, 0, 16);
	i = n - 1;
	memcpy(SB(&h)->parent_uuid, &i, sizeof(i));
	SB(&h)->parent_uuid[15] = 0xc0;
	memcpy(h.ft.uuid, SB(&h)->uuid, 16);
	snprintf(parent, sizeof(parent), "c%03u", n - 1);
	for (i = 0; i < le32toh(h.ft.nr_blobs); i++) {
		struct wps_img_blob_ent *e = BE(&h, i);

		if (strcmp(e->name, "wpsnap.parent"))
			continue;
		ck_assert_uint_eq(le64toh(e->length), 4);
		memcpy(h.trailer + (le64toh(e->offset) - h.toff), parent, 4);
		e->crc = htole32(wps_crc32c(0, parent, 4));
	}
	snprintf(name, sizeof(name), "c%03u", n);
	free(hm_write(&h, name));
	hm_free(&h);
}

/* WPS_IMG_CHAIN_MAX images open; one more is refused. */
START_TEST(t_chain_depth)
{
	struct wps_chain *c;
	struct hm full, tpl;
	unsigned int n, zero = 0;
	char *p;

	write_image("c000", 0x66, -1, NULL, NULL, NULL);
	write_image("tpl", 0x77, 0x66, "c000", NULL, NULL);
	hm_load(&full, "c000");
	memset(SB(&full)->uuid, 0, 16);
	memcpy(SB(&full)->uuid, &zero, sizeof(zero));
	SB(&full)->uuid[15] = 0xc0;
	memcpy(full.ft.uuid, SB(&full)->uuid, 16);
	free(hm_write(&full, "c000"));
	hm_load(&tpl, "tpl");
	for (n = 1; n <= WPS_IMG_CHAIN_MAX; n++)
		clone_incremental(&tpl, n);
	p = path_in("c255");
	ck_assert_int_eq(wps_chain_open(ctx, p, 0, &c), 0);
	ck_assert_uint_eq(wps_chain_length(c), WPS_IMG_CHAIN_MAX);
	wps_chain_close(c);
	free(p);
	chain_refused_as("c256", -EBADMSG, "a chain of more than 256 images");
	hm_free(&full);
	hm_free(&tpl);
}
END_TEST

/* ------------------------------------------------------------------ */
/* item 8: names with escapes, through wpsnap inspect                  */
/* ------------------------------------------------------------------ */

START_TEST(t_inspect_escapes)
{
	char *p, cmd[PATH_MAX * 2], out[8192];
	size_t n;
	FILE *f;

	if (access("tools/wpsnap", X_OK)) {
		fprintf(stderr, "no tools/wpsnap in the build directory\n");
		ck_abort_msg("run from the build directory (make check)");
	}
	write_image("evil", 0x88, -1, NULL, "ram\x1b[2J\nregion 9 fake",
		    "st\x1b]0;pwned\x07\\");
	p = path_in("evil");
	snprintf(cmd, sizeof(cmd), "tools/wpsnap inspect '%s' 2>&1", p);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	ck_assert_int_eq(pclose(f), 0);
	ck_assert_msg(!memchr(out, 0x1b, n) && !memchr(out, 0x07, n),
		      "raw control bytes in:\n%s", out);
	ck_assert_msg(strstr(out, "ram\\x1b[2J\\x0aregion 9 fake"), "%s", out);
	ck_assert_msg(strstr(out, "blob       st\\x1b]0;pwned\\x07\\x5c (100 bytes)"),
		      "%s", out);
	ck_assert_msg(!strstr(out, "\nregion 9"), "forged line in:\n%s", out);
	free(p);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("hostile");
	TCase *tc = tcase_create("images");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, t_model_roundtrip);
	tcase_add_test(tc, t_tib_region_small_trailer);
	tcase_add_test(tc, t_footer_before_blob_table);
	tcase_add_test(tc, t_4gib_trailer);
	tcase_add_test(tc, t_duplicate_blob_names);
	tcase_add_test(tc, t_nr_blobs_mismatch);
	tcase_add_test(tc, t_misplaced_blob_table);
	tcase_add_test(tc, t_entries);
	tcase_add_test(tc, t_field_sweep);
	tcase_add_test(tc, t_fifo_image);
	tcase_add_test(tc, t_not_files);
	tcase_add_test(tc, t_fifo_parent);
	tcase_add_test(tc, t_self_parent);
	tcase_add_test(tc, t_two_cycle);
	tcase_add_test(tc, t_chain_depth);
	tcase_add_test(tc, t_inspect_escapes);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
