/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnapd: the snapshot offload daemon. A VMM hands over its userfaultfd
 * and guest-RAM memfds on a Unix socket (QMP conventions, docs/PROTOCOL.md)
 * and wpsnapd takes live snapshots of that guest on request, from the VMM
 * or from anyone else allowed on the socket.
 *
 * This file owns the command line, the daemonisation (a pipe tells the
 * parent the socket is ready, so "wpsnapd && use it" works), and the log
 * sink; daemon/ is the daemon proper. It also joins the server to the
 * protocol: the server (server.c) frames request lines and passes each to
 * the handler named here (commands.c), so neither calls the other back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <wpsnap/wpsnap.h>

#include "daemon/commands.h"
#include "daemon/server.h"

#define PROG "wpsnapd"
#define DEFAULT_SOCKET "/run/wpsnap/wpsnapd.sock"

static void usage(FILE *f)
{
	fprintf(f,
"usage: " PROG " [options]\n"
"Snapshot offload daemon: live snapshots of guest RAM handed over by VMMs.\n"
"\n"
"  --socket PATH   control socket (default " DEFAULT_SOCKET ")\n"
"  --group NAME    members of NAME may connect too (socket mode 0660;\n"
"                  default: root only, mode 0600)\n"
"  --foreground    stay in the foreground, log to stderr\n"
"  --verbose       log connections and snapshots (-v -v: debug)\n"
"  --help          this text\n"
"\n"
"Protocol: docs/PROTOCOL.md. SIGTERM/SIGINT or the quit command cancel\n"
"running snapshots, wait for them and remove the socket.\n");
}

static void syslog_fn(void *arg, int level, const char *msg)
{
	(void)arg;
	syslog(level <= WPS_LOG_ERR ? LOG_ERR : level <= WPS_LOG_WARN ?
	       LOG_WARNING : level <= WPS_LOG_INFO ? LOG_INFO : LOG_DEBUG,
	       "%s", msg);
}

static void stderr_fn(void *arg, int level, const char *msg)
{
	(void)arg;
	(void)level;
	fprintf(stderr, PROG ": %s\n", msg);
}

/* Fork; the parent exits once the child reports (one byte: 0 ready,
 * else the failure) on the pipe, so its exit status means something. */
static int daemonize(int *ready_fd)
{
	int p[2], nul;
	char st = 1;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &st, 1) != 1)
			st = 1;
		_exit(st ? 1 : 0);
	}
	close(p[0]);
	if (setsid() < 0)
		return -errno;
	if (chdir("/"))
		return -errno;
	nul = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nul >= 0) {
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		close(nul);
	}
	*ready_fd = p[1];
	return 0;
}

int main(int argc, char **argv)
{
	enum { O_SOCKET = 256, O_GROUP, O_FG, O_VERBOSE, O_HELP };
	static const struct option lo[] = {
		{ "socket", required_argument, NULL, O_SOCKET },
		{ "group", required_argument, NULL, O_GROUP },
		{ "foreground", no_argument, NULL, O_FG },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct wpsd_opts o = { .socket_path = DEFAULT_SOCKET,
			       .line = wpsd_cmd_line };
	struct wps_ctx *ctx = NULL;
	struct wpsd d;
	bool fg = false, inited = false;
	int c, verbose = 0, ready = -1, ret;
	char st;

	while ((c = getopt_long(argc, argv, "hv", lo, NULL)) != -1) {
		switch (c) {
		case O_SOCKET: o.socket_path = optarg; break;
		case O_GROUP: o.group = optarg; break;
		case O_FG: fg = true; break;
		case 'v':
		case O_VERBOSE: verbose++; break;
		case 'h':
		case O_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!fg) {
		ret = daemonize(&ready);
		if (ret) {
			fprintf(stderr, PROG ": cannot daemonize: %s\n", strerror(-ret));
			return 1;
		}
		openlog(PROG, LOG_PID, LOG_DAEMON);
	}
	ret = wps_ctx_new(&ctx);
	if (ret)
		goto out;
	wps_ctx_set_log_fn(ctx, fg ? stderr_fn : syslog_fn, NULL);
	if (verbose)
		wps_ctx_set_log_level(ctx, verbose > 1 ? WPS_LOG_DEBUG : WPS_LOG_INFO);
	ret = wpsd_init(&d, ctx, &o);
	if (ret)
		goto out;
	inited = true;
	if (ready >= 0) {
		st = 0;
		if (write(ready, &st, 1) != 1)
			ret = -EPIPE;
		close(ready);
		ready = -1;
	}
	ret = wpsd_run(&d);
out:
	if (inited)
		wpsd_fini(&d);
	if (ready >= 0)
		close(ready);   /* the parent reads EOF: failure */
	if (ctx)
		wps_ctx_free(ctx);
	if (ret && fg)
		fprintf(stderr, PROG ": %s\n", strerror(-ret));
	return ret ? 1 : 0;
}
