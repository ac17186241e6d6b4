/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest-memory reader (base/memsrc.h): choosing where a region is
 * read, the process_vm_readv loop and its one error message, and the
 * copy of a run into a sink. Owns only the memfd mapping it makes;
 * nothing here knows userfaultfd: reads are plain reads, which is why
 * they see write-protected memory as it was frozen.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "base/log.h"
#include "base/memsrc.h"

int wps_memsrc_open(struct wps_memsrc *m, struct wps_ctx *ctx, pid_t pid,
		    const struct wps_region *r)
{
	wps_memsrc_init_remote(m, ctx, pid, r->host_addr, r->size);
	if (!pid) {
		m->direct = (const uint8_t *)(uintptr_t)r->host_addr;
		return 0;
	}
	if (r->local) {
		m->direct = r->local;
		return 0;
	}
	/* Anonymous memory of another process has no view of ours: it is
	 * copied through the kernel, from the owner's address space. */
	if (r->fd < 0 || r->backing == WPS_BACKING_ANON)
		return 0;
	/* A memfd: the same page cache as the guest's mapping, so what we
	 * read is what the guest sees, without a copy. */
	m->map = mmap(NULL, r->size, PROT_READ, MAP_SHARED, r->fd,
		      (off_t)r->fd_offset);
	if (m->map == MAP_FAILED) {
		int err = errno;

		m->map = NULL;
		wps_err(ctx, "cannot map the memfd of region 0x%llx of process "
			"%d (%llu bytes at offset %llu): %s",
			(unsigned long long)r->host_addr, (int)pid,
			(unsigned long long)r->size,
			(unsigned long long)r->fd_offset, strerror(err));
		return -err;
	}
	m->direct = m->map;
	return 0;
}

void wps_memsrc_init_remote(struct wps_memsrc *m, struct wps_ctx *ctx,
			    pid_t pid, uint64_t addr, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	m->ctx = ctx;
	m->pid = pid;
	m->addr = addr;
	m->size = size;
}

void wps_memsrc_close(struct wps_memsrc *m)
{
	if (m->map)
		munmap(m->map, m->size);
	memset(m, 0, sizeof(*m));
}

/* The read loop. On failure *bad is the owner's address of the first
 * byte not read. */
static int copy_out(const struct wps_memsrc *m, uint64_t off, void *dst,
		    uint64_t len, uint64_t *bad)
{
	uint64_t done = 0;

	*bad = m->addr + off;
	if (off > m->size || len > m->size - off)
		return -EINVAL;
	if (m->direct) {
		memcpy(dst, m->direct + off, len);
		return 0;
	}
	while (done < len) {
		struct iovec l = { (uint8_t *)dst + done, len - done };
		struct iovec rv = {
			(void *)(uintptr_t)(m->addr + off + done), len - done
		};
		ssize_t n = process_vm_readv(m->pid, &l, 1, &rv, 1, 0);

		if (n <= 0) {
			/* A partial read stops at the first page it could
			 * not read; retrying from there makes the kernel
			 * say why. n == 0 without an error: nothing we can
			 * name. */
			*bad = m->addr + off + done;
			return n < 0 ? -errno : -EIO;
		}
		done += (uint64_t)n;
	}
	return 0;
}

int wps_memsrc_try_read(const struct wps_memsrc *m, uint64_t off, void *dst,
			uint64_t len)
{
	uint64_t bad;

	return copy_out(m, off, dst, len, &bad);
}

int wps_memsrc_read(const struct wps_memsrc *m, uint64_t off, void *dst,
		    uint64_t len)
{
	uint64_t bad;
	int ret = copy_out(m, off, dst, len, &bad);

	if (ret == -EINVAL)
		wps_err(m->ctx, "reading process %d at 0x%llx: %llu bytes at "
			"offset %llu are outside its %llu-byte range",
			(int)m->pid, (unsigned long long)bad,
			(unsigned long long)len, (unsigned long long)off,
			(unsigned long long)m->size);
	else if (ret)
		wps_err(m->ctx, "reading process %d at 0x%llx: %s", (int)m->pid,
			(unsigned long long)bad, strerror(-ret));
	return ret;
}

int wps_memsrc_put(const struct wps_memsrc *m, const struct wps_sink *s,
		   enum wps_lane lane, unsigned int r, uint64_t off,
		   uint64_t len, void *bounce, size_t bounce_size)
{
	int ret = 0;

	if (m->direct)
		return s->ops->put(s->priv, lane, r, off, m->direct + off, len);
	while (len && !ret) {
		uint64_t n = len < bounce_size ? len : bounce_size;

		ret = wps_memsrc_read(m, off, bounce, n);
		if (!ret)
			ret = s->ops->put(s->priv, lane, r, off, bounce, n);
		off += n;
		len -= n;
	}
	return ret;
}
