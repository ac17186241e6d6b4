/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU module's watchdog (src/qemu_int.h): a process forked before
 * anything is held (it must not inherit a userfaultfd, which would keep
 * the guest protected after our death) that resumes the guest if we die
 * while it may be stopped by us: a raw QMP `cont` on a shared monitor
 * connection, or the caller's own resume command (a VM's `virsh
 * resume`). The one promise it keeps: QEMU is never left stopped by a
 * dead wpsnap. Used by the snapshot (src/qemu.c) and by the VM
 * checkpoints (src/vm_ckpt.c), whose pauses come again and again.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
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

/* The child: async-signal-safe calls only (we forked a process that may
 * have other threads: the caller's, a sanitizer runtime's). */
static __attribute__((noreturn)) void watchdog_run(int qfd, int rfd,
						    char *const *argv)
{
	static const char cont[] =
		"{\"execute\":\"cont\",\"id\":\"wps-watchdog\"}\n";
	static const char msg[] =
		"wpsnap: the snapshot process died while QEMU was stopped: "
		"continued it\n";
	char state = QEMU_WD_RUNNING, c, buf[4096];
	size_t have = 0;
	int i;

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
	if (argv) {
		/* The caller's resume action (it paused the guest its way) */
		execv(argv[0], argv);
		_exit(127);
	}
	if (write(qfd, cont, sizeof(cont) - 1) != (ssize_t)(sizeof(cont) - 1))
		_exit(1);
	/* Wait for QEMU's answer (10 s at most), so QEMU has acted on it
	 * before the connection closes. */
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

/* Resume with a raw QMP cont on qfd, or by running argv when not NULL. */
int qemu_watchdog_start(struct qemu_watchdog *w, int qfd, char *const *argv)
{
	int p[2];

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
		watchdog_run(qfd, p[0], argv);
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
