# tests of the offload daemon (wpsnapd, the client API, wpsnap-guest --daemon)
TESTS += tests/integration/daemon.py
EXTRA_DIST += tests/integration/daemon.py
