/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The lazy-restore kind of job (restorejob.c): what commands.c starts.
 * job.c does not include this: it reaches the kind through the job's ops
 * only (job.h).
 */
#ifndef WPSD_RESTOREJOB_H
#define WPSD_RESTOREJOB_H

#include "daemon/job.h"

/* wps-restore-start: lazy restore into a registered guest. */
int wpsd_restore_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		       struct wpsd_reply *r);

#endif /* WPSD_RESTOREJOB_H */
