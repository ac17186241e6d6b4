/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt monitor kind (struct qemu_mon_ops, src/qemu_int.h): QMP and
 * HMP through libvirt's own monitor connection to a domain's QEMU
 * (virDomainQemuMonitorCommand, and ...WithFiles for getfd/add-fd).
 *
 * Why through libvirt and not a -qmp socket of our own: a domain that
 * libvirt runs has one monitor, libvirt's; an extra socket needs the
 * domain's XML changed before it starts. libvirt marks a domain whose
 * monitor was used "tainted: custom-monitor" (docs/VM.md); that is the
 * price, and it is only a flag in libvirt's log.
 *
 * It owns a reference to the domain (the caller keeps its connection
 * open for as long as the handle lives). QEMU's pid: libvirt does not
 * hand it out and its pid file may be in another mount namespace, so it
 * is the process whose command line carries `-uuid UUID` of the domain
 * (libvirt always passes it) and whose executable is a QEMU; none or two
 * such processes are refused, never guessed.
 *
 * There is no watchdog connection (watchdog_fd is -EOPNOTSUPP): a caller
 * that pauses the domain through libvirt gives the snapshot a resume
 * action of its own (struct wps_qemu_opts.resume_argv).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "base/log.h"
#include "src/qemu_int.h"
#include "src/qemu_libvirt.h"

struct lvmon {
	virDomainPtr dom;
	pid_t pid;
	char name[256];
};

const char *qemu_libvirt_error(void)
{
	const char *m = virGetLastErrorMessage();

	return m ? m : "unknown libvirt error";
}

/* The whole reply {"return": ...} or {"error": ...} of one command. */
static int lv_request(struct wps_qemu *q, const char *cmd, json_t *args,
		      json_t **ret, int fd)
{
	struct lvmon *m = q->priv;
	char *msg, *res = NULL;
	json_t *req, *rep, *r, *e;
	int rc, err;

	req = json_pack("{s:s}", "execute", cmd);
	if (!req) {
		json_decref(args);
		return -ENOMEM;
	}
	if (args)
		json_object_set_new(req, "arguments", args);
	msg = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!msg)
		return -ENOMEM;
	if (fd >= 0)
		rc = virDomainQemuMonitorCommandWithFiles(m->dom, msg, 1, &fd,
							  NULL, NULL, &res, 0);
	else
		rc = virDomainQemuMonitorCommand(m->dom, msg, &res, 0);
	free(msg);
	if (rc < 0) {
		wps_err(q->ctx, "QMP %s through libvirt (domain %s): %s", cmd,
			m->name, qemu_libvirt_error());
		return -EIO;
	}
	rep = json_loads(res, 0, NULL);
	free(res);
	r = json_object_get(rep, "return");
	e = json_object_get(rep, "error");
	if (r) {
		if (ret)
			*ret = json_incref(r);
		err = 0;
	} else {
		const char *d = json_string_value(json_object_get(e, "desc"));

		wps_err(q->ctx, "QMP %s refused (domain %s): %s", cmd, m->name,
			d ? d : "no description");
		err = e ? -EIO : -EPROTO;
	}
	json_decref(rep);
	return err;
}

static int lv_hmp(struct wps_qemu *q, const char *cmdline, char **out)
{
	struct lvmon *m = q->priv;
	char *res = NULL;

	if (virDomainQemuMonitorCommand(m->dom, cmdline, &res,
					VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) < 0) {
		wps_err(q->ctx, "HMP '%s' through libvirt (domain %s): %s",
			cmdline, m->name, qemu_libvirt_error());
		return -EIO;
	}
	*out = res;
	return 0;
}

static pid_t lv_pid(const struct wps_qemu *q)
{
	return ((const struct lvmon *)q->priv)->pid;
}

static int lv_watchdog_fd(const struct wps_qemu *q)
{
	(void)q;
	return -EOPNOTSUPP;
}

static void lv_close(struct wps_qemu *q)
{
	struct lvmon *m = q->priv;

	if (!m)
		return;
	if (m->dom)
		virDomainFree(m->dom);
	free(m);
	q->priv = NULL;
}

static const struct qemu_mon_ops libvirt_ops = {
	.name = "libvirt",
	.request = lv_request,
	.hmp = lv_hmp,
	.pid = lv_pid,
	.watchdog_fd = lv_watchdog_fd,
	.close = lv_close,
};

/* Does /proc/PID/cmdline carry "-uuid" "uuid", and is PID a QEMU? */
static bool is_domain_qemu(pid_t pid, const char *uuid)
{
	char path[64], buf[16384], exe[4096];
	ssize_t n, k;
	const char *base;
	bool hit = false;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (k = 0; k < n && !hit; k += (ssize_t)strlen(buf + k) + 1)
		hit = !strcmp(buf + k, "-uuid") &&
		      k + 6 < n && !strcasecmp(buf + k + 6, uuid);
	if (!hit)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n <= 0)
		return false;
	exe[n] = '\0';
	base = strrchr(exe, '/');
	return !strncmp(base ? base + 1 : exe, "qemu", 4);
}

int qemu_libvirt_find_pid(struct wps_ctx *ctx, const char *name,
			  const char *uuid, pid_t *out)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = 0;
	int count = 0;

	if (!d) {
		int err = -errno;

		wps_err(ctx, "cannot list /proc: %s", strerror(-err));
		return err;
	}
	while ((e = readdir(d))) {
		char *end;
		long p = strtol(e->d_name, &end, 10);

		if (*end || p <= 0)
			continue;
		if (is_domain_qemu((pid_t)p, uuid)) {
			found = (pid_t)p;
			count++;
		}
	}
	closedir(d);
	if (count != 1) {
		wps_err(ctx, "domain %s: %s QEMU process with -uuid %s",
			name, count ? "more than one" : "no", uuid);
		return count ? -ENOTUNIQ : -ESRCH;
	}
	*out = found;
	return 0;
}

static int qemu_libvirt_open(struct wps_qemu *q, const void *domain)
{
	virDomainPtr dom = (virDomainPtr)domain;
	char uuid[VIR_UUID_STRING_BUFLEN];
	struct lvmon *m = calloc(1, sizeof(*m));
	const char *name = virDomainGetName(dom);
	int err;

	if (!m)
		return -ENOMEM;
	snprintf(m->name, sizeof(m->name), "%s", name ? name : "?");
	if (virDomainGetUUIDString(dom, uuid) < 0) {
		wps_err(q->ctx, "domain %s: no UUID: %s", m->name,
			qemu_libvirt_error());
		free(m);
		return -EIO;
	}
	err = qemu_libvirt_find_pid(q->ctx, m->name, uuid, &m->pid);
	if (err) {
		free(m);
		return err;
	}
	if (virDomainRef(dom) < 0) {
		free(m);
		return -EIO;
	}
	m->dom = dom;
	q->ops = &libvirt_ops;
	q->priv = m;
	return 0;
}

int qemu_libvirt_handle(struct wps_ctx *ctx, void *domain,
			struct wps_qemu **out)
{
	return qemu_new(ctx, qemu_libvirt_open, domain, out);
}

/* Is inode a socket among pid's fds? */
static bool has_socket(pid_t pid, unsigned long inode)
{
	char dir[64], path[384], link[64], want[64];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	d = opendir(dir);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		ssize_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		found = !strcmp(link, want);
	}
	closedir(d);
	return found;
}

int qemu_libvirt_open_direct(struct wps_ctx *ctx, pid_t pid,
			     struct wps_qemu **out)
{
	char sock[PATH_MAX];
	int err;

	*out = NULL;
	err = qemu_libvirt_monitor_path(ctx, pid, sock, sizeof(sock));
	return err ? err : wps_qemu_open_qmp(ctx, sock, out);
}

int qemu_libvirt_monitor_path(struct wps_ctx *ctx, pid_t pid, char *sock,
			      size_t size)
{
	static const char tail[] = "monitor.sock";
	char path[PATH_MAX], line[PATH_MAX + 128];
	FILE *f;

	sock[0] = '\0';
	/* QEMU's network namespace's Unix sockets: Num RefCount Protocol
	 * Flags Type St Inode Path; flag 0x10000 is a listening one. */
	snprintf(path, sizeof(path), "/proc/%d/net/unix", (int)pid);
	f = fopen(path, "re");
	if (!f) {
		int err = -errno;

		wps_err(ctx, "%s: %s", path, strerror(-err));
		return err;
	}
	while (!sock[0] && fgets(line, sizeof(line), f)) {
		unsigned long flags, inode;
		char name[PATH_MAX];
		size_t n;

		if (sscanf(line, "%*s %*s %*s %lx %*s %*s %lu %4095s", &flags,
			   &inode, name) != 3 || !(flags & 0x10000))
			continue;
		n = strlen(name);
		if (n < sizeof(tail) - 1 ||
		    strcmp(name + n - (sizeof(tail) - 1), tail) ||
		    !has_socket(pid, inode))
			continue;
		if ((size_t)snprintf(sock, size, "/proc/%d/root%s", (int)pid,
				     name) >= size)
			sock[0] = '\0';
	}
	fclose(f);
	if (!sock[0]) {
		wps_err(ctx, "QEMU (pid %d) has no libvirt monitor socket",
			(int)pid);
		return -ENOENT;
	}
	return 0;
}
