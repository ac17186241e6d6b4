/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Write tracking with asynchronous write-protection.
 *
 * A userfaultfd negotiated with UFFD_FEATURE_WP_ASYNC never sends a
 * write-protect fault: the kernel resolves the write itself (a minor
 * fault, ~1-2 us) and clears the page's uffd-wp bit. PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING then lists the pages whose bit is clear - written
 * since they were protected - and sets it again in the same walk. So a
 * guest pays once per page per epoch, and a harvest costs a page-table
 * walk plus work proportional to what was written, never to RAM size.
 * WP_UNPOPULATED (when the kernel has it) puts markers on never-touched
 * pages, so their first write counts like any other.
 *
 * What a write-protect bit cannot tell: memory the guest hands back
 * (MADV_DONTNEED, MADV_REMOVE: a balloon, free-page reporting) reads as
 * zero afterwards but is not "written". The REMOVE event says so; an
 * event thread records the ranges (it must read them promptly: the
 * madvise caller waits for it) and harvests report them. (In anonymous
 * memory a zapped page also comes back "written": PAGEMAP_SCAN counts an
 * empty pte as written once the zap has dropped its marker. Harmless: it
 * is saved, as zeros.) UNMAP/REMAP of a
 * region make the tracker fail with -ESTALE: its memory is gone.
 *
 * Owns: the userfaultfd, the pagemap fd, the event thread, and two
 * generations of removed-page bitmaps per region.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/bits.h"
#include "base/log.h"
#include "wp/compat.h"
#include "wp/dirty.h"
#include "wp/pagemap.h"
#include "wp/uffd.h"

#define PAGE 4096ull

struct dregion {
	struct wps_region r;
	uint64_t words;        /* of each bitmap */
	uint64_t *removed[2];  /* [cur]: since the last harvest; [!cur]: the
				  harvest before (see wps_dirty_harvest) */
	uint64_t *report;      /* both OR'ed, for the harvest to report from
				  outside the lock; allocated once: a
				  harvest runs inside the guest's pause */
};

struct wps_dirty {
	struct wps_ctx *ctx;
	int uffd;
	int stop_fd;           /* eventfd: the event thread exits */
	struct wps_pagemap pm;
	struct dregion *reg;
	unsigned int nr;
	unsigned int registered;
	uint64_t features;

	pthread_t th;
	bool th_started;
	pthread_mutex_t lock;  /* guards removed[], cur, stale, events */
	int cur;
	int stale;             /* -ESTALE once a region is unmapped/moved */
	uint64_t events;
};

static void mark_removed(struct wps_dirty *d, uint64_t start, uint64_t end)
{
	unsigned int i;

	for (i = 0; i < d->nr; i++) {
		struct dregion *g = &d->reg[i];
		uint64_t s = start, e = end, b;

		if (e <= g->r.host_addr || s >= g->r.host_addr + g->r.size)
			continue;
		if (s < g->r.host_addr)
			s = g->r.host_addr;
		if (e > g->r.host_addr + g->r.size)
			e = g->r.host_addr + g->r.size;
		b = (s - g->r.host_addr) / PAGE;
		wps_bits_set(g->removed[d->cur], b,
			     (e - g->r.host_addr + PAGE - 1) / PAGE - b);
	}
}

/* Under d->lock. */
static void handle_msg(struct wps_dirty *d, const struct uffd_msg *m)
{
	d->events++;
	switch (m->event) {
	case UFFD_EVENT_REMOVE:
		mark_removed(d, m->arg.remove.start, m->arg.remove.end);
		break;
	case UFFD_EVENT_UNMAP:
	case UFFD_EVENT_REMAP:
		if (!d->stale)
			wps_err(d->ctx, "the guest %s part of its memory: write "
				"tracking cannot go on",
				m->event == UFFD_EVENT_UNMAP ? "unmapped" : "moved");
		d->stale = -ESTALE;
		break;
	default:
		/* No fault reaches us in async mode; anything else is a
		 * kernel we do not understand: note it, stop trusting. */
		if (!d->stale)
			wps_err(d->ctx, "unexpected userfaultfd message %u in "
				"async write-protect mode", (unsigned int)m->event);
		d->stale = -EPROTO;
		break;
	}
}

/*
 * Read and record every pending message; under d->lock. Reading and
 * recording under one hold matters: the kernel lets the madvise() caller
 * go on as soon as its event is read, and a harvest must never see the
 * zap done but the range not yet recorded.
 */
static int drain_locked(struct wps_dirty *d)
{
	struct uffd_msg m[16];
	ssize_t n;
	int i;

	for (;;) {
		n = read(d->uffd, m, sizeof(m));
		if (n < 0) {
			if (errno == EAGAIN)
				return 0;
			if (errno == EINTR)
				continue;
			if (!d->stale) {
				wps_err(d->ctx, "reading the userfaultfd: %s",
					strerror(errno));
				d->stale = -errno;
			}
			return d->stale;
		}
		for (i = 0; i < (int)(n / (ssize_t)sizeof(m[0])); i++)
			handle_msg(d, &m[i]);
	}
}

static void *event_main(void *arg)
{
	struct wps_dirty *d = arg;
	struct pollfd p[2] = {
		{ .fd = d->uffd, .events = POLLIN },
		{ .fd = d->stop_fd, .events = POLLIN },
	};
	int ret;

	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (p[0].revents & (POLLERR | POLLHUP))
			break;
		pthread_mutex_lock(&d->lock);
		ret = drain_locked(d);
		pthread_mutex_unlock(&d->lock);
		if (ret)
			break;
	}
	return NULL;
}

int wps_dirty_new(struct wps_ctx *ctx, const struct wps_region *regions,
		  unsigned int nr, pid_t pid, int uffd, struct wps_dirty **out)
{
	uint64_t need = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC;
	uint64_t want = UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_EVENT_REMOVE |
			UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
	struct wps_dirty *d;
	unsigned int i;
	int ret;

	*out = NULL;
	ret = wps_regions_check(ctx, regions, nr);
	if (ret) {
		if (uffd >= 0)
			close(uffd);
		return ret;
	}
	for (i = 0; i < nr; i++)
		if (regions[i].backing != WPS_BACKING_ANON)
			need |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	d = calloc(1, sizeof(*d));
	if (!d) {
		if (uffd >= 0)
			close(uffd);
		return -ENOMEM;
	}
	d->ctx = ctx;
	d->uffd = uffd;
	d->stop_fd = -1;
	d->pm.fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	d->reg = calloc(nr ? nr : 1, sizeof(*d->reg));
	if (!d->reg) {
		ret = -ENOMEM;
		goto fail;
	}
	d->nr = nr;
	for (i = 0; i < nr; i++) {
		struct dregion *g = &d->reg[i];

		g->r = regions[i];
		g->r.name = NULL;   /* not ours to keep */
		g->words = (regions[i].size / PAGE + 63) / 64;
		g->removed[0] = calloc(g->words ? g->words : 1, 8);
		g->removed[1] = calloc(g->words ? g->words : 1, 8);
		g->report = calloc(g->words ? g->words : 1, 8);
		if (!g->removed[0] || !g->removed[1] || !g->report) {
			ret = -ENOMEM;
			goto fail;
		}
	}
	if (d->uffd < 0) {
		ret = wps_uffd_open(ctx, O_CLOEXEC | O_NONBLOCK, &d->uffd);
		if (ret)
			goto fail;
	} else {
		fcntl(d->uffd, F_SETFL, fcntl(d->uffd, F_GETFL) | O_NONBLOCK);
	}
	ret = wps_uffd_negotiate(ctx, d->uffd, need, want, &d->features);
	if (ret)
		goto fail;
	ret = wps_pagemap_open(ctx, pid, &d->pm);
	if (ret)
		goto fail;
	for (i = 0; i < nr; i++) {
		ret = wps_uffd_register(ctx, d->uffd, regions[i].host_addr,
					regions[i].size, UFFDIO_REGISTER_MODE_WP);
		if (ret)
			goto fail;
		d->registered++;
	}
	d->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (d->stop_fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = -pthread_create(&d->th, NULL, event_main, d);
	if (ret)
		goto fail;
	d->th_started = true;
	*out = d;
	return 0;
fail:
	wps_dirty_free(d);
	return ret;
}

int wps_dirty_arm(struct wps_dirty *d)
{
	unsigned int i;
	int ret;

	for (i = 0; i < d->nr; i++) {
		ret = wps_uffd_wp(d->uffd, d->reg[i].r.host_addr, d->reg[i].r.size,
				  true, false);
		if (ret) {
			wps_err(d->ctx, "write-protecting [0x%llx, +%llu) for "
				"tracking: %s",
				(unsigned long long)d->reg[i].r.host_addr,
				(unsigned long long)d->reg[i].r.size, strerror(-ret));
			return ret;
		}
	}
	return 0;
}

struct harvest_arg {
	struct wps_dirty *d;
	unsigned int r;
	wps_dirty_fn fn;
	void *arg;
};

static int harvest_run(void *arg, uint64_t start, uint64_t end,
		       uint64_t categories)
{
	struct harvest_arg *h = arg;
	uint64_t base = h->d->reg[h->r].r.host_addr;

	return h->fn(h->arg, h->r, start - base, end - start, false);
}

/* Report the runs of set bits of bm: removed ranges of region r. */
static int report_removed(struct wps_dirty *d, unsigned int r,
			  const uint64_t *bm, wps_dirty_fn fn, void *arg)
{
	uint64_t nb = d->reg[r].r.size / PAGE, s, e;
	int ret;

	for (s = wps_bit_find(bm, 0, nb, true); s < nb;
	     s = wps_bit_find(bm, e, nb, true)) {
		e = wps_bit_find(bm, s, nb, false);
		ret = fn(arg, r, s * PAGE, (e - s) * PAGE, true);
		if (ret)
			return ret;
	}
	return 0;
}

int wps_dirty_harvest(struct wps_dirty *d, wps_dirty_fn fn, void *arg)
{
	unsigned int i;
	uint64_t w;
	int ret, old;

	pthread_mutex_lock(&d->lock);
	ret = d->stale;
	pthread_mutex_unlock(&d->lock);
	if (ret)
		return ret;
	for (i = 0; i < d->nr; i++) {
		struct harvest_arg h = { d, i, fn, arg };

		ret = wps_pagemap_harvest(&d->pm, d->reg[i].r.host_addr,
					  d->reg[i].r.host_addr + d->reg[i].r.size,
					  harvest_run, &h);
		if (ret)
			return ret;
	}
	/*
	 * Removed ranges: this generation and the one before, OR'ed into a
	 * copy under the lock (events keep coming), reported outside it.
	 */
	pthread_mutex_lock(&d->lock);
	drain_locked(d);   /* events already read are recorded; pending ones too */
	old = !d->cur;
	for (i = 0; i < d->nr; i++) {
		struct dregion *g = &d->reg[i];

		for (w = 0; w < g->words; w++)
			g->report[w] = g->removed[d->cur][w] | g->removed[old][w];
		memset(g->removed[old], 0, g->words * 8);
	}
	d->cur = old;
	ret = d->stale;
	pthread_mutex_unlock(&d->lock);
	for (i = 0; !ret && i < d->nr; i++)
		ret = report_removed(d, i, d->reg[i].report, fn, arg);
	return ret;
}

uint64_t wps_dirty_events(struct wps_dirty *d)
{
	uint64_t n;

	pthread_mutex_lock(&d->lock);
	n = d->events;
	pthread_mutex_unlock(&d->lock);
	return n;
}

void wps_dirty_free(struct wps_dirty *d)
{
	unsigned int i;

	if (!d)
		return;
	if (d->th_started) {
		uint64_t one = 1;

		if (write(d->stop_fd, &one, sizeof(one)) != sizeof(one))
			wps_warn(d->ctx, "stopping the event thread: %s",
				 strerror(errno));
		pthread_join(d->th, NULL);
	}
	/* Unregistering removes every protection; closing would too, but
	 * a handed-over uffd may live on in its owner. */
	for (i = 0; i < d->registered; i++)
		wps_uffd_unregister(d->uffd, d->reg[i].r.host_addr,
				    d->reg[i].r.size);
	if (d->uffd >= 0)
		close(d->uffd);
	if (d->stop_fd >= 0)
		close(d->stop_fd);
	wps_pagemap_close(&d->pm);
	for (i = 0; i < d->nr; i++) {
		free(d->reg[i].removed[0]);
		free(d->reg[i].removed[1]);
		free(d->reg[i].report);
	}
	free(d->reg);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
