/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The chain table of a checkpoint export (stream/nbd_chain.c), without a
 * server: member names ("URI#N") split and recognised, a table encoded
 * as docs/REMOTE.md lays it out (byte for byte: header fields, entries,
 * the crc of the first 65532 bytes in the last 4), slots alternating by
 * generation, the selector's lookup, where the next image goes, and
 * retention's placement (what to reclaim, where in the ring).
 * Reading a table from an export (torn copies, impossible entries) is
 * tested against a real server by tests/integration/nbd_chain.sh.
 */
#include "config.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stream/crc32c.h"
#include "stream/nbd_chain.h"
#include "tests/unit/testutil.h"

static struct wps_ctx *ctx;

static void setup(void)
{
	ctx = tu_ctx_capture();
	ck_assert_ptr_nonnull(ctx);
}

static void teardown(void)
{
	wps_ctx_free(ctx);
}

START_TEST(t_split)
{
	char *uri;
	int64_t sel;

	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h:10809/e#12", &uri, &sel), 0);
	ck_assert_str_eq(uri, "nbd://h:10809/e");
	ck_assert_int_eq(sel, 12);
	free(uri);
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd+unix:///e?socket=/r/s#0", &uri,
					     &sel), 0);
	ck_assert_str_eq(uri, "nbd+unix:///e?socket=/r/s");
	ck_assert_int_eq(sel, 0);
	free(uri);
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e", &uri, &sel), 0);
	ck_assert_str_eq(uri, "nbd://h/e");
	ck_assert_int_eq(sel, -1);
	free(uri);
	/* not a number, empty, a sign, trailing text, too long: refused */
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e#x", &uri, &sel), -EINVAL);
	ck_assert_ptr_null(uri);
	ck_assert(tu_logged("'#x' does not name a checkpoint"));
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e#", &uri, &sel), -EINVAL);
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e#-1", &uri, &sel), -EINVAL);
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e#3a", &uri, &sel), -EINVAL);
	ck_assert_int_eq(wps_nbd_chain_split(ctx, "nbd://h/e#1234567890123456789",
					     &uri, &sel), -EINVAL);
}
END_TEST

START_TEST(t_member)
{
	ck_assert_str_eq(wps_nbd_chain_member("nbd://h/e#3"), "#3");
	ck_assert_str_eq(wps_nbd_chain_member("nbds://h/e#44"), "#44");
	ck_assert_ptr_null(wps_nbd_chain_member("nbd://h/e"));
	ck_assert_ptr_null(wps_nbd_chain_member("nbd://h/e#"));
	/* a file whose name has a '#' is a file */
	ck_assert_ptr_null(wps_nbd_chain_member("/var/ckpt#3"));
	ck_assert_ptr_null(wps_nbd_chain_member(NULL));
}
END_TEST

static void fill(struct wps_nbd_chain *t, uint32_t nr)
{
	uint32_t i;

	memset(t, 0, sizeof(*t));
	t->state = WPS_NBD_CHAIN_VALID;
	t->generation = 7;
	t->nr = nr;
	for (i = 0; i < nr; i++) {
		t->ent[i].seq = i;
		t->ent[i].offset = WPS_NBD_CHAIN_DATA + i * (8ull << 20);
		t->ent[i].length = (5ull << 20) + 4096;
		memset(t->ent[i].uuid, (int)(i + 1), 16);
		if (i)
			memset(t->ent[i].parent_uuid, (int)i, 16);
	}
}

START_TEST(t_encode)
{
	struct wps_nbd_chain *t = calloc(1, sizeof(*t));
	uint8_t *b = malloc(WPS_NBD_CHAIN_COPY);
	uint64_t v64;
	uint32_t v32, crc;

	fill(t, 3);
	memset(b, 0xa5, WPS_NBD_CHAIN_COPY);
	wps_nbd_chain_encode(t, b);
	/* header: magic, version, nr, generation, data_offset, zeros */
	ck_assert_int_eq(memcmp(b, "WPSCHAIN", 8), 0);
	memcpy(&v32, b + 8, 4);
	ck_assert_uint_eq(le32toh(v32), 1);
	memcpy(&v32, b + 12, 4);
	ck_assert_uint_eq(le32toh(v32), 3);
	memcpy(&v64, b + 16, 8);
	ck_assert_uint_eq(le64toh(v64), 7);
	memcpy(&v64, b + 24, 8);
	ck_assert_uint_eq(le64toh(v64), 1u << 20);
	/* entry 2 at 64 + 2 * 64: seq, offset, length, uuid, parent */
	memcpy(&v64, b + 192, 8);
	ck_assert_uint_eq(le64toh(v64), 2);
	memcpy(&v64, b + 200, 8);
	ck_assert_uint_eq(le64toh(v64), WPS_NBD_CHAIN_DATA + (16ull << 20));
	memcpy(&v64, b + 208, 8);
	ck_assert_uint_eq(le64toh(v64), (5ull << 20) + 4096);
	ck_assert_uint_eq(b[216], 3);
	ck_assert_uint_eq(b[232], 2);
	/* after the entries: zeros up to the crc */
	ck_assert_uint_eq(b[256], 0);
	ck_assert_uint_eq(b[WPS_NBD_CHAIN_COPY - 5], 0);
	memcpy(&crc, b + WPS_NBD_CHAIN_COPY - 4, 4);
	ck_assert_uint_eq(le32toh(crc), wps_crc32c(0, b, WPS_NBD_CHAIN_COPY - 4));
	/* copies alternate: the next generation never overwrites this one */
	ck_assert_uint_eq(wps_nbd_chain_slot(7), WPS_NBD_CHAIN_COPY);
	ck_assert_uint_eq(wps_nbd_chain_slot(8), 0);
	free(b);
	free(t);
}
END_TEST

START_TEST(t_find_next)
{
	struct wps_nbd_chain *t = calloc(1, sizeof(*t));

	fill(t, 0);
	ck_assert_ptr_null(wps_nbd_chain_find(t, -1));
	ck_assert_uint_eq(wps_nbd_chain_next_offset(t), WPS_NBD_CHAIN_DATA);
	fill(t, 3);
	ck_assert_uint_eq(wps_nbd_chain_find(t, -1)->seq, 2);
	ck_assert_uint_eq(wps_nbd_chain_find(t, 1)->offset,
			  WPS_NBD_CHAIN_DATA + (8ull << 20));
	ck_assert_ptr_null(wps_nbd_chain_find(t, 3));
	/* after the last image, 64 KiB-aligned */
	ck_assert_uint_eq(wps_nbd_chain_next_offset(t),
			  WPS_NBD_CHAIN_DATA + (16ull << 20) + (5ull << 20) +
			  WPS_NBD_CHAIN_ALIGN);
	t->state = WPS_NBD_CHAIN_PLAIN;
	ck_assert_ptr_null(wps_nbd_chain_find(t, -1));
	free(t);
}
END_TEST

/* Retention's placement: four 8 MiB slots, 5 MiB images. */
START_TEST(t_place)
{
	struct wps_nbd_chain *t = calloc(1, sizeof(*t));
	const uint64_t size = WPS_NBD_CHAIN_DATA + (32ull << 20);
	const uint64_t need = (5ull << 20) + 4096;
	uint64_t base, end;
	uint32_t drop;

	/* one chain of four back to #0: the last two need all of it */
	fill(t, 4);
	ck_assert_int_eq(wps_nbd_chain_place(t, 2, size, need, &drop, &base, &end),
			 -ENOSPC);
	ck_assert_uint_eq(drop, 0);
	/* #2 full: #0 and #1 may go; the fewest that make room, #0 only,
	 * and the image goes where it was, up to #1 */
	memset(t->ent[2].parent_uuid, 0, 16);
	ck_assert_int_eq(wps_nbd_chain_place(t, 2, size, need, &drop, &base, &end), 0);
	ck_assert_uint_eq(drop, 1);
	ck_assert_uint_eq(base, WPS_NBD_CHAIN_DATA);
	ck_assert_uint_eq(end, WPS_NBD_CHAIN_DATA + (8ull << 20));
	/* keep 3 protects #1 (and #0, its parent): nothing may go */
	ck_assert_int_eq(wps_nbd_chain_place(t, 3, size, need, &drop, &base, &end),
			 -ENOSPC);
	/* without retention the table never loses an entry */
	ck_assert_int_eq(wps_nbd_chain_place(t, 0, size, need, &drop, &base, &end),
			 -ENOSPC);
	ck_assert_uint_eq(drop, 0);
	/* wrapped (#2 full, #3, then #4 back at the start): the next goes
	 * after #4, bounded by #2, the oldest kept, with nothing dropped */
	fill(t, 3);
	t->ent[0].seq = 2;
	t->ent[0].offset = WPS_NBD_CHAIN_DATA + (16ull << 20);
	memset(t->ent[0].parent_uuid, 0, 16);
	t->ent[1].seq = 3;
	t->ent[1].offset = WPS_NBD_CHAIN_DATA + (24ull << 20);
	t->ent[2].seq = 4;
	t->ent[2].offset = WPS_NBD_CHAIN_DATA;
	ck_assert_int_eq(wps_nbd_chain_place(t, 2, size, need, &drop, &base, &end), 0);
	ck_assert_uint_eq(drop, 0);
	ck_assert_uint_eq(base, WPS_NBD_CHAIN_DATA + need - 4096 + WPS_NBD_CHAIN_ALIGN);
	ck_assert_uint_eq(end, WPS_NBD_CHAIN_DATA + (16ull << 20));
	free(t);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("nbd_chain");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, t_split);
	tcase_add_test(tc, t_member);
	tcase_add_test(tc, t_encode);
	tcase_add_test(tc, t_find_next);
	tcase_add_test(tc, t_place);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
