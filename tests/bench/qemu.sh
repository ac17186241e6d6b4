#!/bin/sh
# wpsnap against QEMU's own background-snapshot, on the same QEMU, the same
# test guest (tools/qguest) and the same write pattern, one after the
# other, alternating, N runs each: the guest's pause, the total time, the
# guest's write rate during the snapshot relative to the second before
# (from its debugcon progress lines), and the image size relative to guest
# RAM and to populated RAM. The table of docs/PERFORMANCE.md ("QEMU").
# Needs root and qemu-system-x86 (TCG). Usage:
#   tests/bench/qemu.sh [--mem MIB] [--size MIB] [--pattern random|seq|hot]
#                       [--backing anon|memfd] [--runs N] [--json]
# (defaults: a 1 GiB anonymous guest writing random pages at full speed,
# 3 runs each; --size limits the RAM the guest fills and writes)
set -eu
B=${WPSNAP_BUILDDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
S=${WPSNAP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export WPSNAP_BUILDDIR="$B"
[ -x "$B/tools/wpsnap" ] || { echo "qemu.sh: build first (make)" >&2; exit 1; }
# the guest is a `make check` product
make -s -C "$B" tools/qguest/qguest.elf >&2
exec python3 "$S/tests/integration/qemu_lib.py" bench "$@"
