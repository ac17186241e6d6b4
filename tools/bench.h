/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap bench: measures snapshots against this machine's own limits. */
#ifndef TOOLS_BENCH_H
#define TOOLS_BENCH_H

#include <wpsnap/wpsnap.h>

/* argv[0] is "bench". Returns the process exit status. */
int bench_main(struct wps_ctx *ctx, int argc, char **argv);

#endif
