/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's one event loop: a poll() over the listening socket, a
 * signalfd (SIGTERM, SIGINT), an eventfd the snapshot workers kick, and the
 * client connections. Nothing in the loop blocks: sockets are
 * non-blocking, output is queued, snapshots run in their own threads.
 *
 * Framing: one JSON object per line, at most WPSD_LINE_MAX bytes; a longer
 * line earns an error reply and is skipped up to its newline, so the
 * connection stays in step. File descriptors come as SCM_RIGHTS on any
 * byte and wait, in order, for the getfd that names them. Each complete
 * line goes to d->line (commands.c's handler, set by wpsnapd.c): the
 * server is below the protocol and never calls into it by name.
 *
 * Owns: the listening socket and its path, the signalfd, the eventfd, the
 * connections (their sockets, buffers, received fds).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/guest.h"
#include "daemon/job.h"
#include "daemon/qmp.h"
#include "daemon/server.h"
#include "base/log.h"

#define READ_CHUNK (64u << 10)

void wpsd_notify(struct wpsd *d)
{
	uint64_t one = 1;

	/* Only EAGAIN (counter saturated) can fail: the loop wakes anyway. */
	if (write(d->efd, &one, sizeof(one)) < 0)
		return;
}

struct wpsd_conn *wpsd_conn_by_id(struct wpsd *d, unsigned int id)
{
	struct wpsd_conn *c;

	for (c = d->conns; c; c = c->next)
		if (c->id == id && !c->dead)
			return c;
	return NULL;
}

int wpsd_conn_take_fd(struct wpsd_conn *c, const char *name)
{
	struct wpsd_namedfd **p, *n;
	int fd;

	for (p = &c->fds; *p; p = &(*p)->next) {
		if (!strcmp((*p)->name, name)) {
			n = *p;
			*p = n->next;
			fd = n->fd;
			free(n);
			c->nr_fds--;
			return fd;
		}
	}
	return -1;
}

/* ------------------------------------------------------------------ */
/* Output                                                              */
/* ------------------------------------------------------------------ */

static void conn_flush(struct wpsd_conn *c)
{
	ssize_t n;

	while (c->out_len && !c->dead) {
		n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				c->dead = true;
			return;
		}
		memmove(c->out, c->out + n, c->out_len - (size_t)n);
		c->out_len -= (size_t)n;
	}
}

void wpsd_send(struct wpsd_conn *c, json_t *msg)
{
	char *s;
	size_t len;

	if (!msg)
		return;
	s = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!s || c->dead) {
		free(s);
		return;
	}
	len = strlen(s);
	if (c->out_len + len + 1 > WPSD_OUT_MAX) {
		wps_warn(c->d->ctx, "connection %u (pid %d) does not read its "
			 "messages (%zu bytes queued): closing it", c->id,
			 (int)c->pid, c->out_len);
		c->dead = true;
		free(s);
		return;
	}
	if (c->out_len + len + 1 > c->out_cap) {
		size_t cap = (c->out_len + len + 1) * 2;
		char *o = realloc(c->out, cap);

		if (!o) {
			c->dead = true;
			free(s);
			return;
		}
		c->out = o;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, s, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
	free(s);
	conn_flush(c);
}

void wpsd_send_event(struct wpsd_conn *c, const char *name, json_t *data)
{
	wpsd_send(c, json_pack("{s:s,s:o,s:o}", "event", name, "data",
			       data ? data : json_object(), "timestamp",
			       wpsd_timestamp()));
}

void wpsd_broadcast(struct wpsd *d, const char *name, json_t *data)
{
	struct wpsd_conn *c;

	for (c = d->conns; c; c = c->next)
		if (c->negotiated && !c->dead)
			wpsd_send_event(c, name, json_incref(data));
	json_decref(data);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

/* Is the peer in group gid (primary or supplementary)? */
static bool peer_in_group(pid_t pid, gid_t peer_gid, gid_t gid)
{
	char p[64], line[4096], *s, *end;
	bool in = peer_gid == gid;
	FILE *f;

	if (in)
		return true;
	snprintf(p, sizeof(p), "/proc/%d/status", (int)pid);
	f = fopen(p, "re");
	if (!f)
		return false;
	while (!in && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Groups:", 7))
			continue;
		for (s = line + 7; *s; s = end) {
			unsigned long v = strtoul(s, &end, 10);

			if (end == s)
				break;
			if ((gid_t)v == gid)
				in = true;
		}
	}
	fclose(f);
	return in;
}

static void conn_accept(struct wpsd *d)
{
	struct wpsd_conn *c;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	int fd;

	fd = accept4(d->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			wps_warn(d->ctx, "accept: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len)) {
		wps_warn(d->ctx, "SO_PEERCRED: %s", strerror(errno));
		close(fd);
		return;
	}
	if (cr.uid != 0 && !(d->have_group && peer_in_group(cr.pid, cr.gid, d->gid))) {
		wps_warn(d->ctx, "refused a connection from pid %d uid %d: not root "
			 "and not in the configured group", (int)cr.pid, (int)cr.uid);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->d = d;
	c->fd = fd;
	c->id = ++d->next_conn_id;
	c->pid = cr.pid;
	c->uid = cr.uid;
	c->root = cr.uid == 0;
	c->next = d->conns;
	d->conns = c;
	wps_info(d->ctx, "connection %u from pid %d uid %d", c->id, (int)c->pid,
		 (int)c->uid);
	wpsd_send(c, wpsd_greeting());
}

static void conn_free(struct wpsd *d, struct wpsd_conn *c)
{
	struct wpsd_guest *g, *next;
	struct wpsd_namedfd *n;
	unsigned int i;

	/* A guest belongs to its VMM's connection: with it gone nobody can
	 * pause the guest or hand a new uffd, so it goes too. */
	for (g = d->guests; g; g = next) {
		next = g->next;
		if (g->owner != c->id || g->doomed)
			continue;
		if (g->job) {
			g->doomed = true;
			wpsd_job_cancel(g->job, "the VMM's connection closed");
		} else {
			wpsd_guest_remove(g);
		}
	}
	for (i = 0; i < c->nr_pending; i++)
		close(c->pending[i]);
	while ((n = c->fds)) {
		c->fds = n->next;
		close(n->fd);
		free(n);
	}
	wps_info(d->ctx, "connection %u closed", c->id);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

static void conn_stash_fds(struct wpsd_conn *c, struct msghdr *mh)
{
	struct cmsghdr *cm;
	unsigned int i, n;
	int *fds;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (unsigned int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		fds = (int *)CMSG_DATA(cm);
		for (i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, &fds[i], sizeof(fd));
			if (c->nr_pending < WPSD_PENDING_FDS) {
				c->pending[c->nr_pending++] = fd;
			} else {
				close(fd);
				wpsd_send(c, wpsd_error(WPSD_GENERIC, "too many file "
					  "descriptors waiting for getfd; one was closed",
					  NULL));
			}
		}
	}
	if (mh->msg_flags & MSG_CTRUNC)
		wpsd_send(c, wpsd_error(WPSD_GENERIC, "too many file descriptors "
					"in one message; the excess was closed", NULL));
}

static void conn_lines(struct wpsd_conn *c)
{
	char *nl, *line = c->in;
	size_t left = c->in_len, len;

	while (!c->dead && (nl = memchr(line, '\n', left))) {
		len = (size_t)(nl - line);
		if (c->discarding) {
			c->discarding = false;   /* the tail of an oversized line */
		} else if (len > WPSD_LINE_MAX) {
			wpsd_send(c, wpsd_error(WPSD_GENERIC, "message exceeds the "
				  "limit of 65536 bytes per line; discarded", NULL));
		} else if (strspn(line, " \t\r") < len) {
			c->d->line(c, line, len);
		}
		left -= len + 1;
		line = nl + 1;
	}
	if (left > WPSD_LINE_MAX) {
		if (!c->discarding)
			wpsd_send(c, wpsd_error(WPSD_GENERIC, "message exceeds the "
				  "limit of 65536 bytes per line; discarded", NULL));
		c->discarding = true;
		left = 0;
	}
	memmove(c->in, line, left);
	c->in_len = left;
}

static void conn_read(struct wpsd_conn *c)
{
	union {
		char buf[CMSG_SPACE(WPSD_PENDING_FDS * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct msghdr mh = { 0 };
	struct iovec iov;
	ssize_t n;

	if (!c->in) {
		c->in = malloc(WPSD_LINE_MAX + READ_CHUNK + 1);
		if (!c->in) {
			c->dead = true;
			return;
		}
	}
	iov.iov_base = c->in + c->in_len;
	iov.iov_len = WPSD_LINE_MAX + READ_CHUNK - c->in_len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			c->dead = true;
		return;
	}
	conn_stash_fds(c, &mh);
	if (n == 0) {
		c->dead = true;
		return;
	}
	c->in_len += (size_t)n;
	conn_lines(c);
}

/* ------------------------------------------------------------------ */
/* Setup and loop                                                      */
/* ------------------------------------------------------------------ */

/*
 * The socket appears under its name only once it listens (bound under a
 * temporary name, renamed into place), so "the socket exists" means "it
 * answers": a client or a test that waits for the file never gets
 * ECONNREFUSED in the window between bind() and listen().
 */
static int make_socket(struct wpsd *d, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sockaddr_un ta = { .sun_family = AF_UNIX };
	char dir[sizeof(sa.sun_path)], *slash;
	const char *bpath = path;
	struct stat st;
	mode_t old;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		wps_err(d->ctx, "socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) && errno != EEXIST) {
			ret = -errno;
			wps_err(d->ctx, "cannot create %s: %s", dir, strerror(errno));
			return ret;
		}
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!lstat(path, &st)) {
		/* A live daemon answers; a stale socket from a crash does not. */
		if (S_ISSOCK(st.st_mode) &&
		    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
		    errno == ECONNREFUSED) {
			unlink(path);
			close(fd);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0)
				return -errno;
		} else {
			wps_err(d->ctx, "%s exists%s", path, S_ISSOCK(st.st_mode) ?
				" and another wpsnapd answers on it" : " and is not a socket");
			close(fd);
			return -EADDRINUSE;
		}
	}
	/* A path too long for the suffix is bound directly (and has the
	 * small window back). */
	if (snprintf(ta.sun_path, sizeof(ta.sun_path), "%s.%d.tmp", path,
		     (int)getpid()) < (int)sizeof(ta.sun_path)) {
		bpath = ta.sun_path;
		unlink(bpath);   /* left by a crashed daemon that had our pid */
	} else {
		ta = sa;
	}
	old = umask(0177);
	ret = bind(fd, (struct sockaddr *)&ta, sizeof(ta)) ? -errno : 0;
	umask(old);
	if (ret) {
		wps_err(d->ctx, "bind %s: %s", bpath, strerror(-ret));
		goto fail;
	}
	if (d->have_group && (chown(bpath, (uid_t)-1, d->gid) || chmod(bpath, 0660))) {
		ret = -errno;
		wps_err(d->ctx, "giving %s to the group: %s", path, strerror(errno));
		goto fail_unlink;
	}
	if (listen(fd, 64)) {
		ret = -errno;
		goto fail_unlink;
	}
	if (bpath != path && rename(bpath, path)) {
		ret = -errno;
		wps_err(d->ctx, "rename %s to %s: %s", bpath, path, strerror(errno));
		goto fail_unlink;
	}
	d->lfd = fd;
	return 0;
fail_unlink:
	unlink(bpath);
fail:
	close(fd);
	return ret;
}

int wpsd_init(struct wpsd *d, struct wps_ctx *ctx, const struct wpsd_opts *o)
{
	struct group gr, *grp = NULL;
	char gbuf[4096];
	sigset_t ss;
	int ret;

	memset(d, 0, sizeof(*d));
	d->ctx = ctx;
	d->line = o->line;
	d->lfd = d->sigfd = d->efd = -1;
	if (o->group) {
		if (getgrnam_r(o->group, &gr, gbuf, sizeof(gbuf), &grp) || !grp) {
			wps_err(ctx, "no group named %s", o->group);
			return -ENOENT;
		}
		d->have_group = true;
		d->gid = grp->gr_gid;
	}
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	/* Blocked in every thread: workers are created after this. */
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	d->sigfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->sigfd < 0 || d->efd < 0) {
		ret = -errno;
		wps_err(ctx, "signalfd/eventfd: %s", strerror(errno));
		goto fail;
	}
	ret = make_socket(d, o->socket_path);
	if (ret)
		goto fail;
	d->sock_path = strdup(o->socket_path);
	if (!d->sock_path) {
		ret = -ENOMEM;
		goto fail;
	}
	wps_info(ctx, "listening on %s", d->sock_path);
	return 0;
fail:
	wpsd_fini(d);
	return ret;
}

static void reap_dead(struct wpsd *d)
{
	struct wpsd_conn **p = &d->conns, *c;

	while ((c = *p)) {
		if (c->dead) {
			*p = c->next;
			conn_free(d, c);
		} else {
			p = &c->next;
		}
	}
}

int wpsd_run(struct wpsd *d)
{
	struct pollfd *pfd = NULL;
	struct wpsd_conn **pc = NULL, *c;
	unsigned int n, i, cap = 0;
	uint64_t v;
	int ret = 0;

	while (!d->quit) {
		n = 0;
		for (c = d->conns; c; c = c->next)
			n++;
		if (n + 3 > cap) {
			cap = (n + 3) * 2;
			free(pfd);
			free(pc);
			pfd = calloc(cap, sizeof(*pfd));
			pc = calloc(cap, sizeof(*pc));
			if (!pfd || !pc) {
				ret = -ENOMEM;
				break;
			}
		}
		pfd[0] = (struct pollfd){ .fd = d->lfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = d->sigfd, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = d->efd, .events = POLLIN };
		n = 3;
		for (c = d->conns; c; c = c->next, n++) {
			pc[n] = c;
			pfd[n] = (struct pollfd){ .fd = c->fd, .events = POLLIN |
						  (c->out_len ? POLLOUT : 0) };
		}
		if (poll(pfd, n, wpsd_jobs_active(d) ? WPSD_PROGRESS_MS : -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			wps_err(d->ctx, "poll: %s", strerror(errno));
			break;
		}
		if (pfd[1].revents) {
			struct signalfd_siginfo si;

			if (read(d->sigfd, &si, sizeof(si)) == sizeof(si))
				wps_info(d->ctx, "signal %u: shutting down", si.ssi_signo);
			d->quit = true;
		}
		if (pfd[2].revents && read(d->efd, &v, sizeof(v)) < 0)
			v = 0;
		for (i = 3; i < n; i++) {
			c = pc[i];
			if (c->dead)
				continue;
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				conn_read(c);
			if (pfd[i].revents & POLLOUT)
				conn_flush(c);
		}
		if (pfd[0].revents)
			conn_accept(d);
		wpsd_jobs_poll(d);
		wpsd_jobs_progress(d);
		reap_dead(d);
	}
	free(pfd);
	free(pc);
	return ret;
}

/* Best effort: the last replies (quit's) reach their readers. */
static void flush_all(struct wpsd *d)
{
	uint64_t end = wps_now_ns() + 500000000ull;
	struct wpsd_conn *c;
	struct pollfd p;

	for (c = d->conns; c; c = c->next) {
		while (c->out_len && !c->dead && wps_now_ns() < end) {
			p = (struct pollfd){ .fd = c->fd, .events = POLLOUT };
			if (poll(&p, 1, 100) > 0)
				conn_flush(c);
		}
	}
}

void wpsd_fini(struct wpsd *d)
{
	struct wpsd_conn *c;

	wpsd_jobs_shutdown(d);
	flush_all(d);
	while ((c = d->conns)) {
		d->conns = c->next;
		conn_free(d, c);
	}
	while (d->guests)
		wpsd_guest_remove(d->guests);
	if (d->lfd >= 0) {
		close(d->lfd);
		if (d->sock_path)
			unlink(d->sock_path);
	}
	if (d->sigfd >= 0)
		close(d->sigfd);
	if (d->efd >= 0)
		close(d->efd);
	free(d->sock_path);
	d->lfd = d->sigfd = d->efd = -1;
	d->sock_path = NULL;
}
