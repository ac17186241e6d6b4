/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where QEMU keeps the guest RAM, and the blob that records it.
 *
 * Discovery: QEMU's version and machine type (QMP query-version, qom-get
 * /machine type), its RAM blocks (`info ramblock`), the guest-physical
 * map (`info mtree -f`, the flat view of address space "memory"), and
 * each saved block's mapping in /proc/PID/smaps (base/procmaps.h):
 * QEMU 7.2 does not report host addresses, so a block is found by its
 * name when its memfd carries it, otherwise by its exact size among the
 * mappings QEMU made MADV_DONTFORK (it does so for every RAM block, each
 * mapped alone between guard pages). Two candidates are refused rather
 * than guessed.
 *
 * The blob (docs/QEMU.md): written from a discovered layout, and parsed
 * back from an image by a reader that trusts nothing in it: every field
 * is checked for type and range, every name must refer to a block, and
 * a malformed blob is -EINVAL with the field named, never a crash.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/procmaps.h"
#include "base/log.h"
#include "src/qemu_int.h"

/* ------------------------------------------------------------------ */
/* Discovery                                                           */
/* ------------------------------------------------------------------ */

static struct wps_qemu_layout *layout_new(void)
{
	struct wps_qemu_layout *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->blocks = calloc(WPS_QEMU_MAX_BLOCKS, sizeof(*l->blocks));
	l->phys = calloc(WPS_QEMU_MAX_PHYS, sizeof(*l->phys));
	if (!l->blocks || !l->phys) {
		wps_qemu_layout_free(l);
		return NULL;
	}
	return l;
}

void wps_qemu_layout_free(struct wps_qemu_layout *l)
{
	if (!l)
		return;
	free(l->blocks);
	free(l->phys);
	free(l);
}

/* Copy the line at *text into buf (NUL-terminated, without its \r\n) and
 * advance *text past it; false at the end. */
static bool next_line(const char **text, char *buf, size_t size)
{
	const char *s = *text, *nl;
	size_t len;

	if (!s || !*s)
		return false;
	nl = strchr(s, '\n');
	len = nl ? (size_t)(nl - s) : strlen(s);
	*text = nl ? nl + 1 : s + len;
	if (len && s[len - 1] == '\r')
		len--;
	if (len >= size)
		len = size - 1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return true;
}

static uint64_t psize_bytes(unsigned int n, const char *unit)
{
	if (!strcmp(unit, "KiB"))
		return (uint64_t)n << 10;
	if (!strcmp(unit, "MiB"))
		return (uint64_t)n << 20;
	if (!strcmp(unit, "GiB"))
		return (uint64_t)n << 30;
	return 0;
}

/* `info ramblock`: "NAME PSIZE UNIT 0xOFFSET 0xUSED 0xTOTAL" per block. */
static int parse_ramblocks(struct wps_ctx *ctx, struct wps_qemu_layout *l,
			   const char *text)
{
	char line[512];

	while (next_line(&text, line, sizeof(line))) {
		char name[128], unit[8];
		uint64_t off, used, max;
		unsigned int n;
		struct wps_qemu_block *b;

		if (sscanf(line, "%127s %u %7s 0x%" SCNx64 " 0x%" SCNx64
			   " 0x%" SCNx64, name, &n, unit, &off, &used,
			   &max) != 6)
			continue;
		if (l->nr_blocks == WPS_QEMU_MAX_BLOCKS) {
			wps_err(ctx, "QEMU has more than %d RAM blocks",
				WPS_QEMU_MAX_BLOCKS);
			return -E2BIG;
		}
		b = &l->blocks[l->nr_blocks++];
		memset(b, 0, sizeof(*b));
		snprintf(b->name, sizeof(b->name), "%s", name);
		b->ram_addr = off;
		b->used = used;
		b->max = max;
		b->page_size = (uint32_t)psize_bytes(n, unit);
		b->region = -1;
	}
	if (!l->nr_blocks) {
		wps_err(ctx, "QEMU reported no RAM blocks (info ramblock)");
		return -ENOENT;
	}
	return 0;
}

/* A RAM block's idstr is the region's name, or "DEVICE-PATH/name". */
static int block_of_mr(const struct wps_qemu_layout *l, const char *mr)
{
	size_t ml = strlen(mr);
	unsigned int i;

	for (i = 0; i < l->nr_blocks; i++) {
		const char *n = l->blocks[i].name;
		size_t nl = strlen(n);

		if (!strcmp(n, mr) || (nl > ml + 1 && n[nl - ml - 1] == '/' &&
				       !strcmp(n + nl - ml, mr)))
			return (int)i;
	}
	return -1;
}

/*
 * `info mtree -f`, the flat view of address space "memory": lines
 * "START-END (prio P, TYPE): NAME [@OFFSET] ..." where TYPE ram or rom
 * is guest RAM (rom: mapped read-only, e.g. the BIOS shadow). A block
 * seen as ram there is what the guest writes: those are snapshotted.
 */
static int parse_mtree(struct wps_ctx *ctx, struct wps_qemu_layout *l,
		       const char *text)
{
	bool in_memory = false, in_list = false;
	char line[512];

	while (next_line(&text, line, sizeof(line))) {
		uint64_t start, end, off = 0;
		char type[16], mr[128];
		struct wps_qemu_phys *p;
		const char *at;
		int prio, pos = 0, b;

		if (!strncmp(line, "FlatView #", 10)) {
			in_memory = in_list = false;
			continue;
		}
		if (!in_list && !strncmp(line, " AS \"memory\"", 12)) {
			in_memory = true;
			continue;
		}
		if (strstr(line, "Root memory region:")) {
			in_list = true;
			continue;
		}
		if (!in_memory || !in_list ||
		    sscanf(line, " %" SCNx64 "-%" SCNx64 " (prio %d, "
			   "%15[^)]): %127s%n", &start, &end, &prio, type, mr,
			   &pos) != 5)
			continue;
		if (strcmp(type, "ram") && strcmp(type, "rom"))
			continue;
		b = block_of_mr(l, mr);
		if (b < 0)
			continue;       /* e.g. a ram device */
		at = strstr(line + pos, " @");
		if (at)
			sscanf(at + 2, "%" SCNx64, &off);
		if (l->nr_phys == WPS_QEMU_MAX_PHYS) {
			wps_err(ctx, "more than %d guest-physical RAM ranges",
				WPS_QEMU_MAX_PHYS);
			return -E2BIG;
		}
		p = &l->phys[l->nr_phys++];
		p->gpa = start;
		p->size = end - start + 1;
		p->offset = off;
		p->block = (unsigned int)b;
		p->readonly = !strcmp(type, "rom");
		if (!p->readonly)
			l->blocks[b].snap = true;
	}
	if (!l->nr_phys) {
		wps_err(ctx, "no guest RAM in QEMU's address space \"memory\" "
			"(info mtree -f)");
		return -ENOENT;
	}
	return 0;
}

/* Could v hold a RAM block: writable, not executable, and private
 * anonymous or shared (memfd, tmpfs or hugetlbfs file). */
static bool ram_like(const struct wps_maps_vma *v)
{
	if (v->perms[0] != 'r' || v->perms[1] != 'w' || v->perms[2] == 'x')
		return false;
	if (v->perms[3] == 's')
		return true;
	return !v->inode && !v->path[0];
}

/* Is v the memfd QEMU named after the block ("/memfd:NAME (deleted)")? */
static bool memfd_of(const struct wps_maps_vma *v, const char *name)
{
	size_t l = strlen(name);

	return !strncmp(v->path, "/memfd:", 7) &&
	       !strncmp(v->path + 7, name, l) &&
	       (!v->path[7 + l] || v->path[7 + l] == ' ');
}

/*
 * Where QEMU itself says block b is: HMP `gpa2hva` of the first
 * guest-physical range it backs ("Host virtual address for 0xGPA (NAME)
 * is 0xHVA"), less that range's offset into the block. 0 when QEMU
 * cannot say (the block is not mapped for the guest, no such command).
 */
static uint64_t block_hva(struct wps_qemu *q, const struct wps_qemu_layout *l,
			  unsigned int b)
{
	unsigned int i;

	for (i = 0; i < l->nr_phys; i++) {
		const struct wps_qemu_phys *p = &l->phys[i];
		char cmd[48], *out = NULL, *at;
		uint64_t hva = 0;

		if (p->block != b)
			continue;
		snprintf(cmd, sizeof(cmd), "gpa2hva 0x%" PRIx64, p->gpa);
		if (q->ops->hmp(q, cmd, &out))
			return 0;
		at = out ? strstr(out, " is 0x") : NULL;
		if (at)
			hva = strtoull(at + 4, NULL, 16);
		free(out);
		return hva > p->offset ? hva - p->offset : 0;
	}
	return 0;
}

/*
 * The mapping of each chosen block: where QEMU says it is (gpa2hva, for a
 * block the guest sees: exact, whatever other blocks look like; first
 * pass); else a memfd named after it if QEMU named it so (second pass);
 * else the only unused MADV_DONTFORK mapping of exactly its size (third
 * pass). Without the first, two private blocks of one size (the RAM of
 * two NUMA nodes) could not be told apart.
 */
static int find_mappings(struct wps_qemu *q, struct wps_qemu_layout *l)
{
	struct wps_ctx *ctx = q->ctx;
	pid_t pid = q->ops->pid(q);
	struct wps_maps_vma *v = NULL;
	unsigned int nv = 0, i, j, pass;
	bool *used;
	char path[64];
	int err;

	err = wps_maps_read(pid, WPS_MAPS_SMAPS, &v, &nv);
	if (err) {
		wps_err(ctx, "cannot read %s: %s",
			wps_maps_file(pid, WPS_MAPS_SMAPS, path, sizeof(path)),
			strerror(-err));
		return err;
	}
	used = calloc(nv ? nv : 1, sizeof(*used));
	if (!used) {
		free(v);
		return -ENOMEM;
	}
	for (pass = 0; pass < 3 && !err; pass++) {
		for (i = 0; i < l->nr_blocks; i++) {
			struct wps_qemu_block *b = &l->blocks[i];
			uint64_t size = qemu_block_span(b, b->max);
			uint64_t hva = pass ? 0 : block_hva(q, l, i);
			int found = -1, count = 0;

			if (!b->snap || b->host_addr || (!pass && !hva))
				continue;
			for (j = 0; j < nv; j++) {
				if (used[j] || !ram_like(&v[j]) ||
				    v[j].end - v[j].start != size)
					continue;
				if ((!pass && v[j].start == hva) ||
				    (pass == 1 && memfd_of(&v[j], b->name))) {
					found = (int)j;
					count = 1;
					break;
				}
				if (pass == 2 && v[j].dontfork) {
					found = (int)j;
					count++;
				}
			}
			if (pass < 2 && count != 1)
				continue;
			if (count > 1) {
				wps_err(ctx, "%d mappings of QEMU (pid %d) could "
					"hold RAM block %s (%" PRIu64 " bytes): "
					"cannot tell which", count, (int)pid,
					b->name, size);
				err = -ENOTUNIQ;
				break;
			}
			if (!count) {
				wps_err(ctx, "no mapping of QEMU (pid %d) holds "
					"RAM block %s (%" PRIu64 " bytes, private "
					"anonymous or shared memory)", (int)pid,
					b->name, size);
				err = -ENOENT;
				break;
			}
			used[found] = true;
			b->host_addr = v[found].start;
			b->memfd = !strncmp(v[found].path, "/memfd:", 7);
		}
	}
	free(used);
	free(v);
	return err;
}

/* QEMU's version and machine type: a restored device state is tied to
 * both. Neither is needed for a RAM image, so a QEMU that will not say
 * leaves them empty (with a warning) instead of failing the snapshot. */
static void identify(struct wps_qemu *q, struct wps_qemu_layout *l)
{
	json_t *r = NULL;
	const char *t;
	size_t tl;

	if (!qemu_execute(q, "query-version", NULL, &r)) {
		json_t *qv = json_object_get(r, "qemu");

		snprintf(l->version, sizeof(l->version), "%d.%d.%d",
			 (int)json_integer_value(json_object_get(qv, "major")),
			 (int)json_integer_value(json_object_get(qv, "minor")),
			 (int)json_integer_value(json_object_get(qv, "micro")));
		json_decref(r);
		r = NULL;
	}
	/* QEMU 7.2 names the current machine nowhere else: query-machines
	 * lists what it could run, query-current-machine has no name. The
	 * object /machine is of type "<machine>-machine". */
	if (qemu_execute(q, "qom-get", json_pack("{s:s, s:s}", "path",
			    "/machine", "property", "type"), &r))
		return;
	t = json_string_value(r);
	tl = t ? strlen(t) : 0;
	if (tl > 8 && !strcmp(t + tl - 8, "-machine"))
		tl -= 8;
	if (t && tl < sizeof(l->machine))
		snprintf(l->machine, sizeof(l->machine), "%.*s", (int)tl, t);
	else
		wps_warn(q->ctx, "QEMU's machine type is not a name: %s",
			 t ? t : "(not a string)");
	json_decref(r);
}

int wps_qemu_discover(struct wps_qemu *q, struct wps_qemu_layout **out)
{
	struct wps_qemu_layout *l = layout_new();
	char *text = NULL;
	int err;

	if (!l)
		return -ENOMEM;
	identify(q, l);
	err = q->ops->hmp(q, "info ramblock", &text);
	if (!err)
		err = parse_ramblocks(q->ctx, l, text);
	free(text);
	text = NULL;
	if (!err)
		err = q->ops->hmp(q, "info mtree -f", &text);
	if (!err)
		err = parse_mtree(q->ctx, l, text);
	free(text);
	if (!err)
		err = find_mappings(q, l);
	if (err) {
		wps_qemu_layout_free(l);
		return err;
	}
	*out = l;
	return 0;
}

/* ------------------------------------------------------------------ */
/* The blob                                                            */
/* ------------------------------------------------------------------ */

int wps_qemu_layout_format(struct wps_ctx *ctx,
			   const struct wps_qemu_layout *l, char **json)
{
	json_t *o = json_object(), *blocks = json_array(),
	       *phys = json_array();
	unsigned int i, r = 0;
	int err = 0;

	if (!o || !blocks || !phys)
		err = -ENOMEM;
	for (i = 0; !err && i < l->nr_blocks; i++) {
		const struct wps_qemu_block *b = &l->blocks[i];

		/* The region is the block's rank among the saved ones: the
		 * attach takes the ranges in this order. */
		if (json_array_append_new(blocks, json_pack(
			"{s:s, s:I, s:I, s:I, s:I, s:I, s:o}",
			"name", b->name,
			"ram_addr", (json_int_t)b->ram_addr,
			"used", (json_int_t)b->used,
			"max", (json_int_t)b->max,
			"page_size", (json_int_t)b->page_size,
			"host_addr", (json_int_t)b->host_addr,
			"region", b->snap ? json_integer(r) : json_null())))
			err = -ENOMEM;
		r += b->snap;
	}
	for (i = 0; !err && i < l->nr_phys; i++) {
		const struct wps_qemu_phys *p = &l->phys[i];

		if (json_array_append_new(phys, json_pack(
			"{s:I, s:I, s:s, s:I, s:b}",
			"gpa", (json_int_t)p->gpa,
			"size", (json_int_t)p->size,
			"block", l->blocks[p->block].name,
			"offset", (json_int_t)p->offset,
			"readonly", p->readonly)))
			err = -ENOMEM;
	}
	if (!err &&
	    (json_object_set_new(o, "format",
				 json_string(WPS_QEMU_LAYOUT_FORMAT)) ||
	     json_object_set_new(o, "qemu", json_string(l->version)) ||
	     json_object_set_new(o, "machine", json_string(l->machine)) ||
	     json_object_set(o, "blocks", blocks) ||
	     json_object_set(o, "physmap", phys)))
		err = -ENOMEM;
	*json = err ? NULL : json_dumps(o, JSON_INDENT(1));
	if (!err && !*json)
		err = -ENOMEM;
	json_decref(blocks);
	json_decref(phys);
	json_decref(o);
	if (err)
		wps_err(ctx, "cannot format the QEMU layout: %s",
			strerror(-err));
	return err;
}

/* An unsigned integer member of o, checked. */
static int get_u64(struct wps_ctx *ctx, json_t *o, const char *what,
		   size_t idx, const char *key, uint64_t *v)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j) || json_integer_value(j) < 0) {
		wps_err(ctx, "QEMU layout: %s[%zu].%s: %s", what, idx, key,
			j ? "not an unsigned integer" : "missing");
		return -EINVAL;
	}
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

/* A string member into buf: present, not empty, fits. */
static int get_str(struct wps_ctx *ctx, json_t *o, const char *what,
		   const char *key, char *buf, size_t size, bool optional)
{
	json_t *j = json_object_get(o, key);
	const char *s = json_string_value(j);

	if (!j && optional) {
		buf[0] = '\0';
		return 0;
	}
	if (!s || strlen(s) >= size || strlen(s) != json_string_length(j)) {
		wps_err(ctx, "QEMU layout: %s%s: %s", what, key, !j ? "missing" :
			!s ? "not a string" : strlen(s) >= size ?
			"too long" : "contains a NUL");
		return -EINVAL;
	}
	memcpy(buf, s, strlen(s) + 1);
	return 0;
}

static int parse_block(struct wps_ctx *ctx, json_t *o, size_t i,
		       struct wps_qemu_layout *l)
{
	struct wps_qemu_block *b = &l->blocks[i];
	char what[32];
	uint64_t ps;
	unsigned int k;
	json_t *reg;

	if (!json_is_object(o)) {
		wps_err(ctx, "QEMU layout: blocks[%zu]: not an object", i);
		return -EINVAL;
	}
	snprintf(what, sizeof(what), "blocks[%zu].", i);
	if (get_str(ctx, o, what, "name", b->name, sizeof(b->name), false) ||
	    get_u64(ctx, o, "blocks", i, "ram_addr", &b->ram_addr) ||
	    get_u64(ctx, o, "blocks", i, "used", &b->used) ||
	    get_u64(ctx, o, "blocks", i, "max", &b->max) ||
	    get_u64(ctx, o, "blocks", i, "page_size", &ps) ||
	    get_u64(ctx, o, "blocks", i, "host_addr", &b->host_addr))
		return -EINVAL;
	if (!b->name[0]) {
		wps_err(ctx, "QEMU layout: blocks[%zu].name is empty", i);
		return -EINVAL;
	}
	for (k = 0; k < i; k++)
		if (!strcmp(l->blocks[k].name, b->name)) {
			wps_err(ctx, "QEMU layout: blocks[%zu]: block %s "
				"listed twice", i, b->name);
			return -EINVAL;
		}
	/* page_size 0: QEMU printed a unit the writer did not know */
	if (ps > (1ull << 30) || (ps && (ps < QEMU_PAGE || (ps & (ps - 1))))) {
		wps_err(ctx, "QEMU layout: blocks[%zu].page_size %" PRIu64
			" is not a power of two from 4 KiB to 1 GiB", i, ps);
		return -EINVAL;
	}
	b->page_size = (uint32_t)ps;
	/* 2^56: far beyond any guest, and no sum below can overflow */
	if (b->used > b->max || b->max > (1ull << 56) ||
	    b->ram_addr > (1ull << 56)) {
		wps_err(ctx, "QEMU layout: blocks[%zu] (%s): used %" PRIu64
			", max %" PRIu64 ", ram_addr %" PRIu64 " out of range",
			i, b->name, b->used, b->max, b->ram_addr);
		return -EINVAL;
	}
	reg = json_object_get(o, "region");
	b->region = -1;
	if (json_is_integer(reg) && json_integer_value(reg) >= 0 &&
	    json_integer_value(reg) < WPS_QEMU_MAX_BLOCKS)
		b->region = (int)json_integer_value(reg);
	else if (!json_is_null(reg)) {
		wps_err(ctx, "QEMU layout: blocks[%zu].region: %s", i,
			reg ? "neither null nor a region number" : "missing");
		return -EINVAL;
	}
	for (k = 0; k < i && b->region >= 0; k++)
		if (l->blocks[k].region == b->region) {
			wps_err(ctx, "QEMU layout: blocks[%zu].region %d is "
				"also block %s's", i, b->region,
				l->blocks[k].name);
			return -EINVAL;
		}
	b->snap = b->region >= 0;
	if (b->snap && (!b->host_addr || b->host_addr % QEMU_PAGE)) {
		wps_err(ctx, "QEMU layout: blocks[%zu].host_addr %#" PRIx64
			" is not a page address", i, b->host_addr);
		return -EINVAL;
	}
	return 0;
}

static int parse_phys(struct wps_ctx *ctx, json_t *o, size_t i,
		      struct wps_qemu_layout *l)
{
	struct wps_qemu_phys *p = &l->phys[i];
	const struct wps_qemu_block *b;
	char what[32], name[128];
	json_t *ro;
	unsigned int k;

	if (!json_is_object(o)) {
		wps_err(ctx, "QEMU layout: physmap[%zu]: not an object", i);
		return -EINVAL;
	}
	snprintf(what, sizeof(what), "physmap[%zu].", i);
	if (get_u64(ctx, o, "physmap", i, "gpa", &p->gpa) ||
	    get_u64(ctx, o, "physmap", i, "size", &p->size) ||
	    get_u64(ctx, o, "physmap", i, "offset", &p->offset) ||
	    get_str(ctx, o, what, "block", name, sizeof(name), false))
		return -EINVAL;
	for (k = 0; k < l->nr_blocks; k++)
		if (!strcmp(l->blocks[k].name, name))
			break;
	if (k == l->nr_blocks) {
		wps_err(ctx, "QEMU layout: physmap[%zu].block %s is not in "
			"blocks", i, name);
		return -EINVAL;
	}
	p->block = k;
	b = &l->blocks[k];
	if (!p->size || p->gpa > (1ull << 56) || p->size > (1ull << 56) ||
	    p->offset > b->max || p->size > qemu_block_span(b, b->max) -
					      p->offset) {
		wps_err(ctx, "QEMU layout: physmap[%zu]: %#" PRIx64 "+%#" PRIx64
			" at offset %#" PRIx64 " does not fit block %s (%" PRIu64
			" bytes)", i, p->gpa, p->size, p->offset, name, b->max);
		return -EINVAL;
	}
	ro = json_object_get(o, "readonly");
	if (!json_is_boolean(ro)) {
		wps_err(ctx, "QEMU layout: physmap[%zu].readonly: %s", i,
			ro ? "not a boolean" : "missing");
		return -EINVAL;
	}
	p->readonly = json_is_true(ro);
	return 0;
}

/* o[key]: an array of min..max elements, each parsed by fn into l
 * (*count grows as they pass, so a failure frees what was read). */
static int parse_array(struct wps_ctx *ctx, json_t *o, const char *key,
		       size_t min, size_t max,
		       int (*fn)(struct wps_ctx *, json_t *, size_t,
				 struct wps_qemu_layout *),
		       struct wps_qemu_layout *l, unsigned int *count)
{
	json_t *a = json_object_get(o, key), *e;
	size_t i;

	if (!json_is_array(a) || json_array_size(a) < min ||
	    json_array_size(a) > max) {
		wps_err(ctx, "QEMU layout: %s: not an array of %zu to %zu "
			"elements", key, min, max);
		return -EINVAL;
	}
	json_array_foreach(a, i, e) {
		if (fn(ctx, e, i, l))
			return -EINVAL;
		(*count)++;
	}
	return 0;
}

int wps_qemu_layout_parse(struct wps_ctx *ctx, const void *data, size_t len,
			  struct wps_qemu_layout **out)
{
	struct wps_qemu_layout *l;
	char format[64];
	json_error_t je;
	json_t *o;
	int err = -EINVAL;

	o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(o)) {
		wps_err(ctx, "QEMU layout: not a JSON object: %s",
			o ? "another type" : je.text);
		json_decref(o);
		return -EINVAL;
	}
	l = layout_new();
	if (!l) {
		json_decref(o);
		return -ENOMEM;
	}
	if (get_str(ctx, o, "", "format", format, sizeof(format), false) ||
	    get_str(ctx, o, "", "qemu", l->version, sizeof(l->version),
		    false) ||
	    get_str(ctx, o, "", "machine", l->machine, sizeof(l->machine),
		    true))
		goto out;
	if (strcmp(format, WPS_QEMU_LAYOUT_FORMAT)) {
		wps_err(ctx, "QEMU layout: format %s, not %s", format,
			WPS_QEMU_LAYOUT_FORMAT);
		goto out;
	}
	if (parse_array(ctx, o, "blocks", 1, WPS_QEMU_MAX_BLOCKS, parse_block,
			l, &l->nr_blocks) ||
	    parse_array(ctx, o, "physmap", 0, WPS_QEMU_MAX_PHYS, parse_phys,
			l, &l->nr_phys))
		goto out;
	err = 0;
out:
	json_decref(o);
	if (err) {
		wps_qemu_layout_free(l);
		return err;
	}
	*out = l;
	return 0;
}

int wps_qemu_layout_load(struct wps_ctx *ctx, const struct wps_image *img,
			 struct wps_qemu_layout **out)
{
	const struct wps_image_info *in = wps_image_get_info(img);
	unsigned int i;

	for (i = 0; i < in->nr_blobs; i++) {
		const char *name;
		const void *data;
		size_t len;

		if (wps_image_get_blob(img, i, &name, &data, &len) ||
		    strcmp(name, WPS_QEMU_LAYOUT_BLOB))
			continue;
		return wps_qemu_layout_parse(ctx, data, len, out);
	}
	wps_err(ctx, "the image has no %s blob (not a snapshot of QEMU)",
		WPS_QEMU_LAYOUT_BLOB);
	return -ENOENT;
}
