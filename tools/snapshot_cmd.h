/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap snapshot: a live snapshot of an unmodified process. */
#ifndef TOOLS_SNAPSHOT_CMD_H
#define TOOLS_SNAPSHOT_CMD_H

#include <wpsnap/attach.h>
#include <wpsnap/wpsnap.h>

/* argv[0] is "snapshot". Returns the process exit status. */
int cmd_snapshot(struct wps_ctx *ctx, int argc, char **argv);

/* "START-END", hex addresses (as --range takes them): 0 or -EINVAL. */
int cli_parse_range(const char *s, struct wps_attach_range *r);

#endif
