#!/bin/sh
# install-devid.sh DIR PACKAGE...: install devid's packages (devid,
# devid-host, devid-ca, devid-agent) in a Debian container with dpkg -i,
# from their .deb files in DIR (PACKAGE_VERSION_ARCH.deb, as make packages
# or make compose leaves them). The Dockerfile in this directory and the
# container tests (internal/dockertest.Install) run it.
set -eu
[ $# -gt 1 ] || { echo "usage: install-devid.sh DIR PACKAGE..." >&2; exit 2; }
dir=$1
shift
debs=
for p in "$@"; do
	deb=$(ls "$dir/${p}"_*.deb 2>/dev/null | head -n 1)
	[ -n "$deb" ] || { echo "install-devid.sh: no ${p}_*.deb in $dir" >&2; exit 1; }
	debs="$debs $deb"
done
# shellcheck disable=SC2086
dpkg -i $debs
