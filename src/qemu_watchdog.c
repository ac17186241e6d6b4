/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU module's watchdog (src/qemu_int.h): a process forked before
 * anything is held (it must not inherit a userfaultfd, which would keep
 * the guest protected after our death) that resumes the guest if we die
 * while it may be stopped by us: a raw QMP `cont` on a shared monitor
 * connection, or the caller's own resume command (a VM's `virsh
 * resume`) and, should that fail (libvirt died too), a QMP `cont` on
 * QEMU's own monitor socket. The one promise it keeps: QEMU is never left stopped by a
 * dead wpsnap. Used by the snapshot (src/qemu.c) and by the VM
 * checkpoints (src/vm_ckpt.c), whose pauses come again and again.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "src/qemu_int.h"

/* ------------------------------------------------------------------ */
/* The watchdog: `cont` if we die while the guest may be stopped by us  */
/* ------------------------------------------------------------------ */

static void close_all_but(int a, int b)
{
	int fd;

	/* stderr stays, for its one message */
	for (fd = 3; fd < 1024; fd++)
		if (fd != a && fd != b)
			close(fd);
}

/* QMP cont on qfd (after prefix, the capabilities negotiation of a fresh
 * connection), and wait for QEMU's answer (10 s at most), so QEMU has
 * acted on it before the connection closes. Async-signal-safe. */
static __attribute__((noreturn)) void send_cont(int qfd, const char *prefix,
						 size_t plen)
{
	static const char cont[] =
		"{\"execute\":\"cont\",\"id\":\"wps-watchdog\"}\n";
	static const char msg[] =
		"wpsnap: the snapshot process died while QEMU was stopped: "
		"continued it\n";
	char buf[4096];
	size_t have = 0;
	int i;

	if ((plen && write(qfd, prefix, plen) != (ssize_t)plen) ||
	    write(qfd, cont, sizeof(cont) - 1) != (ssize_t)(sizeof(cont) - 1))
		_exit(1);
	for (i = 0; i < 100; i++) {
		struct pollfd p = { .fd = qfd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(qfd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
		if (strstr(buf, "\"wps-watchdog\"")) {
			if (write(2, msg, sizeof(msg) - 1) < 0)
				_exit(1);
			_exit(0);
		}
		if (have > sizeof(buf) / 2) {
			/* keep the tail, where our id would be */
			memmove(buf, buf + have - 64, 64);
			have = 64;
		}
	}
	_exit(1);
}

/* Run argv and wait for it: whether it succeeded. */
static bool run_ok(char *const *argv)
{
	pid_t c = fork();
	int st = 0;

	if (c < 0)
		return false;
	if (!c) {
		execv(argv[0], argv);
		_exit(127);
	}
	while (waitpid(c, &st, 0) < 0)
		if (errno != EINTR)
			return false;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The child: async-signal-safe calls only (we forked a process that may
 * have other threads: the caller's, a sanitizer runtime's). */
static __attribute__((noreturn)) void watchdog_run(int qfd, int rfd,
						    char *const *argv,
						    const struct sockaddr_un *direct)
{
	static const char caps[] = "{\"execute\":\"qmp_capabilities\"}\n";
	char state = QEMU_WD_RUNNING, c;

	/* A terminal's ^C or hangup reaches the whole process group: the
	 * watchdog must outlive the process it watches. */
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	setsid();
	close_all_but(qfd, rfd);
	for (;;) {
		ssize_t n = read(rfd, &c, 1);

		if (n == 1 && c == QEMU_WD_QUIT)
			_exit(0);
		if (n == 1) {
			state = c;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;          /* EOF: our parent is gone */
	}
	if (state != QEMU_WD_STOPPING)
		_exit(0);
	if (!argv)
		send_cont(qfd, NULL, 0);
	/* The caller's resume action (it paused the guest its way) */
	if (run_ok(argv))
		_exit(0);
	if (!direct)
		_exit(1);
	/* It failed (libvirt gone too): QEMU's own monitor socket, which
	 * libvirt's death freed. */
	qfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (qfd < 0 || connect(qfd, (const struct sockaddr *)direct,
			       sizeof(*direct)))
		_exit(1);
	send_cont(qfd, caps, sizeof(caps) - 1);
}

int qemu_watchdog_start(struct qemu_watchdog *w, int qfd, char *const *argv,
			const char *direct)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int p[2];

	/* made before the fork: the child may only copy it */
	if (direct && strlen(direct) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (direct)
		memcpy(sa.sun_path, direct, strlen(direct) + 1);

	w->pid = -1;
	w->fd = -1;
	if (pipe2(p, O_CLOEXEC))
		return -errno;
	w->pid = fork();
	if (w->pid < 0) {
		int err = -errno;

		close(p[0]);
		close(p[1]);
		return err;
	}
	if (!w->pid) {
		close(p[1]);
		watchdog_run(qfd, p[0], argv, direct ? &sa : NULL);
	}
	close(p[0]);
	w->fd = p[1];
	return 0;
}

void qemu_watchdog_tell(struct qemu_watchdog *w, char state)
{
	ssize_t n;

	if (w->fd < 0)
		return;
	do
		n = write(w->fd, &state, 1);
	while (n < 0 && errno == EINTR);
}

void qemu_watchdog_stop(struct qemu_watchdog *w)
{
	if (w->fd >= 0) {
		qemu_watchdog_tell(w, QEMU_WD_QUIT);
		close(w->fd);
		w->fd = -1;
	}
	if (w->pid > 0)
		while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
			;
	w->pid = -1;
}
