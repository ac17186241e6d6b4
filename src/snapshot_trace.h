/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to the library and the bench: where a snapshot's slowest write
 * faults spent their time (wp/ftrace.h). Not public API: the record's
 * fields follow the engine's fault path and change with it.
 */
#ifndef WPS_SNAPSHOT_TRACE_H
#define WPS_SNAPSHOT_TRACE_H

#include <wpsnap/wpsnap.h>

#include "wp/ftrace.h"

/* Copy the trace out, slowest first. 0, or -EBUSY before
 * wps_snapshot_wait() returned. */
int wps_snapshot_fault_trace(struct wps_snapshot *s,
			     struct wps_fault_trace *out);

#endif /* WPS_SNAPSHOT_TRACE_H */
