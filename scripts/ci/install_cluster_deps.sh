#!/usr/bin/env bash
# Install the Debian packages that the cluster tests need:
#   slurmd slurmctld slurm-client munge   (tests/test_slurm.py)
#   iproute2 util-linux                   (tests/test_multihost.py, tests/test_netfaults.py:
#                                          ip, tc, unshare)
#   nftables                              (tests/test_netfaults.py: packet loss with nft)
#
# Idempotent: packages already present are not touched, and nothing runs apt
# when everything is installed. Never fails the caller: when apt is missing,
# we are not root, or the install fails (no network), it says why and exits 0,
# and the tests that need the packages skip with their own reason.
#
# Usage: scripts/ci/install_cluster_deps.sh
set -u

PACKAGES=(slurmd slurmctld slurm-client munge iproute2 util-linux nftables)

note() { echo "install_cluster_deps: $*"; }

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    note "all present (${PACKAGES[*]})"
    exit 0
fi
note "missing: ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    note "apt-get/dpkg not available; skipping (cluster tests will skip)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    note "not root; skipping (cluster tests will skip)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Bounded: a stuck mirror or a held dpkg lock must not stall CI.
apt_get() { timeout 600 apt-get "$@"; }
apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# Try without refreshing the lists first; refresh once only if that fails.
if ! apt_get install "${apt_opts[@]}" "${missing[@]}"; then
    note "install from cached lists failed; running apt-get update once"
    if ! apt_get update -q; then
        note "apt-get update failed (no network?); skipping (cluster tests will skip)"
        exit 0
    fi
    if ! apt_get install "${apt_opts[@]}" "${missing[@]}"; then
        note "apt-get install failed; skipping (cluster tests will skip)"
        exit 0
    fi
fi
note "installed: ${missing[*]}"
exit 0
