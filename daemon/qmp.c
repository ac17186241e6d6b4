/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP message shapes and argument checking. Keeping the checks in one
 * table-driven place is what lets every command refuse bad input the same
 * way, with a description that names the key at fault.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include <wpsnap/wpsnap.h>

#include "daemon/qmp.h"

void wpsd_reply_err(struct wpsd_reply *r, const char *cls, const char *fmt, ...)
{
	va_list ap;

	r->cls = cls;
	va_start(ap, fmt);
	vsnprintf(r->desc, sizeof(r->desc), fmt, ap);
	va_end(ap);
}

static const char *type_name(enum wpsd_type t)
{
	switch (t) {
	case WPSD_T_STR: return "a string";
	case WPSD_T_UINT: return "a non-negative integer";
	case WPSD_T_BOOL: return "a boolean";
	case WPSD_T_ARRAY: return "an array";
	case WPSD_T_OBJECT: return "an object";
	}
	return "?";
}

static bool type_ok(const json_t *v, enum wpsd_type t)
{
	switch (t) {
	case WPSD_T_STR: return json_is_string(v);
	case WPSD_T_UINT: return json_is_integer(v) && json_integer_value(v) >= 0;
	case WPSD_T_BOOL: return json_is_boolean(v);
	case WPSD_T_ARRAY: return json_is_array(v);
	case WPSD_T_OBJECT: return json_is_object(v);
	}
	return false;
}

int wpsd_args_check(const json_t *obj, const struct wpsd_arg *spec,
		    const char *what, struct wpsd_reply *r)
{
	const struct wpsd_arg *a;
	const char *key;
	json_t *v;

	if (obj && !json_is_object(obj)) {
		wpsd_reply_err(r, WPSD_GENERIC, "%s must be an object", what);
		return -EINVAL;
	}
	if (obj) {
		json_object_foreach((json_t *)obj, key, v) {
			for (a = spec; a->name; a++)
				if (!strcmp(a->name, key))
					break;
			if (!a->name) {
				wpsd_reply_err(r, WPSD_GENERIC,
					       "%s: unknown key '%s'", what, key);
				return -EINVAL;
			}
			if (!type_ok(v, a->type)) {
				wpsd_reply_err(r, WPSD_GENERIC,
					       "%s: '%s' must be %s", what, key,
					       type_name(a->type));
				return -EINVAL;
			}
		}
	}
	for (a = spec; a->name; a++) {
		if (a->required && (!obj || !json_object_get(obj, a->name))) {
			wpsd_reply_err(r, WPSD_GENERIC,
				       "%s: missing key '%s'", what, a->name);
			return -EINVAL;
		}
	}
	return 0;
}

json_t *wpsd_greeting(void)
{
	int maj = 0, min = 0, mic = 0;

	sscanf(WPSNAP_VERSION_STRING, "%d.%d.%d", &maj, &min, &mic);
	return json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s,s:i},s:[]}}", "QMP",
			 "version", "wpsnap", "major", maj, "minor", min,
			 "micro", mic, "package", "wpsnapd " WPSNAP_VERSION_STRING,
			 "protocol", WPSD_PROTOCOL_VERSION, "capabilities");
}

json_t *wpsd_return(json_t *ret, json_t *id)
{
	json_t *m = json_object();

	json_object_set_new(m, "return", ret ? ret : json_object());
	if (id)
		json_object_set(m, "id", id);
	return m;
}

json_t *wpsd_error(const char *cls, const char *desc, json_t *id)
{
	json_t *m = json_pack("{s:{s:s,s:s}}", "error", "class", cls,
			      "desc", desc);

	if (m && id)
		json_object_set(m, "id", id);
	return m;
}

json_t *wpsd_timestamp(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return json_pack("{s:I,s:I}", "seconds", (json_int_t)tv.tv_sec,
			 "microseconds", (json_int_t)tv.tv_usec);
}
