#!/bin/sh
# Remote restore over NBD, end to end, across two network namespaces
# joined by a veth pair (server 10.77.0.1, client 10.77.0.2), both made
# here and removed on exit. The server is a real nbdkit (file plugin, one
# read-only export per file). The reference guest snapshots itself (two
# writers running) into anon, memfd and hugetlb images; the client
# namespace then restores each from nbd://10.77.0.1/IMAGE eagerly, lazily
# and lazily-then-graduating, with writers from the first instant, and the
# ledger verifies every page. Faults must travel on their own connection
# (nbdkit's log filter shows which connection carried which read). A
# corrupted export is refused before the guest runs (eager) and fails the
# lazy restore with a clear error instead of delivering wrong data.
# Figures (eager bandwidth against nbdcopy of the same export, fault
# latency) are printed, never asserted. Prints "N passed, N failed".
set -u
. "$(dirname "$0")/tap.sh"
G="$B/tools/wpsnap-guest"
SIZE=64M
skip() { echo "SKIP: $1"; exit 77; }

[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, userfaultfd)"
for t in ip nbdkit python3; do
	command -v $t >/dev/null 2>&1 || skip "$t not installed (contrib/install-deps.sh)"
done

T=$(mktemp -d /var/tmp/wpsnap-nbd.XXXXXX)
NS_S=wpsnbd-s-$$ NS_C=wpsnbd-c-$$
srv= logsrv=
cleanup() {
	for p in $srv $logsrv; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
	ip netns del $NS_S 2>/dev/null
	ip netns del $NS_C 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# The two hosts. Deleting a namespace deletes its end of the veth pair.
ip netns add $NS_S && ip netns add $NS_C ||
	skip "cannot create network namespaces"
ip link add wns$$ netns $NS_S type veth peer name wnc$$ netns $NS_C ||
	skip "cannot create a veth pair"
ip -n $NS_S addr add 10.77.0.1/24 dev wns$$
ip -n $NS_C addr add 10.77.0.2/24 dev wnc$$
for n in $NS_S $NS_C; do ip -n $n link set lo up; done
ip -n $NS_S link set wns$$ up
ip -n $NS_C link set wnc$$ up
C() { ip netns exec $NS_C "$@"; }
# Every command's output is also kept: a sanitizer report in a run that
# was expected to fail must not pass unnoticed.
: >"$T/all"
# run NAME CMD...: must succeed
run() { name=$1; shift; if "$@" >"$T/out" 2>&1; then ok "$name"; else ko "$name"; fi; cat "$T/out" >>"$T/all"; }
# has NAME PATTERN: the last command's output matches
has() { cat "$T/out" >>"$T/all"; if grep -q -- "$2" "$T/out"; then ok "$1"; else ko "$1"; fi; }

# Images, taken live (two writers) in the default namespace.
mkdir -p "$T/exp"
backings=
for b in anon memfd hugetlb; do
	if "$G" --size $SIZE --backing $b --threads 2 --reserve-hugepages \
		--snapshot "$T/exp/$b.wpsnap" --ledger "$T/$b.ledger" \
		>"$T/out" 2>&1; then
		backings="$backings $b"
	elif [ $b = hugetlb ]; then
		sk "hugetlb backing" "$(tail -1 "$T/out")"
	else
		ko "snapshot of the $b guest"
	fi
done
cp "$T/anon.ledger" "$T/exp/not-an-image"

# A corrupted copy: one byte flipped inside a present data block (the
# guest wrote every block, so the middle of the data area has data).
python3 - "$T/exp/anon.wpsnap" "$T/exp/bad.wpsnap" <<'EOF'
import shutil, sys
src, dst = sys.argv[1], sys.argv[2]
shutil.copyfile(src, dst)
with open(dst, "r+b") as f:
    f.seek(0, 2)
    size = f.tell()
    off = (2 << 20) + (size - (2 << 20)) // 2 // 4096 * 4096
    f.seek(off)
    block = f.read(4096)
    assert block.strip(b"\0"), "block at %d is a hole" % off
    f.seek(off + 100)
    f.write(bytes([block[100] ^ 0xff]))
EOF

# The storage host: nbdkit exports every file of exp/ read-only, by name.
ip netns exec $NS_S nbdkit -f -r -i 10.77.0.1 file dir="$T/exp" \
	>"$T/nbdkit.log" 2>&1 &
srv=$!
i=0
until C "$W" inspect nbd://10.77.0.1/anon.wpsnap >"$T/out" 2>&1; do
	i=$((i + 1))
	if [ $i -ge 50 ]; then
		ko "nbdkit serving in the server namespace"
		sed 's/^/#   nbdkit: /' "$T/nbdkit.log"
		echo "$pass passed, $fail failed"
		exit 1
	fi
	sleep 0.1
done
ok "nbdkit serving in the server namespace"
has "inspect names the NBD source" "NBD export, 5 connections"

for b in $backings; do
	U=nbd://10.77.0.1/$b.wpsnap
	L="$T/$b.ledger"
	run "$b: verify over NBD against the ledger" C "$W" verify $U --ledger "$L"
	run "$b: eager restore over NBD" C "$W" restore $U --ledger "$L" --reserve-hugepages
	has "$b: eager restore verified every block" "every block as at the freeze"
	has "$b: eager restore used the bulk connections" "NBD, 5 connections"
	[ $b = anon ] && cp "$T/out" "$T/eager.out"
	run "$b: lazy restore over NBD, 2 writers" C "$W" restore $U --lazy \
		--ledger "$L" --writers 2 --reserve-hugepages
	has "$b: lazy restore verified" "verified: every block as in"
	[ $b = anon ] && cp "$T/out" "$T/lazy.out"
	run "$b: lazy then graduate over NBD, 2 writers" C "$W" restore $U \
		--lazy --no-prefetch --graduate-after 300 --ledger "$L" \
		--writers 2 --reserve-hugepages
	has "$b: lazy-then-graduate verified" "verified: every block as in"
done

# Corruption: eager refuses before the guest could run, naming the offset.
if C "$W" restore nbd://10.77.0.1/bad.wpsnap --ledger "$T/anon.ledger" >"$T/out" 2>&1; then
	ko "eager restore of a corrupted export refused (it succeeded)"
else
	ok "eager restore of a corrupted export refused"
	cat "$T/out" >>"$T/all"
	has "eager refusal names the checksum and offset" "checksum mismatch in group .* at offset"
	grep -q "^restored" "$T/out" && ko "eager printed a restore" || ok "eager restored nothing"
fi
# Lazy: the damaged group is never delivered; the reader (which checks
# every first touch against the ledger) never sees wrong data, graduation
# fails, and the process ends (threads blocked on the page get SIGBUS
# once the pager is freed: never zeros, never stale bytes).
if C "$W" restore nbd://10.77.0.1/bad.wpsnap --lazy --ledger "$T/anon.ledger" >"$T/out" 2>&1; then
	ko "lazy restore of a corrupted export failed (it succeeded)"
else
	ok "lazy restore of a corrupted export failed"
	has "lazy failure names the damaged group" "damaged data in the group at image offset"
	has "lazy failure says to stop the guest" "stop the guest"
	grep -q "were wrong\|differs from the ledger" "$T/out" &&
		ko "wrong data reached the guest" || ok "no wrong data reached the guest"
fi

cat "$T/out" >>"$T/all"

# Clear errors for what is not a usable image.
if C "$W" inspect nbd://10.77.0.1/not-an-image >"$T/out" 2>&1; then
	ko "an export that is not an image refused"
else
	has "an export that is not an image refused" "not a wpsnap image"
fi
if C "$W" inspect nbd://10.77.0.1/missing.wpsnap >"$T/out" 2>&1; then
	ko "a missing export refused"
else
	has "a missing export refused" "no export named"
fi
if C "$W" restore nbd://10.77.0.1:10999/anon.wpsnap >"$T/out" 2>&1; then
	ko "no server on the port refused"
else
	has "no server on the port: clear error" "cannot connect to the NBD server.*refused"
fi
if C "$W" restore nbd://10.78.0.1/anon.wpsnap >"$T/out" 2>&1; then
	ko "unreachable network refused"
else
	has "unreachable network: clear error" "cannot connect to the NBD server.*unreachable"
fi
cat "$T/out" >>"$T/all"

# The reserved fault connection: a second server with nbdkit's log filter
# records the connection of every read. The first connection the client
# opens is the fault one: it must carry only fault windows (one 64 KiB
# checksum group each for anon), while prefetch (512 KiB requests) and
# metadata go over the others.
ip netns exec $NS_S nbdkit -f -r -i 10.77.0.1 -p 10810 --filter=log \
	file dir="$T/exp" logfile="$T/reads.log" >"$T/nbdkit2.log" 2>&1 &
logsrv=$!
i=0
until C "$W" inspect nbd://10.77.0.1:10810/anon.wpsnap >/dev/null 2>&1 || [ $i -ge 50 ]; do
	i=$((i + 1)); sleep 0.1
done
# Connections are numbered from 1 over the server's life: the probe's
# come first, then ours.
before=$(grep -c ' Connect export=' "$T/reads.log")
run "lazy restore through the logging server" C "$W" restore \
	nbd://10.77.0.1:10810/anon.wpsnap --lazy --ledger "$T/anon.ledger"
kill $logsrv 2>/dev/null && wait $logsrv 2>/dev/null
logsrv=
sed -n 's/.*connection=\([0-9]*\) Read id=[0-9]* offset=0x[0-9a-f]* count=\(0x[0-9a-f]*\).*/\1 \2/p' \
	"$T/reads.log" | awk -v n="$before" '$1 > n' >"$T/reads"
first=$((before + 1))
fault_reads=$(awk -v c="$first" '$1 == c' "$T/reads" | wc -l)
fault_other=$(awk -v c="$first" '$1 == c && $2 != "0x10000"' "$T/reads" | wc -l)
bulk_pieces=$(awk -v c="$first" '$1 != c && $2 == "0x80000"' "$T/reads" | wc -l)
echo "# reads: $fault_reads on the fault connection ($first), $bulk_pieces bulk 512 KiB pieces elsewhere"
[ "$fault_reads" -gt 0 ] && [ "$fault_other" = 0 ] &&
	ok "fault connection carries only fault windows" ||
	{ ko "fault connection carries only fault windows ($fault_other others)";
	  awk -v c="$first" '$1 == c && $2 != "0x10000"' "$T/reads" | head -5 | sed 's/^/#   /'; }
[ "$bulk_pieces" -gt 0 ] && ok "prefetch used the bulk connections" ||
	ko "prefetch used the bulk connections"

# Figures (information, not a verdict): eager over NBD against nbdcopy of
# the same export to nowhere, in this run, and the lazy fault latency.
if command -v nbdcopy >/dev/null 2>&1 && [ -f "$T/eager.out" ]; then
	t0=$(date +%s%N)
	if C nbdcopy nbd://10.77.0.1/anon.wpsnap null: 2>"$T/out"; then
		t1=$(date +%s%N)
		bytes=$(stat -c %s "$T/exp/anon.wpsnap")
		echo "# figures: nbdcopy of the export $(( bytes * 1000 / 1048576 / ((t1 - t0) / 1000000 + 1) )) MiB/s;" \
			"$(sed -n 's/^restored .*: \([0-9]* MiB\/s\).*/eager restore \1/p' "$T/eager.out")"
	fi
	sed -n 's/^\(guest-side faulting reads.*\)/# figures: lazy \1/p; s/^\(faults .*\)/# figures: lazy \1/p' "$T/lazy.out"
fi

# (SIGBUS on a poisoned page, in the lazy corruption case, is the design:
# ASan reports it as "BUS on unknown address"; anything else is a bug.)
if grep -E "ERROR: [A-Za-z]+Sanitizer|runtime error:" "$T/all" |
	grep -qv "AddressSanitizer: BUS on"; then
	ko "no sanitizer report in any run"
	grep -E -A5 "ERROR: [A-Za-z]+Sanitizer|runtime error:" "$T/all" | head -20 | sed 's/^/#   /'
else
	ok "no sanitizer report in any run"
fi

tap_end
