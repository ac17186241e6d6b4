/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CRC-32C implementations: slice-by-8 tables, SSE4.2, and SSE4.2 with three
 * interleaved streams. Every page of an image is checksummed on the put()
 * hot path, so the fast path matters: the crc32 instruction has a latency
 * of 3 cycles and a throughput of 1, and only independent streams reach
 * the throughput. The streams are merged with a carry-less multiply by
 * x^(8n) mod P (constants in crc32c_table.h).
 *
 * No state: the CPU is asked per call (__builtin_cpu_supports reads a word
 * that libgcc filled at start-up).
 */
#include "config.h"

#include <endian.h>
#include <string.h>

#include "stream/crc32c.h"
#include "stream/crc32c_table.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define WPS_CRC32C_X86 1
#endif

/* Interleave lengths: SHORT makes a 4 KiB block one round (3 * 1360 =
 * 4080), LONG amortizes the merge over big buffers. */
#define CRC32C_SHORT 1360
#define CRC32C_LONG 8192

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

uint32_t wps_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint32_t c = ~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = (c >> 8) ^ crc32c_sw_table[0][(c ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		uint64_t v = load_le64(p) ^ c;

		c = crc32c_sw_table[7][v & 0xff] ^
		    crc32c_sw_table[6][(v >> 8) & 0xff] ^
		    crc32c_sw_table[5][(v >> 16) & 0xff] ^
		    crc32c_sw_table[4][(v >> 24) & 0xff] ^
		    crc32c_sw_table[3][(v >> 32) & 0xff] ^
		    crc32c_sw_table[2][(v >> 40) & 0xff] ^
		    crc32c_sw_table[1][(v >> 48) & 0xff] ^
		    crc32c_sw_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		c = (c >> 8) ^ crc32c_sw_table[0][(c ^ *p++) & 0xff];
	return ~c;
}

#ifdef WPS_CRC32C_X86

bool wps_crc32c_have_sse42(void)
{
	return __builtin_cpu_supports("sse4.2");
}

bool wps_crc32c_have_pclmul(void)
{
	return __builtin_cpu_supports("sse4.2") &&
	       __builtin_cpu_supports("pclmul");
}

__attribute__((target("sse4.2")))
static uint64_t crc32c_tail_hw(uint64_t c, const uint8_t *p, size_t len)
{
	while (len >= 8) {
		c = _mm_crc32_u64(c, load_le64(p));
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return c;
}

__attribute__((target("sse4.2")))
uint32_t wps_crc32c_sse42(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = (uint32_t)~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	return ~(uint32_t)crc32c_tail_hw(c, p, len);
}

/*
 * Shift two raw CRC states forward over n and 2n zero bytes and add them:
 * with a, b reflected, clmul(a, k) reads as a 64-bit reflected operand
 * A*K*x, and crc32(0, v) = V*x^32 mod P, so k = x^(8n-33) mod P gives
 * A*x^(8n) mod P.
 */
__attribute__((target("sse4.2,pclmul")))
static inline uint64_t crc32c_merge(uint64_t c0, uint64_t c1, uint32_t k2,
				    uint32_t k1)
{
	__m128i a = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)c0),
					 _mm_cvtsi32_si128((int)k2), 0x00);
	__m128i b = _mm_clmulepi64_si128(_mm_cvtsi64_si128((long long)c1),
					 _mm_cvtsi32_si128((int)k1), 0x00);

	return _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(_mm_xor_si128(a, b)));
}

#define CRC32C_ROUND(n, k2, k1)                                            \
	while (len >= 3 * (n)) {                                           \
		uint64_t c1 = 0, c2 = 0;                                   \
		const uint8_t *end = p + (n);                              \
		do {                                                       \
			c = _mm_crc32_u64(c, load_le64(p));                \
			c1 = _mm_crc32_u64(c1, load_le64(p + (n)));        \
			c2 = _mm_crc32_u64(c2, load_le64(p + 2 * (n)));    \
			p += 8;                                            \
		} while (p < end);                                         \
		c = crc32c_merge(c, c1, k2, k1) ^ c2;                      \
		p += 2 * (n);                                              \
		len -= 3 * (n);                                            \
	}

__attribute__((target("sse4.2,pclmul")))
uint32_t wps_crc32c_pclmul(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t c = (uint32_t)~crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	CRC32C_ROUND(CRC32C_LONG, CRC32C_K2_8192, CRC32C_K_8192)
	CRC32C_ROUND(CRC32C_SHORT, CRC32C_K2_1360, CRC32C_K_1360)
	return ~(uint32_t)crc32c_tail_hw(c, p, len);
}

uint32_t wps_crc32c(uint32_t crc, const void *buf, size_t len)
{
	if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.2"))
		return wps_crc32c_pclmul(crc, buf, len);
	if (__builtin_cpu_supports("sse4.2"))
		return wps_crc32c_sse42(crc, buf, len);
	return wps_crc32c_sw(crc, buf, len);
}

#else /* !WPS_CRC32C_X86 */

bool wps_crc32c_have_sse42(void)
{
	return false;
}

bool wps_crc32c_have_pclmul(void)
{
	return false;
}

uint32_t wps_crc32c_sse42(uint32_t crc, const void *buf, size_t len)
{
	return wps_crc32c_sw(crc, buf, len);
}

uint32_t wps_crc32c_pclmul(uint32_t crc, const void *buf, size_t len)
{
	return wps_crc32c_sw(crc, buf, len);
}

uint32_t wps_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return wps_crc32c_sw(crc, buf, len);
}

#endif
