/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Entry of the QEMU test guest (tools/qguest/qguest.c says what it does).
 * A multiboot v1 header, so QEMU's -kernel loads this ELF32 itself and
 * enters it in flat 32-bit protected mode with paging off: no boot loader,
 * no page tables, every guest-physical address below 4 GiB is a pointer.
 */
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00000003	/* page-aligned modules, memory info */

	.section .multiboot, "a"
	.p2align 2
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.p2align 4
stack:
	.skip 16384
stack_top:

	.section .text
	.globl _start
_start:
	cli
	mov $stack_top, %esp
	push %ebx			/* multiboot information */
	push %eax			/* the loader's magic */
	call qguest_main
1:	hlt
	jmp 1b

	.section .note.GNU-stack, "", @progbits
