#!/usr/bin/env bash
# A one-node Slurm on 127.0.0.1 for tests: slurmctld + slurmd + a private munged.
#
#   bash ci/engines/slurm.sh deps    install slurm-wlm and munge (Debian) if missing
#   bash ci/engines/slurm.sh start   deps, write slurm.conf, start the daemons, wait for an idle node
#   bash ci/engines/slurm.sh stop    stop the daemons started by `start`
#   bash ci/engines/slurm.sh status  exit 0 iff the node answers and is idle/mixed/allocated
#
# Idempotent: `start` on a running, healthy cluster only prints its settings (it says so
# when that cluster's slurm.conf differs from the one it would write: `stop` to apply it).
# State, spool and logs live under $IDDS_ENGINES_DIR/slurm (default /var/tmp/idds-engines).
# The last line of `start` is `SLURM_CONF=<path>`: client commands need that variable
# (/etc/slurm/slurm.conf is also pointed at it when that file is absent or already ours).
# IDDS_SLURM_CPUS sets the CPUs the node advertises (default 16 x cores; config_overrides
# allows it): slurmctld starts pending jobs in waves about once a second, so the CPUs it
# sees bound how many short jobs start per second; with 16 x cores no-op jobs keep the real
# cores busy (a hand-submitted array of 1,000 no-op jobs on 2 cores: 7.6 jobs/s with
# 4 x cores, 15.6 with 16 x cores).
set -euo pipefail

BASE=${IDDS_ENGINES_DIR:-/var/tmp/idds-engines}
STATE=$BASE/slurm
CONF=$STATE/slurm.conf
HOST=$(hostname -s)
export SLURM_CONF=$CONF

log() { echo "slurm.sh: $*" >&2; }
# the cores this machine gives us (nproc alone would follow OMP_NUM_THREADS)
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

deps() {
    if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "slurm-wlm/munge are missing and we are not root: cannot install them"; exit 2
    fi
    log "installing slurm-wlm munge"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm munge >/dev/null
}

new_conf() {
    # the slurm.conf `start` wants, as $CONF.tmp
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/munge" "$STATE/log"
    chmod 700 "$STATE/munge"
    local cpus mem
    cpus=${IDDS_SLURM_CPUS:-$(( $(cores) * 16 ))}
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    cat > "$CONF.tmp" <<CONF
# written by ci/engines/slurm.sh
ClusterName=idds
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# many short jobs on one host: schedule on every event and every second (no batching
# delay), backfill every second, look at the whole queue each time
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,bf_interval=1,default_queue_depth=1000
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# ended jobs stay visible to squeue for a minute (the backend polls every second):
# every squeue call transfers all the records slurmctld holds
MinJobAge=60
MaxArraySize=100001
MaxJobCount=200000
KillWait=2
InactiveLimit=0
SlurmdTimeout=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem TmpDisk=16384 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
}

install_conf() {
    mv "$CONF.tmp" "$CONF"
    # client commands without SLURM_CONF find it too (only if the file is absent or ours)
    if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf || true)" = "$CONF" ]; then
        mkdir -p /etc/slurm
        ln -sfn "$CONF" /etc/slurm/slurm.conf
    fi
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_state() {
    local out
    out=$(timeout 10 sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null || true)
    echo "${out%%$'\n'*}"
}

healthy() {
    pid_alive "$STATE/slurmctld.pid" && pid_alive "$STATE/slurmd.pid" || return 1
    case "$(node_state)" in
        idle|mix|alloc|comp) return 0 ;;
        *) return 1 ;;
    esac
}

start_munge() {
    if pid_alive "$STATE/munge/munged.pid" && [ -S "$STATE/munge/munge.socket" ]; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1; then mungekey --create --force >/dev/null
        else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
    fi
    rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    munged --force --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
        --key-file=/etc/munge/munge.key
}

stop() {
    local f pid
    for f in slurmd.pid slurmctld.pid munge/munged.pid; do
        if pid_alive "$STATE/$f"; then
            pid=$(cat "$STATE/$f")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/$f"
    done
}

start() {
    deps
    new_conf
    if [ -f "$CONF" ] && pid_alive "$STATE/slurmctld.pid"; then
        # a controller busy with many jobs may miss one sinfo: retry before restarting
        # (which would lose the jobs in it)
        for _ in $(seq 10); do
            if healthy; then
                cmp -s "$CONF.tmp" "$CONF" || log "the running cluster has another slurm.conf" \
                    "than this script writes: stop and start it to apply this one"
                rm -f "$CONF.tmp"
                log "already running"
                echo "SLURM_CONF=$CONF"
                return 0
            fi
            sleep 1
        done
    fi
    stop
    install_conf
    start_munge
    # -c: a clean state (no jobs of an earlier run come back)
    slurmctld -c -f "$CONF"
    slurmd -f "$CONF"
    local st=""
    for _ in $(seq 120); do
        st=$(node_state)
        case "$st" in
            idle) echo "SLURM_CONF=$CONF"; return 0 ;;
            down*|drain*|drng*|fail*)
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "the node did not become idle within 60 s (state '${st:-none}'); last log lines:"
    tail -n 15 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 2>/dev/null || true
    exit 1
}

case "${1:-}" in
    deps) deps ;;
    start) start ;;
    stop) stop ;;
    status) healthy && echo "SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 deps|start|stop|status" >&2; exit 2 ;;
esac
