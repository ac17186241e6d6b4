# netbuf (network output commit): end to end in two network namespaces
# joined by a veth pair; needs root, iptables and ip (else skipped).
TESTS += tests/integration/netbuf.py
EXTRA_DIST += tests/integration/netbuf.py tests/bench/netbuf.sh docs/NETBUF.md
