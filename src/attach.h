/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internals of the attach module (src/attach.c): which of a target's
 * mappings (base/procmaps.h) a snapshot can take.
 * Kept apart from the ptrace side so the selection rules can be read (and
 * tested) on their own.
 */
#ifndef WPS_ATTACH_INT_H
#define WPS_ATTACH_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <wpsnap/wpsnap.h>

#include "base/procmaps.h"

enum wps_attach_kind {
	WPS_ATTACH_SKIP = 0,    /* nothing a snapshot can take */
	WPS_ATTACH_ANON,        /* private anonymous: heap, thread stacks */
	WPS_ATTACH_STACK,       /* the main [stack]: only when chosen */
	WPS_ATTACH_SHARED,      /* shared: taken if its file is on tmpfs
				   (memfd, /dev/shm, SysV, shared anon) or,
				   when chosen, hugetlbfs */
	WPS_ATTACH_HUGETLB_PRIVATE, /* never: no second view to read it */
};

enum wps_attach_kind wps_attach_classify(const struct wps_maps_vma *v);

#endif /* WPS_ATTACH_INT_H */
