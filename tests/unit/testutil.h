/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the Check tests: guest-like memory of each backing,
 * writer threads that can be paused, and leak checks. */
#ifndef WPS_TESTUTIL_H
#define WPS_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <wpsnap/wpsnap.h>

enum tu_backing { TU_ANON, TU_THP, TU_MEMFD, TU_HUGETLB };

struct tu_mem {
	enum tu_backing backing;
	uint8_t *p;
	uint64_t size;
	void *map;              /* what to munmap */
	uint64_t map_size;
	int fd;
};

int tu_mem_new(struct tu_mem *m, enum tu_backing b, uint64_t size);
void tu_mem_free(struct tu_mem *m);
/* Write pct% of the 4 KiB blocks (in runs of 16) with non-zero data. */
void tu_mem_populate(struct tu_mem *m, unsigned int pct);
void tu_mem_region(const struct tu_mem *m, struct wps_region *r);

struct tu_writers;
/* Threads writing 8-byte stamps at random offsets of [p, p+size). */
struct tu_writers *tu_writers_start(void *p, uint64_t size, unsigned int n);
void tu_writers_pause(struct tu_writers *w);
void tu_writers_resume(struct tu_writers *w);
/* Stop and join; returns the number of writes done. */
uint64_t tu_writers_stop(struct tu_writers *w);

/* Pages of [p, p+size) whose pagemap entry still has the uffd-wp bit. */
int tu_count_wp(const void *p, uint64_t size, uint64_t *count);
/* Open fds of this process. */
int tu_count_fds(void);

/* A log function for wps_ctx_set_log_fn that keeps what it is given, so
 * tests can assert that an error names the file and the cause. */
void tu_log_capture(void *arg, int level, const char *msg);
bool tu_logged(const char *needle);
const char *tu_log_text(void);
void tu_log_reset(void);
/* A new context logging into tu_log_capture, the log emptied; NULL if
 * the context cannot be made (the caller's assert says so). */
struct wps_ctx *tu_ctx_capture(void);

/* splitmix64: deterministic test data from an index. */
uint64_t tu_mix64(uint64_t x);

/* A directory for test files on a disk filesystem; removed by caller. */
char *tu_tmpdir(void);
void tu_rmtree(const char *dir);

/* A fresh tu_tmpdir() per test, as a Check fixture:
 * tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown). */
extern char *tu_dir;
void tu_dir_setup(void);
void tu_dir_teardown(void);

/*
 * Skips. A test that cannot run here (no huge pages, no SSE4.2, cannot
 * mount) says why and returns: TU_SKIP("hugetlb: %s", why). It is then
 * counted: Check runs each test in a child process, so the count lives in
 * a page shared with it (tu_skip_init, called by TU_MAIN before the run).
 * The program exits 77 (automake's SKIP) when every test it ran skipped,
 * and prints "N of M tests skipped" when some did, so an all-skipped run
 * is never reported as PASS.
 */
int tu_skip_init(void);
void tu_skip_note(const char *test, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
unsigned int tu_skipped(void);
#define TU_SKIP(...)                                                       \
	do {                                                               \
		tu_skip_note(__func__, __VA_ARGS__);                       \
		return;                                                    \
	} while (0)

/* Exit status: failure, else 77 if every test skipped, else success. */
int tu_main_result(SRunner *sr);

#define TU_MAIN(suite_fn)                                                  \
	int main(void)                                                     \
	{                                                                  \
		SRunner *sr;                                               \
		int ret;                                                   \
		if (tu_skip_init())                                        \
			return EXIT_FAILURE;                               \
		sr = srunner_create(suite_fn());                           \
		srunner_run_all(sr, CK_NORMAL);                            \
		ret = tu_main_result(sr);                                  \
		srunner_free(sr);                                          \
		return ret;                                                \
	}

#endif
