/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Access checks with the client's credentials (docs/PROTOCOL.md "Security
 * model"). wpsnapd runs as root, so without this a member of --group could
 * read any root-only file as an image and create or replace files
 * anywhere. Every path a client that is not root names is checked here,
 * as that client, before the daemon acts on it:
 *   read      read access to the file (symlinks followed, as the client);
 *   create    write and search access to the parent directory; the final
 *             component must not be a symlink (the daemon creates with
 *             O_NOFOLLOW / O_EXCL, a planted link is refused up front with
 *             a clear reason); an existing file that would be replaced
 *             needs write access to it, and in a sticky directory it must
 *             be the client's own (what rename(2) would demand of it);
 *   dir       a directory, with write and search access.
 *
 * How the client's credentials are taken, and why this way:
 *  - The client: SO_PEERCRED of its socket (effective uid and gid at
 *    connect, kept by the kernel), its supplementary groups from
 *    /proc/PID/status "Groups:". That file must still show the same
 *    effective uid/gid, or the pid is not the client any more: refused.
 *  - Not the daemon's credentials: glibc's setuid/setgid/setgroups (and
 *    setfsuid's siblings) broadcast to every thread (POSIX semantics),
 *    which would hand the snapshot workers the client's identity.
 *  - Not setfsuid/setfsgid alone on the loop thread: they are per-thread,
 *    but they leave root's supplementary groups (0, ...) in force, so a
 *    file or directory writable by group root would pass wrongly, and the
 *    loop would have to restore them on every path out.
 *  - So: a short-lived thread that exists only for the check. Credentials
 *    are per task in the kernel; the raw syscalls setgroups, setfsgid and
 *    setfsuid (not glibc's wrappers, which broadcast) change only that
 *    thread. Moving fsuid away from 0 drops the filesystem capabilities
 *    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, ...) from its
 *    effective set, so the kernel decides exactly as for the client. The
 *    thread verifies the switch (setfsuid(-1) reads it back) and fails
 *    closed, then asks faccessat2(..., AT_EACCESS), which uses the fs
 *    credentials (plain access(2) would use the real uid, root), and
 *    exits: its credentials die with it.
 *
 * Needs CAP_SETUID and CAP_SETGID (contrib/wpsnapd.service keeps them);
 * without them every non-root path is refused, never waved through.
 *
 * What remains: a check, then an open by name. A client that owns a
 * directory on the path can swap it for a symlink between the two (a
 * race it must win within the same request). Closing that needs the
 * library to take directory fds; see docs/PROTOCOL.md.
 *
 * Owns nothing past a call: the groups array and the thread.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/log.h"
#include "daemon/access.h"

#define ACCESS_GROUPS_MAX 65536   /* NGROUPS_MAX of the kernel */

struct access_job {
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	size_t nr_groups;
	const struct wpsd_access *a;
	unsigned int n;
	/* result */
	int err;
	char path[PATH_MAX + 16];
	char why[160];
};

static int fail(struct access_job *j, const char *path, int err,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(struct access_job *j, const char *path, int err,
		const char *fmt, ...)
{
	va_list ap;

	snprintf(j->path, sizeof(j->path), "%s", path);
	va_start(ap, fmt);
	vsnprintf(j->why, sizeof(j->why), fmt, ap);
	va_end(ap);
	j->err = err;
	return err;
}

/* As the client: faccessat2 with AT_EACCESS uses the fs credentials. */
static int may(const char *path, int mode, int flags)
{
	if (syscall(SYS_faccessat2, AT_FDCWD, path, mode, AT_EACCESS | flags))
		return -errno;
	return 0;
}

static const char *mode_name(int mode)
{
	return mode == R_OK ? "no read access" :
	       mode == W_OK ? "no write access" : "no write and search access";
}

static int check_dir(struct access_job *j, const char *dir)
{
	struct stat st;
	int ret;

	if (stat(dir, &st))
		return fail(j, dir, -errno, "%s", strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(j, dir, -ENOTDIR, "not a directory");
	ret = may(dir, W_OK | X_OK, 0);
	if (ret)
		return fail(j, dir, ret, "%s (%s)", mode_name(W_OK | X_OK),
			    strerror(-ret));
	return 0;
}

static int check_create(struct access_job *j, const char *path, bool overwrite)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat dst, st;
	int ret;

	if (!slash || !slash[1] || (size_t)(slash - path) >= sizeof(dir))
		return fail(j, path, -EINVAL, "not an absolute path to a file");
	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	ret = check_dir(j, dir);
	if (ret)
		return ret;
	if (lstat(path, &st)) {
		if (errno == ENOENT)
			return 0;
		return fail(j, path, -errno, "%s", strerror(errno));
	}
	if (S_ISLNK(st.st_mode))
		return fail(j, path, -ELOOP, "is a symbolic link (never followed "
			    "where wpsnapd creates a file)");
	if (!overwrite)
		return 0;   /* the command itself refuses to replace it */
	ret = may(path, W_OK, AT_SYMLINK_NOFOLLOW);
	if (ret)
		return fail(j, path, ret, "exists and would be replaced: %s (%s)",
			    mode_name(W_OK), strerror(-ret));
	if (!stat(dir, &dst) && (dst.st_mode & S_ISVTX) && st.st_uid != j->uid &&
	    dst.st_uid != j->uid)
		return fail(j, path, -EPERM, "exists in a sticky directory and "
			    "belongs to uid %u", (unsigned int)st.st_uid);
	return 0;
}

static int check_one(struct access_job *j, const struct wpsd_access *a)
{
	char partial[PATH_MAX + 16];
	int ret;

	switch (a->kind) {
	case WPSD_ACCESS_READ:
		ret = may(a->path, R_OK, 0);
		if (ret)
			return fail(j, a->path, ret, "%s (%s)", mode_name(R_OK),
				    strerror(-ret));
		return 0;
	case WPSD_ACCESS_CREATE:
		return check_create(j, a->path, a->overwrite);
	case WPSD_ACCESS_IMAGE:
		ret = check_create(j, a->path, a->overwrite);
		if (ret)
			return ret;
		snprintf(partial, sizeof(partial), "%s.partial", a->path);
		return check_create(j, partial, true);
	case WPSD_ACCESS_DIR:
		return check_dir(j, a->path);
	case WPSD_ACCESS_NETNS:
		/* the names wps_netbuf_open_netns takes */
		snprintf(partial, sizeof(partial), strchr(a->path, '/') ? "%s" :
			 "/run/netns/%s", a->path);
		ret = may(partial, R_OK, 0);
		if (ret)
			return fail(j, partial, ret, "%s (%s)", mode_name(R_OK),
				    strerror(-ret));
		return 0;
	case WPSD_ACCESS_NBD:
		/* Connecting to a unix socket needs write access to it; the
		 * URI's socket path (percent-encoded, in the query) is not
		 * decoded here, so it is refused rather than half checked. */
		if (strstr(a->path, "+unix") || strstr(a->path, "socket="))
			return fail(j, a->path, -EACCES, "an NBD server on a unix "
				    "socket is for root only (use TCP, or a local "
				    "image)");
		return 0;
	}
	return fail(j, a->path, -EINVAL, "unknown check");
}

/* The thread that becomes the client; see the header comment. */
static void *access_main(void *arg)
{
	struct access_job *j = arg;
	unsigned int i;

	if (syscall(SYS_setgroups, j->nr_groups, j->groups) ||
	    syscall(SYS_setfsgid, j->gid) < 0 || syscall(SYS_setfsuid, j->uid) < 0 ||
	    (uid_t)syscall(SYS_setfsuid, (uid_t)-1) != j->uid ||
	    (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != j->gid) {
		fail(j, j->a[0].path, -EPERM, "cannot take the client's "
		     "credentials to check (wpsnapd needs CAP_SETUID and "
		     "CAP_SETGID)");
		return NULL;
	}
	for (i = 0; i < j->n; i++)
		if (check_one(j, &j->a[i]))
			break;
	return NULL;
}

/*
 * Effective uid and gid from SO_PEERCRED, supplementary groups from
 * /proc/PID/status, whose effective uid/gid must still match.
 */
static int client_creds(struct wpsd_conn *c, struct access_job *j)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);
	unsigned long ids[4];
	char path[64], *line = NULL, *p, *end;
	size_t cap = 0;
	bool uid_ok = false, gid_ok = false;
	FILE *f;

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &uc, &len))
		return -errno;
	j->uid = uc.uid;
	j->gid = uc.gid;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)c->pid);
	f = fopen(path, "re");
	if (!f)
		return -ESRCH;
	while (getline(&line, &cap, f) > 0) {
		if (sscanf(line, "Uid: %lu %lu %lu %lu", &ids[0], &ids[1], &ids[2],
			   &ids[3]) == 4)
			uid_ok = ids[1] == j->uid;
		else if (sscanf(line, "Gid: %lu %lu %lu %lu", &ids[0], &ids[1],
				&ids[2], &ids[3]) == 4)
			gid_ok = ids[1] == j->gid;
		else if (!strncmp(line, "Groups:", 7)) {
			for (p = line + 7;; p = end) {
				unsigned long g = strtoul(p, &end, 10);

				if (end == p || j->nr_groups >= ACCESS_GROUPS_MAX)
					break;
				gid_t *n = realloc(j->groups, (j->nr_groups + 1) *
						   sizeof(*n));
				if (!n) {
					fclose(f);
					free(line);
					return -ENOMEM;
				}
				j->groups = n;
				j->groups[j->nr_groups++] = (gid_t)g;
			}
		}
	}
	fclose(f);
	free(line);
	return uid_ok && gid_ok ? 0 : -ESRCH;
}

int wpsd_access_check(struct wpsd_conn *c, const struct wpsd_access *a,
		      unsigned int n, struct wpsd_reply *r)
{
	struct access_job j = { .a = a, .n = n };
	pthread_t t;
	int ret;

	if (c->root || !n)
		return 0;
	ret = client_creds(c, &j);
	if (ret) {
		fail(&j, a[0].path, ret == -ENOMEM ? ret : -EACCES,
		     ret == -ESRCH ? "process %d, which connected, is gone or "
		     "changed its credentials" : "cannot read the credentials of "
		     "process %d", (int)c->pid);
		goto out;
	}
	ret = pthread_create(&t, NULL, access_main, &j);
	if (ret) {
		fail(&j, a[0].path, -ret, "cannot start the check: %s",
		     strerror(ret));
		goto out;
	}
	pthread_join(t, NULL);
out:
	free(j.groups);
	if (j.err && r) {
		wps_info(c->d->ctx, "connection %u (pid %d, uid %u): permission "
			 "denied: %s: %s", c->id, (int)c->pid, (unsigned int)c->uid,
			 j.path, j.why);
		wpsd_reply_err(r, WPSD_GENERIC, "permission denied: %s: %s "
			       "(connection from pid %d, uid %u)", j.path, j.why,
			       (int)c->pid, (unsigned int)c->uid);
	}
	return j.err;
}

int wpsd_access_path(struct wpsd_conn *c, enum wpsd_access_kind kind,
		     const char *path, bool overwrite, struct wpsd_reply *r)
{
	struct wpsd_access a = { .kind = kind, .path = path, .overwrite = overwrite };

	return wpsd_access_check(c, &a, 1, r);
}
