/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vm_probe: proves from C, against a running libvirt domain, the three
 * things issue 14 (docs/VM.md) builds on, through libvirt's own monitor
 * connection (no extra QMP socket):
 *
 *   1. virDomainQemuMonitorCommand with QMP: query-status answers.
 *   2. the same with human-monitor-command "info ramblock": QEMU's RAM
 *      blocks (the layout wpsnap needs) come back as text.
 *   3. virDomainQemuMonitorCommandWithFiles hands QEMU an fd that QMP
 *      getfd accepts: a memfd named after us shows up in QEMU's fd table
 *      (/proc/QEMU_PID/fd) under the name getfd gave it, and is gone after
 *      closefd; getfd without a file fails, so the fd really travelled.
 *
 *   vm_probe URI DOMAIN QEMU_PID
 *
 * Prints one line per check ("ok - ..." or "not ok - ... : why") and exits
 * 0 when all passed, 1 otherwise, 2 on bad usage. Run by
 * tests/integration/vm_boot.py against its private libvirtd. Every
 * resource is released on every path (the sanitizer build checks leaks).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FDNAME "wpsnap-probe"

struct probe {
	virConnectPtr conn;
	virDomainPtr dom;
	long qemu_pid;
	int failed;
};

static void ok(const char *what)
{
	printf("ok - %s\n", what);
}

static void ko(struct probe *p, const char *what, const char *why)
{
	printf("not ok - %s: %s\n", what, why);
	p->failed++;
}

/* libvirt prints every error to stderr by default; we report them with the
 * step that failed instead. */
static void quiet(void *arg, virErrorPtr err)
{
	(void)arg;
	(void)err;
}

static const char *lv_error(void)
{
	const char *m = virGetLastErrorMessage();

	return m ? m : "unknown libvirt error";
}

/* One QMP command through libvirt (with files if nfds); its reply parsed
 * into *reply. 0, -EIO when libvirt refused (why in *why), -EPROTO when
 * the reply is not JSON. */
static int qmp(struct probe *p, const char *cmd, int *fds, unsigned nfds,
	       json_t **reply, char *why, size_t whylen)
{
	char *res = NULL;
	json_error_t je;
	int r;

	*reply = NULL;
	if (nfds)
		r = virDomainQemuMonitorCommandWithFiles(p->dom, cmd, nfds, fds,
							 NULL, NULL, &res, 0);
	else
		r = virDomainQemuMonitorCommand(p->dom, cmd, &res, 0);
	if (r < 0) {
		snprintf(why, whylen, "%s", lv_error());
		return -EIO;
	}
	*reply = json_loads(res, 0, &je);
	if (!*reply) {
		snprintf(why, whylen, "reply is not JSON (%s): %.200s", je.text,
			 res);
		free(res);
		return -EPROTO;
	}
	free(res);
	return 0;
}

/* The fd of QEMU that is a link to target, or -ENOENT. */
static int qemu_fd_to(long pid, const char *target)
{
	char dir[64], path[PATH_MAX], link[PATH_MAX];
	struct dirent *e;
	DIR *d;
	ssize_t n;
	int found = -ENOENT;

	snprintf(dir, sizeof(dir), "/proc/%ld/fd", pid);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (!strcmp(link, target)) {
			found = atoi(e->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}

static void check_status(struct probe *p)
{
	json_t *r = NULL, *st;
	char why[512], line[256];

	if (qmp(p, "{\"execute\":\"query-status\"}", NULL, 0, &r, why,
		sizeof(why))) {
		ko(p, "QMP query-status", why);
		return;
	}
	st = json_object_get(json_object_get(r, "return"), "status");
	if (!json_is_string(st)) {
		ko(p, "QMP query-status", "no return.status in the reply");
	} else {
		snprintf(line, sizeof(line), "QMP query-status: %s",
			 json_string_value(st));
		ok(line);
	}
	json_decref(r);
}

static void check_ramblock(struct probe *p)
{
	json_t *r = NULL, *text;
	char why[512];

	if (qmp(p, "{\"execute\":\"human-monitor-command\",\"arguments\":"
		"{\"command-line\":\"info ramblock\"}}", NULL, 0, &r, why,
		sizeof(why))) {
		ko(p, "HMP info ramblock", why);
		return;
	}
	text = json_object_get(r, "return");
	if (!json_is_string(text) || !strstr(json_string_value(text), "pc.ram"))
		ko(p, "HMP info ramblock", "no pc.ram block in the reply");
	else
		ok("HMP info ramblock (via human-monitor-command) lists pc.ram");
	json_decref(r);
}

/* The reply's error description, or NULL when it succeeded. */
static const char *qmp_err(json_t *r)
{
	json_t *e = json_object_get(r, "error");

	if (!e)
		return json_object_get(r, "return") ? NULL : "no return";
	e = json_object_get(e, "desc");
	return json_is_string(e) ? json_string_value(e) : "error";
}

static void check_getfd(struct probe *p)
{
	const char *getfd = "{\"execute\":\"getfd\",\"arguments\":"
			    "{\"fdname\":\"" FDNAME "\"}}";
	const char *closefd = "{\"execute\":\"closefd\",\"arguments\":"
			      "{\"fdname\":\"" FDNAME "\"}}";
	char name[64], target[96], why[512], line[256];
	json_t *r = NULL;
	int fd, qfd;

	/* without a file, getfd must fail: else success below proves
	 * nothing about the fd having arrived */
	if (qmp(p, getfd, NULL, 0, &r, why, sizeof(why)))
		ko(p, "getfd without a file", why);
	else if (!qmp_err(r))
		ko(p, "getfd without a file", "QEMU accepted it");
	else
		ok("getfd without a file is refused");
	json_decref(r);

	snprintf(name, sizeof(name), "wpsnap-probe-%ld", (long)getpid());
	snprintf(target, sizeof(target), "/memfd:%s (deleted)", name);
	fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0) {
		snprintf(why, sizeof(why), "memfd_create: %s", strerror(errno));
		ko(p, "getfd with a file", why);
		return;
	}
	if (qmp(p, getfd, &fd, 1, &r, why, sizeof(why))) {
		ko(p, "virDomainQemuMonitorCommandWithFiles + getfd", why);
		close(fd);
		return;
	}
	close(fd);
	if (qmp_err(r)) {
		ko(p, "virDomainQemuMonitorCommandWithFiles + getfd",
		   qmp_err(r));
		json_decref(r);
		return;
	}
	json_decref(r);
	qfd = qemu_fd_to(p->qemu_pid, target);
	if (qfd < 0) {
		snprintf(why, sizeof(why), "no fd of QEMU %ld links to %s (%s)",
			 p->qemu_pid, target, strerror(-qfd));
		ko(p, "getfd: the memfd is in QEMU", why);
	} else {
		snprintf(line, sizeof(line), "virDomainQemuMonitorCommandWithFiles"
			 " + getfd: our memfd is QEMU's fd %d", qfd);
		ok(line);
	}
	if (qmp(p, closefd, NULL, 0, &r, why, sizeof(why)) == 0) {
		const char *e = qmp_err(r);

		snprintf(why, sizeof(why), "%s", e ? e : "");
		json_decref(r);
	}
	if (why[0])
		ko(p, "closefd", why);
	else if (qemu_fd_to(p->qemu_pid, target) >= 0)
		ko(p, "closefd", "QEMU still holds the memfd");
	else
		ok("closefd: QEMU let the memfd go");
}

int main(int argc, char **argv)
{
	struct probe p = { 0 };
	char *end;

	if (argc != 4) {
		fprintf(stderr, "usage: vm_probe URI DOMAIN QEMU_PID\n");
		return 2;
	}
	p.qemu_pid = strtol(argv[3], &end, 10);
	if (*end || p.qemu_pid <= 0) {
		fprintf(stderr, "vm_probe: bad QEMU pid '%s'\n", argv[3]);
		return 2;
	}
	virSetErrorFunc(NULL, quiet);
	p.conn = virConnectOpen(argv[1]);
	if (!p.conn) {
		printf("not ok - virConnectOpen %s: %s\n", argv[1], lv_error());
		return 1;
	}
	p.dom = virDomainLookupByName(p.conn, argv[2]);
	if (!p.dom) {
		printf("not ok - virDomainLookupByName %s: %s\n", argv[2],
		       lv_error());
		virConnectClose(p.conn);
		return 1;
	}
	check_status(&p);
	check_ramblock(&p);
	check_getfd(&p);
	virDomainFree(p.dom);
	virConnectClose(p.conn);
	return p.failed ? 1 : 0;
}
