/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The library context: log level and sink, and the "said once" memory for
 * messages that would otherwise repeat (fallbacks, probes). It is the only
 * place where state shared by several objects lives.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"

#define WPS_ONCE_KEYS 32

struct wps_ctx {
	int level;
	wps_log_fn fn;
	void *fn_arg;
	pthread_mutex_t lock; /* guards once[] */
	const void *once[WPS_ONCE_KEYS];
	unsigned int nr_once;
};

static void default_log(void *arg, int level, const char *msg)
{
	(void)arg;
	(void)level;
	fprintf(stderr, "wpsnap: %s\n", msg);
}

static int level_from_env(void)
{
	const char *v = getenv("WPSNAP_LOG");

	if (!v)
		return WPS_LOG_WARN;
	if (!strcasecmp(v, "err") || !strcasecmp(v, "error"))
		return WPS_LOG_ERR;
	if (!strcasecmp(v, "info"))
		return WPS_LOG_INFO;
	if (!strcasecmp(v, "debug"))
		return WPS_LOG_DEBUG;
	return WPS_LOG_WARN;
}

int wps_ctx_new(struct wps_ctx **out)
{
	struct wps_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return -ENOMEM;
	ctx->level = level_from_env();
	ctx->fn = default_log;
	pthread_mutex_init(&ctx->lock, NULL);
	*out = ctx;
	return 0;
}

void wps_ctx_free(struct wps_ctx *ctx)
{
	if (!ctx)
		return;
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}

void wps_ctx_set_log_level(struct wps_ctx *ctx, int level)
{
	__atomic_store_n(&ctx->level, level, __ATOMIC_RELAXED);
}

int wps_ctx_get_log_level(const struct wps_ctx *ctx)
{
	return __atomic_load_n(&ctx->level, __ATOMIC_RELAXED);
}

void wps_ctx_set_log_fn(struct wps_ctx *ctx, wps_log_fn fn, void *arg)
{
	ctx->fn = fn ? fn : default_log;
	ctx->fn_arg = fn ? arg : NULL;
}

bool wps_log_enabled(const struct wps_ctx *ctx, int level)
{
	return ctx && level <= wps_ctx_get_log_level(ctx);
}

static void vlog(struct wps_ctx *ctx, int level, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	ctx->fn(ctx->fn_arg, level, msg);
}

void wps_log(struct wps_ctx *ctx, int level, const char *fmt, ...)
{
	va_list ap;

	if (!wps_log_enabled(ctx, level))
		return;
	va_start(ap, fmt);
	vlog(ctx, level, fmt, ap);
	va_end(ap);
}

void wps_log_once(struct wps_ctx *ctx, int level, const void *key,
		  const char *fmt, ...)
{
	bool seen = false;
	va_list ap;
	unsigned int i;

	if (!wps_log_enabled(ctx, level))
		return;
	pthread_mutex_lock(&ctx->lock);
	for (i = 0; i < ctx->nr_once; i++)
		if (ctx->once[i] == key)
			seen = true;
	if (!seen && ctx->nr_once < WPS_ONCE_KEYS)
		ctx->once[ctx->nr_once++] = key;
	pthread_mutex_unlock(&ctx->lock);
	if (seen)
		return;
	va_start(ap, fmt);
	vlog(ctx, level, fmt, ap);
	va_end(ap);
}
