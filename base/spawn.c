/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Running a helper program; see base/spawn.h. Its output is read to the
 * end (the first bytes kept) so the child never blocks on a full pipe.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/spawn.h"

int wps_spawn_find(const char *name, char *path, size_t len)
{
	const char *env = getenv("PATH");
	const char *p;

	if (strchr(name, '/')) {
		snprintf(path, len, "%s", name);
		return access(path, X_OK) == 0 ? 0 : -errno;
	}
	if (!env || !*env)
		env = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (p = env; *p;) {
		const char *end = strchrnul(p, ':');
		int n = (int)(end - p);

		if (n > 0 && (size_t)snprintf(path, len, "%.*s/%s", n, p, name) < len &&
		    access(path, X_OK) == 0)
			return 0;
		p = *end ? end + 1 : end;
	}
	return -ENOENT;
}

int wps_spawn_run(char *const argv[], int netns_fd,
		  struct wps_spawn_result *r)
{
	char path[4096];
	int pfd[2], status, ret, n;
	size_t used = 0, c = 0;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	for (int i = 0; argv[i] && c < sizeof(r->cmd) - 1; i++)
		c += (size_t)snprintf(r->cmd + c, sizeof(r->cmd) - c, "%s%s",
				      i ? " " : "", argv[i]);
	ret = wps_spawn_find(argv[0], path, sizeof(path));
	if (ret < 0)
		return ret;
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return ret;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0)
			_exit(126);
		execv(path, argv);
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		char scratch[256];
		char *dst = used < sizeof(r->out) - 1 ? r->out + used : scratch;
		size_t room = used < sizeof(r->out) - 1 ?
			      sizeof(r->out) - 1 - used : sizeof(scratch);

		n = (int)read(pfd[0], dst, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (dst != scratch)
			used += (size_t)n;
	}
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	while (used && (r->out[used - 1] == '\n' || r->out[used - 1] == ' '))
		used--;
	r->out[used] = 0;
	if (WIFSIGNALED(status)) {
		r->status = -1;
		r->signal = WTERMSIG(status);
	} else {
		r->status = WEXITSTATUS(status);
	}
	return 0;
}
