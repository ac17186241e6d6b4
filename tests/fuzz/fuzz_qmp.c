/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: wpsnapd's control protocol up to, not including, side
 * effects. Each input line goes to the daemon's real request parser and
 * dispatcher (daemon/commands.c: JSON parse, envelope check, command
 * lookup, negotiation rule, argument check against the command's spec,
 * then the handler) and its QMP reply helpers (daemon/qmp.c).
 *
 * The seam is the link boundary: everything a handler would do to the
 * world (register or attach a guest, start a job, name fds, send bytes)
 * lives in server.c, guest.c and job*.c, which are not linked; the stubs
 * below stand in for them, reply as the daemon would refuse, and check
 * that every request got exactly one well-formed reply.
 *
 * Input: byte 0 = flags (bit 0: connection already negotiated; bit 1:
 * the peer is root; bit 2: a guest "vm0" exists, owned by this peer),
 * then lines as a client sends them ('\n'-terminated; blank lines and
 * lines over WPSD_LINE_MAX are skipped, as the server's framing does).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/ckptjob.h"
#include "daemon/commands.h"
#include "daemon/guest.h"
#include "daemon/job.h"
#include "daemon/qmp.h"
#include "daemon/restorejob.h"
#include "daemon/vmjob.h"
#include "tests/fuzz/fuzzutil.h"

/* Replies of the current line: exactly one per request. */
static unsigned int replies;

/* ---- stubs of server.c ---- */

void wpsd_send(struct wpsd_conn *c, json_t *msg)
{
	char *s;

	if (!msg)
		abort();    /* the daemon would drop the reply silently */
	if (json_object_size(msg) < 1 ||
	    (!json_object_get(msg, "return") && !json_object_get(msg, "error")))
		abort();
	s = json_dumps(msg, JSON_COMPACT);
	if (!s || memchr(s, '\n', strlen(s)))
		abort();    /* one reply is one line */
	free(s);
	json_decref(msg);
	replies++;
}

int wpsd_conn_take_fd(struct wpsd_conn *c, const char *name)
{
	return -1;      /* no fd was ever named: nothing was received */
}

/* ---- stubs of guest.c and job*.c: refuse, as with no fds/process ---- */

struct wpsd_guest *wpsd_guest_find(struct wpsd *d, const char *name)
{
	struct wpsd_guest *g;

	for (g = d->guests; g; g = g->next)
		if (name && !strcmp(g->name, name))
			return g;
	return NULL;
}

static int refuse(struct wpsd_reply *r, const char *what)
{
	wpsd_reply_err(r, WPSD_GENERIC, "%s: not run by the fuzz harness", what);
	return -EPERM;
}

int wpsd_guest_register(struct wpsd_conn *c, json_t *args, struct wpsd_reply *r)
{
	return refuse(r, "register");
}

int wpsd_guest_attach(struct wpsd_conn *c, json_t *args, struct wpsd_reply *r)
{
	return refuse(r, "attach");
}

/* The permission table asks it of a client that is not root: no /proc
 * reads from the harness, and the answer that grants least. */
bool wpsd_peer_can_ptrace(pid_t pid)
{
	return false;
}

int wpsd_guest_set_uffd(struct wpsd_conn *c, struct wpsd_guest *g,
			const char *fdname, struct wpsd_reply *r)
{
	return refuse(r, "set-uffd");
}

void wpsd_guest_remove(struct wpsd_guest *g)
{
	struct wpsd_guest **p;

	for (p = &g->d->guests; *p; p = &(*p)->next)
		if (*p == g) {
			*p = g->next;
			free(g);
			return;
		}
	abort();
}

json_t *wpsd_guest_info(const struct wpsd_guest *g)
{
	return json_pack("{s:s}", "guest", g->name);
}

int wpsd_job_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		   json_t *id, struct wpsd_reply *r)
{
	return refuse(r, "snapshot");
}

int wpsd_job_transaction(struct wpsd_conn *c, json_t *args, json_t *id,
			 struct wpsd_reply *r)
{
	return refuse(r, "transaction");
}

void wpsd_job_cancel(struct wpsd_job *j, const char *why)
{
	abort();        /* no job ever exists here */
}

int wpsd_job_ack(struct wpsd_conn *c, uint64_t token, bool resumed,
		 const char *error, const char *ds, struct wpsd_reply *r)
{
	return refuse(r, "ack");
}

json_t *wpsd_job_query(struct wpsd_job *j)
{
	abort();
}

/* commands.c tells a checkpoint series by its ops (no job exists here) */
const struct wpsd_job_ops wpsd_ckpt_ops = { .name = "checkpoint series" };

int wpsd_ckpt_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		    struct wpsd_reply *r)
{
	return refuse(r, "checkpoint");
}

int wpsd_restore_start(struct wpsd_conn *c, struct wpsd_guest *g, json_t *args,
		       struct wpsd_reply *r)
{
	return refuse(r, "restore");
}

/* The VM jobs (daemon/vmjob.c) would reach libvirt: refused. */
void wpsd_vm_snapshot(struct wpsd_conn *c, json_t *args, json_t *id,
		      struct wpsd_reply *r)
{
	refuse(r, "vm-snapshot");
}

void wpsd_vm_restore(struct wpsd_conn *c, json_t *args, json_t *id,
		     struct wpsd_reply *r)
{
	refuse(r, "vm-restore");
}

void wpsd_vm_checkpoint(struct wpsd_conn *c, json_t *args, json_t *id,
			struct wpsd_reply *r)
{
	refuse(r, "vm-checkpoint");
}

void wpsd_vm_stop(struct wpsd_conn *c, json_t *args, json_t *id,
		  struct wpsd_reply *r)
{
	refuse(r, "vm-stop");
}

void wpsd_vm_query(struct wpsd_conn *c, json_t *args, json_t *id,
		   struct wpsd_reply *r)
{
	refuse(r, "query-vm");
}

/* ---- the target ---- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wpsd d = { .ctx = NULL };
	struct wpsd_conn c = { .d = &d, .id = 1, .fd = -1 };
	const char *line, *nl, *end;
	struct wpsd_guest *g;

	if (!size)
		return 0;
	fz_begin();
	d.ctx = fz_ctx();
	c.pid = getpid();
	c.negotiated = data[0] & 1;
	c.root = data[0] & 2;
	if (data[0] & 4) {
		g = calloc(1, sizeof(*g));
		if (!g)
			abort();
		g->d = &d;
		g->owner = c.id;
		g->uffd = -1;
		strcpy(g->name, "vm0");
		d.guests = g;
	}
	line = (const char *)data + 1;
	end = (const char *)data + size;
	for (; line < end && !d.quit; line = nl + 1) {
		size_t len;

		nl = memchr(line, '\n', (size_t)(end - line));
		if (!nl)
			break;      /* a partial line waits for more input */
		len = (size_t)(nl - line);
		if (len > WPSD_LINE_MAX || strspn(line, " \t\r") >= len)
			continue;
		replies = 0;
		wpsd_cmd_line(&c, line, len);
		if (replies != 1)
			abort();    /* every request gets exactly one reply */
	}
	while ((g = d.guests))
		wpsd_guest_remove(g);
	fz_end();
	return 0;
}
