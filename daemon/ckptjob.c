/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Periodic checkpoints of a registered guest (wps-checkpoint-start,
 * -stop, query-checkpoint; docs/PROTOCOL.md). The loop prepares the
 * series (so that a bad directory or a spent uffd is the reply itself),
 * then a worker runs it: the library's checkpoint session
 * (<wpsnap/session.h>, the same loop as `wpsnap checkpoint`) with the
 * daemon's parts as its callbacks: the VMM's pause handshake for each
 * instant (the same WPS_PAUSE_REQUEST exchange as a snapshot, one per
 * checkpoint), the device state handed with that pause, a wait that the
 * job's cancel ends, and a WPS_CHECKPOINT event per durable checkpoint.
 * The job ends on wps-checkpoint-stop, after `count` checkpoints, or at
 * the first failure (an event says why); the uffd is then spent and the
 * VMM is asked for a fresh one.
 *
 * Owns: the session, the netbuf it borrows (freed after it), the events
 * the worker posts for the loop.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/checkpoint.h>
#include <wpsnap/netbuf.h>
#include <wpsnap/session.h>

#include "daemon/access.h"
#include "daemon/ckptjob.h"
#include "base/log.h"

struct wpsd_ckpt {
	struct wps_ckpt_session *s;
	char dir[PATH_MAX];
	unsigned int interval_ms;
	/* Output commit (docs/NETBUF.md): the guest's packets of an epoch
	 * leave once its checkpoint is durable. NULL: none. The session's
	 * while it runs; freed once the worker is joined. */
	struct wps_netbuf *nb;
	int netns_fd;            /* nb's namespace, open until nb is freed */
	/* under the job's lock */
	json_t *pending;         /* events for the loop to send */
	json_t *last;            /* the last checkpoint's figures */
	uint64_t done;
};

static struct wpsd_ckpt *ckpt_of(struct wpsd_job *j)
{
	return j->priv;
}

static const struct wpsd_arg ckpt_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "dir", WPSD_T_STR, true },
	{ "interval-ms", WPSD_T_UINT, false },
	{ "count", WPSD_T_UINT, false },
	{ "keep", WPSD_T_UINT, false },
	{ "overwrite", WPSD_T_BOOL, false },
	{ "pause-timeout-ms", WPSD_T_UINT, false },
	{ "netbuf", WPSD_T_OBJECT, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg netbuf_spec[] = {
	{ "ifname", WPSD_T_STR, true },
	{ "netns", WPSD_T_STR, false },
	{ "queue", WPSD_T_UINT, false },
	{ "backend", WPSD_T_STR, false },
	{ NULL, 0, false },
};

/* Hold the guest's output as "netbuf" asks: interface, namespace (a name
 * under /run/netns or a path), queue, backend. */
static int open_netbuf(struct wpsd_conn *c, struct wpsd_job *j, json_t *o,
		       struct wpsd_reply *r)
{
	struct wpsd_ckpt *ck = ckpt_of(j);
	struct wps_netbuf_opts no = WPS_NETBUF_OPTS_INIT;
	const char *ns = json_string_value(json_object_get(o, "netns"));
	const char *be = json_string_value(json_object_get(o, "backend"));
	int ret;

	ret = wpsd_args_check(o, netbuf_spec, "netbuf", r);
	if (ret)
		return ret;
	no.ifname = json_string_value(json_object_get(o, "ifname"));
	no.queue = (uint16_t)json_integer_value(json_object_get(o, "queue"));
	if (be && wps_netbuf_backend_parse(be, &no.backend)) {
		wpsd_reply_err(r, WPSD_GENERIC, "netbuf: backend is auto, nfqueue "
			       "or plug, not '%s'", be);
		return -EINVAL;
	}
	if (ns) {
		ret = wpsd_access_path(c, WPSD_ACCESS_NETNS, ns, false, r);
		if (ret)
			return ret;
		no.netns_fd = wps_netbuf_open_netns(j->ctx, ns);
		if (no.netns_fd < 0) {
			wpsd_reply_err(r, WPSD_GENERIC, "netbuf: %s", j->cause);
			return no.netns_fd;
		}
	}
	ck->netns_fd = no.netns_fd;   /* the rules are removed there */
	ret = wps_netbuf_new(j->ctx, &no, &ck->nb);
	if (ret)
		wpsd_reply_err(r, WPSD_GENERIC, "netbuf: cannot hold the output of "
			       "%s: %s", no.ifname, j->cause[0] ? j->cause :
			       strerror(-ret));
	return ret;
}

/*
 * After the resume, before the commit: the device state the VMM handed
 * with this pause's wps-vcpus-paused (else the one given at
 * registration) goes into this checkpoint, so each increment describes
 * its own instant.
 */
static int ckpt_device_state(void *arg, struct wps_ckpt *c, uint64_t seq)
{
	struct wpsd_job *j = arg;
	void *buf;
	size_t len;
	int ret;

	ret = wpsd_job_take_device_state(j, &buf, &len);
	if (!ret && buf)
		ret = wps_ckpt_add_blob(c, WPSD_BLOB_NAME, buf, len);
	free(buf);
	return ret;
}

static void post(struct wpsd_job *j, const char *name, json_t *data)
{
	pthread_mutex_lock(&j->lock);
	json_array_append_new(ckpt_of(j)->pending, json_pack("{s:s,s:o}", "event", name,
							"data", data));
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
}

/* The series' wait: until deadline, or less if the job is cancelled
 * (wps-checkpoint-stop, the VMM gone, shutdown): true if it was. */
static bool wait_or_cancel(void *arg, const struct timespec *deadline)
{
	struct wpsd_job *j = arg;
	bool stop;

	pthread_mutex_lock(&j->lock);
	while (!j->cancelled &&
	       pthread_cond_timedwait(&j->cond, &j->lock, deadline) != ETIMEDOUT)
		;
	stop = j->cancelled;
	pthread_mutex_unlock(&j->lock);
	return stop;
}

static json_t *figures(struct wpsd_job *j, const struct wps_ckpt_session_report *r)
{
	const struct wps_ckpt_stats *st = r->st;
	json_t *f = json_pack("{s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I,s:I}",
			 "guest", j->g->name, "seq", (json_int_t)r->seq, "path", r->path,
			 "pause-ns", (json_int_t)st->pause_ns,
			 "handshake-ns", (json_int_t)st->handshake_ns,
			 "walk-ns", (json_int_t)st->scan_ns,
			 "copy-ns", (json_int_t)st->copy_ns,
			 "pause-bytes", (json_int_t)st->pause_bytes,
			 "rounds", (int)st->rounds,
			 "dirty-bytes", (json_int_t)st->dirty_bytes,
			 "image-file-bytes", (json_int_t)st->image_file_bytes,
			 "total-ns", (json_int_t)st->total_ns);

	/* output commit: when the epoch closed and when it was released
	 * (CLOCK_MONOTONIC), so a peer can check no packet left early */
	if (ckpt_of(j)->nb && f) {
		json_object_set_new(f, "epoch", json_integer((json_int_t)r->epoch));
		json_object_set_new(f, "epoch-t0-ns", json_integer((json_int_t)r->epoch_t0_ns));
		json_object_set_new(f, "epoch-t1-ns", json_integer((json_int_t)r->epoch_t1_ns));
		json_object_set_new(f, "commit-t0-ns", json_integer((json_int_t)r->commit_t0_ns));
	}
	return f;
}

/* Worker: a checkpoint is durable (epoch released, retention done). */
static int report(void *arg, const struct wps_ckpt_session_report *r)
{
	struct wpsd_job *j = arg;
	struct wpsd_ckpt *ck = ckpt_of(j);

	pthread_mutex_lock(&j->lock);
	json_decref(ck->last);
	ck->last = figures(j, r);
	ck->done = r->seq + 1;
	pthread_mutex_unlock(&j->lock);
	post(j, "WPS_CHECKPOINT", figures(j, r));
	return 0;
}

static void *ckpt_main(void *arg)
{
	struct wpsd_job *j = arg;
	struct wpsd_ckpt *ck = ckpt_of(j);
	char cause[sizeof(j->cause)];
	uint64_t seq;
	int ret;

	ret = wps_ckpt_session_run(ck->s);
	seq = wps_ckpt_session_done(ck->s);   /* the one that failed */
	pthread_mutex_lock(&j->lock);
	if (ret && !j->cancelled) {
		snprintf(cause, sizeof(cause), "%s", j->cause[0] ? j->cause :
			 strerror(-ret));
		json_array_append_new(ck->pending, json_pack("{s:s,s:{s:s,s:I,s:s}}",
			"event", "WPS_CHECKPOINT_FAILED", "data", "guest", j->g->name,
			"seq", (json_int_t)seq, "cause", cause));
	}
	j->result = j->cancelled ? 0 : ret;
	j->post_done = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
	return NULL;
}

int wpsd_ckpt_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		    struct wpsd_reply *r)
{
	struct wps_ckpt_opts co = WPS_CKPT_OPTS_INIT;
	struct wps_ckpt_session_opts so = WPS_CKPT_SESSION_OPTS_INIT;
	struct wpsd_ckpt *ck;
	const char *dir;
	struct wpsd_job *j;
	struct stat sb;
	json_t *v;
	int ret;

	ret = wpsd_args_check(args, ckpt_spec, "arguments", r);
	if (ret)
		return ret;
	dir = json_string_value(json_object_get(args, "dir"));
	if (g->attach) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is an attached process: "
			       "checkpoints need a guest registered by its VMM", g->name);
		return -EOPNOTSUPP;
	}
	if (g->job) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' already has a %s running",
			       g->name, g->job->ops->name);
		return -EBUSY;
	}
	if (g->uffd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has no fresh userfaultfd; "
			       "its VMM must hand over a new one with wps-guest-set-uffd",
			       g->name);
		return -EAGAIN;
	}
	if (dir[0] != '/' || strlen(dir) >= PATH_MAX - 100 || stat(dir, &sb) ||
	    !S_ISDIR(sb.st_mode)) {
		wpsd_reply_err(r, WPSD_GENERIC, "dir must be an existing directory, "
			       "by absolute path: %s", dir);
		return -EINVAL;
	}
	ret = wpsd_access_path(c, WPSD_ACCESS_DIR, dir, false, r);
	if (ret)
		return ret;
	j = wpsd_job_alloc(c->d, g, &wpsd_ckpt_ops);
	if (!j)
		goto nomem;
	ck = calloc(1, sizeof(*ck));
	j->priv = ck;
	if (!ck)
		goto nomem_job;
	ck->pending = json_array();
	ck->netns_fd = -1;
	snprintf(ck->dir, sizeof(ck->dir), "%s", dir);
	v = json_object_get(args, "interval-ms");
	ck->interval_ms = v ? (unsigned int)json_integer_value(v) : 1000;
	v = json_object_get(args, "count");
	so.count = v ? (uint64_t)json_integer_value(v) : 0;
	v = json_object_get(args, "keep");
	so.keep = v ? (unsigned int)json_integer_value(v) : 0;
	if (v && !so.keep) {
		wpsd_reply_err(r, WPSD_GENERIC, "keep must be at least 1");
		ret = -EINVAL;
		goto fail;
	}
	v = json_object_get(args, "pause-timeout-ms");
	if (v) {
		if (json_integer_value(v) < 1 || json_integer_value(v) > 600000) {
			wpsd_reply_err(r, WPSD_GENERIC, "pause-timeout-ms must be 1..600000");
			ret = -EINVAL;
			goto fail;
		}
		j->pause_timeout_ms = (unsigned int)json_integer_value(v);
	}
	ret = wps_ctx_new(&j->ctx);
	if (ret)
		goto nomem_job;
	wps_ctx_set_log_level(j->ctx, wps_ctx_get_log_level(c->d->ctx));
	/* the job's own log function records its first error as the cause */
	wpsd_job_set_log(j);
	v = json_object_get(args, "netbuf");
	if (v) {
		ret = open_netbuf(c, j, v, r);
		if (ret)
			goto fail;
	}
	/* the first checkpoint at once, then one every interval */
	so.dir = ck->dir;
	so.prefix = g->name;
	so.first_ms = 0;
	so.interval_ms = ck->interval_ms;
	so.netbuf = ck->nb;
	so.wait = wait_or_cancel;
	so.report = report;
	so.arg = j;
	co.before_commit = ckpt_device_state;
	co.instant_arg = j;
	co.pause = wpsd_job_pause;
	co.resume = wpsd_job_resume;
	co.pause_arg = j;
	co.pid = g->pid;
	co.uffd = g->uffd;
	if (json_is_true(json_object_get(args, "overwrite")))
		co.flags |= WPS_CKPT_OVERWRITE;
	ret = wps_ckpt_session_new(j->ctx, g->r, g->nr, &co, &so, &ck->s);
	g->uffd = -1;   /* taken over, even on failure */
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "cannot track the guest's writes: %s",
			       j->cause[0] ? j->cause : strerror(-ret));
		if (wpsd_conn_by_id(c->d, g->owner))
			wpsd_send_event(wpsd_conn_by_id(c->d, g->owner), "WPS_UFFD_REQUEST",
					json_pack("{s:s}", "guest", g->name));
		goto fail;
	}
	ret = wpsd_job_launch(j, ckpt_main, r);
	if (ret)
		goto fail;
	wps_info(c->d->ctx, "guest %s: checkpoints to %s every %u ms (token %"
		 PRIu64 ")", g->name, dir, ck->interval_ms, j->token);
	return 0;
nomem_job:
	ret = -ENOMEM;
	wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
fail:
	wpsd_job_free(j);
	return ret;
nomem:
	wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
	return -ENOMEM;
}

static json_t *ckpt_query(struct wpsd_job *j)
{
	struct wpsd_ckpt *ck = ckpt_of(j);
	json_t *q;

	pthread_mutex_lock(&j->lock);
	q = json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:O?}", "guest", j->g->name,
		      "status", j->pausing ? "pausing" : "checkpointing",
		      "dir", ck->dir, "token", (json_int_t)j->token,
		      "checkpoints", (json_int_t)ck->done,
		      "interval-ms", (int)ck->interval_ms, "last", ck->last);
	pthread_mutex_unlock(&j->lock);
	return q;
}

/* Loop: the events the worker posted. */
static void ckpt_poll(struct wpsd_job *j)
{
	struct wpsd_ckpt *ck = ckpt_of(j);
	json_t *ev, *e;
	size_t i;

	pthread_mutex_lock(&j->lock);
	ev = ck->pending;
	ck->pending = json_array();
	pthread_mutex_unlock(&j->lock);
	json_array_foreach(ev, i, e)
		wpsd_broadcast(j->d, json_string_value(json_object_get(e, "event")),
			       json_incref(json_object_get(e, "data")));
	json_decref(ev);
}

static void ckpt_reaped(struct wpsd_job *j, bool tell)
{
	struct wpsd_ckpt *ck = ckpt_of(j);
	struct wpsd_guest *g = j->g;
	struct wpsd_conn *owner;
	json_t *s;

	if (tell)
		ckpt_poll(j);   /* what the worker posted last */
	/* The worker is joined: let go of the output before saying "stopped"
	 * (what the last epochs held is dropped, never released). */
	wps_netbuf_free(ck->nb);
	ck->nb = NULL;
	if (ck->netns_fd >= 0)
		close(ck->netns_fd);
	ck->netns_fd = -1;
	s = json_pack("{s:s,s:s,s:s,s:I,s:I}", "guest", g->name, "status",
		      j->result ? "failed" : "stopped", "dir", ck->dir,
		      "token", (json_int_t)j->token, "checkpoints",
		      (json_int_t)ck->done);
	if (j->result)
		json_object_set_new(s, "cause", json_string(j->cause[0] ? j->cause :
					strerror(-j->result)));
	else if (j->cause[0])
		json_object_set_new(s, "cause", json_string(j->cause));
	if (ck->last)
		json_object_set(s, "last", ck->last);
	wps_info(j->d->ctx, "guest %s: checkpoints %s after %" PRIu64, g->name,
		 j->result ? "failed" : "stopped", ck->done);
	if (tell)
		wpsd_broadcast(j->d, "WPS_CHECKPOINT_STOPPED", json_deep_copy(s));
	json_decref(g->last);
	g->last = s;
	owner = wpsd_conn_by_id(j->d, g->owner);
	if (tell && owner && !g->doomed)
		wpsd_send_event(owner, "WPS_UFFD_REQUEST",
				json_pack("{s:s}", "guest", g->name));
}

static void ckpt_free(struct wpsd_job *j)
{
	struct wpsd_ckpt *ck = ckpt_of(j);

	if (!ck)
		return;
	wps_ckpt_session_free(ck->s);   /* before the netbuf it borrows */
	/* what the last epochs held is dropped, never released */
	wps_netbuf_free(ck->nb);
	if (ck->netns_fd >= 0)
		close(ck->netns_fd);
	json_decref(ck->pending);
	json_decref(ck->last);
	free(ck);
}

static const char *ckpt_status(struct wpsd_job *j)
{
	return "checkpointing";
}

/* The series' pauses are the snapshot's handshake (wpsd_job_pause); the
 * VMM may hand each one's device state. Cancelled by wps-checkpoint-stop
 * as well as by wps-snapshot-cancel. */
const struct wpsd_job_ops wpsd_ckpt_ops = {
	.name = "checkpoint series",
	.device_state = true,
	.status = ckpt_status,
	.query = ckpt_query,
	.poll = ckpt_poll,
	.reaped = ckpt_reaped,
	.free = ckpt_free,
};
