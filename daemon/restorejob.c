/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy restore into a registered guest (wps-restore-start,
 * query-restore; docs/PROTOCOL.md). The VMM registers empty guest RAM
 * (fresh memfds) with a fresh userfaultfd, asks for the restore, and runs
 * its vCPUs as soon as the reply comes: the pager (src/pager.c) serves
 * their faults first and prefetches the rest, from a local image or an
 * NBD export. A worker waits until every page is present and graduates
 * (unregisters), then the guest no longer depends on wpsnapd.
 *
 * Prefetch follows the library's working-set plan (<wpsnap/wset.h>), as
 * `wpsnap restore --lazy` does: IMAGE.wset beside a local image, then the
 * image's written-pages blob, then the sweep; after graduation the worker
 * adds this run's fault order to IMAGE.wset. An NBD image has no file
 * beside it: only its blob is used and nothing is written.
 *
 * Owns: the image, the pager and the plan of the restore, until the job
 * is reaped. The plan's info is fixed before the worker starts, except
 * what the worker's recording adds, which only the reaper reads (after
 * the join).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>
#include <wpsnap/wset.h>

#include "base/deadline.h"
#include "daemon/access.h"
#include "daemon/restorejob.h"
#include "base/log.h"

struct wpsd_restore {
	struct wps_image *img;
	struct wps_pager *pg;
	struct wps_wset_plan *plan;
	char image[PATH_MAX];
};

static struct wpsd_restore *restore_of(struct wpsd_job *j)
{
	return j->priv;
}

/* defined at the end, with the hooks it names */
static const struct wpsd_job_ops restore_ops;

static const struct wpsd_arg restore_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "image", WPSD_T_STR, true },
	{ "prefetch", WPSD_T_BOOL, false },
	{ "working-set", WPSD_T_BOOL, false },
	{ NULL, 0, false },
};

/* What the working-set plan used; final: also what the worker recorded
 * (read only once the worker is joined). */
static json_t *wset_figures(const struct wps_wset_plan *plan, bool final)
{
	struct wps_wset_plan_info in;
	json_t *w;

	wps_wset_plan_get_info(plan, &in);
	w = json_pack("{s:b,s:I,s:I,s:I}", "used", !in.off,
		      "recorded-bytes", (json_int_t)(in.recorded_blocks * 4096),
		      "written-bytes", (json_int_t)(in.written_blocks * 4096),
		      "ranges", (json_int_t)in.nr_first);
	json_object_set_new(w, "file", in.path ? json_string(in.path) : json_null());
	if (final) {
		json_object_set_new(w, "saved", json_boolean(in.saved));
		if (in.saved)
			json_object_set_new(w, "file-bytes",
					    json_integer((json_int_t)(in.file_blocks * 4096)));
	}
	return w;
}

static json_t *restore_figures(struct wpsd_job *j, const struct wps_pager_stats *st,
			       bool final)
{
	struct wpsd_restore *rs = restore_of(j);
	json_t *q;

	q = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
			 "guest", j->g->name, "image", rs->image,
			 "token", (json_int_t)j->token,
			 "faults", (json_int_t)st->faults,
			 "fault-p50-ns", (json_int_t)st->fault_p50_ns,
			 "fault-p99-ns", (json_int_t)st->fault_p99_ns,
			 "data-bytes", (json_int_t)st->data_bytes,
			 "remaining-bytes", (json_int_t)st->remaining_bytes,
			 "start-ns", (json_int_t)st->start_ns,
			 "full-ns", (json_int_t)st->full_ns,
			 "graduate-ns", (json_int_t)st->graduate_ns,
			 "first-bytes", (json_int_t)st->first_bytes);
	json_object_set_new(q, "working-set", wset_figures(rs->plan, final));
	return q;
}

/* Worker: wait for full population (or a failure, or a cancel), then
 * graduate. Never unregisters early: the kernel would zero-fill. */
static void *restore_main(void *arg)
{
	struct wpsd_job *j = arg;
	struct wpsd_restore *rs = restore_of(j);
	struct wps_pager_stats st;
	struct timespec dl;
	bool stop = false;
	int ret;

	for (;;) {
		ret = wps_pager_stats(rs->pg, &st);
		if (ret || st.full_ns || stop)
			break;
		dl = wps_deadline_from_ms(20);
		pthread_mutex_lock(&j->lock);
		if (!j->cancelled)
			pthread_cond_timedwait(&j->cond, &j->lock, &dl);
		stop = j->cancelled;
		pthread_mutex_unlock(&j->lock);
	}
	/* Graduation populates what prefetch has not (or all, without it). */
	if (!ret && !stop)
		ret = wps_pager_graduate(rs->pg);
	/* For the next restore of this image; a failure (logged) costs
	 * only the hint, not this restore. */
	if (!ret && !stop)
		wps_wset_plan_record(rs->plan, rs->pg);
	wps_pager_stats(rs->pg, &st);
	pthread_mutex_lock(&j->lock);
	if (ret && !j->cause[0])
		snprintf(j->cause, sizeof(j->cause), "%s%s", strerror(-ret),
			 ret == -EBADMSG ? ": the image is damaged; the pages it "
			 "would have filled are poisoned, stop the guest" : "");
	j->result = stop ? -ECANCELED : ret;
	j->post_done = true;
	pthread_mutex_unlock(&j->lock);
	wpsd_notify(j->d);
	return NULL;
}

/*
 * The image is opened on the loop thread: a FIFO (or a device that
 * blocks) there would stall every connection until someone writes to it.
 * Refuse anything but a regular file or a block device before opening.
 * The reader's own checks (O_NONBLOCK, S_ISREG) are the real guard; this
 * keeps the daemon's loop safe whatever the reader does, and the stat
 * cannot block.
 */
static int image_kind_ok(const char *image, struct wpsd_reply *r)
{
	struct stat st;

	if (image[0] != '/')
		return 0;   /* NBD: opened by the NBD client, never blocking */
	if (stat(image, &st)) {
		int ret = -errno;

		wpsd_reply_err(r, WPSD_GENERIC, "image %s: %s", image, strerror(-ret));
		return ret;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		wpsd_reply_err(r, WPSD_GENERIC, "image %s is not a regular file or "
			       "a block device (%s)", image, S_ISDIR(st.st_mode) ?
			       "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" :
			       S_ISSOCK(st.st_mode) ? "a socket" : "a character device");
		return -EINVAL;
	}
	return 0;
}

/*
 * The working-set file beside the image is read, and written after
 * graduation, as root: a client that is not root gets only what it could
 * do itself. Not being able to is no reason to refuse the restore: an
 * unreadable file means no working set, an unwritable one no new record.
 */
static void wset_access(struct wpsd_conn *c, const char *image,
			struct wps_wset_plan_opts *wo)
{
	char p[PATH_MAX + 8];
	int ret;

	if (wps_wset_path(image, p, sizeof(p)))
		return;
	ret = wpsd_access_path(c, WPSD_ACCESS_READ, p, false, NULL);
	if (ret && ret != -ENOENT)
		wo->off = true;
	if (wpsd_access_path(c, WPSD_ACCESS_CREATE, p, true, NULL))
		wo->no_save = true;
}

int wpsd_restore_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		       struct wpsd_reply *r)
{
	struct wps_wset_plan_opts wo = WPS_WSET_PLAN_OPTS_INIT;
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	const struct wps_image_region *ir;
	static const uint8_t none[16];
	struct wpsd_restore *rs;
	const char *image;
	struct wpsd_job *j;
	int ret;

	ret = wpsd_args_check(args, restore_spec, "arguments", r);
	if (ret)
		return ret;
	image = json_string_value(json_object_get(args, "image"));
	if (g->attach || g->owner != c->id) {
		wpsd_reply_err(r, WPSD_GENERIC, "only the VMM that registered guest "
			       "'%s' may restore into it", g->name);
		return -EPERM;
	}
	if (g->job) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is busy", g->name);
		return -EBUSY;
	}
	if (g->uffd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has no fresh userfaultfd",
			       g->name);
		return -EAGAIN;
	}
	if (g->nr != 1) {
		wpsd_reply_err(r, WPSD_GENERIC, "restore into a guest of %u regions "
			       "is not supported yet (one region)", g->nr);
		return -EOPNOTSUPP;
	}
	if (strlen(image) >= PATH_MAX || (image[0] != '/' && strncmp(image, "nbd", 3))) {
		wpsd_reply_err(r, WPSD_GENERIC, "image must be an absolute path or an "
			       "NBD URI");
		return -EINVAL;
	}
	/* before anything looks at it as root (image_kind_ok's stat) */
	ret = wpsd_access_path(c, image[0] == '/' ? WPSD_ACCESS_READ :
			       WPSD_ACCESS_NBD, image, false, r);
	if (ret)
		return ret;
	ret = image_kind_ok(image, r);
	if (ret)
		return ret;
	j = wpsd_job_alloc(c->d, g, &restore_ops);
	if (!j || !(rs = j->priv = calloc(1, sizeof(*rs))) || wps_ctx_new(&j->ctx)) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	snprintf(rs->image, sizeof(rs->image), "%s", image);
	wps_ctx_set_log_level(j->ctx, wps_ctx_get_log_level(c->d->ctx));
	wpsd_job_set_log(j);
	ret = wps_image_open(j->ctx, image, 0, &rs->img);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s", j->cause[0] ? j->cause :
			       strerror(-ret));
		goto fail;
	}
	if (memcmp(wps_image_get_info(rs->img)->parent_uuid, none, 16)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s is an incremental checkpoint: "
			       "flatten its chain first (wpsnap merge)", image);
		ret = -EINVAL;
		goto fail;
	}
	ir = wps_image_get_region(rs->img, 0);
	if (wps_image_get_info(rs->img)->nr_regions != 1 || ir->size != g->r[0].size) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s does not fit guest '%s': it has "
			       "%u region(s), the first of %" PRIu64 " bytes; the guest "
			       "has one of %" PRIu64, image, g->name,
			       wps_image_get_info(rs->img)->nr_regions, ir->size,
			       g->r[0].size);
		ret = -EINVAL;
		goto fail;
	}
	wo.off = json_is_false(json_object_get(args, "working-set"));
	if (!wo.off && image[0] == '/')
		wset_access(c, image, &wo);
	ret = wps_wset_plan_new(j->ctx, rs->img, image, NULL, 0, &wo,
				&rs->plan);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "lazy restore: working set: %s",
			       strerror(-ret));
		goto fail;
	}
	/* A missing, stale or damaged working-set file is logged and
	 * ignored: it must not become the cause of a later failure. */
	pthread_mutex_lock(&j->lock);
	j->cause[0] = 0;
	pthread_mutex_unlock(&j->lock);
	wps_wset_plan_apply(rs->plan, &po);
	po.uffd = g->uffd;
	po.pid = g->pid;
	po.no_prefetch = json_is_false(json_object_get(args, "prefetch"));
	ret = wps_pager_new(j->ctx, rs->img, 0, &g->r[0], &po, &rs->pg);
	g->uffd = -1;   /* the pager has it, in every case */
	if (!ret)
		ret = wps_pager_start(rs->pg);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "lazy restore: %s", j->cause[0] ?
			       j->cause : strerror(-ret));
		goto fail;
	}
	ret = wpsd_job_launch(j, restore_main, r);
	if (ret)
		goto fail;
	wps_info(c->d->ctx, "guest %s: lazy restore from %s started (token %"
		 PRIu64 ")", g->name, image, j->token);
	return 0;
fail:
	if (j)
		wpsd_job_free(j);
	return ret;
}

static json_t *restore_query(struct wpsd_job *j)
{
	struct wps_pager_stats st;
	json_t *q;

	wps_pager_stats(restore_of(j)->pg, &st);
	q = restore_figures(j, &st, false);
	json_object_set_new(q, "status", json_string(st.error ? "failed" :
				st.full_ns ? "graduating" : "restoring"));
	return q;
}

static void restore_reaped(struct wpsd_job *j, bool tell)
{
	struct wpsd_guest *g = j->g;
	struct wps_pager_stats st;
	json_t *s;

	wps_pager_stats(restore_of(j)->pg, &st);
	s = restore_figures(j, &st, true);
	json_object_set_new(s, "status", json_string(!j->result ? "completed" :
				j->result == -ECANCELED ? "cancelled" : "failed"));
	if (j->result)
		json_object_set_new(s, "cause", json_string(j->cause[0] ? j->cause :
					strerror(-j->result)));
	if (st.bad_offset)
		json_object_set_new(s, "bad-offset", json_integer((json_int_t)st.bad_offset));
	if (tell)
		wpsd_broadcast(j->d, !j->result ? "WPS_RESTORE_COMPLETED" :
			       "WPS_RESTORE_FAILED", json_deep_copy(s));
	wps_info(j->d->ctx, "guest %s: lazy restore %s", g->name,
		 json_string_value(json_object_get(s, "status")));
	json_decref(g->last);
	g->last = s;
}

static void restore_free(struct wpsd_job *j)
{
	struct wpsd_restore *rs = restore_of(j);

	if (!rs)
		return;
	/* before the image it reads from; poisons what it never delivered */
	wps_pager_free(rs->pg);
	wps_wset_plan_free(rs->plan);
	wps_image_close(rs->img);
	free(rs);
}

static const char *restore_status(struct wpsd_job *j)
{
	return "restoring";
}

/* No pause, no events until it ends; never cancelled by a client: the
 * pages not yet restored would be poisoned under the running guest. */
static const struct wpsd_job_ops restore_ops = {
	.name = "lazy restore",
	.no_cancel = "is being restored: a restore cannot be cancelled under a "
		     "running guest; stop the guest and unregister it",
	.status = restore_status,
	.query = restore_query,
	.reaped = restore_reaped,
	.free = restore_free,
};
