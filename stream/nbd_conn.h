/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Connecting to an NBD export with libnbd (stream/nbd_conn.c): the one
 * connect-with-a-deadline both the NBD image source (reader) and the NBD
 * image output (writer) use, and libnbd's error in our -errno form.
 */
#ifndef WPS_NBD_CONN_H
#define WPS_NBD_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <libnbd.h>

#include <wpsnap/wpsnap.h>

/*
 * A new handle connected to uri (libnbd URI syntax: nbd://HOST[:PORT]
 * /EXPORT, nbd+unix:///EXPORT?socket=PATH, ...) with the handshake done
 * within timeout_ms. -errno, logged naming the uri unless quiet.
 */
int wps_nbd_connect(struct wps_ctx *ctx, const char *uri, int timeout_ms,
		    bool quiet, struct nbd_handle **out);

/*
 * How long a request may go unanswered before the server counts as
 * stalled: WPS_NBD_TIMEOUT_MS, or WPSNAP_NBD_TIMEOUT (seconds, decimals
 * allowed, e.g. "2" or "0.5") from the environment. -EINVAL, logged
 * naming uri, for a value that is not a duration.
 */
#define WPS_NBD_TIMEOUT_MS 30000
int wps_nbd_timeout_ms(struct wps_ctx *ctx, const char *uri, int *ms);

/*
 * Wait until the command cookie (of an nbd_aio_* call without a
 * completion callback) is answered, polling h, at most timeout_ms
 * without progress of the connection. 0: done and retired; -ETIMEDOUT:
 * no answer in time (the command stays outstanding: the caller should
 * close h); else libnbd's -errno, its message in wps_nbd_why().
 */
int wps_nbd_wait(struct nbd_handle *h, int64_t cookie, int timeout_ms);

/* The words of every stall, writer or reader, synchronous or not: they
 * name the server (the URI), what waited (printf %s), the timeout in
 * seconds (%g) and how to change it. */
#define WPS_NBD_STALL_FMT "image %s: the NBD server did not answer %s within " \
	"%g s (stalled server or cut link; WPSNAP_NBD_TIMEOUT sets the timeout)"

/*
 * Tell the server we are going (NBD_CMD_DISC after what is in flight)
 * and wait for it to close, at most timeout_ms without progress; the
 * caller closes h either way. nbd_shutdown would wait without a bound,
 * so a server stopped at that moment would hang the close.
 */
void wps_nbd_disconnect(struct nbd_handle *h, int timeout_ms);

/* libnbd's message for the last failed call of this thread. */
const char *wps_nbd_why(void);

/* -errno of the last failed libnbd call of this thread, else fallback. */
int wps_nbd_errno_or(int fallback);

/*
 * "the connection to the NBD server is lost: " when the last failed
 * libnbd call of this thread failed because the server went away: its
 * errno says so, or h (may be NULL) is closed or dead (a call on such a
 * handle fails with EINVAL, "invalid state: CLOSED"); else "". libnbd's
 * own words do not tell an operator which side broke.
 */
const char *wps_nbd_lost(struct nbd_handle *h);

/* The -errno of the last failed libnbd call on h: -ENOTCONN when the
 * connection is gone (as wps_nbd_lost), else its errno, else fallback. */
int wps_nbd_err(struct nbd_handle *h, int fallback);

#endif /* WPS_NBD_CONN_H */
