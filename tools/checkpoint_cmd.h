/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* wpsnap checkpoint, chain, merge: periodic checkpoints and their chains
 * (the series itself is the library's, <wpsnap/session.h>). */
#ifndef TOOLS_CHECKPOINT_CMD_H
#define TOOLS_CHECKPOINT_CMD_H

#include <signal.h>
#include <stdbool.h>
#include <time.h>

#include <wpsnap/wpsnap.h>

/* argv[0] is the command's name. Each returns the process exit status. */
int checkpoint_cmd_main(struct wps_ctx *ctx, int argc, char **argv);
int chain_cmd_main(struct wps_ctx *ctx, int argc, char **argv);
int merge_cmd_main(struct wps_ctx *ctx, int argc, char **argv);

/*
 * The wait between the checkpoints of a series run from the command
 * line: the deadline, or one of the signals of stop (kept blocked from
 * before any thread starts, so that a signal that arrives while a
 * checkpoint runs is seen here, after it: that checkpoint is finished
 * and reported, then the series stops). true: stop.
 */
bool checkpoint_wait_signal(const sigset_t *stop,
			    const struct timespec *deadline);

#endif
