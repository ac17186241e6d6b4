/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP Unix socket monitor kind (struct qemu_mon_ops, src/qemu_int.h).
 *
 * It owns one connection to a QEMU -qmp socket: the greeting and the
 * capabilities negotiation at open, then one command at a time, each
 * sent in a single write (a forked watchdog may add its own `cont` on
 * the same connection after our death, and must not land inside ours)
 * and matched to its answer by id, skipping events and other answers.
 * Every wait is bounded (QMP_TIMEOUT_MS; 5 s for the greeting, since a
 * socket busy with another client accepts and then says nothing). QEMU's
 * pid is the socket peer's: the process we attach to is the one that
 * answers, not a proxy.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "src/qemu_int.h"

#define QMP_TIMEOUT_MS 30000
#define QMP_GREETING_MS 5000
#define QMP_CHUNK 65536

struct qmp {
	int fd;
	pid_t pid;              /* QEMU, from the socket's credentials */
	char *path;
	char *buf;              /* received, not yet parsed */
	size_t len, cap;
	unsigned int next_id;
};

/* One line (a QMP message) into *line, malloc'ed; waits at most ms. */
static int qmp_line(struct qmp *m, char **line, int ms)
{
	uint64_t deadline = wps_now_ns() + (uint64_t)ms * 1000000ull;

	for (;;) {
		char *nl = m->len ? memchr(m->buf, '\n', m->len) : NULL;
		struct pollfd p = { .fd = m->fd, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - m->buf);

			*line = strndup(m->buf, l);
			if (!*line)
				return -ENOMEM;
			memmove(m->buf, nl + 1, m->len - l - 1);
			m->len -= l + 1;
			return 0;
		}
		if (m->cap - m->len < QMP_CHUNK) {
			char *nb = realloc(m->buf, m->cap + QMP_CHUNK);

			if (!nb)
				return -ENOMEM;
			m->buf = nb;
			m->cap += QMP_CHUNK;
		}
		left = (int64_t)(deadline - wps_now_ns()) / 1000000;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ETIMEDOUT;
		n = recv(m->fd, m->buf + m->len, m->cap - m->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ECONNRESET;
		m->len += (size_t)n;
	}
}

/* All of s, the first byte carrying fd (SCM_RIGHTS) if fd >= 0. */
static int send_all(int sock, const char *s, size_t len, int fd)
{
	while (len) {
		char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec iov = { .iov_base = (void *)s, .iov_len = len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t n;

		if (fd >= 0) {
			struct cmsghdr *c;

			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof(int));
		}
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		fd = -1;        /* passed with the first bytes sent */
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One command, fd (or -1) passed along with it. */
static int qmp_request(struct wps_qemu *q, const char *cmd, json_t *args,
		       json_t **ret, int fd)
{
	struct qmp *m = q->priv;
	char id[32], *msg = NULL, *line = NULL;
	json_t *req, *rep = NULL;
	int err;

	snprintf(id, sizeof(id), "wps-%u", ++m->next_id);
	req = json_pack("{s:s, s:s}", "execute", cmd, "id", id);
	if (!req) {
		json_decref(args);
		return -ENOMEM;
	}
	if (args)
		json_object_set_new(req, "arguments", args);
	msg = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!msg)
		return -ENOMEM;
	/* One write per message, newline included: the watchdog may add
	 * its own after ours. */
	{
		size_t l = strlen(msg);
		char *nl = realloc(msg, l + 2);

		if (!nl) {
			free(msg);
			return -ENOMEM;
		}
		msg = nl;
		memcpy(msg + l, "\n", 2);
		err = send_all(m->fd, msg, l + 1, fd);
	}
	free(msg);
	if (err) {
		wps_err(q->ctx, "QMP %s: sending to %s: %s", cmd, m->path,
			strerror(-err));
		return err;
	}
	for (;;) {
		json_t *rid, *r, *e;

		free(line);
		line = NULL;
		err = qmp_line(m, &line, QMP_TIMEOUT_MS);
		if (err) {
			wps_err(q->ctx, "QMP %s: no answer from %s: %s", cmd,
				m->path, err == -ECONNRESET ?
				"QEMU closed the connection" : strerror(-err));
			break;
		}
		json_decref(rep);
		rep = json_loads(line, 0, NULL);
		if (!rep)
			continue;       /* not ours to judge */
		rid = json_object_get(rep, "id");
		if (!json_is_string(rid) || strcmp(json_string_value(rid), id))
			continue;       /* an event, or another's answer */
		r = json_object_get(rep, "return");
		e = json_object_get(rep, "error");
		if (r) {
			if (ret)
				*ret = json_incref(r);
			err = 0;
		} else {
			const char *d = json_string_value(
				json_object_get(e, "desc"));

			wps_err(q->ctx, "QMP %s refused: %s", cmd, d ? d : line);
			err = -EIO;
		}
		break;
	}
	free(line);
	json_decref(rep);
	return err;
}

static int qmp_hmp(struct wps_qemu *q, const char *cmdline, char **out)
{
	json_t *r = NULL;
	int err;

	err = qemu_execute(q, "human-monitor-command",
			  json_pack("{s:s}", "command-line", cmdline), &r);
	if (err)
		return err;
	if (!json_is_string(r)) {
		json_decref(r);
		wps_err(q->ctx, "HMP '%s': no text in the answer", cmdline);
		return -EPROTO;
	}
	*out = strdup(json_string_value(r));
	json_decref(r);
	return *out ? 0 : -ENOMEM;
}

static pid_t qmp_pid(const struct wps_qemu *q)
{
	return ((const struct qmp *)q->priv)->pid;
}

static int qmp_watchdog_fd(const struct wps_qemu *q)
{
	return ((const struct qmp *)q->priv)->fd;
}

static void qmp_close(struct wps_qemu *q)
{
	struct qmp *m = q->priv;

	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	free(m->buf);
	free(m->path);
	free(m);
	q->priv = NULL;
}

static const struct qemu_mon_ops qmp_ops = {
	.name = "qmp",
	.request = qmp_request,
	.hmp = qmp_hmp,
	.pid = qmp_pid,
	.watchdog_fd = qmp_watchdog_fd,
	.close = qmp_close,
};

/* QEMU greets a new client with {"QMP": {...}}. */
static int greeting(struct wps_qemu *q, struct qmp *m)
{
	char *line = NULL;
	int err = qmp_line(m, &line, QMP_GREETING_MS);

	/* QEMU serves one QMP client at a time: a busy socket accepts our
	 * connection but says nothing until the other client leaves. */
	if (err == -ETIMEDOUT)
		wps_err(q->ctx, "no QMP greeting on %s in %d s (another client "
			"connected? QEMU serves one at a time per socket: give "
			"QEMU another -qmp socket)", m->path,
			QMP_GREETING_MS / 1000);
	else if (err)
		wps_err(q->ctx, "QMP greeting on %s: %s", m->path,
			err == -ECONNRESET ? "QEMU closed the connection" :
			strerror(-err));
	else if (!strstr(line, "\"QMP\"")) {
		wps_err(q->ctx, "%s does not speak QMP", m->path);
		err = -EPROTO;
	}
	free(line);
	return err;
}

int qemu_qmp_open(struct wps_qemu *q, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct qmp *m;
	int err;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		wps_err(q->ctx, "QMP socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	m = calloc(1, sizeof(*m));
	if (!m || !(m->path = strdup(path))) {
		free(m);
		return -ENOMEM;
	}
	q->ops = &qmp_ops;
	q->priv = m;
	m->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (m->fd < 0) {
		err = -errno;
		wps_err(q->ctx, "cannot create a socket for %s: %s", path,
			strerror(-err));
		goto fail;
	}
	if (connect(m->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		wps_err(q->ctx, "cannot connect to QMP socket %s: %s", path,
			strerror(-err));
		goto fail;
	}
	if (getsockopt(m->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) ||
	    cred.pid <= 0) {
		err = -ENOTSUP;
		wps_err(q->ctx, "cannot tell which process serves %s", path);
		goto fail;
	}
	m->pid = cred.pid;
	err = greeting(q, m);
	if (!err)
		err = qemu_execute(q, "qmp_capabilities", NULL, NULL);
	if (err)
		goto fail;
	return 0;
fail:
	qmp_close(q);
	q->ops = NULL;
	return err;
}
