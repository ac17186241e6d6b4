/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The parts of the QEMU module that need no QEMU: the one maps/smaps
 * reader (base/procmaps.c) on crafted text and on this process, and the
 * layout blob (src/qemu_layout.c): a round trip keeps every field, and
 * every malformed blob (wrong types, out-of-range numbers, dangling
 * names, every truncation of a valid one) is -EINVAL with the field
 * named, never a crash. QEMU itself is tests/integration/qemu.py's.
 */
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <wpsnap/qemu.h>
#include <wpsnap/wpsnap.h>

#include "base/procmaps.h"
#include "tests/unit/qemu_sample.h"
#include "tests/unit/testutil.h"

static const char smaps_text[] =
	"55d0c0a00000-55d0c0a21000 r--p 00000000 fe:01 1234   /usr/bin/qemu\n"
	"Size:                132 kB\n"
	"Anonymous:             0 kB\n"
	"AnonHugePages:         0 kB\n"
	"VmFlags: rd mr mw me dw sd\n"
	"7f0000000000-7f0010000000 rw-p 00000000 00:00 0 \n"
	"Anonymous:        262144 kB\n"
	"VmFlags: rd wr mr mw me dc ac sd hg\n"
	"7f0020000000-7f0030000000 rw-s 00001000 00:01 77   /memfd:pc.ram (deleted)\n"
	"VmFlags: rd wr sh mr mw me ms sd dd\n"
	"7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0    [stack]\n";

START_TEST(maps_parse_smaps)
{
	struct wps_maps_vma *v;
	unsigned int n;
	FILE *f = fmemopen((void *)smaps_text, sizeof(smaps_text) - 1, "r");

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(wps_maps_parse(f, WPS_MAPS_SMAPS, &v, &n), 0);
	fclose(f);
	ck_assert_uint_eq(n, 4);
	ck_assert_uint_eq(v[0].start, 0x55d0c0a00000ull);
	ck_assert_uint_eq(v[0].end, 0x55d0c0a21000ull);
	ck_assert_str_eq(v[0].perms, "r--p");
	ck_assert_uint_eq(v[0].dev_major, 0xfe);
	ck_assert_uint_eq(v[0].dev_minor, 1);
	ck_assert_uint_eq(v[0].inode, 1234);
	ck_assert_str_eq(v[0].path, "/usr/bin/qemu");
	ck_assert(!v[0].dontfork);
	/* "dc" found, "dd" (no dump) is not "dc" */
	ck_assert_str_eq(v[1].path, "");
	ck_assert(v[1].dontfork);
	ck_assert_uint_eq(v[2].offset, 0x1000);
	ck_assert_str_eq(v[2].path, "/memfd:pc.ram (deleted)");
	ck_assert(!v[2].dontfork);
	ck_assert_str_eq(v[3].path, "[stack]");
	free(v);
}
END_TEST

/* A path longer than the field is truncated, not a second mapping. */
START_TEST(maps_long_path)
{
	char text[1024];
	struct wps_maps_vma *v;
	unsigned int n;
	FILE *f;
	int len;

	len = snprintf(text, sizeof(text), "1000-2000 rw-s 00000000 00:05 9 /");
	memset(text + len, 'x', 600);
	strcpy(text + len + 600, "\n3000-4000 rw-p 00000000 00:00 0\n");
	f = fmemopen(text, strlen(text), "r");
	ck_assert_int_eq(wps_maps_parse(f, 0, &v, &n), 0);
	fclose(f);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(strlen(v[0].path), sizeof(v[0].path) - 1);
	ck_assert_uint_eq(v[1].start, 0x3000);
	free(v);
}
END_TEST

/* The live reader on ourselves: a MADV_DONTFORK mapping says so in
 * smaps, not in maps; a process that does not exist is -ENOENT. */
START_TEST(maps_read_self)
{
	size_t size = 16 * 4096;
	struct wps_maps_vma *v;
	unsigned int n, i, seen = 0;
	unsigned int flags[] = { 0, WPS_MAPS_SMAPS };
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int k;

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(madvise(p, size, MADV_DONTFORK), 0);
	for (k = 0; k < 2; k++) {
		ck_assert_int_eq(wps_maps_read(getpid(), flags[k], &v, &n), 0);
		for (i = 0; i < n; i++)
			if (v[i].start <= (uintptr_t)p &&
			    v[i].end >= (uintptr_t)p + size) {
				ck_assert_int_eq(v[i].dontfork, k == 1);
				seen++;
			}
		free(v);
	}
	ck_assert_uint_eq(seen, 2);
	munmap(p, size);
	ck_assert_int_eq(wps_maps_read(0x7ffffffe, 0, &v, &n), -ENOENT);
}
END_TEST

static struct wps_ctx *ctx;

static void ctx_setup(void)
{
	ck_assert_int_eq(wps_ctx_new(&ctx), 0);
	wps_ctx_set_log_fn(ctx, tu_log_capture, NULL);
	tu_log_reset();
}

static void ctx_teardown(void)
{
	wps_ctx_free(ctx);
}

START_TEST(layout_round_trip)
{
	struct wps_qemu_layout *l;
	char *json;
	unsigned int i;

	ck_assert_int_eq(wps_qemu_layout_format(ctx, &sample, &json), 0);
	ck_assert_int_eq(wps_qemu_layout_parse(ctx, json, strlen(json), &l), 0);
	ck_assert_str_eq(l->version, "7.2.22");
	ck_assert_str_eq(l->machine, "pc-i440fx-7.2");
	ck_assert_uint_eq(l->nr_blocks, 2);
	for (i = 0; i < 2; i++) {
		const struct wps_qemu_block *a = &sample_blocks[i],
					    *b = &l->blocks[i];

		ck_assert_str_eq(a->name, b->name);
		ck_assert_uint_eq(a->ram_addr, b->ram_addr);
		ck_assert_uint_eq(a->used, b->used);
		ck_assert_uint_eq(a->max, b->max);
		ck_assert_uint_eq(a->page_size, b->page_size);
		ck_assert_uint_eq(a->host_addr, b->host_addr);
		ck_assert_int_eq(a->region, b->region);
		ck_assert_int_eq(a->snap, b->snap);
	}
	ck_assert_uint_eq(l->nr_phys, 3);
	ck_assert_mem_eq(l->phys, sample_phys, sizeof(sample_phys));
	wps_qemu_layout_free(l);
	free(json);
}
END_TEST

/* Images written before the machine type was recorded still read. */
START_TEST(layout_without_machine)
{
	static const char old[] =
		"{\"format\": \"wpsnap-qemu-layout-1\", \"qemu\": \"7.2.22\","
		" \"blocks\": [{\"name\": \"pc.ram\", \"ram_addr\": 0, \"used\":"
		" 4096, \"max\": 4096, \"page_size\": 4096, \"host_addr\":"
		" 4096, \"region\": 0}], \"physmap\": []}";
	struct wps_qemu_layout *l;

	ck_assert_int_eq(wps_qemu_layout_parse(ctx, old, strlen(old), &l), 0);
	ck_assert_str_eq(l->machine, "");
	ck_assert_uint_eq(l->nr_phys, 0);
	wps_qemu_layout_free(l);
}
END_TEST

#define BLK "{\"name\": \"pc.ram\", \"ram_addr\": 0, \"used\": 8192, " \
	    "\"max\": 8192, \"page_size\": 4096, \"host_addr\": 4096, "
#define HEAD "{\"format\": \"wpsnap-qemu-layout-1\", \"qemu\": \"7.2\", "

static const struct {
	const char *json, *why;
} bad[] = {
	{ "", "not a JSON object" },
	{ "[]", "not a JSON object" },
	{ "{\"format\": \"wpsnap-qemu-layout-2\", \"qemu\": \"7\", "
	  "\"blocks\": [], \"physmap\": []}", "format" },
	{ HEAD "\"blocks\": [], \"physmap\": []}", "blocks" },
	{ HEAD "\"blocks\": {}, \"physmap\": []}", "blocks" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}]}", "physmap" },
	{ HEAD "\"blocks\": [1], \"physmap\": []}", "blocks[0]" },
	{ HEAD "\"blocks\": [" BLK "\"region\": \"0\"}], \"physmap\": []}",
	  "blocks[0].region" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 64}], \"physmap\": []}",
	  "blocks[0].region" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}, " BLK "\"region\": 1}],"
	  " \"physmap\": []}", "listed twice" },
	{ HEAD "\"blocks\": [{\"name\": \"a\", \"ram_addr\": -1, \"used\": 0,"
	  " \"max\": 0, \"page_size\": 4096, \"host_addr\": 0, \"region\":"
	  " null}], \"physmap\": []}", "blocks[0].ram_addr" },
	{ HEAD "\"blocks\": [{\"name\": \"a\", \"ram_addr\": 0, \"used\": 2,"
	  " \"max\": 1, \"page_size\": 4096, \"host_addr\": 0, \"region\":"
	  " null}], \"physmap\": []}", "out of range" },
	{ HEAD "\"blocks\": [{\"name\": \"a\", \"ram_addr\": 0, \"used\": 0,"
	  " \"max\": 0, \"page_size\": 4097, \"host_addr\": 0, \"region\":"
	  " null}], \"physmap\": []}", "page_size" },
	{ HEAD "\"blocks\": [{\"name\": \"\", \"ram_addr\": 0, \"used\": 0,"
	  " \"max\": 0, \"page_size\": 0, \"host_addr\": 0, \"region\":"
	  " null}], \"physmap\": []}", "name is empty" },
	{ HEAD "\"blocks\": [{\"name\": \"a\\u0000b\", \"ram_addr\": 0, "
	  "\"used\": 0, \"max\": 0, \"page_size\": 0, \"host_addr\": 0, "
	  "\"region\": null}], \"physmap\": []}", "NUL" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}], \"physmap\": [{\"gpa\":"
	  " 0, \"size\": 4096, \"block\": \"pc.rom\", \"offset\": 0, "
	  "\"readonly\": false}]}", "pc.rom is not in blocks" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}], \"physmap\": [{\"gpa\":"
	  " 0, \"size\": 4096, \"block\": \"pc.ram\", \"offset\": 8192, "
	  "\"readonly\": false}]}", "does not fit" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}], \"physmap\": [{\"gpa\":"
	  " 0, \"size\": 0, \"block\": \"pc.ram\", \"offset\": 0, "
	  "\"readonly\": false}]}", "does not fit" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}], \"physmap\": [{\"gpa\":"
	  " 0, \"size\": 4096, \"block\": \"pc.ram\", \"offset\": 0, "
	  "\"readonly\": 1}]}", "readonly" },
	{ HEAD "\"blocks\": [" BLK "\"region\": 0}], \"physmap\": [{\"gpa\":"
	  " 0.5, \"size\": 4096, \"block\": \"pc.ram\", \"offset\": 0, "
	  "\"readonly\": true}]}", "physmap[0].gpa" },
	{ HEAD "\"qemu\": \"again\", \"blocks\": [], \"physmap\": []}",
	  "not a JSON object" },
};

START_TEST(layout_malformed)
{
	struct wps_qemu_layout *l = NULL;

	tu_log_reset();
	ck_assert_msg(wps_qemu_layout_parse(ctx, bad[_i].json,
					    strlen(bad[_i].json), &l) ==
		      -EINVAL, "accepted: %s", bad[_i].json);
	ck_assert_ptr_null(l);
	ck_assert_msg(tu_logged(bad[_i].why), "case %d: log '%s' lacks '%s'",
		      _i, tu_log_text(), bad[_i].why);
}
END_TEST

/* Every proper prefix of a valid blob is refused. */
START_TEST(layout_truncated)
{
	struct wps_qemu_layout *l = NULL;
	char *json;
	size_t len, n;

	ck_assert_int_eq(wps_qemu_layout_format(ctx, &sample, &json), 0);
	len = strlen(json);
	for (n = 0; n < len; n++) {
		ck_assert_int_eq(wps_qemu_layout_parse(ctx, json, n, &l),
				 -EINVAL);
		ck_assert_ptr_null(l);
	}
	free(json);
}
END_TEST

static Suite *qemu_suite(void)
{
	Suite *s = suite_create("qemu");
	TCase *tc = tcase_create("procmaps");

	tcase_add_test(tc, maps_parse_smaps);
	tcase_add_test(tc, maps_long_path);
	tcase_add_test(tc, maps_read_self);
	suite_add_tcase(s, tc);
	tc = tcase_create("layout");
	tcase_add_checked_fixture(tc, ctx_setup, ctx_teardown);
	tcase_add_test(tc, layout_round_trip);
	tcase_add_test(tc, layout_without_machine);
	tcase_add_loop_test(tc, layout_malformed, 0,
			    (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, layout_truncated);
	suite_add_tcase(s, tc);
	return s;
}

TU_MAIN(qemu_suite)
