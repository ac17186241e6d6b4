# Sourced by the NBD benches (nbd_write.sh, nbd_ckpt.sh): a server and a
# client "host", two network namespaces joined by a veth pair, made here
# and removed by the caller's cleanup (deleting a namespace deletes its
# veth end; nothing leaves them).
# ns_pair SERVER_NS CLIENT_NS PREFIX NET: the server at NET.1, the
# client at NET.2, the veth ends PREFIXs$$ and PREFIXc$$.
ns_pair() {
	ip netns add $1
	ip netns add $2
	ip link add ${3}s$$ netns $1 type veth peer name ${3}c$$ netns $2
	ip -n $1 addr add $4.1/24 dev ${3}s$$
	ip -n $2 addr add $4.2/24 dev ${3}c$$
	for n in $1 $2; do ip -n $n link set lo up; done
	ip -n $1 link set ${3}s$$ up
	ip -n $2 link set ${3}c$$ up
}
# ns_pair_del SERVER_NS CLIENT_NS
ns_pair_del() {
	ip netns del $1 2>/dev/null || true
	ip netns del $2 2>/dev/null || true
}
