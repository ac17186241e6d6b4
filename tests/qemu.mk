# Live snapshots of an unmodified QEMU (wpsnap snapshot --qemu) running the
# test guest of tools/qguest: byte-for-byte against pmemsave, and QEMU's
# survival when we are killed anywhere. The bench against QEMU's own
# background-snapshot is tests/bench/qemu.sh (not a test: timings).
TESTS += tests/integration/qemu.py
EXTRA_DIST += tests/integration/qemu.py tests/integration/qemu_lib.py \
	tests/bench/qemu.sh docs/QEMU.md

# What needs no QEMU: the maps/smaps reader (base/procmaps.c) and the
# layout blob's writer and validating parser.
check_PROGRAMS += tests/unit/test_qemu
TESTS += tests/unit/test_qemu
tests_unit_test_qemu_SOURCES = tests/unit/test_qemu.c tests/unit/qemu_sample.h
tests_unit_test_qemu_CFLAGS = $(AM_CFLAGS) $(CHECK_CFLAGS)
tests_unit_test_qemu_LDADD = tests/unit/libtestutil.la libwpsnap_priv.la $(CHECK_LIBS)

# The monitor side against a real QEMU: version and machine type, QMP and
# HMP passthrough, getfd with SCM_RIGHTS.
check_PROGRAMS += tests/integration/qemu_monitor
tests_integration_qemu_monitor_SOURCES = tests/integration/qemu_monitor.c
tests_integration_qemu_monitor_LDADD = libwpsnap_priv.la
TESTS += tests/integration/qemu_monitor.py
EXTRA_DIST += tests/integration/qemu_monitor.py
