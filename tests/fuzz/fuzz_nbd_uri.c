/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: image names that may be NBD URIs. The reader decides with
 * wps_img_name_is_nbd (stream/img_reader.c) whether a name is a file or
 * an export, and stream/nbd_source.c hands a URI to libnbd's parser
 * (nbd_aio_connect_uri). Here the same URI goes to libnbd with every
 * transport, TLS and local-file access forbidden, so it is parsed and
 * refused without any connection or file access.
 */
#include "config.h"

#include <libnbd.h>
#include <stdlib.h>
#include <string.h>

#include "stream/img_reader_int.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct nbd_handle *h;
	char *uri;

	fz_begin();
	uri = malloc(size + 1);
	if (!uri)
		abort();
	memcpy(uri, data, size);
	uri[size] = '\0';
	if (wps_img_name_is_nbd(uri)) {
		if (strncmp(uri, "nbd", 3))
			abort();    /* only libnbd's schemes are URIs */
		h = nbd_create();
		if (!h)
			abort();
		if (nbd_set_uri_allow_transports(h, 0) ||
		    nbd_set_uri_allow_tls(h, LIBNBD_TLS_DISABLE) ||
		    nbd_set_uri_allow_local_file(h, false))
			abort();
		if (nbd_aio_connect_uri(h, uri) == 0)
			abort();    /* no transport is allowed */
		nbd_close(h);
	}
	free(uri);
	fz_end();
	return 0;
}
