/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * netbuf: network output commit for periodic checkpoints.
 *
 * This file owns the wps_netbuf object, the epoch numbering (epochs 1, 2,
 * ... closed by wps_netbuf_epoch, committed in order by wps_netbuf_commit),
 * the choice of backend and what the backends share: entering the
 * interface's network namespace and running iptables. The backends own the
 * kernel objects that actually hold packets: netbuf_plug.c a sch_plug
 * qdisc, netbuf_nfq.c an NFQUEUE rule and the queue bound to a socket of
 * this process. Both fail closed: while a netbuf exists nothing reaches
 * the wire before its epoch is committed, and if the process dies the
 * kernel drops (NFQUEUE) or keeps (plug) what is held, never sends it.
 */
#include "config.h"

#include <errno.h>
#include <linux/magic.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <netlink/errno.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/spawn.h"
#include "src/netbuf_int.h"

const char *wps_netbuf_backend_name(unsigned int backend)
{
	switch (backend) {
	case WPS_NETBUF_AUTO: return "auto";
	case WPS_NETBUF_PLUG: return "plug";
	case WPS_NETBUF_NFQUEUE: return "nfqueue";
	}
	return "unknown";
}

int wps_netbuf_backend_parse(const char *name, unsigned int *backend)
{
	static const unsigned int all[] = {
		WPS_NETBUF_AUTO, WPS_NETBUF_PLUG, WPS_NETBUF_NFQUEUE,
	};
	unsigned int i;

	for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (!strcmp(name, wps_netbuf_backend_name(all[i]))) {
			*backend = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

int wps_netbuf_open_netns(struct wps_ctx *ctx, const char *name)
{
	char path[PATH_MAX];
	int fd, err;

	struct stat st;
	struct statfs sf;

	snprintf(path, sizeof(path), strchr(name, '/') ? "%s" : "/run/netns/%s",
		 name);
	/*
	 * The name comes from a client (wpsnapd runs as root): a FIFO would
	 * block the open (and the daemon's loop) forever, and a device node
	 * must not be opened at all. A namespace file is a regular file on
	 * nsfs: check the type before opening, never block, then the fs.
	 */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		wps_err(ctx, "%s is not a network namespace (not a namespace "
			"file)", path);
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		err = errno;
		wps_err(ctx, "cannot open network namespace %s: %s", path,
			strerror(err));
		return -err;
	}
	if (fstatfs(fd, &sf) || sf.f_type != NSFS_MAGIC) {
		close(fd);
		wps_err(ctx, "%s is not a network namespace (not on nsfs)", path);
		return -EINVAL;
	}
	return fd;
}

int nb_nlerr(int nlerr)
{
	switch (nlerr < 0 ? -nlerr : nlerr) {
	case 0: return 0;
	case NLE_NOMEM: return -ENOMEM;
	case NLE_EXIST: return -EEXIST;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_OPNOTSUPP: return -EOPNOTSUPP;
	case NLE_PERM: return -EPERM;
	case NLE_NODEV: return -ENODEV;
	case NLE_BUSY: return -EBUSY;
	case NLE_INVAL: return -EINVAL;
	case NLE_RANGE: return -ERANGE;
	case NLE_AGAIN: return -EAGAIN;
	case NLE_NOACCESS: return -EACCES;
	case NLE_MSGSIZE: return -EMSGSIZE;
	case NLE_AF_NOSUPPORT: return -EAFNOSUPPORT;
	case NLE_PROTO_MISMATCH: return -EPROTONOSUPPORT;
	case NLE_BAD_SOCK: return -EBADF;
	}
	return -EIO;
}

int nb_netns_enter(struct wps_netbuf *nb, int *saved)
{
	int self;

	*saved = -1;
	if (nb->opts.netns_fd < 0)
		return 0;
	/* thread-self: setns(CLONE_NEWNET) moves only this thread, and
	 * this is how we come back to where the thread was. */
	self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0) {
		int err = -errno;

		wps_err(nb->ctx, "netbuf: cannot open /proc/thread-self/ns/net: %s",
			strerror(errno));
		return err;
	}
	if (setns(nb->opts.netns_fd, CLONE_NEWNET) < 0) {
		int err = -errno;

		wps_err(nb->ctx, "netbuf: cannot enter the network namespace of fd %d: %s",
			nb->opts.netns_fd, strerror(errno));
		close(self);
		return err;
	}
	*saved = self;
	return 0;
}

void nb_netns_leave(struct wps_netbuf *nb, int saved)
{
	if (saved < 0)
		return;
	/* Failing to come back would leave a caller's thread in the guest's
	 * namespace; there is nothing sane to do but say so loudly. */
	if (setns(saved, CLONE_NEWNET) < 0)
		wps_err(nb->ctx, "netbuf: cannot return to the caller's network namespace: %s",
			strerror(errno));
	close(saved);
}

int nb_run(struct wps_netbuf *nb, char *const argv[], bool quiet)
{
	struct wps_spawn_result r;
	int ret = wps_spawn_run(argv, nb->opts.netns_fd, &r);

	if (ret == -ENOENT) {
		wps_err(nb->ctx, "netbuf: cannot run %s: not found in PATH (Debian package %s)",
			argv[0], strstr(argv[0], "tables") ? "iptables" : "iproute2");
		return ret;
	}
	if (ret < 0) {
		wps_err(nb->ctx, "netbuf: cannot run %s: %s", r.cmd, strerror(-ret));
		return ret;
	}
	if (r.signal) {
		wps_err(nb->ctx, "netbuf: '%s' killed by signal %d", r.cmd, r.signal);
		return -EINTR;
	}
	if (r.status == 126) {
		wps_err(nb->ctx, "netbuf: '%s': cannot enter the network namespace", r.cmd);
		return -EPERM;
	}
	if (r.status && !quiet)
		wps_err(nb->ctx, "netbuf: '%s' failed (exit %d): %s", r.cmd, r.status,
			r.out[0] ? r.out : "(no output)");
	else if (r.status == 0)
		wps_dbg(nb->ctx, "netbuf: ran '%s'", r.cmd);
	return r.status;
}

static int copy_opts(struct wps_ctx *ctx, struct wps_netbuf *nb,
		     const struct wps_netbuf_opts *opts)
{
	if (!opts || !opts->ifname || !*opts->ifname) {
		wps_err(ctx, "netbuf: no interface given (opts.ifname)");
		return -EINVAL;
	}
	if (strlen(opts->ifname) >= sizeof(nb->ifname)) {
		wps_err(ctx, "netbuf: interface name '%s' is longer than %d bytes",
			opts->ifname, IF_NAMESIZE - 1);
		return -EINVAL;
	}
	if (opts->backend > WPS_NETBUF_NFQUEUE) {
		wps_err(ctx, "netbuf: unknown backend %u", opts->backend);
		return -EINVAL;
	}
	if (opts->direction > WPS_NETBUF_INGRESS) {
		wps_err(ctx, "netbuf: unknown direction %u", opts->direction);
		return -EINVAL;
	}
	if (opts->flags & ~WPS_NETBUF_NO_IPV6) {
		wps_err(ctx, "netbuf: unknown flags 0x%x", opts->flags);
		return -EINVAL;
	}
	nb->ctx = ctx;
	nb->opts = *opts;
	snprintf(nb->ifname, sizeof(nb->ifname), "%s", opts->ifname);
	nb->opts.ifname = nb->ifname;
	if (!nb->opts.queue_maxlen)
		nb->opts.queue_maxlen = 65536;
	if (!nb->opts.rcvbuf)
		nb->opts.rcvbuf = 32u << 20;
	if (!nb->opts.plug_limit)
		nb->opts.plug_limit = 64u << 20;
	if (!nb->opts.iptables)
		nb->opts.iptables = "iptables";
	if (!nb->opts.ip6tables)
		nb->opts.ip6tables = "ip6tables";
	return 0;
}

/* The interface must exist in the namespace: iptables would accept any
 * name and hold nothing. */
static int check_ifname(struct wps_netbuf *nb)
{
	unsigned int idx;
	int saved, ret, err;

	ret = nb_netns_enter(nb, &saved);
	if (ret < 0)
		return ret;
	idx = if_nametoindex(nb->ifname);
	err = errno;
	nb_netns_leave(nb, saved);
	if (!idx) {
		wps_err(nb->ctx, "netbuf: no interface %s%s: %s", nb->ifname,
			nb->opts.netns_fd >= 0 ? " in the given namespace" : "",
			strerror(err));
		return err == ENODEV || err == ENXIO ? -ENODEV : -err;
	}
	return 0;
}

int wps_netbuf_new(struct wps_ctx *ctx, const struct wps_netbuf_opts *opts,
		   struct wps_netbuf **out)
{
	struct wps_netbuf *nb;
	int ret;

	*out = NULL;
	nb = calloc(1, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	ret = copy_opts(ctx, nb, opts);
	if (ret < 0)
		goto out_free;
	ret = pthread_mutex_init(&nb->lock, NULL);
	if (ret) {
		ret = -ret;
		goto out_free;
	}
	ret = check_ifname(nb);
	if (ret < 0)
		goto out_mutex;

	switch (nb->opts.backend) {
	case WPS_NETBUF_PLUG:
		ret = nb_plug_open(nb, false);
		break;
	case WPS_NETBUF_NFQUEUE:
		ret = nb_nfq_open(nb);
		break;
	default:
		if (nb->opts.direction == WPS_NETBUF_INGRESS) {
			wps_info(ctx, "netbuf: %s ingress: using NFQUEUE (the plug qdisc holds egress only)",
				 nb->ifname);
			ret = nb_nfq_open(nb);
			break;
		}
		ret = nb_plug_open(nb, true);
		if (ret == -EOPNOTSUPP || ret == -EEXIST) {
			/* the reason was logged by the probe */
			ret = nb_nfq_open(nb);
			if (ret == 0)
				wps_info(ctx, "netbuf: %s: using NFQUEUE %u (fallback from plug)",
					 nb->ifname, nb->opts.queue);
		} else if (ret == 0) {
			wps_info(ctx, "netbuf: %s: using the plug qdisc", nb->ifname);
		}
		break;
	}
	if (ret < 0)
		goto out_mutex;
	*out = nb;
	return 0;

out_mutex:
	pthread_mutex_destroy(&nb->lock);
out_free:
	free(nb);
	return ret;
}

unsigned int wps_netbuf_backend(const struct wps_netbuf *nb)
{
	return nb->ops->backend;
}

static void account(uint64_t t0, uint64_t *total, uint64_t *max)
{
	uint64_t d = wps_now_ns() - t0;

	*total += d;
	if (d > *max)
		*max = d;
}

int wps_netbuf_epoch(struct wps_netbuf *nb, uint64_t *barrier)
{
	uint64_t t0 = wps_now_ns();
	int ret;

	pthread_mutex_lock(&nb->lock);
	ret = nb->ops->epoch(nb, nb->epoch + 1);
	if (ret == 0) {
		nb->epoch++;
		nb->epochs++;
		*barrier = nb->epoch;
		account(t0, &nb->epoch_ns_total, &nb->epoch_ns_max);
	}
	pthread_mutex_unlock(&nb->lock);
	return ret;
}

int wps_netbuf_commit(struct wps_netbuf *nb, uint64_t barrier)
{
	uint64_t t0 = wps_now_ns();
	int ret = 0;

	pthread_mutex_lock(&nb->lock);
	if (barrier > nb->epoch) {
		wps_err(nb->ctx, "netbuf: commit of epoch %llu, but only %llu closed",
			(unsigned long long)barrier, (unsigned long long)nb->epoch);
		ret = -EINVAL;
	} else if (barrier > nb->committed) {
		ret = nb->ops->commit(nb, barrier);
		if (ret == 0) {
			nb->committed = barrier;
			nb->commits++;
			account(t0, &nb->commit_ns_total, &nb->commit_ns_max);
		}
	}
	pthread_mutex_unlock(&nb->lock);
	return ret;
}

void wps_netbuf_get_stats(struct wps_netbuf *nb, struct wps_netbuf_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&nb->lock);
	st->backend = wps_netbuf_backend(nb);
	st->epochs = nb->epochs;
	st->commits = nb->commits;
	st->epoch_ns_total = nb->epoch_ns_total;
	st->epoch_ns_max = nb->epoch_ns_max;
	st->commit_ns_total = nb->commit_ns_total;
	st->commit_ns_max = nb->commit_ns_max;
	nb->ops->stats(nb, st);
	pthread_mutex_unlock(&nb->lock);
}

void wps_netbuf_free(struct wps_netbuf *nb)
{
	if (!nb)
		return;
	wps_dbg(nb->ctx, "netbuf: %s: freed; epochs from %llu on (uncommitted) are dropped",
		nb->ifname, (unsigned long long)nb->committed + 1);
	nb->ops->destroy(nb);
	pthread_mutex_destroy(&nb->lock);
	free(nb);
}

int wps_netbuf_cleanup(struct wps_ctx *ctx, const struct wps_netbuf_opts *opts)
{
	struct wps_netbuf nb;
	int ret, ret2 = 0;

	memset(&nb, 0, sizeof(nb));
	ret = copy_opts(ctx, &nb, opts);
	if (ret < 0)
		return ret;
	if (nb.opts.backend != WPS_NETBUF_NFQUEUE)
		ret2 = nb_plug_cleanup(&nb);
	if (nb.opts.backend != WPS_NETBUF_PLUG)
		ret = nb_nfq_cleanup(&nb);
	return ret < 0 ? ret : ret2;
}
