/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * End-to-end snapshots through the public API: the reference guest writes
 * at full speed, libwpsnap writes a real image file, and the image must
 * equal the guest's ledger at the freeze instant, block for block.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "tests/unit/testutil.h"
#include "wp/compat.h"
#include "guest/guest.h"

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static struct rguest *guest_new(enum rguest_backing b, uint64_t size,
				   unsigned int threads,
				   enum rguest_pattern pat, unsigned int pct)
{
	struct rguest_opts o = { .size = size, .backing = b,
				    .threads = threads, .pattern = pat,
				    .populate_pct = pct, .seed = 42 };
	struct rguest *g = NULL;

	ck_assert_int_eq(rguest_new(&o, &g), 0);
	return g;
}

static struct rguest *guest(enum rguest_backing b, uint64_t size,
			       unsigned int threads,
			       enum rguest_pattern pat, unsigned int pct)
{
	struct rguest *g = guest_new(b, size, threads, pat, pct);

	ck_assert_int_eq(rguest_start(g), 0);
	return g;
}

/* start: start the guest's writers just before the freeze (the guest was
 * made with guest_new), so that little is written before the instant. */
static int snapshot_ex(struct wps_ctx *ctx, struct rguest *g,
		       const char *path, struct wps_snapshot_stats *st,
		       bool cancel, bool start)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *s;
	struct wps_region r;
	int ret;

	rguest_region(g, &r);
	so.path = path;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ret = wps_snapshot_new(ctx, &r, 1, &so, &s);
	if (ret)
		return ret;
	if (start)
		ck_assert_int_eq(rguest_start(g), 0);
	ret = wps_snapshot_freeze(s);
	if (!ret && cancel)
		wps_snapshot_cancel(s);
	if (!ret)
		ret = wps_snapshot_wait(s);
	if (st)
		wps_snapshot_stats(s, st);
	wps_snapshot_free(s);
	return ret;
}

static int snapshot(struct wps_ctx *ctx, struct rguest *g, const char *path,
		    struct wps_snapshot_stats *st, bool cancel)
{
	return snapshot_ex(ctx, g, path, st, cancel, false);
}


/* Verify the image against the ledger; returns how many blocks were
 * unpopulated at the instant but are written now (first touched after). */
static uint64_t check_image(struct wps_ctx *ctx, struct rguest *g,
			    const char *path)
{
	struct rguest_ledger *l;
	struct wps_image *img;
	const uint8_t *mem = rguest_mem(g);
	uint64_t bad = 0, b, fresh = 0;
	char why[256] = "";
	static const uint8_t zero[4096];

	ck_assert_int_eq(rguest_pause(g), 0);
	ck_assert_int_eq(rguest_ledger(g, &l), 0);
	for (b = 0; b < l->nr_blocks; b++)
		if (!l->gen[b] && memcmp(mem + b * 4096, zero, 4096))
			fresh++;
	ck_assert_int_eq(rguest_resume(g), 0);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	ck_assert_msg(!rguest_ledger_verify_image(l, img, 0, &bad, why, sizeof(why)),
		      "image differs from the freeze instant: %s", why);
	ck_assert_int_eq(wps_image_verify(img, &bad), 0);
	wps_image_close(img);
	rguest_ledger_free(l);
	return fresh;
}

static void backing_test(enum rguest_backing b, uint64_t size)
{
	struct wps_snapshot_stats st;
	struct wps_ctx *ctx;
	struct rguest *g;
	char path[512];
	uint64_t fresh, wp;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	/* Writers start right before the freeze: with a warm-up they would
	 * have touched every block before the instant, and none is fresh. */
	g = guest_new(b, size, 2, RGUEST_RANDOM, 60);
	ck_assert_int_eq(snapshot_ex(ctx, g, path, &st, false, true), 0);
	ck_assert(exists(path));
	/* The guest kept writing through the whole copy. */
	ck_assert_uint_gt(st.faults, 0);
	usleep(50000);
	fresh = check_image(ctx, g, path);
	/* 40% of the guest was never populated before the freeze and the
	 * writers touch it afterwards: those blocks must read as zero. */
	ck_assert_uint_gt(fresh, 0);
	ck_assert_int_eq(tu_count_wp(rguest_mem(g), rguest_size(g), &wp), 0);
	ck_assert_uint_eq(wp, 0);
	rguest_free(g);
	wps_ctx_free(ctx);
}

START_TEST(anon_live)
{
	backing_test(RGUEST_ANON, 64 << 20);
}
END_TEST

START_TEST(thp_live)
{
	backing_test(RGUEST_THP, 64 << 20);
}
END_TEST

START_TEST(memfd_live)
{
	backing_test(RGUEST_MEMFD, 64 << 20);
}
END_TEST

START_TEST(hugetlb_live)
{
	struct rguest_hugepool hp;

	if (rguest_hugepool_reserve(&hp, 40ull << 21)) {
		rguest_hugepool_release(&hp);
		TU_SKIP("the kernel refused to reserve 2 MiB huge pages");
	}
	backing_test(RGUEST_HUGETLB, 64 << 20);
	rguest_hugepool_release(&hp);
}
END_TEST

START_TEST(empty_guest)
{
	const struct wps_image_info *in;
	struct wps_ctx *ctx;
	struct wps_image *img;
	struct rguest *g;
	char path[512];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	g = guest(RGUEST_ANON, 16 << 20, 1, RGUEST_IDLE, 0);
	ck_assert_int_eq(snapshot(ctx, g, path, NULL, false), 0);
	check_image(ctx, g, path);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	in = wps_image_get_info(img);
	ck_assert_uint_eq(in->present_blocks, 0);
	ck_assert_uint_eq(in->data_bytes, 0);
	wps_image_close(img);
	rguest_free(g);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(one_page_guest)
{
	const struct wps_image_region *r;
	struct wps_ctx *ctx;
	struct wps_image *img;
	struct rguest *g;
	char path[512];

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	g = guest(RGUEST_ANON, 4096, 1, RGUEST_SEQ, 100);
	ck_assert_int_eq(snapshot(ctx, g, path, NULL, false), 0);
	check_image(ctx, g, path);
	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	r = wps_image_get_region(img, 0);
	ck_assert_uint_eq(r->nr_blocks, 1);
	ck_assert_uint_eq(r->present_blocks, 1);
	wps_image_close(img);
	rguest_free(g);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(cancel_leaves_nothing)
{
	struct wps_ctx *ctx;
	struct rguest *g;
	char path[512], partial[600];
	uint64_t wp, w0;
	int i;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	snprintf(partial, sizeof(partial), "%s.partial", path);
	for (i = 0; i < 5; i++) {
		g = guest(i % 2 ? RGUEST_MEMFD : RGUEST_ANON, 128 << 20,
			  2, RGUEST_RANDOM, 100);
		ck_assert_int_eq(snapshot(ctx, g, path, NULL, true),
				 -ECANCELED);
		ck_assert(!exists(path));
		ck_assert(!exists(partial));
		ck_assert_int_eq(tu_count_wp(rguest_mem(g),
					     rguest_size(g), &wp), 0);
		ck_assert_uint_eq(wp, 0);
		/* The writers go on, and the whole memory is writable:
		 * a leaked protection would block here forever (alarm). */
		/* (up to 10 s: on a loaded machine the writers may wait
		 * that long for a CPU; a blocked one never moves) */
		w0 = rguest_writes(g);
		for (int t = 0; t < 1000 && rguest_writes(g) == w0; t++)
			usleep(10000);
		ck_assert_uint_gt(rguest_writes(g), w0);
		rguest_stop(g);
		alarm(20);
		memset(rguest_mem(g), 0x5a, rguest_size(g));
		alarm(0);
		rguest_free(g);
	}
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(fifty_in_a_row)
{
	struct wps_ctx *ctx;
	struct rguest *g;
	char path[512];
	int fds0, i;
	size_t heap0 = 0, heap1 = 0;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	g = guest(RGUEST_ANON, 8 << 20, 2, RGUEST_RANDOM, 100);
	/* One run first, so lazily allocated libc state is not counted. */
	ck_assert_int_eq(snapshot(ctx, g, path, NULL, false), 0);
	unlink(path);
	fds0 = tu_count_fds();
	heap0 = mallinfo2().uordblks;
	for (i = 0; i < 50; i++) {
		ck_assert_int_eq(snapshot(ctx, g, path, NULL, false), 0);
		if (i % 10 == 0)
			check_image(ctx, g, path);
		ck_assert_int_eq(unlink(path), 0);
	}
	heap1 = mallinfo2().uordblks;
	ck_assert_int_eq(tu_count_fds(), fds0);
	/* Sanitizer builds replace malloc, and mallinfo2 then says 0. */
	if (heap0)
		ck_assert_msg(heap1 <= heap0 + 64 * 1024,
			      "heap grew from %zu to %zu over 50 snapshots",
			      heap0, heap1);
	rguest_free(g);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(existing_image_refused)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_snapshot *s = NULL;
	struct wps_ctx *ctx;
	struct rguest *g;
	struct wps_region r;
	char path[512];
	FILE *f;

	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_level(ctx, 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("precious", f);
	fclose(f);
	g = guest(RGUEST_ANON, 4 << 20, 1, RGUEST_IDLE, 100);
	rguest_region(g, &r);
	so.path = path;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), -EEXIST);
	ck_assert_ptr_null(s);
	r.size += 100;
	so.flags = WPS_SNAP_OVERWRITE;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), -EINVAL);
	so.path = NULL;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), -EINVAL);
	rguest_free(g);
	wps_ctx_free(ctx);
}
END_TEST

START_TEST(enospc_fails_cleanly)
{
	struct wps_ctx *ctx;
	struct rguest *g;
	char mnt[512], path[600], partial[700];
	uint64_t wp;
	int ret;

	snprintf(mnt, sizeof(mnt), "%s/small", tu_dir);
	ck_assert_int_eq(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m"))
		TU_SKIP("cannot mount a tmpfs: %s", strerror(errno));
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_level(ctx, 0);
	snprintf(path, sizeof(path), "%s/img", mnt);
	snprintf(partial, sizeof(partial), "%s.partial", path);
	g = guest(RGUEST_ANON, 32 << 20, 2, RGUEST_RANDOM, 100);
	ret = snapshot(ctx, g, path, NULL, false);
	ck_assert_int_eq(ret, -ENOSPC);
	ck_assert(!exists(path));
	ck_assert(!exists(partial));
	ck_assert_int_eq(tu_count_wp(rguest_mem(g), rguest_size(g), &wp), 0);
	ck_assert_uint_eq(wp, 0);
	rguest_free(g);
	umount(mnt);
	wps_ctx_free(ctx);
}
END_TEST

/*
 * Every optimisation stays byte-exact: each backing with each write
 * pattern (sequential writes exercise the neighbour copy, hot sets the
 * converging rounds), under both freeze modes and with the neighbour
 * window off. Small guests, two writer threads at full speed.
 */
static const struct {
	enum rguest_backing b;
	enum rguest_pattern p;
	unsigned int flags, window;
} matrix[] = {
	{ RGUEST_ANON, RGUEST_SEQ, 0, 0 },
	{ RGUEST_ANON, RGUEST_HOT, 0, 0 },
	{ RGUEST_ANON, RGUEST_RANDOM, WPS_SNAP_FREEZE_SIMPLE, 0 },
	{ RGUEST_ANON, RGUEST_SEQ, 0, 1 },
	{ RGUEST_ANON, RGUEST_HOT, 0, 64 },
	{ RGUEST_THP, RGUEST_SEQ, 0, 0 },
	{ RGUEST_THP, RGUEST_HOT, WPS_SNAP_FREEZE_SIMPLE, 0 },
	{ RGUEST_MEMFD, RGUEST_SEQ, 0, 0 },
	{ RGUEST_MEMFD, RGUEST_HOT, 0, 0 },
	{ RGUEST_MEMFD, RGUEST_RANDOM, WPS_SNAP_FREEZE_SIMPLE, 1 },
	{ RGUEST_HUGETLB, RGUEST_SEQ, 0, 0 },
	{ RGUEST_HUGETLB, RGUEST_HOT, WPS_SNAP_FREEZE_SIMPLE, 0 },
};

START_TEST(pattern_matrix)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct rguest_hugepool hp = { 0 };
	struct wps_snapshot *s;
	struct wps_ctx *ctx;
	struct rguest *g;
	struct wps_region r;
	char path[512];
	uint64_t wp;

	if (matrix[_i].b == RGUEST_HUGETLB &&
	    rguest_hugepool_reserve(&hp, 32ull << 20)) {
		rguest_hugepool_release(&hp);
		TU_SKIP("[%d] hugetlb: %s", _i, hp.why);
	}
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	g = guest_new(matrix[_i].b, 32 << 20, 2, matrix[_i].p, 70);
	rguest_region(g, &r);
	so.path = path;
	so.flags = matrix[_i].flags;
	so.fault_window = matrix[_i].window;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), 0);
	ck_assert_int_eq(rguest_start(g), 0);
	usleep(5000);
	ck_assert_int_eq(wps_snapshot_freeze(s), 0);
	ck_assert_int_eq(wps_snapshot_wait(s), 0);
	wps_snapshot_free(s);
	check_image(ctx, g, path);
	ck_assert_int_eq(tu_count_wp(rguest_mem(g), rguest_size(g), &wp), 0);
	ck_assert_uint_eq(wp, 0);
	rguest_free(g);
	rguest_hugepool_release(&hp);
	wps_ctx_free(ctx);
}
END_TEST

/*
 * Another process's memory, as the daemon sees a VMM's: the child makes a
 * memfd guest and a fresh userfaultfd and hands both over a socketpair;
 * we snapshot it with opts.pid while the child writes. The oracle is our
 * own mapping of the memfd, copied while the child is paused.
 */
struct child_ctl {
	int pause_req, paused, stop;
};

static void child_writer(int sock, struct child_ctl *ctl, uint64_t size,
			 bool anon)
{
	struct tu_mem mem;
	char cbuf[CMSG_SPACE(2 * sizeof(int))];
	struct msghdr mh = { 0 };
	struct cmsghdr *cm;
	struct iovec iov;
	uint64_t addr, x = 88172645463325252ull;
	int dev, uffd, fds[2];

	if (tu_mem_new(&mem, anon ? TU_ANON : TU_MEMFD, size))
		_exit(2);
	tu_mem_populate(&mem, 80);
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	uffd = dev < 0 ? -1 : ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	if (uffd < 0)
		_exit(3);
	addr = (uintptr_t)mem.p;
	iov = (struct iovec){ &addr, sizeof(addr) };
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	fds[0] = uffd;
	fds[1] = mem.fd;
	cm->cmsg_len = CMSG_LEN((anon ? 1 : 2) * sizeof(int));
	mh.msg_controllen = CMSG_SPACE((anon ? 1 : 2) * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, (anon ? 1 : 2) * sizeof(int));
	if (sendmsg(sock, &mh, 0) != sizeof(addr))
		_exit(4);
	close(uffd);
	while (!__atomic_load_n(&ctl->stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&ctl->pause_req, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&ctl->paused, 1, __ATOMIC_RELEASE);
			while (__atomic_load_n(&ctl->pause_req, __ATOMIC_ACQUIRE))
				;
			__atomic_store_n(&ctl->paused, 0, __ATOMIC_RELEASE);
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		*(volatile uint64_t *)(mem.p + (x % (size / 8)) * 8) = x | 1;
	}
	/* Every page writable again: a leaked protection would hang here. */
	memset(mem.p, 0x77, size);
	_exit(0);
}

struct remote_oracle {
	struct child_ctl *ctl;
	const uint8_t *view;    /* our mapping of the memfd, or NULL */
	pid_t pid;              /* else read the child's memory here */
	uint64_t addr;
	uint8_t *copy;
	uint64_t size;
};

static int remote_pause(void *arg)
{
	struct remote_oracle *o = arg;

	__atomic_store_n(&o->ctl->pause_req, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&o->ctl->paused, __ATOMIC_ACQUIRE))
		;
	if (o->view) {
		memcpy(o->copy, o->view, o->size);
	} else {
		struct iovec l = { o->copy, o->size };
		struct iovec r = { (void *)(uintptr_t)o->addr, o->size };

		ck_assert_int_eq(process_vm_readv(o->pid, &l, 1, &r, 1, 0),
				 (ssize_t)o->size);
	}
	return 0;
}

static int remote_resume(void *arg)
{
	struct remote_oracle *o = arg;

	__atomic_store_n(&o->ctl->pause_req, 0, __ATOMIC_RELEASE);
	return 0;
}

START_TEST(other_process)
{
	const uint64_t size = 32 << 20;
	const bool anon = _i == 1;
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	char cbuf[CMSG_SPACE(2 * sizeof(int))], path[512];
	struct msghdr mh = { 0 };
	struct remote_oracle o;
	struct wps_snapshot *s;
	struct wps_image *img;
	struct wps_region r = { 0 };
	struct wps_ctx *ctx;
	struct cmsghdr *cm;
	struct iovec iov;
	uint64_t addr, off;
	int sv[2], fds[2], status;
	uint8_t *buf;
	pid_t pid;

	o.ctl = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(o.ctl, MAP_FAILED);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		close(sv[0]);
		child_writer(sv[1], o.ctl, size, anon);
	}
	close(sv[1]);
	iov = (struct iovec){ &addr, sizeof(addr) };
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	ck_assert_int_eq(recvmsg(sv[0], &mh, 0), sizeof(addr));
	cm = CMSG_FIRSTHDR(&mh);
	ck_assert_ptr_nonnull(cm);
	fds[1] = -1;
	memcpy(fds, CMSG_DATA(cm), (anon ? 1 : 2) * sizeof(int));

	o.size = size;
	o.copy = malloc(size);
	o.pid = pid;
	o.addr = addr;
	o.view = NULL;
	if (!anon) {
		o.view = mmap(NULL, size, PROT_READ, MAP_SHARED, fds[1], 0);
		ck_assert_ptr_ne(o.view, MAP_FAILED);
	}
	r.host_addr = addr;
	r.size = size;
	r.page_size = 4096;
	r.backing = anon ? WPS_BACKING_ANON : WPS_BACKING_MEMFD;
	r.fd = fds[1];
	snprintf(path, sizeof(path), "%s/img", tu_dir);
	so.path = path;
	so.pid = pid;
	so.uffd = fds[0];
	so.pause = remote_pause;
	so.resume = remote_resume;
	so.pause_arg = &o;
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	ck_assert_int_eq(wps_snapshot_new(ctx, &r, 1, &so, &s), 0);
	ck_assert_int_eq(wps_snapshot_freeze(s), 0);
	ck_assert_int_eq(wps_snapshot_wait(s), 0);
	wps_snapshot_free(s);
	close(fds[0]);

	ck_assert_int_eq(wps_image_open(ctx, path, 0, &img), 0);
	buf = malloc(1 << 20);
	for (off = 0; off < size; off += 1 << 20) {
		ck_assert_int_eq(wps_image_read(img, 0, off, buf, 1 << 20), 0);
		ck_assert_msg(!memcmp(buf, o.copy + off, 1 << 20),
			      "image differs from the child's memory at the "
			      "instant near offset %llu", (unsigned long long)off);
	}
	wps_image_close(img);
	__atomic_store_n(&o.ctl->stop, 1, __ATOMIC_RELEASE);
	alarm(20);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	alarm(0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	free(buf);
	free(o.copy);
	if (o.view)
		munmap((void *)o.view, size);
	munmap(o.ctl, 4096);
	if (fds[1] >= 0)
		close(fds[1]);
	close(sv[0]);
	wps_ctx_free(ctx);
}
END_TEST

static Suite *snapshot_suite(void)
{
	Suite *s = suite_create("snapshot");
	TCase *tc = tcase_create("live");

	tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, anon_live);
	tcase_add_test(tc, thp_live);
	tcase_add_test(tc, memfd_live);
	tcase_add_test(tc, hugetlb_live);
	tcase_add_test(tc, empty_guest);
	tcase_add_test(tc, one_page_guest);
	tcase_add_test(tc, cancel_leaves_nothing);
	tcase_add_test(tc, fifty_in_a_row);
	tcase_add_test(tc, existing_image_refused);
	tcase_add_test(tc, enospc_fails_cleanly);
	tcase_add_loop_test(tc, other_process, 0, 2);
	tcase_add_loop_test(tc, pattern_matrix, 0,
			    sizeof(matrix) / sizeof(matrix[0]));
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(snapshot_suite)
