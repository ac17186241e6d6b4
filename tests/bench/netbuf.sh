#!/bin/sh
# The network output commit figures of docs/NETBUF.md: wpsnap-netbuf bench
# in two network namespaces joined by a veth pair created here (10.88.0.1
# -> 10.88.0.2, nothing leaves them), removed on exit. Each run measures,
# on the same traffic, a raw phase (nothing held) and a held phase
# (timed checkpoint epochs), so every ratio compares costs of one run.
# Needs root, ip (iproute2) and iptables.
# Usage: tests/bench/netbuf.sh [BACKEND]   (auto, plug or nfqueue; default auto)
# Override the grid with RATES="2000 20000" EPOCHS="20:5 100:20" SECONDS_=3.
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
NB="$B/tools/wpsnap-netbuf"
BACKEND=${1:-auto}
RATES=${RATES:-"2000 20000"}
EPOCHS=${EPOCHS:-"20:5 100:20"}
SECS=${SECONDS_:-3}
tag=$$
G=wpsnbb-g$tag P=wpsnbb-p$tag VG=nbbg$tag VP=nbbp$tag
cleanup() {
	ip netns del "$G" 2>/dev/null || true
	ip netns del "$P" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add "$G"
ip netns add "$P"
ip link add "$VG" netns "$G" type veth peer name "$VP" netns "$P"
ip -n "$G" addr add 10.88.0.1/24 dev "$VG"
ip -n "$P" addr add 10.88.0.2/24 dev "$VP"
ip -n "$G" link set "$VG" up
ip -n "$P" link set "$VP" up
status=0
for e in $EPOCHS; do
	for r in $RATES; do
		echo
		"$NB" bench --backend "$BACKEND" --if "$VG" --netns "$G" --peer-netns "$P" \
			--dst 10.88.0.2 --rate "$r" --seconds "$SECS" \
			--epoch-ms "${e%:*}" --checkpoint-ms "${e#*:}" || status=1
	done
done
exit $status
