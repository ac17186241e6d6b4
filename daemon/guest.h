/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Registered guests: what a VMM handed over (its userfaultfd, the memfds
 * behind guest RAM, an optional device-state blob), checked to be what it
 * claims, and owned here until the guest is unregistered or its VMM's
 * connection closes.
 */
#ifndef WPSD_GUEST_H
#define WPSD_GUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>
#include <wpsnap/attach.h>
#include <wpsnap/wpsnap.h>

#include "daemon/qmp.h"
#include "daemon/server.h"

#define WPSD_REGIONS_MAX 64
#define WPSD_BLOB_NAME "device-state"
#define WPSD_DEVICE_STATE_MAX (256ull << 20)

struct wpsd_job;

struct wpsd_guest {
	struct wpsd *d;
	char name[WPSD_NAME_MAX + 1];
	pid_t pid;
	unsigned int owner;          /* id of the registering connection */
	int uffd;                    /* owned; -1 once spent by a snapshot */
	struct wps_region *r;        /* r[i].fd owned */
	char (*rname)[WPS_REGION_NAME_MAX + 1];
	unsigned int nr;
	uint64_t bytes;              /* sum of region sizes */
	void *blob;                  /* device state, owned (may be NULL) */
	size_t blob_len;
	struct wpsd_job *job;        /* running or not yet reaped */
	json_t *last;                /* summary of the last snapshot */
	bool doomed;                 /* unregister once the job is reaped */
	/* An unmodified process (wps-guest-attach): no VMM, no uffd, no
	 * regions; every snapshot attaches to it anew, from the job's
	 * worker, since ptrace belongs to the thread that seized. */
	bool attach;
	struct wps_attach_range *ar; /* owned; NULL: the default selection */
	unsigned int nar;
	struct wpsd_guest *next;
};

struct wpsd_guest *wpsd_guest_find(struct wpsd *d, const char *name);

/* wps-guest-register: on success the named fds move into the guest. */
int wpsd_guest_register(struct wpsd_conn *c, json_t *args,
			struct wpsd_reply *r);
/* wps-guest-attach: an unmodified process, by pid (root or
 * CAP_SYS_PTRACE only). Nothing is done to the process until a snapshot. */
int wpsd_guest_attach(struct wpsd_conn *c, json_t *args,
		      struct wpsd_reply *r);
/* Whether process pid has CAP_SYS_PTRACE in its effective set. */
bool wpsd_peer_can_ptrace(pid_t pid);

/* wps-guest-set-uffd: a fresh userfaultfd after a snapshot spent one. */
int wpsd_guest_set_uffd(struct wpsd_conn *c, struct wpsd_guest *g,
			const char *fdname, struct wpsd_reply *r);

/* Unlink from the daemon and close every fd. No job may be running. */
void wpsd_guest_remove(struct wpsd_guest *g);

/* Whether fd has been through UFFDIO_API (then no snapshot can use it):
 * 1 yes, 0 no, -errno if it cannot be told. */
int wpsd_uffd_negotiated(int fd);

/* Read a device-state blob from a memfd or regular file (all of it, at
 * most WPSD_DEVICE_STATE_MAX): -EINVAL if it is neither or too large. */
int wpsd_read_blob_fd(int fd, void **out, size_t *len);

/* Decode base64 (RFC 4648, padding optional). Caller frees *out. */
int wpsd_base64_decode(const char *s, void **out, size_t *len);

json_t *wpsd_guest_info(const struct wpsd_guest *g);

#endif /* WPSD_GUEST_H */
