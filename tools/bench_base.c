/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap bench, the machine side (see bench_base.h): baselines measured
 * without wpsnap, in the same run, so that every wpsnap figure can be
 * given as a ratio to what this machine does right now.
 *
 * Owns: the baseline buffers (struct bench_buf, mapped and unmapped within
 * one call), the temporary O_DIRECT files (unlinked at creation, deleted
 * by close), one userfaultfd for the raw write-protect, one forked child.
 *
 * AIO goes through the kernel's io_setup/io_submit/io_getevents directly
 * (libaio is a thin wrapper over them): the bench then needs no link
 * dependency of its own beyond the library and the guest.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/memfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools/bench_base.h"
#include "wp/compat.h"

#define PAGE_4K 4096u
#define HUGE_2M (2u << 20)
#define MiB (1024.0 * 1024.0)

/* ------------------------------------------------------------------ */
/* Buffers of a guest backing                                          */
/* ------------------------------------------------------------------ */

int bench_buf_map(struct bench_buf *b, enum rguest_backing backing,
		  uint64_t size)
{
	bool huge = backing == RGUEST_THP || backing == RGUEST_HUGETLB;
	uint32_t ps = huge ? HUGE_2M : PAGE_4K;
	unsigned int mfd_flags = MFD_CLOEXEC;
	uint8_t *a;
	int ret;

	memset(b, 0, sizeof(*b));
	b->fd = -1;
	b->backing = backing;
	b->page_size = ps;
	b->len = (size + ps - 1) / ps * ps;
	if (!b->len)
		return -EINVAL;

	switch (backing) {
	case RGUEST_ANON:
	case RGUEST_THP:
		/* THP wants 2 MiB alignment: over-map by one huge page and
		 * keep the whole mapping as the owner's (one munmap). */
		b->map_len = b->len + (backing == RGUEST_THP ? HUGE_2M : 0);
		b->map = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b->map == MAP_FAILED) {
			b->map = NULL;
			return -errno;
		}
		a = (uint8_t *)(((uintptr_t)b->map + ps - 1) & ~((uintptr_t)ps - 1));
		b->addr = a;
		if (madvise(a, b->len, backing == RGUEST_THP ?
			    MADV_HUGEPAGE : MADV_NOHUGEPAGE) &&
		    backing == RGUEST_THP) {
			ret = -errno;
			goto fail;
		}
		return 0;
	case RGUEST_HUGETLB:
		mfd_flags |= MFD_HUGETLB | MFD_HUGE_2MB;
		/* fall through */
	case RGUEST_MEMFD:
		b->fd = memfd_create("wpsnap-bench", mfd_flags);
		if (b->fd < 0) {
			ret = -errno;
			goto fail;
		}
		if (ftruncate(b->fd, (off_t)b->len)) {
			ret = huge && (errno == ENOMEM || errno == EINVAL) ?
				-ENOSPC : -errno;
			goto fail;
		}
		b->map_len = b->len;
		b->map = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE,
			      MAP_SHARED, b->fd, 0);
		if (b->map == MAP_FAILED) {
			/* hugetlb reserves at mmap: ENOMEM is a short pool */
			ret = huge && errno == ENOMEM ? -ENOSPC : -errno;
			b->map = NULL;
			goto fail;
		}
		b->addr = b->map;
		return 0;
	}
	ret = -EINVAL;
fail:
	bench_buf_unmap(b);
	return ret;
}

uint64_t bench_buf_populated(const struct bench_buf *b, unsigned int pct)
{
	uint64_t pages = b->len / b->page_size;

	return (pages * pct + 50) / 100 * b->page_size;
}

void bench_buf_populate(struct bench_buf *b, unsigned int pct)
{
	uint64_t n = bench_buf_populated(b, pct), off;

	/* Whole pages of non-zero bytes, like the guest's blocks. */
	for (off = 0; off < n; off += PAGE_4K)
		memset(b->addr + off, (int)(0x5a ^ (off >> 12 & 0x7f)) | 1,
		       PAGE_4K);
}

void bench_buf_unmap(struct bench_buf *b)
{
	if (b->map)
		munmap(b->map, b->map_len);
	if (b->fd >= 0)
		close(b->fd);
	b->map = NULL;
	b->addr = NULL;
	b->fd = -1;
}

/* ------------------------------------------------------------------ */
/* O_DIRECT files and kernel AIO                                       */
/* ------------------------------------------------------------------ */

int bench_tmpfile(const char *dir, int *fd_out)
{
	char path[4096];
	int fd, ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/wpsnap-bench.XXXXXX",
			     dir) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = mkostemp(path, O_CLOEXEC | O_DIRECT);
	if (fd < 0)
		return -errno;
	/* Unlinked now: whatever happens, close deletes it. */
	if (unlink(path)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	*fd_out = fd;
	return 0;
}

int bench_dir_check(const char *dir)
{
	void *buf = NULL;
	ssize_t n;
	int fd = -1, ret;

	ret = bench_tmpfile(dir, &fd);
	if (ret)
		return ret;
	ret = -posix_memalign(&buf, PAGE_4K, 4 * PAGE_4K);
	if (ret)
		goto out;
	memset(buf, 0xa5, 4 * PAGE_4K);
	n = pwrite(fd, buf, 4 * PAGE_4K, 0);
	if (n < 0)
		ret = -errno;
	else if (n != 4 * PAGE_4K)
		ret = -EIO;
out:
	free(buf);
	close(fd);
	return ret;
}

static long sys_io_setup(unsigned int nr, aio_context_t *ctx)
{
	return syscall(SYS_io_setup, nr, ctx);
}

static long sys_io_destroy(aio_context_t ctx)
{
	return syscall(SYS_io_destroy, ctx);
}

static long sys_io_submit(aio_context_t ctx, long nr, struct iocb **cbs)
{
	return syscall(SYS_io_submit, ctx, nr, cbs);
}

static long sys_io_getevents(aio_context_t ctx, long min_nr, long nr,
			     struct io_event *ev)
{
	return syscall(SYS_io_getevents, ctx, min_nr, nr, ev, NULL);
}

/* One request slot of the ring. */
struct aio_slot {
	struct iocb cb;
	const uint8_t *buf;
	uint64_t off;
	uint64_t len;
	bool busy;      /* submitted, or waiting to be (re)submitted */
	bool queued;    /* waiting to be (re)submitted */
};

/* Where the next request comes from. */
struct aio_cursor {
	const struct bench_extent *ext;
	size_t n, i;
	uint64_t in_ext;        /* bytes of ext[i] already handed out */
	uint64_t file_off;
};

static bool cursor_next(struct aio_cursor *c, struct aio_slot *s)
{
	uint64_t len;

	while (c->i < c->n && c->in_ext == c->ext[c->i].len) {
		c->i++;
		c->in_ext = 0;
	}
	if (c->i == c->n)
		return false;
	len = c->ext[c->i].len - c->in_ext;
	if (len > BENCH_IO_SIZE)
		len = BENCH_IO_SIZE;
	s->buf = (const uint8_t *)c->ext[c->i].addr + c->in_ext;
	s->off = c->file_off;
	s->len = len;
	s->busy = s->queued = true;
	c->in_ext += len;
	c->file_off += len;
	return true;
}

/* Submit every queued slot; io_submit may take fewer than asked. */
static int submit_queued(aio_context_t actx, int fd, struct aio_slot *slot,
			 unsigned int *inflight)
{
	struct iocb *cbs[BENCH_IO_DEPTH];
	unsigned int i, nr = 0, done = 0;
	long r;

	for (i = 0; i < BENCH_IO_DEPTH; i++) {
		struct aio_slot *s = &slot[i];

		if (!s->queued)
			continue;
		memset(&s->cb, 0, sizeof(s->cb));
		s->cb.aio_data = i;
		s->cb.aio_lio_opcode = IOCB_CMD_PWRITE;
		s->cb.aio_fildes = (uint32_t)fd;
		s->cb.aio_buf = (uint64_t)(uintptr_t)s->buf;
		s->cb.aio_nbytes = s->len;
		s->cb.aio_offset = (int64_t)s->off;
		cbs[nr++] = &s->cb;
	}
	while (done < nr) {
		r = sys_io_submit(actx, (long)(nr - done), cbs + done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EAGAIN;
		while (r-- > 0) {
			slot[cbs[done]->aio_data].queued = false;
			done++;
			(*inflight)++;
		}
	}
	return 0;
}

int bench_aio_write(int fd, const struct bench_extent *ext, size_t n)
{
	struct aio_cursor cur = { .ext = ext, .n = n };
	struct aio_slot slot[BENCH_IO_DEPTH];
	struct io_event ev[BENCH_IO_DEPTH];
	aio_context_t actx = 0;
	unsigned int inflight = 0;
	uint64_t total = 0;
	size_t i;
	long got, k;
	int ret;

	memset(slot, 0, sizeof(slot));
	/*
	 * Size the file first, as the image writer does (no fallocate: the
	 * blocks are still allocated by the writes). ext4 forces an O_DIRECT
	 * write that extends i_size to complete synchronously, which would
	 * turn depth 16 into depth 1 and measure that instead of the disk.
	 */
	for (i = 0; i < n; i++)
		total += ext[i].len;
	if (ftruncate(fd, (off_t)total))
		return -errno;
	if (sys_io_setup(BENCH_IO_DEPTH, &actx) < 0)
		return -errno;
	for (;;) {
		for (i = 0; i < BENCH_IO_DEPTH; i++)
			if (!slot[i].busy && !cursor_next(&cur, &slot[i]))
				break;
		ret = submit_queued(actx, fd, slot, &inflight);
		if (ret)
			goto out;
		if (!inflight)
			break;
		got = sys_io_getevents(actx, 1, BENCH_IO_DEPTH, ev);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			ret = -errno;
			goto out;
		}
		for (k = 0; k < got; k++) {
			struct aio_slot *s = &slot[ev[k].data];
			int64_t res = ev[k].res;

			inflight--;
			if (res < 0) {
				ret = (int)res;
				goto out;
			}
			/* A short O_DIRECT write keeps block alignment;
			 * anything else means the device gave up. */
			if (res == 0 || (uint64_t)res > s->len ||
			    (res & 511)) {
				ret = -EIO;
				goto out;
			}
			if ((uint64_t)res < s->len) {
				s->buf += res;
				s->off += (uint64_t)res;
				s->len -= (uint64_t)res;
				s->queued = true;
				continue;
			}
			s->busy = false;
		}
	}
	ret = fdatasync(fd) ? -errno : 0;
out:
	/* io_destroy waits for whatever is still in flight. */
	sys_io_destroy(actx);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Baselines                                                           */
/* ------------------------------------------------------------------ */

#define RAW_BUF (16u << 20)

int bench_raw_write(const char *dir, uint64_t bytes, double *mib_s)
{
	struct bench_extent *ext = NULL;
	uint64_t buf_len, left, t0, t1;
	size_t n = 0, cap;
	uint8_t *buf;
	int fd = -1, ret;

	bytes = bytes / PAGE_4K * PAGE_4K;
	if (!bytes)
		return -EINVAL;
	buf_len = bytes < RAW_BUF ? bytes : RAW_BUF;
	buf = mmap(NULL, buf_len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return -errno;
	memset(buf, 0x6b, buf_len);
	cap = (size_t)((bytes + buf_len - 1) / buf_len);
	ext = calloc(cap, sizeof(*ext));
	if (!ext) {
		ret = -ENOMEM;
		goto out;
	}
	for (left = bytes; left; n++) {
		ext[n].addr = buf;
		ext[n].len = left < buf_len ? left : buf_len;
		left -= ext[n].len;
	}
	ret = bench_tmpfile(dir, &fd);
	if (ret)
		goto out;
	t0 = wps_now_ns();
	ret = bench_aio_write(fd, ext, n);
	t1 = wps_now_ns();
	if (!ret)
		*mib_s = bytes / MiB / ((t1 - t0) / 1e9);
out:
	if (fd >= 0)
		close(fd);
	free(ext);
	munmap(buf, buf_len);
	return ret;
}

#define MEMCPY_REPS 4u
#define MEMCPY_TRIES 3u

int bench_memcpy(uint64_t bytes, double *mib_s)
{
	uint8_t *src, *dst;
	uint64_t t0, dt, best = UINT64_MAX;
	unsigned int t, r;
	int ret = 0;

	src = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return -errno;
	dst = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED) {
		ret = -errno;
		goto out_src;
	}
	/* Populate both first: page faults are not memcpy bandwidth. */
	memset(src, 0x3c, bytes);
	memset(dst, 0, bytes);
	for (t = 0; t < MEMCPY_TRIES; t++) {
		t0 = wps_now_ns();
		for (r = 0; r < MEMCPY_REPS; r++) {
			memcpy(dst, src, bytes);
			__asm__ __volatile__("" ::: "memory");
		}
		dt = wps_now_ns() - t0;
		if (dt < best)
			best = dt;
	}
	*mib_s = (double)bytes * MEMCPY_REPS / MiB / (best / 1e9);
	munmap(dst, bytes);
out_src:
	munmap(src, bytes);
	return ret;
}

/* A userfaultfd of our own: /dev/userfaultfd, else the syscall. */
static int uffd_open(int *fd_out)
{
	int dev, fd;

	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0) {
			*fd_out = fd;
			return 0;
		}
	}
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	*fd_out = fd;
	return 0;
}

int bench_wp_raw(enum rguest_backing backing, uint64_t size,
		 unsigned int pct, double *ms)
{
	bool shared = backing == RGUEST_MEMFD || backing == RGUEST_HUGETLB;
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_WP };
	struct uffdio_writeprotect wp = { .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	struct bench_buf b;
	bool registered = false;
	uint64_t t0, t1;
	int uffd = -1, ret;

	ret = bench_buf_map(&b, backing, size);
	if (ret)
		return ret;
	bench_buf_populate(&b, pct);

	ret = uffd_open(&uffd);
	if (ret)
		goto out;
	/* What the engine asks for, per backing (wp/engine.c). */
	api.features = shared ? UFFD_FEATURE_WP_HUGETLBFS_SHMEM :
		UFFD_FEATURE_WP_UNPOPULATED;
	if (ioctl(uffd, UFFDIO_API, &api)) {
		ret = errno == EINVAL ? -EOPNOTSUPP : -errno;
		goto out;
	}
	reg.range.start = (uint64_t)(uintptr_t)b.addr;
	reg.range.len = b.len;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		ret = -errno;
		goto out;
	}
	registered = true;

	wp.range = reg.range;
	t0 = wps_now_ns();
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)) {
		ret = -errno;
		goto out;
	}
	t1 = wps_now_ns();
	*ms = (t1 - t0) / 1e6;
	wp.mode = 0;
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp))
		ret = -errno;
out:
	if (registered && ioctl(uffd, UFFDIO_UNREGISTER, &reg.range) && !ret)
		ret = -errno;
	if (uffd >= 0)
		close(uffd);
	bench_buf_unmap(&b);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static inline uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/*
 * The parent writes one byte into nr distinct random populated pages
 * while the child holds the pre-fork copy; each write is a CoW fault.
 * Picks happen before the clock starts for each one.
 */
static int time_cow(struct bench_buf *b, uint64_t pop_pages,
		    unsigned int nr, double *cow_us)
{
	uint64_t *pick = NULL, *dt = NULL, rng = 0x5eed, i, p;
	uint8_t *seen = NULL;
	int ret = -ENOMEM;

	pick = calloc(nr, sizeof(*pick));
	dt = calloc(nr, sizeof(*dt));
	seen = calloc((pop_pages + 7) / 8, 1);
	if (!pick || !dt || !seen)
		goto out;
	for (i = 0; i < nr; i++) {
		do
			p = splitmix(&rng) % pop_pages;
		while (seen[p / 8] & (1u << (p % 8)));
		seen[p / 8] |= (uint8_t)(1u << (p % 8));
		pick[i] = p;
	}
	for (i = 0; i < nr; i++) {
		volatile uint8_t *q = b->addr + pick[i] * PAGE_4K + (i & 63);
		uint64_t t0 = wps_now_ns();

		*q = (uint8_t)(*q + 1);
		dt[i] = wps_now_ns() - t0;
	}
	qsort(dt, nr, sizeof(*dt), cmp_u64);
	*cow_us = dt[nr / 2] / 1e3;
	ret = 0;
out:
	free(seen);
	free(dt);
	free(pick);
	return ret;
}

int bench_fork(enum rguest_backing backing, uint64_t size,
	       unsigned int pct, unsigned int nr_pages, struct bench_fork *out)
{
	bool shared = backing == RGUEST_MEMFD || backing == RGUEST_HUGETLB;
	int pfd[2] = { -1, -1 };
	uint64_t pop_pages, t0, t1;
	struct bench_buf b;
	pid_t pid = -1;
	int ret, status;
	char c;

	memset(out, 0, sizeof(*out));
	ret = bench_buf_map(&b, backing, size);
	if (ret)
		return ret;
	bench_buf_populate(&b, pct);
	pop_pages = bench_buf_populated(&b, pct) / PAGE_4K;
	if (nr_pages > pop_pages / 2)
		nr_pages = (unsigned int)(pop_pages / 2);

	if (pipe2(pfd, O_CLOEXEC)) {
		ret = -errno;
		goto out;
	}
	t0 = wps_now_ns();
	pid = fork();
	if (pid == 0) {
		/* The child only holds the old copy until told to go. */
		close(pfd[1]);
		while (read(pfd[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	t1 = wps_now_ns();
	if (pid < 0) {
		ret = -errno;
		goto out;
	}
	out->pause_ms = (t1 - t0) / 1e6;
	if (!shared && nr_pages) {
		ret = time_cow(&b, pop_pages, nr_pages, &out->cow_us);
		out->cow_valid = !ret;
		out->cow_pages = nr_pages;
	}
out:
	/* EOF on the pipe releases the child. */
	if (pfd[1] >= 0)
		close(pfd[1]);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pid > 0) {
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	bench_buf_unmap(&b);
	return ret;
}

int bench_resident(const void *addr, uint64_t len, unsigned char *vec,
		   uint64_t *bytes)
{
	uint64_t i, n = len / PAGE_4K, res = 0;

	if (mincore((void *)addr, len, vec))
		return -errno;
	for (i = 0; i < n; i++)
		res += vec[i] & 1;
	*bytes = res * PAGE_4K;
	return 0;
}

int bench_stop_copy(struct rguest *g, const char *dir, double *pause_ms,
		    uint64_t *bytes)
{
	const uint8_t *mem = rguest_mem(g);
	uint64_t size = rguest_size(g), pages = size / PAGE_4K, i, t0, t1;
	struct bench_extent *ext = NULL;
	unsigned char *vec = NULL;
	uint64_t total = 0;
	size_t n = 0;
	int fd = -1, ret, ret2;

	/* Everything that can be prepared is prepared outside the pause. */
	vec = malloc(pages);
	ext = calloc(pages / 2 + 1, sizeof(*ext));
	if (!vec || !ext) {
		ret = -ENOMEM;
		goto out;
	}
	ret = bench_tmpfile(dir, &fd);
	if (ret)
		goto out;

	t0 = wps_now_ns();
	ret = rguest_pause(g);
	if (ret)
		goto out;
	/* Save only what is resident, as runs: never-touched RAM is not
	 * copied, as wpsnap does not copy it either. */
	if (mincore((void *)mem, size, vec)) {
		ret = -errno;
	} else {
		for (i = 0; i < pages; i++) {
			if (!(vec[i] & 1))
				continue;
			if (n && (const uint8_t *)ext[n - 1].addr +
			    ext[n - 1].len == mem + i * PAGE_4K) {
				ext[n - 1].len += PAGE_4K;
			} else {
				ext[n].addr = mem + i * PAGE_4K;
				ext[n].len = PAGE_4K;
				n++;
			}
			total += PAGE_4K;
		}
		ret = bench_aio_write(fd, ext, n);
	}
	ret2 = rguest_resume(g);
	t1 = wps_now_ns();
	if (!ret)
		ret = ret2;
	if (!ret) {
		*pause_ms = (t1 - t0) / 1e6;
		*bytes = total;
	}
out:
	if (fd >= 0)
		close(fd);
	free(ext);
	free(vec);
	return ret;
}
