/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap netbuf: hold a namespace's output through checkpoint epochs;
 * the bench of network output commit. */
#ifndef TOOLS_NETBUF_CMD_H
#define TOOLS_NETBUF_CMD_H

#include <wpsnap/wpsnap.h>

/* argv[0] is "netbuf", argv[1] the subcommand (hold, bench, cleanup).
 * Returns the process exit status. */
int netbuf_cmd_main(struct wps_ctx *ctx, int argc, char **argv);

#endif
