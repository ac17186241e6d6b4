/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target: what `wpsnap vm restore` reads from a snapshot directory
 * besides the image (src/vm_meta.c, src/vm_xml.c): vm.json, and the
 * domain XML it lists the disks of and rewrites for the restored domain.
 * A directory comes from wherever the operator got it. Input: vm.json's
 * bytes, a NUL, domain.xml's bytes.
 *
 * What a parse that succeeds promises, checked here: no more disks than
 * the table holds, and the rewrite of a domain XML whose disks could be
 * listed lists again with the same number of disks.
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/vm_int.h"
#include "tests/fuzz/fuzzutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t jlen = nul ? (size_t)(nul - data) : size;
	struct vm_disk d[VM_MAX_DISKS];
	unsigned int nd = 0, again = 0;
	static struct vm_meta m;
	char path[64], *xml, *out = NULL;
	bool listed;
	int fd;

	fz_begin();
	memset(&m, 0, sizeof(m));
	fd = fz_memfd(data, jlen, path, sizeof(path));
	if (fd >= 0) {
		if (!vm_meta_read(fz_ctx(), path, &m) &&
		    m.nr_disks > VM_MAX_DISKS)
			abort();        /* the reader overran its table */
		close(fd);
	}
	xml = nul ? strndup((const char *)nul + 1, size - jlen - 1)
		  : strdup("");
	if (!xml)
		abort();
	listed = !vm_xml_disks(fz_ctx(), xml, d, &nd);
	if (listed && nd > VM_MAX_DISKS)
		abort();
	if (!vm_xml_restore(fz_ctx(), xml, "wpsnap-fuzz", &m, &out)) {
		/* what it writes from a domain it could list, it lists again */
		if (listed && (vm_xml_disks(fz_ctx(), out, d, &again) ||
			       again != nd))
			abort();
		free(out);
	}
	free(xml);
	fz_end();
	return 0;
}
