# Live snapshots of an unmodified QEMU (wpsnap snapshot --qemu) running the
# test guest of tools/qguest: byte-for-byte against pmemsave, and QEMU's
# survival when we are killed anywhere. The bench against QEMU's own
# background-snapshot is tests/bench/qemu.sh (not a test: timings).
TESTS += tests/integration/qemu.py
EXTRA_DIST += tests/integration/qemu.py tests/integration/qemu_lib.py \
	tests/bench/qemu.sh docs/QEMU.md
