/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the VM snapshot and restore share: the snapshot directory's
 * vm.json (docs/VM.md, "The snapshot directory"), reaching a domain
 * through libvirt, and reading a small file whole.
 *
 * vm.json is read like an image: nothing in it is trusted; every field
 * is checked for type and length, and a bad one is -EINVAL naming it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <libvirt/virterror.h>

#include "base/log.h"
#include "src/qemu_libvirt.h"
#include "src/vm_int.h"

static void quiet(void *arg, virErrorPtr e)
{
	(void)arg;
	(void)e;        /* reported by whoever called, through our log */
}

int vm_connect(struct wps_ctx *ctx, const char *uri, virConnectPtr *out)
{
	virConnectPtr c = virConnectOpen(uri);

	if (!c) {
		wps_err(ctx, "cannot connect to libvirt%s%s: %s",
			uri ? " at " : "", uri ? uri : "",
			qemu_libvirt_error());
		return -ECONNREFUSED;
	}
	virConnSetErrorFunc(c, NULL, quiet);
	*out = c;
	return 0;
}

int vm_lookup(struct wps_ctx *ctx, virConnectPtr c, const char *name,
	      virDomainPtr *out)
{
	virDomainPtr d = virDomainLookupByName(c, name);

	if (!d)
		d = virDomainLookupByUUIDString(c, name);
	if (!d) {
		wps_err(ctx, "domain %s not found", name);
		return -ENOENT;
	}
	*out = d;
	return 0;
}

int vm_read_file(struct wps_ctx *ctx, const char *path, size_t max,
		 char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	char *buf;
	size_t done = 0;
	int err;

	if (fd < 0) {
		err = -errno;
		wps_err(ctx, "cannot open %s: %s", path, strerror(-err));
		return err;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > max) {
		wps_err(ctx, "%s: not a regular file of at most %zu bytes",
			path, max);
		close(fd);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);

		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			wps_err(ctx, "reading %s: %s", path, strerror(-err));
			free(buf);
			close(fd);
			return err;
		}
		done += (size_t)n;
	}
	close(fd);
	buf[done] = '\0';
	*out = buf;
	if (len)
		*len = done;
	return 0;
}

/* ------------------------------------------------------------------ */
/* vm.json                                                             */
/* ------------------------------------------------------------------ */

int vm_meta_write(struct wps_ctx *ctx, const struct vm_meta *m, int fd)
{
	json_t *o, *disks = json_array();
	unsigned int i;
	int err = 0;

	for (i = 0; disks && i < m->nr_disks; i++) {
		const struct vm_disk *d = &m->disks[i];

		if (json_array_append_new(disks, json_pack(
			"{s:s, s:s, s:s, s:s, s:b}", "target", d->target,
			"frozen", d->source, "format", d->format,
			"overlay", d->overlay, "snapshot", d->snap)))
			err = -ENOMEM;
	}
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:o}",
		      "format", WPS_VM_META_FORMAT, "domain", m->domain,
		      "uuid", m->uuid, "qemu-version", m->qemu_version,
		      "machine", m->machine, "id", m->id,
		      "was-running", m->was_running, "disks", disks);
	if (!o || err) {
		json_decref(o);
		return -ENOMEM;
	}
	if (json_dumpfd(o, fd, JSON_INDENT(2)) || write(fd, "\n", 1) != 1) {
		err = errno ? -errno : -EIO;
		wps_err(ctx, "writing %s: %s", WPS_VM_META, strerror(-err));
	}
	json_decref(o);
	return err;
}

static int get_str(struct wps_ctx *ctx, const char *path, json_t *o,
		   const char *key, char *buf, size_t size)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_string(v) || json_string_length(v) >= size ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		wps_err(ctx, "%s: \"%s\" is not a string of at most %zu bytes",
			path, key, size - 1);
		return -EINVAL;
	}
	strcpy(buf, json_string_value(v));
	return 0;
}

int vm_meta_read(struct wps_ctx *ctx, const char *path, struct vm_meta *m)
{
	char *text = NULL, fmt[32];
	json_error_t je;
	json_t *o, *disks;
	size_t i;
	int err;

	memset(m, 0, sizeof(*m));
	err = vm_read_file(ctx, path, 1u << 20, &text, NULL);
	if (err)
		return err;
	o = json_loads(text, 0, &je);
	free(text);
	if (!json_is_object(o)) {
		wps_err(ctx, "%s: not a JSON object (line %d: %s)", path,
			je.line, je.text);
		json_decref(o);
		return -EINVAL;
	}
	err = get_str(ctx, path, o, "format", fmt, sizeof(fmt));
	if (!err && strcmp(fmt, WPS_VM_META_FORMAT)) {
		wps_err(ctx, "%s: format \"%s\", not %s", path, fmt,
			WPS_VM_META_FORMAT);
		err = -EINVAL;
	}
	if (!err)
		err = get_str(ctx, path, o, "domain", m->domain,
			      sizeof(m->domain)) ?:
		      get_str(ctx, path, o, "uuid", m->uuid, sizeof(m->uuid)) ?:
		      get_str(ctx, path, o, "qemu-version", m->qemu_version,
			      sizeof(m->qemu_version)) ?:
		      get_str(ctx, path, o, "machine", m->machine,
			      sizeof(m->machine)) ?:
		      get_str(ctx, path, o, "id", m->id, sizeof(m->id));
	m->was_running = json_is_true(json_object_get(o, "was-running"));
	disks = json_object_get(o, "disks");
	if (!err && (!json_is_array(disks) ||
		     json_array_size(disks) > VM_MAX_DISKS)) {
		wps_err(ctx, "%s: \"disks\" is not an array of at most %d",
			path, VM_MAX_DISKS);
		err = -EINVAL;
	}
	for (i = 0; !err && i < json_array_size(disks); i++) {
		json_t *d = json_array_get(disks, i);
		struct vm_disk *v = &m->disks[i];

		err = get_str(ctx, path, d, "target", v->target,
			      sizeof(v->target)) ?:
		      get_str(ctx, path, d, "frozen", v->source,
			      sizeof(v->source)) ?:
		      get_str(ctx, path, d, "format", v->format,
			      sizeof(v->format)) ?:
		      get_str(ctx, path, d, "overlay", v->overlay,
			      sizeof(v->overlay));
		v->snap = json_is_true(json_object_get(d, "snapshot"));
		if (!err && v->snap && v->source[0] != '/') {
			wps_err(ctx, "%s: disks[%zu].frozen is not an absolute "
				"path", path, i);
			err = -EINVAL;
		}
		m->nr_disks++;
	}
	json_decref(o);
	return err;
}
