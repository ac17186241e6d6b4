# wpsnap bench: a --quick run end to end (keys present and measured, no
# timing assertions: benchmarks are not tests).
TESTS += tests/integration/bench.sh
EXTRA_DIST += tests/integration/bench.sh
