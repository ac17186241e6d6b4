#!/bin/bash
# The floors of the tree (docs/ARCHITECTURE.md), checked over every
# `#include "..."` line: a folder may include only what its floor allows.
# System headers (<...>) are not checked, except that <wpsnap/...> is the
# public API, which everyone may use. Fails with the offending lines.
S=${WPSNAP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$S/tests/integration/tap.sh"
cd "$S" || exit 99

# folder -> the folders its quoted includes may name (besides config.h)
declare -A allow=(
	[base]="base"
	[wp]="base wp"
	[stream]="base stream"
	[src]="base wp stream src"
	[daemon]="base src daemon"
	[guest]="base guest"
	[tools]="base guest tools"
)
# Private headers a tool may use, and why (docs/ARCHITECTURE.md).
tools_private="wp/dirty.h wp/histo.h wp/compat.h wp/ftrace.h src/snapshot_trace.h"

check_folder() {
	local dir=$1 bad=0 f line inc top ok a
	while IFS= read -r f; do
		while IFS= read -r line; do
			inc=${line#*\"}; inc=${inc%%\"*}
			[ "$inc" = config.h ] && continue
			top=${inc%%/*}
			ok=0
			for a in ${allow[$dir]}; do
				[ "$top" = "$a" ] && ok=1
			done
			if [ $ok = 0 ] && [ "$dir" = tools ]; then
				case " $tools_private " in *" $inc "*) ok=1 ;; esac
			fi
			if [ $ok = 0 ]; then
				echo "# $f: $line"
				bad=1
			fi
		done < <(grep -h '^#[[:space:]]*include[[:space:]]*"' "$f")
	done < <(find "$dir" -name '*.[ch]' -o -name '*.S' | sort)
	return $bad
}

for d in base wp stream src daemon guest tools; do
	if [ ! -d "$d" ]; then ko "$d/ exists"; continue; fi
	if check_folder "$d"; then
		ok "$d/ includes only: ${allow[$d]}"
	else
		ko "$d/ includes only: ${allow[$d]}"
	fi
done
tap_end
