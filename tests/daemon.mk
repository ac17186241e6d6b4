# tests of the offload daemon (wpsnapd, the client API, wpsnap-guest --daemon)
TESTS += tests/integration/daemon.py
EXTRA_DIST += tests/integration/daemon.py
# wps-guest-attach: processes that know nothing about wpsnap, through wpsnapd
# (needs tests/integration/attach_target from tests/attach.mk)
TESTS += tests/integration/daemon_attach.py
EXTRA_DIST += tests/integration/daemon_attach.py tests/integration/wpstest.py
# wps-checkpoint-*: periodic checkpoints of a VMM's guest through wpsnapd
TESTS += tests/integration/daemon_ckpt.py
EXTRA_DIST += tests/integration/daemon_ckpt.py
# hostile clients, images and disks: every case an error, the daemon serving on
TESTS += tests/integration/daemon_hostile.py
EXTRA_DIST += tests/integration/daemon_hostile.py
