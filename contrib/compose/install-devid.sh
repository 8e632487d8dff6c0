#!/bin/sh
# install-devid.sh DIR PACKAGE...: install devid's packages (devid,
# devid-host, devid-ca, devid-agent) in a Debian container, from DIR.
#
# DIR holds the packages' .deb files (PACKAGE_VERSION_ARCH.deb), which dpkg
# installs; or, until devid has packages, the same files laid out per
# package in DIR/root-PACKAGE/, which are copied to / and followed by what
# the package's maintainer scripts would do (systemd-sysusers).
# The Dockerfiles in this directory and the container tests
# (internal/dockertest.Install) run it.
set -eu
dir=$1
shift
[ $# -gt 0 ] || { echo "usage: install-devid.sh DIR PACKAGE..." >&2; exit 2; }
if ls "$dir"/*.deb >/dev/null 2>&1; then
	debs=
	for p in "$@"; do
		deb=$(ls "$dir/${p}"_*.deb 2>/dev/null | head -n 1)
		[ -n "$deb" ] || { echo "install-devid.sh: no ${p}_*.deb in $dir" >&2; exit 1; }
		debs="$debs $deb"
	done
	# shellcheck disable=SC2086
	dpkg -i $debs
else
	for p in "$@"; do
		[ -d "$dir/root-$p" ] || { echo "install-devid.sh: no $dir/root-$p" >&2; exit 1; }
		cp -a "$dir/root-$p/." /
	done
	systemd-sysusers
fi
