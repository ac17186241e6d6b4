/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A libvirt domain's snapshot and restore through wpsnapd (vm-snapshot,
 * vm-restore, query-vm; docs/PROTOCOL.md, "VMs through libvirt"): the
 * library's VM module (<wpsnap/vm.h>, docs/VM.md), the same calls as
 * `wpsnap vm snapshot` and `wpsnap vm restore`, run by a worker so that
 * the loop never waits for libvirt, with their outcome as events.
 *
 * A domain is not a registered guest: nobody hands wpsnapd its memory,
 * the library reaches QEMU through libvirt and attaches to it itself.
 * So these are jobs of no guest (job.h): found by their token, their
 * summaries kept for query-vm, their events broadcast.
 *
 * The library keeps the promises (the domain is never left paused, a
 * failed snapshot publishes nothing, a failed restore leaves no domain);
 * this file adds only what a shared daemon needs: arguments checked
 * before anything starts, one snapshot per domain and per directory at a
 * time (two would fight over QEMU's ptrace and DIR.partial), and the
 * library's first logged error as the failure's cause.
 *
 * The instant: WPS_VM_SNAPSHOT_FROZEN carries the pause and its parts,
 * posted from wps_vm_snapshot_opts.frozen, once the guest runs again and
 * before the RAM streams.
 *
 * Owns: the job's arguments (a reference to the request's) and the
 * library's reports. The worker writes a report and posts under the
 * job's lock; the loop reads it after the post (poll) or the join.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wpsnap/vm.h>

#include "base/log.h"
#include "daemon/vmjob.h"

struct wpsd_vm {
	json_t *args;                   /* the request's, validated */
	struct wps_vm_report rep;       /* vm-snapshot's */
	struct wps_vm_restore_report rrep; /* vm-restore's */
	/* vm-checkpoint's, under j->lock: the checkpoints not yet sent as
	 * events, and how many were taken (vm-stop and a shutdown end the
	 * series through the job's own cancel: j->cancelled, j->cond) */
	json_t *pending;
	uint64_t taken;
};

static struct wpsd_vm *vm_of(struct wpsd_job *j)
{
	return j->priv;
}

static const char *vm_arg(struct wpsd_job *j, const char *k)
{
	return json_string_value(json_object_get(vm_of(j)->args, k));
}

/* defined at the end, with the hooks they name */
static const struct wpsd_job_ops vmsnap_ops, vmrestore_ops, vmckpt_ops;

static const struct wpsd_arg vmsnap_spec[] = {
	{ "domain", WPSD_T_STR, true },
	{ "dir", WPSD_T_STR, true },
	{ "connect", WPSD_T_STR, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg vmckpt_spec[] = {
	{ "domain", WPSD_T_STR, true },
	{ "dir", WPSD_T_STR, true },
	{ "interval-ms", WPSD_T_UINT, false },
	{ "count", WPSD_T_UINT, false },
	{ "keep", WPSD_T_UINT, false },
	{ "connect", WPSD_T_STR, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg vmrestore_spec[] = {
	{ "dir", WPSD_T_STR, true },
	{ "name", WPSD_T_STR, false },
	{ "paused", WPSD_T_BOOL, false },
	{ "connect", WPSD_T_STR, false },
	{ NULL, 0, false },
};

/* What every event and query of the job starts with. */
static json_t *vm_head(struct wpsd_job *j, const char *status)
{
	json_t *h = json_pack("{s:s,s:I,s:s,s:s}", "command", j->ops->name,
			      "token", (json_int_t)j->token, "status", status,
			      "dir", vm_arg(j, "dir"));
	const char *k[] = { "domain", "name", "connect" };
	unsigned int i;

	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		if (vm_arg(j, k[i]))
			json_object_set_new(h, k[i], json_string(vm_arg(j, k[i])));
	if (j->ops == &vmrestore_ops)
		json_object_set_new(h, "paused", json_boolean(json_is_true(
				json_object_get(vm_of(j)->args, "paused"))));
	return h;
}

/*
 * The figures of the library's reports, as tables: the events show them
 * under these names, in these groups, without a json_pack per group.
 */
enum vm_type { VM_U64, VM_UINT, VM_PID, VM_BOOL };

struct vm_field {
	const char *key;
	size_t off;                     /* in the report */
	enum vm_type type;
};

#define VMS(k, m, t) { k, offsetof(struct wps_vm_report, m), t }
#define VMR(k, m, t) { k, offsetof(struct wps_vm_restore_report, m), t }

/* The pause and its parts: WPS_VM_SNAPSHOT_FROZEN, and in the summary. */
static const struct vm_field vmsnap_pause_f[] = {
	VMS("was-running", was_running, VM_BOOL),
	VMS("pause-ns", pause_ns, VM_U64),
	VMS("suspend-ns", suspend_ns, VM_U64),
	VMS("devices-ns", devices_ns, VM_U64),
	VMS("disks-ns", disks_ns, VM_U64),
	VMS("freeze-ns", freeze_ns, VM_U64),
	VMS("resume-ns", resume_ns, VM_U64),
	VMS("devices-bytes", devices_bytes, VM_U64),
	VMS("disks", nr_disks, VM_UINT),
	{ NULL, 0, 0 },
};

/* Once the RAM has streamed. */
static const struct vm_field vmsnap_done_f[] = {
	VMS("qemu-pid", pid, VM_PID),
	VMS("prepare-ns", prepare_ns, VM_U64),
	VMS("total-ns", total_ns, VM_U64),
	VMS("ram-bytes", ram_bytes, VM_U64),
	VMS("populated-bytes", stats.populated_bytes, VM_U64),
	VMS("saved-bytes", stats.saved_bytes, VM_U64),
	VMS("image-data-bytes", stats.image_data_bytes, VM_U64),
	VMS("image-file-bytes", stats.image_file_bytes, VM_U64),
	VMS("faults", stats.faults, VM_U64),
	VMS("fault-p99-ns", stats.fault_p99_ns, VM_U64),
	VMS("fault-max-ns", stats.fault_max_ns, VM_U64),
	{ NULL, 0, 0 },
};

static const struct vm_field vmrestore_done_f[] = {
	VMR("qemu-pid", pid, VM_PID),
	VMR("start-ns", start_ns, VM_U64),
	VMR("fill-ns", fill_ns, VM_U64),
	VMR("devices-ns", devices_ns, VM_U64),
	VMR("total-ns", total_ns, VM_U64),
	VMR("ram-bytes", ram_bytes, VM_U64),
	VMR("disks", nr_disks, VM_UINT),
	{ NULL, 0, 0 },
};

/* Set o's keys from the report rep as the table f says. */
static json_t *vm_put(json_t *o, const void *rep, const struct vm_field *f)
{
	const char *b = rep;
	uint64_t u64;
	unsigned int u;
	pid_t pid;
	bool y;

	for (; f->key; f++) {
		switch (f->type) {
		case VM_U64:
			memcpy(&u64, b + f->off, sizeof(u64));
			json_object_set_new(o, f->key, json_integer((json_int_t)u64));
			break;
		case VM_UINT:
			memcpy(&u, b + f->off, sizeof(u));
			json_object_set_new(o, f->key, json_integer(u));
			break;
		case VM_PID:
			memcpy(&pid, b + f->off, sizeof(pid));
			json_object_set_new(o, f->key, json_integer(pid));
			break;
		case VM_BOOL:
			memcpy(&y, b + f->off, sizeof(y));
			json_object_set_new(o, f->key, json_boolean(y));
			break;
		}
	}
	return o;
}

static json_t *vmsnap_pause(struct wpsd_job *j)
{
	return vm_put(vm_head(j, "frozen"), &vm_of(j)->rep, vmsnap_pause_f);
}

static json_t *vmsnap_done(struct wpsd_job *j)
{
	json_t *s = vm_put(vmsnap_pause(j), &vm_of(j)->rep, vmsnap_done_f);

	json_object_set_new(s, "status", json_string("completed"));
	return s;
}

static json_t *vmrestore_done(struct wpsd_job *j)
{
	return vm_put(vm_head(j, "completed"), &vm_of(j)->rrep, vmrestore_done_f);
}

/* Worker: the instant is taken (see the head comment for when). */
static void vmsnap_frozen(struct wpsd_job *j)
{
	pthread_mutex_lock(&j->lock);
	j->post_frozen = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
}

/* Worker: the library's call has returned ret. */
static void vm_finish(struct wpsd_job *j, int ret)
{
	pthread_mutex_lock(&j->lock);
	if (ret && !j->cause[0])
		snprintf(j->cause, sizeof(j->cause), "%s", strerror(-ret));
	j->result = ret;
	j->post_done = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
}

/* Worker, inside wps_vm_snapshot(): the guest runs again. */
static void vmsnap_at_instant(void *arg, const struct wps_vm_report *pause)
{
	struct wpsd_job *j = arg;

	pthread_mutex_lock(&j->lock);
	vm_of(j)->rep = *pause;
	pthread_mutex_unlock(&j->lock);
	vmsnap_frozen(j);
}

static void *vmsnap_main(void *arg)
{
	struct wpsd_job *j = arg;
	struct wps_vm_snapshot_opts o = {
		.uri = vm_arg(j, "connect"), .domain = vm_arg(j, "domain"),
		.dir = vm_arg(j, "dir"), .frozen = vmsnap_at_instant,
		.frozen_arg = j,
	};
	struct wps_vm_report rep;
	int ret;

	ret = wps_vm_snapshot(j->ctx, &o, &rep);
	pthread_mutex_lock(&j->lock);
	if (!ret)
		vm_of(j)->rep = rep;
	pthread_mutex_unlock(&j->lock);
	vm_finish(j, ret);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* vm-checkpoint: a series until its count or vm-stop                   */
/* ------------------------------------------------------------------ */

/* Worker, between checkpoints: the deadline (CLOCK_MONOTONIC, as
 * j->cond's), or vm-stop / a shutdown (the job's cancel). */
static bool vmckpt_wait(void *arg, const struct timespec *deadline)
{
	struct wpsd_job *j = arg;
	bool stop;

	pthread_mutex_lock(&j->lock);
	while (!j->cancelled &&
	       pthread_cond_timedwait(&j->cond, &j->lock, deadline) == 0)
		;
	stop = j->cancelled;
	pthread_mutex_unlock(&j->lock);
	return stop;
}

/* Worker: a durable checkpoint, queued as an event for the loop. */
static int vmckpt_report(void *arg, const struct wps_vm_checkpoint_report *c)
{
	struct wpsd_job *j = arg;
	json_t *e = vm_head(j, "running");

	json_object_set_new(e, "seq", json_integer((json_int_t)c->seq));
	json_object_set_new(e, "image", json_string(c->image));
	json_object_set_new(e, "meta", json_string(c->meta));
	json_object_set_new(e, "pause-ns", json_integer((json_int_t)c->pause_ns));
	json_object_set_new(e, "suspend-ns",
			    json_integer((json_int_t)c->suspend_ns));
	json_object_set_new(e, "devices-ns",
			    json_integer((json_int_t)c->devices_ns));
	json_object_set_new(e, "disks-ns", json_integer((json_int_t)c->disks_ns));
	json_object_set_new(e, "devices-bytes",
			    json_integer((json_int_t)c->devices_bytes));
	json_object_set_new(e, "disks", json_integer(c->nr_disks));
	json_object_set_new(e, "dirty-bytes",
			    json_integer((json_int_t)c->st->dirty_bytes));
	json_object_set_new(e, "total-ns",
			    json_integer((json_int_t)c->st->total_ns));
	pthread_mutex_lock(&j->lock);
	json_array_append_new(vm_of(j)->pending, e);
	vm_of(j)->taken = c->seq + 1;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
	return 0;
}

static void *vmckpt_main(void *arg)
{
	struct wpsd_job *j = arg;
	json_t *a = vm_of(j)->args, *iv = json_object_get(a, "interval-ms");
	struct wps_vm_checkpoint_opts o = {
		.uri = vm_arg(j, "connect"), .domain = vm_arg(j, "domain"),
		.dir = vm_arg(j, "dir"),
		.interval_ms = iv ? (unsigned int)json_integer_value(iv) : 0,
		.count = (uint64_t)json_integer_value(json_object_get(a, "count")),
		.keep = (unsigned int)json_integer_value(json_object_get(a,
									 "keep")),
		.wait = vmckpt_wait, .report = vmckpt_report, .arg = j,
	};

	vm_finish(j, wps_vm_checkpoint(j->ctx, &o));
	return NULL;
}

/* Loop: WPS_VM_CHECKPOINT for each checkpoint the worker queued. */
static void vmckpt_poll(struct wpsd_job *j)
{
	json_t *q, *e;
	size_t i;

	pthread_mutex_lock(&j->lock);
	q = vm_of(j)->pending;
	vm_of(j)->pending = json_array();
	pthread_mutex_unlock(&j->lock);
	json_array_foreach(q, i, e)
		wpsd_broadcast(j->d, "WPS_VM_CHECKPOINT", json_incref(e));
	json_decref(q);
}

static json_t *vmckpt_done(struct wpsd_job *j)
{
	json_t *s = vm_head(j, "completed");

	json_object_set_new(s, "checkpoints",
			    json_integer((json_int_t)vm_of(j)->taken));
	return s;
}

static void *vmrestore_main(void *arg)
{
	struct wpsd_job *j = arg;
	struct wps_vm_restore_opts o = {
		.uri = vm_arg(j, "connect"), .dir = vm_arg(j, "dir"),
		.name = vm_arg(j, "name"),
		.paused = json_is_true(json_object_get(vm_of(j)->args, "paused")),
	};
	struct wps_vm_restore_report rep;
	int ret;

	ret = wps_vm_restore(j->ctx, &o, &rep);
	pthread_mutex_lock(&j->lock);
	vm_of(j)->rrep = rep;
	pthread_mutex_unlock(&j->lock);
	vm_finish(j, ret);
	return NULL;
}

/* Loop: WPS_VM_SNAPSHOT_FROZEN once the worker posted it. */
static void vmsnap_poll(struct wpsd_job *j)
{
	bool frozen;
	json_t *f;

	pthread_mutex_lock(&j->lock);
	frozen = j->post_frozen;
	j->post_frozen = false;
	f = frozen ? vmsnap_pause(j) : NULL;
	pthread_mutex_unlock(&j->lock);
	if (f)
		wpsd_broadcast(j->d, "WPS_VM_SNAPSHOT_FROZEN", f);
}

/* Worker joined: the final event, kept for query-vm. */
static void vm_reaped(struct wpsd_job *j, bool tell)
{
	const char *ev = j->ops == &vmsnap_ops ? "WPS_VM_SNAPSHOT" :
			 j->ops == &vmckpt_ops ? "WPS_VM_CHECKPOINT" :
			 "WPS_VM_RESTORE";
	char name[64];
	json_t *s;

	if (!j->result) {
		s = j->ops == &vmsnap_ops ? vmsnap_done(j) :
		    j->ops == &vmckpt_ops ? vmckpt_done(j) : vmrestore_done(j);
		wps_info(j->d->ctx, "%s (token %" PRIu64 ") of %s completed",
			 j->ops->name, j->token, vm_arg(j, j->ops == &vmsnap_ops ?
						     "domain" : "dir"));
	} else {
		s = vm_head(j, "failed");
		json_object_set_new(s, "cause", json_string(j->cause));
		json_object_set_new(s, "errno", json_string(
			strerrorname_np(-j->result) ? strerrorname_np(-j->result) : "?"));
		wps_warn(j->d->ctx, "%s (token %" PRIu64 ") failed: %s",
			 j->ops->name, j->token, j->cause);
	}
	snprintf(name, sizeof(name), "%s_%s", ev, j->result ? "FAILED" : "COMPLETED");
	if (tell)
		wpsd_broadcast(j->d, name, json_deep_copy(s));
	wpsd_jobs_remember(j->d, s);
}

static const char *vm_status(struct wpsd_job *j)
{
	return "running";
}

static json_t *vm_query(struct wpsd_job *j)
{
	return vm_head(j, "running");
}

static void vm_free(struct wpsd_job *j)
{
	struct wpsd_vm *vm = vm_of(j);

	if (vm) {
		json_decref(vm->args);
		json_decref(vm->pending);
	}
	free(vm);
}

/* Built without libvirt the library's VM calls can only fail: say so as
 * the reply rather than start a job for it. */
static int vm_built(const struct wpsd_job_ops *ops, struct wpsd_reply *r)
{
#ifdef HAVE_LIBVIRT
	(void)ops;
	(void)r;
	return 0;
#else
	wpsd_reply_err(r, WPSD_GENERIC, "%s: this wpsnapd was built without "
		       "libvirt (Debian package libvirt-dev, then ./configure "
		       "--with-libvirt)", ops->name);
	return -ENOTSUP;
#endif
}

/*
 * What the daemon checks before a worker starts: an absolute directory
 * (wpsnapd runs in /), no empty name, no running snapshot of that domain
 * or into that directory. The library checks the rest (the domain, the
 * directory's existence, the QEMU) and its refusals are the FAILED event.
 */
static int vm_check(struct wpsd_conn *c, const struct wpsd_job_ops *ops,
		    json_t *args, struct wpsd_reply *r)
{
	const char *dir = json_string_value(json_object_get(args, "dir"));
	const char *dom = json_string_value(json_object_get(args, "domain"));
	const char *uri = json_string_value(json_object_get(args, "connect"));
	const char *name = json_string_value(json_object_get(args, "name"));
	struct wpsd_job *o;

	if (dir[0] != '/' || strlen(dir) >= PATH_MAX - 64) {
		wpsd_reply_err(r, WPSD_GENERIC, "dir must be an absolute path "
			       "(wpsnapd runs in /)");
		return -EINVAL;
	}
	if ((dom && !dom[0]) || (name && !name[0]) || (uri && !uri[0])) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s must not be empty",
			       dom && !dom[0] ? "domain" : name && !name[0] ?
			       "name" : "connect");
		return -EINVAL;
	}
	if (ops == &vmrestore_ops)
		return 0;
	/* a snapshot and a series of one domain would both attach to its
	 * QEMU; two jobs in one directory would write over each other */
	for (o = c->d->jobs; o; o = o->next) {
		const char *ou = vm_arg(o, "connect");

		if (o->ops == &vmrestore_ops)
			continue;
		if (!strcmp(vm_arg(o, "dir"), dir)) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s is being written by "
				       "%s (token %" PRIu64 ")", dir, o->ops->name,
				       o->token);
			return -EBUSY;
		}
		if (!strcmp(vm_arg(o, "domain"), dom) &&
		    !strcmp(ou ? ou : "", uri ? uri : "")) {
			wpsd_reply_err(r, WPSD_GENERIC, "domain '%s' already has a "
				       "%s running (token %" PRIu64 ")", dom,
				       o->ops->name, o->token);
			return -EBUSY;
		}
	}
	return 0;
}

static int vm_start(struct wpsd_conn *c, const struct wpsd_job_ops *ops,
		    const struct wpsd_arg *spec, void *(*fn)(void *),
		    json_t *args, struct wpsd_reply *r)
{
	struct wpsd_job *j;
	struct wpsd_vm *vm;
	int ret;

	ret = wpsd_args_check(args, spec, "arguments", r);
	if (!ret)
		ret = vm_built(ops, r);
	if (!ret)
		ret = vm_check(c, ops, args, r);
	if (ret)
		return ret;
	j = wpsd_job_alloc(c->d, NULL, ops);
	if (!j || !(vm = j->priv = calloc(1, sizeof(*vm))) || wps_ctx_new(&j->ctx)) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	vm->args = json_incref(args);
	if (ops == &vmckpt_ops) {
		vm->pending = json_array();
		if (!vm->pending) {
			wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
			ret = -ENOMEM;
			goto fail;
		}
	}
	wps_ctx_set_log_level(j->ctx, wps_ctx_get_log_level(c->d->ctx));
	wpsd_job_set_log(j);
	ret = wpsd_job_launch(j, fn, r);
	if (ret)
		goto fail;
	wps_info(c->d->ctx, "%s (token %" PRIu64 ") of %s started by connection "
		 "%u", ops->name, j->token, vm_arg(j, ops == &vmrestore_ops ? "dir" :
						 "domain"), c->id);
	return 0;
fail:
	if (j)
		wpsd_job_free(j);
	return ret;
}

void wpsd_vm_snapshot(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r)
{
	vm_start(c, &vmsnap_ops, vmsnap_spec, vmsnap_main, args, r);
}

void wpsd_vm_restore(struct wpsd_conn *c, json_t *args, json_t *id,
		     struct wpsd_reply *r)
{
	vm_start(c, &vmrestore_ops, vmrestore_spec, vmrestore_main, args, r);
}

void wpsd_vm_checkpoint(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	vm_start(c, &vmckpt_ops, vmckpt_spec, vmckpt_main, args, r);
}

void wpsd_vm_stop(struct wpsd_conn *c, json_t *args, json_t *id,
		  struct wpsd_reply *r)
{
	uint64_t t = (uint64_t)json_integer_value(json_object_get(args,
								  "token"));
	struct wpsd_job *j;

	for (j = c->d->jobs; j; j = j->next)
		if (j->token == t)
			break;
	if (!j || j->ops != &vmckpt_ops) {
		wpsd_reply_err(r, WPSD_GENERIC, "no running vm-checkpoint has "
			       "token %" PRIu64 "%s", t, j ? " (only a series "
			       "stops; the other VM jobs run to their end)" : "");
		return;
	}
	wpsd_job_cancel(j, NULL);      /* no cause: it completes */
	r->ret = json_object();
}

void wpsd_vm_query(struct wpsd_conn *c, json_t *args, json_t *id,
		   struct wpsd_reply *r)
{
	json_t *t = json_object_get(args, "token");

	r->ret = wpsd_jobs_query(c->d, t ? (uint64_t)json_integer_value(t) : 0);
	if (!r->ret)
		wpsd_reply_err(r, WPSD_GENERIC, "no VM job has token %"
			       JSON_INTEGER_FORMAT " (the last %d that ended are "
			       "kept)", json_integer_value(t), WPSD_JOBS_DONE_MAX);
}

/* No pause through a VMM, no cancel: the library's call runs to its end
 * (a shutdown waits for it), keeping its promises either way. */
#define VM_HOOKS \
	.no_cancel = "is a VM job: it cannot be cancelled", \
	.status = vm_status, .query = vm_query, .reaped = vm_reaped, \
	.free = vm_free

static const struct wpsd_job_ops vmsnap_ops = {
	.name = "vm-snapshot",
	.poll = vmsnap_poll,
	VM_HOOKS,
};

/* A series ends with vm-stop or a shutdown (after the checkpoint under
 * way), its count, or an error. */
static const struct wpsd_job_ops vmckpt_ops = {
	.name = "vm-checkpoint",
	.poll = vmckpt_poll,
	.no_cancel = "is a VM job: stop it with vm-stop",
	.status = vm_status, .query = vm_query, .reaped = vm_reaped,
	.free = vm_free,
};

static const struct wpsd_job_ops vmrestore_ops = {
	.name = "vm-restore",
	VM_HOOKS,
};
