/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnapd's server: the daemon context, the listening socket, the one
 * poll() loop and the client connections (line framing, SCM_RIGHTS, output
 * queues). Everything here runs on the loop thread only; snapshot workers
 * talk to it through job.h (flags under a lock plus an eventfd).
 *
 * The server does not know the protocol: it frames lines and hands each
 * one to the handler its creator names in wpsd_opts (wpsnapd.c's main
 * names commands.c's wpsd_cmd_line). So the calls go one way: commands.c
 * uses this header (send, events, fds), server.c never includes
 * commands.h.
 */
#ifndef WPSD_SERVER_H
#define WPSD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <wpsnap/wpsnap.h>

#include "base/clock.h"   /* wps_now_ns(): the loop's clock */

#define WPSD_LINE_MAX   (64u << 10)  /* one request line, without '\n' */
#define WPSD_OUT_MAX    (4u << 20)   /* queued output before we drop a peer */
#define WPSD_PENDING_FDS 16          /* received, not yet named by getfd */
#define WPSD_NAMED_FDS  64           /* named fds per connection */
#define WPSD_NAME_MAX   63           /* fd names and guest names */
#define WPSD_PROGRESS_MS 250         /* progress events at most this often */

struct wpsd_guest;
struct wpsd_conn;
struct wpsd_job;

/* One complete request line of c (without '\n', not blank, at most
 * WPSD_LINE_MAX bytes). It answers through wpsd_send. */
typedef void (*wpsd_line_fn)(struct wpsd_conn *c, const char *line, size_t len);

struct wpsd_namedfd {
	char name[WPSD_NAME_MAX + 1];
	int fd;                          /* owned */
	struct wpsd_namedfd *next;
};

struct wpsd_conn {
	struct wpsd *d;
	unsigned int id;                 /* stable handle: jobs refer to it */
	int fd;                          /* owned */
	pid_t pid;                       /* SO_PEERCRED */
	uid_t uid;
	bool root;                       /* uid 0: may register any pid */
	bool negotiated;                 /* qmp_capabilities done */
	bool dead;                       /* close at the end of this round */
	char *in;                        /* partial line */
	size_t in_len;
	bool discarding;                 /* inside an oversized line */
	char *out;                       /* queued output */
	size_t out_len, out_cap;
	int pending[WPSD_PENDING_FDS];   /* owned, FIFO */
	unsigned int nr_pending;
	struct wpsd_namedfd *fds;        /* owned */
	unsigned int nr_fds;
	struct wpsd_conn *next;
};

struct wpsd_opts {
	const char *socket_path;
	const char *group;               /* NULL: root only, socket 0600 */
	wpsd_line_fn line;               /* required: the request handler */
};

struct wpsd {
	struct wps_ctx *ctx;             /* not owned */
	char *sock_path;                 /* owned copy; unlinked at exit */
	bool have_group;
	gid_t gid;
	int lfd;                         /* listening socket, owned */
	int sigfd;                       /* signalfd for SIGTERM/SIGINT, owned */
	int efd;                         /* eventfd: workers -> loop, owned */
	wpsd_line_fn line;               /* from wpsd_opts */
	struct wpsd_conn *conns;
	struct wpsd_guest *guests;
	/* Jobs of no guest (a libvirt domain's: daemon/vmjob.c) and the
	 * summaries of the last ones that ended; job.c's */
	struct wpsd_job *jobs;
	json_t *jobs_done;
	unsigned int next_conn_id;
	uint64_t next_token;
	bool quit;
};

int wpsd_init(struct wpsd *d, struct wps_ctx *ctx, const struct wpsd_opts *o);
int wpsd_run(struct wpsd *d);
/* Cancel and join every snapshot, close everything, remove the socket. */
void wpsd_fini(struct wpsd *d);

struct wpsd_conn *wpsd_conn_by_id(struct wpsd *d, unsigned int id);

/* Queue one JSON object as a line; steals the reference to msg. */
void wpsd_send(struct wpsd_conn *c, json_t *msg);
/* {"event": name, "data": data, "timestamp": ...}; steals data. */
void wpsd_send_event(struct wpsd_conn *c, const char *name, json_t *data);
/* The same event to every negotiated connection; steals data. */
void wpsd_broadcast(struct wpsd *d, const char *name, json_t *data);

/* Take the named fd out of the connection's table (-1 if unknown). */
int wpsd_conn_take_fd(struct wpsd_conn *c, const char *name);

/* Wake the loop from any thread. */
void wpsd_notify(struct wpsd *d);

#endif /* WPSD_SERVER_H */
