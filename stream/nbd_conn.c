/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Connecting to an NBD export (stream/nbd_conn.h), and waiting for one
 * command with a bound. Owns nothing beyond the handle it returns; shared
 * by the NBD reader and the NBD writer so that both bound the handshake
 * (and a request) the same way: a server that accepts a connection and
 * then stops answering must turn into an error, never into a hang.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/clock.h"
#include "base/deadline.h"
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

static bool conn_gone(struct nbd_handle *h)
{
	switch (nbd_get_errno()) {
	case ENOTCONN: case ECONNRESET: case EPIPE: case ESHUTDOWN:
	case ECONNABORTED:
		return true;
	default:
		return h && (nbd_aio_is_closed(h) > 0 || nbd_aio_is_dead(h) > 0);
	}
}

const char *wps_nbd_lost(struct nbd_handle *h)
{
	return conn_gone(h) ? "the connection to the NBD server is lost: " : "";
}

int wps_nbd_err(struct nbd_handle *h, int fallback)
{
	return conn_gone(h) ? -ENOTCONN : wps_nbd_errno_or(fallback);
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

int wps_nbd_timeout_ms(struct wps_ctx *ctx, const char *uri, int *ms)
{
	const char *v = getenv("WPSNAP_NBD_TIMEOUT");
	char *end;
	double s;

	*ms = WPS_NBD_TIMEOUT_MS;
	if (!v || !*v)
		return 0;
	errno = 0;
	s = strtod(v, &end);
	/* The upper bound keeps the milliseconds in an int (poll()). */
	if (errno || *end || !(s >= 0.001 && s <= 86400)) {
		wps_err(ctx, "image %s: WPSNAP_NBD_TIMEOUT=%s is not a timeout "
			"in seconds (0.001 to 86400)", uri, v);
		return -EINVAL;
	}
	*ms = (int)(s * 1000 + 0.5);
	return 0;
}

/*
 * The deadline restarts whenever the connection made progress (nbd_poll
 * returned 1: bytes moved), so a large write behind a slow link is not
 * cut short while the server keeps reading; only silence counts.
 */
int wps_nbd_wait(struct nbd_handle *h, int64_t cookie, int timeout_ms)
{
	struct timespec dl = wps_deadline_from_ms((uint64_t)timeout_ms);

	if (cookie < 0)
		return wps_nbd_errno_or(-EIO);
	for (;;) {
		int r = nbd_aio_command_completed(h, (uint64_t)cookie);
		int left;

		if (r == 1)
			return 0;
		if (r < 0)
			return wps_nbd_errno_or(-EIO);
		left = wps_deadline_poll_ms(&dl);
		if (!left)
			return -ETIMEDOUT;
		r = nbd_poll(h, left);
		if (r < 0)
			return wps_nbd_errno_or(-EIO);
		if (r == 1)
			dl = wps_deadline_from_ms((uint64_t)timeout_ms);
	}
}

void wps_nbd_disconnect(struct nbd_handle *h, int timeout_ms)
{
	struct timespec dl = wps_deadline_from_ms((uint64_t)timeout_ms);
	int left, r;

	if (!h || nbd_aio_disconnect(h, 0) < 0)
		return;
	while (nbd_aio_is_closed(h) <= 0 && nbd_aio_is_dead(h) <= 0 &&
	       (left = wps_deadline_poll_ms(&dl))) {
		r = nbd_poll(h, left);
		if (r < 0)
			return;
		if (r == 1)
			dl = wps_deadline_from_ms((uint64_t)timeout_ms);
	}
}
