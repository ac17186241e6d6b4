/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libvirt domain's snapshot and restore (vmjob.c): what commands.c
 * starts and queries. job.c does not include this: it reaches the kind
 * through the job's ops only (job.h).
 */
#ifndef WPSD_VMJOB_H
#define WPSD_VMJOB_H

#include "daemon/job.h"

/* Command handlers, as commands.c's table calls them (id unused: every
 * reply is immediate); the outcome is in r. */
/* vm-snapshot {domain, dir, connect?}: wps_vm_snapshot() in a worker. */
void wpsd_vm_snapshot(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r);
/* vm-restore {dir, name?, paused?, connect?}: wps_vm_restore(). */
void wpsd_vm_restore(struct wpsd_conn *c, json_t *args, json_t *id,
		     struct wpsd_reply *r);
/* vm-checkpoint {domain, dir, interval-ms?, count?, keep?, connect?}:
 * wps_vm_checkpoint(), an event per checkpoint, until count or vm-stop. */
void wpsd_vm_checkpoint(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r);
/* vm-stop {token}: end a vm-checkpoint series after the checkpoint under
 * way. */
void wpsd_vm_stop(struct wpsd_conn *c, json_t *args, json_t *id,
		  struct wpsd_reply *r);
/* query-vm {token?}: one job (running, or its kept summary), or all. */
void wpsd_vm_query(struct wpsd_conn *c, json_t *args, json_t *id,
		   struct wpsd_reply *r);

#endif /* WPSD_VMJOB_H */
