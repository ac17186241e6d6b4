#!/bin/sh
# Injected I/O faults (docs/RELIABILITY.md): under the faultinj shim
# (tests/faultinj/faultinj.c), fail the Nth I/O of one kind, for every N
# that a clean run makes, of (a) a live snapshot of the reference guest,
# (b) a checkpoint series, (c) an eager and a lazy restore; with EIO,
# ENOSPC and, where the call has one, a short transfer. Each failure must
# end in an error naming the cause (errno text and file) with the right
# errno, the guest running, unprotected and intact, nothing under the
# final name, no fd leaked (the driver checks these, tests/faultinj/
# fault_driver.c); a short transfer must be completed, not reported.
# Prints "N passed, N failed" and the number of faults injected per walk.
set -u
. "$(dirname "$0")/tap.sh"
SHIM="$B/tests/faultinj/.libs/faultinj.so"
DRV="$B/tests/faultinj/fault_driver"
WG="$B/tools/wpsnap-guest"
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (userfaultfd)"; exit 77; }
[ -f "$SHIM" ] || { echo "SKIP: $SHIM not built (make check builds it)"; exit 77; }
T=$(mktemp -d /var/tmp/wpsnap-faults.XXXXXX)
trap 'rm -rf "$T"' EXIT
# The shim comes before the sanitizer runtime in the load order; it only
# forwards calls, so ASan's check of that order is moot. A lazy restore
# poisons what it cannot read, so its guest dies of SIGBUS by design: under
# ASan too (handle_sigbus=0), not of an ASan report.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:handle_sigbus=0"
export ASAN_OPTIONS
SIZE=4          # MiB of guest RAM: small enough to walk every I/O
D="$T/img"      # the only directory the shim counts in
mkdir -p "$D" "$T/led"

# run OP N ERR CMD...: one run with the Nth OP failing with ERR (OP -:
# count only); stdout+stderr in $T/out, exit status in $rc, the shim's
# report in $T/cnt.
run() {
	op=$1 n=$2 err=$3; shift 3
	rm -f "$T/cnt"
	if [ "$op" = - ]; then
		env LD_PRELOAD="$SHIM" FAULTINJ_DIR="$D" FAULTINJ_COUNT="$T/cnt" \
			timeout 120 "$@" >"$T/out" 2>&1
	else
		env LD_PRELOAD="$SHIM" FAULTINJ_DIR="$D" FAULTINJ_COUNT="$T/cnt" \
			FAULTINJ_OP="$op" FAULTINJ_NTH="$n" FAULTINJ_ERR="$err" \
			timeout 120 "$@" >"$T/out" 2>&1
	fi
	rc=$?
}
count_of() { awk -v op="$1" '$2 == op { s += $3 } END { print s + 0 }' "$T/cnt"; }
fired() { grep -q " fired " "$T/cnt" 2>/dev/null; }
errtext() { [ "$1" = ENOSPC ] && echo "No space left on device" || echo "Input/output error"; }
# kinds of fault a class has
kinds() { case $1 in submit|complete|write|read) echo "EIO ENOSPC SHORT";; *) echo "EIO ENOSPC";; esac; }

# the probe: a counting run must see the snapshot's I/O
run - 0 - "$DRV" snapshot "$D/probe.wpsnap" $SIZE
if [ ! -s "$T/cnt" ] || [ "$(count_of submit)" = 0 ]; then
	sed 's/^/# /' "$T/out"
	echo "SKIP: the faultinj shim did not load or saw no I/O under $D"
	exit 77
fi
rm -f "$D"/*

# walk NAME CLASSES CHECK CMD...: counts the I/O of a clean run of CMD,
# then fails each of them in turn; CHECK OP N ERR judges one run.
walk() {
	name=$1 classes=$2 check=$3; shift 3
	run - 0 - "$@"
	cp "$T/cnt" "$T/clean-$name"
	clean_out=$(cat "$T/out")
	[ "$rc" = 0 ] || { ko "$name: clean run (exit $rc)"; echo "$clean_out" | sed 's/^/#   /'; return; }
	total=0 bad=0 missed=0
	for op in $classes; do
		max=$(awk -v op="$op" '$2 == op { s += $3 } END { print s + 0 }' "$T/clean-$name")
		# Bounded for make check on a loaded machine: a class of many
		# calls (completions) is sampled at about 24 points, one kind
		# each in turn; FAULTS_FULL=1 walks every call with every kind.
		step=1 k=0
		[ "${FAULTS_FULL:-0}" = 1 ] || [ "$max" -le 24 ] || step=$(( (max + 23) / 24 ))
		n=1
		while [ "$n" -le "$max" ]; do
			set_kinds=$(kinds "$op")
			if [ "$step" -gt 1 ]; then
				k=$((k + 1))
				set_kinds=$(echo $set_kinds | cut -d' ' -f$(( (k - 1) % $(echo $set_kinds | wc -w) + 1 )))
			fi
			for err in $set_kinds; do
				cleanup
				run "$op" "$n" "$err" "$@"
				# a run killed by a signal writes no count: let CHECK
				# judge it (a lazy restore's guest dies of SIGBUS on
				# data that could not be read, by design)
				if ! fired && { [ -s "$T/cnt" ] || [ "$rc" -le 128 ]; }; then
					missed=$((missed + 1)); continue
				fi
				total=$((total + 1))
				why=$($check "$op" "$n" "$err")
				if [ -n "$why" ]; then
					bad=$((bad + 1))
					ko "$name: $op #$n $err: $why"
				fi
			done
			n=$((n + step))
		done
	done
	echo "# $name: $total faults injected ($missed beyond a shorter run), $bad mishandled;" \
		"clean run: $(tr '\n' ' ' <"$T/clean-$name" | sed 's/[0-9]* \([a-z]*\) \([0-9]*\)/\1=\2/g')"
	[ "$bad" = 0 ] && ok "$name: $total injected faults all survived"
	eval "figure_$name=$total"
}

# An error must name its cause: the errno text and a file of ours.
names_cause() { grep "$(errtext "$1")" "$T/out" | grep -q "$D"; }

# --- (a) a live snapshot --------------------------------------------
cleanup() { rm -rf "$D"/*; }
check_driver() {
	op=$1 n=$2 err=$3
	if [ "$err" = SHORT ]; then
		[ "$rc" = 0 ] && grep -q "^result ok" "$T/out" &&
			grep -q "^guest ok" "$T/out" ||
			{ echo "a short transfer was not completed (exit $rc): $(grep -v '^#' "$T/out" | tail -3 | tr '\n' '|')"; return; }
		return
	fi
	[ "$rc" = 1 ] || { echo "exit $rc, expected 1: $(tail -3 "$T/out" | tr '\n' '|')"; return; }
	grep -q "^result failed $err:" "$T/out" ||
		{ echo "wrong errno: $(grep '^result' "$T/out")"; return; }
	grep -q "^guest ok" "$T/out" || { echo "$(grep '^guest' "$T/out")"; return; }
	names_cause "$err" || echo "no message naming $(errtext "$err") and the file: $(grep -v '^result\|^guest' "$T/out" | head -3 | tr '\n' '|')"
}
walk snapshot "submit complete write sync truncate rename" check_driver \
	"$DRV" snapshot "$D/snap.wpsnap" $SIZE

# --- (b) a checkpoint series ----------------------------------------
cleanup() { rm -rf "$D"/* "$T/led"/*; }
walk checkpoint "submit complete write sync truncate rename" check_driver \
	"$DRV" checkpoint "$D" "$T/led" 3 $SIZE

# --- (c) eager and lazy restores ------------------------------------
rm -rf "$D"/* "$T/led"/*
cleanup() { rm -f "$D"/*.wset "$D"/*.tmp "$D"/*lazy-merge*; }
if "$WG" --size ${SIZE}M --snapshot "$D/r.wpsnap" --ledger "$T/r.ledger" \
	--warmup 0.1 >"$T/out" 2>&1
then ok "restore: image to restore"
else ko "restore: image to restore"; fi
# A lazy restore poisons a group it could not read, so the guest that
# touches it dies of SIGBUS instead of reading zeros (docs/RESTORE.md):
# right, provided the restore said why before.
sigbus_said() {
	grep "$(errtext "$1")" "$T/out" | grep -q "not delivered\|graduation failed" ||
		echo "SIGBUS without a word: $(tail -3 "$T/out" | tr '\n' '|')"
}
# A restore leaves nothing beside the image but its working-set file.
nothing_left() {
	left=$(ls "$D" | grep -v '^r\.wpsnap$\|^r\.wpsnap\.wset$' | tr '\n' ' ')
	[ -z "$left" ] || { echo "files left: $left"; return 1; }
}
check_restore() {
	op=$1 n=$2 err=$3
	nothing_left || return
	if [ "$err" = SHORT ]; then
		# an eager load takes a short O_DIRECT read for a damaged
		# file (only end of file shortens one): a clean error is right
		[ "$rc" = 1 ] && grep -q "short read of .*$D\|$D.*short read of" "$T/out" && return
		[ "$rc" = 0 ] && grep -q "verified\|every block as at the freeze" "$T/out" ||
			echo "a short transfer was not completed (exit $rc): $(tail -3 "$T/out" | tr '\n' '|')"
		return
	fi
	if [ "$rc" = 0 ]; then
		# only a hint (the working-set file) may fail without failing
		# the restore, and it must say so
		case $op in write|sync|rename|truncate)
			grep -q "working set.*not recorded: $(errtext "$err")" "$T/out" ||
				echo "exit 0 without a word about the failed $op"
			return;;
		esac
		echo "exit 0 after a failed $op"; return
	fi
	[ "$rc" = 124 ] && { echo "hung (killed after 120 s)"; return; }
	[ "$rc" = 135 ] && [ "$op" = read ] && { sigbus_said "$err"; return; }
	[ "$rc" -gt 128 ] && { echo "killed by signal $((rc - 128)): $(tail -3 "$T/out" | tr '\n' '|')"; return; }
	# 1 is the CLI's failure; anything else (23: LeakSanitizer) is not
	[ "$rc" = 1 ] || { echo "exit $rc: $(tail -3 "$T/out" | tr '\n' '|')"; return; }
	names_cause "$err" || echo "no message naming $(errtext "$err") and the file: $(head -3 "$T/out" | tr '\n' '|')"
}
walk eager "submit complete read" check_restore \
	"$W" restore "$D/r.wpsnap" --ledger "$T/r.ledger"
walk lazy "read write sync rename" check_restore \
	"$W" restore "$D/r.wpsnap" --lazy --ledger "$T/r.ledger"

# --- (d) restores from an NBD export --------------------------------
# The Nth NBD read request completes with the server's error: the
# restore must fail with it, naming the export, and leave nothing behind.
check_nbd() {
	op=$1 n=$2 err=$3
	nothing_left || return
	[ "$rc" = 124 ] && { echo "hung (killed after 120 s)"; return; }
	[ "$rc" = 135 ] && { sigbus_said "$err"; return; }
	[ "$rc" = 1 ] || { echo "exit $rc, expected 1: $(tail -3 "$T/out" | tr '\n' '|')"; return; }
	grep "$(errtext "$err")" "$T/out" | grep -q "nbd" ||
		echo "no message naming $(errtext "$err") and the export: $(head -3 "$T/out" | tr '\n' '|')"
}
if command -v nbdkit >/dev/null; then
	nbdkit -f -r -U "$T/nbd.sock" file "$D/r.wpsnap" >"$T/nbdkit.log" 2>&1 &
	nbdpid=$!
	i=0; while [ ! -S "$T/nbd.sock" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	U="nbd+unix:///?socket=$T/nbd.sock"
	cleanup() { rm -f "$D"/*.tmp "$D"/*lazy-merge*; }
	walk nbd_eager "nbd" check_nbd "$W" restore "$U" --ledger "$T/r.ledger"
	walk nbd_lazy "nbd" check_nbd "$W" restore "$U" --lazy --ledger "$T/r.ledger"
	kill $nbdpid 2>/dev/null; wait $nbdpid 2>/dev/null
else
	sk "restore over NBD" "nbdkit not installed"
fi

echo "# figures: snapshot ${figure_snapshot:-0}, checkpoint ${figure_checkpoint:-0}," \
	"eager restore ${figure_eager:-0}, lazy restore ${figure_lazy:-0}," \
	"NBD eager ${figure_nbd_eager:-0}, NBD lazy ${figure_nbd_lazy:-0} faults injected"
tap_end
