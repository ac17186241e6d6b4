/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CRC-32C: known vectors, the constant tables recomputed bit by bit, and
 * every implementation (table, SSE4.2, SSE4.2+PCLMUL) agreeing on random
 * data at every alignment and on chaining.
 */
#include "config.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/crc32c.h"
#include "stream/crc32c_table.h"
#include "tests/unit/testutil.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	int k;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (crc & 1 ? 0x82F63B78u : 0);
	}
	return ~crc;
}

static uint32_t xpow(unsigned int e)
{
	uint32_t v = 0x80000000u;

	while (e--)
		v = (v >> 1) ^ (v & 1 ? 0x82F63B78u : 0);
	return v;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void fill(uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (uint8_t)rng();
}

START_TEST(t_vectors)
{
	/* RFC 3720 (iSCSI) appendix B.4 and the usual check value. */
	uint8_t buf[32];
	int i;

	ck_assert_uint_eq(wps_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(wps_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(wps_crc32c(0, NULL, 0), 0);
	memset(buf, 0, sizeof(buf));
	ck_assert_uint_eq(wps_crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, sizeof(buf));
	ck_assert_uint_eq(wps_crc32c(0, buf, 32), 0x62A8AB43u);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	ck_assert_uint_eq(wps_crc32c(0, buf, 32), 0x46DD794Eu);
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	ck_assert_uint_eq(wps_crc32c(0, buf, 32), 0x113FDB5Cu);
}
END_TEST

START_TEST(t_tables)
{
	unsigned int i, k;

	for (i = 0; i < 256; i++) {
		uint8_t b = (uint8_t)i;
		uint32_t c = ~crc_bitwise(0xffffffffu, &b, 1);

		/* T[0][i]: the register after shifting byte i in from 0. */
		ck_assert_uint_eq(crc32c_sw_table[0][i], c);
		for (k = 1; k < 8; k++) {
			c = (c >> 8) ^ crc32c_sw_table[0][c & 0xff];
			ck_assert_uint_eq(crc32c_sw_table[k][i], c);
		}
	}
	ck_assert_uint_eq(CRC32C_K_1360, xpow(8 * 1360 - 33));
	ck_assert_uint_eq(CRC32C_K2_1360, xpow(16 * 1360 - 33));
	ck_assert_uint_eq(CRC32C_K_8192, xpow(8 * 8192 - 33));
	ck_assert_uint_eq(CRC32C_K2_8192, xpow(16 * 8192 - 33));
}
END_TEST

static void check_impl(crc_fn fn, const char *name)
{
	size_t max = (3 * 8192) * 2 + 4096 * 3 + 100;
	uint8_t *buf = malloc(max + 64);
	size_t len, off;
	unsigned int n = 0;

	ck_assert_ptr_nonnull(buf);
	fill(buf, max + 64);
	for (len = 0; len <= max; len += len < 300 ? 1 : 1 + rng() % 997) {
		for (off = 0; off < 16; off += 1 + rng() % 5) {
			uint32_t seed = (uint32_t)rng();
			uint32_t want = crc_bitwise(seed, buf + off, len);

			if (fn(seed, buf + off, len) != want)
				ck_abort_msg("%s: len %zu off %zu seed %08x: %08x != %08x",
					     name, len, off, seed,
					     fn(seed, buf + off, len), want);
			n++;
		}
	}
	/* The block size of the format, at every 8-byte phase. */
	for (off = 0; off < 8; off++)
		ck_assert_uint_eq(fn(0, buf + off, 4096),
				  crc_bitwise(0, buf + off, 4096));
	ck_assert_uint_gt(n, 500);
	free(buf);
}

START_TEST(t_sw)
{
	check_impl(wps_crc32c_sw, "sw");
}
END_TEST

START_TEST(t_sse42)
{
	if (!wps_crc32c_have_sse42())
		TU_SKIP("CPU lacks SSE4.2");
	check_impl(wps_crc32c_sse42, "sse4.2");
}
END_TEST

START_TEST(t_pclmul)
{
	if (!wps_crc32c_have_pclmul())
		TU_SKIP("CPU lacks SSE4.2+PCLMUL");
	check_impl(wps_crc32c_pclmul, "pclmul");
}
END_TEST

START_TEST(t_dispatch_agrees_large)
{
	size_t n = 8 << 20;
	uint8_t *buf = malloc(n);
	uint32_t sw;

	ck_assert_ptr_nonnull(buf);
	fill(buf, n);
	sw = wps_crc32c_sw(0, buf, n);
	ck_assert_uint_eq(wps_crc32c(0, buf, n), sw);
	if (wps_crc32c_have_sse42())
		ck_assert_uint_eq(wps_crc32c_sse42(0, buf, n), sw);
	if (wps_crc32c_have_pclmul())
		ck_assert_uint_eq(wps_crc32c_pclmul(0, buf + 1, n - 1),
				  wps_crc32c_sw(0, buf + 1, n - 1));
	free(buf);
}
END_TEST

START_TEST(t_chaining)
{
	crc_fn fns[] = { wps_crc32c_sw, wps_crc32c, wps_crc32c_sse42,
			 wps_crc32c_pclmul };
	size_t n = 70000;
	uint8_t *buf = malloc(n);
	unsigned int f, i;

	ck_assert_ptr_nonnull(buf);
	fill(buf, n);
	for (f = 0; f < 4; f++) {
		if ((f == 2 && !wps_crc32c_have_sse42()) ||
		    (f == 3 && !wps_crc32c_have_pclmul()))
			continue;
		for (i = 0; i < 200; i++) {
			size_t len = rng() % n, cut = len ? rng() % len : 0;
			uint32_t whole = fns[f](0, buf, len);

			ck_assert_uint_eq(fns[f](fns[f](0, buf, cut), buf + cut,
						 len - cut),
					  whole);
		}
	}
	/* Any single-bit change changes the value. */
	for (i = 0; i < 64; i++) {
		size_t at = rng() % n;
		uint32_t before = wps_crc32c(0, buf, n);

		buf[at] ^= (uint8_t)(1u << (i & 7));
		ck_assert_uint_ne(wps_crc32c(0, buf, n), before);
	}
	ck_assert_uint_eq(wps_crc32c(0, buf, n), crc_bitwise(0, buf, n));
	free(buf);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("crc32c");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_vectors);
	tcase_add_test(tc, t_tables);
	tcase_add_test(tc, t_sw);
	tcase_add_test(tc, t_sse42);
	tcase_add_test(tc, t_pclmul);
	tcase_add_test(tc, t_dispatch_agrees_large);
	tcase_add_test(tc, t_chaining);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(suite)
