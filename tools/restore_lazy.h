/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap restore --lazy: on-demand restore into the reference guest. */
#ifndef TOOLS_TOOLS_RESTORE_LAZY_H
#define TOOLS_TOOLS_RESTORE_LAZY_H

#include <stdbool.h>

#include <wpsnap/wpsnap.h>

/* true if argv (the restore command's, argv[0] = "restore") asks for
 * --lazy: cmd_restore hands the whole command to cmd_restore_lazy. */
bool restore_lazy_requested(int argc, char **argv);

/* The whole "wpsnap restore IMAGE --lazy ..." command; exit status. */
int cmd_restore_lazy(struct wps_ctx *ctx, int argc, char **argv);

#endif
