/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The 2 MiB huge page pool, for hugetlb guests in tests and tools. It
 * grows the pool by what is missing and later shrinks it by exactly what
 * it added: other programs (or parallel tests) may use the pool at the
 * same time, so "restore the old value" would take their pages away.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "guest/guest.h"

#define NR_HUGE "/proc/sys/vm/nr_hugepages"
#define FREE_HUGE "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

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
	int ret;

	hp->added = 0;
	hp->why[0] = '\0';
	nr = read_long(NR_HUGE);
	fr = read_long(FREE_HUGE);
	if (nr < 0 || fr < 0) {
		snprintf(hp->why, sizeof(hp->why), "cannot read %s or %s: no "
			 "2 MiB huge pages on this kernel?", NR_HUGE, FREE_HUGE);
		return -ENOENT;
	}
	if (fr >= need)
		return 0;
	ret = write_long(NR_HUGE, nr + need - fr);
	if (ret) {
		snprintf(hp->why, sizeof(hp->why), "writing %s: %s", NR_HUGE,
			 strerror(-ret));
		return ret;
	}
	got = read_long(NR_HUGE);
	hp->added = got > nr ? got - nr : 0;
	fr = read_long(FREE_HUGE);
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

	if (hp->added <= 0)
		return;
	nr = read_long(NR_HUGE);
	if (nr >= hp->added)
		write_long(NR_HUGE, nr - hp->added);
	hp->added = 0;
}
