/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * netbuf NFQUEUE backend: holds a guest's output in a netfilter queue.
 *
 * Owns: one iptables rule per address family ("-t mangle POSTROUTING -o
 * IF -j NFQUEUE --queue-num N", PREROUTING -i for ingress), the queue
 * instance N bound to a netlink socket of this process (libnl-nf-3), the
 * thread that reads the queue, and the per-epoch record of packet ids.
 *
 * How it holds: the kernel parks every matching packet in the queue and
 * sends us its metadata (copy mode META: the id, no payload). Ids grow by
 * one per packet, in the order packets were queued, and the kernel keeps
 * the queue in that order; a batch verdict "accept everything up to id
 * X" releases exactly a prefix. So an epoch is "the packets up to the
 * last id seen when it was closed", and a commit is one batch verdict.
 *
 * Why it cannot leak: no --queue-bypass and no fail-open flag, so a
 * packet that finds no listener, a full queue or a full socket is
 * dropped; when the socket closes (free, or the process dies) the kernel
 * destroys the queue instance and drops everything in it. The rule stays
 * after a crash, so later output is dropped until wps_netbuf_cleanup or
 * the next holder of the same interface removes it.
 *
 * Why the iptables program and not libiptc or nft netlink: libiptc is
 * not a stable API and writes only the legacy tables, while iptables
 * picks the system's backend (nf_tables or legacy) and does the locking
 * (-w); the nft "queue" statement, which nft netlink would need, is
 * missing from kernels such as this one (nft_queue), while the iptables
 * NFQUEUE target works on both. Rules change twice per netbuf lifetime,
 * so fork+exec costs nothing where it matters.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>

#include <netlink/attr.h>
#include <netlink/msg.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netfilter/queue.h>
#include <netlink/netfilter/queue_msg.h>
#include <netlink/socket.h>

#include "base/clock.h"
#include "base/log.h"
#include "src/netbuf_int.h"

/* Messages read per recvmmsg, and room for each: META messages are ~100
 * bytes, error replies quote the (small) request. */
#define NFQ_BATCH 64
#define NFQ_MSGSZ 2048
/* How long to wait for the kernel's answer to a bind or a verdict; both
 * are answered synchronously, so this only bounds a broken kernel. */
#define NFQ_ACK_TIMEOUT_MS 5000

struct nfq_epoch {
	uint64_t nr;
	uint64_t count;    /* packets seen during the epoch */
	uint32_t last_id;  /* last id seen when it closed */
	bool has_id;       /* any packet seen by then */
};

struct nfq {
	struct nl_sock *sk;
	struct nfnl_queue_msg *verdict; /* reused for every batch verdict */
	int fd;
	int stopfd;        /* eventfd: stops the reader thread */
	int procfd;        /* nfnetlink_queue of the namespace, for drops */
	pthread_t thread;
	bool thread_up;
	bool rule[2];      /* [0] IPv4, [1] IPv6 rule installed */
	bool ipv6;

	/*
	 * The socket is read by the thread (so the socket buffer never
	 * fills while an epoch runs) and by epoch/commit (to see every
	 * packet queued before the call, and the kernel's answers). One
	 * reader at a time; everything below is under sock_lock.
	 */
	pthread_mutex_t sock_lock;
	struct mmsghdr msgs[NFQ_BATCH];
	struct iovec iov[NFQ_BATCH];
	uint8_t *bufs;

	bool seen;         /* a packet was ever seen */
	uint32_t last_id;
	uint64_t cur_count;   /* packets of the open epoch */
	bool released_any;
	uint32_t released_id;
	struct nfq_epoch *pend; /* closed, not committed, oldest first */
	size_t npend, cap;

	uint32_t ack_seq;
	bool ack_wait, ack_seen;
	int ack_err;

	uint64_t queued, released, held_max, overruns, verdicts, vanished;
	int thread_err;
};

/* Packet ids wrap at 2^32; the kernel compares them the same way. */
static bool id_after(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

static void nfq_packet(struct wps_netbuf *nb, struct nfq *q, struct nlmsghdr *nlh)
{
	struct nlattr *tb[NFQA_MAX + 1];
	struct nfqnl_msg_packet_hdr *ph;
	struct nfgenmsg *g = nlmsg_data(nlh);
	uint32_t id;

	if (ntohs(g->res_id) != nb->opts.queue)
		return;
	if (nlmsg_parse(nlh, sizeof(struct nfgenmsg), tb, NFQA_MAX, NULL) < 0 ||
	    !tb[NFQA_PACKET_HDR] || nla_len(tb[NFQA_PACKET_HDR]) < (int)sizeof(*ph)) {
		wps_warn(nb->ctx, "netbuf: malformed packet message on queue %u",
			 nb->opts.queue);
		return;
	}
	ph = nla_data(tb[NFQA_PACKET_HDR]);
	id = ntohl(ph->packet_id);
	if (!q->seen || id_after(id, q->last_id))
		q->last_id = id;
	q->seen = true;
	q->cur_count++;
	q->queued++;
	if (q->queued - q->released > q->held_max)
		q->held_max = q->queued - q->released;
}

static void nfq_message(struct wps_netbuf *nb, struct nfq *q, void *buf, int len)
{
	struct nlmsghdr *nlh = buf;

	for (; nlmsg_ok(nlh, len); nlh = nlmsg_next(nlh, &len)) {
		if (nlh->nlmsg_type == NLMSG_ERROR) {
			struct nlmsgerr *e = nlmsg_data(nlh);

			if (q->ack_wait && nlh->nlmsg_seq == q->ack_seq) {
				q->ack_seen = true;
				q->ack_err = e->error;
			} else if (e->error) {
				wps_err(nb->ctx, "netbuf: queue %u: the kernel refused request %u: %s",
					nb->opts.queue, nlh->nlmsg_seq, strerror(-e->error));
			}
			continue;
		}
		if (NFNL_SUBSYS_ID(nlh->nlmsg_type) == NFNL_SUBSYS_QUEUE &&
		    NFNL_MSG_TYPE(nlh->nlmsg_type) == NFQNL_MSG_PACKET)
			nfq_packet(nb, q, nlh);
	}
}

/* Read everything queued on the socket now. Caller holds sock_lock. */
static int nfq_drain(struct wps_netbuf *nb, struct nfq *q)
{
	int n;

	for (;;) {
		n = recvmmsg(q->fd, q->msgs, NFQ_BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == ENOBUFS) {
				/* the kernel dropped packets (never passed
				 * them): the socket buffer was full */
				q->overruns++;
				wps_log_once(nb->ctx, WPS_LOG_WARN, q,
					     "netbuf: queue %u: socket buffer overrun, the kernel dropped packets (raise opts.rcvbuf)",
					     nb->opts.queue);
				continue;
			}
			n = -errno;
			wps_err(nb->ctx, "netbuf: reading queue %u: %s", nb->opts.queue,
				strerror(-n));
			return n;
		}
		for (int i = 0; i < n; i++) {
			if (q->msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
				wps_warn(nb->ctx, "netbuf: queue %u: message truncated (%u bytes)",
					 nb->opts.queue, q->msgs[i].msg_len);
			nfq_message(nb, q, q->bufs + (size_t)i * NFQ_MSGSZ,
				    (int)q->msgs[i].msg_len);
			q->msgs[i].msg_hdr.msg_flags = 0;
		}
		if (n < NFQ_BATCH)
			return 0;
	}
}

static void *nfq_thread(void *arg)
{
	struct wps_netbuf *nb = arg;
	struct nfq *q = nb->priv;
	struct pollfd p[2] = {
		{ .fd = q->fd, .events = POLLIN },
		{ .fd = q->stopfd, .events = POLLIN },
	};
	int ret;

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			wps_err(nb->ctx, "netbuf: queue %u: poll: %s", nb->opts.queue,
				strerror(errno));
			break;
		}
		if (p[1].revents)
			return NULL;
		if (!p[0].revents)
			continue;
		pthread_mutex_lock(&q->sock_lock);
		ret = nfq_drain(nb, q);
		pthread_mutex_unlock(&q->sock_lock);
		if (ret < 0)
			break;
	}
	/* Packets keep piling up in the kernel (then are dropped when the
	 * socket is full): held, never leaked. Commits still drain. */
	pthread_mutex_lock(&q->sock_lock);
	q->thread_err = ret;
	pthread_mutex_unlock(&q->sock_lock);
	return NULL;
}

/*
 * Send msg with an ACK requested and wait for the kernel's answer; every
 * packet message read meanwhile is accounted as usual. Caller holds
 * sock_lock. Returns 0, the kernel's -errno, or -ETIMEDOUT.
 */
static int nfq_request(struct wps_netbuf *nb, struct nfq *q, struct nl_msg *msg,
		       const char *what)
{
	uint64_t deadline;
	int ret;

	nlmsg_hdr(msg)->nlmsg_flags |= NLM_F_ACK;
	ret = nl_send_auto(q->sk, msg);
	if (ret < 0) {
		ret = nb_nlerr(ret);
		wps_err(nb->ctx, "netbuf: queue %u: sending %s: %s", nb->opts.queue,
			what, strerror(-ret));
		return ret;
	}
	q->ack_seq = nlmsg_hdr(msg)->nlmsg_seq;
	q->ack_wait = true;
	q->ack_seen = false;
	deadline = wps_now_ns() + NFQ_ACK_TIMEOUT_MS * 1000000ull;
	for (;;) {
		struct pollfd p = { .fd = q->fd, .events = POLLIN };
		uint64_t now;

		ret = nfq_drain(nb, q);
		if (ret < 0 || q->ack_seen)
			break;
		now = wps_now_ns();
		if (now >= deadline) {
			ret = -ETIMEDOUT;
			wps_err(nb->ctx, "netbuf: queue %u: no answer from the kernel to %s%s",
				nb->opts.queue, what,
				q->overruns ? " (lost in a socket overrun?)" : "");
			break;
		}
		poll(&p, 1, (int)((deadline - now) / 1000000 + 1));
	}
	q->ack_wait = false;
	if (ret == 0)
		ret = q->ack_err;
	return ret;
}

static int nfq_bind(struct wps_netbuf *nb, struct nfq *q)
{
	struct nfnl_queue *queue;
	struct nl_msg *msg = NULL;
	int ret;

	queue = nfnl_queue_alloc();
	if (!queue)
		return -ENOMEM;
	nfnl_queue_set_group(queue, nb->opts.queue);
	/* META: ids and headers only; the payload stays in the kernel */
	nfnl_queue_set_copy_mode(queue, NFNL_QUEUE_COPY_META);
	nfnl_queue_set_copy_range(queue, 0);
	nfnl_queue_set_maxlen(queue, nb->opts.queue_maxlen);
	ret = nfnl_queue_build_create_request(queue, &msg);
	nfnl_queue_put(queue);
	if (ret < 0)
		return nb_nlerr(ret);
	/*
	 * libnl has no call for the queue flags. GSO: take GSO/TSO packets
	 * whole instead of having the kernel segment them for us. The mask
	 * also names FAIL_OPEN, so it is explicitly off: a full queue must
	 * drop, never let a packet through early.
	 */
	if (nla_put_u32(msg, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO)) < 0 ||
	    nla_put_u32(msg, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN)) < 0) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	/* libnl's nfnl_queue_create does not ask for an ACK on this socket
	 * type: a refused bind would go unnoticed. nfq_request asks. */
	ret = nfq_request(nb, q, msg, "the queue bind");
	nlmsg_free(msg);
	if (ret == -EPERM || ret == -EBUSY) {
		wps_err(nb->ctx, "netbuf: NFQUEUE %u is already bound by another process; pick another opts.queue",
			nb->opts.queue);
		return -EBUSY;
	}
	if (ret < 0)
		wps_err(nb->ctx, "netbuf: cannot bind NFQUEUE %u: %s%s", nb->opts.queue,
			strerror(-ret),
			ret == -EOPNOTSUPP ? " (kernel without NFQA_CFG_F_GSO)" : "");
	return ret;
}

static int nfq_socket(struct wps_netbuf *nb, struct nfq *q)
{
	int saved, ret, size = (int)nb->opts.rcvbuf;

	q->sk = nfnl_queue_socket_alloc();
	if (!q->sk)
		return -ENOMEM;
	ret = nb_netns_enter(nb, &saved);
	if (ret < 0)
		return ret;
	ret = nfnl_connect(q->sk);
	if (ret == 0)
		q->procfd = open("/proc/thread-self/net/netfilter/nfnetlink_queue",
				 O_RDONLY | O_CLOEXEC);
	nb_netns_leave(nb, saved);
	if (ret < 0) {
		ret = nb_nlerr(ret);
		wps_err(nb->ctx, "netbuf: cannot open a netfilter netlink socket: %s%s",
			strerror(-ret),
			ret == -EPROTONOSUPPORT ? " (kernel without CONFIG_NETFILTER_NETLINK_QUEUE)" : "");
		return ret;
	}
	q->fd = nl_socket_get_fd(q->sk);
	/* A child of the holder that kept this socket would keep the queue
	 * alive after the holder died: held forever instead of dropped. */
	if (fcntl(q->fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	/* The queue can hold 64k packets; at ~1 KiB of socket memory each
	 * the default buffer (~200 KiB) overruns during any burst. FORCE
	 * passes rmem_max (we have CAP_NET_ADMIN anyway). */
	if (setsockopt(q->fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) {
		wps_warn(nb->ctx, "netbuf: SO_RCVBUFFORCE %d on queue %u: %s; bursts may overrun",
			 size, nb->opts.queue, strerror(errno));
		setsockopt(q->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
	return 0;
}

static int nfq_rule(struct wps_netbuf *nb, int family, const char *op, bool quiet)
{
	char qnum[8], comment[48];
	const char *prog = family == 6 ? nb->opts.ip6tables : nb->opts.iptables;
	bool in = nb->opts.direction == WPS_NETBUF_INGRESS;
	char *argv[] = {
		(char *)prog, "-w", "-t", "mangle", (char *)op,
		in ? "PREROUTING" : "POSTROUTING", in ? "-i" : "-o", nb->ifname,
		"-m", "comment", "--comment", comment,
		"-j", "NFQUEUE", "--queue-num", qnum, NULL
	};

	snprintf(qnum, sizeof(qnum), "%u", nb->opts.queue);
	/* the comment names the holder's purpose for an operator, and makes
	 * our rule distinct from anyone else's NFQUEUE rule */
	snprintf(comment, sizeof(comment), "wpsnap-netbuf q%u", nb->opts.queue);
	return nb_run(nb, argv, quiet);
}

/* Remove every copy of our rule (a dead holder's included). Returns the
 * number removed or -errno. */
static int nfq_unrule(struct wps_netbuf *nb, int family)
{
	int n = 0, ret;

	while ((ret = nfq_rule(nb, family, "-C", true)) == 0) {
		ret = nfq_rule(nb, family, "-D", false);
		if (ret != 0)
			return ret < 0 ? ret : -EIO;
		n++;
	}
	/* iptables -C: 1 = no such rule; anything else is a real failure
	 * (a missing table or chain cannot mean our rule is there) */
	if (ret < 0)
		return ret;
	return n;
}

static bool have_ipv6(struct wps_netbuf *nb)
{
	if (nb->opts.flags & WPS_NETBUF_NO_IPV6)
		return false;
	return access("/proc/sys/net/ipv6", F_OK) == 0;
}

static int nfq_epoch(struct wps_netbuf *nb, uint64_t nr)
{
	struct nfq *q = nb->priv;
	int ret;

	pthread_mutex_lock(&q->sock_lock);
	/* Everything the kernel queued before this call is already on the
	 * socket (queueing is synchronous with the send): read it all, so
	 * the barrier is exact at the freeze instant. */
	ret = nfq_drain(nb, q);
	if (ret < 0)
		goto out;
	if (q->npend == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 16;
		struct nfq_epoch *p = realloc(q->pend, cap * sizeof(*p));

		if (!p) {
			ret = -ENOMEM;
			goto out;
		}
		q->pend = p;
		q->cap = cap;
	}
	q->pend[q->npend++] = (struct nfq_epoch){
		.nr = nr, .count = q->cur_count, .last_id = q->last_id, .has_id = q->seen,
	};
	q->cur_count = 0;
out:
	pthread_mutex_unlock(&q->sock_lock);
	return ret;
}

static int nfq_commit(struct wps_netbuf *nb, uint64_t upto)
{
	struct nfq *q = nb->priv;
	struct nfq_epoch *last;
	uint64_t count = 0;
	size_t k = 0;
	int ret = 0;

	pthread_mutex_lock(&q->sock_lock);
	while (k < q->npend && q->pend[k].nr <= upto)
		count += q->pend[k++].count;
	if (!k)
		goto out;
	last = &q->pend[k - 1];
	if (last->has_id && (!q->released_any || id_after(last->last_id, q->released_id))) {
		struct nl_msg *msg;

		nfnl_queue_msg_set_packetid(q->verdict, last->last_id);
		msg = nfnl_queue_msg_build_verdict_batch(q->verdict);
		if (!msg) {
			ret = -ENOMEM;
			goto out;
		}
		ret = nfq_request(nb, q, msg, "a batch verdict");
		nlmsg_free(msg);
		q->verdicts++;
		if (ret == -ENOENT) {
			/* nothing left up to that id: the kernel dropped
			 * them (interface gone, hook removed). Not sent,
			 * so nothing leaked; say so and move on. */
			wps_warn(nb->ctx, "netbuf: queue %u: epochs up to %llu were dropped by the kernel before their commit",
				 nb->opts.queue, (unsigned long long)upto);
			q->vanished += count;
			count = 0;
			ret = 0;
		} else if (ret < 0) {
			wps_err(nb->ctx, "netbuf: queue %u: releasing up to packet %u (epoch %llu): %s",
				nb->opts.queue, last->last_id, (unsigned long long)upto,
				strerror(-ret));
			goto out;
		}
		q->released_id = last->last_id;
		q->released_any = true;
	}
	q->released += count;
	q->npend -= k;
	memmove(q->pend, q->pend + k, q->npend * sizeof(*q->pend));
out:
	pthread_mutex_unlock(&q->sock_lock);
	return ret;
}

/* Kernel counters of our queue in this namespace (0 when unreadable). */
static void nfq_kernel_drops(struct nfq *q, unsigned int queue, uint64_t *dropped,
			     uint64_t *user_dropped)
{
	char buf[8192], *line, *save = NULL;
	ssize_t n;

	if (q->procfd < 0 || lseek(q->procfd, 0, SEEK_SET) < 0)
		return;
	n = read(q->procfd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned int num, portid, total, mode, range, drop, udrop;

		/* queue portid total copy_mode copy_range dropped user_dropped id 1 */
		if (sscanf(line, "%u %u %u %u %u %u %u", &num, &portid, &total, &mode,
			   &range, &drop, &udrop) == 7 && num == queue) {
			*dropped = drop;
			*user_dropped = udrop;
		}
	}
}

static void nfq_stats(struct wps_netbuf *nb, struct wps_netbuf_stats *st)
{
	struct nfq *q = nb->priv;

	pthread_mutex_lock(&q->sock_lock);
	st->queued_packets = q->queued;
	st->released_packets = q->released;
	st->held_packets = q->queued - q->released - q->vanished;
	st->held_max = q->held_max;
	st->verdicts = q->verdicts;
	st->overruns = q->overruns;
	pthread_mutex_unlock(&q->sock_lock);
	nfq_kernel_drops(q, nb->opts.queue, &st->kernel_dropped, &st->kernel_user_dropped);
}

static void nfq_destroy(struct wps_netbuf *nb)
{
	struct nfq *q = nb->priv;

	if (!q)
		return;
	if (q->thread_up) {
		uint64_t one = 1;

		if (write(q->stopfd, &one, sizeof(one)) != sizeof(one))
			wps_err(nb->ctx, "netbuf: cannot stop the queue thread: %s",
				strerror(errno));
		pthread_join(q->thread, NULL);
	}
	/* Close the socket first: the kernel destroys the queue instance and
	 * drops what it holds. Removing the rule first would let new packets
	 * overtake held ones for a moment. */
	if (q->sk)
		nl_socket_free(q->sk);
	for (int f = 0; f < 2; f++)
		if (q->rule[f] && nfq_unrule(nb, f ? 6 : 4) < 0)
			wps_err(nb->ctx, "netbuf: %s: could not remove the NFQUEUE %u rule (IPv%d): output stays dropped until removed",
				nb->ifname, nb->opts.queue, f ? 6 : 4);
	if (q->verdict)
		nfnl_queue_msg_put(q->verdict);
	if (q->stopfd >= 0)
		close(q->stopfd);
	if (q->procfd >= 0)
		close(q->procfd);
	pthread_mutex_destroy(&q->sock_lock);
	free(q->bufs);
	free(q->pend);
	free(q);
	nb->priv = NULL;
}

static const struct nb_backend_ops nfq_ops = {
	.name = "nfqueue",
	.backend = WPS_NETBUF_NFQUEUE,
	.epoch = nfq_epoch,
	.commit = nfq_commit,
	.stats = nfq_stats,
	.destroy = nfq_destroy,
};

int nb_nfq_open(struct wps_netbuf *nb)
{
	struct nfq *q;
	int ret;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->stopfd = q->procfd = q->fd = -1;
	ret = pthread_mutex_init(&q->sock_lock, NULL);
	if (ret) {
		free(q);
		return -ret;
	}
	nb->priv = q;
	nb->ops = &nfq_ops;
	q->bufs = malloc((size_t)NFQ_BATCH * NFQ_MSGSZ);
	q->verdict = nfnl_queue_msg_alloc();
	if (!q->bufs || !q->verdict) {
		ret = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < NFQ_BATCH; i++) {
		q->iov[i] = (struct iovec){ q->bufs + (size_t)i * NFQ_MSGSZ, NFQ_MSGSZ };
		q->msgs[i].msg_hdr.msg_iov = &q->iov[i];
		q->msgs[i].msg_hdr.msg_iovlen = 1;
	}
	nfnl_queue_msg_set_group(q->verdict, nb->opts.queue);
	nfnl_queue_msg_set_family(q->verdict, AF_UNSPEC);
	nfnl_queue_msg_set_verdict(q->verdict, NF_ACCEPT);
	q->stopfd = eventfd(0, EFD_CLOEXEC);
	if (q->stopfd < 0) {
		ret = -errno;
		goto fail;
	}
	q->ipv6 = have_ipv6(nb);

	ret = nfq_socket(nb, q);
	if (ret < 0)
		goto fail;
	/* Bind before any rule exists, so no packet meets a rule without a
	 * listener (it would be dropped) and a refused bind costs nothing. */
	ret = nfq_bind(nb, q);
	if (ret < 0)
		goto fail;
	ret = pthread_create(&q->thread, NULL, nfq_thread, nb);
	if (ret) {
		ret = -ret;
		wps_err(nb->ctx, "netbuf: cannot start the queue thread: %s", strerror(-ret));
		goto fail;
	}
	q->thread_up = true;

	for (int f = 0; f < (q->ipv6 ? 2 : 1); f++) {
		int fam = f ? 6 : 4;

		/* A dead holder's rule for the same interface and queue
		 * would make a second copy that outlives us. */
		ret = nfq_unrule(nb, fam);
		if (ret > 0)
			wps_info(nb->ctx, "netbuf: %s: removed %d stale NFQUEUE %u rule(s) (IPv%d)",
				 nb->ifname, ret, nb->opts.queue, fam);
		ret = nfq_rule(nb, fam, "-I", false);
		if (ret != 0) {
			if (ret > 0)
				ret = -EIO;
			wps_err(nb->ctx, "netbuf: %s: cannot install the NFQUEUE rule (IPv%d)",
				nb->ifname, fam);
			goto fail;
		}
		q->rule[f] = true;
	}
	wps_info(nb->ctx, "netbuf: %s %s held in NFQUEUE %u (maxlen %u, IPv4%s)", nb->ifname,
		 nb->opts.direction == WPS_NETBUF_INGRESS ? "ingress" : "egress",
		 nb->opts.queue, nb->opts.queue_maxlen, q->ipv6 ? "+IPv6" : " only");
	return 0;

fail:
	nfq_destroy(nb);
	nb->ops = NULL;
	return ret;
}

int nb_nfq_cleanup(struct wps_netbuf *nb)
{
	int n4, n6 = 0;

	n4 = nfq_unrule(nb, 4);
	if (have_ipv6(nb))
		n6 = nfq_unrule(nb, 6);
	if (n4 < 0)
		return n4;
	if (n6 < 0)
		return n6;
	if (n4 + n6)
		wps_info(nb->ctx, "netbuf: %s: removed %d NFQUEUE %u rule(s)", nb->ifname,
			 n4 + n6, nb->opts.queue);
	return 0;
}
