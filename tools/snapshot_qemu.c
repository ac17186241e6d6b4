/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap snapshot --qemu QMP_SOCKET: a live snapshot of the guest RAM of a
 * QEMU that knows nothing about wpsnap (docs/QEMU.md).
 *
 * This file owns the conversation with QEMU (a QMP client over its Unix
 * socket), the discovery of the guest RAM in QEMU's address space, the
 * layout blob that lets a reader map a guest-physical address to image
 * data (and the reader, --physmem), and one promise: QEMU is never left
 * stopped by us. The process itself is attached, write-protected and
 * copied by <wpsnap/attach.h>, which already undoes all of that on every
 * failure, and which the kernel undoes if we die (a tracer's death
 * detaches its tracees; closing the last userfaultfd reference
 * unprotects and unregisters everything). Only a QMP `stop` outlives us,
 * so a watchdog process, forked before anything else is held, shares the
 * QMP connection and sends `cont` if we die while the guest may be
 * stopped by us.
 *
 * The sequence: QMP (QEMU's pid from the socket's peer credentials, its
 * RAM blocks from `info ramblock`, the guest-physical map from `info
 * mtree -f`), the mappings of the blocks from /proc/PID/smaps (QEMU 7.2
 * does not report host addresses: a block is found by its name when its
 * memfd carries it, otherwise by its exact size among the mappings QEMU
 * made MADV_DONTFORK, which it does for every RAM block), attach, `stop`,
 * freeze, `cont`, copy. The guest is stopped only from `stop` to `cont`.
 * A guest that was paused already is left paused: the caller decides
 * when it runs (the integration test compares the image with a pmemsave
 * taken in that pause). With --no-stop there is no QMP stop at all: the
 * freeze stops every thread of QEMU (ptrace) for its last step only, so
 * the guest pauses for far less, and the RAM is still one instant of the
 * whole process; what QMP stop adds is QEMU's own quiescing (block I/O
 * drained, device state settled), which a RAM-only image does not need.
 * Why the QMP stop cannot be as short: the library's attach runs its
 * converging protection rounds before its own pause, and offers no hook
 * to stop the guest after them, so `stop` must precede the whole freeze.
 *
 * $WPSNAP_QEMU_TEST_KILL=connected|attached|stopped|frozen|copying makes
 * us SIGKILL ourselves at that point: the integration test uses it to
 * check that QEMU survives our death wherever it happens.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/attach.h>
#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "src/clock.h"
#include "tools/snapshot_qemu.h"

#define MiB (1024.0 * 1024.0)
#define PAGE 4096u
#define QMP_TIMEOUT_MS 30000
#define MAX_BLOCKS 64
#define MAX_PHYS 256
#define LAYOUT_FORMAT "wpsnap-qemu-layout-1"

/* ------------------------------------------------------------------ */
/* QMP                                                                 */
/* ------------------------------------------------------------------ */

struct qmp {
	int fd;
	pid_t pid;              /* QEMU, from the socket's credentials */
	const char *path;
	char *buf;              /* received, not yet parsed */
	size_t len, cap;
	unsigned int next_id;
};

/* One line (a QMP message) into *line, malloc'ed; waits at most ms. */
static int qmp_line(struct qmp *q, char **line, int ms)
{
	uint64_t deadline = wps_now_ns() + (uint64_t)ms * 1000000ull;

	for (;;) {
		char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		int64_t left;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - q->buf);

			*line = strndup(q->buf, l);
			if (!*line)
				return -ENOMEM;
			memmove(q->buf, nl + 1, q->len - l - 1);
			q->len -= l + 1;
			return 0;
		}
		if (q->cap - q->len < 65536) {
			char *nb = realloc(q->buf, q->cap + 65536);

			if (!nb)
				return -ENOMEM;
			q->buf = nb;
			q->cap += 65536;
		}
		left = (int64_t)(deadline - wps_now_ns()) / 1000000;
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ETIMEDOUT;
		n = recv(q->fd, q->buf + q->len, q->cap - q->len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -ECONNRESET;
		q->len += (size_t)n;
	}
}

static int send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = send(fd, s, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Run one command: args is stolen (NULL: none); *ret (optional) gets the
 * "return" value. Events and replies to others are skipped. A QMP error
 * is -EIO with QEMU's description on stderr.
 */
static int qmp_call(struct qmp *q, const char *cmd, json_t *args,
		    json_t **ret)
{
	char id[32], *msg = NULL, *line = NULL;
	json_t *req, *rep = NULL;
	int err;

	snprintf(id, sizeof(id), "wps-%u", ++q->next_id);
	req = json_pack("{s:s, s:s}", "execute", cmd, "id", id);
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
	/* One write per message: the watchdog may add its own after ours. */
	err = send_all(q->fd, msg, strlen(msg));
	if (!err)
		err = send_all(q->fd, "\n", 1);
	free(msg);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: QMP %s: sending to %s: %s\n",
			cmd, q->path, strerror(-err));
		return err;
	}
	for (;;) {
		json_t *rid, *r, *e;

		free(line);
		line = NULL;
		err = qmp_line(q, &line, QMP_TIMEOUT_MS);
		if (err) {
			fprintf(stderr, "wpsnap snapshot: QMP %s: no answer from "
				"%s: %s\n", cmd, q->path, err == -ECONNRESET ?
				"QEMU closed the connection" : strerror(-err));
			break;
		}
		json_decref(rep);
		rep = json_loads(line, 0, NULL);
		if (!rep)
			continue;       /* not ours to judge */
		rid = json_object_get(rep, "id");
		if (!json_is_string(rid) || strcmp(json_string_value(rid), id))
			continue;
		r = json_object_get(rep, "return");
		e = json_object_get(rep, "error");
		if (r) {
			if (ret)
				*ret = json_incref(r);
			err = 0;
		} else {
			const char *d = json_string_value(
				json_object_get(e, "desc"));

			fprintf(stderr, "wpsnap snapshot: QMP %s refused: %s\n",
				cmd, d ? d : line);
			err = -EIO;
		}
		break;
	}
	free(line);
	json_decref(rep);
	return err;
}

/* An HMP command through QMP; *out is malloc'ed text. */
static int qmp_hmp(struct qmp *q, const char *cmdline, char **out)
{
	json_t *r = NULL;
	int err;

	err = qmp_call(q, "human-monitor-command",
		       json_pack("{s:s}", "command-line", cmdline), &r);
	if (err)
		return err;
	if (!json_is_string(r)) {
		json_decref(r);
		fprintf(stderr, "wpsnap snapshot: HMP '%s': no text in the "
			"answer\n", cmdline);
		return -EPROTO;
	}
	*out = strdup(json_string_value(r));
	json_decref(r);
	return *out ? 0 : -ENOMEM;
}

static void qmp_close(struct qmp *q)
{
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	free(q->buf);
	q->buf = NULL;
}

static int qmp_open(struct qmp *q, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	char *greeting = NULL;
	int err;

	memset(q, 0, sizeof(*q));
	q->path = path;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "wpsnap snapshot: QMP socket path too long: "
			"%s\n", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (q->fd < 0)
		return -errno;
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		err = -errno;
		fprintf(stderr, "wpsnap snapshot: cannot connect to QMP socket "
			"%s: %s\n", path, strerror(errno));
		goto fail;
	}
	/* QEMU itself, not a proxy: the process we will attach to. */
	if (getsockopt(q->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) ||
	    cred.pid <= 0) {
		err = -ENOTSUP;
		fprintf(stderr, "wpsnap snapshot: cannot tell which process "
			"serves %s\n", path);
		goto fail;
	}
	q->pid = cred.pid;
	/* QEMU serves one QMP client at a time: a busy socket accepts our
	 * connection but says nothing until the other client leaves. */
	err = qmp_line(q, &greeting, 5000);
	if (err == -ETIMEDOUT)
		fprintf(stderr, "wpsnap snapshot: no QMP greeting on %s in 5 s "
			"(another client connected? QEMU serves one at a time "
			"per socket: give QEMU another -qmp socket)\n", path);
	else if (err)
		fprintf(stderr, "wpsnap snapshot: QMP greeting on %s: %s\n",
			path, strerror(-err));
	else if (!strstr(greeting, "\"QMP\"")) {
		fprintf(stderr, "wpsnap snapshot: %s does not speak QMP\n",
			path);
		err = -EPROTO;
	}
	free(greeting);
	if (!err)
		err = qmp_call(q, "qmp_capabilities", NULL, NULL);
	if (err)
		goto fail;
	return 0;
fail:
	qmp_close(q);
	return err;
}

/* ------------------------------------------------------------------ */
/* The watchdog: `cont` if we die while the guest may be stopped by us  */
/* ------------------------------------------------------------------ */

#define WD_STOPPING 'S'  /* about to stop, or stopped */
#define WD_RUNNING 'R'   /* continued (or never stopped by us) */
#define WD_QUIT 'Q'      /* we finished: nothing to do */

struct watchdog {
	pid_t pid;
	int fd;                 /* write end of its pipe */
};

static void close_all_but(int a, int b)
{
	int lo = a < b ? a : b, hi = a < b ? b : a, fd;

	/* stderr stays, for its one message */
	for (fd = 3; fd < 1024; fd++)
		if (fd != lo && fd != hi)
			close(fd);
}

/* The child: async-signal-safe calls only (we forked a process that may
 * have threads of a sanitizer runtime). */
static __attribute__((noreturn)) void watchdog_run(int qfd, int rfd)
{
	static const char cont[] =
		"{\"execute\":\"cont\",\"id\":\"wps-watchdog\"}\n";
	static const char msg[] =
		"wpsnap: the snapshot process died while QEMU was stopped: "
		"continued it\n";
	char state = WD_RUNNING, c, buf[4096];
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

		if (n == 1 && c == WD_QUIT)
			_exit(0);
		if (n == 1) {
			state = c;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		break;          /* EOF: our parent is gone */
	}
	if (state != WD_STOPPING)
		_exit(0);
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

static int watchdog_start(struct watchdog *w, int qfd)
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
		watchdog_run(qfd, p[0]);
	}
	close(p[0]);
	w->fd = p[1];
	return 0;
}

static void watchdog_tell(struct watchdog *w, char state)
{
	ssize_t n;

	if (w->fd < 0)
		return;
	do
		n = write(w->fd, &state, 1);
	while (n < 0 && errno == EINTR);
}

static void watchdog_stop(struct watchdog *w)
{
	if (w->fd >= 0) {
		watchdog_tell(w, WD_QUIT);
		close(w->fd);
		w->fd = -1;
	}
	if (w->pid > 0)
		while (waitpid(w->pid, NULL, 0) < 0 && errno == EINTR)
			;
	w->pid = -1;
}

static void kill_point(const char *name)
{
	const char *k = getenv("WPSNAP_QEMU_TEST_KILL");

	if (k && !strcmp(k, name)) {
		fflush(stdout);
		raise(SIGKILL);
	}
}

/* ------------------------------------------------------------------ */
/* RAM discovery                                                       */
/* ------------------------------------------------------------------ */

struct block {
	char name[128];
	uint64_t ram_addr, used, max;
	uint32_t page_size;
	bool guest_ram;         /* mapped as writable RAM in the guest */
	bool snap;              /* chosen for the image */
	uint64_t host_addr;     /* of its mapping; 0: not found */
	bool memfd;
};

struct phys {
	uint64_t gpa, size, offset;
	char mr[128];           /* memory region name as mtree shows it */
	int block;              /* index in blocks, -1: none */
	bool readonly;
};

struct layout {
	struct block b[MAX_BLOCKS];
	unsigned int nb;
	struct phys p[MAX_PHYS];
	unsigned int np;
	char version[64];
};

/* Copy the line at *text into buf (NUL-terminated, without its \r\n) and
 * advance *text past it; false at the end. */
static bool next_line(const char **text, char *buf, size_t size)
{
	const char *s = *text, *nl;
	size_t len;

	if (!s || !*s)
		return false;
	nl = strchr(s, '\n');
	len = nl ? (size_t)(nl - s) : strlen(s);
	*text = nl ? nl + 1 : s + len;
	if (len && s[len - 1] == '\r')
		len--;
	if (len >= size)
		len = size - 1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return true;
}

static uint64_t psize_bytes(unsigned int n, const char *unit)
{
	if (!strcmp(unit, "KiB"))
		return (uint64_t)n << 10;
	if (!strcmp(unit, "MiB"))
		return (uint64_t)n << 20;
	if (!strcmp(unit, "GiB"))
		return (uint64_t)n << 30;
	return 0;
}

/* `info ramblock`: "NAME PSIZE UNIT 0xOFFSET 0xUSED 0xTOTAL" per block. */
static int parse_ramblocks(struct layout *l, const char *text)
{
	char line[512];

	while (next_line(&text, line, sizeof(line))) {
		char name[128], unit[8];
		uint64_t off, used, max;
		unsigned int n;

		if (sscanf(line, "%127s %u %7s 0x%" SCNx64 " 0x%" SCNx64
			   " 0x%" SCNx64, name, &n, unit, &off, &used,
			   &max) == 6) {
			struct block *b;

			if (l->nb == MAX_BLOCKS) {
				fprintf(stderr, "wpsnap snapshot: QEMU has more "
					"than %d RAM blocks\n", MAX_BLOCKS);
				return -E2BIG;
			}
			b = &l->b[l->nb++];
			memset(b, 0, sizeof(*b));
			snprintf(b->name, sizeof(b->name), "%s", name);
			b->ram_addr = off;
			b->used = used;
			b->max = max;
			b->page_size = (uint32_t)psize_bytes(n, unit);
		}
	}
	if (!l->nb) {
		fprintf(stderr, "wpsnap snapshot: QEMU reported no RAM blocks "
			"(info ramblock)\n");
		return -ENOENT;
	}
	return 0;
}

/* A RAM block's idstr is the region's name, or "DEVICE-PATH/name". */
static int block_of_mr(const struct layout *l, const char *mr)
{
	size_t ml = strlen(mr);
	unsigned int i;

	for (i = 0; i < l->nb; i++) {
		const char *n = l->b[i].name;
		size_t nl = strlen(n);

		if (!strcmp(n, mr) || (nl > ml + 1 && n[nl - ml - 1] == '/' &&
				       !strcmp(n + nl - ml, mr)))
			return (int)i;
	}
	return -1;
}

/*
 * `info mtree -f`, the flat view of address space "memory": lines
 * "START-END (prio P, TYPE): NAME [@OFFSET] ..." where TYPE ram or rom
 * is guest RAM (rom: mapped read-only, e.g. the BIOS shadow). A block
 * seen as ram there is what the guest writes: those are snapshotted.
 */
static int parse_mtree(struct layout *l, const char *text)
{
	bool in_memory = false, in_list = false;
	char line[512];

	while (next_line(&text, line, sizeof(line))) {
		uint64_t start, end, off = 0;
		char type[16], mr[128];
		const char *at;
		int prio, pos = 0;

		if (!strncmp(line, "FlatView #", 10)) {
			in_memory = in_list = false;
		} else if (!in_list && !strncmp(line, " AS \"memory\"", 12)) {
			in_memory = true;
		} else if (strstr(line, "Root memory region:")) {
			in_list = true;
		} else if (in_memory && in_list &&
			   sscanf(line, " %" SCNx64 "-%" SCNx64 " (prio %d, "
				  "%15[^)]): %127s%n", &start, &end, &prio, type,
				  mr, &pos) == 5) {
			struct phys *p;
			int b;

			if (strcmp(type, "ram") && strcmp(type, "rom"))
				continue;
			b = block_of_mr(l, mr);
			if (b < 0)
				continue;       /* e.g. a ram device */
			at = strstr(line + pos, " @");
			if (at)
				sscanf(at + 2, "%" SCNx64, &off);
			if (l->np == MAX_PHYS) {
				fprintf(stderr, "wpsnap snapshot: more than %d "
					"guest-physical RAM ranges\n", MAX_PHYS);
				return -E2BIG;
			}
			p = &l->p[l->np++];
			p->gpa = start;
			p->size = end - start + 1;
			p->offset = off;
			p->block = b;
			p->readonly = !strcmp(type, "rom");
			snprintf(p->mr, sizeof(p->mr), "%s", mr);
			if (!p->readonly)
				l->b[b].guest_ram = true;
		}
	}
	if (!l->np) {
		fprintf(stderr, "wpsnap snapshot: no guest RAM in QEMU's "
			"address space \"memory\" (info mtree -f)\n");
		return -ENOENT;
	}
	return 0;
}

struct vma {
	uint64_t start, end;
	char perms[5];
	uint64_t inode;
	char path[256];
	bool dontfork;          /* VmFlags "dc": QEMU's RAM blocks */
	bool used;
};

static int read_smaps(pid_t pid, struct vma **out, unsigned int *nr)
{
	struct vma *v = NULL, *nv;
	unsigned int n = 0, cap = 0;
	char path[64], *line = NULL;
	size_t llen = 0;
	FILE *f;
	int err = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f) {
		err = -errno;
		fprintf(stderr, "wpsnap snapshot: cannot read %s: %s\n", path,
			strerror(errno));
		return err;
	}
	while (getline(&line, &llen, f) > 0) {
		uint64_t start, end, off, ino;
		char perms[5];
		int pos = 0;

		if (!strncmp(line, "VmFlags:", 8)) {
			if (n && strstr(line, " dc"))
				v[n - 1].dontfork = true;
			continue;
		}
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64
			   " %*s %" SCNu64 " %n", &start, &end, perms, &off,
			   &ino, &pos) != 5 || !pos)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 128;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				err = -ENOMEM;
				goto out;
			}
			v = nv;
		}
		memset(&v[n], 0, sizeof(v[n]));
		v[n].start = start;
		v[n].end = end;
		v[n].inode = ino;
		memcpy(v[n].perms, perms, sizeof(perms));
		snprintf(v[n].path, sizeof(v[n].path), "%s", line + pos);
		v[n].path[strcspn(v[n].path, "\n")] = '\0';
		n++;
	}
out:
	free(line);
	fclose(f);
	if (err) {
		free(v);
		return err;
	}
	*out = v;
	*nr = n;
	return 0;
}

/* Could v hold a RAM block: writable, not executable, and private
 * anonymous or shared (memfd, tmpfs or hugetlbfs file). */
static bool ram_like(const struct vma *v)
{
	if (v->perms[0] != 'r' || v->perms[1] != 'w' || v->perms[2] == 'x')
		return false;
	if (v->perms[3] == 's')
		return true;
	return !v->inode && !v->path[0];
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/*
 * The mapping of each chosen block: a memfd named after it if QEMU named
 * it so; otherwise the only unused MADV_DONTFORK mapping of exactly its
 * size (QEMU maps each block alone, between guard pages).
 */
static int find_mappings(struct layout *l, pid_t pid)
{
	struct vma *v = NULL;
	unsigned int nv = 0, i, j, pass;
	int err;

	err = read_smaps(pid, &v, &nv);
	if (err)
		return err;
	for (pass = 0; pass < 2 && !err; pass++) {
		for (i = 0; i < l->nb; i++) {
			struct block *b = &l->b[i];
			uint64_t size = round_up(b->max, b->page_size ?
						 b->page_size : PAGE);
			char want[160];
			int found = -1, count = 0;

			if (!b->snap || b->host_addr)
				continue;
			snprintf(want, sizeof(want), "/memfd:%s", b->name);
			for (j = 0; j < nv; j++) {
				if (v[j].used || !ram_like(&v[j]) ||
				    v[j].end - v[j].start != size)
					continue;
				if (!pass && !strncmp(v[j].path, want,
						      strlen(want)) &&
				    (!v[j].path[strlen(want)] ||
				     v[j].path[strlen(want)] == ' ')) {
					found = (int)j;
					count = 1;
					break;
				}
				if (pass && v[j].dontfork) {
					found = (int)j;
					count++;
				}
			}
			if (!pass && count != 1)
				continue;
			if (count > 1) {
				fprintf(stderr, "wpsnap snapshot: %d mappings of "
					"QEMU (pid %d) could hold RAM block %s "
					"(%" PRIu64 " bytes): cannot tell which\n",
					count, (int)pid, b->name, size);
				err = -ENOTUNIQ;
				break;
			}
			if (!count) {
				fprintf(stderr, "wpsnap snapshot: no mapping of "
					"QEMU (pid %d) holds RAM block %s (%" PRIu64
					" bytes, private anonymous or shared "
					"memory)\n", (int)pid, b->name, size);
				err = -ENOENT;
				break;
			}
			v[found].used = true;
			b->host_addr = v[found].start;
			b->memfd = !strncmp(v[found].path, "/memfd:", 7);
		}
	}
	free(v);
	return err;
}

static int discover(struct qmp *q, struct layout *l)
{
	char *text = NULL;
	json_t *ver = NULL;
	unsigned int i;
	int err;

	memset(l, 0, sizeof(*l));
	if (!qmp_call(q, "query-version", NULL, &ver)) {
		json_t *qv = json_object_get(ver, "qemu");

		snprintf(l->version, sizeof(l->version), "%d.%d.%d",
			 (int)json_integer_value(json_object_get(qv, "major")),
			 (int)json_integer_value(json_object_get(qv, "minor")),
			 (int)json_integer_value(json_object_get(qv, "micro")));
		json_decref(ver);
	}
	err = qmp_hmp(q, "info ramblock", &text);
	if (!err)
		err = parse_ramblocks(l, text);
	free(text);
	text = NULL;
	if (!err)
		err = qmp_hmp(q, "info mtree -f", &text);
	if (!err)
		err = parse_mtree(l, text);
	free(text);
	if (err)
		return err;
	for (i = 0; i < l->nb; i++)
		l->b[i].snap = l->b[i].guest_ram;
	return find_mappings(l, q->pid);
}

/* The blob: QEMU's blocks (with the image region that holds each) and
 * the guest-physical map. */
static char *layout_json(const struct layout *l)
{
	json_t *o = json_object(), *blocks = json_array(),
	       *phys = json_array();
	unsigned int i, r = 0;
	char *s;

	for (i = 0; i < l->nb; i++) {
		const struct block *b = &l->b[i];

		json_array_append_new(blocks, json_pack(
			"{s:s, s:I, s:I, s:I, s:I, s:I, s:o}",
			"name", b->name,
			"ram_addr", (json_int_t)b->ram_addr,
			"used", (json_int_t)b->used,
			"max", (json_int_t)b->max,
			"page_size", (json_int_t)b->page_size,
			"host_addr", (json_int_t)b->host_addr,
			"region", b->snap ? json_integer(r) : json_null()));
		r += b->snap;
	}
	for (i = 0; i < l->np; i++) {
		const struct phys *p = &l->p[i];

		json_array_append_new(phys, json_pack(
			"{s:I, s:I, s:s, s:I, s:b}",
			"gpa", (json_int_t)p->gpa,
			"size", (json_int_t)p->size,
			"block", l->b[p->block].name,
			"offset", (json_int_t)p->offset,
			"readonly", p->readonly));
	}
	json_object_set_new(o, "format", json_string(LAYOUT_FORMAT));
	json_object_set_new(o, "qemu", json_string(l->version));
	json_object_set_new(o, "blocks", blocks);
	json_object_set_new(o, "physmap", phys);
	s = json_dumps(o, JSON_INDENT(1));
	json_decref(o);
	return s;
}

/* ------------------------------------------------------------------ */
/* The snapshot                                                        */
/* ------------------------------------------------------------------ */

struct run {
	struct qmp q;
	struct watchdog wd;
	struct layout l;
	bool was_running, stopped;
	uint64_t t_stop, t_stopped, t_frozen, t_thawed, t_cont, t_start;
};

static int guest_stop(struct run *r)
{
	int err;

	watchdog_tell(&r->wd, WD_STOPPING);
	r->t_stop = wps_now_ns();
	err = qmp_call(&r->q, "stop", NULL, NULL);
	r->t_stopped = wps_now_ns();
	/* On an error the guest may still have stopped: cont it anyway. */
	r->stopped = true;
	return err;
}

static int guest_cont(struct run *r)
{
	int err;

	if (!r->stopped)
		return 0;
	err = qmp_call(&r->q, "cont", NULL, NULL);
	r->t_cont = wps_now_ns();
	if (!err) {
		r->stopped = false;
		watchdog_tell(&r->wd, WD_RUNNING);
	}
	return err;
}

/* The snapshot's outer pause (<wpsnap/attach.h>): QMP stop right before
 * the freeze's own stop of QEMU's threads, cont once they are let go. */
static int qemu_pause(void *arg)
{
	struct run *r = arg;
	int err = guest_stop(r);

	kill_point("stopped");
	return err;
}

static int qemu_resume(void *arg)
{
	struct run *r = arg;

	r->t_thawed = wps_now_ns();   /* QEMU's threads let go; cont follows */
	return guest_cont(r);
}

static void report(const struct run *r, const struct wps_qemu_opts *o,
		   const struct wps_snapshot_stats *st,
		   const struct wps_attach_info *ai)
{
	double pause = !r->was_running ? 0 : o->no_stop ?
		       ai->freeze_stop_ns / 1e6 : (r->t_cont - r->t_stop) / 1e6;
	uint64_t ram = 0;
	unsigned int i;
	json_t *j;
	char *s;

	for (i = 0; i < r->l.nb; i++)
		if (r->l.b[i].snap)
			ram += round_up(r->l.b[i].used, PAGE);
	if (o->json) {
		j = json_pack(
			"{s:i, s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I,"
			" s:I, s:I, s:I, s:I, s:f, s:f, s:s}",
			"qemu_pid", (int)r->q.pid,
			"paused_by_us", r->was_running && !o->no_stop,
			"pause_ms", pause,
			"stop_ms", r->was_running ?
				(r->t_stopped - r->t_stop) / 1e6 : 0.0,
			"freeze_ms", (r->t_thawed - r->t_stopped) / 1e6,
			"cont_ms", r->was_running ?
				(r->t_cont - r->t_thawed) / 1e6 : 0.0,
			"attach_stop_ms", ai->attach_stop_ns / 1e6,
			"freeze_stop_ms", ai->freeze_stop_ns / 1e6,
			"total_ms", (wps_now_ns() - r->t_start) / 1e6,
			"ram_bytes", (json_int_t)ram,
			"populated_bytes", (json_int_t)st->populated_bytes,
			"image_data_bytes", (json_int_t)st->image_data_bytes,
			"image_file_bytes", (json_int_t)st->image_file_bytes,
			"faults", (json_int_t)st->faults,
			"fault_bytes", (json_int_t)st->fault_bytes,
			"fault_p50_us", st->fault_p50_ns / 1e3,
			"fault_p99_us", st->fault_p99_ns / 1e3,
			"image", o->out);
		s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		if (s)
			printf("%s\n", s);
		free(s);
		json_decref(j);
		return;
	}
	printf("snapshot of QEMU %s (pid %d): %.1f MiB of guest RAM\n",
	       r->l.version, (int)r->q.pid, ram / MiB);
	for (i = 0; i < r->l.nb; i++) {
		const struct block *b = &r->l.b[i];

		if (b->snap)
			printf("  %-24s %012" PRIx64 " %8.1f MiB %s\n", b->name,
			       b->host_addr, b->used / MiB,
			       b->memfd ? "memfd" : "anon");
	}
	if (r->was_running && o->no_stop)
		printf("  guest paused   %.3f ms (no QMP stop: QEMU's threads "
		       "stopped for the freeze)\n", pause);
	else if (r->was_running)
		printf("  guest paused   %.3f ms (stop %.3f, freeze %.3f, cont "
		       "%.3f)\n", pause, (r->t_stopped - r->t_stop) / 1e6,
		       (r->t_thawed - r->t_stopped) / 1e6,
		       (r->t_cont - r->t_thawed) / 1e6);
	else
		printf("  guest was paused already: left paused at the freeze\n");
	printf("  QEMU stopped   %.3f ms to attach, %.3f ms for the freeze\n",
	       ai->attach_stop_ns / 1e6, ai->freeze_stop_ns / 1e6);
	printf("  total          %.1f ms\n", (wps_now_ns() - r->t_start) / 1e6);
	printf("  write faults   %" PRIu64 " serviced in %.1f/%.1f us "
	       "(p50/p99)\n", st->faults, st->fault_p50_ns / 1e3,
	       st->fault_p99_ns / 1e3);
	printf("  image          %.1f MiB data for %.1f MiB populated, file "
	       "%.1f MiB\n", st->image_data_bytes / MiB,
	       st->populated_bytes / MiB, st->image_file_bytes / MiB);
	printf("wrote %s\n", o->out);
}

/* Wait for the copy; under the test hook, die half-way through it. */
static int wait_copy(struct wps_snapshot *snap)
{
	const char *k = getenv("WPSNAP_QEMU_TEST_KILL");

	if (k && !strcmp(k, "copying")) {
		struct wps_progress p;

		for (;;) {
			wps_snapshot_progress(snap, &p);
			if (p.phase != WPS_PHASE_COPYING ||
			    (p.bytes_total && p.bytes_done >= p.bytes_total / 2))
				break;
			usleep(1000);
		}
		kill_point("copying");
	}
	return wps_snapshot_wait(snap);
}

int wps_qemu_snapshot(struct wps_ctx *ctx, const struct wps_qemu_opts *o)
{
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_attach_range ranges[MAX_BLOCKS];
	struct wps_snapshot_stats st;
	struct wps_attach_info ai;
	struct wps_snapshot *snap = NULL;
	struct wps_attach *at = NULL;
	struct run *r;
	json_t *status = NULL;
	unsigned int nr = 0, i;
	char *blob = NULL;
	int err, ret = 1;

	r = calloc(1, sizeof(*r));
	if (!r)
		return 1;
	r->wd.fd = r->wd.pid = -1;
	r->t_start = wps_now_ns();
	if (qmp_open(&r->q, o->qmp_path))
		goto out_free;
	if (qmp_call(&r->q, "query-status", NULL, &status))
		goto out;
	r->was_running = json_is_true(json_object_get(status, "running"));
	json_decref(status);
	if (discover(&r->q, &r->l))
		goto out;
	for (i = 0; i < r->l.nb; i++) {
		const struct block *b = &r->l.b[i];

		if (!b->snap)
			continue;
		ranges[nr].start = b->host_addr;
		ranges[nr].end = b->host_addr + round_up(b->used, b->page_size ?
							 b->page_size : PAGE);
		nr++;
	}
	/* Before anything is held: the watchdog must not inherit the uffd,
	 * which would keep the guest protected after our death. */
	err = watchdog_start(&r->wd, r->q.fd);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: cannot start the watchdog: "
			"%s\n", strerror(-err));
		goto out;
	}
	kill_point("connected");
	err = wps_attach_new(ctx, r->q.pid, ranges, nr, &at);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: cannot attach to QEMU (pid "
			"%d): %s\n", (int)r->q.pid, strerror(-err));
		goto out;
	}
	kill_point("attached");
	so.path = o->out;
	so.flags = o->flags;
	so.fault_window = o->fault_window;
	if (r->was_running && !o->no_stop) {
		so.pause = qemu_pause;
		so.resume = qemu_resume;
		so.pause_arg = r;
	}
	err = wps_attach_snapshot_new(at, &so, &snap);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: preparing the snapshot of QEMU "
			"(pid %d): %s\n", (int)r->q.pid, strerror(-err));
		goto out;
	}
	blob = layout_json(&r->l);
	err = blob ? wps_snapshot_add_blob(snap, WPS_QEMU_LAYOUT_BLOB, blob,
					   strlen(blob)) : -ENOMEM;
	if (err) {
		fprintf(stderr, "wpsnap snapshot: recording the guest layout: "
			"%s\n", strerror(-err));
		goto out;
	}
	if (!so.pause)
		r->t_stop = r->t_stopped = wps_now_ns();
	err = wps_snapshot_freeze(snap);   /* QMP stop and cont inside */
	r->t_frozen = wps_now_ns();
	if (!so.pause)
		r->t_thawed = r->t_cont = r->t_frozen;
	if (err) {
		fprintf(stderr, "wpsnap snapshot: freezing QEMU (pid %d): %s\n",
			(int)r->q.pid, wps_attach_exited(at) ?
			"QEMU exited" : strerror(-err));
		goto out;
	}
	kill_point("frozen");
	if (r->stopped && guest_cont(r))   /* a cont that failed in the freeze */
		goto out;
	/* The caller that paused the guest itself may let it run now. */
	printf("frozen: the image is the guest RAM of this instant\n");
	fflush(stdout);
	err = wait_copy(snap);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: QEMU (pid %d): %s\n",
			(int)r->q.pid, wps_attach_exited(at) ?
			"QEMU exited during the copy" : strerror(-err));
		goto out;
	}
	wps_snapshot_stats(snap, &st);
	wps_attach_get_info(at, &ai);
	report(r, o, &st, &ai);
	ret = 0;
out:
	/* A failure between stop and cont: the guest runs again before
	 * anything else (the attach object lets go of QEMU itself). */
	if (r->stopped && guest_cont(r))
		fprintf(stderr, "wpsnap snapshot: QEMU (pid %d) may still be "
			"stopped: resume it with the QMP command cont\n",
			(int)r->q.pid);
	wps_snapshot_free(snap);
	wps_attach_free(at);
	free(blob);
	watchdog_stop(&r->wd);
	qmp_close(&r->q);
out_free:
	free(r);
	return ret;
}

/* ------------------------------------------------------------------ */
/* --physmem: the guest-physical view of an image                      */
/* ------------------------------------------------------------------ */

static bool all_zero(const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static int find_layout(struct wps_image *img, const char *image, json_t **out)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	unsigned int i;

	for (i = 0; i < in->nr_blobs; i++) {
		const char *name;
		const void *data;
		size_t len;
		json_error_t je;

		if (wps_image_get_blob(img, i, &name, &data, &len) ||
		    strcmp(name, WPS_QEMU_LAYOUT_BLOB))
			continue;
		*out = json_loadb(data, len, 0, &je);
		if (!*out || strcmp(json_string_value(json_object_get(
				*out, "format")) ?: "", LAYOUT_FORMAT)) {
			fprintf(stderr, "wpsnap snapshot: %s: blob %s is not a "
				"%s: %s\n", image, name, LAYOUT_FORMAT,
				*out ? "wrong format" : je.text);
			json_decref(*out);
			return -EBADMSG;
		}
		return 0;
	}
	fprintf(stderr, "wpsnap snapshot: %s has no %s blob (not a snapshot "
		"of QEMU)\n", image, WPS_QEMU_LAYOUT_BLOB);
	return -ENOENT;
}

/* The image region holding block name, by its recorded host address. */
static int region_of(struct wps_image *img, json_t *layout, const char *name,
		     uint64_t *size)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	json_t *b;
	size_t i;

	json_array_foreach(json_object_get(layout, "blocks"), i, b) {
		uint64_t host;
		unsigned int r;

		if (strcmp(json_string_value(json_object_get(b, "name")) ?: "",
			   name) || json_is_null(json_object_get(b, "region")))
			continue;
		host = (uint64_t)json_integer_value(json_object_get(b,
								    "host_addr"));
		for (r = 0; r < in->nr_regions; r++) {
			const struct wps_image_region *ir =
				wps_image_get_region(img, r);

			if (ir->host_addr == host) {
				*size = ir->size;
				return (int)r;
			}
		}
	}
	return -1;
}

int wps_qemu_physmem(struct wps_ctx *ctx, const char *image, const char *out)
{
	static const size_t chunk = 1u << 20;
	struct wps_image *img = NULL;
	json_t *layout = NULL, *p;
	unsigned char *buf = NULL;
	uint64_t top = 0;
	size_t i;
	int fd = -1, err, ret = 1;

	err = wps_image_open(ctx, image, 0, &img);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: cannot open image %s: %s\n",
			image, strerror(-err));
		return 1;
	}
	if (find_layout(img, image, &layout))
		goto out;
	buf = malloc(chunk);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (!buf || fd < 0) {
		fprintf(stderr, "wpsnap snapshot: cannot create %s: %s\n", out,
			strerror(buf ? errno : ENOMEM));
		goto out;
	}
	json_array_foreach(json_object_get(layout, "physmap"), i, p) {
		const char *name = json_string_value(json_object_get(p,
								     "block"));
		uint64_t gpa = (uint64_t)json_integer_value(json_object_get(p,
								"gpa"));
		uint64_t size = (uint64_t)json_integer_value(json_object_get(p,
								"size"));
		uint64_t off = (uint64_t)json_integer_value(json_object_get(p,
								"offset"));
		uint64_t rsize = 0, done;
		int r = name ? region_of(img, layout, name, &rsize) : -1;

		if (r < 0)
			continue;       /* a block the image does not hold */
		if ((gpa | size | off) % PAGE || off + size > rsize) {
			fprintf(stderr, "wpsnap snapshot: %s: physmap range "
				"%" PRIx64 "+%" PRIx64 " does not fit block %s\n",
				image, gpa, size, name);
			goto out;
		}
		for (done = 0; done < size; done += chunk) {
			size_t len = size - done < chunk ? size - done : chunk;
			size_t k;

			err = wps_image_read(img, (unsigned int)r, off + done,
					     buf, len);
			if (err) {
				fprintf(stderr, "wpsnap snapshot: reading %s: "
					"%s\n", image, strerror(-err));
				goto out;
			}
			/* Zero pages stay holes: a sparse file of RAM. */
			for (k = 0; k < len; k += PAGE) {
				if (all_zero(buf + k, PAGE))
					continue;
				if (pwrite(fd, buf + k, PAGE,
					   (off_t)(gpa + done + k)) != PAGE) {
					fprintf(stderr, "wpsnap snapshot: "
						"writing %s: %s\n", out,
						strerror(errno));
					goto out;
				}
			}
		}
		printf("%016" PRIx64 "-%016" PRIx64 " %s @%" PRIx64 "%s\n", gpa,
		       gpa + size - 1, name, off,
		       json_is_true(json_object_get(p, "readonly")) ?
		       " (read-only)" : "");
		if (gpa + size > top)
			top = gpa + size;
	}
	if (ftruncate(fd, (off_t)top) || fsync(fd)) {
		fprintf(stderr, "wpsnap snapshot: writing %s: %s\n", out,
			strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0 && close(fd) && !ret) {
		fprintf(stderr, "wpsnap snapshot: writing %s: %s\n", out,
			strerror(errno));
		ret = 1;
	}
	if (ret && fd >= 0)
		unlink(out);
	free(buf);
	json_decref(layout);
	wps_image_close(img);
	return ret;
}
