#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for trying the batch
# scripts (and for tests/test_slurm.py). Needs root and the Debian packages
# slurmd slurmctld slurm-client munge (scripts/ci/install_cluster_deps.sh).
#
#   scripts/slurm/local_cluster.sh start DIR   # config + state + logs in DIR
#   export SLURM_CONF=DIR/slurm.conf           # then sbatch / srun / sinfo work
#   scripts/slurm/local_cluster.sh status DIR
#   scripts/slurm/local_cluster.sh stop DIR    # stops the daemons by PID
#
# Nothing outside DIR is touched: munged gets its own key and socket in DIR,
# the daemons use free TCP ports, and /etc is left alone, so it can run next
# to a real installation. The node is the machine itself (`hostname -s`).
#
# Knobs (environment):
#   LOCAL_SLURM_CPUS      CPUs the node advertises (default 4; may exceed the
#                         real core count: slurmd runs with config_overrides)
#   LOCAL_SLURM_TIMEOUT   seconds to wait for the node to become idle (default 60)
#   SLURMCTLD_PORT, SLURMD_PORT   fixed ports instead of free ones
set -euo pipefail

die() { echo "local_cluster: $*" >&2; exit 1; }
note() { echo "local_cluster: $*" >&2; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|status DIR"

port_free() { ! ss -Htln "sport = :$1" 2>/dev/null | grep -q .; }
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$(( 20000 + RANDOM % 20000 ))
        if port_free "$p"; then echo "$p"; return 0; fi
    done
    die "no free TCP port found"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Stop the daemon whose PID is in file $1: TERM, wait up to 10 s, then KILL.
stop_pidfile() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(tr -dc 0-9 <"$f")
    if pid_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
        if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (daemons run as root, munged as munge)"
    local b
    for b in munged slurmctld slurmd sinfo; do
        command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || die "missing $b (install slurmd slurmctld slurm-client munge)"
    done
    id munge >/dev/null 2>&1 || die "no 'munge' user (install the munge package)"
    [ ! -e "$dir/slurmctld.pid" ] || die "$dir already holds a cluster (stop it first)"

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 0755 "$dir"   # munged (user munge) must traverse it
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chown munge:munge "$dir/munge"
    chmod 0755 "$dir/munge"   # munged insists the socket dir is searchable by all

    # A private munge key and daemon: credentials never mix with any other cluster.
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$dir/munge/munge.key"
        chmod 0400 "$dir/munge/munge.key"
    fi
    local sock="$dir/munge/munge.socket"
    runuser -u munge -- "$(command -v munged || echo /usr/sbin/munged)" \
        --key-file="$dir/munge/munge.key" --socket="$sock" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || die "munged failed to start (see $dir/munge/munged.log)"
    cp "$dir/munge/munged.pid" "$dir/munged.pid"

    local host cpus ctld_port d_port
    host=$(hostname -s)
    cpus=${LOCAL_SLURM_CPUS:-4}
    ctld_port=${SLURMCTLD_PORT:-$(pick_port)}
    d_port=${SLURMD_PORT:-$(pick_port)}
    [ "$ctld_port" != "$d_port" ] || d_port=$((ctld_port + 1))
    # MPICH names its shared-memory segments after the job and step id; a fresh
    # cluster starting again at job 1 would meet the segments a killed job 1 of
    # an earlier cluster left in /dev/shm. Start each cluster at a random id.
    first_job_id=$((1000 + RANDOM * 30 + RANDOM % 30))

    cat >"$dir/slurm.conf" <<CONF
ClusterName=local
FirstJobId=$first_job_id
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

    export SLURM_CONF="$dir/slurm.conf"
    "$(command -v slurmctld || echo /usr/sbin/slurmctld)" || die "slurmctld failed (see $dir/slurmctld.log)"
    "$(command -v slurmd || echo /usr/sbin/slurmd)" || die "slurmd failed (see $dir/slurmd.log)"

    local timeout=${LOCAL_SLURM_TIMEOUT:-60} state=""
    for _ in $(seq $((timeout * 2))); do
        state=$(timeout 10 sinfo -h -o %T 2>/dev/null || true)
        [ "$state" = "idle" ] && break
        sleep 0.5
    done
    if [ "$state" != "idle" ]; then
        note "node not idle after ${timeout}s (state: '${state}'); logs in $dir"
        stop
        exit 1
    fi
    note "up: node $host ($cpus CPUs), ports $ctld_port/$d_port"
    echo "export SLURM_CONF=$dir/slurm.conf"
}

stop() {
    [ -d "$dir" ] || return 0
    stop_pidfile "$dir/slurmd.pid"
    stop_pidfile "$dir/slurmctld.pid"
    stop_pidfile "$dir/munged.pid"
    rm -f "$dir/munge/munged.pid"
    note "stopped ($dir)"
}

status() {
    local f pid rc=0
    for f in munged slurmctld slurmd; do
        pid=$(tr -dc 0-9 2>/dev/null <"$dir/$f.pid" || true)
        if pid_alive "$pid"; then echo "$f: running (pid $pid)"; else echo "$f: stopped"; rc=1; fi
    done
    return $rc
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "unknown command '$cmd' (start|stop|status)" ;;
esac
