# Remote restore over NBD (tests/integration/nbd.sh): two network
# namespaces joined by a veth pair, a real nbdkit on one side, eager, lazy
# and lazy-then-graduate restores on the other; skipped (77) without root,
# nbdkit or network namespaces.
TESTS += tests/integration/nbd.sh
EXTRA_DIST += tests/integration/nbd.sh
