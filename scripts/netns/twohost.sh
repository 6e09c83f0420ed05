#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces PREFIX1 and PREFIX2 joined by
# a veth pair (interface vnet0 on both ends, 10.10.0.1 and 10.10.0.2), and an
# mpiexec wrapper that puts MPI ranks on both, with the data path forced onto
# the network so what crosses the link can be measured. Needs root, iproute2
# and util-linux (unshare).
#
#   scripts/netns/twohost.sh up PREFIX [RATE]   # RATE e.g. 1gbit: tc tbf both ways
#   scripts/netns/twohost.sh mpiexec PREFIX -ppn 2 -n 4 adacomp-train --epochs 1
#   scripts/netns/twohost.sh bytes PREFIX       # bytes that crossed the link (rx+tx of PREFIX1)
#   scripts/netns/twohost.sh down PREFIX
#
# PREFIX: at most 12 characters of [a-z0-9]; pick a unique one per user/run.
# The wrapper runs the venv's mpiexec inside PREFIX1 with
#   -launcher ssh -launcher-exec scripts/netns/hydra_launcher.sh
#   -hosts 10.10.0.1,10.10.0.2 -iface vnet0
#   -genv MPIR_CVAR_CH4_NETMOD ofi -genv FI_PROVIDER tcp
# (Without the last two, MPICH moves the data through shared memory: the
# namespaces share one kernel, and almost nothing would cross the veth.
# Set TWOHOST_NETMOD=ucx for UCX over TCP instead of libfabric's tcp provider.)
# ADACOMP_VENV selects the virtualenv (default: the repository's .venv).
# Each host's hostname is its namespace name (PREFIX1, PREFIX2).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "twohost: $*" >&2; exit 1; }

cmd=${1:-}
prefix=${2:-}
[ -n "$cmd" ] && [ -n "$prefix" ] || die "usage: $0 up|down|bytes|mpiexec PREFIX [...]"
[[ "$prefix" =~ ^[a-z0-9]{1,12}$ ]] || die "PREFIX must be 1-12 characters of [a-z0-9]"
shift 2
ns1=${prefix}1
ns2=${prefix}2
addr1=10.10.0.1
addr2=10.10.0.2

up() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    command -v ip >/dev/null || die "missing ip (iproute2)"
    command -v unshare >/dev/null || die "missing unshare (util-linux)"
    local rate=${1:-}
    ip netns add "$ns1"
    ip netns add "$ns2" || { ip netns del "$ns1"; die "cannot create $ns2"; }
    # Created in the root namespace under unique names, then renamed.
    ip link add "${prefix}x" type veth peer name "${prefix}y"
    ip link set "${prefix}x" netns "$ns1"
    ip link set "${prefix}y" netns "$ns2"
    ip -n "$ns1" link set "${prefix}x" name vnet0
    ip -n "$ns2" link set "${prefix}y" name vnet0
    local ns a
    for ns in "$ns1" "$ns2"; do
        if [ "$ns" = "$ns1" ]; then a=$addr1; else a=$addr2; fi
        ip -n "$ns" addr add "$a/24" dev vnet0
        ip -n "$ns" link set vnet0 up
        ip -n "$ns" link set lo up
        if [ -n "$rate" ]; then
            ip netns exec "$ns" tc qdisc add dev vnet0 root tbf rate "$rate" burst 256kb latency 50ms
        fi
    done
    echo "twohost: $ns1 ($addr1) <-> $ns2 ($addr2) on vnet0${rate:+, $rate}"
}

down() {
    # Deleting a namespace deletes its veth end, and with it the pair.
    ip netns del "$ns1" 2>/dev/null || true
    ip netns del "$ns2" 2>/dev/null || true
    ip link del "${prefix}x" 2>/dev/null || true
}

bytes() {
    # Every byte between the hosts is received or sent by PREFIX1's vnet0.
    local rx tx
    rx=$(ip netns exec "$ns1" cat /sys/class/net/vnet0/statistics/rx_bytes)
    tx=$(ip netns exec "$ns1" cat /sys/class/net/vnet0/statistics/tx_bytes)
    echo $((rx + tx))
}

run_mpiexec() {
    local venv=${ADACOMP_VENV:-$repo/.venv}
    [ -x "$venv/bin/mpiexec" ] || die "no mpiexec in $venv/bin (set ADACOMP_VENV)"
    local netmod=()
    case "${TWOHOST_NETMOD:-ofi}" in
        ofi) netmod=(-genv MPIR_CVAR_CH4_NETMOD ofi -genv FI_PROVIDER tcp) ;;
        ucx) netmod=(-genv MPIR_CVAR_CH4_NETMOD ucx -genv UCX_TLS "tcp,self" -genv UCX_NET_DEVICES vnet0) ;;
        *) die "TWOHOST_NETMOD must be ofi or ucx" ;;
    esac
    export NETNS_HOSTMAP="$addr1=$ns1,$addr2=$ns2"
    export PATH="$venv/bin:$PATH"
    exec ip netns exec "$ns1" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$ns1" \
        "$venv/bin/mpiexec" -launcher ssh -launcher-exec "$here/hydra_launcher.sh" \
        -hosts "$addr1,$addr2" -iface vnet0 "${netmod[@]}" "$@"
}

case "$cmd" in
    up) up "$@" ;;
    down) down ;;
    bytes) bytes ;;
    mpiexec) run_mpiexec "$@" ;;
    *) die "unknown command '$cmd' (up|down|bytes|mpiexec)" ;;
esac
