/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest registration. A VMM hands us file descriptors and claims what they
 * are; we believe nothing: the uffd must be a userfaultfd nobody has
 * negotiated yet (the library negotiates the features it needs, and a
 * userfaultfd accepts UFFDIO_API once), every memfd must be shmem or
 * hugetlbfs, large enough for its region, and mapped at the claimed
 * address of the claimed process. A wrong claim is a QMP error, never a
 * snapshot of the wrong memory.
 *
 * Owns: the guest list entries, their uffd and a dup of each region's
 * memfd, the device-state blob.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/procmaps.h"
#include "daemon/guest.h"
#include "daemon/job.h"
#include "base/log.h"

struct wpsd_guest *wpsd_guest_find(struct wpsd *d, const char *name)
{
	struct wpsd_guest *g;

	for (g = d->guests; g; g = g->next)
		if (!strcmp(g->name, name))
			return g;
	return NULL;
}

static int peek_fd(struct wpsd_conn *c, const char *name)
{
	struct wpsd_namedfd *n;

	for (n = c->fds; n; n = n->next)
		if (!strcmp(n->name, name))
			return n->fd;
	return -1;
}

static int fd_link(int fd, char *buf, size_t len)
{
	char p[64];
	ssize_t n;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	n = readlink(p, buf, len - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

int wpsd_uffd_negotiated(int fd)
{
	char p[64], line[256];
	unsigned long long api, features;
	int ret = -ENOENT;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		/* "API:\t<api>:<features>:<ioctls>"; features are 0 until
		 * UFFDIO_API, which sets at least UFFD_FEATURE_INITIALIZED. */
		if (sscanf(line, "API:\t%llx:%llx:", &api, &features) == 2) {
			ret = features != 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

static int check_uffd(int fd, const char *name, struct wpsd_reply *r)
{
	char link[256];
	int ret;

	ret = fd_link(fd, link, sizeof(link));
	if (ret || strcmp(link, "anon_inode:[userfaultfd]")) {
		wpsd_reply_err(r, WPSD_GENERIC, "fd '%s' is not a userfaultfd (it is %s)",
			       name, ret ? strerror(-ret) : link);
		return -EINVAL;
	}
	ret = wpsd_uffd_negotiated(fd);
	if (ret < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "cannot read the state of userfaultfd '%s': %s",
			       name, strerror(-ret));
		return ret;
	}
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "userfaultfd '%s' has already been through "
			       "UFFDIO_API; hand over a fresh one (wpsnapd negotiates it)",
			       name);
		return -EINVAL;
	}
	return 0;
}

/*
 * Is [addr, addr+size) of process pid mapped, without a gap, from the file
 * (dev, ino) at file offset off? Read from /proc/PID/maps.
 */
static int check_mapped(pid_t pid, uint64_t addr, uint64_t size, dev_t dev,
			ino_t ino, uint64_t off, char *why, size_t whylen)
{
	uint64_t at = addr, stop = addr + size;
	struct wps_maps_vma *v;
	unsigned int n, i;
	char p[64];
	int ret;

	ret = wps_maps_read(pid, 0, &v, &n);
	if (ret) {
		snprintf(why, whylen, "%s: %s", wps_maps_file(pid, 0, p, sizeof(p)),
			 strerror(-ret));
		return ret;
	}
	for (i = 0; i < n && at < stop; i++) {
		if (v[i].end <= at || v[i].start > at)
			continue;
		if (makedev(v[i].dev_major, v[i].dev_minor) != dev ||
		    v[i].inode != ino ||
		    v[i].offset + (at - v[i].start) != off + (at - addr)) {
			snprintf(why, whylen, "address 0x%" PRIx64 " of process %d "
				 "is not the memfd at offset %" PRIu64, at,
				 (int)pid, off + (at - addr));
			free(v);
			return -EINVAL;
		}
		at = v[i].end;
	}
	free(v);
	if (at < stop) {
		snprintf(why, whylen, "address 0x%" PRIx64 " of process %d is not "
			 "mapped", at, (int)pid);
		return -EINVAL;
	}
	return 0;
}

static const struct wpsd_arg region_spec[] = {
	{ "host-addr", WPSD_T_UINT, true },
	{ "size", WPSD_T_UINT, true },
	{ "page-size", WPSD_T_UINT, false },
	{ "memfd", WPSD_T_STR, false },
	{ "offset", WPSD_T_UINT, false },
	{ "name", WPSD_T_STR, false },
	{ NULL, 0, false },
};

/* Fill reg (without fd ownership) from one "regions" element. */
static int parse_region(struct wpsd_conn *c, pid_t pid, json_t *o,
			unsigned int i, struct wps_region *reg, char *rname,
			struct wpsd_reply *r)
{
	char what[32], link[256], why[256];
	const char *mname;
	struct statfs sfs;
	struct stat st;
	uint64_t ps;
	int fd, ret;

	snprintf(what, sizeof(what), "regions[%u]", i);
	ret = wpsd_args_check(o, region_spec, what, r);
	if (ret)
		return ret;
	reg->host_addr = json_integer_value(json_object_get(o, "host-addr"));
	reg->size = json_integer_value(json_object_get(o, "size"));
	reg->fd_offset = json_integer_value(json_object_get(o, "offset"));
	snprintf(rname, WPS_REGION_NAME_MAX + 1, "%s",
		 json_object_get(o, "name") ?
		 json_string_value(json_object_get(o, "name")) : "");
	reg->name = rname[0] ? rname : NULL;
	mname = json_string_value(json_object_get(o, "memfd"));
	if (!mname) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: no memfd: anonymous memory of "
			       "another process cannot be read by wpsnapd; back guest "
			       "RAM with a memfd and hand it over", what);
		return -EOPNOTSUPP;
	}
	fd = peek_fd(c, mname);
	if (fd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: no fd named '%s' (send it with getfd)",
			       what, mname);
		return -ENOENT;
	}
	if (fstat(fd, &st) || fstatfs(fd, &sfs) || !S_ISREG(st.st_mode) ||
	    (sfs.f_type != TMPFS_MAGIC && sfs.f_type != HUGETLBFS_MAGIC) ||
	    fd_link(fd, link, sizeof(link))) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: fd '%s' is not a memfd or a "
			       "hugetlbfs file", what, mname);
		return -EINVAL;
	}
	if (sfs.f_type == HUGETLBFS_MAGIC) {
		reg->backing = WPS_BACKING_HUGETLB;
		ps = (uint64_t)st.st_blksize;
	} else {
		reg->backing = WPS_BACKING_MEMFD;
		ps = 4096;
	}
	if (json_object_get(o, "page-size") &&
	    (uint64_t)json_integer_value(json_object_get(o, "page-size")) != ps) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: page-size %" JSON_INTEGER_FORMAT
			       " but memfd '%s' has %" PRIu64 "-byte pages", what,
			       json_integer_value(json_object_get(o, "page-size")),
			       mname, ps);
		return -EINVAL;
	}
	reg->page_size = (uint32_t)ps;
	if (!reg->size || reg->size % ps || reg->host_addr % ps ||
	    reg->fd_offset % ps || reg->host_addr + reg->size < reg->host_addr) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: host-addr, size and offset must "
			       "be multiples of the page size %" PRIu64 " (size > 0)",
			       what, ps);
		return -EINVAL;
	}
	if ((uint64_t)st.st_size < reg->fd_offset + reg->size) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: memfd '%s' has %lld bytes, "
			       "smaller than offset + size = %" PRIu64, what, mname,
			       (long long)st.st_size, reg->fd_offset + reg->size);
		return -EINVAL;
	}
	ret = check_mapped(pid, reg->host_addr, reg->size, st.st_dev, st.st_ino,
			   reg->fd_offset, why, sizeof(why));
	if (ret) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s: %s", what, why);
		return ret;
	}
	reg->fd = fd;   /* borrowed until the registration commits */
	return 0;
}

/* A new guest's name is free and well formed, and its process exists. */
static int check_new_guest(struct wpsd *d, const char *name, json_int_t pid,
			   struct wpsd_reply *r)
{
	if (!name[0] || strlen(name) > WPSD_NAME_MAX) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest name must have 1 to %d bytes",
			       WPSD_NAME_MAX);
		return -EINVAL;
	}
	if (wpsd_guest_find(d, name)) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is already registered", name);
		return -EEXIST;
	}
	if (pid <= 0 || pid > INT_MAX || kill((pid_t)pid, 0)) {
		wpsd_reply_err(r, WPSD_GENERIC, "no process %" JSON_INTEGER_FORMAT, pid);
		return -ESRCH;
	}
	return 0;
}

static const struct wpsd_arg register_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "pid", WPSD_T_UINT, true },
	{ "uffd", WPSD_T_STR, true },
	{ "regions", WPSD_T_ARRAY, true },
	{ "device-state", WPSD_T_STR, false },
	{ "device-state-fd", WPSD_T_STR, false },
	{ NULL, 0, false },
};

int wpsd_guest_register(struct wpsd_conn *c, json_t *args, struct wpsd_reply *r)
{
	struct wpsd *d = c->d;
	struct wpsd_guest *g = NULL;
	const char *name, *uname, *ds, *dsfd;
	json_t *regs;
	unsigned int i, j;
	json_int_t pid;
	int ufd, ret;

	ret = wpsd_args_check(args, register_spec, "arguments", r);
	if (ret)
		return ret;
	name = json_string_value(json_object_get(args, "guest"));
	pid = json_integer_value(json_object_get(args, "pid"));
	uname = json_string_value(json_object_get(args, "uffd"));
	regs = json_object_get(args, "regions");
	ds = json_string_value(json_object_get(args, "device-state"));
	dsfd = json_string_value(json_object_get(args, "device-state-fd"));

	ret = check_new_guest(d, name, pid, r);
	if (ret)
		return ret;
	if (!c->root && (pid_t)pid != c->pid) {
		wpsd_reply_err(r, WPSD_GENERIC, "a client that is not root may register "
			       "only its own memory (pid %d), not pid %" JSON_INTEGER_FORMAT,
			       (int)c->pid, pid);
		return -EPERM;
	}
	ufd = peek_fd(c, uname);
	if (ufd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "no fd named '%s' (send it with getfd)",
			       uname);
		return -ENOENT;
	}
	ret = check_uffd(ufd, uname, r);
	if (ret)
		return ret;
	if (!json_array_size(regs) || json_array_size(regs) > WPSD_REGIONS_MAX) {
		wpsd_reply_err(r, WPSD_GENERIC, "regions: 1 to %d regions",
			       WPSD_REGIONS_MAX);
		return -EINVAL;
	}

	g = calloc(1, sizeof(*g));
	if (!g)
		goto nomem;
	g->d = d;
	g->uffd = -1;
	g->nr = (unsigned int)json_array_size(regs);
	g->r = calloc(g->nr, sizeof(*g->r));
	g->rname = calloc(g->nr, sizeof(*g->rname));
	if (!g->r || !g->rname)
		goto nomem;
	for (i = 0; i < g->nr; i++)
		g->r[i].fd = -1;
	for (i = 0; i < g->nr; i++) {
		ret = parse_region(c, (pid_t)pid, json_array_get(regs, i), i,
				   &g->r[i], g->rname[i], r);
		if (ret) {
			g->r[i].fd = -1;
			goto fail_borrowed;
		}
		for (j = 0; j < i; j++) {
			if (g->r[i].host_addr < g->r[j].host_addr + g->r[j].size &&
			    g->r[j].host_addr < g->r[i].host_addr + g->r[i].size) {
				wpsd_reply_err(r, WPSD_GENERIC, "regions[%u] overlaps "
					       "regions[%u]", i, j);
				ret = -EINVAL;
				g->r[i].fd = -1;
				goto fail_borrowed;
			}
		}
		g->bytes += g->r[i].size;
	}
	if (ds && dsfd) {
		wpsd_reply_err(r, WPSD_GENERIC, "device-state and device-state-fd "
			       "exclude each other");
		ret = -EINVAL;
		goto fail_borrowed;
	}
	if (ds) {
		ret = wpsd_base64_decode(ds, &g->blob, &g->blob_len);
		if (ret) {
			wpsd_reply_err(r, WPSD_GENERIC, "device-state is not valid base64");
			goto fail_borrowed;
		}
	}
	if (dsfd) {
		int fd = peek_fd(c, dsfd);

		ret = fd < 0 ? -ENOENT : wpsd_read_blob_fd(fd, &g->blob, &g->blob_len);
		if (ret) {
			wpsd_reply_err(r, WPSD_GENERIC, "device-state-fd '%s': %s", dsfd,
				       ret == -ENOENT ? "no such fd (send it with getfd)" :
				       ret == -EINVAL ? "not a memfd or file of at most "
				       "256 MiB" : strerror(-ret));
			goto fail_borrowed;
		}
	}

	/* Commit: every region gets its own dup of its memfd (one memfd may
	 * back several regions), the uffd moves out of the fd table. */
	for (i = 0; i < g->nr; i++) {
		g->r[i].fd = fcntl(g->r[i].fd, F_DUPFD_CLOEXEC, 3);
		if (g->r[i].fd < 0) {
			ret = -errno;
			wpsd_reply_err(r, WPSD_GENERIC, "dup: %s", strerror(errno));
			goto fail;
		}
	}
	for (i = 0; i < g->nr; i++) {
		const char *m = json_string_value(json_object_get(
					json_array_get(regs, i), "memfd"));
		int fd = wpsd_conn_take_fd(c, m);

		if (fd >= 0)
			close(fd);
	}
	if (dsfd) {
		int fd = wpsd_conn_take_fd(c, dsfd);

		if (fd >= 0)
			close(fd);   /* read already: the content is the blob */
	}
	g->uffd = wpsd_conn_take_fd(c, uname);
	/* The engine drains the uffd until EAGAIN. */
	fcntl(g->uffd, F_SETFL, fcntl(g->uffd, F_GETFL) | O_NONBLOCK);
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->pid = (pid_t)pid;
	g->owner = c->id;
	g->next = d->guests;
	d->guests = g;
	wps_info(d->ctx, "guest %s registered: pid %d, %u region(s), %" PRIu64
		 " bytes, by connection %u", g->name, (int)g->pid, g->nr, g->bytes,
		 c->id);
	r->ret = json_object();
	return 0;

nomem:
	ret = -ENOMEM;
	wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
fail_borrowed:
	if (g && g->r)
		for (i = 0; i < g->nr; i++)
			g->r[i].fd = -1;   /* still owned by the fd table */
fail:
	if (g) {
		for (i = 0; g->r && i < g->nr; i++)
			if (g->r[i].fd >= 0)
				close(g->r[i].fd);
		free(g->r);
		free(g->rname);
		free(g->blob);
		free(g);
	}
	return ret;
}

/* Has process pid CAP_SYS_PTRACE in its effective set? (bit 19) */
bool wpsd_peer_can_ptrace(pid_t pid)
{
	char path[64], line[256];
	unsigned long long eff;
	bool can = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			can = eff & (1ull << 19);
	fclose(f);
	return can;
}

static const struct wpsd_arg attach_spec[] = {
	{ "guest", WPSD_T_STR, true },
	{ "pid", WPSD_T_UINT, true },
	{ "ranges", WPSD_T_ARRAY, false },
	{ NULL, 0, false },
};

static const struct wpsd_arg range_spec[] = {
	{ "start", WPSD_T_UINT, true },
	{ "end", WPSD_T_UINT, true },
	{ NULL, 0, false },
};

/*
 * Only the shape of the ranges is checked here: what is mapped there is
 * the attach's business, at each snapshot, with the process stopped (it
 * may well map and unmap meanwhile).
 */
static int parse_ranges(json_t *a, struct wps_attach_range **out,
			unsigned int *nr, struct wpsd_reply *r)
{
	struct wps_attach_range *ar;
	char what[32];
	size_t i, n = json_array_size(a);
	long ps = sysconf(_SC_PAGESIZE);
	int ret;

	*out = NULL;
	*nr = 0;
	if (!a)
		return 0;
	if (!n || n > WPSD_REGIONS_MAX) {
		wpsd_reply_err(r, WPSD_GENERIC, "ranges: 1 to %d ranges",
			       WPSD_REGIONS_MAX);
		return -EINVAL;
	}
	ar = calloc(n, sizeof(*ar));
	if (!ar) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		json_t *o = json_array_get(a, i);

		snprintf(what, sizeof(what), "ranges[%zu]", i);
		ret = wpsd_args_check(o, range_spec, what, r);
		if (ret)
			goto fail;
		ar[i].start = (uint64_t)json_integer_value(json_object_get(o, "start"));
		ar[i].end = (uint64_t)json_integer_value(json_object_get(o, "end"));
		if (ar[i].start >= ar[i].end || (ar[i].start | ar[i].end) %
		    (uint64_t)ps) {
			wpsd_reply_err(r, WPSD_GENERIC, "%s: start < end, both "
				       "multiples of the page size (%ld)", what, ps);
			ret = -EINVAL;
			goto fail;
		}
	}
	*out = ar;
	*nr = (unsigned int)n;
	return 0;
fail:
	free(ar);
	return ret;
}

int wpsd_guest_attach(struct wpsd_conn *c, json_t *args, struct wpsd_reply *r)
{
	struct wpsd *d = c->d;
	struct wpsd_guest *g;
	const char *name;
	json_int_t pid;
	int ret;

	ret = wpsd_args_check(args, attach_spec, "arguments", r);
	if (ret)
		return ret;
	name = json_string_value(json_object_get(args, "guest"));
	pid = json_integer_value(json_object_get(args, "pid"));
	if (!c->root && !wpsd_peer_can_ptrace(c->pid)) {
		wpsd_reply_err(r, WPSD_GENERIC, "attaching to a process needs root "
			       "or CAP_SYS_PTRACE (connection from pid %d, uid %d)",
			       (int)c->pid, (int)c->uid);
		return -EPERM;
	}
	ret = check_new_guest(d, name, pid, r);
	if (ret)
		return ret;
	if ((pid_t)pid == getpid()) {
		wpsd_reply_err(r, WPSD_GENERIC, "wpsnapd cannot attach to itself");
		return -EINVAL;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		wpsd_reply_err(r, WPSD_GENERIC, "out of memory");
		return -ENOMEM;
	}
	ret = parse_ranges(json_object_get(args, "ranges"), &g->ar, &g->nar, r);
	if (ret) {
		free(g);
		return ret;
	}
	g->d = d;
	g->uffd = -1;
	g->attach = true;
	g->pid = (pid_t)pid;
	g->owner = 0;   /* nobody's: outlives the connection that named it */
	snprintf(g->name, sizeof(g->name), "%s", name);
	g->next = d->guests;
	d->guests = g;
	wps_info(d->ctx, "guest %s: process %d, attached at each snapshot (%s), "
		 "named by connection %u", g->name, (int)g->pid,
		 g->nar ? "chosen ranges" : "default selection", c->id);
	r->ret = json_object();
	return 0;
}

int wpsd_guest_set_uffd(struct wpsd_conn *c, struct wpsd_guest *g,
			const char *fdname, struct wpsd_reply *r)
{
	int fd, ret;

	if (g->attach) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' is an attached process: "
			       "wpsnapd makes its userfaultfd itself", g->name);
		return -EINVAL;
	}
	if (g->owner != c->id) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' belongs to another connection",
			       g->name);
		return -EPERM;
	}
	/* A transaction without memory snapshot does not use the uffd: the
	 * re-arm after the previous snapshot may well arrive during one. */
	if (g->job && g->job->mem) {
		wpsd_reply_err(r, WPSD_GENERIC, "guest '%s' has a snapshot running",
			       g->name);
		return -EBUSY;
	}
	fd = peek_fd(c, fdname);
	if (fd < 0) {
		wpsd_reply_err(r, WPSD_GENERIC, "no fd named '%s' (send it with getfd)",
			       fdname);
		return -ENOENT;
	}
	ret = check_uffd(fd, fdname, r);
	if (ret)
		return ret;
	if (g->uffd >= 0)
		close(g->uffd);
	g->uffd = wpsd_conn_take_fd(c, fdname);
	fcntl(g->uffd, F_SETFL, fcntl(g->uffd, F_GETFL) | O_NONBLOCK);
	r->ret = json_object();
	return 0;
}

void wpsd_guest_remove(struct wpsd_guest *g)
{
	struct wpsd_guest **p;
	unsigned int i;

	for (p = &g->d->guests; *p; p = &(*p)->next) {
		if (*p == g) {
			*p = g->next;
			break;
		}
	}
	wps_info(g->d->ctx, "guest %s unregistered", g->name);
	if (g->uffd >= 0)
		close(g->uffd);
	for (i = 0; i < g->nr; i++)
		if (g->r[i].fd >= 0)
			close(g->r[i].fd);
	json_decref(g->last);
	free(g->ar);
	free(g->r);
	free(g->rname);
	free(g->blob);
	free(g);
}

int wpsd_read_blob_fd(int fd, void **out, size_t *len)
{
	struct stat st;
	size_t n, done;
	char *buf;

	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (uint64_t)st.st_size > WPSD_DEVICE_STATE_MAX)
		return -EINVAL;
	n = (size_t)st.st_size;
	buf = malloc(n ? n : 1);
	if (!buf)
		return -ENOMEM;
	for (done = 0; done < n;) {
		ssize_t k = pread(fd, buf + done, n - done, (off_t)done);

		if (k <= 0) {
			int err = k < 0 ? -errno : -EIO;

			free(buf);
			return err;
		}
		done += (size_t)k;
	}
	*out = buf;
	*len = n;
	return 0;
}

static int b64val(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

int wpsd_base64_decode(const char *s, void **out, size_t *len)
{
	size_t n = strlen(s), o = 0, i;
	unsigned int acc = 0, bits = 0;
	unsigned char *buf;
	int v;

	while (n && s[n - 1] == '=')
		n--;
	buf = malloc(n * 3 / 4 + 1);
	if (!buf)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		v = b64val((unsigned char)s[i]);
		if (v < 0) {
			free(buf);
			return -EINVAL;
		}
		acc = (acc << 6) | (unsigned int)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	*out = buf;
	*len = o;
	return 0;
}

json_t *wpsd_guest_info(const struct wpsd_guest *g)
{
	json_t *regs = json_array(), *o;
	unsigned int i;

	for (i = 0; i < g->nr; i++)
		json_array_append_new(regs, json_pack("{s:I,s:I,s:i,s:s,s:I}",
			"host-addr", (json_int_t)g->r[i].host_addr,
			"size", (json_int_t)g->r[i].size,
			"page-size", (int)g->r[i].page_size,
			"backing", g->r[i].backing == WPS_BACKING_HUGETLB ?
				   "hugetlb" : "memfd",
			"offset", (json_int_t)g->r[i].fd_offset));
	o = json_pack("{s:s,s:s,s:i,s:I,s:o,s:b,s:s,s:b}", "guest", g->name,
		      "kind", g->attach ? "attach" : "vmm",
		      "pid", (int)g->pid, "size", (json_int_t)g->bytes,
		      "regions", regs, "uffd-ready", g->attach || g->uffd >= 0,
		      "snapshot", g->job ? wpsd_job_status(g->job) :
				  (g->last ? json_string_value(json_object_get(
					      g->last, "status")) : "none"),
		      "device-state", g->blob != NULL);
	if (g->attach) {
		json_t *ranges = json_array();

		for (i = 0; i < g->nar; i++)
			json_array_append_new(ranges, json_pack("{s:I,s:I}",
				"start", (json_int_t)g->ar[i].start,
				"end", (json_int_t)g->ar[i].end));
		json_object_set_new(o, "ranges", ranges);
	}
	return o;
}
