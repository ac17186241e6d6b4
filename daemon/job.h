/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Jobs: one worker thread per running job of a guest, and the pause
 * handshake with the guest's VMM. The worker never touches a socket: it
 * posts what the loop should send (flags under the job's lock, then an
 * eventfd kick) and waits on a condition variable for the VMM's answer,
 * with a timeout.
 *
 * What a job does is its kind, an ops table (struct wpsd_job_ops) that
 * the kind's file owns: snapshot and transaction (job.c), checkpoint
 * series (ckptjob.c, ckptjob.h), lazy restore (restorejob.c,
 * restorejob.h), a libvirt domain's snapshot and restore (vmjob.c,
 * vmjob.h). The calls go one way: a kind file uses the helpers
 * below, and job.c reaches a kind only through j->ops, never by name, so
 * a new kind is a new file and a table, not another branch here.
 *
 * Most jobs belong to a registered guest (j->g, the guest's one job
 * slot). A job of no guest (j->g NULL: a libvirt domain's, which wpsnapd
 * reaches through libvirt, not through a VMM) lives in d->jobs instead,
 * is found by its token, never pauses through a VMM, and leaves its
 * summary in d->jobs_done (the last WPSD_JOBS_DONE_MAX) for queries.
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

#define WPSD_PAUSE_TIMEOUT_MS 2000
#define WPSD_JOBS_DONE_MAX 32   /* summaries kept of ended guestless jobs */

struct wpsd_job;

/*
 * A kind of job. All hooks run on the loop thread except paused (the
 * worker's, inside the pause). NULL hooks mean "nothing to do".
 */
struct wpsd_job_ops {
	/* what the guest is busy with: "already has a <name> running" */
	const char *name;
	/* why wps-snapshot-cancel refuses it, after "guest 'NAME' "; NULL:
	 * it can be cancelled */
	const char *no_cancel;
	/* the VMM may hand device state with its pause ack */
	bool device_state;
	/* Worker, the guest paused (the VMM answered or the caller had
	 * paused): work that must see that instant; an error fails the
	 * pause and the guest is resumed at once. */
	int (*paused)(struct wpsd_job *j);
	/* query-guests' word while no pause is pending */
	const char *(*status)(struct wpsd_job *j);
	/* query-snapshot and friends: a new reference */
	json_t *(*query)(struct wpsd_job *j);
	/* after the job is marked cancelled (and its waits woken) */
	void (*cancel)(struct wpsd_job *j);
	/* send what the worker posted besides pause/resume */
	void (*poll)(struct wpsd_job *j);
	/* progress events; the kind updates j->last_progress_ns when it
	 * sends (called when WPSD_PROGRESS_MS have passed since) */
	void (*progress)(struct wpsd_job *j, uint64_t now);
	/* Worker joined: the final events (tell: send them), g->last. The
	 * job is freed next. */
	void (*reaped)(struct wpsd_job *j, bool tell);
	/* the kind's own state (j->priv, snapshot fields), before j->ctx */
	void (*free)(struct wpsd_job *j);
};

struct wpsd_job {
	const struct wpsd_job_ops *ops;
	void *priv;                     /* owned by the kind (ops->free) */
	struct wpsd *d;
	struct wpsd_guest *g;           /* NULL: a job of no guest */
	struct wpsd_job *next;          /* in d->jobs (no guest only) */
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

/* A job of no guest: its summary once it ended, for queries (steals
 * s). */
void wpsd_jobs_remember(struct wpsd *d, json_t *s);
/* By token: the running job's query or the kept summary, a new
 * reference; NULL: no such job (or forgotten). token 0: an array of
 * every running one's and every kept summary. */
json_t *wpsd_jobs_query(struct wpsd *d, uint64_t token);

/* For the kinds: a job of guest g (NULL: of no guest) and kind ops
 * with its lock, condition, token and default pause timeout; its pause
 * handshake as library callbacks (arg: the job); freeing (worker
 * joined). */
struct wpsd_job *wpsd_job_alloc(struct wpsd *d, struct wpsd_guest *g,
				const struct wpsd_job_ops *ops);
/* Route j->ctx's log through the daemon's, keeping the first error as
 * the job's cause. */
void wpsd_job_set_log(struct wpsd_job *j);
/* The device state of the job's last pause: handed with the VMM's ack
 * (read now), else the guest's registration blob; *buf is malloc'd, NULL
 * when there is none. */
int wpsd_job_take_device_state(struct wpsd_job *j, void **buf, size_t *len);
/* Start j's worker fn; on success j is the guest's job (or in d->jobs)
 * and the reply is its token. */
int wpsd_job_launch(struct wpsd_job *j, void *(*fn)(void *),
		    struct wpsd_reply *r);
int wpsd_job_pause(void *arg);
int wpsd_job_resume(void *arg);
void wpsd_job_free(struct wpsd_job *j);

/* Dispatched to the kind ("pausing" while a pause is pending). */
const char *wpsd_job_status(struct wpsd_job *j);
json_t *wpsd_job_query(struct wpsd_job *j);

#endif /* WPSD_JOB_H */
