/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CRC-32C (Castagnoli, as in iSCSI and ext4): the one checksum of the image
 * format. Chaining form: wps_crc32c(0, buf, n) is the standard value
 * (crc32c("123456789") == 0xE3069283) and
 * wps_crc32c(wps_crc32c(0, a, na), b, nb) equals the CRC of a||b.
 *
 * wps_crc32c() picks the fastest implementation the CPU offers on every
 * call (a feature test is one load); the others are exported so the tests
 * can check that every path agrees.
 */
#ifndef WPS_CRC32C_H
#define WPS_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t wps_crc32c(uint32_t crc, const void *buf, size_t len);

/* Table-driven (slice-by-8); runs anywhere. */
uint32_t wps_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* SSE4.2 crc32 instruction, one stream. Only if wps_crc32c_have_sse42(). */
uint32_t wps_crc32c_sse42(uint32_t crc, const void *buf, size_t len);
bool wps_crc32c_have_sse42(void);

/* SSE4.2 with three interleaved streams merged by PCLMULQDQ, which hides
 * the latency of the crc32 instruction. Only if wps_crc32c_have_pclmul(). */
uint32_t wps_crc32c_pclmul(uint32_t crc, const void *buf, size_t len);
bool wps_crc32c_have_pclmul(void);

#endif /* WPS_CRC32C_H */
