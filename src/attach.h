/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internals of the attach module (src/attach.c): the view of a target's
 * mappings from /proc/PID/maps and which of them a snapshot can take.
 * Kept apart from the ptrace side so the selection rules can be read (and
 * tested) on their own.
 */
#ifndef WPS_ATTACH_INT_H
#define WPS_ATTACH_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

struct wps_attach_vma {
	uint64_t start, end, offset, inode;
	char perms[5];
	char path[256];         /* truncated: used to classify and name */
};

enum wps_attach_kind {
	WPS_ATTACH_SKIP = 0,    /* nothing a snapshot can take */
	WPS_ATTACH_ANON,        /* private anonymous: heap, thread stacks */
	WPS_ATTACH_STACK,       /* the main [stack]: only when chosen */
	WPS_ATTACH_SHARED,      /* shared: taken if its file is on tmpfs
				   (memfd, /dev/shm, SysV, shared anon) or,
				   when chosen, hugetlbfs */
	WPS_ATTACH_HUGETLB_PRIVATE, /* never: no second view to read it */
};

/* Every mapping of pid, in address order. *out is malloc'ed. */
int wps_attach_read_vmas(struct wps_ctx *ctx, pid_t pid,
			 struct wps_attach_vma **out, unsigned int *nr);

enum wps_attach_kind wps_attach_classify(const struct wps_attach_vma *v);

#endif /* WPS_ATTACH_INT_H */
