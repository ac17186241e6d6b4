/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A QEMU layout fixture shared by tests/unit/test_qemu.c (its round trip)
 * and tests/fuzz/gen_seeds.c (the qemu_layout fuzz target's seed, written
 * by wps_qemu_layout_format from this): one copy of the sample.
 */
#ifndef WPS_TEST_QEMU_SAMPLE_H
#define WPS_TEST_QEMU_SAMPLE_H

#include <wpsnap/qemu.h>

/* A pc-like layout: RAM (saved, seen twice), the BIOS (not saved). */
static struct wps_qemu_block sample_blocks[] = {
	{ .name = "pc.ram", .ram_addr = 0, .used = 256 << 20,
	  .max = 256 << 20, .page_size = 4096, .snap = true,
	  .host_addr = 0x7f0000000000ull, .region = 0 },
	{ .name = "pc.bios", .ram_addr = 256 << 20, .used = 256 << 10,
	  .max = 256 << 10, .page_size = 4096, .region = -1 },
};
static struct wps_qemu_phys sample_phys[] = {
	{ .gpa = 0, .size = 0xc3000, .offset = 0, .block = 0 },
	{ .gpa = 0xc3000, .size = 0x25000, .offset = 0xc3000, .block = 0,
	  .readonly = true },
	{ .gpa = 0xfffc0000ull, .size = 0x40000, .offset = 0, .block = 1,
	  .readonly = true },
};
static const struct wps_qemu_layout sample = {
	.version = "7.2.22", .machine = "pc-i440fx-7.2",
	.blocks = sample_blocks, .nr_blocks = 2,
	.phys = sample_phys, .nr_phys = 3,
};

#endif /* WPS_TEST_QEMU_SAMPLE_H */
