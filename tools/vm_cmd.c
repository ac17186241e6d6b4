/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap vm snapshot DOMAIN -o DIR / wpsnap vm checkpoint DOMAIN --dir
 * DIR / wpsnap vm restore DIR: the
 * command-line front of the library's VM module (<wpsnap/vm.h>), which
 * does the work and keeps the promises (the domain never left paused,
 * nothing published on failure). This file parses options and prints
 * the report: text, or one JSON object with --json. The library has
 * logged the detail of a failure already.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wpsnap/vm.h>
#include <wpsnap/wpsnap.h>

#include "tools/checkpoint_cmd.h"
#include "tools/parse.h"
#include "tools/vm_cmd.h"

#define MiB (1024.0 * 1024.0)

static void usage(FILE *f)
{
	fprintf(f,
"usage: wpsnap vm snapshot DOMAIN -o DIR [--connect URI] [--json]\n"
"       wpsnap vm checkpoint DOMAIN --dir DIR [--interval MS] [--count N]\n"
"                            [--keep N] [--connect URI] [--json]\n"
"       wpsnap vm restore DIR [--checkpoint N] [--lazy] [--name NEW]\n"
"                         [--paused] [--connect URI] [--json]\n"
"\n"
"snapshot  disk, memory and device state of a libvirt domain at one instant\n"
"          into DIR (created): one short pause, then the RAM streams while\n"
"          the guest runs; each disk goes on in a new qcow2 overlay beside it\n"
"checkpoint  a checkpoint of the domain every MS ms (default 1000) into\n"
"          DIR: the first a full one, then the pages written since; each\n"
"          pauses the guest once, like a snapshot, and restores. --keep N\n"
"          folds older RAM images into the oldest of the newest N. Stops\n"
"          after N (--count) or on SIGINT/SIGTERM\n"
"restore   start a domain from DIR that continues from that instant (from\n"
"          a checkpoint directory: its newest checkpoint, or --checkpoint N);\n"
"          its disks are new overlays on the frozen images. --name: a new\n"
"          domain (new UUID) beside the original; --paused: leave it paused;\n"
"          --lazy: run at once, shared RAM arriving on demand (the command\n"
"          returns once it is all in: keep it running until then)\n"
"--connect libvirt URI (default: libvirt's default, e.g. qemu:///system)\n");
}

static void print_json(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(j);
}

static int snapshot(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "connect", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_vm_snapshot_opts o = { 0 };
	struct wps_vm_report r;
	bool json = false;
	int c;

	while ((c = getopt_long(argc, argv, "o:c:jh", lo, NULL)) != -1) {
		switch (c) {
		case 'o': o.dir = optarg; break;
		case 'c': o.uri = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || !o.dir) {
		usage(stderr);
		return 2;
	}
	o.domain = argv[optind];
	if (wps_vm_snapshot(ctx, &o, &r)) {
		fprintf(stderr, "wpsnap vm snapshot: %s: failed (the domain "
			"runs on; nothing was written to %s)\n", o.domain,
			o.dir);
		return 1;
	}
	if (json) {
		print_json(json_pack(
			"{s:s, s:s, s:i, s:b, s:f, s:f, s:f, s:f, s:f, s:f,"
			" s:f, s:f, s:I, s:I, s:I, s:I, s:i}",
			"domain", o.domain, "dir", o.dir, "qemu_pid",
			(int)r.pid, "was_running", r.was_running,
			"pause_ms", r.pause_ns / 1e6,
			"suspend_ms", r.suspend_ns / 1e6,
			"devices_ms", r.devices_ns / 1e6,
			"disks_ms", r.disks_ns / 1e6,
			"freeze_ms", r.freeze_ns / 1e6,
			"resume_ms", r.resume_ns / 1e6,
			"prepare_ms", r.prepare_ns / 1e6,
			"total_ms", r.total_ns / 1e6,
			"devices_bytes", (json_int_t)r.devices_bytes,
			"ram_bytes", (json_int_t)r.ram_bytes,
			"populated_bytes", (json_int_t)r.stats.populated_bytes,
			"image_data_bytes",
			(json_int_t)r.stats.image_data_bytes,
			"disks", (int)r.nr_disks));
		return 0;
	}
	printf("snapshot of domain %s (QEMU pid %d): %.1f MiB of RAM, "
	       "%u disk%s, %.1f KiB of device state\n", o.domain, (int)r.pid,
	       r.ram_bytes / MiB, r.nr_disks, r.nr_disks == 1 ? "" : "s",
	       r.devices_bytes / 1024.0);
	if (r.was_running)
		printf("  guest paused   %.3f ms (suspend %.3f, devices %.3f, "
		       "disks %.3f, freeze %.3f, resume %.3f)\n",
		       r.pause_ns / 1e6, r.suspend_ns / 1e6,
		       r.devices_ns / 1e6, r.disks_ns / 1e6,
		       r.freeze_ns / 1e6, r.resume_ns / 1e6);
	else
		printf("  guest was paused already: left paused\n");
	printf("  before pause   %.1f ms; total %.1f ms\n",
	       r.prepare_ns / 1e6, r.total_ns / 1e6);
	printf("  image          %.1f MiB data for %.1f MiB populated\n",
	       r.stats.image_data_bytes / MiB, r.stats.populated_bytes / MiB);
	printf("wrote %s\n", o.dir);
	return 0;
}

static int parse_u64(const char *s, uint64_t *v, const char *what)
{
	int err = tools_parse_u64(s, 0, UINT64_MAX, v);

	if (err)
		fprintf(stderr, "wpsnap vm: %s: not a number: '%s'\n", what, s);
	return err;
}

struct series {
	sigset_t stop;
	bool json;
	const char *domain;
};

static bool wait_stop(void *arg, const struct timespec *deadline)
{
	struct series *se = arg;

	return checkpoint_wait_signal(&se->stop, deadline);
}

static int report(void *arg, const struct wps_vm_checkpoint_report *r)
{
	const struct wps_ckpt_stats *st = r->st;
	struct series *se = arg;

	if (se->json) {
		print_json(json_pack(
			"{s:s, s:I, s:s, s:s, s:f, s:f, s:f, s:f, s:I, s:i,"
			" s:I, s:I, s:I, s:f}",
			"domain", se->domain, "seq", (json_int_t)r->seq,
			"image", r->image, "meta", r->meta,
			"pause_ms", r->pause_ns / 1e6,
			"suspend_ms", r->suspend_ns / 1e6,
			"devices_ms", r->devices_ns / 1e6,
			"disks_ms", r->disks_ns / 1e6,
			"devices_bytes", (json_int_t)r->devices_bytes,
			"disks", (int)r->nr_disks,
			"dirty_bytes", (json_int_t)st->dirty_bytes,
			"image_data_bytes", (json_int_t)st->image_data_bytes,
			"pause_bytes", (json_int_t)st->pause_bytes,
			"total_ms", st->total_ns / 1e6));
		return 0;
	}
	printf("%-4" PRIu64 " %9.3f %9.3f %9.3f %9.3f %10.1f %6u %9.1f\n",
	       r->seq, r->pause_ns / 1e6, r->suspend_ns / 1e6,
	       r->devices_ns / 1e6, r->disks_ns / 1e6, st->dirty_bytes / MiB,
	       r->nr_disks, st->total_ns / 1e6);
	return 0;
}

static int checkpoint(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "interval", required_argument, NULL, 'i' },
		{ "count", required_argument, NULL, 'n' },
		{ "keep", required_argument, NULL, 'k' },
		{ "connect", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_vm_checkpoint_opts o = { 0 };
	struct series se = { .json = false };
	sigset_t old;
	uint64_t v;
	int c, err;

	while ((c = getopt_long(argc, argv, "d:i:n:k:c:jh", lo, NULL)) != -1) {
		switch (c) {
		case 'd': o.dir = optarg; break;
		case 'c': o.uri = optarg; break;
		case 'j': se.json = true; break;
		case 'i': case 'n': case 'k':
			if (parse_u64(optarg, &v, c == 'i' ? "--interval" :
				      c == 'n' ? "--count" : "--keep"))
				return 2;
			if (c != 'n' && v > UINT32_MAX) {
				fprintf(stderr, "wpsnap vm: '%s' is too large\n",
					optarg);
				return 2;
			}
			if (c == 'i')
				o.interval_ms = (unsigned int)v;
			else if (c == 'k')
				o.keep = (unsigned int)v;
			else
				o.count = v;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1 || !o.dir) {
		usage(stderr);
		return 2;
	}
	se.domain = o.domain = argv[optind];
	o.wait = wait_stop;
	o.report = report;
	o.arg = &se;
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* blocked before the library starts any thread, so that only
	 * wait_stop receives them */
	sigemptyset(&se.stop);
	sigaddset(&se.stop, SIGINT);
	sigaddset(&se.stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &se.stop, &old);
	if (!se.json)
		printf("%-4s %9s %9s %9s %9s %10s %6s %9s\n", "seq",
		       "pause ms", "suspend", "devices", "disks", "dirty MiB",
		       "disks", "total ms");
	err = wps_vm_checkpoint(ctx, &o);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (err) {
		fprintf(stderr, "wpsnap vm checkpoint: %s: the series stopped: "
			"%s (the domain runs on; the checkpoints in %s before "
			"this one restore)\n", o.domain, strerror(-err), o.dir);
		return 1;
	}
	return 0;
}

/* --lazy: the domain runs before its RAM is all in; say so then. */
static void say_running(void *arg, const struct wps_vm_restore_report *r)
{
	const struct wps_vm_restore_opts *o = arg;

	printf("domain from %s %s after %.1f ms (domain started %.1f, "
	       "device state %.1f); the RAM follows\n", o->dir,
	       o->paused ? "paused" : "running", r->total_ns / 1e6,
	       r->start_ns / 1e6, r->devices_ns / 1e6);
	fflush(stdout);
}

static int restore(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option lo[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "connect", required_argument, NULL, 'c' },
		{ "paused", no_argument, NULL, 'p' },
		{ "checkpoint", required_argument, NULL, 'k' },
		{ "lazy", no_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_vm_restore_opts o = { 0 };
	struct wps_vm_restore_report r;
	bool json = false;
	int c;

	while ((c = getopt_long(argc, argv, "n:c:pjhk:l", lo, NULL)) != -1) {
		switch (c) {
		case 'l': o.lazy = true; break;
		case 'k':
			if (parse_u64(optarg, &o.seq, "--checkpoint"))
				return 2;
			o.at_seq = true;
			break;
		case 'n': o.name = optarg; break;
		case 'c': o.uri = optarg; break;
		case 'p': o.paused = true; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	o.dir = argv[optind];
	if (o.lazy && !json) {
		o.running = say_running;
		o.arg = &o;
	}
	if (wps_vm_restore(ctx, &o, &r)) {
		fprintf(stderr, "wpsnap vm restore: %s: failed (nothing was "
			"left running)\n", o.dir);
		return 1;
	}
	if (json) {
		print_json(json_pack(
			"{s:s, s:i, s:f, s:f, s:f, s:f, s:I, s:i, s:b, s:b,"
			" s:I, s:I, s:f, s:f, s:f}",
			"dir", o.dir, "qemu_pid", (int)r.pid,
			"start_ms", r.start_ns / 1e6,
			"fill_ms", r.fill_ns / 1e6,
			"devices_ms", r.devices_ns / 1e6,
			"total_ms", r.total_ns / 1e6,
			"ram_bytes", (json_int_t)r.ram_bytes,
			"disks", (int)r.nr_disks, "paused", o.paused,
			"lazy", o.lazy, "lazy_bytes", (json_int_t)r.lazy_bytes,
			"faults", (json_int_t)r.faults,
			"fault_p99_us", r.fault_p99_ns / 1e3,
			"fault_max_us", r.fault_max_ns / 1e3,
			"graduate_ms", r.graduate_ns / 1e6));
		return 0;
	}
	printf("restored %s (QEMU pid %d): %.1f MiB of RAM, %u disk "
	       "overlay%s\n", o.dir, (int)r.pid, r.ram_bytes / MiB,
	       r.nr_disks, r.nr_disks == 1 ? "" : "s");
	printf("  %.1f ms: domain started %.1f, RAM %.1f, device state "
	       "%.1f; %s\n", r.total_ns / 1e6, r.start_ns / 1e6,
	       r.fill_ns / 1e6, r.devices_ns / 1e6,
	       o.paused ? "left paused" : "running");
	if (o.lazy)
		printf("  lazy: %.1f MiB served by the pager, all in place %.1f "
		       "ms after it ran; %" PRIu64 " faults (p99 %.0f us, max "
		       "%.0f us)\n", r.lazy_bytes / MiB, r.graduate_ns / 1e6,
		       r.faults, r.fault_p99_ns / 1e3, r.fault_max_ns / 1e3);
	return 0;
}

int vm_cmd_main(struct wps_ctx *ctx, int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	/* libvirt's client writes to its socket without MSG_NOSIGNAL: a
	 * libvirtd that dies must give us an error, not kill us in the
	 * middle of a pause (libvirt asks its applications to do this) */
	signal(SIGPIPE, SIG_IGN);
	argc--;
	argv++;
	optind = 1;
	if (!strcmp(argv[0], "snapshot"))
		return snapshot(ctx, argc, argv);
	if (!strcmp(argv[0], "restore"))
		return restore(ctx, argc, argv);
	if (!strcmp(argv[0], "checkpoint"))
		return checkpoint(ctx, argc, argv);
	if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "wpsnap vm: unknown command '%s'\n", argv[0]);
	usage(stderr);
	return 2;
}
