/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions: a memory snapshot plus disk actions (reflink copies of
 * image files, hook commands such as an LVM snapshot) taken in one pause
 * of the guest, so that disks and memory show the same instant.
 *
 * This module knows nothing of jobs or sockets: it validates a transaction
 * (on the loop thread, before anything is paused), performs its disk
 * actions in order (on the job's worker, inside the pause) and undoes the
 * performed ones in reverse order when something fails. job.c decides when.
 */
#ifndef WPSD_TXN_H
#define WPSD_TXN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "daemon/qmp.h"
#include "daemon/server.h"

#define WPSD_TXN_ACTIONS_MAX  32
#define WPSD_HOOK_ARGS_MAX    256
#define WPSD_HOOK_TIMEOUT_MS  5000      /* default per hook command */
#define WPSD_HOOK_TIMEOUT_MAX 600000

enum wpsd_txn_type {
	WPSD_TXN_MEMORY = 1,
	WPSD_TXN_REFLINK,
	WPSD_TXN_HOOK,
};

struct wpsd_txn_action {
	enum wpsd_txn_type type;
	/* disk-reflink */
	char *source, *target, *target_dir;  /* owned */
	int src_fd;                          /* owned: opened when validated */
	int dst_fd;                          /* owned: from the clone to sync */
	/* disk-hook: NULL-terminated argv vectors */
	char **argv, **rollback;             /* owned; rollback may be NULL */
	unsigned int timeout_ms;
	bool done;                           /* performed and not undone */
	uint64_t ns;                         /* time it took */
};

struct wpsd_txn {
	char guest[WPSD_NAME_MAX + 1];
	struct wpsd_txn_action *a;           /* owned, nr of them */
	unsigned int nr;
	int mem;                             /* memory-snapshot index, or -1 */
	int failed;                          /* disk action that failed, or -1 */
	unsigned int undone;                 /* actions rolled back */
	uint64_t disk_ns;                    /* all disk actions (in the pause) */
	uint64_t sync_ns;                    /* fsync of the clones (after it) */
};

/* Asked between and during actions: true aborts with -ECANCELED. */
typedef bool (*wpsd_txn_stop_fn)(void *arg);

/*
 * Check a transaction's arguments completely (keys, types, paths, argv,
 * reflink support) so that most errors never pause the guest. On success
 * *out owns the opened sources, and *mem_args (if there is a memory
 * action; else NULL) holds wps-snapshot-start style arguments for it.
 * c: the client; only root may run disk-hook commands, and the paths of
 * a client that is not root pass daemon/access.h.
 */
int wpsd_txn_parse(struct wpsd_conn *c, json_t *args, struct wpsd_txn **out,
		   json_t **mem_args, struct wpsd_reply *r);

/* Worker, guest running, before the pause: write back the reflink
 * sources' dirty page cache, so the clones (which must flush it first)
 * have little left to write inside the pause. Best effort. */
void wpsd_txn_prepare(struct wpsd_txn *t);

/* Worker, inside the pause: the disk actions in order. On failure the
 * failing action has cleaned up after itself, t->failed names it and
 * cause says why ("action 2 (disk-hook): ..."). The caller rolls back. */
int wpsd_txn_commit(struct wpsd_txn *t, wpsd_txn_stop_fn stop, void *arg,
		    char *cause, size_t len);

/* Worker, guest resumed, before the reply: make the clones durable
 * (fsync of each target and its directory). Durability needs no pause;
 * consistency was fixed by the clone. On failure like commit. */
int wpsd_txn_sync(struct wpsd_txn *t, char *cause, size_t len);

/* Undo every performed action, last first; appends what it did (and
 * what it could not do) to cause. Idempotent. */
void wpsd_txn_rollback(struct wpsd_txn *t, char *cause, size_t len);

/* The per-action part of the transaction's return value. */
json_t *wpsd_txn_result(const struct wpsd_txn *t);

const char *wpsd_txn_type_name(enum wpsd_txn_type type);

void wpsd_txn_free(struct wpsd_txn *t);

#endif /* WPSD_TXN_H */
