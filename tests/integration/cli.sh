#!/bin/sh
# The wpsnap CLI end to end: demo keeps an image and a ledger; inspect,
# verify and export read them; a corrupted image is refused with the
# offset at fault. Prints "N passed, N failed" for the CI summary.
set -u
. "$(dirname "$0")/tap.sh"
T=$(mktemp -d /var/tmp/wpsnap-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
check() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$name"; else ko "$name"; fi; }
check_fails() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ko "$name (succeeded)"; else ok "$name"; fi; }

check "help" "$W" --help
for c in demo inspect export verify restore; do check "$c --help" "$W" $c --help; done
check_fails "unknown command" "$W" frobnicate

check "demo --keep" "$W" demo --keep "$T/k" --size 64M
grep -q "verified byte-for-byte" "$T/out" && ok "demo summary" || ko "demo summary"
IMG="$T/k/demo.wpsnap"
check "verify with ledger" "$W" verify "$IMG" --ledger "$T/k/demo.ledger"
check "inspect" "$W" inspect "$IMG"
check "restore with ledger" "$W" restore "$IMG" --ledger "$T/k/demo.ledger"
grep -q "every block as at the freeze" "$T/out" && ok "restore verified" || ko "restore verified"
"$W" inspect --json "$IMG" >"$T/j" 2>&1
missing=
for k in '"version"' '"uuid"' '"page_size"' '"regions"' '"host_addr"' '"size"' \
	 '"populated_pages"' '"image_bytes"' '"complete": true'; do
	grep -q "$k" "$T/j" || missing="$missing $k"
done
[ -z "$missing" ] && ok "inspect --json keys" || ko "inspect --json keys:$missing"

check "export" "$W" export "$IMG" --region 0 -o "$T/raw"
[ "$(stat -c %s "$T/raw")" = $((64 * 1024 * 1024)) ] && ok "export size" || ko "export size"
check_fails "export of a missing region" "$W" export "$IMG" --region 7 -o "$T/raw2"
[ ! -e "$T/raw2" ] && ok "no output for a failed export" || ko "failed export left a file"

# Flip one byte in the middle of the data area: verify must name an offset.
cp "$IMG" "$T/bad"
size=$(stat -c %s "$T/bad")
off=$((size / 2 / 4096 * 4096 + 100))
# Flip the byte (XOR 0xff): writing a constant leaves it unchanged 1 time in 256.
byte=$(od -An -tu1 -j $off -N1 "$T/bad" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 255)))" | dd of="$T/bad" bs=1 seek=$off conv=notrunc 2>/dev/null
if "$W" verify "$T/bad" >"$T/out" 2>&1; then
	# the byte may have landed in a hole; then the file is still sound
	cmp -s "$IMG" "$T/bad" && ko "corruption not applied" || ok "verify (byte in a hole)"
else
	grep -q "offset" "$T/out" && ok "verify names the bad offset" || ko "verify message: $(cat "$T/out")"
fi
head -c $((size - 4096)) "$IMG" >"$T/trunc"
check_fails "truncated image refused" "$W" verify "$T/trunc"
check_fails "missing file refused" "$W" inspect "$T/nope"
check_fails "verify against a wrong ledger" "$W" verify "$IMG" --ledger "$T/bad"

tap_end
