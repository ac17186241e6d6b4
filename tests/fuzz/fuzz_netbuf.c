/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: netbuf options as a client gives them (wpsnapd's "netbuf"
 * argument of wps-checkpoint-start, `wpsnap netbuf --if/--backend/
 * --netns`): the backend name parser, the namespace opener and the option
 * checks of wps_netbuf_new (src/netbuf.c).
 *
 * Input: 3 bytes (backend, direction, flags as numbers), then the fields
 * ifname, backend name and namespace separated by NUL bytes.
 *
 * No side effects outside the harness: a namespace name with a '/' is
 * looked up only inside the harness's directory (which holds a FIFO, a
 * regular file and a directory, the things a clumsy path can name), a
 * plain name under /run/netns is opened but never entered, and
 * wps_netbuf_new is called only for interface names that do not exist,
 * so that it stops at its checks and never installs anything.
 */
#include "config.h"

#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <wpsnap/netbuf.h>

#include "tests/fuzz/fuzzutil.h"

static void sandbox(void)
{
	static int done;
	char p[128];
	int fd;

	if (done++)
		return;
	snprintf(p, sizeof(p), "%s/fifo", fz_dir());
	mkfifo(p, 0600);
	snprintf(p, sizeof(p), "%s/file", fz_dir());
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	snprintf(p, sizeof(p), "%s/dir", fz_dir());
	mkdir(p, 0700);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wps_netbuf_opts o = WPS_NETBUF_OPTS_INIT;
	struct wps_netbuf *nb = NULL;
	char *buf, *f[3] = { NULL, NULL, NULL }, ns[256];
	unsigned int be, i;
	size_t at;
	int fd;

	if (size < 3)
		return 0;
	sandbox();
	fz_begin();
	buf = calloc(1, size - 3 + 1);
	if (!buf)
		abort();
	memcpy(buf, data + 3, size - 3);
	for (i = 0, at = 0; i < 3 && at <= size - 3; i++) {
		f[i] = buf + at;
		at += strlen(f[i]) + 1;
	}
	if (f[1] && !wps_netbuf_backend_parse(f[1], &be) && be > WPS_NETBUF_NFQUEUE)
		abort();
	if (f[2] && f[2][0] && !strstr(f[2], "..")) {
		if (strchr(f[2], '/'))
			snprintf(ns, sizeof(ns), "%s/%s", fz_dir(),
				 strrchr(f[2], '/') + 1);
		else
			snprintf(ns, sizeof(ns), "%s", f[2]);
		fd = wps_netbuf_open_netns(fz_ctx(), ns);
		if (fd >= 0)
			close(fd);  /* never entered: see above */
	}
	o.ifname = f[0];
	o.backend = data[0];
	o.direction = data[1];
	o.flags = data[2];
	if (!f[0] || !f[0][0] || strlen(f[0]) >= IF_NAMESIZE || !if_nametoindex(f[0])) {
		if (!wps_netbuf_new(fz_ctx(), &o, &nb))
			abort();    /* no such interface: must be refused */
	}
	free(buf);
	fz_end();
	return 0;
}
