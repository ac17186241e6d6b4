/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap snapshot --qemu QMP_SOCKET and --physmem IMAGE: the command-line
 * front of the library's QEMU module (<wpsnap/qemu.h>, docs/QEMU.md),
 * which does all the work and keeps the promises (QEMU never left
 * stopped, attached or protected). This file only connects, prints the
 * "frozen" line scripts wait for (they may let a guest they paused run
 * from there), and the report: text, or one JSON object with --json.
 * The library has already logged the detail of a failure; this file says
 * which step failed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wpsnap/image.h>
#include <wpsnap/qemu.h>
#include <wpsnap/wpsnap.h>

#include "base/clock.h"
#include "tools/snapshot_qemu.h"

#define MiB (1024.0 * 1024.0)

static void print_json(const struct wps_qemu_report *r,
		       const struct cmd_qemu_opts *o, uint64_t total_ns)
{
	const struct wps_snapshot_stats *st = &r->stats;
	json_t *j;
	char *s;

	j = json_pack(
		"{s:i, s:b, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I,"
		" s:I, s:I, s:I, s:I, s:f, s:f, s:s}",
		"qemu_pid", (int)r->pid,
		"paused_by_us", r->paused_by_us,
		"pause_ms", r->pause_ns / 1e6,
		"stop_ms", r->stop_ns / 1e6,
		"freeze_ms", r->freeze_ns / 1e6,
		"cont_ms", r->cont_ns / 1e6,
		"attach_stop_ms", r->attach.attach_stop_ns / 1e6,
		"freeze_stop_ms", r->attach.freeze_stop_ns / 1e6,
		"total_ms", total_ns / 1e6,
		"ram_bytes", (json_int_t)r->ram_bytes,
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
}

static void print_report(const struct wps_qemu_report *r,
			 const struct wps_qemu_layout *l,
			 const struct cmd_qemu_opts *o, uint64_t total_ns)
{
	const struct wps_snapshot_stats *st = &r->stats;
	unsigned int i;

	if (o->json) {
		print_json(r, o, total_ns);
		return;
	}
	printf("snapshot of QEMU %s (pid %d): %.1f MiB of guest RAM\n",
	       l->version, (int)r->pid, r->ram_bytes / MiB);
	for (i = 0; i < l->nr_blocks; i++) {
		const struct wps_qemu_block *b = &l->blocks[i];

		if (b->snap)
			printf("  %-24s %012" PRIx64 " %8.1f MiB %s\n", b->name,
			       b->host_addr, b->used / MiB,
			       b->memfd ? "memfd" : "anon");
	}
	if (r->was_running && o->no_stop)
		printf("  guest paused   %.3f ms (no QMP stop: QEMU's threads "
		       "stopped for the freeze)\n", r->pause_ns / 1e6);
	else if (r->was_running)
		printf("  guest paused   %.3f ms (stop %.3f, freeze %.3f, cont "
		       "%.3f)\n", r->pause_ns / 1e6, r->stop_ns / 1e6,
		       r->freeze_ns / 1e6, r->cont_ns / 1e6);
	else
		printf("  guest was paused already: left paused at the freeze\n");
	printf("  QEMU stopped   %.3f ms to attach, %.3f ms for the freeze\n",
	       r->attach.attach_stop_ns / 1e6, r->attach.freeze_stop_ns / 1e6);
	printf("  total          %.1f ms\n", total_ns / 1e6);
	printf("  write faults   %" PRIu64 " serviced in %.1f/%.1f us "
	       "(p50/p99)\n", st->faults, st->fault_p50_ns / 1e3,
	       st->fault_p99_ns / 1e3);
	printf("  image          %.1f MiB data for %.1f MiB populated, file "
	       "%.1f MiB\n", st->image_data_bytes / MiB,
	       st->populated_bytes / MiB, st->image_file_bytes / MiB);
	printf("wrote %s\n", o->out);
}

/* Scripts wait for this line: the image is now one instant. */
static void say_frozen(void *arg)
{
	(void)arg;
	printf("frozen: the image is the guest RAM of this instant\n");
	fflush(stdout);
}

int cmd_snapshot_qemu(struct wps_ctx *ctx, const struct cmd_qemu_opts *o)
{
	struct wps_qemu_opts qo = {
		.out = o->out, .flags = o->flags,
		.fault_window = o->fault_window, .no_stop = o->no_stop,
		.frozen = say_frozen,
	};
	struct wps_qemu_layout *l = NULL;
	struct wps_qemu_report rep;
	struct wps_qemu *q = NULL;
	uint64_t t0 = wps_now_ns();
	int err;

	err = wps_qemu_open_qmp(ctx, o->qmp_path, &q);
	if (err)
		return 1;
	err = wps_qemu_discover(q, &l);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: cannot find the guest RAM of "
			"QEMU (pid %d): %s\n", (int)wps_qemu_pid(q),
			strerror(-err));
		goto out;
	}
	err = wps_qemu_snapshot(q, l, &qo, &rep);
	if (err)
		fprintf(stderr, "wpsnap snapshot: no snapshot of QEMU (pid %d) "
			"taken: %s\n", (int)wps_qemu_pid(q), strerror(-err));
	else
		print_report(&rep, l, o, wps_now_ns() - t0);
out:
	wps_qemu_layout_free(l);
	wps_qemu_close(q);
	return err ? 1 : 0;
}

static void print_range(void *arg, const struct wps_qemu_layout *l,
			const struct wps_qemu_phys *p)
{
	(void)arg;
	printf("%016" PRIx64 "-%016" PRIx64 " %s @%" PRIx64 "%s\n", p->gpa,
	       p->gpa + p->size - 1, l->blocks[p->block].name, p->offset,
	       p->readonly ? " (read-only)" : "");
}

int cmd_physmem(struct wps_ctx *ctx, const char *image, const char *out)
{
	struct wps_qemu_layout *l = NULL;
	struct wps_image *img = NULL;
	int fd = -1, err;

	err = wps_image_open(ctx, image, 0, &img);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: cannot open image %s: %s\n",
			image, strerror(-err));
		return 1;
	}
	err = wps_qemu_layout_load(ctx, img, &l);
	if (err) {
		fprintf(stderr, "wpsnap snapshot: %s: no usable QEMU layout: "
			"%s\n", image, strerror(-err));
		goto out;
	}
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		fprintf(stderr, "wpsnap snapshot: cannot create %s: %s\n", out,
			strerror(-err));
		goto out;
	}
	err = wps_qemu_physmem(ctx, img, l, fd, print_range, NULL);
	if (err)
		fprintf(stderr, "wpsnap snapshot: %s: writing the guest-physical "
			"memory to %s: %s\n", image, out, strerror(-err));
	else if (fsync(fd)) {
		err = -errno;
		fprintf(stderr, "wpsnap snapshot: writing %s: %s\n", out,
			strerror(-err));
	}
out:
	if (fd >= 0 && close(fd) && !err) {
		err = -errno;
		fprintf(stderr, "wpsnap snapshot: writing %s: %s\n", out,
			strerror(-err));
	}
	if (err && fd >= 0)
		unlink(out);
	wps_qemu_layout_free(l);
	wps_image_close(img);
	return err ? 1 : 0;
}
