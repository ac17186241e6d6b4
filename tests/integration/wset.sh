#!/bin/sh
# wpsnap restore --lazy and its working-set file, end to end: a snapshot
# under writers carries the written-pages blob; the first lazy restore
# writes IMAGE.wset, the second uses it; a damaged file and one of another
# image are ignored with a message; --no-working-set neither reads nor
# writes it. Every restore is verified against the ledger. Prints
# "N passed, N failed" for the CI summary.
set -u
. "$(dirname "$0")/tap.sh"
G="$B/tools/wpsnap-guest"
T=$(mktemp -d /var/tmp/wpsnap-wset.XXXXXX)
trap 'rm -rf "$T"' EXIT
run() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$name"; else ko "$name"; fi; }
has() { if grep -q "$2" "$T/out"; then ok "$1"; else ko "$1"; fi; }

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (userfaultfd)"; exit 77; }

IMG="$T/a.wpsnap"
run "snapshot under writers" "$G" --size 64M --threads 2 --snapshot "$IMG" \
	--ledger "$T/a.ledger"
run "inspect" "$W" inspect "$IMG"
has "image carries the written-pages blob" "blob  *wpsnap.written"

run "first lazy restore" "$W" restore "$IMG" --lazy --ledger "$T/a.ledger"
has "first restore verified" "verified: every block as in"
# Used, or (writers all over memory) named and left out as not selective.
has "first restore considers the written pages" "written during the snapshot"
has "first restore records its faults" "a.wpsnap.wset holds"
[ -s "$IMG.wset" ] && ok "IMAGE.wset written" || ko "IMAGE.wset written"
[ -z "$(ls "$T" | grep '\.tmp\.')" ] && ok "no temporary file left" ||
	ko "temporary file left: $(ls "$T")"

run "second lazy restore" "$W" restore "$IMG" --lazy --ledger "$T/a.ledger"
has "second restore verified" "verified: every block as in"
has "second restore uses the record" "recorded by earlier restores ($IMG.wset)"

cp "$IMG.wset" "$T/good.wset"
printf '\377' | dd of="$IMG.wset" bs=1 seek=70 conv=notrunc 2>/dev/null
run "restore with a damaged working set" "$W" restore "$IMG" --lazy \
	--ledger "$T/a.ledger"
has "damaged file named, ignored" "checksum mismatch in its .* ranges: damaged, ignored"
has "restore still verified" "verified: every block as in"

"$G" --size 16M --threads 1 --snapshot "$T/b.wpsnap" >/dev/null 2>&1
run "restore with another image's working set" "$W" restore "$T/b.wpsnap" \
	--lazy --working-set "$T/good.wset"
has "stale file ignored" "was recorded for image .*, not this image"

cp "$IMG.wset" "$T/before"
run "--no-working-set" "$W" restore "$IMG" --lazy --no-working-set \
	--ledger "$T/a.ledger"
has "says it is not used" "working set: not used"
has "--no-working-set verified" "verified: every block as in"
cmp -s "$IMG.wset" "$T/before" && ok "file untouched" || ko "file changed"

tap_end
