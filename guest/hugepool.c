/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 2 MiB huge page pool, for hugetlb guests in tests and tools. Each
 * holder grows the pool by all it needs and later shrinks it by exactly
 * what it added: other programs (or parallel tests) may use the pool at
 * the same time, so "restore the old value" would take their pages away,
 * and "grow by what is missing" let two holders count the same free
 * pages (make check's parallel tests did: one of them then found the
 * pool empty, ENOSPC). The read-modify-write of nr_hugepages is done
 * under a short flock, so two holders do not both write nr + need.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "guest/guest.h"

#define NR_HUGE "/proc/sys/vm/nr_hugepages"
#define FREE_HUGE "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
#define LOCK_HUGE "/run/lock/wpsnap-hugepool"

/* The lock around a change of nr_hugepages, or -1 (then unlocked: no
 * /run/lock is no reason to fail). */
static int pool_lock(void)
{
	int fd = open(LOCK_HUGE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

	if (fd >= 0)
		while (flock(fd, LOCK_EX) && errno == EINTR)
			;
	return fd;
}

static void pool_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "re");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "we");
	int ret = 0;

	if (!f)
		return -errno;
	if (fprintf(f, "%ld\n", v) < 0)
		ret = -EIO;
	if (fclose(f) && !ret)
		ret = -errno;
	return ret;
}

int rguest_hugepool_reserve(struct rguest_hugepool *hp, uint64_t bytes)
{
	long need = (long)((bytes + (2u << 20) - 1) / (2u << 20)), nr, fr, got;
	int ret, lk;

	hp->added = 0;
	hp->why[0] = '\0';
	lk = pool_lock();
	nr = read_long(NR_HUGE);
	if (nr < 0 || read_long(FREE_HUGE) < 0) {
		pool_unlock(lk);
		snprintf(hp->why, sizeof(hp->why), "cannot read %s or %s: no "
			 "2 MiB huge pages on this kernel?", NR_HUGE, FREE_HUGE);
		return -ENOENT;
	}
	ret = write_long(NR_HUGE, nr + need);
	got = read_long(NR_HUGE);
	hp->added = got > nr ? got - nr : 0;
	fr = read_long(FREE_HUGE);
	pool_unlock(lk);
	if (ret && fr < need) {
		snprintf(hp->why, sizeof(hp->why), "writing %s: %s", NR_HUGE,
			 strerror(-ret));
		return ret;
	}
	/* The kernel may find fewer pages than asked (fragmentation); what
	 * was free before may still do. */
	if (fr < need) {
		snprintf(hp->why, sizeof(hp->why), "asked %s for %ld more huge "
			 "pages, the kernel found %ld (free %ld, need %ld): "
			 "memory too fragmented?", NR_HUGE, need, hp->added, fr,
			 need);
		return -ENOSPC;
	}
	return 0;
}

void rguest_hugepool_release(struct rguest_hugepool *hp)
{
	long nr;
	int lk;

	if (hp->added <= 0)
		return;
	lk = pool_lock();
	nr = read_long(NR_HUGE);
	if (nr >= hp->added)
		write_long(NR_HUGE, nr - hp->added);
	pool_unlock(lk);
	hp->added = 0;
}
