/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap: snapshots of an unmodified process.
 *
 * wps_attach_new() seizes every thread of the process with ptrace, makes
 * one stopped thread create a userfaultfd (an injected syscall), takes that
 * fd over with pidfd_getfd() and closes the process's copy, and chooses
 * the memory to save from /proc/PID/maps, all while the process is
 * stopped, then lets it run (still held by ptrace). wps_attach_snapshot_new()
 * prepares a snapshot of it and checks that the mappings registered are
 * the ones chosen. wps_snapshot_freeze() stops the process once more, for
 * the freeze only, and detaches from it as it resumes it; the copy runs
 * with the process entirely free.
 *
 *	wps_attach_new(ctx, pid, NULL, 0, &at);      // stopped, runs again
 *	wps_attach_snapshot_new(at, &opts, &snap);
 *	wps_snapshot_freeze(snap);                   // stopped, then detached
 *	wps_snapshot_wait(snap);
 *	wps_snapshot_free(snap);
 *	wps_attach_free(at);                         // after the snapshot
 *
 * Needs root (or CAP_SYS_PTRACE and a permissive kernel.yama.ptrace_scope)
 * and an x86_64 target. On every failure the process is left as it was:
 * registers and code restored, its userfaultfd closed, all threads
 * detached.
 */
#ifndef WPSNAP_ATTACH_H
#define WPSNAP_ATTACH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

/* [start, end) in the target's address space, page aligned. */
struct wps_attach_range {
	uint64_t start, end;
};

struct wps_attach;

/*
 * Attach to process pid and choose its memory. ranges NULL (nr 0): every
 * writable private anonymous mapping ([heap], thread stacks, named anon;
 * not the main [stack], which may grow) and every shared shmem mapping
 * (memfd, /dev/shm, SysV, shared anonymous); hugetlb mappings and
 * anonymous ones larger than RAM (reserved address space such as a
 * sanitizer's shadow) are skipped with a warning. Explicit ranges may cover any such mapping, hugetlb
 * included, and may span several. On success the process runs again but
 * stays seized until the freeze (or wps_attach_free()): a signal sent to
 * it meanwhile waits for the freeze to be delivered.
 * Errors: -ESRCH (no such process, or it exited), -EPERM (ptrace refused,
 * or userfaultfd refused inside the process: seccomp, sysctl), -EINVAL
 * (a range that is not snapshottable memory), -EOPNOTSUPP (not x86_64).
 */
int wps_attach_new(struct wps_ctx *ctx, pid_t pid,
		   const struct wps_attach_range *ranges, unsigned int nr,
		   struct wps_attach **out);

/* The regions chosen: valid until wps_attach_free(). Their fds belong to
 * the attach object. */
const struct wps_region *wps_attach_regions(const struct wps_attach *at,
					    unsigned int *nr);

/*
 * wps_snapshot_new() of the chosen regions with base's path, flags and
 * tuning; pid and uffd are the attach object's. base's pause and resume,
 * if set, run around the attach's own stop of every thread: pause before
 * it (the process still runs and can, say, answer QMP stop), resume after
 * the threads are let go; so a VMM's own pause, too, lasts only for the
 * freeze. -EAGAIN if the process remapped a chosen range meanwhile. Once
 * only.
 */
int wps_attach_snapshot_new(struct wps_attach *at,
			    const struct wps_snapshot_opts *base,
			    struct wps_snapshot **out);

/*
 * Instead of a snapshot: hand the process's userfaultfd (not yet through
 * UFFDIO_API) to the caller, who owns it from now on, and let go of every
 * thread. For tracking writes over a long time (periodic checkpoints,
 * <wpsnap/checkpoint.h> with opts.pid), where holding the process under
 * ptrace would delay its signals. The regions stay valid until
 * wps_attach_free(). -EALREADY after a snapshot or a first call.
 */
int wps_attach_take_uffd(struct wps_attach *at, int *uffd);

struct wps_attach_info {
	pid_t pid;
	unsigned int threads;        /* seized at the attach */
	unsigned int skipped;        /* mappings left out (hugetlb, huge
					reservations) */
	uint64_t attach_stop_ns;     /* stopped to seize, choose, make the uffd */
	uint64_t freeze_stop_ns;     /* stopped for the freeze: first interrupt
					to last detach (stats.pause_ns counts
					from the last thread's stop) */
	uint64_t bytes;              /* sum of the regions' sizes */
};

void wps_attach_get_info(const struct wps_attach *at,
			 struct wps_attach_info *info);

/* Whether the whole process has exited (to name the cause of a failed
 * snapshot). */
bool wps_attach_exited(const struct wps_attach *at);

/*
 * Let go of every thread still held, at once (a no-op after the freeze,
 * which lets go by itself). ptrace belongs to the thread that attached:
 * call this from that thread when the snapshot will not be frozen there,
 * before another thread frees the objects. The snapshot can no longer be
 * frozen afterwards (-ESRCH).
 */
void wps_attach_detach(struct wps_attach *at);

/* Detach from whatever threads are still held, close the userfaultfd and
 * the regions' fds. Free the snapshot first. */
void wps_attach_free(struct wps_attach *at);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_ATTACH_H */
