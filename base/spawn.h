/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Running a helper program (ip, iptables, qemu-img, virsh) and finding
 * one in PATH: one copy for every floor above.
 *
 * The program is looked up in PATH by the parent, so the forked child
 * (of a process that may have threads) makes only async-signal-safe
 * calls before execv. Nothing is logged here: the caller knows what the
 * program was for and says so.
 */
#ifndef WPS_BASE_SPAWN_H
#define WPS_BASE_SPAWN_H

#include <stddef.h>

/* name (or a path with a '/') as an absolute path into path:
 * 0, or -ENOENT when PATH has no executable of that name. */
int wps_spawn_find(const char *name, char *path, size_t len);

struct wps_spawn_result {
	int status;             /* exit status; 126: could not enter netns */
	int signal;             /* killed by this signal (status -1), or 0 */
	char cmd[512];          /* the command line, for messages */
	char out[1024];         /* its first stdout+stderr bytes, trimmed */
};

/*
 * Run argv[0] (looked up in PATH) with argv, stdin /dev/null, stdout and
 * stderr captured, in network namespace netns_fd when >= 0, and wait.
 * 0 with r filled (whatever the program's exit status), or -errno when
 * it could not run: -ENOENT not found, or pipe/fork/waitpid's error.
 */
int wps_spawn_run(char *const argv[], int netns_fd,
		  struct wps_spawn_result *r);

#endif /* WPS_BASE_SPAWN_H */
