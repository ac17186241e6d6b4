# tests of wpsnapd transactions (memory + disk snapshots in one pause);
# needs root, a loop device and mkfs.xfs (else the test is skipped)
TESTS += tests/integration/transaction.py
EXTRA_DIST += tests/integration/transaction.py
