/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap: the command-line front end. Each command is a thin shell over
 * libwpsnap (snapshots, images) and the reference guest (demo); logic that
 * a VMM could want lives in the library, not here.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <wpsnap/chain.h>
#include <wpsnap/image.h>
#include <wpsnap/wpsnap.h>

#include "tools/bench.h"
#include "tools/restore_lazy.h"
#include "tools/checkpoint_cmd.h"
#include "tools/netbuf_cmd.h"
#include "tools/snapshot_cmd.h"
#include "tools/vm_cmd.h"
#include "guest/guest.h"

#define MiB (1024.0 * 1024.0)

static const char *prog = "wpsnap";

static void usage_main(FILE *f)
{
	fprintf(f,
		"Usage: wpsnap COMMAND [OPTIONS]\n"
		"Live snapshots of guest RAM without pausing the guest.\n\n"
		"Commands:\n"
		"  demo      run the reference guest, snapshot it live, verify\n"
		"  snapshot  live snapshot of a running process (--pid)\n"
		"  inspect   show an image's header, regions and blobs\n"
		"  export    write the raw bytes of one region of an image\n"
		"  verify    check an image's checksums (and content, with a ledger)\n"
		"  restore   load an image (a file or nbd://HOST/EXPORT) into fresh memory\n"
		"  checkpoint  periodic checkpoints: a full image, then increments\n"
		"  chain     show a checkpoint chain, restore it against a ledger, fold it\n"
		"  merge     flatten a checkpoint chain into one full image\n"
		"  netbuf    hold a network interface's output through epochs (bench)\n"
		"  bench     measure snapshots against this machine's limits\n"
		"  vm        snapshot and restore a libvirt VM: disk, memory, devices\n"
		"  version   print the version\n\n"
		"'wpsnap COMMAND --help' describes each command.\n");
}

static const char *backing_name(uint32_t b)
{
	switch (b) {
	case WPS_BACKING_ANON: return "anon";
	case WPS_BACKING_MEMFD: return "memfd";
	case WPS_BACKING_HUGETLB: return "hugetlb";
	default: return "unknown";
	}
}

static int open_image(struct wps_ctx *ctx, const char *path, unsigned int flags,
		      struct wps_image **img)
{
	int ret = wps_image_open(ctx, path, flags, img);

	if (ret)
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(-ret));
	return ret;
}

/* ------------------------------------------------------------------ */
/* inspect                                                             */
/* ------------------------------------------------------------------ */

static bool has_parent(const struct wps_image_info *in)
{
	static const uint8_t none[16];

	return memcmp(in->parent_uuid, none, 16) != 0;
}

/* The chain an incremental image ends: JSON array of its images, oldest
 * first, or NULL (logged) when it is not whole. */
static json_t *chain_json(struct wps_ctx *ctx, const char *path)
{
	struct wps_chain *c;
	json_t *a;
	unsigned int i;
	char u[37];

	if (wps_chain_open(ctx, path, WPS_IMG_OPEN_NO_VERIFY_DATA, &c))
		return NULL;
	a = json_array();
	for (i = 0; i < wps_chain_length(c); i++) {
		wps_uuid_str(wps_image_get_info(wps_chain_image(c, i))->uuid, u);
		json_array_append_new(a, json_pack("{s:s,s:s,s:b}", "path",
				      wps_chain_path(c, i), "uuid", u,
				      "incremental", i > 0));
	}
	wps_chain_close(c);
	return a;
}

static int inspect_json(struct wps_ctx *ctx, struct wps_image *img,
			const char *path)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	json_t *o = json_object(), *regs = json_array(), *blobs = json_array();
	char uuid[37], parent[37];
	unsigned int i;
	char *s;

	wps_uuid_str(in->uuid, uuid);
	wps_uuid_str(in->parent_uuid, parent);
	for (i = 0; i < in->nr_regions; i++) {
		const struct wps_image_region *r = wps_image_get_region(img, i);

		json_array_append_new(regs, json_pack(
			"{s:I, s:I, s:I, s:s, s:s, s:I, s:I}",
			"host_addr", (json_int_t)r->host_addr,
			"size", (json_int_t)r->size,
			"page_size", (json_int_t)r->page_size,
			"backing", backing_name(r->backing),
			"name", r->name,
			"populated_pages", (json_int_t)r->present_blocks,
			"absent_pages",
			(json_int_t)(r->nr_blocks - r->present_blocks)));
	}
	for (i = 0; i < in->nr_blobs; i++) {
		const char *name;
		const void *data;
		size_t len;

		if (!wps_image_get_blob(img, i, &name, &data, &len))
			json_array_append_new(blobs, json_pack(
				"{s:s, s:I}", "name", name, "size",
				(json_int_t)len));
	}
	json_object_set_new(o, "version", json_integer(in->version));
	json_object_set_new(o, "uuid", json_string(uuid));
	json_object_set_new(o, "parent_uuid", json_string(parent));
	json_object_set_new(o, "page_size", json_integer(in->block_size));
	json_object_set_new(o, "group_blocks", json_integer(in->group_blocks));
	json_object_set_new(o, "freeze_realtime_ns",
			    json_integer(in->freeze_realtime_ns));
	json_object_set_new(o, "regions", regs);
	json_object_set_new(o, "blobs", blobs);
	json_object_set_new(o, "image_bytes", json_integer(in->data_bytes));
	json_object_set_new(o, "file_size", json_integer(in->file_size));
	json_object_set_new(o, "populated_pages",
			    json_integer(in->present_blocks));
	json_object_set_new(o, "complete", json_boolean(in->complete));
	json_object_set_new(o, "remote", json_boolean(in->remote));
	json_object_set_new(o, "incremental", json_boolean(has_parent(in)));
	if (has_parent(in)) {
		json_t *chain = chain_json(ctx, path);

		json_object_set_new(o, "chain", chain ? chain : json_null());
	}
	s = json_dumps(o, JSON_INDENT(2));
	json_decref(o);
	if (!s)
		return -ENOMEM;
	printf("%s\n", s);
	free(s);
	return 0;
}

/*
 * Names come from the image, which may come from anywhere: printed as
 * they are, they could move the cursor, recolour or retitle the terminal,
 * or forge lines of this output. Printable ASCII passes; every other byte
 * (and the backslash, so that the output stays unambiguous) is \xNN.
 * Returns out, which holds at most 4 * strlen(in) + 1 bytes.
 */
static const char *escape_name(const char *in, char *out, size_t len)
{
	size_t o = 0;

	if (!in)
		in = "";
	for (; *in && o + 5 <= len; in++) {
		unsigned char c = (unsigned char)*in;

		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}

/* Room for an escaped name: 4 bytes per byte of a blob or region name, or
 * of a path (a chain's parent names come from blobs too). */
#define ESC_LEN (4 * PATH_MAX + 1)

static void inspect_text(struct wps_ctx *ctx, struct wps_image *img,
			 const char *path)
{
	char esc[ESC_LEN];
	const struct wps_image_info *in = wps_image_get_info(img);
	char uuid[37], when[64];
	time_t t = in->freeze_realtime_ns / 1000000000;
	struct tm tm;
	unsigned int i;

	wps_uuid_str(in->uuid, uuid);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
	printf("format     v%u, %s\n", in->version,
	       in->complete ? "complete" : "INCOMPLETE");
	printf("uuid       %s\n", uuid);
	if (has_parent(in)) {
		json_t *chain = chain_json(ctx, path), *e;
		char parent[37];
		size_t k;

		wps_uuid_str(in->parent_uuid, parent);
		printf("parent     %s: an incremental image (pages written since "
		       "its parent)\n", parent);
		if (!chain)
			printf("chain      NOT WHOLE (see above): cannot be restored\n");
		json_array_foreach(chain, k, e)
			printf("chain %-4zu %-11s %s %s\n", k,
			       k ? "incremental" : "full",
			       json_string_value(json_object_get(e, "uuid")),
			       escape_name(json_string_value(json_object_get(e, "path")),
					   esc, sizeof(esc)));
		json_decref(chain);
	}
	if (in->remote)
		printf("source     NBD export, %u connection%s\n",
		       in->connections, in->connections == 1 ? "" : "s");
	printf("frozen at  %s\n", when);
	printf("block size %u (checksum per %u blocks)\n", in->block_size,
	       in->group_blocks);
	printf("data       %.1f MiB in %" PRIu64 " pages; file %.1f MiB\n",
	       in->data_bytes / MiB, in->present_blocks, in->file_size / MiB);
	for (i = 0; i < in->nr_regions; i++) {
		const struct wps_image_region *r = wps_image_get_region(img, i);

		printf("region %u   0x%" PRIx64 " +%.1f MiB %s page %u%s%s: "
		       "%" PRIu64 " populated, %" PRIu64 " absent/zero pages\n",
		       i, r->host_addr, r->size / MiB, backing_name(r->backing),
		       r->page_size, r->name[0] ? " " : "",
		       escape_name(r->name, esc, sizeof(esc)),
		       r->present_blocks, r->nr_blocks - r->present_blocks);
	}
	for (i = 0; i < in->nr_blobs; i++) {
		const char *name;
		const void *data;
		size_t len;

		if (!wps_image_get_blob(img, i, &name, &data, &len))
			printf("blob       %s (%zu bytes)\n",
			       escape_name(name, esc, sizeof(esc)), len);
	}
}

static int cmd_inspect(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct wps_image *img;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'h':
			printf("Usage: wpsnap inspect IMAGE [--json]\n"
			       "Show header, regions (populated/absent pages), "
			       "blobs and completeness.\nIMAGE is a file or an "
			       "NBD URI (nbd://HOST[:PORT]/EXPORT).\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "%s inspect: expected one IMAGE\n", prog);
		return 2;
	}
	if (open_image(ctx, argv[optind], WPS_IMG_OPEN_NO_VERIFY_DATA, &img))
		return 1;
	ret = 0;
	if (json)
		ret = inspect_json(ctx, img, argv[optind]);
	else
		inspect_text(ctx, img, argv[optind]);
	wps_image_close(img);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* export                                                              */
/* ------------------------------------------------------------------ */

/* wpsnap export IMAGE --blob NAME -o FILE: one blob's bytes. */
static int export_blob(struct wps_image *img, const char *name, const char *out)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	const char *bn;
	const void *data;
	unsigned int i;
	size_t len;
	FILE *f;

	for (i = 0; i < in->nr_blobs; i++) {
		if (wps_image_get_blob(img, i, &bn, &data, &len) || strcmp(bn, name))
			continue;
		f = fopen(out, "we");
		if (!f || fwrite(data, 1, len, f) != len || fclose(f)) {
			fprintf(stderr, "%s export: writing %s: %s\n", prog, out,
				strerror(errno));
			return 1;
		}
		return 0;
	}
	fprintf(stderr, "%s export: the image has no blob named '%s'\n", prog, name);
	return 1;
}

static int cmd_export(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "region", required_argument, NULL, 'r' },
		{ "output", required_argument, NULL, 'o' },
		{ "blob", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const struct wps_image_region *r;
	const char *out = NULL, *blob = NULL;
	struct wps_image *img = NULL;
	unsigned int region = 0;
	uint64_t b = 0, start, count;
	size_t cap = 4u << 20;
	void *buf = NULL;
	int c, fd = -1, ret = 1;

	while ((c = getopt_long(argc, argv, "r:o:B:h", opts, NULL)) != -1) {
		switch (c) {
		case 'r': region = strtoul(optarg, NULL, 0); break;
		case 'o': out = optarg; break;
		case 'B': blob = optarg; break;
		case 'h':
			printf("Usage: wpsnap export IMAGE [--region N | --blob NAME] "
			       "-o FILE\n"
			       "Write the raw bytes of region N (default 0); "
			       "absent pages read as zeros\n(left as holes in "
			       "FILE). --blob: the bytes of a blob instead (such as\n"
			       "the VMM's device-state).\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1 || !out) {
		fprintf(stderr, "%s export: expected IMAGE and -o FILE\n", prog);
		return 2;
	}
	if (open_image(ctx, argv[optind], 0, &img))
		return 1;
	if (blob) {
		ret = export_blob(img, blob, out);
		wps_image_close(img);
		return ret;
	}
	r = wps_image_get_region(img, region);
	if (!r) {
		fprintf(stderr, "%s export: %s has no region %u (it has %u)\n",
			prog, argv[optind], region,
			wps_image_get_info(img)->nr_regions);
		goto out;
	}
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "%s export: %s: %s\n", prog, out, strerror(errno));
		goto out;
	}
	buf = malloc(cap);
	if (!buf)
		goto out;
	while (!wps_image_next_extent(img, region, b, &start, &count)) {
		while (count) {
			size_t n = count * WPS_IMG_BLOCK_SIZE > cap ?
				   cap : count * WPS_IMG_BLOCK_SIZE;

			ret = wps_image_read(img, region,
					     start * WPS_IMG_BLOCK_SIZE, buf, n);
			if (ret) {
				fprintf(stderr, "%s export: reading %s: %s\n",
					prog, argv[optind], strerror(-ret));
				ret = 1;
				goto out;
			}
			if (pwrite(fd, buf, n, start * WPS_IMG_BLOCK_SIZE) !=
			    (ssize_t)n) {
				fprintf(stderr, "%s export: writing %s: %s\n",
					prog, out, strerror(errno));
				ret = 1;
				goto out;
			}
			start += n / WPS_IMG_BLOCK_SIZE;
			count -= n / WPS_IMG_BLOCK_SIZE;
		}
		b = start;
	}
	if (ftruncate(fd, r->size) || fsync(fd)) {
		fprintf(stderr, "%s export: %s: %s\n", prog, out, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	free(buf);
	if (fd >= 0 && close(fd) && !ret) {
		fprintf(stderr, "%s export: %s: %s\n", prog, out, strerror(errno));
		ret = 1;
	}
	if (ret && fd >= 0)
		unlink(out);
	wps_image_close(img);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* verify                                                              */
/* ------------------------------------------------------------------ */

static int cmd_verify(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ledger", required_argument, NULL, 'l' },
		{ "region", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *ledger_path = NULL;
	struct rguest_ledger *ledger = NULL;
	struct wps_image *img;
	unsigned int region = 0;
	uint64_t bad = 0;
	char why[256];
	int c, ret;

	while ((c = getopt_long(argc, argv, "l:r:h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': ledger_path = optarg; break;
		case 'r': region = strtoul(optarg, NULL, 0); break;
		case 'h':
			printf("Usage: wpsnap verify IMAGE [--ledger FILE] "
			       "[--region N]\n"
			       "Check every checksum; with a reference guest "
			       "ledger, also check that region N\n(default 0) "
			       "holds exactly the memory of the freeze instant. "
			       "Exit 0 if intact.\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "%s verify: expected one IMAGE\n", prog);
		return 2;
	}
	if (open_image(ctx, argv[optind], 0, &img))
		return 1;
	ret = wps_image_verify(img, &bad);
	if (ret) {
		fprintf(stderr, "%s verify: %s: %s at file offset %" PRIu64 "\n",
			prog, argv[optind], strerror(-ret), bad);
		goto out;
	}
	if (ledger_path && has_parent(wps_image_get_info(img))) {
		fprintf(stderr, "%s verify: %s is incremental (pages written since "
			"its parent): check it through its chain with 'wpsnap chain "
			"%s --ledger %s'\n", prog, argv[optind], argv[optind],
			ledger_path);
		ret = -EINVAL;
		goto out;
	}
	if (ledger_path) {
		ret = rguest_ledger_read(ledger_path, &ledger);
		if (ret) {
			fprintf(stderr, "%s verify: ledger %s: %s\n", prog,
				ledger_path, strerror(-ret));
			goto out;
		}
		ret = rguest_ledger_verify_image(ledger, img, region, &bad, why,
					      sizeof(why));
		if (ret == -EBADMSG) {
			fprintf(stderr, "%s verify: %s: region %u differs from "
				"the ledger at offset %" PRIu64 ": %s\n", prog,
				argv[optind], region, bad * RGUEST_BLOCK, why);
			goto out;
		} else if (ret) {
			fprintf(stderr, "%s verify: %s against %s: %s\n", prog,
				argv[optind], ledger_path, strerror(-ret));
			goto out;
		}
	}
	printf("%s: intact%s\n", argv[optind],
	       ledger ? ", identical to the ledger" : "");
out:
	rguest_ledger_free(ledger);
	wps_image_close(img);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* restore                                                             */
/* ------------------------------------------------------------------ */

static int cmd_restore(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ledger", required_argument, NULL, 'l' },
		{ "region", required_argument, NULL, 'r' },
		{ "reserve-hugepages", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct rguest_opts go = { .threads = 1, .pattern = RGUEST_IDLE };
	const struct wps_image_info *info;
	const struct wps_image_region *reg;
	struct wps_image_load_stats ls;
	struct rguest_hugepool hp = { 0 };
	struct rguest_ledger *ledger = NULL;
	struct wps_chain *chain = NULL;
	struct wps_image *img = NULL;
	struct rguest *g = NULL;
	const char *ledger_path = NULL;
	unsigned int region = 0;
	bool reserve = false;
	uint64_t bad;
	char why[256], how[64];
	int c, ret, status = 1;

	if (restore_lazy_requested(argc, argv))
		return cmd_restore_lazy(ctx, argc, argv);
	while ((c = getopt_long(argc, argv, "l:r:Hh", opts, NULL)) != -1) {
		switch (c) {
		case 'l': ledger_path = optarg; break;
		case 'r': region = strtoul(optarg, NULL, 0); break;
		case 'H': reserve = true; break;
		case 'h':
			printf("Usage: wpsnap restore IMAGE [--region N] "
			       "[--ledger FILE] [--reserve-hugepages]\n"
			       "       wpsnap restore IMAGE --lazy [...] (see "
			       "'wpsnap restore --lazy --help')\n"
			       "Eager restore: load region N (default 0) into "
			       "fresh memory of the reference\nguest with the "
			       "region's backing, at disk speed (libaio "
			       "O_DIRECT, holes\nskipped, every checksum "
			       "checked), and with a ledger verify the result\n"
			       "block for block. IMAGE is a file or an NBD URI "
			       "(nbd://HOST[:PORT]/EXPORT,\n"
			       "nbd+unix:///EXPORT?socket=PATH): a remote image "
			       "is read over several NBD\nconnections in "
			       "parallel. --reserve-hugepages grows the huge page "
			       "pool for a\nhugetlb region (undone at exit).\n");
			return 0;
		default: return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "%s restore: expected one IMAGE\n", prog);
		return 2;
	}
	/* An incremental image restores through its chain (a full image is
	 * a chain of one): the full image, then every increment over it. */
	ret = wps_chain_open(ctx, argv[optind], 0, &chain);
	if (ret) {
		fprintf(stderr, "%s restore: cannot open %s%s: %s\n", prog,
			argv[optind], ret == -ENOENT || ret == -EBADMSG ?
			" and its chain" : "", strerror(-ret));
		return 1;
	}
	img = wps_chain_image(chain, wps_chain_length(chain) - 1);
	reg = wps_image_get_region(img, region);
	if (!reg) {
		fprintf(stderr, "%s restore: %s has no region %u\n", prog,
			argv[optind], region);
		goto out;
	}
	if (!rguest_backing_of(reg->backing, reg->page_size, &go.backing)) {
		fprintf(stderr, "%s restore: region %u has a backing the "
			"reference guest cannot map\n", prog, region);
		goto out;
	}
	if (reserve && go.backing == RGUEST_HUGETLB &&
	    rguest_hugepool_reserve(&hp, reg->size)) {
		fprintf(stderr, "%s restore: %s\n", prog, hp.why);
		goto out;
	}
	go.size = reg->size;
	ret = rguest_new(&go, &g);
	if (ret) {
		fprintf(stderr, "%s restore: cannot map %.0f MiB of %s memory: "
			"%s\n", prog, reg->size / MiB,
			rguest_backing_name(go.backing), strerror(-ret));
		goto out;
	}
	/* Eager: the guest does not run before every checksum passed. */
	ret = wps_chain_load(chain, region, rguest_mem(g), &ls);
	if (ret) {
		fprintf(stderr, "%s restore: loading %s: %s; nothing restored\n",
			prog, argv[optind], strerror(-ret));
		goto out;
	}
	info = wps_image_get_info(img);
	if (info->remote)
		snprintf(how, sizeof(how), "NBD, %u connections",
			 info->connections);
	else
		snprintf(how, sizeof(how), "%s",
			 ls.direct ? "O_DIRECT" : "buffered");
	printf("restored %.1f MiB of %.1f MiB in %.1f ms: %.0f MiB/s (%s)",
	       ls.bytes / MiB, reg->size / MiB, ls.ns / 1e6,
	       ls.ns ? ls.bytes / MiB / (ls.ns / 1e9) : 0.0, how);
	if (wps_chain_length(chain) > 1)
		printf(", through a chain of %u images", wps_chain_length(chain));
	printf("\n");
	if (ledger_path) {
		ret = rguest_ledger_read(ledger_path, &ledger);
		if (ret) {
			fprintf(stderr, "%s restore: ledger %s: %s\n", prog,
				ledger_path, strerror(-ret));
			goto out;
		}
		ret = rguest_ledger_verify_mem(ledger, rguest_mem(g), &bad, why,
					    sizeof(why));
		if (ret) {
			fprintf(stderr, "%s restore: restored memory differs "
				"from the ledger: %s\n", prog,
				ret == -EBADMSG ? why : strerror(-ret));
			goto out;
		}
		printf("verified against %s: every block as at the freeze\n",
		       ledger_path);
	}
	status = 0;
out:
	rguest_ledger_free(ledger);
	rguest_free(g);
	rguest_hugepool_release(&hp);
	wps_chain_close(chain);
	return status;
}

/* ------------------------------------------------------------------ */
/* demo                                                                */
/* ------------------------------------------------------------------ */

struct progress_bar {
	struct wps_snapshot *snap;
	bool done;              /* atomic */
	bool tty;
};

static void *progress_main(void *arg)
{
	struct progress_bar *pb = arg;
	struct wps_progress p;

	while (!__atomic_load_n(&pb->done, __ATOMIC_ACQUIRE)) {
		double frac;
		int i, filled;

		wps_snapshot_progress(pb->snap, &p);
		frac = p.bytes_total ? (double)p.bytes_done / p.bytes_total : 0;
		filled = (int)(frac * 40);
		fprintf(stderr, "\r  %-10s [", wps_phase_name(p.phase));
		for (i = 0; i < 40; i++)
			fputc(i < filled ? '#' : '.', stderr);
		fprintf(stderr, "] %5.1f%% %7.1f/%.1f MiB, %" PRIu64 " faults ",
			frac * 100, p.bytes_done / MiB, p.bytes_total / MiB,
			p.faults);
		usleep(50000);
	}
	fprintf(stderr, "\r%*s\r", 100, "");
	return NULL;
}

/* How much of the guest is still backed by transparent huge pages: a
 * snapshot should not leave them split. */
static void print_thp(struct rguest *g)
{
	uint64_t start = (uintptr_t)rguest_mem(g);
	uint64_t end = start + rguest_size(g), lo, hi, kb = 0, v;
	char line[256];
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%" SCNx64 "-%" SCNx64, &lo, &hi) == 2)
			in = lo < end && hi > start;
		else if (in && sscanf(line, "AnonHugePages: %" SCNu64, &v) == 1)
			kb += v;
	}
	fclose(f);
	if (kb)
		printf("  huge pages     %.0f MiB of guest RAM still in THPs\n",
		       kb / 1024.0);
}

static int cmd_demo(struct wps_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "keep", required_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 's' },
		{ "backing", required_argument, NULL, 'b' },
		{ "threads", required_argument, NULL, 't' },
		{ "pattern", required_argument, NULL, 'p' },
		{ "fault-window", required_argument, NULL, 'w' },
		{ "freeze", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	unsigned int fault_window = 0, snap_flags = 0;
	struct rguest_opts go = {
		.size = 384ull << 20, .backing = RGUEST_ANON, .threads = 2,
		.pattern = RGUEST_RANDOM, .populate_pct = 90, .seed = 1,
	};
	struct wps_snapshot_opts so = WPS_SNAPSHOT_OPTS_INIT;
	struct progress_bar pb = { 0 };
	struct wps_snapshot_stats st;
	struct rguest_latency lat;
	struct rguest_ledger *ledger = NULL;
	struct wps_snapshot *snap = NULL;
	struct rguest *g = NULL;
	struct wps_image *img = NULL;
	struct wps_region reg;
	char dir[256], path[300], lpath[300], why[256];
	const char *keep = NULL;
	pthread_t pthr;
	uint64_t bad, w0, w1;
	double before_rate, during_s;
	int c, ret, status = 1;
	bool tmp = false;

	while ((c = getopt_long(argc, argv, "k:s:b:t:p:w:f:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': keep = optarg; break;
		case 'w': fault_window = strtoul(optarg, NULL, 0); break;
		case 'f':
			if (!strcmp(optarg, "simple"))
				snap_flags |= WPS_SNAP_FREEZE_SIMPLE;
			else if (strcmp(optarg, "rounds")) {
				fprintf(stderr, "%s demo: --freeze takes rounds "
					"or simple\n", prog);
				return 2;
			}
			break;
		case 's':
			if (rguest_parse_size(optarg, &go.size)) {
				fprintf(stderr, "%s demo: bad size '%s'\n",
					prog, optarg);
				return 2;
			}
			break;
		case 'b':
			if (rguest_backing_parse(optarg, &go.backing)) {
				fprintf(stderr, "%s demo: unknown backing '%s' "
					"(anon, thp, memfd, hugetlb)\n", prog,
					optarg);
				return 2;
			}
			break;
		case 't': go.threads = strtoul(optarg, NULL, 0); break;
		case 'p':
			if (rguest_pattern_parse(optarg, &go.pattern)) {
				fprintf(stderr, "%s demo: unknown pattern '%s' "
					"(idle, seq, random, hot)\n", prog,
					optarg);
				return 2;
			}
			break;
		case 'h':
			printf("Usage: wpsnap demo [--keep DIR] [--size SIZE] "
			       "[--backing anon|thp|memfd|hugetlb]\n"
			       "                   [--threads N] [--pattern "
			       "idle|seq|random|hot]\n"
			       "                   [--fault-window UNITS] "
			       "[--freeze rounds|simple]\n"
			       "Start the reference guest (default 384 MiB, 2 "
			       "writer threads, random writes),\ntake a live "
			       "snapshot while it writes, verify the image "
			       "byte-for-byte against\nthe guest's memory at "
			       "the freeze instant and print a summary. With "
			       "--keep,\nthe image and ledger stay in DIR.\n");
			return 0;
		default: return 2;
		}
	}
	if (keep) {
		if (mkdir(keep, 0755) && errno != EEXIST) {
			fprintf(stderr, "%s demo: %s: %s\n", prog, keep,
				strerror(errno));
			return 1;
		}
		snprintf(dir, sizeof(dir), "%s", keep);
	} else {
		snprintf(dir, sizeof(dir), "/var/tmp/wpsnap-demo.XXXXXX");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "%s demo: cannot create a directory in "
				"/var/tmp: %s\n", prog, strerror(errno));
			return 1;
		}
		tmp = true;
	}
	snprintf(path, sizeof(path), "%s/demo.wpsnap", dir);
	snprintf(lpath, sizeof(lpath), "%s/demo.ledger", dir);

	ret = rguest_new(&go, &g);
	if (ret) {
		fprintf(stderr, "%s demo: cannot start the reference guest "
			"(%s, %.0f MiB): %s\n", prog,
			rguest_backing_name(go.backing), go.size / MiB,
			strerror(-ret));
		goto out;
	}
	printf("guest: %.0f MiB %s, %u writer threads (%s), %u%% populated\n",
	       go.size / MiB, rguest_backing_name(go.backing), go.threads,
	       rguest_pattern_name(go.pattern), go.populate_pct);
	ret = rguest_start(g);
	if (ret) {
		fprintf(stderr, "%s demo: starting writers: %s\n", prog,
			strerror(-ret));
		goto out;
	}
	/* Undisturbed write rate, for comparison with the rate during. */
	w0 = rguest_writes(g);
	usleep(300000);
	before_rate = (rguest_writes(g) - w0) / 0.3;

	print_thp(g);
	rguest_region(g, &reg);
	so.path = path;
	so.flags = WPS_SNAP_OVERWRITE | snap_flags;
	so.fault_window = fault_window;
	so.pause = rguest_freeze_pause;
	so.resume = rguest_resume;
	so.pause_arg = g;
	ret = wps_snapshot_new(ctx, &reg, 1, &so, &snap);
	if (ret) {
		fprintf(stderr, "%s demo: preparing the snapshot: %s\n", prog,
			strerror(-ret));
		goto out;
	}
	rguest_latency_reset(g);
	w0 = rguest_writes(g);
	ret = wps_snapshot_freeze(snap);
	if (ret) {
		fprintf(stderr, "%s demo: freeze failed: %s\n", prog,
			strerror(-ret));
		goto out;
	}
	pb.snap = snap;
	pb.tty = isatty(STDERR_FILENO);
	if (pb.tty && pthread_create(&pthr, NULL, progress_main, &pb))
		pb.tty = false;
	ret = wps_snapshot_wait(snap);
	w1 = rguest_writes(g);
	if (pb.tty) {
		__atomic_store_n(&pb.done, true, __ATOMIC_RELEASE);
		pthread_join(pthr, NULL);
	}
	if (ret) {
		fprintf(stderr, "%s demo: snapshot failed: %s\n", prog,
			strerror(-ret));
		goto out;
	}
	wps_snapshot_stats(snap, &st);
	rguest_latency_get(g, &lat);

	/* The ledger is read with the writers parked. */
	rguest_pause(g);
	ret = rguest_ledger(g, &ledger);
	rguest_resume(g);
	rguest_stop(g);
	if (ret) {
		fprintf(stderr, "%s demo: reading the ledger: %s\n", prog,
			strerror(-ret));
		goto out;
	}
	if (keep && (ret = rguest_ledger_write(ledger, lpath))) {
		fprintf(stderr, "%s demo: %s: %s\n", prog, lpath, strerror(-ret));
		goto out;
	}
	ret = wps_image_open(ctx, path, 0, &img);
	if (!ret)
		ret = rguest_ledger_verify_image(ledger, img, 0, &bad, why,
					      sizeof(why));
	if (ret) {
		fprintf(stderr, "%s demo: VERIFY FAILED for %s: %s%s%s\n", prog,
			path, strerror(-ret), ret == -EBADMSG ? ": " : "",
			ret == -EBADMSG ? why : "");
		goto out;
	}
	during_s = st.total_ns / 1e9;
	printf("snapshot: verified byte-for-byte against the freeze instant\n");
	printf("  guest paused   %.3f ms (write-protect %.3f ms)\n",
	       st.pause_ns / 1e6, st.protect_ns / 1e6);
	printf("  total          %.1f ms, %.0f MiB/s (%s I/O)\n",
	       st.total_ns / 1e6,
	       st.total_ns ? st.saved_bytes / MiB / during_s : 0.0,
	       st.direct_io ? "O_DIRECT" : "buffered");
	printf("  write faults   %" PRIu64 " serviced in %.1f/%.1f/%.1f us "
	       "(p50/p99/max, handler)", st.faults, st.fault_p50_ns / 1e3,
	       st.fault_p99_ns / 1e3, st.fault_max_ns / 1e3);
	if (st.faults_huge)
		printf(", %" PRIu64 " saved a whole huge page", st.faults_huge);
	printf("\n");
	print_thp(g);
	printf("  guest writes   %.0f/s during vs %.0f/s before (%.2fx); "
	       "faulted writes p50 %.1f us p99 %.1f us\n",
	       during_s > 0 ? (w1 - w0) / during_s : 0.0, before_rate,
	       before_rate > 0 && during_s > 0 ?
	       (w1 - w0) / during_s / before_rate : 0.0,
	       lat.slow_p50_ns / 1e3, lat.slow_p99_ns / 1e3);
	printf("  image          %.1f MiB data for %.1f MiB populated "
	       "(%.3fx), file %.1f MiB\n",
	       st.image_data_bytes / MiB, st.populated_bytes / MiB,
	       st.populated_bytes ?
	       (double)st.image_data_bytes / st.populated_bytes : 0.0,
	       st.image_file_bytes / MiB);
	if (keep)
		printf("kept: %s and %s\n", path, lpath);
	status = 0;
out:
	wps_image_close(img);
	rguest_ledger_free(ledger);
	wps_snapshot_free(snap);
	rguest_free(g);
	if (tmp) {
		unlink(path);
		unlink(lpath);
		rmdir(dir);
	}
	return status;
}

int main(int argc, char **argv)
{
	struct wps_ctx *ctx;
	const char *cmd;
	int ret;

	if (argc < 2) {
		usage_main(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage_main(stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("wpsnap %s\n", WPSNAP_VERSION_STRING);
		return 0;
	}
	if (wps_ctx_new(&ctx)) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	argc--;
	argv++;
	if (!strcmp(cmd, "demo"))
		ret = cmd_demo(ctx, argc, argv);
	else if (!strcmp(cmd, "inspect"))
		ret = cmd_inspect(ctx, argc, argv);
	else if (!strcmp(cmd, "export"))
		ret = cmd_export(ctx, argc, argv);
	else if (!strcmp(cmd, "verify"))
		ret = cmd_verify(ctx, argc, argv);
	else if (!strcmp(cmd, "restore"))
		ret = cmd_restore(ctx, argc, argv);
	else if (!strcmp(cmd, "snapshot"))
		ret = cmd_snapshot(ctx, argc, argv);
	else if (!strcmp(cmd, "checkpoint"))
		ret = checkpoint_cmd_main(ctx, argc, argv);
	else if (!strcmp(cmd, "chain"))
		ret = chain_cmd_main(ctx, argc, argv);
	else if (!strcmp(cmd, "merge"))
		ret = merge_cmd_main(ctx, argc, argv);
	else if (!strcmp(cmd, "netbuf"))
		ret = netbuf_cmd_main(ctx, argc, argv);
	else if (!strcmp(cmd, "bench"))
		ret = bench_main(ctx, argc, argv);
	else if (!strcmp(cmd, "vm"))
		ret = vm_cmd_main(ctx, argc, argv);
	else {
		fprintf(stderr, "%s: unknown command '%s'\n\n", prog, cmd);
		usage_main(stderr);
		ret = 2;
	}
	wps_ctx_free(ctx);
	return ret;
}
