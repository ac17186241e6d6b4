/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * base/procmaps.c: the /proc/PID/maps and smaps parser (see procmaps.h).
 * It owns nothing beyond the array it returns.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/procmaps.h"

const char *wps_maps_file(pid_t pid, unsigned int flags, char *buf,
			  size_t size)
{
	snprintf(buf, size, "/proc/%d/%s", (int)pid,
		 flags & WPS_MAPS_SMAPS ? "smaps" : "maps");
	return buf;
}

/* "VmFlags: rd wr mr mw me dc ..." : two-letter words. */
static bool has_flag(const char *line, const char *flag)
{
	const char *s = line + strlen("VmFlags:");

	while ((s = strstr(s, flag))) {
		if (s[-1] == ' ' && (s[2] == ' ' || s[2] == '\n' || !s[2]))
			return true;
		s += 2;
	}
	return false;
}

int wps_maps_parse(FILE *f, unsigned int flags, struct wps_maps_vma **out,
		   unsigned int *nr)
{
	struct wps_maps_vma *v = NULL, *cur, *nv;
	unsigned int n = 0, cap = 0;
	char *line = NULL;
	size_t llen = 0;
	int ret = 0;

	while (getline(&line, &llen, f) > 0) {
		uint64_t start, end, off, ino;
		unsigned int maj, mnr;
		char perms[5];
		int pos = 0;

		if (!strncmp(line, "VmFlags:", 8)) {
			if (n && (flags & WPS_MAPS_SMAPS) && has_flag(line, "dc"))
				v[n - 1].dontfork = true;
			continue;
		}
		/* smaps' counter lines ("Size:", "Anonymous:") fail here */
		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64
			   " %x:%x %" SCNu64 " %n", &start, &end, perms, &off,
			   &maj, &mnr, &ino, &pos) != 7 || !pos)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				ret = -ENOMEM;
				goto out;
			}
			v = nv;
		}
		cur = &v[n++];
		memset(cur, 0, sizeof(*cur));
		cur->start = start;
		cur->end = end;
		cur->offset = off;
		cur->inode = ino;
		cur->dev_major = maj;
		cur->dev_minor = mnr;
		memcpy(cur->perms, perms, sizeof(perms));
		snprintf(cur->path, sizeof(cur->path), "%s", line + pos);
		cur->path[strcspn(cur->path, "\n")] = '\0';
	}
	if (ferror(f))
		ret = -EIO;
out:
	free(line);
	if (ret) {
		free(v);
		return ret;
	}
	*out = v;
	*nr = n;
	return 0;
}

int wps_maps_read(pid_t pid, unsigned int flags, struct wps_maps_vma **out,
		  unsigned int *nr)
{
	char path[64];
	FILE *f;
	int ret;

	f = fopen(wps_maps_file(pid, flags, path, sizeof(path)), "re");
	if (!f)
		return -errno;
	ret = wps_maps_parse(f, flags, out, nr);
	fclose(f);
	return ret;
}
