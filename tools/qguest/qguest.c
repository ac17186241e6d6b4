/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qguest: a freestanding x86 guest for QEMU that writes its RAM in known
 * patterns and says how far it got on the debugcon port (0xe9).
 *
 * It exists so that snapshots of an unmodified QEMU can be checked and
 * measured on a guest whose behaviour we control: the host reads the
 * progress lines, stamps them with its own clock, and so knows the guest's
 * write rate at any moment (before, during and after a snapshot) and how
 * long the guest was paused (the largest gap between two lines). The guest
 * itself has no notion of time: under TCG its clock stops with the VM.
 *
 * Loaded by QEMU's multiboot loader (-kernel qguest.elf, tools/qguest/
 * boot.S), it runs in flat 32-bit protected mode without paging, so a
 * guest-physical address is a pointer. Options come from -append:
 *
 *   pattern=random|seq|hot  which pages it writes (default random):
 *                           random pages of the area; a sequential sweep
 *                           that wraps; 7 of 8 writes into a hot set at
 *                           the start of the area, the rest random
 *   size=MIB                the area: MIB from 4 MiB up (default: all RAM
 *                           above 4 MiB); the rest of RAM is never touched,
 *                           so the host sees populated < total
 *   hot=MIB                 the hot set (default 16)
 *   report=N                a progress line every N page writes (4096)
 *   delay=N                 busy iterations between two writes (0: full
 *                           speed)
 *
 * First it fills every page of the area with a pattern of its own number
 * (so the RAM is populated and not zero), then it writes forever: each
 * page write stores the running count into one word of the page. Lines:
 *
 *   qguest ram=HEX area=HEX-HEX pattern=NAME
 *   ready                          the fill is done, the writes begin
 *   P HEX16                        total page writes so far
 *
 * Built with the host compiler as ELF32 (-m32 -ffreestanding -nostdlib):
 * no libgcc, so no 64-bit division anywhere here.
 */
#include <stddef.h>
#include <stdint.h>

#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_INFO_MEM (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)
#define DEBUGCON 0xe9
#define PAGE 4096u
#define AREA_START (4u << 20)

struct mb_info {
	uint32_t flags;
	uint32_t mem_lower;     /* KiB below 640 KiB */
	uint32_t mem_upper;     /* KiB from 1 MiB to the first hole */
	uint32_t boot_device;
	uint32_t cmdline;
};

enum pattern { PAT_RANDOM, PAT_SEQ, PAT_HOT };

void qguest_main(uint32_t magic, const struct mb_info *mb);

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static void puts_(const char *s)
{
	while (*s)
		outb(DEBUGCON, (uint8_t)*s++);
}

static void puthex(uint64_t v, int digits)
{
	static const char hex[] = "0123456789abcdef";
	int i;

	for (i = digits - 1; i >= 0; i--)
		outb(DEBUGCON, (uint8_t)hex[(v >> (4 * i)) & 15]);
}

static __attribute__((noreturn)) void halt(const char *why)
{
	puts_("qguest: ");
	puts_(why);
	puts_("\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* The value of "key=" in the command line, or NULL. */
static const char *option(const char *cmd, const char *key)
{
	const char *p = cmd, *k;

	while (p && *p) {
		while (*p == ' ')
			p++;
		for (k = key; *k && *p == *k; k++, p++)
			;
		if (!*k && *p == '=')
			return p + 1;
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

static uint32_t number(const char *cmd, const char *key, uint32_t dflt)
{
	const char *p = option(cmd, key);
	uint32_t v = 0;

	if (!p || *p < '0' || *p > '9')
		return dflt;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint32_t)(*p++ - '0');
	return v;
}

static int word_is(const char *p, const char *w)
{
	while (*w && *p == *w)
		p++, w++;
	return !*w && (!*p || *p == ' ');
}

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* A uniform index below n, by multiplication (no division). */
static inline uint32_t below(uint64_t r, uint32_t n)
{
	return (uint32_t)(((r >> 32) * (uint64_t)n) >> 32);
}

void qguest_main(uint32_t magic, const struct mb_info *mb)
{
	const char *cmd = "", *pat;
	uint32_t ram_top, area_end, npages, hot, report, delay, i, w;
	uint64_t count = 0, rng = 0x9e3779b97f4a7c15ull;
	enum pattern pattern = PAT_RANDOM;
	uint32_t seq = 0, left;

	if (magic != MB_BOOT_MAGIC)
		halt("not started by a multiboot loader");
	if (!(mb->flags & MB_INFO_MEM))
		halt("the loader gave no memory size");
	if (mb->flags & MB_INFO_CMDLINE)
		cmd = (const char *)(uintptr_t)mb->cmdline;
	/* Above 4 GiB is out of reach without paging; so is anything past
	 * the first hole, which mem_upper stops at. */
	ram_top = (1u << 20) + (mb->mem_upper << 10);
	if (ram_top <= AREA_START + (1u << 20))
		halt("needs more than 5 MiB of RAM");
	area_end = ram_top & ~(PAGE - 1);
	i = number(cmd, "size", 0);
	if (i && i < ((area_end - AREA_START) >> 20))
		area_end = AREA_START + (i << 20);
	npages = (area_end - AREA_START) / PAGE;
	hot = number(cmd, "hot", 16) << 8;
	if (!hot || hot > npages)
		hot = npages;
	report = number(cmd, "report", 4096);
	if (!report)
		report = 4096;
	delay = number(cmd, "delay", 0);
	pat = option(cmd, "pattern");
	if (pat && word_is(pat, "seq"))
		pattern = PAT_SEQ;
	else if (pat && word_is(pat, "hot"))
		pattern = PAT_HOT;
	else if (pat && !word_is(pat, "random"))
		halt("unknown pattern (random, seq or hot)");

	puts_("qguest ram=");
	puthex(ram_top, 8);
	puts_(" area=");
	puthex(AREA_START, 8);
	puts_("-");
	puthex(area_end, 8);
	puts_(pattern == PAT_SEQ ? " pattern=seq\n" : pattern == PAT_HOT ?
	      " pattern=hot\n" : " pattern=random\n");

	/* Every page of the area gets content of its own, never zero. */
	for (i = 0; i < npages; i++) {
		volatile uint32_t *p = (uint32_t *)(uintptr_t)(AREA_START +
							       i * PAGE);
		uint32_t v = (i + 1) * 0x9e3779b1u;

		for (w = 0; w < PAGE / 4; w++)
			p[w] = v ^ w;
	}
	puts_("ready\n");

	left = report;
	for (;;) {
		volatile uint32_t *p;
		uint64_t r = xorshift64(&rng);
		uint32_t pg;

		switch (pattern) {
		case PAT_SEQ:
			pg = seq++;
			if (seq == npages)
				seq = 0;
			break;
		case PAT_HOT:
			pg = (r & 7) ? below(r, hot) : below(r, npages);
			break;
		default:
			pg = below(r, npages);
			break;
		}
		p = (uint32_t *)(uintptr_t)(AREA_START + pg * PAGE);
		p[(uint32_t)r & (PAGE / 4 - 1)] = (uint32_t)count;
		count++;
		for (i = 0; i < delay; i++)
			__asm__ volatile("" ::: "memory");
		if (!--left) {
			left = report;
			puts_("P ");
			puthex(count, 16);
			puts_("\n");
		}
	}
}
