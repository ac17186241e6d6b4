/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VMM side of wpsnapd (include/wpsnap/client.h, docs/PROTOCOL.md).
 *
 * One socket, one reader at a time: either the helper thread or whoever
 * waits for a reply (or calls wps_client_dispatch). Replies find their
 * waiter by id; events run the handlers on the reading thread. The pause
 * acknowledgement is sent without waiting for its reply, so a handler
 * never waits for the very socket its caller is reading.
 *
 * Owns: the socket, the helper thread and its stop eventfd, the read
 * buffer, and any userfaultfd it opens until it is handed over.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <wpsnap/client.h>

#include "base/deadline.h"
#include "base/log.h"

#define CLIENT_LINE_MAX   (1u << 20)
#define CLIENT_TIMEOUT_MS 60000    /* a reply, not a snapshot */
#define CLIENT_DONE_MAX   32       /* terminal events remembered */
#define CLIENT_PAUSED_MAX 16

struct waiter {
	uint64_t id;
	json_t *reply;                 /* owned once set */
	struct waiter *next;
};

struct paused {
	uint64_t token;
	char guest[64];
};

struct wps_client {
	struct wps_ctx *ctx;
	int fd;                        /* owned */
	struct wps_client_ops ops;
	void *arg;
	pthread_mutex_t wlock;         /* one message written at a time */
	pthread_mutex_t lock;          /* everything below */
	pthread_cond_t cond;
	bool reading;                  /* someone is the reader now */
	bool dead;
	bool threaded;
	pthread_t th;
	int stop_efd;                  /* owned; wakes the helper thread */
	uint64_t next_id;
	struct waiter *waiters;
	json_t *done;                  /* terminal events' data, newest last */
	struct paused paused[CLIENT_PAUSED_MAX];
	unsigned int nr_paused;
	char *rbuf;
	size_t rlen;
};

/* ------------------------------------------------------------------ */
/* Writing                                                             */
/* ------------------------------------------------------------------ */

/* Send one message, with fd as SCM_RIGHTS when fd >= 0. Steals msg. */
static int send_msg(struct wps_client *c, json_t *msg, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} cb;
	struct msghdr mh = { 0 };
	struct iovec iov;
	size_t len, off = 0;
	char *s;
	ssize_t n;
	int ret = 0;

	s = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!s)
		return -ENOMEM;
	len = strlen(s);
	s[len++] = '\n';   /* json_dumps left room: replace the NUL */
	pthread_mutex_lock(&c->wlock);
	while (off < len) {
		iov.iov_base = s + off;
		iov.iov_len = len - off;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		if (fd >= 0 && !off) {
			struct cmsghdr *cm;

			mh.msg_control = cb.buf;
			mh.msg_controllen = sizeof(cb.buf);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &fd, sizeof(int));
		}
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			wps_err(c->ctx, "wpsnapd: send: %s", strerror(errno));
			break;
		}
		off += (size_t)n;
	}
	pthread_mutex_unlock(&c->wlock);
	free(s);
	return ret;
}

static json_t *request(const char *cmd, json_t *args, uint64_t id)
{
	json_t *m = json_pack("{s:s,s:I}", "execute", cmd, "id", (json_int_t)id);

	if (m && args)
		json_object_set_new(m, "arguments", args);
	else
		json_decref(args);
	return m;
}

/* Fire and forget: the reply is only logged if it is an error. */
static void send_async(struct wps_client *c, const char *cmd, json_t *args, int fd)
{
	uint64_t id;

	pthread_mutex_lock(&c->lock);
	id = ++c->next_id;
	pthread_mutex_unlock(&c->lock);
	send_msg(c, request(cmd, args, id), fd);
}

/* ------------------------------------------------------------------ */
/* Reading and events                                                  */
/* ------------------------------------------------------------------ */

static int uffd_new(struct wps_ctx *ctx, int *out)
{
	int dev, fd;

	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		wps_err(ctx, "cannot open /dev/userfaultfd: %s", strerror(errno));
		return -errno;
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		close(dev);
		wps_err(ctx, "USERFAULTFD_IOC_NEW: %s", strerror(err));
		return -err;
	}
	close(dev);
	*out = fd;
	return 0;
}

/* WPS_UFFD_REQUEST: the last snapshot spent the guest's userfaultfd. */
static void rearm(struct wps_client *c, const char *guest)
{
	char name[96];
	int fd;

	if (uffd_new(c->ctx, &fd))
		return;
	snprintf(name, sizeof(name), "uffd-%s", guest);
	send_async(c, "getfd", json_pack("{s:s}", "fdname", name), fd);
	close(fd);   /* the daemon must hold the only reference */
	send_async(c, "wps-guest-set-uffd", json_pack("{s:s,s:s}", "guest", guest,
						      "uffd", name), -1);
}

static void on_event(struct wps_client *c, const char *name, json_t *data)
{
	const char *guest = json_string_value(json_object_get(data, "guest"));
	uint64_t token = (uint64_t)json_integer_value(json_object_get(data, "token"));
	unsigned int i;
	char *txt;
	int ret;

	if (!guest)
		guest = "";
	if (!strcmp(name, "WPS_PAUSE_REQUEST")) {
		int ds = -1;

		ret = c->ops.pause ? c->ops.pause(c->arg, guest) : -EOPNOTSUPP;
		if (!ret && c->ops.device_state)
			ret = c->ops.device_state(c->arg, guest, &ds);
		pthread_mutex_lock(&c->lock);
		if (!ret && c->nr_paused < CLIENT_PAUSED_MAX) {
			c->paused[c->nr_paused].token = token;
			snprintf(c->paused[c->nr_paused].guest,
				 sizeof(c->paused[0].guest), "%s", guest);
			c->nr_paused++;
		}
		pthread_mutex_unlock(&c->lock);
		if (ret)
			send_async(c, "wps-vcpus-paused", json_pack("{s:I,s:s}",
				   "token", (json_int_t)token, "error",
				   strerror(-ret)), -1);
		else if (ds < 0)
			send_async(c, "wps-vcpus-paused", json_pack("{s:I}",
				   "token", (json_int_t)token), -1);
		else {
			char fdname[40];

			/* named first, then referred to: the daemon reads
			 * requests in order */
			snprintf(fdname, sizeof(fdname), "device-state-%" PRIu64, token);
			send_async(c, "getfd", json_pack("{s:s}", "fdname", fdname), ds);
			close(ds);
			send_async(c, "wps-vcpus-paused", json_pack("{s:I,s:s}",
				   "token", (json_int_t)token, "device-state", fdname), -1);
		}
	} else if (!strcmp(name, "WPS_RESUME_REQUEST")) {
		if (c->ops.resume)
			c->ops.resume(c->arg, guest);
		pthread_mutex_lock(&c->lock);
		for (i = 0; i < c->nr_paused; i++) {
			if (c->paused[i].token == token) {
				c->paused[i] = c->paused[--c->nr_paused];
				break;
			}
		}
		pthread_mutex_unlock(&c->lock);
		send_async(c, "wps-vcpus-resumed", json_pack("{s:I}", "token",
			   (json_int_t)token), -1);
	} else if (!strcmp(name, "WPS_UFFD_REQUEST")) {
		rearm(c, guest);
	} else if (!strncmp(name, "WPS_SNAPSHOT_", 13) &&
		   (!strcmp(name + 13, "COMPLETED") || !strcmp(name + 13, "FAILED") ||
		    !strcmp(name + 13, "CANCELLED"))) {
		pthread_mutex_lock(&c->lock);
		if (json_array_size(c->done) >= CLIENT_DONE_MAX)
			json_array_remove(c->done, 0);
		json_array_append(c->done, data);
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
	}
	if (c->ops.event) {
		txt = json_dumps(data, JSON_COMPACT);
		if (txt)
			c->ops.event(c->arg, name, txt);
		free(txt);
	}
}

static void on_message(struct wps_client *c, json_t *m)
{
	json_t *id = json_object_get(m, "id"), *err;
	struct waiter *w;

	if (json_is_string(json_object_get(m, "event"))) {
		on_event(c, json_string_value(json_object_get(m, "event")),
			 json_object_get(m, "data"));
		return;
	}
	pthread_mutex_lock(&c->lock);
	for (w = c->waiters; w; w = w->next) {
		if (json_is_integer(id) &&
		    (uint64_t)json_integer_value(id) == w->id && !w->reply) {
			w->reply = json_incref(m);
			pthread_cond_broadcast(&c->cond);
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	err = json_object_get(m, "error");
	if (!w && err)
		wps_warn(c->ctx, "wpsnapd: %s",
			 json_string_value(json_object_get(err, "desc")));
}

/* The daemon has gone: resume whatever it left paused. */
static void on_dead(struct wps_client *c)
{
	struct paused p[CLIENT_PAUSED_MAX];
	unsigned int i, n;

	pthread_mutex_lock(&c->lock);
	if (c->dead) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->dead = true;
	n = c->nr_paused;
	memcpy(p, c->paused, sizeof(p));
	c->nr_paused = 0;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	wps_warn(c->ctx, "wpsnapd closed the connection");
	for (i = 0; i < n; i++)
		if (c->ops.resume)
			c->ops.resume(c->arg, p[i].guest);
}

/* Read what is there (after waiting up to timeout_ms) and handle every
 * complete line. Only the reader calls this. */
static int read_some(struct wps_client *c, int timeout_ms)
{
	struct pollfd pfd[2] = {
		{ .fd = c->fd, .events = POLLIN },
		{ .fd = c->stop_efd, .events = POLLIN },
	};
	char *nl, *line;
	json_t *m;
	ssize_t n;
	int pr;

	pr = poll(pfd, c->stop_efd >= 0 ? 2 : 1, timeout_ms);
	if (pr < 0)
		return errno == EINTR ? 0 : -errno;
	if (!pr || !(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
		return 0;
	if (c->rlen == CLIENT_LINE_MAX) {
		wps_err(c->ctx, "wpsnapd: a message exceeds %u bytes", CLIENT_LINE_MAX);
		on_dead(c);
		return -EPROTO;
	}
	n = read(c->fd, c->rbuf + c->rlen, CLIENT_LINE_MAX - c->rlen);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (n == 0) {
		on_dead(c);
		return -ECONNRESET;
	}
	c->rlen += (size_t)n;
	line = c->rbuf;
	while ((nl = memchr(line, '\n', c->rlen - (size_t)(line - c->rbuf)))) {
		m = json_loadb(line, (size_t)(nl - line), 0, NULL);
		if (m)
			on_message(c, m);
		else
			wps_warn(c->ctx, "wpsnapd sent a line that is not JSON");
		json_decref(m);
		line = nl + 1;
	}
	c->rlen -= (size_t)(line - c->rbuf);
	memmove(c->rbuf, line, c->rlen);
	return 0;
}

int wps_client_fd(const struct wps_client *c)
{
	return c->fd;
}

int wps_client_dispatch(struct wps_client *c)
{
	int ret;

	if (c->dead)
		return -ECONNRESET;
	ret = read_some(c, 0);
	return ret ? ret : (c->dead ? -ECONNRESET : 0);
}

static void *helper(void *arg)
{
	struct wps_client *c = arg;
	uint64_t v;

	while (!c->dead) {
		if (read_some(c, -1) < 0 && c->dead)
			break;
		if (read(c->stop_efd, &v, sizeof(v)) == sizeof(v))
			break;
	}
	return NULL;
}

int wps_client_start_thread(struct wps_client *c)
{
	int ret;

	if (c->threaded)
		return -EALREADY;
	c->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_efd < 0)
		return -errno;
	ret = -pthread_create(&c->th, NULL, helper, c);
	if (ret) {
		close(c->stop_efd);
		c->stop_efd = -1;
		wps_err(c->ctx, "client helper thread: %s", strerror(-ret));
		return ret;
	}
	c->threaded = true;
	return 0;
}

/* Wait until pred(c, arg) holds, reading ourselves unless the helper
 * thread reads. timeout_ms < 0: no limit. Called and returns unlocked. */
static int wait_for(struct wps_client *c, bool (*pred)(struct wps_client *, void *),
		    void *arg, int timeout_ms)
{
	struct timespec dl = wps_deadline_from_ms(timeout_ms < 0 ? 0 : (uint64_t)timeout_ms);
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	while (!pred(c, arg) && !ret) {
		if (c->dead) {
			ret = -ECONNRESET;
		} else if (c->threaded) {
			if (timeout_ms < 0)
				pthread_cond_wait(&c->cond, &c->lock);
			else
				ret = -pthread_cond_timedwait(&c->cond, &c->lock, &dl);
		} else {
			int left = wps_deadline_poll_ms(&dl);

			pthread_mutex_unlock(&c->lock);
			if (timeout_ms >= 0 && !left)
				ret = -ETIMEDOUT;
			else
				ret = read_some(c, timeout_ms < 0 ? 1000 : left);
			pthread_mutex_lock(&c->lock);
		}
	}
	if (pred(c, arg))
		ret = 0;
	pthread_mutex_unlock(&c->lock);
	return ret;
}

static bool have_reply(struct wps_client *c, void *arg)
{
	return ((struct waiter *)arg)->reply != NULL;
}

/* Send cmd and wait for its reply. Steals args. *ret gets "return". */
static int call(struct wps_client *c, const char *cmd, json_t *args, int fd,
		json_t **ret_out)
{
	struct waiter w = { 0 }, **p;
	json_t *err;
	int ret;

	pthread_mutex_lock(&c->lock);
	w.id = ++c->next_id;
	w.next = c->waiters;
	c->waiters = &w;
	pthread_mutex_unlock(&c->lock);

	ret = send_msg(c, request(cmd, args, w.id), fd);
	if (!ret)
		ret = wait_for(c, have_reply, &w, CLIENT_TIMEOUT_MS);

	pthread_mutex_lock(&c->lock);
	for (p = &c->waiters; *p; p = &(*p)->next) {
		if (*p == &w) {
			*p = w.next;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (ret) {
		wps_err(c->ctx, "wpsnapd: %s: %s", cmd, strerror(-ret));
		goto out;
	}
	err = json_object_get(w.reply, "error");
	if (err) {
		wps_err(c->ctx, "wpsnapd: %s: %s: %s", cmd,
			json_string_value(json_object_get(err, "class")),
			json_string_value(json_object_get(err, "desc")));
		ret = -EIO;
		goto out;
	}
	if (ret_out)
		*ret_out = json_incref(json_object_get(w.reply, "return"));
out:
	json_decref(w.reply);
	return ret;
}

/* ------------------------------------------------------------------ */
/* API                                                                 */
/* ------------------------------------------------------------------ */

int wps_client_connect(struct wps_ctx *ctx, const char *path,
		       struct wps_client **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	pthread_condattr_t ca;
	struct wps_client *c;
	struct waiter greet = { 0 };
	char *nl;
	int ret;

	if (!path)
		path = WPS_CLIENT_DEFAULT_SOCKET;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		wps_err(ctx, "socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ctx = ctx;
	c->stop_efd = -1;
	pthread_mutex_init(&c->wlock, NULL);
	pthread_mutex_init(&c->lock, NULL);
	/* monotonic: wait_for's deadlines (base/deadline.h) are */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->done = json_array();
	c->rbuf = malloc(CLIENT_LINE_MAX);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (!c->done || !c->rbuf || c->fd < 0) {
		ret = c->fd < 0 ? -errno : -ENOMEM;
		goto fail;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		wps_err(ctx, "cannot connect to wpsnapd at %s: %s", path,
			strerror(errno));
		goto fail;
	}
	/* The greeting: the first line, not a reply to anything. */
	while (!(nl = memchr(c->rbuf, '\n', c->rlen))) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, 5000) <= 0 || c->rlen == CLIENT_LINE_MAX ||
		    (n = read(c->fd, c->rbuf + c->rlen, CLIENT_LINE_MAX - c->rlen)) <= 0) {
			ret = -EPROTO;
			wps_err(ctx, "wpsnapd at %s sent no greeting (not root or in "
				"its group?)", path);
			goto fail;
		}
		c->rlen += (size_t)n;
	}
	greet.reply = json_loadb(c->rbuf, (size_t)(nl - c->rbuf), 0, NULL);
	if (!json_object_get(greet.reply, "QMP")) {
		json_decref(greet.reply);
		ret = -EPROTO;
		wps_err(ctx, "%s does not speak QMP", path);
		goto fail;
	}
	json_decref(greet.reply);
	c->rlen -= (size_t)(nl + 1 - c->rbuf);
	memmove(c->rbuf, nl + 1, c->rlen);
	ret = call(c, "qmp_capabilities", NULL, -1, NULL);
	if (ret)
		goto fail;
	*out = c;
	return 0;
fail:
	wps_client_close(c);
	return ret;
}

void wps_client_close(struct wps_client *c)
{
	uint64_t one = 1;

	if (!c)
		return;
	if (c->threaded) {
		if (write(c->stop_efd, &one, sizeof(one)) < 0)
			shutdown(c->fd, SHUT_RDWR);
		pthread_join(c->th, NULL);
		close(c->stop_efd);
	}
	if (c->fd >= 0)
		close(c->fd);
	json_decref(c->done);
	free(c->rbuf);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->wlock);
	free(c);
}

void wps_client_set_ops(struct wps_client *c, const struct wps_client_ops *ops,
			void *arg)
{
	c->ops = *ops;
	c->arg = arg;
}

int wps_client_send_fd(struct wps_client *c, int fd, const char *fdname)
{
	return call(c, "getfd", json_pack("{s:s}", "fdname", fdname), fd, NULL);
}

static char *b64(const void *data, size_t len)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	char *s = malloc((len + 2) / 3 * 4 + 1), *o = s;
	size_t i;

	if (!s)
		return NULL;
	for (i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 |
			     (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < len ? p[i + 2] : 0);

		*o++ = t[v >> 18];
		*o++ = t[(v >> 12) & 63];
		*o++ = i + 1 < len ? t[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? t[v & 63] : '=';
	}
	*o = '\0';
	return s;
}

int wps_client_register(struct wps_client *c, const struct wps_client_guest *g)
{
	json_t *regs = NULL, *args;
	char name[96], *ds = NULL;
	int uffd = g->uffd, ret;
	unsigned int i;

	if (uffd < 0) {
		ret = uffd_new(c->ctx, &uffd);
		if (ret)
			return ret;
	}
	snprintf(name, sizeof(name), "uffd-%s", g->name);
	ret = wps_client_send_fd(c, uffd, name);
	close(uffd);   /* the daemon must hold the only reference */
	if (ret)
		return ret;
	regs = json_array();
	for (i = 0; i < g->nr; i++) {
		const struct wps_region *r = &g->regions[i];
		json_t *o;

		snprintf(name, sizeof(name), "mem-%s-%u", g->name, i);
		ret = wps_client_send_fd(c, r->fd, name);
		if (ret)
			goto out;
		o = json_pack("{s:I,s:I,s:s,s:I}", "host-addr", (json_int_t)r->host_addr,
			      "size", (json_int_t)r->size, "memfd", name,
			      "offset", (json_int_t)r->fd_offset);
		if (r->page_size)
			json_object_set_new(o, "page-size", json_integer(r->page_size));
		if (r->name)
			json_object_set_new(o, "name", json_string(r->name));
		json_array_append_new(regs, o);
	}
	snprintf(name, sizeof(name), "uffd-%s", g->name);
	args = json_pack("{s:s,s:i,s:s,s:o}", "guest", g->name, "pid", (int)getpid(),
			 "uffd", name, "regions", regs);
	regs = NULL;
	if (g->device_state && g->device_state_len) {
		ds = b64(g->device_state, g->device_state_len);
		json_object_set_new(args, "device-state", json_string(ds));
	}
	ret = call(c, "wps-guest-register", args, -1, NULL);
	/* On failure the named fds stay in the daemon's table of this
	 * connection until it closes: harmless, and reused by name. */
out:
	json_decref(regs);
	free(ds);
	return ret;
}

int wps_client_unregister(struct wps_client *c, const char *guest)
{
	return call(c, "wps-guest-unregister", json_pack("{s:s}", "guest", guest),
		    -1, NULL);
}

struct done_match {
	uint64_t token;
	json_t *data;
};

static bool have_done(struct wps_client *c, void *arg)
{
	struct done_match *m = arg;
	size_t i;
	json_t *v;

	json_array_foreach(c->done, i, v) {
		if ((uint64_t)json_integer_value(json_object_get(v, "token")) == m->token) {
			m->data = json_incref(v);
			json_array_remove(c->done, i);
			return true;
		}
	}
	return m->data != NULL;
}

static uint64_t jget(json_t *o, const char *k)
{
	return (uint64_t)json_integer_value(json_object_get(o, k));
}

/*
 * The errno a failure event names ("ENOSPC"), as -errno; -EIO when it
 * names none we know. The caller then gets the real cause (a full disk
 * is not an I/O error) and can act on it.
 */
static int event_errno(json_t *data)
{
	const char *name = json_string_value(json_object_get(data, "errno"));
	const char *e;
	int i;

	for (i = 1; name && i < 4096; i++) {
		e = strerrorname_np(i);
		if (e && !strcmp(e, name))
			return -i;
	}
	return -EIO;
}

int wps_client_snapshot(struct wps_client *c, const char *guest,
			const struct wps_client_snap_opts *o,
			struct wps_client_result *res)
{
	struct done_match m = { 0 };
	json_t *args, *ret_v = NULL;
	const char *s;
	int ret;

	memset(res, 0, sizeof(*res));
	args = json_pack("{s:s,s:s,s:b,s:b}", "guest", guest, "path", o->path,
			 "overwrite", o->overwrite, "vcpus-paused", o->vcpus_paused);
	if (o->pause_timeout_ms)
		json_object_set_new(args, "pause-timeout-ms",
				    json_integer(o->pause_timeout_ms));
	ret = call(c, "wps-snapshot-start", args, -1, &ret_v);
	if (ret)
		return ret;
	m.token = jget(ret_v, "token");
	res->token = m.token;
	json_decref(ret_v);
	if (!o->wait)
		return 0;
	ret = wait_for(c, have_done, &m, -1);
	if (ret)
		return ret;
	s = json_string_value(json_object_get(m.data, "status"));
	snprintf(res->status, sizeof(res->status), "%s", s ? s : "?");
	s = json_string_value(json_object_get(m.data, "cause"));
	snprintf(res->cause, sizeof(res->cause), "%s", s ? s : "");
	res->pause_ns = jget(m.data, "pause-ns");
	res->handshake_ns = jget(m.data, "handshake-ns");
	res->total_ns = jget(m.data, "total-ns");
	res->populated_bytes = jget(m.data, "populated-bytes");
	res->image_file_bytes = jget(m.data, "image-file-bytes");
	res->faults = jget(m.data, "faults");
	ret = event_errno(m.data);
	json_decref(m.data);
	if (!strcmp(res->status, "completed"))
		return 0;
	if (!strcmp(res->status, "cancelled"))
		return -ECANCELED;
	wps_err(c->ctx, "snapshot of %s failed: %s", guest, res->cause);
	return ret;
}

int wps_client_query(struct wps_client *c, const char *guest,
		     struct wps_client_progress *p)
{
	json_t *r = NULL;
	int ret;

	ret = call(c, "query-snapshot", json_pack("{s:s}", "guest", guest), -1, &r);
	if (ret)
		return ret;
	snprintf(p->status, sizeof(p->status), "%s",
		 json_string_value(json_object_get(r, "status")) ?: "?");
	p->bytes_done = jget(r, "bytes-done");
	p->bytes_total = jget(r, "bytes-total");
	p->faults = jget(r, "faults");
	json_decref(r);
	return 0;
}

int wps_client_cancel(struct wps_client *c, const char *guest)
{
	return call(c, "wps-snapshot-cancel", json_pack("{s:s}", "guest", guest),
		    -1, NULL);
}

int wps_client_execute(struct wps_client *c, const char *command,
		       const char *args_json, char **ret_json)
{
	json_t *args = NULL, *r = NULL;
	int ret;

	if (args_json) {
		args = json_loads(args_json, 0, NULL);
		if (!json_is_object(args)) {
			json_decref(args);
			wps_err(c->ctx, "arguments of %s are not a JSON object", command);
			return -EINVAL;
		}
	}
	ret = call(c, command, args, -1, &r);
	if (!ret && ret_json)
		*ret_json = r ? json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	json_decref(r);
	return ret;
}
