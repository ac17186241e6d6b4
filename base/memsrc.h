/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one guest-memory reader: where a region's bytes are, and how to
 * copy them out. Used by the snapshot engine (wp/engine.c), the
 * checkpointer (src/checkpoint.c) and attach (src/attach.c).
 *
 * The bytes are in one of three places:
 *  - our own address space (the guest is this process, or the caller
 *    gave us its own mapping): `direct` points at them;
 *  - a memfd of another process: we map it read-only and shared, so the
 *    page cache is the guest's and `direct` points into our mapping;
 *  - another process's anonymous memory, which has no view of ours:
 *    `direct` is NULL and reads go through process_vm_readv.
 * Reads never fault a page in for writing and never trip uffd
 * write-protection, so readers see protected (frozen) content.
 *
 * Invariant: a source is plain data once open (no thread state, no fd);
 * any number of threads may read it concurrently, each with its own
 * bounce buffer. A zeroed struct is a valid closed source.
 */
#ifndef WPS_MEMSRC_H
#define WPS_MEMSRC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/sink.h>
#include <wpsnap/wpsnap.h>

struct wps_memsrc {
	struct wps_ctx *ctx;
	pid_t pid;              /* owner of the memory; 0: this process */
	uint64_t addr;          /* the owner's address of byte 0 */
	uint64_t size;
	const uint8_t *direct;  /* the bytes, readable here; NULL: remote */
	void *map;              /* our own mapping of the memfd (NULL: none) */
};

/*
 * Where region r of process pid (0: this process) can be read: its own
 * address for pid 0, else r->local when given, else (anonymous memory or
 * no fd) process_vm_readv, else our own read-only shared mapping of
 * r->fd. 0, or -errno (the mapping failed; logged).
 */
int wps_memsrc_open(struct wps_memsrc *m, struct wps_ctx *ctx, pid_t pid,
		    const struct wps_region *r);
/* A range of another process's address space, read with
 * process_vm_readv (e.g. a library's text). Cannot fail. */
void wps_memsrc_init_remote(struct wps_memsrc *m, struct wps_ctx *ctx,
			    pid_t pid, uint64_t addr, uint64_t size);
/* Unmaps what open mapped; the struct is then zeroed. */
void wps_memsrc_close(struct wps_memsrc *m);

/* The bytes at off, when readable here without a copy (zero-copy path);
 * NULL for remote memory. */
static inline const uint8_t *wps_memsrc_direct(const struct wps_memsrc *m,
					       uint64_t off)
{
	return m->direct ? m->direct + off : NULL;
}

/*
 * Copy len bytes at off into dst, looping over short reads. 0, or
 * -errno: EINVAL when [off, off + len) is outside the source, else the
 * read's error (EFAULT: not mapped there, ESRCH: the process is gone;
 * EIO when the kernel reads nothing without saying why). wps_memsrc_read
 * logs "reading process P at 0xADDR: ERR" naming the first byte that
 * could not be read; wps_memsrc_try_read is silent, for callers to whom
 * a failure is an answer (probing), not an error.
 */
int wps_memsrc_read(const struct wps_memsrc *m, uint64_t off, void *dst,
		    uint64_t len);
int wps_memsrc_try_read(const struct wps_memsrc *m, uint64_t off, void *dst,
			uint64_t len);

/*
 * Put len bytes at off (multiples of 4096) into sink s as region r, lane
 * lane, at the same offset: straight from `direct` when there is one,
 * else through bounce (bounce_size bytes, a multiple of 4096) in pieces.
 * 0, or the first -errno of a read (logged) or of the sink.
 */
int wps_memsrc_put(const struct wps_memsrc *m, const struct wps_sink *s,
		   enum wps_lane lane, unsigned int r, uint64_t off,
		   uint64_t len, void *bounce, size_t bounce_size);

#endif /* WPS_MEMSRC_H */
