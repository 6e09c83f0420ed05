#!/bin/sh
# Remote-shell stand-in for MPICH's hydra (mpiexec -launcher ssh
# -launcher-exec THIS): starts a "remote" proxy inside the network namespace
# that plays that host, instead of ssh-ing to a real machine.
#
# hydra calls it like ssh:   THIS [-x ...] HOST WORD...
# and the WORDs form one shell command line (ssh semantics: joined by spaces,
# hydra quotes where needed).
#
# NETNS_HOSTMAP maps host addresses to namespaces, comma-separated:
#   NETNS_HOSTMAP="10.10.0.1=hostA,10.10.0.2=hostB"
# Each command runs under `ip netns exec NS unshare --uts`, with the hostname
# set to NS, so every "host" reports its own hostname.
# Needs root (ip netns exec, unshare). See scripts/netns/twohost.sh.
set -eu

while [ $# -gt 0 ]; do
    case "$1" in
        -[lpioFJ]) shift 2 ;;      # ssh options that take a value
        -*) shift ;;               # flags such as -x (no X11 forwarding)
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "hydra_launcher: usage: $0 [ssh-options] HOST COMMAND..." >&2
    exit 255
fi
host=$1
shift

ns=""
old_ifs=$IFS
IFS=,
for entry in ${NETNS_HOSTMAP:-}; do
    if [ "${entry%%=*}" = "$host" ]; then ns=${entry#*=}; fi
done
IFS=$old_ifs
if [ -z "$ns" ]; then
    echo "hydra_launcher: host '$host' not in NETNS_HOSTMAP='${NETNS_HOSTMAP:-}'" >&2
    exit 255
fi

exec ip netns exec "$ns" unshare --uts sh -c "hostname '$ns' && $*"
