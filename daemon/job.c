/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot jobs. The loop prepares the snapshot (so that "image exists" or
 * "bad region" is a synchronous error reply), then a worker thread runs
 * the freeze and waits for the copy; the loop never blocks on either.
 *
 * The pause handshake runs inside the freeze, in the worker: the library
 * calls our pause callback, we post WPS_PAUSE_REQUEST to the loop and wait
 * for the VMM's wps-vcpus-paused (or the timeout, or a cancel). After the
 * protection the resume callback posts WPS_RESUME_REQUEST and returns at
 * once: resuming is the VMM's business and needs no answer.
 *
 * A transaction (txn.c) rides on the same job: its disk actions run in
 * the pause callback, after the VMM's answer and before the library's
 * final protection, so disks and memory show one instant. A transaction
 * without a memory snapshot has a job without wps_snapshot; its worker
 * does the same handshake itself. A failed action makes the callback
 * fail: the library unprotects everything and publishes nothing, the
 * resume request goes out at once, and the worker rolls the performed
 * disk actions back before the (deferred) error reply.
 *
 * The job itself is kind-neutral: alloc/free, the worker's launch, the
 * pause handshake, the VMM's ack, polling, progress, reaping and
 * shutdown go through j->ops (job.h) and never name another kind. The
 * snapshot kind (and the transaction riding on it) lives here too, below
 * its ops tables; the other kinds live in their own files.
 *
 * Owns: the job, its worker thread, its wps_ctx; for the snapshot kind
 * its wps_snapshot, attach and txn.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/deadline.h"
#include "daemon/access.h"
#include "daemon/job.h"
#include "base/log.h"

static void job_log(void *arg, int level, const char *msg)
{
	struct wpsd_job *j = arg;

	if (level <= WPS_LOG_ERR) {
		pthread_mutex_lock(&j->lock);
		if (!j->cause[0])
			snprintf(j->cause, sizeof(j->cause), "%s", msg);
		pthread_mutex_unlock(&j->lock);
	}
	if (j->g)
		wps_log(j->d->ctx, level, "guest %s: %s", j->g->name, msg);
	else
		wps_log(j->d->ctx, level, "%s (token %" PRIu64 "): %s",
			j->ops->name, j->token, msg);
}

/* The loop's view of j->snap (see struct wpsd_job). */
static struct wps_snapshot *job_snap(struct wpsd_job *j)
{
	struct wps_snapshot *snap;

	pthread_mutex_lock(&j->lock);
	snap = j->snap;
	pthread_mutex_unlock(&j->lock);
	return snap;
}

static bool job_stopped(void *arg)
{
	struct wpsd_job *j = arg;
	bool stop;

	pthread_mutex_lock(&j->lock);
	stop = j->cancelled;
	pthread_mutex_unlock(&j->lock);
	return stop;
}

/* Worker, guest paused: the transaction's disk actions. */
static int job_txn_commit(struct wpsd_job *j)
{
	char cause[sizeof(j->cause)] = "";
	int ret;

	pthread_mutex_lock(&j->lock);
	j->in_txn = true;
	pthread_mutex_unlock(&j->lock);
	ret = wpsd_txn_commit(j->txn, job_stopped, j, cause, sizeof(cause));
	pthread_mutex_lock(&j->lock);
	j->in_txn = false;
	if (ret)   /* ours beats whatever the library logs about it */
		snprintf(j->cause, sizeof(j->cause), "%s", cause);
	pthread_mutex_unlock(&j->lock);
	return ret;
}

/* Worker thread, inside wps_snapshot_freeze() (or job_main without a
 * snapshot). For a transaction the disk actions run here, last. */
static int job_pause(void *arg)
{
	struct wpsd_job *j = arg;
	struct timespec dl;
	uint64_t t0;
	int ret = 0;

	/* The caller paused already: no request; a transaction's disk
	 * actions still run here, inside that pause. */
	if (j->vcpus_paused)
		return j->ops->paused ? j->ops->paused(j) : 0;
	dl = wps_deadline_from_ms(j->pause_timeout_ms);
	t0 = wps_now_ns();
	pthread_mutex_lock(&j->lock);
	if (j->cancelled) {
		pthread_mutex_unlock(&j->lock);
		return -ECANCELED;
	}
	j->pausing = true;
	j->ack = 0;
	j->post_pause = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);

	pthread_mutex_lock(&j->lock);
	while (!j->ack && !j->cancelled && !ret)
		ret = -pthread_cond_timedwait(&j->cond, &j->lock, &dl);
	if (j->ack > 0) {
		ret = 0;
		j->handshake_ns = wps_now_ns() - t0;
	} else if (j->ack < 0) {
		ret = -EIO;   /* cause: the VMM's own words, set by the ack */
	} else if (j->cancelled) {
		ret = -ECANCELED;
	} else {
		ret = -ETIMEDOUT;
		snprintf(j->cause, sizeof(j->cause), "pause timed out: the VMM did "
			 "not answer WPS_PAUSE_REQUEST (token %" PRIu64 ") within "
			 "%u ms; nothing was protected", j->token,
			 j->pause_timeout_ms);
	}
	j->pausing = false;
	pthread_mutex_unlock(&j->lock);
	if (!ret && j->ops->paused)
		ret = j->ops->paused(j);
	/* A VMM that paused late (or half-way) must not stay paused; after a
	 * failed disk action it resumes now, the rollback needs no pause. */
	if (ret) {
		pthread_mutex_lock(&j->lock);
		j->post_resume = true;
		pthread_mutex_unlock(&j->lock);
		wpsd_notify(j->d);
	}
	return ret;
}

static int job_resume(void *arg)
{
	struct wpsd_job *j = arg;

	if (j->vcpus_paused)
		return 0;   /* the start reply (after the freeze) resumes it */
	pthread_mutex_lock(&j->lock);
	j->post_resume = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
	return 0;
}

/*
 * The freeze failed after (or while) disk actions were performed: name
 * the culprit if no disk action did, and undo what was done. The guest
 * already runs again (resume posted by job_pause, or by the library).
 */
static void job_txn_abort(struct wpsd_job *j, int err)
{
	char cause[sizeof(j->cause)];
	struct wpsd_txn *t = j->txn;
	size_t n = 0;

	if (t->failed < 0 && t->mem >= 0)
		n = (size_t)snprintf(cause, sizeof(cause), "action %d (memory-snapshot): ",
				     t->mem);
	else if (t->failed < 0)
		n = (size_t)snprintf(cause, sizeof(cause), "pause: ");
	pthread_mutex_lock(&j->lock);
	snprintf(cause + n, sizeof(cause) - n, "%s",
		 j->cause[0] ? j->cause : strerror(-err));
	pthread_mutex_unlock(&j->lock);
	wpsd_txn_rollback(t, cause, sizeof(cause));
	pthread_mutex_lock(&j->lock);
	snprintf(j->cause, sizeof(j->cause), "%s", cause);
	pthread_mutex_unlock(&j->lock);
}

/* Worker, guest running again: the clones' fsyncs. A failure after the
 * instant still fails the whole transaction: the memory snapshot is
 * cancelled, the disk actions are rolled back. */
static int job_txn_sync(struct wpsd_job *j)
{
	char cause[sizeof(j->cause)] = "";
	int ret;

	ret = wpsd_txn_sync(j->txn, cause, sizeof(cause));
	if (!ret)
		return 0;
	pthread_mutex_lock(&j->lock);
	snprintf(j->cause, sizeof(j->cause), "%s", cause);
	pthread_mutex_unlock(&j->lock);
	if (j->snap) {
		wps_snapshot_cancel(j->snap);
		wps_snapshot_wait(j->snap);   /* removes the .partial */
	}
	return ret;
}

/*
 * Worker: attach to an unmodified process and prepare its snapshot. Here
 * rather than in the loop because ptrace belongs to the thread that
 * seized: the freeze that stops the process again and lets it go must run
 * on this thread. A cancel before the snapshot is published is seen here.
 */
static int job_attach(struct wpsd_job *j)
{
	struct wpsd_guest *g = j->g;
	struct wps_snapshot *snap = NULL;
	struct wps_attach_info ai;
	int ret;

	ret = wps_attach_new(j->ctx, g->pid, g->ar, g->nar, &j->at);
	if (ret)
		return ret;
	ret = wps_attach_snapshot_new(j->at, &j->so, &snap);
	if (ret)
		return ret;
	wps_attach_get_info(j->at, &ai);
	wps_info(j->d->ctx, "guest %s: attached to process %d (%u threads, "
		 "stopped %.3f ms), %" PRIu64 " bytes chosen", g->name, (int)g->pid,
		 ai.threads, ai.attach_stop_ns / 1e6, ai.bytes);
	pthread_mutex_lock(&j->lock);
	j->snap = snap;
	ret = j->cancelled ? -ECANCELED : 0;
	pthread_mutex_unlock(&j->lock);
	return ret;
}

int wpsd_job_take_device_state(struct wpsd_job *j, void **buf, size_t *len)
{
	int fd, ret;

	*buf = NULL;
	*len = 0;
	pthread_mutex_lock(&j->lock);
	fd = j->ds_fd;
	j->ds_fd = -1;
	pthread_mutex_unlock(&j->lock);
	if (fd >= 0) {
		ret = wpsd_read_blob_fd(fd, buf, len);
		close(fd);
		return ret;
	}
	/* none at the pause: the one given at registration, if any */
	if (!j->g->blob)
		return 0;
	*buf = malloc(j->g->blob_len ? j->g->blob_len : 1);
	if (!*buf)
		return -ENOMEM;
	memcpy(*buf, j->g->blob, j->g->blob_len);
	*len = j->g->blob_len;
	return 0;
}

int wpsd_job_launch(struct wpsd_job *j, void *(*fn)(void *),
		    struct wpsd_reply *r)
{
	int ret = -pthread_create(&j->th, NULL, fn, j);

	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "cannot start a worker: %s",
			       strerror(-ret));
		return ret;
	}
	j->th_started = true;
	if (j->g) {
		j->g->job = j;
	} else {
		j->next = j->d->jobs;
		j->d->jobs = j;
	}
	r->ret = json_pack("{s:I}", "token", (json_int_t)j->token);
	return 0;
}

/*
 * Worker, guest running again: the device state of the pause becomes the
 * image's "device-state" blob. A failure fails the snapshot: an image
 * whose device state is not that of its memory would restore a broken
 * guest.
 */
static int job_device_state(struct wpsd_job *j)
{
	void *buf;
	size_t len;
	int ret;

	ret = wpsd_job_take_device_state(j, &buf, &len);
	if (!ret && buf)
		ret = wps_snapshot_add_blob(j->snap, WPSD_BLOB_NAME, buf, len);
	free(buf);
	if (ret) {
		pthread_mutex_lock(&j->lock);
		snprintf(j->cause, sizeof(j->cause), "device state handed with "
			 "wps-vcpus-paused: %s", ret == -EINVAL ? "not a memfd or "
			 "file of at most 256 MiB" : strerror(-ret));
		pthread_mutex_unlock(&j->lock);
		wps_snapshot_cancel(j->snap);
		wps_snapshot_wait(j->snap);   /* removes the .partial */
	}
	return ret;
}

static void *job_main(void *arg)
{
	struct wpsd_job *j = arg;
	bool frozen_posted = false;
	int ret = 0;

	if (j->txn)
		wpsd_txn_prepare(j->txn);
	if (j->g->attach) {
		ret = job_attach(j);
		if (!ret)
			ret = wps_snapshot_freeze(j->snap);
		/* Let go now, on this thread, whatever happened: the freeze
		 * has done so already unless it failed or never ran. */
		wps_attach_detach(j->at);
		if (ret && j->at && wps_attach_exited(j->at)) {
			pthread_mutex_lock(&j->lock);
			snprintf(j->cause, sizeof(j->cause), "process %d exited",
				 (int)j->g->pid);
			pthread_mutex_unlock(&j->lock);
			ret = -ESRCH;
		}
	} else if (j->snap) {
		ret = wps_snapshot_freeze(j->snap);
	} else {
		ret = job_pause(j);   /* handshake + disk actions */
		if (!ret)
			job_resume(j);
	}
	if (!ret && j->snap)
		ret = job_device_state(j);
	if (!ret && j->txn)
		ret = job_txn_sync(j);
	if (ret && j->txn)
		job_txn_abort(j, ret);
	/*
	 * When nothing runs on after the freeze (it failed, or there is no
	 * memory to copy) "frozen" and "done" are posted together: the loop
	 * then sends the (deferred) reply and reaps the job in one go, so a
	 * caller's next command never finds the guest still busy.
	 */
	if (!ret && j->snap) {
		pthread_mutex_lock(&j->lock);
		j->freeze_ret = 0;
		j->post_frozen = true;
		pthread_mutex_unlock(&j->lock);
		wpsd_notify(j->d);
		frozen_posted = true;
		ret = wps_snapshot_wait(j->snap);
	}
	if (j->snap)
		wps_snapshot_stats(j->snap, &j->st);
	pthread_mutex_lock(&j->lock);
	if (!frozen_posted) {
		j->freeze_ret = ret;
		j->post_frozen = true;
	}
	j->result = ret;
	j->post_done = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
	return NULL;
}

void wpsd_job_set_log(struct wpsd_job *j)
{
	wps_ctx_set_log_fn(j->ctx, job_log, j);
}

int wpsd_job_pause(void *arg)
{
	return job_pause(arg);
}

int wpsd_job_resume(void *arg)
{
	return job_resume(arg);
}

static void job_free(struct wpsd_job *j)
{
	if (j->ds_fd >= 0)
		close(j->ds_fd);
	if (j->ops->free)
		j->ops->free(j);   /* may still log through j->ctx */
	if (j->ctx)
		wps_ctx_free(j->ctx);
	json_decref(j->reply_id);
	pthread_cond_destroy(&j->cond);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

void wpsd_job_free(struct wpsd_job *j)
{
	job_free(j);
}

struct wpsd_job *wpsd_job_alloc(struct wpsd *d, struct wpsd_guest *g,
				const struct wpsd_job_ops *ops)
{
	struct wpsd_job *j = calloc(1, sizeof(*j));
	pthread_condattr_t ca;

	if (!j)
		return NULL;
	j->ops = ops;
	j->d = d;
	j->g = g;
	pthread_mutex_init(&j->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cond, &ca);
	pthread_condattr_destroy(&ca);
	j->pause_timeout_ms = WPSD_PAUSE_TIMEOUT_MS;
	j->token = ++d->next_token;
	j->ds_fd = -1;
	return j;
}

/* ---- the snapshot kind, and the transaction riding on it ---- */

static const char *snap_status(struct wpsd_job *j)
{
	struct wps_snapshot *snap;
	struct wps_progress p;
	bool in_txn;

	pthread_mutex_lock(&j->lock);
	in_txn = j->in_txn;
	pthread_mutex_unlock(&j->lock);
	if (in_txn || !j->mem)
		return "transaction";
	snap = job_snap(j);
	if (!snap)
		return "attaching";
	wps_snapshot_progress(snap, &p);
	switch (p.phase) {
	case WPS_PHASE_NEW: return "setup";
	case WPS_PHASE_FREEZING: return "freezing";
	case WPS_PHASE_COPYING: return "active";
	case WPS_PHASE_PUBLISHING: return "publishing";
	case WPS_PHASE_DONE: return "completed";
	case WPS_PHASE_FAILED: return "failed";
	case WPS_PHASE_CANCELLED: return "cancelled";
	}
	return "active";
}

static json_t *snap_query(struct wpsd_job *j)
{
	struct wps_snapshot *snap = job_snap(j);
	struct wps_progress p;

	if (!snap)
		return json_pack("{s:s,s:s,s:I}", "guest", j->g->name, "status",
				 wpsd_job_status(j), "token", (json_int_t)j->token);
	wps_snapshot_progress(snap, &p);
	return json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I}",
			 "guest", j->g->name, "status", wpsd_job_status(j),
			 "path", j->path, "token", (json_int_t)j->token,
			 "bytes-done", (json_int_t)p.bytes_done,
			 "bytes-total", (json_int_t)p.bytes_total,
			 "pages-done", (json_int_t)(p.bytes_done / 4096),
			 "pages-total", (json_int_t)(p.bytes_total / 4096),
			 "faults", (json_int_t)p.faults);
}

static void snap_cancel(struct wpsd_job *j)
{
	struct wps_snapshot *snap = job_snap(j);

	if (snap)
		wps_snapshot_cancel(snap);
}

static json_t *summary(struct wpsd_job *j, const char *status)
{
	const struct wps_snapshot_stats *st = &j->st;
	json_t *s;

	s = json_pack("{s:s,s:s,s:s,s:I}", "guest", j->g->name, "status", status,
		      "path", j->path, "token", (json_int_t)j->token);
	if (!strcmp(status, "completed")) {
		json_t *f = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
			"pause-ns", (json_int_t)st->pause_ns,
			"handshake-ns", (json_int_t)j->handshake_ns,
			"protect-ns", (json_int_t)st->protect_ns,
			"total-ns", (json_int_t)st->total_ns,
			"populated-bytes", (json_int_t)st->populated_bytes,
			"saved-bytes", (json_int_t)st->saved_bytes,
			"image-data-bytes", (json_int_t)st->image_data_bytes,
			"image-file-bytes", (json_int_t)st->image_file_bytes,
			"faults", (json_int_t)st->faults,
			"faults-copied", (json_int_t)st->faults_copied,
			"fault-p50-ns", (json_int_t)st->fault_p50_ns,
			"fault-p99-ns", (json_int_t)st->fault_p99_ns,
			"fault-max-ns", (json_int_t)st->fault_max_ns);
		json_object_update(s, f);
		json_decref(f);
	} else if (!strcmp(status, "failed")) {
		json_object_set_new(s, "cause", json_string(j->cause[0] ? j->cause :
					strerror(-j->result)));
		json_object_set_new(s, "errno", json_string(strerrorname_np(-j->result) ?
					strerrorname_np(-j->result) : "?"));
	} else if (j->cause[0]) {
		json_object_set_new(s, "cause", json_string(j->cause));
	}
	return s;
}

static void snap_reaped(struct wpsd_job *j, bool tell)
{
	struct wpsd_guest *g = j->g;
	struct wpsd *d = j->d;
	const char *status;
	json_t *s;

	if (!j->mem) {
		/* Memory-less transaction: its reply said it all. */
		if (j->result)
			wps_warn(d->ctx, "guest %s: transaction (token %" PRIu64 ") "
				 "failed: %s", g->name, j->token, j->cause);
		else
			wps_info(d->ctx, "guest %s: transaction (token %" PRIu64 ") "
				 "done", g->name, j->token);
		return;
	}
	status = !j->result ? "completed" :
		 j->result == -ECANCELED ? "cancelled" : "failed";
	s = summary(j, status);
	if (j->result && j->result != -ECANCELED)
		wps_warn(d->ctx, "guest %s: snapshot %s failed: %s", g->name, j->path,
			 json_string_value(json_object_get(s, "cause")));
	else
		wps_info(d->ctx, "guest %s: snapshot %s %s", g->name, j->path, status);
	json_decref(g->last);
	g->last = s;
	if (tell)
		wpsd_broadcast(d, !j->result ? "WPS_SNAPSHOT_COMPLETED" :
			       j->result == -ECANCELED ? "WPS_SNAPSHOT_CANCELLED" :
			       "WPS_SNAPSHOT_FAILED", json_deep_copy(s));
}

/* The deferred reply once frozen. The worker wrote the txn's figures
 * before it posted post_frozen under the lock, so they are visible. */
static json_t *job_frozen_return(struct wpsd_job *j)
{
	json_t *ret = json_pack("{s:I}", "token", (json_int_t)j->token);
	uint64_t hs;

	if (!j->txn)
		return ret;
	pthread_mutex_lock(&j->lock);
	hs = j->handshake_ns;
	pthread_mutex_unlock(&j->lock);
	json_object_set_new(ret, "handshake-ns", json_integer((json_int_t)hs));
	json_object_set_new(ret, "disk-ns", json_integer((json_int_t)j->txn->disk_ns));
	json_object_set_new(ret, "sync-ns", json_integer((json_int_t)j->txn->sync_ns));
	json_object_set_new(ret, "actions", wpsd_txn_result(j->txn));
	return ret;
}

/* Frozen: WPS_SNAPSHOT_FROZEN and the deferred reply, success or not. */
static void snap_poll(struct wpsd_job *j)
{
	struct wpsd *d = j->d;
	struct wpsd_conn *rc;
	char cause[512];
	bool frozen;
	int fret;

	pthread_mutex_lock(&j->lock);
	frozen = j->post_frozen;
	j->post_frozen = false;
	fret = j->freeze_ret;
	snprintf(cause, sizeof(cause), "%s", j->cause);
	pthread_mutex_unlock(&j->lock);
	if (!frozen)
		return;
	if (!fret && j->mem)
		wpsd_broadcast(d, "WPS_SNAPSHOT_FROZEN",
			       json_pack("{s:s,s:s,s:I}", "guest", j->g->name,
					 "path", j->path, "token",
					 (json_int_t)j->token));
	rc = j->reply_conn ? wpsd_conn_by_id(d, j->reply_conn) : NULL;
	if (rc && !fret)
		wpsd_send(rc, wpsd_return(job_frozen_return(j), j->reply_id));
	else if (rc)
		wpsd_send(rc, wpsd_error(WPSD_GENERIC, cause[0] ? cause :
				strerror(-fret), j->reply_id));
	j->reply_conn = 0;
}

/* While copying or publishing (an attach not yet done has nothing). */
static void snap_progress(struct wpsd_job *j, uint64_t now)
{
	struct wps_snapshot *snap = job_snap(j);
	struct wps_progress p;

	if (!snap)
		return;
	j->last_progress_ns = now;
	wps_snapshot_progress(snap, &p);
	if (p.phase != WPS_PHASE_COPYING && p.phase != WPS_PHASE_PUBLISHING)
		return;
	wpsd_broadcast(j->d, "WPS_SNAPSHOT_PROGRESS", snap_query(j));
}

static void snap_free(struct wpsd_job *j)
{
	if (j->snap)
		wps_snapshot_free(j->snap);
	wps_attach_free(j->at);   /* after its snapshot; let go already */
	wpsd_txn_free(j->txn);
}

/* The transaction rides on the snapshot: the same hooks, plus its disk
 * actions inside the pause (a device state goes with memory: j->mem). */
#define SNAP_HOOKS \
	.status = snap_status, .query = snap_query, .cancel = snap_cancel, \
	.poll = snap_poll, .progress = snap_progress, .reaped = snap_reaped, \
	.free = snap_free

static const struct wpsd_job_ops snap_ops = {
	.name = "snapshot",
	SNAP_HOOKS,
};

static const struct wpsd_job_ops txn_ops = {
	.name = "transaction",
	.paused = job_txn_commit,
	SNAP_HOOKS,
};

/* ---- starting a snapshot or a transaction ---- */

static const struct wpsd_arg start_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "path", WPSD_T_STR, true },
	{ "overwrite", WPSD_T_BOOL, false },
	{ "vcpus-paused", WPSD_T_BOOL, false },
	{ "pause-timeout-ms", WPSD_T_UINT, false },
	{ "freeze-simple", WPSD_T_BOOL, false },
	{ "buffer-budget", WPSD_T_UINT, false },
	{ "fault-window", WPSD_T_UINT, false },
	{ NULL, 0, false },
};

/*
 * Prepare and start a job: a plain snapshot (txn NULL), a transaction
 * with a memory snapshot (args: its wps-snapshot-start arguments), or one
 * without (args: guest and pause-timeout-ms only). Takes txn in all cases.
 */
static int job_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		     struct wpsd_txn *txn, json_t *id, struct wpsd_reply *r)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	bool mem = !txn || txn->mem >= 0;
	struct wpsd *d = c->d;
	struct wpsd_job *j = NULL;
	const char *path = "";
	json_t *v;
	int ret;

	if (mem) {
		ret = wpsd_args_check(args, start_spec, "arguments", r);
		if (ret)
			goto fail_txn;
		path = json_string_value(json_object_get(args, "path"));
	}
	if (g->job) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' already has a %s running",
			       g->name, g->job->ops->name);
		ret = -EBUSY;
		goto fail_txn;
	}
	if (g->attach && txn) {
		/* The attach's own stop is the pause; disk actions would have
		 * to run inside it. Not yet: say so rather than half do it. */
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is an attached process: "
			       "transactions need a guest registered by its VMM",
			       g->name);
		ret = -EOPNOTSUPP;
		goto fail_txn;
	}
	if (g->attach && json_is_true(json_object_get(args, "vcpus-paused"))) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is an attached process: "
			       "wpsnapd stops it itself (vcpus-paused does not apply)",
			       g->name);
		ret = -EINVAL;
		goto fail_txn;
	}
	if (mem && !g->attach && g->uffd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has no fresh userfaultfd "
			       "(the last snapshot spent it); its VMM must hand over a "
			       "new one with wps-guest-set-uffd", g->name);
		ret = -EAGAIN;
		goto fail_txn;
	}
	if (mem && (path[0] != '/' || strlen(path) >= PATH_MAX - 16)) {
		wpsd_reply_err(r, WPSD_GENERIC, "path must be absolute (wpsnapd runs in /)");
		ret = -EINVAL;
		goto fail_txn;
	}
	if (mem && (ret = wpsd_access_path(c, WPSD_ACCESS_IMAGE, path,
			json_is_true(json_object_get(args, "overwrite")), r)))
		goto fail_txn;
	j = wpsd_job_alloc(d, g, txn ? &txn_ops : &snap_ops);
	if (!j) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		ret = -ENOMEM;
		goto fail_txn;
	}
	j->txn = txn;
	txn = NULL;
	snprintf(j->path, sizeof(j->path), "%s", path);
	j->vcpus_paused = json_is_true(json_object_get(args, "vcpus-paused"));
	v = json_object_get(args, "pause-timeout-ms");
	j->pause_timeout_ms = v ? (unsigned int)json_integer_value(v) :
				  WPSD_PAUSE_TIMEOUT_MS;
	if (v && (json_integer_value(v) < 1 || json_integer_value(v) > 600000)) {
		wpsd_reply_err(r, WPSD_GENERIC, "pause-timeout-ms must be 1..600000");
		ret = -EINVAL;
		goto fail;
	}
	if (!mem)
		goto start;

	ret = wps_ctx_new(&j->ctx);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "libwpsnap context: %s", strerror(-ret));
		goto fail;
	}
	wps_ctx_set_log_level(j->ctx, wps_ctx_get_log_level(d->ctx));
	wps_ctx_set_log_fn(j->ctx, job_log, j);

	so.path = j->path;
	if (json_is_true(json_object_get(args, "overwrite")))
		so.flags |= WPS_SNAP_OVERWRITE;
	if (json_is_true(json_object_get(args, "freeze-simple")))
		so.flags |= WPS_SNAP_FREEZE_SIMPLE;
	v = json_object_get(args, "buffer-budget");
	so.buffer_budget = v ? (uint64_t)json_integer_value(v) : 0;
	v = json_object_get(args, "fault-window");
	so.fault_window = v ? (unsigned int)json_integer_value(v) : 0;
	j->mem = true;
	if (g->attach) {
		/* Attached by the worker (job_attach); errors such as an
		 * existing image come with the deferred reply. */
		j->so = so;
		goto start;
	}
	so.pause = job_pause;
	so.resume = job_resume;
	so.pause_arg = j;
	so.uffd = g->uffd;
	so.pid = g->pid;
	ret = wps_snapshot_new(j->ctx, g->r, g->nr, &so, &j->snap);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s%s", j->cause[0] ? j->cause :
			       strerror(-ret), ret == -EEXIST ?
			       " (image exists; set \"overwrite\": true to replace it)" : "");
		goto fail_spent;
	}
start:
	if (j->vcpus_paused || j->txn || g->attach) {
		j->reply_conn = c->id;
		j->reply_id = json_incref(id);
		r->deferred = true;
	}
	ret = pthread_create(&j->th, NULL, job_main, j);
	if (ret) {
		ret = -ret;
		wpsd_reply_err(r, WPSD_GENERIC, "cannot start a worker: %s",
			       strerror(-ret));
		r->deferred = false;
		goto fail_spent;
	}
	j->th_started = true;
	g->job = j;
	j->last_progress_ns = wps_now_ns();
	if (j->txn)
		wps_info(d->ctx, "guest %s: transaction of %u action(s) started "
			 "(token %" PRIu64 "%s%s)", g->name, j->txn->nr, j->token,
			 mem ? ", memory to " : "", j->path);
	else
		wps_info(d->ctx, "guest %s: snapshot to %s started (token %" PRIu64 "%s)",
			 g->name, j->path, j->token,
			 j->vcpus_paused ? ", vcpus paused" : "");
	if (!r->deferred)
		r->ret = json_pack("{s:I}", "token", (json_int_t)j->token);
	return 0;

fail_spent:
	/* wps_snapshot_new may have negotiated the uffd before failing. */
	if (mem && g->uffd >= 0 && wpsd_uffd_negotiated(g->uffd) == 1) {
		close(g->uffd);
		g->uffd = -1;
		if (wpsd_conn_by_id(d, g->owner))
			wpsd_send_event(wpsd_conn_by_id(d, g->owner), "WPS_UFFD_REQUEST",
					json_pack("{s:s}", "guest", g->name));
	}
fail:
	job_free(j);
	return ret;
fail_txn:
	wpsd_txn_free(txn);
	return ret;
}

int wpsd_job_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		   json_t *id, struct wpsd_reply *r)
{
	return job_start(c, g, args, NULL, id, r);
}

int wpsd_job_transaction(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r)
{
	struct wpsd_txn *t = NULL;
	struct wpsd_guest *g;
	json_t *margs = NULL;
	const char *name;
	int ret;

	/* Everything is checked here, with the guest running. */
	ret = wpsd_txn_parse(c, args, &t, &margs, r);
	if (ret)
		return ret;
	name = json_string_value(json_object_get(args, "guest"));
	g = wpsd_guest_find(c->d, name);
	if (!g || g->doomed) {
		wpsd_reply_err(r, WPSD_NODEVICE, "no guest named '%s'", name);
		wpsd_txn_free(t);
		ret = -ENOENT;
		goto out;
	}
	if (!margs)
		margs = json_pack("{s:s}", "guest", name);
	if (json_object_get(args, "pause-timeout-ms"))
		json_object_set(margs, "pause-timeout-ms",
				json_object_get(args, "pause-timeout-ms"));
	if (json_object_get(args, "vcpus-paused"))
		json_object_set(margs, "vcpus-paused",
				json_object_get(args, "vcpus-paused"));
	ret = job_start(c, g, margs, t, id, r);
out:
	json_decref(margs);
	return ret;
}

/* ---- every kind: cancel, ack, status, reap, poll ---- */

void wpsd_job_cancel(struct wpsd_job *j, const char *why)
{
	pthread_mutex_lock(&j->lock);
	if (!j->cause[0] && why)
		snprintf(j->cause, sizeof(j->cause), "%s", why);
	j->cancelled = true;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	if (j->ops->cancel)
		j->ops->cancel(j);
}

int wpsd_job_ack(struct wpsd_conn *c, uint64_t token, bool resumed,
		 const char *err, const char *ds_name, struct wpsd_reply *r)
{
	int ds_fd = -1;
	struct wpsd_guest *g;
	struct wpsd_job *j;

	for (g = c->d->guests; g; g = g->next)
		if (g->job && g->job->token == token)
			break;
	/* wps-vcpus-resumed is informational, and a job may be gone by the
	 * time it arrives (a transaction without memory snapshot ends with
	 * its resume request): any token we issued is fine. */
	if (!g && resumed && token && token <= c->d->next_token) {
		r->ret = json_object();
		return 0;
	}
	if (!g || g->owner != c->id) {
		wpsd_reply_err(r, WPSD_GENERIC, "no snapshot of a guest of this "
			       "connection has token %" PRIu64, token);
		return -ENOENT;
	}
	j = g->job;
	if (resumed) {
		r->ret = json_object();
		return 0;
	}
	if (ds_name) {
		if (!j->mem && !j->ops->device_state) {
			wpsd_reply_err(r, WPSD_GENERIC, "device-state goes with a "
				       "memory snapshot's or a checkpoint's pause");
			return -EINVAL;
		}
		ds_fd = wpsd_conn_take_fd(c, ds_name);
		if (ds_fd < 0) {
			wpsd_reply_err(r, WPSD_GENERIC, "no fd named '%s' (send it "
				       "with getfd)", ds_name);
			return -ENOENT;
		}
	}
	pthread_mutex_lock(&j->lock);
	if (!j->pausing) {
		pthread_mutex_unlock(&j->lock);
		if (ds_fd >= 0)
			close(ds_fd);
		wpsd_reply_err(r, WPSD_GENERIC, "no pause request is pending for token "
			       "%" PRIu64 " (it timed out or was cancelled; a resume "
			       "request follows)", token);
		return -EALREADY;
	}
	if (err) {
		j->ack = -1;
		snprintf(j->cause, sizeof(j->cause), "the VMM could not pause its "
			 "vCPUs: %s", err);
	} else {
		j->ack = 1;
		if (ds_fd >= 0) {
			if (j->ds_fd >= 0)
				close(j->ds_fd);
			j->ds_fd = ds_fd;
			ds_fd = -1;
		}
	}
	if (ds_fd >= 0)
		close(ds_fd);
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
	r->ret = json_object();
	return 0;
}

const char *wpsd_job_status(struct wpsd_job *j)
{
	bool pausing;

	pthread_mutex_lock(&j->lock);
	pausing = j->pausing;
	pthread_mutex_unlock(&j->lock);
	if (pausing)
		return "pausing";
	return j->ops->status(j);
}

json_t *wpsd_job_query(struct wpsd_job *j)
{
	return j->ops->query(j);
}

/* The worker has finished: join it, tell everyone, release the job. */
static void job_reap(struct wpsd_job *j, bool tell)
{
	struct wpsd_guest *g = j->g;
	struct wpsd *d = j->d;
	struct wpsd_conn *owner;

	pthread_join(j->th, NULL);
	j->ops->reaped(j, tell);
	if (!g) {
		struct wpsd_job **p;

		for (p = &d->jobs; *p != j; p = &(*p)->next)
			;
		*p = j->next;
		job_free(j);
		return;
	}
	g->job = NULL;
	job_free(j);
	/* The uffd went through UFFDIO_API: no second snapshot can use it.
	 * (Only a memory snapshot leaves it so: a checkpoint series and a
	 * restore take theirs, and a fresh one is checked unused.) */
	if (g->uffd >= 0 && wpsd_uffd_negotiated(g->uffd) == 1) {
		close(g->uffd);
		g->uffd = -1;
		owner = wpsd_conn_by_id(d, g->owner);
		if (tell && owner && !g->doomed)
			wpsd_send_event(owner, "WPS_UFFD_REQUEST",
					json_pack("{s:s}", "guest", g->name));
	}
	if (g->doomed)
		wpsd_guest_remove(g);
}

static void job_poll_one(struct wpsd_job *j)
{
	bool pause, resume, done;
	struct wpsd_conn *owner;

	pthread_mutex_lock(&j->lock);
	pause = j->post_pause;
	resume = j->post_resume;
	done = j->post_done;
	j->post_pause = j->post_resume = false;
	pthread_mutex_unlock(&j->lock);

	/* a job of no guest has no VMM and never posts a pause */
	owner = j->g ? wpsd_conn_by_id(j->d, j->g->owner) : NULL;
	if (pause && owner)
		wpsd_send_event(owner, "WPS_PAUSE_REQUEST",
				json_pack("{s:s,s:I}", "guest", j->g->name,
					  "token", (json_int_t)j->token));
	else if (pause)
		wpsd_job_cancel(j, "the guest's VMM is not connected");
	if (resume && owner)
		wpsd_send_event(owner, "WPS_RESUME_REQUEST",
				json_pack("{s:s,s:I}", "guest", j->g->name,
					  "token", (json_int_t)j->token));
	/* the kind's events; a worker that is done posted them all before */
	if (j->ops->poll)
		j->ops->poll(j);
	if (done)
		job_reap(j, true);
}

void wpsd_jobs_poll(struct wpsd *d)
{
	struct wpsd_guest *g, *next;
	struct wpsd_job *j, *jn;

	for (g = d->guests; g; g = next) {
		next = g->next;   /* reaping may remove a doomed guest */
		if (g->job)
			job_poll_one(g->job);
	}
	for (j = d->jobs; j; j = jn) {
		jn = j->next;     /* reaping unlinks j */
		job_poll_one(j);
	}
}

void wpsd_jobs_progress(struct wpsd *d)
{
	uint64_t now = wps_now_ns();
	struct wpsd_guest *g;
	struct wpsd_job *j;

	for (g = d->guests; g; g = g->next)
		if (g->job && g->job->ops->progress &&
		    now - g->job->last_progress_ns >= WPSD_PROGRESS_MS * 1000000ull)
			g->job->ops->progress(g->job, now);
	for (j = d->jobs; j; j = j->next)
		if (j->ops->progress &&
		    now - j->last_progress_ns >= WPSD_PROGRESS_MS * 1000000ull)
			j->ops->progress(j, now);
}

bool wpsd_jobs_active(const struct wpsd *d)
{
	const struct wpsd_guest *g;

	for (g = d->guests; g; g = g->next)
		if (g->job)
			return true;
	return d->jobs != NULL;
}

void wpsd_jobs_shutdown(struct wpsd *d)
{
	struct wpsd_guest *g, *next;
	struct wpsd_job *j;

	for (g = d->guests; g; g = g->next)
		if (g->job)
			wpsd_job_cancel(g->job, "wpsnapd is shutting down");
	for (j = d->jobs; j; j = j->next)
		wpsd_job_cancel(j, "wpsnapd is shutting down");
	for (g = d->guests; g; g = next) {
		next = g->next;
		if (g->job)
			job_reap(g->job, false);
	}
	/* a kind that cannot stop early (a libvirt call) is waited for */
	while (d->jobs)
		job_reap(d->jobs, false);
	json_decref(d->jobs_done);
	d->jobs_done = NULL;
}

/* ---- jobs of no guest: found by token ---- */

void wpsd_jobs_remember(struct wpsd *d, json_t *s)
{
	if (!d->jobs_done)
		d->jobs_done = json_array();
	/* the oldest goes: a client that never queries costs nothing */
	if (json_array_size(d->jobs_done) >= WPSD_JOBS_DONE_MAX)
		json_array_remove(d->jobs_done, 0);
	json_array_append_new(d->jobs_done, s);
}

json_t *wpsd_jobs_query(struct wpsd *d, uint64_t token)
{
	json_t *all = token ? NULL : json_array(), *s;
	struct wpsd_job *j;
	size_t i;

	for (j = d->jobs; j; j = j->next)
		if (!token)
			json_array_append_new(all, wpsd_job_query(j));
		else if (j->token == token)
			return wpsd_job_query(j);
	json_array_foreach(d->jobs_done, i, s)
		if (!token)
			json_array_append(all, s);
		else if (json_integer_value(json_object_get(s, "token")) ==
			 (json_int_t)token)
			return json_deep_copy(s);
	return all;
}
