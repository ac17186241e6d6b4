/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * An image source on a Network Block Device export (stream/nbd_source.c):
 * the random-access image served by a standard NBD server (nbdkit,
 * qemu-nbd) on another host, read with libnbd.
 */
#ifndef WPS_NBD_SOURCE_H
#define WPS_NBD_SOURCE_H

#include "stream/img_reader_int.h"

/* Bulk connections opened besides the fault connection (NBD multi-conn). */
#define WPS_NBD_BULK_CONNS 4u

/*
 * Connect to the export named by uri (libnbd URI syntax: nbd://HOST[:PORT]
 * /EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://...). One connection is
 * reserved for the FAULT lane; up to WPS_NBD_BULK_CONNS more serve the
 * BULK lane. A server that accepts fewer connections is used with what it
 * accepts (logged). -errno with a logged reason (unreachable server,
 * refused export, ...).
 */
int wps_nbd_src_open(struct wps_ctx *ctx, const char *uri,
		     struct wps_img_src **out);

/*
 * A checkpoint chain on one export (stream/nbd_chain.h): uri may name a
 * member ("URI#N"; plain "URI" is the last one). Opening name as the
 * member of the export sibling reads (an NBD source) shares sibling's
 * connections, so that a chain of N images costs the connections of
 * one; on another export (or when sibling is not an NBD source) it
 * connects anew, as wps_nbd_src_open.
 */
int wps_nbd_src_member(struct wps_img_src *sibling, const char *name,
		       struct wps_img_src **out);

#endif /* WPS_NBD_SOURCE_H */
