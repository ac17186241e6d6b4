/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap netbuf: hold a namespace's output through checkpoint epochs;
 * the bench of network output commit. */
#ifndef WPS_NETBUF_CMD_H
#define WPS_NETBUF_CMD_H

#include <stdint.h>
#include <stdio.h>

#include <wpsnap/netbuf.h>
#include <wpsnap/wpsnap.h>

/* argv[0] is "netbuf", argv[1] the subcommand (hold, bench, cleanup).
 * Returns the process exit status. */
int wps_netbuf_cmd_main(struct wps_ctx *ctx, int argc, char **argv);

/*
 * The checkpoint side of output commit, as a checkpoint loop calls it.
 * nbd_freeze() at the freeze instant (guest paused) closes the epoch;
 * nbd_durable() once that checkpoint is durable releases it. Both record
 * the call's start and end (CLOCK_MONOTONIC ns) and, with a log, print
 * "epoch N T0 T1" / "commit N T0 T1" lines. For the real checkpoint
 * engine: call nbd_freeze from the snapshot's pause hook, right after the
 * vCPUs stop, and nbd_durable after wps_snapshot_wait() returns 0.
 */
struct nbd_times {
	uint64_t t0, t1;
};

struct nb_driver {
	struct wps_netbuf *nb;       /* NULL: record times only (raw runs) */
	FILE *log;                   /* NULL: no lines */
	uint64_t epoch;              /* last closed */
	uint64_t committed;          /* last committed */
	struct nbd_times *freeze;    /* [epoch - 1] */
	struct nbd_times *durable;   /* [epoch - 1] */
	size_t cap;
};

int nbd_freeze(struct nb_driver *d, uint64_t *epoch);
int nbd_durable(struct nb_driver *d, uint64_t epoch);
void nbd_release(struct nb_driver *d);

#endif
