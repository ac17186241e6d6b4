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
 * Owns: the image and the pager of the restore, until the job is reaped.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wpsnap/image.h>
#include <wpsnap/pager.h>

#include "base/deadline.h"
#include "src/daemon/job.h"
#include "src/log.h"

struct wpsd_restore {
	struct wps_image *img;
	struct wps_pager *pg;
	char image[PATH_MAX];
};

static const struct wpsd_arg restore_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "image", WPSD_T_STR, true },
	{ "prefetch", WPSD_T_BOOL, false },
	{ NULL, 0, false },
};

static json_t *restore_figures(struct wpsd_job *j, const struct wps_pager_stats *st)
{
	return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
			 "guest", j->g->name, "image", j->rs->image,
			 "token", (json_int_t)j->token,
			 "faults", (json_int_t)st->faults,
			 "fault-p50-ns", (json_int_t)st->fault_p50_ns,
			 "fault-p99-ns", (json_int_t)st->fault_p99_ns,
			 "data-bytes", (json_int_t)st->data_bytes,
			 "remaining-bytes", (json_int_t)st->remaining_bytes,
			 "start-ns", (json_int_t)st->start_ns,
			 "full-ns", (json_int_t)st->full_ns,
			 "graduate-ns", (json_int_t)st->graduate_ns);
}

/* Worker: wait for full population (or a failure, or a cancel), then
 * graduate. Never unregisters early: the kernel would zero-fill. */
static void *restore_main(void *arg)
{
	struct wpsd_job *j = arg;
	struct wps_pager_stats st;
	struct timespec dl;
	bool stop = false;
	int ret;

	for (;;) {
		ret = wps_pager_stats(j->rs->pg, &st);
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
		ret = wps_pager_graduate(j->rs->pg);
	wps_pager_stats(j->rs->pg, &st);
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

int wpsd_restore_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		       struct wpsd_reply *r)
{
	struct wps_pager_opts po = WPS_PAGER_OPTS_INIT;
	const struct wps_image_region *ir;
	static const uint8_t none[16];
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
	j = wpsd_job_alloc(c->d, g);
	if (!j || !(j->rs = calloc(1, sizeof(*j->rs))) || wps_ctx_new(&j->ctx)) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	snprintf(j->rs->image, sizeof(j->rs->image), "%s", image);
	wps_ctx_set_log_level(j->ctx, wps_ctx_get_log_level(c->d->ctx));
	wpsd_job_set_log(j);
	ret = wps_image_open(j->ctx, image, 0, &j->rs->img);
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s", j->cause[0] ? j->cause :
			       strerror(-ret));
		goto fail;
	}
	if (memcmp(wps_image_get_info(j->rs->img)->parent_uuid, none, 16)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s is an incremental checkpoint: "
			       "flatten its chain first (wpsnap merge)", image);
		ret = -EINVAL;
		goto fail;
	}
	ir = wps_image_get_region(j->rs->img, 0);
	if (wps_image_get_info(j->rs->img)->nr_regions != 1 || ir->size != g->r[0].size) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s does not fit guest '%s': it has "
			       "%u region(s), the first of %" PRIu64 " bytes; the guest "
			       "has one of %" PRIu64, image, g->name,
			       wps_image_get_info(j->rs->img)->nr_regions, ir->size,
			       g->r[0].size);
		ret = -EINVAL;
		goto fail;
	}
	po.uffd = g->uffd;
	po.pid = g->pid;
	po.no_prefetch = json_is_false(json_object_get(args, "prefetch"));
	ret = wps_pager_new(j->ctx, j->rs->img, 0, &g->r[0], &po, &j->rs->pg);
	g->uffd = -1;   /* the pager has it, in every case */
	if (!ret)
		ret = wps_pager_start(j->rs->pg);
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

json_t *wpsd_restore_query(struct wpsd_job *j)
{
	struct wps_pager_stats st;
	json_t *q;

	wps_pager_stats(j->rs->pg, &st);
	q = restore_figures(j, &st);
	json_object_set_new(q, "status", json_string(st.error ? "failed" :
				st.full_ns ? "graduating" : "restoring"));
	return q;
}

void wpsd_restore_reaped(struct wpsd_job *j, bool tell)
{
	struct wpsd_guest *g = j->g;
	struct wps_pager_stats st;
	json_t *s;

	wps_pager_stats(j->rs->pg, &st);
	s = restore_figures(j, &st);
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

void wpsd_restore_free(struct wpsd_restore *rs)
{
	if (!rs)
		return;
	/* before the image it reads from; poisons what it never delivered */
	wps_pager_free(rs->pg);
	wps_image_close(rs->img);
	free(rs);
}
