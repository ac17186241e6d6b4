#!/bin/sh
# Checkpoint commit latency to a remote NBD export against a local
# directory, in one run (docs/REMOTE.md, "Figures: checkpoint commit").
# Two namespaces joined by a veth pair (made here, removed on exit;
# nothing leaves them): nbdkit's file plugin in the server namespace
# exports a sparse file on /var/tmp (its flush is an fdatasync of that
# file), and `wpsnap checkpoint` of the reference guest runs in the
# client namespace, alternately into a local directory on the same
# /var/tmp file system (fdatasync, rename, directory fsync) and into the
# export across the veth pair (flush, superblock, flush, the chain
# table's entry with FUA), ROUNDS times each, so that a change of load
# shows as a change between rounds. Per series: the median and p90 of
# "commit ms" (from the last page put to durable) and of "total ms" (the
# whole take, the export's connect and table read included), the full
# image (#0) left out.
# Not a test: prints figures, asserts nothing. Needs root, nbdkit.
# Usage: tests/bench/nbd_ckpt.sh [SIZE_MIB [COUNT [ROUNDS]]]
#        (defaults 256 MiB guest, 30 checkpoints per series, 2 rounds)
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/nbd_lib.sh"
W="$B/tools/wpsnap"
MIB=${1:-256}
COUNT=${2:-30}
ROUNDS=${3:-2}
NS_S=wpsnbdcb-s-$$ NS_C=wpsnbdcb-c-$$
T=$(mktemp -d /var/tmp/wpsnap-nbdcb.XXXXXX)
srv=
cleanup() {
	[ -n "$srv" ] && kill $srv 2>/dev/null && wait $srv 2>/dev/null || true
	ns_pair_del $NS_S $NS_C
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ns_pair $NS_S $NS_C cb 10.79.0
U=nbd://10.79.0.1:10809/
truncate -s $(( (COUNT + 2) * (MIB + 4) ))M "$T/export.raw"
ip netns exec $NS_S nbdkit -f -i 10.79.0.1 file "$T/export.raw" >"$T/srv.log" 2>&1 &
srv=$!
i=0
while ip netns exec $NS_C "$W" inspect $U 2>&1 | grep -q "cannot connect"; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$T/srv.log"; exit 1; }
	sleep 0.1
done

# series DIR: COUNT checkpoints every 100 ms of a guest writing 20 MiB/s
# (one writer, hot pattern); prints its table
series() {
	ip netns exec $NS_C "$W" checkpoint --dir "$1" --count $COUNT --interval 100 \
		--size ${MIB}M --threads 1 --pattern hot --rate 20 --overwrite
}
# stats FILE COLUMN: median and p90 of a column over seq >= 1
stats() {
	awk -v c=$2 '/^[0-9]/ && $1 > 0 { print $c }' "$1" | sort -n | awk '
		{ v[NR] = $1 }
		END { if (!NR) { print "- -"; exit }
		      printf "%.2f %.2f", v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.999)] }'
}
echo "guest $MIB MiB, 1 writer at 20 MiB/s (hot), a checkpoint every 100 ms, $COUNT per series"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-6s %-26s %-22s %-22s %s\n" round where "commit ms p50 p90" "total ms p50 p90" "saved MiB p50"
r=1
while [ $r -le $ROUNDS ]; do
	for where in local remote; do
		if [ $where = local ]; then
			rm -rf "$T/local"
			series "$T/local" >"$T/out" 2>&1
			name="local dir (/var/tmp, ext4)"
		else
			series $U >"$T/out" 2>&1
			name="NBD export over veth"
		fi
		set -- $(stats "$T/out" 9) $(stats "$T/out" 8) $(stats "$T/out" 6)
		printf "%-6s %-26s %-22s %-22s %s\n" $r "$name" "$1 $2" "$3 $4" "$5"
	done
	r=$((r + 1))
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
