/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Connecting to an NBD export (stream/nbd_conn.h). Owns nothing beyond
 * the handle it returns; shared by the NBD reader and the NBD writer so
 * that both bound the handshake the same way.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>

#include "base/clock.h"
#include "base/log.h"
#include "stream/nbd_conn.h"

const char *wps_nbd_why(void)
{
	const char *e = nbd_get_error();

	return e && *e ? e : "unknown libnbd error";
}

int wps_nbd_errno_or(int fallback)
{
	int e = nbd_get_errno();

	return e > 0 ? -e : fallback;
}

const char *wps_nbd_lost(void)
{
	switch (nbd_get_errno()) {
	case ENOTCONN: case ECONNRESET: case EPIPE: case ESHUTDOWN:
	case ECONNABORTED:
		return "the connection to the NBD server is lost: ";
	default:
		return "";
	}
}

/*
 * Asynchronous connect plus a bounded poll: a host that drops our
 * packets, or a server that accepts the TCP connection but never speaks
 * (qemu-nbd past its --shared limit), fails here instead of hanging.
 */
int wps_nbd_connect(struct wps_ctx *ctx, const char *uri, int timeout_ms,
		    bool quiet, struct nbd_handle **out)
{
	uint64_t deadline = wps_now_ns() / 1000000u + (uint64_t)timeout_ms;
	struct nbd_handle *h;
	int err;

	*out = NULL;
	h = nbd_create();
	if (!h) {
		wps_err(ctx, "image %s: cannot create an NBD handle: %s", uri,
			wps_nbd_why());
		return wps_nbd_errno_or(-ENOMEM);
	}
	/* Parses the URI and starts connecting (a refused TCP connection
	 * may already fail here). */
	if (nbd_aio_connect_uri(h, uri) < 0) {
		err = wps_nbd_errno_or(-EINVAL);
		if (!quiet)
			wps_err(ctx, "image %s: cannot connect to the NBD "
				"server: %s", uri, wps_nbd_why());
		goto fail;
	}
	while (nbd_aio_is_connecting(h)) {
		uint64_t now = wps_now_ns() / 1000000u;

		if (now >= deadline) {
			err = -ETIMEDOUT;
			if (!quiet)
				wps_err(ctx, "image %s: the NBD server did not "
					"complete the handshake within %d s "
					"(unreachable host, or a server that "
					"accepts no more clients)", uri,
					timeout_ms / 1000);
			goto fail;
		}
		if (nbd_poll(h, (int)(deadline - now)) < 0) {
			err = wps_nbd_errno_or(-ECONNREFUSED);
			if (!quiet)
				wps_err(ctx, "image %s: cannot connect to the "
					"NBD server: %s", uri, wps_nbd_why());
			goto fail;
		}
	}
	if (!nbd_aio_is_ready(h)) {
		err = wps_nbd_errno_or(-ECONNREFUSED);
		if (!quiet)
			wps_err(ctx, "image %s: the NBD server refused the "
				"connection or the export: %s", uri,
				wps_nbd_why());
		goto fail;
	}
	*out = h;
	return 0;
fail:
	nbd_close(h);
	return err;
}
