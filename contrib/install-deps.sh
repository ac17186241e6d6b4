#!/bin/sh
# Install wpsnap's Debian build and test dependencies when any is missing.
set -e
pkgs="build-essential autoconf automake libtool pkg-config libaio-dev
      libnl-3-dev libnl-route-3-dev libnl-nf-3-dev libjansson-dev check
      libnbd-dev xfsprogs python3 nbdkit qemu-utils libnbd-bin iproute2 iptables"
# .ci/run's loaded run of the suite
pkgs="$pkgs stress-ng"
# the VMM that tests/integration/qemu.py snapshots (TCG: no KVM needed)
pkgs="$pkgs qemu-system-x86"
# libvirt driving that QEMU (tests/integration/vm_boot.py starts a private
# libvirtd; docs/VM.md). Not libvirt-daemon-system: it would add a system
# service, polkit and a default NAT network; the test supplies the
# libvirt-qemu user and its configuration itself.
pkgs="$pkgs libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev libxml2-dev"
missing=
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing Debian packages:$missing (run as root to install)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
