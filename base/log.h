/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one logging facility of libwpsnap. Messages go to the context's sink
 * when their level is at or below the context's level.
 */
#ifndef WPS_LOG_H
#define WPS_LOG_H

#include <wpsnap/wpsnap.h>

void wps_log(struct wps_ctx *ctx, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like wps_log for messages that should appear only once per context key
 * (e.g. "falling back to buffered I/O"). key: any stable pointer. */
void wps_log_once(struct wps_ctx *ctx, int level, const void *key,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
bool wps_log_enabled(const struct wps_ctx *ctx, int level);

#define wps_err(ctx, ...) wps_log(ctx, WPS_LOG_ERR, __VA_ARGS__)
#define wps_warn(ctx, ...) wps_log(ctx, WPS_LOG_WARN, __VA_ARGS__)
#define wps_info(ctx, ...) wps_log(ctx, WPS_LOG_INFO, __VA_ARGS__)
#define wps_dbg(ctx, ...)                                                  \
	do {                                                               \
		if (wps_log_enabled(ctx, WPS_LOG_DEBUG))                   \
			wps_log(ctx, WPS_LOG_DEBUG, __VA_ARGS__);          \
	} while (0)

#endif /* WPS_LOG_H */
