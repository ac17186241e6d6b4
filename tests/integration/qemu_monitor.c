/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Drives the monitor side of <wpsnap/qemu.h> against a live QEMU for
 * tests/integration/qemu_monitor.py, printing one "key value" line per
 * fact the test checks: QEMU's pid, version and machine type as the
 * discovery records them, a QMP command through wps_qemu_execute, an HMP
 * one, an fd passed with getfd (held by QEMU, per /proc/PID/fd, until
 * closefd), and the errors of a bad argument text and of closing twice.
 * Exit 1 when a step fails outright.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/qemu.h>
#include <wpsnap/wpsnap.h>

/* Does process pid hold a descriptor on the inode ino? */
static int holds(pid_t pid, ino_t ino)
{
	char dir[64], path[320];
	struct dirent *d;
	struct stat st;
	int found = 0;
	DIR *dp;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	dp = opendir(dir);
	if (!dp)
		return -1;
	while ((d = readdir(dp)))
		if (snprintf(path, sizeof(path), "%s/%s", dir, d->d_name) <
		    (int)sizeof(path) && !stat(path, &st) && st.st_ino == ino)
			found = 1;
	closedir(dp);
	return found;
}

int main(int argc, char **argv)
{
	struct wps_qemu_layout *l = NULL;
	struct wps_qemu *q = NULL;
	struct wps_ctx *ctx = NULL;
	char *s = NULL;
	struct stat st;
	int p[2], err;
	unsigned int i, snap = 0;

	if (argc != 2 || wps_ctx_new(&ctx))
		return 2;
	if (wps_qemu_open_qmp(ctx, argv[1], &q))
		return 1;
	printf("pid %d\n", (int)wps_qemu_pid(q));
	if (wps_qemu_discover(q, &l))
		return 1;
	for (i = 0; i < l->nr_blocks; i++)
		snap += l->blocks[i].snap;
	printf("version %s\nmachine %s\nsaved-blocks %u\n", l->version,
	       l->machine, snap);
	if (wps_qemu_execute(q, "query-status", NULL, &s))
		return 1;
	printf("query-status %s\n", s);
	free(s);
	if (wps_qemu_hmp(q, "info version", &s))
		return 1;
	printf("hmp-info-version %s", s);
	free(s);
	printf("bad-args %d\n", wps_qemu_execute(q, "closefd", "[1", NULL));
	if (pipe(p) || fstat(p[1], &st))
		return 1;
	err = wps_qemu_send_fd(q, p[1], "wpstest");
	printf("getfd %d\n", err);
	printf("held-after-getfd %d\n", holds(wps_qemu_pid(q), st.st_ino));
	err = wps_qemu_execute(q, "closefd", "{\"fdname\": \"wpstest\"}",
			       NULL);
	printf("closefd %d\n", err);
	printf("held-after-closefd %d\n", holds(wps_qemu_pid(q), st.st_ino));
	err = wps_qemu_execute(q, "closefd", "{\"fdname\": \"wpstest\"}",
			       NULL);
	printf("closefd-again %d\n", err);
	close(p[0]);
	close(p[1]);
	wps_qemu_layout_free(l);
	wps_qemu_close(q);
	wps_ctx_free(ctx);
	return 0;
}
