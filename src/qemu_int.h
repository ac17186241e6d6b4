/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the QEMU module: the QEMU handle shared by the front (qemu.c:
 * the snapshot, its watchdog, physmem), the discovery and layout blob
 * (qemu_layout.c) and the monitor kinds (qemu_qmp.c: a QMP Unix socket).
 * A monitor kind is an ops table, as the netbuf backends are
 * (src/netbuf_int.h), so another kind (libvirt's
 * virDomainQemuMonitorCommand) plugs in without touching the rest.
 */
#ifndef WPS_QEMU_INT_H
#define WPS_QEMU_INT_H

#include <jansson.h>
#include <sys/types.h>

#include <wpsnap/attach.h>
#include <wpsnap/qemu.h>

#define QEMU_PAGE 4096u

struct qemu_mon_ops {
	const char *name;
	/*
	 * Run QMP command cmd; args (NULL: none) is stolen. *ret (optional)
	 * gets a reference to the "return" value. fd >= 0 is passed along
	 * with the command (getfd, add-fd: QEMU keeps a copy; fd stays the
	 * caller's). A command QEMU refuses is -EIO with QEMU's text logged;
	 * every other error is logged too.
	 */
	int (*request)(struct wps_qemu *q, const char *cmd, json_t *args,
		       json_t **ret, int fd);
	/* HMP passthrough; *out malloc'ed. */
	int (*hmp)(struct wps_qemu *q, const char *cmdline, char **out);
	/* QEMU's pid. */
	pid_t (*pid)(const struct wps_qemu *q);
	/*
	 * A connection on which a forked watchdog (async-signal-safe code
	 * only) can write a raw QMP `cont` and read its answer if we die;
	 * -EOPNOTSUPP when this kind has none (the snapshot then refuses to
	 * QMP-stop the guest).
	 */
	int (*watchdog_fd)(const struct wps_qemu *q);
	/* Close the connection, free priv. */
	void (*close)(struct wps_qemu *q);
};

struct wps_qemu {
	struct wps_ctx *ctx;
	const struct qemu_mon_ops *ops;
	void *priv;
};

/* A handle whose monitor kind open() sets up (q->ctx is set): one way
 * to build a handle for every kind. */
int qemu_new(struct wps_ctx *ctx, int (*open)(struct wps_qemu *q,
					      const void *arg),
	     const void *arg, struct wps_qemu **out);

/* A QMP command without an fd (see qemu_mon_ops.request). */
static inline int qemu_execute(struct wps_qemu *q, const char *cmd,
			       json_t *args, json_t **ret)
{
	return q->ops->request(q, cmd, args, ret, -1);
}

/* Monitor kinds: fill q->ops and q->priv. */
int qemu_qmp_open(struct wps_qemu *q, const char *path);

static inline uint64_t qemu_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* A block's mapping size: max rounded to its page size. */
static inline uint64_t qemu_block_span(const struct wps_qemu_block *b,
				       uint64_t len)
{
	return qemu_round_up(len, b->page_size ? b->page_size : QEMU_PAGE);
}

/*
 * The watchdog (src/qemu_watchdog.c): told the guest's state before and
 * after each pause; if we die while it is QEMU_WD_STOPPING, it resumes
 * the guest with a raw QMP cont on qfd or, when argv is not NULL, by
 * running argv (argv[0] an absolute path) and, if that fails and direct
 * is not NULL, with QMP on a new connection to the Unix socket direct.
 * Start it before holding a userfaultfd.
 */
#define QEMU_WD_STOPPING 'S'  /* about to stop, or stopped */
#define QEMU_WD_RUNNING 'R'   /* continued (or never stopped by us) */
#define QEMU_WD_QUIT 'Q'      /* we finished: nothing to do */

struct qemu_watchdog {
	pid_t pid;              /* -1: none */
	int fd;                 /* write end of its pipe, -1: none */
};

int qemu_watchdog_start(struct qemu_watchdog *w, int qfd, char *const *argv,
			const char *direct);
void qemu_watchdog_tell(struct qemu_watchdog *w, char state);
void qemu_watchdog_stop(struct qemu_watchdog *w);

/* The host ranges of l's blocks marked snap (at most max): what an
 * attach registers. */
unsigned int qemu_layout_ranges(const struct wps_qemu_layout *l,
				struct wps_attach_range *ranges,
				unsigned int max);

#endif /* WPS_QEMU_INT_H */
