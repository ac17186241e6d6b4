/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one reader of /proc/PID/maps and /proc/PID/smaps in the tree (the
 * attach, the QEMU RAM discovery and the daemon's memfd check all use
 * it). Ground floor: depends on libc only, never on src/, so it cannot
 * log; it returns -errno and the caller, which knows why it was reading,
 * names the file (wps_maps_file) in its message.
 *
 * Invariants: the mappings come out in the kernel's order (ascending
 * addresses, no overlap); a path longer than the field is truncated,
 * never split into a second entry.
 */
#ifndef WPS_BASE_PROCMAPS_H
#define WPS_BASE_PROCMAPS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct wps_maps_vma {
	uint64_t start, end;    /* [start, end) */
	uint64_t offset;        /* into the file (or pgoff of anon) */
	uint64_t inode;
	unsigned int dev_major, dev_minor;
	char perms[5];          /* "rw-p" */
	char path[256];         /* "" when anonymous; truncated */
	bool dontfork;          /* VmFlags "dc" (WPS_MAPS_SMAPS only) */
};

/* Read /proc/PID/smaps (slower: the kernel walks the page tables for its
 * counters) to learn the VmFlags too. */
#define WPS_MAPS_SMAPS 0x1u

/* "/proc/PID/maps" or ".../smaps" into buf, for the caller's messages. */
const char *wps_maps_file(pid_t pid, unsigned int flags, char *buf,
			  size_t size);

/*
 * Every mapping of pid into *out (malloc'ed, *nr entries; free()).
 * -ENOENT: no such process; -ENOMEM; -EIO when the read failed midway;
 * -errno of open(). Nothing is allocated on failure.
 */
int wps_maps_read(pid_t pid, unsigned int flags, struct wps_maps_vma **out,
		  unsigned int *nr);

/* The same from an open stream in maps or smaps format (tests, saved
 * copies). */
int wps_maps_parse(FILE *f, unsigned int flags, struct wps_maps_vma **out,
		   unsigned int *nr);

#endif /* WPS_BASE_PROCMAPS_H */
