#!/bin/sh
# Install the Debian tools a packaging step needs, if they are missing.
#   packaging/install-deps.sh build   debhelper, dpkg-dev, python3-venv (make deb),
#                                     python3-nftables (bundled for --kernel-offload)
#   packaging/install-deps.sh check   plus lintian, groff, man-db, systemd,
#                                     systemd-container, adduser (the packaging
#                                     tests), tshark (the pcap recording tests),
#                                     iproute2, procps, nftables and conntrack
#                                     (the kernel tests), prometheus and tmux (the
#                                     observability tests), logrotate (the
#                                     rotation rule)
# Only missing packages are installed; the package lists are refreshed only
# when an install fails without them.  Needs root (or nothing to install).
set -eu

build_pkgs="debhelper dpkg-dev python3-venv python3-nftables libnftables1"
check_pkgs="$build_pkgs lintian groff-base groff man-db systemd systemd-container adduser
    util-linux tshark iproute2 procps nftables conntrack
    prometheus tmux logrotate"

case "${1:-build}" in
    build) wanted=$build_pkgs ;;
    check) wanted=$check_pkgs ;;
    *) echo "usage: $0 [build|check]" >&2; exit 2 ;;
esac

missing=""
for pkg in $wanted; do
    if ! dpkg-query -W -f '${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "$0: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
if ! apt_install; then
    apt-get update -qq
    apt_install
fi
