#!/bin/sh
# Snapshot write bandwidth to an NBD export (docs/REMOTE.md), against a
# raw libnbd sequential write of the same number of bytes to the same
# export in the same run: nbdcopy (libnbd's own copier, default
# connections and requests in flight) of a random file of the guest's
# size. Both go to one nbdkit memory export in a server namespace, over
# three transports: a Unix socket, TCP on the server namespace's
# loopback, and TCP over a veth pair from a client namespace (both
# namespaces and the pair made here, removed on exit; nothing leaves
# them). The export is written once untimed first (nbdkit memory
# allocates on first write); nbdcopy is timed before and after the
# snapshots, so that a change of load during the run shows. Two
# snapshots: the reference guest snapshotting itself (one writer at
# 16 MiB/s: the live case), and `wpsnap snapshot --pid` of an idle guest
# process, whose CPU time is the snapshot's alone and is printed beside
# nbdcopy's, with the server's (nbdkit) for each: CPU per GiB does not
# depend on what else runs, which the wall-clock rates do.
# Run it on a quiet machine: both figures share the CPUs.
# Not a test: prints figures, asserts nothing. Needs root, nbdkit, nbdcopy.
# Usage: tests/bench/nbd_write.sh [SIZE_MIB] [TRANSPORT...]
#        (default 1024; transports unix tcp-lo tcp-veth, default all)
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/nbd_lib.sh"
G="$B/tools/wpsnap-guest"
MIB=${1:-1024}
[ $# -gt 0 ] && shift
WHICH=${*:-unix tcp-lo tcp-veth}
NS_S=wpsnbdwb-s-$$ NS_C=wpsnbdwb-c-$$
T=$(mktemp -d /dev/shm/wpsnap-nbdwb.XXXXXX)
srv= idle=
cleanup() {
	[ -n "$srv" ] && kill $srv 2>/dev/null && wait $srv 2>/dev/null || true
	[ -n "$idle" ] && kill $idle 2>/dev/null && wait $idle 2>/dev/null || true
	ns_pair_del $NS_S $NS_C
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ns_pair $NS_S $NS_C wb 10.78.0
head -c $((MIB << 20)) /dev/urandom >"$T/raw"
# The idle guest process for snapshot --pid (its RAM populated once).
"$G" --size ${MIB}M --threads 1 --pattern idle --duration 100000 >"$T/idle.out" 2>&1 &
idle=$!
# ... populated (writes every page first) before anything is timed
until [ "$(awk '/^VmRSS/ { print int($2 / 1024) }' /proc/$idle/status)" -ge $MIB ]; do
	sleep 0.2
done
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# CPU time (user + system) of a live process, in ms
cpu_ms() { awk -v hz=$(getconf CLK_TCK) '{ printf "%d", ($14 + $15) * 1000 / hz }' /proc/$1/stat; }

# copy NS URI: nbdcopy of the random file, flushed; prints
# "MiB/s client-CPU-ms server-CPU-ms"
copy() {
	c0=$(cpu_ms $srv)
	t0=$(now_ms)
	/usr/bin/time -f "%U %S" -o "$T/time" ip netns exec $1 nbdcopy --flush "$T/raw" "$2"
	t1=$(now_ms)
	c1=$(cpu_ms $srv)
	awk -v m=$MIB -v ms=$((t1 - t0)) -v s=$((c1 - c0)) '
		{ printf "%.0f %.0f %d", m * 1000 / ms, ($1 + $2) * 1000, s }' "$T/time"
}

# bench NAME CLIENT_NS URI SERVER-ARGS...
bench() {
	name=$1 cns=$2 uri=$3
	shift 3
	rm -f "$T/sock"
	ip netns exec $NS_S nbdkit -f "$@" memory $((MIB * 5 / 4 + 64))M >"$T/srv.log" 2>&1 &
	srv=$!
	until ip netns exec $cns nbdinfo --size "$uri" >/dev/null 2>&1; do sleep 0.1; done
	# nbdkit memory allocates on first write: pay that before either
	# timed writer, so neither is charged for it.
	ip netns exec $cns nbdcopy "$T/raw" "$uri"
	set -- $(copy $cns "$uri")
	raw1=$1 rawc=$2 raws=$3
	# The live snapshot: its own total (freeze to published) and rate.
	ip netns exec $cns "$G" --size ${MIB}M --threads 1 --rate 16 \
		--snapshot "$uri" --overwrite >"$T/snap.out" 2>&1
	snap=$(sed -n 's/.*total \([0-9.]*\) ms, \([0-9.]*\) MiB\/s.*/\1 \2/p' "$T/snap.out")
	# The idle process: the snapshot's CPU alone (attach included).
	c0=$(cpu_ms $srv)
	/usr/bin/time -f "%U %S" -o "$T/time" ip netns exec $cns "$B/tools/wpsnap" \
		snapshot --pid $idle -o "$uri" --overwrite >"$T/pid.out" 2>&1
	c1=$(cpu_ms $srv)
	pid=$(sed -n 's/.*total *\([0-9.]*\) ms, \([0-9.]*\) MiB\/s.*/\2/p' "$T/pid.out")
	pidc=$(awk '{ printf "%.0f", ($1 + $2) * 1000 }' "$T/time")
	set -- $(copy $cns "$uri")
	raw2=$1
	echo "$name: live snapshot ${snap% *} ms, ${snap#* } MiB/s; nbdcopy $raw1, $raw2 MiB/s; ratio" \
		"$(awk -v a=${snap#* } -v b=$raw1 -v c=$raw2 'BEGIN { printf "%.2f", 2 * a / (b + c) }')"
	echo "$name: idle --pid snapshot $pid MiB/s, ratio" \
		"$(awk -v a=$pid -v b=$raw1 -v c=$raw2 'BEGIN { printf "%.2f", 2 * a / (b + c) }')," \
		"CPU ms client/server: snapshot $pidc/$((c1 - c0)), nbdcopy $rawc/$raws"
	kill $srv
	wait $srv 2>/dev/null || true
	srv=
}
echo "guest ${MIB} MiB, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $WHICH; do
	case $t in
	unix) bench unix $NS_S "nbd+unix:///?socket=$T/sock" -U "$T/sock" ;;
	tcp-lo) bench tcp-loopback $NS_S nbd://127.0.0.1:10809/ -i 127.0.0.1 ;;
	tcp-veth) bench tcp-veth $NS_C nbd://10.78.0.1:10809/ -i 10.78.0.1 ;;
	*) echo "unknown transport $t (unix, tcp-lo, tcp-veth)" >&2; exit 2 ;;
	esac
done
