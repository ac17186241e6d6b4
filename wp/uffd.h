/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * userfaultfd plumbing: opening, feature negotiation, registration and
 * write-protection of ranges. Knows nothing about snapshots.
 */
#ifndef WPS_UFFD_H
#define WPS_UFFD_H

#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

/* Features every write-protect snapshot needs, by backing. */
#define WPS_UFFD_NEED_ANON (UFFD_FEATURE_PAGEFAULT_FLAG_WP)
#define WPS_UFFD_NEED_SHMEM (UFFD_FEATURE_PAGEFAULT_FLAG_WP | \
			     UFFD_FEATURE_WP_HUGETLBFS_SHMEM)

/* Open a fresh userfaultfd, through /dev/userfaultfd when it can be
 * opened, else the syscall. flags: O_CLOEXEC | O_NONBLOCK. */
int wps_uffd_open(struct wps_ctx *ctx, int flags, int *fd_out);

/* Features the running kernel supports (a throwaway fd is negotiated). */
int wps_uffd_supported(struct wps_ctx *ctx, uint64_t *features);

/*
 * UFFDIO_API on a fresh fd: ask for need | (want & supported). When a
 * feature of need is missing, -EOPNOTSUPP and a log line naming it.
 */
int wps_uffd_negotiate(struct wps_ctx *ctx, int fd, uint64_t need,
		       uint64_t want, uint64_t *got);

/* Names of the UFFD_FEATURE_* bits in mask, comma separated. */
void wps_uffd_feature_names(uint64_t mask, char *buf, size_t len);

int wps_uffd_register(struct wps_ctx *ctx, int fd, uint64_t start,
		      uint64_t len, uint64_t mode);
int wps_uffd_unregister(int fd, uint64_t start, uint64_t len);

/*
 * UFFDIO_WRITEPROTECT: protect or unprotect [start, start+len). Returns
 * -EAGAIN when the mm is changing under a non-cooperative event that the
 * reader of fd has not consumed yet; the caller must let that reader run
 * (or be it) and retry. Unprotecting wakes threads blocked in the range
 * unless dontwake.
 */
int wps_uffd_wp(int fd, uint64_t start, uint64_t len, bool protect,
		bool dontwake);

#endif /* WPS_UFFD_H */
