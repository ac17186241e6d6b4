/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Network output commit for periodic checkpoints (Remus "output buffering").
 *
 * A guest that is checkpointed every epoch must not let the outside world
 * see output from an epoch whose checkpoint is not yet durable: if the
 * primary dies, the guest resumes from the last durable checkpoint, and a
 * peer that already saw later output would disagree with it. A netbuf
 * holds every IP packet the guest sends on one interface, and releases an
 * epoch's packets, in order, only when that epoch's checkpoint is
 * committed. If the holder dies, the kernel drops what is held: nothing
 * uncommitted ever leaves.
 *
 * The checkpoint loop:
 *
 *     pause guest
 *     wps_netbuf_epoch(nb, &b)        // at the freeze instant: closes epoch b
 *     freeze memory, resume guest     // the guest's next output is epoch b+1
 *     ... checkpoint b becomes durable ...
 *     wps_netbuf_commit(nb, b)        // epoch b's packets go out now
 *
 * Epochs may be pipelined (close b+1 before committing b) with the NFQUEUE
 * backend; the plug qdisc holds at most one closed epoch (see below).
 * Every function returns 0 or -errno and logs why through the context.
 * Needs CAP_NET_ADMIN in the interface's network namespace.
 */
#ifndef WPSNAP_NETBUF_H
#define WPSNAP_NETBUF_H

#include <stdint.h>
#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

struct wps_netbuf;

enum wps_netbuf_backend {
	/* plug where the kernel has sch_plug, else NFQUEUE (logged) */
	WPS_NETBUF_AUTO = 0,
	/* sch_plug as the root qdisc of the interface (libnl-route-3):
	 * packets never leave the kernel; at most one closed epoch */
	WPS_NETBUF_PLUG = 1,
	/* an iptables NFQUEUE rule and a queue bound by this process
	 * (libnl-nf-3): any number of closed epochs, released by one batch
	 * verdict each */
	WPS_NETBUF_NFQUEUE = 2,
};

enum wps_netbuf_direction {
	/* packets leaving through ifname (a guest namespace's veth, or the
	 * host side of a routed interface): what the netns tests use */
	WPS_NETBUF_EGRESS = 0,
	/* packets arriving from ifname (the host side of a VM's tap, whose
	 * ingress is the guest's output). NFQUEUE only: the plug qdisc
	 * would need an IFB redirect, which is not implemented. */
	WPS_NETBUF_INGRESS = 1,
};

/* wps_netbuf_opts.flags */
/* Do not hold IPv6 (by default IPv6 is held too wherever the kernel has
 * IPv6: leaving it out lets neighbour discovery and any IPv6 traffic of
 * the guest out early). */
#define WPS_NETBUF_NO_IPV6 (1u << 0)

struct wps_netbuf_opts {
	const char *ifname;      /* required: interface in the namespace */
	unsigned int backend;    /* enum wps_netbuf_backend */
	unsigned int direction;  /* enum wps_netbuf_direction */
	unsigned int flags;
	/* Network namespace of ifname, as an open fd (e.g. of
	 * /run/netns/NAME); -1: the caller's. Sockets are opened and
	 * rules installed there; the caller's threads do not move. The fd
	 * must stay open until wps_netbuf_free(), which removes the rules
	 * there. */
	int netns_fd;
	uint16_t queue;          /* NFQUEUE number; one holder per number */
	/* Packets the kernel may hold in the queue (0: 65536, the cap); a
	 * full queue drops (never passes) further packets. */
	uint32_t queue_maxlen;
	/* Receive buffer of the queue socket in bytes (0: 32 MiB), forced
	 * with SO_RCVBUFFORCE: an overrun drops packets. */
	uint32_t rcvbuf;
	/* Bytes the plug qdisc may hold (0: 64 MiB). */
	uint32_t plug_limit;
	/* iptables / ip6tables programs (NULL: "iptables", "ip6tables"
	 * from PATH). */
	const char *iptables;
	const char *ip6tables;
};

#define WPS_NETBUF_OPTS_INIT { .netns_fd = -1 }

struct wps_netbuf_stats {
	unsigned int backend;       /* enum wps_netbuf_backend, as chosen */
	uint64_t epochs;            /* epochs closed */
	uint64_t commits;           /* commits that advanced (new epochs) */
	uint64_t held_packets;      /* held now (NFQUEUE: seen, not released) */
	uint64_t held_max;          /* most held at once */
	uint64_t queued_packets;    /* packets ever queued to the holder */
	uint64_t released_packets;  /* released by commits */
	uint64_t verdicts;          /* kernel requests made by commits */
	uint64_t overruns;          /* socket overruns (kernel dropped) */
	uint64_t kernel_dropped;    /* kernel: queue full or no listener */
	uint64_t kernel_user_dropped; /* kernel: could not reach the holder */
	uint64_t epoch_ns_total;    /* time spent inside wps_netbuf_epoch */
	uint64_t epoch_ns_max;
	uint64_t commit_ns_total;   /* time spent inside wps_netbuf_commit */
	uint64_t commit_ns_max;
};

/* "auto", "plug", "nfqueue". */
const char *wps_netbuf_backend_name(unsigned int backend);
/* "auto", "plug" or "nfqueue" into *backend: 0, or -EINVAL. */
int wps_netbuf_backend_parse(const char *name, unsigned int *backend);

/* For opts.netns_fd: a network namespace by name (in /run/netns) or by
 * path. The fd, or -errno (logged with the path). */
int wps_netbuf_open_netns(struct wps_ctx *ctx, const char *name);

/*
 * Start holding the output of opts->ifname. Nothing sent after this call
 * returns leaves before a commit. AUTO tries to create the plug qdisc and
 * falls back to NFQUEUE when the kernel has no sch_plug (logged at info
 * with the reason). -ENODEV: no such interface; -EBUSY: another process
 * holds the queue number, or the interface already has a root qdisc;
 * -EOPNOTSUPP: the backend is missing from the kernel (named).
 */
int wps_netbuf_new(struct wps_ctx *ctx, const struct wps_netbuf_opts *opts,
		   struct wps_netbuf **out);

/* The backend in use (WPS_NETBUF_PLUG or WPS_NETBUF_NFQUEUE). */
unsigned int wps_netbuf_backend(const struct wps_netbuf *nb);

/*
 * Close the current epoch: every packet the kernel handed to the holder
 * before this call belongs to it (or to an earlier one). Call it with the
 * guest paused, at the checkpoint's freeze instant. *barrier receives the
 * epoch's number (1, 2, ...), to pass to wps_netbuf_commit. -EBUSY with
 * the plug backend when the previous epoch is not committed yet.
 */
int wps_netbuf_epoch(struct wps_netbuf *nb, uint64_t *barrier);

/*
 * Release every held packet of the epochs up to and including barrier, in
 * the order they were sent; later epochs stay held. Committing an epoch
 * already committed does nothing; a barrier never returned by
 * wps_netbuf_epoch is -EINVAL. Safe to call from another thread than
 * wps_netbuf_epoch.
 */
int wps_netbuf_commit(struct wps_netbuf *nb, uint64_t barrier);

void wps_netbuf_get_stats(struct wps_netbuf *nb, struct wps_netbuf_stats *st);

/*
 * Stop holding: drop (never release) what is still held, then remove the
 * qdisc or rules this netbuf installed, so later output flows freely.
 * Commit first to release the last epoch.
 */
void wps_netbuf_free(struct wps_netbuf *nb);

/*
 * Remove what a holder that died left behind for the same opts (its
 * iptables rules, or its plug qdisc): until then the interface's output
 * is dropped, which is safe but stops the guest's network. Returns 0 if
 * there was nothing to remove.
 */
int wps_netbuf_cleanup(struct wps_ctx *ctx, const struct wps_netbuf_opts *opts);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_NETBUF_H */
