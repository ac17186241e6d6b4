/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * wpsnapd's commands: parse one request line, check the envelope and the
 * arguments, run the handler, send the reply (or leave it deferred).
 * Above the server: it answers through server.h, and the server reaches
 * it only through the wpsd_line_fn that wpsnapd.c's main hands it.
 */
#ifndef WPSD_COMMANDS_H
#define WPSD_COMMANDS_H

#include <stddef.h>

#include "daemon/server.h"

void wpsd_cmd_line(struct wpsd_conn *c, const char *line, size_t len);

#endif /* WPSD_COMMANDS_H */
