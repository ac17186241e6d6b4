/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap netbuf (also the wpsnap-netbuf program): network output commit
 * from the command line.
 *
 *   hold     hold an interface's output and run checkpoint epochs on a
 *            timer (epoch boundary, simulated checkpoint time, commit),
 *            printing every boundary and commit with its times; the
 *            integration test drives and checks it (tests/integration/
 *            netbuf.py). The real series with the same lines is
 *            `wpsnap checkpoint --netbuf` (the library's checkpoint
 *            session, src/ckpt_session.c); this timer stands in for it.
 *   bench    one run, two phases on the same traffic: raw (nothing held)
 *            and held; the latency the holding adds per epoch, as a ratio
 *            of the raw latency, and what epoch/commit cost.
 *   cleanup  remove what a killed holder left (rules, plug qdisc).
 *
 * Owns no library state: everything goes through <wpsnap/netbuf.h>.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/netbuf.h>
#include <wpsnap/wpsnap.h>

#include "base/clock.h"
#include "tools/netbuf_cmd.h"

/* ------------------------------------------------------------------ */
/* The checkpoint side                                                 */
/* ------------------------------------------------------------------ */

/*
 * The simulated checkpoint side of output commit: nbd_freeze() closes the
 * epoch where a checkpoint's instant would be, nbd_durable() releases it
 * where the checkpoint would be durable. Both record the call's start and
 * end (CLOCK_MONOTONIC ns, kept for the bench's per-packet analysis) and,
 * with a log, print "epoch N T0 T1" / "commit N T0 T1" lines, the same
 * lines `wpsnap checkpoint --netbuf` prints from the real series.
 */
struct nbd_times {
	uint64_t t0, t1;
};

struct nb_driver {
	struct wps_netbuf *nb;       /* NULL: record times only (raw runs) */
	FILE *log;                   /* NULL: no lines */
	uint64_t epoch;              /* last closed */
	uint64_t committed;          /* last committed */
	struct nbd_times *freeze;    /* [epoch - 1] */
	struct nbd_times *durable;   /* [epoch - 1] */
	size_t cap;
};

static int nbd_grow(struct nb_driver *d, uint64_t epoch)
{
	if (epoch <= d->cap)
		return 0;
	size_t cap = d->cap ? d->cap * 2 : 256;
	struct nbd_times *f = realloc(d->freeze, cap * sizeof(*f));

	if (!f)
		return -ENOMEM;
	d->freeze = f;
	f = realloc(d->durable, cap * sizeof(*f));
	if (!f)
		return -ENOMEM;
	d->durable = f;
	memset(d->freeze + d->cap, 0, (cap - d->cap) * sizeof(*f));
	memset(d->durable + d->cap, 0, (cap - d->cap) * sizeof(*f));
	d->cap = cap;
	return 0;
}

static int nbd_freeze(struct nb_driver *d, uint64_t *epoch)
{
	uint64_t t0, t1, e = d->epoch + 1;
	int ret;

	ret = nbd_grow(d, e);
	if (ret < 0)
		return ret;
	t0 = wps_now_ns();
	if (d->nb) {
		ret = wps_netbuf_epoch(d->nb, &e);
		if (ret < 0)
			return ret;
	}
	t1 = wps_now_ns();
	d->epoch = e;
	d->freeze[e - 1] = (struct nbd_times){ t0, t1 };
	if (d->log)
		fprintf(d->log, "epoch %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", e, t0, t1);
	*epoch = e;
	return 0;
}

static int nbd_durable(struct nb_driver *d, uint64_t epoch)
{
	uint64_t t0, t1;
	int ret = 0;

	t0 = wps_now_ns();
	if (d->nb)
		ret = wps_netbuf_commit(d->nb, epoch);
	t1 = wps_now_ns();
	if (ret < 0)
		return ret;
	for (uint64_t e = d->committed + 1; e <= epoch; e++)
		d->durable[e - 1] = (struct nbd_times){ t0, t1 };
	if (epoch > d->committed)
		d->committed = epoch;
	if (d->log)
		fprintf(d->log, "commit %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", epoch, t0, t1);
	return 0;
}

static void nbd_release(struct nb_driver *d)
{
	free(d->freeze);
	free(d->durable);
	d->freeze = d->durable = NULL;
	d->cap = 0;
}

/*
 * The timer standing in for the checkpoint engine: every epoch_ns a
 * freeze, checkpoint_ns later the checkpoint is "durable". When the
 * checkpoint takes longer than an epoch, epochs overlap (pipelined, as
 * with a real engine that streams while the guest runs), except with the
 * plug qdisc, which holds one closed epoch: a tick is then skipped.
 * Stops after `until` (monotonic ns, 0: never) or max_epochs, once
 * everything closed is committed, or on a blocked signal in sigs
 * (returned as a positive signal number).
 */
struct timer_opts {
	uint64_t epoch_ns, checkpoint_ns, until;
	uint64_t max_epochs;
	bool one_outstanding;
	const sigset_t *sigs;
};

static int run_timer(struct nb_driver *d, const struct timer_opts *o)
{
	uint64_t next_tick = wps_now_ns() + o->epoch_ns;
	uint64_t *due = NULL, ndue = 0, head = 0;
	size_t cap = 0;
	int ret = 0;

	for (;;) {
		uint64_t now = wps_now_ns(), wake = next_tick;
		bool closing = !(o->max_epochs && d->epoch >= o->max_epochs) &&
			       !(o->until && now >= o->until);

		if (head < ndue && due[head] < wake)
			wake = due[head];
		if (!closing && head == ndue)
			break;
		if (wake > now) {
			uint64_t left = wake - now;
			struct timespec ts = { (time_t)(left / 1000000000ull),
					       (long)(left % 1000000000ull) };
			int sig = o->sigs ? sigtimedwait(o->sigs, NULL, &ts)
					  : nanosleep(&ts, NULL);

			if (o->sigs && sig > 0) {
				ret = sig;
				break;
			}
			continue;
		}
		if (head < ndue && now >= due[head]) {
			/* epochs are committed in order: head is epoch
			 * committed + 1 */
			ret = nbd_durable(d, d->committed + 1);
			if (ret < 0)
				break;
			head++;
			continue;
		}
		if (now >= next_tick) {
			uint64_t e;

			next_tick += o->epoch_ns;
			if (next_tick < now)
				next_tick = now + o->epoch_ns;
			if (!closing || (o->one_outstanding && head < ndue))
				continue;
			ret = nbd_freeze(d, &e);
			if (ret < 0)
				break;
			if (ndue == cap) {
				size_t c = cap ? cap * 2 : 256;
				uint64_t *p = realloc(due, c * sizeof(*p));

				if (!p) {
					ret = -ENOMEM;
					break;
				}
				due = p;
				cap = c;
			}
			due[ndue++] = wps_now_ns() + o->checkpoint_ns;
		}
	}
	free(due);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Options shared by the subcommands                                   */
/* ------------------------------------------------------------------ */

struct cmd_opts {
	struct wps_netbuf_opts nb;
	const char *netns;       /* namespace of --if (name or path) */
	const char *peer_netns;  /* bench: the receiver's namespace */
	const char *dst;
	unsigned int port;
	double epoch_ms, checkpoint_ms, seconds;
	uint64_t epochs;
	unsigned int rate;
	unsigned int size;
	bool raw;                /* hold: no netbuf, times only */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap netbuf hold --if IF [options]\n"
		"       wpsnap netbuf bench --if IF --netns NS --peer-netns NS --dst ADDR [options]\n"
		"       wpsnap netbuf cleanup --if IF [--netns NS] [--queue N]\n"
		"Network output commit: hold IF's output, release each epoch when its\n"
		"checkpoint is durable (checkpoints simulated by a timer).\n\n"
		"  -i, --if IF              interface whose output is held\n"
		"  -n, --netns NS           its network namespace (name in /run/netns or path)\n"
		"  -b, --backend B          auto (default), plug or nfqueue\n"
		"  -q, --queue N            NFQUEUE number (default 0)\n"
		"      --ingress            hold packets arriving from IF (NFQUEUE only)\n"
		"      --no-ipv6            hold IPv4 only\n"
		"  -e, --epoch-ms MS        epoch length (default 20)\n"
		"  -c, --checkpoint-ms MS   simulated checkpoint time (default 5)\n"
		"      --epochs N           hold: stop after N epochs (default: until SIGTERM)\n"
		"      --raw                hold: print the same lines, hold nothing\n"
		"      --peer-netns NS      bench: receiver's namespace\n"
		"      --dst ADDR           bench: receiver's IPv4 address\n"
		"      --port P             bench: UDP port (default 47000)\n"
		"      --rate PPS           bench: datagrams per second (default 2000)\n"
		"      --size B             bench: datagram payload bytes (default 64)\n"
		"  -s, --seconds S          bench: seconds per phase (default 3)\n"
		"  -v, --verbose            log at info level\n"
		"hold prints 'ready BACKEND', then 'epoch N T0 T1' and 'commit N T0 T1'\n"
		"(CLOCK_MONOTONIC ns); SIGTERM/SIGINT drop what is held and exit 0.\n");
}

static int parse_opts(struct wps_ctx *ctx, int argc, char **argv, struct cmd_opts *o)
{
	enum { O_INGRESS = 256, O_NOIPV6, O_EPOCHS, O_RAW, O_PEER, O_DST, O_PORT,
	       O_RATE, O_SIZE };
	static const struct option lo[] = {
		{ "if", required_argument, NULL, 'i' },
		{ "netns", required_argument, NULL, 'n' },
		{ "backend", required_argument, NULL, 'b' },
		{ "queue", required_argument, NULL, 'q' },
		{ "ingress", no_argument, NULL, O_INGRESS },
		{ "no-ipv6", no_argument, NULL, O_NOIPV6 },
		{ "epoch-ms", required_argument, NULL, 'e' },
		{ "checkpoint-ms", required_argument, NULL, 'c' },
		{ "epochs", required_argument, NULL, O_EPOCHS },
		{ "raw", no_argument, NULL, O_RAW },
		{ "peer-netns", required_argument, NULL, O_PEER },
		{ "dst", required_argument, NULL, O_DST },
		{ "port", required_argument, NULL, O_PORT },
		{ "rate", required_argument, NULL, O_RATE },
		{ "size", required_argument, NULL, O_SIZE },
		{ "seconds", required_argument, NULL, 's' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct cmd_opts){ .nb = WPS_NETBUF_OPTS_INIT, .epoch_ms = 20, .checkpoint_ms = 5,
				.seconds = 3, .rate = 2000, .size = 64, .port = 47000 };
	optind = 1;
	while ((c = getopt_long(argc, argv, "i:n:b:q:e:c:s:vh", lo, NULL)) != -1) {
		switch (c) {
		case 'i': o->nb.ifname = optarg; break;
		case 'n': o->netns = optarg; break;
		case 'b':
			if (wps_netbuf_backend_parse(optarg, &o->nb.backend)) {
				fprintf(stderr, "netbuf: unknown backend '%s' (auto, plug, nfqueue)\n", optarg);
				return -EINVAL;
			}
			break;
		case 'q': o->nb.queue = (uint16_t)strtoul(optarg, NULL, 0); break;
		case O_INGRESS: o->nb.direction = WPS_NETBUF_INGRESS; break;
		case O_NOIPV6: o->nb.flags |= WPS_NETBUF_NO_IPV6; break;
		case 'e': o->epoch_ms = strtod(optarg, NULL); break;
		case 'c': o->checkpoint_ms = strtod(optarg, NULL); break;
		case O_EPOCHS: o->epochs = strtoull(optarg, NULL, 0); break;
		case O_RAW: o->raw = true; break;
		case O_PEER: o->peer_netns = optarg; break;
		case O_DST: o->dst = optarg; break;
		case O_PORT: o->port = (unsigned int)strtoul(optarg, NULL, 0); break;
		case O_RATE: o->rate = (unsigned int)strtoul(optarg, NULL, 0); break;
		case O_SIZE: o->size = (unsigned int)strtoul(optarg, NULL, 0); break;
		case 's': o->seconds = strtod(optarg, NULL); break;
		case 'v': wps_ctx_set_log_level(ctx, WPS_LOG_INFO); break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -EINVAL;
		}
	}
	if (!o->nb.ifname) {
		fprintf(stderr, "netbuf: --if is required\n");
		return -EINVAL;
	}
	if (o->epoch_ms <= 0 || o->checkpoint_ms < 0) {
		fprintf(stderr, "netbuf: --epoch-ms must be > 0 and --checkpoint-ms >= 0\n");
		return -EINVAL;
	}
	if (o->size < 16)
		o->size = 16;
	return 0;
}

static void print_stats(FILE *f, const struct wps_netbuf_stats *st)
{
	fprintf(f, "stats backend %s epochs %" PRIu64 " commits %" PRIu64
		" queued %" PRIu64 " released %" PRIu64 " held %" PRIu64
		" held_max %" PRIu64 " overruns %" PRIu64 " kernel_dropped %" PRIu64
		" user_dropped %" PRIu64 " epoch_us_mean %.1f epoch_us_max %.1f"
		" commit_us_mean %.1f commit_us_max %.1f\n",
		wps_netbuf_backend_name(st->backend), st->epochs, st->commits,
		st->queued_packets, st->released_packets, st->held_packets, st->held_max,
		st->overruns, st->kernel_dropped, st->kernel_user_dropped,
		st->epochs ? st->epoch_ns_total / 1e3 / st->epochs : 0.0,
		st->epoch_ns_max / 1e3,
		st->commits ? st->commit_ns_total / 1e3 / st->commits : 0.0,
		st->commit_ns_max / 1e3);
}

/* ------------------------------------------------------------------ */
/* hold                                                                */
/* ------------------------------------------------------------------ */

static int cmd_hold(struct wps_ctx *ctx, struct cmd_opts *o)
{
	struct nb_driver d = { .log = stdout };
	struct timer_opts to = { 0 };
	struct wps_netbuf_stats st;
	sigset_t sigs;
	int ret, status = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* signals are received synchronously, as the timer's sleep */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	if (o->netns) {
		o->nb.netns_fd = wps_netbuf_open_netns(ctx, o->netns);
		if (o->nb.netns_fd < 0)
			return 1;
	}
	if (!o->raw) {
		ret = wps_netbuf_new(ctx, &o->nb, &d.nb);
		if (ret < 0) {
			fprintf(stderr, "netbuf: cannot hold %s: %s\n", o->nb.ifname, strerror(-ret));
			goto out;
		}
	}
	printf("ready %s\n", d.nb ? wps_netbuf_backend_name(wps_netbuf_backend(d.nb)) : "raw");
	to.epoch_ns = (uint64_t)(o->epoch_ms * 1e6);
	to.checkpoint_ns = (uint64_t)(o->checkpoint_ms * 1e6);
	to.max_epochs = o->epochs;
	to.one_outstanding = d.nb && wps_netbuf_backend(d.nb) == WPS_NETBUF_PLUG;
	to.sigs = &sigs;
	ret = run_timer(&d, &to);
	if (ret < 0) {
		fprintf(stderr, "netbuf: epoch loop failed: %s\n", strerror(-ret));
		goto out;
	}
	if (ret > 0)
		printf("signal %d: dropping epochs after %" PRIu64 "\n", ret, d.committed);
	if (d.nb) {
		wps_netbuf_get_stats(d.nb, &st);
		print_stats(stdout, &st);
	}
	status = 0;
out:
	wps_netbuf_free(d.nb);
	nbd_release(&d);
	if (o->nb.netns_fd >= 0)
		close(o->nb.netns_fd);
	return status;
}

/* ------------------------------------------------------------------ */
/* bench                                                               */
/* ------------------------------------------------------------------ */

struct bench {
	const struct cmd_opts *o;
	int gns, pns;            /* namespaces of the sender, the receiver */
	struct sockaddr_in dst;
	uint64_t n;              /* room for this many datagrams */
	uint64_t *s0, *s1;       /* send(): before, after, by sequence */
	uint64_t *arr;           /* arrival, by sequence (0: never) */
	uint64_t sent, received, reordered, dups, max_seq;
	atomic_bool stop_recv;
	atomic_bool recv_ready;
	int err;
};

static int udp_socket_in(int ns, int bufopt, int size)
{
	int s, cur = -1;

	cur = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (cur < 0 || setns(ns, CLONE_NEWNET) < 0) {
		if (cur >= 0)
			close(cur);
		return -errno;
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (setns(cur, CLONE_NEWNET) < 0) {
		close(cur);
		if (s >= 0)
			close(s);
		return -errno;
	}
	close(cur);
	if (s < 0)
		return -errno;
	/* a held datagram stays charged to its socket: without room the
	 * sender would block for an epoch and the timings would lie */
	setsockopt(s, SOL_SOCKET, bufopt, &size, sizeof(size));
	return s;
}

static void *bench_recv(void *arg)
{
	struct bench *b = arg;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)b->o->port) };
	struct timeval tv = { 0, 20000 };
	uint8_t buf[65536];
	int s;

	s = udp_socket_in(b->pns, SO_RCVBUFFORCE, 64 << 20);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		b->err = s < 0 ? s : -errno;
		fprintf(stderr, "netbuf bench: receiver socket on port %u: %s\n", b->o->port,
			strerror(-b->err));
		if (s >= 0)
			close(s);
		atomic_store(&b->recv_ready, true);
		return NULL;
	}
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	atomic_store(&b->recv_ready, true);
	while (!atomic_load(&b->stop_recv)) {
		ssize_t n = recv(s, buf, sizeof(buf), 0);
		uint64_t t = wps_now_ns(), seq;

		if (n < 8)
			continue;
		memcpy(&seq, buf, sizeof(seq));
		if (seq >= b->n)
			continue;
		if (b->arr[seq]) {
			b->dups++;
			continue;
		}
		b->arr[seq] = t;
		b->received++;
		if (seq < b->max_seq)
			b->reordered++;
		else
			b->max_seq = seq;
	}
	close(s);
	return NULL;
}

struct sender {
	struct bench *b;
	uint64_t start;
};

static void *bench_send(void *arg)
{
	struct sender *sd = arg;
	struct bench *b = sd->b;
	uint8_t buf[65536] = { 0 };
	uint64_t i, total = b->n;
	int s;

	s = udp_socket_in(b->gns, SO_SNDBUFFORCE, 64 << 20);
	if (s < 0 || connect(s, (struct sockaddr *)&b->dst, sizeof(b->dst)) < 0) {
		b->err = s < 0 ? s : -errno;
		fprintf(stderr, "netbuf bench: sender socket: %s\n", strerror(-b->err));
		if (s >= 0)
			close(s);
		return NULL;
	}
	for (i = 0; i < total; i++) {
		uint64_t due = sd->start + i * 1000000000ull / b->o->rate;
		struct timespec ts = { (time_t)(due / 1000000000ull), (long)(due % 1000000000ull) };

		if (wps_now_ns() < due)
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		memcpy(buf, &i, sizeof(i));
		b->s0[i] = wps_now_ns();
		if (send(s, buf, b->o->size, 0) < 0) {
			b->err = -errno;
			fprintf(stderr, "netbuf bench: send #%" PRIu64 ": %s\n", i, strerror(errno));
			break;
		}
		b->s1[i] = wps_now_ns();
	}
	b->sent = i;
	close(s);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct dist {
	uint64_t n;
	double p50, p99, max, mean; /* microseconds */
};

static struct dist dist_of(uint64_t *v, uint64_t n)
{
	struct dist d = { .n = n };
	double sum = 0;

	if (!n)
		return d;
	qsort(v, n, sizeof(*v), cmp_u64);
	for (uint64_t i = 0; i < n; i++)
		sum += (double)v[i];
	d.p50 = v[n / 2] / 1e3;
	d.p99 = v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1e3;
	d.max = v[n - 1] / 1e3;
	d.mean = sum / (double)n / 1e3;
	return d;
}

static void print_dist(const char *what, const struct dist *d, const char *extra)
{
	printf("  %-34s %9.1f %9.1f %9.1f %9.1f  %s\n", what, d->p50, d->p99, d->max, d->mean,
	       extra ? extra : "");
}

/* First epoch (1-based) whose freeze call began after (start) or ended
 * after (end) t; d->epoch + 1 when none did. */
static uint64_t epoch_after(const struct nb_driver *d, uint64_t t, bool use_start)
{
	uint64_t lo = 0, hi = d->epoch;

	while (lo < hi) {
		uint64_t mid = (lo + hi) / 2;
		uint64_t ft = use_start ? d->freeze[mid].t0 : d->freeze[mid].t1;

		if (ft > t)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo + 1;
}

struct phase {
	struct dist lat, wait, release, epoch_span, send;
	uint64_t sent, received, lost, reordered, dups, early, ambiguous, epochs;
	struct wps_netbuf_stats st;
	bool held;
};

static int bench_phase(struct wps_ctx *ctx, struct bench *b, bool held, struct phase *ph)
{
	struct nb_driver d = { 0 };
	struct timer_opts to = { 0 };
	struct sender sd = { .b = b };
	pthread_t rt, st;
	uint64_t *lat = NULL, *wait = NULL, *rel = NULL, *span = NULL, *snd = NULL;
	uint64_t nl = 0, nw = 0, e;
	int ret;

	memset(ph, 0, sizeof(*ph));
	ph->held = held;
	b->sent = b->received = b->reordered = b->dups = b->max_seq = 0;
	b->err = 0;
	memset(b->arr, 0, b->n * sizeof(*b->arr));
	atomic_store(&b->stop_recv, false);
	atomic_store(&b->recv_ready, false);
	if (held) {
		ret = wps_netbuf_new(ctx, &b->o->nb, &d.nb);
		if (ret < 0) {
			fprintf(stderr, "netbuf bench: cannot hold %s: %s\n", b->o->nb.ifname,
				strerror(-ret));
			return ret;
		}
	}
	ret = pthread_create(&rt, NULL, bench_recv, b);
	if (ret) {
		wps_netbuf_free(d.nb);
		return -ret;
	}
	while (!atomic_load(&b->recv_ready))
		usleep(1000);
	sd.start = wps_now_ns() + 20000000ull;
	ret = pthread_create(&st, NULL, bench_send, &sd);
	if (ret) {
		atomic_store(&b->stop_recv, true);
		pthread_join(rt, NULL);
		wps_netbuf_free(d.nb);
		return -ret;
	}
	to.epoch_ns = (uint64_t)(b->o->epoch_ms * 1e6);
	to.checkpoint_ns = (uint64_t)(b->o->checkpoint_ms * 1e6);
	/* run past the last datagram by two epochs and a checkpoint, so the
	 * last one is committed like any other */
	to.until = sd.start + (uint64_t)(b->o->seconds * 1e9) + 2 * to.epoch_ns +
		   to.checkpoint_ns + 50000000ull;
	to.one_outstanding = d.nb && wps_netbuf_backend(d.nb) == WPS_NETBUF_PLUG;
	ret = run_timer(&d, &to);
	pthread_join(st, NULL);
	if (ret == 0) {
		/* anything sent after the last tick */
		ret = nbd_freeze(&d, &e);
		if (ret == 0)
			ret = nbd_durable(&d, e);
	}
	usleep(100000);
	atomic_store(&b->stop_recv, true);
	pthread_join(rt, NULL);
	if (d.nb) {
		wps_netbuf_get_stats(d.nb, &ph->st);
		wps_netbuf_free(d.nb);
	}
	if (ret < 0 || b->err < 0) {
		fprintf(stderr, "netbuf bench: phase failed: %s\n", strerror(-(ret < 0 ? ret : b->err)));
		nbd_release(&d);
		return ret < 0 ? ret : b->err;
	}

	lat = calloc(b->sent + 1, sizeof(*lat));
	wait = calloc(b->sent + 1, sizeof(*wait));
	rel = calloc(b->sent + 1, sizeof(*rel));
	span = calloc(d.epoch + 1, sizeof(*span));
	snd = calloc(b->sent + 1, sizeof(*snd));
	if (!lat || !wait || !rel || !span || !snd) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t i = 0; i < b->sent; i++) {
		uint64_t lo, hi;

		snd[i] = b->s1[i] - b->s0[i];
		if (!b->arr[i])
			continue;
		lat[nl++] = b->arr[i] - b->s0[i];
		if (!held)
			continue;
		/* its epoch is at least the first whose freeze ended after
		 * the send began, at most the first whose freeze began after
		 * the send returned */
		lo = epoch_after(&d, b->s0[i], false);
		hi = epoch_after(&d, b->s1[i], true);
		if (lo > d.epoch)
			continue;
		if (b->arr[i] < d.durable[lo - 1].t0)
			ph->early++;
		if (lo != hi) {
			ph->ambiguous++;
			continue;
		}
		wait[nw] = d.durable[lo - 1].t0 - b->s0[i];
		rel[nw++] = b->arr[i] > d.durable[lo - 1].t0 ? b->arr[i] - d.durable[lo - 1].t0 : 0;
		if (b->arr[i] - d.durable[lo - 1].t0 > span[lo - 1])
			span[lo - 1] = b->arr[i] - d.durable[lo - 1].t0;
	}
	ph->sent = b->sent;
	ph->received = b->received;
	ph->lost = b->sent - b->received;
	ph->reordered = b->reordered;
	ph->dups = b->dups;
	ph->epochs = d.epoch;
	ph->lat = dist_of(lat, nl);
	ph->send = dist_of(snd, b->sent);
	ph->wait = dist_of(wait, nw);
	ph->release = dist_of(rel, nw);
	{
		uint64_t ns = 0;

		for (uint64_t k = 0; k < d.epoch; k++)
			if (span[k])
				span[ns++] = span[k];
		ph->epoch_span = dist_of(span, ns);
	}
	ret = 0;
out:
	free(lat);
	free(wait);
	free(rel);
	free(span);
	free(snd);
	nbd_release(&d);
	return ret;
}

static int cmd_bench(struct wps_ctx *ctx, struct cmd_opts *o)
{
	struct bench b = { .o = o, .gns = -1, .pns = -1 };
	struct phase raw, held;
	char extra[128];
	int ret, status = 1;

	if (!o->netns || !o->peer_netns || !o->dst) {
		fprintf(stderr, "netbuf bench: needs --netns, --peer-netns and --dst\n");
		return 2;
	}
	if (!o->rate || o->seconds <= 0) {
		fprintf(stderr, "netbuf bench: --rate and --seconds must be > 0\n");
		return 2;
	}
	b.dst.sin_family = AF_INET;
	b.dst.sin_port = htons((uint16_t)o->port);
	if (inet_pton(AF_INET, o->dst, &b.dst.sin_addr) != 1) {
		fprintf(stderr, "netbuf bench: bad --dst %s (an IPv4 address)\n", o->dst);
		return 2;
	}
	b.gns = wps_netbuf_open_netns(ctx, o->netns);
	b.pns = wps_netbuf_open_netns(ctx, o->peer_netns);
	if (b.gns < 0 || b.pns < 0)
		goto out;
	o->nb.netns_fd = b.gns;
	b.n = (uint64_t)(o->rate * o->seconds) + 1;
	b.s0 = calloc(b.n, sizeof(uint64_t));
	b.s1 = calloc(b.n, sizeof(uint64_t));
	b.arr = calloc(b.n, sizeof(uint64_t));
	if (!b.s0 || !b.s1 || !b.arr) {
		fprintf(stderr, "netbuf bench: out of memory\n");
		goto out;
	}
	ret = bench_phase(ctx, &b, false, &raw);
	if (ret < 0)
		goto out;
	ret = bench_phase(ctx, &b, true, &held);
	if (ret < 0)
		goto out;

	printf("netbuf bench: %s of %s, %u datagrams/s of %u bytes for %.1f s per phase,\n"
	       "  epoch %.1f ms + simulated checkpoint %.1f ms (%" PRIu64 " epochs)\n",
	       wps_netbuf_backend_name(held.st.backend), o->nb.ifname, o->rate, o->size,
	       o->seconds, o->epoch_ms, o->checkpoint_ms, held.epochs);
	printf("  %-34s %9s %9s %9s %9s\n", "microseconds", "p50", "p99", "max", "mean");
	print_dist("raw one-way latency", &raw.lat, NULL);
	print_dist("held one-way latency", &held.lat, NULL);
	print_dist("  waiting for the commit", &held.wait, "(inherent: rest of epoch + checkpoint)");
	snprintf(extra, sizeof(extra), "(%.2fx raw p50)",
		 raw.lat.p50 > 0 ? held.release.p50 / raw.lat.p50 : 0.0);
	print_dist("  commit -> arrival, per packet", &held.release, extra);
	snprintf(extra, sizeof(extra), "(%.2fx raw p50)",
		 raw.lat.p50 > 0 ? held.epoch_span.p50 / raw.lat.p50 : 0.0);
	print_dist("  commit -> last arrival, per epoch", &held.epoch_span, extra);
	printf("  %-34s %9.1f %9s %9.1f %9s  (inside the guest pause)\n", "wps_netbuf_epoch()",
	       held.st.epochs ? held.st.epoch_ns_total / 1e3 / held.st.epochs : 0.0, "",
	       held.st.epoch_ns_max / 1e3, "");
	printf("  %-34s %9.1f %9s %9.1f %9s  (%.2f us per released packet)\n",
	       "wps_netbuf_commit()",
	       held.st.commits ? held.st.commit_ns_total / 1e3 / held.st.commits : 0.0, "",
	       held.st.commit_ns_max / 1e3, "",
	       held.st.released_packets ? held.st.commit_ns_total / 1e3 / held.st.released_packets : 0.0);
	print_dist("send() call, raw", &raw.send, "(the whole path: veth, peer, socket)");
	print_dist("send() call, held", &held.send, "(up to the queue)");
	printf("  release cost per packet (commit time / packets) = %.2f us = %.2fx a raw send()\n",
	       held.st.released_packets ? held.st.commit_ns_total / 1e3 / held.st.released_packets : 0.0,
	       held.st.released_packets && raw.send.mean > 0 ?
	       held.st.commit_ns_total / 1e3 / held.st.released_packets / raw.send.mean : 0.0);
	printf("  added latency per epoch (commit -> last arrival, p50) / raw p50 = %.2f\n",
	       raw.lat.p50 > 0 ? held.epoch_span.p50 / raw.lat.p50 : 0.0);
	printf("  raw:  sent %" PRIu64 " received %" PRIu64 " lost %" PRIu64 " reordered %" PRIu64 "\n",
	       raw.sent, raw.received, raw.lost, raw.reordered);
	printf("  held: sent %" PRIu64 " received %" PRIu64 " lost %" PRIu64 " reordered %" PRIu64
	       " before-commit %" PRIu64 " (ambiguous epoch %" PRIu64 ")\n",
	       held.sent, held.received, held.lost, held.reordered, held.early, held.ambiguous);
	print_stats(stdout, &held.st);
	status = held.early || held.lost || held.reordered ? 1 : 0;
	if (status)
		printf("FAIL: the holder let packets out early, lost or reordered them\n");
out:
	free(b.s0);
	free(b.s1);
	free(b.arr);
	if (b.gns >= 0)
		close(b.gns);
	if (b.pns >= 0)
		close(b.pns);
	return status;
}

/* ------------------------------------------------------------------ */

static int cmd_cleanup(struct wps_ctx *ctx, struct cmd_opts *o)
{
	int ret;

	if (o->netns) {
		o->nb.netns_fd = wps_netbuf_open_netns(ctx, o->netns);
		if (o->nb.netns_fd < 0)
			return 1;
	}
	ret = wps_netbuf_cleanup(ctx, &o->nb);
	if (o->nb.netns_fd >= 0)
		close(o->nb.netns_fd);
	if (ret < 0) {
		fprintf(stderr, "netbuf: cleanup of %s failed: %s\n", o->nb.ifname, strerror(-ret));
		return 1;
	}
	return 0;
}

int netbuf_cmd_main(struct wps_ctx *ctx, int argc, char **argv)
{
	struct cmd_opts o;
	const char *sub;
	int ret;

	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	sub = argv[1];
	ret = parse_opts(ctx, argc - 1, argv + 1, &o);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (!strcmp(sub, "hold"))
		return cmd_hold(ctx, &o);
	if (!strcmp(sub, "bench"))
		return cmd_bench(ctx, &o);
	if (!strcmp(sub, "cleanup"))
		return cmd_cleanup(ctx, &o);
	fprintf(stderr, "netbuf: unknown subcommand '%s' (hold, bench, cleanup)\n", sub);
	return 2;
}
