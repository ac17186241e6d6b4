/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libwpsnap client: the VMM side of wpsnapd (docs/PROTOCOL.md).
 *
 * A VMM connects, registers its guest (the client opens a fresh
 * userfaultfd in the VMM's process and hands it over with the memfds
 * behind guest RAM), and answers pause/resume requests through the
 * handlers it sets. Snapshots can then be taken by anyone on the daemon's
 * socket, or by the VMM with wps_client_snapshot().
 *
 * Event handling runs either in the VMM's own loop (poll wps_client_fd()
 * for POLLIN, then call wps_client_dispatch()) or in a helper thread
 * (wps_client_start_thread()). Without the helper thread a client must be
 * used from one thread at a time; with it, from any thread. Synchronous
 * calls dispatch events (and so call the handlers) while they wait.
 *
 * Every call returns 0 or -errno and logs the reason (the daemon's error
 * description included) through the context.
 */
#ifndef WPSNAP_CLIENT_H
#define WPSNAP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wpsnap/wpsnap.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WPS_CLIENT_DEFAULT_SOCKET "/run/wpsnap/wpsnapd.sock"

struct wps_client;

struct wps_client_ops {
	/* WPS_PAUSE_REQUEST: stop the guest's vCPUs, return 0 once they are
	 * stopped (the daemon waits for that, up to its pause timeout), or
	 * -errno: the snapshot then fails, naming it. */
	int (*pause)(void *arg, const char *guest);
	/* WPS_RESUME_REQUEST: let the vCPUs run. Also sent after a pause
	 * that timed out or failed, and called by the client itself if the
	 * daemon disconnects while the guest is paused: resuming running
	 * vCPUs must be harmless. */
	int (*resume)(void *arg, const char *guest);
	/* Optional: every event, after the client's own handling; data is
	 * the event's "data" member as JSON text. */
	void (*event)(void *arg, const char *name, const char *data_json);
	/*
	 * Optional, called right after a successful pause(), vCPUs stopped:
	 * the guest's device state at this instant, as an fd whose whole
	 * content it is (a memfd; at most 256 MiB). The client hands it to
	 * wpsnapd with the answer and closes it; the image stores it as
	 * blob "device-state". Return 0 and *fd = -1 for none, or -errno:
	 * the snapshot fails, naming it.
	 */
	int (*device_state)(void *arg, const char *guest, int *fd);
};

/* Connect, read the greeting, negotiate capabilities. */
int wps_client_connect(struct wps_ctx *ctx, const char *path,
		       struct wps_client **out);
/* Stops the helper thread, closes the socket (the daemon then drops the
 * client's guests, cancelling their snapshots). */
void wps_client_close(struct wps_client *c);

/* Set before the first request that could trigger events. */
void wps_client_set_ops(struct wps_client *c, const struct wps_client_ops *ops,
			void *arg);

/* For a VMM's own loop: poll for POLLIN, then dispatch (never blocks).
 * -ECONNRESET once the daemon has gone. */
int wps_client_fd(const struct wps_client *c);
int wps_client_dispatch(struct wps_client *c);
/* Or: a helper thread dispatches; handlers run on it. */
int wps_client_start_thread(struct wps_client *c);

/* getfd: hand fd over under fdname (the client keeps its own fd). */
int wps_client_send_fd(struct wps_client *c, int fd, const char *fdname);

struct wps_client_guest {
	const char *name;
	/* A userfaultfd of this process that has not been through
	 * UFFDIO_API, or -1: the client opens one. Either way the client
	 * closes this process's copy once it is handed over, so that the
	 * daemon holds the only reference: should wpsnapd die, the kernel
	 * releases the userfaultfd and every protection with it. */
	int uffd;
	/* host_addr (in this process), size, fd (the memfd behind the
	 * region, required), fd_offset, optional name; page_size may be 0
	 * (the daemon takes it from the memfd). */
	const struct wps_region *regions;
	unsigned int nr;
	const void *device_state;   /* optional blob stored in each image */
	size_t device_state_len;
};

/* Register this process's guest. The client also re-arms the guest's
 * userfaultfd after each snapshot (WPS_UFFD_REQUEST). */
int wps_client_register(struct wps_client *c, const struct wps_client_guest *g);
int wps_client_unregister(struct wps_client *c, const char *guest);

struct wps_client_snap_opts {
	const char *path;             /* absolute */
	bool overwrite;
	/* The caller has already stopped the vCPUs: no pause request is
	 * sent; wps_client_snapshot() returns right after the freeze and
	 * the caller resumes then. */
	bool vcpus_paused;
	unsigned int pause_timeout_ms;  /* 0: the daemon's default (2000) */
	bool wait;                    /* return when the image is published */
};

struct wps_client_result {
	char status[16];              /* "completed" "failed" "cancelled" */
	char cause[256];              /* why, when not completed */
	uint64_t token;
	uint64_t pause_ns;            /* pause request .. resume request */
	uint64_t handshake_ns;        /* pause request .. vCPUs paused */
	uint64_t total_ns;
	uint64_t populated_bytes;
	uint64_t image_file_bytes;
	uint64_t faults;
};

/* Start a snapshot of guest; with o->wait, also wait for its end: 0 if
 * the image was published, -ECANCELED, or the -errno the failure event
 * names (-ENOSPC for a full disk; -EIO if it names none) with res->cause. */
int wps_client_snapshot(struct wps_client *c, const char *guest,
			const struct wps_client_snap_opts *o,
			struct wps_client_result *res);

struct wps_client_progress {
	char status[16];     /* none setup pausing freezing active publishing
				completed failed cancelled */
	uint64_t bytes_done, bytes_total, faults;
};
int wps_client_query(struct wps_client *c, const char *guest,
		     struct wps_client_progress *p);
int wps_client_cancel(struct wps_client *c, const char *guest);

/* Any command: args_json may be NULL; *ret_json (malloc'd, may be NULL)
 * receives the "return" member. -EIO for an error reply (logged). */
int wps_client_execute(struct wps_client *c, const char *command,
		       const char *args_json, char **ret_json);

#ifdef __cplusplus
}
#endif

#endif /* WPSNAP_CLIENT_H */
