# netbuf (network output commit): end to end in two network namespaces
# joined by a veth pair; needs root, iptables and ip (else skipped). With
# nbdkit, also durable-means-remote (checkpoints on an NBD export across a
# second veth pair, the server stopped mid-checkpoint) and the fail over
# procedure of docs/REMOTE.md (host A killed, B restores lazily).
TESTS += tests/integration/netbuf.py
EXTRA_DIST += tests/integration/netbuf.py tests/bench/netbuf.sh docs/NETBUF.md
