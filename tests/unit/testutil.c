/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test helpers. The writers here are deliberately simpler than the
 * reference guest's: engine tests must not depend on the guest, so that a
 * failure points at one module.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <dirent.h>

#include "tests/unit/testutil.h"
#include "wp/pagemap.h"

#define HUGE_2M (2ull << 20)

int tu_mem_new(struct tu_mem *m, enum tu_backing b, uint64_t size)
{
	int prot = PROT_READ | PROT_WRITE;

	memset(m, 0, sizeof(*m));
	m->backing = b;
	m->size = size;
	m->fd = -1;
	switch (b) {
	case TU_ANON:
	case TU_THP:
		m->map_size = size + HUGE_2M;
		m->map = mmap(NULL, m->map_size, prot,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m->map == MAP_FAILED)
			return -errno;
		m->p = (uint8_t *)(((uintptr_t)m->map + HUGE_2M - 1) &
				   ~(HUGE_2M - 1));
		madvise(m->p, size, b == TU_THP ? MADV_HUGEPAGE :
						  MADV_NOHUGEPAGE);
		return 0;
	case TU_MEMFD:
	case TU_HUGETLB:
		m->fd = memfd_create("tu-guest", MFD_CLOEXEC |
				     (b == TU_HUGETLB ? MFD_HUGETLB : 0));
		if (m->fd < 0)
			return -errno;
		if (ftruncate(m->fd, size))
			goto fail;
		m->map_size = size;
		m->map = mmap(NULL, size, prot, MAP_SHARED, m->fd, 0);
		if (m->map == MAP_FAILED)
			goto fail;
		m->p = m->map;
		return 0;
	}
	return -EINVAL;
fail:
	close(m->fd);
	m->fd = -1;
	return -errno;
}

void tu_mem_free(struct tu_mem *m)
{
	if (m->map && m->map != MAP_FAILED)
		munmap(m->map, m->map_size);
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

void tu_mem_populate(struct tu_mem *m, unsigned int pct)
{
	uint64_t b, nb = m->size / 4096;

	for (b = 0; b < nb; b++) {
		uint64_t run = b / 16;

		if ((run * 2654435761u) % 100 >= pct)
			continue;
		memset(m->p + b * 4096, (int)(b % 251) + 1, 4096);
	}
}

void tu_mem_region(const struct tu_mem *m, struct wps_region *r)
{
	memset(r, 0, sizeof(*r));
	r->host_addr = (uintptr_t)m->p;
	r->size = m->size;
	r->fd = -1;
	switch (m->backing) {
	case TU_ANON:
	case TU_THP:
		r->backing = WPS_BACKING_ANON;
		r->page_size = 4096;
		break;
	case TU_MEMFD:
		r->backing = WPS_BACKING_MEMFD;
		r->page_size = 4096;
		r->fd = m->fd;
		break;
	case TU_HUGETLB:
		r->backing = WPS_BACKING_HUGETLB;
		r->page_size = HUGE_2M;
		r->fd = m->fd;
		break;
	}
}

struct tu_writer {
	struct tu_writers *ws;
	pthread_t thr;
	uint64_t seed;
	uint64_t writes;
};

struct tu_writers {
	uint8_t *p;
	uint64_t size;
	unsigned int n;
	int stop, pause, parked;
	struct tu_writer w[8];
};

static void *writer_main(void *arg)
{
	struct tu_writer *w = arg;
	struct tu_writers *ws = w->ws;
	uint64_t x = w->seed | 1;

	while (!__atomic_load_n(&ws->stop, __ATOMIC_ACQUIRE)) {
		uint64_t off;

		if (__atomic_load_n(&ws->pause, __ATOMIC_ACQUIRE)) {
			__atomic_fetch_add(&ws->parked, 1, __ATOMIC_ACQ_REL);
			while (__atomic_load_n(&ws->pause, __ATOMIC_ACQUIRE) &&
			       !__atomic_load_n(&ws->stop, __ATOMIC_ACQUIRE))
				sched_yield();
			__atomic_fetch_sub(&ws->parked, 1, __ATOMIC_ACQ_REL);
			continue;
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		off = (x % (ws->size / 8)) * 8;
		*(volatile uint64_t *)(ws->p + off) = x;
		w->writes++;
	}
	return NULL;
}

struct tu_writers *tu_writers_start(void *p, uint64_t size, unsigned int n)
{
	struct tu_writers *ws = calloc(1, sizeof(*ws));
	unsigned int i;

	ck_assert_ptr_nonnull(ws);
	ck_assert_uint_le(n, 8);
	ws->p = p;
	ws->size = size;
	ws->n = n;
	for (i = 0; i < n; i++) {
		ws->w[i].ws = ws;
		ws->w[i].seed = 0x9E3779B97F4A7C15ull * (i + 1);
		ck_assert_int_eq(pthread_create(&ws->w[i].thr, NULL, writer_main,
						&ws->w[i]), 0);
	}
	return ws;
}

void tu_writers_pause(struct tu_writers *ws)
{
	__atomic_store_n(&ws->pause, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&ws->parked, __ATOMIC_ACQUIRE) != (int)ws->n)
		sched_yield();
}

void tu_writers_resume(struct tu_writers *ws)
{
	__atomic_store_n(&ws->pause, 0, __ATOMIC_RELEASE);
}

uint64_t tu_writers_stop(struct tu_writers *ws)
{
	uint64_t total = 0;
	unsigned int i;

	__atomic_store_n(&ws->stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < ws->n; i++) {
		pthread_join(ws->w[i].thr, NULL);
		total += ws->w[i].writes;
	}
	free(ws);
	return total;
}

int tu_count_wp(const void *p, uint64_t size, uint64_t *count)
{
	struct wps_pagemap pm;
	struct wps_ctx *ctx;
	int ret;

	ret = wps_ctx_new(&ctx);
	if (ret)
		return ret;
	ret = wps_pagemap_open(ctx, 0, &pm);
	if (!ret) {
		ret = wps_pagemap_count_wp(&pm, (uintptr_t)p, (uintptr_t)p + size,
					   count);
		wps_pagemap_close(&pm);
	}
	wps_ctx_free(ctx);
	return ret;
}

int tu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

/* One log per test process (Check forks each test), guarded because the
 * library logs from its own threads. */
static struct {
	pthread_mutex_t lock;
	size_t len;
	char text[1 << 16];
} tu_log = { .lock = PTHREAD_MUTEX_INITIALIZER };

void tu_log_capture(void *arg, int level, const char *msg)
{
	pthread_mutex_lock(&tu_log.lock);
	tu_log.len += (size_t)snprintf(tu_log.text + tu_log.len,
				       sizeof(tu_log.text) - tu_log.len,
				       "%s\n", msg);
	if (tu_log.len >= sizeof(tu_log.text))
		tu_log.len = sizeof(tu_log.text) - 1;
	pthread_mutex_unlock(&tu_log.lock);
}

struct wps_ctx *tu_ctx_capture(void)
{
	struct wps_ctx *ctx;

	if (wps_ctx_new(&ctx))
		return NULL;
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
	return ctx;
}

bool tu_logged(const char *needle)
{
	bool r;

	pthread_mutex_lock(&tu_log.lock);
	r = strstr(tu_log.text, needle) != NULL;
	pthread_mutex_unlock(&tu_log.lock);
	return r;
}

const char *tu_log_text(void)
{
	return tu_log.text;
}

void tu_log_reset(void)
{
	pthread_mutex_lock(&tu_log.lock);
	tu_log.len = 0;
	tu_log.text[0] = '\0';
	pthread_mutex_unlock(&tu_log.lock);
}

uint64_t tu_mix64(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

char *tu_tmpdir(void)
{
	char tmpl[] = "/var/tmp/wpsnap-test.XXXXXX";
	char *d = mkdtemp(tmpl);

	ck_assert_ptr_nonnull(d);
	return strdup(d);
}

static int rm_cb(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	return remove(path);
}

void tu_rmtree(const char *dir)
{
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_dir;

void tu_dir_setup(void)
{
	tu_dir = tu_tmpdir();
}

void tu_dir_teardown(void)
{
	tu_rmtree(tu_dir);
	free(tu_dir);
	tu_dir = NULL;
}

/* Skips counted across Check's forked test children: one shared page. */
static unsigned int *skips;

int tu_skip_init(void)
{
	skips = mmap(NULL, sizeof(*skips), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (skips == MAP_FAILED) {
		skips = NULL;
		fprintf(stderr, "testutil: cannot map the skip counter: %s\n",
			strerror(errno));
		return -errno;
	}
	return 0;
}

void tu_skip_note(const char *test, const char *fmt, ...)
{
	va_list ap;

	printf("SKIP %s: ", test);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (skips)
		__atomic_fetch_add(skips, 1, __ATOMIC_RELAXED);
}

unsigned int tu_skipped(void)
{
	return skips ? __atomic_load_n(skips, __ATOMIC_RELAXED) : 0;
}

int tu_main_result(SRunner *sr)
{
	int run = srunner_ntests_run(sr), skipped = (int)tu_skipped();

	if (skips)
		munmap(skips, sizeof(*skips));
	skips = NULL;
	if (srunner_ntests_failed(sr))
		return EXIT_FAILURE;
	if (skipped && skipped >= run) {
		printf("SKIP: all %d tests skipped\n", run);
		return 77;
	}
	if (skipped)
		printf("%d of %d tests skipped\n", skipped, run);
	return EXIT_SUCCESS;
}
