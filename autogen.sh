#!/bin/sh
# Regenerate the build system. With --deps, first install the Debian build
# dependencies that are missing (needs root), so one command works on a fresh
# Debian 12 machine.
set -e
cd "$(dirname "$0")"
if [ "$1" = "--deps" ]; then
	sh contrib/install-deps.sh
fi
mkdir -p m4
autoreconf -fi
