/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The command table. Every way a request can be wrong (not JSON, not an
 * object, unknown command, unknown or mistyped key, unknown guest, not
 * allowed) ends in one QMP error reply on that connection; nothing here
 * closes a connection or touches another one's state beyond what the
 * command is about.
 *
 * Who may run what is one column of the table (docs/PROTOCOL.md,
 * "Security model"), checked in one place before any handler: a client
 * that is not root may only read (query-*), manage its own fds, and act on
 * guests its own connection registered; quit and acting on anybody else's
 * guest are root's. Handlers add the finer rules that need their
 * arguments (register only one's own pid, attach needs CAP_SYS_PTRACE,
 * disk-hook needs root).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "daemon/ckptjob.h"
#include "daemon/commands.h"
#include "daemon/guest.h"
#include "daemon/job.h"
#include "daemon/restorejob.h"
#include "daemon/qmp.h"
#include "daemon/vmjob.h"
#include "base/log.h"

enum wpsd_access {
	WPSD_ANY,    /* every connected client (the handler may refine) */
	WPSD_OWN,    /* not root: only a guest its own connection registered */
	WPSD_ROOT,   /* root only: the daemon itself */
};

struct wpsd_cmd {
	const char *name;
	const struct wpsd_arg *spec;  /* NULL: the handler checks */
	enum wpsd_access access;
	void (*fn)(struct wpsd_conn *c, json_t *args, json_t *id,
		   struct wpsd_reply *r);
};

static const struct wpsd_arg no_args[] = { { NULL, 0, false } };
static const struct wpsd_arg caps_args[] = {
	{ "enable", WPSD_T_ARRAY, false }, { NULL, 0, false } };
static const struct wpsd_arg fdname_args[] = {
	{ "fdname", WPSD_T_STR, true }, { NULL, 0, false } };
static const struct wpsd_arg guest_args[] = {
	{ "guest", WPSD_T_STR, true }, { NULL, 0, false } };
static const struct wpsd_arg setuffd_args[] = {
	{ "guest", WPSD_T_STR, true }, { "uffd", WPSD_T_STR, true },
	{ NULL, 0, false } };
static const struct wpsd_arg paused_args[] = {
	{ "token", WPSD_T_UINT, true }, { "error", WPSD_T_STR, false },
	{ "device-state", WPSD_T_STR, false }, { NULL, 0, false } };
static const struct wpsd_arg resumed_args[] = {
	{ "token", WPSD_T_UINT, true }, { NULL, 0, false } };
static const struct wpsd_arg vmquery_args[] = {
	{ "token", WPSD_T_UINT, false }, { NULL, 0, false } };
static const struct wpsd_arg vmstop_args[] = {
	{ "token", WPSD_T_UINT, true }, { NULL, 0, false } };

static const char *arg_str(json_t *args, const char *k)
{
	return json_string_value(json_object_get(args, k));
}

static struct wpsd_guest *need_guest(struct wpsd_conn *c, json_t *args,
				     struct wpsd_reply *r)
{
	struct wpsd_guest *g = wpsd_guest_find(c->d, arg_str(args, "guest"));

	if (!g || g->doomed) {
		wpsd_reply_err(r, WPSD_NODEVICE, "no guest named '%s'",
			       arg_str(args, "guest"));
		return NULL;
	}
	return g;
}

static void cmd_caps(struct wpsd_conn *c, json_t *args, json_t *id,
		     struct wpsd_reply *r)
{
	if (json_array_size(json_object_get(args, "enable"))) {
		wpsd_reply_err(r, WPSD_GENERIC, "no capabilities are offered");
		return;
	}
	if (c->negotiated) {
		wpsd_reply_err(r, WPSD_NOTFOUND, "capabilities negotiation is "
			       "already complete");
		return;
	}
	c->negotiated = true;
	r->ret = json_object();
}

static void cmd_version(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	json_t *g = wpsd_greeting();

	r->ret = json_deep_copy(json_object_get(json_object_get(g, "QMP"), "version"));
	json_decref(g);
}

static void cmd_getfd(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r)
{
	const char *name = arg_str(args, "fdname");
	struct wpsd_namedfd *n;
	unsigned int i;
	int fd;

	if (!name[0] || strlen(name) > WPSD_NAME_MAX || name[0] == '-' ||
	    (name[0] >= '0' && name[0] <= '9')) {
		wpsd_reply_err(r, WPSD_GENERIC, "fdname must have 1 to %d bytes and "
			       "not start with a digit or '-'", WPSD_NAME_MAX);
		return;
	}
	if (!c->nr_pending) {
		wpsd_reply_err(r, WPSD_GENERIC, "no file descriptor was received "
			       "(send it as SCM_RIGHTS with the getfd line)");
		return;
	}
	fd = c->pending[0];
	for (i = 1; i < c->nr_pending; i++)
		c->pending[i - 1] = c->pending[i];
	c->nr_pending--;
	for (n = c->fds; n; n = n->next) {
		if (!strcmp(n->name, name)) {   /* QMP: a name is reused */
			close(n->fd);
			n->fd = fd;
			r->ret = json_object();
			return;
		}
	}
	if (c->nr_fds >= WPSD_NAMED_FDS || !(n = calloc(1, sizeof(*n)))) {
		close(fd);
		wpsd_reply_err(r, WPSD_GENERIC, "too many named fds (at most %d)",
			       WPSD_NAMED_FDS);
		return;
	}
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->fd = fd;
	n->next = c->fds;
	c->fds = n;
	c->nr_fds++;
	r->ret = json_object();
}

static void cmd_closefd(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	int fd = wpsd_conn_take_fd(c, arg_str(args, "fdname"));

	if (fd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "no fd named '%s'",
			       arg_str(args, "fdname"));
		return;
	}
	close(fd);
	r->ret = json_object();
}

static void cmd_register(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r)
{
	wpsd_guest_register(c, args, r);
}

static void cmd_attach(struct wpsd_conn *c, json_t *args, json_t *id,
		       struct wpsd_reply *r)
{
	wpsd_guest_attach(c, args, r);
}

static void cmd_unregister(struct wpsd_conn *c, json_t *args, json_t *id,
			   struct wpsd_reply *r)
{
	struct wpsd_guest *g = need_guest(c, args, r);

	if (!g)
		return;
	/* another connection's guest: refused by check_access for non-root */
	if (g->job) {
		g->doomed = true;   /* removed when the worker is reaped */
		wpsd_job_cancel(g->job, "the guest was unregistered");
	} else {
		wpsd_guest_remove(g);
	}
	r->ret = json_object();
}

static void cmd_setuffd(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	struct wpsd_guest *g = need_guest(c, args, r);

	if (g)
		wpsd_guest_set_uffd(c, g, arg_str(args, "uffd"), r);
}

static void cmd_guests(struct wpsd_conn *c, json_t *args, json_t *id,
		       struct wpsd_reply *r)
{
	struct wpsd_guest *g;

	r->ret = json_array();
	for (g = c->d->guests; g; g = g->next)
		if (!g->doomed)
			json_array_append_new(r->ret, wpsd_guest_info(g));
}

static void cmd_start(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r)
{
	struct wpsd_guest *g;

	if (!json_is_string(json_object_get(args, "guest"))) {
		/* the spec check in wpsd_job_start names the key */
		wpsd_job_start(c, NULL, args, id, r);
		return;
	}
	g = need_guest(c, args, r);
	if (g)
		wpsd_job_start(c, g, args, id, r);
}

static void cmd_transaction(struct wpsd_conn *c, json_t *args, json_t *id,
			    struct wpsd_reply *r)
{
	wpsd_job_transaction(c, args, id, r);
}

static void cmd_query(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r)
{
	struct wpsd_guest *g = need_guest(c, args, r);

	if (!g)
		return;
	if (g->job)
		r->ret = wpsd_job_query(g->job);
	else if (g->last)
		r->ret = json_deep_copy(g->last);
	else
		r->ret = json_pack("{s:s,s:s}", "guest", g->name, "status", "none");
}

static void cmd_cancel(struct wpsd_conn *c, json_t *args, json_t *id,
		       struct wpsd_reply *r)
{
	struct wpsd_guest *g = need_guest(c, args, r);

	if (!g)
		return;
	if (!g->job) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has no snapshot running",
			       g->name);
		return;
	}
	if (g->job->ops->no_cancel) {   /* a restore, say */
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' %s", g->name,
			       g->job->ops->no_cancel);
		return;
	}
	wpsd_job_cancel(g->job, "cancelled by wps-snapshot-cancel");
	r->ret = json_object();
}

/* Commands whose handler checks its own spec, but needs the guest first. */
static void with_guest(struct wpsd_conn *c, json_t *args, struct wpsd_reply *r,
		       int (*fn)(struct wpsd_conn *c, struct wpsd_guest *g,
				 json_t *args, struct wpsd_reply *r))
{
	struct wpsd_guest *g;

	if (!json_is_string(json_object_get(args, "guest"))) {
		wpsd_reply_err(r, WPSD_GENERIC, "arguments: 'guest' (a string) is "
			       "required");
		return;
	}
	g = need_guest(c, args, r);
	if (g)
		fn(c, g, args, r);
}

static void cmd_ckpt_start(struct wpsd_conn *c, json_t *args, json_t *id,
			   struct wpsd_reply *r)
{
	with_guest(c, args, r, wpsd_ckpt_start);
}

static void cmd_ckpt_stop(struct wpsd_conn *c, json_t *args, json_t *id,
			  struct wpsd_reply *r)
{
	struct wpsd_guest *g = need_guest(c, args, r);

	if (!g)
		return;
	if (!g->job || g->job->ops != &wpsd_ckpt_ops) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has no checkpoints running",
			       g->name);
		return;
	}
	/* a checkpoint under way is abandoned (nothing published under its
	 * name); WPS_CHECKPOINT_STOPPED follows */
	wpsd_job_cancel(g->job, NULL);
	r->ret = json_object();
}

static void cmd_restore_start(struct wpsd_conn *c, json_t *args, json_t *id,
			      struct wpsd_reply *r)
{
	with_guest(c, args, r, wpsd_restore_start);
}

static void cmd_paused(struct wpsd_conn *c, json_t *args, json_t *id,
		       struct wpsd_reply *r)
{
	wpsd_job_ack(c, (uint64_t)json_integer_value(json_object_get(args, "token")),
		     false, arg_str(args, "error"), arg_str(args, "device-state"), r);
}

static void cmd_resumed(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	wpsd_job_ack(c, (uint64_t)json_integer_value(json_object_get(args, "token")),
		     true, NULL, NULL, r);
}

static void cmd_quit(struct wpsd_conn *c, json_t *args, json_t *id,
		     struct wpsd_reply *r)
{
	wps_info(c->d->ctx, "quit requested by connection %u (pid %d)", c->id,
		 (int)c->pid);
	c->d->quit = true;
	r->ret = json_object();
}

static void cmd_commands(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r);

static const struct wpsd_cmd cmds[] = {
	{ "qmp_capabilities", caps_args, WPSD_ANY, cmd_caps },
	{ "query-version", no_args, WPSD_ANY, cmd_version },
	{ "query-commands", no_args, WPSD_ANY, cmd_commands },
	{ "getfd", fdname_args, WPSD_ANY, cmd_getfd },
	{ "closefd", fdname_args, WPSD_ANY, cmd_closefd },
	{ "wps-guest-register", NULL, WPSD_ANY, cmd_register },
	{ "wps-guest-attach", NULL, WPSD_ANY, cmd_attach },
	{ "wps-guest-unregister", guest_args, WPSD_OWN, cmd_unregister },
	{ "wps-guest-set-uffd", setuffd_args, WPSD_OWN, cmd_setuffd },
	{ "query-guests", no_args, WPSD_ANY, cmd_guests },
	{ "wps-snapshot-start", NULL, WPSD_OWN, cmd_start },
	{ "transaction", NULL, WPSD_OWN, cmd_transaction },
	{ "query-snapshot", guest_args, WPSD_ANY, cmd_query },
	{ "wps-snapshot-cancel", guest_args, WPSD_OWN, cmd_cancel },
	{ "wps-checkpoint-start", NULL, WPSD_OWN, cmd_ckpt_start },
	{ "wps-checkpoint-stop", guest_args, WPSD_OWN, cmd_ckpt_stop },
	{ "query-checkpoint", guest_args, WPSD_ANY, cmd_query },
	{ "wps-restore-start", NULL, WPSD_OWN, cmd_restore_start },
	{ "query-restore", guest_args, WPSD_ANY, cmd_query },
	{ "wps-vcpus-paused", paused_args, WPSD_ANY, cmd_paused },
	{ "wps-vcpus-resumed", resumed_args, WPSD_ANY, cmd_resumed },
	/* Root only: they act on any libvirt domain as root (pause it, give
	 * its disks overlays beside their images, start QEMU from a
	 * directory's domain XML), which the daemon cannot check against
	 * the client's own rights in libvirt (docs/PROTOCOL.md). */
	{ "vm-snapshot", NULL, WPSD_ROOT, wpsd_vm_snapshot },
	{ "vm-restore", NULL, WPSD_ROOT, wpsd_vm_restore },
	{ "vm-checkpoint", NULL, WPSD_ROOT, wpsd_vm_checkpoint },
	{ "vm-stop", vmstop_args, WPSD_ROOT, wpsd_vm_stop },
	{ "query-vm", vmquery_args, WPSD_ANY, wpsd_vm_query },
	{ "quit", no_args, WPSD_ROOT, cmd_quit },
	{ NULL, NULL, WPSD_ANY, NULL },
};

static void cmd_commands(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r)
{
	const struct wpsd_cmd *k;

	r->ret = json_array();
	for (k = cmds; k->name; k++)
		json_array_append_new(r->ret, json_pack("{s:s}", "name", k->name));
}

static const struct wpsd_arg envelope[] = {
	{ "execute", WPSD_T_STR, true },
	{ "arguments", WPSD_T_OBJECT, false },
	{ "id", 0, false },     /* any JSON value; checked apart */
	{ NULL, 0, false },
};

static int check_envelope(json_t *req, struct wpsd_reply *r)
{
	const struct wpsd_arg *a;
	const char *key;
	json_t *v;

	if (!json_is_object(req)) {
		wpsd_reply_err(r, WPSD_GENERIC, "a request must be a JSON object");
		return -EINVAL;
	}
	json_object_foreach(req, key, v) {
		for (a = envelope; a->name; a++)
			if (!strcmp(a->name, key))
				break;
		if (!a->name) {
			wpsd_reply_err(r, WPSD_GENERIC, "unknown key '%s' in the "
				       "request (expected execute, arguments, id)", key);
			return -EINVAL;
		}
	}
	v = json_object_get(req, "execute");
	if (!json_is_string(v)) {
		wpsd_reply_err(r, WPSD_GENERIC, "'execute' must be a string naming "
			       "the command");
		return -EINVAL;
	}
	v = json_object_get(req, "arguments");
	if (v && !json_is_object(v)) {
		wpsd_reply_err(r, WPSD_GENERIC, "'arguments' must be an object");
		return -EINVAL;
	}
	return 0;
}

/*
 * The table's access column, for a client that is not root. A guest that
 * does not exist passes: the handler says "no guest named". An attached
 * process belongs to no connection; acting on it is for root or a client
 * with CAP_SYS_PTRACE (which may read any process's memory anyway).
 */
static int check_access(struct wpsd_conn *c, const struct wpsd_cmd *k,
			json_t *args, struct wpsd_reply *r)
{
	struct wpsd_guest *g;
	const char *name;

	if (c->root || k->access == WPSD_ANY)
		return 0;
	if (k->access == WPSD_ROOT) {
		wpsd_reply_err(r, WPSD_GENERIC, "permission denied: %s is for root "
			       "only (connection from pid %d, uid %d)", k->name,
			       (int)c->pid, (int)c->uid);
		return -EPERM;
	}
	name = arg_str(args, "guest");
	g = name ? wpsd_guest_find(c->d, name) : NULL;
	if (!g || g->doomed || g->owner == c->id)
		return 0;
	if (g->attach && wpsd_peer_can_ptrace(c->pid))
		return 0;
	wpsd_reply_err(r, WPSD_GENERIC, "permission denied: guest '%s' %s; a "
		       "client that is not root may %s only guests its own "
		       "connection registered (connection from pid %d, uid %d)",
		       g->name, g->attach ? "is an attached process" :
		       "belongs to another connection", k->name, (int)c->pid,
		       (int)c->uid);
	return -EPERM;
}

void wpsd_cmd_line(struct wpsd_conn *c, const char *line, size_t len)
{
	struct wpsd_reply r = { 0 };
	const struct wpsd_cmd *k;
	json_t *req, *args, *id = NULL;
	json_error_t jerr;
	const char *name;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req) {
		wpsd_reply_err(&r, WPSD_GENERIC, "malformed JSON at column %d: %s",
			       jerr.column, jerr.text);
		goto reply;
	}
	id = json_object_get(req, "id");
	if (check_envelope(req, &r))
		goto reply;
	name = json_string_value(json_object_get(req, "execute"));
	args = json_object_get(req, "arguments");
	for (k = cmds; k->name; k++)
		if (!strcmp(k->name, name))
			break;
	if (!k->name) {
		wpsd_reply_err(&r, WPSD_NOTFOUND, "the command %s has not been found",
			       name);
		goto reply;
	}
	if (!c->negotiated && k->fn != cmd_caps) {
		wpsd_reply_err(&r, WPSD_NOTFOUND, "expecting capabilities negotiation "
			       "with 'qmp_capabilities' before %s", name);
		goto reply;
	}
	if (k->spec && wpsd_args_check(args, k->spec, "arguments", &r))
		goto reply;
	if (check_access(c, k, args, &r))
		goto reply;
	wps_dbg(c->d->ctx, "connection %u: %s", c->id, name);
	k->fn(c, args, id, &r);
reply:
	if (r.cls)
		wpsd_send(c, wpsd_error(r.cls, r.desc, id));
	else if (!r.deferred)
		wpsd_send(c, wpsd_return(r.ret, id));
	else
		json_decref(r.ret);
	json_decref(req);
}
