/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Could the client do it itself? wpsnapd runs as root; every path a
 * client that is not root names (images, disk copies, checkpoint
 * directories, working-set files, namespaces) passes one of these checks,
 * made with the client's own credentials, before the daemon touches it.
 * Root clients pass without a check. See daemon/access.c.
 */
#ifndef WPSD_ACCESS_H
#define WPSD_ACCESS_H

#include <stdbool.h>

#include "daemon/server.h"
#include "daemon/qmp.h"

enum wpsd_access_kind {
	WPSD_ACCESS_READ,        /* a file the daemon reads */
	WPSD_ACCESS_CREATE,      /* a file it creates (must not exist, or
				  * may be replaced: see .overwrite) */
	WPSD_ACCESS_IMAGE,       /* an image the library writes: created as
				  * PATH.partial (truncated if it exists),
				  * renamed to PATH: CREATE of both */
	WPSD_ACCESS_DIR,         /* a directory it creates files in */
	WPSD_ACCESS_NETNS,       /* a network namespace: a path, or a name
				  * under /run/netns (read access) */
	WPSD_ACCESS_NBD,         /* an NBD URI: TCP passes, a unix socket
				  * is refused (not checked) */
};

struct wpsd_access {
	enum wpsd_access_kind kind;
	const char *path;
	bool overwrite;          /* CREATE: an existing file is replaced */
};

/*
 * Check every item of a[0..n) with c's credentials. 0 if all pass (always
 * for root), else -EACCES (or -errno of the check) and, if r is not NULL,
 * the reply "permission denied: PATH: REASON (connection from pid P, uid
 * U)". r NULL: a quiet probe (the caller chooses a fallback).
 */
int wpsd_access_check(struct wpsd_conn *c, const struct wpsd_access *a,
		      unsigned int n, struct wpsd_reply *r);

/* One item, the common case. */
int wpsd_access_path(struct wpsd_conn *c, enum wpsd_access_kind kind,
		     const char *path, bool overwrite, struct wpsd_reply *r);

#endif /* WPSD_ACCESS_H */
