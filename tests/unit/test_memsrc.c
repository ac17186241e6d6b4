/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest-memory reader (base/memsrc.h) on each of its sources: this
 * process's memory, a forked child's anonymous memory (process_vm_readv)
 * and a child's memfd (our own mapping). The child writes a pattern of
 * its own after the fork, so reading the parent's copy by mistake shows.
 * Errors: the exact errno and the message naming the first address not
 * read (an unmapped page, a process that is gone, a range outside the
 * source).
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/memsrc.h"
#include "tests/unit/testutil.h"

#define SIZE (1u << 20)
#define PAGE 4096u

static void fill(uint8_t *p, uint64_t size, uint64_t seed)
{
	uint64_t i, v;

	for (i = 0; i < size; i += 8) {
		v = tu_mix64(seed + i);
		memcpy(p + i, &v, 8);
	}
}

/* A child that overwrites [p, p+size) with its own pattern, says so, and
 * lives until the parent closes its end of the pipe. */
struct child {
	pid_t pid;
	int done;               /* write end: closing it ends the child */
};

static void child_start(struct child *c, uint8_t *p, uint64_t size,
			uint64_t seed)
{
	int ready[2], done[2];
	char b;

	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(done), 0);
	c->pid = fork();
	ck_assert_int_ge(c->pid, 0);
	if (!c->pid) {
		close(ready[0]);
		close(done[1]);
		if (p)
			fill(p, size, seed);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		while (read(done[0], &b, 1) > 0)
			;
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	ck_assert_int_eq(read(ready[0], &b, 1), 1);
	close(ready[0]);
	c->done = done[1];
}

static void child_stop(struct child *c)
{
	int status;

	close(c->done);
	ck_assert_int_eq(waitpid(c->pid, &status, 0), c->pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A sink that keeps region 0 and the largest put. */
struct capture {
	uint8_t *data;
	size_t max_put;
	unsigned int puts;
};

static int cap_put(void *priv, enum wps_lane lane, unsigned int r,
		   uint64_t off, const void *src, size_t len)
{
	struct capture *c = priv;

	ck_assert_uint_eq(r, 7);
	ck_assert_uint_le(off + len, SIZE);
	memcpy(c->data + off, src, len);
	if (len > c->max_put)
		c->max_put = len;
	c->puts++;
	return 0;
}

static int cap_flush(void *priv, enum wps_lane lane)
{
	return 0;
}

static const struct wps_sink_ops cap_ops = { .put = cap_put,
					     .flush = cap_flush };

static struct wps_ctx *new_ctx(void)
{
	struct wps_ctx *ctx;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
	return ctx;
}

static struct wps_region region_of(const struct tu_mem *m)
{
	struct wps_region r;

	tu_mem_region(m, &r);
	return r;
}

/* Reads [0, SIZE) of m in pieces that straddle pages, and through a
 * sink with a bounce buffer smaller than the run. */
static void check_content(const struct wps_memsrc *m, const uint8_t *want)
{
	struct capture c = { .data = calloc(1, SIZE) };
	struct wps_sink s = { &cap_ops, &c };
	uint8_t *buf = malloc(SIZE), *bounce = malloc(64 << 10);
	uint64_t off;

	ck_assert_ptr_nonnull(buf);
	for (off = 0; off < SIZE; off += 3 * PAGE + 100) {
		uint64_t n = SIZE - off < 3 * PAGE + 100 ? SIZE - off
							 : 3 * PAGE + 100;

		ck_assert_int_eq(wps_memsrc_read(m, off, buf + off, n), 0);
	}
	ck_assert(!memcmp(buf, want, SIZE));
	ck_assert_int_eq(wps_memsrc_put(m, &s, WPS_LANE_SWEEP, 7, 0, SIZE,
					bounce, 64 << 10), 0);
	ck_assert(!memcmp(c.data, want, SIZE));
	if (wps_memsrc_direct(m, 0)) {
		ck_assert_uint_eq(c.puts, 1);   /* zero-copy: one put */
	} else {
		ck_assert_uint_eq(c.max_put, 64 << 10);
		ck_assert_uint_eq(c.puts, SIZE / (64 << 10));
	}
	free(c.data);
	free(buf);
	free(bounce);
}

START_TEST(local_memory_is_direct)
{
	struct wps_ctx *ctx = new_ctx();
	struct tu_mem mem;
	struct wps_region r;
	struct wps_memsrc m;
	uint8_t b[8];

	ck_assert_int_eq(tu_mem_new(&mem, TU_ANON, SIZE), 0);
	fill(mem.p, SIZE, 1);
	r = region_of(&mem);
	ck_assert_int_eq(wps_memsrc_open(&m, ctx, 0, &r), 0);
	ck_assert_ptr_eq(wps_memsrc_direct(&m, 8192), mem.p + 8192);
	check_content(&m, mem.p);

	/* Outside the range: EINVAL, said with the offset and the size,
	 * and nothing copied. */
	memset(b, 0xaa, sizeof(b));
	ck_assert_int_eq(wps_memsrc_read(&m, SIZE - 4, b, 8), -EINVAL);
	ck_assert_uint_eq(b[0], 0xaa);
	ck_assert_msg(tu_logged("8 bytes at offset 1048572 are outside its "
				"1048576-byte range"), "%s", tu_log_text());
	wps_memsrc_close(&m);
	ck_assert_ptr_null(m.map);
	tu_mem_free(&mem);
	wps_ctx_free(ctx);
}
END_TEST

/*
 * A child's memory of backing b, written by the child after the fork:
 * anonymous memory is copied through the kernel (no direct pointer; the
 * parent's own copy holds another pattern, so reading it would show),
 * a memfd is read through our own mapping of it, not the caller's.
 */
static void check_child(enum tu_backing b)
{
	struct wps_ctx *ctx = new_ctx();
	struct tu_mem mem;
	struct wps_region r;
	struct wps_memsrc m;
	struct child c;
	uint8_t *want = malloc(SIZE);

	ck_assert_int_eq(tu_mem_new(&mem, b, SIZE), 0);
	fill(mem.p, SIZE, 1);
	fill(want, SIZE, 2);
	child_start(&c, mem.p, SIZE, 2);
	r = region_of(&mem);
	ck_assert_int_eq(wps_memsrc_open(&m, ctx, c.pid, &r), 0);
	if (b == TU_ANON) {
		ck_assert_ptr_null(wps_memsrc_direct(&m, 0));
	} else {
		ck_assert_int_ge(r.fd, 0);
		ck_assert_ptr_nonnull(m.map);
		ck_assert_ptr_ne(wps_memsrc_direct(&m, 0), mem.p);
	}
	check_content(&m, want);
	ck_assert_str_eq(tu_log_text(), "");
	wps_memsrc_close(&m);
	ck_assert_ptr_null(m.map);
	child_stop(&c);
	free(want);
	tu_mem_free(&mem);
	wps_ctx_free(ctx);
}

START_TEST(remote_anonymous_memory)
{
	check_child(TU_ANON);
}
END_TEST

START_TEST(remote_memfd_is_mapped)
{
	check_child(TU_MEMFD);
}
END_TEST

/*
 * The middle page of three is unmapped in the child: a read stops at it
 * with EFAULT and says which address, try_read says nothing; once the
 * child is gone, ESRCH.
 */
START_TEST(unmapped_and_gone)
{
	struct wps_ctx *ctx = new_ctx();
	struct wps_memsrc m;
	struct child c;
	uint8_t *p, buf[3 * PAGE];
	char want[128];
	pid_t pid;

	p = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	memset(p, 0x5a, 3 * PAGE);
	ck_assert_int_eq(munmap(p + PAGE, PAGE), 0);
	child_start(&c, NULL, 0, 0);
	pid = c.pid;
	wps_memsrc_init_remote(&m, ctx, pid, (uintptr_t)p, 3 * PAGE);

	ck_assert_int_eq(wps_memsrc_read(&m, 0, buf, PAGE), 0);
	ck_assert_uint_eq(buf[PAGE - 1], 0x5a);
	ck_assert_int_eq(wps_memsrc_try_read(&m, 0, buf, 3 * PAGE), -EFAULT);
	ck_assert_str_eq(tu_log_text(), "");
	ck_assert_int_eq(wps_memsrc_read(&m, 0, buf, 3 * PAGE), -EFAULT);
	snprintf(want, sizeof(want), "reading process %d at 0x%llx: %s",
		 (int)pid, (unsigned long long)(uintptr_t)(p + PAGE),
		 strerror(EFAULT));
	ck_assert_msg(tu_logged(want), "want \"%s\", got \"%s\"", want,
		      tu_log_text());

	child_stop(&c);
	tu_log_reset();
	ck_assert_int_eq(wps_memsrc_read(&m, 0, buf, PAGE), -ESRCH);
	snprintf(want, sizeof(want), "reading process %d at 0x%llx: %s",
		 (int)pid, (unsigned long long)(uintptr_t)p, strerror(ESRCH));
	ck_assert_msg(tu_logged(want), "want \"%s\", got \"%s\"", want,
		      tu_log_text());
	wps_memsrc_close(&m);
	munmap(p, PAGE);
	munmap(p + 2 * PAGE, PAGE);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *memsrc_suite(void)
{
	Suite *s = suite_create("memsrc");
	TCase *tc = tcase_create("memsrc");

	tcase_add_test(tc, local_memory_is_direct);
	tcase_add_test(tc, remote_anonymous_memory);
	tcase_add_test(tc, remote_memfd_is_mapped);
	tcase_add_test(tc, unmapped_and_gone);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(memsrc_suite)
