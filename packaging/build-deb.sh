#!/bin/sh
# Build the Debian package from this checkout: dist/rtpproxy_<version>_<arch>.deb
#
# Installs missing build tools, builds the one-file executable (make binary,
# a no-op when it is up to date) and runs dpkg-buildpackage for the binary
# package only.  Prints the path of the .deb.
set -eu

cd "$(dirname "$0")/.."
top=$(pwd)

packaging/install-deps.sh build

make binary

version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="rtpproxy_${version}_${arch}.deb"

# dpkg-buildpackage leaves its results in the parent directory: collect them
# into dist/ and leave no stray files behind.
outdir=$(dirname "$top")
rm -f "$outdir/$deb" "dist/$deb"
dpkg-buildpackage --no-sign -b
mv "$outdir/$deb" dist/
rm -f "$outdir/rtpproxy_${version}_${arch}.buildinfo" "$outdir/rtpproxy_${version}_${arch}.changes"
debian/rules clean >/dev/null 2>&1 || true

echo "$top/dist/$deb"
