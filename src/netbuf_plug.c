/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * netbuf plug backend: holds a guest's output in a sch_plug qdisc.
 *
 * Owns: the root qdisc "plug" (handle 7770:) of the interface, installed
 * and removed through libnl-route-3. This is the classic Remus mechanism:
 * the qdisc queues every packet; "buffer" (TCQ_PLUG_BUFFER) closes the
 * current epoch by inserting a plug, "release one" (TCQ_PLUG_RELEASE_ONE)
 * lets out the packets before the oldest plug. Packets never leave the
 * kernel, so it is cheaper than NFQUEUE and holds every protocol (ARP
 * included), but:
 *
 * - the qdisc remembers one closed epoch only (it counts packets of "the
 *   last" and "the current" epoch): closing a second before the first is
 *   committed would merge their counts and release part of the newer one
 *   with the older. wps_netbuf_epoch refuses that with -EBUSY;
 * - it replaces the root qdisc (a default one only: an interface with a
 *   configured root qdisc is refused, -EEXIST, and AUTO uses NFQUEUE);
 * - egress only (ingress would need an IFB redirect);
 * - if the holder dies the qdisc stays and keeps holding (never sends);
 *   the next holder or wps_netbuf_cleanup deletes it, dropping what it
 *   held. Deleting a qdisc frees its packets, it does not send them.
 *
 * Many kernels ship sch_plug as a module (CONFIG_NET_SCH_PLUG); the
 * kernel loads it on first use. Where it is missing, creating the qdisc
 * fails with ENOENT ("unknown qdisc kind") and AUTO falls back.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <linux/pkt_sched.h>

#include <netlink/netlink.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/tc.h>
#include <netlink/socket.h>

#include "base/log.h"
#include "src/netbuf_int.h"

#define PLUG_MAJOR 0x7770

struct plug {
	struct nl_sock *sk;
	struct rtnl_qdisc *q;
	int ifindex;
	bool installed;
	uint64_t requests;
};

static int plug_socket(struct wps_netbuf *nb, struct nl_sock **out, int *ifindex)
{
	struct nl_sock *sk;
	int saved, ret;

	sk = nl_socket_alloc();
	if (!sk)
		return -ENOMEM;
	ret = nb_netns_enter(nb, &saved);
	if (ret < 0)
		goto fail;
	ret = nl_connect(sk, NETLINK_ROUTE);
	*ifindex = (int)if_nametoindex(nb->ifname);
	nb_netns_leave(nb, saved);
	if (ret < 0) {
		ret = nb_nlerr(ret);
		wps_err(nb->ctx, "netbuf: cannot open a route netlink socket: %s",
			strerror(-ret));
		goto fail;
	}
	if (!*ifindex) {
		wps_err(nb->ctx, "netbuf: no interface %s", nb->ifname);
		ret = -ENODEV;
		goto fail;
	}
	*out = sk;
	return 0;
fail:
	nl_socket_free(sk);
	return ret;
}

/* Our qdisc object, as sent to the kernel (parent root, handle 7770:). */
static struct rtnl_qdisc *plug_qdisc(struct wps_netbuf *nb, int ifindex)
{
	struct rtnl_qdisc *q = rtnl_qdisc_alloc();

	if (!q)
		return NULL;
	rtnl_tc_set_ifindex(TC_CAST(q), ifindex);
	rtnl_tc_set_parent(TC_CAST(q), TC_H_ROOT);
	rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(PLUG_MAJOR, 0));
	if (rtnl_tc_set_kind(TC_CAST(q), "plug") < 0 ||
	    rtnl_qdisc_plug_set_limit(q, (int)nb->opts.plug_limit) < 0) {
		rtnl_qdisc_put(q);
		return NULL;
	}
	return q;
}

/* Delete a plug root qdisc left by a dead holder. Returns 1 if one was
 * deleted, 0 if there was none, -errno. */
static int plug_remove_stale(struct wps_netbuf *nb, struct nl_sock *sk, int ifindex)
{
	struct nl_cache *cache;
	struct rtnl_qdisc *old;
	int ret = 0;

	ret = rtnl_qdisc_alloc_cache(sk, &cache);
	if (ret < 0)
		return nb_nlerr(ret);
	old = rtnl_qdisc_get_by_parent(cache, ifindex, TC_H_ROOT);
	ret = 0;
	if (old) {
		const char *kind = rtnl_tc_get_kind(TC_CAST(old));

		if (kind && !strcmp(kind, "plug") &&
		    rtnl_tc_get_handle(TC_CAST(old)) == TC_HANDLE(PLUG_MAJOR, 0)) {
			ret = rtnl_qdisc_delete(sk, old);
			ret = ret < 0 ? nb_nlerr(ret) : 1;
			if (ret < 0)
				wps_err(nb->ctx, "netbuf: %s: cannot delete a stale plug qdisc: %s",
					nb->ifname, strerror(-ret));
		}
		rtnl_qdisc_put(old);
	}
	nl_cache_free(cache);
	return ret;
}

/* Send an action (buffer / release one) to our qdisc. */
static int plug_send(struct wps_netbuf *nb, struct plug *p, const char *what)
{
	int ret = rtnl_qdisc_add(p->sk, p->q, NLM_F_REQUEST);

	p->requests++;
	if (ret < 0) {
		ret = nb_nlerr(ret);
		wps_err(nb->ctx, "netbuf: %s: plug qdisc %s: %s", nb->ifname, what,
			strerror(-ret));
	}
	return ret;
}

static int plug_epoch(struct wps_netbuf *nb, uint64_t nr)
{
	struct plug *p = nb->priv;

	if (nb->epoch > nb->committed) {
		wps_err(nb->ctx, "netbuf: %s: the plug qdisc holds one closed epoch; commit %llu before closing %llu",
			nb->ifname, (unsigned long long)nb->epoch, (unsigned long long)nr);
		return -EBUSY;
	}
	rtnl_qdisc_plug_buffer(p->q);
	return plug_send(nb, p, "buffer");
}

static int plug_commit(struct wps_netbuf *nb, uint64_t upto)
{
	struct plug *p = nb->priv;

	rtnl_qdisc_plug_release_one(p->q);
	return plug_send(nb, p, "release");
}

static void plug_stats(struct wps_netbuf *nb, struct wps_netbuf_stats *st)
{
	struct plug *p = nb->priv;
	struct nl_cache *cache;
	struct rtnl_qdisc *q;

	st->verdicts = p->requests;
	if (rtnl_qdisc_alloc_cache(p->sk, &cache) < 0)
		return;
	q = rtnl_qdisc_get(cache, p->ifindex, TC_HANDLE(PLUG_MAJOR, 0));
	if (q) {
		uint64_t qlen = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_QLEN);
		uint64_t sent = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_PACKETS);

		st->held_packets = qlen;
		st->released_packets = sent;
		st->queued_packets = qlen + sent;
		st->kernel_dropped = rtnl_tc_get_stat(TC_CAST(q), RTNL_TC_DROPS);
		rtnl_qdisc_put(q);
	}
	nl_cache_free(cache);
}

static void plug_destroy(struct wps_netbuf *nb)
{
	struct plug *p = nb->priv;
	int ret;

	if (!p)
		return;
	if (p->installed) {
		/* deleting the qdisc frees (drops) what it holds and puts
		 * the default qdisc back */
		ret = rtnl_qdisc_delete(p->sk, p->q);
		if (ret < 0)
			wps_err(nb->ctx, "netbuf: %s: cannot delete the plug qdisc: %s; output stays held until it is removed",
				nb->ifname, strerror(-nb_nlerr(ret)));
	}
	if (p->q)
		rtnl_qdisc_put(p->q);
	if (p->sk)
		nl_socket_free(p->sk);
	free(p);
	nb->priv = NULL;
}

static const struct nb_backend_ops plug_ops = {
	.name = "plug",
	.backend = WPS_NETBUF_PLUG,
	.epoch = plug_epoch,
	.commit = plug_commit,
	.stats = plug_stats,
	.destroy = plug_destroy,
};

int nb_plug_open(struct wps_netbuf *nb, bool probe)
{
	int level = probe ? WPS_LOG_INFO : WPS_LOG_ERR;
	struct plug *p;
	int ret;

	if (nb->opts.direction != WPS_NETBUF_EGRESS) {
		wps_err(nb->ctx, "netbuf: the plug backend holds egress only (ingress needs NFQUEUE)");
		return -EOPNOTSUPP;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	nb->priv = p;
	nb->ops = &plug_ops;
	ret = plug_socket(nb, &p->sk, &p->ifindex);
	if (ret < 0)
		goto fail;
	p->q = plug_qdisc(nb, p->ifindex);
	if (!p->q) {
		ret = -ENOMEM;
		goto fail;
	}
	for (int attempt = 0;; attempt++) {
		/* EXCL: never replace a root qdisc somebody configured (the
		 * kernel's default ones have handle 0 and are replaced) */
		ret = rtnl_qdisc_add(p->sk, p->q, NLM_F_CREATE | NLM_F_EXCL);
		ret = ret < 0 ? nb_nlerr(ret) : 0;
		if (ret != -EEXIST || attempt)
			break;
		if (plug_remove_stale(nb, p->sk, p->ifindex) <= 0)
			break;
		wps_info(nb->ctx, "netbuf: %s: deleted a stale plug qdisc (its packets dropped)",
			 nb->ifname);
	}
	if (ret == -ENOENT || ret == -EOPNOTSUPP) {
		wps_log(nb->ctx, level,
			"netbuf: this kernel has no sch_plug qdisc (creating 'plug' on %s: unknown qdisc kind; CONFIG_NET_SCH_PLUG)",
			nb->ifname);
		ret = -EOPNOTSUPP;
		goto fail;
	}
	if (ret == -EEXIST) {
		wps_log(nb->ctx, level,
			"netbuf: %s already has a root qdisc; the plug backend will not replace it",
			nb->ifname);
		goto fail;
	}
	if (ret < 0) {
		wps_err(nb->ctx, "netbuf: cannot create the plug qdisc on %s: %s", nb->ifname,
			strerror(-ret));
		goto fail;
	}
	p->installed = true;
	/* A new plug qdisc starts throttled: from here every packet is held
	 * and belongs to epoch 1. */
	wps_info(nb->ctx, "netbuf: %s egress held in a plug qdisc (limit %u bytes)", nb->ifname,
		 nb->opts.plug_limit);
	return 0;
fail:
	plug_destroy(nb);
	nb->ops = NULL;
	return ret;
}

int nb_plug_cleanup(struct wps_netbuf *nb)
{
	struct nl_sock *sk;
	int ifindex, ret;

	ret = plug_socket(nb, &sk, &ifindex);
	if (ret < 0)
		return ret;
	ret = plug_remove_stale(nb, sk, ifindex);
	nl_socket_free(sk);
	if (ret > 0)
		wps_info(nb->ctx, "netbuf: %s: deleted a stale plug qdisc", nb->ifname);
	return ret < 0 ? ret : 0;
}
