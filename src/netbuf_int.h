/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the netbuf module: the object shared by the front (netbuf.c) and
 * the two backends (netbuf_nfq.c, netbuf_plug.c), and the helpers they
 * share (network namespaces, running iptables). Symbols here are not
 * exported (the library exports only wps_*).
 */
#ifndef WPS_NETBUF_INT_H
#define WPS_NETBUF_INT_H

#include <net/if.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <wpsnap/netbuf.h>

struct nb_backend_ops {
	const char *name;
	unsigned int backend;   /* enum wps_netbuf_backend */
	/* Close epoch nr: everything the holder has so far belongs to it. */
	int (*epoch)(struct wps_netbuf *nb, uint64_t nr);
	/* Release epochs (nb->committed, upto]. */
	int (*commit)(struct wps_netbuf *nb, uint64_t upto);
	/* Fill the backend's counters (held, queued, released, drops). */
	void (*stats)(struct wps_netbuf *nb, struct wps_netbuf_stats *st);
	/* Drop what is held, remove what was installed, free priv. */
	void (*destroy)(struct wps_netbuf *nb);
};

struct wps_netbuf {
	struct wps_ctx *ctx;
	struct wps_netbuf_opts opts;   /* ifname points at ifname[] */
	char ifname[IF_NAMESIZE];
	const struct nb_backend_ops *ops;
	void *priv;
	/*
	 * Serialises epoch, commit and stats: the freeze path and the
	 * durable path usually run on different threads.
	 */
	pthread_mutex_t lock;
	uint64_t epoch;      /* last epoch closed */
	uint64_t committed;  /* last epoch committed */
	uint64_t epochs, commits;
	uint64_t epoch_ns_total, epoch_ns_max;
	uint64_t commit_ns_total, commit_ns_max;
};

/* Backends. open() fills nb->ops and nb->priv or returns -errno with the
 * reason logged; probe == true makes "the kernel lacks this backend"
 * (-EOPNOTSUPP) an info message, for AUTO to fall back quietly. */
int nb_nfq_open(struct wps_netbuf *nb);
int nb_plug_open(struct wps_netbuf *nb, bool probe);
int nb_nfq_cleanup(struct wps_netbuf *nb);
int nb_plug_cleanup(struct wps_netbuf *nb);

/*
 * Run the calling thread in nb's network namespace until nb_netns_leave:
 * sockets opened in between belong to it. *saved is -1 when there was
 * nothing to switch.
 */
int nb_netns_enter(struct wps_netbuf *nb, int *saved);
void nb_netns_leave(struct wps_netbuf *nb, int saved);

/*
 * Run argv (argv[0] searched in PATH) in nb's namespace, wait for it.
 * Returns its exit status (0..255), or -errno if it could not run. Its
 * output is logged at err level when it fails and !quiet.
 */
int nb_run(struct wps_netbuf *nb, char *const argv[], bool quiet);

/* A libnl error code (NLE_*) as the closest -errno. */
int nb_nlerr(int nlerr);


#endif /* WPS_NETBUF_INT_H */
