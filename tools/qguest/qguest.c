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
 *   disk=N                  a disk-sequence record every N page writes
 *                           when a disk is present (16384; 0: no disk I/O)
 *
 * First it fills every page of the area with a pattern of its own number
 * (so the RAM is populated and not zero), then it writes forever: each
 * page write stores the running count into one word of the page. Lines:
 *
 *   qguest ram=HEX area=HEX-HEX pattern=NAME
 *   ready                          the fill is done, the writes begin
 *   P HEX16                        total page writes so far
 *
 * The disk sequence (docs/VM.md): when an ATA disk is the IDE primary
 * master (a libvirt <disk> with bus='ide', target hda), the guest also
 * writes a record to it every `disk=N` page writes (default 16384; 0: never),
 * polling (LBA28 WRITE SECTORS, nIEN set, no interrupt is ever taken), and
 * keeps the sequence number of that record in RAM at a fixed address, so a
 * snapshot can be proved to hold disk and memory of one instant:
 *
 *   disk: one 512-byte sector per record, at LBA SEQ_RING_LBA + (seq mod
 *         SEQ_RING_LEN), ring of 64 sectors from LBA 8; little-endian
 *     0   "qgseqdsk"    magic
 *     8   u32 seq       1, 2, 3, ... (the newest record has the largest)
 *     12  u32 lba       where this record was written
 *     16  u64 writes    page writes done when it was issued
 *     24  u32 fill[121] seq ^ (index * 0x9e3779b1): the whole sector counts
 *     508 u32 fnv1a     FNV-1a 32 of bytes 0..507
 *   RAM at SEQ_RAM_ADDR (3 MiB: above the image and the multiboot
 *   information, below the written area), little-endian
 *     0   "qgseqram"    magic (written once the disk is found)
 *     8   u32 issued    seq of the record being written, set before the
 *                       command is sent
 *     12  u32 done      seq of the newest record the drive acknowledged
 *     16  u32 ring_lba, u32 ring_len
 *     24  u64 writes    page writes at the newest acknowledged record
 *
 *   A VM stopped anywhere (QEMU drains the block layer when it stops) has
 *   done <= newest seq on disk <= issued, and issued - done <= 1: when
 *   issued == done, the disk's newest record is exactly `done`.
 *
 * Without a drive nothing changes: QEMU's IDE with no drive reads 0 in every
 * register and a bus without a controller floats to 0xFF; both fail the
 * probe (a register write must read back, then IDENTIFY must answer as ATA).
 * The line "disk ata0 sectors=HEX" or "disk none" says which.
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
#define SEQ_RAM_ADDR (3u << 20)
#define SEQ_RING_LBA 8u
#define SEQ_RING_LEN 64u         /* a power of two: the ring index masks */
#define ATA_DATA 0x1f0
#define ATA_NSECT 0x1f2
#define ATA_LBA0 0x1f3
#define ATA_LBA1 0x1f4
#define ATA_LBA2 0x1f5
#define ATA_DRIVE 0x1f6
#define ATA_CMD 0x1f7           /* status when read */
#define ATA_CTL 0x3f6           /* alternate status when read */
#define ATA_ERR 0x01
#define ATA_DRQ 0x08
#define ATA_DF 0x20
#define ATA_BSY 0x80
#define ATA_SPIN 10000000u      /* polls before a drive counts as hung */

struct mb_info {
	uint32_t flags;
	uint32_t mem_lower;     /* KiB below 640 KiB */
	uint32_t mem_upper;     /* KiB from 1 MiB to the first hole */
	uint32_t boot_device;
	uint32_t cmdline;
};

enum pattern { PAT_RANDOM, PAT_SEQ, PAT_HOT };

struct seq_ram {
	char magic[8];
	volatile uint32_t issued;
	volatile uint32_t done;
	uint32_t ring_lba;
	uint32_t ring_len;
	volatile uint64_t writes;
};

void qguest_main(uint32_t magic, const struct mb_info *mb);

/* Port I/O of one width: outb/inb (uint8_t), outw/inw (uint16_t). The
 * assembler takes the width from the register the type selects. */
#define PORT_IO(sfx, type)                                                  \
	static inline void out##sfx(uint16_t port, type v)                  \
	{                                                                   \
		__asm__ volatile("out %0, %1" : : "a"(v), "Nd"(port));      \
	}                                                                   \
	static inline type in##sfx(uint16_t port)                           \
	{                                                                   \
		type v;                                                     \
		__asm__ volatile("in %1, %0" : "=a"(v) : "Nd"(port));       \
		return v;                                                   \
	}
PORT_IO(b, uint8_t)
PORT_IO(w, uint16_t)

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

/* ~400 ns for the drive to present its status after a select or a
 * command: four reads of the alternate status, as ATA specifies. */
static void ata_delay(void)
{
	int i;

	for (i = 0; i < 4; i++)
		(void)inb(ATA_CTL);
}

/* The status once BSY clears, or -1 if it never does. */
static int ata_idle(void)
{
	uint32_t n;
	uint8_t st;

	for (n = 0; n < ATA_SPIN; n++) {
		st = inb(ATA_CMD);
		if (!(st & ATA_BSY))
			return st;
	}
	return -1;
}

/* Whether an ATA drive answers as IDE primary master, and its LBA28
 * sector count. Registers must read back what was written (QEMU's IDE
 * without drives reads 0, a floating bus 0xFF) and IDENTIFY DEVICE must
 * return data with the ATA signature (an ATAPI drive aborts it). */
static uint32_t ata_probe(void)
{
	uint16_t id[256];
	int st, i;

	outb(ATA_CTL, 0x02);            /* nIEN: this guest polls */
	outb(ATA_DRIVE, 0xa0);
	ata_delay();
	st = inb(ATA_CMD);
	if (st == 0xff || st == 0)
		return 0;
	outb(ATA_NSECT, 0x55);
	outb(ATA_LBA0, 0xaa);
	if (inb(ATA_NSECT) != 0x55 || inb(ATA_LBA0) != 0xaa)
		return 0;
	if (ata_idle() < 0)
		return 0;
	outb(ATA_NSECT, 0);
	outb(ATA_LBA0, 0);
	outb(ATA_LBA1, 0);
	outb(ATA_LBA2, 0);
	outb(ATA_CMD, 0xec);            /* IDENTIFY DEVICE */
	ata_delay();
	st = ata_idle();
	if (st < 0 || (st & ATA_ERR) || inb(ATA_LBA1) || inb(ATA_LBA2) ||
	    !(st & ATA_DRQ))
		return 0;
	for (i = 0; i < 256; i++)
		id[i] = inw(ATA_DATA);
	return (uint32_t)id[60] | (uint32_t)id[61] << 16;
}

static uint32_t fnv1a(const uint8_t *p, uint32_t n)
{
	uint32_t h = 0x811c9dc5u;

	while (n--)
		h = (h ^ *p++) * 0x01000193u;
	return h;
}

/* One record of the disk sequence (the layout is in the header comment),
 * written with WRITE SECTORS and polled to completion. `issued` is set
 * before the command and `done` only after the drive acknowledged it, so
 * that RAM never claims a record the disk may not have. */
static void seq_write(struct seq_ram *r, uint32_t seq, uint64_t writes)
{
	uint32_t sec[128], lba, i;
	int st;

	lba = SEQ_RING_LBA + (seq & (SEQ_RING_LEN - 1));
	sec[0] = 0x65736771u;           /* "qgseqdsk", little-endian */
	sec[1] = 0x6b736471u;
	sec[2] = seq;
	sec[3] = lba;
	sec[4] = (uint32_t)writes;
	sec[5] = (uint32_t)(writes >> 32);
	for (i = 6; i < 127; i++)
		sec[i] = seq ^ ((i - 6) * 0x9e3779b1u);
	sec[127] = fnv1a((const uint8_t *)sec, 508);

	if (ata_idle() < 0)
		halt("disk: drive stays busy");
	r->issued = seq;
	__asm__ volatile("" ::: "memory");
	outb(ATA_DRIVE, 0xe0 | ((lba >> 24) & 0x0f));
	ata_delay();
	outb(ATA_NSECT, 1);
	outb(ATA_LBA0, (uint8_t)lba);
	outb(ATA_LBA1, (uint8_t)(lba >> 8));
	outb(ATA_LBA2, (uint8_t)(lba >> 16));
	outb(ATA_CMD, 0x30);            /* WRITE SECTORS */
	ata_delay();
	st = ata_idle();
	if (st < 0 || (st & (ATA_ERR | ATA_DF)) || !(st & ATA_DRQ))
		halt("disk: WRITE SECTORS refused");
	for (i = 0; i < 128; i++) {
		outw(ATA_DATA, (uint16_t)sec[i]);
		outw(ATA_DATA, (uint16_t)(sec[i] >> 16));
	}
	ata_delay();
	st = ata_idle();
	if (st < 0 || (st & (ATA_ERR | ATA_DF | ATA_DRQ)))
		halt("disk: write failed");
	__asm__ volatile("" ::: "memory");
	r->writes = writes;
	r->done = seq;
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
	uint32_t seq = 0, left, disk_every, disk_left = 0, dseq = 0;
	uint32_t sectors = 0;
	struct seq_ram *sr = (struct seq_ram *)(uintptr_t)SEQ_RAM_ADDR;

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
	disk_every = number(cmd, "disk", 16384);
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

	if (disk_every)
		sectors = ata_probe();
	if (sectors && sectors < SEQ_RING_LBA + SEQ_RING_LEN)
		halt("disk: too small for the sequence ring");
	if (sectors) {
		sr->issued = sr->done = 0;
		sr->ring_lba = SEQ_RING_LBA;
		sr->ring_len = SEQ_RING_LEN;
		sr->writes = 0;
		__asm__ volatile("" ::: "memory");
		((volatile uint32_t *)sr->magic)[0] = 0x65736771u; /* "qgse" */
		((volatile uint32_t *)sr->magic)[1] = 0x6d617271u; /* "qram" */
		puts_("disk ata0 sectors=");
		puthex(sectors, 8);
		puts_("\n");
		disk_left = disk_every;
	} else {
		puts_("disk none\n");
	}

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
		if (disk_left && !--disk_left) {
			disk_left = disk_every;
			seq_write(sr, ++dseq, count);
		}
		if (!--left) {
			left = report;
			puts_("P ");
			puthex(count, 16);
			puts_("\n");
		}
	}
}
