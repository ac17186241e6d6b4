/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * userfaultfd plumbing. Owns the knowledge of how to get a uffd on this
 * kernel and what each feature bit is called, so that a missing feature
 * is reported by name rather than as a bare EINVAL from UFFDIO_API.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "wp/compat.h"
#include "wp/uffd.h"

static const struct {
	uint64_t bit;
	const char *name;
} feature_names[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED" },
	{ UFFD_FEATURE_POISON, "POISON" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC" },
	{ UFFD_FEATURE_MOVE, "MOVE" },
};

void wps_uffd_feature_names(uint64_t mask, char *buf, size_t len)
{
	size_t used = 0;
	unsigned int i;

	if (len)
		buf[0] = '\0';
	for (i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
		int n;

		if (!(mask & feature_names[i].bit))
			continue;
		n = snprintf(buf + used, len - used, "%s%s", used ? "," : "",
			     feature_names[i].name);
		if (n < 0 || (size_t)n >= len - used)
			return;
		used += n;
	}
}

int wps_uffd_open(struct wps_ctx *ctx, int flags, int *fd_out)
{
	int dev, fd, dev_err = 0;

	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		dev_err = fd < 0 ? errno : 0;
		close(dev);
		if (fd >= 0) {
			*fd_out = fd;
			return 0;
		}
	} else {
		dev_err = errno;
	}
	/* Without UFFD_USER_MODE_ONLY the syscall needs CAP_SYS_PTRACE or
	 * vm.unprivileged_userfaultfd=1; kernel-mode faults (a read()
	 * into guest RAM) must be caught too, so we do not set it. */
	fd = syscall(SYS_userfaultfd, flags);
	if (fd >= 0) {
		*fd_out = fd;
		return 0;
	}
	wps_err(ctx, "cannot create a userfaultfd: /dev/userfaultfd: %s; "
		"userfaultfd(2): %s (need root, CAP_SYS_PTRACE, access to "
		"/dev/userfaultfd or vm.unprivileged_userfaultfd=1)",
		strerror(dev_err), strerror(errno));
	return -errno;
}

int wps_uffd_supported(struct wps_ctx *ctx, uint64_t *features)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd, ret;

	ret = wps_uffd_open(ctx, O_CLOEXEC, &fd);
	if (ret)
		return ret;
	if (ioctl(fd, UFFDIO_API, &api)) {
		ret = -errno;
		wps_err(ctx, "UFFDIO_API handshake failed: %s", strerror(errno));
		goto out;
	}
	*features = api.features;
out:
	close(fd);
	return ret;
}

int wps_uffd_negotiate(struct wps_ctx *ctx, int fd, uint64_t need,
		       uint64_t want, uint64_t *got)
{
	struct uffdio_api api = { .api = UFFD_API };
	uint64_t supported;
	char names[256];
	int ret;

	ret = wps_uffd_supported(ctx, &supported);
	if (ret)
		return ret;
	if ((need & supported) != need) {
		wps_uffd_feature_names(need & ~supported, names, sizeof(names));
		wps_err(ctx, "this kernel's userfaultfd lacks required "
			"feature(s): %s", names);
		return -EOPNOTSUPP;
	}
	api.features = need | (want & supported);
	if (ioctl(fd, UFFDIO_API, &api)) {
		ret = -errno;
		wps_err(ctx, "UFFDIO_API on the userfaultfd failed: %s%s",
			strerror(errno),
			errno == EINVAL ? " (was it already negotiated by its "
					  "owner?)" : "");
		return ret;
	}
	*got = api.features;
	return 0;
}

int wps_uffd_register(struct wps_ctx *ctx, int fd, uint64_t start,
		      uint64_t len, uint64_t mode)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = len },
		.mode = mode,
	};

	if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
		int err = errno;

		wps_err(ctx, "cannot register [0x%llx, 0x%llx) with "
			"userfaultfd: %s%s", (unsigned long long)start,
			(unsigned long long)(start + len), strerror(err),
			err == EBUSY ? " (already registered by another "
				       "userfaultfd)" :
			err == EINVAL ? " (not mapped, or a mapping that "
					"userfaultfd cannot write-protect)" : "");
		return -err;
	}
	return 0;
}

int wps_uffd_unregister(int fd, uint64_t start, uint64_t len)
{
	struct uffdio_range range = { .start = start, .len = len };

	return ioctl(fd, UFFDIO_UNREGISTER, &range) ? -errno : 0;
}

int wps_uffd_wp(int fd, uint64_t start, uint64_t len, bool protect,
		bool dontwake)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = start, .len = len },
		.mode = (protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
			(dontwake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0),
	};

	return ioctl(fd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int wps_probe_kernel(struct wps_ctx *ctx, struct wps_kernel_support *ks)
{
	int fd, ret;

	memset(ks, 0, sizeof(*ks));
	fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		ks->dev_userfaultfd = true;
		close(fd);
	}
	fd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (fd >= 0) {
		ks->syscall = true;
		close(fd);
	}
	ret = wps_uffd_supported(ctx, &ks->features);
	if (ret)
		return ret;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		struct pm_scan_arg a = { .size = sizeof(a) };

		ks->pagemap_scan = ioctl(fd, PAGEMAP_SCAN, &a) >= 0;
		close(fd);
	}
	return 0;
}
