/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: the QEMU layout blob (src/qemu_layout.c,
 * wps_qemu_layout_parse), the JSON an image carries to tell a restore
 * which QEMU RAM block each region is and where it sits in guest-physical
 * memory (docs/QEMU.md, "The layout blob"). It comes from the image, so
 * from wherever the image came from. Input: the blob's bytes, as is.
 *
 * What a parse that succeeds promises, checked here: every guest-physical
 * range names a block that exists and starts inside it, and the layout
 * survives a format and a second parse with the same counts.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <wpsnap/qemu.h>

#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wps_qemu_layout *l = NULL, *again = NULL;
	char *json = NULL;
	unsigned int i;

	fz_begin();
	if (!wps_qemu_layout_parse(fz_ctx(), data, size, &l)) {
		for (i = 0; i < l->nr_phys; i++)
			if (l->phys[i].block >= l->nr_blocks ||
			    l->phys[i].offset > l->blocks[l->phys[i].block].max)
				abort();    /* the parser let a range dangle */
		if (wps_qemu_layout_format(fz_ctx(), l, &json) ||
		    wps_qemu_layout_parse(fz_ctx(), json, strlen(json), &again) ||
		    again->nr_blocks != l->nr_blocks || again->nr_phys != l->nr_phys)
			abort();    /* what it accepts, it writes back readable */
		wps_qemu_layout_free(again);
		free(json);
		wps_qemu_layout_free(l);
	}
	fz_end();
	return 0;
}
