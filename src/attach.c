/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshots of an unmodified process (include/wpsnap/attach.h).
 *
 * This file owns everything done to the target: the ptrace hold on each of
 * its threads, the one thread whose registers (and, rarely, two bytes of
 * code) are borrowed to run a syscall, the userfaultfd taken out of it,
 * and the fds of its shmem mappings opened through /proc/PID/map_files.
 * The rule throughout is that every failure undoes what was done, in
 * reverse: code and registers first, then the target's copy of the uffd,
 * then the ptrace hold, so the process goes on as if we had never come.
 *
 * Why a syscall is injected at all: a userfaultfd acts on the mm of the
 * process that created it, so the target itself must create it; no ioctl
 * of ours can make one for another mm. The target then loses its copy of
 * the fd at once, so only we can read faults from it.
 *
 * Thread states: seized threads are either stopped (in a ptrace-stop we
 * have reaped with waitpid) or running; a signal that arrived while we
 * held a thread is remembered and handed back when it is resumed.
 */
#include "config.h"

#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/magic.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <stddef.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <wpsnap/attach.h>

#include "src/attach.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/memsrc.h"

/* The kernel's internal "restart me" codes, seen in rax when a thread is
 * stopped on its way out of an interrupted syscall (include/linux/errno.h). */
#define K_ERESTARTSYS           512
#define K_ERESTARTNOINTR        513
#define K_ERESTARTNOHAND        514
#define K_ERESTART_RESTARTBLOCK 516

#define X86_64_USER_CS 0x33

enum tstate { T_RUNNING, T_STOPPED, T_GONE, T_DETACHED };

struct athread {
	pid_t tid;
	enum tstate state;
	int sig;                /* to hand back when resumed; 0: none */
};

struct wps_attach {
	struct wps_ctx *ctx;
	pid_t pid;
	int pidfd;
	int uffd;               /* ours, taken from the target */
	struct athread *th;
	unsigned int nr_th, cap_th, seized_at_attach;
	struct wps_region *regions;  /* fds owned here */
	char (*names)[WPS_REGION_NAME_MAX + 1];
	uint64_t *inodes;            /* of each region's mapping, as chosen */
	unsigned int nr_regions, skipped;
	uint64_t bytes;
	uint64_t t_stop, attach_stop_ns, t_pause, freeze_stop_ns;
	bool snapshot_made;
	/* the caller's own pause around ours (a VMM's vCPU stop), or NULL */
	int (*outer_pause)(void *arg);
	int (*outer_resume)(void *arg);
	void *outer_arg;
};

/* The borrowed thread while a syscall runs in it. */
struct inject {
	struct athread *t;
	struct user_regs_struct saved;  /* what the thread gets back */
	uint64_t insn;                  /* a `syscall` instruction (0f 05) */
	bool poked;
	long poke_word;                 /* original text at insn */
	/* Restartable injection (inject_arm): 0 if the target lacks the
	 * two code sequences or room on its stack. */
	uint64_t gadget;                /* `syscall; ret` (0f 05 c3) */
	uint64_t frame;                 /* our signal frame on its stack */
};

/* ------------------------------------------------------------------ */
/* Mappings                                                            */
/* ------------------------------------------------------------------ */

static bool starts_with(const char *s, const char *p)
{
	return !strncmp(s, p, strlen(p));
}

enum wps_attach_kind wps_attach_classify(const struct wps_maps_vma *v)
{
	const char *p = v->path;

	if (v->perms[0] != 'r' || v->perms[1] != 'w')
		return WPS_ATTACH_SKIP;
	/* Shared: only a file on tmpfs or hugetlbfs can be write-protected;
	 * the file system of its map_files fd decides (see add_region). */
	if (v->perms[3] == 's')
		return WPS_ATTACH_SHARED;
	if (starts_with(p, "/anon_hugepage"))
		return WPS_ATTACH_HUGETLB_PRIVATE;
	if (v->inode)
		return WPS_ATTACH_SKIP;  /* file-backed private: .data etc. */
	if (!*p || !strcmp(p, "[heap]") || starts_with(p, "[anon:"))
		return WPS_ATTACH_ANON;
	if (!strcmp(p, "[stack]"))
		return WPS_ATTACH_STACK;
	return WPS_ATTACH_SKIP;
}

/* /proc/PID/maps, not smaps: smaps walks the page tables for its counters,
 * milliseconds per GiB, and the process is stopped while we read. */
static int read_vmas(struct wps_ctx *ctx, pid_t pid, struct wps_maps_vma **out,
		     unsigned int *nr)
{
	char path[64];
	int ret = wps_maps_read(pid, 0, out, nr);

	if (ret) {
		wps_err(ctx, "cannot read %s: %s",
			wps_maps_file(pid, 0, path, sizeof(path)),
			strerror(-ret));
		return ret == -ENOENT ? -ESRCH : ret;
	}
	return 0;
}

/* Our own handle on the file behind a shared mapping: the library reads
 * the pages through it and finds those in the page cache that the
 * process never mapped. Its file system says whether it is shmem (4 KiB
 * units), hugetlbfs (huge units) or neither (*page_size 0). */
static int open_shared(struct wps_attach *at, const struct wps_maps_vma *v,
		       int *fd, uint32_t *page_size)
{
	struct statfs sfs;
	char mf[96];

	snprintf(mf, sizeof(mf), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64,
		 (int)at->pid, v->start, v->end);
	*fd = open(mf, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		int err = errno;

		wps_err(at->ctx, "cannot open %s (%s): %s", mf, v->path,
			strerror(err));
		return err == ENOENT ? -ESRCH : -err;
	}
	*page_size = 0;
	if (!fstatfs(*fd, &sfs)) {
		if (sfs.f_type == TMPFS_MAGIC)
			*page_size = 4096;
		else if (sfs.f_type == HUGETLBFS_MAGIC)
			*page_size = (uint32_t)sfs.f_bsize;
	}
	return 0;
}

/* Take [start, end) of v; fd (or -1) becomes the region's. */
static int add_region(struct wps_attach *at, const struct wps_maps_vma *v,
		      uint64_t start, uint64_t end, int fd, uint32_t page_size)
{
	struct wps_region *r, *nr_;
	char (*nn)[WPS_REGION_NAME_MAX + 1];
	const char *base;
	uint64_t *ni;

	nr_ = realloc(at->regions, (at->nr_regions + 1) * sizeof(*nr_));
	if (nr_)
		at->regions = nr_;
	nn = realloc(at->names, (at->nr_regions + 1) * sizeof(*nn));
	if (nn)
		at->names = nn;
	ni = realloc(at->inodes, (at->nr_regions + 1) * sizeof(*ni));
	if (ni)
		at->inodes = ni;
	if (!nr_ || !nn || !ni) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	base = v->path;
	if (!*base)
		base = "anon";
	else if (base[0] == '/' && strrchr(base, '/')[1])
		base = strrchr(base, '/') + 1;
	/* "memfd:guest (deleted)": the suffix says nothing useful */
	snprintf(at->names[at->nr_regions], sizeof(*nn), "%.*s",
		 (int)(strcspn(base, " ") < WPS_REGION_NAME_MAX ?
		       strcspn(base, " ") : WPS_REGION_NAME_MAX), base);
	r = &at->regions[at->nr_regions++];
	memset(r, 0, sizeof(*r));
	r->host_addr = start;
	r->size = end - start;
	r->page_size = fd >= 0 ? page_size : 4096;
	r->backing = fd < 0 ? WPS_BACKING_ANON : page_size == 4096 ?
		     WPS_BACKING_MEMFD : WPS_BACKING_HUGETLB;
	r->fd = fd;
	r->fd_offset = fd >= 0 ? v->offset + (start - v->start) : 0;
	r->local = NULL;
	at->inodes[at->nr_regions - 1] = v->inode;
	at->bytes += r->size;
	return 0;
}

static int choose_default(struct wps_attach *at,
			  const struct wps_maps_vma *v, unsigned int n)
{
	uint64_t ram = (uint64_t)sysconf(_SC_PHYS_PAGES) *
		       (uint64_t)sysconf(_SC_PAGESIZE);
	unsigned int i;
	uint32_t ps;
	int ret, fd;

	for (i = 0; i < n; i++) {
		enum wps_attach_kind k = wps_attach_classify(&v[i]);

		fd = -1;
		ps = 4096;
		if (k == WPS_ATTACH_SHARED) {
			ret = open_shared(at, &v[i], &fd, &ps);
			if (ret)
				return ret;
			if (ps != 4096) {
				close(fd);
				fd = -1;
			}
		}
		if ((k == WPS_ATTACH_SHARED && ps > 4096) ||
		    k == WPS_ATTACH_HUGETLB_PRIVATE) {
			wps_warn(at->ctx, "process %d: skipping hugetlb mapping "
				 "%" PRIx64 "-%" PRIx64 " %s%s", (int)at->pid,
				 v[i].start, v[i].end, v[i].path,
				 k == WPS_ATTACH_SHARED ?
				 " (choose it with a range to include it)" :
				 " (private hugetlb cannot be read from here)");
			at->skipped++;
			continue;
		}
		if (k != WPS_ATTACH_ANON && fd < 0)
			continue;
		/* Larger than RAM: reserved address space (a sanitizer's
		 * shadow, an allocator's arena), not memory; its tracker
		 * alone could exhaust ours. */
		if (k == WPS_ATTACH_ANON && v[i].end - v[i].start > ram) {
			wps_warn(at->ctx, "process %d: skipping %" PRIx64 "-%"
				 PRIx64 ", %" PRIu64 " GiB of reserved address "
				 "space (choose it with a range to include it)",
				 (int)at->pid, v[i].start, v[i].end,
				 (v[i].end - v[i].start) >> 30);
			at->skipped++;
			continue;
		}
		ret = add_region(at, &v[i], v[i].start, v[i].end, fd, ps);
		if (ret)
			return ret;
	}
	return 0;
}

/* Each range may span adjacent mappings; every byte must be in one we can
 * take, and a hugetlb piece must be aligned to its huge page. */
static int choose_ranges(struct wps_attach *at,
			 const struct wps_maps_vma *v, unsigned int n,
			 const struct wps_attach_range *rg, unsigned int nr)
{
	unsigned int i, j;
	int ret;

	for (i = 0; i < nr; i++) {
		uint64_t pos = rg[i].start;

		if (rg[i].start >= rg[i].end || (rg[i].start | rg[i].end) & 4095) {
			wps_err(at->ctx, "range %" PRIx64 "-%" PRIx64 " is empty "
				"or not page aligned", rg[i].start, rg[i].end);
			return -EINVAL;
		}
		for (j = 0; j < n && pos < rg[i].end; j++) {
			enum wps_attach_kind k;
			uint64_t lo, hi;
			uint32_t ps = 4096;
			int fd = -1;

			if (v[j].end <= pos)
				continue;
			if (v[j].start > pos)
				break;  /* a hole */
			k = wps_attach_classify(&v[j]);
			lo = pos;
			hi = v[j].end < rg[i].end ? v[j].end : rg[i].end;
			if (k == WPS_ATTACH_SHARED) {
				ret = open_shared(at, &v[j], &fd, &ps);
				if (ret)
					return ret;
				if (!ps) {
					close(fd);
					fd = -1;
					k = WPS_ATTACH_SKIP;
				}
			}
			if (k == WPS_ATTACH_SKIP || k == WPS_ATTACH_HUGETLB_PRIVATE) {
				wps_err(at->ctx, "range %" PRIx64 "-%" PRIx64
					" of process %d includes %" PRIx64 "-%"
					PRIx64 " %s %s, which cannot be "
					"snapshotted (only writable private "
					"anonymous and shared tmpfs/hugetlbfs "
					"memory can)", rg[i].start, rg[i].end,
					(int)at->pid, v[j].start, v[j].end,
					v[j].perms, *v[j].path ? v[j].path :
					"(anonymous)");
				return -EINVAL;
			}
			if ((lo | hi) % ps) {
				wps_err(at->ctx, "range %" PRIx64 "-%" PRIx64
					" cuts a %u KiB huge page of %s",
					rg[i].start, rg[i].end, ps >> 10,
					v[j].path);
				close(fd);
				return -EINVAL;
			}
			ret = add_region(at, &v[j], lo, hi, fd, ps);
			if (ret)
				return ret;
			pos = hi;
		}
		if (pos < rg[i].end) {
			wps_err(at->ctx, "range %" PRIx64 "-%" PRIx64 ": "
				"nothing is mapped at %" PRIx64 " in process %d",
				rg[i].start, rg[i].end, pos, (int)at->pid);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * The regions were chosen from the mappings while the process was stopped
 * but registered while it runs. A mapping replaced in between would be
 * registered under another file than the one we read: compare the
 * mappings once registered (later changes raise UNMAP events, which fail
 * the snapshot).
 */
static int check_unchanged(struct wps_attach *at)
{
	struct wps_maps_vma *v;
	unsigned int n, i, j;
	int ret;

	ret = read_vmas(at->ctx, at->pid, &v, &n);
	if (ret)
		return ret;
	for (i = 0; i < at->nr_regions; i++) {
		const struct wps_region *r = &at->regions[i];
		uint64_t pos = r->host_addr, end = r->host_addr + r->size;

		for (j = 0; j < n && pos < end; j++) {
			if (v[j].end <= pos)
				continue;
			if (v[j].start > pos || v[j].inode != at->inodes[i])
				break;
			pos = v[j].end;
		}
		if (pos < end) {
			wps_err(at->ctx, "process %d remapped %" PRIx64 "-%"
				PRIx64 " while we attached; try again",
				(int)at->pid, r->host_addr, end);
			ret = -EAGAIN;
			break;
		}
	}
	free(v);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

static struct athread *find_thread(struct wps_attach *at, pid_t tid)
{
	unsigned int i;

	for (i = 0; i < at->nr_th; i++)
		if (at->th[i].tid == tid)
			return &at->th[i];
	return NULL;
}

static char proc_state(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid,
		 (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = '\0';
	p = strrchr(buf, ')');  /* the name may hold anything */
	return p && p[1] == ' ' ? p[2] : 0;
}

/* "TracerPid:" of the process, for a clear EPERM. */
static pid_t tracer_of(pid_t pid)
{
	char path[64], line[256];
	pid_t tracer = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &tracer) == 1)
			break;
	fclose(f);
	return tracer;
}

/* What a waitpid status says about thread t. A signal-delivery-stop
 * counts as stopped: the signal is kept and handed back at the resume. */
static void note_status(struct wps_attach *at, struct athread *t, int st)
{
	if (WIFEXITED(st) || WIFSIGNALED(st)) {
		t->state = T_GONE;
		return;
	}
	if (!WIFSTOPPED(st))
		return;
	t->state = T_STOPPED;
	if ((st >> 16) == 0 && WSTOPSIG(st) != (SIGTRAP | 0x80)) {
		if (t->sig && t->sig != WSTOPSIG(st))
			wps_warn(at->ctx, "thread %d: signal %d arrived while "
				 "held and is lost", (int)t->tid, t->sig);
		t->sig = WSTOPSIG(st);
	}
}

/*
 * Wait for t's next report, polling: a process that exits makes every
 * thread a zombie that its tracer (us) must reap, and the leader reports
 * only after all the others are reaped, so a blocking waitpid on the
 * leader would wait forever. Reports of other threads are taken meanwhile
 * (never those of children that are not ours: waitpid names each tid).
 */
static int wait_for(struct wps_attach *at, struct athread *t, int *st)
{
	unsigned int i, spins = 0;

	for (;;) {
		bool others = false;
		pid_t r = waitpid(t->tid, st, __WALL | WNOHANG);

		if (r == t->tid)
			return 0;
		if (r < 0 && errno != EINTR) {
			t->state = T_GONE;  /* ECHILD: not ours any more */
			return -ESRCH;
		}
		for (i = 0; i < at->nr_th; i++) {
			struct athread *u = &at->th[i];
			int ust;

			if (u == t || u->state == T_GONE ||
			    u->state == T_DETACHED)
				continue;
			if (waitpid(u->tid, &ust, __WALL | WNOHANG) == u->tid)
				note_status(at, u, ust);
			others |= u->state != T_GONE;
		}
		/* A leader that exited alone reports when the process ends. */
		if (t->tid == at->pid && others && !(++spins % 64) &&
		    proc_state(at->pid, t->tid) == 'Z') {
			t->state = T_GONE;
			return -ESRCH;
		}
		if (spins < 16)
			sched_yield();
		else
			nanosleep(&(struct timespec){ 0, 50000 }, NULL);
		spins++;
	}
}

/* Reap t's next ptrace-stop. */
static int wait_stopped(struct wps_attach *at, struct athread *t)
{
	int st, ret;

	do {
		ret = wait_for(at, t, &st);
		if (ret)
			return ret;
		note_status(at, t, st);
	} while (t->state == T_RUNNING);
	return t->state == T_STOPPED ? 0 : -ESRCH;
}

static int seize_new(struct wps_attach *at, pid_t tid)
{
	struct athread *t;

	if (at->nr_th == at->cap_th) {
		unsigned int cap = at->cap_th ? 2 * at->cap_th : 16;
		struct athread *nt = realloc(at->th, cap * sizeof(*nt));

		if (!nt)
			return -ENOMEM;
		at->th = nt;
		at->cap_th = cap;
	}
	if (ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACESYSGOOD)) {
		int err = errno;
		pid_t tracer;

		if (err == ESRCH)
			return 0;       /* exited since the scan */
		if (err == EPERM && proc_state(at->pid, tid) == 'Z')
			return 0;       /* a dead thread awaiting its group */
		tracer = err == EPERM ? tracer_of(at->pid) : 0;
		if (tracer)
			wps_err(at->ctx, "cannot ptrace %d: it is already "
				"traced by process %d (a debugger?)",
				(int)at->pid, (int)tracer);
		else if (err == EPERM)
			wps_err(at->ctx, "cannot ptrace %d: need root or "
				"CAP_SYS_PTRACE (and kernel.yama.ptrace_scope "
				"allowing it)", (int)at->pid);
		else
			wps_err(at->ctx, "cannot ptrace thread %d of %d: %s",
				(int)tid, (int)at->pid, strerror(err));
		return -err;
	}
	t = &at->th[at->nr_th++];
	t->tid = tid;
	t->state = T_RUNNING;
	t->sig = 0;
	return 0;
}

/*
 * Bring every thread of the process to a stop: interrupt the running ones,
 * then look for threads created meanwhile, until a scan finds none. Once
 * all known threads are stopped none can create another, so this ends.
 */
static int stop_all(struct wps_attach *at)
{
	char path[64];
	unsigned int i, alive;
	bool again;
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)at->pid);
	do {
		struct dirent *de;
		DIR *d;

		/* All interrupts first: the threads stop together. ESRCH
		 * means gone, or already in a stop we have not reaped:
		 * waitpid tells which. */
		for (i = 0; i < at->nr_th; i++)
			if (at->th[i].state == T_RUNNING)
				ptrace(PTRACE_INTERRUPT, at->th[i].tid, 0, 0);
		for (i = 0; i < at->nr_th; i++)
			if (at->th[i].state == T_RUNNING)
				wait_stopped(at, &at->th[i]);
		again = false;
		d = opendir(path);
		if (!d)
			break;  /* the whole process is gone */
		while ((de = readdir(d))) {
			pid_t tid = (pid_t)atoi(de->d_name);

			if (tid <= 0 || find_thread(at, tid))
				continue;
			ret = seize_new(at, tid);
			if (ret) {
				closedir(d);
				return ret;
			}
			if (find_thread(at, tid))
				again = true;
		}
		closedir(d);
	} while (again);
	for (i = alive = 0; i < at->nr_th; i++)
		alive += at->th[i].state == T_STOPPED;
	if (!alive) {
		wps_err(at->ctx, "process %d exited", (int)at->pid);
		return -ESRCH;
	}
	return 0;
}

static void resume_all(struct wps_attach *at)
{
	unsigned int i;

	for (i = 0; i < at->nr_th; i++) {
		struct athread *t = &at->th[i];

		if (t->state != T_STOPPED)
			continue;
		if (!ptrace(PTRACE_CONT, t->tid, 0, (long)t->sig))
			t->sig = 0;
		t->state = T_RUNNING;   /* or gone: the next wait says */
	}
}

/* Let go of every thread; running ones must be stopped to be detached. */
static void detach_all(struct wps_attach *at)
{
	unsigned int i;

	for (i = 0; i < at->nr_th; i++) {
		struct athread *t = &at->th[i];

		if (t->state == T_RUNNING) {
			ptrace(PTRACE_INTERRUPT, t->tid, 0, 0);
			wait_stopped(at, t);
		}
		if (t->state != T_STOPPED)
			continue;
		if (ptrace(PTRACE_DETACH, t->tid, 0, (long)t->sig) &&
		    errno != ESRCH)
			wps_warn(at->ctx, "detaching from thread %d: %s",
				 (int)t->tid, strerror(errno));
		t->state = T_DETACHED;
	}
}

/*
 * The snapshot's pause: the process stops for the freeze only... The
 * caller's pause (a VMM stopping its vCPUs, as QMP stop does) runs first,
 * while the process can still answer it; it comes after the engine's
 * protection rounds, so it too lasts only for the freeze.
 */
static int attach_pause(void *arg)
{
	struct wps_attach *at = arg;
	int ret;

	if (at->outer_pause) {
		ret = at->outer_pause(at->outer_arg);
		if (ret)
			return ret;
	}
	at->t_pause = wps_now_ns();
	ret = stop_all(at);
	if (ret && at->outer_resume)
		at->outer_resume(at->outer_arg);
	return ret;
}

/* ... and is let go for good as it resumes: the copy needs no hold. The
 * caller's resume comes last, once the process can run again. */
static int attach_resume(void *arg)
{
	struct wps_attach *at = arg;

	detach_all(at);
	at->freeze_stop_ns = wps_now_ns() - at->t_pause;
	return at->outer_resume ? at->outer_resume(at->outer_arg) : 0;
}

/* ------------------------------------------------------------------ */
/* Syscall injection (x86_64)                                          */
/* ------------------------------------------------------------------ */

/* The first occurrence of pat in [start, end) of pid's text. */
static bool find_bytes_in(struct wps_ctx *ctx, pid_t pid, uint64_t start,
			  uint64_t end, const uint8_t *pat, size_t plen,
			  uint64_t *out)
{
	static const size_t chunk = 64 << 10;
	uint8_t *buf = malloc(chunk);
	struct wps_memsrc text;
	uint64_t pos;
	bool found = false;

	if (!buf)
		return false;
	/* Bounded: a library's text has one within its first pages. */
	if (end - start > (4u << 20))
		end = start + (4u << 20);
	wps_memsrc_init_remote(&text, ctx, pid, start, end - start);
	/* Chunks overlap by plen - 1 bytes, so no match is cut in two. */
	for (pos = start; pos < end && !found; pos += chunk - (plen - 1)) {
		size_t len = end - pos < chunk ? end - pos : chunk, k;

		/* Unreadable text is no error: the next mapping may do,
		 * and writing one at rip is the last resort. */
		if (len < plen ||
		    wps_memsrc_try_read(&text, pos - start, buf, len))
			break;
		for (k = 0; k + plen <= len; k++) {
			if (buf[k] == pat[0] && !memcmp(buf + k, pat, plen)) {
				*out = pos + k;
				found = true;
				break;
			}
		}
		if (len < chunk)
			break;
	}
	free(buf);
	return found;
}

/*
 * Which pass of find_bytes looks at mapping v, or -1: none. A `syscall`
 * anywhere will do, the vdso's first. The return sequences come from
 * files only, libc first (it holds both): a JIT's anonymous code (QEMU's
 * TCG buffer, 1 GiB) may be rewritten while the thread depends on it,
 * and every mapping scanned before libc is time the target is stopped
 * (QEMU maps some fifty libraries: scanning them in address order took
 * 25 ms of the attach, against 1 ms without the sequences).
 */
static int scan_pass(const struct wps_maps_vma *v, bool files_only)
{
	const char *base = strrchr(v->path, '/');

	if (v->perms[2] != 'x' || !strcmp(v->path, "[vsyscall]"))
		return -1;
	if (!files_only)
		return strcmp(v->path, "[vdso]") ? 1 : 0;
	if (v->path[0] != '/')
		return -1;
	base++;
	return starts_with(base, "libc.so") || starts_with(base, "libc-") ||
	       starts_with(base, "ld-musl") ? 0 : 1;
}

/* pat in an executable mapping, in scan_pass order. */
static bool find_bytes(struct wps_attach *at, const struct wps_maps_vma *v,
		       unsigned int n, bool files_only, const uint8_t *pat,
		       size_t plen, uint64_t *out)
{
	unsigned int i;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n; i++) {
			if (scan_pass(&v[i], files_only) != pass)
				continue;
			if (find_bytes_in(at->ctx, at->pid, v[i].start,
					  v[i].end, pat, plen, out))
				return true;
		}
	}
	return false;
}

/*
 * Any executable `syscall` will do: the CPU decodes from where rip points,
 * whatever instruction those bytes belong to. The vdso has some; failing
 * that, any executable mapping; failing that, we write one over the
 * thread's current rip and put the text back afterwards.
 */
static int find_syscall_insn(struct wps_attach *at, struct inject *inj,
			     const struct wps_maps_vma *v, unsigned int n)
{
	static const uint8_t insn[] = { 0x0f, 0x05 };
	long word;

	if (find_bytes(at, v, n, false, insn, sizeof(insn), &inj->insn))
		return 0;
	errno = 0;
	word = ptrace(PTRACE_PEEKTEXT, inj->t->tid, inj->saved.rip, 0);
	if (errno) {
		wps_err(at->ctx, "process %d: no syscall instruction found and "
			"its text at 0x%llx is unreadable: %s", (int)at->pid,
			(unsigned long long)inj->saved.rip, strerror(errno));
		return -errno;
	}
	if (ptrace(PTRACE_POKETEXT, inj->t->tid, inj->saved.rip,
		   (word & ~0xffffL) | 0x050f)) {
		wps_err(at->ctx, "process %d: cannot write a syscall "
			"instruction at 0x%llx: %s", (int)at->pid,
			(unsigned long long)inj->saved.rip, strerror(errno));
		return -errno;
	}
	inj->poked = true;
	inj->poke_word = word;
	inj->insn = inj->saved.rip;
	return 0;
}

/*
 * Make the borrowed registers safe to lose. If we die (SIGKILL) while the
 * thread holds our registers, the kernel detaches it and it runs on from
 * wherever they point: a `syscall` in the middle of some libc function,
 * with our rax, rdi, rsi and rsp. To close that window the way a signal
 * handler returns, the thread is pointed at a `syscall; ret` sequence with
 * rsp on a signal frame we write below its stack's red zone: the frame's
 * first word (a handler's return address) is libc's __restore_rt, whose
 * rt_sigreturn loads every register, the signal mask and the SSE state
 * the thread had. While we live, every injected call is stopped at its
 * exit and the registers are put back by PTRACE_SETREGS, so the `ret` and
 * the frame are never used; if we die, the thread finishes the one
 * syscall under way, returns through the frame and goes on as if it had
 * taken a signal. What can be left is one unused userfaultfd in the
 * target, if we die between its creation and the close().
 *
 * Best effort: without the sequences, or without room on the stack, the
 * injection runs as before (logged at debug) and the window stays open.
 */
struct sigframe_img {
	uint64_t pretcode;              /* where rt_sigreturn is called */
	ucontext_t uc;                  /* the kernel reads a prefix */
	struct user_fpregs_struct fx __attribute__((aligned(64)));
};

/* The kernel's struct ucontext is a prefix of glibc's (sigset_t aside,
 * of which it reads the first 8 bytes): the offsets it reads. */
_Static_assert(offsetof(ucontext_t, uc_mcontext) == 40, "ucontext ABI");
_Static_assert(offsetof(ucontext_t, uc_sigmask) == 296, "ucontext ABI");
_Static_assert(sizeof(struct user_fpregs_struct) == 512, "fxsave ABI");

#define K_UC_SIGCONTEXT_SS      0x2
#define K_UC_STRICT_RESTORE_SS  0x4
#define X86_RED_ZONE            128

static void inject_arm(struct wps_attach *at, struct inject *inj,
		       const struct wps_maps_vma *v, unsigned int n)
{
	static const uint8_t ret_gadget[] = { 0x0f, 0x05, 0xc3 };
	/* mov $15,%rax; syscall (glibc, musl) or mov $15,%eax; syscall */
	static const uint8_t restorer[2][9] = {
		{ 0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05 },
		{ 0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05 },
	};
	const struct user_regs_struct *r = &inj->saved;
	struct sigframe_img f;
	uint64_t gadget, restore, mask, frame;
	mcontext_t *mc = &f.uc.uc_mcontext;
	pid_t tid = inj->t->tid;
	struct iovec local, remote;

	if (!find_bytes(at, v, n, true, ret_gadget, sizeof(ret_gadget),
			&gadget) ||
	    (!find_bytes(at, v, n, true, restorer[0], 9, &restore) &&
	     !find_bytes(at, v, n, true, restorer[1], 7, &restore))) {
		wps_dbg(at->ctx, "process %d: no syscall-return sequences; "
			"the injection cannot be undone if we die in it",
			(int)at->pid);
		return;
	}
	memset(&f, 0, sizeof(f));
	if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(mask), &mask) ||
	    ptrace(PTRACE_GETFPREGS, tid, 0, &f.fx)) {
		wps_dbg(at->ctx, "thread %d: cannot read its signal mask or "
			"FPU state (%s); the injection cannot be undone if we "
			"die in it", (int)tid, strerror(errno));
		return;
	}
	/* No xstate magic in the software bytes: the kernel restores the
	 * legacy x87/SSE area only (AVX upper halves return to init). */
	memset(f.fx.padding, 0, sizeof(f.fx.padding));
	frame = (r->rsp - X86_RED_ZONE - sizeof(f)) & ~(uint64_t)63;
	f.pretcode = restore;
	f.uc.uc_flags = K_UC_SIGCONTEXT_SS | K_UC_STRICT_RESTORE_SS;
	/* An invalid mode: sigreturn's sigaltstack() fails, and the
	 * thread's alternate stack, which we cannot read, stays as it is. */
	f.uc.uc_stack.ss_flags = SS_ONSTACK | SS_DISABLE;
	mc->gregs[REG_R8] = r->r8;
	mc->gregs[REG_R9] = r->r9;
	mc->gregs[REG_R10] = r->r10;
	mc->gregs[REG_R11] = r->r11;
	mc->gregs[REG_R12] = r->r12;
	mc->gregs[REG_R13] = r->r13;
	mc->gregs[REG_R14] = r->r14;
	mc->gregs[REG_R15] = r->r15;
	mc->gregs[REG_RDI] = r->rdi;
	mc->gregs[REG_RSI] = r->rsi;
	mc->gregs[REG_RBP] = r->rbp;
	mc->gregs[REG_RBX] = r->rbx;
	mc->gregs[REG_RDX] = r->rdx;
	mc->gregs[REG_RAX] = r->rax;
	mc->gregs[REG_RCX] = r->rcx;
	mc->gregs[REG_RSP] = r->rsp;
	mc->gregs[REG_RIP] = r->rip;
	mc->gregs[REG_EFL] = r->eflags;
	/* cs, gs, fs, ss as four 16-bit fields */
	mc->gregs[REG_CSGSFS] = (r->cs & 0xffff) | (r->ss & 0xffff) << 48;
	mc->fpregs = (void *)(uintptr_t)(frame +
					 offsetof(struct sigframe_img, fx));
	memcpy(&f.uc.uc_sigmask, &mask, sizeof(mask));
	local = (struct iovec){ &f, sizeof(f) };
	remote = (struct iovec){ (void *)(uintptr_t)frame, sizeof(f) };
	if (process_vm_writev(at->pid, &local, 1, &remote, 1, 0) !=
	    (ssize_t)sizeof(f)) {
		wps_dbg(at->ctx, "thread %d: no room for a frame below its "
			"stack at 0x%llx (%s); the injection cannot be undone "
			"if we die in it", (int)tid,
			(unsigned long long)r->rsp, strerror(errno));
		return;
	}
	inj->gadget = gadget;
	inj->frame = frame;
}

/*
 * Borrow t. If it stopped on its way out of an interrupted syscall, rax
 * holds a restart code that the kernel would have turned into a restart
 * (rax = nr, rip back onto the syscall) had we not changed the registers:
 * do that rewrite in the saved copy, as the kernel would, so the thread
 * re-enters its syscall when it gets its registers back.
 */
static int inject_begin(struct wps_attach *at, struct athread *t,
			const struct wps_maps_vma *v, unsigned int n,
			struct inject *inj)
{
	struct user_regs_struct *r = &inj->saved;
	int ret;

	memset(inj, 0, sizeof(*inj));
	inj->t = t;
	if (ptrace(PTRACE_GETREGS, t->tid, 0, r)) {
		wps_err(at->ctx, "cannot read the registers of thread %d: %s",
			(int)t->tid, strerror(errno));
		return -errno;
	}
	if (r->cs != X86_64_USER_CS) {
		wps_err(at->ctx, "process %d runs 32-bit code; only x86_64 "
			"processes can be attached", (int)at->pid);
		return -EOPNOTSUPP;
	}
	if ((long)r->orig_rax >= 0) {
		switch (-(long)r->rax) {
		case K_ERESTARTSYS:
		case K_ERESTARTNOINTR:
		case K_ERESTARTNOHAND:
			r->rax = r->orig_rax;
			r->rip -= 2;
			r->orig_rax = (unsigned long long)-1;
			break;
		case K_ERESTART_RESTARTBLOCK:
			r->rax = SYS_restart_syscall;
			r->rip -= 2;
			r->orig_rax = (unsigned long long)-1;
			break;
		}
	}
	ret = find_syscall_insn(at, inj, v, n);
	if (!ret && !inj->poked)
		inject_arm(at, inj, v, n);
	return ret;
}

/* Put back the registers and any text we wrote. The thread stays held. */
static int inject_end(struct wps_attach *at, struct inject *inj)
{
	int ret = 0;

	if (inj->t->state != T_STOPPED)
		return -ESRCH;
	if (ptrace(PTRACE_SETREGS, inj->t->tid, 0, &inj->saved)) {
		ret = -errno;
		wps_err(at->ctx, "restoring the registers of thread %d: %s",
			(int)inj->t->tid, strerror(errno));
	}
	if (inj->poked &&
	    ptrace(PTRACE_POKETEXT, inj->t->tid, inj->insn, inj->poke_word)) {
		ret = -errno;
		wps_err(at->ctx, "restoring the text of process %d at 0x%llx: "
			"%s", (int)at->pid, (unsigned long long)inj->insn,
			strerror(errno));
	}
	return ret;
}

/*
 * $WPSNAP_ATTACH_TEST_KILL=NAME-entry|NAME-exit (NAME: userfaultfd or
 * close) makes us SIGKILL ourselves while the borrowed thread is stopped
 * at that syscall's entry or exit: tests/integration/attach.sh uses it to
 * check that the target survives our death inside the injection.
 */
static void test_kill(const char *what, bool exit)
{
	const char *k = getenv("WPSNAP_ATTACH_TEST_KILL");
	size_t n = strcspn(what, "(");

	if (k && !strncmp(k, what, n) && k[n] == '-' &&
	    !strcmp(k + n + 1, exit ? "exit" : "entry"))
		raise(SIGKILL);
}

/*
 * Run one syscall in the borrowed thread: point it at the instruction,
 * step to the syscall's entry stop, then to its exit stop, read rax.
 * orig_rax = -1 keeps the kernel from "restarting" whatever syscall the
 * thread was stopped in on top of ours.
 */
static int inject_call(struct wps_attach *at, struct inject *inj,
		       const char *what, long nr, long a0, long a1,
		       long *result)
{
	struct user_regs_struct r = inj->saved;
	struct athread *t = inj->t;
	int st;

	r.rax = nr;
	r.orig_rax = (unsigned long long)-1;
	r.rdi = a0;
	r.rsi = a1;
	r.rip = inj->insn;
	if (inj->frame) {
		r.rip = inj->gadget;
		r.rsp = inj->frame;
	}
	if (ptrace(PTRACE_SETREGS, t->tid, 0, &r)) {
		wps_err(at->ctx, "cannot set the registers of thread %d: %s",
			(int)t->tid, strerror(errno));
		return -errno;
	}
	for (;;) {
		struct __ptrace_syscall_info si;

		if (ptrace(PTRACE_SYSCALL, t->tid, 0, 0)) {
			wps_err(at->ctx, "thread %d: PTRACE_SYSCALL: %s",
				(int)t->tid, strerror(errno));
			return -errno;
		}
		t->state = T_RUNNING;
		if (wait_for(at, t, &st) || WIFEXITED(st)) {
			t->state = T_GONE;
			wps_err(at->ctx, "process %d exited while it ran %s "
				"for us", (int)at->pid, what);
			return -ESRCH;
		}
		if (WIFSIGNALED(st)) {
			t->state = T_GONE;
			if (WTERMSIG(st) == SIGSYS) {
				wps_err(at->ctx, "process %d was killed by its "
					"seccomp filter when made to call %s",
					(int)at->pid, what);
				return -EPERM;
			}
			wps_err(at->ctx, "process %d was killed by signal %d "
				"while it ran %s for us", (int)at->pid,
				WTERMSIG(st), what);
			return -ESRCH;
		}
		if (!WIFSTOPPED(st))
			continue;
		/* A signal on the way is kept for the resume; an event or
		 * group stop is stepped over. */
		note_status(at, t, st);
		if (WSTOPSIG(st) != (SIGTRAP | 0x80) || (st >> 16))
			continue;
		if (ptrace(PTRACE_GET_SYSCALL_INFO, t->tid, sizeof(si), &si) <= 0)
			return -errno;
		test_kill(what, si.op == PTRACE_SYSCALL_INFO_EXIT);
		if (si.op == PTRACE_SYSCALL_INFO_EXIT) {
			*result = si.exit.rval;
			return 0;
		}
	}
}

/*
 * A seccomp filter that kills on userfaultfd would take the process with
 * it, which no cleanup can undo: try the thread's filters first in a
 * child of ours. The filters are read with PTRACE_SECCOMP_GET_FILTER
 * (newest first) and installed oldest first, as the thread got them.
 * 0 if userfaultfd would pass; -EPERM (logged) if it would be refused.
 */
#define MAX_FILTERS 32

static int probe_seccomp(struct wps_attach *at, struct athread *t)
{
	struct sock_fprog prog[MAX_FILTERS];
	unsigned int n = 0, i;
	int ret = 0, st;
	pid_t child;

	for (n = 0; n < MAX_FILTERS; n++) {
		long len = ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, n, NULL);

		if (len <= 0)
			break;  /* ENOENT: no more; EINVAL: no filter mode */
		prog[n].len = (unsigned short)len;
		prog[n].filter = calloc(len, sizeof(struct sock_filter));
		if (!prog[n].filter) {
			ret = -ENOMEM;
			goto out;
		}
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, n,
			   prog[n].filter) != len) {
			free(prog[n].filter);
			break;
		}
	}
	if (!n)
		return 0;
	child = fork();
	if (child < 0) {
		ret = -errno;
		goto out;
	}
	if (!child) {
		long fd;

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			_exit(255);
		for (i = n; i-- > 0;)
			if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0,
				    &prog[i]))
				_exit(255);
		fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		_exit(fd < 0 ? (errno & 0x7f) : 0);
	}
	while (waitpid(child, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(st)) {
		wps_err(at->ctx, "process %d may not create a userfaultfd: its "
			"seccomp filter would kill it (signal %d)", (int)at->pid,
			WTERMSIG(st));
		ret = -EPERM;
	} else if (WIFEXITED(st) && WEXITSTATUS(st) && WEXITSTATUS(st) != 255) {
		wps_err(at->ctx, "process %d may not create a userfaultfd: its "
			"seccomp filter refuses it (%s)", (int)at->pid,
			strerror(WEXITSTATUS(st)));
		ret = -EPERM;
	}
	/* 255: the probe itself failed; the real call will tell. */
out:
	for (i = 0; i < n; i++)
		free(prog[i].filter);
	return ret;
}

/* The uffd, created inside the target and moved to us. */
static int take_uffd(struct wps_attach *at, struct inject *inj)
{
	long rfd = -1, rc;
	int ret, err;

	ret = inject_call(at, inj, "userfaultfd()", SYS_userfaultfd,
			  O_CLOEXEC | O_NONBLOCK, 0, &rfd);
	if (ret)
		return ret;
	if (rfd < 0) {
		err = (int)-rfd;
		wps_err(at->ctx, "process %d may not create a userfaultfd: %s "
			"(its seccomp filter forbids it, or it lacks "
			"CAP_SYS_PTRACE and vm.unprivileged_userfaultfd is 0)",
			(int)at->pid, strerror(err));
		return -err;
	}
	at->uffd = (int)syscall(SYS_pidfd_getfd, at->pidfd, (int)rfd, 0);
	ret = at->uffd < 0 ? -errno : 0;
	if (ret)
		wps_err(at->ctx, "cannot take the userfaultfd of process %d "
			"(fd %ld): %s", (int)at->pid, rfd, strerror(errno));
	/* Its copy goes in every case: only we may read faults from it. */
	err = inject_call(at, inj, "close()", SYS_close, rfd, 0, &rc);
	if (!err && rc < 0)
		err = (int)rc;
	if (err) {
		wps_err(at->ctx, "cannot close fd %ld in process %d: %s",
			rfd, (int)at->pid, strerror(-err));
		if (!ret)
			ret = err;
	}
	return ret;
}

/* ------------------------------------------------------------------ */
/* The object                                                          */
/* ------------------------------------------------------------------ */

static struct athread *pick_thread(struct wps_attach *at)
{
	struct athread *t = find_thread(at, at->pid);
	unsigned int i;

	if (t && t->state == T_STOPPED)
		return t;
	for (i = 0; i < at->nr_th; i++)
		if (at->th[i].state == T_STOPPED)
			return &at->th[i];
	return NULL;
}

static int open_pidfd(struct wps_ctx *ctx, pid_t pid, int *out)
{
	char st;
	int fd;

	if (pid <= 0 || pid == getpid()) {
		wps_err(ctx, "cannot attach to process %d%s", (int)pid,
			pid > 0 ? " (that is us)" : "");
		return -EINVAL;
	}
	fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0) {
		int err = errno;

		if (err == ESRCH)
			wps_err(ctx, "no process %d", (int)pid);
		else if (err == EINVAL)
			wps_err(ctx, "%d is a thread, not a process: give its "
				"process id (Tgid in /proc/%d/status)", (int)pid,
				(int)pid);
		else
			wps_err(ctx, "pidfd_open(%d): %s", (int)pid,
				strerror(err));
		return -err;
	}
	st = proc_state(pid, pid);
	if (st == 'T' || st == 'Z' || st == 'X') {
		wps_err(ctx, "process %d is %s", (int)pid, st == 'T' ?
			"stopped by job control (SIGCONT it first)" :
			"a zombie");
		close(fd);
		return st == 'T' ? -EBUSY : -ESRCH;
	}
	*out = fd;
	return 0;
}

int wps_attach_new(struct wps_ctx *ctx, pid_t pid,
		   const struct wps_attach_range *ranges, unsigned int nr,
		   struct wps_attach **out)
{
	struct wps_maps_vma *v = NULL;
	struct wps_attach *at;
	struct athread *t;
	struct inject inj;
	unsigned int nv = 0;
	bool injecting = false;
	int ret, r2;

	at = calloc(1, sizeof(*at));
	if (!at)
		return -ENOMEM;
	at->ctx = ctx;
	at->pid = pid;
	at->uffd = -1;
	at->pidfd = -1;
	ret = open_pidfd(ctx, pid, &at->pidfd);
	if (ret)
		goto fail;
	at->t_stop = wps_now_ns();
	ret = stop_all(at);
	if (ret)
		goto fail;
	at->seized_at_attach = at->nr_th;
	/* The mappings cannot change while every thread is stopped. */
	ret = read_vmas(ctx, pid, &v, &nv);
	if (ret)
		goto fail;
	ret = nr ? choose_ranges(at, v, nv, ranges, nr) :
		   choose_default(at, v, nv);
	if (ret)
		goto fail;
	if (!at->nr_regions) {
		wps_err(ctx, "process %d has no memory to snapshot",
			(int)pid);
		ret = -ENOENT;
		goto fail;
	}
	t = pick_thread(at);
	if (!t) {
		wps_err(ctx, "process %d exited", (int)pid);
		ret = -ESRCH;
		goto fail;
	}
	ret = probe_seccomp(at, t);
	if (ret)
		goto fail;
	ret = inject_begin(at, t, v, nv, &inj);
	injecting = !ret || inj.poked;
	if (!ret)
		ret = take_uffd(at, &inj);
	if (injecting) {
		r2 = inject_end(at, &inj);
		if (!ret)
			ret = r2;
	}
	if (ret)
		goto fail;
	/* Everything the snapshot needs from a stopped process is done. */
	resume_all(at);
	at->attach_stop_ns = wps_now_ns() - at->t_stop;
	free(v);
	wps_dbg(ctx, "attached to process %d: %u threads, %u regions, "
		"%" PRIu64 " bytes", (int)pid, at->nr_th, at->nr_regions,
		at->bytes);
	*out = at;
	return 0;
fail:
	free(v);
	wps_attach_free(at);
	return ret;
}

const struct wps_region *wps_attach_regions(const struct wps_attach *at,
					    unsigned int *nr)
{
	*nr = at->nr_regions;
	return at->regions;
}

int wps_attach_snapshot_new(struct wps_attach *at,
			    const struct wps_snapshot_opts *base,
			    struct wps_snapshot **out)
{
	struct wps_snapshot_opts o = *base;
	unsigned int i;
	int ret;

	if (at->snapshot_made)
		return -EALREADY;
	for (i = 0; i < at->nr_regions; i++)
		at->regions[i].name = at->names[i];
	at->outer_pause = base->pause;
	at->outer_resume = base->resume;
	at->outer_arg = base->pause_arg;
	o.pid = at->pid;
	o.uffd = at->uffd;
	o.pause = attach_pause;
	o.resume = attach_resume;
	o.pause_arg = at;
	ret = wps_snapshot_new(at->ctx, at->regions, at->nr_regions, &o, out);
	if (ret) {
		/* Registering on an exiting process's mm fails with ENOMEM:
		 * name the cause, allowing the exit a moment to show. */
		unsigned int tries;

		for (tries = 0; tries < 20 && !wps_attach_exited(at); tries++)
			nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
		if (wps_attach_exited(at)) {
			wps_err(at->ctx, "process %d exited", (int)at->pid);
			ret = -ESRCH;
		}
		return ret;
	}
	ret = check_unchanged(at);
	if (ret) {
		wps_snapshot_free(*out);
		*out = NULL;
		return ret;
	}
	at->snapshot_made = true;
	return 0;
}

int wps_attach_take_uffd(struct wps_attach *at, int *uffd)
{
	if (at->snapshot_made || at->uffd < 0)
		return -EALREADY;
	*uffd = at->uffd;
	at->uffd = -1;
	at->snapshot_made = true;
	detach_all(at);
	return 0;
}

bool wps_attach_exited(const struct wps_attach *at)
{
	struct pollfd p = { .fd = at->pidfd, .events = POLLIN };

	char st;

	/* A pidfd polls readable once the whole process has exited and its
	 * threads are reaped; before that the leader is a zombie (or gone:
	 * reaped already). */
	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)))
		return true;
	st = proc_state(at->pid, at->pid);
	return !st || st == 'Z' || st == 'X';
}

void wps_attach_get_info(const struct wps_attach *at,
			 struct wps_attach_info *info)
{
	memset(info, 0, sizeof(*info));
	info->pid = at->pid;
	info->threads = at->seized_at_attach;
	info->skipped = at->skipped;
	info->attach_stop_ns = at->attach_stop_ns;
	info->freeze_stop_ns = at->freeze_stop_ns;
	info->bytes = at->bytes;
}

void wps_attach_detach(struct wps_attach *at)
{
	if (at)
		detach_all(at);
}

void wps_attach_free(struct wps_attach *at)
{
	unsigned int i;

	if (!at)
		return;
	detach_all(at);
	if (at->uffd >= 0)
		close(at->uffd);
	for (i = 0; i < at->nr_regions; i++)
		if (at->regions[i].fd >= 0)
			close(at->regions[i].fd);
	if (at->pidfd >= 0)
		close(at->pidfd);
	free(at->regions);
	free(at->names);
	free(at->inodes);
	free(at->th);
	free(at);
}
