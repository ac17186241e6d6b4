/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions: validation, the disk actions and their rollback.
 *
 * Everything that can be checked without pausing the guest is checked in
 * wpsd_txn_parse(), on the loop thread: key shapes, absolute paths, that
 * sources exist and targets do not, that hook programs are executable,
 * and even that the target directory's filesystem can reflink from the
 * source (a cheap probe clone into an O_TMPFILE). What remains for the
 * pause is what cannot be known before: a target appearing meanwhile, a
 * hook failing or hanging, an I/O error.
 *
 * Hooks are fork()ed from a multithreaded daemon, so the child does only
 * async-signal-safe things: argv and the environment are built before the
 * fork, the child resets its signal state, closes every inherited fd (the
 * daemon holds guests' userfaultfds and memfds; a hook must not keep a
 * uffd alive past a daemon crash) and execs. The parent waits on a pidfd
 * with the hook's deadline and kills the hook's process group on timeout.
 *
 * Owns: the transaction, its actions' strings and argv vectors, and the
 * source fds opened at validation (closed by wpsd_txn_free).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/deadline.h"
#include "base/clock.h"
#include "daemon/access.h"
#include "daemon/txn.h"

#define HOOK_OUT_KEEP 160     /* tail of a hook's output kept for the cause */
#define HOOK_POLL_MS  50      /* how often a waiting hook checks for cancel */
#define REFLINK_HINT  "(use XFS with reflink=1, btrfs, ...)"

static const struct wpsd_arg txn_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "actions", WPSD_T_ARRAY, true },
	{ "pause-timeout-ms", WPSD_T_UINT, false },
	{ "vcpus-paused", WPSD_T_BOOL, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg mem_spec[] = {
	{ "type", WPSD_T_STR, true },
	{ "path", WPSD_T_STR, true },
	{ "overwrite", WPSD_T_BOOL, false },
	{ "freeze-simple", WPSD_T_BOOL, false },
	{ "buffer-budget", WPSD_T_UINT, false },
	{ "fault-window", WPSD_T_UINT, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg reflink_spec[] = {
	{ "type", WPSD_T_STR, true },
	{ "source", WPSD_T_STR, true },
	{ "target", WPSD_T_STR, true },
	{ NULL, 0, false },
};

static const struct wpsd_arg hook_spec[] = {
	{ "type", WPSD_T_STR, true },
	{ "command", WPSD_T_ARRAY, true },
	{ "rollback", WPSD_T_ARRAY, false },
	{ "timeout-ms", WPSD_T_UINT, false },
	{ NULL, 0, false },
};

const char *wpsd_txn_type_name(enum wpsd_txn_type type)
{
	switch (type) {
	case WPSD_TXN_MEMORY: return "memory-snapshot";
	case WPSD_TXN_REFLINK: return "disk-reflink";
	case WPSD_TXN_HOOK: return "disk-hook";
	}
	return "?";
}

static void append(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strnlen(buf, len);
	va_list ap;

	if (n + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

static void free_argv(char **v)
{
	char **p;

	if (!v)
		return;
	for (p = v; *p; p++)
		free(*p);
	free(v);
}

void wpsd_txn_free(struct wpsd_txn *t)
{
	unsigned int i;

	if (!t)
		return;
	for (i = 0; i < t->nr; i++) {
		struct wpsd_txn_action *a = &t->a[i];

		if (a->src_fd >= 0)
			close(a->src_fd);
		if (a->dst_fd >= 0)
			close(a->dst_fd);
		free(a->source);
		free(a->target);
		free(a->target_dir);
		free_argv(a->argv);
		free_argv(a->rollback);
	}
	free(t->a);
	free(t);
}

/* ------------------------------------------------------------------ */
/* validation (loop thread, guest running)                              */

static bool abs_path_ok(const char *p)
{
	return p[0] == '/' && strlen(p) < PATH_MAX - 16;
}

/* An argv from a JSON array of strings; argv[0] an absolute path to an
 * executable regular file. No shell is involved, ever. */
static int parse_argv(json_t *arr, const char *what, char ***out,
		      struct wpsd_reply *r)
{
	size_t n = json_array_size(arr), i;
	struct stat st;
	char **v;
	json_t *s;

	if (!n || n > WPSD_HOOK_ARGS_MAX) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s must have 1 to %d strings "
			       "(argv; no shell)", what, WPSD_HOOK_ARGS_MAX);
		return -EINVAL;
	}
	json_array_foreach(arr, i, s) {
		if (!json_is_string(s)) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s[%zu] must be a string",
				       what, i);
			return -EINVAL;
		}
	}
	s = json_array_get(arr, 0);
	if (!abs_path_ok(json_string_value(s))) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s[0] must be an absolute path "
			       "(no PATH search)", what);
		return -EINVAL;
	}
	if (stat(json_string_value(s), &st) || !S_ISREG(st.st_mode) ||
	    access(json_string_value(s), X_OK)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s[0]: %s is not an executable "
			       "file", what, json_string_value(s));
		return -ENOEXEC;
	}
	v = calloc(n + 1, sizeof(*v));
	if (!v)
		goto oom;
	json_array_foreach(arr, i, s) {
		v[i] = strdup(json_string_value(s));
		if (!v[i]) {
			free_argv(v);
			goto oom;
		}
	}
	*out = v;
	return 0;
oom:
	wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
	return -ENOMEM;
}

static int parse_hook(struct wpsd_txn_action *a, json_t *o, const char *what,
		      struct wpsd_reply *r)
{
	char w[64];
	json_t *v;
	int ret;

	snprintf(w, sizeof(w), "%s.command", what);
	ret = parse_argv(json_object_get(o, "command"), w, &a->argv, r);
	if (ret)
		return ret;
	v = json_object_get(o, "rollback");
	if (v) {
		snprintf(w, sizeof(w), "%s.rollback", what);
		ret = parse_argv(v, w, &a->rollback, r);
		if (ret)
			return ret;
	}
	v = json_object_get(o, "timeout-ms");
	a->timeout_ms = WPSD_HOOK_TIMEOUT_MS;
	if (v) {
		if (json_integer_value(v) < 1 ||
		    json_integer_value(v) > WPSD_HOOK_TIMEOUT_MAX) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: timeout-ms must be "
				       "1..%d", what, WPSD_HOOK_TIMEOUT_MAX);
			return -EINVAL;
		}
		a->timeout_ms = (unsigned int)json_integer_value(v);
	}
	return 0;
}

/*
 * Whether the target's filesystem can clone from the source, asked
 * without creating a name: clone one block of the source into an unnamed
 * O_TMPFILE in the target directory. Only a definite "no" (EOPNOTSUPP,
 * EXDEV) refuses the transaction; anything inconclusive (no O_TMPFILE,
 * odd block alignment) is left to the real clone in the pause.
 */
static int reflink_probe(const struct wpsd_txn_action *a, const struct stat *sst,
			 const char *what, struct wpsd_reply *r)
{
	struct file_clone_range fcr = { .src_fd = a->src_fd };
	int fd, ret = 0;

	fd = open(a->target_dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0)
		return 0;
	/* 0 means "to the end": fine for a small source, a block otherwise
	 * so a big image costs no more than one extent to probe. */
	fcr.src_length = sst->st_size > sst->st_blksize ? (uint64_t)sst->st_blksize : 0;
	if (ioctl(fd, FICLONERANGE, &fcr)) {
		if (errno == EOPNOTSUPP || errno == ENOTTY) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: filesystem of %s does "
				       "not support reflink " REFLINK_HINT, what,
				       a->target_dir);
			ret = -EOPNOTSUPP;
		} else if (errno == EXDEV) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: %s and %s are on "
				       "different filesystems (or mounts): a "
				       "reflink cannot cross them " REFLINK_HINT,
				       what, a->source, a->target_dir);
			ret = -EXDEV;
		}
	}
	close(fd);
	return ret;
}

static int parse_reflink(struct wpsd_conn *c, struct wpsd_txn *t,
			 struct wpsd_txn_action *a, json_t *o, const char *what,
			 struct wpsd_reply *r)
{
	const char *src = json_string_value(json_object_get(o, "source"));
	const char *dst = json_string_value(json_object_get(o, "target"));
	struct stat sst, dst_st;
	unsigned int i;
	char *slash;
	int err;

	if (!abs_path_ok(src) || !abs_path_ok(dst)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: source and target must be "
			       "absolute paths (wpsnapd runs in /)", what);
		return -EINVAL;
	}
	for (i = 0; t->a + i < a; i++) {
		if (t->a[i].type == WPSD_TXN_REFLINK && !strcmp(t->a[i].target, dst)) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: target %s is also the "
				       "target of actions[%u]", what, dst, i);
			return -EINVAL;
		}
	}
	a->source = strdup(src);
	a->target = strdup(dst);
	a->target_dir = strdup(dst);
	if (!a->source || !a->target || !a->target_dir) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		return -ENOMEM;
	}
	slash = strrchr(a->target_dir, '/');
	if (slash == a->target_dir)
		slash[1] = '\0';   /* "/x": the root directory */
	else
		*slash = '\0';
	if (!slash[1] && slash != a->target_dir) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: target %s names a directory",
			       what, dst);
		return -EINVAL;
	}
	/* a client that is not root: only what it could read and create */
	err = wpsd_access_check(c, (const struct wpsd_access[]){
		{ WPSD_ACCESS_READ, src, false }, { WPSD_ACCESS_CREATE, dst, false } },
		2, r);
	if (err)
		return err;
	a->src_fd = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (a->src_fd < 0) {
		err = errno;
		wpsd_reply_err(r, WPSD_GENERIC, "%s: cannot open source %s: %s",
			       what, src, strerror(err));
		return -err;
	}
	if (fstat(a->src_fd, &sst) || !S_ISREG(sst.st_mode)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: source %s is not a regular "
			       "file", what, src);
		return -EINVAL;
	}
	if (!lstat(dst, &dst_st)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: target %s exists "
			       "(disk-reflink never replaces a file)", what, dst);
		return -EEXIST;
	}
	if (errno != ENOENT) {
		err = errno;
		wpsd_reply_err(r, WPSD_GENERIC, "%s: target %s: %s", what, dst,
			       strerror(err));
		return -err;
	}
	if (stat(a->target_dir, &dst_st) || !S_ISDIR(dst_st.st_mode)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: target directory %s does not "
			       "exist", what, a->target_dir);
		return -ENOENT;
	}
	/* No st_dev comparison: btrfs subvolumes differ in st_dev and still
	 * clone between each other. The probe asks the kernel instead. */
	return reflink_probe(a, &sst, what, r);
}

int wpsd_txn_parse(struct wpsd_conn *c, json_t *args, struct wpsd_txn **out,
		   json_t **mem_args, struct wpsd_reply *r)
{
	struct wpsd_txn *t;
	json_t *acts, *o, *m = NULL;
	const char *type;
	char what[32];
	size_t i;
	int ret;

	*out = NULL;
	*mem_args = NULL;
	ret = wpsd_args_check(args, txn_spec, "arguments", r);
	if (ret)
		return ret;
	acts = json_object_get(args, "actions");
	if (!json_array_size(acts) || json_array_size(acts) > WPSD_TXN_ACTIONS_MAX) {
		wpsd_reply_err(r, WPSD_GENERIC, "actions must have 1 to %d entries",
			       WPSD_TXN_ACTIONS_MAX);
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (t)
		t->a = calloc(json_array_size(acts), sizeof(*t->a));
	if (!t || !t->a) {
		free(t);
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		return -ENOMEM;
	}
	snprintf(t->guest, sizeof(t->guest), "%s",
		 json_string_value(json_object_get(args, "guest")));
	t->mem = -1;
	t->failed = -1;
	json_array_foreach(acts, i, o) {
		struct wpsd_txn_action *a = &t->a[i];

		a->src_fd = a->dst_fd = -1;
		t->nr = (unsigned int)i + 1;   /* what wpsd_txn_free must look at */
		snprintf(what, sizeof(what), "actions[%zu]", i);
		if (!json_is_object(o) || !json_is_string(json_object_get(o, "type"))) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s must be an object with "
				       "a string 'type'", what);
			ret = -EINVAL;
			goto fail;
		}
		type = json_string_value(json_object_get(o, "type"));
		if (!strcmp(type, "memory-snapshot")) {
			a->type = WPSD_TXN_MEMORY;
			ret = wpsd_args_check(o, mem_spec, what, r);
			if (ret)
				goto fail;
			if (t->mem >= 0) {
				wpsd_reply_err(r, WPSD_GENERIC, "%s: at most one "
					       "memory-snapshot per transaction "
					       "(actions[%d] is one)", what, t->mem);
				ret = -EINVAL;
				goto fail;
			}
			t->mem = (int)i;
		} else if (!strcmp(type, "disk-reflink")) {
			a->type = WPSD_TXN_REFLINK;
			ret = wpsd_args_check(o, reflink_spec, what, r);
			if (!ret)
				ret = parse_reflink(c, t, a, o, what, r);
			if (ret)
				goto fail;
		} else if (!strcmp(type, "disk-hook")) {
			a->type = WPSD_TXN_HOOK;
			if (!c->root) {
				/* the hook runs as root, with any argv: for a
				 * group member that would be root itself */
				wpsd_reply_err(r, WPSD_GENERIC, "permission denied: "
					       "%s: disk-hook runs a command as root and "
					       "is for root only", what);
				ret = -EPERM;
				goto fail;
			}
			ret = wpsd_args_check(o, hook_spec, what, r);
			if (!ret)
				ret = parse_hook(a, o, what, r);
			if (ret)
				goto fail;
		} else {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: unknown type '%s' "
				       "(expected memory-snapshot, disk-reflink or "
				       "disk-hook)", what, type);
			ret = -EINVAL;
			goto fail;
		}
	}
	if (t->mem >= 0) {
		/* The memory action in wps-snapshot-start's words: the job
		 * checks and prepares it exactly like a plain snapshot. */
		m = json_deep_copy(json_array_get(acts, (size_t)t->mem));
		if (!m) {
			wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
			ret = -ENOMEM;
			goto fail;
		}
		json_object_del(m, "type");
		json_object_set(m, "guest", json_object_get(args, "guest"));
	}
	*out = t;
	*mem_args = m;
	return 0;
fail:
	wpsd_txn_free(t);
	return ret;
}

/* ------------------------------------------------------------------ */
/* disk actions (worker, guest paused)                                  */

static int reflink_do(struct wpsd_txn_action *a, char *why, size_t len)
{
	struct stat st;
	int fd, ret;

	if (fstat(a->src_fd, &st)) {
		ret = -errno;
		snprintf(why, len, "source %s: %s", a->source, strerror(-ret));
		return ret;
	}
	/* O_EXCL: a file that appeared since the validation is not ours to
	 * replace; O_NOFOLLOW: nor is a symlink's destination. */
	fd = open(a->target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		  st.st_mode & 0777);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, len, "cannot create %s: %s%s", a->target,
			 strerror(-ret), ret == -EEXIST ? " (disk-reflink never "
			 "replaces a file)" : "");
		return ret;
	}
	if (ioctl(fd, FICLONE, a->src_fd)) {
		ret = -errno;
		if (ret == -EOPNOTSUPP || ret == -ENOTTY)
			snprintf(why, len, "filesystem of %s does not support "
				 "reflink " REFLINK_HINT, a->target);
		else if (ret == -EXDEV)
			snprintf(why, len, "%s and %s are on different "
				 "filesystems (or mounts): a reflink cannot cross "
				 "them " REFLINK_HINT, a->source, a->target);
		else
			snprintf(why, len, "reflink %s -> %s: %s", a->source,
				 a->target, strerror(-ret));
		goto fail;
	}
	/* Same owner as the source, so the VMM's user can use the copy;
	 * best effort: the snapshot is no less consistent without it. */
	if (fchown(fd, st.st_uid, st.st_gid))
		(void)0;
	/* The fsync waits for wpsd_txn_sync(), after the resume: a few ms
	 * of log force per target that the guest need not sit through. */
	a->dst_fd = fd;
	return 0;
fail:
	close(fd);
	unlink(a->target);
	return ret;
}

/* Child of fork() in a multithreaded process: async-signal-safe only. */
static void __attribute__((noreturn)) hook_child(char *const argv[],
						 char *const envp[], int out)
{
	static const char msg[] = "wpsnapd: exec of the hook failed\n";
	sigset_t none;
	int nul;

	setpgid(0, 0);             /* a timeout kills the whole group */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);   /* the daemon blocks SIGTERM */
	signal(SIGPIPE, SIG_DFL);                /* and ignores SIGPIPE */
	nul = open("/dev/null", O_RDONLY);
	if (nul >= 0 && nul != 0)
		dup2(nul, 0);
	dup2(out, 1);
	dup2(out, 2);
	/* The daemon's uffds, memfds and sockets are not the hook's. */
	syscall(SYS_close_range, 3u, ~0u, 0u);
	if (chdir("/"))
		_exit(127);
	execve(argv[0], argv, envp);
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(127);
	_exit(127);
}

/* Keep the tail of the hook's output, as the cause of a failure.
 * True at end of file (nobody holds the write side any more). */
static bool hook_drain(int fd, char *tail, size_t *tlen)
{
	char buf[4096];
	ssize_t n;
	size_t k;

	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0)
			return false;   /* EAGAIN: more may come */
		k = (size_t)n;
		if (k >= HOOK_OUT_KEEP) {
			memcpy(tail, buf + k - HOOK_OUT_KEEP, HOOK_OUT_KEEP);
			*tlen = HOOK_OUT_KEEP;
		} else {
			if (*tlen + k > HOOK_OUT_KEEP) {
				size_t drop = *tlen + k - HOOK_OUT_KEEP;

				memmove(tail, tail + drop, *tlen - drop);
				*tlen -= drop;
			}
			memcpy(tail + *tlen, buf, k);
			*tlen += k;
		}
	}
	return true;
}

/* The last non-empty line of the hook's output, printable, for a cause. */
static void hook_last_line(char *tail, size_t tlen, char *line, size_t len)
{
	size_t end = tlen, start, i, o = 0;

	while (end && (tail[end - 1] == '\n' || tail[end - 1] == '\r'))
		end--;
	start = end;
	while (start && tail[start - 1] != '\n')
		start--;
	for (i = start; i < end && o + 1 < len; i++)
		line[o++] = tail[i] >= 0x20 && tail[i] < 0x7f ? tail[i] : '?';
	line[o] = '\0';
}

/*
 * Run argv, no shell, environment WPSNAP_GUEST/WPSNAP_ACTION/WPSNAP_PHASE
 * and a fixed PATH; success is exit status 0 within timeout_ms. stop() is
 * asked every HOOK_POLL_MS so a cancel does not wait for the timeout.
 */
static int hook_run(const struct wpsd_txn *t, unsigned int idx, char *const argv[],
		    const char *phase, unsigned int timeout_ms,
		    wpsd_txn_stop_fn stop, void *arg, char *why, size_t len)
{
	char env_guest[96], env_action[48], env_phase[48];
	char *envp[] = {
		(char *)"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		env_guest, env_action, env_phase, NULL,
	};
	char tail[HOOK_OUT_KEEP], line[HOOK_OUT_KEEP + 1];
	struct timespec deadline = wps_deadline_from_ms(timeout_ms);
	int p[2] = { -1, -1 }, pidfd = -1, status, ret = 0, ms;
	struct pollfd pfd[2];
	bool exited = false, timed_out = false, stopped = false, eof = false;
	size_t tlen = 0;
	pid_t pid;

	snprintf(env_guest, sizeof(env_guest), "WPSNAP_GUEST=%s", t->guest);
	snprintf(env_action, sizeof(env_action), "WPSNAP_ACTION=%u", idx);
	snprintf(env_phase, sizeof(env_phase), "WPSNAP_PHASE=%s", phase);
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK)) {
		ret = -errno;
		snprintf(why, len, "pipe: %s", strerror(-ret));
		return ret;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		snprintf(why, len, "fork: %s", strerror(-ret));
		goto out;
	}
	if (!pid)
		hook_child(argv, envp, p[1]);
	setpgid(pid, pid);         /* both sides: no race with our kill */
	close(p[1]);
	p[1] = -1;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		ret = -errno;
		snprintf(why, len, "pidfd_open: %s", strerror(-ret));
		kill(pid, SIGKILL);
		goto reap;
	}
	while (!exited) {
		ms = wps_deadline_poll_ms(&deadline);
		if (!ms) {
			timed_out = true;
			break;
		}
		if (stop && stop(arg)) {
			stopped = true;
			break;
		}
		pfd[0] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
		/* A hook that closed its output early must not make us spin
		 * on POLLHUP: after EOF only the pidfd is watched. */
		pfd[1] = (struct pollfd){ .fd = eof ? -1 : p[0], .events = POLLIN };
		if (poll(pfd, 2, ms < HOOK_POLL_MS ? ms : HOOK_POLL_MS) < 0 &&
		    errno != EINTR) {
			ret = -errno;
			snprintf(why, len, "poll: %s", strerror(-ret));
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			goto reap;
		}
		if (pfd[1].revents && hook_drain(p[0], tail, &tlen))
			eof = true;
		if (pfd[0].revents & POLLIN)
			exited = true;
	}
	if (!exited) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
	}
reap:
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!eof)
		hook_drain(p[0], tail, &tlen);   /* what it wrote last */
	if (ret)
		goto out;
	hook_last_line(tail, tlen, line, sizeof(line));
	if (stopped) {
		ret = -ECANCELED;
		snprintf(why, len, "%s: cancelled while running", argv[0]);
	} else if (timed_out) {
		ret = -ETIMEDOUT;
		snprintf(why, len, "%s timed out after %u ms (killed)", argv[0],
			 timeout_ms);
	} else if (WIFEXITED(status) && !WEXITSTATUS(status)) {
		ret = 0;
	} else if (WIFEXITED(status)) {
		ret = -EIO;
		snprintf(why, len, "%s exited with status %d%s%s", argv[0],
			 WEXITSTATUS(status), line[0] ? ": " : "", line);
	} else {
		ret = -EIO;
		snprintf(why, len, "%s killed by signal %d%s%s", argv[0],
			 WIFSIGNALED(status) ? WTERMSIG(status) : 0,
			 line[0] ? ": " : "", line);
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	if (p[0] >= 0)
		close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
	return ret;
}

void wpsd_txn_prepare(struct wpsd_txn *t)
{
	unsigned int i;

	for (i = 0; i < t->nr; i++)
		if (t->a[i].type == WPSD_TXN_REFLINK)
			sync_file_range(t->a[i].src_fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
					SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

static int reflink_sync(struct wpsd_txn_action *a, char *why, size_t len)
{
	int dfd, ret = 0;

	if (fsync(a->dst_fd)) {
		ret = -errno;
		snprintf(why, len, "fsync %s: %s", a->target, strerror(-ret));
		return ret;
	}
	close(a->dst_fd);
	a->dst_fd = -1;
	/* The name is part of the snapshot: make it durable too. */
	dfd = open(a->target_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;   /* cannot open it: nothing we could sync anyway */
	if (fsync(dfd)) {
		ret = -errno;
		snprintf(why, len, "fsync %s: %s", a->target_dir, strerror(-ret));
	}
	close(dfd);
	return ret;
}

int wpsd_txn_sync(struct wpsd_txn *t, char *cause, size_t len)
{
	uint64_t t0 = wps_now_ns();
	char why[400];
	unsigned int i;
	int ret = 0;

	for (i = 0; i < t->nr && !ret; i++) {
		struct wpsd_txn_action *a = &t->a[i];

		if (a->type != WPSD_TXN_REFLINK || !a->done || a->dst_fd < 0)
			continue;
		ret = reflink_sync(a, why, sizeof(why));
		if (ret) {
			t->failed = (int)i;
			snprintf(cause, len, "action %u (disk-reflink): %s", i, why);
		}
	}
	t->sync_ns = wps_now_ns() - t0;
	return ret;
}

int wpsd_txn_commit(struct wpsd_txn *t, wpsd_txn_stop_fn stop, void *arg,
		    char *cause, size_t len)
{
	uint64_t t0 = wps_now_ns(), ta;
	char why[400];
	unsigned int i;
	int ret = 0;

	for (i = 0; i < t->nr; i++) {
		struct wpsd_txn_action *a = &t->a[i];

		if (a->type == WPSD_TXN_MEMORY)
			continue;
		why[0] = '\0';
		ta = wps_now_ns();
		if (stop && stop(arg)) {
			ret = -ECANCELED;
			snprintf(why, sizeof(why), "cancelled before it ran");
		} else if (a->type == WPSD_TXN_REFLINK) {
			ret = reflink_do(a, why, sizeof(why));
		} else {
			ret = hook_run(t, i, a->argv, "commit", a->timeout_ms,
				       stop, arg, why, sizeof(why));
		}
		a->ns = wps_now_ns() - ta;
		if (ret) {
			t->failed = (int)i;
			snprintf(cause, len, "action %u (%s): %s", i,
				 wpsd_txn_type_name(a->type), why);
			break;
		}
		a->done = true;
	}
	t->disk_ns = wps_now_ns() - t0;
	return ret;
}

void wpsd_txn_rollback(struct wpsd_txn *t, char *cause, size_t len)
{
	unsigned int i, n = 0;
	char why[400];
	int ret;

	for (i = t->nr; i-- > 0; ) {
		struct wpsd_txn_action *a = &t->a[i];

		if (!a->done)
			continue;
		a->done = false;
		ret = 0;
		why[0] = '\0';
		if (a->type == WPSD_TXN_REFLINK) {
			if (a->dst_fd >= 0) {
				close(a->dst_fd);
				a->dst_fd = -1;
			}
			if (unlink(a->target) && errno != ENOENT) {
				ret = -errno;
				snprintf(why, sizeof(why), "cannot delete %s: %s",
					 a->target, strerror(-ret));
			}
		} else if (a->rollback) {
			/* No stop callback: a rollback is not cancellable. */
			ret = hook_run(t, i, a->rollback, "rollback", a->timeout_ms,
				       NULL, NULL, why, sizeof(why));
		}
		if (ret)
			append(cause, len, "; rollback of action %u (%s) FAILED: %s",
			       i, wpsd_txn_type_name(a->type), why);
		else
			n++;
		t->undone++;
	}
	if (n)
		append(cause, len, "; rolled back %u action(s)", n);
}

json_t *wpsd_txn_result(const struct wpsd_txn *t)
{
	json_t *arr = json_array(), *o;
	unsigned int i;

	for (i = 0; i < t->nr; i++) {
		const struct wpsd_txn_action *a = &t->a[i];

		o = json_pack("{s:s}", "type", wpsd_txn_type_name(a->type));
		if (a->type != WPSD_TXN_MEMORY)
			json_object_set_new(o, "ns", json_integer((json_int_t)a->ns));
		if (a->type == WPSD_TXN_REFLINK)
			json_object_set_new(o, "target", json_string(a->target));
		json_array_append_new(arr, o);
	}
	return arr;
}
