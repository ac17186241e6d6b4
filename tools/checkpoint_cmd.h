/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap checkpoint, chain, merge: periodic checkpoints and their chains
 * (the series itself is the library's, <wpsnap/session.h>). */
#ifndef TOOLS_CHECKPOINT_CMD_H
#define TOOLS_CHECKPOINT_CMD_H

#include <wpsnap/wpsnap.h>

/* argv[0] is the command's name. Each returns the process exit status. */
int checkpoint_cmd_main(struct wps_ctx *ctx, int argc, char **argv);
int chain_cmd_main(struct wps_ctx *ctx, int argc, char **argv);
int merge_cmd_main(struct wps_ctx *ctx, int argc, char **argv);

#endif
