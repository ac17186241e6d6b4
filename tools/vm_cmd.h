/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap vm ...: the command-line front of the library's VM module
 * (<wpsnap/vm.h>, docs/VM.md). */
#ifndef WPSNAP_TOOLS_VM_CMD_H
#define WPSNAP_TOOLS_VM_CMD_H

#include <wpsnap/wpsnap.h>

/* argv[0] is "vm". Returns the process exit status. */
int vm_cmd_main(struct wps_ctx *ctx, int argc, char **argv);

#endif
