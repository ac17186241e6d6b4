/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP wire conventions for wpsnapd: the greeting, replies and errors, and
 * a table-driven check of command arguments (unknown keys, missing keys
 * and wrong types are refused before any handler runs).
 */
#ifndef WPSD_QMP_H
#define WPSD_QMP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define WPSD_PROTOCOL_VERSION 1

/* QMP error classes */
#define WPSD_GENERIC   "GenericError"
#define WPSD_NOTFOUND  "CommandNotFound"
#define WPSD_NODEVICE  "DeviceNotFound"

enum wpsd_type {
	WPSD_T_STR = 1,
	WPSD_T_UINT,          /* JSON integer >= 0 */
	WPSD_T_BOOL,
	WPSD_T_ARRAY,
	WPSD_T_OBJECT,
};

struct wpsd_arg {
	const char *name;
	enum wpsd_type type;
	bool required;
};

/* What a command handler hands back: a return value, an error, or
 * nothing yet (the reply is sent later, e.g. after the freeze). */
struct wpsd_reply {
	json_t *ret;          /* owned until sent */
	const char *cls;      /* set: error */
	char desc[512];
	bool deferred;
};

void wpsd_reply_err(struct wpsd_reply *r, const char *cls, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Check obj (may be NULL: no arguments) against spec (NULL-terminated).
 * what names the object in messages ("arguments", "regions[2]"). */
int wpsd_args_check(const json_t *obj, const struct wpsd_arg *spec,
		    const char *what, struct wpsd_reply *r);

json_t *wpsd_greeting(void);
/* {"return": ret, "id": id}; steals ret, borrows id (may be NULL). */
json_t *wpsd_return(json_t *ret, json_t *id);
json_t *wpsd_error(const char *cls, const char *desc, json_t *id);
json_t *wpsd_timestamp(void);

#endif /* WPSD_QMP_H */
