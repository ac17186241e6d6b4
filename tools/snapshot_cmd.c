/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap snapshot --pid PID -o IMAGE: a live snapshot of a process that
 * knows nothing about wpsnap. A thin shell over <wpsnap/attach.h>: parse
 * the options, attach, snapshot, print what the process paid for it. The
 * library has already logged the detail of any failure; this file adds
 * which step failed. --qemu and --physmem (a QEMU's guest RAM, and the
 * guest-physical view of such an image) are tools/snapshot_qemu.c over
 * the library's <wpsnap/qemu.h>.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wpsnap/attach.h>
#include <wpsnap/wpsnap.h>

#include "tools/snapshot_cmd.h"
#include "tools/snapshot_qemu.h"

#define MiB (1024.0 * 1024.0)
#define MAX_RANGES 64

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap snapshot --pid PID -o IMAGE [--range START-END]... "
		"[--overwrite]\n"
		"       wpsnap snapshot --qemu QMP_SOCKET -o IMAGE [--overwrite] "
		"[--json]\n"
		"       wpsnap snapshot --physmem IMAGE -o FILE\n"
		"Live snapshot of a running process's memory. The process is "
		"stopped briefly\n"
		"to attach and for the freeze; the copy runs while it runs.\n\n"
		"  -p, --pid PID          the process (needs root or "
		"CAP_SYS_PTRACE)\n"
		"  -q, --qemu SOCKET      the guest RAM of the QEMU serving this "
		"QMP socket:\n"
		"                         the guest is paused (QMP stop/cont) "
		"only for the freeze;\n"
		"                         the image records the guest-physical "
		"layout\n"
		"      --json             with --qemu: the report as one JSON "
		"object\n"
		"      --no-stop          with --qemu: no QMP stop/cont; the "
		"freeze stops QEMU's\n"
		"                         threads (ptrace) for its last step "
		"only\n"
		"      --fault-window N   with --qemu: 4 KiB pages saved per "
		"write fault (1-64)\n"
		"      --physmem IMAGE    write a --qemu image's guest-physical "
		"memory to -o FILE\n"
		"                         as QEMU's pmemsave would, from address "
		"0\n"
		"  -o, --output IMAGE     where to write the image: a file, or "
		"an NBD export\n"
		"                         (nbd://HOST[:PORT]/EXPORT, "
		"nbd+unix:///EXPORT?socket=PATH;\n"
		"                         docs/REMOTE.md)\n"
		"  -r, --range START-END  hex addresses, page aligned; "
		"repeatable (default:\n"
		"                         its private anonymous and shmem/memfd "
		"memory)\n"
		"      --overwrite        replace an existing IMAGE\n"
		"  -h, --help             this text\n");
}

int cli_parse_range(const char *s, struct wps_attach_range *r)
{
	char *end;

	errno = 0;
	r->start = strtoull(s, &end, 16);
	if (errno || end == s || *end != '-')
		return -EINVAL;
	s = end + 1;
	r->end = strtoull(s, &end, 16);
	if (errno || end == s || *end)
		return -EINVAL;
	return 0;
}

static const char *backing_name(uint32_t b)
{
	return b == WPS_BACKING_ANON ? "anon" : b == WPS_BACKING_MEMFD ?
	       "memfd" : "hugetlb";
}

int cmd_snapshot(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "output", required_argument, NULL, 'o' },
		{ "range", required_argument, NULL, 'r' },
		{ "overwrite", no_argument, NULL, 'O' },
		{ "qemu", required_argument, NULL, 'q' },
		{ "physmem", required_argument, NULL, 'P' },
		{ "json", no_argument, NULL, 'J' },
		{ "no-stop", no_argument, NULL, 'S' },
		{ "fault-window", required_argument, NULL, 'W' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct wps_attach_range ranges[MAX_RANGES];
	struct wps_snapshot_stats st;
	struct wps_attach_info info;
	const struct wps_region *reg;
	struct wps_snapshot *snap = NULL;
	struct wps_attach *at = NULL;
	const char *out = NULL, *qemu = NULL, *physmem = NULL;
	unsigned int nr = 0, nreg, i;
	bool json = false, no_stop = false;
	unsigned long window = 0;
	long pid = 0;
	char *end;
	int c, ret, status = 1;

	while ((c = getopt_long(argc, argv, "p:o:r:q:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'p':
			errno = 0;
			pid = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || pid <= 0 ||
			    pid > INT32_MAX) {
				fprintf(stderr, "wpsnap snapshot: bad pid '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'o':
			out = optarg;
			break;
		case 'r':
			if (nr == MAX_RANGES) {
				fprintf(stderr, "wpsnap snapshot: at most %d "
					"ranges\n", MAX_RANGES);
				return 2;
			}
			if (cli_parse_range(optarg, &ranges[nr])) {
				fprintf(stderr, "wpsnap snapshot: bad range '%s' "
					"(want START-END in hex)\n", optarg);
				return 2;
			}
			nr++;
			break;
		case 'O':
			so.flags |= WPS_SNAP_OVERWRITE;
			break;
		case 'q':
			qemu = optarg;
			break;
		case 'P':
			physmem = optarg;
			break;
		case 'J':
			json = true;
			break;
		case 'S':
			no_stop = true;
			break;
		case 'W':
			errno = 0;
			window = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || !window ||
			    window > 64 || (window & (window - 1))) {
				fprintf(stderr, "wpsnap snapshot: bad fault window "
					"'%s' (a power of two, 1-64)\n", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if ((!!pid + !!qemu + !!physmem) > 1 || (nr && !pid) ||
	    ((json || no_stop || window) && !qemu)) {
		fprintf(stderr, "wpsnap snapshot: one of --pid, --qemu and "
			"--physmem; --range only with --pid; --json, --no-stop "
			"and --fault-window only with --qemu\n");
		usage(stderr);
		return 2;
	}
	if (qemu && out && optind == argc) {
		struct cmd_qemu_opts qo = {
			.qmp_path = qemu, .out = out, .flags = so.flags,
			.fault_window = (unsigned int)window, .json = json,
			.no_stop = no_stop,
		};

		return cmd_snapshot_qemu(ctx, &qo);
	}
	if (physmem && out && optind == argc)
		return cmd_physmem(ctx, physmem, out);
	if (!pid || !out || optind != argc) {
		fprintf(stderr, "wpsnap snapshot: --pid (or --qemu, or "
			"--physmem) and -o are required\n");
		usage(stderr);
		return 2;
	}

	ret = wps_attach_new(ctx, (pid_t)pid, nr ? ranges : NULL, nr, &at);
	if (ret) {
		fprintf(stderr, "wpsnap snapshot: cannot attach to process "
			"%ld: %s\n", pid, strerror(-ret));
		return 1;
	}
	so.path = out;
	ret = wps_attach_snapshot_new(at, &so, &snap);
	if (ret) {
		fprintf(stderr, "wpsnap snapshot: preparing the snapshot of "
			"process %ld: %s\n", pid, strerror(-ret));
		goto out;
	}
	ret = wps_snapshot_freeze(snap);
	if (ret) {
		fprintf(stderr, "wpsnap snapshot: freezing process %ld: %s\n",
			pid, wps_attach_exited(at) ? "the process exited" :
			strerror(-ret));
		goto out;
	}
	ret = wps_snapshot_wait(snap);
	if (ret) {
		fprintf(stderr, "wpsnap snapshot: process %ld: %s\n", pid,
			wps_attach_exited(at) ? "the process exited during "
			"the copy" : strerror(-ret));
		goto out;
	}
	wps_snapshot_stats(snap, &st);
	wps_attach_get_info(at, &info);
	reg = wps_attach_regions(at, &nreg);
	printf("snapshot of process %ld (%u threads): %u regions, %.1f MiB\n",
	       pid, info.threads, nreg, info.bytes / MiB);
	for (i = 0; i < nreg; i++)
		printf("  %012" PRIx64 "-%012" PRIx64 " %8.1f MiB %-7s %s\n",
		       reg[i].host_addr, reg[i].host_addr + reg[i].size,
		       reg[i].size / MiB, backing_name(reg[i].backing),
		       reg[i].name ? reg[i].name : "");
	printf("  process stopped %.3f ms to attach, %.3f ms for the freeze "
	       "(all threads %.3f ms, write-protect %.3f ms after %u live "
	       "rounds)\n", info.attach_stop_ns / 1e6,
	       info.freeze_stop_ns / 1e6, st.pause_ns / 1e6,
	       st.protect_ns / 1e6, st.protect_rounds);
	printf("  total          %.1f ms, %.0f MiB/s (%s I/O)\n",
	       st.total_ns / 1e6,
	       st.total_ns ? st.saved_bytes / MiB / (st.total_ns / 1e9) : 0.0,
	       st.direct_io ? "O_DIRECT" : "buffered");
	printf("  write faults   %" PRIu64 " serviced in %.1f/%.1f/%.1f us "
	       "(p50/p99/max, handler)\n", st.faults, st.fault_p50_ns / 1e3,
	       st.fault_p99_ns / 1e3, st.fault_max_ns / 1e3);
	printf("  image          %.1f MiB data for %.1f MiB populated, "
	       "file %.1f MiB\n", st.image_data_bytes / MiB,
	       st.populated_bytes / MiB, st.image_file_bytes / MiB);
	if (info.skipped)
		printf("  skipped        %u mapping(s) (hugetlb, or larger "
		       "than RAM); choose them with --range\n", info.skipped);
	printf("wrote %s\n", out);
	status = 0;
out:
	wps_snapshot_free(snap);
	wps_attach_free(at);
	return status;
}
