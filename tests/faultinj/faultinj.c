/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * faultinj: an LD_PRELOAD shim for the fault-injection tests
 * (tests/integration/faults.sh). Built for the tests only, never installed.
 *
 * It owns one counter per class of I/O operation and, driven by the
 * environment, fails the Nth call of one class:
 *
 *   FAULTINJ_DIR=PATH    only files under PATH count (fds are resolved with
 *                        /proc/self/fd, renames by their paths), so stdio,
 *                        logging, eventfds and ledgers elsewhere do not
 *                        shift the count; without it the shim is inert
 *   FAULTINJ_OP=CLASS    submit    io_submit (of an iocb on such a file)
 *                        complete  one io_getevents completion of one
 *                        write     pwrite, pwrite64, pwritev, write
 *                        read      pread, pread64, preadv, read
 *                        sync      fsync, fdatasync
 *                        truncate  ftruncate, fallocate
 *                        rename    rename, renameat, renameat2
 *                        nbd       nbd_aio_pread (the request fails at
 *                                  completion, as a server error would)
 *   FAULTINJ_NTH=N       the Nth call of CLASS (from 1) fails
 *   FAULTINJ_ERR=E       EIO, ENOSPC, or SHORT (a short transfer: half of
 *                        it, whole 4 KiB blocks when it is that large; for
 *                        submit, half of the iocbs; only read, write,
 *                        submit and complete have one)
 *   FAULTINJ_COUNT=FILE  at exit, append "PID CLASS COUNT" for every class
 *                        used, and "PID fired CLASS N ERR" if the fault was
 *                        injected (counting mode: no FAULTINJ_OP)
 *
 * Invariants: every interposed call that is not the chosen one goes
 * straight to the next definition (dlsym RTLD_NEXT) with its errno intact;
 * counters are atomics and the configuration is read once in the
 * constructor, so any thread may call in at any time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <libnbd.h>

enum fi_class { FI_SUBMIT, FI_COMPLETE, FI_WRITE, FI_READ, FI_SYNC,
		FI_TRUNCATE, FI_RENAME, FI_NBD, FI_NR };

static const char *const fi_names[FI_NR] = {
	"submit", "complete", "write", "read", "sync", "truncate", "rename", "nbd",
};

enum fi_kind { FI_EIO, FI_ENOSPC, FI_SHORT };

static struct {
	char dir[4096];
	size_t dirlen;
	int op;                 /* class to fail, -1: count only */
	unsigned long nth;
	enum fi_kind kind;
	char count_path[4096];
	atomic_ulong count[FI_NR];
	atomic_bool fired;
	atomic_bool suspended;  /* faultinj_suspend(): nothing counts */
} fi = { .op = -1 };

/*
 * For a driver that checks its results with I/O of its own (reading the
 * image back) while the code under test is idle: that I/O must neither
 * count nor fail. Looked up with dlsym(RTLD_DEFAULT, "faultinj_suspend"),
 * so the driver also runs without the shim.
 */
void faultinj_suspend(int on);

void faultinj_suspend(int on)
{
	atomic_store(&fi.suspended, on != 0);
}

__attribute__((constructor)) static void fi_init(void)
{
	const char *d = getenv("FAULTINJ_DIR"), *op = getenv("FAULTINJ_OP");
	const char *n = getenv("FAULTINJ_NTH"), *e = getenv("FAULTINJ_ERR");
	const char *c = getenv("FAULTINJ_COUNT");
	int i;

	if (!d || !*d || strlen(d) >= sizeof(fi.dir))
		return;
	snprintf(fi.dir, sizeof(fi.dir), "%s", d);
	fi.dirlen = strlen(fi.dir);
	while (fi.dirlen > 1 && fi.dir[fi.dirlen - 1] == '/')
		fi.dir[--fi.dirlen] = 0;
	if (c)
		snprintf(fi.count_path, sizeof(fi.count_path), "%s", c);
	for (i = 0; op && i < FI_NR; i++)
		if (!strcmp(op, fi_names[i]))
			fi.op = i;
	fi.nth = n ? strtoul(n, NULL, 0) : 0;
	fi.kind = e && !strcmp(e, "ENOSPC") ? FI_ENOSPC :
		  e && !strcmp(e, "SHORT") ? FI_SHORT : FI_EIO;
}

/* Written with raw syscalls: our own write() is interposed. */
__attribute__((destructor)) static void fi_report(void)
{
	char line[256];
	int fd, i, len;

	if (!fi.dirlen || !fi.count_path[0])
		return;
	fd = (int)syscall(SYS_open, fi.count_path,
			  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	for (i = 0; i < FI_NR; i++) {
		unsigned long v = atomic_load(&fi.count[i]);

		if (!v)
			continue;
		len = snprintf(line, sizeof(line), "%d %s %lu\n", (int)getpid(),
			       fi_names[i], v);
		syscall(SYS_write, fd, line, (size_t)len);
	}
	if (atomic_load(&fi.fired)) {
		len = snprintf(line, sizeof(line), "%d fired %s %lu %s\n",
			       (int)getpid(), fi_names[fi.op], fi.nth,
			       fi.kind == FI_ENOSPC ? "ENOSPC" :
			       fi.kind == FI_SHORT ? "SHORT" : "EIO");
		syscall(SYS_write, fd, line, (size_t)len);
	}
	syscall(SYS_close, fd);
}

static bool under_dir(const char *p)
{
	return fi.dirlen && p && !atomic_load(&fi.suspended) &&
	       !strncmp(p, fi.dir, fi.dirlen) &&
	       (p[fi.dirlen] == '/' || !p[fi.dirlen]);
}

/* readlink is async-signal-safe and not interposed. */
static bool fd_under_dir(int fd)
{
	char link[64], path[4096];
	ssize_t n;

	if (!fi.dirlen || fd < 0)
		return false;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return false;
	path[n] = 0;
	return under_dir(path);
}

/* Count one operation of class c; true if it is the one to fail. A call
 * that cannot be shortened (one byte, one iocb) counts but is left alone
 * when the fault is a short one: no kernel shortens it either. */
static bool hit(enum fi_class c, bool can_short)
{
	unsigned long v = atomic_fetch_add(&fi.count[c], 1) + 1;

	if ((int)c != fi.op || v != fi.nth ||
	    (fi.kind == FI_SHORT && !can_short))
		return false;
	atomic_store(&fi.fired, true);
	return true;
}

static int fi_errno(void)
{
	return fi.kind == FI_ENOSPC ? ENOSPC : EIO;
}

/* Half of len, in whole 4 KiB blocks when there are two or more. */
static size_t short_len(size_t len)
{
	return len >= 8192 ? len / 2 & ~(size_t)4095 : len / 2;
}

/* The next definition, looked up once; racing threads store the same
 * pointer, atomically. */
#define NEXT(name) \
	static __typeof__(name) *next_##name##_p; \
	__typeof__(name) *next_##name = \
		__atomic_load_n(&next_##name##_p, __ATOMIC_ACQUIRE); \
	if (!next_##name) { \
		next_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name); \
		__atomic_store_n(&next_##name##_p, next_##name, __ATOMIC_RELEASE); \
	}

/* ------------------------------------------------------------------ */

static void rw(enum fi_class c, int fd, size_t len, bool *fail, size_t *n)
{
	*fail = false;
	*n = len;
	if (!fd_under_dir(fd) || !hit(c, len >= 2))
		return;
	if (fi.kind != FI_SHORT)
		*fail = true;
	else
		*n = short_len(len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	bool fail;
	size_t n;

	NEXT(pwrite);
	rw(FI_WRITE, fd, len, &fail, &n);
	if (fail) {
		errno = fi_errno();
		return -1;
	}
	return next_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return pwrite(fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	bool fail;
	size_t n;

	NEXT(write);
	rw(FI_WRITE, fd, len, &fail, &n);
	if (fail) {
		errno = fi_errno();
		return -1;
	}
	return next_write(fd, buf, n);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	bool fail;
	size_t n;

	NEXT(pread);
	rw(FI_READ, fd, len, &fail, &n);
	if (fail) {
		errno = fi_errno();
		return -1;
	}
	return next_pread(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t len, off_t off)
{
	return pread(fd, buf, len, off);
}

ssize_t read(int fd, void *buf, size_t len)
{
	bool fail;
	size_t n;

	NEXT(read);
	rw(FI_READ, fd, len, &fail, &n);
	if (fail) {
		errno = fi_errno();
		return -1;
	}
	return next_read(fd, buf, n);
}

/* A vector: the short form keeps the first half of the first segment. */
static ssize_t rwv(enum fi_class c, int fd, const struct iovec *iov, int cnt,
		   off_t off, __typeof__(preadv) *next)
{
	bool fail;
	size_t n;

	rw(c, fd, cnt > 0 ? iov[0].iov_len : 0, &fail, &n);
	if (fail) {
		errno = fi_errno();
		return -1;
	}
	if (cnt > 0 && n != iov[0].iov_len) {
		struct iovec one = { iov[0].iov_base, n };

		return next(fd, &one, 1, off);
	}
	return next(fd, iov, cnt, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	NEXT(pwritev);
	return rwv(FI_WRITE, fd, iov, cnt, off,
		   (__typeof__(preadv) *)(void *)next_pwritev);
}

ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	NEXT(preadv);
	return rwv(FI_READ, fd, iov, cnt, off, next_preadv);
}

/* ------------------------------------------------------------------ */

static int fd_fail(enum fi_class c, int fd)
{
	if (fd_under_dir(fd) && hit(c, false)) {
		errno = fi_errno();
		return -1;
	}
	return 0;
}

int fsync(int fd)
{
	NEXT(fsync);
	return fd_fail(FI_SYNC, fd) ? -1 : next_fsync(fd);
}

int fdatasync(int fd)
{
	NEXT(fdatasync);
	return fd_fail(FI_SYNC, fd) ? -1 : next_fdatasync(fd);
}

int ftruncate(int fd, off_t len)
{
	NEXT(ftruncate);
	return fd_fail(FI_TRUNCATE, fd) ? -1 : next_ftruncate(fd, len);
}

int ftruncate64(int fd, off_t len)
{
	return ftruncate(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	NEXT(fallocate);
	return fd_fail(FI_TRUNCATE, fd) ? -1 : next_fallocate(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

static int rename_fail(const char *a, const char *b)
{
	if ((under_dir(a) || under_dir(b)) && hit(FI_RENAME, false)) {
		errno = fi_errno();
		return -1;
	}
	return 0;
}

int rename(const char *a, const char *b)
{
	NEXT(rename);
	return rename_fail(a, b) ? -1 : next_rename(a, b);
}

int renameat(int da, const char *a, int db, const char *b)
{
	NEXT(renameat);
	return rename_fail(a, b) ? -1 : next_renameat(da, a, db, b);
}

int renameat2(int da, const char *a, int db, const char *b, unsigned int fl)
{
	NEXT(renameat2);
	return rename_fail(a, b) ? -1 : next_renameat2(da, a, db, b, fl);
}

/* ------------------------------------------------------------------ */
/* libaio: the iocbs' fds decide whether a call counts.                */

int io_submit(io_context_t ctx, long nr, struct iocb **ios)
{
	NEXT(io_submit);
	if (nr > 0 && fd_under_dir(ios[0]->aio_fildes) &&
	    hit(FI_SUBMIT, nr >= 2)) {
		if (fi.kind != FI_SHORT)
			return -fi_errno();
		nr /= 2;        /* the caller must submit the rest again */
	}
	return next_io_submit(ctx, nr, ios);
}

int io_getevents(io_context_t ctx, long min, long max, struct io_event *ev,
		 struct timespec *tmo)
{
	int n, i;

	NEXT(io_getevents);
	n = next_io_getevents(ctx, min, max, ev, tmo);
	for (i = 0; i < n; i++) {
		struct iocb *cb = ev[i].obj;
		long res = (long)ev[i].res;

		if (!cb || !fd_under_dir(cb->aio_fildes) ||
		    !hit(FI_COMPLETE, res >= 2))
			continue;
		/* Short: the kernel did it all, we report less; redoing the
		 * rest is what a caller must do anyway. */
		if (fi.kind == FI_SHORT)
			ev[i].res = (unsigned long)short_len((size_t)res);
		else
			ev[i].res = (unsigned long)(long)-fi_errno();
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* libnbd: the Nth read request completes with the error, as if the
 * server had answered it so.                                          */

struct fi_nbd_wrap {
	nbd_completion_callback orig;
};

static int fi_nbd_cb(void *user_data, int *error)
{
	struct fi_nbd_wrap *w = user_data;

	if (!*error)
		*error = fi_errno();
	/* No callback of the caller's (NBD_NULL_COMPLETION): -1 makes libnbd
	 * fail the command with *error, for nbd_aio_command_completed to
	 * report; 1 would retire it unseen and the caller would wait on. */
	return w->orig.callback ? w->orig.callback(w->orig.user_data, error) : -1;
}

static void fi_nbd_free(void *user_data)
{
	struct fi_nbd_wrap *w = user_data;

	if (w->orig.free)
		w->orig.free(w->orig.user_data);
	free(w);
}

int64_t nbd_aio_pread(struct nbd_handle *h, void *buf, size_t count,
		      uint64_t offset, nbd_completion_callback cb, uint32_t flags)
{
	struct fi_nbd_wrap *w;

	NEXT(nbd_aio_pread);
	if (!fi.dirlen || !hit(FI_NBD, false) ||
	    !(w = malloc(sizeof(*w))))
		return next_nbd_aio_pread(h, buf, count, offset, cb, flags);
	w->orig = cb;
	return next_nbd_aio_pread(h, buf, count, offset,
				  (nbd_completion_callback){
					  .callback = fi_nbd_cb,
					  .user_data = w, .free = fi_nbd_free },
				  flags);
}
