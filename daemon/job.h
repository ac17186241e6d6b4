/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot jobs: one worker thread per running snapshot (freeze, then
 * wait), and the pause handshake with the guest's VMM. The worker never
 * touches a socket: it posts what the loop should send (flags under the
 * job's lock, then an eventfd kick) and waits on a condition variable for
 * the VMM's answer, with a timeout.
 */
#ifndef WPSD_JOB_H
#define WPSD_JOB_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <wpsnap/wpsnap.h>

#include "daemon/guest.h"
#include "daemon/qmp.h"
#include "daemon/server.h"
#include "daemon/txn.h"

struct wpsd_ckpt;
struct wpsd_restore;

#define WPSD_PAUSE_TIMEOUT_MS 2000

struct wpsd_job {
	struct wpsd *d;
	struct wpsd_guest *g;
	struct wps_ctx *ctx;            /* own: captures the first error */
	/* owned. Set before the worker starts, or for an attached process
	 * by the worker itself under the lock (read it with the lock held
	 * or after post_frozen); once set it lives until job_free. NULL:
	 * not yet, the attach failed, or a transaction without memory. */
	struct wps_snapshot *snap;
	bool mem;                       /* a memory snapshot is wanted */
	struct wps_attach *at;          /* owned: attached process, or NULL */
	struct wps_snapshot_opts so;    /* for the worker's attach */
	struct wpsd_txn *txn;           /* owned; NULL: plain snapshot */
	struct wpsd_ckpt *ck;           /* owned; periodic checkpoints */
	struct wpsd_restore *rs;        /* owned; lazy restore */
	pthread_t th;
	bool th_started;
	char path[PATH_MAX];
	bool vcpus_paused;              /* the caller paused; no request */
	unsigned int pause_timeout_ms;
	uint64_t token;
	unsigned int reply_conn;        /* deferred start reply; 0: none */
	json_t *reply_id;               /* owned */
	uint64_t last_progress_ns;

	pthread_mutex_t lock;           /* guards everything below */
	pthread_cond_t cond;
	bool post_pause, post_resume, post_frozen, post_done;
	bool pausing;                   /* a pause request is outstanding */
	bool in_txn;                    /* disk actions running (paused) */
	int ack;                        /* 0 none, 1 paused, -1 VMM failed */
	int ds_fd;                      /* device state handed with the ack,
					   -1: none; the worker reads it */
	bool cancelled;
	int freeze_ret, result;
	uint64_t handshake_ns;          /* pause request .. vcpus paused */
	char cause[512];
	struct wps_snapshot_stats st;
};

/* wps-snapshot-start. r->deferred when the reply waits for the freeze. */
int wpsd_job_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		   json_t *id, struct wpsd_reply *r);
/* transaction: disk actions (and at most one memory snapshot) in one
 * pause; the reply is always deferred until the freeze is done. */
int wpsd_job_transaction(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r);
/* Stop a job; why becomes its cause unless it already has one. */
void wpsd_job_cancel(struct wpsd_job *j, const char *why);
/* wps-vcpus-paused / wps-vcpus-resumed from the guest's owner. */
/* ds_name: an fd (named with getfd) holding the guest's device state at
 * this pause, stored in the image as blob "device-state" (NULL: none). */
int wpsd_job_ack(struct wpsd_conn *c, uint64_t token, bool resumed,
		 const char *err, const char *ds_name, struct wpsd_reply *r);
/* Loop side: send what workers posted, reap finished jobs. */
void wpsd_jobs_poll(struct wpsd *d);
/* Loop side: progress events, at most every WPSD_PROGRESS_MS per job. */
void wpsd_jobs_progress(struct wpsd *d);
/* Shutdown: cancel every job and join its worker. */
void wpsd_jobs_shutdown(struct wpsd *d);
bool wpsd_jobs_active(const struct wpsd *d);

/* For other kinds of jobs (ckptjob.c): a job of guest g with its lock,
 * condition, token and default pause timeout; its pause handshake as
 * library callbacks (arg: the job); freeing (worker joined). */
struct wpsd_job *wpsd_job_alloc(struct wpsd *d, struct wpsd_guest *g);
/* Route j->ctx's log through the daemon's, keeping the first error as
 * the job's cause. */
void wpsd_job_set_log(struct wpsd_job *j);
/* The device state of the job's last pause: handed with the VMM's ack
 * (read now), else the guest's registration blob; *buf is malloc'd, NULL
 * when there is none. */
int wpsd_job_take_device_state(struct wpsd_job *j, void **buf, size_t *len);
/* Start j's worker fn; on success j is the guest's job and the reply is
 * its token. */
int wpsd_job_launch(struct wpsd_job *j, void *(*fn)(void *),
		    struct wpsd_reply *r);
int wpsd_job_pause(void *arg);
int wpsd_job_resume(void *arg);
void wpsd_job_free(struct wpsd_job *j);

/* Periodic checkpoints (ckptjob.c). */
int wpsd_ckpt_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		    struct wpsd_reply *r);
json_t *wpsd_ckpt_query(struct wpsd_job *j);
void wpsd_ckpt_poll(struct wpsd_job *j);       /* loop: send its events */
void wpsd_ckpt_reaped(struct wpsd_job *j, bool tell);
void wpsd_ckpt_free(struct wpsd_ckpt *ck);

/* Lazy restore into a registered guest (restorejob.c). */
int wpsd_restore_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		       struct wpsd_reply *r);
json_t *wpsd_restore_query(struct wpsd_job *j);
void wpsd_restore_reaped(struct wpsd_job *j, bool tell);
void wpsd_restore_free(struct wpsd_restore *rs);

const char *wpsd_job_status(struct wpsd_job *j);
json_t *wpsd_job_query(struct wpsd_job *j);

#endif /* WPSD_JOB_H */
