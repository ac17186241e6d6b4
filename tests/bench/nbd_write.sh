#!/bin/sh
# Snapshot write bandwidth to an NBD export (docs/REMOTE.md), against a
# raw libnbd sequential write of the same number of bytes to the same
# export in the same run: nbdcopy (libnbd's own copier, default
# connections and requests in flight) of a random file of the guest's
# size. Both go to one nbdkit memory export, over a Unix socket and over
# TCP on the loopback of a network namespace made here (removed on exit).
# The export is written once untimed first (nbdkit memory allocates on
# first write). Run it on a quiet machine: both figures share the CPUs.
# Not a test: prints figures, asserts nothing. Needs root, nbdkit, nbdcopy.
# Usage: tests/bench/nbd_write.sh [SIZE_MIB]   (default 1024)
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
G="$B/tools/wpsnap-guest"
MIB=${1:-1024}
NS=wpsnbdwb-$$
T=$(mktemp -d /dev/shm/wpsnap-nbdwb.XXXXXX)
srv=
cleanup() {
	[ -n "$srv" ] && kill $srv 2>/dev/null && wait $srv 2>/dev/null
	ip netns del $NS 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add $NS
ip -n $NS link set lo up
head -c $((MIB << 20)) /dev/urandom >"$T/raw"
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# bench NAME URI SERVER-ARGS...
bench() {
	name=$1 uri=$2
	shift 2
	rm -f "$T/sock"
	ip netns exec $NS nbdkit -f "$@" memory $((MIB + 64))M >"$T/srv.log" 2>&1 &
	srv=$!
	until ip netns exec $NS nbdinfo --size "$uri" >/dev/null 2>&1; do sleep 0.1; done
	# nbdkit memory allocates on first write: pay that before either
	# timed writer, so neither is charged for it.
	ip netns exec $NS nbdcopy "$T/raw" "$uri"
	# The snapshot: its own total (freeze to published) and rate.
	ip netns exec $NS "$G" --size ${MIB}M --threads 1 --rate 16 \
		--snapshot "$uri" --overwrite >"$T/snap.out" 2>&1
	snap=$(sed -n 's/.*total \([0-9.]*\) ms, \([0-9.]*\) MiB\/s.*/\1 \2/p' "$T/snap.out")
	t0=$(now_ms)
	ip netns exec $NS nbdcopy --flush "$T/raw" "$uri"
	t1=$(now_ms)
	raw=$(awk -v m=$MIB -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", m * 1000 / ms }')
	echo "$name: snapshot ${snap% *} ms, ${snap#* } MiB/s; nbdcopy $((t1 - t0)) ms, $raw MiB/s; ratio" \
		"$(awk -v a=${snap#* } -v b=$raw 'BEGIN { printf "%.2f", a / b }')"
	kill $srv
	wait $srv 2>/dev/null || true
	srv=
}
echo "guest ${MIB} MiB, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
bench unix "nbd+unix:///?socket=$T/sock" -U "$T/sock"
bench tcp nbd://127.0.0.1:10809/ -i 127.0.0.1
