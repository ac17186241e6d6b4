/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnap-netbuf: the netbuf subcommands as a program of their own
 * (same as `wpsnap netbuf ...`), so that the holder the tests SIGKILL is
 * a small process that holds nothing else.
 */
#include "config.h"

#include <stdio.h>

#include <wpsnap/wpsnap.h>

#include "tools/netbuf_cmd.h"

int main(int argc, char **argv)
{
	struct wps_ctx *ctx;
	int ret;

	if (wps_ctx_new(&ctx)) {
		fprintf(stderr, "wpsnap-netbuf: out of memory\n");
		return 1;
	}
	argv[0] = "netbuf";
	ret = netbuf_cmd_main(ctx, argc, argv);
	wps_ctx_free(ctx);
	return ret;
}
