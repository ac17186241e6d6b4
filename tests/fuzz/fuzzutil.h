/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared plumbing of the libFuzzer targets (tests/fuzz/, docs/RELIABILITY.md
 * "Fuzzing"): a silent library context, inputs turned into files (memfd or
 * a private temporary directory), the compact "sparse file" encoding of
 * image inputs, and the per-input check that no fd leaked.
 *
 * Invariant: after every LLVMFuzzerTestOneInput the process holds exactly
 * the fds it held before (fz_end() aborts otherwise, so libFuzzer reports
 * the input as a crash); memory leaks are LeakSanitizer's job.
 */
#ifndef WPS_FUZZUTIL_H
#define WPS_FUZZUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

/* Largest file an image input may describe (sparse: costs no memory). */
#define FZ_FILE_MAX (64u << 20)
/* Bit 0 of the first byte of an image, ledger or wset input: recompute the
 * format's checksums after the mutation, so that inputs get past them. */
#define FZ_FIX_CRC 1u
/* Between the images of a chain input. */
#define FZ_SEP "\nWPSFZ--\n"
#define FZ_SEP_LEN 9u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The process-wide library context, logging nowhere (messages are still
 * formatted, so format bugs show). */
struct wps_ctx *fz_ctx(void);
/* A private directory (tmpfs when /dev/shm exists), removed at exit. */
const char *fz_dir(void);

/* Call at the start and at the end of every input. */
void fz_begin(void);
void fz_end(void);

/* Ledger and wset inputs are a flags byte and then a file: a memfd holding
 * the file (size >= 1), passed through fix(file, len) first when the
 * flags have FZ_FIX_CRC; its path in path. Aborts on failure. */
int fz_file_memfd(const uint8_t *data, size_t size,
		  void (*fix)(uint8_t *file, size_t len), char *path, size_t plen);
/* Store v little-endian at p (checksum fix-ups). */
void fz_put32(uint8_t *p, uint32_t v);

/* A memfd holding data; its path (/proc/self/fd/N) in path. -1 on error. */
int fz_memfd(const void *data, size_t len, char *path, size_t plen);

/*
 * Sparse encoding of a file, so that a 2 MiB-aligned image is a few
 * hundred bytes of input:
 *   u8 flags (FZ_FIX_CRC), u32le file size (capped at FZ_FILE_MAX),
 *   then runs { u32le offset, u16le length, bytes } until the input ends.
 * Bytes not covered by a run are zero; runs past the size are clipped.
 * Writes the file into fd (truncated first). 0 or -errno.
 */
int fz_sparse_write(int fd, const uint8_t *data, size_t len);
/* The inverse, for the seed generator: *out is malloc'd. */
int fz_sparse_encode(int fd, uint8_t flags, uint8_t **out, size_t *len);

/* Recompute the crc32c fields of an image file (superblock, region table,
 * blobs, trailer, footer) from whatever offsets it holds, within bounds. */
void fz_image_fix_crc(int fd);

#endif /* WPS_FUZZUTIL_H */
