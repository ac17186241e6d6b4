/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The domain XML of a VM snapshot: which disks it has, and the XML a
 * restored domain starts from.
 *
 * libxml2 (libvirt's own XML library, so already in every process that
 * links libvirt) rather than string surgery: domain XML has attributes
 * in either quote style, namespaces and escapes, and a restore that
 * mis-edits a disk source would run a guest on the wrong disk.
 *
 * Invariants: nothing here touches the world; a document we cannot
 * parse, or a disk we cannot describe, is -EINVAL with the reason.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "base/log.h"
#include "src/vm_int.h"

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"

static bool is(const xmlNode *n, const char *name)
{
	return n->type == XML_ELEMENT_NODE &&
	       !strcmp((const char *)n->name, name);
}

static xmlNode *child(xmlNode *n, const char *name)
{
	xmlNode *c;

	for (c = n ? n->children : NULL; c; c = c->next)
		if (is(c, name) && !c->ns)
			return c;
	return NULL;
}

/* attribute into buf; false when absent or too long */
static bool attr(xmlNode *n, const char *name, char *buf, size_t size)
{
	xmlChar *v = n ? xmlGetProp(n, (const xmlChar *)name) : NULL;
	bool ok = v && strlen((const char *)v) < size;

	if (ok)
		strcpy(buf, (const char *)v);
	xmlFree(v);
	return ok;
}

static xmlDoc *parse(struct wps_ctx *ctx, const char *xml)
{
	xmlDoc *doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
				    XML_PARSE_NONET | XML_PARSE_NOERROR |
				    XML_PARSE_NOWARNING);
	xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;

	if (!root || !is(root, "domain")) {
		const xmlError *e = xmlGetLastError();

		wps_err(ctx, "domain XML: %s", !doc && e && e->message ?
			e->message : "no <domain> element");
		xmlFreeDoc(doc);
		return NULL;
	}
	return doc;
}

static int one_disk(struct wps_ctx *ctx, xmlNode *n, struct vm_disk *d)
{
	char device[16] = "disk", type[16] = "";
	xmlNode *src = child(n, "source");

	memset(d, 0, sizeof(*d));
	attr(n, "device", device, sizeof(device));
	attr(n, "type", type, sizeof(type));
	if (!attr(child(n, "target"), "dev", d->target, sizeof(d->target))) {
		wps_err(ctx, "domain XML: a <disk> without <target dev>");
		return -EINVAL;
	}
	if (!attr(child(n, "driver"), "type", d->format, sizeof(d->format)))
		strcpy(d->format, "raw");
	if (!strcmp(type, "file"))
		attr(src, "file", d->source, sizeof(d->source));
	else if (!strcmp(type, "block"))
		attr(src, "dev", d->source, sizeof(d->source));
	/* What a disk-only snapshot can freeze: a writable disk on a file
	 * or device. A CD-ROM, a read-only or a shared disk is left as it
	 * is (snapshot='no'), and so is one on the network. */
	d->snap = !strcmp(device, "disk") && d->source[0] &&
		  !child(n, "readonly") && !child(n, "shareable");
	return 0;
}

int vm_xml_disks(struct wps_ctx *ctx, const char *xml, struct vm_disk *d,
		 unsigned int *nr)
{
	xmlDoc *doc = parse(ctx, xml);
	xmlNode *dev, *n;
	int err = 0;

	if (!doc)
		return -EINVAL;
	*nr = 0;
	dev = child(xmlDocGetRootElement(doc), "devices");
	for (n = dev ? dev->children : NULL; n && !err; n = n->next) {
		if (!is(n, "disk"))
			continue;
		if (*nr == VM_MAX_DISKS) {
			wps_err(ctx, "domain XML: more than %d disks",
				VM_MAX_DISKS);
			err = -E2BIG;
			break;
		}
		err = one_disk(ctx, n, &d[*nr]);
		if (!err)
			(*nr)++;
	}
	xmlFreeDoc(doc);
	return err;
}

static const struct vm_disk *meta_disk(const struct vm_meta *m,
				       const char *target)
{
	unsigned int i;

	for (i = 0; i < m->nr_disks; i++)
		if (!strcmp(m->disks[i].target, target))
			return &m->disks[i];
	return NULL;
}

/* Point a snapshotted disk at its new overlay: source, qcow2, and no
 * <backingStore> (libvirt reads the chain from the image itself). */
static int retarget(struct wps_ctx *ctx, xmlNode *n, const struct vm_meta *m)
{
	char target[32] = "";
	const struct vm_disk *d;
	xmlNode *src, *drv, *c, *next;

	if (!attr(child(n, "target"), "dev", target, sizeof(target)))
		return 0;
	d = meta_disk(m, target);
	if (!d || !d->snap)
		return 0;
	src = child(n, "source");
	drv = child(n, "driver");
	if (!src || !d->overlay[0]) {
		wps_err(ctx, "domain XML: disk %s has no source to replace",
			target);
		return -EINVAL;
	}
	for (c = n->children; c; c = next) {
		next = c->next;
		if (is(c, "backingStore")) {
			xmlUnlinkNode(c);
			xmlFreeNode(c);
		}
	}
	xmlSetProp(n, (const xmlChar *)"type", (const xmlChar *)"file");
	xmlUnsetProp(src, (const xmlChar *)"dev");
	xmlSetProp(src, (const xmlChar *)"file",
		   (const xmlChar *)d->overlay);
	if (!drv) {
		drv = xmlNewChild(n, NULL, (const xmlChar *)"driver", NULL);
		xmlSetProp(drv, (const xmlChar *)"name",
			   (const xmlChar *)"qemu");
	}
	xmlSetProp(drv, (const xmlChar *)"type", (const xmlChar *)"qcow2");
	return 0;
}

/*
 * QEMU waits for its state instead of booting: -incoming defer (the
 * stream comes later over an fd, `migrate-incoming`), and the stream is
 * the device-only one of xen-save-devices-state, which has no
 * configuration section, so QEMU must not expect one.
 */
static int add_incoming(xmlNode *root)
{
	static const char *const args[] = {
		"-incoming", "defer",
		"-global", "migration.send-configuration=off",
	};
	xmlNs *ns = xmlSearchNsByHref(root->doc, root,
				      (const xmlChar *)QEMU_NS);
	xmlNode *cl = NULL, *c;
	unsigned int i;

	if (!ns)
		ns = xmlNewNs(root, (const xmlChar *)QEMU_NS,
			      (const xmlChar *)"qemu");
	if (!ns)
		return -ENOMEM;
	for (c = root->children; c && !cl; c = c->next)
		if (c->type == XML_ELEMENT_NODE && c->ns == ns &&
		    !strcmp((const char *)c->name, "commandline"))
			cl = c;
	if (!cl)
		cl = xmlNewChild(root, ns, (const xmlChar *)"commandline",
				 NULL);
	if (!cl)
		return -ENOMEM;
	for (i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		xmlNode *a = xmlNewChild(cl, ns, (const xmlChar *)"arg", NULL);

		if (!a)
			return -ENOMEM;
		xmlSetProp(a, (const xmlChar *)"value",
			   (const xmlChar *)args[i]);
	}
	return 0;
}

int vm_xml_restore(struct wps_ctx *ctx, const char *xml, const char *name,
		   const struct vm_meta *m, char **out)
{
	xmlDoc *doc = parse(ctx, xml);
	xmlNode *root, *n, *dev;
	xmlChar *buf = NULL;
	int len = 0, err = 0;

	if (!doc)
		return -EINVAL;
	root = xmlDocGetRootElement(doc);
	if (name) {
		n = child(root, "name");
		if (!n) {
			wps_err(ctx, "domain XML: no <name>");
			err = -EINVAL;
			goto out;
		}
		xmlNodeSetContent(n, NULL);
		xmlNodeAddContent(n, (const xmlChar *)name);
		n = child(root, "uuid");     /* libvirt makes a new one */
		if (n) {
			xmlUnlinkNode(n);
			xmlFreeNode(n);
		}
	}
	dev = child(root, "devices");
	for (n = dev ? dev->children : NULL; n && !err; n = n->next)
		if (is(n, "disk"))
			err = retarget(ctx, n, m);
	if (!err)
		err = add_incoming(root);
	if (err)
		goto out;
	xmlDocDumpMemory(doc, &buf, &len);
	*out = buf ? strndup((const char *)buf, (size_t)len) : NULL;
	if (!*out)
		err = -ENOMEM;
	xmlFree(buf);
out:
	xmlFreeDoc(doc);
	return err;
}

int vm_xml_disk_snapshot(struct wps_ctx *ctx, const struct vm_meta *m,
			 char **out)
{
	xmlDoc *doc = xmlNewDoc((const xmlChar *)"1.0");
	xmlNode *root, *disks;
	xmlChar *buf = NULL;
	unsigned int i;
	int len = 0;
	char name[96];

	if (!doc)
		return -ENOMEM;
	root = xmlNewNode(NULL, (const xmlChar *)"domainsnapshot");
	xmlDocSetRootElement(doc, root);
	snprintf(name, sizeof(name), "wpsnap-%s", m->id);
	xmlNewTextChild(root, NULL, (const xmlChar *)"name",
			(const xmlChar *)name);
	xmlNewTextChild(root, NULL, (const xmlChar *)"description",
			(const xmlChar *)"wpsnap vm snapshot: the disks of "
			"the memory snapshot's instant");
	disks = xmlNewChild(root, NULL, (const xmlChar *)"disks", NULL);
	for (i = 0; disks && i < m->nr_disks; i++) {
		const struct vm_disk *d = &m->disks[i];
		xmlNode *n = xmlNewChild(disks, NULL, (const xmlChar *)"disk",
					 NULL);

		if (!n)
			break;
		xmlSetProp(n, (const xmlChar *)"name",
			   (const xmlChar *)d->target);
		xmlSetProp(n, (const xmlChar *)"snapshot", (const xmlChar *)
			   (d->snap ? "external" : "no"));
		if (d->snap) {
			xmlSetProp(xmlNewChild(n, NULL, (const xmlChar *)
					       "driver", NULL),
				   (const xmlChar *)"type",
				   (const xmlChar *)"qcow2");
			xmlSetProp(xmlNewChild(n, NULL, (const xmlChar *)
					       "source", NULL),
				   (const xmlChar *)"file",
				   (const xmlChar *)d->overlay);
		}
	}
	xmlDocDumpMemory(doc, &buf, &len);
	xmlFreeDoc(doc);
	*out = buf ? strndup((const char *)buf, (size_t)len) : NULL;
	xmlFree(buf);
	if (!*out) {
		wps_err(ctx, "building the disk snapshot XML: out of memory");
		return -ENOMEM;
	}
	return 0;
}
