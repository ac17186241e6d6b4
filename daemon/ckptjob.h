/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checkpoint-series kind of job (ckptjob.c): what commands.c starts
 * and recognises. job.c does not include this: it reaches the kind
 * through the job's ops only (job.h).
 */
#ifndef WPSD_CKPTJOB_H
#define WPSD_CKPTJOB_H

#include "daemon/job.h"

/* j->ops of a checkpoint series (wps-checkpoint-stop stops only these). */
extern const struct wpsd_job_ops wpsd_ckpt_ops;

/* wps-checkpoint-start. */
int wpsd_ckpt_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		    struct wpsd_reply *r);

#endif /* WPSD_CKPTJOB_H */
