/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A process that knows nothing about wpsnap, for `wpsnap snapshot --pid`,
 * and the checker of the images taken of it.
 *
 * The consistency argument. One writer thread sweeps a single sequence of
 * 8-byte words: the memfd region's words, then the anonymous region's
 * (W words in all), in order, forever. Sweep s (s = 1, 2, ...) stores
 * V(k, s) into word k, with V(k, 0) = 0 (never written) and V(k, s) having
 * s in its top 32 bits and a hash of (k, s) in the low 32, so a value
 * names its sweep and a wrong or shifted value is seen. Each store is one
 * aligned 8-byte store (volatile, so never split or merged), issued in
 * program order by one thread, and x86 makes stores visible in program
 * order. Memory at any instant T is therefore exactly:
 *
 *	words [0, P) hold V(k, s) and words [P, W) hold V(k, s - 1)
 *
 * for the sweep s under way at T and the position P of the writer. The
 * checker accepts an image iff it has that shape: s is read from word 0,
 * then every word must be V(k, s) up to one cut and V(k, s - 1) after it.
 * No other memory state has that shape, so an image that passes equals
 * the memory of one instant, byte for byte, across both regions (a single
 * region is checked the same way: a cut outside it leaves it uniform).
 * The test also asks for the sweep number just before and just after the
 * snapshot (SIGUSR2), so that instant must lie inside the snapshot.
 *
 * The writer also checks every word before overwriting it (it must still
 * hold V(k, s - 1)): any change the snapshot made to the process's memory
 * is caught where it happens. On SIGUSR1 it finishes two full sweeps (every
 * page is written once more: a protection left behind would hang it, and
 * the test runs it under a timeout), the main thread, parked in read() on
 * a pipe all along (it is the thread wpsnap borrows for its syscalls),
 * checks that its read() came back whole, and the process exits 0 if
 * everything held.
 *
 * Run: attach_target [--memfd MIB] [--anon MIB] [--seccomp errno|kill]
 *                    [--exit-when-traced]
 *      attach_target --check IMAGE --addr HEX [--addr HEX] [--min S --max S]
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <linux/audit.h>

#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

struct seg {
	volatile uint64_t *p;
	uint64_t words;
};

struct target {
	struct seg seg[2];
	unsigned int nr_seg;
	uint32_t sweep;          /* under way; atomic */
	int stop;                /* atomic */
	int bad;                 /* atomic: the writer found a changed word */
	char why[256];
	int pipe[2];
	int exit_when_traced;
};

static uint64_t value(uint64_t k, uint32_t s)
{
	uint64_t x = k * 0x9E3779B97F4A7C15ull ^ ((uint64_t)s << 17) ^ s;

	if (!s)
		return 0;
	x ^= x >> 31;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return (uint64_t)s << 32 | (uint32_t)x;
}

static void *writer_main(void *arg)
{
	struct target *t = arg;
	uint32_t s, last = 0;

	for (s = 1;; s++) {
		uint64_t k = 0;
		unsigned int i;

		__atomic_store_n(&t->sweep, s, __ATOMIC_RELEASE);
		for (i = 0; i < t->nr_seg; i++) {
			volatile uint64_t *p = t->seg[i].p;
			uint64_t j;

			for (j = 0; j < t->seg[i].words; j++, k++) {
				uint64_t old = p[j];

				if (old != value(k, s - 1) &&
				    !__atomic_load_n(&t->bad, __ATOMIC_RELAXED)) {
					snprintf(t->why, sizeof(t->why),
						 "word %" PRIu64 " held 0x%016"
						 PRIx64 ", expected 0x%016" PRIx64
						 " (sweep %u)", k, old,
						 value(k, s - 1), s - 1);
					__atomic_store_n(&t->bad, 1,
							 __ATOMIC_RELEASE);
				}
				p[j] = value(k, s);
			}
		}
		if (s == 1) {
			printf("ready\n");
			fflush(stdout);
		}
		if (!last && __atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
			last = s + 2;
		if (last && s >= last)
			return NULL;
	}
}

/* Exits as soon as someone ptraces us: "the target exits mid-way". */
static void *watch_main(void *arg)
{
	char line[128];

	(void)arg;
	for (;;) {
		FILE *f = fopen("/proc/self/status", "re");
		int tracer = 0;

		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "TracerPid: %d", &tracer) == 1)
				break;
		if (f)
			fclose(f);
		if (tracer)
			_exit(3);
		usleep(200);
	}
	return NULL;
}

static void *signal_main(void *arg)
{
	struct target *t = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		sig = sigwaitinfo(&set, NULL);
		if (sig == SIGUSR2) {
			printf("sweep %u\n",
			       __atomic_load_n(&t->sweep, __ATOMIC_ACQUIRE));
			fflush(stdout);
		} else if (sig == SIGUSR1) {
			__atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
			if (write(t->pipe[1], "x", 1) != 1)
				abort();
			return NULL;
		}
		/* -1/EINTR: a ptrace stop ended the wait; wait again */
	}
}

static int install_seccomp(const char *mode)
{
	uint32_t action = !strcmp(mode, "kill") ? SECCOMP_RET_KILL_PROCESS :
			  SECCOMP_RET_ERRNO | EPERM;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, action),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
		perror("attach_target: seccomp");
		return -1;
	}
	return 0;
}

static int run_target(uint64_t memfd_mib, uint64_t anon_mib,
		      const char *seccomp, int exit_when_traced)
{
	pthread_t wthr, sthr, xthr;
	struct target t = { 0 };
	uint64_t msize = memfd_mib << 20, asize = anon_mib << 20;
	sigset_t set;
	ssize_t got;
	char c = 0;
	int fd;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (seccomp && install_seccomp(seccomp))
		return 2;
	if (pipe(t.pipe))
		return 2;
	printf("pid %d\n", (int)getpid());
	if (msize) {
		void *p;

		fd = memfd_create("attach_target", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, (off_t)msize))
			return 2;
		p = mmap(NULL, msize, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			 0);
		close(fd);  /* the mapping keeps the file */
		if (p == MAP_FAILED)
			return 2;
		t.seg[t.nr_seg++] = (struct seg){ p, msize / 8 };
		printf("memfd %" PRIxPTR "-%" PRIxPTR "\n", (uintptr_t)p,
		       (uintptr_t)p + msize);
	}
	if (asize) {
		void *p = mmap(NULL, asize, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return 2;
		t.seg[t.nr_seg++] = (struct seg){ p, asize / 8 };
		printf("anon %" PRIxPTR "-%" PRIxPTR "\n", (uintptr_t)p,
		       (uintptr_t)p + asize);
	}
	fflush(stdout);
	if (pthread_create(&wthr, NULL, writer_main, &t) ||
	    pthread_create(&sthr, NULL, signal_main, &t))
		return 2;
	if (exit_when_traced && pthread_create(&xthr, NULL, watch_main, NULL))
		return 2;

	/* Parked in a blocking syscall the whole time: attaching interrupts
	 * it, and it must come back as if nothing happened. */
	got = read(t.pipe[0], &c, 1);
	if (got != 1 || c != 'x') {
		fprintf(stderr, "attach_target: read() in the main thread "
			"returned %zd (errno %d, byte %d): a syscall restart "
			"was broken\n", got, got < 0 ? errno : 0, c);
		return 1;
	}
	pthread_join(sthr, NULL);
	pthread_join(wthr, NULL);
	if (__atomic_load_n(&t.bad, __ATOMIC_ACQUIRE)) {
		fprintf(stderr, "attach_target: memory changed under me: %s\n",
			t.why);
		return 1;
	}
	printf("verified %u sweeps\n", t.sweep);
	return 0;
}

static int check_image(const char *path, const uint64_t *addr,
		       unsigned int naddr, long min, long max)
{
	const size_t chunk = 1 << 20;
	uint64_t k = 0, cut = UINT64_MAX, off;
	uint32_t s = 0;
	struct wps_image *img;
	struct wps_ctx *ctx;
	unsigned int a, r, nr;
	uint64_t *buf;
	int ret = 1;

	if (wps_ctx_new(&ctx))
		return 2;
	if (wps_image_open(ctx, path, 0, &img)) {
		wps_ctx_free(ctx);
		return 2;
	}
	buf = malloc(chunk);
	nr = wps_image_get_info(img)->nr_regions;
	for (a = 0; a < naddr; a++) {
		const struct wps_image_region *ir = NULL;

		for (r = 0; r < nr; r++) {
			ir = wps_image_get_region(img, r);
			if (ir->host_addr == addr[a])
				break;
		}
		if (r == nr) {
			fprintf(stderr, "check: no region at %" PRIx64 " in %s\n",
				addr[a], path);
			goto out;
		}
		for (off = 0; off < ir->size; off += chunk) {
			size_t len = ir->size - off < chunk ? ir->size - off :
							      chunk;
			size_t i;

			if (wps_image_read(img, r, off, buf, len)) {
				fprintf(stderr, "check: reading %s failed\n",
					path);
				goto out;
			}
			for (i = 0; i < len / 8; i++, k++) {
				if (!k)
					s = (uint32_t)(buf[0] >> 32);
				if (cut == UINT64_MAX && buf[i] == value(k, s))
					continue;
				if (cut == UINT64_MAX)
					cut = k;
				if (buf[i] != value(k, s ? s - 1 : 0)) {
					fprintf(stderr, "check: INCONSISTENT at "
						"word %" PRIu64 ": 0x%016" PRIx64
						", expected 0x%016" PRIx64 " (sweep "
						"%u, cut at %" PRIu64 ")\n", k,
						buf[i], cut == k ? value(k, s) :
						value(k, s - 1), s, cut);
					goto out;
				}
			}
		}
	}
	if (!s || (min >= 0 && s < min) || (max >= 0 && s > max)) {
		fprintf(stderr, "check: the image is of sweep %u, not within "
			"the snapshot's [%ld, %ld]\n", s, min, max);
		goto out;
	}
	printf("consistent: one instant, sweep %u, writer at word %" PRIu64
	       " of %" PRIu64 "\n", s, cut == UINT64_MAX ? k : cut, k);
	ret = 0;
out:
	free(buf);
	wps_image_close(img);
	wps_ctx_free(ctx);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "memfd", required_argument, NULL, 'm' },
		{ "anon", required_argument, NULL, 'a' },
		{ "seccomp", required_argument, NULL, 's' },
		{ "exit-when-traced", no_argument, NULL, 'x' },
		{ "check", required_argument, NULL, 'c' },
		{ "addr", required_argument, NULL, 'A' },
		{ "min", required_argument, NULL, 'n' },
		{ "max", required_argument, NULL, 'N' },
		{ 0 }
	};
	uint64_t memfd = 64, anon = 64, addr[2];
	const char *seccomp = NULL, *check = NULL;
	unsigned int naddr = 0;
	long min = -1, max = -1;
	int c, xt = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': memfd = strtoull(optarg, NULL, 0); break;
		case 'a': anon = strtoull(optarg, NULL, 0); break;
		case 's': seccomp = optarg; break;
		case 'x': xt = 1; break;
		case 'c': check = optarg; break;
		case 'A':
			if (naddr < 2)
				addr[naddr++] = strtoull(optarg, NULL, 16);
			break;
		case 'n': min = strtol(optarg, NULL, 0); break;
		case 'N': max = strtol(optarg, NULL, 0); break;
		default: return 2;
		}
	}
	if (check)
		return check_image(check, addr, naddr, min, max);
	return run_target(memfd, anon, seccomp, xt);
}
