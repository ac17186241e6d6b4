# Remote restore over NBD (tests/integration/nbd.sh): two network
# namespaces joined by a veth pair, a real nbdkit on one side, eager, lazy
# and lazy-then-graduate restores on the other; skipped (77) without root,
# nbdkit or network namespaces.
TESTS += tests/integration/nbd.sh
EXTRA_DIST += tests/integration/nbd.sh

# Snapshots written to an NBD export (tests/integration/nbd_write.sh):
# nbdkit and qemu-nbd in a network namespace made by the test, TCP and
# Unix socket, refusals, a server killed, stopped or cut off mid-snapshot
# (WPSNAP_NBD_TIMEOUT), memory bounded under a slow server; skipped (77)
# without root, nbdkit or network namespaces.
TESTS += tests/integration/nbd_write.sh
EXTRA_DIST += tests/integration/nbd_write.sh
EXTRA_DIST += tests/bench/nbd_write.sh tests/bench/nbd_ckpt.sh tests/bench/nbd_lib.sh docs/REMOTE.md

# Checkpoint chains on one NBD export (tests/integration/nbd_chain.sh):
# nbdkit and qemu-nbd in a network namespace made by the test; every
# member restored against its ledger, a torn table copy, wpsnap or the
# server killed mid-series, refusals and a full export (ENOSPC); skipped
# (77) without root, nbdkit, python3 or network namespaces.
TESTS += tests/integration/nbd_chain.sh
EXTRA_DIST += tests/integration/nbd_chain.sh tests/integration/nbd_lib.sh
