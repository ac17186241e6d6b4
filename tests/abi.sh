#!/bin/bash
# The shared library exports exactly its public API: every dynamic symbol
# of libwpsnap.so is declared in include/wpsnap/*.h, and every name the
# version script (libwpsnap.sym) lists is exported.
S=${WPSNAP_SRCDIR:-$(cd "$(dirname "$0")/.." && pwd)}
. "$S/tests/integration/tap.sh"
so="$B/.libs/libwpsnap.so"
[ -f "$so" ] || { echo "# no $so (static build?)"; exit 77; }
command -v nm >/dev/null || { echo "# nm not found (binutils)"; exit 77; }

exported=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sed 's/@.*//' | sort -u)
undeclared=
for s in $exported; do
	grep -qw -- "$s" "$S"/include/wpsnap/*.h || undeclared="$undeclared $s"
done
[ -z "$undeclared" ] && ok "every exported symbol is in a public header ($(echo "$exported" | wc -w) symbols)" ||
	{ echo "# exported but in no public header:$undeclared"; ko "every exported symbol is in a public header"; }

# not_exported NAMES...: those of NAMES the library does not export
not_exported() {
	for s in "$@"; do
		echo "$exported" | grep -qx -- "$s" || printf ' %s' "$s"
	done
}

listed=$(sed -n 's/^[[:space:]]*\(wps_[A-Za-z0-9_]*\);.*/\1/p' "$S/libwpsnap.sym" | sort -u)
missing=$(not_exported $listed)
[ -z "$missing" ] && ok "every symbol of libwpsnap.sym is exported" ||
	{ echo "# listed but not exported:$missing"; ko "every symbol of libwpsnap.sym is exported"; }

# and the other way: every function a public header declares is exported
declared=$(cat "$S"/include/wpsnap/*.h | tr '\n' ' ' | grep -o '\bwps_[a-z0-9_]*[[:space:]]*(' | sed 's/[[:space:](]//g' | sort -u)
absent=$(not_exported $declared)
[ -z "$absent" ] && ok "every function of the public headers is exported" ||
	{ echo "# declared but not exported:$absent"; ko "every function of the public headers is exported"; }
tap_end
